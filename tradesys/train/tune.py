"""Ray Tune hyper-parameter search for the forecasters: ASHA over model kind, width, depth and learning rate.

Why ASHA: most configurations are visibly worse after an epoch or two; the asynchronous successive-halving
scheduler (Li et al. 2020) stops them at rungs of 1, 2, 4, ... epochs and spends the CPU on the promising ones.

Conventions:

* The trainable (`train_forecaster`) gets already standardised training samples (fit the `Standardizer` on the
  training pool before calling `run_search`; the holdout is never seen here). It calls
  `tradesys.train.fit.fit_model` with ``purge = vol_horizon`` so its internal validation split (the last
  ``val_fraction`` of the samples) has no label overlap with what it trains on, and reports every epoch's history
  row through ``tune.report`` with a checkpoint (``model.pt``: the state dict; ``config.json``: the trial config).
* The selection metric is ``val_loss`` (the uncertainty-weighted multi-task validation loss that `fit_model` early
  stops on), minimised; the best trial is the one with the smallest ``val_loss`` at any reported epoch
  (``scope="all"``) and its best checkpoint is the one with that loss.
* Search space (`default_search_space`): ``kind`` in the given kinds, ``width`` (LSTM hidden size / Transformer
  d_model) in {8, 16, 32}, ``n_layers`` in {1, 2}, ``lr`` log-uniform in [3e-4, 3e-3]. `model_kwargs` maps a
  config to `build_model` keyword arguments (Transformer: 4 heads, feed-forward 2 x width).
* MLflow: one run per trial through Ray's ``MLflowLoggerCallback`` (it logs from the driver, so the SQLite store has
  a single writer): the trial config as parameters and each report as metrics at step = training iteration.
* Each trial uses one CPU and one torch thread.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tradesys.storage import Storage, checkpoint_uri
from tradesys.train.data import Samples
from tradesys.train.fit import FitConfig, fit_model
from tradesys.train.models import build_model

__all__ = [
    "METRIC",
    "MODE",
    "SearchOutcome",
    "default_search_space",
    "load_checkpoint_model",
    "model_kwargs",
    "progress_callback",
    "run_search",
    "train_forecaster",
]

METRIC = "val_loss"
MODE = "min"
KINDS = ("lstm", "transformer")


def default_search_space(
    kinds: tuple[str, ...] = KINDS,
    *,
    widths: tuple[int, ...] = (8, 16, 32),
    layers: tuple[int, ...] = (1, 2),
    lr: tuple[float, float] = (3e-4, 3e-3),
) -> dict[str, Any]:
    """The Tune ``param_space`` (module docstring)."""
    from ray import tune

    bad = [k for k in kinds if k not in KINDS]
    if not kinds or bad:
        raise ValueError(f"kinds: each must be one of {KINDS}, got {list(kinds)}")
    if any(w < 4 or w % 4 for w in widths):
        raise ValueError(f"widths: must be multiples of 4 (Transformer heads), got {list(widths)}")
    if not 0 < lr[0] < lr[1]:
        raise ValueError(f"lr: need 0 < low < high, got {lr}")
    return {
        "kind": tune.choice(list(kinds)),
        "width": tune.choice(list(widths)),
        "n_layers": tune.choice(list(layers)),
        "lr": tune.loguniform(lr[0], lr[1]),
    }


def model_kwargs(config: dict[str, Any]) -> dict[str, int | float]:
    """`build_model` keyword arguments for a trial config (kind, width, n_layers)."""
    w, n = int(config["width"]), int(config["n_layers"])
    if config["kind"] == "lstm":
        return {"hidden": w, "n_layers": n}
    if config["kind"] == "transformer":
        return {"d_model": w, "n_heads": 4, "n_layers": n, "dim_feedforward": 2 * w}
    raise ValueError(f"kind: must be one of {KINDS}, got {config['kind']!r}")


def _build(config: dict[str, Any], n_features: int) -> nn.Module:
    return build_model(config["kind"], n_features, **model_kwargs(config))


def train_forecaster(config: dict[str, Any], train: Samples, max_epochs: int = 10, seed: int = 0) -> None:
    """Tune function trainable: fit one config on `train` (standardised), reporting each epoch with a checkpoint."""
    from ray import tune

    torch.set_num_threads(1)
    model = _build(config, train.X.shape[2])
    fit_cfg = FitConfig(
        epochs=max_epochs, lr=float(config["lr"]), purge=train.vol_horizon, seed=seed,
        patience=int(config.get("patience", max_epochs)), batch_size=int(config.get("batch_size", 64)),
    )  # fmt: skip

    def on_epoch(row: dict[str, float]) -> None:
        with tempfile.TemporaryDirectory() as d:
            torch.save(model.state_dict(), os.path.join(d, "model.pt"))
            Path(d, "config.json").write_text(json.dumps({**config, "n_features": int(train.X.shape[2])}))
            tune.report(dict(row), checkpoint=tune.Checkpoint.from_directory(d))

    fit_model(model, train, fit_cfg, on_epoch=on_epoch)


def load_checkpoint_model(path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model saved by `train_forecaster` in a checkpoint directory; returns (model in eval mode, config)."""
    d = Path(path)
    if not (d / "model.pt").is_file() or not (d / "config.json").is_file():
        raise ValueError(f"checkpoint: {str(d)!r} has no model.pt/config.json")
    config = json.loads((d / "config.json").read_text())
    model = _build(config, int(config["n_features"]))
    model.load_state_dict(torch.load(d / "model.pt", weights_only=True))
    model.eval()
    return model, config


PROGRESS_METRICS = ("train_loss", "val_loss")


def progress_callback(fn: Callable[[dict[str, Any]], None]) -> Any:
    """A ``ray.tune.Callback`` that forwards each trial's per-epoch report and its end to `fn` in the driver.

    Events (plain dicts): ``{"event": "trial_result", "trial_id", "epoch", "metrics": {train_loss, val_loss}}``
    after every report (``epoch`` = Tune's ``training_iteration``, 1-based) and ``{"event": "trial_complete",
    "trial_id", "epochs", "status"}`` when a trial ends (``status``: "terminated", including ASHA stops, or
    "error"). Tune runs callbacks in the driver, so `fn` may touch driver-side state such as a rich Progress.
    The class is built on first use so importing this module does not import Ray Tune.
    """
    global _ProgressCallback
    if _ProgressCallback is None:
        from ray.tune import Callback

        class ProgressCallback(Callback):
            def __init__(self, fn: Callable[[dict[str, Any]], None] | None) -> None:
                self.fn = fn

            def __getstate__(self) -> dict[str, Any]:
                return {**self.__dict__, "fn": None}  # Tune pickles its callbacks; a progress bar is driver-only

            def _emit(self, event: dict[str, Any]) -> None:
                if self.fn is not None:
                    self.fn(event)

            @staticmethod
            def _epochs(trial: Any) -> int:
                return int((trial.last_result or {}).get("training_iteration", 0) or 0)

            def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                                **info: Any) -> None:  # fmt: skip
                metrics = {k: float(result[k]) for k in PROGRESS_METRICS
                           if k in result and math.isfinite(float(result[k]))}  # fmt: skip
                self._emit({"event": "trial_result", "trial_id": str(trial.trial_id),
                         "epoch": int(result.get("training_iteration", 0)), "metrics": metrics})  # fmt: skip

            def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
                self._emit({"event": "trial_complete", "trial_id": str(trial.trial_id), "epochs": self._epochs(trial),
                         "status": "terminated"})  # fmt: skip

            def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
                self._emit({"event": "trial_complete", "trial_id": str(trial.trial_id), "epochs": self._epochs(trial),
                         "status": "error"})  # fmt: skip

        _ProgressCallback = ProgressCallback
    return _ProgressCallback(fn)


_ProgressCallback: Any = None


@dataclass
class SearchOutcome:
    """The best trial: its config, its best reported metrics row, its best checkpoint's model, and the whole grid."""

    best_config: dict[str, Any]
    best_metrics: dict[str, Any]
    model: nn.Module
    checkpoint_path: str  # a local path or an s3:// URI
    trial_id: str
    grid: Any  # ray.tune.ResultGrid
    num_trials: int
    num_stopped_early: int  # trials that reported fewer than max_epochs epochs (ASHA or early stopping)


def run_search(
    train: Samples,
    *,
    kinds: tuple[str, ...] = KINDS,
    num_samples: int = 8,
    max_epochs: int = 10,
    grace_period: int = 1,
    reduction_factor: int = 2,
    param_space: dict[str, Any] | None = None,
    storage_path: str | os.PathLike[str] = "runs/tune",
    name: str = "forecaster-search",
    tracking_uri: str | None = None,
    experiment: str = "tradesys-tune",
    seed: int = 0,
    max_concurrent: int | None = None,
    callbacks: Sequence[Any] = (),
    artifact_storage: Storage | None = None,
) -> SearchOutcome:
    """Run the ASHA search on an initialised (or local auto-started) Ray; MLflow per trial when `tracking_uri`.

    `callbacks` are extra ``ray.tune.Callback`` objects (e.g. `progress_callback(fn)`), called in the driver.
    `storage_path` is a path or an ``s3://`` URI (`tradesys.storage`); `artifact_storage` says where a new MLflow
    experiment keeps its artifacts (default: beside the SQLite store, or under `storage_path`'s parent)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from tradesys.storage import ensure_experiment as ensure_storage_experiment
    from tradesys.storage import parse_storage, ray_storage

    if num_samples < 1 or max_epochs < 1 or grace_period < 1 or grace_period > max_epochs:
        raise ValueError(
            f"num_samples/max_epochs/grace_period: need >= 1 and grace <= max_epochs, got "
            f"{num_samples}/{max_epochs}/{grace_period}"
        )
    space = dict(param_space) if param_space is not None else default_search_space(kinds)
    cbs: list[Any] = []
    if tracking_uri is not None:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        from tradesys.train.tracking import ensure_experiment

        location = str(storage_path)
        if artifact_storage is None and location.startswith("s3://"):
            artifact_storage = parse_storage(location.rstrip("/").rsplit("/", 1)[0], setting="storage_path")
        if artifact_storage is not None:
            ensure_storage_experiment(experiment, tracking_uri, artifact_storage)
        else:
            ensure_experiment(experiment, tracking_uri, runs_dir=Path(storage_path).parent)
        cbs.append(
            MLflowLoggerCallback(tracking_uri=tracking_uri, registry_uri=tracking_uri, experiment_name=experiment,
                                 tags={"search": name}, save_artifact=False)
        )  # fmt: skip
    cbs.extend(callbacks)
    scheduler = ASHAScheduler(
        time_attr="training_iteration", max_t=max_epochs, grace_period=grace_period, reduction_factor=reduction_factor
    )
    trainable = tune.with_resources(
        tune.with_parameters(train_forecaster, train=train, max_epochs=max_epochs, seed=seed), {"cpu": 1}
    )
    location = str(storage_path)
    where, filesystem = ray_storage(location if location.startswith("s3://") else
                                    str(Path(location).expanduser().resolve()))  # fmt: skip
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            metric=METRIC, mode=MODE, scheduler=scheduler, num_samples=num_samples,
            max_concurrent_trials=max_concurrent,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=where,
            storage_filesystem=filesystem,
            callbacks=cbs,
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute=METRIC, checkpoint_score_order=MODE
            ),
            verbose=0,
        ),
    )  # fmt: skip
    grid = tuner.fit()
    errors = [r.error for r in grid if r.error is not None]
    if len(errors) == len(grid):
        raise RuntimeError(f"run_search: every trial failed; first error: {errors[0]!r}")
    best = grid.get_best_result(metric=METRIC, mode=MODE, scope="all")
    ckpt = best.get_best_checkpoint(METRIC, MODE)
    if ckpt is None:
        raise RuntimeError("run_search: the best trial left no checkpoint")
    with ckpt.as_directory() as d:
        model, _ = load_checkpoint_model(d)
    df = best.metrics_dataframe
    best_row = df.loc[df[METRIC].idxmin()].to_dict() if df is not None and METRIC in df else dict(best.metrics)
    stopped = sum(
        1 for r in grid if r.error is None and int(r.metrics.get("training_iteration", max_epochs)) < max_epochs
    )
    return SearchOutcome(
        best_config={k: best.config[k] for k in best.config},
        best_metrics=best_row,
        model=model,
        checkpoint_path=checkpoint_uri(ckpt),
        trial_id=str(best.metrics.get("trial_id", "")),
        grid=grid,
        num_trials=len(grid),
        num_stopped_early=stopped,
    )
