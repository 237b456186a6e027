"""The contract between a parent order, its execution algorithm and the venue (pure: no Ray, no I/O).

A strategy decides *what* to trade (a parent order); an execution algorithm decides *how*: at each slice point
(a bar, or a tick) it turns the parent's remaining quantity into child orders. The algorithm is a pure function of
(parent, progress, market): it keeps no hidden state, so an Execution actor that restarts rebuilds `progress` from
the ledger (the parent row and its children's fills) and the algorithm carries on with the same children it would
have sent undisturbed. Randomised algorithms (TWAP jitter) draw from a generator seeded by the parent id and the
slice index, for the same reason.

Child client order ids are `f"{parent_id}.{n}"` (n = 1, 2, ...), so every child names its parent and a resent child
is the same order at the venue.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from tradesys.core.orders import OrderType, Side, TimeInForce


@dataclass(frozen=True, slots=True)
class ParentOrder:
    """What the strategy wants done: `qty` of `symbol` between `start_ns` and `end_ns`, worked by `algo`."""

    parent_id: str
    symbol: str
    side: Side
    qty: float
    algo: str = "market"  # market | twap | vwap | pov | is | iceberg
    start_ns: int = 0
    end_ns: int = 0
    params: Mapping[str, float | int | str | bool] = field(default_factory=dict)
    limit_price: float | None = None  # never trade through it (None: no limit)
    strategy_id: str = ""
    ts_ns: int = 0  # decision time (market clock)
    decision_price: float = math.nan  # the price when the strategy decided (TCA's benchmark)

    def child_id(self, n: int) -> str:
        return f"{self.parent_id}.{n}"


@dataclass(frozen=True, slots=True)
class MarketSlice:
    """What an algorithm sees at one slice point: the latest bar (or tick) of the parent's symbol."""

    ts_ns: int
    price: float  # last trade / bar close
    volume: float = math.nan  # volume of the latest bar (NaN: unknown)
    bid: float | None = None
    ask: float | None = None

    @property
    def mid(self) -> float:
        if self.bid is not None and self.ask is not None and self.bid > 0 and self.ask >= self.bid:
            return 0.5 * (self.bid + self.ask)
        return self.price


@dataclass(slots=True)
class ParentProgress:
    """The parent's state, all of it derivable from the ledger (children and their fills) and the bars."""

    filled_qty: float = 0.0  # sum of the children's fills
    working_qty: float = 0.0  # children's quantity still open at the venue
    children: int = 0  # children sent so far (the next child is number children + 1)
    slices: int = 0  # slice points seen since start_ns (bars, or ticks)
    market_volume: float = 0.0  # market volume traded in the symbol since start_ns (POV)
    notional: float = 0.0  # sum of fill qty * price (average price = notional / filled_qty)

    def remaining(self, parent: ParentOrder) -> float:
        return max(parent.qty - self.filled_qty - self.working_qty, 0.0)


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """One child order an algorithm asks for; the execution service turns it into an `Order` with its id."""

    qty: float
    type: OrderType = OrderType.MARKET
    limit_price: float | None = None
    tif: TimeInForce = TimeInForce.DAY
    min_qty: float = 0.0  # minimum fill quantity (dark venues, min-qty orders); 0: any
    display_qty: float | None = None  # iceberg: shown size (None: all)


@runtime_checkable
class ExecutionAlgo(Protocol):
    """An execution algorithm: parent + progress + market -> the child orders to send now."""

    name: str

    def children(self, parent: ParentOrder, progress: ParentProgress, market: MarketSlice) -> list[ChildSpec]: ...

    def done(self, parent: ParentOrder, progress: ParentProgress, market: MarketSlice) -> bool:
        """True once nothing more will be sent (filled, or past end_ns)."""
        ...
