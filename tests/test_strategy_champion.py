"""The model strategy scoring the registry's champion in process, following the alias (tradesys.strategy.champion).

A real MLflow registry (SQLite in tmp_path) with three tiny real LSTMs exported to ONNX and their standardizers, as
jobs/train.py logs them: v1 and v2 (lookback 10, different weights and scales) and v3 (lookback 12: cannot be scored
on the strategy's windows). References: strategies built the existing way from v1's and v2's files
(``model_path`` + ``standardizer_path``), the `ModelServer` deployment (Serve's local testing mode) pinned to the
same version, and, in the live loop, the in-process backtest and the ledger's audit log.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pyarrow as pa
import pytest
import torch
from mlflow import MlflowClient

from tests.test_strategy_model import LOOKBACK, SHORT, SIZING, _bars, _drive
from tradesys.backtest.runner import run_backtest
from tradesys.config import ConfigError, TradesysConfig, load_config
from tradesys.ledger import open_ledger
from tradesys.strategy import make_strategy
from tradesys.strategy.champion import CHAMPION_EVENT, REFUSED_EVENT, ChampionForecaster, RegistryChampions
from tradesys.strategy.model import LocalForecaster, ModelStrategy, ServeForecaster
from tradesys.train.export import export_onnx
from tradesys.train.models import build_model
from tradesys.train.registry import export_versions, set_champion

from .ledger_checks import trade_record

NAME = "champion-test-forecaster"
CHECK = 5  # champion_check_bars in these tests
WARM = LOOKBACK + 22  # bars before the first forecast


@dataclass(frozen=True)
class Registry:
    uri: str
    files: dict[int, Path]  # version -> folder with model.onnx and standardizer.json (what was logged)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    saved = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    root = tmp_path_factory.mktemp("champion")
    uri = f"sqlite:///{root}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment("champion-test", artifact_location=str(root / "artifacts"))
    client.create_registered_model(NAME)
    files: dict[int, Path] = {}
    for v, lookback in ((1, LOOKBACK), (2, LOOKBACK), (3, LOOKBACK + 2)):
        torch.manual_seed(v + 1)  # seed 2 (v1) is the seed test_strategy_model checked to trade both ways
        d = root / f"v{v}"
        d.mkdir()
        export_onnx(build_model("lstm", 4, hidden=8, n_layers=1, dropout=0.0), d / "model.onnx", lookback=lookback,
                    n_features=4, output_names=("ret", "vol", "dir_logit"), exporter="torchscript")
        rng = np.random.default_rng(v)
        (d / "standardizer.json").write_text(json.dumps({
            "mean": (rng.standard_normal(4) * 1e-3).tolist(), "std": (0.01 + rng.random(4) * 0.01).tolist(),
            "ret_scale": 0.01 * v, "vol_scale": 0.01 + 0.005 * v}))
        with mlflow.start_run(experiment_id=exp) as run:
            mlflow.log_artifact(str(d / "model.onnx"), artifact_path="exports")
            mlflow.log_artifact(str(d / "standardizer.json"))
        mv = client.create_model_version(NAME, f"{run.info.artifact_uri}/exports", run_id=run.info.run_id)
        assert int(mv.version) == v
        files[v] = d
    client.set_registered_model_alias(NAME, "champion", "1")
    yield Registry(uri, files)
    mlflow.set_tracking_uri(saved.get("MLFLOW_TRACKING_URI", ""))
    mlflow.set_registry_uri(saved.get("MLFLOW_REGISTRY_URI", saved.get("MLFLOW_TRACKING_URI", "")))


def _champion(reg: Registry, v: int) -> None:
    MlflowClient(tracking_uri=reg.uri, registry_uri=reg.uri).set_registered_model_alias(NAME, "champion", str(v))


def champion_cfg(reg: Registry, **extra: object) -> TradesysConfig:
    return load_config(overrides={**SHORT, **SIZING, "strategy.name": "model", "strategy.registry_name": NAME,
                                  "strategy.mlflow_uri": reg.uri, "strategy.champion_check_bars": CHECK, **extra})


def file_strategy(reg: Registry, v: int, cfg: TradesysConfig) -> ModelStrategy:
    """The reference: the model strategy built the existing way from version `v`'s files."""
    c = load_config(overrides={**SHORT, **SIZING, "strategy.name": "model",
                               "strategy.model_path": str(reg.files[v] / "model.onnx"),
                               "strategy.standardizer_path": str(reg.files[v] / "standardizer.json")})
    return make_strategy(c.strategy, 20, 252.0)  # type: ignore[return-value]


class Events:
    def __init__(self) -> None:
        self.rows: list[tuple[str, int, dict[str, Any]]] = []

    def __call__(self, kind: str, ts: int, payload: dict[str, Any]) -> None:
        self.rows.append((kind, ts, payload))


def _ts(b: pa.RecordBatch) -> int:
    return int(b.column("ts")[0].value)


def test_champion_is_followed_recorded_once_and_scored_as_its_files(registry: Registry) -> None:
    """v1 until the first check after the alias moves to v2, then v2 (model and standardizer): bar for bar equal to
    strategies built from each version's files; one event per switch; v3 (other lookback) is refused once."""
    _champion(registry, 1)
    cfg = champion_cfg(registry)
    bars = _bars(SHORT)
    strat = make_strategy(cfg.strategy, 20, 252.0)
    assert isinstance(strat, ModelStrategy) and isinstance(strat.forecaster, ChampionForecaster)
    events = Events()
    strat.forecaster.on_change = events
    move_at = WARM + 9  # the alias moves after this many bars (not a check bar: no lookup in flight when it moves)
    got = []
    for i, b in enumerate(bars, start=1):
        got += _drive(strat, [b])
        if i == move_at:
            set_champion(NAME, 2, "test: a better model", tracking_uri=registry.uri)
        if i == move_at + 3 * CHECK:
            _champion(registry, 3)
    # the first check after the move starts the lookup; its answer is applied on the next bar (1-based)
    switch = (move_at // CHECK + 1) * CHECK + 1
    ref1 = _drive(file_strategy(registry, 1, cfg), bars)
    ref2 = _drive(file_strategy(registry, 2, cfg), bars)
    assert got[:switch - 1] == ref1[:switch - 1]
    # from the switch bar the windows are v2's standardised closes and v2 sizes them: v2's targets exactly
    assert [w for _, w in got[switch - 1:]] == [w for _, w in ref2[switch - 1:]]
    assert [w for _, w in ref1[switch - 1:]] != [w for _, w in ref2[switch - 1:]]  # the switch is visible
    refused_at = (move_at + 3 * CHECK) // CHECK * CHECK + CHECK + 1
    assert [(k, ts, p.get("old"), p.get("new"), p.get("refused")) for k, ts, p in events.rows] == [
        (CHAMPION_EVENT, _ts(bars[0]), None, 1, None),
        (CHAMPION_EVENT, _ts(bars[switch - 1]), 1, 2, None),
        (REFUSED_EVENT, _ts(bars[refused_at - 1]), None, None, 3),
    ]
    assert "lookback 12" in events.rows[2][2]["reason"]
    st = strat.stats()
    assert st["champion_version"] == 2 and st["champion_switches"] == 1
    assert st["champion_checks"] == len(bars) // CHECK
    _champion(registry, 1)


def test_restart_continues_the_recorded_version(registry: Registry) -> None:
    """A restarted strategy scores with the version the record names, not the alias now, and switches (recording
    it) at its first check."""
    _champion(registry, 2)
    cfg = champion_cfg(registry)
    strat = make_strategy(cfg.strategy, 20, 252.0, champion_version=1)
    events = Events()
    strat.forecaster.on_change = events  # type: ignore[union-attr]
    bars = _bars(SHORT)
    strat.warm_up(bars[:WARM + 3])
    rest = bars[WARM + 3:]
    got = _drive(strat, rest)
    ref1 = _drive(file_strategy(registry, 1, cfg), bars)[WARM + 3:]
    assert got[:CHECK] == ref1[:CHECK]  # warm_up then the resumed bars: v1 as before the restart
    # the first check (bar CHECK) sees v2; the switch is the bar after it
    assert [(k, p["old"], p["new"], ts) for k, ts, p in events.rows] == [(CHAMPION_EVENT, 1, 2, _ts(rest[CHECK]))]
    _champion(registry, 1)


def test_in_actor_and_serve_paths_give_identical_forecasts(registry: Registry, tmp_path: Path) -> None:
    """The same champion scored in process and by the ModelServer deployment pinned to it: equal, exactly, before
    and after the alias moves (the deployment's model_dir is what `tradesys models serve` exports)."""
    from ray import serve

    from tradesys.serve.predict import ModelServer

    export_versions(NAME, tmp_path / "models", [1, 2], tracking_uri=registry.uri)
    handle = serve.run(ModelServer.options(name="ModelServerChampion").bind(str(tmp_path / "models")),
                       name="champion_parity", route_prefix=None, _local_testing_mode=True)
    _champion(registry, 1)

    def local(v: int, folder: Path) -> Any:
        return LocalForecaster(folder / "model.onnx", "onnxruntime")

    def served(v: int, folder: Path) -> Any:
        return ServeForecaster(timeout_s=30.0, handle=handle, version=str(v))

    paths = [ChampionForecaster(RegistryChampions(NAME, registry.uri, tmp_path / f"cache-{k}"), build,
                                check_every_bars=1) for k, build in (("local", local), ("serve", served))]
    x = np.random.default_rng(7).standard_normal((20, LOOKBACK, 4)).astype(np.float32)
    for bar, v in ((1, 1), (3, 2)):
        if v == 2:
            _champion(registry, 2)
            for f in paths:
                f.refresh(2, 2)  # applies bar 1's lookup (v1 still), starts the one that sees v2
        outs = []
        for f in paths:
            f.refresh(bar, bar)  # bar 3 applies bar 2's lookup: the switch is the bar after the check
            assert f.version == v
            outs.append(f.forecast(x, f"bar-{bar}"))
        for k in ("ret", "vol"):
            np.testing.assert_array_equal(outs[0][k], outs[1][k])
        direct = LocalForecaster(registry.files[v] / "model.onnx").forecast(x)
        np.testing.assert_array_equal(outs[0]["ret"], direct["ret"])
    _champion(registry, 1)


def test_config_refuses_what_the_champion_decides(registry: Registry) -> None:
    for key, val in (("strategy.model_path", "/tmp/m.onnx"), ("strategy.standardizer_path", "/tmp/s.json"),
                     ("strategy.model_version", "1")):
        with pytest.raises(ConfigError, match=key.split(".")[1]):
            champion_cfg(registry, **{key: val})
    with pytest.raises(ConfigError, match="champion_check_bars"):
        champion_cfg(registry, **{"strategy.champion_check_bars": 0})
    with pytest.raises(ValueError, match=r"strategy\.registry_name: 'nope' has no champion"):
        make_strategy(champion_cfg(registry, **{"strategy.registry_name": "nope"}).strategy, 20, 252.0)


@pytest.mark.ray
@pytest.mark.slow
def test_live_loop_scores_the_champion_in_the_actor_and_audits_a_move(
    ray_session: None, registry: Registry, tmp_path: Path
) -> None:
    """Actors + in-actor champion trade exactly as the backtest on v1's files; the first version is audited once.
    A resume after the alias moved: the booked bars keep v1, the move is picked up at the first check, audited once,
    and the resumed bars trade as v2."""
    from tradesys.live import run_live

    _champion(registry, 1)
    url = f"sqlite:///{tmp_path}/live.db"
    first = {"data.start": "2019-08-15", "data.end": "2019-10-31", "ledger.url": url}  # 55 bars, 23 after warm-up
    summary = run_live(champion_cfg(registry, **first), show_progress=False, run_id="t-champion-1")
    assert summary["reason"] == "completed"
    _, bt = run_backtest(load_config(overrides={**SHORT, **SIZING, **first, "ledger.url": "sqlite://",
                                                "strategy.name": "model",
                                                "strategy.model_path": str(registry.files[1] / "model.onnx"),
                                                "strategy.standardizer_path":
                                                    str(registry.files[1] / "standardizer.json")}))
    live = open_ledger(url)
    assert trade_record(live) == trade_record(bt) and len(bt.fills()) > 0
    rows = live.audit_log(CHAMPION_EVENT)
    assert [(r["payload"]["old"], r["payload"]["new"]) for r in rows] == [(None, 1)]
    live.close()

    set_champion(NAME, 2, "test: moved while the run was down", tracking_uri=registry.uri)
    rest = {"data.start": first["data.start"], "data.end": "2019-11-30", "ledger.url": url}
    summary = run_live(champion_cfg(registry, **rest), show_progress=False, run_id="t-champion-2")
    assert summary["reason"] == "completed"
    live = open_ledger(url)
    rows = live.audit_log(CHAMPION_EVENT)
    assert [(r["payload"]["old"], r["payload"]["new"]) for r in rows] == [(None, 1), (1, 2)]
    n_first = len(_bars({**SHORT, **first}))
    # the resumed run's first check (bar CHECK from the restart) starts the lookup; the next bar switches
    assert rows[1]["ts_ns"] == _ts(_bars({**SHORT, **rest})[n_first + CHECK])
    live.close()
    _champion(registry, 1)
