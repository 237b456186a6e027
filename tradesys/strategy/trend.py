"""Moving-average trend following with volatility-scaled sizing.

Per symbol: direction = sign(SMA_fast - SMA_slow) of closes; target weight = direction *
min(max_weight, target_vol / (sigma * sqrt(N))), where sigma is the annualised close-to-close volatility over
`vol_lookback` bars and N the number of symbols, so that N uncorrelated positions run near `target_vol` in
total. The target quantity is weight * equity / price in whole shares; the strategy trades only when the book
(position plus working orders) is off target by more than `rebalance_band` of the target, or must exit (the
sizing and order rules live in `tradesys.strategy.sizing`, shared with the model strategy).

Restarts change nothing: the only state is the close history, `warm_up` rebuilds it from the bars before a
resume point, and a bar at or before the last one seen (a retried step) is not appended again, so a replayed or
retried step makes the same orders as the first time. With `limits` (the RiskConfig), orders are sized within the
pre-trade limits (`tradesys.strategy.sizing`).

Speed: the closes are one (symbols x window) array (`CloseMatrix`), so the moving averages and volatilities of
every symbol come from a few array operations per bar; each row reduction adds in the order the per-symbol code
(`target_weight`, kept as the reference) does, so the weights are bit for bit the same. Only the symbols whose
book is off target reach `rebalance_order`.

It is an honest example, not an edge: the demo reports whatever it earns.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import pyarrow as pa

from tradesys.config import ExecutionConfig, RiskConfig, StrategyConfig
from tradesys.core.orders import Order
from tradesys.core.portfolio import PortfolioSnapshot
from tradesys.core.schemas import batch_ts
from tradesys.strategy.base import CloseMatrix
from tradesys.strategy.sizing import rebalance_order, scale_to_leverage, vol_target_weight


class TrendStrategy:
    execution: ExecutionConfig | None = None  # set by make_strategy: the orders' execution algorithm

    def __init__(
        self,
        cfg: StrategyConfig,
        n_symbols: int,
        bars_per_year: float = 252.0,
        strategy_id: str = "trend",
        wall_clock: Callable[[], int] = time.time_ns,
        limits: RiskConfig | None = None,
    ) -> None:
        if n_symbols <= 0:
            raise ValueError(f"n_symbols: must be > 0, got {n_symbols}")
        self.cfg = cfg
        self.strategy_id = strategy_id
        self.n_symbols = n_symbols
        self.bars_per_year = bars_per_year
        self.limits = limits
        self._history = CloseMatrix(max(cfg.slow, cfg.vol_lookback + 1))
        self._wall = wall_clock
        self._sqrt_n = math.sqrt(n_symbols)
        self._sqrt_year = math.sqrt(bars_per_year)

    def target_weight(self, closes: np.ndarray) -> float:
        """The target weight for one symbol given its close history (oldest first); 0 during warm-up."""
        cfg = self.cfg
        if len(closes) < cfg.slow or len(closes) < cfg.vol_lookback + 1:
            return 0.0
        fast = closes[-cfg.fast :].mean()
        slow = closes[-cfg.slow :].mean()
        rets = np.diff(np.log(closes[-(cfg.vol_lookback + 1) :]))
        sigma = rets.std(ddof=1) * math.sqrt(self.bars_per_year)
        direction = 1.0 if fast > slow else -1.0 if fast < slow else 0.0
        return vol_target_weight(direction, sigma, cfg, self.n_symbols)

    def target_weights(self, rows: np.ndarray) -> np.ndarray:
        """`target_weight` of the symbols in `rows` of the close matrix, all at once (the same floats)."""
        cfg = self.cfg
        hist = self._history
        out = np.zeros(len(rows))
        ready = np.flatnonzero(hist.counts[rows] >= hist.maxlen)  # the window is full: maxlen = max(slow, vol + 1)
        if len(ready) == 0:
            return out
        closes = hist.values[rows[ready]]
        fast = closes[:, -cfg.fast :].mean(axis=1)
        slow = closes[:, -cfg.slow :].mean(axis=1)
        rets = np.diff(np.log(closes[:, -(cfg.vol_lookback + 1) :]), axis=1)
        sigma = rets.std(ddof=1, axis=1) * self._sqrt_year
        direction = np.where(fast > slow, 1.0, np.where(fast < slow, -1.0, 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            w = direction * np.minimum(cfg.max_weight, cfg.target_vol / (sigma * self._sqrt_n))
        w[~(sigma > 0)] = 0.0  # vol_target_weight's rules, element by element
        if not cfg.allow_short:
            w[direction < 0] = 0.0
        out[ready] = w
        return out

    def warm_up(self, batches: Iterable[pa.RecordBatch]) -> int:
        """Rebuild the close history from the bars up to a resume point (no orders); return the bars taken."""
        return self._history.warm_up(batches)

    def on_bars(
        self, bars: pa.RecordBatch, book: PortfolioSnapshot, working: Mapping[str, float]
    ) -> list[Order]:
        if bars.num_rows == 0:
            return []
        ts = batch_ts(bars)
        syms, px, rows = self._history.observe(bars)
        if not syms:
            return []
        weights = scale_to_leverage(dict(zip(syms, self.target_weights(rows).tolist(), strict=True)), self.limits)
        w = np.fromiter((weights[s] for s in syms), np.float64, len(syms))
        orders: list[Order] = []
        now = self._wall()
        prices = px.tolist()
        for j in _off_target(self.cfg, w, px, syms, book, working, self.limits):
            sym = syms[j]
            order = rebalance_order(
                self.cfg, self.strategy_id, ts, sym, prices[j], weights[sym], book, working, now, self.limits,
                self.execution,
            )
            if order is not None:
                orders.append(order)
        return orders


def _off_target(
    cfg: StrategyConfig,
    weights: np.ndarray,
    px: np.ndarray,
    syms: list[str],
    book: PortfolioSnapshot,
    working: Mapping[str, float],
    limits: RiskConfig | None,
) -> np.ndarray:
    """Rows where `rebalance_order` may make an order: its target and band tests in array form (the same float
    operations, so no row it would trade is left out); the rows kept are checked by `rebalance_order` itself."""
    size = np.abs(weights) * book.equity / px
    if limits is not None:
        size = np.minimum(size, limits.max_position_notional / px)
    target = np.floor(size) * np.where(weights >= 0, 1.0, -1.0)
    positions = book.positions
    have = np.fromiter((positions.get(s, 0.0) + working.get(s, 0.0) for s in syms), np.float64, len(syms))
    diff = target - have
    inside_band = (target != 0) & (np.abs(diff) < cfg.rebalance_band * np.abs(target))
    return np.flatnonzero((diff != 0) & ~inside_band)
