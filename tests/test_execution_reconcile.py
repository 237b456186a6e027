"""Reconciliation of the book of record against the broker (tradesys.execution.reconcile and the service).

References: hand-computed differences for the pure cases (a position break of d shares at mark m is d * m; a cash
break is broker cash minus ledger cash after booking), the accounting identities (tests/ledger_checks.py: every
fill has an order, positions = sum of fills, cash = initial cash - fill flows, cash + positions = equity), and the
venue's own records (SimBroker's orders, positions and cash; the local Alpaca paper server's orders, fills,
positions and cash) for ledger == broker. No mocks: the SimBroker is the real venue, and the Alpaca cases run the
real alpaca-py client against the local paper server with each injected fault.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tests.ledger_checks import assert_ledger_consistent
from tradesys.broker.sim import SimBroker
from tradesys.config import BrokerConfig, ConfigError, ExecutionConfig, load_config
from tradesys.core.orders import (
    EventKind,
    Fill,
    Order,
    OrderEvent,
    OrderState,
    OrderStatus,
    OrderType,
    RejectReason,
    Side,
    TimeInForce,
)
from tradesys.data.historical import bars_table
from tradesys.execution.oms import OrderManager
from tradesys.execution.reconcile import BrokerView, LedgerView, reconcile
from tradesys.execution.service import ExecutionService
from tradesys.ledger import open_ledger
from tradesys.ledger.base import OrderUpdate
from tradesys.ledger.book import BookKeeper

CASH = 100_000.0
FEES = {"fee_bps": 1.0, "fee_min": 0.0}


def _fill(cid: str, n: int, qty: float, price: float, side: Side = Side.BUY, sym: str = "AAA", fee: float = 0.0,
          ts: int = 5) -> Fill:
    return Fill(f"{cid}:{n}", cid, sym, side, qty, price, fee, ts)


def _st(order: Order, status: OrderStatus, fills: Sequence[Fill] = ()) -> OrderState:
    filled = sum(f.qty for f in fills)
    avg = sum(f.qty * f.price for f in fills) / filled if filled else 0.0
    return OrderState(order, status, filled, avg, fill_ids=[f.fill_id for f in fills])


# ------------------------------------------------------------------------------------------------ pure cases


def test_missing_fills_are_booked_once_even_when_the_broker_lists_one_twice() -> None:
    o = Order("o1", "AAA", Side.BUY, 10)
    f1, f2 = _fill("o1", 1, 4, 100.0, fee=0.04), _fill("o1", 2, 6, 101.0, fee=0.06)
    oms = OrderManager()
    oms.register([o])
    oms.apply(reconcile(LedgerView({"o1": oms.get("o1")}, {}, CASH),  # type: ignore[dict-item]
                        BrokerView({"o1": _st(o, OrderStatus.ACCEPTED)}, {}), 1).events)
    ledger = LedgerView({"o1": oms.get("o1")}, {"AAA": 0.0}, CASH, {"AAA": 101.0})  # type: ignore[dict-item]
    broker = BrokerView({"o1": _st(o, OrderStatus.FILLED, [f1, f2])}, {"o1": [f1, f2, f1]},  # f1 duplicated
                        {"AAA": 10.0}, CASH - 4 * 100.0 - 6 * 101.0 - 0.1)
    rep = reconcile(ledger, broker, 7)
    assert [(e.kind, e.fill.fill_id if e.fill else None) for e in rep.events] == [
        (EventKind.FILL, "o1:1"), (EventKind.FILL, "o1:2")]
    assert rep.breaks == [] and rep.adopt == [] and rep.resend == []
    assert rep.counts() == {"adopted": 0, "fills": 2, "accepted": 0, "status_changes": 0, "resent": 0, "breaks": 0}
    assert reconcile(ledger, broker, 7) == rep  # deterministic
    applied = oms.apply(rep.events)
    assert len(applied.fills) == 2 and oms.get("o1").status is OrderStatus.FILLED  # type: ignore[union-attr]
    # idempotent: with the fills booked (ledger position and cash moved by them), nothing is left to do
    after = LedgerView({"o1": oms.get("o1")}, {"AAA": 10.0}, broker.cash, {"AAA": 101.0})  # type: ignore[arg-type]
    again = reconcile(after, broker, 8)
    assert not again.found_anything


def test_status_changes_accepts_and_resends() -> None:
    orders = {c: Order(c, "AAA", Side.SELL, 5, OrderType.LIMIT, TimeInForce.GTC, limit_price=99.0)
              for c in ("cxl", "exp", "rej", "ack", "unsent", "lost")}
    ledger = LedgerView({
        "cxl": _st(orders["cxl"], OrderStatus.ACCEPTED), "exp": _st(orders["exp"], OrderStatus.ACCEPTED),
        "rej": _st(orders["rej"], OrderStatus.NEW), "ack": _st(orders["ack"], OrderStatus.NEW),
        "unsent": _st(orders["unsent"], OrderStatus.NEW), "lost": _st(orders["lost"], OrderStatus.ACCEPTED),
    }, {}, CASH)
    rej = _st(orders["rej"], OrderStatus.REJECTED)
    rej.reason, rej.detail = RejectReason.NO_LIQUIDITY, "none"
    broker = BrokerView({
        "cxl": _st(orders["cxl"], OrderStatus.CANCELED), "exp": _st(orders["exp"], OrderStatus.EXPIRED),
        "rej": rej, "ack": _st(orders["ack"], OrderStatus.ACCEPTED),
    }, {}, {}, CASH)
    rep = reconcile(ledger, broker, 9)
    assert [(e.kind, e.client_order_id) for e in rep.events] == [
        (EventKind.CANCELED, "cxl"), (EventKind.EXPIRED, "exp"), (EventKind.REJECTED, "rej"),
        (EventKind.ACCEPTED, "ack")]
    assert rep.events[2].reason is RejectReason.NO_LIQUIDITY and all(e.ts_ns == 9 for e in rep.events)
    assert rep.resend == [orders["unsent"]]  # recorded, never sent: send it
    # accepted by the ledger's account, unknown to the broker: a break that booking cannot explain, no money
    assert [(b.kind, b.key, b.amount) for b in rep.breaks] == [("unknown_to_broker", "lost", 0.0)]
    assert rep.counts()["status_changes"] == 3 and rep.counts()["accepted"] == 1


def test_an_order_the_ledger_never_recorded_is_adopted_with_its_fills() -> None:
    o = Order("around", "BBB", Side.SELL, 3)
    f = _fill("around", 1, 3, 50.0, Side.SELL, "BBB", fee=0.015)
    ledger = LedgerView({}, {}, CASH, {"BBB": 50.0})
    broker = BrokerView({"around": _st(o, OrderStatus.FILLED, [f])}, {"around": [f]}, {"BBB": -3.0},
                        CASH + 150.0 - 0.015)
    rep = reconcile(ledger, broker, 3)
    assert rep.adopt == [o]
    assert [e.kind for e in rep.events] == [EventKind.ACCEPTED, EventKind.FILL]
    assert rep.breaks == []


def test_position_and_cash_breaks_are_what_booking_leaves_unexplained() -> None:
    o = Order("o", "AAA", Side.BUY, 10)
    f = _fill("o", 1, 10, 20.0, fee=0.02)
    ledger = LedgerView({"o": _st(o, OrderStatus.ACCEPTED)}, {"AAA": 5.0, "CCC": 2.0}, CASH,
                        {"AAA": 12.5, "CCC": 40.0})
    # the broker holds 22 AAA (ledger 5 + the missing fill's 10 = 15: 7 unexplained), no CCC, and 250 more cash
    cash = CASH - 10 * 20.0 - 0.02 + 250.0
    broker = BrokerView({"o": _st(o, OrderStatus.FILLED, [f])}, {"o": [f]}, {"AAA": 22.0, "ZZZ": 1.0}, cash)
    rep = reconcile(ledger, broker, 1)
    assert len(rep.fills) == 1
    got = {(b.kind, b.key): (b.qty, b.amount) for b in rep.breaks}
    assert got[("position", "AAA")] == (pytest.approx(7.0), pytest.approx(7 * 12.5))
    assert got[("position", "CCC")] == (pytest.approx(-2.0), pytest.approx(2 * 40.0))
    assert got[("position", "ZZZ")][1] == float("inf")  # no price for it: not a small break
    assert got[("cash", "cash")] == (pytest.approx(250.0), pytest.approx(250.0))
    assert len(rep.breaks) == 4
    # without positions and cash from the broker (it does not report them), only orders are compared
    assert reconcile(ledger, BrokerView(broker.orders, broker.fills), 1).breaks == []


def test_fill_on_a_closed_order_overfill_and_filled_qty_are_order_breaks() -> None:
    a, b, c = Order("a", "AAA", Side.BUY, 5), Order("b", "AAA", Side.BUY, 5), Order("c", "AAA", Side.BUY, 5)
    fa = _fill("a", 1, 2, 10.0)
    fb = [_fill("b", 1, 4, 10.0), _fill("b", 2, 4, 10.0)]
    ledger = LedgerView({"a": _st(a, OrderStatus.CANCELED), "b": _st(b, OrderStatus.ACCEPTED),
                         "c": _st(c, OrderStatus.ACCEPTED)}, {}, CASH)
    c_venue = _st(c, OrderStatus.PARTIALLY_FILLED)
    c_venue.filled_qty = 3.0  # the broker says 3 filled but lists no fill
    broker = BrokerView({"a": _st(a, OrderStatus.CANCELED, [fa]), "b": _st(b, OrderStatus.PARTIALLY_FILLED, fb),
                         "c": c_venue}, {"a": [fa], "b": fb})
    rep = reconcile(ledger, broker, 1)
    assert [e.fill.fill_id for e in rep.events if e.fill] == ["b:1"]  # b:2 would overfill: not booked
    assert [(x.kind, x.key) for x in rep.breaks] == [
        ("fill_on_closed_order", "a"), ("overfill", "b"), ("filled_qty", "b"), ("filled_qty", "c")]
    assert all(x.amount == 0.0 for x in rep.breaks)


# ------------------------------------------------------------------------------------------ SimBroker + service


def _bars(n: int, syms: tuple[tuple[str, float], ...] = (("AAA", 100.0), ("BBB", 50.0))) -> list[pa.RecordBatch]:
    stamps = pd.date_range("2024-01-02 14:31", periods=n, freq="1min", tz="UTC")
    rows = []
    for i, t in enumerate(stamps):
        for sym, p0 in syms:
            c = p0 * (1 + 0.02 * np.sin(i / 3))
            rows.append({"ts": t, "symbol": sym, "open": c - 0.05, "high": c + 0.3, "low": c - 0.3, "close": c,
                         "volume": 1e6})
    table = bars_table(pd.DataFrame(rows))
    return [table.slice(2 * i, 2).combine_chunks().to_batches()[0] for i in range(n)]


def _sim_service(every: int = 0, limit: float = 0.0, url: str = "sqlite:///:memory:") -> tuple[ExecutionService,
                                                                                                SimBroker]:
    venue = SimBroker(BrokerConfig(**FEES))
    venue.opening_cash = CASH
    svc = ExecutionService(venue, BookKeeper(open_ledger(url), CASH),
                           settings=ExecutionConfig(reconcile_every_bars=every, reconcile_break_limit=limit))
    return svc, venue


def _assert_ledger_equals_sim(svc: ExecutionService, venue: SimBroker) -> None:
    ledger: Any = svc.book.ledger  # type: ignore[attr-defined]
    mine = {r["client_order_id"]: (r["status"], r["filled_qty"]) for r in ledger.orders()}
    theirs = {s.order.client_order_id: (s.status.value, s.filled_qty) for s in venue.orders()}
    assert mine == theirs
    assert sorted(f["fill_id"] for f in ledger.fills()) == sorted(f.fill_id for s in venue.orders()
                                                                   for f in venue.fills_for(s.order.client_order_id))
    snap = svc.book.snapshot()
    assert {s: q for s, q in snap.positions.items() if abs(q) > 1e-12} == pytest.approx(
        {s: q for s, q in venue.positions().items() if abs(q) > 1e-12})
    assert snap.cash == pytest.approx(venue.cash(), rel=1e-12)
    assert_ledger_consistent(ledger, CASH)  # every fill has an order; cash + positions = equity


def test_fills_made_around_the_service_are_booked_once_and_ledger_equals_the_broker() -> None:
    bars = _bars(6)
    svc, venue = _sim_service(every=2)
    svc.on_bars(bars[0])
    svc.submit([Order("s1", "AAA", Side.BUY, 10), Order("s2", "BBB", Side.BUY, 4, OrderType.LIMIT, TimeInForce.GTC,
                                                        limit_price=1.0)], ts_ns=1)
    # sent straight to the venue, bypassing the service: a market order that fills now, a resting one that
    # fills on the next bar (which the venue also sees without the service)
    venue.submit([Order("x1", "AAA", Side.SELL, 3), Order("x2", "BBB", Side.BUY, 7, OrderType.LIMIT,
                                                          TimeInForce.GTC, limit_price=1e6)])
    venue.cancel(["s2"], 2)  # and a cancel the service never heard of
    rep, n = svc.reconcile(3, "request")
    assert [o.client_order_id for o in rep.adopt] == ["x1", "x2"]
    assert rep.counts() == {"adopted": 2, "fills": 2, "accepted": 2, "status_changes": 1, "resent": 0, "breaks": 0}
    assert n == 5 and svc.halted is None
    _assert_ledger_equals_sim(svc, venue)
    # the second time nothing is booked and no audit row is written
    ledger: Any = svc.book.ledger  # type: ignore[attr-defined]
    rows = len(ledger.audit_log())
    rep2, n2 = svc.reconcile(4, "request")
    assert not rep2.found_anything and n2 == 0 and len(ledger.audit_log()) == rows
    audit = [a for a in ledger.audit_log() if a["kind"] == "reconcile"]
    assert len(audit) == 1 and "2 adopted" in audit[0]["message"]
    # another order around the service: the schedule (every 2 bars; the service has seen 1) books it
    venue.submit([Order("x3", "BBB", Side.BUY, 2)])
    assert "x3" not in svc.oms
    svc.on_bars(bars[1])
    assert "x3" in svc.oms
    assert [a["payload"]["why"] for a in ledger.audit_log() if a["kind"] == "reconcile"] == ["request", "schedule"]
    _assert_ledger_equals_sim(svc, venue)
    assert svc.reconcile_stats["runs"] == 3 and svc.reconcile_stats["adopted"] == 3


def test_reconnect_triggers_a_reconciliation() -> None:
    bars = _bars(4)
    svc, venue = _sim_service(every=0)
    for b in bars[:2]:
        svc.on_bars(b)
    venue.submit([Order("y1", "AAA", Side.BUY, 5)])
    svc.on_bars(bars[2])
    assert "y1" not in svc.oms  # no schedule, no reconnect: not seen
    venue.reconnects = 1  # the venue reports a reconnection (the Alpaca adapter counts its stream's)
    rep = svc.on_bars(bars[3])
    assert "y1" in svc.oms and rep.fills == 1
    ledger: Any = svc.book.ledger  # type: ignore[attr-defined]
    rec = [a for a in ledger.audit_log() if a["kind"] == "reconcile"]
    assert len(rec) == 1 and rec[0]["message"].startswith("reconnect:")
    _assert_ledger_equals_sim(svc, venue)


@pytest.mark.parametrize("limit, halts", [(1_000.0, True), (1e9, False)])
def test_an_unexplained_position_difference_halts_new_orders_above_the_limit(limit: float, halts: bool,
                                                                              tmp_path: Any) -> None:
    bars = _bars(3)
    url = f"sqlite:///{tmp_path}/l.db"
    svc, venue = _sim_service(url=url)
    svc.on_bars(bars[0])
    svc.submit([Order("b1", "AAA", Side.BUY, 10)], ts_ns=1)
    # the book records a trade the broker never made (a manual booking): 100 AAA at 101
    ghost = Order("ghost", "AAA", Side.BUY, 100)
    f = Fill("ghost:1", "ghost", "AAA", Side.BUY, 100, 101.0, 0.0, 2)
    svc.book.commit(ts_ns=2, orders=[ghost], fills=[f],
                    updates=[OrderUpdate("ghost", OrderStatus.FILLED, 100, 101.0, 2)])
    # a restart: the service recovers from the ledger and reconciles on start
    svc2 = ExecutionService.recover(venue, svc.book, settings=ExecutionConfig(reconcile_break_limit=limit))
    ledger: Any = svc.book.ledger  # type: ignore[attr-defined]
    mark = svc.book.snapshot().marks["AAA"]
    breaks = [a for a in ledger.audit_log() if a["kind"] == "reconcile_break"]
    assert len(breaks) == 2  # the position, and the cash the ghost trade moved
    pos = next(a for a in breaks if a["payload"]["kind"] == "position")
    assert pos["payload"]["qty"] == pytest.approx(-100.0)
    assert pos["payload"]["amount"] == pytest.approx(100 * mark)
    cash = next(a for a in breaks if a["payload"]["kind"] == "cash")
    assert cash["payload"]["qty"] == pytest.approx(100 * 101.0)
    assert svc2.reconcile_stats["break_amount"] == pytest.approx(100 * mark + 100 * 101.0)
    rep = svc2.submit([Order("b2", "BBB", Side.BUY, 1)], ts_ns=3)
    if halts:
        assert svc2.halted is not None and "reconcile_break_limit" in svc2.halted
        assert rep.rejected == 1 and rep.fills == 0
        assert venue.order_state("b2") is None  # never sent
        row = ledger.get_order("b2")
        assert row["status"] == "rejected" and row["reason"] == RejectReason.RECONCILE_BREAK.value
        kinds = [a["kind"] for a in ledger.audit_log()]
        assert "reconcile_halt" in kinds
        rej = [a for a in ledger.audit_log() if a["kind"] == "risk_reject" and a["client_order_id"] == "b2"]
        assert len(rej) == 1 and "reconcile_break" in rej[0]["message"]
    else:
        assert svc2.halted is None and rep.fills == 1


def test_config_refuses_a_negative_schedule_or_limit() -> None:
    with pytest.raises(ConfigError, match=r"execution\.reconcile_every_bars"):
        load_config(overrides=["execution.reconcile_every_bars=-1"])
    with pytest.raises(ConfigError, match=r"execution\.reconcile_break_limit"):
        load_config(overrides=["execution.reconcile_break_limit=-5"])
    assert load_config(overrides=["execution.reconcile_every_bars=7"]).execution.reconcile_every_bars == 7


@pytest.mark.ray
def test_live_loop_reconciles_on_schedule_and_after_a_broker_restart(ray_session: None, tmp_path: Any) -> None:
    """The ExecutionActor runs the same service: on start, every 50 bars, and after the BrokerActor is killed
    mid-run (its restart counts as a reconnect; the rebuilt venue agrees, so nothing is found); the counters are in
    the run summary and the trades equal the undisturbed backtest's. Without the restart counting as a reconnect,
    runs_reconnect is 0 and this fails."""
    import threading

    import ray

    from tests.ledger_checks import trade_record
    from tradesys.backtest.runner import run_backtest
    from tradesys.data import make_source
    from tradesys.live import run_live

    url = f"sqlite:///{tmp_path}/k.db"
    cfg = load_config(overrides={
        "data.source": "synthetic", "data.symbols": ["ALPHA", "BRAVO"], "data.synthetic_days": 1,
        "strategy.fast": 5, "strategy.slow": 20, "strategy.vol_lookback": 10, "strategy.order_type": "limit",
        "broker.participation_cap": 0.01, "ray.include_dashboard": False, "data.speed": 150.0,
        "execution.reconcile_every_bars": 50, "ledger.url": url})
    out: dict[str, Any] = {}
    t = threading.Thread(target=lambda: out.update(run_live(cfg, show_progress=False, run_id="t-rec-broker")))
    t.start()
    deadline = time.time() + 90
    sup = None
    while sup is None:
        try:
            sup = ray.get_actor("t-rec-broker:supervisor")
        except ValueError:
            assert time.time() < deadline
            time.sleep(0.05)
    while ray.get(sup.progress.remote())["step"] < 100:
        assert time.time() < deadline
        time.sleep(0.02)
    ray.kill(ray.get(sup.children.remote())["broker"], no_restart=False)
    t.join(timeout=180)
    assert not t.is_alive() and out["reason"] == "completed" and out["restarts"] == 1
    steps = len(make_source(cfg.data))
    rec = out["execution"]["reconcile"]
    assert rec["runs_start"] == 1 and rec["runs_reconnect"] == 1
    # a step due for both the schedule and the reconnect reconciles once (as the reconnect)
    assert rec["runs_schedule"] in (steps // 50, steps // 50 - 1)
    assert rec["runs"] == rec["runs_start"] + rec["runs_reconnect"] + rec["runs_schedule"]
    assert rec["found"] == 0 and rec["breaks"] == 0 and out["execution"]["halted"] is None
    _, bt = run_backtest(cfg)
    ledger = open_ledger(url)
    assert trade_record(ledger) == trade_record(bt)
    assert not [a for a in ledger.audit_log() if a["kind"].startswith("reconcile")]


# ------------------------------------------------------------------------------------------ Alpaca faults

KEY, SECRET = "PKH8TESTKEY", "h8-s3cr3t-0123456789"


@pytest.fixture()
def paper(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any, list[pa.RecordBatch]]]:
    from tradesys.broker.alpaca import AlpacaBroker
    from tradesys.broker.alpaca_paper import PaperServer

    monkeypatch.setenv("APCA_API_KEY_ID", KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
    monkeypatch.delenv("APCA_API_BASE_URL", raising=False)
    batches = _bars(30)
    srv = PaperServer(pa.Table.from_batches(batches), key=KEY, secret=SECRET, broker=BrokerConfig(**FEES),
                      initial_cash=CASH)
    srv.start()
    srv.step(1)
    waits: list[float] = []
    b = AlpacaBroker(BrokerConfig(kind="alpaca", **FEES), base_url=srv.base_url, sleep=waits.append)
    assert b.wait_connected(10)
    yield srv, b, batches
    b.close()
    srv.stop()


def _until(cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def _alpaca_service(b: Any, tmp_path: Any) -> ExecutionService:
    return ExecutionService(b, BookKeeper(open_ledger(f"sqlite:///{tmp_path}/l.db"), CASH),
                            settings=ExecutionConfig(reconcile_every_bars=0))


def _reconciled_equals_server(svc: ExecutionService, srv: Any, ts: int = 10**18) -> None:
    """Reconcile, then: ledger fills == the server's (nothing twice), positions and cash equal, no break; and a
    second reconciliation books nothing."""
    rep, _ = svc.reconcile(ts, "test")
    assert rep.breaks == [], rep.breaks
    ledger: Any = svc.book.ledger  # type: ignore[attr-defined]
    fills = ledger.fills()
    ids = [f["fill_id"] for f in fills]
    assert len(ids) == len(set(ids))
    mine = sorted((f["client_order_id"], f["qty"]) for f in fills)
    assert mine == sorted((f.client_order_id, f.qty) for f in srv.fills())
    # Alpaca's words for our statuses: every open one other than a partial fill is "accepted" to the OMS
    words = {"filled": "filled", "canceled": "canceled", "expired": "expired", "rejected": "rejected",
             "replaced": "canceled", "partially_filled": "partially_filled"}
    status = {o["client_order_id"]: words.get(o["status"], "accepted") for o in srv.orders()}
    for r in ledger.orders():
        if r["client_order_id"] in status:
            assert r["status"] == status[r["client_order_id"]], r["client_order_id"]
    snap = svc.book.snapshot()
    assert {s: q for s, q in snap.positions.items() if q} == pytest.approx(srv.positions())
    assert snap.cash == pytest.approx(float(srv.account()["cash"]), abs=1e-6)
    assert_ledger_consistent(ledger, CASH)
    again, _ = svc.reconcile(ts, "test")
    assert not again.found_anything, again


def test_alpaca_dropped_ack_then_reconcile(paper: tuple[Any, Any, list[pa.RecordBatch]], tmp_path: Any) -> None:
    srv, b, _ = paper
    svc = _alpaca_service(b, tmp_path)
    srv.set_faults(drop_ack=1)
    svc.submit([Order("a1", "AAA", Side.BUY, 4)], ts_ns=1)
    assert srv.stats["dropped_acks"] == 1
    _reconciled_equals_server(svc, srv)


def test_alpaca_duplicate_fill_message_then_reconcile(paper: tuple[Any, Any, list[pa.RecordBatch]],
                                                      tmp_path: Any) -> None:
    srv, b, batches = paper
    svc = _alpaca_service(b, tmp_path)
    svc.submit([Order("d1", "BBB", Side.BUY, 6, OrderType.STOP, TimeInForce.GTC, stop_price=1.0)], ts_ns=1)
    srv.set_faults(duplicate_fill=5)
    srv.step(1)
    _until(lambda: svc.on_bars(batches[1]) is not None and b.duplicate_fills >= 1)
    _reconciled_equals_server(svc, srv)


def test_alpaca_partial_fill_after_cancel_request_reconciled_without_draining(
    paper: tuple[Any, Any, list[pa.RecordBatch]], tmp_path: Any
) -> None:
    srv, b, _ = paper
    svc = _alpaca_service(b, tmp_path)
    svc.submit([Order("c1", "AAA", Side.BUY, 10, OrderType.LIMIT, TimeInForce.GTC, limit_price=1.0)], ts_ns=1)
    srv.set_faults(partial_fill_on_cancel=1, cancel_fill_fraction=0.5)
    b.cancel(["c1"], 1)  # asked around the service: the racing fill and the cancel reach the ledger only now
    _until(lambda: any(o["client_order_id"] == "c1" and o["status"] == "canceled" for o in srv.orders()))
    rep, _ = svc.reconcile(2, "test")
    assert rep.counts()["fills"] == 1 and rep.counts()["status_changes"] == 1
    st = svc.oms.get("c1")
    assert st is not None and st.status is OrderStatus.CANCELED and st.filled_qty == pytest.approx(5)
    _reconciled_equals_server(svc, srv)


def test_alpaca_429_burst_then_reconcile(paper: tuple[Any, Any, list[pa.RecordBatch]], tmp_path: Any) -> None:
    srv, b, _ = paper
    svc = _alpaca_service(b, tmp_path)
    srv.set_faults(rate_limit=3, retry_after_s=0)
    svc.submit([Order("q1", "AAA", Side.BUY, 3)], ts_ns=1)
    srv.set_faults(rate_limit=2, retry_after_s=0)  # and a burst in the middle of the reconciliation's reads
    _reconciled_equals_server(svc, srv)
    assert srv.stats["rate_limited"] == 5 and [o["client_order_id"] for o in srv.orders()] == ["q1"]


def test_alpaca_restart_losing_the_websocket_is_reconciled_on_reconnect(
    paper: tuple[Any, Any, list[pa.RecordBatch]], tmp_path: Any
) -> None:
    srv, b, batches = paper
    svc = _alpaca_service(b, tmp_path)
    svc.submit([Order("w1", "AAA", Side.SELL, 5, OrderType.STOP, TimeInForce.GTC, stop_price=500.0)], ts_ns=1)
    srv.set_faults(stream_outage_steps=2)
    _until(lambda: not b.stream_connected)
    srv.step(1)  # w1 fills while the stream is down: the update is lost
    assert srv.stats["updates_lost"] >= 1
    srv.step(2)  # the outage ends: the adapter reconnects
    _until(lambda: b.stream_connected, 20)
    assert b.reconnects == 1
    assert svc.reconcile_stats["runs"] == 0
    svc.on_bars(batches[3])  # no schedule (every 0 bars): the reconnect alone makes this step reconcile
    assert svc.reconcile_stats["runs"] == 1
    ledger: Any = svc.book.ledger  # type: ignore[attr-defined]
    assert [f["client_order_id"] for f in ledger.fills()] == ["w1"]
    _reconciled_equals_server(svc, srv)


def test_alpaca_orders_sent_around_the_service(paper: tuple[Any, Any, list[pa.RecordBatch]], tmp_path: Any) -> None:
    """An open order sent around the service is adopted. A filled one is not listed by the adapter (it lists open
    orders only: no `orders()`), so it shows as what it is to the ledger: an unexplained position and cash break."""
    srv, b, _ = paper
    svc = _alpaca_service(b, tmp_path)
    b.submit([Order("z1", "BBB", Side.BUY, 5),  # fills at once
              Order("z2", "AAA", Side.BUY, 5, OrderType.LIMIT, TimeInForce.GTC, limit_price=1.0)])  # rests
    rep, _ = svc.reconcile(1, "test")
    assert [o.client_order_id for o in rep.adopt] == ["z2"] and rep.fills == []
    z1 = next(f for f in srv.fills() if f.client_order_id == "z1")
    got = {(x.kind, x.key): x.qty for x in rep.breaks}
    assert got == {("position", "BBB"): pytest.approx(5.0), ("cash", "cash"): pytest.approx(-(5 * z1.price + z1.fee))}
    assert svc.halted is not None  # the default limit is 0: any unexplained money halts new orders



def test_reconcile_benchmark_quick_run_books_every_crossed_order_once() -> None:
    """benchmarks/execution_reconcile.py --quick as typed: 1,000 resting orders, half of them filled at the venue
    behind the service's back; the script itself exits non-zero if ledger != venue or a second run finds anything."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "benchmarks" / "execution_reconcile.py"), "--quick"],
                       capture_output=True, text=True, timeout=120, cwd=root)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "booking 500 fills the ledger lacked" in r.stdout
    assert "ledger == venue after each case" in r.stdout


class _ReplayingVenue(SimBroker):
    """A real SimBroker whose next `on_bars` gives again the rejections its `submit` gave, as a live venue's drained
    update stream does when the compiled graph's venue node hands a restarted ExecutionActor its remembered answer."""

    def __init__(self, cfg: BrokerConfig) -> None:
        super().__init__(cfg)
        self.replay: list[OrderEvent] = []

    def submit(self, orders: Sequence[Order]) -> list[OrderEvent]:
        events = super().submit(orders)
        self.replay += [e for e in events if e.kind is EventKind.REJECTED]
        return events

    def on_bars(self, bars: pa.RecordBatch) -> list[OrderEvent]:
        events, self.replay = [*super().on_bars(bars), *self.replay], []
        return events


def test_a_rejection_the_venue_gives_again_is_audited_once() -> None:
    """The OMS ignores a rejection for an order already rejected; the audit log must not book it a second time."""
    bars = _bars(3)
    venue = _ReplayingVenue(BrokerConfig(**FEES))
    venue.opening_cash = CASH
    svc = ExecutionService(venue, BookKeeper(open_ledger("sqlite:///:memory:"), CASH), settings=ExecutionConfig())
    svc.on_bars(bars[0])
    rep = svc.submit([Order("r1", "ZZZ", Side.BUY, 5), Order("ok", "AAA", Side.BUY, 5)], ts_ns=1)
    assert rep.rejected == 1 and len(venue.replay) == 1  # no bar seen for ZZZ: NO_MARKET_PRICE
    ledger: Any = svc.book.ledger  # type: ignore[attr-defined]
    assert [a["client_order_id"] for a in ledger.audit_log("broker_reject")] == ["r1"]
    svc.on_bars(bars[1])  # the venue hands r1's rejection over again
    assert not venue.replay
    assert [a["client_order_id"] for a in ledger.audit_log("broker_reject")] == ["r1"]
    assert svc.oms.get("r1").status is OrderStatus.REJECTED  # type: ignore[union-attr]
    _assert_ledger_equals_sim(svc, venue)
