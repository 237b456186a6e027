"""Ray Train (TorchTrainer, DDP over gloo) on a tiny S&P 500 slice, and the pipeline's ray-train path.

References: (1) the best checkpoint's model, re-scored with plain `evaluate_losses` on the same validation split,
reproduces the val_loss Ray Train reported; (2) both workers' parameters, saved per rank into every checkpoint,
are bit-identical (gradient synchronisation); (3) a single-process replay in plain torch, with no Ray and no DDP,
that averages the two shards' losses per global batch (what DDP's gradient all-reduce computes) and keeps each
worker's dropout random stream, ends with the same parameters; (4) the pipeline picks the registry champion's
configuration when none is given and logs the run to MLflow.
"""

from __future__ import annotations

import math
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from tradesys.data.returns import load_returns
from tradesys.train.data import Standardizer, make_samples
from tradesys.train.fit import FitConfig, evaluate_losses, seed_everything
from tradesys.train.models import MultiTaskLoss, build_model, task_losses

pytestmark = [pytest.mark.ray, pytest.mark.slow]

HP = {"kind": "lstm", "width": 8, "n_layers": 1, "lr": 3e-3}
EPOCHS = 2
WORKERS = 2


@pytest.fixture(scope="module")
def tiny_train():
    r = load_returns("sp500").iloc[-420:, 0]
    s = make_samples(r, lookback=8, vol_horizon=3)
    return Standardizer.fit(s).transform(s)


def val_split(s):
    n = len(s)
    n_val = max(1, round(n * FitConfig().val_fraction))
    return s.subset(np.arange(n - n_val - s.vol_horizon)), s.subset(np.arange(n - n_val, n))


def replay(train, hp: dict, epochs: int, world: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Plain-torch, single-process data-parallel SGD: per global batch, the mean of the W shard losses."""
    torch.set_num_threads(1)
    cfg = FitConfig(lr=hp["lr"])
    seed_everything(seed)
    model = build_model("lstm", train.X.shape[2], hidden=hp["width"], n_layers=hp["n_layers"])
    loss_fn = MultiTaskLoss()
    rng = [torch.get_rng_state() for _ in range(world)]  # each worker's own dropout stream, seeded alike
    params = [*model.parameters(), *loss_fn.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    tr, _ = val_split(train)
    X, r, v, d = (torch.as_tensor(np.asarray(a), dtype=torch.float32) for a in (tr.X, tr.y_ret, tr.y_vol, tr.y_dir))
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(X), generator=gen)
        for a in range(0, len(perm), cfg.batch_size):
            b = perm[a : a + cfg.batch_size]
            if len(b) < world:
                continue
            shard_losses = []
            for w in range(world):
                torch.set_rng_state(rng[w])
                i = b[w::world]
                shard_losses.append(loss_fn(task_losses(model(X[i]), r[i], v[i], d[i])))
                rng[w] = torch.get_rng_state()
            opt.zero_grad(set_to_none=True)
            (sum(shard_losses) / world).backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm)
            opt.step()
    return {k: t.detach() for k, t in model.state_dict().items()}


def test_two_workers_ddp_checkpoint_rescoring_and_sync(ray_session, tiny_train, tmp_path: Path) -> None:
    from tradesys.train.distributed import train_distributed

    events: list[dict] = []
    out = train_distributed(tiny_train, HP, num_workers=WORKERS, max_epochs=EPOCHS, seed=0,
                            storage_path=tmp_path / "train", on_epoch=events.append)  # fmt: skip
    assert [e["epoch"] for e in events] == [1, 2]
    assert [e["metrics"]["val_loss"] for e in events] == [h["val_loss"] for h in out.history]
    assert out.best_metrics["world_size"] == WORKERS and len(out.result.best_checkpoints) == EPOCHS
    assert out.best_metrics["val_loss"] == min(h["val_loss"] for h in out.history)

    # (1) the best checkpoint's weights really scored the reported val_loss (s_i from the same report)
    _, val = val_split(tiny_train)
    loss_fn = MultiTaskLoss()
    with torch.no_grad():
        loss_fn.log_vars.copy_(torch.tensor([out.best_metrics[f"s_{k}"] for k in ("ret", "vol", "dir")]))
    rescored = evaluate_losses(out.model, loss_fn, val)
    assert rescored["val_loss"] == pytest.approx(out.best_metrics["val_loss"], rel=1e-5)
    assert rescored["val_vol_mse"] == pytest.approx(out.best_metrics["val_vol_mse"], rel=1e-5)

    # (2) every kept checkpoint holds both ranks' parameters, bit-identical
    for ckpt, metrics in out.result.best_checkpoints:
        with ckpt.as_directory() as d:
            p0 = torch.load(Path(d) / "rank0.pt", weights_only=True)
            p1 = torch.load(Path(d) / "rank1.pt", weights_only=True)
        assert p0.keys() == p1.keys() and all(torch.equal(p0[k], p1[k]) for k in p0), metrics["epoch"]
    # ... and they moved: a worker that trained alone on its shard would not match the other one
    with out.result.checkpoint.as_directory() as d:
        final = torch.load(Path(d) / "rank0.pt", weights_only=True)
    seed_everything(0)
    init = build_model("lstm", tiny_train.X.shape[2], hidden=8, n_layers=1).state_dict()
    assert any(not torch.equal(init[k], final[k]) for k in init)

    # (3) the synchronised training equals the plain-torch replay of averaged shard gradients
    ref = replay(tiny_train, HP, EPOCHS, WORKERS)
    for k in ref:
        torch.testing.assert_close(final[k], ref[k], rtol=1e-4, atol=1e-5, msg=k)


def test_gpu_and_worker_counts_are_checked_before_starting(ray_session, tiny_train, tmp_path: Path) -> None:
    from tradesys.train.distributed import train_distributed

    with pytest.raises(ValueError, match=r"^use_gpu: the Ray cluster has no GPU"):
        train_distributed(tiny_train, HP, num_workers=1, use_gpu=True, storage_path=tmp_path)
    with pytest.raises(ValueError, match=r"^num_workers: 512 workers need 512 CPU\(s\)"):
        train_distributed(tiny_train, HP, num_workers=512, storage_path=tmp_path)
    with pytest.raises(ValueError, match=r"^hparams.width: must be a multiple of 4"):
        train_distributed(tiny_train, {**HP, "width": 6}, storage_path=tmp_path)
    assert not list(tmp_path.iterdir())  # nothing started, nothing written


def plant_champion(name: str, runs: Path) -> None:
    """A registry champion logged as the job logs one, with a model config (but a 1-feature cut)."""
    from tradesys.train.registry import promote_if_better, register
    from tradesys.train.tracking import log_params, log_torch_model, setup_tracking

    setup_tracking("planted", runs_dir=runs)
    model = build_model("lstm", 1, hidden=12, n_layers=1).eval()
    with mlflow.start_run():
        log_params({"lookback": 8, "vol_horizon": 3, "n_features": 1,
                    "model": {"kind": "lstm", "width": 12, "n_layers": 1, "lr": 0.002}})  # fmt: skip
        info = log_torch_model(model, np.zeros((2, 8, 1), np.float32))
    assert register(info.model_uri, name) == 1
    assert promote_if_better(name, np.ones(3), np.array([])).promoted


def test_pipeline_ray_train_uses_the_champion_config_and_logs(ray_session, tmp_path: Path, monkeypatch) -> None:
    from tradesys.train.pipeline import TrainSettings, run_training

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    runs = tmp_path / "runs"
    plant_champion("fc-rt", runs)
    events: list[dict] = []
    s = TrainSettings(trainer="ray-train", num_workers=2, max_epochs=1, lookback=8, vol_horizon=3, max_samples=300,
                      holdout=60, registry_name="fc-rt", runs_dir=str(runs))  # fmt: skip
    summary = run_training(s, events.append)
    stages = [e["stage"] for e in events if e["event"] == "stage"]
    assert stages == ["data", "train", "holdout", "register", "promote", "done"]
    train_ev = next(e for e in events if e.get("stage") == "train")
    assert train_ev["hparams_source"] == "champion v1" and train_ev["hparams"]["width"] == 12
    assert [e["epoch"] for e in events if e["event"] == "trial_result"] == [1]
    assert summary["best_config"] == {"kind": "lstm", "width": 12, "n_layers": 1, "lr": 0.002}
    assert summary["version"] == 2 and summary["champion"] == 1
    assert summary["promotion"]["reason"] == "incompatible_champion"  # the planted champion saw 1 feature, not 4
    run = MlflowClient(summary["tracking_uri"]).get_run(summary["run_id"])
    assert run.data.params["trainer"] == "ray-train" and run.data.params["num_workers"] == "2"
    assert run.data.params["model.hidden"] == "12"
    hist = MlflowClient(summary["tracking_uri"]).get_metric_history(summary["run_id"], "val_loss")
    assert len(hist) == 1 and hist[0].value == pytest.approx(summary["best_val_loss"], rel=1e-12)
    assert math.isfinite(run.data.metrics["holdout_vol_qlike"])
