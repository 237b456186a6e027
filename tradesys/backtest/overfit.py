"""Backtest overfitting statistics: CSCV and the probability of backtest overfitting, CPCV splits, PSR and DSR.

Pure numerics (arrays in, floats and frozen dataclasses out), shared by sweeps, walk-forward reports and the RL
agent's evaluation. Sharpe ratios here are per observation (not annualised) unless a name says otherwise: the
formulas of the papers are written that way, and annualising is the caller's one multiplication.

- `cscv_pbo(returns, n_splits)`: combinatorially symmetric cross-validation and the probability of backtest
  overfitting (Bailey, Borwein, López de Prado, Zhu, "The probability of backtest overfitting", J. Computational
  Finance 2017) for a T x N matrix of trial returns;
- `cpcv_splits(n_obs, n_groups, n_test_groups, purge, embargo)`: combinatorial purged cross-validation (López de
  Prado, "Advances in Financial Machine Learning", ch. 12) with its backtest paths; the index arithmetic is
  skfolio's `CombinatorialPurgedCV`;
- `probabilistic_sharpe_ratio` and `deflated_sharpe_ratio` (Bailey & López de Prado, "The Deflated Sharpe Ratio",
  J. Portfolio Management 2014), and `expected_max_sharpe` (the false-strategy benchmark).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

EULER_GAMMA = 0.5772156649015329
MAX_COMBINATIONS = 1_000_000
Metric = Callable[[np.ndarray], np.ndarray]


# ----------------------------------------------------------------------------------------------- input checks
def _matrix(x: object, field: str, *, min_rows: int = 2, min_cols: int = 1) -> np.ndarray:
    """A finite float T x N matrix (a 1-D input is one column), or ValueError naming `field`."""
    try:
        arr = np.asarray(x, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{field}: values must be numeric ({exc})") from None
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{field}: expected a 2-D array (observations x trials), got shape {arr.shape}")
    if arr.shape[0] < min_rows:
        raise ValueError(f"{field}: need at least {min_rows} observations, got {arr.shape[0]}")
    if arr.shape[1] < min_cols:
        raise ValueError(f"{field}: need at least {min_cols} trials (columns), got {arr.shape[1]}")
    bad = ~np.isfinite(arr)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{field}: non-finite value at row {row}, column {col} ({bad.sum()} in all)")
    return arr


def _int(value: object, field: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{field}: must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{field}: must be >= {low}, got {value}")
    return int(value)


def _finite(value: float, field: str) -> float:
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{field}: must be finite, got {value!r}")
    return v


# ------------------------------------------------------------------------------------------------ Sharpe ratio
def sharpe_per_period(returns: np.ndarray) -> np.ndarray:
    """Per-observation Sharpe ratio of each column (mean / sample std, ddof=1, zero risk-free rate).

    A column with zero variance has Sharpe 0 when its mean is 0 and +-inf otherwise, so a flat trial ranks as
    neither good nor bad instead of turning the statistics into NaN.
    """
    r = np.asarray(returns, dtype=float)
    if r.ndim == 1:
        r = r[:, None]
    mean = r.mean(axis=0)
    sd = r.std(axis=0, ddof=1)
    flat = sd <= 1e-12 * np.abs(mean)  # zero variance, up to rounding
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(flat, np.sign(mean) * np.inf, mean / np.where(flat, 1.0, sd))
    return np.where(flat & (mean == 0), 0.0, out)


def _sharpe_from_moments(n: np.ndarray, s1: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """Sharpe (ddof=1) from counts, sums and sums of squares; rows are combinations, columns trials."""
    mean = s1 / n
    var = np.maximum(s2 - n * mean * mean, 0.0) / (n - 1)
    sd = np.sqrt(var)
    # a variance lost to rounding (constant column) counts as zero, as in `sharpe_per_period`
    tiny = sd <= 1e-12 * np.maximum(np.abs(mean), 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(tiny, np.sign(mean) * np.inf, mean / np.where(tiny, 1.0, sd))
    return np.where(tiny & (mean == 0), 0.0, out)


# ------------------------------------------------------------------------------------------------------- CSCV
@dataclass(frozen=True, slots=True)
class CSCVResult:
    """CSCV over a T x N trial matrix: one row per combination of S/2 in-sample blocks.

    `pbo` is the share of combinations whose in-sample best trial ranks at or below the median out of sample
    (logit <= 0). `rank_oos` is that trial's relative rank out of sample, rank / (N + 1) with 1 the worst, so
    the logits stay finite; ties take the average rank. `degradation_slope`/`degradation_intercept` are the least
    squares fit of `perf_oos` on `perf_is` over the combinations (a negative slope: the better in sample, the
    worse out of sample). `prob_oos_loss` is the share of combinations where the selected trial's out-of-sample
    performance is below `threshold`.
    """

    pbo: float
    logits: np.ndarray
    rank_oos: np.ndarray
    selected: np.ndarray
    perf_is: np.ndarray
    perf_oos: np.ndarray
    combinations: np.ndarray
    n_splits: int
    n_trials: int
    n_obs: int
    degradation_slope: float
    degradation_intercept: float
    prob_oos_loss: float
    threshold: float

    @property
    def n_combinations(self) -> int:
        return int(self.combinations.shape[0])


def cscv_blocks(n_obs: int, n_splits: int) -> list[np.ndarray]:
    """The S contiguous row blocks of CSCV, in time order; sizes differ by at most one (numpy's array_split)."""
    return list(np.array_split(np.arange(n_obs), n_splits))


def cscv_pbo(
    returns: object,
    n_splits: int = 16,
    metric: Metric | None = None,
    threshold: float = 0.0,
) -> CSCVResult:
    """Combinatorially symmetric cross-validation and the probability of backtest overfitting.

    `returns`: T x N per-period returns of N trials (the configurations a sweep tried) on the same T dates.
    `n_splits` (S, even): the rows are cut into S contiguous blocks; each of the C(S, S/2) ways of choosing half
    the blocks is an in-sample set, the other half its out-of-sample set. In each, the trial with the best
    in-sample `metric` (default: per-period Sharpe) is the one a researcher would have picked; its relative rank
    among all trials out of sample gives a logit, and PBO is the share of logits <= 0.

    `metric`, if given, maps a (rows x N) block of returns to N scores (higher is better); the default uses the
    moments of each block, so the whole computation is a few matrix products.
    """
    m = _matrix(returns, "returns", min_rows=2, min_cols=2)
    n_obs, n_trials = m.shape
    s = _int(n_splits, "n_splits", 2)
    if s % 2:
        raise ValueError(f"n_splits: must be even (in- and out-of-sample halves), got {s}")
    if n_obs < 2 * s:
        raise ValueError(f"n_splits: {s} blocks need at least {2 * s} observations (2 per block), got {n_obs}")
    n_comb = math.comb(s, s // 2)
    if n_comb > MAX_COMBINATIONS:
        raise ValueError(f"n_splits: C({s}, {s // 2}) = {n_comb:,} combinations is more than {MAX_COMBINATIONS:,}")
    thr = _finite(threshold, "threshold")
    blocks = cscv_blocks(n_obs, s)
    combos = np.array(list(itertools.combinations(range(s), s // 2)), dtype=int)
    in_is = np.zeros((n_comb, s), dtype=bool)
    in_is[np.arange(n_comb)[:, None], combos] = True

    if metric is None:
        cnt = np.array([len(b) for b in blocks], dtype=float)
        s1 = np.stack([m[b].sum(axis=0) for b in blocks])
        s2 = np.stack([(m[b] ** 2).sum(axis=0) for b in blocks])
        w_is, w_oos = in_is.astype(float), (~in_is).astype(float)
        perf_is_all = _sharpe_from_moments((w_is @ cnt)[:, None], w_is @ s1, w_is @ s2)
        perf_oos_all = _sharpe_from_moments((w_oos @ cnt)[:, None], w_oos @ s1, w_oos @ s2)
    else:
        perf_is_all = np.empty((n_comb, n_trials))
        perf_oos_all = np.empty((n_comb, n_trials))
        for c in range(n_comb):
            rows_is = np.concatenate([blocks[b] for b in range(s) if in_is[c, b]])
            rows_oos = np.concatenate([blocks[b] for b in range(s) if not in_is[c, b]])
            perf_is_all[c] = _scores(metric, m[rows_is], n_trials)
            perf_oos_all[c] = _scores(metric, m[rows_oos], n_trials)

    selected = np.argmax(perf_is_all, axis=1)  # the first of equal bests, as a researcher scanning the grid would
    ranks = stats.rankdata(perf_oos_all, axis=1, method="average")
    rank_sel = ranks[np.arange(n_comb), selected] / (n_trials + 1)
    logits = np.log(rank_sel / (1.0 - rank_sel))
    perf_is = perf_is_all[np.arange(n_comb), selected]
    perf_oos = perf_oos_all[np.arange(n_comb), selected]
    slope, intercept = _degradation(perf_is, perf_oos)
    return CSCVResult(
        pbo=float(np.mean(logits <= 0.0)),
        logits=logits,
        rank_oos=rank_sel,
        selected=selected,
        perf_is=perf_is,
        perf_oos=perf_oos,
        combinations=combos,
        n_splits=s,
        n_trials=n_trials,
        n_obs=n_obs,
        degradation_slope=slope,
        degradation_intercept=intercept,
        prob_oos_loss=float(np.mean(perf_oos < thr)),
        threshold=thr,
    )


def _scores(metric: Metric, block: np.ndarray, n_trials: int) -> np.ndarray:
    out = np.asarray(metric(block), dtype=float).reshape(-1)
    if out.shape != (n_trials,):
        raise ValueError(f"metric: must return one score per trial ({n_trials}), got shape {out.shape}")
    if np.isnan(out).any():
        raise ValueError("metric: returned NaN for a trial (scores must be comparable; use -inf for 'worst')")
    return out


def _degradation(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """OLS slope and intercept of y on x over the finite pairs; NaN when x does not vary (nothing to fit)."""
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 2 or np.ptp(x[ok]) == 0:
        return float("nan"), float("nan")
    slope, intercept = np.polyfit(x[ok], y[ok], 1)
    return float(slope), float(intercept)


# ------------------------------------------------------------------------------------------------------- CPCV
@dataclass(frozen=True, slots=True)
class CPCVSplit:
    """One CPCV split: `train` rows (purged and embargoed), and the test rows of each of its test groups."""

    index: int
    test_groups: tuple[int, ...]
    train: np.ndarray
    test: tuple[np.ndarray, ...]

    @property
    def test_rows(self) -> np.ndarray:
        return np.concatenate(self.test)


@dataclass(frozen=True, slots=True)
class CPCV:
    """Combinatorial purged cross-validation over `n_obs` rows in `n_groups` contiguous groups.

    `splits`: the C(N, k) train/test splits. `paths[p, g]` is the split whose test set supplies group g in
    backtest path p; there are k * C(N, k) / N paths, and each path uses every group exactly once, so each is a
    full-length out-of-sample history (`assemble_paths`).
    """

    n_obs: int
    n_groups: int
    n_test_groups: int
    purge: int
    embargo: int
    groups: tuple[np.ndarray, ...]
    splits: tuple[CPCVSplit, ...]
    paths: np.ndarray

    @property
    def n_splits(self) -> int:
        return len(self.splits)

    @property
    def n_paths(self) -> int:
        return int(self.paths.shape[0])

    def assemble_paths(self, test_returns: Sequence[object]) -> np.ndarray:
        """(n_paths, n_obs) out-of-sample returns, one row per backtest path.

        `test_returns[i]`: the returns the model trained on split i earned on that split's test rows, in the
        order of `splits[i].test_rows` (its test groups, in time order).
        """
        if len(test_returns) != self.n_splits:
            raise ValueError(f"test_returns: need one array per split ({self.n_splits}), got {len(test_returns)}")
        per_group: list[dict[int, np.ndarray]] = []
        for split, r in zip(self.splits, test_returns, strict=True):
            arr = np.asarray(r, dtype=float).reshape(-1)
            want = sum(len(t) for t in split.test)
            if arr.shape[0] != want:
                raise ValueError(f"test_returns[{split.index}]: need {want} values (its test rows), got {arr.shape[0]}")
            cuts = np.cumsum([len(t) for t in split.test])[:-1]
            per_group.append(dict(zip(split.test_groups, np.split(arr, cuts), strict=True)))
        out = np.empty((self.n_paths, self.n_obs))
        for p in range(self.n_paths):
            for g in range(self.n_groups):
                out[p, self.groups[g]] = per_group[int(self.paths[p, g])][g]
        return out


def cpcv_splits(n_obs: int, n_groups: int = 6, n_test_groups: int = 2, purge: int = 0, embargo: int = 0) -> CPCV:
    """CPCV splits (AFML ch. 12): N contiguous groups, every choice of k of them as the test set.

    `purge`: rows dropped from training on both sides of each test block (labels or positions that span up to
    `purge` rows would otherwise overlap the test rows); `embargo`: further rows dropped from training after each
    test block (serial correlation). Groups are skfolio's: `n_obs // N` rows each, the last taking the remainder.
    """
    n = _int(n_obs, "n_obs", 1)
    g = _int(n_groups, "n_groups", 3)
    k = _int(n_test_groups, "n_test_groups", 2)
    if k >= g:
        raise ValueError(f"n_test_groups: must be < n_groups ({g}), got {k}")
    p = _int(purge, "purge", 0)
    e = _int(embargo, "embargo", 0)
    if n < g:
        raise ValueError(f"n_obs: {g} groups need at least {g} observations, got {n}")
    size = n // g
    if p + e >= size - 1:
        raise ValueError(
            f"purge: purge + embargo ({p + e}) must be < group size - 1 ({size - 1}) for {n} rows in {g} groups"
        )
    if math.comb(g, k) > MAX_COMBINATIONS:
        raise ValueError(f"n_groups: C({g}, {k}) = {math.comb(g, k):,} splits is more than {MAX_COMBINATIONS:,}")
    from skfolio.model_selection import CombinatorialPurgedCV  # heavy import (sklearn), only where it is needed

    cv = CombinatorialPurgedCV(n_folds=g, n_test_folds=k, purged_size=p, embargo_size=e)
    test_sets = cv.test_set_index
    splits = tuple(
        CPCVSplit(index=i, test_groups=tuple(int(x) for x in test_sets[i]), train=train, test=tuple(tests))
        for i, (train, tests) in enumerate(cv.split(np.zeros((n, 1))))
    )
    fold = np.minimum(np.arange(n) // size, g - 1)
    groups = tuple(np.flatnonzero(fold == j) for j in range(g))
    return CPCV(
        n_obs=n,
        n_groups=g,
        n_test_groups=k,
        purge=p,
        embargo=e,
        groups=groups,
        splits=splits,
        paths=np.asarray(cv.recombined_paths, dtype=int).T.copy(),
    )


# ------------------------------------------------------------------------------------------------ PSR and DSR
def _sharpe_sd_factor(sharpe: float, skew: float, kurtosis: float) -> float:
    """sqrt(1 - skew * SR + (kurtosis - 1) / 4 * SR^2): the non-normal standard error of SR, times sqrt(T - 1)."""
    v = 1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe * sharpe
    if v <= 0:
        raise ValueError(
            f"kurtosis: 1 - skew*SR + (kurtosis-1)/4*SR^2 = {v:.4g} <= 0 for SR {sharpe:.4g}, skew {skew:.4g}, "
            f"kurtosis {kurtosis:.4g} (kurtosis is the raw fourth moment, 3 for a normal)"
        )
    return math.sqrt(v)


def probabilistic_sharpe_ratio(
    sharpe: float, n_obs: int, skew: float = 0.0, kurtosis: float = 3.0, benchmark: float = 0.0
) -> float:
    """PSR: the probability that the true Sharpe ratio exceeds `benchmark`, given an estimate from `n_obs` returns.

    PSR = Phi((SR - SR*) sqrt(T - 1) / sqrt(1 - skew SR + (kurtosis - 1)/4 SR^2)) (Bailey & López de Prado 2012).
    `sharpe` and `benchmark` are per observation; `kurtosis` is the raw (not excess) kurtosis of the returns.
    """
    sr = _finite(sharpe, "sharpe")
    t = _int(n_obs, "n_obs", 2)
    sk = _finite(skew, "skew")
    ku = _finite(kurtosis, "kurtosis")
    b = _finite(benchmark, "benchmark")
    z = (sr - b) * math.sqrt(t - 1) / _sharpe_sd_factor(sr, sk, ku)
    return 0.5 * math.erfc(-z / math.sqrt(2.0))  # the standard normal CDF


def expected_max_sharpe(n_trials: int, variance: float, mean: float = 0.0) -> float:
    """The expected largest of `n_trials` Sharpe estimates with this mean and variance and no skill (DSR's SR_0).

    E[max] ~ mean + sqrt(V) ((1 - gamma) Phi^-1(1 - 1/N) + gamma Phi^-1(1 - 1/(N e))) (the false strategy
    theorem); one trial has nothing to be selected from, so its benchmark is `mean`.
    """
    n = _int(n_trials, "n_trials", 1)
    v = _finite(variance, "variance")
    if v < 0:
        raise ValueError(f"variance: must be >= 0, got {variance}")
    mu = _finite(mean, "mean")
    if n == 1:
        return mu
    z = (1.0 - EULER_GAMMA) * stats.norm.ppf(1.0 - 1.0 / n) + EULER_GAMMA * stats.norm.ppf(1.0 - 1.0 / (n * math.e))
    return float(mu + math.sqrt(v) * z)


@dataclass(frozen=True, slots=True)
class DeflatedSharpe:
    """DSR and what it was computed from; every Sharpe figure is per observation.

    `dsr` = PSR against `benchmark`, the Sharpe the best of `n_trials` skill-less trials would show.
    `psr` is the plain PSR against zero, for comparison.
    """

    dsr: float
    psr: float
    sharpe: float
    benchmark: float
    n_obs: int
    n_trials: int
    trials_variance: float
    skew: float
    kurtosis: float

    def as_dict(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in self.__slots__}  # type: ignore[attr-defined]


def deflated_sharpe_ratio(
    sharpe: float,
    n_obs: int,
    n_trials: int,
    trials_variance: float,
    skew: float = 0.0,
    kurtosis: float = 3.0,
    trials_mean: float = 0.0,
) -> DeflatedSharpe:
    """The deflated Sharpe ratio (Bailey & López de Prado 2014) of the trial picked out of `n_trials`.

    `sharpe`, `skew`, `kurtosis`: the selected trial's per-observation Sharpe and its returns' skewness and raw
    kurtosis over `n_obs` observations. `trials_variance`: the variance of the per-observation Sharpe estimates
    across all the trials (annualised variance / periods per year). DSR = PSR(SR_0) with
    SR_0 = `expected_max_sharpe(n_trials, trials_variance, trials_mean)`.
    """
    sr0 = expected_max_sharpe(n_trials, trials_variance, trials_mean)
    return DeflatedSharpe(
        dsr=probabilistic_sharpe_ratio(sharpe, n_obs, skew, kurtosis, benchmark=sr0),
        psr=probabilistic_sharpe_ratio(sharpe, n_obs, skew, kurtosis, benchmark=0.0),
        sharpe=float(sharpe),
        benchmark=sr0,
        n_obs=int(n_obs),
        n_trials=int(n_trials),
        trials_variance=float(trials_variance),
        skew=float(skew),
        kurtosis=float(kurtosis),
    )


def return_moments(returns: object) -> tuple[float, float, float, int]:
    """(per-observation Sharpe, skewness, raw kurtosis, n) of one return series, as PSR and DSR take them."""
    r = _matrix(returns, "returns", min_rows=3)
    if r.shape[1] != 1:
        raise ValueError(f"returns: expected one series, got {r.shape[1]} columns")
    x = r[:, 0]
    if np.ptp(x) == 0:
        raise ValueError("returns: constant series (zero variance): its Sharpe ratio is undefined")
    d = x - x.mean()
    m2, m3, m4 = float(np.mean(d**2)), float(np.mean(d**3)), float(np.mean(d**4))
    # population (biased) moments, as scipy.stats.skew / kurtosis(fisher=False) by default and as in the papers
    return float(sharpe_per_period(x)[0]), m3 / m2**1.5, m4 / m2**2, int(x.shape[0])


def psr_of_returns(returns: object, benchmark: float = 0.0) -> float:
    """PSR of a return series against a per-observation `benchmark` Sharpe."""
    sr, sk, ku, n = return_moments(returns)
    return probabilistic_sharpe_ratio(sr, n, sk, ku, benchmark)


def deflated_sharpe_of_trials(returns: object, selected: int | None = None) -> DeflatedSharpe:
    """DSR of a sweep from its T x N trial returns: the selected trial (default: the best Sharpe) against the
    expected best of N skill-less trials with the observed variance of the N trial Sharpes."""
    m = _matrix(returns, "returns", min_rows=3, min_cols=2)
    sharpes = sharpe_per_period(m)
    if not np.isfinite(sharpes).all():
        col = int(np.flatnonzero(~np.isfinite(sharpes))[0])
        raise ValueError(f"returns: trial {col} has zero variance (its Sharpe ratio is undefined)")
    n_trials = m.shape[1]
    pick = int(np.argmax(sharpes)) if selected is None else _int(selected, "selected", 0)
    if pick >= n_trials:
        raise ValueError(f"selected: must be < the number of trials ({n_trials}), got {pick}")
    sr, sk, ku, n = return_moments(m[:, pick])
    return deflated_sharpe_ratio(sr, n, n_trials, float(np.var(sharpes, ddof=1)), sk, ku, 0.0)
