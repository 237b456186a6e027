"""Cross-asset features: rolling correlation, rolling beta and lead-lag cross-correlation.

Why: hedge ratios and diversification decay with correlation, and a leader's returns can forecast a lagger's.
Inputs are aligned return series (the same timestamps), (T,) or (T, N) for y against one x; rolling values at
row t use rows t-window+1 .. t only (NaN before that). Sample (ddof=1) moments.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _pair(x: Any, y: Any, window: int) -> tuple[np.ndarray, np.ndarray, bool]:
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xa.ndim != 1:
        raise ValueError(f"x: expected a 1-D series, got shape {xa.shape}")
    if ya.shape[0] != xa.shape[0] or ya.ndim not in (1, 2):
        raise ValueError(f"y: expected ({xa.shape[0]},) or ({xa.shape[0]}, N), got shape {ya.shape}")
    if int(window) != window or window < 3:
        raise ValueError(f"window: must be an integer >= 3, got {window!r}")
    squeeze = ya.ndim == 1
    return xa, (ya[:, None] if squeeze else ya), squeeze


def _rolling_moments(x: np.ndarray, y: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rolling var(x) (T-w+1, 1), var(y) and cov(x, y) (T-w+1, N), two-pass within each window."""
    xw = np.lib.stride_tricks.sliding_window_view(x, w)[:, None, :]  # (K, 1, w)
    yw = np.lib.stride_tricks.sliding_window_view(y, w, axis=0)  # (K, N, w)
    xc = xw - xw.mean(axis=-1, keepdims=True)
    yc = yw - yw.mean(axis=-1, keepdims=True)
    return (xc * xc).sum(-1) / (w - 1), (yc * yc).sum(-1) / (w - 1), (xc * yc).sum(-1) / (w - 1)


def rolling_corr(x: Any, y: Any, window: int = 60) -> np.ndarray:
    """Rolling Pearson correlation of y (each column) with x."""
    xa, ya, squeeze = _pair(x, y, window)
    out = np.full(ya.shape, np.nan)
    if xa.size >= window:
        vx, vy, cxy = _rolling_moments(xa, ya, int(window))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[window - 1 :] = cxy / np.sqrt(vx * vy)
    return out[:, 0] if squeeze else out


def rolling_beta(y: Any, x: Any, window: int = 60) -> np.ndarray:
    """Rolling OLS beta of y (each column) on x: cov(y, x) / var(x)."""
    xa, ya, squeeze = _pair(x, y, window)
    out = np.full(ya.shape, np.nan)
    if xa.size >= window:
        vx, _, cxy = _rolling_moments(xa, ya, int(window))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[window - 1 :] = cxy / vx
    return out[:, 0] if squeeze else out


def lead_lag(x: Any, y: Any, max_lag: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(lags, corr): corr[k] = corr(x_t, y_{t+lags[k]}) over the overlapping rows, lags -max_lag..max_lag.
    A peak at a positive lag means x leads y."""
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xa.ndim != 1 or ya.shape != xa.shape:
        raise ValueError(f"y: expected the shape of x {xa.shape}, got {ya.shape}")
    if int(max_lag) != max_lag or not 0 <= max_lag < xa.size - 2:
        raise ValueError(f"max_lag: must be an integer in [0, {xa.size - 3}], got {max_lag!r}")
    lags = np.arange(-max_lag, max_lag + 1)
    out = np.empty(lags.size)
    n = xa.size
    for i, k in enumerate(lags):
        a, b = (xa[: n - k], ya[k:]) if k >= 0 else (xa[-k:], ya[: n + k])
        out[i] = np.corrcoef(a, b)[0, 1]
    return lags, out


__all__ = ["lead_lag", "rolling_beta", "rolling_corr"]
