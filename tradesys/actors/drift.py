"""The DriftMonitor actor: a thin Ray shell around `tradesys.train.drift_monitor.DriftMonitorCore`, and
`MonitorFeed`, the live loop's non-blocking hand-off to it (issue #6, part 7).

Why an actor: the live loop must not wait for drift statistics (an MMD permutation test, an Evidently report and an
MLflow run take seconds), and exactly one component must own the "is a retraining already running?" state, so a
drift episode launches one job, not one per caller.

Where the rest lives (all under `tradesys/train/`): the monitor's logic in `drift_monitor` (`DriftMonitorCore`,
`MonitorConfig`), the drift statistics and the policy in `drift`, the launchers in `launch` (`RayTaskLauncher`,
`JobSubmissionLauncher`), the MLflow logger and the audit trail in `drift_tracking`, and the live loop's reference
and constructor arguments in `live_drift` (`monitor_kwargs`, `compact_status`). Those names stay importable from
here, so callers written against this module keep working.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

import numpy as np
import pandas as pd
import ray

from tradesys.logs import get_logger
from tradesys.train.drift_monitor import DriftMonitorCore, Frame, MonitorConfig
from tradesys.train.drift_tracking import DRIFT_EXPERIMENT, JsonlAudit, MlflowDriftLogger
from tradesys.train.launch import (
    JobState,
    JobSubmissionLauncher,
    RayTaskLauncher,
    RetrainLauncher,
    default_train_script,
    last_json_object,
)
from tradesys.train.live_drift import (
    LIVE_FEATURES,
    LIVE_PREDICTIONS,
    compact_status,
    monitor_kwargs,
    reference_features,
    reference_predictions,
)

log = get_logger("tradesys.actors.drift")

__all__ = [
    "DRIFT_EXPERIMENT",
    "LIVE_FEATURES",
    "LIVE_PREDICTIONS",
    "DriftMonitor",
    "DriftMonitorCore",
    "JobState",
    "JobSubmissionLauncher",
    "JsonlAudit",
    "MlflowDriftLogger",
    "MonitorConfig",
    "MonitorFeed",
    "RayTaskLauncher",
    "RetrainLauncher",
    "compact_status",
    "default_train_script",
    "last_json_object",
    "monitor_kwargs",
    "reference_features",
    "reference_predictions",
]


def _published(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """A check's drift scores go to Prometheus (tradesys.ops.metrics); the record passes through unchanged."""
    from tradesys.ops import metrics as ops_metrics

    ops_metrics.emit_drift(record)
    return record


@ray.remote(num_cpus=0)
class DriftMonitor:
    """Ray shell around `DriftMonitorCore` (same constructor arguments, plus `tracking_uri`/`audit_path` to build
    the sinks in the actor's process). Async: `observe` returns at once while a check runs in a worker thread;
    one asyncio lock serialises access to the core. `start(poll_s)` runs the schedule itself (a `tick` every
    `poll_s` seconds); without it, the live loop calls `tick`."""

    def __init__(
        self,
        reference_features: Frame,
        reference_predictions: Frame | pd.Series | np.ndarray | None = None,
        *,
        config: MonitorConfig | None = None,
        launcher: RetrainLauncher | None = None,
        train_argv: Sequence[str] = (),
        last_trained: datetime | None = None,
        tracking_uri: str | None = None,
        runs_dir: str = "runs",
        evidently: Literal["always", "on_drift", "never"] = "always",
        audit_path: str | None = None,
        log_to_mlflow: bool = True,
    ) -> None:
        self.core = DriftMonitorCore(
            reference_features, reference_predictions, config=config, launcher=launcher, train_argv=train_argv,
            last_trained=last_trained,
            mlflow=MlflowDriftLogger(tracking_uri, runs_dir=runs_dir, evidently=evidently) if log_to_mlflow else None,
            audit=JsonlAudit(audit_path) if audit_path else None,
        )  # fmt: skip
        self._lock = asyncio.Lock()
        self._loop_task: asyncio.Task[None] | None = None
        self._loop_error: str | None = None
        log.info("drift monitor started")

    async def observe(
        self,
        features: Frame | None,
        predictions: Frame | pd.Series | np.ndarray | None = None,
        realised: pd.Series | np.ndarray | Sequence[float] | None = None,
    ) -> int:
        async with self._lock:
            return self.core.observe(features, predictions, realised)

    async def tick(self) -> dict[str, Any] | None:
        async with self._lock:
            return _published(await asyncio.to_thread(self.core.tick))

    async def observe_and_tick(
        self,
        features: Frame | None,
        predictions: Frame | pd.Series | np.ndarray | None = None,
        realised: pd.Series | np.ndarray | Sequence[float] | None = None,
    ) -> dict[str, Any] | None:
        """`observe` then `tick` under one lock: an async actor may start two separate calls out of order (a tick
        before the observe sent just ahead of it), which would move a due check to a later batch."""
        async with self._lock:
            self.core.observe(features, predictions, realised)
            return _published(await asyncio.to_thread(self.core.tick))

    async def check(self) -> dict[str, Any]:
        async with self._lock:
            rec = await asyncio.to_thread(self.core.check)
            _published(rec)
            return rec

    async def poll_job(self) -> dict[str, Any] | None:
        async with self._lock:
            return await asyncio.to_thread(self.core.poll_job)

    async def set_reference(
        self,
        features: Frame,
        predictions: Frame | pd.Series | np.ndarray | None = None,
        last_trained: datetime | None = None,
    ) -> None:
        async with self._lock:
            self.core.set_reference(features, predictions, last_trained=last_trained)

    async def status(self) -> dict[str, Any]:
        async with self._lock:
            st = self.core.status()
        st["loop_running"] = self._loop_task is not None and not self._loop_task.done()
        st["loop_error"] = self._loop_error
        return st

    async def windows(self) -> dict[str, pd.DataFrame | None]:
        """Copies of the current windows: features, predictions, and (prediction, realised) pairs (for tests and
        operators)."""
        async with self._lock:
            c = self.core
            return {"features": c.current.frame.copy(),
                    "predictions": c.cur_predictions.frame.copy() if c.cur_predictions is not None else None,
                    "errors": c.errors.frame.copy()}  # fmt: skip

    async def wait_job(self, timeout_s: float = 600.0, poll_s: float = 0.5) -> dict[str, Any] | None:
        """Wait until no retraining is in flight (polling it); return the last finished job, None if none ran."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            async with self._lock:
                await asyncio.to_thread(self.core.poll_job)
                if self.core.job is None:
                    return dict(self.core.jobs[-1]) if self.core.jobs else None
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"timeout_s: retraining still running after {timeout_s} s")
            await asyncio.sleep(poll_s)

    async def start(self, poll_s: float = 5.0) -> bool:
        """Run `tick` every `poll_s` seconds in the actor until `stop`; False if the loop already runs."""
        if not poll_s > 0:
            raise ValueError(f"poll_s: must be > 0, got {poll_s}")
        if self._loop_task is not None and not self._loop_task.done():
            return False
        self._loop_task = asyncio.get_running_loop().create_task(self._run(poll_s))
        return True

    async def stop(self) -> bool:
        if self._loop_task is None or self._loop_task.done():
            return False
        self._loop_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._loop_task
        return True

    async def _run(self, poll_s: float) -> None:
        while True:
            try:
                await self.tick()
                self._loop_error = None
            except Exception as exc:  # keep watching; the error shows in status()
                self._loop_error = f"{type(exc).__name__}: {exc}"[:2000]
            await asyncio.sleep(poll_s)


class MonitorFeed:
    """The model strategy's observer in the live loop: buffers `BarObservation`s and forwards them to a
    `DriftMonitor` every `every_bars` bars as ONE call (``observe_and_tick``, or ``observe`` with `tick` False),
    without waiting.

    Backpressure without blocking the trading step: with `max_in_flight` calls still outstanding (a slow check
    holds the monitor), the buffered bars are dropped and counted instead of queued. `flush` sends the rest and
    waits for what is in flight (end of run).
    """

    def __init__(self, monitor: Any, every_bars: int = 5, max_in_flight: int = 8, tick: bool = True) -> None:
        if every_bars < 1:
            raise ValueError(f"drift.send_every_bars: must be >= 1, got {every_bars}")
        if max_in_flight < 1:
            raise ValueError(f"drift.max_in_flight: must be >= 1, got {max_in_flight}")
        self.monitor = monitor
        self.every_bars = every_bars
        self.max_in_flight = max_in_flight
        self.tick = tick
        self._buffer: list[Any] = []
        self._refs: list[Any] = []
        self.sent_batches = 0
        self.sent_rows = 0
        self.dropped_batches = 0
        self.dropped_rows = 0
        self.errors = 0

    def __call__(self, obs: Any) -> None:
        if len(obs.symbols):
            self._buffer.append(obs)
        if len(self._buffer) >= self.every_bars:
            self.send()

    @staticmethod
    def frames(observations: Sequence[Any]) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
        """(features with ts and symbol columns, predictions, realised) of a list of `BarObservation`s, in order."""
        feats = pd.DataFrame(np.concatenate([o.features for o in observations]), columns=list(LIVE_FEATURES))
        feats.insert(0, "symbol", [s for o in observations for s in o.symbols])
        feats.insert(0, "ts", np.concatenate([np.full(len(o.symbols), o.ts, dtype=np.int64) for o in observations]))
        preds = pd.DataFrame(np.concatenate([o.predictions for o in observations]), columns=list(LIVE_PREDICTIONS))
        return feats, preds, np.concatenate([o.realised for o in observations])

    def _prune(self) -> None:
        if not self._refs:
            return
        done, self._refs = ray.wait(self._refs, num_returns=len(self._refs), timeout=0)
        for ref in done:
            try:
                ray.get(ref)
            except Exception:  # a failed observe/tick: counted; the monitor's status shows its own errors
                self.errors += 1

    def send(self) -> None:
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, []
        rows = sum(len(o.symbols) for o in batch)
        self._prune()
        if len(self._refs) >= self.max_in_flight:  # one call per batch
            self.dropped_batches += 1
            self.dropped_rows += rows
            return
        feats, preds, realised = self.frames(batch)
        call = self.monitor.observe_and_tick if self.tick else self.monitor.observe
        self._refs.append(call.remote(feats, preds, realised))
        self.sent_batches += 1
        self.sent_rows += rows

    def flush(self, timeout_s: float = 120.0) -> dict[str, int]:
        """Send the buffered bars and wait (up to `timeout_s`) for every call in flight; return `stats`."""
        self.send()
        if self._refs:
            ray.wait(self._refs, num_returns=len(self._refs), timeout=timeout_s)
            self._prune()
        return self.stats()

    def stats(self) -> dict[str, int]:
        return {"sent_batches": self.sent_batches, "sent_rows": self.sent_rows, "dropped_batches": self.dropped_batches,
                "dropped_rows": self.dropped_rows, "errors": self.errors, "in_flight": len(self._refs)}
