"""`tradesys models ...` over a real MLflow registry (SQLite in tmp_path, three tiny real LSTMs with real exports).

References: the registry itself read through `MlflowClient` (aliases, history tag, run and version tags), the files
that were logged (exports must come back byte for byte), and the eager torch models (the served champion and
challenger must answer what the networks compute). No Ray: serving runs in Serve's local testing mode.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from ray import serve
from typer.testing import CliRunner, Result

from tradesys.commands.models import app
from tradesys.serve.errors import install_error_handlers
from tradesys.serve.predict import (
    ModelServer,
    RoutingConfig,
    canary_bucket,
    find_model_file,
    list_versions,
    predict_router,
)
from tradesys.train.export import export_onnx, export_torchscript
from tradesys.train.models import build_model
from tradesys.train.registry import promote_if_better, register
from tradesys.train.tracking import log_artifacts, log_json, log_params, log_torch_model, setup_tracking

NAME = "cli-forecaster"
LOOKBACK, NF = 8, 4
OUTPUTS = ("ret", "vol", "dir_logit")
HOLDOUT = {1: {"vol_qlike": 1.25, "ret_se": 0.5}, 2: {"vol_qlike": 1.5, "ret_se": 0.75}, 3: {"vol_qlike": 1.125}}
NO_EXPORTS = 2  # version 2's run logged no exports
KEY = "models-cli-test-key-7f3"
runner = CliRunner()


@dataclass
class Built:
    runs: Path
    files: dict[int, dict[str, bytes]] = field(default_factory=dict)  # version -> exported file name -> bytes
    scalers: dict[int, dict[str, Any]] = field(default_factory=dict)
    models: dict[int, torch.nn.Module] = field(default_factory=dict)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    """Versions 1..3 as jobs/train.py logs them; 1 is champion (no_champion promotion), 3 is challenger."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}  # setup_tracking exports its URIs
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    root = tmp_path_factory.mktemp("models-cli")
    b = Built(runs=root / "runs")
    setup_tracking("cli-models", runs_dir=b.runs)
    for v in (1, 2, 3):
        torch.manual_seed(v)
        model = build_model("lstm", NF, hidden=4, n_layers=1, dropout=0.0).eval()
        b.models[v] = model
        with mlflow.start_run():
            log_params({"lookback": LOOKBACK, "n_features": NF, "seed": v})
            mlflow.log_metrics({f"holdout_{k}": x for k, x in HOLDOUT[v].items()})
            if v != NO_EXPORTS:
                d = root / f"exports-{v}"
                d.mkdir()
                kw = {"lookback": LOOKBACK, "n_features": NF, "output_names": OUTPUTS}
                export_onnx(model, d / "model.onnx", exporter="torchscript", **kw)  # the faster exporter
                export_torchscript(model, d / "model.pt", **kw)
                log_artifacts([d / "model.onnx", d / "model.pt"], artifact_path="exports")
                b.scalers[v] = {"mean": [0.0] * NF, "std": [1.0] * NF, "ret_scale": 0.01 * v, "vol_scale": 0.02}
                log_json(b.scalers[v], "standardizer.json")
                b.files[v] = {p.name: p.read_bytes() for p in d.iterdir()}
            info = log_torch_model(model, np.zeros((2, LOOKBACK, NF), np.float32))
        assert register(info.model_uri, NAME) == v
        if v == 1:
            assert promote_if_better(NAME, np.ones(5), np.array([])).reason == "no_champion"
    for k in [k for k in os.environ if k.startswith("MLFLOW_")]:
        del os.environ[k]
    os.environ.update(saved)
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    mlflow.set_registry_uri(None)  # type: ignore[arg-type]
    yield b


@pytest.fixture()
def runs(built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the store (the artifacts stay where they are: tests only read them)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("TRADESYS_API_KEY", raising=False)
    d = tmp_path / "runs"
    d.mkdir()
    shutil.copy(built.runs / "mlflow.db", d / "mlflow.db")
    return d


def cli(runs: Path, *args: str) -> Result:
    return runner.invoke(app, [*args, "--runs-dir", str(runs), "--registry-name", NAME])


def ok_json(runs: Path, *args: str) -> Any:
    r = cli(runs, *args, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def ref(runs: Path) -> MlflowClient:
    uri = f"sqlite:///{runs / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def assert_refused(r: Result, *needles: str) -> None:
    """Exit code 2, one line naming the argument, no traceback."""
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and (r.exception is None or isinstance(r.exception, SystemExit))
    for n in needles:
        assert n in r.output, r.output


def test_list_matches_the_registry(runs: Path) -> None:
    rows = ok_json(runs, "list")
    c = ref(runs)
    assert c.get_registered_model(NAME).aliases == {"champion": 1, "challenger": 3}
    assert [r["version"] for r in rows] == [1, 2, 3]
    for r in rows:
        mv = c.get_model_version(NAME, str(r["version"]))
        assert r["run_id"] == mv.run_id and r["source"] == mv.source
        assert abs(datetime.fromisoformat(r["created"]).timestamp() - mv.creation_timestamp / 1000) < 1.0
        assert r["holdout"] == HOLDOUT[r["version"]]
    assert [r["aliases"] for r in rows] == [["champion"], [], ["challenger"]]
    tags = c.get_run(rows[0]["run_id"]).data.tags
    assert rows[0]["promotion"]["decision"] == tags["promotion.decision"] == "promoted"
    assert rows[0]["promotion"]["reason"] == tags["promotion.reason"] == "no_champion"
    metrics = c.get_run(rows[0]["run_id"]).data.metrics
    assert rows[0]["promotion_stats"] == {"promoted": 1.0, "alpha": 0.05} == {
        k.removeprefix("promotion_"): x for k, x in metrics.items() if k.startswith("promotion_")}
    table = cli(runs, "list")
    assert table.exit_code == 0 and "promoted" in table.stdout and "3 version(s)" in table.stdout


def test_show_by_number_and_by_alias(runs: Path, built: Built) -> None:
    d = ok_json(runs, "show", "3")
    run = ref(runs).get_run(d["run_id"])
    assert d["aliases"] == ["challenger"] and d["params"] == run.data.params
    sizes = {a["path"]: a["bytes"] for a in d["artifacts"]}
    assert sizes["exports/model.onnx"] == len(built.files[3]["model.onnx"])
    assert sizes["exports/model.pt"] == len(built.files[3]["model.pt"])
    assert ok_json(runs, "show", "champion")["version"] == 1
    assert not any(p.startswith("exports/") for p in (a["path"] for a in ok_json(runs, "show", "2")["artifacts"]))
    assert "holdout vol_qlike" in cli(runs, "show", "1").stdout


def test_manual_promotion_is_recorded_and_rollback_undoes_it(runs: Path) -> None:
    c = ref(runs)
    out = ok_json(runs, "promote", "2", "--reason", "desk override: v3 unstable")
    assert (out["champion"], out["previous_champion"], out["history"]) == (2, 1, [1, 2])
    assert c.get_registered_model(NAME).aliases["champion"] == 2
    assert json.loads(c.get_registered_model(NAME).tags["champion_history"]) == [1, 2]
    mv = c.get_model_version(NAME, "2")
    for tags in (c.get_run(mv.run_id).data.tags, mv.tags):
        assert tags["promotion.decision"] == "promoted" and tags["promotion.reason"] == "manual"
        assert tags["promotion.manual_reason"] == "desk override: v3 unstable"
        assert tags["promotion.champion_version"] == "1"
    assert c.get_run(mv.run_id).data.metrics["promotion_promoted"] == 1.0
    assert ok_json(runs, "list")[1]["promotion"]["reason"] == "manual"
    assert_refused(cli(runs, "promote", "2", "--reason", "again"), "VERSION:", "already the champion")

    # a DM promotion on top of the manual one: the history interleaves both, and rollback walks it back
    uri = f"sqlite:///{runs / 'mlflow.db'}"
    rng = np.random.default_rng(0)
    base = rng.exponential(1.0, 200)
    assert promote_if_better(NAME, base * 0.5, base, tracking_uri=uri).promoted  # challenger 3 vs champion 2
    assert json.loads(c.get_registered_model(NAME).tags["champion_history"]) == [1, 2, 3]
    assert ok_json(runs, "rollback") == {"name": NAME, "champion": 2, "rolled_back_from": 3, "history": [1, 2]}
    assert c.get_registered_model(NAME).aliases["champion"] == 2
    r = cli(runs, "rollback")
    assert r.exit_code == 0 and "champion 2 -> 1" in r.stdout
    assert c.get_registered_model(NAME).aliases["champion"] == 1
    assert json.loads(c.get_registered_model(NAME).tags["champion_history"]) == [1]
    r = cli(runs, "rollback")  # the model exists: the error is about its history, not the name typed
    assert_refused(r, f"champion: no previous champion of '{NAME}' to roll back to (only version 1 has been")
    assert "--registry-name" not in r.output and len(r.output.strip().splitlines()) == 1


def test_export_writes_the_logged_files_byte_for_byte(runs: Path, built: Built, tmp_path: Path) -> None:
    dest = tmp_path / "served"
    out = ok_json(runs, "export", "--dest", str(dest))  # default: champion 1 and challenger 3
    assert sorted(out["versions"]) == ["1", "3"]
    for v in (1, 3):
        for fname, data in built.files[v].items():
            assert (dest / str(v) / fname).read_bytes() == data
        assert json.loads((dest / str(v) / "standardizer.json").read_text()) == built.scalers[v]
    assert sorted(p.name for p in dest.iterdir()) == ["1", "3"]  # the scratch folder is gone
    assert list_versions(dest) == ["1", "3"] and find_model_file(dest, "3") == dest / "3" / "model.onnx"

    again = ok_json(runs, "export", "--dest", str(tmp_path / "again"), "--versions", "champion,3", "--versions", "1")
    assert sorted(again["versions"]) == ["1", "3"]  # aliases resolved, duplicates dropped

    assert_refused(cli(runs, "export", "--dest", str(tmp_path / "x"), "--versions", "2"), "--versions:",
                   "version 2", "no exports")  # fmt: skip
    partial = tmp_path / "partial"
    assert_refused(cli(runs, "export", "--dest", str(partial), "--versions", "1,2"), "--versions:", "no exports")
    assert not partial.exists()  # checked before anything is written
    assert_refused(cli(runs, "export", "--dest", str(partial), "--versions", "7"), "--versions:", "no version 7")


def test_errors_name_the_argument(runs: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["list", "--runs-dir", str(runs), "--registry-name", "nope"])
    assert_refused(r, "--registry-name:", "'nope' not found")
    assert_refused(cli(runs, "show", "9"), "VERSION:", "no version 9")
    assert_refused(cli(runs, "show", "staging"), "VERSION:", "neither a version number nor an alias")
    assert_refused(cli(runs, "promote", "3", "--reason", "   "), "--reason:")
    assert cli(runs, "promote", "3").exit_code == 2  # --reason is required (usage error)
    assert ref(runs).get_registered_model(NAME).aliases["champion"] == 1  # nothing moved
    empty = tmp_path / "empty"
    assert_refused(runner.invoke(app, ["list", "--runs-dir", str(empty)]), "--runs-dir:", "no MLflow store")
    assert not (empty / "mlflow.db").exists()  # a read command does not create an empty store
    assert_refused(cli(runs, "serve", "--dry-run"), "TRADESYS_API_KEY is not set")


def _serving_client(model_dir: str, plan: dict[str, Any]) -> TestClient:
    handle = serve.run(ModelServer.options(name="ModelServerCliModels").bind(model_dir), name="cli_models_test",
                       route_prefix=None, _local_testing_mode=True)  # fmt: skip
    fa = FastAPI()
    install_error_handlers(fa)
    cfg = RoutingConfig(champion=plan["champion"], challenger=plan["challenger"],
                        canary_percent=plan["canary_percent"], shadow=plan["shadow"], model_name=plan["name"])
    fa.include_router(predict_router(handle, config=cfg, api_key=KEY))
    return TestClient(fa)


def test_serve_dry_run_exports_and_the_export_serves_the_networks(
    runs: Path, built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRADESYS_API_KEY", KEY)
    dest = tmp_path / "serving"
    r = cli(runs, "serve", "--dry-run", "--canary-percent", "25", "--dest", str(dest), "--http-port", "8123",
            "--grpc-port", "9123")
    assert r.exit_code == 0, r.output
    plan = json.loads(r.stdout)
    assert plan["grpc_port"] == 9123
    assert_refused(cli(runs, "serve", "--dry-run", "--grpc-port", "70000", "--dest", str(tmp_path / "g")),
                   "--grpc-port")
    assert (plan["champion"], plan["challenger"], plan["canary_percent"], plan["shadow"]) == ("1", "3", 25.0, False)
    assert plan["model_dir"] == str(dest.resolve()) and plan["http_port"] == 8123 and KEY not in r.output
    assert list_versions(dest) == ["1", "3"]

    # what `serve` would run: the routes over the exported files, answered by the networks logged as v1 and v3
    client = _serving_client(plan["model_dir"], plan)
    x = np.random.default_rng(1).standard_normal((3, LOOKBACK, NF)).astype(np.float32)
    ids = {"champion": next(f"r{i}" for i in range(100) if canary_bucket(f"r{i}") >= 25),
           "challenger": next(f"r{i}" for i in range(100) if canary_bucket(f"r{i}") < 25)}  # fmt: skip
    for role, version in (("champion", 1), ("challenger", 3)):
        resp = client.post("/v1/predict", json={"windows": x.tolist()},
                           headers={"X-API-Key": KEY, "X-Request-ID": ids[role]})  # fmt: skip
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert (body["role"], body["version"], body["model"]) == (role, str(version), NAME)
        with torch.no_grad():
            want = built.models[version](torch.from_numpy(x))
        for name, w in zip(OUTPUTS, want, strict=True):
            np.testing.assert_allclose(np.array(body["outputs"][name], dtype=np.float32), w.numpy(), rtol=1e-5,
                                       atol=1e-5)  # fmt: skip

    # champion == challenger (v3 promoted by hand): no canary to split, but the champion alone serves
    assert cli(runs, "promote", "3", "--reason", "ship it").exit_code == 0
    assert_refused(cli(runs, "serve", "--dry-run", "--shadow", "--dest", str(tmp_path / "s2")),
                   "--canary-percent/--shadow:", "no challenger distinct")  # fmt: skip
    solo = json.loads(cli(runs, "serve", "--dry-run", "--dest", str(tmp_path / "s3")).stdout)
    assert (solo["champion"], solo["challenger"]) == ("3", None)
    assert list_versions(tmp_path / "s3") == ["3"]
