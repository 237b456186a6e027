"""The embedded ledger: one SQLite file in WAL mode, the default for single-machine runs.

Durability: `synchronous=NORMAL` by default, which in WAL mode keeps every committed transaction through a
process crash (what the crash-recovery design needs) but may lose the last transactions on a power cut; add
`?synchronous=full` to the URL for power-loss durability (an fsync per commit, about 3 ms here), or use the
PostgreSQL ledger.

WAL lets the Serve views read on their own connection while the engine writes. Both connections are opened
with `check_same_thread=False` and each is guarded by its own lock. `BEGIN IMMEDIATE` takes the write lock
at the start of a transaction, so two writers queue (up to the busy timeout) instead of deadlocking.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any, ClassVar, Literal

from tradesys.ledger.migrations import Dialect
from tradesys.ledger.sql import SqlLedger

MEMORY = ":memory:"
BUSY_TIMEOUT_S = 30.0


def sqlite_path(url_or_path: str | Path) -> str:
    """`sqlite:///rel.db` -> `rel.db`, `sqlite:////abs.db` -> `/abs.db`, `sqlite:///:memory:`; a bare path as is."""
    if isinstance(url_or_path, Path):
        return str(url_or_path)
    if url_or_path.startswith("sqlite:"):
        url_or_path = url_or_path.split("?", 1)[0]
        if not url_or_path.startswith("sqlite:///"):
            raise ValueError(f"sqlite url {url_or_path!r}: expected sqlite:///relative.db or sqlite:////abs.db")
        path = url_or_path.removeprefix("sqlite:///")
        if not path:
            raise ValueError(f"sqlite url {url_or_path!r}: no database path")
        return path
    if not url_or_path:
        raise ValueError("sqlite ledger: empty path")
    return url_or_path


def _synchronous(url: str) -> str:
    """The `synchronous` pragma from a URL's query (`?synchronous=full`); NORMAL by default."""
    query = url.split("?", 1)[1] if "?" in url else ""
    value = "normal"
    for part in filter(None, query.split("&")):
        key, _, val = part.partition("=")
        if key != "synchronous":
            raise ValueError(f"sqlite url {url!r}: unknown option {key!r} (known: synchronous)")
        value = val.lower()
    if value not in {"normal", "full", "extra"}:
        raise ValueError(f"sqlite url {url!r}: synchronous must be normal, full or extra, got {value!r}")
    return value.upper()


def absolute_sqlite_url(url: str) -> str:
    """Pin a relative `sqlite:///` url to the current directory, for a process whose cwd may differ (a replica)."""
    if not url.startswith("sqlite:"):
        return url
    path = sqlite_path(url)
    query = "?" + url.split("?", 1)[1] if "?" in url else ""
    return url if path == MEMORY else f"sqlite:///{Path(path).resolve()}{query}"


class SqliteLedger(SqlLedger):
    dialect: ClassVar[Dialect] = "sqlite"
    paramstyle: ClassVar[Literal["qmark", "format"]] = "qmark"
    begin_sql: ClassVar[str] = "BEGIN IMMEDIATE"

    def __init__(self, url_or_path: str | Path) -> None:
        self.synchronous = _synchronous(str(url_or_path))
        self.path = sqlite_path(url_or_path)
        query = "" if self.synchronous == "NORMAL" else f"?synchronous={self.synchronous.lower()}"
        super().__init__(f"sqlite:///{self.path}{query}")
        self.memory = self.path == MEMORY
        if not self.memory:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._wconn: sqlite3.Connection | None = self._connect()
        if self.memory:  # a second connection would open a second, empty database
            self._rconn = self._wconn
        else:
            self._wconn.execute("PRAGMA journal_mode=WAL")
            self._rconn = self._connect()
            self._read_lock = threading.RLock()

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: autocommit; the base class issues BEGIN/COMMIT itself, DDL included
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        return conn

    def _write_conn(self) -> sqlite3.Connection:
        if self._wconn is None:
            raise sqlite3.ProgrammingError(f"{self!r} is closed")
        return self._wconn

    def _read_conn(self) -> sqlite3.Connection:
        if self._rconn is None:
            raise sqlite3.ProgrammingError(f"{self!r} is closed")
        return self._rconn

    def _table_exists(self, cur: Any, table: str) -> bool:
        cur.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
        return cur.fetchone() is not None

    def _close_connections(self) -> None:
        for conn in {id(c): c for c in (self._rconn, self._wconn) if c is not None}.values():
            conn.close()
        self._wconn = self._rconn = None
