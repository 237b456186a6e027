"""Vectorised backtest engine for strategies written as target weights (pure: numpy + numba, no Ray, no I/O
beyond reading the configured data source).

It books what the event-driven engine (`run_backtest`: SimBroker + `rebalance_order` sizing + Portfolio) books
for the same target weights and costs, fill for fill: the same order ids, quantities, prices and fees, and the
same cash, positions and equity every bar. Per bar t, in the event-driven step's order:

1. the venue's bar: each symbol's liquidity is reset to participation_cap * volume_t; a DAY remainder resting
   from the symbol's previous bar fills at open_t * (1 +/- slip) within it, then expires;
2. the book is marked to close_t; equity = cash + sum(qty * close);
3. the strategy: target = whole shares of w * equity / close_t (clipped to the position limit), an order only
   when off target by the rebalance band, clipped to the order limits (`tradesys.backtest.costs`);
4. the order fills at once at close_t * (1 +/- slip) within the liquidity left; the rest rests into the next bar.

Cash depends on the previous bar, so the accounting is one sequential numba loop over bars (`simulate`), with an
optional leading batch axis of independent weight schedules over the same bars (a sweep in one call).

What is not modelled (the parity test sets these out of the way, and `run_vectorized` says so in its result):
the pre-trade gate's refusals (daily-loss kill switch, order rate, VaR limit, the gate's own gross/net exposure
check; the strategy-side `scale_to_leverage` *is* modelled, and the order and position limits never bind at the
gate because sizing clips to them), limit and stop orders (market orders only: `strategy.order_type = "market"`),
and latency. A symbol whose bar is missing (no row, or no usable close) is not marked or traded that bar, and its
resting remainder waits for its next usable bar, as at the venue.

`trend_target_weights` gives, as whole arrays, exactly the weights `TrendStrategy` computes bar by bar, so trend
sweeps run here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
import pandas as pd
import pyarrow as pa

from tradesys.backtest.costs import FILL_EPS, CostModel, SizingLimits, scale_to_leverage
from tradesys.backtest.metrics import RunSummary, max_drawdown, periods_per_year, sharpe_ratio
from tradesys.config import ConfigError, DataError, RiskConfig, StrategyConfig, TradesysConfig

__all__ = [
    "NOT_MODELLED",
    "BarArrays",
    "SimArrays",
    "VectorizedResult",
    "bars_from_config",
    "batch_summaries",
    "run_vectorized",
    "simulate",
    "stack_bars",
    "trend_target_weights",
]

NOT_MODELLED = (
    "pre-trade gate refusals (risk.daily_loss_limit_pct kill switch, risk.max_orders_per_window, risk.var_limit_pct, "
    "the gate's gross/net exposure check); limit/stop orders; latency"
)


# ---------------------------------------------------------------------------------------------------- bars


@dataclass(frozen=True, slots=True)
class BarArrays:
    """Dense bars x symbols arrays. `valid[t, j]`: symbol j has a usable bar at t (close not NaN and > 0); where
    not, every price is NaN. `open` falls back to the close (as the venue does); NaN volume = unknown (no cap).

    Symbols are in order of first usable appearance, which is the order the event-driven book lists positions in,
    so equity sums run in the same order."""

    ts_ns: np.ndarray
    symbols: tuple[str, ...]
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    valid: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.close.shape  # type: ignore[return-value]


def stack_bars(batches: Iterable[pa.RecordBatch | pa.Table]) -> BarArrays:
    """Stack a source's bar batches (BAR_SCHEMA, any number of timestamps each) into `BarArrays`.

    If a symbol has two rows at one timestamp the last one wins (as at the venue)."""
    items = [b for b in batches if b.num_rows]
    if not items:
        raise ValueError("bars: no bars to stack")
    if all(isinstance(b, pa.RecordBatch) for b in items):
        table = pa.Table.from_batches(items)  # one call: per-batch tables cost more than the data here
    else:
        table = pa.concat_tables([b if isinstance(b, pa.Table) else pa.Table.from_batches([b]) for b in items])
    ts = table.column("ts").cast(pa.int64()).to_numpy()
    encoded = table.column("symbol").combine_chunks().dictionary_encode()
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    names = encoded.dictionary.to_pylist()

    def col(name: str) -> np.ndarray:
        return table.column(name).to_numpy(zero_copy_only=False).astype(float)

    close, open_, high, low, vol = col("close"), col("open"), col("high"), col("low"), col("volume")
    good = ~np.isnan(close) & (close > 0)  # the venue's rule: a NaN or non-positive close is no bar
    order = list(pd.unique(codes[good]))  # first usable appearance; never-usable symbols last
    seen = set(order)
    order += [c for c in range(len(names)) if c not in seen]
    column = np.empty(len(names), dtype=np.int64)
    column[np.asarray(order, dtype=np.int64)] = np.arange(len(order))
    sym_idx = column[codes]
    stamps, t_idx = np.unique(ts, return_inverse=True)
    shape = (len(stamps), len(order))
    out = {k: np.full(shape, np.nan) for k in ("open", "high", "low", "close", "volume")}
    valid = np.zeros(shape, dtype=bool)
    # rows without a usable close are ignored (the venue drops them), so they never overwrite a usable row
    t, j = t_idx[good], sym_idx[good]
    c = close[good]
    o = np.where(np.isnan(open_[good]), c, open_[good])
    out["close"][t, j] = c
    out["open"][t, j] = o
    out["high"][t, j] = np.where(np.isnan(high[good]), np.maximum(o, c), high[good])
    out["low"][t, j] = np.where(np.isnan(low[good]), np.minimum(o, c), low[good])
    out["volume"][t, j] = vol[good]
    valid[t, j] = True
    return BarArrays(stamps, tuple(str(names[c]) for c in order), valid=valid, **out)


def bars_from_config(cfg: TradesysConfig) -> tuple[BarArrays, int, float]:
    """(bars, the source's symbol count, bars per year) for `cfg.data`; a source failure is a DataError naming
    the data setting, as in `run_backtest`."""
    from tradesys.data import bars_per_year, make_source

    try:
        source = make_source(cfg.data)
        bars = stack_bars(source.batches())
    except Exception as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        name = "data.symbols" if "symbol" in text else "data.source"
        raise DataError(f"{name}: source {cfg.data.source} failed: {text}") from exc
    return bars, len(source.symbols), bars_per_year(cfg.data)


# ---------------------------------------------------------------------------------------------------- trend


def _window_mean(x: np.ndarray, w: int) -> np.ndarray:
    """Mean of each length-w window of x (row k: x[k:k+w]), each window contiguous so numpy sums it exactly as
    `x[k:k+w].mean()` does (pairwise along the fast axis)."""
    view = np.lib.stride_tricks.sliding_window_view(x, w)
    return np.ascontiguousarray(view).mean(axis=-1)


def _window_std(x: np.ndarray, w: int) -> np.ndarray:
    view = np.lib.stride_tricks.sliding_window_view(x, w)
    return np.ascontiguousarray(view).std(axis=-1, ddof=1)


def trend_target_weights(
    close: np.ndarray,
    cfg: StrategyConfig,
    bars_per_year: float = 252.0,
    limits: RiskConfig | None = None,
    n_symbols: int | None = None,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """The weights `TrendStrategy` targets at every bar, bars x symbols: direction = sign(SMA_fast - SMA_slow) of
    each symbol's usable closes, vol-targeted (`sizing.vol_target_weight`), then scaled per bar within the
    leverage limits (`scale_to_leverage`); 0 in warm-up, NaN where the symbol has no usable bar.

    `n_symbols` is the strategy's N (the source's symbol count; default: the columns). Bit-identical to the
    strategy's per-bar numpy: each window is summed in the same order."""
    c_all = np.asarray(close, dtype=float)
    if c_all.ndim != 2:
        raise ValueError(f"close: expected bars x symbols, got shape {c_all.shape}")
    ok = ~np.isnan(c_all) & (c_all > 0) if valid is None else np.asarray(valid, dtype=bool)
    n = c_all.shape[1] if n_symbols is None else n_symbols
    if n <= 0:
        raise ValueError(f"n_symbols: must be > 0, got {n}")
    fast, slow, lb = cfg.fast, cfg.slow, cfg.vol_lookback
    need = max(slow, lb + 1)
    root_bpy, root_n = math.sqrt(bars_per_year), math.sqrt(n)
    out = np.full(c_all.shape, np.nan)
    for j in range(c_all.shape[1]):
        rows = np.flatnonzero(ok[:, j])
        c = c_all[rows, j]
        w = np.zeros(len(c))
        if len(c) >= need:
            k = np.arange(need - 1, len(c))  # positions with a full history (k + 1 closes seen)
            f_mean = _window_mean(c, fast)[k - fast + 1]
            s_mean = _window_mean(c, slow)[k - slow + 1]
            rets = np.diff(np.log(c))
            sigma = _window_std(rets, lb)[k - lb] * root_bpy
            direction = np.where(f_mean > s_mean, 1.0, np.where(f_mean < s_mean, -1.0, 0.0))
            with np.errstate(divide="ignore", invalid="ignore"):
                size = np.minimum(cfg.max_weight, cfg.target_vol / (sigma * root_n))
            wk = direction * size
            wk = np.where(sigma > 0, wk, 0.0)
            if not cfg.allow_short:
                wk = np.where(direction < 0, 0.0, wk)
            w[k] = wk
        out[rows, j] = w
    if limits is not None:
        out = scale_to_leverage(out, limits.max_gross_leverage, limits.max_net_leverage)
    return out


# ---------------------------------------------------------------------------------------------------- kernel


@numba.njit(cache=True, nogil=True, inline="always")
def _book_fill(pos: np.ndarray, j: int, s: float, px: float, cash: float, fee_min: float,
               fee_rate: float) -> tuple[float, float]:
    """Book a signed fill of `s` shares at `px` on symbol `j` (the Portfolio's arithmetic): (fee, new cash)."""
    fee = max(max(fee_min, fee_rate * abs(s) * px), 0.0)
    new = pos[j] + s
    if pos[j] != 0.0 and (pos[j] > 0.0) != (s > 0.0) and abs(new) < 1e-12:
        new = 0.0
    pos[j] = new
    return fee, cash - (s * px * 1.0 + fee)


@numba.njit(cache=True, nogil=True)
def _kernel(
    open_: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    valid: np.ndarray,
    weights: np.ndarray,
    cash0: float,
    slip: float,
    fee_rate: float,
    fee_min: float,
    cap: float,
    band: float,
    max_pos: float,
    max_oqty: float,
    max_onot: float,
    record: bool,
    equity: np.ndarray,
    cash_out: np.ndarray,
    totals: np.ndarray,
    pos_out: np.ndarray,
    oqty: np.ndarray,
    sfill: np.ndarray,
    spx: np.ndarray,
    sfee: np.ndarray,
    rfill: np.ndarray,
    rpx: np.ndarray,
    rfee: np.ndarray,
    rorig: np.ndarray,
) -> None:
    n_b, n_t, n_s = weights.shape
    up, down = 1.0 + slip, 1.0 - slip
    for b in range(n_b):
        cash = cash0
        pos = np.zeros(n_s)
        mark = np.full(n_s, np.nan)
        rest = np.zeros(n_s)  # signed leaves of the resting DAY order per symbol
        origin = np.full(n_s, -1)
        liq = np.zeros(n_s)
        fees_paid, traded, n_orders, n_fills = 0.0, 0.0, 0.0, 0.0
        for t in range(n_t):
            # 1. the venue's bar: liquidity, then the resting remainders fill at the open and expire
            for j in range(n_s):
                if not valid[t, j]:
                    continue
                v = volume[t, j]
                liq[j] = np.inf if np.isnan(v) else cap * max(v, 0.0)
                r = rest[j]
                if r != 0.0:
                    buy = r > 0.0
                    px = open_[t, j] * up if buy else open_[t, j] * down
                    if liq[j] > FILL_EPS:
                        q = min(abs(r), liq[j])
                        if q > 0.0:
                            liq[j] -= q
                            s = q if buy else -q
                            fee, cash = _book_fill(pos, j, s, px, cash, fee_min, fee_rate)
                            fees_paid += fee
                            traded += q * px
                            n_fills += 1.0
                            if record:
                                rfill[b, t, j] = s
                                rpx[b, t, j] = px
                                rfee[b, t, j] = fee
                                rorig[b, t, j] = origin[j]
                    rest[j] = 0.0
                    origin[j] = -1
            # 2. marks, equity in the book's order (positions in first-appearance order)
            for j in range(n_s):
                if valid[t, j]:
                    mark[j] = close[t, j]
            mv = 0.0
            for j in range(n_s):
                if pos[j] != 0.0:
                    mv += pos[j] * mark[j] * 1.0
            eq = cash + mv
            # 3. + 4. orders toward the weights, filled at the close within the liquidity left
            for j in range(n_s):
                w = weights[b, t, j]
                if not valid[t, j] or np.isnan(w):
                    continue
                px0 = close[t, j]
                size = abs(w) * eq / px0
                if size > max_pos / px0:
                    size = max_pos / px0
                target = math.floor(size) * (1.0 if w >= 0 else -1.0)
                diff = target - (pos[j] + rest[j])
                if diff == 0.0:
                    continue
                if target != 0.0 and abs(diff) < band * abs(target):
                    continue
                qty = abs(diff)
                if qty > max_oqty:
                    qty = max_oqty
                cap_n = math.floor(max_onot / px0 * (1 - 1e-12))
                if qty > cap_n:
                    qty = cap_n
                if qty <= 0.0:
                    continue
                buy = diff > 0.0
                n_orders += 1.0
                if record:
                    oqty[b, t, j] = qty if buy else -qty
                px = px0 * up if buy else px0 * down
                q = 0.0
                if liq[j] > FILL_EPS:
                    q = min(qty, liq[j])
                if q > 0.0:
                    liq[j] -= q
                    s = q if buy else -q
                    fee, cash = _book_fill(pos, j, s, px, cash, fee_min, fee_rate)
                    fees_paid += fee
                    traded += q * px
                    n_fills += 1.0
                    if record:
                        sfill[b, t, j] = s
                        spx[b, t, j] = px
                        sfee[b, t, j] = fee
                if q < qty - FILL_EPS:
                    left = qty - q
                    rest[j] = left if buy else -left
                    origin[j] = t
            mv = 0.0
            for j in range(n_s):
                if pos[j] != 0.0:
                    mv += pos[j] * mark[j] * 1.0
            equity[b, t] = cash + mv
            cash_out[b, t] = cash
            if record:
                for j in range(n_s):
                    pos_out[b, t, j] = pos[j]
        totals[b, 0] = fees_paid
        totals[b, 1] = traded
        totals[b, 2] = n_orders
        totals[b, 3] = n_fills


@dataclass(frozen=True, slots=True)
class SimArrays:
    """What `simulate` books. Batch axis first (length 1 for one schedule). Per bar t and symbol j:
    `order_qty` the signed order sent after bar t (0: none); `submit_*` its immediate fill at the close;
    `rest_*` the fill at bar t's open of a remainder resting from bar `rest_origin` (-1: none). The per-fill
    arrays are None with `record=False` (sweeps keep only equity, cash and totals)."""

    equity: np.ndarray  # (B, T), after the bar's fills, marked to the closes
    cash: np.ndarray  # (B, T)
    fees: np.ndarray  # (B,) total fees paid
    traded_notional: np.ndarray  # (B,) sum of |qty| * fill price
    n_orders: np.ndarray  # (B,)
    n_fills: np.ndarray  # (B,)
    positions: np.ndarray | None = None  # (B, T, N) at the end of each bar
    order_qty: np.ndarray | None = None
    submit_qty: np.ndarray | None = None
    submit_price: np.ndarray | None = None
    submit_fee: np.ndarray | None = None
    rest_qty: np.ndarray | None = None
    rest_price: np.ndarray | None = None
    rest_fee: np.ndarray | None = None
    rest_origin: np.ndarray | None = None


def simulate(
    bars: BarArrays,
    weights: np.ndarray,
    costs: CostModel,
    sizing: SizingLimits,
    initial_cash: float,
    record: bool = True,
) -> SimArrays:
    """Book target `weights` (bars x symbols, or schedules x bars x symbols; NaN = no order) over `bars` with the
    venue's costs and the strategies' sizing. The weights are used as given: scale them within leverage limits
    first (`costs.scale_to_leverage`) where the strategy would."""
    w = np.asarray(weights, dtype=float)
    if w.ndim == 2:
        w = w[None]
    if w.ndim != 3 or w.shape[1:] != bars.shape:
        raise ValueError(f"weights: expected shape {bars.shape} or (batch, *{bars.shape}), got {np.shape(weights)}")
    if np.isinf(w).any():
        raise ValueError("weights: infinite values (use NaN for no opinion)")
    if not (initial_cash > 0 and math.isfinite(initial_cash)):
        raise ValueError(f"initial_cash: must be a finite number > 0, got {initial_cash}")
    w = np.ascontiguousarray(w)
    n_b, n_t, n_s = w.shape
    full = (n_b, n_t, n_s) if record else (1, 1, 1)
    equity, cash = np.empty((n_b, n_t)), np.empty((n_b, n_t))
    totals = np.zeros((n_b, 4))
    arrays = {k: np.zeros(full) for k in ("pos", "oqty", "sfill", "spx", "sfee", "rfill", "rpx", "rfee")}
    rorig = np.full(full, -1, dtype=np.int64)
    max_oqty = math.floor(sizing.max_order_qty) if math.isfinite(sizing.max_order_qty) else math.inf
    _kernel(
        np.ascontiguousarray(bars.open),
        np.ascontiguousarray(bars.close),
        np.ascontiguousarray(bars.volume),
        np.ascontiguousarray(bars.valid),
        w,
        float(initial_cash),
        costs.slip,
        costs.fee_rate,
        costs.fee_min,
        costs.participation_cap,
        sizing.rebalance_band,
        sizing.max_position_notional,
        float(max_oqty),
        sizing.max_order_notional,
        record,
        equity,
        cash,
        totals,
        arrays["pos"],
        arrays["oqty"],
        arrays["sfill"],
        arrays["spx"],
        arrays["sfee"],
        arrays["rfill"],
        arrays["rpx"],
        arrays["rfee"],
        rorig,
    )
    counts = totals[:, 2:].astype(np.int64)
    out = SimArrays(equity, cash, totals[:, 0], totals[:, 1], counts[:, 0], counts[:, 1])
    if not record:
        return out
    return SimArrays(
        *(equity, cash, out.fees, out.traded_notional, out.n_orders, out.n_fills),
        positions=arrays["pos"],
        order_qty=arrays["oqty"],
        submit_qty=arrays["sfill"],
        submit_price=arrays["spx"],
        submit_fee=arrays["sfee"],
        rest_qty=arrays["rfill"],
        rest_price=arrays["rpx"],
        rest_fee=arrays["rfee"],
        rest_origin=rorig,
    )


# ---------------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class VectorizedResult:
    """One vectorised run: per-bar equity and cash, end-of-bar positions (bars x symbols), the orders and fills
    tables (the ledger's columns), total costs, and the same `RunSummary` as the event-driven path."""

    ts_ns: np.ndarray
    symbols: tuple[str, ...]
    equity: np.ndarray
    cash: np.ndarray
    positions: np.ndarray
    weights: np.ndarray
    orders: pd.DataFrame
    fills: pd.DataFrame
    costs: dict[str, float]
    summary: RunSummary
    not_modelled: str = NOT_MODELLED
    extra: dict[str, Any] = field(default_factory=dict)


def _ids(strategy_id: str, ts: np.ndarray, syms: np.ndarray) -> np.ndarray:
    """Client order ids f"{strategy}-{ts}-{symbol}" for arrays of bar times and symbols (`rebalance_order`'s rule)."""
    prefix = np.char.add(np.char.add(f"{strategy_id}-", ts.astype(str)), "-")
    return np.char.add(prefix, syms.astype(str)).astype(object)


def _tables(bars: BarArrays, sim: SimArrays, strategy_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Orders and fills of schedule 0 as the ledger would hold them (ids as `rebalance_order` and the venue
    make them: order f"{strategy}-{ts}-{symbol}", fill f"{order}:{n}"); fills by bar, resting ones first."""
    assert sim.order_qty is not None and sim.submit_qty is not None and sim.rest_qty is not None
    assert sim.submit_price is not None and sim.submit_fee is not None
    assert sim.rest_price is not None and sim.rest_fee is not None and sim.rest_origin is not None
    syms = np.asarray(bars.symbols, dtype=str)
    ts = bars.ts_ns
    oq, sq, rq, origin = sim.order_qty[0], sim.submit_qty[0], sim.rest_qty[0], sim.rest_origin[0]
    t, j = np.nonzero(oq)
    qty = np.abs(oq[t, j])
    rt, rj = np.nonzero(rq)
    ro = origin[rt, rj]
    # the remainder's fill, booked at a later bar, belongs to the order at (origin bar, symbol)
    rest_filled = np.zeros_like(oq)
    rest_filled[ro, rj] = np.abs(rq[rt, rj])
    filled = np.abs(sq[t, j]) + rest_filled[t, j]
    status = np.where(filled >= qty - FILL_EPS, "filled", "expired").astype(object)
    # an order whose symbol has no usable bar after it is still working at the end of the data
    last = np.where(bars.valid.any(axis=0), bars.shape[0] - 1 - np.argmax(bars.valid[::-1], axis=0), -1)
    working = (status != "filled") & (t >= last[j])
    status[working] = np.where(filled[working] > 0, "partially_filled", "accepted")
    orders = pd.DataFrame(
        {
            "client_order_id": _ids(strategy_id, ts[t], syms[j]),
            "ts_ns": ts[t],
            "symbol": syms[j].astype(object),
            "side": np.where(oq[t, j] > 0, "buy", "sell").astype(object),
            "qty": qty,
            "filled_qty": filled,
            "status": status,
        }
    )
    st, sj = np.nonzero(sq)
    bar = np.concatenate([rt, st])
    sym = np.concatenate([rj, sj])
    order_bar = np.concatenate([ro, st])
    # a remainder's fill is the order's second when the order also filled at once, else its first
    number = np.concatenate([np.where(sq[ro, rj] != 0.0, 2, 1), np.ones(len(st), dtype=np.int64)])
    signed = np.concatenate([rq[rt, rj], sq[st, sj]])
    price = np.concatenate([sim.rest_price[0][rt, rj], sim.submit_price[0][st, sj]])
    fee = np.concatenate([sim.rest_fee[0][rt, rj], sim.submit_fee[0][st, sj]])
    first = np.concatenate([np.zeros(len(rt), dtype=np.int64), np.ones(len(st), dtype=np.int64)])
    k = np.lexsort((sym, first, bar))  # per bar: resting fills (at the open) before new ones (at the close)
    cid = _ids(strategy_id, ts[order_bar[k]], syms[sym[k]])
    fills = pd.DataFrame(
        {
            "fill_id": np.char.add(np.char.add(cid.astype(str), ":"), number[k].astype(str)).astype(object),
            "client_order_id": cid,
            "ts_ns": ts[bar[k]],
            "symbol": syms[sym[k]].astype(object),
            "side": np.where(signed[k] > 0, "buy", "sell").astype(object),
            "qty": np.abs(signed[k]),
            "price": price[k],
            "fee": fee[k],
        }
    )
    return orders, fills


def summarize_equity(equity: np.ndarray, ts_ns: np.ndarray, initial_cash: float, orders: int, fills: int) -> RunSummary:
    """The event-driven `summarize` on a per-bar equity curve (no latencies: there is no wall clock here)."""
    curve = np.concatenate([[initial_cash], equity])
    final = float(equity[-1]) if len(equity) else initial_cash
    return RunSummary(
        start_equity=initial_cash,
        equity=final,
        total_return=final / initial_cash - 1.0,
        sharpe=sharpe_ratio(curve, periods_per_year([int(x) for x in ts_ns])),
        max_drawdown=max_drawdown(curve),
        steps=len(equity),
        orders=orders,
        fills=fills,
        rejected=0,
        latency_p50_ms=float("nan"),
        latency_p99_ms=float("nan"),
    )


def batch_summaries(sim: SimArrays, ts_ns: np.ndarray, initial_cash: float) -> list[RunSummary]:
    """One `RunSummary` per schedule of a batched `simulate` (e.g. a sweep run with record=False)."""
    return [
        summarize_equity(sim.equity[b], ts_ns, initial_cash, int(sim.n_orders[b]), int(sim.n_fills[b]))
        for b in range(sim.equity.shape[0])
    ]


def target_weights(cfg: TradesysConfig, bars: BarArrays, n_symbols: int, bars_per_year: float) -> np.ndarray:
    """The configured strategy's weights as bars x symbols, as its event-driven twin targets them."""
    s = cfg.strategy
    if s.name == "trend":
        return trend_target_weights(bars.close, s, bars_per_year, cfg.risk, n_symbols, bars.valid)
    if s.name == "weights":
        from tradesys.strategy.weights import load_weights

        assert s.weights_path is not None  # the config requires it
        schedule = load_weights(s.weights_path)
        if not set(schedule.symbols) & set(bars.symbols):
            raise ConfigError(
                f"strategy.weights_path: no weight column names a symbol of the data (columns "
                f"{list(schedule.symbols)[:8]}, data {list(bars.symbols)[:8]})"
            )
        dense = schedule.dense(bars.ts_ns, bars.symbols)
        return _weights_strategy(dense, bars, cfg.risk)
    raise ConfigError(
        f"strategy.name: the vectorised engine runs target-weight strategies (trend, weights), got {s.name!r}"
    )


def _weights_strategy(dense: np.ndarray, bars: BarArrays, limits: RiskConfig) -> np.ndarray:
    """What `TargetWeightsStrategy` trades: the bar's weights where the bar is usable, scaled within leverage."""
    w = np.where(bars.valid, dense, np.nan)
    return scale_to_leverage(w, limits.max_gross_leverage, limits.max_net_leverage)


def run_vectorized(
    cfg: TradesysConfig, weights: np.ndarray | Any | None = None, strategy_id: str | None = None
) -> VectorizedResult:
    """Run `cfg` vectorised, like `run_backtest(cfg)`: the configured data, costs (cfg.broker), sizing limits
    (cfg.risk) and initial cash.

    `weights`: None for the configured strategy (trend or weights); or a target-weight schedule traded as the
    "weights" strategy trades it (scaled within leverage limits): a `WeightSchedule`, or an array aligned to the
    data's bars x symbols (`bars_from_config` gives the axes; NaN = no order)."""
    from tradesys.strategy.weights import WeightSchedule

    if cfg.strategy.order_type != "market":
        raise ConfigError(
            f"strategy.order_type: the vectorised engine models market orders only, got {cfg.strategy.order_type!r}"
        )
    bars, n_symbols, bpy = bars_from_config(cfg)
    if weights is None:
        w = target_weights(cfg, bars, n_symbols, bpy)
        sid = strategy_id or cfg.strategy.name
    else:
        if isinstance(weights, WeightSchedule):
            dense = weights.dense(bars.ts_ns, bars.symbols)
        else:
            dense = np.asarray(weights, dtype=float)
            if dense.shape != bars.shape:
                want = bars.shape
                raise ConfigError(f"weights: expected shape {want} (bars x symbols of the data), got {dense.shape}")
        w = _weights_strategy(dense, bars, cfg.risk)
        sid = strategy_id or "weights"
    costs = CostModel.from_config(cfg.broker)
    sizing = SizingLimits.from_config(cfg.strategy.rebalance_band, cfg.risk)
    sim = simulate(bars, w, costs, sizing, cfg.initial_cash)
    orders, fills = _tables(bars, sim, sid)
    assert sim.positions is not None
    slippage = float((fills["qty"] * fills["price"] * (1.0 - 1.0 / np.where(fills["side"] == "buy", 1 + costs.slip,
                                                                            1 - costs.slip))).abs().sum())
    summary = summarize_equity(sim.equity[0], bars.ts_ns, cfg.initial_cash, len(orders), len(fills))
    return VectorizedResult(
        ts_ns=bars.ts_ns,
        symbols=bars.symbols,
        equity=sim.equity[0],
        cash=sim.cash[0],
        positions=sim.positions[0],
        weights=w,
        orders=orders,
        fills=fills,
        costs={"fees": float(sim.fees[0]), "slippage": slippage, "traded_notional": float(sim.traded_notional[0])},
        summary=summary,
    )


def fills_as_arrow(fills: pd.DataFrame) -> pa.Table:
    """The fills table as Arrow (ts as UTC timestamps)."""
    table = pa.Table.from_pandas(fills, preserve_index=False)
    return table.set_column(
        table.schema.get_field_index("ts_ns"), "ts", table.column("ts_ns").cast(pa.timestamp("ns", tz="UTC"))
    )
