"""Market data sources: anything that yields bar batches, one Arrow record batch per time step.

Every source yields batches in the canonical `BAR_SCHEMA` (tradesys.core.schemas), strictly increasing in
time, each batch holding all symbols that traded at that timestamp. The live loop and the backtester both
pull from the same interface; `Replay` paces a source in wall-clock time for a live-like feed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import pyarrow as pa


@runtime_checkable
class DataSource(Protocol):
    name: str

    @property
    def symbols(self) -> list[str]: ...

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Yield one bar batch per timestamp, in time order; a fresh iterator on each call."""
        ...

    def __len__(self) -> int:
        """Number of time steps."""
        ...


class AlpacaLiveSource:
    """Live one-minute bars from Alpaca's stock data stream (`tradesys.data.alpaca.LiveBars`), one batch per bar
    timestamp across the symbols: `data.source = "alpaca"`.

    Alpaca sends each symbol's bar as its own message, so a timestamp's batch is handed out once it is complete:
    every symbol has a bar for it, or a later bar has arrived (the feed is in time order), or nothing has arrived
    for `grace_s` seconds (a symbol that did not trade that minute has no bar). A bar at or before a timestamp
    already handed out is dropped (counted in `late`). The iteration ends after `idle_timeout_s` without any bar.
    The length of a live feed is unknown: `len()` is 0 and `timestamps` is empty, so nothing counts steps by
    reading the stream. Credentials come from the environment (APCA_API_KEY_ID, APCA_API_SECRET_KEY).
    """

    name = "alpaca"

    def __init__(
        self,
        symbols: list[str],
        feed: str = "iex",
        stream_url: str | None = None,
        idle_timeout_s: float = 60.0,
        grace_s: float = 1.0,
    ) -> None:
        import numpy as np

        if not symbols:
            raise ValueError("data.symbols: required with data.source = 'alpaca'")
        self._symbols = list(dict.fromkeys(symbols))
        self.feed, self.stream_url = feed, stream_url
        self.idle_timeout_s, self.grace_s = idle_timeout_s, grace_s
        self.timestamps = np.empty(0, np.int64)
        self.late = 0

    @property
    def symbols(self) -> list[str]:
        return list(self._symbols)

    def __len__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return f"AlpacaLiveSource(symbols={self._symbols!r}, feed={self.feed!r}, credentials=<env>)"

    def batches(self) -> Iterator[pa.RecordBatch]:
        import queue
        import time

        from tradesys.data.alpaca import AlpacaMarketData

        live = AlpacaMarketData(self.feed, stream_url=self.stream_url).live_bars(self._symbols)
        want = set(self._symbols)
        buf: dict[int, dict[str, pa.RecordBatch]] = {}
        done = -1
        last = time.monotonic()
        try:
            while True:
                try:
                    batch = live.get(timeout=max(min(self.grace_s, self.idle_timeout_s), 0.01))
                except queue.Empty:
                    quiet = time.monotonic() - last
                    if buf and (quiet >= self.grace_s or quiet >= self.idle_timeout_s):
                        for ts in sorted(buf):
                            yield _merge(buf.pop(ts))
                            done = ts
                    if quiet >= self.idle_timeout_s:
                        return
                    continue
                last = time.monotonic()
                stamps = batch.column("ts").cast(pa.int64()).to_pylist()
                for i, (ts, sym) in enumerate(zip(stamps, batch.column("symbol").to_pylist(), strict=True)):
                    if sym not in want:
                        continue
                    if ts <= done:
                        self.late += 1
                        continue
                    buf.setdefault(ts, {})[sym] = batch.slice(i, 1)
                newest = max(buf, default=-1)
                for ts in sorted(buf):
                    if ts < newest or set(buf[ts]) >= want:
                        yield _merge(buf.pop(ts))
                        done = ts
                    else:
                        break
        finally:
            live.stop()


def _merge(rows: dict[str, pa.RecordBatch]) -> pa.RecordBatch:
    """One timestamp's per-symbol rows as one batch, symbols in sorted order."""
    table = pa.Table.from_batches([rows[s] for s in sorted(rows)])
    return table.combine_chunks().to_batches()[0]
