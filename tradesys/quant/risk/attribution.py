"""Performance attribution: factor (Fama-French) regression, Brinson sector attribution, timing versus selection.

Why: a P&L number alone does not say whether the manager was paid for carrying market, size and value exposure
(cheap to get from index products), for picking the right sectors, or for genuine selection skill. Each tool here
answers one of those questions on the same conventions.

Conventions (the whole module):

* Returns are simple (arithmetic) per-period returns in whatever unit the caller uses (decimals or percent) and
  at one frequency; every output is in the same unit and per period (no annualisation). ``arch.data.frenchdata``
  ships the Fama-French factors in PERCENT; divide by 100 before mixing them with decimal returns.
* Factor regressions are OLS (statsmodels) of portfolio EXCESS returns on the factors with a constant, standard
  errors Newey-West (HAC, Bartlett kernel) with the small-sample factor n / (n - k); the default lag length is the
  Newey-West rule floor(4 (n / 100)^(2/9)).
* Contributions: per period, ``alpha + sum_k beta_k f_k,t + residual_t`` equals the excess return exactly (the
  residual is defined as what the fitted part leaves), so the columns of ``contributions`` add up to it.
* Brinson: weights are beginning-of-period weights that sum to 1 in each period (tolerance ``weight_tol``);
  allocation, selection and interaction per sector add up to portfolio minus benchmark return exactly in each
  period. Brinson-Fachler allocation is (w_i - W_i)(b_i - B), Brinson-Hood-Beebower (w_i - W_i) b_i; selection
  W_i (r_i - b_i) and interaction (w_i - W_i)(r_i - b_i) in both. Sector totals are identical between the two
  (the difference sums to B * sum(w_i - W_i) = 0); only the split across sectors differs.
* Multi-period linking: Carino (1999) log-linking by default, Menchero (2000) optimised linking as the option.
  Both scale each period's effects so that the linked effects sum exactly to the compounded portfolio return minus
  the compounded benchmark return over the whole span (an arithmetic excess, as in Bacon 2008, ch. 8).
* Timing: Treynor-Mazuy r_p = a + b m + g m^2 + e and Henriksson-Merton r_p = a + b m + g max(0, -m) + e with m
  the market excess return; g > 0 is timing skill, a is selection net of timing. In the Henriksson-Merton form
  ``beta`` is the up-market beta and ``beta - gamma`` the down-market beta.
* Bad input raises ``ValueError("field: reason")``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import statsmodels.api as sm
from statsmodels.regression.rolling import RollingOLS

from tradesys.quant.validate import float_series

__all__ = [
    "BrinsonAttribution",
    "FactorAttribution",
    "TimingResult",
    "brinson_attribution",
    "carino_coefficients",
    "factor_attribution",
    "henriksson_merton",
    "menchero_coefficients",
    "newey_west_lags",
    "rolling_factor_betas",
    "treynor_mazuy",
]

BrinsonMethod = Literal["brinson_fachler", "bhb"]
LinkingMethod = Literal["carino", "menchero"]
BRINSON_METHODS: tuple[str, ...] = ("brinson_fachler", "bhb")
LINKING_METHODS: tuple[str, ...] = ("carino", "menchero")

ALPHA_COLUMN = "alpha"
RESIDUAL_COLUMN = "residual"


# ----------------------------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------------------------


def _series(x: Any, field: str) -> pd.Series:
    """A float Series from a Series, array-like or mapping; NaN/inf rejected with the field name."""
    s = float_series(x, field, allow_mapping=True)
    if len(s) == 0:
        raise ValueError(f"{field}: empty")
    if not np.isfinite(s.to_numpy()).all():
        bad = s.index[~np.isfinite(s.to_numpy())][:3].tolist()
        raise ValueError(f"{field}: NaN or infinite values (first at {bad})")
    return s


def _frame(x: Any, field: str) -> pd.DataFrame:
    if isinstance(x, pd.Series):
        x = x.to_frame()
    elif not isinstance(x, pd.DataFrame):
        arr = np.asarray(x, dtype=float)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise ValueError(f"{field}: expected a 2-D table, got shape {arr.shape}")
        x = pd.DataFrame(arr, columns=[f"f{i}" for i in range(arr.shape[1])])
    try:
        df = x.astype(float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{field}: values must be numeric ({exc})") from None
    if df.shape[0] == 0 or df.shape[1] == 0:
        raise ValueError(f"{field}: empty")
    vals = df.to_numpy()
    if not np.isfinite(vals).all():
        row = int(np.argwhere(~np.isfinite(vals))[0, 0])
        raise ValueError(f"{field}: NaN or infinite values (first at row {df.index[row]!r})")
    return df


def _align(y: pd.Series, x: pd.DataFrame, y_field: str, x_field: str) -> pd.Series:
    """y on x's index: identical indexes, or positional when y came without one (a RangeIndex) and lengths match."""
    if len(y) != len(x):
        raise ValueError(f"{y_field}: length {len(y)} does not match {x_field} length {len(x)}")
    if y.index.equals(x.index):
        return y
    if isinstance(y.index, pd.RangeIndex) or isinstance(x.index, pd.RangeIndex):
        return pd.Series(y.to_numpy(), index=x.index, name=y.name)
    raise ValueError(f"{y_field}: index does not match the index of {x_field}")


def newey_west_lags(n_obs: int) -> int:
    """Newey-West (1994) plug-in lag length floor(4 (n/100)^(2/9)), the statsmodels default too."""
    return math.floor(4.0 * (n_obs / 100.0) ** (2.0 / 9.0))


def _hac_fit(y: np.ndarray, x: np.ndarray, hac_lags: int) -> Any:
    return sm.OLS(y, x).fit(cov_type="HAC", cov_kwds={"maxlags": hac_lags, "use_correction": True})


def _excess(
    portfolio_returns: Any, factors: pd.DataFrame, rf: Any, field: str = "portfolio_returns"
) -> tuple[pd.Series, pd.DataFrame]:
    """Portfolio excess returns and the factor table with a risk-free column (if named by ``rf``) removed."""
    y = _align(_series(portfolio_returns, field), factors, field, "factor_returns")
    if rf is None:
        return y, factors
    if isinstance(rf, str):
        if rf not in factors.columns:
            raise ValueError(f"rf: column {rf!r} not in factor_returns (columns {list(factors.columns)})")
        return y - factors[rf], factors.drop(columns=[rf])
    if np.isscalar(rf):
        r = float(rf)  # type: ignore[arg-type]
        if not math.isfinite(r):
            raise ValueError("rf: must be finite")
        return y - r, factors
    rf_s = _align(_series(rf, "rf"), factors, "rf", "factor_returns")
    return y - rf_s, factors


# ----------------------------------------------------------------------------------------------------------------
# factor attribution
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FactorAttribution:
    """Result of :func:`factor_attribution`. Per-period values are in the unit of the inputs."""

    alpha: float
    alpha_se: float
    alpha_t: float
    alpha_pvalue: float
    betas: pd.Series
    beta_se: pd.Series
    beta_t: pd.Series
    beta_pvalues: pd.Series
    r_squared: float
    adj_r_squared: float
    residual_vol: float
    n_obs: int
    hac_lags: int
    excess_returns: pd.Series
    contributions: pd.DataFrame
    """Per period: ``alpha``, one column per factor (beta_k f_k,t), ``residual``; rows sum to ``excess_returns``."""

    @property
    def total_contributions(self) -> pd.Series:
        """Sum over the periods of each column of ``contributions`` (arithmetic, not compounded)."""
        return self.contributions.sum(axis=0)

    @property
    def mean_contributions(self) -> pd.Series:
        """Average per-period contribution of alpha, each factor and the residual (the residual averages 0)."""
        return self.contributions.mean(axis=0)

    def to_dict(self, include_series: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "alpha": self.alpha,
            "alpha_se": self.alpha_se,
            "alpha_t": self.alpha_t,
            "alpha_pvalue": self.alpha_pvalue,
            "betas": _fdict(self.betas),
            "beta_se": _fdict(self.beta_se),
            "beta_t": _fdict(self.beta_t),
            "beta_pvalues": _fdict(self.beta_pvalues),
            "r_squared": self.r_squared,
            "adj_r_squared": self.adj_r_squared,
            "residual_vol": self.residual_vol,
            "n_obs": self.n_obs,
            "hac_lags": self.hac_lags,
            "total_contributions": _fdict(self.total_contributions),
            "mean_contributions": _fdict(self.mean_contributions),
        }
        if include_series:
            out["index"] = [_label(i) for i in self.contributions.index]
            out["excess_returns"] = [float(v) for v in self.excess_returns.to_numpy()]
            out["contributions"] = {
                str(c): [float(v) for v in self.contributions[c].to_numpy()] for c in self.contributions.columns
            }
        return out


def _fdict(s: pd.Series) -> dict[str, float]:
    return {str(k): float(v) for k, v in s.items()}


def _label(i: Any) -> Any:
    if isinstance(i, pd.Timestamp):
        return i.isoformat()
    if isinstance(i, np.integer | np.floating):
        return i.item()
    return i if isinstance(i, int | float | str) else str(i)


def factor_attribution(
    portfolio_returns: Any,
    factor_returns: pd.DataFrame,
    rf: Any = None,
    hac_lags: int | None = None,
) -> FactorAttribution:
    """OLS of portfolio excess returns on factor returns with Newey-West errors, and the per-period P&L split.

    ``portfolio_returns``: Series on the same index as ``factor_returns`` (or an array of the same length).
    ``factor_returns``: one column per factor (already excess/long-short returns, e.g. Mkt-RF, SMB, HML).
    ``rf``: None when ``portfolio_returns`` are already excess returns; a number (constant per period), a Series on
    the same index, or the NAME of a column of ``factor_returns`` (e.g. "RF"), which is then subtracted and not
    used as a regressor. ``hac_lags``: Newey-West lags; None uses :func:`newey_west_lags`.
    """
    factors = _frame(factor_returns, "factor_returns")
    y, factors = _excess(portfolio_returns, factors, rf)
    if factors.shape[1] == 0:
        raise ValueError("factor_returns: no factor columns left after removing rf")
    n, k = factors.shape
    if n < k + 3:
        raise ValueError(f"portfolio_returns: {n} observations, need at least {k + 3} for {k} factors")
    lags = newey_west_lags(n) if hac_lags is None else int(hac_lags)
    if lags < 0 or lags >= n:
        raise ValueError(f"hac_lags: must be in [0, {n - 1}], got {hac_lags}")
    fx = factors.to_numpy()
    if np.linalg.matrix_rank(np.column_stack([np.ones(n), fx])) < k + 1:
        raise ValueError("factor_returns: factors are collinear (with each other or the constant)")
    res = _hac_fit(y.to_numpy(), sm.add_constant(fx, has_constant="add"), lags)
    params, bse, tv, pv = (np.asarray(a) for a in (res.params, res.bse, res.tvalues, res.pvalues))
    names = [str(c) for c in factors.columns]
    betas = pd.Series(params[1:], index=names, name="beta")
    contrib = pd.DataFrame(fx * params[1:], index=factors.index, columns=names)
    contrib.insert(0, ALPHA_COLUMN, params[0])
    contrib[RESIDUAL_COLUMN] = y.to_numpy() - contrib.sum(axis=1).to_numpy()
    return FactorAttribution(
        alpha=float(params[0]),
        alpha_se=float(bse[0]),
        alpha_t=float(tv[0]),
        alpha_pvalue=float(pv[0]),
        betas=betas,
        beta_se=pd.Series(bse[1:], index=names, name="beta_se"),
        beta_t=pd.Series(tv[1:], index=names, name="beta_t"),
        beta_pvalues=pd.Series(pv[1:], index=names, name="beta_pvalue"),
        r_squared=float(res.rsquared),
        adj_r_squared=float(res.rsquared_adj),
        residual_vol=float(np.sqrt(res.mse_resid)),
        n_obs=n,
        hac_lags=lags,
        excess_returns=pd.Series(y.to_numpy(), index=factors.index, name="excess_return"),
        contributions=contrib,
    )


def rolling_factor_betas(
    portfolio_returns: Any,
    factor_returns: pd.DataFrame,
    window: int,
    rf: Any = None,
    min_nobs: int | None = None,
) -> pd.DataFrame:
    """Rolling-window OLS (statsmodels RollingOLS) of excess returns on the factors: alpha and betas per date.

    The row at t uses the ``window`` observations ending at t (no look-ahead); rows before a full window are NaN
    (or from ``min_nobs`` observations on, when given, on an expanding window up to ``window``).
    """
    factors = _frame(factor_returns, "factor_returns")
    y, factors = _excess(portfolio_returns, factors, rf)
    k = factors.shape[1]
    if not isinstance(window, int | np.integer) or window < k + 2:
        raise ValueError(f"window: must be an integer >= {k + 2} for {k} factors, got {window}")
    if window > len(y):
        raise ValueError(f"window: {window} is longer than the {len(y)} observations")
    x = sm.add_constant(factors, has_constant="add")
    res = RollingOLS(y, x, window=int(window), min_nobs=min_nobs, expanding=min_nobs is not None).fit(params_only=True)
    out = res.params.copy()
    out.columns = [ALPHA_COLUMN, *[str(c) for c in factors.columns]]
    return out


# ----------------------------------------------------------------------------------------------------------------
# timing versus selection
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimingResult:
    """Treynor-Mazuy or Henriksson-Merton fit; ``gamma`` > 0 (significantly) is market-timing skill."""

    method: str
    alpha: float
    beta: float
    gamma: float
    alpha_se: float
    beta_se: float
    gamma_se: float
    alpha_t: float
    beta_t: float
    gamma_t: float
    alpha_pvalue: float
    beta_pvalue: float
    gamma_pvalue: float
    r_squared: float
    n_obs: int
    hac_lags: int

    def timing_significant(self, level: float = 0.05) -> bool:
        """One-sided test of gamma > 0 at ``level`` (the two-sided HAC p-value halved, with gamma's sign)."""
        return self.gamma > 0 and self.gamma_pvalue / 2.0 < level

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _timing(method: str, portfolio_returns: Any, market_returns: Any, rf: Any, hac_lags: int | None) -> TimingResult:
    m = _series(market_returns, "market_returns")
    frame = m.to_frame("market")
    y, _ = _excess(portfolio_returns, frame, None)
    if rf is not None:
        r = float(rf) if np.isscalar(rf) else _align(_series(rf, "rf"), frame, "rf", "market_returns").to_numpy()
        y = y - r
        m = m - r
    n = len(y)
    if n < 6:
        raise ValueError(f"portfolio_returns: {n} observations, need at least 6")
    mv = m.to_numpy()
    z = mv**2 if method == "treynor_mazuy" else np.maximum(0.0, -mv)
    x = np.column_stack([np.ones(n), mv, z])
    if np.linalg.matrix_rank(x) < 3:
        raise ValueError("market_returns: not enough variation to separate beta and timing")
    lags = newey_west_lags(n) if hac_lags is None else int(hac_lags)
    if lags < 0 or lags >= n:
        raise ValueError(f"hac_lags: must be in [0, {n - 1}], got {hac_lags}")
    res = _hac_fit(y.to_numpy(), x, lags)
    p, se, t, pv = (np.asarray(a, dtype=float) for a in (res.params, res.bse, res.tvalues, res.pvalues))
    return TimingResult(
        method=method,
        alpha=float(p[0]), beta=float(p[1]), gamma=float(p[2]),
        alpha_se=float(se[0]), beta_se=float(se[1]), gamma_se=float(se[2]),
        alpha_t=float(t[0]), beta_t=float(t[1]), gamma_t=float(t[2]),
        alpha_pvalue=float(pv[0]), beta_pvalue=float(pv[1]), gamma_pvalue=float(pv[2]),
        r_squared=float(res.rsquared), n_obs=n, hac_lags=lags,
    )  # fmt: skip


def treynor_mazuy(
    portfolio_returns: Any, market_returns: Any, rf: Any = None, hac_lags: int | None = None
) -> TimingResult:
    """Treynor-Mazuy (1966): r_p = a + b m + g m^2 + e on excess returns (subtract ``rf`` from both if given)."""
    return _timing("treynor_mazuy", portfolio_returns, market_returns, rf, hac_lags)


def henriksson_merton(
    portfolio_returns: Any, market_returns: Any, rf: Any = None, hac_lags: int | None = None
) -> TimingResult:
    """Henriksson-Merton (1981): r_p = a + b m + g max(0, -m) + e; up-market beta b, down-market beta b - g."""
    return _timing("henriksson_merton", portfolio_returns, market_returns, rf, hac_lags)


# ----------------------------------------------------------------------------------------------------------------
# Brinson sector attribution
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BrinsonAttribution:
    """Result of :func:`brinson_attribution`.

    ``allocation``/``selection``/``interaction`` are per sector over the whole span (linked when there are several
    periods); ``per_period_*`` hold the unlinked effects per period (rows) and sector (columns).
    ``allocation.sum() + selection.sum() + interaction.sum() == active_return`` (to rounding).
    """

    method: str
    linking: str | None
    sectors: list[str]
    portfolio_return: float
    benchmark_return: float
    active_return: float
    allocation: pd.Series
    selection: pd.Series
    interaction: pd.Series
    per_period_allocation: pd.DataFrame
    per_period_selection: pd.DataFrame
    per_period_interaction: pd.DataFrame
    per_period_portfolio_return: pd.Series
    per_period_benchmark_return: pd.Series
    link_coefficients: pd.Series

    @property
    def total_allocation(self) -> float:
        return float(self.allocation.sum())

    @property
    def total_selection(self) -> float:
        return float(self.selection.sum())

    @property
    def total_interaction(self) -> float:
        return float(self.interaction.sum())

    @property
    def n_periods(self) -> int:
        return len(self.per_period_portfolio_return)

    def to_dict(self, include_periods: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "method": self.method,
            "linking": self.linking,
            "sectors": list(self.sectors),
            "n_periods": self.n_periods,
            "portfolio_return": self.portfolio_return,
            "benchmark_return": self.benchmark_return,
            "active_return": self.active_return,
            "allocation": _fdict(self.allocation),
            "selection": _fdict(self.selection),
            "interaction": _fdict(self.interaction),
            "total_allocation": self.total_allocation,
            "total_selection": self.total_selection,
            "total_interaction": self.total_interaction,
        }
        if include_periods and self.n_periods > 1:
            idx = [_label(i) for i in self.per_period_portfolio_return.index]
            out["periods"] = {
                "index": idx,
                "portfolio_return": [float(v) for v in self.per_period_portfolio_return],
                "benchmark_return": [float(v) for v in self.per_period_benchmark_return],
                "link_coefficients": [float(v) for v in self.link_coefficients],
                "allocation": _frame_dict(self.per_period_allocation),
                "selection": _frame_dict(self.per_period_selection),
                "interaction": _frame_dict(self.per_period_interaction),
            }
        return out


def _frame_dict(df: pd.DataFrame) -> dict[str, list[float]]:
    return {str(c): [float(v) for v in df[c].to_numpy()] for c in df.columns}


def _brinson_table(x: Any, field: str) -> pd.DataFrame:
    """A periods x sectors table: a Series/mapping (one period, indexed by sector) or a DataFrame (dates x sectors)."""
    if isinstance(x, pd.DataFrame):
        df = x
    elif isinstance(x, pd.Series | Mapping):
        s = pd.Series(dict(x)) if isinstance(x, Mapping) else x
        df = s.to_frame().T.reset_index(drop=True)
    else:
        raise ValueError(f"{field}: expected a Series/mapping by sector or a DataFrame of dates x sectors")
    df = _frame(df, field)
    if df.columns.has_duplicates:
        raise ValueError(f"{field}: duplicate sector names")
    if df.index.has_duplicates:
        raise ValueError(f"{field}: duplicate period labels")
    df.columns = [str(c) for c in df.columns]
    return df


def carino_coefficients(portfolio_returns: Any, benchmark_returns: Any) -> np.ndarray:
    """Carino (1999) linking weights k_t / k: sum_t (k_t/k)(R_t - B_t) = R - B for the compounded R, B.

    k_t = (ln(1+R_t) - ln(1+B_t)) / (R_t - B_t) (1/(1+R_t) where R_t = B_t), k likewise on the compounded returns.
    """
    r = np.asarray(portfolio_returns, dtype=float)
    b = np.asarray(benchmark_returns, dtype=float)
    if np.any(r <= -1.0) or np.any(b <= -1.0):
        raise ValueError("returns: a period return of -100% or worse cannot be log-linked")

    def k(rr: np.ndarray | float, bb: np.ndarray | float) -> np.ndarray:
        rr, bb = np.asarray(rr, dtype=float), np.asarray(bb, dtype=float)
        d = rr - bb
        same = np.isclose(d, 0.0, rtol=0.0, atol=1e-15)
        safe = np.where(same, 1.0, d)
        return np.where(same, 1.0 / (1.0 + rr), (np.log1p(rr) - np.log1p(bb)) / safe)

    big_r = float(np.prod(1.0 + r) - 1.0)
    big_b = float(np.prod(1.0 + b) - 1.0)
    return k(r, b) / float(k(big_r, big_b))


def menchero_coefficients(portfolio_returns: Any, benchmark_returns: Any) -> np.ndarray:
    """Menchero (2000) optimised linking weights M + a_t with sum_t (M + a_t)(R_t - B_t) = R - B.

    M = ((R - B)/T) / ((1+R)^(1/T) - (1+B)^(1/T)) (the limit (1+R)^((T-1)/T) where R = B), and the corrections
    a_t = ((R - B) - M sum(R_t - B_t)) (R_t - B_t) / sum((R_t - B_t)^2) are the smallest that close the gap.
    """
    r = np.asarray(portfolio_returns, dtype=float)
    b = np.asarray(benchmark_returns, dtype=float)
    if np.any(r <= -1.0) or np.any(b <= -1.0):
        raise ValueError("returns: a period return of -100% or worse cannot be linked")
    t = len(r)
    big_r = float(np.prod(1.0 + r) - 1.0)
    big_b = float(np.prod(1.0 + b) - 1.0)
    denom = (1.0 + big_r) ** (1.0 / t) - (1.0 + big_b) ** (1.0 / t)
    m = (1.0 + big_r) ** ((t - 1.0) / t) if abs(denom) < 1e-15 else ((big_r - big_b) / t) / denom
    d = r - b
    ss = float(np.sum(d * d))
    alpha = np.zeros(t) if ss == 0.0 else ((big_r - big_b) - m * float(np.sum(d))) * d / ss
    return m + alpha


def brinson_attribution(
    portfolio_weights: Any,
    benchmark_weights: Any,
    portfolio_returns: Any,
    benchmark_returns: Any,
    method: str = "brinson_fachler",
    linking: str = "carino",
    weight_tol: float = 1e-6,
) -> BrinsonAttribution:
    """Brinson sector attribution: allocation, selection and interaction per sector and in total.

    Inputs by sector: each a Series (or mapping) indexed by sector for one period, or a DataFrame with one row
    per period (dates) and one column per sector, all four with the same sectors and the same dates.
    Weights are beginning-of-period weights summing to 1 per period; ``portfolio_returns`` are the portfolio's
    return within each sector, ``benchmark_returns`` the benchmark's. A sector the portfolio does not hold
    (weight 0) still needs a finite return: pass the benchmark's sector return (its selection effect is then 0).
    ``method``: "brinson_fachler" (default) or "bhb". ``linking`` (several periods only): "carino" or "menchero".
    """
    if method not in BRINSON_METHODS:
        raise ValueError(f"method: must be one of {BRINSON_METHODS}, got {method!r}")
    if linking not in LINKING_METHODS:
        raise ValueError(f"linking: must be one of {LINKING_METHODS}, got {linking!r}")
    if not (weight_tol >= 0.0):
        raise ValueError("weight_tol: must be >= 0")
    names = ("portfolio_weights", "benchmark_weights", "portfolio_returns", "benchmark_returns")
    inputs = (portfolio_weights, benchmark_weights, portfolio_returns, benchmark_returns)
    tables = [_brinson_table(v, f) for f, v in zip(names, inputs, strict=True)]
    ref = tables[0]
    for f, tab in zip(names[1:], tables[1:], strict=True):
        if tab.shape[0] != ref.shape[0]:
            raise ValueError(f"{f}: {tab.shape[0]} periods, portfolio_weights has {ref.shape[0]}")
        if set(tab.columns) != set(ref.columns):
            missing = sorted(set(ref.columns) ^ set(tab.columns))
            raise ValueError(f"{f}: sectors differ from portfolio_weights ({missing})")
        if not tab.index.equals(ref.index):
            raise ValueError(f"{f}: period index does not match portfolio_weights")
    sectors = list(ref.columns)
    wp, wb, rp, rb = (t[sectors].to_numpy() for t in tables)
    for f, w in (("portfolio_weights", wp), ("benchmark_weights", wb)):
        sums = w.sum(axis=1)
        bad = np.abs(sums - 1.0) > weight_tol
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"{f}: weights sum to {sums[i]:.10g} in period {ref.index[i]!r}, must sum to 1")

    big_rp = (wp * rp).sum(axis=1)  # per-period portfolio return
    big_rb = (wb * rb).sum(axis=1)  # per-period benchmark return
    dw = wp - wb
    alloc = dw * (rb - big_rb[:, None]) if method == "brinson_fachler" else dw * rb
    sel = wb * (rp - rb)
    inter = dw * (rp - rb)

    idx = ref.index
    per = [pd.DataFrame(a, index=idx, columns=sectors) for a in (alloc, sel, inter)]
    n_periods = len(idx)
    port_total = float(np.prod(1.0 + big_rp) - 1.0)
    bench_total = float(np.prod(1.0 + big_rb) - 1.0)
    if n_periods == 1:
        coef = np.ones(1)
        link_name: str | None = None
    else:
        for f, tot in (("portfolio_returns", big_rp), ("benchmark_returns", big_rb)):
            if np.any(tot <= -1.0):
                i = int(np.argmax(tot <= -1.0))
                raise ValueError(f"{f}: total return {tot[i]:.6g} in period {idx[i]!r} is -100% or worse; cannot link")
        coef = (carino_coefficients if linking == "carino" else menchero_coefficients)(big_rp, big_rb)
        link_name = linking
    linked = [pd.Series(coef @ a, index=sectors) for a in (alloc, sel, inter)]
    return BrinsonAttribution(
        method=method,
        linking=link_name,
        sectors=sectors,
        portfolio_return=port_total,
        benchmark_return=bench_total,
        active_return=port_total - bench_total,
        allocation=linked[0].rename("allocation"),
        selection=linked[1].rename("selection"),
        interaction=linked[2].rename("interaction"),
        per_period_allocation=per[0],
        per_period_selection=per[1],
        per_period_interaction=per[2],
        per_period_portfolio_return=pd.Series(big_rp, index=idx, name="portfolio_return"),
        per_period_benchmark_return=pd.Series(big_rb, index=idx, name="benchmark_return"),
        link_coefficients=pd.Series(coef, index=idx, name="link_coefficient"),
    )
