"""Black-Litterman: market-equilibrium prior, views P w = Q with uncertainty Omega, posterior returns and weights.

Why: mean-variance weights from sample means are extreme and unstable; Black-Litterman starts from the returns
that make the market portfolio optimal (Pi = delta Sigma w_mkt, reverse optimisation) and tilts them only as far
as the investor's views and their confidence justify (He & Litterman 1999).

Conventions (He & Litterman 1999). Returns are excess returns in the units of `cov` (annual in their example).
tau scales the uncertainty of the prior mean (tau Sigma). Views: row k of P is a portfolio, Q_k its expected
return, Omega the view-error covariance. Posterior mean
    mu_bl = Pi + tau Sigma P' (P tau Sigma P' + Omega)^-1 (Q - P Pi),
uncertainty of the mean M = tau Sigma - tau Sigma P' (P tau Sigma P' + Omega)^-1 P tau Sigma, posterior
covariance of returns Sigma_bl = Sigma + M, and the unconstrained optimal weights w* = (delta Sigma_bl)^-1 mu_bl,
which equal (w_mkt + P' Lambda) / (1 + tau): `view_weights` is that Lambda (the weight on each view portfolio).
The (P tau Sigma P' + Omega) form needs no inverse of Omega, so a 100%-confident view (Omega_k = 0) is exact.

Omega: "he_litterman" is diag(P tau Sigma P') (each view as uncertain as the prior of its portfolio);
"idzorek" maps a confidence c_k in [0, 1] per view to omega_k = (1 - c_k)/c_k * p_k tau Sigma p_k'. That is the
exact solution of Idzorek's (2005) procedure (choose omega_k so the weight tilt caused by view k alone is c_k
times the tilt of the 100%-confident view), as Walters (2011) shows: at c_k = 1 the view holds exactly
(p_k mu_bl = Q_k), at c_k = 0 it is dropped (posterior = prior).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from tradesys.quant.portfolio.optimize import validate_cov, validate_mu


def market_weights_from_caps(market_caps: Any) -> pd.Series | np.ndarray:
    """Market-capitalisation weights (caps / total); keeps a Series' index."""
    caps = pd.Series(market_caps, dtype=float) if isinstance(market_caps, (pd.Series, Mapping)) else None
    arr = caps.to_numpy() if caps is not None else np.asarray(market_caps, dtype=float).reshape(-1)
    if not np.isfinite(arr).all() or (arr < 0).any() or arr.sum() <= 0:
        raise ValueError("market_caps: must be finite, >= 0 and not all zero")
    w = arr / arr.sum()
    return pd.Series(w, index=caps.index) if caps is not None else w


def implied_risk_aversion(
    market_returns: Any, *, risk_free_rate: float = 0.0, periods_per_year: float = 252.0
) -> float:
    """delta = (E[r_m] - r_f) / Var(r_m) from per-period market returns (annualised; rf annual)."""
    r = np.asarray(market_returns, dtype=float).reshape(-1)
    if r.size < 2 or not np.isfinite(r).all():
        raise ValueError("market_returns: need >= 2 finite returns")
    var = float(np.var(r, ddof=1)) * periods_per_year
    if var <= 0:
        raise ValueError("market_returns: zero variance")
    return (float(np.mean(r)) * periods_per_year - risk_free_rate) / var


def equilibrium_returns(cov: Any, market_weights: Any, *, risk_aversion: float = 2.5) -> np.ndarray:
    """Reverse optimisation: Pi = delta Sigma w_mkt, the excess returns that make w_mkt mean-variance optimal."""
    sigma, names = validate_cov(cov)
    w = validate_mu(market_weights, names, field_name="market_weights")
    return risk_aversion * sigma @ w


def view_matrix(views: Sequence[Mapping[str, float]], asset_names: Sequence[str]) -> np.ndarray:
    """P from views written as {asset: weight} portfolios, e.g. {"Germany": 1, "France": -0.295, "UK": -0.705}."""
    pos = {str(a): i for i, a in enumerate(asset_names)}
    P = np.zeros((len(views), len(asset_names)))
    for k, view in enumerate(views):
        for asset, weight in view.items():
            if str(asset) not in pos:
                raise ValueError(f"P: view {k} names unknown asset {asset!r}")
            P[k, pos[str(asset)]] = float(weight)
    return P


def he_litterman_omega(P: np.ndarray, cov: np.ndarray, tau: float) -> np.ndarray:
    """diag(P tau Sigma P'): each view as uncertain as the prior on its own portfolio."""
    return np.diag(np.diag(P @ (tau * cov) @ P.T))


def idzorek_omega(P: np.ndarray, cov: np.ndarray, tau: float, confidences: Sequence[float]) -> np.ndarray:
    """Idzorek's confidence (0..1 per view) to Omega: omega_k = (1 - c_k)/c_k p_k tau Sigma p_k' (inf at c = 0)."""
    c = np.asarray(confidences, dtype=float).reshape(-1)
    if c.shape[0] != P.shape[0]:
        raise ValueError(f"confidences: {c.shape[0]} values for {P.shape[0]} views")
    if not np.isfinite(c).all() or (c < 0).any() or (c > 1).any():
        raise ValueError("confidences: must be in [0, 1] (fractions, e.g. 0.65 for 65%)")
    base = np.diag(P @ (tau * cov) @ P.T)
    with np.errstate(divide="ignore"):
        alpha = np.where(c > 0, (1.0 - c) / np.where(c > 0, c, 1.0), np.inf)
    return np.diag(alpha * base)


@dataclass(frozen=True)
class BlackLittermanViews:
    """Everything the model needs besides the covariance.

    P: views x assets (array, DataFrame with asset columns, or a list of {asset: weight} dicts); Q: view returns.
    market_weights or market_caps give the prior Pi = delta Sigma w_mkt; without them the caller's expected
    returns are the prior. omega: "he_litterman", "idzorek" (needs `confidences`, 0..1), or a k x k matrix.
    """

    P: Any
    Q: Sequence[float] | np.ndarray
    market_weights: Any = None
    market_caps: Any = None
    risk_aversion: float = 2.5
    tau: float = 0.05
    omega: Literal["he_litterman", "idzorek"] | np.ndarray = "he_litterman"
    confidences: Sequence[float] | None = None
    view_names: Sequence[str] | None = None


@dataclass(frozen=True)
class BlackLittermanResult:
    """Prior and posterior (He & Litterman 1999 notation); weights are the unconstrained optimum w*."""

    prior_returns: pd.Series
    posterior_returns: pd.Series
    posterior_cov: pd.DataFrame
    mean_uncertainty: pd.DataFrame  # M, the posterior covariance of the mean
    omega: pd.DataFrame
    weights: pd.Series
    view_weights: pd.Series  # Lambda in w* = (w_mkt + P' Lambda) / (1 + tau)
    market_weights: pd.Series | None
    risk_aversion: float
    tau: float

    def to_dict(self) -> dict[str, Any]:
        def num(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None

        return {
            "prior_returns": {k: num(v) for k, v in self.prior_returns.items()},
            "posterior_returns": {k: num(v) for k, v in self.posterior_returns.items()},
            "unconstrained_weights": {k: num(v) for k, v in self.weights.items()},
            "view_weights": {k: num(v) for k, v in self.view_weights.items()},
            "omega": [[num(x) for x in row] for row in self.omega.to_numpy().tolist()],
            "risk_aversion": self.risk_aversion,
            "tau": self.tau,
        }


def _pick_matrix(P: Any, names: Sequence[str]) -> np.ndarray:
    if isinstance(P, pd.DataFrame):
        unknown = [c for c in P.columns if str(c) not in names]
        if unknown:
            raise ValueError(f"P: unknown assets {unknown[:5]}")
        return P.reindex(columns=list(names), fill_value=0.0).to_numpy(dtype=float)
    if isinstance(P, Sequence) and P and isinstance(P[0], Mapping):
        return view_matrix(P, names)  # type: ignore[arg-type]
    arr = np.asarray(P, dtype=float)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[1] != len(names):
        raise ValueError(f"P: shape {arr.shape} does not match {len(names)} assets")
    return arr


def black_litterman_posterior(
    cov: Any,
    views: BlackLittermanViews,
    *,
    prior_returns: Any = None,
    asset_names: Sequence[str] | None = None,
) -> BlackLittermanResult:
    """Posterior returns, covariance and unconstrained weights for `views` on top of the equilibrium prior."""
    sigma, names = validate_cov(cov, asset_names)
    delta, tau = float(views.risk_aversion), float(views.tau)
    if not (delta > 0 and math.isfinite(delta)):
        raise ValueError("risk_aversion: must be a positive finite number")
    if not (tau > 0 and math.isfinite(tau)):
        raise ValueError("tau: must be a positive finite number")

    w_mkt: np.ndarray | None = None
    if views.market_weights is not None and views.market_caps is not None:
        raise ValueError("market_weights: give market_weights or market_caps, not both")
    if views.market_caps is not None:
        caps = views.market_caps
        w_mkt = np.asarray(market_weights_from_caps(validate_mu(caps, names, field_name="market_caps")), dtype=float)
    elif views.market_weights is not None:
        w_mkt = validate_mu(views.market_weights, names, field_name="market_weights")
    if w_mkt is not None:
        pi = delta * sigma @ w_mkt
    elif prior_returns is not None:
        pi = validate_mu(prior_returns, names, field_name="prior_returns")
    else:
        raise ValueError("market_weights: needed for the equilibrium prior (or give prior_returns)")

    P = _pick_matrix(views.P, names)
    k = P.shape[0]
    Q = np.asarray(views.Q, dtype=float).reshape(-1)
    if Q.shape[0] != k:
        raise ValueError(f"Q: {Q.shape[0]} view returns for {k} views in P")
    if not np.isfinite(P).all() or not np.isfinite(Q).all():
        raise ValueError("P: views contain NaN or infinite values" if not np.isfinite(P).all() else "Q: NaN")
    view_names = [str(v) for v in views.view_names] if views.view_names is not None else [f"view_{i}" for i in range(k)]
    if len(view_names) != k:
        raise ValueError(f"view_names: {len(view_names)} names for {k} views")

    if isinstance(views.omega, str):
        if views.omega == "he_litterman":
            omega = he_litterman_omega(P, sigma, tau)
        elif views.omega == "idzorek":
            if views.confidences is None:
                raise ValueError("confidences: required for omega='idzorek'")
            omega = idzorek_omega(P, sigma, tau, views.confidences)
        else:
            raise ValueError(f"omega: unknown method {views.omega!r} (he_litterman, idzorek or a matrix)")
    else:
        omega = np.asarray(views.omega, dtype=float)
        if omega.shape != (k, k):
            raise ValueError(f"omega: shape {omega.shape}, expected ({k}, {k})")
        if np.isnan(omega).any():
            raise ValueError("omega: contains NaN")
        if not np.allclose(omega, omega.T):
            raise ValueError("omega: not symmetric")
        if np.linalg.eigvalsh(np.where(np.isfinite(omega), omega, 0.0)).min() < -1e-14:
            raise ValueError("omega: not positive semi-definite")

    # views with infinite uncertainty (0% confidence) carry no information: drop them
    diag = np.diag(omega)
    keep = np.isfinite(diag)
    if not keep.all():
        off = omega.copy()
        np.fill_diagonal(off, 0.0)
        if not np.isfinite(off).all() or np.abs(off[~keep]).max(initial=0.0) > 0:
            raise ValueError("omega: an infinite variance is allowed only for a view uncorrelated with the others")
    Pk, Qk, Ok = P[keep], Q[keep], omega[np.ix_(keep, keep)]

    tau_sigma = tau * sigma
    if Pk.shape[0]:
        A = Pk @ tau_sigma @ Pk.T + Ok
        try:
            gain = np.linalg.solve(A, np.column_stack([Qk - Pk @ pi, Pk @ tau_sigma]))
        except np.linalg.LinAlgError as exc:
            raise ValueError(
                "P: views are linearly dependent and certain (P tau Sigma P' + Omega is singular)"
            ) from exc
        mu_bl = pi + tau_sigma @ Pk.T @ gain[:, 0]
        M = tau_sigma - tau_sigma @ Pk.T @ gain[:, 1:]
    else:
        mu_bl = pi.copy()
        M = tau_sigma.copy()
    M = 0.5 * (M + M.T)
    sigma_bl = sigma + M
    w_star = np.linalg.solve(delta * sigma_bl, mu_bl)

    w_eq = w_mkt if w_mkt is not None else np.linalg.solve(delta * sigma, pi)
    lam = np.zeros(k)
    if Pk.shape[0]:
        dev = (1.0 + tau) * w_star - w_eq
        lam[keep] = np.linalg.lstsq(Pk.T, dev, rcond=None)[0]

    idx = list(names)
    return BlackLittermanResult(
        prior_returns=pd.Series(pi, index=idx),
        posterior_returns=pd.Series(mu_bl, index=idx),
        posterior_cov=pd.DataFrame(sigma_bl, index=idx, columns=idx),
        mean_uncertainty=pd.DataFrame(M, index=idx, columns=idx),
        omega=pd.DataFrame(omega, index=view_names, columns=view_names),
        weights=pd.Series(w_star, index=idx),
        view_weights=pd.Series(lam, index=view_names),
        market_weights=pd.Series(w_mkt, index=idx) if w_mkt is not None else None,
        risk_aversion=delta,
        tau=tau,
    )
