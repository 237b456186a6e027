"""Each kind of bad order is rejected with its own reason; reductions are always allowed."""

from __future__ import annotations

import pytest

from tradesys.config import RiskConfig
from tradesys.core.orders import Fill, Order, OrderType, RejectReason, Side
from tradesys.core.portfolio import Portfolio, PortfolioSnapshot
from tradesys.risk.pretrade import PreTradeRisk

DAY = 86_400_000_000_000
LIMITS = RiskConfig(
    max_order_qty=1_000,
    max_order_notional=50_000,
    max_position_notional=80_000,
    price_collar_pct=0.05,
    max_orders_per_window=3,
    order_window_seconds=60,
    daily_loss_limit_pct=0.05,
)


def book(qty: float = 0.0, mark: float = 100.0, equity_move: float = 0.0) -> PortfolioSnapshot:
    pf = Portfolio(1_000_000.0)
    pf.mark({"A": mark}, ts_ns=DAY)
    if qty:
        pf.apply_fill(Fill("f", "o", "A", Side.BUY if qty > 0 else Side.SELL, abs(qty), mark, 0.0, DAY))
    if equity_move:
        pf.cash += equity_move
    return pf.snapshot()


def order(i: int = 0, qty: float = 10, side: Side = Side.BUY, **kw) -> Order:
    return Order(f"c{i}", kw.pop("symbol", "A"), side, qty, **kw)


@pytest.mark.parametrize(
    ("o", "reason"),
    [
        (order(qty=0), RejectReason.INVALID_ORDER),
        (order(type=OrderType.LIMIT), RejectReason.INVALID_ORDER),
        (order(symbol="ZZZ"), RejectReason.NO_MARKET_PRICE),
        (order(qty=1_001), RejectReason.MAX_ORDER_QTY),
        (order(qty=600), RejectReason.MAX_ORDER_NOTIONAL),
        (order(qty=10, type=OrderType.LIMIT, limit_price=106.0), RejectReason.PRICE_COLLAR),
        (order(qty=10, type=OrderType.STOP, stop_price=90.0), RejectReason.PRICE_COLLAR),
    ],
)
def test_each_breach_has_its_reason(o: Order, reason: RejectReason) -> None:
    d = PreTradeRisk(LIMITS).check([o], book(), DAY + 1)
    assert not d.accepted
    assert [e.reason for e in d.rejected] == [reason]
    assert d.rejected[0].detail  # a human-readable explanation


def test_limit_inside_collar_is_accepted() -> None:
    o = order(qty=10, type=OrderType.LIMIT, limit_price=104.9)
    assert PreTradeRisk(LIMITS).check([o], book(), DAY + 1).accepted == [o]


def test_max_position_counts_working_orders_and_allows_reductions() -> None:
    gate = PreTradeRisk(LIMITS)
    b = book(qty=700)  # 70k of 80k
    d = gate.check([order(1, qty=100)], b, DAY + 1, working={"A": 50})  # 850 * 100 > 80k
    assert [e.reason for e in d.rejected] == [RejectReason.MAX_POSITION]
    d = gate.check([order(2, qty=450, side=Side.SELL)], b, DAY + 1)
    assert d.accepted and not d.rejected  # reducing is always allowed


def test_position_limit_applies_across_orders_in_one_batch() -> None:
    d = PreTradeRisk(LIMITS).check([order(1, qty=450), order(2, qty=450)], book(), DAY + 1)
    assert [o.client_order_id for o in d.accepted] == ["c1"]
    assert [e.reason for e in d.rejected] == [RejectReason.MAX_POSITION]


def test_order_rate_window_slides() -> None:
    gate = PreTradeRisk(LIMITS)
    d = gate.check([order(i) for i in range(5)], book(), DAY + 1)
    assert len(d.accepted) == 3
    assert [e.reason for e in d.rejected] == [RejectReason.ORDER_RATE] * 2
    later = DAY + 1 + 61 * 10**9
    assert len(gate.check([order(9)], book(), later).accepted) == 1


def test_kill_switch_trips_latches_for_the_day_and_rearms() -> None:
    gate = PreTradeRisk(LIMITS)
    losing = book(equity_move=-60_000)  # -6% vs start of day
    d = gate.check([order(1)], losing, DAY + 1)
    assert d.kill_switch_tripped
    assert [e.reason for e in d.rejected] == [RejectReason.KILL_SWITCH]
    d = gate.check([order(2)], book(), DAY + 2)  # same day, even if equity recovered
    assert [e.reason for e in d.rejected] == [RejectReason.KILL_SWITCH] and not d.kill_switch_tripped
    d = gate.check([order(3)], book(), 2 * DAY + 1)  # a new day re-arms it
    assert d.accepted and not gate.kill_switch_active
