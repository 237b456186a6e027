"""API-key authentication for the ledger views.

The key comes from the environment (never from config files, never logged, never echoed back) and is held
as a pydantic `SecretStr`, so a stray repr or log line shows `**********`. Comparison is constant-time.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable

from fastapi import HTTPException, Security, status
from fastapi.security import APIKeyHeader
from pydantic import SecretStr

API_KEY_ENV = "TRADESYS_API_KEY"
API_KEY_HEADER = "X-API-Key"
SECURITY_SCHEME = "ApiKeyAuth"


def load_api_key(env_var: str = API_KEY_ENV) -> SecretStr:
    """Read the key from `env_var`; refuse to go on without one, so the API is never served open."""
    value = os.environ.get(env_var, "")
    if not value.strip():
        raise RuntimeError(
            f"{env_var} is not set: the ledger API refuses to start without an API key "
            f"(export {env_var}=<secret>; clients send it in the {API_KEY_HEADER} header)"
        )
    return SecretStr(value)


def api_key_dependency(expected: SecretStr) -> Callable[[str | None], None]:
    """A FastAPI dependency that admits a request only with the right `X-API-Key` header.

    Declared through `APIKeyHeader`, so the OpenAPI document lists the scheme and each protected route's
    security requirement. `auto_error=False`: we raise ourselves, to return 401 (FastAPI's default is 403).
    """
    scheme = APIKeyHeader(
        name=API_KEY_HEADER,
        scheme_name=SECURITY_SCHEME,
        description=f"The API key, as configured in the server's {API_KEY_ENV} environment variable.",
        auto_error=False,
    )
    want = expected.get_secret_value().encode()

    def require_api_key(given: str | None = Security(scheme)) -> None:
        if not given:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, f"missing {API_KEY_HEADER} header")
        if not hmac.compare_digest(given.encode(), want):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid API key")

    return require_api_key
