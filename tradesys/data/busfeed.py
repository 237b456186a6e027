"""Market data through the bus: a publisher that puts a source's bar batches on a topic, and a reader that the
live loop's MarketDataActor uses instead of reading the source itself (config `data.bus = "kafka"`).

One message per time step (the whole cross-section of bars, Arrow IPC, one partition keyed `bars`), so a step is
never split and steps stay in order. The reader commits a step's offset only when the loop acknowledges the step
(`ack`), after it is booked in the ledger: a crash before that re-delivers the step, and the loop's resume from
the ledger's last timestamp skips what was already booked, so each step takes effect exactly once. An
end-of-stream message (header `end`) closes a finite feed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from tradesys.bus.base import Consumer, Producer, Record
from tradesys.bus.codec import DecodeError, decode_batch, encode_batch
from tradesys.core.schemas import BAR_SCHEMA, batch_ts

FEED_KEY = b"bars"
END_HEADER = "end"
TS_HEADER = "ts_ns"


def publish_batches(producer: Producer, topic: str, batches: Iterable[pa.RecordBatch], *, end: bool = True) -> int:
    """Send each bar batch as one message (flushing at the end, and the end marker if `end`); returns the count."""
    n = 0
    for batch in batches:
        ts = batch_ts(batch)
        producer.send(topic, encode_batch(batch), key=FEED_KEY, headers=[(TS_HEADER, str(ts).encode())],
                      ts_ms=ts // 1_000_000)
        n += 1
    if end:
        producer.send(topic, b"", key=FEED_KEY, headers=[(END_HEADER, b"1")])
    producer.flush()
    return n


class BusBarReader:
    """Bar batches from a topic, one per `next_batch`, with commit-after-processing through `ack`."""

    def __init__(self, consumer: Consumer, *, poll_timeout_ms: int = 500, idle_timeout_s: float | None = 60.0) -> None:
        self.consumer = consumer
        self.poll_timeout_ms = poll_timeout_ms
        self.idle_timeout_s = idle_timeout_s
        self._buffer: list[Record] = []
        self._handed: list[tuple[int, Record]] = []  # (ts, record) handed out, not yet acknowledged
        self._after_ns = -1
        self.skipped = 0
        self.undecodable = 0

    def resume_after(self, ts_ns: int) -> None:
        """Skip steps at or before `ts_ns` (already booked): they are acknowledged as they are read."""
        self._after_ns = ts_ns

    def _next_record(self) -> Record | None:
        deadline = None if self.idle_timeout_s is None else time.monotonic() + self.idle_timeout_s
        while not self._buffer:
            self._buffer = list(self.consumer.poll(max_records=64, timeout_ms=self.poll_timeout_ms))
            if not self._buffer and deadline is not None and time.monotonic() > deadline:
                return None
        return self._buffer.pop(0)

    def next_batch(self) -> tuple[int, pa.RecordBatch | None]:
        """(timestamp ns, bars), or (-1, None) at the end marker or after `idle_timeout_s` without data."""
        while True:
            rec = self._next_record()
            if rec is None:
                return -1, None
            if rec.header(END_HEADER) is not None:
                self.consumer.commit([rec])
                return -1, None
            try:
                table = decode_batch(rec.value, BAR_SCHEMA)
            except DecodeError:
                self.undecodable += 1  # not a bar batch: count it, commit past it
                self.consumer.commit([rec])
                continue
            batch = table.combine_chunks().to_batches()[0] if isinstance(table, pa.Table) else table
            ts = batch_ts(batch)
            if ts <= self._after_ns:
                self.skipped += 1
                self.consumer.commit([rec])
                continue
            self._handed.append((ts, rec))
            return ts, batch

    def ack(self, ts_ns: int) -> int:
        """The loop booked every step up to `ts_ns`: commit their offsets; returns how many were committed."""
        done = [rec for ts, rec in self._handed if ts <= ts_ns]
        if done:
            self.consumer.commit(done)
            self._handed = [(ts, rec) for ts, rec in self._handed if ts > ts_ns]
        return len(done)

    def lag(self) -> dict[Any, int]:
        return self.consumer.lag()

    def close(self) -> None:
        self.consumer.close()
