"""Offline feature store: a partitioned Parquet dataset with point-in-time correct as-of joins.

Layout under the store root (the registry JSON sits beside it)::

    offline/<feature>/v<version>/date=YYYY-MM-DD/part-<uuid>.parquet

`date` is the UTC calendar date of the event time (a hive partition), so a time-range read opens only the
partitions the range covers. Files hold the definition's schema (entity, event time, value columns); the
dataset is opened with that explicit schema, so no file outside the range is ever read, not even for schema
inference.

Point-in-time rule (`training_set`): for a label row (entity e, label time L) and a feature with lag `lag` and
staleness limit `ttl`, the attached value is the row of entity e with the greatest event time t such that

    t <= L - lag          (t < L - lag when allow_exact_matches=False)
    L - lag - t <= ttl    (when ttl is given; otherwise no limit)

else null. This is `pandas.merge_asof(direction="backward", by=entity, tolerance=ttl)` on `L - lag`; the store
computes it with a per-entity `searchsorted` on Arrow/numpy columns. Rows with equal (entity, event time) are
duplicates: `write` keeps the last one of a batch; across batches the result among ties is unspecified.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from tradesys.featurestore.definitions import FeatureDefinition, FeatureRegistry

TimeLike = str | datetime | date | pd.Timestamp | int | np.datetime64
DurationLike = str | timedelta | pd.Timedelta | int
_PARTITIONING = ds.partitioning(pa.schema([("date", pa.string())]), flavor="hive")
NS_PER_DAY = 86_400 * 10**9


def to_ns(t: TimeLike) -> int:
    """A time as int ns since the epoch UTC; naive datetimes and strings are read as UTC, ints as ns."""
    if isinstance(t, (int, np.integer)) and not isinstance(t, bool):
        return int(t)
    ts = pd.Timestamp(t)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value)


def to_ns_duration(d: DurationLike | None) -> int | None:
    """A duration as int ns (ints are ns); None stays None. Negative durations are rejected."""
    if d is None:
        return None
    v = int(d) if isinstance(d, (int, np.integer)) else int(pd.Timedelta(d).value)
    if v < 0:
        raise ValueError(f"duration: {d!r} is negative")
    return v


def _date_str(ns: int) -> str:
    return str(np.datetime64(ns // NS_PER_DAY, "D"))


@dataclass(frozen=True)
class FeatureRef:
    """A feature in a training-set request: which version, which columns, how much lag and staleness allowed.

    `lag` shifts the as-of time back (models the delay before a value is usable); `ttl` is the maximum age of
    a value at the (lagged) label time, inclusive. Both are durations (pandas strings such as "5min", or ns).
    """

    name: str
    version: int | None = None
    columns: Sequence[str] | None = None
    lag: DurationLike | None = None
    ttl: DurationLike | None = None


class OfflineStore:
    """Partitioned Parquet feature data plus the registry of definitions, both under `root`."""

    def __init__(self, root: str | os.PathLike[str], registry: FeatureRegistry | None = None) -> None:
        self.root = Path(root)
        self.registry = registry if registry is not None else FeatureRegistry(self.root)

    # ---------------------------------------------------------------- layout
    def register(self, defn: FeatureDefinition) -> FeatureDefinition:
        return self.registry.register(defn)

    def feature_dir(self, name: str, version: int) -> Path:
        return self.root / "offline" / name / f"v{version}"

    def _dataset(self, defn: FeatureDefinition) -> ds.Dataset | None:
        base = self.feature_dir(defn.name, defn.version)
        if not base.exists():
            return None
        schema = defn.arrow_schema().append(pa.field("date", pa.string()))
        return ds.dataset(base, schema=schema, format="parquet", partitioning=_PARTITIONING)

    @staticmethod
    def _filter(
        defn: FeatureDefinition, start_ns: int | None, end_ns: int | None, entities: Iterable[str] | None = None
    ) -> tuple[ds.Expression | None, ds.Expression | None]:
        """(partition filter on `date`, row filter) for the half-open range [start, end)."""
        part = rows = None
        ts = ds.field(defn.event_time)
        if start_ns is not None:
            part = ds.field("date") >= _date_str(start_ns)
            rows = ts >= pa.scalar(start_ns, pa.timestamp("ns", tz="UTC"))
        if end_ns is not None:
            p = ds.field("date") <= _date_str(end_ns - 1)
            r = ts < pa.scalar(end_ns, pa.timestamp("ns", tz="UTC"))
            part = p if part is None else part & p
            rows = r if rows is None else rows & r
        if entities is not None:
            e = ds.field(defn.entity).isin(pa.array([str(x) for x in entities], pa.string()))
            rows = e if rows is None else rows & e
        return part, rows

    def _defn(self, feature: str | FeatureDefinition, version: int | None) -> FeatureDefinition:
        if isinstance(feature, FeatureDefinition):
            return feature
        return self.registry.get(feature, version)

    # ---------------------------------------------------------------- write
    def write(self, feature: str | FeatureDefinition, version: int | None, rows: Any) -> int:
        """Append rows (one new file per touched date partition); returns the number of rows written.

        Within the batch, a repeated (entity, event time) keeps its last row.
        """
        defn = self._defn(feature, version)
        table = _dedupe_last(defn.conform(rows), defn)
        n = 0
        for day, part in _split_by_date(table, defn).items():
            d = self.feature_dir(defn.name, defn.version) / f"date={day}"
            d.mkdir(parents=True, exist_ok=True)
            pq.write_table(part, d / f"part-{uuid.uuid4().hex}.parquet")
            n += part.num_rows
        return n

    def backfill(
        self,
        feature: str | FeatureDefinition,
        version: int | None,
        fn: Callable[[date], Any],
        start: date | str,
        end: date | str,
    ) -> int:
        """Run `fn(day)` for each UTC day in [start, end] (inclusive) and replace that day's partition with it.

        Idempotent: each day's partition is rebuilt in a hidden staging folder and swapped in by rename, so
        running a backfill twice gives the same dataset and a day `fn` returns no rows for ends up empty.
        Rows whose event date is not `day` raise ValueError (they would land in a partition the run does not own).
        """
        defn = self._defn(feature, version)
        d0, d1 = pd.Timestamp(start).date(), pd.Timestamp(end).date()
        if d1 < d0:
            raise ValueError(f"end: {d1} is before start {d0}")
        base = self.feature_dir(defn.name, defn.version)
        base.mkdir(parents=True, exist_ok=True)
        total = 0
        day = d0
        while day <= d1:
            table = _dedupe_last(defn.conform(fn(day)), defn)
            parts = _split_by_date(table, defn)
            stray = sorted(set(parts) - {day.isoformat()})
            if stray:
                raise ValueError(f"{defn.event_time}: backfill of {day} returned rows dated {stray}")
            final = base / f"date={day.isoformat()}"
            trash = base / f".trash-{uuid.uuid4().hex}"
            staging = None
            if table.num_rows:
                staging = base / f".staging-{uuid.uuid4().hex}"
                staging.mkdir()
                pq.write_table(table, staging / f"part-{uuid.uuid4().hex}.parquet")
            if final.exists():
                final.rename(trash)
            if staging is not None:
                staging.rename(final)
            if trash.exists():
                shutil.rmtree(trash)
            total += table.num_rows
            day += timedelta(days=1)
        return total

    # ---------------------------------------------------------------- read
    def fragments(
        self,
        feature: str | FeatureDefinition,
        version: int | None = None,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
    ) -> list[str]:
        """Paths of the Parquet files a read of [start, end) opens (after partition pruning)."""
        defn = self._defn(feature, version)
        dset = self._dataset(defn)
        if dset is None:
            return []
        part, _ = self._filter(defn, _opt_ns(start), _opt_ns(end))
        return sorted(f.path for f in dset.get_fragments(filter=part))

    def read(
        self,
        feature: str | FeatureDefinition,
        version: int | None = None,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        entities: Iterable[str] | None = None,
        columns: Sequence[str] | None = None,
    ) -> pa.Table:
        """Rows with event time in [start, end) (either bound optional), sorted by (entity, event time)."""
        defn = self._defn(feature, version)
        schema = defn.arrow_schema()
        keep = [defn.entity, defn.event_time, *(columns if columns is not None else defn.value_columns)]
        unknown = [c for c in keep if c not in schema.names]
        if unknown:
            raise ValueError(f"columns: {unknown} are not columns of feature {defn.name!r} v{defn.version}")
        dset = self._dataset(defn)
        if dset is None:
            return schema.empty_table().select(keep)
        part, rows = self._filter(defn, _opt_ns(start), _opt_ns(end), entities)
        frags = list(dset.get_fragments(filter=part))
        if not frags:
            return schema.empty_table().select(keep)
        pruned = ds.FileSystemDataset(frags, dset.schema, dset.format, dset.filesystem)
        table = pruned.to_table(columns=keep, filter=rows)
        return table.sort_by([(defn.entity, "ascending"), (defn.event_time, "ascending")])

    def latest(
        self,
        feature: str | FeatureDefinition,
        version: int | None,
        as_of: TimeLike,
        ttl: DurationLike | None = None,
        entities: Iterable[str] | None = None,
    ) -> pa.Table:
        """Last row per entity with event time <= as_of (and as_of - t <= ttl when given)."""
        defn = self._defn(feature, version)
        as_of_ns = to_ns(as_of)
        ttl_ns = to_ns_duration(ttl)
        start = None if ttl_ns is None else as_of_ns - ttl_ns
        table = self.read(defn, None, start, as_of_ns + 1, entities)
        if table.num_rows == 0:
            return table
        ent = table.column(defn.entity).to_numpy(zero_copy_only=False)
        # sorted by (entity, time): the last row of each entity run is its latest value
        last = np.flatnonzero(np.append(ent[1:] != ent[:-1], True))
        return table.take(pa.array(last))

    # ---------------------------------------------------------------- point-in-time join
    def training_set(
        self,
        entity_df: pd.DataFrame,
        features: Sequence[FeatureRef | str | tuple[str, int]],
        *,
        entity: str = "symbol",
        label_time: str = "ts",
        allow_exact_matches: bool = True,
        with_event_time: bool = False,
    ) -> pd.DataFrame:
        """`entity_df` (one row per label: entity, label time, anything else) with the features attached as of
        each label time, never from the future (see the module docstring for the exact rule).

        Output columns are named `<feature>_v<version>__<column>`; with `with_event_time` also
        `<feature>_v<version>__event_ts`, the event time of the attached row. Row order and index are kept.
        """
        for col in (entity, label_time):
            if col not in entity_df.columns:
                raise ValueError(f"{col}: missing column in entity_df")
        labels_ns = _series_to_ns(entity_df[label_time])
        label_ent = entity_df[entity].astype(str).to_numpy()
        out = entity_df.copy()
        for ref in features:
            ref = _as_ref(ref)
            defn = self.registry.get(ref.name, ref.version)
            cols = list(ref.columns) if ref.columns is not None else defn.value_columns
            lag = to_ns_duration(ref.lag) or 0
            ttl = to_ns_duration(ref.ttl)
            cutoff = labels_ns - lag
            prefix = f"{defn.name}_v{defn.version}__"
            if len(cutoff):
                lo = None if ttl is None else int(cutoff.min()) - ttl
                table = self.read(defn, None, lo, int(cutoff.max()) + 1, np.unique(label_ent), cols)
            else:
                table = defn.arrow_schema().empty_table().select([defn.entity, defn.event_time, *cols])
            idx = asof_indices(
                table.column(defn.entity).to_numpy(zero_copy_only=False).astype(str),
                table.column(defn.event_time).cast(pa.int64()).to_numpy(),
                label_ent,
                cutoff,
                ttl_ns=ttl,
                allow_exact_matches=allow_exact_matches,
            )
            take = pa.array(idx, mask=idx < 0)
            picked = table.take(take)
            for c in cols:
                out[prefix + c] = picked.column(c).to_pandas().to_numpy()
            if with_event_time:
                out[prefix + "event_ts"] = pd.DatetimeIndex(picked.column(defn.event_time).to_pandas()).to_numpy()
        return out


def asof_indices(
    right_entity: np.ndarray,
    right_ns: np.ndarray,
    left_entity: np.ndarray,
    left_ns: np.ndarray,
    *,
    ttl_ns: int | None = None,
    allow_exact_matches: bool = True,
) -> np.ndarray:
    """For each left row, the index of the right row of the same entity with the greatest time <= left time
    (< when not allow_exact_matches) and left - right <= ttl; -1 where there is none.

    Right rows need not be sorted; among equal (entity, time) the last one in input order wins.
    """
    out = np.full(len(left_ns), -1, dtype=np.int64)
    n_r = len(right_ns)
    if n_r == 0 or len(left_ns) == 0:
        return out
    # one sortable int64 key per row: entity code * width + dense rank of the time (equal times, equal ranks)
    codes, _ = pd.factorize(np.concatenate([np.asarray(right_entity, object), np.asarray(left_entity, object)]))
    _, ranks = np.unique(np.concatenate([right_ns, left_ns]), return_inverse=True)
    key = codes.astype(np.int64) * (int(ranks.max()) + 1) + ranks
    order = np.argsort(key[:n_r], kind="stable")  # stable: among ties the last input row sorts last
    pos = np.searchsorted(key[:n_r][order], key[n_r:], side="right" if allow_exact_matches else "left") - 1
    hit = np.maximum(pos, 0)
    ok = (pos >= 0) & (codes[:n_r][order][hit] == codes[n_r:])
    if ttl_ns is not None:
        ok &= np.asarray(left_ns) - np.asarray(right_ns)[order][hit] <= ttl_ns
    out[ok] = order[hit[ok]]
    return out


def _as_ref(ref: FeatureRef | str | tuple[str, int]) -> FeatureRef:
    if isinstance(ref, FeatureRef):
        return ref
    if isinstance(ref, str):
        return FeatureRef(ref)
    if isinstance(ref, tuple) and len(ref) == 2:
        return FeatureRef(ref[0], ref[1])
    raise ValueError(f"features: {ref!r} is not a FeatureRef, name or (name, version)")


def _opt_ns(t: TimeLike | None) -> int | None:
    return None if t is None else to_ns(t)


def _series_to_ns(s: pd.Series) -> np.ndarray:
    """Label times as int64 ns UTC (naive = UTC); NaT is rejected."""
    ts = pd.to_datetime(s, utc=True)
    if ts.isna().any():
        raise ValueError(f"{s.name}: {int(ts.isna().sum())} missing label time(s)")
    return pd.DatetimeIndex(ts).as_unit("ns").asi8.copy()


def _dedupe_last(table: pa.Table, defn: FeatureDefinition) -> pa.Table:
    """Keep the last row of each (entity, event time) and sort by (entity, event time)."""
    if table.num_rows < 2:
        return table
    ent, _ = pd.factorize(table.column(defn.entity).to_numpy(zero_copy_only=False), sort=True)
    ns = table.column(defn.event_time).cast(pa.int64()).to_numpy()
    order = np.lexsort((ns, ent))  # stable: equal keys keep input order
    e, t = ent[order], ns[order]
    last = np.append((e[1:] != e[:-1]) | (t[1:] != t[:-1]), True)
    return table.take(pa.array(order[last]))


def _split_by_date(table: pa.Table, defn: FeatureDefinition) -> dict[str, pa.Table]:
    if table.num_rows == 0:
        return {}
    day = np.floor_divide(table.column(defn.event_time).cast(pa.int64()).to_numpy(), NS_PER_DAY)
    out = {}
    for d in np.unique(day).tolist():
        out[str(np.datetime64(d, "D"))] = table.filter(pa.array(day == d))
    return out
