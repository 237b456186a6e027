"""The ledger interface: the durable book of record (orders, fills, positions, cash, equity, audit log).

Everything a step changes goes in one `LedgerBatch` written in one transaction, so a crash leaves either the
whole step or none of it. Orders are idempotent by client order id and fills by fill id, and positions and
the account are upserts: writing the same batch twice changes no order, fill, position or balance. The
equity curve and the audit log are append-only histories, so a retried write appends their rows again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from tradesys.core.orders import Fill, Order, OrderStatus, RejectReason, Side


@dataclass(frozen=True, slots=True)
class OrderUpdate:
    client_order_id: str
    status: OrderStatus
    filled_qty: float
    avg_fill_price: float
    ts_ns: int
    reason: RejectReason | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class PositionRow:
    symbol: str
    qty: float
    avg_price: float
    realized_pnl: float
    mark: float


@dataclass(frozen=True, slots=True)
class AccountRow:
    """Account totals at `ts_ns`. Invariant: equity == cash + market_value."""

    ts_ns: int
    cash: float
    market_value: float
    equity: float
    realized_pnl: float
    unrealized_pnl: float
    fees: float
    initial_cash: float


@dataclass(frozen=True, slots=True)
class AuditEntry:
    ts_ns: int
    kind: str  # e.g. "risk_reject", "broker_reject", "restart", "kill_switch", "shutdown"
    message: str
    client_order_id: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ParentRow:
    """A parent order worked by an execution algorithm (tradesys.execution.parents), as the ledger keeps it.

    Written when the strategy's order is accepted (write-ahead, like an order) and upserted by parent id as its
    algorithm slices it, in the same transaction as the children it sent, so a restart resumes its schedule.
    """

    parent_id: str
    symbol: str
    side: Side
    qty: float
    algo: str
    params: dict[str, Any]
    horizon_bars: int
    start_ns: int  # decision time (the bar the strategy decided on)
    end_ns: int  # the window's last slice time; 0 until the first slice fixes the bar spacing
    ts_ns: int  # decision time, as orders.ts_ns
    decision_price: float | None  # the close at decision (TCA's benchmark); None: unknown
    status: str  # active | filled | expired | cancelled
    filled_qty: float = 0.0
    avg_fill_price: float = 0.0
    children: int = 0  # children sent so far (the next is child number children + 1)
    slices: int = 0  # slice points (bars) seen since start_ns
    market_volume: float = 0.0  # market volume seen in those slices
    last_ts_ns: int = 0  # the last slice's bar time: a retried step does not slice that bar again
    limit_price: float | None = None
    strategy_id: str = ""
    updated_ts_ns: int = 0


@dataclass(slots=True)
class LedgerBatch:
    """Everything one step writes. `account` also appends a row to the equity curve."""

    orders: list[Order] = field(default_factory=list)
    order_updates: list[OrderUpdate] = field(default_factory=list)
    fills: list[Fill] = field(default_factory=list)
    positions: list[PositionRow] = field(default_factory=list)
    account: AccountRow | None = None
    audit: list[AuditEntry] = field(default_factory=list)
    parents: list[ParentRow] = field(default_factory=list)  # upserted by parent id

    def __bool__(self) -> bool:
        return bool(
            self.orders or self.order_updates or self.fills or self.positions or self.account or self.audit
            or self.parents
        )


@dataclass(frozen=True, slots=True)
class WriteResult:
    inserted_orders: tuple[str, ...]
    duplicate_orders: tuple[str, ...]
    inserted_fills: tuple[str, ...]
    duplicate_fills: tuple[str, ...]


@runtime_checkable
class Ledger(Protocol):
    """Implemented by SqliteLedger (embedded default) and PostgresLedger (production)."""

    url: str

    def migrate(self) -> int:
        """Apply pending schema migrations; return the schema version now in force."""
        ...

    def schema_version(self) -> int: ...

    def write(self, batch: LedgerBatch) -> WriteResult:
        """Write the whole batch in one transaction (all or nothing)."""
        ...

    # Reads: plain dicts, JSON-ready, for the Serve views, reconciliation and tests.
    def get_order(self, client_order_id: str) -> dict[str, Any] | None: ...
    def orders(self, status: str | None = None, limit: int | None = None) -> list[dict[str, Any]]: ...
    def open_orders(self) -> list[dict[str, Any]]: ...
    def fills(self, client_order_id: str | None = None) -> list[dict[str, Any]]: ...
    def positions(self) -> list[dict[str, Any]]: ...
    def account(self) -> dict[str, Any] | None: ...
    def equity_curve(self) -> list[dict[str, Any]]: ...
    def audit_log(self, kind: str | None = None) -> list[dict[str, Any]]: ...
    def parent_orders(self, status: str | None = None) -> list[dict[str, Any]]: ...
    def outbox(self, after_id: int = 0, limit: int = 1000) -> list[dict[str, Any]]: ...
    def outbox_cursor(self, relay: str) -> int: ...
    def advance_outbox_cursor(self, relay: str, last_id: int) -> None: ...
    def prune_outbox(self, upto_id: int) -> int: ...
    def close(self) -> None: ...
