"""The SQL and row mapping shared by every SQL ledger; the adapters only supply connections.

All statements are written once, with `?` placeholders, in SQL that SQLite and PostgreSQL both accept; an
adapter with `%s` placeholders gets them rewritten. Values are checked and converted in Python before they
are bound, so both databases store the same types (SQLite would otherwise store a string in a REAL column)
and a bad value fails the batch with the field named, inside the transaction, so nothing is written.
"""

from __future__ import annotations

import abc
import json
import math
import numbers
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from enum import Enum
from typing import Any, ClassVar, Literal, TypeVar

from tradesys.core.orders import Fill, Order, OrderStatus, OrderType, RejectReason, Side, TimeInForce
from tradesys.ledger.base import (
    AccountRow,
    AuditEntry,
    LedgerBatch,
    OrderUpdate,
    ParentRow,
    PositionRow,
    WriteResult,
)
from tradesys.ledger.migrations import MIGRATIONS, SCHEMA_MIGRATIONS_DDL, Dialect, render

OPEN_STATUSES: tuple[str, ...] = (
    OrderStatus.NEW.value,
    OrderStatus.ACCEPTED.value,
    OrderStatus.PARTIALLY_FILLED.value,
)

ORDER_COLUMNS: tuple[str, ...] = (
    "client_order_id", "symbol", "side", "qty", "type", "tif", "limit_price", "stop_price", "strategy_id",
    "ts_ns", "decision_wall_ns", "status", "filled_qty", "avg_fill_price", "reason", "detail", "updated_ts_ns",
    "min_qty",
)  # fmt: skip
FILL_COLUMNS: tuple[str, ...] = (
    "fill_id", "client_order_id", "symbol", "side", "qty", "price", "fee", "ts_ns", "wall_ns",
)  # fmt: skip
POSITION_COLUMNS: tuple[str, ...] = ("symbol", "qty", "avg_price", "realized_pnl", "mark", "updated_ts_ns")
ACCOUNT_COLUMNS: tuple[str, ...] = (
    "ts_ns", "cash", "market_value", "equity", "realized_pnl", "unrealized_pnl", "fees", "initial_cash",
)  # fmt: skip
AUDIT_COLUMNS: tuple[str, ...] = ("id", "ts_ns", "kind", "client_order_id", "message", "payload")
PARENT_COLUMNS: tuple[str, ...] = (
    "parent_id", "symbol", "side", "qty", "algo", "params", "horizon_bars", "start_ns", "end_ns", "ts_ns",
    "decision_price", "status", "filled_qty", "avg_fill_price", "children", "slices", "market_volume", "last_ts_ns",
    "limit_price", "strategy_id", "updated_ts_ns",
)  # fmt: skip
# what a parent's progress changes; the rest (what the strategy asked for) is written once
PARENT_MUTABLE: tuple[str, ...] = (
    "start_ns", "end_ns", "status", "filled_qty", "avg_fill_price", "children", "slices", "market_volume", "last_ts_ns",
    "updated_ts_ns",
)  # fmt: skip
PARENT_STATUSES: tuple[str, ...] = ("active", "filled", "expired", "cancelled")


def _cols(cols: Sequence[str]) -> str:
    return ", ".join(cols)


def _marks(n: int) -> str:
    return ", ".join("?" * n)


_INSERT_ORDER = (
    f"INSERT INTO orders ({_cols(ORDER_COLUMNS)}) VALUES ({_marks(len(ORDER_COLUMNS))}) "
    "ON CONFLICT (client_order_id) DO NOTHING"
)
_UPDATE_ORDER = (
    "UPDATE orders SET status = ?, filled_qty = ?, avg_fill_price = ?, reason = ?, detail = ?, updated_ts_ns = ? "
    "WHERE client_order_id = ?"
)
_INSERT_FILL = (
    f"INSERT INTO fills ({_cols(FILL_COLUMNS)}) VALUES ({_marks(len(FILL_COLUMNS))}) "
    "ON CONFLICT (fill_id) DO NOTHING"
)
_UPSERT_POSITION = (
    f"INSERT INTO positions ({_cols(POSITION_COLUMNS)}) VALUES ({_marks(len(POSITION_COLUMNS))}) "
    "ON CONFLICT (symbol) DO UPDATE SET qty = excluded.qty, avg_price = excluded.avg_price, "
    "realized_pnl = excluded.realized_pnl, mark = excluded.mark, updated_ts_ns = excluded.updated_ts_ns"
)
_UPSERT_ACCOUNT = (
    f"INSERT INTO account (id, {_cols(ACCOUNT_COLUMNS)}) VALUES (1, {_marks(len(ACCOUNT_COLUMNS))}) "
    "ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in ACCOUNT_COLUMNS)
)
_UPSERT_PARENT = (
    f"INSERT INTO parent_orders ({_cols(PARENT_COLUMNS)}) VALUES ({_marks(len(PARENT_COLUMNS))}) "
    "ON CONFLICT (parent_id) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in PARENT_MUTABLE)
)
_INSERT_EQUITY = f"INSERT INTO equity_curve ({_cols(ACCOUNT_COLUMNS)}) VALUES ({_marks(len(ACCOUNT_COLUMNS))})"
_INSERT_AUDIT = "INSERT INTO audit_log (ts_ns, kind, client_order_id, message, payload) VALUES (?, ?, ?, ?, ?)"
_INSERT_OUTBOX = "INSERT INTO outbox (ts_ns, entity, entity_key, event, payload) VALUES (?, ?, ?, ?, ?)"
OUTBOX_COLUMNS: tuple[str, ...] = ("id", "ts_ns", "entity", "entity_key", "event", "payload")
# json.dumps(obj, allow_nan=False) builds this encoder on every call; one instance writes the same text
_ENCODE = json.JSONEncoder(allow_nan=False).encode


def _position_payload(r: tuple[Any, ...]) -> str:
    """A position row as the JSON `json.dumps(dict(zip(POSITION_COLUMNS, r)), allow_nan=False)` writes, built
    directly (every step writes one per held symbol): `position_params` has made the four values finite floats
    (json writes a float as its repr) and the time an int."""
    sym, qty, avg, realized, mark, ts = r
    if type(sym) is not str or type(ts) is not int:
        return _ENCODE(dict(zip(POSITION_COLUMNS, r, strict=True)))
    return (
        f'{{"symbol": {_QUOTE(sym)}, "qty": {_FLOAT(qty)}, "avg_price": {_FLOAT(avg)}, '
        f'"realized_pnl": {_FLOAT(realized)}, "mark": {_FLOAT(mark)}, "updated_ts_ns": {_INT(ts)}}}'
    )


_QUOTE = json.encoder.encode_basestring_ascii  # what json.dumps (ensure_ascii) writes for a str
_FLOAT = float.__repr__
_INT = int.__repr__
UPDATE_COLUMNS: tuple[str, ...] = (
    "status", "filled_qty", "avg_fill_price", "reason", "detail", "updated_ts_ns", "client_order_id",
)  # fmt: skip


def outbox_rows(
    new_orders: Sequence[tuple[Any, ...]],
    updates: Sequence[tuple[Any, ...]],
    new_fills: Sequence[tuple[Any, ...]],
    positions: Sequence[tuple[Any, ...]],
    account: tuple[Any, ...] | None,
    parents: Sequence[tuple[Any, ...]] = (),
) -> list[tuple[Any, ...]]:
    """One change event per row written, in the order the transaction applies them (the relay keeps it).

    entity/entity_key say what changed (order by client order id, fill by fill id, position by symbol, the
    account); event is created/updated/upserted; payload is the written row as JSON.
    """
    rows: list[tuple[Any, ...]] = []
    encode = _ENCODE

    def add(ts: int, entity: str, key: str, event: str, cols: Sequence[str], values: Sequence[Any]) -> None:
        rows.append((int(ts), entity, key, event, encode(dict(zip(cols, values, strict=True)))))

    for r in new_orders:
        add(r[ORDER_COLUMNS.index("ts_ns")], "order", r[0], "created", ORDER_COLUMNS[: len(r)], r)
    for r in updates:
        add(r[5], "order", r[-1], "updated", UPDATE_COLUMNS, r)
    for r in new_fills:
        add(r[FILL_COLUMNS.index("ts_ns")], "fill", r[0], "created", FILL_COLUMNS, r)
    for r in positions:
        rows.append((int(r[-1]), "position", r[0], "upserted", _position_payload(r)))
    if account is not None:
        add(account[0], "account", "account", "upserted", ACCOUNT_COLUMNS, account)
    for r in parents:
        add(r[-1], "parent_order", r[0], "upserted", PARENT_COLUMNS, r)
    return rows

_SELECT_ORDERS = f"SELECT {_cols(ORDER_COLUMNS)} FROM orders"
# a ledger written before migration 5 (orders.min_qty) is read as it is: its orders had no minimum quantity
_SELECT_ORDERS_V4 = f"SELECT {_cols(ORDER_COLUMNS[:-1])}, 0.0 AS min_qty FROM orders"
assert ORDER_COLUMNS[-1] == "min_qty"
_NEWEST_FIRST = " ORDER BY ts_ns DESC, client_order_id DESC"
_SELECT_FILLS = f"SELECT {_cols(FILL_COLUMNS)} FROM fills"
_FILL_ORDER = " ORDER BY ts_ns, wall_ns, fill_id"


# --- value checks: the same types reach both databases -------------------------------------------------------


def _real(field: str, v: Any) -> float:
    t = type(v)
    if t is float or t is int:  # the common case, without the abstract-base-class checks below
        if t is float and not math.isfinite(v):
            raise ValueError(f"{field}: must be finite, got {v!r}")
        return float(v)
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{field}: expected a number, got {type(v).__name__} {v!r}")
    x = float(v)
    if not math.isfinite(x):
        raise ValueError(f"{field}: must be finite, got {x!r}")
    return x


def _opt_real(field: str, v: Any) -> float | None:
    return None if v is None else _real(field, v)


def _int(field: str, v: Any) -> int:
    if type(v) is int:
        return v
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{field}: expected an integer, got {type(v).__name__} {v!r}")
    return int(v)


def _text(field: str, v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError(f"{field}: expected a string, got {type(v).__name__} {v!r}")
    return v.value if isinstance(v, Enum) else str(v)


def _opt_text(field: str, v: Any) -> str | None:
    return None if v is None else _text(field, v)


E = TypeVar("E", bound=Enum)


def _enum(field: str, cls: type[E], v: Any) -> str:
    if type(v) is cls:
        return str(v.value)
    try:
        return str(cls(v).value)
    except ValueError:
        raise ValueError(f"{field}: {v!r} is not one of {[m.value for m in cls]}") from None


def _json_default(o: Any) -> Any:
    if isinstance(o, Enum):
        return o.value
    if isinstance(o, numbers.Integral):
        return int(o)
    if isinstance(o, numbers.Real):
        return float(o)
    raise TypeError(f"audit payload: {type(o).__name__} is not JSON serialisable")


def dump_payload(payload: Mapping[str, Any]) -> str:
    """Audit payloads are stored as JSON text; NaN/inf are refused because they are not JSON."""
    if not isinstance(payload, Mapping):
        raise TypeError(f"audit payload: expected a mapping, got {type(payload).__name__}")
    return json.dumps(payload, sort_keys=True, allow_nan=False, default=_json_default)


def order_params(o: Order) -> tuple[Any, ...]:
    ts = _int("order.ts_ns", o.ts_ns)
    return (
        _text("order.client_order_id", o.client_order_id),
        _text("order.symbol", o.symbol),
        _enum("order.side", Side, o.side),
        _real("order.qty", o.qty),
        _enum("order.type", OrderType, o.type),
        _enum("order.tif", TimeInForce, o.tif),
        _opt_real("order.limit_price", o.limit_price),
        _opt_real("order.stop_price", o.stop_price),
        _text("order.strategy_id", o.strategy_id),
        ts,
        _int("order.decision_wall_ns", o.decision_wall_ns),
        OrderStatus.NEW.value,
        0.0,
        0.0,
        None,
        "",
        ts,
        _real("order.min_qty", o.min_qty),
    )


def update_params(u: OrderUpdate) -> tuple[Any, ...]:
    return (
        _enum("order_update.status", OrderStatus, u.status),
        _real("order_update.filled_qty", u.filled_qty),
        _real("order_update.avg_fill_price", u.avg_fill_price),
        None if u.reason is None else _enum("order_update.reason", RejectReason, u.reason),
        _text("order_update.detail", u.detail),
        _int("order_update.ts_ns", u.ts_ns),
        _text("order_update.client_order_id", u.client_order_id),
    )


def fill_params(f: Fill) -> tuple[Any, ...]:
    return (
        _text("fill.fill_id", f.fill_id),
        _text("fill.client_order_id", f.client_order_id),
        _text("fill.symbol", f.symbol),
        _enum("fill.side", Side, f.side),
        _real("fill.qty", f.qty),
        _real("fill.price", f.price),
        _real("fill.fee", f.fee),
        _int("fill.ts_ns", f.ts_ns),
        _int("fill.wall_ns", f.wall_ns),
    )


def position_params(p: PositionRow, ts_ns: int) -> tuple[Any, ...]:
    q, a, r, m = p.qty, p.avg_price, p.realized_pnl, p.mark
    # the common case, checked at once (every step writes a row per held symbol): four finite floats and a str;
    # anything else (an int, a non-finite value, an overflowing sum) takes the field-by-field path below
    floats = type(q) is float and type(a) is float and type(r) is float and type(m) is float
    if floats and type(p.symbol) is str and math.isfinite(q + a + r + m):
        return (p.symbol, q, a, r, m, ts_ns)
    return (
        _text("position.symbol", p.symbol),
        _real("position.qty", p.qty),
        _real("position.avg_price", p.avg_price),
        _real("position.realized_pnl", p.realized_pnl),
        _real("position.mark", p.mark),
        ts_ns,
    )


def account_params(a: AccountRow) -> tuple[Any, ...]:
    return (
        _int("account.ts_ns", a.ts_ns),
        *(_real(f"account.{c}", getattr(a, c)) for c in ACCOUNT_COLUMNS[1:]),
    )


def audit_params(e: AuditEntry) -> tuple[Any, ...]:
    return (
        _int("audit.ts_ns", e.ts_ns),
        _text("audit.kind", e.kind),
        _opt_text("audit.client_order_id", e.client_order_id),
        _text("audit.message", e.message),
        dump_payload(e.payload),
    )


def _parent_params_json(params: Mapping[str, Any]) -> str:
    try:
        return dump_payload(params)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"parent.params: {exc}") from None


def parent_params(p: ParentRow) -> tuple[Any, ...]:
    status = _text("parent.status", p.status)
    if status not in PARENT_STATUSES:
        raise ValueError(f"parent.status: {status!r} is not one of {list(PARENT_STATUSES)}")
    return (
        _text("parent.parent_id", p.parent_id),
        _text("parent.symbol", p.symbol),
        _enum("parent.side", Side, p.side),
        _real("parent.qty", p.qty),
        _text("parent.algo", p.algo),
        _parent_params_json(p.params),
        _int("parent.horizon_bars", p.horizon_bars),
        _int("parent.start_ns", p.start_ns),
        _int("parent.end_ns", p.end_ns),
        _int("parent.ts_ns", p.ts_ns),
        None if p.decision_price is None or p.decision_price != p.decision_price
        else _real("parent.decision_price", p.decision_price),
        status,
        _real("parent.filled_qty", p.filled_qty),
        _real("parent.avg_fill_price", p.avg_fill_price),
        _int("parent.children", p.children),
        _int("parent.slices", p.slices),
        _real("parent.market_volume", p.market_volume),
        _int("parent.last_ts_ns", p.last_ts_ns),
        _opt_real("parent.limit_price", p.limit_price),
        _text("parent.strategy_id", p.strategy_id),
        _int("parent.updated_ts_ns", p.updated_ts_ns),
    )


def batch_ts(batch: LedgerBatch) -> int:
    """The time a batch is 'as of' (positions carry no timestamp of their own): the account's, else the latest."""
    if batch.account is not None:
        return _int("account.ts_ns", batch.account.ts_ns)
    stamps = [
        *(o.ts_ns for o in batch.orders),
        *(u.ts_ns for u in batch.order_updates),
        *(f.ts_ns for f in batch.fills),
        *(e.ts_ns for e in batch.audit),
    ]
    return max((_int("ts_ns", t) for t in stamps), default=0)


# --- the base class -------------------------------------------------------------------------------------------


class UnknownOrderError(LookupError):
    """An order update names an order the ledger does not hold: write-ahead was skipped somewhere."""


class SqlLedger(abc.ABC):
    """The `Ledger` protocol over a DB-API connection in autocommit mode, with explicit transactions.

    Subclasses set `dialect` and `paramstyle` and implement `_write_conn`, `_read_conn`, `_table_exists`,
    `_close_connections`, and optionally `_lock_migrations`. One lock per connection serialises the threads
    that share it (the Serve app reads from worker threads).
    """

    dialect: ClassVar[Dialect]
    paramstyle: ClassVar[Literal["qmark", "format"]]
    begin_sql: ClassVar[str] = "BEGIN"

    url: str

    def __init__(self, url: str) -> None:
        self.url = url
        self._write_lock = threading.RLock()
        self._read_lock = self._write_lock  # an adapter with a separate read connection gives it its own lock
        self._sql_cache: dict[str, str] = {}
        self._orders_select: str | None = None  # by schema version: readers (reports, TCA) do not migrate

    # -- adapter hooks --
    @abc.abstractmethod
    def _write_conn(self) -> Any:
        """Adapter hook."""

    @abc.abstractmethod
    def _read_conn(self) -> Any:
        """Adapter hook."""

    @abc.abstractmethod
    def _table_exists(self, cur: Any, table: str) -> bool:
        """Adapter hook."""

    def _lock_migrations(self, cur: Any) -> None:
        """Serialise concurrent `migrate()` calls (inside the migration transaction). Default: nothing."""
        return None

    @abc.abstractmethod
    def _close_connections(self) -> None:
        """Adapter hook."""

    # -- plumbing --
    def _sql(self, sql: str) -> str:
        if self.paramstyle == "qmark":
            return sql
        out = self._sql_cache.get(sql)
        if out is None:
            out = self._sql_cache[sql] = sql.replace("?", "%s")
        return out

    def _exec(self, cur: Any, sql: str, params: Sequence[Any] = ()) -> int:
        cur.execute(self._sql(sql), tuple(params))
        return int(cur.rowcount)

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        """One write transaction: commit on success, roll back on any exception (and re-raise it)."""
        with self._write_lock:
            conn = self._write_conn()
            cur = conn.cursor()
            try:
                cur.execute(self.begin_sql)
                yield cur
                cur.execute("COMMIT")
            except BaseException:
                with suppress(Exception):  # a dead connection: the server rolls back on its own
                    cur.execute("ROLLBACK")
                raise
            finally:
                cur.close()

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._read_lock:
            cur = self._read_conn().cursor()
            try:
                cur.execute(self._sql(sql), tuple(params))
                names = [d[0] for d in cur.description]
                return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
            finally:
                cur.close()

    # -- schema --
    def schema_version(self) -> int:
        with self._read_lock:
            cur = self._read_conn().cursor()
            try:
                if not self._table_exists(cur, "schema_migrations"):
                    return 0
                cur.execute("SELECT MAX(version) FROM schema_migrations")
                row = cur.fetchone()
                return int(row[0]) if row and row[0] is not None else 0
            finally:
                cur.close()

    def _applied_versions(self, cur: Any) -> set[int]:
        if not self._table_exists(cur, "schema_migrations"):
            return set()
        cur.execute("SELECT version FROM schema_migrations")
        return {int(r[0]) for r in cur.fetchall()}

    def _select_orders(self) -> str:
        """The orders SELECT for this ledger's schema (a report may read a ledger older than the code)."""
        if self._orders_select is None:
            self._orders_select = _SELECT_ORDERS if self.schema_version() >= 5 else _SELECT_ORDERS_V4
        return self._orders_select

    def migrate(self) -> int:
        """Apply the missing migrations in one transaction; a no-op (and no DDL) when the schema is current."""
        self._orders_select = None
        wanted = {m.version for m in MIGRATIONS}
        with self._read_lock:
            cur = self._read_conn().cursor()
            try:
                applied = self._applied_versions(cur)
            finally:
                cur.close()
        if wanted <= applied:
            return max(applied)
        with self._transaction() as cur:
            self._lock_migrations(cur)
            cur.execute(SCHEMA_MIGRATIONS_DDL)
            applied = self._applied_versions(cur)  # re-read under the lock: another process may have migrated
            for m in MIGRATIONS:
                if m.version in applied:
                    continue
                for stmt in m.statements:
                    cur.execute(render(stmt, self.dialect))
                self._exec(
                    cur,
                    "INSERT INTO schema_migrations (version, description, applied_wall_ns) VALUES (?, ?, ?)",
                    (m.version, m.description, time.time_ns()),
                )
                applied.add(m.version)
        return max(applied)

    # -- the write path --
    def _executemany(self, cur: Any, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        if not rows:
            return 0
        cur.executemany(self._sql(sql), rows)
        return int(cur.rowcount)

    def _existing(self, cur: Any, table: str, key: str, ids: Sequence[str]) -> set[str]:
        """Which of `ids` the table already holds (chunked under SQLite's bound-parameter limit)."""
        found: set[str] = set()
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            cur.execute(self._sql(f"SELECT {key} FROM {table} WHERE {key} IN ({_marks(len(chunk))})"), tuple(chunk))
            found.update(r[0] for r in cur.fetchall())
        return found

    def _split_new(self, cur: Any, table: str, key: str, rows: list[tuple[Any, ...]]) -> tuple[list, list[str]]:
        """(rows to insert, ids that are duplicates: already stored or repeated within the batch)."""
        existing = self._existing(cur, table, key, [r[0] for r in rows]) if rows else set()
        new, dup = [], []
        for r in rows:
            if r[0] in existing:
                dup.append(r[0])
            else:
                existing.add(r[0])
                new.append(r)
        return new, dup

    def write(self, batch: LedgerBatch) -> WriteResult:
        """Orders, updates, fills, positions, account (+ equity curve), audit: one transaction, all or nothing.

        Rows go in with one `executemany` per table; duplicates (by client order id, by fill id) are found with
        one indexed lookup first, so they are reported exactly and the inserts keep `ON CONFLICT DO NOTHING`
        as a guard against a concurrent writer.
        """
        order_rows = [order_params(o) for o in batch.orders]
        update_rows = [update_params(u) for u in batch.order_updates]
        fill_rows = [fill_params(f) for f in batch.fills]
        ts = batch_ts(batch) if batch.positions else 0
        position_rows = [position_params(p, ts) for p in batch.positions]
        audit_rows = [audit_params(e) for e in batch.audit]
        parent_rows = [parent_params(p) for p in batch.parents]
        with self._transaction() as cur:
            new_o, dup_o = self._split_new(cur, "orders", "client_order_id", order_rows)
            self._executemany(cur, _INSERT_ORDER, new_o)
            if self._executemany(cur, _UPDATE_ORDER, update_rows) != len(update_rows):
                known = self._existing(cur, "orders", "client_order_id", [r[-1] for r in update_rows])
                missing = next(r[-1] for r in update_rows if r[-1] not in known)
                raise UnknownOrderError(f"order update for unknown client_order_id {missing!r}")
            new_f, dup_f = self._split_new(cur, "fills", "fill_id", fill_rows)
            self._executemany(cur, _INSERT_FILL, new_f)
            self._executemany(cur, _UPSERT_POSITION, position_rows)
            account = None
            if batch.account is not None:
                account = account_params(batch.account)
                self._exec(cur, _UPSERT_ACCOUNT, account)
                self._exec(cur, _INSERT_EQUITY, account)
            self._executemany(cur, _INSERT_AUDIT, audit_rows)
            self._executemany(cur, _UPSERT_PARENT, parent_rows)
            # change data capture: the events commit (or roll back) with the rows they describe
            self._executemany(
                cur, _INSERT_OUTBOX, outbox_rows(new_o, update_rows, new_f, position_rows, account, parent_rows)
            )
        return WriteResult(
            tuple(r[0] for r in new_o), tuple(dup_o), tuple(r[0] for r in new_f), tuple(dup_f)
        )

    # -- reads: JSON-ready dicts --
    def get_order(self, client_order_id: str) -> dict[str, Any] | None:
        rows = self._query(self._select_orders() + " WHERE client_order_id = ?", (client_order_id,))
        return rows[0] if rows else None

    def orders(self, status: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Newest first (ts_ns, then client order id, descending); optionally one status and at most `limit`."""
        sql, params = self._select_orders(), []
        if status is not None:
            sql += " WHERE status = ?"
            params.append(_enum("status", OrderStatus, status))
        sql += _NEWEST_FIRST
        if limit is not None:
            n = _int("limit", limit)
            if n < 0:
                raise ValueError(f"limit: must be >= 0, got {n}")
            sql += " LIMIT ?"
            params.append(n)
        return self._query(sql, params)

    def open_orders(self) -> list[dict[str, Any]]:
        sql = f"{self._select_orders()} WHERE status IN ({_marks(len(OPEN_STATUSES))}){_NEWEST_FIRST}"
        return self._query(sql, OPEN_STATUSES)

    def fills(self, client_order_id: str | None = None) -> list[dict[str, Any]]:
        """Oldest first: ts_ns, then the venue's wall clock, then fill id."""
        if client_order_id is None:
            return self._query(_SELECT_FILLS + _FILL_ORDER)
        return self._query(_SELECT_FILLS + " WHERE client_order_id = ?" + _FILL_ORDER, (client_order_id,))

    def positions(self) -> list[dict[str, Any]]:
        """Open positions only; a flat position keeps its row (and realised P&L) but is not listed."""
        return self._query(f"SELECT {_cols(POSITION_COLUMNS)} FROM positions WHERE qty <> 0 ORDER BY symbol")

    def account(self) -> dict[str, Any] | None:
        rows = self._query(f"SELECT {_cols(ACCOUNT_COLUMNS)} FROM account WHERE id = 1")
        return rows[0] if rows else None

    def equity_curve(self) -> list[dict[str, Any]]:
        return self._query(f"SELECT {_cols(ACCOUNT_COLUMNS)} FROM equity_curve ORDER BY ts_ns, id")

    def audit_log(self, kind: str | None = None) -> list[dict[str, Any]]:
        sql, params = f"SELECT {_cols(AUDIT_COLUMNS)} FROM audit_log", []
        if kind is not None:
            sql += " WHERE kind = ?"
            params.append(kind)
        rows = self._query(sql + " ORDER BY ts_ns, id", params)
        for r in rows:
            r["payload"] = json.loads(r["payload"]) if r["payload"] else {}
        return rows

    def parent_orders(self, status: str | None = None) -> list[dict[str, Any]]:
        """Parent orders, oldest decision first (then parent id); `params` decoded from its JSON text."""
        sql, params = f"SELECT {_cols(PARENT_COLUMNS)} FROM parent_orders", []
        if status is not None:
            sql += " WHERE status = ?"
            params.append(status)
        rows = self._query(sql + " ORDER BY ts_ns, parent_id", params)
        for r in rows:
            r["params"] = json.loads(r["params"]) if r["params"] else {}
        return rows

    # -- change data capture --
    def outbox(self, after_id: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """Outbox events with id > after_id, oldest first (payload decoded). Ids follow commit order: the ledger
        has one writer (the LedgerActor), so a later id is never committed before an earlier one."""
        rows = self._query(
            f"SELECT {_cols(OUTBOX_COLUMNS)} FROM outbox WHERE id > ? ORDER BY id LIMIT ?", (int(after_id), int(limit))
        )
        for r in rows:
            r["payload"] = json.loads(r["payload"])
        return rows

    def outbox_cursor(self, relay: str) -> int:
        """The last outbox id `relay` has published and acknowledged (0: none)."""
        rows = self._query("SELECT last_id FROM outbox_cursor WHERE relay = ?", (relay,))
        return int(rows[0]["last_id"]) if rows else 0

    def advance_outbox_cursor(self, relay: str, last_id: int) -> None:
        """Record that `relay` has published everything up to `last_id`; never moves a cursor backwards."""
        with self._transaction() as cur:
            self._exec(
                cur,
                "INSERT INTO outbox_cursor (relay, last_id) VALUES (?, ?) ON CONFLICT (relay) DO UPDATE SET "
                "last_id = CASE WHEN excluded.last_id > outbox_cursor.last_id THEN excluded.last_id "
                "ELSE outbox_cursor.last_id END",
                (relay, int(last_id)),
            )

    def prune_outbox(self, upto_id: int) -> int:
        """Delete published events up to `upto_id` (call with the smallest cursor of all relays)."""
        with self._transaction() as cur:
            return self._exec(cur, "DELETE FROM outbox WHERE id <= ?", (int(upto_id),))

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            self._close_connections()

    def __enter__(self) -> SqlLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({redact_url(self.url)!r})"


def redact_url(url: str) -> str:
    """The url with any password replaced by ***, for messages and logs."""
    url = re.sub(r"(password=)[^&\s]*", r"\1***", url)
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    userinfo, at, host = netloc.rpartition("@")
    if at and ":" in userinfo:
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}"
    return f"{scheme}://{netloc}{slash}{tail}"
