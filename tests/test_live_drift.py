"""The live loop feeds the DriftMonitor: what the model strategy computed reaches the monitor, and a volatile live
window drifts from a calm reference.

A real small LSTM exported to ONNX (random weights, fixed seed) with a standardizer fitted on AAPL returns before
the trading window, as in tests/test_strategy_model.py. References: the features recomputed here from the source's
closes with `default_features` over each symbol's whole history, the forecasts from `load_predictor` on windows
standardised here, the realised returns from the next bar's close; the in-process backtest for the books.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import ray
import torch

from tests.test_strategy_model import _bars, _closes
from tradesys.actors.drift import (
    LIVE_FEATURES,
    MonitorFeed,
    monitor_kwargs,
    reference_features,
    reference_predictions,
)
from tradesys.backtest.runner import run_backtest
from tradesys.config import ConfigError, TradesysConfig, load_config
from tradesys.core.portfolio import Portfolio
from tradesys.data import bars_per_year, make_source
from tradesys.ledger import open_ledger
from tradesys.strategy import make_strategy
from tradesys.strategy.model import FEATURE_NAMES, WARMUP_RETURNS, BarObservation, ModelStrategy
from tradesys.train.data import Standardizer, default_features, make_samples
from tradesys.train.export import export_onnx
from tradesys.train.inference import load_predictor
from tradesys.train.models import build_model

from .ledger_checks import assert_ledger_consistent, closes_by_ts, trade_record

LOOKBACK = 10
FIRST = LOOKBACK + WARMUP_RETURNS - 1  # bar index of the first full window
SHORT = {"data.start": "2019-06-01", "data.end": "2019-12-31"}  # 148 bars, 20 symbols
COVID = {"data.start": "2020-01-01", "data.end": "2020-06-30"}
REFERENCE_2017 = {"drift.reference_start": "2017-01-01", "drift.reference_end": "2017-12-31"}


@dataclass(frozen=True)
class Artefacts:
    model_path: Path
    scaler_path: Path


@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory) -> Artefacts:
    d = tmp_path_factory.mktemp("live_drift")
    torch.manual_seed(2)
    model = build_model("lstm", 4, hidden=8, n_layers=1, dropout=0.0)
    export_onnx(model, d / "model.onnx", lookback=LOOKBACK, n_features=4,
                output_names=("ret", "vol", "dir_logit"), exporter="torchscript")
    before = _closes(_bars({"data.start": "2017-01-01", "data.end": "2019-05-31"}))["AAPL"]
    sc = Standardizer.fit(make_samples(before.pct_change().iloc[1:], lookback=LOOKBACK, vol_horizon=5))
    (d / "standardizer.json").write_text(json.dumps({"mean": sc.mean.tolist(), "std": sc.std.tolist(),
                                                     "ret_scale": sc.ret_scale, "vol_scale": sc.vol_scale}))
    return Artefacts(d / "model.onnx", d / "standardizer.json")


def model_cfg(art: Artefacts, **extra: object) -> TradesysConfig:
    return load_config(overrides={
        **SHORT, "strategy.max_weight": 0.5, "strategy.target_vol": 0.05, "strategy.min_edge": 0.25,
        "strategy.name": "model", "strategy.model_path": str(art.model_path),
        "strategy.standardizer_path": str(art.scaler_path), **extra,
    })  # fmt: skip


def drift_cfg(art: Artefacts, tmp_path: Path, **extra: object) -> TradesysConfig:
    """Drift on: a 2017 reference, no launcher, ticks per batch (deterministic), no MLflow unless asked."""
    return model_cfg(art, **{
        "drift.enabled": True, **REFERENCE_2017, "drift.poll_s": False, "drift.check_every_s": False,
        "drift.n_permutations": 100, "drift.mlflow": False, "drift.audit_path": str(tmp_path / "drift.jsonl"),
        "drift.last_trained": (datetime.now(UTC) - timedelta(days=2)).isoformat(),  # past the 1-day cooldown
        "ledger.url": f"sqlite:///{tmp_path}/live.db", **extra,
    })  # fmt: skip


def run_supervised(cfg: TradesysConfig, run_id: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The live loop under a Supervisor (as run_live), plus the monitor's windows read before the run is torn down."""
    from tradesys.actors.supervisor import Supervisor
    from tradesys.live import resolve_ledger_url

    sup = Supervisor.options(name=f"{run_id}:supervisor").remote(cfg, resolve_ledger_url(cfg, run_id), run_id)
    try:
        summary = ray.get(sup.run.remote(), timeout=300)
        mon = ray.get(sup.children.remote()).get("drift")
        windows = ray.get(mon.windows.remote()) if mon is not None else None
    finally:
        ray.kill(sup)
    return summary, windows


def expected_rows(art: Artefacts, batches: list[pa.RecordBatch]) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Independently: per bar once warm, per symbol in batch order, the default_features row from the symbol's whole
    close history, the model's forecast on the window standardised here (return units), the next bar's return."""
    closes = _closes(batches)
    scaler = json.loads(art.scaler_path.read_text())
    mean32, std32 = np.asarray(scaler["mean"], np.float32), np.asarray(scaler["std"], np.float32)
    feats = {s: default_features(closes[s].pct_change().iloc[1:]) for s in closes.columns}
    nxt = closes.shift(-1) / closes - 1.0
    predictor = load_predictor(art.model_path)
    f_rows, p_rows, realised = [], [], []
    for i in range(FIRST, len(batches)):
        ts = closes.index[i]
        syms = batches[i].column("symbol").to_pylist()
        f_rows.append(np.stack([feats[s].loc[ts].to_numpy() for s in syms]))
        win = np.stack([feats[s].loc[:ts].to_numpy()[-LOOKBACK:] for s in syms])
        out = predictor.predict(((win.astype(np.float32) - mean32) / std32).astype(np.float32))
        p_rows.append(np.column_stack([out["ret"] * scaler["ret_scale"], out["vol"] * scaler["vol_scale"]]))
        realised.append(nxt.loc[ts, syms].to_numpy())
    f = pd.DataFrame(np.concatenate(f_rows), columns=list(FEATURE_NAMES))
    p = pd.DataFrame(np.concatenate(p_rows), columns=["ret", "vol"])
    return f, p, np.concatenate(realised)


def test_local_observer_gets_one_bar_late_rows_and_feed_frames(art: Artefacts) -> None:
    """The backtest side of the one code path: the strategy's observer alone, no Ray."""
    cfg = model_cfg(art)
    batches = _bars(SHORT)
    strat = make_strategy(cfg.strategy, 20, bars_per_year(cfg.data))
    assert isinstance(strat, ModelStrategy)
    seen: list[BarObservation] = []
    strat.observer = seen.append
    book = Portfolio(1e6).snapshot()
    plain = make_strategy(cfg.strategy, 20, bars_per_year(cfg.data))
    for b in batches:  # the observer changes nothing the strategy decides
        assert [o.client_order_id for o in strat.on_bars(b, book, {})] == [
            o.client_order_id for o in plain.on_bars(b, book, {})]
        assert strat.last_weights == plain.last_weights
    assert len(seen) == len(batches) - FIRST - 1  # each bar's rows go out at the next bar
    strat.flush()
    assert len(seen) == len(batches) - FIRST and np.isnan(seen[-1].realised).all()
    ts = [int(b.column("ts").cast(pa.int64())[0].as_py()) for b in batches]
    assert [o.ts for o in seen] == ts[FIRST:]
    f, p, realised = MonitorFeed.frames(seen)
    ef, ep, er = expected_rows(art, batches)
    np.testing.assert_allclose(f[list(LIVE_FEATURES)].to_numpy(), ef.to_numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(p.to_numpy(), ep.to_numpy(), rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(np.isnan(realised), np.isnan(er))
    np.testing.assert_allclose(realised, er, rtol=1e-12, atol=0)
    assert list(f["symbol"][:20]) == batches[FIRST].column("symbol").to_pylist()
    assert (p["ret"].abs() > 0).all() and p["ret"].std() > 0  # real forecasts, not placeholders


@pytest.mark.ray
@pytest.mark.slow
def test_live_loop_hands_the_monitor_what_the_strategy_computed(
    ray_session: None, art: Artefacts, tmp_path: Path
) -> None:
    cfg = drift_cfg(art, tmp_path, **{"drift.window": 5000, "drift.check_every_rows": 1000,
                                      "drift.send_every_bars": 7})
    summary, windows = run_supervised(cfg, "t-drift-rows")
    assert windows is not None
    batches = _bars(SHORT)
    ef, ep, er = expected_rows(art, batches)
    n_rows = (len(batches) - FIRST) * 20
    assert len(ef) == n_rows == 2340
    # (a) every row the strategy computed, in order, once: features, forecasts, realised next-bar returns
    got_f, got_p, got_e = windows["features"], windows["predictions"], windows["errors"]
    assert list(got_f.columns) == list(LIVE_FEATURES) and len(got_f) == n_rows
    np.testing.assert_allclose(got_f.to_numpy(), ef.to_numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got_p.to_numpy(), ep.to_numpy(), rtol=1e-4, atol=1e-7)
    paired = np.isfinite(er)
    assert paired.sum() == n_rows - 20  # the last bar's outcome is not known by the end of the run
    np.testing.assert_allclose(got_e["realised"].to_numpy(), er[paired], rtol=1e-12, atol=0)
    np.testing.assert_allclose(got_e["prediction"].to_numpy(), ep["ret"].to_numpy()[paired], rtol=1e-4, atol=1e-7)
    # the summary: rows seen, the schedule's two checks, the hand-off's batches (7 bars each, the rest at the end)
    d = summary["drift"]
    assert d["rows_seen"] == n_rows and d["checks"] == 2 and d["launches"] == 0
    assert d["feed"]["sent_rows"] == n_rows and d["feed"]["dropped_batches"] == 0 and d["feed"]["errors"] == 0
    assert d["feed"]["sent_batches"] == -(-(len(batches) - FIRST) // 7) and d["feed"]["in_flight"] == 0
    audit = [json.loads(line) for line in (tmp_path / "drift.jsonl").read_text().splitlines()]
    assert [a["rows_seen"] for a in audit] == [8 * 140, 16 * 140]  # checks after the batches crossing 1000 rows
    # drift changes nothing in the books: the live loop still trades exactly as the backtest
    _, bt = run_backtest(model_cfg(art))
    live = open_ledger(str(cfg.ledger.url))
    assert summary["reason"] == "completed" and trade_record(live) == trade_record(bt) and len(bt.fills()) > 300
    assert_ledger_consistent(live, cfg.initial_cash, closes_by_ts(make_source(cfg.data)))


@pytest.mark.ray
@pytest.mark.slow
def test_covid_window_drifts_from_calm_2017(ray_session: None, art: Artefacts, tmp_path: Path) -> None:
    """(b) Reference 2017 (calm), live 2020 H1 (COVID): the monitor decides retrain for feature drift."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = drift_cfg(art, tmp_path, **COVID, **{"drift.window": 1000, "drift.check_every_rows": 1000,
                                               "drift.mlflow": True, "drift.mlflow_uri": uri,
                                               "drift.evidently": "never"})
    summary, _ = run_supervised(cfg, "t-drift-covid")
    d = summary["drift"]
    assert summary["reason"] == "completed" and d["checks"] >= 1 and d["launches"] == 0
    last = d["last_decision"]
    assert last["retrain"] and last["action"] == "no_launcher"
    assert last["reasons"][0]["code"] == "feature_drift"
    assert d["actions"] == {"no_launcher": d["checks"]}
    # the statistics behind it, from the audit record: the vol features moved by more than a reference sd
    rec = [json.loads(line) for line in (tmp_path / "drift.jsonl").read_text().splitlines()][-1]
    cols = {c["name"]: c for c in rec["features"]["columns"]}
    assert {"abs_ret", "rv5", "rv22"} <= set(rec["features"]["drifted_columns"])
    assert cols["rv22"]["wasserstein"] > 1.0 and cols["rv22"]["ks_pvalue"] < 1e-10
    # the forecasts are watched against the model's own 2017 forecasts (reference_predictions, on by default)
    assert {c["name"] for c in rec["predictions"]["columns"]} == {"ret", "vol"}
    # and the same decision is in MLflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("tradesys-drift")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == d["checks"] and all(r.data.tags["decision.reasons"].startswith("feature_drift") for r in runs)


def test_config_and_reference_errors_name_the_field(art: Artefacts, tmp_path: Path) -> None:
    trend = {"drift.enabled": True, **REFERENCE_2017}
    with pytest.raises(ConfigError, match=r"drift\.enabled: needs strategy\.name = 'model'"):
        load_config(overrides=trend)
    cases = [
        ({"drift.reference_start": None}, "reference_start: required"),
        ({"drift.reference": "ref.txt"}, r"drift\.reference: must be"),
        ({"drift.launcher": "job_submission"}, "jobs_address: required"),
        ({"drift.min_rows": 500, "drift.window": 100}, "min_rows"),
        ({"drift.last_trained": "2026-01-01T00:00:00"}, "last_trained: must carry a timezone"),
        ({"drift.launcher": "slurm"}, r"drift\.launcher"),
    ]
    for extra, msg in cases:
        over = {**REFERENCE_2017, **extra}
        if over.get("drift.reference_start") is None:
            over.pop("drift.reference_start")
        with pytest.raises(ConfigError, match=msg):
            model_cfg(art, **{"drift.enabled": True, **over})
    # a reference file: the rows of the "data" reference written to Parquet read back the same; a missing one fails
    cfg = model_cfg(art, **{"drift.enabled": True, **REFERENCE_2017})
    ref = reference_features(cfg.drift, cfg.data)
    closes = _closes(_bars({"data.start": "2016-10-01", "data.end": "2017-12-31"}))
    want = pd.concat([default_features(closes[s].pct_change().iloc[1:]).dropna().loc["2017"] for s in closes.columns])
    np.testing.assert_allclose(ref.to_numpy(), want.to_numpy(), rtol=1e-12)
    assert len(ref) == 20 * 251
    ref.to_parquet(tmp_path / "ref.parquet")
    from_file = model_cfg(art, **{"drift.enabled": True, "drift.reference": str(tmp_path / "ref.parquet")})
    kw = monitor_kwargs(from_file, "r1")
    pd.testing.assert_frame_equal(kw["reference_features"], ref)
    assert kw["launcher"] is None and kw["audit_path"].endswith("r1/drift.jsonl")
    missing = model_cfg(art, **{"drift.enabled": True, "drift.reference": str(tmp_path / "none.csv")})
    with pytest.raises(ValueError, match=r"drift\.reference: .* is not a file"):
        monitor_kwargs(missing, "r2")
    from tradesys.live import run_live

    with pytest.raises(ConfigError, match=r"drift\.reference: .* is not a file"):  # before any actor starts
        run_live(missing, show_progress=False)
    pd.DataFrame({"ret": [0.1, 0.2]}).to_csv(tmp_path / "thin.csv", index=False)
    thin = model_cfg(art, **{"drift.enabled": True, "drift.reference": str(tmp_path / "thin.csv")})
    with pytest.raises(ValueError, match="lacks column 'abs_ret'"):
        reference_features(thin.drift, thin.data)


def test_reference_predictions_are_the_model_on_the_reference_windows(art: Artefacts) -> None:
    """With reference "data" the monitor also gets the model's forecasts over 2017, so prediction drift is watched:
    they equal `load_predictor` on windows built and standardised here from each symbol's whole close history."""
    cfg = model_cfg(art, **{"drift.enabled": True, **REFERENCE_2017})
    got = reference_predictions(cfg.drift, cfg.data, cfg.strategy, bars_per_year(cfg.data))
    closes = _closes(_bars({"data.start": "2016-11-02", "data.end": "2017-12-31"}))  # the 60-day warm-up
    scaler = json.loads(art.scaler_path.read_text())
    mean32, std32 = np.asarray(scaler["mean"], np.float32), np.asarray(scaler["std"], np.float32)
    predictor = load_predictor(art.model_path)
    want = []
    for sym in closes.columns:
        f = default_features(closes[sym].pct_change().iloc[1:])
        for ts in f.loc["2017"].index:
            win = f.loc[:ts].to_numpy()[-LOOKBACK:]
            if len(win) == LOOKBACK and np.isfinite(win).all():
                out = predictor.predict(((win.astype(np.float32) - mean32) / std32)[None].astype(np.float32))
                want.append([out["ret"][0] * scaler["ret_scale"], out["vol"][0] * scaler["vol_scale"]])
    assert list(got.columns) == ["ret", "vol"] and len(got) == len(want) == 20 * 251
    np.testing.assert_allclose(got.to_numpy(), np.asarray(want), rtol=1e-4, atol=1e-7)
    kw = monitor_kwargs(cfg, "r3")
    pd.testing.assert_frame_equal(kw["reference_predictions"], got)
    off = model_cfg(art, **{"drift.enabled": True, **REFERENCE_2017, "drift.reference_predictions": False})
    assert monitor_kwargs(off, "r4")["reference_predictions"] is None
