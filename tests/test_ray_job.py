"""jobs/live.py submitted as a Ray job to a real head node started with `ray start --head` on loopback."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tradesys.ledger import open_ledger

from .conftest import free_port
from .ledger_checks import assert_ledger_consistent

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))


@pytest.fixture()
def ray_head(tmp_path: Path):
    gcs, dash = free_port(), free_port()
    # Token authentication on, as on a real cluster: the head and the job client share a token file.
    token = tmp_path / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    env.pop("RAY_ADDRESS", None)
    temp = Path("/tmp") / f"rayjob{gcs}"  # Ray's socket paths must stay short
    cmd = [
        RAY, "start", "--head", f"--port={gcs}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
        f"--temp-dir={temp}", "--disable-usage-stats",
        # every listening port explicit: the defaults (e.g. the agent's 52365) clash with the session's own Ray
        *(f"--{flag}={free_port()}" for flag in (
            "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
            "runtime-env-agent-port", "node-manager-port", "object-manager-port",
        )),
    ]
    # --block keeps `ray start` in the foreground as the parent of the head's processes; killing its process
    # group tears down this head only (`ray stop` would also kill the test session's own Ray).
    with open(tmp_path / "ray_head.log", "wb") as log:
        proc = subprocess.Popen(
            [*cmd, "--block"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            _wait_for_dashboard(dash, proc, timeout_s=120)
            yield f"http://127.0.0.1:{dash}", env
        finally:
            for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(timeout=wait)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue


def _wait_for_dashboard(port: int, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/version", timeout=2)
            return
        except urllib.error.HTTPError:
            return  # 401 without a token: the dashboard is up
        except OSError:
            time.sleep(0.5)
    raise TimeoutError("the Ray head's dashboard did not come up")


@pytest.mark.ray
@pytest.mark.slow
def test_live_job_on_a_ray_head(ray_head, tmp_path: Path) -> None:
    address, env = ray_head
    db = tmp_path / "job.db"
    out = tmp_path / "summary.json"
    submit = [
        RAY, "job", "submit", f"--address={address}", "--submission-id", f"live-{int(time.time())}",
        "--", sys.executable, str(ROOT / "jobs" / "live.py"), "--quiet",
        "--set", f'ledger.url="sqlite:///{db}"', "--set", "data.start=2020-01-01", "--set", "data.end=2020-12-31",
        "--set", "strategy.slow=40", "--json", str(out),
    ]
    for _ in range(12):  # the dashboard answers before the head's job agent registers: retry only that
        proc = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=400, cwd=ROOT)
        if proc.returncode == 0 or "No available agent" not in proc.stdout + proc.stderr:
            break
        time.sleep(5)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "succeeded" in (proc.stdout + proc.stderr).lower()
    summary = json.loads(out.read_text())
    assert summary["reason"] == "completed"
    ledger = open_ledger(f"sqlite:///{db}")
    assert summary["orders"] == len(ledger.orders()) > 0
    assert summary["fills"] == len(ledger.fills()) > 0
    assert_ledger_consistent(ledger, 1_000_000.0)
    assert [a["kind"] for a in ledger.audit_log()][-1] == "shutdown"
