"""Access control for the HTTP API: who is calling (API keys with roles), how often (per-key token buckets), and
a record of every call (the access log).

* `AccessGate` (ASGI, before any body is read) authenticates every `/v1` request: the bootstrap key from the
  environment (`TRADESYS_API_KEY`, role admin) or a key from the `KeyStore`, re-read every `keys_refresh_s` seconds
  by a thread of its own (never the request thread pool), so keys rotate without a restart. The key travels in
  the `X-API-Key` header or, for clients that can only send standard credentials (Alertmanager 0.25's
  `authorization:`), as `Authorization: Bearer <key>`; `X-API-Key` wins when both are sent. No or a wrong key:
  401. Then the key's token bucket: 429 with `Retry-After`. It runs before routing and before the body is parsed,
  so a caller without a key learns nothing about routes or bodies (401 everywhere).
* `require(role)` is each route's dependency: 403 when the key's role is below the route's. `create_api` refuses
  to build an app with a `/v1` route that declares no role (`check_routes`).
* `AccessLog` (ASGI, outermost) appends one JSON line per request: time, key id, role, method, route template,
  status, latency. Never a body, a query string, a header or a token.

Rate limits are the whole app's: a key's configured rate and burst are what all the app's replicas together admit.
Each replica keeps its own buckets (no shared state on the request path) and enforces 1/N of the rate and of the
burst (rounded up, at least 1) when the app runs N replicas (`AccessSettings.replicas`); Serve spreads requests over
the replicas, so the app admits about the configured rate, and never more than N * ceil(burst / N) at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Security, status
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tradesys.serve.keys import BOOTSTRAP_KEY_ID, ROLES, KeyRecord, TokenBucket, allows, key_id_of, retry_after_header

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
SECURITY_SCHEME = "ApiKeyAuth"
PRINCIPAL_KEY = "tradesys_principal"
ROLE_ATTR = "_tradesys_role"
_CONVERTER = re.compile(r"{([^}:]+):[^}]*}")


class AccessSettings(BaseModel):
    """The access settings of one API (from the `serve` config section)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keys_url: str | None = Field(None, description="key store URL; None: only the bootstrap key (in-memory store)")
    keys_refresh_s: float = Field(2.0, gt=0, le=3600, description="re-read the key store this often")
    rate_limit_per_s: float | None = Field(None, gt=0, description="default requests/s per key; None: no limit")
    rate_limit_burst: int = Field(50, ge=1, description="default burst per key")
    access_log: str | None = Field(None, description="JSON-lines access log path; None: none")
    replicas: int = Field(1, ge=1, le=1024, description="replicas of the app: each enforces 1/replicas of a key's "
                          "rate and burst, so the configured limit is the whole app's")


def replica_share(rate_per_s: float | None, burst: int, replicas: int) -> tuple[float | None, int]:
    """One replica's share of an app-wide limit: rate / replicas and ceil(burst / replicas), at least 1."""
    n = max(1, int(replicas))
    return (None if rate_per_s is None else rate_per_s / n), max(1, -(-int(burst) // n))


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    role: str
    rate_per_s: float | None  # the app-wide limit (what the key was given); each replica enforces its share
    burst: int


class AccessControl:
    """The keys one replica accepts and their buckets (see the module docstring)."""

    def __init__(self, bootstrap: SecretStr, settings: AccessSettings, store: Any = None) -> None:
        self.settings = settings
        self.store = store
        self._bootstrap = bootstrap.get_secret_value().encode()
        self._keys: dict[str, KeyRecord] = {}
        self._buckets: dict[str, tuple[tuple[float, int], TokenBucket]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.refresh()
        if store is not None and settings.keys_url is not None:  # an in-memory store has no other writer
            # its own thread, not the request thread pool: batch work can fill that pool, and a key check must
            # never wait for it
            threading.Thread(target=self._refresh_loop, name="tradesys-keys-refresh", daemon=True).start()

    def refresh(self) -> None:
        """Re-read the key store now (active keys only)."""
        if self.store is None:
            return
        keys = {k.key_id: k for k in self.store.list_keys() if k.active}
        self._keys = keys

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.settings.keys_refresh_s):
            try:
                self.refresh()
            except Exception as exc:  # keep serving the keys we know; say so once per refresh
                log.warning("key store refresh failed (%s); keeping the %d keys read before", type(exc).__name__,
                            len(self._keys))

    def close(self) -> None:
        """Stop the refresh thread (app shutdown)."""
        self._stop.set()

    def authenticate(self, token: str | None) -> Principal:
        """The caller's principal, or HTTPException 401."""
        if not token:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, f"missing {API_KEY_HEADER} header")
        s = self.settings
        default_burst = s.rate_limit_burst
        import hmac

        if hmac.compare_digest(token.encode(), self._bootstrap):
            return Principal(BOOTSTRAP_KEY_ID, "admin", s.rate_limit_per_s, default_burst)
        kid = key_id_of(token)
        rec = self._keys.get(kid) if kid else None
        if rec is None or not rec.matches(token):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid API key")
        rate = rec.rate_per_s if rec.rate_per_s is not None else s.rate_limit_per_s
        return Principal(rec.key_id, rec.role, rate, rec.burst if rec.burst is not None else default_burst)

    def admit(self, p: Principal) -> float:
        """0.0 if `p` may go on, else the seconds to wait (its bucket is empty)."""
        rate, burst = replica_share(p.rate_per_s, p.burst, self.settings.replicas)
        if rate is None:
            return 0.0
        now = time.monotonic()
        with self._lock:
            spec = (rate, burst)
            entry = self._buckets.get(p.key_id)
            if entry is None or entry[0] != spec:  # new key, or its limits changed in the store
                entry = (spec, TokenBucket(rate, burst, now))
                self._buckets[p.key_id] = entry
            return entry[1].take(now)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (scheme case-insensitive), else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def credential(x_api_key: str | None, authorization: str | None) -> str | None:
    """The key a request presents: its `X-API-Key` header, else the token of `Authorization: Bearer`."""
    return x_api_key or bearer_token(authorization)


async def _send_json(send: Send, status_code: int, detail: Any, headers: dict[str, str] | None = None) -> None:
    from tradesys.serve.errors import error_response

    response = error_response(status_code, detail, headers)
    await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


class AccessGate:
    """ASGI middleware: authentication (401) and the per-key rate limit (429) for `/v1` routes."""

    def __init__(self, app: ASGIApp, control: AccessControl) -> None:
        self.app = app
        self.control = control

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        ac = self.control
        try:
            principal = ac.authenticate(credential(_header(scope, API_KEY_HEADER.lower().encode()),
                                                   _header(scope, b"authorization")))
        except HTTPException as exc:
            await _send_json(send, exc.status_code, exc.detail)
            return
        scope.setdefault("state", {})[PRINCIPAL_KEY] = principal
        wait = ac.admit(principal)
        if wait > 0:
            n = ac.settings.replicas
            share = f" over {n} replicas" if n > 1 else ""
            reason = (f"rate limit of {principal.rate_per_s:g} requests/s (burst {principal.burst}{share}) for key "
                      f"{principal.key_id} exceeded; retry after {retry_after_header(wait)} s")
            await _send_json(send, 429, [{"field": API_KEY_HEADER, "reason": reason}],
                             {"Retry-After": retry_after_header(wait)})
            return
        await self.app(scope, receive, send)


def require(role: str, control: AccessControl | None) -> Callable[..., Any]:
    """The dependency a route declares its role with; 403 when the caller's key ranks below `role`.

    Declared through `APIKeyHeader` so /openapi.json lists the scheme on every protected route. `control=None`
    (benchmarks only: auth off) admits everyone.
    """
    if role not in ROLES:
        raise ValueError(f"role: must be one of {', '.join(ROLES)}, got {role!r}")
    scheme = APIKeyHeader(name=API_KEY_HEADER, scheme_name=SECURITY_SCHEME, auto_error=False,
                          description="An API key: the server's bootstrap key (environment) or one from "
                                      "`tradesys keys create`. Roles: read < trade < admin. The same key is "
                                      "also accepted as `Authorization: Bearer <key>`.")

    async def require_role(request: Request, given: str | None = Security(scheme)) -> None:
        if control is None:
            return
        p = request.scope.get("state", {}).get(PRINCIPAL_KEY)
        if p is None:  # no gate in front (an app mounted elsewhere): authenticate here
            p = control.authenticate(credential(given, request.headers.get("authorization")))
            request.scope.setdefault("state", {})[PRINCIPAL_KEY] = p
        if not allows(p.role, role):
            raise HTTPException(status.HTTP_403_FORBIDDEN, [{"field": API_KEY_HEADER, "reason":
                                f"key {p.key_id} has role {p.role!r}; this route needs {role!r}"}])

    setattr(require_role, ROLE_ATTR, role)
    return require_role


def _dependant_role(dependant: Any) -> str | None:
    stack = list(dependant.dependencies)
    while stack:
        dep = stack.pop()
        role = getattr(dep.call, ROLE_ATTR, None)
        if role is not None:
            return str(role)
        stack.extend(dep.dependencies)
    return None


def _api_routes(routes: list[Any]) -> list[Any]:
    """The effective API routes, with the dependencies of the routers they were included through (FastAPI 0.16x
    includes routers lazily: `app.routes` holds the router, not its routes)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI copies included routes into app.routes
        return [r for r in routes if isinstance(r, APIRoute)]
    return [c for c in iter_route_contexts(routes) if isinstance(c.original_route, APIRoute)]


def check_routes(routes: list[Any]) -> dict[str, str]:
    """Every `/v1` route's role, `{"GET /v1/x": role}` (path as in /openapi.json); RuntimeError naming a route
    that declares none."""
    roles: dict[str, str] = {}
    for r in _api_routes(routes):
        path = str(r.path)
        if not path.startswith("/v1/"):
            continue
        role = _dependant_role(r.dependant)
        if role is None:
            raise RuntimeError(f"route {path}: declares no role (add dependencies=[Depends(require(...))])")
        doc_path = _CONVERTER.sub(r"{\1}", path)  # /v1/runs/{id:path}/x is /v1/runs/{id}/x in the document
        for m in sorted(r.methods):
            roles[f"{m} {doc_path}"] = role
    return roles


def document_roles(app: FastAPI, roles: dict[str, str]) -> None:
    """Each operation in /openapi.json gets `x-tradesys-role`, so a client can read what a route needs."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = build()
            for path, item in doc.get("paths", {}).items():
                for method, op in item.items():
                    role = roles.get(f"{method.upper()} {path}")
                    if role is not None and isinstance(op, dict):
                        op["x-tradesys-role"] = role
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


class AccessLog:
    """ASGI middleware: one JSON line per HTTP request (see the module docstring). The file is opened in append
    mode and each line is written whole, so several replicas may share it."""

    def __init__(self, app: ASGIApp, path: str) -> None:
        self.app = app
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._fh = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives as long as the app
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status_code = 500

        async def send_status(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except asyncio.CancelledError:
            status_code = 499
            raise
        finally:
            self.write(scope, status_code, time.perf_counter() - t0)

    def write(self, scope: Scope, status_code: int, latency_s: float) -> None:
        p = scope.get("state", {}).get(PRINCIPAL_KEY)
        route = scope.get("route")
        line = json.dumps({
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "key_id": None if p is None else p.key_id,
            "role": None if p is None else p.role,
            "method": scope.get("method"),
            "route": getattr(route, "path", None) or scope.get("path"),
            "status": status_code,
            "latency_ms": round(latency_s * 1e3, 3),
        })
        with self._lock:
            self._fh.write(line + "\n")

    def close(self) -> None:
        with self._lock:
            self._fh.close()
