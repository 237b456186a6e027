"""Overfitting statistics against published figures, theory and brute force.

- DSR and its benchmark against the worked example of Bailey & López de Prado, "The Deflated Sharpe Ratio"
  (J. Portfolio Management 40(5), 2014), section "A numerical example": N = 100 trials whose annualised Sharpe
  ratios have variance 1/2, an annualised SR of 2.5 over T = 1250 daily returns (250 a year), skewness -3 and
  kurtosis 10 give SR_0 ~ 0.1132 (per day) and DSR = 0.9004; "after running only N = 46 independent trials ...
  DSR would have been 0.9505", and with normal returns (0, 3) DSR = 0.9505 after N = 88 trials.
- PSR's calibration under the null by simulation, the false-strategy benchmark against the exact expected
  maximum of N normals (numerical integration).
- CSCV/PBO against a direct, loop-by-loop implementation of the paper's algorithm, ~0 for a real edge, and the
  uniform out-of-sample rank (PBO = 1/2 for an even N) that theory gives for pure noise.
- CPCV: C(N, k) splits, k C(N, k) / N paths each covering every group once, and the purge/embargo rule.
"""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
import pytest
from scipy import integrate, stats

from tradesys.backtest.overfit import (
    cpcv_splits,
    cscv_pbo,
    deflated_sharpe_of_trials,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    probabilistic_sharpe_ratio,
    psr_of_returns,
    return_moments,
    sharpe_per_period,
)

# ------------------------------------------------------------------------------------------ PSR / DSR: paper
PAPER_SR = 2.5 / math.sqrt(250)  # annualised 2.5, daily
PAPER_VAR = 0.5 / 250  # variance of the trials' annualised Sharpes, 1/2, per day


def test_dsr_benchmark_and_value_match_the_published_example() -> None:
    assert expected_max_sharpe(100, PAPER_VAR) == pytest.approx(0.1132, abs=5e-5)
    d = deflated_sharpe_ratio(PAPER_SR, 1250, n_trials=100, trials_variance=PAPER_VAR, skew=-3.0, kurtosis=10.0)
    assert d.benchmark == pytest.approx(0.1132, abs=5e-5)
    assert d.dsr == pytest.approx(0.9004, abs=5e-5)
    assert d.dsr < 0.95  # the paper's verdict: not significant at 95% after 100 trials
    assert d.psr > 0.9999  # while the unadjusted PSR against zero looks conclusive


def test_dsr_trial_counts_at_the_95_percent_threshold_match_the_paper() -> None:
    at46 = deflated_sharpe_ratio(PAPER_SR, 1250, 46, PAPER_VAR, skew=-3.0, kurtosis=10.0).dsr
    at47 = deflated_sharpe_ratio(PAPER_SR, 1250, 47, PAPER_VAR, skew=-3.0, kurtosis=10.0).dsr
    assert at46 == pytest.approx(0.9505, abs=5e-5)
    assert at47 < 0.95 < at46  # N = 46 is the largest count that passes
    normal88 = deflated_sharpe_ratio(PAPER_SR, 1250, 88, PAPER_VAR, skew=0.0, kurtosis=3.0).dsr
    normal89 = deflated_sharpe_ratio(PAPER_SR, 1250, 89, PAPER_VAR, skew=0.0, kurtosis=3.0).dsr
    assert normal88 == pytest.approx(0.9505, abs=5e-5)
    assert normal89 < 0.95 < normal88


@pytest.mark.parametrize("n", [100, 1000, 10_000])
def test_expected_max_sharpe_approximates_the_exact_expected_maximum_of_normals(n: int) -> None:
    """E[max of n iid N(0,1)] = int x n phi(x) Phi(x)^(n-1) dx; the false-strategy formula is within 1%."""
    exact = integrate.quad(lambda x: x * n * stats.norm.pdf(x) * stats.norm.cdf(x) ** (n - 1), -12, 12, limit=400)[0]
    assert expected_max_sharpe(n, 1.0) == pytest.approx(exact, rel=0.01)
    assert expected_max_sharpe(n, 0.04, mean=0.1) == pytest.approx(0.1 + 0.2 * expected_max_sharpe(n, 1.0))
    assert expected_max_sharpe(1, 0.04, mean=0.1) == 0.1  # one trial: nothing was selected


def _null_rejections(x: np.ndarray, true_sr: float, use_moments: bool) -> float:
    """Share of series whose PSR against their true Sharpe is above 0.95 (5% under a calibrated PSR)."""
    if use_moments:
        p = np.array([psr_of_returns(row, true_sr) for row in x])
    else:
        sr = x.mean(axis=1) / x.std(axis=1, ddof=1)
        p = np.array([probabilistic_sharpe_ratio(s, x.shape[1], 0.0, 3.0, true_sr) for s in sr])
    return float(np.mean(p > 0.95))


def test_psr_is_calibrated_under_the_null_and_its_moments_matter() -> None:
    rng = np.random.default_rng(7)
    n, t = 2000, 250
    normal = rng.normal(0.1, 1.0, size=(n, t))  # true per-period Sharpe 0.1
    skewed = 1.1 - rng.exponential(1.0, size=(n, t))  # mean 0.1, sd 1: skew -2, kurtosis 9
    band = 3.5 * math.sqrt(0.05 * 0.95 / n)
    assert _null_rejections(normal, 0.1, use_moments=True) == pytest.approx(0.05, abs=band)
    assert _null_rejections(skewed, 0.1, use_moments=True) == pytest.approx(0.05, abs=band)
    # ignoring the negative skew and fat tails (normal moments) rejects the true Sharpe far too often
    assert _null_rejections(skewed, 0.1, use_moments=False) > 0.05 + 2 * band


def test_psr_closed_form_and_moments_against_scipy() -> None:
    x = 1.1 - np.random.default_rng(9).exponential(1.0, size=400)
    sr, sk, ku, n = return_moments(x)
    assert sr == pytest.approx(statistics.mean(x) / statistics.stdev(x), rel=1e-12)
    assert sk == pytest.approx(stats.skew(x), rel=1e-10)
    assert ku == pytest.approx(stats.kurtosis(x, fisher=False), rel=1e-10)
    z = (sr - 0.02) * math.sqrt(n - 1) / math.sqrt(1 - sk * sr + (ku - 1) / 4 * sr**2)
    assert psr_of_returns(x, 0.02) == pytest.approx(stats.norm.cdf(z), rel=1e-12)
    assert probabilistic_sharpe_ratio(0.05, 100, benchmark=0.05) == 0.5


def test_dsr_of_pure_noise_trials_rarely_passes_where_psr_of_the_best_almost_always_does() -> None:
    dsr, psr = [], []
    for seed in range(100):
        trials = np.random.default_rng(seed).normal(0.0, 0.01, size=(500, 50))
        d = deflated_sharpe_of_trials(trials)
        dsr.append(d.dsr)
        psr.append(d.psr)
        assert d.n_trials == 50 and d.n_obs == 500
    assert np.mean(np.array(dsr) > 0.95) <= 0.05
    assert np.mean(np.array(psr) > 0.95) > 0.8  # 1 - 0.95^50 = 0.92 by theory


def test_deflated_sharpe_of_trials_uses_the_best_trial_and_the_spread_of_all() -> None:
    rng = np.random.default_rng(3)
    m = rng.normal(0.0, 0.01, size=(300, 8))
    m[:, 5] += 0.004
    d = deflated_sharpe_of_trials(m)
    x = m[:, 5]
    sharpes = [statistics.mean(m[:, j]) / statistics.stdev(m[:, j]) for j in range(8)]
    assert d.sharpe == pytest.approx(max(sharpes), rel=1e-12)
    assert d.trials_variance == pytest.approx(statistics.variance(sharpes), rel=1e-10)
    assert d.skew == pytest.approx(stats.skew(x)) and d.kurtosis == pytest.approx(stats.kurtosis(x) + 3.0)
    direct = deflated_sharpe_ratio(d.sharpe, 300, 8, d.trials_variance, d.skew, d.kurtosis)
    assert d.dsr == direct.dsr
    assert deflated_sharpe_of_trials(m, selected=0).sharpe == pytest.approx(sharpes[0], rel=1e-12)


def test_psr_and_dsr_refuse_bad_input_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"^n_obs: must be >= 2"):
        probabilistic_sharpe_ratio(0.1, 1)
    with pytest.raises(ValueError, match=r"^sharpe: must be finite"):
        probabilistic_sharpe_ratio(float("nan"), 100)
    with pytest.raises(ValueError, match=r"^kurtosis: "):
        probabilistic_sharpe_ratio(1.0, 100, skew=5.0, kurtosis=1.0)
    with pytest.raises(ValueError, match=r"^n_trials: must be >= 1"):
        expected_max_sharpe(0, 1.0)
    with pytest.raises(ValueError, match=r"^variance: must be >= 0"):
        deflated_sharpe_ratio(0.1, 100, 10, -1.0)
    with pytest.raises(ValueError, match=r"^returns: constant series"):
        return_moments(np.full(20, 0.01))
    with pytest.raises(ValueError, match=r"^returns: non-finite value at row 2, column 0"):
        psr_of_returns([0.01, 0.02, float("inf"), 0.0])
    with pytest.raises(ValueError, match=r"^selected: must be < the number of trials \(3\)"):
        deflated_sharpe_of_trials(np.random.default_rng(0).normal(size=(30, 3)), selected=3)


# ------------------------------------------------------------------------------------------------- CSCV / PBO
def _brute_force_cscv(m: np.ndarray, s: int) -> tuple[float, list[float], list[int]]:
    """The paper's algorithm written out with loops and the statistics module (no shared code)."""
    t, n = m.shape
    bounds, start = [], 0
    for b in range(s):  # contiguous blocks; the first t % s blocks one row longer
        size = t // s + (1 if b < t % s else 0)
        bounds.append(list(range(start, start + size)))
        start += size
    logits, picks = [], []
    for combo in itertools.combinations(range(s), s // 2):
        rows_is = [r for b in combo for r in bounds[b]]
        rows_oos = [r for b in range(s) if b not in combo for r in bounds[b]]

        def perf(rows: list[int], j: int) -> float:
            col = [float(m[r, j]) for r in rows]
            return statistics.mean(col) / statistics.stdev(col)

        r_is = [perf(rows_is, j) for j in range(n)]
        r_oos = [perf(rows_oos, j) for j in range(n)]
        best = max(range(n), key=lambda j: (r_is[j], -j))
        below = sum(1 for v in r_oos if v < r_oos[best])
        equal = sum(1 for v in r_oos if v == r_oos[best])
        rank = below + (equal + 1) / 2  # 1 = worst, ties averaged
        w = rank / (n + 1)
        logits.append(math.log(w / (1 - w)))
        picks.append(best)
    return sum(1 for x in logits if x <= 0) / len(logits), logits, picks


@pytest.mark.parametrize(("t", "n", "s"), [(48, 5, 6), (50, 4, 6), (64, 7, 8)])
def test_cscv_matches_a_brute_force_implementation(t: int, n: int, s: int) -> None:
    m = np.random.default_rng(t + n + s).normal(0.0, 0.01, size=(t, n))
    pbo, logits, picks = _brute_force_cscv(m, s)
    res = cscv_pbo(m, s)
    assert res.n_combinations == math.comb(s, s // 2)
    assert res.selected.tolist() == picks
    np.testing.assert_allclose(res.logits, logits, rtol=0, atol=1e-12)
    assert res.pbo == pbo
    # a metric callable takes the general path and gives the same answer for the same metric
    slow = cscv_pbo(m, s, metric=lambda block: block.mean(axis=0) / block.std(axis=0, ddof=1))
    assert slow.selected.tolist() == picks and slow.pbo == pbo


def test_pbo_is_zero_when_one_trial_has_a_real_edge_in_every_period() -> None:
    rng = np.random.default_rng(11)
    m = rng.normal(0.0, 0.01, size=(800, 20))
    m[:, 13] += 0.006  # a per-period Sharpe of 0.6 against noise
    res = cscv_pbo(m, 16)
    assert res.pbo == 0.0
    assert (res.selected == 13).all()
    assert (res.rank_oos == 20 / 21).all()  # best out of sample every time
    assert res.prob_oos_loss == 0.0


def test_pbo_of_pure_noise_follows_the_uniform_rank_theory() -> None:
    """Noise: the in-sample pick is independent of the out-of-sample ranks, so its rank is uniform on 1..N and
    P(logit <= 0) = 1/2 for even N. Mean PBO over seeds within 4 standard errors of 1/2; the first combination's
    rank across seeds (independent draws) passes a chi-square test for uniformity."""
    n, seeds = 10, 300
    pbos, first_ranks = [], []
    for seed in range(seeds):
        res = cscv_pbo(np.random.default_rng(1000 + seed).normal(0.0, 0.01, size=(240, n)), 8)
        pbos.append(res.pbo)
        first_ranks.append(round(res.rank_oos[0] * (n + 1)))
    pbos_arr = np.array(pbos)
    se = pbos_arr.std(ddof=1) / math.sqrt(seeds)
    assert abs(pbos_arr.mean() - 0.5) < 4 * se
    assert np.median(pbos_arr) >= 0.35
    counts = np.bincount(first_ranks, minlength=n + 1)[1:]
    assert stats.chisquare(counts).pvalue > 1e-3


def test_cscv_degradation_and_loss_probability_on_noise() -> None:
    """With noise the halves are complements: a high in-sample Sharpe means a low out-of-sample one (slope < 0)."""
    res = cscv_pbo(np.random.default_rng(5).normal(0.0, 0.01, size=(400, 30)), 10)
    assert res.degradation_slope < 0
    assert 0.0 < res.prob_oos_loss < 1.0
    assert res.prob_oos_loss == np.mean(res.perf_oos < 0)


def test_cscv_refuses_bad_input_naming_the_field() -> None:
    m = np.random.default_rng(0).normal(size=(40, 4))
    with pytest.raises(ValueError, match=r"^n_splits: must be even"):
        cscv_pbo(m, 5)
    with pytest.raises(ValueError, match=r"^n_splits: 16 blocks need at least 32 observations"):
        cscv_pbo(m[:30], 16)
    with pytest.raises(ValueError, match=r"^returns: need at least 2 trials"):
        cscv_pbo(m[:, :1], 4)
    bad = m.copy()
    bad[7, 2] = np.nan
    with pytest.raises(ValueError, match=r"^returns: non-finite value at row 7, column 2"):
        cscv_pbo(bad, 4)
    with pytest.raises(ValueError, match=r"^metric: must return one score per trial \(4\)"):
        cscv_pbo(m, 4, metric=lambda block: block.mean())
    with pytest.raises(ValueError, match=r"^n_splits: C\(40, 20\)"):
        cscv_pbo(np.random.default_rng(0).normal(size=(100, 3)), 40)


def test_flat_trials_rank_as_zero_sharpe_not_nan() -> None:
    m = np.zeros((40, 3))
    m[:, 1] = np.random.default_rng(2).normal(0.001, 0.01, 40)
    assert sharpe_per_period(m)[0] == 0.0
    res = cscv_pbo(m, 4)
    assert np.isfinite(res.logits).all()


# ------------------------------------------------------------------------------------------------------- CPCV
@pytest.mark.parametrize(("n_groups", "k"), [(6, 2), (5, 3), (8, 2), (10, 4)])
def test_cpcv_counts_and_every_path_covers_every_group_once(n_groups: int, k: int) -> None:
    n_obs = 203
    cv = cpcv_splits(n_obs, n_groups, k)
    assert cv.n_splits == math.comb(n_groups, k)
    assert cv.n_paths == k * math.comb(n_groups, k) // n_groups
    assert [s.test_groups for s in cv.splits] == list(itertools.combinations(range(n_groups), k))
    # each (split, test group) pair is used by exactly one path, and path p takes group g from a split testing g
    used = sorted((int(cv.paths[p, g]), g) for p in range(cv.n_paths) for g in range(n_groups))
    assert used == sorted((s.index, g) for s in cv.splits for g in s.test_groups)
    # assembling each split's "returns" = the row numbers gives every row exactly once on every path
    paths = cv.assemble_paths([s.test_rows.astype(float) for s in cv.splits])
    assert paths.shape == (cv.n_paths, n_obs)
    np.testing.assert_array_equal(paths, np.tile(np.arange(n_obs, dtype=float), (cv.n_paths, 1)))
    # groups: contiguous, n_obs // N rows, the last one holding the remainder
    sizes = [len(g) for g in cv.groups]
    assert sizes[:-1] == [n_obs // n_groups] * (n_groups - 1) and sum(sizes) == n_obs


@pytest.mark.parametrize(("purge", "embargo"), [(0, 0), (3, 0), (2, 4), (0, 5)])
def test_cpcv_train_sets_are_purged_and_embargoed(purge: int, embargo: int) -> None:
    n_obs = 240
    cv = cpcv_splits(n_obs, 6, 2, purge=purge, embargo=embargo)
    for split in cv.splits:
        test = set(split.test_rows.tolist())
        dropped = set()
        for i in test:
            if i - 1 not in test:  # a test block starts at i: purge before it
                dropped |= {j for j in range(i - purge, i) if j >= 0}
            if i + 1 not in test:  # a test block ends at i: purge and embargo after it
                dropped |= {j for j in range(i + 1, i + 1 + purge + embargo) if j < n_obs}
        expected = [j for j in range(n_obs) if j not in test and j not in dropped]
        assert split.train.tolist() == expected
        assert not test & set(split.train.tolist())


def test_cpcv_refuses_bad_arguments_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"^n_test_groups: must be < n_groups \(4\)"):
        cpcv_splits(100, 4, 4)
    with pytest.raises(ValueError, match=r"^n_test_groups: must be >= 2"):
        cpcv_splits(100, 4, 1)
    with pytest.raises(ValueError, match=r"^purge: purge \+ embargo \(10\) must be < group size - 1"):
        cpcv_splits(100, 10, 2, purge=5, embargo=5)
    with pytest.raises(ValueError, match=r"^embargo: must be >= 0"):
        cpcv_splits(100, 5, 2, embargo=-1)
    with pytest.raises(ValueError, match=r"^n_groups: must be an integer"):
        cpcv_splits(100, 5.0, 2)  # type: ignore[arg-type]
    cv = cpcv_splits(60, 4, 2)
    with pytest.raises(ValueError, match=r"^test_returns\[0\]: need 30 values"):
        cv.assemble_paths([np.zeros(29)] + [np.zeros(30)] * 5)
    with pytest.raises(ValueError, match=r"^test_returns: need one array per split \(6\)"):
        cv.assemble_paths([np.zeros(30)])
