"""`/v1/predict` under load from a second process, against calling the same model directly in the same run.

What runs: the project's LSTM forecaster (`build_model("lstm", n_features)`, default size, random weights: latency
does not depend on them) exported to ONNX, served by `build_predict_app` on a local Ray (HTTP on loopback, API key
from the environment, one live and one research `ModelServer` replica, `@serve.batch`). A load generator runs in a
**separate process** (this script with ``--client``): ``--concurrency`` asyncio workers, each sending batch-1
requests back to back over keep-alive HTTP connections (httpx), for ``--seconds`` per level, after a warm-up.

The reference, in the same run and the same process as the driver: the predictor the replicas load
(`load_predictor(model.onnx)`, ONNX Runtime, one thread) called directly at batch 1, p50/p99 over ``--calls`` calls.
Also timed: sequential batch-1 calls from the driver through a `DeploymentHandle` to ``ModelServerLive``, the path
the live loop's model strategy takes (no HTTP proxy, no router). Printed: p50/p99 latency and requests/s per
concurrency level and for the handle, and the ratios of Serve p50 (concurrency 1, and the handle) to the direct
p50: what Serve, HTTP and the router add on top of the model. Medians of ``--repeats`` repeats.

Serve overhead (issue 16, part 4): ``--variants`` runs the whole measurement once per configuration, each on a fresh
local Ray started by a child process, in this one run; `VARIANTS` says what each changes, cumulatively:
``before`` is the deployment as it was (every request sits out the batch wait, Serve's defaults), ``idle`` lets a
request that finds its replica idle skip the wait (`ModelServer` ``skip_idle_wait``, now the default), ``quiet``
adds Serve settings that take work off each request (no per-request access-log flush, user code on the replica's
own event loop: ``RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE=1000``, ``RAY_SERVE_LOG_TO_STDERR=0``,
``RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0``), ``grpc`` adds gRPC between deployments
(``RAY_SERVE_USE_GRPC_BY_DEFAULT=1``). Serve settings reach the proxy and replicas through the job's runtime_env.

    .venv/bin/python benchmarks/ml_serve.py [--concurrency 1,8,32] [--seconds 5] [--repeats 3]
        [--priority live|research] [--batch-wait-ms 2] [--max-batch-size 32] [--variants before,idle,quiet,grpc]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import asyncio
import json
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

LOOKBACK, N_FEATURES = 20, 4
_QUIET = {"RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000", "RAY_SERVE_LOG_TO_STDERR": "0",
          "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}
# name -> (skip_idle_wait, Serve environment for the proxy and replicas)
VARIANTS: dict[str, tuple[bool, dict[str, str]]] = {
    "before": (False, {}),
    "idle": (True, {}),
    "quiet": (True, _QUIET),
    "grpc": (True, {**_QUIET, "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1"}),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the load generator (second process) ----------------------------------------------------------------------------


async def _load(url: str, key: str, concurrency: int, seconds: float, priority: str) -> dict[str, Any]:
    import httpx

    rng = np.random.default_rng(0)
    bodies = [json.dumps({"windows": rng.standard_normal((1, LOOKBACK, N_FEATURES)).round(6).tolist(),
                          "priority": priority}) for _ in range(64)]
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    lat: list[float] = []
    errors = 0
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30.0) as client:
        async def worker(i: int, until: float, record: bool) -> None:
            nonlocal errors
            j = i
            while time.perf_counter() < until:
                t0 = time.perf_counter()
                r = await client.post("/v1/predict", content=bodies[j % len(bodies)])
                dt = time.perf_counter() - t0
                j += 1
                if r.status_code != 200:
                    errors += 1
                elif record:
                    lat.append(dt)

        warm = time.perf_counter() + min(1.0, seconds / 2)
        await asyncio.gather(*(worker(i, warm, False) for i in range(concurrency)))
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(i, t0 + seconds, True) for i in range(concurrency)))
        elapsed = time.perf_counter() - t0
    arr = np.array(lat) * 1e3
    return {"concurrency": concurrency, "requests": len(lat), "errors": errors, "rps": len(lat) / elapsed,
            "p50_ms": float(np.percentile(arr, 50)), "p99_ms": float(np.percentile(arr, 99))}


def client_main(args: argparse.Namespace) -> None:
    key = os.environ["TRADESYS_API_KEY"]
    out = asyncio.run(_load(args.url, key, args.client_concurrency, args.seconds, args.priority))
    print(json.dumps(out))


# --- the driver -----------------------------------------------------------------------------------------------------


def _direct(model_path: Path, calls: int) -> dict[str, float]:
    from tradesys.train.inference import load_predictor

    pred = load_predictor(model_path, "onnxruntime")
    x = np.random.default_rng(1).standard_normal((1, LOOKBACK, N_FEATURES)).astype(np.float32)
    for _ in range(100):
        pred.predict(x)
    t = np.empty(calls)
    for i in range(calls):
        t0 = time.perf_counter()
        pred.predict(x)
        t[i] = time.perf_counter() - t0
    return {"p50_ms": float(np.percentile(t, 50) * 1e3), "p99_ms": float(np.percentile(t, 99) * 1e3),
            "rps": float(calls / t.sum())}


def _handle(handle: Any, calls: int) -> dict[str, float]:
    """Batch-1 calls through a DeploymentHandle to the live lane from the driver: the model strategy's path
    (no HTTP proxy, no router)."""
    x = np.random.default_rng(2).standard_normal((1, LOOKBACK, N_FEATURES)).astype(np.float32)
    h = handle.options(multiplexed_model_id="1")
    for _ in range(50):
        h.predict.remote("1", x).result()
    t = np.empty(calls)
    for i in range(calls):
        t0 = time.perf_counter()
        h.predict.remote("1", x).result()
        t[i] = time.perf_counter() - t0
    return {"p50_ms": float(np.percentile(t, 50) * 1e3), "p99_ms": float(np.percentile(t, 99) * 1e3),
            "rps": float(calls / t.sum())}


def run_variant(args: argparse.Namespace) -> None:
    """One configuration on a fresh local Ray (a child process): prints one JSON line of per-level results."""
    import ray
    import torch
    from ray import serve

    from tradesys.serve.predict import build_predict_app
    from tradesys.train.export import export_onnx
    from tradesys.train.models import build_model

    skip, env = VARIANTS[args.variant]
    levels = [int(c) for c in args.concurrency.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="ml_serve_"))
    torch.manual_seed(0)
    (tmp / "1").mkdir()
    export_onnx(build_model("lstm", N_FEATURES), tmp / "1" / "model.onnx", lookback=LOOKBACK,
                n_features=N_FEATURES, output_names=("ret", "vol", "dir_logit"))
    direct = [_direct(tmp / "1" / "model.onnx", args.calls) for _ in range(args.repeats)]
    port = _free_port()
    ray.init(address="local", include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", **env}})
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_predict_app(tmp, champion="1", num_cpus=0, max_batch_size=args.max_batch_size,
                                batch_wait_timeout_s=args.batch_wait_ms / 1e3, request_timeout_s=10.0,
                                max_research_inflight=1024, skip_idle_wait=skip),
              name="ml_serve_bench", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    rows: dict[int, list[dict[str, Any]]] = {c: [] for c in levels}
    handle_rows: list[dict[str, float]] = []
    for _ in range(args.repeats):
        for c in levels:
            cmd = [sys.executable, __file__, "--client", "--url", url, "--client-concurrency", str(c),
                   "--seconds", str(args.seconds), "--priority", args.priority]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ.copy())
            rows[c].append(json.loads(res.stdout.strip().splitlines()[-1]))
        handle_rows.append(_handle(serve.get_deployment_handle("ModelServerLive", app_name="ml_serve_bench"),
                                   min(args.calls, 500)))
    serve.shutdown()
    ray.shutdown()
    med = statistics.median
    out: dict[str, Any] = {"direct": {k: med(r[k] for r in direct) for k in ("p50_ms", "p99_ms", "rps")},
                           "handle": {k: med(r[k] for r in handle_rows) for k in ("p50_ms", "p99_ms", "rps")},
                           "http": {str(c): {**{k: med(r[k] for r in rows[c]) for k in ("p50_ms", "p99_ms", "rps")},
                                             "errors": sum(r["errors"] for r in rows[c])} for c in levels}}
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--priority", choices=["live", "research"], default="live")
    ap.add_argument("--batch-wait-ms", type=float, default=2.0)
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--variants", default="before,idle,quiet,grpc",
                    help=f"comma-separated, from {', '.join(VARIANTS)} (see the module docstring)")
    ap.add_argument("--variant", choices=list(VARIANTS), help=argparse.SUPPRESS)
    ap.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--client-concurrency", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        client_main(args)
        return
    if args.variant:
        run_variant(args)
        return
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in names if v not in VARIANTS]
    if bad or not names:
        ap.error(f"--variants: unknown {bad} (known: {', '.join(VARIANTS)})")
    os.environ["TRADESYS_API_KEY"] = os.environ.get("TRADESYS_API_KEY") or secrets.token_urlsafe(24)
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        cmd = [sys.executable, __file__, "--variant", name, "--concurrency", args.concurrency, "--seconds",
               str(args.seconds), "--repeats", str(args.repeats), "--calls", str(args.calls), "--priority",
               args.priority, "--batch-wait-ms", str(args.batch_wait_ms), "--max-batch-size",
               str(args.max_batch_size)]
        res = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        if res.returncode != 0:
            print(f"variant {name}: failed (exit {res.returncode}): {res.stderr.strip().splitlines()[-1:]}")
            continue
        results[name] = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores; "
          f"LSTM lookback {LOOKBACK} x {N_FEATURES} features, batch-1 requests, priority {args.priority}, "
          f"@serve.batch max {args.max_batch_size} / wait {args.batch_wait_ms:g} ms; "
          f"medians of {args.repeats} repeats x {args.seconds:g} s; each variant on a fresh local Ray")
    print(f"{'variant':<8}{'path':<34}{'p50 ms':>10}{'p99 ms':>10}{'req/s':>10}{'errors':>8}")
    for name, r in results.items():
        d = r["direct"]
        print(f"{name:<8}{'direct ONNX Runtime predict (1 thr)':<34}{d['p50_ms']:>10.3f}{d['p99_ms']:>10.3f}"
              f"{d['rps']:>10.0f}{0:>8}")
        for c, h in r["http"].items():
            print(f"{name:<8}{f'/v1/predict HTTP, concurrency {c}':<34}{h['p50_ms']:>10.3f}{h['p99_ms']:>10.3f}"
                  f"{h['rps']:>10.0f}{h['errors']:>8}")
        h = r["handle"]
        print(f"{name:<8}{'ModelServerLive handle, sequential':<34}{h['p50_ms']:>10.3f}{h['p99_ms']:>10.3f}"
              f"{h['rps']:>10.0f}{0:>8}")
    for name, r in results.items():
        first = next(iter(r["http"].values()))
        print(f"{name}: HTTP p50 at concurrency {next(iter(r['http']))} / direct p50 = "
              f"{first['p50_ms'] / r['direct']['p50_ms']:.1f}x; handle p50 / direct p50 = "
              f"{r['handle']['p50_ms'] / r['direct']['p50_ms']:.1f}x")


if __name__ == "__main__":
    main()
