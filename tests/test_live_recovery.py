"""A restart or a resume changes nothing: the ledger of a disturbed live run equals the undisturbed run's.

Faults: a Supervisor stop then a resume on the same ledger, a driver killed -9 then a resume, and `ray.kill` of each
child actor mid-run (Ray restarts it). Each disturbed ledger is compared order by order and fill by fill (client
order ids, quantities, statuses, fill prices, fees, times) with one undisturbed run of the same configuration, the
in-process backtest (the live loop equals it: test_live_loop_on_actors_matches_backtest). The configuration is
small (3 synthetic symbols x 390 one-minute bars) but makes every piece of state matter: a short trend window, a
binding order-rate limit and VaR limit, and a participation cap that leaves limit orders resting and partly filled.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import ray

from tradesys.backtest.runner import run_backtest
from tradesys.config import TradesysConfig, load_config
from tradesys.data import make_source
from tradesys.ledger import open_ledger
from tradesys.live import run_live

from .ledger_checks import assert_ledger_consistent, closes_by_ts, trade_record

SMALL: dict[str, Any] = {
    "data.source": "synthetic", "data.symbols": ["ALPHA", "BRAVO", "CHARLIE"], "data.synthetic_days": 1,
    "strategy.fast": 5, "strategy.slow": 20, "strategy.vol_lookback": 10, "strategy.rebalance_band": 0.1,
    "strategy.order_type": "limit", "broker.participation_cap": 0.01,
    "risk.max_orders_per_window": 12, "risk.order_window_seconds": 1200,
    "risk.var_limit_pct": 0.00025, "risk.var_min_obs": 10,
    "ray.max_restarts": 3, "ray.include_dashboard": False,
}
FAULT_STEP = 150  # of 390


def small_cfg(url: str, **extra: Any) -> TradesysConfig:
    return load_config(overrides={**SMALL, "ledger.url": url, **extra})


@pytest.fixture(scope="module")
def baseline() -> tuple[list[tuple], list[tuple]]:
    """The undisturbed run's orders and fills (one per module)."""
    _, ledger = run_backtest(small_cfg("sqlite:///:memory:"))
    record = trade_record(ledger)
    reasons = {o["reason"] for o in ledger.orders(status="rejected")}
    assert {"order_rate", "var_limit"} <= reasons, "the limits must bind, or the windows are not tested"
    assert any(o["status"] == "expired" and 0 < o["filled_qty"] < o["qty"] for o in ledger.orders())
    return record


def _start(cfg: TradesysConfig, run_id: str) -> tuple[threading.Thread, dict[str, Any], Any]:
    """Run the live loop in a thread; return it, its summary slot and the Supervisor handle once it is up."""
    out: dict[str, Any] = {}
    t = threading.Thread(target=lambda: out.update(run_live(cfg, show_progress=False, run_id=run_id)))
    t.start()
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            return t, out, ray.get_actor(f"{run_id}:supervisor")
        except ValueError:
            time.sleep(0.05)
    raise AssertionError("the Supervisor did not start")


def _wait_step(sup: Any, step: int) -> None:
    deadline = time.time() + 300  # generous: a loaded 2-core machine runs a few steps per second
    while ray.get(sup.progress.remote())["step"] < step:
        assert time.time() < deadline, "the loop did not reach the fault step"
        time.sleep(0.02)


def _check(url: str, cfg: TradesysConfig, baseline: tuple[list[tuple], list[tuple]]) -> Any:
    ledger = open_ledger(url)
    orders, fills = trade_record(ledger)
    assert len(orders) == len(baseline[0]) and len(fills) == len(baseline[1])
    assert orders == baseline[0]
    assert fills == baseline[1]
    assert_ledger_consistent(ledger, cfg.initial_cash, closes_by_ts(make_source(cfg.data)))
    return ledger


@pytest.mark.ray
@pytest.mark.slow
def test_stop_then_resume_trades_as_undisturbed(ray_session: None, tmp_path: Path, baseline: Any) -> None:
    url = f"sqlite:///{tmp_path}/stop.db"
    cfg = small_cfg(url, **{"data.speed": 150.0})
    t, out, sup = _start(cfg, "rec-stop")
    _wait_step(sup, FAULT_STEP)
    sup.stop.remote("test stop")
    t.join(timeout=120)
    assert out["reason"] == "test stop" and FAULT_STEP <= out["steps"] < 390
    booked = open_ledger(url)
    assert booked.audit_log(kind="shutdown")[-1]["message"] == "test stop"
    assert_ledger_consistent(booked, cfg.initial_cash, closes_by_ts(make_source(cfg.data)))  # consistent at the stop
    last_ts = booked.account()["ts_ns"]
    n_booked = len({r["ts_ns"] for r in booked.equity_curve()})
    rest = run_live(small_cfg(url), show_progress=False, run_id="rec-resume")
    assert rest["reason"] == "completed" and rest["restarts"] == 0
    ledger = _check(url, cfg, baseline)
    resume = ledger.audit_log(kind="resume")
    assert len(resume) == 1
    assert resume[0]["payload"]["resume_ts"] == last_ts and resume[0]["payload"]["steps_booked"] == n_booked
    assert rest["strategy"]["warmed_bars"] == n_booked
    assert ledger.audit_log(kind="restart") == []
    assert [a["kind"] for a in ledger.audit_log(kind="start")] == ["start", "start"]


CHILDREN = ["strategy", "risk", "execution", "ledger", "broker", "market_data"]
# Each child killed in turn within one run per mode (one run, not one per child: suite time). Compiled-graph mode
# (the default): every child; the actor-call fallback: the two whose calls carry the step's decisions
# (test_live_loop also kills the ExecutionActor mid-submit in both modes).
KILLS = {True: CHILDREN, False: ["strategy", "execution"]}
FIRST_KILL, LAST_KILL = 60, 300  # of 390 steps: the kills are spread between, each after the previous restart


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("graph", [True, False], ids=["graph", "calls"])
def test_each_child_killed_in_turn_is_restarted_and_trades_as_undisturbed(
    ray_session: None, tmp_path: Path, baseline: Any, graph: bool
) -> None:
    """`ray.kill` of each child in turn, mid-run, in one run. In compiled-graph mode market_data, broker,
    execution, strategy and risk are the graph's actors (the graph is torn down, compiled again after the restart
    and the step run again); the ledger, and the broker's `submit`, sit behind the ExecutionActor's ordinary calls.
    Each restart is counted and audited once, in the order of the kills, and the ledger equals the undisturbed
    run's."""
    url = f"sqlite:///{tmp_path}/kill.db"
    cfg = small_cfg(url, **{"data.speed": 150.0, "ray.compiled_graph": graph})
    kills = KILLS[graph]
    t, out, sup = _start(cfg, f"rec-kill-{graph}")
    gap = (LAST_KILL - FIRST_KILL) // max(len(kills) - 1, 1)
    for i, child in enumerate(kills):
        _wait_step(sup, FIRST_KILL + i * gap)  # the previous kill's restart is done: the loop stepped past it
        ray.kill(ray.get(sup.children.remote())[child], no_restart=False)
    t.join(timeout=400)
    assert not t.is_alive()
    assert out["reason"] == "completed"
    assert out["restarts"] == len(kills)  # each counted once, whoever noticed it
    ledger = _check(url, cfg, baseline)
    restarts = ledger.audit_log(kind="restart")
    assert [a["payload"]["child"] for a in restarts] == kills
    sent = {o["client_order_id"] for o in ledger.orders()} - {
        a["client_order_id"] for a in ledger.audit_log(kind="risk_reject")
    }
    # the venue's counters continue across its restart: every order reached it once, every fill counted once
    assert out["broker"]["orders_seen"] == len(sent)
    assert out["broker"]["fills"] == len(ledger.fills())


_DRIVER = """
import sys, ray
from tradesys.config import load_config
from tradesys.live import run_live
ray.init(address=sys.argv[1], log_to_driver=False)
import json
run_live(load_config(overrides=json.loads(sys.argv[2])), show_progress=False, run_id="rec-k9")
"""


@pytest.mark.ray
@pytest.mark.slow
def test_driver_killed_9_then_resumed_trades_as_undisturbed(
    ray_session: None, tmp_path: Path, baseline: Any
) -> None:
    """kill -9 of the driver process mid-run (its Supervisor and children die with it), then a resume."""
    import json

    db = tmp_path / "k9.db"
    url = f"sqlite:///{db}"
    cfg = small_cfg(url, **{"data.speed": 100.0})
    overrides = {**SMALL, "ledger.url": url, "data.speed": 100.0}
    address = ray.get_runtime_context().gcs_address
    proc = subprocess.Popen([sys.executable, "-c", _DRIVER, address, json.dumps(overrides)],
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if len({r["ts_ns"] for r in open_ledger(url).equity_curve()}) >= FAULT_STEP:
                    break
            except Exception:  # the file exists before its tables do
                pass
            time.sleep(0.05)
        else:
            raise AssertionError("the driver's loop did not start")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.time() + 60
    while time.time() < deadline:  # the driver's actors die with it
        try:
            ray.get_actor("rec-k9:supervisor")
            time.sleep(0.2)
        except ValueError:
            break
    time.sleep(1.0)
    booked = len({r["ts_ns"] for r in open_ledger(url).equity_curve()})
    assert FAULT_STEP <= booked < 390
    rest = run_live(small_cfg(url), show_progress=False, run_id="rec-k9-resume")
    assert rest["reason"] == "completed"
    ledger = _check(url, cfg, baseline)
    assert len(ledger.audit_log(kind="resume")) == 1
