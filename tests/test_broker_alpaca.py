"""The Alpaca adapter against the local Alpaca-compatible paper server (tradesys.broker.alpaca_paper).

No mocks: the real alpaca-py TradingClient and TradingStream talk HTTP and websocket to the server on 127.0.0.1,
whose matching is SimBroker's. The references are the server's own records (its orders, fills, positions and
cash) and the accounting identities: every fill booked once, ledger fills == server fills, ledger positions and
cash == the broker's. Each injected fault (duplicate fill message, 429 burst, dropped ack, partial fill after a
cancel request, a restart that loses the websocket) goes through the adapter and is booked exactly once.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tradesys.broker.alpaca import AlpacaBroker, stream_url_for
from tradesys.broker.alpaca_paper import PaperServer
from tradesys.broker.base import Broker
from tradesys.config import BrokerConfig, ConfigError, load_config
from tradesys.core.orders import EventKind, Order, OrderEvent, OrderStatus, OrderType, Side, TimeInForce
from tradesys.data.historical import bars_table
from tradesys.data.source import AlpacaLiveSource
from tradesys.execution.service import ExecutionService
from tradesys.ledger import open_ledger
from tradesys.ledger.book import BookKeeper

KEY, SECRET = "PKH7TESTKEY", "h7-s3cr3t-never-logged-0123456789"
# Ray workers inherit the environment the session's Ray started with (collection precedes every test), so the
# live-loop test's actors read the keys from the environment as a deployment's would.
os.environ.setdefault("APCA_API_KEY_ID", KEY)
os.environ.setdefault("APCA_API_SECRET_KEY", SECRET)
FEES = {"fee_bps": 1.0, "fee_min": 0.0}
N_BARS = 40


def _bars(n: int = N_BARS) -> pa.Table:
    stamps = pd.date_range("2024-01-02 14:31", periods=n, freq="1min", tz="UTC")
    rows = []
    for i, t in enumerate(stamps):
        for sym, p0 in (("AAA", 100.0), ("BBB", 50.0)):
            c = p0 * (1 + 0.03 * np.sin(i / 4))
            rows.append({"ts": t, "symbol": sym, "open": c - 0.05, "high": c + 0.4, "low": c - 0.4, "close": c,
                         "volume": 1e6})
    return bars_table(pd.DataFrame(rows))


BARS = _bars()


@pytest.fixture()
def creds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APCA_API_KEY_ID", KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
    monkeypatch.delenv("APCA_API_BASE_URL", raising=False)


@pytest.fixture()
def server(creds: None) -> Iterator[PaperServer]:
    srv = PaperServer(BARS, key=KEY, secret=SECRET, broker=BrokerConfig(**FEES), initial_cash=100_000.0)
    srv.start()
    srv.step(1)
    yield srv
    srv.stop()


@pytest.fixture()
def broker(server: PaperServer) -> Iterator[AlpacaBroker]:
    waits: list[float] = []
    b = AlpacaBroker(BrokerConfig(kind="alpaca", **FEES), base_url=server.base_url, sleep=waits.append)
    b.waits = waits  # type: ignore[attr-defined]
    assert b.wait_connected(10)
    yield b
    b.close()


def _batch(step: int) -> pa.RecordBatch:
    """The server's bar batch of replay step `step` (1-based)."""
    return BARS.slice(2 * (step - 1), 2).combine_chunks().to_batches()[0]


def _until(cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def _collect(b: AlpacaBroker, want: Callable[[list[OrderEvent]], bool], step: int = 1,
             first: list[OrderEvent] | None = None) -> list[OrderEvent]:
    """Drain the adapter (as the loop's step does) until the events so far (`first`, then the drained ones)
    satisfy `want`; return them all."""
    got: list[OrderEvent] = list(first or [])

    def more() -> bool:
        got.extend(b.on_bars(_batch(step)))
        return want(got)

    _until(more)
    return got


def _kinds(events: list[OrderEvent]) -> list[tuple[str, str]]:
    return [(e.kind.value, e.client_order_id) for e in events]


def _service(b: Broker, tmp_path: Path) -> ExecutionService:
    return ExecutionService(b, BookKeeper(open_ledger(f"sqlite:///{tmp_path}/l.db"), 100_000.0))


def _assert_ledger_equals_server(svc: ExecutionService, srv: PaperServer) -> None:
    """Ledger fills == the server's fills (order, quantity, price, fee), nothing twice; positions and cash equal."""
    book: Any = svc.book
    mine = sorted((f["client_order_id"], f["qty"], f["price"], f["fee"]) for f in book.ledger.fills())
    theirs = sorted((f.client_order_id, f.qty, f.price, f.fee) for f in srv.fills())
    assert [m[:2] for m in mine] == [t[:2] for t in theirs]
    assert [m[2:] for m in mine] == [pytest.approx(t[2:], rel=1e-9) for t in theirs]  # prices travel as decimals
    ids = [f["fill_id"] for f in book.ledger.fills()]
    assert len(ids) == len(set(ids))
    snap = svc.book.snapshot()
    assert {s: q for s, q in snap.positions.items() if q} == srv.positions()
    assert snap.cash == pytest.approx(float(srv.account()["cash"]), abs=1e-6)


# ------------------------------------------------------------------------------------------ plain lifecycle


def test_market_order_fills_once_and_books_match_the_server(server: PaperServer, broker: AlpacaBroker,
                                                            tmp_path: Path) -> None:
    assert isinstance(broker, Broker)
    svc = _service(broker, tmp_path)
    rep = svc.submit([Order("m1", "AAA", Side.BUY, 10), Order("m2", "BBB", Side.SELL, 4)], ts_ns=1)
    assert rep.fills == 2  # from the POST answer: SimBroker fills a market order against the last bar
    # the stream's copies of those fills arrive later and are not booked again
    for step in (2, 3):
        server.step(1)
        svc.on_bars(_batch(step))
    time.sleep(0.2)
    svc.on_bars(_batch(3))
    assert broker.fills_count == 2 and len(broker.fills_for("m1")) == 1
    st = broker.order_state("m1")
    assert st is not None and st.status is OrderStatus.FILLED and st.filled_qty == 10
    assert broker.positions() == {"AAA": 10.0, "BBB": -4.0}
    assert broker.cash() == pytest.approx(float(server.account()["cash"]))
    assert broker.account()["equity"] == pytest.approx(float(server.account()["equity"]))
    _assert_ledger_equals_server(svc, server)


def test_resting_limit_fills_on_a_later_bar_and_cancel_comes_from_the_stream(
    server: PaperServer, broker: AlpacaBroker
) -> None:
    close = float(_batch(1).column("close")[0].as_py())
    ev = broker.submit([
        Order("lim", "AAA", Side.BUY, 5, OrderType.LIMIT, TimeInForce.GTC, limit_price=round(close * 1.1, 2)),
        Order("far", "AAA", Side.BUY, 5, OrderType.LIMIT, TimeInForce.GTC, limit_price=1.0),
    ])
    # marketable at once: ACCEPTED + FILL; the far one rests
    assert _kinds(ev) == [("accepted", "lim"), ("fill", "lim"), ("accepted", "far")]
    # asking is not knowing: the CANCELED comes from the broker's update, with this drain or a later one
    got = _collect(broker, lambda e: any(x.kind is EventKind.CANCELED for x in e), first=broker.cancel(["far"], 0))
    assert _kinds(got) == [("canceled", "far")]
    assert [o.order.client_order_id for o in broker.open_orders()] == []
    # a resting order that a later bar crosses fills on that step
    ev = broker.submit([Order("rest", "BBB", Side.SELL, 3, OrderType.LIMIT, TimeInForce.GTC, limit_price=50.2)])
    assert _kinds(ev) == [("accepted", "rest")]
    server.step(3)
    got = _collect(broker, lambda e: any(x.kind is EventKind.FILL for x in e), step=4)
    fill = next(x.fill for x in got if x.fill is not None)
    ref = next(f for f in server.fills() if f.client_order_id == "rest")
    # Alpaca's wire prices are decimal strings: equal to the venue's price to its printed precision
    assert (fill.qty, fill.ts_ns) == (ref.qty, ref.ts_ns)
    assert (fill.price, fill.fee) == (pytest.approx(ref.price, rel=1e-9), pytest.approx(ref.fee, rel=1e-9))


def test_open_orders_lists_past_alpacas_500_order_page(server: PaperServer, broker: AlpacaBroker) -> None:
    """GET /v2/orders answers at most 500 orders: 1,201 resting orders (one of them cancelled) are all listed,
    each once, in three requests (pages of 500 overlapping by one order), and none by per-order reads."""
    n = 1_201
    orders = [Order(f"r{i}", ("AAA", "BBB")[i % 2], Side.BUY, 1, OrderType.LIMIT, TimeInForce.GTC, limit_price=1.0)
              for i in range(n)]
    for k in range(0, n, 200):
        broker.submit(orders[k : k + 200])
    _collect(broker, lambda e: any(x.kind is EventKind.CANCELED for x in e), first=broker.cancel(["r600"], 0))
    want = [o["client_order_id"] for o in server.orders() if o["status"] == "new"]
    assert len(want) == n - 1 and "r600" not in want
    before = server.stats["requests"]
    got = [st.order.client_order_id for st in broker.open_orders()]
    assert server.stats["requests"] - before == 3
    assert got == want  # oldest first, each once
    states = {st.order.client_order_id: st for st in broker.open_orders()}
    assert states["r1200"].status is OrderStatus.ACCEPTED and states["r1200"].order.limit_price == 1.0


def test_rejections_duplicates_and_replace(server: PaperServer, broker: AlpacaBroker) -> None:
    ev = broker.submit([Order("bad", "AAA", Side.BUY, 1, OrderType.MARKET, TimeInForce.DAY, limit_price=5.0)])
    assert _kinds(ev) == [("rejected", "bad")]  # invalid before it leaves: the broker never sees it
    ev = broker.submit([Order("nosym", "ZZZ", Side.BUY, 1, OrderType.LIMIT, TimeInForce.GTC, limit_price=1.0)])
    assert _kinds(ev) == [("rejected", "nosym")]  # the broker's answer: no market for ZZZ
    ev = broker.submit([Order("opg", "AAA", Side.BUY, 0.5, OrderType.MARKET, TimeInForce.FOK)])
    assert ev[0].kind is EventKind.REJECTED or ev[0].kind is EventKind.ACCEPTED
    assert "bad" not in {o["client_order_id"] for o in server.orders()}
    ev = broker.submit([Order("r1", "AAA", Side.BUY, 5, OrderType.LIMIT, TimeInForce.GTC, limit_price=1.0)])
    assert _kinds(ev) == [("accepted", "r1")]
    # the same client order id again: nothing sent, no events (as SimBroker)
    assert broker.submit([Order("r1", "AAA", Side.BUY, 5, OrderType.LIMIT, TimeInForce.GTC, limit_price=1.0)]) == []
    assert broker.duplicates == 1 and sum(1 for o in server.orders() if o["client_order_id"] == "r1") == 1
    half = Order("r1.half", "AAA", Side.BUY, 2.5, OrderType.LIMIT, TimeInForce.GTC, limit_price=2.0)
    assert _kinds(broker.replace("r1", half)) == [("rejected", "r1.half")]  # Alpaca's PATCH takes whole shares
    new = Order("r1.v2", "AAA", Side.BUY, 7, OrderType.LIMIT, TimeInForce.GTC, limit_price=2.0)
    ev = broker.replace("r1", new)
    assert ("accepted", "r1.v2") in _kinds(ev)
    got = _collect(broker, lambda e: any(x.client_order_id == "r1" and x.kind is EventKind.CANCELED for x in e),
                   first=ev)
    assert ("canceled", "r1") in _kinds(got)
    at_server = {o["client_order_id"]: o for o in server.orders()}
    assert at_server["r1"]["status"] == "replaced" and at_server["r1.v2"]["qty"] == "7"
    assert at_server["r1.v2"]["limit_price"] == "2"


# ------------------------------------------------------------------------------------------ faults


def test_duplicated_fill_message_is_booked_once(server: PaperServer, broker: AlpacaBroker, tmp_path: Path) -> None:
    svc = _service(broker, tmp_path)
    svc.submit([Order("d1", "AAA", Side.BUY, 8, OrderType.LIMIT, TimeInForce.GTC, limit_price=200.0),
                Order("d2", "BBB", Side.BUY, 6, OrderType.STOP, TimeInForce.GTC, stop_price=1.0)], ts_ns=1)
    server.set_faults(duplicate_fill=5)
    server.step(1)  # d2's stop triggers on this bar: its fill message is sent twice
    _until(lambda: svc.on_bars(_batch(2)) is not None and broker.duplicate_fills >= 1)
    assert server.stats["duplicate_fills"] >= 1 and broker.duplicate_fills >= 1
    assert [f["client_order_id"] for f in svc.book.ledger.fills()].count("d2") == 1  # type: ignore[attr-defined]
    _assert_ledger_equals_server(svc, server)


def test_429_burst_waits_for_retry_after_and_sends_once(server: PaperServer, broker: AlpacaBroker,
                                                       tmp_path: Path) -> None:
    svc = _service(broker, tmp_path)
    server.set_faults(rate_limit=3, retry_after_s=2)
    rep = svc.submit([Order("q1", "AAA", Side.BUY, 3)], ts_ns=1)
    assert rep.fills == 1
    assert broker.waits == [2.0, 2.0, 2.0]  # type: ignore[attr-defined]  # Retry-After honoured, not the SDK's 3 s
    assert broker.rate_limited == 3 and server.stats["rate_limited"] == 3
    assert [o["client_order_id"] for o in server.orders()] == ["q1"]
    _assert_ledger_equals_server(svc, server)


def test_dropped_ack_is_resolved_by_client_order_id(server: PaperServer, broker: AlpacaBroker,
                                                    tmp_path: Path) -> None:
    """The POST landed but its answer was cut: the retry answers 422 duplicate, the order is fetched, once."""
    svc = _service(broker, tmp_path)
    server.set_faults(drop_ack=1)
    rep = svc.submit([Order("a1", "AAA", Side.BUY, 4)], ts_ns=1)
    assert server.stats["dropped_acks"] == 1 and broker.retries >= 1
    assert [o["client_order_id"] for o in server.orders()] == ["a1"]
    assert rep.fills == 1 and svc.oms.get("a1").status is OrderStatus.FILLED  # type: ignore[union-attr]
    _assert_ledger_equals_server(svc, server)


def test_partial_fill_after_cancel_request(server: PaperServer, broker: AlpacaBroker, tmp_path: Path) -> None:
    svc = _service(broker, tmp_path)
    svc.submit([Order("c1", "AAA", Side.BUY, 10, OrderType.LIMIT, TimeInForce.GTC, limit_price=1.0)], ts_ns=1)
    server.set_faults(partial_fill_on_cancel=1, cancel_fill_fraction=0.5)
    got = _collect(broker, lambda e: any(x.kind is EventKind.CANCELED for x in e), first=broker.cancel(["c1"], 1))
    assert [k for k, _ in _kinds(got)] == ["fill", "canceled"]  # the racing fill first, then the cancel
    applied = svc.oms.apply(got)
    svc.book.commit(ts_ns=2, updates=applied.updates, fills=applied.fills)
    st = svc.oms.get("c1")
    assert st is not None and st.status is OrderStatus.CANCELED and st.filled_qty == 5
    _assert_ledger_equals_server(svc, server)


def test_stream_outage_falls_back_to_polling_and_counts_the_reconnect(
    server: PaperServer, broker: AlpacaBroker, tmp_path: Path
) -> None:
    svc = _service(broker, tmp_path)
    svc.submit([Order("o1", "AAA", Side.SELL, 5, OrderType.STOP, TimeInForce.GTC, stop_price=500.0)], ts_ns=1)
    server.set_faults(stream_outage_steps=2)  # every websocket dropped, new ones refused for two steps
    _until(lambda: not broker.stream_connected)
    server.step(1)  # the stop triggers and fills while no stream is up: the update is lost
    assert server.stats["updates_lost"] >= 1
    rep = svc.on_bars(_batch(2))
    assert rep.fills == 1 and broker.polls >= 1  # found by REST
    server.step(1)
    server.step(1)  # the outage is over: the stream reconnects
    _until(lambda: broker.stream_connected, 20)
    assert broker.reconnects == 1
    polls = broker.polls
    svc.on_bars(_batch(4))
    svc.on_bars(_batch(4))
    assert broker.polls <= polls + 1  # one catch-up poll after the reconnect, then the stream again
    assert len(svc.book.ledger.fills()) == 1  # type: ignore[attr-defined]
    _assert_ledger_equals_server(svc, server)


def test_restarted_adapter_books_only_what_the_ledger_lacks(server: PaperServer, broker: AlpacaBroker,
                                                            tmp_path: Path) -> None:
    """A BrokerActor restart: a fresh adapter seeded from the ledger, the service recovered from the ledger."""
    svc = _service(broker, tmp_path)
    svc.submit([Order("p1", "AAA", Side.BUY, 6), Order("p2", "BBB", Side.BUY, 2, OrderType.STOP, TimeInForce.GTC,
                                                        stop_price=1.0)], ts_ns=1)
    broker.close()
    server.step(1)  # p2 fills while no adapter listens
    book: Any = svc.book
    orders, fills = book.ledger_rows()
    fresh = AlpacaBroker(BrokerConfig(kind="alpaca", **FEES), base_url=server.base_url, stream=False)
    fresh.restore(orders, fills)
    svc2 = ExecutionService.recover(fresh, book)
    assert svc2.recovered_events == 1  # p2's fill, nothing of p1 again
    _assert_ledger_equals_server(svc2, server)


def test_credentials_come_from_the_environment_and_are_never_logged(
    server: PaperServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    b = AlpacaBroker(BrokerConfig(kind="alpaca"), base_url=server.base_url)
    try:
        assert b.wait_connected(10)
        b.submit([Order("k1", "AAA", Side.BUY, 1)])
        b.cancel(["k1"], 0)
        text = caplog.text + repr(b) + str(b.stats())
    finally:
        b.close()
    assert SECRET not in text and KEY not in text
    monkeypatch.delenv("APCA_API_SECRET_KEY")
    with pytest.raises(ValueError, match="APCA_API_SECRET_KEY: not set"):
        AlpacaBroker(BrokerConfig(kind="alpaca"), base_url=server.base_url, stream=False)


def test_base_url_from_config_or_environment(server: PaperServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APCA_API_BASE_URL", server.base_url)
    b = AlpacaBroker(BrokerConfig(kind="alpaca"), stream=False)
    assert b.base_url == server.base_url and b.stream_url == server.stream_url
    assert b.positions() == {} and b.cash() == pytest.approx(100_000.0)
    assert stream_url_for("https://paper-api.alpaca.markets") == "wss://paper-api.alpaca.markets/stream"


# ------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"broker.kind": "alpaca"}, "broker.kind: alpaca fills at the broker's live prices"),
        ({"data.source": "alpaca"}, "symbols: required with data.source = 'alpaca'"),
        ({"broker.kind": "ib"}, "broker.kind: unknown broker 'ib'"),
        ({"broker.kind": "alpaca", "data.source": "alpaca", "data.symbols": ["AAA"], "broker.slippage_bps": 1.0},
         "slippage_bps: a SimBroker setting"),
        ({"broker.url": "http://127.0.0.1:1"}, "url/stream_url: used only with broker.kind = 'alpaca'"),
    ],
)
def test_config_refuses_what_would_not_work(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as exc:
        load_config(overrides=overrides)
    assert "\n" not in str(exc.value)


def test_config_accepts_alpaca_with_live_data() -> None:
    cfg = load_config(overrides={"broker.kind": "alpaca", "data.source": "alpaca", "data.symbols": ["AAA"],
                                 "broker.url": "http://127.0.0.1:1"})
    assert (cfg.broker.kind, cfg.data.source, cfg.broker.url) == ("alpaca", "alpaca", "http://127.0.0.1:1")


# ------------------------------------------------------------------------------------------ live data and the loop


def _stepper(srv: PaperServer, n: int, period_s: float, clients: tuple[str, ...] = ("data",)) -> threading.Thread:
    """Replay `n` bars, one every `period_s`, once the named websocket clients are listening."""

    def run() -> None:
        _until(lambda: all(srv.stream_clients(k) >= 1 for k in clients), 60)
        for _ in range(n):
            time.sleep(period_s)
            srv.step(1)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_live_source_hands_out_one_batch_per_bar_time(creds: None) -> None:
    srv = PaperServer(BARS, key=KEY, secret=SECRET)
    srv.start()
    try:
        src = AlpacaLiveSource(["AAA", "BBB"], stream_url=srv.data_stream_url, idle_timeout_s=1.5, grace_s=0.5)
        assert len(src) == 0 and SECRET not in repr(src)
        stepper = _stepper(srv, 5, 0.05)
        got = list(src.batches())  # ends 1.5 s after the last bar
        stepper.join(10)
    finally:
        srv.stop()
    assert len(got) == 5
    stamps = [int(b.column("ts").cast(pa.int64())[0].as_py()) for b in got]
    assert stamps == sorted(set(stamps))
    want = BARS.slice(0, 10)
    table = pa.Table.from_batches(got)
    assert table.schema.equals(BARS.schema, check_metadata=False)
    assert table.column("symbol").to_pylist() == want.column("symbol").to_pylist()
    assert table.column("close").to_pylist() == pytest.approx(want.column("close").to_pylist(), rel=1e-9)
    assert table.column("ts").to_pylist() == want.column("ts").to_pylist()  # bar end, as tradesys stamps bars


@pytest.mark.ray
@pytest.mark.parametrize("crash", [False, True], ids=["plain", "execution-crash"])
def test_live_loop_on_alpaca_books_what_the_server_filled(ray_session: None, tmp_path: Path, crash: bool) -> None:
    """The Done-when: broker.kind = data.source = "alpaca" runs the loop on the server's bars and orders; the
    ledger's fills are the server's fills, and its positions and cash the broker's. With `crash`, the Execution
    actor dies right after the broker took its 3rd submit (the ledger lacks the answer): it is restarted, recovers
    from the ledger and the adapter, and still nothing is sent or booked twice."""
    from tradesys.live import run_live

    srv = PaperServer(BARS, key=KEY, secret=SECRET, broker=BrokerConfig(**FEES), initial_cash=100_000.0)
    srv.start()
    n = 20
    db = f"sqlite:///{tmp_path}/alpaca.db"
    crash_args: dict[str, Any] = {"crash_execution_at_submit": 3, "crash_marker": str(tmp_path / "crashed")}
    try:
        cfg = load_config(overrides={
            "initial_cash": 100_000.0,
            "broker.kind": "alpaca", "broker.url": srv.base_url, **{f"broker.{k}": v for k, v in FEES.items()},
            "data.source": "alpaca", "data.symbols": ["AAA", "BBB"], "data.alpaca_stream_url": srv.data_stream_url,
            "data.idle_timeout_s": 2.0,
            "strategy.fast": 2, "strategy.slow": 4, "strategy.vol_lookback": 3, "strategy.rebalance_band": 0.0,
            "strategy.max_weight": 0.5, "ledger.url": db,
        })
        stepper = _stepper(srv, n, 0.1, ("data", "trade"))
        summary = run_live(cfg, show_progress=False, run_id=f"t-alpaca-{int(crash)}", **(crash_args if crash else {}))
        stepper.join(30)
        ledger = open_ledger(db)
        server_fills, server_orders = srv.fills(), srv.orders()
        positions, account = srv.positions(), srv.account()
    finally:
        srv.stop()
    assert summary["reason"] == "completed" and summary["steps"] == n
    if crash:
        assert (tmp_path / "crashed").exists() and summary["restarts"] >= 1
    assert len(server_fills) >= 10  # the strategy traded on most bars: the comparison below has substance
    assert summary["fills"] == len(ledger.fills())
    mine = sorted((f["client_order_id"], f["qty"], f["price"], f["fee"]) for f in ledger.fills())
    theirs = sorted((f.client_order_id, f.qty, f.price, f.fee) for f in server_fills)
    assert [m[:2] for m in mine] == [t[:2] for t in theirs]
    assert [m[2:] for m in mine] == [pytest.approx(t[2:], rel=1e-9) for t in theirs]
    assert sorted(o["client_order_id"] for o in server_orders) == sorted(
        o["client_order_id"] for o in ledger.orders() if o["status"] != "rejected" or o["filled_qty"])
    held = {p["symbol"]: p["qty"] for p in ledger.positions() if p["qty"]}
    assert held == positions
    assert ledger.account()["cash"] == pytest.approx(float(account["cash"]), abs=1e-6)
