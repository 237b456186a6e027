"""The bus interface shared by the in-process bus and the Kafka adapter.

Delivery is at least once: a consumer commits *after* processing, so a crash between processing and commit
re-delivers the uncommitted tail; sinks make that safe by being idempotent (keyed by (topic, partition, offset)
or by a business key). Ordering holds per partition; records with the same key go to the same partition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

Headers = tuple[tuple[str, bytes], ...]
OffsetReset = Literal["earliest", "latest"]


@dataclass(frozen=True)
class Record:
    """One consumed message. ``ts_ms`` is the producer (create) time in ms since the epoch, UTC."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    ts_ms: int
    headers: Headers = ()

    def header(self, name: str) -> bytes | None:
        """The first header called ``name``, or None."""
        for k, v in self.headers:
            if k == name:
                return v
        return None


@runtime_checkable
class Producer(Protocol):
    def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        ts_ms: int | None = None,
    ) -> None:
        """Queue one message; delivery is confirmed only by :meth:`flush`."""
        ...

    def flush(self, timeout: float | None = None) -> None:
        """Block until every queued message is acknowledged; raise if any failed."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Consumer(Protocol):
    def poll(self, max_records: int = 500, timeout_ms: int = 1000) -> list[Record]:
        """Up to ``max_records`` records (in offset order per partition); [] after ``timeout_ms`` without data."""
        ...

    def commit(self, records: Sequence[Record] | None = None) -> None:
        """Commit AFTER processing: everything polled so far (None) or up to and including ``records``."""
        ...

    def lag(self) -> dict[tuple[str, int], int]:
        """Per assigned (topic, partition): end offset minus committed offset (messages not yet committed)."""
        ...

    def close(self) -> None:
        """Leave the group without committing."""
        ...


@runtime_checkable
class Bus(Protocol):
    def create_topic(self, name: str, partitions: int = 1) -> None:
        """Create a topic; a no-op when it exists."""
        ...

    def producer(self) -> Producer: ...

    def consumer(self, topics: Sequence[str], group: str, *, auto_offset_reset: OffsetReset = "earliest") -> Consumer:
        """A member of group ``group``; partitions without a committed offset start at ``auto_offset_reset``."""
        ...


def check_topic_name(name: str) -> None:
    """Kafka's topic-name rule (letters, digits, '.', '_', '-', at most 249 chars), enforced on both buses."""
    import re

    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", name):
        raise ValueError(f"topic: {name!r} is not a valid topic name ([A-Za-z0-9._-], 1-249 chars)")


def check_consumer_args(topics: Sequence[str] | str, group: str, auto_offset_reset: str) -> list[str]:
    """The contract's checks on `Bus.consumer` arguments, shared by every adapter; returns the topics as a list."""
    names = [topics] if isinstance(topics, str) else list(topics)
    for t in names:
        check_topic_name(t)
    if not group:
        raise ValueError("group: must be a non-empty string")
    if auto_offset_reset not in ("earliest", "latest"):
        raise ValueError(f"auto_offset_reset: must be 'earliest' or 'latest', got {auto_offset_reset!r}")
    return names


def check_partitions(partitions: int) -> None:
    if not isinstance(partitions, int) or partitions < 1:
        raise ValueError(f"partitions: must be a positive int, got {partitions!r}")


class CommitFailedError(RuntimeError):
    """The commit was refused: this consumer left the group, or the partitions were reassigned (rebalance).

    The records stay uncommitted and will be re-delivered to the partition's new owner (at least once).
    """


def default_partition(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner for keyed messages: ``(murmur2(key) & 0x7fffffff) % partitions``.

    Both buses use it, so a key lands on the same partition number in memory and on a Kafka broker.
    """
    from kafka.partitioner.default import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % partitions
