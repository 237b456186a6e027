"""MLflow tracking helpers and the model registry with DM-based promotion, without Ray (SQLite store in tmp_path).

References: the promotion statistic at h = 1 must equal scipy's one-sample t test of the loss differential
(the HLN-corrected DM statistic is exactly that t statistic at h = 1); the logged model must reproduce the eager
model's outputs after a round trip through the store.
"""

from __future__ import annotations

import math
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from scipy import stats

from tradesys.train.models import build_model
from tradesys.train.registry import (
    CHALLENGER,
    CHAMPION,
    alias_version,
    champion_history,
    promote_if_better,
    register,
    rollback,
)
from tradesys.train.tracking import log_epoch_metrics, log_params, log_torch_model, resolve_tracking_uri, setup_tracking

LOOKBACK, NF = 8, 4


@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri, _ = setup_tracking("registry-test", runs_dir=tmp_path / "runs")
    yield uri
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]


def _sample(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((4, LOOKBACK, NF)).astype(np.float32)


def _log_version(seed: int) -> tuple[str, str, torch.nn.Module]:
    torch.manual_seed(seed)
    model = build_model("lstm", NF, hidden=4, n_layers=1)
    with mlflow.start_run() as run:
        log_params({"kind": "lstm", "fit": {"lr": 1e-3, "epochs": 2}})
        log_epoch_metrics({"epoch": 0.0, "train_loss": 2.0, "val_loss": float("nan")})
        log_epoch_metrics({"epoch": 1.0, "train_loss": 1.5, "val_loss": 1.7})
        info = log_torch_model(model, _sample(seed))
    return run.info.run_id, info.model_uri, model


def test_resolve_tracking_uri_default_env_and_explicit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = resolve_tracking_uri(runs_dir=tmp_path / "r")
    assert uri == f"sqlite:///{(tmp_path / 'r').resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////x/env.db")
    assert resolve_tracking_uri(runs_dir=tmp_path) == "sqlite:////x/env.db"
    assert resolve_tracking_uri("sqlite:////x/arg.db", runs_dir=tmp_path) == "sqlite:////x/arg.db"
    with pytest.raises(ValueError, match="tracking_uri"):
        resolve_tracking_uri("  ")


def test_logged_run_has_params_metrics_and_a_model_that_round_trips(store: str, tmp_path: Path) -> None:
    run_id, model_uri, model = _log_version(1)
    client = MlflowClient(store)
    run = client.get_run(run_id)
    assert run.data.params["kind"] == "lstm" and run.data.params["fit.lr"] == "0.001"
    hist = client.get_metric_history(run_id, "train_loss")
    assert [(m.step, m.value) for m in hist] == [(0, 2.0), (1, 1.5)]
    assert [m.step for m in client.get_metric_history(run_id, "val_loss")] == [1]  # NaN was skipped
    assert "epoch" not in run.data.metrics
    # artifacts land in the local artifact dir next to the SQLite file, not in the cwd
    assert Path(mlflow.get_experiment(run.info.experiment_id).artifact_location.removeprefix("file://")).is_relative_to(
        (tmp_path / "runs").resolve()
    )
    loaded = mlflow.pytorch.load_model(model_uri)
    x = torch.as_tensor(_sample(5))
    with torch.no_grad():
        for a, b in zip(model(x), loaded(x), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    sig = mlflow.models.get_model_info(model_uri).signature
    assert tuple(sig.inputs.to_dict()[0]["tensor-spec"]["shape"]) == (-1, LOOKBACK, NF)
    assert [o["name"] for o in sig.outputs.to_dict()] == ["ret", "vol", "dir_logit"]


def test_registry_promotion_by_dm_and_rollback(store: str) -> None:
    name = "fc-test"
    rng = np.random.default_rng(42)
    champ_losses = rng.exponential(1.0, 300)

    _, uri1, _ = _log_version(1)
    assert register(uri1, name) == 1
    assert alias_version(name, CHALLENGER) == 1 and alias_version(name, CHAMPION) is None
    first = promote_if_better(name, champ_losses, np.array([]))
    assert first.promoted and first.reason == "no_champion" and alias_version(name, CHAMPION) == 1

    # a clearly better challenger: half the loss on every observation
    run2, uri2, _ = _log_version(2)
    assert register(uri2, name) == 2 and alias_version(name, CHALLENGER) == 2
    better = champ_losses * 0.5 + rng.normal(0, 0.05, 300)
    dec = promote_if_better(name, better, champ_losses, alpha=0.05, h=1)
    ref = stats.ttest_1samp(better - champ_losses, 0.0, alternative="less")
    assert dec.promoted and dec.reason == "significantly_better" and dec.champion_version == 1
    assert dec.dm_stat == pytest.approx(ref.statistic, rel=1e-10)
    assert dec.pvalue == pytest.approx(ref.pvalue, rel=1e-8, abs=1e-300)
    assert alias_version(name, CHAMPION) == 2
    r2 = MlflowClient(store).get_run(run2)
    assert r2.data.tags["promotion.decision"] == "promoted" and r2.data.tags["promotion.champion_version"] == "1"
    assert r2.data.metrics["promotion_dm_stat"] == pytest.approx(ref.statistic, rel=1e-10)
    assert r2.data.metrics["promotion_promoted"] == 1.0

    # an equal challenger (identical losses) is refused: DM = 0, p = 0.5
    run3, uri3, _ = _log_version(3)
    assert register(uri3, name) == 3
    dec3 = promote_if_better(name, champ_losses * 0.5 + 0.0, champ_losses * 0.5)
    assert not dec3.promoted and dec3.reason == "not_significant" and dec3.pvalue == pytest.approx(0.5)
    assert alias_version(name, CHAMPION) == 2 and alias_version(name, CHALLENGER) == 3
    r3 = MlflowClient(store).get_run(run3)
    assert r3.data.tags["promotion.decision"] == "refused" and r3.data.metrics["promotion_promoted"] == 0.0

    # a worse challenger with a large |DM| in the wrong direction is refused too (one-sided test)
    dec4 = promote_if_better(name, champ_losses * 2.0, champ_losses)
    assert not dec4.promoted and dec4.dm_stat > 0 and dec4.pvalue > 0.99

    assert champion_history(name) == [1, 2]
    assert rollback(name) == 1 and alias_version(name, CHAMPION) == 1
    assert champion_history(name) == [1]
    with pytest.raises(ValueError, match="no previous champion"):
        rollback(name)


def test_promotion_uses_the_uniform_kernel_at_h_gt_1(store: str) -> None:
    """At h > 1 the statistic is the HLN-scaled mean over the truncated (uniform) long-run variance, computed here
    from its definition with numpy's autocovariances."""
    name = "fc-h5"
    _, uri, _ = _log_version(1)
    register(uri, name)
    promote_if_better(name, np.ones(3), np.array([]))
    _, uri2, _ = _log_version(2)
    register(uri2, name)
    rng = np.random.default_rng(3)
    e = rng.normal(size=205)
    d = np.convolve(e, np.ones(5), "valid")[:200] * 0.1 - 0.05  # MA(4) differential, mean -0.05
    base = rng.exponential(1.0, 200) + 2.0
    dec = promote_if_better(name, base + d, base, h=5)
    n, h = 200, 5
    x = d - d.mean()
    lrv = x @ x / n + 2 * sum(x[k:] @ x[:-k] / n for k in range(1, h))
    stat = d.mean() / math.sqrt(lrv / n) * math.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n)
    assert dec.dm_stat == pytest.approx(stat, rel=1e-9)
    assert dec.pvalue == pytest.approx(stats.t.cdf(stat, n - 1), rel=1e-9)


def test_bad_inputs_name_the_field(store: str) -> None:
    with pytest.raises(ValueError, match="alpha"):
        promote_if_better("x", np.ones(3), np.ones(3), alpha=1.5)
    _, uri, _ = _log_version(1)
    register(uri, "fc-bad")
    with pytest.raises(ValueError, match=r"^champion: no previous champion of 'fc-bad' to roll back to \(it has never"):
        rollback("fc-bad")
    promote_if_better("fc-bad", np.ones(3), np.array([]))
    _, uri2, _ = _log_version(2)
    register(uri2, "fc-bad")
    with pytest.raises(ValueError, match="losses"):
        promote_if_better("fc-bad", np.array([1.0, np.nan, 1.0]), np.ones(3))


def test_manual_champion_joins_the_history_and_library_errors_name_the_field(store: str, tmp_path: Path) -> None:
    """`set_champion` appends to the same history as `promote_if_better`, so `rollback` undoes either; a version
    whose run has no exports cannot be exported (nothing is written); an unknown model is a `name` error."""
    from tradesys.train.registry import export_versions, list_models, set_champion

    name = "fc-manual"
    for seed in (1, 2, 3):
        _, uri, _ = _log_version(seed)
        register(uri, name)
    with pytest.raises(ValueError, match="reason"):
        set_champion(name, 2, " ")
    assert set_champion(name, 2, "first champion, picked by hand") is None
    assert promote_if_better(name, np.full(50, 0.5), np.ones(50) + np.linspace(0, 0.1, 50)).promoted  # 3 beats 2
    assert set_champion(name, 1, "back to basics") == 3
    assert champion_history(name) == [2, 3, 1]
    rows = {r.version: r for r in list_models(name)}
    assert rows[1].promotion["reason"] == "manual" and rows[1].promotion["champion_version"] == "3"
    assert rows[3].promotion["reason"] == "significantly_better" and rows[3].aliases == ("challenger",)
    assert rows[1].aliases == ("champion",) and rows[2].holdout == {}
    assert MlflowClient(store).get_model_version(name, "1").tags["promotion.manual_reason"] == "back to basics"
    assert rollback(name) == 3 and rollback(name) == 2 and alias_version(name, CHAMPION) == 2
    with pytest.raises(ValueError, match="version: 2 is already the champion"):
        set_champion(name, "champion", "again")
    with pytest.raises(ValueError, match=r"versions: version 1 .* has no exports"):
        export_versions(name, tmp_path / "out", [1])
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match=r"version: .* no version 9"):
        export_versions(name, tmp_path / "out", [9])
    with pytest.raises(ValueError, match="name: registered model 'missing' not found"):
        champion_history("missing")


def test_first_model_that_loses_to_a_baseline_is_not_promoted(store: str) -> None:
    """The baseline gate: with no champion yet, a challenger worse than GARCH (or not significantly better than
    either baseline) is refused; one that beats both is promoted. Statistics against scipy's t test at h = 1."""
    rng = np.random.default_rng(3)
    garch = rng.exponential(0.5, 300)
    naive = garch + 1.0  # a clearly worse baseline
    net = garch * 1.9  # loses to GARCH, beats naive (mean 0.95 vs 1.5)
    _, uri, _ = _log_version(1)
    register(uri, "fc-gate")
    dec = promote_if_better("fc-gate", net, np.array([]), 0.05, baselines={"naive": naive, "garch": garch},
                            loss="vol_qlike")  # fmt: skip
    assert not dec.promoted and dec.reason == "not_better_than_baselines"
    assert alias_version("fc-gate", CHAMPION) is None and champion_history("fc-gate") == []
    by = {b.baseline: b for b in dec.baselines}
    assert by["naive"].beaten and not by["garch"].beaten
    assert by["garch"].model_loss == pytest.approx(net.mean())
    assert by["garch"].baseline_loss == pytest.approx(garch.mean())
    t = stats.ttest_1samp(net - garch, 0.0, alternative="less")
    assert by["garch"].dm_stat == pytest.approx(t.statistic, rel=1e-9)
    assert by["garch"].pvalue == pytest.approx(t.pvalue, rel=1e-9)
    run = MlflowClient(store).get_run(MlflowClient(store).get_model_version("fc-gate", "1").run_id)
    assert run.data.tags["promotion.decision"] == "refused"
    assert run.data.tags["promotion.reason"] == "not_better_than_baselines"
    assert run.data.tags["promotion.beats_garch"] == "false" and run.data.tags["promotion.beats_naive"] == "true"
    # a second version that beats both baselines clearly becomes the first champion
    _, uri2, _ = _log_version(2)
    register(uri2, "fc-gate")
    dec2 = promote_if_better("fc-gate", garch * 0.5, np.array([]), 0.05, baselines={"naive": naive, "garch": garch})
    assert dec2.promoted and dec2.reason == "no_champion" and alias_version("fc-gate", CHAMPION) == 2
    assert all(b.beaten for b in dec2.baselines) and dec2.to_dict()["baselines"][0]["baseline"] == "naive"
