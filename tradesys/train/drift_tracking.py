"""Where the drift monitor's checks go: an MLflow run per check (`MlflowDriftLogger`) and a JSON-lines audit trail
(`JsonlAudit`), next to `tradesys.train.tracking` whose URI rules they follow.

Why separate from the monitor's logic: the core (`tradesys.train.drift_monitor.DriftMonitorCore`) only calls
``log_check``/``set_tags``/``write`` on whatever sinks it is given, so it runs and is tested without MLflow.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
import threading
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from tradesys.train.drift import DegradationResult, DriftReport, json_ready

__all__ = ["DRIFT_EXPERIMENT", "JsonlAudit", "MlflowDriftLogger"]

DRIFT_EXPERIMENT = "tradesys-drift"


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
