"""`tradesys train run` (the typer sub-app, invoked directly) and `TrainSettings` validation.

References: the MLflow store (an independent record) must hold the run the printed summary names, with the
parameters and holdout metric the summary reports; the summary file must be strict JSON equal to that summary.
Bad settings must exit with code 2 and name the field, before any Ray or MLflow work starts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from tradesys.commands.train import app
from tradesys.featurestore import FeatureRegistry
from tradesys.train.pipeline import TrainSettings

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--num-samples", "0"], "num_samples: must be an integer >= 1"),
        (["--features", "rv:1"], "features: only used with data=store:<root>"),
        (["--data", "store:/x"], "features: data=store:<root> needs at least one feature"),
        (["--data", "store:/x", "--features", "rv:v2"], "features: version 'v2'"),
        (["--use-gpu"], "use_gpu: only used with trainer='ray-train'"),
        (["--trainer", "horovod"], "trainer: must be one of"),
        (["--kinds", "lstm,gru"], "kinds: each must be one of"),
        (["--kind", "lstm"], "hparams: give --kind, --width, --n-layers and --lr together"),
        (["--kind", "lstm", "--width", "8", "--n-layers", "1", "--lr", "1e-3"], "hparams: only used with"),
        (["--trainer", "ray-train", "--kind", "lstm", "--width", "6", "--n-layers", "1", "--lr", "1e-3"],
         "hparams.width: must be a multiple of 4"),
        (["--alpha", "1.5"], "alpha: must be in (0, 1)"),
        (["--promote-on", "mse"], "promote_on: must be one of"),
        (["--feature-ttl", "-1h", "--data", "store:/x", "--features", "rv"], "feature_ttl: '-1h'"),
    ],
)  # fmt: skip
def test_bad_options_exit_2_naming_the_field(args: list[str], message: str, tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", *args, "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and message in " ".join(result.output.split())
    assert not (tmp_path / "runs").exists()  # refused before tracking or Ray started


def test_missing_store_is_refused_before_ray(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", "--data", f"store:{tmp_path / 'none'}", "--features", "rv:1",
                                 "--runs-dir", str(tmp_path / "runs")])  # fmt: skip
    assert result.exit_code == 2
    assert "data: feature store root" in " ".join(result.output.split())


def test_settings_normalise_and_round_trip() -> None:
    s = TrainSettings(kinds=["lstm"], data="store:/f", features=["rv:1", " ", "tick"], feature_lag="1h")
    assert s.kinds == ("lstm",) and s.features == ("rv:1", "tick") and s.store_root == "/f"
    assert TrainSettings(**s.to_dict()) == s
    hp = TrainSettings(trainer="ray-train", hparams={"kind": "lstm", "width": 8, "n_layers": 1, "lr": 1e-3})
    assert hp.hparams == {"kind": "lstm", "width": 8, "n_layers": 1, "lr": 1e-3}
    with pytest.raises(ValueError, match=r"^num_workers: must be an integer >= 1, got 0"):
        TrainSettings(trainer="ray-train", num_workers=0)
    with pytest.raises(ValueError, match=r"^hparams: missing \['lr'\]"):
        TrainSettings(trainer="ray-train", hparams={"kind": "lstm", "width": 8, "n_layers": 1})
    with pytest.raises(ValueError, match=r"^max_samples: must be an integer >= 0"):
        TrainSettings(max_samples=-1)


@pytest.fixture()
def sp500_store(tmp_path: Path) -> Path:
    """An offline store holding S&P 500 daily returns and their trailing realised vols, stamped at the close."""
    from tradesys.data.returns import load_returns
    from tradesys.featurestore import FeatureDefinition, OfflineStore

    r = load_returns("sp500").iloc[-360:, 0]
    ts = r.index.tz_localize("UTC") + pd.Timedelta("20h")
    st = OfflineStore(tmp_path / "store")
    st.register(FeatureDefinition("returns", 1, {"r": "float64"}, transform="pct_change"))
    st.register(FeatureDefinition("rv", 1, {"rv5": "float64", "rv22": "float64"}, transform="rolling-rms"))
    st.write("returns", 1, pd.DataFrame({"symbol": "SPX", "ts": ts, "r": r.to_numpy()}))
    r2 = r * r
    rv = pd.DataFrame({"symbol": "SPX", "ts": ts, "rv5": np.sqrt(r2.rolling(5).mean()).to_numpy(),
                       "rv22": np.sqrt(r2.rolling(22).mean()).to_numpy()}).dropna()  # fmt: skip
    st.write("rv", 1, rv)
    return tmp_path / "store"


@pytest.mark.ray
@pytest.mark.slow
def test_tiny_cli_run_from_the_feature_store(ray_session, sp500_store: Path, tmp_path: Path, monkeypatch) -> None:
    """One epoch of one trial cannot beat GARCH on the holdout: even as the first model it is registered as
    challenger but never made champion, and the printed block says so against each baseline."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "summary.json"
    result = runner.invoke(app, [
        "run", "--data", f"store:{sp500_store}", "--features", "rv:1", "--symbol", "SPX", "--kinds", "lstm",
        "--num-samples", "1", "--max-epochs", "1", "--lookback", "8", "--vol-horizon", "3", "--holdout", "60",
        "--mlflow-uri", uri, "--registry-name", "fc-cli", "--runs-dir", str(tmp_path / "runs"), "--out", str(out),
        "--json",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    summary = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert printed == summary  # --json: stdout is the summary alone; --out: the same summary in the file
    text = " ".join(result.stderr.split())
    assert "1/1 epochs" in text and "training run" in text  # the bar reached trials x epochs; the table printed
    assert "fc-cli v1 (champion: none)" in text

    # the independent record: GARCH's and the network's holdout QLIKE as the MLflow run logged them
    client = MlflowClient(uri)
    run = client.get_run(summary["run_id"])
    report = json.loads(Path(client.download_artifacts(summary["run_id"], "holdout_report.json", str(tmp_path)))
                        .read_text())  # fmt: skip
    net, garch = report["metrics"]["network"]["vol_qlike"], report["metrics"]["garch"]["vol_qlike"]
    promo = summary["promotion"]
    by = {b["baseline"]: b for b in promo["baselines"]}
    assert set(by) == {"naive", "garch"} and not by["garch"]["beaten"]
    assert by["garch"]["model_loss"] == pytest.approx(net, rel=1e-9)
    assert by["garch"]["baseline_loss"] == pytest.approx(garch, rel=1e-9)
    assert promo["promoted"] is False and promo["reason"] == "not_better_than_baselines"
    assert summary["version"] == 1 and summary["champion"] is None and summary["num_trials"] == 1
    assert "champion" not in client.get_registered_model("fc-cli").aliases  # no champion alias, first model or not
    assert int(client.get_registered_model("fc-cli").aliases["challenger"]) == 1
    assert run.data.tags["promotion.decision"] == "refused"
    assert run.data.tags["promotion.reason"] == "not_better_than_baselines"
    # the printed decision block: the verdict, the test, each baseline with both losses, and why
    assert "promotion: NOT PROMOTED (not_better_than_baselines)" in text
    assert "one-sided Diebold-Mariano" in text and "on vol_qlike" in text
    assert f"vs garch: network {net:.4g} vs {garch:.4g}" in text and "NOT beaten" in text
    assert "why: it does not significantly beat" in text and "garch" in text.split("why:")[1]

    assert run.info.status == "FINISHED"
    cols = FeatureRegistry(sp500_store).get("rv", 1).value_columns  # the registry's column order
    assert run.data.params["data"] == f"store:{sp500_store}"
    assert run.data.params["features"] == ",".join(f"rv_v1__{c}" for c in cols) and len(cols) == 2
    assert run.data.params["n_features"] == "2" and run.data.params["trainer"] == "tune"
    assert run.data.metrics["holdout_vol_qlike"] == pytest.approx(summary["holdout"]["network"]["vol_qlike"])
