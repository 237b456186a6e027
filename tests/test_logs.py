"""Structured logs (issue 15 part 4): JSON lines with run id, actor and order id from every actor and the API, and
no secret anywhere a run writes.

The formatter is checked in-process against lines parsed back with `json`. The end-to-end test runs what a user
types against a Ray head of its own (so the session's logs folder holds this run only): `tradesys live` on a
PostgreSQL ledger whose URL carries a password, then `tradesys serve` on that ledger with the API key answering
requests; then it greps every file of the head's session folder and both commands' output for the two secrets,
and reads the actors' lines back as JSON.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tradesys import logs

from .conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
TRADESYS = str(Path(sys.executable).with_name("tradesys"))
SHORT = ["-s", "data.start=2019-06-01", "-s", "data.end=2020-03-31", "-s", "strategy.slow=60"]
# every actor of a run writes its start line (the MarketDataActor's and LedgerActor's were once missing: their code
# reached their workers by value, with a logger that did not configure the process; see tradesys.logs._RunLogger)
CHILDREN = {"supervisor", "market_data", "ledger", "broker", "strategy", "risk", "execution"}
START_LINES = {"supervisor": "run started", "market_data": "market data started", "ledger": "ledger opened",
               "broker": "broker started", "strategy": "strategy started", "risk": "risk gate started",
               "execution": "execution started"}


# ---------------------------------------------------------------- the formatter, in-process


@pytest.fixture()
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """The `tradesys` logger configured as an actor would be, writing into a buffer; restored afterwards."""
    root = logging.getLogger(logs.LOGGER)
    saved = (list(root.handlers), root.level, root.propagate, dict(logs._process))
    buf = io.StringIO()
    logs._process.clear()
    yield logs.configure("json", "INFO", run_id="run-test-1", actor="execution", stream=buf), buf
    root.handlers[:], root.level, root.propagate = saved[0], saved[1], saved[2]
    logs._process.clear()
    logs._process.update(saved[3])


def _lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(x) for x in buf.getvalue().splitlines()]


def test_a_line_is_one_json_object_with_run_actor_order_and_extras(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    _, buf = captured
    logging.getLogger("tradesys.actors").info("order sent", extra={"order_id": "o-7", "qty": 5.0, "side": "buy"})
    logging.getLogger("tradesys.actors").debug("below the level")
    with logs.bind(order_id="o-8"):
        logging.getLogger("tradesys.x").warning("in a bound block %d", 3)
    logging.getLogger("tradesys.x").info("no order here")
    a, b, c = _lines(buf)
    assert a["msg"] == "order sent" and a["level"] == "INFO" and a["logger"] == "tradesys.actors"
    assert (a["run_id"], a["actor"], a["order_id"]) == ("run-test-1", "execution", "o-7")
    assert (a["qty"], a["side"]) == (5.0, "buy")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", a["ts"]) and a["pid"] == os.getpid()
    assert (b["msg"], b["order_id"], b["level"]) == ("in a bound block 3", "o-8", "WARNING")
    assert "order_id" not in c and c["run_id"] == "run-test-1"


def test_secrets_are_masked_in_message_extras_and_traceback(
    captured: tuple[logging.Logger, io.StringIO], monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, buf = captured
    key, pw = "k3y-" + os.urandom(6).hex(), "pw-" + os.urandom(6).hex()
    monkeypatch.setenv("TRADESYS_API_KEY", key)
    dsn = f"postgresql://u:{pw}@db:5432/prod"
    log = logging.getLogger("tradesys.t")
    log.info("connecting to %s with key %s", dsn, key, extra={"ledger": dsn, "nested": {"k": [key]}})
    try:
        raise RuntimeError(f"failed on {dsn} ({key})")
    except RuntimeError:
        log.exception("boom")
    text = buf.getvalue()
    assert key not in text and pw not in text
    first, second = _lines(buf)
    assert first["msg"] == "connecting to postgresql://u:***@db:5432/prod with key ***"
    assert first["ledger"] == "postgresql://u:***@db:5432/prod" and first["nested"] == {"k": ["***"]}
    assert "RuntimeError: failed on postgresql://u:***@db:5432/prod (***)" in second["exc"]


def test_text_format_and_a_refused_format(captured: tuple[logging.Logger, io.StringIO]) -> None:
    _, buf = captured
    logs.configure("text", "INFO", run_id="run-test-1", actor="risk", stream=buf)
    logging.getLogger("tradesys.t").info("rejected", extra={"order_id": "o-1", "reason": "max_qty"})
    line = buf.getvalue().strip()
    assert re.fullmatch(r"\S+Z INFO \[run-test-1 risk o-1\] rejected reason=max_qty", line), line
    assert sum(isinstance(h, logs._Handler) for h in logging.getLogger(logs.LOGGER).handlers) == 1  # replaced
    with pytest.raises(ValueError, match=r"^log\.format: "):
        logs.configure("xml")


def test_a_logger_shipped_by_value_configures_the_process_it_lands_in(tmp_path: Path) -> None:
    """An actor's code reaches its Ray worker pickled by value, with the loggers its methods use; unpickled in a
    fresh process whose environment holds the run's log settings, the logger writes the run's JSON lines there
    (a plain `logging.Logger` comes back unconfigured and drops INFO)."""
    import cloudpickle

    log = logs.get_logger("tradesys.actors")

    def start() -> None:  # what an actor's __init__ does
        log.info("ledger opened", extra={"ledger": "sqlite:///x.db"})

    (tmp_path / "fn.pkl").write_bytes(cloudpickle.dumps(start))
    env = {**os.environ, logs.FORMAT_ENV: "json", logs.LEVEL_ENV: "INFO", logs.RUN_ID_ENV: "run-pickled"}
    code = f"import pickle; pickle.loads(open({str(tmp_path / 'fn.pkl')!r}, 'rb').read())()"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    (line,) = [json.loads(x) for x in out.stderr.splitlines() if x.startswith("{")]
    assert (line["msg"], line["run_id"], line["ledger"]) == ("ledger opened", "run-pickled", "sqlite:///x.db")


_PUBLISHING_DRIVER = """
import sys, time
import ray
from tradesys import logs
if sys.argv[1] == "stderr":
    logs.ray_messages_to_stderr()
ray.init(address=sys.argv[2], log_to_driver=False, logging_level="ERROR")
from ray._private.utils import publish_error_to_driver
publish_error_to_driver("tradesys_test", sys.argv[3], ray._private.worker.global_worker.gcs_client)
time.sleep(3)  # Ray's listener thread prints it
print("done")
"""


@pytest.mark.ray
def test_ray_cluster_messages_go_to_stderr_not_the_commands_output(ray_session: None) -> None:
    """A cluster message Ray publishes to every driver (as for a node marked dead) reaches a plain driver's stdout,
    which broke `tradesys status --json`; after `ray_messages_to_stderr` it reaches stderr and stdout is the
    command's own."""
    import ray

    address = ray.get_runtime_context().gcs_address
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for mode in ("stdout", "stderr"):
        marker = f"tradesys-marker-{mode}-{os.getpid()}"
        out = subprocess.run([sys.executable, "-c", _PUBLISHING_DRIVER, mode, address, marker], env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        if mode == "stdout":  # Ray's own behaviour: the path this guards against exists
            assert marker in out.stdout, (out.stdout, out.stderr)
        else:
            assert out.stdout.strip() == "done" and marker in out.stderr, (out.stdout, out.stderr)


def test_log_settings_are_checked_and_name_the_field() -> None:
    from tradesys.config import ConfigError, load_config

    assert load_config().log.format == "json"
    with pytest.raises(ConfigError, match=r"^log\.format: "):
        load_config(overrides=["log.format=xml"])
    with pytest.raises(ConfigError, match=r"^log\.level: "):
        load_config(overrides=["log.level=LOUD"])


# ---------------------------------------------------------------- end to end: a run and the API, then grep


def _head(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str, Path]:
    """`ray start --head --block` on loopback with every port explicit and a temp dir of its own."""
    gcs = free_port()
    temp = Path("/tmp") / f"tslog{gcs}"  # Ray's socket paths must stay short
    flags = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
             "runtime-env-agent-port", "node-manager-port", "object-manager-port", "ray-client-server-port")
    cmd = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", f"--port={gcs}",
           "--node-ip-address=127.0.0.1", "--num-cpus=2", "--include-dashboard=false", f"--temp-dir={temp}",
           "--disable-usage-stats", '--resources={"head": 1}',  # ray.head_resource: the loop and the API pin to it
           *(f"--{f}={free_port()}" for f in flags)]
    out = tmp_path / "ray_start.log"
    proc = subprocess.Popen(cmd, env=env, stdout=out.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 900  # generous: over 400 s was seen on the shared 2-core machine at load 55
    while "Ray runtime started" not in out.read_text(errors="replace"):
        if proc.poll() is not None or time.time() > deadline:
            _stop(proc)
            shutil.rmtree(temp, ignore_errors=True)
            pytest.fail(f"the Ray head did not start: {out.read_text(errors='replace')[-2000:]}")
        time.sleep(0.3)
    return proc, f"127.0.0.1:{gcs}", temp


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """The head's whole process group (`ray start --block` and what it started): this head only, never `ray stop`."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
            return
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue


def _get(url: str, key: str | None) -> tuple[int, Any]:
    req = urllib.request.Request(url, headers={"X-API-Key": key} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def _json_lines(folder: Path) -> list[dict[str, Any]]:
    """Every line under `folder` that is a JSON object from a tradesys logger."""
    found = []
    for f in sorted({f.resolve() for f in folder.rglob("*") if f.is_file()}):  # session_latest links the session
        for line in f.read_bytes().decode(errors="replace").splitlines():
            if line.startswith("{") and '"logger":"tradesys' in line:
                found.append(json.loads(line))
    return found


@pytest.mark.slow
@pytest.mark.postgres
def test_run_and_api_logs_are_json_with_run_actor_order_and_hold_no_secret(pg_dsn: str, tmp_path: Path) -> None:
    import psycopg

    key = "tsk-" + os.urandom(12).hex()
    role, password = f"tslog_{os.getpid()}", "S3cretPw" + os.urandom(8).hex()
    schema = re.search(r"search_path%3D(\w+)", pg_dsn).group(1)  # type: ignore[union-attr]
    admin = psycopg.connect(pg_dsn.split("?")[0], autocommit=True)
    admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    admin.execute(f"GRANT USAGE, CREATE ON SCHEMA {schema} TO {role}")
    url = f"postgresql://{role}:{password}@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(os.urandom(32).hex())
    (home / ".ray" / "auth_token").chmod(0o600)
    base = {k: v for k, v in os.environ.items()
            if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN",
                         "TRADESYS_API_KEY", "TRADESYS_LOG_FORMAT", "TRADESYS_RUN_ID")}
    base.update(HOME=str(home), RAY_USAGE_STATS_ENABLED="0", TRADESYS_RUNS_DIR=str(tmp_path / "runs"),
                RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",  # drivers see themselves as 127.0.0.1, like the head
                RAY_AUTH_MODE="token",  # a driver joining by address sends the token only when told to
                RAY_raylet_start_wait_time_s="400")  # a loaded 2-core CI machine: the default 60 s was seen to expire
    head, address, temp = _head(tmp_path, base)
    summary_path = tmp_path / "summary.json"
    env = {**base, "TRADESYS_API_KEY": key}  # the drivers' environment holds the key, as a user's shell would
    serve: subprocess.Popen[str] | None = None
    try:
        live = subprocess.run(
            [TRADESYS, "live", "--json", "--out", str(summary_path), "-s", f'ray.address="{address}"',
             "-s", f'ledger.url="{url}"', *SHORT],
            env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path,
        )
        assert live.returncode == 0, live.stderr[-3000:]
        summary = json.loads(summary_path.read_text())
        assert summary["reason"] == "completed" and summary["orders"] > 0
        run_id = summary["run_id"]

        port = free_port()
        serve = subprocess.Popen(
            [TRADESYS, "serve", "--ledger", url, "--port", str(port)], env={**env, "RAY_ADDRESS": address},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path, start_new_session=True,
        )
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 400
        while True:
            try:
                if _get(f"{base_url}/health", None)[0] == 200:
                    break
            except OSError:
                pass
            assert serve.poll() is None and time.time() < deadline, "tradesys serve did not come up"
            time.sleep(1)
        status, body = _get(f"{base_url}/v1/orders?limit=5", key)
        assert status == 200 and len(body["orders"]) == 5, body
        order_ids = [o["client_order_id"] for o in body["orders"]]
        assert _get(f"{base_url}/v1/orders/{order_ids[0]}", key)[0] == 200
        assert _get(f"{base_url}/v1/portfolio", key)[0] == 200
        assert _get(f"{base_url}/v1/portfolio", key[:-1] + "x")[0] == 401  # a wrong key is refused, not logged
        serve.send_signal(signal.SIGINT)
        serve_out = serve.communicate(timeout=60)[0]
        serve = None
        time.sleep(2)  # the workers' last lines reach their files

        # 1. neither secret anywhere: every file of the head's session folder (logs and all), every file the
        # commands wrote in their working directory (summary, runs folder, access log), both commands' output, and
        # the ledger's own audit rows; the summary names the ledger with the password masked
        assert summary["ledger_url"] == url.replace(password, "***")
        from tradesys.ledger import open_ledger

        ledger = open_ledger(url)
        audit = json.dumps(ledger.audit_log(), default=str)
        ledger.close()
        assert "start" in audit and "shutdown" in audit
        written = {"live stdout": live.stdout, "live stderr": live.stderr, "serve output": serve_out,
                   "ledger audit rows": audit}
        files = [f for f in temp.rglob("*") if f.is_file() and not f.is_socket()]
        assert len(files) > 20 and any(f.name.startswith("worker-") for f in files)
        mine = [f for f in tmp_path.rglob("*") if f.is_file() and not f.is_socket()]
        assert summary_path in mine and any(f.name == "api_access.jsonl" for f in mine)
        for f in files + mine:
            written[str(f)] = f.read_bytes().decode(errors="replace")
        for secret, what in ((password, "database password"), (key, "API key")):
            hits = [name for name, text in written.items() if secret in text]
            assert hits == [], f"the {what} appears in {hits}"

        # 2. the lines are JSON, with run id and actor; every child and the API wrote some; order ids are there
        lines = _json_lines(temp)
        run_lines = [x for x in lines if x.get("run_id") == run_id]
        assert run_lines, f"no JSON line carries run id {run_id}"
        assert all(x["run_id"] in (run_id, None) for x in lines), {x["run_id"] for x in lines}
        assert {x["actor"] for x in run_lines} >= CHILDREN, {x["actor"] for x in run_lines}
        started = {(x["actor"], x["msg"]) for x in run_lines}
        assert set(START_LINES.items()) <= started, set(START_LINES.items()) - started
        assert all({"ts", "level", "logger", "msg", "pid"} <= set(x) for x in lines)
        sent = {x["order_id"] for x in run_lines if x["msg"] == "order sent" and x["actor"] == "execution"}
        assert sent and set(order_ids) <= {x.get("order_id") for x in run_lines}  # sent, or rejected by risk
        fills = [x for x in run_lines if x["msg"] == "venue event" and x.get("event") == "fill"]
        assert len(fills) == summary["fills"] and {x["order_id"] for x in fills} <= sent  # one line per booked fill
        api = [x for x in lines if x.get("actor") == "api"]
        assert any(x["msg"] == "API replica started" and x["ledger"] == url.replace(password, "***") for x in api)
    finally:
        if serve is not None:
            os.killpg(serve.pid, signal.SIGKILL)
        _stop(head)
        if os.environ.get("TRADESYS_KEEP_TEST_LOGS"):  # for a person debugging this test: keep the session folder
            shutil.copytree(temp, tmp_path / "session", dirs_exist_ok=True, ignore_dangling_symlinks=True,
                            ignore=shutil.ignore_patterns("*.sock", "sockets"))
        shutil.rmtree(temp, ignore_errors=True)
        admin.execute(f"DROP OWNED BY {role} CASCADE")
        admin.execute(f"DROP ROLE {role}")
        admin.close()
