"""VaR/ES engines against independent references.

References: numpy's quantile (inverted-CDF convention) and hand-computed tail means; scipy's normal and Student-t
quantile functions integrated with scipy.integrate.quad (ES = tail average of VaR); pandas' EWM mean
(RiskMetrics covariance); arch's GARCH simulator (FHS coverage, conditional on the true volatility); Pareto and
Student-t tails with known tail index and quantiles (EVT); positive homogeneity and the CVaR >= VaR ordering.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import integrate, special, stats

from tradesys.quant.risk import (
    METHODS,
    RiskEstimate,
    age_weights,
    cornish_fisher_var_es,
    empirical_var_es,
    estimate_var,
    ewma_covariance,
    fhs_var_es,
    gpd_tail_fit,
    normal_var_es,
    rolling_var_backtest,
    sample_covariance,
    student_t_var_es,
    var_from_pnl,
)

COV3 = np.array([[1.0, 0.3, 0.1], [0.3, 2.0, 0.2], [0.1, 0.2, 0.5]]) * 1e-4
W3 = np.array([0.5, 0.3, 0.2])


def returns3(n: int = 1500, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).multivariate_normal(np.zeros(3), COV3, size=n)


# ------------------------------------------------------------------------------------------------ historical


@pytest.mark.parametrize("n", [250, 499, 500, 1000, 1001, 2517])
@pytest.mark.parametrize("alpha", [0.9, 0.95, 0.975, 0.99])
def test_historical_var_is_numpy_inverted_cdf_quantile(n: int, alpha: float) -> None:
    """Convention: VaR = np.quantile(losses, alpha, method="inverted_cdf"); ES = Acerbi-Tasche tail mean."""
    pnl = np.random.default_rng(n).standard_t(4, n) * 0.01
    var, es = empirical_var_es(-pnl, alpha)
    assert var == np.quantile(-pnl, alpha, method="inverted_cdf")
    # hand computation: the k = floor(n p) largest losses in full, plus (n p - k) / n of the next one
    p = 1.0 - alpha
    losses = np.sort(-pnl)[::-1]
    k = math.floor(n * p + 1e-9)
    ref = (losses[:k].sum() + (n * p - k) * losses[k]) / (n * p)
    assert es == pytest.approx(ref, rel=1e-12)
    assert es >= var


def test_historical_portfolio_and_horizon_aggregation() -> None:
    r = returns3(800)
    est = estimate_var(r, W3, alpha=0.99, method="historical", value=1e6)
    pnl = 1e6 * r @ W3
    assert est.var == pytest.approx(np.quantile(-pnl, 0.99, method="inverted_cdf"), rel=1e-12)
    assert (est.n_obs, est.method, est.horizon_days) == (800, "historical", 1)
    # 10-day: overlapping buy-and-hold windows, compounded per asset
    h = 10
    agg = np.array([np.prod(1.0 + r[i : i + h], axis=0) - 1.0 for i in range(len(r) - h + 1)])
    est10 = estimate_var(r, W3, alpha=0.99, method="historical", horizon_days=h, value=1e6)
    assert est10.n_obs == len(r) - h + 1
    assert est10.var == pytest.approx(np.quantile(-1e6 * agg @ W3, 0.99, method="inverted_cdf"), rel=1e-10)


def test_age_weighted_brw() -> None:
    w = age_weights(5, 0.9)
    assert w.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(w[1:] / w[:-1], 1 / 0.9)  # newest (last) weighs most, ratio 1/lambda
    assert w[-1] == pytest.approx(0.1 / (1 - 0.9**5))
    # hand example: losses oldest -> newest, 10% tail
    losses = np.array([5.0, 1.0, 3.0, 2.0, 4.0])
    var, es = empirical_var_es(losses, 0.8, w)
    # sorted desc: 5 (w0=.1525), 4 (w4=.2442): cumulative beyond 4 is .1525 <= .2 -> VaR = 4
    assert var == 4.0
    assert es == pytest.approx((w[0] * 5.0 + (0.2 - w[0]) * 4.0) / 0.2)
    # lambda -> 1 is plain historical simulation
    r = returns3(600)
    a = estimate_var(r, W3, method="age_weighted", lam=1.0, alpha=0.99)
    b = estimate_var(r, W3, method="historical", alpha=0.99)
    assert (a.var, a.es) == pytest.approx((b.var, b.es))


# ------------------------------------------------------------------------------------------------ parametric


def test_normal_var_is_z_sigma() -> None:
    sigma = math.sqrt(W3 @ COV3 @ W3)
    z = stats.norm.ppf(0.99)
    est = estimate_var(None, W3, method="normal", cov=COV3, alpha=0.99, value=2e6)
    assert est.var == pytest.approx(2e6 * z * sigma, rel=1e-12)
    assert est.es == pytest.approx(2e6 * sigma * stats.norm.pdf(z) / 0.01, rel=1e-12)
    est10 = estimate_var(None, W3, method="normal", cov=COV3, alpha=0.99, horizon_days=10)
    assert est10.var == pytest.approx(z * sigma * math.sqrt(10), rel=1e-12)
    # from returns: sample covariance (np.cov, ddof=1) and sample mean
    r = returns3(700)
    est = estimate_var(r, W3, method="normal", alpha=0.975)
    mu, s = (r @ W3).mean(), math.sqrt(W3 @ np.cov(r, rowvar=False) @ W3)
    assert est.var == pytest.approx(-mu + stats.norm.ppf(0.975) * s, rel=1e-12)
    np.testing.assert_allclose(sample_covariance(r), np.cov(r, rowvar=False))


def test_normal_es_equals_tail_average_of_var() -> None:
    """ES_alpha = (1/(1-alpha)) int_alpha^1 VaR_u du (quad over scipy's normal quantile)."""
    mu, sigma, a = 0.0005, 0.013, 0.99
    ref = integrate.quad(lambda u: -mu + sigma * stats.norm.ppf(u), a, 1.0, limit=200)[0] / (1 - a)
    assert normal_var_es(mu, sigma, a)[1] == pytest.approx(ref, rel=1e-8)


@pytest.mark.parametrize("nu", [3.0, 4.5, 8.0, 30.0])
@pytest.mark.parametrize("alpha", [0.95, 0.99, 0.999])
def test_student_t_es_closed_form_vs_quad(nu: float, alpha: float) -> None:
    mu, sigma = -0.0002, 0.012
    s = sigma * math.sqrt((nu - 2) / nu)
    var, es = student_t_var_es(mu, sigma, nu, alpha)
    assert var == pytest.approx(-mu + s * stats.t.ppf(alpha, nu), rel=1e-12)
    # tail average of the quantile function, and tail expectation of the density: two integrals
    ref_q = integrate.quad(lambda u: -mu + s * stats.t.ppf(u, nu), alpha, 1.0, limit=200)[0] / (1 - alpha)
    ref_d = integrate.quad(lambda x: (-mu + s * x) * stats.t.pdf(x, nu), stats.t.ppf(alpha, nu), np.inf)[0]
    assert es == pytest.approx(ref_q, rel=1e-6)
    assert es == pytest.approx(ref_d / (1 - alpha), rel=1e-8)


def test_student_t_method_from_returns_fits_dof() -> None:
    r = np.random.default_rng(3).standard_t(4, size=(4000, 1)) * 0.01
    est = estimate_var(r, [1.0], method="student_t", alpha=0.99)
    assert 3.0 < est.details["nu"] < 5.5
    sd = r[:, 0].std(ddof=1)
    var, es = student_t_var_es(r.mean(), sd, est.details["nu"], 0.99)
    assert (est.var, est.es) == pytest.approx((var, es))
    fixed = estimate_var(r, [1.0], method="student_t", alpha=0.99, nu=4.0)
    assert fixed.var == pytest.approx(-r.mean() + sd * math.sqrt(0.5) * stats.t.ppf(0.99, 4), rel=1e-10)


def test_cornish_fisher() -> None:
    # no skew, no excess kurtosis: the normal quantile
    assert cornish_fisher_var_es(0.001, 0.02, 0.0, 0.0, 0.99) == pytest.approx(normal_var_es(0.001, 0.02, 0.99))
    # ES closed form = tail average of the Cornish-Fisher quantile (quad)
    mu, sd, S, K, a = 0.0003, 0.011, -0.4, 2.5, 0.99

    def q(u: float) -> float:
        z = special.ndtri(u)
        return z + (z * z - 1) * S / 6 + (z**3 - 3 * z) * K / 24 - (2 * z**3 - 5 * z) * S * S / 36

    var, es = cornish_fisher_var_es(mu, sd, S, K, a)
    assert var == pytest.approx(-(mu + sd * q(1 - a)), rel=1e-12)
    ref = -(mu + sd * integrate.quad(q, 0.0, 1 - a, limit=200)[0] / (1 - a))
    assert es == pytest.approx(ref, rel=1e-7)
    # the method uses the sample moments of the portfolio P&L (scipy's bias-corrected skew / kurtosis)
    r = returns3(900)
    pnl = r @ W3
    est = estimate_var(r, W3, method="cornish_fisher", alpha=0.99)
    ref2 = cornish_fisher_var_es(
        pnl.mean(),
        pnl.std(ddof=1),
        stats.skew(pnl, bias=False),
        stats.kurtosis(pnl, bias=False),
        0.99,
    )
    assert (est.var, est.es) == pytest.approx(ref2)
    # outside the validity domain (quantile not increasing in the tail) is refused, not silently wrong
    with pytest.raises(ValueError, match=r"Cornish-Fisher"):
        cornish_fisher_var_es(0.0, 1.0, 3.0, 0.0, 0.99)


def test_ewma_covariance_matches_pandas_ewm() -> None:
    r = pd.DataFrame(returns3(300, seed=5), columns=list("abc"))
    ours = ewma_covariance(r, 0.94)
    for i in "abc":
        for j in "abc":
            ref = (r[i] * r[j]).ewm(alpha=0.06, adjust=True).mean().iloc[-1]
            assert ours["abc".index(i), "abc".index(j)] == pytest.approx(ref, rel=1e-12)
    est = estimate_var(r, W3, method="ewma", alpha=0.99)
    assert est.var == pytest.approx(stats.norm.ppf(0.99) * math.sqrt(W3 @ ours @ W3), rel=1e-12)


# ------------------------------------------------------------------------------------------------------ EVT


def test_gpd_recovers_pareto_tail_index() -> None:
    """Pareto(a) excesses over any threshold are exactly GPD with xi = 1/a."""
    x = stats.pareto.rvs(3.0, size=20_000, random_state=11)
    tail = gpd_tail_fit(x, threshold_quantile=0.9)
    assert tail.xi == pytest.approx(1 / 3, abs=0.06)
    assert tail.beta == pytest.approx(tail.threshold / 3.0, rel=0.1)  # GPD scale of a Pareto excess: u / a
    # beyond the data: the 99.99% quantile
    assert tail.var(0.9999) == pytest.approx(stats.pareto.ppf(0.9999, 3.0), rel=0.15)


def test_gpd_recovers_student_t_tail_index() -> None:
    """A Student-t(nu) tail is in the Frechet domain with xi = 1/nu (slow convergence: tolerance 0.1)."""
    x = stats.t.rvs(4, size=40_000, random_state=12)
    tail = gpd_tail_fit(x, threshold_quantile=0.97)
    assert tail.xi == pytest.approx(0.25, abs=0.1)


@pytest.mark.parametrize(
    ("name", "draw", "truth"),
    [
        ("pareto3", lambda s: stats.pareto.rvs(3.0, size=1000, random_state=s), stats.pareto.ppf(0.999, 3.0)),
        ("t4", lambda s: stats.t.rvs(4, size=1000, random_state=s), stats.t.ppf(0.999, 4)),
    ],
)
def test_evt_beats_historical_beyond_the_data(name: str, draw: object, truth: float) -> None:
    """1,000 draws, 99.9% quantile (one point in the tail): the GPD tail is nearly unbiased where the empirical
    quantile is biased low, and its RMSE over 100 samples is smaller."""
    err_evt, err_hist = [], []
    for seed in range(100):
        x = draw(seed)  # type: ignore[operator]
        err_evt.append(var_from_pnl(-x, 0.999, method="evt").var - truth)
        err_hist.append(empirical_var_es(x, 0.999)[0] - truth)
    rmse_evt = math.sqrt(np.mean(np.square(err_evt)))
    rmse_hist = math.sqrt(np.mean(np.square(err_hist)))
    assert rmse_evt < 0.9 * rmse_hist, (name, rmse_evt, rmse_hist)
    assert abs(np.mean(err_evt)) < 0.5 * abs(np.mean(err_hist)), name


def test_evt_method_and_es_closed_form() -> None:
    r = np.random.default_rng(2).standard_t(4, size=(3000, 1)) * 0.01
    est = estimate_var(r, [1.0], method="evt", alpha=0.995)
    xi, beta, u = est.details["xi"], est.details["beta"], est.details["threshold"]
    n, nu = 3000, est.details["n_exceed"]
    var = u + beta / xi * ((n / nu * 0.005) ** (-xi) - 1)
    assert est.var == pytest.approx(var, rel=1e-12)
    # ES = tail average of the GPD quantile (quad)
    ref = integrate.quad(lambda a: u + beta / xi * ((n / nu * (1 - a)) ** (-xi) - 1), 0.995, 1.0, limit=200)[0]
    assert est.es == pytest.approx(ref / 0.005, rel=1e-6)
    with pytest.raises(ValueError, match=r"alpha: .*threshold"):
        estimate_var(r, [1.0], method="evt", alpha=0.85)


# ------------------------------------------------------------------------------------------------------ FHS


def _garch_path(seed: int, n: int = 1500) -> tuple[np.ndarray, np.ndarray]:
    from arch.univariate import GARCH, StudentsT, ZeroMean

    model = ZeroMean(None, volatility=GARCH(), distribution=StudentsT(seed=np.random.RandomState(seed)))
    sim = model.simulate([0.02, 0.1, 0.88, 6.0], n, burn=500)
    return sim["data"].to_numpy() / 100.0, sim["volatility"].to_numpy() / 100.0


def test_fhs_has_better_conditional_coverage_than_historical_on_garch_data() -> None:
    """GARCH(1,1)-t data (arch's simulator): exception rates in the high- and low-volatility thirds of the days.

    A correct conditional VaR has the nominal 5% rate in both; plain historical simulation over-shoots in calm
    spells' opposite (too many exceptions when volatility is high, almost none when it is low).
    """
    worst_hist, worst_fhs = [], []
    for seed in (0, 3):
        r, vol = _garch_path(seed)
        vol = vol[500:]
        hi, lo = vol >= np.quantile(vol, 2 / 3), vol <= np.quantile(vol, 1 / 3)
        dev = {}
        for method in ("historical", "fhs"):
            rep = rolling_var_backtest(r, method=method, alpha=0.95, window=500, refit_every=100)
            x = rep.frame["exception"].to_numpy()
            dev[method] = max(abs(x[hi].mean() - 0.05), abs(x[lo].mean() - 0.05))
        worst_hist.append(dev["historical"])
        worst_fhs.append(dev["fhs"])
        assert dev["fhs"] < dev["historical"]
    assert max(worst_fhs) < 0.035 < min(worst_hist)


def test_fhs_one_day_and_params_reuse() -> None:
    r, _ = _garch_path(7, 800)
    var, es, det = fhs_var_es(r, 0.99)
    assert det["param_names"] == ["mu", "omega", "alpha[1]", "beta[1]"]
    # scenarios are mu + sigma_next z_t: recompute from arch's own filter output
    from arch import arch_model

    scale = r.std(ddof=1)
    p = np.array(det["params"])
    res = arch_model(r / scale, mean="Constant", vol="GARCH", p=1, q=1, rescale=False).fix(
        [p[0] / scale, p[1] / scale**2, p[2], p[3]]
    )
    z = res.std_resid
    scen = -(p[0] + det["sigma_next"] * z)
    assert var == pytest.approx(np.quantile(scen, 0.99, method="inverted_cdf"), rel=1e-9)
    # parameters are in P&L units: reusing them on a rescaled series gives a rescaled answer
    v2, e2, _ = fhs_var_es(10 * r, 0.99, params=np.array(det["params"]) * [10, 100, 1, 1])
    assert (v2, e2) == pytest.approx((10 * var, 10 * es), rel=1e-9)
    # h days: arch's bootstrap through the GARCH recursion, roughly sqrt(h) wider
    v10, e10, d10 = fhs_var_es(r, 0.99, 10, n_sims=5000)
    assert d10["n_scenarios"] == 5000 and e10 >= v10
    assert 2.0 < v10 / var < 4.5


# ------------------------------------------------------------------------------------------------ dispatcher


def test_dispatcher_all_methods_and_homogeneity() -> None:
    r = pd.DataFrame(np.random.default_rng(9).standard_t(5, size=(1200, 3)) * 0.01, columns=["x", "y", "z"])
    for method in METHODS:
        kw = {"n_scenarios": 20_000} if method.startswith("mc_") else {}
        a = estimate_var(r, W3, method=method, alpha=0.99, **kw)
        b = estimate_var(r, W3 * 1e6, method=method, alpha=0.99, **kw)  # currency amounts with value=1
        c = estimate_var(r, W3, method=method, alpha=0.99, value=1e6, **kw)
        assert isinstance(a, RiskEstimate) and a.method == method
        assert a.es >= a.var > 0
        assert b.var == pytest.approx(1e6 * a.var, rel=1e-6) and c.var == pytest.approx(b.var, rel=1e-12)
        json.dumps(a.to_dict())


def test_var_from_pnl() -> None:
    pnl = np.random.default_rng(4).standard_t(5, 5000) * 1000.0
    h = var_from_pnl(pnl, 0.99)
    assert h.var == np.quantile(-pnl, 0.99, method="inverted_cdf") and h.n_obs == 5000
    # scenario probabilities: duplicating a scenario equals doubling its probability
    small = pnl[:1000]
    probs = np.full(1000, 1.0)
    probs[:100] = 2.0
    dup = np.concatenate([small, small[:100]])
    a = var_from_pnl(small, 0.97, probabilities=probs / probs.sum())
    b = var_from_pnl(dup, 0.97)
    assert (a.var, a.es) == pytest.approx((b.var, b.es), rel=1e-12)
    n = var_from_pnl(pnl, 0.99, method="normal")
    assert n.var == pytest.approx(-pnl.mean() + stats.norm.ppf(0.99) * pnl.std(ddof=1))
    for method in ("age_weighted", "evt", "student_t", "cornish_fisher", "fhs"):
        est = var_from_pnl(pnl, 0.99, method=method)
        assert est.es >= est.var > 0, method


# ------------------------------------------------------------------------------------------------ validation


def test_validation_errors_name_the_field() -> None:
    r = returns3(600)
    bad = r.copy()
    bad[10, 1] = np.nan
    with pytest.raises(ValueError, match=r"^returns: contains NaN .*row 10, column 1"):
        estimate_var(bad, W3)
    with pytest.raises(ValueError, match=r"^weights: length 2 does not match the 3 columns"):
        estimate_var(r, [0.5, 0.5])
    for alpha in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"^alpha: must be in \(0, 1\)"):
            estimate_var(r, W3, alpha=alpha)
    not_psd = np.array([[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ValueError, match=r"^cov: is not positive semi-definite"):
        estimate_var(None, [1.0, 1.0], method="normal", cov=not_psd)
    with pytest.raises(ValueError, match=r"^cov: is not positive semi-definite"):
        estimate_var(None, [1.0, 1.0], method="mc_normal", cov=not_psd)
    with pytest.raises(ValueError, match=r"^cov: is not symmetric"):
        estimate_var(None, [1.0, 1.0], method="normal", cov=[[1.0, 0.1], [0.2, 1.0]])
    with pytest.raises(ValueError, match=r"^returns: too few observations for the tail"):
        estimate_var(r, W3, alpha=0.999)  # 600 days leave no loss beyond the 99.9% quantile
    with pytest.raises(ValueError, match=r"^returns: too few observations for the tail"):
        estimate_var(r[:150], W3, method="evt", alpha=0.99)  # 14 exceedances of the 90% threshold
    with pytest.raises(ValueError, match=r"^method: must be one of"):
        estimate_var(r, W3, method="magic")
    with pytest.raises(ValueError, match=r"^method_kwargs: unknown option"):
        estimate_var(r, W3, method="historical", lam=0.9)
    with pytest.raises(ValueError, match=r"^horizon_days: must be an integer >= 1"):
        estimate_var(r, W3, horizon_days=0)
    with pytest.raises(ValueError, match=r"^returns: required"):
        estimate_var(None, W3, method="historical")
    with pytest.raises(ValueError, match=r"^returns: must be a numeric"):
        estimate_var(pd.DataFrame({"a": ["x"] * 300}), [1.0])
    # weights as a Series are aligned to the DataFrame's columns by name
    df = pd.DataFrame(r, columns=["a", "b", "c"])
    named = estimate_var(df, pd.Series({"c": W3[2], "a": W3[0], "b": W3[1]}), alpha=0.99)
    assert named.var == estimate_var(r, W3, alpha=0.99).var
    with pytest.raises(ValueError, match=r"^weights: names"):
        estimate_var(df, pd.Series({"a": 1.0, "b": 1.0, "z": 1.0}))
    # JSON: non-finite diagnostics become null
    assert RiskEstimate(1.0, 2.0, 0.99, 1, "x", 10, {"se": float("nan")}).to_dict()["details"]["se"] is None


# ------------------------------------------------------------------------------------------- CVaR >= VaR sweep


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(200, 600),
    df=st.floats(2.5, 30.0),
    skew=st.floats(-0.8, 0.8),
    alpha=st.floats(0.9, 0.995),
)
def test_cvar_at_least_var_for_every_method(seed: int, n: int, df: float, skew: float, alpha: float) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_t(df, size=(n, 2)) * 0.01
    x[:, 0] += skew * 0.01 * (rng.random(n) < 0.05)  # occasional jumps: skewness of either sign
    w = np.array([0.6, -0.4]) if seed % 2 else np.array([1.0, 0.5])
    for method in ("historical", "age_weighted", "normal", "student_t", "cornish_fisher", "ewma"):
        kw = {"nu": 4.0} if method == "student_t" else {}
        try:
            est = estimate_var(x, w, method=method, alpha=alpha, **kw)
        except ValueError as exc:  # only the documented refusals
            assert method == "cornish_fisher" or "too few observations" in str(exc), exc
            continue
        assert est.es >= est.var - 1e-15, (method, est)


def test_returns_below_minus_100_percent_are_refused_naming_the_argument() -> None:
    """A simple return of -150% is not a return (a log return or a percentage was passed): no VaR is computed."""
    r = np.random.default_rng(4).normal(0.0, 0.01, (300, 2))
    r[17, 1] = -1.5
    for method in ("historical", "normal", "ewma", "cornish_fisher"):
        with pytest.raises(ValueError, match=r"^returns: simple returns cannot be below -1 \(-100%\), got -1\.5 at "
                                             r"row 17, column 1"):  # fmt: skip
            estimate_var(r, [0.5, 0.5], method=method)
    r[17, 1] = -1.0  # a total loss is a legal simple return
    est = estimate_var(r, [0.5, 0.5], method="historical", alpha=0.99)  # ES: the 3 worst of 300, one of them 0.5
    assert est.es >= 0.5 / 3


def test_ewma_var_needs_one_ewma_window_of_observations() -> None:
    """From one observation the 'EWMA VaR' was |r| times a normal quantile; now too few rows are refused."""
    from tradesys.quant.risk.var import ewma_min_obs

    assert ewma_min_obs(0.94) == 17 and ewma_min_obs(0.99) == 100 and ewma_min_obs(0.5) == 2
    r = np.random.default_rng(5).normal(0.0, 0.01, (40, 1))
    with pytest.raises(ValueError, match=r"^returns: too few observations for an EWMA covariance at lam=0.94: 1 "
                                         r"\(need >= 17"):  # fmt: skip
        estimate_var(r[:1], [1.0], method="ewma")
    with pytest.raises(ValueError, match=r"^returns: too few observations .* 16 \(need >= 17"):
        estimate_var(r[:16], [1.0], method="ewma")
    with pytest.raises(ValueError, match=r"^returns: too few observations .* at lam=0.99: 40 \(need >= 100"):
        estimate_var(r, [1.0], method="normal", covariance="ewma", lam=0.99)
    # at the minimum it is the RiskMetrics number: the normal quantile times the EWMA volatility, by hand
    est = estimate_var(r[:17], [1.0], method="ewma", alpha=0.99)
    w = 0.94 ** np.arange(16, -1, -1)
    sigma = math.sqrt(float(np.sum(w * r[:17, 0] ** 2) / w.sum()))
    assert est.var == pytest.approx(stats.norm.ppf(0.99) * sigma, rel=1e-12)
