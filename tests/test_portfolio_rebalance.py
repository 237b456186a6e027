"""Rebalancing triggers and trade lists, on a buy-and-hold book of the 20 S&P 500 stocks (skfolio dataset)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from skfolio.datasets import load_sp500_dataset

from tradesys.quant.portfolio import (
    RebalancePolicy,
    calendar_due,
    check_rebalance,
    drift_breaches,
    risk_share_drift,
    weights_from_positions,
)


@pytest.fixture(scope="module")
def prices() -> pd.DataFrame:
    return load_sp500_dataset().loc["2021-12-31":"2022-12-28"]


def _buy_and_hold(prices: pd.DataFrame, target: pd.Series, nav: float = 1e6) -> tuple[pd.Series, pd.Series]:
    """Shares bought at the first close at target weights, and the weights they drift to at the last close."""
    shares = target * nav / prices.iloc[0]
    return shares, weights_from_positions(shares.to_dict(), prices.iloc[-1].to_dict())


def test_weights_from_positions_conserve_value(prices) -> None:
    qty = {"AAPL": 100.0, "XOM": 250.0, "KO": 40.0}
    px = prices.iloc[-1].to_dict()
    w = weights_from_positions(qty, px, cash=5_000.0)
    nav = sum(q * px[a] for a, q in qty.items()) + 5_000.0
    assert w.sum() + 5_000.0 / nav == pytest.approx(1.0, abs=1e-15)
    assert w["XOM"] == pytest.approx(250.0 * px["XOM"] / nav, rel=1e-15)
    with pytest.raises(ValueError, match="prices: missing for \\['TSLA'\\]"):
        weights_from_positions({"TSLA": 1.0}, px)


def test_buy_and_hold_drift_in_2022_triggers_bands(prices) -> None:
    target = pd.Series(1.0 / prices.shape[1], index=prices.columns)
    _, current = _buy_and_hold(prices, target)
    # drift is the price move relative to the portfolio: w_i = t_i R_i / sum_j t_j R_j
    growth = prices.iloc[-1] / prices.iloc[0]
    np.testing.assert_allclose(current, target * growth / (target * growth).sum(), rtol=1e-12)
    table = drift_breaches(current, target, abs_band=0.02)
    expected = (current - target).abs() > 0.02
    assert table["breach"].equals(expected.reindex(table.index)) and expected.any()
    # energy rallied in 2022 (XOM roughly doubled): the 5/25 rule flags it on the relative band
    decision = check_rebalance(current, target, RebalancePolicy(abs_band=0.05, rel_band=0.25))
    assert decision.rebalance and any("XOM" in r for r in decision.reasons)
    assert not check_rebalance(current, target, RebalancePolicy(abs_band=0.5, rel_band=5.0)).rebalance


def test_trades_bring_weights_to_target_with_minimum_size(prices) -> None:
    target = pd.Series(1.0 / prices.shape[1], index=prices.columns)
    _, current = _buy_and_hold(prices, target)
    full = check_rebalance(current, target, RebalancePolicy(abs_band=0.01))
    after = current.copy()
    for t in full.trades:
        after[t.asset] += t.weight_change
        assert t.side == ("buy" if t.weight_change > 0 else "sell")
        assert t.target_weight - t.current_weight == pytest.approx(t.weight_change, abs=1e-15)
    np.testing.assert_allclose(after, target, atol=1e-15)
    assert sum(t.weight_change for t in full.trades) == pytest.approx(target.sum() - current.sum(), abs=1e-12)

    min_trade = 0.01
    part = check_rebalance(current, target, RebalancePolicy(abs_band=0.01, min_trade=min_trade))
    assert all(abs(t.weight_change) >= min_trade for t in part.trades)
    assert set(part.skipped) == {a for a in target.index if 0 < abs(target[a] - current[a]) < min_trade}
    after = current.copy()
    for t in part.trades:
        after[t.asset] = t.target_weight
    assert (after - target).abs().max() < min_trade

    # in currency: a $1m book with a $15k minimum ticket
    money = check_rebalance(
        current, target, RebalancePolicy(abs_band=0.01, min_trade_value=15_000.0), portfolio_value=1e6
    )
    assert all(abs(t.value) >= 15_000.0 for t in money.trades)
    assert all(t.value == pytest.approx(t.weight_change * 1e6) for t in money.trades)
    json.dumps(money.to_dict())
    assert list(money.trades_frame().columns)[:3] == ["asset", "side", "current_weight"]
    # triggers that fire while every trade is below the minimum: nothing to do, reasons still reported
    tiny = check_rebalance(current, target, RebalancePolicy(abs_band=0.01, min_trade=1.0))
    assert not tiny.rebalance and tiny.reasons and not tiny.trades


def test_calendar_trigger() -> None:
    assert calendar_due("2022-01-31", "2022-02-01", "monthly")
    assert not calendar_due("2022-02-01", "2022-02-28", "monthly")
    assert calendar_due("2022-03-31", "2022-04-01", "quarterly") and not calendar_due("2022-01-03", "2022-03-31", "Q")
    assert calendar_due("2022-12-30", "2023-01-02", "annual")
    assert calendar_due("2022-01-07", "2022-01-10", "weekly")  # Friday -> Monday
    assert not calendar_due("2022-01-10", "2022-01-14", "weekly")
    assert calendar_due("2022-01-01", "2022-01-31", 30) and not calendar_due("2022-01-01", "2022-01-30", 30)
    w = {"A": 0.5, "B": 0.5}
    d = check_rebalance(w, w, RebalancePolicy(frequency="monthly"), last_rebalance="2022-01-31", today="2022-02-01")
    assert d.reasons and not d.trades and not d.rebalance  # on target already: the trigger fires, nothing to trade
    with pytest.raises(ValueError, match="today: is before last_rebalance"):
        calendar_due("2022-02-01", "2022-01-01", "monthly")
    with pytest.raises(ValueError, match="frequency: unknown 'fortnightly'"):
        calendar_due("2022-01-01", "2022-02-01", "fortnightly")
    with pytest.raises(ValueError, match="last_rebalance: calendar trigger needs"):
        check_rebalance(w, w, RebalancePolicy(frequency="monthly"))


def test_risk_contribution_trigger_catches_correlation_shift(prices) -> None:
    """Weights on target, but a correlation shift moves the risk shares: only the risk trigger sees it."""
    rets = load_sp500_dataset().pct_change().dropna()
    calm = rets.loc["2019"].cov() * 252
    stressed = rets.loc["2020-02-15":"2020-04-30"].cov() * 252
    target = pd.Series(1.0 / rets.shape[1], index=rets.columns)
    budgets = pd.Series(
        target.to_numpy() * (calm.to_numpy() @ target.to_numpy()) / (target @ calm @ target), index=target.index
    )
    drift = risk_share_drift(target, stressed, budgets)
    s = stressed.to_numpy()
    manual = target.to_numpy() * (s @ target.to_numpy()) / (target @ s @ target) - budgets.to_numpy()
    np.testing.assert_allclose(drift, manual, atol=1e-15)
    assert drift.sum() == pytest.approx(0.0, abs=1e-12)
    band = 0.5 * float(drift.abs().max())
    policy = RebalancePolicy(abs_band=0.01, risk_band=band, risk_budgets=budgets)
    assert not check_rebalance(target, target, policy, cov=calm).reasons
    decision = check_rebalance(target, target, policy, cov=stressed)
    assert decision.reasons and all(r.startswith("risk:") for r in decision.reasons)
    assert len(decision.reasons) == int((drift.abs() > band).sum())
    with pytest.raises(ValueError, match="cov: risk-contribution trigger needs"):
        check_rebalance(target, target, RebalancePolicy(risk_band=0.01))


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="current_weights: NaN or infinite weight for B"):
        check_rebalance({"A": 0.5, "B": float("nan")}, {"A": 1.0}, RebalancePolicy(abs_band=0.1))
    with pytest.raises(ValueError, match="abs_band: give abs_band and/or rel_band"):
        drift_breaches({"A": 1.0}, {"A": 1.0})
    with pytest.raises(ValueError, match="portfolio_value: needed for min_trade_value"):
        check_rebalance({"A": 1.0}, {"A": 0.5}, RebalancePolicy(abs_band=0.1, min_trade_value=100.0))
