"""Seeded synthetic intraday trades and quotes for many symbols, in time order, in chunks.

Why: microstructure features (spread, order-flow imbalance, Kyle's lambda, Roll's measure, trade intensity)
need tick input with the stylised facts of real markets, reproducible anywhere with no files or network.

Model, per symbol and session (14:30-21:00 UTC weekdays, as in `tradesys.data.synthetic`):

* **Activity**: event times are an inhomogeneous Poisson process whose intensity over the session is U-shaped,
  f(x) proportional to 1 + d (2x - 1)^2 (x = fraction of the session elapsed, d = `u_depth`), so the open and
  the close are the busiest. Expected events per session = `events_per_day`.
* Each event is a **trade** with probability `trade_fraction`, else a **quote** update (the first is a quote).
* **Trade signs** follow a two-state Markov chain: the next trade has the same sign with probability
  `sign_persistence` = p, so the sign autocorrelation at lag k is (2p - 1)^k > 0 (order splitting, Lillo-Farmer).
* **Mid price** moves at quote events: a log random walk with annualised volatility `sigma` (in trading time,
  252 sessions of 6.5 h) plus a permanent impact of `impact_bps` basis points per net signed trade since the
  previous quote, so order flow moves prices (Kyle). No move overnight.
* **Spread** in ticks = max(1, round(`spread_ticks` * w(x) * exp(Z))) with Z a log-Ornstein-Uhlenbeck process
  (stationary std `spread_vol`, half-life `spread_halflife_s` seconds, mean of exp(Z) = 1), and w(x) =
  1 + `open_widening` * exp(-x / 0.05): spreads are wider just after the open. Always >= 1 tick.
* **Quotes**: bid = round(mid/tick - spread/2) ticks, ask = bid + spread; sizes in round lots (geometric).
* **Trades** execute at the prevailing quote: buys at the ask, sells at the bid. Sizes are heavy-tailed:
  floor(`min_size` * U^(-1/`size_alpha`)) shares, a Pareto tail with index `size_alpha`.

Timestamps are int ns UTC; a trade and a quote with the same ts keep their generation order (quote first).
Rows are ordered by (ts, symbol), the canonical order the Parquet replay reproduces.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
from scipy.signal import lfilter

from tradesys.core.schemas import QUOTE_SCHEMA, TRADE_SCHEMA, TS_TYPE
from tradesys.data.synthetic import DEFAULT_START, SESSION_OPEN_UTC, SESSION_SECONDS, TRADING_DAYS_PER_YEAR

DEFAULT_TICK_SYMBOLS = ("ALPHA", "BRAVO", "CHARLIE")
_NS = 10**9


def _fail(name: str, why: str, value: Any) -> None:
    raise ValueError(f"{name}: {why} (got {value!r})")


@dataclass(frozen=True)
class TickParams:
    """Every knob of the tick generator (see the module docstring for the model and units)."""

    symbols: tuple[str, ...] = DEFAULT_TICK_SYMBOLS
    days: int = 1
    seed: int = 7
    start_date: date = DEFAULT_START
    start_price: float = 100.0
    tick_size: float = 0.01
    sigma: float = 0.25  # annualised volatility of the mid
    events_per_day: float = 20_000.0  # expected trade + quote events per symbol per session
    trade_fraction: float = 0.3
    sign_persistence: float = 0.8  # P(next trade sign == this one)
    impact_bps: float = 0.2  # permanent mid move per net signed trade, basis points
    spread_ticks: float = 2.0  # typical spread in ticks (before widening and noise)
    spread_vol: float = 0.4  # stationary std of the log-spread noise
    spread_halflife_s: float = 60.0
    open_widening: float = 1.0  # spread multiplier at the open is 1 + this
    u_depth: float = 2.0  # activity at open/close = (1 + u_depth) x midday
    size_alpha: float = 1.5  # Pareto tail index of trade sizes
    min_size: float = 50.0  # Pareto scale (shares)
    lot: float = 100.0  # quote sizes are whole lots
    chunk_seconds: float = 60.0  # time span of one chunk of output batches

    def __post_init__(self) -> None:
        sym = self.symbols
        if isinstance(sym, str) or not sym or not all(isinstance(s, str) and s for s in sym):
            _fail("symbols", "must be a non-empty list of non-empty names", sym)
        if len(set(sym)) != len(tuple(sym)):
            _fail("symbols", "must not repeat a name", sym)
        object.__setattr__(self, "symbols", tuple(sym))
        if isinstance(self.days, bool) or not isinstance(self.days, int) or self.days <= 0:
            _fail("days", "must be an integer > 0", self.days)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            _fail("seed", "must be an integer", self.seed)
        positive = (
            "start_price",
            "tick_size",
            "events_per_day",
            "spread_ticks",
            "spread_halflife_s",
            "size_alpha",
            "min_size",
            "lot",
            "chunk_seconds",
        )
        for name in positive:
            v = getattr(self, name)
            if not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
                _fail(name, "must be a finite number > 0", v)
        for name in ("sigma", "impact_bps", "spread_vol", "open_widening", "u_depth"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                _fail(name, "must be a finite number >= 0", v)
        if not 0.0 < self.trade_fraction < 1.0:
            _fail("trade_fraction", "must lie in (0, 1)", self.trade_fraction)
        if not 0.0 <= self.sign_persistence <= 1.0:
            _fail("sign_persistence", "must lie in [0, 1]", self.sign_persistence)

    def sessions(self) -> list[date]:
        out, d = [], self.start_date
        while len(out) < self.days:
            if d.weekday() < 5:
                out.append(d)
            d += timedelta(days=1)
        return out

    def activity_cdf(self, x: np.ndarray) -> np.ndarray:
        """Fraction of a session's expected events before session fraction x (closed form of the U shape)."""
        d = self.u_depth
        return (x + d * ((2 * x - 1) ** 3 + 1) / 6) / (1 + d / 3)


class TickChunk(NamedTuple):
    """All trades and quotes with start_ns <= ts < end_ns, across symbols, ordered by (ts, symbol)."""

    start_ns: int
    end_ns: int
    trades: pa.RecordBatch
    quotes: pa.RecordBatch


def _ts_array(ns: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(ns, np.int64), pa.int64()).cast(TS_TYPE)


def _session_symbol(
    p: TickParams, rng: np.random.Generator, open_ns: int, mid: float
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], float]:
    """One symbol's session: (trade columns, quote columns, closing mid)."""
    n = max(int(rng.poisson(p.events_per_day)), 2)
    grid = np.linspace(0.0, 1.0, 4097)
    x = np.sort(np.interp(rng.random(n), p.activity_cdf(grid), grid))
    ts = open_ns + np.minimum(np.round(x * SESSION_SECONDS * _NS), SESSION_SECONDS * _NS - 1).astype(np.int64)

    is_trade = rng.random(n) < p.trade_fraction
    is_trade[0] = False
    n_tr = int(is_trade.sum())
    flips = rng.random(n_tr) >= p.sign_persistence
    first = 1 if rng.random() < 0.5 else -1
    signs = np.where(np.cumsum(flips) % 2 == 0, first, -first).astype(np.int8)

    # mid at quote events: diffusion over the elapsed trading time + impact of the net flow since the last quote
    q_idx = np.flatnonzero(~is_trade)
    flow = np.zeros(n, np.int64)
    flow[is_trade] = signs
    cum_flow = np.cumsum(flow)
    net = np.diff(np.concatenate([[0], cum_flow[q_idx]]))
    x_q = x[q_idx]
    dt_years = np.diff(np.concatenate([[0.0], x_q])) / TRADING_DAYS_PER_YEAR
    z = rng.standard_normal(len(q_idx))
    steps = p.sigma * np.sqrt(dt_years) * z - 0.5 * p.sigma**2 * dt_years + p.impact_bps * 1e-4 * net
    mid_q = mid * np.exp(np.cumsum(steps))

    # log-OU spread noise on a 1-second grid (exact AR(1) discretisation), sampled at quote times
    phi = 0.5 ** (1.0 / p.spread_halflife_s)
    eps = rng.standard_normal(SESSION_SECONDS) * p.spread_vol * math.sqrt(1 - phi * phi)
    ou0 = rng.standard_normal() * p.spread_vol
    ou, _ = lfilter([1.0], [1.0, -phi], eps, zi=[phi * ou0])  # ou[t] = phi ou[t-1] + eps[t]
    sec = np.minimum((x_q * SESSION_SECONDS).astype(np.int64), SESSION_SECONDS - 1)
    widen = 1.0 + p.open_widening * np.exp(-x_q / 0.05)
    spread = np.maximum(1, np.round(p.spread_ticks * widen * np.exp(ou[sec] - 0.5 * p.spread_vol**2))).astype(np.int64)
    bid_t = np.maximum(np.round(mid_q / p.tick_size - spread / 2.0).astype(np.int64), 1)
    ask_t = bid_t + spread
    inv = 1.0 / p.tick_size  # ticks / (1 / tick) gives the correctly rounded decimal price
    if abs(inv - round(inv)) < 1e-9:
        bid, ask = bid_t / round(inv), ask_t / round(inv)
    else:
        bid, ask = bid_t * p.tick_size, ask_t * p.tick_size
    nq = len(q_idx)
    quotes = {
        "ts": ts[q_idx],
        "bid": bid,
        "ask": ask,
        "bid_size": p.lot * rng.geometric(0.3, nq),
        "ask_size": p.lot * rng.geometric(0.3, nq),
    }
    # each trade executes at the last quote before it
    t_idx = np.flatnonzero(is_trade)
    last_q = np.searchsorted(q_idx, t_idx, side="right") - 1
    price = np.where(signs > 0, ask[last_q], bid[last_q])
    size = np.floor(p.min_size * (1.0 - rng.random(n_tr)) ** (-1.0 / p.size_alpha))
    trades = {"ts": ts[t_idx], "price": price, "size": size, "aggressor": signs}
    return trades, quotes, float(mid_q[-1])


def _merge(parts: list[dict[str, np.ndarray]], symbols: Sequence[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Concatenate per-symbol columns and order rows by (ts, symbol name), stable within a symbol."""
    cols = {k: np.concatenate([pt[k] for pt in parts]) for k in parts[0]}
    sym = np.concatenate([np.full(len(pt["ts"]), s, dtype=object) for pt, s in zip(parts, symbols, strict=True)])
    rank = {s: i for i, s in enumerate(sorted(symbols))}
    sym_rank = np.concatenate([np.full(len(pt["ts"]), rank[s]) for pt, s in zip(parts, symbols, strict=True)])
    order = np.lexsort((sym_rank, cols["ts"]))  # lexsort is stable
    return {k: v[order] for k, v in cols.items()}, sym[order]


class SyntheticTicks:
    """Seeded synthetic trades and quotes (module docstring); same params -> identical batches.

    `iter_chunks()` yields `TickChunk`s of `chunk_seconds` each, session by session (memory is bounded by one
    session); `trades()` / `quotes()` return whole tables; `batches(kind)` yields one kind's chunks.
    """

    name = "synthetic-ticks"

    def __init__(self, symbols: Sequence[str] = DEFAULT_TICK_SYMBOLS, days: int = 1, seed: int = 7, **params: Any):
        if isinstance(symbols, str):
            _fail("symbols", "must be a list of names, not a string", symbols)
        self.params = TickParams(symbols=tuple(symbols), days=days, seed=seed, **params)

    @property
    def symbols(self) -> list[str]:
        return list(self.params.symbols)

    def _sessions(self) -> Iterator[tuple[int, dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray], np.ndarray]]:
        p = self.params
        rng = np.random.default_rng(p.seed)
        mids = [p.start_price] * len(p.symbols)
        for day in p.sessions():
            open_ns = int(datetime.combine(day, SESSION_OPEN_UTC, tzinfo=UTC).timestamp()) * _NS
            tparts, qparts = [], []
            for i in range(len(p.symbols)):
                tr, qu, mids[i] = _session_symbol(p, rng, open_ns, mids[i])
                tparts.append(tr)
                qparts.append(qu)
            tcols, tsym = _merge(tparts, p.symbols)
            qcols, qsym = _merge(qparts, p.symbols)
            yield open_ns, tcols, tsym, qcols, qsym

    def iter_chunks(self) -> Iterator[TickChunk]:
        step = round(self.params.chunk_seconds * _NS)
        for open_ns, tcols, tsym, qcols, qsym in self._sessions():
            for start in range(open_ns, open_ns + SESSION_SECONDS * _NS, step):
                end = min(start + step, open_ns + SESSION_SECONDS * _NS)
                t0, t1 = np.searchsorted(tcols["ts"], [start, end])
                q0, q1 = np.searchsorted(qcols["ts"], [start, end])
                yield TickChunk(
                    start,
                    end,
                    _trade_batch({k: v[t0:t1] for k, v in tcols.items()}, tsym[t0:t1]),
                    _quote_batch({k: v[q0:q1] for k, v in qcols.items()}, qsym[q0:q1]),
                )

    def batches(self, kind: str = "trade") -> Iterator[pa.RecordBatch]:
        """One kind's chunks ('trade' or 'quote'), in time order."""
        if kind not in ("trade", "quote"):
            raise ValueError(f"kind: must be 'trade' or 'quote' (got {kind!r})")
        for c in self.iter_chunks():
            yield c.trades if kind == "trade" else c.quotes

    def trades(self) -> pa.Table:
        return pa.Table.from_batches(list(self.batches("trade")), schema=TRADE_SCHEMA)

    def quotes(self) -> pa.Table:
        return pa.Table.from_batches(list(self.batches("quote")), schema=QUOTE_SCHEMA)


def _trade_batch(c: dict[str, np.ndarray], sym: np.ndarray) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [
            _ts_array(c["ts"]),
            pa.array(sym.tolist(), pa.string()),
            pa.array(c["price"], pa.float64()),
            pa.array(c["size"], pa.float64()),
            pa.array(c["aggressor"], pa.int8()),
        ],
        schema=TRADE_SCHEMA,
    )


def _quote_batch(c: dict[str, np.ndarray], sym: np.ndarray) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [
            _ts_array(c["ts"]),
            pa.array(sym.tolist(), pa.string()),
            pa.array(c["bid"], pa.float64()),
            pa.array(c["ask"], pa.float64()),
            pa.array(c["bid_size"], pa.float64()),
            pa.array(c["ask_size"], pa.float64()),
        ],
        schema=QUOTE_SCHEMA,
    )
