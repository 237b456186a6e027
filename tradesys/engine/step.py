"""One trading step, written once and driven two ways.

The backtester calls `run_step` with the strategy, risk gate and execution service as local objects; the
Supervisor actor calls it with thin synchronous proxies to the Strategy, Risk and Execution actors. Same
objects, same order of operations:

1. the venue matches resting orders against the new bars; the book is marked to the closes;
2. the strategy turns bars + book into orders;
3. pre-trade risk accepts or rejects each order (reasons recorded);
4. execution records all of them (write-ahead), sends the accepted ones and books the fills.
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


def run_step(bars: pa.RecordBatch | Any, ts_ns: int, c: TradingComponents) -> StepResult:
    """Run one step for the bar batch stamped `ts_ns` (`bars` may be a Ray ObjectRef in live mode)."""
    marked = c.execution.on_bars(bars)
    orders = c.strategy.on_bars(bars, marked.snapshot, marked.working)
    decision = c.risk.check(orders, marked.snapshot, ts_ns, marked.working)
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
    sent = c.execution.submit(
        decision.accepted, [(by_id[e.client_order_id], e) for e in decision.rejected], ts_ns, audit
    )
    result.snapshot = sent.snapshot
    result.orders = sent.orders
    result.rejected = sent.rejected
    result.fills += sent.fills
    result.latencies_ns += sent.latencies_ns
    return result
