"""Stress tests against closed forms, published values and the raw data sets they replay.

References: the minimal-Mahalanobis breaching shock of a linear book, x* = -L Sigma w / (w' Sigma w) at distance
L / sqrt(w' Sigma w); the smallest uniform move of a linear book, -L / sum(w beta); Higham (2002), "Computing the
nearest correlation matrix - a problem from finance", IMA J. Numer. Anal. 22: the nearest correlation matrix to
[[1,1,0],[1,1,1],[0,1,1]] has off-diagonals 0.7607 and 0.1573; perfectly correlated normal VaR equals the sum of
the standalone VaRs; the historical windows recomputed from skfolio's and arch's raw series here in the test.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tradesys.quant.risk.book import LinearPosition, OptionPosition, RiskBook, greeks, scenario_pnl
from tradesys.quant.risk.stress import (
    HISTORICAL_SCENARIOS,
    HYPOTHETICAL_SHOCKS,
    FactorShock,
    MarketHistory,
    apply_factor_shock,
    correlation_stress,
    estimate_betas,
    load_market_history,
    nearest_correlation,
    reverse_stress_mahalanobis,
    reverse_stress_uniform,
    run_historical,
    scenario_returns,
    shock_correlation,
)

STOCKS = ["AAPL", "JPM", "XOM", "PG", "MSFT"]


@pytest.fixture(scope="module")
def history() -> MarketHistory:
    return load_market_history()


@pytest.fixture(scope="module")
def cov(history: MarketHistory) -> np.ndarray:
    return history.daily.loc["2015":"2019", STOCKS].dropna().cov().to_numpy()


def linear_book(symbols: list[str], q: np.ndarray, p: np.ndarray) -> RiskBook:
    return RiskBook.build([LinearPosition(s, float(a), float(b)) for s, a, b in zip(symbols, q, p, strict=True)])


# -------------------------------------------------------------------------------------------------- reverse


def test_reverse_mahalanobis_linear_book_closed_form(cov: np.ndarray) -> None:
    q = np.array([100.0, -50.0, 80.0, 120.0, 60.0])
    p = np.array([150.0, 140.0, 90.0, 130.0, 300.0])
    book = linear_book(STOCKS, q, p)
    w = q * p
    L = 25_000.0
    res = reverse_stress_mahalanobis(book, cov, L)
    x_star = -L * cov @ w / (w @ cov @ w)
    x = np.array([res.shocks["spot_return"][s] for s in STOCKS])
    np.testing.assert_allclose(x, x_star, rtol=1e-6, atol=1e-9)
    d = L / math.sqrt(w @ cov @ w)
    assert res.details["mahalanobis"] == pytest.approx(d, rel=1e-6)
    assert res.details["linear_mahalanobis"] == pytest.approx(d, rel=1e-12)
    assert res.pnl == pytest.approx(-L, rel=1e-6)
    assert res.details["found"]
    assert res.details["chi2_tail_prob"] == pytest.approx(stats.chi2.sf(d * d, df=5), rel=1e-5)
    json.dumps(res.to_dict())


def test_reverse_mahalanobis_option_book_is_a_constrained_minimum(cov: np.ndarray) -> None:
    # short puts: losses accelerate on the way down, so less than the delta-predicted move breaches
    opts = [
        OptionPosition(s, 0.95 * S, 0.25, False, -20, 0.3, multiplier=100)
        for s, S in zip(STOCKS, [150.0, 140.0, 90.0, 130.0, 300.0], strict=True)
    ]
    book = RiskBook.build([], opts, spots=dict(zip(STOCKS, [150.0, 140.0, 90.0, 130.0, 300.0], strict=True)), rate=0.03)
    L = 60_000.0
    res = reverse_stress_mahalanobis(book, cov, L)
    assert res.details["found"]
    assert res.pnl == pytest.approx(-L, rel=1e-5)
    x = np.array([res.shocks["spot_return"][s] for s in STOCKS])
    # KKT: Sigma^-1 x points straight down the P&L gradient at x (gradient by central differences)
    h = 1e-6
    grad = (scenario_pnl(book, x + h * np.eye(5)) - scenario_pnl(book, x - h * np.eye(5))) / (2 * h)
    a = np.linalg.solve(cov, x)
    cos = a @ grad / (np.linalg.norm(a) * np.linalg.norm(grad))
    assert cos == pytest.approx(-1.0, abs=1e-6)
    assert res.details["mahalanobis"] < res.details["linear_mahalanobis"]
    # no shock closer in Mahalanobis distance breaches: scaled-down versions of x* all lose less than L
    for s in (0.9, 0.97, 0.995):
        assert scenario_pnl(book, s * x)[0] > -L


def test_reverse_uniform_move(cov: np.ndarray) -> None:
    q = np.array([100.0, -50.0, 80.0, 120.0, 60.0])
    p = np.array([150.0, 140.0, 90.0, 130.0, 300.0])
    betas = dict(zip(STOCKS, [1.2, 1.1, 0.8, 0.5, 1.0], strict=True))
    book = linear_book(STOCKS, q, p)
    L = 10_000.0
    res = reverse_stress_uniform(book, L, betas=betas)
    b = np.array([betas[s] for s in STOCKS])
    assert res.shocks["uniform_move"] == pytest.approx(-L / float((q * p) @ b), rel=1e-9)
    assert res.pnl == pytest.approx(-L, rel=1e-9)
    assert res.details["up_move"] is None  # a net long linear book cannot lose on the way up
    # a long straddle never loses more than its premium: not found
    legs = [OptionPosition("X", 100, 0.5, True, 1, 0.2), OptionPosition("X", 100, 0.5, False, 1, 0.2)]
    strad = RiskBook.build([], legs, spots={"X": 100.0})
    miss = reverse_stress_uniform(strad, 1e6)
    assert not miss.details["found"]
    # a short straddle loses both ways: the nearer breach wins, and nothing smaller breaches
    short = RiskBook.build(
        [],
        [
            OptionPosition("X", 100, 0.5, True, -10, 0.2, multiplier=100),
            OptionPosition("X", 100, 0.5, False, -10, 0.2, multiplier=100),
        ],
        spots={"X": 100.0},
    )
    r = reverse_stress_uniform(short, 15_000.0)
    m = r.shocks["uniform_move"]
    assert r.details["down_move"] < 0 < r.details["up_move"]
    assert abs(m) == min(abs(r.details["down_move"]), abs(r.details["up_move"]))
    grid = np.linspace(-abs(m), abs(m), 201)[1:-1]
    assert np.all(scenario_pnl(short, grid[:, None]) > -15_000.0)


# ---------------------------------------------------------------------------------------------- correlation


def test_nearest_correlation_reproduces_higham_2002() -> None:
    a = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 1.0]])
    x = nearest_correlation(a)
    np.testing.assert_allclose(np.round(x, 4), [[1, 0.7607, 0.1573], [0.7607, 1, 0.7607], [0.1573, 0.7607, 1]])
    assert np.linalg.eigvalsh(x)[0] > -1e-12
    good = np.array([[1.0, 0.3], [0.3, 1.0]])
    np.testing.assert_array_equal(nearest_correlation(good), good)


def test_shock_correlation_stays_a_correlation_matrix(history: MarketHistory) -> None:
    corr = history.daily.loc["2015":"2019", STOCKS].dropna().corr().to_numpy()
    full, repaired = shock_correlation(corr, 0.6)
    assert not repaired  # a convex blend with the all-ones matrix stays PSD
    off = ~np.eye(5, dtype=bool)
    np.testing.assert_allclose(full[off], corr[off] + 0.6 * (1 - corr[off]))
    # a block of strongly negatively correlated assets forced to +1 against the rest breaks PSD: Higham repairs it
    c = np.array([[1.0, -0.9, -0.9, 0.0], [-0.9, 1.0, 0.8, 0.0], [-0.9, 0.8, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    out, repaired = shock_correlation(c, 1.0, assets=[0, 1])
    assert repaired
    assert np.linalg.eigvalsh(out)[0] > -1e-10
    np.testing.assert_allclose(np.diag(out), 1.0)
    assert out[0, 1] > 0.3  # the stressed pair moved toward +1 ...
    np.testing.assert_allclose(out, out.T)


def test_correlation_breakdown_var_bounds(cov: np.ndarray) -> None:
    e = np.array([1e5, 2e5, 5e4, 1.5e5, 1e5])  # long-only dollar exposures
    z = stats.norm.ppf(0.99)
    sd = np.sqrt(np.diag(cov))
    base = correlation_stress(e, cov, lam=0.0, symbols=STOCKS)
    assert base.details["var_before"] == pytest.approx(z * math.sqrt(e @ cov @ e), rel=1e-12)
    assert base.details["var_after"] == pytest.approx(base.details["var_before"], rel=1e-12)
    perfect = correlation_stress(e, cov, lam=1.0, symbols=STOCKS)
    assert perfect.details["var_after"] == pytest.approx(z * float(np.sum(e * sd)), rel=1e-10)  # sum of standalone
    half = correlation_stress(e, cov, lam=0.5, symbols=STOCKS)
    assert base.details["var_after"] < half.details["var_after"] < perfect.details["var_after"]
    assert sum(half.pnl_by_symbol.values()) == pytest.approx(half.pnl, rel=1e-10)  # Euler components add up
    # from a book: its dollar deltas are the exposures
    book = linear_book(STOCKS, e / 100.0, np.full(5, 100.0))
    via_book = correlation_stress(greeks(book)["dollar_delta"], cov, lam=0.5)
    assert via_book.pnl == pytest.approx(half.pnl, rel=1e-12)
    json.dumps(half.to_dict())


# ------------------------------------------------------------------------------------------------ historical


def _index_closes() -> pd.Series:
    from skfolio.datasets import load_sp500_index

    return load_sp500_index()["SP500"]


@pytest.mark.parametrize(
    "name,first_close,last_close,expected",
    [
        ("gfc_2008", "2008-08-29", "2008-11-28", None),
        ("flash_crash_2010", "2010-05-05", "2010-05-06", -0.0324),
        ("covid_2020", "2020-02-19", "2020-03-23", -0.339),
    ],
)
def test_daily_scenarios_replay_the_index_closes(
    history: MarketHistory, name: str, first_close: str, last_close: str, expected: float | None
) -> None:
    closes = _index_closes()
    move = closes.loc[last_close] / closes.loc[first_close] - 1.0
    if expected is not None:
        assert move == pytest.approx(expected, abs=5e-4)
    book = RiskBook.build([LinearPosition("SP500", 10, 4000.0), LinearPosition("ZZZ", -100, 50.0)])
    res = run_historical(book, name, history)
    assert res.shocks["spot_return"]["SP500"] == pytest.approx(move, rel=1e-10)
    assert res.shocks["spot_return"]["ZZZ"] == pytest.approx(move, rel=1e-10)  # beta 1 to the index by default
    assert "default" in res.details["mapping"]["ZZZ"]
    assert res.pnl == pytest.approx(40_000 * move - 5_000 * move, rel=1e-10)
    daily = closes.loc[first_close:last_close].pct_change().dropna()
    assert res.details["n_periods"] == len(daily)
    worst = daily.idxmin().strftime("%Y-%m-%d")  # the net long book's worst day is the index's worst day
    assert res.details["worst_period"] == worst
    assert res.details["worst_period_pnl"] == pytest.approx(35_000 * daily.min(), rel=1e-10)
    assert res.details["frequency"] == "daily"
    json.dumps(res.to_dict())


def test_black_monday_uses_the_monthly_market_factor_and_daily_wti(history: MarketHistory) -> None:
    import arch.data.frenchdata
    import arch.data.wti

    ff = arch.data.frenchdata.load()
    labels = pd.Index(ff.index.asi8)
    oct87 = ff.loc[ff.index[labels == 198710][0]]
    market = (oct87["Mkt-RF"] + oct87["RF"]) / 100.0
    assert market == pytest.approx(-0.2264, abs=1e-12)
    wti = arch.data.wti.load()["DCOILWTICO"].dropna()
    wti_move = wti.loc[:"1987-10-31"].iloc[-1] / wti.loc[:"1987-09-30"].iloc[-1] - 1.0
    book = RiskBook.build(
        [
            LinearPosition("SP500", 1, 100.0),
            LinearPosition("WTI", 1, 100.0),
            LinearPosition("AAPL", 1, 100.0),
            LinearPosition("NEW", 1, 100.0),
        ]
    )
    res = run_historical(book, "black_monday_1987", history, betas={"NEW": 2.0})
    sr = res.shocks["spot_return"]
    assert sr["SP500"] == pytest.approx(market, rel=1e-12)
    assert sr["WTI"] == pytest.approx(wti_move, rel=1e-10)
    assert sr["NEW"] == pytest.approx(2.0 * market, rel=1e-12)
    beta_aapl = estimate_betas(history, ["AAPL"])["AAPL"]
    assert sr["AAPL"] == pytest.approx(beta_aapl * market, rel=1e-12)
    assert res.details["frequency"] == "monthly" and res.details["n_periods"] == 1
    assert "MARKET" in res.details["mapping"]["AAPL"] and "own series" in res.details["mapping"]["WTI"]
    assert res.shocks["vol_points"]["SP500"] == 0.0  # no daily data: no realized-vol proxy
    assert "19 Oct" in HISTORICAL_SCENARIOS["black_monday_1987"].data_note


def test_estimated_beta_is_ols(history: MarketHistory) -> None:
    both = history.daily[["JPM", "SP500"]].dropna()
    slope = np.polyfit(both["SP500"], both["JPM"], 1)[0]
    assert estimate_betas(history, ["JPM"])["JPM"] == pytest.approx(slope, rel=1e-10)


def test_mapping_proxies_and_vol_shift(history: MarketHistory) -> None:
    frame, mapping = scenario_returns("gfc_2008", ["AAPL", "TECH"], history, proxies={"TECH": "NASDAQ"})
    np.testing.assert_array_equal(frame["TECH"].to_numpy(), history.daily.loc[frame.index, "NASDAQ"].to_numpy())
    assert mapping["TECH"].startswith("proxy NASDAQ")
    with pytest.raises(ValueError, match=r"^proxies\['TECH'\]: 'NASDAQ' has no data"):
        scenario_returns("covid_2020", ["TECH"], history, proxies={"TECH": "NASDAQ"})  # arch's ends in 2018
    # COVID: realized vol of the index went from ~12% to ~90%: a large positive vol shift in points
    opt_book = RiskBook.build(
        [], [OptionPosition("SP500", 3300.0, 0.25, False, 1, 0.15, multiplier=100)], spots={"SP500": 3380.0}
    )
    res = run_historical(opt_book, "covid_2020", history)
    assert 50 < res.shocks["vol_points"]["SP500"] < 100
    flat = run_historical(opt_book, "covid_2020", history, vol_shift=None)
    assert res.pnl > flat.pnl > 0  # a long put gains from the fall and more with the vol
    given = run_historical(opt_book, "covid_2020", history, vol_shift={"SP500": 20.0})
    assert flat.pnl < given.pnl < res.pnl
    fc = run_historical(opt_book, "flash_crash_2010", history)
    assert fc.shocks["vol_points"]["SP500"] == 0.0 and "too short" in fc.details["vol_shift"]


# ---------------------------------------------------------------------------------------------- hypothetical


def test_factor_shocks_on_linear_positions() -> None:
    book = RiskBook.build(
        [
            LinearPosition("AAA", 100, 50.0),
            LinearPosition("BBB", -20, 100.0),
            LinearPosition("BOND", 1000, 95.0, rate_duration=7.0, spread_duration=6.5),
            LinearPosition("SAP", 10, 120.0),
        ],
        currencies={"SAP": "EUR"},
        fx_to_base={"EUR": 1.08},
    )
    crash = apply_factor_shock(book, FactorShock(equity_pct=-20.0, betas={"AAA": 1.5, "BOND": 0.0}))
    expected = -0.2 * (100 * 50 * 1.5 - 20 * 100 * 1.0 + 10 * 120 * 1.08)
    assert crash.pnl == pytest.approx(expected, rel=1e-12)
    rates = apply_factor_shock(book, "rates_up_200bp")
    assert rates.pnl == pytest.approx(-1000 * 95.0 * 7.0 * 0.02, rel=1e-12)
    usd = apply_factor_shock(book, "usd_rally")
    assert usd.pnl == pytest.approx(-0.1 * 10 * 120 * 1.08, rel=1e-12)
    credit = apply_factor_shock(book, FactorShock(credit_spread_bp=150.0))
    assert credit.pnl == pytest.approx(-1000 * 95.0 * 6.5 * 0.015, rel=1e-12)
    json.dumps(crash.to_dict())
    for name in HYPOTHETICAL_SHOCKS:  # every preset runs on a mixed book
        assert math.isfinite(apply_factor_shock(book, name).pnl)


def test_vol_term_structure_interpolates_by_expiry() -> None:
    term = {0.25: 12.0, 1.0: 6.0, 2.0: 4.0}
    for T, flat in [(1.0, 6.0), (0.5, 10.0), (0.1, 12.0), (3.0, 4.0)]:
        book = RiskBook.build([], [OptionPosition("X", 100, T, True, 1, 0.2)], spots={"X": 100.0})
        a = apply_factor_shock(book, FactorShock(vol_term_points=term))
        b = apply_factor_shock(book, FactorShock(vol_points=flat))
        assert a.pnl == pytest.approx(b.pnl, rel=1e-12), T
        assert a.pnl > 0


def test_bad_input_names_the_field(history: MarketHistory, cov: np.ndarray) -> None:
    book = linear_book(STOCKS, np.ones(5), np.full(5, 10.0))
    with pytest.raises(ValueError, match=r"^scenario: unknown"):
        run_historical(book, "dotcom_2000", history)
    with pytest.raises(ValueError, match=r"^shock: unknown"):
        apply_factor_shock(book, "meteor")
    with pytest.raises(ValueError, match=r"^cov: shape"):
        reverse_stress_mahalanobis(book, cov[:3, :3], 100.0)
    with pytest.raises(ValueError, match=r"^loss: must be a positive"):
        reverse_stress_uniform(book, -5.0)
    with pytest.raises(ValueError, match=r"^proxies\['X'\]: unknown series"):
        scenario_returns("gfc_2008", ["X"], history, proxies={"X": "FTSE"})
    with pytest.raises(ValueError, match=r"^equity_pct: unknown symbol"):
        apply_factor_shock(book, FactorShock(equity_pct={"NOPE": -10.0}))
    with pytest.raises(ValueError, match=r"^lam: must be in"):
        shock_correlation(np.eye(2), 1.5)
    with pytest.raises(ValueError, match=r"^cov: is not positive semi-definite"):
        correlation_stress([1.0, 1.0], [[1.0, 2.0], [2.0, 1.0]])
