"""Versioned feature definitions and the registry that keeps them.

Why versions and fingerprints: a training set is only reproducible if the values it joined were produced by
the same transformation. A definition's `fingerprint` hashes everything that changes the stored values (entity
key, value columns and dtypes, event-time column, transformation identity); `version` is the human handle.
The registry refuses to register an existing (name, version) with a different fingerprint, so a changed
transformation must get a new version and the old data stays addressable.

Conventions: the entity key is a string column (e.g. `symbol`); the event time is `timestamp[ns, UTC]`; value
dtypes are Arrow type aliases (`"float64"`, `"int64"`, `"string"`, `"bool"`, ...).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from tradesys.core.schemas import TS_TYPE

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# column names the stores use for themselves
RESERVED_COLUMNS = frozenset({"date", "_event_ts"})
REGISTRY_FILE = "registry.json"


def transform_fingerprint(fn: Callable[..., Any]) -> str:
    """A short hash of a transformation's source (falls back to its bytecode when the source is unavailable)."""
    try:
        text = inspect.getsource(fn).encode()
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        if code is None:
            raise ValueError(f"transform: cannot fingerprint {fn!r}; pass transform='<your version tag>'") from None
        text = code.co_code + repr(code.co_consts).encode()
    return "src:" + hashlib.sha256(text).hexdigest()[:16]


@dataclass(frozen=True)
class FeatureDefinition:
    """One version of a feature: what is stored, keyed by what, stamped by which time column.

    `columns` maps value column -> Arrow dtype alias. `transform` identifies the transformation: a user-given
    version tag, or `transform_fingerprint(fn)` (see `from_transform`). `description` is documentation only and
    is not part of the fingerprint.
    """

    name: str
    version: int
    columns: Mapping[str, str]
    entity: str = "symbol"
    event_time: str = "ts"
    transform: str = ""
    description: str = ""
    _types: dict[str, pa.DataType] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ValueError(f"name: {self.name!r} must match {_NAME_RE.pattern} (it is used in paths and keys)")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise ValueError(f"version: {self.version!r} must be an integer >= 1")
        for what, col in (("entity", self.entity), ("event_time", self.event_time)):
            if not isinstance(col, str) or not col or col in RESERVED_COLUMNS:
                raise ValueError(
                    f"{what}: {col!r} must be a non-empty column name other than {sorted(RESERVED_COLUMNS)}"
                )
        if self.entity == self.event_time:
            raise ValueError("event_time: must differ from the entity column")
        if not self.columns:
            raise ValueError("columns: a feature needs at least one value column")
        types: dict[str, pa.DataType] = {}
        for col, alias in self.columns.items():
            if not isinstance(col, str) or not col:
                raise ValueError(f"columns: {col!r} is not a column name")
            if col in RESERVED_COLUMNS or col in (self.entity, self.event_time):
                raise ValueError(f"columns: {col!r} clashes with the entity, event-time or a reserved column")
            try:
                types[col] = pa.type_for_alias(alias)
            except (ValueError, KeyError, TypeError):
                raise ValueError(f"columns: dtype {alias!r} of {col!r} is not an Arrow type alias") from None
        # a plain dict keeps the definition JSON-serialisable and hashable by content
        object.__setattr__(self, "columns", dict(self.columns))
        object.__setattr__(self, "_types", types)

    @classmethod
    def from_transform(
        cls,
        name: str,
        version: int,
        columns: Mapping[str, str],
        fn: Callable[..., Any],
        **kwargs: Any,
    ) -> FeatureDefinition:
        """A definition whose `transform` is the hash of `fn`'s source, so editing `fn` changes the fingerprint."""
        return cls(name=name, version=version, columns=columns, transform=transform_fingerprint(fn), **kwargs)

    @property
    def fingerprint(self) -> str:
        """sha256 over the canonical JSON of everything that determines the stored values (not name/version/doc)."""
        payload = {
            "entity": self.entity,
            "event_time": self.event_time,
            "columns": sorted((k, str(v)) for k, v in self._types.items()),
            "transform": self.transform,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    @property
    def value_columns(self) -> list[str]:
        return list(self.columns)

    def arrow_schema(self) -> pa.Schema:
        """Stored row schema: entity (string), event time (timestamp[ns, UTC]), then the value columns."""
        fields = [
            pa.field(self.entity, pa.string(), nullable=False),
            pa.field(self.event_time, TS_TYPE, nullable=False),
        ]
        fields += [pa.field(c, t) for c, t in self._types.items()]
        return pa.schema(fields, metadata={"feature": self.name, "version": str(self.version)})

    def conform(self, rows: Any) -> pa.Table:
        """Rows (pandas DataFrame, Arrow table/batch or list of dicts) cast to `arrow_schema()`.

        Naive timestamps are read as UTC; integer event times as ns since the epoch. Raises ValueError naming
        the column on a missing column, a failed cast or a null entity/event time.
        """
        table = _to_table(rows)
        schema = self.arrow_schema()
        arrays = []
        for f in schema:
            if f.name not in table.column_names:
                raise ValueError(f"{f.name}: missing column for feature {self.name!r} v{self.version}")
            col = table.column(f.name)
            try:
                if f.name == self.event_time:
                    col = _to_utc_ns(col)
                elif not col.type.equals(f.type):
                    col = col.cast(f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                raise ValueError(f"{f.name}: cannot cast {col.type} to {f.type}: {exc}") from None
            if not f.nullable and col.null_count:
                raise ValueError(f"{f.name}: {col.null_count} null value(s); the entity and event time are required")
            arrays.append(col)
        return pa.Table.from_arrays(arrays, schema=schema)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "entity": self.entity,
            "event_time": self.event_time,
            "columns": dict(self.columns),
            "transform": self.transform,
            "description": self.description,
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureDefinition:
        defn = cls(
            name=d["name"],
            version=int(d["version"]),
            columns=d["columns"],
            entity=d.get("entity", "symbol"),
            event_time=d.get("event_time", "ts"),
            transform=d.get("transform", ""),
            description=d.get("description", ""),
        )
        if "fingerprint" in d and d["fingerprint"] != defn.fingerprint:
            raise ValueError(f"fingerprint: stored value for {defn.name!r} v{defn.version} does not match its fields")
        return defn


def _to_table(rows: Any) -> pa.Table:
    if isinstance(rows, pa.Table):
        return rows
    if isinstance(rows, pa.RecordBatch):
        return pa.Table.from_batches([rows])
    if isinstance(rows, list):
        return pa.Table.from_pylist(rows)
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(rows, pd.DataFrame):
        return pa.Table.from_pandas(rows, preserve_index=False)
    raise ValueError(f"rows: expected a DataFrame, Arrow table/batch or list of dicts, got {type(rows).__name__}")


def _to_utc_ns(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """Any timestamp (naive = UTC) or integer ns column as timestamp[ns, UTC]."""
    t = col.type
    if pa.types.is_timestamp(t):
        if t.tz is None:
            col = col.cast(pa.timestamp(t.unit))  # keep the wall clock, then label it UTC
            return col.cast(pa.int64()).cast(pa.timestamp(t.unit, tz="UTC")).cast(TS_TYPE)
        return col.cast(TS_TYPE)
    if pa.types.is_integer(t):
        return col.cast(pa.int64()).cast(TS_TYPE)
    raise pa.ArrowInvalid(f"event time must be a timestamp or integer ns, got {t}")


class FeatureRegistry:
    """Definitions kept as one JSON file (`registry.json`) in the store root.

    Writes are atomic (temp file + rename). Not safe against two processes registering at the same instant;
    registration is a deploy-time step, not a hot path.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.path = self.root / REGISTRY_FILE
        self._defs: dict[tuple[str, int], FeatureDefinition] = {}
        if self.path.exists():
            data = json.loads(self.path.read_text())
            for d in data.get("features", []):
                defn = FeatureDefinition.from_dict(d)
                self._defs[(defn.name, defn.version)] = defn

    def register(self, defn: FeatureDefinition) -> FeatureDefinition:
        """Store `defn`; re-registering the identical definition is a no-op (the description may change).

        Raises ValueError when (name, version) already exists with a different fingerprint.
        """
        key = (defn.name, defn.version)
        old = self._defs.get(key)
        if old is not None and old.fingerprint != defn.fingerprint:
            raise ValueError(
                f"version: feature {defn.name!r} v{defn.version} is already registered with fingerprint "
                f"{old.fingerprint[:12]}, the new definition has {defn.fingerprint[:12]}; register it as a new version"
            )
        if old != defn:
            self._defs[key] = defn
            self._save()
        return defn

    def register_auto(self, defn: FeatureDefinition) -> FeatureDefinition:
        """Register `defn` under the version that already has its fingerprint, else under max version + 1."""
        for v in self.versions(defn.name):
            if self._defs[(defn.name, v)].fingerprint == defn.fingerprint:
                return self._defs[(defn.name, v)]
        vs = self.versions(defn.name)
        return self.register(replace(defn, version=(vs[-1] + 1) if vs else 1))

    def get(self, name: str, version: int | None = None) -> FeatureDefinition:
        """The definition of `name` at `version` (latest when None); ValueError when unknown."""
        if version is None:
            vs = self.versions(name)
            if not vs:
                raise ValueError(f"name: feature {name!r} is not registered")
            version = vs[-1]
        try:
            return self._defs[(name, version)]
        except KeyError:
            raise ValueError(f"version: feature {name!r} v{version} is not registered") from None

    def versions(self, name: str) -> list[int]:
        return sorted(v for (n, v) in self._defs if n == name)

    def list(self) -> list[FeatureDefinition]:
        return [self._defs[k] for k in sorted(self._defs)]

    def _save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        payload = {"features": [d.to_dict() for d in self.list()]}
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".registry-", suffix=".json")
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, indent=2, sort_keys=True)
        os.replace(tmp, self.path)
