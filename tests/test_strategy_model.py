"""The model strategy: features as in training, the documented sizing rule, one code path in backtest and live.

A real small LSTM exported to ONNX (random weights, fixed seed) and a standardizer fitted, as jobs/train.py does,
on returns before the trading window. References: the training pipeline's own windows (`make_samples` +
`Standardizer.transform`) scored by `load_predictor`, with the sizing rule written out here from the docs; the
in-process backtest (LocalForecaster) for the live loop on actors (ServeForecaster over a real Serve deployment).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from tests.conftest import free_port
from tradesys.backtest.runner import run_backtest
from tradesys.config import ConfigError, TradesysConfig, load_config
from tradesys.core.orders import Side
from tradesys.core.portfolio import Portfolio
from tradesys.data import bars_per_year, make_source
from tradesys.ledger import open_ledger
from tradesys.strategy import TrendStrategy, make_strategy
from tradesys.strategy.model import (
    WARMUP_RETURNS,
    ForecastUnavailable,
    LocalForecaster,
    ModelStrategy,
    ServeForecaster,
    load_standardizer,
)
from tradesys.train.data import Standardizer, make_samples
from tradesys.train.export import export_onnx
from tradesys.train.inference import load_predictor
from tradesys.train.models import build_model

from .ledger_checks import assert_ledger_consistent, closes_by_ts, trade_record

LOOKBACK = 10
SEED = 2  # this random LSTM forecasts both signs and a range of vols on the window below (checked in the tests)
KEY = "strategy-model-test-key-7c2e"
SHORT = {"data.start": "2019-06-01", "data.end": "2019-12-31"}  # 148 bars
SIZING = {"strategy.max_weight": 0.5, "strategy.target_vol": 0.05, "strategy.min_edge": 0.25}


@dataclass(frozen=True)
class Artefacts:
    model_dir: Path  # model_dir/1/model.onnx: the layout ModelServer reads
    model_path: Path
    scaler_path: Path


def _bars(overrides: Mapping[str, object]) -> list[pa.RecordBatch]:
    return list(make_source(load_config(overrides=dict(overrides)).data).batches())


def _closes(batches: list[pa.RecordBatch]) -> pd.DataFrame:
    return pd.concat([b.to_pandas() for b in batches]).pivot(index="ts", columns="symbol", values="close")


@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory) -> Artefacts:
    d = tmp_path_factory.mktemp("model_strategy")
    torch.manual_seed(SEED)
    model = build_model("lstm", 4, hidden=8, n_layers=1, dropout=0.0)
    (d / "1").mkdir()
    export_onnx(model, d / "1" / "model.onnx", lookback=LOOKBACK, n_features=4,
                output_names=("ret", "vol", "dir_logit"), exporter="torchscript")
    # the standardizer of a training run on AAPL returns before the trading window, in jobs/train.py's JSON form
    before = _closes(_bars({"data.start": "2017-01-01", "data.end": "2019-05-31"}))["AAPL"]
    sc = Standardizer.fit(make_samples(before.pct_change().iloc[1:], lookback=LOOKBACK, vol_horizon=5))
    (d / "standardizer.json").write_text(json.dumps({"mean": sc.mean.tolist(), "std": sc.std.tolist(),
                                                     "ret_scale": sc.ret_scale, "vol_scale": sc.vol_scale}))
    return Artefacts(d, d / "1" / "model.onnx", d / "standardizer.json")


def model_cfg(art: Artefacts, **extra: object) -> TradesysConfig:
    return load_config(overrides={**SHORT, **SIZING, "strategy.name": "model",
                                  "strategy.model_path": str(art.model_path),
                                  "strategy.standardizer_path": str(art.scaler_path), **extra})


class Recording:
    """A forecaster that records what it was asked, around a real one."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.lookback, self.n_features = inner, inner.lookback, inner.n_features
        self.calls: list[tuple[str, np.ndarray]] = []

    def forecast(self, windows: np.ndarray, request_id: str) -> Mapping[str, np.ndarray]:
        self.calls.append((request_id, windows.copy()))
        return self.inner.forecast(windows, request_id)


def rule(ret: np.ndarray, vol: np.ndarray, scaler: dict[str, Any], cfg: TradesysConfig, n: int) -> np.ndarray:
    """The documented sizing rule, written out independently of the strategy code."""
    s = cfg.strategy
    ret_hat = ret.astype(np.float64) * scaler["ret_scale"]
    vol_hat = vol.astype(np.float64) * scaler["vol_scale"]
    sigma = vol_hat * math.sqrt(bars_per_year(cfg.data))
    direction = np.where(np.abs(ret_hat) >= s.min_edge * vol_hat, np.sign(ret_hat), 0.0)
    if not s.allow_short:
        direction = np.maximum(direction, 0.0)
    return direction * np.minimum(s.max_weight, s.target_vol / (sigma * math.sqrt(n)))


def _drive(strategy: Any, batches: list[pa.RecordBatch], cash: float = 1e6) -> list[tuple[list[tuple], dict]]:
    """Each bar against the same flat book: (orders less their wall-clock stamp, target weights)."""
    book = Portfolio(cash).snapshot()
    out = []
    for b in batches:
        orders = strategy.on_bars(b, book, {})
        out.append(([(o.client_order_id, o.symbol, o.side, o.qty, o.type, o.limit_price, o.ts_ns) for o in orders],
                    dict(strategy.last_weights)))
    return out


# --- in process ------------------------------------------------------------------------------------------------------


def test_targets_equal_the_rule_on_the_training_windows(art: Artefacts) -> None:
    cfg = model_cfg(art)
    batches = _bars(SHORT)
    symbols = batches[0].column("symbol").to_pylist()
    n = len(symbols)
    strat = make_strategy(cfg.strategy, n, bars_per_year(cfg.data))
    assert isinstance(strat, ModelStrategy) and isinstance(strat.forecaster, LocalForecaster)
    rec = Recording(strat.forecaster)
    strat.forecaster = rec
    results = _drive(strat, batches)

    # reference windows: the training pipeline on each symbol's whole close history
    closes = _closes(batches)
    scaler = json.loads(art.scaler_path.read_text())
    std = Standardizer(np.asarray(scaler["mean"]), np.asarray(scaler["std"]), scaler["ret_scale"],
                       scaler["vol_scale"], np.empty(0, np.int64))
    ref_x: dict[str, dict[pd.Timestamp, np.ndarray]] = {}
    for sym in symbols:
        samples = std.transform(make_samples(closes[sym].pct_change().iloc[1:], lookback=LOOKBACK, vol_horizon=1))
        ref_x[sym] = dict(zip(samples.index, samples.X, strict=True))
    first = LOOKBACK + WARMUP_RETURNS - 1  # bar index of the first full window (closes needed: lookback + 22)
    assert next(i for i, (_, w) in enumerate(results) if any(v != 0 for v in w.values())) == first
    assert len(rec.calls) == len(batches) - first  # one batched call per bar once warm
    predictor = load_predictor(art.model_path)
    checked, signs, edge_zero = 0, set(), 0
    for i, b in enumerate(batches):
        ts = closes.index[i]
        if i < first:
            assert results[i] == ([], dict.fromkeys(symbols, 0.0))  # warm-up: flat, nothing to do
            continue
        rid, sent = rec.calls[i - first]
        assert rid == f"model-{b.column('ts')[0].value}" and sent.shape == (n, LOOKBACK, 4)
        if ts not in ref_x[symbols[0]]:  # the last bar: make_samples needs a label ahead
            continue
        x = np.stack([ref_x[s][ts] for s in symbols])
        np.testing.assert_allclose(sent, x, rtol=0, atol=1e-5)
        out = predictor.predict(x)
        want = rule(out["ret"], out["vol"], scaler, cfg, n)
        got = np.array([results[i][1][s] for s in symbols])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9)
        signs |= set(np.sign(got[got != 0]).tolist())
        edge_zero += int(np.sum(got == 0))
        checked += 1
    assert checked == len(batches) - first - 1
    assert signs == {-1.0, 1.0} and edge_zero > 0  # longs, shorts and edge-filtered flats: the check can fail
    # orders from a flat book: whole shares of |w| * equity / price, on the side of the weight
    orders, weights = results[first]
    px = dict(zip(symbols, batches[first].column("close").to_pylist(), strict=True))
    want_qty = {s: math.floor(abs(w) * 1e6 / px[s]) for s, w in weights.items() if math.floor(abs(w) * 1e6 / px[s])}
    assert {o[1]: o[3] for o in orders} == want_qty
    assert all((o[2] is Side.BUY) == (weights[o[1]] > 0) for o in orders)
    assert all(o[0] == f"model-{o[6]}-{o[1]}" for o in orders)


def test_backtest_runs_and_keeps_the_books(art: Artefacts) -> None:
    cfg = model_cfg(art)
    summary, ledger = run_backtest(cfg)
    assert summary.steps == len(make_source(cfg.data)) and summary.orders > 300 and summary.fills > 300
    assert_ledger_consistent(ledger, cfg.initial_cash, closes_by_ts(make_source(cfg.data)))


def test_config_is_validated_with_field_names(art: Artefacts, tmp_path: Path) -> None:
    base = {"strategy.name": "model"}
    cases = [
        ({}, "standardizer_path"),
        ({"strategy.standardizer_path": "s.json"}, "model_path"),
        ({"strategy.standardizer_path": "s.json", "strategy.forecaster": "serve"}, "model_version"),
        ({"strategy.standardizer_path": "s.json", "strategy.forecaster": "serve",
          "strategy.serve_url": "http://h/v1/predict"}, "lookback"),
        ({"strategy.standardizer_path": "s.json", "strategy.forecaster": "serve",
          "strategy.serve_url": "h:1/v1/predict", "strategy.lookback": 10}, "serve_url"),
        ({"strategy.timeout_ms": 0}, "strategy.timeout_ms"),
        ({"strategy.name": "lstm"}, "strategy.name"),
    ]
    for extra, field in cases:
        with pytest.raises(ConfigError, match=field):
            load_config(overrides={**base, **extra})
    cfg = load_config(overrides={**base, "strategy.standardizer_path": "rel/s.json", "strategy.model_path": "m.onnx"})
    assert Path(cfg.strategy.standardizer_path or "").is_absolute()  # actors may run elsewhere
    assert isinstance(make_strategy(load_config().strategy, 3), TrendStrategy)  # the default stays trend
    with pytest.raises(ValueError, match=r"strategy\.lookback"):
        make_strategy(model_cfg(art, **{"strategy.lookback": LOOKBACK + 1}).strategy, 3)
    with pytest.raises(ValueError, match=r"strategy\.model_path"):
        make_strategy(model_cfg(art, **{"strategy.model_path": str(tmp_path / "none.onnx")}).strategy, 3)
    bad = tmp_path / "bad.json"
    for content, why in [("{}", "lacks mean"), ('{"mean": [0,0,0,0], "std": [1,1,1,0], "ret_scale": 1, '
                                              '"vol_scale": 1}', "std must be > 0")]:
        bad.write_text(content)
        with pytest.raises(ValueError, match=f"standardizer_path.*{why}"):
            load_standardizer(bad)
    bad.write_text('{"mean": [0,0,0], "std": [1,1,1], "ret_scale": 1, "vol_scale": 1}')
    with pytest.raises(ValueError, match="standardizer_path: 3 features"):
        make_strategy(model_cfg(art, **{"strategy.standardizer_path": str(bad)}).strategy, 3)


# --- on Ray Serve ----------------------------------------------------------------------------------------------------

APP, SLOW_APP, STUCK_APP, PREFIX = "strategy_predict", "strategy_slow", "strategy_stuck", "/strategy"
# A lone request waits this long for company before its batch runs (later requests join that batch, so a deployment
# answers at least once per wait): slow answers each bar late; stuck answers nothing within a test.
SLOW_WAIT_S, STUCK_WAIT_S = 1.0, 120.0


@pytest.fixture(scope="module")
def served(ray_session: None, art: Artefacts) -> Iterator[str]:
    """The predict app (router + live/research ModelServers) and a slow ModelServer; yields the /v1/predict URL."""
    from ray import serve
    from ray.serve.context import _get_global_client

    from tradesys.serve.predict import ModelServer, build_predict_app

    try:
        was_running = _get_global_client() is not None
    except Exception:
        was_running = False
    mp = pytest.MonkeyPatch()
    mp.setenv("TRADESYS_API_KEY", KEY)
    serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
    port = _get_global_client().http_config.port  # a Serve already running keeps its own port
    try:
        serve.run(build_predict_app(art.model_dir, champion="1", num_cpus=0, batch_wait_timeout_s=0.002,
                                    request_timeout_s=30.0), name=APP, route_prefix=PREFIX)
        for app, name, wait in ((SLOW_APP, "ModelServerSlow", SLOW_WAIT_S),
                                (STUCK_APP, "ModelServerStuck", STUCK_WAIT_S)):
            slow = ModelServer.options(name=name, ray_actor_options={"num_cpus": 0}, graceful_shutdown_timeout_s=1.0,
                                       graceful_shutdown_wait_loop_s=0.5)
            serve.run(slow.bind(str(art.model_dir), max_batch_size=64, batch_wait_timeout_s=wait,
                                skip_idle_wait=False), name=app, route_prefix=None)  # every request waits
        yield f"http://127.0.0.1:{port}{PREFIX}/v1/predict"
    finally:
        for app in (APP, SLOW_APP, STUCK_APP):
            serve.delete(app)
        if not was_running:
            serve.shutdown()  # leave Serve as this module found it (others set their own HTTP port)
        mp.undo()


def serve_cfg(art: Artefacts, app: str = APP, deployment: str = "ModelServerLive", **extra: object) -> TradesysConfig:
    return model_cfg(art, **{"strategy.forecaster": "serve", "strategy.serve_app": app,
                             "strategy.serve_deployment": deployment, "strategy.model_version": "1", **extra})


@pytest.mark.ray
@pytest.mark.slow
def test_live_loop_on_served_model_matches_backtest(served: str, art: Artefacts, tmp_path: Path) -> None:
    """One code path: actors + ServeForecaster trade exactly as the in-process backtest with LocalForecaster."""
    from ray import serve

    from tradesys.live import run_live

    url = f"sqlite:///{tmp_path}/live.db"
    live_cfg = serve_cfg(art, **{"ledger.url": url, "strategy.timeout_ms": 20_000})
    handle = serve.get_deployment_handle("ModelServerLive", app_name=APP)
    before = len(handle.batch_log.remote().result())
    summary = run_live(live_cfg, show_progress=False, run_id="t-model-live")
    calls = handle.batch_log.remote().result()[before:]
    _, bt = run_backtest(model_cfg(art))
    live = open_ledger(url)
    n_steps = len(make_source(live_cfg.data))
    assert summary["reason"] == "completed" and summary["steps"] == n_steps
    assert "drift" not in summary  # no drift section: no monitor started (tests/test_live_drift.py: drift on)
    assert trade_record(live) == trade_record(bt) and len(bt.fills()) > 300
    # the live strategy really asked the served model: one request of all 20 symbols per bar once warm
    assert sum(r for _, r, _ in calls) == n_steps - (LOOKBACK + WARMUP_RETURNS - 1)
    assert {rows for _, _, rows in calls} <= {20 * k for k in range(1, 65)}
    assert_ledger_consistent(live, live_cfg.initial_cash, closes_by_ts(make_source(live_cfg.data)))


@pytest.mark.ray
@pytest.mark.slow
def test_http_forecaster_equals_local(served: str, art: Artefacts, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = serve_cfg(art, **{"strategy.serve_url": served, "strategy.lookback": LOOKBACK,
                            "strategy.timeout_ms": 20_000})
    batches = _bars(SHORT)[: LOOKBACK + WARMUP_RETURNS + 5]
    ref = _drive(make_strategy(model_cfg(art).strategy, 20), batches)
    http = make_strategy(cfg.strategy, 20)
    assert isinstance(http, ModelStrategy) and isinstance(http.forecaster, ServeForecaster)
    got = _drive(http, batches)
    assert got == ref and sum(len(o) for o, _ in got) > 0  # bit-identical through JSON
    assert http.forecaster.calls == 6 and http.stats()["misses"] == 0
    # a wrong key: the bar is held (no orders) and the miss counted, not raised
    monkeypatch.setenv("TRADESYS_API_KEY", "wrong")
    wrong = make_strategy(cfg.strategy, 20)
    assert isinstance(wrong, ModelStrategy)
    assert all(o == [] for o, _ in _drive(wrong, batches))
    assert wrong.stats()["misses_by_reason"] == {"http_401": 6}
    monkeypatch.delenv("TRADESYS_API_KEY")
    with pytest.raises(ValueError, match=r"strategy\.api_key_env"):
        make_strategy(cfg.strategy, 20)


@pytest.mark.ray
@pytest.mark.slow
def test_timeout_holds_the_bar_and_the_strategy_carries_on(served: str, art: Artefacts) -> None:
    batches = _bars(SHORT)[: LOOKBACK + WARMUP_RETURNS + 1]
    ref = _drive(make_strategy(model_cfg(art).strategy, 20), batches)
    cfg = serve_cfg(art, app=SLOW_APP, deployment="ModelServerSlow", **{"strategy.timeout_ms": 100})
    strat = make_strategy(cfg.strategy, 20)
    assert isinstance(strat, ModelStrategy) and isinstance(strat.forecaster, ServeForecaster)
    got = _drive(strat, batches[:-1])
    first = LOOKBACK + WARMUP_RETURNS - 1
    assert got[:first] == ref[:first]
    assert ref[first][0] and got[first] == ([], {})  # the reference trades; the late forecast holds the bar
    assert strat.stats()["misses_by_reason"] == {"timeout": 1}
    strat.forecaster.timeout_s = 10 * SLOW_WAIT_S  # the next bar's forecast arrives: trading resumes
    assert _drive(strat, batches[-1:]) == ref[-1:]
    assert strat.stats() == {"bars": len(batches), "forecast_calls": 2, "misses": 1,
                             "misses_by_reason": {"timeout": 1}, "non_finite": 0}
    with pytest.raises(ForecastUnavailable, match="timeout"):
        ServeForecaster(timeout_s=0.05, app=SLOW_APP, deployment="ModelServerSlow",
                        version="1").forecast(np.zeros((1, LOOKBACK, 4), np.float32))


@pytest.mark.ray
@pytest.mark.slow
def test_live_loop_with_timing_out_forecasts_completes(served: str, art: Artefacts, tmp_path: Path) -> None:
    """Every forecast is late: the live loop runs to the end, holds (no orders) and the books stay exact."""
    from tradesys.live import run_live

    url = f"sqlite:///{tmp_path}/late.db"
    cfg = serve_cfg(art, app=STUCK_APP, deployment="ModelServerStuck",
                    **{"ledger.url": url, "strategy.timeout_ms": 50, "data.end": "2019-07-31"})
    summary = run_live(cfg, show_progress=False, run_id="t-model-late")
    n = len(make_source(cfg.data))
    assert n > LOOKBACK + WARMUP_RETURNS + 5
    assert summary["reason"] == "completed" and summary["steps"] == n
    assert summary["orders"] == 0 and summary["restarts"] == 0
    assert_ledger_consistent(open_ledger(url), cfg.initial_cash, closes_by_ts(make_source(cfg.data)))
