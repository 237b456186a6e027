"""Table-backed bar sources, and the real daily data shipped inside installed packages.

Every source here holds one Arrow table in `BAR_SCHEMA`, sorted by (ts, symbol), built once from whole
columns; `batches()` then hands out zero-copy slices at the timestamp boundaries. Building batches row by
row would cost far more than the trading step that consumes them.

`TableSource` and `bars_table` are shared with the synthetic source (tradesys.data.synthetic).

Real data (no network; the files ship with the packages):

* `UsIndicesSource`: the S&P 500 and NASDAQ Composite daily bars in `arch` (1999-2018).
* `Sp500StocksSource`: 20 S&P 500 stocks' adjusted daily closes in `skfolio` (1990-2022). Close-only data:
  open is the previous close, high/low the max/min of open and close, and volume is NaN. **NaN volume means
  "volume unknown"**: the simulated broker applies no participation cap to such a bar.

Daily bars are stamped at 21:00 UTC of their date (the US cash close, 16:00 New York in winter; a fixed
convention, not adjusted for daylight saving).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, time
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tradesys.core.schemas import BAR_SCHEMA, TS_TYPE

DateLike = date | datetime | str | int
"""A window bound: a date (whole day, inclusive), a datetime or ISO string (naive = UTC), or int ns."""

US_CLOSE_UTC = time(21, 0)
_NS_PER_DAY = 86_400 * 10**9
_BAR_COLUMNS = tuple(BAR_SCHEMA.names)


# ---------------------------------------------------------------------------------------------------------
# Building bar tables


def _ts_to_ns(values: Any) -> np.ndarray:
    """Timestamps in any common form -> int64 ns since epoch, UTC. Naive datetimes are taken as UTC."""
    if isinstance(values, pa.ChunkedArray | pa.Array):
        if pa.types.is_timestamp(values.type):  # stored values are UTC whatever the tz
            ns = pc.cast(values, pa.timestamp("ns", values.type.tz))
            return np.asarray(pc.cast(ns, pa.int64()), dtype=np.int64)
        values = values.to_numpy(zero_copy_only=False)
    if isinstance(values, pd.Series | pd.Index) and isinstance(values.dtype, pd.DatetimeTZDtype):
        return np.asarray(pd.DatetimeIndex(values).tz_convert("UTC").asi8, dtype=np.int64)
    arr = np.asarray(values)
    if np.issubdtype(arr.dtype, np.datetime64):
        return arr.astype("datetime64[ns]").view(np.int64)
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64, copy=False)
    raise TypeError(f"bars: ts must be datetime64 or int64 nanoseconds, got dtype {arr.dtype}")


def _finish(table: pa.Table) -> pa.Table:
    """Sort by (ts, symbol), make one contiguous chunk, and reject duplicate (ts, symbol) rows."""
    table = table.sort_by([("ts", "ascending"), ("symbol", "ascending")]).combine_chunks()
    if table.num_rows > 1:
        ts = np.asarray(pc.cast(table.column("ts"), pa.int64()), dtype=np.int64)
        sym = table.column("symbol")
        same_ts = ts[1:] == ts[:-1]
        if same_ts.any():
            same_sym = np.asarray(pc.equal(sym.slice(1), sym.slice(0, table.num_rows - 1)), dtype=bool)
            dup = np.flatnonzero(same_ts & same_sym)
            if dup.size:
                i = int(dup[0]) + 1
                when = pd.Timestamp(int(ts[i]), tz="UTC")
                raise ValueError(f"bars: duplicate row for symbol {sym[i].as_py()!r} at {when}")
    return table


def bars_table(bars: pd.DataFrame | Mapping[str, Any]) -> pa.Table:
    """One Arrow table in BAR_SCHEMA from a long frame or a mapping of equal-length columns.

    Columns: ts, symbol, open, high, low, close, volume. `ts` may be tz-aware or naive (= UTC) datetimes or
    int64 nanoseconds. The result is sorted by (ts, symbol) in a single chunk; duplicate (ts, symbol) rows
    or null ts/symbol raise ValueError. Float NaN stays NaN (for volume it means "unknown").
    """
    missing = [c for c in _BAR_COLUMNS if c not in bars]
    if missing:
        raise ValueError(f"bars: missing column(s) {missing}")
    ts = _ts_to_ns(bars["ts"])
    symbol = bars["symbol"]
    sym_arr = symbol if isinstance(symbol, pa.Array | pa.ChunkedArray) else pa.array(np.asarray(symbol, object))
    if sym_arr.null_count:
        raise ValueError("bars: symbol has null values")
    sym_arr = pc.cast(sym_arr, pa.string())
    if isinstance(sym_arr, pa.ChunkedArray):
        sym_arr = sym_arr.combine_chunks()
    arrays: list[pa.Array] = [pa.array(ts, type=TS_TYPE), sym_arr]
    for col in _BAR_COLUMNS[2:]:
        arrays.append(pa.array(np.asarray(bars[col], dtype=np.float64), type=pa.float64()))
    lengths = {len(a) for a in arrays}
    if len(lengths) != 1:
        raise ValueError(f"bars: columns have different lengths {sorted(lengths)}")
    return _finish(pa.Table.from_arrays(arrays, schema=BAR_SCHEMA))


def _conform(table: pa.Table) -> pa.Table:
    """Any table carrying the bar columns -> exactly BAR_SCHEMA, sorted, single chunk."""
    missing = [c for c in _BAR_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"bars: missing column(s) {missing}")
    table = table.select(list(_BAR_COLUMNS))
    if not table.schema.equals(BAR_SCHEMA, check_metadata=True):
        if table.column("ts").null_count or table.column("symbol").null_count:
            raise ValueError("bars: ts or symbol has null values")
        table = table.cast(BAR_SCHEMA)
    return _finish(table)


# ---------------------------------------------------------------------------------------------------------
# Window bounds


def _bound_ns(value: DateLike, *, is_end: bool) -> int:
    """A window bound in ns. A bare date covers that whole UTC day, so `end=date(2018, 12, 31)` keeps the
    21:00 UTC bar of that day."""
    if isinstance(value, bool):
        raise TypeError(f"window bound must be a date, datetime, ISO string or int ns, got {value!r}")
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, str):
        try:
            value = date.fromisoformat(value) if len(value) == 10 else datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"window bound {value!r}: not an ISO date or datetime") from exc
    if isinstance(value, datetime):
        stamp = pd.Timestamp(value)
        stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
        return int(stamp.value)
    if isinstance(value, date):
        start = int(pd.Timestamp(datetime.combine(value, time(0), tzinfo=UTC)).value)
        return start + _NS_PER_DAY - 1 if is_end else start
    raise TypeError(f"window bound must be a date, datetime, ISO string or int ns, got {value!r}")


def _fmt_ns(ns: int) -> str:
    return str(pd.Timestamp(ns, tz="UTC"))


# ---------------------------------------------------------------------------------------------------------
# The base source


class TableSource:
    """A DataSource over one in-memory bar table. Batches are zero-copy slices of a single record batch.

    `symbols` subsets the table (unknown names raise ValueError naming them); `start`/`end` keep the bars
    with start <= ts <= end (see `DateLike`). `symbols` reports the requested universe in the order given,
    or every symbol of the table, sorted, even if some have no bar inside the window.
    """

    name: str = "table"

    def __init__(
        self,
        table: pa.Table,
        *,
        name: str | None = None,
        symbols: Sequence[str] | None = None,
        start: DateLike | None = None,
        end: DateLike | None = None,
    ) -> None:
        if name is not None:
            self.name = name
        table = _conform(table)
        available = sorted(set(table.column("symbol").unique().to_pylist()))
        if symbols is not None:
            if isinstance(symbols, str):
                raise TypeError(f"{self.name}: symbols must be a list of names, got the string {symbols!r}")
            wanted = list(dict.fromkeys(symbols))
            if not wanted:
                raise ValueError(f"{self.name}: symbols is empty")
            unknown = [s for s in wanted if s not in set(available)]
            if unknown:
                raise ValueError(f"{self.name}: unknown symbol(s) {unknown}; available: {available}")
            if len(wanted) < len(available):
                table = table.filter(pc.is_in(table.column("symbol"), value_set=pa.array(wanted, pa.string())))
                table = table.combine_chunks()
            self._symbols = wanted
        else:
            self._symbols = available

        ts = np.asarray(pc.cast(table.column("ts"), pa.int64()), dtype=np.int64)
        if start is not None or end is not None:
            lo = _bound_ns(start, is_end=False) if start is not None else np.iinfo(np.int64).min
            hi = _bound_ns(end, is_end=True) if end is not None else np.iinfo(np.int64).max
            if lo > hi:
                raise ValueError(f"{self.name}: start ({start}) is after end ({end})")
            i, j = int(np.searchsorted(ts, lo, "left")), int(np.searchsorted(ts, hi, "right"))
            if i >= j and len(ts):
                raise ValueError(
                    f"{self.name}: no bars between {start} and {end}; "
                    f"the data covers {_fmt_ns(int(ts[0]))} .. {_fmt_ns(int(ts[-1]))}"
                )
            if (i, j) != (0, len(ts)):
                # copy the window out: a slice would keep (and pickle, e.g. to a Ray actor) the whole table
                table, ts = table.take(pa.array(np.arange(i, j))).combine_chunks(), ts[i:j]

        self._table = table
        self._batch = self._single_batch(table)
        cuts = np.flatnonzero(ts[1:] != ts[:-1]) + 1
        self._starts = np.concatenate(([0], cuts)).astype(np.int64) if len(ts) else np.zeros(0, np.int64)
        self._stops = np.concatenate((cuts, [len(ts)])).astype(np.int64) if len(ts) else np.zeros(0, np.int64)
        self._ts = ts[self._starts] if len(ts) else np.zeros(0, np.int64)
        self._ts.flags.writeable = False

    # -- DataSource -------------------------------------------------------------------------------------
    @property
    def symbols(self) -> list[str]:
        return list(self._symbols)

    def __len__(self) -> int:
        return len(self._ts)

    def batches(self) -> Iterator[pa.RecordBatch]:
        """One zero-copy batch per timestamp, in time order; a fresh iterator on each call."""
        return self._iter_from(0)

    # -- extras -----------------------------------------------------------------------------------------
    @property
    def table(self) -> pa.Table:
        """All bars (after the symbol and window filters), sorted by (ts, symbol)."""
        return self._table

    @property
    def timestamps(self) -> np.ndarray:
        """The distinct bar timestamps, int64 ns UTC, increasing (read-only)."""
        return self._ts

    def batches_after(self, ts_ns: int) -> Iterator[pa.RecordBatch]:
        """The batches with ts > ts_ns: a restarted consumer resumes without re-reading what it saw."""
        return self._iter_from(int(np.searchsorted(self._ts, ts_ns, "right")))

    @staticmethod
    def _single_batch(table: pa.Table) -> pa.RecordBatch:
        batches = table.to_batches()  # one chunk (see _finish), or none when empty
        return batches[0] if batches else pa.RecordBatch.from_pylist([], schema=BAR_SCHEMA)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle (e.g. to a Ray actor) without a second copy of the data: the batch views the table."""
        state = self.__dict__.copy()
        del state["_batch"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._batch = self._single_batch(self._table)

    def _iter_from(self, k: int) -> Iterator[pa.RecordBatch]:
        batch, starts, stops = self._batch, self._starts, self._stops
        for i in range(k, len(starts)):
            s = int(starts[i])
            yield batch.slice(s, int(stops[i]) - s)

    def __repr__(self) -> str:
        span = f"{_fmt_ns(int(self._ts[0]))} .. {_fmt_ns(int(self._ts[-1]))}" if len(self._ts) else "empty"
        return f"{type(self).__name__}(name={self.name!r}, symbols={len(self._symbols)}, steps={len(self)}, {span})"


# ---------------------------------------------------------------------------------------------------------
# Packaged real data


def _close_stamps(index: pd.Index) -> np.ndarray:
    """Daily dates -> int64 ns at 21:00 UTC of each date."""
    days = pd.DatetimeIndex(index).normalize()
    if days.tz is not None:
        days = days.tz_localize(None)
    offset = (US_CLOSE_UTC.hour * 3600 + US_CLOSE_UTC.minute * 60) * 10**9
    return days.asi8.astype(np.int64) + offset


@functools.cache
def load_us_indices_frames() -> dict[str, pd.DataFrame]:
    """The arch daily index frames, by our symbol (loaded once per process; do not mutate)."""
    from arch.data import nasdaq, sp500

    return {"SP500": sp500.load(), "NASDAQ": nasdaq.load()}


@functools.cache
def load_sp500_closes() -> pd.DataFrame:
    """skfolio's adjusted closes of 20 S&P 500 stocks, one column per symbol (cached; do not mutate)."""
    from skfolio.datasets import load_sp500_dataset

    return load_sp500_dataset()


def us_indices_table(frames: Mapping[str, pd.DataFrame]) -> pa.Table:
    """arch-style OHLC/Adj Close/Volume frames -> adjusted bars.

    Open/High/Low are scaled by Adj Close / Close so that the whole bar is on the adjusted scale; high/low
    are then widened to cover open and close, which only guards against one-ulp rounding of that scaling.
    A volume of 0 on a major index is a data error (two NASDAQ days in arch) and becomes NaN, "unknown":
    left at 0, it would forbid any fill on that bar under a participation cap.
    """
    cols: dict[str, list[np.ndarray]] = {c: [] for c in _BAR_COLUMNS}
    for sym, f in frames.items():
        ratio = f["Adj Close"].to_numpy(np.float64) / f["Close"].to_numpy(np.float64)
        close = f["Adj Close"].to_numpy(np.float64)
        open_ = f["Open"].to_numpy(np.float64) * ratio
        high = np.maximum.reduce([f["High"].to_numpy(np.float64) * ratio, open_, close])
        low = np.minimum.reduce([f["Low"].to_numpy(np.float64) * ratio, open_, close])
        volume = f["Volume"].to_numpy(np.float64)
        volume = np.where(volume > 0, volume, np.nan)
        cols["ts"].append(_close_stamps(f.index))
        cols["symbol"].append(np.full(len(f), sym, dtype=object))
        for name, arr in (("open", open_), ("high", high), ("low", low), ("close", close), ("volume", volume)):
            cols[name].append(arr)
    return bars_table({k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()})


def bars_from_closes(closes: pd.DataFrame) -> pa.Table:
    """Wide close prices (dates x symbols) -> bars for close-only data.

    Per symbol, NaN prices are dropped (a batch holds only symbols that traded); open is that symbol's
    previous traded close (its own close on its first day), high/low are max/min(open, close), and volume is
    NaN ("unknown").
    """
    values = closes.to_numpy(np.float64)
    traded = ~np.isnan(values)
    prev = closes.ffill().shift(1).to_numpy(np.float64)  # previous *traded* close per symbol
    open_ = np.where(np.isnan(prev), values, prev)
    mask = traded.ravel()
    n_dates, n_syms = values.shape
    stamps = _close_stamps(closes.index)
    close = values.ravel()[mask]
    open_ = open_.ravel()[mask]
    return bars_table(
        {
            "ts": np.repeat(stamps, n_syms)[mask],
            "symbol": np.tile(np.asarray([str(c) for c in closes.columns], dtype=object), n_dates)[mask],
            "open": open_,
            "high": np.maximum(open_, close),
            "low": np.minimum(open_, close),
            "close": close,
            "volume": np.full(close.shape, np.nan),
        }
    )


@functools.cache
def _us_indices_table() -> pa.Table:
    return us_indices_table(load_us_indices_frames())


@functools.cache
def _sp500_table() -> pa.Table:
    return bars_from_closes(load_sp500_closes())


class UsIndicesSource(TableSource):
    """Daily S&P 500 ("SP500") and NASDAQ Composite ("NASDAQ") bars, 1999-2018, from `arch`; real volume."""

    name = "us_indices"

    def __init__(
        self,
        symbols: Sequence[str] | None = None,
        start: DateLike | None = None,
        end: DateLike | None = None,
    ) -> None:
        super().__init__(_us_indices_table(), symbols=symbols, start=start, end=end)


class Sp500StocksSource(TableSource):
    """Daily bars of 20 S&P 500 stocks, 1990-2022, from `skfolio`'s adjusted closes.

    Close-only: see `bars_from_closes`. Volume is NaN, meaning "unknown": no participation cap applies.
    """

    name = "sp500_stocks"

    def __init__(
        self,
        symbols: Sequence[str] | None = None,
        start: DateLike | None = None,
        end: DateLike | None = None,
    ) -> None:
        super().__init__(_sp500_table(), symbols=symbols, start=start, end=end)
