"""Wall-clock pacing of a bar source, and a resumable cursor over it.

`Replay` turns any DataSource into a live-like feed: `speed` bars per second (0 = as fast as possible).
Pacing is by schedule, not by a fixed sleep per bar: the time the consumer spends between bars is deducted
from the next wait, so a 10 bars/s replay stays at 10 bars/s whatever the step costs, as long as the step is
faster than the bar interval. A consumer that falls behind is not followed by a catch-up burst: the schedule
restarts from the late bar.

`ReplayCursor` remembers the last timestamp handed out. A restarted MarketData actor builds a new cursor (or
calls `Replay.resume_after`) with the last timestamp the system processed and carries on from the next bar,
never re-delivering one it already saw. The clock and sleep are injectable so tests need not wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa

from tradesys.core.schemas import batch_ts
from tradesys.data.source import DataSource

__all__ = ["Replay", "ReplayCursor", "batch_ts"]


def _batches_after(source: DataSource, after_ns: int | None) -> Iterator[pa.RecordBatch]:
    """The source's non-empty batches with ts > after_ns (all when None). Table sources seek directly."""
    if after_ns is None:
        return (b for b in source.batches() if b.num_rows)
    seek = getattr(source, "batches_after", None)
    if callable(seek):
        return (b for b in seek(after_ns) if b.num_rows)
    return (b for b in source.batches() if b.num_rows and batch_ts(b) > after_ns)


def steps_after(source: DataSource, after_ns: int | None) -> int:
    """How many time steps remain after `after_ns`, without pacing (and without reading data, if it can)."""
    if after_ns is None:
        return len(source)
    stamps = getattr(source, "timestamps", None)
    if isinstance(stamps, np.ndarray):
        return len(stamps) - int(np.searchsorted(stamps, after_ns, "right"))
    return sum(1 for _ in _batches_after(source, after_ns))


class ReplayCursor:
    """A position in a source: hands out the batches after `last_ts` one at a time, in order.

    The cursor's state is just `last_ts` (int ns, None before the first bar); persist it to resume later.
    """

    def __init__(self, source: DataSource, last_ts: int | None = None) -> None:
        self.source = source
        self.last_ts = last_ts
        self._it: Iterator[pa.RecordBatch] | None = None

    def next_batch(self) -> pa.RecordBatch | None:
        """The next batch, or None at the end of the data."""
        if self._it is None:
            self._it = _batches_after(self.source, self.last_ts)
        batch = next(self._it, None)
        if batch is not None:
            self.last_ts = batch_ts(batch)
        return batch

    def remaining(self) -> int:
        """Steps left after `last_ts`."""
        return steps_after(self.source, self.last_ts)

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        while (batch := self.next_batch()) is not None:
            yield batch


class Replay:
    """Iterate a source's batches paced at `speed` bars per wall-clock second (0 = no pacing).

    The first bar comes at once, bar k is due `k / speed` seconds later. Each `iter()` (or `resume_after`)
    starts a fresh pass; `last_ts` is the timestamp of the latest bar handed out by any pass.
    """

    def __init__(
        self,
        source: DataSource,
        speed: float = 0.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not isinstance(speed, int | float) or isinstance(speed, bool) or not np.isfinite(speed) or speed < 0:
            raise ValueError(f"speed: must be a finite number >= 0 bars per second (got {speed!r})")
        self.source = source
        self.speed = float(speed)
        self.clock = clock
        self.sleep = sleep
        self.last_ts: int | None = None

    @property
    def interval(self) -> float:
        """Seconds between bars; 0 when unpaced."""
        return 1.0 / self.speed if self.speed > 0 else 0.0

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        return self._paced(None)

    def __len__(self) -> int:
        return len(self.source)

    def resume_after(self, ts_ns: int | None) -> Iterator[pa.RecordBatch]:
        """A paced pass over the batches with ts > ts_ns: what a restarted consumer has not yet seen."""
        return self._paced(ts_ns)

    def remaining_after(self, ts_ns: int | None) -> int:
        """Steps with ts > ts_ns, counted without iterating (so without pacing)."""
        return steps_after(self.source, ts_ns)

    def cursor(self, last_ts: int | None = None) -> ReplayCursor:
        """An unpaced cursor over the same source, starting after `last_ts`."""
        return ReplayCursor(self.source, last_ts)

    def _paced(self, after_ns: int | None) -> Iterator[pa.RecordBatch]:
        interval = self.interval
        due: float | None = None
        for batch in _batches_after(self.source, after_ns):
            if interval > 0:
                now = self.clock()
                if due is None or now > due:  # first bar, or the consumer fell behind: no catch-up burst
                    due = now
                elif due > now:
                    self.sleep(due - now)
                due += interval
            self.last_ts = batch_ts(batch)
            yield batch
