"""Model serving: ``POST /v1/predict`` over exported forecasters, with batching, canary/shadow routing and rollback.

Why: the live loop and research notebooks score the same exported models (`tradesys.train.export`) over HTTP;
a new version must be tried on a slice of traffic (canary) or silently (shadow) and taken out automatically when
it misbehaves, without a deploy.

Pieces:

* `ModelServer` (Serve deployment): predictors loaded by version from ``model_dir/<version>/`` (one ``*.onnx`` or
  TorchScript ``*.pt`` file, ``model.onnx`` preferred) through ``@serve.multiplexed`` (at most
  `MAX_MODELS_PER_REPLICA` versions held per replica, least recently used evicted). Requests go through one
  ``@serve.batch`` method that stacks the windows of concurrent requests per version into one predictor call,
  except a request that finds the replica idle (``skip_idle_wait``, default on): it has no one to batch with, so
  it runs at once instead of sitting out ``batch_wait_timeout_s``; requests that overlap batch as before.
  The champion and challenger are loaded in the constructor (``preload``), so a replica takes no traffic before
  they are in memory and a cold load cannot use up the first requests' deadlines.
* `PredictRouter` (Serve ingress, FastAPI): validation, routing, timeouts, metrics, rollback. Access is the main
  API's (`tradesys.serve.access`): the bootstrap key from the environment (admin) or a key from the key store
  (`serve.keys_url`, `tradesys keys create`), in ``X-API-Key`` or ``Authorization: Bearer``; both routes need the
  ``read`` role; a revoked key is refused (401) within ``keys_refresh_s``; per-key rate limits (429) as configured.
  `predict_router` builds the same routes as an `APIRouter` over any two handles (tests, or mounting in the main app).

Routing (`RoutingState`): a request id (``X-Request-ID`` header, else body ``request_id``, else a random one) is
hashed (SHA-256, first 8 bytes / 2^64 * 100) to a bucket in [0, 100); bucket < canary_percent goes to the
challenger, so a given id always takes the same path. ``shadow=True``: the champion answers every request and the
challenger scores a copy in the background (its answer is compared, logged and kept in the status, never returned).
A body ``version`` pins that version and bypasses the split. A challenger failure or timeout on a canary request is
answered by the champion (role ``champion_fallback``).

Rollback: the last ``window_size`` challenger outcomes (canary and shadow) are kept; once there are at least
``min_requests``, an error rate above ``max_error_rate`` or a p99 latency above ``max_p99_latency_s`` (numpy's
linear-interpolation percentile) sends all traffic to the champion, stops the shadow, and records the reason and time;
``GET /v1/predict/status`` shows it. Only a restart or `RoutingState.reset` re-enables the challenger.

Priority lanes: ``priority="live"`` requests go to their own `ModelServer` deployment (``ModelServerLive``), research
requests to another (``ModelServerResearch``), so research load queues on its own replicas and cannot occupy the live
ones; in the router, research requests in flight are capped (``max_research_inflight``; beyond it: 429 at once), so
they cannot use up the ingress's ``max_ongoing_requests`` either. Priority defaults to "research": only callers that
say so take the protected lane.

Errors: bad windows -> 422 naming ``windows.<i>`` (shape, non-finite values; JSON null counts as missing), unknown
version -> 404, deadline (``request_timeout_s``) exceeded -> 504, all as ``{"error", "detail"}`` (`errors`).

Metrics (`ray.util.metrics`): ``tradesys_predict_requests`` (tags model, version, outcome: ok, error, timeout,
bad_request, fallback), ``tradesys_predict_latency_s`` histogram (model, version), ``tradesys_predict_errors``
(model, version, kind). Latencies are wall seconds measured in the router.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Header
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from ray import serve
from ray.serve.exceptions import RayServeException
from ray.serve.handle import DeploymentHandle
from ray.util import metrics
from starlette.exceptions import HTTPException as StarletteHTTPException

from tradesys.serve.access import (
    AccessControl,
    AccessGate,
    AccessLog,
    AccessSettings,
    check_routes,
    document_roles,
    require,
)
from tradesys.serve.auth import API_KEY_ENV, load_api_key
from tradesys.serve.errors import BadRequest, ErrorBody, install_error_handlers
from tradesys.serve.limits import BodyLimit, ServeLimits

__all__ = [
    "MAX_MODELS_PER_REPLICA",
    "MAX_WINDOWS",
    "ModelServer",
    "PredictRouter",
    "RoutingConfig",
    "RoutingState",
    "build_predict_app",
    "canary_bucket",
    "find_model_file",
    "list_versions",
    "predict_router",
    "validate_windows",
]

log = logging.getLogger(__name__)

MAX_MODELS_PER_REPLICA = 4
MAX_WINDOWS = 4096  # per request
_MODEL_SUFFIXES = (".onnx", ".pt", ".ts", ".torchscript")
_LATENCY_BOUNDARIES = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0]


# --- model directory ------------------------------------------------------------------------------------------------


def list_versions(model_dir: str | Path) -> list[str]:
    """Version names (sub-directory names holding a model file) in ``model_dir``, sorted."""
    d = Path(model_dir)
    if not d.is_dir():
        raise ValueError(f"model_dir: {str(d)!r} is not a directory")
    return sorted(p.name for p in d.iterdir() if p.is_dir() and _model_files(p))


def _model_files(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in _MODEL_SUFFIXES)


def find_model_file(model_dir: str | Path, version: str) -> Path:
    """The exported file of ``version``: ``model_dir/<version>/model.onnx``, else its only model file."""
    if not version or "/" in version or "\\" in version or version.startswith("."):
        raise ValueError(f"version: {version!r} is not a valid version name")
    d = Path(model_dir) / version
    if not d.is_dir():
        raise LookupError(f"version: {version!r} not found in {str(model_dir)!r}")
    if (d / "model.onnx").is_file():
        return d / "model.onnx"
    files = _model_files(d)
    if len(files) != 1:
        raise LookupError(f"version: {version!r} has {len(files)} model files; expected model.onnx or exactly one")
    return files[0]


# --- the model server -----------------------------------------------------------------------------------------------


@serve.deployment(name="ModelServer", num_replicas=1, max_ongoing_requests=64)
class ModelServer:
    """Predictors by version (multiplexed) behind one batching method; see the module docstring.

    ``predict(version, windows)`` returns ``{output: float32 array (n, ...)}`` for windows (n, lookback, n_features).
    A predictor error fails only the requests of that version in the batch.
    """

    def __init__(self, model_dir: str, *, backend: str = "auto", max_batch_size: int = 32,
                 batch_wait_timeout_s: float = 0.005, predictor_options: dict[str, Any] | None = None,
                 preload: tuple[str, ...] | list[str] = (), skip_idle_wait: bool = True,
                 inline_max_rows: int = 0) -> None:
        self.model_dir = str(Path(model_dir).resolve())
        # A request that finds nothing in flight has no one to batch with yet: run it at once instead of sitting
        # out the batch wait (docs/serving.md, "Latency"); under load requests overlap and batch as before.
        self.skip_idle_wait = bool(skip_idle_wait)
        # A predictor call of at most this many rows runs on the event loop instead of a worker thread: for a small
        # batch (0.06 ms at batch 1) the thread hand-off costs more than the call blocks the loop.
        self.inline_max_rows = int(inline_max_rows)
        self._in_flight = 0  # predict calls in this replica (one event loop: no lock needed)
        self.idle_runs = 0  # requests that skipped the wait
        self.backend = backend
        self.predictor_options = dict(predictor_options or {})
        self._local_models: OrderedDict[str, Any] = OrderedDict()
        # Loaded here so that the replica is not ready (and takes no traffic) before its routed versions are in
        # memory: a cold load (torch import, weights) can outlast a request's deadline. The multiplexer takes them
        # over on the first request of each version.
        self._preloaded: dict[str, Any] = {v: self._load_sync(v) for v in dict.fromkeys(preload)}
        self._batch_log: deque[tuple[str, int, int]] = deque(maxlen=10_000)  # (version, requests, rows)
        self._predict_batch.set_max_batch_size(int(max_batch_size))
        self._predict_batch.set_batch_wait_timeout_s(float(batch_wait_timeout_s))

    def _load_sync(self, version: str) -> Any:
        from tradesys.train.inference import load_predictor

        path = find_model_file(self.model_dir, version)
        return load_predictor(path, self.backend, **self.predictor_options)  # type: ignore[arg-type]

    async def _load(self, version: str) -> Any:
        if version in self._preloaded:
            return self._preloaded.pop(version)
        return await asyncio.to_thread(self._load_sync, version)

    @serve.multiplexed(max_num_models_per_replica=MAX_MODELS_PER_REPLICA)
    async def get_model(self, version: str) -> Any:
        """The predictor of ``version``, loaded once and kept (LRU) by Serve's model multiplexer."""
        return await self._load(version)

    async def model(self, version: str) -> Any:
        """`get_model` in a replica. Serve's local testing mode (Ray 2.60) has no replica context, which both the
        multiplexer and ``@serve.batch`` need, so there a plain LRU of the same size stands in (and requests run
        one by one, see `predict`)."""
        if _in_replica():
            return await self.get_model(version)
        if version in self._local_models:
            self._local_models.move_to_end(version)
            return self._local_models[version]
        pred = await self._load(version)
        self._local_models[version] = pred
        while len(self._local_models) > MAX_MODELS_PER_REPLICA:
            self._local_models.popitem(last=False)
        return pred

    async def describe(self, version: str) -> dict[str, Any]:
        """lookback, n_features and output names of ``version`` (loads it)."""
        pred = await self.model(version)
        return {"version": version, "lookback": pred.lookback, "n_features": pred.n_features,
                "outputs": list(pred.output_names), "backend": pred.backend}

    async def predict(self, version: str, windows: np.ndarray) -> dict[str, np.ndarray]:
        idle = self._in_flight == 0
        self._in_flight += 1
        try:
            if _in_replica() and not (idle and self.skip_idle_wait):
                out = await self._predict_batch((version, windows))
            else:  # idle (skip the wait) or local testing mode: no batching (see `model`)
                self.idle_runs += int(_in_replica())
                out = (await self._run_groups([(version, windows)]))[0]
        finally:
            self._in_flight -= 1
        if isinstance(out, BaseException):
            raise out
        return out

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _predict_batch(self, items: list[tuple[str, np.ndarray]]) -> list[dict[str, np.ndarray] | Exception]:
        return await self._run_groups(items)

    async def _run_groups(self, items: list[tuple[str, np.ndarray]]) -> list[dict[str, np.ndarray] | Exception]:
        """Stack the windows of each version into one predictor call, and split the outputs back per request."""
        results: list[dict[str, np.ndarray] | Exception] = [RuntimeError("not run")] * len(items)
        by_version: dict[str, list[int]] = {}
        for i, (v, _) in enumerate(items):
            by_version.setdefault(v, []).append(i)
        for version, idx in by_version.items():
            arrays = [np.asarray(items[i][1], dtype=np.float32) for i in idx]
            self._batch_log.append((version, len(idx), sum(a.shape[0] for a in arrays)))
            try:
                pred = await self.model(version)
                stacked = np.concatenate(arrays, axis=0) if len(arrays) > 1 else arrays[0]
                if stacked.shape[0] <= self.inline_max_rows:
                    out = pred.predict(stacked)
                else:
                    out = await asyncio.to_thread(pred.predict, stacked)
            except Exception as exc:  # one version's failure fails only its requests
                for i in idx:
                    results[i] = exc
                continue
            start = 0
            for i, a in zip(idx, arrays, strict=True):
                n = a.shape[0]
                results[i] = {k: v[start:start + n] for k, v in out.items()}
                start += n
        return results

    def batch_log(self) -> list[tuple[str, int, int]]:
        """(version, requests, rows) of each predictor call so far, oldest first (for tests and tuning)."""
        return list(self._batch_log)

    def stats(self) -> dict[str, int]:
        """Predictor calls so far and the requests among them that skipped the batch wait (found the replica idle)."""
        return {"predictor_calls": len(self._batch_log), "idle_runs": self.idle_runs}


def _in_replica() -> bool:
    try:
        serve.get_replica_context()
    except RayServeException:
        return False
    return True


# --- routing state --------------------------------------------------------------------------------------------------


def canary_bucket(request_id: str) -> float:
    """Deterministic bucket in [0, 100) of a request id: SHA-256, first 8 bytes big-endian / 2^64 * 100."""
    digest = hashlib.sha256(request_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 * 100.0


@dataclass
class RoutingConfig:
    """Routing and rollback settings; percentages in [0, 100], latencies in seconds."""

    champion: str
    challenger: str | None = None
    canary_percent: float = 0.0
    shadow: bool = False
    request_timeout_s: float = 2.0
    window_size: int = 200
    min_requests: int = 20
    max_error_rate: float = 0.05
    max_p99_latency_s: float = 0.5
    max_research_inflight: int = 64
    model_name: str = "forecaster"

    def __post_init__(self) -> None:
        if not self.champion:
            raise ValueError("champion: a version is required")
        if self.challenger == self.champion:
            raise ValueError("challenger: must differ from the champion")
        if not 0.0 <= self.canary_percent <= 100.0:
            raise ValueError(f"canary_percent: must be in [0, 100], got {self.canary_percent!r}")
        if not (math.isfinite(self.request_timeout_s) and self.request_timeout_s > 0):
            raise ValueError(f"request_timeout_s: must be > 0, got {self.request_timeout_s!r}")
        if self.window_size < 1 or not 1 <= self.min_requests <= self.window_size:
            raise ValueError("min_requests: need 1 <= min_requests <= window_size")
        if not 0.0 <= self.max_error_rate <= 1.0:
            raise ValueError(f"max_error_rate: must be in [0, 1], got {self.max_error_rate!r}")
        if not self.max_p99_latency_s > 0:
            raise ValueError(f"max_p99_latency_s: must be > 0, got {self.max_p99_latency_s!r}")
        if self.max_research_inflight < 1:
            raise ValueError("max_research_inflight: must be >= 1")


@dataclass
class RoutingState:
    """Champion/challenger assignment and the sliding window that drives automatic rollback (single event loop)."""

    config: RoutingConfig
    rolled_back: bool = False
    rollback_reason: str | None = None
    rollback_at: float | None = None
    _window: deque[tuple[bool, float]] = field(default_factory=deque)
    shadow_log: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=256))
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def challenger_active(self) -> bool:
        return self.config.challenger is not None and not self.rolled_back

    @property
    def canary_percent(self) -> float:
        return self.config.canary_percent if self.challenger_active else 0.0

    @property
    def shadow(self) -> bool:
        return self.config.shadow and self.challenger_active

    def assign(self, request_id: str) -> tuple[Literal["champion", "challenger"], str]:
        """(role, version) that answers ``request_id``; in shadow mode always the champion."""
        c = self.config
        if not self.shadow and c.challenger is not None and canary_bucket(request_id) < self.canary_percent:
            return "challenger", c.challenger
        return "champion", c.champion

    def count(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    def record_challenger(self, ok: bool, latency_s: float) -> None:
        """Add one challenger outcome; roll back when the window breaches a threshold."""
        self._window.append((bool(ok), float(latency_s)))
        while len(self._window) > self.config.window_size:
            self._window.popleft()
        if self.rolled_back or len(self._window) < self.config.min_requests:
            return
        err, p99 = self.window_stats()
        if err > self.config.max_error_rate:
            self._rollback(f"challenger error rate {err:.3f} > {self.config.max_error_rate:.3f} "
                           f"over the last {len(self._window)} requests")
        elif p99 > self.config.max_p99_latency_s:
            self._rollback(f"challenger p99 latency {p99 * 1e3:.1f} ms > {self.config.max_p99_latency_s * 1e3:.1f} "
                           f"ms over the last {len(self._window)} requests")

    def window_stats(self) -> tuple[float, float]:
        """(error rate, p99 latency in s) of the challenger window; (0, 0) when empty."""
        if not self._window:
            return 0.0, 0.0
        ok = np.array([o for o, _ in self._window])
        lat = np.array([t for _, t in self._window])
        return float(1.0 - ok.mean()), float(np.percentile(lat, 99))

    def _rollback(self, reason: str) -> None:
        self.rolled_back, self.rollback_reason, self.rollback_at = True, reason, time.time()
        log.warning("predict: rolled back to champion %s from challenger %s: %s",
                    self.config.champion, self.config.challenger, reason)

    def reset(self) -> None:
        """Re-enable the challenger and clear the window (an operator's decision, after a fix)."""
        self.rolled_back, self.rollback_reason, self.rollback_at = False, None, None
        self._window.clear()

    def status(self) -> dict[str, Any]:
        err, p99 = self.window_stats()
        c = self.config
        return {
            "champion": c.champion, "challenger": c.challenger, "canary_percent": self.canary_percent,
            "configured_canary_percent": c.canary_percent, "shadow": self.shadow, "configured_shadow": c.shadow,
            "rolled_back": self.rolled_back, "rollback_reason": self.rollback_reason, "rollback_at": self.rollback_at,
            "window": {"requests": len(self._window), "error_rate": err, "p99_latency_ms": p99 * 1e3,
                       "size": c.window_size, "min_requests": c.min_requests, "max_error_rate": c.max_error_rate,
                       "max_p99_latency_ms": c.max_p99_latency_s * 1e3},
            "counts": dict(self.counts), "shadow_recent": list(self.shadow_log)[-20:],
            "config": asdict(c),
        }


# --- request validation ---------------------------------------------------------------------------------------------


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    windows: list[list[list[float | None]]] = Field(
        min_length=1, max_length=MAX_WINDOWS, description="windows, each [lookback][n_features], time ascending")
    version: str | None = Field(None, description="pin a version (bypasses the canary split)")
    priority: Literal["live", "research"] = "research"
    request_id: str | None = Field(None, max_length=200)


class PredictResponse(BaseModel):
    request_id: str
    model: str
    version: str
    role: str
    outputs: dict[str, list[Any]]
    latency_ms: float


def validate_windows(windows: Sequence[Any], lookback: int, n_features: int, max_errors: int = 10) -> np.ndarray:
    """(n, lookback, n_features) float32, or `BadRequest` naming each bad ``windows.<i>`` (shape, non-finite).

    ``windows`` is nested lists (JSON), or a float32 array (n, lookback x n_features) of flat windows (gRPC)."""
    errors: list[tuple[str, str]] = []
    if isinstance(windows, np.ndarray):
        if windows.ndim != 2 or windows.shape[1] != lookback * n_features:
            raise BadRequest([("windows", f"expected {lookback} x {n_features} = {lookback * n_features} values "
                                          f"per window, got {windows.shape[-1] if windows.ndim else 0}")])
        windows = windows.reshape(len(windows), lookback, n_features)
    for i, w in enumerate(windows):
        if len(w) != lookback:
            errors.append((f"windows.{i}", f"expected {lookback} rows (lookback), got {len(w)}"))
        else:
            bad = next((t for t, row in enumerate(w) if len(row) != n_features), None)
            if bad is not None:
                errors.append((f"windows.{i}.{bad}", f"expected {n_features} features, got {len(w[bad])}"))
        if len(errors) >= max_errors:
            break
    if errors:
        raise BadRequest(errors)
    arr = np.asarray(windows, dtype=np.float64)  # JSON null -> NaN
    finite = np.isfinite(arr)
    if not finite.all():
        for i in np.flatnonzero(~finite.reshape(len(arr), -1).all(axis=1))[:max_errors]:
            t, f = (int(j) for j in np.argwhere(~finite[i])[0])
            errors.append((f"windows.{i}", f"non-finite or missing value (NaN, inf or null) at [{t}][{f}]"))
        raise BadRequest(errors)
    if np.abs(arr).max(initial=0.0) > np.finfo(np.float32).max:
        raise BadRequest([("windows", "value too large for float32")])
    return arr.astype(np.float32)


def _jsonable(x: np.ndarray) -> list[Any]:
    return [None if isinstance(v, float) and not math.isfinite(v) else v for v in x.tolist()] if x.ndim == 1 \
        else [_jsonable(r) for r in x]


# --- the router -----------------------------------------------------------------------------------------------------


class _Metrics:
    def __init__(self) -> None:
        self.requests = metrics.Counter("tradesys_predict_requests", "predict requests by model, version, outcome",
                                        tag_keys=("model", "version", "outcome"))
        self.latency = metrics.Histogram("tradesys_predict_latency_s", "predict latency in seconds (router)",
                                         boundaries=_LATENCY_BOUNDARIES, tag_keys=("model", "version"))
        self.errors = metrics.Counter("tradesys_predict_errors", "predict errors by model, version, kind",
                                      tag_keys=("model", "version", "kind"))


class _Service:
    """The router's logic: handles, routing state, shape cache, metrics."""

    def __init__(self, live: DeploymentHandle, research: DeploymentHandle, config: RoutingConfig) -> None:
        self.live, self.research, self.config = live, research, config
        self.state = RoutingState(config)
        self.metrics = _Metrics()
        self._shapes: dict[str, dict[str, Any]] = {}
        self._research_inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def _tags(self, version: str, **extra: str) -> dict[str, str]:
        return {"model": self.config.model_name, "version": version, **extra}

    def _outcome(self, version: str, outcome: str, latency_s: float | None = None) -> None:
        self.state.count(f"{version}:{outcome}")
        self.metrics.requests.inc(1.0, tags=self._tags(version, outcome=outcome))
        if latency_s is not None:
            self.metrics.latency.observe(latency_s, tags=self._tags(version))
        if outcome not in ("ok", "bad_request"):
            self.metrics.errors.inc(1.0, tags=self._tags(version, kind=outcome))

    async def describe(self, handle: DeploymentHandle, version: str, timeout: float) -> dict[str, Any]:
        if version not in self._shapes:
            try:
                resp = handle.options(multiplexed_model_id=version).describe.remote(version)
                self._shapes[version] = await asyncio.wait_for(_awaitable(resp), timeout)
            except LookupError as exc:
                raise StarletteHTTPException(404, [{"field": "version", "reason": str(exc)}]) from None
            except ValueError as exc:
                raise BadRequest.from_value_error(exc) from None
        return self._shapes[version]

    async def call(self, handle: DeploymentHandle, version: str, x: np.ndarray, timeout: float) -> dict[str, Any]:
        resp = handle.options(multiplexed_model_id=version).predict.remote(version, x)
        try:
            return await asyncio.wait_for(_awaitable(resp), timeout)
        except TimeoutError:
            resp.cancel()
            raise

    async def predict(self, req: PredictRequest, request_id: str, raw_outputs: bool = False) -> dict[str, Any]:
        """The answer to ``req``; ``raw_outputs``: outputs as arrays (gRPC), not JSON lists."""
        t0 = time.perf_counter()
        deadline = t0 + self.config.request_timeout_s
        research = req.priority == "research"
        if research and self._research_inflight >= self.config.max_research_inflight:
            raise StarletteHTTPException(429, f"research lane saturated ({self._research_inflight} in flight); "
                                              "retry later or use priority 'live' for trading")
        handle = self.research if research else self.live
        self._research_inflight += int(research)
        try:
            return await self._predict(req, request_id, handle, t0, deadline, raw_outputs)
        finally:
            self._research_inflight -= int(research)

    async def _predict(self, req: PredictRequest, request_id: str, handle: DeploymentHandle, t0: float,
                       deadline: float, raw_outputs: bool = False) -> dict[str, Any]:
        champion = self.config.champion
        if req.version is not None:
            role, version = "pinned", req.version
        else:
            role, version = self.state.assign(request_id)
        shape_version = version if role == "pinned" else champion  # the public contract is the champion's shape
        try:
            shape = await self.describe(handle, shape_version, max(deadline - time.perf_counter(), 1e-3))
        except TimeoutError:
            self._outcome(shape_version, "timeout")
            raise StarletteHTTPException(504, "model did not load within the request timeout") from None
        try:
            x = validate_windows(req.windows, shape["lookback"], shape["n_features"])
        except BadRequest:
            self._outcome(version, "bad_request")
            raise
        out: dict[str, Any] | None = None
        if role == "challenger":
            ts = time.perf_counter()
            try:
                out = await self.call(handle, version, x, max(deadline - ts, 1e-3))
                lat = time.perf_counter() - ts
                self.state.record_challenger(True, lat)
                self._outcome(version, "ok", lat)
            except Exception as exc:  # a failing challenger is answered by the champion
                lat = time.perf_counter() - ts
                self.state.record_challenger(False, lat)
                kind = "timeout" if isinstance(exc, TimeoutError) else "error"
                self._outcome(version, kind, lat)
                log.warning("predict: challenger %s failed (%s: %s); answering with champion %s",
                            version, type(exc).__name__, exc, champion)
                role, version = "champion_fallback", champion
        if out is None:
            ts = time.perf_counter()
            try:
                out = await self.call(handle, version, x, max(deadline - ts, 1e-3))
            except TimeoutError:
                self._outcome(version, "timeout", time.perf_counter() - ts)
                raise StarletteHTTPException(
                    504, f"prediction did not finish within {self.config.request_timeout_s:g} s") from None
            except LookupError as exc:
                self._outcome(version, "error")
                raise StarletteHTTPException(404, [{"field": "version", "reason": str(exc)}]) from None
            except Exception:
                self._outcome(version, "error", time.perf_counter() - ts)
                raise
            self._outcome(version, "ok", time.perf_counter() - ts)
            if role == "champion" and self.state.shadow:
                self._spawn(self._shadow(handle, x, out, request_id))
        latency = time.perf_counter() - t0
        return {"request_id": request_id, "model": self.config.model_name, "version": version, "role": role,
                "outputs": out if raw_outputs else {k: _jsonable(np.asarray(v)) for k, v in out.items()},
                "latency_ms": latency * 1e3}

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _shadow(self, handle: DeploymentHandle, x: np.ndarray, ref: dict[str, Any], request_id: str) -> None:
        """Score ``x`` on the challenger (own deadline, same lane) and record its difference from the champion's
        answer ``ref``; the client already has ``ref``."""
        challenger = self.config.challenger
        assert challenger is not None
        ts = time.perf_counter()
        rec: dict[str, Any] = {"request_id": request_id, "version": challenger}
        try:
            got = await self.call(handle, challenger, x, self.config.request_timeout_s)
            lat = time.perf_counter() - ts
            rec.update(ok=True, latency_ms=lat * 1e3, max_abs_diff={
                k: float(np.max(np.abs(np.asarray(got[k], np.float64) - np.asarray(ref[k], np.float64))))
                for k in ref if k in got})
            self.state.record_challenger(True, lat)
            self._outcome(challenger, "ok", lat)
        except Exception as exc:
            lat = time.perf_counter() - ts
            rec.update(ok=False, latency_ms=lat * 1e3, error=f"{type(exc).__name__}: {exc}"[:300])
            self.state.record_challenger(False, lat)
            self._outcome(challenger, "timeout" if isinstance(exc, TimeoutError) else "error", lat)
        self.state.shadow_log.append(rec)
        log.info("predict shadow: %s", rec)


async def _awaitable(resp: Any) -> Any:
    return await resp


def predict_access(api_key: str | SecretStr, access: AccessSettings | None = None) -> AccessControl:
    """The predict app's keys: the bootstrap key (admin) and, with ``access.keys_url``, the key store's keys
    (re-read every ``keys_refresh_s``), with their rate limits; the same model as the main API."""
    from tradesys.serve.keystore import MEMORY_URL, KeyStore

    key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)
    if not key.get_secret_value().strip():
        raise RuntimeError("api_key: the API key is empty")
    acc = access or AccessSettings()
    return AccessControl(key, acc, KeyStore(acc.keys_url or MEMORY_URL))


def predict_router(live: DeploymentHandle, research: DeploymentHandle | None = None, *, config: RoutingConfig,
                   api_key: str | SecretStr, access: AccessSettings | None = None,
                   control: AccessControl | None = None) -> APIRouter:
    """``POST /v1/predict`` and ``GET /v1/predict/status`` over two `ModelServer` handles (research defaults to live).

    Both routes need a ``read`` key (`predict_access`: the bootstrap ``api_key`` or a key store key per ``access``;
    or the given ``control``). The router's `RoutingState` is at ``router.predict_state`` and its `AccessControl` at
    ``router.access_control`` (for operators' tooling and tests; `PredictRouter` puts its `AccessGate` in front).
    """
    control = control if control is not None else predict_access(api_key, access)
    svc = _Service(live, research if research is not None else live, config)
    auth = [Depends(require("read", control))]
    errors: dict[int | str, dict[str, Any]] = {
        400: {"model": ErrorBody, "description": "a request body that does not parse (malformed JSON)"},
        401: {"model": ErrorBody, "description": "missing or wrong API key"},
        403: {"model": ErrorBody, "description": "the key's role is below the route's (x-tradesys-role)"},
        404: {"model": ErrorBody, "description": "unknown version"},
        422: {"model": ErrorBody, "description": "bad windows: detail lists field and reason"},
        429: {"model": ErrorBody, "description": "research lane saturated, or the key's rate limit is exhausted "
              "(then with Retry-After)"},
        504: {"model": ErrorBody, "description": "prediction timed out"},
    }
    router = APIRouter(tags=["predict"])

    @router.post("/v1/predict", response_model=PredictResponse, dependencies=auth, responses=errors)
    async def predict(
        req: PredictRequest,
        x_request_id: Annotated[str | None, Header(max_length=200)] = None,
    ) -> dict[str, Any]:
        """Score windows with the champion, the canary challenger, or a pinned version (module docstring)."""
        rid = x_request_id or req.request_id or uuid.uuid4().hex
        return await svc.predict(req, rid)

    @router.get("/v1/predict/status", dependencies=auth, responses=errors)
    async def status() -> dict[str, Any]:
        """Routing state: champion, challenger, canary share, shadow, rollback and its reason, window stats."""
        return svc.state.status()

    router.predict_state = svc.state  # type: ignore[attr-defined]
    router.access_control = control  # type: ignore[attr-defined]
    router.predict_service = svc  # type: ignore[attr-defined]  # the gRPC ingress answers through it
    return router


@serve.deployment(name="PredictRouter", num_replicas=1, max_ongoing_requests=256, ray_actor_options={"num_cpus": 0})
@serve.ingress()
class PredictRouter:
    """The ingress: a FastAPI app with `predict_router` built inside the replica (the handles are bound args)."""

    def __init__(self, live: DeploymentHandle, research: DeploymentHandle, config: dict[str, Any],
                 api_key: SecretStr | None = None, api_key_env: str = API_KEY_ENV,
                 access: AccessSettings | None = None) -> None:
        self._live, self._research = live, research
        self._config = RoutingConfig(**config)
        self._key = api_key if api_key is not None else load_api_key(api_key_env)
        self._access = access

    def __serve_build_asgi_app__(self) -> FastAPI:
        app = FastAPI(title="tradesys predict", version="1")
        install_error_handlers(app)
        app.add_middleware(BodyLimit, limits=ServeLimits())  # a body over the cap is a 413 before it is read whole
        router = predict_router(self._live, self._research, config=self._config, api_key=self._key,
                                access=getattr(self, "_access", None))
        app.add_middleware(AccessGate, control=router.access_control)  # type: ignore[attr-defined]  # 401/429 first
        acc = getattr(self, "_access", None)
        if acc is not None and acc.access_log:
            app.add_middleware(AccessLog, path=acc.access_log)  # outermost: every answer, 401s included, is logged
        self._service = router.predict_service  # type: ignore[attr-defined]
        self._control = getattr(router, "access_control", None)  # the gRPC ingress admits the same keys
        app.include_router(router)
        document_roles(app, check_routes(app.routes))  # x-tradesys-role on each operation
        return app

    async def Predict(self, request: Any, grpc_context: Any) -> Any:
        """gRPC ingress (`tradesys.serve.grpc_predict`): the same service as ``POST /v1/predict``, key in metadata."""
        from tradesys.serve.grpc_predict import serve_predict

        if getattr(self, "_service", None) is None:  # the ASGI app (and its service) is normally built at start
            self.__serve_build_asgi_app__()
        return await serve_predict(self._service, self._key.get_secret_value(), request, grpc_context,
                                   getattr(self, "_control", None))


def build_predict_app(
    model_dir: str | Path,
    *,
    champion: str,
    challenger: str | None = None,
    canary_percent: float = 0.0,
    shadow: bool = False,
    backend: str = "auto",
    max_batch_size: int = 32,
    batch_wait_timeout_s: float = 0.005,
    live_replicas: int = 1,
    research_replicas: int = 1,
    live_max_ongoing_requests: int = 64,
    research_max_ongoing_requests: int = 64,
    num_cpus: float = 1.0,
    api_key_env: str = API_KEY_ENV,
    skip_idle_wait: bool = True,
    inline_max_rows: int = 0,
    access: AccessSettings | None = None,
    **routing: Any,
) -> serve.Application:
    """The Serve application: `PredictRouter` over ``ModelServerLive`` and ``ModelServerResearch``.

    ``routing``: further `RoutingConfig` fields (request_timeout_s, window_size, min_requests, max_error_rate,
    max_p99_latency_s, max_research_inflight, model_name). ``skip_idle_wait``: a request that finds its replica idle
    skips the ``@serve.batch`` wait (False: every request waits up to ``batch_wait_timeout_s``, the old behaviour).
    ``inline_max_rows``: predictor calls of at most this many rows run on the replica's event loop, not a thread.
    ``access``: the key store, rate limits and refresh interval (`tradesys.serve.access.AccessSettings`); None: the
    configuration's ``serve`` section (``serve.keys_url``, default ``sqlite:///runs/api_keys.db``), as `tradesys serve`
    uses it, so keys made with `tradesys keys create` work on both APIs.
    Checks the versions and the key here, in the driver.
    """
    versions = list_versions(model_dir)
    for name, v in (("champion", champion), ("challenger", challenger)):
        if v is not None and v not in versions:
            raise ValueError(f"{name}: version {v!r} not in {str(model_dir)!r} (have {versions})")
    config = RoutingConfig(champion=champion, challenger=challenger, canary_percent=canary_percent, shadow=shadow,
                           **routing)
    key = load_api_key(api_key_env)
    opts = {"model_dir": str(Path(model_dir).resolve()), "backend": backend, "max_batch_size": max_batch_size,
            "batch_wait_timeout_s": batch_wait_timeout_s, "skip_idle_wait": skip_idle_wait,
            "inline_max_rows": inline_max_rows,
            "preload": [v for v in (champion, challenger) if v is not None]}
    live = ModelServer.options(name="ModelServerLive", num_replicas=live_replicas,
                               max_ongoing_requests=live_max_ongoing_requests,
                               ray_actor_options={"num_cpus": num_cpus}).bind(**opts)
    research = ModelServer.options(name="ModelServerResearch", num_replicas=research_replicas,
                                   max_ongoing_requests=research_max_ongoing_requests,
                                   ray_actor_options={"num_cpus": num_cpus}).bind(**opts)
    acc = access if access is not None else _configured_access()
    if acc.keys_url is not None:  # the replica's working directory need not be ours
        from tradesys.ledger.sqlite import absolute_sqlite_url

        acc = acc.model_copy(update={"keys_url": absolute_sqlite_url(acc.keys_url)})
    return PredictRouter.bind(live, research, asdict(config), key, api_key_env, acc)


def _configured_access() -> AccessSettings:
    """The access settings of the configuration's ``serve`` section (key store, rate limits, access log)."""
    from tradesys.config import load_config

    s = load_config().serve
    return AccessSettings(keys_url=s.keys_url, keys_refresh_s=s.keys_refresh_s, rate_limit_per_s=s.rate_limit_per_s,
                          rate_limit_burst=s.rate_limit_burst, access_log=s.access_log)
