"""A synthetic L2 order book driven by the zero-intelligence (Santa Fe) order-flow model.

Why: microstructure features (depth, order-flow imbalance, Kyle's lambda, spread) need book data whose updates,
quotes and trades are consistent with each other; a model with known parameters also lets tests check the
features against theory.

Model (Smith, Farmer, Gillemot & Krishnamurthy, "Statistical theory of the continuous double auction",
Quantitative Finance 3 (2003) 481-514; Daniels et al., PRL 90 (2003) 108102). All orders have the same size
`order_size` shares (the paper's sigma). Per side, independently, in continuous time:

* **limit orders** arrive at rate `alpha` per tick (orders / tick / second), at a price uniform over the
  `band` ticks just behind the opposite best quote (a buy lands in [ask - band, ask - 1] ticks), so they may
  improve the best quote but never cross it;
* **market orders** arrive at rate `mu` (orders / second) and execute one resting order at the best opposite
  price (all orders have one size, so a market order never walks the book);
* every resting order is **cancelled** at rate `delta` (1 / second).

Dimensional analysis (Smith et al. 2003, section 3): with rates in these units, the characteristic price scale
is p_c = mu / alpha ticks, the characteristic depth N_c = mu / delta orders and time 1 / delta; the
nondimensional granularity is epsilon = delta / mu (the paper's delta sigma / mu) and the tick size in units
of p_c is alpha / mu. The mean spread is p_c f(epsilon, alpha / mu) with f increasing in epsilon: the spread
widens with the cancellation rate and narrows with the limit-order rate. (The paper's rates are for both
sides together, ours per side; the factor 2 rescales p_c and epsilon but not the scaling.)

The simulation is exact (Gillespie): the next event time is exponential with the total rate, the event type is
chosen in proportion to its rate. Every event publishes market-by-price updates (`BOOK_SCHEMA`), a trade
(`TRADE_SCHEMA`, at the best opposite price) for market orders, and a quote (`QUOTE_SCHEMA`) whenever the top of
book changes. Replaying the updates onto an empty book reproduces `snapshot()` exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from tradesys.core.schemas import QUOTE_SCHEMA, TRADE_SCHEMA, TS_TYPE
from tradesys.data.book_schema import ACTION_ADD, ACTION_CANCEL, ACTION_TRADE, ASK, BID, BOOK_SCHEMA, book_batch

_NS = 10**9
DEFAULT_BOOK_START_NS = int(datetime(2024, 1, 2, 14, 30, tzinfo=UTC).timestamp()) * _NS


def _fail(name: str, why: str, value: Any) -> None:
    raise ValueError(f"{name}: {why} (got {value!r})")


@dataclass(frozen=True)
class ZIParams:
    """Zero-intelligence order flow, per side. Units: orders, ticks, seconds (see the module docstring)."""

    alpha: float = 0.5  # limit orders / tick / s
    mu: float = 10.0  # market orders / s
    delta: float = 0.05  # cancellations / resting order / s
    band: int = 200  # ticks behind the opposite best where limit orders land
    order_size: float = 100.0  # shares per order (sigma)
    tick_size: float = 0.01
    start_price: float = 100.0

    def __post_init__(self) -> None:
        for name in ("alpha", "mu", "delta", "order_size", "tick_size", "start_price"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
                _fail(name, "must be a finite number > 0", v)
        if isinstance(self.band, bool) or not isinstance(self.band, int) or self.band < 1:
            _fail("band", "must be an integer >= 1", self.band)

    @property
    def price_scale_ticks(self) -> float:
        """p_c = mu / alpha, the characteristic price scale in ticks."""
        return self.mu / self.alpha

    @property
    def epsilon(self) -> float:
        """Nondimensional order granularity delta / mu (Smith et al. 2003)."""
        return self.delta / self.mu


class BookRun(NamedTuple):
    """What one `run` published, each table in publication order (ts non-decreasing)."""

    updates: pa.Table
    trades: pa.Table
    quotes: pa.Table


class ZeroIntelligenceBook:
    """One symbol's Santa Fe order book; `run` advances it and returns what it published.

    State persists between calls, so a long simulation can be produced in chunks. Deterministic in `seed`.
    The book starts filled with Poisson(alpha / delta) orders per tick over `band` ticks on each side of the
    start price (the far-from-mid equilibrium depth); use `burn_in` events to forget that start.
    """

    _BLOCK = 8192
    _GRID_PAD = 1024  # spare ticks in the price grid beyond 8 bands; the grid grows when the book nears an edge

    def __init__(
        self, symbol: str = "ZI", params: ZIParams | None = None, seed: int = 7, start_ns: int = DEFAULT_BOOK_START_NS
    ) -> None:
        if not isinstance(symbol, str) or not symbol:
            _fail("symbol", "must be a non-empty string", symbol)
        self.symbol = symbol
        self.p = params or ZIParams()
        self._rng = np.random.default_rng(seed)
        band = self.p.band
        size = 8 * band + self._GRID_PAD
        self._off = round(self.p.start_price / self.p.tick_size) - size // 2  # global tick of index 0
        if self._off - band < 1:
            _fail("start_price", f"must be above {2 * band} ticks so the book stays at positive prices", self.p)
        self._bids = np.zeros(size, np.int64)
        self._asks = np.zeros(size, np.int64)
        mid = size // 2
        depth = self.p.alpha / self.p.delta
        self._bids[mid - band : mid] = self._rng.poisson(depth, band)
        self._asks[mid + 1 : mid + 1 + band] = self._rng.poisson(depth, band)
        self._nb, self._na = int(self._bids.sum()), int(self._asks.sum())
        self._bid_lo, self._ask_hi = mid - band, mid + band
        self._bb = self._find_bid(mid - 1)
        self._ba = self._find_ask(mid + 1)
        self._ref_bid = self._bb if self._bb >= 0 else mid - 1  # last known best, for an emptied side
        self._ref_ask = self._ba if self._ba >= 0 else mid + 1
        self._t = start_ns / _NS
        self._last_ns = start_ns
        self._seq = 0
        self._spread_time = 0.0
        self._spread_area = 0.0
        self._counts = {"limit": 0, "market": 0, "cancel": 0, "market_on_empty": 0}
        self._reset_out()
        # the initial book, published as adds so a consumer starting from an empty book sees it
        for side, arr in ((BID, self._bids), (ASK, self._asks)):
            for i in np.flatnonzero(arr):
                self._update(start_ns, side, int(i), ACTION_ADD)
        self._last_top: tuple[int, int, int, int] | None = None
        self._emit_quote(start_ns)
        self._initial = self._take_out()

    # ------------------------------------------------------------------ book helpers
    def _find_bid(self, start: int) -> int:
        """Highest occupied bid index <= start, or -1."""
        lo = max(self._bid_lo, 0)
        if start < lo:
            return -1
        nz = np.flatnonzero(self._bids[lo : start + 1])
        return int(lo + nz[-1]) if len(nz) else -1

    def _find_ask(self, start: int) -> int:
        hi = min(self._ask_hi, len(self._asks) - 1)
        if start > hi:
            return -1
        nz = np.flatnonzero(self._asks[start : hi + 1])
        return int(start + nz[0]) if len(nz) else -1

    def _grow(self) -> None:
        """Pad the price grid when the book nears an edge, so no level is ever dropped (conservation)."""
        band = self.p.band
        pad = 4 * band + self._GRID_PAD // 2
        lo_need = min(self._ref_ask, self._ba if self._ba >= 0 else self._ref_ask) - 2 * band
        if lo_need < 0:
            if self._off - pad < 1:
                raise RuntimeError("price: the simulated book reached zero; raise start_price or lower band")
            z = np.zeros(pad, np.int64)
            self._bids, self._asks = np.concatenate([z, self._bids]), np.concatenate([z, self._asks])
            self._off -= pad
            for name in ("_bb", "_ba", "_ref_bid", "_ref_ask", "_bid_lo", "_ask_hi"):
                v = getattr(self, name)
                setattr(self, name, v + pad if (v >= 0 or name.startswith("_ref")) else v)
        hi_need = max(self._ref_bid, self._bb) + 2 * band
        if hi_need >= len(self._bids):
            z = np.zeros(pad, np.int64)
            self._bids, self._asks = np.concatenate([self._bids, z]), np.concatenate([self._asks, z])

    def _price(self, i: int) -> float:
        # tick / (1 / tick_size) is the correctly rounded decimal price (101.32, not 101.32000000000001)
        inv = 1.0 / self.p.tick_size
        if abs(inv - round(inv)) < 1e-9:
            return (self._off + i) / round(inv)
        return (self._off + i) * self.p.tick_size

    def _reset_out(self) -> None:
        self._u: dict[str, list[Any]] = {k: [] for k in ("ts", "seq", "side", "price", "size", "action")}
        self._tr: dict[str, list[Any]] = {k: [] for k in ("ts", "price", "aggressor")}
        self._q: dict[str, list[Any]] = {k: [] for k in ("ts", "bid", "ask", "bid_size", "ask_size")}

    def _update(self, ts: int, side: int, i: int, action: int) -> None:
        arr = self._bids if side == BID else self._asks
        u = self._u
        u["ts"].append(ts)
        u["seq"].append(self._seq)
        u["side"].append(side)
        u["price"].append(self._price(i))
        u["size"].append(float(arr[i]) * self.p.order_size)
        u["action"].append(action)
        self._seq += 1

    def _emit_quote(self, ts: int) -> None:
        bb, ba = self._bb, self._ba
        top = (bb, int(self._bids[bb]) if bb >= 0 else 0, ba, int(self._asks[ba]) if ba >= 0 else 0)
        if top == self._last_top:
            return
        self._last_top = top
        q = self._q
        q["ts"].append(ts)
        q["bid"].append(self._price(bb) if bb >= 0 else math.nan)
        q["ask"].append(self._price(ba) if ba >= 0 else math.nan)
        q["bid_size"].append(top[1] * self.p.order_size)
        q["ask_size"].append(top[3] * self.p.order_size)

    def _take_out(self) -> BookRun:
        u, tr, q = self._u, self._tr, self._q
        n_tr = len(tr["ts"])
        trades = pa.Table.from_arrays(
            [
                pa.array(np.asarray(tr["ts"], np.int64), pa.int64()).cast(TS_TYPE),
                pa.array([self.symbol] * n_tr, pa.string()),
                pa.array(np.asarray(tr["price"], np.float64)),
                pa.array(np.full(n_tr, self.p.order_size)),
                pa.array(np.asarray(tr["aggressor"], np.int8)),
            ],
            schema=TRADE_SCHEMA,
        )
        nq = len(q["ts"])
        quotes = pa.Table.from_arrays(
            [
                pa.array(np.asarray(q["ts"], np.int64), pa.int64()).cast(TS_TYPE),
                pa.array([self.symbol] * nq, pa.string()),
                *(pa.array(np.asarray(q[k], np.float64)) for k in ("bid", "ask", "bid_size", "ask_size")),
            ],
            schema=QUOTE_SCHEMA,
        )
        cols = [np.asarray(u[k]) for k in ("seq", "side", "price", "size", "action")]
        updates = pa.Table.from_batches([book_batch(np.asarray(u["ts"]), self.symbol, *cols)], schema=BOOK_SCHEMA)
        self._reset_out()
        return BookRun(updates, trades, quotes)

    # ------------------------------------------------------------------ public
    def initial(self) -> BookRun:
        """The start-up publication: the initial book as adds, and its first quote."""
        return self._initial

    def run(self, n_events: int, burn_in: int = 0) -> BookRun:
        """Simulate `burn_in` unpublished-for-statistics events then `n_events` more; return what was published.

        Burn-in events are still published (the book must stay replayable); they only stay out of `stats()`.
        """
        if isinstance(n_events, bool) or not isinstance(n_events, int) or n_events < 0:
            _fail("n_events", "must be an integer >= 0", n_events)
        if isinstance(burn_in, bool) or not isinstance(burn_in, int) or burn_in < 0:
            _fail("burn_in", "must be an integer >= 0", burn_in)
        p, rng = self.p, self._rng
        r_lim, r_mkt = p.alpha * p.band, p.mu
        done = 0
        total = n_events + burn_in
        while done < total:
            m = min(self._BLOCK, total - done)
            unif = rng.random((m, 3))
            expo = rng.standard_exponential(m)
            for k in range(m):
                measured = done + k >= burn_in
                self._grow()
                n_res = self._nb + self._na
                rate = 2 * r_lim + 2 * r_mkt + p.delta * n_res
                dt = expo[k] / rate
                if measured and self._bb >= 0 and self._ba >= 0:
                    self._spread_area += (self._ba - self._bb) * dt
                    self._spread_time += dt
                self._t += dt
                ts = max(round(self._t * _NS), self._last_ns + 1)
                self._last_ns = ts
                self._event(ts, unif[k, 0] * rate, unif[k, 1], unif[k, 2], r_lim, r_mkt)
                self._emit_quote(ts)
            done += m
        return self._take_out()

    def _event(self, ts: int, x: float, u1: float, u2: float, r_lim: float, r_mkt: float) -> None:
        band = self.p.band
        if x < 2 * r_lim:  # limit order
            self._counts["limit"] += 1
            off = int(u1 * band)
            if x < r_lim:  # buy, behind the ask
                i = (self._ba if self._ba >= 0 else self._ref_ask) - 1 - off
                self._bids[i] += 1
                self._nb += 1
                self._bid_lo = min(self._bid_lo, i)
                if i > self._bb:
                    self._bb = self._ref_bid = i
                self._update(ts, BID, i, ACTION_ADD)
            else:
                i = (self._bb if self._bb >= 0 else self._ref_bid) + 1 + off
                self._asks[i] += 1
                self._na += 1
                self._ask_hi = max(self._ask_hi, i)
                if self._ba < 0 or i < self._ba:
                    self._ba = self._ref_ask = i
                self._update(ts, ASK, i, ACTION_ADD)
            return
        x -= 2 * r_lim
        if x < 2 * r_mkt:  # market order: one resting order at the best opposite price
            self._counts["market"] += 1
            if x < r_mkt:  # buy lifts the ask
                i = self._ba
                if i < 0:
                    self._counts["market_on_empty"] += 1
                    return
                self._asks[i] -= 1
                self._na -= 1
                self._tr["ts"].append(ts)
                self._tr["price"].append(self._price(i))
                self._tr["aggressor"].append(1)
                self._update(ts, ASK, i, ACTION_TRADE)
                if self._asks[i] == 0:
                    self._ba = self._find_ask(i + 1)
                    if self._ba >= 0:
                        self._ref_ask = self._ba
            else:
                i = self._bb
                if i < 0:
                    self._counts["market_on_empty"] += 1
                    return
                self._bids[i] -= 1
                self._nb -= 1
                self._tr["ts"].append(ts)
                self._tr["price"].append(self._price(i))
                self._tr["aggressor"].append(-1)
                self._update(ts, BID, i, ACTION_TRADE)
                if self._bids[i] == 0:
                    self._bb = self._find_bid(i - 1)
                    if self._bb >= 0:
                        self._ref_bid = self._bb
            return
        # cancellation of one resting order chosen uniformly
        self._counts["cancel"] += 1
        n_res = self._nb + self._na
        target = u1 * n_res
        if target < self._nb:
            lo, hi = self._bid_lo, self._bb
            cum = np.cumsum(self._bids[lo : hi + 1])
            i = lo + int(np.searchsorted(cum, u2 * self._nb, side="right"))
            self._bids[i] -= 1
            self._nb -= 1
            self._update(ts, BID, i, ACTION_CANCEL)
            if i == self._bb and self._bids[i] == 0:
                self._bb = self._find_bid(i - 1)
                if self._bb >= 0:
                    self._ref_bid = self._bb
        else:
            lo, hi = self._ba, self._ask_hi
            cum = np.cumsum(self._asks[lo : hi + 1])
            i = lo + int(np.searchsorted(cum, u2 * self._na, side="right"))
            self._asks[i] -= 1
            self._na -= 1
            self._update(ts, ASK, i, ACTION_CANCEL)
            if i == self._ba and self._asks[i] == 0:
                self._ba = self._find_ask(i + 1)
                if self._ba >= 0:
                    self._ref_ask = self._ba

    def snapshot(self) -> dict[int, dict[float, float]]:
        """The current book: {BID: {price: shares}, ASK: {price: shares}}, non-empty levels only."""
        out: dict[int, dict[float, float]] = {}
        for side, arr in ((BID, self._bids), (ASK, self._asks)):
            idx = np.flatnonzero(arr)
            out[side] = {self._price(int(i)): float(arr[i]) * self.p.order_size for i in idx}
        return out

    def top_of_book(self) -> tuple[float, float, float, float]:
        """(bid, ask, bid_size, ask_size) now; NaN price and 0 size on an empty side."""
        bb, ba = self._bb, self._ba
        return (
            self._price(bb) if bb >= 0 else math.nan,
            self._price(ba) if ba >= 0 else math.nan,
            float(self._bids[bb]) * self.p.order_size if bb >= 0 else 0.0,
            float(self._asks[ba]) * self.p.order_size if ba >= 0 else 0.0,
        )

    def stats(self) -> dict[str, float]:
        """Time-weighted mean spread (ticks) over measured events, and event counts."""
        mean = self._spread_area / self._spread_time if self._spread_time > 0 else math.nan
        return {"mean_spread_ticks": mean, **{k: float(v) for k, v in self._counts.items()}}


class BookChunk(NamedTuple):
    """All symbols' publications with start_ns <= ts < end_ns, ordered by (ts, symbol) then seq."""

    start_ns: int
    end_ns: int
    updates: pa.Table
    trades: pa.Table
    quotes: pa.Table


class SyntheticL2Source:
    """Several independent zero-intelligence books (seeds spawned from `seed`), merged in time, in chunks."""

    name = "synthetic-l2"

    def __init__(
        self,
        symbols: Sequence[str] = ("ALPHA", "BRAVO"),
        params: ZIParams | None = None,
        seed: int = 7,
        events_per_symbol: int = 20_000,
        chunk_seconds: float = 10.0,
        start_ns: int = DEFAULT_BOOK_START_NS,
    ) -> None:
        if isinstance(symbols, str) or not symbols or len(set(symbols)) != len(symbols):
            _fail("symbols", "must be a non-empty list of distinct names", symbols)
        if not isinstance(chunk_seconds, int | float) or not chunk_seconds > 0:
            _fail("chunk_seconds", "must be > 0", chunk_seconds)
        self._symbols = list(symbols)
        self.params = params or ZIParams()
        self.seed = seed
        self.events_per_symbol = events_per_symbol
        self.chunk_ns = round(chunk_seconds * _NS)
        self.start_ns = start_ns
        self.books: dict[str, ZeroIntelligenceBook] = {}

    @property
    def symbols(self) -> list[str]:
        return list(self._symbols)

    def _simulate(self) -> BookRun:
        seeds = np.random.SeedSequence(self.seed).spawn(len(self._symbols))
        parts: list[BookRun] = []
        self.books = {}
        for s, ss in zip(self._symbols, seeds, strict=True):
            book = ZeroIntelligenceBook(s, self.params, int(ss.generate_state(1)[0]), self.start_ns)
            self.books[s] = book
            init, run = book.initial(), book.run(self.events_per_symbol)
            parts.append(BookRun(*(pa.concat_tables([a, b]) for a, b in zip(init, run, strict=True))))
        return BookRun(*(_sorted(pa.concat_tables([pt[k] for pt in parts])) for k in range(3)))

    def iter_chunks(self) -> Iterator[BookChunk]:
        """Simulate every book, then hand out time chunks (fresh books on each call: same data)."""
        run = self._simulate()
        ts_cols = [np.asarray(t.column("ts").cast(pa.int64())) for t in run]
        end_all = max(int(c[-1]) for c in ts_cols if len(c)) + 1
        for start in range(self.start_ns, end_all, self.chunk_ns):
            end = start + self.chunk_ns
            sl = []
            for t, c in zip(run, ts_cols, strict=True):
                a, b = np.searchsorted(c, [start, end])
                sl.append(t.slice(a, b - a))
            yield BookChunk(start, end, *sl)


def _sorted(t: pa.Table) -> pa.Table:
    """Order rows by (ts, symbol); Arrow's sort is stable, so seq order within a symbol is kept."""
    return t.sort_by([("ts", "ascending"), ("symbol", "ascending")])
