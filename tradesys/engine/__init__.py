"""The trading step: one code path for backtest and live."""

from tradesys.engine.step import StepResult, TradingComponents, run_step

__all__ = ["StepResult", "TradingComponents", "run_step"]
