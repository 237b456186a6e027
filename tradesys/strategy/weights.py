"""Target-weight strategy: trades a given schedule of weights (bar times x symbols) through the shared sizing.

The schedule is a table with a `ts` (or `date`) column and one weight column per symbol, read from a .parquet or
.csv file (`strategy.weights_path`) or built in memory (`WeightSchedule.from_array`). At each bar the row in force
is the last one stamped at or before the bar (as of): a `date` of 2020-01-02 means 2020-01-02 00:00 UTC, so it
applies from that day's bar on (daily bars are stamped at the close, 21:00 UTC). Before the first row, and for a
symbol that is not in the schedule or whose weight is empty (NaN), the strategy sends nothing for it.

Orders come from `tradesys.strategy.sizing` exactly as for the other strategies: the bar's weights are scaled
within the leverage limits (`scale_to_leverage`), then `rebalance_order` (whole shares, rebalance band, clipped
to the order and position limits). The vectorised engine (`tradesys.backtest.vectorized`) books the same orders
from the same weights; this class is the event-driven side of that parity.

There is no state beyond the schedule, so a restarted or replayed step makes the same orders (`warm_up` only
counts bars).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from tradesys.config import ConfigError, ExecutionConfig, RiskConfig, StrategyConfig
from tradesys.core.orders import Order
from tradesys.core.portfolio import PortfolioSnapshot
from tradesys.core.schemas import batch_ts
from tradesys.strategy.sizing import rebalance_order, scale_to_leverage

FIELD = "strategy.weights_path"


@dataclass(frozen=True, slots=True)
class WeightSchedule:
    """Target weights by time: `ts_ns` strictly increasing (int64 ns UTC), `weights[i, j]` the weight of
    `symbols[j]` from `ts_ns[i]` on; NaN = no opinion (no order for that symbol)."""

    ts_ns: np.ndarray
    symbols: tuple[str, ...]
    weights: np.ndarray

    @classmethod
    def from_array(
        cls, ts_ns: Sequence[int] | np.ndarray, symbols: Sequence[str], weights: np.ndarray, field: str = "weights"
    ) -> WeightSchedule:
        """Validate and build a schedule; errors name `field` (ConfigError "field: reason")."""
        ts = np.asarray(ts_ns, dtype=np.int64)
        w = np.asarray(weights, dtype=float)
        syms = tuple(str(s) for s in symbols)
        if ts.ndim != 1 or len(ts) == 0:
            raise ConfigError(f"{field}: needs at least one row of weights")
        if w.shape != (len(ts), len(syms)):
            want = (len(ts), len(syms))
            raise ConfigError(f"{field}: weights have shape {w.shape}, expected {want} (rows x symbols)")
        if not syms:
            raise ConfigError(f"{field}: no symbol columns")
        if len(set(syms)) != len(syms):
            dup = sorted({s for s in syms if syms.count(s) > 1})
            raise ConfigError(f"{field}: duplicate symbol columns {dup}")
        if np.isinf(w).any():
            i, j = np.argwhere(np.isinf(w))[0]
            raise ConfigError(f"{field}: weight of {syms[j]} at row {i} is infinite")
        if len(ts) > 1 and not (np.diff(ts) > 0).all():
            i = int(np.argmin(np.diff(ts) > 0))
            raise ConfigError(f"{field}: timestamps must be strictly increasing (row {i + 1} is not after row {i})")
        ts.flags.writeable = False
        w.flags.writeable = False
        return cls(ts, syms, w)

    def row_at(self, ts_ns: int) -> int:
        """Index of the row in force at `ts_ns` (the last one at or before it), -1 before the first."""
        return int(np.searchsorted(self.ts_ns, ts_ns, side="right")) - 1

    def dense(self, bar_ts_ns: np.ndarray, symbols: Sequence[str]) -> np.ndarray:
        """Weights aligned to bars x `symbols` (as of each bar); NaN before the first row and for symbols the
        schedule does not have: what the strategy uses at each bar, as one array for the vectorised engine."""
        rows = np.searchsorted(self.ts_ns, np.asarray(bar_ts_ns, dtype=np.int64), side="right") - 1
        col = {s: j for j, s in enumerate(self.symbols)}
        out = np.full((len(rows), len(symbols)), np.nan)
        ok = rows >= 0
        for k, sym in enumerate(symbols):
            j = col.get(sym)
            if j is not None:
                out[ok, k] = self.weights[rows[ok], j]
        return out


def load_weights(path: str | Path, field: str = FIELD) -> WeightSchedule:
    """Read a schedule from .parquet or .csv: a `ts` or `date` column (datetimes, naive = UTC, or dates) and one
    numeric column per symbol. Any problem is a ConfigError naming `field` and the reason."""
    import pandas as pd

    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in {".parquet", ".csv"}:
        raise ConfigError(f"{field}: must be a .parquet or .csv file, got {str(p)!r}")
    if not p.is_file():
        raise ConfigError(f"{field}: no such file {str(p)!r}")
    try:
        frame = pd.read_parquet(p) if suffix == ".parquet" else pd.read_csv(p)
    except Exception as exc:  # a corrupt or non-tabular file: name the field, one line
        raise ConfigError(f"{field}: cannot read {p.name}: {' '.join(str(exc).split())[:200]}") from exc
    cols = [str(c) for c in frame.columns]
    frame.columns = cols
    time_col = "ts" if "ts" in cols else "date" if "date" in cols else None
    if time_col is None:
        raise ConfigError(f"{field}: needs a 'ts' or 'date' column, found {cols[:8]}")
    if frame[time_col].isna().any():
        raise ConfigError(f"{field}: column {time_col!r} has empty values")
    try:
        stamps = pd.to_datetime(frame[time_col], utc=True)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{field}: column {time_col!r} is not datetimes: {' '.join(str(exc).split())[:200]}") from exc
    symbols = [c for c in cols if c != time_col]
    for c in symbols:
        if not (pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])):
            raise ConfigError(f"{field}: column {c!r} is not numeric (weights are numbers; empty = no opinion)")
    values = frame[symbols].to_numpy(dtype=float) if symbols else np.empty((len(frame), 0))
    ts = stamps.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    return WeightSchedule.from_array(ts, symbols, values, field)


class TargetWeightsStrategy:
    """Trades a `WeightSchedule` (module docstring)."""

    execution: ExecutionConfig | None = None  # set by make_strategy: the orders' execution algorithm

    def __init__(
        self,
        cfg: StrategyConfig,
        schedule: WeightSchedule,
        strategy_id: str = "weights",
        wall_clock: Callable[[], int] = time.time_ns,
        limits: RiskConfig | None = None,
    ) -> None:
        self.cfg = cfg
        self.schedule = schedule
        self.strategy_id = strategy_id
        self.limits = limits
        self._wall = wall_clock
        self._col = {s: j for j, s in enumerate(schedule.symbols)}

    @classmethod
    def from_config(cls, cfg: StrategyConfig, limits: RiskConfig | None = None) -> TargetWeightsStrategy:
        if cfg.weights_path is None:
            raise ConfigError(f"{FIELD}: required for strategy.name = 'weights'")
        return cls(cfg, load_weights(cfg.weights_path), limits=limits)

    def weights_at(self, ts_ns: int, symbols: Iterable[str]) -> dict[str, float]:
        """The schedule's finite weights in force at `ts_ns` for `symbols`, in their order (before leverage)."""
        i = self.schedule.row_at(ts_ns)
        if i < 0:
            return {}
        row = self.schedule.weights[i]
        out: dict[str, float] = {}
        for sym in symbols:
            j = self._col.get(sym)
            if j is not None and not math.isnan(w := float(row[j])):
                out[sym] = w
        return out

    def warm_up(self, batches: Iterable[pa.RecordBatch]) -> int:
        """Nothing to rebuild (the schedule is the state); count the bars."""
        return sum(1 for b in batches if b.num_rows)

    def on_bars(
        self, bars: pa.RecordBatch, book: PortfolioSnapshot, working: Mapping[str, float]
    ) -> list[Order]:
        if bars.num_rows == 0:
            return []
        ts = batch_ts(bars)
        rows = [
            (sym, px)
            for sym, px in zip(bars.column("symbol").to_pylist(), bars.column("close").to_pylist(), strict=True)
            if px is not None and px > 0
        ]
        prices = dict(rows)
        weights = scale_to_leverage(self.weights_at(ts, prices), self.limits)
        now = self._wall()
        orders: list[Order] = []
        for sym, w in weights.items():
            px = prices[sym]
            order = rebalance_order(self.cfg, self.strategy_id, ts, sym, px, w, book, working, now, self.limits,
                                    self.execution)
            if order is not None:
                orders.append(order)
        return orders
