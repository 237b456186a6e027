"""The DriftMonitor: watches live features, predictions and forecast errors against the training-time reference and
submits the retraining job when the policy says so (issue #6, part 7).

Why an actor: the live loop must not wait for drift statistics (an MMD permutation test, an Evidently report and an
MLflow run take seconds), and exactly one component must own the "is a retraining already running?" state, so a
drift episode launches one job, not one per caller.

Layout:

* `DriftMonitorCore` holds the logic with no Ray in it: the reference window (features and predictions at training
  time), a rolling current window fed in batches (`observe`), the schedule (`due`/`tick`: every N feature rows or N
  seconds on an injectable clock), `check` (`detect_drift` on features and on predictions, `performance_degradation`
  of the live forecast error against the holdout error, then `DriftPolicy.decide`), at most one retraining in
  flight, and the records of every check and job.
* Launchers submit the retraining job, `jobs/train.py` with an argv of its CLI flags: `RayTaskLauncher` (default: a
  Ray task in the current cluster calling the script's ``main(argv)``; works on a local Ray) and
  `JobSubmissionLauncher` (``ray job submit`` through a dashboard's Jobs API; needs a cluster with a dashboard).
* Sinks: `MlflowDriftLogger` (one run per check in experiment ``tradesys-drift``: per-column statistics as metrics,
  the MMD p-value, the decision and reasons as tags, the record as JSON and the Evidently HTML report as artifacts;
  the retraining's outcome is tagged onto the run that launched it) and `JsonlAudit` (one JSON line per check and
  per finished job).
* `DriftMonitor` is the Ray actor: an async shell around the core, with its own scheduling loop (`start`) or a
  `tick` the live loop calls.

Cooldown and "last trained": a launch counts as training time for the policy (its age restarts at the launch), so
the policy's cooldown holds off repeated launches while the drift persists, even when a job fails (no crash loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import math
import os
import re
import shlex
import tempfile
import threading
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import ray

from tradesys.train.drift import (
    DegradationResult,
    DriftPolicy,
    DriftReport,
    DriftThresholds,
    RetrainDecision,
    detect_drift,
    json_ready,
    performance_degradation,
)

__all__ = [
    "DRIFT_EXPERIMENT",
    "DriftMonitor",
    "DriftMonitorCore",
    "JobState",
    "JobSubmissionLauncher",
    "JsonlAudit",
    "MlflowDriftLogger",
    "MonitorConfig",
    "RayTaskLauncher",
    "RetrainLauncher",
    "default_train_script",
    "last_json_object",
]

DRIFT_EXPERIMENT = "tradesys-drift"
Frame = pa.RecordBatch | pa.Table | pd.DataFrame


def default_train_script() -> Path:
    """``jobs/train.py`` of this checkout (the package's parent directory)."""
    return Path(__file__).resolve().parents[2] / "jobs" / "train.py"


def _utc_now() -> datetime:
    return datetime.now(UTC)


# ----------------------------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobState:
    """A retraining job's state: ``running``, ``succeeded`` (with the job's summary dict) or ``failed``."""

    state: Literal["running", "succeeded", "failed"]
    summary: dict[str, Any] | None = None
    error: str | None = None


class RetrainLauncher(Protocol):
    """Submits the training job with an argv of its CLI flags and reports on it; `launch` returns a job id."""

    name: str

    def launch(self, argv: Sequence[str]) -> str: ...

    def poll(self, job_id: str) -> JobState: ...


@ray.remote(max_calls=1)
def _run_script_main(script: str, argv: list[str]) -> dict[str, Any]:
    """Import `script` as a module and return its ``main(argv)``. ``max_calls=1``: the worker exits afterwards, so
    the job's global state (MLflow URIs, torch threads, loaded models) does not leak into later tasks."""
    spec = importlib.util.spec_from_file_location("tradesys_retrain_job", script)
    if spec is None or spec.loader is None:
        raise ValueError(f"script: cannot import {script!r}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    try:
        out = mod.main(list(argv))
    except SystemExit as exc:  # argparse's error on a bad flag: a failed job, not a dead worker
        raise RuntimeError(f"{script} exited with status {exc.code} (argv {list(argv)})") from None
    return dict(out) if out is not None else {}


class RayTaskLauncher:
    """Runs the training script's ``main(argv)`` as a Ray task in the current cluster (the Ray-native default).

    The script (default ``jobs/train.py``) must be readable at the same path on the node that runs the task: true on
    a local Ray and on clusters whose image holds the checkout; otherwise use `JobSubmissionLauncher`. `num_cpus` is
    what the job's driver reserves (its Tune trials reserve their own).
    """

    name = "ray_task"

    def __init__(
        self,
        script: str | Path | None = None,
        *,
        num_cpus: float = 1.0,
        runtime_env: dict[str, Any] | None = None,
    ) -> None:
        path = Path(script) if script is not None else default_train_script()
        if not path.is_file():
            raise ValueError(f"script: {str(path)!r} is not a file")
        if num_cpus < 0:
            raise ValueError(f"num_cpus: must be >= 0, got {num_cpus}")
        self.script = str(path.resolve())
        self.num_cpus = float(num_cpus)
        self.runtime_env = runtime_env
        self._refs: dict[str, Any] = {}

    def launch(self, argv: Sequence[str]) -> str:
        opts: dict[str, Any] = {"num_cpus": self.num_cpus, "name": "tradesys-retrain"}
        if self.runtime_env:
            opts["runtime_env"] = self.runtime_env
        ref = _run_script_main.options(**opts).remote(self.script, [str(a) for a in argv])
        job_id = "raytask-" + uuid.uuid4().hex[:12]
        self._refs[job_id] = ref
        return job_id

    def poll(self, job_id: str) -> JobState:
        ref = self._refs.get(job_id)
        if ref is None:
            raise ValueError(f"job_id: {job_id!r} was not launched by this launcher")
        ready, _ = ray.wait([ref], timeout=0)
        if not ready:
            return JobState("running")
        del self._refs[job_id]
        try:
            return JobState("succeeded", summary=ray.get(ref))
        except Exception as exc:  # the job's own error, wrapped by Ray
            return JobState("failed", error=f"{type(exc).__name__}: {exc}"[:2000])


def last_json_object(text: str) -> dict[str, Any] | None:
    """The last JSON object in `text` that starts at the beginning of a line (the job's printed summary), or None."""
    dec = json.JSONDecoder()
    starts = [m.start() for m in re.finditer(r"(?m)^\{", text)]
    for pos in reversed(starts):
        try:
            obj, _ = dec.raw_decode(text, pos)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj
    return None


class JobSubmissionLauncher:
    """Submits ``python <script> <argv>`` through the Ray Jobs API of a cluster with a dashboard.

    The working directory is uploaded as the job's runtime_env ``working_dir`` (minus `excludes`: the virtual
    environment, git data and local runs would blow the upload limit). On success the job's summary is the last JSON
    object it printed (``jobs/train.py`` prints its summary). Token authentication: with `auth_token_env` set, the
    token is read from that environment variable when the client is made and sent as a bearer header (never
    logged); otherwise the client sends what Ray itself finds when ``RAY_AUTH_MODE=token`` (``RAY_AUTH_TOKEN``,
    ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``).
    """

    name = "job_submission"

    def __init__(
        self,
        address: str,
        *,
        working_dir: str | Path = ".",
        script: str = "jobs/train.py",
        python: str = "python",
        excludes: Sequence[str] = (".venv", ".git", "runs", "mlruns", "__pycache__"),
        runtime_env: dict[str, Any] | None = None,
        auth_token_env: str | None = None,
    ) -> None:
        if not address or not str(address).strip():
            raise ValueError("address: must be the dashboard address, e.g. http://127.0.0.1:8265")
        wd = Path(working_dir).expanduser().resolve()
        if not wd.is_dir():
            raise ValueError(f"working_dir: {str(wd)!r} is not a directory")
        if not (wd / script).is_file():
            raise ValueError(f"script: {script!r} is not a file under working_dir {str(wd)!r}")
        self.address = str(address)
        self.working_dir = str(wd)
        self.script = script
        self.python = python
        self.runtime_env = {**(runtime_env or {}), "working_dir": self.working_dir, "excludes": list(excludes)}
        self.auth_token_env = auth_token_env
        self._client: Any = None

    def _get_client(self) -> Any:
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            headers = None
            if self.auth_token_env:
                token = os.environ.get(self.auth_token_env, "").strip()
                if not token:
                    raise ValueError(f"auth_token_env: environment variable {self.auth_token_env} is not set")
                headers = {"Authorization": f"Bearer {token}"}
            self._client = JobSubmissionClient(self.address, headers=headers)
        return self._client

    def entrypoint(self, argv: Sequence[str]) -> str:
        return shlex.join([self.python, self.script, *[str(a) for a in argv]])

    def launch(self, argv: Sequence[str]) -> str:
        return str(
            self._get_client().submit_job(
                entrypoint=self.entrypoint(argv),
                runtime_env=self.runtime_env,
                submission_id="tradesys-retrain-" + uuid.uuid4().hex[:12],
            )
        )

    def poll(self, job_id: str) -> JobState:
        from ray.job_submission import JobStatus

        client = self._get_client()
        status = client.get_job_status(job_id)
        if status == JobStatus.SUCCEEDED:
            summary = last_json_object(client.get_job_logs(job_id))
            if summary is None:
                return JobState("failed", error="job succeeded but printed no JSON summary")
            return JobState("succeeded", summary=summary)
        if status in (JobStatus.FAILED, JobStatus.STOPPED):
            info = client.get_job_info(job_id)
            return JobState("failed", error=f"{status.value}: {info.message or ''}"[:2000])
        return JobState("running")


# ----------------------------------------------------------------------------------------------------------------
# Sinks
# ----------------------------------------------------------------------------------------------------------------


class JsonlAudit:
    """Appends one JSON object per line (UTF-8, NaN as null) to `path`; the audit trail of checks and jobs."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser().resolve()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(json_ready(record), allow_nan=False, sort_keys=True, default=str)
        with self._lock, self.path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open(encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]


_METRIC_NAME = re.compile(r"[^0-9A-Za-z_\-. /]")


def _metric_key(*parts: str) -> str:
    return ".".join(_METRIC_NAME.sub("_", p) for p in parts)


def _report_metrics(prefix: str, rep: DriftReport | None) -> dict[str, float]:
    if rep is None:
        return {}
    out: dict[str, float] = {}
    for c in rep.columns:
        for stat in ("ks_statistic", "ks_pvalue", "psi", "wasserstein"):
            out[_metric_key(prefix, c.name, stat)] = float(getattr(c, stat))
        out[_metric_key(prefix, c.name, "drifted")] = float(c.drifted)
    if rep.mmd is not None:
        out[f"{prefix}.mmd2"] = rep.mmd.mmd2
        out[f"{prefix}.mmd_pvalue"] = rep.mmd.pvalue
    out[f"{prefix}.drift"] = float(rep.drift)
    out[f"{prefix}.n_drifted"] = float(len(rep.drifted_columns))
    return out


class MlflowDriftLogger:
    """One MLflow run per check in experiment `experiment` (default ``tradesys-drift``).

    Metrics: ``features.<col>.{ks_statistic,ks_pvalue,psi,wasserstein,drifted}``, ``features.mmd2``,
    ``features.mmd_pvalue``, ``features.drift``, the same under ``predictions.``, and ``degradation.{current_error,
    ratio,degraded}`` (non-finite values skipped). Tags: ``decision.retrain``, ``decision.reasons`` (codes, comma
    separated), ``decision.detail``, ``action`` and, after a launch, ``retrain.*``. Artifacts: ``check.json`` (the
    full record, with each test's rule) and ``evidently/drift_report.html`` (Evidently's report on the feature
    windows; `evidently` = ``always``, ``on_drift`` or ``never``). The tracking URI follows
    `tradesys.train.tracking.resolve_tracking_uri` (argument, else $MLFLOW_TRACKING_URI, else runs/mlflow.db).
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        *,
        experiment: str = DRIFT_EXPERIMENT,
        runs_dir: str | Path = "runs",
        evidently: Literal["always", "on_drift", "never"] = "always",
    ) -> None:
        from tradesys.train.tracking import resolve_tracking_uri

        if evidently not in ("always", "on_drift", "never"):
            raise ValueError(f"evidently: must be 'always', 'on_drift' or 'never', got {evidently!r}")
        self.tracking_uri = resolve_tracking_uri(tracking_uri, runs_dir=runs_dir)
        self.experiment = experiment
        self.runs_dir = Path(runs_dir)
        self.evidently = evidently
        self._exp_id: str | None = None

    def _client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def _experiment_id(self) -> str:
        if self._exp_id is None:
            from tradesys.train.tracking import ensure_experiment

            self._exp_id = ensure_experiment(self.experiment, self.tracking_uri, runs_dir=self.runs_dir)
        return self._exp_id

    def log_check(
        self,
        record: dict[str, Any],
        features: DriftReport | None,
        predictions: DriftReport | None,
        degradation: DegradationResult | None,
        reference: pd.DataFrame,
        current: pd.DataFrame,
    ) -> str:
        """Create the check's run and return its id."""
        from mlflow.entities import Metric, Param

        client = self._client()
        decision = record["decision"]
        tags = {
            "decision.retrain": str(decision["retrain"]).lower(),
            "decision.reasons": ",".join(r["code"] for r in decision["reasons"]),
            "decision.detail": "; ".join(f"{r['code']}: {r['detail']}" for r in decision["reasons"])[:5000],
            "action": record["action"],
            "check_id": str(record["check_id"]),
        }
        run = client.create_run(self._experiment_id(), run_name=f"drift-check-{record['check_id']}", tags=tags)
        run_id = str(run.info.run_id)
        metrics = {**_report_metrics("features", features), **_report_metrics("predictions", predictions)}
        if degradation is not None:
            metrics.update({"degradation.current_error": degradation.current_error,
                            "degradation.ratio": degradation.ratio,
                            "degradation.degraded": float(degradation.degraded)})  # fmt: skip
        metrics.update({"n_current": float(record["n_current"]), "n_reference": float(record["n_reference"])})
        ts = int(datetime.fromisoformat(record["time"]).timestamp() * 1000)
        step = int(record["check_id"])
        params = {"ks_level": features.ks_level if features else None, "rule": features.rule if features else None}
        client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), ts, step) for k, v in metrics.items() if math.isfinite(float(v))],
            params=[Param(k, str(v)[:6000]) for k, v in params.items() if v is not None],
        )
        client.log_text(run_id, json.dumps(json_ready(record), indent=2, sort_keys=True, default=str), "check.json")
        drifted = bool(features is not None and features.drift)
        if features is not None and (self.evidently == "always" or (self.evidently == "on_drift" and drifted)):
            from tradesys.train.drift import save_evidently_html

            with tempfile.TemporaryDirectory() as d:
                path = save_evidently_html(reference, current, Path(d) / "drift_report.html")
                client.log_artifact(run_id, str(path), artifact_path="evidently")
        client.set_terminated(run_id)
        return run_id

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        """Add tags to a (finished) check run: the launch and, later, the retraining's outcome."""
        from mlflow.entities import RunTag

        self._client().log_batch(run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items() if v is not None])


# ----------------------------------------------------------------------------------------------------------------
# The core
# ----------------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------------
# The actor
# ----------------------------------------------------------------------------------------------------------------


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
            return await asyncio.to_thread(self.core.tick)

    async def check(self) -> dict[str, Any]:
        async with self._lock:
            return await asyncio.to_thread(self.core.check)

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


# ----------------------------------------------------------------------------------------------------------------
# The live loop's side: reference, construction from the config, the strategy's buffered hand-off
# ----------------------------------------------------------------------------------------------------------------

LIVE_FEATURES = ("ret", "abs_ret", "rv5", "rv22")  # tradesys.strategy.model.FEATURE_NAMES (default_features)
LIVE_PREDICTIONS = ("ret", "vol")  # the model strategy's forecasts, in return units


def reference_features(drift: Any, data: Any) -> pd.DataFrame:
    """The reference feature rows for the live loop's monitor (`drift`: a DriftConfig, `data`: the DataConfig).

    ``drift.reference == "data"``: per symbol of `data` (its source and symbols), the `default_features` of the
    close-to-close returns, rows dated in reference_start..reference_end (closes from 60 days earlier warm up rv22),
    as the model strategy computes them live. Otherwise the .parquet/.csv file named there (columns ret, abs_ret,
    rv5, rv22; rows with a NaN dropped).
    """
    cols = list(LIVE_FEATURES)
    if drift.reference != "data":
        path = Path(drift.reference)
        if not path.is_file():
            raise ValueError(f"drift.reference: {str(path)!r} is not a file")
        try:
            frame = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)
        except Exception as exc:
            raise ValueError(f"drift.reference: cannot read {str(path)!r}: {type(exc).__name__}: {exc}") from exc
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise ValueError(f"drift.reference: {str(path)!r} lacks column {missing[0]!r} (needs {', '.join(cols)})")
        out = frame[cols].astype(float).dropna().reset_index(drop=True)
    else:
        from tradesys.train.data import default_features

        start, end = drift.reference_start, drift.reference_end
        closes = _reference_closes(drift, data)
        lo, hi = pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC") + pd.Timedelta(days=1)
        parts = []
        for sym in closes.columns:
            c = closes[sym].dropna()
            c = c[c > 0]
            f = default_features(c.pct_change().iloc[1:]).dropna()
            parts.append(f[(f.index >= lo) & (f.index < hi)])
        out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)
    if len(out) < 2:
        raise ValueError(f"drift.reference: only {len(out)} feature rows (check reference_start/reference_end)")
    return out


def _reference_closes(drift: Any, data: Any) -> pd.DataFrame:
    """Closes (ts x symbol) of `data`'s source from 60 days before reference_start to reference_end."""
    from datetime import timedelta

    from tradesys.data import make_source

    src = make_source(data.model_copy(update={"start": drift.reference_start - timedelta(days=60),
                                              "end": drift.reference_end}))
    bars = pd.concat([b.select(["ts", "symbol", "close"]).to_pandas() for b in src.batches()])
    return bars.pivot(index="ts", columns="symbol", values="close")


def reference_predictions(drift: Any, data: Any, strategy: Any, bars_per_year: float = 252.0) -> pd.DataFrame:
    """The model's forecasts over the reference period (``drift.reference == "data"``), in return units, with the
    columns the live feed sends (`LIVE_PREDICTIONS`): the reference that prediction drift is measured against.

    Per symbol, the model strategy's standardised window at each reference bar (the same `ModelStrategy.window`
    the strategy trades on), scored by the strategy's own forecaster (the local model file or the served model) in
    batches of `_REFERENCE_BATCH` windows, then scaled by the standardizer's ret/vol scales as the strategy does.
    """
    from tradesys.strategy.model import ModelStrategy

    closes = _reference_closes(drift, data)
    strat = ModelStrategy.from_config(strategy, max(1, closes.shape[1]), bars_per_year)
    lo = pd.Timestamp(drift.reference_start, tz="UTC")
    hi = pd.Timestamp(drift.reference_end, tz="UTC") + pd.Timedelta(days=1)
    windows: list[np.ndarray] = []
    for sym in closes.columns:
        c = closes[sym].dropna()
        c = c[c > 0]
        values = c.to_numpy()
        for i in np.flatnonzero((c.index >= lo) & (c.index < hi)):
            if i + 1 >= strat.history:
                windows.append(strat.window(values[: i + 1]))
    if not windows:
        raise ValueError("drift.reference: no reference bar has a full model window (check reference_start/end)")
    x = np.stack(windows)
    ret, vol = [], []
    for k in range(0, len(x), _REFERENCE_BATCH):
        out = strat.forecaster.forecast(x[k : k + _REFERENCE_BATCH], f"drift-reference-{k}")
        ret.append(np.asarray(out["ret"], dtype=np.float64).reshape(-1))
        vol.append(np.asarray(out["vol"], dtype=np.float64).reshape(-1))
    frame = pd.DataFrame({
        "ret": np.concatenate(ret) * strat.standardizer.ret_scale,
        "vol": np.concatenate(vol) * strat.standardizer.vol_scale,
    })  # fmt: skip
    close = getattr(strat.forecaster, "close", None)
    if callable(close):
        close()
    return frame[list(LIVE_PREDICTIONS)].dropna().reset_index(drop=True)


_REFERENCE_BATCH = 1024


def monitor_kwargs(cfg: Any, run_id: str) -> dict[str, Any]:
    """`DriftMonitor` constructor arguments from a TradesysConfig's ``drift`` section (used by the Supervisor)."""
    from datetime import timedelta

    from tradesys.train.drift import DriftPolicy, DriftThresholds

    d = cfg.drift
    ref = reference_features(d, cfg.data)
    mc = MonitorConfig(
        window=d.window, min_rows=min(d.min_rows, len(ref)), check_every_n=d.check_every_rows,
        check_every_s=d.check_every_s, n_permutations=d.n_permutations,
        thresholds=DriftThresholds(alpha=d.alpha, psi=d.psi, wasserstein=d.wasserstein),
        policy=DriftPolicy(max_age=timedelta(days=d.max_age_days), cooldown=timedelta(hours=d.cooldown_hours)),
        holdout_error=d.holdout_error, degradation_metric=d.degradation_metric,
        degradation_window=d.degradation_window, degradation_ratio=d.degradation_ratio, degradation_column="ret",
    )  # fmt: skip
    launcher: RetrainLauncher | None = None
    if d.launcher == "ray_task":
        launcher = RayTaskLauncher()
    elif d.launcher == "job_submission":
        launcher = JobSubmissionLauncher(d.jobs_address, working_dir=default_train_script().parents[1],
                                         auth_token_env=d.auth_token_env)  # fmt: skip
    runs = Path(cfg.ledger.runs_dir).expanduser().resolve()
    preds = None
    if d.reference == "data" and d.reference_predictions:
        from tradesys.data import bars_per_year

        preds = reference_predictions(d, cfg.data, cfg.strategy, bars_per_year(cfg.data))
    return {
        "reference_features": ref,
        "reference_predictions": preds,
        "config": mc,
        "launcher": launcher,
        "train_argv": list(d.train_argv),
        "last_trained": d.last_trained,
        "tracking_uri": d.mlflow_uri,
        "runs_dir": str(runs),
        "evidently": d.evidently,
        "audit_path": d.audit_path or str(runs / run_id / "drift.jsonl"),
        "log_to_mlflow": d.mlflow,
    }


def compact_status(status: dict[str, Any], feed: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run summary's ``drift`` entry: counters, the last decision, actions taken, jobs (no full history)."""
    actions: dict[str, int] = {}
    for h in status.get("history", []):
        actions[h["action"]] = actions.get(h["action"], 0) + 1
    keep = ("checks", "launches", "rows_seen", "last_decision", "in_flight", "loop_error")
    jobs = [{k: j.get(k) for k in ("job_id", "state", "reasons", "error", "result")} for j in status.get("jobs", [])]
    return {**{k: status.get(k) for k in keep}, "actions": actions, "jobs": jobs, **({"feed": feed} if feed else {})}


class MonitorFeed:
    """The model strategy's observer in the live loop: buffers `BarObservation`s and forwards them to a
    `DriftMonitor` every `every_bars` bars as ONE ``observe`` call (then a ``tick``), without waiting.

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
        if len(self._refs) >= self.max_in_flight * (2 if self.tick else 1):  # observe (+ tick) per batch
            self.dropped_batches += 1
            self.dropped_rows += rows
            return
        feats, preds, realised = self.frames(batch)
        self._refs.append(self.monitor.observe.remote(feats, preds, realised))
        if self.tick:
            self._refs.append(self.monitor.tick.remote())
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
