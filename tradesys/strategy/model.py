"""A strategy that trades on a forecasting model's predicted return and volatility, in backtest and live alike.

Why one class for both: the backtest and the live loop must trade the same way; only where the forecasts come from
differs, so that is a `Forecaster` handed in: `LocalForecaster` (an exported model in this process: backtests,
notebooks), `ServeForecaster` (the `ModelServer` Serve deployment by handle, or ``POST /v1/predict`` over HTTP), or,
with ``registry_name``, `tradesys.strategy.champion.ChampionForecaster` (the registry's champion, in process or by
handle, followed as the alias moves; its standardizer comes with it and replaces the strategy's at a switch).

Features (the training convention of `tradesys.train.data`): per symbol the strategy keeps the last
``lookback + 22`` closes, takes their simple returns, builds `default_features` (r, |r|, trailing 5- and 22-bar
realised vol; all causal) and standardises the last ``lookback`` rows with the training run's standardizer.json
(``(x - mean) / std`` in float32, as `Standardizer.transform`). A symbol with fewer closes is in warm-up: target 0.
The windows of every symbol ready at a bar go to the forecaster in one batched call.

Sizing rule: with ``ret_hat = ret * ret_scale`` (next-bar simple return) and ``vol_hat = vol * vol_scale``
(per-bar RMS return over the model's vol horizon) from the standardizer's target scales,
``direction = sign(ret_hat)`` when ``|ret_hat| >= min_edge * vol_hat``, else 0, and
``weight = direction * min(max_weight, target_vol / (vol_hat * sqrt(bars_per_year) * sqrt(N)))`` (N symbols;
0 for a short when ``allow_short`` is off): the trend strategy's volatility targeting with the model's direction and
volatility. Orders follow the shared band/rebalance rule (`tradesys.strategy.sizing`).

Failures: a forecast that does not arrive (timeout, transport or server error: `ForecastUnavailable`) makes the
strategy hold every position for that bar (no orders) and count the miss by reason (`stats`); the loop goes on.
A non-finite forecast for one symbol holds that symbol only.

Drift hand-off: an optional ``observer`` gets, once per bar, a `BarObservation` of the previous bar's forecasts: the
raw feature row each was made from (the last row of its window, before standardising), the forecast in return units
and the return realised since (the close-to-close return over the bar that followed). The row is complete only one
bar later, so it is handed over then (`flush` hands over the last one with realised NaN). The strategy never waits
on the observer; the live loop's StrategyActor passes one that buffers and forwards to the DriftMonitor.

Restarts: `warm_up` rebuilds the close history from the bars before a resume point (no forecasts), and a bar at or
before the last one seen (a retried step) is not appended again. With `limits` (the RiskConfig) orders are sized
within the pre-trade limits, as the trend strategy's are.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa

from tradesys.config import ExecutionConfig, RiskConfig, StrategyConfig
from tradesys.core.orders import Order
from tradesys.core.portfolio import PortfolioSnapshot
from tradesys.core.schemas import batch_ts
from tradesys.strategy.base import CloseHistory
from tradesys.strategy.sizing import rebalance_order, scale_to_leverage, vol_target_weight
from tradesys.train.data import Standardizer, default_features

__all__ = [
    "FEATURE_NAMES",
    "N_FEATURES",
    "WARMUP_RETURNS",
    "BarObservation",
    "ForecastUnavailable",
    "Forecaster",
    "LocalForecaster",
    "ModelStrategy",
    "ServeForecaster",
    "load_standardizer",
]

log = logging.getLogger(__name__)

N_FEATURES = 4  # the columns of default_features
WARMUP_RETURNS = 22  # the longest trailing window of default_features (rv22)
FEATURE_NAMES = ("ret", "abs_ret", "rv5", "rv22")  # the columns of default_features, in order


@dataclass(frozen=True)
class BarObservation:
    """One bar's forecasts for the drift monitor: row i is symbol ``symbols[i]`` at bar ``ts``.

    ``features`` (n, 4): the raw `default_features` row (FEATURE_NAMES) the forecast was made from; ``predictions``
    (n, 2): predicted next-bar return and volatility in return units (``ret * ret_scale``, ``vol * vol_scale``; NaN
    when the bar's forecast did not arrive); ``realised`` (n,): the return over the next bar, ``close[next] /
    close[ts] - 1`` (NaN when the symbol had no next bar).
    """

    ts: int
    symbols: tuple[str, ...]
    features: np.ndarray
    predictions: np.ndarray
    realised: np.ndarray


class ForecastUnavailable(RuntimeError):
    """No forecast for this bar (timeout, transport or server error); ``reason`` is a short tag for the counters."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"forecast unavailable ({reason}){': ' + detail if detail else ''}")
        self.reason = reason


@runtime_checkable
class Forecaster(Protocol):
    """Scores standardised windows (n, lookback, n_features) float32 -> {"ret", "vol", ...: (n,) arrays}.

    Raises `ForecastUnavailable` when the forecast cannot be had in time; ``request_id`` identifies the bar
    (deterministic, so a served canary split sends a given bar to the same model every time).
    """

    lookback: int
    n_features: int

    def forecast(self, windows: np.ndarray, request_id: str) -> Mapping[str, np.ndarray]: ...


def load_standardizer(path: str | os.PathLike[str]) -> Standardizer:
    """The `Standardizer` of a training run from its standardizer.json (mean, std, ret_scale, vol_scale)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"strategy.standardizer_path: {str(p)!r} is not a file")
    try:
        raw = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"strategy.standardizer_path: {str(p)!r} is not JSON: {exc}") from exc
    missing = [k for k in ("mean", "std", "ret_scale", "vol_scale") if not isinstance(raw, dict) or k not in raw]
    if missing:
        raise ValueError(f"strategy.standardizer_path: {str(p)!r} lacks {', '.join(missing)}")
    mean = np.asarray(raw["mean"], dtype=np.float64)
    std = np.asarray(raw["std"], dtype=np.float64)
    if mean.ndim != 1 or mean.shape != std.shape or not (np.isfinite(mean).all() and np.isfinite(std).all()):
        raise ValueError(f"strategy.standardizer_path: mean and std must be finite lists of one length in {str(p)!r}")
    if not (std > 0).all():
        raise ValueError(f"strategy.standardizer_path: std must be > 0 in {str(p)!r}")
    scales = (float(raw["ret_scale"]), float(raw["vol_scale"]))
    if not all(math.isfinite(s) and s > 0 for s in scales):
        raise ValueError(f"strategy.standardizer_path: ret_scale and vol_scale must be > 0 in {str(p)!r}")
    return Standardizer(mean=mean, std=std, ret_scale=scales[0], vol_scale=scales[1], rows=np.empty(0, np.int64))


class LocalForecaster:
    """An exported model (or any `Predictor`) in this process: backtests and notebooks."""

    def __init__(self, model: Any, backend: str = "auto", **options: Any) -> None:
        from tradesys.train.inference import Predictor, load_predictor

        if isinstance(model, Predictor):
            self.predictor = model
        else:
            if not Path(model).is_file():
                raise ValueError(f"strategy.model_path: {str(model)!r} is not a file")
            self.predictor = load_predictor(model, backend, **options)  # type: ignore[arg-type]
        missing = {"ret", "vol"} - set(self.predictor.output_names)
        if missing:
            raise ValueError(f"strategy.model_path: the model has no {sorted(missing)} output "
                             f"(outputs {list(self.predictor.output_names)})")
        self.lookback = self.predictor.lookback
        self.n_features = self.predictor.n_features

    def forecast(self, windows: np.ndarray, request_id: str = "") -> Mapping[str, np.ndarray]:
        return self.predictor.predict(windows)


class ServeForecaster:
    """The served model: the `ModelServer` deployment by handle, or ``POST /v1/predict`` over HTTP.

    By handle (``url`` None): ``handle``, else ``serve.get_deployment_handle(deployment, app)``; ``version`` is the
    model version (a folder of the server's model_dir). Construction asks the deployment to describe the version,
    which loads it and fixes lookback/n_features. The default deployment, ``ModelServerLive``, is the live lane.
    Over HTTP: ``priority = "live"``, the API key from the environment variable ``api_key_env`` (read here, never
    logged), ``version`` optional (pins it; else the router's champion/canary split by request id), and
    ``lookback``/``n_features`` given (the API does not describe the model).
    ``timeout_s`` bounds each forecast: late or failed calls raise `ForecastUnavailable` (the request is cancelled).
    """

    def __init__(
        self,
        *,
        timeout_s: float,
        handle: Any = None,
        app: str | None = None,
        deployment: str = "ModelServerLive",
        version: str | None = None,
        url: str | None = None,
        lookback: int | None = None,
        n_features: int = N_FEATURES,
        api_key_env: str = "TRADESYS_API_KEY",
        setup_timeout_s: float = 120.0,
    ) -> None:
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"strategy.timeout_ms: must be > 0, got {timeout_s * 1e3!r} ms")
        self.timeout_s = float(timeout_s)
        self.version = version
        self.url = url
        self.calls = 0
        self._handle: Any = None
        self._client: Any = None
        if url is not None:
            if lookback is None:
                raise ValueError("strategy.lookback: required with serve_url (the HTTP API does not describe it)")
            from pydantic import SecretStr

            key = os.environ.get(api_key_env, "")
            if not key.strip():
                raise ValueError(f"strategy.api_key_env: ${api_key_env} is not set (the API key for {url})")
            import httpx

            self._key = SecretStr(key)
            self._client = httpx.Client(timeout=self.timeout_s)
            self.lookback, self.n_features = int(lookback), int(n_features)
            return
        if version is None:
            raise ValueError("strategy.model_version: required to call the ModelServer deployment by handle")
        if handle is None:
            from ray import serve

            try:
                handle = serve.get_deployment_handle(deployment, app_name=app)
            except Exception as exc:
                raise ValueError(f"strategy.serve_deployment: no deployment {deployment!r} in Serve application "
                                 f"{app!r}: {type(exc).__name__}: {exc}") from exc
        self._handle = handle.options(multiplexed_model_id=version)
        try:
            info = self._handle.describe.remote(version).result(timeout_s=setup_timeout_s)
        except Exception as exc:
            raise ValueError(f"strategy.model_version: the deployment could not describe version {version!r}: "
                             f"{type(exc).__name__}: {exc}") from exc
        missing = {"ret", "vol"} - set(info["outputs"])
        if missing:
            raise ValueError(f"strategy.model_version: version {version!r} has no {sorted(missing)} output")
        self.lookback, self.n_features = int(info["lookback"]), int(info["n_features"])
        if lookback is not None and int(lookback) != self.lookback:
            raise ValueError(f"strategy.lookback: {lookback} but served version {version!r} has {self.lookback}")

    def forecast(self, windows: np.ndarray, request_id: str = "") -> Mapping[str, np.ndarray]:
        self.calls += 1
        if self._client is not None:
            return self._forecast_http(windows, request_id)
        resp = self._handle.predict.remote(self.version, windows)
        try:
            out = resp.result(timeout_s=self.timeout_s)
        except TimeoutError:
            resp.cancel()
            raise ForecastUnavailable("timeout", f"no answer within {self.timeout_s * 1e3:g} ms") from None
        except Exception as exc:  # a replica or transport failure: hold, never crash the loop
            raise ForecastUnavailable("error", f"{type(exc).__name__}: {exc}"[:300]) from exc
        return {k: np.asarray(v) for k, v in out.items()}

    def _forecast_http(self, windows: np.ndarray, request_id: str) -> Mapping[str, np.ndarray]:
        import httpx

        body: dict[str, Any] = {"windows": windows.tolist(), "priority": "live"}
        if request_id:
            body["request_id"] = request_id
        if self.version is not None:
            body["version"] = self.version
        try:
            r = self._client.post(self.url, json=body, headers={"X-API-Key": self._key.get_secret_value()})
        except httpx.TimeoutException:
            raise ForecastUnavailable("timeout", f"no answer within {self.timeout_s * 1e3:g} ms") from None
        except httpx.HTTPError as exc:
            raise ForecastUnavailable("error", f"{type(exc).__name__}: {exc}"[:300]) from exc
        if r.status_code == 504:
            raise ForecastUnavailable("timeout", "the server's deadline passed (504)")
        if r.status_code != 200:
            raise ForecastUnavailable(f"http_{r.status_code}", r.text[:300])
        try:
            outputs = r.json()["outputs"]
            return {k: np.array([np.nan if x is None else x for x in outputs[k]], dtype=np.float32)
                    for k in ("ret", "vol")}
        except (ValueError, KeyError, TypeError) as exc:
            raise ForecastUnavailable("bad_response", f"{type(exc).__name__}: {exc}"[:300]) from exc

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


class ModelStrategy:
    """Targets from a forecaster's predicted return and volatility; see the module docstring for the rule."""

    execution: ExecutionConfig | None = None  # set by make_strategy: the orders' execution algorithm

    def __init__(
        self,
        cfg: StrategyConfig,
        n_symbols: int,
        forecaster: Forecaster,
        standardizer: Standardizer,
        bars_per_year: float = 252.0,
        strategy_id: str = "model",
        wall_clock: Callable[[], int] = time.time_ns,
        observer: Callable[[BarObservation], None] | None = None,
        limits: RiskConfig | None = None,
    ) -> None:
        if n_symbols <= 0:
            raise ValueError(f"n_symbols: must be > 0, got {n_symbols}")
        if not bars_per_year > 0:
            raise ValueError(f"bars_per_year: must be > 0, got {bars_per_year}")
        if standardizer.mean.shape != (N_FEATURES,):
            raise ValueError(f"strategy.standardizer_path: {standardizer.mean.shape[0]} features, expected "
                             f"{N_FEATURES} (default_features)")
        if forecaster.n_features != N_FEATURES:
            raise ValueError(f"strategy.model_path: the model takes {forecaster.n_features} features; the strategy "
                             f"builds the {N_FEATURES} of tradesys.train.data.default_features")
        if cfg.lookback is not None and cfg.lookback != forecaster.lookback:
            raise ValueError(f"strategy.lookback: {cfg.lookback}, but the model's lookback is {forecaster.lookback}")
        self.cfg = cfg
        self.n_symbols = n_symbols
        self.forecaster = forecaster
        self.standardizer = standardizer
        self.bars_per_year = float(bars_per_year)
        self.strategy_id = strategy_id
        self.lookback = int(forecaster.lookback)
        self.history = self.lookback + WARMUP_RETURNS  # closes kept per symbol
        self._mean32 = standardizer.mean.astype(np.float32)
        self._std32 = standardizer.std.astype(np.float32)
        self._history = CloseHistory(self.history)
        self._closes = self._history.closes
        self.limits = limits
        self._wall = wall_clock
        self.bars = 0
        self.forecast_calls = 0
        self.misses: Counter[str] = Counter()
        self.non_finite = 0
        self.last_weights: dict[str, float] = {}  # the targets of the last bar (symbols in warm-up: 0)
        self.observer = observer  # drift hand-off (module docstring); None: nothing is kept
        self._pending: tuple[int, list[str], np.ndarray, np.ndarray, np.ndarray] | None = None

    @classmethod
    def from_config(
        cls, cfg: StrategyConfig, n_symbols: int, bars_per_year: float = 252.0, limits: RiskConfig | None = None,
        champion_version: int | None = None,
    ) -> ModelStrategy:
        """Build the forecaster the config names (local model file, the registry's champion in process or by Serve
        handle, Serve handle or HTTP URL) and the strategy. ``champion_version``: with ``registry_name``, the version
        a restarted run recorded last (tradesys.strategy.champion); None: the champion now."""
        if cfg.registry_name is not None:
            champ = _champion_forecaster(cfg, champion_version)
            return cls(cfg, n_symbols, champ, champ.standardizer, bars_per_year, limits=limits)
        if cfg.standardizer_path is None:
            raise ValueError("strategy.standardizer_path: required for name = 'model'")
        scaler = load_standardizer(cfg.standardizer_path)
        forecaster: Forecaster
        if cfg.forecaster == "local":
            if cfg.model_path is None:
                raise ValueError("strategy.model_path: required with forecaster = 'local'")
            forecaster = LocalForecaster(cfg.model_path, cfg.model_backend)
        else:
            forecaster = ServeForecaster(
                timeout_s=cfg.timeout_ms / 1e3, app=cfg.serve_app, deployment=cfg.serve_deployment,
                version=cfg.model_version, url=cfg.serve_url, lookback=cfg.lookback,
                n_features=int(scaler.mean.shape[0]), api_key_env=cfg.api_key_env,
            )
        return cls(cfg, n_symbols, forecaster, scaler, bars_per_year, limits=limits)

    def _set_standardizer(self, standardizer: Standardizer) -> None:
        """A new champion's standardizer (same feature count: the forecaster checked); used from this bar on."""
        self.standardizer = standardizer
        self._mean32 = standardizer.mean.astype(np.float32)
        self._std32 = standardizer.std.astype(np.float32)

    def window(self, closes: np.ndarray) -> np.ndarray:
        """The standardised (lookback, n_features) float32 window at the last of `closes` (oldest first)."""
        return self._standardise(self._raw_window(closes))

    def _raw_window(self, closes: np.ndarray) -> np.ndarray:
        c = np.asarray(closes, dtype=np.float64)[-self.history :]
        if c.shape[0] < self.history:
            raise ValueError(f"closes: need {self.history} closes (lookback + {WARMUP_RETURNS}), got {c.shape[0]}")
        return default_features(c[1:] / c[:-1] - 1.0).to_numpy()[-self.lookback :]

    def _standardise(self, feats: np.ndarray) -> np.ndarray:
        return ((feats.astype(np.float32) - self._mean32) / self._std32).astype(np.float32)

    def _hand_over(self, next_close: Mapping[str, float]) -> None:
        """Complete the pending bar's rows with the returns realised since and give them to the observer."""
        if self._pending is None or self.observer is None:
            return
        ts, syms, feats, preds, px = self._pending
        self._pending = None
        nxt = np.array([next_close.get(s, math.nan) for s in syms], dtype=np.float64)
        self.observer(BarObservation(ts, tuple(syms), feats, preds, nxt / px - 1.0))

    def flush(self) -> None:
        """Hand over the last bar's forecasts (realised NaN: its next bar has not come); call at the end of a run."""
        self._hand_over({})

    def weights_from_forecast(self, ret: np.ndarray, vol: np.ndarray) -> np.ndarray:
        """Target weights for model outputs in the model's scaled units; NaN where the forecast is not finite."""
        ret_hat = np.asarray(ret, dtype=np.float64) * self.standardizer.ret_scale
        vol_hat = np.asarray(vol, dtype=np.float64) * self.standardizer.vol_scale
        out = np.full(ret_hat.shape, np.nan)
        for i, (r, v) in enumerate(zip(ret_hat, vol_hat, strict=True)):
            if not (math.isfinite(r) and math.isfinite(v)):
                continue
            direction = (1.0 if r > 0 else -1.0 if r < 0 else 0.0) if abs(r) >= self.cfg.min_edge * v else 0.0
            out[i] = vol_target_weight(direction, v * math.sqrt(self.bars_per_year), self.cfg, self.n_symbols)
        return out

    def stats(self) -> dict[str, Any]:
        """Bars seen, forecast calls, misses (bars held) by reason, symbols held for a non-finite forecast."""
        extra = getattr(self.forecaster, "stats", None)
        return {"bars": self.bars, "forecast_calls": self.forecast_calls, "misses": sum(self.misses.values()),
                "misses_by_reason": dict(self.misses), "non_finite": self.non_finite,
                **(extra() if callable(extra) else {})}

    def warm_up(self, batches: Iterable[pa.RecordBatch]) -> int:
        """Rebuild the close history from the bars up to a resume point (no forecasts); return the bars taken."""
        return self._history.warm_up(batches)

    def on_bars(
        self, bars: pa.RecordBatch, book: PortfolioSnapshot, working: Mapping[str, float]
    ) -> list[Order]:
        if bars.num_rows == 0:
            return []
        self.bars += 1
        ts = batch_ts(bars)
        refresh = getattr(self.forecaster, "refresh", None)  # a champion-following forecaster may switch here
        if refresh is not None and (scaler := refresh(self.bars, ts)) is not None:
            self._set_standardizer(scaler)
        rows = self._history.observe(bars)
        weights = {sym: 0.0 for sym, _ in rows}  # warm-up: flat
        if self.observer is not None:
            self._hand_over(dict(rows))
        ready = [sym for sym, _ in rows if len(self._closes[sym]) == self.history]
        if ready:
            raw = [self._raw_window(np.fromiter(self._closes[s], float, self.history)) for s in ready]
            x = np.stack([self._standardise(f) for f in raw])
            self.forecast_calls += 1
            if self.observer is not None:  # completed (realised) at the next bar; NaN forecasts unless one arrives
                px = np.array([self._closes[s][-1] for s in ready], dtype=np.float64)
                self._pending = (ts, ready, np.stack([f[-1] for f in raw]), np.full((len(ready), 2), np.nan), px)
            try:
                out = self.forecaster.forecast(x, f"{self.strategy_id}-{ts}")
            except ForecastUnavailable as exc:
                self.misses[exc.reason] += 1
                self.last_weights = {}
                n = sum(self.misses.values())
                if n == 1 or n % 100 == 0:
                    log.warning("%s: holding positions at %d: %s (%d bars held so far)", self.strategy_id, ts, exc, n)
                return []
            w = self.weights_from_forecast(out["ret"], out["vol"])
            if self._pending is not None:
                self._pending[3][:, 0] = np.asarray(out["ret"], dtype=np.float64) * self.standardizer.ret_scale
                self._pending[3][:, 1] = np.asarray(out["vol"], dtype=np.float64) * self.standardizer.vol_scale
            for sym, wi in zip(ready, w, strict=True):
                weights[sym] = float(wi)
        self.last_weights = weights
        weights = scale_to_leverage(weights, self.limits)
        now = self._wall()
        orders: list[Order] = []
        for sym, px in rows:
            w_sym = weights[sym]
            if math.isnan(w_sym):
                self.non_finite += 1
                continue
            order = rebalance_order(self.cfg, self.strategy_id, ts, sym, px, w_sym, book, working, now, self.limits,
                                    self.execution)
            if order is not None:
                orders.append(order)
        return orders


def _champion_forecaster(cfg: StrategyConfig, start_version: int | None) -> Any:
    """The registry's champion, scored in this process (``forecaster = "local"``) or by the Serve deployment
    pinned to the champion's version (``"serve"``); see tradesys.strategy.champion."""
    from tradesys.strategy.champion import ChampionForecaster, RegistryChampions, model_file

    uri = cfg.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if not uri:
        raise ValueError("strategy.mlflow_uri: required with registry_name ($MLFLOW_TRACKING_URI is not set either)")
    assert cfg.registry_name is not None
    source = RegistryChampions(cfg.registry_name, uri)

    def build(version: int, folder: Path) -> Forecaster:
        if cfg.forecaster == "local":
            return LocalForecaster(model_file(folder), cfg.model_backend)
        return ServeForecaster(timeout_s=cfg.timeout_ms / 1e3, app=cfg.serve_app, deployment=cfg.serve_deployment,
                               version=str(version), lookback=cfg.lookback)

    return ChampionForecaster(source, build, check_every_bars=cfg.champion_check_bars, start_version=start_version)
