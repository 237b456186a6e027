"""AlpacaBroker: the `Broker` protocol over Alpaca's trading API (alpaca-py `TradingClient` + `TradingStream`).

Why an adapter and not the SDK directly: the ExecutionService (the same object in backtest and live) speaks
`Order`/`OrderEvent`/`Fill`, asks for events once per step, and relies on three guarantees a live venue does not
give by itself: an order is sent once, a fill is booked once, and nothing is lost while the stream is down.

How it keeps them
    * **One order per client order id.** Every POST carries the deterministic client order id. The SDK's own
      retry (a fixed 3 s sleep that ignores Retry-After) is switched off and replaced by ours: HTTP 429 waits for
      `Retry-After` (else an exponential backoff), a dropped connection, a timeout or a 502/503/504 is retried, and
      a retried POST whose first attempt had landed answers 422 "client_order_id must be unique": that order is
      fetched with `get_order_by_client_id` and treated as the same order (ACCEPTED once, its fills booked once).
      A client order id this adapter already tracks is not sent again (no events, counted in `duplicates`), as
      SimBroker does.
    * **One booking per fill.** Alpaca's order object carries the cumulative `filled_qty` and `filled_avg_price`;
      the adapter books, per order, only the quantity beyond what it has already booked. A fill's id is
      ``f"{client_order_id}@{cumulative filled qty}"``, the same whether it was learnt from the stream, from a
      REST answer or from a poll, so a duplicated stream message (same execution id), a poll that saw the fill
      first, or a reconciliation after a restart all name the same fill. The fill price is the stream event's
      price when the event is exactly the missing quantity, else the one implied by the average price
      (``(avg * cum - booked notional) / delta``).
    * **Nothing lost.** Trade updates arrive on a background thread and wait in a queue; `on_bars` (the loop's
      step), `submit` and `cancel` drain them into events. While the stream is down, and once after every
      reconnect, each step polls the open orders by REST (`get_order_by_client_id`) and books what the stream
      missed. `reconnects` counts reconnections (after the first connection) for the reconciliation.

Minimum-quantity orders (`Order.min_qty` > 0) are REJECTED (INVALID_ORDER, the detail naming min_qty) and never
sent: Alpaca has no such order type, and dropping the minimum would let the order fill below it.

Events: ACCEPTED or REJECTED come from the POST's answer (a 403/422 refusal is REJECTED, INVALID_ORDER, with the
broker's message as detail); FILL, CANCELED and EXPIRED come from the stream or the polls. `cancel` only asks:
the CANCELED (possibly after a last partial fill) arrives with a later drain. Fees are not reported per fill by
Alpaca: they are booked with the configured schedule, `max(fee_min, fee_bps / 1e4 * notional)` (set both to 0
for Alpaca's commission-free stock trading). Fill.ts_ns is the venue's time of the update when it gives one,
else the last bar's ts; Fill.wall_ns is when the adapter learnt of it.

Credentials come only from the environment (`APCA_API_KEY_ID`, `APCA_API_SECRET_KEY`); they are never logged and
never in `repr`. The base URL is `broker.url`, else `$APCA_API_BASE_URL`, else Alpaca's paper endpoint; the
trade-updates websocket is the base URL's `/stream` (`broker.stream_url` overrides it).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa
import requests

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
from tradesys.data.alpaca import _credentials

log = logging.getLogger(__name__)

BASE_URL_ENV = "APCA_API_BASE_URL"
_EPS = 1e-9
_RETRY_STATUS = frozenset({429, 502, 503, 504})
_DUPLICATE = "client_order_id must be unique"
_PAGE = 500  # GET /v2/orders answers at most this many orders

# Alpaca order statuses -> ours. The ones not listed (new, accepted, pending_new, pending_cancel, pending_replace,
# accepted_for_bidding, done_for_day, stopped, suspended, calculated, held) are open: accepted and working.
_TERMINAL = {
    "filled": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELED,
    "expired": OrderStatus.EXPIRED,
    "rejected": OrderStatus.REJECTED,
    "replaced": OrderStatus.CANCELED,
}
_EVENT_KIND = {
    OrderStatus.CANCELED: EventKind.CANCELED,
    OrderStatus.EXPIRED: EventKind.EXPIRED,
    OrderStatus.REJECTED: EventKind.REJECTED,
}


class BrokerUnavailable(RuntimeError):
    """The broker did not answer after every retry (the message names the request, never a credential)."""


def stream_url_for(base_url: str) -> str:
    """The trade-updates websocket of a trading base URL: http(s)://host -> ws(s)://host/stream."""
    url = base_url.rstrip("/")
    if url.startswith("https://"):
        url = "wss://" + url[len("https://"):]
    elif url.startswith("http://"):
        url = "ws://" + url[len("http://"):]
    return url + "/stream"


def _f(value: Any) -> float:
    """Alpaca sends quantities and prices as strings (or null)."""
    if value is None or value == "":
        return 0.0
    return float(value)


def _ts(value: Any, default: int) -> int:
    if not value:
        return default
    try:
        return int(pd.Timestamp(value).value)
    except (ValueError, TypeError):
        return default


def _retry_after(resp: requests.Response | None, attempt: int, base: float, cap: float) -> float:
    """Seconds to wait: the server's Retry-After (seconds) when it sends one, else base * 2**attempt, capped."""
    if resp is not None:
        raw = resp.headers.get("Retry-After")
        if raw:
            try:
                return min(max(float(raw), 0.0), cap)
            except ValueError:
                pass
    return min(base * 2**attempt, cap)


@dataclass(slots=True)
class _Tracked:
    """One order as this adapter has booked it."""

    order: Order
    status: OrderStatus = OrderStatus.NEW
    alpaca_id: str | None = None
    filled_qty: float = 0.0
    notional: float = 0.0
    fills: list[Fill] = field(default_factory=list)
    reason: RejectReason | None = None
    detail: str = ""

    def state(self) -> OrderState:
        avg = self.notional / self.filled_qty if self.filled_qty > 0 else 0.0
        return OrderState(self.order, self.status, self.filled_qty, avg, self.reason, self.detail,
                          [f.fill_id for f in self.fills])


def _make_stream(key: str, secret: str, url: str, on_connect: Callable[[], None],
                 on_close: Callable[[], None]) -> Any:
    """A TradingStream that reports its (re)connections: the SDK reconnects silently, the adapter must know."""
    from alpaca.trading.stream import TradingStream

    class _Stream(TradingStream):  # type: ignore[misc]
        async def _start_ws(self) -> None:
            await super()._start_ws()
            on_connect()

        async def close(self) -> None:
            on_close()
            await super().close()

    s = _Stream(key, secret, paper=True, raw_data=True, url_override=url)
    s._reconnect_min_backoff = 0.2  # the SDK's 1 s first wait is for a shared cloud endpoint; ours is a retry loop
    return s


class AlpacaBroker:
    """The Alpaca venue behind the `Broker` protocol; see the module docstring for the guarantees."""

    def __init__(
        self,
        config: BrokerConfig,
        *,
        base_url: str | None = None,
        stream_url: str | None = None,
        stream: bool = True,
        wall_clock: Callable[[], int] = time.time_ns,
        sleep: Callable[[float], None] = time.sleep,
        max_attempts: int = 6,
        backoff_s: float = 0.2,
        max_wait_s: float = 30.0,
        timeout_s: float = 10.0,
    ) -> None:
        from alpaca.trading.client import TradingClient

        self.config = config
        self.base_url = base_url or config.url or os.environ.get(BASE_URL_ENV) or "https://paper-api.alpaca.markets"
        self.stream_url = stream_url or config.stream_url or stream_url_for(self.base_url)
        self._wall, self._sleep = wall_clock, sleep
        self._max_attempts, self._backoff, self._max_wait = max_attempts, backoff_s, max_wait_s
        key, secret = _credentials()
        self._client = TradingClient(key, secret, paper=True, raw_data=True, url_override=self.base_url)
        # Our retry loop replaces the SDK's (fixed 3 s sleep, Retry-After ignored); a timeout so a lost answer
        # cannot hang the step (the SDK sets none).
        self._client._retry = 0
        self._client._retry_codes = []
        self._client._session.request = _with_timeout(self._client._session.request, timeout_s)
        self._fee_rate, self._fee_min = config.fee_bps / 1e4, config.fee_min
        self._orders: dict[str, _Tracked] = {}
        self._open: dict[str, _Tracked] = {}
        self._exec_ids: set[str] = set()
        self._pending: list[OrderEvent] = []
        self._updates: queue.Queue[Mapping[str, Any]] = queue.Queue()
        self._last_ts = 0
        self._lock = threading.Lock()
        self._connected = False
        self._connects = 0
        self._polled_connects = 0
        # counters (also in `stats`)
        self.orders_seen = 0
        self.fills_count = 0
        self.duplicates = 0
        self.duplicate_fills = 0
        self.rate_limited = 0
        self.retries = 0
        self.polls = 0
        self.unknown_updates = 0
        self._stream: Any = None
        self._thread: threading.Thread | None = None
        if stream:
            self._stream = _make_stream(key, secret, self.stream_url, self._on_connect, self._on_close)
            self._stream.subscribe_trade_updates(self._on_update)
            self._thread = threading.Thread(target=self._stream.run, name="alpaca-trade-updates", daemon=True)
            self._thread.start()

    def __repr__(self) -> str:
        return f"AlpacaBroker(base_url={self.base_url!r}, orders={len(self._orders)}, credentials=<env>)"

    # ---------------------------------------------------------------- stream thread

    async def _on_update(self, msg: Mapping[str, Any]) -> None:
        self._updates.put(msg)

    def _on_connect(self) -> None:
        with self._lock:
            self._connected = True
            self._connects += 1

    def _on_close(self) -> None:
        with self._lock:
            self._connected = False

    @property
    def reconnects(self) -> int:
        """Reconnections of the trade-updates stream after its first connection."""
        return max(self._connects - 1, 0)

    @property
    def stream_connected(self) -> bool:
        return self._connected

    def wait_connected(self, timeout_s: float = 10.0) -> bool:
        """Block until the trade-updates stream is connected (or the timeout passes); True when it is."""
        deadline = time.monotonic() + timeout_s
        while not self._connected and time.monotonic() < deadline:
            time.sleep(0.02)
        return self._connected

    def close(self, join_timeout: float = 10.0) -> None:
        """Stop the stream thread."""
        loop = getattr(self._stream, "_loop", None) if self._stream is not None else None
        if loop is not None and loop.is_running():
            stream = self._stream

            async def shutdown() -> None:
                # the SDK's stop() is seen only between 5 s receive timeouts; closing the socket ends it now
                await stream.stop_ws()
                await stream.close()

            try:
                asyncio.run_coroutine_threadsafe(shutdown(), loop).result(join_timeout)
            except Exception:  # a stream that already died has nothing to stop
                log.debug("trade-updates stream already stopped")
        if self._thread is not None:
            self._thread.join(join_timeout)

    # ---------------------------------------------------------------- restore

    def restore(self, orders: Iterable[Mapping[str, Any]], fills: Iterable[Mapping[str, Any]]) -> None:
        """Seed the booked state from the ledger's rows (a restarted BrokerActor): what the ledger has booked is
        not booked again, and the open orders are polled for what happened meanwhile at the next step."""
        from tradesys.execution.oms import fill_from_row, order_from_row

        for r in orders:
            status = OrderStatus(r["status"])
            if status is OrderStatus.NEW:
                continue  # never acknowledged: the service resends it, and a landed first attempt resolves as 422
            t = _Tracked(order_from_row(r), status)
            self._orders[t.order.client_order_id] = t
            if not status.is_terminal:
                self._open[t.order.client_order_id] = t
        for row in fills:
            f = fill_from_row(row)
            t = self._orders.get(f.client_order_id)
            if t is not None:
                t.fills.append(f)
                t.filled_qty += f.qty
                t.notional += f.qty * f.price
        self.orders_seen = len(self._orders)
        self.fills_count = sum(len(t.fills) for t in self._orders.values())
        self._polled_connects = -1  # poll once at the next step

    # ---------------------------------------------------------------- REST with retries

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run one REST call with our retry policy; APIError for a definite answer, BrokerUnavailable after the
        last attempt. A retried POST may answer 422 duplicate: the caller resolves it (see `_post_order`)."""
        from alpaca.common.exceptions import APIError

        last: BaseException | None = None
        for attempt in range(self._max_attempts):
            if attempt:
                self.retries += 1
            try:
                return fn()
            except APIError as exc:
                status = exc.status_code
                if status not in _RETRY_STATUS:
                    raise
                if status == 429:
                    self.rate_limited += 1
                last = exc
                wait = _retry_after(exc.response, attempt, self._backoff, self._max_wait)
            except (requests.ConnectionError, requests.Timeout) as exc:
                last = exc
                wait = min(self._backoff * 2**attempt, self._max_wait)
            if attempt + 1 < self._max_attempts:
                self._sleep(wait)
        kind = type(last).__name__ if last is not None else "no answer"
        raise BrokerUnavailable(f"alpaca {what}: no answer after {self._max_attempts} attempts ({kind})")

    def _post_order(self, order: Order) -> dict[str, Any]:
        """POST the order; a 422 duplicate (our own earlier attempt landed) is the same order, fetched by id."""
        from alpaca.common.exceptions import APIError

        req = _order_request(order)
        try:
            return self._call(f"submit {order.client_order_id}", lambda: self._client.submit_order(req))
        except APIError as exc:
            if exc.status_code == 422 and _DUPLICATE in str(exc):
                return self._by_client_id(order.client_order_id)
            raise
        except BrokerUnavailable:
            # the POST may have landed before the answer was lost: ask for it before giving up
            try:
                return self._by_client_id(order.client_order_id)
            except APIError:
                raise BrokerUnavailable(f"alpaca submit {order.client_order_id}: no answer, and the order is not "
                                        "at the broker") from None

    def _by_client_id(self, cid: str) -> dict[str, Any]:
        return self._call(f"get order {cid}", lambda: self._client.get_order_by_client_id(cid))

    # ---------------------------------------------------------------- commands

    def submit(self, orders: Sequence[Order]) -> list[OrderEvent]:
        from alpaca.common.exceptions import APIError

        events: list[OrderEvent] = []
        for order in orders:
            cid = order.client_order_id
            if cid in self._orders:
                self.duplicates += 1
                continue
            self.orders_seen += 1
            t = self._orders[cid] = _Tracked(order)
            ts = self._last_ts or order.ts_ns
            problem = order.validate() or _unsupported(order)
            if problem is not None:
                self._reject(t, RejectReason.INVALID_ORDER, problem, ts, events)
                continue
            try:
                answer = self._post_order(order)
            except APIError as exc:
                self._reject(t, RejectReason.INVALID_ORDER, f"alpaca {exc.status_code}: {_message(exc)}", ts, events)
                continue
            except BrokerUnavailable:
                del self._orders[cid]  # not at the broker: the OMS keeps it NEW, a later submit or recover resends
                self.orders_seen -= 1
                raise
            if str(answer.get("status")) == "rejected":
                self._reject(t, RejectReason.INVALID_ORDER, "alpaca: rejected", ts, events)
                continue
            t.status = OrderStatus.ACCEPTED
            self._open[cid] = t
            events.append(OrderEvent(EventKind.ACCEPTED, cid, ts))
            self._observe(answer, ts, events)
        return events + self._drain()

    def cancel(self, client_order_ids: Sequence[str], ts_ns: int) -> list[OrderEvent]:
        """Ask the broker to cancel; the CANCELED (after any last fill) arrives with a later drain."""
        from alpaca.common.exceptions import APIError

        for cid in client_order_ids:
            t = self._open.get(cid)
            if t is None or t.alpaca_id is None:
                continue
            aid = t.alpaca_id
            try:
                self._call(f"cancel {cid}", lambda aid=aid: self._client.cancel_order_by_id(aid))
            except APIError as exc:  # 422: already filled/canceled; the stream or the next poll says which
                log.info("alpaca cancel %s: %s", cid, _message(exc))
        return self._drain()

    def replace(self, client_order_id: str, new: Order) -> list[OrderEvent]:
        """Replace an open order by `new` (its own client order id, same symbol and side; `new.qty` is the total
        quantity as Alpaca's PATCH takes it). The old order ends CANCELED ("replaced by ...") when the broker
        says so; `new` is ACCEPTED from the PATCH answer. The caller registers `new` first (write-ahead)."""
        from alpaca.common.exceptions import APIError
        from alpaca.trading.requests import ReplaceOrderRequest

        t = self._open.get(client_order_id)
        if t is None or t.alpaca_id is None or new.client_order_id in self._orders:
            return self._drain()
        ts = self._last_ts or new.ts_ns
        events: list[OrderEvent] = []
        n = self._orders[new.client_order_id] = _Tracked(new)
        self.orders_seen += 1
        problem = new.validate() or _unsupported(new) or (None if float(new.qty).is_integer() else
                                     f"qty: Alpaca replaces whole-share quantities only, got {new.qty:g}")
        if problem is not None:
            self._reject(n, RejectReason.INVALID_ORDER, problem, ts, events)
            return events + self._drain()
        req = ReplaceOrderRequest(
            qty=int(new.qty),
            time_in_force=_tif(new.tif),
            limit_price=new.limit_price,
            stop_price=new.stop_price,
            client_order_id=new.client_order_id,
        )
        aid = t.alpaca_id
        try:
            answer = self._call(f"replace {client_order_id}", lambda: self._client.replace_order_by_id(aid, req))
        except APIError as exc:
            self._reject(n, RejectReason.INVALID_ORDER, f"alpaca {exc.status_code}: {_message(exc)}", ts, events)
            return events + self._drain()
        n.status = OrderStatus.ACCEPTED
        self._open[new.client_order_id] = n
        events.append(OrderEvent(EventKind.ACCEPTED, new.client_order_id, ts))
        t.detail = f"replaced by {new.client_order_id}"
        self._observe(answer, ts, events)
        return events + self._drain()

    def on_bars(self, bars: pa.RecordBatch) -> list[OrderEvent]:
        """The loop's step: drain the trade updates into events; poll by REST while the stream is down and once
        after each (re)connection."""
        if bars.num_rows:
            from tradesys.core.schemas import batch_ts

            self._last_ts = max(self._last_ts, batch_ts(bars))
        return self._drain()

    def poll(self) -> list[OrderEvent]:
        """Bring every open order up to the broker's REST view (the fall-back when the stream is down)."""
        self.polls += 1
        events: list[OrderEvent] = []
        for cid in list(self._open):
            self._observe(self._by_client_id(cid), self._last_ts, events)
        return events

    def _drain(self) -> list[OrderEvent]:
        events, self._pending = self._pending, []
        while True:
            try:
                msg = self._updates.get_nowait()
            except queue.Empty:
                break
            self._on_message(msg, events)
        with self._lock:
            connected, connects = self._connected, self._connects
        if self._stream is None or not connected or connects != self._polled_connects:
            if self._open:
                events += self.poll()
            if connected:
                self._polled_connects = connects
        return events

    # ---------------------------------------------------------------- booking

    def _on_message(self, msg: Mapping[str, Any], events: list[OrderEvent]) -> None:
        data = msg.get("data", msg)
        order = data.get("order") or {}
        event = data.get("event")
        if event in ("fill", "partial_fill"):
            exec_id = data.get("execution_id")
            if exec_id is not None:
                if exec_id in self._exec_ids:
                    self.duplicate_fills += 1
                    return
                self._exec_ids.add(str(exec_id))
            self._observe(order, self._last_ts, events, price=data.get("price"), qty=data.get("qty"),
                          when=data.get("timestamp"))
        else:
            self._observe(order, self._last_ts, events, when=data.get("timestamp"))

    def _observe(self, j: Mapping[str, Any], ts: int, events: list[OrderEvent], *, price: Any = None,
                 qty: Any = None, when: Any = None) -> None:
        """Book what an Alpaca order object says beyond what is booked: the missing fill, then a final status."""
        cid = j.get("client_order_id")
        t = self._orders.get(cid) if cid else None
        if t is None:
            self.unknown_updates += 1
            return
        if j.get("id"):
            t.alpaca_id = str(j["id"])
        if t.status is OrderStatus.REJECTED:
            return
        at = _ts(when or j.get("filled_at") or j.get("updated_at"), ts)
        cum = min(_f(j.get("filled_qty")), t.order.qty)
        if cum > t.filled_qty + _EPS:
            delta = cum - t.filled_qty
            px = _f(price) if price is not None and abs(_f(qty) - delta) <= _EPS else math.nan
            if not px > 0:
                avg = _f(j.get("filled_avg_price"))
                px = (avg * cum - t.notional) / delta
                if not px > 0:
                    px = avg
            fee = max(self._fee_min, self._fee_rate * delta * px, 0.0)
            fill = Fill(f"{cid}@{cum:.10g}", cid, t.order.symbol, t.order.side, delta, px, fee, at, self._wall())
            t.fills.append(fill)
            t.filled_qty, t.notional = cum, t.notional + delta * px
            self.fills_count += 1
            if t.status is OrderStatus.NEW:
                t.status = OrderStatus.ACCEPTED
            t.status = OrderStatus.FILLED if cum >= t.order.qty - _EPS else OrderStatus.PARTIALLY_FILLED
            events.append(OrderEvent(EventKind.FILL, cid, at, fill=fill))
        final = _TERMINAL.get(str(j.get("status")))
        if final in _EVENT_KIND and not t.status.is_terminal:
            t.status = final
            if str(j.get("status")) == "replaced":
                t.detail = t.detail or "replaced"
            elif final is OrderStatus.REJECTED:
                t.reason, t.detail = RejectReason.INVALID_ORDER, "alpaca: rejected"
            else:
                t.detail = f"alpaca: {j.get('status')}"
            events.append(OrderEvent(_EVENT_KIND[final], cid, ts, reason=t.reason, detail=t.detail))
        if t.status.is_terminal:
            self._open.pop(cid, None)

    def _reject(self, t: _Tracked, reason: RejectReason, detail: str, ts: int, events: list[OrderEvent]) -> None:
        t.status, t.reason, t.detail = OrderStatus.REJECTED, reason, detail
        events.append(OrderEvent(EventKind.REJECTED, t.order.client_order_id, ts, reason=reason, detail=detail))

    # ---------------------------------------------------------------- queries (REST)

    def order_state(self, client_order_id: str) -> OrderState | None:
        """The broker's view of an order (REST), as an OrderState; None when the broker does not know it."""
        from alpaca.common.exceptions import APIError

        try:
            j = self._by_client_id(client_order_id)
        except APIError as exc:
            if exc.status_code == 404:
                return None
            raise
        t = self._orders.get(client_order_id)
        if t is None:  # an order from before a restart that the ledger had not acknowledged: track it now
            t = self._orders[client_order_id] = _Tracked(_order_from_json(j), OrderStatus.ACCEPTED)
            self._open[client_order_id] = t
        self._pending_observe(j)
        return t.state()

    def fills_for(self, client_order_id: str) -> list[Fill]:
        """Every fill of the order, booked or learnt now from REST (same ids either way)."""
        if client_order_id not in self._orders and self.order_state(client_order_id) is None:
            return []
        t = self._orders[client_order_id]
        if not t.status.is_terminal:
            self._pending_observe(self._by_client_id(client_order_id))
        return list(t.fills)

    def _pending_observe(self, j: Mapping[str, Any]) -> None:
        """Observe a REST answer outside a step: its events wait for the next drain (the OMS dedupes fills)."""
        self._observe(j, self._last_ts, self._pending)

    def open_orders(self) -> list[OrderState]:
        """The broker's open orders (REST), those this adapter tracks with their booked fills. Every open order,
        not the first page: see `_list_open`."""
        out = []
        for j in self._list_open():
            cid = j.get("client_order_id")
            if cid in self._orders:
                self._pending_observe(j)
                out.append(self._orders[cid].state())
            else:
                out.append(OrderState(_order_from_json(j), OrderStatus.ACCEPTED, _f(j.get("filled_qty")),
                                      _f(j.get("filled_avg_price"))))
        return out

    def _list_open(self) -> list[Mapping[str, Any]]:
        """Every open order as Alpaca JSON, oldest first. GET /v2/orders answers at most 500 orders, so it is paged
        by creation time (`direction=asc`, `after`). `after` is exclusive and times can tie, so each page starts
        1 us before the last page's newest order and repeats are dropped by order id; it stops at a short page,
        or at a page with nothing new (more than a page of orders created in the same microsecond: the rest are
        not listed, and the service asks for the ledger's open orders one by one)."""
        from alpaca.common.enums import Sort
        from alpaca.trading.enums import QueryOrderStatus
        from alpaca.trading.requests import GetOrdersRequest

        seen: dict[str, Mapping[str, Any]] = {}
        after = None
        while True:
            req = GetOrdersRequest(status=QueryOrderStatus.OPEN, limit=_PAGE, direction=Sort.ASC, after=after)
            page = self._call("list orders", lambda req=req: self._client.get_orders(req))
            new = 0
            for j in page:
                key = str(j.get("id") or j.get("client_order_id"))
                if key not in seen:
                    seen[key] = j
                    new += 1
            stamps = [j.get("created_at") for j in page]
            if len(page) < _PAGE or not new or not all(stamps):
                return list(seen.values())
            newest = max(pd.Timestamp(t) for t in stamps).floor("us")
            after = (newest - pd.Timedelta(microseconds=1)).to_pydatetime()

    def positions(self) -> dict[str, float]:
        """Signed position quantity per symbol, as the broker holds it."""
        out: dict[str, float] = {}
        for p in self._call("positions", self._client.get_all_positions):
            q = _f(p.get("qty"))
            if str(p.get("side", "long")) == "short" and q > 0:
                q = -q
            out[str(p["symbol"])] = q
        return out

    def account(self) -> dict[str, float]:
        """The account's cash, equity, buying power and long/short market values (floats)."""
        a = self._call("account", self._client.get_account)
        keys = ("cash", "equity", "buying_power", "long_market_value", "short_market_value", "portfolio_value")
        return {k: _f(a.get(k)) for k in keys if k in a}

    def cash(self) -> float:
        return self.account()["cash"]

    def stats(self) -> dict[str, int]:
        return {
            "orders_seen": self.orders_seen,
            "fills": self.fills_count,
            "duplicates": self.duplicates,
            "duplicate_fills": self.duplicate_fills,
            "rate_limited": self.rate_limited,
            "retries": self.retries,
            "polls": self.polls,
            "reconnects": self.reconnects,
        }


def _unsupported(order: Order) -> str | None:
    """What Alpaca cannot do as asked, or None. It has no minimum-quantity order: sent without one, the order could
    fill in parts below it, so it is refused here and never sent."""
    if order.min_qty > 0.0:
        return (f"min_qty: Alpaca has no minimum-quantity orders (min_qty {order.min_qty:g}); sent without it the "
                "order could fill in smaller parts, so it is not sent")
    return None


def _tif(tif: TimeInForce) -> Any:
    from alpaca.trading.enums import TimeInForce as AlpacaTif

    return AlpacaTif(tif.value)  # day, gtc, ioc, fok: the same words


def _order_request(order: Order) -> Any:
    from alpaca.trading.enums import OrderSide
    from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest, StopOrderRequest

    common = {
        "symbol": order.symbol,
        "qty": order.qty,
        "side": OrderSide.BUY if order.side is Side.BUY else OrderSide.SELL,
        "time_in_force": _tif(order.tif),
        "client_order_id": order.client_order_id,
    }
    if order.type is OrderType.LIMIT:
        return LimitOrderRequest(limit_price=order.limit_price, **common)
    if order.type is OrderType.STOP:
        return StopOrderRequest(stop_price=order.stop_price, **common)
    return MarketOrderRequest(**common)


def _order_from_json(j: Mapping[str, Any]) -> Order:
    """An Order from Alpaca's order object (for orders this adapter did not send itself)."""
    typ = str(j.get("order_type") or j.get("type") or "market")
    return Order(
        client_order_id=str(j.get("client_order_id")),
        symbol=str(j.get("symbol")),
        side=Side(str(j.get("side"))),
        qty=_f(j.get("qty")),
        type=OrderType(typ) if typ in OrderType.__members__.values() else OrderType.MARKET,
        tif=TimeInForce(str(j.get("time_in_force"))) if j.get("time_in_force") in {"day", "gtc", "ioc", "fok"}
        else TimeInForce.DAY,
        limit_price=_f(j["limit_price"]) if j.get("limit_price") else None,
        stop_price=_f(j["stop_price"]) if j.get("stop_price") else None,
    )


def _message(exc: Exception) -> str:
    try:
        return str(exc.message)  # type: ignore[attr-defined]
    except Exception:
        return str(exc)[:200]


def _with_timeout(request: Callable[..., Any], timeout_s: float) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", timeout_s)
        return request(*args, **kwargs)

    return call
