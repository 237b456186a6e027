"""The backup manifest: what a backup holds, and the checks a restore runs before it touches anything.

Pure apart from hashing a file. A backup is a folder of part files plus `manifest.json`, written last: a folder
without one is an interrupted backup and is never restored. Every file is listed with its size and sha256, so a
restore can prove the copy is the one that was written before it overwrites anything.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from tradesys.ledger.migrations import MIGRATIONS, SCHEMA_MIGRATIONS_DDL, Migration

FORMAT = "tradesys-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PARTS = ("ledger", "mlflow", "feature_store", "config")
CHUNK = 1 << 20


class BackupError(ValueError):
    """A backup or restore refused or failed; the one-line message names the argument or setting behind it."""


@dataclass(frozen=True, slots=True)
class FileEntry:
    path: str  # relative to the backup root, '/'-separated
    part: str
    bytes: int
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "part": self.part, "bytes": self.bytes, "sha256": self.sha256}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_entry(root: Path, path: Path, part: str) -> FileEntry:
    return FileEntry(path.relative_to(root).as_posix(), part, path.stat().st_size, sha256_file(path))


def ledger_tables(migrations: Iterable[Migration] = MIGRATIONS, upto: int | None = None) -> list[str]:
    """The ledger's tables in creation order (parents before children: `orders` before `fills`), from the
    migrations themselves, so a new migration's table is backed up without a second list to keep in step."""
    names = [_created(SCHEMA_MIGRATIONS_DDL)]
    for m in migrations:
        if upto is not None and m.version > upto:
            break
        names += [n for s in m.statements if (n := _created(s))]
    return names


def _created(statement: str) -> str:
    m = re.match(r"\s*CREATE TABLE (?:IF NOT EXISTS )?(\w+)", statement)
    return m.group(1) if m else ""


def check_relative(path: str) -> str:
    """A manifest path must stay inside the backup (no absolute paths, no '..'): it came from a file we read."""
    p = PurePosixPath(path)
    if not path or p.is_absolute() or ".." in p.parts:
        raise BackupError(f"SRC: manifest lists {path!r}, which is not a path inside the backup")
    return path


def parse_manifest(data: Mapping[str, Any]) -> list[FileEntry]:
    """The manifest's file list, after checking its format; BackupError naming SRC on anything unexpected."""
    if data.get("format") != FORMAT:
        raise BackupError(f"SRC: {MANIFEST} is not a tradesys backup manifest (format {data.get('format')!r})")
    if data.get("format_version") != FORMAT_VERSION:
        raise BackupError(f"SRC: manifest format_version {data.get('format_version')!r} is not supported "
                          f"(this tradesys reads {FORMAT_VERSION})")
    if not isinstance(data.get("parts"), dict) or not isinstance(data.get("files"), list):
        raise BackupError(f"SRC: {MANIFEST} lacks its parts or files")
    out = []
    for f in data["files"]:
        try:
            out.append(FileEntry(check_relative(str(f["path"])), str(f["part"]), int(f["bytes"]), str(f["sha256"])))
        except (KeyError, TypeError) as exc:
            raise BackupError(f"SRC: {MANIFEST} has a malformed file entry ({exc})") from None
    return out


def verify_files(root: Path, entries: Iterable[FileEntry]) -> None:
    """Every listed file present with its size and checksum; BackupError naming the first that is not."""
    for e in entries:
        p = root / e.path
        if not p.is_file():
            raise BackupError(f"SRC: {e.path} is missing (the backup is incomplete)")
        size = p.stat().st_size
        if size != e.bytes:
            raise BackupError(f"SRC: {e.path} has {size} bytes, the manifest says {e.bytes} (the backup is damaged)")
        if sha256_file(p) != e.sha256:
            raise BackupError(f"SRC: {e.path} fails its sha256 check (the backup is damaged)")
