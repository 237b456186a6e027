"""Sizing and order construction shared by the strategies, so every strategy trades the same way on a weight.

`vol_target_weight`: weight = direction * min(max_weight, target_vol / (sigma * sqrt(N))), with sigma the
annualised volatility of the symbol and N the number of symbols, so N uncorrelated positions run near
`target_vol` in total; 0 when sigma is not positive, or when short and `allow_short` is off.

`rebalance_order`: the target quantity is weight * equity / price in whole shares (rounded toward zero); the
strategy trades only when the book (position plus working orders) is off target by more than `rebalance_band` of
the target, or must exit. The client order id is deterministic in (strategy, bar time, symbol).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from tradesys.config import StrategyConfig
from tradesys.core.orders import Order, OrderType, Side, TimeInForce
from tradesys.core.portfolio import PortfolioSnapshot


def vol_target_weight(direction: float, sigma: float, cfg: StrategyConfig, n_symbols: int) -> float:
    """The target weight for a direction in {-1, 0, 1} and an annualised volatility `sigma` (see module doc)."""
    if not (sigma > 0):
        return 0.0
    if direction < 0 and not cfg.allow_short:
        return 0.0
    return direction * min(cfg.max_weight, cfg.target_vol / (sigma * math.sqrt(n_symbols)))


def rebalance_order(
    cfg: StrategyConfig,
    strategy_id: str,
    ts: int,
    symbol: str,
    px: float,
    weight: float,
    book: PortfolioSnapshot,
    working: Mapping[str, float],
    decision_wall_ns: int,
) -> Order | None:
    """The order that moves `symbol` to `weight` of equity at price `px`, or None when within the band."""
    target = math.floor(abs(weight) * book.equity / px) * (1 if weight >= 0 else -1)
    have = book.qty(symbol) + working.get(symbol, 0.0)
    diff = target - have
    if diff == 0:
        return None
    if target != 0 and abs(diff) < cfg.rebalance_band * abs(target):
        return None
    side = Side.BUY if diff > 0 else Side.SELL
    limit = None
    otype = OrderType.MARKET
    if cfg.order_type == "limit":
        otype = OrderType.LIMIT
        off = cfg.limit_offset_bps / 1e4
        limit = round(px * (1 + off) if side is Side.BUY else px * (1 - off), 2)
    return Order(
        client_order_id=f"{strategy_id}-{ts}-{symbol}",
        symbol=symbol,
        side=side,
        qty=float(abs(diff)),
        type=otype,
        tif=TimeInForce.DAY,
        limit_price=limit,
        strategy_id=strategy_id,
        ts_ns=ts,
        decision_wall_ns=decision_wall_ns,
    )
