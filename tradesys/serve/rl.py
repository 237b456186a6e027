"""The RL policy routes: `POST /v1/rl/act` (observations -> target weights) and `GET /v1/rl/policy` (metadata).

Why a route of the API app: the same key, error shape, body cap and admission limits as every other route, and a
client (another desk's process, a notebook) can ask the served agent what it would hold for an observation. The
policy is an export of `tradesys.rl.policy` loaded once when the router is built, i.e. once per Serve replica
(`create_api(rl_policy_path=...)`); each request runs it in the request's worker thread.

Request: ``{"observations": [[...], ...]}`` (n rows of obs_dim numbers) or ``{"observation": [...]}`` (one row), in
the layout of `tradesys.rl.observation` / the env. Response: ``weights`` (n x assets, the env's realised target
weights), ``cash`` (1 - sum of each row's weights), ``actions`` (the raw deterministic actions), ``symbols``.
A wrong shape or a non-finite value is a 422 naming the field (``observations``, ``observation``); more than
`MAX_ROWS` rows is a 413.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from fastapi import APIRouter
from pydantic import BaseModel, Field

from tradesys.rl.policy import ExportedPolicy, load_policy
from tradesys.serve.errors import BadRequest, ErrorBody

__all__ = ["MAX_ROWS", "ActRequest", "ActResponse", "PolicyInfo", "rl_router"]

MAX_ROWS = 4096  # observations per request (413 beyond)


class ActRequest(BaseModel):
    observations: list[list[float]] | None = Field(None, description="n observations of obs_dim values each")
    observation: list[float] | None = Field(None, description="one observation (obs_dim values)")


class ActResponse(BaseModel):
    symbols: list[str]
    weights: list[list[float]] = Field(description="target weights per observation (rows) and symbol (columns)")
    cash: list[float] = Field(description="1 - sum of the row's weights")
    actions: list[list[float]] = Field(description="the policy's deterministic actions, in the env's bounds")
    backend: str


class PolicyInfo(BaseModel):
    symbols: list[str]
    feature_names: list[str]
    window: int
    obs_dim: int
    act_dim: int
    action_mode: str
    backend: str
    env: dict[str, Any]
    obs_layout: dict[str, list[int]]


def _rows(req: ActRequest, obs_dim: int) -> np.ndarray:
    """The request's observations as an (n, obs_dim) float32 array; BadRequest naming the field otherwise."""
    if (req.observations is None) == (req.observation is None):
        raise BadRequest([("observations", "give either observations (a list of rows) or observation (one row)")])
    field = "observations" if req.observations is not None else "observation"
    rows = req.observations if req.observations is not None else [req.observation]  # type: ignore[list-item]
    if len(rows) > MAX_ROWS:
        raise BadRequest([(field, f"{len(rows)} rows; at most {MAX_ROWS} per request")], status=413)
    if not rows:
        raise BadRequest([(field, "at least one observation is required")])
    for i, r in enumerate(rows):
        if len(r) != obs_dim:
            where = f"{field}.{i}" if field == "observations" else field
            raise BadRequest([(where, f"has {len(r)} values, the policy takes {obs_dim}")])
    x = np.asarray(rows, dtype=np.float64)
    with np.errstate(over="ignore"):
        x32 = x.astype(np.float32)
    bad = ~np.isfinite(x32).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        where = f"{field}.{i}" if field == "observations" else field
        raise BadRequest([(where, "NaN or infinite value (or one beyond float32)")])
    return x32


def rl_router(policy: ExportedPolicy | str | os.PathLike[str], dependencies: list[Any],
              errors: dict[int | str, dict[str, Any]]) -> APIRouter:
    """The RL routes over `policy` (an `ExportedPolicy`, or an export path loaded here, once)."""
    pol = policy if isinstance(policy, ExportedPolicy) else load_policy(policy)
    meta = pol.meta
    a, f = meta.n_assets, len(meta.feature_names)
    info = {
        "symbols": list(meta.symbols), "feature_names": list(meta.feature_names), "window": meta.window,
        "obs_dim": meta.obs_dim, "act_dim": meta.act_dim, "action_mode": meta.action_mode, "backend": pol.backend,
        "env": meta.env, "obs_layout": {"features": [meta.window, a, f], "weights": [a], "cash": [1]},
    }  # fmt: skip
    router = APIRouter(tags=["rl"])
    too_big = {413: {"model": ErrorBody, "description": f"more than {MAX_ROWS} observations, or the body cap"}}

    @router.post("/v1/rl/act", response_model=ActResponse, dependencies=dependencies,
                 responses={**errors, **too_big})  # fmt: skip
    def act(req: ActRequest) -> dict[str, Any]:
        """Target weights for observations in the env's layout (see `GET /v1/rl/policy` for obs_dim and layout)."""
        x = _rows(req, meta.obs_dim)
        actions = pol.action(x)
        w = pol.weights(actions)
        return {"symbols": list(meta.symbols), "weights": w.tolist(), "cash": (1.0 - w.sum(axis=1)).tolist(),
                "actions": actions.tolist(), "backend": pol.backend}  # fmt: skip

    @router.get("/v1/rl/policy", response_model=PolicyInfo, dependencies=dependencies, responses=errors)
    def policy_info() -> dict[str, Any]:
        """The served policy: symbols, features, window, observation layout, action mode, env settings."""
        return info

    return router
