"""Supervised samples and walk-forward splits: targets against a direct loop over the series, purging and embargo
against the label intervals (no training label may touch a test period), and standardisation statistics against
pandas on the training rows alone (a change to test-only rows must not move them)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tradesys.train.data import (
    Standardizer,
    default_features,
    make_samples,
    purged_kfold_splits,
    walk_forward_splits,
)

L, H = 10, 5


@pytest.fixture(scope="module")
def returns() -> pd.Series:
    rng = np.random.default_rng(7)
    idx = pd.bdate_range("2020-01-01", periods=600)
    return pd.Series(0.01 * rng.standard_normal(600), index=idx, name="r")


def test_targets_and_windows_match_a_direct_loop(returns: pd.Series) -> None:
    s = make_samples(returns, lookback=L, vol_horizon=H)
    feats = default_features(returns).dropna()
    r = returns.loc[feats.index].to_numpy()
    assert len(s) == len(feats) - L + 1 - H
    assert s.X.shape == (len(s), L, 4)
    for i in (0, 1, 137, len(s) - 1):
        t = int(s.t[i])
        np.testing.assert_allclose(s.X[i], feats.iloc[t - L + 1 : t + 1].to_numpy(), rtol=1e-6)
        assert s.y_ret[i] == r[t + 1]
        assert s.y_vol[i] == pytest.approx(np.sqrt(np.mean(r[t + 1 : t + 1 + H] ** 2)), rel=1e-12)
        assert s.y_dir[i] == float(r[t + 1] > 0)
        assert (s.label_start[i], s.label_end[i]) == (t + 1, t + H)
        assert s.index[i] == feats.index[t]
    # the 22-row trailing vol feature at the decision row, by hand
    t = int(s.t[50])
    assert s.X[50, -1, 3] == pytest.approx(np.sqrt(np.mean(r[t - 21 : t + 1] ** 2)), rel=1e-6)


def test_windows_do_not_see_the_future(returns: pd.Series) -> None:
    s = make_samples(returns, lookback=L, vol_horizon=H)
    i = 200
    cut = s.index[i]
    shocked = returns.copy()
    shocked.loc[shocked.index > cut] *= 50.0  # change everything after the decision time
    s2 = make_samples(shocked, lookback=L, vol_horizon=H)
    np.testing.assert_array_equal(s.X[: i + 1], s2.X[: i + 1])
    assert not np.array_equal(s.y_vol[i], s2.y_vol[i])  # ...while its labels do move


@pytest.mark.parametrize("scheme", ["expanding", "rolling"])
def test_walk_forward_purging_leaves_no_label_in_a_test_period(returns: pd.Series, scheme: str) -> None:
    s = make_samples(returns, lookback=L, vol_horizon=H)
    splits = walk_forward_splits(s, n_folds=3, test_size=60, scheme=scheme, train_size=200)  # type: ignore[arg-type]
    tests = np.concatenate([sp.test for sp in splits])
    np.testing.assert_array_equal(tests, np.arange(len(s) - 180, len(s)))  # contiguous blocks ending at the end
    for sp in splits:
        lo, hi = s.t[sp.test].min(), s.label_end[sp.test].max()
        assert np.all((s.label_end[sp.train] < lo) | (s.t[sp.train] > hi))
        assert s.t[sp.train].max() < lo  # forward only
        # the samples right before the block have labels running into it: exactly H of them were purged
        assert sp.purged == H
        assert s.label_end[sp.train].max() == lo - 1
        if scheme == "rolling":
            assert sp.train.size == 200 - H
    # an expanding first fold starts at sample 0
    if scheme == "expanding":
        assert splits[0].train[0] == 0


def test_purged_kfold_embargo_gap_holds(returns: pd.Series) -> None:
    s = make_samples(returns, lookback=L, vol_horizon=H)
    embargo = 7
    splits = purged_kfold_splits(s, n_folds=5, embargo=embargo)
    for k, sp in enumerate(splits):
        lo, hi = s.t[sp.test].min(), s.label_end[sp.test].max()
        before = sp.train[s.t[sp.train] < lo]
        after = sp.train[s.t[sp.train] > hi]
        assert before.size + after.size == sp.train.size  # nothing inside the test span
        assert np.all(s.label_end[before] < lo)
        if k < len(splits) - 1:
            # training resumes only after the embargo: the first kept decision row is hi + embargo + 1
            assert s.t[after].min() == hi + embargo + 1
            assert sp.embargoed == embargo
        else:
            assert after.size == 0
    no_embargo = purged_kfold_splits(s, n_folds=5, embargo=0)
    assert no_embargo[0].train.size == splits[0].train.size + embargo


def test_standardiser_uses_training_rows_only(returns: pd.Series) -> None:
    s = make_samples(returns, lookback=L, vol_horizon=H)
    sp = walk_forward_splits(s, n_folds=1, test_size=100)[0]
    sc = Standardizer.fit(s, sp.train)
    t_lo, t_hi = int(s.t[sp.train].min()), int(s.t[sp.train].max())
    rows = s.features.iloc[t_lo - L + 1 : t_hi + 1]
    np.testing.assert_array_equal(sc.rows, np.arange(t_lo - L + 1, t_hi + 1))
    np.testing.assert_allclose(sc.mean, rows.mean().to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(sc.std, rows.std(ddof=0).to_numpy(), rtol=1e-12)
    assert sc.ret_scale == pytest.approx(np.std(s.y_ret[sp.train]))
    assert sc.vol_scale == pytest.approx(np.mean(s.y_vol[sp.train]))
    assert sc.rows.max() < s.t[sp.test].min()  # no test row among them
    # statistics fitted on all samples differ (the test rows would have leaked in)...
    assert not np.allclose(Standardizer.fit(s).mean, sc.mean)
    # ...while changing the returns of the test period leaves the training fit untouched
    shocked = returns.copy()
    shocked.loc[shocked.index > s.index[sp.test[0]]] *= 10.0
    s2 = make_samples(shocked, lookback=L, vol_horizon=H)
    sc2 = Standardizer.fit(s2, sp.train)
    np.testing.assert_array_equal(sc.mean, sc2.mean)
    np.testing.assert_array_equal(sc.std, sc2.std)
    z = sc.transform(s.subset(sp.train))
    np.testing.assert_allclose(z.y_ret * sc.ret_scale, s.y_ret[sp.train])
    last_rows = z.X[:, -1, :]  # each training row appears once as a window's last row (plus the first window)
    assert np.all(np.abs(last_rows.mean(axis=0)) < 0.1)


def test_a_technical_feature_frame(returns: pd.Series) -> None:
    """Features from tradesys.features.technical on the price path: warm-up rows dropped, windows aligned."""
    from tradesys.features import technical

    close = 100.0 * np.cumprod(1.0 + returns.to_numpy())
    feats = pd.DataFrame(
        {"ret": returns, "rsi": technical.rsi(close, 14), "roc": technical.roc(close, 10)}, index=returns.index
    )
    s = make_samples(returns, feats, lookback=L, vol_horizon=H)
    assert s.features.index[0] == returns.index[14]  # RSI(14) has 14 warm-up rows, ROC(10) 10
    i = 33
    t = int(s.t[i])
    np.testing.assert_allclose(s.X[i], feats.iloc[14:].iloc[t - L + 1 : t + 1].to_numpy(), rtol=1e-6)
    assert s.y_ret[i] == returns.iloc[14 + t + 1]
    holed = feats.copy()
    holed.iloc[300, 1] = np.nan
    with pytest.raises(ValueError, match="features: NaN after the warm-up"):
        make_samples(returns, holed, lookback=L, vol_horizon=H)
    with pytest.raises(ValueError, match="features: index"):
        make_samples(returns, feats.iloc[1:], lookback=L, vol_horizon=H)


def test_bad_input_names_the_field(returns: pd.Series) -> None:
    with pytest.raises(ValueError, match="lookback"):
        make_samples(returns, lookback=0)
    with pytest.raises(ValueError, match="returns: 9 usable rows"):
        make_samples(returns.iloc[:30], lookback=10, vol_horizon=5)
    with pytest.raises(ValueError, match="features: no row without NaN"):  # shorter than the 22-row warm-up
        make_samples(returns.iloc[:20], lookback=10, vol_horizon=5)
    bad = returns.copy()
    bad.iloc[3] = np.nan
    with pytest.raises(ValueError, match="returns"):
        make_samples(bad)
    s = make_samples(returns, lookback=L, vol_horizon=H)
    with pytest.raises(ValueError, match="train_size"):
        walk_forward_splits(s, n_folds=2, test_size=10, scheme="rolling")
    with pytest.raises(ValueError, match="n_folds"):
        walk_forward_splits(s, n_folds=100, test_size=10)
