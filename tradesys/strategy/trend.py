"""Moving-average trend following with volatility-scaled sizing.

Per symbol: direction = sign(SMA_fast - SMA_slow) of closes; target weight = direction *
min(max_weight, target_vol / (sigma * sqrt(N))), where sigma is the annualised close-to-close volatility over
`vol_lookback` bars and N the number of symbols, so that N uncorrelated positions run near `target_vol` in
total. The target quantity is weight * equity / price in whole shares; the strategy trades only when the book
(position plus working orders) is off target by more than `rebalance_band` of the target, or must exit.

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
from tradesys.core.orders import Order, OrderType, Side, TimeInForce
from tradesys.core.portfolio import PortfolioSnapshot
from tradesys.core.schemas import batch_ts


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
        if not (sigma > 0):
            return 0.0
        direction = 1.0 if fast > slow else -1.0 if fast < slow else 0.0
        if direction < 0 and not cfg.allow_short:
            return 0.0
        return direction * min(cfg.max_weight, cfg.target_vol / (sigma * math.sqrt(self.n_symbols)))

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
            target = math.floor(abs(w) * book.equity / px) * (1 if w >= 0 else -1)
            have = book.qty(sym) + working.get(sym, 0.0)
            diff = target - have
            if diff == 0:
                continue
            if target != 0 and abs(diff) < self.cfg.rebalance_band * abs(target):
                continue
            side = Side.BUY if diff > 0 else Side.SELL
            limit = None
            otype = OrderType.MARKET
            if self.cfg.order_type == "limit":
                otype = OrderType.LIMIT
                off = self.cfg.limit_offset_bps / 1e4
                limit = round(px * (1 + off) if side is Side.BUY else px * (1 - off), 2)
            orders.append(
                Order(
                    client_order_id=f"{self.strategy_id}-{ts}-{sym}",
                    symbol=sym,
                    side=side,
                    qty=float(abs(diff)),
                    type=otype,
                    tif=TimeInForce.DAY,
                    limit_price=limit,
                    strategy_id=self.strategy_id,
                    ts_ns=ts,
                    decision_wall_ns=now,
                )
            )
        return orders


def make_strategy(cfg: StrategyConfig, n_symbols: int, bars_per_year: float = 252.0) -> TrendStrategy:
    return TrendStrategy(cfg, n_symbols, bars_per_year)
