"""The FeatureActor: streaming technical features of every bar batch, kept current in the online store.

It sits beside the trading loop, not in it: the Supervisor hands it each step's bar batch by object reference
and does not wait for the answer, but it never lets more than `features.max_in_flight` batches queue up (it
waits for the oldest first), so a slow feature computation slows the feed instead of growing an unbounded
queue (backpressure). State is O(1) per symbol (`tradesys.features.streaming`); values go to the online store
(in-process, or Redis for other readers such as model serving) under `features.name` / `features.version`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import ray

from tradesys.config import DataConfig, FeaturesConfig
from tradesys.logs import get_logger

LIVE_COLUMNS = ("sma20", "ema20", "rsi14", "atr14", "bb20_upper", "bb20_lower")
log = get_logger("tradesys.actors.features")


def live_feature_bank(symbols: Sequence[str]) -> Any:
    """The live feature set: SMA20, EMA20, RSI14, ATR14 and Bollinger(20, 2) bands (TA-Lib conventions)."""
    from tradesys.features.streaming import ATR, EMA, RSI, SMA, Bollinger, FeatureBank

    syms = list(symbols)
    return FeatureBank(syms, {"sma20": SMA(syms, 20), "ema20": EMA(syms, 20), "rsi14": RSI(syms, 14),
                              "atr14": ATR(syms, 14), "bb20": Bollinger(syms, 20)})


def make_online_store(cfg: FeaturesConfig) -> Any:
    from tradesys.featurestore import InMemoryOnlineStore, RedisOnlineStore

    if cfg.online == "redis":
        url = cfg.redis_url or os.environ.get("TRADESYS_REDIS_URL", "redis://127.0.0.1:6379/0")
        return RedisOnlineStore(url, ttl_s=cfg.ttl_s)
    return InMemoryOnlineStore(ttl_s=cfg.ttl_s)


@ray.remote(num_cpus=0, max_concurrency=1)
class FeatureActor:
    def __init__(
        self, cfg: FeaturesConfig, symbols: Sequence[str], data: DataConfig | None = None, ledger: Any = None
    ) -> None:
        """With `data` and the run's `ledger`, a (re)started actor first rebuilds its streaming state from the bars
        up to the ledger's last booked step, so its features equal those of an undisturbed run."""
        from tradesys.actors.children import bars_upto, booked_ts

        self.cfg = cfg
        self.bank = live_feature_bank(symbols)
        self.store = make_online_store(cfg)
        self.batches = 0
        self.last_ts_ns = -1
        upto = booked_ts(ledger) if data is not None else 0
        if data is not None and upto > 0:
            self.bank.warm_up(bars_upto(data, upto))
            self.last_ts_ns = upto
        log.info("features started", extra={"feature": cfg.name, "version": cfg.version, "online": cfg.online})

    def on_bars(self, bars: pa.RecordBatch) -> int:
        """Advance the features by one bar batch and publish the new values; returns the rows written."""
        ts = int(bars.column("ts")[0].value)
        if ts <= self.last_ts_ns:
            return 0  # a replayed step (after a restart of the loop): state must not advance twice
        out = self.bank.update(bars)
        frame = out.to_pandas()
        cols = ["symbol", "ts", *(c for c in frame.columns if c in LIVE_COLUMNS)]
        n = self.store.write(self.cfg.name, self.cfg.version, frame[cols].dropna(subset=["sma20"]))
        self.batches += 1
        self.last_ts_ns = ts
        return n

    def read(self, symbols: Sequence[str]) -> dict[str, Any]:
        return self.store.read(self.cfg.name, self.cfg.version, list(symbols))

    def stats(self) -> dict[str, Any]:
        return {"batches": self.batches, "last_ts_ns": self.last_ts_ns, "online": self.cfg.online}
