"""RL policy inference latency at batch 1: directly (`load_policy().act`) and through `POST /v1/rl/act` (issue 12).

The policy is RLlib's default PPO RLModule (MLP 64x64 tanh, what `tradesys rl train` builds by default), untrained
(latency does not depend on the weights), for the 20 stocks of the shipped S&P 500 data set with the built-in
features and window 20: observation size 20 x 20 x 6 + 20 + 1 = 2,421. It is exported with
`tradesys.rl.policy.export_policy` and timed on:

1. ``rlmodule``: `tradesys.rl.train.RLPolicy` (the RLModule's ``forward_inference`` in eager torch + unsquash), the
   reference (actions only, no weights);
2. ``onnxruntime`` / ``torch``: `load_policy(path, backend).act(obs)` (graph + the env's action -> weights mapping),
   one intra-op thread;
3. ``http-testclient``: `POST /v1/rl/act` with one observation through FastAPI's TestClient (in process: JSON, auth,
   validation, no network);
4. ``http-uvicorn``: the same app served by uvicorn on 127.0.0.1 (one worker, in a thread of this process),
   requests from httpx with keep-alive (``--no-uvicorn`` skips it).

Each figure: --n timed calls after --warmup untimed ones, on observations taken from the environment; p50, p99 and
mean in milliseconds. The 1-minute load average is printed with the results: the machine is shared, and figures
taken under load are upper bounds.

    .venv/bin/python benchmarks/rl_inference.py [--n 2000] [--warmup 200] [--no-uvicorn]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from tradesys.config import DataConfig
from tradesys.rl.env import PortfolioEnv, RLEnvConfig
from tradesys.rl.market import market_from_source
from tradesys.rl.policy import export_policy, load_policy

KEY = "bench-key"


def timed(fn: Callable[[np.ndarray], Any], xs: np.ndarray, n: int, warmup: int) -> dict[str, float]:
    for i in range(warmup):
        fn(xs[i % len(xs)])
    t = np.empty(n)
    for i in range(n):
        x = xs[i % len(xs)]
        t0 = time.perf_counter()
        fn(x)
        t[i] = time.perf_counter() - t0
    ms = t * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "n": n}  # fmt: skip


def build(tmp: Path) -> tuple[Path, np.ndarray, int]:
    import torch
    from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    market = market_from_source(DataConfig(source="sp500_stocks", start=date(2015, 1, 1), end=date(2018, 12, 31)))
    cfg = RLEnvConfig(window=20, episode_length=None)
    env = PortfolioEnv(cfg, market)
    torch.manual_seed(0)
    spec = RLModuleSpec(module_class=DefaultPPOTorchRLModule, observation_space=env.observation_space,
                        action_space=env.action_space,
                        model_config=DefaultModelConfig(fcnet_hiddens=[64, 64], fcnet_activation="tanh"))
    spec.build().save_to_path(str(tmp / "module"))
    export_policy(tmp / "module", tmp / "export", env=cfg, symbols=market.symbols)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    rows = [obs]
    for _ in range(255):
        obs, *_ = env.step(rng.uniform(-1, 1, env.action_space.shape))
        rows.append(obs)
    return tmp / "export", np.stack(rows), market.n_assets


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--no-uvicorn", action="store_true")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as d:
        path, xs, n_assets = build(Path(d))
        print(f"policy: {n_assets} assets, obs_dim {xs.shape[1]}, MLP 64x64 tanh; torch {torch.__version__}")
        from tradesys.rl.train import RLPolicy

        ref = RLPolicy.from_checkpoint(Path(d) / "module")
        results["rlmodule (eager, actions)"] = timed(lambda x: ref(x[None, :]), xs, args.n, args.warmup)
        for backend in ("onnxruntime", "torch"):
            pol = load_policy(path, backend)  # type: ignore[arg-type]
            results[f"{backend} act"] = timed(pol.act, xs, args.n, args.warmup)
        from fastapi.testclient import TestClient

        from tradesys.serve.app import create_api

        app = create_api(None, api_key=KEY, analytics=False, rl_policy_path=str(path))
        bodies = [json.dumps({"observation": x.tolist()}) for x in xs]
        h = {"X-API-Key": KEY, "content-type": "application/json"}
        with TestClient(app) as c:
            def post_tc(x: np.ndarray, _it: list[int] = [0]) -> None:  # noqa: B006 - a call counter
                _it[0] += 1
                r = c.post("/v1/rl/act", content=bodies[_it[0] % len(bodies)], headers=h)
                assert r.status_code == 200, r.text

            results["http-testclient /v1/rl/act"] = timed(post_tc, xs, args.n, args.warmup)
        if not args.no_uvicorn:
            import httpx
            import uvicorn

            port = free_port()
            server = uvicorn.Server(uvicorn.Config(create_api(None, api_key=KEY, analytics=False,
                                                              rl_policy_path=str(path)),
                                                   host="127.0.0.1", port=port, log_level="warning"))  # fmt: skip
            th = threading.Thread(target=server.run, daemon=True)
            th.start()
            while not server.started:
                time.sleep(0.05)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as hc:
                def post_http(x: np.ndarray, _it: list[int] = [0]) -> None:  # noqa: B006 - a call counter
                    _it[0] += 1
                    r = hc.post("/v1/rl/act", content=bodies[_it[0] % len(bodies)], headers=h)
                    assert r.status_code == 200, r.text

                results["http-uvicorn /v1/rl/act"] = timed(post_http, xs, args.n, args.warmup)
            server.should_exit = True
            th.join(10)
    load1 = os.getloadavg()[0]
    print(f"batch 1, {args.n} calls each after {args.warmup} warm-up; load average (1 min) {load1:.1f} on "
          f"{os.cpu_count()} CPUs")
    print(f"{'path':32s} {'p50 ms':>8s} {'p99 ms':>8s} {'mean ms':>8s}")
    for name, r in results.items():
        print(f"{name:32s} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f} {r['mean_ms']:8.3f}")


if __name__ == "__main__":
    main()
