"""Batch technical indicators (TA-Lib) against independent textbook formulas on real S&P 500 daily OHLCV.

The references below are written from the textbook definitions (pandas rolling windows and plain Python
recursions), with TA-Lib's conventions: EMA seeded by the SMA of the first n values, Wilder smoothing seeded by
the first plain mean (RSI, ATR) or the sum of the first n-1 DM/TR values (DMI), unstable period 0. They
check that the TA-Lib calls and their parameters mean what our docstrings say, to 1e-10.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tradesys.features import technical as T

N = 1500


def _data() -> pd.DataFrame:
    import arch.data.sp500 as sp500

    return sp500.load().iloc[-N:]


DF = _data()
H, L, C = (DF[k].to_numpy(dtype=float) for k in ("High", "Low", "Close"))
V = DF["Volume"].to_numpy(dtype=float)


def _close(got: np.ndarray, ref: np.ndarray) -> None:
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    m = ~np.isnan(ref)
    np.testing.assert_allclose(got[m], ref[m], rtol=1e-10, atol=1e-10)


def _ema_ref(x: np.ndarray, n: int, start: int = 0) -> np.ndarray:
    out = np.full(x.size, np.nan)
    k = 2 / (n + 1)
    e = x[start : start + n].mean()
    out[start + n - 1] = e
    for t in range(start + n, x.size):
        e = e + k * (x[t] - e)
        out[t] = e
    return out


def _wilder(x: np.ndarray, n: int, first: int) -> np.ndarray:
    """Wilder average of x[first:], seeded with the mean of its first n values."""
    out = np.full(x.size, np.nan)
    a = x[first : first + n].mean()
    out[first + n - 1] = a
    for t in range(first + n, x.size):
        a = (a * (n - 1) + x[t]) / n
        out[t] = a
    return out


def _tr() -> np.ndarray:
    pc = np.r_[np.nan, C[:-1]]
    return np.nanmax(np.vstack([H - L, np.abs(H - pc), np.abs(L - pc)]), axis=0)


def test_moving_averages() -> None:
    s = pd.Series(C)
    _close(T.sma(C, 20), s.rolling(20).mean().to_numpy())
    _close(T.ema(C, 20), _ema_ref(C, 20))
    w = np.arange(1, 16)
    wma = np.full(N, np.nan)
    wma[14:] = np.convolve(C, w[::-1], mode="valid") / w.sum()
    _close(T.wma(C, 15), wma)


def test_macd_aligned_seeding() -> None:
    fast = _ema_ref(C, 12, start=26 - 12)  # fast EMA seeded on the 12 closes ending at bar 25
    slow = _ema_ref(C, 26)
    line = fast - slow
    sig = _ema_ref(np.nan_to_num(line), 9, start=25)
    m, s, h = T.macd(C, 12, 26, 9)
    valid = np.arange(N) >= 26 + 9 - 2
    _close(m, np.where(valid, line, np.nan))
    _close(s, np.where(valid, sig, np.nan))
    _close(h, np.where(valid, line - sig, np.nan))


def test_rsi_wilder() -> None:
    d = np.diff(C)
    up = np.r_[np.nan, np.maximum(d, 0)]
    dn = np.r_[np.nan, np.maximum(-d, 0)]
    ag, al = _wilder(up, 14, 1), _wilder(dn, 14, 1)
    _close(T.rsi(C, 14), 100 * ag / (ag + al))


def test_atr_and_keltner() -> None:
    atr = _wilder(_tr(), 14, 1)
    _close(T.atr(H, L, C, 14), atr)
    up, mid, lo = T.keltner(H, L, C, 20, 10, 1.5)
    a10 = _wilder(_tr(), 10, 1)
    _close(mid, _ema_ref(C, 20))
    _close(up - mid, 1.5 * np.where(np.isnan(mid), np.nan, a10))
    _close(mid - lo, 1.5 * np.where(np.isnan(mid), np.nan, a10))


def test_dmi_adx_wilder() -> None:
    n = 14
    up, dn = np.r_[0, np.diff(H)], np.r_[0, -np.diff(L)]
    pdm = np.where((up > dn) & (up > 0), up, 0.0)
    mdm = np.where((dn > up) & (dn > 0), dn, 0.0)
    tr = _tr()
    sp, sm, st = pdm[1:n].sum(), mdm[1:n].sum(), tr[1:n].sum()
    pdi, mdi, dx = (np.full(N, np.nan) for _ in range(3))
    for t in range(n, N):
        sp, sm, st = sp - sp / n + pdm[t], sm - sm / n + mdm[t], st - st / n + tr[t]
        pdi[t], mdi[t] = 100 * sp / st, 100 * sm / st
        dx[t] = 100 * abs(pdi[t] - mdi[t]) / (pdi[t] + mdi[t])
    adx = _wilder(dx, n, n)
    p, m, a = T.dmi(H, L, C, n)
    _close(p, pdi)
    _close(m, mdi)
    _close(a, adx)


def test_window_oscillators() -> None:
    hh = pd.Series(H).rolling(14).max().to_numpy()
    ll = pd.Series(L).rolling(14).min().to_numpy()
    _close(T.willr(H, L, C, 14), -100 * (hh - C) / (hh - ll))
    hh5 = pd.Series(H).rolling(5).max()
    ll5 = pd.Series(L).rolling(5).min()
    fastk = 100 * (C - ll5) / (hh5 - ll5)
    slowk = fastk.rolling(3).mean()
    slowd = slowk.rolling(3).mean()
    k, d = T.stoch(H, L, C, 5, 3, 3)
    valid = ~np.isnan(slowd.to_numpy())
    _close(k, np.where(valid, slowk, np.nan))
    _close(d, slowd.to_numpy())
    roc = np.full(N, np.nan)
    roc[10:] = 100 * (C[10:] / C[:-10] - 1)
    _close(T.roc(C, 10), roc)


def test_bollinger_population_std() -> None:
    s = pd.Series(C)
    mid, sd = s.rolling(20).mean().to_numpy(), s.rolling(20).std(ddof=0).to_numpy()
    u, m, lo = T.bollinger(C, 20, 2.0, 1.5)
    _close(m, mid)
    # TA-Lib's E[x^2] - E[x]^2 loses ~1e-12 relative at these price levels; compare the bands themselves
    _close(u, mid + 2.0 * sd)
    _close(lo, mid - 1.5 * sd)


def test_volume_indicators() -> None:
    sign = np.r_[0.0, np.sign(np.diff(C))]
    _close(T.obv(C, V), V[0] + np.cumsum(sign * V))
    clv = np.where(H > L, ((C - L) - (H - C)) / (H - L), 0.0)
    _close(T.ad(H, L, C, V), np.cumsum(clv * V))
    tp = (H + L + C) / 3
    mf = tp * V
    dtp = np.r_[0.0, np.diff(tp)]
    pos = pd.Series(np.where(dtp > 0, mf, 0.0)).rolling(14).sum().to_numpy()
    neg = pd.Series(np.where(dtp < 0, mf, 0.0)).rolling(14).sum().to_numpy()
    ref = 100 * pos / (pos + neg)
    ref[:14] = np.nan
    _close(T.mfi(H, L, C, V, 14), ref)


def test_sar_is_a_stop_outside_the_bar() -> None:
    """No textbook closed form; Wilder's stop is either at/below the bar's low (long) or at/above its high."""
    s = T.sar(H, L)
    assert np.isnan(s[0]) and np.isfinite(s[1:]).all()
    assert ((s[1:] <= L[1:] + 1e-12) | (s[1:] >= H[1:] - 1e-12)).all()


def test_realized_vol_and_cone() -> None:
    lr = pd.Series(np.log(C)).diff()
    rv = (lr.rolling(20).std(ddof=1) * np.sqrt(252)).to_numpy()
    _close(T.realized_vol(C, 20), rv)
    cone = T.volatility_cone(C, horizons=(20, 60), quantiles=(0.0, 0.5, 1.0))
    for i, h in enumerate((20, 60)):
        r = (lr.rolling(h).std(ddof=1) * np.sqrt(252)).dropna().to_numpy()
        np.testing.assert_allclose(cone[i], [r.min(), np.median(r), r.max()], rtol=1e-10)
    assert cone[0, 0] <= cone[1, 0] <= cone[1, 2] <= cone[0, 2]  # short horizons fan out wider


def test_two_dimensional_input_is_per_column() -> None:
    c2 = np.column_stack([C, C * 2.0, C[::-1]])
    out = T.rsi(c2, 14)
    assert out.shape == c2.shape
    for j in range(3):
        np.testing.assert_array_equal(out[:, j], T.rsi(np.ascontiguousarray(c2[:, j]), 14))
    k, _d = T.stoch(np.column_stack([H, H]), np.column_stack([L, L]), np.column_stack([C, C]))
    np.testing.assert_array_equal(k[:, 0], k[:, 1])


def test_bad_input_names_field() -> None:
    with pytest.raises(ValueError, match="n: must be an integer"):
        T.sma(C, 0)
    with pytest.raises(ValueError, match="high,low,close: inputs have different shapes"):
        T.atr(H, L[:-1], C)
    with pytest.raises(ValueError, match="close: expected"):
        T.ema(np.zeros((2, 2, 2)), 3)
