"""Feature store: point-in-time join and online-store throughput, each against a peer in the same run.

1. As-of join: `asof_indices` (the store's per-entity searchsorted kernel) vs `pandas.merge_asof`
   (direction="backward", by=symbol) on the same in-memory rows and labels; the answers are checked equal.
   Also the full `OfflineStore.training_set` (Parquet read + join) on the same data written to a temp dir.
2. Online store on the real Redis (127.0.0.1:6379, skipped if unreachable): `RedisOnlineStore.write` (one pipeline,
   Lua compare-and-set per entity) and `read` (pipelined HGETALL) vs a naive client doing one round trip per
   entity (HSET + PEXPIRE without the compare, HGETALL). Figures are entities per second, median of --repeats.

    .venv/bin/python benchmarks/data_featurestore.py [--rows 1000000] [--labels 200000] [--entities 5000]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable

import numpy as np
import pandas as pd

from tradesys.featurestore import FeatureDefinition, FeatureRef, OfflineStore, RedisOnlineStore, asof_indices

T0 = pd.Timestamp("2024-01-02", tz="UTC")


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def bench_join(n_rows: int, n_labels: int, n_syms: int, repeats: int) -> None:
    rng = np.random.default_rng(0)
    syms = np.array([f"S{i:03d}" for i in range(n_syms)])
    span = 20 * 86_400 * 10**9
    rows = pd.DataFrame(
        {
            "symbol": syms[rng.integers(0, n_syms, n_rows)],
            "ts": T0 + pd.to_timedelta(rng.integers(0, span, n_rows), unit="ns"),
            "v": rng.normal(size=n_rows),
        }
    )
    labels = pd.DataFrame(
        {
            "symbol": syms[rng.integers(0, n_syms, n_labels)],
            "ts": T0 + pd.to_timedelta(rng.integers(0, span, n_labels), unit="ns"),
        }
    )
    r_ent, r_ns = rows["symbol"].to_numpy(), rows["ts"].array.asi8
    l_ent, l_ns = labels["symbol"].to_numpy(), labels["ts"].array.asi8

    def ours() -> np.ndarray:
        idx = asof_indices(r_ent, r_ns, l_ent, l_ns)
        return np.where(idx >= 0, rows["v"].to_numpy()[np.maximum(idx, 0)], np.nan)

    def peer() -> np.ndarray:
        left = labels.assign(_i=np.arange(n_labels)).sort_values("ts")
        m = pd.merge_asof(left, rows.sort_values("ts"), on="ts", by="symbol", direction="backward")
        return m.sort_values("_i")["v"].to_numpy()

    t_ours, a = timed(ours, repeats)
    t_peer, b = timed(peer, repeats)
    np.testing.assert_array_equal(a, b)
    print(f"as-of join, {n_rows:,} rows x {n_labels:,} labels, {n_syms} symbols (answers equal)")
    print(f"  asof_indices      {t_ours * 1e3:8.1f} ms  {n_labels / t_ours:12,.0f} labels/s")
    print(f"  pandas.merge_asof {t_peer * 1e3:8.1f} ms  {n_labels / t_peer:12,.0f} labels/s  (incl. sorts)")
    print(f"  ratio peer/ours   {t_peer / t_ours:8.2f}x")
    with tempfile.TemporaryDirectory() as root:
        store = OfflineStore(root)
        store.register(FeatureDefinition("bench", 1, {"v": "float64"}, transform="b"))
        t = time.perf_counter()
        store.write("bench", 1, rows)
        t_write = time.perf_counter() - t
        t_ts, got = timed(lambda: store.training_set(labels, [FeatureRef("bench", 1)]), max(1, repeats // 2))
        np.testing.assert_array_equal(got["bench_v1__v"].to_numpy(), b)
        print(f"  offline write     {t_write * 1e3:8.1f} ms  {n_rows / t_write:12,.0f} rows/s (20 date partitions)")
        print(f"  training_set      {t_ts * 1e3:8.1f} ms  {n_labels / t_ts:12,.0f} labels/s (Parquet read + join)")


def bench_redis(n_ent: int, repeats: int) -> None:
    import redis

    try:
        client = redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_connect_timeout=2)
        client.ping()
    except Exception as exc:
        print(f"redis: skipped ({exc})")
        return
    prefix = f"bench:fs:{uuid.uuid4().hex}:"
    store = RedisOnlineStore(client=client, prefix=prefix, ttl_s=600)
    rng = np.random.default_rng(1)
    ents = [f"E{i:05d}" for i in range(n_ent)]
    counter = [0]

    def batch() -> pd.DataFrame:
        counter[0] += 1  # newer event time every call, so every CAS applies
        return pd.DataFrame(
            {"symbol": ents, "ts": T0 + pd.Timedelta(counter[0], "s"), "a": rng.normal(size=n_ent), "b": 1.0}
        )

    def naive_write() -> None:
        df = batch()
        for rec in df.to_dict("records"):
            key = f"{prefix}naive:{rec['symbol']}"
            client.hset(key, mapping={"a": repr(rec["a"]), "b": repr(rec["b"]), "_event_ts": rec["ts"].value})
            client.pexpire(key, 600_000)

    def naive_read() -> list:
        return [client.hgetall(f"{prefix}naive:{e}") for e in ents]

    try:
        t_w, _ = timed(lambda: store.write("bench", 1, batch()), repeats)
        t_r, got = timed(lambda: store.read("bench", 1, ents), repeats)
        assert all(v is not None for v in got.values())
        t_nw, _ = timed(naive_write, repeats)
        t_nr, _ = timed(naive_read, repeats)
    finally:
        store.clear()
        client.close()
    print(f"redis online store, {n_ent:,} entities x 2 values per call")
    print(f"  write: pipelined Lua CAS {n_ent / t_w:10,.0f} ent/s   naive HSET+PEXPIRE loop {n_ent / t_nw:10,.0f} ent/s"
          f"   ratio {t_nw / t_w:.1f}x")  # fmt: skip
    print(f"  read:  pipelined HGETALL {n_ent / t_r:10,.0f} ent/s   naive HGETALL loop      {n_ent / t_nr:10,.0f} ent/s"
          f"   ratio {t_nr / t_r:.1f}x")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--labels", type=int, default=200_000)
    p.add_argument("--symbols", type=int, default=500)
    p.add_argument("--entities", type=int, default=5000)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    bench_join(a.rows, a.labels, a.symbols, a.repeats)
    bench_redis(a.entities, a.repeats)


if __name__ == "__main__":
    main()
