"""Run the DriftMonitor over a replayed feature stream: the Ray job that shows (and exercises) the drift chain.

    python jobs/drift_monitor.py --current-start 2006-01-01 --current-end 2006-12-31 --scale 3 \\
        -- --num-samples 2 --max-epochs 2 --registry-name sp500-forecaster
    ray job submit --working-dir . -- python jobs/drift_monitor.py --no-launch

Reference: the training features (`tradesys.train.data.default_features`: r, |r|, rv5, rv22) of `--data`'s first
(or `--symbol`) column between `--reference-start` and `--reference-end`. Feature source: the same features over
`--current-start`..`--current-end`, optionally computed from returns multiplied by `--scale` or shifted by
`--shift` (planted drift), replayed to a `DriftMonitor` actor in batches of `--batch` rows with a `tick` after each
(a stand-in for the live loop's feature stream). A retrain decision submits `jobs/train.py` with the flags after
``--`` (RayTaskLauncher, or JobSubmissionLauncher with `--jobs-address`), or with `--retrain rl` the PPO agent's
`jobs/rl_train.py` (`tradesys.rl.registry.RLTrainLauncher`; flags after ``--`` are rl_train's, e.g.
``-- --symbols AAPL,JPM --iterations 5``); `--no-launch` only records decisions.
Checks go to MLflow experiment ``tradesys-drift`` (`--mlflow-uri`) and to the JSON-lines audit file `--audit`.
Prints the monitor's status as JSON; waits for a launched job unless `--no-wait`.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    args_in = list(sys.argv[1:] if argv is None else argv)
    train_argv: list[str] = []
    if "--" in args_in:
        i = args_in.index("--")
        args_in, train_argv = args_in[:i], args_in[i + 1 :]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="sp500", help="a load_returns data set or a CSV of prices")
    ap.add_argument("--symbol", default=None, help="column of the data set (default: the first)")
    ap.add_argument("--reference-start", default="2004-01-01")
    ap.add_argument("--reference-end", default="2005-12-31")
    ap.add_argument("--current-start", default="2006-01-01")
    ap.add_argument("--current-end", default="2006-12-31")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the current returns (planted drift)")
    ap.add_argument("--shift", type=float, default=0.0, help="add to the current returns (planted drift)")
    ap.add_argument("--batch", type=int, default=50, help="rows per observe() call")
    ap.add_argument("--window", type=int, default=250, help="rows of the current window")
    ap.add_argument("--check-every", type=int, default=250, help="check after this many new rows")
    ap.add_argument("--model-age-days", type=float, default=2.0, help="age of the served model at the start")
    ap.add_argument("--cooldown-hours", type=float, default=24.0)
    ap.add_argument("--max-age-days", type=float, default=30.0)
    ap.add_argument("--mlflow-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else runs/mlflow.db")
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--audit", default="runs/drift_audit.jsonl", help="JSON-lines audit file")
    ap.add_argument("--evidently", choices=["always", "on_drift", "never"], default="on_drift")
    ap.add_argument("--no-launch", action="store_true", help="record decisions without launching a job")
    ap.add_argument("--retrain", choices=["forecaster", "rl"], default="forecaster",
                    help="what a retrain decision launches: jobs/train.py (forecasters) or jobs/rl_train.py (PPO)")
    ap.add_argument("--jobs-address", default=None, help="submit through this dashboard's Jobs API instead of a task")
    ap.add_argument("--no-wait", action="store_true", help="return without waiting for a launched job")
    ap.add_argument("--wait-timeout", type=float, default=3600.0)
    args = ap.parse_args(args_in)
    for name in ("batch", "window", "check_every"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')}: must be >= 1")
    if args.scale <= 0:
        ap.error("--scale: must be > 0")
    return args, train_argv


def feature_windows(args: argparse.Namespace) -> tuple[Any, Any]:
    """(reference features, current features) from the data set; warm-up rows come from before each window."""
    from tradesys.data.returns import load_returns
    from tradesys.train.data import default_features

    frame = load_returns(args.data)
    r = frame[args.symbol] if args.symbol else frame.iloc[:, 0]
    ref = default_features(r).dropna().loc[args.reference_start : args.reference_end]
    cur = default_features(r * args.scale + args.shift).dropna().loc[args.current_start : args.current_end]
    for name, f in (("reference", ref), ("current", cur)):
        if len(f) < 2:
            raise ValueError(f"{name}-start/end: only {len(f)} feature rows in that window")
    return ref, cur


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args, train_argv = parse_args(argv)
    import ray

    from tradesys.actors.drift import DriftMonitor
    from tradesys.train.drift import DriftPolicy
    from tradesys.train.drift_monitor import MonitorConfig
    from tradesys.train.launch import JobSubmissionLauncher, RayTaskLauncher

    ref, cur = feature_windows(args)
    if not ray.is_initialized():
        ray.init(include_dashboard=False)
    launcher: Any = None
    runs = Path(args.runs_dir).expanduser().resolve()
    if not args.no_launch and args.retrain == "rl":
        from tradesys.rl.registry import RLTrainLauncher, rl_train_argv

        launcher = (RLTrainLauncher("job_submission", address=args.jobs_address) if args.jobs_address
                    else RLTrainLauncher("ray_task", summaries_dir=runs / "rl_summaries"))  # fmt: skip
        train_argv = [*rl_train_argv(runs), *train_argv]
    elif not args.no_launch:
        launcher = JobSubmissionLauncher(args.jobs_address) if args.jobs_address else RayTaskLauncher()
    policy = DriftPolicy(max_age=timedelta(days=args.max_age_days), cooldown=timedelta(hours=args.cooldown_hours))
    cfg = MonitorConfig(window=args.window, min_rows=min(50, args.window), check_every_n=args.check_every,
                        check_every_s=None, policy=policy)  # fmt: skip
    mon = DriftMonitor.remote(
        ref, config=cfg, launcher=launcher, train_argv=train_argv,
        last_trained=datetime.now(UTC) - timedelta(days=args.model_age_days), tracking_uri=args.mlflow_uri,
        runs_dir=str(runs), evidently=args.evidently, audit_path=str(Path(args.audit).expanduser().resolve()),
    )  # fmt: skip
    for i in range(0, len(cur), args.batch):
        chunk = cur.iloc[i : i + args.batch]
        ray.get(mon.observe.remote(pa.RecordBatch.from_pandas(chunk, preserve_index=False)))
        ray.get(mon.tick.remote())
    if launcher is not None and not args.no_wait:
        ray.get(mon.wait_job.remote(timeout_s=args.wait_timeout))
    status = ray.get(mon.status.remote())
    print(json.dumps(status, indent=2, default=str))
    return status


if __name__ == "__main__":
    main()
