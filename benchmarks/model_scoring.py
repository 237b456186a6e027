"""The model strategy's per-bar scoring time inside the StrategyActor: in-actor champion against the Serve handle.

What runs, in one run on a local Ray: the project's LSTM forecaster (`build_model("lstm", 4)`, default size, random
weights: time does not depend on them) exported to ONNX and registered in an MLflow registry (SQLite, temp folder)
as the ``champion``; the same file served by `build_predict_app` (``ModelServerLive``, one replica, ``@serve.batch``
max 32 / wait 2 ms). Inside one Ray actor (``num_cpus=0``, as the StrategyActor) two `ModelStrategy` objects are
built by `make_strategy` from the configuration the live loop uses:

* ``registry_name`` + ``forecaster = "local"``: the champion in the actor (ONNX Runtime, one thread), the alias
  looked up every ``--check-bars`` bars;
* ``forecaster = "serve"``: the ``ModelServerLive`` deployment by handle, pinned to the same version, once with the
  Serve settings before issue 16 (every request sits out the batch wait) and once as shipped (a request that finds
  the replica idle skips it).

The three strategies get the same bars (20 symbols, ``--bars`` daily bars of the bundled data) against a flat book,
interleaved bar by bar (each bar goes to all three in turn, so they share the machine's load); timed per bar: the
whole ``on_bars`` (features, standardising, scoring, sizing) and the forecaster call alone, over the bars after the
warm-up. Also timed: the alias lookup (`RegistryChampions.current`) from the driver. Medians of ``--repeats``
passes.

    .venv/bin/python benchmarks/model_scoring.py [--bars 400] [--repeats 3] [--check-bars 50]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import platform
import secrets
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

LOOKBACK, N_FEATURES, APP = 20, 4, "model_scoring_bench"


class _Timed:
    """Wraps a forecaster and keeps each call's wall time."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.lookback, self.n_features = inner, inner.lookback, inner.n_features
        self.times: list[float] = []
        for name in ("refresh", "stats"):  # a champion-following forecaster's hooks
            if hasattr(inner, name):
                setattr(self, name, getattr(inner, name))

    def forecast(self, windows: np.ndarray, request_id: str = "") -> Any:
        t0 = time.perf_counter()
        out = self.inner.forecast(windows, request_id)
        self.times.append(time.perf_counter() - t0)
        return out


def _bench_actor() -> Any:
    import ray

    @ray.remote(num_cpus=0)
    class Bench:
        def run(self, paths: list[dict[str, Any]], data: dict[str, Any], repeats: int) -> list[dict[str, Any]]:
            """Every path's strategy gets each bar in turn (same bar, same moment, same machine load)."""
            from tradesys.config import load_config
            from tradesys.core.portfolio import Portfolio
            from tradesys.data import make_source
            from tradesys.strategy import make_strategy

            cfgs = [load_config(overrides={**data, **p}) for p in paths]
            bars = [b for b in make_source(cfgs[0].data).batches() if b.num_rows]
            book = Portfolio(1e6).snapshot()
            per_bar: list[list[np.ndarray]] = [[] for _ in paths]
            per_call: list[list[np.ndarray]] = [[] for _ in paths]
            strats: list[Any] = []
            for _ in range(repeats):
                strats = [make_strategy(c.strategy, 20, 252.0) for c in cfgs]
                timed = [_Timed(st.forecaster) for st in strats]
                for st, t in zip(strats, timed, strict=True):
                    st.forecaster = t
                bar_t: list[list[float]] = [[] for _ in paths]
                for b in bars:
                    for k, st in enumerate(strats):
                        t0 = time.perf_counter()
                        st.on_bars(b, book, {})
                        bar_t[k].append(time.perf_counter() - t0)
                for k, t in enumerate(timed):
                    per_bar[k].append(np.array(bar_t[k][len(bars) - len(t.times):]) * 1e3)
                    per_call[k].append(np.array(t.times) * 1e3)
            med = statistics.median
            return [{"bars": len(per_bar[k][0]),
                     "bar_p50": med(float(np.percentile(a, 50)) for a in per_bar[k]),
                     "bar_p99": med(float(np.percentile(a, 99)) for a in per_bar[k]),
                     "call_p50": med(float(np.percentile(a, 50)) for a in per_call[k]),
                     "call_p99": med(float(np.percentile(a, 99)) for a in per_call[k]),
                     "stats": {key: v for key, v in strats[k].stats().items()
                               if key.startswith(("champion", "forecast", "misses"))}}
                    for k in range(len(paths))]

    return Bench


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bars", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--check-bars", type=int, default=50)
    args = ap.parse_args()

    import mlflow
    import ray
    import torch
    from mlflow import MlflowClient
    from ray import serve

    from tradesys.serve.predict import build_predict_app
    from tradesys.strategy.champion import RegistryChampions
    from tradesys.train.export import export_onnx
    from tradesys.train.models import build_model

    os.environ["TRADESYS_API_KEY"] = os.environ.get("TRADESYS_API_KEY") or secrets.token_urlsafe(24)  # Serve's app
    tmp = Path(tempfile.mkdtemp(prefix="model_scoring_"))
    torch.manual_seed(0)
    (tmp / "models" / "1").mkdir(parents=True)
    model_file = tmp / "models" / "1" / "model.onnx"
    export_onnx(build_model("lstm", N_FEATURES), model_file, lookback=LOOKBACK, n_features=N_FEATURES,
                output_names=("ret", "vol", "dir_logit"))
    scaler = tmp / "standardizer.json"
    scaler.write_text(json.dumps({"mean": [0.0] * 4, "std": [0.01, 0.01, 0.005, 0.005], "ret_scale": 0.01,
                                  "vol_scale": 0.01}))
    uri = f"sqlite:///{tmp}/mlflow.db"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    mlflow.set_tracking_uri(uri)
    exp = client.create_experiment("bench", artifact_location=str(tmp / "artifacts"))
    with mlflow.start_run(experiment_id=exp) as run:
        mlflow.log_artifact(str(model_file), artifact_path="exports")
        mlflow.log_artifact(str(scaler))
    client.create_registered_model("bench-forecaster")
    client.create_model_version("bench-forecaster", f"{run.info.artifact_uri}/exports", run_id=run.info.run_id)
    client.set_registered_model_alias("bench-forecaster", "champion", "1")
    src = RegistryChampions("bench-forecaster", uri, tmp / "cache")
    for _ in range(20):
        src.current()
    alias_ms = []
    for _ in range(200):
        t0 = time.perf_counter()
        src.current()
        alias_ms.append((time.perf_counter() - t0) * 1e3)

    ray.init(address="local", include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}})
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    days = int(args.bars * 365 / 252) + 40
    end = np.datetime64("2019-12-31")
    data = {"data.start": str(end - np.timedelta64(days, "D")), "data.end": str(end),
            "strategy.name": "model", "strategy.timeout_ms": 10_000.0}
    labels = [f"in actor: registry champion, ONNX Runtime (alias every {args.check_bars} bars)",
              "Serve handle, before (every request waits 2 ms)", "Serve handle, as shipped (idle skips the wait)"]
    paths: list[dict[str, Any]] = [{"strategy.registry_name": "bench-forecaster", "strategy.mlflow_uri": uri,
                                    "strategy.champion_check_bars": args.check_bars}]
    for app, skip in ((f"{APP}_before", False), (f"{APP}_after", True)):
        serve.run(build_predict_app(tmp / "models", champion="1", num_cpus=0, batch_wait_timeout_s=0.002,
                                    request_timeout_s=10.0, skip_idle_wait=skip), name=app, route_prefix=f"/{app}")
        paths.append({"strategy.forecaster": "serve", "strategy.serve_app": app, "strategy.model_version": "1",
                      "strategy.standardizer_path": str(scaler)})
    results = ray.get(_bench_actor().remote().run.remote(paths, data, args.repeats))
    rows = list(zip(labels, results, strict=True))
    serve.shutdown()
    ray.shutdown()

    print(f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores; LSTM lookback {LOOKBACK} "
          f"x {N_FEATURES} features, 20 symbols per bar (one batched call), {rows[0][1]['bars']} scored bars, "
          f"medians of {args.repeats} passes; inside a Ray actor (num_cpus=0)")
    print(f"{'path':<64}{'bar p50':>9}{'bar p99':>9}{'call p50':>10}{'call p99':>10}")
    for label, r in rows:
        print(f"{label:<64}{r['bar_p50']:>9.3f}{r['bar_p99']:>9.3f}{r['call_p50']:>10.3f}{r['call_p99']:>10.3f}")
    a50, a99 = np.percentile(alias_ms, 50), np.percentile(alias_ms, 99)
    print(f"champion alias lookup (MLflow, SQLite): p50 {a50:.3f} ms, p99 {a99:.3f} ms; every {args.check_bars} "
          f"bars = {a50 / args.check_bars:.3f} ms per bar")
    base = rows[0][1]["bar_p50"]
    for label, r in rows[1:]:
        print(f"{label}: on_bars p50 / in-actor p50 = {r['bar_p50'] / base:.1f}x")
    print("stats:", json.dumps({label.split(":")[0]: r["stats"] for label, r in rows}))


if __name__ == "__main__":
    main()
