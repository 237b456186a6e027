"""European BSM / Black-76 prices and Greeks against independent references.

References: QuantLib's AnalyticEuropeanEngine / BlackCalculator / blackFormula (prices and first-order Greeks),
mpmath at 60 digits (deep out-of-the-money prices), finite differences of our own price and lower Greeks (every
Greek), no-arbitrage identities (parity, bounds, monotonicity), and the torch path against the numpy one
(including autograd against the closed-form delta and vega).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tradesys.quant.options.errors import OptionError
from tradesys.quant.options.european import (
    GREEK_NAMES,
    Greeks,
    black76_greeks,
    black76_price,
    black76_price_checked,
    bsm_greeks,
    bsm_price,
    bsm_price_checked,
    per_day,
    per_vol_point,
)

ql = pytest.importorskip("QuantLib")


def sweep(n: int, seed: int, *, moneyness: float = 1.0, days: tuple[int, int] = (1, 3650)) -> dict[str, np.ndarray]:
    """Random options: S in [20, 200], ln(K/S) in +-moneyness, T whole days / 365, r, q, sigma, call/put."""
    rng = np.random.default_rng(seed)
    S = rng.uniform(20.0, 200.0, n)
    d = rng.integers(days[0], days[1], n)
    return {
        "S": S,
        "K": S * np.exp(rng.uniform(-moneyness, moneyness, n)),
        "T": d / 365.0,
        "days": d,
        "r": rng.uniform(-0.02, 0.10, n),
        "q": rng.uniform(0.0, 0.08, n),
        "sigma": rng.uniform(0.02, 1.2, n),
        "call": rng.random(n) < 0.5,
    }


def args(p: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    return p["S"], p["K"], p["T"], p["r"], p["q"], p["sigma"], p["call"]


def close(ours: np.ndarray, ref: np.ndarray, rtol: float, atol: float, what: str) -> None:
    err = np.abs(np.asarray(ours) - np.asarray(ref))
    bad = err > rtol * np.abs(ref) + atol
    assert not bad.any(), f"{what}: {bad.sum()} rows off, worst ours={ours[bad][:3]} ref={np.asarray(ref)[bad][:3]}"


# ------------------------------------------------------------------------------------------------- QuantLib


def quantlib_bsm(p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """AnalyticEuropeanEngine on flat continuously compounded curves, Actual365Fixed, T = days / 365."""
    today = ql.Date(15, 1, 2025)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    spot, rate, div, vol = ql.SimpleQuote(1.0), ql.SimpleQuote(0.0), ql.SimpleQuote(0.0), ql.SimpleQuote(0.2)
    rts = ql.YieldTermStructureHandle(ql.FlatForward(today, ql.QuoteHandle(rate), dc))
    dts = ql.YieldTermStructureHandle(ql.FlatForward(today, ql.QuoteHandle(div), dc))
    vts = ql.BlackVolTermStructureHandle(ql.BlackConstantVol(today, ql.NullCalendar(), ql.QuoteHandle(vol), dc))
    engine = ql.AnalyticEuropeanEngine(ql.BlackScholesMertonProcess(ql.QuoteHandle(spot), dts, rts, vts))
    names = ("price", "delta", "gamma", "vega", "theta", "rho", "rho_q", "vanna", "vomma")
    out: dict[str, list[float]] = {k: [] for k in names}
    for i in range(len(p["S"])):
        spot.setValue(p["S"][i])
        rate.setValue(p["r"][i])
        div.setValue(p["q"][i])
        vol.setValue(p["sigma"][i])
        kind = ql.Option.Call if p["call"][i] else ql.Option.Put
        opt = ql.VanillaOption(ql.PlainVanillaPayoff(kind, p["K"][i]), ql.EuropeanExercise(today + int(p["days"][i])))
        opt.setPricingEngine(engine)
        T = p["T"][i]
        fwd = p["S"][i] * math.exp((p["r"][i] - p["q"][i]) * T)
        calc = ql.BlackCalculator(
            ql.PlainVanillaPayoff(kind, p["K"][i]), fwd, p["sigma"][i] * math.sqrt(T), math.exp(-p["r"][i] * T)
        )
        out["price"].append(opt.NPV())
        out["delta"].append(opt.delta())
        out["gamma"].append(opt.gamma())
        out["vega"].append(opt.vega())  # per 1.00 of vol
        out["theta"].append(opt.theta())  # per year, calendar time, = -dV/dT
        out["rho"].append(opt.rho())  # per 1.00 of rate
        out["rho_q"].append(opt.dividendRho())
        out["vanna"].append(calc.vanna(p["S"][i], T))
        # QuantLib 1.44 BlackCalculator::volga is vega d1 d2 / (sigma sqrt(T)), i.e. per unit of total std dev;
        # d2V/dsigma2 (checked against finite differences below) is that times sqrt(T).
        out["vomma"].append(calc.volga(T) * math.sqrt(T))
    return {k: np.array(v) for k, v in out.items()}


# QuantLib evaluates N(x) as 0.5 (1 + erf(x / sqrt 2)) down to N = 1e-8: absolute error ~1e-16 but relative
# error up to ~1e-8 on small values. So: relative 1e-9 on the values that matter, plus an absolute floor of
# ~1e-12 of the value's scale (S ~ 100 for price/vega/theta/rho/vanna/vomma, 1 for delta, 1/S for gamma).
QL_ATOL = {
    "price": 1e-10,
    "delta": 1e-13,
    "gamma": 1e-14,
    "vega": 1e-10,
    "theta": 1e-10,
    "rho": 1e-10,
    "rho_q": 1e-10,
    "vanna": 1e-12,
    "vomma": 1e-10,
}


def test_bsm_matches_quantlib_on_random_sweep() -> None:
    p = sweep(400, seed=1)
    ref = quantlib_bsm(p)
    g = bsm_greeks(*args(p))
    assert (g.codes == 0).all()
    for name, atol in QL_ATOL.items():
        close(g[name], ref[name], 1e-9, atol, name)


def test_black76_matches_quantlib() -> None:
    p = sweep(300, seed=2)
    F, K, T, r, sig, call = p["S"], p["K"], p["T"], p["r"], p["sigma"], p["call"]
    g = black76_greeks(F, K, T, r, sig, call)
    price, delta, gamma, vega = [], [], [], []
    for i in range(len(F)):
        kind = ql.Option.Call if call[i] else ql.Option.Put
        std, df = sig[i] * math.sqrt(T[i]), math.exp(-r[i] * T[i])
        price.append(ql.blackFormula(kind, K[i], F[i], std, df))
        calc = ql.BlackCalculator(ql.PlainVanillaPayoff(kind, K[i]), F[i], std, df)
        delta.append(calc.deltaForward())
        gamma.append(calc.gammaForward())
        vega.append(calc.vega(T[i]))
    close(g.price, np.array(price), 1e-9, 1e-10, "price")
    close(black76_price(F, K, T, r, sig, call), np.array(price), 1e-9, 1e-10, "black76_price")
    close(g.delta, np.array(delta), 1e-9, 1e-13, "delta")
    close(g.gamma, np.array(gamma), 1e-9, 1e-14, "gamma")
    close(g.vega, np.array(vega), 1e-9, 1e-10, "vega")
    # Black-76 rho with F held fixed: V = e^{-rT} * (undiscounted), so rho = -T V exactly
    close(g.rho, -T * g.price, 1e-13, 1e-13, "rho")
    assert g.rho_q is None


# ------------------------------------------------------------------------------------------ finite differences


def d5(f, x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Five-point central difference: truncation h^4 f^(5) / 30, rounding ~1.5 eps |f| / h."""
    return (f(x - 2 * h) - 8 * f(x - h) + 8 * f(x + h) - f(x + 2 * h)) / (12 * h)


def moderate(n: int, seed: int) -> dict[str, np.ndarray]:
    """Rows where no Greek is negligibly small or singular: |ln(K/S)| <= 0.4, T in [0.1, 3], sigma in [0.1, 0.6]."""
    rng = np.random.default_rng(seed)
    S = rng.uniform(50.0, 150.0, n)
    return {
        "S": S,
        "K": S * np.exp(rng.uniform(-0.4, 0.4, n)),
        "T": rng.uniform(0.1, 3.0, n),
        "r": rng.uniform(-0.02, 0.08, n),
        "q": rng.uniform(0.0, 0.06, n),
        "sigma": rng.uniform(0.1, 0.6, n),
        "call": rng.random(n) < 0.5,
    }


# (Greek, function differenced, variable, sign). Each step is 1e-3 of the scale on which the price varies in
# that variable: S s for S (s = sigma sqrt T: the width of the log-moneyness density), sigma, T, and s / T for
# the rates (d1 moves by (r - q) T / s). With the 5-point rule the truncation error is then ~(1e-3)^4 ~ 1e-12
# relative and the rounding error ~1.5 eps / 1e-3 ~ 3e-13 relative, so 1e-8 relative (plus an absolute floor of
# 1e-9 of the Greek's largest value over the sample, for rows where it crosses zero) leaves a wide margin.
FD_CASES = [
    ("delta", "price", "S", 1.0),
    ("gamma", "delta", "S", 1.0),
    ("speed", "gamma", "S", 1.0),
    ("vega", "price", "sigma", 1.0),
    ("vanna", "delta", "sigma", 1.0),
    ("vanna", "vega", "S", 1.0),
    ("vomma", "vega", "sigma", 1.0),
    ("zomma", "gamma", "sigma", 1.0),
    ("ultima", "vomma", "sigma", 1.0),
    ("theta", "price", "T", -1.0),
    ("charm", "delta", "T", -1.0),
    ("veta", "vega", "T", -1.0),
    ("color", "gamma", "T", -1.0),
    ("rho", "price", "r", 1.0),
    ("rho_q", "price", "q", 1.0),
]


def fd_steps(p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    s = p["sigma"] * np.sqrt(p["T"])
    return {
        "S": 1e-3 * p["S"] * s,
        "sigma": 1e-3 * p["sigma"],
        "T": 1e-3 * p["T"],
        "r": 1e-3 * s / p["T"],
        "q": 1e-3 * s / p["T"],
    }


@pytest.mark.parametrize(("greek", "base", "var", "sign"), FD_CASES, ids=[f"{c[0]}=d{c[1]}/d{c[2]}" for c in FD_CASES])
def test_greek_matches_finite_difference(greek: str, base: str, var: str, sign: float) -> None:
    p = moderate(200, seed=3)
    step = fd_steps(p)[var]

    def f(x: np.ndarray) -> np.ndarray:
        return bsm_greeks(**{**_kw(p), var: x}, which=[base])[base]

    fd = sign * d5(f, p[var], np.broadcast_to(step, p[var].shape))
    exact = bsm_greeks(**_kw(p), which=[greek])[greek]
    close(exact, fd, 1e-8, 1e-9 * np.abs(exact).max(), f"{greek} vs d{base}/d{var}")


def _kw(p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"S": p["S"], "K": p["K"], "T": p["T"], "r": p["r"], "q": p["q"], "sigma": p["sigma"], "is_call": p["call"]}


@pytest.mark.parametrize(("greek", "base", "var", "sign"), [c for c in FD_CASES if c[2] != "q"])
def test_black76_greek_matches_finite_difference(greek: str, base: str, var: str, sign: float) -> None:
    p = moderate(100, seed=4)
    kw = {"F": p["S"], "K": p["K"], "T": p["T"], "r": p["r"], "sigma": p["sigma"], "is_call": p["call"]}
    key = {"S": "F"}.get(var, var)
    step = fd_steps(p)[var]

    def f(x: np.ndarray) -> np.ndarray:
        return black76_greeks(**{**kw, key: x}, which=[base])[base]

    fd = sign * d5(f, kw[key], np.broadcast_to(step, p["S"].shape))
    exact = black76_greeks(**kw, which=[greek])[greek]
    close(exact, fd, 1e-8, 1e-9 * np.abs(exact).max(), f"black76 {greek} vs d{base}/d{key}")


# ---------------------------------------------------------------------------------------- no-arbitrage checks


def test_put_call_parity_to_1e12() -> None:
    p = sweep(5000, seed=5, moneyness=2.0)
    S, K, T, r, q, sig = p["S"], p["K"], p["T"], p["r"], p["q"], p["sigma"]
    C = bsm_price(S, K, T, r, q, sig, True)
    P = bsm_price(S, K, T, r, q, sig, False)
    A, B = S * np.exp(-q * T), K * np.exp(-r * T)
    assert np.all(np.abs((C - P) - (A - B)) <= 1e-12 * np.maximum(A, B))
    F = S * np.exp((r - q) * T)
    C76 = black76_price(F, K, T, r, sig, True)
    P76 = black76_price(F, K, T, r, sig, False)
    assert np.all(np.abs((C76 - P76) - np.exp(-r * T) * (F - K)) <= 1e-12 * np.exp(-r * T) * np.maximum(F, K))


def test_bounds() -> None:
    p = sweep(5000, seed=6, moneyness=2.0)
    S, K, T, r, q, sig = p["S"], p["K"], p["T"], p["r"], p["q"], p["sigma"]
    A, B = S * np.exp(-q * T), K * np.exp(-r * T)
    call = bsm_price(S, K, T, r, q, sig, True)
    put = bsm_price(S, K, T, r, q, sig, False)
    tol = 1e-13 * np.maximum(A, B)  # the intrinsic A - B itself carries rounding of that size
    assert np.all(call >= np.maximum(A - B, 0.0) - tol) and np.all(call <= A + tol)
    assert np.all(put >= np.maximum(B - A, 0.0) - tol) and np.all(put <= B + tol)


def test_monotonicity() -> None:
    grid = np.linspace(40.0, 250.0, 400)
    S, K, T, r, q, sig = 100.0, 100.0, 0.75, 0.03, 0.01, 0.25
    for Tx, sx in [(T, sig), (0.02, 0.05), (5.0, 1.0)]:
        c_s = bsm_price(grid, K, Tx, r, q, sx, True)
        c_k = bsm_price(S, grid, Tx, r, q, sx, True)
        c_v = bsm_price(S, K * np.array([0.6, 1.0, 1.7])[:, None], Tx, r, q, np.linspace(0.01, 2.0, 400), True)
        assert np.all(np.diff(c_s) >= 0) and np.diff(c_s).sum() > 0
        assert np.all(np.diff(c_k) <= 0) and np.diff(c_k).sum() < 0
        assert np.all(np.diff(c_v, axis=-1) >= 0)
    # and strictly where the option has time value in all three
    c = bsm_price(np.linspace(80, 120, 50), 100.0, 1.0, r, q, 0.3, True)
    assert np.all(np.diff(c) > 0)


# ------------------------------------------------------------------------------------------ tail accuracy


def test_deep_out_of_the_money_prices_vs_mpmath() -> None:
    """Deep OTM prices keep ~12 significant digits where the textbook formula keeps ~9 (see module doc)."""
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 60
    rng = np.random.default_rng(7)
    n = 300
    K = 100.0 * np.exp(rng.uniform(-3.0, 3.0, n))
    T = np.exp(rng.uniform(math.log(1 / 365), math.log(5.0), n))
    r, q = rng.uniform(-0.02, 0.1, n), rng.uniform(0.0, 0.08, n)
    sig = np.exp(rng.uniform(math.log(0.01), math.log(2.0), n))
    call = rng.random(n) < 0.5

    def exact(i: int) -> float:
        S_, K_, T_, r_, q_, v_ = (mp.mpf(float(v)) for v in (100.0, K[i], T[i], r[i], q[i], sig[i]))
        s = v_ * mp.sqrt(T_)
        d1 = (mp.log(S_ / K_) + (r_ - q_) * T_) / s + s / 2
        d2 = d1 - s
        A, B = S_ * mp.exp(-q_ * T_), K_ * mp.exp(-r_ * T_)
        return float(A * mp.ncdf(d1) - B * mp.ncdf(d2) if call[i] else B * mp.ncdf(-d2) - A * mp.ncdf(-d1))

    ref = np.array([exact(i) for i in range(n)])
    ours = bsm_price(100.0, K, T, r, q, sig, call)
    keep = ref > 1e-290  # below that the double result is subnormal or 0
    assert keep.sum() > 200
    rel = np.abs(ours[keep] - ref[keep]) / ref[keep]
    # error model eps (d2^2 + (|d2| + 1) / s) stays below ~5e-12 over this range (worst seen ~1.2e-12)
    assert rel.max() < 5e-12, rel.max()
    assert np.all(ours[~keep] < 1e-280)


# ----------------------------------------------------------------------------------------------- torch path


def test_torch_float64_equals_numpy() -> None:
    p = sweep(2000, seed=8, moneyness=2.0)
    g_np = bsm_greeks(*args(p))
    tens = [torch.as_tensor(a) for a in args(p)]
    g_t = bsm_greeks(*tens)
    for name in GREEK_NAMES:
        v = g_t[name]
        assert isinstance(v, torch.Tensor) and v.dtype == torch.float64
        a, b = v.numpy(), g_np[name]
        scale = np.abs(b).max()
        # same formulas; torch's and scipy's erf/erfcx/ndtr/exp may differ by an ulp or two, and the tail
        # price amplifies that by at most ~(|d2| + 1) / s, hence an absolute floor far below any real value
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15 * scale, err_msg=name)
    assert isinstance(g_t.codes, torch.Tensor) and (g_t.codes == 0).all()
    f = black76_price(*[torch.as_tensor(p[k]) for k in ("S", "K", "T", "r", "sigma", "call")])
    f_np = black76_price(p["S"], p["K"], p["T"], p["r"], p["sigma"], p["call"])
    np.testing.assert_allclose(f.numpy(), f_np, rtol=1e-13, atol=1e-15 * f_np.max())


def test_torch_float32_works() -> None:
    p = moderate(500, seed=9)
    g64 = bsm_greeks(**_kw(p))
    g32 = bsm_greeks(
        *[torch.as_tensor(p[k], dtype=torch.float32) for k in ("S", "K", "T", "r", "q", "sigma")],
        torch.as_tensor(p["call"]),
    )
    for name in GREEK_NAMES:
        v = g32[name]
        assert v.dtype == torch.float32 and torch.isfinite(v).all(), name
        np.testing.assert_allclose(
            v.double().numpy(), g64[name], rtol=1e-3, atol=2e-4 * np.abs(g64[name]).max(), err_msg=name
        )


def test_torch_autograd_matches_delta_and_vega() -> None:
    p = sweep(500, seed=10, moneyness=1.5)
    S = torch.tensor(p["S"], requires_grad=True)
    sig = torch.tensor(p["sigma"], requires_grad=True)
    rest = [torch.as_tensor(p[k]) for k in ("K", "T", "r", "q")]
    price = bsm_price(S, rest[0], rest[1], rest[2], rest[3], sig, torch.as_tensor(p["call"]))
    price.sum().backward()
    g = bsm_greeks(*args(p), which=["delta", "vega"])
    np.testing.assert_allclose(S.grad.numpy(), g.delta, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(sig.grad.numpy(), g.vega, rtol=1e-10, atol=1e-10)
    # exactly at the forward (S == K, r == q) and on the straddle/tail boundary d1 == 0 (x = -s^2/2)
    S1 = torch.tensor([100.0, 100.0, 100.0 * math.exp(-0.02), 100.0 * math.exp(-0.02)], dtype=torch.float64)
    S1.requires_grad_(True)
    call1 = torch.tensor([True, False, True, False])
    bsm_price(S1, 100.0, 1.0, 0.03, 0.03, 0.2, call1).sum().backward()
    delta1 = bsm_greeks(S1.detach().numpy(), 100.0, 1.0, 0.03, 0.03, 0.2, call1.numpy(), which=["delta"]).delta
    np.testing.assert_allclose(S1.grad.numpy(), delta1, rtol=1e-12)
    # gradients stay finite through the degenerate (T = 0, sigma = 0) and invalid rows
    S2 = torch.tensor([100.0, 100.0, 100.0, -5.0], requires_grad=True)
    v2 = torch.tensor([0.2, 0.0, 0.2, 0.2], requires_grad=True)
    out = bsm_price(S2, 95.0, torch.tensor([0.0, 1.0, 1.0, 1.0]), 0.03, 0.0, v2, True)
    out[:3].sum().backward()
    assert torch.isfinite(S2.grad).all() and torch.isfinite(v2.grad).all()
    assert S2.grad[3] == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_torch_cuda_matches_numpy() -> None:
    p = sweep(2000, seed=11, moneyness=2.0)
    g_np = bsm_greeks(*args(p))
    g_c = bsm_greeks(*[torch.as_tensor(a, device="cuda") for a in args(p)])
    for name in GREEK_NAMES:
        assert g_c[name].device.type == "cuda"
        b = g_np[name]
        np.testing.assert_allclose(g_c[name].cpu().numpy(), b, rtol=1e-12, atol=1e-14 * np.abs(b).max(), err_msg=name)


# ------------------------------------------------------------------------------------- validation and limits


def test_invalid_rows_are_nan_with_codes_and_good_rows_untouched() -> None:
    good = (100.0, 105.0, 0.5, 0.03, 0.01, 0.2)
    rows = [
        (good, OptionError.OK),
        ((math.nan, *good[1:]), OptionError.NAN_INPUT),
        ((100.0, 105.0, math.inf, 0.03, 0.01, 0.2), OptionError.NAN_INPUT),
        ((100.0, 105.0, 0.5, math.nan, 0.01, 0.2), OptionError.NAN_INPUT),
        ((100.0, 105.0, 0.5, 0.03, -math.inf, 0.2), OptionError.NAN_INPUT),
        ((0.0, *good[1:]), OptionError.NON_POSITIVE_SPOT),
        ((-1.0, *good[1:]), OptionError.NON_POSITIVE_SPOT),
        ((100.0, 0.0, *good[2:]), OptionError.NON_POSITIVE_STRIKE),
        ((100.0, -3.0, *good[2:]), OptionError.NON_POSITIVE_STRIKE),
        ((100.0, 105.0, -0.1, 0.03, 0.01, 0.2), OptionError.NEGATIVE_EXPIRY),
        ((100.0, 105.0, 0.5, 0.03, 0.01, -0.2), OptionError.NEGATIVE_VOL),
        ((-1.0, 105.0, -0.1, 0.03, 0.01, -0.2), OptionError.NON_POSITIVE_SPOT),  # first failing check wins
        ((120.0, 90.0, 2.0, 0.0, 0.05, 0.4), OptionError.OK),
    ]
    cols = np.array([r[0] for r in rows]).T
    want = np.array([int(r[1]) for r in rows])
    call = np.arange(len(rows)) % 2 == 0
    for as_torch in (False, True):
        inputs = [torch.as_tensor(c) for c in cols] if as_torch else list(cols)
        is_call = torch.as_tensor(call) if as_torch else call
        mask = torch.as_tensor(want == 0) if as_torch else want == 0
        ok = want == 0
        g = bsm_greeks(*inputs, is_call)
        price, codes = bsm_price_checked(*inputs, is_call)
        assert (np.asarray(codes) == want).all() and (np.asarray(g.codes) == want).all()
        alone = bsm_greeks(*[c[mask] for c in inputs], is_call[mask])  # the good rows on their own
        for name in GREEK_NAMES:
            v = np.asarray(g[name])
            assert np.isnan(v[~ok]).all(), name
            # rows never interact: equal up to SIMD-body vs remainder-loop rounding of exp/log
            np.testing.assert_allclose(v[ok], np.asarray(alone[name]), rtol=1e-14, atol=0, err_msg=name)
        assert np.isnan(np.asarray(price)[~ok]).all()
        np.testing.assert_array_equal(np.asarray(price)[ok], np.asarray(g.price)[ok])
    _, c76 = black76_price_checked([100.0, -1.0], 100.0, 1.0, 0.02, [0.2, 0.2], True)
    assert c76.tolist() == [0, int(OptionError.NON_POSITIVE_SPOT)]


def test_zero_expiry_and_zero_vol_limits() -> None:
    S = np.array([120.0, 80.0, 100.0, 120.0, 80.0, 100.0])
    K, r, q = 100.0, 0.04, 0.01
    call = np.array([True, True, True, False, False, False])
    t = np.where(call, 1.0, -1.0)
    for T, sig in [(0.0, 0.3), (0.0, 0.0), (1.5, 0.0)]:
        g = bsm_greeks(S, K, T, r, q, sig, call)
        assert (g.codes == 0).all()
        for name in GREEK_NAMES:
            assert np.isfinite(g[name]).all(), (T, sig, name)
        A, B = S * np.exp(-q * T), K * np.exp(-r * T)
        F = S * np.exp((r - q) * T)
        np.testing.assert_allclose(g.price, np.maximum(t * (A - B), 0.0), rtol=1e-14, atol=1e-14)
        H = np.where(t * (F - K) > 0, 1.0, np.where(np.isclose(F, K, rtol=0, atol=1e-12), 0.5, 0.0))
        np.testing.assert_allclose(g.delta, t * np.exp(-q * T) * H, rtol=1e-15)
        for name in ("gamma", "vanna", "vomma", "veta", "speed", "zomma", "color", "ultima"):
            assert (g[name] == 0).all(), name
    # the limits are the sigma -> 0 limits off the money: compare with a tiny but positive vol
    T = 1.5
    g0 = bsm_greeks(S[[0, 1, 3, 4]], K, T, r, q, 0.0, call[[0, 1, 3, 4]])
    ge = bsm_greeks(S[[0, 1, 3, 4]], K, T, r, q, 1e-4, call[[0, 1, 3, 4]])
    for name in ("price", "delta", "theta", "rho", "rho_q", "charm", "vega", "gamma"):
        np.testing.assert_allclose(g0[name], ge[name], rtol=1e-12, atol=1e-12, err_msg=name)
    # exactly at the forward (r == q) and sigma -> 0: delta -> 1/2 e^{-qT}, vega -> S e^{-qT} sqrt(T) phi(0)
    g0 = bsm_greeks(100.0, 100.0, T, 0.02, 0.02, 0.0, True)
    ge = bsm_greeks(100.0, 100.0, T, 0.02, 0.02, 1e-9, True)
    for name in ("price", "delta", "vega", "theta", "rho", "rho_q"):
        np.testing.assert_allclose(g0[name], ge[name], rtol=1e-7, atol=1e-7, err_msg=name)
    # and T = 0 with sigma > 0 through the expiry: price is continuous
    assert (
        abs(bsm_price(100.0, 100.0, 1e-14, 0.0, 0.0, 0.2, True) - bsm_price(100.0, 100.0, 0.0, 0.0, 0.0, 0.2, True))
        < 1e-6
    )


def test_extreme_but_legal_inputs_are_finite() -> None:
    S = np.array([100.0, 100.0, 100.0, 100.0, 100.0, 1e-3, 1e6])
    K = np.array([100.0, 1e4, 1e-2, 100.0, 100.0, 1e6, 1e-3])
    T = np.array([1e-12, 1.0, 1.0, 30.0, 1.0, 1.0, 1.0])
    sig = np.array([0.2, 1e-300, 1e-300, 5.0, 1e-12, 0.3, 0.3])
    for call in (True, False):
        g = bsm_greeks(S, K, T, 0.03, 0.01, sig, call)
        for name in GREEK_NAMES:
            assert not np.isnan(g[name]).any(), name
        assert (g.price >= 0).all()


# ----------------------------------------------------------------------------------------------- API details


def test_which_restricts_and_dict_access() -> None:
    g = bsm_greeks(100.0, 100.0, 1.0, 0.03, 0.0, 0.2, True, which=["delta", "vega"])
    assert isinstance(g, Greeks) and set(g.keys()) == {"delta", "vega"}
    assert g.price is None and g.gamma is None
    full = bsm_greeks(100.0, 100.0, 1.0, 0.03, 0.0, 0.2, True)
    assert list(full.keys()) == list(GREEK_NAMES)
    assert g["delta"] == full.delta and dict(g.items())["vega"] == full.vega
    with pytest.raises(KeyError):
        g["gamma"]
    with pytest.raises(ValueError, match="unknown"):
        bsm_greeks(100.0, 100.0, 1.0, 0.03, 0.0, 0.2, True, which=["delta", "vegas"])
    b = black76_greeks(100.0, 100.0, 1.0, 0.03, 0.2, True, which=["rho"])
    assert set(b.keys()) == {"rho"}


def test_broadcasting_and_units() -> None:
    K = np.linspace(80, 120, 5)[:, None]
    T = np.array([0.25, 0.5, 1.0])
    price = bsm_price(100.0, K, T, 0.03, 0.01, 0.2, np.array([True, False, True]))
    assert price.shape == (5, 3) and price.dtype == np.float64
    g = bsm_greeks(100.0, 100.0, 1.0, 0.05, 0.0, 0.2, True)
    assert per_vol_point(g.vega) == pytest.approx(g.vega / 100)
    assert per_day(g.theta) == pytest.approx(g.theta / 365)
    assert per_day(g.theta, 252) == pytest.approx(g.theta / 252)
    # textbook value (Hull): S=K=100, T=1, r=5%, sigma=20% call = 10.4506
    assert float(g.price) == pytest.approx(10.450583572185565, rel=1e-14)
