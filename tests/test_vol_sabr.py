"""SABR (Hagan 2002 lognormal expansion): QuantLib's sabrVolatility as the oracle, a 50-digit mpmath evaluation of
the same formula near the money, QuantLib's exact CEV prices for the nu -> 0 limit, and calibration recovery."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import QuantLib as ql

from tradesys.quant.options.implied_vol import implied_vol_black76
from tradesys.quant.vol import SabrParams, calibrate_sabr, sabr_vol


def _hagan_mp(K: float, F: float, T: float, alpha: float, beta: float, rho: float, nu: float) -> float:
    """Hagan's formula evaluated in 50-digit arithmetic (the textbook form: precision hides the cancellations)."""
    with mpmath.workdps(50):
        K, F, T, a, b, r, n = (mpmath.mpf(v) for v in (K, F, T, alpha, beta, rho, nu))
        c = 1 - b
        ell = mpmath.log(F / K)
        fk = (F * K) ** (c / 2)
        z = n / a * fk * ell
        if z == 0:
            zx = mpmath.mpf(1)
        else:
            x = mpmath.log((mpmath.sqrt(1 - 2 * r * z + z * z) + z - r) / (1 - r))
            zx = z / x
        lead = a / (fk * (1 + (c * ell) ** 2 / 24 + (c * ell) ** 4 / 1920)) * zx
        corr = 1 + T * (c * c * a * a / (24 * fk * fk) + r * b * n * a / (4 * fk) + (2 - 3 * r * r) * n * n / 24)
        return float(lead * corr)


def _sweep(n: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    F = rng.uniform(0.01, 200.0, n)
    K = F * np.exp(rng.uniform(-1.5, 1.5, n))
    K[::13] = F[::13]  # exactly at the money
    T = rng.uniform(0.01, 10.0, n)
    beta = rng.uniform(0.0, 1.0, n)
    beta[::5] = 1.0
    beta[1::7] = 0.0
    alpha = rng.uniform(0.05, 0.6, n) * F ** (1.0 - beta)
    rho = rng.uniform(-0.95, 0.95, n)
    nu = rng.uniform(0.0, 2.0, n)
    return K, F, T, alpha, beta, rho, nu


def test_matches_quantlib_sabr_volatility_on_a_random_sweep() -> None:
    K, F, T, alpha, beta, rho, nu = _sweep(4000, seed=7)
    ours = sabr_vol(K, F, T, alpha, beta, rho, nu)
    ref = np.array([ql.sabrVolatility(*(float(v[i]) for v in (K, F, T, alpha, beta, nu, rho))) for i in range(K.size)])
    pos = ref > 0
    assert pos.sum() > 3900 and np.all(np.isfinite(ours[pos]))
    rel = np.abs(ours[pos] - ref[pos]) / ref[pos]
    # Same formula: agreement to rounding, except where QuantLib's ln((sqrt(B) + z - rho)/(1 - rho)) loses digits
    # to cancellation (|z| small, see the mpmath test below), which bounds the gap at ~1e-11.
    assert rel.max() < 1e-11
    z = nu / alpha * (F * K) ** (0.5 * (1 - beta)) * np.log(F / K)
    assert np.median(rel) < 1e-14
    assert rel[np.abs(z[pos]) > 1e-2].max() < 1e-12
    # Where the expansion turns negative QuantLib returns the negative number; we return NaN.
    assert np.all(np.isnan(ours[~pos]))


def test_near_the_money_is_exact_where_the_textbook_form_cancels() -> None:
    F, T, alpha, beta, rho, nu = 100.0, 2.0, 0.3 * 100**0.3, 0.7, -0.4, 0.8
    K = F * np.exp(np.array([-1e-6, -3e-8, -1e-9, 0.0, 1e-9, 3e-8, 1e-6, 0.2]))
    ours = sabr_vol(K, F, T, alpha, beta, rho, nu)
    exact = np.array([_hagan_mp(float(k), F, T, alpha, beta, rho, nu) for k in K])
    assert np.max(np.abs(ours / exact - 1.0)) < 5e-15
    ql_vals = np.array([ql.sabrVolatility(float(k), F, T, alpha, beta, nu, rho) for k in K])
    assert np.max(np.abs(ql_vals / exact - 1.0)) < 1e-8  # QuantLib is right to ~1e-9 here, we to rounding


def test_at_the_money_closed_form_and_beta_one() -> None:
    F, T = 0.035, 1.5
    for beta in (0.0, 0.5, 1.0):
        alpha, rho, nu = 0.2 * F ** (1 - beta), -0.3, 0.6
        c = 1.0 - beta
        atm = (
            alpha
            / F**c
            * (
                1
                + T
                * (
                    c * c * alpha * alpha / (24 * F ** (2 * c))
                    + rho * beta * nu * alpha / (4 * F**c)
                    + (2 - 3 * rho * rho) * nu * nu / 24
                )
            )
        )
        assert sabr_vol(F, F, T, alpha, beta, rho, nu) == pytest.approx(atm, rel=1e-15)
        # continuous through K = F
        near = sabr_vol(F * (1 + np.array([-1e-12, 1e-12])), F, T, alpha, beta, rho, nu)
        assert np.allclose(near, atm, rtol=1e-11)
    # beta = 1: lognormal backbone, the vol does not depend on the level of F for fixed moneyness
    a = sabr_vol(np.array([90.0, 100.0, 120.0]), 100.0, 1.0, 0.2, 1.0, -0.5, 0.7)
    b = sabr_vol(np.array([9.0, 10.0, 12.0]), 10.0, 1.0, 0.2, 1.0, -0.5, 0.7)
    np.testing.assert_allclose(a, b, rtol=1e-14)


def test_nu_zero_limit_matches_exact_cev_prices() -> None:
    """nu = 0 is the CEV model; QuantLib's AnalyticCEVEngine prices it exactly (non-central chi-squared). Hagan's
    expansion (and Obloj's) must match the implied vols of those prices to the expansion's O(T^2) error."""
    today = ql.Date(2, 1, 2024)
    ql.Settings.instance().evaluationDate = today
    rts = ql.YieldTermStructureHandle(ql.FlatForward(today, 0.0, ql.Actual365Fixed()))
    F, T = 100.0, 1.0
    Ks = F * np.exp(np.linspace(-0.8, 0.8, 9))
    for beta in (0.3, 0.5, 0.8):
        alpha = 0.25 * F ** (1 - beta)
        eng = ql.AnalyticCEVEngine(F, alpha, beta, rts)
        prices = []
        for K in Ks:
            typ = ql.Option.Call if K >= F else ql.Option.Put
            opt = ql.VanillaOption(ql.PlainVanillaPayoff(typ, float(K)), ql.EuropeanExercise(today + 365))
            opt.setPricingEngine(eng)
            prices.append(opt.NPV())
        exact, _ = implied_vol_black76(np.array(prices), F, Ks, T, 0.0, Ks >= F)
        hagan = sabr_vol(Ks, F, T, alpha, beta, 0.0, 0.0)
        obloj = sabr_vol(Ks, F, T, alpha, beta, 0.0, 0.0, obloj=True)
        assert np.max(np.abs(hagan - exact)) < 5e-5  # half a hundredth of a vol point
        assert np.max(np.abs(obloj - exact)) < 5e-5


def test_obloj_identities() -> None:
    K = np.array([60.0, 80.0, 100.0, 125.0, 160.0])
    # beta = 1: Obloj's leading term is Hagan's
    np.testing.assert_allclose(
        sabr_vol(K, 100.0, 2.0, 0.25, 1.0, -0.4, 0.9, obloj=True),
        sabr_vol(K, 100.0, 2.0, 0.25, 1.0, -0.4, 0.9),
        rtol=1e-14,
    )
    # at the money they coincide for any beta; away from it they differ (Obloj's z uses (F^c - K^c)/c)
    a = sabr_vol(K, 100.0, 2.0, 2.5, 0.5, -0.4, 0.9, obloj=True)
    h = sabr_vol(K, 100.0, 2.0, 2.5, 0.5, -0.4, 0.9)
    assert a[2] == pytest.approx(h[2], rel=1e-14)
    assert np.all(np.abs(a[[0, 1, 3, 4]] - h[[0, 1, 3, 4]]) > 1e-6)
    # and, as nu -> 0, Obloj's leading term tends to the CEV one, alpha c ln(F/K) / (F^c - K^c)
    c = 0.5
    off = K != 100.0
    cev = np.full(K.shape, 2.5 / 100.0**c)
    cev[off] = 2.5 * c * np.log(100.0 / K[off]) / (100.0**c - K[off] ** c)
    np.testing.assert_allclose(sabr_vol(K, 100.0, 0.0, 2.5, 0.5, -0.4, 1e-12, obloj=True), cev, rtol=1e-12)


def test_vectorised_shapes_and_invalid_rows() -> None:
    K = np.linspace(80, 120, 12).reshape(3, 4)
    v = sabr_vol(K, 100.0, 1.0, 0.2, 1.0, -0.2, 0.5)
    assert v.shape == (3, 4) and np.all(np.isfinite(v))
    np.testing.assert_allclose(v.ravel(), [sabr_vol(k, 100.0, 1.0, 0.2, 1.0, -0.2, 0.5) for k in K.ravel()])
    bad = sabr_vol(
        np.array([100.0, -1.0, np.nan, 100.0, 100.0, 100.0]),
        100.0,
        1.0,
        np.array([0.2, 0.2, 0.2, -0.1, 0.2, 0.2]),
        1.0,
        np.array([0, 0, 0, 0, 1.0, 0]),
        np.array([0.5, 0.5, 0.5, 0.5, 0.5, -0.1]),
    )
    assert np.isfinite(bad[0]) and np.all(np.isnan(bad[1:]))


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_calibration_recovers_parameters(beta: float) -> None:
    F, T = 100.0, 0.75
    true = SabrParams(alpha=0.22 * F ** (1 - beta), beta=beta, rho=-0.45, nu=0.7)
    K = F * np.exp(np.linspace(-0.5, 0.4, 17))
    vol = true.vol(K, F, T)
    fit = calibrate_sabr(K, vol, F, T, beta=beta)
    assert fit.success
    assert fit.params.alpha == pytest.approx(true.alpha, rel=1e-7)
    assert fit.params.rho == pytest.approx(true.rho, abs=1e-7)
    assert fit.params.nu == pytest.approx(true.nu, rel=1e-7)
    assert fit.rmse < 1e-10


def test_calibration_with_bid_ask_noise_stays_within_the_spread() -> None:
    F, T, beta = 100.0, 0.5, 0.5
    true = SabrParams(alpha=0.25 * 10.0, beta=beta, rho=-0.3, nu=0.9)
    K = F * np.exp(np.linspace(-0.45, 0.35, 25))
    vol = true.vol(K, F, T)
    half = 0.005  # +-0.5 vol point bid/ask
    for seed in range(3):
        noisy = vol + np.random.default_rng(seed).uniform(-half, half, K.size)
        fit = calibrate_sabr(K, noisy, F, T, beta=beta, weights=np.full(K.size, 1 / (2 * half)))
        err = fit.params.vol(K, F, T) - vol
        assert np.max(np.abs(err)) < half
        assert abs(fit.params.rho - true.rho) < 0.15 and abs(fit.params.nu / true.nu - 1) < 0.15


def test_bad_arguments_raise_with_the_field_name() -> None:
    with pytest.raises(ValueError, match="rho"):
        SabrParams(0.2, 0.5, 1.0, 0.3)
    with pytest.raises(ValueError, match="beta"):
        SabrParams(0.2, 1.5, 0.0, 0.3)
    with pytest.raises(ValueError, match="alpha"):
        SabrParams(0.0, 0.5, 0.0, 0.3)
    with pytest.raises(ValueError, match="vol"):
        calibrate_sabr([90.0, 100.0], [0.2, 0.2], 100.0, 1.0)
    with pytest.raises(ValueError, match="F"):
        calibrate_sabr([90.0, 100.0, 110.0], [0.2, 0.2, 0.2], -1.0, 1.0)
    assert math.isnan(float(sabr_vol(100.0, 100.0, 1.0, 0.2, 0.5, 0.0, -1.0)))
