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

It is an honest example, not an edge: the demo reports whatever it earns.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import pyarrow as pa

from tradesys.config import RiskConfig, StrategyConfig
from tradesys.core.orders import Order
from tradesys.core.portfolio import PortfolioSnapshot
from tradesys.core.schemas import batch_ts
from tradesys.strategy.base import CloseHistory
from tradesys.strategy.sizing import rebalance_order, scale_to_leverage, vol_target_weight


class TrendStrategy:
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
        self._history = CloseHistory(max(cfg.slow, cfg.vol_lookback + 1))
        self._closes = self._history.closes
        self._wall = wall_clock

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

    def warm_up(self, batches: Iterable[pa.RecordBatch]) -> int:
        """Rebuild the close history from the bars up to a resume point (no orders); return the bars taken."""
        return self._history.warm_up(batches)

    def on_bars(
        self, bars: pa.RecordBatch, book: PortfolioSnapshot, working: Mapping[str, float]
    ) -> list[Order]:
        if bars.num_rows == 0:
            return []
        ts = batch_ts(bars)
        rows = self._history.observe(bars)
        weights = {}
        for sym, _ in rows:
            hist = self._closes[sym]
            weights[sym] = self.target_weight(np.fromiter(hist, float, len(hist)))
        weights = scale_to_leverage(weights, self.limits)
        orders: list[Order] = []
        now = self._wall()
        for sym, px in rows:
            order = rebalance_order(
                self.cfg, self.strategy_id, ts, sym, px, weights[sym], book, working, now, self.limits
            )
            if order is not None:
                orders.append(order)
        return orders
