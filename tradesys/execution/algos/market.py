"""Market: the whole parent at once, as one child (the benchmark every other algorithm is measured against)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tradesys.execution.algos._common import (
    COMMON,
    check_parent,
    check_unknown,
    child_qty,
    common_params,
    is_filled,
    one,
)
from tradesys.execution.algos.base import ChildSpec, MarketSlice, ParentOrder, ParentProgress


@dataclass(frozen=True, slots=True)
class MarketAlgo:
    """One child for the whole remaining quantity at the first slice point at or after start_ns.

    A child that is lost (rejected, expired or cancelled unfilled) is sent again for the remainder at the next
    slice point; with a window (end_ns > start_ns) nothing is sent after end_ns.
    """

    lot: float = 1.0
    min_qty: float = 0.0
    name: str = "market"

    @classmethod
    def from_params(cls, params: Mapping[str, object]) -> MarketAlgo:
        check_unknown("market", params, COMMON)
        lot, min_qty = common_params("market", params)
        return cls(lot=lot, min_qty=min_qty)

    def children(self, parent: ParentOrder, progress: ParentProgress, market: MarketSlice) -> list[ChildSpec]:
        check_parent(self.name, parent, needs_window=False)
        if self.done(parent, progress, market) or market.ts_ns < parent.start_ns:
            return []
        return one(parent, child_qty(parent, progress, parent.qty, self.lot), self.min_qty)

    def done(self, parent: ParentOrder, progress: ParentProgress, market: MarketSlice) -> bool:
        windowed = parent.end_ns > parent.start_ns
        return is_filled(parent, progress) or (windowed and market.ts_ns > parent.end_ns)
