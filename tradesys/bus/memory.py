"""In-process bus with Kafka's semantics as far as the :mod:`tradesys.bus.base` interface goes.

Topics are lists of partitions (append-only lists of records); keyed messages go to the partition Kafka's default
partitioner would pick; consumer groups split partitions among members (eager rebalance: on any membership change
every member restarts from the group's committed offsets); a member that has not polled for
``max_poll_interval_ms`` is evicted, as Kafka evicts a stuck consumer, and its commits then fail. All state sits
behind one lock, so producers and consumers may live on different threads.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence

from tradesys.bus.base import (
    CommitFailedError,
    OffsetReset,
    Record,
    check_consumer_args,
    check_partitions,
    check_topic_name,
    default_partition,
)

TP = tuple[str, int]


class MemoryBus:
    """The default bus: no server, same interface and delivery semantics as :class:`tradesys.bus.kafka.KafkaBus`."""

    def __init__(self, *, max_poll_interval_ms: int = 300_000) -> None:
        if max_poll_interval_ms <= 0:
            raise ValueError(f"max_poll_interval_ms: must be positive, got {max_poll_interval_ms}")
        self.max_poll_interval_s = max_poll_interval_ms / 1000.0
        self._cond = threading.Condition(threading.RLock())
        self._topics: dict[str, list[list[Record]]] = {}
        self._committed: dict[tuple[str, str, int], int] = {}
        self._groups: dict[str, list[MemoryConsumer]] = {}
        self._round_robin = itertools.count()

    # --- topics -------------------------------------------------------------------------------------------
    def create_topic(self, name: str, partitions: int = 1) -> None:
        check_topic_name(name)
        check_partitions(partitions)
        with self._cond:
            if name in self._topics:
                return
            self._topics[name] = [[] for _ in range(partitions)]
            for group in list(self._groups):
                self._rebalance(group)

    def topics(self) -> dict[str, int]:
        """Topic name -> partition count."""
        with self._cond:
            return {name: len(parts) for name, parts in self._topics.items()}

    def end_offsets(self, topic: str) -> list[int]:
        """Next offset per partition of ``topic`` (the log-end offsets)."""
        with self._cond:
            return [len(p) for p in self._topics[topic]]

    def committed(self, group: str, topic: str, partition: int) -> int | None:
        with self._cond:
            return self._committed.get((group, topic, partition))

    def _append(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None,
        ts_ms: int | None,
    ) -> None:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise ValueError(f"value: expected bytes, got {type(value).__name__}")
        if key is not None and not isinstance(key, bytes):
            raise ValueError(f"key: expected bytes or None, got {type(key).__name__}")
        hdrs = tuple((str(k), bytes(v)) for k, v in (headers or ()))
        with self._cond:
            if topic not in self._topics:  # auto-create, as a broker with auto.create.topics.enable does
                self.create_topic(topic, 1)
            parts = self._topics[topic]
            pidx = default_partition(key, len(parts)) if key is not None else next(self._round_robin) % len(parts)
            log = parts[pidx]
            ts = int(time.time() * 1000) if ts_ms is None else int(ts_ms)
            log.append(Record(topic, pidx, len(log), key, bytes(value), ts, hdrs))
            self._cond.notify_all()

    # --- clients ------------------------------------------------------------------------------------------
    def producer(self) -> MemoryProducer:
        return MemoryProducer(self)

    def consumer(
        self, topics: Sequence[str], group: str, *, auto_offset_reset: OffsetReset = "earliest"
    ) -> MemoryConsumer:
        names = check_consumer_args(topics, group, auto_offset_reset)
        c = MemoryConsumer(self, tuple(names), group, auto_offset_reset)
        with self._cond:
            self._groups.setdefault(group, []).append(c)
            self._rebalance(group)
        return c

    # --- group coordination (call with the lock held) -----------------------------------------------------
    def _rebalance(self, group: str) -> None:
        members = self._groups.get(group, [])
        for m in members:
            m._assignment = []
        for topic in sorted({t for m in members for t in m.topics}):
            subs = [m for m in members if topic in m.topics]
            for p in range(len(self._topics.get(topic, []))):
                subs[p % len(subs)]._assignment.append((topic, p))
        for m in members:  # eager protocol: restart every member from the committed offsets
            m._positions = {tp: self._start_offset(m, tp) for tp in m._assignment}
        if not members:
            self._groups.pop(group, None)

    def _start_offset(self, m: MemoryConsumer, tp: TP) -> int:
        c = self._committed.get((m.group, *tp))
        if c is not None:
            return c
        return 0 if m.auto_offset_reset == "earliest" else len(self._topics[tp[0]][tp[1]])

    def _leave(self, m: MemoryConsumer) -> None:
        members = self._groups.get(m.group, [])
        if m in members:
            members.remove(m)
            self._rebalance(m.group)

    def _evict_stale(self, group: str, now: float) -> None:
        members = self._groups.get(group, [])
        stale = [m for m in members if now - m._last_poll > self.max_poll_interval_s]
        for m in stale:
            m._evicted = True
            members.remove(m)
        if stale:
            self._rebalance(group)


class MemoryProducer:
    """Writes straight into the bus (delivery is synchronous, so :meth:`flush` has nothing to wait for)."""

    def __init__(self, bus: MemoryBus) -> None:
        self._bus = bus
        self._closed = False

    def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        ts_ms: int | None = None,
    ) -> None:
        if self._closed:
            raise RuntimeError("producer: closed")
        self._bus._append(topic, value, key, headers, ts_ms)

    def flush(self, timeout: float | None = None) -> None:
        if self._closed:
            raise RuntimeError("producer: closed")

    def close(self) -> None:
        self._closed = True


class MemoryConsumer:
    """A consumer-group member; see :class:`tradesys.bus.base.Consumer` for the contract."""

    def __init__(self, bus: MemoryBus, topics: tuple[str, ...], group: str, auto_offset_reset: OffsetReset) -> None:
        self._bus = bus
        self.topics = topics
        self.group = group
        self.auto_offset_reset = auto_offset_reset
        self._assignment: list[TP] = []
        self._positions: dict[TP, int] = {}
        self._last_poll = time.monotonic()
        self._evicted = False
        self._closed = False
        self._next_start = 0

    def assignment(self) -> list[TP]:
        with self._bus._cond:
            return list(self._assignment)

    def poll(self, max_records: int = 500, timeout_ms: int = 1000) -> list[Record]:
        if max_records < 1:
            raise ValueError(f"max_records: must be >= 1, got {max_records}")
        bus = self._bus
        deadline = time.monotonic() + max(timeout_ms, 0) / 1000.0
        with bus._cond:
            while True:
                if self._closed:
                    raise RuntimeError("consumer: closed")
                now = time.monotonic()
                self._last_poll = now
                if self._evicted:  # a kicked-out member rejoins on its next poll, as a Kafka consumer does
                    self._evicted = False
                    bus._groups.setdefault(self.group, []).append(self)
                    bus._rebalance(self.group)
                bus._evict_stale(self.group, now)
                out = self._take(max_records)
                if out:
                    return out
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                bus._cond.wait(min(remaining, 0.1))

    def _take(self, max_records: int) -> list[Record]:
        out: list[Record] = []
        n = len(self._assignment)
        for i in range(n):
            tp = self._assignment[(self._next_start + i) % n]
            log = self._bus._topics[tp[0]][tp[1]]
            pos = self._positions[tp]
            chunk = log[pos : pos + (max_records - len(out))]
            if chunk:
                out.extend(chunk)
                self._positions[tp] = pos + len(chunk)
            if len(out) >= max_records:
                break
        self._next_start = (self._next_start + 1) % max(n, 1)
        return out

    def commit(self, records: Sequence[Record] | None = None) -> None:
        bus = self._bus
        with bus._cond:
            if self._closed:
                raise RuntimeError("consumer: closed")
            if self._evicted:
                raise CommitFailedError(
                    f"group {self.group!r}: this member was evicted (no poll for {bus.max_poll_interval_s} s)"
                )
            if records is None:
                offsets = dict(self._positions)
            else:
                offsets = {}
                for r in records:
                    tp = (r.topic, r.partition)
                    offsets[tp] = max(offsets.get(tp, -1), r.offset + 1)
                lost = [tp for tp in offsets if tp not in self._assignment]
                if lost:
                    raise CommitFailedError(f"group {self.group!r}: partitions {lost} are not assigned to this member")
            for (topic, p), off in offsets.items():
                bus._committed[(self.group, topic, p)] = off

    def lag(self) -> dict[tuple[str, int], int]:
        bus = self._bus
        with bus._cond:
            out = {}
            for tp in self._assignment:
                end = len(bus._topics[tp[0]][tp[1]])
                c = bus._committed.get((self.group, *tp))
                if c is None:
                    c = 0 if self.auto_offset_reset == "earliest" else end
                out[tp] = end - c
            return out

    def close(self) -> None:
        with self._bus._cond:
            if not self._closed:
                self._closed = True
                self._bus._leave(self)
