"""The production ledger on PostgreSQL (psycopg 3).

One autocommit connection, guarded by a lock, carries both reads and the explicit write transactions; a
broken connection (server restart) is replaced on the next call. The DSN may carry a password, so only a
redacted form ever appears in messages.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import psycopg

from tradesys.ledger.migrations import Dialect
from tradesys.ledger.sql import SqlLedger

CONNECT_TIMEOUT_S = 10
# first key of the two-key advisory lock taken by migrate(); the second is a hash of the current schema
MIGRATION_LOCK_KEY = 0x7EADE5


class PostgresLedger(SqlLedger):
    dialect: ClassVar[Dialect] = "postgres"
    paramstyle: ClassVar[Literal["qmark", "format"]] = "format"

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn)
        self._closed = False
        self._conn: psycopg.Connection[Any] | None = self._connect()

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)

    def _write_conn(self) -> psycopg.Connection[Any]:
        if self._closed:
            raise psycopg.InterfaceError(f"{self!r} is closed")
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                self._conn.close()
            self._conn = self._connect()
        return self._conn

    _read_conn = _write_conn

    def _table_exists(self, cur: Any, table: str) -> bool:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
        row = cur.fetchone()
        return bool(row and row[0])

    def _lock_migrations(self, cur: Any) -> None:
        # per schema, so ledgers in different schemas of one database migrate independently
        cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(current_schema()))", (MIGRATION_LOCK_KEY,))

    def _close_connections(self) -> None:
        self._closed = True
        if self._conn is not None:
            self._conn.close()
            self._conn = None
