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
local Ray started by a child process, in this one run; `VARIANTS` says what each changes: ``before`` is the
deployment as it was (every request sits out the batch wait), ``idle`` lets a request that finds its replica idle
skip the wait (`ModelServer` ``skip_idle_wait``, the default), ``quiet`` adds Serve settings that take work off each
request (``RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE=1000``, ``RAY_SERVE_LOG_TO_STDERR=0``,
``RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0``), ``grpc`` adds gRPC between deployments
(``RAY_SERVE_USE_GRPC_BY_DEFAULT=1``); ``inline`` is ``idle`` with predictor calls of up to 32 rows on the replica's
event loop (``inline_max_rows``), ``loops`` adds user code and the router on the replica's main loop
(``RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0``, ``RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0``), ``direct`` is
``inline`` with Serve's direct ingress (``RAY_SERVE_ENABLE_DIRECT_INGRESS=1``: the PredictRouter replica listens for
HTTP and gRPC itself and the load goes there, not through the proxy actor), ``direct_loops`` both. Serve settings
reach the proxy and replicas through the environment of the Ray this child starts, and its runtime_env.

Each variant is loaded over ``--protocols``: ``http`` (JSON, ``POST /v1/predict``) and ``grpc`` (protobuf, Serve's
gRPC ingress, `tradesys.serve.grpc_predict`), and ``GET /v1/predict/status`` at concurrency 1 (proxy and ingress
replica without the model hop: the floor of this path). "router p50" is the median of the answers' ``latency_ms``:
time inside the ingress replica's service, from the request's start to the model's answer (the handle hop to the
model replica and the model); the rest of the client's time is the proxy, the framework and the wire.

    .venv/bin/python benchmarks/ml_serve.py [--concurrency 1,8,32] [--seconds 5] [--repeats 3]
        [--priority live|research] [--batch-wait-ms 2] [--max-batch-size 32] [--protocols http,grpc]
        [--variants idle,inline,direct,direct_loops]
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
_LOOPS = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0", "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0"}
# name -> (skip_idle_wait, inline_max_rows, Serve environment for the proxy and replicas, direct ingress)
VARIANTS: dict[str, tuple[bool, int, dict[str, str], bool]] = {
    "before": (False, 0, {}, False),
    "idle": (True, 0, {}, False),
    "quiet": (True, 0, _QUIET, False),
    "grpc": (True, 0, {**_QUIET, "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1"}, False),
    "inline": (True, 32, {}, False),
    "loops": (True, 32, _LOOPS, False),
    "direct": (True, 32, {}, True),
    "direct_loops": (True, 32, _LOOPS, True),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the load generator (second process) ----------------------------------------------------------------------------


async def _load(url: str, key: str, concurrency: int, seconds: float, priority: str, protocol: str = "http",
                path: str = "predict") -> dict[str, Any]:
    """``concurrency`` workers sending requests back to back for ``seconds`` after a warm-up; over keep-alive HTTP
    (httpx) or one gRPC channel (grpc.aio, HTTP/2). ``path``: ``predict`` (batch-1 windows) or ``status`` (``GET
    /v1/predict/status``: the proxy and the ingress replica without the model hop; HTTP only)."""
    rng = np.random.default_rng(0)
    windows = [rng.standard_normal((1, LOOKBACK, N_FEATURES)).round(6) for _ in range(64)]
    lat: list[float] = []
    router_ms: list[float] = []
    errors = 0
    if protocol == "grpc":
        import grpc

        from tradesys.serve.grpc_predict import PredictServiceStub, request_from_arrays

        reqs = [request_from_arrays(w, priority=priority) for w in windows]
        channel = grpc.aio.insecure_channel(url)
        stub = PredictServiceStub(channel)
        md = (("x-api-key", key),)

        async def call(j: int) -> float | None:
            try:
                reply = await stub.Predict(reqs[j % len(reqs)], metadata=md, timeout=30.0)
            except grpc.RpcError:
                return None
            return float(reply.latency_ms)
    else:
        import httpx

        bodies = [json.dumps({"windows": w.tolist(), "priority": priority}) for w in windows]
        headers = {"X-API-Key": key, "Content-Type": "application/json"}
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        client = httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30.0)

        async def call(j: int) -> float | None:
            if path == "status":
                r = await client.get("/v1/predict/status")
                return 0.0 if r.status_code == 200 else None
            r = await client.post("/v1/predict", content=bodies[j % len(bodies)])
            return float(r.json()["latency_ms"]) if r.status_code == 200 else None

    async def worker(i: int, until: float, record: bool) -> None:
        nonlocal errors
        j = i
        while time.perf_counter() < until:
            t0 = time.perf_counter()
            inner = await call(j)
            dt = time.perf_counter() - t0
            j += 1
            if inner is None:
                errors += 1
            elif record:
                lat.append(dt)
                router_ms.append(inner)

    try:
        warm = time.perf_counter() + min(1.0, seconds / 2)
        await asyncio.gather(*(worker(i, warm, False) for i in range(concurrency)))
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(i, t0 + seconds, True) for i in range(concurrency)))
        elapsed = time.perf_counter() - t0
    finally:
        await (channel.close() if protocol == "grpc" else client.aclose())
    arr = np.array(lat) * 1e3
    return {"concurrency": concurrency, "requests": len(lat), "errors": errors, "rps": len(lat) / elapsed,
            "p50_ms": float(np.percentile(arr, 50)), "p99_ms": float(np.percentile(arr, 99)),
            "router_p50_ms": float(np.median(router_ms))}


def client_main(args: argparse.Namespace) -> None:
    key = os.environ["TRADESYS_API_KEY"]
    out = asyncio.run(_load(args.url, key, args.client_concurrency, args.seconds, args.priority, args.protocol,
                            args.path))
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
    skip, inline, env, direct = VARIANTS[args.variant]
    http_port, grpc_port = _free_port(), _free_port()
    if direct:  # the ingress replica listens itself, on the first port of these ranges (one router replica)
        env = {**env, "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
               "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(_free_port()),
               "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(_free_port())}
        env["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"] = str(int(env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"]) + 1)
        env["RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT"] = str(int(env["RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT"]) + 1)
    # Before Ray and Serve are imported (Serve reads its settings at import), except the router-loop setting: the
    # driver's own handle (`_handle`) needs Serve's router on its own loop to be called from sync code.
    os.environ.update({k: v for k, v in env.items() if k != "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP"})

    import ray
    import torch
    from ray import serve
    from ray.serve.config import gRPCOptions

    from tradesys.serve.access import AccessSettings
    from tradesys.serve.grpc_predict import GRPC_SERVICER_FUNCTION
    from tradesys.serve.predict import build_predict_app
    from tradesys.train.export import export_onnx
    from tradesys.train.models import build_model

    levels = [int(c) for c in args.concurrency.split(",")]
    protocols = [p for p in args.protocols.split(",") if p]
    tmp = Path(tempfile.mkdtemp(prefix="ml_serve_"))
    torch.manual_seed(0)
    (tmp / "1").mkdir()
    export_onnx(build_model("lstm", N_FEATURES), tmp / "1" / "model.onnx", lookback=LOOKBACK,
                n_features=N_FEATURES, output_names=("ret", "vol", "dir_logit"))
    direct_rows = [_direct(tmp / "1" / "model.onnx", args.calls) for _ in range(args.repeats)]
    ray.init(address="local", include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", **env}})
    serve.start(http_options={"host": "127.0.0.1", "port": http_port},
                grpc_options=gRPCOptions(port=grpc_port, grpc_servicer_functions=[GRPC_SERVICER_FUNCTION]))
    serve.run(build_predict_app(tmp, champion="1", num_cpus=0, max_batch_size=args.max_batch_size,
                                batch_wait_timeout_s=args.batch_wait_ms / 1e3, request_timeout_s=10.0,
                                max_research_inflight=1024, skip_idle_wait=skip, inline_max_rows=inline,
                                access=AccessSettings(rate_limit_per_s=None)),  # keys checked, no rate limit
              name="ml_serve_bench", route_prefix="/")
    if direct:
        http_port = int(env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"])
        grpc_port = int(env["RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT"])
    urls = {"http": f"http://127.0.0.1:{http_port}", "grpc": f"127.0.0.1:{grpc_port}"}
    cells = [(p, "predict", c) for p in protocols for c in levels] + [("http", "status", 1)]
    rows: dict[str, list[dict[str, Any]]] = {f"{p} {path} {c}": [] for p, path, c in cells}
    handle_rows: list[dict[str, float]] = []
    for _ in range(args.repeats):
        for p, path, c in cells:
            cmd = [sys.executable, __file__, "--client", "--url", urls[p], "--client-concurrency", str(c),
                   "--seconds", str(args.seconds), "--priority", args.priority, "--protocol", p, "--path", path]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ.copy())
            rows[f"{p} {path} {c}"].append(json.loads(res.stdout.strip().splitlines()[-1]))
        handle_rows.append(_handle(serve.get_deployment_handle("ModelServerLive", app_name="ml_serve_bench"),
                                   min(args.calls, 500)))
    serve.shutdown()
    ray.shutdown()
    med = statistics.median
    keys = ("p50_ms", "p99_ms", "rps", "router_p50_ms")
    out: dict[str, Any] = {"direct": {k: med(r[k] for r in direct_rows) for k in ("p50_ms", "p99_ms", "rps")},
                           "handle": {k: med(r[k] for r in handle_rows) for k in ("p50_ms", "p99_ms", "rps")},
                           "cells": {name: {**{k: med(r[k] for r in rs) for k in keys},
                                            "errors": sum(r["errors"] for r in rs)} for name, rs in rows.items()}}
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
    ap.add_argument("--protocols", default="http,grpc", help="comma-separated: http (JSON through FastAPI), grpc "
                    "(protobuf through Serve's gRPC ingress, tradesys.serve.grpc_predict)")
    ap.add_argument("--variants", default="idle,inline,direct,direct_loops",
                    help=f"comma-separated, from {', '.join(VARIANTS)} (see the module docstring)")
    ap.add_argument("--variant", choices=list(VARIANTS), help=argparse.SUPPRESS)
    ap.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--client-concurrency", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--protocol", default="http", help=argparse.SUPPRESS)
    ap.add_argument("--path", default="predict", help=argparse.SUPPRESS)
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
               str(args.max_batch_size), "--protocols", args.protocols]
        res = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        if res.returncode != 0:  # once more: on a loaded machine a fresh Ray can time out starting
            print(f"variant {name}: failed (exit {res.returncode}), retrying: {res.stderr.strip().splitlines()[-1:]}")
            res = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        if res.returncode != 0:
            print(f"variant {name}: failed (exit {res.returncode}): {res.stderr.strip().splitlines()[-1:]}")
            continue
        results[name] = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores; "
          f"LSTM lookback {LOOKBACK} x {N_FEATURES} features, batch-1 requests, priority {args.priority}, "
          f"@serve.batch max {args.max_batch_size} / wait {args.batch_wait_ms:g} ms; "
          f"medians of {args.repeats} repeats x {args.seconds:g} s; each variant on a fresh local Ray")
    print(f"{'variant':<13}{'path':<40}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>8}{'router p50':>11}{'errors':>7}")
    for name, r in results.items():
        d = r["direct"]
        print(f"{name:<13}{'direct ONNX Runtime predict (1 thr)':<40}{d['p50_ms']:>9.3f}{d['p99_ms']:>9.3f}"
              f"{d['rps']:>8.0f}{'':>11}{0:>7}")
        for cell, h in r["cells"].items():
            proto, path, c = cell.split()
            label = f"{'GET /v1/predict/status' if path == 'status' else '/v1/predict'} {proto}, c={c}"
            router = "" if path == "status" else f"{h['router_p50_ms']:.3f}"
            print(f"{name:<13}{label:<40}{h['p50_ms']:>9.3f}{h['p99_ms']:>9.3f}{h['rps']:>8.0f}{router:>11}"
                  f"{h['errors']:>7}")
        h = r["handle"]
        print(f"{name:<13}{'ModelServerLive handle, sequential':<40}{h['p50_ms']:>9.3f}{h['p99_ms']:>9.3f}"
              f"{h['rps']:>8.0f}{'':>11}{0:>7}")
    base = next(iter(results), None)
    for name, r in results.items():
        c1 = {p: r["cells"].get(f"{p} predict 1") for p in ("http", "grpc")}
        parts = [f"{p} c=1 p50 / direct p50 = {v['p50_ms'] / r['direct']['p50_ms']:.1f}x" for p, v in c1.items() if v]
        if base and name != base:
            for p, v in c1.items():
                b = results[base]["cells"].get(f"{p} predict 1")
                if v and b:
                    parts.append(f"{p} c=1 p50 / {base}'s = {v['p50_ms'] / b['p50_ms']:.2f}")
        if c1["http"] and c1["grpc"]:
            parts.append(f"grpc / http c=1 p50 = {c1['grpc']['p50_ms'] / c1['http']['p50_ms']:.2f}")
        print(f"{name}: " + "; ".join(parts))


if __name__ == "__main__":
    main()
