"""The tear sheet's numbers against independent references: empyrical on the same returns (Sharpe, Sortino, Calmar,
drawdown, annual return and volatility, rolling and monthly figures, alpha/beta), hand-computed FIFO trades on a
tiny fill list, and the conservation laws of a real backtest's ledger (per-symbol P&L sums to the equity change;
positions times closes equal the booked market value; fees equal the account's)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import empyrical as ep
import numpy as np
import pandas as pd
import pytest

from tradesys.backtest.report import _wide
from tradesys.backtest.runner import run_backtest
from tradesys.backtest.tearsheet import (
    capacity_estimate,
    equity_frame,
    fifo_trades,
    per_symbol_pnl,
    perf_stats,
    positions_over_time,
    tear_sheet,
    trade_stats,
)
from tradesys.config import load_config
from tradesys.data import Sp500StocksSource

DAY = 86_400 * 10**9
T0 = int(pd.Timestamp("2020-01-02 21:00", tz="UTC").value)


def _curve(returns: np.ndarray, cash0: float = 1_000_000.0, *, dup: bool = True) -> list[dict[str, Any]]:
    """Ledger-shaped equity rows for `returns` on consecutive business days; with `dup`, a stale extra row per
    step first (the ledger writes several per step; the last one counts)."""
    eq = cash0 * np.cumprod(1.0 + returns)
    days = pd.bdate_range("2020-01-02", periods=len(returns), tz="UTC") + pd.Timedelta(hours=21)
    rows = []
    for ts, e in zip(days.asi8, eq, strict=True):
        row = {"ts_ns": int(ts), "equity": float(e), "cash": float(e), "market_value": 0.0, "realized_pnl": 0.0,
               "unrealized_pnl": 0.0, "fees": 0.0, "initial_cash": cash0}
        if dup:
            rows.append({**row, "equity": float(e) * 0.5})
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def returns() -> np.ndarray:
    rng = np.random.default_rng(17)
    return 0.0004 + 0.011 * rng.standard_t(4, size=700) / math.sqrt(2)


# --- statistics against empyrical ----------------------------------------------------------------------------------


def test_statistics_match_empyrical(returns: np.ndarray) -> None:
    sheet = tear_sheet(_curve(returns), [], [], periods_per_year=252)
    s = sheet.stats
    assert np.allclose(sheet.equity["returns"].to_numpy(), returns, rtol=0, atol=1e-12)  # last row per step counts
    assert s["total_return"] == pytest.approx(ep.cum_returns_final(returns), rel=1e-10)
    assert s["annual_return"] == pytest.approx(ep.annual_return(returns), rel=1e-10)
    assert s["annual_volatility"] == pytest.approx(ep.annual_volatility(returns), rel=1e-10)
    assert s["sharpe"] == pytest.approx(ep.sharpe_ratio(returns), rel=1e-10)
    assert s["sortino"] == pytest.approx(ep.sortino_ratio(returns), rel=1e-10)
    assert s["calmar"] == pytest.approx(ep.calmar_ratio(returns), rel=1e-10)
    assert s["max_drawdown"] == pytest.approx(-ep.max_drawdown(returns), rel=1e-10)
    assert sheet.equity["drawdown"].min() == pytest.approx(ep.max_drawdown(returns), rel=1e-10)


def test_weekly_annualisation_matches_empyrical(returns: np.ndarray) -> None:
    r = returns[:150]
    s = perf_stats(r, 52)
    assert s["sharpe"] == pytest.approx(ep.sharpe_ratio(r, annualization=52), rel=1e-10)
    assert s["sortino"] == pytest.approx(ep.sortino_ratio(r, annualization=52), rel=1e-10)
    assert s["annual_return"] == pytest.approx(ep.annual_return(r, annualization=52), rel=1e-10)
    assert s["annual_volatility"] == pytest.approx(ep.annual_volatility(r, annualization=52), rel=1e-10)


def test_rolling_and_monthly_match_empyrical(returns: np.ndarray) -> None:
    sheet = tear_sheet(_curve(returns), [], [], periods_per_year=252, rolling_window=40)
    idx = sheet.equity.index
    r = pd.Series(returns, index=idx)
    ref_sharpe = ep.roll_sharpe_ratio(r, 40)
    ref_vol = ep.roll_annual_volatility(r, 40)
    got = sheet.rolling.dropna()
    assert len(got) == len(ref_sharpe) == len(returns) - 39
    assert np.allclose(got["sharpe"].to_numpy(), np.asarray(ref_sharpe), rtol=1e-9)
    assert np.allclose(got["volatility"].to_numpy(), np.asarray(ref_vol), rtol=1e-9)
    monthly = ep.aggregate_returns(r, "monthly")
    stacked = sheet.monthly.drop(columns="year").stack()
    assert np.allclose(stacked.to_numpy(), monthly.to_numpy(), rtol=1e-12)
    assert list(stacked.index) == list(monthly.index)
    assert np.allclose(sheet.monthly["year"].to_numpy(), ep.aggregate_returns(r, "yearly").to_numpy(), rtol=1e-12)


def test_alpha_beta_against_empyrical(returns: np.ndarray) -> None:
    """The benchmark is built from closes; alpha and beta of the strategy against its returns as empyrical's."""
    rng = np.random.default_rng(3)
    n = len(returns)
    prices = 100 * np.cumprod(1 + 0.01 * rng.standard_normal((n, 2)), axis=0)
    curve = _curve(0.5 * returns + 0.0)  # any strategy
    steps = [r["ts_ns"] for r in curve[1::2]]
    closes = pd.DataFrame(prices, index=pd.Index(steps, dtype=np.int64), columns=["X", "Y"])
    sheet = tear_sheet(curve, [], [], closes=closes, periods_per_year=252)
    b = sheet.benchmark
    assert b["available"] and b["symbols"] == ["X", "Y"]
    # equal-weight buy-and-hold, by hand: half the cash in each at the first close
    hold = 1e6 / 2 * (prices[:, 0] / prices[0, 0] + prices[:, 1] / prices[0, 1])
    assert np.allclose(sheet.equity["benchmark"].to_numpy(), hold, rtol=1e-12)
    bench_r = np.concatenate([[hold[0] / 1e6 - 1], hold[1:] / hold[:-1] - 1])
    alpha, beta = ep.alpha_beta(0.5 * returns, bench_r)
    assert b["beta"] == pytest.approx(beta, rel=1e-9)
    assert b["alpha"] == pytest.approx(alpha, rel=1e-9)
    assert b["stats"]["sharpe"] == pytest.approx(ep.sharpe_ratio(bench_r), rel=1e-10)


def test_drawdown_duration_by_hand() -> None:
    # equity 100 -> 110 (peak, step 0) -> 99 -> 104.5 -> 110 (recovered at step 3) -> 121 -> 114.95 (to the end)
    r = np.array([0.10, -0.10, 0.1 / 1.8, 5.5 / 104.5, 0.10, -0.05])
    s = tear_sheet(_curve(r, 100.0, dup=False), [], [], periods_per_year=252).stats
    assert s["max_drawdown"] == pytest.approx(0.10, rel=1e-12)
    assert s["max_drawdown_duration_steps"] == 3  # peak at step 0, back at the peak at step 3
    assert s["max_drawdown_recovered"] is True
    assert s["max_drawdown_duration_days"] == pytest.approx(5.0)  # Thu 2 Jan -> Tue 7 Jan 2020 (business days)
    assert s["longest_drawdown_steps"] == 3
    # not recovered: peak at step 0, still under water at the last step
    s = tear_sheet(_curve(np.array([0.1, -0.2, 0.05]), 100.0, dup=False), [], [], periods_per_year=252).stats
    assert s["max_drawdown"] == pytest.approx(0.2, rel=1e-12)
    assert s["max_drawdown_recovered"] is False and s["max_drawdown_duration_steps"] == 2


# --- trades, hand-computed -----------------------------------------------------------------------------------------


def _fill(i: int, sym: str, side: str, qty: float, price: float, fee: float) -> dict[str, Any]:
    return {"fill_id": f"f{i}", "client_order_id": f"o{i}", "symbol": sym, "side": side, "qty": qty, "price": price,
            "fee": fee, "ts_ns": T0 + i * DAY, "wall_ns": 0}


FILLS = [
    _fill(0, "A", "buy", 10, 100.0, 1.0),
    _fill(1, "A", "buy", 10, 110.0, 1.0),
    _fill(2, "A", "sell", 15, 120.0, 1.5),  # closes 10 @100 and 5 @110
    _fill(3, "A", "sell", 10, 100.0, 1.0),  # closes 5 @110, opens a short of 5 @100
    _fill(4, "A", "buy", 5, 90.0, 0.5),  # covers the short
    _fill(5, "B", "buy", 4, 50.0, 0.0),
    _fill(6, "B", "sell", 4, 45.0, 0.0),
    _fill(7, "C", "buy", 3, 10.0, 0.3),  # still open
]


def test_fifo_trades_by_hand() -> None:
    trades, lots = fifo_trades(FILLS)
    assert list(trades["symbol"]) == ["A", "A", "A", "B"]
    assert list(trades["direction"]) == ["long", "long", "short", "long"]
    assert list(trades["qty"]) == [15, 5, 5, 4]
    # trade 1: gross 10*20 + 5*10 = 250; fees 15 * 0.1 (opening) + 1.5 (closing) = 3
    # trade 2: gross 5 * (100 - 110) = -50; fees 5 * 0.1 + 5 * 0.1 = 1
    # trade 3: short 5 @100 covered @90: +50; fees 0.5 + 0.5 = 1
    # trade 4: 4 * (45 - 50) = -20, no fees
    assert np.allclose(trades["gross_pnl"], [250, -50, 50, -20])
    assert np.allclose(trades["fees"], [3, 1, 1, 0])
    assert np.allclose(trades["pnl"], [247, -51, 49, -20])
    assert trades["entry_price"].iloc[0] == pytest.approx(1550 / 15)
    assert trades["entry_ts_ns"].iloc[0] == T0 and trades["exit_ts_ns"].iloc[0] == T0 + 2 * DAY
    assert [lot[:2] for lot in lots["C"]] == [[3, 10.0]] and not lots["A"] and not lots["B"]
    s = trade_stats(trades)
    assert s["trades"] == 4
    assert s["hit_rate"] == 0.5
    assert s["profit_factor"] == pytest.approx((247 + 49) / (51 + 20))
    assert s["avg_win"] == pytest.approx(148.0) and s["avg_loss"] == pytest.approx(-35.5)
    assert s["win_loss_ratio"] == pytest.approx(148 / 35.5)


def test_per_symbol_pnl_by_hand_and_conserved() -> None:
    pnl = per_symbol_pnl(FILLS, {"C": 12.0})
    assert pnl.loc["A", "realized"] == pytest.approx(250.0)
    assert pnl.loc["A", "fees"] == pytest.approx(5.0)
    assert pnl.loc["A", "total"] == pytest.approx(245.0)
    assert pnl.loc["B", "total"] == pytest.approx(-20.0)
    assert pnl.loc["C", "unrealized"] == pytest.approx(6.0) and pnl.loc["C", "total"] == pytest.approx(5.7)
    # conservation: cash flows of every fill, less fees, plus what is held at the mark
    cash = sum((-1 if f["side"] == "buy" else 1) * f["qty"] * f["price"] - f["fee"] for f in FILLS)
    assert pnl["total"].sum() == pytest.approx(cash + 3 * 12.0, abs=1e-9)
    with pytest.raises(ValueError, match=r"^marks: no mark for 'C'"):
        per_symbol_pnl(FILLS, {})


def test_capacity_by_hand() -> None:
    fills = [_fill(0, "A", "buy", 100, 10.0, 0.0), _fill(1, "A", "sell", 300, 10.0, 0.0)]
    volumes = pd.DataFrame({"A": [10_000.0, 1_000.0]}, index=pd.Index([T0, T0 + DAY], dtype=np.int64))
    equity = pd.Series([1e6, 2e6], index=pd.Index([T0, T0 + DAY], dtype=np.int64))
    cap = capacity_estimate(fills, volumes, equity, participation=0.1)
    # per unit of equity: 100 / (10,000 * 1e6) = 1e-8 and 300 / (1,000 * 2e6) = 1.5e-7: the second binds
    assert cap["capacity"] == pytest.approx(0.1 / 1.5e-7)
    assert cap["max_fill_participation"] == pytest.approx(0.3)
    assert cap["fills_with_volume"] == 2
    unknown = capacity_estimate(fills, volumes * np.nan, equity)
    assert unknown["capacity"] is None and "volume unknown" in unknown["reason"]


def test_bad_inputs_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"^equity: the ledger has no equity rows"):
        tear_sheet([], [], [])
    with pytest.raises(ValueError, match=r"^fills: side 'hold'"):
        fifo_trades([{**FILLS[0], "side": "hold"}])
    with pytest.raises(ValueError, match=r"^rolling_window: must be >= 2"):
        tear_sheet(_curve(np.zeros(5)), [], [], rolling_window=1)
    with pytest.raises(ValueError, match=r"^equity: .* is not positive"):
        tear_sheet(_curve(np.array([0.1, -1.0, 0.1])), [], [])
    with pytest.raises(ValueError, match=r"^participation: must be in \(0, 1\]"):
        tear_sheet(_curve(np.zeros(5)), [], [], participation=0)


# --- a real backtest's ledger --------------------------------------------------------------------------------------

SYMBOLS = ["AAPL", "JPM", "XOM"]


@pytest.fixture(scope="module")
def backtest(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Any]:
    cfg = load_config(overrides={"data.symbols": SYMBOLS, "data.start": "2019-06-01", "data.end": "2020-09-30",
                                 "strategy.slow": 60})
    path: Path = tmp_path_factory.mktemp("tearsheet") / "ledger.db"
    summary, ledger = run_backtest(cfg, f"sqlite:///{path}")
    src = Sp500StocksSource(symbols=SYMBOLS, start=cfg.data.start, end=cfg.data.end)
    closes, volumes = _wide(src.table)
    return summary, ledger, (cfg, closes, volumes)


@pytest.mark.slow  # a short backtest first (a few seconds)
def test_backtest_ledger_conservation(backtest: tuple[Any, Any, Any]) -> None:
    summary, ledger, (cfg, closes, volumes) = backtest
    curve, fills, orders = ledger.equity_curve(), ledger.fills(), ledger.orders()
    positions = ledger.positions()
    account = ledger.account()
    assert len(fills) > 20
    sheet = tear_sheet(curve, fills, orders, closes=closes, volumes=volumes,
                       marks={p["symbol"]: p["mark"] for p in positions})
    # per-symbol P&L sums to the equity change, to rounding
    assert sheet.per_symbol["total"].sum() == pytest.approx(account["equity"] - cfg.initial_cash, abs=1e-6)
    # per symbol, FIFO realised + unrealised equals the ledger's average-cost realised + unrealised (open ones)
    for p in positions:
        fifo = sheet.per_symbol.loc[p["symbol"]]
        avg_cost = p["realized_pnl"] + p["qty"] * (p["mark"] - p["avg_price"])
        assert fifo["realized"] + fifo["unrealized"] == pytest.approx(avg_cost, rel=1e-9, abs=1e-6)
    # positions rebuilt from the fills, times the closes, are the booked market value at every step
    eqf = equity_frame(curve)
    pos = positions_over_time(fills, eqf.index)
    value = (pos * closes.reindex(eqf.index)[pos.columns]).sum(axis=1)
    assert np.allclose(value.to_numpy(), eqf["market_value"].to_numpy(), rtol=1e-9, atol=1e-6)
    # costs: fees as the account booked them; slippage = slippage_bps of the decision close's notional (market
    # orders fill at once at close * (1 +/- slippage))
    assert sheet.costs["fees"] == pytest.approx(account["fees"], rel=1e-12)
    notional_at_close = sum(f["qty"] * closes.loc[f["ts_ns"], f["symbol"]] for f in fills)
    assert sheet.costs["slippage"] == pytest.approx(cfg.broker.slippage_bps / 1e4 * notional_at_close, rel=1e-9)
    # the same Sharpe, drawdown and return as the run's own summary (metrics.summarize)
    assert sheet.stats["sharpe"] == pytest.approx(summary.sharpe, rel=1e-9)
    assert sheet.stats["max_drawdown"] == pytest.approx(summary.max_drawdown, rel=1e-9)
    assert sheet.stats["total_return"] == pytest.approx(summary.total_return, rel=1e-9)
    # close-only stocks have no volume: no capacity number, and the reason
    assert sheet.capacity["capacity"] is None and "volume unknown" in sheet.capacity["reason"]
    assert sheet.benchmark["available"] and sheet.benchmark["symbols"] == SYMBOLS
    gross = sheet.exposure["gross"].to_numpy()
    assert np.all(gross + 1e-12 >= np.abs(sheet.exposure["net"].to_numpy()))
