"""Change data capture from the ledger: the transactional outbox and the relay that publishes it.

Every `SqlLedger.write` inserts one outbox row per change (order created/updated, fill, position, account) in
the same transaction as the change itself, so an event exists if and only if its change committed. The relay
reads events after its cursor in id order, publishes them to the bus (key = the entity's key, so one entity's
events stay in order within a partition), waits for the broker's acknowledgement (`flush`), and only then
advances its cursor in the ledger. If the relay dies between reading and publishing, or between publishing and
advancing, it starts again from the old cursor: nothing is lost, and an event may be published twice, with the
same `outbox_id` header, so consumers deduplicate on it (at-least-once delivery, effectively-once effects).

PostgreSQL logical decoding (`pgoutput`/`test_decoding`) would be the alternative source of the same events; it
needs `wal_level=logical`, which a stock server (and the one these tests run against) does not have.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

DEFAULT_TOPIC = "ledger.changes"
OUTBOX_ID_HEADER = "outbox_id"


class _Producer(Protocol):
    def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        ts_ms: int | None = None,
    ) -> None: ...

    def flush(self, timeout: float | None = None) -> None: ...


class _OutboxLedger(Protocol):
    def outbox(self, after_id: int = 0, limit: int = 1000) -> list[dict[str, Any]]: ...
    def outbox_cursor(self, relay: str) -> int: ...
    def advance_outbox_cursor(self, relay: str, last_id: int) -> None: ...


def encode_event(row: dict[str, Any]) -> bytes:
    """The message value: the outbox row as JSON (id, ts_ns, entity, entity_key, event, payload)."""
    return json.dumps(row, sort_keys=True, allow_nan=False).encode()


def decode_event(value: bytes) -> dict[str, Any]:
    return json.loads(value)


@dataclass
class RelayStats:
    published: int = 0
    batches: int = 0
    last_id: int = 0


class OutboxRelay:
    """Publishes the ledger's outbox to a bus topic, at least once, in order. One relay per `name` at a time."""

    def __init__(
        self,
        ledger: _OutboxLedger,
        producer: _Producer,
        *,
        topic: str = DEFAULT_TOPIC,
        name: str = "default",
        batch_size: int = 500,
        flush_timeout: float | None = 30.0,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size: must be >= 1")
        self.ledger, self.producer, self.topic, self.name = ledger, producer, topic, name
        self.batch_size, self.flush_timeout = batch_size, flush_timeout
        self.stats = RelayStats(last_id=ledger.outbox_cursor(name))
        # test hook: called after publish+flush and before the cursor moves (where a crash duplicates, never loses)
        self.before_advance: Callable[[int], None] | None = None

    def run_once(self) -> int:
        """Publish the next batch after the cursor; returns how many events went out (0: caught up)."""
        cursor = self.ledger.outbox_cursor(self.name)
        rows = self.ledger.outbox(cursor, self.batch_size)
        if not rows:
            return 0
        for row in rows:
            self.producer.send(
                self.topic,
                encode_event(row),
                key=str(row["entity_key"]).encode(),
                headers=[(OUTBOX_ID_HEADER, str(row["id"]).encode())],
                ts_ms=int(row["ts_ns"]) // 1_000_000,
            )
        self.producer.flush(self.flush_timeout)  # acknowledged by the broker (acks=all on Kafka)
        last = int(rows[-1]["id"])
        if self.before_advance is not None:
            self.before_advance(last)
        self.ledger.advance_outbox_cursor(self.name, last)
        self.stats.published += len(rows)
        self.stats.batches += 1
        self.stats.last_id = last
        return len(rows)

    def drain(self) -> int:
        """Publish until caught up; returns the number of events published."""
        total = 0
        while n := self.run_once():
            total += n
        return total

    def run(self, stop: threading.Event, poll_interval: float = 0.2) -> None:
        """Relay until `stop` is set, polling the outbox when caught up."""
        while not stop.is_set():
            if self.run_once() == 0:
                stop.wait(poll_interval)
