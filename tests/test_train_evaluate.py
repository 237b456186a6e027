"""Evaluation: Diebold-Mariano against closed forms (h = 1 with the HLN correction is exactly the one-sample
t-test, scipy) and statsmodels' Newey-West HAC variance, its size and power by simulation; metrics against
scikit-learn and closed forms; the GARCH baseline against arch's end-of-sample forecast and the GARCH(1,1)
closed-form recursion; the naive baseline against a loop; and a small walk-forward run on the real S&P 500."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats
from sklearn.metrics import accuracy_score, log_loss

from tradesys.data.returns import load_returns
from tradesys.quant.risk.garch import fit_vol_model
from tradesys.train.data import make_samples, walk_forward_splits
from tradesys.train.evaluate import (
    diebold_mariano,
    direction_metrics,
    garch_vol_forecasts,
    naive_forecasts,
    newey_west_lrv,
    qlike_loss,
    return_metrics,
    vol_metrics,
    walk_forward_report,
)
from tradesys.train.fit import FitConfig
from tradesys.train.models import build_model


@pytest.fixture(scope="module")
def sp500() -> pd.Series:
    return load_returns("sp500").iloc[:, 0]


def test_dm_h1_with_hln_is_the_one_sample_t_test() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(80) ** 2, (1.1 * rng.standard_normal(80)) ** 2
    for alt in ("two-sided", "less", "greater"):
        dm = diebold_mariano(a, b, h=1, alternative=alt)  # type: ignore[arg-type]
        tt = stats.ttest_1samp(a - b, 0.0, alternative=alt)  # type: ignore[arg-type]
        assert dm.stat == pytest.approx(tt.statistic, rel=1e-10)
        assert dm.pvalue == pytest.approx(tt.pvalue, rel=1e-9)


@pytest.mark.parametrize("lags", [0, 1, 4])
def test_newey_west_matches_statsmodels_hac(lags: int) -> None:
    rng = np.random.default_rng(2)
    e = rng.standard_normal(301)
    d = 0.2 + e[1:] + 0.7 * e[:-1]  # MA(1)
    fit = sm.OLS(d, np.ones_like(d)).fit(cov_type="HAC", cov_kwds={"maxlags": lags, "use_correction": False})
    assert newey_west_lrv(d, lags) == pytest.approx(fit.bse[0] ** 2 * d.size, rel=1e-10)
    dm = diebold_mariano(d, np.zeros_like(d), h=lags + 1, hln=False)
    assert dm.kernel == "bartlett"
    assert dm.stat == pytest.approx(fit.params[0] / fit.bse[0], rel=1e-10)
    assert dm.pvalue == pytest.approx(2 * stats.norm.sf(abs(fit.tvalues[0])), rel=1e-9)
    n, h = d.size, lags + 1
    hln = diebold_mariano(d, np.zeros_like(d), h=h)
    assert hln.stat == pytest.approx(dm.stat * math.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n), rel=1e-12)


def _ma_differentials(rng: np.random.Generator, sims: int, n: int, theta: np.ndarray) -> np.ndarray:
    h = theta.size
    e = rng.standard_normal((sims, n + h - 1))
    return sum(theta[k] * e[:, h - 1 - k : h - 1 - k + n] for k in range(h))  # type: ignore[return-value]


def test_dm_size_and_power_by_simulation() -> None:
    """Null: mean-zero loss differentials; h = 1 iid and h = 3 MA(2) (what 3-step forecasts produce), n = 120.

    With 2000 draws the rejection rate's standard error is 0.5 points, so the bands are about 3-4 of them."""
    rng = np.random.default_rng(3)
    n, sims = 120, 2000
    zero = np.zeros(n)
    d1 = _ma_differentials(rng, sims, n, np.array([1.0]))
    size1 = np.mean([diebold_mariano(row, zero, h=1).pvalue < 0.05 for row in d1])
    assert 0.035 < size1 < 0.065
    theta = np.array([1.0, 0.6, 0.3])
    d3 = _ma_differentials(rng, sims, n, theta)
    size_u = np.mean([diebold_mariano(row, zero, h=3, kernel="uniform").pvalue < 0.05 for row in d3])
    size_b = np.mean([diebold_mariano(row, zero, h=3).pvalue < 0.05 for row in d3])
    assert 0.035 < size_u < 0.08
    # documented: Bartlett weights at lag h-1 under-weight the MA(2) autocovariances and over-reject
    assert size_b > size_u + 0.01
    shift = 0.45 * np.sqrt(np.sum(theta**2))  # mean shift of 0.45 sd of d
    power = np.mean(
        [
            diebold_mariano(row - shift, zero, h=3, kernel="uniform", alternative="less").pvalue < 0.05
            for row in d3[:500]
        ]
    )
    assert power > 0.9
    # the wrong-sided alternative almost never rejects
    wrong = np.mean([diebold_mariano(row - shift, zero, h=3, alternative="greater").pvalue < 0.05 for row in d3[:500]])
    assert wrong < 0.01


def test_metrics_against_sklearn_and_closed_forms() -> None:
    rng = np.random.default_rng(4)
    y = (rng.random(300) > 0.45).astype(float)
    p = np.clip(rng.random(300), 0.01, 0.99)
    m = direction_metrics(y, p)
    assert m["log_loss"] == pytest.approx(log_loss(y, p), rel=1e-12)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, p > 0.5))
    r = return_metrics(np.array([0.01, -0.02, 0.0]), np.array([0.0, 0.0, 0.01]))
    assert r["mse"] == pytest.approx((1e-4 + 4e-4 + 1e-4) / 3)
    assert r["mae"] == pytest.approx(0.04 / 3)
    sig = np.array([0.01, 0.02])
    assert vol_metrics(sig, sig)["qlike"] == 0.0
    # forecast twice the realised vol: ratio 1/4, loss 1/4 + log 4 - 1
    np.testing.assert_allclose(qlike_loss(sig, 2 * sig), 0.25 + math.log(4) - 1)
    assert vol_metrics(sig, 2 * sig)["mse"] == pytest.approx(np.mean((3 * sig**2) ** 2))
    with pytest.raises(ValueError, match="vol_hat"):
        qlike_loss(sig, np.zeros(2))


def test_naive_baseline_by_loop(sp500: pd.Series) -> None:
    s = make_samples(sp500.iloc[:400], lookback=20, vol_horizon=5)
    f = naive_forecasts(s, 0.53)
    r = s.returns.to_numpy()
    for i in (0, 57, len(s) - 1):
        t = s.t[i]
        assert f["vol"][i] == pytest.approx(math.sqrt(np.mean(r[t - 4 : t + 1] ** 2)), rel=1e-12)
    assert np.all(f["ret"] == 0) and np.all(f["p_up"] == 0.53)


def test_garch_baseline_against_arch_and_the_closed_form(sp500: pd.Series) -> None:
    s = make_samples(sp500.iloc[:1500], lookback=20, vol_horizon=5)
    test = s.subset(np.arange(len(s) - 200, len(s)))
    got = garch_vol_forecasts(test)
    t0 = int(test.t[0])
    # first origin: the same model fitted on the returns up to t0, forecast from the end of that sample
    fit = fit_vol_model(test.returns.iloc[: t0 + 1], model="garch")
    fc = fit.forecast(5)
    assert got[0] == pytest.approx(math.sqrt(np.mean(fc.variance + fc.mean**2)), rel=1e-5)
    # later origins: filter sigma2 with the fitted parameters and apply the GARCH(1,1) h-step formula
    p = fit.params
    mu, om, al, be = (float(p[k]) for k in ("mu", "omega", "alpha[1]", "beta[1]"))
    y = test.returns.to_numpy() * fit.scale
    s2_next = float(fc.variance[0]) * fit.scale**2  # sigma2_{t0+1}
    vbar = om / (1 - al - be)
    for j, t in enumerate(test.t):
        if j > 0:
            s2_next = om + al * (y[t] - mu) ** 2 + be * s2_next
        path = vbar + (al + be) ** np.arange(5) * (s2_next - vbar)
        expected = math.sqrt(np.mean(path + mu**2)) / fit.scale
        assert got[j] == pytest.approx(expected, rel=1e-6)


def test_walk_forward_report_on_the_sp500(sp500: pd.Series) -> None:
    """Pipeline check on real data: a valid report; it asserts nothing about who wins (docs/models.md does)."""
    import torch

    torch.set_num_threads(1)
    s = make_samples(sp500, lookback=20, vol_horizon=5)
    splits = walk_forward_splits(s, n_folds=2, test_size=250, scheme="rolling", train_size=1000)
    torch.manual_seed(0)
    rep = walk_forward_report(
        s, splits, lambda f: build_model("lstm", f, hidden=8), FitConfig(epochs=4, patience=2, seed=0)
    )
    m = rep.metrics
    assert list(m["forecaster"]) == ["network", "naive", "garch"] * 2
    assert (m["n_test"] == 250).all()
    metric_cols = [c for c in m.columns if c.startswith(("ret_", "vol_", "dir_"))]
    assert np.isfinite(m[metric_cols].to_numpy(dtype=float)).all()
    assert (m[metric_cols] >= 0).all().all()
    # naive and GARCH share ret/dir columns; their vol forecasts differ
    naive, garch = m[m.forecaster == "naive"], m[m.forecaster == "garch"]
    np.testing.assert_array_equal(naive["ret_mse"].to_numpy(), garch["ret_mse"].to_numpy())
    assert not np.allclose(naive["vol_qlike"].to_numpy(), garch["vol_qlike"].to_numpy())
    t = rep.tests
    assert set(t["vs"]) == {"naive", "garch"} and len(t) == 2 * 4
    assert t["pvalue"].between(0, 1).all()
    assert len(rep.histories) == 2 and all(len(hh) >= 1 for hh in rep.histories)
    assert set(rep.summary().index) == {"network", "naive", "garch"}
