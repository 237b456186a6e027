"""`ModelServer`'s idle skip on real Ray Serve: a lone request does not sit out the `@serve.batch` wait, concurrent
requests still share predictor calls. Reference: the ONNX predictor called directly; the replica's own batch log.

The batch wait here is long (3 s) so that a lone request's answer time tells the two behaviours apart on a loaded
machine: waiting would take at least 3 s, skipping takes a handle round trip.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tradesys.train.export import export_onnx
from tradesys.train.inference import load_predictor
from tradesys.train.models import build_model

WAIT_S = 3.0
LOOKBACK = 8


@pytest.fixture(scope="module")
def idle_server(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    from ray import serve

    from tests.conftest import free_port
    from tradesys.serve.predict import ModelServer

    d = tmp_path_factory.mktemp("idle")
    torch.manual_seed(3)
    (d / "1").mkdir()
    export_onnx(build_model("lstm", 4, hidden=4, n_layers=1, dropout=0.0), d / "1" / "model.onnx", lookback=LOOKBACK,
                n_features=4, output_names=("ret", "vol", "dir_logit"), exporter="torchscript")
    serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
    app = "idle_wait_test"
    handle = serve.run(ModelServer.options(name="ModelServerIdle", ray_actor_options={"num_cpus": 0},
                                           max_ongoing_requests=64)
                       .bind(str(d), max_batch_size=64, batch_wait_timeout_s=WAIT_S, preload=["1"]),
                       name=app, route_prefix=None)
    try:
        yield handle, d / "1" / "model.onnx"
    finally:
        serve.delete(app)
        serve.shutdown()  # the proxy keeps its port until shutdown: the next Serve test starts on its own port


@pytest.mark.ray
@pytest.mark.slow
def test_lone_requests_skip_the_wait_and_concurrent_ones_batch(idle_server: tuple[Any, Path]) -> None:
    handle, model = idle_server
    h = handle.options(multiplexed_model_id="1")
    direct = load_predictor(model, "onnxruntime")
    rng = np.random.default_rng(0)
    before = h.stats.remote().result(timeout_s=60)
    for _ in range(5):  # one at a time: each finds the replica idle
        x = rng.standard_normal((3, LOOKBACK, 4)).astype(np.float32)
        t0 = time.perf_counter()
        out = h.predict.remote("1", x).result(timeout_s=60)
        assert time.perf_counter() - t0 < WAIT_S  # did not sit out the wait
        for k, ref in direct.predict(x).items():
            np.testing.assert_array_equal(out[k], ref)
    after = h.stats.remote().result(timeout_s=60)
    assert after["idle_runs"] - before["idle_runs"] == 5
    assert after["predictor_calls"] - before["predictor_calls"] == 5

    log_before = len(h.batch_log.remote().result(timeout_s=60))
    xs = [rng.standard_normal((1 + i % 2, LOOKBACK, 4)).astype(np.float32) for i in range(10)]
    pending = [h.predict.remote("1", x) for x in xs]  # together: all but the first find it busy
    outs = [p.result(timeout_s=120) for p in pending]
    for x, out in zip(xs, outs, strict=True):
        for k, ref in direct.predict(x).items():
            np.testing.assert_allclose(out[k], ref, rtol=1e-6, atol=1e-7)
    calls = h.batch_log.remote().result(timeout_s=60)[log_before:]
    assert sum(n for _, n, _ in calls) == 10 and sum(r for _, _, r in calls) == sum(len(x) for x in xs)
    assert max(n for _, n, _ in calls) >= 2  # requests that found it busy shared a predictor call
    assert h.stats.remote().result(timeout_s=60)["idle_runs"] - after["idle_runs"] <= len(calls) - 1
