"""Backtest: the live loop's step, driven in-process by a replay clock.

Same strategy, risk gate, execution service, venue and ledger as the live loop, without actors, so a
backtest and a live run of the same configuration produce the same orders and fills.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa

from tradesys.backtest.metrics import RunSummary, summarize
from tradesys.config import DataError, TradesysConfig
from tradesys.core.schemas import batch_ts
from tradesys.engine.step import StepResult, TradingComponents, run_step
from tradesys.execution.service import ExecutionService
from tradesys.ledger.base import AuditEntry
from tradesys.ledger.book import BookKeeper
from tradesys.risk.pretrade import PreTradeRisk
from tradesys.strategy import make_strategy


def run_backtest(
    cfg: TradesysConfig,
    ledger_url: str = "sqlite:///:memory:",
    on_step: Callable[[int, int, StepResult], None] | None = None,
) -> tuple[RunSummary, Any]:
    """Run the configured strategy over the configured data; return (summary, the ledger)."""
    from tradesys.broker.sim import SimBroker
    from tradesys.broker.venues import MultiVenueBroker
    from tradesys.data import bars_per_year, make_source
    from tradesys.ledger import open_ledger

    try:
        source = make_source(cfg.data)
    except Exception as exc:  # a data source's failure is a data setting's failure: name it, one line
        raise DataError(_data_error(cfg, exc)) from exc
    ledger = open_ledger(ledger_url)
    book = BookKeeper(ledger, cfg.initial_cash)
    gate = PreTradeRisk(cfg.risk)
    venue = MultiVenueBroker(cfg.broker) if cfg.broker.kind == "routed" else SimBroker(cfg.broker)
    venue.opening_cash = cfg.initial_cash  # the venue's account starts with the book's cash: reconciled too
    components = TradingComponents(
        strategy=make_strategy(
            cfg.strategy, len(source.symbols), bars_per_year(cfg.data), cfg.risk, cfg.execution
        ),
        risk=gate,
        execution=ExecutionService(venue, book, settings=cfg.execution),
    )
    latencies: list[int] = []
    total = len(source)
    last_ts = 0
    for i, bars in enumerate(_guarded(source.batches(), cfg)):
        ts = batch_ts(bars)
        result = run_step(bars, ts, components)
        latencies += result.latencies_ns
        last_ts = ts
        if on_step is not None:
            on_step(i + 1, total, result)
    book.audit([AuditEntry(last_ts, "shutdown", "backtest completed")])
    summary = summarize(
        ledger.equity_curve(), ledger.orders(), ledger.fills(), cfg.initial_cash, latencies, risk=risk_stats(gate)
    )
    return summary, ledger


def risk_stats(gate: PreTradeRisk) -> dict[str, Any]:
    """The gate's end-of-run section, in the shape of the live loop's `RiskActor.stats`."""
    return {
        "rejects_by_reason": dict(gate.rejects_by_reason),
        "kill_switch": gate.kill_switch_active,
        "metrics": dict(gate.metrics),
    }


def _data_error(cfg: TradesysConfig, exc: BaseException) -> str:
    """One line naming the data setting behind a source failure (the symbols, else the source)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    field = "data.symbols" if "symbol" in text else "data.source"
    return f"{field}: source {cfg.data.source} failed: {text}"


def _guarded(batches: Iterator[pa.RecordBatch], cfg: TradesysConfig) -> Iterator[pa.RecordBatch]:
    """The source's batches, with a failure inside the source (not in the trading step) named as a data error."""
    while True:
        try:
            bars = next(batches)
        except StopIteration:
            return
        except Exception as exc:
            raise DataError(_data_error(cfg, exc)) from exc
        yield bars
