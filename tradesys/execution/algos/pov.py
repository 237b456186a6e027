"""POV (participation of volume): trade a fixed share of what the market trades, so the footprint scales with it.

At each slice point the cumulative target is `rate * progress.market_volume` (the market's volume in the symbol
since start_ns, the current slice's bar included), and the child is the gap between that target and what is filled
or working: that is `rate` times the volume seen since the last slice, plus any shortfall of earlier children.
A child is capped at `max_child` (0: no cap; a larger gap waits for later slices) and held back while it is below
`min_child` (it accumulates). Completion rule: with `complete` (the default) a slice point at or after
`end_ns - complete_before_ns` sends the whole remainder, so the parent finishes by end_ns; without it the parent
simply stops at end_ns with what the volume allowed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from tradesys.execution.algos._common import (
    COMMON,
    EPS,
    check_parent,
    check_unknown,
    child_qty,
    common_params,
    expired,
    fail,
    is_filled,
    one,
    param_bool,
    param_float,
    param_int,
    sent,
)
from tradesys.execution.algos.base import ChildSpec, MarketSlice, ParentOrder, ParentProgress


@dataclass(frozen=True, slots=True)
class PovAlgo:
    """Children of `rate` times the market volume since the last slice (see the module docstring)."""

    rate: float = 0.1
    min_child: float = 0.0
    max_child: float = 0.0  # 0: no cap
    complete: bool = True
    complete_before_ns: int = 0  # an int: ns timestamps lose precision as floats
    lot: float = 1.0
    min_qty: float = 0.0
    name: str = "pov"

    @classmethod
    def from_params(cls, params: Mapping[str, object]) -> PovAlgo:
        check_unknown("pov", params, ("rate", "min_child", "max_child", "complete", "complete_before_ns", *COMMON))
        lot, min_qty = common_params("pov", params)
        algo = cls(
            rate=param_float("pov", params, "rate", 0.1, 0.0, 1.0, lo_open=True),
            min_child=param_float("pov", params, "min_child", 0.0, 0.0, 1e15),
            max_child=param_float("pov", params, "max_child", 0.0, 0.0, 1e15),
            complete=param_bool("pov", params, "complete", True),
            complete_before_ns=param_int("pov", params, "complete_before_ns", 0, 0, 10**18),
            lot=lot,
            min_qty=min_qty,
        )
        if algo.max_child and algo.max_child < max(algo.min_child, lot):
            fail(
                "pov.max_child",
                f"must be 0 (no cap) or at least min_child and lot ({max(algo.min_child, lot):g})",
                algo.max_child,
            )
        return algo

    def completing(self, parent: ParentOrder, ts_ns: int) -> bool:
        """True at slice points where the completion rule sends the whole remainder."""
        return self.complete and ts_ns >= parent.end_ns - self.complete_before_ns

    def children(self, parent: ParentOrder, progress: ParentProgress, market: MarketSlice) -> list[ChildSpec]:
        check_parent(self.name, parent, needs_window=True)
        if self.done(parent, progress, market) or market.ts_ns < parent.start_ns:
            return []
        if self.completing(parent, market.ts_ns):
            return one(parent, child_qty(parent, progress, parent.qty, self.lot), self.min_qty)
        volume = progress.market_volume if math.isfinite(progress.market_volume) else 0.0
        target = self.rate * max(volume, 0.0)
        qty = child_qty(parent, progress, target, self.lot)
        if self.max_child > 0:
            qty = min(qty, math.floor(self.max_child / self.lot + EPS) * self.lot)
        if qty < self.min_child - EPS and qty < progress.remaining(parent) - EPS:
            return []
        return one(parent, qty, self.min_qty)

    def done(self, parent: ParentOrder, progress: ParentProgress, market: MarketSlice) -> bool:
        return is_filled(parent, progress) or expired(parent, market)

    def participation(self, progress: ParentProgress) -> float:
        """Realised participation so far: sent quantity over market volume (NaN before any volume)."""
        return sent(progress) / progress.market_volume if progress.market_volume > 0 else float("nan")
