"""The zero-intelligence L2 book: consistency of updates, trades and quotes, and the Smith et al. (2003) scaling.

References: conservation (replaying the published market-by-price updates onto an empty book must give the
simulator's own book, share for share); the no-crossing invariant of a continuous double auction; and the
dimensional analysis of Smith, Farmer, Gillemot & Krishnamurthy, Quantitative Finance 3 (2003) 481-514:
mean spread = (mu / alpha) f(delta / mu) with f increasing.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from tradesys.core.schemas import QUOTE_SCHEMA, TRADE_SCHEMA
from tradesys.data.book_schema import (
    ACTION_ADD,
    ACTION_CANCEL,
    ACTION_TRADE,
    ASK,
    BID,
    BOOK_SCHEMA,
    L2Book,
    replay_books,
    validate_book,
)
from tradesys.data.orderbook import SyntheticL2Source, ZeroIntelligenceBook, ZIParams


@pytest.fixture(scope="module")
def sim() -> tuple[ZeroIntelligenceBook, list]:
    book = ZeroIntelligenceBook("ZI", ZIParams(alpha=0.5, mu=10.0, delta=0.1, band=60), seed=11)
    runs = [book.initial(), book.run(4000), book.run(4000)]
    return book, runs


def _concat(runs: list, k: int) -> pa.Table:
    return pa.concat_tables([r[k] for r in runs])


def test_schemas_and_ordering(sim) -> None:
    _, runs = sim
    upd, trades, quotes = (_concat(runs, k) for k in range(3))
    assert upd.schema.equals(BOOK_SCHEMA) and trades.schema.equals(TRADE_SCHEMA) and quotes.schema.equals(QUOTE_SCHEMA)
    validate_book(upd)
    seq = np.asarray(upd["seq"])
    assert (np.diff(seq) == 1).all() and seq[0] == 0
    for t in (upd, trades, quotes):
        assert (np.diff(np.asarray(t["ts"].cast(pa.int64()))) >= 0).all()
    assert set(np.asarray(upd["action"])) == {ACTION_ADD, ACTION_CANCEL, ACTION_TRADE}


def test_replay_reproduces_snapshot_and_quotes_and_never_crosses(sim) -> None:
    book, runs = sim
    upd, trades, quotes = (_concat(runs, k) for k in range(3))
    # replay event by event (one ts = one event), checking the top of book against the published quotes
    replayed = L2Book("ZI")
    q_ts = np.asarray(quotes["ts"].cast(pa.int64()))
    q = {k: np.asarray(quotes[k]) for k in ("bid", "ask", "bid_size", "ask_size")}
    t_ts = np.asarray(trades["ts"].cast(pa.int64()))
    t_px = np.asarray(trades["price"])
    t_side = np.asarray(trades["aggressor"])
    cols = {k: upd[k].to_pylist() for k in ("seq", "side", "price", "size")}
    ts = np.asarray(upd["ts"].cast(pa.int64()))
    bounds = np.flatnonzero(np.diff(ts)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(ts)]])
    checked_trades = 0
    last_quote = None
    for a, b in zip(starts, ends, strict=True):
        event_ts = ts[a]
        # a trade at this ts must print at the best opposite price *before* the event
        j = np.searchsorted(t_ts, event_ts)
        if j < len(t_ts) and t_ts[j] == event_ts:
            best = replayed.best_ask()[0] if t_side[j] > 0 else replayed.best_bid()[0]
            assert t_px[j] == best
            checked_trades += 1
        for i in range(a, b):
            replayed.apply(cols["side"][i], cols["price"][i], cols["size"][i], cols["seq"][i])
        bb, bs = replayed.best_bid()
        ba, asz = replayed.best_ask()
        assert bb < ba, f"crossed book at ts {event_ts}"
        k = np.searchsorted(q_ts, event_ts)
        if k < len(q_ts) and q_ts[k] == event_ts:
            last_quote = (q["bid"][k], q["ask"][k], q["bid_size"][k], q["ask_size"][k])
        assert last_quote == (bb, ba, bs, asz)
    assert checked_trades == trades.num_rows > 100
    # conservation: the replayed book is the simulator's book, level for level
    snap = book.snapshot()
    assert replayed.bids == snap[BID] and replayed.asks == snap[ASK]
    assert book.top_of_book() == last_quote
    # and the batch helper agrees with the row-by-row replay
    assert replay_books(upd.to_batches())["ZI"].bids == snap[BID]


def test_conservation_of_shares(sim) -> None:
    """Shares resting = initial book + added - cancelled - traded, per side; each later update moves one order."""
    book, runs = sim
    init, upd = runs[0].updates, _concat(runs[1:], 0)
    side, action = np.asarray(upd["side"]), np.asarray(upd["action"])
    size = book.p.order_size
    for s, levels in ((BID, book.snapshot()[BID]), (ASK, book.snapshot()[ASK])):
        start = float(np.asarray(init["size"])[np.asarray(init["side"]) == s].sum())
        adds = ((side == s) & (action == ACTION_ADD)).sum()
        removes = ((side == s) & (action != ACTION_ADD)).sum()
        assert sum(levels.values()) == pytest.approx(start + (adds - removes) * size)
    trades = _concat(runs, 1)
    assert trades.num_rows == (action == ACTION_TRADE).sum()


def test_deterministic_by_seed() -> None:
    p = ZIParams(band=40)
    a, b, c = (ZeroIntelligenceBook("X", p, seed=s).run(1500) for s in (3, 3, 4))
    assert a.updates.equals(b.updates) and a.quotes.equals(b.quotes) and a.trades.equals(b.trades)
    assert not a.updates.equals(c.updates)


def _mean_spread(**kw: float) -> float:
    book = ZeroIntelligenceBook("S", ZIParams(band=120, **kw), seed=5)
    book.run(30_000, burn_in=6_000)
    return book.stats()["mean_spread_ticks"]


@pytest.fixture(scope="module")
def spreads() -> dict[str, float]:
    return {
        "base": _mean_spread(alpha=0.5, mu=10.0, delta=0.05),
        "more_cancel": _mean_spread(alpha=0.5, mu=10.0, delta=0.5),
        "more_limit": _mean_spread(alpha=2.0, mu=10.0, delta=0.05),
        "same_eps_double_pc": _mean_spread(alpha=0.5, mu=20.0, delta=0.1),
    }


def test_spread_direction_smith_et_al(spreads) -> None:
    """Spread grows with the cancellation rate delta and shrinks with the limit-order rate alpha."""
    assert spreads["more_cancel"] > 1.1 * spreads["base"]
    assert spreads["more_limit"] < 0.5 * spreads["base"]


def test_spread_scales_with_price_scale_at_fixed_epsilon(spreads) -> None:
    """At fixed epsilon = delta/mu, spread / p_c is (nearly) constant: p_c = mu/alpha carries the units.

    alpha=2 gives p_c = 5 ticks, base 20 ticks, (mu=20, delta=0.1) 40 ticks, all at epsilon = 0.005; the tick
    granularity alpha/mu differs, so allow 15 %.
    """
    ratios = [spreads["base"] / 20.0, spreads["more_limit"] / 5.0, spreads["same_eps_double_pc"] / 40.0]
    assert max(ratios) / min(ratios) < 1.15
    assert all(math.isfinite(r) and r > 0 for r in ratios)


def test_multi_symbol_source_chunks() -> None:
    src = SyntheticL2Source(["B", "A"], ZIParams(band=40), seed=2, events_per_symbol=2000, chunk_seconds=5.0)
    chunks = list(src.iter_chunks())
    upd = pa.concat_tables([c.updates for c in chunks])
    ts = np.asarray(upd["ts"].cast(pa.int64()))
    assert (np.diff(ts) >= 0).all()
    for c in chunks:
        t = np.asarray(c.updates["ts"].cast(pa.int64()))
        assert ((t >= c.start_ns) & (t < c.end_ns)).all()
    books = replay_books(upd.to_batches())
    for s in ("A", "B"):
        snap = src.books[s].snapshot()
        assert books[s].bids == snap[BID] and books[s].asks == snap[ASK]
    again = pa.concat_tables([c.updates for c in src.iter_chunks()])
    assert again.equals(upd)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="alpha: must be"):
        ZIParams(alpha=-1.0)
    with pytest.raises(ValueError, match="band: must be"):
        ZIParams(band=0)
    with pytest.raises(ValueError, match="n_events"):
        ZeroIntelligenceBook().run(-5)
    bad = _concat([ZeroIntelligenceBook(params=ZIParams(band=20)).initial()], 0)
    with pytest.raises(ValueError, match="side"):
        validate_book(bad.set_column(3, "side", pa.array(np.full(bad.num_rows, 3, np.int8))))


def test_price_grid_grows_without_losing_levels() -> None:
    """A tiny grid forces growth at both edges; the replayed updates still equal the simulator's book."""

    class SmallGrid(ZeroIntelligenceBook):
        _GRID_PAD = 4

    book = SmallGrid("G", ZIParams(alpha=0.5, mu=3.0, delta=0.2, band=3, start_price=50.0), seed=3)
    size0, off0 = len(book._bids), book._off
    updates = pa.concat_tables([book.initial().updates, book.run(20_000).updates])
    assert len(book._bids) > size0 and book._off < off0  # grew at the top and at the bottom
    replayed = replay_books(updates.to_batches())["G"]
    snap = book.snapshot()
    assert replayed.bids == snap[BID] and replayed.asks == snap[ASK]
    assert all(p == round(p, 2) for p in updates["price"].to_pylist())  # prices are clean tick multiples
