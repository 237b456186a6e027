"""SimBroker: a pure in-process matching engine over bar data (no Ray, no I/O).

The same venue serves the backtest and the live loop's BrokerActor, so its rules are deterministic and cheap:
each bar batch is converted to Python values once in `on_bars`; submitting an order does no Arrow work.

State
    * the last bar per symbol (from `on_bars`); its close is the venue's price for orders submitted now;
    * every order's `OrderState` by client order id (rejected ones too) and every fill per order;
    * the resting (open) orders, in acceptance order;
    * per symbol, the liquidity left in the current bar: ``participation_cap * volume`` minus what fills have
      already taken from that bar, shared by every order on the symbol (fills on submit against the last
      bar draw from the same pool as that bar's resting fills). NaN or missing volume means unknown volume:
      no cap. A negative volume counts as zero.

submit(orders) -> events, in order. Per order:
    * a client order id already seen (in any state) -> no events at all; counted in `duplicates`;
    * `order.validate()` fails -> REJECTED, INVALID_ORDER, with the validation text as detail;
    * no usable bar seen yet for the symbol -> REJECTED, NO_MARKET_PRICE;
    * FOK whose whole quantity cannot fill now (not marketable, a stop, or not enough liquidity) -> REJECTED,
      FOK_NOT_FILLABLE, and no fill. The FOK check is made before acceptance, so there is no ACCEPTED event
      (NEW -> REJECTED, as the OMS expects);
    * otherwise ACCEPTED, then immediate matching against the last bar:
        - MARKET fills at close * (1 + slippage) for a buy, close * (1 - slippage) for a sell;
        - LIMIT is marketable when buy limit >= close (sell limit <= close) and fills at the slippage-adjusted
          close, never worse than the limit;
        - STOP never fills on submit; it waits for a later bar;
      the fill quantity is min(leaves, liquidity left); no liquidity, no fill now.
      IOC: the unfilled rest is CANCELED at once. DAY and GTC: the rest rests.
    Event timestamps are the symbol's last bar ts (the order's own ts_ns when there is no bar).

on_bars(batch) -> events:
    1. resets the liquidity of every symbol in the batch to participation_cap * volume;
    2. matches resting orders on those symbols, in acceptance order:
        - MARKET (or a triggered STOP) fills at open * (1 +/- slippage);
        - LIMIT buy fills if low <= limit, at min(open, limit); sell if high >= limit, at max(open, limit);
          no slippage on a resting limit (the limit is the price the order rested at);
        - STOP buy triggers if high >= stop and fills at max(open, stop) * (1 + slippage); sell triggers if
          low <= stop, at min(open, stop) * (1 - slippage). Once triggered it is a market order for its rest;
      the liquidity cap applies to every fill;
    3. makes the batch's bars the last bars;
    4. expires (EXPIRED) every DAY order on a symbol in the batch that still has leaves. Every resting order
       was accepted before this batch, so a DAY order gets exactly one full bar of matching after the bar it
       was submitted in: in a daily replay, an order placed after the close works for the next session.
    GTC orders rest until filled or cancelled.
    A row whose close is missing, NaN or <= 0 is ignored (as if the symbol were absent from the batch); a
    missing open/high/low is taken from the close. If a symbol appears twice in a batch, the last row wins.

Fees: max(fee_min, fee_bps / 1e4 * qty * price) per fill, never negative.
Fill ids are deterministic, f"{client_order_id}:{n}" with n = 1, 2, ... per order; Fill.ts_ns is the bar's ts
in ns and Fill.wall_ns is `wall_clock()`. An order is FILLED once its filled quantity is within 1e-9 of its
quantity (the OMS uses the same tolerance); liquidity below 1e-9 counts as none.

cancel(ids, ts_ns): CANCELED for each open order; unknown or terminal ids give no event.

restore(config, orders, fills, sent, bars): the venue as it stood after the last bar of `bars`, rebuilt from the
ledger (a restarted BrokerActor, or a resumed run, has lost the venue's memory). Every order in `sent` is known
in its ledger state with its ledger fills; open ones rest in (ts, ledger) order; each symbol's last bar comes from
the data and its liquidity is participation_cap * volume minus the fills booked at that bar, subtracted in the
order they were made, so matching continues exactly. Counters continue: orders_seen = orders known, fills = fills
known; duplicates (resends after a crash) start again at 0. A resting stop counts as triggered once it has a fill,
or once a bar of `bars` after its acceptance crossed its stop price (a trigger on a bar with no liquidity leaves no
fill in the ledger, but the bars show it).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from tradesys.config import BrokerConfig
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

_EPS = 1e-9

_BUY = Side.BUY
_MARKET, _LIMIT, _STOP = OrderType.MARKET, OrderType.LIMIT, OrderType.STOP
_DAY, _IOC, _FOK = TimeInForce.DAY, TimeInForce.IOC, TimeInForce.FOK
_FILLED, _PARTIAL = OrderStatus.FILLED, OrderStatus.PARTIALLY_FILLED


class _Bar:
    """One symbol's bar as plain floats: matching reads these per order, so no Arrow access here."""

    __slots__ = ("close", "high", "low", "open", "ts", "volume")

    def __init__(self, ts: int, open_: float, high: float, low: float, close: float, volume: float | None) -> None:
        self.ts, self.open, self.high, self.low, self.close, self.volume = ts, open_, high, low, close, volume


class _Working:
    """A resting order: its state plus whether a stop has triggered (then it behaves as a market order)."""

    __slots__ = ("state", "triggered")

    def __init__(self, state: OrderState) -> None:
        self.state = state
        self.triggered = False


def _floats(bars: pa.RecordBatch, name: str) -> np.ndarray:
    """A column as float64, a null as NaN (one conversion per column, no per-row Python)."""
    return np.asarray(bars.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)


class SimBroker:
    """The simulated venue; see the module docstring for its matching rules."""

    def __init__(self, config: BrokerConfig, wall_clock: Callable[[], int] = time.time_ns) -> None:
        self.config = config
        self._wall = wall_clock
        self._fee_rate = config.fee_bps / 1e4
        self._fee_min = config.fee_min
        self._slip = config.slippage_bps / 1e4
        self._cap = config.participation_cap
        self._bars: dict[str, _Bar] = {}
        self._liq: dict[str, float] = {}
        self._states: dict[str, OrderState] = {}
        self._fills: dict[str, list[Fill]] = {}
        self._open: dict[str, _Working] = {}  # insertion order = acceptance order
        self.orders_seen = 0  # distinct client order ids submitted (rejected ones included)
        self.fills_count = 0
        self.duplicates = 0

    @classmethod
    def restore(
        cls,
        config: BrokerConfig,
        orders: Iterable[Mapping[str, Any]],
        fills: Iterable[Mapping[str, Any]],
        sent: set[str],
        bars: Iterable[pa.RecordBatch],
        wall_clock: Callable[[], int] = time.time_ns,
    ) -> SimBroker:
        """Rebuild the venue from ledger rows (orders oldest first, fills in booking order) and the bars up to the
        resume point; `sent` are the client order ids the venue had seen (see the module docstring)."""
        from tradesys.execution.oms import fill_from_row, order_from_row

        venue = cls(config, wall_clock)
        history = [venue._read_bars(batch) for batch in bars]
        for rows_of_batch in history:
            venue._bars.update(rows_of_batch)
        for sym, bar in venue._bars.items():
            venue._liq[sym] = math.inf if bar.volume is None else venue._cap * max(bar.volume, 0.0)
        rows = [r for r in orders if r["client_order_id"] in sent]
        for r in sorted(rows, key=lambda r: int(r["ts_ns"])):  # stable: ledger order within a timestamp
            st = OrderState(
                order_from_row(r),
                status=OrderStatus(r["status"]),
                filled_qty=float(r["filled_qty"] or 0.0),
                avg_fill_price=float(r["avg_fill_price"] or 0.0),
                reason=RejectReason(r["reason"]) if r.get("reason") else None,
                detail=r.get("detail") or "",
            )
            venue._states[st.order.client_order_id] = st
            if not st.status.is_terminal:
                venue._open[st.order.client_order_id] = _Working(st)
        for f in fills:
            fill = fill_from_row(f)
            st = venue._states.get(fill.client_order_id)
            if st is None:
                continue
            venue._fills.setdefault(fill.client_order_id, []).append(fill)
            st.fill_ids.append(fill.fill_id)
            venue.fills_count += 1
            bar = venue._bars.get(fill.symbol)
            if bar is not None and fill.ts_ns == bar.ts:
                venue._liq[fill.symbol] -= fill.qty
            w = venue._open.get(fill.client_order_id)
            if w is not None and st.order.type is _STOP:
                w.triggered = True
        venue._retrigger_stops(history)
        venue.orders_seen = len(venue._states)
        return venue

    def _retrigger_stops(self, history: Sequence[Mapping[str, _Bar]]) -> None:
        """Mark the resting stops that a bar after their acceptance crossed as triggered (a trigger without a fill,
        e.g. on a bar with no volume, leaves no ledger row; the bars say it happened)."""
        stops = [w for w in self._open.values() if w.state.order.type is _STOP and not w.triggered]
        for w in stops:
            order = w.state.order
            stop = order.stop_price
            assert stop is not None
            buy = order.side is _BUY
            for rows_of_batch in history:
                bar = rows_of_batch.get(order.symbol)
                if bar is None or bar.ts <= order.ts_ns:
                    continue
                if (bar.high >= stop) if buy else (bar.low <= stop):
                    w.triggered = True
                    break

    # ---------------------------------------------------------------- queries

    def order_state(self, client_order_id: str) -> OrderState | None:
        st = self._states.get(client_order_id)
        return None if st is None else st.copy()

    def open_orders(self) -> list[OrderState]:
        return [w.state.copy() for w in self._open.values()]

    def fills_for(self, client_order_id: str) -> list[Fill]:
        return list(self._fills.get(client_order_id, ()))

    def last_price(self, symbol: str) -> float | None:
        """The last close seen for `symbol`, or None before its first bar."""
        bar = self._bars.get(symbol)
        return None if bar is None else bar.close

    def liquidity_left(self, symbol: str) -> float:
        """Quantity the current bar of `symbol` can still fill (inf: unknown volume; 0 before any bar)."""
        return self._liq.get(symbol, 0.0)

    # ---------------------------------------------------------------- commands

    def submit(self, orders: Sequence[Order]) -> list[OrderEvent]:
        events: list[OrderEvent] = []
        states = self._states
        for order in orders:
            cid = order.client_order_id
            if cid in states:
                self.duplicates += 1
                continue
            self.orders_seen += 1
            st = OrderState(order)
            states[cid] = st
            symbol = order.symbol
            bar = self._bars.get(symbol)
            ts = bar.ts if bar is not None else order.ts_ns
            problem = order.validate()
            if problem is not None:
                self._reject(st, RejectReason.INVALID_ORDER, problem, ts, events)
                continue
            if bar is None:
                self._reject(st, RejectReason.NO_MARKET_PRICE, f"no bar seen yet for {symbol}", ts, events)
                continue
            price = self._submit_price(order, bar)
            qty = 0.0
            if price is not None:
                liq = self._liq.get(symbol, 0.0)
                if liq > _EPS:
                    qty = min(order.qty, liq)
            if order.tif is _FOK and qty < order.qty - _EPS:
                why = "not marketable now" if price is None else f"only {qty:g} of {order.qty:g} fillable now"
                self._reject(st, RejectReason.FOK_NOT_FILLABLE, why, ts, events)
                continue
            st.status = OrderStatus.ACCEPTED
            events.append(OrderEvent(EventKind.ACCEPTED, cid, ts))
            if qty > 0.0 and price is not None:
                self._liq[symbol] -= qty
                self._fill(st, qty, price, ts, events)
                if st.status is _FILLED:
                    continue
            if order.tif is _IOC:
                st.status, st.detail = OrderStatus.CANCELED, "ioc: unfilled remainder canceled"
                events.append(OrderEvent(EventKind.CANCELED, cid, ts, detail=st.detail))
            else:
                self._open[cid] = _Working(st)
        return events

    def cancel(self, client_order_ids: Sequence[str], ts_ns: int) -> list[OrderEvent]:
        events: list[OrderEvent] = []
        for cid in client_order_ids:
            w = self._open.pop(cid, None)
            if w is None:
                continue
            w.state.status, w.state.detail = OrderStatus.CANCELED, "canceled on request"
            events.append(OrderEvent(EventKind.CANCELED, cid, ts_ns, detail=w.state.detail))
        return events

    def on_bars(self, bars: pa.RecordBatch) -> list[OrderEvent]:
        # A bar the venue has already processed (a retried step after a crash) is ignored: replaying it would
        # match resting orders twice and refill the bar's liquidity.
        new = {
            sym: bar
            for sym, bar in self._read_bars(bars).items()
            if (seen := self._bars.get(sym)) is None or bar.ts > seen.ts
        }
        if not new:
            return []
        cap = self._cap
        for sym, bar in new.items():
            vol = bar.volume
            self._liq[sym] = math.inf if vol is None else cap * max(vol, 0.0)
        events: list[OrderEvent] = []
        done: list[str] = []
        expiring: list[OrderState] = []
        for cid, w in self._open.items():
            row = new.get(w.state.order.symbol)
            if row is None:
                continue
            self._match_resting(w, row, events)
            st = w.state
            if st.status is _FILLED:
                done.append(cid)
            elif st.order.tif is _DAY:
                done.append(cid)
                expiring.append(st)
        for cid in done:
            del self._open[cid]
        self._bars.update(new)
        for st in expiring:
            st.status, st.detail = OrderStatus.EXPIRED, "day order expired"
            ts = new[st.order.symbol].ts
            events.append(OrderEvent(EventKind.EXPIRED, st.order.client_order_id, ts, detail=st.detail))
        return events

    # ---------------------------------------------------------------- internals

    @staticmethod
    def _read_bars(bars: pa.RecordBatch) -> dict[str, _Bar]:
        """Convert a bar batch to {symbol: _Bar} once; rows without a usable close are dropped.

        The missing-value rules run on whole columns (a null reads as NaN); only the rows kept become Python
        values, one `_Bar` each."""
        if bars.num_rows == 0:
            return {}
        syms = bars.column("symbol").to_pylist()
        c = _floats(bars, "close")
        keep = c > 0.0  # NaN and missing fail this too
        if None in syms:
            keep &= np.fromiter((s is not None for s in syms), bool, len(syms))
        idx = np.flatnonzero(keep)
        if len(idx) < len(syms):
            syms = [syms[i] for i in idx]
        c = c[idx]
        o = _floats(bars, "open")[idx]
        o = np.where(np.isnan(o), c, o)
        h = _floats(bars, "high")[idx]
        h = np.where(np.isnan(h), np.maximum(o, c), h)
        lo = _floats(bars, "low")[idx]
        lo = np.where(np.isnan(lo), np.minimum(o, c), lo)
        v = _floats(bars, "volume")[idx]
        vols = [None if x != x else x for x in v.tolist()]
        ts = bars.column("ts").cast(pa.int64()).to_numpy(zero_copy_only=False)[idx].tolist()
        return {
            sym: _Bar(t, op, hi, low, cl, vol)
            for sym, t, op, hi, low, cl, vol in zip(
                syms, ts, o.tolist(), h.tolist(), lo.tolist(), c.tolist(), vols, strict=True
            )
        }

    def _submit_price(self, order: Order, bar: _Bar) -> float | None:
        """Price at which `order` fills against the last bar now, or None when it is not marketable."""
        close = bar.close
        buy = order.side is _BUY
        px = close * (1.0 + self._slip) if buy else close * (1.0 - self._slip)
        if order.type is _MARKET:
            return px
        if order.type is _LIMIT:
            lim = order.limit_price
            assert lim is not None  # validated
            if buy:
                return min(px, lim) if lim >= close else None
            return max(px, lim) if lim <= close else None
        return None  # a stop waits for a later bar

    def _match_resting(self, w: _Working, bar: _Bar, events: list[OrderEvent]) -> None:
        st = w.state
        order = st.order
        buy = order.side is _BUY
        slip = self._slip
        if order.type is _MARKET or w.triggered:
            price = bar.open * (1.0 + slip) if buy else bar.open * (1.0 - slip)
        elif order.type is _LIMIT:
            lim = order.limit_price
            assert lim is not None
            if buy:
                if bar.low > lim:
                    return
                price = min(bar.open, lim)
            else:
                if bar.high < lim:
                    return
                price = max(bar.open, lim)
        else:
            stop = order.stop_price
            assert stop is not None
            if buy:
                if bar.high < stop:
                    return
                price = max(bar.open, stop) * (1.0 + slip)
            else:
                if bar.low > stop:
                    return
                price = min(bar.open, stop) * (1.0 - slip)
            w.triggered = True
        symbol = order.symbol
        liq = self._liq[symbol]
        if liq <= _EPS:
            return
        qty = min(order.qty - st.filled_qty, liq)
        if qty <= 0.0:
            return
        self._liq[symbol] = liq - qty
        self._fill(st, qty, price, bar.ts, events)

    def _fill(self, st: OrderState, qty: float, price: float, ts: int, events: list[OrderEvent]) -> None:
        """Book one fill on the order's state and emit its event."""
        order = st.order
        cid = order.client_order_id
        fills = self._fills.get(cid)
        if fills is None:
            fills = self._fills[cid] = []
        fee = max(self._fee_min, self._fee_rate * qty * price, 0.0)
        fid = f"{cid}:{len(fills) + 1}"
        fill = Fill(fid, cid, order.symbol, order.side, qty, price, fee, ts, self._wall())
        fills.append(fill)
        total = st.filled_qty + qty
        st.avg_fill_price = (st.avg_fill_price * st.filled_qty + price * qty) / total
        st.filled_qty = total
        st.fill_ids.append(fill.fill_id)
        st.status = _FILLED if total >= order.qty - _EPS else _PARTIAL
        self.fills_count += 1
        events.append(OrderEvent(EventKind.FILL, cid, ts, fill=fill))

    @staticmethod
    def _reject(st: OrderState, reason: RejectReason, detail: str, ts: int, events: list[OrderEvent]) -> None:
        st.status, st.reason, st.detail = OrderStatus.REJECTED, reason, detail
        cid = st.order.client_order_id
        events.append(OrderEvent(EventKind.REJECTED, cid, ts, reason=reason, detail=detail))
