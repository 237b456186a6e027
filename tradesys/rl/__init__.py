"""Reinforcement learning: the portfolio environment (pure numpy, gymnasium API) and its market arrays.

`tradesys.rl.market` turns any `tradesys.data` source (or the offline feature store) into dense bars x assets
arrays and a causal feature tensor; `tradesys.rl.env` steps portfolio episodes over them with the backtest's own
cost and sizing rules (`tradesys.backtest.costs`), one at a time (`PortfolioEnv`) or many per numpy call
(`VectorPortfolioEnv`). See docs/rl.md.
"""

from tradesys.rl.env import PortfolioEnv, RLEnvConfig, VectorPortfolioEnv
from tradesys.rl.market import MarketData, market_from_source, market_from_store

__all__ = ["MarketData", "PortfolioEnv", "RLEnvConfig", "VectorPortfolioEnv", "market_from_source",
           "market_from_store"]
