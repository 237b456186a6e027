"""`tradesys data ...`: generate -> Parquet equals the generator, backfill -> the store holds TA-Lib's values (and a
rerun changes nothing), replay -> a real Kafka-protocol broker carries the source's batches, topics shows them."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import talib
from typer.testing import CliRunner

from tradesys.cli import app
from tradesys.config import load_config
from tradesys.core.schemas import batch_ts
from tradesys.data import make_source

runner = CliRunner()


def invoke(*args: str) -> str:
    result = runner.invoke(app, ["data", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_generate_records_exactly_what_the_generator_makes(tmp_path: Path) -> None:
    from tradesys.data.parquet import ParquetReplay
    from tradesys.data.ticks import SyntheticTicks

    invoke("generate", "--out", str(tmp_path / "t"), "--kind", "trades", "--symbols", "A,B", "--seed", "3")
    got = ParquetReplay(tmp_path / "t").table().to_pandas().sort_values(["ts", "symbol"]).reset_index(drop=True)
    ref = SyntheticTicks(["A", "B"], days=1, seed=3).trades().to_pandas().sort_values(["ts", "symbol"])
    pd.testing.assert_frame_equal(got[ref.columns], ref.reset_index(drop=True), check_dtype=False)


def test_backfill_writes_talib_values_idempotently(tmp_path: Path) -> None:
    from tradesys.featurestore import OfflineStore

    args = ("backfill", "--store", str(tmp_path / "fs"), "--start", "2018-03-01", "--end", "2018-06-30")
    invoke(*args)
    table = OfflineStore(tmp_path / "fs").read("technical_daily", 1).to_pandas()
    # the command reads 120 days of warm-up before --start (the default): the same bars here
    src = make_source(load_config(None, ["data.start=2017-11-01", "data.end=2018-06-30"]).data)
    bars = pa.Table.from_batches(list(src.batches())).to_pandas()
    aapl = bars[bars.symbol == "AAPL"].sort_values("ts")
    sma = pd.Series(talib.SMA(aapl.close.to_numpy(), 20), index=aapl.ts.to_numpy())
    rsi = pd.Series(talib.RSI(aapl.close.to_numpy(), 14), index=aapl.ts.to_numpy())
    mine = table[table.symbol == "AAPL"].set_index("ts")
    assert len(mine) == ((aapl.ts >= "2018-03-01") & (aapl.ts <= "2018-07-01")).sum()
    np.testing.assert_allclose(mine.sma20.to_numpy(), sma.reindex(mine.index).to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(mine.rsi14.to_numpy(), rsi.reindex(mine.index).to_numpy(), rtol=1e-12)
    invoke(*args)
    again = OfflineStore(tmp_path / "fs").read("technical_daily", 1).to_pandas()
    pd.testing.assert_frame_equal(again.sort_values(["symbol", "ts"]).reset_index(drop=True),
                                  table.sort_values(["symbol", "ts"]).reset_index(drop=True))


@pytest.mark.slow
def test_replay_to_kafka_and_topics(tansu_broker: str) -> None:
    from tradesys.bus.kafka import KafkaBus
    from tradesys.data.busfeed import BusBarReader

    topic = f"replay-{uuid.uuid4().hex[:8]}"
    out = invoke("replay", "--topic", topic, "--bootstrap", tansu_broker, "--start", "2016-01-01",
                 "--end", "2016-02-29")
    src = make_source(load_config(None, ["data.start=2016-01-01", "data.end=2016-02-29"]).data)
    batches = list(src.batches())
    assert f"published {len(batches)} messages" in out
    bus = KafkaBus(tansu_broker)
    reader = BusBarReader(bus.consumer([topic], topic), idle_timeout_s=20)
    got = []
    while (ts := reader.next_batch())[0] >= 0:
        got.append(ts)
    reader.close()
    bus.close()
    assert [ts for ts, _ in got] == [batch_ts(b) for b in batches]
    pd.testing.assert_frame_equal(got[-1][1].to_pandas(), batches[-1].to_pandas())
    listing = invoke("topics", "--bootstrap", tansu_broker)
    assert topic in listing


def test_bad_input_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "generate", "--out", str(tmp_path), "--kind", "options"])
    assert result.exit_code == 2 and "kind:" in result.output
    result = runner.invoke(app, ["data", "replay", "--topic", "x"], env={"TRADESYS_KAFKA_BOOTSTRAP": ""})
    assert result.exit_code == 2 and "bootstrap:" in result.output


@pytest.mark.slow
def test_topics_group_shows_committed_offsets_and_lag(tansu_broker: str) -> None:
    """Regression: `topics --group` raised AttributeError (kafka-python 3 has no list_consumer_group_offsets)."""
    import json
    from collections import Counter

    from tradesys.bus.kafka import KafkaBus

    topic, group = f"grp-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    bus = KafkaBus(tansu_broker, consumer_config={"max_poll_interval_ms": 5000})
    bus.create_topic(topic, 2)
    producer = bus.producer()
    for i in range(12):
        producer.send(topic, f"v{i}".encode(), key=f"k{i}".encode())
    producer.flush()
    consumer = bus.consumer([topic], group)
    got: list = []
    for _ in range(60):
        got += consumer.poll(timeout_ms=500)
        if len(got) >= 12:
            break
    assert len(got) == 12
    done = got[:7]  # commit part of what was read: the rest is the lag
    consumer.commit(done)
    consumer.close()
    bus.close()
    # the independent record: what was produced and committed, per partition (a fresh topic starts at offset 0)
    produced = Counter(r.partition for r in got)
    committed = {p: max(r.offset for r in done if r.partition == p) + 1 for p in {r.partition for r in done}}

    r = runner.invoke(app, ["data", "topics", "--bootstrap", tansu_broker, "--group", group, "--json"])
    assert r.exit_code == 0, r.output
    rows = {row["partition"]: row for row in json.loads(r.stdout) if row["topic"] == topic}
    assert set(rows) == {0, 1}
    for p, row in rows.items():
        assert row["end_offset"] == produced[p]
        assert row["committed"] == committed.get(p)
        assert row["lag"] == (None if p not in committed else produced[p] - committed[p])
    assert sum(row["end_offset"] - (row["committed"] or 0) for row in rows.values()) == 12 - 7  # conservation
    table = runner.invoke(app, ["data", "topics", "--bootstrap", tansu_broker, "--group", group])
    assert table.exit_code == 0 and "lag" in table.stdout and "committed" in table.stdout, table.output


def test_topics_unreachable_broker_is_one_line() -> None:
    from tests.conftest import free_port

    r = runner.invoke(app, ["data", "topics", "--bootstrap", f"127.0.0.1:{free_port()}", "--group", "g",
                            "--timeout", "1"])
    assert r.exit_code == 2, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: broker 127.0.0.1:") and "Unable to bootstrap" in lines[0]


def test_replay_to_unreachable_broker_is_one_line() -> None:
    from tests.conftest import free_port

    port = free_port()
    t0 = time.monotonic()
    r = runner.invoke(app, ["data", "replay", "--topic", "t", "--bootstrap", f"127.0.0.1:{port}", "--start",
                            "2016-01-01", "--end", "2016-01-10", "--timeout", "2"])
    assert time.monotonic() - t0 < 10, "--timeout 2 was not applied (kafka-python's own default is 30 s)"
    assert r.exit_code == 2, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --bootstrap: broker 127.0.0.1:{port} failed:"), r.stderr
