"""The HTTP API: a plain FastAPI app (ledger views + analytics routes), and the Ray Serve deployment hosting it.

`create_api` builds the whole app (routes, auth, error shapes) without Ray, so it is tested in-process; the
Serve deployment only builds the same app inside its replica (`__serve_build_asgi_app__`, Serve's late-bound
ingress), because the app needs the ledger url, which is a constructor argument. The analytics routes live in
their own modules (`options`, `risk`) and call the pure `tradesys.quant` libraries; this module composes them.

Every error body, whatever the status (401, 404, 405, 413, 415, 422, 503, 504, 500), is
`{"error": <code>, "detail": [{"field", "reason"}]}`; an unexpected exception is logged server-side (one line) and
answered with a bare 500, never a traceback. Each request is bounded (`limits.ServeLimits`): body size, requests
running and queued per replica (503 with Retry-After beyond), a time budget (504), and per-route work caps.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query
from pydantic import BaseModel, SecretStr
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from tradesys import logs
from tradesys.core.orders import OrderStatus, OrderType, RejectReason, Side, TimeInForce
from tradesys.ledger import Ledger, open_ledger
from tradesys.ledger.sqlite import absolute_sqlite_url
from tradesys.placement import check_head_resource, head_resources
from tradesys.serve.access import (
    AccessControl,
    AccessGate,
    AccessLog,
    AccessSettings,
    check_routes,
    document_roles,
    require,
)
from tradesys.serve.auth import API_KEY_ENV, load_api_key
from tradesys.serve.errors import ErrorBody, install_error_handlers
from tradesys.serve.limits import Admission, BodyLimit, ServeLimits
from tradesys.serve.metrics_mw import RequestMetrics

log = logging.getLogger(__name__)

API_TITLE = "tradesys ledger views"
API_VERSION = "1"
DEFAULT_ORDER_LIMIT = 100
MAX_ORDER_LIMIT = 1000


# --- response shapes (they also document the API in /openapi.json) -----------------------------------------------


class Health(BaseModel):
    status: Literal["ok"]
    schema_version: int | None


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
    min_qty: float = 0.0  # minimum fill size (0: any fill size)


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


# --- the app ---------------------------------------------------------------------------------------------------------


def create_api(
    ledger_url: str | None = None,
    *,
    api_key: str | SecretStr | None = None,
    api_key_env: str = API_KEY_ENV,
    analytics: bool = True,
    limits: ServeLimits | None = None,
    rl_policy_path: str | None = None,
    access: AccessSettings | None = None,
    auth_enabled: bool = True,
) -> FastAPI:
    """Build the API: ledger views when `ledger_url` is given, the analytics routes (options, vol, risk,
    portfolio) unless `analytics=False`, the RL policy routes (`tradesys.serve.rl`) when `rl_policy_path` names a
    policy export (loaded here, once per replica). The key is read from `api_key_env` unless given; without one
    this raises RuntimeError, so the API is never served open. `limits` bounds each request (body size,
    concurrency, queue, time budget; `tradesys.serve.limits`).

    The ledger is opened (and migrated, so a fresh database answers too) here, and closed at app shutdown.

    `access` (`tradesys.serve.access`): the key store (keys with roles; the env key is the bootstrap admin key),
    per-key rate limits and the access log. Every `/v1` route declares its role; building an app with one that
    does not is a RuntimeError. `auth_enabled=False` serves every route open and unlimited: it exists for the
    auth-overhead benchmark only and no setting reaches it.
    """
    if api_key is None:
        key = load_api_key(api_key_env)
    elif isinstance(api_key, SecretStr):
        key = api_key
    else:
        key = SecretStr(api_key)
    if not key.get_secret_value().strip():
        raise RuntimeError(f"{api_key_env}: the API key is empty")

    ledger: Ledger | None = None
    if ledger_url is not None:
        ledger = open_ledger(ledger_url)
        ledger.migrate()
    from tradesys.serve.keystore import MEMORY_URL, KeyStore

    acc = access or AccessSettings()
    store = KeyStore(acc.keys_url or MEMORY_URL)
    control = AccessControl(key, acc, store) if auth_enabled else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if ledger is not None:
            ledger.close()
        if control is not None:
            control.close()
        store.close()

    app = FastAPI(
        title=API_TITLE,
        version=API_VERSION,
        description=(
            "tradesys: ledger views (orders, fills, portfolio) and analytics (option pricing, implied vol, American "
            "exercise, vol surfaces, risk, portfolio optimisation). `/v1` routes need the `X-API-Key` header. "
            "Batch routes take JSON columns or an Arrow IPC stream (`application/vnd.apache.arrow.stream`)."
        ),
        lifespan=lifespan,
    )
    lim = limits or ServeLimits()
    app.state.ledger = ledger
    app.state.limits = lim
    install_error_handlers(app)
    app.add_middleware(BodyLimit, limits=lim)
    app.add_middleware(Admission, limits=lim)  # a busy replica refuses before any body
    if control is not None:
        app.add_middleware(AccessGate, control=control)  # 401 / 429 before a queue slot or a body
    if acc.access_log:
        app.add_middleware(AccessLog, path=acc.access_log)  # added last = outermost: every answer is logged
    app.add_middleware(RequestMetrics)  # Prometheus: latency and 5xx per route template, as the client saw them
    auth = [Depends(require("read", control))]
    admin = [Depends(require("admin", control))]
    errors: dict[int | str, dict[str, Any]] = {
        400: {"model": ErrorBody, "description": "a request body that does not parse (malformed JSON)"},
        401: {"model": ErrorBody, "description": "missing or wrong API key"},
        403: {"model": ErrorBody, "description": "the key's role is below the route's (x-tradesys-role)"},
        429: {"model": ErrorBody, "description": "the key's rate limit is exhausted; retry after Retry-After seconds",
              "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}},
        413: {"model": ErrorBody, "description": f"body over {lim.max_json_body_bytes} bytes (JSON) or "
              f"{lim.max_arrow_body_bytes} (Arrow), or a batch over the route's row or work cap"},
        422: {"model": ErrorBody, "description": "invalid parameter: detail lists field and reason"},
        503: {"model": ErrorBody, "description": f"server busy: more than {lim.max_ongoing_requests} running and "
              f"{lim.max_queued_requests} queued per replica; retry after the Retry-After header's seconds",
              "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}},
        504: {"model": ErrorBody, "description": f"not done within the {lim.request_timeout_s:g} s time budget"},
    }

    @app.get("/health", response_model=Health, tags=["health"])
    def health() -> dict[str, Any]:
        """Liveness, and the schema version the ledger is at (null without a ledger). No key needed."""
        return {"status": "ok", "schema_version": None if ledger is None else ledger.schema_version()}

    if ledger is not None:
        app.include_router(ledger_router(ledger, auth, errors))
    if analytics:
        from tradesys.serve.options import options_router
        from tradesys.serve.risk import risk_router

        app.include_router(options_router(auth, errors))
        app.include_router(risk_router(auth, errors))
    from tradesys.serve.runs import runs_router

    app.include_router(runs_router(auth, errors))  # /v1/runs/{id}/equity and /report: run folders, read-only
    from tradesys.serve.tca import tca_router

    app.include_router(tca_router(auth, errors))  # /v1/tca?run=<id>: transaction cost analysis of a run folder
    if rl_policy_path is not None:
        from tradesys.serve.rl import rl_router  # torch / onnxruntime load only when a policy is served

        app.include_router(rl_router(rl_policy_path, auth, errors))
    from tradesys.serve.alerts import alerts_router

    app.include_router(alerts_router(store, ledger, admin, errors))  # Alertmanager webhook -> audit record
    app.state.route_roles = check_routes(app.routes)  # every /v1 route declares its role, or no app
    document_roles(app, app.state.route_roles)  # x-tradesys-role on each operation in /openapi.json
    app.state.access = control
    return app


def ledger_router(ledger: Ledger, dependencies: list[Any], errors: dict[int | str, dict[str, Any]]) -> APIRouter:
    """Read-only views of the ledger: portfolio, orders, fills."""
    auth = dependencies
    app = APIRouter(tags=["ledger"])

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
            reason = f"order {client_order_id!r} not found"
            raise StarletteHTTPException(404, [{"field": "client_order_id", "reason": reason}])
        return row

    @app.get("/v1/fills", response_model=FillList, dependencies=auth, responses=errors, tags=["ledger"])
    def fills(
        client_order_id: Annotated[str | None, Query(description="only fills of this order")] = None,
    ) -> dict[str, Any]:
        """Fills, oldest first."""
        return {"fills": ledger.fills(client_order_id)}

    return app


# --- Ray Serve -------------------------------------------------------------------------------------------------------


_DEFAULT_LIMITS = ServeLimits()


@serve.deployment(name="TradesysAPI", num_replicas=1, ray_actor_options={"num_cpus": 0},
                  **_DEFAULT_LIMITS.serve_options())
@serve.ingress()
class TradesysAPI:
    """The API as a Serve deployment. It reserves no CPU, so it never starves the trading actors of theirs;
    scale the analytics load with `num_replicas` (`run_serve(..., replicas=N)`).

    The key is handed over as a SecretStr argument (read from the driver's environment by `build_app`),
    because the replica's environment is the Ray cluster's, not the driver's. None: read `api_key_env` there.
    `max_ongoing_requests`/`max_queued_requests` are set from the same `ServeLimits` the app enforces
    (`build_app` passes both), so the proxy hands the replica what its admission gate can answer.
    """

    def __init__(
        self,
        ledger_url: str | None,
        api_key: SecretStr | None = None,
        api_key_env: str = API_KEY_ENV,
        limits: ServeLimits | None = None,
        rl_policy_path: str | None = None,
        access: AccessSettings | None = None,
    ) -> None:
        self.ledger_url = ledger_url
        self._api_key = api_key
        self._api_key_env = api_key_env
        self._limits = limits
        self._rl_policy_path = rl_policy_path
        self._access = access
        logs.configure_from_env(actor="api")  # JSON lines in the replica's log file, keys and passwords masked
        log.info("API replica started", extra={"ledger": ledger_url})

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_api(self.ledger_url, api_key=self._api_key, api_key_env=self._api_key_env, limits=self._limits,
                          rl_policy_path=self._rl_policy_path, access=self._access)


def build_app(
    ledger_url: str | None = None,
    *,
    api_key_env: str = API_KEY_ENV,
    replicas: int = 1,
    limits: ServeLimits | None = None,
    rl_policy_path: str | None = None,
    access: AccessSettings | None = None,
    head_resource: str = "",
    log_format: str = "json",
    log_level: str = "INFO",
) -> serve.Application:
    """The bound Serve application; fails here, in the driver, if the API key is not set.

    Relative SQLite and access-log paths are made absolute first: the replica's working directory need not be ours.
    """
    key = load_api_key(api_key_env)
    url = None if ledger_url is None else absolute_sqlite_url(ledger_url)
    lim = limits or ServeLimits()
    rl = None if rl_policy_path is None else os.path.abspath(rl_policy_path)  # the replica's cwd need not be ours
    acc = access or AccessSettings()
    acc = acc.model_copy(update={
        "keys_url": None if acc.keys_url is None else absolute_sqlite_url(acc.keys_url),
        "access_log": None if acc.access_log is None else os.path.abspath(acc.access_log),
        "replicas": replicas})  # each replica enforces 1/replicas of a key's rate limit: the limit is the app's
    actor = {"num_cpus": 0, **({"resources": head_resources(head_resource)} if head_resource else {}),  # pinned
             "runtime_env": logs.runtime_env(log_format, log_level)}  # the replicas' log lines (tradesys.logs)
    return TradesysAPI.options(num_replicas=replicas, ray_actor_options=actor, **lim.serve_options()).bind(
        url, key, api_key_env, lim, rl, acc)


def run_serve(
    ledger_url: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    route_prefix: str = "/",
    *,
    name: str = "tradesys",
    api_key_env: str = API_KEY_ENV,
    replicas: int = 1,
    limits: ServeLimits | None = None,
    rl_policy_path: str | None = None,
    access: AccessSettings | None = None,
    tls_certfile: str | None = None,
    tls_keyfile: str | None = None,
    head_resource: str = "",
    log_format: str = "json",
    log_level: str = "INFO",
) -> DeploymentHandle:
    """Start Serve's HTTP proxy on host:port and deploy the API; returns once the replicas are ready.

    With `tls_certfile` and `tls_keyfile` (PEM paths, both or neither) the proxy speaks HTTPS only: Serve's
    HTTPOptions hands them to its uvicorn server (`tradesys.serve.tls`)."""
    from tradesys.serve.tls import http_options

    opts = http_options(host, port, tls_certfile, tls_keyfile)  # ConfigError on a bad pair, before anything starts
    app = build_app(ledger_url, api_key_env=api_key_env, replicas=replicas, limits=limits,
                    rl_policy_path=rl_policy_path, access=access, head_resource=head_resource,
                    log_format=log_format, log_level=log_level)  # fail fast: no key
    if head_resource:  # ray.head_resource: refused on a cluster without it, where the replicas would wait forever
        import ray

        if not ray.is_initialized():
            ray.init(log_to_driver=False)  # what serve.start does: RAY_ADDRESS, else a local runtime
        check_head_resource(head_resource, ray.cluster_resources())
    serve.start(http_options=opts)
    scheme = "https" if tls_certfile else "http"
    log.info("serving the tradesys API on %s://%s:%d%s (pid %d)", scheme, host, port, route_prefix, os.getpid())
    return serve.run(app, name=name, route_prefix=route_prefix)
