"""Ledger dumps that stay consistent while the LedgerActor writes, and their restores.

* SQLite: the online backup API (`sqlite3.Connection.backup`, all pages in one step), which copies one committed
  state under a read transaction; WAL mode lets the writer go on meanwhile. The copy is switched to rollback
  journal mode so it is one self-contained file.
* PostgreSQL: `pg_dump --format=custom` of the ledger's tables when `pg_dump` is on PATH, restored with
  `pg_restore --single-transaction`; otherwise (or with `method="copy"`) a `COPY ... TO STDOUT` of every table
  inside one REPEATABLE READ READ ONLY transaction, restored by creating the schema from the migrations and
  `COPY ... FROM STDIN` in one transaction. Either way the row counts in the manifest are read in the very
  snapshot that was dumped (pg_dump is handed our exported snapshot), so a restore can check them.

The DSN may carry a password: pg_dump/pg_restore get the connection through libpq's PG* environment variables,
never on their command line, and only redacted URLs reach messages or the manifest.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path
from typing import Any, Literal

from tradesys.backup.manifest import BackupError, ledger_tables
from tradesys.config import redact_url
from tradesys.ledger.migrations import LATEST_VERSION, MIGRATIONS, SCHEMA_MIGRATIONS_DDL, render

PgMethod = Literal["auto", "pg_dump", "copy"]
SQLITE_FILE = "ledger.db"
PGDUMP_FILE = "ledger.pgdump"
BUSY_TIMEOUT_S = 30.0
PG_TOOL_TIMEOUT_S = 600.0
_LIBPQ_ENV = {
    "host": "PGHOST", "hostaddr": "PGHOSTADDR", "port": "PGPORT", "user": "PGUSER", "password": "PGPASSWORD",
    "dbname": "PGDATABASE", "options": "PGOPTIONS", "sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY", "connect_timeout": "PGCONNECT_TIMEOUT",
    "application_name": "PGAPPNAME", "passfile": "PGPASSFILE", "service": "PGSERVICE",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
}


# --- SQLite --------------------------------------------------------------------------------------------------------


def sqlite_stats(conn: sqlite3.Connection) -> dict[str, Any]:
    """Schema version, row count per ledger table and the last booked timestamp of a SQLite ledger."""
    have = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    rows = {t: int(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in ledger_tables() if t in have}
    version = int(conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] or 0) \
        if "schema_migrations" in have else 0
    last = conn.execute("SELECT ts_ns FROM account WHERE id = 1").fetchone() if "account" in have else None
    return {"schema_version": version, "rows": rows, "last_ts_ns": int(last[0]) if last else None}


def backup_sqlite(src: Path, dest_dir: Path) -> tuple[Path, dict[str, Any]]:
    """Copy one committed state of the SQLite file at `src` into `dest_dir/ledger.db`; return it and its stats."""
    if not src.is_file():
        raise BackupError(f"ledger.url: no SQLite ledger at {src}")
    out = dest_dir / SQLITE_FILE
    dest_dir.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(str(src), timeout=BUSY_TIMEOUT_S)) as s, closing(sqlite3.connect(str(out))) as d:
        s.backup(d)  # pages=-1: the whole database in one step, one read transaction, one consistent state
        d.execute("PRAGMA journal_mode=DELETE")
        check = d.execute("PRAGMA integrity_check").fetchone()[0]
        if check != "ok":
            raise BackupError(f"ledger.url: the copy of {src} fails SQLite's integrity check: {check}")
        stats = sqlite_stats(d)
    return out, stats


def sqlite_has_state(path: Path) -> bool:
    return path.exists() or Path(f"{path}-wal").exists()


def restore_sqlite(backup_file: Path, target: Path) -> dict[str, Any]:
    """Put the backed-up file at `target` atomically; a stale WAL beside it is removed first (SQLite would
    otherwise replay the old run's pages over the restored file)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.restore-{os.getpid()}"
    shutil.copyfile(backup_file, tmp)
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    for side in (Path(f"{target}-wal"), Path(f"{target}-shm"), Path(f"{target}-journal")):
        side.unlink(missing_ok=True)
    os.replace(tmp, target)
    with closing(sqlite3.connect(str(target))) as conn:
        return sqlite_stats(conn)


# --- PostgreSQL ----------------------------------------------------------------------------------------------------


def pg_env(dsn: str, field: str) -> dict[str, str]:
    """The DSN as libpq environment variables for pg_dump/pg_restore (so no password is on a command line)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(dsn)
    except Exception as exc:
        raise BackupError(f"{field}: {redact_url(dsn)!r} is not a PostgreSQL URL: {redact_url(str(exc))}") from None
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    for key, value in parts.items():
        if key not in _LIBPQ_ENV:
            raise BackupError(f"{field}: connection option {key!r} is not passed to pg_dump (known: "
                              f"{', '.join(sorted(_LIBPQ_ENV))})")
        env[_LIBPQ_ENV[key]] = str(value)
    for key in ("PGPASSWORD", "PGPASSFILE", "PGSSLMODE"):  # the caller's own libpq settings still apply
        if key in os.environ and key not in env:
            env[key] = os.environ[key]
    return env


def _connect(dsn: str, field: str) -> Any:
    import psycopg

    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        msg = " ".join(redact_url(str(exc)).split())
        raise BackupError(f"{field}: cannot connect to {redact_url(dsn)}: {msg}") from None


def _tables_in(cur: Any, schema: str) -> set[str]:
    cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))
    return {r[0] for r in cur.fetchall()}


def _pg_stats(cur: Any, schema: str) -> dict[str, Any]:
    have = _tables_in(cur, schema)
    rows = {}
    for t in ledger_tables():
        if t in have:
            cur.execute(f'SELECT COUNT(*) FROM "{schema}"."{t}"')
            rows[t] = int(cur.fetchone()[0])
    version = 0
    if "schema_migrations" in have:
        cur.execute(f'SELECT MAX(version) FROM "{schema}".schema_migrations')
        version = int(cur.fetchone()[0] or 0)
    last = None
    if "account" in have:
        cur.execute(f'SELECT ts_ns FROM "{schema}".account WHERE id = 1')
        r = cur.fetchone()
        last = int(r[0]) if r else None
    return {"schema_version": version, "rows": rows, "last_ts_ns": last}


def _tool(name: str) -> str | None:
    return shutil.which(name)


def tool_version(name: str) -> str | None:
    exe = _tool(name)
    if exe is None:
        return None
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30, check=False)
    return out.stdout.strip() or None


def choose_method(method: PgMethod, field: str = "--pg-method") -> Literal["pg_dump", "copy"]:
    """`auto`: pg_dump when it is installed, else the COPY dump; `pg_dump` insists on it."""
    if method == "copy":
        return "copy"
    if _tool("pg_dump") is not None:
        return "pg_dump"
    if method == "pg_dump":
        raise BackupError(f"{field}: pg_dump is not on PATH (install postgresql-client, or use --pg-method copy)")
    return "copy"


def backup_postgres(dsn: str, dest_dir: Path, method: PgMethod = "auto") -> tuple[list[Path], dict[str, Any]]:
    """Dump the ledger's tables of the DSN's current schema; return the files and the stats of that snapshot."""
    chosen = choose_method(method)
    dest_dir.mkdir(parents=True, exist_ok=True)
    conn = _connect(dsn, "ledger.url")
    try:
        cur = conn.cursor()
        cur.execute("SELECT current_schema()")
        schema = cur.fetchone()[0]
        if schema is None:
            raise BackupError(f"ledger.url: {redact_url(dsn)} has no current schema (its search_path names none "
                              "that exists)")
        present = [t for t in ledger_tables() if t in _tables_in(cur, schema)]
        if "schema_migrations" not in present:
            raise BackupError(f"ledger.url: schema {schema!r} of {redact_url(dsn)} holds no tradesys ledger")
        cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            cur.execute("SELECT pg_export_snapshot()")
            snapshot = cur.fetchone()[0]
            stats = _pg_stats(cur, schema)
            if chosen == "pg_dump":
                files = [_pg_dump(dsn, dest_dir, schema, present, snapshot)]
            else:
                files = [_copy_out(cur, dest_dir, schema, t) for t in present]
        finally:
            cur.execute("ROLLBACK")
    finally:
        conn.close()
    stats.update(method=chosen, schema=schema, tables=present)
    return files, stats


def _pg_dump(dsn: str, dest_dir: Path, schema: str, tables: list[str], snapshot: str) -> Path:
    out = dest_dir / PGDUMP_FILE
    env = pg_env(dsn, "ledger.url")
    args = [_tool("pg_dump") or "pg_dump", "--format=custom", "--no-owner", "--no-privileges",
            f"--snapshot={snapshot}", f"--file={out}"]
    args += [f'--table="{schema}"."{t}"' for t in tables]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=PG_TOOL_TIMEOUT_S, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["failed"])[-1]
        raise BackupError(f"ledger.url: pg_dump of {redact_url(dsn)} failed: {redact_url(last)}")
    return out


def _copy_out(cur: Any, dest_dir: Path, schema: str, table: str) -> Path:
    out = dest_dir / f"{table}.csv"
    with out.open("wb") as fh, cur.copy(
        f'COPY (SELECT * FROM "{schema}"."{table}" ORDER BY 1) TO STDOUT (FORMAT csv, HEADER true)'
    ) as copy:
        for chunk in copy:
            fh.write(chunk)
    return out


def _target_schema(cur: Any) -> str:
    """The schema the target DSN's search_path names first (existing or not): where a restore goes."""
    cur.execute("SELECT current_setting('search_path'), current_user")
    path, user = cur.fetchone()
    for item in (p.strip() for p in path.split(",")):
        if not item:
            continue
        if item in ('"$user"', "$user"):
            cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (user,))
            if cur.fetchone():
                return str(user)
            continue
        return item[1:-1].replace('""', '"') if item.startswith('"') else item.lower()
    raise BackupError("--ledger: the target's search_path names no schema")


def pg_has_state(dsn: str, field: str = "--ledger") -> tuple[str, bool]:
    """(target schema, whether it already holds any ledger table)."""
    conn = _connect(dsn, field)
    try:
        cur = conn.cursor()
        schema = _target_schema(cur)
        return schema, bool(_tables_in(cur, schema) & set(ledger_tables()))
    finally:
        conn.close()


def restore_postgres(files: dict[str, Path], dsn: str, part: dict[str, Any], force: bool) -> dict[str, Any]:
    """Restore the dumped tables into the target DSN's schema; with `force`, replace the ledger tables there."""
    method, schema, version = part["method"], part["schema"], int(part["schema_version"])
    if version > LATEST_VERSION:
        raise BackupError(f"SRC: the ledger backup is at schema version {version}; this tradesys knows up to "
                          f"{LATEST_VERSION}")
    conn = _connect(dsn, "--ledger")
    try:
        cur = conn.cursor()
        target = _target_schema(cur)
        if method == "pg_dump" and target != schema:
            raise BackupError(f"--ledger: a pg_dump backup restores into schema {schema!r}, the target's search_path "
                              f"names {target!r} (restore into a DSN whose search_path is {schema!r})")
        cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{target}"')
        if method == "pg_dump":
            _pg_restore(files[PGDUMP_FILE], dsn, force)
        else:
            _copy_in(cur, files, target, part["tables"], version, force)
        return _pg_stats(cur, target)
    finally:
        conn.close()


def _pg_restore(dump: Path, dsn: str, force: bool) -> None:
    exe = _tool("pg_restore")
    if exe is None:
        raise BackupError("SRC: the ledger was dumped with pg_dump; restoring it needs pg_restore on PATH")
    env = pg_env(dsn, "--ledger")
    args = [exe, "--no-owner", "--no-privileges", "--single-transaction", "--exit-on-error",
            f"--dbname={env.get('PGDATABASE', '')}"]
    if force:
        args += ["--clean", "--if-exists"]
    proc = subprocess.run([*args, str(dump)], env=env, capture_output=True, text=True, timeout=PG_TOOL_TIMEOUT_S,
                          check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["failed"])[-1]
        raise BackupError(f"--ledger: pg_restore into {redact_url(dsn)} failed: {redact_url(last)}")


def _copy_in(cur: Any, files: dict[str, Path], schema: str, tables: list[str], version: int, force: bool) -> None:
    """One transaction: (force) drop the ledger tables, create them as of `version`, load every table, and move
    each identity sequence past the restored ids so the next insert does not collide."""
    cur.execute("BEGIN")
    try:
        cur.execute(f'SET LOCAL search_path TO "{schema}"')
        if force:
            for t in reversed(ledger_tables()):
                cur.execute(f'DROP TABLE IF EXISTS "{t}" CASCADE')
        cur.execute(SCHEMA_MIGRATIONS_DDL)
        for m in MIGRATIONS:
            if m.version > version:
                break
            for s in m.statements:
                cur.execute(render(s, "postgres"))
        for t in tables:
            path = files[f"{t}.csv"]
            with path.open("rb") as fh:
                header = fh.readline().decode().strip()
                cols = ", ".join(f'"{c}"' for c in header.split(","))
                with cur.copy(f'COPY "{t}" ({cols}) FROM STDIN (FORMAT csv)') as copy:
                    while chunk := fh.read(1 << 20):
                        copy.write(chunk)
            if "id" in header.split(","):
                cur.execute("SELECT pg_get_serial_sequence(%s, 'id')", (f'"{schema}"."{t}"',))
                seq = cur.fetchone()[0]
                if seq:
                    cur.execute(f'SELECT setval(%s, COALESCE((SELECT MAX(id) FROM "{t}"), 0) + 1, false)', (seq,))
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise
