"""The FeatureActor beside the live loop: after a run, the online store (the real Redis) holds, for every symbol,
the features of its last bar, equal to TA-Lib computed over the whole history; the loop's trading is unchanged."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import talib

from tradesys.backtest.runner import run_backtest
from tradesys.config import load_config
from tradesys.data import make_source
from tradesys.featurestore import RedisOnlineStore
from tradesys.ledger import open_ledger
from tradesys.live import run_live

from .ledger_checks import trade_record


@pytest.mark.ray
@pytest.mark.slow
def test_feature_actor_keeps_the_online_store_current(ray_session: None, redis_url: str, tmp_path: Path) -> None:
    name = f"live_{uuid.uuid4().hex[:8]}"
    cfg = load_config(None, ["data.end=2016-12-31", "features.enabled=true", "features.online='redis'",
                             f"features.redis_url={redis_url!r}", f"features.name={name!r}",
                             "features.max_in_flight=2", f"ledger.url='sqlite:///{tmp_path}/live.db'"])
    summary = run_live(cfg, show_progress=False, run_id="t-features")
    assert summary["reason"] == "completed" and summary["features"]["batches"] == summary["steps"]
    bars = pa.Table.from_batches(list(make_source(cfg.data).batches())).to_pandas()
    store = RedisOnlineStore(redis_url)
    try:
        got = store.read(name, 1, sorted(bars.symbol.unique()))
        for sym, g in bars.groupby("symbol"):
            g = g.sort_values("ts")
            c, h, lo = g.close.to_numpy(), g.high.to_numpy(), g.low.to_numpy()
            row = got[sym]
            assert row is not None, sym
            assert row["sma20"] == pytest.approx(talib.SMA(c, 20)[-1], rel=1e-10)
            assert row["rsi14"] == pytest.approx(talib.RSI(c, 14)[-1], rel=1e-9)
            assert row["atr14"] == pytest.approx(talib.ATR(h, lo, c, 14)[-1], rel=1e-9)
            upper = talib.BBANDS(c, 20, 2.0, 2.0)[0][-1]
            assert row["bb20_upper"] == pytest.approx(upper, rel=1e-10)
            assert np.isfinite(row["ema20"])
    finally:
        for key in store.client.scan_iter(f"*{name}*"):
            store.client.delete(key)
    _, bt = run_backtest(cfg)
    assert trade_record(open_ledger(f"sqlite:///{tmp_path}/live.db")) == trade_record(bt)


@pytest.mark.ray
def test_restarted_feature_actor_rebuilds_its_state_from_the_booked_steps(ray_session: None, tmp_path: Path) -> None:
    """A FeatureActor started on a ledger that has booked steps (a resume, or Ray restarting it) first replays the
    bars up to the last booked step: its next values equal TA-Lib over the whole history. A cold one has none."""
    import ray

    from tradesys.actors.children import LedgerActor
    from tradesys.actors.features import FeatureActor

    url = f"sqlite:///{tmp_path}/resume.db"
    booked = load_config(None, ["data.symbols=['AAPL','JPM']", "data.end=2016-06-30", f"ledger.url='{url}'"])
    run_backtest(booked, url)
    cfg = load_config(None, ["data.symbols=['AAPL','JPM']", "data.end=2016-07-20"])
    batches = list(make_source(cfg.data).batches())
    last_booked = max(int(r["ts_ns"]) for r in open_ledger(url).equity_curve())
    rest = [b for b in batches if b.num_rows and int(b.column("ts")[0].value) > last_booked]
    assert 5 <= len(rest) < 20  # fewer bars than the SMA window: a cold actor cannot have sma20 yet

    ledger = LedgerActor.remote(url, cfg.initial_cash)
    warm = FeatureActor.remote(cfg.features, ["AAPL", "JPM"], cfg.data, ledger)
    cold = FeatureActor.remote(cfg.features, ["AAPL", "JPM"])
    for b in rest:
        ray.get([warm.on_bars.remote(b), cold.on_bars.remote(b)])
    got, cold_got = ray.get([warm.read.remote(["AAPL", "JPM"]), cold.read.remote(["AAPL", "JPM"])])
    bars = pa.Table.from_batches(batches).to_pandas()
    for sym, g in bars.groupby("symbol"):
        c = g.sort_values("ts").close.to_numpy()
        assert got[sym]["sma20"] == pytest.approx(talib.SMA(c, 20)[-1], rel=1e-10)
        assert got[sym]["rsi14"] == pytest.approx(talib.RSI(c, 14)[-1], rel=1e-9)
        assert cold_got[sym] is None
