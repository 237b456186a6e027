"""VolSurface: interpolation/extrapolation in T is free of calendar and butterfly arbitrage (checked on prices from
`bsm_price`, not on our own g), the Gatheral-Jacquier price interpolation identity, the forward curve, the calendar
part of the arbitrage report on slices that cross where a closed form says they do, and serialisation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tradesys.quant.options.european import bsm_price
from tradesys.quant.vol import (
    ArbitrageReport,
    SabrParams,
    SabrSlice,
    SviParams,
    SviSlice,
    VolSurface,
)

S, R, Q = 100.0, 0.03, 0.01
TS = (0.1, 0.25, 0.5, 1.0)


def _fwd(T: float) -> float:
    return S * math.exp((R - Q) * T)


def _surface() -> VolSurface:
    params = [
        SviParams(
            0.002 + 0.02 * T, 0.04 + 0.08 * math.sqrt(T), -0.6 + 0.1 * T, 0.01 + 0.03 * T, 0.08 + 0.15 * math.sqrt(T)
        )
        for T in TS
    ]
    return VolSurface([SviSlice(T, _fwd(T), p) for T, p in zip(TS, params, strict=True)], spot=S)


def _crossing_surface() -> tuple[VolSurface, float]:
    """Two SVI slices with the same b, m, sigma: w2 - w1 = (a2 - a1) + b (rho2 - rho1)(k - m), linear in k, so
    w2 < w1 exactly for k > k* = m - (a2 - a1) / (b (rho2 - rho1))."""
    b, m, sig = 0.1, 0.0, 0.2
    p1 = SviParams(0.02, b, 0.3, m, sig)
    p2 = SviParams(0.03, b, -0.4, m, sig)
    k_star = m - (p2.a - p1.a) / (b * (p2.rho - p1.rho))
    return VolSurface([SviSlice(0.5, _fwd(0.5), p1), SviSlice(1.0, _fwd(1.0), p2)], spot=S), k_star


def _call_normalised(w: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Undiscounted call price in units of the forward at log-moneyness k and total variance w (bsm_price, T = 1)."""
    return bsm_price(1.0, np.exp(k), 1.0, 0.0, 0.0, np.sqrt(w), True)


def test_exact_at_the_fitted_expiries() -> None:
    surf = _surface()
    k = np.linspace(-1.5, 1.5, 61)
    for sl in surf.slices:
        np.testing.assert_array_equal(surf.total_variance(k, sl.T), sl.total_variance(k))
        K = sl.forward * np.exp(k)
        np.testing.assert_allclose(surf.vol(K, sl.T), sl.implied_vol(k), rtol=1e-12)


@pytest.mark.parametrize("crossing", [False, True])
def test_total_variance_never_decreases_in_T(crossing: bool) -> None:
    surf = _crossing_surface()[0] if crossing else _surface()
    k = np.linspace(-3.0, 3.0, 241)
    T = np.concatenate([np.linspace(1e-3, 1.6, 400), surf.expiries])
    T.sort()
    w = surf.total_variance(k[None, :], T[:, None])
    assert np.all(np.isfinite(w))
    assert np.all(np.diff(w, axis=0) >= -1e-14)
    # equivalently: forward-normalised call prices at fixed k rise with T
    assert np.all(np.diff(_call_normalised(w, k[None, :]), axis=0) >= -1e-14)


def test_gatheral_jacquier_price_interpolation_identity() -> None:
    """Between expiries the normalised price is a c_1 + (1 - a) c_2, a from the ATM total variances (GJ 2014)."""
    surf = _surface()
    k = np.linspace(-1.2, 1.0, 45)
    s1, s2 = surf.slices[1], surf.slices[2]
    th1, th2 = float(s1.total_variance(0.0)), float(s2.total_variance(0.0))
    for T in (0.3, 0.4, 0.49):
        th = th1 + (T - s1.T) / (s2.T - s1.T) * (th2 - th1)
        a = (math.sqrt(th2) - math.sqrt(th)) / (math.sqrt(th2) - math.sqrt(th1))
        expected = a * _call_normalised(s1.total_variance(k), k) + (1 - a) * _call_normalised(s2.total_variance(k), k)
        got = _call_normalised(surf.total_variance(k, T), k)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)


def _convex_in_strike(surf: VolSurface, T: float) -> bool:
    """Discounted calls from bsm_price at the surface's vols: decreasing, slope >= -e^{-rT}, convex in K."""
    F = float(surf.forward(T))
    K = F * np.exp(np.linspace(-2.0, 1.5, 1401))
    C = bsm_price(S, K, T, R, Q, surf.vol(K, T), True)
    slope = np.diff(C) / np.diff(K)
    tol = 1e-9  # rounding of C ~ 100 over dK ~ 0.03
    return bool(
        np.all(slope <= tol)
        and np.all(slope >= -math.exp(-R * T) - tol)
        and np.all(np.diff(slope) >= -1e-10 * np.max(C))
    )


@pytest.mark.parametrize("crossing", [False, True])
def test_interpolated_and_extrapolated_smiles_have_convex_prices(crossing: bool) -> None:
    """Butterfly check on prices (not on g), before, between, at and after the expiries."""
    surf = _crossing_surface()[0] if crossing else _surface()
    for T in (0.02, 0.07, 0.18, 0.3, 0.6, 0.75, 1.0, 1.4):
        assert _convex_in_strike(surf, T), T
    # the check can fail: Gatheral-Jacquier's Vogt smile has butterfly arbitrage
    vogt = SviParams(a=-0.0410, b=0.1331, rho=0.3060, m=0.3586, sigma=0.4153)
    assert not _convex_in_strike(VolSurface([SviSlice(1.0, _fwd(1.0), vogt)], spot=S), 1.0)


def test_before_the_first_expiry_the_implied_vol_is_constant_at_fixed_k() -> None:
    surf = _surface()
    k = np.linspace(-1.0, 1.0, 21)
    v1 = surf.slices[0].implied_vol(k)
    for T in (1e-4, 0.01, 0.05, 0.0999):
        np.testing.assert_allclose(surf.implied_vol(k, T), v1, rtol=1e-13)
    assert np.all(surf.total_variance(k, 0.0) == 0.0)
    assert np.all(np.isnan(surf.total_variance(k, -0.1))) and np.all(np.isnan(surf.implied_vol(k, 0.0)))


def test_after_the_last_expiry_total_variance_grows_at_the_last_atm_forward_variance() -> None:
    surf = _surface()
    s3, s4 = surf.slices[-2], surf.slices[-1]
    v = (float(s4.total_variance(0.0)) - float(s3.total_variance(0.0))) / (s4.T - s3.T)
    k = np.linspace(-1.0, 1.0, 11)
    np.testing.assert_allclose(surf.total_variance(k, 2.5), s4.total_variance(k) + 1.5 * v, rtol=1e-14)


def test_forward_curve() -> None:
    surf = _surface()
    np.testing.assert_allclose(surf.forward(np.array(TS)), [_fwd(T) for T in TS], rtol=1e-14)
    assert float(surf.forward(0.0)) == pytest.approx(S, rel=1e-14)
    # log-linear in T between expiries and before the first (from the spot): exact here, as the carry is flat
    for T in (0.05, 0.17, 0.8, 1.7):
        assert float(surf.forward(T)) == pytest.approx(_fwd(T), rel=1e-13)
    one = VolSurface([SviSlice(0.5, 101.0, SviParams(0.01, 0.1, 0.0, 0.0, 0.1))])
    assert float(one.forward(2.0)) == 101.0


def test_calendar_violation_reported_where_the_slices_cross() -> None:
    surf, k_star = _crossing_surface()
    rep = surf.arbitrage_report()
    assert not rep.ok and all(b.ok for b in rep.butterfly)
    (cv,) = rep.calendar
    grid = surf.slices[1].check_grid()
    step = grid[1] - grid[0]
    assert (cv.T1, cv.T2) == (0.5, 1.0)
    assert abs(cv.k_lo - k_star) <= step and cv.k_hi == pytest.approx(grid[-1])
    w1, w2 = surf.slices[0].total_variance(grid), surf.slices[1].total_variance(grid)
    assert cv.max_decrease == pytest.approx(float(np.max(w1 - w2)), rel=1e-12)
    # the surface itself repairs it: at T2 it returns the envelope max(w1, w2), not the crossed slice
    k = np.array([k_star + 0.5])
    assert float(surf.total_variance(k, 1.0)[0]) == pytest.approx(float(surf.slices[0].total_variance(k)[0]))
    assert _surface().arbitrage_report().ok


def test_report_round_trips_through_json() -> None:
    surf, _ = _crossing_surface()
    rep = surf.arbitrage_report()
    text = json.dumps(rep.to_dict(), allow_nan=False)
    back = ArbitrageReport.from_dict(json.loads(text))
    assert back.ok == rep.ok and back.calendar == rep.calendar and back.wings == rep.wings
    assert [b.min_g for b in back.butterfly] == [b.min_g for b in rep.butterfly]


def test_surface_round_trips_through_json_and_mixes_models() -> None:
    sabr = SabrSlice(0.5, _fwd(0.5), SabrParams(0.2, 1.0, -0.4, 0.6), k_range=(-0.5, 0.4))
    svi = SviSlice(1.0, _fwd(1.0), SviParams(0.03, 0.12, -0.4, 0.05, 0.3))
    surf = VolSurface([svi, sabr], spot=S)
    assert [s.T for s in surf.slices] == [0.5, 1.0]
    back = VolSurface.from_dict(json.loads(json.dumps(surf.to_dict(), allow_nan=False)))
    K, T = np.linspace(60, 140, 17)[:, None], np.array([0.2, 0.5, 0.7, 1.0, 1.5])[None, :]
    np.testing.assert_array_equal(back.vol(K, T), surf.vol(K, T))
    rep = surf.arbitrage_report()
    assert rep.wings[0].asymptotic is False and rep.wings[1].asymptotic is True


def test_sabr_slice_g_by_finite_differences_matches_breeden_litzenberger() -> None:
    sl = SabrSlice(1.0, 100.0, SabrParams(0.25, 1.0, -0.5, 0.8))
    k = np.linspace(-0.8, 0.6, 15)
    K = 100.0 * np.exp(k)
    w, _, _ = sl.derivatives(k)
    g = sl.g(k)
    dens = g / np.sqrt(2 * math.pi * w) * np.exp(-0.5 * (-k / np.sqrt(w) - np.sqrt(w) / 2) ** 2) / K
    h = 0.01

    def c(x: np.ndarray) -> np.ndarray:
        return bsm_price(100.0, x, 1.0, 0.0, 0.0, sl.vol(x), True)

    bl = (c(K + h) - 2 * c(K) + c(K - h)) / h**2
    np.testing.assert_allclose(dens, bl, rtol=1e-4, atol=1e-8)


def test_bad_surfaces_raise() -> None:
    p = SviParams(0.01, 0.1, 0.0, 0.0, 0.1)
    with pytest.raises(ValueError, match=r"^slices:"):
        VolSurface([])
    with pytest.raises(ValueError, match=r"^slices:"):
        VolSurface([SviSlice(0.5, 100.0, p), SviSlice(0.5, 100.0, p)])
    with pytest.raises(ValueError, match=r"^T:"):
        SviSlice(0.0, 100.0, p)
    with pytest.raises(ValueError, match=r"^forward:"):
        SviSlice(1.0, -5.0, p)
    with pytest.raises(ValueError, match=r"^spot:"):
        VolSurface([SviSlice(0.5, 100.0, p)], spot=0.0)
    surf = VolSurface([SviSlice(0.5, 100.0, p)])
    out = surf.vol(np.array([100.0, -1.0, np.nan, 100.0]), np.array([0.5, 0.5, 0.5, -1.0]))
    assert np.isfinite(out[0]) and np.all(np.isnan(out[1:]))
