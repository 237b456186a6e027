"""Mean-variance portfolio optimisation on cvxpy: min variance, max Sharpe, target return/risk, quadratic utility.

Conventions. Weights are fractions of portfolio value; `budget` is their sum (1.0 fully invested). `mu` and `cov`
are in the same period units (annualised when they come from `moments_from_returns`, which scales daily moments
by `periods_per_year`); the risk-free rate and target return/risk are in those units too. Volatility is
sqrt(w' cov w). Turnover is the sum of absolute weight changes against `current_weights` (buys plus sells, so
moving 10% from one asset to another is turnover 0.2). Transaction costs are proportional: a cost rate c_i is
paid per unit of weight traded in asset i, and costs are charged against expected return: net return =
mu'w - c'|w - w0|. Objectives that use expected return (max Sharpe, target return/risk, max utility) see the net
return; min variance with costs minimises the utility with mu = 0, i.e. (risk_aversion / 2) w' cov w + c'|w - w0|.
Sharpe ratios are (net return - risk-free rate) / volatility.

Why cvxpy (Clarabel): every problem here is convex (QP or SOCP), so the solver either certifies the optimum or
certifies infeasibility; an infeasible problem never returns weights (it raises `InfeasiblePortfolioError`, a
`ValueError`, or returns NaN weights with status "infeasible" when asked not to raise). Max Sharpe uses the
Cornuejols-Tutuncu homogenisation (y = kappa w), which keeps box, group, turnover and cost constraints convex.

Bad input raises ValueError("field: reason"): non-PSD covariance (with its minimum eigenvalue), mismatched
lengths of mu/cov/asset names/bounds, NaNs, unknown assets in groups.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import cvxpy as cp
import numpy as np
import pandas as pd

Objective = Literal[
    "min_variance",
    "max_sharpe",
    "target_return",
    "target_risk",
    "max_utility",
    "risk_parity",
    "hrp",
    "black_litterman",
]
OBJECTIVES: tuple[str, ...] = (
    "min_variance",
    "max_sharpe",
    "target_return",
    "target_risk",
    "max_utility",
    "risk_parity",
    "hrp",
    "black_litterman",
)
BoundSpec = float | Sequence[float] | Mapping[str, float] | np.ndarray | pd.Series | None

_SOLVER = "CLARABEL"
_PSD_RTOL = 1e-10  # eigenvalues above -_PSD_RTOL * max eigenvalue are rounding noise


class InfeasiblePortfolioError(ValueError):
    """The constraints admit no portfolio (or the objective is unattainable under them)."""


# --------------------------------------------------------------------------------------------------- validation


def _finite_or_raise(values: np.ndarray, field_name: str, labels: Sequence[str] | None = None) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        idx = np.argwhere(bad)[0]
        where = ", ".join(str(labels[i]) if labels is not None and values.ndim == 1 else str(i) for i in idx)
        if labels is not None and values.ndim == 2:
            where = f"{labels[idx[0]]}, {labels[idx[1]]}"
        raise ValueError(f"{field_name}: contains {int(bad.sum())} NaN or infinite value(s) (first at {where})")


def validate_cov(
    cov: Any, asset_names: Sequence[str] | None = None, *, field_name: str = "cov"
) -> tuple[np.ndarray, list[str]]:
    """Check a covariance matrix (square, finite, symmetric, PSD) and return it as an array with asset names.

    Eigenvalues that are negative only by rounding (above -1e-10 x the largest) are accepted as zero (the
    matrix is returned as given, symmetrised); anything more negative is an error naming the minimum eigenvalue.
    """
    names: list[str] | None = None
    if isinstance(cov, pd.DataFrame):
        if list(cov.index) != list(cov.columns):
            raise ValueError(f"{field_name}: index and columns must name the same assets in the same order")
        names = [str(c) for c in cov.columns]
        arr = cov.to_numpy(dtype=float)
    else:
        arr = np.asarray(cov, dtype=float)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] == 0:
        raise ValueError(f"{field_name}: must be a non-empty square matrix, got shape {arr.shape}")
    n = arr.shape[0]
    if asset_names is not None:
        asset_names = [str(a) for a in asset_names]
        if len(asset_names) != n:
            raise ValueError(f"asset_names: {len(asset_names)} names for a {n}x{n} {field_name}")
        if names is not None and names != asset_names:
            raise ValueError(f"asset_names: do not match the labels of {field_name}")
        names = asset_names
    if names is None:
        names = [f"asset_{i}" for i in range(n)]
    if len(set(names)) != n:
        raise ValueError(f"asset_names: duplicate asset names in {field_name}")
    _finite_or_raise(arr, field_name, names)
    scale = max(float(np.max(np.abs(arr))), 1e-300)
    asym = float(np.max(np.abs(arr - arr.T)))
    if asym > 1e-8 * scale:
        raise ValueError(f"{field_name}: not symmetric (max |cov - cov'| = {asym:.3g})")
    arr = 0.5 * (arr + arr.T)
    if np.any(np.diag(arr) < 0):
        i = int(np.argmin(np.diag(arr)))
        raise ValueError(f"{field_name}: negative variance for {names[i]} ({arr[i, i]:.6g})")
    try:  # fast path: a Cholesky factor exists exactly when the matrix is positive definite
        np.linalg.cholesky(arr)
        return arr, names
    except np.linalg.LinAlgError:
        pass
    eig = np.linalg.eigvalsh(arr)
    if eig[0] < -_PSD_RTOL * max(eig[-1], 1e-300):
        raise ValueError(f"{field_name}: not positive semi-definite (min eigenvalue {eig[0]:.6g})")
    return arr, names


def validate_mu(mu: Any, names: Sequence[str], *, field_name: str = "mu") -> np.ndarray:
    """Expected returns as an array aligned to `names` (a Series/Mapping is reordered by name)."""
    n = len(names)
    if isinstance(mu, (pd.Series, Mapping)):
        ser = pd.Series(mu, dtype=float)
        ser.index = [str(i) for i in ser.index]
        missing = [a for a in names if a not in ser.index]
        extra = [a for a in ser.index if a not in names]
        if missing or extra or len(ser) != n:
            raise ValueError(
                f"{field_name}: assets do not match cov (missing {missing[:5]}, unexpected {extra[:5]}, "
                f"{len(ser)} values for {n} assets)"
            )
        arr = ser.reindex(list(names)).to_numpy(dtype=float)
    else:
        arr = np.asarray(mu, dtype=float).reshape(-1)
        if arr.shape[0] != n:
            raise ValueError(f"{field_name}: length {arr.shape[0]} does not match cov ({n} assets)")
    _finite_or_raise(arr, field_name, list(names))
    return arr


def validate_returns(returns: Any) -> pd.DataFrame:
    """Per-period simple returns (rows = periods, columns = assets), finite, at least two rows."""
    if isinstance(returns, pd.DataFrame):
        df = returns.astype(float)
        df.columns = [str(c) for c in df.columns]
    else:
        arr = np.asarray(returns, dtype=float)
        if arr.ndim != 2:
            raise ValueError(f"returns: must be 2-D (periods x assets), got shape {arr.shape}")
        df = pd.DataFrame(arr, columns=[f"asset_{i}" for i in range(arr.shape[1])])
    if df.shape[0] < 2 or df.shape[1] == 0:
        raise ValueError(f"returns: need at least 2 periods and 1 asset, got shape {df.shape}")
    if len(set(df.columns)) != df.shape[1]:
        raise ValueError("returns: duplicate column names")
    values = df.to_numpy()
    bad = ~np.isfinite(values)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(
            f"returns: contains {int(bad.sum())} NaN or infinite value(s) (first in column {df.columns[c]!r} "
            f"at row {df.index[r]!r}); drop or fill them first"
        )
    return df


def moments_from_returns(
    returns: Any, *, periods_per_year: float = 252.0, covariance: Literal["sample", "ledoit_wolf"] = "sample"
) -> tuple[pd.Series, pd.DataFrame]:
    """Annualised mean and covariance of per-period returns: mean x periods, covariance x periods (ddof = 1).

    `covariance="ledoit_wolf"` shrinks the sample covariance towards a scaled identity (scikit-learn's
    LedoitWolf; its maximum-likelihood normalisation, ddof = 0), which is better conditioned with many assets.
    """
    df = validate_returns(returns)
    if not periods_per_year > 0:
        raise ValueError("periods_per_year: must be > 0")
    mu = df.mean() * periods_per_year
    if covariance == "sample":
        cov = df.cov() * periods_per_year
    elif covariance == "ledoit_wolf":
        from sklearn.covariance import LedoitWolf

        lw = LedoitWolf().fit(df.to_numpy())
        cov = pd.DataFrame(lw.covariance_ * periods_per_year, index=df.columns, columns=df.columns)
    else:
        raise ValueError(f"covariance: unknown estimator {covariance!r} (use 'sample' or 'ledoit_wolf')")
    return mu, cov


def risk_contributions(weights: Any, cov: Any) -> np.ndarray:
    """Euler risk contributions to volatility, w_i (cov w)_i / sqrt(w' cov w); they sum to the volatility."""
    w = np.asarray(weights, dtype=float).reshape(-1)
    c = np.asarray(cov, dtype=float)
    marginal = c @ w
    vol = math.sqrt(max(float(w @ marginal), 0.0))
    if vol == 0.0:
        return np.zeros_like(w)
    return w * marginal / vol


# -------------------------------------------------------------------------------------------------- constraints


@dataclass(frozen=True)
class PortfolioConstraints:
    """Constraints shared by every objective.

    long_only: weights >= 0 (combined with `lower`, the larger bound wins).
    budget: sum of weights (1.0 fully invested); None leaves the sum free (max_utility / black_litterman only).
    lower, upper: box bounds, a scalar for every asset, a sequence in asset order, or a mapping by asset name
        (assets it leaves out are unbounded on that side, apart from long_only).
    groups: either group -> member assets, or asset -> group label (e.g. sector); group_bounds: group ->
        (lower, upper) on the summed weight of its members (None for an open side).
    current_weights: today's weights (mapping by name or sequence); missing means all cash (zeros). They
        anchor turnover and transaction costs.
    max_turnover: upper bound on sum |w - current_weights|.
    transaction_costs: proportional cost rate per unit of weight traded, scalar or per asset (e.g. 0.001 = 10bp).
    """

    long_only: bool = True
    budget: float | None = 1.0
    lower: BoundSpec = None
    upper: BoundSpec = None
    groups: Mapping[str, Sequence[str]] | Mapping[str, str] | None = None
    group_bounds: Mapping[str, tuple[float | None, float | None]] | None = None
    current_weights: BoundSpec = None
    max_turnover: float | None = None
    transaction_costs: BoundSpec = None

    def is_default(self) -> bool:
        """Only long-only and/or a budget (what risk parity and HRP can honour)."""
        return (
            self.lower is None
            and self.upper is None
            and not self.group_bounds
            and self.max_turnover is None
            and self.transaction_costs is None
        )


@dataclass(frozen=True)
class _Resolved:
    n: int
    budget: float | None
    lb: np.ndarray  # -inf where open
    ub: np.ndarray  # +inf where open
    group_names: list[str]
    group_matrix: np.ndarray  # (G, n) 0/1 membership
    group_lb: np.ndarray
    group_ub: np.ndarray
    w0: np.ndarray
    max_turnover: float | None
    costs: np.ndarray | None


def _vector(spec: BoundSpec, names: Sequence[str], fill: float, field_name: str) -> np.ndarray:
    n = len(names)
    if spec is None:
        return np.full(n, fill)
    if isinstance(spec, (pd.Series, Mapping)):
        out = np.full(n, fill)
        pos = {a: i for i, a in enumerate(names)}
        for key, value in dict(spec).items():
            if str(key) not in pos:
                raise ValueError(f"{field_name}: unknown asset {key!r}")
            out[pos[str(key)]] = float(value)
        if np.isnan(out).any():
            raise ValueError(f"{field_name}: contains NaN")
        return out
    arr = np.asarray(spec, dtype=float)
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    arr = arr.reshape(-1)
    if arr.shape[0] != n:
        raise ValueError(f"{field_name}: length {arr.shape[0]} does not match the {n} assets")
    if np.isnan(arr).any():
        raise ValueError(f"{field_name}: contains NaN")
    return arr


def _resolve(constraints: PortfolioConstraints, names: Sequence[str]) -> _Resolved:
    n = len(names)
    c = constraints
    if c.budget is not None and not math.isfinite(float(c.budget)):
        raise ValueError("constraints.budget: must be finite")
    lb = _vector(c.lower, names, -np.inf, "constraints.lower")
    ub = _vector(c.upper, names, np.inf, "constraints.upper")
    if c.long_only:
        lb = np.maximum(lb, 0.0)
    bad = np.flatnonzero(lb > ub)
    if bad.size:
        i = int(bad[0])
        raise InfeasiblePortfolioError(
            f"constraints: infeasible: lower bound above upper bound for {names[i]} ({lb[i]:g} > {ub[i]:g})"
        )
    if c.budget is not None:
        if lb.sum() > c.budget + 1e-12:
            raise InfeasiblePortfolioError(
                f"constraints: infeasible: lower bounds sum to {lb.sum():g} > budget {c.budget:g}"
            )
        if ub.sum() < c.budget - 1e-12:
            raise InfeasiblePortfolioError(
                f"constraints: infeasible: upper bounds sum to {ub.sum():g} < budget {c.budget:g}"
            )

    # groups: accept group -> members or asset -> label
    members: dict[str, list[str]] = {}
    if c.groups:
        values = list(c.groups.values())
        if all(isinstance(v, str) for v in values):
            for asset, label in c.groups.items():
                members.setdefault(str(label), []).append(str(asset))
        else:
            for label, assets in c.groups.items():
                if isinstance(assets, str):
                    raise ValueError(f"constraints.groups: group {label!r} must list its member assets")
                members[str(label)] = [str(a) for a in assets]
    pos = {a: i for i, a in enumerate(names)}
    for label, assets in members.items():
        for a in assets:
            if a not in pos:
                raise ValueError(f"constraints.groups: unknown asset {a!r} in group {label!r}")
    group_names: list[str] = []
    rows: list[np.ndarray] = []
    glb: list[float] = []
    gub: list[float] = []
    for label, (lo, hi) in (c.group_bounds or {}).items():
        label = str(label)
        if label not in members:
            raise ValueError(f"constraints.group_bounds: unknown group {label!r} (known: {sorted(members)[:10]})")
        lo_f = -np.inf if lo is None else float(lo)
        hi_f = np.inf if hi is None else float(hi)
        if math.isnan(lo_f) or math.isnan(hi_f):
            raise ValueError(f"constraints.group_bounds: NaN bound for group {label!r}")
        if lo_f > hi_f:
            raise InfeasiblePortfolioError(
                f"constraints: infeasible: group {label!r} lower bound {lo_f:g} > upper bound {hi_f:g}"
            )
        row = np.zeros(n)
        row[[pos[a] for a in members[label]]] = 1.0
        group_names.append(label)
        rows.append(row)
        glb.append(lo_f)
        gub.append(hi_f)
    gm = np.vstack(rows) if rows else np.zeros((0, n))

    w0 = _vector(c.current_weights, names, 0.0, "constraints.current_weights")
    if not np.isfinite(w0).all():
        raise ValueError("constraints.current_weights: must be finite")
    turnover = None
    if c.max_turnover is not None:
        turnover = float(c.max_turnover)
        if not turnover >= 0:
            raise ValueError("constraints.max_turnover: must be >= 0")
        if c.current_weights is None:
            raise ValueError("constraints.max_turnover: needs current_weights")
    costs = None
    if c.transaction_costs is not None:
        costs = _vector(c.transaction_costs, names, 0.0, "constraints.transaction_costs")
        if not np.isfinite(costs).all() or (costs < 0).any():
            raise ValueError("constraints.transaction_costs: must be finite and >= 0")
        if not costs.any():
            costs = None
    return _Resolved(n, c.budget, lb, ub, group_names, gm, np.asarray(glb), np.asarray(gub), w0, turnover, costs)


def _feasibility_constraints(w: cp.Variable, r: _Resolved, kappa: cp.Variable | float = 1.0) -> list[Any]:
    """Budget, box, group and turnover constraints, homogenised by kappa (y = kappa w) for max Sharpe."""
    cons: list[Any] = []
    if r.budget is not None:
        cons.append(cp.sum(w) == r.budget * kappa)
    # whole-vector constraints where every bound is finite; indexing only for partly open boxes
    lo, hi = np.isfinite(r.lb), np.isfinite(r.ub)
    if lo.all():
        cons.append(w >= r.lb * kappa)
    elif lo.any():
        cons.append(w[np.flatnonzero(lo)] >= r.lb[lo] * kappa)
    if hi.all():
        cons.append(w <= r.ub * kappa)
    elif hi.any():
        cons.append(w[np.flatnonzero(hi)] <= r.ub[hi] * kappa)
    if r.group_matrix.shape[0]:
        glo = np.flatnonzero(np.isfinite(r.group_lb))
        ghi = np.flatnonzero(np.isfinite(r.group_ub))
        if glo.size:
            cons.append(r.group_matrix[glo] @ w >= r.group_lb[glo] * kappa)
        if ghi.size:
            cons.append(r.group_matrix[ghi] @ w <= r.group_ub[ghi] * kappa)
    if r.max_turnover is not None:
        cons.append(cp.norm1(w - r.w0 * kappa) <= r.max_turnover * kappa)
    return cons


def _cost_expr(w: cp.Variable, r: _Resolved, kappa: cp.Variable | float = 1.0) -> Any:
    if r.costs is None:
        return 0.0
    return r.costs @ cp.abs(w - r.w0 * kappa)


# ------------------------------------------------------------------------------------------------------ result


@dataclass(frozen=True)
class OptimizationResult:
    """Weights by asset name plus the portfolio's figures under the inputs it was solved on.

    expected_return is gross (mu'w); transaction_cost is c'|w - w0|; sharpe uses the net return. status is
    "optimal", "optimal_inaccurate" (solver reached reduced accuracy), "closed_form", or "infeasible" /
    "unbounded" (weights all NaN).
    """

    weights: pd.Series
    expected_return: float
    volatility: float
    sharpe: float
    risk_contributions: pd.Series
    status: str
    objective: str
    risk_free_rate: float = 0.0
    turnover: float = float("nan")
    transaction_cost: float = 0.0
    solver: str = ""
    message: str = ""
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in ("optimal", "optimal_inaccurate", "closed_form")

    @property
    def net_return(self) -> float:
        return self.expected_return - self.transaction_cost

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: floats (NaN -> None), weights and risk contributions keyed by asset."""

        def num(x: float) -> float | None:
            return None if x is None or not math.isfinite(x) else float(x)

        vol = self.volatility
        pct = {
            k: (num(v / vol) if vol and math.isfinite(vol) and vol > 0 else None)
            for k, v in self.risk_contributions.items()
        }
        out: dict[str, Any] = {
            "objective": self.objective,
            "status": self.status,
            "solver": self.solver,
            "message": self.message,
            "weights": {k: num(v) for k, v in self.weights.items()},
            "expected_return": num(self.expected_return),
            "net_return": num(self.net_return),
            "volatility": num(self.volatility),
            "sharpe": num(self.sharpe),
            "risk_free_rate": num(self.risk_free_rate),
            "risk_contributions": {k: num(v) for k, v in self.risk_contributions.items()},
            "risk_contribution_share": pct,
            "turnover": num(self.turnover),
            "transaction_cost": num(self.transaction_cost),
        }
        for key, value in self.extras.items():
            out[key] = _jsonable(value)
        return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, pd.Series):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, pd.DataFrame):
        return {str(k): _jsonable(value[k]) for k in value.columns}
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _make_result(
    w: np.ndarray | None,
    mu: np.ndarray | None,
    cov: np.ndarray,
    names: Sequence[str],
    r: _Resolved | None,
    *,
    objective: str,
    status: str,
    risk_free_rate: float,
    solver: str = _SOLVER,
    message: str = "",
    extras: dict[str, Any] | None = None,
) -> OptimizationResult:
    n = len(names)
    if w is None:
        nan = pd.Series(np.full(n, np.nan), index=list(names), dtype=float)
        return OptimizationResult(
            weights=nan,
            expected_return=float("nan"),
            volatility=float("nan"),
            sharpe=float("nan"),
            risk_contributions=nan.copy(),
            status=status,
            objective=objective,
            risk_free_rate=risk_free_rate,
            solver=solver,
            message=message,
            extras=extras or {},
        )
    vol = math.sqrt(max(float(w @ cov @ w), 0.0))
    exp_ret = float(mu @ w) if mu is not None else float("nan")
    w0 = r.w0 if r is not None else np.zeros(n)
    turnover = float(np.abs(w - w0).sum())
    tc = float(r.costs @ np.abs(w - w0)) if r is not None and r.costs is not None else 0.0
    sharpe = (exp_ret - tc - risk_free_rate) / vol if vol > 0 else float("nan")
    return OptimizationResult(
        weights=pd.Series(w, index=list(names), dtype=float),
        expected_return=exp_ret,
        volatility=vol,
        sharpe=sharpe,
        risk_contributions=pd.Series(risk_contributions(w, cov), index=list(names), dtype=float),
        status=status,
        objective=objective,
        risk_free_rate=risk_free_rate,
        turnover=turnover,
        transaction_cost=tc,
        solver=solver,
        message=message,
        extras=extras or {},
    )


# ------------------------------------------------------------------------------------------------------ solving


def _solve(problem: cp.Problem, solver: str) -> str:
    try:
        problem.solve(solver=solver)
    except cp.error.SolverError as exc:  # numerical breakdown: report it, never return garbage
        return f"solver_error: {exc}"
    return str(problem.status)


def _clean(w: np.ndarray, r: _Resolved) -> np.ndarray:
    """Clip solver noise (~1e-9) back inside the box so long-only weights are never slightly negative."""
    return np.clip(w, r.lb, r.ub)


def _failure(status: str, objective: str, hint: str) -> tuple[str, str]:
    """(our status, message) for a solve that produced no usable weights."""
    if status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
        kind = "infeasible"
    elif status in (cp.UNBOUNDED, cp.UNBOUNDED_INACCURATE):
        kind = "unbounded"
    else:
        kind = "solver_error"
    msg = f"constraints: {kind} for objective {objective}" + (f" ({hint})" if hint else "") + f" [solver: {status}]"
    return kind, msg


def _variance(w: cp.Variable | cp.Expression, cov: np.ndarray) -> Any:
    return cp.quad_form(w, cp.psd_wrap(cov))


def _solve_mean_variance(
    objective: str,
    mu: np.ndarray | None,
    cov: np.ndarray,
    r: _Resolved,
    *,
    risk_free_rate: float,
    target_return: float | None,
    target_risk: float | None,
    risk_aversion: float,
) -> tuple[np.ndarray | None, str, str]:
    """Solve one convex problem; returns (weights or None, cvxpy status, hint for an infeasible result)."""
    n = r.n
    w = cp.Variable(n)
    hint = ""
    if objective == "min_variance":
        # with costs: the utility with mu = 0, so risk_aversion sets the variance/cost trade-off
        obj = _variance(w, cov) if r.costs is None else 0.5 * risk_aversion * _variance(w, cov) + _cost_expr(w, r)
        prob = cp.Problem(cp.Minimize(obj), _feasibility_constraints(w, r))
    elif objective == "max_utility":
        assert mu is not None
        obj = mu @ w - _cost_expr(w, r) - 0.5 * risk_aversion * _variance(w, cov)
        prob = cp.Problem(cp.Maximize(obj), _feasibility_constraints(w, r))
    elif objective == "target_return":
        assert mu is not None and target_return is not None
        cons = [*_feasibility_constraints(w, r), mu @ w - _cost_expr(w, r) >= target_return]
        prob = cp.Problem(cp.Minimize(_variance(w, cov)), cons)
        hint = f"target_return {target_return:g} is not attainable"
    elif objective == "target_risk":
        assert mu is not None and target_risk is not None
        cons = [*_feasibility_constraints(w, r), _variance(w, cov) <= target_risk**2]
        prob = cp.Problem(cp.Maximize(mu @ w - _cost_expr(w, r)), cons)
        hint = f"target_risk {target_risk:g} is below the minimum attainable volatility"
    elif objective == "max_sharpe":
        assert mu is not None
        if r.budget is None or r.budget <= 0:
            raise ValueError("constraints.budget: max_sharpe needs a positive budget")
        kappa = cp.Variable(nonneg=True)
        excess = mu @ w - _cost_expr(w, r, kappa) - risk_free_rate * kappa
        cons = [*_feasibility_constraints(w, r, kappa), excess >= 1.0]
        prob = cp.Problem(cp.Minimize(_variance(w, cov)), cons)
        hint = "no feasible portfolio has expected return above the risk-free rate"
        status = _solve(prob, _SOLVER)
        if status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or kappa.value is None or kappa.value <= 1e-12:
            return None, status if status != cp.OPTIMAL else cp.INFEASIBLE, hint
        return np.asarray(w.value, dtype=float) / float(kappa.value), status, hint
    else:  # pragma: no cover - guarded by the caller
        raise ValueError(f"objective: unknown {objective!r}")
    status = _solve(prob, _SOLVER)
    if status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or w.value is None:
        return None, status, hint
    return np.asarray(w.value, dtype=float), status, hint


def _moments_from_data(
    data: Any, asset_names: Sequence[str] | None, periods_per_year: float, covariance: str, need_mu: bool
) -> tuple[np.ndarray | None, np.ndarray, list[str]]:
    if isinstance(data, tuple):
        if len(data) != 2:
            raise ValueError(f"data: a (mu, cov) pair, got a tuple of {len(data)}")
        mu_in, cov_in = data
        if asset_names is None and not isinstance(cov_in, pd.DataFrame) and isinstance(mu_in, pd.Series):
            asset_names = [str(a) for a in mu_in.index]  # an unlabelled cov takes mu's labels
        cov, names = validate_cov(cov_in, asset_names)
        mu = validate_mu(mu_in, names) if (mu_in is not None) else None
        if need_mu and mu is None:
            raise ValueError("mu: required for this objective")
        return mu, cov, names
    mu_s, cov_df = moments_from_returns(
        data,
        periods_per_year=periods_per_year,
        covariance=covariance,  # type: ignore[arg-type]
    )
    if asset_names is not None:
        if len(asset_names) != len(mu_s):
            raise ValueError(f"asset_names: {len(asset_names)} names for {len(mu_s)} return columns")
        mu_s.index = [str(a) for a in asset_names]
        cov_df.index = cov_df.columns = list(mu_s.index)
    cov, names = validate_cov(cov_df)
    return mu_s.to_numpy(dtype=float), cov, names


def optimize_portfolio(
    data: Any,
    objective: Objective = "min_variance",
    *,
    constraints: PortfolioConstraints | None = None,
    asset_names: Sequence[str] | None = None,
    risk_free_rate: float = 0.0,
    target_return: float | None = None,
    target_risk: float | None = None,
    risk_aversion: float = 1.0,
    periods_per_year: float = 252.0,
    covariance: Literal["sample", "ledoit_wolf"] = "sample",
    risk_budget: Any = None,
    hrp_linkage: str = "single",
    black_litterman: Any = None,
    raise_on_infeasible: bool = True,
) -> OptimizationResult:
    """One entry point for every allocation objective.

    data: a returns DataFrame (periods x assets; moments are annualised by `periods_per_year`) or a
        `(mu, cov)` pair (mu may be None for min_variance / risk_parity / hrp).
    objective: "min_variance", "max_sharpe", "target_return" (needs target_return), "target_risk" (needs
        target_risk, a volatility), "max_utility" (mu'w - costs - risk_aversion/2 w'cov w), "risk_parity"
        (risk budgeting, equal budgets unless `risk_budget`), "hrp" (hierarchical risk parity, `hrp_linkage`),
        "black_litterman" (posterior from `black_litterman`, a `BlackLittermanViews`, then max utility at its
        risk aversion under the constraints; with long_only=False and budget=None that is He-Litterman's
        unconstrained w*).
    raise_on_infeasible: raise `InfeasiblePortfolioError` (a ValueError naming the constraints) when no
        portfolio satisfies the constraints; with False, return NaN weights and status "infeasible" (or
        "unbounded"). A numerical solver failure raises RuntimeError("solver: ...") (status "solver_error").
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective: unknown {objective!r} (one of {', '.join(OBJECTIVES)})")
    constraints = constraints or PortfolioConstraints()
    if not math.isfinite(risk_free_rate):
        raise ValueError("risk_free_rate: must be finite")
    if not (risk_aversion > 0 and math.isfinite(risk_aversion)):
        raise ValueError("risk_aversion: must be a positive finite number")
    need_mu = objective in ("max_sharpe", "target_return", "target_risk", "max_utility")
    mu, cov, names = _moments_from_data(data, asset_names, periods_per_year, covariance, need_mu)

    if objective in ("risk_parity", "hrp"):
        return _risk_based(objective, mu, cov, names, constraints, risk_free_rate, risk_budget, hrp_linkage)

    extras: dict[str, Any] = {}
    if objective == "black_litterman":
        from tradesys.quant.portfolio.black_litterman import BlackLittermanViews, black_litterman_posterior

        if not isinstance(black_litterman, BlackLittermanViews):
            raise ValueError("black_litterman: a BlackLittermanViews is required for this objective")
        bl = black_litterman_posterior(cov, black_litterman, prior_returns=mu, asset_names=names)
        mu = bl.posterior_returns.to_numpy()
        cov = bl.posterior_cov.to_numpy()
        risk_aversion = bl.risk_aversion
        extras["black_litterman"] = bl.to_dict()
        inner = "max_utility"
    else:
        inner = objective

    if inner == "target_return" and (target_return is None or not math.isfinite(target_return)):
        raise ValueError("target_return: required (finite) for objective target_return")
    if inner == "target_risk" and (target_risk is None or not (target_risk > 0 and math.isfinite(target_risk))):
        raise ValueError("target_risk: required (a positive volatility) for objective target_risk")
    if constraints.budget is None and inner not in ("max_utility",):
        raise ValueError(f"constraints.budget: objective {objective} needs a budget (None only for max_utility)")

    try:
        r = _resolve(constraints, names)
    except InfeasiblePortfolioError as exc:
        if raise_on_infeasible:
            raise
        return _make_result(
            None,
            mu,
            cov,
            names,
            None,
            objective=objective,
            status="infeasible",
            risk_free_rate=risk_free_rate,
            message=str(exc),
            extras=extras,
        )
    w, status, hint = _solve_mean_variance(
        inner,
        mu,
        cov,
        r,
        risk_free_rate=risk_free_rate,
        target_return=target_return,
        target_risk=target_risk,
        risk_aversion=risk_aversion,
    )
    if w is None:
        kind, msg = _failure(status, objective, hint)
        if raise_on_infeasible:
            if kind == "solver_error":
                raise RuntimeError(f"solver: {msg}")
            raise InfeasiblePortfolioError(msg)
        return _make_result(
            None,
            mu,
            cov,
            names,
            r,
            objective=objective,
            status=kind,
            risk_free_rate=risk_free_rate,
            message=msg,
            extras=extras,
        )
    ours = "optimal" if status == cp.OPTIMAL else "optimal_inaccurate"
    return _make_result(
        _clean(w, r),
        mu,
        cov,
        names,
        r,
        objective=objective,
        status=ours,
        risk_free_rate=risk_free_rate,
        extras=extras,
    )


def _risk_based(
    objective: str,
    mu: np.ndarray | None,
    cov: np.ndarray,
    names: list[str],
    constraints: PortfolioConstraints,
    risk_free_rate: float,
    risk_budget: Any,
    hrp_linkage: str,
) -> OptimizationResult:
    from tradesys.quant.portfolio.risk_parity import hierarchical_risk_parity, risk_budgeting

    if not constraints.is_default() or not constraints.long_only:
        raise ValueError(
            f"constraints: {objective} supports only long-only weights scaled to a budget "
            "(no bounds, groups, turnover or costs)"
        )
    budget = 1.0 if constraints.budget is None else float(constraints.budget)
    if budget <= 0:
        raise ValueError(f"constraints.budget: {objective} needs a positive budget")
    if objective == "risk_parity":
        w = risk_budgeting(cov, risk_budget, asset_names=names).to_numpy() * budget
        status = "optimal"
        solver = _SOLVER
    else:
        w = hierarchical_risk_parity(cov, asset_names=names, linkage=hrp_linkage).to_numpy() * budget
        status = "closed_form"
        solver = "recursive_bisection"
    r = _resolve(constraints, names)
    return _make_result(
        w, mu, cov, names, r, objective=objective, status=status, risk_free_rate=risk_free_rate, solver=solver
    )


# ------------------------------------------------------------------------------------------- efficient frontier


def efficient_frontier(
    data: Any,
    *,
    n_points: int = 30,
    constraints: PortfolioConstraints | None = None,
    asset_names: Sequence[str] | None = None,
    risk_free_rate: float = 0.0,
    periods_per_year: float = 252.0,
    covariance: Literal["sample", "ledoit_wolf"] = "sample",
) -> pd.DataFrame:
    """The efficient frontier as a table: one row per portfolio, sorted by volatility.

    Rows are the minimum-variance portfolio (point "min_variance"; with transaction costs it is still the
    lowest-variance portfolio, its net return reduced by the cost of getting there), `n_points` - 1
    target-return portfolios evenly spaced in net return up to the maximum attainable (point "frontier", the
    last one "max_return"),
    and the max-Sharpe portfolio (point "max_sharpe", when some portfolio beats the risk-free rate).
    Columns: point, expected_return (gross), net_return, volatility, sharpe, then one weight column per asset.
    Target-return problems share one compiled cvxpy problem (the target is a Parameter).
    """
    if n_points < 2:
        raise ValueError("n_points: must be >= 2")
    constraints = constraints or PortfolioConstraints()
    if constraints.budget is None:
        raise ValueError("constraints.budget: the efficient frontier needs a budget")
    mu, cov, names = _moments_from_data(data, asset_names, periods_per_year, covariance, True)
    assert mu is not None
    r = _resolve(constraints, names)

    # the left end: minimum variance itself (costs only lower its net return; they are not traded off here)
    w_mv, status, _ = _solve_mean_variance(
        "min_variance",
        mu,
        cov,
        replace(r, costs=None),
        risk_free_rate=risk_free_rate,
        target_return=None,
        target_risk=None,
        risk_aversion=1.0,
    )
    if w_mv is None:
        raise InfeasiblePortfolioError(_failure(status, "min_variance", "")[1])
    w_mv = _clean(w_mv, r)
    minvar = _make_result(w_mv, mu, cov, names, r, objective="min_variance", status="optimal", risk_free_rate=0.0)
    # the top of the frontier: maximum net return under the constraints (an LP)
    w = cp.Variable(r.n)
    top = cp.Problem(cp.Maximize(mu @ w - _cost_expr(w, r)), _feasibility_constraints(w, r))
    status = _solve(top, _SOLVER)
    if status in (cp.UNBOUNDED, cp.UNBOUNDED_INACCURATE):
        raise ValueError("constraints: expected return is unbounded; add upper bounds or long_only")
    if status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
        raise InfeasiblePortfolioError(f"constraints: infeasible [solver: {status}]")
    r_min, r_max = minvar.net_return, float(top.value)

    target = cp.Parameter()
    wt = cp.Variable(r.n)
    prob = cp.Problem(
        cp.Minimize(_variance(wt, cov)), [*_feasibility_constraints(wt, r), mu @ wt - _cost_expr(wt, r) >= target]
    )
    rows: list[tuple[str, np.ndarray]] = [("min_variance", w_mv)]
    if r_max > r_min + 1e-12 * max(1.0, abs(r_max)):
        for i, t in enumerate(np.linspace(r_min, r_max, n_points)[1:]):
            target.value = float(t)
            st = _solve(prob, _SOLVER)
            if st in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) and wt.value is not None:
                label = "max_return" if i == n_points - 2 else "frontier"
                rows.append((label, _clean(np.asarray(wt.value, dtype=float), r)))
    ms = optimize_portfolio(
        (mu, pd.DataFrame(cov, index=names, columns=names)),
        "max_sharpe",
        constraints=constraints,
        risk_free_rate=risk_free_rate,
        raise_on_infeasible=False,
    )
    if ms.ok:
        rows.append(("max_sharpe", ms.weights.to_numpy()))

    records = []
    for label, wv in rows:
        res = _make_result(wv, mu, cov, names, r, objective="frontier", status="optimal", risk_free_rate=risk_free_rate)
        records.append(
            {
                "point": label,
                "expected_return": res.expected_return,
                "net_return": res.net_return,
                "volatility": res.volatility,
                "sharpe": res.sharpe,
                **dict(zip(names, wv.tolist(), strict=True)),
            }
        )
    table = pd.DataFrame.from_records(records)
    table = table.sort_values(["volatility", "net_return"], kind="stable").reset_index(drop=True)
    table.attrs["risk_free_rate"] = risk_free_rate
    table.attrs["asset_names"] = list(names)
    return table
