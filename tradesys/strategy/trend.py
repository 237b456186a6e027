"""Moving-average trend following with volatility-scaled sizing.

Per symbol: direction = sign(SMA_fast - SMA_slow) of closes; target weight = direction *
min(max_weight, target_vol / (sigma * sqrt(N))), where sigma is the annualised close-to-close volatility over
`vol_lookback` bars and N the number of symbols, so that N uncorrelated positions run near `target_vol` in
total. The target quantity is weight * equity / price in whole shares; the strategy trades only when the book
(position plus working orders) is off target by more than `rebalance_band` of the target, or must exit (the
sizing and order rules live in `tradesys.strategy.sizing`, shared with the model strategy).

It is an honest example, not an edge: the demo reports whatever it earns.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping

import numpy as np
import pyarrow as pa

from tradesys.config import StrategyConfig
from tradesys.core.orders import Order
from tradesys.core.portfolio import PortfolioSnapshot
from tradesys.core.schemas import batch_ts
from tradesys.strategy.sizing import rebalance_order, vol_target_weight


class TrendStrategy:
    def __init__(
        self,
        cfg: StrategyConfig,
        n_symbols: int,
        bars_per_year: float = 252.0,
        strategy_id: str = "trend",
        wall_clock: Callable[[], int] = time.time_ns,
    ) -> None:
        if n_symbols <= 0:
            raise ValueError(f"n_symbols: must be > 0, got {n_symbols}")
        self.cfg = cfg
        self.strategy_id = strategy_id
        self.n_symbols = n_symbols
        self.bars_per_year = bars_per_year
        self._closes: dict[str, deque[float]] = {}
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

    def on_bars(
        self, bars: pa.RecordBatch, book: PortfolioSnapshot, working: Mapping[str, float]
    ) -> list[Order]:
        if bars.num_rows == 0:
            return []
        ts = batch_ts(bars)
        symbols = bars.column("symbol").to_pylist()
        closes = bars.column("close").to_pylist()
        maxlen = max(self.cfg.slow, self.cfg.vol_lookback + 1)
        orders: list[Order] = []
        now = self._wall()
        for sym, px in zip(symbols, closes, strict=True):
            if px is None or not (px > 0):
                continue
            hist = self._closes.setdefault(sym, deque(maxlen=maxlen))
            hist.append(px)
            w = self.target_weight(np.fromiter(hist, float, len(hist)))
            order = rebalance_order(self.cfg, self.strategy_id, ts, sym, px, w, book, working, now)
            if order is not None:
                orders.append(order)
        return orders
