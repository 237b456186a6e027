"""The execution service: OMS + broker + book, the same object in a backtest and inside the ExecutionActor.

Write-ahead: an order is in the ledger (status NEW) before the broker sees it, so every fill has an order and
a crash at any point is recoverable. On start, `recover` rebuilds the OMS from the ledger and reconciles each
open order with the venue (missing fills, final status); orders still NEW that the venue never saw are sent
then, in the order they were recorded: the step that recorded them had decided to send them, and a resumed run
does not decide that step again. The venue dedupes by client order id, so nothing trades twice.

Reconciliation (`reconcile`, tradesys.execution.reconcile) compares the whole book with the broker: on start (in
`recover`), every `execution.reconcile_every_bars` bars, and after every broker reconnect. What the broker did
that the ledger lacks is booked through the OMS as ordinary events; what cannot be explained is a break (an audit
row each), and while the breaks exceed `execution.reconcile_break_limit` (currency) `submit` refuses new orders.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa

from tradesys.broker.base import Broker
from tradesys.config import ExecutionConfig
from tradesys.core.orders import EventKind, Fill, Order, OrderEvent, OrderState, RejectReason
from tradesys.core.portfolio import PortfolioSnapshot
from tradesys.core.schemas import batch_ts
from tradesys.execution.algos.vwap import VolumeHistory
from tradesys.execution.oms import OrderManager
from tradesys.execution.parents import ParentBook
from tradesys.execution.reconcile import QTY_TOL, BrokerView, LedgerView, ReconcileReport, reconcile
from tradesys.ledger.base import AuditEntry, OrderUpdate, ParentRow, WriteResult


class Book(Protocol):
    """What the service needs from the book-keeper (local `BookKeeper` or the LedgerActor)."""

    def commit(
        self,
        *,
        ts_ns: int,
        orders: Sequence[Order] = (),
        updates: Sequence[OrderUpdate] = (),
        fills: Sequence[Fill] = (),
        marks: Mapping[str, float] | None = None,
        audit: Sequence[AuditEntry] = (),
        parents: Sequence[ParentRow] = (),
    ) -> tuple[PortfolioSnapshot, WriteResult]: ...

    def snapshot(self) -> PortfolioSnapshot: ...

    def parent_rows(self) -> list[dict[str, Any]]:
        """The ledger's parent orders (`Ledger.parent_orders()`), for rebuilding the parent book."""
        ...

    def ledger_rows(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(orders, fills) rows for rebuilding the OMS."""
        ...


@dataclass(slots=True)
class StepReport:
    snapshot: PortfolioSnapshot
    working: dict[str, float]
    orders: int = 0
    rejected: int = 0
    fills: int = 0
    latencies_ns: list[int] = field(default_factory=list)  # decision-to-fill, immediate fills only


def bar_marks(bars: pa.RecordBatch) -> tuple[int, dict[str, float]]:
    """(timestamp ns, {symbol: close}) of a bar batch."""
    if bars.num_rows == 0:
        return 0, {}
    return batch_ts(bars), dict(zip(bars.column("symbol").to_pylist(), bars.column("close").to_pylist(), strict=True))


def _latencies(sent: Sequence[Order], fills: Sequence[Fill]) -> list[int]:
    """Decision-to-fill wall time of the fills made at once for orders just sent."""
    decided = {o.client_order_id: o.decision_wall_ns for o in sent}
    return [f.wall_ns - decided[f.client_order_id] for f in fills if decided.get(f.client_order_id, 0) > 0]


def _audit_for(events: Sequence[OrderEvent], kind: str) -> list[AuditEntry]:
    """Audit rows for rejections. Callers pass the rejections the OMS applied (`Applied.rejected`), so an event the
    OMS ignored (a replayed venue answer for an order a reconciliation already closed) is not audited twice."""
    return [
        AuditEntry(
            e.ts_ns,
            kind,
            f"{e.reason.value if e.reason else 'rejected'}: {e.detail}",
            e.client_order_id,
            {"reason": e.reason.value if e.reason else None},
        )
        for e in events
        if e.kind is EventKind.REJECTED
    ]


def _differs(mine: OrderState, venue: OrderState) -> bool:
    """Whether the ledger's state of an order can differ from the venue's (status, filled quantity or fills)."""
    return (
        mine.status is not venue.status
        or abs(mine.filled_qty - venue.filled_qty) > QTY_TOL
        or (venue.fill_ids != mine.fill_ids and not set(venue.fill_ids) <= set(mine.fill_ids))
    )


def _json_amount(x: float) -> float | None:
    """An amount for a JSON payload: an unpriced (infinite) break is null, not Infinity (PostgreSQL refuses it)."""
    return x if math.isfinite(x) else None


def _venue_audit(broker: Any, sent: bool) -> list[AuditEntry]:
    """The audit rows a broker keeps of its own decisions (a routed broker's "route" rows, tradesys.broker.venues),
    asked for only after a submit; a broker without them (SimBroker) gives none."""
    drain = getattr(broker, "drain_audit", None) if sent else None
    return list(drain()) if callable(drain) else []


def _reconnects(broker: Any) -> int:
    """The broker's reconnect counter: an attribute on a local venue, a method through an actor proxy; 0 if none."""
    n = getattr(broker, "reconnects", 0)
    return int(n() if callable(n) else n)


class ExecutionService:
    def __init__(
        self,
        broker: Broker,
        book: Book,
        oms: OrderManager | None = None,
        wall_clock: Callable[[], int] = time.time_ns,
        settings: ExecutionConfig | None = None,
    ) -> None:
        self.broker = broker
        self.book = book
        self.oms = oms or OrderManager()
        self.wall_clock = wall_clock
        self.settings = settings or ExecutionConfig()
        self.recovered_events = 0
        self.halted: str | None = None  # why new orders are refused: a reconciliation break above the limit
        self.reconcile_stats: dict[str, float] = dict.fromkeys(
            ("runs", "found", "adopted", "fills", "accepted", "status_changes", "resent", "breaks", "break_amount"), 0
        )
        self._bars = 0
        self._reconnects = _reconnects(broker)
        self.parents = ParentBook()  # orders worked by an execution algorithm (tradesys.execution.parents)
        self._closes: dict[str, float] = {}  # the last bar's closes: a parent's decision price
        self.volumes = VolumeHistory()  # past sessions' volumes: a VWAP parent's predicted curve

    @classmethod
    def recover(
        cls,
        broker: Broker,
        book: Book,
        wall_clock: Callable[[], int] = time.time_ns,
        settings: ExecutionConfig | None = None,
    ) -> ExecutionService:
        """Rebuild from the ledger and reconcile it with the venue (orders, fills, positions, cash)."""
        order_rows, fill_rows = book.ledger_rows()
        svc = cls(broker, book, OrderManager.restore(order_rows, fill_rows), wall_clock, settings)
        svc.parents = ParentBook.restore(book.parent_rows())
        svc._closes = dict(book.snapshot().marks)
        svc.recovered_events = svc.reconcile(book.snapshot().ts_ns, "start")[1]
        return svc

    def reconcile(self, ts_ns: int, why: str = "request") -> tuple[ReconcileReport, int]:
        """Compare the book with the broker, book what is missing, audit what is not explained, halt new orders
        while the breaks exceed the limit. Returns (the report, how many order events were applied)."""
        rep = reconcile(*self._views(), ts_ns)
        adopted, _ = self.oms.register(rep.adopt)
        applied = self.oms.apply(rep.events)
        sent = self.broker.submit(rep.resend) if rep.resend else []
        applied_sent = self.oms.apply(sent)
        fills = applied.fills + applied_sent.fills
        # stamped no earlier than the latest recovered fill: a venue that matched step T's bars before a crash
        # must not rewrite the equity row of step T-1 (the retried step T marks the book afterwards)
        ts = max([ts_ns, *(f.ts_ns for f in fills)])
        counts = rep.counts()
        amount = rep.break_amount
        st = self.reconcile_stats
        st["runs"] += 1
        st[f"runs_{why}"] = st.get(f"runs_{why}", 0) + 1  # by trigger: start, schedule, reconnect, request
        st["found"] += rep.found_anything
        for k, v in counts.items():
            st[k] += v
        st["break_amount"] = amount
        audit: list[AuditEntry] = []
        if rep.found_anything:
            audit.append(AuditEntry(ts, "reconcile", f"{why}: " + ", ".join(f"{v} {k}" for k, v in counts.items()),
                                    payload={"why": why, **counts, "break_amount": _json_amount(amount)}))
        audit += [
            AuditEntry(ts, "reconcile_break", f"{b.kind}: {b.detail}",
                       None if b.kind in ("position", "cash") else b.key,
                       {"kind": b.kind, "key": b.key, "qty": b.qty, "amount": _json_amount(b.amount)})
            for b in rep.breaks
        ]
        limit = self.settings.reconcile_break_limit
        if amount > limit:
            was = self.halted
            self.halted = (f"reconciliation break {amount:,.2f} > execution.reconcile_break_limit {limit:,.2f}: "
                           f"new orders refused")
            if was is None:
                audit.append(AuditEntry(ts, "reconcile_halt", self.halted,
                                        payload={"break_amount": _json_amount(amount)}))
        elif self.halted is not None:
            self.halted = None
            audit.append(AuditEntry(ts, "reconcile_resume", f"breaks {amount:,.2f} within the limit {limit:,.2f}"))
        audit += _audit_for(applied_sent.rejected, "broker_reject") + _venue_audit(self.broker, bool(rep.resend))
        if adopted or applied.updates or applied_sent.updates or fills or audit:
            self.book.commit(ts_ns=ts, orders=adopted, updates=applied.updates + applied_sent.updates, fills=fills,
                             audit=audit)
        return rep, len(rep.events) + len(sent)

    def _views(self) -> tuple[LedgerView, BrokerView]:
        """The ledger's and the broker's side, limited to what can differ: open orders on either side, orders
        the ledger does not know, and orders whose state or fills differ."""
        b: Any = self.broker
        open_ids = self.oms.open_ids()
        listed = b.orders() if hasattr(b, "orders") else None  # an actor proxy answers None for a venue without
        if listed is not None:  # the venue lists every order: orders sent around the service show up
            venue = {st.order.client_order_id: st for st in listed}
        else:
            venue = {st.order.client_order_id: st for st in b.open_orders()}
            for cid in open_ids:
                if cid not in venue and (v := b.order_state(cid)) is not None:
                    venue[cid] = v
        # the OMS's live states, not copies: `reconcile` only reads them, and returns before anything is applied
        mine: dict[str, OrderState] = {}
        for cid in open_ids:
            if (st := self.oms.peek(cid)) is not None:
                mine[cid] = st
        scope: dict[str, OrderState] = {}
        need_fills: list[str] = []
        for cid, v in venue.items():
            st = mine.get(cid) or self.oms.peek(cid)
            differs = st is None or _differs(st, v)
            if differs or not v.status.is_terminal or cid in mine:
                scope[cid] = v
                if st is not None and cid not in mine:
                    mine[cid] = st
            if v.filled_qty > 0 and differs:
                need_fills.append(cid)
        fills = {cid: b.fills_for(cid) for cid in need_fills}
        positions = b.positions() if hasattr(b, "positions") else None
        cash = b.cash() if hasattr(b, "cash") else None
        snap = self.book.snapshot()
        return (
            LedgerView(mine, dict(snap.positions), snap.cash, dict(snap.marks)),
            BrokerView(scope, fills, positions, cash),
        )

    def on_bars(self, bars: pa.RecordBatch) -> StepReport:
        """Let the venue match resting orders against new bars, then mark the book to the closes."""
        ts, marks = bar_marks(bars)
        events = self.broker.on_bars(bars)
        applied = self.oms.apply(events)
        snap, _ = self.book.commit(
            ts_ns=ts,
            updates=applied.updates,
            fills=applied.fills,
            marks=marks,
            audit=_audit_for(applied.rejected, "broker_reject"),
        )
        n_fills = len(applied.fills)
        latencies: list[int] = []
        self._closes.update(marks)
        self.volumes.observe(bars)
        if bars.num_rows and self.parents.active():
            snap, n_parent_fills, latencies = self._work_parents(ts, bars)
            n_fills += n_parent_fills
        if bars.num_rows:
            rec = self._scheduled_reconcile(ts)
            if rec is not None:
                snap, n_fills = self.book.snapshot(), n_fills + len(rec.fills)
        return StepReport(snap, self.working_qty(), fills=n_fills, latencies_ns=latencies)

    def _algo_defaults(self, order: Order) -> dict[str, Any]:
        """Parameters the service supplies when the strategy leaves them out: a VWAP parent's volume curve, predicted
        from the completed sessions this service has seen (none with no volume: the schedule is then linear)."""
        if order.algo != "vwap" or any(k == "curve" for k, _ in order.algo_params):
            return {}
        curve = self.volumes.curve_json(order.symbol, order.ts_ns)
        return {} if curve is None else {"curve": curve}

    def working_qty(self) -> dict[str, float]:
        """Signed working quantity per symbol: open orders plus what active parents have still to send."""
        out = self.oms.working_qty()
        for sym, q in self.parents.unsent(self.oms).items():
            out[sym] = out.get(sym, 0.0) + q
        return out

    def _work_parents(self, ts: int, bars: pa.RecordBatch) -> tuple[PortfolioSnapshot, int, list[int]]:
        """Slice every active parent on this bar: record its children with the parent rows (write-ahead, one
        transaction), send them, book the results and each parent's progress. Returns (snapshot, fills, the
        decision-to-fill latencies of the children that filled at once: a child is decided when it is sliced)."""
        cols = bars.to_pydict()
        volumes = cols.get("volume") or [math.nan] * bars.num_rows
        by_symbol = {
            s: (float(c), math.nan if v is None else float(v))
            for s, c, v in zip(cols["symbol"], cols["close"], volumes, strict=True)
            if c is not None and c > 0
        }
        # while reconciliation halts new orders, the algorithms send no children either (the slices still count)
        children, rows = self.parents.slice(ts, by_symbol, self.oms, self.wall_clock, send=self.halted is None)
        new, _ = self.oms.register(children)
        self.book.commit(ts_ns=ts, orders=new, parents=rows)
        to_send = self.oms.unsent(o.client_order_id for o in children)
        events = self.broker.submit(to_send) if to_send else []
        applied = self.oms.apply(events)
        settled = self.parents.settle(ts, self.oms)
        snap, _ = self.book.commit(
            ts_ns=ts,
            updates=applied.updates,
            fills=applied.fills,
            audit=_audit_for(applied.rejected, "broker_reject") + _venue_audit(self.broker, bool(to_send)),
            parents=settled,
        )
        return snap, len(applied.fills), _latencies(to_send, applied.fills)

    def _scheduled_reconcile(self, ts_ns: int) -> ReconcileReport | None:
        """Reconcile after a broker reconnect, and every `execution.reconcile_every_bars` bars."""
        self._bars += 1
        n = _reconnects(self.broker)
        every = self.settings.reconcile_every_bars
        if n > self._reconnects:
            self._reconnects = n
            return self.reconcile(ts_ns, "reconnect")[0]
        if every and self._bars % every == 0:
            return self.reconcile(ts_ns, "schedule")[0]
        return None

    def submit(
        self,
        accepted: Sequence[Order],
        rejected: Sequence[tuple[Order, OrderEvent]] = (),
        ts_ns: int = 0,
        audit: Sequence[AuditEntry] = (),
    ) -> StepReport:
        """Record risk-rejected and accepted orders (write-ahead), send the accepted ones, book the results.

        While reconciliation has halted new orders, every accepted order is refused (reason reconcile_break)."""
        if self.halted is not None and accepted:
            halt = self.halted
            rejected = [*rejected, *((o, OrderEvent(EventKind.REJECTED, o.client_order_id, ts_ns,
                                                    reason=RejectReason.RECONCILE_BREAK, detail=halt))
                                     for o in accepted)]
            accepted = []
        bad = [(o, why) for o in accepted if o.algo and o.client_order_id not in self.parents
               and (why := ParentBook.check(o)) is not None]
        if bad:  # an algorithm the registry refuses: the order is recorded as rejected, never half-worked
            bad_ids = {o.client_order_id for o, _ in bad}
            accepted = [o for o in accepted if o.client_order_id not in bad_ids]
            rejected = [*rejected, *((o, OrderEvent(EventKind.REJECTED, o.client_order_id, ts_ns,
                                                    reason=RejectReason.INVALID_ORDER, detail=f"algo: {why}"))
                                     for o, why in bad)]
        parent_rows = []
        for o in accepted:
            row = self.parents.add(o, self._closes.get(o.symbol), self._algo_defaults(o)) if o.algo else None
            if row is not None:
                parent_rows.append(row)
        accepted = [o for o in accepted if not o.algo]  # a parent is never sent itself: its children are
        new_acc, _ = self.oms.register(accepted)
        new_rej, _ = self.oms.register(o for o, _ in rejected)
        new_rej_ids = {o.client_order_id for o in new_rej}
        rej_events = [e for o, e in rejected if o.client_order_id in new_rej_ids]
        rej_applied = self.oms.apply(rej_events)
        self.book.commit(
            ts_ns=ts_ns,
            orders=[*new_acc, *new_rej],
            updates=rej_applied.updates,
            audit=[*audit, *_audit_for(rej_events, "risk_reject")],
            parents=parent_rows,
        )
        to_send = self.oms.unsent(o.client_order_id for o in accepted)
        events = self.broker.submit(to_send) if to_send else []
        applied = self.oms.apply(events)
        snap, _ = self.book.commit(
            ts_ns=ts_ns,
            updates=applied.updates,
            fills=applied.fills,
            audit=_audit_for(applied.rejected, "broker_reject") + _venue_audit(self.broker, bool(to_send)),
        )
        latencies = _latencies(to_send, applied.fills)
        n_broker_rejects = len(applied.rejected)
        return StepReport(
            snap,
            self.working_qty(),
            orders=len(new_acc) + len(new_rej) + len(parent_rows),
            rejected=len(rej_events) + n_broker_rejects,
            fills=len(applied.fills),
            latencies_ns=latencies,
        )
