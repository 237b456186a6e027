"""Mean-variance optimisation against PyPortfolioOpt, skfolio and closed forms, on real S&P 500 data.

Data: skfolio's 20 S&P 500 stocks (daily prices 1990-2022) -> simple returns -> annualised mean and sample
covariance. The same mu and cov go into tradesys and into each peer library.
"""

from __future__ import annotations

import itertools
import json
import warnings

import numpy as np
import pandas as pd
import pytest
from pypfopt import EfficientFrontier
from skfolio import RiskMeasure
from skfolio.datasets import load_sp500_dataset
from skfolio.optimization import MeanRisk, ObjectiveFunction
from skfolio.prior import BasePrior, ReturnDistribution

from tradesys.quant.portfolio import (
    InfeasiblePortfolioError,
    PortfolioConstraints,
    efficient_frontier,
    moments_from_returns,
    optimize_portfolio,
)
from tradesys.quant.portfolio.plot import plot_efficient_frontier

SECTORS = {
    "AAPL": "tech", "AMD": "tech", "MSFT": "tech",
    "BAC": "financials", "JPM": "financials",
    "CVX": "energy", "XOM": "energy", "RRC": "energy",
    "JNJ": "health", "LLY": "health", "MRK": "health", "PFE": "health", "UNH": "health",
    "KO": "staples", "PEP": "staples", "PG": "staples", "WMT": "staples",
    "BBY": "discretionary", "HD": "discretionary",
    "GE": "industrials",
}  # fmt: skip


class FixedPrior(BasePrior):
    """skfolio prior that hands skfolio our annualised mu and covariance (so both libraries see the same inputs)."""

    def __init__(self, mu: np.ndarray | None = None, covariance: np.ndarray | None = None) -> None:
        self.mu = mu
        self.covariance = covariance

    def fit(self, X: np.ndarray, y: object = None, **fit_params: object) -> FixedPrior:
        self.return_distribution_ = ReturnDistribution(mu=self.mu, covariance=self.covariance, returns=np.asarray(X))
        return self


@pytest.fixture(scope="module")
def returns() -> pd.DataFrame:
    return load_sp500_dataset().pct_change().dropna()


@pytest.fixture(scope="module")
def moments(returns: pd.DataFrame) -> tuple[pd.Series, pd.DataFrame]:
    return moments_from_returns(returns)


def _pypfopt(mu: pd.Series, cov: pd.DataFrame, method: str, bounds=(0.0, 1.0), sectors=None, **kw) -> pd.Series:
    ef = EfficientFrontier(mu, cov, weight_bounds=bounds)
    if sectors is not None:
        ef.add_sector_constraints(*sectors)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        getattr(ef, method)(**kw)
    return pd.Series(ef.weights, index=mu.index)


def _skfolio(returns: pd.DataFrame, mu: pd.Series, cov: pd.DataFrame, **kw) -> np.ndarray:
    model = MeanRisk(risk_measure=RiskMeasure.VARIANCE, prior_estimator=FixedPrior(mu.to_numpy(), cov.to_numpy()), **kw)
    return model.fit(returns.to_numpy()).weights_


# ------------------------------------------------------------------------------------------------ vs PyPortfolioOpt


@pytest.mark.parametrize(
    ("objective", "kwargs", "method", "pfo_kwargs", "tol"),
    [
        ("min_variance", {}, "min_volatility", {}, 1e-4),
        ("max_sharpe", {"risk_free_rate": 0.02}, "max_sharpe", {"risk_free_rate": 0.02}, 1e-4),
        ("target_return", {"target_return": 0.25}, "efficient_return", {"target_return": 0.25}, 1e-4),
        ("target_risk", {"target_risk": 0.20}, "efficient_risk", {"target_volatility": 0.20}, 1e-4),
        ("max_utility", {"risk_aversion": 3.0}, "max_quadratic_utility", {"risk_aversion": 3.0}, 1e-4),
    ],
)
def test_long_only_matches_pypfopt(moments, objective, kwargs, method, pfo_kwargs, tol) -> None:
    mu, cov = moments
    res = optimize_portfolio((mu, cov), objective, **kwargs)
    ref = _pypfopt(mu, cov, method, **pfo_kwargs)
    assert res.status == "optimal"
    np.testing.assert_allclose(res.weights.to_numpy(), ref.to_numpy(), atol=tol)
    assert res.weights.sum() == pytest.approx(1.0, abs=1e-9)
    assert (res.weights >= 0).all()
    if objective == "target_return":
        assert res.expected_return == pytest.approx(0.25, abs=1e-7)
    if objective == "target_risk":
        assert res.volatility == pytest.approx(0.20, abs=1e-7)


def test_box_and_sector_constraints_match_pypfopt(moments) -> None:
    mu, cov = moments
    lower = {"health": 0.10, "tech": 0.20}
    upper = {"health": 0.30, "tech": 0.35, "energy": 0.05, "staples": 0.25}
    group_bounds = {g: (lower.get(g), upper.get(g)) for g in {*lower, *upper}}
    cons = PortfolioConstraints(upper=0.15, groups=SECTORS, group_bounds=group_bounds)
    for objective, method, kw in (("min_variance", "min_volatility", {}), ("max_sharpe", "max_sharpe", {})):
        res = optimize_portfolio((mu, cov), objective, constraints=cons)
        ref = _pypfopt(mu, cov, method, bounds=(0.0, 0.15), sectors=(SECTORS, lower, upper), **kw)
        np.testing.assert_allclose(res.weights.to_numpy(), ref.to_numpy(), atol=2e-4)
        w = res.weights
        assert w.max() <= 0.15 + 1e-9 and w.min() >= -1e-12 and w.sum() == pytest.approx(1.0, abs=1e-9)
        by_sector = w.groupby(pd.Series(SECTORS)).sum()
        for g, (lo, hi) in group_bounds.items():
            assert lo is None or by_sector[g] >= lo - 1e-8
            assert hi is None or by_sector[g] <= hi + 1e-8


# -------------------------------------------------------------------------------------------------------- vs skfolio


def test_matches_skfolio_mean_risk(returns, moments) -> None:
    mu, cov = moments
    for objective, fn in (
        ("min_variance", ObjectiveFunction.MINIMIZE_RISK),
        ("max_sharpe", ObjectiveFunction.MAXIMIZE_RATIO),
    ):
        res = optimize_portfolio((mu, cov), objective, risk_free_rate=0.02, constraints=PortfolioConstraints(upper=0.2))
        ref = _skfolio(returns, mu, cov, objective_function=fn, risk_free_rate=0.02, max_weights=0.2)
        np.testing.assert_allclose(res.weights.to_numpy(), ref, atol=1e-4)


def test_transaction_costs_match_skfolio_and_shrink_turnover(returns, moments) -> None:
    """Costs are charged against expected return: skfolio's MAXIMIZE_UTILITY (mean - costs - lambda var) with
    lambda = risk_aversion / 2 must give the same weights; higher costs must never increase turnover."""
    mu, cov = moments
    w0 = pd.Series(1.0 / len(mu), index=mu.index)
    turnovers = []
    for c in (0.0, 0.002, 0.01, 0.05, 1.0):
        cons = PortfolioConstraints(current_weights=w0, transaction_costs=c)
        res = optimize_portfolio((mu, cov), "max_utility", risk_aversion=4.0, constraints=cons)
        ref = _skfolio(
            returns, mu, cov, objective_function=ObjectiveFunction.MAXIMIZE_UTILITY, risk_aversion=2.0,
            transaction_costs=c, previous_weights=w0.to_numpy(),
        )  # fmt: skip
        np.testing.assert_allclose(res.weights.to_numpy(), ref, atol=5e-5)
        assert res.transaction_cost == pytest.approx(c * np.abs(res.weights - w0).sum(), rel=1e-12, abs=1e-15)
        turnovers.append(res.turnover)
    assert all(b <= a + 1e-7 for a, b in itertools.pairwise(turnovers))
    assert turnovers[0] > 1.0 and turnovers[-1] < 1e-6  # prohibitive costs: stay put

    # the same ordering for max Sharpe and min variance
    for objective in ("max_sharpe", "min_variance"):
        t = [
            optimize_portfolio(
                (mu, cov), objective, constraints=PortfolioConstraints(current_weights=w0, transaction_costs=c)
            ).turnover
            for c in (0.0, 0.01, 0.05)
        ]
        assert t[0] > t[1] + 0.05 > t[2] + 0.1


# ------------------------------------------------------------------------------------------------------ closed forms


def test_unconstrained_min_variance_is_closed_form(moments) -> None:
    mu, cov = moments
    res = optimize_portfolio((mu, cov), "min_variance", constraints=PortfolioConstraints(long_only=False))
    inv_one = np.linalg.solve(cov.to_numpy(), np.ones(len(mu)))
    np.testing.assert_allclose(res.weights.to_numpy(), inv_one / inv_one.sum(), atol=1e-7)
    assert (res.weights < 0).any()  # the unconstrained optimum shorts something, so long_only really was off
    assert res.volatility == pytest.approx(1.0 / np.sqrt(inv_one.sum()), rel=1e-8)


@pytest.mark.parametrize(("s1", "s2", "rho"), [(0.20, 0.30, 0.3), (0.30, 0.10, 0.5), (0.15, 0.25, -0.4)])
def test_two_asset_long_only_min_variance(s1, s2, rho) -> None:
    cov = np.array([[s1 * s1, rho * s1 * s2], [rho * s1 * s2, s2 * s2]])
    w1 = (s2 * s2 - rho * s1 * s2) / (s1 * s1 + s2 * s2 - 2 * rho * s1 * s2)
    w1 = min(max(w1, 0.0), 1.0)  # long-only: the 1-D quadratic is minimised at the clipped vertex
    res = optimize_portfolio((None, cov), "min_variance")
    np.testing.assert_allclose(res.weights.to_numpy(), [w1, 1.0 - w1], atol=1e-6)  # interior point: ~1e-7 off a bound


def test_risk_contributions_sum_to_volatility(moments) -> None:
    mu, cov = moments
    res = optimize_portfolio((mu, cov), "max_sharpe", risk_free_rate=0.02)
    assert res.risk_contributions.sum() == pytest.approx(res.volatility, rel=1e-10)
    w = res.weights.to_numpy()
    # Euler: RC_i = w_i d(vol)/dw_i; check the derivative by central differences
    h = 1e-6
    for i in (int(np.argmax(w)), int(np.argsort(w)[-2])):
        e = np.zeros_like(w)
        e[i] = h
        dvol = (np.sqrt((w + e) @ cov.to_numpy() @ (w + e)) - np.sqrt((w - e) @ cov.to_numpy() @ (w - e))) / (2 * h)
        assert res.risk_contributions.iloc[i] == pytest.approx(w[i] * dvol, rel=1e-6)
    # at the max-Sharpe optimum, each held asset's return per unit of marginal risk is the same (tangency)
    held = w > 1e-4
    marginal = (cov.to_numpy() @ w) / res.volatility
    ratio = (mu.to_numpy()[held] - 0.02) / marginal[held]
    assert np.ptp(ratio) / ratio.mean() < 1e-4


# ------------------------------------------------------------------------------------------------ frontier + plot


def test_efficient_frontier_monotone_concave_and_plotted(moments, tmp_path) -> None:
    mu, cov = moments
    table = efficient_frontier((mu, cov), n_points=20, risk_free_rate=0.02)
    assert set(table["point"]) >= {"min_variance", "max_sharpe", "max_return", "frontier"}
    vol, ret = table["volatility"].to_numpy(), table["net_return"].to_numpy()
    assert np.all(np.diff(vol) > 0) and np.all(np.diff(ret) > 0)  # higher return costs more volatility
    slopes = np.diff(ret) / np.diff(vol)
    assert np.all(np.diff(slopes) <= 1e-6 * slopes.max())  # concave: return per unit of risk falls along it
    weights = table[list(mu.index)]
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-9)
    assert (weights.to_numpy() >= 0).all()
    minvar = optimize_portfolio((mu, cov), "min_variance")
    ms = optimize_portfolio((mu, cov), "max_sharpe", risk_free_rate=0.02)
    assert table["volatility"].min() == pytest.approx(minvar.volatility, rel=1e-9)
    assert table.loc[table["point"] == "max_sharpe", "sharpe"].item() == pytest.approx(ms.sharpe, rel=1e-9)
    assert table["sharpe"].max() == pytest.approx(ms.sharpe, rel=1e-7)  # no frontier point beats the tangency
    assert table["net_return"].max() == pytest.approx(mu.max(), rel=1e-7)  # long-only top = best single asset

    # with costs the frontier is in net return; it starts at the (cost-free) minimum-variance portfolio
    w0 = pd.Series(1.0 / len(mu), index=mu.index)
    costly = efficient_frontier(
        (mu, cov), n_points=10, constraints=PortfolioConstraints(current_weights=w0, transaction_costs=0.01)
    )
    vol_c, ret_c = costly["volatility"].to_numpy(), costly["net_return"].to_numpy()
    assert np.all(np.diff(vol_c) > 0) and np.all(np.diff(ret_c) > 0)
    assert np.all(np.diff(np.diff(ret_c) / np.diff(vol_c)) <= 0)
    assert costly["point"].iloc[0] == "min_variance" and vol_c[0] == pytest.approx(minvar.volatility, rel=1e-9)
    np.testing.assert_allclose(costly["expected_return"] - costly["net_return"], 0.01 * np.abs(
        costly[list(mu.index)] - w0).sum(axis=1), rtol=1e-12)  # fmt: skip

    png = plot_efficient_frontier(table, tmp_path / "frontier.png", assets=(mu, cov))
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


# ------------------------------------------------------------------------------------------------------ constraints


def test_turnover_group_box_budget_hold_together(moments) -> None:
    mu, cov = moments
    w0 = pd.Series(1.0 / len(mu), index=mu.index)
    cons = PortfolioConstraints(
        lower=0.01, upper={"UNH": 0.10, "AAPL": 0.12}, groups=SECTORS, group_bounds={"tech": (None, 0.25)},
        current_weights=w0, max_turnover=0.30, budget=0.9,
    )  # fmt: skip
    for objective, kw in (("max_sharpe", {"risk_free_rate": 0.02}), ("target_return", {"target_return": 0.16})):
        res = optimize_portfolio((mu, cov), objective, constraints=cons, **kw)
        w = res.weights
        assert res.ok
        assert w.sum() == pytest.approx(0.9, abs=1e-8)
        assert w.min() >= 0.01 - 1e-9 and w["UNH"] <= 0.10 + 1e-9 and w["AAPL"] <= 0.12 + 1e-9
        assert w[["AAPL", "AMD", "MSFT"]].sum() <= 0.25 + 1e-8
        assert np.abs(w - w0).sum() <= 0.30 + 1e-7
        assert res.turnover == pytest.approx(np.abs(w - w0).sum(), rel=1e-12)
    # the turnover limit binds: without it max Sharpe moves much further
    free = optimize_portfolio((mu, cov), "max_sharpe", risk_free_rate=0.02, constraints=PortfolioConstraints())
    assert np.abs(free.weights - w0).sum() > 1.0


# ------------------------------------------------------------------------------------------------------- validation


def test_validation_errors_name_the_field(moments) -> None:
    mu, cov = moments
    bad = cov.copy()
    bad.iloc[0, 1] = bad.iloc[1, 0] = 10.0  # a correlation far above 1
    with pytest.raises(ValueError, match=r"cov: not positive semi-definite \(min eigenvalue -"):
        optimize_portfolio((mu, bad), "min_variance")
    with pytest.raises(ValueError, match="mu: length 19 does not match cov"):
        optimize_portfolio((mu.to_numpy()[:-1], cov.to_numpy()), "max_sharpe")
    with pytest.raises(ValueError, match="asset_names: 3 names"):
        optimize_portfolio((mu.to_numpy(), cov.to_numpy()), "max_sharpe", asset_names=["a", "b", "c"])
    nan_mu = mu.copy()
    nan_mu.iloc[3] = np.nan
    with pytest.raises(ValueError, match="mu: contains 1 NaN"):
        optimize_portfolio((nan_mu, cov), "max_sharpe")
    with pytest.raises(ValueError, match=r"returns: contains 1 NaN.*'AAPL'"):
        rets = pd.DataFrame(np.random.default_rng(0).normal(0, 0.01, (50, 3)), columns=["AAPL", "B", "C"])
        rets.iloc[7, 0] = np.nan
        optimize_portfolio(rets, "min_variance")
    with pytest.raises(ValueError, match=r"constraints\.upper: length 3 does not match the 20 assets"):
        optimize_portfolio((mu, cov), "min_variance", constraints=PortfolioConstraints(upper=[0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match=r"constraints\.groups: unknown asset 'TSLA'"):
        cons = PortfolioConstraints(groups={"tech": ["AAPL", "TSLA"]}, group_bounds={"tech": (0, 0.2)})
        optimize_portfolio((mu, cov), "min_variance", constraints=cons)
    with pytest.raises(ValueError, match=r"constraints\.max_turnover: needs current_weights"):
        optimize_portfolio((mu, cov), "min_variance", constraints=PortfolioConstraints(max_turnover=0.1))
    with pytest.raises(ValueError, match="objective: unknown 'max_return'"):
        optimize_portfolio((mu, cov), "max_return")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="target_return: required"):
        optimize_portfolio((mu, cov), "target_return")


def test_infeasible_is_reported_never_garbage(moments) -> None:
    mu, cov = moments
    with pytest.raises(InfeasiblePortfolioError, match=r"upper bounds sum to 0\.6 < budget 1"):
        optimize_portfolio((mu, cov), "min_variance", constraints=PortfolioConstraints(upper=0.03))
    with pytest.raises(InfeasiblePortfolioError, match=r"target_return 0\.5 is not attainable"):
        optimize_portfolio((mu, cov), "target_return", target_return=0.5)  # above the best single stock
    res = optimize_portfolio((mu, cov), "target_risk", target_risk=0.05, raise_on_infeasible=False)
    assert res.status == "infeasible" and not res.ok and res.weights.isna().all()
    assert "below the minimum attainable volatility" in res.message
    # group bounds that contradict the box: tech >= 50% with each tech stock <= 10%
    cons = PortfolioConstraints(upper=0.10, groups=SECTORS, group_bounds={"tech": (0.5, None)})
    with pytest.raises(InfeasiblePortfolioError, match="infeasible"):
        optimize_portfolio((mu, cov), "max_sharpe", constraints=cons)
    # max Sharpe with every asset below the risk-free rate has no solution with positive excess return
    with pytest.raises(InfeasiblePortfolioError, match="above the risk-free rate"):
        optimize_portfolio((mu, cov), "max_sharpe", risk_free_rate=1.0)
    assert isinstance(InfeasiblePortfolioError("x"), ValueError)  # Serve maps it to a 4xx like other bad input


def test_returns_input_and_to_dict(returns) -> None:
    res = optimize_portfolio(returns, "max_sharpe", risk_free_rate=0.02)
    mu, cov = moments_from_returns(returns)
    ref = optimize_portfolio((mu, cov), "max_sharpe", risk_free_rate=0.02)
    np.testing.assert_allclose(res.weights.to_numpy(), ref.weights.to_numpy(), atol=1e-12)
    d = res.to_dict()
    json.dumps(d)  # JSON-ready
    assert d["status"] == "optimal" and set(d["weights"]) == set(returns.columns)
    assert sum(d["risk_contribution_share"].values()) == pytest.approx(1.0, abs=1e-9)
    assert d["sharpe"] == pytest.approx((d["expected_return"] - 0.02) / d["volatility"], rel=1e-12)
    nan = optimize_portfolio(returns, "target_return", target_return=9.9, raise_on_infeasible=False).to_dict()
    json.dumps(nan)
    assert nan["status"] == "infeasible" and all(v is None for v in nan["weights"].values())
