"""Machine-readable output shared by the commands: `--json` prints valid JSON (NaN and inf become null)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tradesys.core.jsonsafe import dumps, json_ready

__all__ = ["dumps", "error_line", "json_ready", "write_json"]


def write_json(path: Path, obj: Any) -> None:
    """Write `obj` as strict JSON to `path`, creating the parent folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(obj) + "\n")


def error_line(kind: str, exc: BaseException | str) -> str:
    """The user-facing error contract: one line, ``"<kind> error: <message>"`` with the message's whitespace
    collapsed (the CLI prints it on stderr and exits 2; the jobs print it and return 2)."""
    return f"{kind} error: {' '.join(str(exc).split())}"
