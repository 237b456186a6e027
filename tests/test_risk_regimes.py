"""Regime detection: Gaussian HMM (hmmlearn) and Markov switching (statsmodels).

References: a 2-state Gaussian HMM simulated here with known parameters (the fit must recover them); hmmlearn's
own log-likelihood and forward-backward posteriors for our forward filter; the real S&P 500 (``arch.data.sp500``,
daily 1999-2018), where any sensible volatility regime must cover the October-November 2008 crash; statsmodels'
``MarkovRegression`` as a second, independently implemented estimator of the same model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tradesys.quant.risk.regimes import (
    fit_hmm_regimes,
    fit_markov_switching,
    forward_filter,
    plot_regimes,
    regime_features,
)

TRUE_MEANS = np.array([0.0006, -0.0010])
TRUE_VOLS = np.array([0.007, 0.022])
TRUE_TRANS = np.array([[0.985, 0.015], [0.04, 0.96]])


def _simulate(n: int, seed: int) -> tuple[pd.Series, np.ndarray]:
    rng = np.random.default_rng(seed)
    states = np.empty(n, dtype=int)
    states[0] = 0
    u = rng.random(n)
    for t in range(1, n):
        states[t] = states[t - 1] if u[t] < TRUE_TRANS[states[t - 1], states[t - 1]] else 1 - states[t - 1]
    r = TRUE_MEANS[states] + TRUE_VOLS[states] * rng.standard_normal(n)
    return pd.Series(r, index=pd.bdate_range("2000-01-03", periods=n), name="r"), states


@pytest.fixture(scope="module")
def simulated() -> tuple[pd.Series, np.ndarray]:
    return _simulate(4000, seed=17)


@pytest.fixture(scope="module")
def sp500() -> tuple[pd.Series, pd.Series]:
    from arch.data import sp500

    px = sp500.load()["Adj Close"]
    return px, np.log(px).diff().iloc[1:].rename("spx")


@pytest.fixture(scope="module")
def hmm_sp500(sp500):
    return fit_hmm_regimes(sp500[1], n_states=2)


@pytest.fixture(scope="module")
def ms_sp500(sp500):
    return fit_markov_switching(sp500[1], n_states=2)


def test_hmm_recovers_a_known_two_state_model(simulated) -> None:
    r, truth = simulated
    fit = fit_hmm_regimes(r, n_states=2, n_init=2)
    assert fit.converged
    # means: within 4 standard errors of the truth (per-state sample sizes from the true path; the state
    # uncertainty widens the error a little beyond this known-state figure)
    for s in (0, 1):
        n_s = (truth == s).sum()
        assert abs(fit.state_means[s] - TRUE_MEANS[s]) < 4 * TRUE_VOLS[s] / np.sqrt(n_s)
    np.testing.assert_allclose(fit.state_vols, TRUE_VOLS, rtol=0.06)
    # switching probabilities are estimated from ~100 switches: about 10-15% relative error each
    off = ~np.eye(2, dtype=bool)
    np.testing.assert_allclose(fit.transmat[off], TRUE_TRANS[off], rtol=0.4)
    # closer still to the transition frequencies of the realised true path (what an oracle would estimate)
    counts = np.zeros((2, 2))
    np.add.at(counts, (truth[:-1], truth[1:]), 1)
    empirical = counts / counts.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(fit.transmat[off], empirical[off], rtol=0.3)
    np.testing.assert_allclose(fit.expected_durations, 1.0 / (1.0 - np.diag(fit.transmat)))
    np.testing.assert_allclose(fit.transmat.sum(axis=1), 1.0)
    # decoding: Viterbi path and the filtered (real-time) argmax agree with the true states
    assert (fit.states.to_numpy() == truth).mean() > 0.90
    assert (fit.filtered.to_numpy().argmax(axis=1) == truth).mean() > 0.85
    stats = fit.stats
    assert stats.loc[1, "vol"] > stats.loc[0, "vol"]
    assert stats["share_of_periods"].sum() == pytest.approx(1.0)
    assert stats.loc[0, "expected_duration"] == pytest.approx(1 / (1 - fit.transmat[0, 0]))


def test_forward_filter_matches_hmmlearn(simulated) -> None:
    """Our filter's log-likelihood equals hmmlearn's score with the same parameters, and at the last date the
    filtered probabilities equal hmmlearn's smoothed ones (the only date where the two coincide)."""
    from hmmlearn.hmm import GaussianHMM

    r, _ = simulated
    fit = fit_hmm_regimes(r, n_states=2, n_init=1)
    ref = GaussianHMM(n_components=2, covariance_type="full", implementation="log")
    ref.n_features = 1
    ref.startprob_, ref.transmat_ = fit.startprob, fit.transmat
    ref.means_, ref.covars_ = fit.means, fit.covars
    x = r.to_numpy()[:, None]
    probs, loglik = forward_filter(x, fit.startprob, fit.transmat, fit.means, fit.covars)
    assert loglik == pytest.approx(ref.score(x), rel=1e-10)
    assert fit.log_likelihood == pytest.approx(loglik, rel=1e-12)
    smoothed = ref.predict_proba(x)
    np.testing.assert_allclose(probs[-1], smoothed[-1], atol=1e-9)
    np.testing.assert_allclose(fit.smoothed.to_numpy(), smoothed, atol=1e-6)
    # elsewhere the smoothed probabilities use the future and differ
    assert np.abs(probs[:-50] - smoothed[:-50]).max() > 0.3


def test_filtered_probabilities_do_not_look_ahead(sp500, hmm_sp500) -> None:
    r = sp500[1]
    cut = r.index.get_loc(pd.Timestamp("2008-09-12"))
    short = hmm_sp500.filter(r.iloc[: cut + 1])
    full = hmm_sp500.filter(r)
    np.testing.assert_array_equal(short.to_numpy(), full.iloc[: cut + 1].to_numpy())
    np.testing.assert_allclose(full.to_numpy(), hmm_sp500.filtered.to_numpy(), rtol=0, atol=0)
    # and with the realised-vol feature (a trailing window): still no look-ahead
    fit_v = fit_hmm_regimes(r.loc[:"2010"], include_vol=True, n_init=1)
    a = fit_v.filter(r.loc[:"2008-09-12"])
    b = fit_v.filter(r.loc[:"2010"])
    np.testing.assert_array_equal(a.to_numpy(), b.loc[: a.index[-1]].to_numpy())
    # the smoothed probabilities, by contrast, use later data: they differ from the filtered ones on some dates
    assert np.abs(b.to_numpy() - fit_v.smoothed.to_numpy()).max() > 0.3


def test_sp500_high_vol_regime_covers_the_2008_crisis(hmm_sp500) -> None:
    fit = hmm_sp500
    crash = slice("2008-10-01", "2008-11-30")
    assert (fit.states.loc[crash] == fit.high_vol_state).mean() > 0.95
    assert (fit.filtered.loc[crash, fit.high_vol_state] > 0.5).mean() > 0.9
    # and the calm 2005-2006 market sits in the low-vol state
    assert (fit.states.loc["2005":"2006"] == 0).mean() > 0.9
    vols = fit.state_vols
    assert vols[1] > 2.0 * vols[0]
    assert fit.state_means[1] < fit.state_means[0]  # the volatile state is the falling one
    # regimes persist for weeks or months, not days
    assert np.all(fit.expected_durations > 20)
    d = json.loads(json.dumps(fit.to_dict(include_series=True)))
    assert d["n_states"] == 2 and len(d["states"]["values"]) == len(fit.states)


def test_markov_switching_agrees_with_the_hmm(hmm_sp500, ms_sp500) -> None:
    ms, hmm = ms_sp500, hmm_sp500
    crash = slice("2008-10-01", "2008-11-30")
    assert (ms.states.loc[crash] == ms.high_vol_state).mean() > 0.95
    assert (ms.filtered.loc[crash, ms.high_vol_state] > 0.5).mean() > 0.9
    # same model, two implementations: the same parameters and nearly the same path
    np.testing.assert_allclose(ms.state_vols, hmm.state_vols, rtol=0.02)
    np.testing.assert_allclose(ms.transmat, hmm.transmat, atol=0.005)
    assert (ms.states == hmm.states).mean() > 0.95
    assert ms.log_likelihood == pytest.approx(hmm.log_likelihood, abs=2.0)
    assert json.loads(json.dumps(ms.to_dict()))["method"] == "markov_switching"


def test_three_states_are_ordered_by_volatility(sp500) -> None:
    r = sp500[1]
    fit = fit_hmm_regimes(r, n_states=3, n_init=1)
    assert np.all(np.diff(fit.state_vols) > 0)
    assert (fit.states.loc["2008-10-01":"2008-11-30"] == 2).mean() > 0.9
    assert fit.filtered.shape == (len(r), 3)
    np.testing.assert_allclose(fit.filtered.sum(axis=1), 1.0)
    np.testing.assert_allclose(fit.stats["stationary_prob"].to_numpy() @ fit.transmat, fit.stats["stationary_prob"])


def test_regime_features_are_causal() -> None:
    r = pd.Series(np.random.default_rng(0).normal(0, 0.01, 100))
    f = regime_features(r, include_vol=True, vol_window=10)
    assert list(f.columns) == ["return", "log_rvol"] and len(f) == 91
    assert f["log_rvol"].iloc[0] == pytest.approx(np.log(r.iloc[:10].std()))
    assert f["log_rvol"].iloc[-1] == pytest.approx(np.log(r.iloc[-10:].std()))


def test_plot_regimes_writes_a_readable_png(tmp_path: Path, sp500, hmm_sp500) -> None:
    import matplotlib.image as mpimg

    px, _ = sp500
    out = plot_regimes(
        px, hmm_sp500.states, tmp_path / "plots" / "regimes.png", probabilities=hmm_sp500.filtered[1], title="S&P 500"
    )
    assert out.exists() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(out)
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 600
    # the two shading colours are present (light green calm, light red volatile)
    rgb = (img[..., :3] * 255).round().astype(int).reshape(-1, 3)
    colours = {tuple(c) for c in np.unique(rgb, axis=0)}
    assert any(abs(c[0] - 0xD9) <= 8 and abs(c[1] - 0xF0) <= 8 and abs(c[2] - 0xD3) <= 8 for c in colours)
    assert any(abs(c[0] - 0xFC) <= 8 and abs(c[1] - 0xAE) <= 8 and abs(c[2] - 0x91) <= 8 for c in colours)
    with pytest.raises(ValueError, match="regimes: dates not in the prices index"):
        plot_regimes(px.iloc[:100], hmm_sp500.states, tmp_path / "x.png")


def test_regimes_reject_bad_input(sp500) -> None:
    r = sp500[1]
    with pytest.raises(ValueError, match="n_states: must be 2 or 3"):
        fit_hmm_regimes(r, n_states=4)
    with pytest.raises(ValueError, match="returns: NaN"):
        fit_hmm_regimes(r.where(r.index != r.index[5]))
    with pytest.raises(ValueError, match="returns: 30 usable observations"):
        fit_hmm_regimes(r.iloc[:30])
    with pytest.raises(ValueError, match="returns: index must be sorted"):
        fit_markov_switching(r.iloc[::-1])
    with pytest.raises(ValueError, match="returns: 40 observations"):
        fit_markov_switching(r.iloc[:40])
