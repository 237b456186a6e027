"""Margrabe exchange option and Kirk spread option against independent references.

References: QuantLib's AnalyticEuropeanMargrabeEngine (price, delta1, delta2, gamma1, gamma2, theta; QuantLib
1.44 provides no vega, correlation sensitivity or cross-gamma for it) and KirkEngine (spread price) on random
sweeps; finite differences of our own price for every Greek QuantLib does not give (cross-gamma, vegas, dV/drho,
dividend rhos); a Monte Carlo of the two correlated GBMs (price, and cross-gamma and dV/drho by pathwise and
likelihood-ratio estimators that never touch the closed forms); Euler homogeneity and the exchange symmetry;
the reduction to BSM when asset 2 is a riskless bond; torch autograd.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tradesys.quant.options.errors import OptionError
from tradesys.quant.options.european import bsm_price
from tradesys.quant.options.exchange import (
    BAD_CORRELATION,
    exchange_vol,
    kirk_price,
    kirk_price_checked,
    margrabe_greeks,
    margrabe_price,
    margrabe_price_checked,
)

ql = pytest.importorskip("QuantLib")


def sweep(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    S1 = rng.uniform(20.0, 200.0, n)
    days = rng.integers(5, 3650, n)
    return {
        "S1": S1,
        "S2": S1 * np.exp(rng.uniform(-0.6, 0.6, n)),
        "days": days,
        "T": days / 365.0,
        "r": rng.uniform(-0.01, 0.08, n),
        "q1": rng.uniform(0.0, 0.06, n),
        "q2": rng.uniform(0.0, 0.06, n),
        "s1": rng.uniform(0.05, 0.8, n),
        "s2": rng.uniform(0.05, 0.8, n),
        "rho": rng.uniform(-0.95, 0.95, n),
    }


def margs(p: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    return p["S1"], p["S2"], p["T"], p["q1"], p["q2"], p["s1"], p["s2"], p["rho"]


def close(ours: np.ndarray, ref: np.ndarray, rtol: float, atol: float, what: str) -> None:
    ours, ref = np.asarray(ours), np.asarray(ref)
    bad = np.abs(ours - ref) > rtol * np.abs(ref) + atol
    assert not bad.any(), f"{what}: {bad.sum()} rows off, ours={ours[bad][:3]} ref={ref[bad][:3]}"


class QL:
    """QuantLib processes with flat curves (Actual365Fixed, T = days / 365) whose quotes are reset per row."""

    def __init__(self) -> None:
        self.today = ql.Date(15, 1, 2025)
        ql.Settings.instance().evaluationDate = self.today
        dc = ql.Actual365Fixed()
        self.q = {k: ql.SimpleQuote(0.0) for k in ("S1", "S2", "r", "q1", "q2", "s1", "s2")}

        def curve(key: str) -> ql.YieldTermStructureHandle:
            return ql.YieldTermStructureHandle(ql.FlatForward(self.today, ql.QuoteHandle(self.q[key]), dc))

        def vol(key: str) -> ql.BlackVolTermStructureHandle:
            return ql.BlackVolTermStructureHandle(
                ql.BlackConstantVol(self.today, ql.NullCalendar(), ql.QuoteHandle(self.q[key]), dc)
            )

        self.p1 = ql.BlackScholesMertonProcess(ql.QuoteHandle(self.q["S1"]), curve("q1"), curve("r"), vol("s1"))
        self.p2 = ql.BlackScholesMertonProcess(ql.QuoteHandle(self.q["S2"]), curve("q2"), curve("r"), vol("s2"))

    def set(self, p: dict[str, np.ndarray], i: int) -> None:
        for k, quote in self.q.items():
            quote.setValue(float(p[k][i]))


def test_margrabe_matches_quantlib_on_random_sweep() -> None:
    p = sweep(300, seed=11)
    env = QL()
    names = ("price", "delta1", "delta2", "gamma1", "gamma2", "theta")
    ref: dict[str, list[float]] = {k: [] for k in names}
    for i in range(len(p["S1"])):
        env.set(p, i)
        opt = ql.MargrabeOption(1, 1, ql.EuropeanExercise(env.today + int(p["days"][i])))
        opt.setPricingEngine(ql.AnalyticEuropeanMargrabeEngine(env.p1, env.p2, float(p["rho"][i])))
        ref["price"].append(opt.NPV())
        ref["delta1"].append(opt.delta1())
        ref["delta2"].append(opt.delta2())
        ref["gamma1"].append(opt.gamma1())
        ref["gamma2"].append(opt.gamma2())
        ref["theta"].append(opt.theta())  # per year of calendar time, -dV/dT
        assert opt.rho() == 0.0  # the rate drops out of Margrabe's formula
    g = margrabe_greeks(*margs(p))
    assert (g.codes == 0).all()
    R = {k: np.array(v) for k, v in ref.items()}
    # QuantLib's N(x) has ~1e-16 absolute, not relative, accuracy in the tail: relative 1e-9 plus small floors
    close(g.price, R["price"], 1e-9, 1e-10, "price")
    close(margrabe_price(*margs(p)), R["price"], 1e-9, 1e-10, "margrabe_price")
    close(g.delta1, R["delta1"], 1e-9, 1e-13, "delta1")
    close(g.delta2, R["delta2"], 1e-9, 1e-13, "delta2")
    close(g.gamma11, R["gamma1"], 1e-9, 1e-14, "gamma11")
    close(g.gamma22, R["gamma2"], 1e-9, 1e-14, "gamma22")
    close(g.theta, R["theta"], 1e-9, 1e-10, "theta")


def test_kirk_matches_quantlib_and_reduces_to_margrabe() -> None:
    p = sweep(200, seed=12)
    rng = np.random.default_rng(13)
    p["K"] = rng.uniform(-0.3, 0.3, 200) * p["S2"]
    call = rng.random(200) < 0.5
    env = QL()
    ref = []
    for i in range(200):
        env.set(p, i)
        kind = ql.Option.Call if call[i] else ql.Option.Put
        payoff = ql.SpreadBasketPayoff(ql.PlainVanillaPayoff(kind, float(p["K"][i])))
        opt = ql.BasketOption(payoff, ql.EuropeanExercise(env.today + int(p["days"][i])))
        opt.setPricingEngine(ql.KirkEngine(env.p1, env.p2, float(p["rho"][i])))
        ref.append(opt.NPV())
    args = (p["S1"], p["S2"], p["K"], p["T"], p["r"], p["q1"], p["q2"], p["s1"], p["s2"], p["rho"], call)
    price, codes = kirk_price_checked(*args)
    assert (codes == 0).all()
    close(price, np.array(ref), 1e-9, 1e-10, "kirk")
    # K = 0: Kirk's approximation is exact and equals Margrabe (any r)
    kirk0 = kirk_price(p["S1"], p["S2"], 0.0, p["T"], p["r"], p["q1"], p["q2"], p["s1"], p["s2"], p["rho"])
    close(kirk0, margrabe_price(*margs(p)), 1e-11, 1e-12, "kirk K=0")


def test_reduces_to_bsm_when_asset_two_is_a_bond() -> None:
    """S2 = K e^{-rT} with no yield and no vol grows at r to K: the exchange option is a BSM call on S1."""
    p = sweep(200, seed=14)
    K = p["S2"]
    v = margrabe_price(p["S1"], K * np.exp(-p["r"] * p["T"]), p["T"], p["q1"], 0.0, p["s1"], 0.0, p["rho"])
    close(v, bsm_price(p["S1"], K, p["T"], p["r"], p["q1"], p["s1"], True), 1e-11, 1e-12, "bond limit")
    # and the call pays max(S1 - K, 0) whatever rho is when asset 2 has no vol
    assert np.allclose(exchange_vol(p["s1"], 0.0, p["rho"]), p["s1"], rtol=0, atol=0)


def test_homogeneity_and_exchange_symmetry() -> None:
    p = sweep(400, seed=15)
    g = margrabe_greeks(*margs(p))
    scale = np.maximum(g.price, 1e-3 * p["S1"])
    # Euler: V = S1 dV/dS1 + S2 dV/dS2; differentiated once more: the Hessian annihilates (S1, S2)
    close(p["S1"] * g.delta1 + p["S2"] * g.delta2, g.price, 0.0, 1e-12 * p["S1"] + 1e-12 * scale, "Euler")
    hs = np.abs(g.gamma11) * p["S1"]
    close(p["S1"] * g.gamma11 + p["S2"] * g.gamma12, 0.0 * hs, 0.0, 1e-13 * hs + 1e-300, "S1 G11 + S2 G12")
    close(p["S1"] * g.gamma12 + p["S2"] * g.gamma22, 0.0 * hs, 0.0, 1e-13 * hs + 1e-300, "S1 G12 + S2 G22")
    assert (g.gamma12 <= 0).all() and (g.gamma11 >= 0).all() and (g.corr <= 0).all()
    # scaling both spots scales the price
    close(margrabe_price(3.0 * p["S1"], 3.0 * p["S2"], *margs(p)[2:]), 3.0 * g.price, 1e-12, 1e-12, "scaling")
    # swapping the assets: max(S1 - S2, 0) - max(S2 - S1, 0) = S1 - S2, so V12 - V21 = A1 - A2 (parity)
    swapped = margrabe_price(p["S2"], p["S1"], p["T"], p["q2"], p["q1"], p["s2"], p["s1"], p["rho"])
    A1, A2 = p["S1"] * np.exp(-p["q1"] * p["T"]), p["S2"] * np.exp(-p["q2"] * p["T"])
    close(g.price - swapped, A1 - A2, 1e-11, 1e-11 * (A1 + A2), "exchange parity")
    # the exchange vol is symmetric in the assets
    close(exchange_vol(p["s1"], p["s2"], p["rho"]), exchange_vol(p["s2"], p["s1"], p["rho"]), 1e-15, 0, "vol")


def d5(f, x: np.ndarray, h: np.ndarray | float) -> np.ndarray:
    """Five-point central difference (truncation h^4)."""
    return (f(x - 2 * h) - 8 * f(x - h) + 8 * f(x + h) - f(x + 2 * h)) / (12 * h)


def test_greeks_against_finite_differences() -> None:
    rng = np.random.default_rng(16)
    n = 200
    S1 = rng.uniform(50.0, 150.0, n)
    p = {
        "S1": S1,
        "S2": S1 * np.exp(rng.uniform(-0.3, 0.3, n)),
        "T": rng.uniform(0.1, 3.0, n),
        "q1": rng.uniform(0.0, 0.05, n),
        "q2": rng.uniform(0.0, 0.05, n),
        "s1": rng.uniform(0.15, 0.6, n),
        "s2": rng.uniform(0.15, 0.6, n),
        "rho": rng.uniform(-0.8, 0.8, n),
    }
    keys = ("S1", "S2", "T", "q1", "q2", "s1", "s2", "rho")
    g = margrabe_greeks(*(p[k] for k in keys))
    sd = g.sigma * np.sqrt(p["T"])
    steps = {"S1": 1e-3 * p["S1"] * sd, "S2": 1e-3 * p["S2"] * sd, "T": 1e-3 * p["T"], "q1": 1e-3 * sd / p["T"]}
    steps |= {"q2": 1e-3 * sd / p["T"], "s1": 1e-3 * g.sigma, "s2": 1e-3 * g.sigma, "rho": 1e-3 * np.ones(n)}

    def fd(out: str, var: str) -> np.ndarray:
        def f(x: np.ndarray) -> np.ndarray:
            return getattr(margrabe_greeks(*(x if k == var else p[k] for k in keys)), out)

        return d5(f, p[var], steps[var])

    cases = [
        ("delta1", "price", "S1", 1.0),
        ("delta2", "price", "S2", 1.0),
        ("gamma11", "delta1", "S1", 1.0),
        ("gamma22", "delta2", "S2", 1.0),
        ("gamma12", "delta1", "S2", 1.0),
        ("gamma12", "delta2", "S1", 1.0),
        ("vega1", "price", "s1", 1.0),
        ("vega2", "price", "s2", 1.0),
        ("corr", "price", "rho", 1.0),
        ("theta", "price", "T", -1.0),
        ("rho_q1", "price", "q1", 1.0),
        ("rho_q2", "price", "q2", 1.0),
    ]
    for greek, of, var, sign in cases:
        ref = sign * fd(of, var)
        ours = getattr(g, greek)
        close(ours, ref, 1e-7, 1e-9 * np.abs(ours).max(), f"{greek} = d{of}/d{var}")
    # cross-gamma by a mixed central difference of the price itself (second order, ~(1e-3)^2 truncation)
    h1, h2 = steps["S1"], steps["S2"]
    rest = (p["T"], p["q1"], p["q2"], p["s1"], p["s2"], p["rho"])
    mixed = (
        margrabe_price(p["S1"] + h1, p["S2"] + h2, *rest)
        - margrabe_price(p["S1"] + h1, p["S2"] - h2, *rest)
        - margrabe_price(p["S1"] - h1, p["S2"] + h2, *rest)
        + margrabe_price(p["S1"] - h1, p["S2"] - h2, *rest)
    ) / (4 * h1 * h2)
    close(g.gamma12, mixed, 1e-5, 1e-8 * np.abs(g.gamma12).max(), "cross-gamma mixed difference")


def test_cross_gamma_and_correlation_sensitivity_by_monte_carlo() -> None:
    """Two correlated GBMs, 400k draws. Price: discounted payoff. dV/drho: pathwise (the payoff is Lipschitz).
    Cross-gamma: pathwise delta2 times the likelihood-ratio score of S1 (mixed estimator)."""
    S1, S2, T, r, q1, q2, s1, s2, rho = 100.0, 95.0, 0.75, 0.03, 0.01, 0.02, 0.3, 0.25, 0.4
    rng = np.random.default_rng(17)
    n = 400_000
    Z = rng.standard_normal(n)
    W = rng.standard_normal(n)
    c = math.sqrt(1.0 - rho * rho)
    sq = math.sqrt(T)
    S1T = S1 * np.exp((r - q1 - 0.5 * s1 * s1) * T + s1 * sq * Z)
    S2T = S2 * np.exp((r - q2 - 0.5 * s2 * s2) * T + s2 * sq * (rho * Z + c * W))
    df = math.exp(-r * T)
    itm = S1T > S2T
    est = {
        "price": df * np.maximum(S1T - S2T, 0.0),
        # d S2T / d rho = S2T s2 sqrt(T) (Z - rho W / c); payoff derivative -1{S1T > S2T}
        "corr": -df * itm * S2T * s2 * sq * (Z - rho * W / c),
        # d/dS1 of E[-1{..} S2T / S2] by the score of S1: (Z - rho W / c) / (s1 sqrt(T) S1)
        "gamma12": -df * itm * (S2T / S2) * (Z - rho * W / c) / (s1 * sq * S1),
        "delta2": -df * itm * S2T / S2,
    }
    g = margrabe_greeks(S1, S2, T, q1, q2, s1, s2, rho)
    for name, x in est.items():
        mean, se = x.mean(), x.std() / math.sqrt(n)
        assert abs(mean - float(g[name])) < 4.0 * se, f"{name}: MC {mean} +- {se} vs closed form {float(g[name])}"
        assert se < 0.02 * abs(float(g[name])), f"{name}: MC too noisy to be a check ({se})"


def test_degenerate_limits_and_bad_rows() -> None:
    # no exchange vol (equal vols, rho = 1) or T = 0: the discounted intrinsic value, with its step deltas
    g = margrabe_greeks([110.0, 90.0, 100.0], 100.0, [1.0, 1.0, 0.0], 0.0, 0.0, 0.2, 0.2, [1.0, 1.0, 0.3])
    assert np.allclose(g.price, [10.0, 0.0, 0.0]) and np.allclose(g.delta1, [1.0, 0.0, 0.5])
    assert np.allclose(g.delta2, [-1.0, 0.0, -0.5]) and (g.gamma12 == 0).all() and (g.corr == 0).all()
    # continuity into the limit: rho -> 1 approaches it
    near = margrabe_price(110.0, 100.0, 1.0, 0.0, 0.0, 0.2, 0.2, 1.0 - 1e-10)
    assert abs(near - 10.0) < 1e-6
    price, codes = margrabe_price_checked(
        [100.0, -1.0, 100.0, 100.0, np.nan], 100.0, [1.0, 1.0, -1.0, 1.0, 1.0], 0.0, 0.0, 0.2, 0.3, [0.5, 0, 0, 1.5, 0]
    )
    assert codes.tolist() == [
        0,
        OptionError.NON_POSITIVE_SPOT,
        OptionError.NEGATIVE_EXPIRY,
        BAD_CORRELATION,
        OptionError.NAN_INPUT,
    ]
    assert np.isfinite(price[0]) and np.isnan(price[1:]).all()
    # Kirk with a strike that makes F2 + K <= 0 is coded, not raised
    kp, kc = kirk_price_checked(100.0, 50.0, [-10.0, -60.0], 1.0, 0.0, 0.0, 0.0, 0.3, 0.3, 0.5)
    assert kc.tolist() == [0, OptionError.NON_POSITIVE_STRIKE] and np.isfinite(kp[0]) and np.isnan(kp[1])


def test_torch_matches_numpy_and_autograd_gives_the_greeks() -> None:
    p = sweep(50, seed=18)
    ref = margrabe_greeks(*margs(p))
    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in p.items() if k != "days"}
    price = margrabe_price(t["S1"], t["S2"], t["T"], t["q1"], t["q2"], t["s1"], t["s2"], t["rho"])
    assert isinstance(price, torch.Tensor)
    np.testing.assert_allclose(price.detach().numpy(), ref.price, rtol=1e-13, atol=1e-13)
    price.sum().backward()
    for name, var in (("delta1", "S1"), ("delta2", "S2"), ("vega1", "s1"), ("vega2", "s2"), ("corr", "rho")):
        np.testing.assert_allclose(t[var].grad.numpy(), ref[name], rtol=1e-9, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(t["T"].grad.numpy(), -ref.theta, rtol=1e-9, atol=1e-12)
    tg = margrabe_greeks(*(t[k].detach() for k in ("S1", "S2", "T", "q1", "q2", "s1", "s2", "rho")))
    for name, value in ref.as_dict().items():
        np.testing.assert_allclose(tg[name].numpy(), value, rtol=1e-12, atol=1e-14, err_msg=name)
