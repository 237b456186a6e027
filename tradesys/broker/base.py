"""The broker interface: where orders go and where fills come from.

`SimBroker` (a matching engine over replayed bars) implements it in-process; it is the only venue so far (there
is no Alpaca broker yet: `tradesys.data.alpaca` is market data only). Submitting a client order id the broker
has already seen returns no new events: a retry after a crash never sends an order twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import pyarrow as pa

from tradesys.core.orders import Fill, Order, OrderEvent, OrderState


@runtime_checkable
class Broker(Protocol):
    def submit(self, orders: Sequence[Order]) -> list[OrderEvent]:
        """Accept or reject each order; marketable orders may fill at once. Duplicate ids yield nothing."""
        ...

    def cancel(self, client_order_ids: Sequence[str], ts_ns: int) -> list[OrderEvent]: ...

    def on_bars(self, bars: pa.RecordBatch) -> list[OrderEvent]:
        """Advance the venue to a new bar batch: match resting orders, expire DAY orders. (Sim only.)"""
        ...

    def order_state(self, client_order_id: str) -> OrderState | None:
        """The venue's view of an order, for reconciliation after a restart."""
        ...

    def open_orders(self) -> list[OrderState]: ...

    def fills_for(self, client_order_id: str) -> list[Fill]:
        """Every fill the venue made for an order, for reconciliation after a restart."""
        ...
