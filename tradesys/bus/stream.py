"""Stateful stream processing on trade/quote batches: tumbling-window bars and an as-of quote join.

Conventions: timestamps are int ns UTC (TRADE_SCHEMA/QUOTE_SCHEMA ``ts``); a bar is labelled by its window START
(pandas ``resample`` default, left-closed ``[start, start + window)``); open/close are the prices of the earliest
and latest trade by ``ts`` (ties: arrival order); vwap = sum(price*size) / sum(size).

Late and out-of-order data follow one explicit policy. The watermark is ``max ts seen - allowed_lateness``;
a window closes (is emitted) once the watermark reaches its end; a record whose window has closed is *late*:
- ``watermark``: out-of-order records within ``allowed_lateness`` are folded in before the window closes;
  records later than that are dropped and counted (``stats.late_dropped``).
- ``drop``: no lateness allowance (windows close as soon as a later window starts): late records are dropped
  and counted. Lowest latency.
- ``correct``: closed windows are kept for ``retention``; a late record updates its window, which is re-emitted
  with ``revision`` + 1 (``stats.corrections``); records older than the retention are dropped and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from tradesys.core.schemas import TS_TYPE

LatePolicy = Literal["watermark", "drop", "correct"]

STREAM_BAR_SCHEMA = pa.schema(
    [
        pa.field("ts", TS_TYPE, nullable=False),
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("open", pa.float64()),
        pa.field("high", pa.float64()),
        pa.field("low", pa.float64()),
        pa.field("close", pa.float64()),
        pa.field("volume", pa.float64()),
        pa.field("vwap", pa.float64()),
        pa.field("trade_count", pa.int64()),
        pa.field("revision", pa.int32()),
    ],
    metadata={"kind": "bar"},
)


def _ns(x: pd.Timedelta | str | int) -> int:
    return int(x) if isinstance(x, int | np.integer) else int(pd.Timedelta(x).value)


@dataclass
class StreamStats:
    records_in: int = 0
    late_dropped: int = 0
    corrections: int = 0
    windows_emitted: int = 0


# state vector per (symbol, window start)
_FT, _FS, _OPEN, _LT, _LS, _CLOSE, _HIGH, _LOW, _VOL, _NOTIONAL, _COUNT, _REV = range(12)


class TumblingBars:
    """OHLCV + VWAP + trade count per symbol in tumbling windows, fed trade batches in arrival order."""

    def __init__(
        self,
        window: pd.Timedelta | str | int,
        policy: LatePolicy = "watermark",
        allowed_lateness: pd.Timedelta | str | int = 0,
        retention: pd.Timedelta | str | int | None = None,
    ) -> None:
        if policy not in ("watermark", "drop", "correct"):
            raise ValueError(f"policy: must be 'watermark', 'drop' or 'correct', got {policy!r}")
        self.window = _ns(window)
        if self.window <= 0:
            raise ValueError(f"window: must be positive, got {window!r}")
        self.lateness = _ns(allowed_lateness)
        if self.lateness < 0:
            raise ValueError(f"allowed_lateness: must be >= 0, got {allowed_lateness!r}")
        if policy == "drop" and self.lateness:
            raise ValueError("allowed_lateness: must be 0 with policy 'drop'")
        self.retention = _ns(retention) if retention is not None else 10 * self.window
        self.policy = policy
        self.stats = StreamStats()
        self.max_ts: int | None = None
        self._seq = 0
        self._open: dict[tuple[str, int], list[float]] = {}
        self._closed: dict[tuple[str, int], list[float]] = {}

    @property
    def watermark(self) -> int | None:
        return None if self.max_ts is None else self.max_ts - self.lateness

    def update(self, trades: pa.RecordBatch | pa.Table) -> pa.Table:
        """Fold in a batch of trades; return the bars closed or corrected by it (sorted by ts, symbol)."""
        n = trades.num_rows
        if n == 0:
            return STREAM_BAR_SCHEMA.empty_table()
        ts = np.asarray(trades.column("ts").cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
        price = np.asarray(trades.column("price").to_numpy(zero_copy_only=False), dtype=np.float64)
        size = np.asarray(trades.column("size").to_numpy(zero_copy_only=False), dtype=np.float64)
        sym = np.asarray(trades.column("symbol").to_pylist(), dtype=object)
        seq = np.arange(self._seq, self._seq + n)
        self._seq += n
        self.stats.records_in += n
        # watermark in force when each row arrives: from everything before it, this batch included
        prev = np.maximum.accumulate(ts)
        before = np.empty(n, dtype=np.int64)
        before[0] = self.max_ts if self.max_ts is not None else np.iinfo(np.int64).min + self.lateness
        if n > 1:
            before[1:] = prev[:-1] if self.max_ts is None else np.maximum(prev[:-1], self.max_ts)
        wstart = ts - np.mod(ts, self.window)
        late = wstart + self.window <= before - self.lateness
        out: list[list[object]] = []
        if (~late).any():
            for key, part in self._partials(ts, seq, price, size, sym, wstart, ~late).items():
                self._merge(self._open, key, part)
        if late.any():
            if self.policy == "correct":
                horizon = int(before[late].max()) - self.lateness - self.retention
                for key, part in self._partials(ts, seq, price, size, sym, wstart, late).items():
                    if key[1] + self.window <= horizon:
                        self.stats.late_dropped += int(part[_COUNT])
                        continue
                    state = self._merge(self._closed, key, part)
                    state[_REV] += 1
                    self.stats.corrections += 1
                    out.append(self._row(key, state))
            else:
                self.stats.late_dropped += int(late.sum())
        self.max_ts = int(prev[-1]) if self.max_ts is None else max(self.max_ts, int(prev[-1]))
        wm = self.max_ts - self.lateness
        out.extend(self._close(lambda k: k[1] + self.window <= wm))
        if self.policy == "correct":
            for k in [k for k in self._closed if k[1] + self.window <= wm - self.retention]:
                del self._closed[k]
        return self._table(out)

    def flush(self) -> pa.Table:
        """End of stream: close every open window."""
        return self._table(self._close(lambda k: True))

    def _close(self, done: object) -> list[list[object]]:
        keys = [k for k in self._open if done(k)]  # type: ignore[operator]
        rows = []
        for k in keys:
            state = self._open.pop(k)
            rows.append(self._row(k, state))
            if self.policy == "correct":
                self._closed[k] = state
        return rows

    def _partials(
        self,
        ts: np.ndarray,
        seq: np.ndarray,
        price: np.ndarray,
        size: np.ndarray,
        sym: np.ndarray,
        wstart: np.ndarray,
        mask: np.ndarray,
    ) -> dict[tuple[str, int], list[float]]:
        df = pd.DataFrame(
            {"ts": ts[mask], "seq": seq[mask], "p": price[mask], "s": size[mask], "sym": sym[mask], "w": wstart[mask]}
        )
        df["n"] = df["p"] * df["s"]
        df = df.sort_values(["ts", "seq"], kind="stable")
        g = df.groupby(["sym", "w"], sort=False)
        agg = g.agg(
            ft=("ts", "first"),
            fs=("seq", "first"),
            o=("p", "first"),
            lt=("ts", "last"),
            ls=("seq", "last"),
            c=("p", "last"),
            h=("p", "max"),
            lo=("p", "min"),
            v=("s", "sum"),
            nt=("n", "sum"),
            k=("p", "size"),
        )
        return {
            (str(s), int(w)): [*map(float, row), 0.0] for (s, w), row in zip(agg.index, agg.to_numpy(), strict=True)
        }

    @staticmethod
    def _merge(states: dict[tuple[str, int], list[float]], key: tuple[str, int], part: list[float]) -> list[float]:
        old = states.get(key)
        if old is None:
            states[key] = part
            return part
        if (part[_FT], part[_FS]) < (old[_FT], old[_FS]):
            old[_FT], old[_FS], old[_OPEN] = part[_FT], part[_FS], part[_OPEN]
        if (part[_LT], part[_LS]) > (old[_LT], old[_LS]):
            old[_LT], old[_LS], old[_CLOSE] = part[_LT], part[_LS], part[_CLOSE]
        old[_HIGH] = max(old[_HIGH], part[_HIGH])
        old[_LOW] = min(old[_LOW], part[_LOW])
        old[_VOL] += part[_VOL]
        old[_NOTIONAL] += part[_NOTIONAL]
        old[_COUNT] += part[_COUNT]
        return old

    def _row(self, key: tuple[str, int], s: list[float]) -> list[object]:
        self.stats.windows_emitted += 1
        vwap = s[_NOTIONAL] / s[_VOL] if s[_VOL] > 0 else float("nan")
        return [key[1], key[0], s[_OPEN], s[_HIGH], s[_LOW], s[_CLOSE], s[_VOL], vwap, int(s[_COUNT]), int(s[_REV])]

    @staticmethod
    def _table(rows: list[list[object]]) -> pa.Table:
        if not rows:
            return STREAM_BAR_SCHEMA.empty_table()
        rows.sort(key=lambda r: (r[0], r[1], r[9]))
        cols = list(zip(*rows, strict=True))
        arrays = [pa.array(cols[0], pa.int64()).cast(TS_TYPE)]
        arrays += [pa.array(c, f.type) for c, f in zip(cols[1:], list(STREAM_BAR_SCHEMA)[1:], strict=True)]
        return pa.Table.from_arrays(arrays, schema=STREAM_BAR_SCHEMA)


QUOTE_COLS = ("bid", "ask", "bid_size", "ask_size")


class AsofJoin:
    """Joins each trade to the latest quote of its symbol with ``quote.ts <= trade.ts`` (``merge_asof`` backward).

    The quote stream is assumed to arrive in time order; a trade is released only once the quote stream has
    reached its time (quote watermark >= trade ts), so a quote still in flight can never be missed and a quote
    from the future can never be used (no look-ahead). ``flush`` releases the rest at end of stream.
    """

    def __init__(self, tolerance: pd.Timedelta | str | int | None = None) -> None:
        self.tolerance = None if tolerance is None else _ns(tolerance)
        self._q: dict[str, list[np.ndarray]] = {}  # symbol -> [ts int64 ns (sorted), quote values]
        self._qwm: int | None = None
        self._pending: list[pa.Table] = []

    def on_quotes(self, quotes: pa.RecordBatch | pa.Table) -> pa.Table | None:
        if quotes.num_rows == 0:
            return None
        qt = pa.table(quotes)
        ts = qt.column("ts").cast(pa.int64()).to_numpy()
        df = qt.to_pandas().assign(_ts=ts)
        for s, g in df.groupby("symbol", sort=False):
            nts, nv = g["_ts"].to_numpy(np.int64), g[list(QUOTE_COLS)].to_numpy(np.float64)
            hist = self._q.get(str(s))
            if hist is not None:
                nts, nv = np.concatenate([hist[0], nts]), np.vstack([hist[1], nv])
            order = np.argsort(nts, kind="stable")
            self._q[str(s)] = [nts[order], nv[order]]
        self._qwm = int(ts.max()) if self._qwm is None else max(self._qwm, int(ts.max()))
        return self._release(final=False)

    def on_trades(self, trades: pa.RecordBatch | pa.Table) -> pa.Table | None:
        if trades.num_rows:
            self._pending.append(pa.table(trades))
        return self._release(final=False)

    def flush(self) -> pa.Table | None:
        return self._release(final=True)

    def _release(self, final: bool) -> pa.Table | None:
        if not self._pending:
            return None
        tab = pa.concat_tables(self._pending)
        tts = tab.column("ts").cast(pa.int64()).to_numpy()
        tr = tab.to_pandas()
        ready = np.ones(len(tr), bool) if final else (tts <= (self._qwm if self._qwm is not None else -(2**62)))
        self._pending = [tab.filter(pa.array(~ready))] if not ready.all() else []
        out = tr[ready].copy()
        if out.empty:
            return None
        t = tts[ready]
        vals = np.full((len(out), len(QUOTE_COLS)), np.nan)
        qts = np.full(len(out), np.iinfo(np.int64).min)  # NaT
        syms = out["symbol"].to_numpy()
        for s in pd.unique(syms):
            hist = self._q.get(str(s))
            if hist is None:
                continue
            qt, qv = hist
            rows = np.flatnonzero(syms == s)
            idx = np.searchsorted(qt, t[rows], side="right") - 1  # last quote with ts <= trade ts
            ok = idx >= 0
            if self.tolerance is not None:
                ok &= t[rows] - qt[np.maximum(idx, 0)] <= self.tolerance
            vals[rows[ok]] = qv[idx[ok]]
            qts[rows[ok]] = qt[idx[ok]]
        for j, c in enumerate(QUOTE_COLS):
            out[c] = vals[:, j]
        out["quote_ts"] = pd.to_datetime(qts.view("M8[ns]"), utc=True)
        return pa.Table.from_pandas(out, preserve_index=False)
