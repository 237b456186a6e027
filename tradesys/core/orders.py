"""Orders, fills and order events: the messages that flow from strategy to broker and back.

An order is identified by its client order id, which the strategy assigns deterministically; every layer
(risk, OMS, broker, ledger) treats a repeated client order id as the same order, so a retry never trades twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"


class TimeInForce(StrEnum):
    DAY = "day"  # expires at the end of the bar/session it was accepted in
    GTC = "gtc"  # good till cancelled
    IOC = "ioc"  # fill what is possible now, cancel the rest
    FOK = "fok"  # fill all now or nothing


class OrderStatus(StrEnum):
    NEW = "new"  # created and risk-approved, recorded in the ledger, not yet acknowledged by the broker
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"
    REJECTED = "rejected"
    EXPIRED = "expired"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED, OrderStatus.EXPIRED})


class RejectReason(StrEnum):
    """Why an order was refused, by pre-trade risk or by the broker."""

    INVALID_ORDER = "invalid_order"
    UNKNOWN_SYMBOL = "unknown_symbol"
    NO_MARKET_PRICE = "no_market_price"
    MAX_ORDER_QTY = "max_order_qty"
    MAX_ORDER_NOTIONAL = "max_order_notional"
    MAX_POSITION = "max_position"
    PRICE_COLLAR = "price_collar"
    ORDER_RATE = "order_rate"
    KILL_SWITCH = "kill_switch"
    DUPLICATE_CLIENT_ORDER_ID = "duplicate_client_order_id"
    FOK_NOT_FILLABLE = "fok_not_fillable"
    NO_LIQUIDITY = "no_liquidity"
    VAR_LIMIT = "var_limit"
    EXPOSURE_LIMIT = "exposure_limit"
    RECONCILE_BREAK = "reconcile_break"  # new orders halted: the ledger and the broker disagree (reconcile)


@dataclass(frozen=True, slots=True)
class Order:
    """An instruction to trade. Immutable: state lives in the OMS, not on the order."""

    client_order_id: str
    symbol: str
    side: Side
    qty: float
    type: OrderType = OrderType.MARKET
    tif: TimeInForce = TimeInForce.DAY
    limit_price: float | None = None
    stop_price: float | None = None
    strategy_id: str = ""
    ts_ns: int = 0  # market (clock) time of the decision
    decision_wall_ns: int = 0  # wall-clock time of the decision, for decision-to-fill latency
    # execution algorithm that works the order as a parent (tradesys.execution.parents); "": send it as is
    algo: str = ""
    algo_params: tuple[tuple[str, float | int | str | bool], ...] = ()  # (key, value) pairs: the order stays hashable
    # minimum-quantity order: the venue fills it only in fills of at least min(min_qty, leaves); 0 = any size.
    # Set on an algorithm's children (ChildSpec.min_qty); strategies leave it 0
    min_qty: float = 0.0

    def validate(self) -> str | None:
        """Return a reason string if the order is malformed, else None."""
        if not self.client_order_id:
            return "client_order_id: must be non-empty"
        if not self.symbol:
            return "symbol: must be non-empty"
        if not (self.qty > 0):
            return f"qty: must be > 0, got {self.qty}"
        if self.type is OrderType.LIMIT and not _positive(self.limit_price):
            return "limit_price: a limit order needs a positive limit price"
        if self.type is OrderType.STOP and not _positive(self.stop_price):
            return "stop_price: a stop order needs a positive stop price"
        if self.type is OrderType.MARKET and (self.limit_price is not None or self.stop_price is not None):
            return "limit_price/stop_price: a market order takes neither"
        mq = self.min_qty
        if mq != 0.0:
            if not (mq >= 0 and math.isfinite(mq)):
                return f"min_qty: must be a finite number >= 0, got {mq}"
            if mq > self.qty:
                return f"min_qty: must be <= qty ({self.qty:g}), got {mq:g}"
        return None

    @property
    def signed_qty(self) -> float:
        return self.side.sign * self.qty


def _positive(x: float | None) -> bool:
    return x is not None and x > 0 and x == x  # the last clause rejects NaN


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution against an order. `fee` is in account currency and always >= 0."""

    fill_id: str
    client_order_id: str
    symbol: str
    side: Side
    qty: float
    price: float
    fee: float
    ts_ns: int  # market time
    wall_ns: int = 0  # wall-clock time the venue produced it

    @property
    def signed_qty(self) -> float:
        return self.side.sign * self.qty


class EventKind(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    FILL = "fill"
    CANCELED = "canceled"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """What the venue (or the risk gate) says about an order."""

    kind: EventKind
    client_order_id: str
    ts_ns: int
    fill: Fill | None = None
    reason: RejectReason | None = None
    detail: str = ""


@dataclass(slots=True)
class OrderState:
    """The OMS's view of one order: the order plus its lifecycle."""

    order: Order
    status: OrderStatus = OrderStatus.NEW
    filled_qty: float = 0.0
    avg_fill_price: float = 0.0
    reason: RejectReason | None = None
    detail: str = ""
    fill_ids: list[str] = field(default_factory=list)

    @property
    def leaves_qty(self) -> float:
        return 0.0 if self.status.is_terminal else max(self.order.qty - self.filled_qty, 0.0)

    def copy(self) -> OrderState:
        # the constructor, not dataclasses.replace: a few times cheaper, and reconciliation copies every order
        return OrderState(self.order, self.status, self.filled_qty, self.avg_fill_price, self.reason, self.detail,
                          list(self.fill_ids))
