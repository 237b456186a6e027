"""Property-based fuzzing of every route of the HTTP API (issue 15 part 6), generated from the app's own OpenAPI
document by schemathesis.

The app is built whole, as `tradesys serve --ledger ... --rl-policy ...` builds it: ledger views on a backtest's
ledger, the analytics routes, the run-folder routes (runs, tca) over a runs folder holding that run, the alert
receiver, and the RL policy routes on an exported (untrained) policy. The predict app is a separate OpenAPI
document (`tradesys models serve`): it is fuzzed the same way over ONNX models exported here.

- With the key: valid and invalid requests (schemathesis' positive and negative modes) are never answered 5xx, and
  every answer conforms to the document: a documented status code, content type and headers, and a body matching
  the response schema. (Which 422s a schema-valid request may get is tests/test_serve_schema.py's subject.)
- Without the key, or with a wrong one: 401 on every route but the documented public `/health`.
- One pass over real HTTP (uvicorn on a socket, the same ASGI app) with schema-valid requests.
In-process ASGI calls for the rest; a bounded number of examples per route and mode keeps it to about a minute.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.slow  # a minute or more: the RL policy export and a few hundred requests

KEY = "fuzz-test-key-8d41c2"
WRONG = "fuzz-test-key-8d41c3"
PUBLIC = {("GET", "/health")}  # documented as needing no key ("No key needed." in its description)
MAX_EXAMPLES = 6  # per route and generation mode
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


def fuzz(schema: Any, modes: list[GenerationMode], max_examples: int, check: Callable[[Any], None]) -> list[str]:
    """Run `check` on generated cases of every operation of `schema`, in each mode; the failures, one line each.

    Hypothesis driven per operation from here (not `schemathesis.pytest.from_fixture`, whose lazy parametrization
    sets `Function._nodeid`, which pytest 9 no longer has): deterministic, no example database, no deadline (a
    loaded 2-core CI machine is slow), no shrinking (the first failing case is reported as generated).
    """
    failures: list[str] = []
    for result in schema.get_all_operations():
        op = result.ok()
        for mode in modes:
            @given(case=op.as_strategy(generation_mode=mode))
            @settings(max_examples=max_examples, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate],
                      report_multiple_bugs=False)
            def run(case: Any) -> None:
                check(case)

            try:
                run()
            except Unsatisfiable:  # negative mode on an operation without inputs (GET /health): nothing to negate
                if mode != GenerationMode.NEGATIVE:
                    raise
            except (Exception, BaseExceptionGroup) as exc:  # the failing case's check errors (a FailureGroup)
                failures.append(f"{op.method.upper()} {op.path} ({mode.value}): {type(exc).__name__}: "
                                f"{' '.join(str(exc).split())[:1500]}")
    return failures


@pytest.fixture(scope="module")
def app_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A runs folder with one run whose ledger is also the API's (orders filled, resting and rejected, fills,
    positions: tests/test_serve.py's `populate`), and an exported (untrained) RL policy."""
    from tradesys.config import DataConfig
    from tradesys.rl.env import PortfolioEnv, RLEnvConfig
    from tradesys.rl.market import market_from_source
    from tradesys.rl.policy import export_policy

    from .test_rl_policy import build_module
    from .test_serve import populate

    root = tmp_path_factory.mktemp("fuzz")
    runs = root / "runs"
    (runs / "bt-1").mkdir(parents=True)
    populate(f"sqlite:///{runs / 'bt-1' / 'ledger.db'}")
    market = market_from_source(DataConfig(source="synthetic", synthetic_days=2, seed=11))
    env_cfg = RLEnvConfig(window=4, episode_length=None, action_mode="clip", max_weight=0.3)
    export_policy(build_module(PortfolioEnv(env_cfg, market), root / "module"), root / "policy", env=env_cfg,
                  symbols=market.symbols)
    return {"runs": runs, "ledger": runs / "bt-1" / "ledger.db", "policy": root / "policy"}


@pytest.fixture(scope="module")
def api_app(app_dirs: dict[str, Path]) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from tradesys.serve import ServeLimits, create_api

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRADESYS_RUNS_DIR", str(app_dirs["runs"]))  # where /v1/runs and /v1/tca look
        app = create_api(f"sqlite:///{app_dirs['ledger']}", api_key=KEY, rl_policy_path=str(app_dirs["policy"]),
                         limits=ServeLimits(request_timeout_s=30))
        yield app
        with TestClient(app):  # the app's lifespan, once: its shutdown closes the ledger and the key store
            pass


def one_lifespan(app: Any) -> Any:
    """`app` with the lifespan answered here: schemathesis runs an ASGI app's lifespan per test and shuts it down
    at the test's end (closing the ledger), while Serve runs it once per replica; the module's tests share one app."""

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            return await app(scope, receive, send)
        while True:
            kind = (await receive())["type"]
            await send({"type": f"{kind}.complete"})
            if kind == "lifespan.shutdown":
                return None

    return asgi


@pytest.fixture(scope="module")
def api_schema(api_app: Any) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", one_lifespan(api_app))


def test_every_route_the_app_serves_is_in_the_document(api_app: Any, api_schema: Any) -> None:
    """What the fuzzing below walks (the document's operations) is every route the app serves, RL and alerts too."""
    def routes(rs: list[Any]) -> Iterator[Any]:  # routers included whole (FastAPI's `_IncludedRouter`) nest theirs
        for r in rs:
            yield from routes(r.original_router.routes) if hasattr(r, "original_router") else (r,)

    served = {(m, re.sub(r"\{(\w+):\w+\}", r"{\1}", r.path)) for r in routes(api_app.routes)  # {id:path}: {id}
              for m in getattr(r, "methods", None) or ()
              if m != "HEAD" and (r.path.startswith("/v1/") or r.path == "/health")}
    walked = {(r.ok().method.upper(), r.ok().path) for r in api_schema.get_all_operations()}
    assert served == walked
    for needed in ("/v1/portfolio", "/v1/orders/{client_order_id}", "/v1/fills", "/v1/rl/act", "/v1/alerts",
                   "/v1/runs/{id}/equity", "/v1/tca", "/v1/risk/var", "/v1/options/american"):
        assert any(p == needed for _, p in walked), needed


def test_with_the_key_no_5xx_and_every_answer_matches_the_document(api_schema: Any) -> None:
    def check(case: Any) -> None:
        case.call_and_validate(headers={"X-API-Key": KEY}, checks=CHECKS, timeout=60)

    failures = fuzz(api_schema, [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], MAX_EXAMPLES, check)
    assert not failures, "\n".join(failures)


def _refused(case: Any) -> None:
    for headers in ({}, {"X-API-Key": WRONG}):
        r = case.call(headers=headers, timeout=60)
        if (case.method.upper(), case.path) in PUBLIC:
            assert r.status_code < 500
            continue
        assert r.status_code == 401, f"{headers} -> {r.status_code}: {r.text[:200]}"
        body = r.json()
        assert body["error"] == "unauthorized" and body["detail"][0]["field"] == "X-API-Key", body
        case.validate_response(r, checks=CHECKS)


def test_without_the_key_401_on_every_route_but_health(api_schema: Any) -> None:
    failures = fuzz(api_schema, [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], 2, _refused)
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------- one pass over real HTTP


@pytest.fixture(scope="module")
def http_base(api_app: Any) -> Iterator[str]:
    """The same app served by uvicorn on a loopback socket (a real HTTP server), for the duration of the module."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(api_app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


def test_over_real_http_schema_valid_requests_conform(api_schema: Any, http_base: str) -> None:
    def check(case: Any) -> None:
        case.call_and_validate(base_url=http_base, headers={"X-API-Key": KEY}, checks=CHECKS, timeout=60)

    failures = fuzz(api_schema, [GenerationMode.POSITIVE], 2, check)
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------- the predict app (its own OpenAPI document)


@pytest.fixture(scope="module")
def predict_schema(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """`tradesys models serve`'s ingress app over two exported ONNX models (Serve's local testing mode)."""
    from pydantic import SecretStr
    from ray import serve

    from tradesys.serve.predict import ModelServer, PredictRouter, RoutingConfig

    from .test_serve_predict import _export

    d = tmp_path_factory.mktemp("predict-models")
    _export(d / "1", seed=1)
    _export(d / "2", seed=2)
    handle = serve.run(ModelServer.options(name="ModelServerFuzz").bind(str(d)), name="predict_fuzz",
                       route_prefix=None, _local_testing_mode=True)
    # the ingress's own app builder, on the attributes its constructor sets (Serve makes that constructor async)
    ingress = SimpleNamespace(_live=handle, _research=handle, _key=SecretStr(KEY),
                              _config=RoutingConfig(champion="1", challenger="2", canary_percent=50.0))
    app = PredictRouter.func_or_class.__serve_build_asgi_app__(ingress)
    return schemathesis.openapi.from_asgi("/openapi.json", one_lifespan(app))


def test_predict_with_the_key_no_5xx_and_every_answer_matches_the_document(predict_schema: Any) -> None:
    def check(case: Any) -> None:
        case.call_and_validate(headers={"X-API-Key": KEY}, checks=CHECKS, timeout=60)

    assert len(list(predict_schema.get_all_operations())) >= 2  # /v1/predict and /v1/predict/status
    failures = fuzz(predict_schema, [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], MAX_EXAMPLES, check)
    assert not failures, "\n".join(failures)


def test_predict_without_the_key_is_401(predict_schema: Any) -> None:
    failures = fuzz(predict_schema, [GenerationMode.POSITIVE], 2, _refused)
    assert not failures, "\n".join(failures)
