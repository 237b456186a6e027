"""Dead-letter topic: records that fail to decode are parked there with the reason, and processing goes on.

The dead letter keeps the original key and value byte for byte and adds headers naming where it came from
(``dlq.topic``, ``dlq.partition``, ``dlq.offset``) and why (``dlq.error``), so it can be inspected or replayed.
"""

from __future__ import annotations

from tradesys.bus.base import Producer, Record


def dlq_topic_for(topic: str) -> str:
    """Naming convention: ``<topic>.dlq``."""
    return f"{topic}.dlq"


class DeadLetterQueue:
    """Routes bad records to ``topic`` (default: ``<source topic>.dlq``) through ``producer``; counts them."""

    def __init__(self, producer: Producer, topic: str | None = None) -> None:
        self.producer = producer
        self.topic = topic
        self.count = 0

    def route(self, record: Record, reason: str) -> None:
        headers = [
            *record.headers,
            ("dlq.topic", record.topic.encode()),
            ("dlq.partition", str(record.partition).encode()),
            ("dlq.offset", str(record.offset).encode()),
            ("dlq.error", reason.encode("utf-8", "replace")[:1000]),
        ]
        self.producer.send(
            self.topic or dlq_topic_for(record.topic), record.value, key=record.key, headers=headers, ts_ms=record.ts_ms
        )
        self.count += 1

    def flush(self, timeout: float | None = None) -> None:
        self.producer.flush(timeout)
