"""Implied volatility (Jäckel's "Let's Be Rational"): accuracy, peers, bad rows, torch.

Reference prices come from our own normalised Black function, which is first checked against a 40-digit mpmath
evaluation (mpmath ships with torch, through sympy) across the wings and against QuantLib's blackFormula.

Where the round trip can be exact. A price carries rounding of relative size eps (and so do F and K, through
the intrinsic value the price contains), so no solver can recover sigma better than

    eps * cond,   cond = (P + df (F Phi(theta d1) + K Phi(theta d2))) / (sigma vega)

(the first-order sensitivity of sigma to relative perturbations of P, F and K). The accuracy domain below is
eps * cond <= 1e-13 (the price pins sigma to 1e-13, leaving the solver a factor 10 below the 1e-12 target) with the
normalised time value above 1e-280 (clear of subnormal numbers). On the test grid this holds for every
out-of-the-money option out to 10 standard deviations (except near the upper price bound, sigma sqrt(T) ~ 10, and
for sigma sqrt(T) < 0.006, where the rounding of ln(F/K) itself, eps absolute, is 1e-13 of sigma sqrt(T)), and for
in-the-money ones (with sigma sqrt(T) > 0.05) to about 2 standard deviations: deeper in the money the time value is
below the rounding of the intrinsic value and the price no longer determines the vol. Outside the domain the test
still requires the error to stay within a small multiple of eps * cond.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import QuantLib as ql
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.special import ndtr

from tradesys.quant.options.errors import OptionError
from tradesys.quant.options.implied_vol import (
    INTRINSIC_RTOL,
    implied_normalised_vol,
    implied_vol,
    implied_vol_black76,
    normalised_black,
    normalised_intrinsic,
    normalised_vega,
)

EPS = float(np.finfo(np.float64).eps)
TARGET = 1e-12
#: Outside the accuracy domain: |error| <= TARGET + SLACK * eps * cond (measured worst on the grids: about 55).
SLACK = 128.0


# --------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------


def bsm_case(
    sigma: np.ndarray,
    T: np.ndarray,
    z: np.ndarray,
    call: np.ndarray,
    S: float = 100.0,
    r: float = 0.03,
    q: float = 0.01,
) -> dict[str, np.ndarray]:
    """Options at standardised moneyness z = ln(F/K)/(sigma sqrt T), their accurate prices and condition numbers."""
    sigma, T, z, call = np.broadcast_arrays(sigma, T, z, call)
    F = S * np.exp((r - q) * T)
    s = sigma * np.sqrt(T)
    K = F * np.exp(-z * s)
    theta = np.where(call, 1.0, -1.0)
    df = np.exp(-r * T)
    x = np.log(F / K)
    b = normalised_black(x, s, theta)
    price = df * np.sqrt(F) * np.sqrt(K) * b
    d1 = x / s + 0.5 * s
    d2 = d1 - s
    vega = df * F * np.exp(-0.5 * d1 * d1) / math.sqrt(2.0 * math.pi) * np.sqrt(T)
    cond = (price + df * (F * ndtr(theta * d1) + K * ndtr(theta * d2))) / (sigma * vega)
    time_value = normalised_black(-np.abs(x), s)
    domain = (EPS * cond <= 1e-13) & (time_value > 1e-280)
    return {
        "price": price, "S": np.full_like(price, S), "K": K, "T": T, "r": r, "q": q, "call": call, "sigma": sigma,
        "F": F, "df": df, "cond": cond, "domain": domain, "theta": theta, "z": z,
    }  # fmt: skip


def grid_case() -> dict[str, np.ndarray]:
    sigma = np.geomspace(0.01, 3.0, 12)
    T = np.geomspace(1.0 / 365.0, 10.0, 10)
    z = np.linspace(-10.0, 10.0, 41)
    call = np.array([True, False])
    return bsm_case(*(a.ravel() for a in np.meshgrid(sigma, T, z, call, indexing="ij")))


def mp_black(x: float, s: float, theta: float) -> float:
    """Normalised Black in 40 digits; each option type from its own formula (no put-call parity cancellation)."""
    with mpmath.workdps(40):
        x_, s_ = mpmath.mpf(x), mpmath.mpf(s)
        h, t = x_ / s_, s_ / 2
        if theta > 0:
            v = mpmath.exp(x_ / 2) * mpmath.ncdf(h + t) - mpmath.exp(-x_ / 2) * mpmath.ncdf(h - t)
        else:
            v = mpmath.exp(-x_ / 2) * mpmath.ncdf(t - h) - mpmath.exp(x_ / 2) * mpmath.ncdf(-h - t)
        return float(v)


# --------------------------------------------------------------------------------------------------------------
# The normalised Black function
# --------------------------------------------------------------------------------------------------------------


def test_normalised_black_matches_40_digits_in_all_regions() -> None:
    """Asymptotic (h < -10), small-t (s < 0.42), Cody regions, in- and out-of-the-money, down to 1e-290.

    Bound: the one exponential exp(-(h^2+t^2)/2) is taken of an argument rounded to relative eps, hence a relative
    error of eps (h^2+t^2)/2 at most (the same holds for any double evaluation) plus a few eps elsewhere.
    """
    rng = np.random.default_rng(3)
    n = 400
    s = np.exp(rng.uniform(math.log(1e-4), math.log(30.0), n))
    h = rng.uniform(-37.0, 37.0, n)
    x = h * s
    x[:40] = rng.uniform(-1e-3, 1e-3, 40)  # near the money, small |x|
    x[40] = 0.0
    theta = np.where(rng.uniform(size=n) < 0.5, 1.0, -1.0)
    ref = np.array([mp_black(a, b, c) for a, b, c in zip(x, s, theta, strict=True)])
    got = normalised_black(x, s, theta)
    keep = ref > 1e-290
    assert keep.sum() > 300
    hh, tt = x / s, s / 2
    bound = 8.0 * EPS * (1.0 + 0.5 * (hh * hh + tt * tt))
    rel = np.abs(got / ref - 1.0)
    assert np.all(rel[keep] <= bound[keep]), np.max(rel[keep] / bound[keep])
    # |h| <= 10: the usual region, full precision outright
    usual = keep & (np.abs(hh) <= 10.0)
    assert np.max(rel[usual]) < 1e-13


def test_normalised_black_matches_quantlib_black_formula() -> None:
    """QuantLib's F N(d1) - K N(d2) carries an absolute error of a few eps * max(F, K); ours must agree to that."""
    c = grid_case()
    rng = np.random.default_rng(0)
    normal = np.flatnonzero((np.abs(c["z"]) <= 3.0) & (c["sigma"] * np.sqrt(c["T"]) >= 0.02))
    for i in rng.choice(normal, 300, replace=False):
        kind = ql.Option.Call if c["call"][i] else ql.Option.Put
        s = c["sigma"][i] * math.sqrt(c["T"][i])
        ql_price = ql.blackFormula(kind, c["K"][i], c["F"][i], s, c["df"][i])
        assert abs(ql_price - c["price"][i]) <= 16 * EPS * max(c["F"][i], c["K"][i])


def test_normalised_intrinsic_and_vega() -> None:
    x = np.array([1e-300, 1e-12, 1e-4, 0.5, 10.0, 700.0])
    want = np.array([float(2 * mpmath.sinh(mpmath.mpf(v) / 2)) for v in x])
    assert np.all(np.abs(normalised_intrinsic(x) / want - 1.0) < 4 * EPS)
    # vega = d b / d s, by a central difference in 40 digits at a few points
    for xv, sv in [(-0.3, 0.2), (0.0, 1.0), (-5.0, 2.0), (2.0, 0.5)]:
        with mpmath.workdps(40):
            d = mpmath.diff(lambda u, xv=xv: mpmath.exp(xv / 2) * mpmath.ncdf(xv / u + u / 2)
                            - mpmath.exp(-xv / 2) * mpmath.ncdf(xv / u - u / 2), sv)  # fmt: skip
        assert abs(normalised_vega(xv, sv)[()] / float(d) - 1.0) < 1e-14


# --------------------------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------------------------


def test_round_trip_grid_covers_the_wings() -> None:
    """sigma 0.01..3, T 1 day..10 years, ln(F/K) from -10 to +10 standard deviations, calls and puts."""
    c = grid_case()
    sigma, codes = implied_vol(c["price"], c["S"], c["K"], c["T"], c["r"], c["q"], c["call"])
    rel = np.abs(sigma / c["sigma"] - 1.0)
    dom = c["domain"]
    otm = c["theta"] * c["z"] <= 0.0
    # the domain is the wings, not a slice of the middle
    s = c["sigma"] * np.sqrt(c["T"])
    assert np.all(dom[otm & (s > 0.006) & (s < 5.0)])
    assert np.all(dom[otm & (np.abs(c["z"]) == 10.0)])
    assert np.all(dom[~otm & (np.abs(c["z"]) <= 0.5) & (s > 0.05) & (s < 1.0)])
    assert np.all(codes[dom] == OptionError.OK)
    assert np.max(rel[dom]) < TARGET
    # everywhere else: either a clean code (price at the upper bound within rounding), 0.0 for a price equal to
    # its intrinsic value in double (time value below the intrinsic's rounding), or graceful degradation
    ok = codes == OptionError.OK
    zero = ok & (sigma == 0.0)
    assert np.all(EPS * c["cond"][zero] > 1e-3)
    solved = ok & ~zero
    assert np.all(rel[solved] <= TARGET + SLACK * EPS * c["cond"][solved])
    assert np.all(codes[~ok] == OptionError.PRICE_ABOVE_MAX)
    assert np.all(EPS * c["cond"][~ok] > 0.05)  # at the bound in double: sigma not pinned to 5% anyway


def test_round_trip_black76_matches_bsm() -> None:
    c = grid_case()
    F = c["F"]
    s76, codes76 = implied_vol_black76(c["price"], F, c["K"], c["T"], c["r"], c["call"])
    dom = c["domain"]
    assert np.all(codes76[dom] == OptionError.OK)
    assert np.max(np.abs(s76[dom] / c["sigma"][dom] - 1.0)) < TARGET


def test_normalised_round_trip_far_wings() -> None:
    """Jäckel's own domain, far beyond any market: |x| up to 700, s up to 40, beta down to 1e-300.

    In normalised units x is exact, so cond = beta / (s b'(s)) (the price's rounding only).
    """
    rng = np.random.default_rng(11)
    n = 40_000
    s = np.exp(rng.uniform(math.log(1e-3), math.log(40.0), n))
    x = np.concatenate([rng.uniform(-40.0, 40.0, n // 2) * s[: n // 2], rng.uniform(-700.0, 700.0, n // 2)])
    x[:100] = 0.0
    theta = np.where(rng.uniform(size=n) < 0.5, 1.0, -1.0)
    beta = normalised_black(x, s, theta)
    vega = normalised_vega(x, s)
    with np.errstate(all="ignore"):  # vega underflows far out; cond is then inf and the row is not checked
        cond = np.maximum(beta / (s * vega), 1.0)
    time_value = normalised_black(-np.abs(x), s)
    got, codes = implied_normalised_vol(beta, x, theta)
    rel = np.abs(got / s - 1.0)
    rep = (time_value > 1e-300) & (EPS * cond < 1e-3)
    assert rep.sum() > n // 4
    assert np.all(codes[rep] == OptionError.OK)
    assert np.all(rel[rep] <= TARGET + SLACK * EPS * cond[rep])
    dom = rep & (EPS * cond <= 1e-13) & (time_value > 1e-280)
    assert np.max(rel[dom]) < TARGET
    # at the money exactly
    atm = (x == 0.0) & dom
    assert atm.sum() > 50
    assert np.max(rel[atm]) < TARGET


def test_normalised_round_trip_near_the_money_tiny_and_huge_vols() -> None:
    """x = 0 and |x| small with s from 1e-300 to 30: the guess's middle branches with beta far below b_c, b_h.

    (|x| down to 1e-16, the smallest nonzero ln(F/K) of two doubles.)
    """
    x1 = np.array([0.0, -0.0, -2e-16, 2e-16, -1e-12, 1e-12, -1e-6, 1e-6, -1e-3, 1e-3])
    s1 = np.geomspace(1e-300, 30.0, 301)
    x, s = (a.ravel() for a in np.meshgrid(x1, s1, indexing="ij"))
    theta = np.where(x > 0.0, -1.0, 1.0)  # out of the money
    beta = normalised_black(x, s, theta)
    with np.errstate(all="ignore"):
        cond = np.maximum(beta / (s * normalised_vega(x, s)), 1.0)
    got, codes = implied_normalised_vol(beta, x, theta)
    rep = (beta > 1e-300) & (EPS * cond < 1e-3)
    assert rep.sum() > 600  # x = 0 over the whole range of s; |x| > 0 once s is not far below |x|
    assert np.all(codes[rep] == OptionError.OK)
    rel = np.abs(got / s - 1.0)
    assert np.all(rel[rep] <= TARGET + SLACK * EPS * cond[rep])
    assert np.max(rel[rep & (EPS * cond <= 1e-13)]) < TARGET


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sigma=st.floats(0.01, 3.0),
    T=st.floats(1.0 / 365.0, 10.0),
    z=st.floats(-10.0, 10.0),
    call=st.booleans(),
    S=st.floats(1.0, 1000.0),
    r=st.floats(-0.02, 0.10),
    q=st.floats(0.0, 0.08),
)
def test_round_trip_hypothesis(sigma: float, T: float, z: float, call: bool, S: float, r: float, q: float) -> None:
    c = bsm_case(np.array(sigma), np.array(T), np.array(z), np.array(call), S=S, r=r, q=q)
    got, code = implied_vol(c["price"], S, c["K"], T, r, q, call)
    cond = float(c["cond"])
    if int(code) != OptionError.OK:  # only a price at its upper bound within rounding may be refused
        assert int(code) == OptionError.PRICE_ABOVE_MAX and EPS * cond > 0.05
        return
    if float(got) == 0.0:  # price equal to its intrinsic value in double: the time value is below its rounding
        assert EPS * cond > 1e-3
        return
    rel = abs(float(got) / sigma - 1.0)
    assert rel <= TARGET + SLACK * EPS * cond
    if bool(c["domain"]):
        assert rel < TARGET


# --------------------------------------------------------------------------------------------------------------
# Peers
# --------------------------------------------------------------------------------------------------------------


def test_agrees_with_py_vollib() -> None:
    """py_vollib runs the (2014) Let's Be Rational in pure Python: same algorithm family, same precision."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from py_vollib.black_scholes_merton.implied_volatility import implied_volatility as pv_iv

    rng = np.random.default_rng(5)
    n = 300
    c = bsm_case(
        rng.uniform(0.05, 1.0, n), rng.uniform(0.05, 2.0, n), rng.uniform(-3.0, 3.0, n), rng.uniform(size=n) < 0.5
    )
    dom = c["domain"]
    ours, codes = implied_vol(c["price"], c["S"], c["K"], c["T"], c["r"], c["q"], c["call"])
    theirs = np.array(
        [
            pv_iv(c["price"][i], c["S"][i], c["K"][i], c["T"][i], c["r"], c["q"], "c" if c["call"][i] else "p")
            for i in range(n)
        ]
    )
    assert dom.sum() > 250
    assert np.all(codes == OptionError.OK)
    assert np.max(np.abs(theirs[dom] / ours[dom] - 1.0)) < TARGET


def test_agrees_with_quantlib_implied_volatility() -> None:
    """QuantLib's VanillaOption.impliedVolatility (Brent, accuracy 1e-12 in vol) on whole-day expiries."""
    today = ql.Date(15, 1, 2024)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    rng = np.random.default_rng(1)
    S, r, q = 100.0, 0.03, 0.01
    spot = ql.QuoteHandle(ql.SimpleQuote(S))
    rts = ql.YieldTermStructureHandle(ql.FlatForward(today, r, dc))
    qts = ql.YieldTermStructureHandle(ql.FlatForward(today, q, dc))
    vts = ql.BlackVolTermStructureHandle(ql.BlackConstantVol(today, ql.NullCalendar(), 0.2, dc))
    process = ql.BlackScholesMertonProcess(spot, qts, rts, vts)
    for _ in range(60):
        days = int(rng.integers(7, 3 * 365))
        T = days / 365.0
        call = bool(rng.integers(2))
        c = bsm_case(np.array(rng.uniform(0.05, 1.0)), np.array(T), np.array(rng.uniform(-3, 3)), np.array(call))
        price, K = float(c["price"]), float(c["K"])
        option = ql.VanillaOption(
            ql.PlainVanillaPayoff(ql.Option.Call if call else ql.Option.Put, K), ql.EuropeanExercise(today + days)
        )
        option.setPricingEngine(ql.AnalyticEuropeanEngine(process))
        theirs = option.impliedVolatility(price, process, 1e-12, 1000, 1e-4, 5.0)
        ours, code = implied_vol(price, S, K, T, r, q, call)
        assert int(code) == OptionError.OK
        assert abs(float(ours) - theirs) < 2e-12  # QuantLib's accuracy, plus its own pricing noise


# --------------------------------------------------------------------------------------------------------------
# Bad rows, in a batch with good ones
# --------------------------------------------------------------------------------------------------------------

S0, R0, Q0 = 100.0, 0.05, 0.02


def _price(sigma: float, K: float, T: float, call: bool) -> float:
    c = bsm_case(np.array(sigma), np.array(T), np.array(0.0), np.array(call), S=S0, r=R0, q=Q0)
    F = float(c["F"])
    x = math.log(F / K)
    s = sigma * math.sqrt(T)
    return math.exp(-R0 * T) * math.sqrt(F) * math.sqrt(K) * float(normalised_black(x, s, 1.0 if call else -1.0))


def bad_batch() -> tuple[list[tuple[float, ...]], list[OptionError], list[float]]:
    """(price, S, K, T, r, q, is_call) rows, their codes, and the vol expected (NaN for errors)."""
    fd = S0 * math.exp(-Q0 * 1.0)  # S e^{-qT}, T = 1
    kd = 100.0 * math.exp(-R0 * 1.0)
    kd120 = 120.0 * math.exp(-R0 * 1.0)
    nan = math.nan
    rows = [
        ((_price(0.2, 110.0, 0.5, True), S0, 110.0, 0.5, R0, Q0, 1.0), OptionError.OK, 0.2),
        ((nan, S0, 100.0, 1.0, R0, Q0, 1.0), OptionError.NAN_INPUT, nan),
        ((5.0, math.inf, 100.0, 1.0, R0, Q0, 1.0), OptionError.NAN_INPUT, nan),
        ((5.0, S0, 100.0, 1.0, nan, Q0, 0.0), OptionError.NAN_INPUT, nan),
        ((5.0, 0.0, 100.0, 1.0, R0, Q0, 1.0), OptionError.NON_POSITIVE_SPOT, nan),
        ((5.0, -5.0, 100.0, 1.0, R0, Q0, 1.0), OptionError.NON_POSITIVE_SPOT, nan),
        ((5.0, S0, 0.0, 1.0, R0, Q0, 1.0), OptionError.NON_POSITIVE_STRIKE, nan),
        ((5.0, S0, 100.0, -0.1, R0, Q0, 1.0), OptionError.NEGATIVE_EXPIRY, nan),
        ((5.0, S0, 100.0, 0.0, R0, Q0, 1.0), OptionError.ZERO_EXPIRY, nan),
        ((_price(0.5, 50.0, 2.0, False), S0, 50.0, 2.0, R0, Q0, 0.0), OptionError.OK, 0.5),
        # in-the-money call (S=100, K=50): intrinsic minus a millionth
        (
            ((fd - 50.0 * math.exp(-R0)) * (1 - 1e-6), S0, 50.0, 1.0, R0, Q0, 1.0),
            OptionError.PRICE_BELOW_INTRINSIC,
            nan,
        ),
        ((-1e-3, S0, 150.0, 1.0, R0, Q0, 1.0), OptionError.PRICE_BELOW_INTRINSIC, nan),
        ((fd, S0, 100.0, 1.0, R0, Q0, 1.0), OptionError.PRICE_ABOVE_MAX, nan),  # call at S e^{-qT}
        ((kd * 1.01, S0, 100.0, 1.0, R0, Q0, 0.0), OptionError.PRICE_ABOVE_MAX, nan),  # put above K e^{-rT}
        ((0.0, S0, 150.0, 1.0, R0, Q0, 1.0), OptionError.OK, 0.0),  # OTM at intrinsic 0
        ((fd - 50.0 * math.exp(-R0), S0, 50.0, 1.0, R0, Q0, 1.0), OptionError.OK, 0.0),  # ITM call at intrinsic
        # ITM put a few ulps under its intrinsic: within INTRINSIC_RTOL, still "at intrinsic"
        (((kd120 - fd) * (1 - 4 * EPS), S0, 120.0, 1.0, R0, Q0, 0.0), OptionError.OK, 0.0),
        ((_price(1.3, 80.0, 0.02, False), S0, 80.0, 0.02, R0, Q0, 0.0), OptionError.OK, 1.3),
    ]
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


def _check_batch(sigma: np.ndarray, codes: np.ndarray) -> None:
    _, want_codes, want_sigma = bad_batch()
    assert codes.dtype == np.int8
    assert codes.tolist() == [int(c) for c in want_codes]
    for got, want in zip(sigma.tolist(), want_sigma, strict=True):
        if math.isnan(want):
            assert math.isnan(got)
        else:
            assert abs(got - want) <= TARGET * max(want, 1e-300)


def test_bad_rows_get_nan_and_codes_and_the_batch_goes_on() -> None:
    rows, _, _ = bad_batch()
    cols = [np.array(c) for c in zip(*rows, strict=True)]
    sigma, codes = implied_vol(*cols[:6], cols[6] != 0.0)
    _check_batch(sigma, codes)
    # the good rows get exactly what they get alone
    for i, row in enumerate(rows):
        if codes[i] == OptionError.OK:
            alone, code = implied_vol(*row[:6], bool(row[6]))
            assert int(code) == OptionError.OK
            assert float(alone) == pytest.approx(sigma[i], rel=1e-15, abs=0.0)
    assert 0.0 < INTRINSIC_RTOL < 1e-13


def test_bad_rows_black76_and_normalised() -> None:
    F = np.array([100.0, -1.0, 100.0, 100.0, 100.0, 100.0])
    K = np.array([100.0, 100.0, 100.0, 80.0, 100.0, 100.0])
    T = np.array([1.0, 1.0, 1.0, 1.0, 0.0, 1.0])
    df = math.exp(-0.03)
    price = np.array([df * 100.0 * float(normalised_black(0.0, 0.25, 1.0)), 5.0, 100.0 * df, 19.0 * df, 5.0, 0.0])
    sigma, codes = implied_vol_black76(price, F, K, T, 0.03, True)
    assert codes.tolist() == [
        OptionError.OK,
        OptionError.NON_POSITIVE_SPOT,
        OptionError.PRICE_ABOVE_MAX,
        OptionError.PRICE_BELOW_INTRINSIC,
        OptionError.ZERO_EXPIRY,
        OptionError.OK,
    ]
    assert sigma[0] == pytest.approx(0.25, rel=TARGET)
    assert np.isnan(sigma[1:5]).all() and sigma[5] == 0.0

    beta = np.array([float(normalised_black(-0.5, 0.3, 1.0)), math.nan, 0.1, math.exp(0.25), 0.0])
    x = np.array([-0.5, 0.0, 0.5, 0.5, -0.5])
    s, codes = implied_normalised_vol(beta, x, np.array([1.0, 1.0, 1.0, 1.0, 1.0]))
    assert codes.tolist() == [
        OptionError.OK,
        OptionError.NAN_INPUT,
        OptionError.PRICE_BELOW_INTRINSIC,  # intrinsic 2 sinh(0.25) = 0.505
        OptionError.PRICE_ABOVE_MAX,
        OptionError.OK,
    ]
    assert s[0] == pytest.approx(0.3, rel=TARGET) and s[4] == 0.0


def test_shapes_scalars_and_empty() -> None:
    sigma, code = implied_vol(_price(0.3, 105.0, 1.0, True), S0, 105.0, 1.0, R0, Q0, True)
    assert sigma.shape == () and code.shape == ()
    assert float(sigma) == pytest.approx(0.3, rel=TARGET)
    sigma, codes = implied_vol(np.empty((0,)), S0, 100.0, 1.0, R0, Q0, True)
    assert sigma.shape == (0,) and codes.shape == (0,)
    c = grid_case()
    p = c["price"].reshape(24, -1)
    sigma, codes = implied_vol(p, c["S"].reshape(p.shape), c["K"].reshape(p.shape), c["T"].reshape(p.shape),
                               c["r"], c["q"], c["call"].reshape(p.shape))  # fmt: skip
    assert sigma.shape == p.shape and codes.shape == p.shape


# --------------------------------------------------------------------------------------------------------------
# torch
# --------------------------------------------------------------------------------------------------------------


def test_torch_float64_matches_numpy() -> None:
    c = grid_case()
    np_sigma, np_codes = implied_vol(c["price"], c["S"], c["K"], c["T"], c["r"], c["q"], c["call"])
    t = {k: torch.from_numpy(np.asarray(c[k])) for k in ("price", "S", "K", "T", "call")}
    sigma, codes = implied_vol(t["price"], t["S"], t["K"], t["T"], c["r"], c["q"], t["call"])
    assert isinstance(sigma, torch.Tensor) and sigma.dtype == torch.float64
    assert isinstance(codes, torch.Tensor) and codes.dtype == torch.int8
    dom = c["domain"]
    # erfcx/ndtr differ by an ulp or two between scipy and torch: compare where the price pins sigma
    assert np.array_equal(codes.numpy()[dom], np_codes[dom])
    assert np.max(np.abs(sigma.numpy()[dom] / np_sigma[dom] - 1.0)) < TARGET
    assert np.max(np.abs(sigma.numpy()[dom] / c["sigma"][dom] - 1.0)) < TARGET
    # the bad-row batch, in torch
    rows, _, _ = bad_batch()
    cols = [torch.tensor(col, dtype=torch.float64) for col in zip(*rows, strict=True)]
    tsig, tcodes = implied_vol(*cols[:6], cols[6] != 0.0)
    _check_batch(tsig.numpy(), tcodes.numpy())
    # normalised entry points
    x = torch.linspace(-0.4, 2.0, 25, dtype=torch.float64)  # puts: out of the money, and a little in
    s = torch.full_like(x, 0.4)
    beta = normalised_black(x, s, -1.0)
    assert isinstance(beta, torch.Tensor)
    assert np.allclose(beta.numpy(), normalised_black(x.numpy(), s.numpy(), -1.0), rtol=1e-14, atol=0.0)
    back, bcodes = implied_normalised_vol(beta, x, -1.0)
    assert isinstance(back, torch.Tensor) and (bcodes == 0).all()
    assert torch.max(torch.abs(back / s - 1.0)).item() < TARGET
