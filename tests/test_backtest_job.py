"""One backtest on Ray: `tradesys backtest --ray` on the session Ray, jobs/backtest.py submitted to a real head, and
the retry path (a retried attempt starts from an empty ledger). The reference is the in-process `run_backtest` of
the same configuration, and each run's own ledger read back from disk."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tradesys.backtest.runner import run_backtest
from tradesys.backtest.sweep import METRICS
from tradesys.config import ConfigError, load_config
from tradesys.ledger import open_ledger

from .ledger_checks import assert_ledger_consistent
from .test_ray_job import RAY

ROOT = Path(__file__).resolve().parents[1]
BASE = {"data.symbols": ["AAPL", "JPM", "XOM"], "data.start": "2020-01-01", "data.end": "2020-09-30",
        "strategy.slow": 60}
SETS = ['data.symbols=["AAPL","JPM","XOM"]', "data.start=2020-01-01", "data.end=2020-09-30", "strategy.slow=60"]
runner = CliRunner()


def _strict(text: str) -> Any:
    def refuse(name: str) -> None:
        raise AssertionError(f"non-JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def _reference() -> dict[str, Any]:
    summary, _ = run_backtest(load_config(None, BASE))
    return {m: getattr(summary, m) for m in METRICS}


def _job_module() -> Any:
    spec = importlib.util.spec_from_file_location("jobs_backtest", ROOT / "jobs" / "backtest.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_retried_attempt_starts_from_an_empty_ledger(tmp_path: Path) -> None:
    """What a Ray retry runs: the failed attempt left a half-written ledger and one line in `attempts`; attempt 2
    deletes that ledger and books the same run as a clean backtest."""
    from tradesys.backtest.distributed import execute_backtest

    run_dir = tmp_path / "run"
    db = run_dir / "ledger.db"
    url = f"sqlite:///{db}"
    cfg = load_config(None, BASE)
    other = load_config(None, {**BASE, "strategy.fast": 5, "data.end": "2020-05-01"})
    run_backtest(other, url)[1].close()  # the earlier attempt's rows (another run entirely)
    run_dir.joinpath("attempts").write_text("1 pid=1\n")
    out = execute_backtest(cfg, url, str(run_dir))
    assert out["attempt"] == 2 and len(run_dir.joinpath("attempts").read_text().splitlines()) == 2
    ref = _reference()
    assert {m: out["summary"][m] for m in METRICS} == ref
    ledger = open_ledger(url)
    assert len(ledger.orders()) == ref["orders"] and math.isclose(ledger.equity_curve()[-1]["equity"], ref["equity"])
    assert_ledger_consistent(ledger, cfg.initial_cash)


def test_job_refuses_a_relative_runs_dir_and_bad_flags(capsys: pytest.CaptureFixture[str]) -> None:
    job = _job_module()
    with pytest.raises(ConfigError, match=r"^ledger\.runs_dir: 'myruns' is relative"):
        job.job_runs_dir(load_config(None, ['ledger.runs_dir="myruns"']))
    assert job.job_runs_dir(load_config(None, ['ledger.runs_dir="/srv/runs"'])) == Path("/srv/runs")
    # checked before Ray is touched: one line, exit code 2
    assert job.main(["--param", "strategy.fastt=1,2"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("config error: strategy.fastt: unknown field")
    assert job.main(["--ledger", "mysql://u:pw@h/db"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("config error: --ledger: must start with") and "pw" not in line


@pytest.mark.ray
def test_cli_backtest_on_ray(ray_session: None, tmp_path: Path) -> None:
    """`tradesys backtest --ray`: the same numbers as in-process, the ledger and summary.json in the run dir; a
    ledger that already holds a run is refused in one line."""
    from tradesys.cli import app

    runs = tmp_path / "runs"
    sets = [x for s in [*SETS, f'ledger.runs_dir="{runs}"'] for x in ("-s", s)]
    r = runner.invoke(app, ["backtest", *sets, "--ray", "--json"])
    assert r.exit_code == 0, r.output
    s = _strict(r.stdout)
    assert {m: s[m] for m in METRICS} == _reference()
    run_dir = runs / s["run_id"]
    assert s["ledger_url"] == f"sqlite:///{run_dir / 'ledger.db'}" and s["attempts"] == 1
    assert _strict((run_dir / "summary.json").read_text()) == s
    ledger = open_ledger(s["ledger_url"])
    assert len(ledger.orders()) == s["orders"] > 0 and len(ledger.fills()) == s["fills"]
    assert [a["kind"] for a in ledger.audit_log()][-1] == "shutdown"
    assert "tradesys run " in r.stderr  # the summary table went to stderr

    again = runner.invoke(app, ["backtest", *sets, "--ray", "--ledger", s["ledger_url"]])
    assert again.exit_code == 2 and again.stderr.strip().splitlines() == [
        f"config error: --ledger: {s['ledger_url']} already holds a run ({s['orders']} orders); a backtest starts "
        "from an empty ledger: give a new one"]


@pytest.mark.ray
@pytest.mark.slow
def test_backtest_job_on_a_ray_head(ray_head, tmp_path: Path) -> None:
    """jobs/backtest.py submitted with `ray job submit` (token auth, as the docs say): the backtest runs as a task
    on the head's worker, its ledger and summary in $TRADESYS_RUNS_DIR/<run id>/, strict JSON on stdout."""
    address, env, _ = ray_head
    runs = tmp_path / "runs"
    submit = [
        RAY, "job", "submit", f"--address={address}", "--submission-id", f"backtest-{time.time_ns()}",
        "--runtime-env-json", json.dumps({"env_vars": {"TRADESYS_RUNS_DIR": str(runs)}}),
        "--", sys.executable, str(ROOT / "jobs" / "backtest.py"), "--quiet", "--json",
        *(x for s in SETS for x in ("--set", s)),
    ]
    for _ in range(12):  # the dashboard answers before the head's job agent registers: retry only that
        proc = subprocess.run(submit, env={**env, "RAY_AUTH_MODE": "token"}, capture_output=True, text=True,
                              timeout=400, cwd=ROOT)
        if proc.returncode == 0 or "No available agent" not in proc.stdout + proc.stderr:
            break
        time.sleep(5)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    printed = [ln for ln in proc.stdout.splitlines() if ln.startswith('{"')]
    assert printed, proc.stdout[-3000:]
    s = _strict(printed[-1])
    run_dir = runs / s["run_id"]
    assert s["ledger_url"] == f"sqlite:///{run_dir / 'ledger.db'}"
    assert _strict((run_dir / "summary.json").read_text()) == s
    assert {m: s[m] for m in METRICS} == _reference()
    ledger = open_ledger(s["ledger_url"])
    assert len(ledger.orders()) == s["orders"] > 0
    assert_ledger_consistent(ledger, 1_000_000.0)
