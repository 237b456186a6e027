"""Portfolio optimisation benchmark: tradesys `optimize_portfolio` against PyPortfolioOpt and skfolio.

Same inputs for all three, in the same run: annualised mean and sample covariance of daily returns of the 20
S&P 500 stocks in `skfolio.datasets.load_sp500_dataset()` (1990-2022), and a synthetic 100-asset universe whose
covariance comes from a 5-factor model (Sigma = B F B' + D, fixed seed). Problems: minimum variance and maximum
Sharpe (risk-free rate 2%), long-only, fully invested, with an upper bound per asset (25% for 20 assets, 5% for
100). All three model the problem in cvxpy; tradesys and skfolio solve with Clarabel (interior point).

Peers: PyPortfolioOpt `EfficientFrontier(mu, cov, weight_bounds=(0, ub)).min_volatility()` / `.max_sharpe()`,
once with solver="CLARABEL" (same solver as ours: the ratio compares the modelling layers) and once with its
default (cvxpy picks OSQP for these QPs, a first-order solver with looser default tolerances);
skfolio `MeanRisk(MINIMIZE_RISK | MAXIMIZE_RATIO, risk_measure=VARIANCE, max_weights=ub).fit(X)` with a prior
estimator that hands it the same mu and covariance (so it does not re-estimate them). Each timed call builds
and solves the problem from scratch, as a service request would. Figures: median wall time over repeats (after
one warm-up call; the libraries' calls are interleaved round-robin so machine noise hits them alike), peer /
tradesys ratio (> 1 means tradesys is faster), and the max absolute weight difference against each peer.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/risk_optimize.py [--repeats 25]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import platform
import statistics
import time
import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd

warnings.filterwarnings("ignore")

import cvxpy as cp
import pypfopt
import skfolio
from pypfopt import EfficientFrontier
from skfolio import RiskMeasure
from skfolio.datasets import load_sp500_dataset
from skfolio.optimization import MeanRisk, ObjectiveFunction
from skfolio.prior import BasePrior, ReturnDistribution

from tradesys.quant.portfolio import PortfolioConstraints, moments_from_returns, optimize_portfolio

RISK_FREE = 0.02


class FixedPrior(BasePrior):
    """skfolio prior that returns the mu and covariance it is given (so all libraries see the same inputs)."""

    def __init__(self, mu: np.ndarray | None = None, covariance: np.ndarray | None = None) -> None:
        self.mu = mu
        self.covariance = covariance

    def fit(self, X: np.ndarray, y: object = None, **fit_params: object) -> FixedPrior:
        self.return_distribution_ = ReturnDistribution(mu=self.mu, covariance=self.covariance, returns=np.asarray(X))
        return self


def sp500_inputs() -> tuple[pd.Series, pd.DataFrame, np.ndarray]:
    returns = load_sp500_dataset().pct_change().dropna()
    mu, cov = moments_from_returns(returns)
    return mu, cov, returns.to_numpy()


def factor_inputs(n: int = 100, k: int = 5, seed: int = 7) -> tuple[pd.Series, pd.DataFrame, np.ndarray]:
    """Annualised factor-model moments: loadings B ~ N(1, 0.3) on the market and N(0, 0.4) elsewhere."""
    rng = np.random.default_rng(seed)
    B = rng.normal(0.0, 0.4, (n, k))
    B[:, 0] = rng.normal(1.0, 0.3, n)
    f_vol = np.array([0.16, 0.08, 0.06, 0.05, 0.04])
    F = np.diag(f_vol**2)
    idio = rng.uniform(0.15, 0.35, n) ** 2
    cov = B @ F @ B.T + np.diag(idio)
    premia = np.array([0.06, 0.02, 0.01, 0.0, -0.01])
    mu = RISK_FREE + B @ premia + rng.normal(0.0, 0.02, n)
    names = [f"F{i:03d}" for i in range(n)]
    X = rng.multivariate_normal(mu / 252, cov / 252, size=300)  # only gives skfolio the shape it validates
    return pd.Series(mu, index=names), pd.DataFrame(cov, index=names, columns=names), X


def timed_interleaved(fns: dict[str, Callable[[], np.ndarray]], repeats: int) -> dict[str, tuple[float, np.ndarray]]:
    """Median wall time of each fn over repeats, calls interleaved round-robin so machine noise hits all alike."""
    outs = {name: fn() for name, fn in fns.items()}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(times[name]), outs[name]) for name in fns}


def run_case(label: str, mu: pd.Series, cov: pd.DataFrame, X: np.ndarray, ub: float, repeats: int) -> None:
    names = list(mu.index)
    cons = PortfolioConstraints(long_only=True, budget=1.0, upper=ub)
    prior = FixedPrior(mu.to_numpy(), cov.to_numpy())
    for objective in ("min_variance", "max_sharpe"):

        def ours(objective: str = objective) -> np.ndarray:
            res = optimize_portfolio((mu, cov), objective, constraints=cons, risk_free_rate=RISK_FREE)
            return res.weights.to_numpy()

        def pyportfolioopt(solver: str | None, objective: str = objective) -> np.ndarray:
            ef = EfficientFrontier(mu, cov, weight_bounds=(0.0, ub), solver=solver)
            if objective == "min_variance":
                ef.min_volatility()
            else:
                ef.max_sharpe(risk_free_rate=RISK_FREE)
            return pd.Series(ef.weights, index=names).to_numpy()

        def skf(objective: str = objective) -> np.ndarray:
            fn = ObjectiveFunction.MINIMIZE_RISK if objective == "min_variance" else ObjectiveFunction.MAXIMIZE_RATIO
            model = MeanRisk(
                objective_function=fn,
                risk_measure=RiskMeasure.VARIANCE,
                prior_estimator=prior,
                min_weights=0.0,
                max_weights=ub,
                risk_free_rate=RISK_FREE,
            )
            return model.fit(X).weights_

        res = timed_interleaved(
            {
                "ours": ours,
                "pfo_clarabel": lambda: pyportfolioopt("CLARABEL"),
                "pfo_default": lambda: pyportfolioopt(None),
                "skfolio": skf,
            },
            repeats,
        )
        t, w = res["ours"]
        cells = [f"{t * 1e3:.1f}"]
        for peer in ("pfo_clarabel", "pfo_default", "skfolio"):
            tp, _ = res[peer]
            cells += [f"{tp * 1e3:.1f}", f"{tp / t:.2f}"]
        dws = [f"{np.abs(w - res[p][1]).max():.1e}" for p in ("pfo_clarabel", "pfo_default", "skfolio")]
        print(f"| {label} | {objective} | " + " | ".join(cells + dws) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=25)
    args = parser.parse_args()
    t0 = time.perf_counter()
    print(
        f"python {platform.python_version()}, cvxpy {cp.__version__}, PyPortfolioOpt {pypfopt.__version__}, "
        f"skfolio {skfolio.__version__}, one thread, median of {args.repeats} repeats"
    )
    print()
    print(
        "| universe | objective | tradesys ms | PyPfOpt (Clarabel) ms | ratio | PyPfOpt (default: OSQP) ms | ratio "
        "| skfolio ms | ratio | max dw PyPfOpt Clarabel | max dw PyPfOpt OSQP | max dw skfolio |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    mu, cov, X = sp500_inputs()
    run_case("S&P 500, 20 stocks, ub 25%", mu, cov, X, 0.25, args.repeats)
    mu, cov, X = factor_inputs()
    run_case("factor model, 100 assets, ub 5%", mu, cov, X, 0.05, args.repeats)
    print(f"\ntotal {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
