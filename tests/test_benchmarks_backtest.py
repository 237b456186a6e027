"""The backtest benchmark's harness: its quick run works as typed, the engines it compares open the same
positions, and the rule that counts positions for every engine (benchmarks/backtest_peers.py) counts right."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from backtest_peers import positions_opened  # noqa: E402


def test_positions_opened_counts_entries_and_reversals() -> None:
    assert positions_opened([("A", 10), ("A", -20), ("A", 10), ("A", 5)]) == 3  # open, reverse, flat, open
    assert positions_opened([("A", 5), ("A", 5)]) == 1  # partial fills of one entry
    assert positions_opened([("A", 5), ("B", -5), ("A", -5), ("B", 5)]) == 2


def test_quick_engine_comparison_opens_the_same_positions() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "backtest_engines.py"), "--quick", "--datasets",
                        "sp500", "--engines", "event,vectorized"], capture_output=True, text=True, timeout=300,
                       cwd=ROOT)  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "positions opened: all 4 rows equal" in r.stdout
