"""Monte Carlo VaR/ES (torch) against closed forms and its own error bars.

References: the normal and Student-t closed-form VaR/ES of the portfolio (a linear portfolio of a multivariate
normal / t vector is univariate normal / t with the same degrees of freedom); the spread of estimates across
independent seeds (the reported standard errors must match it: coverage of the 95% interval); sample moments of
the scenarios (mean, covariance, unit mean of the likelihood ratios under importance sampling).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from scipy import stats

from tradesys.quant.risk import (
    estimate_var,
    factor_matrix,
    mc_var,
    normal_var_es,
    simulate_scenarios,
    student_t_var_es,
    tail_shift,
)

COV = np.array([[1.0, 0.3, 0.1, 0.0], [0.3, 2.0, 0.2, -0.1], [0.1, 0.2, 0.5, 0.05], [0.0, -0.1, 0.05, 0.8]]) * 1e-4
MU = np.array([2e-4, 1e-4, -1e-4, 0.0])
E = np.array([4e5, 2e5, -1.5e5, 3e5])  # currency exposures (one short)
SIGMA = math.sqrt(E @ COV @ E)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Small tensors on a shared 2-core box: one intra-op thread is faster; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_mc_normal_converges_to_parametric() -> None:
    for alpha in (0.99, 0.999):
        var, es = normal_var_es(MU @ E, SIGMA, alpha)
        est = mc_var(MU, COV, E, alpha, n_scenarios=400_000, seed=1)
        d = est.details
        assert abs(est.var - var) < 4 * d["var_se"], (alpha, est.var, var, d["var_se"])
        assert abs(est.es - es) < 4 * d["es_se"], (alpha, est.es, es, d["es_se"])
        assert d["var_se"] < 0.01 * var  # and the error bar is small
    # horizon: mean and covariance scale with h
    var10, _ = normal_var_es(10 * MU @ E, SIGMA * math.sqrt(10), 0.99)
    est = mc_var(MU, COV, E, 0.99, n_scenarios=200_000, seed=2, horizon_days=10)
    assert abs(est.var - var10) < 4 * est.details["var_se"]


def test_mc_t_converges_to_student_t_closed_form() -> None:
    nu = 5.0
    var, es = student_t_var_es(MU @ E, SIGMA, nu, 0.99)
    est = mc_var(MU, COV, E, 0.99, dist="t", nu=nu, n_scenarios=400_000, seed=3)
    assert abs(est.var - var) < 4 * est.details["var_se"]
    assert abs(est.es - es) < 4 * est.details["es_se"]
    # the scenarios' covariance is cov (not the t dispersion matrix) and their mean is mu
    x, lr = simulate_scenarios(MU, COV, 400_000, dist="t", nu=nu, seed=4)
    assert x.dtype == torch.float64 and bool(torch.all(lr == 1))
    xn = x.numpy()
    np.testing.assert_allclose(np.cov(xn, rowvar=False), COV, atol=0.03 * COV.max())
    np.testing.assert_allclose(xn.mean(axis=0), MU, atol=5e-5)


@pytest.mark.parametrize(("importance", "antithetic"), [(False, False), (False, True), (True, False), (True, True)])
def test_reported_standard_errors_are_honest(importance: bool, antithetic: bool) -> None:
    """Across 120 seeds the truth lies within +-1.96 reported SE about 95% of the time, and the reported SE
    matches the actual spread of the estimates."""
    alpha = 0.99
    var, es = normal_var_es(MU @ E, SIGMA, alpha)
    hits_var, hits_es, est_var, se_var = [], [], [], []
    for seed in range(120):
        est = mc_var(MU, COV, E, alpha, n_scenarios=10_000, importance=importance, antithetic=antithetic, seed=seed)
        d = est.details
        hits_var.append(abs(est.var - var) <= 1.96 * d["var_se"])
        hits_es.append(abs(est.es - es) <= 1.96 * d["es_se"])
        est_var.append(est.var)
        se_var.append(d["var_se"])
    assert 0.88 <= np.mean(hits_var) <= 0.995
    assert 0.85 <= np.mean(hits_es) <= 0.995
    assert 0.7 < np.std(est_var, ddof=1) / np.mean(se_var) < 1.35


def test_importance_sampling_cuts_the_standard_error_at_999() -> None:
    alpha = 0.999
    var, _ = normal_var_es(MU @ E, SIGMA, alpha)
    plain, tilted = [], []
    for seed in range(30):
        plain.append(mc_var(MU, COV, E, alpha, n_scenarios=20_000, seed=seed))
        tilted.append(mc_var(MU, COV, E, alpha, n_scenarios=20_000, seed=seed, importance=True))
    se_plain = np.mean([p.details["var_se"] for p in plain])
    se_is = np.mean([p.details["var_se"] for p in tilted])
    assert se_is < se_plain / 4
    assert np.mean([p.details["es_se"] for p in tilted]) < np.mean([p.details["es_se"] for p in plain]) / 4
    # the actual errors shrink too (not just the reported ones), and IS stays unbiased
    rmse = lambda xs: math.sqrt(np.mean([(x.var - var) ** 2 for x in xs]))  # noqa: E731
    assert rmse(tilted) < rmse(plain) / 4
    assert abs(np.mean([t.var for t in tilted]) - var) < 3 * se_is / math.sqrt(30) + 1e-12 * var
    assert tilted[0].details["tail_ess"] > 10 * plain[0].details["tail_ess"]


def test_importance_sampling_weights() -> None:
    theta = tail_shift(COV, E, 0.999)
    assert np.linalg.norm(theta) == pytest.approx(stats.norm.ppf(0.999))
    # the shift points where the loss grows: along -A'e
    a = factor_matrix(COV)
    assert np.dot(theta, -(a.T @ E)) == pytest.approx(np.linalg.norm(theta) * np.linalg.norm(a.T @ E))
    x, lr = simulate_scenarios(MU, COV, 400_000, shift=theta, seed=5)
    lr_n = lr.numpy()
    # E_q[LR] = 1 and E_q[LR X] = mu: the weights undo the shift
    assert lr_n.mean() == pytest.approx(1.0, abs=0.05)
    weighted_mean = (lr_n[:, None] * x.numpy()).mean(axis=0)
    np.testing.assert_allclose(weighted_mean, MU, atol=0.1 * math.sqrt(COV.max()))
    # under the shifted law the portfolio loss sits near the 99.9% VaR on average
    loss = -(x.numpy() @ E)
    assert np.mean(loss) == pytest.approx(normal_var_es(MU @ E, SIGMA, 0.999)[0], rel=0.05)


def test_antithetic_pairs_and_reproducibility() -> None:
    x, _ = simulate_scenarios(MU, COV, 1000, antithetic=True, seed=6)
    np.testing.assert_allclose((x[:500] + x[500:]).numpy(), np.tile(2 * MU, (500, 1)), atol=1e-15)
    a = mc_var(MU, COV, E, 0.99, n_scenarios=50_000, seed=7, chunk_size=4096)
    b = mc_var(MU, COV, E, 0.99, n_scenarios=50_000, seed=7, chunk_size=4096)
    c = mc_var(MU, COV, E, 0.99, n_scenarios=50_000, seed=8, chunk_size=4096)
    assert (a.var, a.es) == (b.var, b.es) and a.var != c.var
    assert a.n_obs == 50_000 and a.details["device"] == "cpu"


def test_dispatcher_mc_methods() -> None:
    r = np.random.default_rng(0).multivariate_normal(MU, COV, size=2000)
    w = E / 1e6
    par = estimate_var(r, w, method="normal", alpha=0.99, value=1e6)
    mc = estimate_var(r, w, method="mc_normal", alpha=0.99, value=1e6, n_scenarios=200_000, importance=True)
    assert abs(mc.var - par.var) < 4 * mc.details["var_se"]
    t = estimate_var(r, w, method="mc_t", alpha=0.99, value=1e6, nu=6.0, n_scenarios=100_000, antithetic=True)
    assert t.details["nu"] == 6.0 and t.es >= t.var > 0
    with pytest.raises(ValueError, match=r"^nu: degrees of freedom"):
        mc_var(MU, COV, E, 0.99, dist="t", nu=2.0)
    with pytest.raises(ValueError, match=r"^n_scenarios: "):
        mc_var(MU, COV, E, 0.999, n_scenarios=500)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this host has CUDA")
def test_cuda_request_without_cuda_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"^device: CUDA is not available"):
        mc_var(MU, COV, E, 0.99, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_closed_form() -> None:
    var, _ = normal_var_es(MU @ E, SIGMA, 0.99)
    est = mc_var(MU, COV, E, 0.99, n_scenarios=1_000_000, seed=0, device="cuda", importance=True)
    assert est.details["device"].startswith("cuda")
    assert abs(est.var - var) < 4 * est.details["var_se"]
