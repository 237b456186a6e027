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
    * minimum quantity (`order.min_qty` > 0), here and in `on_bars`: an order fills at a point only when what it
      can fill there, min(leaves, liquidity left), is at least min(min_qty, leaves) (leaves below min_qty fill
      only all at once); otherwise it does not fill at that point and takes no liquidity (a later order on the
      symbol may): it rests (DAY/GTC), or IOC cancels its rest, or FOK is refused as above (a fillable FOK fills
      its whole quantity, never below min_qty). Why: a minimum-quantity order must not be chipped at by a thin
      bar. The rule reads only the order, its fills and the bar's liquidity left, so `restore` stays exact.
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

Quotes (`on_quotes`, QUOTE_SCHEMA): a symbol's latest quote with bid > 0 and ask >= bid is fresh while it is newer
than the symbol's bar before the last (it falls in the last bar's interval, or later). A fresh quote replaces the
close for what fills on submit: a market buy fills at the ask, a sell at the bid (no slippage: the quote is the
spread), a limit is marketable at or through the ask/bid. Resting orders matched by `on_bars` keep the bar's open.

Impact (`broker.impact`): "flat" is everything above. "sqrt" is the square-root model of
`tradesys.execution.impact`, calibrated per symbol online from the bars the venue has seen (trailing
`impact_window_days` complete UTC days; a symbol with under 3 has no parameters and fills flat, counted in
`flat_priced_fills`):
    * every aggressive fill (market, triggered stop, marketable limit on submit) of q shares pays, on top of its
      reference price (the close or the open, +/- slippage_bps as the half spread; or the fresh quote), the
      temporary impact eta * sigma * sqrt(q / ADV), as a fraction; a limit is still never filled worse than its
      limit. A resting limit is passive: no temporary impact;
    * every fill leaves a permanent shift of the symbol's log price, +gamma * sigma * q / ADV for a buy, minus for a
      sell, that multiplies every later price the venue uses for the symbol (bars' open/high/low/close and quotes)
      by exp(shift). `restore` rebuilds the calibration from `bars` and the shift from the ledger's fills, each
      fill with the parameters the venue had at its bar, so a restarted venue prices the same. (The stop re-trigger
      check of `restore` reads the unshifted bars.)

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

import bisect
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
from tradesys.execution.impact import DailyCalibrator, ImpactParams, SqrtImpact

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


class _Quote:
    """The latest usable quote of a symbol (bid > 0, ask >= bid)."""

    __slots__ = ("ask", "bid", "ts")

    def __init__(self, ts: int, bid: float, ask: float) -> None:
        self.ts, self.bid, self.ask = ts, bid, ask


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
        self._sqrt = config.impact == "sqrt"
        self._model = SqrtImpact(config.impact_eta, config.impact_gamma)
        self._calib = DailyCalibrator(config.impact_window_days)
        self._perm: dict[str, float] = {}  # symbol -> permanent log-price shift left by this venue's fills
        self._quotes: dict[str, _Quote] = {}
        self._prev_ts: dict[str, int] = {}  # symbol -> ts of the bar before its last one (quote freshness)
        self._bars: dict[str, _Bar] = {}
        self._liq: dict[str, float] = {}
        self._states: dict[str, OrderState] = {}
        self._fills: dict[str, list[Fill]] = {}
        self._open: dict[str, _Working] = {}  # insertion order = acceptance order
        self.orders_seen = 0  # distinct client order ids submitted (rejected ones included)
        self.fills_count = 0
        self.duplicates = 0
        self.flat_priced_fills = 0  # impact = sqrt: fills priced flat, the symbol having under 3 days of history

    @classmethod
    def restore(
        cls,
        config: BrokerConfig,
        orders: Iterable[Mapping[str, Any]],
        fills: Iterable[Mapping[str, Any]],
        sent: set[str],
        bars: Iterable[pa.RecordBatch],
        wall_clock: Callable[[], int] = time.time_ns,
        quotes: Iterable[pa.RecordBatch] = (),
    ) -> SimBroker:
        """Rebuild the venue from ledger rows (orders oldest first, fills in booking order) and the bars up to the
        resume point; `sent` are the client order ids the venue had seen (see the module docstring). `quotes`: the
        quote batches up to the resume point, if the run had quotes."""
        from tradesys.execution.oms import fill_from_row, order_from_row

        venue = cls(config, wall_clock)
        history = [venue._read_bars(batch) for batch in bars]
        calib_ts: dict[str, list[int]] = {}  # per symbol: each bar's ts and the impact parameters after it
        calib: dict[str, list[ImpactParams | None]] = {}
        for rows_of_batch in history:
            new = venue._newer(rows_of_batch)
            venue._observe(new)
            if venue._sqrt:
                for sym, bar in new.items():
                    calib_ts.setdefault(sym, []).append(bar.ts)
                    calib.setdefault(sym, []).append(venue._calib.params(sym))
            venue._bars.update(rows_of_batch)
        for batch in quotes:
            venue.on_quotes(batch)
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
            if venue._sqrt:  # the permanent impact, with the parameters the venue had at the fill
                i = bisect.bisect_right(calib_ts.get(fill.symbol, []), fill.ts_ns) - 1
                venue._leave_impact(fill.symbol, fill.side is _BUY, fill.qty, calib[fill.symbol][i] if i >= 0 else None)
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

    # reconciliation views (tradesys.execution.reconcile): the venue's own account, from its fills
    reconnects = 0  # an in-process venue never loses its connection
    opening_cash: float | None = None  # the account's starting cash, when the caller tells it (else cash() is None)

    def orders(self) -> list[OrderState]:
        """Every order the venue has seen (rejected ones too), in submission order."""
        return [st.copy() for st in self._states.values()]

    def positions(self) -> dict[str, float]:
        """Net filled quantity per symbol (symbols that traded back to flat included, at 0)."""
        out: dict[str, float] = {}
        for fills in self._fills.values():
            for f in fills:
                out[f.symbol] = out.get(f.symbol, 0.0) + f.signed_qty
        return out

    def cash(self) -> float | None:
        """opening_cash minus what the fills bought, plus what they sold, minus fees; None without opening_cash."""
        if self.opening_cash is None:
            return None
        return self.opening_cash - sum(f.signed_qty * f.price + f.fee for fs in self._fills.values() for f in fs)

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
            touch, half = self._touch(order, bar)
            marketable = self._marketable(order, touch)
            qty = 0.0
            if marketable:
                liq = self._liq.get(symbol, 0.0)
                if liq > _EPS:
                    qty = min(order.qty, liq)
            if order.tif is _FOK and qty < order.qty - _EPS:
                why = "not marketable now" if not marketable else f"only {qty:g} of {order.qty:g} fillable now"
                self._reject(st, RejectReason.FOK_NOT_FILLABLE, why, ts, events)
                continue
            if order.min_qty > 0.0 and qty < min(order.min_qty, order.qty) - _EPS:
                qty = 0.0  # below the order's minimum quantity: no fill now (module docstring)
            st.status = OrderStatus.ACCEPTED
            events.append(OrderEvent(EventKind.ACCEPTED, cid, ts))
            if qty > 0.0 and marketable:
                self._liq[symbol] -= qty
                price = self._take_price(symbol, order.side is _BUY, touch, half, qty)
                if order.type is _LIMIT:  # never worse than the limit
                    lim = order.limit_price
                    assert lim is not None
                    price = min(price, lim) if order.side is _BUY else max(price, lim)
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

    def on_quotes(self, quotes: pa.RecordBatch) -> None:
        """Take a QUOTE_SCHEMA batch: each symbol's latest quote with bid > 0 and ask >= bid (others are ignored).

        A quote prices the orders that fill on submit (market, and marketable limits) until it goes stale, i.e.
        while it is newer than the symbol's bar before the last one (it belongs to the last bar's interval or
        later). Resting orders matched by `on_bars` keep the bar's open."""
        if quotes.num_rows == 0:
            return
        syms = quotes.column("symbol").to_pylist()
        ts = quotes.column("ts").cast(pa.int64()).to_numpy(zero_copy_only=False).tolist()
        bid, ask = _floats(quotes, "bid"), _floats(quotes, "ask")
        ok = (bid > 0.0) & (ask >= bid) & np.isfinite(ask)
        bids, asks = bid.tolist(), ask.tolist()
        for i in np.flatnonzero(ok).tolist():
            sym = syms[i]
            if sym is None:
                continue
            q = self._quotes.get(sym)
            if q is None or ts[i] >= q.ts:
                self._quotes[sym] = _Quote(ts[i], bids[i], asks[i])

    def quote(self, symbol: str) -> tuple[float, float] | None:
        """(bid, ask) the venue would trade against now, or None (no fresh quote)."""
        q = self._fresh_quote(symbol)
        return None if q is None else (q.bid, q.ask)

    def impact_shift(self, symbol: str) -> float:
        """The permanent log-price shift this venue's own fills have left in `symbol` (0 unless impact = sqrt)."""
        return self._perm.get(symbol, 0.0)

    def impact_params(self, symbol: str) -> ImpactParams | None:
        """The symbol's square-root impact calibration now (None: under 3 days of history, or impact = flat)."""
        return self._calib.params(symbol) if self._sqrt else None

    def on_bars(self, bars: pa.RecordBatch) -> list[OrderEvent]:
        # A bar the venue has already processed (a retried step after a crash) is ignored: replaying it would
        # match resting orders twice and refill the bar's liquidity.
        new = self._newer(self._read_bars(bars))
        if not new:
            return []
        cap = self._cap
        for sym, bar in new.items():
            vol = bar.volume
            self._liq[sym] = math.inf if vol is None else cap * max(vol, 0.0)
        self._observe(new)
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

    def _newer(self, rows: Mapping[str, _Bar]) -> dict[str, _Bar]:
        """The bars newer than the symbol's last one (an older or repeated bar is ignored)."""
        return {sym: bar for sym, bar in rows.items() if (seen := self._bars.get(sym)) is None or bar.ts > seen.ts}

    def _observe(self, new: Mapping[str, _Bar]) -> None:
        """Before `new` become the last bars: note quote freshness and feed the impact calibration."""
        for sym, bar in new.items():
            prev = self._bars.get(sym)
            if prev is not None:
                self._prev_ts[sym] = prev.ts
            if self._sqrt:
                self._calib.update(sym, bar.ts, bar.close, bar.volume)

    def _fresh_quote(self, symbol: str) -> _Quote | None:
        q = self._quotes.get(symbol)
        if q is None or q.ts <= self._prev_ts.get(symbol, -1):
            return None
        return q

    def _touch(self, order: Order, bar: _Bar) -> tuple[float, float]:
        """(price an order submitted now trades against, half spread still to pay on top): the fresh quote's ask
        or bid (0), else the last close (slippage); shifted by the venue's permanent impact (impact = sqrt)."""
        symbol = order.symbol
        q = self._fresh_quote(symbol)
        if q is not None:
            touch, half = (q.ask if order.side is _BUY else q.bid), 0.0
        else:
            touch, half = bar.close, self._slip
        if self._sqrt:
            touch *= math.exp(self._perm.get(symbol, 0.0))
        return touch, half

    @staticmethod
    def _marketable(order: Order, touch: float) -> bool:
        """Whether `order` fills against `touch` now: a market order always, a limit at or through it, a stop never
        (it waits for a later bar)."""
        if order.type is _MARKET:
            return True
        if order.type is _LIMIT:
            lim = order.limit_price
            assert lim is not None  # validated
            return lim >= touch if order.side is _BUY else lim <= touch
        return False

    def _take_price(self, symbol: str, buy: bool, touch: float, half: float, qty: float) -> float:
        """An aggressive fill's price: touch +/- the half spread (flat), plus the temporary impact of `qty` (sqrt)."""
        if self._sqrt:
            return self._model.fill_price(touch, buy, qty, self._calib.params(symbol), half)
        return touch * (1.0 + half) if buy else touch * (1.0 - half)

    def _leave_impact(self, symbol: str, buy: bool, qty: float, p: ImpactParams | None) -> None:
        """Shift the symbol's later prices by the permanent impact of a fill (impact = sqrt)."""
        if p is None:
            self.flat_priced_fills += 1
            return
        d = self._model.permanent(qty, p)
        self._perm[symbol] = self._perm.get(symbol, 0.0) + (d if buy else -d)

    def _match_resting(self, w: _Working, bar: _Bar, events: list[OrderEvent]) -> None:
        st = w.state
        order = st.order
        symbol = order.symbol
        buy = order.side is _BUY
        op, hi, lo = bar.open, bar.high, bar.low
        if self._sqrt:
            f = math.exp(self._perm.get(symbol, 0.0))
            op, hi, lo = op * f, hi * f, lo * f
        touch = price = None  # an aggressive fill pays spread and impact on touch; a resting limit gets price
        if order.type is _MARKET or w.triggered:
            touch = op
        elif order.type is _LIMIT:
            lim = order.limit_price
            assert lim is not None
            if buy:
                if lo > lim:
                    return
                price = min(op, lim)
            else:
                if hi < lim:
                    return
                price = max(op, lim)
        else:
            stop = order.stop_price
            assert stop is not None
            if buy:
                if hi < stop:
                    return
                touch = max(op, stop)
            else:
                if lo > stop:
                    return
                touch = min(op, stop)
            w.triggered = True
        liq = self._liq[symbol]
        if liq <= _EPS:
            return
        leaves = order.qty - st.filled_qty
        qty = min(leaves, liq)
        if qty <= 0.0 or (order.min_qty > 0.0 and qty < min(order.min_qty, leaves) - _EPS):
            return  # nothing left, or less than the order's minimum quantity (module docstring)
        self._liq[symbol] = liq - qty
        if price is None:
            assert touch is not None
            price = self._take_price(symbol, buy, touch, self._slip, qty)
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
        if self._sqrt:
            self._leave_impact(order.symbol, order.side is _BUY, qty, self._calib.params(order.symbol))
        events.append(OrderEvent(EventKind.FILL, cid, ts, fill=fill))

    @staticmethod
    def _reject(st: OrderState, reason: RejectReason, detail: str, ts: int, events: list[OrderEvent]) -> None:
        st.status, st.reason, st.detail = OrderStatus.REJECTED, reason, detail
        cid = st.order.client_order_id
        events.append(OrderEvent(EventKind.REJECTED, cid, ts, reason=reason, detail=detail))
