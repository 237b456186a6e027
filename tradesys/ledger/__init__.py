"""The durable book of record. `open_ledger(url)` picks the adapter from the url's scheme."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tradesys.ledger.base import (
    AccountRow,
    AuditEntry,
    Ledger,
    LedgerBatch,
    OrderUpdate,
    PositionRow,
    WriteResult,
)
from tradesys.ledger.migrations import LATEST_VERSION, MIGRATIONS, Migration
from tradesys.ledger.sql import SqlLedger, UnknownOrderError, redact_url
from tradesys.ledger.sqlite import SqliteLedger

if TYPE_CHECKING:
    from tradesys.ledger.postgres import PostgresLedger

__all__ = [
    "LATEST_VERSION",
    "MIGRATIONS",
    "AccountRow",
    "AuditEntry",
    "Ledger",
    "LedgerBatch",
    "Migration",
    "OrderUpdate",
    "PositionRow",
    "PostgresLedger",
    "SqlLedger",
    "SqliteLedger",
    "UnknownOrderError",
    "WriteResult",
    "open_ledger",
    "redact_url",
]


def open_ledger(url: str) -> Ledger:
    """`sqlite:///rel.db`, `sqlite:////abs.db`, `sqlite:///:memory:`, or a `postgresql://`/`postgres://` DSN.

    Opening does not migrate: call `migrate()` (the writer does; the Serve views do too, so they work on a
    fresh database). psycopg is imported only for PostgreSQL urls.
    """
    if url.startswith("sqlite:"):
        return SqliteLedger(url)
    if url.startswith(("postgresql://", "postgres://")):
        from tradesys.ledger.postgres import PostgresLedger

        return PostgresLedger(url)
    raise ValueError(
        f"unsupported ledger url {redact_url(url)!r}: expected sqlite:///path.db or postgresql://..."
    )


def __getattr__(name: str) -> Any:
    """PostgresLedger on demand, so importing the ledger types does not import psycopg."""
    if name == "PostgresLedger":
        from tradesys.ledger.postgres import PostgresLedger

        return PostgresLedger
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
