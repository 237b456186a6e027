"""Market regime detection: a Gaussian hidden Markov model (hmmlearn) and Markov switching (statsmodels).

Why: risk is not stationary. Calm markets and crises differ in volatility by a factor of two to four and regimes
persist for months, so a VaR or an allocation that knows the current regime reacts faster than a rolling window.

Conventions:

* Input: simple or log per-period returns (a Series in time order, decimals). Features: the return itself and,
  with ``include_vol=True``, the log of the trailing ``vol_window``-period realised volatility (sample std of the
  returns up to and including t; the first ``vol_window - 1`` dates are dropped).
* States are ordered by the volatility of the return: state 0 is the calmest, state n-1 the most volatile.
* ``filtered`` probabilities P(S_t | r_1..r_t) use data up to t only: use them in trading/risk decisions.
  ``smoothed`` probabilities P(S_t | r_1..r_T) and the most likely (Viterbi) path use the whole sample: research
  only, they look ahead. ``HMMRegimes.filter`` runs the forward filter on new data with the fitted parameters.
* Regime statistics: mean and vol of the return per state (model parameters, per period, not annualised),
  expected duration 1 / (1 - p_ii) in periods, the stationary probability, and the share and empirical mean/vol
  of the periods the Viterbi path assigns to the state.
* Fitting is done on standardised features (hmmlearn's ``min_covar`` floor is meant for unit-scale data; daily
  returns have variances near 1e-4) and the parameters are mapped back to the input's units.
* ``plot_regimes`` writes a PNG only to the path it is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import multivariate_normal

from tradesys.quant.validate import float_series

__all__ = [
    "HMMRegimes",
    "MarkovSwitchingRegimes",
    "fit_hmm_regimes",
    "fit_markov_switching",
    "forward_filter",
    "plot_regimes",
    "regime_features",
]

RETURN_FEATURE = "return"
VOL_FEATURE = "log_rvol"


def _returns_series(x: Any, field_name: str = "returns") -> pd.Series:
    s = float_series(x, field_name)
    if not np.isfinite(s.to_numpy()).all():
        raise ValueError(f"{field_name}: NaN or infinite values (drop them first)")
    if s.index.has_duplicates:
        raise ValueError(f"{field_name}: duplicate index labels")
    if not s.index.is_monotonic_increasing:
        raise ValueError(f"{field_name}: index must be sorted in time order")
    return s


def regime_features(returns: Any, include_vol: bool = False, vol_window: int = 21) -> pd.DataFrame:
    """The observation matrix: the return and optionally log trailing realised vol (causal, no look-ahead)."""
    r = _returns_series(returns)
    feats = pd.DataFrame({RETURN_FEATURE: r})
    if include_vol:
        if not isinstance(vol_window, int) or vol_window < 2:
            raise ValueError(f"vol_window: must be an integer >= 2, got {vol_window!r}")
        rv = r.rolling(vol_window).std()
        if (rv <= 0).any():
            raise ValueError("returns: a window of constant returns has zero realised volatility")
        feats[VOL_FEATURE] = np.log(rv)
        feats = feats.iloc[vol_window - 1 :]
    return feats


def forward_filter(
    x: np.ndarray, startprob: np.ndarray, transmat: np.ndarray, means: np.ndarray, covars: np.ndarray
) -> tuple[np.ndarray, float]:
    """Normalised forward recursion of a Gaussian HMM: P(S_t | x_1..x_t) for every t, and the log-likelihood.

    Row t uses x_1..x_t only, so appending data never changes earlier rows. ``transmat[i, j]`` = P(j | i).
    """
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    n, k = x.shape[0], len(startprob)
    log_b = np.column_stack(
        [multivariate_normal.logpdf(x, means[s], covars[s], allow_singular=False) for s in range(k)]
    )
    if n == 1:
        log_b = log_b.reshape(1, k)
    # scaled recursion in probability space: emission densities are shifted by their row maximum (exact after
    # normalisation; the shift is added back to the log-likelihood), so nothing underflows
    shift = log_b.max(axis=1)
    b = np.exp(log_b - shift[:, None])
    a = np.asarray(transmat, dtype=float)
    out = np.empty((n, k))
    pred = np.asarray(startprob, dtype=float)
    loglik = 0.0
    for t in range(n):
        joint = pred * b[t]
        c = joint.sum()
        if not c > 0.0:
            raise ValueError("returns: an observation has zero likelihood under every state")
        loglik += float(np.log(c) + shift[t])
        post = joint / c
        out[t] = post
        pred = post @ a
    return out, loglik


def _stationary(transmat: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eig(transmat.T)
    v = np.real(vecs[:, np.argmin(np.abs(vals - 1.0))])
    return v / v.sum()


def _state_stats(
    returns: pd.Series, path: np.ndarray, means: np.ndarray, vols: np.ndarray, transmat: np.ndarray
) -> pd.DataFrame:
    k = len(means)
    stat = _stationary(transmat)
    rows = []
    for s in range(k):
        sel = path == s
        rv = returns.to_numpy()[sel]
        p_ii = float(transmat[s, s])
        rows.append(
            {
                "mean": float(means[s]),
                "vol": float(vols[s]),
                "expected_duration": float("inf") if p_ii >= 1.0 else 1.0 / (1.0 - p_ii),
                "stationary_prob": float(stat[s]),
                "share_of_periods": float(sel.mean()),
                "empirical_mean": float(rv.mean()) if rv.size else float("nan"),
                "empirical_vol": float(rv.std(ddof=1)) if rv.size > 1 else float("nan"),
            }
        )
    return pd.DataFrame(rows, index=pd.Index(range(k), name="state"))


def _frame_payload(df: pd.DataFrame | pd.Series) -> Any:
    idx = [i.isoformat() if isinstance(i, pd.Timestamp) else str(i) for i in df.index]
    if isinstance(df, pd.Series):
        return {"index": idx, "values": [v.item() if hasattr(v, "item") else v for v in df.to_numpy()]}
    return {"index": idx, **{str(c): [float(v) for v in df[c].to_numpy()] for c in df.columns}}


@dataclass(frozen=True)
class HMMRegimes:
    """A fitted Gaussian HMM with states ordered by return volatility (0 = calmest). Units: those of the input."""

    n_states: int
    features: list[str]
    include_vol: bool
    vol_window: int
    means: np.ndarray
    """(n_states, n_features) state means of the features."""
    covars: np.ndarray
    """(n_states, n_features, n_features) state covariances."""
    transmat: np.ndarray
    """transmat[i, j] = P(S_t = j | S_{t-1} = i)."""
    startprob: np.ndarray
    log_likelihood: float
    n_iter: int
    converged: bool
    filtered: pd.DataFrame = field(repr=False)
    smoothed: pd.DataFrame = field(repr=False)
    states: pd.Series = field(repr=False)
    stats: pd.DataFrame = field(repr=False)

    @property
    def state_means(self) -> np.ndarray:
        """Mean return per state (per period)."""
        return self.means[:, 0]

    @property
    def state_vols(self) -> np.ndarray:
        """Return volatility per state (per period)."""
        return np.sqrt(self.covars[:, 0, 0])

    @property
    def expected_durations(self) -> np.ndarray:
        """1 / (1 - p_ii) in periods."""
        return 1.0 / (1.0 - np.diag(self.transmat))

    @property
    def high_vol_state(self) -> int:
        return self.n_states - 1

    def filter(self, returns: Any) -> pd.DataFrame:
        """Filtered P(S_t | data up to t) on ``returns`` with the fitted parameters (no refit, no look-ahead)."""
        feats = regime_features(returns, self.include_vol, self.vol_window)
        probs, _ = forward_filter(feats.to_numpy(), self.startprob, self.transmat, self.means, self.covars)
        return pd.DataFrame(probs, index=feats.index, columns=list(range(self.n_states)))

    def to_dict(self, include_series: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "method": "gaussian_hmm",
            "n_states": self.n_states,
            "features": list(self.features),
            "means": self.means.tolist(),
            "covars": self.covars.tolist(),
            "transmat": self.transmat.tolist(),
            "startprob": self.startprob.tolist(),
            "log_likelihood": self.log_likelihood,
            "converged": self.converged,
            "stats": {str(i): {c: float(v) for c, v in row.items()} for i, row in self.stats.iterrows()},
            "current_filtered": [float(v) for v in self.filtered.iloc[-1]],
        }
        if include_series:
            out["filtered"] = _frame_payload(self.filtered)
            out["smoothed"] = _frame_payload(self.smoothed)
            out["states"] = _frame_payload(self.states)
        return out


def fit_hmm_regimes(
    returns: Any,
    n_states: int = 2,
    include_vol: bool = False,
    vol_window: int = 21,
    n_init: int = 3,
    n_iter: int = 200,
    tol: float = 1e-4,
    random_state: int = 0,
) -> HMMRegimes:
    """Fit a Gaussian HMM (full covariance) to returns (and log realised vol) and decode the regimes.

    EM is run from ``n_init`` k-means initialisations (seeds ``random_state + i``); the best log-likelihood wins.
    """
    from hmmlearn.hmm import GaussianHMM

    if n_states not in (2, 3):
        raise ValueError(f"n_states: must be 2 or 3, got {n_states!r}")
    if n_init < 1:
        raise ValueError(f"n_init: must be >= 1, got {n_init}")
    feats = regime_features(returns, include_vol, vol_window)
    n, d = feats.shape
    min_obs = 20 * n_states * (d + 1)
    if n < min_obs:
        raise ValueError(f"returns: {n} usable observations, need at least {min_obs} for {n_states} states")
    x = feats.to_numpy()
    mu, sd = x.mean(axis=0), x.std(axis=0, ddof=0)
    if np.any(sd <= 0):
        raise ValueError("returns: constant series, no regimes to find")
    z = (x - mu) / sd

    best: Any = None
    best_score = -np.inf
    for i in range(n_init):
        model = GaussianHMM(
            n_components=n_states,
            covariance_type="full",
            n_iter=n_iter,
            tol=tol,
            random_state=random_state + i,
            implementation="log",
        )
        model.fit(z)
        score = float(model.score(z))
        if score > best_score:
            best, best_score = model, score

    means_z = np.asarray(best.means_)
    cov_z = np.asarray(best.covars_)  # full: (k, d, d)
    means = mu + means_z * sd
    covars = cov_z * np.outer(sd, sd)[None, :, :]
    order = np.argsort(covars[:, 0, 0])
    inv = np.empty_like(order)
    inv[order] = np.arange(n_states)
    means, covars = means[order], covars[order]
    transmat = np.asarray(best.transmat_)[np.ix_(order, order)]
    startprob = np.asarray(best.startprob_)[order]

    smoothed = np.asarray(best.predict_proba(z))[:, order]
    path = inv[np.asarray(best.predict(z))]
    filtered, loglik = forward_filter(x, startprob, transmat, means, covars)
    cols = list(range(n_states))
    vols = np.sqrt(covars[:, 0, 0])
    return HMMRegimes(
        n_states=n_states,
        features=list(feats.columns),
        include_vol=include_vol,
        vol_window=vol_window,
        means=means,
        covars=covars,
        transmat=transmat,
        startprob=startprob,
        log_likelihood=loglik,
        n_iter=int(best.monitor_.iter),
        converged=bool(best.monitor_.converged),
        filtered=pd.DataFrame(filtered, index=feats.index, columns=cols),
        smoothed=pd.DataFrame(smoothed, index=feats.index, columns=cols),
        states=pd.Series(path, index=feats.index, name="state"),
        stats=_state_stats(feats[RETURN_FEATURE], path, means[:, 0], vols, transmat),
    )


@dataclass(frozen=True)
class MarkovSwitchingRegimes:
    """statsmodels MarkovRegression with switching mean and variance; states ordered by volatility (0 calmest)."""

    n_states: int
    state_means: np.ndarray
    state_vols: np.ndarray
    transmat: np.ndarray
    """transmat[i, j] = P(S_t = j | S_{t-1} = i)."""
    log_likelihood: float
    filtered: pd.DataFrame = field(repr=False)
    smoothed: pd.DataFrame = field(repr=False)
    states: pd.Series = field(repr=False)
    """argmax of the smoothed probabilities (research; looks ahead)."""
    stats: pd.DataFrame = field(repr=False)

    @property
    def expected_durations(self) -> np.ndarray:
        return 1.0 / (1.0 - np.diag(self.transmat))

    @property
    def high_vol_state(self) -> int:
        return self.n_states - 1

    def to_dict(self, include_series: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "method": "markov_switching",
            "n_states": self.n_states,
            "state_means": self.state_means.tolist(),
            "state_vols": self.state_vols.tolist(),
            "transmat": self.transmat.tolist(),
            "log_likelihood": self.log_likelihood,
            "stats": {str(i): {c: float(v) for c, v in row.items()} for i, row in self.stats.iterrows()},
            "current_filtered": [float(v) for v in self.filtered.iloc[-1]],
        }
        if include_series:
            out["filtered"] = _frame_payload(self.filtered)
            out["smoothed"] = _frame_payload(self.smoothed)
            out["states"] = _frame_payload(self.states)
        return out


def fit_markov_switching(
    returns: Any, n_states: int = 2, switching_mean: bool = True, scale: float = 100.0
) -> MarkovSwitchingRegimes:
    """Hamilton-filter regime model: r_t = mu_{S_t} + sigma_{S_t} e_t (statsmodels ``MarkovRegression``).

    ``scale`` multiplies the returns before fitting (percent units help the optimiser); results are mapped back.
    """
    from statsmodels.tsa.regime_switching.markov_regression import MarkovRegression

    if n_states not in (2, 3):
        raise ValueError(f"n_states: must be 2 or 3, got {n_states!r}")
    if not (scale > 0):
        raise ValueError(f"scale: must be > 0, got {scale}")
    r = _returns_series(returns)
    if len(r) < 50 * n_states:
        raise ValueError(f"returns: {len(r)} observations, need at least {50 * n_states}")
    y = r.to_numpy() * scale
    model = MarkovRegression(y, k_regimes=n_states, trend="c", switching_trend=switching_mean, switching_variance=True)
    res = model.fit(search_reps=0)
    names = list(model.param_names)
    params = np.asarray(res.params)
    sig2 = np.array([params[names.index(f"sigma2[{i}]")] for i in range(n_states)])
    if switching_mean:
        mus = np.array([params[names.index(f"const[{i}]")] for i in range(n_states)])
    else:
        mus = np.full(n_states, params[names.index("const")])
    # statsmodels: regime_transition[i, j, 0] = P(S_t = i | S_{t-1} = j); ours is the transpose
    trans = np.asarray(res.regime_transition)[:, :, 0].T
    order = np.argsort(sig2)
    inv = np.empty_like(order)
    inv[order] = np.arange(n_states)
    mus, sig2 = mus[order] / scale, sig2[order] / scale**2
    trans = trans[np.ix_(order, order)]
    filt = np.asarray(res.filtered_marginal_probabilities)[:, order]
    smooth = np.asarray(res.smoothed_marginal_probabilities)[:, order]
    path = smooth.argmax(axis=1)
    cols = list(range(n_states))
    vols = np.sqrt(sig2)
    return MarkovSwitchingRegimes(
        n_states=n_states,
        state_means=mus,
        state_vols=vols,
        transmat=trans,
        log_likelihood=float(res.llf) + len(y) * float(np.log(scale)),
        filtered=pd.DataFrame(filt, index=r.index, columns=cols),
        smoothed=pd.DataFrame(smooth, index=r.index, columns=cols),
        states=pd.Series(path, index=r.index, name="state"),
        stats=_state_stats(r, path, mus, vols, trans),
    )


_STATE_COLOURS = {2: ("#d9f0d3", "#fcae91"), 3: ("#d9f0d3", "#fee391", "#fcae91")}


def plot_regimes(
    prices: pd.Series,
    regimes: pd.Series,
    path: str | Path,
    probabilities: pd.Series | None = None,
    title: str | None = None,
    log_scale: bool = True,
) -> Path:
    """PNG of the price series with the background shaded by regime (0 calm green ... n-1 volatile red).

    ``regimes``: integer state per date (e.g. ``HMMRegimes.states``); dates of ``prices`` without a regime stay
    unshaded. ``probabilities``: optional series (e.g. the filtered probability of the volatile state) drawn in a
    lower panel. Returns the path written.
    """
    from matplotlib.figure import Figure

    if not isinstance(prices, pd.Series) or prices.empty:
        raise ValueError("prices: expected a non-empty pandas Series")
    if not isinstance(regimes, pd.Series) or regimes.empty:
        raise ValueError("regimes: expected a non-empty pandas Series of integer states")
    if not regimes.index.isin(prices.index).all():
        raise ValueError("regimes: dates not in the prices index")
    px = prices.astype(float)
    if log_scale and (px <= 0).any():
        raise ValueError("prices: must be positive for a log scale")
    reg = regimes.reindex(px.index)
    states = sorted(int(s) for s in reg.dropna().unique())
    if states and (min(states) < 0 or max(states) > 2):
        raise ValueError("regimes: states must be integers 0..2")
    n_states = max(states) + 1 if states else 0
    colours = _STATE_COLOURS[max(n_states, 2)]

    out = Path(path)
    has_prob = probabilities is not None
    fig = Figure(figsize=(11, 6 if has_prob else 4.5), dpi=100)
    axes = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1]) if has_prob else [fig.subplots(1, 1)]
    ax = axes[0]
    ax.plot(px.index, px.to_numpy(), color="black", linewidth=0.8, label="price")
    if log_scale:
        ax.set_yscale("log")
    x = px.index
    for s in range(n_states):
        label = "calm" if s == 0 else ("volatile" if s == n_states - 1 else f"state {s}")
        mask = (reg == s).to_numpy()
        for a in axes:
            a.fill_between(
                x, 0, 1, where=mask, step="mid", transform=a.get_xaxis_transform(), color=colours[s],
                alpha=0.9, linewidth=0, label=f"regime {s} ({label})" if a is ax else None,
            )  # fmt: skip
    ax.set_ylabel("price" + (" (log scale)" if log_scale else ""))
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title or "Price with market regimes")
    if has_prob:
        p = probabilities.reindex(px.index) if isinstance(probabilities, pd.Series) else probabilities
        axes[1].plot(x, np.asarray(p, dtype=float), color="tab:red", linewidth=0.8)
        axes[1].set_ylim(0, 1)
        axes[1].set_ylabel("P(volatile)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out
