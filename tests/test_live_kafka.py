"""The live loop with Kafka in the middle, by configuration alone (`data.bus = "kafka"`), on a real Tansu broker:
the run publishes its data to the topic, the MarketDataActor consumes it, and the trading is identical to the
in-process backtest. Offsets are committed only for booked steps."""

from __future__ import annotations

import uuid
from pathlib import Path

import pandas as pd
import pytest

from tradesys.backtest.runner import run_backtest
from tradesys.bus import MemoryBus
from tradesys.bus.kafka import KafkaBus
from tradesys.config import ConfigError, load_config
from tradesys.core.schemas import batch_ts
from tradesys.data import make_source
from tradesys.data.busfeed import BusBarReader, publish_batches
from tradesys.ledger import open_ledger
from tradesys.live import run_live

from .ledger_checks import assert_ledger_consistent, closes_by_ts, trade_record


def test_reader_commits_only_acknowledged_steps_and_skips_booked_ones() -> None:
    bus = MemoryBus()
    bus.create_topic("bars")
    source = make_source(load_config(None, ["data.end=2016-03-31"]).data)
    batches = list(source.batches())
    assert publish_batches(bus.producer(), "bars", batches) == len(batches)
    reader = BusBarReader(bus.consumer(["bars"], "g"), idle_timeout_s=2)
    got = [reader.next_batch() for _ in range(10)]
    assert [ts for ts, _ in got] == [batch_ts(b) for b in batches[:10]]
    pd.testing.assert_frame_equal(got[3][1].to_pandas(), batches[3].to_pandas())  # NaN volumes: compare as frames
    assert reader.ack(got[4][0]) == 5 and bus.committed("g", "bars", 0) == 5  # only what was booked
    reader.close()
    # a restarted reader resumes at the committed offset; the loop's resume point skips what the ledger holds
    again = BusBarReader(bus.consumer(["bars"], "g"), idle_timeout_s=2)
    again.resume_after(got[6][0])
    ts, _ = again.next_batch()
    assert ts == batch_ts(batches[7]) and again.skipped == 2
    rest = 1
    while again.next_batch()[0] >= 0:
        rest += 1
    assert rest == len(batches) - 7  # ... to the end marker


def test_kafka_mode_needs_a_bootstrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRADESYS_KAFKA_BOOTSTRAP", raising=False)
    cfg = load_config(None, ["data.bus=kafka"])
    with pytest.raises(ConfigError, match=r"data\.kafka_bootstrap"):
        run_live(cfg, show_progress=False)


@pytest.mark.ray
@pytest.mark.slow
def test_live_loop_over_kafka_matches_backtest(ray_session: None, tansu_broker: str, tmp_path: Path) -> None:
    topic = f"bars-{uuid.uuid4().hex[:8]}"
    cfg = load_config(None, ["data.end=2016-09-30", "data.bus=kafka", f"data.kafka_bootstrap={tansu_broker!r}",
                             f"data.topic={topic!r}", f"data.consumer_group={topic!r}",
                             f"ledger.url='sqlite:///{tmp_path}/live.db'"])
    summary = run_live(cfg, show_progress=False, run_id="t-kafka")
    assert summary["reason"] == "completed"
    live = open_ledger(f"sqlite:///{tmp_path}/live.db")
    _, bt = run_backtest(cfg)
    assert summary["steps"] == len(make_source(cfg.data))
    assert trade_record(live) == trade_record(bt)
    assert_ledger_consistent(live, cfg.initial_cash, closes_by_ts(make_source(cfg.data)))
    # every booked step's offset was committed (the end marker too): nothing left for the group to read
    bus = KafkaBus(tansu_broker)
    consumer = bus.consumer([topic], topic)
    try:
        assert consumer.poll(max_records=10, timeout_ms=2000) == []
    finally:
        consumer.close()
        bus.close()
