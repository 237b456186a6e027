"""Market impact: the square-root model, temporary + permanent, calibrated per symbol (pure: numpy, no Ray, no I/O).

Why: a flat cost (fee + slippage bps) charges a 20%-of-volume order the same per share as a 100-share one, so no
execution algorithm could ever beat a single market order in simulation. Real costs grow with size; the best
supported empirical law is that the price moves like the square root of the traded fraction of daily volume.

Model, for a fill of `q` shares of a symbol whose trailing average daily volume is `adv` shares and daily
log-return volatility is `sigma` (both from `ImpactParams`):

    temporary cost, a fraction of the reference price, paid by this fill only:
        half_spread + eta * sigma * sqrt(q / adv)
    permanent impact, a shift of the log price that every later trade in the symbol sees:
        +/- gamma * sigma * q / adv          (+ for a buy, - for a sell)

The square-root temporary term is the "square-root law" (Torre 1997, the Barra market impact model; Toth et al.
2011, "Anomalous price impact and the critical nature of liquidity in financial markets", Phys. Rev. X 1); the
permanent term is linear in size, as Almgren, Thum, Hauptmann and Li (2005, "Direct estimation of equity market
impact", Risk 18(7)) estimated it (their alpha = 1), without their turnover factor (Theta / V)^(1/4). The default
coefficients are their estimates, eta = 0.142 and gamma = 0.314; note that their temporary term has exponent
3/5 on the trading rate where this one has 1/2 on the fill's size.

Calibration (`calibrate`, `DailyCalibrator`): bars (BAR_SCHEMA; intraday bars aggregate to UTC days) give per
symbol and day the summed volume and the last close. Over the trailing `window` days: adv = mean daily volume,
sigma = sample standard deviation (ddof = 1) of the close-to-close log returns between those days. At least 3
days are needed (2 returns); with fewer, or adv <= 0, there are no parameters (the venue prices flat). Rows with a
missing or non-positive close are dropped (as the venue drops them); a missing volume counts as 0, a negative one
as 0.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

__all__ = [
    "DAY_NS",
    "MIN_DAYS",
    "DailyCalibrator",
    "ImpactParams",
    "SqrtImpact",
    "calibrate",
    "daily_stats",
    "params_from_days",
]

DAY_NS = 86_400 * 10**9
MIN_DAYS = 3  # two daily returns: the fewest a sample standard deviation needs


@dataclass(frozen=True, slots=True)
class ImpactParams:
    """One symbol's calibration: average daily volume (shares), daily log-return volatility, days it used."""

    adv: float
    sigma_daily: float
    days: int


@dataclass(frozen=True, slots=True)
class SqrtImpact:
    """The square-root model's coefficients (see the module docstring); fractions of the price."""

    eta: float = 0.142
    gamma: float = 0.314

    def temporary(self, q: float, p: ImpactParams, half_spread: float = 0.0) -> float:
        """Cost per share of a fill of `q` shares, as a fraction of the reference price."""
        return half_spread + self.eta * p.sigma_daily * math.sqrt(abs(q) / p.adv)

    def permanent(self, q: float, p: ImpactParams) -> float:
        """Log-price shift a fill of `q` shares leaves behind (unsigned; a buy adds it, a sell subtracts it)."""
        return self.gamma * p.sigma_daily * abs(q) / p.adv

    def fill_price(self, touch: float, buy: bool, q: float, p: ImpactParams | None, half_spread: float) -> float:
        """Price of an aggressive fill against `touch` (the ask or bid, or a last price plus `half_spread`)."""
        c = half_spread if p is None else self.temporary(q, p, half_spread)
        return touch * (1.0 + c) if buy else touch * (1.0 - c)


def params_from_days(volumes: np.ndarray, closes: np.ndarray) -> ImpactParams | None:
    """Parameters from consecutive days' total volume and last close (the trailing window, oldest first)."""
    n = len(volumes)
    if n < MIN_DAYS:
        return None
    adv = float(np.mean(volumes))
    rets = np.diff(np.log(closes))
    sigma = float(np.std(rets, ddof=1))
    if not (adv > 0.0 and math.isfinite(adv) and math.isfinite(sigma)):
        return None
    return ImpactParams(adv, sigma, n)


def _columns(bars: pa.RecordBatch | pa.Table | Iterable[pa.RecordBatch]) -> tuple[np.ndarray, ...]:
    if isinstance(bars, pa.RecordBatch):
        bars = pa.Table.from_batches([bars])
    elif not isinstance(bars, pa.Table):
        batches = list(bars)
        if not batches:
            return (np.zeros(0, np.int64), np.zeros(0, object), np.zeros(0), np.zeros(0))
        bars = pa.Table.from_batches(batches)
    ts = bars.column("ts").cast(pa.int64()).to_numpy()
    sym = np.asarray(bars.column("symbol").to_pylist(), dtype=object)
    close = np.asarray(bars.column("close").to_numpy(zero_copy_only=False), dtype=np.float64)
    vol = np.asarray(bars.column("volume").to_numpy(zero_copy_only=False), dtype=np.float64)
    keep = close > 0.0  # NaN fails this too
    keep &= np.fromiter((s is not None for s in sym), bool, len(sym))
    vol = np.where(np.isnan(vol), 0.0, np.maximum(vol, 0.0))
    return ts[keep], sym[keep], close[keep], vol[keep]


def daily_stats(bars: pa.RecordBatch | pa.Table | Iterable[pa.RecordBatch]) -> dict[str, tuple[np.ndarray, ...]]:
    """Per symbol: (UTC day numbers, total volume per day, last close per day), days ascending."""
    ts, sym, close, vol = _columns(bars)
    out: dict[str, tuple[np.ndarray, ...]] = {}
    for s in dict.fromkeys(sym.tolist()):
        m = sym == s
        t, c, v = ts[m], close[m], vol[m]
        order = np.argsort(t, kind="stable")
        t, c, v = t[order], c[order], v[order]
        day = t // DAY_NS
        starts = np.flatnonzero(np.r_[True, day[1:] != day[:-1]])
        ends = np.r_[starts[1:], len(day)] - 1
        out[s] = (day[starts], np.add.reduceat(v, starts) if len(v) else v, c[ends])
    return out


def calibrate(
    bars: pa.RecordBatch | pa.Table | Iterable[pa.RecordBatch], window: int = 20
) -> dict[str, ImpactParams]:
    """{symbol: ImpactParams} from the last `window` days of `bars` (every day in `bars` counts as complete);
    symbols with fewer than 3 days, or no volume, are left out."""
    if window < MIN_DAYS:
        raise ValueError(f"window: must be at least {MIN_DAYS} days, got {window!r}")
    out = {}
    for s, (_, v, c) in daily_stats(bars).items():
        p = params_from_days(v[-window:], c[-window:])
        if p is not None:
            out[s] = p
    return out


class DailyCalibrator:
    """`calibrate` online, for a venue that sees bars one batch at a time: a symbol's parameters at any moment are
    `calibrate(its bars of the completed UTC days before the current one, window)`; they change only when a bar
    of a new day arrives. Bars must come in time order per symbol (the venue drops older ones)."""

    __slots__ = ("_cur", "_days", "_params", "window")

    def __init__(self, window: int = 20) -> None:
        if window < MIN_DAYS:
            raise ValueError(f"window: must be at least {MIN_DAYS} days, got {window!r}")
        self.window = window
        self._days: dict[str, deque[tuple[float, float]]] = {}
        self._cur: dict[str, list[float]] = {}  # symbol -> [day, volume so far, last close]
        self._params: dict[str, ImpactParams | None] = {}

    def update(self, symbol: str, ts_ns: int, close: float, volume: float | None) -> None:
        """Add one bar (close > 0; volume None for unknown, counted as 0)."""
        v = 0.0 if volume is None else max(volume, 0.0)
        day = ts_ns // DAY_NS
        cur = self._cur.get(symbol)
        if cur is None:
            self._cur[symbol] = [day, v, close]
            self._days[symbol] = deque(maxlen=self.window)
            self._params[symbol] = None
            return
        if day != cur[0]:
            days = self._days[symbol]
            days.append((cur[1], cur[2]))
            vols = np.fromiter((d[0] for d in days), np.float64, len(days))
            closes = np.fromiter((d[1] for d in days), np.float64, len(days))
            self._params[symbol] = params_from_days(vols, closes)
            cur[0], cur[1] = day, 0.0
        cur[1] += v
        cur[2] = close

    def params(self, symbol: str) -> ImpactParams | None:
        return self._params.get(symbol)
