"""Sweep benchmark (issue 17): one grid of 256 trend configurations (16 fast x 16 slow windows), run

1. sequentially in one process: `run_backtest` per trial, the event-driven loop (the baseline);
2. as `tradesys backtest sweep` does, `tradesys.backtest.distributed.run_sweep` (one Ray task per trial, retries,
   results table), on a fresh local Ray with 1 and with 2 worker CPUs (`--workers`);
3. sequentially in one process with the vectorised engine, `run_vectorized` per trial (when it is there).

Every trial's final equity from the Ray sweeps must equal the sequential run's (the run exits 1 otherwise), so a
faster sweep that computes something else shows. Ray's start-up (`ray.init`) is timed apart and not in the sweep's
wall time; MLflow logging is off and ledgers are in memory, so the figure is the trials and their scheduling.

Per-node projection: the measured mean cost of one trial inside a Ray task, times 256, divided by the CPUs of a
node, plus the measured fixed overhead of a sweep. It is a PROJECTION (linear scaling, no memory-bandwidth or
scheduler contention), not a measurement; the printed table says so.

    .venv/bin/python benchmarks/backtest_sweep.py [--quick] [--workers 1,2] [--set data.start=2021-01-01 ...]
        [--no-vectorized] [--json out.json]

Defaults: the project's default configuration (20 S&P 500 stocks, 2016-2022, default strategy, risk and broker
settings) with the swept windows. `--set` overrides the base configuration (e.g. a shorter window of data to fit
a time budget). `--quick`: 4 configurations on 5 stocks over 2021-2022 (a smoke run).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tradesys.backtest.runner import run_backtest
from tradesys.backtest.sweep import generate_trials, make_spec, parse_param, trial_config
from tradesys.config import parse_override

FAST = "strategy.fast=range(5,53,3)"  # 5, 8, ..., 50: 16 values
SLOW = "strategy.slow=range(60,220,10)"  # 60, 70, ..., 210: 16 values
QUICK = (["strategy.fast=10,20", "strategy.slow=60,100"],
         ["data.symbols=[\"AAPL\",\"JPM\",\"KO\",\"XOM\",\"MSFT\"]", "data.start=2021-01-01"])
NODE_CPUS = (2, 8, 16, 32, 64)


def sequential(trials: list[Any], overrides: list[str]) -> dict[str, Any]:
    """Every trial with `run_backtest`, one after the other, in this process."""
    seconds, equity = [], {}
    t0 = time.perf_counter()
    for t in trials:
        s0 = time.perf_counter()
        summary, ledger = run_backtest(trial_config(None, overrides, t.params))
        ledger.close()
        seconds.append(time.perf_counter() - s0)
        equity[t.index] = summary.equity
    return {"wall_s": time.perf_counter() - t0, "trial_s": seconds, "equity": equity}


def vectorized(trials: list[Any], overrides: list[str]) -> dict[str, Any] | None:
    """Every trial with `run_vectorized` (one untimed call first compiles the numba kernels); None if absent."""
    if importlib.util.find_spec("tradesys.backtest.vectorized") is None:
        return None
    from tradesys.backtest.vectorized import run_vectorized

    run_vectorized(trial_config(None, overrides, trials[0].params))
    seconds, equity = [], {}
    t0 = time.perf_counter()
    for t in trials:
        s0 = time.perf_counter()
        res = run_vectorized(trial_config(None, overrides, t.params))
        seconds.append(time.perf_counter() - s0)
        equity[t.index] = float(res.summary.equity)
    return {"wall_s": time.perf_counter() - t0, "trial_s": seconds, "equity": equity}


def on_ray(spec: Any, overrides: list[str], workers: int, tmp: Path) -> dict[str, Any]:
    """`run_sweep` on a fresh local Ray of `workers` CPUs (never an existing cluster on this machine)."""
    import pyarrow.parquet as pq
    import ray

    from tradesys.backtest.distributed import run_sweep

    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}})
    init_s = time.perf_counter() - t0
    try:
        t1 = time.perf_counter()
        summary = run_sweep(spec, None, overrides, tmp / f"w{workers}", sweep_id=f"bench-w{workers}",
                            keep_ledgers=False, mlflow=False, show_progress=False)
        wall = time.perf_counter() - t1
    finally:
        ray.shutdown()
    table = pq.read_table(summary["results"]).to_pylist()
    return {
        "workers": workers, "init_s": init_s, "wall_s": wall, "sweep_wall_s": summary["wall_s"],
        "ok": summary["ok"], "failed": summary["failed"], "invalid": summary["invalid"],
        "trial_s": [r["seconds"] for r in table if r["seconds"] is not None],
        "equity": {r["trial"]: r["equity"] for r in table},
    }


def same_equity(a: dict[int, float], b: dict[int, float]) -> bool:
    return a.keys() == b.keys() and all(
        a[k] is not None and b[k] is not None and math.isclose(a[k], b[k], rel_tol=1e-12, abs_tol=1e-6) for k in a
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="a 256-configuration sweep: sequential against Ray on 1 and 2 workers")
    ap.add_argument("--quick", action="store_true", help="4 configurations on 5 stocks x 2 years: a smoke run")
    ap.add_argument("--workers", default="1,2", help="comma list of local Ray CPU counts (default 1,2)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="base configuration override (repeatable), e.g. data.start=2021-01-01")
    ap.add_argument("--no-vectorized", action="store_true", help="leave out the vectorised sequential row")
    ap.add_argument("--json", default=None, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    try:
        workers = sorted({int(w) for w in args.workers.split(",") if w.strip()})
    except ValueError:
        ap.error(f"--workers: comma list of integers, got {args.workers!r}")
    if not workers or min(workers) < 1:
        ap.error(f"--workers: each must be >= 1, got {args.workers!r}")
    params, overrides = (QUICK[0], [*QUICK[1], *args.overrides]) if args.quick else ([FAST, SLOW], args.overrides)
    for o in overrides:
        parse_override(o)  # a bad --set fails here, naming it
    spec = make_spec([parse_param(p) for p in params])
    trials = generate_trials(spec)
    trial_config(None, overrides, trials[0].params)  # the base configuration is valid
    n = len(trials)
    print(f"# Sweep benchmark: {n} configurations ({', '.join(params)}); base overrides: {overrides or 'none'}")
    print(f"{os.cpu_count()} CPUs; load average at start {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    seq = sequential(trials, overrides)
    per_trial = statistics.mean(seq["trial_s"])
    rows = [("sequential, one process (run_backtest per trial)", seq["wall_s"], None)]
    vz = None if args.no_vectorized else vectorized(trials, overrides)
    if vz is not None:
        rows.append(("sequential, one process, vectorised (run_vectorized per trial)", vz["wall_s"], None))
    ray_runs = []
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmpd:
        for w in workers:
            r = on_ray(spec, overrides, w, Path(tmpd))
            ray_runs.append(r)
            rows.append((f"tradesys backtest sweep (run_sweep), local Ray, {w} worker CPU(s)", r["wall_s"], r))

    print("\n| run | wall s | trials/s | speed-up vs sequential | ray.init s (not in wall) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, wall, r in rows:
        init = f"{r['init_s']:.1f}" if r else ""
        print(f"| {label} | {wall:.1f} | {n / wall:.2f} | {seq['wall_s'] / wall:.2f}x | {init} |")
    print(f"\nsequential: mean {per_trial:.3f} s per trial (median {statistics.median(seq['trial_s']):.3f} s)")
    ok = True
    for r in ray_runs:
        eq = same_equity(seq["equity"], r["equity"])
        ok &= eq and r["failed"] == 0 and r["invalid"] == 0
        print(f"Ray {r['workers']} worker(s): {r['ok']} ok, {r['failed']} failed, {r['invalid']} invalid; "
              f"mean {statistics.mean(r['trial_s']):.3f} s per trial inside its task; final equity of every trial "
              f"{'equal to' if eq else 'DIFFERENT FROM'} the sequential run's")
    if vz is not None:
        eq = same_equity(seq["equity"], vz["equity"])
        print(f"vectorised: mean {statistics.mean(vz['trial_s']):.4f} s per trial; final equity of every trial "
              f"{'equal to' if eq else 'not equal to'} the event-driven run's (not required: the vectorised engine "
              "does not model the pre-trade gate's refusals)")

    # projection per node from the measured per-trial cost inside a Ray task, and the measured fixed overhead
    base = min(ray_runs, key=lambda r: r["workers"])
    task_cost = statistics.mean(base["trial_s"])  # the mean: total work is the sum of the trials' times
    overhead = max(0.0, base["wall_s"] - n * task_cost / base["workers"])
    print(f"\nPROJECTION, not measured: {n} trials x {task_cost:.3f} s (mean trial inside a Ray task, "
          f"{base['workers']} worker run) / CPUs of the node + {overhead:.1f} s fixed overhead (that run's wall "
          "minus its trials' time); assumes linear scaling with no contention")
    print("\n| node CPUs | projected sweep wall s (PROJECTION) |")
    print("| ---: | ---: |")
    for cpus in NODE_CPUS:
        print(f"| {cpus} | {n * task_cost / cpus + overhead:.1f} |")
    print(f"\nload average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        Path(args.json).write_text(json.dumps({"trials": n, "params": params, "overrides": overrides,
                                               "sequential": seq, "vectorized": vz, "ray": ray_runs},
                                              default=str, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
