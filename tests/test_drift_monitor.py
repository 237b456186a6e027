"""The DriftMonitor end to end: planted drift in real S&P 500 features launches the real training job, which
registers a challenger; same-distribution windows do not; degradation, schedule, cooldown and one-job-in-flight.

References: the reference window is the model's input features (`default_features`: r, |r|, rv5, rv22) of S&P 500
returns 2004-2005. "Same distribution" is a seeded bootstrap of those rows (a different calendar slice is not: the
volatility level moves year to year). Planted drift: the features of 2006 returns scaled by 3 (every vol feature
triples). Planted forecast errors: realised values plus noise of 3 return standard deviations, whose rolling MSE is
recomputed here with numpy. The retraining's effect is read back independently from the MLflow registry and runs.
"""

from __future__ import annotations

import contextlib
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tradesys.actors.drift import (
    DriftMonitorCore,
    JobState,
    JsonlAudit,
    MonitorConfig,
    last_json_object,
)
from tradesys.data.returns import load_returns
from tradesys.train.data import default_features
from tradesys.train.drift import DriftPolicy

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


class Clock:
    """An injectable clock for the schedule and the policy."""

    def __init__(self, t: datetime = T0) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t

    def advance(self, **kw: float) -> None:
        self.t += timedelta(**kw)


class ScriptedLauncher:
    """Records launches; the test says when a job finishes. Stands in for the cluster in the core's unit tests only
    (the real launchers run below with Ray)."""

    name = "scripted"

    def __init__(self) -> None:
        self.launched: list[list[str]] = []
        self.states: dict[str, JobState] = {}

    def launch(self, argv: Any) -> str:
        self.launched.append(list(argv))
        job_id = f"job-{len(self.launched)}"
        self.states[job_id] = JobState("running")
        return job_id

    def poll(self, job_id: str) -> JobState:
        return self.states[job_id]


@pytest.fixture(scope="module")
def sp500() -> dict[str, Any]:
    r = load_returns("sp500").iloc[:, 0]
    ref = default_features(r["2003-11":"2005-12"]).dropna().loc["2004":"2005"]
    drifted = default_features(3.0 * r["2005-11":"2006-12"]).dropna().loc["2006"].iloc[-250:]
    return {"r": r, "ref": ref, "drifted": drifted}


def bootstrap(ref: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return ref.iloc[rng.integers(0, len(ref), n)]


def batches(frame: pd.DataFrame, size: int = 50) -> list[pd.DataFrame]:
    return [frame.iloc[i : i + size] for i in range(0, len(frame), size)]


# ------------------------------------------------------------------------------------------ core, no Ray


def test_planted_drift_launches_once_then_cooldown_and_audit(sp500, tmp_path: Path) -> None:
    clock, launcher = Clock(), ScriptedLauncher()
    audit = JsonlAudit(tmp_path / "audit.jsonl")
    argv = ["--num-samples", "1"]
    core = DriftMonitorCore(
        sp500["ref"], config=MonitorConfig(check_every_n=250, check_every_s=None, n_permutations=200),
        launcher=launcher, train_argv=argv, last_trained=T0 - timedelta(days=3), clock=clock, audit=audit,
    )  # fmt: skip
    # a same-distribution window first: no retrain
    for i, b in enumerate(batches(bootstrap(sp500["ref"], 250, seed=1))):
        core.observe(b)
        calm = core.tick()
        assert (calm is None) == (i < 4)
    assert calm is not None and not calm["decision"]["retrain"] and calm["decision"]["reasons"] == []
    assert calm["action"] == "none" and core.history[-1]["action"] == "none"
    # planted drift, fed as Arrow batches: the schedule runs the check after 250 new rows
    for i, b in enumerate(batches(sp500["drifted"])):
        clock.advance(minutes=1)
        core.observe(pa.RecordBatch.from_pandas(b, preserve_index=False))
        rec = core.tick()
        assert (rec is None) == (i < 4)
    assert rec is not None and rec["decision"]["retrain"] and rec["action"] == "launched"
    assert rec["decision"]["reasons"][0]["code"] == "feature_drift"
    assert {"abs_ret", "rv5", "rv22"} <= set(rec["features"]["drifted_columns"])
    assert launcher.launched == [argv] and core.job is not None and rec["job"]["job_id"] == "job-1"
    assert core.last_trained == clock()  # the launch restarts the policy's clock
    # more drift an hour later: inside the 1-day cooldown, reported, not launched
    clock.advance(hours=1)
    core.observe(sp500["drifted"])
    rec2 = core.tick()
    assert rec2 is not None and not rec2["decision"]["retrain"] and rec2["action"] == "none"
    assert [r["code"] for r in rec2["decision"]["reasons"]][-1] == "cooldown"
    assert len(launcher.launched) == 1
    # the job finishes: the next tick records its outcome
    launcher.states["job-1"] = JobState("succeeded", summary={"version": 3, "run_id": "abc", "promotion": {}})
    core.tick()
    st = core.status()
    assert st["in_flight"] is None and st["jobs"][0]["state"] == "succeeded" and st["jobs"][0]["result"]["version"] == 3
    assert st["last_decision"]["check_id"] == 3 and st["launches"] == 1
    lines = audit.read()
    assert [x["event"] for x in lines] == ["check", "check", "check", "job_finished"]
    assert lines[1] == json.loads(json.dumps(rec))  # the audit line is the returned record
    assert lines[3]["job"]["result"]["version"] == 3


def test_same_distribution_windows_do_not_retrain(sp500) -> None:
    """Bootstraps of the reference: every KS p-value above its level and no retrain, over several seeds."""
    for seed in range(5):
        cfg = MonitorConfig(n_permutations=200, seed=seed)
        core = DriftMonitorCore(sp500["ref"], config=cfg, launcher=ScriptedLauncher(), last_trained=T0,
                                clock=Clock(T0 + timedelta(hours=1)))  # fmt: skip
        core.observe(bootstrap(sp500["ref"], 250, seed=10 + seed))
        rec = core.check()
        feats = rec["features"]
        assert not feats["drift"] and not rec["decision"]["retrain"] and rec["action"] == "none"
        assert min(c["ks_pvalue"] for c in feats["columns"]) > feats["ks_level"]


def test_one_job_in_flight_when_cooldown_is_zero(sp500) -> None:
    launcher = ScriptedLauncher()
    clock = Clock()
    core = DriftMonitorCore(
        sp500["ref"], config=MonitorConfig(n_permutations=100, policy=DriftPolicy(cooldown=timedelta(0))),
        launcher=launcher, last_trained=T0 - timedelta(days=1), clock=clock,
    )  # fmt: skip
    core.observe(sp500["drifted"])
    assert core.check()["action"] == "launched"
    clock.advance(minutes=5)
    rec = core.check()
    assert rec["decision"]["retrain"] and rec["action"] == "in_flight" and len(launcher.launched) == 1
    launcher.states["job-1"] = JobState("failed", error="boom")
    clock.advance(minutes=5)
    rec = core.check()  # the failed job is recorded, and the persisting drift launches again (no cooldown)
    assert rec["action"] == "launched" and len(launcher.launched) == 2
    assert core.status()["jobs"][0]["state"] == "failed" and core.status()["jobs"][0]["error"] == "boom"


def test_degradation_trigger_with_planted_forecast_errors(sp500) -> None:
    r = sp500["r"]
    ref_r = r["2004":"2005"].to_numpy()
    holdout_mse = float(np.mean(ref_r**2))  # the zero forecast's MSE on the reference period
    cfg = MonitorConfig(holdout_error=holdout_mse, degradation_window=20, degradation_ratio=1.5, n_permutations=100)
    core = DriftMonitorCore(sp500["ref"], config=cfg, launcher=ScriptedLauncher(), last_trained=T0,
                            clock=Clock(T0 + timedelta(days=2)))  # fmt: skip
    feats = bootstrap(sp500["ref"], 250, seed=3)
    realised = np.random.default_rng(4).choice(ref_r, 250)
    core.observe(feats, predictions=pd.DataFrame({"ret": np.zeros(250), "vol": 0.01}), realised=realised)
    rec = core.check()
    assert not rec["degradation"]["degraded"] and not rec["decision"]["retrain"]
    assert rec["degradation"]["current_error"] == pytest.approx(np.mean(realised[-20:] ** 2), rel=1e-12)
    # planted errors: forecast = realised + N(0, (3 sd)^2): expected MSE ratio about 1 + 9
    noise = np.random.default_rng(5).normal(0.0, 3.0 * ref_r.std(), 40)
    real2 = np.random.default_rng(6).choice(ref_r, 40)
    pred2 = pd.DataFrame({"ret": real2 + noise, "vol": np.full(40, 0.01)})
    real2[0] = np.nan  # an unknown outcome does not count
    core.observe(bootstrap(sp500["ref"], 40, seed=7), predictions=pred2, realised=real2)
    rec = core.check()
    deg = rec["degradation"]
    assert deg["current_error"] == pytest.approx(np.mean(noise[-20:] ** 2), rel=1e-9)
    assert deg["ratio"] == pytest.approx(np.mean(noise[-20:] ** 2) / holdout_mse, rel=1e-9)
    assert deg["degraded"] and deg["ratio"] > 3
    assert rec["decision"]["retrain"] and [x["code"] for x in rec["decision"]["reasons"]] == ["degradation"]


def test_prediction_drift_trigger(sp500) -> None:
    ref = sp500["ref"]
    core = DriftMonitorCore(ref, reference_predictions=ref[["rv22"]].rename(columns={"rv22": "vol"}),
                            config=MonitorConfig(n_permutations=100), launcher=ScriptedLauncher(), last_trained=T0,
                            clock=Clock(T0 + timedelta(days=2)))  # fmt: skip
    cur = bootstrap(ref, 250, seed=8)
    core.observe(cur, predictions=pd.Series(2.0 * cur["rv22"].to_numpy(), name="vol"))
    rec = core.check()
    assert rec["predictions"]["drifted_columns"] == ["vol"] and not rec["features"]["drift"]
    assert [x["code"] for x in rec["decision"]["reasons"]] == ["prediction_drift"] and rec["action"] == "launched"


def test_schedule_by_clock_and_by_rows_and_age_trigger(sp500) -> None:
    clock, launcher = Clock(), ScriptedLauncher()
    policy = DriftPolicy(max_age=timedelta(days=7), cooldown=timedelta(days=1))
    core = DriftMonitorCore(
        sp500["ref"], config=MonitorConfig(check_every_n=None, check_every_s=600, n_permutations=100, policy=policy),
        launcher=launcher, last_trained=T0 - timedelta(days=6, hours=23, minutes=55), clock=clock,
    )  # fmt: skip
    core.observe(bootstrap(sp500["ref"], 250, seed=9))
    clock.advance(seconds=599)
    assert core.tick() is None  # rows alone do not trigger: only the clock does here
    clock.advance(seconds=1)
    rec = core.tick()
    assert rec is not None and [x["code"] for x in rec["decision"]["reasons"]] == ["schedule"]
    assert rec["action"] == "launched" and "max age 7 days" in rec["decision"]["reasons"][0]["detail"]
    clock.advance(seconds=600)
    rec = core.tick()  # age restarted at the launch: no schedule trigger, nothing drifts
    assert rec is not None and rec["decision"]["reasons"] == []
    by_rows = DriftMonitorCore(sp500["ref"], config=MonitorConfig(check_every_n=100, check_every_s=None),
                               clock=clock)  # fmt: skip
    rows = bootstrap(sp500["ref"], 100, seed=2)
    by_rows.observe(rows.iloc[:99])
    assert not by_rows.due()
    by_rows.observe(rows.iloc[99:])
    assert by_rows.due()
    assert by_rows.tick()["action"] == "none" and not by_rows.due()  # no launcher: decisions are still recorded


def test_bad_input_names_the_field(sp500) -> None:
    ref = sp500["ref"]
    core = DriftMonitorCore(ref, clock=Clock())
    with pytest.raises(ValueError, match="features: missing column 'rv22'"):
        core.observe(ref.drop(columns="rv22"))
    with pytest.raises(ValueError, match="predictions: 3 rows"):
        core.observe(ref.iloc[:5], predictions=np.zeros(3))
    with pytest.raises(ValueError, match="realised: 4 values"):
        core.observe(ref.iloc[:5], predictions=np.zeros(5), realised=np.zeros(4))
    with pytest.raises(ValueError, match="realised: needs the predictions"):
        core.observe(ref.iloc[:5], realised=np.zeros(5))
    with pytest.raises(ValueError, match="reference_features: 10 rows"):
        DriftMonitorCore(ref.iloc[:10])
    with pytest.raises(ValueError, match="clock"):
        DriftMonitorCore(ref, clock=lambda: datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="min_rows"):
        MonitorConfig(window=100, min_rows=101)
    with pytest.raises(ValueError, match="holdout_error"):
        MonitorConfig(holdout_error=0.0)


def test_last_json_object_finds_the_printed_summary() -> None:
    summary = {"version": 4, "promotion": {"promoted": False, "pvalue": 0.3}, "holdout": {"a": [1, 2]}}
    logs = "2026 INFO trial {not json}\n{\"partial\": \n" + json.dumps(summary, indent=2) + "\nbye {x}\n"
    assert last_json_object(logs) == summary
    assert last_json_object("no json here\n") is None


# ------------------------------------------------------------------------------------------ the actor, real Ray


def _tiny_train_argv(uri: str, runs: Path, name: str) -> list[str]:
    return [
        "--kinds", "lstm", "--num-samples", "1", "--max-epochs", "1", "--lookback", "8", "--vol-horizon", "3",
        "--max-samples", "300", "--holdout", "60", "--mlflow-uri", uri, "--registry-name", name,
        "--runs-dir", str(runs),
    ]  # fmt: skip


@pytest.mark.ray
@pytest.mark.slow
def test_actor_planted_drift_retrains_real_job_and_logs_the_chain(ray_session, sp500, tmp_path: Path) -> None:
    import ray
    from mlflow import MlflowClient

    from tradesys.actors.drift import DRIFT_EXPERIMENT, DriftMonitor, RayTaskLauncher
    from tradesys.train.registry import CHALLENGER, alias_version

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    audit = tmp_path / "drift.jsonl"
    mon = DriftMonitor.remote(
        sp500["ref"], config=MonitorConfig(check_every_n=250, check_every_s=None, n_permutations=200),
        launcher=RayTaskLauncher(), train_argv=_tiny_train_argv(uri, tmp_path / "runs", "fc-drift"),
        last_trained=datetime.now(UTC) - timedelta(days=2), tracking_uri=uri, runs_dir=str(tmp_path / "runs"),
        evidently="on_drift", audit_path=str(audit),
    )  # fmt: skip
    # calm: a bootstrap of the reference, in Arrow batches
    for b in batches(bootstrap(sp500["ref"], 250, seed=1)):
        ray.get(mon.observe.remote(pa.RecordBatch.from_pandas(b, preserve_index=False)))
    calm = ray.get(mon.tick.remote())
    assert calm is not None and calm["action"] == "none" and not calm["decision"]["retrain"]
    # planted drift: the check launches the real training job in the cluster
    for b in batches(sp500["drifted"]):
        ray.get(mon.observe.remote(pa.RecordBatch.from_pandas(b, preserve_index=False)))
    rec = ray.get(mon.tick.remote())
    assert rec["action"] == "launched" and rec["decision"]["reasons"][0]["code"] == "feature_drift"
    assert ray.get(mon.status.remote())["in_flight"]["job_id"] == rec["job"]["job_id"]
    job = ray.get(mon.wait_job.remote(timeout_s=240))
    assert job["state"] == "succeeded", job.get("error")
    version = job["result"]["version"]
    # the registry, read independently: a new version under the challenger alias
    assert version == 1 and alias_version("fc-drift", CHALLENGER, tracking_uri=uri) == version
    # persisting drift inside the cooldown: reported, not launched; still one version
    ray.get(mon.observe.remote(sp500["drifted"]))
    rec2 = ray.get(mon.check.remote())
    assert rec2["action"] == "none" and rec2["decision"]["reasons"][-1]["code"] == "cooldown"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert len(client.search_model_versions("name='fc-drift'")) == 1

    # the drift runs record the decision, the statistics, the Evidently report and the retraining's outcome
    exp = client.get_experiment_by_name(DRIFT_EXPERIMENT)
    runs = {r.info.run_id: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {calm["mlflow_run_id"], rec["mlflow_run_id"], rec2["mlflow_run_id"]}
    run = runs[rec["mlflow_run_id"]]
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["decision.retrain"] == "true" and tags["decision.reasons"].startswith("feature_drift")
    assert tags["action"] == "launched" and tags["retrain.state"] == "succeeded" and tags["retrain.version"] == "1"
    assert tags["retrain.train_run_id"] == job["result"]["run_id"]
    col = {c["name"]: c for c in rec["features"]["columns"]}
    assert metrics["features.rv22.psi"] == pytest.approx(col["rv22"]["psi"], rel=1e-12)
    assert metrics["features.mmd_pvalue"] == pytest.approx(rec["features"]["mmd"]["pvalue"], rel=1e-12)
    assert metrics["features.drift"] == 1.0
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "evidently")}
    assert arts == {"evidently/drift_report.html"}
    assert runs[calm["mlflow_run_id"]].data.tags["decision.retrain"] == "false"
    assert not client.list_artifacts(calm["mlflow_run_id"], "evidently")  # on_drift: no report for a calm check
    assert runs[rec2["mlflow_run_id"]].data.tags["decision.reasons"].endswith("cooldown")
    events = [json.loads(x)["event"] for x in audit.read_text().splitlines()]
    assert events == ["check", "check", "job_finished", "check"]


@pytest.mark.ray
@pytest.mark.slow
def test_actor_loop_checks_on_its_own_and_reports_a_failed_job(ray_session, sp500, tmp_path: Path) -> None:
    """The actor's own schedule loop (no tick from outside) runs the check, launches a real Ray task and records
    its outcome; a job script that exits (argparse's way of refusing a flag) is reported as failed."""
    import ray

    from tradesys.actors.drift import DriftMonitor, RayTaskLauncher

    script = tmp_path / "fails.py"
    script.write_text("import sys\n\ndef main(argv):\n    print('bad flag', argv, file=sys.stderr)\n    sys.exit(2)\n")
    mon = DriftMonitor.remote(
        sp500["ref"], config=MonitorConfig(check_every_n=100, check_every_s=None, n_permutations=100),
        launcher=RayTaskLauncher(script, num_cpus=0), train_argv=["--x", "1"],
        last_trained=datetime.now(UTC) - timedelta(days=2), log_to_mlflow=False,
    )  # fmt: skip
    assert ray.get(mon.start.remote(poll_s=0.05)) and not ray.get(mon.start.remote(poll_s=0.05))
    ray.get(mon.observe.remote(sp500["drifted"].iloc[:150]))
    deadline = time.monotonic() + 60
    st = ray.get(mon.status.remote())
    while not st["jobs"] and time.monotonic() < deadline:
        time.sleep(0.2)
        st = ray.get(mon.status.remote())
    assert ray.get(mon.stop.remote())
    assert st["loop_error"] is None and st["checks"] == 1 and st["launches"] == 1
    assert st["history"][0]["action"] == "launched" and st["history"][0]["reasons"][0] == "feature_drift"
    job = st["jobs"][0]
    assert job["state"] == "failed" and "exited with status 2 (argv ['--x', '1'])" in job["error"]


@pytest.fixture()
def ray_head_with_jobs(tmp_path: Path):
    """A second Ray head with a dashboard (the Jobs API) and token auth, on loopback in its own process group and
    temp dir, so it is torn down alone (never `ray stop`, which would take the session's Ray too)."""
    import os
    import secrets
    import shutil
    import signal
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    from .conftest import free_port

    gcs, dash = free_port(), free_port()
    token = secrets.token_hex(32)
    token_file = tmp_path / "auth_token"
    token_file.write_text(token)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN_PATH": str(token_file)}  # fmt: skip
    env.pop("RAY_ADDRESS", None)
    temp = Path("/tmp") / f"raydm{gcs}"  # Ray's socket paths must stay short
    ports = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
             "runtime-env-agent-port", "node-manager-port", "object-manager-port")  # fmt: skip
    cmd = [
        str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", f"--port={gcs}",
        "--node-ip-address=127.0.0.1", "--num-cpus=1", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}", f"--temp-dir={temp}", "--disable-usage-stats",
        *(f"--{flag}={free_port()}" for flag in ports),
    ]  # fmt: skip
    with open(tmp_path / "head.log", "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.time() + 120
            while True:
                assert proc.poll() is None, (tmp_path / "head.log").read_text()[-2000:]
                assert time.time() < deadline, "the head's dashboard did not come up"
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{dash}/api/version", timeout=2)
                    break
                except urllib.error.HTTPError:
                    break  # 401 without the token: it is up
                except OSError:
                    time.sleep(0.5)
            yield f"http://127.0.0.1:{dash}", token
        finally:  # SIGTERM to `ray start --block` alone lets it stop its children in order; then clear the group
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=20)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.ray
@pytest.mark.slow
def test_job_submission_launcher_on_a_head_with_a_dashboard(ray_head_with_jobs, sp500, tmp_path, monkeypatch) -> None:
    """Drift launches through the Jobs API (working_dir upload, token auth from an env var, argv quoting); the
    job's printed summary comes back; a failing job is reported failed. The script stands in for jobs/train.py so
    the head needs no training; the real training job runs in the RayTaskLauncher test above."""
    import sys

    from tradesys.actors.drift import JobSubmissionLauncher

    address, token = ray_head_with_jobs
    monkeypatch.setenv("TRADESYS_TEST_RAY_TOKEN", token)
    wd = tmp_path / "wd"
    (wd / "jobs").mkdir(parents=True)
    (wd / "jobs" / "train.py").write_text(
        "import json, sys\n"
        "print('tune log {not json}')\n"
        "if '--fail' in sys.argv:\n    sys.exit(3)\n"
        "print(json.dumps({'version': 7, 'run_id': 'r1', 'argv': sys.argv[1:]}, indent=2))\n"
    )
    launcher = JobSubmissionLauncher(address, working_dir=wd, python=sys.executable,
                                     auth_token_env="TRADESYS_TEST_RAY_TOKEN")  # fmt: skip
    argv = ["--registry-name", "a b", "--num-samples", "1"]
    assert launcher.entrypoint(argv) == f"{sys.executable} jobs/train.py --registry-name 'a b' --num-samples 1"
    core = DriftMonitorCore(
        sp500["ref"], config=MonitorConfig(n_permutations=100, policy=DriftPolicy(cooldown=timedelta(0))),
        launcher=launcher, train_argv=argv, last_trained=T0 - timedelta(days=2), clock=Clock(),
    )  # fmt: skip
    core.observe(sp500["drifted"])
    deadline = time.monotonic() + 90
    rec = core.check()
    while rec["action"] == "launch_failed" and time.monotonic() < deadline:  # the job agent registers late
        assert "No available agent" in rec["errors"][-1], rec["errors"]
        time.sleep(1.0)
        rec = core.check()
    assert rec["action"] == "launched", rec["errors"]
    job_id = rec["job"]["job_id"]
    while core.job is not None and time.monotonic() < deadline:
        time.sleep(0.5)
        core.poll_job()
    job = core.status()["jobs"][-1]
    assert job["state"] == "succeeded", job
    assert job["result"] == {"version": 7, "run_id": "r1"}
    assert launcher.poll(job_id).summary["argv"] == argv  # quoting survived the shell
    failing = launcher.launch([*argv, "--fail"])
    st = launcher.poll(failing)
    while st.state == "running" and time.monotonic() < deadline + 30:
        time.sleep(0.5)
        st = launcher.poll(failing)
    assert st.state == "failed" and st.summary is None and "FAILED" in (st.error or "")


@pytest.mark.ray
@pytest.mark.slow
def test_drift_monitor_job_replays_planted_drift_without_launching(ray_session, tmp_path: Path) -> None:
    """jobs/drift_monitor.py: 2006 S&P 500 returns x3 replayed in batches against 2004-05; --no-launch records the
    retrain decision (action no_launcher) in the status, the audit file and MLflow, and launches nothing."""
    import importlib.util

    from mlflow import MlflowClient

    spec = importlib.util.spec_from_file_location("drift_monitor_job", ROOT / "jobs" / "drift_monitor.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    audit = tmp_path / "audit.jsonl"
    st = job.main(["--scale", "3", "--no-launch", "--evidently", "never", "--mlflow-uri", uri,
                   "--runs-dir", str(tmp_path / "runs"), "--audit", str(audit)])  # fmt: skip
    assert st["checks"] == 1 and st["launches"] == 0 and st["in_flight"] is None
    h = st["history"][0]
    assert h["retrain"] and h["action"] == "no_launcher" and h["reasons"][0] == "feature_drift"
    lines = [json.loads(x) for x in audit.read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["n_current"] == 250 and lines[0]["mlflow_run_id"] == h["mlflow_run_id"]
    run = MlflowClient(tracking_uri=uri).get_run(h["mlflow_run_id"])
    assert run.data.tags["action"] == "no_launcher" and run.data.tags["decision.retrain"] == "true"
    with pytest.raises(SystemExit):
        job.parse_args(["--batch", "0"])


@pytest.mark.ray
@pytest.mark.slow
def test_drift_monitor_job_retrains_the_rl_agent_on_planted_drift(ray_session, tmp_path: Path) -> None:
    """jobs/drift_monitor.py --retrain rl: the planted drift's retrain decision launches jobs/rl_train.py (one tiny
    PPO iteration) as a Ray task; the job succeeds and its summary (a checkpoint chosen on the selection period) is
    recorded with the launch, and its MLflow run holds the checkpoint."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("drift_monitor_job_rl", ROOT / "jobs" / "drift_monitor.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    st = job.main(["--scale", "3", "--retrain", "rl", "--evidently", "never", "--mlflow-uri", uri,
                   "--runs-dir", str(tmp_path / "runs"), "--audit", str(tmp_path / "audit.jsonl"), "--",
                   "--symbols", "AAPL,JPM", "--iterations", "1", "--train-batch-size", "200", "--minibatch-size",
                   "100", "--num-epochs", "1", "--num-env-runners", "0", "--mlflow-uri", uri])  # fmt: skip
    assert st["checks"] == 1 and st["launches"] == 1, st
    h = st["history"][0]
    assert h["retrain"] and h["reasons"][0] == "feature_drift"
    last = st["jobs"][-1]
    assert last["state"] == "succeeded", last
    from mlflow import MlflowClient

    run = MlflowClient(tracking_uri=uri).get_run(last["result"]["run_id"])  # the retraining's own MLflow run
    assert run.data.params["symbols"] == "AAPL,JPM" and run.data.tags["best_checkpoint"]
    assert Path(run.data.tags["best_checkpoint"]).is_dir()
    [written] = (tmp_path / "runs" / "rl_summaries").glob("*.json")  # the job's --out, read back by the launcher
    summary = json.loads(written.read_text())
    assert summary["run_id"] == run.info.run_id
    assert summary["used"]["select_last_bar"] < summary["split"]["test_start"]
