"""The broker interface: where orders go and where fills come from.

`SimBroker` (a matching engine over replayed bars) implements it in-process; `AlpacaBroker`
(`tradesys.broker.alpaca`, `broker.kind = "alpaca"`) implements it over Alpaca's trading API, where fills arrive
asynchronously: its `on_bars` drains the trade updates received since the last step, and `cancel` only asks (the
CANCELED comes with a later step). Submitting a client order id the broker has already seen returns no new
events: a retry after a crash never sends an order twice.
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
        """The loop's step. Sim: match resting orders against the new bars, expire DAY orders. Alpaca: the updates
        the broker sent since the last step (fills, cancels, expiries)."""
        ...

    def order_state(self, client_order_id: str) -> OrderState | None:
        """The venue's view of an order, for reconciliation after a restart."""
        ...

    def open_orders(self) -> list[OrderState]: ...

    def fills_for(self, client_order_id: str) -> list[Fill]:
        """Every fill the venue made for an order, for reconciliation after a restart."""
        ...
