"""Backtest: the live loop's step, driven in-process by a replay clock.

Same strategy, risk gate, execution service, venue and ledger as the live loop, without actors, so a
backtest and a live run of the same configuration produce the same orders and fills.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tradesys.backtest.metrics import RunSummary, summarize
from tradesys.config import TradesysConfig
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
    from tradesys.data import bars_per_year, make_source
    from tradesys.ledger import open_ledger

    source = make_source(cfg.data)
    ledger = open_ledger(ledger_url)
    book = BookKeeper(ledger, cfg.initial_cash)
    components = TradingComponents(
        strategy=make_strategy(cfg.strategy, len(source.symbols), bars_per_year(cfg.data)),
        risk=PreTradeRisk(cfg.risk),
        execution=ExecutionService(SimBroker(cfg.broker), book),
    )
    latencies: list[int] = []
    total = len(source)
    last_ts = 0
    for i, bars in enumerate(source.batches()):
        ts = batch_ts(bars)
        result = run_step(bars, ts, components)
        latencies += result.latencies_ns
        last_ts = ts
        if on_step is not None:
            on_step(i + 1, total, result)
    book.audit([AuditEntry(last_ts, "shutdown", "backtest completed")])
    summary = summarize(ledger.equity_curve(), ledger.orders(), ledger.fills(), cfg.initial_cash, latencies)
    return summary, ledger
