"""Strict JSON for everything the platform writes (summaries, `--json`, audit and MLflow records).

Strict JSON has no NaN or Infinity: `json.dumps` would otherwise write `NaN`, which most parsers (jq, JavaScript,
`json.loads(..., parse_constant=...)`) reject. One conversion, used by the CLI, the jobs and the drift records.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any

import numpy as np


def json_ready(obj: Any) -> Any:
    """`obj` as plain JSON values: NaN/inf -> None, numpy scalars and arrays -> Python, dates and datetimes -> ISO
    strings, timedeltas -> seconds, anything else unknown -> its str()."""
    if isinstance(obj, Mapping):
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


def dumps(obj: Any, indent: int | None = 2, sort_keys: bool = False) -> str:
    """Strict JSON text of `obj` (see `json_ready`); never emits NaN or Infinity."""
    return json.dumps(json_ready(obj), indent=indent, allow_nan=False, sort_keys=sort_keys)
