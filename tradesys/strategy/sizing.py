"""Sizing and order construction shared by the strategies, so every strategy trades the same way on a weight.

`vol_target_weight`: weight = direction * min(max_weight, target_vol / (sigma * sqrt(N))), with sigma the
annualised volatility of the symbol and N the number of symbols, so N uncorrelated positions run near
`target_vol` in total; 0 when sigma is not positive, or when short and `allow_short` is off.

`rebalance_order`: the target quantity is weight * equity / price in whole shares (rounded toward zero); the
strategy trades only when the book (position plus working orders) is off target by more than `rebalance_band` of
the target, or must exit. The client order id is deterministic in (strategy, bar time, symbol).

Limits (`RiskConfig`, when given): a strategy sizes within the limits the pre-trade gate enforces, so the gate
only catches real breaches instead of refusing most orders. The target is clipped to `max_position_notional`
(whole shares at the bar's price), and the order is *clipped* (not split) to `max_order_qty` and to
`max_order_notional` at the price the gate values it at (the limit price when above the mark): the rest of the
move follows on later bars, one clipped order per bar, so the id rule stays one order per (bar, symbol).
`scale_to_leverage` scales a bar's weights down so their gross and net sums stay within the leverage limits.

Execution (`ExecutionConfig`, when given with an `algo`): an order of at least `algo_min_qty` shares and
`algo_min_notional` (at the decision price) is tagged with the algorithm, its parameters and the window
(`horizon_bars`, carried in `algo_params`), and the execution service works it as a parent order
(tradesys.execution.parents); a smaller order is sent as is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from tradesys.config import ExecutionConfig, RiskConfig, StrategyConfig
from tradesys.core.orders import Order, OrderType, Side, TimeInForce
from tradesys.core.portfolio import PortfolioSnapshot
from tradesys.execution.parents import HORIZON_KEY


def vol_target_weight(direction: float, sigma: float, cfg: StrategyConfig, n_symbols: int) -> float:
    """The target weight for a direction in {-1, 0, 1} and an annualised volatility `sigma` (see module doc)."""
    if not (sigma > 0):
        return 0.0
    if direction < 0 and not cfg.allow_short:
        return 0.0
    return direction * min(cfg.max_weight, cfg.target_vol / (sigma * math.sqrt(n_symbols)))


def scale_to_leverage(weights: Mapping[str, float], limits: RiskConfig | None) -> dict[str, float]:
    """Weights scaled by one common factor so sum|w| <= max_gross_leverage and |sum w| <= max_net_leverage.

    A 2% margin keeps the book inside the limits as prices move between rebalances. NaN weights stay NaN.
    """
    out = dict(weights)
    if limits is None:
        return out
    finite = [w for w in out.values() if w == w]
    factor = 1.0
    gross, net = sum(abs(w) for w in finite), abs(sum(finite))
    if limits.max_gross_leverage is not None and gross > 0.98 * limits.max_gross_leverage:
        factor = min(factor, 0.98 * limits.max_gross_leverage / gross)
    if limits.max_net_leverage is not None and net > 0.98 * limits.max_net_leverage:
        factor = min(factor, 0.98 * limits.max_net_leverage / net)
    if factor < 1.0:
        out = {s: w * factor for s, w in out.items()}
    return out


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
    limits: RiskConfig | None = None,
    execution: ExecutionConfig | None = None,
) -> Order | None:
    """The order that moves `symbol` to `weight` of equity at price `px`, or None when within the band.

    With `limits`, the target and the order are clipped to them; with `execution`, a large enough order names the
    execution algorithm that works it (module docstring)."""
    size = abs(weight) * book.equity / px
    if limits is not None:
        size = min(size, limits.max_position_notional / px)
    target = math.floor(size) * (1 if weight >= 0 else -1)
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
    qty = float(abs(diff))
    if limits is not None:
        ref = max(limit or px, px)
        qty = min(qty, math.floor(limits.max_order_qty), math.floor(limits.max_order_notional / ref * (1 - 1e-12)))
        if qty <= 0:
            return None
    algo, params = algo_for(execution, qty, px)
    return Order(
        client_order_id=f"{strategy_id}-{ts}-{symbol}",
        symbol=symbol,
        side=side,
        qty=qty,
        type=otype,
        tif=TimeInForce.DAY,
        limit_price=limit,
        strategy_id=strategy_id,
        ts_ns=ts,
        decision_wall_ns=decision_wall_ns,
        algo=algo,
        algo_params=params,
    )


def algo_for(
    execution: ExecutionConfig | None, qty: float, px: float
) -> tuple[str, tuple[tuple[str, float | int | str | bool], ...]]:
    """(algo, algo_params) for an order of `qty` at `px`: ("", ()) when no algorithm is configured or the order is
    below the thresholds. The params are sorted pairs plus the window (`horizon_bars`), so the order stays hashable
    and equal orders compare equal."""
    if execution is None or not execution.algo:
        return "", ()
    if qty < execution.algo_min_qty or qty * px < execution.algo_min_notional:
        return "", ()
    params = {**execution.algo_params, HORIZON_KEY: execution.horizon_bars}
    return execution.algo, tuple(sorted(params.items()))
