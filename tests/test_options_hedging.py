"""Delta hedging, gamma scalping and vega hedging against independent references.

References:
* Kamal & Derman (1999): hedging at the true vol on GBM, the P&L has mean ~0 and std ~ sqrt(pi/4) sigma vega /
  sqrt(N), falling like 1/sqrt(N).
* Risk-neutral pricing: under the drift r - q, the expected PV of the P&L of a long option bought at sigma_i is
  BS(sigma_r) - BS(sigma_i) for ANY hedge rule; it also equals E[0.5 int Gamma_i S^2 (sigma_r^2 - sigma_i^2)
  e^{-rt} dt]. Hedging at sigma_r makes that P&L riskless up to the Kamal-Derman discrete-hedging error, under
  any drift.
* Pathwise on real S&P 500 data (arch's sp500 index 1999-2018, skfolio's 20 stocks): the hedged P&L of a short
  option is the gamma-weighted variance gap 0.5 sum Gamma S^2 (sigma_h^2 dt - (dS/S)^2), up to third-order terms.
* Leland (1985): the adjusted-vol price minus the BS price is the PV of the expected rebalancing costs.
* Bookkeeping: cash + shares S + option = equity, changed only by carry, price moves and costs; costs move the
  P&L by exactly their value carried to the horizon.
* Path generators: QuantLib's AnalyticHestonEngine and BatesEngine (Merton as Bates with no vol of vol).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from tradesys.quant.options.errors import OptionError
from tradesys.quant.options.european import bsm_greeks, bsm_price
from tradesys.quant.options.hedging import (
    HedgeRule,
    gamma_scalp,
    gbm_paths,
    heston_paths,
    kamal_derman_std,
    leland_vol,
    merton_jump_paths,
    neutralize,
    price_windows,
    realized_vol,
    simulate_delta_hedge,
    vega_hedge,
)

S0, K = 100.0, 100.0


def bs(T: float, r: float, q: float, sigma: float, call: bool = True) -> float:
    return float(bsm_price(S0, K, T, r, q, sigma, call))


# ------------------------------------------------------------------------------------------ Kamal & Derman


def test_true_vol_hedge_mean_zero_and_kamal_derman_std() -> None:
    T, sigma = 1.0, 0.2
    vega = float(bsm_greeks(S0, K, T, 0.0, 0.0, sigma, True, which=("vega",)).vega)
    stds = []
    for N in (16, 64, 256):
        paths = gbm_paths(S0, 0.0, sigma, T, N, 10_000, seed=N)
        res = simulate_delta_hedge(paths, K, T, True, sigma_hedge=sigma, dt=T / N)
        assert abs(res.mean) < 4 * res.stderr, (N, res.mean, res.stderr)
        ratio = res.std / kamal_derman_std(vega, sigma, N)
        assert 0.9 < ratio < 1.1, (N, ratio)
        assert res.effectiveness > 1 - 2.0 / N  # var ratio ~ (pi/4) (sigma vega)^2 / N over the option's variance
        stds.append(res.std)
    # 1 / sqrt(N): quadrupling N halves the std
    for a, b in itertools.pairwise(stds):
        assert 1.85 < a / b < 2.15, stds


# ----------------------------------------------------------------------------------------------- wrong vol


@pytest.mark.parametrize(("sigma_r", "sigma_i"), [(0.3, 0.2), (0.15, 0.2)])
def test_hedging_at_implied_vol_earns_the_mispricing_on_average(sigma_r: float, sigma_i: float) -> None:
    T, N, r, q = 1.0, 128, 0.03, 0.01
    paths = gbm_paths(S0, r - q, sigma_r, T, N, 10_000, seed=7)
    res = simulate_delta_hedge(paths, K, T, True, position=1.0, sigma_hedge=sigma_i, r=r, q=q, dt=T / N)
    pv = res.pnl_pv
    ref = bs(T, r, q, sigma_r) - bs(T, r, q, sigma_i)
    se = pv.std() / math.sqrt(pv.size)
    assert np.sign(pv.mean()) == np.sign(sigma_r - sigma_i)
    assert abs(pv.mean() - ref) < 4 * se, (pv.mean(), ref, se)
    # the gamma-weighted variance gap on the same paths, E[0.5 sum Gamma_i S^2 (sigma_r^2 - sigma_i^2) dt e^{-rt}]
    t = np.arange(N) * (T / N)
    S = paths[:, :-1]
    gam = bsm_greeks(S, K, T - t, r, q, sigma_i, True, which=("gamma",)).gamma
    gap = (0.5 * gam * S * S * (sigma_r**2 - sigma_i**2) * (T / N) * np.exp(-r * t)).sum(1).mean()
    assert abs(gap - ref) < 0.03 * abs(ref), (gap, ref)


def test_hedging_at_realised_vol_locks_in_the_price_difference_under_any_drift() -> None:
    """Bought at 20% vol, realised 30%, drift 12% (not risk neutral): hedging at the realised vol leaves only the
    discrete-hedging noise around BS(30%) - BS(20%), shrinking like 1/sqrt(N); hedging at 20% does not."""
    T, r, q, s_r, s_i = 1.0, 0.03, 0.0, 0.3, 0.2
    ref = bs(T, r, q, s_r) - bs(T, r, q, s_i)
    vega_r = float(bsm_greeks(S0, K, T, r, q, s_r, True, which=("vega",)).vega)
    stds = {}
    for N in (64, 256):
        paths = gbm_paths(S0, 0.12, s_r, T, N, 8000, seed=N + 1)
        res = simulate_delta_hedge(paths, K, T, True, position=1.0, sigma_hedge=s_r, sigma_trade=s_i, r=r, dt=T / N)
        pv = res.pnl_pv
        assert abs(pv.mean() - ref) < 4 * pv.std() / math.sqrt(pv.size)
        stds[N] = pv.std()
        assert 0.85 < pv.std() / kamal_derman_std(vega_r, s_r, N) < 1.15
        assert pv.std() < (0.4 if N == 64 else 0.2) * ref  # nearly riskless, more so the more often one hedges
        at_implied = simulate_delta_hedge(paths, K, T, True, position=1.0, sigma_hedge=s_i, r=r, dt=T / N)
        # hedging at the wrong vol leaves a path-dependent P&L that does not shrink with N
        assert at_implied.pnl_pv.std() > (1.5 if N == 64 else 2.5) * pv.std()
    assert 1.8 < stds[64] / stds[256] < 2.2


# -------------------------------------------------------------------------------------------- real paths


def gamma_gap(paths: np.ndarray, sigma_h: np.ndarray, T: float, h: float) -> np.ndarray:
    """Short ATM call hedged at sigma_h: 0.5 sum Gamma S^2 (sigma_h^2 h - (dS/S)^2) per path (r = q = 0)."""
    n_steps = paths.shape[1] - 1
    t = np.arange(n_steps) * h
    S = paths[:, :-1]
    gam = bsm_greeks(S, paths[:, :1], T - t, 0.0, 0.0, sigma_h[:, None], True, which=("gamma",)).gamma
    ret = np.diff(paths, axis=1) / S
    return (0.5 * gam * S * S * (sigma_h[:, None] ** 2 * h - ret * ret)).sum(1)


def hedge_windows(close: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """126-day windows every 21 days: the first 63 days give the trailing vol, the last 63 are hedged."""
    W = price_windows(close, 126, stride=21)
    vol = realized_vol(W[:, :64], 1 / 252)
    paths = W[:, 63:]
    T = 63 / 252
    res = simulate_delta_hedge(paths, paths[:, 0], T, True, sigma_hedge=vol, dt=1 / 252)
    assert (res.codes == 0).all()
    return res.pnl, gamma_gap(paths, vol, T, 1 / 252), res.effectiveness


def test_sp500_index_windows_pnl_is_the_gamma_weighted_variance_gap() -> None:
    arch_sp500 = pytest.importorskip("arch.data.sp500")
    close = arch_sp500.load()["Adj Close"].to_numpy()
    pnl, gap, eff = hedge_windows(close)
    assert len(pnl) > 200
    assert np.corrcoef(pnl, gap)[0, 1] > 0.98
    slope = np.polyfit(gap, pnl, 1)[0]
    assert 0.9 < slope < 1.05, slope
    assert eff > 0.8, eff  # daily hedging at a trailing vol removes most of the short call's variance


def test_sp500_stocks_windows_pnl_is_the_gamma_weighted_variance_gap() -> None:
    datasets = pytest.importorskip("skfolio.datasets")
    prices = datasets.load_sp500_dataset()
    corrs, effs = [], []
    for name in prices.columns:
        pnl, gap, eff = hedge_windows(prices[name].to_numpy())
        corrs.append(np.corrcoef(pnl, gap)[0, 1])
        effs.append(eff)
    assert len(corrs) == 20
    # stocks jump (earnings): third-order terms matter more than for the index, still the gap explains the P&L
    assert min(corrs) > 0.9 and np.median(corrs) > 0.98, corrs
    assert min(effs) > 0.7 and np.median(effs) > 0.85, effs


# ----------------------------------------------------------------------------------------- costs: Leland


@pytest.mark.parametrize(("n_steps", "every", "cost_bps"), [(63, 1, 10.0), (252, 4, 5.0)])
def test_expected_rebalancing_cost_matches_leland(n_steps: int, every: int, cost_bps: float) -> None:
    T, sigma = 0.25, 0.2
    paths = gbm_paths(S0, 0.0, sigma, T, n_steps, 6000, seed=n_steps)
    res = simulate_delta_hedge(
        paths, K, T, True, sigma_hedge=sigma, dt=T / n_steps, rule=HedgeRule(every=every), cost_bps=cost_bps
    )
    leland = bs(T, 0.0, 0.0, leland_vol(sigma, cost_bps, every * T / n_steps)) - bs(T, 0.0, 0.0, sigma)
    ratio = res.cost_rebalance_pv.mean() / leland
    # Leland's is a first-order asymptotic (|dDelta| ~ Gamma |dS|); it understates the cost near expiry a little
    assert 0.95 < ratio < 1.08, ratio
    # the opening purchase of the hedge and the unwind are extra and not in Leland's adjustment
    assert (res.cost_pv > res.cost_rebalance_pv).all()


def test_costs_move_the_pnl_by_exactly_their_carried_value() -> None:
    T, N, r = 0.5, 50, 0.04
    paths = gbm_paths(S0, 0.05, 0.25, T, N, 500, seed=1)
    kw = {"sigma_hedge": 0.25, "dt": T / N, "r": r, "q": 0.02, "rule": HedgeRule(delta_band=0.02)}
    free = simulate_delta_hedge(paths, K, T, False, **kw)
    costly = simulate_delta_hedge(paths, K, T, False, cost_bps=8.0, fixed_cost=0.01, **kw)
    np.testing.assert_array_equal(free.n_trades, costly.n_trades)  # the delta rule does not depend on cash
    np.testing.assert_allclose(free.pnl - costly.pnl, costly.cost_pv * math.exp(r * T), rtol=1e-10, atol=1e-12)
    fixed_only = simulate_delta_hedge(paths, K, T, False, fixed_cost=0.01, close_cost=False, **kw)
    np.testing.assert_allclose(fixed_only.cost, 0.01 * fixed_only.n_trades, rtol=1e-12)
    assert (free.cost == 0).all()


# ------------------------------------------------------------------------------------------- bookkeeping


@pytest.mark.parametrize("rule", [HedgeRule(), HedgeRule(every=3), HedgeRule(delta_band=0.4, move_band=0.08)])
def test_equity_is_conserved_step_by_step(rule: HedgeRule) -> None:
    T, N, r, q = 0.5, 40, 0.05, 0.02
    paths = gbm_paths(S0, 0.08, 0.3, T + 0.1, N, 300, seed=5)  # the option outlives the paths: marked at the end
    gaps = np.random.default_rng(6).uniform(0.5, 1.5, N)  # uneven steps, as calendar time between closes
    times = np.concatenate([[0.0], np.cumsum(gaps) * (T + 0.1) / gaps.sum()])
    res = simulate_delta_hedge(
        paths,
        K,
        T + 0.1 + 0.25,
        True,
        position=-3.0,
        sigma_hedge=0.28,
        sigma_trade=0.3,
        sigma_mark=0.29,
        r=r,
        q=q,
        times=times,
        rule=rule,
        cost_bps=5.0,
        fixed_cost=0.02,
        record_path=True,
    )
    p = res.path
    assert p is not None
    h = np.diff(p.times)
    # every step: equity changes only by interest on cash, the shares' price move and dividends, the option's
    # revaluation and the costs paid (so a trade itself moves nothing between cash and shares but its cost)
    incr = (
        p.cash[:, :-1] * np.expm1(r * h)
        + p.shares[:, :-1] * (np.diff(p.spot, axis=1) + p.spot[:, 1:] * np.expm1(q * h))
        + np.diff(p.option_value, axis=1)
        - p.cost[:, 1:]
    )
    np.testing.assert_allclose(np.diff(p.equity, axis=1), incr, rtol=0, atol=1e-9)
    # the option is bought at 30% and marked at 29%: equity at the start is that difference less the opening cost
    V_t = bsm_price(paths[:, 0], K, T + 0.35, r, q, 0.3, True)
    V_m = bsm_price(paths[:, 0], K, T + 0.35, r, q, 0.29, True)
    np.testing.assert_allclose(p.equity[:, 0], -3.0 * (V_m - V_t) - p.cost[:, 0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(res.pnl, p.equity[:, -1], rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(np.cumsum(p.trade, axis=1), p.shares, atol=1e-12)
    assert (p.shares[:, -1] == 0).all()
    np.testing.assert_allclose(p.cost.sum(1), res.cost, rtol=1e-12)
    assert ((p.trade[:, 1:-1] != 0).sum(1) + 1 == res.n_trades).all()
    if rule.move_band is not None or rule.delta_band is not None:
        assert res.n_trades.mean() < N / 2  # bands trade less than every step


def test_move_band_trades_only_after_the_move() -> None:
    T, N = 0.25, 100
    paths = gbm_paths(S0, 0.0, 0.2, T, N, 200, seed=9)
    res = simulate_delta_hedge(
        paths, K, T, True, sigma_hedge=0.2, dt=T / N, rule=HedgeRule(move_band=0.015), record_path=True
    )
    p = res.path
    assert p is not None
    for i in range(20):
        last = paths[i, 0]
        for k in range(1, N):
            moved = abs(paths[i, k] / last - 1.0) > 0.015
            assert (p.trade[i, k] != 0) == moved
            if moved:
                last = paths[i, k]


# -------------------------------------------------------------------------------------------- gamma scalping


@pytest.mark.parametrize(("sigma_r", "sign"), [(0.3, 1.0), (0.12, -1.0)])
def test_gamma_scalping_pays_when_realised_beats_implied(sigma_r: float, sign: float) -> None:
    T, N, r, sigma_i = 0.25, 126, 0.01, 0.2
    paths = gbm_paths(S0, r, sigma_r, T, N, 5000, seed=21)
    s = gamma_scalp(paths, K, T, True, sigma_implied=sigma_i, dt=T / N, r=r, rule=HedgeRule(delta_band=0.05))
    pv = s.hedge.pnl_pv
    ref = bs(T, r, 0.0, sigma_r) - bs(T, r, 0.0, sigma_i)
    assert np.sign(pv.mean()) == sign
    assert abs(pv.mean() - ref) < 4 * pv.std() / math.sqrt(pv.size), (pv.mean(), ref)
    # decomposition: scalping gains against theta paid; on average they differ by the mispricing
    assert (s.gamma >= 0).all() and (s.theta <= 0).all()
    assert np.sign(s.gamma.mean() + s.theta.mean()) == sign
    assert abs(s.residual.mean()) < 0.05 * abs(s.gamma.mean() + s.theta.mean())
    np.testing.assert_allclose(s.delta + s.gamma + s.theta + s.carry - s.cost + s.residual, s.pnl, atol=1e-10)
    assert s.hedge.n_trades.mean() < N / 2


def test_gamma_scalping_zero_band_is_the_every_step_hedge_and_residual_shrinks() -> None:
    T, sigma = 0.25, 0.25
    res_std = []
    for N in (32, 128):
        paths = gbm_paths(S0, 0.0, sigma, T, N, 2000, seed=N)
        zero = gamma_scalp(paths, K, T, False, sigma_implied=0.2, dt=T / N, rule=HedgeRule(delta_band=0.0))
        every = simulate_delta_hedge(paths, K, T, False, position=1.0, sigma_hedge=0.2, dt=T / N)
        np.testing.assert_array_equal(zero.pnl, every.pnl)
        zero_move = gamma_scalp(paths, K, T, False, sigma_implied=0.2, dt=T / N, rule=HedgeRule(move_band=0.0))
        np.testing.assert_array_equal(zero_move.pnl, every.pnl)
        res_std.append(zero.residual.std())
        assert zero.residual.std() < (0.2 if N == 32 else 0.1) * zero.gamma.std()
    # the residual is the Taylor remainder of the option's value: O(h^1.5) per step, O(h) over a path away from
    # expiry; the gamma singularity at expiry slows that, so assert only a clear fall (faster than sqrt(h))
    assert res_std[0] / res_std[1] > 2.2, res_std


# ---------------------------------------------------------------------------------------------- vega hedge


def test_vega_hedge_neutralises_vega_and_delta_and_leaves_second_order_vol_pnl() -> None:
    r, q = 0.02, 0.01
    book = {"K": [95.0, 105.0], "T": [0.25, 0.5], "is_call": [True, False], "quantity": [-10.0, -6.0]}
    book["sigma"] = [0.22, 0.2]
    h = vega_hedge(
        S0, book["K"], book["T"], book["is_call"], book["quantity"], book["sigma"], 100.0, 1.0, True, 0.21, r, q
    )
    assert h.codes == 0 and h.n_hedge > 0  # a short-vega book buys the longer option
    assert abs(h.hedged_vega) < 1e-12 * abs(h.book_vega) and abs(h.hedged_delta) < 1e-12

    def book_value(dv: float) -> tuple[float, float]:
        legs = sum(
            qty * bsm_price(S0, k, t, r, q, s + dv, c)
            for k, t, c, qty, s in zip(
                book["K"], book["T"], book["is_call"], book["quantity"], book["sigma"], strict=True
            )
        )
        return float(legs), float(legs + h.n_hedge * bsm_price(S0, 100.0, 1.0, r, q, 0.21 + dv, True) + h.n_shares * S0)

    base_un, base_h = book_value(0.0)
    pnl = {dv: (book_value(dv)[0] - base_un, book_value(dv)[1] - base_h) for dv in (0.02, 0.01, 0.005)}
    for dv, (unhedged, hedged) in pnl.items():
        assert abs(unhedged - h.book_vega * dv) < 0.05 * abs(unhedged)  # first order
        assert abs(hedged) < 0.05 * abs(unhedged)
    # the hedged book's vol P&L is second order: halving the shock quarters it
    assert 3.5 < pnl[0.01][1] / pnl[0.005][1] < 4.5 and 3.5 < pnl[0.02][1] / pnl[0.01][1] < 4.5


def test_neutralize_gamma_and_vega_with_two_options_then_delta() -> None:
    g = bsm_greeks(S0, [90.0, 100.0, 110.0], [0.25, 0.5, 1.0], 0.0, 0.0, 0.2, [False, True, True])
    book = np.array([-5.0 * g.gamma[0], -5.0 * g.vega[0]])  # short 5 of the first option
    instruments = np.array([[g.gamma[1], g.gamma[2]], [g.vega[1], g.vega[2]]])
    w = neutralize(book, instruments)
    np.testing.assert_allclose(instruments @ w + book, 0.0, atol=1e-12)
    shares = -(-5.0 * g.delta[0] + w @ g.delta[1:])
    assert abs(-5.0 * g.delta[0] + w @ g.delta[1:] + shares) < 1e-12
    assert np.isnan(neutralize(book, np.ones((2, 2)))).all()
    assert HedgeRule.in_delta_units(0.05, -20.0).delta_band == pytest.approx(
        1.0
    )  # two identical instruments cannot do it
    assert vega_hedge(S0, 100.0, 0.5, True, 1.0, 0.2, 100.0, 0.0, True, 0.2).codes == OptionError.NOT_CONVERGED


# -------------------------------------------------------------------------------------------- path models


def test_gbm_paths_moments_and_antithetic() -> None:
    P = gbm_paths(S0, 0.05, 0.3, 2.0, 8, 40_000, seed=3, antithetic=True)
    assert P.shape == (40_000, 9) and (P[:, 0] == S0).all()
    lr = np.log(P[:, -1] / S0)
    se = 0.3 * math.sqrt(2.0) / math.sqrt(40_000)
    assert abs(lr.mean() - (0.05 - 0.045) * 2.0) < 1e-12  # antithetic pairs cancel the noise exactly
    assert abs(lr.std() - 0.3 * math.sqrt(2.0)) < 4 * se
    assert abs(realized_vol(P, 0.25).mean() - 0.3) < 0.01


def test_heston_and_merton_paths_price_calls_like_quantlib() -> None:
    ql = pytest.importorskip("QuantLib")
    today = ql.Date(15, 1, 2025)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    r, q, Kc, T = 0.03, 0.01, 105.0, 1.0
    rts = ql.YieldTermStructureHandle(ql.FlatForward(today, r, dc))
    dts = ql.YieldTermStructureHandle(ql.FlatForward(today, q, dc))
    opt = ql.VanillaOption(ql.PlainVanillaPayoff(ql.Option.Call, Kc), ql.EuropeanExercise(today + 365))
    spot = ql.QuoteHandle(ql.SimpleQuote(S0))

    def mc(P: np.ndarray) -> tuple[float, float]:
        pay = math.exp(-r * T) * np.maximum(P[:, -1] - Kc, 0.0)
        return float(pay.mean()), float(pay.std() / math.sqrt(pay.size))

    v0, kappa, theta, xi, rho = 0.04, 2.0, 0.05, 0.5, -0.7
    opt.setPricingEngine(
        ql.AnalyticHestonEngine(ql.HestonModel(ql.HestonProcess(rts, dts, spot, v0, kappa, theta, xi, rho)))
    )
    P = heston_paths(S0, r - q, v0, kappa, theta, xi, rho, T, 100, 60_000, seed=4)
    m, se = mc(P)
    assert abs(m - opt.NPV()) < 4 * se + 0.01, (m, se, opt.NPV())  # plus a small Euler bias allowance
    lam, jm, js, sigma = 0.5, -0.1, 0.15, 0.2
    bates = ql.BatesProcess(rts, dts, spot, sigma**2, 1.0, sigma**2, 1e-4, 0.0, lam, jm, js)  # no vol of vol
    opt.setPricingEngine(ql.BatesEngine(ql.BatesModel(bates)))
    P = merton_jump_paths(S0, r - q, sigma, lam, jm, js, T, 4, 100_000, seed=5)
    m, se = mc(P)
    assert abs(m - opt.NPV()) < 4 * se, (m, se, opt.NPV())
    assert abs(P[:, -1].mean() / (S0 * math.exp((r - q) * T)) - 1) < 4 * P[:, -1].std() / S0 / math.sqrt(P.shape[0])


# -------------------------------------------------------------------------------------------------- inputs


def test_bad_paths_are_nan_rows_and_bad_arguments_raise() -> None:
    paths = gbm_paths(S0, 0.0, 0.2, 0.25, 10, 5, seed=1)
    paths[1, 4] = np.nan
    paths[2, 3] = -1.0
    res = simulate_delta_hedge(paths, K, 0.25, True, sigma_hedge=0.2, dt=0.025)
    assert res.codes.tolist() == [0, OptionError.NAN_INPUT, OptionError.NON_POSITIVE_SPOT, 0, 0]
    assert np.isnan(res.pnl[1:3]).all() and np.isfinite(res.pnl[[0, 3, 4]]).all() and math.isfinite(res.mean)
    assert set(res.summary()) >= {"mean", "std", "q05", "effectiveness", "mean_trades"}
    strikes = simulate_delta_hedge(paths, [K, K, K, -1.0, K], 0.25, True, sigma_hedge=0.2, dt=0.025)
    assert strikes.codes[3] == OptionError.NON_POSITIVE_STRIKE and np.isnan(strikes.pnl[3])
    with pytest.raises(ValueError, match="every:"):
        HedgeRule(every=0)
    with pytest.raises(ValueError, match="delta_band:"):
        HedgeRule(delta_band=-0.1)
    with pytest.raises(ValueError, match="dt:"):
        simulate_delta_hedge(paths, K, 0.25, True, sigma_hedge=0.2)
    with pytest.raises(ValueError, match="T:"):
        simulate_delta_hedge(paths, K, 0.1, True, sigma_hedge=0.2, dt=0.025)
    with pytest.raises(ValueError, match="K:"):
        simulate_delta_hedge(paths, [K, K], 0.25, True, sigma_hedge=0.2, dt=0.025)
    with pytest.raises(ValueError, match="times:"):
        simulate_delta_hedge(paths, K, 0.25, True, sigma_hedge=0.2, times=np.linspace(0, 0.25, 5))
    with pytest.raises(ValueError, match="cost_bps:"):
        simulate_delta_hedge(paths, K, 0.25, True, sigma_hedge=0.2, dt=0.025, cost_bps=-1.0)
    with pytest.raises(ValueError, match="quantity:"):
        gamma_scalp(paths, K, 0.25, True, sigma_implied=0.2, dt=0.025, quantity=-1.0)
    with pytest.raises(ValueError, match="window:"):
        price_windows(np.arange(1.0, 10.0), 0)
