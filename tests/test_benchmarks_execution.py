"""The execution benchmark's quick run works as typed, and what it measures obeys the impact model: a market order
that fills at once pays exactly the half spread plus the square-root temporary impact, bigger parents cost more
per share, and splitting a parent costs less than sending it at once. The Alpaca benchmark's quick run
checks its own books and reconciliations and reports every case against the SDK peer."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[dict]]:
    out = tmp_path_factory.mktemp("bench") / "runs.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "execution_algos.py"), "--quick", "--json",
                        str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT)  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r.stdout, json.loads(out.read_text())


def test_quick_run_prints_both_tables_for_every_algorithm(quick: tuple[str, list[dict]]) -> None:
    text, runs = quick
    assert "Implementation shortfall: median" in text and "Its execution cost" in text
    for name in ("market", "twap", "vwap", "pov", "is"):
        assert sum(line.startswith(name) for line in text.splitlines()) == 2, name
    assert len(runs) == 15 and {r["size"] for r in runs} == {0.01, 0.05, 0.2}


def test_a_market_order_that_fills_at_once_pays_spread_plus_sqrt_impact(quick: tuple[str, list[dict]]) -> None:
    """1% of ADV fits in the decision bar's volume: one fill at the ask (bid) times 1 + (-) eta sigma sqrt(q/ADV)."""
    _, runs = quick
    r = next(r for r in runs if r["algo"] == "market" and r["size"] == 0.01)
    assert r["children"] == 1 and r["filled"] == 1.0
    temp = 0.142 * r["sigma_daily"] * math.sqrt(r["qty"] / r["adv"])
    hs = r["half_spread"]
    touch = 1 + hs if r["side"] == "buy" else 1 - hs  # the ask (bid) over the mid
    assert r["cost_bps"] == pytest.approx(1e4 * (hs + touch * temp), rel=1e-9)


def test_bigger_parents_cost_more_and_splitting_costs_less(quick: tuple[str, list[dict]]) -> None:
    _, runs = quick
    cost = {(r["algo"], r["size"]): r["cost_bps"] for r in runs}
    for name in ("market", "twap", "vwap", "pov", "is"):
        assert cost[name, 0.2] > cost[name, 0.01], name
    for size in (0.01, 0.05, 0.2):
        assert cost["twap", size] < cost["market", size], size


# ------------------------------------------------------------------ benchmarks/execution_alpaca.py


@pytest.fixture(scope="module")
def alpaca_quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    out = tmp_path_factory.mktemp("bench") / "alpaca.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "execution_alpaca.py"), "--quick", "--json",
                        str(out)], capture_output=True, text=True, timeout=180, cwd=ROOT)  # fmt: skip
    # the script exits non-zero when the adapter's books are off (an order not accepted or filled once, an
    # unknown update) or a reconciliation finds anything
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r.stdout, json.loads(out.read_text())


def test_alpaca_quick_run_reports_every_case_against_the_sdk(alpaca_quick: tuple[str, dict]) -> None:
    text, res = alpaca_quick
    assert "`tradesys paper-server` in a child process" in text
    assert "adapter books checked" in text and "every reconciliation found nothing" in text
    rate = res["orders_per_s"]
    assert set(rate) == {"requests", "sdk", "adapter", "no-stream"} and all(v > 0 for v in rate.values())
    assert res["ratio_adapter_sdk"] == pytest.approx(rate["adapter"] / rate["sdk"])
    for who in ("sdk", "adapter"):
        assert 0 < res["latency_ms"][who]["p50"] <= res["latency_ms"][who]["p99"]


def test_alpaca_reconciliation_lists_past_one_page_in_a_few_requests(alpaca_quick: tuple[str, dict]) -> None:
    """1,200 open orders are more than one 500-order page: the script exits unless the adapter lists them all;
    three paged GETs cost a fraction of 1,200 per-order GETs on the same server."""
    _, res = alpaca_quick
    rec = res["reconcile"]
    assert rec["open_orders"] == 1_200
    assert rec["reads_s"] < rec["per_order_reads_s"] / 4
