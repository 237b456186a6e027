"""Ray Train data-parallel training of one forecaster configuration: ``TorchTrainer`` + DDP, CPU (gloo) or GPU.

Why: Tune searches many small models, one CPU each; once a configuration is chosen, a bigger data set or model
trains faster spread over several workers (or GPUs). This is the same model and loss as `tradesys.train.fit`, with
the same validation split, so its ``val_loss`` is comparable with the search's.

Conventions:

* No search: the caller passes one config (``kind``, ``width``, ``n_layers``, ``lr``; optional ``batch_size``,
  ``patience``, ``weight_decay``, ``clip_norm``), e.g. the best one a Tune search found.
* Data: the standardised training `Samples` go to the object store once; every worker reads all of them. The
  validation split is `fit_model`'s: the last ``val_fraction`` of the samples, with the ``purge`` (= vol horizon)
  samples before it dropped. Every epoch all workers draw the same seeded permutation, cut it into global batches
  of ``batch_size`` and worker r takes rows r, r + W, r + 2W, ... of each batch (W workers), so one epoch sees each
  training sample once across the workers. A last batch with fewer than W rows is skipped (every worker must
  step together).
* Model and loss: the forecaster and its `MultiTaskLoss` (the learned s_i) sit in one module wrapped by
  ``ray.train.torch.prepare_model`` (DDP when W > 1), so their gradients are averaged across workers and every
  worker holds the same parameters after each step. AdamW, gradient clipping and seeding as in `fit_model`.
* Backend: gloo on CPU, NCCL with ``use_gpu``; one CPU (or one GPU) per worker. `check_resources` refuses before
  anything starts when the cluster lacks them (``use_gpu`` without a GPU, or fewer CPUs/GPUs than workers).
* Reports: every epoch each worker calls ``ray.train.report`` with the epoch's metrics (rank 0's are kept:
  ``train_loss``, ``val_loss``, per-task validation losses, the s_i) and a checkpoint directory that the workers'
  files are merged into: ``model.pt`` (state dict) and ``config.json`` from rank 0 (the layout
  `tradesys.train.tune.load_checkpoint_model` reads) and ``rank<r>.pt`` from every rank (its own parameters, for
  audit: they must be equal). The two checkpoints with the smallest ``val_loss`` are kept; the best one is loaded.
* Early stopping: after ``patience`` epochs without a smaller ``val_loss`` (all workers agree via an all-reduce).
"""

from __future__ import annotations

import json
import math
import os
import queue as _queue
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tradesys.storage import checkpoint_uri, ray_storage
from tradesys.train.data import Samples
from tradesys.train.fit import FitConfig, seed_everything
from tradesys.train.models import MultiTaskLoss, build_model, task_losses
from tradesys.train.tune import KINDS, METRIC, MODE, load_checkpoint_model, model_kwargs

__all__ = ["DistributedOutcome", "check_resources", "train_distributed", "validate_hparams"]

HPARAM_KEYS = ("kind", "width", "n_layers", "lr", "batch_size", "patience", "weight_decay", "clip_norm")


@dataclass
class DistributedOutcome:
    """The best checkpoint's model and metrics row, every epoch's rank-0 metrics, and Ray Train's Result."""

    model: nn.Module
    config: dict[str, Any]
    best_metrics: dict[str, Any]
    history: list[dict[str, float]]
    checkpoint_path: str
    result: Any  # ray.train.Result
    num_workers: int
    use_gpu: bool


def validate_hparams(hp: Mapping[str, Any], field: str = "hparams") -> dict[str, Any]:
    """Check a single configuration (module conventions); returns a plain dict with the types normalised."""
    unknown = sorted(set(hp) - set(HPARAM_KEYS))
    if unknown:
        raise ValueError(f"{field}: unknown key(s) {unknown}; allowed {list(HPARAM_KEYS)}")
    missing = [k for k in ("kind", "width", "n_layers", "lr") if k not in hp]
    if missing:
        raise ValueError(f"{field}: missing {missing}")
    out = dict(hp)
    if out["kind"] not in KINDS:
        raise ValueError(f"{field}.kind: must be one of {KINDS}, got {out['kind']!r}")
    for k in ("width", "n_layers", "batch_size", "patience"):
        if k in out:
            v = out[k]
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{field}.{k}: must be an integer >= 1, got {v!r}")
            out[k] = int(v)
    if out["width"] % 4:
        raise ValueError(f"{field}.width: must be a multiple of 4 (Transformer heads), got {out['width']}")
    for k in ("lr", "weight_decay", "clip_norm"):
        if k in out:
            v = out[k]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{field}.{k}: must be a finite number >= 0, got {v!r}")
            out[k] = float(v)
    if out["lr"] <= 0:
        raise ValueError(f"{field}.lr: must be > 0, got {out['lr']}")
    return out


def check_resources(num_workers: int, use_gpu: bool) -> None:
    """Refuse (ValueError) when the connected Ray cluster lacks the GPUs/CPUs the workers need, before starting.

    Checked against the cluster's current total resources; an autoscaling cluster must be scaled up first.
    """
    import ray

    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(f"num_workers: must be an integer >= 1, got {num_workers!r}")
    total = ray.cluster_resources()
    if use_gpu and total.get("GPU", 0) < 1:
        raise ValueError("use_gpu: the Ray cluster has no GPU; drop use_gpu or connect to a cluster with GPUs")
    need = "GPU" if use_gpu else "CPU"
    have = float(total.get(need, 0))
    if have < num_workers:
        raise ValueError(f"num_workers: {num_workers} workers need {num_workers} {need}(s); the cluster has {have:g}")


class _Objective(nn.Module):
    """Model and multi-task loss in one module, so DDP averages the gradients of both."""

    def __init__(self, model: nn.Module, loss: MultiTaskLoss) -> None:
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, x: torch.Tensor, r: torch.Tensor, v: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return self.loss(task_losses(self.model(x), r, v, d))


def _split(train: Samples, val_fraction: float, purge: int) -> tuple[Samples, Samples]:
    """`fit_model`'s validation split: the last val_fraction of the samples, with `purge` samples before it dropped."""
    n_val = max(1, round(len(train) * val_fraction))
    n_tr = len(train) - n_val - purge
    if n_tr < 1:
        raise ValueError(f"train: {len(train)} samples are too few for val_fraction={val_fraction}")
    return train.subset(np.arange(n_tr)), train.subset(np.arange(len(train) - n_val, len(train)))


def _tensors(s: Samples, device: torch.device) -> tuple[torch.Tensor, ...]:
    arrays = (s.X, s.y_ret, s.y_vol, s.y_dir)
    return tuple(torch.as_tensor(np.asarray(a), dtype=torch.float32, device=device) for a in arrays)


def _worker_loop(cfg: dict[str, Any]) -> list[dict[str, float]]:
    """Per-worker training function (module conventions); returns rank 0's history."""
    import ray
    import ray.train
    import ray.train.torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    train: Samples = ray.get(cfg["data"]) if isinstance(cfg["data"], ray.ObjectRef) else cfg["data"]
    hp, fit = cfg["hparams"], FitConfig(**cfg["fit"])
    device = ray.train.torch.get_device()
    seed_everything(fit.seed)
    n_features = int(train.X.shape[2])
    net = build_model(hp["kind"], n_features, **model_kwargs(hp))
    loss_fn = MultiTaskLoss()
    objective = ray.train.torch.prepare_model(_Objective(net, loss_fn))  # DDP when world > 1, moved to device
    inner: _Objective = objective.module if hasattr(objective, "module") else objective
    params = [p for p in objective.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=fit.lr, weight_decay=fit.weight_decay)
    tr, val = _split(train, fit.val_fraction, fit.purge)
    Xt, rt, vt, dt = _tensors(tr, device)
    Xv, rv, vv, dv = _tensors(val, device)
    gen = torch.Generator().manual_seed(fit.seed)
    progress = cfg.get("progress")
    history: list[dict[str, float]] = []
    best, since_best = math.inf, 0
    for epoch in range(fit.epochs):
        objective.train()
        perm = torch.randperm(len(Xt), generator=gen)
        total, count = 0.0, 0
        for a in range(0, len(perm), fit.batch_size):
            b = perm[a : a + fit.batch_size]
            if len(b) < world:
                continue
            mine = b[rank::world].to(device)
            loss = objective(Xt[mine], rt[mine], vt[mine], dt[mine])
            opt.zero_grad(set_to_none=True)
            loss.backward()  # DDP all-reduces (averages) the gradients here
            torch.nn.utils.clip_grad_norm_(params, fit.clip_norm)
            opt.step()
            total += float(loss.detach()) * len(mine)
            count += len(mine)
        sums = torch.tensor([total, float(count)], dtype=torch.float64, device=device)
        if world > 1:
            dist.all_reduce(sums)
        inner.eval()
        with torch.no_grad():
            losses = task_losses(inner.model(Xv), rv, vv, dv)
            val_loss = float(inner.loss(losses))
        s_i = inner.loss.log_vars.detach().cpu().tolist()
        row = {
            "epoch": float(epoch),
            "train_loss": float(sums[0] / max(sums[1], 1.0)),
            "val_loss": val_loss,
            "val_ret_mse": float(losses[0]),
            "val_vol_mse": float(losses[1]),
            "val_dir_bce": float(losses[2]),
            **{f"s_{k}": float(v) for k, v in zip(("ret", "vol", "dir"), s_i, strict=True)},
        }
        history.append(row)
        if val_loss < best - 1e-9:
            best, since_best = val_loss, 0
        else:
            since_best += 1
        state = {k: t.detach().cpu() for k, t in inner.model.state_dict().items()}
        with tempfile.TemporaryDirectory() as d:
            torch.save(state, os.path.join(d, f"rank{rank}.pt"))
            if rank == 0:
                torch.save(state, os.path.join(d, "model.pt"))
                torch.save(inner.loss.state_dict(), os.path.join(d, "loss.pt"))
                Path(d, "config.json").write_text(json.dumps({**hp, "n_features": n_features}))
            ray.train.report(
                {**row, "rank": rank, "world_size": world},
                checkpoint=ray.train.Checkpoint.from_directory(d),
                checkpoint_dir_name=f"epoch_{epoch:04d}",
            )
        if rank == 0 and progress is not None:
            progress.put({"epoch": epoch + 1, "metrics": {"train_loss": row["train_loss"], "val_loss": val_loss}})
        stop = torch.tensor([1.0 if since_best >= fit.patience else 0.0], device=device)
        if world > 1:
            dist.all_reduce(stop, op=dist.ReduceOp.MAX)
        if float(stop[0]) > 0:
            break
    return history


def train_distributed(
    train: Samples,
    hparams: Mapping[str, Any],
    *,
    num_workers: int = 2,
    use_gpu: bool = False,
    max_epochs: int = 10,
    seed: int = 0,
    val_fraction: float = 0.2,
    storage_path: str | os.PathLike[str] = "runs/train",
    name: str | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> DistributedOutcome:
    """Train one configuration with a ``TorchTrainer`` on the connected Ray cluster (module conventions).

    `train` must be standardised (fit the `Standardizer` on the training pool first). `on_epoch` is called in the
    calling thread with ``{"epoch": k (1-based), "metrics": {train_loss, val_loss}}`` as rank 0 finishes each
    epoch (relayed through a ``ray.util.queue.Queue``). Raises ValueError on bad arguments or missing resources,
    RuntimeError when training fails.
    """
    import ray
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    hp = validate_hparams(hparams)
    if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1:
        raise ValueError(f"max_epochs: must be an integer >= 1, got {max_epochs!r}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction: must be in (0, 1), got {val_fraction}")
    _split(train, val_fraction, train.vol_horizon)  # too few samples: fail here, not in a worker
    if not ray.is_initialized():
        raise RuntimeError("train_distributed: connect to Ray first (ray.init)")
    check_resources(num_workers, use_gpu)
    fit = FitConfig(
        epochs=max_epochs, batch_size=int(hp.get("batch_size", 64)), lr=float(hp["lr"]),
        weight_decay=float(hp.get("weight_decay", 1e-4)), patience=int(hp.get("patience", max_epochs)),
        clip_norm=float(hp.get("clip_norm", 1.0)), val_fraction=val_fraction, purge=train.vol_horizon, seed=seed,
    )  # fmt: skip
    progress = None
    if on_epoch is not None:
        from ray.util.queue import Queue

        progress = Queue(actor_options={"num_cpus": 0})
    location = str(storage_path)
    where, filesystem = ray_storage(location if location.startswith("s3://") else
                                    str(Path(location).expanduser().resolve()))  # fmt: skip
    run_name = name or f"forecaster-train-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"data": ray.put(train), "hparams": hp, "fit": fit.to_dict(), "progress": progress},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
        run_config=RunConfig(
            name=run_name,
            storage_path=where,  # Ray Train needs an absolute path (or a bucket path with its file system)
            storage_filesystem=filesystem,
            checkpoint_config=CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute=METRIC, checkpoint_score_order=MODE
            ),
        ),
    )  # fmt: skip
    try:
        result = _fit_relaying(trainer, progress, on_epoch)
    finally:
        if progress is not None:
            progress.shutdown()
    if result.error is not None:
        raise RuntimeError(f"train_distributed: training failed: {result.error!r}")
    scored = [(c, m) for c, m in (result.best_checkpoints or []) if math.isfinite(float(m.get(METRIC, math.nan)))]
    if not scored:
        raise RuntimeError("train_distributed: no checkpoint with a finite val_loss was reported")
    ckpt, metrics = min(scored, key=lambda cm: float(cm[1][METRIC]))
    with ckpt.as_directory() as d:
        model, config = load_checkpoint_model(d)
    history = list(result.return_value or [])
    return DistributedOutcome(
        model=model, config=config, best_metrics=dict(metrics), history=history, checkpoint_path=checkpoint_uri(ckpt),
        result=result, num_workers=num_workers, use_gpu=use_gpu,
    )  # fmt: skip


def _fit_relaying(trainer: Any, progress: Any, on_epoch: Callable[[dict[str, Any]], None] | None) -> Any:
    """``trainer.fit()`` in a helper thread while this thread relays the progress queue to `on_epoch`."""
    if progress is None or on_epoch is None:
        return trainer.fit()
    from ray.util.queue import Empty

    with ThreadPoolExecutor(max_workers=1) as pool:
        fut = pool.submit(trainer.fit)
        while True:
            done = fut.done()
            try:
                while True:
                    on_epoch(progress.get_nowait())
            except (Empty, _queue.Empty):
                pass
            if done:
                return fut.result()
            time.sleep(0.2)
