"""/v1/predict: real exported ONNX models served through Ray Serve (local testing mode, plus one real HTTP run).

References: the same exported file scored directly with `load_predictor` (predictions), the binomial law (canary
share), numpy's percentile (rollback p99)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient
from ray import serve

from tests.conftest import free_port
from tradesys.serve.errors import install_error_handlers
from tradesys.serve.predict import (
    ModelServer,
    RoutingConfig,
    RoutingState,
    build_predict_app,
    canary_bucket,
    predict_router,
)
from tradesys.train.export import export_onnx
from tradesys.train.inference import load_predictor
from tradesys.train.models import build_model

KEY = "predict-test-key-51ab"
H = {"X-API-Key": KEY}
LOOKBACK, NF = 8, 4


def _export(path: Path, seed: int, n_features: int = NF) -> None:
    torch.manual_seed(seed)
    model = build_model("lstm", n_features, hidden=8, n_layers=1, dropout=0.0)
    path.mkdir(parents=True)
    export_onnx(model, path / "model.onnx", lookback=LOOKBACK, n_features=n_features,
                output_names=("ret", "vol", "dir"), exporter="torchscript")  # the faster exporter: tests are on serving


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("models")
    _export(d / "1", seed=1)
    _export(d / "2", seed=2)
    _export(d / "3", seed=3, n_features=NF + 1)  # a faulty challenger: its predictor raises on the champion's shape
    return d


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[Any]:
    handle = serve.run(
        ModelServer.options(name="ModelServerTest").bind(str(model_dir), max_batch_size=16,
                                                         batch_wait_timeout_s=0.05),
        name="predict_test", route_prefix=None, _local_testing_mode=True,
    )
    yield handle


def _client(server: Any, **cfg: Any) -> TestClient:
    app = FastAPI()
    install_error_handlers(app)
    router = predict_router(server, config=RoutingConfig(**{"champion": "1", **cfg}), api_key=KEY)
    app.include_router(router)
    client = TestClient(app)
    client.predict_state = router.predict_state  # type: ignore[attr-defined]
    return client


def _windows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, LOOKBACK, NF)).astype(np.float32)


def _direct(model_dir: Path, version: str, x: np.ndarray) -> dict[str, np.ndarray]:
    return load_predictor(model_dir / version / "model.onnx").predict(x)


def _assert_matches(body: dict[str, Any], ref: dict[str, np.ndarray]) -> None:
    assert set(body["outputs"]) == set(ref) == {"ret", "vol", "dir"}
    for k, v in ref.items():
        np.testing.assert_allclose(np.array(body["outputs"][k], dtype=np.float32), v, rtol=1e-5, atol=1e-6)


def test_predictions_equal_the_predictor(server: Any, model_dir: Path) -> None:
    c = _client(server)
    x = _windows(5)
    r = c.post("/v1/predict", json={"windows": x.tolist()}, headers=H)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["version"], body["role"], body["model"]) == ("1", "champion", "forecaster")
    _assert_matches(body, _direct(model_dir, "1", x))
    r = c.post("/v1/predict", json={"windows": x.tolist(), "version": "2", "priority": "live"}, headers=H)
    assert (r.status_code, r.json()["version"], r.json()["role"]) == (200, "2", "pinned")
    _assert_matches(r.json(), _direct(model_dir, "2", x))
    assert not np.allclose(r.json()["outputs"]["ret"], body["outputs"]["ret"])  # two distinct models


def test_canary_split_is_deterministic_and_proportional() -> None:
    state = RoutingState(RoutingConfig(champion="1", challenger="2", canary_percent=10.0))
    n = 20_000
    roles = [state.assign(f"req-{i}")[0] for i in range(n)]
    share = roles.count("challenger") / n
    assert abs(share - 0.10) < 4 * np.sqrt(0.1 * 0.9 / n)  # binomial 4 sigma
    assert [state.assign(f"req-{i}")[0] for i in range(200)] == roles[:200]
    buckets = np.array([canary_bucket(f"id{i}") for i in range(n)])
    assert buckets.min() >= 0 and buckets.max() < 100
    assert abs(np.mean(buckets < 37.5) - 0.375) < 4 * np.sqrt(0.375 * 0.625 / n)


def test_canary_over_http_answers_with_the_assigned_version(server: Any, model_dir: Path) -> None:
    c = _client(server, challenger="2", canary_percent=50.0)
    x = _windows(2, seed=3)
    seen = set()
    for i in range(30):
        rid = f"order-{i}"
        r = c.post("/v1/predict", json={"windows": x.tolist()}, headers={**H, "X-Request-ID": rid})
        assert r.status_code == 200
        role, version = c.predict_state.assign(rid)  # type: ignore[attr-defined]
        assert (r.json()["role"], r.json()["version"], r.json()["request_id"]) == (role, version, rid)
        _assert_matches(r.json(), _direct(model_dir, version, x))
        seen.add(version)
    assert seen == {"1", "2"}


def test_shadow_returns_champion_and_records_challenger(server: Any, model_dir: Path) -> None:
    # one event loop for the client's life (the context manager): the shadow calls run in the background and
    # would be cancelled with a per-request loop before they finish
    with _client(server, challenger="2", canary_percent=100.0, shadow=True) as c:
        x = _windows(3, seed=4)
        for i in range(3):
            r = c.post("/v1/predict", json={"windows": x.tolist(), "request_id": f"s{i}"}, headers=H)
            assert (r.status_code, r.json()["version"], r.json()["role"]) == (200, "1", "champion")
            _assert_matches(r.json(), _direct(model_dir, "1", x))
        deadline = time.monotonic() + 10
        while len(c.get("/v1/predict/status", headers=H).json()["shadow_recent"]) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        status = c.get("/v1/predict/status", headers=H).json()
        recs = status["shadow_recent"]
        assert [rec["request_id"] for rec in recs] == ["s0", "s1", "s2"] and all(rec["ok"] for rec in recs)
        a, b = _direct(model_dir, "1", x), _direct(model_dir, "2", x)
        for k in a:
            want = float(np.max(np.abs(a[k].astype(np.float64) - b[k])))
            assert recs[0]["max_abs_diff"][k] == pytest.approx(want, rel=1e-4, abs=1e-6)
        assert status["shadow"] is True and status["counts"]["2:ok"] == 3


def test_faulty_challenger_triggers_rollback(server: Any, model_dir: Path) -> None:
    c = _client(server, challenger="3", canary_percent=50.0, window_size=20, min_requests=5, max_error_rate=0.2)
    x = _windows(1, seed=5)
    ref = _direct(model_dir, "1", x)
    for i in range(40):
        r = c.post("/v1/predict", json={"windows": x.tolist()}, headers={**H, "X-Request-ID": f"f{i}"})
        assert r.status_code == 200 and r.json()["version"] == "1"  # failures are answered by the champion
        _assert_matches(r.json(), ref)
    status = c.get("/v1/predict/status", headers=H).json()
    assert status["rolled_back"] is True and "error rate" in status["rollback_reason"]
    assert status["canary_percent"] == 0.0 and status["window"]["requests"] == 5  # stopped at the 5th failure
    roles = {c.post("/v1/predict", json={"windows": x.tolist()}, headers={**H, "X-Request-ID": f"g{i}"}).json()["role"]
             for i in range(20)}
    assert roles == {"champion"}


def test_faulty_shadow_challenger_is_recorded_and_rolled_back(server: Any, model_dir: Path) -> None:
    # one event loop for the client's life (the context manager): the shadow calls run in the background and
    # would be cancelled with a per-request loop before they finish
    with _client(server, challenger="3", shadow=True, window_size=10, min_requests=3, max_error_rate=0.5) as c:
        x = _windows(2, seed=6)
        for i in range(3):
            r = c.post("/v1/predict", json={"windows": x.tolist()}, headers={**H, "X-Request-ID": f"sh{i}"})
            assert (r.status_code, r.json()["version"]) == (200, "1")
            _assert_matches(r.json(), _direct(model_dir, "1", x))
        deadline = time.monotonic() + 10
        while not c.get("/v1/predict/status", headers=H).json()["rolled_back"] and time.monotonic() < deadline:
            time.sleep(0.05)
        status = c.get("/v1/predict/status", headers=H).json()
        assert status["rolled_back"] is True and status["shadow"] is False
        assert "error rate 1.000" in status["rollback_reason"]
        assert [rec["ok"] for rec in status["shadow_recent"]] == [False] * 3
        assert "features" in status["shadow_recent"][0]["error"] or "shape" in status["shadow_recent"][0]["error"]


def test_rollback_on_p99_latency() -> None:
    st = RoutingState(RoutingConfig(champion="1", challenger="2", canary_percent=20.0, window_size=100,
                                    min_requests=100, max_p99_latency_s=0.05))
    lat = np.r_[np.full(98, 0.01), 0.2, 0.3]
    for t in lat[:-1]:
        st.record_challenger(True, float(t))
    assert not st.rolled_back  # fewer than min_requests
    st.record_challenger(True, float(lat[-1]))
    assert st.rolled_back and st.window_stats()[1] == pytest.approx(np.percentile(lat, 99))
    assert "p99" in (st.rollback_reason or "") and st.assign("anything") == ("champion", "1")


@pytest.mark.parametrize(
    ("windows", "field"),
    [
        (np.zeros((2, LOOKBACK - 1, NF)).tolist(), "windows.0"),
        (np.zeros((1, LOOKBACK, NF + 1)).tolist(), "windows.0.0"),
        ([np.zeros((LOOKBACK, NF)).tolist(), np.zeros((LOOKBACK + 2, NF)).tolist()], "windows.1"),
        ([np.zeros((LOOKBACK, NF)).tolist(), [[0.0] * NF] * (LOOKBACK - 1) + [[0.0, None, 0.0, 0.0]]], "windows.1"),
        ([], "windows"),
    ],
)
def test_bad_windows_are_422_naming_the_field(server: Any, windows: Any, field: str) -> None:
    r = _client(server).post("/v1/predict", json={"windows": windows}, headers=H)
    assert r.status_code == 422
    assert r.json()["error"] == "validation_error" and r.json()["detail"][0]["field"] == field


def test_nan_window_is_422(server: Any) -> None:
    x = np.zeros((3, LOOKBACK, NF))
    x[2, 5, 1] = np.nan
    body = '{"windows": ' + str(x.tolist()).replace("nan", "NaN") + "}"
    r = _client(server).post("/v1/predict", content=body, headers={**H, "Content-Type": "application/json"})
    assert r.status_code == 422
    assert r.json()["detail"] == [{"field": "windows.2", "reason": "non-finite or missing value (NaN, inf or null) "
                                                                   "at [5][1]"}]


def test_auth_and_unknown_version(server: Any) -> None:
    c = _client(server)
    x = _windows(1).tolist()
    r = c.post("/v1/predict", json={"windows": x})
    assert (r.status_code, r.json()["error"]) == (401, "unauthorized")
    assert c.get("/v1/predict/status").status_code == 401
    r = c.post("/v1/predict", json={"windows": x, "version": "9"}, headers=H)
    assert r.status_code == 404 and r.json()["detail"][0]["field"] == "version"
    assert "'9'" in r.json()["detail"][0]["reason"]


def test_keys_from_the_store_with_roles_revocation_bearer_and_rate_limits(server: Any, tmp_path: Path) -> None:
    """The predict app takes the main API's keys: the store's keys (read role for both routes), revoked within the
    refresh interval (401), in X-API-Key or Authorization: Bearer, rate-limited per key (429 + Retry-After); built
    by the Serve ingress's own app builder, so the access gate is in front as in `tradesys models serve`."""
    from types import SimpleNamespace

    from pydantic import SecretStr

    from tradesys.serve.access import AccessSettings
    from tradesys.serve.keystore import KeyStore
    from tradesys.serve.predict import PredictRouter, _configured_access

    url = f"sqlite:///{tmp_path / 'keys.db'}"
    store = KeyStore(url)
    reader, read_tok = store.create("read", "research")
    slow, slow_tok = store.create("read", "slow", rate_per_s=0.01, burst=2)
    _, admin_tok = store.create("admin", "ops")
    ingress = SimpleNamespace(_live=server, _research=server, _key=SecretStr(KEY),
                              _config=RoutingConfig(champion="1"),
                              _access=AccessSettings(keys_url=url, keys_refresh_s=0.05, rate_limit_per_s=None,
                                                     access_log=str(tmp_path / "access.jsonl")))
    app = PredictRouter.func_or_class.__serve_build_asgi_app__(ingress)
    body = {"windows": _windows(1).tolist()}
    with TestClient(app) as c:
        def code(headers: dict[str, str], path: str = "/v1/predict") -> int:
            r = c.post(path, json=body, headers=headers) if path == "/v1/predict" else c.get(path, headers=headers)
            return r.status_code

        for path in ("/v1/predict", "/v1/predict/status"):
            assert code({}, path) == 401 and code({"X-API-Key": read_tok[:-1] + "x"}, path) == 401
            assert code({"X-API-Key": read_tok}, path) == 200
            assert code({"Authorization": f"Bearer {read_tok}"}, path) == 200
            assert code({"X-API-Key": admin_tok}, path) == 200 and code(H, path) == 200  # the env key is admin
        r = c.post("/v1/predict", json=body)
        assert r.json()["detail"][0]["field"] == "X-API-Key"
        assert [code({"X-API-Key": slow_tok}) for _ in range(3)] == [200, 200, 429]
        r = c.post("/v1/predict", json=body, headers={"X-API-Key": slow_tok})
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        store.revoke(reader.key_id)  # while the app runs
        deadline = time.monotonic() + 10
        while code({"X-API-Key": read_tok}) != 401 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert code({"X-API-Key": read_tok}) == 401 and code({"X-API-Key": admin_tok}) == 200
        doc = c.get("/openapi.json").json()
        assert {op["x-tradesys-role"] for item in doc["paths"].values() for op in item.values()} == {"read"}
    store.close()
    assert _configured_access().keys_url == "sqlite:///runs/api_keys.db"  # `tradesys serve`'s store by default
    # the access log: one line a request, key id and role of the caller, the route template, never a body or a key
    text = (tmp_path / "access.jsonl").read_text()
    lines = [json.loads(x) for x in text.splitlines()]
    assert len(lines) >= 20 and {x["route"] for x in lines} == {"/v1/predict", "/v1/predict/status", "/openapi.json"}
    assert {x["key_id"] for x in lines if x["status"] == 200 and x["role"] == "read"} == {reader.key_id, slow.key_id}
    assert [x["key_id"] for x in lines if x["status"] == 429] == [slow.key_id, slow.key_id]
    assert {(x["status"], x["key_id"]) for x in lines if x["status"] == 401} == {(401, None)}
    assert all(tok not in text for tok in (read_tok, slow_tok, admin_tok, KEY)) and "windows" not in text


def test_routed_versions_are_loaded_before_the_replica_takes_traffic(model_dir: Path, tmp_path: Path) -> None:
    import shutil

    d = tmp_path / "models"
    shutil.copytree(model_dir, d)
    handle = serve.run(ModelServer.options(name="Preload").bind(str(d), preload=["1"]), name="preload",
                       route_prefix=None, _local_testing_mode=True)
    shutil.rmtree(d / "1")
    shutil.rmtree(d / "2")  # version 1 was loaded by the constructor; version 2 would be loaded on demand
    assert handle.describe.remote("1").result()["lookback"] == LOOKBACK
    with pytest.raises(LookupError):
        handle.describe.remote("2").result()


@pytest.fixture(scope="module")
def lanes(model_dir: Path) -> tuple[Any, Any]:
    live = serve.run(ModelServer.options(name="LaneLive").bind(str(model_dir)), name="lane_live", route_prefix=None,
                     _local_testing_mode=True)
    research = serve.run(ModelServer.options(name="LaneResearch").bind(str(model_dir)), name="lane_research",
                         route_prefix=None, _local_testing_mode=True)
    return live, research


def test_priority_lanes_use_their_own_deployments(lanes: tuple[Any, Any]) -> None:
    live, research = lanes
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(predict_router(live, research, config=RoutingConfig(champion="1"), api_key=KEY))
    c = TestClient(app)
    x = _windows(3, seed=8).tolist()
    n_live, n_res = len(live.batch_log.remote().result()), len(research.batch_log.remote().result())
    assert c.post("/v1/predict", json={"windows": x, "priority": "live"}, headers=H).status_code == 200
    assert c.post("/v1/predict", json={"windows": x, "priority": "live"}, headers=H).status_code == 200
    assert c.post("/v1/predict", json={"windows": x}, headers=H).status_code == 200  # research by default
    assert len(live.batch_log.remote().result()) - n_live == 2
    assert len(research.batch_log.remote().result()) - n_res == 1


def test_saturated_research_lane_is_429_while_live_is_served(lanes: tuple[Any, Any]) -> None:
    live, research = lanes
    app = FastAPI()
    install_error_handlers(app)
    config = RoutingConfig(champion="1", max_research_inflight=1)
    app.include_router(predict_router(live, research, config=config, api_key=KEY))
    x = _windows(2, seed=9).tolist()

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            assert (await c.post("/v1/predict", json={"windows": x}, headers=H)).status_code == 200  # loads shape
            return await asyncio.gather(*(c.post("/v1/predict", json={"windows": x, "priority": p}, headers=H)
                                          for p in ("research", "research", "live", "live")))

    rs = asyncio.run(burst())
    assert [r.status_code for r in rs] == [200, 429, 200, 200]
    assert rs[1].json()["error"] == "too_many_requests" and "research lane" in rs[1].json()["detail"][0]["reason"]


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="canary_percent"):
        RoutingConfig(champion="1", challenger="2", canary_percent=120.0)
    with pytest.raises(ValueError, match="challenger"):
        RoutingConfig(champion="1", challenger="1")


# --- real Ray Serve: Serve 2.60's local testing mode has no replica context, so neither @serve.batch nor
# @serve.multiplexed runs there (ModelServer then serves request by request); batching and timeouts need the real thing.

BATCH_WAIT_S = 0.05


@pytest.fixture(scope="module")
def real_app(ray_session: None, model_dir: Path) -> Iterator[str]:
    mp = pytest.MonkeyPatch()
    mp.setenv("TRADESYS_API_KEY", KEY)
    port = free_port()
    try:
        serve.shutdown()  # a Serve left running by another module keeps its proxy on its own port
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_predict_app(model_dir, champion="1", challenger="2", canary_percent=50.0, num_cpus=0,
                                    max_batch_size=16, batch_wait_timeout_s=BATCH_WAIT_S,
                                    skip_idle_wait=False),  # a lone request waits (test_timeout_is_504)
                  name="predict_http", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.delete("predict_http")
        mp.undo()


@pytest.mark.ray
@pytest.mark.slow
def test_real_serve_http(real_app: str, model_dir: Path) -> None:
    base = real_app
    x = _windows(4, seed=7)
    r = httpx.post(f"{base}/v1/predict", json={"windows": x.tolist()}, timeout=30)
    assert r.status_code == 401
    for priority in ("live", "research"):
        for i in range(3):
            rid = f"http-{priority}-{i}"
            r = httpx.post(f"{base}/v1/predict", json={"windows": x.tolist(), "priority": priority},
                           headers={**H, "X-Request-ID": rid}, timeout=30)
            assert r.status_code == 200, r.text
            version = RoutingState(RoutingConfig(champion="1", challenger="2", canary_percent=50.0)).assign(rid)[1]
            assert r.json()["version"] == version
            _assert_matches(r.json(), _direct(model_dir, version, x))
    r = httpx.post(f"{base}/v1/predict", json={"windows": x[:, :-1].tolist()}, headers=H, timeout=30)
    assert (r.status_code, r.json()["detail"][0]["field"]) == (422, "windows.0")
    r = httpx.get(f"{base}/v1/predict/status", headers=H, timeout=30)
    assert r.status_code == 200 and r.json()["rolled_back"] is False
    r = httpx.post(f"{base}/v1/predict", content=b"[" * (17 << 20), timeout=60,
                   headers={**H, "Content-Type": "application/json"})  # over the 16 MiB JSON cap: refused unread
    assert r.status_code == 413 and r.json()["detail"][0]["field"] == "body"


@pytest.mark.ray
@pytest.mark.slow
def test_concurrent_requests_are_batched(real_app: str, model_dir: Path) -> None:
    handle = serve.get_deployment_handle("ModelServerResearch", app_name="predict_http")
    before = len(handle.batch_log.remote().result())
    xs = [_windows(1 + i % 3, seed=10 + i) for i in range(12)]
    versions = ["1" if i % 4 == 0 else "2" for i in range(12)]
    pending = [handle.options(multiplexed_model_id=v).predict.remote(v, x) for v, x in zip(versions, xs, strict=True)]
    outs = [p.result(timeout_s=30) for p in pending]
    for v, x, out in zip(versions, xs, outs, strict=True):
        ref = _direct(model_dir, v, x)
        for k in ref:
            np.testing.assert_allclose(out[k], ref[k], rtol=1e-5, atol=1e-6)
    calls = handle.batch_log.remote().result()[before:]
    assert sum(n for _, n, _ in calls) == 12 and sum(rows for _, _, rows in calls) == sum(len(x) for x in xs)
    assert len(calls) < 12 and max(n for _, n, _ in calls) >= 4  # several requests shared one predictor call


@pytest.mark.ray
@pytest.mark.slow
def test_timeout_is_504(real_app: str) -> None:
    handle = serve.get_deployment_handle("ModelServerLive", app_name="predict_http")
    x = _windows(1).tolist()
    c = _client(handle, request_timeout_s=10 * BATCH_WAIT_S)
    assert c.post("/v1/predict", json={"windows": x}, headers=H).status_code == 200  # loads the shape, warms up
    c.predict_state.config.request_timeout_s = BATCH_WAIT_S / 5  # type: ignore[attr-defined]
    r = c.post("/v1/predict", json={"windows": x}, headers=H)  # a lone request waits BATCH_WAIT_S for company
    assert r.status_code == 504
    assert r.json() == {"error": "gateway_timeout",
                        "detail": [{"field": "request", "reason": "prediction did not finish within 0.01 s"}]}
