"""The live loop's side of drift monitoring: the reference windows built from the configuration, the
`DriftMonitor` constructor arguments (`monitor_kwargs`) and the run summary's compact status.

Why not in the actor file: these read data and the model strategy and build plain objects; the Supervisor calls
them before it creates the actor, and none of them is Ray.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tradesys.train.drift_monitor import MonitorConfig

if TYPE_CHECKING:
    from tradesys.train.launch import RetrainLauncher

__all__ = [
    "LIVE_FEATURES",
    "LIVE_PREDICTIONS",
    "compact_status",
    "monitor_kwargs",
    "reference_features",
    "reference_predictions",
]


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
    from tradesys.train.launch import JobSubmissionLauncher, RayTaskLauncher, default_train_script  # Ray: lazily

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
