"""A local Alpaca-compatible paper-trading server: the market and the broker for tests and demos, with faults.

Why: the Alpaca adapter must be tested end to end with the real alpaca-py clients (`TradingClient`,
`TradingStream`, `StockHistoricalDataClient`, `StockDataStream`, all pointed here with `url_override`), and the
live loop needs one process that is both its market and its broker. Matching is `SimBroker`'s (one engine, the
same rules as the backtest); this module only adds Alpaca's wire formats, an account, and injected faults.

Two layers:
    * `PaperVenue` (pure, no I/O): replays bar batches from a `DataSource` (or an Arrow table) one step at a
      time into `SimBroker.on_bars`, keeps Alpaca's view of every order, the positions and the cash, and renders
      the JSON bodies exactly as alpaca-py's models parse them (numbers as strings, UUID ids, RFC 3339 times).
      Timestamps are market time: the clock is the ts of the last replayed bar.
    * `PaperServer`: an aiohttp app on a background thread and event loop (all venue state is touched only on
      that loop), started with `.start() -> base_url`.

Routes (Alpaca's, as alpaca-py 0.44 calls them; auth headers APCA-API-KEY-ID / APCA-API-SECRET-KEY on REST,
the same pair in the websocket auth messages):
    * trading REST: POST/GET/DELETE /v2/orders, GET/PATCH/DELETE /v2/orders/{id},
      GET /v2/orders:by_client_order_id, GET /v2/positions, GET /v2/positions/{symbol}, GET /v2/account,
      GET /v2/clock. A repeated client_order_id answers 422 "client_order_id must be unique".
    * /stream: the trade-updates websocket (JSON: authenticate -> authorization, listen -> listening, then
      {"stream": "trade_updates", "data": {event, order, timestamp, price, qty, position_qty, execution_id}}).
    * market data: GET /v2/stocks/bars (only bars already replayed: no look-ahead) and the msgpack bar
      websocket at /v2/iex and /v2/sip (connected -> auth -> subscribe -> "b" messages, one per symbol per step).
    * NOT Alpaca's API, for tests and demos only: POST /admin/step {"n": k}, GET/POST /admin/faults (a FaultPlan
      as JSON). Same auth headers.

Not modelled: buying power checks (orders are never refused for cash), extended hours, order classes other than
simple, stop_limit and trailing_stop orders, notional orders, opg/cls time in force (all answered 422).
Replace (PATCH) cancels the old order at the venue and submits a new one for the new quantity (default: the old
order's leaves), as Alpaca's "replaced" semantics; the new order gets a fresh client order id unless one is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tradesys.broker.sim import SimBroker
from tradesys.config import BrokerConfig
from tradesys.core.orders import EventKind, Fill, Order, OrderEvent, OrderType, Side, TimeInForce

if TYPE_CHECKING:
    from aiohttp import web

    from tradesys.data.source import DataSource

_NS = uuid.UUID("6f1c2a52-3c4e-4b8e-9a51-7d0c1f2e3a4b")  # fixed namespace: asset and execution ids are stable
_DAY_NS = 86_400 * 10**9
_EPS = 1e-9


class PaperError(Exception):
    """An Alpaca-style API error: HTTP status, Alpaca error code and message."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


class FaultPlan(BaseModel):
    """Faults to inject; each counter is consumed as its fault fires. Unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    drop_ack: int = Field(0, ge=0, description="next N POST /v2/orders: the order is created, the connection cut")
    duplicate_fill: int = Field(0, ge=0, description="next N fill/partial_fill stream messages are sent twice")
    partial_fill_on_cancel: int = Field(
        0, ge=0, description="next N cancels of an order with leaves: 204, then a partial fill, then canceled"
    )
    cancel_fill_fraction: float = Field(0.5, gt=0, lt=1, description="share of the leaves that partial fill takes")
    rate_limit: int = Field(0, ge=0, description="next N REST requests are answered 429 with Retry-After")
    retry_after_s: int = Field(1, ge=0, description="the Retry-After header (seconds) of those 429s")
    stream_outage_steps: int = Field(
        0, ge=0, description="drop every websocket now and refuse new ones for this many replay steps (0: end it)"
    )


def fault_plan(raw: Mapping[str, Any]) -> FaultPlan:
    """A FaultPlan from JSON-like input; ValueError with a one-line message naming the bad field."""
    try:
        return FaultPlan(**raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(x) for x in err["loc"]) or "faults"
        raise ValueError(f"faults.{name}: {err['msg']}") from None


# ------------------------------------------------------------------------------------------------ formats


def iso(ns: int) -> str:
    """int ns UTC -> RFC 3339 with microseconds and Z, as Alpaca writes times."""
    return datetime.fromtimestamp(ns // 1000 / 1e6, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _num(x: float | None) -> str | None:
    """Alpaca sends quantities and prices as decimal strings."""
    if x is None:
        return None
    x = round(float(x), 9)  # 1000.2, not 1000.1999999999999: Alpaca's decimals, to a nano-unit
    if x.is_integer():
        return str(int(x))
    return repr(x)


def asset_id(symbol: str) -> str:
    return str(uuid.uuid5(_NS, "asset:" + symbol))


def execution_id(fill_id: str) -> str:
    """A stable UUID per fill: a duplicated fill message carries the same execution id."""
    return str(uuid.uuid5(_NS, "exec:" + fill_id))


def timeframe_ns(tf: str) -> int:
    """'1Min', '15Min', '1Hour', '1Day' -> bar length in ns (ValueError names `timeframe`)."""
    from tradesys.data.alpaca import parse_timeframe

    amount, unit = parse_timeframe(tf)
    per = {"Min": 60 * 10**9, "Hour": 3600 * 10**9, "Day": _DAY_NS, "Week": 7 * _DAY_NS}
    if unit not in per:
        raise ValueError(f"timeframe: {tf!r} is not served by the paper server")
    return amount * per[unit]


def timeframe_name(bar_ns: int) -> str:
    if bar_ns >= _DAY_NS:
        return "1Day"
    minutes = max(bar_ns // (60 * 10**9), 1)
    return f"{minutes // 60}Hour" if minutes % 60 == 0 else f"{minutes}Min"


def bar_start_ns(ts_ns: int, bar_ns: int) -> int:
    """tradesys stamps a bar at its end, Alpaca at its start; a daily bar starts at New York midnight."""
    if bar_ns < _DAY_NS:
        return ts_ns - bar_ns
    ny = pd.Timestamp(ts_ns, tz="UTC").tz_convert("America/New_York").normalize()
    return int(ny.tz_convert("UTC").value)


# ------------------------------------------------------------------------------------------------ venue


@dataclass
class PaperOrder:
    """Alpaca's view of one order; the venue's matching state lives in SimBroker under the same client id."""

    id: str
    client_order_id: str
    symbol: str
    side: Side
    qty: float
    type: OrderType
    tif: TimeInForce
    limit_price: float | None
    stop_price: float | None
    created_ns: int
    status: str = "pending_new"
    filled_qty: float = 0.0
    filled_avg_price: float | None = None
    updated_ns: int = 0
    filled_ns: int | None = None
    canceled_ns: int | None = None
    expired_ns: int | None = None
    failed_ns: int | None = None
    replaced_ns: int | None = None
    replaced_by: str | None = None
    replaces: str | None = None
    fills: list[Fill] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.status in ("pending_new", "new", "accepted", "partially_filled", "pending_cancel")

    def to_json(self) -> dict[str, Any]:
        """The body alpaca-py's `Order` model parses."""
        opt = lambda ns: None if ns is None else iso(ns)  # noqa: E731
        return {
            "id": self.id,
            "client_order_id": self.client_order_id,
            "created_at": iso(self.created_ns),
            "updated_at": iso(self.updated_ns or self.created_ns),
            "submitted_at": iso(self.created_ns),
            "filled_at": opt(self.filled_ns),
            "expired_at": opt(self.expired_ns),
            "expires_at": None,
            "canceled_at": opt(self.canceled_ns),
            "failed_at": opt(self.failed_ns),
            "replaced_at": opt(self.replaced_ns),
            "replaced_by": self.replaced_by,
            "replaces": self.replaces,
            "asset_id": asset_id(self.symbol),
            "symbol": self.symbol,
            "asset_class": "us_equity",
            "notional": None,
            "qty": _num(self.qty),
            "filled_qty": _num(self.filled_qty),
            "filled_avg_price": _num(self.filled_avg_price),
            "order_class": "simple",
            "order_type": self.type.value,
            "type": self.type.value,
            "side": self.side.value,
            "time_in_force": self.tif.value,
            "limit_price": _num(self.limit_price),
            "stop_price": _num(self.stop_price),
            "status": self.status,
            "extended_hours": False,
            "legs": None,
            "trail_percent": None,
            "trail_price": None,
            "hwm": None,
            "position_intent": "buy_to_open" if self.side is Side.BUY else "sell_to_close",
        }


@dataclass
class _Position:
    qty: float = 0.0
    avg_entry: float = 0.0

    def book(self, signed_qty: float, price: float) -> None:
        """Average cost: adding to a position re-averages, reducing keeps it, flipping starts at the fill price."""
        new = self.qty + signed_qty
        if abs(new) <= _EPS:
            self.qty, self.avg_entry = 0.0, 0.0
        elif self.qty == 0.0 or (self.qty > 0) != (new > 0):
            self.qty, self.avg_entry = new, price
        elif abs(new) > abs(self.qty):
            self.avg_entry = (self.avg_entry * self.qty + price * signed_qty) / new
            self.qty = new
        else:
            self.qty = new


_ALPACA_TYPES = {"market": OrderType.MARKET, "limit": OrderType.LIMIT, "stop": OrderType.STOP}
_ALPACA_TIF = {"day": TimeInForce.DAY, "gtc": TimeInForce.GTC, "ioc": TimeInForce.IOC, "fok": TimeInForce.FOK}
_UPDATE_EVENT = {
    EventKind.CANCELED: ("canceled", "canceled"),
    EventKind.EXPIRED: ("expired", "expired"),
    EventKind.REJECTED: ("rejected", "rejected"),
}


def _to_float(name: str, value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise PaperError(422, 40010000, f"{name}: not a number ({value!r})") from None
    if not math.isfinite(out):
        raise PaperError(422, 40010000, f"{name}: must be finite")
    return out


class PaperVenue:
    """The pure part of the paper server: replay clock, SimBroker matching, Alpaca's account view.

    Every mutating call returns the trade updates it caused, as the `data` of trade_updates stream messages.
    """

    def __init__(
        self,
        source: DataSource | pa.Table,
        broker: BrokerConfig | None = None,
        initial_cash: float = 100_000.0,
        timeframe: str | None = None,
        id_factory: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        from tradesys.data.historical import TableSource

        if isinstance(source, pa.Table):
            source = TableSource(source, name="table")
        if not (initial_cash > 0 and math.isfinite(initial_cash)):
            raise ValueError(f"initial_cash: must be a positive number (got {initial_cash!r})")
        self.source = source
        self.config = broker or BrokerConfig()
        self.sim = SimBroker(self.config)
        self.initial_cash = float(initial_cash)
        self.cash = float(initial_cash)
        self.fees = 0.0
        self._new_id = id_factory
        self._batches: Iterator[pa.RecordBatch] = iter(source.batches())
        self._next: pa.RecordBatch | None = next(self._batches, None)
        stamps = getattr(source, "timestamps", None)
        self.bar_ns = timeframe_ns(timeframe) if timeframe else self._infer_bar_ns(stamps)
        self.steps = 0
        self.history: list[pa.RecordBatch] = []
        self._history_table: pa.Table | None = None
        self.last_close: dict[str, float] = {}
        self.prev_close: dict[str, float] = {}
        self.orders: dict[str, PaperOrder] = {}  # by Alpaca id, in submission order
        self.by_client: dict[str, PaperOrder] = {}
        self.positions: dict[str, _Position] = {}
        self.account_id = str(uuid.uuid5(_NS, "account"))
        self._now = self._batch_ts(self._next) if self._next is not None else time.time_ns()
        self._last_created = 0
        self.created_ns = self._now

    @staticmethod
    def _infer_bar_ns(stamps: Any) -> int:
        if stamps is None or len(stamps) < 2:
            return 60 * 10**9
        gaps = np.diff(np.asarray(stamps, np.int64))
        gap = int(gaps[gaps > 0].min()) if (gaps > 0).any() else 60 * 10**9
        return _DAY_NS if gap >= 20 * 3600 * 10**9 else gap

    # ------------------------------------------------------------------ clock

    @staticmethod
    def _batch_ts(batch: pa.RecordBatch) -> int:
        return int(batch.column("ts").cast(pa.int64())[0].as_py()) if batch.num_rows else time.time_ns()

    @property
    def now_ns(self) -> int:
        """Market time: the last replayed bar's ts (before the first step, the first bar's)."""
        return self._now

    def _created_stamp(self) -> int:
        """Order creation times are market time, made strictly increasing by 1 us steps, so that clients can page
        GET /v2/orders with `after`/`until` even when thousands of orders arrive within one bar."""
        self._last_created = max(self._now, self._last_created + 1000)
        return self._last_created

    @property
    def exhausted(self) -> bool:
        return self._next is None

    def step(self) -> tuple[pa.RecordBatch | None, list[dict[str, Any]]]:
        """Replay one bar batch: match resting orders, expire DAY orders. (batch, trade updates); None at the end."""
        batch = self._next
        if batch is None:
            return None, []
        self._next = next(self._batches, None)
        self.history.append(batch)
        self._now = max(self._now, self._batch_ts(batch))
        self._history_table = None
        self.steps += 1
        closes = dict(zip(batch.column("symbol").to_pylist(), batch.column("close").to_pylist(), strict=True))
        for sym, c in closes.items():
            if c is not None and c == c and c > 0:
                self.prev_close[sym] = self.last_close.get(sym, c)
                self.last_close[sym] = float(c)
        return batch, self._apply(self.sim.on_bars(batch))

    def history_table(self) -> pa.Table:
        if self._history_table is None:
            from tradesys.core.schemas import BAR_SCHEMA

            self._history_table = (
                pa.Table.from_batches(self.history) if self.history else BAR_SCHEMA.empty_table()
            )
        return self._history_table

    # ------------------------------------------------------------------ orders

    def submit(self, body: Mapping[str, Any]) -> tuple[PaperOrder, list[dict[str, Any]]]:
        """POST /v2/orders: validate as Alpaca does, hand the order to SimBroker, apply its events."""
        cid = str(body.get("client_order_id") or self._new_id())
        if len(cid) > 128:
            raise PaperError(422, 40010001, "client_order_id must be no more than 128 characters")
        if cid in self.by_client:
            raise PaperError(422, 40010001, "client_order_id must be unique")
        symbol = str(body.get("symbol") or "")
        if not symbol:
            raise PaperError(422, 40010001, "symbol is required")
        if body.get("notional") is not None:
            raise PaperError(422, 40010001, "notional: not supported by the paper server; send qty")
        if (body.get("order_class") or "simple") != "simple":
            raise PaperError(422, 40010001, f"order_class: only simple orders (got {body.get('order_class')!r})")
        if body.get("extended_hours"):
            raise PaperError(422, 40010001, "extended_hours: not supported by the paper server")
        side = {"buy": Side.BUY, "sell": Side.SELL}.get(str(body.get("side")))
        if side is None:
            raise PaperError(422, 40010001, f"side: must be buy or sell (got {body.get('side')!r})")
        otype = _ALPACA_TYPES.get(str(body.get("type") or body.get("order_type")))
        if otype is None:
            raise PaperError(422, 40010001, f"type: market, limit or stop only (got {body.get('type')!r})")
        tif = _ALPACA_TIF.get(str(body.get("time_in_force")))
        if tif is None:
            raise PaperError(
                422, 40010001, f"time_in_force: day, gtc, ioc or fok only (got {body.get('time_in_force')!r})"
            )
        qty = _to_float("qty", body.get("qty"))
        if qty is None or qty <= 0:
            raise PaperError(422, 40010001, "qty must be > 0")
        limit = _to_float("limit_price", body.get("limit_price"))
        stop = _to_float("stop_price", body.get("stop_price"))
        order = Order(cid, symbol, side, qty, otype, tif, limit, stop, ts_ns=self.now_ns)
        problem = order.validate()
        if problem is not None:
            raise PaperError(422, 40010001, problem)
        return self._place(order)

    def _place(self, order: Order, replaces: str | None = None) -> tuple[PaperOrder, list[dict[str, Any]]]:
        now = self._created_stamp()
        po = PaperOrder(
            id=self._new_id(),
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            qty=order.qty,
            type=order.type,
            tif=order.tif,
            limit_price=order.limit_price,
            stop_price=order.stop_price,
            created_ns=now,
            updated_ns=now,
            replaces=replaces,
        )
        self.orders[po.id] = po
        self.by_client[po.client_order_id] = po
        return po, self._apply(self.sim.submit([order]))

    def get(self, order_id: str) -> PaperOrder:
        po = self.orders.get(order_id)
        if po is None:
            raise PaperError(404, 40410000, "order not found")
        return po

    def get_by_client(self, client_order_id: str) -> PaperOrder:
        po = self.by_client.get(client_order_id)
        if po is None:
            raise PaperError(404, 40410000, "order not found")
        return po

    def cancel(self, order_id: str, partial_fraction: float | None = None) -> list[dict[str, Any]]:
        """DELETE /v2/orders/{id}. With `partial_fraction`, a fill of that share of the leaves races the cancel
        (the fault 'partial fill after a cancel request'): the fill is booked first, then the cancel."""
        po = self.get(order_id)
        if not po.is_open:
            raise PaperError(422, 42210000, f"order is already in \"{po.status}\" state")
        updates: list[dict[str, Any]] = []
        if partial_fraction is not None:
            updates += self._race_fill(po, partial_fraction)
        return updates + self._apply(self.sim.cancel([po.client_order_id], self.now_ns))

    def _race_fill(self, po: PaperOrder, fraction: float) -> list[dict[str, Any]]:
        """A fill that was in flight when the cancel arrived: at the last close (bounded by a limit), SimBroker's
        fee rule, fill id f"{client_order_id}:{n}" continuing SimBroker's numbering."""
        leaves = po.qty - po.filled_qty
        qty = leaves * fraction
        if float(po.qty).is_integer() and float(leaves).is_integer():
            qty = float(max(math.floor(qty), 1))  # whole shares
        px = self.last_close.get(po.symbol)
        if px is None or qty <= 0 or qty >= leaves - _EPS:  # a race leaves something to cancel
            return []
        if po.limit_price is not None:
            px = min(px, po.limit_price) if po.side is Side.BUY else max(px, po.limit_price)
        fee = max(self.config.fee_min, self.config.fee_bps / 1e4 * qty * px, 0.0)
        n = len(po.fills) + 1
        fill = Fill(f"{po.client_order_id}:{n}", po.client_order_id, po.symbol, po.side, qty, px, fee,
                    self.now_ns, time.time_ns())
        return self._on_fill(po, fill)

    def replace(self, order_id: str, body: Mapping[str, Any]) -> tuple[PaperOrder, list[dict[str, Any]]]:
        """PATCH /v2/orders/{id}: the old order becomes 'replaced', a new one (replaces=old id) takes its place."""
        old = self.get(order_id)
        if not old.is_open:
            raise PaperError(422, 42210000, f"order is already in \"{old.status}\" state")
        if body.get("trail") is not None:
            raise PaperError(422, 40010001, "trail: trailing stops are not supported by the paper server")
        cid = str(body.get("client_order_id") or self._new_id())
        if cid in self.by_client:
            raise PaperError(422, 40010001, "client_order_id must be unique")
        qty = _to_float("qty", body.get("qty"))
        qty = old.qty - old.filled_qty if qty is None else qty
        tif = _ALPACA_TIF.get(str(body.get("time_in_force") or old.tif.value))
        if tif is None:
            raise PaperError(422, 40010001, f"time_in_force: day, gtc, ioc or fok only (got {body['time_in_force']!r})")
        limit = _to_float("limit_price", body.get("limit_price"))
        stop = _to_float("stop_price", body.get("stop_price"))
        new = Order(cid, old.symbol, old.side, qty, old.type, tif,
                    old.limit_price if limit is None else limit, old.stop_price if stop is None else stop,
                    ts_ns=self.now_ns)
        problem = new.validate()
        if problem is not None:
            raise PaperError(422, 40010001, problem)
        self.sim.cancel([old.client_order_id], self.now_ns)  # its CANCELED event is the 'replaced' below
        po, updates = self._place(new, replaces=old.id)
        old.status, old.replaced_by, old.replaced_ns, old.updated_ns = "replaced", po.id, self.now_ns, self.now_ns
        return po, [self._update("replaced", old), *updates]

    def cancel_all(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """DELETE /v2/orders: (207 body rows, trade updates)."""
        rows, updates = [], []
        for po in [o for o in self.orders.values() if o.is_open]:
            updates += self._apply(self.sim.cancel([po.client_order_id], self.now_ns))
            rows.append({"id": po.id, "status": 200, "body": po.to_json()})
        return rows, updates

    def close_position(self, symbol: str, q: Mapping[str, str]) -> tuple[PaperOrder, list[dict[str, Any]]]:
        """DELETE /v2/positions/{symbol}: a market day order for the whole position (or `qty`, or `percentage`)."""
        pos = self.positions.get(symbol)
        if pos is None:
            raise PaperError(404, 40410000, "position does not exist")
        qty = _to_float("qty", q.get("qty"))
        pct = _to_float("percentage", q.get("percentage"))
        if qty is None:
            qty = abs(pos.qty) * (1.0 if pct is None else pct / 100.0)
        if not 0 < qty <= abs(pos.qty) + _EPS:
            raise PaperError(422, 40010001, f"qty: must be in (0, {_num(abs(pos.qty))}]")
        side = Side.SELL if pos.qty > 0 else Side.BUY
        order = Order(self._new_id(), symbol, side, qty, OrderType.MARKET, TimeInForce.DAY, ts_ns=self.now_ns)
        return self._place(order)

    def close_all_positions(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """DELETE /v2/positions: (207 body rows, trade updates)."""
        rows, updates = [], []
        for sym in sorted(self.positions):
            po, more = self.close_position(sym, {})
            rows.append({"symbol": sym, "status": 200, "order_id": po.id, "body": po.to_json()})
            updates += more
        return rows, updates

    def list_orders(self, q: Mapping[str, str]) -> list[dict[str, Any]]:
        """GET /v2/orders with Alpaca's filters: status (open|closed|all), limit (50, max 500), after, until,
        direction (desc), side, symbols."""
        status = q.get("status", "open")
        if status not in ("open", "closed", "all"):
            raise PaperError(422, 40010001, f"status: open, closed or all (got {status!r})")
        out = list(self.orders.values())
        if status != "all":
            out = [o for o in out if o.is_open == (status == "open")]
        if q.get("symbols"):
            syms = set(q["symbols"].split(","))
            out = [o for o in out if o.symbol in syms]
        if q.get("side"):
            out = [o for o in out if o.side.value == q["side"]]
        if q.get("after"):
            after = pd.Timestamp(q["after"]).value
            out = [o for o in out if o.created_ns > after]
        if q.get("until"):
            until = pd.Timestamp(q["until"]).value
            out = [o for o in out if o.created_ns < until]
        if q.get("direction", "desc") == "desc":
            out.reverse()
        limit = min(int(q.get("limit") or 50), 500)
        return [o.to_json() for o in out[:limit]]

    # ------------------------------------------------------------------ events -> Alpaca state

    def _apply(self, events: list[OrderEvent]) -> list[dict[str, Any]]:
        updates: list[dict[str, Any]] = []
        for ev in events:
            po = self.by_client.get(ev.client_order_id)
            if po is None or not po.is_open:  # a replaced order's venue cancel, for one
                continue
            if ev.kind is EventKind.ACCEPTED:
                po.status, po.updated_ns = "new", ev.ts_ns
                updates.append(self._update("new", po))
            elif ev.kind is EventKind.FILL:
                assert ev.fill is not None
                updates += self._on_fill(po, ev.fill)
            else:
                event, status = _UPDATE_EVENT[ev.kind]
                po.status, po.updated_ns = status, ev.ts_ns
                if ev.kind is EventKind.CANCELED:
                    po.canceled_ns = ev.ts_ns
                elif ev.kind is EventKind.EXPIRED:
                    po.expired_ns = ev.ts_ns
                else:
                    po.failed_ns = ev.ts_ns
                updates.append(self._update(event, po))
        return updates

    def _on_fill(self, po: PaperOrder, fill: Fill) -> list[dict[str, Any]]:
        total = po.filled_qty + fill.qty
        po.filled_avg_price = ((po.filled_avg_price or 0.0) * po.filled_qty + fill.price * fill.qty) / total
        po.filled_qty = total
        po.fills.append(fill)
        po.updated_ns = fill.ts_ns
        full = total >= po.qty - _EPS
        po.status = "filled" if full else "partially_filled"
        if full:
            po.filled_ns = fill.ts_ns
        pos = self.positions.setdefault(po.symbol, _Position())
        pos.book(fill.signed_qty, fill.price)
        self.cash -= fill.signed_qty * fill.price + fill.fee
        self.fees += fill.fee
        if pos.qty == 0.0:
            del self.positions[po.symbol]
        return [self._update("fill" if full else "partial_fill", po, fill, pos.qty)]

    def _update(self, event: str, po: PaperOrder, fill: Fill | None = None, position_qty: float = 0.0) -> dict:
        data: dict[str, Any] = {"event": event, "order": po.to_json(), "timestamp": iso(po.updated_ns or self.now_ns)}
        if fill is not None:
            data.update(
                execution_id=execution_id(fill.fill_id),
                price=_num(fill.price),
                qty=_num(fill.qty),
                position_qty=_num(position_qty),
                timestamp=iso(fill.ts_ns),
            )
        return data

    # ------------------------------------------------------------------ account views

    def all_fills(self) -> list[Fill]:
        return [f for po in self.orders.values() for f in po.fills]

    def position_json(self, symbol: str) -> dict[str, Any]:
        pos = self.positions.get(symbol)
        if pos is None:
            raise PaperError(404, 40410000, "position does not exist")
        px = self.last_close.get(symbol, pos.avg_entry)
        prev = self.prev_close.get(symbol, px)
        cost = pos.qty * pos.avg_entry
        mv = pos.qty * px
        upl = mv - cost
        return {
            "asset_id": asset_id(symbol),
            "symbol": symbol,
            "exchange": "",
            "asset_class": "us_equity",
            "asset_marginable": True,
            "avg_entry_price": _num(pos.avg_entry),
            "qty": _num(pos.qty),
            "qty_available": _num(pos.qty),
            "side": "long" if pos.qty > 0 else "short",
            "market_value": _num(mv),
            "cost_basis": _num(cost),
            "unrealized_pl": _num(upl),
            "unrealized_plpc": _num(upl / abs(cost)) if cost else "0",
            "unrealized_intraday_pl": _num(pos.qty * (px - prev)),
            "unrealized_intraday_plpc": _num((px - prev) / prev) if prev else "0",
            "current_price": _num(px),
            "lastday_price": _num(prev),
            "change_today": _num((px - prev) / prev) if prev else "0",
        }

    def positions_json(self) -> list[dict[str, Any]]:
        return [self.position_json(s) for s in sorted(self.positions)]

    def equity(self) -> float:
        return self.cash + sum(p.qty * self.last_close.get(s, p.avg_entry) for s, p in self.positions.items())

    def account_json(self) -> dict[str, Any]:
        long_mv = sum(p.qty * self.last_close.get(s, p.avg_entry) for s, p in self.positions.items() if p.qty > 0)
        short_mv = sum(p.qty * self.last_close.get(s, p.avg_entry) for s, p in self.positions.items() if p.qty < 0)
        eq = self.cash + long_mv + short_mv
        return {
            "id": self.account_id,
            "account_number": "PA-TRADESYS",
            "status": "ACTIVE",
            "crypto_status": "INACTIVE",
            "currency": "USD",
            "buying_power": _num(max(self.cash, 0.0)),
            "regt_buying_power": _num(max(self.cash, 0.0)),
            "daytrading_buying_power": "0",
            "non_marginable_buying_power": _num(max(self.cash, 0.0)),
            "cash": _num(self.cash),
            "accrued_fees": _num(self.fees),
            "pending_transfer_out": None,
            "pending_transfer_in": None,
            "portfolio_value": _num(eq),
            "pattern_day_trader": False,
            "trading_blocked": False,
            "transfers_blocked": False,
            "account_blocked": False,
            "created_at": iso(self.created_ns),
            "trade_suspended_by_user": False,
            "multiplier": "1",
            "shorting_enabled": True,
            "equity": _num(eq),
            "last_equity": _num(self.initial_cash),
            "long_market_value": _num(long_mv),
            "short_market_value": _num(short_mv),
            "initial_margin": "0",
            "maintenance_margin": "0",
            "last_maintenance_margin": "0",
            "sma": "0",
            "daytrade_count": 0,
        }

    def clock_json(self) -> dict[str, Any]:
        """Open while bars remain to replay; next_open is now, next_close the last bar of the data."""
        stamps = getattr(self.source, "timestamps", None)
        end = int(stamps[-1]) if stamps is not None and len(stamps) else self.now_ns
        return {
            "timestamp": iso(self.now_ns),
            "is_open": not self.exhausted,
            "next_open": iso(self.now_ns),
            "next_close": iso(max(end, self.now_ns)),
        }

    # ------------------------------------------------------------------ market data

    def bars_json(self, q: Mapping[str, str]) -> dict[str, Any]:
        """GET /v2/stocks/bars over the bars replayed so far, paged across symbols then time (Alpaca's order)."""
        if not q.get("symbols"):
            raise PaperError(422, 42210000, "symbols is required")
        tf = q.get("timeframe", timeframe_name(self.bar_ns))
        try:
            want = timeframe_ns(tf)
        except ValueError as exc:
            raise PaperError(422, 42210000, str(exc)) from None
        if want != self.bar_ns:
            raise PaperError(
                422, 42210000, f"timeframe: the paper server serves its replay's bars ({timeframe_name(self.bar_ns)})"
            )
        table = self.history_table()
        syms = sorted(set(q["symbols"].split(",")))
        lo = pd.Timestamp(q["start"]).value if q.get("start") else None
        hi = pd.Timestamp(q["end"]).value if q.get("end") else None
        rows: list[tuple[str, dict[str, Any]]] = []
        if table.num_rows:
            df = table.to_pandas()
            df = df[df["symbol"].isin(syms)]
            ts = df["ts"].astype("int64").to_numpy() if df["ts"].dtype.kind == "i" else df["ts"].array.asi8
            for sym, t, o, h, lo_, c, v in zip(
                df["symbol"], ts, df["open"], df["high"], df["low"], df["close"], df["volume"], strict=True
            ):
                start = bar_start_ns(int(t), self.bar_ns)
                if (lo is not None and start < lo) or (hi is not None and start > hi):
                    continue
                rows.append((sym, {"t": iso(start).replace(".000000Z", "Z"), "o": o, "h": h, "l": lo_, "c": c,
                                   "v": v, "n": 0, "vw": c}))
            rows.sort(key=lambda r: (r[0], r[1]["t"]))
        if q.get("sort") == "desc":
            rows.reverse()
        start_i = int(q.get("page_token") or 0)
        limit = min(int(q.get("limit") or 1000), 10_000)
        page = rows[start_i : start_i + limit]
        out: dict[str, list[dict[str, Any]]] = {}
        for sym, r in page:
            out.setdefault(sym, []).append(r)
        nxt = start_i + limit
        return {"bars": out, "next_page_token": str(nxt) if nxt < len(rows) else None}

    def bar_messages(self, batch: pa.RecordBatch) -> list[dict[str, Any]]:
        """One websocket bar message ('T': 'b', msgpack timestamp of the bar start) per symbol of a batch."""
        import msgpack

        out = []
        for r in batch.to_pylist():
            if r["close"] is None or not (r["close"] > 0):
                continue
            ts = pd.Timestamp(r["ts"]).value
            c = r["close"]
            out.append({
                "T": "b", "S": r["symbol"],
                "o": r["open"] if r["open"] is not None else c, "h": r["high"] if r["high"] is not None else c,
                "l": r["low"] if r["low"] is not None else c, "c": c, "v": r["volume"] or 0.0,
                "t": msgpack.Timestamp.from_unix_nano(bar_start_ns(ts, self.bar_ns)), "n": 0, "vw": c,
            })
        return out


# ------------------------------------------------------------------------------------------------ server


class _Conn:
    """One websocket client: an outbox drained by its own writer task, so broadcasts keep their order."""

    def __init__(self, ws: web.WebSocketResponse, kind: str) -> None:
        self.ws, self.kind = ws, kind
        self.queue: asyncio.Queue[bytes | str | None] = asyncio.Queue()
        self.symbols: set[str] = set()
        self.authed = False
        self.ready = False  # authenticated and listening / subscribed

    async def writer(self) -> None:
        while (msg := await self.queue.get()) is not None:
            try:
                if isinstance(msg, bytes):
                    await self.ws.send_bytes(msg)
                else:
                    await self.ws.send_str(msg)
            except (ConnectionError, RuntimeError):
                return


class PaperServer:
    """The Alpaca-compatible server on 127.0.0.1 (see the module docstring). Python API for tests:
    start() -> base_url, stop(), step(n), set_faults(...), and read-only views orders(), positions(),
    account(), fills(), plus `stats` (counters of the faults that fired)."""

    def __init__(
        self,
        source: DataSource | pa.Table,
        *,
        key: str,
        secret: str,
        broker: BrokerConfig | None = None,
        initial_cash: float = 100_000.0,
        bars_per_second: float = 0.0,
        faults: FaultPlan | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        timeframe: str | None = None,
        wait_for_clients: bool = False,
    ) -> None:
        if not key or not secret:
            raise ValueError("key/secret: the paper server needs an API key id and secret")
        if not (bars_per_second >= 0 and math.isfinite(bars_per_second)):
            raise ValueError(f"bars_per_second: must be >= 0 (got {bars_per_second!r})")
        self._key, self._secret = key, secret
        self.venue = PaperVenue(source, broker, initial_cash, timeframe)
        self.bars_per_second = float(bars_per_second)
        # a paced replay waits for a trader: a subscribed bar stream and a listening trade-updates stream
        self.wait_for_clients = wait_for_clients
        self.faults = faults.model_copy() if faults is not None else FaultPlan()
        self.host, self.port = host, port
        self.stats: dict[str, int] = {
            "rate_limited": 0, "dropped_acks": 0, "duplicate_fills": 0, "cancel_race_fills": 0,
            "streams_dropped": 0, "streams_refused": 0, "updates_lost": 0, "requests": 0,
        }
        self._conns: set[_Conn] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: Any = None
        self._pacer: asyncio.Task[None] | None = None
        self._stopped: asyncio.Event | None = None
        self.base_url = ""

    def __repr__(self) -> str:
        return f"PaperServer(base_url={self.base_url!r}, steps={self.venue.steps}, credentials=<hidden>)"

    # ------------------------------------------------------------------ lifecycle

    @property
    def stream_url(self) -> str:
        """The trade-updates websocket (TradingStream(url_override=...))."""
        return self.base_url.replace("http://", "ws://") + "/stream"

    @property
    def data_stream_url(self) -> str:
        """The bar websocket (StockDataStream(url_override=...), AlpacaMarketData(stream_url=...))."""
        return self.base_url.replace("http://", "ws://") + "/v2/iex"

    def start(self) -> str:
        """Serve on a background thread; returns the base URL (http://host:port) once it accepts connections."""
        if self._thread is not None:
            return self.base_url
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        self.base_url = f"http://{self.host}:{self.port}"
        ready = threading.Event()
        errors: list[BaseException] = []
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self._serve(sock, ready))
            except BaseException as exc:  # surfaced by start()
                errors.append(exc)
                ready.set()
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, name="alpaca-paper-server", daemon=True)
        self._thread.start()
        ready.wait(30)
        if errors:
            raise RuntimeError(f"paper server did not start: {errors[0]}")
        return self.base_url

    async def _serve(self, sock: socket.socket, ready: threading.Event) -> None:
        from aiohttp import web

        app = web.Application(middlewares=[self._middleware])
        r = app.router
        r.add_post("/v2/orders", self._post_order)
        r.add_get("/v2/orders", self._list_orders)
        r.add_delete("/v2/orders", self._cancel_all)
        r.add_get("/v2/orders:by_client_order_id", self._get_by_client)
        r.add_get("/v2/orders/{order_id}", self._get_order)
        r.add_patch("/v2/orders/{order_id}", self._replace_order)
        r.add_delete("/v2/orders/{order_id}", self._cancel_order)
        r.add_get("/v2/positions", lambda req: self._json(self.venue.positions_json()))
        r.add_get("/v2/positions/{symbol}", lambda req: self._json(self.venue.position_json(req.match_info["symbol"])))
        r.add_delete("/v2/positions", self._close_all_positions)
        r.add_delete("/v2/positions/{symbol}", self._close_position)
        r.add_get("/v2/account", lambda req: self._json(self.venue.account_json()))
        r.add_get("/v2/clock", lambda req: self._json(self.venue.clock_json()))
        r.add_get("/v2/stocks/bars", lambda req: self._json(self.venue.bars_json(req.query)))
        r.add_get("/stream", self._trade_stream)
        r.add_get("/v2/iex", self._data_stream)
        r.add_get("/v2/sip", self._data_stream)
        r.add_post("/admin/step", self._admin_step)
        r.add_get("/admin/faults", lambda req: self._json(self.faults.model_dump()))
        r.add_post("/admin/faults", self._admin_faults)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.SockSite(self._runner, sock, shutdown_timeout=0.5)
        await site.start()
        self._stopped = asyncio.Event()
        if self.bars_per_second > 0:
            self._pacer = asyncio.create_task(self._pace())
        ready.set()
        await self._stopped.wait()
        if self._pacer is not None:
            self._pacer.cancel()
        await self._drop_streams(count=False)
        await self._runner.cleanup()

    def stop(self) -> None:
        """Close every connection and the listening socket; idempotent."""
        if self._thread is None or self._loop is None:
            return
        if self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(15)
        self._thread = None

    def __enter__(self) -> PaperServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the server's loop (the only thread that touches the venue) and return its result."""
        if self._loop is None or self._thread is None:
            return fn()

        async def wrap() -> Any:
            out = fn()
            return await out if asyncio.iscoroutine(out) else out

        return asyncio.run_coroutine_threadsafe(wrap(), self._loop).result(30)

    # ------------------------------------------------------------------ Python API

    def step(self, n: int = 1) -> int:
        """Replay up to `n` bars now (each: matching, then the data and trade-update messages); bars replayed."""
        return int(self._call(lambda: self._step(n)))

    def set_faults(self, plan: FaultPlan | None = None, **changes: Any) -> FaultPlan:
        """Replace the fault plan (`plan`) or change some of its fields; returns the plan now in force."""
        fault_plan((plan or self.faults).model_dump() | changes)  # a bad field fails here, naming it
        # merged on the loop: a counter the server is using up meanwhile is not overwritten with a stale value
        return self._call(lambda: self._set_faults(fault_plan((plan or self.faults).model_dump() | changes)))

    def orders(self) -> list[dict[str, Any]]:
        """Every order as Alpaca JSON, in submission order."""
        return self._call(lambda: [o.to_json() for o in self.venue.orders.values()])

    def positions(self) -> dict[str, float]:
        return self._call(lambda: {s: p.qty for s, p in self.venue.positions.items()})

    def account(self) -> dict[str, Any]:
        return self._call(self.venue.account_json)

    def fills(self) -> list[Fill]:
        return self._call(self.venue.all_fills)

    def last_prices(self) -> dict[str, float]:
        return self._call(lambda: dict(self.venue.last_close))

    def stream_clients(self, kind: str = "trade") -> int:
        """Connected, authenticated and listening websocket clients of a kind ('trade' or 'data')."""
        return self._call(lambda: sum(1 for c in self._conns if c.kind == kind and c.ready))

    # ------------------------------------------------------------------ stepping and broadcasting

    async def _step(self, n: int) -> int:
        done = 0
        for _ in range(max(int(n), 0)):
            batch, updates = self.venue.step()
            if batch is None:
                break
            done += 1
            self._publish_updates(updates)
            if any(c.kind == "data" and c.ready for c in self._conns):
                self._publish_bars(self.venue.bar_messages(batch))
            if self.faults.stream_outage_steps > 0:  # the outage counts down in replay steps
                self.faults.stream_outage_steps -= 1
        return done

    def _trader_connected(self) -> bool:
        kinds = {c.kind for c in self._conns if c.ready and (c.kind != "data" or c.symbols)}
        return {"data", "trade"} <= kinds

    async def _pace(self) -> None:
        period = 1.0 / self.bars_per_second
        while self.wait_for_clients and not self._trader_connected():
            await asyncio.sleep(0.05)
        while not self.venue.exhausted:
            await asyncio.sleep(period)
            await self._step(1)

    def _publish_updates(self, updates: list[dict[str, Any]]) -> None:
        targets = [c for c in self._conns if c.kind == "trade" and c.ready]
        for data in updates:
            if not targets:
                self.stats["updates_lost"] += 1
            msg = json.dumps({"stream": "trade_updates", "data": data})
            copies = 1
            if data["event"] in ("fill", "partial_fill") and self.faults.duplicate_fill > 0:
                self.faults.duplicate_fill -= 1
                self.stats["duplicate_fills"] += 1
                copies = 2
            for c in targets:
                for _ in range(copies):
                    c.queue.put_nowait(msg)

    def _publish_bars(self, msgs: list[dict[str, Any]]) -> None:
        import msgpack

        for c in self._conns:
            if c.kind != "data" or not c.ready:
                continue
            mine = [m for m in msgs if "*" in c.symbols or m["S"] in c.symbols]
            if mine:
                c.queue.put_nowait(msgpack.packb(mine))

    async def _set_faults(self, plan: FaultPlan) -> FaultPlan:
        self.faults = plan
        if plan.stream_outage_steps > 0:  # idempotent during an outage: no websocket is up
            await self._drop_streams()
        return self.faults.model_copy()

    async def _drop_streams(self, count: bool = True) -> None:
        """A restart as clients see it: every websocket is closed (1012 service restart); nothing is replayed."""
        from aiohttp import WSCloseCode

        for c in list(self._conns):
            self._conns.discard(c)
            c.queue.put_nowait(None)
            if count:
                self.stats["streams_dropped"] += 1
            with contextlib.suppress(Exception):
                await c.ws.close(code=WSCloseCode.SERVICE_RESTART, message=b"restart")

    # ------------------------------------------------------------------ HTTP

    @staticmethod
    def _json(body: Any, status: int = 200) -> web.Response:
        from aiohttp import web

        return web.json_response(body, status=status)

    def _authorized(self, key: str | None, secret: str | None) -> bool:
        import hmac

        return hmac.compare_digest(key or "", self._key) and hmac.compare_digest(secret or "", self._secret)

    @property
    def _middleware(self) -> Any:
        from aiohttp import web

        @web.middleware
        async def mw(request: web.Request, handler: Any) -> web.StreamResponse:
            if request.path in ("/stream", "/v2/iex", "/v2/sip"):
                return await handler(request)  # websocket auth is in-band
            if not self._authorized(request.headers.get("APCA-API-KEY-ID"), request.headers.get("APCA-API-SECRET-KEY")):
                return self._json({"code": 40110000, "message": "request is not authorized"}, 401)
            if not request.path.startswith("/admin/"):
                self.stats["requests"] += 1
                if self.faults.rate_limit > 0:
                    self.faults.rate_limit -= 1
                    self.stats["rate_limited"] += 1
                    resp = self._json({"code": 42910000, "message": "rate limit exceeded"}, 429)
                    resp.headers["Retry-After"] = str(self.faults.retry_after_s)
                    return resp
            try:
                return await handler(request)
            except PaperError as exc:
                return self._json(exc.body(), exc.status)

        return mw

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json() if request.can_read_body else {}
        except json.JSONDecodeError:
            raise PaperError(400, 40010000, "request body format is invalid") from None
        if not isinstance(body, dict):
            raise PaperError(400, 40010000, "request body format is invalid")
        return body

    async def _post_order(self, request: web.Request) -> web.StreamResponse:
        po, updates = self.venue.submit(await self._body(request))
        self._publish_updates(updates)
        if self.faults.drop_ack > 0:
            self.faults.drop_ack -= 1
            self.stats["dropped_acks"] += 1
            if request.transport is not None:
                request.transport.abort()  # the order exists; the client never hears of it and retries
            from aiohttp import web

            raise web.HTTPServiceUnavailable()  # never reaches the client: its connection is gone
        return self._json(po.to_json())

    async def _list_orders(self, request: web.Request) -> web.Response:
        return self._json(self.venue.list_orders(request.query))

    async def _get_order(self, request: web.Request) -> web.Response:
        return self._json(self.venue.get(request.match_info["order_id"]).to_json())

    async def _get_by_client(self, request: web.Request) -> web.Response:
        return self._json(self.venue.get_by_client(request.query.get("client_order_id", "")).to_json())

    async def _cancel_order(self, request: web.Request) -> web.Response:
        from aiohttp import web

        po = self.venue.get(request.match_info["order_id"])
        want_race = self.faults.partial_fill_on_cancel > 0
        updates = self.venue.cancel(po.id, self.faults.cancel_fill_fraction if want_race else None)
        race = any(u["event"] == "partial_fill" for u in updates)
        if race:
            self.faults.partial_fill_on_cancel -= 1
            self.stats["cancel_race_fills"] += 1
            # the client hears 204 first, then the partial fill, then canceled
            resp = web.Response(status=204)
            await resp.prepare(request)
            await resp.write_eof()
            assert self._loop is not None
            self._loop.call_later(0.1, self._publish_updates, updates)
            return resp
        self._publish_updates(updates)
        return web.Response(status=204)

    async def _cancel_all(self, request: web.Request) -> web.Response:
        rows, updates = self.venue.cancel_all()
        self._publish_updates(updates)
        return self._json(rows, 207)

    async def _close_position(self, request: web.Request) -> web.Response:
        po, updates = self.venue.close_position(request.match_info["symbol"], request.query)
        self._publish_updates(updates)
        return self._json(po.to_json())

    async def _close_all_positions(self, request: web.Request) -> web.Response:
        if request.query.get("cancel_orders", "").lower() == "true":
            _, cancels = self.venue.cancel_all()
            self._publish_updates(cancels)
        rows, updates = self.venue.close_all_positions()
        self._publish_updates(updates)
        return self._json(rows, 207)

    async def _replace_order(self, request: web.Request) -> web.Response:
        po, updates = self.venue.replace(request.match_info["order_id"], await self._body(request))
        self._publish_updates(updates)
        return self._json(po.to_json())

    async def _admin_step(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        n = body.get("n", 1)
        if not isinstance(n, int) or n < 0:
            raise PaperError(422, 42210000, f"n: a whole number of bars >= 0 (got {n!r})")
        done = await self._step(n)
        return self._json({"stepped": done, "clock": iso(self.venue.now_ns), "exhausted": self.venue.exhausted})

    async def _admin_faults(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        try:
            plan = fault_plan(self.faults.model_dump() | body)
        except ValueError as exc:
            raise PaperError(422, 42210000, str(exc)) from None
        return self._json((await self._set_faults(plan)).model_dump())

    # ------------------------------------------------------------------ websockets

    async def _open_ws(self, request: web.Request, kind: str) -> tuple[web.StreamResponse, _Conn | None]:
        from aiohttp import web

        if self.faults.stream_outage_steps > 0:
            self.stats["streams_refused"] += 1
            return web.Response(status=503, text="restarting"), None
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        return ws, _Conn(ws, kind)

    async def _trade_stream(self, request: web.Request) -> web.StreamResponse:
        """Alpaca's trade-updates protocol: authenticate -> authorization, listen -> listening, then updates."""
        from aiohttp import WSMsgType

        resp, conn = await self._open_ws(request, "trade")
        if conn is None:
            return resp
        ws = conn.ws
        self._conns.add(conn)
        writer = asyncio.create_task(conn.writer())
        try:
            async for msg in ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    break
                try:
                    req = json.loads(msg.data)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue
                action, data = req.get("action"), req.get("data") or {}
                if action in ("authenticate", "auth"):
                    ok = self._authorized(data.get("key_id"), data.get("secret_key"))
                    reply = {"stream": "authorization",
                             "data": {"action": "authenticate", "status": "authorized" if ok else "unauthorized"}}
                    conn.queue.put_nowait(json.dumps(reply))
                    if not ok:
                        break
                    conn.authed = True
                elif action == "listen" and conn.authed:
                    streams = [s for s in data.get("streams", []) if s == "trade_updates"]
                    conn.queue.put_nowait(json.dumps({"stream": "listening", "data": {"streams": streams}}))
                    conn.ready = bool(streams)
        finally:
            self._conns.discard(conn)
            conn.queue.put_nowait(None)
            await writer
            await ws.close()
        return ws

    async def _data_stream(self, request: web.Request) -> web.StreamResponse:
        """Alpaca's market-data protocol (msgpack): connected -> auth -> subscribe -> bar messages."""
        import msgpack
        from aiohttp import WSMsgType

        resp, conn = await self._open_ws(request, "data")
        if conn is None:
            return resp
        ws = conn.ws
        self._conns.add(conn)
        writer = asyncio.create_task(conn.writer())
        conn.queue.put_nowait(msgpack.packb([{"T": "success", "msg": "connected"}]))
        authed = False
        try:
            async for msg in ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    break
                try:
                    req = msgpack.unpackb(msg.data) if msg.type == WSMsgType.BINARY else json.loads(msg.data)
                except Exception:
                    continue
                action = req.get("action")
                if action == "auth":
                    authed = self._authorized(req.get("key"), req.get("secret"))
                    if not authed:
                        conn.queue.put_nowait(msgpack.packb([{"T": "error", "code": 402, "msg": "auth failed"}]))
                        break
                    conn.queue.put_nowait(msgpack.packb([{"T": "success", "msg": "authenticated"}]))
                elif action in ("subscribe", "unsubscribe") and authed:
                    bars = set(req.get("bars") or [])
                    conn.symbols = conn.symbols | bars if action == "subscribe" else conn.symbols - bars
                    conn.ready = True
                    conn.queue.put_nowait(msgpack.packb([{"T": "subscription", "trades": [], "quotes": [],
                                                          "bars": sorted(conn.symbols)}]))
        finally:
            self._conns.discard(conn)
            conn.queue.put_nowait(None)
            await writer
            await ws.close()
        return ws
