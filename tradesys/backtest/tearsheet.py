"""The tear sheet's numbers: performance, trades, costs, exposure, per-symbol P&L, capacity and a benchmark.

Pure (numpy/pandas, no I/O): the inputs are the ledger's rows (equity curve, fills, orders, as `Ledger` returns
them) and, when the bars are known, the closes and volumes (wide frames: int64 ns timestamps x symbols).
`tradesys.backtest.report` loads those and draws the pictures; the HTTP route and `tradesys report` share it.

Conventions (the tests check each against empyrical or a hand-computed reference):

* returns: one per booked step, from the last equity row of each timestamp; the first is measured from the
  initial cash, so the costs of the first step's fills count. Zero risk-free rate; `periods_per_year` as
  `metrics.periods_per_year` (252 for daily bars).
* annual return: (1 + total) ** (periods_per_year / n) - 1; volatility: sample std (ddof 1) * sqrt(ppy);
  Sharpe: mean / std * sqrt(ppy); Sortino: mean * ppy / (sqrt(mean(min(r, 0) ** 2)) * sqrt(ppy));
  Calmar: annual return / max drawdown; max drawdown from the running peak, the initial cash included.
* trades: fills matched first-in first-out per symbol. A fill that reduces a position closes the oldest open
  lots; each reducing fill is one closed trade (its matched quantity, the lots' weighted entry price). A trade's
  P&L is net of its fees: the closing fill's fee and the opening fills' fees, pro rata to the quantity matched.
  Hit rate, profit factor and average win/loss are over these closed trades.
* per-symbol P&L: realised (FIFO, gross) + unrealised (open lots at the mark) - fees. Summed over symbols it is
  the equity change exactly (cash moves only by fills and fees), whatever the lot method.
* costs: fees as booked; slippage as the signed difference between the fill price and the close of the bar the
  order was decided on (a positive number is a cost), times the quantity: implementation shortfall against the
  decision bar's close.
* exposure: positions (cumulated fills) times the bar closes, over equity; gross = sum |value|, net = sum value.
* turnover: traded notional per step over that step's equity; annualised as the mean per step times ppy.
* capacity: each fill's participation per unit of equity, qty / (bar volume * equity at the fill). A strategy
  sized in proportion to its equity trades k times more shares at k times the equity, so the equity at which its
  largest such trade would take `participation` of its bar's volume is participation / max(qty / (volume *
  equity)); the same at the 95th percentile is reported too. Bars without a known volume are left out (the
  packaged close-only stocks have none: then there is no estimate, and the sheet says so). Fills the venue
  already held to its participation cap make the estimate about the equity they were made at: it says where the
  strategy stops scaling, not how far beyond it a bigger cap would go.
* benchmark: equal-weight buy-and-hold of the given symbols from the closes, no costs: the initial cash split
  equally at the first step's closes (symbols without a close there are left out and named).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tradesys.backtest.metrics import periods_per_year as _periods_per_year

DEFAULT_ROLLING_WINDOW = 63  # about a quarter of daily bars
DEFAULT_PARTICIPATION = 0.10
_EPS = 1e-9


@dataclass(slots=True)
class TearSheet:
    """Everything a report shows. Frames are indexed by UTC timestamps (DatetimeIndex) unless said otherwise."""

    stats: dict[str, Any]
    equity: pd.DataFrame  # equity, cash, market_value, returns, drawdown (+ benchmark, benchmark_drawdown)
    rolling: pd.DataFrame  # sharpe, volatility (annualised, over `rolling_window` steps)
    monthly: pd.DataFrame  # index year, columns 1..12 and "year": compounded returns
    exposure: pd.DataFrame  # gross, net (fractions of equity; gross NaN without closes), turnover per step
    trades: pd.DataFrame  # closed FIFO trades
    per_symbol: pd.DataFrame  # index symbol: realized, unrealized, fees, total, qty, mark
    costs: dict[str, Any]
    capacity: dict[str, Any]
    benchmark: dict[str, Any]  # label, symbols, stats; or available False and the reason
    notes: list[str] = field(default_factory=list)
    rolling_window: int = DEFAULT_ROLLING_WINDOW

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the statistics, costs, capacity, benchmark, per-symbol P&L, monthly table)."""
        monthly = {
            str(int(y)): {str(k): (None if pd.isna(v) else float(v)) for k, v in row.items()}
            for y, row in self.monthly.iterrows()
        }
        per_symbol = {
            str(s): {k: float(v) for k, v in row.items()} for s, row in self.per_symbol.iterrows()
        }
        return {
            "stats": dict(self.stats),
            "costs": dict(self.costs),
            "capacity": dict(self.capacity),
            "benchmark": dict(self.benchmark),
            "per_symbol_pnl": per_symbol,
            "monthly_returns": monthly,
            "trades": len(self.trades),
            "rolling_window": self.rolling_window,
            "notes": list(self.notes),
        }


# --- the equity curve and its statistics -------------------------------------------------------------------------


def equity_frame(curve: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The last equity row per timestamp (the ledger writes several per step), indexed by int64 ns, in time order."""
    if len(curve) == 0:
        raise ValueError("equity: the ledger has no equity rows (no step was booked)")
    df = pd.DataFrame.from_records(list(curve))
    missing = [c for c in ("ts_ns", "equity", "cash", "market_value", "initial_cash") if c not in df]
    if missing:
        raise ValueError(f"equity: missing column(s) {missing}")
    df["ts_ns"] = df["ts_ns"].astype(np.int64)
    df = df.drop_duplicates("ts_ns", keep="last").sort_values("ts_ns", kind="stable").set_index("ts_ns")
    bad = df.index[~np.isfinite(df["equity"].to_numpy(float))]
    if len(bad):
        raise ValueError(f"equity: not finite at ts_ns {int(bad[0])}")
    return df


def step_returns(equity: np.ndarray, initial_cash: float) -> np.ndarray:
    """Simple returns per step, the first from `initial_cash`. Raises if an equity before a step is not positive."""
    eq = np.asarray(equity, dtype=float)
    prev = np.concatenate([[float(initial_cash)], eq[:-1]])
    if np.any(prev <= 0):
        i = int(np.flatnonzero(prev <= 0)[0])
        raise ValueError(f"equity: {prev[i]!r} at step {i} is not positive: returns are undefined")
    return eq / prev - 1.0


def drawdown(returns: np.ndarray) -> np.ndarray:
    """Drawdown per step (<= 0) of the compounded returns, the starting value counted as a peak."""
    wealth = np.cumprod(1.0 + np.asarray(returns, dtype=float))
    peak = np.maximum.accumulate(np.maximum(wealth, 1.0))
    return wealth / peak - 1.0


def _drawdown_durations(dd: np.ndarray, ts: pd.DatetimeIndex) -> dict[str, Any]:
    """The max drawdown's episode (peak to recovery, or to the end) and the longest time under water, in steps
    and calendar days. The peak before step 0 is the start (the initial cash)."""
    n = len(dd)
    if n == 0:
        return {"max_drawdown_duration_steps": 0, "max_drawdown_duration_days": 0.0, "max_drawdown_recovered": True,
                "longest_drawdown_steps": 0, "longest_drawdown_days": 0.0}
    under = dd < -1e-12
    # episodes of consecutive steps under water: [start, end) with the peak at start - 1
    episodes: list[tuple[int, int]] = []
    i = 0
    while i < n:
        if under[i]:
            j = i
            while j < n and under[j]:
                j += 1
            episodes.append((i, j))
            i = j
        else:
            i += 1

    def days(start: int, end: int) -> float:
        t0 = ts[start - 1] if start > 0 else ts[0]
        t1 = ts[end] if end < n else ts[-1]
        return float((t1 - t0) / pd.Timedelta(days=1))

    trough = int(np.argmin(dd))
    out: dict[str, Any] = {"max_drawdown_duration_steps": 0, "max_drawdown_duration_days": 0.0,
                           "max_drawdown_recovered": True, "longest_drawdown_steps": 0, "longest_drawdown_days": 0.0}
    for s, e in episodes:
        if s <= trough < e:
            out["max_drawdown_duration_steps"] = e - s + (1 if e < n else 0)
            out["max_drawdown_duration_days"] = days(s, e)
            out["max_drawdown_recovered"] = e < n
    if episodes:
        s, e = max(episodes, key=lambda p: p[1] - p[0])
        out["longest_drawdown_steps"] = e - s + (1 if e < n else 0)
        out["longest_drawdown_days"] = days(s, e)
    return out


def perf_stats(returns: np.ndarray, periods_per_year: float) -> dict[str, float]:
    """Total and annual return, volatility, Sharpe, Sortino, Calmar, max drawdown (a positive fraction)."""
    r = np.asarray(returns, dtype=float)
    if r.ndim != 1:
        raise ValueError(f"returns: expected one dimension, got shape {r.shape}")
    if not np.all(np.isfinite(r)):
        raise ValueError("returns: contains NaN or inf")
    if periods_per_year <= 0:
        raise ValueError(f"periods_per_year: must be > 0, got {periods_per_year}")
    n = len(r)
    nan = float("nan")
    if n == 0:
        return {"total_return": 0.0, "annual_return": nan, "annual_volatility": nan, "sharpe": nan, "sortino": nan,
                "calmar": nan, "max_drawdown": 0.0}
    total = float(np.prod(1.0 + r) - 1.0)
    annual = float((1.0 + total) ** (periods_per_year / n) - 1.0) if total > -1.0 else -1.0
    sd = float(r.std(ddof=1)) if n > 1 else nan
    vol = sd * math.sqrt(periods_per_year)
    sharpe = float(r.mean() / sd * math.sqrt(periods_per_year)) if n > 1 and sd > 0 else nan
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2))) * math.sqrt(periods_per_year)
    sortino = float(r.mean() * periods_per_year / downside) if downside > 0 else nan
    mdd = max(0.0, float(-drawdown(r).min()))
    calmar = annual / mdd if mdd > 0 else nan
    return {"total_return": total, "annual_return": annual, "annual_volatility": vol, "sharpe": sharpe,
            "sortino": sortino, "calmar": calmar, "max_drawdown": mdd}


def rolling_stats(returns: pd.Series, window: int, periods_per_year: float) -> pd.DataFrame:
    """Rolling annualised Sharpe and volatility over `window` steps (NaN until the window is full)."""
    if window < 2:
        raise ValueError(f"rolling_window: must be >= 2, got {window}")
    roll = returns.rolling(window, min_periods=window)
    sd = roll.std(ddof=1)
    sharpe = (roll.mean() / sd.where(sd > 0)) * math.sqrt(periods_per_year)
    return pd.DataFrame({"sharpe": sharpe, "volatility": sd * math.sqrt(periods_per_year)})


def monthly_returns(returns: pd.Series) -> pd.DataFrame:
    """Compounded returns per calendar month (rows: years, columns 1..12) and per year (column "year")."""
    if not isinstance(returns.index, pd.DatetimeIndex):
        raise ValueError("returns: needs a DatetimeIndex")
    if returns.empty:
        return pd.DataFrame(columns=[*range(1, 13), "year"], dtype=float)
    idx = returns.index
    g = (1.0 + returns).groupby([idx.year, idx.month]).prod() - 1.0
    table = g.unstack(level=1).reindex(columns=range(1, 13))
    table.index.name = "year"
    table.columns.name = None
    table["year"] = (1.0 + returns).groupby(idx.year).prod() - 1.0
    return table


def alpha_beta(returns: np.ndarray, benchmark: np.ndarray, periods_per_year: float) -> tuple[float, float]:
    """Beta = cov / var of the benchmark's returns; alpha annualised as (1 + mean(r - beta * b)) ** ppy - 1."""
    r, b = np.asarray(returns, float), np.asarray(benchmark, float)
    if len(r) != len(b):
        raise ValueError(f"benchmark: {len(b)} returns but the strategy has {len(r)}")
    if len(r) < 2 or float(np.var(b)) == 0.0:
        return float("nan"), float("nan")
    beta = float(np.mean((r - r.mean()) * (b - b.mean())) / np.var(b))
    alpha = float((1.0 + np.mean(r - beta * b)) ** periods_per_year - 1.0)
    return alpha, beta


# --- trades and per-symbol P&L -------------------------------------------------------------------------------------


_TRADE_COLUMNS = ["symbol", "direction", "qty", "entry_ts_ns", "exit_ts_ns", "entry_price", "exit_price",
                  "gross_pnl", "fees", "pnl", "return"]


def _signed(fill: Mapping[str, Any]) -> float:
    side = str(fill["side"])
    qty = float(fill["qty"])
    if side == "buy":
        return qty
    if side == "sell":
        return -qty
    raise ValueError(f"fills: side {side!r} is not buy or sell (fill {fill.get('fill_id')!r})")


def fifo_trades(fills: Sequence[Mapping[str, Any]]) -> tuple[pd.DataFrame, dict[str, deque[list[float]]]]:
    """Closed trades (FIFO lot matching, see the module docstring) and the open lots left per symbol.

    Fills are taken in the order given (the ledger's: time, then venue clock, then fill id). An open lot is
    [signed qty, price, ts_ns, fee per unit].
    """
    lots: dict[str, deque[list[float]]] = {}
    rows: list[tuple[Any, ...]] = []
    for f in fills:
        sym = str(f["symbol"])
        s = _signed(f)
        price, fee, ts = float(f["price"]), float(f["fee"]), int(f["ts_ns"])
        if abs(s) < _EPS:
            continue
        if not (math.isfinite(price) and price > 0):
            raise ValueError(f"fills: price {price!r} of fill {f.get('fill_id')!r} is not a positive number")
        fee_unit = fee / abs(s)
        book = lots.setdefault(sym, deque())
        remaining = s
        matched, entry_value, gross, fees, entry_ts, direction = 0.0, 0.0, 0.0, 0.0, ts, 0.0
        while abs(remaining) > _EPS and book and math.copysign(1.0, book[0][0]) != math.copysign(1.0, remaining):
            lot = book[0]
            direction = math.copysign(1.0, lot[0])
            m = min(abs(remaining), abs(lot[0]))
            if matched == 0.0:
                entry_ts = int(lot[2])
            matched += m
            entry_value += m * lot[1]
            gross += m * (price - lot[1]) * direction
            fees += m * (lot[3] + fee_unit)
            lot[0] -= direction * m
            remaining += direction * m
            if abs(lot[0]) < _EPS:
                book.popleft()
        if matched > 0:
            entry = entry_value / matched
            rows.append((sym, "long" if direction > 0 else "short", matched, entry_ts, ts, entry, price, gross, fees,
                         gross - fees, (gross - fees) / entry_value))
        if abs(remaining) > _EPS:
            book.append([remaining, price, float(ts), fee_unit])
    return pd.DataFrame.from_records(rows, columns=_TRADE_COLUMNS), lots


def trade_stats(trades: pd.DataFrame) -> dict[str, float]:
    """Hit rate, profit factor, average win and loss, over closed trades' net P&L (NaN without trades)."""
    nan = float("nan")
    pnl = trades["pnl"].to_numpy(float) if len(trades) else np.zeros(0)
    wins, losses = pnl[pnl > 0], pnl[pnl < 0]
    gross_win, gross_loss = float(wins.sum()), float(-losses.sum())
    if len(pnl) == 0:
        pf = nan
    elif gross_loss > 0:
        pf = gross_win / gross_loss
    else:
        pf = float("inf") if gross_win > 0 else nan
    hold = ((trades["exit_ts_ns"] - trades["entry_ts_ns"]) / 86_400e9).to_numpy(float) if len(trades) else pnl
    return {
        "trades": len(pnl),
        "hit_rate": float(len(wins) / len(pnl)) if len(pnl) else nan,
        "profit_factor": pf,
        "avg_win": float(wins.mean()) if len(wins) else nan,
        "avg_loss": float(losses.mean()) if len(losses) else nan,
        "win_loss_ratio": float(wins.mean() / -losses.mean()) if len(wins) and len(losses) else nan,
        "avg_trade_pnl": float(pnl.mean()) if len(pnl) else nan,
        "best_trade": float(pnl.max()) if len(pnl) else nan,
        "worst_trade": float(pnl.min()) if len(pnl) else nan,
        "avg_holding_days": float(hold.mean()) if len(hold) else nan,
    }


def per_symbol_pnl(
    fills: Sequence[Mapping[str, Any]],
    marks: Mapping[str, float],
    trades: pd.DataFrame | None = None,
    lots: Mapping[str, deque[list[float]]] | None = None,
) -> pd.DataFrame:
    """Per symbol: realised (FIFO, gross), unrealised (open lots at `marks`), fees, total = r + u - fees.

    A symbol with an open position and no mark raises ValueError naming it.
    """
    if trades is None or lots is None:
        trades, lots = fifo_trades(fills)
    symbols = sorted({str(f["symbol"]) for f in fills})
    fees: dict[str, float] = {}
    for f in fills:
        fees[str(f["symbol"])] = fees.get(str(f["symbol"]), 0.0) + float(f["fee"])
    realized = trades.groupby("symbol")["gross_pnl"].sum() if len(trades) else pd.Series(dtype=float)
    rows = []
    for sym in symbols:
        book = lots.get(sym, deque())
        qty = float(sum(lot[0] for lot in book))
        mark = marks.get(sym, float("nan"))
        if book and not (mark is not None and math.isfinite(float(mark))):
            raise ValueError(f"marks: no mark for {sym!r}, which has an open position of {qty:g}")
        unreal = float(sum(lot[0] * (float(mark) - lot[1]) for lot in book)) if book else 0.0
        r = float(realized.get(sym, 0.0))
        rows.append((sym, r, unreal, fees.get(sym, 0.0), r + unreal - fees.get(sym, 0.0), qty,
                     float(mark) if mark is not None else float("nan")))
    df = pd.DataFrame.from_records(rows, columns=["symbol", "realized", "unrealized", "fees", "total", "qty", "mark"])
    return df.set_index("symbol")


# --- bars: costs, exposure, capacity, benchmark --------------------------------------------------------------------


def _lookup(frame: pd.DataFrame | None, ts: Sequence[int], symbols: Sequence[str]) -> np.ndarray:
    """frame[ts_i, symbol_i] for each pair (NaN where absent)."""
    out = np.full(len(ts), np.nan)
    if frame is None or frame.empty or len(ts) == 0:
        return out
    rows = frame.index.get_indexer(pd.Index(np.asarray(ts, dtype=np.int64)))
    cols = frame.columns.get_indexer(pd.Index(list(symbols)))
    ok = (rows >= 0) & (cols >= 0)
    values = frame.to_numpy(float)
    out[ok] = values[rows[ok], cols[ok]]
    return out


def slippage_cost(
    fills: Sequence[Mapping[str, Any]], orders: Sequence[Mapping[str, Any]], closes: pd.DataFrame | None
) -> dict[str, Any]:
    """Implementation shortfall against the decision bar's close (module docstring); None without the bars."""
    if not fills:
        return {"slippage": 0.0, "slippage_fills_priced": 0, "slippage_fills_unpriced": 0}
    decided = {str(o["client_order_id"]): int(o["ts_ns"]) for o in orders}
    ts = [decided.get(str(f["client_order_id"]), int(f["ts_ns"])) for f in fills]
    ref = _lookup(closes, ts, [str(f["symbol"]) for f in fills])
    signed = np.array([_signed(f) for f in fills])
    price = np.array([float(f["price"]) for f in fills])
    ok = np.isfinite(ref)
    if not ok.any():
        return {"slippage": None, "slippage_fills_priced": 0, "slippage_fills_unpriced": len(fills)}
    return {"slippage": float(np.sum(signed[ok] * (price[ok] - ref[ok]))),
            "slippage_fills_priced": int(ok.sum()), "slippage_fills_unpriced": int((~ok).sum())}


def positions_over_time(fills: Sequence[Mapping[str, Any]], steps: pd.Index) -> pd.DataFrame:
    """Signed quantity held per symbol after each step (fills cumulated up to and including the step's ts)."""
    if not fills:
        return pd.DataFrame(index=steps, dtype=float)
    df = pd.DataFrame({"ts": [int(f["ts_ns"]) for f in fills], "symbol": [str(f["symbol"]) for f in fills],
                       "q": [_signed(f) for f in fills]})
    cum = df.groupby(["ts", "symbol"])["q"].sum().unstack(fill_value=0.0).sort_index().cumsum()
    at = cum.index.searchsorted(np.asarray(steps, dtype=np.int64), side="right") - 1
    values = np.where(at[:, None] >= 0, cum.to_numpy(float)[np.maximum(at, 0)], 0.0)
    return pd.DataFrame(values, index=steps, columns=cum.columns)


def capacity_estimate(
    fills: Sequence[Mapping[str, Any]],
    volumes: pd.DataFrame | None,
    equity: pd.Series,
    participation: float = DEFAULT_PARTICIPATION,
) -> dict[str, Any]:
    """The equity at which the largest trade (relative to its bar's volume and the equity then) would take
    `participation` of the bar's volume; also at the 95th percentile of fills (module docstring)."""
    if not 0 < participation <= 1:
        raise ValueError(f"participation: must be in (0, 1], got {participation}")
    base = {"participation": participation, "capacity": None, "capacity_p95": None, "fills_with_volume": 0,
            "max_fill_participation": None}
    if not fills:
        return {**base, "reason": "no fills"}
    ts = [int(f["ts_ns"]) for f in fills]
    vol = _lookup(volumes, ts, [str(f["symbol"]) for f in fills])
    eq = equity.reindex(pd.Index(ts, dtype=np.int64)).to_numpy(float)
    qty = np.array([float(f["qty"]) for f in fills])
    ok = np.isfinite(vol) & (vol > 0) & np.isfinite(eq) & (eq > 0)
    if not ok.any():
        return {**base, "reason": "bar volume unknown for every fill (close-only data or no bars)"}
    per_equity = qty[ok] / (vol[ok] * eq[ok])
    return {**base, "capacity": float(participation / per_equity.max()),
            "capacity_p95": float(participation / np.quantile(per_equity, 0.95)),
            "fills_with_volume": int(ok.sum()), "max_fill_participation": float((qty[ok] / vol[ok]).max()),
            "reason": None}


def equal_weight_benchmark(
    closes: pd.DataFrame, steps: pd.Index, initial_cash: float, symbols: Sequence[str] | None = None
) -> tuple[pd.Series, list[str], list[str]]:
    """Buy-and-hold equity, equal weights at the first step's closes (forward-filled); (equity, used, left out)."""
    wanted = list(symbols) if symbols is not None else list(closes.columns)
    have = [s for s in wanted if s in closes.columns]
    px = closes[have].sort_index().reindex(closes.index.union(steps)).ffill().reindex(steps)
    used = [s for s in have if math.isfinite(float(px[s].iloc[0])) and float(px[s].iloc[0]) > 0] if len(px) else []
    left_out = [s for s in wanted if s not in used]
    if not used:
        raise ValueError("benchmark: no symbol has a close at the first step")
    shares = (initial_cash / len(used)) / px[used].iloc[0]
    return (px[used].ffill() * shares).sum(axis=1), used, left_out


# --- the whole sheet -----------------------------------------------------------------------------------------------


def tear_sheet(
    curve: Sequence[Mapping[str, Any]],
    fills: Sequence[Mapping[str, Any]],
    orders: Sequence[Mapping[str, Any]],
    *,
    closes: pd.DataFrame | None = None,
    volumes: pd.DataFrame | None = None,
    marks: Mapping[str, float] | None = None,
    benchmark_symbols: Sequence[str] | None = None,
    periods_per_year: float | None = None,
    rolling_window: int = DEFAULT_ROLLING_WINDOW,
    participation: float = DEFAULT_PARTICIPATION,
    bars_note: str | None = None,
) -> TearSheet:
    """Compute every number of the report from the ledger's rows and (optionally) the bars.

    `closes`/`volumes`: wide frames indexed by int64 ns bar timestamps, one column per symbol. Without closes
    there is no benchmark, no slippage, no gross exposure (the sheet says why in `notes`; `bars_note` is the
    caller's reason). `marks`: the ledger's last mark per symbol (positions table); a symbol missing there is
    marked at its last close. `benchmark_symbols`: the run's universe (default: every column of `closes`).
    """
    eqf = equity_frame(curve)
    steps = eqf.index
    initial_cash = float(eqf["initial_cash"].iloc[0])
    ppy = float(periods_per_year) if periods_per_year is not None else _periods_per_year(list(steps))
    when = pd.to_datetime(steps.to_numpy(np.int64), utc=True)
    equity = eqf["equity"].astype(float)
    rets = step_returns(equity.to_numpy(), initial_cash)
    dd = drawdown(rets)
    notes: list[str] = []
    if bars_note:
        notes.append(bars_note)
    if closes is not None:
        closes = closes.sort_index()
        closes.index = closes.index.astype(np.int64)
    if volumes is not None:
        volumes = volumes.sort_index()
        volumes.index = volumes.index.astype(np.int64)

    stats: dict[str, Any] = {
        "start": when[0].isoformat(), "end": when[-1].isoformat(), "steps": len(steps), "periods_per_year": ppy,
        "initial_cash": initial_cash, "final_equity": float(equity.iloc[-1]),
    }
    stats.update(perf_stats(rets, ppy))
    stats.update(_drawdown_durations(dd, when))

    # trades and P&L by symbol
    trades, lots = fifo_trades(fills)
    stats.update(trade_stats(trades))
    all_marks: dict[str, float] = {}
    if closes is not None and not closes.empty:
        last = closes.ffill().iloc[-1] if len(closes) else pd.Series(dtype=float)
        upto = closes.loc[: int(steps[-1])]
        if len(upto):
            last = upto.ffill().iloc[-1]
        all_marks.update({str(k): float(v) for k, v in last.items() if pd.notna(v)})
    all_marks.update({str(k): float(v) for k, v in (marks or {}).items()})
    for sym, book in lots.items():
        if book and sym not in all_marks:
            all_marks[sym] = float(book[-1][1])
            notes.append(f"{sym}: no mark or close known; its open position is marked at its last fill price")
    per_sym = per_symbol_pnl(fills, all_marks, trades, lots)

    # costs
    fees = float(sum(float(f["fee"]) for f in fills))
    costs: dict[str, Any] = {"fees": fees, **slippage_cost(fills, orders, closes)}
    costs["total"] = None if costs["slippage"] is None else fees + costs["slippage"]
    notional = float(sum(float(f["qty"]) * float(f["price"]) for f in fills))
    costs["traded_notional"] = notional
    costs["cost_bps_of_notional"] = (None if costs["total"] is None or notional == 0
                                     else costs["total"] / notional * 1e4)
    stats["fees"] = fees
    stats["slippage"] = costs["slippage"]

    # exposure and turnover
    pos = positions_over_time(fills, steps)
    traded = pd.Series(0.0, index=steps)
    if fills:
        tn = pd.Series([float(f["qty"]) * float(f["price"]) for f in fills],
                       index=[int(f["ts_ns"]) for f in fills]).groupby(level=0).sum()
        traded = traded.add(tn.reindex(steps).fillna(0.0), fill_value=0.0)
    turnover = traded / equity
    net = eqf["market_value"].astype(float) / equity
    gross = pd.Series(np.nan, index=steps)
    if closes is not None and not pos.empty:
        px = closes.reindex(closes.index.union(steps)).ffill().reindex(steps)
        missing = [s for s in pos.columns if s not in px.columns]
        if missing:
            notes.append(f"no closes for {', '.join(missing)}: gross exposure is not shown")
        else:
            values = pos * px[pos.columns]
            gross = values.abs().sum(axis=1, min_count=1) / equity
            gross[(pos.abs().sum(axis=1) == 0)] = 0.0
    elif pos.empty:
        gross = pd.Series(0.0, index=steps)
    exposure = pd.DataFrame({"gross": gross.to_numpy(), "net": net.to_numpy(), "turnover": turnover.to_numpy()},
                            index=when)
    stats["turnover_annual"] = float(turnover.mean() * ppy)
    stats["avg_gross_exposure"] = float(gross.mean()) if gross.notna().all() else None
    stats["avg_net_exposure"] = float(net.mean())
    stats["time_in_market"] = float((pos.abs().sum(axis=1) > _EPS).mean()) if not pos.empty else 0.0

    capacity = capacity_estimate(fills, volumes, equity, participation)
    stats["capacity"] = capacity["capacity"]

    # benchmark
    eq_df = pd.DataFrame({"equity": equity.to_numpy(), "cash": eqf["cash"].to_numpy(float),
                          "market_value": eqf["market_value"].to_numpy(float), "returns": rets, "drawdown": dd},
                         index=when)
    benchmark: dict[str, Any] = {"available": False, "reason": bars_note or "no bar data for this run"}
    if closes is not None and not closes.empty:
        try:
            bench, used, left_out = equal_weight_benchmark(closes, steps, initial_cash, benchmark_symbols)
        except ValueError as exc:
            benchmark = {"available": False, "reason": str(exc)}
        else:
            b_rets = step_returns(bench.to_numpy(float), initial_cash)
            alpha, beta = alpha_beta(rets, b_rets, ppy)
            b_stats = perf_stats(b_rets, ppy)
            benchmark = {
                "available": True,
                "label": f"equal-weight buy-and-hold of {len(used)} symbol{'s' if len(used) != 1 else ''}, no costs",
                "symbols": used, "left_out": left_out, "stats": b_stats, "alpha": alpha, "beta": beta,
                "excess_total_return": stats["total_return"] - b_stats["total_return"],
            }
            eq_df["benchmark"] = bench.to_numpy(float)
            eq_df["benchmark_drawdown"] = drawdown(b_rets)
            stats["alpha"], stats["beta"] = alpha, beta
            if left_out:
                notes.append(f"benchmark leaves out {', '.join(left_out)}: no close at the first step")
    ret_series = pd.Series(rets, index=when)
    return TearSheet(
        stats=stats,
        equity=eq_df,
        rolling=rolling_stats(ret_series, rolling_window, ppy),
        monthly=monthly_returns(ret_series),
        exposure=exposure,
        trades=trades,
        per_symbol=per_sym,
        costs=costs,
        capacity=capacity,
        benchmark=benchmark,
        notes=notes,
        rolling_window=rolling_window,
    )
