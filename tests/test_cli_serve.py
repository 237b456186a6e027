"""`tradesys serve` does what its settings say: the key variable, port and body cap of the `serve` section reach
the running API, and `--rl-policy` serves that policy at /v1/rl/act (a real Serve instance on loopback, started as
a user starts it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port

TRADESYS = str(Path(sys.executable).with_name("tradesys"))


def _post(url: str, body: bytes, key: str | None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    if key is not None:
        req.add_header("X-API-Key", key)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_serve_without_the_key_variable_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("TRADESYS_API_KEY", "MY_DESK_KEY")}
    r = subprocess.run([TRADESYS, "serve", "-s", 'serve.api_key_env="MY_DESK_KEY"'], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("config error: serve.api_key_env: $MY_DESK_KEY is not set")


@pytest.mark.slow
def test_serve_settings_reach_the_running_api(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("TRADESYS_API_KEY", "RAY_ADDRESS")}
    env["MY_DESK_KEY"] = "desk-secret"
    log = tmp_path / "serve.log"
    from tradesys.config import DataConfig
    from tradesys.rl.env import PortfolioEnv, RLEnvConfig
    from tradesys.rl.market import market_from_source
    from tradesys.rl.policy import export_policy, load_policy

    from .test_rl_policy import build_module
    from .test_serve_rl import _obs

    market = market_from_source(DataConfig(source="synthetic", synthetic_days=2, seed=11))
    rl_cfg = RLEnvConfig(window=4, episode_length=None, action_mode="clip", max_weight=0.3)
    rl_env = PortfolioEnv(rl_cfg, market)
    export_policy(build_module(rl_env, tmp_path / "module"), tmp_path / "policy", env=rl_cfg, symbols=market.symbols)
    args = [TRADESYS, "serve", "-s", f"serve.port={port}", "-s", 'serve.api_key_env="MY_DESK_KEY"',
            "-s", "serve.max_json_body_bytes=65536", "--rl-policy", str(tmp_path / "policy")]  # fmt: skip
    with open(log, "wb") as fh:
        proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None and "Serving on" not in log.read_text():
            time.sleep(0.5)
        assert proc.poll() is None, log.read_text()[-2000:]
        assert f"Serving on http://127.0.0.1:{port}" in log.read_text()
        url = f"http://127.0.0.1:{port}/v1/options/price"
        small = json.dumps({"S": [100.0], "K": 100.0, "T": 0.5, "r": 0.0, "q": 0.0, "sigma": 0.2, "type": "C"})
        status, body = _post(url, small.encode(), "desk-secret")
        assert status == 200, body
        assert _post(url, small.encode(), None)[0] == 401
        big = json.dumps({"S": [100.0] * 20_000, "K": 100.0, "T": 0.5, "sigma": 0.2, "type": "C"}).encode()
        assert len(big) > 65536
        status, body = _post(url, big, "desk-secret")
        assert status == 413 and body["detail"][0]["field"] == "body", body
        x = _obs(rl_env, 3)
        status, body = _post(f"http://127.0.0.1:{port}/v1/rl/act", json.dumps({"observations": x.tolist()}).encode(),
                             "desk-secret")
        assert status == 200, body
        import numpy as np

        np.testing.assert_allclose(np.array(body["weights"]), load_policy(tmp_path / "policy").act(x), atol=1e-12)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=90) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
