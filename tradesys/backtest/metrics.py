"""Performance summary computed from the ledger's equity curve and order tables (not from memory)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class RunSummary:
    start_equity: float
    equity: float
    total_return: float
    sharpe: float
    max_drawdown: float
    steps: int
    orders: int
    fills: int
    rejected: int
    latency_p50_ms: float
    latency_p99_ms: float
    restarts: int = 0
    # the pre-trade gate's view at the end: rejects_by_reason, kill_switch, metrics (last VaR, leverage); the
    # live loop's summary has the same section (RiskActor.stats), so one summary table shows both
    risk: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def per_step_equity(curve: Sequence[dict[str, Any]]) -> np.ndarray:
    """Last equity per timestamp, in time order (the ledger may hold several rows per step)."""
    last: dict[int, float] = {}
    for row in curve:
        last[int(row["ts_ns"])] = float(row["equity"])
    return np.array([last[k] for k in sorted(last)], dtype=float)


def sharpe_ratio(equity: np.ndarray, periods_per_year: float) -> float:
    """Annualised Sharpe of simple per-period returns (zero risk-free rate); NaN when undefined."""
    if len(equity) < 3:
        return float("nan")
    rets = np.diff(equity) / equity[:-1]
    sd = rets.std(ddof=1)
    return float(rets.mean() / sd * math.sqrt(periods_per_year)) if sd > 0 else float("nan")


def max_drawdown(equity: np.ndarray) -> float:
    """Largest peak-to-trough fall as a positive fraction of the peak."""
    if len(equity) == 0:
        return 0.0
    peaks = np.maximum.accumulate(equity)
    return float(np.max((peaks - equity) / peaks))


def periods_per_year(ts_ns: Sequence[int]) -> float:
    """252 for daily bars; scaled by bar spacing for intraday bars (6.5-hour sessions)."""
    if len(ts_ns) < 2:
        return 252.0
    step = float(np.median(np.diff(np.asarray(sorted(ts_ns), dtype=np.int64)))) / 1e9
    if step >= 20 * 3600:
        return 252.0 * 86_400 / max(step, 86_400)
    return 252.0 * 6.5 * 3600 / step


def summarize(
    curve: Sequence[dict[str, Any]],
    orders: Sequence[dict[str, Any]],
    fills: Sequence[dict[str, Any]],
    initial_cash: float,
    latencies_ns: Sequence[int],
    restarts: int = 0,
    risk: dict[str, Any] | None = None,
) -> RunSummary:
    eq = per_step_equity(curve)
    ts = sorted({int(r["ts_ns"]) for r in curve})
    final = float(eq[-1]) if len(eq) else initial_cash
    lat = np.asarray(latencies_ns, dtype=float) / 1e6
    return RunSummary(
        start_equity=initial_cash,
        equity=final,
        total_return=final / initial_cash - 1.0,
        sharpe=sharpe_ratio(np.concatenate([[initial_cash], eq]), periods_per_year(ts)),
        max_drawdown=max_drawdown(np.concatenate([[initial_cash], eq])),
        steps=len(eq),
        orders=len(orders),
        fills=len(fills),
        rejected=sum(1 for o in orders if o["status"] == "rejected"),
        latency_p50_ms=float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        latency_p99_ms=float(np.percentile(lat, 99)) if len(lat) else float("nan"),
        restarts=restarts,
        risk=dict(risk or {}),
    )
