"""`POST /v1/rl/act` and `GET /v1/rl/policy` on the API app (FastAPI TestClient, in process): good input gives
`load_policy().act`'s weights; bad shapes, non-finite values, a missing key and oversized batches are refused in the
API's error shape; the routes exist only when a policy is configured."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tradesys.config import DataConfig
from tradesys.rl.env import PortfolioEnv, RLEnvConfig
from tradesys.rl.market import market_from_source
from tradesys.rl.policy import export_policy, load_policy
from tradesys.serve.app import create_api
from tradesys.serve.rl import MAX_ROWS

from .test_rl_policy import build_module

KEY = "test-key-rl"
H = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, PortfolioEnv]:
    market = market_from_source(DataConfig(source="synthetic", synthetic_days=2, seed=11))
    cfg = RLEnvConfig(window=4, episode_length=None, action_mode="clip", max_weight=0.3)
    env = PortfolioEnv(cfg, market)
    d = tmp_path_factory.mktemp("serve-rl")
    export_policy(build_module(env, d / "module"), d / "export", env=cfg, symbols=market.symbols)
    return d / "export", env


@pytest.fixture(scope="module")
def client(setup) -> Iterator[TestClient]:
    path, _ = setup
    with TestClient(create_api(None, api_key=KEY, analytics=False, rl_policy_path=str(path))) as c:
        yield c


def _obs(env: PortfolioEnv, n: int) -> np.ndarray:
    rng = np.random.default_rng(2)
    obs, _ = env.reset(seed=3)
    rows = [obs]
    for _ in range(n - 1):
        obs, *_ = env.step(rng.uniform(-1, 1, env.action_space.shape))
        rows.append(obs)
    return np.stack(rows)


def _error(r: Any, status: int, field: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "detail"} and body["detail"][0]["field"] == field, body
    return body["detail"][0]["reason"]


def test_act_gives_load_policy_act_weights(client: TestClient, setup) -> None:
    path, env = setup
    x = _obs(env, 12)
    ref = load_policy(path).act(x)
    r = client.post("/v1/rl/act", json={"observations": x.tolist()}, headers=H)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["symbols"] == list(env.market.symbols)
    w = np.array(body["weights"])
    np.testing.assert_allclose(w, ref, rtol=0, atol=1e-12)  # JSON floats round-trip float64 exactly
    np.testing.assert_allclose(body["cash"], 1.0 - ref.sum(axis=1), rtol=0, atol=1e-12)
    assert (w < 0).any() and (np.abs(w) <= 0.3 + 1e-12).all()  # clip mode: shorts, capped at max_weight
    one = client.post("/v1/rl/act", json={"observation": x[5].tolist()}, headers=H).json()
    np.testing.assert_allclose(one["weights"], ref[5:6], rtol=0, atol=1e-12)


def test_policy_metadata(client: TestClient, setup) -> None:
    _, env = setup
    info = client.get("/v1/rl/policy", headers=H).json()
    assert info["obs_dim"] == env.observation_space.shape[0] and info["window"] == 4
    assert info["obs_layout"] == {"features": [4, 5, 6], "weights": [5], "cash": [1]}
    assert info["action_mode"] == "clip" and info["env"]["max_weight"] == 0.3


def test_bad_input_is_refused_in_the_error_shape(client: TestClient, setup) -> None:
    _, env = setup
    d = env.observation_space.shape[0]
    x = _obs(env, 3).tolist()
    assert "takes" in _error(client.post("/v1/rl/act", json={"observations": [x[0], x[1][:-1]]}, headers=H), 422,
                             "observations.1")
    assert "takes" in _error(client.post("/v1/rl/act", json={"observation": [1.0, 2.0]}, headers=H), 422,
                             "observation")
    _error(client.post("/v1/rl/act", json={}, headers=H), 422, "observations")
    _error(client.post("/v1/rl/act", json={"observations": x, "observation": x[0]}, headers=H), 422, "observations")
    _error(client.post("/v1/rl/act", json={"observations": []}, headers=H), 422, "observations")
    nan = client.post("/v1/rl/act", content='{"observations": [' + ", ".join(["0"] * d) + "], [" +
                      ", ".join(["NaN"] * d) + "]]}", headers={**H, "content-type": "application/json"})
    assert nan.status_code == 422 and nan.json()["error"] == "validation_error"  # NaN is not JSON: refused on parse
    huge = [1e39] + [0.0] * (d - 1)  # beyond float32
    _error(client.post("/v1/rl/act", json={"observation": huge}, headers=H), 422, "observation")
    _error(client.post("/v1/rl/act", json={"observations": [["a"] * d]}, headers=H), 422, "observations.0.0")
    big = client.post("/v1/rl/act", json={"observations": [[0.0] * d] * (MAX_ROWS + 1)}, headers=H)
    _error(big, 413, "observations")


def test_a_key_is_required(client: TestClient, setup) -> None:
    _error(client.post("/v1/rl/act", json={"observation": [0.0]}), 401, "X-API-Key")
    _error(client.get("/v1/rl/policy", headers={"X-API-Key": "wrong"}), 401, "X-API-Key")


def test_routes_only_with_a_policy_and_a_bad_path_fails_at_build(tmp_path: Path) -> None:
    with TestClient(create_api(None, api_key=KEY, analytics=False)) as c:
        assert c.get("/v1/rl/policy", headers=H).status_code == 404
    with pytest.raises(ValueError, match=r"^path: .*not a policy export"):
        create_api(None, api_key=KEY, analytics=False, rl_policy_path=str(tmp_path))
