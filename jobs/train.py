"""Train, evaluate, export, register and (maybe) promote a forecaster: the Ray job behind issue #6.

    python jobs/train.py --kinds lstm transformer --num-samples 8 --max-epochs 10
    ray job submit --working-dir . -- python jobs/train.py --registry-name sp500-forecaster
    python jobs/train.py --data store:/data/features --symbol SPY --features rv:1,spread:2 --returns-feature returns
    python jobs/train.py --trainer ray-train --num-workers 4 --use-gpu --kind transformer --width 32 --lr 1e-3
    TRADESYS_STORAGE=s3://my-bucket/tradesys python jobs/train.py    # results, checkpoints, MLflow artifacts on S3

A thin argparse shell around `tradesys.train.pipeline.run_training` (the steps, the leakage rules, the promotion
rule and the Ray Train hyper-parameter choice are described there and in docs/training.md). Prints the JSON
summary (strict JSON: NaN as null) on stdout, after the promotion decision block on stderr. Inside a Ray job
RAY_ADDRESS points at the cluster; otherwise a local Ray is started.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from tradesys.train.pipeline import LOSSES, TRAINERS, TrainSettings, promotion_lines, run_training, summary_json


def _features(text: str) -> list[str]:
    return [f.strip() for f in text.split(",") if f.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="sp500", help="a load_returns data set, a CSV of prices, or store:<root> "
                    "(an offline feature store)")  # fmt: skip
    ap.add_argument("--symbol", default=None, help="column of the data set / store entity (default: the first)")
    ap.add_argument("--features", type=_features, default=[], help="store features, name:version[,...] "
                    "(name[:version][.col[+col]]); joined point-in-time on the returns' bar times")  # fmt: skip
    ap.add_argument("--returns-feature", default="returns", help="store feature holding the per-bar returns "
                    "(name[:version][.column]); its bar times are the label calendar")  # fmt: skip
    ap.add_argument("--feature-lag", default=None, help="delay before a feature value is usable, e.g. 1h")
    ap.add_argument("--feature-ttl", default=None, help="maximum age of a feature value, e.g. 3D")
    ap.add_argument("--kinds", nargs="+", default=["lstm", "transformer"], choices=["lstm", "transformer"])
    ap.add_argument("--num-samples", type=int, default=8, help="Tune trials")
    ap.add_argument("--max-epochs", type=int, default=10)
    ap.add_argument("--grace-period", type=int, default=1, help="ASHA: epochs before a trial can be stopped")
    ap.add_argument("--lookback", type=int, default=20)
    ap.add_argument("--vol-horizon", type=int, default=5)
    ap.add_argument("--holdout", type=int, default=250, help="holdout samples (the most recent)")
    ap.add_argument("--max-samples", type=int, default=0, help="use only the most recent N samples (0: all)")
    ap.add_argument("--mlflow-uri", default=None, help="tracking/registry URI (default: $MLFLOW_TRACKING_URI, "
                    "else sqlite:///<runs-dir>/mlflow.db)")  # fmt: skip
    ap.add_argument("--experiment", default="tradesys-train")
    ap.add_argument("--registry-name", default="tradesys-forecaster")
    ap.add_argument("--runs-dir", default=os.environ.get("TRADESYS_RUNS_DIR") or "runs",
                    help="Tune results, checkpoints, the MLflow store (default: $TRADESYS_RUNS_DIR, the cluster's "
                    "shared storage, else ./runs)")
    ap.add_argument("--storage", default=None,
                    help="Tune/Ray Train results, checkpoints and MLflow artifacts: a path or s3://bucket/prefix "
                    "(default: $TRADESYS_STORAGE, else --runs-dir); the MLflow database stays under --runs-dir")
    ap.add_argument("--promote-on", choices=LOSSES, default="vol_qlike")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--trainer", choices=TRAINERS, default="tune", help="tune: ASHA search; ray-train: one "
                    "configuration, data-parallel (DDP) on --num-workers workers")  # fmt: skip
    ap.add_argument("--num-workers", type=int, default=2, help="ray-train workers (one CPU or GPU each)")
    ap.add_argument("--use-gpu", action="store_true", help="ray-train on GPUs (refused if the cluster has none)")
    ap.add_argument("--kind", choices=["lstm", "transformer"], default=None, help="ray-train hyper-parameters "
                    "(all four or none; default: the champion's, else lstm/16/1/1e-3)")  # fmt: skip
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--n-layers", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    args = ap.parse_args(argv)
    try:
        from tradesys.storage import resolve_storage

        settings_from_args(args)
        resolve_storage(args.storage, args.runs_dir)  # names --storage's value or $TRADESYS_STORAGE's
    except ValueError as exc:
        ap.error(str(exc))  # exits with status 2, like any other bad flag
    return args


def settings_from_args(args: argparse.Namespace) -> TrainSettings:
    """`TrainSettings` from the parsed flags; ValueError names the field and the reason."""
    v = vars(args).copy()
    hp = {k: v.pop(k) for k in ("kind", "width", "n_layers", "lr")}
    given = {k: x for k, x in hp.items() if x is not None}
    if given and len(given) != len(hp):
        missing = [f"--{k.replace('_', '-')}" for k, x in hp.items() if x is None]
        raise ValueError(f"hparams: give --kind, --width, --n-layers and --lr together (missing {missing})")
    return TrainSettings(**{**v, "features": tuple(v["features"]), "kinds": tuple(v["kinds"]),
                            "hparams": given or None})  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    summary = run_training(settings_from_args(parse_args(argv)))
    print("\n".join(promotion_lines(summary["promotion"])), file=sys.stderr, flush=True)  # for the job's reader
    print(summary_json(summary))
    return summary


if __name__ == "__main__":
    main()
