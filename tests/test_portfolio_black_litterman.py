"""Black-Litterman against He & Litterman (1999), PyPortfolioOpt, and Idzorek's (2005) confidence procedure.

He & Litterman, "The Intuition Behind Black-Litterman Model Portfolios" (Goldman Sachs, 1999): seven country
equity markets, correlations and volatilities of their Table 1, market-cap weights of Table 2, delta = 2.5,
tau = 0.05, Omega = diag(P tau Sigma P'). Published figures are percentages to one decimal (the view weights
Lambda to three), so the assertions allow half a unit of the last printed digit (plus a hair for rounding).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from pypfopt.black_litterman import BlackLittermanModel, market_implied_risk_aversion
from scipy.optimize import minimize_scalar
from skfolio.datasets import load_sp500_dataset

from tradesys.quant.portfolio import (
    BlackLittermanViews,
    PortfolioConstraints,
    black_litterman_posterior,
    equilibrium_returns,
    he_litterman_omega,
    idzorek_omega,
    implied_risk_aversion,
    market_weights_from_caps,
    optimize_portfolio,
)

COUNTRIES = ["Australia", "Canada", "France", "Germany", "Japan", "UK", "USA"]
CORR = np.array(
    [
        [1.000, 0.488, 0.478, 0.515, 0.439, 0.512, 0.491],
        [0.488, 1.000, 0.664, 0.655, 0.310, 0.608, 0.779],
        [0.478, 0.664, 1.000, 0.861, 0.355, 0.783, 0.668],
        [0.515, 0.655, 0.861, 1.000, 0.354, 0.777, 0.653],
        [0.439, 0.310, 0.355, 0.354, 1.000, 0.405, 0.306],
        [0.512, 0.608, 0.783, 0.777, 0.405, 1.000, 0.652],
        [0.491, 0.779, 0.668, 0.653, 0.306, 0.652, 1.000],
    ]
)
VOL = np.array([16.0, 20.3, 24.8, 27.1, 21.0, 20.0, 18.7]) / 100
W_MKT = pd.Series(np.array([1.6, 2.2, 5.2, 5.5, 11.6, 12.4, 61.5]) / 100, index=COUNTRIES)
COV = pd.DataFrame(CORR * np.outer(VOL, VOL), index=COUNTRIES, columns=COUNTRIES)
# view 1: Germany outperforms the rest of Europe (France and UK at market-cap weights) by 5%
VIEW1 = {"Germany": 1.0, "France": -0.295, "UK": -0.705}
# view 2: Canada outperforms the US by 3%
VIEW2 = {"Canada": 1.0, "USA": -1.0}

HALF_PCT = 0.0005 + 1e-6  # half of the last printed digit (0.1%) plus rounding slack


def _pct(values: list[float]) -> np.ndarray:
    return np.asarray(values) / 100


def test_equilibrium_returns_table2() -> None:
    pi = equilibrium_returns(COV, W_MKT, risk_aversion=2.5)
    np.testing.assert_allclose(pi, _pct([3.9, 6.9, 8.4, 9.0, 4.3, 6.8, 7.6]), atol=HALF_PCT)


def test_one_view_table4() -> None:
    res = black_litterman_posterior(COV, BlackLittermanViews(P=[VIEW1], Q=[0.05], market_weights=W_MKT))
    np.testing.assert_allclose(res.posterior_returns, _pct([4.3, 7.6, 9.3, 11.0, 4.5, 7.0, 8.1]), atol=HALF_PCT)
    np.testing.assert_allclose(res.weights, _pct([1.5, 2.1, -4.0, 35.4, 11.0, -9.5, 58.6]), atol=0.0006)
    # the tilt away from the (1 + tau)-scaled market portfolio is the view portfolio alone (Table 4's last column)
    tilt = res.weights - W_MKT / 1.05
    np.testing.assert_allclose(tilt, _pct([0.0, 0.0, -8.9, 30.2, 0.0, -21.3, 0.0]), atol=HALF_PCT)
    np.testing.assert_allclose(tilt.to_numpy(), res.view_weights.iloc[0] / 1.05 * np.array(
        [0, 0, -0.295, 1, 0, -0.705, 0]), atol=1e-12)  # fmt: skip


def test_two_views_table5_and_lambda() -> None:
    views = BlackLittermanViews(P=[VIEW1, VIEW2], Q=[0.05, 0.03], market_weights=W_MKT, risk_aversion=2.5, tau=0.05)
    res = black_litterman_posterior(COV, views)
    np.testing.assert_allclose(res.posterior_returns, _pct([4.4, 8.7, 9.5, 11.2, 4.6, 7.0, 7.5]), atol=HALF_PCT)
    np.testing.assert_allclose(res.weights, _pct([1.5, 41.9, -3.4, 33.6, 11.0, -8.2, 18.8]), atol=HALF_PCT)
    tilt = res.weights - W_MKT / 1.05
    # Germany's printed 28.4 is 33.6 - 5.5/1.05 from the rounded columns (exact: 28.345), hence 0.06%
    np.testing.assert_allclose(tilt, _pct([0.0, 39.8, -8.4, 28.4, 0.0, -20.0, -39.8]), atol=0.0006)
    np.testing.assert_allclose(res.view_weights, [0.298, 0.418], atol=0.0005 + 1e-6)
    # Omega is diag(P tau Sigma P'): the paper's omega/tau are 0.021 and 0.017
    np.testing.assert_allclose(np.diag(res.omega) / 0.05, [0.021, 0.017], atol=0.0005)
    # the unconstrained optimum through optimize_portfolio (no budget, shorts allowed) is the same w*
    opt = optimize_portfolio(
        (None, COV), "black_litterman", black_litterman=views,
        constraints=PortfolioConstraints(long_only=False, budget=None),
    )  # fmt: skip
    np.testing.assert_allclose(opt.weights, res.weights, atol=1e-6)
    json.dumps(opt.to_dict())


def test_posterior_matches_pypfopt() -> None:
    P = np.array([[0, 0, -0.295, 1, 0, -0.705, 0], [0, 1, 0, 0, 0, 0, -1.0]])
    Q = np.array([0.05, 0.03])
    pi = equilibrium_returns(COV, W_MKT)
    ref = BlackLittermanModel(COV, pi=pd.Series(pi, index=COUNTRIES), P=P, Q=Q, tau=0.05, risk_aversion=2.5)
    res = black_litterman_posterior(COV, BlackLittermanViews(P=P, Q=Q, market_weights=W_MKT))
    np.testing.assert_allclose(res.posterior_returns, ref.bl_returns(), rtol=1e-12)
    np.testing.assert_allclose(res.posterior_cov, ref.bl_cov(), rtol=1e-12)
    np.testing.assert_allclose(res.omega, ref.omega, rtol=1e-12)
    np.testing.assert_allclose(he_litterman_omega(P, COV.to_numpy(), 0.05), ref.omega, rtol=1e-12)


# ----------------------------------------------------------------------------------------------------- Idzorek

# Idzorek (2005), "A step-by-step guide to the Black-Litterman model": eight asset classes, delta 3.07, tau 0.025
IDZ_ASSETS = ["US Bonds", "Intl Bonds", "US Lg Growth", "US Lg Value", "US Sm Growth", "US Sm Value", "Intl Dev Eq",
              "Intl Emg Eq"]  # fmt: skip
IDZ_W = np.array([0.1934, 0.2613, 0.1209, 0.1209, 0.0134, 0.0134, 0.2418, 0.0349])
IDZ_COV = np.array(
    [
        [0.001005, 0.001328, -0.000579, -0.000675, 0.000121, 0.000128, -0.000445, -0.000437],
        [0.001328, 0.007277, -0.001307, -0.000610, -0.002237, -0.000989, 0.001442, -0.001535],
        [-0.000579, -0.001307, 0.059852, 0.027588, 0.063497, 0.023036, 0.032967, 0.048039],
        [-0.000675, -0.000610, 0.027588, 0.029609, 0.026572, 0.021465, 0.020697, 0.029854],
        [0.000121, -0.002237, 0.063497, 0.026572, 0.102488, 0.042744, 0.039443, 0.065994],
        [0.000128, -0.000989, 0.023036, 0.021465, 0.042744, 0.032056, 0.019881, 0.032235],
        [-0.000445, 0.001442, 0.032967, 0.020697, 0.039443, 0.019881, 0.028355, 0.035064],
        [-0.000437, -0.001535, 0.048039, 0.029854, 0.065994, 0.032235, 0.035064, 0.079958],
    ]
)
IDZ_P = np.array(
    [
        [0, 0, 0, 0, 0, 0, 1, 0],  # Intl developed equity returns 5.25%
        [-1, 1, 0, 0, 0, 0, 0, 0],  # Intl bonds beat US bonds by 25bp
        [0, 0, 0.9, -0.9, 0.1, -0.1, 0, 0],  # growth beats value by 2%
    ]
)
IDZ_Q = np.array([0.0525, 0.0025, 0.02])
IDZ_CONF = np.array([0.25, 0.50, 0.65])
IDZ_DELTA, IDZ_TAU = 3.07, 0.025


def _idzorek_by_search(k: int, confidence: float) -> float:
    """Idzorek's procedure literally: the omega_k whose single-view weight tilt, with w = (delta Sigma)^-1 mu,
    is `confidence` times the tilt of the 100%-confident view, found by a bounded 1-D search on log(omega)."""
    pi = IDZ_DELTA * IDZ_COV @ IDZ_W
    p = IDZ_P[k : k + 1]

    def weights(omega: float) -> np.ndarray:
        a = p @ (IDZ_TAU * IDZ_COV) @ p.T + omega
        mu = pi + (IDZ_TAU * IDZ_COV) @ p.T @ np.linalg.solve(a, IDZ_Q[k : k + 1] - p @ pi)
        return np.linalg.solve(IDZ_DELTA * IDZ_COV, mu)

    target = IDZ_W + confidence * (weights(0.0) - IDZ_W)
    found = minimize_scalar(
        lambda lo: float(np.sum((weights(np.exp(lo)) - target) ** 2)), bounds=(-30.0, 5.0), method="bounded",
        options={"xatol": 1e-12},
    )  # fmt: skip
    return float(np.exp(found.x))


def test_idzorek_omega_matches_procedure_and_pypfopt() -> None:
    omega = np.diag(idzorek_omega(IDZ_P, IDZ_COV, IDZ_TAU, IDZ_CONF))
    searched = [_idzorek_by_search(k, c) for k, c in enumerate(IDZ_CONF)]
    np.testing.assert_allclose(omega, searched, rtol=1e-5)
    ref = BlackLittermanModel.idzorek_method(IDZ_CONF, IDZ_COV, None, IDZ_Q.reshape(-1, 1), IDZ_P, IDZ_TAU)
    np.testing.assert_allclose(omega, np.diag(ref), rtol=1e-12)


def test_idzorek_full_and_zero_confidence() -> None:
    cov = pd.DataFrame(IDZ_COV, index=IDZ_ASSETS, columns=IDZ_ASSETS)
    base = dict(P=IDZ_P, Q=IDZ_Q, market_weights=IDZ_W, risk_aversion=IDZ_DELTA, tau=IDZ_TAU, omega="idzorek")
    full = black_litterman_posterior(cov, BlackLittermanViews(**base, confidences=[1.0, 1.0, 1.0]))
    np.testing.assert_allclose(IDZ_P @ full.posterior_returns.to_numpy(), IDZ_Q, atol=1e-14)  # views hold exactly
    none = black_litterman_posterior(cov, BlackLittermanViews(**base, confidences=[0.0, 0.0, 0.0]))
    np.testing.assert_allclose(none.posterior_returns, IDZ_DELTA * IDZ_COV @ IDZ_W, rtol=1e-14)  # prior untouched
    np.testing.assert_allclose(none.posterior_cov, (1 + IDZ_TAU) * IDZ_COV, rtol=1e-14)
    np.testing.assert_allclose(none.weights, IDZ_W / (1 + IDZ_TAU), rtol=1e-10)
    # one view at 100%, the others at 0%: only that view holds, and the weight tilt is the full single-view tilt
    one = black_litterman_posterior(cov, BlackLittermanViews(**base, confidences=[1.0, 0.0, 0.0]))
    assert IDZ_P[0] @ one.posterior_returns.to_numpy() == pytest.approx(IDZ_Q[0], abs=1e-14)
    assert one.view_weights.iloc[1] == 0.0 and one.view_weights.iloc[2] == 0.0
    # confidence moves the view portfolio's posterior return monotonically from P Pi towards Q
    view_ret = [
        IDZ_P[2]
        @ black_litterman_posterior(
            cov, BlackLittermanViews(**base, confidences=[0.0, 0.0, c])
        ).posterior_returns.to_numpy()
        for c in (0.0, 0.25, 0.5, 0.75, 1.0)
    ]
    prior_view = IDZ_P[2] @ (IDZ_DELTA * IDZ_COV @ IDZ_W)
    assert view_ret[0] == pytest.approx(prior_view, abs=1e-14) and view_ret[-1] == pytest.approx(IDZ_Q[2], abs=1e-14)
    assert np.all(np.sign(np.diff(view_ret)) == np.sign(IDZ_Q[2] - prior_view))


# ---------------------------------------------------------------------------------------------- helpers + errors


def test_market_caps_and_implied_risk_aversion() -> None:
    caps = pd.Series([10.0, 30.0, 60.0], index=["a", "b", "c"])
    np.testing.assert_allclose(market_weights_from_caps(caps), [0.1, 0.3, 0.6])
    views_caps = BlackLittermanViews(P=[VIEW1], Q=[0.05], market_caps=W_MKT * 1e12)
    views_w = BlackLittermanViews(P=[VIEW1], Q=[0.05], market_weights=W_MKT)
    np.testing.assert_allclose(
        black_litterman_posterior(COV, views_caps).posterior_returns,
        black_litterman_posterior(COV, views_w).posterior_returns,
        rtol=1e-12,
    )
    # delta from an equal-weighted index of the 20 S&P 500 stocks, against PyPortfolioOpt's estimator
    prices = load_sp500_dataset()
    index_level = (prices.pct_change().fillna(0.0).mean(axis=1) + 1.0).cumprod()
    ref = market_implied_risk_aversion(index_level, frequency=252, risk_free_rate=0.02)
    ours = implied_risk_aversion(index_level.pct_change().dropna(), risk_free_rate=0.02, periods_per_year=252)
    assert ours == pytest.approx(float(ref), rel=1e-10)


def test_validation_errors() -> None:
    with pytest.raises(ValueError, match="Q: 1 view returns for 2 views"):
        black_litterman_posterior(COV, BlackLittermanViews(P=[VIEW1, VIEW2], Q=[0.05], market_weights=W_MKT))
    with pytest.raises(ValueError, match="P: view 0 names unknown asset 'Italy'"):
        black_litterman_posterior(COV, BlackLittermanViews(P=[{"Italy": 1.0}], Q=[0.05], market_weights=W_MKT))
    with pytest.raises(ValueError, match="P: shape"):
        black_litterman_posterior(COV, BlackLittermanViews(P=np.ones((1, 5)), Q=[0.05], market_weights=W_MKT))
    with pytest.raises(ValueError, match=r"confidences: must be in \[0, 1\]"):
        black_litterman_posterior(
            COV, BlackLittermanViews(P=[VIEW1], Q=[0.05], market_weights=W_MKT, omega="idzorek", confidences=[65.0])
        )
    with pytest.raises(ValueError, match="confidences: required"):
        black_litterman_posterior(COV, BlackLittermanViews(P=[VIEW1], Q=[0.05], market_weights=W_MKT, omega="idzorek"))
    with pytest.raises(ValueError, match="market_weights: needed"):
        black_litterman_posterior(COV, BlackLittermanViews(P=[VIEW1], Q=[0.05]))
    with pytest.raises(ValueError, match="market_weights: length 6"):
        black_litterman_posterior(COV, BlackLittermanViews(P=[VIEW1], Q=[0.05], market_weights=W_MKT.to_numpy()[:6]))
    with pytest.raises(ValueError, match="black_litterman: a BlackLittermanViews is required"):
        optimize_portfolio((None, COV), "black_litterman")
