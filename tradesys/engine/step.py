"""One trading step, written once and driven three ways.

The step is four named stages, `mark`, `decide`, `check` and `record`, and `run_step` composes them. The backtester
calls `run_step` with the strategy, risk gate and execution service as local objects; the Supervisor calls it with
thin synchronous proxies to the Strategy, Risk and Execution actors (`ray.compiled_graph = false`); in a Ray
Compiled Graph (`tradesys.actors.graph`) each actor's graph method calls its own stage with itself as the
component. Same stages, same order of operations:

1. `mark`: the venue matches resting orders against the new bars; the book is marked to the closes;
2. `decide`: the strategy turns bars + book into orders;
3. `check`: pre-trade risk accepts or rejects each order (reasons recorded);
4. `record`: execution records all of them (write-ahead), sends the accepted ones and books the fills.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa

from tradesys.core.orders import Order, OrderEvent
from tradesys.core.portfolio import PortfolioSnapshot
from tradesys.execution.service import StepReport
from tradesys.ledger.base import AuditEntry
from tradesys.risk.pretrade import RiskDecision


class _Strategy(Protocol):
    def on_bars(self, bars: Any, book: PortfolioSnapshot, working: Mapping[str, float]) -> list[Order]: ...


class _Risk(Protocol):
    def check(
        self, orders: Sequence[Order], book: PortfolioSnapshot, now_ns: int, working: Mapping[str, float] | None
    ) -> RiskDecision: ...


class _Execution(Protocol):
    def on_bars(self, bars: Any) -> StepReport: ...

    def submit(
        self,
        accepted: Sequence[Order],
        rejected: Sequence[tuple[Order, OrderEvent]] = (),
        ts_ns: int = 0,
        audit: Sequence[AuditEntry] = (),
    ) -> StepReport: ...


@dataclass(slots=True)
class TradingComponents:
    strategy: _Strategy
    risk: _Risk
    execution: _Execution


@dataclass(slots=True)
class StepResult:
    ts_ns: int
    snapshot: PortfolioSnapshot
    orders: int = 0
    rejected: int = 0
    fills: int = 0
    latencies_ns: list[int] = field(default_factory=list)
    kill_switch_tripped: bool = False


def mark(execution: _Execution, bars: pa.RecordBatch | Any) -> StepReport:
    """Stage 1: match resting orders against the bars, then mark the book to the closes."""
    return execution.on_bars(bars)


def decide(strategy: _Strategy, bars: pa.RecordBatch | Any, marked: StepReport) -> list[Order]:
    """Stage 2: the strategy's orders for these bars, given the book as marked and the working quantity."""
    return strategy.on_bars(bars, marked.snapshot, marked.working)


def check(risk: _Risk, orders: Sequence[Order], marked: StepReport, ts_ns: int) -> RiskDecision:
    """Stage 3: pre-trade risk (run even with no orders: it tracks the book's risk and the kill switch)."""
    return risk.check(orders, marked.snapshot, ts_ns, marked.working)


def record(
    execution: _Execution, orders: Sequence[Order], decision: RiskDecision, marked: StepReport, ts_ns: int
) -> StepResult:
    """Stage 4: write every order ahead, send the accepted ones, book the fills; the step's result."""
    result = StepResult(ts_ns, marked.snapshot, fills=marked.fills, kill_switch_tripped=decision.kill_switch_tripped,
                        latencies_ns=list(marked.latencies_ns))  # children of parent orders sliced on this bar
    if not orders:
        return result
    by_id = {o.client_order_id: o for o in orders}
    audit = []
    if decision.kill_switch_tripped:
        audit.append(
            AuditEntry(
                ts_ns,
                "kill_switch",
                "daily loss limit breached: new orders are refused for the rest of the day",
                payload={"equity": marked.snapshot.equity, "day_start_equity": marked.snapshot.day_start_equity},
            )
        )
    sent = execution.submit(
        decision.accepted, [(by_id[e.client_order_id], e) for e in decision.rejected], ts_ns, audit
    )
    result.snapshot = sent.snapshot
    result.orders = sent.orders
    result.rejected = sent.rejected
    result.fills += sent.fills
    result.latencies_ns += sent.latencies_ns
    return result


def run_step(bars: pa.RecordBatch | Any, ts_ns: int, c: TradingComponents) -> StepResult:
    """Run one step for the bar batch stamped `ts_ns` (`bars` may be a Ray ObjectRef in live mode)."""
    marked = mark(c.execution, bars)
    orders = decide(c.strategy, bars, marked)
    decision = check(c.risk, orders, marked, ts_ns)
    return record(c.execution, orders, decision, marked, ts_ns)
