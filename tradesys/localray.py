"""The local Ray cluster the CLI starts when no cluster is named: loopback only, and nothing left behind.

`ray.init()` cannot bind a new local cluster to loopback (it rewrites 127.0.0.1 to the machine's address, so the
runtime-env agent and the metrics endpoint listen on every interface). So the driver starts the head itself
with `ray start --head --block --node-ip-address=127.0.0.1` in a process group of its own, and joins it.

Nothing outlives the driver: a small watchdog process tears the group down when the driver dies (even by
`kill -9`), and every start first removes the leftovers of clusters whose driver and watchdog both died. A
state file per cluster (`$TRADESYS_STATE_DIR`, default `~/.tradesys/ray`) records the driver's pid and the
group; only process groups recorded there are ever signalled, so other Ray instances on the machine are safe.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"
SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def join_as_single_machine() -> None:
    """Make this driver see itself as 127.0.0.1, like the head started by `start_local_cluster`."""
    from ray._private import ray_constants

    os.environ[SINGLE_MACHINE_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False  # read when the driver resolves its own node address


def state_dir() -> Path:
    """Where the state files of the local clusters started by tradesys live."""
    return Path(os.environ.get("TRADESYS_STATE_DIR") or Path.home() / ".tradesys" / "ray")


def _free_ports(n: int) -> list[int]:
    """`n` distinct free loopback ports: the sockets stay bound until all are picked, so none is handed out twice
    (picking one port per component, each freed at once, let the kernel give two components the same port)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((LOOPBACK, 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def token_path() -> Path:
    """The token file Ray reads: `$RAY_AUTH_TOKEN_PATH`, else `~/.ray/auth_token`."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")


def ensure_private_token() -> Path | None:
    """Token auth on (unless RAY_AUTH_MODE says otherwise) with a token file only its owner can read (0600).

    Ray 2.60 writes `~/.ray/auth_token` world-readable (0644); anyone on the machine could then drive the
    cluster. An existing token is kept (other clusters may share it) but its mode is tightened.
    """
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token" or os.environ.get("RAY_AUTH_TOKEN"):
        return None
    if os.environ.get("RAY_AUTH_MODE") != "token":
        from ray._raylet import Config

        os.environ["RAY_AUTH_MODE"] = "token"  # the driver and the head it starts both use the token
        Config.initialize("")  # Ray read the mode when it was imported: refresh it
    path = token_path()
    if not path.exists():
        from ray._private.authentication.authentication_token_generator import generate_new_authentication_token

        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(generate_new_authentication_token())
    if stat.S_IMODE(path.stat().st_mode) != 0o600:
        path.chmod(0o600)
    return path


@dataclass
class LocalCluster:
    """A head node this process started; `stop()` tears down its whole process group."""

    address: str
    dashboard_url: str | None
    pgid: int
    temp_dir: Path
    state_file: Path
    proc: subprocess.Popen[bytes]

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM to the group (`ray start --block` shuts its node down), SIGKILL for what remains."""
        _kill_group(self.pgid, timeout_s)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self.state_file.unlink(missing_ok=True)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, start time in clock ticks since boot) from /proc, or None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[2]), int(fields[19])


def group_members(pgid: int, started_after: int = 0) -> list[int]:
    """Live processes of this user in the group (started at or after `started_after` ticks: no reused ids)."""
    uid = os.getuid()
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        st = proc_stat(int(entry.name))
        try:
            mine = entry.stat().st_uid == uid
        except OSError:
            continue
        if mine and st is not None and st[0] != "Z" and st[1] == pgid and st[2] >= started_after:
            members.append(int(entry.name))
    return members


def _kill_group(pgid: int, timeout_s: float) -> int:
    """Terminate every process of the group; return how many there were."""
    count = len(group_members(pgid))
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        if not group_members(pgid):
            break
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            break
        deadline = time.time() + wait_s
        while group_members(pgid) and time.time() < deadline:
            time.sleep(0.1)
    return count


def _alive(pid: int, start_ticks: int) -> bool:
    st = proc_stat(pid)
    return st is not None and st[0] != "Z" and st[2] == start_ticks


def cleanup_leftovers() -> list[str]:
    """Tear down clusters recorded by a driver that is gone (and whose watchdog died too); say what was done."""
    notes: list[str] = []
    root = state_dir()
    if not root.is_dir():
        return notes
    for f in sorted(root.glob("*.json")):
        try:
            rec = json.loads(f.read_text())
        except (OSError, ValueError):
            f.unlink(missing_ok=True)
            continue
        if _alive(rec["driver_pid"], rec["driver_start"]):
            continue  # a running tradesys driver owns it
        pgid = int(rec["pgid"])
        leftovers = group_members(pgid, rec["group_start"])
        if leftovers:
            _kill_group(pgid, 10.0)
            notes.append(
                f"stopped {len(leftovers)} leftover Ray process(es) of the local cluster started by tradesys "
                f"(driver pid {rec['driver_pid']}, session {rec.get('temp_dir')})"
            )
        shutil.rmtree(rec.get("temp_dir") or "/nonexistent", ignore_errors=True)
        f.unlink(missing_ok=True)
    return notes


def start_local_cluster(num_cpus: int | None, include_dashboard: bool, timeout_s: float = 120.0,
                        resources: dict[str, float] | None = None) -> LocalCluster:
    """Start a head bound to loopback in its own process group, plus its watchdog; wait until it is up.

    `resources`: custom resources the head declares (`placement.local_head_resources`: the head resource).
    """
    flags = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
             "runtime-env-agent-port", "node-manager-port", "object-manager-port", "ray-client-server-port")
    gcs, spare_dash, *ports = _free_ports(2 + len(flags))
    dash = 8265 if _port_free(8265) else spare_dash
    temp = Path(tempfile.mkdtemp(prefix=f"tsray{gcs}-", dir="/tmp"))  # Ray's socket paths must stay short
    ray_bin = str(Path(sys.executable).with_name("ray"))
    cmd = [
        ray_bin, "start", "--head", "--block", f"--port={gcs}", f"--node-ip-address={LOOPBACK}",
        f"--temp-dir={temp}", "--disable-usage-stats", f"--include-dashboard={str(include_dashboard).lower()}",
        f"--dashboard-host={LOOPBACK}", f"--dashboard-port={dash}",
        # every port explicit: the defaults (e.g. the agent's 52365) clash with other Ray instances here
        *(f"--{flag}={port}" for flag, port in zip(flags, ports, strict=True)),
    ]
    if num_cpus is not None:
        cmd.append(f"--num-cpus={num_cpus}")
    if resources:
        cmd.append(f"--resources={json.dumps(resources)}")
    # Single-machine mode (what Ray uses on macOS/Windows): the node's address is loopback, so the agents and
    # the metrics endpoint bind 127.0.0.1 instead of every interface.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", SINGLE_MACHINE_ENV: "0"}
    env.pop("RAY_ADDRESS", None)
    log = temp / "ray_start.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    me, head = proc_stat(os.getpid()), proc_stat(proc.pid)
    root = state_dir()
    root.mkdir(parents=True, exist_ok=True)
    state_file = root / f"{proc.pid}.json"
    state_file.write_text(json.dumps({
        "driver_pid": os.getpid(), "driver_start": me[2] if me else 0, "pgid": proc.pid,
        "group_start": head[2] if head else 0, "temp_dir": str(temp), "address": f"{LOOPBACK}:{gcs}",
    }))
    subprocess.Popen(
        [sys.executable, "-m", "tradesys.localray", str(os.getpid()), str(me[2] if me else 0), str(proc.pid),
         str(state_file), str(temp)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    cluster = LocalCluster(f"{LOOPBACK}:{gcs}", f"http://{LOOPBACK}:{dash}" if include_dashboard else None,
                           proc.pid, temp, state_file, proc)
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        text = log.read_text(errors="replace")
        if "Ray runtime started" in text:
            return cluster
        if proc.poll() is not None:
            cluster.stop(5)
            tail = " | ".join(line.strip() for line in text.splitlines()[-3:] if line.strip())
            raise RuntimeError(f"ray start exited with {proc.returncode}: {tail}")
        time.sleep(0.2)
    cluster.stop(5)
    raise RuntimeError(f"the local Ray head did not start within {timeout_s:.0f} s (log: {log})")


def start_for_driver(
    num_cpus: int | None, include_dashboard: bool, say: Callable[[str], None] = lambda _m: None,
    resources: dict[str, float] | None = None,
) -> LocalCluster:
    """What a driver does before `ray.init` when no cluster is named: remove the leftovers of earlier clusters
    (saying so), keep the token private, start a loopback-only head, and join it as 127.0.0.1."""
    for note in cleanup_leftovers():
        say(note)
    ensure_private_token()
    say("Starting a local Ray cluster on 127.0.0.1 ...")
    cluster = start_local_cluster(num_cpus, include_dashboard, resources=resources)
    join_as_single_machine()
    return cluster


def init_local(num_cpus: int | None = None, include_dashboard: bool = False,
               say: Callable[[str], None] = lambda _m: None, resources: dict[str, float] | None = None) -> LocalCluster:
    """`ray.init` on a loopback-only local head started here; it stops when this process exits (the watchdog
    also tears it down if the process is killed). For CLI commands other than the live loop (training)."""
    import atexit

    import ray

    from tradesys.logs import ray_messages_to_stderr

    cluster = start_for_driver(num_cpus, include_dashboard, say, resources)
    try:
        ray_messages_to_stderr()  # stdout is the command's output (--json)
        ray.init(address=cluster.address, log_to_driver=False)
    except BaseException:
        cluster.stop(5.0)
        raise

    def _stop() -> None:
        ray.shutdown()
        cluster.stop(5.0)

    atexit.register(_stop)
    return cluster


def _watch(driver_pid: int, driver_start: int, pgid: int, state_file: Path, temp_dir: Path) -> None:
    """Wait for the driver to die (or the state file to go: a clean stop), then tear the group down."""
    while _alive(driver_pid, driver_start):
        if not state_file.exists():
            return
        time.sleep(0.5)
    if state_file.exists():
        _kill_group(pgid, 15.0)
        state_file.unlink(missing_ok=True)
        shutil.rmtree(temp_dir, ignore_errors=True)


if __name__ == "__main__":
    _watch(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5]))
