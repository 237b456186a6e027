"""Market data: bar sources (real packaged daily data, synthetic intraday data) and wall-clock replay.

`make_source(cfg.data)` is the one entry point the backtester and the live loop use; everything it returns
satisfies `DataSource` and yields one Arrow batch in `BAR_SCHEMA` per timestamp.
"""

from __future__ import annotations

from tradesys.config import DataConfig
from tradesys.data.check import available_symbols, check_data
from tradesys.data.historical import (
    Sp500StocksSource,
    TableSource,
    UsIndicesSource,
    bars_from_closes,
    bars_table,
)
from tradesys.data.replay import Replay, ReplayCursor, batch_ts
from tradesys.data.source import DataSource
from tradesys.data.synthetic import DEFAULT_SYMBOLS, SyntheticIntradaySource, SyntheticParams

__all__ = [
    "DataSource",
    "Replay",
    "ReplayCursor",
    "Sp500StocksSource",
    "SyntheticIntradaySource",
    "SyntheticParams",
    "TableSource",
    "UsIndicesSource",
    "available_symbols",
    "bars_from_closes",
    "bars_per_year",
    "bars_table",
    "batch_ts",
    "check_data",
    "make_source",
]


def bars_per_year(cfg: DataConfig) -> float:
    """Bars in a trading year for the configured source: 252 daily bars, or intraday bars per 6.5-hour session."""
    if cfg.source == "synthetic":
        return 252.0 * 6.5 * 3600 / cfg.synthetic_bar_seconds
    if cfg.source == "alpaca":
        return 252.0 * 6.5 * 60  # live one-minute bars
    return 252.0


def make_source(cfg: DataConfig) -> DataSource:
    """The configured source, with its symbols and start/end window (and, for synthetic data, the seed).

    For synthetic data `start` is the first session date and `end` can only truncate the
    `synthetic_days` sessions; with no symbols configured it uses `DEFAULT_SYMBOLS`.
    """
    if cfg.source == "us_indices":
        return UsIndicesSource(symbols=cfg.symbols, start=cfg.start, end=cfg.end)
    if cfg.source == "sp500_stocks":
        return Sp500StocksSource(symbols=cfg.symbols, start=cfg.start, end=cfg.end)
    if cfg.source == "synthetic":
        return SyntheticIntradaySource(
            symbols=cfg.symbols or DEFAULT_SYMBOLS,
            days=cfg.synthetic_days,
            bar_seconds=cfg.synthetic_bar_seconds,
            seed=cfg.seed,
            start=cfg.start,
            end=cfg.end,
        )
    if cfg.source == "alpaca":
        import os

        from tradesys.data.source import AlpacaLiveSource

        return AlpacaLiveSource(
            symbols=list(cfg.symbols or []),
            feed=cfg.alpaca_feed,
            stream_url=cfg.alpaca_stream_url or os.environ.get("APCA_DATA_STREAM_URL") or None,
            idle_timeout_s=cfg.idle_timeout_s,
        )
    raise ValueError(f"data.source: unknown source {cfg.source!r}")
