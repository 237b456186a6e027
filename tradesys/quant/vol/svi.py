"""Raw SVI smiles (Gatheral 2004) in total implied variance, and a calibration free of butterfly arbitrage.

Conventions (the whole `tradesys.quant.vol` package): k = ln(K/F) is log-moneyness against the forward F of the
expiry, w(k) = sigma_BS(k)^2 T is total implied variance, T in years (ACT/365). Raw SVI is

    w(k) = a + b (rho (k - m) + sqrt((k - m)^2 + sigma^2)).

Constraints, and why:

* admissibility (w is defined and non-negative): b >= 0, |rho| < 1, sigma > 0 and a + b sigma sqrt(1 - rho^2) >= 0
  (the minimum of w); `SviParams` refuses parameters that break them.
* Lee's moment formula: the wings of w are linear with slopes b (1 - rho) (k -> -inf) and b (1 + rho)
  (k -> +inf); no arbitrage needs both <= 2, i.e. **b (1 + |rho|) <= 2**, the exact form enforced here. (The
  often quoted b (1 + |rho|) <= 4/T is SVI written in implied *variance* sigma^2 = w/T with Rogers-Tehranchi's
  slope bound 4; in total variance the sharp asymptotic bound is Lee's 2, and g >= 0 at |k| -> inf needs it
  anyway: g tends to 1/4 - s^2/16 on a wing of slope s.)
* butterfly (Gatheral-Jacquier 2014): the risk-neutral density of ln(S_T/F) is
  p(k) = g(k) / sqrt(2 pi w) exp(-d_-^2 / 2), d_- = -k/sqrt(w) - sqrt(w)/2, with

      g(k) = (1 - k w'/(2 w))^2 - w'^2/4 (1/w + 1/4) + w''/2,

  so the smile is free of butterfly arbitrage iff g >= 0 everywhere (with the wing bound above).

Calibration (`calibrate_svi`) fits implied vols by weighted least squares in two stages. (1) The quasi-explicit
reduction of Zeliade (De Marco-Martini 2009): for fixed (m, sigma), with y = (k - m)/sigma, w is linear in
(a, u, v), u = b sigma (1 + rho), v = b sigma (1 - rho), and Lee's bound is the box u, v in [0, 2 sigma]; the inner
bounded linear least squares is solved exactly (scipy `lsq_linear`) and the outer 2-D problem by a coarse grid then
Nelder-Mead. (2) SLSQP on all five parameters, minimising the weighted squared implied-vol residuals subject to
admissibility, b (1 +- rho) <= 2 and g(k_j) >= 0 on a k-grid; g is then evaluated on a 10x denser and wider grid,
any point where it is still negative joins the constraint grid and SLSQP runs again (a few rounds at most), so
the returned smile has g >= 0 to rounding on the whole check range (reported in `SviFit.min_g`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import optimize

__all__ = [
    "LEE_BOUND",
    "SviFit",
    "SviParams",
    "calibrate_svi",
    "default_k_grid",
    "density_from_w",
    "g_from_w",
    "svi_derivatives",
    "svi_total_variance",
]

#: Lee's bound on the asymptotic slope of total variance in k (both wings).
LEE_BOUND = 2.0
#: SLSQP keeps g at least this far above 0 on its grid, so g between grid points stays >= 0 to rounding.
G_MARGIN = 1e-7
_SIGMA_MIN = 1e-4
_RHO_MAX = 0.9999


def svi_total_variance(k: Any, a: Any, b: Any, rho: Any, m: Any, sigma: Any) -> np.ndarray:
    """Raw SVI total variance w(k); k and the five parameters broadcast together (numpy float64)."""
    d = np.asarray(k, dtype=np.float64) - m
    return a + b * (rho * d + np.sqrt(d * d + sigma * sigma))


def svi_derivatives(k: Any, a: Any, b: Any, rho: Any, m: Any, sigma: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(w, dw/dk, d2w/dk2) of raw SVI, analytic, broadcast like `svi_total_variance`."""
    d = np.asarray(k, dtype=np.float64) - m
    s = np.sqrt(d * d + sigma * sigma)
    w = a + b * (rho * d + s)
    w1 = b * (rho + d / s)
    w2 = b * sigma * sigma / (s * s * s)
    return w, w1, w2


def g_from_w(k: Any, w: Any, w1: Any, w2: Any) -> np.ndarray:
    """Gatheral's g(k) from any smile's (w, w', w''): >= 0 everywhere iff no butterfly arbitrage.

    NaN where w <= 0 (the density in k is not defined there by this formula).
    """
    k, w, w1, w2 = (np.asarray(x, dtype=np.float64) for x in (k, w, w1, w2))
    with np.errstate(divide="ignore", invalid="ignore"):
        g = (1.0 - k * w1 / (2.0 * w)) ** 2 - 0.25 * w1 * w1 * (1.0 / w + 0.25) + 0.5 * w2
    return np.where(w > 0.0, g, np.nan)


def density_from_w(k: Any, w: Any, w1: Any, w2: Any) -> np.ndarray:
    """Risk-neutral density of X = ln(S_T/F) at k: g(k) / sqrt(2 pi w) exp(-d_-^2/2), d_- = -k/sqrt(w) - sqrt(w)/2.

    The density of S_T in strike units is this divided by K (= F e^k); it integrates to 1 over k when the
    smile is arbitrage-free.
    """
    k = np.asarray(k, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    g = g_from_w(k, w, w1, w2)
    with np.errstate(divide="ignore", invalid="ignore"):
        sw = np.sqrt(w)
        dm = -k / sw - 0.5 * sw
        return g / np.sqrt(2.0 * math.pi * w) * np.exp(-0.5 * dm * dm)


def default_k_grid(theta: float, k_data: Any = None, n: int = 801) -> np.ndarray:
    """The k-grid on which a smile is checked for butterfly arbitrage: symmetric, half-width
    max(1.5, 10 sqrt(theta), 1.5 max|k_data|), theta the ATM total variance (ten ATM standard deviations
    cover every strike a market quotes; 1.5 in k is e^{+-1.5}, 22% to 448% of the forward)."""
    half = max(1.5, 10.0 * math.sqrt(max(float(theta), 0.0)))
    if k_data is not None and np.size(k_data):
        half = max(half, 1.5 * float(np.nanmax(np.abs(np.asarray(k_data, dtype=np.float64)))))
    return np.linspace(-half, half, n)


@dataclass(frozen=True)
class SviParams:
    """Raw SVI parameters of one expiry, in total variance (not implied variance): see the module docstring."""

    a: float
    b: float
    rho: float
    m: float
    sigma: float

    def __post_init__(self) -> None:
        for name in ("a", "b", "rho", "m", "sigma"):
            v = getattr(self, name)
            if not isinstance(v, int | float | np.floating | np.integer) or not math.isfinite(float(v)):
                raise ValueError(f"{name}: must be a finite number, got {v!r}")
            object.__setattr__(self, name, float(v))
        if self.b < 0.0:
            raise ValueError(f"b: must be >= 0, got {self.b}")
        if not abs(self.rho) < 1.0:
            raise ValueError(f"rho: must satisfy |rho| < 1, got {self.rho}")
        if not self.sigma > 0.0:
            raise ValueError(f"sigma: must be > 0, got {self.sigma}")
        if self.min_variance < -1e-12:
            raise ValueError(f"a: a + b sigma sqrt(1 - rho^2) must be >= 0 (w >= 0), got {self.min_variance:.6g}")

    @property
    def min_variance(self) -> float:
        """min_k w(k) = a + b sigma sqrt(1 - rho^2)."""
        return self.a + self.b * self.sigma * math.sqrt(1.0 - self.rho * self.rho)

    @property
    def wing_slopes(self) -> tuple[float, float]:
        """Asymptotic slopes of w: (b (1 - rho) as k -> -inf, b (1 + rho) as k -> +inf)."""
        return self.b * (1.0 - self.rho), self.b * (1.0 + self.rho)

    @property
    def lee_ok(self) -> bool:
        """Lee's moment bound b (1 + |rho|) <= 2 (both wing slopes of w at most 2)."""
        return max(self.wing_slopes) <= LEE_BOUND + 1e-12

    def as_tuple(self) -> tuple[float, float, float, float, float]:
        return self.a, self.b, self.rho, self.m, self.sigma

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SviParams:
        return cls(**{name: float(d[name]) for name in ("a", "b", "rho", "m", "sigma")})

    def total_variance(self, k: Any) -> np.ndarray:
        return svi_total_variance(k, *self.as_tuple())

    def derivatives(self, k: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return svi_derivatives(k, *self.as_tuple())

    def implied_vol(self, k: Any, T: float) -> np.ndarray:
        """sigma_BS(k) = sqrt(w(k)/T)."""
        return np.sqrt(np.maximum(self.total_variance(k), 0.0) / T)

    def g(self, k: Any) -> np.ndarray:
        """Gatheral's g(k) (analytic derivatives)."""
        k = np.asarray(k, dtype=np.float64)
        return g_from_w(k, *self.derivatives(k))

    def density(self, k: Any) -> np.ndarray:
        """Risk-neutral density of ln(S_T/F) at k (divide by K for the density in strike)."""
        k = np.asarray(k, dtype=np.float64)
        return density_from_w(k, *self.derivatives(k))


@dataclass(frozen=True)
class SviFit:
    """Result of `calibrate_svi`: the parameters, fit quality in implied vol, and the butterfly check.

    rmse and max_abs_error are unweighted, in vol (0.01 = 1 vol point). min_g / k_min_g: the minimum of g over
    the check grid (refined by a bounded scalar search around the grid minimum) and where it is.
    """

    params: SviParams
    rmse: float
    max_abs_error: float
    min_g: float
    k_min_g: float
    k_check: tuple[float, float]
    arbitrage_free: bool
    success: bool
    message: str


# --------------------------------------------------------------------------------------------------------------
# Stage 1: quasi-explicit (Zeliade) initial guess
# --------------------------------------------------------------------------------------------------------------


def _inner(k: np.ndarray, w: np.ndarray, wt: np.ndarray, m: float, sigma: float) -> tuple[float, np.ndarray]:
    """Best (a, u, v) for fixed (m, sigma) by bounded linear least squares in w; returns (objective, x)."""
    y = (k - m) / sigma
    r = np.sqrt(y * y + 1.0)
    X = np.column_stack([np.ones_like(y), 0.5 * (r + y), 0.5 * (r - y)])
    hi = 2.0 * LEE_BOUND * 0.5 * sigma  # u, v <= 2 sigma  <=>  b (1 +- rho) <= 2
    wmax = max(float(np.max(w)), 1e-12)
    res = optimize.lsq_linear(X * wt[:, None], w * wt, bounds=([0.0, 0.0, 0.0], [wmax, hi, hi]), method="bvls")
    return float(np.sum(res.fun**2)), res.x


def _from_quasi(x: np.ndarray, m: float, sigma: float) -> np.ndarray:
    a, u, v = (float(t) for t in x)
    bs = 0.5 * (u + v)
    b = bs / sigma
    rho = (u - v) / (u + v) if u + v > 0.0 else 0.0
    return np.array([a, b, float(np.clip(rho, -_RHO_MAX, _RHO_MAX)), m, sigma])


def _quasi_explicit(k: np.ndarray, w: np.ndarray, wt: np.ndarray) -> np.ndarray:
    span = max(float(k.max() - k.min()), 0.05)
    ms = np.linspace(float(k.min()) - 0.25 * span, float(k.max()) + 0.25 * span, 17)
    sigmas = np.geomspace(0.005, max(1.0, span), 13)
    best = (math.inf, 0.0, 0.1)
    for m in ms:
        for s in sigmas:
            f, _ = _inner(k, w, wt, float(m), float(s))
            if f < best[0]:
                best = (f, float(m), float(s))

    def outer(z: np.ndarray) -> float:
        return _inner(k, w, wt, float(z[0]), math.exp(float(z[1])))[0]

    lo_m, hi_m = float(ms[0]) - span, float(ms[-1]) + span
    res = optimize.minimize(
        outer,
        np.array([best[1], math.log(best[2])]),
        method="Nelder-Mead",
        bounds=[(lo_m, hi_m), (math.log(_SIGMA_MIN), math.log(5.0))],
        options={"xatol": 1e-7, "fatol": 1e-16, "maxiter": 400},
    )
    m, s = float(res.x[0]), math.exp(float(res.x[1]))
    return _from_quasi(_inner(k, w, wt, m, s)[1], m, s)


# --------------------------------------------------------------------------------------------------------------
# Stage 2: SLSQP with the arbitrage constraints
# --------------------------------------------------------------------------------------------------------------


def _min_g(p: np.ndarray, grid: np.ndarray) -> tuple[float, float]:
    """Minimum of g over the grid, polished by a bounded scalar search between the neighbours of the argmin."""
    g = g_from_w(grid, *svi_derivatives(grid, *p))
    if not np.any(np.isfinite(g)):
        return math.nan, math.nan
    i = int(np.nanargmin(g))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    best_k, best_g = float(grid[i]), float(g[i])
    if hi > lo:
        res = optimize.minimize_scalar(
            lambda x: float(g_from_w(x, *svi_derivatives(x, *p))),
            bounds=(lo, hi),
            method="bounded",
            options={"xatol": 1e-10},
        )
        if res.success and float(res.fun) < best_g:
            best_k, best_g = float(res.x), float(res.fun)
    return best_g, best_k


def _slsqp(
    x0: np.ndarray,
    k: np.ndarray,
    vol: np.ndarray,
    wt: np.ndarray,
    T: float,
    grid: np.ndarray,
    arbitrage_free: bool,
    bounds: list[tuple[float, float]],
) -> optimize.OptimizeResult:
    norm = 1e4 / float(np.sum(wt * wt))  # weighted mean squared error in vol points^2

    def objective(p: np.ndarray) -> float:
        w = svi_total_variance(k, *p)
        model = np.sqrt(np.maximum(w, 1e-16) / T)
        r = wt * (model - vol)
        return float(norm * np.dot(r, r))

    def jac(p: np.ndarray) -> np.ndarray:
        a, b, rho, m, sig = p
        d = k - m
        s = np.sqrt(d * d + sig * sig)
        w = a + b * (rho * d + s)
        wc = np.maximum(w, 1e-16)
        model = np.sqrt(wc / T)
        dmodel_dw = np.where(w > 1e-16, 0.5 / (model * T), 0.0)
        dw = np.stack([np.ones_like(d), rho * d + s, b * d, -b * (rho + d / s), b * sig / s])
        r = wt * (model - vol)
        return 2.0 * norm * (dw * (wt * dmodel_dw)) @ r

    cons: list[dict[str, Any]] = [
        {"type": "ineq", "fun": lambda p: np.array([p[0] + p[1] * p[4] * math.sqrt(max(1.0 - p[2] ** 2, 0.0))])},
        {"type": "ineq", "fun": lambda p: np.array([LEE_BOUND - p[1] * (1.0 + p[2]), LEE_BOUND - p[1] * (1.0 - p[2])])},
    ]
    if arbitrage_free:
        cons.append(
            {
                "type": "ineq",
                "fun": lambda p: np.nan_to_num(g_from_w(grid, *svi_derivatives(grid, *p)) - G_MARGIN, nan=-1.0),
            }
        )
    return optimize.minimize(
        objective,
        x0,
        jac=jac,
        method="SLSQP",
        bounds=bounds,
        constraints=cons,
        options={"ftol": 1e-12, "maxiter": 500},
    )


def _feasible(p: np.ndarray, check: np.ndarray, arbitrage_free: bool) -> bool:
    a, b, rho, _m, sig = p
    if b < 0 or abs(rho) >= 1 or sig <= 0 or a + b * sig * math.sqrt(1 - rho * rho) < -1e-12:
        return False
    if b * (1 + abs(rho)) > LEE_BOUND + 1e-9:
        return False
    return not arbitrage_free or _min_g(p, check)[0] >= -1e-10


def calibrate_svi(
    k: Any,
    vol: Any,
    T: float,
    *,
    weights: Any = None,
    arbitrage_free: bool = True,
    k_grid: Any = None,
    x0: SviParams | None = None,
    max_rounds: int = 4,
) -> SviFit:
    """Fit raw SVI to implied vols of one expiry, free of butterfly arbitrage unless `arbitrage_free=False`
    (admissibility and Lee's bound b (1 + |rho|) <= 2 are imposed either way).

    k: log-moneyness ln(K/F); vol: implied vols (decimal); T: years; weights: per point, multiplying the vol
    residual (e.g. 1 / bid-ask spread in vol; default equal). The objective is sum (weight (vol_model - vol))^2.
    k_grid: where g >= 0 is imposed (default `default_k_grid(theta, k)` with the data's ATM total variance);
    the final check runs on a grid 10x denser and 25% wider. Needs at least 5 finite points.
    Raises ValueError("field: reason") on bad input; an optimiser that cannot satisfy the constraints is
    reported in `success` / `message`, not raised.
    """
    k = np.asarray(k, dtype=np.float64).ravel()
    vol = np.asarray(vol, dtype=np.float64).ravel()
    if k.shape != vol.shape:
        raise ValueError(f"vol: shape {vol.shape} does not match k {k.shape}")
    wt = np.ones_like(k) if weights is None else np.broadcast_to(np.asarray(weights, dtype=np.float64), k.shape)
    if not (isinstance(T, int | float | np.floating) and math.isfinite(T) and T > 0):
        raise ValueError(f"T: must be a finite number > 0, got {T!r}")
    ok = np.isfinite(k) & np.isfinite(vol) & (vol > 0) & np.isfinite(wt) & (wt > 0)
    if int(ok.sum()) < 5:
        raise ValueError(f"vol: need at least 5 finite positive points to fit 5 SVI parameters, got {int(ok.sum())}")
    k, vol, wt = k[ok], vol[ok], np.array(wt[ok]) / float(np.mean(wt[ok]))
    w_mkt = vol * vol * T

    theta = float(np.interp(0.0, *_sorted(k, w_mkt)))
    grid = default_k_grid(theta, k) if k_grid is None else np.sort(np.asarray(k_grid, dtype=np.float64).ravel())
    half = 1.25 * max(abs(grid[0]), abs(grid[-1]))
    check = np.linspace(-half, half, 10 * grid.size + 1)
    span = max(float(k.max() - k.min()), 0.05)
    bounds = [
        (-float(w_mkt.max()), 2.0 * float(w_mkt.max())),
        (0.0, LEE_BOUND),
        (-_RHO_MAX, _RHO_MAX),
        (float(k.min()) - 2.0 * span, float(k.max()) + 2.0 * span),
        (_SIGMA_MIN, 5.0),
    ]

    def run(x_start: np.ndarray) -> tuple[float, np.ndarray, str, bool, bool]:
        """SLSQP from x_start, re-imposing g >= 0 where the dense check still finds it negative."""
        xs = np.array([float(np.clip(v, lo, hi)) for v, (lo, hi) in zip(x_start, bounds, strict=True)])
        cgrid = grid
        res = None
        for _ in range(max(max_rounds, 1)):
            res = _slsqp(xs, k, vol, wt, T, cgrid, arbitrage_free, bounds)
            xs = res.x
            if not arbitrage_free:
                break
            g_min, k_at = _min_g(xs, check)
            if g_min >= 0.0:
                break
            # g dipped below 0 between constraint points: impose it where it is low, and at the exact minimum.
            gc = g_from_w(check, *svi_derivatives(check, *xs))
            cgrid = np.union1d(cgrid, np.append(check[~(gc >= G_MARGIN)], k_at))
        assert res is not None
        # SLSQP status 8 ("positive directional derivative in linesearch") is how it stops at a constrained
        # optimum when rounding stalls the line search; feasibility is checked separately.
        return float(res.fun), xs, str(res.message), res.status in (0, 8), _feasible(xs, check, arbitrage_free)

    starts = ([] if x0 is None else [np.array(x0.as_tuple())]) + [_quasi_explicit(k, w_mkt, wt / (2.0 * vol * T))]
    runs = [run(x) for x in starts]
    if not any(r[3] and r[4] for r in runs):
        # A start feasible by construction (a flat smile: g = 1), should the data-driven ones fail.
        runs.append(run(np.array([float(np.mean(w_mkt)), 0.0, 0.0, 0.0, 0.1])))
    feasible = [r for r in runs if r[4]]
    if feasible:
        f, p, message, success, _ = min(feasible, key=lambda r: r[0])
        best = (f, p, message, success)
    else:
        p = np.array([float(np.mean(w_mkt)), 0.0, 0.0, 0.0, 0.1])
        best = (math.inf, p, "no feasible fit found; returned a flat smile", False)
    _, p, message, success = best
    a, b, rho, m, sig = (float(v) for v in p)
    a = max(a, -b * sig * math.sqrt(1.0 - rho * rho))  # clip rounding below the admissibility boundary
    params = SviParams(a, b, rho, m, sig)
    model = params.implied_vol(k, T)
    err = model - vol
    min_g, k_min_g = _min_g(np.array(params.as_tuple()), check)
    return SviFit(
        params=params,
        rmse=float(np.sqrt(np.mean(err * err))),
        max_abs_error=float(np.max(np.abs(err))),
        min_g=min_g,
        k_min_g=k_min_g,
        k_check=(float(check[0]), float(check[-1])),
        arbitrage_free=arbitrage_free,
        success=success,
        message=message,
    )


def _sorted(k: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(k)
    return k[order], w[order]
