"""The run summary table shows what a summary holds and never fails on a missing or empty risk section."""

from __future__ import annotations

import io
import math

import pytest
from rich.console import Console

from tradesys.live import summary_table

BASE = {
    "equity": 1_010_000.0, "total_return": 0.01, "sharpe": 0.5, "max_drawdown": -0.02, "steps": 10, "orders": 4,
    "fills": 4, "rejected": 0, "latency_p50_ms": 1.0, "latency_p99_ms": 2.0, "run_id": "r", "reason": "completed",
}


def _render(summary: dict) -> str:
    out = io.StringIO()
    Console(file=out, width=120).print(summary_table(summary))
    return out.getvalue()


@pytest.mark.parametrize(
    "risk",
    [
        None,
        {},
        {"metrics": {}},
        {"metrics": {"var": math.nan, "var_pct": math.nan, "gross_leverage": 0.5, "net_leverage": 0.1}},
        {"metrics": {"var": None, "var_pct": None}},  # a summary read back from strict JSON (NaN -> null)
        {"rejects_by_reason": {"max_order_qty": 3}, "kill_switch": False, "metrics": {"gross_leverage": 0.2}},
    ],
)
def test_table_renders_without_a_filled_var_window(risk: dict | None) -> None:
    text = _render({**BASE, **({"risk": risk} if risk is not None else {})})
    assert "1,010,000.00" in text
    assert "VaR" not in text


def test_table_shows_var_leverage_and_rejects_when_present() -> None:
    risk = {
        "rejects_by_reason": {"max_order_qty": 3, "price_collar": 1},
        "metrics": {"var": 12_345.6, "var_pct": 0.0123, "gross_leverage": 0.75, "net_leverage": 0.25},
    }
    text = _render({**BASE, "risk": risk})
    assert "12,345.60 (1.23%)" in text
    assert "0.75 / 0.25" in text
    assert "max_order_qty 3, price_collar 1" in text
