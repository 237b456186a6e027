"""Stream processing against pandas: tumbling bars vs groupby/resample, the as-of join vs ``merge_asof``,
and each late-data policy on planted out-of-order trades (counts and corrections)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tradesys.bus.stream import AsofJoin, TumblingBars
from tradesys.core.schemas import QUOTE_SCHEMA, TRADE_SCHEMA

T0 = pd.Timestamp("2024-03-01 14:30", tz="UTC")
SYMS = ["AAPL", "MSFT", "SPY"]


def make_trades(n: int = 3000, seed: int = 1, minutes: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ts = T0 + pd.to_timedelta(np.sort(rng.integers(0, minutes * 60 * 10**9, n)), unit="ns")
    sym = rng.choice(SYMS, n)
    price = 100 + np.cumsum(rng.normal(0, 0.05, n))
    size = rng.integers(1, 1000, n).astype(float)
    return pd.DataFrame({"ts": ts, "symbol": sym, "price": price, "size": size, "aggressor": np.int8(1)})


def to_arrow(df: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(df.reset_index(drop=True), schema=TRADE_SCHEMA, preserve_index=False)


def reference_bars(df: pd.DataFrame, window: str = "1min") -> pd.DataFrame:
    """pandas reference: open/close by time (stable for ties), vwap from notional / volume, empty bins dropped."""
    d = df.sort_values("ts", kind="stable").assign(notional=lambda x: x.price * x["size"])
    g = d.groupby("symbol")[["ts", "price", "size", "notional"]].resample(window, on="ts")
    out = g.agg(
        open=("price", "first"),
        high=("price", "max"),
        low=("price", "min"),
        close=("price", "last"),
        volume=("size", "sum"),
        notional=("notional", "sum"),
        trade_count=("price", "size"),
    ).reset_index()
    out = out[out.trade_count > 0].copy()
    out["vwap"] = out.notional / out.volume
    return out.drop(columns="notional").sort_values(["symbol", "ts"]).reset_index(drop=True)


def run(bars: TumblingBars, df: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Feed ``df`` in arrival order in random-size chunks; return every emitted bar (all revisions)."""
    rng = np.random.default_rng(seed)
    parts, i = [], 0
    while i < len(df):
        k = int(rng.integers(1, 200))
        out = bars.update(to_arrow(df.iloc[i : i + k]))
        if out.num_rows:  # no window is emitted before the watermark has passed its end
            ends = out.column("ts").to_pandas() + pd.Timedelta(bars.window, "ns")
            assert (ends.astype("int64") <= bars.watermark).all() or bars.policy == "correct"
        parts.append(out)
        i += k
    parts.append(bars.flush())
    return pa.concat_tables(parts).to_pandas()


def final(emitted: pd.DataFrame) -> pd.DataFrame:
    last = emitted.sort_values("revision").groupby(["symbol", "ts"], as_index=False).last()
    return last.sort_values(["symbol", "ts"]).reset_index(drop=True)


def assert_bars_equal(got: pd.DataFrame, ref: pd.DataFrame) -> None:
    cols = ["symbol", "ts", "open", "high", "low", "close", "volume", "vwap", "trade_count"]
    pd.testing.assert_frame_equal(
        got[cols].reset_index(drop=True), ref[cols].reset_index(drop=True), check_dtype=False, rtol=1e-12
    )


def test_streaming_bars_equal_pandas_resample() -> None:
    df = make_trades()
    bars = TumblingBars("1min")
    emitted = run(bars, df)
    assert (emitted.revision == 0).all() and not emitted.duplicated(["symbol", "ts"]).any()
    assert_bars_equal(emitted.sort_values(["symbol", "ts"]), reference_bars(df))
    assert bars.stats.late_dropped == 0 and bars.stats.records_in == len(df)


def test_watermark_absorbs_disorder_within_allowed_lateness() -> None:
    df = make_trades(seed=2)
    rng = np.random.default_rng(3)  # arrival = event time + up to 20 s delay: out of order by up to 20 s
    arrival = df.ts + pd.to_timedelta(rng.integers(0, 20 * 10**9, len(df)), unit="ns")
    shuffled = df.iloc[np.argsort(arrival.to_numpy(), kind="stable")]
    assert not shuffled.ts.is_monotonic_increasing
    bars = TumblingBars("1min", policy="watermark", allowed_lateness="30s")
    emitted = run(bars, shuffled)
    assert bars.stats.late_dropped == 0
    assert_bars_equal(emitted.sort_values(["symbol", "ts"]), reference_bars(df))
    strict = TumblingBars("1min", policy="watermark", allowed_lateness="1s")  # too small: some records are late
    run(strict, shuffled)
    assert strict.stats.late_dropped > 0


def plant_late(df: pd.DataFrame, n: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Insert ``n`` trades stamped 3-4 minutes before the trade they follow (each in a distinct window)."""
    rows, planted = [], []
    at = np.linspace(len(df) // 4, len(df) - 50, n).astype(int)
    for j, (a, b) in enumerate(zip(np.r_[0, at], np.r_[at, len(df)], strict=True)):
        rows.append(df.iloc[a:b])
        if j < n:
            late = df.iloc[[b]].copy()
            late["ts"] = late.ts - pd.Timedelta(minutes=3, seconds=30)
            late["price"] = 500.0 + j  # a new high: the correction is visible
            rows.append(late)
            planted.append(late)
    return pd.concat(rows), pd.concat(planted)


def test_drop_policy_counts_and_drops_late_records() -> None:
    df = make_trades(seed=4)
    stream, planted = plant_late(df)
    bars = TumblingBars("1min", policy="drop")
    emitted = run(bars, stream)
    assert bars.stats.late_dropped == len(planted) == 5
    assert_bars_equal(emitted.sort_values(["symbol", "ts"]), reference_bars(df))  # as if they never came
    assert emitted.high.max() < 500
    with pytest.raises(ValueError, match="allowed_lateness"):
        TumblingBars("1min", policy="drop", allowed_lateness="5s")


def test_watermark_policy_drops_records_beyond_allowed_lateness() -> None:
    df = make_trades(seed=5)
    stream, planted = plant_late(df)
    bars = TumblingBars("1min", policy="watermark", allowed_lateness="10s")
    emitted = run(bars, stream)
    assert bars.stats.late_dropped == len(planted)
    assert_bars_equal(emitted.sort_values(["symbol", "ts"]), reference_bars(df))


def test_correct_policy_re_emits_corrected_windows() -> None:
    df = make_trades(seed=6)
    stream, planted = plant_late(df)
    bars = TumblingBars("1min", policy="correct", retention="10min")
    emitted = run(bars, stream)
    assert bars.stats.corrections == len(planted) and bars.stats.late_dropped == 0
    revised = emitted[emitted.revision > 0]
    assert len(revised) == len(planted) and (revised.revision == 1).all()
    windows = planted.ts.dt.floor("1min")
    assert sorted(zip(revised.symbol, revised.ts, strict=True)) == sorted(zip(planted.symbol, windows, strict=True))
    assert sorted(revised.high) == sorted(planted.price)  # the corrected windows carry the late prices
    assert_bars_equal(final(emitted), reference_bars(pd.concat([df, planted])))  # final = batch on all trades
    old = TumblingBars("1min", policy="correct", retention="1min")  # 3.5 min late > 1 min retention
    run(old, stream)
    assert old.stats.late_dropped == len(planted) and old.stats.corrections == 0


def make_quotes(n: int = 4000, seed: int = 9) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ts = T0 - pd.Timedelta("5s") + pd.to_timedelta(np.sort(rng.integers(0, 30 * 60 * 10**9, n)), unit="ns")
    mid = 100 + np.cumsum(rng.normal(0, 0.02, n))
    return pd.DataFrame(
        {
            "ts": ts,
            "symbol": rng.choice(SYMS, n),
            "bid": mid - 0.01,
            "ask": mid + 0.01,
            "bid_size": rng.integers(1, 10, n) * 100.0,
            "ask_size": rng.integers(1, 10, n) * 100.0,
        }
    )


def stream_join(j: AsofJoin, trades: pd.DataFrame, quotes: pd.DataFrame, step: str = "20s") -> pd.DataFrame:
    """Interleave the two streams by time slices, trades of a slice arriving BEFORE its quotes."""
    out = []
    edges = pd.date_range(T0 - pd.Timedelta("10s"), trades.ts.max() + pd.Timedelta(step), freq=step)
    for a, b in itertools.pairwise(edges):
        tr = trades[(trades.ts >= a) & (trades.ts < b)]
        qu = quotes[(quotes.ts >= a) & (quotes.ts < b)]
        out.append(j.on_trades(pa.Table.from_pandas(tr, schema=TRADE_SCHEMA, preserve_index=False)))
        out.append(j.on_quotes(pa.Table.from_pandas(qu, schema=QUOTE_SCHEMA, preserve_index=False)))
    out.append(j.flush())
    return pd.concat([t.to_pandas() for t in out if t is not None], ignore_index=True)


@pytest.mark.parametrize("tolerance", [None, "2s"])
def test_asof_join_equals_merge_asof(tolerance: str | None) -> None:
    trades, quotes = make_trades(seed=7), make_quotes()
    got = stream_join(AsofJoin(tolerance=tolerance), trades, quotes)
    ref = pd.merge_asof(
        trades.sort_values("ts"),
        quotes.sort_values("ts"),
        on="ts",
        by="symbol",
        tolerance=None if tolerance is None else pd.Timedelta(tolerance),
    )
    cols = ["ts", "symbol", "price", "size", "bid", "ask", "bid_size", "ask_size"]
    key = ["ts", "symbol", "price"]
    pd.testing.assert_frame_equal(
        got[cols].sort_values(key).reset_index(drop=True), ref[cols].sort_values(key).reset_index(drop=True)
    )
    assert (got.quote_ts.dropna() <= got.ts[got.quote_ts.notna()]).all()
    if tolerance is not None:
        assert got.bid.isna().any()  # the tolerance really removed stale matches


def test_asof_join_has_no_look_ahead() -> None:
    trades, quotes = make_trades(seed=8, n=500), make_quotes(seed=10)
    own = -1.0 - np.arange(len(trades))  # trade k's own quote, 1 ns in its future, is tagged bid = -(k + 1)
    future = trades.assign(ts=trades.ts + pd.Timedelta(1, "ns"), bid=own, ask=own, bid_size=0.0, ask_size=0.0)
    planted = pd.concat([quotes, future[quotes.columns]]).sort_values("ts", kind="stable")
    got = stream_join(AsofJoin(), trades, planted).sort_values("ts", kind="stable").reset_index(drop=True)
    assert len(got) == len(trades) and (got.ts.to_numpy() == trades.ts.to_numpy()).all()
    assert (got.bid.to_numpy() != own).all()  # no trade ever sees its own future quote
    assert (got.quote_ts <= got.ts).all()
    ref = pd.merge_asof(trades, planted, on="ts", by="symbol")
    np.testing.assert_array_equal(got.bid.to_numpy(), ref.bid.to_numpy())
    exact = trades.iloc[:50].assign(bid=-2.0, ask=-2.0, bid_size=0.0, ask_size=0.0)  # same-ns quote: allowed
    got2 = stream_join(AsofJoin(), trades.iloc[:50], pd.concat([quotes, exact[quotes.columns]]).sort_values("ts"))
    assert (got2.bid == -2.0).sum() >= 45  # ties on ts (several trades/ns aside) take the same-time quote
