"""VaR backtests against published values, hand computations and simulated data with a known exception rate.

References: MathWorks' documented Kupiec example (``varbacktest``: 1043 days, 57 exceptions at 95% give
LR 0.46147, p 0.49694); a hand count of transitions and the likelihood ratio written out with math.log; the chi2
survival function in closed form (df 1: erfc(sqrt(x/2)); df 2: exp(-x/2)); the Basel Committee's traffic light
table (250 days at 99%: 0-4 green, 5-9 yellow with plus factors .40-.85, 10+ red); simulated exceptions from a
known model; the S&P 500 (arch.data) for the rolling report.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tradesys.quant.risk import (
    basel_traffic_light,
    christoffersen_independence,
    conditional_coverage,
    estimate_var,
    kupiec_pof,
    plot_var_backtest,
    rolling_var_backtest,
    transition_counts,
)


def test_kupiec_mathworks_example() -> None:
    t = kupiec_pof(1043, 57, 0.95)
    assert t.statistic == pytest.approx(0.46147, abs=5e-6)
    assert t.p_value == pytest.approx(0.49694, abs=5e-6)
    assert not t.reject(0.05)
    assert t.p_value == pytest.approx(math.erfc(math.sqrt(t.statistic / 2)), rel=1e-12)


def test_kupiec_edge_cases() -> None:
    zero = kupiec_pof(250, 0, 0.99)
    assert zero.statistic == pytest.approx(-2 * 250 * math.log(0.99), rel=1e-12)
    assert kupiec_pof(250, 250, 0.99).statistic == pytest.approx(-2 * 250 * math.log(0.01), rel=1e-12)
    assert kupiec_pof(1000, 10, 0.99).statistic == pytest.approx(0.0, abs=1e-12)  # exactly as expected
    with pytest.raises(ValueError, match=r"^n_exceptions: "):
        kupiec_pof(100, 101, 0.99)


def test_christoffersen_hand_computation() -> None:
    seq = [0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 1, 0]
    # transitions (yesterday, today): 00 x4, 01 x3, 10 x3, 11 x1
    assert transition_counts(seq) == {"n00": 4, "n01": 3, "n10": 3, "n11": 1}
    ll0 = 7 * math.log(7 / 11) + 4 * math.log(4 / 11)
    ll1 = 4 * math.log(4 / 7) + 3 * math.log(3 / 7) + 3 * math.log(3 / 4) + 1 * math.log(1 / 4)
    lr_ind = -2 * (ll0 - ll1)
    ind = christoffersen_independence(np.array(seq, dtype=bool))
    assert ind.statistic == pytest.approx(lr_ind, rel=1e-12)
    assert ind.p_value == pytest.approx(math.erfc(math.sqrt(lr_ind / 2)), rel=1e-12)
    assert (ind.details["pi01"], ind.details["pi11"]) == pytest.approx((3 / 7, 1 / 4))
    # conditional coverage at 95%: POF on all 12 days (4 exceptions) + independence, chi2(2)
    lr_pof = -2 * (8 * math.log(0.95) + 4 * math.log(0.05) - 8 * math.log(8 / 12) - 4 * math.log(4 / 12))
    cc = conditional_coverage(seq, 0.95)
    assert cc.statistic == pytest.approx(lr_pof + lr_ind, rel=1e-12)
    assert cc.p_value == pytest.approx(math.exp(-(lr_pof + lr_ind) / 2), rel=1e-12)
    assert cc.df == 2
    # no exception after an exception ever: pi11 = 0 contributes 0 ln 0 = 0
    assert math.isfinite(christoffersen_independence([0, 1, 0, 0, 1, 0, 0, 0]).statistic)


def test_basel_traffic_light_table() -> None:
    plus = {5: 0.40, 6: 0.50, 7: 0.65, 8: 0.75, 9: 0.85}
    for x in range(0, 16):
        tl = basel_traffic_light(x, 250, 0.99)
        zone = "green" if x <= 4 else ("yellow" if x <= 9 else "red")
        assert tl.zone == zone, x
        assert tl.plus_factor == (0.0 if x <= 4 else plus.get(x, 1.0))
        assert tl.multiplier == pytest.approx(3.0 + tl.plus_factor)
        assert tl.cumulative_probability == pytest.approx(stats.binom.cdf(x, 250, 0.01))
    # Basel's published cumulative probabilities: 4 -> 89.22%, 5 -> 95.88%, 9 -> 99.97%, 10 -> 99.99%
    assert round(100 * basel_traffic_light(4).cumulative_probability, 2) == 89.22
    assert round(100 * basel_traffic_light(5).cumulative_probability, 2) == 95.88
    assert round(100 * basel_traffic_light(9).cumulative_probability, 2) == 99.97
    assert round(100 * basel_traffic_light(10).cumulative_probability, 2) == 99.99
    # other samples: zones from the same binomial rule, no plus factor table
    other = basel_traffic_light(30, 1000, 0.99)
    assert other.zone == "red" and other.plus_factor is None


def test_coverage_tests_on_simulated_data() -> None:
    """Normal returns, 1,000 days x 400 paths. VaR = the true 99% quantile: Kupiec rejects at about its 5% size
    (exactly: the binomial size of the test); VaR = the 97.5% quantile (too small): rejected almost always."""
    rng = np.random.default_rng(42)
    T, paths, sigma = 1000, 400, 0.012
    r = rng.standard_normal((paths, T)) * sigma
    good = -r > stats.norm.ppf(0.99) * sigma
    bad = -r > stats.norm.ppf(0.975) * sigma
    rej_good = np.mean([kupiec_pof(T, int(x.sum()), 0.99).reject(0.05) for x in good])
    rej_bad = np.mean([kupiec_pof(T, int(x.sum()), 0.99).reject(0.05) for x in bad])
    xs = np.arange(T + 1)
    size = stats.binom.pmf(xs, T, 0.01)[[kupiec_pof(T, int(x), 0.99).reject(0.05) for x in xs]].sum()
    assert 0.02 < size < 0.09
    assert abs(rej_good - size) < 3 * math.sqrt(size * (1 - size) / paths)
    assert rej_bad > 0.9
    cc_good = np.mean([conditional_coverage(x, 0.99).reject(0.05) for x in good])
    cc_bad = np.mean([conditional_coverage(x, 0.99).reject(0.05) for x in bad])
    assert cc_good < 0.1 and cc_bad > 0.85
    # clustered exceptions at the right average rate: a Markov chain with P(1|1) = 0.3, P(1|0) chosen so the
    # stationary rate is 1%: Kupiec cannot see it, the independence test does
    p11 = 0.3
    p01 = 0.01 * (1 - p11) / 0.99
    hits = np.zeros((paths, T), dtype=bool)
    u = rng.random((paths, T))
    for t in range(1, T):
        hits[:, t] = u[:, t] < np.where(hits[:, t - 1], p11, p01)
    ind_rej = np.mean([christoffersen_independence(h).reject(0.05) for h in hits])
    pof_rej = np.mean([kupiec_pof(T, int(h.sum()), 0.99).reject(0.05) for h in hits])
    assert ind_rej > 0.6 and pof_rej < ind_rej


@pytest.fixture(scope="module")
def sp500() -> pd.Series:
    from arch.data import sp500 as data

    return data.load()["Adj Close"].pct_change().dropna()


def test_rolling_historical_report_on_sp500(sp500: pd.Series, tmp_path: object) -> None:
    rep = rolling_var_backtest(sp500, method="historical", alpha=0.99, window=500)
    f = rep.frame
    assert len(f) == len(sp500) - 500 and f.index[0] == sp500.index[500]
    assert list(f.columns) == ["pnl", "loss", "var", "es", "exception"]
    # forecasts use only the previous 500 days: recompute a few with numpy
    for k in (0, 1234, len(f) - 1):
        window = sp500.to_numpy()[k : k + 500]
        assert f["var"].iloc[k] == np.quantile(-window, 0.99, method="inverted_cdf")
    assert (f["exception"] == (f["loss"] > f["var"])).all() and (f["es"] >= f["var"]).all()
    s = rep.summary()
    assert s["n_exceptions"] == rep.kupiec.details["n_exceptions"] == int(f["exception"].sum())
    assert rep.kupiec.statistic == kupiec_pof(len(f), s["n_exceptions"], 0.99).statistic
    assert rep.traffic_light.n_obs == 250
    assert rep.traffic_light.n_exceptions == int(f["exception"].iloc[-250:].sum())
    # 1999-2018 includes 2000-02 and 2008: plain historical simulation has too many, clustered exceptions
    assert s["n_exceptions"] > 1.4 * s["expected_exceptions"]
    assert rep.kupiec.p_value < 0.01 and rep.independence.p_value < 0.01
    png = plot_var_backtest(rep, f"{tmp_path}/hs.png", title="S&P 500, historical 99%")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_rolling_fhs_on_sp500_beats_historical(sp500: pd.Series) -> None:
    """2005-2012 (the 2008 crisis inside): FHS exceptions are fewer and less clustered than historical's."""
    r = sp500.loc["2003-01-01":"2012-12-31"]
    hs = rolling_var_backtest(r, method="historical", alpha=0.99, window=500)
    fhs = rolling_var_backtest(r, method="fhs", alpha=0.99, window=500, refit_every=50)
    assert fhs.frame.index.equals(hs.frame.index)
    assert fhs.n_exceptions < hs.n_exceptions
    assert fhs.conditional_coverage.statistic < hs.conditional_coverage.statistic
    assert not fhs.kupiec.reject(0.01)
    # on a refit day the report is exactly the FHS estimate from that window
    direct = estimate_var(r.iloc[:500], [1.0], method="fhs", alpha=0.99)
    assert fhs.frame["var"].iloc[0] == pytest.approx(direct.var, rel=1e-6)


def test_rolling_report_validation(sp500: pd.Series) -> None:
    two = pd.concat([sp500, sp500], axis=1).iloc[:700]
    with pytest.raises(ValueError, match=r"^weights: required for 2 assets"):
        rolling_var_backtest(two)
    with pytest.raises(ValueError, match=r"^window: must be in"):
        rolling_var_backtest(sp500.iloc[:400], window=500)
    with pytest.raises(ValueError, match=r"^method: must be one of"):
        rolling_var_backtest(sp500, method="nope")
    rep = rolling_var_backtest(two, [0.5, 0.5], method="normal", window=250, start="2001-06-01", value=1e6)
    assert rep.frame.index[0] >= pd.Timestamp("2001-06-01")
    assert rep.frame["pnl"].iloc[0] == pytest.approx(1e6 * two.loc[rep.frame.index[0]].sum() * 0.5)


def test_ewma_backtest_with_a_window_shorter_than_one_ewma_window_names_the_window() -> None:
    """The per-day estimate refuses an EWMA from too few rows; the backtest says so up front, naming `window`."""
    import numpy as np

    from tradesys.quant.risk.backtest import rolling_var_backtest

    r = np.random.default_rng(0).normal(0, 0.01, 200)
    with pytest.raises(ValueError, match=r"^window: an EWMA estimate needs at least 17 rows"):
        rolling_var_backtest(r, window=10, method="ewma")
    assert rolling_var_backtest(r, window=17, method="ewma").n_obs == 183
