"""Strategies: turn bar batches and the current book into orders. The same objects run in backtest and live."""

from tradesys.strategy.base import Strategy
from tradesys.strategy.trend import TrendStrategy, make_strategy

__all__ = ["Strategy", "TrendStrategy", "make_strategy"]
