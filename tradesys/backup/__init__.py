"""`tradesys backup` / `tradesys restore`: the book of record and what a run needs around it, in one folder.

A backup holds up to four parts, each in its own subfolder, and `manifest.json` (written last) listing every
file with its size and sha256, plus each part's origin, method and row counts:

* ``ledger``: SQLite by the online backup API, PostgreSQL by pg_dump or a COPY dump (`tradesys.backup.ledger`);
  both are consistent while a live loop writes.
* ``mlflow``: the tracking/registry SQLite database (online backup API again) and its artifact folder.
* ``feature_store``: the registry of feature definitions (`registry.json`), and with `feature_data` the offline
  Parquet partitions too.
* ``config``: the run's saved configuration (`config.json`), or the effective one the command was given.

A restore verifies every checksum before it writes anything, refuses to replace existing state unless forced,
restores each part to where it came from (the ledger may be redirected), and checks the restored ledger's schema
version and row counts against the manifest. DEST/SRC is a folder or an ``s3://bucket/prefix`` URI
(`tradesys.backup.s3`).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tradesys.backup.ledger import (
    PGDUMP_FILE,
    SQLITE_FILE,
    PgMethod,
    backup_postgres,
    backup_sqlite,
    pg_has_state,
    restore_postgres,
    restore_sqlite,
    sqlite_has_state,
    tool_version,
)
from tradesys.backup.manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    BackupError,
    FileEntry,
    file_entry,
    parse_manifest,
    verify_files,
)
from tradesys.config import redact_url

__all__ = ["BackupError", "BackupPlan", "RestorePlan", "make_backup", "restore_backup"]

MLFLOW_DB = "mlflow.db"
MLFLOW_ARTIFACTS = "mlartifacts"
REGISTRY_FILE = "registry.json"


@dataclass(slots=True)
class BackupPlan:
    """What to back up. `ledger_url` is the resolved URL (absolute for SQLite); the rest may be left out."""

    dest: str
    ledger_url: str
    run: str = ""
    config_file: Path | None = None  # the run's saved config.json, restored to where it was
    config: dict[str, Any] | None = None  # else the effective configuration, kept for reference
    mlflow_uri: str | None = None  # resolved tracking URI; None: no MLflow part
    feature_store: Path | None = None
    feature_data: bool = False
    pg_method: PgMethod = "auto"


@dataclass(slots=True)
class RestorePlan:
    src: str
    ledger_url: str | None = None  # None: where the backup came from
    feature_store: Path | None = None
    force: bool = False
    skip: set[str] = field(default_factory=set)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    def ver(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {"tradesys": ver("tradesys"), "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
            "mlflow": ver("mlflow"), "psycopg": ver("psycopg")}


# --- backup --------------------------------------------------------------------------------------------------------


def make_backup(plan: BackupPlan) -> dict[str, Any]:
    """Write the backup; return its manifest. Nothing is left at DEST without a manifest unless it failed."""
    from tradesys.backup import s3

    _check_plan(plan)
    if s3.is_s3(plan.dest):
        client, bucket, prefix = s3.open_target(plan.dest, "DEST")
        s3.check_empty(client, bucket, prefix, "DEST")
        with tempfile.TemporaryDirectory(prefix="tradesys-backup-") as tmp:
            manifest = _write_backup(Path(tmp), plan)
            s3.upload_tree(client, bucket, prefix, Path(tmp), last=MANIFEST)
        return manifest
    root = Path(plan.dest).expanduser()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise BackupError(f"DEST: {root} exists and is not an empty folder (a backup goes into a new folder)")
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    try:
        return _write_backup(root.resolve(), plan)
    except BaseException:  # a refused or failed backup leaves DEST as it found it
        if created:
            shutil.rmtree(root, ignore_errors=True)
        else:
            for p in root.iterdir():
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        raise


def _check_plan(plan: BackupPlan) -> None:
    """The refusals that need no copying, made before anything is written."""
    if plan.mlflow_uri is not None and not plan.mlflow_uri.startswith("sqlite:///"):
        raise BackupError(f"--mlflow-uri: {redact_url(plan.mlflow_uri)!r} (or $MLFLOW_TRACKING_URI) is not a local "
                          "SQLite store; back a tracking server up on its own host, or pass --no-mlflow")
    if plan.feature_store is not None and not (plan.feature_store.expanduser() / REGISTRY_FILE).is_file():
        raise BackupError(f"--feature-store: {plan.feature_store} holds no {REGISTRY_FILE} (not a feature store root)")


def _write_backup(root: Path, plan: BackupPlan) -> dict[str, Any]:
    started = _now()
    parts: dict[str, Any] = {"ledger": _backup_ledger(root / "ledger", plan)}
    if plan.mlflow_uri is not None:
        parts["mlflow"] = _backup_mlflow(root / "mlflow", plan.mlflow_uri)
    if plan.feature_store is not None:
        parts["feature_store"] = _backup_feature_store(root / "feature_store", plan.feature_store, plan.feature_data)
    parts["config"] = _backup_config(root / "config", plan)
    entries: list[FileEntry] = []
    for part in parts:
        d = root / part
        if d.is_dir():
            entries += [file_entry(root, p, part) for p in sorted(d.rglob("*")) if p.is_file()]
    for part, info in parts.items():
        info["files"] = sum(1 for e in entries if e.part == part)
        info["bytes"] = sum(e.bytes for e in entries if e.part == part)
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "run": plan.run, "started_utc": started,
        "finished_utc": _now(), "host": platform.node(), "versions": _versions(), "parts": parts,
        "files": [e.as_dict() for e in entries],
    }
    tmp = root / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, root / MANIFEST)
    return manifest


def _backup_ledger(d: Path, plan: BackupPlan) -> dict[str, Any]:
    from tradesys.ledger.sqlite import MEMORY, sqlite_path

    url = plan.ledger_url
    if url.startswith("sqlite:"):
        path = sqlite_path(url)
        if path == MEMORY:
            raise BackupError("ledger.url: an in-memory ledger ends with its process: nothing to back up")
        src = Path(path).expanduser().resolve()
        _, stats = backup_sqlite(src, d)
        return {"kind": "sqlite", "method": "sqlite online backup API", "source": f"sqlite:///{src}", **stats}
    _, stats = backup_postgres(url, d, plan.pg_method)
    method = stats.pop("method")
    return {"kind": "postgres", "method": method, "source": redact_url(url),
            "pg_dump": tool_version("pg_dump") if method == "pg_dump" else None, **stats}


def _backup_mlflow(d: Path, uri: str) -> dict[str, Any]:
    if not uri.startswith("sqlite:///"):
        raise BackupError(f"MLFLOW_TRACKING_URI: {redact_url(uri)!r} is not a local SQLite store; back a tracking "
                          "server up on its own host, or pass --no-mlflow")
    db = Path(uri.removeprefix("sqlite:///").split("?", 1)[0]).expanduser().resolve()
    artifacts = db.parent / MLFLOW_ARTIFACTS
    info: dict[str, Any] = {"tracking_uri": f"sqlite:///{db}", "db": str(db), "artifacts": str(artifacts)}
    if not db.is_file():
        return {**info, "present": False}
    d.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(str(db), timeout=30.0)) as s, closing(sqlite3.connect(str(d / MLFLOW_DB))) as c:
        s.backup(c)
        c.execute("PRAGMA journal_mode=DELETE")
        runs = c.execute("SELECT COUNT(*) FROM runs").fetchone()[0] if _has_table(c, "runs") else 0
    if artifacts.is_dir():
        shutil.copytree(artifacts, d / MLFLOW_ARTIFACTS)
    return {**info, "present": True, "runs": int(runs), "artifacts_present": artifacts.is_dir()}


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None


def _backup_feature_store(d: Path, root: Path, data: bool) -> dict[str, Any]:
    root = root.expanduser().resolve()
    reg = root / REGISTRY_FILE
    if not reg.is_file():
        raise BackupError(f"--feature-store: {root} holds no {REGISTRY_FILE} (not a feature store root)")
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy2(reg, d / REGISTRY_FILE)
    offline = [p for p in (root / "offline").rglob("*") if p.is_file()] if (root / "offline").is_dir() else []
    if data and offline:
        shutil.copytree(root / "offline", d / "offline")
    from tradesys.featurestore.definitions import FeatureRegistry

    defs = [{"name": f.name, "version": f.version, "fingerprint": f.fingerprint} for f in FeatureRegistry(root).list()]
    return {"root": str(root), "definitions": defs, "offline_files": len(offline),
            "offline_bytes": sum(p.stat().st_size for p in offline), "offline_data_included": bool(data)}


def _backup_config(d: Path, plan: BackupPlan) -> dict[str, Any]:
    d.mkdir(parents=True, exist_ok=True)
    if plan.config_file is not None and plan.config_file.is_file():
        shutil.copy2(plan.config_file, d / plan.config_file.name)
        return {"source": str(plan.config_file.resolve()), "name": plan.config_file.name, "restore": True}
    from tradesys.config import redact_tree

    (d / "config.json").write_text(json.dumps(redact_tree(plan.config or {}), indent=2) + "\n")
    return {"source": "effective configuration of the backup command", "name": "config.json", "restore": False}


# --- restore -------------------------------------------------------------------------------------------------------


@contextmanager
def _fetched(src: str) -> Iterator[Path]:
    from tradesys.backup import s3

    if s3.is_s3(src):
        client, bucket, prefix = s3.open_target(src, "SRC")
        with tempfile.TemporaryDirectory(prefix="tradesys-restore-") as tmp:
            s3.download_tree(client, bucket, prefix, Path(tmp), MANIFEST)
            yield Path(tmp)
        return
    root = Path(src).expanduser()
    if not root.is_dir():
        raise BackupError(f"SRC: {root} is not a folder")
    yield root.resolve()


def restore_backup(plan: RestorePlan) -> dict[str, Any]:
    """Verify, check for live state, restore each part; return what went where (with the ledger's row counts)."""
    with _fetched(plan.src) as root:
        mpath = root / MANIFEST
        if not mpath.is_file():
            raise BackupError(f"SRC: {plan.src} has no {MANIFEST} (not a backup, or an interrupted one)")
        try:
            manifest = json.loads(mpath.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BackupError(f"SRC: {MANIFEST} is not valid JSON ({exc})") from None
        entries = parse_manifest(manifest)
        verify_files(root, entries)
        parts: dict[str, Any] = manifest["parts"]
        targets = _targets(parts, plan)
        live = [f"{part} at {where}" for part, (where, exists) in targets.items() if exists]
        if live and not plan.force:
            raise BackupError(f"--force: restoring would overwrite existing state ({'; '.join(live)}); stop what "
                              "uses it and pass --force")
        done: dict[str, Any] = {"src": plan.src, "run": manifest.get("run", ""),
                                "backup_finished_utc": manifest.get("finished_utc"), "verified_files": len(entries)}
        if "ledger" in targets:
            done["ledger"] = _restore_ledger(root, parts["ledger"], targets["ledger"][0], plan.force)
        if "mlflow" in targets:
            done["mlflow"] = _restore_mlflow(root, parts["mlflow"], plan.force)
        if "feature_store" in targets:
            dest = Path(targets["feature_store"][0])
            _replace_tree(root / "feature_store", dest, plan.force, keep_other=True)
            done["feature_store"] = {"root": str(dest)}
        if "config" in targets:
            dest = Path(targets["config"][0])
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / "config" / parts["config"]["name"], dest)
            done["config"] = {"path": str(dest)}
        return done


def _targets(parts: dict[str, Any], plan: RestorePlan) -> dict[str, tuple[str, bool]]:
    """part -> (where it goes, whether something is there now)."""
    out: dict[str, tuple[str, bool]] = {}
    ledger = parts.get("ledger")
    if ledger and "ledger" not in plan.skip:
        url = plan.ledger_url or ledger["source"]
        if ledger["kind"] == "sqlite":
            from tradesys.ledger.sqlite import MEMORY, sqlite_path

            if not url.startswith("sqlite:"):
                raise BackupError(f"--ledger: the backup holds a SQLite ledger; restore it to a sqlite:/// URL, not "
                                  f"{redact_url(url)!r}")
            try:
                path = sqlite_path(url)
            except ValueError as exc:
                raise BackupError(f"--ledger: {exc}") from None
            if path == MEMORY:
                raise BackupError("--ledger: an in-memory ledger cannot be restored into")
            p = Path(path).expanduser().resolve()
            out["ledger"] = (f"sqlite:///{p}", sqlite_has_state(p))
        else:
            if not url.startswith(("postgresql://", "postgres://")):
                raise BackupError(f"--ledger: the backup holds a PostgreSQL ledger; restore it to a postgresql:// "
                                  f"URL, not {redact_url(url)!r}")
            if "***" in url:
                raise BackupError("--ledger: the backed-up DSN's password is masked; name the target with --ledger "
                                  "(or give the password in PGPASSWORD)")
            _, exists = pg_has_state(url)
            out["ledger"] = (url, exists)
    ml = parts.get("mlflow")
    if ml and ml.get("present") and "mlflow" not in plan.skip:
        db, art = Path(ml["db"]), Path(ml["artifacts"])
        out["mlflow"] = (str(db.parent), db.exists() or (ml.get("artifacts_present") and art.exists()))
    fs = parts.get("feature_store")
    if fs and "feature_store" not in plan.skip:
        dest = (plan.feature_store or Path(fs["root"])).expanduser().resolve()
        out["feature_store"] = (str(dest), (dest / REGISTRY_FILE).exists())
    cfg = parts.get("config")
    if cfg and cfg.get("restore") and "config" not in plan.skip:
        dest = Path(cfg["source"])
        if ledger and ledger["kind"] == "sqlite" and "ledger" in out:  # beside the (maybe redirected) ledger
            dest = Path(out["ledger"][0].removeprefix("sqlite:///")).parent / cfg["name"]
        out["config"] = (str(dest), dest.exists())
    return out


def _restore_ledger(root: Path, part: dict[str, Any], target: str, force: bool) -> dict[str, Any]:
    if part["kind"] == "sqlite":
        stats = restore_sqlite(root / "ledger" / SQLITE_FILE, Path(target.removeprefix("sqlite:///")))
    else:
        files = {p.name: p for p in (root / "ledger").iterdir()}
        if part["method"] == "pg_dump" and PGDUMP_FILE not in files:
            raise BackupError(f"SRC: ledger/{PGDUMP_FILE} is missing")
        stats = restore_postgres(files, target, part, force)
    for key in ("schema_version", "rows"):
        if stats[key] != part[key]:
            raise BackupError(f"--ledger: the restored ledger's {key} is {stats[key]}, the backup's {part[key]}")
    return {"url": redact_url(target), "method": part["method"], **stats}


def _restore_mlflow(root: Path, part: dict[str, Any], force: bool) -> dict[str, Any]:
    db, art = Path(part["db"]), Path(part["artifacts"])
    db.parent.mkdir(parents=True, exist_ok=True)
    tmp = db.parent / f".{db.name}.restore-{os.getpid()}"
    shutil.copyfile(root / "mlflow" / MLFLOW_DB, tmp)
    for side in (Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}-journal")):
        side.unlink(missing_ok=True)
    os.replace(tmp, db)
    if part.get("artifacts_present"):
        _replace_tree(root / "mlflow" / MLFLOW_ARTIFACTS, art, force)
    return {"db": str(db), "artifacts": str(art) if part.get("artifacts_present") else None,
            "runs": part.get("runs")}


def _replace_tree(src: Path, dest: Path, force: bool, keep_other: bool = False) -> None:
    """Copy `src` over `dest`; with `keep_other` only the entries `src` has are replaced (a feature store's other
    files stay), else `dest` becomes exactly `src`."""
    if dest.exists() and not keep_other:
        if not force:
            raise BackupError(f"--force: {dest} exists")
        shutil.rmtree(dest)
    if not keep_other:
        shutil.copytree(src, dest)
        return
    dest.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        target = dest / item.name
        if item.is_dir():
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(item, target)
        else:
            shutil.copy2(item, target)
