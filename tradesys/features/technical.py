"""Batch technical indicators over whole histories, many symbols at once.

Why TA-Lib: it is the de-facto reference for these indicators and its C code is fast on whole columns, so the
batch path calls it directly (one call per symbol column) rather than re-deriving the formulas. The streaming
path (tradesys.features.streaming) is our own vectorised numpy code, because there speed across symbols is the
point, and its tests check it against these functions to 1e-10.

Conventions (TA-Lib's, unstable period 0, default compatibility mode):

* Input arrays are shaped (T,) or (T, N): time on axis 0, one column per symbol, float64 prices/volumes.
  Outputs have the input's shape; the first `lookback` rows are NaN (warm-up), e.g. SMA/EMA/WMA n-1,
  RSI/ATR/+DI/-DI/ROC/MFI n, ADX 2n-1, MACD slow+signal-2, STOCH fastk+slowk+slowd-3, SAR 1.
* EMA is seeded with the simple mean of its first n values, then x_t -> ema + k (x_t - ema), k = 2/(n+1).
* RSI, ATR, +DI/-DI and ADX use Wilder smoothing (alpha = 1/n), seeded with the plain mean (RSI, ATR, ADX)
  or the plain sum of the first n-1 values (the DM/TR sums behind +DI/-DI).
* Bollinger bands use the population standard deviation (divide by n); Keltner channels (not in TA-Lib) are
  EMA(close, n) +- mult * ATR(atr_n).
* Volatility cones: annualised close-to-close realised volatility (sample std of log returns, ddof=1, times
  sqrt(periods_per_year)) over overlapping windows, summarised by quantiles per horizon.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import talib

ArrayLike = Any


def _as_2d(name: str, x: ArrayLike) -> tuple[np.ndarray, bool]:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim not in (1, 2):
        raise ValueError(f"{name}: expected a (T,) or (T, N) array, got shape {a.shape}")
    return (a[:, None], True) if a.ndim == 1 else (a, False)


def _apply(fn: Callable[..., Any], names: Sequence[str], arrays: Sequence[ArrayLike], **kw: Any) -> list[np.ndarray]:
    """Call a TA-Lib function column by column; returns one (T, N)-or-(T,) array per TA-Lib output."""
    cols = [_as_2d(n, a) for n, a in zip(names, arrays, strict=True)]
    shapes = {c[0].shape for c in cols}
    if len(shapes) != 1:
        raise ValueError(f"{','.join(names)}: inputs have different shapes {sorted(shapes)}")
    squeeze = cols[0][1]
    t, n = cols[0][0].shape
    outs: list[np.ndarray] | None = None
    for j in range(n):
        res = fn(*(np.ascontiguousarray(c[0][:, j]) for c in cols), **kw)
        res = res if isinstance(res, tuple) else (res,)
        if outs is None:
            outs = [np.empty((t, n)) for _ in res]
        for o, r in zip(outs, res, strict=True):
            o[:, j] = r
    assert outs is not None
    return [o[:, 0] if squeeze else o for o in outs]


def _check_period(name: str, n: int, minimum: int = 1) -> None:
    if int(n) != n or n < minimum:
        raise ValueError(f"{name}: must be an integer >= {minimum}, got {n!r}")


def sma(close: ArrayLike, n: int = 20) -> np.ndarray:
    """Simple moving average; lookback n-1."""
    _check_period("n", n)
    return _apply(talib.SMA, ["close"], [close], timeperiod=n)[0]


def ema(close: ArrayLike, n: int = 20) -> np.ndarray:
    """Exponential moving average, k = 2/(n+1), seeded with the SMA of the first n values; lookback n-1."""
    _check_period("n", n)
    return _apply(talib.EMA, ["close"], [close], timeperiod=n)[0]


def wma(close: ArrayLike, n: int = 20) -> np.ndarray:
    """Linearly weighted moving average (weights 1..n, newest heaviest); lookback n-1."""
    _check_period("n", n)
    return _apply(talib.WMA, ["close"], [close], timeperiod=n)[0]


def macd(
    close: ArrayLike, fast: int = 12, slow: int = 26, signal: int = 9
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(macd, signal, histogram). TA-Lib seeds the fast EMA with the mean of the `fast` closes ending at bar
    slow-1 (so both EMAs start together) and the signal EMA with the mean of the first `signal` MACD values;
    every output starts at bar slow+signal-2."""
    for name, v in (("fast", fast), ("slow", slow), ("signal", signal)):
        _check_period(name, v)
    m, s, h = _apply(talib.MACD, ["close"], [close], fastperiod=fast, slowperiod=slow, signalperiod=signal)
    return m, s, h


def rsi(close: ArrayLike, n: int = 14) -> np.ndarray:
    """Wilder's relative strength index in [0, 100]; lookback n."""
    _check_period("n", n, 2)
    return _apply(talib.RSI, ["close"], [close], timeperiod=n)[0]


def atr(high: ArrayLike, low: ArrayLike, close: ArrayLike, n: int = 14) -> np.ndarray:
    """Average true range, Wilder-smoothed, seeded with the mean true range of bars 1..n; lookback n."""
    _check_period("n", n)
    return _apply(talib.ATR, ["high", "low", "close"], [high, low, close], timeperiod=n)[0]


def dmi(high: ArrayLike, low: ArrayLike, close: ArrayLike, n: int = 14) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(+DI, -DI, ADX) of Wilder's directional movement system; lookbacks n, n, 2n-1."""
    _check_period("n", n, 2)
    names, arrays = ["high", "low", "close"], [high, low, close]
    (p,) = _apply(talib.PLUS_DI, names, arrays, timeperiod=n)
    (m,) = _apply(talib.MINUS_DI, names, arrays, timeperiod=n)
    (a,) = _apply(talib.ADX, names, arrays, timeperiod=n)
    return p, m, a


def sar(high: ArrayLike, low: ArrayLike, acceleration: float = 0.02, maximum: float = 0.2) -> np.ndarray:
    """Wilder's parabolic stop-and-reverse; the first trend is short if bar 1 has a positive -DM; lookback 1."""
    if not 0 < acceleration <= maximum:
        raise ValueError(f"acceleration: must satisfy 0 < acceleration <= maximum, got {acceleration}, {maximum}")
    return _apply(talib.SAR, ["high", "low"], [high, low], acceleration=acceleration, maximum=maximum)[0]


def stoch(
    high: ArrayLike, low: ArrayLike, close: ArrayLike, fastk: int = 5, slowk: int = 3, slowd: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Slow stochastic (%K, %D) with simple-average smoothing; both start at bar fastk+slowk+slowd-3."""
    for name, v in (("fastk", fastk), ("slowk", slowk), ("slowd", slowd)):
        _check_period(name, v)
    k, d = _apply(
        talib.STOCH,
        ["high", "low", "close"],
        [high, low, close],
        fastk_period=fastk,
        slowk_period=slowk,
        slowk_matype=0,
        slowd_period=slowd,
        slowd_matype=0,
    )
    return k, d


def willr(high: ArrayLike, low: ArrayLike, close: ArrayLike, n: int = 14) -> np.ndarray:
    """Williams %R in [-100, 0]; 0 when the window's range is zero; lookback n-1."""
    _check_period("n", n)
    return _apply(talib.WILLR, ["high", "low", "close"], [high, low, close], timeperiod=n)[0]


def roc(close: ArrayLike, n: int = 10) -> np.ndarray:
    """Rate of change in percent, 100 (x_t / x_{t-n} - 1); 0 where x_{t-n} = 0; lookback n."""
    _check_period("n", n)
    return _apply(talib.ROC, ["close"], [close], timeperiod=n)[0]


def bollinger(
    close: ArrayLike, n: int = 20, nbdev_up: float = 2.0, nbdev_dn: float = 2.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(upper, middle, lower): SMA +- k population standard deviations; lookback n-1."""
    _check_period("n", n, 2)
    u, m, lo = _apply(talib.BBANDS, ["close"], [close], timeperiod=n, nbdevup=nbdev_up, nbdevdn=nbdev_dn, matype=0)
    return u, m, lo


def keltner(
    high: ArrayLike, low: ArrayLike, close: ArrayLike, n: int = 20, atr_n: int = 10, mult: float = 2.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(upper, middle, lower): EMA(close, n) +- mult * ATR(atr_n) (the Raschke variant; not in TA-Lib)."""
    mid = ema(close, n)
    a = atr(high, low, close, atr_n)
    return mid + mult * a, mid, mid - mult * a


def obv(close: ArrayLike, volume: ArrayLike) -> np.ndarray:
    """On-balance volume, starting at the first bar's volume; no warm-up."""
    return _apply(talib.OBV, ["close", "volume"], [close, volume])[0]


def ad(high: ArrayLike, low: ArrayLike, close: ArrayLike, volume: ArrayLike) -> np.ndarray:
    """Chaikin accumulation/distribution line: cumulative ((c-l)-(h-c))/(h-l) * volume (bars with h = l add 0)."""
    return _apply(talib.AD, ["high", "low", "close", "volume"], [high, low, close, volume])[0]


def mfi(high: ArrayLike, low: ArrayLike, close: ArrayLike, volume: ArrayLike, n: int = 14) -> np.ndarray:
    """Money flow index in [0, 100] on typical price (h+l+c)/3; TA-Lib returns 0 when the window's money flow
    sums to less than 1; lookback n."""
    _check_period("n", n)
    return _apply(talib.MFI, ["high", "low", "close", "volume"], [high, low, close, volume], timeperiod=n)[0]


def realized_vol(close: ArrayLike, n: int = 20, periods_per_year: float = 252.0) -> np.ndarray:
    """Rolling annualised close-to-close volatility: sample std (ddof=1) of the last n log returns times
    sqrt(periods_per_year); lookback n (n returns need n+1 closes)."""
    _check_period("n", n, 2)
    c, squeeze = _as_2d("close", close)
    r = np.full_like(c, np.nan)
    r[1:] = np.diff(np.log(c), axis=0)
    out = np.full_like(c, np.nan)
    if c.shape[0] > n:
        win = np.lib.stride_tricks.sliding_window_view(r[1:], n, axis=0)  # (T-n, N, n)
        out[n:] = win.std(axis=-1, ddof=1) * np.sqrt(periods_per_year)
    return out[:, 0] if squeeze else out


def volatility_cone(
    close: ArrayLike,
    horizons: Sequence[int] = (20, 60, 120, 250),
    quantiles: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    periods_per_year: float = 252.0,
) -> np.ndarray:
    """Volatility cone (Burghardt & Lane): for each horizon h, quantiles over history of the overlapping
    realised vol of h returns. Returns shape (len(horizons), len(quantiles)) for a (T,) input, or
    (len(horizons), len(quantiles), N) for (T, N). A horizon longer than the history gives NaN rows."""
    if any(not 0 <= q <= 1 for q in quantiles):
        raise ValueError(f"quantiles: must lie in [0, 1], got {list(quantiles)}")
    c, squeeze = _as_2d("close", close)
    out = np.full((len(horizons), len(quantiles), c.shape[1]), np.nan)
    for i, h in enumerate(horizons):
        rv = realized_vol(c, int(h), periods_per_year)
        if np.isfinite(rv).any():
            out[i] = np.nanquantile(rv, list(quantiles), axis=0)
    return out[..., 0] if squeeze else out


__all__ = [
    "ad",
    "atr",
    "bollinger",
    "dmi",
    "ema",
    "keltner",
    "macd",
    "mfi",
    "obv",
    "realized_vol",
    "roc",
    "rsi",
    "sar",
    "sma",
    "stoch",
    "volatility_cone",
    "willr",
    "wma",
]
