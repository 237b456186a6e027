"""Online feature store: one contract suite run against the in-memory store and the real Redis.

The Redis backend runs on 127.0.0.1:6379 (the `redis_url` fixture; a failure, not a skip, when CI=true), each
test under its own key prefix, deleted afterwards. TTL uses an injected clock for the in-memory store and a
short real TTL on Redis.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tradesys.featurestore import (
    EVENT_TS,
    FeatureDefinition,
    InMemoryOnlineStore,
    OfflineStore,
    RedisOnlineStore,
    materialize,
)

T0 = pd.Timestamp("2024-03-01 14:30", tz="UTC")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Backend:
    store: InMemoryOnlineStore | RedisOnlineStore
    advance: Callable[[float], None]  # let `seconds` of processing time pass


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "memory":
        clock = FakeClock()

        def advance(s: float) -> None:
            clock.now += s

        yield Backend(InMemoryOnlineStore(clock=clock), advance)
        return
    url = request.getfixturevalue("redis_url")
    store = RedisOnlineStore(url, prefix=f"test:fs:{uuid.uuid4().hex}:")
    try:
        yield Backend(store, time.sleep)
    finally:
        store.clear()
        store.client.close()


def rows(sym: str, ts: pd.Timestamp | int, v: float) -> pd.DataFrame:
    return pd.DataFrame({"symbol": [sym], "ts": [ts], "v": [v]})


def test_latest_wins_by_event_time(backend: Backend) -> None:
    s = backend.store
    assert s.write("px", 1, rows("AAA", T0 + pd.Timedelta("10s"), 1.0)) == 1
    assert s.write("px", 1, rows("AAA", T0 + pd.Timedelta("5s"), 2.0)) == 0  # late, older: ignored
    got = s.read("px", 1, ["AAA"])["AAA"]
    assert got == {"v": 1.0, EVENT_TS: (T0 + pd.Timedelta("10s")).value}
    assert s.write("px", 1, rows("AAA", T0 + pd.Timedelta("10s"), 3.0)) == 1  # same time: a correction
    assert s.read("px", 1, ["AAA"])["AAA"]["v"] == 3.0
    assert s.write("px", 1, rows("AAA", T0 + pd.Timedelta("11s"), 4.0)) == 1
    assert s.read("px", 1, ["AAA"])["AAA"]["v"] == 4.0


def test_ordering_is_exact_to_the_nanosecond(backend: Backend) -> None:
    """1.7e18 ns and 1 ns later are the same double: the compare must not go through floats. Pre-1970 too."""
    s = backend.store
    t = 1_709_303_400_000_000_001
    assert float(t) == float(t + 1)
    s.write("px", 1, rows("AAA", t + 1, 1.0))
    assert s.write("px", 1, rows("AAA", t, 2.0)) == 0
    s.write("px", 1, rows("BBB", -5, 1.0))
    assert s.write("px", 1, rows("BBB", -6, 2.0)) == 0
    assert s.write("px", 1, rows("BBB", -4, 3.0)) == 1
    got = s.read("px", 1, ["AAA", "BBB"])
    assert got["AAA"] == {"v": 1.0, EVENT_TS: t + 1} and got["BBB"] == {"v": 3.0, EVENT_TS: -4}


def test_batch_keeps_newest_row_per_entity_not_last_row(backend: Backend) -> None:
    df = pd.DataFrame(
        {
            "symbol": ["A", "B", "A", "A", "B"],
            "ts": [T0 + pd.Timedelta(s, "s") for s in (3, 1, 9, 2, 1)],
            "v": [1.0, 2.0, 3.0, 4.0, 5.0],
        }
    )
    assert backend.store.write("px", 1, df) == 2
    got = backend.store.read("px", 1, ["A", "B"])
    assert got["A"]["v"] == 3.0 and got["B"]["v"] == 5.0  # B: tie on time, the later row wins


def test_ttl_expiry(backend: Backend) -> None:
    s = backend.store
    s.write("px", 1, rows("AAA", T0, 1.0), ttl_s=0.4)
    s.write("px", 1, rows("BBB", T0, 2.0))  # no TTL
    assert s.read("px", 1, ["AAA"])["AAA"]["v"] == 1.0
    backend.advance(0.6)
    got = s.read("px", 1, ["AAA", "BBB"])
    assert got["AAA"] is None and got["BBB"]["v"] == 2.0
    # once expired, an older event time is accepted again (nothing newer is known)
    assert s.write("px", 1, rows("AAA", T0 - pd.Timedelta("1D"), 9.0), ttl_s=5) == 1
    assert s.read("px", 1, ["AAA"])["AAA"]["v"] == 9.0


def test_batch_reads_many_entities_and_versions_are_separate(backend: Backend) -> None:
    rng = np.random.default_rng(0)
    n = 500
    syms = [f"S{i:04d}" for i in range(n)]
    df = pd.DataFrame(
        {
            "symbol": syms,
            "ts": T0 + pd.to_timedelta(rng.integers(0, 10**12, n), unit="ns"),
            "v": rng.normal(size=n),
            "k": rng.integers(-(2**62), 2**62, n),
            "tag": [f"t{i}" for i in range(n)],
            "flag": rng.random(n) < 0.5,
        }
    )
    df.loc[7, "v"] = 0.1 + 0.2  # exact float round trip, not a rounded text form
    assert backend.store.write("multi", 1, df) == n
    backend.store.write("multi", 2, df.assign(v=-1.0))
    got = backend.store.read("multi", 1, [*syms, "MISSING1", "MISSING2"])
    assert len(got) == n + 2 and got["MISSING1"] is None and got["MISSING2"] is None
    for rec in df.to_dict("records"):
        g = got[rec["symbol"]]
        assert g == {"v": rec["v"], "k": rec["k"], "tag": rec["tag"], "flag": rec["flag"], EVENT_TS: rec["ts"].value}
        assert type(g["k"]) is int and type(g["flag"]) is bool
    assert all(r["v"] == -1.0 for r in backend.store.read("multi", 2, syms[:50]).values())


def test_streaming_writes_equal_one_batch_write(backend: Backend) -> None:
    """Rows arriving one by one, out of order, leave the same state as one batch and as a brute-force last()."""
    rng = np.random.default_rng(1)
    n = 120
    df = pd.DataFrame(
        {
            "symbol": rng.choice(["A", "B", "C", "D"], n),
            "ts": T0 + pd.to_timedelta(rng.permutation(n) * 1000, unit="ns"),
            "v": rng.normal(size=n),
        }
    )
    order = list(range(n))
    random.Random(2).shuffle(order)
    for i in order:
        backend.store.write("stream", 1, df.iloc[[i]])
    backend.store.write("batch", 1, df)
    ref = df.sort_values("ts").groupby("symbol").last()
    streamed = backend.store.read("stream", 1, "ABCD")
    assert streamed == backend.store.read("batch", 1, "ABCD")
    assert {k: v["v"] for k, v in streamed.items()} == ref["v"].to_dict()


def test_materialize_equals_last_offline_value_as_of(backend: Backend, tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    off = OfflineStore(tmp_path)
    defn = off.register(FeatureDefinition("mom", 1, {"m": "float64", "cnt": "int64"}, transform="m1"))
    n = 400
    df = pd.DataFrame(
        {
            "symbol": rng.choice([f"X{i}" for i in range(12)], n),
            "ts": T0 + pd.to_timedelta(rng.integers(0, 5 * 86_400 * 10**9, n), unit="ns"),
            "m": rng.normal(size=n),
            "cnt": rng.integers(0, 100, n),
        }
    )
    off.write(defn, None, df)
    as_of = T0 + pd.Timedelta("2D 5h")
    updated = materialize(off, backend.store, "mom", 1, as_of)
    ref = df[df["ts"] <= as_of].sort_values("ts").groupby("symbol").last()
    assert updated == len(ref)
    got = backend.store.read("mom", 1, [f"X{i}" for i in range(12)])
    for sym, g in got.items():
        if sym not in ref.index:
            assert g is None
            continue
        r = ref.loc[sym]
        assert g == {"m": r["m"], "cnt": int(r["cnt"]), EVENT_TS: r["ts"].value}
    # materializing an earlier time later changes nothing (older event times never overwrite)
    assert materialize(off, backend.store, "mom", 1, T0 + pd.Timedelta("1D")) == 0
    assert backend.store.read("mom", 1, list(ref.index)) == {s: got[s] for s in ref.index}
    # max_age drops entities whose last value is too old at as_of
    later = T0 + pd.Timedelta("4D")
    fresh = df[(df["ts"] <= later) & (df["ts"] >= later - pd.Timedelta("3h"))]
    fresh_last = fresh.sort_values("ts").groupby("symbol").last()
    assert 0 < len(fresh_last) < 12
    assert materialize(off, backend.store, "mom", 1, later, max_age="3h") == len(fresh_last)
    got = backend.store.read("mom", 1, list(fresh_last.index))
    assert {s: g["m"] for s, g in got.items()} == fresh_last["m"].to_dict()


def test_bad_rows_raise(backend: Backend) -> None:
    with pytest.raises(ValueError, match=r"^ts: missing column"):
        backend.store.write("px", 1, pd.DataFrame({"symbol": ["A"], "v": [1.0]}))
    with pytest.raises(ValueError, match=r"^_event_ts: reserved"):
        backend.store.write("px", 1, pd.DataFrame({"symbol": ["A"], "ts": [T0], "_event_ts": [1]}))


def test_redis_layout_one_hash_per_entity_with_ttl(redis_url: str) -> None:
    store = RedisOnlineStore(redis_url, prefix=f"test:fs:{uuid.uuid4().hex}:", ttl_s=30)
    try:
        store.write("px", 3, pd.DataFrame({"symbol": ["A", "B"], "ts": [T0, T0], "v": [1.5, 2.5]}))
        key = store.key("px", 3, "A")
        assert key == f"{store.prefix}px:v3:A"
        h = store.client.hgetall(key)
        assert set(h) == {b"v", b"_event_ts"} and h[b"v"] == b"1.5"
        assert 0 < store.client.pttl(key) <= 30_000
        assert len(list(store.client.scan_iter(match=store.prefix + "*"))) == 2
    finally:
        assert store.clear() == 2
        store.client.close()
