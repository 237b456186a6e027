"""MultiVenueBroker: smart order routing across simulated venues behind the `Broker` protocol (pure: no Ray, no I/O).

The ExecutionService sends an order as it always does; this broker routes it (`tradesys.execution.routing.route`)
and works it as child orders, one per venue used, with ids `f"{client_order_id}@{venue}"`. What comes back is in
the OMS's terms: events under the parent's client order id, fills whose id names the venue
(`f"{client_order_id}@{venue}:{n}"`), so the ledger needs no notion of venues.

Venues
    * lit: one `SimBroker` each (its matching rules, its own share of each bar's volume as `participation_cap`,
      the market's half spread as `broker.slippage_bps`, `broker.impact` as configured); the venue's fee
      (bps, per share, minimum) is charged here on each fill;
    * dark: fills only at the mid (the fresh quote's midpoint where the lit venues have one, else the bar close),
      only for a child of at least `min_qty`, at once or not at all (immediate-or-cancel), from its own share of
      each bar's volume (none when the bar's volume is unknown: the lit venues then have no cap, as SimBroker, but
      nothing says there is hidden contra interest). The router sends a dark venue no more than it can fill now, so
      a dark child fills in full.
    * minimum quantity (`Order.min_qty`): the router gives no venue a child under it (`route(..., min_qty=)`), and
      each child carries it (capped at the child's size), so a lit venue applies SimBroker's minimum-quantity rule
      to every fill of its child and a dark child (all or nothing) is never under it;
    * latency: a bar replay has no prices inside a bar, so a venue's `latency_ms` cannot move a fill; it is a cost
      term of the router's estimate (the expected adverse move while in flight, from the symbol's volatility).

Parent orders
    * duplicate client order id: no events (counted in `duplicates`); invalid or no bar yet: REJECTED, as SimBroker;
    * FOK: routed with nothing allowed to rest; not fillable in full now: REJECTED, FOK_NOT_FILLABLE; else its
      children go as IOC (each within its venue's liquidity, so they fill);
    * otherwise ACCEPTED, then the children are sent in venue order; the parent is FILLED when the children's fills
      add up to its quantity; once every child is done and it is not filled, it is EXPIRED (a DAY child expired) or
      CANCELED (IOC remainders, or `cancel`).
    * every routing decision is kept for the audit log: `drain_audit()` returns them (kind "route", the split, the
      cost estimates and the reason in the payload) and the ExecutionService commits them with the step.

restore(config, orders, fills, sent, bars, audit): the broker as it stood after the last of `bars`, from the ledger.
Each parent's split comes from its "route" audit row (the decision as made; without one, from its fills per venue,
any open remainder on the first lit venue); each lit venue is then `SimBroker.restore`d from its children, and each
dark venue's liquidity left in the last bar is its share of the volume minus its fills at that bar.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import pyarrow as pa

from tradesys.broker.sim import SimBroker
from tradesys.config import BrokerConfig, VenueConfig
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
from tradesys.execution.routing import RouteMarket, RoutingDecision, Venue, route
from tradesys.ledger.base import AuditEntry

_EPS = 1e-9
_EWMA = 0.94  # RiskMetrics decay for the per-bar variance of log returns (the router's latency and delay terms)

DEFAULT_VENUES: tuple[VenueConfig, ...] = (
    VenueConfig(name="primary", fee_bps=0.5, latency_ms=0.5, participation=0.06),
    VenueConfig(name="ecn", fee_bps=0.2, fee_per_share=0.0005, latency_ms=2.0, participation=0.03),
    VenueConfig(name="dark", dark=True, fee_bps=0.1, latency_ms=5.0, participation=0.01, min_qty=100.0),
)


def venue_of(cfg: VenueConfig) -> Venue:
    """The router's view of a configured venue."""
    return Venue(cfg.name, cfg.dark, cfg.fee_bps, cfg.fee_per_share, cfg.fee_min, cfg.latency_ms, cfg.participation,
                 cfg.min_qty)


def child_id(client_order_id: str, venue: str) -> str:
    return f"{client_order_id}@{venue}"


def split_child_id(child: str) -> tuple[str, str]:
    """(parent client order id, venue) of a child id or of a fill id's order part."""
    parent, _, venue = child.rpartition("@")
    return parent, venue


class _Dark:
    """A dark venue's book: the liquidity left in each symbol's current bar, its children and their fills."""

    __slots__ = ("liq", "venue")

    def __init__(self, venue: Venue) -> None:
        self.venue = venue
        self.liq: dict[str, float] = {}


class _Parent:
    """A parent order: its state as the OMS sees it, its fills, and its children (venue -> child quantity)."""

    __slots__ = ("children", "done", "fills", "state")

    def __init__(self, state: OrderState) -> None:
        self.state = state
        self.fills: list[Fill] = []
        self.children: dict[str, float] = {}
        self.done: set[str] = set()  # venues whose child is terminal


class MultiVenueBroker:
    """Routes each order across simulated venues (module docstring); implements `tradesys.broker.base.Broker`."""

    def __init__(self, config: BrokerConfig, wall_clock: Callable[[], int] = time.time_ns) -> None:
        self.config = config
        self._wall = wall_clock
        cfgs = config.venues if config.venues is not None else DEFAULT_VENUES
        self.venues: tuple[Venue, ...] = tuple(venue_of(v) for v in cfgs)
        self._lit: dict[str, SimBroker] = {
            v.name: SimBroker(self._lit_config(v), wall_clock) for v in self.venues if not v.dark
        }
        self._dark: dict[str, _Dark] = {v.name: _Dark(v) for v in self.venues if v.dark}
        self._by_name = {v.name: v for v in self.venues}
        self._half_spread_bps = config.slippage_bps
        self._close: dict[str, tuple[int, float, float | None]] = {}  # symbol -> (ts, close, volume) of its last bar
        self._var: dict[str, float] = {}  # symbol -> EWMA variance of per-bar log returns
        self._bar_ms: dict[str, float] = {}  # symbol -> shortest bar interval seen (ms)
        self._parents: dict[str, _Parent] = {}
        self._open: dict[str, _Parent] = {}  # insertion order = acceptance order
        self._audit: list[AuditEntry] = []
        self.orders_seen = 0
        self.fills_count = 0
        self.duplicates = 0

    def _lit_config(self, v: Venue) -> BrokerConfig:
        """A lit venue's SimBroker: its own share of volume; fees are charged by this broker (per share too)."""
        return self.config.model_copy(
            update={"kind": "sim", "venues": None, "fee_bps": 0.0, "fee_min": 0.0, "participation_cap": v.participation}
        )

    # ---------------------------------------------------------------- restore

    @classmethod
    def restore(
        cls,
        config: BrokerConfig,
        orders: Iterable[Mapping[str, Any]],
        fills: Iterable[Mapping[str, Any]],
        sent: set[str],
        bars: Iterable[pa.RecordBatch],
        audit: Iterable[Mapping[str, Any]] = (),
        wall_clock: Callable[[], int] = time.time_ns,
        quotes: Iterable[pa.RecordBatch] = (),
    ) -> MultiVenueBroker:
        """Rebuild the broker from ledger rows, the bars up to the resume point and the "route" audit rows (see the
        module docstring). `orders` oldest first, `fills` in booking order; `quotes`: the quote batches up to the
        resume point, if the run had quotes."""
        from tradesys.execution.oms import fill_from_row, order_from_row

        broker = cls(config, wall_clock)
        history = list(bars)
        quote_history = list(quotes)
        for batch in history:
            broker._observe(batch)
        splits = {
            a["client_order_id"]: dict((a.get("payload") or {}).get("children") or {})
            for a in audit
            if a.get("kind") == "route" and a.get("client_order_id")
        }
        rows = sorted((r for r in orders if r["client_order_id"] in sent), key=lambda r: int(r["ts_ns"]))
        fills_of: dict[str, list[Mapping[str, Any]]] = {}
        for f in fills:
            fills_of.setdefault(str(f["client_order_id"]), []).append(f)
        child_rows: dict[str, list[dict[str, Any]]] = {name: [] for name in broker._lit}
        child_fills: dict[str, list[dict[str, Any]]] = {name: [] for name in broker._lit}
        first_lit = next(iter(broker._lit))
        for r in rows:
            cid = r["client_order_id"]
            st = OrderState(
                order_from_row(r),
                status=OrderStatus(r["status"]),
                filled_qty=float(r["filled_qty"] or 0.0),
                avg_fill_price=float(r["avg_fill_price"] or 0.0),
                reason=RejectReason(r["reason"]) if r.get("reason") else None,
                detail=r.get("detail") or "",
            )
            p = _Parent(st)
            broker._parents[cid] = p
            by_venue: dict[str, list[Mapping[str, Any]]] = {}
            for f in fills_of.get(cid, ()):
                p.fills.append(fill_from_row(f))
                st.fill_ids.append(str(f["fill_id"]))
                by_venue.setdefault(split_child_id(str(f["fill_id"]).rpartition(":")[0])[1], []).append(f)
            broker.fills_count += len(p.fills)
            split = {k: float(q) for k, q in splits.get(cid, {}).items() if k in broker._by_name}
            if not split and st.status is not OrderStatus.REJECTED:  # no decision on record: the fills say it
                split = {k: sum(float(f["qty"]) for f in fs) for k, fs in by_venue.items() if k in broker._by_name}
                if not st.status.is_terminal and st.leaves_qty > _EPS:
                    split[first_lit] = split.get(first_lit, 0.0) + st.leaves_qty
            p.children = split
            for venue, qty in split.items():
                vfills = by_venue.get(venue, [])
                filled = sum(float(f["qty"]) for f in vfills)
                if venue in broker._dark or filled >= qty - _EPS:
                    p.done.add(venue)
                if venue in broker._dark:
                    continue
                child_rows[venue].append(broker._child_row(r, st, venue, qty, vfills, filled))
                child_fills[venue] += [{**f, "client_order_id": child_id(cid, venue)} for f in vfills]
            if not st.status.is_terminal:
                broker._open[cid] = p
        for name in broker._lit:
            ids = {c["client_order_id"] for c in child_rows[name]}
            cfg = broker._lit_config(broker._by_name[name])
            broker._lit[name] = SimBroker.restore(
                cfg, child_rows[name], child_fills[name], ids, history, wall_clock, quote_history
            )
        last = {sym: ts for sym, (ts, _, _) in broker._close.items()}
        for p in broker._parents.values():
            for f in p.fills:
                venue = split_child_id(f.fill_id.rpartition(":")[0])[1]
                dark = broker._dark.get(venue)
                if dark is not None and last.get(f.symbol) == f.ts_ns:
                    dark.liq[f.symbol] = dark.liq.get(f.symbol, 0.0) - f.qty
        broker.orders_seen = len(broker._parents)
        return broker

    @staticmethod
    def _child_row(
        r: Mapping[str, Any], st: OrderState, venue: str, qty: float, fills: Sequence[Mapping[str, Any]], filled: float
    ) -> dict[str, Any]:
        """The ledger row a lit child would have had: the parent's terms, the child's quantity and fills, and a
        status consistent with the parent's (a done parent's unfilled child ended as the parent did)."""
        if filled >= qty - _EPS:
            status = OrderStatus.FILLED
        elif st.status.is_terminal:
            status = st.status if st.status is not OrderStatus.FILLED else OrderStatus.CANCELED
        else:
            status = OrderStatus.PARTIALLY_FILLED if filled > 0 else OrderStatus.ACCEPTED
        notional = sum(float(f["qty"]) * float(f["price"]) for f in fills)
        tif = TimeInForce.IOC.value if r["tif"] == TimeInForce.FOK.value else r["tif"]
        return {
            **r,
            "client_order_id": child_id(str(r["client_order_id"]), venue),
            "qty": qty,
            "min_qty": min(float(r.get("min_qty") or 0.0), qty),
            "tif": tif,
            "status": status.value,
            "filled_qty": filled,
            "avg_fill_price": notional / filled if filled > 0 else 0.0,
            "reason": None,
            "detail": "",
        }

    # ---------------------------------------------------------------- queries

    def order_state(self, client_order_id: str) -> OrderState | None:
        p = self._parents.get(client_order_id)
        return None if p is None else p.state.copy()

    def open_orders(self) -> list[OrderState]:
        return [p.state.copy() for p in self._open.values()]

    def fills_for(self, client_order_id: str) -> list[Fill]:
        p = self._parents.get(client_order_id)
        return [] if p is None else list(p.fills)

    def orders(self) -> list[OrderState]:
        """Every parent order seen (rejected ones too), in submission order (reconciliation's view)."""
        return [p.state.copy() for p in self._parents.values()]

    def positions(self) -> dict[str, float]:
        """Net filled quantity per symbol, over every venue."""
        out: dict[str, float] = {}
        for p in self._parents.values():
            for f in p.fills:
                out[f.symbol] = out.get(f.symbol, 0.0) + f.signed_qty
        return out

    reconnects = 0  # in-process venues never lose their connection
    opening_cash: float | None = None

    def cash(self) -> float | None:
        """opening_cash minus what the fills bought, plus what they sold, minus fees; None without opening_cash."""
        if self.opening_cash is None:
            return None
        return self.opening_cash - sum(f.signed_qty * f.price + f.fee for p in self._parents.values() for f in p.fills)

    def venue(self, name: str) -> SimBroker:
        """A lit venue's matching engine (for inspection)."""
        return self._lit[name]

    def drain_audit(self) -> list[AuditEntry]:
        """The routing decisions made since the last call, as "route" audit entries (then forgotten here)."""
        out, self._audit = self._audit, []
        return out

    def market(self, symbol: str) -> RouteMarket | None:
        """What the router sees for `symbol` now (None before its first bar)."""
        last = self._close.get(symbol)
        if last is None:
            return None
        _, close, _ = last
        mid, half = close, self._half_spread_bps
        quote = self._quote(symbol)
        if quote is not None:
            bid, ask = quote
            mid = 0.5 * (bid + ask)
            half = 1e4 * 0.5 * (ask - bid) / mid
        cap = {name: sim.liquidity_left(symbol) for name, sim in self._lit.items()}
        cap.update({name: d.liq.get(symbol, 0.0) for name, d in self._dark.items()})
        var = self._var.get(symbol, 0.0)
        return RouteMarket(mid, half, math.sqrt(var), self._bar_ms.get(symbol, 0.0), cap)

    def _quote(self, symbol: str) -> tuple[float, float] | None:
        """The lit venues' fresh quote (the first lit venue's: every lit venue is handed the same quotes)."""
        return next(iter(self._lit.values())).quote(symbol)

    # ---------------------------------------------------------------- commands

    def submit(self, orders: Sequence[Order]) -> list[OrderEvent]:
        events: list[OrderEvent] = []
        for order in orders:
            cid = order.client_order_id
            if cid in self._parents:
                self.duplicates += 1
                continue
            self.orders_seen += 1
            st = OrderState(order)
            p = self._parents[cid] = _Parent(st)
            last = self._close.get(order.symbol)
            ts = last[0] if last is not None else order.ts_ns
            problem = order.validate()
            if problem is not None:
                self._reject(p, RejectReason.INVALID_ORDER, problem, ts, events)
                continue
            market = self.market(order.symbol)
            if market is None:
                self._reject(p, RejectReason.NO_MARKET_PRICE, f"no bar seen yet for {order.symbol}", ts, events)
                continue
            decision = self._route(order, market)
            self._audit.append(AuditEntry(ts, "route", decision.reason, cid, decision.payload()))
            if not decision.fillable:
                self._reject(p, RejectReason.FOK_NOT_FILLABLE, decision.reason, ts, events)
                continue
            st.status = OrderStatus.ACCEPTED
            events.append(OrderEvent(EventKind.ACCEPTED, cid, ts))
            p.children = decision.children()
            tif = TimeInForce.IOC if order.tif is TimeInForce.FOK else order.tif
            for venue, qty in p.children.items():
                child = replace(order, client_order_id=child_id(cid, venue), qty=qty, tif=tif,
                                min_qty=min(order.min_qty, qty))
                if venue in self._dark:
                    self._dark_fill(p, self._dark[venue], child, market.mid, ts, events)
                else:
                    self._relay(venue, self._lit[venue].submit([child]), events)
            self._settle(p, ts, events)
        return events

    def cancel(self, client_order_ids: Sequence[str], ts_ns: int) -> list[OrderEvent]:
        events: list[OrderEvent] = []
        for cid in client_order_ids:
            p = self._open.pop(cid, None)
            if p is None:
                continue
            for venue in p.children:
                if venue in self._lit and venue not in p.done:
                    self._lit[venue].cancel([child_id(cid, venue)], ts_ns)
                    p.done.add(venue)
            p.state.status, p.state.detail = OrderStatus.CANCELED, "canceled on request"
            events.append(OrderEvent(EventKind.CANCELED, cid, ts_ns, detail=p.state.detail))
        return events

    def on_bars(self, bars: pa.RecordBatch) -> list[OrderEvent]:
        new = self._observe(bars)
        if not new:
            return []
        events: list[OrderEvent] = []
        for name, sim in self._lit.items():
            self._relay(name, sim.on_bars(bars), events)
        for cid, p in list(self._open.items()):
            last = self._close.get(p.state.order.symbol)
            self._settle(p, last[0] if last is not None else 0, events)
            if p.state.status.is_terminal:
                self._open.pop(cid, None)
        return events

    def on_quotes(self, quotes: pa.RecordBatch) -> None:
        """Hand a quote batch to every lit venue (they trade against it; the dark venue's mid comes from it)."""
        for sim in self._lit.values():
            sim.on_quotes(quotes)

    # ---------------------------------------------------------------- internals

    def _observe(self, bars: pa.RecordBatch) -> set[str]:
        """Take the bars newer than each symbol's last: close, volatility, bar length, dark liquidity. Returns the
        symbols that moved on (a replayed bar is ignored, as SimBroker ignores it)."""
        new: set[str] = set()
        for sym, bar in SimBroker._read_bars(bars).items():  # the venue's own missing-value rules
            last = self._close.get(sym)
            if last is not None and bar.ts <= last[0]:
                continue
            if last is not None:
                r = math.log(bar.close / last[1])
                var = self._var.get(sym)
                self._var[sym] = r * r if var is None else _EWMA * var + (1.0 - _EWMA) * r * r
                gap = (bar.ts - last[0]) / 1e6
                self._bar_ms[sym] = min(self._bar_ms.get(sym, gap), gap)
            self._close[sym] = (bar.ts, bar.close, bar.volume)
            for d in self._dark.values():  # unknown volume: no contra interest to count on in the dark
                d.liq[sym] = 0.0 if bar.volume is None else d.venue.participation * max(bar.volume, 0.0)
            new.add(sym)
        return new

    def _route(self, order: Order, market: RouteMarket) -> RoutingDecision:
        """Route one order: stops and limits away from the market rest at the cheapest lit venue; a limit trades
        in the dark only if the mid satisfies it; FOK may not rest."""
        buy = order.side is Side.BUY
        half = market.half_spread_bps / 1e4
        touch = market.mid * (1 + half) if buy else market.mid * (1 - half)
        close = self._close[order.symbol][1]
        marketable, dark_ok = True, True
        if order.type is OrderType.STOP:
            marketable = False
        elif order.type is OrderType.LIMIT:
            lim = order.limit_price
            assert lim is not None
            # the lit venues' own test (limit through the last close or the quote's touch), and the mid for the dark
            ref = close if self._quote(order.symbol) is None else touch
            marketable = lim >= ref if buy else lim <= ref
            dark_ok = lim >= market.mid if buy else lim <= market.mid
        return route(order.qty, self.venues, market, marketable=marketable, dark_ok=dark_ok,
                     fill_now=order.tif is TimeInForce.FOK, min_qty=order.min_qty)

    def _dark_fill(self, p: _Parent, dark: _Dark, child: Order, mid: float, ts: int, events: list[OrderEvent]) -> None:
        """Midpoint, all-or-nothing against the dark venue's liquidity left, never under its minimum."""
        left = dark.liq.get(child.symbol, 0.0)
        p.done.add(dark.venue.name)
        if child.qty < max(dark.venue.min_qty, child.min_qty) - _EPS or left < child.qty - _EPS:
            return
        dark.liq[child.symbol] = left - child.qty
        self._book(p, dark.venue, child.qty, mid, ts, 1, events)

    def _relay(self, venue: str, child_events: Sequence[OrderEvent], events: list[OrderEvent]) -> None:
        """A lit venue's child events in the parent's terms: fills re-issued with the venue's fee; a child that
        ended is marked done (the parent settles once all are)."""
        v = self._by_name[venue]
        for e in child_events:
            parent_id, _ = split_child_id(e.client_order_id)
            p = self._parents.get(parent_id)
            if p is None:
                continue
            if e.kind is EventKind.FILL and e.fill is not None:
                n = int(e.fill.fill_id.rpartition(":")[2])
                self._book(p, v, e.fill.qty, e.fill.price, e.fill.ts_ns, n, events, e.fill.wall_ns)
                if p.state.filled_qty >= p.state.order.qty - _EPS or self._child_filled(venue, e.client_order_id):
                    p.done.add(venue)
            elif e.kind in (EventKind.CANCELED, EventKind.EXPIRED, EventKind.REJECTED):
                p.done.add(venue)
                if e.kind is EventKind.EXPIRED:
                    p.state.detail = "day order expired"

    def _child_filled(self, venue: str, cid: str) -> bool:
        st = self._lit[venue].order_state(cid)
        return st is not None and st.status is OrderStatus.FILLED

    def _book(
        self, p: _Parent, v: Venue, qty: float, price: float, ts: int, n: int, events: list[OrderEvent],
        wall: int | None = None,
    ) -> None:
        """One fill on the parent, id `parent@venue:n`, with the venue's fee."""
        st = p.state
        order = st.order
        cid = order.client_order_id
        fill = Fill(f"{child_id(cid, v.name)}:{n}", cid, order.symbol, order.side, qty, price, v.fee(qty, price), ts,
                    self._wall() if wall is None else wall)
        p.fills.append(fill)
        total = st.filled_qty + qty
        st.avg_fill_price = (st.avg_fill_price * st.filled_qty + price * qty) / total
        st.filled_qty = total
        st.fill_ids.append(fill.fill_id)
        st.status = OrderStatus.FILLED if total >= order.qty - _EPS else OrderStatus.PARTIALLY_FILLED
        self.fills_count += 1
        events.append(OrderEvent(EventKind.FILL, cid, ts, fill=fill))

    def _settle(self, p: _Parent, ts: int, events: list[OrderEvent]) -> None:
        """After a parent's children moved: filled, still working, or (every child done) expired or canceled."""
        st = p.state
        cid = st.order.client_order_id
        if st.status is OrderStatus.FILLED:
            self._open.pop(cid, None)
            return
        if st.status.is_terminal:
            return
        if not p.done.issuperset(p.children):
            self._open[cid] = p
            return
        self._open.pop(cid, None)
        if st.detail == "day order expired":
            st.status = OrderStatus.EXPIRED
            events.append(OrderEvent(EventKind.EXPIRED, cid, ts, detail=st.detail))
        else:
            st.status, st.detail = OrderStatus.CANCELED, "ioc: unfilled remainder canceled"
            events.append(OrderEvent(EventKind.CANCELED, cid, ts, detail=st.detail))

    def _reject(self, p: _Parent, reason: RejectReason, detail: str, ts: int, events: list[OrderEvent]) -> None:
        st = p.state
        st.status, st.reason, st.detail = OrderStatus.REJECTED, reason, detail
        events.append(OrderEvent(EventKind.REJECTED, st.order.client_order_id, ts, reason=reason, detail=detail))


def restore_routed(
    cfg: BrokerConfig,
    bars: Iterable[pa.RecordBatch],
    orders: Sequence[Mapping[str, Any]],
    fills: Sequence[Mapping[str, Any]],
    audit: Iterable[Mapping[str, Any]],
) -> MultiVenueBroker:
    """The routed broker as of the last of `bars` (as `tradesys.engine.recovery.restore_venue` for the sim): every
    order it had seen (not refused by the gate, not still NEW in the ledger), with the ledger's fills and the
    routing decisions of the audit log."""
    rows = list(audit)
    rejected = {a["client_order_id"] for a in rows if a["kind"] == "risk_reject" and a.get("client_order_id")}
    sent = {
        o["client_order_id"]
        for o in orders
        if o["client_order_id"] not in rejected and o["status"] != OrderStatus.NEW.value
    }
    return MultiVenueBroker.restore(cfg, orders, fills, sent, bars, rows)
