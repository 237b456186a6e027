"""Killable compute for single-shot HTTP routes: the numerics run in a child process, killed when nobody waits.

Why: a thread cannot be stopped, so a route whose work is one indivisible call (a cvxpy solve, a VaR over a long
P&L vector, a surface fit) kept a core busy after its client hung up or its time budget ran out. Batch routes cut
their rows into chunks instead (`limits.run_chunked`); the others run here.

`WorkerPool` keeps warm child processes: each is a fresh interpreter (``python -m tradesys.compute FD``: not a
fork of a threaded Ray worker, and no re-run of the parent's ``__main__`` as multiprocessing's spawn would do) that
imports the modules in its preload list once (the route modules, whose functions the pickled calls name), then
answers calls over a socket pair. A replacement for a killed child starts in the background, so that import is
paid off the request path. A call takes an idle child, sends
it the pickled callable and waits for the answer; `abandon` (client gone, deadline passed) kills that child and a
replacement starts in the background. Children exit when their parent goes (their socket closes). A child that dies
mid-call (killed by the OS, a segfault in a solver) is an error for that call only.

Callables must pickle: pass module-level functions with `functools.partial`, not lambdas. Exceptions come back
as raised in the child (a ValueError stays a ValueError, so routes map them to 422 as before); one that does not
pickle comes back as a RuntimeError with its text.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import pickle
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

# Imported once by the forkserver, so each child starts with the route numerics loaded.
PRELOAD = ["tradesys.serve.risk", "tradesys.quant.vol.chain"]


class WorkerDied(RuntimeError):
    """The child process ended before answering (killed, or crashed in native code)."""


def _child(conn: Connection, preload: list[str]) -> None:
    for name in preload:
        importlib.import_module(name)
    while True:
        try:
            fn = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        try:
            reply: tuple[str, Any] = ("ok", fn())
        except BaseException as exc:  # every failure is the caller's to see
            reply = ("err", exc if _round_trips(exc) else RuntimeError(f"{type(exc).__name__}: {exc}"))
        try:
            conn.send(reply)
        except Exception as exc:  # an answer or exception that does not pickle
            conn.send(("err", RuntimeError(f"{type(exc).__name__}: {exc}")))


def _round_trips(exc: BaseException) -> bool:
    """Whether the exception unpickles as itself in the parent (one whose __init__ takes other arguments than its
    args would fail there instead, as a confusing error of its own)."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return False
    return True


class _Worker:
    def __init__(self, preload: list[str]) -> None:
        ours, theirs = socket.socketpair()
        with theirs:
            argv = [sys.executable, "-m", "tradesys.compute", str(theirs.fileno()), *preload]
            self.proc = subprocess.Popen(argv,
                                         pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        self.conn = Connection(ours.detach())

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.conn.close()
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=5)


class Call:
    """One call in flight in one child; await `result()`, or `abandon()` to kill the child."""

    def __init__(self, pool: WorkerPool, worker: _Worker) -> None:
        self._pool, self._worker, self._done = pool, worker, False

    async def wait(self, timeout: float) -> bool:
        """True once the answer is ready (or the child died), False after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        fd = self._worker.conn.fileno()

        def on_ready() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(fd, on_ready)
        try:
            await asyncio.wait_for(asyncio.shield(ready), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            loop.remove_reader(fd)
            os.set_blocking(fd, True)  # uvloop's add_reader leaves the socket non-blocking; send/recv expect blocking

    def result(self) -> Any:
        """The answer (call after `wait` returned True); the child goes back to the pool."""
        w = self._worker
        try:
            status, value = w.conn.recv()
        except (EOFError, OSError):
            self._finish(reuse=False)
            raise WorkerDied(f"the compute process ended without answering (exit code {w.proc.poll()})") from None
        self._finish(reuse=True)
        if status == "err":
            raise value
        return value

    def abandon(self) -> None:
        """Nobody wants the answer: kill the child so its CPU is free at once."""
        self._finish(reuse=False)

    def _finish(self, reuse: bool) -> None:
        if self._done:
            return
        self._done = True
        with self._pool._lock:
            self._pool._busy.pop(self._worker.proc.pid, None)
        if reuse:
            self._pool._release(self._worker)
        else:
            self._pool.killed += 1
            self._worker.kill()
            self._pool.replenish()


class WorkerPool:
    """Warm child processes, each running one call at a time (see the module docstring)."""

    def __init__(self, max_idle: int = 4, preload: list[str] | None = None) -> None:
        self.max_idle = max_idle
        self.preload = list(PRELOAD if preload is None else preload)
        self._idle: list[_Worker] = []
        self._busy: dict[int, _Worker] = {}
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self.started = 0
        self.killed = 0

    def submit(self, fn: Callable[[], Any]) -> Call:
        """Send `fn` to an idle child (starting one if none is idle)."""
        worker = self._take()
        try:
            worker.conn.send(fn)
        except BaseException:
            worker.kill()
            raise
        with self._lock:
            self._busy[worker.proc.pid] = worker
        return Call(self, worker)

    def busy_pids(self) -> list[int]:
        """The process ids of the children running a call now (for tests and process metrics)."""
        with self._lock:
            return list(self._busy)

    def prestart(self, n: int = 1) -> None:
        """Start `n` idle children now (the forkserver's imports happen once, here, instead of in a request)."""
        for _ in range(n):
            self._release(self._start())

    def replenish(self) -> None:
        """Start a replacement for a killed child in the background, so the next call finds one warm."""
        threading.Thread(target=self.prestart, daemon=True, name="tradesys-compute-replenish").start()

    def _start(self) -> _Worker:
        self.started += 1
        return _Worker(self.preload)

    def _take(self) -> _Worker:
        with self._lock:
            while self._idle:
                w = self._idle.pop()
                if w.alive():
                    return w
                w.kill()
        return self._start()

    def _release(self, worker: _Worker) -> None:
        with self._lock:
            if len(self._idle) < self.max_idle and worker.alive():
                self._idle.append(worker)
                return
        worker.kill()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for w in idle:
            w.kill()


_POOL: WorkerPool | None = None
_POOL_LOCK = threading.Lock()


def shared_pool() -> WorkerPool:
    """This process's pool (a forked process gets its own)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._pid != os.getpid():
            _POOL = WorkerPool()
        return _POOL


def warm_up_in_background() -> None:
    """Start this process's pool and one idle child in a daemon thread, so the forkserver's imports (a few
    seconds) happen while the app starts, not in its first request."""
    pool = shared_pool()
    if pool.started == 0:
        threading.Thread(target=pool.prestart, daemon=True, name="tradesys-compute-warmup").start()


if __name__ == "__main__":
    _child(Connection(int(sys.argv[1])), sys.argv[2:])
