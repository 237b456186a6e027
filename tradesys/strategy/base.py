"""The strategy interface."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

import pyarrow as pa

from tradesys.core.orders import Order
from tradesys.core.portfolio import PortfolioSnapshot


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
