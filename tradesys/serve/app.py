"""Read-only HTTP views of the ledger: a plain FastAPI app, and the Ray Serve deployment that hosts it.

`create_api` builds the whole app (routes, auth, error shapes) without Ray, so it is tested in-process; the
Serve deployment only builds the same app inside its replica (`__serve_build_asgi_app__`, Serve's late-bound
ingress), because the app needs the ledger url, which is a constructor argument.

Every error body is `{"error": <code>, "detail": <message, or a list of {field, reason}>}`; an unexpected
exception is logged server-side and answered with a bare 500, never a traceback.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, SecretStr
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from tradesys.core.orders import OrderStatus, OrderType, RejectReason, Side, TimeInForce
from tradesys.ledger import Ledger, open_ledger
from tradesys.ledger.sqlite import absolute_sqlite_url
from tradesys.serve.auth import API_KEY_ENV, api_key_dependency, load_api_key

log = logging.getLogger(__name__)

API_TITLE = "tradesys ledger views"
API_VERSION = "1"
DEFAULT_ORDER_LIMIT = 100
MAX_ORDER_LIMIT = 1000


# --- response shapes (they also document the API in /openapi.json) -----------------------------------------------


class FieldError(BaseModel):
    field: str
    reason: str


class ErrorBody(BaseModel):
    error: str
    detail: str | list[FieldError]


class Health(BaseModel):
    status: Literal["ok"]
    schema_version: int


class AccountOut(BaseModel):
    ts_ns: int
    cash: float
    market_value: float
    equity: float
    realized_pnl: float
    unrealized_pnl: float
    fees: float
    initial_cash: float


class PositionOut(BaseModel):
    symbol: str
    qty: float
    avg_price: float
    realized_pnl: float
    mark: float
    updated_ts_ns: int


class Portfolio(BaseModel):
    account: AccountOut | None
    positions: list[PositionOut]
    equity: float | None
    consistent: bool  # equity == cash + market_value (to 1e-6 relative); true while there is no account yet


class OrderOut(BaseModel):
    client_order_id: str
    symbol: str
    side: Side
    qty: float
    type: OrderType
    tif: TimeInForce
    limit_price: float | None
    stop_price: float | None
    strategy_id: str
    ts_ns: int
    decision_wall_ns: int
    status: OrderStatus
    filled_qty: float
    avg_fill_price: float
    reason: RejectReason | None
    detail: str
    updated_ts_ns: int


class OrderList(BaseModel):
    orders: list[OrderOut]


class FillOut(BaseModel):
    fill_id: str
    client_order_id: str
    symbol: str
    side: Side
    qty: float
    price: float
    fee: float
    ts_ns: int
    wall_ns: int


class FillList(BaseModel):
    fills: list[FillOut]


def is_consistent(account: dict[str, Any] | None) -> bool:
    """The account invariant equity == cash + market_value, to a relative tolerance."""
    if account is None:
        return True
    equity = float(account["equity"])
    return abs(equity - (float(account["cash"]) + float(account["market_value"]))) < 1e-6 * max(1.0, abs(equity))


# --- errors ----------------------------------------------------------------------------------------------------------

_ERROR_CODES = {401: "unauthorized", 404: "not_found", 422: "validation_error", 500: "internal"}


def error_code(status_code: int) -> str:
    """A short snake_case code per status: 404 -> not_found, 405 -> method_not_allowed."""
    if status_code in _ERROR_CODES:
        return _ERROR_CODES[status_code]
    try:
        return HTTPStatus(status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def error_response(status_code: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error_code(status_code), "detail": detail}, status_code, headers=headers)


def _field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = list(loc)
    if parts and parts[0] in ("query", "path", "header", "body", "cookie"):
        parts = parts[1:]
    return ".".join(str(p) for p in parts) or "request"


def install_error_handlers(app: FastAPI) -> None:
    """Route every error through one JSON shape; see the module docstring."""

    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, exc.detail, getattr(exc, "headers", None))

    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [
            {"field": _field_name(e.get("loc", ())), "reason": str(e.get("msg", "invalid"))} for e in exc.errors()
        ]
        return error_response(422, fields)

    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal server error")

    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, internal_error)


# --- the app ---------------------------------------------------------------------------------------------------------


def create_api(
    ledger_url: str, *, api_key: str | SecretStr | None = None, api_key_env: str = API_KEY_ENV
) -> FastAPI:
    """Build the ledger API. The key is read from `api_key_env` unless given; without one this raises RuntimeError.

    The ledger is opened (and migrated, so a fresh database answers too) here, and closed at app shutdown.
    """
    if api_key is None:
        key = load_api_key(api_key_env)
    elif isinstance(api_key, SecretStr):
        key = api_key
    else:
        key = SecretStr(api_key)
    if not key.get_secret_value().strip():
        raise RuntimeError(f"{api_key_env}: the API key is empty")

    ledger: Ledger = open_ledger(ledger_url)
    ledger.migrate()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        ledger.close()

    app = FastAPI(
        title=API_TITLE,
        version=API_VERSION,
        description="Read-only views of the tradesys ledger. `/v1` routes need the `X-API-Key` header.",
        lifespan=lifespan,
    )
    app.state.ledger = ledger
    install_error_handlers(app)
    auth = [Depends(api_key_dependency(key))]
    errors: dict[int | str, dict[str, Any]] = {
        401: {"model": ErrorBody, "description": "missing or wrong API key"},
        422: {"model": ErrorBody, "description": "invalid parameter: detail lists field and reason"},
    }

    @app.get("/health", response_model=Health, tags=["health"])
    def health() -> dict[str, Any]:
        """Liveness, and the schema version the ledger is at. No key needed."""
        return {"status": "ok", "schema_version": ledger.schema_version()}

    @app.get("/v1/portfolio", response_model=Portfolio, dependencies=auth, responses=errors, tags=["ledger"])
    def portfolio() -> dict[str, Any]:
        """Account row, open positions and equity; `consistent` checks equity == cash + market value."""
        account = ledger.account()
        return {
            "account": account,
            "positions": ledger.positions(),
            "equity": None if account is None else account["equity"],
            "consistent": is_consistent(account),
        }

    @app.get("/v1/orders", response_model=OrderList, dependencies=auth, responses=errors, tags=["ledger"])
    def orders(
        status: Annotated[OrderStatus | None, Query(description="only orders in this status")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_ORDER_LIMIT, description="newest first")] = DEFAULT_ORDER_LIMIT,
    ) -> dict[str, Any]:
        """Orders, newest first."""
        return {"orders": ledger.orders(status=None if status is None else status.value, limit=limit)}

    @app.get(
        "/v1/orders/{client_order_id}",
        response_model=OrderOut,
        dependencies=auth,
        responses={**errors, 404: {"model": ErrorBody, "description": "no such order"}},
        tags=["ledger"],
    )
    def order(client_order_id: str) -> dict[str, Any]:
        """One order by its client order id."""
        row = ledger.get_order(client_order_id)
        if row is None:
            raise StarletteHTTPException(404, f"order {client_order_id!r} not found")
        return row

    @app.get("/v1/fills", response_model=FillList, dependencies=auth, responses=errors, tags=["ledger"])
    def fills(
        client_order_id: Annotated[str | None, Query(description="only fills of this order")] = None,
    ) -> dict[str, Any]:
        """Fills, oldest first."""
        return {"fills": ledger.fills(client_order_id)}

    return app


# --- Ray Serve -------------------------------------------------------------------------------------------------------


@serve.deployment(name="LedgerViews", num_replicas=1, ray_actor_options={"num_cpus": 0})
@serve.ingress()
class LedgerViews:
    """The API as a Serve deployment. It reads only, so it takes no CPU reservation from the trading actors.

    The key is handed over as a SecretStr argument (read from the driver's environment by `build_app`),
    because the replica's environment is the Ray cluster's, not the driver's. None: read `api_key_env` there.
    """

    def __init__(self, ledger_url: str, api_key: SecretStr | None = None, api_key_env: str = API_KEY_ENV) -> None:
        self.ledger_url = ledger_url
        self._api_key = api_key
        self._api_key_env = api_key_env

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_api(self.ledger_url, api_key=self._api_key, api_key_env=self._api_key_env)


def build_app(ledger_url: str, *, api_key_env: str = API_KEY_ENV) -> serve.Application:
    """The bound Serve application; fails here, in the driver, if the API key is not set.

    A relative SQLite path is made absolute first: the replica's working directory need not be ours.
    """
    key = load_api_key(api_key_env)
    return LedgerViews.bind(absolute_sqlite_url(ledger_url), key, api_key_env)


def run_serve(
    ledger_url: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    route_prefix: str = "/",
    *,
    name: str = "tradesys",
    api_key_env: str = API_KEY_ENV,
) -> DeploymentHandle:
    """Start Serve's HTTP proxy on host:port and deploy the views; returns once the replica is ready."""
    app = build_app(ledger_url, api_key_env=api_key_env)  # before starting anything: fail fast without a key
    serve.start(http_options={"host": host, "port": port})
    log.info("serving ledger views on http://%s:%d%s (pid %d)", host, port, route_prefix, os.getpid())
    return serve.run(app, name=name, route_prefix=route_prefix)
