"""The order management system: one state machine per client order id.

Transitions: NEW -> ACCEPTED -> PARTIALLY_FILLED -> FILLED, and any open state -> CANCELED / EXPIRED;
NEW -> REJECTED. Terminal states never change. Registering an id twice is a no-op (idempotency), a fill id
seen twice is applied once, and a fill for an unknown order is refused: every fill has an order.

The open orders are also kept in their own index (in registration order), so the per-step queries
(`working_qty`, `open_orders`) cost the open orders, not every order the run ever sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tradesys.core.orders import (
    EventKind,
    Fill,
    Order,
    OrderEvent,
    OrderState,
    OrderStatus,
    OrderType,
    RejectReason,
    Side,
    TimeInForce,
)
from tradesys.ledger.base import OrderUpdate

_EPS = 1e-9


class OmsError(RuntimeError):
    """An event that breaks the order state machine (e.g. a fill for an unknown order)."""


@dataclass(slots=True)
class Applied:
    """What a batch of events changed: rows for the ledger."""

    updates: list[OrderUpdate] = field(default_factory=list)
    fills: list[Fill] = field(default_factory=list)
    rejected: list[OrderEvent] = field(default_factory=list)  # the rejections that changed an order (to audit)
    ignored: int = 0  # duplicate fills and events for terminal orders


class OrderManager:
    def __init__(self) -> None:
        self._orders: dict[str, OrderState] = {}
        self._open: dict[str, OrderState] = {}  # the non-terminal subset of _orders, in registration order
        self._fill_ids: set[str] = set()

    def __len__(self) -> int:
        return len(self._orders)

    def __contains__(self, client_order_id: str) -> bool:
        return client_order_id in self._orders

    def get(self, client_order_id: str) -> OrderState | None:
        st = self._orders.get(client_order_id)
        return None if st is None else st.copy()

    def peek(self, client_order_id: str) -> OrderState | None:
        """The live state, not a copy: for read-only scans over every order (reconciliation); do not mutate it."""
        return self._orders.get(client_order_id)

    def register(self, orders: Iterable[Order]) -> tuple[list[Order], list[Order]]:
        """Track new orders; return (new, duplicates). Duplicates keep their existing state."""
        new, dup = [], []
        for o in orders:
            if o.client_order_id in self._orders:
                dup.append(o)
            else:
                st = OrderState(o)
                self._orders[o.client_order_id] = self._open[o.client_order_id] = st
                new.append(o)
        return new, dup

    def unsent(self, ids: Iterable[str]) -> list[Order]:
        """Orders among `ids` still in NEW: recorded but never acknowledged by the broker."""
        return [st.order for i in ids if (st := self._orders.get(i)) and st.status is OrderStatus.NEW]

    def apply(self, events: Sequence[OrderEvent]) -> Applied:
        out = Applied()
        for ev in events:
            st = self._orders.get(ev.client_order_id)
            if st is None:
                raise OmsError(f"{ev.kind.value} event for unknown order {ev.client_order_id!r}")
            if ev.kind is EventKind.FILL:
                if not self._apply_fill(st, ev, out):
                    out.ignored += 1
                    continue
            elif st.status.is_terminal:
                out.ignored += 1
                continue
            elif ev.kind is EventKind.ACCEPTED:
                if st.status is not OrderStatus.NEW:
                    out.ignored += 1
                    continue
                st.status = OrderStatus.ACCEPTED
            elif ev.kind is EventKind.REJECTED:
                st.status, st.reason, st.detail = OrderStatus.REJECTED, ev.reason, ev.detail
                out.rejected.append(ev)
            elif ev.kind is EventKind.CANCELED:
                st.status, st.detail = OrderStatus.CANCELED, ev.detail
            elif ev.kind is EventKind.EXPIRED:
                st.status, st.detail = OrderStatus.EXPIRED, ev.detail
            if st.status.is_terminal:
                self._open.pop(ev.client_order_id, None)
            out.updates.append(self._update(st, ev.ts_ns))
        return out

    def _apply_fill(self, st: OrderState, ev: OrderEvent, out: Applied) -> bool:
        fill = ev.fill
        if fill is None:
            raise OmsError(f"fill event without a fill for {ev.client_order_id!r}")
        if fill.fill_id in self._fill_ids:
            return False
        if st.status.is_terminal and st.status is not OrderStatus.FILLED:
            raise OmsError(f"fill {fill.fill_id} for {st.status.value} order {ev.client_order_id!r}")
        if fill.symbol != st.order.symbol or fill.side is not st.order.side:
            raise OmsError(f"fill {fill.fill_id} does not match order {ev.client_order_id!r}")
        if st.filled_qty + fill.qty > st.order.qty + _EPS:
            raise OmsError(f"fill {fill.fill_id} overfills order {ev.client_order_id!r}")
        total = st.filled_qty + fill.qty
        st.avg_fill_price = (st.avg_fill_price * st.filled_qty + fill.price * fill.qty) / total
        st.filled_qty = total
        st.fill_ids.append(fill.fill_id)
        st.status = OrderStatus.FILLED if total >= st.order.qty - _EPS else OrderStatus.PARTIALLY_FILLED
        self._fill_ids.add(fill.fill_id)
        out.fills.append(fill)
        return True

    @staticmethod
    def _update(st: OrderState, ts_ns: int) -> OrderUpdate:
        return OrderUpdate(
            st.order.client_order_id, st.status, st.filled_qty, st.avg_fill_price, ts_ns, st.reason, st.detail
        )

    def open_ids(self) -> list[str]:
        """Client order ids of the open orders, in registration order (no state copies: a cheap scan)."""
        return [cid for cid, st in self._open.items() if not st.status.is_terminal]

    def open_orders(self) -> list[OrderState]:
        return [st.copy() for st in self._open.values() if not st.status.is_terminal]

    def working_qty(self) -> dict[str, float]:
        """Signed quantity still working per symbol: what pre-trade risk adds to the position."""
        out: dict[str, float] = {}
        for st in self._open.values():
            if not st.status.is_terminal and st.leaves_qty > 0:
                out[st.order.symbol] = out.get(st.order.symbol, 0.0) + st.order.side.sign * st.leaves_qty
        return out

    def reconcile(self, client_order_id: str, venue: OrderState, venue_fills: Sequence[Fill], ts_ns: int) -> list[
        OrderEvent
    ]:
        """Events that bring our view of one order up to the venue's: missing fills, then the final status."""
        st = self._orders.get(client_order_id)
        if st is None:
            return []
        events: list[OrderEvent] = []
        if st.status is OrderStatus.NEW and venue.status is not OrderStatus.REJECTED:
            events.append(OrderEvent(EventKind.ACCEPTED, client_order_id, ts_ns))
        for f in venue_fills:
            if f.fill_id not in self._fill_ids:
                events.append(OrderEvent(EventKind.FILL, client_order_id, f.ts_ns, fill=f))
        kind = {
            OrderStatus.REJECTED: EventKind.REJECTED,
            OrderStatus.CANCELED: EventKind.CANCELED,
            OrderStatus.EXPIRED: EventKind.EXPIRED,
        }.get(venue.status)
        if kind is not None and not st.status.is_terminal:
            events.append(OrderEvent(kind, client_order_id, ts_ns, reason=venue.reason, detail=venue.detail))
        return events

    @classmethod
    def restore(cls, order_rows: Iterable[Mapping[str, Any]], fill_rows: Iterable[Mapping[str, Any]]) -> OrderManager:
        """Rebuild from the ledger's rows (as returned by Ledger.orders() and Ledger.fills())."""
        oms = cls()
        for r in order_rows:
            order = order_from_row(r)
            st = OrderState(
                order,
                status=OrderStatus(r["status"]),
                filled_qty=float(r["filled_qty"] or 0.0),
                avg_fill_price=float(r["avg_fill_price"] or 0.0),
                reason=RejectReason(r["reason"]) if r.get("reason") else None,
                detail=r.get("detail") or "",
            )
            oms._orders[order.client_order_id] = st
            if not st.status.is_terminal:
                oms._open[order.client_order_id] = st
        for f in fill_rows:
            oms._fill_ids.add(f["fill_id"])
            st = oms._orders.get(f["client_order_id"])
            if st is not None:
                st.fill_ids.append(f["fill_id"])
        return oms


def order_from_row(r: Mapping[str, Any]) -> Order:
    return Order(
        client_order_id=r["client_order_id"],
        symbol=r["symbol"],
        side=Side(r["side"]),
        qty=float(r["qty"]),
        type=OrderType(r["type"]),
        tif=TimeInForce(r["tif"]),
        limit_price=r.get("limit_price"),
        stop_price=r.get("stop_price"),
        strategy_id=r.get("strategy_id") or "",
        ts_ns=int(r.get("ts_ns") or 0),
        decision_wall_ns=int(r.get("decision_wall_ns") or 0),
        min_qty=float(r.get("min_qty") or 0.0),  # absent from rows written before migration 5
    )


def fill_from_row(r: Mapping[str, Any]) -> Fill:
    return Fill(
        fill_id=r["fill_id"],
        client_order_id=r["client_order_id"],
        symbol=r["symbol"],
        side=Side(r["side"]),
        qty=float(r["qty"]),
        price=float(r["price"]),
        fee=float(r["fee"]),
        ts_ns=int(r["ts_ns"]),
        wall_ns=int(r.get("wall_ns") or 0),
    )
