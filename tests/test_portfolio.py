"""Portfolio accounting against independent recomputation from the fills, and its conservation laws."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradesys.core.orders import Fill, Side
from tradesys.core.portfolio import Portfolio


def _fill(i: int, sym: str, side: Side, qty: float, px: float, fee: float = 0.0) -> Fill:
    return Fill(f"f{i}", f"o{i}", sym, side, qty, px, fee, ts_ns=i)


def test_round_trip_realises_pnl_and_fees() -> None:
    pf = Portfolio(10_000.0)
    pf.apply_fill(_fill(1, "A", Side.BUY, 10, 100.0, fee=1.0))
    pf.apply_fill(_fill(2, "A", Side.BUY, 10, 110.0, fee=1.0))
    assert pf.positions["A"].avg_price == pytest.approx(105.0)
    pf.apply_fill(_fill(3, "A", Side.SELL, 15, 120.0, fee=1.0))
    assert pf.positions["A"].qty == 5
    assert pf.positions["A"].avg_price == pytest.approx(105.0)  # reducing keeps the average cost
    assert pf.realized_pnl == pytest.approx(15 * 15.0)
    pf.mark({"A": 100.0})
    assert pf.unrealized_pnl == pytest.approx(5 * (100.0 - 105.0))
    assert pf.cash == pytest.approx(10_000 - 1000 - 1100 + 1800 - 3)
    assert pf.equity == pytest.approx(pf.cash + 500.0)
    assert pf.equity - pf.initial_cash == pytest.approx(pf.realized_pnl + pf.unrealized_pnl - pf.fees)


def test_flip_through_zero_resets_cost() -> None:
    pf = Portfolio(1e6)
    pf.apply_fill(_fill(1, "A", Side.BUY, 10, 50.0))
    pf.apply_fill(_fill(2, "A", Side.SELL, 25, 60.0))
    pos = pf.positions["A"]
    assert pos.qty == -15 and pos.avg_price == 60.0
    assert pos.realized_pnl == pytest.approx(100.0)


def test_day_start_equity_is_previous_close() -> None:
    day = 86_400_000_000_000
    pf = Portfolio(1000.0)
    pf.apply_fill(_fill(1, "A", Side.BUY, 10, 10.0))
    pf.mark({"A": 10.0}, ts_ns=1 * day + 1)
    pf.mark({"A": 8.0}, ts_ns=2 * day + 1)  # new day: start equity is yesterday's close equity
    assert pf.day_start_equity == pytest.approx(1000.0)
    assert pf.equity == pytest.approx(980.0)


def test_restore_keeps_closed_realised_pnl() -> None:
    pf = Portfolio(1000.0)
    pf.apply_fill(_fill(1, "A", Side.BUY, 10, 10.0))
    pf.apply_fill(_fill(2, "A", Side.SELL, 10, 12.0, fee=0.5))
    pf.apply_fill(_fill(3, "B", Side.BUY, 5, 20.0))
    pf.mark({"B": 21.0})
    live = [(s, p.qty, p.avg_price, p.realized_pnl, p.mark) for s, p in pf.positions.items() if p.qty]
    back = Portfolio.restore(1000.0, pf.cash, pf.fees, live, realized_pnl=pf.realized_pnl)
    assert back.equity == pytest.approx(pf.equity)
    assert back.realized_pnl == pytest.approx(pf.realized_pnl)
    assert back.equity - 1000.0 == pytest.approx(back.realized_pnl + back.unrealized_pnl - back.fees)


def test_initial_cash_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"portfolio.initial_cash"):
        Portfolio(0.0)


fills_st = st.lists(
    st.tuples(
        st.sampled_from(["A", "B", "C"]),
        st.sampled_from([Side.BUY, Side.SELL]),
        st.integers(1, 500),
        st.floats(1.0, 500.0),
        st.floats(0.0, 5.0),
        st.floats(1.0, 500.0),  # mark after the fill
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(fills_st)
def test_conservation_laws_hold_after_every_fill(stream) -> None:
    pf = Portfolio(1e6)
    ref_qty: dict[str, float] = {}
    ref_cash = 1e6
    for i, (sym, side, qty, px, fee, mark) in enumerate(stream):
        f = _fill(i, sym, side, float(qty), px, fee)
        pf.apply_fill(f)
        pf.mark({sym: mark})
        ref_qty[sym] = ref_qty.get(sym, 0.0) + f.signed_qty
        ref_cash -= f.signed_qty * px + fee
        # independent reference: positions are the sum of fills, cash the sum of flows
        for s, q in ref_qty.items():
            assert pf.positions[s].qty == pytest.approx(q, abs=1e-9)
        assert pf.cash == pytest.approx(ref_cash, rel=1e-12, abs=1e-6)
        mv = sum(q * pf.positions[s].mark for s, q in ref_qty.items())
        assert pf.equity == pytest.approx(pf.cash + mv, rel=1e-12, abs=1e-6)
        assert pf.equity - pf.initial_cash == pytest.approx(
            pf.realized_pnl + pf.unrealized_pnl - pf.fees, rel=1e-9, abs=1e-6
        )
        assert not math.isnan(pf.equity)


def test_copy_is_independent() -> None:
    pf = Portfolio(1000.0)
    pf.apply_fill(_fill(1, "A", Side.BUY, 10, 10.0))
    cp = pf.copy()
    cp.apply_fill(_fill(2, "A", Side.BUY, 5, 12.0))
    cp.mark({"A": 20.0}, ts_ns=86_400_000_000_000)
    assert pf.positions["A"].qty == 10 and pf.positions["A"].mark == 10.0 and pf.cash == 900.0
    assert cp.positions["A"].qty == 15 and cp.cash == 840.0
