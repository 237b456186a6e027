"""kafka-python 3.x adapter for the bus interface (tested against the Tansu broker).

Producer: ``acks="all"``, idempotence on, compression (lz4 when the ``lz4`` package is importable, else gzip: both
work with Tansu; zstd and snappy need native packages we do not ship), batching by ``linger_ms``/``batch_size``,
keyed by symbol. Consumer: group member with ``enable_auto_commit=False``; :meth:`KafkaBusConsumer.commit` is
called by the application after processing (at least once).

Tansu 0.6 quirks handled here (see docs/bus.md): a new group member's join completes after about half the
session timeout, hence the short default ``session_timeout_ms``; ListOffsets(latest) under-reports the log end
once batches hold several records, so :meth:`KafkaBusConsumer.lag` takes the larger of it and the high watermark
returned by fetches.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.codec import has_lz4
from kafka.errors import CommitFailedError as _KafkaCommitFailed
from kafka.errors import TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from tradesys.bus.base import (
    CommitFailedError,
    OffsetReset,
    Record,
    check_consumer_args,
    check_partitions,
    check_topic_name,
)

DEFAULT_CONSUMER_CONFIG: dict[str, Any] = {
    # Tansu completes a group join after about session_timeout_ms / 2: keep it short.
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
    "max_poll_interval_ms": 60_000,
    # Tansu answers a fetch only when this wait expires, even with data waiting (fetch_min_bytes=1 does not cut it
    # short), so the wait sets the delivery latency (docs/benchmarks.md, tick-to-feature latency). The cost is up to
    # 100 empty fetches/s per idle consumer.
    "fetch_max_wait_ms": 10,
}


def default_compression() -> str:
    """lz4 when its Python package is present (fastest of the two here), otherwise gzip (stdlib)."""
    return "lz4" if has_lz4() else "gzip"


class KafkaBus:
    """A bus on a Kafka-protocol broker (Apache Kafka, Redpanda, Tansu)."""

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str],
        *,
        compression_type: str | None = "auto",
        linger_ms: int = 5,
        batch_size: int = 256 * 1024,
        producer_config: dict[str, Any] | None = None,
        consumer_config: dict[str, Any] | None = None,
        client_id: str = "tradesys",
        connect_timeout_s: float = 30.0,
    ) -> None:
        """`connect_timeout_s`: how long the admin client waits for a first answer from the bootstrap servers (an
        unreachable broker is an error after this long; kafka-python's default is 30 s)."""
        if not bootstrap_servers:
            raise ValueError("bootstrap_servers: must name at least one host:port")
        self.bootstrap_servers = bootstrap_servers
        self.client_id = client_id
        self.connect_timeout_s = connect_timeout_s
        self.producer_config: dict[str, Any] = {
            "acks": "all",
            "enable_idempotence": True,
            "compression_type": default_compression() if compression_type == "auto" else compression_type,
            "linger_ms": linger_ms,
            "batch_size": batch_size,
            "max_request_size": 16 * 1024 * 1024,
            **(producer_config or {}),
        }
        self.consumer_config: dict[str, Any] = {**DEFAULT_CONSUMER_CONFIG, **(consumer_config or {})}
        self._admin: KafkaAdminClient | None = None
        self._known_topics: set[str] = set()
        self._lock = threading.Lock()

    def _admin_client(self) -> KafkaAdminClient:
        if self._admin is None:
            self._admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers, client_id=self.client_id,
                                           bootstrap_timeout_ms=int(self.connect_timeout_s * 1000))
        return self._admin

    def create_topic(self, name: str, partitions: int = 1) -> None:
        check_topic_name(name)
        check_partitions(partitions)
        with self._lock:
            if name in self._known_topics:
                return
            with contextlib.suppress(TopicAlreadyExistsError):
                self._admin_client().create_topics([NewTopic(name, partitions, 1)])
            self._known_topics.add(name)

    def producer(self) -> KafkaBusProducer:
        return KafkaBusProducer(self)

    def consumer(
        self, topics: Sequence[str], group: str, *, auto_offset_reset: OffsetReset = "earliest"
    ) -> KafkaBusConsumer:
        names = check_consumer_args(topics, group, auto_offset_reset)
        return KafkaBusConsumer(self, names, group, auto_offset_reset)

    def close(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None


class KafkaBusProducer:
    """Buffers sends in kafka-python's accumulator; :meth:`flush` waits for the acks and raises the first failure."""

    def __init__(self, bus: KafkaBus) -> None:
        self._bus = bus
        self._p = KafkaProducer(bootstrap_servers=bus.bootstrap_servers, client_id=bus.client_id, **bus.producer_config)
        self._errors: list[BaseException] = []

    def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        ts_ms: int | None = None,
    ) -> None:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise ValueError(f"value: expected bytes, got {type(value).__name__}")
        if key is not None and not isinstance(key, bytes):
            raise ValueError(f"key: expected bytes or None, got {type(key).__name__}")
        if topic not in self._bus._known_topics:  # auto-create with one partition, like the memory bus
            self._bus.create_topic(topic, 1)
        fut = self._p.send(
            topic,
            value=bytes(value),
            key=key,
            headers=[(str(k), bytes(v)) for k, v in headers] if headers else None,
            timestamp_ms=ts_ms,
        )
        fut.add_errback(self._errors.append)

    def flush(self, timeout: float | None = None) -> None:
        self._p.flush(timeout=timeout)
        if self._errors:
            err, self._errors = self._errors[0], []
            raise RuntimeError(f"producer: a send failed: {err!r}") from err

    def close(self) -> None:
        self._p.close()


class KafkaBusConsumer:
    """A group member (``subscribe``); auto-commit is off, the application commits after processing."""

    def __init__(self, bus: KafkaBus, topics: list[str], group: str, auto_offset_reset: OffsetReset) -> None:
        self.group = group
        self.auto_offset_reset = auto_offset_reset
        self._bus = bus
        self._probe: KafkaConsumer | None = None
        self._c = KafkaConsumer(
            *topics,
            bootstrap_servers=bus.bootstrap_servers,
            client_id=bus.client_id,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset=auto_offset_reset,
            **bus.consumer_config,
        )

    @property
    def raw(self) -> KafkaConsumer:
        """The underlying kafka-python consumer (for metrics and tests)."""
        return self._c

    def poll(self, max_records: int = 500, timeout_ms: int = 1000) -> list[Record]:
        if max_records < 1:
            raise ValueError(f"max_records: must be >= 1, got {max_records}")
        deadline = time.monotonic() + max(timeout_ms, 0) / 1000.0
        while True:  # kafka-python may return early while the group join is in progress
            left_ms = max(int((deadline - time.monotonic()) * 1000), 0)
            batches = self._c.poll(timeout_ms=min(left_ms, 200), max_records=max_records)
            if batches:
                return [
                    Record(
                        r.topic,
                        r.partition,
                        r.offset,
                        r.key,
                        r.value,
                        r.timestamp,
                        tuple((k, bytes(v)) for k, v in (r.headers or ())),
                    )
                    for recs in batches.values()
                    for r in recs
                ]
            if time.monotonic() >= deadline:
                return []

    def commit(self, records: Sequence[Record] | None = None) -> None:
        try:
            if records is None:
                self._c.commit()
                return
            offsets: dict[TopicPartition, int] = {}
            for r in records:
                tp = TopicPartition(r.topic, r.partition)
                offsets[tp] = max(offsets.get(tp, -1), r.offset + 1)
            if offsets:
                self._c.commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()})
        except _KafkaCommitFailed as exc:
            raise CommitFailedError(f"group {self.group!r}: {exc}") from exc

    def lag(self) -> dict[tuple[str, int], int]:
        tps = sorted(self._c.assignment())
        if not tps:
            return {}
        ends = self.log_end_offsets(tps)
        begins = self._c.beginning_offsets(tps) if self.auto_offset_reset == "earliest" else {}
        out = {}
        for tp in tps:
            c = self._c.committed(tp)
            if c is None:
                c = begins.get(tp, 0) if self.auto_offset_reset == "earliest" else ends[tp]
            out[(tp.topic, tp.partition)] = max(ends[tp] - c, 0)
        return out

    def log_end_offsets(self, tps: Sequence[TopicPartition], timeout_s: float = 2.0) -> dict[TopicPartition, int]:
        """The log-end offset per partition, from the high watermark of a fetch.

        ListOffsets(latest) alone is not trusted (Tansu 0.6 answers the last batch's base offset + 1): a
        group-less probe consumer fetches from the largest offset we know of and reads the high watermark the
        broker returns with the fetch.
        """
        listed = self._c.end_offsets(list(tps))
        start = {tp: max(listed.get(tp) or 0, self._c.highwater(tp) or 0) for tp in tps}
        if self._probe is None:
            self._probe = KafkaConsumer(
                bootstrap_servers=self._bus.bootstrap_servers,
                client_id=self._bus.client_id + "-lag",
                group_id=None,
                enable_auto_commit=False,
                fetch_max_wait_ms=20,
            )
        return _probe_highwater(self._probe, start, timeout_s)

    def close(self) -> None:
        if self._probe is not None:
            self._probe.close()
            self._probe = None
        self._c.close(autocommit=False)


def _probe_highwater(
    probe: KafkaConsumer, start: dict[TopicPartition, int], timeout_s: float
) -> dict[TopicPartition, int]:
    """Fetch from `start` per partition and return max(start, the high watermark the broker sends back)."""
    tps = list(start)
    probe.assign(tps)
    for tp in tps:
        probe.seek(tp, start[tp])
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        probe.poll(timeout_ms=50, max_records=1_000_000)
        if all(probe.highwater(tp) is not None for tp in tps):
            break
    return {tp: max(start[tp], probe.highwater(tp) or 0) for tp in tps}


class BrokerUnavailable(RuntimeError):
    """The broker cannot be reached or cannot answer a request; the message says which, in one line."""


def _why(exc: BaseException) -> str:
    """`Name: detail` once (kafka-python errors already start their text with the class name)."""
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}" if text else name


def _client_kwargs(bootstrap_servers: str | Sequence[str], timeout_s: float) -> dict[str, Any]:
    ms = int(timeout_s * 1000)
    return {"bootstrap_servers": bootstrap_servers, "request_timeout_ms": max(ms, 1000),
            "bootstrap_timeout_ms": ms, "client_id": "tradesys-inspect"}


def topic_offsets(
    bootstrap_servers: str | Sequence[str], group: str | None = None, timeout_s: float = 5.0
) -> list[dict[str, Any]]:
    """Per topic partition (internal `__` topics left out): the log-end offset, and with `group` that group's
    committed offset (None: nothing committed) and lag (end - committed, 0 at least).

    Committed offsets come from the group coordinator (OffsetFetch, `KafkaAdminClient.list_group_offsets`; the
    2.x `list_consumer_group_offsets` is gone in kafka-python 3). End offsets are the fetch high watermark, as in
    `KafkaBusConsumer.log_end_offsets`. Raises BrokerUnavailable when the broker is unreachable or refuses a request.
    """
    from kafka.errors import KafkaError

    kw = _client_kwargs(bootstrap_servers, timeout_s)
    consumer: KafkaConsumer | None = None
    admin: KafkaAdminClient | None = None
    try:
        try:
            consumer = KafkaConsumer(group_id=None, enable_auto_commit=False, fetch_max_wait_ms=20, **kw)
            names = sorted(t for t in consumer.topics() if not t.startswith("__"))
            tps = [TopicPartition(n, p) for n in names for p in sorted(consumer.partitions_for_topic(n) or [])]
            listed = consumer.end_offsets(tps) if tps else {}
            ends = _probe_highwater(consumer, {tp: listed.get(tp) or 0 for tp in tps}, timeout_s) if tps else {}
        except KafkaError as exc:
            raise BrokerUnavailable(f"broker {bootstrap_servers}: cannot list topics and end offsets "
                                    f"({_why(exc)})") from exc
        committed: dict[TopicPartition, int] = {}
        if group is not None:
            try:
                admin = KafkaAdminClient(**kw)
                got = admin.list_group_offsets({group: None}).get(group, {})
            except KafkaError as exc:
                raise BrokerUnavailable(f"broker {bootstrap_servers}: cannot fetch the committed offsets of group "
                                        f"{group!r} ({_why(exc)})") from exc
            committed = {tp: int(om.offset) for tp, om in got.items() if om is not None and om.offset >= 0}
        rows = []
        for tp in tps:
            row: dict[str, Any] = {"topic": tp.topic, "partition": tp.partition, "end_offset": int(ends[tp])}
            if group is not None:
                c = committed.get(tp)
                row.update(group=group, committed=c, lag=None if c is None else max(int(ends[tp]) - c, 0))
            rows.append(row)
        return rows
    finally:
        if consumer is not None:
            consumer.close()
        if admin is not None:
            admin.close()
