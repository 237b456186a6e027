"""Iceberg, minimum-quantity and conditional orders: ways of hiding size or waiting for a price.

* `IcebergAlgo`: a limit order that shows `display_qty` at a time. One child (LIMIT at the parent's limit, the
  shown part) works at once; when it has gone (filled, or expired/cancelled) the next one is sent for
  min(display_qty, remaining), so the book never sees more than the shown size. Every `ChildSpec` carries
  `display_qty`, but the child `Order` does not: the algorithm itself is the reserve order, no venue is sent one.
* Minimum quantity: every algorithm takes `min_qty`, set on each child as `ChildSpec.min_qty` (capped at the child's
  own size) and carried onto the child `Order.min_qty`; SimBroker and the routed venues fill it only in parts of
  at least min(min_qty, leaves), and the Alpaca adapter refuses it (Alpaca has no such order type).
* `ConditionalAlgo`: sends nothing until the market crosses `trigger_price` (`trigger` "above": price >= trigger;
  "below": price <= trigger), then runs an inner algorithm on the parent's own window (a late trigger catches up
  to the inner schedule). The state "triggered" is derived, not stored: a child has been sent, or the price is
  across the trigger now, so a restarted actor resumes the same way.
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
    common_params,
    fail,
    is_filled,
    param_choice,
    param_float,
    spec,
)
from tradesys.execution.algos.base import ChildSpec, ExecutionAlgo, MarketSlice, ParentOrder, ParentProgress


@dataclass(frozen=True, slots=True)
class IcebergAlgo:
    """Show `display_qty`, reload when the shown part is gone; needs the parent's limit price."""

    display_qty: float = 100.0
    lot: float = 1.0
    min_qty: float = 0.0
    name: str = "iceberg"

    @classmethod
    def from_params(cls, params: Mapping[str, object]) -> IcebergAlgo:
        check_unknown("iceberg", params, ("display_qty", *COMMON))
        lot, min_qty = common_params("iceberg", params)
        display = param_float("iceberg", params, "display_qty", 100.0, 0.0, 1e15, lo_open=True)
        if display < lot - EPS:
            fail("iceberg.display_qty", f"must be at least one lot ({lot:g})", display)
        return cls(display_qty=display, lot=lot, min_qty=min_qty)

    def children(self, parent: ParentOrder, progress: ParentProgress, market: MarketSlice) -> list[ChildSpec]:
        check_parent(self.name, parent, needs_window=False)
        if parent.limit_price is None:
            fail("parent.limit_price", "an iceberg needs a limit price", None)
        if self.done(parent, progress, market) or market.ts_ns < parent.start_ns or progress.working_qty > EPS:
            return []
        remaining = progress.remaining(parent)
        show = math.floor(self.display_qty / self.lot + EPS) * self.lot
        qty = remaining if remaining <= show + EPS else show
        if qty <= EPS:
            return []
        return [spec(parent, qty, min_qty=self.min_qty, display_qty=min(self.display_qty, qty))]

    def done(self, parent: ParentOrder, progress: ParentProgress, market: MarketSlice) -> bool:
        windowed = parent.end_ns > parent.start_ns
        return is_filled(parent, progress) or (windowed and market.ts_ns > parent.end_ns)


@dataclass(frozen=True, slots=True)
class ConditionalAlgo:
    """Nothing until the price crosses `trigger_price`, then the `inner` algorithm (see the module docstring)."""

    inner: ExecutionAlgo
    trigger_price: float
    trigger: str = "above"
    name: str = "conditional"

    @classmethod
    def from_params(cls, params: Mapping[str, object], inner: ExecutionAlgo) -> ConditionalAlgo:
        """`params` holds trigger_price and trigger only (the registry hands the rest to the inner algorithm)."""
        check_unknown("conditional", params, ("trigger_price", "trigger"))
        if "trigger_price" not in params:
            fail("conditional.trigger_price", "is required", None)
        price = param_float("conditional", params, "trigger_price", 0.0, 0.0, 1e12, lo_open=True)
        side = param_choice("conditional", params, "trigger", "above", ("above", "below"))
        return cls(inner=inner, trigger_price=price, trigger=side)

    def crossed(self, market: MarketSlice) -> bool:
        """The market is across the trigger now (price >= trigger for "above", <= for "below")."""
        p = market.price
        if not math.isfinite(p):
            return False
        return p >= self.trigger_price if self.trigger == "above" else p <= self.trigger_price

    def triggered(self, progress: ParentProgress, market: MarketSlice) -> bool:
        return progress.children > 0 or self.crossed(market)

    def children(self, parent: ParentOrder, progress: ParentProgress, market: MarketSlice) -> list[ChildSpec]:
        if self.done(parent, progress, market) or not self.triggered(progress, market):
            return []
        return self.inner.children(parent, progress, market)

    def done(self, parent: ParentOrder, progress: ParentProgress, market: MarketSlice) -> bool:
        if is_filled(parent, progress):
            return True
        if self.triggered(progress, market):
            return self.inner.done(parent, progress, market)
        return parent.end_ns > parent.start_ns and market.ts_ns > parent.end_ns
