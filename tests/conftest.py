"""Shared fixtures: one real local Ray per session, the real PostgreSQL and Redis on this machine.

When CI=true a missing server is a failure, not a skip.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"
PG_DSN = os.environ.get("TRADESYS_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TRADESYS_REDIS_URL", "redis://127.0.0.1:6379/0")


def _unavailable(what: str, why: object) -> None:
    msg = f"{what} is not reachable: {why}"
    if IN_CI:
        pytest.fail(msg + " (CI=true: a missing server is a failure)")
    pytest.skip(msg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(autouse=True)
def _ray_auth_mode_restored() -> Iterator[None]:
    """`tradesys live --detach`/`status` run in process turn on RAY_AUTH_MODE=token for their own client (as a user's
    shell would keep it); a later test's `ray start --head` must not inherit that (it then refuses to make a token)."""
    before = os.environ.get("RAY_AUTH_MODE")
    yield
    if before is None:
        os.environ.pop("RAY_AUTH_MODE", None)
    else:
        os.environ["RAY_AUTH_MODE"] = before


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """A real local Ray runtime shared by the whole test session."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",  # always a fresh local runtime, even when another cluster runs on this machine
            num_cpus=4,
            resources={"head": 1},  # ray.head_resource: the live loop's actors are pinned to the head
            include_dashboard=False,
            log_to_driver=False,
            ignore_reinit_error=True,
            runtime_env={"env_vars": {"PYTHONPATH": os.getcwd()}},
        )
    yield
    ray.shutdown()


@pytest.fixture()
def pg_dsn() -> Iterator[str]:
    """A DSN on the real PostgreSQL whose search_path is a fresh schema, dropped afterwards."""
    try:
        import psycopg

        admin = psycopg.connect(PG_DSN, autocommit=True, connect_timeout=3)
    except Exception as exc:  # connection refused, auth, missing driver
        _unavailable("PostgreSQL at " + PG_DSN, exc)
    schema = "t_" + uuid.uuid4().hex[:12]
    admin.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_DSN else "?"
    yield f"{PG_DSN}{sep}options=-csearch_path%3D{schema}"
    admin.execute(f"DROP SCHEMA {schema} CASCADE")
    admin.close()


@pytest.fixture()
def redis_url() -> str:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:
        _unavailable("Redis at " + REDIS_URL, exc)
    return REDIS_URL


# The session-wide Kafka-protocol broker fixture; imported last because tests.tansu imports IN_CI and free_port.
from tests.tansu import tansu_broker  # noqa: E402, F401

# --- one real `ray start --head` on loopback for the job-submission tests (tests/test_ray_job.py and others) -------

RAY_CLI = str(Path(sys.executable).with_name("ray"))


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str], str]]:
    """(dashboard URL, the job client's environment, GCS address) of a head started as a user starts one: a token
    in `~/.ray/auth_token` (a private HOME) and no RAY_AUTH_MODE, so Ray turns token authentication on by itself.
    One head for the whole session (starting one costs about 15 s); jobs see this venv's `python` first on PATH."""
    tmp_path = tmp_path_factory.mktemp("ray_head")
    gcs, dash = free_port(), free_port()
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    token = home / ".ray" / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN", "MLFLOW_TRACKING_URI")}
    env.update(HOME=str(home), RAY_USAGE_STATS_ENABLED="0",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    temp = Path("/tmp") / f"rayjob{gcs}"  # Ray's socket paths must stay short
    cmd = [
        RAY_CLI, "start", "--head", f"--port={gcs}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
        '--resources={"head": 1}',  # as cluster.yaml's head: ray.head_resource pins the live loop here
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
            yield f"http://127.0.0.1:{dash}", dict(env), f"127.0.0.1:{gcs}"
        finally:
            # `ray start --block` does not exit on SIGTERM within 30 s: a short grace, then the whole group
            for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
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
