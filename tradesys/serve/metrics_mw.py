"""Request latency and 5xx counts per route for Prometheus (`tradesys.ops.metrics`), as an ASGI middleware.

Labels are bounded: the route *template* FastAPI matched (`/v1/orders/{client_order_id}`, never the raw path),
`unmatched` for a path no route knows, the method from a closed set, and the status class. It is the outermost
middleware, so the admission gate's 503s and the error handlers' answers are counted as the client saw them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tradesys.ops import metrics as ops_metrics

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


def route_label(scope: Scope) -> str:
    """The matched route's path template, or `unmatched`."""
    route: Any = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return str(path) if path else "unmatched"


class RequestMetrics:
    """ASGI middleware: one latency observation per HTTP request, one error count per 5xx answer."""

    def __init__(self, app: ASGIApp, record: Callable[[str, str, int, float], None] = ops_metrics.observe_http) -> None:
        self.app = app
        self.record = record  # (route, method, status, seconds); Prometheus by default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # an exception that escapes every handler reaches the client as a 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            method = str(scope.get("method", "")).upper()
            self.record(route_label(scope), method if method in METHODS else "OTHER", status,
                        time.perf_counter() - start)
