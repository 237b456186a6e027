"""Strategies: turn bar batches and the current book into orders. The same objects run in backtest and live."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tradesys.config import StrategyConfig
from tradesys.strategy.base import Strategy
from tradesys.strategy.trend import TrendStrategy

if TYPE_CHECKING:
    from tradesys.strategy.model import ModelStrategy

__all__ = ["Strategy", "TrendStrategy", "make_strategy"]


def make_strategy(cfg: StrategyConfig, n_symbols: int, bars_per_year: float = 252.0) -> TrendStrategy | ModelStrategy:
    """The configured strategy; the backtest and the live loop's StrategyActor both build it here."""
    if cfg.name == "trend":
        return TrendStrategy(cfg, n_symbols, bars_per_year)
    if cfg.name == "model":
        from tradesys.strategy.model import ModelStrategy  # pandas and the model runtime load only when used

        return ModelStrategy.from_config(cfg, n_symbols, bars_per_year)
    raise ValueError(f"strategy.name: unknown strategy {cfg.name!r}")
