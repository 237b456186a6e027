"""Value-at-Risk and expected shortfall (CVaR) of a linear portfolio: historical, age-weighted, EVT, FHS, parametric.

Conventions (the whole risk package):

* VaR and ES are POSITIVE loss amounts, in the units of the P&L: currency when the exposures are currency
  amounts, return units when they are fractions and ``value == 1``.
* ``alpha`` is the confidence level: 0.99 means the 1% tail of the loss distribution.
* ``returns`` are SIMPLE returns per trading day (T x N). The portfolio holds exposures ``e = value * weights``
  (currency per asset); its one-day P&L is ``r_t . e``.
* Horizon ``h`` (trading days). Sample-based methods (historical, age-weighted, EVT) use overlapping h-day
  buy-and-hold returns ``prod(1 + r) - 1`` per asset; FHS simulates h-day paths through the GARCH filter;
  parametric methods scale the mean by ``h`` and the covariance by ``h`` (i.i.d. days: square-root-of-time for the
  volatility); Cornish-Fisher also scales skewness by ``1/sqrt(h)`` and excess kurtosis by ``1/h`` (the cumulants
  of an i.i.d. sum).
* Empirical quantile convention: VaR is the generalised inverse of the loss distribution,
  ``VaR = inf{l : P(L <= l) >= alpha}``; with equal weights this is ``np.quantile(losses, alpha,
  method="inverted_cdf")`` (no interpolation). ES is the Acerbi-Tasche tail mean of the same distribution,
  ``ES = VaR + E[(L - VaR)^+] / (1 - alpha)``, which counts a fractional share of the atom at VaR, is coherent
  and is always >= VaR.

Bad input raises ``ValueError("field: reason")``.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import special, stats

__all__ = [
    "METHODS",
    "PNL_METHODS",
    "GPDTail",
    "RiskEstimate",
    "age_weights",
    "check_covariance",
    "cornish_fisher_var_es",
    "empirical_var_es",
    "estimate_var",
    "ewma_covariance",
    "ewma_min_obs",
    "fhs_var_es",
    "garch_filter",
    "gpd_tail_fit",
    "normal_var_es",
    "sample_covariance",
    "student_t_var_es",
    "var_from_pnl",
]

METHODS: tuple[str, ...] = (
    "historical",
    "age_weighted",
    "evt",
    "fhs",
    "normal",
    "student_t",
    "cornish_fisher",
    "ewma",
    "mc_normal",
    "mc_t",
)
PNL_METHODS: tuple[str, ...] = ("historical", "age_weighted", "evt", "fhs", "normal", "student_t", "cornish_fisher")

_CF_Z_FAR = -6.0  # Phi(-6) ~ 1e-9: the Cornish-Fisher monotonicity check stops there
_PROB_TOL = 1e-9  # relative slack on cumulative probabilities (float sums of 1/n)


# --------------------------------------------------------------------------------------------------- result


def _plain(x: Any) -> Any:
    """JSON-friendly copy: numpy scalars/arrays to Python floats/lists, NaN/inf to None, recursively."""
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return _plain(x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, pd.Series):
        return {str(k): _plain(v) for k, v in x.items()}
    return x


@dataclass(frozen=True)
class RiskEstimate:
    """One VaR/ES estimate. ``var`` and ``es`` are positive losses; ``details`` holds method diagnostics."""

    var: float
    es: float
    alpha: float
    horizon_days: int
    method: str
    n_obs: int
    details: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "var": float(self.var),
            "es": float(self.es),
            "alpha": float(self.alpha),
            "horizon_days": int(self.horizon_days),
            "method": self.method,
            "n_obs": int(self.n_obs),
            "details": _plain(self.details),
        }


# ----------------------------------------------------------------------------------------------- validation


def _check_alpha(alpha: float, name: str = "alpha") -> float:
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: must be a number in (0, 1), got {alpha!r}") from None
    if not (0.0 < a < 1.0):
        raise ValueError(f"{name}: must be in (0, 1) (confidence level, 0.99 = 1% tail), got {alpha!r}")
    return a


def _check_horizon(horizon_days: int) -> int:
    if isinstance(horizon_days, bool) or not isinstance(horizon_days, int | np.integer) or horizon_days < 1:
        raise ValueError(f"horizon_days: must be an integer >= 1, got {horizon_days!r}")
    return int(horizon_days)


def _as_matrix(returns: Any, name: str = "returns") -> tuple[np.ndarray, pd.Index | None, list[str] | None]:
    """T x N float64 array (a 1-D input is one asset), its row index and column names when it was pandas."""
    index = None
    columns = None
    try:
        if isinstance(returns, pd.DataFrame):
            index, columns = returns.index, [str(c) for c in returns.columns]
            values = returns.to_numpy(dtype=np.float64, na_value=np.nan)
        elif isinstance(returns, pd.Series):
            index, columns = returns.index, [str(returns.name) if returns.name is not None else "0"]
            values = returns.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            values = np.asarray(returns, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: must be a numeric T x N array") from None
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2:
        raise ValueError(f"{name}: must be 1-D or 2-D (T x N), got {values.ndim} dimensions")
    if values.shape[0] == 0 or values.shape[1] == 0:
        raise ValueError(f"{name}: is empty (shape {values.shape})")
    bad = ~np.isfinite(values)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(f"{name}: contains NaN or infinite values (first at row {i}, column {j})")
    return values, index, columns


def _as_vector(x: Any, name: str) -> np.ndarray:
    if isinstance(x, pd.Series | pd.DataFrame):
        x = x.to_numpy(dtype=np.float64, na_value=np.nan)
    try:
        v = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: must be a numeric vector") from None
    if v.ndim == 0:
        v = v[None]
    if v.ndim != 1:
        raise ValueError(f"{name}: must be 1-D, got shape {v.shape}")
    if v.size == 0:
        raise ValueError(f"{name}: is empty")
    if not np.all(np.isfinite(v)):
        first = int(np.argmin(np.isfinite(v)))
        raise ValueError(f"{name}: contains NaN or infinite values (first at position {first})")
    return v


def _exposures(weights: Any, n_assets: int, value: float, columns: list[str] | None = None) -> np.ndarray:
    """value * weights; a pandas Series of weights is aligned to the returns' column names when those are known."""
    if isinstance(weights, pd.Series) and columns is not None:
        names = [str(k) for k in weights.index]
        if sorted(names) != sorted(columns):
            raise ValueError(f"weights: names {names} do not match the returns columns {columns}")
        weights = pd.Series(weights.to_numpy(), index=names).reindex(columns)
    w = _as_vector(weights, "weights")
    if w.size != n_assets:
        raise ValueError(f"weights: length {w.size} does not match the {n_assets} columns of returns")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"value: must be finite, got {value!r}")
    return v * w


def check_covariance(cov: Any, n_assets: int | None = None, name: str = "cov", tol: float = 1e-10) -> np.ndarray:
    """Validate a covariance matrix: square, finite, symmetric and positive semi-definite (relative tolerance)."""
    try:
        c = np.asarray(cov.to_numpy() if isinstance(cov, pd.DataFrame) else cov, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: must be a numeric square matrix") from None
    if c.ndim == 0 and n_assets in (None, 1):
        c = c.reshape(1, 1)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"{name}: must be a square matrix, got shape {c.shape}")
    if n_assets is not None and c.shape[0] != n_assets:
        raise ValueError(f"{name}: shape {c.shape} does not match the {n_assets} assets of weights")
    if not np.all(np.isfinite(c)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    scale = max(float(np.max(np.abs(c))), np.finfo(float).tiny)
    if np.max(np.abs(c - c.T)) > tol * scale:
        raise ValueError(f"{name}: is not symmetric")
    c = 0.5 * (c + c.T)
    min_eig = float(np.linalg.eigvalsh(c)[0])
    if min_eig < -tol * scale:
        raise ValueError(f"{name}: is not positive semi-definite (smallest eigenvalue {min_eig:.3g})")
    return c


def _need_tail_obs(n: int, alpha: float, what: str = "returns") -> None:
    if n * (1.0 - alpha) < 1.0 - 1e-9:
        need = math.ceil(1.0 / (1.0 - alpha) - 1e-9)
        raise ValueError(
            f"{what}: too few observations for the tail: {n} observations leave none beyond the {alpha} quantile"
            f" (need at least {need})"
        )


# -------------------------------------------------------------------------------------- one-dimensional cores


def empirical_var_es(losses: Any, alpha: float, probabilities: Any = None) -> tuple[float, float]:
    """VaR and ES of a discrete loss distribution (equal weights unless ``probabilities`` are given).

    VaR = inf{l : P(L <= l) >= alpha} (``np.quantile(..., method="inverted_cdf")`` for equal weights); ES is the
    Acerbi-Tasche tail mean VaR + sum p_i (L_i - VaR)^+ / (1 - alpha). ``probabilities`` need not sum to one
    (e.g. importance-sampling likelihood ratios / n): only their tail sums are used.
    """
    a = _check_alpha(alpha)
    loss = np.asarray(losses, dtype=np.float64).ravel()
    if loss.size == 0:
        raise ValueError("losses: is empty")
    if probabilities is None:
        p = np.full(loss.size, 1.0 / loss.size)
    else:
        p = np.asarray(probabilities, dtype=np.float64).ravel()
        if p.shape != loss.shape:
            raise ValueError(f"probabilities: length {p.size} does not match losses ({loss.size})")
        if np.any(p < 0) or not np.all(np.isfinite(p)):
            raise ValueError("probabilities: must be finite and >= 0")
    order = np.argsort(-loss, kind="stable")
    s, ps = loss[order], p[order]
    tail = 1.0 - a
    above = np.concatenate(([0.0], np.cumsum(ps)[:-1]))  # P(L > s_k) when there are no ties
    k = int(np.nonzero(above <= tail * (1.0 + _PROB_TOL))[0].max())
    var = float(s[k])
    es = var + float(np.sum(ps * np.maximum(s - var, 0.0))) / tail
    return var, es


def age_weights(n: int, lam: float = 0.98) -> np.ndarray:
    """Boudoukh-Richardson-Whitelaw (1998) probabilities, oldest first: p_i ∝ lam^(n - i), summing to one."""
    if not (0.0 < lam <= 1.0):
        raise ValueError(f"lam: must be in (0, 1], got {lam!r}")
    if lam == 1.0:
        return np.full(n, 1.0 / n)
    ages = np.arange(n - 1, -1, -1, dtype=np.float64)
    w = (1.0 - lam) * lam**ages / (1.0 - lam**n)
    return w / w.sum()


def normal_var_es(mu: float, sigma: float, alpha: float) -> tuple[float, float]:
    """VaR/ES of a P&L ~ N(mu, sigma^2): VaR = -mu + z_a sigma, ES = -mu + sigma phi(z_a) / (1 - alpha)."""
    a = _check_alpha(alpha)
    z = special.ndtri(a)
    return float(-mu + sigma * z), float(-mu + sigma * stats.norm.pdf(z) / (1.0 - a))


def student_t_var_es(mu: float, sigma: float, nu: float, alpha: float) -> tuple[float, float]:
    """VaR/ES of a P&L = mu + s T_nu with standard deviation sigma (s = sigma sqrt((nu - 2) / nu), nu > 2).

    ES closed form: ES = -mu + s f_nu(t_a) (nu + t_a^2) / ((nu - 1)(1 - alpha)), t_a the alpha quantile of T_nu.
    """
    a = _check_alpha(alpha)
    if not (nu > 2.0):
        raise ValueError(f"nu: degrees of freedom must be > 2 for a finite variance, got {nu!r}")
    s = sigma * math.sqrt((nu - 2.0) / nu)
    t_a = stats.t.ppf(a, nu)
    var = -mu + s * t_a
    es = -mu + s * stats.t.pdf(t_a, nu) * (nu + t_a**2) / ((nu - 1.0) * (1.0 - a))
    return float(var), float(es)


def cornish_fisher_var_es(mu: float, sigma: float, skew: float, exkurt: float, alpha: float) -> tuple[float, float]:
    """Cornish-Fisher VaR and the exact tail mean of the same quantile function (closed form).

    The return quantile is mu + sigma q(z), q(z) = z + (z^2 - 1) S/6 + (z^3 - 3z) K/24 - (2z^3 - 5z) S^2/36 at
    z = Phi^-1(1 - alpha). ES integrates that quantile function over the tail: (1/p) int_{-inf}^{z_p} q(z) phi(z) dz
    with the Gaussian moments int z^k phi (k = 0..3). Raises when q is not increasing over the tail down to
    z = -6 (the expansion is then not a distribution there, Maillard 2012), so ES >= VaR for what it returns.
    """
    a = _check_alpha(alpha)
    p = 1.0 - a
    S, K = float(skew), float(exkurt)
    c0 = -S / 6.0
    c1 = 1.0 - K / 8.0 + 5.0 * S * S / 36.0
    c2 = S / 6.0
    c3 = K / 24.0 - S * S / 18.0
    z = special.ndtri(p)
    # dq/dz = 3 c3 z^2 + 2 c2 z + c1 must be > 0 over the tail z in [-6, z_p]; below -6 (probability ~1e-9) a
    # negative c3 (platykurtic data) may turn q back up, which moves ES by ~1e-8 sigma / (1 - alpha).
    qa, qb, qc = 3.0 * c3, 2.0 * c2, c1
    lo, hi = min(_CF_Z_FAR, z), z
    points = [lo, hi]
    if qa != 0.0 and lo <= -qb / (2.0 * qa) <= hi:
        points.append(-qb / (2.0 * qa))
    ok = all(qa * t * t + qb * t + qc > 0 for t in points)
    if not ok:
        raise ValueError(
            f"returns: skewness {S:.3g} / excess kurtosis {K:.3g} put the Cornish-Fisher quantile outside its"
            f" validity domain at alpha={a} (not increasing in the tail)"
        )
    q = c0 + z * (c1 + z * (c2 + z * c3))
    phi = stats.norm.pdf(z)
    i0, i1, i2, i3 = p, -phi, p - z * phi, -(z * z + 2.0) * phi
    tail_mean = (c0 * i0 + c1 * i1 + c2 * i2 + c3 * i3) / p
    return float(-(mu + sigma * q)), float(-(mu + sigma * tail_mean))


@dataclass(frozen=True)
class GPDTail:
    """Peaks-over-threshold fit of the loss tail: excesses over ``threshold`` ~ GPD(xi, beta) (McNeil-Frey 2000).

    ``xi`` is the tail index (1/nu for a Student-t, 1/a for a Pareto(a) tail); ``n_exceed`` of ``n`` losses
    exceed the threshold. VaR/ES at alpha > 1 - n_exceed/n come from the fitted tail, beyond the data.
    """

    xi: float
    beta: float
    threshold: float
    n_exceed: int
    n: int

    def _check(self, alpha: float) -> tuple[float, float]:
        a = _check_alpha(alpha)
        frac = self.n_exceed / self.n
        if 1.0 - a >= frac:
            raise ValueError(
                f"alpha: {a} is not beyond the POT threshold (the top {frac:.3g} of losses); raise alpha or the"
                " threshold_quantile"
            )
        return a, (1.0 - a) / frac

    def var(self, alpha: float) -> float:
        _, ratio = self._check(alpha)
        if abs(self.xi) < 1e-9:
            return float(self.threshold - self.beta * math.log(ratio))
        return float(self.threshold + self.beta / self.xi * (ratio ** (-self.xi) - 1.0))

    def es(self, alpha: float) -> float:
        if self.xi >= 1.0:
            raise ValueError(f"returns: fitted tail index xi={self.xi:.3g} >= 1 means an infinite expected shortfall")
        v = self.var(alpha)
        return float((v + self.beta - self.xi * self.threshold) / (1.0 - self.xi))


def gpd_tail_fit(losses: Any, threshold_quantile: float = 0.9, min_exceedances: int = 20) -> GPDTail:
    """Fit a generalised Pareto distribution (scipy.stats.genpareto, MLE with location 0) to loss excesses.

    The threshold is the empirical ``threshold_quantile`` of the losses (inverted-CDF convention); the fit uses
    the strict exceedances.
    """
    q = _check_alpha(threshold_quantile, "threshold_quantile")
    loss = np.asarray(losses, dtype=np.float64).ravel()
    u = float(np.quantile(loss, q, method="inverted_cdf"))
    excess = loss[loss > u] - u
    if excess.size < min_exceedances:
        raise ValueError(
            f"returns: too few observations for the tail: {excess.size} losses exceed the {q} quantile,"
            f" need >= {min_exceedances} for the GPD fit"
        )
    # MLE on excesses divided by their mean (the optimiser's tolerances are then scale-free), started from the
    # method-of-moments estimate (valid for xi < 1/2)
    m = float(excess.mean())
    y = excess / m
    v = float(y.var())
    xi0 = float(np.clip(0.5 * (1.0 - 1.0 / v), -0.4, 0.45)) if v > 0 else 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        xi, _, beta = stats.genpareto.fit(y, xi0, floc=0.0, scale=max(1.0 - xi0, 1e-6))
    beta *= m
    return GPDTail(xi=float(xi), beta=float(beta), threshold=u, n_exceed=int(excess.size), n=int(loss.size))


def sample_covariance(returns: Any, ddof: int = 1) -> np.ndarray:
    """Sample covariance of T x N returns (rows are days), ``ddof=1`` (unbiased)."""
    r, _, _ = _as_matrix(returns)
    if r.shape[0] <= ddof:
        raise ValueError(f"returns: need more than {ddof} observations for a sample covariance")
    return np.atleast_2d(np.cov(r, rowvar=False, ddof=ddof))


def ewma_min_obs(lam: float) -> int:
    """Rows `estimate_var` needs for an EWMA covariance: one EWMA window, ceil(1 / (1 - lam)) (the mean age of the
    weights; 17 at RiskMetrics' lam = 0.94). With fewer rows the estimate is a handful of squared returns (from
    one row: that row's square), not a volatility."""
    if not (0.0 < lam < 1.0):
        raise ValueError(f"lam: must be in (0, 1), got {lam!r}")
    return max(2, math.ceil(1.0 / (1.0 - lam) - 1e-9))


def ewma_covariance(returns: Any, lam: float = 0.94) -> np.ndarray:
    """RiskMetrics EWMA covariance (zero mean) forecast for the day after the last row.

    Sigma = sum_k lam^k r_{T-k} r_{T-k}' / sum_k lam^k over the T rows (newest weight largest): the recursion
    Sigma_t = lam Sigma_{t-1} + (1 - lam) r_t r_t' with the start-up weights renormalised, as
    ``pandas.ewm(alpha=1 - lam, adjust=True)`` does. RiskMetrics (1996): lam = 0.94 for daily data.
    """
    r, _, _ = _as_matrix(returns)
    if not (0.0 < lam < 1.0):
        raise ValueError(f"lam: must be in (0, 1), got {lam!r}")
    ages = np.arange(r.shape[0] - 1, -1, -1, dtype=np.float64)
    w = lam**ages
    w /= w.sum()
    return (r * w[:, None]).T @ r


# ------------------------------------------------------------------------------------------------------- FHS


def _garch_model(x: np.ndarray, dist: str, o: int) -> Any:
    from arch import arch_model

    if dist not in ("normal", "t", "skewt", "ged"):
        raise ValueError(f"dist: must be 'normal', 't', 'skewt' or 'ged', got {dist!r}")
    if o not in (0, 1):
        raise ValueError(f"o: must be 0 (GARCH) or 1 (GJR-GARCH), got {o!r}")
    return arch_model(x, mean="Constant", vol="GARCH", p=1, o=o, q=1, dist=dist, rescale=False)


def garch_filter(pnl: Any, params: Any = None, *, dist: str = "normal", o: int = 0) -> tuple[Any, np.ndarray, float]:
    """Fit (or, given ``params``, only run) the FHS GARCH filter: (arch result, params in P&L units, scale).

    ``arch`` works on the series divided by ``scale`` (its sample standard deviation) for a well-conditioned
    optimisation; parameters are reported in the units of the P&L itself (mu and omega rescaled by scale and
    scale^2; the other parameters are scale-free), so they can be reused on another window.
    """
    y = _as_vector(pnl, "pnl")
    if y.size < 100:
        raise ValueError(f"returns: too few observations for a GARCH filter: {y.size} (need >= 100)")
    scale = float(y.std(ddof=1))
    if not scale > 0:
        raise ValueError("pnl: has zero variance; FHS needs a varying series")
    model = _garch_model(y / scale, dist, o)
    if params is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = model.fit(disp="off", show_warning=False)
        native = np.asarray(res.params, dtype=np.float64).copy()
        native[0] *= scale
        native[1] *= scale * scale
    else:
        native = _as_vector(params, "params")
        need = model.num_params + model.volatility.num_params + model.distribution.num_params
        if native.size != need:
            raise ValueError(f"params: need {need} GARCH parameters, got {native.size}")
        scaled = native.copy()
        scaled[0] /= scale
        scaled[1] /= scale * scale
        res = model.fix(scaled)
    return res, native, scale


def fhs_var_es(
    pnl: Any,
    alpha: float,
    horizon_days: int = 1,
    *,
    params: Any = None,
    dist: str = "normal",
    o: int = 0,
    n_sims: int = 20_000,
    seed: int = 0,
) -> tuple[float, float, dict[str, Any]]:
    """Filtered historical simulation (Barone-Adesi et al. 1999; Hull-White 1998) on a daily P&L series.

    A GARCH(1,1) (GJR when ``o=1``) with constant mean is fitted by ``arch`` (QMLE, normal errors by default);
    the standardised residuals z_t are the empirical innovations. One day: P&L_{T+1} = mu + sigma_{T+1} z_t for
    every z_t (equal weights). ``h`` days: ``arch``'s bootstrap forecast draws z_t with replacement through the
    GARCH recursion, ``n_sims`` paths, h-day P&L = sum of the daily P&L. ``params`` (a previous fit's
    ``details["params"]``, in P&L units) skips the fit and only filters.
    """
    a = _check_alpha(alpha)
    h = _check_horizon(horizon_days)
    res, native, scale = garch_filter(pnl, params, dist=dist, o=o)
    z = np.asarray(res.std_resid, dtype=np.float64)
    z = z[np.isfinite(z)]
    if h == 1:
        _need_tail_obs(z.size, a, "returns")
        f = res.forecast(horizon=1, reindex=False)
        mu = float(np.asarray(f.mean)[-1, 0])
        sig = math.sqrt(float(np.asarray(f.variance)[-1, 0]))
        var, es = empirical_var_es(-(mu + sig * z) * scale, a)
        sims = z.size
    else:
        _need_tail_obs(n_sims, a, "n_sims")
        f = res.forecast(
            horizon=h, method="bootstrap", simulations=n_sims, reindex=False, random_state=np.random.RandomState(seed)
        )
        paths = np.asarray(f.simulations.values)[-1]  # n_sims x h
        var, es = empirical_var_es(-paths.sum(axis=1) * scale, a)
        sig = math.sqrt(float(np.asarray(f.variance)[-1, 0]))
        sims = n_sims
    details = {
        "params": native.tolist(),
        "param_names": [str(n) for n in res.params.index],
        "sigma_next": sig * scale,
        "sample_sigma": scale,
        "n_scenarios": int(sims),
        "dist": dist,
    }
    return var, es, details


# --------------------------------------------------------------------------------------- portfolio methods


def _horizon_returns(r: np.ndarray, h: int) -> np.ndarray:
    """Overlapping h-day buy-and-hold simple returns per asset: prod(1 + r) - 1 over each window."""
    if h == 1:
        return r
    logs = np.log1p(r)
    c = np.vstack([np.zeros((1, r.shape[1])), np.cumsum(logs, axis=0)])
    return np.expm1(c[h:] - c[:-h])


def _pnl(r: np.ndarray | None, e: np.ndarray, h: int) -> np.ndarray:
    if r is None:
        raise ValueError("returns: required by this method")
    if r.shape[0] < h:
        raise ValueError(f"returns: {r.shape[0]} rows are fewer than horizon_days={h}")
    if h > 1 and np.any(r <= -1.0):
        raise ValueError("returns: simple returns must be > -1 to aggregate over a horizon")
    return _horizon_returns(r, h) @ e


def _m_historical(r: np.ndarray | None, e: np.ndarray, a: float, h: int) -> RiskEstimate:
    pnl = _pnl(r, e, h)
    _need_tail_obs(pnl.size, a)
    var, es = empirical_var_es(-pnl, a)
    return RiskEstimate(var, es, a, h, "historical", pnl.size, {"quantile": "inverted_cdf", "overlapping": h > 1})


def _m_age_weighted(r: np.ndarray | None, e: np.ndarray, a: float, h: int, *, lam: float = 0.98) -> RiskEstimate:
    pnl = _pnl(r, e, h)
    _need_tail_obs(pnl.size, a)
    var, es = empirical_var_es(-pnl, a, age_weights(pnl.size, lam))
    return RiskEstimate(var, es, a, h, "age_weighted", pnl.size, {"lam": lam, "overlapping": h > 1})


def _m_evt(
    r: np.ndarray | None,
    e: np.ndarray,
    a: float,
    h: int,
    *,
    threshold_quantile: float = 0.9,
    min_exceedances: int = 20,
) -> RiskEstimate:
    pnl = _pnl(r, e, h)
    tail = gpd_tail_fit(-pnl, threshold_quantile, min_exceedances)
    return RiskEstimate(
        tail.var(a),
        tail.es(a),
        a,
        h,
        "evt",
        pnl.size,
        {"xi": tail.xi, "beta": tail.beta, "threshold": tail.threshold, "n_exceed": tail.n_exceed},
    )


def _m_fhs(
    r: np.ndarray | None,
    e: np.ndarray,
    a: float,
    h: int,
    *,
    params: Any = None,
    dist: str = "normal",
    o: int = 0,
    n_sims: int = 20_000,
    seed: int = 0,
) -> RiskEstimate:
    pnl = _pnl(r, e, 1)
    var, es, details = fhs_var_es(pnl, a, h, params=params, dist=dist, o=o, n_sims=n_sims, seed=seed)
    return RiskEstimate(var, es, a, h, "fhs", pnl.size, details)


def _moments(
    r: np.ndarray | None,
    e: np.ndarray,
    *,
    mean: Any,
    cov: Any,
    covariance: str,
    lam: float,
    zero_mean: bool,
) -> tuple[float, float, dict[str, Any]]:
    """Portfolio mean and standard deviation of the one-day P&L from a supplied or estimated mean/covariance."""
    n = e.size
    if cov is not None:
        c = check_covariance(cov, n)
        source = "supplied"
    else:
        if r is None:
            raise ValueError("returns: required unless cov is supplied")
        if covariance == "sample":
            if r.shape[0] < 2:
                raise ValueError("returns: need at least 2 observations for a covariance")
            c = sample_covariance(r)
        elif covariance == "ewma":
            need = ewma_min_obs(lam)
            if r.shape[0] < need:
                raise ValueError(
                    f"returns: too few observations for an EWMA covariance at lam={lam}: {r.shape[0]} (need >= "
                    f"{need}, one EWMA window 1/(1 - lam); fewer rows make the estimate the last few squared returns)"
                )
            c = ewma_covariance(r, lam)
        else:
            raise ValueError(f"covariance: must be 'sample' or 'ewma', got {covariance!r}")
        source = covariance
    if mean is not None:
        mu = _as_vector(mean, "mean")
        if mu.size != n:
            raise ValueError(f"mean: length {mu.size} does not match the {n} assets of weights")
    elif zero_mean or r is None:
        mu = np.zeros(n)
    else:
        mu = r.mean(axis=0)
    sigma = math.sqrt(max(float(e @ c @ e), 0.0))
    return float(mu @ e), sigma, {"covariance": source, "mean": float(mu @ e), "sigma": sigma}


def _m_normal(
    r: np.ndarray | None,
    e: np.ndarray,
    a: float,
    h: int,
    *,
    mean: Any = None,
    cov: Any = None,
    covariance: str = "sample",
    lam: float = 0.94,
    zero_mean: bool = False,
    _name: str = "normal",
) -> RiskEstimate:
    mu, sigma, det = _moments(r, e, mean=mean, cov=cov, covariance=covariance, lam=lam, zero_mean=zero_mean)
    var, es = normal_var_es(mu * h, sigma * math.sqrt(h), a)
    if covariance == "ewma":
        det["lam"] = lam
    return RiskEstimate(var, es, a, h, _name, 0 if r is None else r.shape[0], {**det, "scaling": "sqrt_time"})


def _m_ewma(
    r: np.ndarray | None,
    e: np.ndarray,
    a: float,
    h: int,
    *,
    lam: float = 0.94,
    zero_mean: bool = True,
    mean: Any = None,
) -> RiskEstimate:
    if r is None:
        raise ValueError("returns: required by the ewma method")
    return _m_normal(r, e, a, h, mean=mean, covariance="ewma", lam=lam, zero_mean=zero_mean, _name="ewma")


def _fit_nu(x: np.ndarray) -> tuple[float, bool]:
    """Student-t degrees of freedom by MLE (scipy.stats.t.fit, location and scale free), kept in [2.1, 1000]."""
    if x.size < 10:
        raise ValueError(f"returns: too few observations to fit Student-t degrees of freedom: {x.size} (need >= 10)")
    sd = float(x.std())
    if not sd > 0:
        raise ValueError("returns: portfolio P&L has zero variance")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        nu = float(stats.t.fit((x - x.mean()) / sd)[0])
    clamped = not (2.1 <= nu <= 1000.0)
    return float(np.clip(nu, 2.1, 1000.0)), clamped


def _m_student_t(
    r: np.ndarray | None,
    e: np.ndarray,
    a: float,
    h: int,
    *,
    nu: float | None = None,
    mean: Any = None,
    cov: Any = None,
    covariance: str = "sample",
    lam: float = 0.94,
    zero_mean: bool = False,
) -> RiskEstimate:
    mu, sigma, det = _moments(r, e, mean=mean, cov=cov, covariance=covariance, lam=lam, zero_mean=zero_mean)
    clamped = False
    if nu is None:
        if r is None:
            raise ValueError("nu: required when returns are not given")
        nu, clamped = _fit_nu(r @ e)
    var, es = student_t_var_es(mu * h, sigma * math.sqrt(h), float(nu), a)
    det.update({"nu": float(nu), "nu_clamped": clamped, "scaling": "sqrt_time"})
    return RiskEstimate(var, es, a, h, "student_t", 0 if r is None else r.shape[0], det)


def _cf_from_pnl(pnl: np.ndarray, a: float, h: int) -> tuple[float, float, dict[str, Any]]:
    if pnl.size < 4:
        raise ValueError(f"returns: too few observations for skewness and kurtosis: {pnl.size} (need >= 4)")
    mu, sd = float(pnl.mean()), float(pnl.std(ddof=1))
    if not sd > 0:
        raise ValueError("returns: portfolio P&L has zero variance")
    S = float(stats.skew(pnl, bias=False))
    K = float(stats.kurtosis(pnl, fisher=True, bias=False))
    var, es = cornish_fisher_var_es(mu * h, sd * math.sqrt(h), S / math.sqrt(h), K / h, a)
    return var, es, {"mean": mu, "sigma": sd, "skew": S, "excess_kurtosis": K, "scaling": "cumulants"}


def _m_cornish_fisher(r: np.ndarray | None, e: np.ndarray, a: float, h: int) -> RiskEstimate:
    pnl = _pnl(r, e, 1)
    var, es, det = _cf_from_pnl(pnl, a, h)
    return RiskEstimate(var, es, a, h, "cornish_fisher", pnl.size, det)


def _m_mc(
    r: np.ndarray | None,
    e: np.ndarray,
    a: float,
    h: int,
    *,
    dist: str,
    mean: Any = None,
    cov: Any = None,
    covariance: str = "sample",
    lam: float = 0.94,
    zero_mean: bool = False,
    nu: float | None = None,
    n_scenarios: int = 100_000,
    antithetic: bool = False,
    importance: bool = False,
    seed: int | None = 0,
    device: str = "cpu",
    chunk_size: int = 1 << 16,
) -> RiskEstimate:
    from tradesys.quant.risk.montecarlo import mc_var

    n = e.size
    if cov is not None:
        c = check_covariance(cov, n)
    elif r is None:
        raise ValueError("returns: required unless cov is supplied")
    elif covariance == "sample":
        c = sample_covariance(r)
    elif covariance == "ewma":
        c = ewma_covariance(r, lam)
    else:
        raise ValueError(f"covariance: must be 'sample' or 'ewma', got {covariance!r}")
    if mean is not None:
        mu = _as_vector(mean, "mean")
        if mu.size != n:
            raise ValueError(f"mean: length {mu.size} does not match the {n} assets of weights")
    elif zero_mean or r is None:
        mu = np.zeros(n)
    else:
        mu = r.mean(axis=0)
    clamped = False
    if dist == "t" and nu is None:
        if r is None:
            raise ValueError("nu: required when returns are not given")
        nu, clamped = _fit_nu(r @ e)
    est = mc_var(
        mu,
        c,
        e,
        a,
        dist=dist,
        nu=nu,
        n_scenarios=n_scenarios,
        antithetic=antithetic,
        importance=importance,
        seed=seed,
        device=device,
        chunk_size=chunk_size,
        horizon_days=h,
    )
    details = {**est.details, "nu_clamped": clamped} if dist == "t" else est.details
    return RiskEstimate(est.var, est.es, a, h, f"mc_{dist}", 0 if r is None else r.shape[0], details)


def _m_mc_normal(r: np.ndarray | None, e: np.ndarray, a: float, h: int, **kw: Any) -> RiskEstimate:
    return _m_mc(r, e, a, h, dist="normal", **kw)


def _m_mc_t(r: np.ndarray | None, e: np.ndarray, a: float, h: int, **kw: Any) -> RiskEstimate:
    return _m_mc(r, e, a, h, dist="t", **kw)


_DISPATCH: dict[str, Callable[..., RiskEstimate]] = {
    "historical": _m_historical,
    "age_weighted": _m_age_weighted,
    "evt": _m_evt,
    "fhs": _m_fhs,
    "normal": _m_normal,
    "student_t": _m_student_t,
    "cornish_fisher": _m_cornish_fisher,
    "ewma": _m_ewma,
    "mc_normal": _m_mc_normal,
    "mc_t": _m_mc_t,
}


def _allowed_kwargs(method: str) -> set[str]:
    fn = _m_mc if method.startswith("mc_") else _DISPATCH[method]
    params = inspect.signature(fn).parameters
    names = {k for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY and not k.startswith("_")}
    return names - {"dist"} if method.startswith("mc_") else names


def estimate_var(
    returns: Any,
    weights: Any,
    *,
    alpha: float = 0.99,
    horizon_days: int = 1,
    method: str = "historical",
    value: float = 1.0,
    **method_kwargs: Any,
) -> RiskEstimate:
    """VaR and ES of a linear portfolio by one of ``METHODS`` (one entry point for the Serve route and the CLI).

    ``returns``: T x N simple daily returns (array or DataFrame; 1-D means one asset); may be None for
    "normal"/"student_t"/"mc_*" when ``cov=`` (and ``nu=`` for t) is supplied. ``weights``: N exposures as
    fractions of ``value`` (or currency amounts with ``value=1``), in column order (a Series is aligned to the
    DataFrame's column names). Method options (keyword arguments):

    * historical: none. age_weighted: ``lam`` (0.98). evt: ``threshold_quantile`` (0.9), ``min_exceedances`` (20).
    * fhs: ``params``, ``dist`` ("normal"), ``o`` (0; 1 = GJR), ``n_sims`` (20,000, h > 1), ``seed``.
    * normal / student_t: ``mean``, ``cov`` (checked PSD), ``covariance`` ("sample" | "ewma"), ``lam``,
      ``zero_mean`` (False: the sample mean is used); student_t: ``nu`` (else MLE on the portfolio P&L).
    * ewma: RiskMetrics normal VaR, ``lam`` (0.94), ``zero_mean`` (True).
    * cornish_fisher: none (sample mean, sd, skewness and excess kurtosis of the portfolio P&L).
    * mc_normal / mc_t: as normal, plus ``nu``, ``n_scenarios`` (100,000), ``antithetic``, ``importance``,
      ``seed`` (0; None = fresh entropy), ``device`` ("cpu" | "cuda"), ``chunk_size``; details carry the Monte
      Carlo standard errors ``var_se`` and ``es_se``.

    Refused inputs (``ValueError`` naming ``returns``): a simple return below -1 (a loss beyond 100% of the
    position is not a simple return: a log return or a percentage was passed), and too few rows for the method.
    Minimum rows, and why: historical and age_weighted ceil(1 / (1 - alpha)) (at least one observation beyond the
    VaR quantile: 100 at alpha 0.99); evt enough for ``min_exceedances`` (20) beyond ``threshold_quantile``;
    fhs 100 (a GARCH(1,1) fit); normal, mc_normal, mc_t 2 (a sample covariance); student_t 2, and 10 when ``nu``
    is fitted; cornish_fisher 4 (skewness and kurtosis); ewma (and ``covariance="ewma"``) one EWMA window,
    `ewma_min_obs` = ceil(1 / (1 - lam)), 17 at lam 0.94: from one row the "EWMA VaR" is that row's absolute
    return times a normal quantile. ``horizon_days`` rows at least for the sample-based methods.
    """
    if method not in _DISPATCH:
        raise ValueError(f"method: must be one of {', '.join(METHODS)}, got {method!r}")
    a = _check_alpha(alpha)
    h = _check_horizon(horizon_days)
    unknown = set(method_kwargs) - _allowed_kwargs(method)
    if unknown:
        raise ValueError(f"method_kwargs: unknown option(s) {sorted(unknown)} for method {method!r}")
    if returns is None:
        if method not in ("normal", "student_t", "mc_normal", "mc_t") or method_kwargs.get("cov") is None:
            raise ValueError(f"returns: required by method {method!r} unless cov is supplied (normal, t, mc)")
        w = _as_vector(weights, "weights")
        r = None
        e = _exposures(w, w.size, value)
    else:
        r, _, cols = _as_matrix(returns)
        below = r < -1.0
        if below.any():
            i, j = np.argwhere(below)[0]
            raise ValueError(f"returns: simple returns cannot be below -1 (-100%), got {r[i, j]:.6g} at row {i}, "
                             f"column {j} (log returns or percentages?)")  # fmt: skip
        e = _exposures(weights, r.shape[1], value, cols)
    return _DISPATCH[method](r, e, a, h, **method_kwargs)


def var_from_pnl(
    pnl: Any,
    alpha: float = 0.99,
    method: str = "historical",
    *,
    horizon_days: int = 1,
    probabilities: Any = None,
    **method_kwargs: Any,
) -> RiskEstimate:
    """VaR/ES of a P&L scenario vector (e.g. from full revaluation), already at the horizon: no time scaling.

    ``method``: "historical" (equal weights, or ``probabilities`` per scenario), "age_weighted" (scenarios in
    time order, oldest first; ``lam``), "evt" (``threshold_quantile``, ``min_exceedances``), "fhs" (a daily P&L
    series; ``horizon_days`` > 1 simulates through the GARCH filter), "normal", "student_t" (``nu`` or MLE) and
    "cornish_fisher" (moments of the scenarios). ``horizon_days`` labels the result (and drives FHS only).
    """
    if method not in PNL_METHODS:
        raise ValueError(f"method: must be one of {', '.join(PNL_METHODS)}, got {method!r}")
    a = _check_alpha(alpha)
    h = _check_horizon(horizon_days)
    y = _as_vector(pnl, "pnl")
    allowed = {
        "historical": set(),
        "age_weighted": {"lam"},
        "evt": {"threshold_quantile", "min_exceedances"},
        "fhs": {"params", "dist", "o", "n_sims", "seed"},
        "normal": set(),
        "student_t": {"nu"},
        "cornish_fisher": set(),
    }[method]
    unknown = set(method_kwargs) - allowed
    if unknown:
        raise ValueError(f"method_kwargs: unknown option(s) {sorted(unknown)} for method {method!r}")
    if probabilities is not None and method != "historical":
        raise ValueError("probabilities: only the historical method takes scenario probabilities")
    details: dict[str, Any] = {"source": "pnl"}
    if method == "historical":
        if probabilities is None:
            _need_tail_obs(y.size, a, "pnl")
        var, es = empirical_var_es(-y, a, probabilities)
    elif method == "age_weighted":
        _need_tail_obs(y.size, a, "pnl")
        lam = float(method_kwargs.get("lam", 0.98))
        var, es = empirical_var_es(-y, a, age_weights(y.size, lam))
        details["lam"] = lam
    elif method == "evt":
        tail = gpd_tail_fit(-y, **method_kwargs)
        var, es = tail.var(a), tail.es(a)
        details.update({"xi": tail.xi, "beta": tail.beta, "threshold": tail.threshold, "n_exceed": tail.n_exceed})
    elif method == "fhs":
        var, es, det = fhs_var_es(y, a, h, **method_kwargs)
        details.update(det)
    elif method == "normal":
        if y.size < 2:
            raise ValueError("pnl: need at least 2 scenarios")
        var, es = normal_var_es(float(y.mean()), float(y.std(ddof=1)), a)
    elif method == "student_t":
        if y.size < 2:
            raise ValueError("pnl: need at least 2 scenarios")
        nu = method_kwargs.get("nu")
        clamped = False
        if nu is None:
            nu, clamped = _fit_nu(y)
        var, es = student_t_var_es(float(y.mean()), float(y.std(ddof=1)), float(nu), a)
        details.update({"nu": float(nu), "nu_clamped": clamped})
    else:
        var, es, det = _cf_from_pnl(y, a, 1)
        details.update(det)
    return RiskEstimate(var, es, a, h, method, y.size, details)
