"""The strategy interface."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

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
