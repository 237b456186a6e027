"""Raw SVI: QuantLib's SviSmileSection as the oracle for w(k); Gatheral's g(k) and the risk-neutral density against
Breeden-Litzenberger second differences of Black-Scholes prices (`bsm_price`, an independent pricer); the
Gatheral-Jacquier (2014) Axel Vogt example; calibration recovery with and without bid/ask noise."""

from __future__ import annotations

import json

import numpy as np
import pytest
import QuantLib as ql
from scipy import optimize

from tradesys.quant.options.european import bsm_price
from tradesys.quant.vol import (
    LEE_BOUND,
    SviParams,
    SviSlice,
    VolSurface,
    calibrate_svi,
    svi_total_variance,
)

VOGT = SviParams(a=-0.0410, b=0.1331, rho=0.3060, m=0.3586, sigma=0.4153)  # GJ 2014, T = 1


def _bl_density(
    p: SviParams, T: float, K: np.ndarray, S: float = 100.0, r: float = 0.02, q: float = 0.01, h: float = 0.02
) -> np.ndarray:
    """Density of S_T in strike, e^{rT} d2C/dK2, by central differences of BSM prices at the SVI vol."""
    F = S * np.exp((r - q) * T)

    def call(k_strike: np.ndarray) -> np.ndarray:
        vol = p.implied_vol(np.log(k_strike / F), T)
        return bsm_price(S, k_strike, T, r, q, vol, True)

    return np.exp(r * T) * (call(K + h) - 2.0 * call(K) + call(K - h)) / (h * h)


def _butterflies(p: SviParams, T: float, k: np.ndarray, dk: float) -> np.ndarray:
    """Forward-normalised butterflies on K1 = K e^{-dk} < K < K3 = K e^{dk} (F = 1, r = q = 0):
    lam c(K1) + (1 - lam) c(K3) - c(K), lam = (K3 - K)/(K3 - K1); >= 0 for every K iff prices are convex."""
    K = np.exp(k)
    lam = (np.exp(dk) - 1.0) / (np.exp(dk) - np.exp(-dk))

    def c(kk: np.ndarray) -> np.ndarray:
        return bsm_price(1.0, kk, T, 0.0, 0.0, p.implied_vol(np.log(kk), T), True)

    return lam * c(K * np.exp(-dk)) + (1.0 - lam) * c(K * np.exp(dk)) - c(K)


def test_total_variance_matches_quantlib_svi_smile_section() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        T, F = rng.uniform(0.05, 3.0), rng.uniform(10.0, 500.0)
        b, rho = rng.uniform(0.01, 0.8), rng.uniform(-0.9, 0.9)
        sigma, m = rng.uniform(0.02, 0.6), rng.uniform(-0.3, 0.3)
        a = rng.uniform(0.0, 0.1) - b * sigma * np.sqrt(1 - rho * rho) * rng.uniform(0.0, 0.9)
        p = SviParams(a, b, rho, m, sigma)
        sec = ql.SviSmileSection(T, F, [a, b, sigma, rho, m])  # QuantLib's order: a, b, sigma, rho, m
        K = F * np.exp(np.linspace(-1.5, 1.5, 31))
        ref = np.array([sec.volatility(float(x)) for x in K])
        np.testing.assert_allclose(p.implied_vol(np.log(K / F), T), ref, rtol=1e-13)


def test_vectorised_over_strikes_and_parameters() -> None:
    a = np.array([0.01, 0.02, 0.03])[:, None]
    k = np.linspace(-1, 1, 5)[None, :]
    w = svi_total_variance(k, a, 0.1, -0.3, 0.0, 0.2)
    assert w.shape == (3, 5)
    np.testing.assert_allclose(w[1], SviParams(0.02, 0.1, -0.3, 0.0, 0.2).total_variance(k[0]), rtol=1e-15)


def test_g_and_density_match_breeden_litzenberger() -> None:
    """p(k)/K, from g(k), equals e^{rT} d2C/dK2 of BSM prices; the density integrates to 1 and E[S_T] = F."""
    for p, T in ((SviParams(0.02, 0.15, -0.5, 0.05, 0.2), 0.5), (VOGT, 1.0)):
        F = 100.0 * np.exp(0.01 * T)
        k = np.linspace(-1.2, 1.2, 49)
        K = F * np.exp(k)
        dens = p.density(k) / K
        bl = _bl_density(p, T, K)
        assert np.max(np.abs(dens - bl)) < 1e-6 * np.max(np.abs(bl)) + 1e-9
        kk = np.linspace(-12.0, 12.0, 400001)
        pk = p.density(kk)
        assert np.trapezoid(pk, kk) == pytest.approx(1.0, abs=1e-6)
        assert np.trapezoid(np.exp(kk) * pk, kk) == pytest.approx(1.0, abs=1e-6)


def test_vogt_example_has_butterfly_arbitrage_where_gatheral_jacquier_show_it() -> None:
    """GJ 2014's Axel Vogt parameters satisfy the usual SVI constraints yet g < 0 on an interval of positive k.

    We locate it at k in (0.643, 1.256) and confirm it without g: butterflies priced there by `bsm_price` are
    negative, and positive outside.
    """
    assert VOGT.min_variance >= 0 and VOGT.lee_ok
    g = VOGT.g
    lo = optimize.brentq(g, 0.3, 0.8)
    hi = optimize.brentq(g, 0.9, 1.5)
    assert lo == pytest.approx(0.643, abs=2e-3) and hi == pytest.approx(1.256, abs=2e-3)
    k = np.linspace(-1.5, 1.5, 3001)
    gk = g(k)
    assert np.all(gk[(k > lo + 1e-6) & (k < hi - 1e-6)] < 0) and np.all(gk[(k < lo - 1e-6) | (k > hi + 1e-6)] > 0)
    i = np.argmin(gk)
    assert gk[i] == pytest.approx(-0.0329, abs=2e-4) and k[i] == pytest.approx(0.879, abs=5e-3)
    fly_in = _butterflies(VOGT, 1.0, np.array([0.75, 0.88, 1.1]), 0.02)
    fly_out = _butterflies(VOGT, 1.0, np.array([-1.0, 0.0, 0.4, 1.45]), 0.02)
    assert np.all(fly_in < 0) and np.all(fly_out > 0)


def test_arbitrage_report_flags_the_vogt_slice() -> None:
    report = VolSurface([SviSlice(1.0, 100.0, VOGT)]).arbitrage_report()
    assert not report.ok and not report.surface_ok
    (b,) = report.butterfly
    assert not b.ok
    assert b.min_g == pytest.approx(-0.03286, abs=1e-4) and b.k_at_min == pytest.approx(0.879, abs=2e-3)
    ((lo, hi),) = b.negative_ranges
    step = (b.k_hi - b.k_lo) / 800
    assert abs(lo - 0.643) < 2 * step and abs(hi - 1.256) < 2 * step
    assert report.wings[0].ok  # the wings are fine: the arbitrage is in the body of the smile
    d = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert d["ok"] is False and d["butterfly"][0]["negative_ranges"][0][0] == pytest.approx(lo)


def test_arbitrage_free_calibration_of_the_vogt_smile() -> None:
    k = np.linspace(-1.5, 1.5, 61)
    vol = VOGT.implied_vol(k, 1.0)
    free = calibrate_svi(k, vol, 1.0, arbitrage_free=False)
    assert np.allclose(free.params.as_tuple(), VOGT.as_tuple(), atol=1e-5)  # unconstrained: Vogt's own smile back
    assert free.min_g < -0.03

    fit = calibrate_svi(k, vol, 1.0)
    assert fit.success and fit.min_g >= 0.0
    kk = np.linspace(-20.0, 20.0, 400001)
    assert np.nanmin(fit.params.g(kk)) >= -1e-12
    assert fit.params.lee_ok
    # independent of g: every butterfly priced by bsm_price on a fine strike grid is non-negative
    assert np.all(_butterflies(fit.params, 1.0, np.linspace(-2.0, 2.0, 801), 0.01) >= -1e-15)
    # ... while staying close to the input smile (vol points)
    assert fit.rmse < 0.0075 and fit.max_abs_error < 0.016
    assert VolSurface([SviSlice(1.0, 100.0, fit.params)]).arbitrage_report().ok


@pytest.mark.parametrize(
    "true,T",
    [
        (SviParams(0.02, 0.15, -0.5, 0.05, 0.2), 0.5),
        (SviParams(-0.01, 0.2, -0.7, -0.05, 0.35), 1.0),
        (SviParams(0.004, 0.06, 0.2, 0.0, 0.1), 0.1),
    ],
)
def test_calibration_recovers_known_parameters(true: SviParams, T: float) -> None:
    theta = float(true.total_variance(0.0))
    k = np.linspace(-4 * np.sqrt(theta), 3 * np.sqrt(theta), 30)
    fit = calibrate_svi(k, true.implied_vol(k, T), T)
    assert fit.success and fit.min_g >= 0
    np.testing.assert_allclose(fit.params.as_tuple(), true.as_tuple(), atol=2e-5)
    assert fit.rmse < 1e-7


def test_calibration_with_bid_ask_noise_stays_within_the_spread() -> None:
    true, T = SviParams(0.02, 0.15, -0.5, 0.05, 0.2), 0.5
    k = np.linspace(-0.8, 0.6, 30)
    vol = true.implied_vol(k, T)
    half = 0.005  # quotes +-0.5 vol point around the truth, mid anywhere inside
    for seed in range(3):
        rng = np.random.default_rng(seed)
        mid = vol + rng.uniform(-half, half, k.size)
        fit = calibrate_svi(k, mid, T, weights=np.full(k.size, 1.0 / (2 * half)))
        assert fit.min_g >= 0
        assert np.max(np.abs(fit.params.implied_vol(k, T) - vol)) < half


def test_lee_bound_is_enforced() -> None:
    steep = SviParams(a=0.02, b=1.6, rho=0.5, m=0.0, sigma=0.3)  # right wing slope 2.4 > 2
    assert not steep.lee_ok
    rep = VolSurface([SviSlice(1.0, 100.0, steep)]).arbitrage_report()
    assert not rep.wings[0].ok and rep.wings[0].right_slope == pytest.approx(2.4) and rep.wings[0].asymptotic
    k = np.linspace(-1.0, 2.0, 40)
    fit = calibrate_svi(k, steep.implied_vol(k, 1.0), 1.0)
    left, right = fit.params.wing_slopes
    assert max(left, right) <= LEE_BOUND + 1e-9 and fit.min_g >= 0


def test_bad_parameters_and_inputs_raise_with_the_field_name() -> None:
    with pytest.raises(ValueError, match=r"^b:"):
        SviParams(0.01, -0.1, 0.0, 0.0, 0.1)
    with pytest.raises(ValueError, match=r"^rho:"):
        SviParams(0.01, 0.1, 1.0, 0.0, 0.1)
    with pytest.raises(ValueError, match=r"^sigma:"):
        SviParams(0.01, 0.1, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match=r"^a:"):
        SviParams(-0.1, 0.1, 0.0, 0.0, 0.1)
    with pytest.raises(ValueError, match=r"^vol:"):
        calibrate_svi([0.0, 0.1, 0.2, 0.3], [0.2, 0.2, 0.2, 0.2], 1.0)
    with pytest.raises(ValueError, match=r"^T:"):
        calibrate_svi(np.linspace(-1, 1, 9), np.full(9, 0.2), 0.0)
