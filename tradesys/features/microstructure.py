"""Market microstructure features from quotes and trades (QUOTE_SCHEMA / TRADE_SCHEMA columns).

Why these: they measure liquidity and price impact, which decide whether a signal survives trading costs.
Array functions take 1-D numpy arrays in event order; those that look back take an optional `group` array
(one integer or string per row, e.g. the symbol) and never mix rows of different groups. Every rolling value
at row i uses rows <= i only (no look-ahead).

Units: prices in currency, sizes in shares, time in int64 ns UTC. Definitions:

* quoted spread = ask - bid; relative spread = (ask - bid) / mid, mid = (bid + ask) / 2; depth = bid_size +
  ask_size; NaN (reason CROSSED) where bid > ask or a side is missing/non-positive.
* OFI (Cont, Kukanov & Stoikov 2014), per quote update n (first update of each group: NaN):
  e_n = 1{Pb_n >= Pb_n-1} qb_n - 1{Pb_n <= Pb_n-1} qb_n-1 - 1{Pa_n <= Pa_n-1} qa_n + 1{Pa_n >= Pa_n-1} qa_n-1.
* Kyle's lambda: rolling OLS slope (with intercept) of price change on signed volume over `window` rows.
* Amihud illiquidity: rolling mean of |return| / dollar volume.
* Roll's measure: spread = 2 sqrt(-cov(dp_t, dp_t-1)) over a rolling window of price changes; NaN with reason
  POSITIVE_COV where the autocovariance is >= 0 (the model does not apply).
* Effective spread: 2 q (p - m) with q the trade sign (aggressor, else the quote rule sign(p - m)) and m the
  prevailing mid, the last quote at or before the trade (as-of join by symbol).
* Trade intensity: trades per second in the trailing window (t - window, t].
* Large trades: size >= multiple x the median size of the group's previous `window` trades.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa

# reason codes, one per row, alongside NaN outputs
OK, WARMUP, CROSSED, POSITIVE_COV, NO_SIGN, NO_QUOTE = 0, 1, 2, 3, 4, 5
REASONS = {
    OK: "ok",
    WARMUP: "not enough history",
    CROSSED: "crossed or missing quote",
    POSITIVE_COV: "non-negative autocovariance",
    NO_SIGN: "trade at the mid with no aggressor",
    NO_QUOTE: "no quote at or before the trade",
}


class Flagged(NamedTuple):
    """Values with a reason code per row (0 = OK; see REASONS)."""

    value: np.ndarray
    reason: np.ndarray


def _f(name: str, x: Any) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {a.shape}")
    return a


def _same_len(**arrays: np.ndarray) -> None:
    lens = {k: len(v) for k, v in arrays.items()}
    if len(set(lens.values())) > 1:
        raise ValueError(f"{','.join(lens)}: arrays have different lengths {lens}")


def _window(name: str, w: int, minimum: int = 1) -> int:
    if int(w) != w or w < minimum:
        raise ValueError(f"{name}: must be an integer >= {minimum}, got {w!r}")
    return int(w)


def _by_group(group: Any, n: int, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Apply fn to the row positions of each group (in their original order) and scatter the results back."""
    if group is None:
        return fn(np.arange(n))
    g = np.asarray(group)
    if g.shape != (n,):
        raise ValueError(f"group: expected {n} labels, got shape {g.shape}")
    _, codes = np.unique(g, return_inverse=True)
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    out = np.full(n, np.nan)
    for rows in np.split(order, bounds):
        out[rows] = fn(rows)
    return out


# ---------------------------------------------------------------------------------------------------------
# Quotes


def quoted_spread(bid: Any, ask: Any) -> Flagged:
    """ask - bid, NaN with reason CROSSED where the quote is crossed or a side is missing/non-positive."""
    b, a = _f("bid", bid), _f("ask", ask)
    _same_len(bid=b, ask=a)
    bad = ~((b > 0) & (a > 0) & (a >= b))
    return Flagged(np.where(bad, np.nan, a - b), np.where(bad, CROSSED, OK))


def relative_spread(bid: Any, ask: Any) -> Flagged:
    """(ask - bid) / mid (dimensionless; x 1e4 for basis points)."""
    s, r = quoted_spread(bid, ask)
    mid = (_f("bid", bid) + _f("ask", ask)) / 2.0
    return Flagged(s / mid, r)


def depth(bid_size: Any, ask_size: Any) -> np.ndarray:
    """Shares displayed at the best bid plus the best ask."""
    b, a = _f("bid_size", bid_size), _f("ask_size", ask_size)
    _same_len(bid_size=b, ask_size=a)
    return b + a


def order_flow_imbalance(bid: Any, ask: Any, bid_size: Any, ask_size: Any, group: Any = None) -> np.ndarray:
    """Cont-Kukanov-Stoikov OFI per quote update (shares; positive = net buying pressure). First row of each
    group is NaN. Sum over a time bucket for the bucket's OFI."""
    b, a, qb, qa = _f("bid", bid), _f("ask", ask), _f("bid_size", bid_size), _f("ask_size", ask_size)
    _same_len(bid=b, ask=a, bid_size=qb, ask_size=qa)

    def one(rows: np.ndarray) -> np.ndarray:
        out = np.full(rows.size, np.nan)
        if rows.size < 2:
            return out
        pb, pa_, sb, sa = b[rows], a[rows], qb[rows], qa[rows]
        e = (
            (pb[1:] >= pb[:-1]) * sb[1:]
            - (pb[1:] <= pb[:-1]) * sb[:-1]
            - (pa_[1:] <= pa_[:-1]) * sa[1:]
            + (pa_[1:] >= pa_[:-1]) * sa[:-1]
        )
        out[1:] = e
        return out

    return _by_group(group, b.size, one)


# ---------------------------------------------------------------------------------------------------------
# Rolling estimators


def _rolling(x: np.ndarray, w: int) -> np.ndarray:
    """(len(x) - w + 1, w) windows ending at rows w-1 .. n-1."""
    return np.lib.stride_tricks.sliding_window_view(x, w)


def kyle_lambda(price_change: Any, signed_volume: Any, window: int = 50, group: Any = None) -> np.ndarray:
    """Rolling OLS slope of price change on signed volume (price per share of net order flow); NaN for the first
    window-1 rows of each group and where signed volume has no variance in the window."""
    dp, q = _f("price_change", price_change), _f("signed_volume", signed_volume)
    _same_len(price_change=dp, signed_volume=q)
    w = _window("window", window, 3)

    def one(rows: np.ndarray) -> np.ndarray:
        out = np.full(rows.size, np.nan)
        if rows.size >= w:
            y, x = _rolling(dp[rows], w), _rolling(q[rows], w)
            xc = x - x.mean(axis=1, keepdims=True)
            yc = y - y.mean(axis=1, keepdims=True)
            sxx = (xc * xc).sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[w - 1 :] = np.where(sxx > 0, (xc * yc).sum(axis=1) / sxx, np.nan)
        return out

    return _by_group(group, dp.size, one)


def amihud(returns: Any, dollar_volume: Any, window: int = 20, group: Any = None) -> np.ndarray:
    """Rolling mean of |return| / dollar volume (return per currency unit traded); rows with zero dollar volume
    are left out of the mean (NaN where a window has none)."""
    r, dv = _f("returns", returns), _f("dollar_volume", dollar_volume)
    _same_len(returns=r, dollar_volume=dv)
    w = _window("window", window)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(dv > 0, np.abs(r) / dv, np.nan)

    def one(rows: np.ndarray) -> np.ndarray:
        out = np.full(rows.size, np.nan)
        if rows.size >= w:
            win = _rolling(ratio[rows], w)
            cnt = np.isfinite(win).sum(axis=1)
            s = np.nansum(win, axis=1)
            out[w - 1 :] = np.where(cnt > 0, s / np.maximum(cnt, 1), np.nan)
        return out

    return _by_group(group, r.size, one)


def roll_spread(prices: Any, window: int = 100, group: Any = None) -> Flagged:
    """Roll's (1984) implied spread 2 sqrt(-cov(dp_t, dp_t-1)) over the last `window` price changes (window+1
    prices); reason WARMUP before that and POSITIVE_COV where the sample autocovariance is >= 0."""
    p = _f("prices", prices)
    w = _window("window", window, 3)
    reason = np.full(p.size, WARMUP)

    def one(rows: np.ndarray) -> np.ndarray:
        out = np.full(rows.size, np.nan)
        if rows.size < w + 1:
            return out
        dp = np.diff(p[rows])
        win = _rolling(dp, w)  # windows ending at price rows w .. n-1
        a, b = win[:, 1:], win[:, :-1]
        cov = ((a - a.mean(axis=1, keepdims=True)) * (b - b.mean(axis=1, keepdims=True))).sum(axis=1) / (w - 2)
        ok = cov < 0
        out[w:] = np.where(ok, 2.0 * np.sqrt(np.where(ok, -cov, 0.0)), np.nan)
        reason[rows[w:]] = np.where(ok, OK, POSITIVE_COV)
        return out

    value = _by_group(group, p.size, one)
    return Flagged(value, reason)


def trade_intensity(ts: Any, window_ns: int, group: Any = None) -> np.ndarray:
    """Trades per second in the trailing window (t - window_ns, t], the current trade included. Rows of a group
    must be in time order."""
    t = np.asarray(ts, dtype=np.int64)
    w = _window("window_ns", window_ns)

    def one(rows: np.ndarray) -> np.ndarray:
        tt = t[rows]
        if tt.size > 1 and (np.diff(tt) < 0).any():
            raise ValueError("ts: trades are not in time order within a group")
        first = np.searchsorted(tt, tt - w, side="right")
        return (np.arange(tt.size) + 1 - first) / (w / 1e9)

    return _by_group(group, t.size, one)


def large_trades(size: Any, window: int = 100, multiple: float = 5.0, group: Any = None) -> np.ndarray:
    """True where a trade's size is >= multiple x the median of the group's previous `window` trade sizes
    (False during the first `window` trades of a group)."""
    s = _f("size", size)
    w = _window("window", window)

    def one(rows: np.ndarray) -> np.ndarray:
        out = np.zeros(rows.size)
        if rows.size > w:
            med = np.median(_rolling(s[rows], w)[:-1], axis=1)  # previous w trades, current excluded
            out[w:] = s[rows][w:] >= multiple * med
        return out

    return _by_group(group, s.size, one).astype(bool)


# ---------------------------------------------------------------------------------------------------------
# Tables


def quote_features(quotes: pa.Table | pa.RecordBatch) -> pa.Table:
    """Per quote row: spread, relative spread, depth, OFI (by symbol) and a reason code, keyed by ts and symbol."""
    q = quotes.to_pandas()
    for col in ("ts", "symbol", "bid", "ask", "bid_size", "ask_size"):
        if col not in q:
            raise ValueError(f"{col}: missing column in quotes")
    spread, reason = quoted_spread(q["bid"], q["ask"])
    rel, _ = relative_spread(q["bid"], q["ask"])
    ofi = order_flow_imbalance(q["bid"], q["ask"], q["bid_size"], q["ask_size"], group=q["symbol"].to_numpy())
    return pa.table(
        {
            "ts": quotes.column("ts"),
            "symbol": quotes.column("symbol"),
            "spread": spread,
            "relative_spread": rel,
            "depth": depth(q["bid_size"], q["ask_size"]),
            "ofi": ofi,
            "reason": reason.astype(np.int8),
        }
    )


def effective_spread(trades: pa.Table | pa.RecordBatch, quotes: pa.Table | pa.RecordBatch) -> pd.DataFrame:
    """Effective spread 2 q (p - m) per trade, m the mid of the symbol's last quote at or before the trade.

    Returns a frame with ts, symbol, price, mid, sign, effective_spread (currency), relative_effective_spread
    (/ mid) and reason (NO_QUOTE, CROSSED, NO_SIGN or OK)."""
    t = trades.to_pandas()
    q = quotes.to_pandas()
    for col in ("ts", "symbol", "price", "aggressor"):
        if col not in t:
            raise ValueError(f"{col}: missing column in trades")
    for col in ("ts", "symbol", "bid", "ask"):
        if col not in q:
            raise ValueError(f"{col}: missing column in quotes")
    t = t.reset_index(names="_row").sort_values("ts", kind="stable")
    q = q[["ts", "symbol", "bid", "ask"]].sort_values("ts", kind="stable")
    m = pd.merge_asof(t, q, on="ts", by="symbol", direction="backward", allow_exact_matches=True)
    m = m.sort_values("_row").reset_index(drop=True)
    price, bid, ask = (m[c].to_numpy(dtype=float) for c in ("price", "bid", "ask"))
    mid = (bid + ask) / 2.0
    agg = m["aggressor"].to_numpy(dtype=float)
    sign = np.where(agg != 0, np.sign(agg), np.sign(price - mid))
    reason = np.full(len(m), OK)
    reason[sign == 0] = NO_SIGN
    reason[~((bid > 0) & (ask >= bid))] = CROSSED
    reason[np.isnan(bid) | np.isnan(ask)] = NO_QUOTE
    es = np.where(reason == OK, 2.0 * sign * (price - mid), np.nan)
    return pd.DataFrame(
        {
            "ts": m["ts"],
            "symbol": m["symbol"],
            "price": price,
            "mid": mid,
            "sign": sign,
            "effective_spread": es,
            "relative_effective_spread": es / mid,
            "reason": reason.astype(np.int8),
        }
    )


__all__ = [
    "CROSSED",
    "NO_QUOTE",
    "NO_SIGN",
    "OK",
    "POSITIVE_COV",
    "REASONS",
    "WARMUP",
    "Flagged",
    "amihud",
    "depth",
    "effective_spread",
    "kyle_lambda",
    "large_trades",
    "order_flow_imbalance",
    "quote_features",
    "quoted_spread",
    "relative_spread",
    "roll_spread",
    "trade_intensity",
]
