"""Reconciliation of the book of record (ledger + OMS) against the broker: pure, no Ray, no I/O.

Why: the ledger is written ahead of the broker, but the broker is the truth about what traded. A dropped ack, a
fill message lost while the stream was down, an order someone sent around the service, or a crash between the
venue's fill and the ledger's write all leave the two apart. `reconcile` compares them and says what to do:

* `adopt`: orders the broker has that the ledger never recorded (sent around the service): record them;
* `events`: order events that bring the ledger up to the broker: ACCEPTED for orders the ledger still has as NEW,
  every fill the ledger lacks (by fill id, each once even if the broker lists it twice), then the final status
  (CANCELED / EXPIRED / REJECTED) of orders the broker closed. Apply them through the OMS, as ordinary events;
* `resend`: orders the ledger still has as NEW that the broker never saw (the write-ahead row exists, the send
  did not happen): send them, in the order they were recorded;
* `breaks`: what booking cannot explain. Order breaks (an accepted order the broker does not know, a fill on an
  order the ledger already closed, an overfill, a filled quantity the broker's fills do not account for) carry
  no amount; the money is in the position breaks (broker minus ledger-after-booking, in shares, sized at the
  mark; a symbol without a mark is sized at infinity: a position we cannot price is not small) and the cash
  break (broker minus ledger-after-booking, when the broker reports cash).

Deterministic (the same views give the same report, in the ledger's order, then the broker's) and idempotent:
once `adopt`/`events`/`resend` are applied, reconciling again books nothing. Cash arithmetic assumes a contract
multiplier of 1 (stocks), as the broker adapters do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tradesys.core.orders import EventKind, Fill, Order, OrderEvent, OrderState, OrderStatus

QTY_TOL = 1e-6
CASH_TOL = 0.01  # a cent: brokers report cash rounded to cents

_CLOSE_EVENT = {
    OrderStatus.CANCELED: EventKind.CANCELED,
    OrderStatus.EXPIRED: EventKind.EXPIRED,
    OrderStatus.REJECTED: EventKind.REJECTED,
}


@dataclass(frozen=True, slots=True)
class LedgerView:
    """The book of record. `orders`: the ledger's state of every open order and of every order the broker view
    names that the ledger knows (an id missing here counts as unknown to the ledger), in registration order."""

    orders: Mapping[str, OrderState]
    positions: Mapping[str, float]
    cash: float
    marks: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BrokerView:
    """The broker's side. `orders`: every order it holds that is open, or that the ledger holds open, or that
    the ledger does not know; `fills`: its fills by client order id (only needed for orders with fills the
    ledger may lack); `positions`/`cash`: None when the broker does not report them (then they are not checked)."""

    orders: Mapping[str, OrderState]
    fills: Mapping[str, Sequence[Fill]]
    positions: Mapping[str, float] | None = None
    cash: float | None = None


@dataclass(frozen=True, slots=True)
class Break:
    """A difference that booking cannot explain. `qty` is broker minus ledger (shares; currency for cash);
    `amount` its size in currency (0 for order-level breaks: their money shows in the position and cash ones)."""

    kind: str  # position | cash | unknown_to_broker | fill_on_closed_order | overfill | filled_qty
    key: str  # symbol, client order id, or "cash"
    qty: float
    amount: float
    detail: str


@dataclass(slots=True)
class ReconcileReport:
    adopt: list[Order] = field(default_factory=list)
    events: list[OrderEvent] = field(default_factory=list)
    resend: list[Order] = field(default_factory=list)
    breaks: list[Break] = field(default_factory=list)

    @property
    def fills(self) -> list[Fill]:
        return [e.fill for e in self.events if e.fill is not None]

    @property
    def break_amount(self) -> float:
        """Total unexplained difference in currency (what the break limit is compared with)."""
        return sum(b.amount for b in self.breaks)

    def counts(self) -> dict[str, int]:
        ev = self.events
        return {
            "adopted": len(self.adopt),
            "fills": sum(1 for e in ev if e.kind is EventKind.FILL),
            "accepted": sum(1 for e in ev if e.kind is EventKind.ACCEPTED),
            "status_changes": sum(1 for e in ev if e.kind in (EventKind.CANCELED, EventKind.EXPIRED,
                                                              EventKind.REJECTED)),
            "resent": len(self.resend),
            "breaks": len(self.breaks),
        }

    @property
    def found_anything(self) -> bool:
        return bool(self.adopt or self.events or self.resend or self.breaks)


def reconcile(ledger: LedgerView, broker: BrokerView, ts_ns: int) -> ReconcileReport:
    """Compare the ledger with the broker (see the module docstring); status events are stamped `ts_ns`."""
    rep = ReconcileReport()
    booked: set[str] = set()
    for cid, st in ledger.orders.items():
        venue = broker.orders.get(cid)
        if venue is None:
            if st.status is OrderStatus.NEW:
                rep.resend.append(st.order)
            elif not st.status.is_terminal:
                rep.breaks.append(Break("unknown_to_broker", cid, -st.filled_qty, 0.0,
                                        f"ledger has {cid} {st.status.value}, the broker does not know it"))
            continue
        _order_events(cid, st, venue, broker.fills.get(cid, ()), ts_ns, booked, rep)
    for cid, venue in broker.orders.items():
        if cid not in ledger.orders:
            rep.adopt.append(venue.order)
            _order_events(cid, OrderState(venue.order), venue, broker.fills.get(cid, ()), ts_ns, booked, rep)
    _money_breaks(ledger, broker, rep)
    return rep


def _order_events(
    cid: str, st: OrderState, venue: OrderState, venue_fills: Sequence[Fill], ts_ns: int, booked: set[str],
    rep: ReconcileReport,
) -> None:
    """Events that bring one ledger order (`st`) up to the broker's (`venue`); breaks where they cannot."""
    known = set(st.fill_ids)
    missing: list[Fill] = []
    for f in venue_fills:
        if f.fill_id not in known and f.fill_id not in booked:
            missing.append(f)
            booked.add(f.fill_id)  # a duplicated fill message is booked once
    if st.status.is_terminal:
        for f in missing:
            rep.breaks.append(Break("fill_on_closed_order", cid, f.signed_qty, 0.0,
                                    f"broker fill {f.fill_id} ({f.qty:g} @ {f.price:g}) on {cid}, which the ledger "
                                    f"has {st.status.value}"))
        if not missing and abs(venue.filled_qty - st.filled_qty) > QTY_TOL:
            rep.breaks.append(_filled_break(cid, st.filled_qty, venue))
        return
    if st.status is OrderStatus.NEW and venue.status is not OrderStatus.REJECTED:
        rep.events.append(OrderEvent(EventKind.ACCEPTED, cid, ts_ns))
    filled = st.filled_qty
    for f in missing:
        if f.symbol != st.order.symbol or f.side is not st.order.side:
            rep.breaks.append(Break("fill_on_closed_order", cid, f.signed_qty, 0.0,
                                    f"broker fill {f.fill_id} ({f.side.value} {f.symbol}) does not match {cid}"))
            booked.discard(f.fill_id)
            continue
        if filled + f.qty > st.order.qty + 1e-9:
            rep.breaks.append(Break("overfill", cid, f.signed_qty, 0.0,
                                    f"broker fill {f.fill_id} takes {cid} to {filled + f.qty:g} of {st.order.qty:g}"))
            booked.discard(f.fill_id)
            continue
        filled += f.qty
        rep.events.append(OrderEvent(EventKind.FILL, cid, f.ts_ns, fill=f))
    if abs(venue.filled_qty - filled) > QTY_TOL:
        rep.breaks.append(_filled_break(cid, filled, venue))
    kind = _CLOSE_EVENT.get(venue.status)
    if kind is not None and filled < st.order.qty - 1e-9:
        rep.events.append(OrderEvent(kind, cid, ts_ns, reason=venue.reason, detail=venue.detail))


def _filled_break(cid: str, ledger_filled: float, venue: OrderState) -> Break:
    return Break("filled_qty", cid, venue.order.side.sign * (venue.filled_qty - ledger_filled), 0.0,
                 f"broker has {venue.filled_qty:g} filled on {cid}, its fills give the ledger {ledger_filled:g}")


def _money_breaks(ledger: LedgerView, broker: BrokerView, rep: ReconcileReport) -> None:
    """Position and cash differences left after booking the report's fills."""
    fills = rep.fills
    if broker.positions is not None:
        expected = {s: q for s, q in ledger.positions.items()}
        last_px: dict[str, float] = {}
        for f in fills:
            expected[f.symbol] = expected.get(f.symbol, 0.0) + f.signed_qty
            last_px[f.symbol] = f.price
        for sym in sorted(set(expected) | set(broker.positions)):
            diff = float(broker.positions.get(sym, 0.0)) - expected.get(sym, 0.0)
            if abs(diff) <= QTY_TOL:
                continue
            mark = ledger.marks.get(sym) or last_px.get(sym)
            amount = abs(diff) * mark if mark is not None and mark > 0 else math.inf
            rep.breaks.append(Break("position", sym, diff, amount,
                                    f"{sym}: broker holds {broker.positions.get(sym, 0.0):g}, the ledger after "
                                    f"booking {expected.get(sym, 0.0):g} (difference {diff:+g})"))
    if broker.cash is not None:
        expected_cash = ledger.cash - sum(f.signed_qty * f.price + f.fee for f in fills)
        diff = float(broker.cash) - expected_cash
        if abs(diff) > CASH_TOL:
            rep.breaks.append(Break("cash", "cash", diff, abs(diff),
                                    f"broker cash {broker.cash:,.2f}, the ledger after booking {expected_cash:,.2f} "
                                    f"(difference {diff:+,.2f})"))
