"""Machine-readable output shared by the commands: `--json` prints valid JSON (NaN and inf become null)."""

from __future__ import annotations

import json
import math
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np


def json_ready(obj: Any) -> Any:
    """`obj` as plain JSON values: NaN/inf -> None, numpy scalars and arrays -> Python, dates -> ISO strings.

    Strict JSON has no NaN; `json.dumps` would otherwise write `NaN`, which most parsers (jq, JavaScript) reject.
    """
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_ready(obj.tolist())
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, date):
        return obj.isoformat()
    if isinstance(obj, timedelta):
        return obj.total_seconds()
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


def dumps(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON text of `obj` (see `json_ready`); never emits NaN or Infinity."""
    return json.dumps(json_ready(obj), indent=indent, allow_nan=False)


def write_json(path: Path, obj: Any) -> None:
    """Write `obj` as strict JSON to `path`, creating the parent folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(obj) + "\n")
