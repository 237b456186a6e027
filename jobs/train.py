"""Train, evaluate, export, register and (maybe) promote a forecaster: the Ray job behind issue #6.

    python jobs/train.py --kinds lstm transformer --num-samples 8 --max-epochs 10
    ray job submit --working-dir . -- python jobs/train.py --registry-name sp500-forecaster

Steps: daily returns (`tradesys.data.returns.load_returns`) -> samples (lookback window; next return, next-h
realised vol, direction) -> the last ``--holdout`` samples are the holdout, the training pool before them is purged
of samples whose labels reach into it -> a `Standardizer` fitted on the pool only -> Ray Tune ASHA search
(`tradesys.train.tune.run_search`, one MLflow run per trial) -> the best checkpoint is scored on the holdout
against the naive and GARCH(1,1) forecasts (`tradesys.train.evaluate`) -> one MLflow run logs the parameters, the
best trial's per-epoch metrics, the holdout metrics, the ONNX and TorchScript exports, the holdout report and the
standardiser, and the model with its signature -> a new registry version with the ``challenger`` alias -> the
current champion (its model and standardiser from its run) is scored on the same holdout and
`tradesys.train.registry.promote_if_better` moves ``champion`` only if a one-sided DM test (uniform kernel, h = vol
horizon for the default ``vol_qlike`` loss) rejects at ``--alpha``. A champion cut with another lookback/vol
horizon/feature count cannot be scored on these samples: the challenger is then not promoted (reason
``incompatible_champion``). Prints a JSON summary. Inside a Ray job RAY_ADDRESS points at the cluster; otherwise
a local Ray is started.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

LOSSES = ("vol_qlike", "ret_se", "dir_logloss")


def _standardizer_json(sc: Any) -> dict[str, Any]:
    return {"mean": sc.mean.tolist(), "std": sc.std.tolist(), "ret_scale": sc.ret_scale, "vol_scale": sc.vol_scale}


def holdout_losses(model: Any, scaler: dict[str, Any], test: Any) -> dict[str, np.ndarray]:
    """Per-sample holdout losses (original units) of a model with its own standardiser (JSON form)."""
    from dataclasses import replace

    from tradesys.train.evaluate import qlike_loss
    from tradesys.train.fit import predict

    mean = np.asarray(scaler["mean"], dtype=np.float32)
    std = np.asarray(scaler["std"], dtype=np.float32)
    out = predict(model, replace(test, X=((test.X - mean) / std).astype(np.float32)))
    vol = np.maximum(out["vol"] * float(scaler["vol_scale"]), 1e-12)
    ret = out["ret"] * float(scaler["ret_scale"])
    p = np.clip(out["p_up"], 1e-12, 1 - 1e-12)
    return {
        "vol_qlike": qlike_loss(test.y_vol, vol),
        "ret_se": (test.y_ret - ret) ** 2,
        "dir_logloss": -(test.y_dir * np.log(p) + (1 - test.y_dir) * np.log1p(-p)),
        "_fc": {"ret": ret, "vol": vol, "p_up": out["p_up"]},  # type: ignore[dict-item]
    }


def holdout_report(fc: dict[str, np.ndarray], pool: Any, test: Any) -> dict[str, Any]:
    """Metrics of the network, naive and GARCH forecasts on the holdout, plus DM tests of the network vs each."""
    from tradesys.train.evaluate import (
        diebold_mariano,
        direction_metrics,
        garch_vol_forecasts,
        naive_forecasts,
        qlike_loss,
        return_metrics,
        vol_metrics,
    )

    naive = naive_forecasts(test, float(np.mean(pool.y_dir)))
    fcs = {"network": fc, "naive": naive, "garch": {**naive, "vol": garch_vol_forecasts(test)}}
    metrics: dict[str, dict[str, float]] = {}
    for name, f in fcs.items():
        m = {f"ret_{k}": v for k, v in return_metrics(test.y_ret, f["ret"]).items()}
        m.update({f"vol_{k}": v for k, v in vol_metrics(test.y_vol, f["vol"]).items()})
        m.update({f"dir_{k}": v for k, v in direction_metrics(test.y_dir, f["p_up"]).items()})
        metrics[name] = m
    tests = []
    for base in ("naive", "garch"):
        dm = diebold_mariano(
            qlike_loss(test.y_vol, fc["vol"]), qlike_loss(test.y_vol, fcs[base]["vol"]),
            h=test.vol_horizon, kernel="uniform",
        )  # fmt: skip
        tests.append({"loss": "vol_qlike", "vs": base, "dm_stat": dm.stat, "pvalue": dm.pvalue,
                      "mean_diff": dm.mean_diff})  # fmt: skip
    return {"n_test": len(test), "start": str(test.index[0]), "end": str(test.index[-1]), "metrics": metrics,
            "tests": tests}  # fmt: skip


def _champion_losses(name: str, test: Any, loss: str, args: argparse.Namespace) -> np.ndarray | None:
    """The current champion's holdout losses, or None when it was cut differently (lookback, h, features)."""
    import mlflow
    import mlflow.pytorch

    from tradesys.train.registry import CHAMPION, alias_version

    v = alias_version(name, CHAMPION)
    if v is None:
        return np.array([])
    mv = mlflow.MlflowClient().get_model_version(name, str(v))
    params = mlflow.get_run(mv.run_id).data.params
    if (int(params.get("lookback", -1)), int(params.get("vol_horizon", -1)), int(params.get("n_features", -1))) != (
        args.lookback, args.vol_horizon, int(test.X.shape[2])
    ):
        return None
    scaler = json.loads(mlflow.artifacts.load_text(f"runs:/{mv.run_id}/standardizer.json"))
    model = mlflow.pytorch.load_model(f"models:/{name}/{v}")
    return holdout_losses(model, scaler, test)[loss]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="sp500", help="a load_returns data set or a CSV of prices")
    ap.add_argument("--symbol", default=None, help="column of the data set (default: the first)")
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
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--promote-on", choices=LOSSES, default="vol_qlike")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    for field in ("num_samples", "max_epochs", "lookback", "vol_horizon", "holdout"):
        if getattr(args, field) < 1:
            ap.error(f"--{field.replace('_', '-')}: must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import mlflow
    import ray
    import torch

    from tradesys.data.returns import load_returns
    from tradesys.train.data import Standardizer, make_samples, purge_and_embargo
    from tradesys.train.export import export_onnx, export_torchscript
    from tradesys.train.registry import CHAMPION, alias_version, promote_if_better, register
    from tradesys.train.tracking import (
        log_artifacts,
        log_epoch_metrics,
        log_json,
        log_params,
        log_torch_model,
        setup_tracking,
    )
    from tradesys.train.tune import model_kwargs, run_search

    torch.set_num_threads(1)
    frame = load_returns(args.data)
    r = frame[args.symbol] if args.symbol else frame.iloc[:, 0]
    samples = make_samples(r, lookback=args.lookback, vol_horizon=args.vol_horizon)
    if args.max_samples:
        samples = samples.subset(np.arange(max(0, len(samples) - args.max_samples), len(samples)))
    n = len(samples)
    if args.holdout >= n - 10:
        raise ValueError(f"holdout: {args.holdout} leaves too few of {n} samples for training")
    test_idx = np.arange(n - args.holdout, n)
    split = purge_and_embargo(np.arange(n - args.holdout), test_idx, samples.t, samples.label_end)
    pool, test = samples.subset(split.train), samples.subset(test_idx)
    scaler = Standardizer.fit(samples, split.train)
    scaler_json = _standardizer_json(scaler)

    runs_dir = Path(args.runs_dir).expanduser().resolve()
    uri, _ = setup_tracking(args.experiment, args.mlflow_uri, runs_dir=runs_dir)
    if not ray.is_initialized():
        ray.init(num_cpus=None, include_dashboard=False)
    search = run_search(
        scaler.transform(pool), kinds=tuple(args.kinds), num_samples=args.num_samples, max_epochs=args.max_epochs,
        grace_period=min(args.grace_period, args.max_epochs), storage_path=runs_dir / "tune", tracking_uri=uri,
        experiment=args.experiment + "-tune", seed=args.seed,
    )  # fmt: skip
    setup_tracking(args.experiment, uri, runs_dir=runs_dir)  # the search's callback changed the active experiment
    model = search.model
    losses = holdout_losses(model, scaler_json, test)
    fc = losses.pop("_fc")  # type: ignore[arg-type]
    report = holdout_report(fc, pool, test)  # type: ignore[arg-type]
    name = args.registry_name
    with mlflow.start_run(run_name="train-" + search.trial_id) as run:
        log_params({
            "data": args.data, "symbol": str(r.name), "lookback": args.lookback, "vol_horizon": args.vol_horizon,
            "n_features": int(samples.X.shape[2]), "holdout": args.holdout, "n_train": len(pool),
            "purged": split.purged, "seed": args.seed, "num_trials": search.num_trials, "trial_id": search.trial_id,
            "model": {**search.best_config, **model_kwargs(search.best_config)},
        })  # fmt: skip
        hist = search.grid[[str(x.metrics.get("trial_id")) for x in search.grid].index(search.trial_id)]
        for _, row in hist.metrics_dataframe.iterrows():
            cols = [c for c in row.index if c.startswith(("train_", "val_", "s_"))]
            log_epoch_metrics({k: float(row[k]) for k in cols}, step=int(row["training_iteration"]) - 1)
        mlflow.log_metrics({f"holdout_{k}": float(np.mean(v)) for k, v in losses.items()})
        log_json(report, "holdout_report.json")
        log_json(scaler_json, "standardizer.json")
        with tempfile.TemporaryDirectory() as d:
            kw = {"lookback": args.lookback, "n_features": int(samples.X.shape[2]),
                  "output_names": ("ret", "vol", "dir_logit")}  # fmt: skip
            export_onnx(model, Path(d) / "model.onnx", **kw)
            export_torchscript(model, Path(d) / "model.pt", **kw)
            log_artifacts([Path(d) / "model.onnx", Path(d) / "model.pt"], artifact_path="exports")
        sample = scaler.transform(test.subset(np.arange(min(4, len(test))))).X
        info = log_torch_model(model, sample)
        run_id = run.info.run_id
    version = register(info.model_uri, name, tags={"trial_id": search.trial_id})
    champ_losses = _champion_losses(name, test, args.promote_on, args)
    h = args.vol_horizon if args.promote_on == "vol_qlike" else 1
    if champ_losses is None:
        promotion: dict[str, Any] = {"promoted": False, "reason": "incompatible_champion"}
        mlflow.MlflowClient().set_tag(run_id, "promotion.decision", "refused")
    else:
        promotion = promote_if_better(name, losses[args.promote_on], champ_losses, args.alpha, h=h).to_dict()
    summary = {
        "run_id": run_id, "tracking_uri": uri, "registry_name": name, "version": version,
        "champion": alias_version(name, CHAMPION), "best_config": search.best_config,
        "best_val_loss": float(search.best_metrics["val_loss"]), "num_trials": search.num_trials,
        "stopped_early": search.num_stopped_early, "holdout": report["metrics"], "promotion": promotion,
    }  # fmt: skip
    print(json.dumps(summary, indent=2, default=lambda o: None if isinstance(o, float) and math.isnan(o) else str(o)))
    return summary


if __name__ == "__main__":
    main()
