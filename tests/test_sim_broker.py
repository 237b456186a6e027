"""SimBroker: matching rules with hand-computed numbers, then conservation laws over random order streams."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tradesys.broker import Broker, SimBroker
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
from tradesys.core.schemas import BAR_SCHEMA

NAN = float("nan")
T0 = 1_700_000_000_000_000_000
DAY = 86_400 * 10**9
BUY, SELL = Side.BUY, Side.SELL
MKT, LMT, STP = OrderType.MARKET, OrderType.LIMIT, OrderType.STOP
GTC, IOC, FOK = TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK


def bars(
    ts: int, *rows: tuple[str, float | None, float | None, float | None, float | None, float | None]
) -> pa.RecordBatch:
    """A bar batch with the canonical schema; each row is (symbol, open, high, low, close, volume)."""
    return pa.RecordBatch.from_pylist(
        [
            {"ts": ts, "symbol": s, "open": o, "high": h, "low": lo, "close": c, "volume": v}
            for s, o, h, lo, c, v in rows
        ],
        schema=BAR_SCHEMA,
    )


def flat(ts: int, close: float = 100.0, volume: float | None = NAN, sym: str = "AAA") -> pa.RecordBatch:
    return bars(ts, (sym, close, close, close, close, volume))


def counter_clock() -> Iterator[int]:
    return itertools.count(1)


def make(**cfg: Any) -> SimBroker:
    """A broker with no costs and no cap unless asked, and a deterministic wall clock (1, 2, 3, ...)."""
    base: dict[str, Any] = {"fee_bps": 0.0, "fee_min": 0.0, "slippage_bps": 0.0, "participation_cap": 1.0}
    base.update(cfg)
    clock = counter_clock()
    return SimBroker(BrokerConfig(**base), wall_clock=lambda: next(clock))


def order(cid: str, side: Side = BUY, qty: float = 10.0, type: OrderType = MKT, **kw: Any) -> Order:
    kw.setdefault("symbol", "AAA")
    return Order(client_order_id=cid, side=side, qty=qty, type=type, **kw)


def kinds(events: list[OrderEvent]) -> list[EventKind]:
    return [e.kind for e in events]


def fills(events: list[OrderEvent]) -> list[Fill]:
    return [e.fill for e in events if e.fill is not None]


# ---------------------------------------------------------------------------------------------- basics


def test_implements_the_broker_protocol() -> None:
    assert isinstance(make(), Broker)


def test_market_buy_and_sell_fill_at_close_with_slippage() -> None:
    b = make(slippage_bps=10.0)
    b.on_bars(flat(T0, close=100.0))
    ev = b.submit([order("b1", BUY, 10), order("s1", SELL, 4)])
    assert kinds(ev) == [EventKind.ACCEPTED, EventKind.FILL, EventKind.ACCEPTED, EventKind.FILL]
    buy, sell = fills(ev)
    assert buy.price == pytest.approx(100.1)  # 100 * (1 + 10/1e4)
    assert sell.price == pytest.approx(99.9)  # 100 * (1 - 10/1e4)
    assert (buy.qty, sell.qty) == (10, 4)
    assert (buy.side, sell.side) == (BUY, SELL)
    assert buy.fill_id == "b1:1" and sell.fill_id == "s1:1"
    assert buy.ts_ns == T0 and all(e.ts_ns == T0 for e in ev)
    assert (buy.wall_ns, sell.wall_ns) == (1, 2)  # the injected wall clock, once per fill
    st1 = b.order_state("b1")
    assert st1 is not None
    assert st1.status is OrderStatus.FILLED
    assert st1.filled_qty == 10 and st1.avg_fill_price == pytest.approx(100.1)
    assert st1.fill_ids == ["b1:1"] and st1.leaves_qty == 0
    assert b.fills_for("b1") == [buy]
    assert b.open_orders() == []
    assert (b.orders_seen, b.fills_count, b.duplicates) == (2, 2, 0)


def test_fee_in_bps_of_notional() -> None:
    b = make(fee_bps=5.0, slippage_bps=10.0)
    b.on_bars(flat(T0, close=100.0))
    (f,) = fills(b.submit([order("o", BUY, 10)]))
    assert f.fee == pytest.approx(10 * 100.1 * 5 / 1e4)  # 0.5005


def test_fee_minimum_applies_to_small_fills() -> None:
    b = make(fee_bps=0.5, fee_min=1.0)
    b.on_bars(flat(T0, close=100.0))
    small, big = fills(b.submit([order("small", BUY, 10), order("big", BUY, 1000)]))
    assert small.fee == 1.0  # 10 * 100 * 0.5e-4 = 0.05 < 1.0
    assert big.fee == pytest.approx(5.0)  # 1000 * 100 * 0.5e-4 = 5.0 > 1.0


def test_zero_fee_config_charges_nothing() -> None:
    b = make()
    b.on_bars(flat(T0))
    (f,) = fills(b.submit([order("o")]))
    assert f.fee == 0.0


# ---------------------------------------------------------------------------------------------- limits


def test_marketable_limit_fills_at_slipped_close_but_never_worse_than_limit() -> None:
    b = make(slippage_bps=10.0)
    b.on_bars(flat(T0, close=100.0))
    ev = b.submit(
        [
            order("wide", BUY, 1, LMT, limit_price=101.0),
            order("tight", BUY, 1, LMT, limit_price=100.05),
            order("sell_tight", SELL, 1, LMT, limit_price=99.95),
            order("sell_wide", SELL, 1, LMT, limit_price=95.0),
        ]
    )
    px = {f.client_order_id: f.price for f in fills(ev)}
    assert px["wide"] == pytest.approx(100.1)  # slipped close is inside the limit
    assert px["tight"] == pytest.approx(100.05)  # capped at the limit
    assert px["sell_tight"] == pytest.approx(99.95)
    assert px["sell_wide"] == pytest.approx(99.9)


def test_non_marketable_limit_rests() -> None:
    b = make()
    b.on_bars(flat(T0, close=100.0))
    ev = b.submit([order("buy", BUY, 5, LMT, limit_price=99.0), order("sell", SELL, 5, LMT, limit_price=101.0)])
    assert kinds(ev) == [EventKind.ACCEPTED, EventKind.ACCEPTED]
    assert [s.order.client_order_id for s in b.open_orders()] == ["buy", "sell"]
    assert all(s.status is OrderStatus.ACCEPTED and s.leaves_qty == 5 for s in b.open_orders())


def test_resting_limit_fills_on_later_bar_at_min_open_limit() -> None:
    b = make(slippage_bps=10.0)  # no slippage on resting limits
    b.on_bars(flat(T0, close=100.0))
    b.submit(
        [
            order("touch", BUY, 1, LMT, limit_price=99.0, tif=GTC),
            order("miss", BUY, 1, LMT, limit_price=98.0, tif=GTC),
            order("s_touch", SELL, 1, LMT, limit_price=100.4, tif=GTC),
        ]
    )
    ev = b.on_bars(bars(T0 + DAY, ("AAA", 99.5, 100.5, 98.5, 99.8, NAN)))
    px = {f.client_order_id: f.price for f in fills(ev)}
    assert px == {"touch": 99.0, "s_touch": 100.4}  # open 99.5 > 99 -> 99; open 99.5 < 100.4 -> 100.4
    assert all(f.ts_ns == T0 + DAY for f in fills(ev))
    assert [s.order.client_order_id for s in b.open_orders()] == ["miss"]  # low 98.5 > 98


def test_resting_limit_gap_through_fills_at_the_better_open() -> None:
    b = make()
    b.on_bars(flat(T0, close=100.0))
    b.submit(
        [
            order("buy", BUY, 1, LMT, limit_price=99.0, tif=GTC),
            order("sell", SELL, 1, LMT, limit_price=101.0, tif=GTC),
            order("sym2", SELL, 1, LMT, limit_price=101.0, tif=GTC, symbol="BBB"),
        ]
    )
    b.on_bars(flat(T0, close=100.0, sym="BBB"))
    b.submit([order("sym2b", SELL, 1, LMT, limit_price=101.0, tif=GTC, symbol="BBB")])
    ev = b.on_bars(bars(T0 + DAY, ("AAA", 97.0, 98.0, 96.0, 97.5, NAN), ("BBB", 103.0, 104.0, 102.5, 103.5, NAN)))
    px = {f.client_order_id: f.price for f in fills(ev)}
    assert px == {"buy": 97.0, "sym2b": 103.0}  # gap down through a buy limit, gap up through a sell limit
    # "sell" on AAA (101) was not reached (high 98); "sym2" was rejected: no BBB bar when it came
    assert b.order_state("sym2").status is OrderStatus.REJECTED  # type: ignore[union-attr]
    assert [s.order.client_order_id for s in b.open_orders()] == ["sell"]


# ---------------------------------------------------------------------------------------------- stops


def test_stop_never_fills_on_submit_even_when_already_through() -> None:
    b = make()
    b.on_bars(flat(T0, close=100.0))
    ev = b.submit([order("s", BUY, 1, STP, stop_price=90.0, tif=GTC)])
    assert kinds(ev) == [EventKind.ACCEPTED]
    ev = b.on_bars(bars(T0 + DAY, ("AAA", 100.0, 101.0, 99.0, 100.0, NAN)))
    assert [f.price for f in fills(ev)] == [100.0]  # max(open 100, stop 90)


def test_stop_buy_and_sell_trigger_with_slippage() -> None:
    b = make(slippage_bps=10.0)
    b.on_bars(flat(T0, close=100.0))
    b.submit(
        [
            order("buy_in", BUY, 1, STP, stop_price=102.0, tif=GTC),
            order("buy_gap", BUY, 1, STP, stop_price=100.5, tif=GTC),
            order("sell_in", SELL, 1, STP, stop_price=98.0, tif=GTC),
            order("buy_miss", BUY, 1, STP, stop_price=104.0, tif=GTC),
            order("sell_miss", SELL, 1, STP, stop_price=96.0, tif=GTC),
        ]
    )
    ev = b.on_bars(bars(T0 + DAY, ("AAA", 101.0, 103.0, 97.0, 102.0, NAN)))
    px = {f.client_order_id: f.price for f in fills(ev)}
    assert px["buy_in"] == pytest.approx(102.0 * 1.001)  # max(open 101, stop 102) * (1 + slip)
    assert px["buy_gap"] == pytest.approx(101.0 * 1.001)  # opened above the stop: max(101, 100.5)
    assert px["sell_in"] == pytest.approx(98.0 * 0.999)  # min(open 101, stop 98) * (1 - slip)
    assert set(px) == {"buy_in", "buy_gap", "sell_in"}  # high 103 < 104, low 97 > 96
    assert {s.order.client_order_id for s in b.open_orders()} == {"buy_miss", "sell_miss"}


def test_stop_sell_gap_down_fills_at_open() -> None:
    b = make(slippage_bps=10.0)
    b.on_bars(flat(T0, close=100.0))
    b.submit([order("s", SELL, 1, STP, stop_price=98.0, tif=GTC)])
    (f,) = fills(b.on_bars(bars(T0 + DAY, ("AAA", 95.0, 96.0, 94.0, 95.0, NAN))))
    assert f.price == pytest.approx(95.0 * 0.999)


def test_triggered_stop_remainder_behaves_as_market() -> None:
    b = make(participation_cap=0.1, slippage_bps=10.0)
    b.on_bars(flat(T0, close=100.0, volume=500.0))
    b.submit([order("s", BUY, 100, STP, stop_price=102.0, tif=GTC)])
    f1 = fills(b.on_bars(bars(T0 + DAY, ("AAA", 101.0, 103.0, 100.0, 102.0, 500.0))))
    assert [(f.qty, f.price) for f in f1] == [(50.0, pytest.approx(102.0 * 1.001))]
    # next bar never reaches the stop again, but the triggered order keeps filling at the open
    f2 = fills(b.on_bars(bars(T0 + 2 * DAY, ("AAA", 100.5, 101.0, 99.0, 100.0, 500.0))))
    assert [(f.qty, f.price) for f in f2] == [(50.0, pytest.approx(100.5 * 1.001))]
    st_ = b.order_state("s")
    assert st_ is not None and st_.status is OrderStatus.FILLED
    assert st_.avg_fill_price == pytest.approx((102.0 + 100.5) / 2 * 1.001)
    assert st_.fill_ids == ["s:1", "s:2"]


# ---------------------------------------------------------------------------------------------- liquidity


def test_participation_cap_partial_fill_then_rest_on_later_bars() -> None:
    b = make(participation_cap=0.1, slippage_bps=10.0)
    b.on_bars(flat(T0, close=100.0, volume=1000.0))  # 100 shares of liquidity
    ev = b.submit([order("big", BUY, 250, tif=GTC)])
    assert kinds(ev) == [EventKind.ACCEPTED, EventKind.FILL]
    assert fills(ev)[0].qty == 100 and b.liquidity_left("AAA") == 0
    s = b.order_state("big")
    assert s is not None and s.status is OrderStatus.PARTIALLY_FILLED and s.leaves_qty == 150
    f2 = fills(b.on_bars(bars(T0 + DAY, ("AAA", 101.0, 102.0, 100.0, 101.5, 1000.0))))
    assert [(f.qty, f.price) for f in f2] == [(100.0, pytest.approx(101.0 * 1.001))]  # remainder at the open
    f3 = fills(b.on_bars(bars(T0 + 2 * DAY, ("AAA", 102.0, 102.0, 102.0, 102.0, 1000.0))))
    assert [f.qty for f in f3] == [50.0]
    assert b.liquidity_left("AAA") == pytest.approx(50.0)
    s = b.order_state("big")
    assert s is not None and s.status is OrderStatus.FILLED and s.filled_qty == 250
    assert s.fill_ids == ["big:1", "big:2", "big:3"]
    assert s.avg_fill_price == pytest.approx((100 * 100.1 + 100 * 101.0 * 1.001 + 50 * 102.0 * 1.001) / 250)


def test_orders_on_one_symbol_share_the_bar_liquidity() -> None:
    b = make(participation_cap=0.1)
    b.on_bars(bars(T0, ("AAA", 100, 100, 100, 100, 1000.0), ("BBB", 50, 50, 50, 50, 1000.0)))
    ev = b.submit([order("a", BUY, 80, tif=GTC), order("b", SELL, 80, tif=GTC), order("c", BUY, 80, symbol="BBB")])
    got = {f.client_order_id: f.qty for f in fills(ev)}
    assert got["a"] == 80 and got["b"] == pytest.approx(20)  # buy and sell draw from the same pool
    assert got["c"] == 80  # another symbol has its own pool
    # on the next bar the resting remainder gets fresh liquidity, first come first served
    b.submit([order("d", BUY, 80, tif=GTC)])  # no liquidity left now: rests
    ev = b.on_bars(bars(T0 + DAY, ("AAA", 100, 100, 100, 100, 1000.0)))
    got = {f.client_order_id: f.qty for f in fills(ev)}
    assert got == {"b": pytest.approx(60), "d": pytest.approx(40)}


def test_zero_volume_bar_fills_nothing() -> None:
    b = make(participation_cap=0.5)
    b.on_bars(flat(T0, volume=0.0))
    ev = b.submit([order("o", BUY, 10, tif=GTC)])
    assert kinds(ev) == [EventKind.ACCEPTED]
    assert b.open_orders()[0].leaves_qty == 10


@pytest.mark.parametrize("volume", [NAN, None])
def test_unknown_volume_means_no_cap(volume: float | None) -> None:
    b = make(participation_cap=0.01)
    b.on_bars(flat(T0, volume=volume))
    (f,) = fills(b.submit([order("o", BUY, 1_000_000)]))
    assert f.qty == 1_000_000
    assert b.liquidity_left("AAA") == math.inf


# ---------------------------------------------------------------------------------------------- time in force


def test_ioc_fills_what_it_can_and_cancels_the_rest() -> None:
    b = make(participation_cap=0.1)
    b.on_bars(flat(T0, volume=1000.0))
    ev = b.submit([order("ioc", BUY, 150, tif=IOC)])
    assert kinds(ev) == [EventKind.ACCEPTED, EventKind.FILL, EventKind.CANCELED]
    assert fills(ev)[0].qty == 100
    s = b.order_state("ioc")
    assert s is not None and s.status is OrderStatus.CANCELED and s.filled_qty == 100 and s.leaves_qty == 0
    assert b.open_orders() == []
    assert b.on_bars(flat(T0 + DAY, volume=1000.0)) == []


def test_ioc_non_marketable_limit_is_canceled_without_fill() -> None:
    b = make()
    b.on_bars(flat(T0, close=100.0))
    ev = b.submit([order("ioc", BUY, 5, LMT, limit_price=99.0, tif=IOC)])
    assert kinds(ev) == [EventKind.ACCEPTED, EventKind.CANCELED]
    assert b.fills_for("ioc") == []


def test_ioc_fully_filled_is_not_canceled() -> None:
    b = make()
    b.on_bars(flat(T0))
    ev = b.submit([order("ioc", BUY, 5, tif=IOC)])
    assert kinds(ev) == [EventKind.ACCEPTED, EventKind.FILL]
    assert b.order_state("ioc").status is OrderStatus.FILLED  # type: ignore[union-attr]


def test_fok_rejected_without_fill_when_not_fully_fillable() -> None:
    b = make(participation_cap=0.1)
    b.on_bars(flat(T0, close=100.0, volume=1000.0))
    ev = b.submit(
        [
            order("too_big", BUY, 150, tif=FOK),
            order("not_marketable", BUY, 10, LMT, limit_price=99.0, tif=FOK),
            order("stop", BUY, 10, STP, stop_price=101.0, tif=FOK),
        ]
    )
    assert kinds(ev) == [EventKind.REJECTED] * 3
    assert all(e.reason is RejectReason.FOK_NOT_FILLABLE for e in ev)
    assert b.fills_count == 0 and b.liquidity_left("AAA") == 100  # nothing consumed
    ev = b.submit([order("fits", BUY, 100, tif=FOK)])
    assert kinds(ev) == [EventKind.ACCEPTED, EventKind.FILL] and fills(ev)[0].qty == 100
    s = b.order_state("too_big")
    assert s is not None and s.status is OrderStatus.REJECTED and s.reason is RejectReason.FOK_NOT_FILLABLE


def test_day_order_expires_after_one_full_bar_gtc_persists() -> None:
    b = make()
    b.on_bars(flat(T0, close=100.0))
    b.submit(
        [
            order("day", BUY, 5, LMT, limit_price=95.0),
            order("gtc", BUY, 5, LMT, limit_price=95.0, tif=GTC),
            order("day_other", BUY, 5, LMT, limit_price=95.0, symbol="BBB"),
        ]
    )
    assert b.order_state("day_other").status is OrderStatus.REJECTED  # type: ignore[union-attr]
    b.on_bars(flat(T0, close=100.0, sym="BBB"))
    b.submit([order("day_bbb", BUY, 5, LMT, limit_price=95.0, symbol="BBB")])
    ev = b.on_bars(bars(T0 + DAY, ("AAA", 99.0, 100.0, 96.0, 97.0, NAN)))  # never reaches 95
    assert [(e.kind, e.client_order_id, e.ts_ns) for e in ev] == [(EventKind.EXPIRED, "day", T0 + DAY)]
    # the BBB day order had no bar yet: it is still working
    assert {s.order.client_order_id for s in b.open_orders()} == {"gtc", "day_bbb"}
    ev = b.on_bars(bars(T0 + 2 * DAY, ("AAA", 96.0, 97.0, 94.0, 95.0, NAN)))
    assert [(f.client_order_id, f.price) for f in fills(ev)] == [("gtc", 95.0)]


def test_day_order_fills_on_its_one_bar_then_partial_rest_expires() -> None:
    b = make(participation_cap=0.1)
    b.on_bars(flat(T0, volume=1000.0))
    b.submit([order("day", BUY, 250)])  # 100 now
    ev = b.on_bars(flat(T0 + DAY, close=101.0, volume=1000.0))  # 100 on the next bar, then it expires
    assert kinds(ev) == [EventKind.FILL, EventKind.EXPIRED]
    s = b.order_state("day")
    assert s is not None and s.status is OrderStatus.EXPIRED and s.filled_qty == 200 and s.leaves_qty == 0
    assert b.on_bars(flat(T0 + 2 * DAY, volume=1000.0)) == []


def test_day_order_filled_on_submit_is_not_expired() -> None:
    b = make()
    b.on_bars(flat(T0))
    b.submit([order("day", BUY, 5)])
    assert b.on_bars(flat(T0 + DAY)) == []
    assert b.order_state("day").status is OrderStatus.FILLED  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------------- ids, rejects, cancel


def _traded(b: SimBroker, ids: list[str]) -> float:
    return sum(f.qty for cid in ids for f in b.fills_for(cid))


def test_duplicate_client_order_id_gives_no_events_and_trades_nothing() -> None:
    b = make(participation_cap=0.5)
    b.on_bars(flat(T0, volume=1000.0))
    first = b.submit([order("o1", BUY, 10)])
    assert kinds(first) == [EventKind.ACCEPTED, EventKind.FILL]
    liq_before, traded_before = b.liquidity_left("AAA"), _traded(b, ["o1"])
    again = b.submit([order("o1", BUY, 10), order("o1", SELL, 99, LMT, limit_price=1.0)])
    assert again == []
    assert b.duplicates == 2 and b.orders_seen == 1 and b.fills_count == 1
    assert _traded(b, ["o1"]) == traded_before == 10 and b.liquidity_left("AAA") == liq_before
    # a duplicate inside one batch, and a duplicate of a rejected order
    ev = b.submit([order("o2", BUY, 0), order("o2", BUY, 5), order("o3"), order("o3")])
    assert [(e.kind, e.client_order_id) for e in ev] == [
        (EventKind.REJECTED, "o2"),
        (EventKind.ACCEPTED, "o3"),
        (EventKind.FILL, "o3"),
    ]
    assert b.duplicates == 4 and b.orders_seen == 3
    assert b.on_bars(flat(T0 + DAY, volume=1000.0)) == []
    assert b.submit([order("o1")]) == []  # still a duplicate on a later bar


@pytest.mark.parametrize(
    ("o", "needle"),
    [
        (order("q0", qty=0), "qty"),
        (order("qneg", qty=-5), "qty"),
        (order("qnan", qty=NAN), "qty"),
        (order("nolim", type=LMT), "limit_price"),
        (order("nanlim", type=LMT, limit_price=NAN), "limit_price"),
        (order("neglim", type=LMT, limit_price=-1.0), "limit_price"),
        (order("nostop", type=STP), "stop_price"),
        (order("mkt_with_limit", type=MKT, limit_price=100.0), "limit_price"),
        (order("", qty=1), "client_order_id"),
    ],
)
def test_invalid_orders_rejected(o: Order, needle: str) -> None:
    b = make()
    b.on_bars(flat(T0))
    ev = b.submit([o])
    assert len(ev) == 1
    (e,) = ev
    assert e.kind is EventKind.REJECTED and e.reason is RejectReason.INVALID_ORDER
    assert needle in e.detail and e.ts_ns == T0
    s = b.order_state(o.client_order_id)
    assert s is not None and s.status is OrderStatus.REJECTED and s.detail == e.detail
    assert b.open_orders() == [] and b.fills_count == 0


def test_invalid_order_without_market_is_invalid_not_no_price() -> None:
    ev = make().submit([order("bad", qty=0, ts_ns=42)])
    assert [(e.kind, e.reason, e.ts_ns) for e in ev] == [(EventKind.REJECTED, RejectReason.INVALID_ORDER, 42)]


def test_no_bar_yet_rejects_with_no_market_price() -> None:
    b = make()
    b.on_bars(flat(T0, sym="AAA"))
    ev = b.submit([order("o", symbol="BBB", ts_ns=T0 + 5)])
    assert [(e.kind, e.reason, e.ts_ns) for e in ev] == [(EventKind.REJECTED, RejectReason.NO_MARKET_PRICE, T0 + 5)]
    assert "BBB" in ev[0].detail
    assert b.last_price("BBB") is None and b.last_price("AAA") == 100.0


def test_nan_close_rows_are_ignored() -> None:
    b = make()
    b.on_bars(flat(T0, close=100.0))
    b.submit([order("lim", BUY, 1, LMT, limit_price=99.0)])  # DAY
    assert b.on_bars(bars(T0 + DAY, ("AAA", NAN, NAN, NAN, NAN, 10.0))) == []
    assert b.last_price("AAA") == 100.0
    assert b.order_state("lim").status is OrderStatus.ACCEPTED  # type: ignore[union-attr]  # no bar: no expiry
    b2 = make()
    b2.on_bars(bars(T0, ("AAA", None, None, None, 50.0, None)))  # OHL default to the close
    assert [f.price for f in fills(b2.submit([order("x")]))] == [50.0]


def test_cancel_semantics() -> None:
    b = make(participation_cap=0.1)
    b.on_bars(flat(T0, close=100.0, volume=1000.0))
    b.submit(
        [
            order("rest", BUY, 5, LMT, limit_price=90.0, tif=GTC),
            order("part", BUY, 150, tif=GTC),  # 100 fills now
            order("done", SELL, 10, LMT, limit_price=90.0),  # marketable, but the pool is empty: rests
        ]
    )
    assert b.order_state("part").filled_qty == 100  # type: ignore[union-attr]
    ev = b.cancel(["rest", "part", "unknown", "rest"], T0 + 7)
    assert [(e.kind, e.client_order_id, e.ts_ns) for e in ev] == [
        (EventKind.CANCELED, "rest", T0 + 7),
        (EventKind.CANCELED, "part", T0 + 7),
    ]
    part = b.order_state("part")
    assert part is not None and part.status is OrderStatus.CANCELED and part.filled_qty == 100
    assert part.leaves_qty == 0
    # cancelled orders never fill later; "done" (DAY) fills on the next bar
    ev = b.on_bars(bars(T0 + DAY, ("AAA", 95.0, 96.0, 80.0, 85.0, 1000.0)))
    assert [(f.client_order_id, f.price) for f in fills(ev)] == [("done", 95.0)]
    assert b.cancel(["done"], T0 + DAY) == []  # terminal: no event
    assert b.order_state("rest").status is OrderStatus.CANCELED  # type: ignore[union-attr]


def test_order_state_and_open_orders_return_copies() -> None:
    b = make()
    b.on_bars(flat(T0))
    b.submit([order("o", BUY, 5, LMT, limit_price=90.0)])
    s = b.order_state("o")
    assert s is not None
    s.status, s.filled_qty = OrderStatus.FILLED, 5.0
    s.fill_ids.append("bogus")
    o = b.open_orders()[0]
    o.fill_ids.append("bogus")
    fresh = b.order_state("o")
    assert fresh is not None and fresh.status is OrderStatus.ACCEPTED and fresh.filled_qty == 0
    assert fresh.fill_ids == [] and b.open_orders()[0].fill_ids == []
    b.fills_for("o").append(None)  # type: ignore[arg-type]
    assert b.fills_for("o") == [] and b.order_state("nope") is None


# ---------------------------------------------------------------------------------------------- properties

SYMS = ("AAA", "BBB")
CAP = 0.2


@st.composite
def bar_rows(draw: st.DrawFn) -> list[tuple[str, float, float, float, float, float]]:
    syms = draw(st.lists(st.sampled_from(SYMS), min_size=1, max_size=2, unique=True))
    rows = []
    for s in syms:
        o = draw(st.floats(90, 110))
        c = draw(st.floats(90, 110))
        h = max(o, c) + draw(st.floats(0, 5))
        lo = min(o, c) - draw(st.floats(0, 5))
        v = draw(st.one_of(st.just(NAN), st.just(0.0), st.floats(0, 500), st.sampled_from([10.0, 100.0])))
        rows.append((s, o, h, lo, c, v))
    return rows


@st.composite
def orders_(draw: st.DrawFn) -> Order:
    typ = draw(st.sampled_from(list(OrderType)))
    good = st.floats(85, 115)
    price = st.one_of(good, good, good, good, st.none(), st.just(NAN))  # mostly valid prices
    return Order(
        client_order_id=f"o{draw(st.integers(0, 40))}",
        symbol=draw(st.sampled_from([*SYMS, *SYMS, "ZZZ"])),  # ZZZ never has a bar
        side=draw(st.sampled_from(list(Side))),
        qty=draw(st.one_of(st.floats(0.5, 300), st.floats(0.5, 300), st.sampled_from([1.0, 50.0, 0.0, -1.0]))),
        type=typ,
        tif=draw(st.sampled_from(list(TimeInForce))),
        limit_price=draw(price) if typ is OrderType.LIMIT or (draw(st.booleans()) and draw(st.booleans())) else None,
        stop_price=draw(price) if typ is OrderType.STOP else None,
    )


step_ = st.tuples(
    bar_rows(),
    st.lists(orders_(), max_size=8),
    st.lists(st.integers(0, 40).map(lambda i: f"o{i}"), max_size=3),
)


def _snapshot(b: SimBroker, ids: set[str]) -> dict[str, tuple[Any, ...]]:
    out = {}
    for cid in ids:
        s = b.order_state(cid)
        assert s is not None
        out[cid] = (s.status, s.filled_qty, s.avg_fill_price, tuple(s.fill_ids), s.reason, s.detail)
    return out


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step_, min_size=1, max_size=8), fee_min=st.sampled_from([0.0, 1.0]))
def test_conservation_over_random_order_streams(
    steps: list[tuple[list[tuple[str, float, float, float, float, float]], list[Order], list[str]]],
    fee_min: float,
) -> None:
    b = SimBroker(BrokerConfig(fee_bps=1.0, fee_min=fee_min, slippage_bps=5.0, participation_cap=CAP))
    seen: set[str] = set()
    submitted: dict[str, Order] = {}
    n_dups = 0
    accepted: set[str] = set()
    terminal: dict[str, tuple[Any, ...]] = {}
    all_events: list[OrderEvent] = []
    volume: dict[tuple[str, int], float] = {}

    def check_op(events: list[OrderEvent]) -> None:
        for e in events:
            assert e.client_order_id not in terminal, f"event for terminal order: {e}"
            if e.kind is EventKind.ACCEPTED:
                accepted.add(e.client_order_id)
            if e.kind is EventKind.FILL:
                assert e.fill is not None and e.client_order_id in accepted
        all_events.extend(events)
        now = _snapshot(b, set(submitted))
        for cid, snap in terminal.items():
            assert now[cid] == snap, f"terminal order {cid} changed"
        terminal.update({cid: s for cid, s in now.items() if s[0].is_terminal})

    for i, (rows, orders, cancels) in enumerate(steps):
        ts = T0 + i * DAY
        for s, *_, v in rows:
            volume[(s, ts)] = v
        check_op(b.on_bars(bars(ts, *rows)))
        for o in orders:
            if o.client_order_id in seen:
                n_dups += 1
            else:
                seen.add(o.client_order_id)
                submitted[o.client_order_id] = o
        check_op(b.submit(orders))
        check_op(b.cancel(cancels, ts))

    fills_ = [e.fill for e in all_events if e.fill is not None]
    by_order: dict[str, list[Fill]] = defaultdict(list)
    per_bar: dict[tuple[str, int], float] = defaultdict(float)
    for f in fills_:
        by_order[f.client_order_id].append(f)
        per_bar[(f.symbol, f.ts_ns)] += f.qty
        assert f.qty > 0 and f.fee >= fee_min and f.fee >= 0
    assert len({f.fill_id for f in fills_}) == len(fills_)
    assert (b.orders_seen, b.duplicates, b.fills_count) == (len(submitted), n_dups, len(fills_))

    for cid, o in submitted.items():
        s = b.order_state(cid)
        assert s is not None and s.order == o
        fs = by_order.get(cid, [])
        assert b.fills_for(cid) == fs
        assert s.fill_ids == [f.fill_id for f in fs] == [f"{cid}:{n}" for n in range(1, len(fs) + 1)]
        total = sum(f.qty for f in fs)
        assert total == pytest.approx(s.filled_qty, abs=1e-9)
        assert s.filled_qty <= max(o.qty, 0.0) + 1e-9
        if fs:
            mean = sum(f.qty * f.price for f in fs) / total
            assert s.avg_fill_price == pytest.approx(mean, rel=1e-9)
            assert all(f.symbol == o.symbol and f.side is o.side for f in fs)
            if o.type is OrderType.LIMIT:
                assert o.limit_price is not None
                assert all(f.price <= o.limit_price if o.side is BUY else f.price >= o.limit_price for f in fs)
        if s.status is OrderStatus.FILLED:
            assert s.filled_qty == pytest.approx(o.qty, abs=1e-9)
        if s.status is OrderStatus.REJECTED:
            assert not fs and cid not in accepted
        if o.tif is FOK:
            assert s.status in (OrderStatus.FILLED, OrderStatus.REJECTED)
        if o.tif is IOC:
            assert s.status.is_terminal

    for (sym, ts), q in per_bar.items():
        v = volume[(sym, ts)]
        if v == v:  # NaN volume: no cap
            assert q <= CAP * v + 1e-9, f"{sym}@{ts}: filled {q} > cap {CAP * v}"

    open_ids = {s.order.client_order_id for s in b.open_orders()}
    assert open_ids == {cid for cid in submitted if cid not in terminal}


def test_replayed_bar_is_ignored() -> None:
    """A retried step re-sends a bar the venue has processed: no second match, no refilled liquidity."""
    broker = SimBroker(BrokerConfig(participation_cap=0.1, slippage_bps=0.0, fee_bps=0.0))
    first = _bars_for_replay(1, 100.0, 1_000.0)
    broker.on_bars(first)
    ev = broker.submit([Order("big", "A", Side.BUY, 250.0, tif=TimeInForce.GTC)])
    assert sum(e.fill.qty for e in ev if e.fill) == 100.0  # 10% of 1,000
    second = _bars_for_replay(2, 100.0, 1_000.0)
    got = broker.on_bars(second)
    assert sum(e.fill.qty for e in got if e.fill) == 100.0
    assert broker.on_bars(second) == []  # the same bar again: nothing happens
    assert broker.liquidity_left("A") == 0.0
    st = broker.order_state("big")
    assert st is not None and st.filled_qty == 200.0


def _bars_for_replay(day: int, px: float, volume: float) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {
            "ts": pa.array([day * 86_400_000_000_000], pa.timestamp("ns", tz="UTC")),
            "symbol": ["A"],
            "open": [px],
            "high": [px],
            "low": [px],
            "close": [px],
            "volume": [volume],
        },
        schema=BAR_SCHEMA,
    )
