"""A plain, deterministic training loop for the multi-task forecasters (no Ray; a Ray Tune trainable wraps it).

Why plain: the Tune/Train/MLflow layers added later only need "config in, model and per-epoch metrics out", plus
a per-epoch callback to report to Tune and log to MLflow. Keeping the loop free of those imports keeps it testable
in a second and usable anywhere.

Conventions: AdamW over the model's and the `MultiTaskLoss`'s parameters; the validation split is the LAST
``val_fraction`` of the (time-ordered, already standardised) training samples, with the ``purge`` samples before it
dropped so validation labels do not overlap training labels (pass the vol horizon); early stopping on the
validation total loss with ``patience`` epochs, the best epoch's weights restored; gradient norm clipped at
``clip_norm``; `seed_everything` seeds Python, numpy and torch and the batch order comes from a seeded generator,
so a run on the same CPU build repeats bit for bit.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from tradesys.train.data import Samples
from tradesys.train.models import MultiTaskLoss, task_losses

__all__ = ["FitConfig", "FitResult", "evaluate_losses", "fit_model", "predict", "seed_everything"]


@dataclass(frozen=True)
class FitConfig:
    """Training hyper-parameters (all plain values, so a Tune search space maps onto them)."""

    epochs: int = 50
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 8
    clip_norm: float = 1.0
    val_fraction: float = 0.2
    purge: int = 0
    seed: int = 0
    uncertainty_weighting: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FitResult:
    """The trained model (best validation epoch restored), the loss weighting, and per-epoch history rows."""

    model: nn.Module
    loss: MultiTaskLoss
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_val_loss: float = math.inf


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _tensors(s: Samples) -> tuple[torch.Tensor, ...]:
    return (
        torch.as_tensor(s.X, dtype=torch.float32),
        torch.as_tensor(s.y_ret, dtype=torch.float32),
        torch.as_tensor(s.y_vol, dtype=torch.float32),
        torch.as_tensor(s.y_dir, dtype=torch.float32),
    )


def _check(config: FitConfig) -> None:
    if config.epochs < 1 or config.batch_size < 1:
        raise ValueError(f"epochs/batch_size: must be >= 1, got {config.epochs}/{config.batch_size}")
    if not 0.0 <= config.val_fraction < 1.0:
        raise ValueError(f"val_fraction: must be in [0, 1), got {config.val_fraction}")
    if config.lr <= 0 or config.clip_norm <= 0:
        raise ValueError(f"lr/clip_norm: must be > 0, got {config.lr}/{config.clip_norm}")


def fit_model(
    model: nn.Module,
    train: Samples,
    config: FitConfig = FitConfig(),  # frozen dataclass: an immutable default
    *,
    val: Samples | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> FitResult:
    """Train `model` on standardised `train` samples; returns the model with the best validation weights.

    `val` overrides the internal validation split. With val_fraction = 0 and no `val`, there is no early stopping
    and the last epoch is kept. `on_epoch` gets each history row (epoch, train_loss, val_loss, per-task val losses,
    the s_i), e.g. to call `ray.train.report` or `mlflow.log_metrics`.
    """
    _check(config)
    seed_everything(config.seed)
    if val is None and config.val_fraction > 0:
        n_val = max(1, round(len(train) * config.val_fraction))
        n_tr = len(train) - n_val - config.purge
        if n_tr < 1:
            raise ValueError(f"train: {len(train)} samples are too few for val_fraction={config.val_fraction}")
        val = train.subset(np.arange(len(train) - n_val, len(train)))
        train = train.subset(np.arange(n_tr))
    loss_fn = MultiTaskLoss()
    if not config.uncertainty_weighting:
        loss_fn.log_vars.requires_grad_(False)
    params = [p for p in [*model.parameters(), *loss_fn.parameters()] if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    Xt, rt, vt, dt = _tensors(train)
    gen = torch.Generator().manual_seed(config.seed)
    result = FitResult(model=model, loss=loss_fn)
    best_state: dict[str, Any] | None = None
    since_best = 0
    for epoch in range(config.epochs):
        model.train()
        perm = torch.randperm(len(Xt), generator=gen)
        total, count = 0.0, 0
        for a in range(0, len(perm), config.batch_size):
            b = perm[a : a + config.batch_size]
            losses = task_losses(model(Xt[b]), rt[b], vt[b], dt[b])
            loss = loss_fn(losses)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.clip_norm)
            opt.step()
            total += float(loss.detach()) * len(b)
            count += len(b)
        row: dict[str, float] = {"epoch": float(epoch), "train_loss": total / count}
        s_i = loss_fn.log_vars.detach().tolist()
        row.update({f"s_{name}": float(v) for name, v in zip(("ret", "vol", "dir"), s_i, strict=True)})
        if val is not None:
            vl = evaluate_losses(model, loss_fn, val)
            row.update(vl)
            if vl["val_loss"] < result.best_val_loss - 1e-9:
                result.best_val_loss, result.best_epoch, since_best = vl["val_loss"], epoch, 0
                best_state = copy.deepcopy((model.state_dict(), loss_fn.state_dict()))
            else:
                since_best += 1
        result.history.append(row)
        if on_epoch is not None:
            on_epoch(row)
        if val is not None and since_best >= config.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state[0])
        loss_fn.load_state_dict(best_state[1])
    else:
        result.best_epoch = len(result.history) - 1
    model.eval()
    return result


@torch.no_grad()
def evaluate_losses(model: nn.Module, loss_fn: MultiTaskLoss, samples: Samples) -> dict[str, float]:
    """Validation total loss and per-task mean losses (MSE ret, MSE vol, BCE dir) in eval mode."""
    model.eval()
    X, r, v, d = _tensors(samples)
    losses = task_losses(model(X), r, v, d)
    return {
        "val_loss": float(loss_fn(losses)),
        "val_ret_mse": float(losses[0]),
        "val_vol_mse": float(losses[1]),
        "val_dir_bce": float(losses[2]),
    }


@torch.no_grad()
def predict(model: nn.Module, samples: Samples, batch_size: int = 1024) -> dict[str, np.ndarray]:
    """Model outputs for standardised samples, in the model's (scaled) units: ret, vol, p_up (= sigmoid logit)."""
    model.eval()
    X = torch.as_tensor(samples.X, dtype=torch.float32)
    outs: list[tuple[torch.Tensor, ...]] = [model(X[a : a + batch_size]) for a in range(0, len(X), batch_size)]
    ret = torch.cat([o[0] for o in outs]).numpy().astype(np.float64)
    vol = torch.cat([o[1] for o in outs]).numpy().astype(np.float64)
    p_up = torch.sigmoid(torch.cat([o[2] for o in outs])).numpy().astype(np.float64)
    return {"ret": ret, "vol": vol, "p_up": p_up}
