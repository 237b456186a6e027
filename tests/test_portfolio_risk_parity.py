"""Risk budgeting / ERC and HRP against closed forms, skfolio and PyPortfolioOpt on real S&P 500 data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pypfopt import HRPOpt
from skfolio.cluster import HierarchicalClustering, LinkageMethod
from skfolio.datasets import load_sp500_dataset
from skfolio.optimization import HierarchicalRiskParity, RiskBudgeting

from tradesys.quant.portfolio import (
    PortfolioConstraints,
    equal_risk_contribution,
    hierarchical_risk_parity,
    optimize_portfolio,
    risk_budgeting,
    risk_contribution_shares,
)


@pytest.fixture(scope="module")
def returns() -> pd.DataFrame:
    return load_sp500_dataset().pct_change().dropna()


@pytest.fixture(scope="module")
def cov(returns: pd.DataFrame) -> pd.DataFrame:
    return returns.cov() * 252


def test_erc_contributions_equal_and_match_skfolio(returns, cov) -> None:
    w = equal_risk_contribution(cov)
    shares = risk_contribution_shares(w, cov.to_numpy())
    np.testing.assert_allclose(shares, 1.0 / len(w), atol=1e-12)  # every asset carries 1/n of the variance
    assert w.sum() == pytest.approx(1.0, abs=1e-12) and (w > 0).all()
    model = RiskBudgeting().fit(returns)  # skfolio: its own cvxpy formulation, daily sample covariance
    skf_cov = model.prior_estimator_.return_distribution_.covariance
    np.testing.assert_allclose(equal_risk_contribution(skf_cov, asset_names=list(cov.index)), model.weights_, atol=1e-5)


def test_risk_budgets_match_skfolio(returns, cov) -> None:
    budgets = np.linspace(1.0, 4.0, cov.shape[0])
    budgets /= budgets.sum()
    w = risk_budgeting(cov, budgets)
    np.testing.assert_allclose(risk_contribution_shares(w, cov.to_numpy()), budgets, atol=1e-12)
    model = RiskBudgeting(risk_budget=budgets).fit(returns)
    skf_cov = model.prior_estimator_.return_distribution_.covariance
    np.testing.assert_allclose(risk_budgeting(skf_cov, budgets, asset_names=list(cov.index)), model.weights_, atol=1e-5)
    # a zero budget excludes the asset; the rest still meet their (renormalised) budgets
    b0 = budgets.copy()
    b0[3] = 0.0
    w0 = risk_budgeting(cov, b0)
    assert w0.iloc[3] == 0.0
    np.testing.assert_allclose(risk_contribution_shares(w0, cov.to_numpy()), b0 / b0.sum(), atol=1e-12)


def test_closed_forms() -> None:
    # two assets: ERC is inverse volatility whatever the correlation
    for rho in (-0.6, 0.0, 0.8):
        s1, s2 = 0.1, 0.3
        c = np.array([[s1 * s1, rho * s1 * s2], [rho * s1 * s2, s2 * s2]])
        np.testing.assert_allclose(equal_risk_contribution(c), [s2 / (s1 + s2), s1 / (s1 + s2)], atol=1e-12)
    # uncorrelated assets: risk budgeting gives w_i proportional to sqrt(b_i) / sigma_i
    sig = np.array([0.1, 0.2, 0.25, 0.4])
    b = np.array([0.1, 0.2, 0.3, 0.4])
    expected = np.sqrt(b) / sig
    np.testing.assert_allclose(risk_budgeting(np.diag(sig**2), b), expected / expected.sum(), atol=1e-12)


def test_hrp_matches_skfolio_and_pypfopt(returns, cov) -> None:
    names = list(cov.index)
    # skfolio: optimal leaf ordering of the dendrogram before bisection; ward linkage by default
    for method, ours in (("single", LinkageMethod.SINGLE), ("ward", LinkageMethod.WARD)):
        model = HierarchicalRiskParity(hierarchical_clustering_estimator=HierarchicalClustering(linkage_method=ours))
        model.fit(returns)
        skf_cov = model.prior_estimator_.return_distribution_.covariance
        w = hierarchical_risk_parity(skf_cov, asset_names=names, linkage=method, leaf_order="optimal")
        np.testing.assert_allclose(w, model.weights_, atol=1e-12)
    # PyPortfolioOpt HRPOpt (de Prado's original ordering), single linkage
    ref = pd.Series(HRPOpt(returns=returns).optimize(linkage_method="single"))
    w = hierarchical_risk_parity(returns.cov(), linkage="single")
    np.testing.assert_allclose(w, ref[names], atol=1e-12)
    assert w.sum() == pytest.approx(1.0, abs=1e-12) and (w > 0).all()


def test_hrp_two_blocks_closed_form() -> None:
    """Two uncorrelated blocks of two identical assets: bisection splits the blocks by inverse cluster variance
    and each block in half."""
    s_a, s_b, rho = 0.1, 0.3, 0.5
    blk = lambda s: s * s * np.array([[1.0, rho], [rho, 1.0]])  # noqa: E731
    c = np.zeros((4, 4))
    c[:2, :2], c[2:, 2:] = blk(s_a), blk(s_b)
    v_a, v_b = s_a * s_a * (1 + rho) / 2, s_b * s_b * (1 + rho) / 2  # variance of each block's 50/50 portfolio
    alpha = 1 - v_a / (v_a + v_b)
    w = hierarchical_risk_parity(c)
    np.testing.assert_allclose(w, [alpha / 2, alpha / 2, (1 - alpha) / 2, (1 - alpha) / 2], atol=1e-14)


def test_through_optimize_portfolio(returns, cov) -> None:
    res = optimize_portfolio(returns, "risk_parity")
    np.testing.assert_allclose(res.risk_contributions / res.volatility, 1.0 / cov.shape[0], atol=1e-12)
    res = optimize_portfolio((None, cov), "hrp", hrp_linkage="single")
    np.testing.assert_allclose(res.weights, hierarchical_risk_parity(cov), atol=1e-15)
    assert res.status == "closed_form"
    with pytest.raises(ValueError, match="constraints: risk_parity supports only long-only"):
        optimize_portfolio((None, cov), "risk_parity", constraints=PortfolioConstraints(upper=0.1))
    bad = cov.copy()
    bad.iloc[2, :] = bad.iloc[:, 2] = 0.0
    with pytest.raises(ValueError, match="cov: asset BAC has zero variance"):
        hierarchical_risk_parity(bad)
    with pytest.raises(ValueError, match="risk_budget: budgets must be >= 0"):
        risk_budgeting(cov, -np.ones(cov.shape[0]))
    with pytest.raises(ValueError, match="linkage: unknown method 'nearest'"):
        hierarchical_risk_parity(cov, linkage="nearest")
