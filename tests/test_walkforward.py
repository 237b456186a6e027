"""Walk-forward optimisation: windows, selection in sample only, the stitched out-of-sample curve, and the
look-ahead guard (planted leaks are caught; honest strategies pass unchanged).

The end-to-end test walks the trend strategy forward over real daily closes (sp500_stocks) through the
vectorised engine (`tradesys.backtest.vectorized`: the trend weights and the venue's costs), and checks every
choice and every out-of-sample bar against direct runs of the same engine.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tradesys.backtest.metrics import sharpe_ratio
from tradesys.backtest.overfit import cscv_pbo, deflated_sharpe_of_trials
from tradesys.backtest.walkforward import (
    LookAheadError,
    PanelEvaluator,
    Window,
    check_lookahead,
    check_windows,
    config_evaluator,
    date_windows,
    grid_returns,
    rolling_windows,
    sharpe,
    walk_forward,
    walk_forward_configs,
)


# ---------------------------------------------------------------------------------------------------- windows
def test_rolling_windows_tile_the_out_of_sample_bars() -> None:
    ws = rolling_windows(1000, 200, 100)
    assert len(ws) == 8
    assert [w.index for w in ws] == list(range(8))
    assert all(w.is_len == 200 and w.oos_len == 100 and w.is_end == w.oos_start for w in ws)
    oos = np.concatenate([np.arange(w.oos_start, w.oos_end) for w in ws])
    np.testing.assert_array_equal(oos, np.arange(200, 1000))  # each bar after the first IS window once
    for w in ws:  # the in-sample bars never reach the window's own out-of-sample bars
        assert w.is_end <= w.oos_start and w.is_start >= 0


def test_gap_purges_bars_between_in_and_out_of_sample() -> None:
    ws = rolling_windows(1000, 200, 100, gap=5)
    assert len(ws) == 8 and ws[-1].oos_len == 95  # 7 full windows and a partial one of 95 bars
    for w in ws:
        assert w.gap == 5 and w.oos_start - w.is_end == 5 and w.is_len == 200
        gap_bars = set(range(w.is_end, w.oos_start))
        assert not gap_bars & set(range(w.is_start, w.is_end)) and not gap_bars & set(range(w.oos_start, w.oos_end))
    assert len(rolling_windows(1000, 200, 100, gap=5, partial=False)) == 7
    assert rolling_windows(1000, 200, 100, gap=5, partial=False)[-1].oos_end == 905


def test_anchored_windows_expand_from_the_start() -> None:
    ws = rolling_windows(1000, 200, 100, anchored=True, start=50)
    assert len(ws) == 8 and ws[-1].oos_len == 50  # 750 bars after the first IS window: 7 x 100 + 50
    assert all(w.is_start == 50 for w in ws)
    assert [w.is_len for w in ws] == [200 + 100 * k for k in range(8)]
    rolling = rolling_windows(1000, 200, 100, start=50)
    assert [(w.oos_start, w.oos_end) for w in rolling] == [(w.oos_start, w.oos_end) for w in ws]
    assert all(w.is_len == 200 for w in rolling)


def test_a_last_window_needs_two_bars() -> None:
    ws = rolling_windows(301, 200, 50)
    assert [w.oos_len for w in ws] == [50, 50]  # the single bar left over is not a window
    assert rolling_windows(302, 200, 50)[-1].oos_len == 2


def test_date_windows_follow_calendar_boundaries() -> None:
    dates = pd.bdate_range("2015-01-01", "2019-12-31")
    ws = date_windows(dates, "2Y", "6M", gap=3)
    assert len(ws) == 6  # 2017H1 .. 2019H2
    for k, w in enumerate(ws):
        boundary = pd.Timestamp("2017-01-01") + pd.DateOffset(months=6 * k)
        assert dates[w.oos_start] >= boundary > dates[w.oos_start - 1]
        assert dates[w.oos_end - 1] < boundary + pd.DateOffset(months=6)
        assert w.gap == 3
        assert dates[w.is_start] >= boundary - pd.DateOffset(years=2) > dates[w.is_start - 1] if w.is_start else True
    assert ws[-1].oos_end == len(dates)
    anchored = date_windows(dates, "2Y", "6M", anchored=True)
    assert all(w.is_start == 0 for w in anchored)
    assert [w.oos_start for w in anchored] == [w.oos_start for w in date_windows(dates, "2Y", "6M")]


def test_window_arguments_are_checked_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"^is_size: must be >= 2"):
        rolling_windows(100, 1, 10)
    with pytest.raises(ValueError, match=r"^oos_size: must be >= 1"):
        rolling_windows(100, 20, 0)
    with pytest.raises(ValueError, match=r"^gap: must be >= 0"):
        rolling_windows(100, 20, 10, gap=-1)
    with pytest.raises(ValueError, match=r"^n_obs: 100 bars leave no window"):
        rolling_windows(100, 90, 10, gap=9)
    with pytest.raises(ValueError, match=r"^is_size: must be an integer"):
        rolling_windows(100, 20.5, 10)  # type: ignore[arg-type]
    dates = pd.bdate_range("2015-01-01", "2016-12-31")
    with pytest.raises(ValueError, match=r"^is_span: expected a positive span such as"):
        date_windows(dates, "2X", "6M")
    with pytest.raises(ValueError, match=r"^oos_span: expected a positive span"):
        date_windows(dates, "1Y", "0M")
    with pytest.raises(ValueError, match=r"^dates: must be strictly increasing"):
        date_windows(dates[::-1], "1Y", "3M")
    with pytest.raises(ValueError, match=r"^dates: .* leave no window"):
        date_windows(dates, "5Y", "3M")
    with pytest.raises(ValueError, match=r"^windows\[1\]: out-of-sample start 15 overlaps"):
        check_windows([Window(0, 0, 10, 10, 20), Window(1, 5, 15, 15, 25)])
    with pytest.raises(ValueError, match=r"^windows\[0\]: need 0 <= is_start < is_end <= oos_start < oos_end"):
        check_windows([Window(0, 0, 12, 10, 20)])
    with pytest.raises(ValueError, match=r"^windows: empty"):
        check_windows([])


# ---------------------------------------------------------------------------------------------- walk_forward
def _regime_returns(n: int = 1200, seed: int = 4) -> np.ndarray:
    """Three trials: 0 earns in the first half, 1 in the second, 2 is noise."""
    rng = np.random.default_rng(seed)
    r = rng.normal(0.0, 0.01, size=(n, 3))
    r[: n // 2, 0] += 0.003
    r[n // 2 :, 1] += 0.003
    return r


def test_walk_forward_selects_in_sample_and_stitches_out_of_sample() -> None:
    r = _regime_returns()
    calls: list[tuple[int, int]] = []

    def evaluate(params: dict[str, Any], start: int, end: int) -> np.ndarray:
        calls.append((start, end))
        return r[start:end, params["col"]]

    grid = [{"col": 0}, {"col": 1}, {"col": 2}]
    ws = rolling_windows(len(r), 250, 100)
    res = walk_forward(evaluate, grid, ws)
    # the choice is the best in-sample Sharpe, computed here on the in-sample rows alone
    for w in ws:
        is_sharpes = [r[w.is_start : w.is_end, j].mean() / r[w.is_start : w.is_end, j].std(ddof=1) for j in range(3)]
        assert res.chosen_index[w.index] == int(np.argmax(is_sharpes))
        assert res.chosen[w.index] == grid[int(np.argmax(is_sharpes))]
    assert res.chosen_index[0] == 0 and res.chosen_index[-1] == 1  # it follows the regime change, late
    # the out-of-sample curve is the chosen trials' out-of-sample rows, nothing else
    expect = np.concatenate([r[w.oos_start : w.oos_end, res.chosen_index[w.index]] for w in ws])
    np.testing.assert_array_equal(res.oos_returns, expect)
    np.testing.assert_array_equal(res.oos_index, np.arange(250, len(r)))
    np.testing.assert_allclose(res.oos_equity, np.cumprod(1 + expect))
    assert res.oos_total_return == pytest.approx(res.oos_equity[-1] - 1.0)
    # the summary Sharpe equals the repository's equity-curve Sharpe on the same curve
    assert res.oos_sharpe == pytest.approx(sharpe_ratio(np.concatenate([[1.0], res.oos_equity]), 252.0), rel=1e-9)
    assert res.is_sharpe == pytest.approx(sharpe_ratio(np.concatenate([[1.0], res.is_equity]), 252.0), rel=1e-9)
    assert res.degradation == pytest.approx(res.is_sharpe - res.oos_sharpe)
    assert res.efficiency == pytest.approx(res.oos_sharpe / res.is_sharpe)
    assert res.is_sharpe > res.oos_sharpe  # selection bias: the regime switch costs out of sample
    # every in-sample call of window k ended at or before its out-of-sample start (the evaluator's own log)
    per_window = len(grid) + 1
    for w in ws:
        mine = calls[w.index * per_window : (w.index + 1) * per_window]
        assert all(end <= w.oos_start for _, end in mine[:-1])
        assert mine[-1] == (w.oos_start, w.oos_end)
    res.check_no_lookahead()
    assert res.summary()["windows"][0]["params"] == grid[0]


def test_ties_go_to_the_first_grid_entry_and_objectives_are_selectable() -> None:
    r = _regime_returns()
    flat = walk_forward(lambda p, s, e: np.zeros(e - s), [{"k": 1}, {"k": 2}], rolling_windows(600, 200, 100))
    assert (flat.chosen_index == 0).all() and flat.oos_sharpe == 0.0  # flat: Sharpe 0, not NaN
    res = walk_forward(lambda p, s, e: r[s:e, p["col"]], [{"col": 0}, {"col": 2}], rolling_windows(600, 200, 100),
                       objective="total_return")
    for w in res.windows:
        tot = [np.prod(1 + r[w.is_start : w.is_end, j]) for j in (0, 2)]
        assert res.chosen_index[w.index] == int(np.argmax(tot))


def test_walk_forward_refuses_bad_input_naming_the_field() -> None:
    r = _regime_returns()
    ws = rolling_windows(len(r), 250, 100)
    with pytest.raises(ValueError, match=r"^grid: expected a non-empty sequence"):
        walk_forward(lambda p, s, e: r[s:e, 0], [], ws)
    with pytest.raises(ValueError, match=r"^grid\[1\]: expected a mapping"):
        walk_forward(lambda p, s, e: r[s:e, 0], [{"a": 1}, 3], ws)  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"^objective: unknown 'sortino'"):
        walk_forward(lambda p, s, e: r[s:e, 0], [{}], ws, objective="sortino")
    with pytest.raises(ValueError, match=r"^evaluate: must return one return per bar of \[0, 250\) \(250 values\)"):
        walk_forward(lambda p, s, e: r[s : e - 1, 0], [{}], ws)
    bad = r.copy()
    bad[100, 0] = np.nan
    with pytest.raises(ValueError, match=r"^evaluate: non-finite return at bar 100"):
        walk_forward(lambda p, s, e: bad[s:e, 0], [{}], ws)
    with pytest.raises(ValueError, match=r"^periods_per_year: must be a positive number"):
        walk_forward(lambda p, s, e: r[s:e, 0], [{}], ws, periods_per_year=0)
    with pytest.raises(ValueError, match=r"^windows\[0\]: out-of-sample end 1250 is past the data \(1200 bars\)"):
        walk_forward(PanelEvaluator(lambda p, d, s, e: np.zeros(e - s), r), [{}], [Window(0, 0, 1000, 1000, 1250)])


# ------------------------------------------------------------------------------------------- look-ahead guard
def _prices(n: int = 900, seed: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100.0 * np.exp(np.cumsum(rng.normal(0.0002, 0.01, size=(n, 2)), axis=0))


def honest_momentum(params: dict[str, Any], data: np.ndarray, start: int, end: int) -> np.ndarray:
    """Long each asset whose trailing `lookback` return is positive, decided at the previous close."""
    lb = params["lookback"]
    rets = np.zeros(end - start)
    for t in range(max(start, lb + 1), end):
        signal = np.sign(data[t - 1] / data[t - 1 - lb] - 1.0)
        rets[t - start] = float(np.mean(signal * (data[t] / data[t - 1] - 1.0)))
    return rets


def leaky_forward_peek(params: dict[str, Any], data: np.ndarray, start: int, end: int) -> np.ndarray:
    """The planted leak: the position held over bar t is the sign of the return from t-1 to t-1+lookback, which
    for the last bars of a window reads closes after the window end."""
    lb = params["lookback"]
    rets = np.zeros(end - start)
    for t in range(max(start, 1), end):
        signal = np.sign(data[t - 1 + lb] / data[t - 1] - 1.0)
        rets[t - start] = float(np.mean(signal * (data[t] / data[t - 1] - 1.0)))
    return rets


def leaky_full_sample_scale(params: dict[str, Any], data: np.ndarray, start: int, end: int) -> np.ndarray:
    """A subtler leak: positions scaled by the volatility of every row it was handed (the whole data set)."""
    vol = float(np.std(np.diff(np.log(data), axis=0)))
    return honest_momentum(params, data, start, end) * 0.01 / vol


GRID = [{"lookback": 5}, {"lookback": 20}, {"lookback": 60}]


@pytest.mark.parametrize("guard", ["truncate", "perturb"])
def test_a_strategy_reading_bars_after_the_window_end_is_caught(guard: str) -> None:
    ev = PanelEvaluator(leaky_forward_peek, _prices(), guard=guard)  # type: ignore[arg-type]
    with pytest.raises(LookAheadError, match=r"lookback': 5.*\[100, 400\)"):
        walk_forward(ev, GRID, rolling_windows(ev.n_obs, 300, 100, start=100))
    # unguarded (and kept off the last rows, which it would read past), the same leak goes unnoticed and looks
    # like a superb strategy in and out of sample
    free = walk_forward(PanelEvaluator(leaky_forward_peek, _prices(), guard="none"), GRID,
                        rolling_windows(800, 300, 100, start=100))
    assert free.is_sharpe > 5.0 and free.oos_sharpe > 5.0


def test_a_full_sample_statistic_is_caught_by_perturbation_and_neutralised_by_truncation() -> None:
    ws = rolling_windows(900, 300, 100, start=100)
    with pytest.raises(LookAheadError, match=r"changed .* when the data from bar 400 on was scaled by 2"):
        walk_forward(PanelEvaluator(leaky_full_sample_scale, _prices(), guard="perturb"), GRID, ws)
    # truncated, the strategy can only compute its statistic on past rows: the walk-forward is honest again,
    # so its results equal a run where each call's rows end at the window end by hand
    truncated = walk_forward(PanelEvaluator(leaky_full_sample_scale, _prices(), guard="truncate"), GRID, ws)
    by_hand = walk_forward(lambda p, s, e: leaky_full_sample_scale(p, _prices()[:e], s, e), GRID, ws)
    np.testing.assert_array_equal(truncated.oos_returns, by_hand.oos_returns)


def test_an_honest_strategy_passes_every_guard_with_the_same_results() -> None:
    ws = rolling_windows(900, 300, 100, start=100, gap=2)
    results = [walk_forward(PanelEvaluator(honest_momentum, _prices(), guard=g), GRID, ws)  # type: ignore[arg-type]
               for g in ("none", "truncate", "perturb")]
    for other in results[1:]:
        np.testing.assert_array_equal(other.oos_returns, results[0].oos_returns)
        np.testing.assert_array_equal(other.chosen_index, results[0].chosen_index)
    results[0].check_no_lookahead()
    # returns data (signed) are also negated under perturbation: a leak on the sign of the next return is caught
    rets = np.diff(np.log(_prices()), axis=0)

    def sign_peek(p: dict[str, Any], d: np.ndarray, s: int, e: int) -> np.ndarray:
        nxt = np.sign(d[s + 1 : e + 1, 0])
        return np.abs(d[s:e, 0]) * 0 + nxt * 0.001

    with pytest.raises(LookAheadError, match="negated"):
        check_lookahead(sign_peek, np.abs(rets) * np.sign(rets), {}, 10, 50)


def test_panel_evaluator_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match=r"^guard: one of"):
        PanelEvaluator(honest_momentum, _prices(), guard="off")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^data: need at least 2 rows"):
        PanelEvaluator(honest_momentum, np.zeros((1, 2)))
    with pytest.raises(ValueError, match=r"^end: need 0 <= start < end <= 900"):
        PanelEvaluator(honest_momentum, _prices())({"lookback": 5}, 10, 901)
    data = _prices()
    ev = PanelEvaluator(honest_momentum, data)
    data[:] = 0.0  # the evaluator holds its own copy: changing the caller's array cannot leak into it
    assert np.isfinite(ev({"lookback": 5}, 100, 200)).all()
    with pytest.raises(ValueError, match="read-only"):
        ev.data[0, 0] = 1.0


def test_sharpe_objective_handles_degenerate_returns() -> None:
    assert sharpe(np.zeros(10)) == 0.0
    assert sharpe(np.full(10, 0.01)) == math.inf
    assert sharpe(np.array([0.01, -0.01, 0.02]), 252.0) == pytest.approx(
        np.mean([0.01, -0.01, 0.02]) / np.std([0.01, -0.01, 0.02], ddof=1) * math.sqrt(252)
    )


# --------------------------------------------------------------------------------- end to end on real data
@pytest.mark.slow
def test_trend_walk_forward_on_sp500_stocks() -> None:
    """The trend strategy (vectorised engine: its weights and the venue's costs) walked forward over 4 stocks,
    2012-2018, on a fast/slow grid: choices from in-sample runs only, the out-of-sample curve from the
    out-of-sample runs only, each checked against a direct run of the engine."""
    from tradesys.backtest.costs import CostModel, SizingLimits
    from tradesys.backtest.vectorized import BarArrays, bars_from_config, simulate, trend_target_weights
    from tradesys.config import TradesysConfig

    cfg = TradesysConfig.model_validate(
        {"data": {"source": "sp500_stocks", "symbols": ["AAPL", "JPM", "XOM", "KO"],
                  "start": "2012-01-01", "end": "2018-12-31"}}
    )
    bars, n_symbols, bpy = bars_from_config(cfg)
    costs = CostModel.from_config(cfg.broker)
    sizing = SizingLimits.from_config(cfg.strategy.rebalance_band, cfg.risk)
    panel = np.stack([bars.open, bars.close, bars.volume], axis=1)  # bars x (open, close, volume) x symbols
    seen: list[tuple[int, int, int]] = []

    def trend(params: dict[str, Any], data: np.ndarray, start: int, end: int) -> np.ndarray:
        """Weights from every row it is given (a whole-array computation), booked from a flat book at `start`."""
        seen.append((start, end, data.shape[0]))
        scfg = cfg.strategy.model_copy(update=params)
        close = data[:, 1]
        valid = np.isfinite(close) & (close > 0)
        w = trend_target_weights(close, scfg, bpy, cfg.risk, n_symbols, valid)
        part = BarArrays(bars.ts_ns[start:end], bars.symbols, data[start:end, 0], data[start:end, 1],
                         data[start:end, 1], data[start:end, 1], data[start:end, 2], valid[start:end])
        eq = simulate(part, w[start:end], costs, sizing, cfg.initial_cash, record=False).equity[0]
        return eq / np.concatenate([[cfg.initial_cash], eq[:-1]]) - 1.0

    grid = [{"fast": f, "slow": s} for f in (10, 30) for s in (60, 120)]
    ws = rolling_windows(len(bars.ts_ns), 504, 126, start=120, partial=False)  # 2 years in, half a year out
    res = walk_forward(PanelEvaluator(trend, panel, guard="truncate"), grid, ws, periods_per_year=bpy)
    assert len(ws) == 9 and len(res.chosen) == 9
    # no look-ahead: each call saw exactly the rows before its end, and selections ended before their OOS start
    assert all(rows == end for _, end, rows in seen)
    for w in ws:
        assert all(end <= w.oos_start for start, end, _ in seen if start == w.is_start and end == w.is_end)
    res.check_no_lookahead()
    # choices and the stitched curve against direct engine runs over the full data (whole-array weights)
    direct = PanelEvaluator(trend, panel, guard="none")
    for w in ws:
        is_sharpes = [sharpe(direct(p, w.is_start, w.is_end), bpy) for p in grid]
        assert res.chosen_index[w.index] == int(np.argmax(is_sharpes))
        oos = res.oos_returns[(res.oos_index >= w.oos_start) & (res.oos_index < w.oos_end)]
        np.testing.assert_array_equal(oos, direct(res.chosen[w.index], w.oos_start, w.oos_end))
    assert len(bars.ts_ns) == 1760
    np.testing.assert_array_equal(res.oos_index, np.arange(624, 624 + 9 * 126))
    # the same walk-forward under the perturbation audit: the trend engine is causal, nothing changes
    audited = walk_forward(PanelEvaluator(trend, panel, guard="perturb"), grid, ws, periods_per_year=bpy)
    np.testing.assert_array_equal(audited.oos_returns, res.oos_returns)
    summary = res.summary(bars.ts_ns)
    assert len(summary["windows"]) == 9 and math.isfinite(summary["oos_sharpe"])
    assert summary["windows"][0]["oos_dates"][0] == str(pd.Timestamp(bars.ts_ns[624]).date())
    assert json.loads(json.dumps(summary)) == summary

    # the configuration-level entry point (what `tradesys backtest walkforward` calls) gives the same walk
    configs = [cfg.model_copy(update={"strategy": cfg.strategy.model_copy(update=p)}) for p in grid]
    labels = [{f"strategy.{k}": v for k, v in p.items()} for p in grid]
    by_config, stamps = walk_forward_configs(configs, labels, is_bars=504, oos_bars=126, start=120, partial=False,
                                             bars=bars)
    np.testing.assert_array_equal(by_config.chosen_index, res.chosen_index)
    np.testing.assert_array_equal(by_config.oos_returns, res.oos_returns)
    assert by_config.chosen[0] == {"trial": int(res.chosen_index[0]), **labels[int(res.chosen_index[0])]}
    np.testing.assert_array_equal(stamps, bars.ts_ns)
    # and the same sweep's trial matrix gives the overfitting statistics over the out-of-sample span
    trials = grid_returns(config_evaluator(configs, bars, n_symbols, bpy), by_config.grid, 624, 1758)
    assert trials.shape == (1134, 4)
    pbo = cscv_pbo(trials, 8)
    assert 0.0 <= pbo.pbo <= 1.0 and pbo.n_combinations == 70
    assert 0.0 <= deflated_sharpe_of_trials(trials).dsr <= 1.0


def _synthetic_bars(n: int = 400, symbols: int = 3) -> Any:
    from tradesys.backtest.vectorized import BarArrays

    close = _prices(n, seed=21)[:, :1] * np.ones((1, symbols)) * np.linspace(1.0, 1.5, symbols)
    ts = pd.bdate_range("2020-01-01", periods=n).asi8
    return BarArrays(ts, tuple(f"S{j}" for j in range(symbols)), close, close, close, close,
                     np.full(close.shape, np.nan), np.ones(close.shape, dtype=bool))


@pytest.mark.slow  # ~10 s alone: the first import of the numba engine
def test_walk_forward_configs_checks_its_arguments_and_takes_calendar_windows() -> None:
    from tradesys.config import TradesysConfig

    bars = _synthetic_bars()
    base = TradesysConfig()
    configs = [base.model_copy(update={"strategy": base.strategy.model_copy(update={"fast": f, "slow": 40})})
               for f in (5, 10)]
    res, stamps = walk_forward_configs(configs, is_span="6M", oos_span="3M", bars=bars)
    assert len(res.windows) >= 3 and [c["trial"] for c in res.chosen] == res.chosen_index.tolist()
    assert pd.Timestamp(stamps[res.windows[0].oos_start]) >= pd.Timestamp("2020-07-01")
    with pytest.raises(ValueError, match=r"^is_span: give the windows either as spans"):
        walk_forward_configs(configs, is_span="6M", oos_span="3M", is_bars=100, oos_bars=50, bars=bars)
    with pytest.raises(ValueError, match=r"^oos_span: needed with is_span"):
        walk_forward_configs(configs, is_span="6M", oos_bars=50, bars=bars)
    with pytest.raises(ValueError, match=r"^labels: need one per config \(2\), got 1"):
        walk_forward_configs(configs, [{"strategy.fast": 5}], is_bars=100, oos_bars=50, bars=bars)
    with pytest.raises(ValueError, match=r"^configs: empty"):
        walk_forward_configs([], is_bars=100, oos_bars=50, bars=bars)
    other = base.model_copy(update={"data": base.data.model_copy(update={"symbols": ["AAPL"]})})
    with pytest.raises(ValueError, match=r"^configs\[1\]: its data section differs"):
        walk_forward_configs([configs[0], other], is_bars=100, oos_bars=50, bars=bars)
    with pytest.raises(ValueError, match=r"^grid: entry \{'trial': 7\} needs 'trial'"):
        config_evaluator(configs, bars, 3, 252.0)({"trial": 7}, 100, 200)
