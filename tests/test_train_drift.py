"""Drift detection, degradation and the retrain policy, on data with planted drift.

References: hand-computed PSI, scipy.stats (ks_2samp, wasserstein_distance), closed forms (translation moves W1 by
the shift; disjoint supports give KS D = 1; the unbiased MMD^2 has mean 0 under no drift), Evidently 0.7's
ValueDrift report and its MMD estimator, pandas rolling means, and real S&P 500 returns (calm 2004-2006 vs 2008).
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tradesys.train.drift import (
    PSI_EPS,
    DriftPolicy,
    DriftThresholds,
    column_drift,
    detect_drift,
    mmd_test,
    performance_degradation,
    psi,
    save_evidently_html,
    wasserstein_normed,
)


def _correlated(n: int, rho: float, rng: np.random.Generator) -> np.ndarray:
    """Two standard normal columns with correlation rho (marginals N(0, 1) whatever rho)."""
    z = rng.normal(size=(n, 2))
    return np.column_stack([z[:, 0], rho * z[:, 0] + math.sqrt(1.0 - rho**2) * z[:, 1]])


def _planted(n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference vs current: 'shift' moves its mean by 0.5 sd, 'scale' doubles its sd, (c1, c2) go from
    correlation 0 to 0.8 with unchanged marginals, 'stable' is unchanged."""
    rng = np.random.default_rng(seed)
    cols = ["shift", "scale", "c1", "c2", "stable"]
    ref = np.column_stack([rng.normal(size=n), rng.normal(size=n), _correlated(n, 0.0, rng), rng.normal(size=n)])
    cur = np.column_stack(
        [rng.normal(0.5, 1.0, size=n), rng.normal(0.0, 2.0, size=n), _correlated(n, 0.8, rng), rng.normal(size=n)]
    )
    return pd.DataFrame(ref, columns=cols), pd.DataFrame(cur, columns=cols)


# ---------------------------------------------------------------------------------------------------------------- PSI


def test_psi_matches_hand_computation() -> None:
    ref = np.arange(1.0, 11.0)  # median 5.5: two bins (-inf, 5.5], (5.5, inf) with 50 % each
    cur = np.array([1.0, 2.0, 3.0, 8.0, 9.0, 10.0, 11.0, 12.0])  # 3/8 low, 5/8 high
    hand = (0.375 - 0.5) * math.log(0.375 / 0.5) + (0.625 - 0.5) * math.log(0.625 / 0.5)
    assert psi(ref, cur, bins=2) == pytest.approx(hand, rel=1e-12)
    # an empty current bin takes PSI_EPS: all of current above the median
    hand_empty = (PSI_EPS - 0.5) * math.log(PSI_EPS / 0.5) + (1.0 - 0.5) * math.log(1.0 / 0.5)
    assert psi(ref, np.array([7.0, 8.0, 20.0]), bins=2) == pytest.approx(hand_empty, rel=1e-12)
    # explicit cut points and quartile bins: ref 1..8 quartile cuts 2.75, 4.5, 6.25 -> 25 % each
    cur4 = np.array([1.0, 1.0, 1.0, 1.0, 3.0, 5.0, 7.0, 7.0, np.nan])  # NaN dropped: 4/8, 1/8, 1/8, 2/8
    r, c = np.full(4, 0.25), np.array([0.5, 0.125, 0.125, 0.25])
    hand4 = float(np.sum((c - r) * np.log(c / r)))
    assert psi(np.arange(1.0, 9.0), cur4, bins=4) == pytest.approx(hand4, rel=1e-12)
    assert psi(np.arange(1.0, 9.0), cur4, cuts=[2.75, 4.5, 6.25]) == pytest.approx(hand4, rel=1e-12)
    assert psi(ref, ref) == 0.0


def test_psi_bad_input_names_the_field() -> None:
    with pytest.raises(ValueError, match="bins"):
        psi([1.0, 2.0, 3.0], [1.0, 2.0], bins=1)
    with pytest.raises(ValueError, match="cuts"):
        psi([1.0, 2.0, 3.0], [1.0, 2.0], cuts=[2.0, 1.0])
    with pytest.raises(ValueError, match="current"):
        psi([1.0, 2.0, 3.0], [np.nan])


# ------------------------------------------------------------------------------------------------- KS, Wasserstein


def test_ks_and_wasserstein_equal_scipy_on_real_returns_with_nans() -> None:
    from tradesys.data.returns import load_returns

    r = load_returns("sp500")["SP500"]
    ref = r["2004":"2005"].to_numpy().copy()
    cur = r["2008":"2008"].to_numpy().copy()
    ref[::50] = np.nan  # missing values are dropped column by column
    cur[3] = np.nan
    ref_ok, cur_ok = ref[~np.isnan(ref)], cur[~np.isnan(cur)]
    cd = column_drift(ref, cur, name="SP500")
    ks = stats.ks_2samp(ref_ok, cur_ok)
    assert cd.n_ref == ref_ok.size and cd.n_cur == cur_ok.size
    assert cd.ks_statistic == pytest.approx(ks.statistic, rel=1e-12)
    assert cd.ks_pvalue == pytest.approx(ks.pvalue, rel=1e-9)
    assert cd.wasserstein == pytest.approx(stats.wasserstein_distance(ref_ok, cur_ok) / np.std(ref_ok), rel=1e-12)


def test_wasserstein_and_ks_closed_forms() -> None:
    rng = np.random.default_rng(3)
    ref = rng.standard_t(4, size=700)
    # translating a distribution by d moves it exactly d in W1: normalised = d / sd
    shift = 0.3 * float(np.std(ref))
    assert wasserstein_normed(ref, ref + shift) == pytest.approx(0.3, rel=1e-12)
    # scaling by 2 about the origin: W1 = mean |2x - x| = mean |x| (quantile coupling)
    assert wasserstein_normed(ref, 2.0 * ref) == pytest.approx(np.mean(np.abs(ref)) / np.std(ref), rel=1e-12)
    # disjoint supports: the ECDFs differ by 1 somewhere
    cd = column_drift(ref, ref.max() + 1.0 + rng.random(50))
    assert cd.ks_statistic == 1.0
    # constant reference: normalised Wasserstein undefined, reason given, KS still there
    const = column_drift(np.ones(50), rng.normal(size=50), name="k")
    assert math.isnan(const.wasserstein) and const.reason == "zero_reference_std" and const.ks_pvalue < 1e-6
    short = column_drift([1.0, np.nan], [1.0, 2.0, 3.0])
    assert short.reason == "insufficient_data" and math.isnan(short.ks_pvalue)


# -------------------------------------------------------------------------------------------------- planted drift


def test_planted_drift_flags_the_right_columns_and_the_joint_change() -> None:
    ref, cur = _planted(2000, seed=7)
    rep = detect_drift(ref, cur, seed=1)
    assert rep.drifted_columns == ("shift", "scale")
    shift, scale = rep.column("shift"), rep.column("scale")
    assert shift.ks_flag and shift.psi_flag and shift.wasserstein_flag
    # 0.5 sd mean shift: W1 / sd is about 0.5; doubling the sd of a normal: W1 = E|Z| (2 - 1) = 0.80
    assert shift.wasserstein == pytest.approx(0.5, abs=0.1)
    assert scale.wasserstein == pytest.approx(math.sqrt(2 / math.pi), abs=0.1)
    for name in ("c1", "c2", "stable"):
        assert not rep.column(name).drifted
    assert rep.mmd is not None and rep.mmd.pvalue < rep.mmd_level
    assert rep.drift and rep.multivariate_drift
    assert rep.ks_level == pytest.approx(0.05 / (2 * 5))
    assert "KS p <" in rep.rule and "MMD" in rep.rule


def test_correlation_change_is_caught_only_by_mmd() -> None:
    """Marginals unchanged, correlation 0 -> 0.8: no per-column test should fire, the joint MMD should."""
    mmd_hits, column_hits = 0, 0
    seeds = range(12)
    for seed in seeds:
        rng = np.random.default_rng(100 + seed)
        ref = pd.DataFrame(_correlated(300, 0.0, rng), columns=["a", "b"])
        cur = pd.DataFrame(_correlated(300, 0.8, rng), columns=["a", "b"])
        rep = detect_drift(ref, cur, n_permutations=200, seed=seed)
        column_hits += len(rep.drifted_columns)
        mmd_hits += rep.multivariate_drift
        assert rep.drift == (bool(rep.drifted_columns) or rep.multivariate_drift)
    assert mmd_hits == len(seeds)
    assert column_hits <= 1  # each column test has level 0.0125: a stray rejection is possible, not more


def test_no_false_alarm_on_same_distribution_windows() -> None:
    """150 same-distribution window pairs: every p-value family rejects at about its nominal rate and the overall
    decision stays below alpha; the unbiased MMD^2 averages to zero (a biased estimator would be positive)."""
    n_seeds, alpha = 150, 0.05
    overall, ks_rej, mmd_rej, mmd2 = 0, 0, 0, []
    for seed in range(n_seeds):
        rng = np.random.default_rng(10_000 + seed)
        ref = rng.standard_t(5, size=(150, 3))
        cur = rng.standard_t(5, size=(150, 3))
        rep = detect_drift(ref, cur, n_permutations=100, seed=seed)
        overall += rep.drift
        ks_rej += sum(c.ks_pvalue < alpha for c in rep.columns)
        assert rep.mmd is not None
        mmd_rej += rep.mmd.pvalue < alpha
        mmd2.append(rep.mmd.mmd2)
    # binomial(150, 0.05): mean 7.5, sd 2.7; binomial(450, 0.05): mean 22.5, sd 4.6
    assert overall <= 15
    assert 2 <= mmd_rej <= 16
    assert 9 <= ks_rej <= 37  # KS exact p-values are slightly conservative on discrete D
    m = np.asarray(mmd2)
    assert abs(m.mean()) < 3.0 * m.std(ddof=1) / math.sqrt(m.size)


def test_mmd_is_seeded_and_validates_input() -> None:
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(80, 2)), rng.normal(0.2, 1.0, size=(90, 2))
    a, b = mmd_test(x, y, seed=3), mmd_test(x, y, seed=3)
    assert a == b
    assert a.n_ref == 80 and a.n_cur == 90 and a.n_permutations == 500
    assert 0.0 < a.pvalue <= 1.0 and a.pvalue >= 1.0 / 501
    with pytest.raises(ValueError, match="current"):
        mmd_test(x, y[:, :1])
    with pytest.raises(ValueError, match="bandwidth"):
        mmd_test(x, y, bandwidth=0.0)
    sub = mmd_test(rng.normal(size=(900, 2)), y, max_samples=200)
    assert sub.n_ref == 200 and sub.n_cur == 90


def test_mmd_statistic_matches_evidently_estimator() -> None:
    """Evidently's 1-D empirical MMD (legacy stattest) is the same unbiased MMD^2 with kernel exp(-d^2 / (2 s^2));
    with its bandwidth s passed in and no standardisation the statistics agree."""
    from evidently.legacy.calculations.stattests.mmd_stattest import (
        kernel_matrix,
        mmd_2samp,
        sigma_median,
        squared_paired_dist,
    )

    rng = np.random.default_rng(11)
    x = rng.normal(size=(120, 1))
    y = rng.normal(0.4, 1.3, size=(100, 1))
    km = kernel_matrix(x, y)
    km = km - np.diag(np.diagonal(km))
    theirs = mmd_2samp(km, y.shape[0], permute=False)
    sigma = sigma_median(squared_paired_dist(x, x))
    ours = mmd_test(x, y, bandwidth=sigma, standardize=False, max_samples=None, n_permutations=10)
    assert ours.mmd2 == pytest.approx(theirs, rel=1e-10)


# ------------------------------------------------------------------------------------------------------ Evidently


def test_our_numbers_match_evidentlys_report() -> None:
    ref, cur = _planted(400, seed=21)
    rep = detect_drift(ref, cur, with_evidently=True, n_permutations=100)
    assert rep.evidently is not None
    for col in rep.columns:
        ev = rep.evidently[col.name]
        assert ev["ks_pvalue"] == pytest.approx(col.ks_pvalue, rel=1e-9, abs=1e-300)
        assert ev["wasserstein"] == pytest.approx(col.wasserstein, rel=1e-9)
        # Evidently bins PSI by Sturges edges over the pooled sample; with those cut points ours is identical
        pooled = np.concatenate([ref[col.name].to_numpy(), cur[col.name].to_numpy()])
        cuts = np.histogram_bin_edges(pooled, bins="sturges")[1:-1]
        assert psi(ref[col.name], cur[col.name], cuts=cuts) == pytest.approx(ev["psi"], rel=1e-9)
        # with our reference-quantile bins the value differs, but both call the same columns drifted
        assert (col.psi >= 0.2) == (ev["psi"] >= 0.2), col.name


def test_evidently_html_report_is_written(tmp_path) -> None:
    ref, cur = _planted(200, seed=2)
    out = save_evidently_html(ref, cur, tmp_path / "drift.html", columns=["shift", "stable"])
    text = out.read_text()
    assert out.stat().st_size > 10_000 and "shift" in text


# ------------------------------------------------------------------------------------------------- report plumbing


def test_report_to_dict_is_json_ready_and_columns_checked() -> None:
    ref = pd.DataFrame({"a": np.linspace(0, 1, 50), "k": np.ones(50)})
    cur = pd.DataFrame({"a": np.linspace(0.5, 1.5, 50), "k": np.ones(50)})
    rep = detect_drift(ref, cur, n_permutations=50)
    d = rep.to_dict()
    text = json.dumps(d, allow_nan=False)
    assert json.loads(text)["drifted_columns"] == ["a"]
    assert d["columns"][1]["wasserstein"] is None and d["columns"][1]["reason"] == "zero_reference_std"
    assert d["rule"] == rep.rule and d["thresholds"]["alpha"] == 0.05
    with pytest.raises(ValueError, match="columns"):
        detect_drift(ref, cur, columns=["missing"])
    with pytest.raises(ValueError, match="alpha"):
        DriftThresholds(alpha=1.5)
    holes = detect_drift(ref.assign(k=np.nan), cur, n_permutations=50)  # no complete row: no joint test
    assert holes.mmd is None and holes.column("k").reason == "insufficient_data" and holes.drifted_columns == ("a",)
    ints = detect_drift(pd.DataFrame(ref.to_numpy()), pd.DataFrame(cur.to_numpy()), n_permutations=50)
    assert [c.name for c in ints.columns] == ["0", "1"]
    single = detect_drift(ref["a"], cur["a"])  # one column (a prediction series): no MMD, KS at the full alpha
    assert single.mmd is None and single.ks_level == 0.05 and single.drift


def test_real_sp500_returns_calm_vs_crisis() -> None:
    from tradesys.data.returns import load_returns

    r = load_returns("sp500")
    calm = detect_drift(r["2004":"2005"], r["2006":"2006"])
    crisis = detect_drift(r["2004":"2005"], r["2008":"2008"])
    assert not calm.drift
    assert crisis.drift and crisis.drifted_columns == ("SP500",)
    assert crisis.column("SP500").wasserstein > 1.0  # 2008 daily moves far wider than 2004-05


# ---------------------------------------------------------------------------------------------------- degradation


def test_rolling_error_matches_pandas_and_planted_degradation_is_flagged() -> None:
    rng = np.random.default_rng(8)
    y = rng.normal(size=300)
    pred = y + rng.normal(0.0, 0.5, size=300)  # holdout-quality forecast: MSE 0.25
    pred[200:] = y[200:] + rng.normal(0.0, 1.0, size=100)  # planted: error variance x4 from t = 200
    pred[[10, 250]] = np.nan
    res = performance_degradation(y, pred, holdout_error=0.25, window=30, min_periods=25)
    loss = pd.Series((y - pred) ** 2)
    expected = loss.rolling(30, min_periods=25).mean().to_numpy()
    np.testing.assert_allclose(res.rolling_error, expected, rtol=1e-12, equal_nan=True)
    assert res.degraded and res.ratio == pytest.approx(res.current_error / 0.25)
    assert res.n_valid == 298
    before = performance_degradation(y[:200], pred[:200], holdout_error=0.25, window=30)
    assert not before.degraded and before.ratio < 1.5
    mae = performance_degradation(y, pred, holdout_error=0.4, metric="mae", window=30)
    assert mae.current_error == pytest.approx(np.nanmean(np.abs(y - pred)[-30:]), rel=1e-12)
    short = performance_degradation(y[:5], pred[:5], holdout_error=0.25, window=30)
    assert not short.degraded and short.reason == "insufficient_data"
    json.dumps(res.to_dict(), allow_nan=False)
    with pytest.raises(ValueError, match="holdout_error"):
        performance_degradation(y, pred, holdout_error=0.0)
    with pytest.raises(ValueError, match="y_pred"):
        performance_degradation(y, pred[:10], holdout_error=1.0)


def test_degradation_on_real_returns_zero_forecast() -> None:
    """Zero-return forecast on the S&P 500: its MSE is the realised variance, so error trebles in late 2008."""
    from tradesys.data.returns import load_returns

    r = load_returns("sp500")["SP500"]
    holdout = float((r["2004":"2005"] ** 2).mean())
    calm = r["2006"]
    crisis = r["2008-09":"2008-12"]
    assert not performance_degradation(calm, np.zeros(len(calm)), holdout, window=20).degraded
    res = performance_degradation(crisis, np.zeros(len(crisis)), holdout, window=20)
    assert res.degraded and res.ratio > 5.0


# --------------------------------------------------------------------------------------------------------- policy


def test_policy_decisions_and_reasons() -> None:
    policy = DriftPolicy(max_age=timedelta(days=30), cooldown=timedelta(days=1))
    now = datetime(2026, 11, 22, 12, tzinfo=UTC)
    ref, cur = _planted(300, seed=4)
    drifted = detect_drift(ref, cur, n_permutations=100)
    stable = detect_drift(ref, ref.sample(frac=1.0, random_state=0), n_permutations=100)
    corr_only = detect_drift(ref[["c1", "c2"]], cur[["c1", "c2"]], n_permutations=200)
    assert not stable.drift and corr_only.multivariate_drift and not corr_only.drifted_columns
    y = np.random.default_rng(0).normal(size=60)
    degraded = performance_degradation(y, np.zeros(60), holdout_error=0.2, window=20)
    healthy = performance_degradation(y, y, holdout_error=0.2, window=20)
    assert degraded.degraded and not healthy.degraded

    week = now - timedelta(days=7)
    quiet = policy.decide(now=now, last_trained=week, feature_drift=stable, degradation=healthy)
    assert not quiet.retrain and quiet.reasons == ()

    d = policy.decide(now=now, last_trained=week, feature_drift=drifted)
    assert d.retrain and d.codes == ("feature_drift", "multivariate_drift")
    assert "shift" in d.reasons[0].detail and "scale" in d.reasons[0].detail and "stable" not in d.reasons[0].detail

    assert policy.decide(now=now, last_trained=week, feature_drift=corr_only).codes == ("multivariate_drift",)
    assert policy.decide(now=now, last_trained=week, degradation=degraded).codes == ("degradation",)
    pred = policy.decide(now=now, last_trained=week, prediction_drift=detect_drift(ref["shift"], cur["shift"]))
    assert pred.retrain and pred.codes == ("prediction_drift",)

    old = policy.decide(now=now, last_trained=now - timedelta(days=31), feature_drift=stable)
    assert old.retrain and old.codes == ("schedule",)

    recent = policy.decide(now=now, last_trained=now - timedelta(hours=2), degradation=degraded)
    assert not recent.retrain and recent.codes == ("degradation", "cooldown")

    off = DriftPolicy(on_feature_drift=False).decide(now=now, last_trained=week, feature_drift=drifted)
    assert not off.retrain

    assert json.loads(json.dumps(d.to_dict()))["reasons"][0]["code"] == "feature_drift"
    with pytest.raises(ValueError, match="last_trained"):
        policy.decide(now=now, last_trained=now + timedelta(days=1))
    with pytest.raises(ValueError, match="last_trained"):
        policy.decide(now=now, last_trained=datetime(2026, 11, 1))
    with pytest.raises(ValueError, match="cooldown"):
        DriftPolicy(max_age=timedelta(days=1), cooldown=timedelta(days=2))
