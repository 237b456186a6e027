"""Minimum-quantity orders, end to end: the order's field, SimBroker's rule, the router and the routed venues, a
backtest worked by TWAP children, and the Alpaca adapter's refusal.

The rule (tradesys/broker/sim.py): an order with min_qty > 0 fills at a point only when what it can fill there,
min(leaves, liquidity left), is at least min(min_qty, leaves). The references are hand-computed fills with a binding
participation cap, the fill-by-fill check of that inequality recomputed from the ledger's rows, the accounting
identities of tests/ledger_checks.py, and an undisturbed venue for every restore.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from tradesys.backtest.runner import run_backtest
from tradesys.broker.sim import SimBroker
from tradesys.broker.venues import MultiVenueBroker, restore_routed, split_child_id
from tradesys.config import BrokerConfig, load_config
from tradesys.core.orders import (
    EventKind,
    Fill,
    Order,
    OrderEvent,
    OrderStatus,
    OrderType,
    RejectReason,
    Side,
    TimeInForce,
)
from tradesys.core.schemas import BAR_SCHEMA
from tradesys.data import make_source
from tradesys.execution.routing import RouteMarket, Venue, route
from tradesys.ledger import Ledger, LedgerBatch, OrderUpdate, open_ledger

from .ledger_checks import assert_ledger_consistent, closes_by_ts

T0 = 1_700_000_000_000_000_000
MIN = 60 * 10**9
BUY, SELL = Side.BUY, Side.SELL
MKT, LMT = OrderType.MARKET, OrderType.LIMIT
DAY, GTC, IOC, FOK = TimeInForce.DAY, TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK


def bar(k: int, volume: float | None, close: float = 100.0, open_: float | None = None, sym: str = "AAA",
        lo: float | None = None, hi: float | None = None) -> pa.RecordBatch:
    """Bar number k (one minute apart) of one symbol."""
    o = close if open_ is None else open_
    return pa.RecordBatch.from_pylist(
        [{"ts": T0 + k * MIN, "symbol": sym, "open": o, "high": max(o, close) if hi is None else hi,
          "low": min(o, close) if lo is None else lo, "close": close, "volume": volume}],
        schema=BAR_SCHEMA,
    )


def sim(cap: float = 0.1) -> SimBroker:
    """No fees or slippage, so each fill's price is the bar's close (on submit) or open (resting)."""
    clock = itertools.count(1)
    return SimBroker(BrokerConfig(fee_bps=0.0, fee_min=0.0, slippage_bps=0.0, participation_cap=cap),
                     wall_clock=lambda: next(clock))


def order(cid: str, qty: float, min_qty: float = 0.0, tif: TimeInForce = GTC, side: Side = BUY, k: int = 0,
          **kw: Any) -> Order:
    return Order(cid, "AAA", side, qty, tif=tif, ts_ns=T0 + k * MIN, min_qty=min_qty, **kw)


def fills(events: Iterable[OrderEvent]) -> list[tuple[str, float, float]]:
    return [(e.client_order_id, e.fill.qty, e.fill.price) for e in events if e.fill is not None]


def kinds(events: Iterable[OrderEvent]) -> list[tuple[EventKind, str]]:
    return [(e.kind, e.client_order_id) for e in events]


# --- the order's field -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("min_qty", "problem"),
    [
        (-1.0, "min_qty: must be a finite number >= 0, got -1.0"),
        (math.nan, "min_qty: must be a finite number >= 0, got nan"),
        (math.inf, "min_qty: must be a finite number >= 0, got inf"),
        (100.5, "min_qty: must be <= qty (100), got 100.5"),
    ],
)
def test_validation_names_the_field(min_qty: float, problem: str) -> None:
    assert order("x", 100.0, min_qty).validate() == problem
    ev = sim().submit([order("x", 100.0, min_qty)])  # the venue refuses it with that text, before any bar
    assert [(e.kind, e.reason, e.detail) for e in ev] == [(EventKind.REJECTED, RejectReason.INVALID_ORDER, problem)]


def test_valid_minimums() -> None:
    assert order("x", 100.0).validate() is None  # 0: any fill size (what strategies send)
    assert order("x", 100.0, 100.0).validate() is None  # all or nothing at each point
    assert order("x", 100.0, 0.5).validate() is None


# --- SimBroker: hand-computed fills with a binding participation cap (cap 0.1: liquidity = volume / 10) -----------


def test_gtc_fills_only_in_parts_of_at_least_the_minimum() -> None:
    b = sim()
    b.on_bars(bar(0, 1_000))  # liquidity 100
    # A: 300 with min 150. Fillable now min(300, 100) = 100 < 150: accepted, no fill, and it takes no liquidity
    ev = b.submit([order("A", 300, 150)])
    assert kinds(ev) == [(EventKind.ACCEPTED, "A")] and b.liquidity_left("AAA") == 100
    # B (no minimum) takes what A left: 80 at the close
    assert fills(b.submit([order("B", 80)])) == [("B", 80, 100.0)] and b.liquidity_left("AAA") == 20
    # bar 1: liquidity 200 >= min(150, 300): A fills 200 at the open
    assert fills(b.on_bars(bar(1, 2_000, close=102.0, open_=101.0))) == [("A", 200, 101.0)]
    # bar 2: liquidity 90; leaves 100 < min_qty, so the threshold is min(150, 100) = 100 > 90: no fill
    assert b.on_bars(bar(2, 900)) == [] and b.liquidity_left("AAA") == 90
    # bar 3: liquidity 100 = the threshold: the last 100 fill at once
    ev = b.on_bars(bar(3, 1_000, close=99.0, open_=98.0))
    assert fills(ev) == [("A", 100, 98.0)]
    st = b.order_state("A")
    assert st is not None and st.status is OrderStatus.FILLED
    assert st.avg_fill_price == pytest.approx((200 * 101.0 + 100 * 98.0) / 300, rel=1e-12)


def test_without_a_minimum_the_same_stream_fills_in_smaller_parts() -> None:
    """The reference the rule departs from: min_qty 0 fills 100 on submit, then the 200 left on bar 1."""
    b = sim()
    b.on_bars(bar(0, 1_000))
    assert fills(b.submit([order("A", 300)])) == [("A", 100, 100.0)]
    assert fills(b.on_bars(bar(1, 2_000, close=102.0, open_=101.0))) == [("A", 200, 101.0)]


@pytest.mark.parametrize(("volume", "filled"), [(1_500.0, 150.0), (1_499.0, 0.0)])
def test_threshold_is_inclusive(volume: float, filled: float) -> None:
    b = sim()
    b.on_bars(bar(0, volume))  # liquidity 150 (at the threshold) or 149.9 (just under)
    assert sum(q for _, q, _ in fills(b.submit([order("A", 400, 150)]))) == pytest.approx(filled)


def test_ioc_cancels_when_below_the_minimum_and_fills_above_it() -> None:
    b = sim()
    b.on_bars(bar(0, 1_000))  # liquidity 100
    ev = b.submit([order("I1", 300, 150, IOC)])
    assert kinds(ev) == [(EventKind.ACCEPTED, "I1"), (EventKind.CANCELED, "I1")] and fills(ev) == []
    assert b.liquidity_left("AAA") == 100  # untouched
    b.on_bars(bar(1, 2_000))  # liquidity 200
    ev = b.submit([order("I2", 300, 150, IOC, k=1)])
    assert kinds(ev) == [(EventKind.ACCEPTED, "I2"), (EventKind.FILL, "I2"), (EventKind.CANCELED, "I2")]
    assert fills(ev) == [("I2", 200, 100.0)]


def test_fok_is_as_without_a_minimum() -> None:
    b = sim()
    b.on_bars(bar(0, 2_000))  # liquidity 200
    ev = b.submit([order("F1", 300, 150, FOK)])
    assert [(e.kind, e.reason) for e in ev] == [(EventKind.REJECTED, RejectReason.FOK_NOT_FILLABLE)]
    assert fills(b.submit([order("F2", 200, 150, FOK)])) == [("F2", 200, 100.0)]


def test_day_order_below_the_minimum_expires_unfilled() -> None:
    b = sim()
    b.on_bars(bar(0, 1_000))  # liquidity 100
    assert fills(b.submit([order("D", 300, 150, DAY)])) == []
    ev = b.on_bars(bar(1, 1_200))  # liquidity 120 < 150: no fill on its one full bar, then it expires
    assert kinds(ev) == [(EventKind.EXPIRED, "D")]
    st = b.order_state("D")
    assert st is not None and st.filled_qty == 0 and st.status is OrderStatus.EXPIRED


def test_resting_limit_with_a_minimum() -> None:
    b = sim()
    b.on_bars(bar(0, 10_000))  # liquidity 1000, but the limit is away from the market: it rests
    assert fills(b.submit([order("L", 500, 300, limit_price=99.0, type=LMT)])) == []
    assert b.on_bars(bar(1, 2_000, close=98.5, open_=100.0, lo=98.0)) == []  # crossed, liquidity 200 < 300
    ev = b.on_bars(bar(2, 3_000, close=98.5, open_=100.0, lo=98.0))  # crossed, liquidity 300: fills 300 at 99
    assert fills(ev) == [("L", 300, 99.0)]


# --- SimBroker and the routed broker: every fill >= min(min_qty, leaves), and restore from the ledger is exact -----


def random_orders(rng: random.Random, k: int, n0: int) -> list[Order]:
    out = []
    for i in range(rng.randint(0, 3)):
        qty = float(rng.choice([40, 150, 300, 900]))
        mq = rng.choice([0.0, 0.0, 50.0, 120.0, qty])
        tif = rng.choice([DAY, GTC, GTC, IOC, FOK])
        kw: dict[str, Any] = {}
        if rng.random() < 0.3:
            kw = {"type": LMT, "limit_price": round(100 + rng.uniform(-1.5, 1.5), 2)}
        out.append(order(f"o{n0 + i:04d}", qty, min(mq, qty), tif, rng.choice([BUY, SELL]), k, **kw))
    return out


def random_bar(rng: random.Random, k: int) -> pa.RecordBatch:
    c = 100 + rng.uniform(-1, 1)
    return bar(k, rng.choice([None, 0.0, 800.0, 2_000.0, 6_000.0]), close=c, open_=c + rng.uniform(-0.5, 0.5),
               lo=c - 1.0, hi=c + 1.0)


def drive(b: Any, rng: random.Random, ks: range, sent: list[Order], history: list[pa.RecordBatch],
          any_size: bool = False) -> list:
    """Bars and random orders (and the odd cancel) through a venue; returns its events (wall clock left out).
    `any_size`: the same orders with min_qty 0 (the reference the rule departs from)."""
    out: list = []
    for k in ks:
        batch = random_bar(rng, k)
        history.append(batch)
        out += b.on_bars(batch)
        new = random_orders(rng, k, len(sent))
        if any_size:
            new = [replace(o, min_qty=0.0) for o in new]
        sent += new
        out += b.submit(new)
        if sent and rng.random() < 0.1:
            out += b.cancel([rng.choice(sent).client_order_id], T0 + k * MIN)
    return [(e.kind, e.client_order_id, e.ts_ns, e.reason, e.detail,
             e.fill and (e.fill.fill_id, e.fill.qty, e.fill.price, e.fill.fee)) for e in out]


def assert_min_qty_held(qty: Mapping[str, float], min_qty: Mapping[str, float], fs: Sequence[Fill]) -> int:
    """Every fill of every order is >= min(min_qty, leaves before it); returns how many fills were under min_qty
    (last leaves), so a test can show the cap bound."""
    done: dict[str, float] = defaultdict(float)
    small = 0
    for f in sorted(fs, key=lambda f: (f.client_order_id, int(f.fill_id.rpartition(":")[2]))):
        leaves = qty[f.client_order_id] - done[f.client_order_id]
        assert f.qty >= min(min_qty[f.client_order_id], leaves) - 1e-9, (f, leaves)
        small += f.qty < min_qty[f.client_order_id] - 1e-9
        done[f.client_order_id] += f.qty
    return small


def to_ledger(led: Ledger, b: Any, sent: Sequence[Order], audit: Sequence[Any] = ()) -> None:
    """What the execution service would have booked: the orders, their venue states, their fills, the audit."""
    states = {o.client_order_id: b.order_state(o.client_order_id) for o in sent}
    led.write(LedgerBatch(
        orders=list(sent),
        order_updates=[OrderUpdate(c, s.status, s.filled_qty, s.avg_fill_price, T0, s.reason, s.detail)
                       for c, s in states.items() if s is not None and s.status is not OrderStatus.NEW],
        fills=[f for o in sent for f in b.fills_for(o.client_order_id)],
        audit=list(audit),
    ))


@pytest.fixture()
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    led = open_ledger(f"sqlite:///{tmp_path}/l.db")
    led.migrate()
    yield led
    led.close()


@pytest.mark.parametrize("seed", [14, 21])  # seeds that leave a partly filled min-qty order resting at the cut
def test_simbroker_restore_mid_run_continues_exactly(seed: int, ledger: Ledger) -> None:
    rng = random.Random(seed)
    a = sim()
    sent: list[Order] = []
    history: list[pa.RecordBatch] = []
    drive(a, rng, range(0, 25), sent, history)
    assert any(s.order.min_qty > 0 and s.filled_qty > 0 for s in a.open_orders()), "the cut would prove little"
    to_ledger(ledger, a, sent)
    rows = ledger.orders()[::-1]  # oldest first, as the live loop's restore reads them
    assert {r["client_order_id"]: r["min_qty"] for r in rows} == {o.client_order_id: o.min_qty for o in sent}
    b = SimBroker.restore(a.config, rows, ledger.fills(), {o.client_order_id for o in sent}, history)
    assert [s.order for s in b.open_orders()] == [s.order for s in a.open_orders()]
    assert b.liquidity_left("AAA") == a.liquidity_left("AAA")
    state = rng.getstate()
    tail_a = drive(a, rng, range(25, 50), list(sent), [])
    rng.setstate(state)
    tail_b = drive(b, rng, range(25, 50), list(sent), [])
    assert tail_a == tail_b and any(e[0] is EventKind.FILL for e in tail_a)
    every = [s.order for s in a.orders()]
    assert_min_qty_held({o.client_order_id: o.qty for o in every}, {o.client_order_id: o.min_qty for o in every},
                        [f for o in every for f in a.fills_for(o.client_order_id)])
    # the same bars and orders with min_qty 0 trade differently: the minimums were binding in this stream
    rng = random.Random(seed)
    assert drive(sim(), rng, range(0, 50), [], [], any_size=True) != drive(sim(), random.Random(seed), range(0, 50),
                                                                           [], [])


ROUTED_VENUES = [
    {"name": "a", "fee_bps": 0.5, "latency_ms": 1.0, "participation": 0.05},
    {"name": "b", "fee_bps": 0.2, "latency_ms": 2.0, "participation": 0.02},
    {"name": "d", "dark": True, "fee_bps": 0.1, "latency_ms": 5.0, "participation": 0.01, "min_qty": 100},
]


def routed() -> MultiVenueBroker:
    clock = itertools.count(1)
    cfg = BrokerConfig(kind="routed", venues=ROUTED_VENUES, slippage_bps=2.0)
    return MultiVenueBroker(cfg, wall_clock=lambda: next(clock))


def test_the_router_never_splits_below_the_minimum() -> None:
    """Hand-solved: per-unit costs a 2.5 bps, b 2.2, dark d 0.1; capacities now a 500, b 200, d 150; resting costs
    the unknown-volatility delay (1000 bps), so as much as allowed fills now."""
    vs = [Venue("a", fee_bps=0.5), Venue("b", fee_bps=0.2), Venue("d", dark=True, fee_bps=0.1, min_qty=100)]
    mk = RouteMarket(100.0, half_spread_bps=2.0, capacity={"a": 500, "b": 200, "d": 150})
    assert route(600, vs, mk).children() == {"d": 150, "b": 200, "a": 250}  # cheapest first
    assert route(600, vs, mk, min_qty=200).children() == {"b": 200, "a": 400}  # d (150) is under 200
    # 250: b and d cannot take 250 now; a takes what it can while the rest at b (the cheapest lit) is >= 250
    d = route(600, vs, mk, min_qty=250)
    assert (d.now, d.rest_venue, d.rest_qty) == ({"a": 350, "b": 0, "d": 0}, "b", 250)
    assert d.payload()["min_qty"] == 250
    assert route(600, vs, mk, min_qty=600).children() == {"b": 600}  # no venue can fill 600 now: all rests
    fok = route(600, vs, mk, min_qty=250, fill_now=True)
    assert not fok.fillable and fok.reason.endswith("in parts of at least min_qty 250")
    assert route(500, vs, mk, min_qty=250, fill_now=True).children() == {"a": 500}
    with pytest.raises(ValueError, match=r"^min_qty: must be in \[0, qty = 600\]"):
        route(600, vs, mk, min_qty=601)


@pytest.mark.parametrize("seed", [3, 12])  # seeds whose cut leaves a min-qty child resting that later bars test
def test_routed_venues_never_fill_a_child_below_its_minimum(seed: int, ledger: Ledger) -> None:
    rng = random.Random(seed)
    a = routed()
    sent: list[Order] = []
    history: list[pa.RecordBatch] = []
    drive(a, rng, range(0, 30), sent, history)
    audit = a.drain_audit()
    children = {e.client_order_id: e.payload["children"] for e in audit}
    for o in sent:
        for venue, q in children.get(o.client_order_id, {}).items():
            assert q >= o.min_qty - 1e-9, (o, venue, q)  # the router split nothing below it
    # per venue child: qty from the routing decision, min_qty the parent's (capped at the child)
    qty: dict[str, float] = {}
    mins: dict[str, float] = {}
    child_fills: list[Fill] = []
    for o in sent:
        for f in a.fills_for(o.client_order_id):
            child, venue = f.fill_id.rpartition(":")[0], split_child_id(f.fill_id.rpartition(":")[0])[1]
            qty[child] = children[o.client_order_id][venue]
            mins[child] = min(o.min_qty, qty[child])
            child_fills.append(Fill(f.fill_id, child, f.symbol, f.side, f.qty, f.price, f.fee, f.ts_ns))
            if venue == "d":
                assert f.qty >= 100 - 1e-9 and f.qty == pytest.approx(qty[child])  # dark: all or nothing
    assert child_fills and any(m > 0 for m in mins.values())
    assert_min_qty_held(qty, mins, child_fills)
    # the ledger carries min_qty to the routed broker's restore (its lit children get it back): exact continuation
    to_ledger(ledger, a, sent, audit)
    b = restore_routed(a.config, history, ledger.orders()[::-1], ledger.fills(), ledger.audit_log())
    state = rng.getstate()
    tail_a = drive(a, rng, range(30, 50), list(sent), [])
    rng.setstate(state)
    assert drive(b, rng, range(30, 50), list(sent), []) == tail_a


# --- a backtest worked by TWAP children with a minimum quantity, the cap binding --------------------------------

BASE: dict[str, Any] = {
    "data.source": "synthetic", "data.symbols": ["ALPHA", "BRAVO", "CHARLIE"], "data.synthetic_days": 1,
    "strategy.fast": 5, "strategy.slow": 20, "strategy.vol_lookback": 10, "strategy.rebalance_band": 0.1,
    "execution.algo": "twap", "execution.horizon_bars": 5, "broker.participation_cap": 0.003,
}


def _ledger_fills_check(led: Ledger) -> tuple[int, int]:
    """(fills under min(min_qty, leaves), fills under 200), from the ledger's own rows."""
    orders = {o["client_order_id"]: o for o in led.orders()}
    done: dict[str, float] = defaultdict(float)
    bad = under = 0
    for f in sorted(led.fills(), key=lambda f: (f["client_order_id"], int(f["fill_id"].rpartition(":")[2]))):
        o = orders[f["client_order_id"]]
        leaves = o["qty"] - done[o["client_order_id"]]
        bad += f["qty"] < min(o["min_qty"], leaves) - 1e-9
        under += f["qty"] < min(200.0, leaves) - 1e-9
        done[o["client_order_id"]] += f["qty"]
    return bad, under


def test_backtest_with_twap_min_qty_every_fill_at_least_the_minimum() -> None:
    cfg = load_config(overrides={**BASE, "execution.algo_params": {"slices": 5, "min_qty": 200}})
    _, led = run_backtest(cfg)
    kids = [o for o in led.orders() if "." in o["client_order_id"]]
    assert kids and all(o["min_qty"] == min(200.0, o["qty"]) for o in kids)  # each child carries it, capped
    assert any(o["filled_qty"] < o["qty"] for o in kids)  # the cap binds: children left unfilled
    bad, under = _ledger_fills_check(led)
    assert bad == 0 and under == 0 and led.fills()
    assert_ledger_consistent(led, cfg.initial_cash, closes_by_ts(make_source(cfg.data)))
    # the same run without the minimum fills in smaller parts: the setting is what made the difference
    _, plain = run_backtest(load_config(overrides={**BASE, "execution.algo_params": {"slices": 5}}))
    assert {o["min_qty"] for o in plain.orders()} == {0.0}
    assert _ledger_fills_check(plain)[1] > 0


# --- Alpaca: no minimum-quantity order type, so refused and never sent --------------------------------------------


def test_alpaca_refuses_a_min_qty_order_without_sending_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from tradesys.broker.alpaca import AlpacaBroker
    from tradesys.broker.alpaca_paper import PaperServer

    from .test_broker_alpaca import BARS, FEES, KEY, SECRET

    monkeypatch.setenv("APCA_API_KEY_ID", KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
    monkeypatch.delenv("APCA_API_BASE_URL", raising=False)
    srv = PaperServer(BARS, key=KEY, secret=SECRET, broker=BrokerConfig(**FEES), initial_cash=100_000.0)
    srv.start()
    try:
        srv.step(1)
        b = AlpacaBroker(BrokerConfig(kind="alpaca", **FEES), base_url=srv.base_url, sleep=lambda s: None)
        try:
            ev = b.submit([Order("mq-1", "AAA", BUY, 10, min_qty=5), Order("plain-1", "AAA", BUY, 10)])
            refused = [e for e in ev if e.client_order_id == "mq-1"]
            assert [(e.kind, e.reason) for e in refused] == [(EventKind.REJECTED, RejectReason.INVALID_ORDER)]
            assert refused[0].detail.startswith("min_qty: Alpaca has no minimum-quantity orders")
            assert (EventKind.ACCEPTED, "plain-1") in kinds(ev)  # the adapter itself works
            assert b.order_state("mq-1") is None  # a REST look-up: Alpaca has never heard of it
            assert {o["client_order_id"] for o in srv.orders()} == {"plain-1"}  # never sent
            again = b.submit([Order("mq-1", "AAA", BUY, 10, min_qty=5)])  # a resend: the same refused order
            assert [e for e in again if e.client_order_id == "mq-1"] == [] and b.duplicates == 1
        finally:
            b.close()
    finally:
        srv.stop()
