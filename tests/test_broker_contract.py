"""One contract suite, run against every Broker: SimBroker, MultiVenueBroker (routed) and AlpacaBroker.

What the ExecutionService relies on, observed only through the `Broker` protocol (tradesys/broker/base.py) after a
"market" driver delivered the same bars to each: the events the broker returns, fed to the real OrderManager (which
refuses a fill for an unknown order, a fill that overfills, a fill after a cancel), and the broker's own answers
(`order_state`, `open_orders`, `fills_for`, `positions`, `cash`). The references are independent of the code under
test: the bars' own ranges, the documented fee schedule, and the accounting identities (positions = the sum of the
signed fills, cash = opening cash - signed notional - fees).

AlpacaBroker runs with the real alpaca-py clients against the local Alpaca-compatible PaperServer (a fresh one per
test, well under a second): `advance` replays a bar on the server and then drains the adapter (its
`on_bars`) until the events so far agree with the server's own orders, since the trade updates arrive on a
websocket. A cancel only asks there: the CANCELED comes with a later drain, so the contract is "after the cancel
and the next step". Differences the suite accepts, and why:
    * an order refused before it is sent (qty <= 0) is unknown to Alpaca, so AlpacaBroker's `order_state` (a REST
      read of the venue's view) answers None for it, where the in-process venues answer its REJECTED state;
    * DAY expiry: the paper server matches with SimBroker, so a DAY order gets one full bar after the bar it was
      placed in, as in the sim. Real Alpaca expires DAY orders at the session's close; the common contract asserted
      is only that a DAY order that could not fill ends EXPIRED, with no fill, and leaves the open orders;
    * a FOK that cannot fill now is REJECTED everywhere, but the reason is the venue's own: FOK_NOT_FILLABLE from
      the in-process venues, INVALID_ORDER ("alpaca: rejected") from the adapter, which maps every refusal the
      broker answers to that one reason;
    * fees: the routed broker charges each fill its venue's schedule (the venue is named in the fill id), the others
      `broker.fee_bps` of notional (the adapter computes it: Alpaca reports no fee per fill).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from tradesys.broker.alpaca import AlpacaBroker
from tradesys.broker.alpaca_paper import PaperServer
from tradesys.broker.base import Broker
from tradesys.broker.sim import SimBroker
from tradesys.broker.venues import MultiVenueBroker, split_child_id
from tradesys.config import BrokerConfig
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
from tradesys.data.historical import TableSource, bars_table
from tradesys.execution.oms import OrderManager

KEY, SECRET = "PKCONTRACTKEY", "contract-s3cr3t-0123456789"
CASH = 100_000.0
FEE_BPS = 0.5  # the default: a routed broker charges its venues' fees instead, and refuses a broker-wide one
SLIP = 2.0 / 1e4  # broker.slippage_bps default

# Two symbols, four one-minute bars (ts = the bar's end), each only a few bps wide, so that a fill priced worse than
# the bar's range plus the slippage shows. AAA gaps down to 97.9 on bar 3, BBB up to 51.0; bar 2 stays near bar 1,
# so an order away from the market neither fills nor crosses on it.
_PATH = {
    "AAA": [(100.0, 100.01, 99.99, 100.0), (100.0, 100.02, 99.99, 100.01), (97.9, 98.0, 97.89, 98.0),
            (98.0, 98.01, 97.99, 98.0)],
    "BBB": [(50.0, 50.005, 49.995, 50.0), (50.0, 50.01, 49.995, 50.005), (51.0, 51.01, 50.995, 51.0),
            (51.0, 51.005, 50.995, 51.0)],
}
_THIN = {"CCC": [(20.0, 20.002, 19.998, 20.0)] * 4}  # 100 shares a bar: an order of 25 takes several bars
_STAMPS = pd.date_range("2024-01-02 14:31", periods=4, freq="1min", tz="UTC")
BARS = bars_table(pd.DataFrame([
    {"ts": t, "symbol": sym, "open": o, "high": h, "low": lo, "close": c, "volume": 100.0 if sym in _THIN else 1e6}
    for sym, path in (_PATH | _THIN).items() for t, (o, h, lo, c) in zip(_STAMPS, path, strict=True)
]))

# the server's status words -> ours (an open order is ACCEPTED or PARTIALLY_FILLED by its filled quantity)
_ALPACA_STATUS = {"filled": OrderStatus.FILLED, "canceled": OrderStatus.CANCELED, "expired": OrderStatus.EXPIRED,
                  "rejected": OrderStatus.REJECTED, "replaced": OrderStatus.CANCELED}


class Market:
    """Delivers the same bars to a broker as the ExecutionService does, and feeds every event the broker returns to
    the real OrderManager (the consumer whose rules the events must satisfy)."""

    name = "sim"

    def __init__(self, broker: Any) -> None:
        self.broker = broker
        self.oms = OrderManager()
        self.events: list[OrderEvent] = []
        self.delivered: list[pa.RecordBatch] = []
        self._batches = TableSource(BARS, name="contract").batches()
        self.sent: list[str] = []  # every client order id submitted, in order

    # -- driving ---------------------------------------------------------------------------------------------------

    def submit(self, orders: Sequence[Order]) -> list[OrderEvent]:
        self.oms.register(orders)
        self.sent += [o.client_order_id for o in orders if o.client_order_id not in self.sent]
        return self._apply(self.broker.submit(orders))

    def cancel(self, ids: Sequence[str]) -> list[OrderEvent]:
        return self._apply(self.broker.cancel(ids, self.now))

    def advance(self) -> list[OrderEvent]:
        """The next bar, as the service's step delivers it; then what the venue still owes for it."""
        batch = next(self._batches)
        self.delivered.append(batch)
        self._publish(batch)
        return self._apply(self.broker.on_bars(batch)) + self.settle()

    def settle(self) -> list[OrderEvent]:
        """Events the venue has not yet delivered (none for an in-process venue: its answers are synchronous; the
        re-delivered bar is one it has processed, which it must ignore)."""
        return self._apply(self.broker.on_bars(self.delivered[-1]))

    def _publish(self, batch: pa.RecordBatch) -> None:
        """Make the bar the venue's market (an in-process venue learns it from on_bars itself)."""

    def _apply(self, events: list[OrderEvent]) -> list[OrderEvent]:
        self.oms.apply(events)  # raises on a fill without an order, an overfill, an event out of the state machine
        self.events += events
        return events

    # -- what the venue holds, for the contract checks --------------------------------------------------------------

    @property
    def now(self) -> int:
        return int(self.delivered[-1].column("ts").cast(pa.int64())[0].as_py()) if self.delivered else 0

    def venue_count(self, cid: str) -> int:
        """How many orders with this client order id the venue works (or worked)."""
        return sum(1 for st in self.broker.orders()
                   if st.order.client_order_id == cid and st.status is not OrderStatus.REJECTED)

    def expected_fee(self, fill: Fill) -> float:
        """The documented fee schedule: max(fee_min, fee_bps of notional)."""
        return max(0.0, FEE_BPS / 1e4 * fill.qty * fill.price)

    def opening_cash(self) -> float:
        return CASH

    def close(self) -> None:
        """Release what the driver started."""


class RoutedMarket(Market):
    name = "routed"

    def venue_count(self, cid: str) -> int:
        """Child orders at the lit venues (a dark fill leaves none: it is all-or-nothing at once)."""
        b: MultiVenueBroker = self.broker
        return sum(1 for v in b.venues if not v.dark for st in b.venue(v.name).orders()
                   if split_child_id(st.order.client_order_id)[0] == cid)

    def expected_fee(self, fill: Fill) -> float:
        """The fee schedule of the venue that made the fill (its name is in the fill id, `parent@venue:n`)."""
        venue = split_child_id(fill.fill_id.rpartition(":")[0])[1]
        v = next(v for v in self.broker.venues if v.name == venue)
        return float(v.fee(fill.qty, fill.price))


class AlpacaMarket(Market):
    """The adapter over HTTP and websocket to a PaperServer replaying BARS; its matching is SimBroker's."""

    name = "alpaca"

    def __init__(self) -> None:
        self.server = PaperServer(BARS, key=KEY, secret=SECRET, broker=BrokerConfig(fee_bps=FEE_BPS),
                                  initial_cash=CASH)
        self.server.start()
        broker = AlpacaBroker(BrokerConfig(kind="alpaca", fee_bps=FEE_BPS), base_url=self.server.base_url)
        super().__init__(broker)
        # listening, not only authenticated: an update published before that would reach the adapter only by a poll
        _until(lambda: self.server.stream_clients("trade") == 1, "the trade-updates stream never listened")

    def _publish(self, batch: pa.RecordBatch) -> None:
        assert self.server.step(1) == 1
        closes = dict(zip(batch.column("symbol").to_pylist(), batch.column("close").to_pylist(), strict=True))
        assert self.server.last_prices() == closes  # the server replays the very bars the driver delivers

    def settle(self, timeout_s: float = 10.0) -> list[OrderEvent]:
        """Drain the adapter until the events so far agree with the server's orders (status and filled quantity)."""
        got: list[OrderEvent] = []
        deadline = time.monotonic() + timeout_s
        while True:
            got += self._apply(self.broker.on_bars(self.delivered[-1]))
            behind = self._behind()
            if not behind:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"alpaca: events never caught up with the server: {behind}")
            time.sleep(0.01)

    def _behind(self) -> list[str]:
        out = []
        for j in self.server.orders():
            st = self.oms.get(str(j["client_order_id"]))
            if st is None:
                continue
            filled = float(j["filled_qty"] or 0.0)
            want = _ALPACA_STATUS.get(j["status"]) or (
                OrderStatus.PARTIALLY_FILLED if filled > 0 else OrderStatus.ACCEPTED)
            if st.status is not want or not math.isclose(st.filled_qty, filled, abs_tol=1e-9):
                out.append(f"{j['client_order_id']}: server {j['status']} {filled:g}, events "
                           f"{st.status.value} {st.filled_qty:g}")
        return out

    def venue_count(self, cid: str) -> int:
        return sum(1 for j in self.server.orders() if j["client_order_id"] == cid)

    def close(self) -> None:
        self.broker.close()
        self.server.stop()


def _until(cond: Any, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(what)
        time.sleep(0.01)


@pytest.fixture(params=["sim", "routed", "alpaca"])
def market(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Market]:
    m: Market
    if request.param == "sim":
        sim = SimBroker(BrokerConfig(fee_bps=FEE_BPS))
        sim.opening_cash = CASH
        m = Market(sim)
    elif request.param == "routed":
        routed = MultiVenueBroker(BrokerConfig(kind="routed"))
        routed.opening_cash = CASH
        m = RoutedMarket(routed)
    else:
        monkeypatch.setenv("APCA_API_KEY_ID", KEY)
        monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
        monkeypatch.delenv("APCA_API_BASE_URL", raising=False)
        m = AlpacaMarket()
    assert isinstance(m.broker, Broker)
    try:
        yield m
    finally:
        m.close()


# ------------------------------------------------------------------------------------------------ checks


def _kinds(events: Sequence[OrderEvent], cid: str | None = None) -> list[EventKind]:
    return [e.kind for e in events if cid is None or e.client_order_id == cid]


def _bar(m: Market, symbol: str, ts_ns: int) -> dict[str, float]:
    """The delivered bar of `symbol` stamped `ts_ns` (a fill must be stamped with a bar the venue was given)."""
    for batch in m.delivered:
        for row in batch.to_pylist():
            if row["symbol"] == symbol and pd.Timestamp(row["ts"]).value == ts_ns:
                return row
    raise AssertionError(f"no delivered {symbol} bar at {ts_ns}")


def _check_fill(m: Market, order: Order, f: Fill) -> None:
    """A fill of `order`: its id, symbol and side; a price inside its bar's range widened by the slippage; the
    documented fee."""
    assert (f.client_order_id, f.symbol, f.side) == (order.client_order_id, order.symbol, order.side)
    assert f.qty > 0
    bar = _bar(m, f.symbol, f.ts_ns)
    assert bar["low"] * (1 - SLIP) - 1e-9 <= f.price <= bar["high"] * (1 + SLIP) + 1e-9, (f, bar)
    if order.limit_price is not None:  # never worse than the limit
        assert f.price <= order.limit_price + 1e-9 if order.side is Side.BUY else f.price >= order.limit_price - 1e-9
    assert f.fee == pytest.approx(m.expected_fee(f), rel=1e-9, abs=1e-12)


def _check_agrees(m: Market, cid: str) -> None:
    """`order_state` and `fills_for` say what the events said: status, filled quantity, average price, fill ids."""
    mine = m.oms.get(cid)
    assert mine is not None
    venue = m.broker.order_state(cid)
    assert venue is not None, cid
    assert venue.order.client_order_id == cid
    assert (venue.order.symbol, venue.order.side, venue.order.qty) == (mine.order.symbol, mine.order.side,
                                                                     mine.order.qty)
    assert venue.status is mine.status, (cid, venue.status, mine.status)
    assert venue.filled_qty == pytest.approx(mine.filled_qty, abs=1e-9)
    assert venue.avg_fill_price == pytest.approx(mine.avg_fill_price, rel=1e-9)
    fills = m.broker.fills_for(cid)
    assert [f.fill_id for f in fills] == mine.fill_ids
    assert sum(f.qty for f in fills) == pytest.approx(mine.filled_qty, abs=1e-9)
    by_event = {e.fill.fill_id: e.fill for e in m.events if e.fill is not None and e.client_order_id == cid}
    for f in fills:
        assert (f.qty, f.price) == pytest.approx((by_event[f.fill_id].qty, by_event[f.fill_id].price), rel=1e-12)
        _check_fill(m, mine.order, f)


def _open_ids(m: Market) -> list[str]:
    return [st.order.client_order_id for st in m.broker.open_orders()]


# ------------------------------------------------------------------------------------------------ the contract


def test_market_order_is_accepted_and_fills_inside_the_bar(market: Market) -> None:
    m = market
    m.advance()
    buy, sell = Order("m1", "AAA", Side.BUY, 10), Order("m2", "BBB", Side.SELL, 4)
    ev = m.submit([buy, sell]) + m.settle()
    assert {e.client_order_id for e in ev} == {"m1", "m2"}  # every event names its order
    for o in (buy, sell):
        kinds = _kinds(ev, o.client_order_id)
        assert kinds[0] is EventKind.ACCEPTED and set(kinds[1:]) == {EventKind.FILL}
        fills = [e.fill for e in ev if e.client_order_id == o.client_order_id and e.fill is not None]
        assert sum(f.qty for f in fills) == pytest.approx(o.qty)
        for f in fills:
            assert f.ts_ns == m.now  # on submit, against the bar the venue has just seen
            _check_fill(m, o, f)
    # the next bar (and the stream's late copies of those fills) brings nothing more for them
    assert _kinds(m.advance()) == []
    for o in (buy, sell):
        _check_agrees(m, o.client_order_id)
        assert m.oms.get(o.client_order_id).status is OrderStatus.FILLED  # type: ignore[union-attr]
    assert _open_ids(m) == []


def test_a_repeated_client_order_id_is_one_order(market: Market) -> None:
    m = market
    m.advance()
    rest = Order("d1", "AAA", Side.BUY, 5, OrderType.LIMIT, TimeInForce.GTC, limit_price=90.0)
    filled = Order("d2", "BBB", Side.BUY, 3)
    m.submit([rest, filled])
    m.settle()
    counts = {c: m.venue_count(c) for c in ("d1", "d2")}
    assert counts["d1"] >= 1  # a resting order works somewhere
    dups_before = m.broker.duplicates
    # the same ids again, one with other terms: a retry after a crash must not trade twice
    again = [Order("d1", "AAA", Side.BUY, 50, OrderType.LIMIT, TimeInForce.GTC, limit_price=95.0),
             Order("d2", "BBB", Side.BUY, 3)]
    assert m.submit(again) == []
    assert m.broker.duplicates == dups_before + 2
    time.sleep(0.05 if m.name == "alpaca" else 0.0)  # room for a late message that should not exist
    assert m.settle() == []
    assert {c: m.venue_count(c) for c in ("d1", "d2")} == counts
    if m.name == "alpaca":
        assert counts == {"d1": 1, "d2": 1}  # the server holds each id once
    st = m.broker.order_state("d1")
    assert st is not None and st.order.qty == 5 and st.order.limit_price == 90.0
    assert _open_ids(m) == ["d1"]
    _check_agrees(m, "d1")
    _check_agrees(m, "d2")


def test_a_resting_limit_fills_on_the_bar_that_crosses_it_never_worse(market: Market) -> None:
    m = market
    m.advance()
    # buy under the market, sell over it: neither is marketable against bar 1's close
    buy = Order("l1", "AAA", Side.BUY, 6, OrderType.LIMIT, TimeInForce.GTC, limit_price=98.2)
    sell = Order("l2", "BBB", Side.SELL, 8, OrderType.LIMIT, TimeInForce.GTC, limit_price=50.9)
    ev = m.submit([buy, sell]) + m.settle()
    assert _kinds(ev, "l1") == [EventKind.ACCEPTED] and _kinds(ev, "l2") == [EventKind.ACCEPTED]
    assert sorted(_open_ids(m)) == ["l1", "l2"]
    _check_agrees(m, "l1")
    assert _kinds(m.advance()) == []  # bar 2 stays inside bar 1's range: nothing crosses
    assert sorted(_open_ids(m)) == ["l1", "l2"]
    ev = m.advance()  # bar 3: AAA gaps down through 98.2, BBB up through 50.9
    for o in (buy, sell):
        kinds = _kinds(ev, o.client_order_id)
        assert kinds and set(kinds) == {EventKind.FILL}
        fills = [e.fill for e in ev if e.client_order_id == o.client_order_id and e.fill is not None]
        assert sum(f.qty for f in fills) == pytest.approx(o.qty)
        for f in fills:
            assert f.ts_ns == m.now
            _check_fill(m, o, f)  # no worse than the limit
        _check_agrees(m, o.client_order_id)
    assert _open_ids(m) == []


def test_cancel_ends_a_resting_order_and_ignores_unknown_or_finished_ones(market: Market) -> None:
    m = market
    m.advance()
    m.submit([Order("c1", "AAA", Side.BUY, 5, OrderType.LIMIT, TimeInForce.GTC, limit_price=50.0),
              Order("c2", "BBB", Side.BUY, 2)])
    m.settle()
    assert _open_ids(m) == ["c1"]
    # Alpaca only asks here; the CANCELED comes with the next drain. Either way, exactly one, for c1.
    ev = m.cancel(["c1"]) + m.settle()
    assert [(e.kind, e.client_order_id) for e in ev] == [(EventKind.CANCELED, "c1")]
    assert _open_ids(m) == []
    _check_agrees(m, "c1")
    assert m.oms.get("c1").status is OrderStatus.CANCELED  # type: ignore[union-attr]
    assert m.broker.fills_for("c1") == []
    # a cancelled, a filled and an unknown id: nothing
    assert m.cancel(["c1", "c2", "no-such-order"]) == []
    assert m.settle() == []
    assert _kinds(m.advance()) == []  # and the next bar does not fill the cancelled order
    _check_agrees(m, "c1")
    _check_agrees(m, "c2")
    assert m.broker.order_state("no-such-order") is None


def test_a_day_order_that_cannot_fill_expires(market: Market) -> None:
    m = market
    m.advance()
    day = Order("x1", "AAA", Side.BUY, 5, OrderType.LIMIT, TimeInForce.DAY, limit_price=90.0)
    gtc = Order("x2", "AAA", Side.BUY, 5, OrderType.LIMIT, TimeInForce.GTC, limit_price=90.0)
    m.submit([day, gtc])
    m.settle()
    assert _open_ids(m) == ["x1", "x2"]
    ev = m.advance()
    assert [(e.kind, e.client_order_id) for e in ev] == [(EventKind.EXPIRED, "x1")]
    assert _open_ids(m) == ["x2"]  # a GTC order at the same price rests on
    _check_agrees(m, "x1")
    assert m.oms.get("x1").status is OrderStatus.EXPIRED  # type: ignore[union-attr]
    assert m.broker.fills_for("x1") == []
    assert _kinds(m.advance()) == []  # an expired order stays expired


@pytest.mark.parametrize("qty", [0.0, -5.0, math.nan])
def test_an_invalid_quantity_is_rejected_and_never_sent(market: Market, qty: float) -> None:
    m = market
    m.advance()
    ev = m.submit([Order("bad", "AAA", Side.BUY, qty)]) + m.settle()
    assert len(ev) == 1
    e = ev[0]
    assert (e.kind, e.client_order_id, e.reason) == (EventKind.REJECTED, "bad", RejectReason.INVALID_ORDER)
    assert "qty" in e.detail  # the reason names the field
    assert m.venue_count("bad") == 0 and _open_ids(m) == [] and m.broker.fills_for("bad") == []
    st = m.broker.order_state("bad")
    if m.name == "alpaca":
        assert st is None  # never sent: the venue does not know it (module docstring)
    else:
        assert st is not None and st.status is OrderStatus.REJECTED and st.reason is RejectReason.INVALID_ORDER
    assert _kinds(m.advance()) == []


def test_positions_and_cash_are_the_sum_of_the_fills(market: Market) -> None:
    m = market
    m.advance()
    m.submit([Order("p1", "AAA", Side.BUY, 10), Order("p2", "BBB", Side.SELL, 4),
              Order("p3", "AAA", Side.BUY, 6, OrderType.LIMIT, TimeInForce.GTC, limit_price=98.2)])
    m.advance()
    m.advance()  # p3 fills here
    m.submit([Order("p4", "AAA", Side.SELL, 3), Order("p5", "BBB", Side.BUY, 4)])  # BBB back to flat
    m.advance()
    fills = [f for cid in m.sent for f in m.broker.fills_for(cid)]
    assert {f.client_order_id for f in fills} == {"p1", "p2", "p3", "p4", "p5"}
    for cid in m.sent:
        _check_agrees(m, cid)
    want: dict[str, float] = {}
    for f in fills:
        want[f.symbol] = want.get(f.symbol, 0.0) + f.signed_qty
    assert want == pytest.approx({"AAA": 13.0, "BBB": 0.0})
    held = {s: q for s, q in m.broker.positions().items() if abs(q) > 1e-9}
    assert held == pytest.approx({"AAA": 13.0})
    spent = sum(f.signed_qty * f.price + f.fee for f in fills)
    assert m.broker.cash() == pytest.approx(m.opening_cash() - spent, abs=1e-6)



def test_a_stop_waits_for_the_bar_that_crosses_it(market: Market) -> None:
    m = market
    m.advance()
    sell = Order("s1", "AAA", Side.SELL, 4, OrderType.STOP, TimeInForce.GTC, stop_price=99.0)
    buy = Order("s2", "BBB", Side.BUY, 6, OrderType.STOP, TimeInForce.GTC, stop_price=50.5)
    ev = m.submit([sell, buy]) + m.settle()
    assert _kinds(ev) == [EventKind.ACCEPTED, EventKind.ACCEPTED]  # a stop never fills on submit
    assert _kinds(m.advance()) == []  # bar 2 crosses neither stop
    assert sorted(_open_ids(m)) == ["s1", "s2"]
    ev = m.advance()  # bar 3 gaps through both: each fills, at the market, in full
    for o in (sell, buy):
        fills = [e.fill for e in ev if e.client_order_id == o.client_order_id and e.fill is not None]
        assert sum(f.qty for f in fills) == pytest.approx(o.qty)
        for f in fills:
            assert f.ts_ns == m.now
            _check_fill(m, o, f)
        _check_agrees(m, o.client_order_id)
    assert _open_ids(m) == []


def test_ioc_and_fok_never_rest(market: Market) -> None:
    m = market
    m.advance()
    ioc = Order("i1", "AAA", Side.BUY, 5, OrderType.LIMIT, TimeInForce.IOC, limit_price=90.0)
    fok = Order("f1", "AAA", Side.BUY, 5, OrderType.LIMIT, TimeInForce.FOK, limit_price=90.0)
    fok_stop = Order("f2", "AAA", Side.SELL, 5, OrderType.STOP, TimeInForce.FOK, stop_price=99.0)
    ioc_now = Order("i2", "BBB", Side.SELL, 3, OrderType.MARKET, TimeInForce.IOC)
    ev = m.submit([ioc, fok, fok_stop, ioc_now]) + m.settle()
    # IOC away from the market: accepted, its whole quantity canceled at once
    assert _kinds(ev, "i1") == [EventKind.ACCEPTED, EventKind.CANCELED]
    # FOK that cannot fill in full now: refused before acceptance (the reason is the venue's own)
    assert _kinds(ev, "f1") == [EventKind.REJECTED] and _kinds(ev, "f2") == [EventKind.REJECTED]
    kinds = _kinds(ev, "i2")  # IOC that can fill: fills in full, nothing left to cancel
    assert kinds[0] is EventKind.ACCEPTED and set(kinds[1:]) == {EventKind.FILL}
    assert _open_ids(m) == []
    for cid in ("i1", "i2"):
        _check_agrees(m, cid)
    assert all(m.broker.fills_for(c) == [] for c in ("i1", "f1", "f2"))
    assert _kinds(m.advance()) == []


def test_a_partly_filled_order_works_on_and_a_cancel_keeps_its_fills(market: Market) -> None:
    """An order larger than the bar's liquidity (each venue's share of 100 shares) fills in parts; while open it is
    listed with what has filled; a cancel ends the rest and keeps the fills."""
    m = market
    m.advance()
    big = Order("b1", "CCC", Side.BUY, 25, tif=TimeInForce.GTC)
    ev = m.submit([big]) + m.settle()
    assert _kinds(ev, "b1")[0] is EventKind.ACCEPTED and EventKind.FILL in _kinds(ev, "b1")
    first = m.oms.get("b1")
    assert first is not None and first.status is OrderStatus.PARTIALLY_FILLED and 0 < first.filled_qty < 25
    listed = {st.order.client_order_id: st for st in m.broker.open_orders()}
    assert listed["b1"].filled_qty == pytest.approx(first.filled_qty, abs=1e-9)
    _check_agrees(m, "b1")
    ev = m.advance()  # the next bar's liquidity takes more of it
    assert set(_kinds(ev, "b1")) == {EventKind.FILL}
    second = m.oms.get("b1")
    assert second is not None and first.filled_qty < second.filled_qty < 25
    _check_agrees(m, "b1")
    ev = m.cancel(["b1"]) + m.settle()
    assert [(e.kind, e.client_order_id) for e in ev] == [(EventKind.CANCELED, "b1")]
    assert _open_ids(m) == []
    _check_agrees(m, "b1")
    done = m.oms.get("b1")
    assert done is not None and done.status is OrderStatus.CANCELED
    assert done.filled_qty == pytest.approx(second.filled_qty, abs=1e-9)  # the fills stay booked
    assert m.broker.positions()["CCC"] == pytest.approx(second.filled_qty, abs=1e-9)
    assert _kinds(m.advance()) == []
