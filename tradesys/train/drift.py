"""Drift detection between a reference window and a current window, performance degradation, and the retrain policy.

Pure library (no Ray, no I/O except `save_evidently_html`, which writes only the path it is given). The DriftMonitor
actor, the retraining job and MLflow logging are wired on top of these functions.

Per column (features or model predictions), NaNs dropped column by column:

- Kolmogorov-Smirnov two-sample test (`scipy.stats.ks_2samp`, two-sided; exact p-value for windows up to 10,000
  rows, asymptotic above): statistic D = sup |F_ref - F_cur| and its p-value.
- PSI, population stability index, sum_i (c_i - r_i) ln(c_i / r_i) over bins whose cut points are the reference
  quantiles k/B (k = 1..B-1, duplicates dropped); the outer bins are open so current values outside the reference
  range still count. Empty bins get the proportion `PSI_EPS` = 1e-4 (no renormalisation): the same rule Evidently
  applies for windows under 10,000 rows, so with Evidently's bin edges our number equals its number.
- Wasserstein-1 distance (`scipy.stats.wasserstein_distance`) divided by the reference standard deviation (ddof=0),
  so one threshold works for every feature whatever its units ("scale-free"; Evidently's "wasserstein" is the
  same quantity). NaN with reason ``zero_reference_std`` when the reference column is constant.

Multivariate: maximum mean discrepancy (Gretton et al. 2012) on the columns standardised by the reference mean and
std, RBF kernel k(x, y) = exp(-|x - y|^2 / (2 s^2)) with s the median pairwise Euclidean distance of the pooled
sample (the median heuristic), the unbiased estimate MMD^2_u, and a permutation p-value
(1 + #{perm >= observed}) / (1 + P) from a seeded generator. It catches changes in the joint distribution (for
example a correlation change) that leave every marginal, hence every per-column test, unchanged.

Overall drift decision (`DriftThresholds`, `DriftReport.rule`): with m columns and family-wise level alpha,

- a column drifts when its KS p-value < alpha / (2 m) (Bonferroni, half the level to the per-column family) AND the
  change is material: PSI >= psi threshold OR normalised Wasserstein >= wasserstein threshold;
- the window drifts jointly when the MMD p-value < alpha / 2;
- drift = any column drifts OR the joint test rejects. By Bonferroni the false-alarm rate on same-distribution
  windows is at most alpha (in practice below it, because of the materiality condition).

Performance degradation (`performance_degradation`): the rolling mean of the live forecast loss (squared or
absolute error) over the last `window` realised values, against the loss on the holdout at registration; degraded
when the latest rolling loss > `ratio_threshold` x holdout loss.

`DriftPolicy.decide` turns a feature report, a prediction report, a degradation result and the model's age into a
`RetrainDecision` with its reasons (codes ``feature_drift``, ``multivariate_drift``, ``prediction_drift``,
``degradation``, ``schedule``, ``cooldown``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

from tradesys.core.jsonsafe import json_ready

PSI_EPS = 1e-4
"""Proportion given to an empty bin in PSI (ln(0) is undefined); Evidently's value for windows under 10,000 rows."""

ArrayLike2D = pd.DataFrame | pd.Series | np.ndarray

__all__ = [
    "PSI_EPS",
    "ColumnDrift",
    "DegradationResult",
    "DriftPolicy",
    "DriftReport",
    "DriftThresholds",
    "MMDResult",
    "Reason",
    "RetrainDecision",
    "column_drift",
    "detect_drift",
    "evidently_column_drift",
    "json_ready",
    "mmd_test",
    "performance_degradation",
    "psi",
    "save_evidently_html",
    "wasserstein_normed",
]


# ----------------------------------------------------------------------------------------------------------------
# Per-column statistics
# ----------------------------------------------------------------------------------------------------------------


def _clean_1d(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        raise ValueError(f"{name}: no non-NaN values")
    return arr


def psi(
    reference: Any,
    current: Any,
    *,
    bins: int = 10,
    cuts: Sequence[float] | np.ndarray | None = None,
    eps: float = PSI_EPS,
) -> float:
    """Population stability index of `current` against `reference` (NaNs dropped).

    Bins: `bins` reference quantile bins, or explicit interior cut points `cuts` (sorted). Bins are right-closed
    (a, b], the first is (-inf, c_1] and the last (c_k, inf). Empty bins get proportion `eps` on either side.
    Rule of thumb: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 major shift.
    """
    ref = _clean_1d(reference, "reference")
    cur = _clean_1d(current, "current")
    if eps <= 0 or eps >= 1:
        raise ValueError(f"eps: must be in (0, 1), got {eps}")
    if cuts is None:
        if bins < 2:
            raise ValueError(f"bins: need at least 2, got {bins}")
        edges = np.unique(np.quantile(ref, np.arange(1, bins) / bins))
    else:
        edges = np.asarray(cuts, dtype=float)
        if edges.ndim != 1 or edges.size == 0 or np.any(np.diff(edges) <= 0):
            raise ValueError("cuts: must be a non-empty strictly increasing 1-D sequence")
    k = edges.size + 1
    r = np.bincount(np.searchsorted(edges, ref, side="left"), minlength=k) / ref.size
    c = np.bincount(np.searchsorted(edges, cur, side="left"), minlength=k) / cur.size
    r = np.where(r == 0, eps, r)
    c = np.where(c == 0, eps, c)
    return float(np.sum((c - r) * np.log(c / r)))


def wasserstein_normed(reference: Any, current: Any) -> float:
    """Wasserstein-1 distance divided by the reference std (ddof=0); NaN when the reference is constant."""
    ref = _clean_1d(reference, "reference")
    cur = _clean_1d(current, "current")
    sd = float(np.std(ref))
    if sd == 0.0:
        return math.nan
    return float(stats.wasserstein_distance(ref, cur)) / sd


@dataclass(frozen=True)
class ColumnDrift:
    """Drift statistics of one column. `reason` is None when all statistics are defined, else a code."""

    name: str
    n_ref: int
    n_cur: int
    ks_statistic: float
    ks_pvalue: float
    psi: float
    wasserstein: float
    ks_flag: bool = False
    psi_flag: bool = False
    wasserstein_flag: bool = False
    drifted: bool = False
    reason: str | None = None


def column_drift(reference: Any, current: Any, *, name: str = "x", psi_bins: int = 10) -> ColumnDrift:
    """KS, PSI and normalised Wasserstein of one column (flags unset: `detect_drift` applies the thresholds).

    Returns NaN statistics with a reason code (``insufficient_data``) instead of raising when a window has fewer
    than 2 non-NaN values, so one bad column does not stop a batch.
    """
    ref = np.asarray(reference, dtype=float).ravel()
    cur = np.asarray(current, dtype=float).ravel()
    ref = ref[~np.isnan(ref)]
    cur = cur[~np.isnan(cur)]
    if ref.size < 2 or cur.size < 2:
        nan = math.nan
        return ColumnDrift(name, int(ref.size), int(cur.size), nan, nan, nan, nan, reason="insufficient_data")
    ks = stats.ks_2samp(ref, cur)
    wd = wasserstein_normed(ref, cur)
    return ColumnDrift(
        name=name,
        n_ref=int(ref.size),
        n_cur=int(cur.size),
        ks_statistic=float(ks.statistic),
        ks_pvalue=float(ks.pvalue),
        psi=psi(ref, cur, bins=psi_bins),
        wasserstein=wd,
        reason="zero_reference_std" if math.isnan(wd) else None,
    )


# ----------------------------------------------------------------------------------------------------------------
# Maximum mean discrepancy
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MMDResult:
    """Unbiased MMD^2 with its permutation p-value; `bandwidth` is the RBF length scale s actually used."""

    mmd2: float
    pvalue: float
    bandwidth: float
    n_permutations: int
    n_ref: int
    n_cur: int


def _as_2d(x: ArrayLike2D, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=float)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name}: must be 1-D or 2-D, got {arr.ndim}-D")
    return arr


def _sq_dists(z: np.ndarray) -> np.ndarray:
    sq = np.einsum("ij,ij->i", z, z)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (z @ z.T)
    np.maximum(d2, 0.0, out=d2)
    np.fill_diagonal(d2, 0.0)
    return d2


def mmd_test(
    reference: ArrayLike2D,
    current: ArrayLike2D,
    *,
    n_permutations: int = 500,
    seed: int = 0,
    bandwidth: float | None = None,
    standardize: bool = True,
    max_samples: int | None = 500,
) -> MMDResult:
    """Two-sample MMD test with an RBF kernel (see module docstring for the estimator and p-value).

    Rows with any NaN are dropped. `standardize` scales every column by the reference mean and std (columns with
    zero std are only centred). Windows longer than `max_samples` are subsampled without replacement (seeded),
    because the kernel matrix is O(n^2) in memory and the permutations O(n^2 P) in time.
    """
    x = _as_2d(reference, "reference")
    y = _as_2d(current, "current")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"current: has {y.shape[1]} columns, reference has {x.shape[1]}")
    if n_permutations < 1:
        raise ValueError(f"n_permutations: must be >= 1, got {n_permutations}")
    if bandwidth is not None and not bandwidth > 0:
        raise ValueError(f"bandwidth: must be > 0, got {bandwidth}")
    x = x[~np.isnan(x).any(axis=1)]
    y = y[~np.isnan(y).any(axis=1)]
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError("reference/current: need at least 2 complete rows each for MMD")
    rng = np.random.default_rng(seed)
    if max_samples is not None:
        if x.shape[0] > max_samples:
            x = x[rng.choice(x.shape[0], max_samples, replace=False)]
        if y.shape[0] > max_samples:
            y = y[rng.choice(y.shape[0], max_samples, replace=False)]
    if standardize:
        mu = x.mean(axis=0)
        sd = x.std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        x = (x - mu) / sd
        y = (y - mu) / sd
    n, m = x.shape[0], y.shape[0]
    d2 = _sq_dists(np.vstack([x, y]))
    if bandwidth is None:
        off = d2[np.triu_indices(n + m, k=1)]
        med = float(np.median(np.sqrt(off)))
        bandwidth = med if med > 0 else 1.0
    k = np.exp(-d2 / (2.0 * bandwidth**2))
    np.fill_diagonal(k, 0.0)  # the unbiased estimate leaves out the i == j terms

    def stat(a: np.ndarray) -> np.ndarray:
        # a: (n + m, P) indicators of the "reference" group; columns are label assignments.
        b = 1.0 - a
        ka = k @ a
        kb = k @ b
        sxx = np.einsum("ip,ip->p", a, ka)
        syy = np.einsum("ip,ip->p", b, kb)
        sxy = np.einsum("ip,ip->p", a, kb)
        return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2.0 * sxy / (n * m)

    labels = np.zeros(n + m)
    labels[:n] = 1.0
    observed = float(stat(labels[:, None])[0])
    perms = np.empty((n + m, n_permutations))
    for j in range(n_permutations):
        perms[:, j] = rng.permutation(labels)
    null = stat(perms)
    pvalue = float((1 + np.count_nonzero(null >= observed)) / (1 + n_permutations))
    return MMDResult(observed, pvalue, float(bandwidth), n_permutations, n, m)


# ----------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftThresholds:
    """Thresholds of the overall rule (module docstring). `alpha` is the family-wise false-alarm level.

    psi 0.2 sits between the usual "moderate" (0.1) and "major" (0.25) marks; wasserstein 0.1 reference stds is
    Evidently's default.
    """

    alpha: float = 0.05
    psi: float = 0.2
    wasserstein: float = 0.1

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha: must be in (0, 1), got {self.alpha}")
        if self.psi <= 0:
            raise ValueError(f"psi: must be > 0, got {self.psi}")
        if self.wasserstein <= 0:
            raise ValueError(f"wasserstein: must be > 0, got {self.wasserstein}")


@dataclass(frozen=True)
class DriftReport:
    """Per-column statistics and flags, the joint MMD test, and the overall decision with its rule."""

    columns: tuple[ColumnDrift, ...]
    mmd: MMDResult | None
    thresholds: DriftThresholds
    ks_level: float
    mmd_level: float
    drift: bool
    drifted_columns: tuple[str, ...]
    multivariate_drift: bool
    rule: str
    evidently: dict[str, dict[str, float]] | None = field(default=None)

    def column(self, name: str) -> ColumnDrift:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN and inf become None, so `json.dumps(..., allow_nan=False)` works)."""
        return json_ready(asdict(self))


def _as_frame(x: ArrayLike2D, name: str) -> pd.DataFrame:
    if isinstance(x, pd.DataFrame):
        return x.set_axis([str(c) for c in x.columns], axis=1)
    if isinstance(x, pd.Series):
        return x.to_frame(name=str(x.name) if x.name is not None else "x")
    arr = np.asarray(x, dtype=float)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name}: must be 1-D or 2-D, got {arr.ndim}-D")
    return pd.DataFrame(arr, columns=[f"x{i}" for i in range(arr.shape[1])])


def detect_drift(
    reference: ArrayLike2D,
    current: ArrayLike2D,
    *,
    columns: Sequence[str] | None = None,
    thresholds: DriftThresholds | None = None,
    psi_bins: int = 10,
    multivariate: bool = True,
    n_permutations: int = 500,
    seed: int = 0,
    mmd_max_samples: int | None = 500,
    with_evidently: bool = False,
) -> DriftReport:
    """Drift of `current` against `reference` (features or predictions: DataFrames, Series or arrays).

    `columns` defaults to the reference's columns (as strings; arrays get names x0, x1, ...). `multivariate` adds
    the MMD test on the rows complete in every column (skipped, `mmd` None, for a single column, where KS covers
    it, and when fewer than 2 rows are complete). `with_evidently` attaches Evidently's KS p-value, PSI and
    normalised Wasserstein per column for cross-checking (slow import).
    """
    th = thresholds or DriftThresholds()
    ref = _as_frame(reference, "reference")
    cur = _as_frame(current, "current")
    cols = list(columns) if columns is not None else [str(c) for c in ref.columns]
    if not cols:
        raise ValueError("columns: no columns to compare")
    for c in cols:
        if c not in ref.columns:
            raise ValueError(f"columns: {c!r} is not in reference")
        if c not in cur.columns:
            raise ValueError(f"columns: {c!r} is not in current")
    use_mmd = multivariate and len(cols) > 1
    share = 2 if use_mmd else 1
    ks_level = th.alpha / (share * len(cols))
    mmd_level = th.alpha / 2 if use_mmd else math.nan

    results: list[ColumnDrift] = []
    for c in cols:
        cd = column_drift(ref[c].to_numpy(float), cur[c].to_numpy(float), name=c, psi_bins=psi_bins)
        ks_flag = bool(cd.ks_pvalue < ks_level)
        psi_flag = bool(cd.psi >= th.psi)
        wd_flag = bool(cd.wasserstein >= th.wasserstein)
        drifted = ks_flag and (psi_flag or wd_flag)
        results.append(
            ColumnDrift(
                **{
                    **asdict(cd),
                    "ks_flag": ks_flag,
                    "psi_flag": psi_flag,
                    "wasserstein_flag": wd_flag,
                    "drifted": drifted,
                }
            )
        )
    mmd = None
    multi = False
    ref_rows = ref[cols].to_numpy(float)
    cur_rows = cur[cols].to_numpy(float)
    complete = min((~np.isnan(ref_rows).any(axis=1)).sum(), (~np.isnan(cur_rows).any(axis=1)).sum())
    if use_mmd and complete >= 2:  # too few complete rows: no joint test rather than an error for the batch
        mmd = mmd_test(
            ref_rows,
            cur_rows,
            n_permutations=n_permutations,
            seed=seed,
            max_samples=mmd_max_samples,
        )
        multi = mmd.pvalue < mmd_level
    drifted_cols = tuple(r.name for r in results if r.drifted)
    rule = (
        f"column drifts if KS p < alpha/({share}m) = {ks_level:.3g} AND (PSI >= {th.psi:g} OR "
        f"Wasserstein/std_ref >= {th.wasserstein:g}); "
        + (f"joint drift if MMD permutation p < alpha/2 = {mmd_level:.3g}; " if use_mmd else "")
        + f"drift = any column drifts{' OR joint drift' if use_mmd else ''} (family-wise level alpha = {th.alpha:g})"
    )
    ev = evidently_column_drift(ref, cur, cols) if with_evidently else None
    return DriftReport(
        columns=tuple(results),
        mmd=mmd,
        thresholds=th,
        ks_level=ks_level,
        mmd_level=mmd_level,
        drift=bool(drifted_cols) or multi,
        drifted_columns=drifted_cols,
        multivariate_drift=multi,
        rule=rule,
        evidently=ev,
    )


# ----------------------------------------------------------------------------------------------------------------
# Evidently
# ----------------------------------------------------------------------------------------------------------------

_EVIDENTLY_METHODS = {"ks_pvalue": "ks", "psi": "psi", "wasserstein": "wasserstein"}


def _evidently_report(columns: Sequence[str]) -> Any:
    from evidently import Report
    from evidently.metrics import ValueDrift

    return Report([ValueDrift(column=c, method=m) for c in columns for m in _EVIDENTLY_METHODS.values()])


def _evidently_run(reference: pd.DataFrame, current: pd.DataFrame, columns: Sequence[str]) -> Any:
    from evidently import DataDefinition, Dataset

    cols = list(columns)
    dd = DataDefinition(numerical_columns=cols)
    ref = Dataset.from_pandas(reference[cols].astype(float).reset_index(drop=True), data_definition=dd)
    cur = Dataset.from_pandas(current[cols].astype(float).reset_index(drop=True), data_definition=dd)
    return _evidently_report(cols).run(current_data=cur, reference_data=ref)


def evidently_column_drift(
    reference: pd.DataFrame, current: pd.DataFrame, columns: Sequence[str] | None = None
) -> dict[str, dict[str, float]]:
    """Evidently 0.7 `ValueDrift` per column: {"col": {"ks_pvalue", "psi", "wasserstein"}}.

    Evidently's PSI bins differ from ours (Sturges bins over the pooled sample, not reference quantiles, and value
    counts when the reference has <= 20 distinct values); its KS p-value and normalised Wasserstein are the same
    quantities as ours.
    """
    cols = list(columns) if columns is not None else [str(c) for c in reference.columns]
    snap = _evidently_run(reference, current, cols)
    out: dict[str, dict[str, float]] = {c: {} for c in cols}
    for item in snap.dict()["metrics"]:
        cfg = item["config"]
        key = next(k for k, v in _EVIDENTLY_METHODS.items() if v == cfg["method"])
        out[cfg["column"]][key] = float(item["value"])
    return out


def save_evidently_html(
    reference: pd.DataFrame, current: pd.DataFrame, path: str | Path, columns: Sequence[str] | None = None
) -> Path:
    """Write Evidently's HTML drift report (KS, PSI, Wasserstein per column) to `path`; returns the path."""
    cols = list(columns) if columns is not None else [str(c) for c in reference.columns]
    out = Path(path)
    _evidently_run(reference, current, cols).save_html(str(out))
    return out


# ----------------------------------------------------------------------------------------------------------------
# Performance degradation
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DegradationResult:
    """Rolling live loss against the holdout loss. `rolling_error[t]` is the mean loss over the `window` rows
    ending at t (NaN until `min_periods` valid rows); `current_error` is its last value."""

    metric: str
    window: int
    holdout_error: float
    ratio_threshold: float
    rolling_error: np.ndarray
    current_error: float
    ratio: float
    degraded: bool
    n_valid: int
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("rolling_error")
        return json_ready(d)


def performance_degradation(
    y_true: Any,
    y_pred: Any,
    holdout_error: float,
    *,
    metric: Literal["mse", "mae"] = "mse",
    window: int = 20,
    ratio_threshold: float = 1.5,
    min_periods: int | None = None,
) -> DegradationResult:
    """Degraded when the latest rolling live loss > `ratio_threshold` x `holdout_error` (same metric, same units).

    Rows where the forecast or the realised value is NaN do not count; a window needs `min_periods` (default
    `window`) valid rows, else the result is not degraded with reason ``insufficient_data``.
    """
    t = np.asarray(y_true, dtype=float).ravel()
    p = np.asarray(y_pred, dtype=float).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_pred: length {p.size} differs from y_true length {t.size}")
    if metric not in ("mse", "mae"):
        raise ValueError(f"metric: must be 'mse' or 'mae', got {metric!r}")
    if window < 1:
        raise ValueError(f"window: must be >= 1, got {window}")
    if not (holdout_error > 0 and math.isfinite(holdout_error)):
        raise ValueError(f"holdout_error: must be a finite number > 0, got {holdout_error}")
    if not ratio_threshold > 0:
        raise ValueError(f"ratio_threshold: must be > 0, got {ratio_threshold}")
    mp = window if min_periods is None else min_periods
    if not 1 <= mp <= window:
        raise ValueError(f"min_periods: must be in [1, window], got {mp}")
    err = t - p
    loss = err * err if metric == "mse" else np.abs(err)
    valid = ~np.isnan(loss)
    csum = np.concatenate([[0.0], np.cumsum(np.where(valid, loss, 0.0))])
    ccnt = np.concatenate([[0], np.cumsum(valid)])
    idx = np.arange(1, loss.size + 1)
    lo = np.maximum(idx - window, 0)
    counts = ccnt[idx] - ccnt[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        rolling = np.where(counts >= mp, (csum[idx] - csum[lo]) / counts, np.nan)
    current = float(rolling[-1]) if rolling.size else math.nan
    n_valid = int(valid.sum())
    if math.isnan(current):
        return DegradationResult(
            metric,
            window,
            float(holdout_error),
            float(ratio_threshold),
            rolling,
            current,
            math.nan,
            False,
            n_valid,
            "insufficient_data",
        )
    ratio = current / holdout_error
    return DegradationResult(
        metric,
        window,
        float(holdout_error),
        float(ratio_threshold),
        rolling,
        current,
        ratio,
        bool(ratio > ratio_threshold),
        n_valid,
    )


# ----------------------------------------------------------------------------------------------------------------
# Retrain policy
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reason:
    """One trigger: a code (feature_drift, multivariate_drift, prediction_drift, degradation, schedule, cooldown)
    and a human-readable detail."""

    code: str
    detail: str


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    reasons: tuple[Reason, ...]

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(r.code for r in self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return json_ready(asdict(self))


@dataclass(frozen=True)
class DriftPolicy:
    """Decides "retrain" from drift, degradation or the schedule.

    Retrain when any enabled trigger fires: feature drift (per column or joint MMD), prediction drift, performance
    degradation, or the model is older than `max_age` (schedule). Drift and degradation triggers inside `cooldown`
    after the last training are reported but do not retrain (reason ``cooldown``), so one drift episode does not
    start a retraining storm; the schedule always retrains.
    """

    max_age: timedelta = timedelta(days=30)
    cooldown: timedelta = timedelta(days=1)
    on_feature_drift: bool = True
    on_prediction_drift: bool = True
    on_degradation: bool = True

    def __post_init__(self) -> None:
        if self.max_age <= timedelta(0):
            raise ValueError(f"max_age: must be positive, got {self.max_age}")
        if self.cooldown < timedelta(0) or self.cooldown > self.max_age:
            raise ValueError(f"cooldown: must be in [0, max_age], got {self.cooldown}")

    def decide(
        self,
        *,
        now: datetime,
        last_trained: datetime,
        feature_drift: DriftReport | None = None,
        prediction_drift: DriftReport | None = None,
        degradation: DegradationResult | None = None,
    ) -> RetrainDecision:
        """All triggers that fire, in order: feature_drift, multivariate_drift, prediction_drift, degradation,
        schedule (then cooldown when it suppresses the others)."""
        try:
            age = now - last_trained
        except TypeError as exc:
            raise ValueError("last_trained: must be both timezone-aware or both naive with now") from exc
        if age < timedelta(0):
            raise ValueError(f"last_trained: {last_trained.isoformat()} is after now {now.isoformat()}")
        triggers: list[Reason] = []
        if self.on_feature_drift and feature_drift is not None:
            if feature_drift.drifted_columns:
                details = ", ".join(
                    f"{c.name} (KS p={c.ks_pvalue:.2g}, PSI={c.psi:.3f}, W/std={c.wasserstein:.3f})"
                    for c in feature_drift.columns
                    if c.drifted
                )
                triggers.append(Reason("feature_drift", f"drifted columns: {details}"))
            if feature_drift.multivariate_drift and feature_drift.mmd is not None:
                triggers.append(
                    Reason(
                        "multivariate_drift",
                        f"MMD^2={feature_drift.mmd.mmd2:.4g}, p={feature_drift.mmd.pvalue:.3g} "
                        f"< {feature_drift.mmd_level:.3g}",
                    )
                )
        if self.on_prediction_drift and prediction_drift is not None and prediction_drift.drift:
            cols = ", ".join(prediction_drift.drifted_columns) or "joint (MMD)"
            triggers.append(Reason("prediction_drift", f"prediction distribution drifted: {cols}"))
        if self.on_degradation and degradation is not None and degradation.degraded:
            triggers.append(
                Reason(
                    "degradation",
                    f"rolling {degradation.metric} {degradation.current_error:.4g} = {degradation.ratio:.2f} x "
                    f"holdout {degradation.holdout_error:.4g} > {degradation.ratio_threshold:g} x",
                )
            )
        if age > self.max_age:
            return RetrainDecision(True, (*triggers, Reason("schedule", f"model age {age} > max age {self.max_age}")))
        if triggers and age < self.cooldown:
            return RetrainDecision(
                False, (*triggers, Reason("cooldown", f"last trained {age} ago < cooldown {self.cooldown}"))
            )
        return RetrainDecision(bool(triggers), tuple(triggers))
