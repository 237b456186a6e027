"""The ledger interface: the durable book of record (orders, fills, positions, cash, equity, audit log).

Everything a step changes goes in one `LedgerBatch` written in one transaction, so a crash leaves either the
whole step or none of it. Orders are idempotent by client order id and fills by fill id, and positions and
the account are upserts: writing the same batch twice changes no order, fill, position or balance. The
equity curve and the audit log are append-only histories, so a retried write appends their rows again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from tradesys.core.orders import Fill, Order, OrderStatus, RejectReason


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


@dataclass(slots=True)
class LedgerBatch:
    """Everything one step writes. `account` also appends a row to the equity curve."""

    orders: list[Order] = field(default_factory=list)
    order_updates: list[OrderUpdate] = field(default_factory=list)
    fills: list[Fill] = field(default_factory=list)
    positions: list[PositionRow] = field(default_factory=list)
    account: AccountRow | None = None
    audit: list[AuditEntry] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.orders or self.order_updates or self.fills or self.positions or self.account or self.audit
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
    def outbox(self, after_id: int = 0, limit: int = 1000) -> list[dict[str, Any]]: ...
    def outbox_cursor(self, relay: str) -> int: ...
    def advance_outbox_cursor(self, relay: str, last_id: int) -> None: ...
    def prune_outbox(self, upto_id: int) -> int: ...
    def close(self) -> None: ...
