"""The durable store of API keys and received alerts: one SQL database, SQLite or PostgreSQL, same statements.

Why a database of its own (`serve.keys_url`) and not the ledger: the API also runs without a ledger (analytics
only), and `tradesys keys` must work with no run in sight. The running API re-reads the `api_keys` table every
`serve.keys_refresh_s` seconds, so a key created or revoked by `tradesys keys` takes effect without a restart.

`api_alerts` keeps each Alertmanager notification once: its primary key is (fingerprint, startsAt, status), and
an insert that conflicts does nothing, so Alertmanager's retries and repeat notifications are not recorded twice.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tradesys.serve.keys import KeyRecord, check_role, hash_token, new_salt, new_token

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS api_keys (
        key_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        salt TEXT NOT NULL,
        token_hash TEXT NOT NULL,
        created_ns BIGINT NOT NULL,
        rate_per_s DOUBLE PRECISION,
        burst INTEGER,
        revoked_ns BIGINT
    )""",
    """CREATE TABLE IF NOT EXISTS api_alerts (
        fingerprint TEXT NOT NULL,
        starts_at TEXT NOT NULL,
        status TEXT NOT NULL,
        alertname TEXT NOT NULL,
        ends_at TEXT,
        labels TEXT NOT NULL,
        annotations TEXT NOT NULL,
        receiver TEXT NOT NULL,
        key_id TEXT,
        received_ns BIGINT NOT NULL,
        PRIMARY KEY (fingerprint, starts_at, status)
    )""",
)
_KEY_COLS = ("key_id", "name", "role", "salt", "token_hash", "created_ns", "rate_per_s", "burst", "revoked_ns")
_ALERT_COLS = ("fingerprint", "starts_at", "status", "alertname", "ends_at", "labels", "annotations", "receiver",
               "key_id", "received_ns")
MEMORY_URL = "sqlite:///:memory:"


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def check_keys_url(url: str, field: str = "serve.keys_url") -> str:
    if not (url.startswith("sqlite:///") or is_postgres(url)):
        raise ValueError(f"{field}: must start with sqlite:/// or postgresql://, got a {url.split(':', 1)[0]!r} URL")
    return url


class KeyStore:
    """API keys and alerts in `url` (sqlite:///path or postgresql://...); the tables are created on first use.

    One connection, guarded by a lock (the API calls it from worker threads); a broken PostgreSQL connection is
    replaced on the next call.
    """

    def __init__(self, url: str) -> None:
        self.url = check_keys_url(url)
        self._pg = is_postgres(url)
        self._lock = threading.Lock()
        self._conn: Any = None
        with self._tx():  # connects, and so creates the tables
            pass

    def _connect(self) -> Any:
        if self._pg:
            import psycopg

            return psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        path = self.url.removeprefix("sqlite:///").split("?", 1)[0]
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        if path != ":memory:":
            conn.execute("PRAGMA journal_mode=WAL")
        return conn

    def _create_tables(self, cur: Any) -> None:
        cur.execute("BEGIN")
        if self._pg:  # CREATE TABLE IF NOT EXISTS races between two processes on PostgreSQL: serialise it
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('tradesys.keystore'))")
        for stmt in _SCHEMA:
            cur.execute(stmt)
        cur.execute("COMMIT")

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self._pg else sql

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        """One transaction on the store's connection, under its lock."""
        with self._lock:
            if self._conn is None or (self._pg and (self._conn.closed or self._conn.broken)):
                self._conn = self._connect()
                self._create_tables(self._conn.cursor())  # on every connect: an in-memory store starts empty
            cur = self._conn.cursor()
            cur.execute("BEGIN")
            try:
                yield _Cursor(cur, self._sql)
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    # -- keys --
    def create(self, role: str, name: str = "", rate_per_s: float | None = None,
               burst: int | None = None) -> tuple[KeyRecord, str]:
        """A new key: (its record, the token). The token is returned once and stored only as a salted hash."""
        check_role(role)
        if rate_per_s is not None and not rate_per_s > 0:
            raise ValueError(f"rate_limit: must be > 0 requests/s, got {rate_per_s}")
        if burst is not None and burst < 1:
            raise ValueError(f"burst: must be >= 1, got {burst}")
        key_id, token = new_token()
        salt = new_salt()
        rec = KeyRecord(key_id, name or key_id, role, salt, hash_token(token, salt), time.time_ns(),
                        rate_per_s, burst)
        with self._tx() as cur:
            cur.execute(f"INSERT INTO api_keys ({', '.join(_KEY_COLS)}) VALUES ({', '.join('?' * len(_KEY_COLS))})",
                        tuple(getattr(rec, c) for c in _KEY_COLS))
        return rec, token

    def list_keys(self) -> list[KeyRecord]:
        """Every key, revoked ones included, oldest first."""
        with self._tx() as cur:
            cur.execute(f"SELECT {', '.join(_KEY_COLS)} FROM api_keys ORDER BY created_ns, key_id")
            rows = cur.fetchall()
        return [KeyRecord(*r) for r in rows]

    def revoke(self, key_id: str) -> bool:
        """Revoke `key_id`; False if no active key has that id."""
        with self._tx() as cur:
            n = cur.execute("UPDATE api_keys SET revoked_ns = ? WHERE key_id = ? AND revoked_ns IS NULL",
                            (time.time_ns(), key_id))
        return n == 1

    # -- alerts --
    def record_alert(self, row: dict[str, Any]) -> bool:
        """Insert one alert row (keys: `_ALERT_COLS`); False if (fingerprint, starts_at, status) is already there."""
        values = tuple(json.dumps(row[c], sort_keys=True) if c in ("labels", "annotations") else row[c]
                       for c in _ALERT_COLS)
        with self._tx() as cur:
            n = cur.execute(f"INSERT INTO api_alerts ({', '.join(_ALERT_COLS)}) VALUES "
                            f"({', '.join('?' * len(_ALERT_COLS))}) ON CONFLICT DO NOTHING", values)
        return n == 1

    def forget_alert(self, fingerprint: str, starts_at: str, status: str) -> None:
        """Undo `record_alert` (its ledger copy failed: the sender's retry must record it again)."""
        with self._tx() as cur:
            cur.execute("DELETE FROM api_alerts WHERE fingerprint = ? AND starts_at = ? AND status = ?",
                        (fingerprint, starts_at, status))

    def alerts(self) -> list[dict[str, Any]]:
        """Every recorded alert, in the order received."""
        with self._tx() as cur:
            cur.execute(f"SELECT {', '.join(_ALERT_COLS)} FROM api_alerts ORDER BY received_ns, fingerprint, status")
            rows = cur.fetchall()
        out = [dict(zip(_ALERT_COLS, r, strict=True)) for r in rows]
        for d in out:
            d["labels"], d["annotations"] = json.loads(d["labels"]), json.loads(d["annotations"])
        return out

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __repr__(self) -> str:
        from tradesys.ledger.sql import redact_url

        return f"KeyStore({redact_url(self.url)!r})"


class _Cursor:
    """A DB-API cursor with `?` placeholders on both databases; `execute` returns the row count."""

    def __init__(self, cur: Any, sql: Any) -> None:
        self._cur, self._sql = cur, sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        self._cur.execute(self._sql(sql), tuple(params))
        return int(self._cur.rowcount)

    def fetchall(self) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self._cur.fetchall()]
