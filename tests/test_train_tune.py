"""Ray Tune search with ASHA and MLflow per trial, and the training job end to end, on a tiny S&P 500 slice.

References: what Tune calls best must be the trial with the smallest val_loss in the MLflow store (an independent
record written by Ray's MLflow callback); the best checkpoint's model must reproduce that val_loss when re-scored
with `evaluate_losses`-equivalent code on the same validation split; ASHA with max_t = 3 and grace 1 must cut at
least one of four trials before its last epoch (reduction factor 2 promotes only the top half at each rung).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from tradesys.data.returns import load_returns
from tradesys.train.data import Standardizer, make_samples

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_train():
    r = load_returns("sp500").iloc[-420:, 0]
    s = make_samples(r, lookback=8, vol_horizon=3)
    return Standardizer.fit(s).transform(s)


def test_asha_search_logs_trials_to_mlflow_and_picks_the_best(ray_session, tiny_train, tmp_path: Path) -> None:
    from tradesys.train.fit import FitConfig
    from tradesys.train.tracking import resolve_tracking_uri
    from tradesys.train.tune import METRIC, run_search

    uri = resolve_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    space = {"kind": "lstm", "width": 8, "n_layers": 1, "lr": None}
    from ray import tune

    # 4 trials with clearly different learning speeds, run one at a time so ASHA's asynchronous rungs see them in
    # this order whatever the machine's load; the near-frozen lr=1e-5 trial comes last.
    lrs = [1e-2, 3e-3, 3e-2, 1e-5]
    space["lr"] = tune.grid_search(lrs)
    out = run_search(
        tiny_train, num_samples=1, max_epochs=3, grace_period=1, param_space=space,
        storage_path=tmp_path / "tune", tracking_uri=uri, experiment="tune-test", max_concurrent=1,
    )  # fmt: skip
    assert out.num_trials == 4
    # ASHA: at rung 1 only the top half of the trials that reached it continue (reduction factor 2)
    iters = sorted(int(r.metrics["training_iteration"]) for r in out.grid)
    assert iters[0] < 3 and iters[-1] == 3 and out.num_stopped_early >= 1
    slowest = next(r for r in out.grid if r.config["lr"] == 1e-5)
    assert int(slowest.metrics["training_iteration"]) < 3  # behind the three before it at rung 1 or rung 2

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tune-test")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 4
    # ASHA's published rule (Li et al. 2018), replayed on the losses MLflow recorded: rungs at 1 and 2 epochs
    # (grace 1, reduction factor 2, max_t 3); a trial reaching a rung is stopped when its loss is worse than the
    # median of the losses recorded there by the trials before it. Every trial stopped exactly where the rule says.
    history = {float(r.data.params["lr"]): [m.value for m in sorted(client.get_metric_history(r.info.run_id, METRIC),
                                                                     key=lambda m: m.step)] for r in runs}
    rungs: dict[int, list[float]] = {2: [], 1: []}
    expected = {}
    for lr in lrs:
        losses, stop_at = history[lr], 3
        for it in range(1, 4):
            rung = next((m for m in (2, 1) if it == m), None)
            if rung is None:
                continue
            seen = rungs[rung]
            if seen and -losses[it - 1] < np.nanpercentile([-x for x in seen], 50):
                stop_at = it
            seen.append(losses[it - 1])
            if stop_at == it:
                break
        expected[lr] = stop_at
    assert {r.config["lr"]: int(r.metrics["training_iteration"]) for r in out.grid} == expected
    best_by_mlflow = {}
    for run in runs:
        assert run.data.params["kind"] == "lstm" and "lr" in run.data.params
        hist = client.get_metric_history(run.info.run_id, METRIC)
        assert len(hist) == int(run.data.metrics["training_iteration"])  # one point per reported epoch
        best_by_mlflow[run.data.tags["trial_name"]] = min(m.value for m in hist)
    winner = min(best_by_mlflow, key=best_by_mlflow.get)
    assert winner.endswith(out.trial_id)
    assert out.best_metrics[METRIC] == pytest.approx(best_by_mlflow[winner], rel=1e-6)

    # the best checkpoint really holds the weights that scored the best val_loss: re-score on the same split
    import torch

    from tradesys.train.fit import evaluate_losses
    from tradesys.train.models import MultiTaskLoss

    n = len(tiny_train)
    n_val = max(1, round(n * FitConfig().val_fraction))
    val = tiny_train.subset(np.arange(n - n_val, n))
    # val_loss includes the learned log-variances s_i, reported in the same row
    loss_fn = MultiTaskLoss()
    with torch.no_grad():
        loss_fn.log_vars.copy_(torch.tensor([out.best_metrics[f"s_{k}"] for k in ("ret", "vol", "dir")]))
    rescored = evaluate_losses(out.model, loss_fn, val)
    assert rescored["val_ret_mse"] == pytest.approx(out.best_metrics["val_ret_mse"], rel=1e-5)
    assert rescored[METRIC] == pytest.approx(out.best_metrics[METRIC], rel=1e-4)


def test_training_job_registers_and_promotes_by_dm(ray_session, tmp_path: Path, capsys) -> None:
    """Two job runs into one store. The first is champion only if it beats both baselines (the gate, first model
    included); a champion is then set by hand if needed; the second is a challenger promoted only if it passes the
    gate AND the DM test against that champion, and the decision recorded on its run matches the aliases."""
    from tradesys.train.launch import last_json_object
    from tradesys.train.registry import set_champion

    sys.path.insert(0, str(ROOT / "jobs"))
    import train as job  # jobs/train.py

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = [
        "--kinds", "lstm", "--num-samples", "2", "--max-epochs", "2", "--lookback", "8", "--vol-horizon", "3",
        "--max-samples", "400", "--holdout", "120", "--mlflow-uri", uri, "--registry-name", "fc-job",
        "--runs-dir", str(tmp_path / "runs"),
    ]  # fmt: skip
    s1 = job.main(common)
    printed = capsys.readouterr()
    assert (last_json_object(printed.out) or {}).get("run_id") == s1["run_id"]  # stdout: the summary, as JSON
    p1 = s1["promotion"]
    head = "promotion: PROMOTED to champion" if p1["promoted"] else "promotion: NOT PROMOTED"
    assert f"{head} ({p1['reason']})" in printed.err and "vs garch: network" in printed.err  # the job's reader
    assert s1["version"] == 1 and [b["baseline"] for b in p1["baselines"]] == ["naive", "garch"]
    beats = all(b["beaten"] for b in p1["baselines"])
    assert p1["promoted"] == beats and p1["reason"] == ("no_champion" if beats else "not_better_than_baselines")
    assert s1["champion"] == (1 if beats else None)
    if not beats:
        set_champion("fc-job", 1, "test: a champion to compare the second run with", tracking_uri=uri)
    s2 = job.main([*common, "--seed", "1"])
    assert s2["version"] == 2
    dec = s2["promotion"]
    assert dec["champion_version"] == 1 and dec["h"] == 3 and dec["n"] == 120
    assert s2["champion"] == (2 if dec["promoted"] else 1)
    if all(b["beaten"] for b in dec["baselines"]):
        assert dec["promoted"] == (dec["pvalue"] < 0.05)
    else:
        assert not dec["promoted"] and dec["reason"] == "not_better_than_baselines"

    client = MlflowClient(uri)
    mv = client.get_model_version_by_alias("fc-job", "challenger")
    assert int(mv.version) == 2
    run = client.get_run(mv.run_id)
    assert run.data.tags["promotion.decision"] == ("promoted" if dec["promoted"] else "refused")
    arts = {a.path for a in client.list_artifacts(mv.run_id, "exports")}
    assert arts == {"exports/model.onnx", "exports/model.pt"}
    report = json.loads(mlflow.artifacts.load_text(f"runs:/{mv.run_id}/holdout_report.json"))
    assert {"network", "naive", "garch"} <= set(report["metrics"])
    assert math.isfinite(run.data.metrics["holdout_vol_qlike"])
    # the registered version loads and forecasts the holdout in the logged model's signature shape
    model = mlflow.pytorch.load_model("models:/fc-job@champion")
    x = np.zeros((2, 8, 4), dtype=np.float32)
    import torch

    assert all(o.shape == (2,) for o in model(torch.as_tensor(x)))
