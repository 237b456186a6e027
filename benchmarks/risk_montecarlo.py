"""Monte Carlo VaR benchmark: scenarios per second (tradesys torch engine) against plain numpy, same run.

Workload: a portfolio of N assets (random factor-model covariance, long/short currency exposures); each
scenario is a full N-asset return vector X = mu + A Z (A the Cholesky factor), then the portfolio loss
L = -e.X; VaR and ES at alpha from all scenarios. Scenarios are drawn in chunks (memory stays chunk x N).

* tradesys: ``mc_var`` in torch float64 on one CPU thread (BLAS/OpenMP threads pinned to 1 before numpy/torch
  import, ``torch.set_num_threads(1)``): plain, with importance sampling (mean shift + likelihood ratios) and
  with antithetic variates. It also computes the standard errors of VaR and ES.
* peer, measured in the same run: the same scenario generation written in plain numpy (``default_rng``
  standard normals, the same A, mu, chunk size, the same shift and likelihood ratios for IS) and the same
  VaR/ES estimator (sort, cumulative weights), without standard errors.

Also printed: the standard error of VaR at alpha for plain and IS runs of the same size, and the variance
reduction factor (SE_plain / SE_IS)^2, i.e. how many times more plain scenarios give the same accuracy. With
--cuda and a GPU present, tradesys on the GPU is timed too (synchronised, float64).

    .venv/bin/python benchmarks/risk_montecarlo.py [--n 500000] [--assets 100] [--alpha 0.999] [--repeats 3]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

torch.set_num_threads(1)

from scipy import special

from tradesys.quant.risk.montecarlo import factor_matrix, mc_var, tail_shift

CHUNK = 1 << 16


def make_portfolio(n_assets: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three-factor covariance plus idiosyncratic variance (daily vol 1-3%), exposures in currency."""
    rng = np.random.default_rng(seed)
    loadings = rng.normal(0.0, 1.0, (n_assets, 3)) * [0.010, 0.006, 0.004]
    cov = loadings @ loadings.T + np.diag(rng.uniform(0.005, 0.02, n_assets) ** 2)
    mu = rng.normal(0.0002, 0.0002, n_assets)
    exposures = rng.uniform(-0.5e6, 1.5e6, n_assets)
    return mu, cov, exposures


def numpy_var_es(
    mu: np.ndarray, a: np.ndarray, e: np.ndarray, n: int, alpha: float, theta: np.ndarray | None, seed: int
) -> tuple[float, float]:
    """The same scenario generation and VaR/ES estimator in plain numpy (no standard errors)."""
    rng = np.random.default_rng(seed)
    losses, weights = [], []
    half_theta2 = 0.0 if theta is None else 0.5 * float(theta @ theta)
    done = 0
    while done < n:
        k = min(CHUNK, n - done)
        z = rng.standard_normal((k, a.shape[0]))
        if theta is not None:
            z += theta
            weights.append(np.exp(half_theta2 - z @ theta))
        x = z @ a.T + mu
        losses.append(-(x @ e))
        done += k
    loss = np.concatenate(losses)
    w = np.concatenate(weights) / n if theta is not None else np.full(n, 1.0 / n)
    order = np.argsort(-loss)
    s, ws = loss[order], w[order]
    above = np.cumsum(ws) - ws
    p = 1.0 - alpha
    var = float(s[np.nonzero(above <= p * (1 + 1e-9))[0].max()])
    es = var + float(np.sum(w * np.maximum(loss - var, 0.0))) / p
    return var, es


def timed(fn: Callable[[], object], repeats: int, sync: Callable[[], None] | None = None) -> tuple[float, object]:
    """Median wall time of fn() over repeats (after one untimed warm-up call), and the last result."""
    out = fn()
    times = []
    for _ in range(repeats):
        if sync:
            sync()
        t0 = time.perf_counter()
        out = fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=500_000, help="scenarios per VaR estimate")
    ap.add_argument("--assets", type=int, default=100)
    ap.add_argument("--alpha", type=float, default=0.999)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cuda", action="store_true", help="also time the torch engine on the GPU, if present")
    args = ap.parse_args()

    mu, cov, e = make_portfolio(args.assets, args.seed)
    a = factor_matrix(cov)
    theta = tail_shift(cov, e, args.alpha)
    n = args.n
    sigma = float(np.sqrt(e @ cov @ e))
    z = float(special.ndtri(args.alpha))
    var_true = float(-mu @ e + z * sigma)
    es_true = float(-mu @ e + sigma * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi) / (1 - args.alpha))

    versions = f"Python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}"
    print(f"Monte Carlo VaR benchmark  ({versions})")
    print(
        f"{args.assets} assets, {n:,d} scenarios per estimate, alpha {args.alpha}, chunk {CHUNK:,d}; one CPU thread; "
        f"medians of {args.repeats} repeats"
    )
    rows: list[tuple[str, float]] = []
    results = {}
    for label, kw in (
        ("tradesys torch CPU, plain", {}),
        ("tradesys torch CPU, importance sampling", {"importance": True}),
        ("tradesys torch CPU, antithetic", {"antithetic": True}),
    ):
        t, est = timed(lambda kw=kw: mc_var(mu, cov, e, args.alpha, n_scenarios=n, seed=1, **kw), args.repeats)
        rows.append((label, t))
        results[label] = est
    t_np, np_plain = timed(lambda: numpy_var_es(mu, a, e, n, args.alpha, None, 1), args.repeats)
    rows.append(("numpy, plain (same generation and estimator)", t_np))
    t_np_is, np_is = timed(lambda: numpy_var_es(mu, a, e, n, args.alpha, theta, 1), args.repeats)
    rows.append(("numpy, importance sampling", t_np_is))
    if args.cuda:
        if torch.cuda.is_available():
            sync = torch.cuda.synchronize
            gpu_runs = (("tradesys torch CUDA, plain", {}), ("tradesys torch CUDA, importance", {"importance": True}))
            for label, kw in gpu_runs:
                t, est = timed(
                    lambda kw=kw: mc_var(mu, cov, e, args.alpha, n_scenarios=n, seed=1, device="cuda", **kw),
                    args.repeats,
                    sync,
                )
                rows.append((label + f" ({torch.cuda.get_device_name()})", t))
                results[label] = est
        else:
            print("CUDA not available: GPU rows skipped")

    print()
    print(f"{'engine':58s} {'seconds':>10s} {'scenarios/s':>14s}")
    for label, t in rows:
        print(f"{label:58s} {t:>10.4f} {n / t:>14,.0f}")
    print()
    print(f"throughput ratio tradesys / numpy, plain: {t_np / rows[0][1]:.2f}x")
    print(f"throughput ratio tradesys / numpy, importance sampling: {t_np_is / rows[1][1]:.2f}x")

    plain = results["tradesys torch CPU, plain"]
    tilted = results["tradesys torch CPU, importance sampling"]
    anti = results["tradesys torch CPU, antithetic"]
    print()
    print(f"closed form (normal portfolio): VaR {var_true:,.0f}, ES {es_true:,.0f}")
    print(f"{'estimate':40s} {'VaR':>14s} {'SE(VaR)':>10s} {'ES':>14s} {'SE(ES)':>10s}")
    shown = (("tradesys plain", plain), ("tradesys importance sampling", tilted), ("tradesys antithetic", anti))
    for label, est in shown:
        d = est.details
        print(f"{label:40s} {est.var:>14,.0f} {d['var_se']:>10,.0f} {est.es:>14,.0f} {d['es_se']:>10,.0f}")
    print(f"{'numpy plain':40s} {np_plain[0]:>14,.0f} {'':>10s} {np_plain[1]:>14,.0f}")  # type: ignore[index]
    print(f"{'numpy importance sampling':40s} {np_is[0]:>14,.0f} {'':>10s} {np_is[1]:>14,.0f}")  # type: ignore[index]
    vr = (plain.details["var_se"] / tilted.details["var_se"]) ** 2
    print(f"\nvariance reduction of VaR by importance sampling at alpha {args.alpha}: {vr:,.0f}x")
    print(f"plain-MC scenarios/s that would match the IS accuracy per second: {vr * n / rows[1][1]:,.0f}")


if __name__ == "__main__":
    main()
