"""Record market data streams to a partitioned Parquet dataset, and replay them in time order.

Why: recorded ticks, quotes, book updates and bars are the research record and the input to backtests and
feature backfills; partitioning by date and symbol lets a replay of one day or a few symbols read only those
files (partition pruning).

Layout (hive style): `root/date=YYYY-MM-DD/symbol=NAME/part-<stamp>.parquet`, the date being the UTC date of
`ts`. Each recorder flush writes one file per (date, symbol) with a name that sorts in write order, so several
recordings of the same partition are read back in the order they were written. `root/_tradesys.json` names the
stream kind ("bar", "trade", "quote" or "book"); files starting with "_" are ignored by the dataset scan.

Replay order is canonical: rows sorted by (ts, symbol), stable, so rows of one symbol sharing a ts (book
updates of one event) keep their recorded order. Streams produced by `tradesys.data.ticks`, `.orderbook` and
`.synthetic` are already in this order, so record-then-replay returns identical rows. Time windows are
inclusive at both ends (start <= ts <= end), as in `TableSource`.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from tradesys.core.schemas import BAR_SCHEMA, QUOTE_SCHEMA, TRADE_SCHEMA
from tradesys.data.book_schema import BOOK_SCHEMA
from tradesys.data.historical import DateLike, _bound_ns

SCHEMAS: dict[str, pa.Schema] = {"bar": BAR_SCHEMA, "trade": TRADE_SCHEMA, "quote": QUOTE_SCHEMA, "book": BOOK_SCHEMA}
PARTITIONING = ds.partitioning(pa.schema([("date", pa.string()), ("symbol", pa.string())]), flavor="hive")
META_FILE = "_tradesys.json"
_NS_PER_DAY = 86_400 * 10**9


def kind_of(schema: pa.Schema) -> str:
    """The stream kind of a schema: its 'kind' metadata, else the canonical schema whose columns it has."""
    meta = schema.metadata or {}
    kind = meta.get(b"kind", b"").decode()
    if kind in SCHEMAS:
        return kind
    for k, s in SCHEMAS.items():
        if s.names == schema.names:
            return k
    raise ValueError(f"schema: not a known market data schema (columns {schema.names})")


def _conform(t: pa.Table | pa.RecordBatch, schema: pa.Schema, what: str) -> pa.Table:
    """Select and type `schema`'s columns, raising ValueError naming a missing or mistyped one."""
    cols = []
    for f in schema:
        if f.name not in t.schema.names:
            raise ValueError(f"{what}: missing column {f.name!r}")
        col = t.column(f.name)
        if not col.type.equals(f.type):
            try:
                col = col.cast(f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise ValueError(f"{what}: column {f.name!r} has type {col.type}, expected {f.type}") from exc
        cols.append(col)
    if isinstance(t, pa.RecordBatch):
        return pa.Table.from_batches([pa.RecordBatch.from_arrays(cols, schema=schema)])
    return pa.Table.from_arrays(cols, schema=schema)


def _dates(ts: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """UTC calendar date of each ts as 'YYYY-MM-DD' strings."""
    days = np.asarray(ts.cast(pa.int64())) // _NS_PER_DAY
    return np.asarray(days.astype("datetime64[D]").astype(str), dtype=object)


class ParquetRecorder:
    """Append batches of one stream kind to a partitioned dataset; buffers `rows_per_flush` rows per write.

    Use as a context manager (or call `close()`) so the tail is flushed.
    """

    def __init__(self, root: str | Path, kind: str | None = None, rows_per_flush: int = 1_000_000) -> None:
        self.root = Path(root)
        self.kind = kind
        if kind is not None and kind not in SCHEMAS:
            raise ValueError(f"kind: must be one of {sorted(SCHEMAS)} (got {kind!r})")
        if rows_per_flush < 1:
            raise ValueError(f"rows_per_flush: must be >= 1 (got {rows_per_flush!r})")
        self.rows_per_flush = rows_per_flush
        self._buf: list[pa.Table] = []
        self._rows = 0
        self.files: list[Path] = []

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        if self.kind is None:
            self.kind = kind_of(batch.schema)
            self._check_meta()
        elif not self._buf and not self.files:
            self._check_meta()
        self._buf.append(_conform(batch, SCHEMAS[self.kind], f"{self.kind} batch"))
        self._rows += batch.num_rows
        if self._rows >= self.rows_per_flush:
            self.flush()

    def _check_meta(self) -> None:
        meta = self.root / META_FILE
        if meta.exists():
            have = json.loads(meta.read_text())["kind"]
            if have != self.kind:
                raise ValueError(f"kind: {self.root} holds {have!r} data, cannot record {self.kind!r}")
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            meta.write_text(json.dumps({"kind": self.kind, "columns": SCHEMAS[str(self.kind)].names}))

    def flush(self) -> None:
        if not self._rows:
            self._buf.clear()
            return
        table = pa.concat_tables(self._buf).combine_chunks()
        self._buf.clear()
        self._rows = 0
        dates = _dates(table.column("ts"))
        syms = np.asarray(table.column("symbol").to_pylist(), dtype=object)
        keys = np.char.add(np.char.add(dates.astype(str), "\x00"), syms.astype(str))
        order = np.argsort(keys, kind="stable")  # stable: rows keep their order inside a partition
        sorted_keys = keys[order]
        cuts = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1
        stamp = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        for idx in np.split(order, cuts):
            date, sym = str(dates[idx[0]]), str(syms[idx[0]])
            if "/" in sym or sym.startswith((".", "_")) or not sym:
                raise ValueError(f"symbol: {sym!r} cannot name a partition directory")
            part = self.root / f"date={date}" / f"symbol={sym}"
            part.mkdir(parents=True, exist_ok=True)
            path = part / f"part-{stamp}.parquet"
            pq.write_table(table.take(pa.array(idx)).drop_columns(["symbol"]), path)
            self.files.append(path)

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> ParquetRecorder:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def record(
    batches: Iterable[pa.RecordBatch | pa.Table],
    root: str | Path,
    kind: str | None = None,
    rows_per_flush: int = 1_000_000,
) -> list[Path]:
    """Record a stream of batches under `root`; returns the files written."""
    with ParquetRecorder(root, kind, rows_per_flush) as rec:
        for b in batches:
            rec.write(b)
    return rec.files


class ParquetReplay:
    """Replay a recorded dataset as a DataSource-like iterator of record batches in time order.

    `start`/`end` bound ts (inclusive, see `DateLike`); `symbols` keeps only those symbols. Both prune whole
    partitions before any file is opened. Bars replay one batch per timestamp (the `DataSource` contract);
    other kinds replay in chunks of `chunk_seconds` aligned to multiples of it since the epoch (empty chunks
    skipped). Data is read a date partition at a time, so memory is bounded by one day of the selection.
    """

    name = "parquet"

    def __init__(
        self,
        root: str | Path,
        start: DateLike | None = None,
        end: DateLike | None = None,
        symbols: Sequence[str] | None = None,
        chunk_seconds: float = 60.0,
    ) -> None:
        self.root = Path(root)
        meta = self.root / META_FILE
        if not meta.exists():
            raise ValueError(f"root: {self.root} is not a recorded dataset (no {META_FILE})")
        self.kind: str = json.loads(meta.read_text())["kind"]
        self.schema = SCHEMAS[self.kind]
        if isinstance(symbols, str):
            raise ValueError(f"symbols: must be a list of names, not a string (got {symbols!r})")
        if not chunk_seconds > 0:
            raise ValueError(f"chunk_seconds: must be > 0 (got {chunk_seconds!r})")
        self.chunk_ns = round(chunk_seconds * 1e9)
        self._start = None if start is None else _bound_ns(start, is_end=False)
        self._end = None if end is None else _bound_ns(end, is_end=True)
        if self._start is not None and self._end is not None and self._end < self._start:
            raise ValueError("end: must not be before start")
        # an explicit schema: discovery then opens no file, so pruned partitions are never read
        file_fields = [f for f in self.schema if f.name != "symbol"]
        full = pa.schema([*file_fields, pa.field("date", pa.string()), pa.field("symbol", pa.string())])
        self._dataset = ds.dataset(self.root, schema=full, format="parquet", partitioning=PARTITIONING)
        self._symbols = list(symbols) if symbols is not None else None

    # partition-level filter (prunes files) and row-level filter (inside the files)
    def _partition_filter(self, date: str | None = None) -> ds.Expression | None:
        expr: ds.Expression | None = None

        def _and(e: ds.Expression) -> None:
            nonlocal expr
            expr = e if expr is None else expr & e

        if date is not None:
            _and(ds.field("date") == date)
        if self._start is not None:
            _and(ds.field("date") >= str(np.datetime64(self._start // _NS_PER_DAY, "D")))
        if self._end is not None:
            _and(ds.field("date") <= str(np.datetime64(self._end // _NS_PER_DAY, "D")))
        if self._symbols is not None:
            _and(ds.field("symbol").isin(self._symbols))
        return expr

    def fragments(self, date: str | None = None) -> list[ds.ParquetFileFragment]:
        """The files a replay reads (after partition pruning), in (date, symbol, write) order."""
        flt = self._partition_filter(date)
        frags = (
            list(self._dataset.get_fragments(filter=flt)) if flt is not None else list(self._dataset.get_fragments())
        )
        return sorted(frags, key=lambda f: f.path)

    @property
    def symbols(self) -> list[str]:
        if self._symbols is not None:
            return list(self._symbols)
        names = {ds.get_partition_keys(f.partition_expression)["symbol"] for f in self.fragments()}
        return sorted(names)

    def dates(self) -> list[str]:
        return sorted({ds.get_partition_keys(f.partition_expression)["date"] for f in self.fragments()})

    def _read_date(self, date: str) -> pa.Table:
        row_flt: ds.Expression | None = None
        ts = ds.field("ts")
        if self._start is not None:
            row_flt = ts >= pa.scalar(self._start, pa.int64()).cast(self.schema.field("ts").type)
        if self._end is not None:
            e = ts <= pa.scalar(self._end, pa.int64()).cast(self.schema.field("ts").type)
            row_flt = e if row_flt is None else row_flt & e
        parts = []
        for frag in self.fragments(date):
            sym = ds.get_partition_keys(frag.partition_expression)["symbol"]
            t = frag.to_table(filter=row_flt) if row_flt is not None else frag.to_table()
            t = t.append_column("symbol", pa.array([sym] * t.num_rows, pa.string()))
            parts.append(_conform(t, self.schema, f"{self.kind} file {frag.path}"))
        if not parts:
            return self.schema.empty_table()
        table = pa.concat_tables(parts)
        idx = pc.sort_indices(table, sort_keys=[("ts", "ascending"), ("symbol", "ascending")])  # stable
        return table.take(idx).combine_chunks()

    def tables(self) -> Iterator[pa.Table]:
        """One table per date partition, canonical order."""
        for date in self.dates():
            t = self._read_date(date)
            if t.num_rows:
                yield t

    def table(self) -> pa.Table:
        """The whole selection as one table (canonical order)."""
        parts = list(self.tables())
        return pa.concat_tables(parts) if parts else self.schema.empty_table()

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Bars: one batch per timestamp. Other kinds: one batch per non-empty `chunk_seconds` window."""
        for t in self.tables():
            ts = np.asarray(t.column("ts").cast(pa.int64()))
            if self.kind == "bar":
                cuts = np.flatnonzero(np.diff(ts)) + 1
            else:
                bucket = ts // self.chunk_ns
                cuts = np.flatnonzero(np.diff(bucket)) + 1
            bounds = np.concatenate([[0], cuts, [len(ts)]])
            (batch,) = t.combine_chunks().to_batches()
            for a, b in itertools.pairwise(bounds):
                yield batch.slice(int(a), int(b - a))

    def __len__(self) -> int:
        """Number of batches `batches()` yields (reads only the ts column)."""
        n = 0
        for date in self.dates():
            ts_parts = []
            for frag in self.fragments(date):
                ts_parts.append(np.asarray(frag.to_table(columns=["ts"]).column("ts").cast(pa.int64())))
            ts = np.concatenate(ts_parts) if ts_parts else np.empty(0, np.int64)
            if self._start is not None:
                ts = ts[ts >= self._start]
            if self._end is not None:
                ts = ts[ts <= self._end]
            n += len(np.unique(ts if self.kind == "bar" else ts // self.chunk_ns))
        return n
