"""The live driver's contract with the user: settings checked before Ray starts, one-line errors from inside the
actors, a resume command when the Supervisor dies, and nothing of the local cluster left behind or exposed.

Everything runs for real: Ray (the session fixture, or a local cluster the driver starts in a subprocess with
its own HOME), SQLite and PostgreSQL ledgers, `kill -9`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import ray

from tradesys.config import DataError, load_config
from tradesys.data import make_source
from tradesys.ledger import open_ledger
from tradesys.live import RunError, resume_command, run_live, user_error

from .ledger_checks import assert_ledger_consistent, closes_by_ts

ROOT = Path(__file__).resolve().parents[1]
SHORT = ["-s", "data.start=2019-06-01", "-s", "data.end=2020-09-30", "-s", "strategy.slow=60",
         "-s", "ray.num_cpus=2", "-s", "ray.include_dashboard=false"]


def _env(tmp_path: Path) -> dict[str, str]:
    """A private HOME (token, state files, default runs dir) so the run touches nothing of this machine's."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
    return {**env, "HOME": str(home), "TRADESYS_RUNS_DIR": str(tmp_path / "runs"), "RAY_USAGE_STATS_ENABLED": "0"}


# ---------------------------------------------------------------- settings checked before anything starts


def test_unknown_symbol_is_one_line_before_ray_starts(tmp_path: Path) -> None:
    """Issue 10 item 2: no Ray, no run directory, no traceback; the field and the symbols it could be."""
    env = _env(tmp_path)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "jobs" / "live.py"), "--quiet", "-s", 'data.symbols=["ZZZZ","AAPL"]'],
        env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("config error: data.symbols: unknown symbol 'ZZZZ'") and "AAPL" in lines[0]
    assert proc.stdout == ""
    assert not (tmp_path / "runs").exists() and not (tmp_path / "runs_relative").exists()
    assert not (Path(env["HOME"]) / ".tradesys").exists(), "a local Ray cluster was started"
    assert not (Path(env["HOME"]) / ".ray").exists(), "Ray was started"


# ---------------------------------------------------------------- errors raised inside the actors


@ray.remote(num_cpus=0)
class _Feed:
    def next_batch(self) -> None:
        raise DataError("data.source: the feed closed")


@ray.remote(num_cpus=0)
class _Parent:
    """Like the Supervisor: calls a child from one of its methods."""

    def __init__(self) -> None:
        self.child = _Feed.remote()

    def run(self) -> None:
        ray.get(self.child.next_batch.remote())


def test_errors_inside_nested_actors_become_one_line(ray_session: None, tmp_path: Path) -> None:
    """A data source failing inside the Supervisor's child (ActorDiedError text, nested twice) and a data error
    raised by a child's method (RayTaskError chain) reach the user as one line naming the setting."""
    from tradesys.actors.supervisor import Supervisor

    cfg = load_config(None, ['data.symbols=["ZZZZ","AAPL"]'])
    url = f"sqlite:///{tmp_path}/never.db"
    sup = Supervisor.remote(cfg, url, "t-nested")  # bypasses check_settings: the source fails in the actor
    with pytest.raises(ray.exceptions.ActorDiedError) as died:
        ray.get(sup.progress.remote())
    assert len(str(died.value).splitlines()) > 10  # what the user used to see
    err = user_error(died.value, cfg, url, "tradesys live")
    assert isinstance(err, DataError)
    assert str(err).startswith("data.symbols: source sp500_stocks failed: sp500_stocks: unknown symbol(s) ['ZZZZ']")
    assert "\n" not in str(err)
    with pytest.raises(ray.exceptions.RayTaskError) as raised:
        ray.get(_Parent.remote().run.remote())
    err = user_error(raised.value, cfg, url, "tradesys live")
    assert isinstance(err, DataError) and str(err) == "data.source: the feed closed"


def test_resume_command_is_the_same_command_on_the_same_ledger() -> None:
    argv = ["/venv/bin/tradesys", "live", "-s", 'ledger.url="sqlite:///old.db"', "-s", "risk.max_order_qty=5"]
    cmd = resume_command("postgresql://u:s3cret@db:5432/prod", argv)
    assert cmd == "tradesys live -s risk.max_order_qty=5 -s 'ledger.url=\"postgresql://u:***@db:5432/prod\"'"
    assert resume_command("sqlite:////r/l.db", ["jobs/live.py", "--quiet"]) == (
        "python jobs/live.py --quiet -s 'ledger.url=\"sqlite:////r/l.db\"'"
    )


@pytest.mark.ray
def test_killed_supervisor_says_how_to_resume_and_the_resume_finishes(ray_session: None, tmp_path: Path) -> None:
    """Issue 11 item 5: killing the Supervisor ends the run with one line carrying the resume command; running
    that command's ledger again completes the data with exact books."""
    db = tmp_path / "sup.db"
    overrides = {"data.start": "2019-06-01", "data.end": "2020-09-30", "strategy.slow": 60}
    cfg = load_config(None, [f"{k}={v}" for k, v in {**overrides, "data.speed": 150.0}.items()]
                      + [f'ledger.url="sqlite:///{db}"'])
    out: dict[str, BaseException] = {}

    def drive() -> None:
        try:
            run_live(cfg, show_progress=False, run_id="t-supkill")
        except BaseException as exc:  # handed to the test thread
            out["error"] = exc

    t = threading.Thread(target=drive)
    t.start()
    sup = None
    deadline = time.time() + 60
    while sup is None and time.time() < deadline:
        try:
            sup = ray.get_actor("t-supkill:supervisor")
        except ValueError:
            time.sleep(0.1)
    assert sup is not None
    while ray.get(sup.progress.remote())["step"] < 40:
        time.sleep(0.05)
    ray.kill(sup)
    t.join(timeout=120)
    assert not t.is_alive()
    err = out["error"]
    assert isinstance(err, RunError), repr(err)
    msg = str(err)
    assert "\n" not in msg and msg.startswith("the Supervisor actor died")
    m = re.search(r"resume with: .*-s 'ledger\.url=\"(sqlite:///[^\"]+)\"'$", msg)
    assert m and m.group(1) == f"sqlite:///{db}", msg
    resumed = run_live(load_config(None, [f"{k}={v}" for k, v in overrides.items()]
                                   + [f'ledger.url="{m.group(1)}"']), show_progress=False, run_id="t-supresume")
    source = make_source(cfg.data)
    assert resumed["reason"] == "completed" and resumed["steps"] == len(source)
    assert_ledger_consistent(open_ledger(m.group(1)), cfg.initial_cash, closes_by_ts(source))


# ---------------------------------------------------------------- secrets


# ---------------------------------------------------------------- the local cluster the CLI starts


def _descendants(pid: int) -> set[int]:
    """Every process below `pid` (from /proc), at this moment."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def _alive(pids: set[int]) -> set[int]:
    from tradesys.localray import proc_stat

    return {p for p in pids if (st := proc_stat(p)) is not None and st[0] != "Z"}


def _listening(pids: set[int]) -> list[str]:
    """Local addresses the processes listen on (TCP), from `ss`."""
    text = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    out = []
    for line in text.splitlines():
        if any(f"pid={p}," in line for p in pids):
            out.append(line.split()[3])
    return out


def _wait_for(pred: object, timeout_s: float, what: str) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _booked(db: Path) -> int:
    import sqlite3

    try:
        with sqlite3.connect(db) as c:
            return int(c.execute("select count(*) from equity_curve").fetchone()[0])
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_local_cluster_is_loopback_only_private_and_dies_with_a_killed_driver(tmp_path: Path) -> None:
    """Issue 11 items 4 and 11: the cluster `tradesys live` starts listens on loopback only and its token is
    0600; after `kill -9` of the driver, every process of that cluster is gone within seconds."""
    env = _env(tmp_path)
    db = tmp_path / "k.db"
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("tradesys")), "live", "-s", f'ledger.url="sqlite:///{db}"',
         "-s", "data.speed=20", *SHORT],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path,
    )
    try:
        _wait_for(lambda: _booked(db) > 5, 240, "the live loop to book steps")
        time.sleep(2)  # the agents are up by now
        tree = _descendants(proc.pid)
        assert len(tree) >= 4  # gcs, raylet, agents, workers
        addrs = _listening(tree)
        assert addrs, "the cluster listens on nothing?"
        exposed = [a for a in addrs if not re.match(r"^(127\.0\.0\.1|\[::ffff:127\.0\.0\.1\]|\[::1\]):\d+$", a)]
        assert exposed == [], f"listening beyond loopback: {exposed}"
        token = Path(env["HOME"]) / ".ray" / "auth_token"
        assert token.stat().st_mode & 0o777 == 0o600
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        _wait_for(lambda: not _alive(tree), 60, f"the cluster's processes {sorted(_alive(tree))} to exit")
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_next_start_cleans_leftovers_of_a_cluster_whose_driver_and_watchdog_died(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11 item 4, second line of defence: only the recorded group is stopped, and the user is told."""
    from tradesys import localray

    env = _env(tmp_path)
    state = Path(env["HOME"]) / ".tradesys" / "ray"
    script = (
        "import time; from tradesys import localray; localray.ensure_private_token(); "
        "c = localray.start_local_cluster(1, False); print(c.pgid, flush=True); time.sleep(600)"
    )
    driver = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        pgid = int(driver.stdout.readline())  # type: ignore[union-attr]
        members = set(localray.group_members(pgid))
        assert members
        watchdogs = [p for p in _descendants(1) if _cmdline(p).count("tradesys.localray") and str(pgid) in _cmdline(p)]
        assert len(watchdogs) == 1
        os.kill(watchdogs[0], signal.SIGKILL)
        driver.kill()
        driver.wait(timeout=10)
        time.sleep(3)
        assert _alive(members), "the group died without the cleanup: the test proves nothing"
        monkeypatch.setenv("TRADESYS_STATE_DIR", str(state))
        # a state file whose driver is alive (this test process) is another run's cluster: left alone
        me = localray.proc_stat(os.getpid())
        assert me is not None
        (state / "999999.json").write_text(json.dumps(
            {"driver_pid": os.getpid(), "driver_start": me[2], "pgid": os.getpgid(0), "group_start": 0}))
        notes = localray.cleanup_leftovers()
        assert len(notes) == 1 and f"driver pid {driver.pid}" in notes[0] and "leftover Ray process" in notes[0]
        assert not _alive(members)
        assert [f.name for f in state.glob("*.json")] == ["999999.json"]
        assert localray.cleanup_leftovers() == []
    finally:
        if driver.poll() is None:
            driver.kill()
        for p in _alive(set(localray.group_members(pgid))) if "pgid" in locals() else ():
            os.kill(p, signal.SIGKILL)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_local_cluster_ports_are_distinct() -> None:
    """Each of Ray's components gets its own port: picking them one at a time, each socket freed at once, let the
    kernel hand two components the same port and `ray start` refused to start (seen in the README test)."""
    from tradesys.localray import _free_ports

    for _ in range(50):
        ports = _free_ports(9)
        assert len(set(ports)) == 9
