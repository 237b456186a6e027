"""SABR implied volatility (Hagan, Kumar, Lesniewski, Woodward 2002, lognormal expansion) and its calibration.

The model: dF = alpha_t F^beta dW, d alpha = nu alpha dZ, d<W, Z> = rho dt, alpha_0 = alpha. Hagan's expansion of
the Black (lognormal) implied vol of a strike K on the forward F, expiry T:

    sigma(K) = alpha / ((F K)^{(1-beta)/2} (1 + (1-beta)^2/24 l^2 + (1-beta)^4/1920 l^4)) * z / x(z)
               * (1 + T [(1-beta)^2 alpha^2 / (24 (F K)^{1-beta}) + rho beta nu alpha / (4 (F K)^{(1-beta)/2})
                         + (2 - 3 rho^2) nu^2 / 24]),
    l = ln(F/K),  z = nu/alpha (F K)^{(1-beta)/2} l,  x(z) = ln((sqrt(1 - 2 rho z + z^2) + z - rho) / (1 - rho)).

Numerics, all vectorised over strikes (and any other broadcast argument):

* x(z) is evaluated without cancellation: for z >= 0 as log1p((z + (z^2 - 2 rho z)/(sqrt(B) + 1)) / (1 - rho)), for
  z < 0 as -log1p((-z + (z^2 - 2 rho z)/(sqrt(B) + 1)) / (1 + rho)), B = 1 - 2 rho z + z^2 (the textbook form
  loses all digits for large negative z, where sqrt(B) + z - rho ~ (1 - rho^2)/(2|z|));
* at the money (|z| < 1e-8, including F == K exactly) z/x(z) is its series 1 - rho z/2 + (2 - 3 rho^2) z^2/12;
* beta = 1 needs no special case (every (1-beta) term vanishes).

`obloj=True` uses Obloj's (2008) correction of the leading term: sigma_0 = nu l / x(zeta) with
zeta = nu/alpha (F^{1-beta} - K^{1-beta})/(1 - beta) (nu/alpha l at beta = 1), which is exact for the CEV
limit nu -> 0 and equals Hagan's for beta = 1; the O(T) correction factor is Hagan's.

Calibration fits (alpha, rho, nu) at a chosen beta (beta is not identified jointly with rho from one smile; desks
fix it: 1 lognormal, 0.5 for rates, 0 normal) by bounded weighted least squares in implied vol
(scipy `least_squares`, trust-region reflective), from a few starts seeded by the ATM vol.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import optimize

__all__ = ["SabrFit", "SabrParams", "calibrate_sabr", "sabr_vol"]

_Z_SERIES = 1e-8


def _z_over_x(z: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """z / x(z), x(z) = ln((sqrt(1 - 2 rho z + z^2) + z - rho)/(1 - rho)), stable for all z and |rho| < 1."""
    with np.errstate(divide="ignore", invalid="ignore"):
        sb = np.sqrt(1.0 - 2.0 * rho * z + z * z)
        q = (z * z - 2.0 * rho * z) / (sb + 1.0)  # sqrt(B) - 1, without cancellation
        x_pos = np.log1p((z + q) / (1.0 - rho))
        x_neg = -np.log1p((q - z) / (1.0 + rho))
        x = np.where(z >= 0.0, x_pos, x_neg)
        series = 1.0 - 0.5 * rho * z + (2.0 - 3.0 * rho * rho) * z * z / 12.0
        return np.where(np.abs(z) < _Z_SERIES, series, z / x)


def sabr_vol(K: Any, F: Any, T: Any, alpha: Any, beta: Any, rho: Any, nu: Any, *, obloj: bool = False) -> np.ndarray:
    """Hagan's SABR lognormal implied vol sigma_B(K; F, T, alpha, beta, rho, nu); all arguments broadcast.

    Valid region: K > 0, F > 0, T >= 0, alpha > 0, 0 <= beta <= 1, |rho| < 1, nu >= 0; other rows are NaN.
    (QuantLib's `sabrVolatility(strike, forward, expiryTime, alpha, beta, nu, rho)` is the same formula; note
    its argument order.) The expansion can turn negative for long expiries with large nu: those rows are NaN.
    """
    K, F, T, alpha, beta, rho, nu = np.broadcast_arrays(
        *(np.asarray(v, dtype=np.float64) for v in (K, F, T, alpha, beta, rho, nu))
    )
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        c = 1.0 - beta
        lnF, lnK = np.log(F), np.log(K)
        ell = lnF - lnK
        fk_b = np.exp(0.5 * c * (lnF + lnK))  # (F K)^{(1-beta)/2}
        corr = 1.0 + T * (
            c * c * alpha * alpha / (24.0 * fk_b * fk_b)
            + 0.25 * rho * beta * nu * alpha / fk_b
            + (2.0 - 3.0 * rho * rho) * nu * nu / 24.0
        )
        if not obloj:
            z = nu / alpha * fk_b * ell
            c2l2 = (c * ell) ** 2
            lead = alpha / (fk_b * (1.0 + c2l2 / 24.0 + c2l2 * c2l2 / 1920.0)) * _z_over_x(z, rho)
        else:
            # q = (F^c - K^c)/c = K^c expm1(c l)/c; q/l -> K^c at l -> 0, and q = l at c = 0 (beta = 1).
            cl = c * ell
            ratio = np.where(np.abs(cl) > 1e-12, np.expm1(cl) / np.where(cl == 0.0, 1.0, cl), 1.0 + 0.5 * cl)
            q_over_l = np.exp(c * lnK) * ratio
            zeta = nu / alpha * q_over_l * ell
            lead = alpha / q_over_l * _z_over_x(zeta, rho)
        vol = lead * corr
        bad = ~((K > 0) & (F > 0) & (T >= 0) & (alpha > 0) & (beta >= 0) & (beta <= 1) & (np.abs(rho) < 1) & (nu >= 0))
        bad |= ~(vol > 0) | ~np.isfinite(vol)
    return np.where(bad, np.nan, vol)


@dataclass(frozen=True)
class SabrParams:
    """SABR parameters of one expiry: alpha > 0 (vol of F^beta), beta in [0, 1], |rho| < 1, nu >= 0 (vol of vol)."""

    alpha: float
    beta: float
    rho: float
    nu: float

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "rho", "nu"):
            v = getattr(self, name)
            if not isinstance(v, int | float | np.floating | np.integer) or not math.isfinite(float(v)):
                raise ValueError(f"{name}: must be a finite number, got {v!r}")
            object.__setattr__(self, name, float(v))
        if not self.alpha > 0:
            raise ValueError(f"alpha: must be > 0, got {self.alpha}")
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta: must be in [0, 1], got {self.beta}")
        if not abs(self.rho) < 1.0:
            raise ValueError(f"rho: must satisfy |rho| < 1, got {self.rho}")
        if self.nu < 0:
            raise ValueError(f"nu: must be >= 0, got {self.nu}")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SabrParams:
        return cls(**{name: float(d[name]) for name in ("alpha", "beta", "rho", "nu")})

    def vol(self, K: Any, F: Any, T: Any, *, obloj: bool = False) -> np.ndarray:
        return sabr_vol(K, F, T, self.alpha, self.beta, self.rho, self.nu, obloj=obloj)


@dataclass(frozen=True)
class SabrFit:
    """Result of `calibrate_sabr`: parameters and unweighted fit quality in vol (0.01 = 1 vol point)."""

    params: SabrParams
    rmse: float
    max_abs_error: float
    success: bool
    message: str


def calibrate_sabr(
    K: Any,
    vol: Any,
    F: float,
    T: float,
    *,
    beta: float = 1.0,
    weights: Any = None,
    obloj: bool = False,
    x0: tuple[float, float, float] | None = None,
) -> SabrFit:
    """Fit (alpha, rho, nu) at fixed beta to one smile: minimise sum (weight (sigma_SABR(K) - vol))^2.

    K: strikes (price units); vol: implied vols; F: forward; T: years; weights: per point (e.g. 1 / bid-ask
    spread in vol). Bounds: alpha > 0, |rho| <= 0.9999, 0 <= nu <= 10. Needs at least 3 finite points.
    x0: optional (alpha, rho, nu) start, tried first.
    """
    K = np.asarray(K, dtype=np.float64).ravel()
    vol = np.asarray(vol, dtype=np.float64).ravel()
    if K.shape != vol.shape:
        raise ValueError(f"vol: shape {vol.shape} does not match K {K.shape}")
    for name, v in (("F", F), ("T", T)):
        if not (isinstance(v, int | float | np.floating) and math.isfinite(v) and v > 0):
            raise ValueError(f"{name}: must be a finite number > 0, got {v!r}")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta: must be in [0, 1], got {beta}")
    wt = np.ones_like(K) if weights is None else np.broadcast_to(np.asarray(weights, dtype=np.float64), K.shape)
    ok = np.isfinite(K) & (K > 0) & np.isfinite(vol) & (vol > 0) & np.isfinite(wt) & (wt > 0)
    if int(ok.sum()) < 3:
        raise ValueError(f"vol: need at least 3 finite positive points to fit alpha, rho, nu, got {int(ok.sum())}")
    K, vol, wt = K[ok], vol[ok], np.array(wt[ok]) / float(np.mean(wt[ok]))

    atm = float(np.interp(0.0, *_sorted(np.log(K / F), vol)))
    scale = F ** (1.0 - beta)

    def resid(x: np.ndarray) -> np.ndarray:
        alpha, rho, nu = x
        model = sabr_vol(K, F, T, alpha, beta, rho, nu, obloj=obloj)
        return wt * np.nan_to_num(model - vol, nan=1.0)

    lo = np.array([1e-8, -0.9999, 0.0])
    hi = np.array([np.inf, 0.9999, 10.0])
    starts = [np.array(x0, dtype=np.float64)] if x0 is not None else []
    starts += [np.array([atm * scale, r, n]) for r, n in ((-0.3, 0.5), (0.0, 0.3), (0.3, 0.5), (-0.6, 1.2))]
    best: optimize.OptimizeResult | None = None
    for x in starts:
        res = optimize.least_squares(
            resid,
            np.clip(x, lo + 1e-12, np.minimum(hi, 1e6)),
            bounds=(lo, hi),
            method="trf",
            x_scale=np.array([max(atm * scale, 1e-8), 0.3, 0.3]),
            ftol=1e-15,
            xtol=1e-15,
            gtol=1e-15,
            max_nfev=2000,
        )
        if best is None or res.cost < best.cost:
            best = res
    assert best is not None
    alpha, rho, nu = (float(v) for v in best.x)
    params = SabrParams(alpha, beta, rho, nu)
    err = params.vol(K, F, T, obloj=obloj) - vol
    return SabrFit(
        params=params,
        rmse=float(np.sqrt(np.mean(err * err))),
        max_abs_error=float(np.max(np.abs(err))),
        success=bool(best.success),
        message=str(best.message),
    )


def _sorted(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(x)
    return x[order], y[order]
