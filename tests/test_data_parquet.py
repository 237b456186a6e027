"""Parquet recording and replay: exact round trips, window and symbol filters, partition pruning.

The reference is the stream itself: replay must give back the recorded rows bit for bit, in the same order,
and a filtered replay must equal the same filter applied in memory. Pruning is shown by corrupting files outside
the selection: a replay that opened them would fail.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tradesys.core.schemas import BAR_SCHEMA, TRADE_SCHEMA
from tradesys.data.book_schema import BOOK_SCHEMA
from tradesys.data.orderbook import SyntheticL2Source, ZIParams
from tradesys.data.parquet import ParquetRecorder, ParquetReplay, record
from tradesys.data.synthetic import SyntheticIntradaySource
from tradesys.data.ticks import SyntheticTicks


@pytest.fixture(scope="module")
def ticks() -> SyntheticTicks:
    return SyntheticTicks(["CC", "AA", "BB"], days=3, seed=5, events_per_day=3000)


@pytest.fixture()
def trades_root(tmp_path: Path, ticks: SyntheticTicks) -> Path:
    root = tmp_path / "trades"
    record(ticks.batches("trade"), root, rows_per_flush=5000)  # several flushes -> several files per partition
    return root


def test_ticks_round_trip_identical_batches(trades_root: Path, ticks: SyntheticTicks) -> None:
    original = [b for b in ticks.batches("trade") if b.num_rows]
    replay = ParquetReplay(trades_root, chunk_seconds=ticks.params.chunk_seconds)
    got = list(replay.batches())
    assert len(got) == len(original) == len(replay)
    for a, b in zip(got, original, strict=True):
        assert a.schema.equals(TRADE_SCHEMA)
        assert a.equals(b)
    assert replay.symbols == ["AA", "BB", "CC"]
    assert len(replay.dates()) == 3


def test_quotes_round_trip_with_append(tmp_path: Path, ticks: SyntheticTicks) -> None:
    """Two recordings appended to one dataset replay as the union, in canonical order."""
    chunks = list(ticks.batches("quote"))
    half = len(chunks) // 2
    record(chunks[:half], tmp_path / "q")
    record(chunks[half:], tmp_path / "q")
    got = ParquetReplay(tmp_path / "q").table()
    assert got.equals(pa.Table.from_batches(chunks).combine_chunks())


def test_bars_replay_one_batch_per_timestamp(tmp_path: Path) -> None:
    src = SyntheticIntradaySource(["X", "Y"], days=2, bar_seconds=300, seed=3)
    record(src.batches(), tmp_path / "bars")
    replay = ParquetReplay(tmp_path / "bars")
    got = list(replay.batches())
    want = list(src.batches())
    assert len(got) == len(want) == len(replay) == len(src)
    for a, b in zip(got, want, strict=True):
        assert a.schema.equals(BAR_SCHEMA) and a.equals(b)


def test_book_updates_keep_seq_order(tmp_path: Path) -> None:
    src = SyntheticL2Source(["B", "A"], ZIParams(band=30), seed=1, events_per_symbol=1500)
    updates = pa.concat_tables([c.updates for c in src.iter_chunks()])
    record(updates.to_batches(max_chunksize=700), tmp_path / "book")
    got = ParquetReplay(tmp_path / "book").table()
    assert got.schema.equals(BOOK_SCHEMA)
    assert got.equals(updates.combine_chunks())


def test_window_and_symbol_filter(trades_root: Path, ticks: SyntheticTicks) -> None:
    full = ticks.trades()
    days = ticks.params.sessions()
    start = np.datetime64(f"{days[0]}T15:00:00", "ns").astype(np.int64).item()
    end = np.datetime64(f"{days[1]}T16:00:00", "ns").astype(np.int64).item()
    replay = ParquetReplay(trades_root, start=start, end=end, symbols=["AA", "CC"])
    got = replay.table()
    ts = pc.cast(full["ts"], pa.int64())
    mask = pc.and_(
        pc.and_(pc.greater_equal(ts, start), pc.less_equal(ts, end)), pc.is_in(full["symbol"], pa.array(["AA", "CC"]))
    )
    want = full.filter(mask).combine_chunks()
    assert got.num_rows == want.num_rows > 0
    assert got.equals(want)
    # a bare date as end covers that whole UTC day
    one_day = ParquetReplay(trades_root, start=days[1], end=days[1]).table()
    d = pc.cast(pc.cast(full["ts"], pa.timestamp("ns")), pa.date32())
    assert one_day.equals(full.filter(pc.equal(d, pa.scalar(days[1], pa.date32()))).combine_chunks())


def test_partition_pruning(trades_root: Path, ticks: SyntheticTicks) -> None:
    days = [str(d) for d in ticks.params.sessions()]
    replay = ParquetReplay(
        trades_root, start=date.fromisoformat(days[0]), end=date.fromisoformat(days[1]), symbols=["BB"]
    )
    frags = replay.fragments()
    assert {Path(f.path).parent.name for f in frags} == {"symbol=BB"}
    assert {Path(f.path).parent.parent.name for f in frags} == {f"date={days[0]}", f"date={days[1]}"}
    before = replay.table()
    # corrupt every file outside the selection: the pruned replay never opens them
    for f in trades_root.rglob("*.parquet"):
        if "symbol=BB" not in str(f) or f"date={days[2]}" in str(f):
            f.write_bytes(b"not parquet")
    assert ParquetReplay(trades_root, start=days[0], end=days[1], symbols=["BB"]).table().equals(before)
    with pytest.raises(pa.ArrowInvalid):
        ParquetReplay(trades_root).table()


def test_bad_input(tmp_path: Path, trades_root: Path) -> None:
    with pytest.raises(ValueError, match=r"root: .* not a recorded dataset"):
        ParquetReplay(tmp_path / "nothing")
    with pytest.raises(ValueError, match=r"kind: .* holds 'trade'"):
        record([SyntheticTicks(days=1, events_per_day=200).quotes()], trades_root)
    bad = pa.table({"ts": pa.array([1], pa.timestamp("ns", tz="UTC")), "symbol": ["A"], "price": [1.0]})
    with pytest.raises(ValueError, match="missing column 'size'"):
        ParquetRecorder(tmp_path / "x", kind="trade").write(bad)
    with pytest.raises(ValueError, match="end: must not be before start"):
        ParquetReplay(trades_root, start="2024-01-03", end="2024-01-02")
