"""The ledger HTTP views: auth, error shapes and values, in-process through TestClient on a real SQLite
ledger, plus one run of the real Ray Serve HTTP path."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.conftest import free_port
from tradesys.core.orders import Fill, Order, OrderStatus, OrderType, RejectReason, Side
from tradesys.ledger import LATEST_VERSION, AccountRow, LedgerBatch, OrderUpdate, PositionRow, SqliteLedger
from tradesys.quant.options.errors import OptionError
from tradesys.serve import build_app, create_api, run_serve
from tradesys.serve.columnar import ARROW_STREAM, arrow_stream, read_arrow_stream

KEY = "s3cret-test-key-9f2c"
V1_ROUTES = ["/v1/portfolio", "/v1/orders", "/v1/orders/o1", "/v1/fills"]
MISSING_KEY = [{"field": "X-API-Key", "reason": "missing X-API-Key header"}]

ACCOUNT = AccountRow(
    ts_ns=3_000,
    cash=98_999.5,
    market_value=1_010.0,
    equity=100_009.5,
    realized_pnl=0.0,
    unrealized_pnl=10.0,
    fees=0.5,
    initial_cash=100_000.0,
)


def populate(url: str, account: AccountRow = ACCOUNT) -> None:
    """o1 filled (f1, f2), o2 resting, o3 rejected; AAPL long, MSFT flat."""
    with SqliteLedger(url) as led:
        led.migrate()
        led.write(
            LedgerBatch(
                orders=[
                    Order("o1", "AAPL", Side.BUY, 10.0, ts_ns=1_000, strategy_id="trend"),
                    Order("o2", "MSFT", Side.SELL, 5.0, OrderType.LIMIT, limit_price=251.25, ts_ns=2_000),
                    Order("o3", "TSLA", Side.BUY, 1e6, ts_ns=2_500),
                ],
                order_updates=[
                    OrderUpdate("o1", OrderStatus.FILLED, 10.0, 100.0, 3_000),
                    OrderUpdate("o2", OrderStatus.ACCEPTED, 0.0, 0.0, 3_000),
                    OrderUpdate("o3", OrderStatus.REJECTED, 0.0, 0.0, 2_500, RejectReason.MAX_ORDER_QTY, "1e6 > 5e4"),
                ],
                fills=[
                    Fill("f1", "o1", "AAPL", Side.BUY, 4.0, 99.75, 0.2, 2_900, 11),
                    Fill("f2", "o1", "AAPL", Side.BUY, 6.0, 100.1666, 0.3, 3_000, 12),
                ],
                positions=[
                    PositionRow("AAPL", 10.0, 100.0, 0.0, 101.0),
                    PositionRow("MSFT", 0.0, 0.0, -3.0, 250.0),
                ],
                account=account,
            )
        )


@pytest.fixture()
def ledger_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/ledger.db"
    populate(url)
    return url


@pytest.fixture()
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TRADESYS_API_KEY", KEY)
    return KEY


@pytest.fixture()
def client(ledger_url: str, api_key: str) -> Iterator[TestClient]:
    with TestClient(create_api(ledger_url)) as c:  # `with`: runs the lifespan, which closes the ledger
        yield c


def get(client: TestClient, path: str, **params: Any) -> httpx.Response:
    return client.get(path, params=params, headers={"X-API-Key": KEY})


# --- auth ----------------------------------------------------------------------------------------------------------


def test_health_needs_no_key(client: TestClient) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "schema_version": LATEST_VERSION}


@pytest.mark.parametrize("path", V1_ROUTES)
def test_v1_without_key_is_401(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"error": "unauthorized", "detail": MISSING_KEY}


@pytest.mark.parametrize("path", V1_ROUTES)
@pytest.mark.parametrize("wrong", ["nope", KEY + "x", KEY[:-1], KEY.upper(), "ключ"])
def test_v1_with_wrong_key_is_401(client: TestClient, path: str, wrong: str) -> None:
    r = client.get(path, headers={"X-API-Key": wrong.encode()})  # raw bytes: non-ASCII too
    assert r.status_code == 401
    assert r.json() == {"error": "unauthorized", "detail": [{"field": "X-API-Key", "reason": "invalid API key"}]}
    assert KEY not in r.text


def test_key_in_another_header_is_not_accepted(client: TestClient) -> None:
    for headers in ({"X-Auth-Token": KEY}, {"Authorization": f"Basic {KEY}"}, {"Authorization": KEY}):
        assert client.get("/v1/portfolio", headers=headers).status_code == 401, headers
    # `Authorization: Bearer <key>` is the documented alternative to X-API-Key (Alertmanager; docs/operations.md)
    assert client.get("/v1/portfolio", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_startup_without_key_refuses(ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRADESYS_API_KEY", raising=False)
    with pytest.raises(RuntimeError, match="TRADESYS_API_KEY"):
        create_api(ledger_url)
    monkeypatch.setenv("TRADESYS_API_KEY", "  ")
    with pytest.raises(RuntimeError, match="TRADESYS_API_KEY"):
        create_api(ledger_url)
    with pytest.raises(RuntimeError, match="TRADESYS_API_KEY"):
        build_app(ledger_url)  # the Serve path fails in the driver, before anything is deployed


def test_key_env_var_is_configurable(ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRADESYS_API_KEY", raising=False)
    monkeypatch.setenv("OTHER_KEY_VAR", "other")
    with TestClient(create_api(ledger_url, api_key_env="OTHER_KEY_VAR")) as c:
        assert c.get("/v1/fills", headers={"X-API-Key": "other"}).status_code == 200
        assert c.get("/v1/fills", headers={"X-API-Key": KEY}).status_code == 401


# --- values --------------------------------------------------------------------------------------------------------


def test_portfolio_matches_the_ledger(client: TestClient) -> None:
    r = get(client, "/v1/portfolio")
    assert r.status_code == 200
    assert r.json() == {
        "account": {
            "ts_ns": 3_000, "cash": 98_999.5, "market_value": 1_010.0, "equity": 100_009.5, "realized_pnl": 0.0,
            "unrealized_pnl": 10.0, "fees": 0.5, "initial_cash": 100_000.0,
        },
        "positions": [
            {"symbol": "AAPL", "qty": 10.0, "avg_price": 100.0, "realized_pnl": 0.0, "mark": 101.0,
             "updated_ts_ns": 3_000},
        ],
        "equity": 100_009.5,
        "consistent": True,
    }  # fmt: skip


def test_portfolio_flags_an_inconsistent_account(tmp_path: Path, api_key: str) -> None:
    url = f"sqlite:///{tmp_path}/bad.db"
    populate(url, AccountRow(1, cash=10.0, market_value=5.0, equity=16.0, realized_pnl=0.0, unrealized_pnl=0.0,
                             fees=0.0, initial_cash=10.0))  # fmt: skip
    with TestClient(create_api(url)) as c:
        body = get(c, "/v1/portfolio").json()
    assert (body["equity"], body["consistent"]) == (16.0, False)


def test_portfolio_on_an_empty_ledger(tmp_path: Path, api_key: str) -> None:
    with TestClient(create_api(f"sqlite:///{tmp_path}/fresh/empty.db")) as c:  # migrated on startup
        assert c.get("/health").json()["schema_version"] == LATEST_VERSION
        assert get(c, "/v1/portfolio").json() == {"account": None, "positions": [], "equity": None, "consistent": True}


def test_orders_newest_first_filtered_and_limited(client: TestClient) -> None:
    body = get(client, "/v1/orders").json()
    assert [o["client_order_id"] for o in body["orders"]] == ["o3", "o2", "o1"]
    o3 = body["orders"][0]
    assert (o3["status"], o3["reason"], o3["detail"], o3["qty"]) == ("rejected", "max_order_qty", "1e6 > 5e4", 1e6)
    assert o3["min_qty"] == 0.0  # the ledger's orders.min_qty (0: any fill size)
    assert [o["client_order_id"] for o in get(client, "/v1/orders", status="accepted").json()["orders"]] == ["o2"]
    assert [o["client_order_id"] for o in get(client, "/v1/orders", limit=2).json()["orders"]] == ["o3", "o2"]
    assert get(client, "/v1/orders", status="expired", limit=1000).json() == {"orders": []}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "bogus"}, "status"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": "ten"}, "limit"),
    ],
)
def test_orders_bad_parameters_are_422_naming_the_field(client: TestClient, params: dict[str, Any], field: str) -> None:
    r = get(client, "/v1/orders", **params)
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "validation_error"
    (err,) = body["detail"]
    assert err["field"] == field and isinstance(err["reason"], str) and err["reason"]


def test_422_lists_every_bad_field(client: TestClient) -> None:
    detail = get(client, "/v1/orders", status="bogus", limit=0).json()["detail"]
    assert sorted(e["field"] for e in detail) == ["limit", "status"]
    assert any("greater than or equal to 1" in e["reason"] for e in detail)


def test_one_order_and_404(client: TestClient) -> None:
    r = get(client, "/v1/orders/o2")
    assert r.status_code == 200
    o2 = r.json()
    assert (o2["side"], o2["type"], o2["limit_price"], o2["status"], o2["ts_ns"]) == (
        "sell", "limit", 251.25, "accepted", 2_000,
    )  # fmt: skip
    r = get(client, "/v1/orders/nope")
    assert r.status_code == 404
    assert r.json() == {"error": "not_found",
                        "detail": [{"field": "client_order_id", "reason": "order 'nope' not found"}]}


def test_fills(client: TestClient) -> None:
    fills = get(client, "/v1/fills").json()["fills"]
    assert [(f["fill_id"], f["qty"], f["price"], f["fee"]) for f in fills] == [
        ("f1", 4.0, 99.75, 0.2),
        ("f2", 6.0, 100.1666, 0.3),
    ]
    assert get(client, "/v1/fills", client_order_id="o2").json() == {"fills": []}
    assert len(get(client, "/v1/fills", client_order_id="o1").json()["fills"]) == 2


def test_unknown_route_and_method_errors_are_json(client: TestClient) -> None:
    r = client.get("/v2/nothing")
    assert (r.status_code, r.json()["error"]) == (404, "not_found")
    r = client.post("/health")
    assert (r.status_code, r.json()["error"]) == (405, "method_not_allowed")


def test_internal_errors_are_json_without_traceback(ledger_url: str, api_key: str) -> None:
    app = create_api(ledger_url)
    app.state.ledger.close()  # every read now raises inside the route
    c = TestClient(app, raise_server_exceptions=False)
    r = get(c, "/v1/portfolio")
    assert r.status_code == 500
    assert r.json() == {"error": "internal", "detail": [{"field": "request", "reason": "internal server error"}]}
    assert "Traceback" not in r.text and "closed" not in r.text


# --- OpenAPI -------------------------------------------------------------------------------------------------------


def test_openapi_lists_routes_and_the_key_scheme(client: TestClient) -> None:
    r = client.get("/openapi.json")  # no key needed
    assert r.status_code == 200
    spec = r.json()
    ledger_paths = {"/health", "/v1/portfolio", "/v1/orders", "/v1/orders/{client_order_id}", "/v1/fills"}
    assert ledger_paths <= set(spec["paths"])
    assert {"/v1/options/price", "/v1/options/iv", "/v1/options/american"} <= set(spec["paths"])
    assert spec["components"]["securitySchemes"]["ApiKeyAuth"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": spec["components"]["securitySchemes"]["ApiKeyAuth"]["description"],
    }
    for path in spec["paths"]:
        op = next(iter(spec["paths"][path].values()))
        if path == "/health":
            assert "security" not in op
        else:
            assert op["security"] == [{"ApiKeyAuth": []}]
            assert "401" in op["responses"]
    params = {p["name"]: p for p in spec["paths"]["/v1/orders"]["get"]["parameters"]}
    assert set(params) == {"status", "limit"}
    assert params["limit"]["schema"]["maximum"] == 1000 and params["limit"]["schema"]["minimum"] == 1
    assert "404" in spec["paths"]["/v1/orders/{client_order_id}"]["get"]["responses"]
    assert KEY not in r.text


# --- the real Serve path -------------------------------------------------------------------------------------------


def _wait_http(url: str, timeout_s: float = 60.0) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return httpx.get(url, timeout=10)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.mark.ray
@pytest.mark.slow
def test_ray_serve_http(ray_session: None, ledger_url: str, api_key: str) -> None:
    from ray import serve

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    try:
        run_serve(ledger_url, "127.0.0.1", port)
        r = _wait_http(f"{base}/health")
        assert (r.status_code, r.json()) == (200, {"status": "ok", "schema_version": LATEST_VERSION})

        r = httpx.get(f"{base}/v1/portfolio", timeout=10)
        assert (r.status_code, r.json()["detail"]) == (401, MISSING_KEY)
        r = httpx.get(f"{base}/v1/portfolio", headers={"X-API-Key": "wrong"}, timeout=10)
        assert r.status_code == 401

        r = httpx.get(f"{base}/v1/portfolio", headers={"X-API-Key": KEY}, timeout=10)
        assert r.status_code == 200
        body = r.json()
        assert body["account"]["equity"] == ACCOUNT.equity and body["consistent"] is True
        assert [p["symbol"] for p in body["positions"]] == ["AAPL"]

        r = httpx.get(f"{base}/v1/orders", params={"limit": 0}, headers={"X-API-Key": KEY}, timeout=10)
        assert (r.status_code, r.json()["detail"][0]["field"]) == (422, "limit")
        assert httpx.get(f"{base}/openapi.json", timeout=10).status_code == 200

        # an analytics route through the same proxy, with an Arrow IPC body and response
        body_bytes = arrow_stream({"S": [100.0, 100.0], "K": [100.0, 100.0], "T": 1.0, "r": 0.05, "q": 0.0,
                                   "sigma": [0.2, -1.0], "is_call": True})
        r = httpx.post(f"{base}/v1/options/price", params={"greeks": "delta"}, content=body_bytes, timeout=30,
                       headers={"X-API-Key": KEY, "Content-Type": ARROW_STREAM, "Accept": ARROW_STREAM})
        assert r.status_code == 200 and r.headers["content-type"] == ARROW_STREAM
        cols, meta = read_arrow_stream(r.content)
        assert cols["price"][0] == pytest.approx(10.450583572185565, abs=1e-12)  # Hull's textbook BSM value
        assert np.isnan(cols["price"][1]) and cols["code"][1] == OptionError.NEGATIVE_VOL
        assert str(int(OptionError.NEGATIVE_VOL)) in meta["reasons"]
    finally:
        serve.shutdown()


def test_build_app_pins_a_relative_sqlite_path(
    tmp_path: Path, api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app = build_app("sqlite:///runs/ledger.db")
    assert app._bound_deployment.init_args[0] == f"sqlite:///{tmp_path.resolve()}/runs/ledger.db"
    assert repr(app._bound_deployment.init_args[1]) == "SecretStr('**********')"  # the key never shows
