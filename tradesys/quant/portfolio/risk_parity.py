"""Risk-based allocation: risk budgeting / equal risk contribution (ERC) and hierarchical risk parity (HRP).

Why: neither needs expected returns, the noisiest input; both spread risk rather than capital.

Risk budgeting. Asset i's risk contribution is RC_i = w_i (Sigma w)_i / sqrt(w' Sigma w) (they sum to the
volatility); the risk-budgeting portfolio has RC_i / vol = b_i for budgets b >= 0 summing to 1 (ERC: b_i = 1/n).
It is found from the convex log-barrier problem of Spinu (2013) / Roncalli (2013):
    minimise 1/2 y' Sigma y - sum_i b_i log y_i  over y > 0,
whose first-order condition y_i (Sigma y)_i = b_i is exactly the budget condition; w = y / sum(y). Solved with
cvxpy (exponential cone, Clarabel). Assets with a zero budget get zero weight (they are left out of the
barrier, where the problem would not be strictly convex).

HRP (Lopez de Prado 2016): cluster on the correlation distance d_ij = sqrt((1 - rho_ij) / 2), order assets by
the dendrogram leaves (quasi-diagonalisation), then bisect the ordered list recursively, splitting weight
between the halves in inverse proportion to the variance of each half's inverse-variance portfolio. linkage is
any scipy method ("single" in the paper and PyPortfolioOpt, "ward" in skfolio); leaf_order "tree" keeps the
dendrogram's own leaf order (de Prado, PyPortfolioOpt), "optimal" applies scipy's optimal leaf ordering first
(skfolio).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import cvxpy as cp
import numpy as np
import pandas as pd
import scipy.cluster.hierarchy as sch
from scipy.spatial.distance import squareform

from tradesys.quant.portfolio.optimize import validate_cov, validate_mu


def risk_budgeting(
    cov: Any,
    budgets: Any = None,
    *,
    asset_names: Sequence[str] | None = None,
    solver: str = "CLARABEL",
) -> pd.Series:
    """Long-only weights (sum 1) whose shares of portfolio variance equal `budgets` (equal when None)."""
    sigma, names = validate_cov(cov, asset_names)
    n = len(names)
    if budgets is None:
        b = np.full(n, 1.0 / n)
    else:
        b = validate_mu(budgets, names, field_name="risk_budget")
        if (b < 0).any() or b.sum() <= 0:
            raise ValueError("risk_budget: budgets must be >= 0 and not all zero")
        b = b / b.sum()
    active = np.flatnonzero(b > 0)
    sub = sigma[np.ix_(active, active)]
    if (np.diag(sub) <= 0).any():
        i = active[int(np.argmin(np.diag(sub)))]
        raise ValueError(f"cov: asset {names[i]} has zero variance; its risk contribution cannot be budgeted")
    # scale to unit average variance: the weights are scale-free and the solver likes O(1) data
    scale = float(np.mean(np.diag(sub)))
    sub = sub / scale
    y = cp.Variable(active.size)
    objective = 0.5 * cp.quad_form(y, cp.psd_wrap(sub)) - b[active] @ cp.log(y)
    problem = cp.Problem(cp.Minimize(objective))
    try:
        problem.solve(solver=solver)
    except cp.error.SolverError as exc:
        raise ValueError(f"cov: risk budgeting solver failed ({exc})") from exc
    if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or y.value is None:
        raise ValueError(f"cov: risk budgeting did not converge (status {problem.status})")
    yv = np.maximum(np.asarray(y.value, dtype=float), 0.0)
    # one Newton step on y_i (S y)_i = b_i tightens the conic solver's ~1e-8 to machine precision
    yv = _newton_polish(sub, b[active], yv)
    w = np.zeros(n)
    w[active] = yv / yv.sum()
    return pd.Series(w, index=names, name="weight")


def _newton_polish(sigma: np.ndarray, b: np.ndarray, y: np.ndarray, steps: int = 3) -> np.ndarray:
    """Newton steps on the barrier's gradient Sigma y - b / y = 0 (Hessian Sigma + diag(b / y^2), positive definite).

    Only accepted while the gradient shrinks and y stays positive; the cvxpy solution is already the optimum,
    this just removes the interior-point solver's residual.
    """
    for _ in range(steps):
        grad = sigma @ y - b / y
        hess = sigma + np.diag(b / y**2)
        step = np.linalg.solve(hess, grad)
        y_new = y - step
        if (y_new <= 0).any():
            break
        if np.linalg.norm(sigma @ y_new - b / y_new) >= np.linalg.norm(grad):
            break
        y = y_new
    return y


def equal_risk_contribution(cov: Any, *, asset_names: Sequence[str] | None = None) -> pd.Series:
    """ERC portfolio: every asset contributes 1/n of the portfolio variance."""
    return risk_budgeting(cov, None, asset_names=asset_names)


def risk_contribution_shares(weights: Any, cov: Any) -> np.ndarray:
    """Shares of portfolio variance, w_i (Sigma w)_i / (w' Sigma w); they sum to 1."""
    w = np.asarray(weights, dtype=float).reshape(-1)
    s = np.asarray(cov, dtype=float)
    m = s @ w
    total = float(w @ m)
    if total <= 0:
        raise ValueError("weights: portfolio variance is zero")
    return w * m / total


_LINKAGES = ("single", "complete", "average", "weighted", "centroid", "median", "ward")


def correlation_distance(cov: np.ndarray) -> np.ndarray:
    """d_ij = sqrt((1 - rho_ij) / 2), clipped into [0, 1] against rounding."""
    sd = np.sqrt(np.diag(cov))
    corr = cov / np.outer(sd, sd)
    np.fill_diagonal(corr, 1.0)
    return np.sqrt(np.clip((1.0 - corr) / 2.0, 0.0, 1.0))


def hrp_order(
    cov: np.ndarray, *, linkage: str = "single", leaf_order: Literal["tree", "optimal"] = "tree"
) -> np.ndarray:
    """Asset indices in quasi-diagonal order (leaves of the dendrogram)."""
    if linkage not in _LINKAGES:
        raise ValueError(f"linkage: unknown method {linkage!r}")
    dist = correlation_distance(cov)
    condensed = squareform(dist, checks=False)
    z = sch.linkage(condensed, method=linkage)
    if leaf_order == "optimal":
        z = sch.optimal_leaf_ordering(z, condensed)
    elif leaf_order != "tree":
        raise ValueError(f"leaf_order: unknown {leaf_order!r} (tree or optimal)")
    return sch.leaves_list(z)


def hierarchical_risk_parity(
    cov: Any,
    *,
    asset_names: Sequence[str] | None = None,
    linkage: str = "single",
    leaf_order: Literal["tree", "optimal"] = "tree",
) -> pd.Series:
    """HRP weights (long-only, sum 1) from a covariance matrix."""
    sigma, names = validate_cov(cov, asset_names)
    n = len(names)
    var = np.diag(sigma)
    if (var <= 0).any():
        i = int(np.argmin(var))
        raise ValueError(f"cov: asset {names[i]} has zero variance (HRP needs inverse variances)")
    if n == 1:
        return pd.Series([1.0], index=names, name="weight")
    order = hrp_order(sigma, linkage=linkage, leaf_order=leaf_order)

    def cluster_variance(ids: np.ndarray) -> float:
        ivp = 1.0 / var[ids]
        ivp /= ivp.sum()
        return float(ivp @ sigma[np.ix_(ids, ids)] @ ivp)

    w = np.ones(n)
    items = [order]
    while items:
        next_items = []
        for ids in items:
            if ids.size < 2:
                continue
            mid = ids.size // 2
            left, right = ids[:mid], ids[mid:]
            v_left, v_right = cluster_variance(left), cluster_variance(right)
            alpha = 1.0 - v_left / (v_left + v_right)
            w[left] *= alpha
            w[right] *= 1.0 - alpha
            next_items += [left, right]
        items = next_items
    return pd.Series(w, index=names, name="weight")
