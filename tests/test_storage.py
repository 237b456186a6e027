"""The storage setting (`tradesys.storage`, `$TRADESYS_STORAGE`, `--storage`): a path or an S3 URI for Tune results,
checkpoints and MLflow artifacts, the MLflow database staying on the head.

End to end against moto's S3-compatible server on loopback (tests/s3moto.py): `jobs/train.py --storage s3://...`
on the session Ray; then everything is read back from the bucket with boto3 (the Tune experiment state, every
trial's results, the best checkpoint, the MLflow artifacts), the registry loads the model from there and it is the
checkpoint's model, `tradesys models export` downloads the exports byte for byte, and the runs directory holds the
MLflow database alone.
"""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tradesys.storage import STORAGE_ENV, Storage, checkpoint_uri, parse_storage, ray_storage, resolve_storage

ROOT = Path(__file__).resolve().parent.parent


def _job(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"_job_{name}", ROOT / "jobs" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_paths_and_s3_uris_are_parsed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    local = parse_storage("shared/runs")
    assert local == Storage(str(tmp_path / "shared" / "runs"), False)
    assert local.tune == str(tmp_path / "shared/runs/tune") and local.train == str(tmp_path / "shared/runs/train")
    assert local.rl_tune == str(tmp_path / "shared/runs/rl-tune")
    assert local.mlflow_artifacts("exp") == (tmp_path / "shared/runs/mlartifacts/exp").as_uri()
    s3 = parse_storage("s3://my-bucket/team//tradesys/")
    assert s3 == Storage("s3://my-bucket/team/tradesys", True)
    assert (s3.tune, s3.train, s3.rl_tune) == ("s3://my-bucket/team/tradesys/tune", "s3://my-bucket/team/tradesys/train",
                                               "s3://my-bucket/team/tradesys/rl-tune")  # fmt: skip
    assert s3.mlflow_artifacts("tradesys-train") == "s3://my-bucket/team/tradesys/mlflow/tradesys-train"
    assert parse_storage("s3://my-bucket").join("tune") == "s3://my-bucket/tune"


@pytest.mark.parametrize(("value", "reason"), [
    ("s3:/x", "is not an S3 URI: write s3://bucket/prefix"),
    ("s3://", "is not a valid S3 bucket name"),
    ("s3://Bad_Bucket/x", "is not a valid S3 bucket name"),
    ("s3://bucket/a/../b", "plain key prefix"),
    ("gs://bucket/x", "the scheme gs:// is not supported"),
    ("file:///tmp/x", "the scheme file:// is not supported"),
    ("  ", "empty value"),
])  # fmt: skip
def test_bad_values_are_refused_in_one_line_naming_the_setting(value: str, reason: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_storage(value, setting=STORAGE_ENV)
    msg = str(e.value)
    assert msg.startswith(f"{STORAGE_ENV}: ") and reason in msg and "\n" not in msg


def test_precedence_argument_then_environment_then_runs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    assert resolve_storage(None, tmp_path) == Storage(str(tmp_path), False)  # unset: the runs directory, as before
    monkeypatch.setenv(STORAGE_ENV, "s3://env-bucket/p")
    assert resolve_storage(None, tmp_path).root == "s3://env-bucket/p"
    assert resolve_storage("s3://arg-bucket", tmp_path).root == "s3://arg-bucket"
    monkeypatch.setenv(STORAGE_ENV, "gs://x/y")
    with pytest.raises(ValueError, match=rf"^{STORAGE_ENV}: 'gs://x/y'"):
        resolve_storage(None, tmp_path)


def test_the_jobs_refuse_a_bad_setting_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    train = _job("train")
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    with pytest.raises(SystemExit) as e:
        train.parse_args(["--storage", "s3:/bucket/x", "--runs-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and err[-1].endswith("error: storage: 's3:/bucket/x' is not an S3 URI: write "
                                                   "s3://bucket/prefix")  # fmt: skip
    monkeypatch.setenv(STORAGE_ENV, "gs://bucket/x")
    with pytest.raises(SystemExit) as e:
        train.parse_args(["--runs-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and f"error: {STORAGE_ENV}: 'gs://bucket/x': the scheme gs:// is not supported" in err[-1]
    rl = _job("rl_train")
    monkeypatch.delenv(STORAGE_ENV)
    assert rl.main(["--tune", "--storage", "hdfs://nn/x", "--runs-dir", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: storage: 'hdfs://nn/x': the scheme hdfs:// is not supported; give a path (local or NFS) "
                   "or an s3://bucket/prefix URI"]  # fmt: skip


def test_ray_gets_a_bucket_path_and_a_file_system_without_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ray_storage("/mnt/shared/runs/tune") == ("/mnt/shared/runs/tune", None)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDSECRETNEVERPICKLED")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-never-pickled")
    path, fs = ray_storage("s3://bucket/p/tune")
    assert path == "bucket/p/tune" and fs.type_name == "s3"
    blob = pickle.dumps(fs)  # what Ray ships to every trial
    assert b"127.0.0.1:9" in blob and b"NEVERPICKLED" not in blob and b"never-pickled" not in blob


@pytest.mark.ray
def test_a_training_run_on_s3_storage_end_to_end(ray_session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    import mlflow.pytorch
    import torch
    from mlflow import MlflowClient
    from typer.testing import CliRunner

    from tradesys.cli import app
    from tradesys.train.tune import load_checkpoint_model

    from .s3moto import moto_s3

    bucket, prefix = "tradesys-runs", "team/a"
    with moto_s3(bucket) as (s3, env):
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        monkeypatch.delenv(STORAGE_ENV, raising=False)
        runs = tmp_path / "runs"
        summary = _job("train").main([
            "--storage", f"s3://{bucket}/{prefix}", "--runs-dir", str(runs), "--kinds", "lstm", "--num-samples",
            "2", "--max-epochs", "1", "--lookback", "6", "--vol-horizon", "2", "--max-samples", "200", "--holdout",
            "40", "--registry-name", "fc-s3", "--experiment", "s3-exp",
        ])  # fmt: skip
        keys = {o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
                for o in page.get("Contents", [])}  # fmt: skip
        assert summary["storage"] == f"s3://{bucket}/{prefix}"

        # Tune: the experiment state and both trials' results are in the bucket
        search = f"{prefix}/tune/forecaster-search/"
        assert any(k.startswith(search + "experiment_state-") for k in keys)
        assert len({k for k in keys if k.startswith(search) and k.endswith("/result.json")}) == 2
        # the best checkpoint: an s3:// URI; its files read back with boto3 rebuild the model the registry holds
        ckpt = summary["checkpoint"]
        assert ckpt.startswith(f"s3://{bucket}/{search}")
        ckey = ckpt.removeprefix(f"s3://{bucket}/")
        assert {f"{ckey}/model.pt", f"{ckey}/config.json"} <= keys
        local = tmp_path / "ckpt"
        local.mkdir()
        for f in ("model.pt", "config.json"):
            s3.download_file(bucket, f"{ckey}/{f}", str(local / f))
        from_checkpoint, _ = load_checkpoint_model(local)

        # MLflow: the database on the head (the runs directory holds nothing else), the artifacts in the bucket
        assert sorted(p.name for p in runs.iterdir()) == ["mlflow.db"]
        client = MlflowClient(summary["tracking_uri"])
        assert summary["tracking_uri"] == f"sqlite:///{runs.resolve() / 'mlflow.db'}"
        run = client.get_run(summary["run_id"])
        art = f"{prefix}/mlflow/s3-exp/{run.info.run_id}/artifacts"
        assert run.info.artifact_uri == f"s3://{bucket}/{art}"
        assert {f"{art}/exports/model.onnx", f"{art}/exports/model.pt", f"{art}/standardizer.json"} <= keys
        assert any(k.startswith(f"{prefix}/mlflow/s3-exp/models/") and k.endswith("/MLmodel") for k in keys)
        tune_exp = client.get_experiment_by_name("s3-exp-tune")
        assert tune_exp.artifact_location == f"s3://{bucket}/{prefix}/mlflow/s3-exp-tune"

        # the registry loads version 1 from the bucket: the best checkpoint's network, output for output
        mlflow.set_tracking_uri(summary["tracking_uri"])
        mlflow.set_registry_uri(summary["tracking_uri"])
        registered = mlflow.pytorch.load_model("models:/fc-s3/1")
        x = torch.as_tensor(np.random.default_rng(0).standard_normal((3, 6, 4)).astype(np.float32))
        with torch.no_grad():
            for a, b in zip(registered(x), from_checkpoint(x), strict=True):
                assert torch.equal(a, b)

        # the registry CLI downloads the exports from the bucket, byte for byte
        dest = tmp_path / "models"
        res = CliRunner().invoke(app, ["models", "export", "--dest", str(dest), "--versions", "1", "--registry-name",
                                       "fc-s3", "--runs-dir", str(runs)])  # fmt: skip
        assert res.exit_code == 0, res.output
        for f in ("model.onnx", "model.pt"):
            body = s3.get_object(Bucket=bucket, Key=f"{art}/exports/{f}")["Body"].read()
            assert (dest / "1" / f).read_bytes() == body


def test_an_experiment_elsewhere_is_refused_on_s3_storage(tmp_path: Path) -> None:
    from tradesys.storage import ensure_experiment
    from tradesys.train.tracking import ensure_experiment as local_experiment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    local_experiment("old", uri, runs_dir=tmp_path)  # created before the storage moved to S3: artifacts on disk
    with pytest.raises(ValueError, match=r"^storage: the MLflow experiment 'old' already keeps its artifacts at "
                                         r"file://.* not under s3://bkt-a/p; use another experiment name"):
        ensure_experiment("old", uri, parse_storage("s3://bkt-a/p"))
    new = ensure_experiment("new", uri, parse_storage("s3://bkt-a/p"))
    assert ensure_experiment("new", uri, parse_storage("s3://bkt-a/p")) == new  # the same storage: reused


def test_checkpoint_uri_names_the_bucket() -> None:
    class Ckpt:
        def __init__(self, path: str, fs: Any) -> None:
            self.path, self.filesystem = path, fs

    from pyarrow import fs

    assert checkpoint_uri(Ckpt("b/p/tune/x/checkpoint_000001", fs.S3FileSystem(anonymous=True,
                                                                               region="us-east-1"))) == \
        "s3://b/p/tune/x/checkpoint_000001"  # fmt: skip
    assert checkpoint_uri(Ckpt("/runs/tune/x", fs.LocalFileSystem())) == "/runs/tune/x"


@pytest.mark.ray
@pytest.mark.slow
def test_rllib_tune_on_s3_storage(ray_session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`tune_ppo(storage="s3://...")`: the trials' checkpoints in the bucket (s3:// URIs in the summary), the chosen
    checkpoint's RLModule logged to the run's S3 artifacts, the runs directory holding the MLflow database alone."""
    from mlflow import MlflowClient

    from tradesys.rl.train import PPOSettings
    from tradesys.rl.tune import tune_ppo

    from .s3moto import moto_s3
    from .test_rl_train import ENV, SPLIT, drift_market

    bucket = "tradesys-rl"
    with moto_s3(bucket) as (s3, env):
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        runs = tmp_path / "runs"
        base = PPOSettings(iterations=1, num_env_runners=0, train_batch_size=128, minibatch_size=64, num_epochs=1,
                           hidden=(8,), select_metric="log_return", runs_dir=str(runs), experiment="rl-s3")  # fmt: skip
        out = tune_ppo(drift_market(), ENV, SPLIT, base, num_samples=1, seeds=(0,), name="t",
                       storage=f"s3://{bucket}/rl")  # fmt: skip
        keys = {o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
                for o in page.get("Contents", [])}  # fmt: skip
        ckpt = out["best_checkpoint"]
        assert ckpt.startswith(f"s3://{bucket}/rl/rl-tune/t/")
        assert any(k.startswith(ckpt.removeprefix(f"s3://{bucket}/") + "/") for k in keys)
        assert sorted(p.name for p in runs.iterdir()) == ["mlflow.db"]
        run = MlflowClient(out["tracking_uri"]).get_run(out["run_id"])
        art = f"rl/mlflow/rl-s3/{run.info.run_id}/artifacts"
        assert run.info.artifact_uri == f"s3://{bucket}/{art}"
        assert any(k.startswith(f"{art}/rl_module/") for k in keys) and f"{art}/tune_summary.json" in keys
