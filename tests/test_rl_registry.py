"""Champion/challenger for RL policies (tradesys.rl.registry) and the DriftMonitor launching jobs/rl_train.py.

References: the promotion rule is the forecasters' one-sided Diebold-Mariano test on the loss -log return, so an
exactly equal challenger (zero loss differential) and a noisy equal one must be refused, and one earning 0.2 % a bar
more on 250 holdout bars must be promoted; the recorded statistics are checked against
`tradesys.train.evaluate.diebold_mariano` computed here on the same returns; MLflow (a real SQLite store) must hold
the decision and the champion history. The retraining test runs the real training script as a Ray task from a
real DriftMonitorCore and registers the policy it trained.
"""

from __future__ import annotations

import importlib.util
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tradesys.rl.registry import (
    RLTrainLauncher,
    promote_policy_if_better,
    register_policy,
    rl_train_argv,
    rl_train_script,
)
from tradesys.train.evaluate import diebold_mariano
from tradesys.train.registry import alias_version, champion_history


def _run_with_module(uri: str, tmp: Path, i: int) -> str:
    """An MLflow run holding an ``rl_module`` artifact directory, as `tradesys rl train` logs it."""
    import mlflow

    d = tmp / f"mod{i}"
    d.mkdir()
    (d / "metadata.json").write_text("{}")
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name("rl-registry")
    with mlflow.start_run(experiment_id=exp.experiment_id) as run:
        mlflow.log_artifacts(str(d), "rl_module")
    return run.info.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One real SQLite MLflow store for the module (creating its tables takes seconds); artifacts in a temp dir."""
    import mlflow

    root = tmp_path_factory.mktemp("rl_registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment("rl-registry", artifact_location=str(root / "artifacts"))
    return uri


@pytest.mark.slow
def test_equal_challenger_is_refused_and_a_clearly_better_one_promoted(store: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    rng = np.random.default_rng(7)
    champ = rng.normal(0.0004, 0.01, 250)
    runs = [_run_with_module(store, tmp_path, i) for i in range(5)]

    assert register_policy(runs[0], "agent", tracking_uri=store) == 1
    first = promote_policy_if_better("agent", champ, [], tracking_uri=store)
    assert first.promoted and first.reason == "no_champion"

    register_policy(runs[1], "agent", tracking_uri=store)  # the very same returns: no evidence at all
    same = promote_policy_if_better("agent", champ.copy(), champ, tracking_uri=store)
    assert not same.promoted and same.reason == "not_significant" and same.mean_diff == 0.0

    register_policy(runs[2], "agent", tracking_uri=store)  # equal in expectation, different noise
    noisy = champ + rng.normal(0.0, 0.002, 250)
    dec = promote_policy_if_better("agent", noisy, champ, tracking_uri=store)
    ref = diebold_mariano(-noisy, -champ, h=1, hln=True, alternative="less", kernel="uniform")
    assert not dec.promoted and dec.pvalue == pytest.approx(ref.pvalue, rel=1e-12) and dec.pvalue > 0.05
    assert alias_version("agent", "champion", tracking_uri=store) == 1

    register_policy(runs[3], "agent", tracking_uri=store)  # 0.2 % a bar better
    better = champ + 0.002 + rng.normal(0.0, 0.002, 250)
    dec = promote_policy_if_better("agent", better, champ, tracking_uri=store)
    ref = diebold_mariano(-better, -champ, h=1, hln=True, alternative="less", kernel="uniform")
    assert dec.promoted and dec.reason == "significantly_better" and dec.champion_version == 1
    assert dec.pvalue == pytest.approx(ref.pvalue, rel=1e-12) and dec.pvalue < 1e-6
    assert dec.mean_diff == pytest.approx(-(better - champ).mean(), rel=1e-12)
    assert alias_version("agent", "champion", tracking_uri=store) == 4
    assert champion_history("agent", tracking_uri=store) == [1, 4]

    # the baseline gate: better than the champion but not than buy-and-hold on the same bars -> refused
    register_policy(runs[4], "agent", tracking_uri=store)
    dec = promote_policy_if_better("agent", better + 0.002, better, baselines={"buy_and_hold": better + 0.01},
                                   tracking_uri=store)  # fmt: skip
    assert not dec.promoted and dec.reason == "not_better_than_baselines"
    assert [b.baseline for b in dec.baselines] == ["buy_and_hold"] and not dec.baselines[0].beaten

    c = MlflowClient(store, registry_uri=store)
    tags = {r: c.get_run(r).data.tags for r in runs}
    assert [tags[r]["promotion.decision"] for r in runs] == ["promoted", "refused", "refused", "promoted", "refused"]
    assert tags[runs[3]]["promotion.reason"] == "significantly_better"
    mv = c.get_model_version("agent", "4")
    assert mv.run_id == runs[3] and mv.source.endswith("/rl_module")


@pytest.mark.slow
def test_bad_input_names_the_field(store: str, tmp_path: Path) -> None:
    run = _run_with_module(store, tmp_path, 0)
    with pytest.raises(ValueError, match=r"^run_id: no MLflow run"):
        register_policy("0" * 32, "bad-input", tracking_uri=store)
    with pytest.raises(ValueError, match=r"^run_id: .* has no 'policy' artifact"):
        register_policy(run, "bad-input", artifact_path="policy", tracking_uri=store)
    register_policy(run, "bad-input", tracking_uri=store)
    promote_policy_if_better("bad-input", [0.01, 0.0, 0.01], [], tracking_uri=store)
    register_policy(run, "bad-input", tracking_uri=store)
    with pytest.raises(ValueError, match=r"^champion_returns: 4 bars, the challenger has 3"):
        promote_policy_if_better("bad-input", [0.01, 0.0, 0.01], [0.0] * 4, tracking_uri=store)
    with pytest.raises(ValueError, match=r"^challenger_returns: non-finite return at bar 1"):
        promote_policy_if_better("bad-input", [0.01, float("nan"), 0.01], [0.0] * 3, tracking_uri=store)
    with pytest.raises(ValueError, match=r"^runs_dir: "):
        rl_train_argv("runs")
    with pytest.raises(ValueError, match=r"^options.iteration: not a jobs/rl_train.py option"):
        rl_train_argv(tmp_path, {"iteration": 3})
    with pytest.raises(ValueError, match=r"^summaries_dir: "):
        RLTrainLauncher("ray_task")


def _rl_train_module():
    spec = importlib.util.spec_from_file_location("rl_train_job", rl_train_script())
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_retrain_argv_is_what_the_job_parses(tmp_path: Path) -> None:
    argv = rl_train_argv(tmp_path / "runs", {"symbols": "AAPL,JPM", "iterations": 3, "lambda_": 0.9,
                                             "risk_limits": False, "seed": 4})  # fmt: skip
    args = _rl_train_module().parse_args(argv)
    assert (args.symbols, args.iterations, args.lambda_, args.risk_limits, args.seed) == ("AAPL,JPM", 3, 0.9, False, 4)
    assert args.runs_dir == str(tmp_path / "runs") and args.json and args.quiet and not args.tune


@pytest.mark.ray
@pytest.mark.slow
def test_drift_monitor_schedule_launches_rl_training_and_its_policy_registers(ray_session, tmp_path: Path,
                                                                              monkeypatch) -> None:  # fmt: skip
    from tradesys.train.drift import DriftPolicy
    from tradesys.train.drift_monitor import DriftMonitorCore, MonitorConfig

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = rl_train_argv(tmp_path / "runs", {
        "symbols": "AAPL,JPM", "features": "log_return", "train": "2015-01-01:2015-12-31",
        "select": "2016-01-01:2016-06-30", "test": "2016-07-01:2016-12-31", "window": 5, "episode_length": 32,
        "iterations": 1, "train_batch_size": 64, "minibatch_size": 32, "num_epochs": 1, "num_env_runners": 0,
        "hidden": "8", "mlflow_uri": uri,
    })  # fmt: skip
    launcher = RLTrainLauncher("ray_task", summaries_dir=tmp_path / "summaries")
    now = datetime(2026, 12, 1, tzinfo=UTC)
    ref = pd.DataFrame({"x": np.random.default_rng(0).normal(size=100)})
    core = DriftMonitorCore(ref, config=MonitorConfig(n_permutations=50, policy=DriftPolicy(max_age=timedelta(days=7))),
                            launcher=launcher, train_argv=argv, last_trained=now - timedelta(days=30),
                            clock=lambda: now)  # fmt: skip
    record = core.check()
    assert record["action"] == "launched" and record["job"]["launcher"] == "rl_train_ray_task"
    deadline = time.monotonic() + 600
    job = None
    while job is None and time.monotonic() < deadline:
        time.sleep(2)
        job = core.poll_job()
    assert job is not None and job["state"] == "succeeded", job
    run_id = job["result"]["run_id"]
    assert job["result"]["tracking_uri"] == uri
    # the retrained policy enters the registry as the challenger
    monkeypatch.chdir(tmp_path)
    assert register_policy(run_id, "rl-agent", tracking_uri=uri) == 1
    assert alias_version("rl-agent", "challenger", tracking_uri=uri) == 1
