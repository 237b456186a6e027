"""The model strategy's forecaster that follows the registry's ``champion`` alias (docs/inference.md, "In the loop").

Why: the live loop should score the model in its own process (ONNX Runtime, about 0.1 ms per bar) rather than pay a
Serve round trip per bar, and still pick up a newly promoted model without a restart. `ChampionForecaster` holds
the champion's predictor and standardizer, asks the registry where the alias points every ``check_every_bars`` bars
(one MLflow lookup, tens of ms; the model files are fetched only when the version changes), and switches between bars.

Off the step path (issue 16): the lookup, and the fetch and build of a new version, run on a background thread
started on the check bar, while that bar is scored as usual; the answer is applied at the start of the *next* bar
(joining the thread there, which waits only when a lookup takes longer than a step). So the switch bar is fixed,
one bar after the check bar, whatever the thread's timing: a backtest, a live run and a rerun switch on the same bar,
and the event records it.

What a switch does: the new version's files (``exports/model.onnx`` or ``model.pt``, ``standardizer.json``) are
fetched into ``cache_dir/<version>/``, the scorer is rebuilt (`build`: in process, or the Serve deployment pinned to
that version: the same champion either way, so both paths give the same forecasts), and ``on_change`` gets one
``model_champion`` event with the old and new versions and the bar (the live loop writes it to the ledger's
audit log). A champion with another lookback, feature count or without ``ret``/``vol`` outputs cannot be scored
on the strategy's windows: it is refused (one ``model_champion_refused`` event per version) and the old one stays.
A failed lookup (registry down) keeps the current version and is counted; the loop goes on.

Restarts: the version is part of the record. A fresh run records its first version at its first bar (old None);
a restarted or resumed strategy is built with ``start_version`` = the last recorded version (the StrategyActor
reads it from the ledger), so the bars it replays or retries are scored by the version that scored them, and a
champion that moved while the run was down is picked up one bar after the first check after the resume, with its own
event. Bars are counted from the (re)start, so a moved alias is seen at most ``check_every_bars`` + 1 bars late.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tradesys.train.data import Standardizer

__all__ = ["CHAMPION_EVENT", "REFUSED_EVENT", "ChampionForecaster", "ChampionSource", "RegistryChampions"]

log = logging.getLogger(__name__)

CHAMPION_EVENT = "model_champion"
REFUSED_EVENT = "model_champion_refused"


class ChampionSource(Protocol):
    """Where the champion lives: the alias's version now, and a version's files in a local folder."""

    name: str

    def current(self) -> int | None: ...

    def fetch(self, version: int) -> Path: ...


class RegistryChampions:
    """The MLflow registry's ``champion`` alias of ``name`` at ``tracking_uri``; files cached in ``cache_dir``."""

    def __init__(self, name: str, tracking_uri: str, cache_dir: str | os.PathLike[str] | None = None) -> None:
        from mlflow import MlflowClient

        if not name.strip():
            raise ValueError("strategy.registry_name: must be a non-empty registered model name")
        self.name = name
        self.tracking_uri = tracking_uri
        self.cache_dir = Path(cache_dir) if cache_dir is not None else Path(tempfile.mkdtemp(prefix="champion-"))
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)  # one client: cheap checks

    def current(self) -> int | None:
        from mlflow.exceptions import MlflowException

        from tradesys.train.registry import CHAMPION

        try:
            return int(self._client.get_model_version_by_alias(self.name, CHAMPION).version)
        except MlflowException as exc:
            if getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None  # no such model or alias
            raise

    def fetch(self, version: int) -> Path:
        from tradesys.train.registry import export_versions

        d = self.cache_dir / str(version)
        if not (d / "standardizer.json").is_file():
            export_versions(self.name, self.cache_dir, [version], tracking_uri=self.tracking_uri)
        return d


def model_file(folder: Path) -> Path:
    """The exported model in a version folder: model.onnx, else model.pt (as the ModelServer prefers)."""
    for name in ("model.onnx", "model.pt"):
        if (folder / name).is_file():
            return folder / name
    raise ValueError(f"strategy.registry_name: {str(folder)!r} holds neither model.onnx nor model.pt")


class ChampionForecaster:
    """A `Forecaster` scoring with the champion's model; `refresh` is called by `ModelStrategy` before each bar.

    ``build(version, folder)`` makes the scorer of a version (a `LocalForecaster` or a pinned `ServeForecaster`);
    ``on_change(kind, ts_ns, payload)`` receives the events of the module docstring.
    """

    def __init__(
        self,
        source: ChampionSource,
        build: Callable[[int, Path], Any],
        *,
        check_every_bars: int = 50,
        start_version: int | None = None,
        on_change: Callable[[str, int, dict[str, Any]], None] | None = None,
    ) -> None:
        from tradesys.strategy.model import load_standardizer

        if check_every_bars < 1:
            raise ValueError(f"strategy.champion_check_bars: must be >= 1, got {check_every_bars}")
        self.source, self._build, self.check_every_bars = source, build, int(check_every_bars)
        self._load_standardizer = load_standardizer
        self.on_change = on_change
        self.recorded = start_version is not None  # a restart continues a recorded version: no first event
        version = start_version if start_version is not None else source.current()
        if version is None:
            raise ValueError(f"strategy.registry_name: {source.name!r} has no champion (set one with "
                             "`tradesys models promote`)")
        self.version, self.inner, self.standardizer = self._load(version)
        self.lookback, self.n_features = int(self.inner.lookback), int(self.inner.n_features)
        self.checks = self.switches = self.check_errors = 0
        self._refused: set[int] = set()
        self._pending: _Lookup | None = None  # the lookup started on the last check bar, applied on the next bar

    def _load(self, version: int) -> tuple[int, Any, Standardizer]:
        folder = self.source.fetch(version)
        scaler = self._load_standardizer(folder / "standardizer.json")
        return int(version), self._build(int(version), folder), scaler

    def _emit(self, kind: str, ts_ns: int, payload: dict[str, Any]) -> None:
        if self.on_change is not None:
            self.on_change(kind, ts_ns, {"registry_name": self.source.name, **payload})

    def refresh(self, bar: int, ts_ns: int) -> Standardizer | None:
        """At the strategy's ``bar``-th bar (1-based, from the (re)start): record the first version; apply the lookup
        started on the previous bar (a check bar), switching to a new version; on every ``check_every_bars``-th bar
        start the next lookup in the background. The new standardizer when the version changed, else None."""
        if not self.recorded:
            self.recorded = True
            self._emit(CHAMPION_EVENT, ts_ns, {"old": None, "new": self.version})
        scaler = None
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.join()  # started a bar ago: done unless the registry is slower than a step
            scaler = self._apply(pending.result, ts_ns)
        if bar % self.check_every_bars == 0:
            self.checks += 1
            self._pending = _Lookup(self._lookup)
            self._pending.start()
        return scaler

    def _lookup(self) -> tuple[str, Any]:
        """On the lookup thread: where the alias points, and a new version loaded and vetted. Reads this object's
        version, refused set and shapes only: nothing changes them until the answer is applied on the loop's thread."""
        try:
            now = self.source.current()
        except Exception as exc:
            return "error", exc
        if now is None or now == self.version or now in self._refused:
            return "same", None
        try:
            version, inner, scaler = self._load(now)
            why = self._incompatible(inner, scaler)
        except Exception as exc:
            version, inner, scaler, why = now, None, None, f"{type(exc).__name__}: {exc}"[:300]
        return "new", (version, inner, scaler, why)

    def _apply(self, answer: tuple[str, Any] | None, ts_ns: int) -> Standardizer | None:
        kind, value = answer if answer is not None else ("error", RuntimeError("the lookup thread died"))
        if kind == "error":  # the registry is down: keep scoring with the version we have
            self.check_errors += 1
            log.warning("champion check failed (%s: %s); keeping version %d", type(value).__name__, value,
                        self.version)
            return None
        if kind == "same":
            return None
        version, inner, scaler, why = value
        if why:
            self._refused.add(version)
            log.warning("champion v%d refused (%s); keeping v%d", version, why, self.version)
            self._emit(REFUSED_EVENT, ts_ns, {"current": self.version, "refused": version, "reason": why})
            return None
        old = self.version
        self.version, self.inner, self.standardizer = version, inner, scaler
        self.switches += 1
        log.info("champion moved: v%d -> v%d at %d", old, version, ts_ns)
        self._emit(CHAMPION_EVENT, ts_ns, {"old": old, "new": version})
        return scaler

    def _incompatible(self, inner: Any, scaler: Standardizer) -> str:
        if int(inner.lookback) != self.lookback or int(inner.n_features) != self.n_features:
            return (f"lookback {inner.lookback} x {inner.n_features} features, the strategy's windows are "
                    f"{self.lookback} x {self.n_features}")
        if scaler.mean.shape != self.standardizer.mean.shape:
            return f"its standardizer has {scaler.mean.shape[0]} features"
        return ""

    def forecast(self, windows: np.ndarray, request_id: str = "") -> Mapping[str, np.ndarray]:
        return self.inner.forecast(windows, request_id)

    def stats(self) -> dict[str, Any]:
        return {"champion_version": self.version, "champion_checks": self.checks,
                "champion_switches": self.switches, "champion_check_errors": self.check_errors}


class _Lookup(threading.Thread):
    """One champion lookup on its own daemon thread; `result` is set when it ends."""

    def __init__(self, fn: Callable[[], tuple[str, Any]]) -> None:
        super().__init__(name="champion-lookup", daemon=True)
        self._fn = fn
        self.result: tuple[str, Any] | None = None

    def run(self) -> None:
        self.result = self._fn()
