"""The drift monitor's logic, with no Ray in it: reference and current windows, the check schedule, the drift and
degradation tests, the retraining policy, at most one retraining in flight, and the records of checks and jobs.

`DriftMonitorCore` watches live features, predictions and forecast errors against the training-time reference:
the reference window (features and predictions at training time), a rolling current window fed in batches
(`observe`), the schedule (`due`/`tick`: every N feature rows or N seconds on an injectable clock), `check`
(`detect_drift` on features and on predictions, `performance_degradation` of the live forecast error against the
holdout error, then `DriftPolicy.decide`), at most one retraining in flight (through a
`tradesys.train.launch.RetrainLauncher`), and the records of every check and job (to the optional sinks of
`tradesys.train.drift_tracking`). The Ray actor `tradesys.actors.drift.DriftMonitor` is a thin async shell around
it.

Cooldown and "last trained": a launch counts as training time for the policy (its age restarts at the launch), so
the policy's cooldown holds off repeated launches while the drift persists, even when a job fails (no crash loop).
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from tradesys.train.drift import (
    DriftPolicy,
    DriftThresholds,
    RetrainDecision,
    detect_drift,
    json_ready,
    performance_degradation,
)

if TYPE_CHECKING:
    from tradesys.train.drift_tracking import JsonlAudit, MlflowDriftLogger
    from tradesys.train.launch import RetrainLauncher

__all__ = ["DriftMonitorCore", "Frame", "MonitorConfig"]

Frame = pa.RecordBatch | pa.Table | pd.DataFrame


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class MonitorConfig:
    """How the monitor windows, schedules and judges.

    `window`: rows of the current window (the most recent observed); `min_rows`: below this many current rows the
    drift tests are skipped (too little power; the schedule and degradation still count). Schedule: a check is due
    after `check_every_n` new feature rows or `check_every_s` seconds since the last check, whichever comes first
    (None disables either). Degradation needs `holdout_error` (the model's holdout loss in `degradation_metric`),
    and pairs each realised value with the prediction column `degradation_column` (default: the first).
    """

    window: int = 250
    min_rows: int = 50
    check_every_n: int | None = 250
    check_every_s: float | None = 3600.0
    thresholds: DriftThresholds = field(default_factory=DriftThresholds)
    policy: DriftPolicy = field(default_factory=DriftPolicy)
    n_permutations: int = 500
    seed: int = 0
    holdout_error: float | None = None
    degradation_metric: Literal["mse", "mae"] = "mse"
    degradation_window: int = 20
    degradation_ratio: float = 1.5
    degradation_column: str | None = None
    history: int = 100

    def __post_init__(self) -> None:
        if self.window < 2:
            raise ValueError(f"window: must be >= 2, got {self.window}")
        if not 2 <= self.min_rows <= self.window:
            raise ValueError(f"min_rows: must be in [2, window], got {self.min_rows}")
        if self.check_every_n is not None and self.check_every_n < 1:
            raise ValueError(f"check_every_n: must be >= 1 or None, got {self.check_every_n}")
        if self.check_every_s is not None and not self.check_every_s > 0:
            raise ValueError(f"check_every_s: must be > 0 or None, got {self.check_every_s}")
        if self.holdout_error is not None and not (self.holdout_error > 0 and math.isfinite(self.holdout_error)):
            raise ValueError(f"holdout_error: must be a finite number > 0 or None, got {self.holdout_error}")
        if not 1 <= self.degradation_window <= self.window:
            raise ValueError(f"degradation_window: must be in [1, window], got {self.degradation_window}")
        if self.history < 1:
            raise ValueError(f"history: must be >= 1, got {self.history}")


def _to_frame(x: Any, name: str) -> pd.DataFrame:
    if isinstance(x, pa.RecordBatch | pa.Table):
        return x.to_pandas()
    if isinstance(x, pd.DataFrame):
        return x
    if isinstance(x, pd.Series):
        return x.to_frame(name=str(x.name) if x.name is not None else "prediction")
    arr = np.asarray(x, dtype=float)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name}: must be a RecordBatch, DataFrame, Series or 1-D/2-D array")
    return pd.DataFrame(arr, columns=["prediction"] if arr.shape[1] == 1 else [f"p{i}" for i in range(arr.shape[1])])


def _select(frame: pd.DataFrame, columns: Sequence[str], name: str) -> pd.DataFrame:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name}: missing column {missing[0]!r} (the reference has {', '.join(columns)})")
    try:
        return frame[list(columns)].astype(float).reset_index(drop=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: columns must be numeric ({exc})") from exc


class _Window:
    """The most recent `size` rows of a fixed set of columns, appended in batches."""

    def __init__(self, columns: Sequence[str], size: int) -> None:
        self.columns = list(columns)
        self.size = size
        self.frame = pd.DataFrame({c: pd.Series(dtype=float) for c in self.columns})

    def append(self, batch: pd.DataFrame) -> None:
        if batch.empty:
            return
        both = batch if self.frame.empty else pd.concat([self.frame, batch], ignore_index=True)
        self.frame = both.iloc[-self.size :].reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.frame)


class DriftMonitorCore:
    """The monitor's logic, without Ray (module docstring).

    `reference_features`/`reference_predictions`: the windows at training time (their columns are the ones
    watched). `train_argv`: the flags passed to the training script on a launch. `launcher` None records decisions
    without launching (action ``no_launcher``). `last_trained`: when the served model was trained (default: now).
    `clock` returns timezone-aware UTC datetimes; tests inject a fake one.
    """

    def __init__(
        self,
        reference_features: Frame,
        reference_predictions: Frame | pd.Series | np.ndarray | None = None,
        *,
        config: MonitorConfig | None = None,
        launcher: RetrainLauncher | None = None,
        train_argv: Sequence[str] = (),
        last_trained: datetime | None = None,
        clock: Callable[[], datetime] = _utc_now,
        mlflow: MlflowDriftLogger | None = None,
        audit: JsonlAudit | None = None,
    ) -> None:
        self.config = config or MonitorConfig()
        self.clock = clock
        self.launcher = launcher
        self.train_argv = [str(a) for a in train_argv]
        self.mlflow = mlflow
        self.audit = audit
        self.set_reference(reference_features, reference_predictions, last_trained=last_trained)
        self.job: dict[str, Any] | None = None
        self.history: deque[dict[str, Any]] = deque(maxlen=self.config.history)
        self.jobs: deque[dict[str, Any]] = deque(maxlen=self.config.history)
        self.checks = 0
        self.launches = 0
        self.rows_seen = 0
        self._since_check = 0
        self._last_check_at = self._now()
        self.last_decision: dict[str, Any] | None = None

    def _now(self) -> datetime:
        now = self.clock()
        if now.tzinfo is None:
            raise ValueError("clock: must return timezone-aware datetimes")
        return now

    # ------------------------------------------------------------------------------------------------ windows

    def set_reference(
        self,
        features: Frame,
        predictions: Frame | pd.Series | np.ndarray | None = None,
        *,
        last_trained: datetime | None = None,
    ) -> None:
        """Replace the reference (e.g. when a new champion is served) and clear the current windows."""
        ref = _to_frame(features, "reference_features")
        cols = [str(c) for c in ref.columns]
        ref = _select(ref.set_axis(cols, axis=1), cols, "reference_features")
        if len(ref) < self.config.min_rows:
            raise ValueError(f"reference_features: {len(ref)} rows, need at least min_rows={self.config.min_rows}")
        self.feature_columns = cols
        self.reference = ref
        self.ref_predictions: pd.DataFrame | None = None
        self.prediction_columns: list[str] = []
        if predictions is not None:
            rp = _to_frame(predictions, "reference_predictions")
            pcols = [str(c) for c in rp.columns]
            self.ref_predictions = _select(rp.set_axis(pcols, axis=1), pcols, "reference_predictions")
            self.prediction_columns = pcols
        dc = self.config.degradation_column
        if dc is not None and self.prediction_columns and dc not in self.prediction_columns:
            raise ValueError(f"degradation_column: {dc!r} is not a prediction column ({self.prediction_columns})")
        if last_trained is not None and last_trained.tzinfo is None:
            raise ValueError("last_trained: must be timezone-aware")
        self.last_trained = last_trained or self._now()
        self.current = _Window(cols, self.config.window)
        self.cur_predictions: _Window | None = None
        self.errors = _Window(["prediction", "realised"], self.config.window)

    def observe(
        self,
        features: Frame | None,
        predictions: Frame | pd.Series | np.ndarray | None = None,
        realised: pd.Series | np.ndarray | Sequence[float] | None = None,
    ) -> int:
        """Append one batch: feature rows, optionally the model's predictions for them, optionally the realised
        values those predictions forecast (same length; rows where either is NaN do not count toward degradation).
        Returns the current window's length."""
        if features is not None:
            f = _to_frame(features, "features")
            f = _select(f.set_axis([str(c) for c in f.columns], axis=1), self.feature_columns, "features")
            self.current.append(f)
            self.rows_seen += len(f)
            self._since_check += len(f)
        if predictions is not None:
            p = _to_frame(predictions, "predictions")
            p = p.set_axis([str(c) for c in p.columns], axis=1)
            if self.cur_predictions is None:
                cols = self.prediction_columns or [str(c) for c in p.columns]
                self.cur_predictions = _Window(cols, self.config.window)
            pf = _select(p, self.cur_predictions.columns, "predictions")
            if features is not None and len(pf) != len(f):
                raise ValueError(f"predictions: {len(pf)} rows, features have {len(f)}")
            self.cur_predictions.append(pf)
            if realised is not None:
                y = np.asarray(realised, dtype=float).ravel()
                if y.size != len(pf):
                    raise ValueError(f"realised: {y.size} values, predictions have {len(pf)} rows")
                col = self.config.degradation_column or self.cur_predictions.columns[0]
                pair = pd.DataFrame({"prediction": pf[col].to_numpy(), "realised": y})
                self.errors.append(pair[np.isfinite(pair.to_numpy()).all(axis=1)].reset_index(drop=True))
        elif realised is not None:
            raise ValueError("realised: needs the predictions it pairs with in the same call")
        return len(self.current)

    # ------------------------------------------------------------------------------------------------ schedule

    def due(self) -> bool:
        """Whether the schedule calls for a check now (enough new rows, or enough time since the last check)."""
        c = self.config
        if c.check_every_n is not None and self._since_check >= c.check_every_n:
            return True
        elapsed = (self._now() - self._last_check_at).total_seconds()
        return c.check_every_s is not None and elapsed >= c.check_every_s

    def tick(self) -> dict[str, Any] | None:
        """Poll the job in flight; run a check if one is due. Returns the check record, or None."""
        self.poll_job()
        return self.check() if self.due() else None

    # ------------------------------------------------------------------------------------------------ jobs

    def poll_job(self) -> dict[str, Any] | None:
        """If the job in flight has finished, record its outcome (audit, tags on the launching run); return it."""
        if self.job is None or self.launcher is None:
            return None
        st = self.launcher.poll(self.job["job_id"])
        if st.state == "running":
            return None
        job = self.job
        job.update(state=st.state, finished_at=self._now().isoformat(), error=st.error)
        if st.summary is not None:
            keep = ("version", "run_id", "registry_name", "champion", "promotion", "best_val_loss", "tracking_uri")
            job["result"] = {k: st.summary.get(k) for k in keep if k in st.summary}
        self.job = None
        self.jobs.append(job)
        res = job.get("result") or {}
        promotion = res.get("promotion") or {}
        if self.mlflow is not None and job.get("drift_run_id"):
            self.mlflow.set_tags(job["drift_run_id"], {
                "retrain.state": st.state, "retrain.version": res.get("version"),
                "retrain.train_run_id": res.get("run_id"), "retrain.promoted": promotion.get("promoted"),
                "retrain.error": st.error,
            })  # fmt: skip
        if self.audit is not None:
            self.audit.write({"event": "job_finished", "time": job["finished_at"], "job": job})
        return job

    def _launch(self, now: datetime, decision: RetrainDecision) -> dict[str, Any]:
        assert self.launcher is not None
        job_id = self.launcher.launch(self.train_argv)
        self.launches += 1
        self.last_trained = now  # the policy's age and cooldown restart at the launch (module docstring)
        return {
            "job_id": job_id,
            "launcher": self.launcher.name,
            "argv": list(self.train_argv),
            "launched_at": now.isoformat(),
            "reasons": list(decision.codes),
            "state": "running",
        }

    # ------------------------------------------------------------------------------------------------ check

    def check(self) -> dict[str, Any]:
        """Run the drift tests, degradation and the policy now; launch on a retrain decision; log and return the
        record (JSON-ready)."""
        self.poll_job()
        c = self.config
        now = self._now()
        self.checks += 1
        cur = self.current.frame
        feat_rep = None
        if len(cur) >= c.min_rows:
            feat_rep = detect_drift(self.reference, cur, thresholds=c.thresholds, n_permutations=c.n_permutations,
                                    seed=c.seed)  # fmt: skip
        pred_rep = None
        cur_pred = self.cur_predictions
        if self.ref_predictions is not None and cur_pred is not None and len(cur_pred) >= c.min_rows:
            pred_rep = detect_drift(self.ref_predictions, cur_pred.frame, thresholds=c.thresholds,
                                    n_permutations=c.n_permutations, seed=c.seed)  # fmt: skip
        deg = None
        if c.holdout_error is not None and len(self.errors) > 0:
            e = self.errors.frame
            deg = performance_degradation(e["realised"], e["prediction"], c.holdout_error, metric=c.degradation_metric,
                                          window=c.degradation_window, ratio_threshold=c.degradation_ratio)  # fmt: skip
        decision = c.policy.decide(now=now, last_trained=self.last_trained, feature_drift=feat_rep,
                                   prediction_drift=pred_rep, degradation=deg)  # fmt: skip
        if not decision.retrain:
            action = "none"
        elif self.job is not None:
            action = "in_flight"  # one retraining at a time: this decision is recorded, not acted on
        elif self.launcher is None:
            action = "no_launcher"
        else:
            action = "launch"
        record: dict[str, Any] = {
            "event": "check",
            "check_id": self.checks,
            "time": now.isoformat(),
            "n_reference": len(self.reference),
            "n_current": len(cur),
            "rows_seen": self.rows_seen,
            "last_trained": self.last_trained.isoformat(),
            "features": feat_rep.to_dict() if feat_rep is not None else None,
            "predictions": pred_rep.to_dict() if pred_rep is not None else None,
            "degradation": deg.to_dict() if deg is not None else None,
            "decision": decision.to_dict(),
            "action": action,
            "job": None,
            "mlflow_run_id": None,
            "errors": [],
        }
        if self.mlflow is not None:
            try:  # logging must not stop the monitor; the failure goes to the audit line
                record["mlflow_run_id"] = self.mlflow.log_check(record, feat_rep, pred_rep, deg, self.reference, cur)
            except Exception as exc:
                record["errors"].append(f"mlflow: {type(exc).__name__}: {exc}"[:2000])
        if action == "launch":
            try:
                self.job = self._launch(now, decision)
                self.job["drift_run_id"] = record["mlflow_run_id"]
                record["action"] = "launched"
                record["job"] = dict(self.job)
            except Exception as exc:
                record["action"] = "launch_failed"
                record["errors"].append(f"launch: {type(exc).__name__}: {exc}"[:2000])
            if self.mlflow is not None and record["mlflow_run_id"]:
                with contextlib.suppress(Exception):
                    self.mlflow.set_tags(record["mlflow_run_id"], {
                        "action": record["action"],
                        "retrain.job_id": (record["job"] or {}).get("job_id"),
                        "retrain.launcher": self.launcher.name if self.launcher else None,
                    })  # fmt: skip
        record = json_ready(record)
        if self.audit is not None:
            self.audit.write(record)
        self._since_check = 0
        self._last_check_at = now
        self.last_decision = {"time": record["time"], "check_id": record["check_id"], "action": record["action"],
                              **record["decision"]}  # fmt: skip
        self.history.append(self._summary(record))
        return record

    @staticmethod
    def _summary(record: dict[str, Any]) -> dict[str, Any]:
        feats = record["features"] or {}
        return {
            "check_id": record["check_id"],
            "time": record["time"],
            "retrain": record["decision"]["retrain"],
            "reasons": [r["code"] for r in record["decision"]["reasons"]],
            "action": record["action"],
            "drifted_columns": feats.get("drifted_columns", []),
            "job_id": (record["job"] or {}).get("job_id"),
            "mlflow_run_id": record["mlflow_run_id"],
        }

    def status(self) -> dict[str, Any]:
        """Last decision, the job in flight, and the recent history of checks and jobs (JSON-ready)."""
        return json_ready({
            "last_decision": self.last_decision,
            "in_flight": dict(self.job) if self.job is not None else None,
            "history": list(self.history),
            "jobs": list(self.jobs),
            "checks": self.checks,
            "launches": self.launches,
            "rows_seen": self.rows_seen,
            "n_current": len(self.current),
            "last_trained": self.last_trained.isoformat(),
        })  # fmt: skip
