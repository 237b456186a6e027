"""gRPC ingress for /v1/predict (`tradesys.serve.grpc_predict`) on a real Ray Serve with its gRPC proxy.

References: the HTTP route's answer to the same request (same request id, so the same canary path), and the exported
file scored directly with `load_predictor`. Refusals: a missing or wrong key, bad windows, an unknown version."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import torch

from tests.conftest import free_port
from tradesys.serve import grpc_predict as gp
from tradesys.serve.errors import BadRequest
from tradesys.serve.predict import validate_windows
from tradesys.train.export import export_onnx
from tradesys.train.inference import load_predictor
from tradesys.train.models import build_model

KEY = "grpc-test-key-7c2e"
LOOKBACK, NF = 8, 4


def _windows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, LOOKBACK, NF)).astype(np.float32)


# --- pure: messages and validation -----------------------------------------------------------------------------------


def test_messages_round_trip_and_validation_matches_the_json_path() -> None:
    x = _windows(3, seed=1)
    req = gp.PredictRequest.FromString(gp.request_from_arrays(x, priority="live", request_id="r1")
                                       .SerializeToString())
    assert (req.n_windows, req.priority, req.request_id, req.version) == (3, "live", "r1", "")
    flat = gp.windows_array(req)
    assert flat.shape == (3, LOOKBACK * NF)
    np.testing.assert_array_equal(validate_windows(flat, LOOKBACK, NF), validate_windows(x.tolist(), LOOKBACK, NF))

    bad = x.copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(BadRequest) as exc:
        validate_windows(gp.windows_array(gp.request_from_arrays(bad)), LOOKBACK, NF)
    assert exc.value.fields == [("windows.1", "non-finite or missing value (NaN, inf or null) at [2][3]")]
    with pytest.raises(BadRequest) as exc:
        validate_windows(np.zeros((2, LOOKBACK * NF - 1), np.float32), LOOKBACK, NF)
    assert exc.value.fields[0][0] == "windows" and "8 x 4 = 32 values per window, got 31" in exc.value.fields[0][1]
    with pytest.raises(ValueError, match=r"^windows: 96 values do not split into n_windows=5"):
        gp.windows_array(gp.PredictRequest(windows=[0.0] * 96, n_windows=5))
    with pytest.raises(ValueError, match=r"^n_windows: must be >= 1"):
        gp.windows_array(gp.PredictRequest(windows=[0.0] * 32))

    out = {"ret": np.array([[0.5], [np.nan]], np.float32), "vol": np.array([1.25, 2.0], np.float32)}
    back = gp.reply_to_dict(gp.PredictReply.FromString(gp.reply_from_result(
        {"request_id": "r1", "model": "m", "version": "1", "role": "champion", "outputs": out, "latency_ms": 1.5})
        .SerializeToString()))
    assert back["outputs"] == {"ret": [[0.5], [None]], "vol": [1.25, 2.0]} and back["role"] == "champion"


def test_api_key_check() -> None:
    assert gp.check_api_key(KEY, KEY) is None
    assert gp.check_api_key(None, KEY) == "missing x-api-key metadata"
    assert gp.check_api_key("", KEY) == "missing x-api-key metadata"
    assert gp.check_api_key(KEY + "x", KEY) == "invalid API key"
    assert gp.metadata_value([("X-API-Key", "a"), ("x-api-key", "b")], "x-api-key") == "a"


# --- real Ray Serve with the gRPC proxy ------------------------------------------------------------------------------


def _export(path: Path, seed: int) -> None:
    torch.manual_seed(seed)
    path.mkdir(parents=True)
    export_onnx(build_model("lstm", NF, hidden=8, n_layers=1, dropout=0.0), path / "model.onnx", lookback=LOOKBACK,
                n_features=NF, output_names=("ret", "vol", "dir"), exporter="torchscript")


@pytest.fixture(scope="module")
def grpc_app(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    from ray import serve
    from ray.serve.config import gRPCOptions

    from tradesys.serve.predict import build_predict_app

    d = tmp_path_factory.mktemp("grpc_models")
    _export(d / "1", seed=1)
    _export(d / "2", seed=2)
    mp = pytest.MonkeyPatch()
    mp.setenv("TRADESYS_API_KEY", KEY)
    http_port, grpc_port = free_port(), free_port()
    try:
        serve.shutdown()  # Serve's proxy options are fixed at start: a Serve left by another module has no gRPC
        serve.start(http_options={"host": "127.0.0.1", "port": http_port},
                    grpc_options=gRPCOptions(port=grpc_port, grpc_servicer_functions=[gp.GRPC_SERVICER_FUNCTION]))
        serve.run(build_predict_app(d, champion="1", challenger="2", canary_percent=50.0, num_cpus=0,
                                    inline_max_rows=32), name="predict_grpc", route_prefix="/")
        yield f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", d
    finally:
        serve.delete("predict_grpc")
        serve.shutdown()  # frees both ports for the next Serve test
        mp.undo()


def _refusal(call: Any) -> tuple[grpc.StatusCode, dict[str, Any]]:
    with pytest.raises(grpc.RpcError) as exc:
        call()
    return exc.value.code(), json.loads(exc.value.details())


@pytest.mark.ray
@pytest.mark.slow
def test_grpc_predict_equals_http_predict_and_refuses_bad_keys(grpc_app: tuple[str, str, Path]) -> None:
    base, target, model_dir = grpc_app
    direct = {v: load_predictor(model_dir / v / "model.onnx", "onnxruntime") for v in ("1", "2")}
    with grpc.insecure_channel(target) as channel:
        stub = gp.PredictServiceStub(channel)
        md = [(gp.API_KEY_METADATA, KEY)]
        for i, (n, priority) in enumerate([(1, "live"), (3, "research"), (2, "live"), (1, "research")]):
            x, rid = _windows(n, seed=10 + i), f"grpc-{i}"
            reply = stub.Predict(gp.request_from_arrays(x, priority=priority, request_id=rid), metadata=md, timeout=60)
            got = gp.reply_to_dict(reply)
            r = httpx.post(f"{base}/v1/predict", json={"windows": x.tolist(), "priority": priority},
                           headers={"X-API-Key": KEY, "X-Request-ID": rid}, timeout=60)
            assert r.status_code == 200, r.text
            want = r.json()
            assert {k: got[k] for k in ("request_id", "model", "version", "role", "outputs")} == \
                   {k: want[k] for k in ("request_id", "model", "version", "role", "outputs")}
            for name, ref in direct[got["version"]].predict(x).items():  # float32 values, exactly
                np.testing.assert_array_equal(np.asarray(got["outputs"][name], np.float32), ref)
        pinned = gp.reply_to_dict(stub.Predict(gp.request_from_arrays(_windows(2), version="2"), metadata=md,
                                               timeout=60))
        assert (pinned["version"], pinned["role"]) == ("2", "pinned")
        bearer = stub.Predict(gp.request_from_arrays(_windows(1)), metadata=[("authorization", f"Bearer {KEY}")],
                              timeout=60)  # the HTTP routes' alternative header, as metadata
        assert bearer.version in ("1", "2") and len(bearer.outputs) == 3

        x = gp.request_from_arrays(_windows(1))
        for metadata, reason in [([], "missing x-api-key metadata"), ([(gp.API_KEY_METADATA, KEY + "-wrong")],
                                                                      "invalid API key")]:
            code, body = _refusal(lambda m=metadata: stub.Predict(x, metadata=m, timeout=60))
            assert code == grpc.StatusCode.UNAUTHENTICATED
            assert body == {"error": "unauthorized", "detail": [{"field": "x-api-key", "reason": reason}]}

        nan = _windows(2)
        nan[1, 0, 2] = np.inf
        code, body = _refusal(lambda: stub.Predict(gp.request_from_arrays(nan), metadata=md, timeout=60))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and body["detail"][0]["field"] == "windows.1"
        code, body = _refusal(lambda: stub.Predict(gp.PredictRequest(windows=[0.0] * 31, n_windows=1), metadata=md,
                                                   timeout=60))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and body["detail"][0]["field"] == "windows"
        code, body = _refusal(lambda: stub.Predict(gp.request_from_arrays(_windows(1), priority="urgent"),
                                                   metadata=md, timeout=60))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and body["detail"][0]["field"] == "priority"
        code, body = _refusal(lambda: stub.Predict(gp.request_from_arrays(_windows(1), version="9"), metadata=md,
                                                   timeout=60))
        assert code == grpc.StatusCode.NOT_FOUND and body["detail"][0]["field"] == "version"
