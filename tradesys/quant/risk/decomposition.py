"""Marginal, component and incremental VaR/ES of a linear portfolio: parametric closed forms and simulation (Euler).

Exposures e are currency amounts per asset (``weights * value``); P&L = e . X for asset returns X, loss L = -P&L.
VaR and ES are positively homogeneous of degree one in e, so Euler's theorem splits them exactly:
VaR = sum_i e_i dVaR/de_i. Definitions used here:

* marginal VaR_i = dVaR/de_i (VaR per unit of currency added to asset i), component VaR_i = e_i marginal VaR_i,
  sum_i component VaR_i = VaR (likewise for ES);
* incremental VaR_i = VaR(e) - VaR(e with e_i = 0): the VaR the whole position adds (exact, not linearised);
  ``incremental_var`` gives the exact change for any proposed trade and its first-order (marginal) estimate.

Parametric (elliptical: normal or Student-t with covariance Sigma, mean mu, horizon scaling mu h, Sigma h):
VaR = -mu'e + k sigma_p with sigma_p = sqrt(e' Sigma e), so marginal VaR = -mu + k Sigma e / sigma_p.
Simulation (Tasche 1999; Gourieroux-Laurent-Scaillet 2000): marginal VaR_i = E[-X_i | L = VaR], estimated by the
(weighted) mean over scenarios whose tail probability lies within a band around 1 - alpha, then scaled so the
components add up to the empirical VaR exactly (the unscaled sum is in ``details["raw_sum"]``); marginal
ES_i = E[-X_i | L >= VaR] with the Acerbi-Tasche share of the atom at VaR, which adds up to the empirical ES
with no scaling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import special, stats

from tradesys.quant.risk.var import (
    _PROB_TOL,
    _as_matrix,
    _as_vector,
    _check_alpha,
    _check_horizon,
    _plain,
    check_covariance,
    empirical_var_es,
)

__all__ = [
    "VarDecomposition",
    "incremental_var",
    "parametric_decomposition",
    "simulated_decomposition",
]


@dataclass(frozen=True)
class VarDecomposition:
    """Per-asset split of VaR and ES; arrays are aligned with ``names`` (and the input exposures)."""

    var: float
    es: float
    alpha: float
    method: str
    exposures: np.ndarray
    marginal_var: np.ndarray
    component_var: np.ndarray
    marginal_es: np.ndarray
    component_es: np.ndarray
    incremental_var: np.ndarray
    names: tuple[str, ...]
    details: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "exposure": self.exposures,
                "marginal_var": self.marginal_var,
                "component_var": self.component_var,
                "component_var_pct": self.component_var / self.var if self.var != 0 else np.nan,
                "incremental_var": self.incremental_var,
                "marginal_es": self.marginal_es,
                "component_es": self.component_es,
            },
            index=pd.Index(self.names, name="asset"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "var": float(self.var),
            "es": float(self.es),
            "alpha": float(self.alpha),
            "method": self.method,
            "assets": _plain(self.to_frame().reset_index().to_dict(orient="records")),
            "details": _plain(self.details),
        }


def _names(names: Any, n: int, fallback: list[str] | None = None) -> tuple[str, ...]:
    if names is None:
        return tuple(fallback) if fallback is not None else tuple(str(i) for i in range(n))
    out = tuple(str(x) for x in names)
    if len(out) != n:
        raise ValueError(f"names: length {len(out)} does not match the {n} assets")
    return out


def _elliptic_factors(alpha: float, dist: str, nu: float | None) -> tuple[float, float]:
    """(k_var, k_es): VaR = -mean + k_var sigma and ES = -mean + k_es sigma for a unit-variance law."""
    p = 1.0 - alpha
    if dist == "normal":
        z = float(special.ndtri(alpha))
        return z, float(stats.norm.pdf(z)) / p
    if dist == "t":
        if nu is None or not float(nu) > 2.0:
            raise ValueError(f"nu: degrees of freedom must be given and > 2 for the t distribution, got {nu!r}")
        nu = float(nu)
        s = math.sqrt((nu - 2.0) / nu)
        t_a = float(stats.t.ppf(alpha, nu))
        return s * t_a, s * float(stats.t.pdf(t_a, nu)) * (nu + t_a * t_a) / ((nu - 1.0) * p)
    raise ValueError(f"dist: must be 'normal' or 't', got {dist!r}")


def parametric_decomposition(
    exposures: Any,
    cov: Any,
    *,
    mean: Any = None,
    alpha: float = 0.99,
    dist: str = "normal",
    nu: float | None = None,
    horizon_days: int = 1,
    names: Any = None,
) -> VarDecomposition:
    """Closed-form marginal/component/incremental VaR and ES for normal or Student-t returns.

    ``cov`` and ``mean`` (default zero) are one-day moments of asset returns, scaled by ``horizon_days``.
    """
    a = _check_alpha(alpha)
    h = _check_horizon(horizon_days)
    e = _as_vector(exposures, "weights")
    n = e.size
    c = check_covariance(cov, n) * h
    mu = np.zeros(n) if mean is None else _as_vector(mean, "mean") * h
    if mu.size != n:
        raise ValueError(f"mean: length {mu.size} does not match the {n} assets of weights")
    k_var, k_es = _elliptic_factors(a, dist, nu)
    ce = c @ e
    sigma = math.sqrt(max(float(e @ ce), 0.0))
    grad_sigma = ce / sigma if sigma > 0 else np.zeros(n)
    marginal_var = -mu + k_var * grad_sigma
    marginal_es = -mu + k_es * grad_sigma
    var = float(-mu @ e + k_var * sigma)
    es = float(-mu @ e + k_es * sigma)

    def total(ee: np.ndarray) -> float:
        return float(-mu @ ee + k_var * math.sqrt(max(float(ee @ c @ ee), 0.0)))

    incremental = np.empty(n)
    for i in range(n):
        without = e.copy()
        without[i] = 0.0
        incremental[i] = var - total(without)
    names_t = _names(names, n, list(cov.columns) if isinstance(cov, pd.DataFrame) else None)
    return VarDecomposition(
        var=var,
        es=es,
        alpha=a,
        method=f"parametric_{dist}",
        exposures=e,
        marginal_var=marginal_var,
        component_var=e * marginal_var,
        marginal_es=marginal_es,
        component_es=e * marginal_es,
        incremental_var=incremental,
        names=names_t,
        details={"sigma": sigma, "k_var": k_var, "k_es": k_es, "horizon_days": h, "nu": nu},
    )


def _tail_weights(loss: np.ndarray, p: np.ndarray, alpha: float, var: float) -> np.ndarray:
    """Acerbi-Tasche weights of the alpha tail: p_i beyond VaR, the remaining mass spread over the atom at VaR."""
    tail = 1.0 - alpha
    w = np.where(loss > var, p, 0.0)
    rest = tail - w.sum()
    at = loss == var
    if rest > 0 and at.any():
        w = w + np.where(at, p * rest / p[at].sum(), 0.0)
    return w


def simulated_decomposition(
    scenarios: Any,
    exposures: Any,
    *,
    alpha: float = 0.99,
    probabilities: Any = None,
    bandwidth: float | None = None,
    names: Any = None,
) -> VarDecomposition:
    """Euler allocation of the empirical VaR/ES over asset-return scenarios (n x N: historical or Monte Carlo).

    ``probabilities``: per-scenario weights (e.g. importance-sampling ``lr / n``); equal by default.
    ``bandwidth``: half-width, in tail probability, of the band around 1 - alpha whose scenarios estimate
    E[-X | L = VaR]; default max(0.2 (1 - alpha), 5 / n) (at least ~10 scenarios with equal weights).
    """
    a = _check_alpha(alpha)
    if hasattr(scenarios, "detach"):  # torch tensor
        scenarios = scenarios.detach().cpu().numpy()
    x, _, cols = _as_matrix(scenarios, "scenarios")
    n, n_assets = x.shape
    e = _as_vector(exposures, "weights")
    if e.size != n_assets:
        raise ValueError(f"weights: length {e.size} does not match the {n_assets} columns of scenarios")
    tail = 1.0 - a
    if probabilities is None:
        if n * tail < 1.0 - 1e-9:
            raise ValueError(f"scenarios: too few for the tail: {n} leave none beyond the {a} quantile")
        p = np.full(n, 1.0 / n)
    else:
        p = _as_vector(probabilities, "probabilities")
        if p.size != n or np.any(p < 0):
            raise ValueError(f"probabilities: need {n} non-negative values")
    loss = -(x @ e)
    var, es = empirical_var_es(loss, a, p)
    # ES: exact tail mean, split by asset
    tw = _tail_weights(loss, p, a, var)
    marginal_es = -(tw @ x) / tail
    # VaR: scenarios whose P(L > l) lies within the band around the tail probability
    order = np.argsort(-loss, kind="stable")
    above = np.empty(n)
    above[order] = np.cumsum(p[order]) - p[order]
    bw = float(bandwidth) if bandwidth is not None else max(0.2 * tail, 5.0 / n)
    band = np.abs(above - tail) <= bw * (1.0 + _PROB_TOL)
    if not band.any():
        band = loss == var
    bp = p[band] / p[band].sum()
    marginal_raw = -(bp @ x[band])
    raw_sum = float(marginal_raw @ e)
    scale = var / raw_sum if raw_sum != 0 else 1.0
    marginal_var = marginal_raw * scale
    incremental = np.empty(n_assets)
    for i in range(n_assets):
        incremental[i] = var - empirical_var_es(loss + e[i] * x[:, i], a, p)[0]
    return VarDecomposition(
        var=var,
        es=es,
        alpha=a,
        method="simulation",
        exposures=e,
        marginal_var=marginal_var,
        component_var=e * marginal_var,
        marginal_es=marginal_es,
        component_es=e * marginal_es,
        incremental_var=incremental,
        names=_names(names, n_assets, cols),
        details={"raw_sum": raw_sum, "band_scenarios": int(band.sum()), "bandwidth": bw, "n_scenarios": n},
    )


def incremental_var(
    exposures: Any,
    trade: Any,
    *,
    alpha: float = 0.99,
    cov: Any = None,
    mean: Any = None,
    dist: str = "normal",
    nu: float | None = None,
    scenarios: Any = None,
    probabilities: Any = None,
) -> dict[str, float]:
    """VaR change from adding ``trade`` (currency per asset) to ``exposures``: exact and first-order (marginal).

    Give ``cov`` (parametric, optional ``mean``/``dist``/``nu``) or ``scenarios`` (empirical, optional
    ``probabilities``). Returns before, after, incremental (= after - before) and linear (= marginal VaR . trade).
    """
    e = _as_vector(exposures, "weights")
    d = _as_vector(trade, "trade")
    if d.size != e.size:
        raise ValueError(f"trade: length {d.size} does not match the {e.size} assets of weights")
    if (cov is None) == (scenarios is None):
        raise ValueError("cov: give exactly one of cov (parametric) or scenarios (simulation)")
    if cov is not None:
        before = parametric_decomposition(e, cov, mean=mean, alpha=alpha, dist=dist, nu=nu)
        after = parametric_decomposition(e + d, cov, mean=mean, alpha=alpha, dist=dist, nu=nu)
    else:
        before = simulated_decomposition(scenarios, e, alpha=alpha, probabilities=probabilities)
        after = simulated_decomposition(scenarios, e + d, alpha=alpha, probabilities=probabilities)
    return {
        "before": before.var,
        "after": after.var,
        "incremental": after.var - before.var,
        "linear": float(before.marginal_var @ d),
    }
