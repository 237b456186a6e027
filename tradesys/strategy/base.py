"""The strategy interface."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

import numpy as np
import pyarrow as pa

from tradesys.core.orders import Order
from tradesys.core.portfolio import PortfolioSnapshot
from tradesys.core.schemas import batch_ts


@runtime_checkable
class Strategy(Protocol):
    strategy_id: str

    def on_bars(
        self, bars: pa.RecordBatch, book: PortfolioSnapshot, working: Mapping[str, float]
    ) -> list[Order]:
        """Orders to send after seeing `bars`. `working` is the signed open order quantity per symbol.

        Client order ids must be deterministic in (strategy, bar time, symbol) so a replayed step re-creates
        the same ids and the OMS treats them as the same orders.
        """
        ...

    def warm_up(self, batches: Iterable[pa.RecordBatch]) -> int:
        """Rebuild the strategy's state from the bars up to a resume point, making no orders; return bars taken.

        After `warm_up(bars up to T)`, `on_bars` at T (a retried step) or after T makes exactly the orders an
        undisturbed run makes: a bar at or before the last one seen is not counted twice.
        """
        ...


class CloseHistory:
    """The closes a strategy has seen, per symbol, each bar time counted once (a retried or replayed step, or a
    warm-up that overlaps the live feed, never appends the same bar twice)."""

    def __init__(self, maxlen: int) -> None:
        self.maxlen = maxlen
        self.closes: dict[str, deque[float]] = {}
        self.last_ts: int | None = None

    def observe(self, bars: pa.RecordBatch) -> list[tuple[str, float]]:
        """Append the batch's usable closes (once per bar time); return its usable (symbol, close) rows."""
        ts = batch_ts(bars)
        rows = [
            (sym, px)
            for sym, px in zip(bars.column("symbol").to_pylist(), bars.column("close").to_pylist(), strict=True)
            if px is not None and px > 0
        ]
        if self.last_ts is not None and ts <= self.last_ts:
            return rows
        self.last_ts = ts
        for sym, px in rows:
            self.closes.setdefault(sym, deque(maxlen=self.maxlen)).append(px)
        return rows

    def warm_up(self, batches: Iterable[pa.RecordBatch]) -> int:
        """Observe the bars up to a resume point (what a strategy's `warm_up` rebuilds); return the bars taken."""
        n = 0
        for bars in batches:
            if bars.num_rows:
                self.observe(bars)
                n += 1
        return n


class CloseMatrix:
    """The last `maxlen` closes of every symbol as one (symbols x maxlen) float64 array, oldest first per row.

    What `CloseHistory` keeps, laid out for array maths: a strategy computes its signals for all symbols in a
    few array operations per bar instead of one small numpy call per symbol. Each row holds its symbol's closes
    in time order and contiguous (a shift register, not a rotating ring), so a row reduction (`mean`, `std`
    along axis 1) adds in the same order as the same reduction on a 1-D array of those closes: the results are
    bit for bit those of the per-symbol code. `counts` is the number of closes seen per symbol (capped at
    `maxlen`); the columns left of the newest `counts` in a row hold nothing meaningful. Same once-per-bar-time
    rule as `CloseHistory`.
    """

    def __init__(self, maxlen: int) -> None:
        if maxlen <= 0:
            raise ValueError(f"maxlen: must be > 0, got {maxlen}")
        self.maxlen = maxlen
        self.index: dict[str, int] = {}
        self.values = np.zeros((0, maxlen))
        self.counts = np.zeros(0, dtype=np.int64)
        self.last_ts: int | None = None

    def _rows_of(self, symbols: list[str]) -> np.ndarray:
        """Row index of each symbol, adding (and growing the arrays for) symbols not seen before."""
        index = self.index
        for sym in symbols:
            if sym not in index:
                index[sym] = len(index)
        if len(index) > len(self.counts):
            cap = max(len(index), 2 * len(self.counts), 8)
            values = np.zeros((cap, self.maxlen))
            values[: len(self.counts)] = self.values
            counts = np.zeros(cap, dtype=np.int64)
            counts[: len(self.counts)] = self.counts
            self.values, self.counts = values, counts
        return np.fromiter((index[s] for s in symbols), np.int64, len(symbols))

    def observe(self, bars: pa.RecordBatch) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Append the batch's usable closes (once per bar time); return its usable rows as (symbols, closes,
        row indices), in batch order."""
        ts = batch_ts(bars)
        closes = bars.column("close").to_numpy(zero_copy_only=False)
        syms = bars.column("symbol").to_pylist()
        usable = closes > 0  # a missing close reads as NaN: not usable, as a non-positive one
        if not usable.all():
            keep = np.flatnonzero(usable)
            syms = [syms[i] for i in keep]
            closes = closes[keep]
        closes = np.ascontiguousarray(closes, dtype=np.float64)
        rows = self._rows_of(syms)
        if self.last_ts is not None and ts <= self.last_ts:
            return syms, closes, rows
        self.last_ts = ts
        if len(set(syms)) == len(syms):
            self._push(rows, closes)
        else:  # a symbol twice in one batch: both closes are appended, in order, as CloseHistory does
            for j in range(len(syms)):
                self._push(rows[j : j + 1], closes[j : j + 1])
        return syms, closes, rows

    def _push(self, rows: np.ndarray, closes: np.ndarray) -> None:
        values = self.values
        values[rows, :-1] = values[rows, 1:]
        values[rows, -1] = closes
        self.counts[rows] = np.minimum(self.counts[rows] + 1, self.maxlen)

    def warm_up(self, batches: Iterable[pa.RecordBatch]) -> int:
        """Observe the bars up to a resume point (what a strategy's `warm_up` rebuilds); return the bars taken."""
        n = 0
        for bars in batches:
            if bars.num_rows:
                self.observe(bars)
                n += 1
        return n
