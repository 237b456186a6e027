"""Change data capture end to end: a real backtest writes the ledger, the outbox relay publishes its changes to
the bus (in-process, and Kafka on a real Tansu broker), and a consumer rebuilds the orders and fills from the
events alone. The relay is killed between publishing and advancing its cursor, and in the middle of a batch:
nothing is lost, duplicates carry the same outbox id, and a deduplicating consumer sees each change once."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tradesys.backtest.runner import run_backtest
from tradesys.bus import Bus, MemoryBus
from tradesys.config import load_config
from tradesys.ledger import open_ledger
from tradesys.ledger.outbox import OUTBOX_ID_HEADER, OutboxRelay, decode_event


@pytest.fixture(params=["memory", "kafka"])
def bus(request: pytest.FixtureRequest) -> Iterator[Bus]:
    if request.param == "memory":
        yield MemoryBus()
        return
    from tradesys.bus.kafka import KafkaBus

    kafka = KafkaBus(request.getfixturevalue("tansu_broker"))
    yield kafka
    kafka.close()


@pytest.fixture(scope="module")
def traded_ledger(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A ledger written by a real backtest: orders, rejects, fills, positions, account."""
    url = f"sqlite:///{tmp_path_factory.mktemp('cdc')}/ledger.db"
    run_backtest(load_config(None, ["data.end=2016-12-31"]), url)
    return url


def consume_all(bus: Bus, topic: str, expected: int, group: str) -> list[Any]:
    consumer = bus.consumer([topic], group)
    got: list[Any] = []
    try:
        for _ in range(200):
            records = consumer.poll(max_records=5_000, timeout_ms=500)
            got.extend(records)
            if records:
                consumer.commit(records)
            if len(got) >= expected and not records:
                break
    finally:
        consumer.close()
    return got


def rebuild(records: list[Any]) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]], int]:
    """Orders and fills from the events alone, applied once per outbox id (the idempotent sink)."""
    seen: set[bytes] = set()
    orders: dict[str, dict[str, Any]] = {}
    fills: dict[str, dict[str, Any]] = {}
    dupes = 0
    for rec in records:
        oid = rec.header(OUTBOX_ID_HEADER)
        if oid in seen:
            dupes += 1
            continue
        seen.add(oid)
        ev = decode_event(rec.value)
        assert rec.key == str(ev["entity_key"]).encode() and str(ev["id"]).encode() == oid
        if ev["entity"] == "order":
            orders.setdefault(ev["entity_key"], {}).update(ev["payload"])
        elif ev["entity"] == "fill":
            fills[ev["entity_key"]] = ev["payload"]
    return orders, fills, dupes


def test_relay_streams_the_ledger_and_a_consumer_rebuilds_it(bus: Bus, traded_ledger: str) -> None:
    topic = f"cdc-{uuid.uuid4().hex[:8]}"
    bus.create_topic(topic)
    with open_ledger(traded_ledger) as led:
        total = len(led.outbox(0, 10**9))
        relay = OutboxRelay(led, bus.producer(), topic=topic, name=topic, batch_size=400)
        assert relay.drain() == total and led.outbox_cursor(topic) == led.outbox(0, 10**9)[-1]["id"]
        assert relay.run_once() == 0  # caught up
        orders, fills, dupes = rebuild(consume_all(bus, topic, total, group=topic))
        assert dupes == 0
        assert orders == {o["client_order_id"]: o for o in led.orders(limit=10**9)}
        assert fills == {f["fill_id"]: f for f in led.fills()}
        assert fills and any(o["status"] == "filled" for o in orders.values())  # a real run, with fills


class _Crash(Exception):
    pass


def test_relay_killed_anywhere_loses_nothing(bus: Bus, traded_ledger: str, tmp_path: Path) -> None:
    topic = f"cdc-{uuid.uuid4().hex[:8]}"
    bus.create_topic(topic)
    with open_ledger(traded_ledger) as led:
        total = len(led.outbox(0, 10**9))
        producer = bus.producer()

        # 1. dies after the broker acknowledged a batch, before the cursor moved
        relay = OutboxRelay(led, producer, topic=topic, name=topic, batch_size=300)
        relay.run_once()

        def crash(_: int) -> None:
            raise _Crash

        relay.before_advance = crash
        with pytest.raises(_Crash):
            relay.run_once()
        cursor_after_crash = led.outbox_cursor(topic)

        # 2. a fresh relay (the restarted process) dies halfway through sending its next batch
        sent = [0]
        real_send = producer.send

        def send_then_die(*args: Any, **kw: Any) -> None:
            if sent[0] == 150:
                raise _Crash
            sent[0] += 1
            real_send(*args, **kw)

        relay2 = OutboxRelay(led, producer, topic=topic, name=topic, batch_size=300)
        assert relay2.stats.last_id == cursor_after_crash  # resumes from the committed cursor
        producer.send = send_then_die  # type: ignore[method-assign]
        with pytest.raises(_Crash):
            relay2.run_once()
        producer.send = real_send  # type: ignore[method-assign]
        producer.flush()
        assert led.outbox_cursor(topic) == cursor_after_crash

        # 3. the next restart runs to the end
        OutboxRelay(led, producer, topic=topic, name=topic, batch_size=300).drain()

        records = consume_all(bus, topic, total + 300 + 150, group=topic)
        ids = {r.header(OUTBOX_ID_HEADER) for r in records}
        assert len(ids) == total  # every change arrived; none lost
        orders, fills, dupes = rebuild(records)
        assert dupes == 300 + 150  # the re-sent batch and the half batch, recognised by their outbox ids
        assert orders == {o["client_order_id"]: o for o in led.orders(limit=10**9)}
        assert fills == {f["fill_id"]: f for f in led.fills()}
