"""Multi-expiry volatility surface: smile slices, calendar-arbitrage-free interpolation in T, arbitrage report.

Conventions as in `tradesys.quant.vol`: k = ln(K/F(T)) log-moneyness against the forward of the expiry, total
variance w(k, T) = sigma_BS(k, T)^2 T, T in years. With deterministic rates and proportional dividends, a surface
is free of calendar arbitrage iff w(k, T) is non-decreasing in T at every fixed k, and free of butterfly arbitrage
iff every slice has g(k) >= 0 (Gatheral-Jacquier 2014).

How `VolSurface` turns fitted slices w_1, ..., w_N (T_1 < ... < T_N) into w(k, T) for every T > 0:

1. **Calendar envelope.** Slice i is replaced by W_i(k) = max_{j <= i} w_j(k). Where fitted slices cross (calendar
   arbitrage between them, listed by the report) this lifts the later slice to the earlier one; elsewhere W_i =
   w_i. The envelope keeps butterfly freedom: undiscounted forward-normalised call prices are increasing in w, so
   W_i is the maximum of call-price curves, and a maximum of convex functions of the strike is convex.
2. **Between expiries** (T_i < T < T_{i+1}), Gatheral-Jacquier (2014) interpolation of prices at fixed
   k: with theta_j = W_j(0) the ATM total variances and theta_T linear in T between them, the normalised price is
   c_T(k) = a c_i(k) + (1 - a) c_{i+1}(k), a = (sqrt(theta_{i+1}) - sqrt(theta_T)) / (sqrt(theta_{i+1}) -
   sqrt(theta_i)) (linear in T when theta_i = theta_{i+1}), and w(k, T) is its implied total variance (Jäckel's
   `implied_normalised_vol`, to machine precision). A convex combination of convex prices is convex (no
   butterfly arbitrage) and, as W_i <= W_{i+1} and a falls with T, dw/dT >= 0 (no calendar arbitrage). It runs on
   out-of-the-money normalised prices (puts for k < 0, calls for k >= 0), so the wings do not cancel; where both
   prices underflow (beyond ~37 standard deviations) the combination falls back to a W_i + (1 - a) W_{i+1}, which
   keeps dw/dT >= 0.
3. **Before the first expiry** (0 < T < T_1): w(k, T) = (T/T_1) W_1(k), constant implied vol at fixed k. Also
   arbitrage-free: in lambda = T/T_1, g of lambda W_1 is A + lambda B - lambda^2 C with A, C >= 0, a concave function
   that is >= 0 at lambda = 0 and 1, hence on [0, 1]; the wing slopes shrink by lambda.
4. **After the last expiry** (T > T_N): w(k, T) = W_N(k) + (T - T_N) v, v >= 0 the ATM forward variance of the
   last interval (theta_N - theta_{N-1}) / (T_N - T_{N-1}), or theta_N / T_N with one slice. dw/dT = v >= 0 (no
   calendar arbitrage) and the smile flattens in vol as T grows; adding a constant to w keeps the wing slopes
   (Lee) but g >= 0 is not guaranteed in general, so treat far extrapolation with care.

The forward curve F(T): ln F linear in T between expiries (piecewise-constant carry), from the spot at T = 0
before the first expiry when a spot is given (else flat at F_1), and the last segment's carry after the last.

The arbitrage report (`VolSurface.arbitrage_report`) checks the fitted slices themselves, before the envelope:
butterfly (min g per expiry, where it is reached, the k-ranges where g < -tol, on the check grid
`default_k_grid(theta_i)` refined by a bounded search at the minimum), Lee's wing bound (slopes of w <= 2: exact
asymptotic slopes for SVI, the slopes at the ends of the check grid otherwise) and calendar arbitrage (pairs of
consecutive expiries and the k-ranges where w_{i+1}(k) < w_i(k) - tol, on the later slice's check grid). The chain
fitter adds the checks of the input quotes (`QuoteViolation`).
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np
from scipy import optimize

from tradesys.quant.options.errors import OptionError
from tradesys.quant.options.implied_vol import implied_normalised_vol, normalised_black
from tradesys.quant.vol.sabr import SabrParams, sabr_vol
from tradesys.quant.vol.svi import LEE_BOUND, SviParams, default_k_grid, g_from_w, svi_derivatives

__all__ = [
    "ArbitrageReport",
    "ButterflyCheck",
    "CalendarViolation",
    "QuoteViolation",
    "SabrSlice",
    "SmileSlice",
    "SviSlice",
    "VolSurface",
    "WingCheck",
    "slice_from_dict",
]

#: Default tolerances of the arbitrage report: g units, total variance, slope of w.
BUTTERFLY_TOL = 1e-6
CALENDAR_TOL = 1e-7
WING_TOL = 1e-9
_FD_STEP = 1e-4


# --------------------------------------------------------------------------------------------------------------
# Slices
# --------------------------------------------------------------------------------------------------------------


class SmileSlice(ABC):
    """One expiry's smile as total variance in log-moneyness: w(k) = sigma_BS(F e^k)^2 T.

    k_range: the log-moneyness range of the quotes the slice was fitted to, if any (widens the check grid).
    """

    model: ClassVar[str]
    T: float
    forward: float
    k_range: tuple[float, float] | None

    @abstractmethod
    def total_variance(self, k: Any) -> np.ndarray: ...

    @abstractmethod
    def params_dict(self) -> dict[str, float]: ...

    def derivatives(self, k: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(w, w', w''); central differences with step 1e-4 unless the model has them in closed form."""
        k = np.asarray(k, dtype=np.float64)
        h = _FD_STEP
        w0, wp, wm = self.total_variance(k), self.total_variance(k + h), self.total_variance(k - h)
        return w0, (wp - wm) / (2.0 * h), (wp - 2.0 * w0 + wm) / (h * h)

    def g(self, k: Any) -> np.ndarray:
        """Gatheral's g(k): >= 0 everywhere iff the slice has no butterfly arbitrage."""
        k = np.asarray(k, dtype=np.float64)
        return g_from_w(k, *self.derivatives(k))

    def implied_vol(self, k: Any) -> np.ndarray:
        return np.sqrt(np.maximum(self.total_variance(k), 0.0) / self.T)

    def vol(self, K: Any) -> np.ndarray:
        """Implied vol at strikes K (price units) of this expiry."""
        return self.implied_vol(np.log(np.asarray(K, dtype=np.float64) / self.forward))

    @property
    def atm_total_variance(self) -> float:
        return float(self.total_variance(0.0))

    def check_grid(self) -> np.ndarray:
        """`default_k_grid` of the ATM total variance, widened to 1.5x the quotes' k-range when known."""
        kr = getattr(self, "k_range", None)
        return default_k_grid(self.atm_total_variance, None if kr is None else np.asarray(kr, dtype=np.float64))

    def wing_slopes(self, grid: np.ndarray) -> tuple[float, float, bool]:
        """(left, right, asymptotic): slopes of w in the wings, -dw/dk at grid[0] and dw/dk at grid[-1]."""
        _, w1, _ = self.derivatives(np.array([grid[0], grid[-1]]))
        return float(-w1[0]), float(w1[1]), False

    def to_dict(self) -> dict[str, Any]:
        kr = getattr(self, "k_range", None)
        return {
            "model": self.model,
            "T": float(self.T),
            "forward": float(self.forward),
            "params": self.params_dict(),
            "k_range": None if kr is None else [float(kr[0]), float(kr[1])],
        }


def _check_slice(sl: Any) -> None:
    T, forward = sl.T, sl.forward
    if not (isinstance(T, int | float | np.floating) and math.isfinite(T) and T > 0):
        raise ValueError(f"T: must be a finite number > 0, got {T!r}")
    if not (isinstance(forward, int | float | np.floating) and math.isfinite(forward) and forward > 0):
        raise ValueError(f"forward: must be a finite number > 0, got {forward!r}")
    object.__setattr__(sl, "T", float(T))
    object.__setattr__(sl, "forward", float(forward))
    if sl.k_range is not None:
        lo, hi = (float(v) for v in sl.k_range)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise ValueError(f"k_range: must be finite (lo, hi) with lo <= hi, got {sl.k_range!r}")
        object.__setattr__(sl, "k_range", (lo, hi))


@dataclass(frozen=True)
class SviSlice(SmileSlice):
    """A raw SVI slice (parameters in total variance)."""

    T: float
    forward: float
    params: SviParams
    k_range: tuple[float, float] | None = None
    model: ClassVar[str] = "svi"

    def __post_init__(self) -> None:
        _check_slice(self)

    def total_variance(self, k: Any) -> np.ndarray:
        return self.params.total_variance(k)

    def derivatives(self, k: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return svi_derivatives(k, *self.params.as_tuple())

    def wing_slopes(self, grid: np.ndarray) -> tuple[float, float, bool]:
        left, right = self.params.wing_slopes
        return left, right, True

    def params_dict(self) -> dict[str, float]:
        return self.params.to_dict()


@dataclass(frozen=True)
class SabrSlice(SmileSlice):
    """A SABR slice: w(k) = sigma_Hagan(F e^k; F, T)^2 T (NaN where the expansion is invalid)."""

    T: float
    forward: float
    params: SabrParams
    obloj: bool = False
    k_range: tuple[float, float] | None = None
    model: ClassVar[str] = "sabr"

    def __post_init__(self) -> None:
        _check_slice(self)

    def total_variance(self, k: Any) -> np.ndarray:
        p = self.params
        K = self.forward * np.exp(np.asarray(k, dtype=np.float64))
        v = sabr_vol(K, self.forward, self.T, p.alpha, p.beta, p.rho, p.nu, obloj=self.obloj)
        return v * v * self.T

    def params_dict(self) -> dict[str, float]:
        return self.params.to_dict()

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "obloj": bool(self.obloj)}


def slice_from_dict(d: dict[str, Any]) -> SmileSlice:
    """Inverse of `SmileSlice.to_dict`."""
    model = d.get("model")
    T, F, p = float(d["T"]), float(d["forward"]), dict(d["params"])
    kr = d.get("k_range")
    k_range = None if kr is None else (float(kr[0]), float(kr[1]))
    if model == "svi":
        return SviSlice(T, F, SviParams.from_dict(p), k_range=k_range)
    if model == "sabr":
        return SabrSlice(T, F, SabrParams.from_dict(p), obloj=bool(d.get("obloj", False)), k_range=k_range)
    raise ValueError(f"model: unknown slice model {model!r} (expected 'svi' or 'sabr')")


# --------------------------------------------------------------------------------------------------------------
# Arbitrage report
# --------------------------------------------------------------------------------------------------------------


def _num(x: Any) -> float | None:
    """A JSON-safe float: None for NaN/inf."""
    v = float(x)
    return v if math.isfinite(v) else None


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return _num(obj)
    return obj


def _runs(mask: np.ndarray, grid: np.ndarray) -> list[tuple[float, float]]:
    """Contiguous runs of True in mask as (grid[first], grid[last]) ranges."""
    if not mask.any():
        return []
    m = np.concatenate([[False], mask, [False]]).astype(np.int8)
    starts = np.flatnonzero(np.diff(m) == 1)
    ends = np.flatnonzero(np.diff(m) == -1) - 1
    return [(float(grid[s]), float(grid[e])) for s, e in zip(starts, ends, strict=True)]


@dataclass(frozen=True)
class ButterflyCheck:
    """Butterfly check of one expiry: min g over [k_lo, k_hi], where, and the k-ranges where g < -tol."""

    T: float
    min_g: float
    k_at_min: float
    negative_ranges: list[tuple[float, float]]
    k_lo: float
    k_hi: float
    ok: bool


@dataclass(frozen=True)
class WingCheck:
    """Lee's bound on one expiry: wing slopes of w (left = -dw/dk as k -> -inf, right = dw/dk) at most 2.

    asymptotic: True when the slopes are the exact limits (SVI), False when measured at the check grid's ends.
    """

    T: float
    left_slope: float
    right_slope: float
    bound: float
    asymptotic: bool
    ok: bool


@dataclass(frozen=True)
class CalendarViolation:
    """Total variance falls from expiry T1 to the later T2 on k in [k_lo, k_hi], by at most max_decrease."""

    T1: float
    T2: float
    k_lo: float
    k_hi: float
    max_decrease: float


@dataclass(frozen=True)
class QuoteViolation:
    """Static-arbitrage violation in the input quotes of one expiry, calls and puts checked separately.

    kind: "monotonicity" (a call dearer at a higher strike, a put at a lower one), "slope" (a call or put spread
    worth more than the discounted strike width, e^{-rT} (K2 - K1)) or "convexity" (a butterfly on
    K1 < K2 < K3 priced below 0). option_type: "C" or "P". amount: the violation on mid prices (price units, > 0).
    tradable: the violation survives buying at the ask and selling at the bid (a real arbitrage, not noise).
    """

    T: float
    kind: str
    option_type: str
    strikes: tuple[float, ...]
    amount: float
    tradable: bool


@dataclass
class ArbitrageReport:
    """Arbitrage report of a fitted surface (and of the chain's input quotes when built by `fit_chain`).

    ok = surface_ok and quotes_ok. surface_ok: every slice has min g >= -tol and wing slopes <= 2, and no pair of
    consecutive fitted slices crosses (calendar). quotes_ok: no monotonicity/slope/convexity violation in the
    mid quotes (`QuoteViolation.tradable` says which ones survive the bid/ask).
    """

    butterfly: list[ButterflyCheck]
    wings: list[WingCheck]
    calendar: list[CalendarViolation]
    quotes: list[QuoteViolation] = field(default_factory=list)
    tolerances: dict[str, float] = field(default_factory=dict)

    @property
    def surface_ok(self) -> bool:
        return all(b.ok for b in self.butterfly) and all(w.ok for w in self.wings) and not self.calendar

    @property
    def quotes_ok(self) -> bool:
        return not self.quotes

    @property
    def ok(self) -> bool:
        return self.surface_ok and self.quotes_ok

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable (NaN/inf become None)."""
        return _jsonable(
            {
                "ok": self.ok,
                "surface_ok": self.surface_ok,
                "quotes_ok": self.quotes_ok,
                "butterfly": [asdict(b) for b in self.butterfly],
                "wings": [asdict(w) for w in self.wings],
                "calendar": [asdict(c) for c in self.calendar],
                "quotes": [asdict(q) for q in self.quotes],
                "tolerances": dict(self.tolerances),
            }
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArbitrageReport:
        def f(x: Any) -> float:
            return math.nan if x is None else float(x)

        return cls(
            butterfly=[
                ButterflyCheck(
                    f(b["T"]),
                    f(b["min_g"]),
                    f(b["k_at_min"]),
                    [(f(lo), f(hi)) for lo, hi in b["negative_ranges"]],
                    f(b["k_lo"]),
                    f(b["k_hi"]),
                    bool(b["ok"]),
                )
                for b in d.get("butterfly", [])
            ],
            wings=[
                WingCheck(
                    f(w["T"]),
                    f(w["left_slope"]),
                    f(w["right_slope"]),
                    f(w["bound"]),
                    bool(w["asymptotic"]),
                    bool(w["ok"]),
                )
                for w in d.get("wings", [])
            ],
            calendar=[
                CalendarViolation(f(c["T1"]), f(c["T2"]), f(c["k_lo"]), f(c["k_hi"]), f(c["max_decrease"]))
                for c in d.get("calendar", [])
            ],
            quotes=[
                QuoteViolation(
                    f(q["T"]),
                    str(q["kind"]),
                    str(q["option_type"]),
                    tuple(f(s) for s in q["strikes"]),
                    f(q["amount"]),
                    bool(q["tradable"]),
                )
                for q in d.get("quotes", [])
            ],
            tolerances={str(k): f(v) for k, v in d.get("tolerances", {}).items()},
        )


def butterfly_check(sl: SmileSlice, grid: np.ndarray | None = None, tol: float = BUTTERFLY_TOL) -> ButterflyCheck:
    """min g of a slice over its check grid (polished by a bounded search at the grid minimum)."""
    grid = sl.check_grid() if grid is None else np.asarray(grid, dtype=np.float64)
    g = sl.g(grid)
    bad = ~(g >= -tol)  # NaN (w <= 0, or an invalid SABR expansion) counts as a violation
    if not np.any(np.isfinite(g)):
        return ButterflyCheck(
            sl.T, math.nan, math.nan, [(float(grid[0]), float(grid[-1]))], float(grid[0]), float(grid[-1]), False
        )
    i = int(np.nanargmin(g))
    k_min, g_min = float(grid[i]), float(g[i])
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    if hi > lo:
        res = optimize.minimize_scalar(
            lambda x: float(sl.g(np.array(x))), bounds=(lo, hi), method="bounded", options={"xatol": 1e-10}
        )
        if res.success and math.isfinite(res.fun) and float(res.fun) < g_min:
            k_min, g_min = float(res.x), float(res.fun)
    ranges = _runs(bad, grid)
    return ButterflyCheck(
        sl.T, g_min, k_min, ranges, float(grid[0]), float(grid[-1]), bool(g_min >= -tol and not bad.any())
    )


def wing_check(sl: SmileSlice, grid: np.ndarray | None = None, tol: float = WING_TOL) -> WingCheck:
    grid = sl.check_grid() if grid is None else np.asarray(grid, dtype=np.float64)
    left, right, asym = sl.wing_slopes(grid)
    ok = bool(left <= LEE_BOUND + tol and right <= LEE_BOUND + tol)
    return WingCheck(sl.T, left, right, LEE_BOUND, asym, ok)


def calendar_check(slices: Sequence[SmileSlice], tol: float = CALENDAR_TOL) -> list[CalendarViolation]:
    """Crossings of consecutive slices at fixed k: where w_{i+1}(k) < w_i(k) - tol on the later slice's grid."""
    out: list[CalendarViolation] = []
    for s1, s2 in itertools.pairwise(slices):
        grid = s2.check_grid()
        if s1.check_grid()[-1] > grid[-1]:
            grid = s1.check_grid()
        d = s1.total_variance(grid) - s2.total_variance(grid)
        for lo, hi in _runs(d > tol, grid):
            sel = (grid >= lo) & (grid <= hi)
            out.append(CalendarViolation(s1.T, s2.T, lo, hi, float(np.max(d[sel]))))
    return out


# --------------------------------------------------------------------------------------------------------------
# Surface
# --------------------------------------------------------------------------------------------------------------


class VolSurface:
    """Implied volatility surface from smile slices at increasing expiries; see the module docstring for the
    interpolation and extrapolation rules (free of calendar arbitrage by construction)."""

    def __init__(self, slices: Sequence[SmileSlice], spot: float | None = None) -> None:
        if not slices:
            raise ValueError("slices: need at least one expiry")
        sl = sorted(slices, key=lambda s: s.T)
        Ts = np.array([s.T for s in sl])
        if np.any(np.diff(Ts) <= 0):
            raise ValueError(f"slices: expiries must be distinct, got {Ts.tolist()}")
        if spot is not None and not (math.isfinite(spot) and spot > 0):
            raise ValueError(f"spot: must be a finite number > 0, got {spot!r}")
        self.slices: list[SmileSlice] = sl
        self.expiries: np.ndarray = Ts
        self.forwards: np.ndarray = np.array([s.forward for s in sl])
        self.spot: float | None = None if spot is None else float(spot)
        theta = np.array([s.atm_total_variance for s in sl])
        if not np.all(np.isfinite(theta) & (theta > 0)):
            raise ValueError(f"slices: ATM total variance must be finite and > 0, got {theta.tolist()}")
        self._theta = np.maximum.accumulate(theta)  # ATM of the calendar envelope
        if len(sl) >= 2:
            self._v_last = float((self._theta[-1] - self._theta[-2]) / (Ts[-1] - Ts[-2]))
        else:
            self._v_last = float(self._theta[-1] / Ts[-1])

    # ---- forward curve ---------------------------------------------------------------------------------------

    def forward(self, T: Any) -> np.ndarray:
        """F(T): ln F linear in T between expiries; from the spot (if given) before the first; last carry after."""
        T = np.asarray(T, dtype=np.float64)
        ts, lf = self.expiries, np.log(self.forwards)
        if self.spot is not None:
            ts, lf = np.concatenate([[0.0], ts]), np.concatenate([[math.log(self.spot)], lf])
        if ts.size == 1:
            return np.where(np.isfinite(T), float(self.forwards[0]), np.nan) + 0.0 * T
        out = np.interp(T, ts, lf)
        slope = (lf[-1] - lf[-2]) / (ts[-1] - ts[-2])
        out = np.where(ts[-1] < T, lf[-1] + slope * (T - ts[-1]), out)
        return np.where(np.isfinite(T), np.exp(out), np.nan)

    # ---- total variance --------------------------------------------------------------------------------------

    def _envelope(self, k: np.ndarray) -> np.ndarray:
        """W_i(k) = max_{j <= i} w_j(k), shape (n_expiries, k.size)."""
        w = np.stack([s.total_variance(k) for s in self.slices])
        return np.fmax.accumulate(w, axis=0)

    def total_variance(self, k: Any, T: Any) -> np.ndarray:
        """w(k, T) at log-moneyness k = ln(K/F(T)) and expiry T (arrays broadcast). 0 at T = 0; NaN for T < 0,
        non-finite input, or where a slice is invalid (e.g. an invalid SABR expansion)."""
        k, T = np.broadcast_arrays(np.asarray(k, dtype=np.float64), np.asarray(T, dtype=np.float64))
        shape = k.shape
        k, T = k.ravel(), T.ravel()
        out = np.full(k.shape, np.nan)
        valid = np.isfinite(k) & np.isfinite(T) & (T >= 0)
        out[valid & (T == 0)] = 0.0
        live = np.flatnonzero(valid & (T > 0))
        if live.size:
            out[live] = self._w(k[live], T[live])
        return out.reshape(shape)

    def _w(self, k: np.ndarray, T: np.ndarray) -> np.ndarray:
        Ts, th = self.expiries, self._theta
        W = self._envelope(k)
        cols = np.arange(k.size)
        n = Ts.size
        i = np.searchsorted(Ts, T, side="left")  # Ts[i-1] < T <= Ts[i]
        out = np.empty_like(k)
        exact = (i < n) & (Ts[np.minimum(i, n - 1)] == T)
        first = (i == 0) & ~exact
        last = i == n
        between = ~(exact | first | last)
        if exact.any():
            out[exact] = W[i[exact], cols[exact]]
        if first.any():
            out[first] = T[first] / Ts[0] * W[0, cols[first]]
        if last.any():
            out[last] = W[n - 1, cols[last]] + (T[last] - Ts[-1]) * self._v_last
        if between.any():
            j = i[between]
            c = cols[between]
            t0, t1 = Ts[j - 1], Ts[j]
            th0, th1 = th[j - 1], th[j]
            u = (T[between] - t0) / (t1 - t0)
            th_t = th0 + u * (th1 - th0)
            with np.errstate(invalid="ignore", divide="ignore"):
                a_sqrt = (np.sqrt(th1) - np.sqrt(th_t)) / (np.sqrt(th1) - np.sqrt(th0))
            a = np.where(th1 > th0 * (1.0 + 1e-12), a_sqrt, 1.0 - u)
            out[between] = _price_interpolate(k[between], W[j - 1, c], W[j, c], a)
        return out

    def implied_vol(self, k: Any, T: Any) -> np.ndarray:
        """sigma(k, T) = sqrt(w(k, T)/T) at log-moneyness k (NaN at T <= 0)."""
        k, T = np.broadcast_arrays(np.asarray(k, dtype=np.float64), np.asarray(T, dtype=np.float64))
        w = self.total_variance(k, T)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(T > 0, np.sqrt(w / T), np.nan)

    def vol(self, K: Any, T: Any) -> np.ndarray:
        """Implied vol at strike K (price units) and expiry T (years), k = ln(K/F(T)); arrays broadcast.
        NaN where K <= 0, T <= 0 or an input is not finite."""
        K, T = np.broadcast_arrays(np.asarray(K, dtype=np.float64), np.asarray(T, dtype=np.float64))
        with np.errstate(invalid="ignore", divide="ignore"):
            k = np.where(K > 0, np.log(np.where(K > 0, K, 1.0) / self.forward(T)), np.nan)
        return self.implied_vol(k, T)

    # ---- checks and serialisation ----------------------------------------------------------------------------

    def arbitrage_report(
        self,
        *,
        butterfly_tol: float = BUTTERFLY_TOL,
        calendar_tol: float = CALENDAR_TOL,
        wing_tol: float = WING_TOL,
    ) -> ArbitrageReport:
        """Butterfly, Lee-wing and calendar checks of the fitted slices (see the module docstring)."""
        return ArbitrageReport(
            butterfly=[butterfly_check(s, tol=butterfly_tol) for s in self.slices],
            wings=[wing_check(s, tol=wing_tol) for s in self.slices],
            calendar=calendar_check(self.slices, tol=calendar_tol),
            tolerances={"butterfly": butterfly_tol, "calendar": calendar_tol, "wing": wing_tol},
        )

    def to_dict(self) -> dict[str, Any]:
        return _jsonable({"spot": self.spot, "slices": [s.to_dict() for s in self.slices]})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VolSurface:
        return cls([slice_from_dict(s) for s in d["slices"]], spot=d.get("spot"))


def _price_interpolate(k: np.ndarray, w0: np.ndarray, w1: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Implied total variance of a c(k; w0) + (1 - a) c(k; w1), on out-of-the-money normalised prices."""
    x = -k  # Jäckel's x = ln(F/K)
    theta = np.where(k >= 0.0, 1.0, -1.0)
    with np.errstate(invalid="ignore"):
        b = a * normalised_black(x, np.sqrt(w0), theta) + (1.0 - a) * normalised_black(x, np.sqrt(w1), theta)
    s, codes = implied_normalised_vol(b, x, theta)
    lin = a * w0 + (1.0 - a) * w1
    good = (codes == OptionError.OK) & np.isfinite(s) & (b > 0.0)
    out = np.where(good, s * s, lin)
    return np.where(np.isfinite(w0) & np.isfinite(w1), out, np.nan)
