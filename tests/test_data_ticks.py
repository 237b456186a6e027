"""The synthetic trade/quote generator: determinism, schema, time order, and its stylised facts.

References are closed forms of the model: the Markov sign chain's autocorrelation (2p - 1)^k, the U-shaped
activity density's integral over a window, the Pareto tail index (Hill estimator), plus the market invariants
(spread >= one tick, trades at the prevailing bid or ask).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tradesys.core.schemas import QUOTE_SCHEMA, TRADE_SCHEMA
from tradesys.data.synthetic import SESSION_SECONDS
from tradesys.data.ticks import SyntheticTicks, TickParams


@pytest.fixture(scope="module")
def ticks() -> SyntheticTicks:
    return SyntheticTicks(["ZULU", "ALPHA", "MIKE"], days=2, seed=21)


@pytest.fixture(scope="module")
def tables(ticks: SyntheticTicks) -> tuple[pa.Table, pa.Table]:
    return ticks.trades(), ticks.quotes()


def _ns(t: pa.Table) -> np.ndarray:
    return np.asarray(t["ts"].cast(pa.int64()))


def test_deterministic_by_seed(tables) -> None:
    again = SyntheticTicks(["ZULU", "ALPHA", "MIKE"], days=2, seed=21)
    assert again.trades().equals(tables[0]) and again.quotes().equals(tables[1])
    other = SyntheticTicks(["ZULU", "ALPHA", "MIKE"], days=2, seed=22)
    assert not other.trades().equals(tables[0])


def test_schema_and_time_order(ticks, tables) -> None:
    trades, quotes = tables
    assert trades.schema.equals(TRADE_SCHEMA) and quotes.schema.equals(QUOTE_SCHEMA)
    for t in (trades, quotes):
        ts = _ns(t)
        assert (np.diff(ts) >= 0).all()
        # canonical order (ts, symbol)
        df = pd.DataFrame({"ts": ts, "s": t["symbol"].to_pylist()})
        assert df.equals(df.sort_values(["ts", "s"], kind="stable").reset_index(drop=True))
        assert set(t["symbol"].to_pylist()) == {"ZULU", "ALPHA", "MIKE"}
    chunk_ns = round(ticks.params.chunk_seconds * 1e9)
    for c in ticks.iter_chunks():
        assert c.end_ns - c.start_ns <= chunk_ns
        for b in (c.trades, c.quotes):
            ts = _ns(pa.Table.from_batches([b]))
            assert ((ts >= c.start_ns) & (ts < c.end_ns)).all()


def test_spread_positive_and_trades_at_prevailing_quote(tables) -> None:
    trades, quotes = tables
    tick = TickParams().tick_size
    spread = np.asarray(quotes["ask"]) - np.asarray(quotes["bid"])
    assert spread.min() >= tick - 1e-9
    assert (np.asarray(quotes["bid"]) > 0).all()
    # as-of join: each trade against the last quote of its symbol at or before it
    q = quotes.to_pandas().sort_values("ts", kind="stable")
    t = trades.to_pandas().sort_values("ts", kind="stable")
    j = pd.merge_asof(t, q, on="ts", by="symbol", allow_exact_matches=True)
    buys, sells = j["aggressor"] > 0, j["aggressor"] < 0
    assert (buys | sells).all()
    np.testing.assert_array_equal(j.loc[buys, "price"], j.loc[buys, "ask"])
    np.testing.assert_array_equal(j.loc[sells, "price"], j.loc[sells, "bid"])


def test_trade_sign_autocorrelation_matches_markov_chain(tables) -> None:
    """Lag-k autocorrelation of trade signs is (2p - 1)^k for the two-state chain with persistence p."""
    p = TickParams().sign_persistence
    trades = tables[0].to_pandas()
    for _, g in trades.groupby("symbol"):
        s = g["aggressor"].to_numpy(float)
        for k in (1, 2, 5):
            rho = np.corrcoef(s[:-k], s[k:])[0, 1]
            assert rho > 0
            assert rho == pytest.approx((2 * p - 1) ** k, abs=0.04)


def test_u_shaped_intraday_volume(ticks, tables) -> None:
    """Trade count per 30-minute bucket follows the U-shaped density's integral; open and close beat midday."""
    trades = tables[0]
    ts = _ns(trades)
    day = ts // (86_400 * 10**9)
    open_ns = np.asarray(
        [pd.Timestamp(d, tz="UTC").value + (14 * 3600 + 1800) * 10**9 for d in ticks.params.sessions()]
    )
    x = (ts - open_ns[np.searchsorted(np.unique(day), day)]) / (SESSION_SECONDS * 1e9)
    edges = np.linspace(0, 1, 14)  # 13 half-hour buckets
    counts, _ = np.histogram(x, edges)
    volume, _ = np.histogram(x, edges, weights=np.asarray(trades["size"]))
    expected = np.diff(ticks.params.activity_cdf(edges)) * len(x)
    assert np.abs(counts - expected).max() < 5 * np.sqrt(expected).max()
    mid = volume[5:8].mean()
    assert volume[0] > 1.5 * mid and volume[-1] > 1.5 * mid


def test_sizes_heavy_tailed(tables) -> None:
    """Hill estimator on the top 5 % of sizes recovers the Pareto tail index within 20 %."""
    alpha = TickParams().size_alpha
    size = np.sort(np.asarray(tables[0]["size"]))[::-1]
    k = len(size) // 20
    hill = 1.0 / np.mean(np.log(size[:k] / size[k]))
    assert hill == pytest.approx(alpha, rel=0.2)
    assert size.max() > 50 * np.median(size)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="trade_fraction"):
        TickParams(trade_fraction=1.5)
    with pytest.raises(ValueError, match="symbols"):
        SyntheticTicks("ABC")
    with pytest.raises(ValueError, match="tick_size"):
        TickParams(tick_size=0)
    with pytest.raises(ValueError, match="kind"):
        next(SyntheticTicks(days=1).batches("bars"))
