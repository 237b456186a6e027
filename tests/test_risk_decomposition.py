"""Marginal, component and incremental VaR/ES against conservation laws, finite differences and each other.

References: Euler's theorem (components add up to the total: VaR and ES are homogeneous of degree one);
central finite differences of the closed-form portfolio VaR/ES (computed here from sqrt(e' Sigma e) with scipy
quantiles, not through the decomposition code); exact re-evaluation without a position (incremental VaR); the
simulation estimate (numpy-generated normal scenarios) against the parametric closed form.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tradesys.quant.risk import (
    empirical_var_es,
    incremental_var,
    parametric_decomposition,
    simulated_decomposition,
)

COV = np.array([[1.0, 0.3, 0.1, 0.0], [0.3, 2.0, 0.2, -0.1], [0.1, 0.2, 0.5, 0.05], [0.0, -0.1, 0.05, 0.8]]) * 1e-4
MU = np.array([3e-4, 1e-4, -2e-4, 0.0])
E = np.array([4e5, 2e5, -1.5e5, 3e5])


def closed_form(e: np.ndarray, alpha: float, dist: str = "normal", nu: float = 5.0) -> tuple[float, float]:
    """Portfolio VaR and ES straight from the definition (independent of the decomposition module)."""
    sigma = math.sqrt(e @ COV @ e)
    mu = MU @ e
    if dist == "normal":
        z = stats.norm.ppf(alpha)
        return -mu + z * sigma, -mu + sigma * stats.norm.pdf(z) / (1 - alpha)
    s = sigma * math.sqrt((nu - 2) / nu)
    t = stats.t.ppf(alpha, nu)
    return -mu + s * t, -mu + s * stats.t.pdf(t, nu) * (nu + t * t) / ((nu - 1) * (1 - alpha))


@pytest.mark.parametrize("dist", ["normal", "t"])
@pytest.mark.parametrize("alpha", [0.95, 0.99, 0.999])
def test_parametric_components_sum_and_match_finite_differences(dist: str, alpha: float) -> None:
    d = parametric_decomposition(E, COV, mean=MU, alpha=alpha, dist=dist, nu=5.0 if dist == "t" else None)
    var, es = closed_form(E, alpha, dist)
    assert d.var == pytest.approx(var, rel=1e-12) and d.es == pytest.approx(es, rel=1e-12)
    assert d.component_var.sum() == pytest.approx(var, rel=1e-12)
    assert d.component_es.sum() == pytest.approx(es, rel=1e-12)
    for i in range(len(E)):
        h = 1e-4 * abs(E[i])
        up, dn = E.copy(), E.copy()
        up[i] += h
        dn[i] -= h
        fd_var = (closed_form(up, alpha, dist)[0] - closed_form(dn, alpha, dist)[0]) / (2 * h)
        fd_es = (closed_form(up, alpha, dist)[1] - closed_form(dn, alpha, dist)[1]) / (2 * h)
        assert d.marginal_var[i] == pytest.approx(fd_var, rel=1e-6, abs=1e-12)
        assert d.marginal_es[i] == pytest.approx(fd_es, rel=1e-6, abs=1e-12)
        without = E.copy()
        without[i] = 0.0
        assert d.incremental_var[i] == pytest.approx(var - closed_form(without, alpha, dist)[0], rel=1e-10)


def test_parametric_horizon_and_frame() -> None:
    d1 = parametric_decomposition(E, pd.DataFrame(COV, columns=list("ABCD")), alpha=0.99)
    d10 = parametric_decomposition(E, COV, alpha=0.99, horizon_days=10)
    np.testing.assert_allclose(d10.component_var, math.sqrt(10) * d1.component_var, rtol=1e-12)
    f = d1.to_frame()
    assert list(f.index) == list("ABCD")
    assert f["component_var_pct"].sum() == pytest.approx(1.0)
    assert d1.to_dict()["assets"][0]["asset"] == "A"


def test_simulated_decomposition_matches_parametric() -> None:
    """400k normal scenarios (numpy's generator): Euler components from the tail agree with the closed form."""
    x = np.random.default_rng(0).multivariate_normal(MU, COV, size=400_000)
    sim = simulated_decomposition(x, E, alpha=0.99)
    par = parametric_decomposition(E, COV, mean=MU, alpha=0.99)
    # totals are the empirical ones, and the components add up to them exactly
    var, es = empirical_var_es(-(x @ E), 0.99)
    assert (sim.var, sim.es) == (var, es)
    assert sim.component_var.sum() == pytest.approx(var, rel=1e-12)
    assert sim.component_es.sum() == pytest.approx(es, rel=1e-12)
    assert sim.details["raw_sum"] == pytest.approx(var, rel=0.02)  # the band mean of L sits at VaR before scaling
    # per asset, within Monte Carlo noise (a few % of the total)
    np.testing.assert_allclose(sim.component_var, par.component_var, atol=0.015 * par.var)
    np.testing.assert_allclose(sim.component_es, par.component_es, atol=0.015 * par.es)
    np.testing.assert_allclose(sim.incremental_var, par.incremental_var, atol=0.015 * par.var)


def test_simulated_decomposition_on_real_returns() -> None:
    """S&P 500 and NASDAQ daily returns (arch.data): historical Euler allocation adds up; a weight of zero
    contributes nothing; the incremental VaR is an exact recomputation."""
    from arch.data import nasdaq, sp500

    px = pd.concat([sp500.load()["Adj Close"].rename("spx"), nasdaq.load()["Adj Close"].rename("ndx")], axis=1).dropna()
    r = px.pct_change().dropna().iloc[-1000:]
    e = np.array([6e5, 4e5])
    d = simulated_decomposition(r, e, alpha=0.99)
    assert d.names == ("spx", "ndx")
    assert d.component_var.sum() == pytest.approx(d.var, rel=1e-12)
    assert d.component_es.sum() == pytest.approx(d.es, rel=1e-12)
    pnl = r.to_numpy() @ e
    assert d.var == np.quantile(-pnl, 0.99, method="inverted_cdf")
    assert d.incremental_var[0] == pytest.approx(d.var - np.quantile(-r["ndx"] * 4e5, 0.99, method="inverted_cdf"))
    z = simulated_decomposition(r, np.array([6e5, 0.0]), alpha=0.99)
    assert z.component_var[1] == 0.0 and z.component_es[1] == 0.0
    # with probabilities (e.g. importance-sampling or age weights) the ES components still add up
    w = np.linspace(1, 3, len(r))
    dw = simulated_decomposition(r, e, alpha=0.99, probabilities=w / w.sum())
    assert dw.component_es.sum() == pytest.approx(dw.es, rel=1e-12)


def test_incremental_var_for_a_trade() -> None:
    trade = np.array([1e4, 0.0, 0.0, -5e3])
    out = incremental_var(E, trade, cov=COV, mean=MU, alpha=0.99)
    assert out["incremental"] == pytest.approx(closed_form(E + trade, 0.99)[0] - closed_form(E, 0.99)[0], rel=1e-10)
    # small trade: the marginal VaR gives the change to first order
    assert out["linear"] == pytest.approx(out["incremental"], rel=0.02)
    x = np.random.default_rng(1).multivariate_normal(MU, COV, size=100_000)
    sim = incremental_var(E, trade * 10, scenarios=x, alpha=0.99)
    assert sim["incremental"] == pytest.approx(
        empirical_var_es(-(x @ (E + 10 * trade)), 0.99)[0] - empirical_var_es(-(x @ E), 0.99)[0]
    )
    with pytest.raises(ValueError, match=r"^trade: length"):
        incremental_var(E, [1.0], cov=COV)
    with pytest.raises(ValueError, match=r"^cov: give exactly one"):
        incremental_var(E, trade)


def test_decomposition_validation() -> None:
    with pytest.raises(ValueError, match=r"^cov: is not positive semi-definite"):
        parametric_decomposition([1.0, 1.0], [[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ValueError, match=r"^weights: length 3 does not match the 4 columns"):
        simulated_decomposition(np.zeros((1000, 4)), [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"^scenarios: contains NaN"):
        simulated_decomposition(np.full((1000, 1), np.nan), [1.0])
