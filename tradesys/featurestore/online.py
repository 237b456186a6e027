"""Online feature store: the latest value per (feature version, entity) for low-latency serving.

One interface, two backends: `InMemoryOnlineStore` (the default, one process) and `RedisOnlineStore`.

Contract (tested once, against both backends):

* `write(feature, version, rows)` keeps, per entity, the row with the greatest event time. A write whose event
  time is older than the stored one is ignored (latest-wins by event time, not by arrival); an equal event time
  overwrites (a correction). Returns how many entities were updated.
* `read(feature, version, entities)` -> `{entity: {column: value, ..., "_event_ts": ns} | None}` for every
  requested entity; None when never written or expired.
* TTL is counted from the write (processing time), like Redis key expiry. Once a key expired, any write is
  accepted again.

Values round-trip as Python scalars (float, int, str, bool, None). Entity keys are strings.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa

from tradesys.featurestore.definitions import FeatureDefinition, _to_table, _to_utc_ns

EVENT_TS = "_event_ts"
_TS_OFFSET = 2**63  # int64 ns -> unsigned, so a fixed-width decimal string orders like the number


class OnlineStore(Protocol):
    def write(
        self,
        feature: str,
        version: int,
        rows: Any,
        *,
        entity: str = "symbol",
        event_time: str = "ts",
        ttl_s: float | None = None,
    ) -> int: ...

    def read(self, feature: str, version: int, entities: Iterable[str]) -> dict[str, dict[str, Any] | None]: ...


def latest_per_entity(
    rows: Any, entity: str = "symbol", event_time: str = "ts"
) -> list[tuple[str, int, dict[str, Any]]]:
    """(entity, event time ns, values) for the newest row of each entity in `rows`; ties keep the last row."""
    table = _to_table(rows)
    for col in (entity, event_time):
        if col not in table.column_names:
            raise ValueError(f"{col}: missing column in online write")
    if table.num_rows == 0:
        return []
    ents = table.column(entity)
    if ents.null_count:
        raise ValueError(f"{entity}: null entity key")
    ts_col = table.column(event_time)
    if ts_col.null_count:
        raise ValueError(f"{event_time}: null event time")
    try:
        ns = _to_utc_ns(ts_col).cast(pa.int64()).to_numpy()
    except pa.ArrowInvalid as exc:
        raise ValueError(f"{event_time}: {exc}") from None
    ent = ents.to_numpy(zero_copy_only=False).astype(str)
    codes, _ = pd.factorize(ent)
    order = np.lexsort((ns, codes))  # stable: among equal times the later row sorts last
    e = codes[order]
    last = order[np.append(e[1:] != e[:-1], True)]
    value_cols = [c for c in table.column_names if c not in (entity, event_time)]
    if EVENT_TS in value_cols:
        raise ValueError(f"{EVENT_TS}: reserved column name")
    picked = table.select(value_cols).take(pa.array(last)).to_pylist()
    return [(str(ent[i]), int(ns[i]), vals) for i, vals in zip(last.tolist(), picked, strict=True)]


class InMemoryOnlineStore:
    """A dict keyed by (feature, version, entity). `clock` (seconds, monotonic) is injectable for TTL tests."""

    def __init__(self, ttl_s: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self._data: dict[tuple[str, int, str], tuple[int, dict[str, Any], float | None]] = {}

    def _live(self, key: tuple[str, int, str]) -> tuple[int, dict[str, Any], float | None] | None:
        item = self._data.get(key)
        if item is not None and item[2] is not None and self.clock() >= item[2]:
            del self._data[key]
            return None
        return item

    def write(
        self,
        feature: str,
        version: int,
        rows: Any,
        *,
        entity: str = "symbol",
        event_time: str = "ts",
        ttl_s: float | None = None,
    ) -> int:
        ttl = self.ttl_s if ttl_s is None else ttl_s
        expires = None if ttl is None else self.clock() + ttl
        n = 0
        for ent, ns, vals in latest_per_entity(rows, entity, event_time):
            key = (feature, version, ent)
            cur = self._live(key)
            if cur is not None and cur[0] > ns:
                continue
            self._data[key] = (ns, vals, expires)
            n += 1
        return n

    def read(self, feature: str, version: int, entities: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        out: dict[str, dict[str, Any] | None] = {}
        for ent in entities:
            item = self._live((feature, version, str(ent)))
            out[str(ent)] = None if item is None else {**item[1], EVENT_TS: item[0]}
        return out

    def clear(self) -> None:
        self._data.clear()


# Compare-and-set in one server-side step: apply only when the stored event time is not newer.
# Event times travel as 20-digit zero-padded strings of ns + 2**63, so string order == time order
# (Lua numbers are doubles and would round ns timestamps).
_CAS_LUA = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and cur > ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], unpack(ARGV, 4))
local ttl = tonumber(ARGV[3])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
"""


def _enc_ts(ns: int) -> str:
    return f"{ns + _TS_OFFSET:020d}"


class RedisOnlineStore:
    """One Redis hash per (feature version, entity): a field per value column (JSON) plus `_event_ts`.

    Writes go through one pipeline per call, each key updated by a Lua compare-and-set so an older event
    time never replaces a newer one, even with concurrent writers. Reads are one pipelined HGETALL per entity.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "tradesys:fs:",
        ttl_s: float | None = None,
        client: Any = None,
    ) -> None:
        import redis

        self.client = client if client is not None else redis.Redis.from_url(url)
        self.prefix = prefix
        self.ttl_s = ttl_s
        self._cas = self.client.register_script(_CAS_LUA)

    def key(self, feature: str, version: int, entity: str) -> str:
        return f"{self.prefix}{feature}:v{version}:{entity}"

    def write(
        self,
        feature: str,
        version: int,
        rows: Any,
        *,
        entity: str = "symbol",
        event_time: str = "ts",
        ttl_s: float | None = None,
    ) -> int:
        ttl = self.ttl_s if ttl_s is None else ttl_s
        ttl_ms = 0 if ttl is None else max(1, round(ttl * 1000))
        latest = latest_per_entity(rows, entity, event_time)
        if not latest:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for ent, ns, vals in latest:
            args: list[Any] = [EVENT_TS, _enc_ts(ns), ttl_ms]
            for c, v in vals.items():
                args += [c, json.dumps(v)]
            self._cas(keys=[self.key(feature, version, ent)], args=args, client=pipe)
        return int(sum(pipe.execute()))

    def read(self, feature: str, version: int, entities: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        ents = [str(e) for e in entities]
        pipe = self.client.pipeline(transaction=False)
        for e in ents:
            pipe.hgetall(self.key(feature, version, e))
        out: dict[str, dict[str, Any] | None] = {}
        for e, h in zip(ents, pipe.execute(), strict=True):
            if not h:
                out[e] = None
                continue
            rec: dict[str, Any] = {}
            for k, v in h.items():
                k = k.decode() if isinstance(k, bytes) else k
                rec[k] = int(v) - _TS_OFFSET if k == EVENT_TS else json.loads(v)
            out[e] = rec
        return out

    def clear(self) -> int:
        """Delete every key under this store's prefix; returns how many."""
        keys = list(self.client.scan_iter(match=self.prefix + "*", count=1000))
        return int(self.client.delete(*keys)) if keys else 0


def materialize(
    offline: Any,
    online: OnlineStore,
    feature: str | FeatureDefinition,
    version: int | None,
    as_of: Any,
    *,
    max_age: Any = None,
    ttl_s: float | None = None,
) -> int:
    """Load each entity's latest offline value with event time <= `as_of` (and age <= `max_age`) into `online`.

    `offline` is an `OfflineStore`; returns how many entities the online store updated.
    """
    defn = feature if isinstance(feature, FeatureDefinition) else offline.registry.get(feature, version)
    table = offline.latest(defn, None, as_of, ttl=max_age)
    return online.write(defn.name, defn.version, table, entity=defn.entity, event_time=defn.event_time, ttl_s=ttl_s)
