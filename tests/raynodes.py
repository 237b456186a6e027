"""Real Ray nodes for the cluster tests: `ray start --block` heads and workers on this machine, each in a process
group of its own, so a test can kill one node (or the head's GCS) by PID without touching any other Ray here.

Never `ray stop`: it kills every Ray on the machine. Ports are all explicit (the defaults clash with other Ray
instances on this machine) and never 6379 (the machine's Redis).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# `ray start` gives a new raylet a fixed 30 s to appear in the GCS node table (ray/_private/node.py), which a loaded
# 2-core machine misses; the same CLI, with that lookup retried for up to 4 minutes
_PATIENT_RAY = """
import sys, time
import ray._private.services as services
_get_node = services.get_node
def get_node(*args, **kwargs):
    deadline = time.monotonic() + 240
    while True:
        try:
            return _get_node(*args, **kwargs)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)
services.get_node = get_node
from ray.scripts.scripts import main
sys.argv = ["ray", *sys.argv[1:]]
sys.exit(main())
"""
RAY_CLI = [sys.executable, "-c", _PATIENT_RAY]
_PORT_FLAGS = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
               "runtime-env-agent-port", "node-manager-port", "object-manager-port")


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def proc_group(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else int(fields[2])


def group_pids(pgid: int) -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and proc_group(int(p.name)) == pgid]


def kill_group(pgid: int, grace_s: float = 5.0) -> None:
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.time() + wait
        while group_pids(pgid) and time.time() < deadline:
            time.sleep(0.1)
        if not group_pids(pgid):
            return


@dataclass
class Node:
    """One `ray start --block` node; its process group holds every process of the node."""

    proc: subprocess.Popen[bytes]
    log: Path
    temp_dir: Path
    gcs_port: int
    dashboard_port: int | None = None
    extra_pids: list[int] = field(default_factory=list)

    @property
    def pgid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL the whole node at once: a machine that vanished (no clean shutdown)."""
        for pid in self.extra_pids:
            kill_group(pid, grace_s=0.0)
        kill_group(self.pgid, grace_s=0.0)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        for pid in self.extra_pids:
            kill_group(pid)
        kill_group(self.pgid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def pids(self, name: str) -> list[int]:
        """PIDs of this node whose command line contains `name` (e.g. "gcs_server", "raylet")."""
        out = []
        for pid in group_pids(self.pgid):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and name in Path(argv[0].decode(errors="replace")).name:
                out.append(pid)
        return out


def _start(cmd: list[str], env: dict[str, str], log: Path, temp: Path, gcs: int, dash: int | None,
           timeout_s: float) -> Node:
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    node = Node(proc, log, temp, gcs, dash)
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if "Ray runtime started" in log.read_text(errors="replace"):
            return node
        if proc.poll() is not None:
            kill_group(proc.pid, grace_s=1.0)  # what it started before giving up
            raise RuntimeError(f"ray start exited with {proc.returncode}: {log.read_text()[-2000:]}")
        time.sleep(0.3)
    node.stop()
    raise TimeoutError(f"ray start did not finish within {timeout_s} s: {log}")


def _retried(start: Any, attempts: int = 5) -> Node:
    """`ray start` gives the raylet a fixed 30 s to register, which a loaded 2-core machine can miss: try again."""
    for attempt in range(attempts):
        try:
            return start()  # type: ignore[no-any-return]
        except RuntimeError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def start_head(tmp: Path, env: dict[str, str], resources: dict[str, float], num_cpus: int = 0,
               timeout_s: float = 420.0, block: bool = True) -> Node:
    """A head node. `block=False` for a head whose GCS a test kills: `ray start --block` tears the whole node down
    when one of its processes dies; without it `ray start` returns and the node's processes stay in its group."""
    return _retried(lambda: _start_head(tmp, env, resources, num_cpus, timeout_s, block))


def start_worker(tmp: Path, env: dict[str, str], gcs_address: str, resources: dict[str, float], num_cpus: int = 1,
                 timeout_s: float = 420.0) -> Node:
    return _retried(lambda: _start_worker(tmp, env, gcs_address, resources, num_cpus, timeout_s))


def _start_head(tmp: Path, env: dict[str, str], resources: dict[str, float], num_cpus: int,
                timeout_s: float, block: bool) -> Node:
    gcs, dash, client, *ports = free_ports(3 + len(_PORT_FLAGS))
    temp = Path("/tmp") / f"tsh{gcs}"  # Ray's socket paths must stay short
    cmd = [*RAY_CLI, "start", "--head", *(["--block"] if block else []), f"--port={gcs}", "--node-ip-address=127.0.0.1",
           f"--num-cpus={num_cpus}", f"--resources={json.dumps(resources)}", f"--temp-dir={temp}",
           "--disable-usage-stats", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
           f"--dashboard-port={dash}", f"--ray-client-server-port={client}",
           *(f"--{flag}={port}" for flag, port in zip(_PORT_FLAGS, ports, strict=True))]
    return _start(cmd, env, tmp / f"head-{gcs}.log", temp, gcs, dash, timeout_s)


def _start_worker(tmp: Path, env: dict[str, str], gcs_address: str, resources: dict[str, float], num_cpus: int,
                  timeout_s: float) -> Node:
    ports = free_ports(len(_PORT_FLAGS))
    cmd = [*RAY_CLI, "start", "--block", f"--address={gcs_address}", "--node-ip-address=127.0.0.1",
           f"--num-cpus={num_cpus}", f"--resources={json.dumps(resources)}", "--disable-usage-stats",
           *(f"--{flag}={port}" for flag, port in zip(_PORT_FLAGS, ports, strict=True))]
    return _start(cmd, env, tmp / f"worker-{ports[0]}.log", Path("/tmp"), 0, None, timeout_s)


def restart_gcs(head: Node, down_s: float = 3.0) -> tuple[int, int]:
    """SIGKILL the head's gcs_server and start it again with its own command line, environment and working
    directory read from /proc (a plain `ray start` head does not restart it). Return (old pid, new pid)."""
    (pid,) = head.pids("gcs_server")
    argv = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    env = dict(line.decode(errors="replace").split("=", 1)
               for line in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in line)
    cwd = os.readlink(f"/proc/{pid}/cwd")
    os.kill(pid, signal.SIGKILL)
    while proc_group(pid) is not None:
        time.sleep(0.05)
    time.sleep(down_s)
    with open(head.log.with_suffix(".gcs-restart.log"), "ab") as out:
        new = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    head.extra_pids.append(new.pid)  # its own group (another session's group cannot be joined): stop() kills it
    return pid, new.pid
