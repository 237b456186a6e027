"""The live loop end to end: accounting invariants, one code path with the backtest, crash recovery, shutdown.

Live runs use a real local Ray (the session fixture) and real actors; the ledger is SQLite in tmp_path.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tradesys.backtest.runner import run_backtest
from tradesys.config import TradesysConfig, load_config
from tradesys.data import make_source
from tradesys.ledger import open_ledger
from tradesys.live import run_live

from .ledger_checks import assert_ledger_consistent, closes_by_ts, trade_record

# A window with trend changes in both directions, short enough for a test.
SHORT = {"data.start": "2019-06-01", "data.end": "2020-09-30", "strategy.slow": 60}


def sent_to_venue(ledger: object) -> set[str]:
    """Orders that passed pre-trade risk (and so went to the venue), per the ledger."""
    risk_rejected = {a["client_order_id"] for a in ledger.audit_log(kind="risk_reject")}  # type: ignore[attr-defined]
    return {o["client_order_id"] for o in ledger.orders()} - risk_rejected  # type: ignore[attr-defined]


def cfg_with(**extra: object) -> TradesysConfig:
    return load_config(overrides={**SHORT, **extra})


# both ways the Supervisor drives the step: a Ray Compiled Graph (the default) and ordinary actor calls
MODES = [pytest.param(True, id="graph"), pytest.param(False, id="calls")]


def test_demo_length_backtest_keeps_the_books() -> None:
    """The demo's default configuration, run in-process: every invariant at every step."""
    cfg = load_config()
    summary, ledger = run_backtest(cfg)
    assert summary.steps == len(make_source(cfg.data))
    assert summary.orders > 50 and summary.fills > 50
    assert_ledger_consistent(ledger, cfg.initial_cash, closes_by_ts(make_source(cfg.data)))


def test_risk_rejections_are_recorded_with_reasons() -> None:
    # a VaR limit: the strategy sizes within the order and position limits, not within the book's VaR
    cfg = cfg_with(**{"risk.var_limit_pct": 0.01, "risk.daily_loss_limit_pct": 0.5})
    summary, ledger = run_backtest(cfg)
    rejected = ledger.orders(status="rejected")
    assert summary.rejected == len(rejected) > 0
    assert {o["reason"] for o in rejected} == {"var_limit"}
    audit = ledger.audit_log(kind="risk_reject")
    assert {a["client_order_id"] for a in audit} == {o["client_order_id"] for o in rejected}
    assert_ledger_consistent(ledger, cfg.initial_cash)


@pytest.mark.ray
@pytest.mark.parametrize("graph", MODES)
def test_live_loop_on_actors_matches_backtest(ray_session: None, tmp_path: Path, graph: bool) -> None:
    """One code path: actors driven by the Supervisor trade exactly as the in-process backtest does."""
    cfg = cfg_with(**{"ledger.url": f"sqlite:///{tmp_path}/live.db", "ray.compiled_graph": graph})
    summary = run_live(cfg, show_progress=False, run_id=f"t-live-{graph}")
    assert summary["loop_mode"] == ("compiled_graph" if graph else "actor_calls")
    live = open_ledger(f"sqlite:///{tmp_path}/live.db")
    _, bt = run_backtest(cfg)
    assert summary["reason"] == "completed"
    assert summary["steps"] == len(make_source(cfg.data))
    assert trade_record(live) == trade_record(bt)
    assert summary["orders"] == len(live.orders()) and summary["fills"] == len(live.fills())
    assert summary["latency_p50_ms"] > 0 and summary["latency_p99_ms"] >= summary["latency_p50_ms"]
    assert_ledger_consistent(live, cfg.initial_cash, closes_by_ts(make_source(cfg.data)))
    kinds = [a["kind"] for a in live.audit_log()]
    assert kinds[0] == "start" and kinds[-1] == "shutdown"


@pytest.mark.ray
@pytest.mark.parametrize("graph", MODES)
def test_execution_crash_after_venue_accepts_is_recovered(ray_session: None, tmp_path: Path, graph: bool) -> None:
    """The Execution actor dies right after the venue took an order: restarted, reconciled, nothing sent twice."""
    cfg = cfg_with(**{"ledger.url": f"sqlite:///{tmp_path}/crash.db", "ray.compiled_graph": graph})
    marker = tmp_path / "crashed"
    summary = run_live(
        cfg, show_progress=False, run_id=f"t-crash-{graph}", crash_execution_at_submit=5, crash_marker=str(marker)
    )
    assert marker.exists(), "the fault was not injected"
    assert summary["restarts"] >= 1
    crashed = open_ledger(f"sqlite:///{tmp_path}/crash.db")
    _, bt = run_backtest(cfg)
    assert trade_record(crashed) == trade_record(bt)
    assert summary["broker"]["orders_seen"] == len(sent_to_venue(crashed))  # each order reached the venue once
    assert any(a["kind"] == "reconcile" for a in crashed.audit_log())
    assert any(a["kind"] == "restart" for a in crashed.audit_log())
    assert_ledger_consistent(crashed, cfg.initial_cash, closes_by_ts(make_source(cfg.data)))


def _booked_steps(db: Path) -> int:
    """Equity rows the running job has booked; 0 while its ledger file is still being created and migrated."""
    import sqlite3

    if not db.exists():
        return 0
    try:
        return len(open_ledger(f"sqlite:///{db}").equity_curve())
    except sqlite3.OperationalError:  # the file exists before the job's migrations have created the tables
        return 0


@pytest.mark.slow
def test_sigterm_stops_the_driver_cleanly(tmp_path: Path) -> None:
    """SIGTERM (what `ray job stop` sends) to a running jobs/live.py: exit 0, shutdown recorded, books exact."""
    import json
    import os
    import signal
    import subprocess
    import sys

    db = tmp_path / "term.db"
    out = tmp_path / "summary.json"
    cmd = [
        sys.executable, str(Path(__file__).resolve().parents[1] / "jobs" / "live.py"), "--quiet",
        "--set", f'ledger.url="sqlite:///{db}"', "--set", "data.speed=40", "--set", "ray.include_dashboard=false",
        "--set", "ray.num_cpus=2", "--out", str(out),
        *[f"--set={k}={v}" for k, v in SHORT.items()],
    ]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # wait until the loop has booked some steps
            if _booked_steps(db) > 20:
                break
            time.sleep(0.5)
        else:
            raise AssertionError("the live loop did not start")
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output[-2000:]
    summary = json.loads(out.read_text())
    assert summary["reason"] == "signal SIGTERM"
    cfg = cfg_with()
    assert 0 < summary["steps"] < len(make_source(cfg.data))
    ledger = open_ledger(f"sqlite:///{db}")
    assert ledger.audit_log(kind="shutdown")[-1]["message"] == "signal SIGTERM"
    assert_ledger_consistent(ledger, cfg.initial_cash, closes_by_ts(make_source(cfg.data)))
