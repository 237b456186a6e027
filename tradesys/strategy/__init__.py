"""Strategies: turn bar batches and the current book into orders. The same objects run in backtest and live."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tradesys.config import ExecutionConfig, RiskConfig, StrategyConfig
from tradesys.strategy.base import Strategy
from tradesys.strategy.trend import TrendStrategy
from tradesys.strategy.weights import TargetWeightsStrategy

if TYPE_CHECKING:
    from tradesys.strategy.model import ModelStrategy
    from tradesys.strategy.rl import RLStrategy

__all__ = ["Strategy", "TargetWeightsStrategy", "TrendStrategy", "make_strategy"]


def make_strategy(
    cfg: StrategyConfig,
    n_symbols: int,
    bars_per_year: float = 252.0,
    limits: RiskConfig | None = None,
    execution: ExecutionConfig | None = None,
    champion_version: int | None = None,
) -> TrendStrategy | ModelStrategy | TargetWeightsStrategy | RLStrategy:
    """The configured strategy; the backtest and the live loop's StrategyActor both build it here.

    `champion_version` (model strategy with ``registry_name``): the champion version a restarted run recorded last,
    so the bars it replays are scored by the same model (tradesys.strategy.champion).

    `limits` (the run's RiskConfig) makes the strategy size its orders within the pre-trade limits; without it
    orders are sized on the strategy's own rules only and the risk gate refuses what breaches. `execution` (the
    run's ExecutionConfig) tags large enough orders with its execution algorithm (tradesys.strategy.sizing).
    """
    strategy = _build(cfg, n_symbols, bars_per_year, limits, champion_version)
    if execution is not None and execution.algo:
        if not hasattr(type(strategy), "execution"):
            raise ValueError(f"execution.algo: strategy {cfg.name!r} does not size through rebalance_order")
        strategy.execution = execution
    return strategy


def _build(
    cfg: StrategyConfig, n_symbols: int, bars_per_year: float, limits: RiskConfig | None,
    champion_version: int | None = None,
) -> TrendStrategy | ModelStrategy | TargetWeightsStrategy | RLStrategy:
    if cfg.name == "trend":
        return TrendStrategy(cfg, n_symbols, bars_per_year, limits=limits)
    if cfg.name == "model":
        from tradesys.strategy.model import ModelStrategy  # pandas and the model runtime load only when used

        return ModelStrategy.from_config(cfg, n_symbols, bars_per_year, limits, champion_version)
    if cfg.name == "weights":
        return TargetWeightsStrategy.from_config(cfg, limits)
    if cfg.name == "rl":
        from tradesys.strategy.rl import RLStrategy  # torch / onnxruntime load only when used

        return RLStrategy.from_config(cfg, limits)
    raise ValueError(f"strategy.name: unknown strategy {cfg.name!r}")
