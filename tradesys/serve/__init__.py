"""The HTTP API (ledger views and analytics), served by Ray Serve (`run_serve`) or any ASGI server (`create_api`)."""

from __future__ import annotations

from tradesys.serve.app import TradesysAPI, build_app, create_api, run_serve
from tradesys.serve.auth import API_KEY_ENV, API_KEY_HEADER, load_api_key
from tradesys.serve.limits import ServeLimits

__all__ = [
    "API_KEY_ENV",
    "API_KEY_HEADER",
    "ServeLimits",
    "TradesysAPI",
    "build_app",
    "create_api",
    "load_api_key",
    "run_serve",
]
