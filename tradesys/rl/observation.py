"""The RL environment's observation, built from bar batches and the book (for the backtest and the live loop).

Why: a policy must see at bar t exactly what `tradesys.rl.env` showed it at bar t during training. The env builds
its observations from a `MarketData` (dense arrays over the whole data period); a strategy receives one bar batch
at a time. `ObservationBuilder` keeps the bars it has seen as the same dense arrays, with the same rules as
`tradesys.rl.market.dense_bars` (history starts at the first bar time at which every symbol has a usable close; a
missing open/high/low is the close; a later gap is an error naming the symbol), and computes the features with
the same function (`compute_features`) over the history. Recursive indicators (EMA-based MACD, Wilder RSI and
ATR) depend on every bar since the start, but the start's weight decays geometrically: (25/27)^k for the 26-bar
EMA, the slowest. With at most `max_history` bars (default 1000, i.e. 1e-33 of the start left) the features are
the env's to the last bit or two of float64, far below the observation's float32 resolution; bit for bit while
the history is shorter than `max_history` (the env's own market arrays start at the same first bar when both use
the same `DataConfig`). `max_history=None` keeps every bar. Cost: one feature pass over at most `max_history`
bars per observation.

Observation layout (`tradesys.rl.env.obs_layout`): the features of the last `window` bars (window, A, F) in C
order, then the book's weights qty * close / equity (A), then the cash weight cash / equity (1), float32. None
while the feature window still holds warm-up rows (NaN features): the env never starts an episode there either.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from tradesys.core.schemas import batch_ts
from tradesys.rl.market import FEATURES, compute_features

__all__ = ["ObservationBuilder"]


class ObservationBuilder:
    """Dense OHLC history of `symbols` from bar batches, and the env's observation at the latest bar."""

    def __init__(self, symbols: Sequence[str], feature_names: Sequence[str], window: int,
                 max_history: int | None = 1000) -> None:
        syms = tuple(str(s) for s in symbols)
        if not syms or len(set(syms)) != len(syms):
            raise ValueError(f"symbols: need distinct symbol names, got {list(syms)}")
        names = tuple(feature_names)
        unknown = [f for f in names if f not in FEATURES]
        if unknown or not names:
            raise ValueError(f"feature_names: {unknown or 'none'} cannot be built from bars; built-in features: "
                             f"{sorted(FEATURES)} (store features need the offline store, not bars)")
        if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 1:
            raise ValueError(f"window: must be an integer >= 1, got {window!r}")
        if max_history is not None and (isinstance(max_history, bool) or not isinstance(max_history, int | np.integer)
                                        or max_history < window + 64):
            raise ValueError(f"max_history: must be None or an integer >= window + 64 = {window + 64} (the longest "
                             f"built-in warm-up is 33 bars), got {max_history!r}")
        self.symbols, self.feature_names, self.window = syms, names, int(window)
        self.max_history = None if max_history is None else int(max_history)
        self._col = {s: j for j, s in enumerate(syms)}
        a = len(syms)
        self._cap = 256
        self._ohlcv = np.empty((5, self._cap, a))  # open, high, low, close, volume
        self._ts = np.empty(self._cap, dtype=np.int64)
        self.n = 0  # bars kept (at most 2 x max_history)
        self.last_ts: int | None = None  # the last bar time seen (kept or not)
        self._feats: np.ndarray | None = None
        self._feats_n = -1

    @property
    def obs_dim(self) -> int:
        a = len(self.symbols)
        return self.window * a * len(self.feature_names) + a + 1

    def update(self, bars: pa.RecordBatch) -> bool:
        """Take one bar batch (one bar time); True if it was added to the history. A bar time at or before the last
        one seen is ignored (a retried step or a warm-up overlapping the feed)."""
        if bars.num_rows == 0:
            return False
        ts = batch_ts(bars)
        if self.last_ts is not None and ts <= self.last_ts:
            return False
        self.last_ts = ts
        a = len(self.symbols)
        row = np.full((5, a), np.nan)
        cols = [bars.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
                for c in ("open", "high", "low", "close", "volume")]  # fmt: skip
        for i, sym in enumerate(bars.column("symbol").to_pylist()):
            j = self._col.get(sym)
            if j is not None:
                row[:, j] = [c[i] for c in cols]
        close = row[3]
        present = np.isfinite(close) & (close > 0)
        if not present.all():
            if self.n == 0:
                return False  # before every symbol trades: cut, as dense_bars cuts leading bars
            j = int(np.argmin(present))
            when = np.datetime64(ts, "ns")
            raise ValueError(f"data: symbol {self.symbols[j]!r} has no usable bar at {when} (the rl strategy needs "
                             "every policy symbol at every bar; gaps are not filled)")
        o = np.where(np.isfinite(row[0]), row[0], close)
        h = np.where(np.isfinite(row[1]), row[1], np.maximum(o, close))
        lo = np.where(np.isfinite(row[2]), row[2], np.minimum(o, close))
        if self.max_history is not None and self.n >= 2 * self.max_history:
            keep = self.max_history  # drop bars the features no longer read: memory stays bounded in a long run
            self._ohlcv[:, :keep] = self._ohlcv[:, self.n - keep : self.n].copy()
            self._ts[:keep] = self._ts[self.n - keep : self.n].copy()
            self.n = keep
            self._feats_n = -1
        if self.n == self._cap:
            self._cap *= 2
            grown = np.empty((5, self._cap, a))
            grown[:, : self.n] = self._ohlcv[:, : self.n]
            self._ohlcv = grown
            self._ts = np.concatenate([self._ts, np.empty(self._cap - self.n, dtype=np.int64)])
        self._ohlcv[:, self.n] = (o, h, lo, close, row[4])
        self._ts[self.n] = ts
        self.n += 1
        return True

    def warm_up(self, batches: Iterable[pa.RecordBatch]) -> int:
        """`update` for each batch; the number of bars taken (non-empty batches)."""
        n = 0
        for b in batches:
            if b.num_rows:
                self.update(b)
                n += 1
        return n

    @property
    def ts(self) -> np.ndarray:
        return self._ts[: self.n]

    def prices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(open, high, low, close, volume), each (n, A), of the bars kept."""
        o, h, lo, c, v = (self._ohlcv[k, : self.n] for k in range(5))
        return o, h, lo, c, v

    @property
    def close(self) -> np.ndarray:
        """(n, A) closes of the bars kept."""
        return self._ohlcv[3, : self.n]

    def features(self) -> np.ndarray:
        """(m, A, F) features of the last m = min(n, max_history) bars (NaN in warm-up rows), cached until the next
        bar."""
        if self._feats_n != self.n:
            lo = 0 if self.max_history is None else max(0, self.n - self.max_history)
            prices = tuple(self._ohlcv[k, lo : self.n] for k in range(5))
            self._feats = compute_features(prices, self.feature_names)  # type: ignore[arg-type]
            self._feats_n = self.n
        assert self._feats is not None
        return self._feats

    def feature_window(self) -> np.ndarray | None:
        """The (window, A, F) features up to the latest bar, or None while any of them is a warm-up NaN."""
        if self.n < self.window:
            return None
        win = self.features()[-self.window :]
        return win if np.isfinite(win).all() else None

    def observation(self, qty: Mapping[str, float] | np.ndarray, cash: float, equity: float) -> np.ndarray | None:
        """The env's observation at the latest bar for a book holding `qty` (per symbol, or an (A,) array in the
        builder's symbol order) and `cash`, worth `equity` at the latest closes; None during the warm-up."""
        win = self.feature_window()
        if win is None:
            return None
        if not (np.isfinite(equity) and equity > 0):
            raise ValueError(f"equity: must be finite and > 0 to weigh the book, got {equity!r}")
        q = (np.array([float(qty.get(s, 0.0)) for s in self.symbols]) if isinstance(qty, Mapping)
             else np.asarray(qty, dtype=np.float64))  # fmt: skip
        if q.shape != (len(self.symbols),):
            raise ValueError(f"qty: shape {q.shape}, expected ({len(self.symbols)},)")
        w = (q * self.close[-1] / equity).astype(np.float32)
        c = np.float32(cash / equity)
        return np.concatenate([win.astype(np.float32).reshape(-1), w, [c]]).astype(np.float32)
