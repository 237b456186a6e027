"""Supervised data sets for the forecasting networks, and leak-free walk-forward splits (purging + embargo).

Why here: every number a report shows depends on no label leaking into training. The sample/label timing, the
purge and the embargo (Lopez de Prado, *Advances in Financial Machine Learning*, 2018, ch. 7) and the rule that
standardisation statistics come from the training fold alone are fixed in this one module, so training jobs,
Ray Tune trainables and evaluation all cut the data the same way.

Conventions (positions are integer row numbers of the feature frame, time ascending):

* A sample is made at decision time ``t`` (the close of row t). Its input is the window of feature rows
  ``t-lookback+1 .. t`` (nothing after t). Its labels use the returns of rows ``t+1 .. t+h`` (h = ``vol_horizon``):
  ``y_ret`` = r_{t+1} (the next-period simple return), ``y_vol`` = sqrt(mean(r_{t+1..t+h}^2)) (the realised
  per-period root-mean-square return over the next h periods, in return units: not annualised), ``y_dir`` =
  1[r_{t+1} > 0]. ``label_start = t+1``, ``label_end = t+h`` (inclusive) is the sample's label interval.
* Default features from a returns series (`default_features`): r_t, |r_t|, and the trailing realised vols
  sqrt(mean r^2) over 5 and 22 rows ending at t (all causal). Leading rows with a NaN feature (warm-up) are
  dropped before windows are cut; a NaN after the warm-up is an error.
* Purging: a training sample is dropped if its label interval [label_start, label_end] intersects the test span
  [min label_start, max label_end] of the test samples (and the test samples' own decision rows). Embargo: training
  samples whose decision time lies in the ``embargo`` rows right after the test span are dropped too. In a
  forward-only walk-forward split (training before test) the purge is what bites: it removes the last h-1 or so
  training samples whose labels run into the test period; the embargo only bites when training resumes after a
  test block, as in `purged_kfold_splits`.
* Standardisation: `Standardizer.fit` uses only the feature rows that the given (training) samples' windows cover,
  never a test row; targets are scaled by the training std of ``y_ret`` and the training mean of ``y_vol``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import pandas as pd

from tradesys.quant.validate import float_series

__all__ = [
    "Samples",
    "Split",
    "Standardizer",
    "default_features",
    "make_samples",
    "purge_and_embargo",
    "purged_kfold_splits",
    "walk_forward_splits",
]


@dataclass(frozen=True)
class Samples:
    """Windows and targets. ``X`` is (n, lookback, F) float32; targets (n,) float64 (``y_dir`` in {0, 1}).

    ``t`` is each sample's decision-row position in the feature frame, ``label_start``/``label_end`` the label
    interval (inclusive positions), ``index`` the decision-row labels (dates), ``features`` the (cleaned) feature
    frame the windows were cut from, ``returns`` the returns aligned to it (used by baselines such as GARCH).
    """

    X: np.ndarray
    y_ret: np.ndarray
    y_vol: np.ndarray
    y_dir: np.ndarray
    t: np.ndarray
    label_start: np.ndarray
    label_end: np.ndarray
    index: pd.Index
    features: pd.DataFrame
    returns: pd.Series
    lookback: int
    vol_horizon: int

    def __len__(self) -> int:
        return int(self.X.shape[0])

    def subset(self, idx: np.ndarray | Sequence[int]) -> Samples:
        """The samples at the given sample positions (the frame and returns are shared, not copied)."""
        i = np.asarray(idx, dtype=np.int64)
        return replace(
            self,
            X=self.X[i],
            y_ret=self.y_ret[i],
            y_vol=self.y_vol[i],
            y_dir=self.y_dir[i],
            t=self.t[i],
            label_start=self.label_start[i],
            label_end=self.label_end[i],
            index=self.index[i],
        )


def _as_series(returns: pd.Series | pd.DataFrame | np.ndarray) -> pd.Series:
    s = float_series(returns, "returns")
    if not np.isfinite(s.to_numpy()).all():
        raise ValueError("returns: contains NaN/inf; drop or fill them first")
    return s


def default_features(returns: pd.Series | pd.DataFrame | np.ndarray) -> pd.DataFrame:
    """Causal features from a returns series: r, |r|, trailing 5- and 22-row realised vol (sqrt mean r^2)."""
    r = _as_series(returns)
    r2 = r * r
    return pd.DataFrame(
        {
            "ret": r,
            "abs_ret": r.abs(),
            "rv5": np.sqrt(r2.rolling(5).mean()),
            "rv22": np.sqrt(r2.rolling(22).mean()),
        },
        index=r.index,
    )


def make_samples(
    returns: pd.Series | pd.DataFrame | np.ndarray,
    features: pd.DataFrame | None = None,
    *,
    lookback: int = 20,
    vol_horizon: int = 5,
) -> Samples:
    """Cut (window -> next return, next-h realised vol, direction) samples; see the module conventions.

    `features` must share `returns`' index (it defaults to `default_features(returns)`); the leading rows where
    a feature is NaN (warm-up) are dropped first; a NaN after them raises (dropping it would make "the next row"
    skip a period). Only decision rows with a full window behind and h returns ahead become samples.
    """
    if not isinstance(lookback, (int, np.integer)) or lookback < 1:
        raise ValueError(f"lookback: must be an integer >= 1, got {lookback!r}")
    if not isinstance(vol_horizon, (int, np.integer)) or vol_horizon < 1:
        raise ValueError(f"vol_horizon: must be an integer >= 1, got {vol_horizon!r}")
    r = _as_series(returns)
    feats = default_features(r) if features is None else features
    if not isinstance(feats, pd.DataFrame):
        raise ValueError("features: must be a pandas DataFrame indexed like returns")
    if len(feats) != len(r) or not feats.index.equals(r.index):
        raise ValueError("features: index must equal the returns' index")
    complete = feats.notna().all(axis=1).to_numpy()
    if not complete.any():
        raise ValueError("features: no row without NaN")
    first = int(np.argmax(complete))
    if not complete[first:].all():
        bad = feats.index[first + int(np.argmin(complete[first:]))]
        raise ValueError(f"features: NaN after the warm-up (at {bad!r}); fill or drop it before cutting samples")
    feats = feats.iloc[first:].astype(np.float64)
    r = r.iloc[first:]
    n_rows = len(feats)
    n = n_rows - lookback + 1 - vol_horizon
    if n < 1:
        raise ValueError(f"returns: {n_rows} usable rows are too few for lookback={lookback}, h={vol_horizon}")
    values = feats.to_numpy()
    t = np.arange(lookback - 1, lookback - 1 + n, dtype=np.int64)
    windows = np.lib.stride_tricks.sliding_window_view(values, lookback, axis=0)  # (n_rows-L+1, F, L)
    X = np.ascontiguousarray(windows[:n].transpose(0, 2, 1), dtype=np.float32)
    rv = r.to_numpy()
    ahead = np.lib.stride_tricks.sliding_window_view(rv[lookback:], vol_horizon)[:n]  # rows t+1..t+h
    y_ret = rv[t + 1]
    return Samples(
        X=X,
        y_ret=y_ret.astype(np.float64),
        y_vol=np.sqrt(np.mean(ahead * ahead, axis=1)),
        y_dir=(y_ret > 0).astype(np.float64),
        t=t,
        label_start=t + 1,
        label_end=t + vol_horizon,
        index=feats.index[t],
        features=feats,
        returns=r,
        lookback=int(lookback),
        vol_horizon=int(vol_horizon),
    )


@dataclass(frozen=True)
class Split:
    """Sample positions of one fold: ``train`` (after purge and embargo) and ``test``; ``purged``/``embargoed``
    count what was dropped from training."""

    train: np.ndarray
    test: np.ndarray
    purged: int = 0
    embargoed: int = 0


def purge_and_embargo(
    train: np.ndarray,
    test: np.ndarray,
    t: np.ndarray,
    label_end: np.ndarray,
    *,
    embargo: int = 0,
) -> Split:
    """Drop training samples whose [t, label_end] interval meets the test span, then those in the embargo.

    The test span runs from the first test decision row to the last test label row; a training sample overlaps it
    when its own decision row or label rows fall inside (Lopez de Prado 7.4.1). The embargo drops training samples
    whose decision row is within `embargo` rows after the span (7.4.2).
    """
    if embargo < 0:
        raise ValueError(f"embargo: must be >= 0, got {embargo}")
    train = np.asarray(train, dtype=np.int64)
    test = np.asarray(test, dtype=np.int64)
    if test.size == 0:
        raise ValueError("test: empty test set")
    lo = int(t[test].min())
    hi = int(label_end[test].max())
    tr_start, tr_end = t[train], label_end[train]
    overlap = (tr_start <= hi) & (tr_end >= lo)
    in_embargo = ~overlap & (tr_start > hi) & (tr_start <= hi + embargo)
    keep = ~(overlap | in_embargo)
    return Split(train=train[keep], test=test, purged=int(overlap.sum()), embargoed=int(in_embargo.sum()))


def walk_forward_splits(
    samples: Samples,
    *,
    n_folds: int,
    test_size: int,
    scheme: Literal["expanding", "rolling"] = "expanding",
    train_size: int | None = None,
    min_train: int = 1,
    embargo: int = 0,
) -> list[Split]:
    """Consecutive test blocks of `test_size` samples ending at the last sample; training precedes each block.

    "expanding": training is every earlier sample; "rolling": the `train_size` samples before the block. Purging
    then removes training samples whose labels reach into the test block (and `embargo` applies as documented).
    Raises if a fold would keep fewer than `min_train` training samples.
    """
    n = len(samples)
    if n_folds < 1 or test_size < 1:
        raise ValueError(f"n_folds/test_size: must be >= 1, got {n_folds}/{test_size}")
    if scheme not in ("expanding", "rolling"):
        raise ValueError(f"scheme: must be 'expanding' or 'rolling', got {scheme!r}")
    if scheme == "rolling" and (train_size is None or train_size < 1):
        raise ValueError("train_size: required (>= 1) for the rolling scheme")
    first_test = n - n_folds * test_size
    if first_test < 1:
        raise ValueError(f"n_folds: {n_folds} x test_size {test_size} leaves no training data in {n} samples")
    splits = []
    for k in range(n_folds):
        a = first_test + k * test_size
        test = np.arange(a, a + test_size)
        start = 0 if scheme == "expanding" else max(0, a - int(train_size))  # type: ignore[arg-type]
        split = purge_and_embargo(np.arange(start, a), test, samples.t, samples.label_end, embargo=embargo)
        if split.train.size < min_train:
            raise ValueError(f"min_train: fold {k} keeps {split.train.size} training samples (< {min_train})")
        splits.append(split)
    return splits


def purged_kfold_splits(samples: Samples, *, n_folds: int, embargo: int = 0) -> list[Split]:
    """K contiguous test blocks; training is all other samples, purged and embargoed (Lopez de Prado 7.4.3)."""
    n = len(samples)
    if n_folds < 2 or n_folds > n:
        raise ValueError(f"n_folds: must be in [2, {n}], got {n_folds}")
    out = []
    for block in np.array_split(np.arange(n), n_folds):
        train = np.setdiff1d(np.arange(n), block)
        out.append(purge_and_embargo(train, block, samples.t, samples.label_end, embargo=embargo))
    return out


@dataclass(frozen=True)
class Standardizer:
    """Per-feature mean/std and target scales, fitted on training samples only (see the module conventions)."""

    mean: np.ndarray
    std: np.ndarray
    ret_scale: float
    vol_scale: float
    rows: np.ndarray  # the feature-frame rows the statistics came from (for audit/tests)

    @classmethod
    def fit(cls, samples: Samples, idx: np.ndarray | Sequence[int] | None = None) -> Standardizer:
        """Fit on the feature rows covered by the windows of `samples[idx]` (all samples if idx is None)."""
        s = samples if idx is None else samples.subset(idx)
        if len(s) == 0:
            raise ValueError("idx: no training samples to fit the standardiser on")
        covered = np.zeros(len(samples.features), dtype=bool)
        for a in s.t:  # windows are contiguous: mark rows t-L+1..t
            covered[a - s.lookback + 1 : a + 1] = True
        rows = np.flatnonzero(covered)
        vals = samples.features.to_numpy()[rows]
        std = vals.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        ret_scale = float(np.std(s.y_ret)) or 1.0
        vol_scale = float(np.mean(s.y_vol)) or 1.0
        return cls(mean=vals.mean(axis=0), std=std, ret_scale=ret_scale, vol_scale=vol_scale, rows=rows)

    def transform(self, samples: Samples) -> Samples:
        """Standardised windows and scaled targets (y_ret / ret_scale, y_vol / vol_scale; y_dir unchanged)."""
        X = ((samples.X - self.mean.astype(np.float32)) / self.std.astype(np.float32)).astype(np.float32)
        return replace(samples, X=X, y_ret=samples.y_ret / self.ret_scale, y_vol=samples.y_vol / self.vol_scale)
