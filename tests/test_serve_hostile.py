"""The HTTP API under hostile input and load: parser bombs, oversized bodies, work over the caps, the time budget,
abandoned requests, load shedding, strict types and the one error shape.

In-process (TestClient) where the app alone decides; a real uvicorn HTTP server in a thread where the transport
matters (a streamed body, a client that disconnects); and a real Ray Serve instance for the 503 + Retry-After burst
and the body cap through Serve's proxy."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.conftest import free_port
from tradesys.quant.options.errors import OptionError
from tradesys.quant.options.european import bsm_greeks
from tradesys.serve import ServeLimits, create_api, run_serve
from tradesys.serve.columnar import ARROW_STREAM, arrow_stream, read_arrow_stream

KEY = "hostile-test-key-77c1"
H = {"X-API-Key": KEY, "Content-Type": "application/json"}
PARSER_ROUTES = ["/v1/options/price", "/v1/options/iv", "/v1/options/american", "/v1/vol/surface",
                 "/v1/risk/var", "/v1/risk/stress", "/v1/portfolio/optimize", "/v1/risk/attribution"]
ONE_OPTION = {"S": 100.0, "K": 100.0, "T": 1.0, "r": 0.05, "sigma": 0.2, "is_call": False}


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_api(None, api_key=KEY), raise_server_exceptions=False) as c:
        yield c


def assert_error_shape(r: httpx.Response, status: int | tuple[int, ...], field: str | None = None) -> None:
    statuses = (status,) if isinstance(status, int) else status
    assert r.status_code in statuses, r.text[:500]
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"error", "detail"} and isinstance(body["error"], str)
    assert isinstance(body["detail"], list) and body["detail"], body
    assert all(set(d) == {"field", "reason"} and d["reason"] for d in body["detail"]), body
    if field is not None:
        assert body["detail"][0]["field"] == field, body
    assert "Traceback" not in r.text


# --- item 6: parser bombs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PARSER_ROUTES)
@pytest.mark.parametrize("body", [b"[" * 1000, b"[" * 5000 + b"]" * 5000, b'{"S": ' + b"[" * 3000],
                         ids=["open", "closed", "in-a-field"])
def test_deeply_nested_json_is_4xx_and_logs_no_traceback(
    client: TestClient, path: str, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    r = client.post(path, content=body, headers=H)
    assert_error_shape(r, (400, 422), "body")
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR or rec.exc_info], caplog.text


@pytest.mark.parametrize("path", PARSER_ROUTES)
def test_invalid_utf8_is_422_naming_the_body(client: TestClient, path: str, caplog: pytest.LogCaptureFixture) -> None:
    r = client.post(path, content=b'{"S": "\xff\xfe\xfa"}' + os.urandom(64), headers=H)
    assert_error_shape(r, (400, 422), "body")
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]


@pytest.mark.parametrize("path", PARSER_ROUTES)
def test_50_mb_of_invalid_json_is_413_before_it_is_parsed(client: TestClient, path: str) -> None:
    junk = np.random.default_rng(1).integers(0, 256, 50 * 1024 * 1024, dtype=np.uint8).tobytes()
    t0 = time.perf_counter()
    r = client.post(path, content=junk, headers=H)
    assert_error_shape(r, 413, "body")
    assert "16777216 bytes" in r.json()["detail"][0]["reason"]
    assert time.perf_counter() - t0 < 5.0


def test_body_caps_are_configurable_and_arrow_has_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    limits = ServeLimits(max_json_body_bytes=4096, max_arrow_body_bytes=1 << 20)
    c = TestClient(create_api(None, api_key=KEY, limits=limits))
    body = {"pnl": [0.01] * 2000, "method": "historical"}  # about 12 KB of JSON
    assert_error_shape(c.post("/v1/risk/var", json=body, headers=H), 413, "body")
    arrow = arrow_stream({"S": np.full(300, 100.0), "K": 100.0, "T": 1.0, "sigma": 0.2, "is_call": True})
    assert len(arrow) > 4096
    r = c.post("/v1/options/price", content=arrow, headers={**H, "Content-Type": ARROW_STREAM})
    assert r.status_code == 200, r.text


# --- item 7: work caps, time budget, abandoned requests --------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({**ONE_OPTION, "S": [100.0] * 100_000, "method": "lr", "resolution": 5001}, 413, "rows"),
        ({**ONE_OPTION, "S": [100.0] * 10, "method": "lr", "resolution": 5001}, 413, "rows"),
        ({**ONE_OPTION, "method": "lsm", "resolution": 1_000_000}, 422, "resolution"),
        ({**ONE_OPTION, "S": [100.0] * 100, "method": "fd", "resolution": 4001}, 422, "resolution"),
        ({**ONE_OPTION, "T": 30.0, "method": "lsm", "resolution": 200_000, "style": "bermudan",
          "exercise_per_year": 252.0}, 422, "resolution"),
    ],
)
def test_american_work_is_capped_before_any_compute(
    client: TestClient, body: dict[str, Any], status: int, field: str
) -> None:
    t0 = time.perf_counter()
    r = client.post("/v1/options/american", json=body, headers={"X-API-Key": KEY})
    assert_error_shape(r, status, field)
    assert time.perf_counter() - t0 < 3.0  # refused up front: the uncapped LR request ran for minutes


def test_rows_with_invalid_inputs_never_reach_the_simulation(client: TestClient) -> None:
    """Schemathesis found one LSM row with T = -6.7e16 holding a worker for 21 s to answer null."""
    body = {**ONE_OPTION, "T": [-6.7e16, 1.0] * 10, "S": [100.0, -5.0] * 10, "method": "lsm"}
    t0 = time.perf_counter()
    r = client.post("/v1/options/american", json=body, headers={"X-API-Key": KEY})
    assert r.status_code == 200, r.text
    assert time.perf_counter() - t0 < 2.0  # the library alone: 1.4 s per such row on an idle core, 21 s loaded
    out = r.json()
    assert out["price"] == [None] * 20 and out["stderr"] == [None] * 20
    assert out["code"] == [OptionError.NEGATIVE_EXPIRY, OptionError.NON_POSITIVE_SPOT] * 10


def test_screened_rows_keep_their_place_in_a_mixed_batch(client: TestClient) -> None:
    from tradesys.quant.options.batch import american_columns

    S = [100.0, 100.0, 90.0, float("nan")]
    T = [1.0, -1.0, 0.5, 1.0]
    body = {**ONE_OPTION, "S": [100.0, 100.0, 90.0, 100.0], "T": T, "sigma": [0.2, 0.2, 0.3, -0.2], "method": "crr"}
    r = client.post("/v1/options/american", json=body, headers={"X-API-Key": KEY})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["code"] == [0, OptionError.NEGATIVE_EXPIRY, 0, OptionError.NEGATIVE_VOL]
    ok = american_columns({"S": np.array([100.0, 90.0]), "K": np.full(2, 100.0), "T": np.array([1.0, 0.5]),
                           "r": np.full(2, 0.05), "q": np.zeros(2), "sigma": np.array([0.2, 0.3]),
                           "is_call": np.zeros(2, bool)}, "crr")
    assert [out["price"][0], out["price"][2]] == pytest.approx(ok["price"].tolist(), rel=1e-12)
    assert [out["delta"][0], out["delta"][2]] == pytest.approx(ok["delta"].tolist(), rel=1e-12)
    assert out["price"][1] is None and out["delta"][3] is None
    assert len(S) == out["n"]


def test_a_large_request_under_the_cap_still_prices(client: TestClient) -> None:
    ql = pytest.importorskip("QuantLib")
    today = ql.Date(15, 1, 2025)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    process = ql.BlackScholesMertonProcess(
        ql.QuoteHandle(ql.SimpleQuote(100.0)), ql.YieldTermStructureHandle(ql.FlatForward(today, 0.0, dc)),
        ql.YieldTermStructureHandle(ql.FlatForward(today, 0.05, dc)),
        ql.BlackVolTermStructureHandle(ql.BlackConstantVol(today, ql.NullCalendar(), 0.2, dc)))
    put = ql.VanillaOption(ql.PlainVanillaPayoff(ql.Option.Put, 100.0), ql.AmericanExercise(today, today + 365))
    put.setPricingEngine(ql.BinomialVanillaEngine(process, "lr", 2001))
    body = {**ONE_OPTION, "S": [100.0] * 3, "method": "lr", "resolution": 2001}  # 3 x 2001^2 = 1.2e7 units
    r = client.post("/v1/options/american", json=body, headers={"X-API-Key": KEY})
    assert r.status_code == 200, r.text
    assert r.json()["price"] == pytest.approx([put.NPV()] * 3, abs=5e-4)


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"pnl": [0.01] * 100, "method": "mc_normal", "options": {"n_scenarios": 20_000_000}}, 413,
         "options.n_scenarios"),
        ({"returns": {f"a{i}": [0.01, -0.02, 0.005] for i in range(50)}, "weights": [0.02] * 50,
          "method": "mc_normal", "options": {"n_scenarios": 1_000_000}}, 413, "options.n_scenarios"),
        ({"pnl": [0.01] * 100_001}, 422, "pnl"),
        ({"pnl": [0.01] * 100, "method": "fhs", "horizon_days": 10, "options": {"n_sims": 1_000_000}}, 413,
         "options.n_sims"),
        ({"pnl": [0.01] * 100, "options": {"n_scenarios": True}, "method": "mc_normal"}, 422, "options.n_scenarios"),
    ],
)
def test_var_work_is_capped(client: TestClient, body: dict[str, Any], status: int, field: str) -> None:
    t0 = time.perf_counter()
    assert_error_shape(client.post("/v1/risk/var", json=body, headers={"X-API-Key": KEY}), status, field)
    assert time.perf_counter() - t0 < 3.0


def test_time_budget_answers_504_in_the_error_shape() -> None:
    c = TestClient(create_api(None, api_key=KEY, limits=ServeLimits(request_timeout_s=0.2)))
    # about 1 s of LR trees on an idle core (201 steps took 0.46 s: too close to a budget to fail on a fast machine)
    body = {**ONE_OPTION, "S": [100.0] * 2000, "method": "lr", "resolution": 301}
    t0 = time.perf_counter()
    r = c.post("/v1/options/american", json=body, headers={"X-API-Key": KEY})
    elapsed = time.perf_counter() - t0
    assert_error_shape(r, 504, "request")
    assert r.json()["error"] == "gateway_timeout" and "0.2 s" in r.json()["detail"][0]["reason"]
    assert elapsed < 2.0, elapsed


class _Server:
    """A real uvicorn HTTP server in a thread (the transport a client can hang up on)."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                   lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def _cpu_until_quiet(c0: float, quiet_s: float = 0.5, max_s: float = 120.0) -> float:
    """CPU seconds this process used since `c0`, read once it has been idle for `quiet_s`."""
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline:
        before = time.process_time()
        time.sleep(quiet_s)
        if time.process_time() - before < 0.05 * quiet_s:
            break
    return time.process_time() - c0


def _request_cpu(port: int, body: bytes, hang_up_at_cpu: float | None) -> float:
    """CPU seconds the server (this process) spends on one request: answered in full, or abandoned by the client
    once the server has spent `hang_up_at_cpu` on it."""
    c0 = time.process_time()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"POST /v1/options/american HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"X-API-Key: {KEY}\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                 + body)
    if hang_up_at_cpu is None:
        sock.settimeout(300)
        reply = b""
        while chunk := sock.recv(1 << 16):
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 200"), reply[:300]
    else:
        deadline = time.monotonic() + 60
        while time.process_time() - c0 < hang_up_at_cpu and time.monotonic() < deadline:
            time.sleep(0.01)
    sock.close()
    return _cpu_until_quiet(c0)


@pytest.mark.slow
def test_an_abandoned_request_stops_using_cpu_soon_after_the_disconnect() -> None:
    """CPU time, not wall time, so a fast machine (the largest request the work cap admits took 0.9 s on one) and a
    shared, loaded one judge alike: a request abandoned early costs a fraction of one answered in full (the work
    stops at the next chunk boundary: a twentieth of the cap)."""
    import json

    app = create_api(None, api_key=KEY, limits=ServeLimits(request_timeout_s=120))
    spots = np.linspace(80.0, 120.0, 4900).tolist()  # about the work cap of method lr at this resolution
    body = json.dumps({**ONE_OPTION, "S": spots, "method": "lr", "resolution": 201}).encode()
    with _Server(app) as srv:
        _request_cpu(srv.port, body, hang_up_at_cpu=None)  # first-use imports are not the request's work
        full = _request_cpu(srv.port, body, hang_up_at_cpu=None)
        cut = _request_cpu(srv.port, body, hang_up_at_cpu=0.15 * full)
    assert full > 0.2, f"the answered request cost only {full:.2f} s CPU"
    assert cut < 0.5 * full, f"an abandoned request cost {cut:.2f} s CPU against {full:.2f} s answered in full"


def _long_var_body() -> bytes:
    """One indivisible call of seconds even on an idle machine, well within the caps: filtered historical simulation
    (a GARCH fit on 100,000 P&L values, then 200,000 paths of 25 days)."""
    import json

    pnl = np.round(np.random.default_rng(0).standard_normal(100_000) * 0.01, 6).tolist()
    return json.dumps({"pnl": pnl, "method": "fhs", "horizon_days": 25, "options": {"n_sims": 200_000}}).encode()


def _compute_children() -> list[Any]:
    import psutil

    return [p for p in psutil.Process().children() if "tradesys.compute" in " ".join(p.cmdline())]


def _busy_child(timeout: float = 120.0) -> Any:
    """The compute child running the request (once the body is parsed and the call sent)."""
    import psutil

    from tradesys.compute import shared_pool

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = shared_pool().busy_pids()
        if busy:
            return psutil.Process(busy[0])
        time.sleep(0.05)
    raise AssertionError("no compute child started working on the request")


@pytest.mark.slow
def test_an_abandoned_single_shot_solve_is_killed_at_the_disconnect() -> None:
    """A single indivisible call (a VaR by filtered historical simulation) cannot be chunked: it runs in a child
    process that is killed when the client hangs up, so the core is free at once instead of after the call."""
    import psutil

    body = _long_var_body()
    app = create_api(None, api_key=KEY, limits=ServeLimits(request_timeout_s=120))
    with _Server(app) as srv:
        sock = socket.create_connection(("127.0.0.1", srv.port))
        sock.sendall(b"POST /v1/risk/var HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"X-API-Key: {KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        child = _busy_child()
        time.sleep(0.2)
        assert child.is_running()  # mid-call (seconds of work)
        sock.close()  # the client gives up
        child.wait(timeout=10)  # raises psutil.TimeoutExpired if the solve is left running
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
        # the server still answers, from a fresh child
        small = {"returns": {"a": [0.01, -0.02, 0.015, 0.0], "b": [0.0, 0.01, -0.01, 0.02]}, "objective": "hrp"}
        r = httpx.post(f"http://127.0.0.1:{srv.port}/v1/portfolio/optimize", json=small,
                       headers={"X-API-Key": KEY}, timeout=60)
        assert r.status_code == 200 and abs(sum(r.json()["weights"].values()) - 1.0) < 1e-9, r.text


@pytest.mark.slow
def test_a_single_shot_solve_past_the_budget_is_504_and_killed() -> None:
    body = _long_var_body()
    c = TestClient(create_api(None, api_key=KEY, limits=ServeLimits(request_timeout_s=0.5)))
    from tradesys.compute import shared_pool

    pool = shared_pool()
    killed = pool.killed
    r = c.post("/v1/risk/var", content=body, headers=H)
    assert_error_shape(r, 504, "request")
    assert pool.killed == killed + 1  # the call in flight was abandoned: its child killed, not left to finish
    assert pool.busy_pids() == []


def test_an_exception_raised_in_the_compute_child_comes_back_as_itself() -> None:
    """Errors keep their type and fields across the process boundary (a 422 still names the field)."""
    from functools import partial

    from tradesys.compute import WorkerPool
    from tradesys.serve.errors import BadRequest

    pool = WorkerPool(max_idle=1, preload=[])
    try:
        call = pool.submit(partial(_raise_bad_request, "returns.b", "ragged"))
        asyncio_run = __import__("asyncio").run
        assert asyncio_run(call.wait(60))
        with pytest.raises(BadRequest) as info:
            call.result()
        assert info.value.fields == [("returns.b", "ragged")] and info.value.status == 422
        call = pool.submit(partial(divmod, 7, 2))
        assert asyncio_run(call.wait(60)) and call.result() == (3, 1)
        assert pool.started == 1  # the child that raised was reused
    finally:
        pool.close()


def _raise_bad_request(field: str, reason: str) -> None:
    from tradesys.serve.errors import BadRequest

    raise BadRequest([(field, reason)])


@pytest.mark.slow
def test_a_streamed_body_is_answered_413_at_the_cap_not_after_reading_it_whole() -> None:
    """A chunked upload (no Content-Length): the 413 must come back while the client is still sending."""
    import select

    limits = ServeLimits(max_json_body_bytes=64 * 1024)
    piece = b"0.01, " * 2730  # 16 KB
    sent = 0
    answer = b""
    with _Server(create_api(None, api_key=KEY, limits=limits)) as srv:
        sock = socket.create_connection(("127.0.0.1", srv.port))
        sock.sendall(b"POST /v1/risk/var HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"X-API-Key: {KEY}\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        try:
            for _ in range(2048):  # 32 MB if the server read it all
                sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                sent += len(piece)
                if select.select([sock], [], [], 0.01)[0]:
                    answer = sock.recv(65536)
                    break
        except OSError:  # the server closed after answering
            answer = answer or sock.recv(65536)
        sock.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 2 * 1024 * 1024, f"the answer came after {sent} bytes"
    assert b'"field":"body"' in answer


def test_a_solver_failure_on_client_numbers_is_422_not_500(client: TestClient,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """Schemathesis found degenerate covariances on which CLARABEL fails (the library raised RuntimeError, a 500).
    The schema now bounds covariance cells, so such a body is a 422 naming the cell before any solver runs."""
    body = {"cov": [[1e-300, 0.0], [0.0, 1e300]], "assets": ["a", "b"], "objective": "min_variance"}
    r = client.post("/v1/portfolio/optimize", json=body, headers={"X-API-Key": KEY})
    assert_error_shape(r, 422, "cov.1.1")
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]


# --- item 10: the one error shape, repeated query keys; item 9: strict types ---------------------------------------


def test_every_error_status_has_the_list_shape(client: TestClient) -> None:
    assert_error_shape(client.get("/v2/nothing"), 404, "path")
    assert_error_shape(client.post("/health"), 405, "method")
    assert_error_shape(client.post("/v1/options/price", json=ONE_OPTION), 401, "X-API-Key")
    assert_error_shape(client.post("/v1/options/price", content=b"S=1", headers={**H, "Content-Type": "text/csv"}),
                       415, "content-type")
    assert_error_shape(client.post("/v1/risk/var", content=b"x" * (17 << 20), headers=H), 413, "body")
    assert_error_shape(client.post("/v1/risk/var", content=b"{}", headers={**H, "Content-Length": "nope"}), 400,
                       "Content-Length")


def test_repeated_and_comma_separated_greeks_are_all_returned(client: TestClient) -> None:
    body = arrow_stream({"S": [100.0, 110.0], "K": 100.0, "T": 0.5, "r": 0.01, "q": 0.0, "sigma": 0.25,
                         "is_call": True})
    hdr = {"X-API-Key": KEY, "Content-Type": ARROW_STREAM, "Accept": ARROW_STREAM}
    want = bsm_greeks(np.array([100.0, 110.0]), 100.0, 0.5, 0.01, 0.0, 0.25, True)
    for query in ("greeks=delta&greeks=vega", "greeks=delta,vega", "greeks=delta&greeks=vega,delta"):
        r = client.post(f"/v1/options/price?{query}", content=body, headers=hdr)
        assert r.status_code == 200, r.text
        cols, _ = read_arrow_stream(r.content)
        assert set(cols) == {"price", "delta", "vega", "code"}, query
        np.testing.assert_allclose(cols["delta"], want.delta, rtol=1e-12)
        np.testing.assert_allclose(cols["vega"], want.vega, rtol=1e-12)
    r = client.post("/v1/options/price?greeks=delta&greeks=bogus", content=body, headers=hdr)
    assert_error_shape(r, 422, "greeks.1")


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/risk/var", {"pnl": [0.01, -0.02, 0.03] * 40, "horizon_days": True}, "horizon_days"),  # lax: 1
        ("/v1/risk/var", {"pnl": [0.01, -0.02, 0.03] * 40, "horizon_days": False}, "horizon_days"),
        ("/v1/risk/var", {"returns": {"a": [0.01, -0.02, 0.03] * 40}, "weights": [1.0], "value": True}, "value"),
        ("/v1/risk/var", {"pnl": [0.01, -0.02, 0.03] * 40, "horizon_days": 2.5}, "horizon_days"),
        ("/v1/risk/var", {"pnl": []}, "pnl"),
        ("/v1/risk/var", {"pnl": [0.01] * 60, "weights": [1.0], "returns": {"a": [0.01] * 60}}, "request"),
        ("/v1/options/american", {**ONE_OPTION, "seed": False}, "seed"),
        ("/v1/options/american", {**ONE_OPTION, "resolution": True}, "resolution"),
        ("/v1/options/price", {**ONE_OPTION, "S": True}, "S"),
        ("/v1/options/price", {**ONE_OPTION, "K": [100.0, False]}, "K"),
        ("/v1/portfolio/optimize", {"cov": [[0.04]], "assets": ["a"], "frontier_points": True}, "frontier_points"),
    ],
)
def test_a_bool_is_not_a_number(client: TestClient, path: str, body: dict[str, Any], field: str) -> None:
    assert_error_shape(client.post(path, json=body, headers={"X-API-Key": KEY}), 422, field)


def test_the_schema_states_the_caps_and_the_one_of_rules(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    comps = spec["components"]["schemas"]
    var = comps["VarRequest"]
    assert len(var["oneOf"]) == 3
    pnl = var["properties"]["pnl"]
    assert (pnl["type"], pnl["minItems"], pnl["maxItems"]) == ("array", 1, 100_000)
    assert var["properties"]["horizon_days"]["maximum"] == 250
    american = spec["paths"]["/v1/options/american"]["post"]
    body = american["requestBody"]["content"]["application/json"]["schema"]
    assert (body["properties"]["resolution"]["minimum"], body["properties"]["resolution"]["maximum"]) == (4, 1_000_000)
    assert "rows x steps^2" in american["description"] and "413" in american["description"]
    price = spec["paths"]["/v1/options/price"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert [len(rule["oneOf"]) for rule in price["allOf"]] == [2, 2]
    for path in PARSER_ROUTES:
        responses = spec["paths"][path]["post"]["responses"]
        assert {"401", "413", "422", "503", "504"} <= set(responses), path
        assert "Retry-After" in responses["503"]["headers"]


# --- item 8: load shedding and the body cap on a real Serve instance -------------------------------------------------


@pytest.mark.ray
@pytest.mark.slow
def test_real_serve_sheds_a_burst_with_503_retry_after_and_caps_bodies(
    ray_session: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ray import serve

    monkeypatch.setenv("TRADESYS_API_KEY", KEY)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    limits = ServeLimits(max_ongoing_requests=1, max_queued_requests=1, retry_after_s=3, request_timeout_s=60,
                         max_json_body_bytes=1 << 20)
    body = {**ONE_OPTION, "S": [100.0] * 150, "method": "lr", "resolution": 201}  # about 0.3-1 s each
    serve.shutdown()  # a Serve left running by another module keeps its proxy on its own port
    try:
        run_serve(None, "127.0.0.1", port, name="hostile", limits=limits)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "Serve did not come up"
            time.sleep(0.5)

        def one(_: int) -> httpx.Response:
            return httpx.post(f"{base}/v1/options/american", json=body, headers={"X-API-Key": KEY}, timeout=120)

        # a bounded burst: 12 requests, then it stops by itself. Which gate sheds depends on when the proxy learns
        # the replica's load: a cold proxy may shed the whole overflow itself (Ray's plain-text 503). A second burst
        # meets the warm proxy, which hands the replica what its in-app gate can hold (JSON 503).
        for _burst in range(2):
            with ThreadPoolExecutor(12) as pool:
                rs = list(pool.map(one, range(12)))
            ok = [r for r in rs if r.status_code == 200]
            shed = [r for r in rs if r.status_code == 503]
            assert len(ok) + len(shed) == len(rs), [r.status_code for r in rs]
            assert ok and shed, [r.status_code for r in rs]
            assert all(r.headers.get("retry-after") == "3" for r in shed)
            if any(r.headers.get("content-type") == "application/json" for r in shed):
                break
        assert any(r.headers.get("content-type") == "application/json" for r in shed)
        for r in shed:
            if r.headers.get("content-type") == "application/json":
                assert_error_shape(r, 503, "request")
        prices = {round(r.json()["price"][0], 10) for r in ok}
        assert len(prices) == 1  # the answers that did come are the same, full answers

        r = httpx.post(f"{base}/v1/risk/var", content=b"[" * (2 << 20), timeout=30,
                       headers={"X-API-Key": KEY, "Content-Type": "application/json"})
        assert_error_shape(r, 413, "body")
        r = httpx.post(f"{base}/v1/risk/var", content=b"[" * 1000, timeout=30,
                       headers={"X-API-Key": KEY, "Content-Type": "application/json"})
        assert_error_shape(r, (400, 422), "body")
    finally:
        serve.shutdown()  # the proxy keeps its port until shutdown: the next Serve test picks its own
