"""Out-of-sample evaluation: per-task metrics, naive and GARCH baselines, the Diebold-Mariano test, and a
walk-forward report of network vs baselines per fold.

Why: a network only earns its place if it beats the cheap forecasts it replaces, by more than noise. Every report
this module builds puts the naive and GARCH(1,1) forecasts next to the network and tests the loss differential.

Conventions:

* Units: the original return units (the network's scaled outputs are multiplied back by the training fold's
  ``ret_scale``/``vol_scale``). Volatility is the per-period RMS return over the next h periods (see
  `tradesys.train.data`); the vol metrics compare variances: ``qlike`` = mean(p/f - log(p/f) - 1) with the proxy
  p = realised vol^2 and the forecast f = forecast vol^2 (Patton 2011's robust QLIKE, 0 at a perfect forecast; p is
  floored at 1e-300 so an all-zero window cannot give log 0), ``mse`` = mean((p - f)^2).
  Returns: ``mse``, ``mae``. Direction: ``accuracy`` (p_up > 0.5 means up) and ``log_loss`` (natural log, p
  clipped to [1e-12, 1 - 1e-12]).
* Baselines per test sample at decision time t: naive return 0; naive vol = the trailing realised vol
  sqrt(mean r^2) over rows t-h+1..t; direction: the training fold's up-frequency as p_up (so the predicted class is
  the training majority class). GARCH(1,1) (normal errors, constant mean, via `tradesys.quant.risk.garch`) fitted
  on the returns up to and including the first test decision row, then, with the parameters fixed, forecast from
  every test origin t: vol = sqrt(mean_{k=1..h}(sigma2_{t+k|t} + mu^2)).
* Diebold-Mariano (1995) on d_t = L(a)_t - L(b)_t: DM = mean(d) / sqrt(S / n) with S the long-run variance over
  ``lags`` = h - 1 autocovariances by default (divided by n): Newey-West/Bartlett weights 1 - k/(lags+1) by
  default, or ``kernel="uniform"`` (weight 1, the truncated estimator of the original DM and of HLN; if it comes
  out <= 0 the Bartlett one is used and ``DMResult.kernel`` says so). The Harvey-Leybourne-Newbold (1997)
  statistic multiplies DM by sqrt((n + 1 - 2h + h(h-1)/n) / n) and is referred to Student's t with n-1 degrees of
  freedom. For h = 1 the two kernels coincide and the HLN statistic is exactly the one-sample t statistic of d.
  For h > 1, Bartlett weights at lag h-1 under-estimate the variance of an MA(h-1) differential and over-reject
  (tests/test_train_evaluate.py measures it); the uniform kernel keeps the size near the nominal level, so the
  walk-forward report uses it. Negative DM means forecast a has the smaller loss; ``alternative="less"`` tests
  H1: E[d] < 0 (a better than b).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats
from torch import nn

from tradesys.train.data import Samples, Split, Standardizer
from tradesys.train.fit import FitConfig, fit_model, predict

__all__ = [
    "DMResult",
    "WalkForwardReport",
    "diebold_mariano",
    "direction_metrics",
    "garch_vol_forecasts",
    "naive_forecasts",
    "newey_west_lrv",
    "qlike_loss",
    "return_metrics",
    "vol_metrics",
    "walk_forward_report",
]


def _pair(name: str, y: np.ndarray, yhat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(y, dtype=np.float64)
    b = np.asarray(yhat, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name}: targets and forecasts must be equal-length non-empty 1-D arrays")
    return a, b


def return_metrics(y: np.ndarray, yhat: np.ndarray) -> dict[str, float]:
    """MSE and MAE of next-period return forecasts."""
    a, b = _pair("returns", y, yhat)
    e = a - b
    return {"mse": float(np.mean(e * e)), "mae": float(np.mean(np.abs(e)))}


def qlike_loss(realised_vol: np.ndarray, vol_hat: np.ndarray) -> np.ndarray:
    """Per-observation QLIKE p/f - log(p/f) - 1 on variances p = realised^2, f = forecast^2 (module docstring)."""
    a, b = _pair("vol", realised_vol, vol_hat)
    if np.any(b <= 0):
        raise ValueError("vol_hat: forecasts must be > 0")
    ratio = np.maximum(a * a, 1e-300) / (b * b)
    return ratio - np.log(ratio) - 1.0


def vol_metrics(realised_vol: np.ndarray, vol_hat: np.ndarray) -> dict[str, float]:
    """QLIKE and MSE of the variance (Patton 2011: both robust to the noise in the realised proxy)."""
    a, b = _pair("vol", realised_vol, vol_hat)
    return {"qlike": float(np.mean(qlike_loss(a, b))), "mse": float(np.mean((a * a - b * b) ** 2))}


def direction_metrics(y_dir: np.ndarray, p_up: np.ndarray) -> dict[str, float]:
    """Accuracy (threshold 0.5) and log-loss of up/down probabilities."""
    a, b = _pair("direction", y_dir, p_up)
    p = np.clip(b, 1e-12, 1 - 1e-12)
    ll = -np.mean(a * np.log(p) + (1 - a) * np.log1p(-p))
    return {"accuracy": float(np.mean((b > 0.5) == (a > 0.5))), "log_loss": float(ll)}


def naive_forecasts(samples: Samples, train_up_rate: float) -> dict[str, np.ndarray]:
    """Zero return, trailing h-row realised vol at t, and the training up-frequency as p_up (module docstring)."""
    r = samples.returns.to_numpy()
    h = samples.vol_horizon
    if np.any(samples.t - h + 1 < 0):
        raise ValueError("samples: a decision row has fewer than h returns behind it")
    trail = np.lib.stride_tricks.sliding_window_view(r, h)[samples.t - h + 1]  # rows t-h+1..t
    vol = np.sqrt(np.mean(trail * trail, axis=1))
    n = len(samples)
    return {"ret": np.zeros(n), "vol": np.maximum(vol, 1e-12), "p_up": np.full(n, float(train_up_rate))}


def garch_vol_forecasts(samples: Samples) -> np.ndarray:
    """GARCH(1,1) h-period RMS vol forecasts at each sample's decision row, parameters fitted up to the first."""
    from tradesys.quant.risk.garch import fit_vol_model

    r = samples.returns
    t0 = int(samples.t.min())
    fit = fit_vol_model(r, model="garch", dist="normal", mean="constant", last_obs=t0 + 1)
    # the VolFit keeps arch's result; its forecast(start=...) gives fixed-parameter forecasts from every origin
    fc = fit._result.forecast(horizon=samples.vol_horizon, start=t0, reindex=False)
    var = fc.variance.to_numpy() / fit.scale**2
    mu = fc.mean.to_numpy() / fit.scale
    rms = np.sqrt(np.mean(var + mu * mu, axis=1))
    return rms[samples.t - t0]


def newey_west_lrv(d: np.ndarray, lags: int, kernel: Literal["bartlett", "uniform"] = "bartlett") -> float:
    """Long-run variance gamma_0 + 2 sum_{k<=lags} w_k gamma_k with gamma_k = sum / n: Bartlett (Newey-West)
    weights w_k = 1 - k/(lags+1), or uniform weights w_k = 1 (the truncated estimator of Diebold-Mariano 1995)."""
    if kernel not in ("bartlett", "uniform"):
        raise ValueError(f"kernel: must be 'bartlett' or 'uniform', got {kernel!r}")
    if lags < 0:
        raise ValueError(f"lags: must be >= 0, got {lags}")
    x = np.asarray(d, dtype=np.float64)
    x = x - x.mean()
    n = x.size
    s = float(x @ x) / n
    for k in range(1, min(lags, n - 1) + 1):
        w = 1.0 - k / (lags + 1.0) if kernel == "bartlett" else 1.0
        s += 2.0 * w * float(x[k:] @ x[:-k]) / n
    return s


@dataclass(frozen=True)
class DMResult:
    """Diebold-Mariano test result: ``stat`` (HLN-corrected if ``hln``), ``pvalue``, mean loss differential."""

    stat: float
    pvalue: float
    mean_diff: float
    lrv: float
    n: int
    h: int
    hln: bool
    alternative: str
    kernel: str


def diebold_mariano(
    loss_a: np.ndarray,
    loss_b: np.ndarray,
    *,
    h: int = 1,
    lags: int | None = None,
    hln: bool = True,
    alternative: Literal["two-sided", "less", "greater"] = "two-sided",
    kernel: Literal["bartlett", "uniform"] = "bartlett",
) -> DMResult:
    """Test equal predictive accuracy of forecasts a and b from their per-period losses (module docstring)."""
    a, b = _pair("losses", loss_a, loss_b)
    if h < 1:
        raise ValueError(f"h: must be >= 1, got {h}")
    if alternative not in ("two-sided", "less", "greater"):
        raise ValueError(f"alternative: must be two-sided, less or greater, got {alternative!r}")
    d = a - b
    n = d.size
    if n < 3:
        raise ValueError(f"losses: need at least 3 observations, got {n}")
    lrv = newey_west_lrv(d, h - 1 if lags is None else lags, kernel)
    if lrv <= 0 and kernel == "uniform":  # the truncated estimator can go negative; Bartlett cannot
        kernel = "bartlett"
        lrv = newey_west_lrv(d, h - 1 if lags is None else lags, kernel)
    mean = float(d.mean())
    # a zero long-run variance (constant differential) gives 0 or +-inf rather than a division error
    stat = mean / math.sqrt(lrv / n) if lrv > 0 else (0.0 if mean == 0 else math.copysign(math.inf, mean))
    if hln:
        stat *= math.sqrt(max(n + 1 - 2 * h + h * (h - 1) / n, 0.0) / n)
        sf, cdf = (lambda z: float(stats.t.sf(z, n - 1))), (lambda z: float(stats.t.cdf(z, n - 1)))
    else:
        sf, cdf = (lambda z: float(stats.norm.sf(z))), (lambda z: float(stats.norm.cdf(z)))
    if alternative == "two-sided":
        p = 2.0 * sf(abs(stat))
    elif alternative == "less":
        p = cdf(stat)
    else:
        p = sf(stat)
    return DMResult(
        stat=float(stat), pvalue=p, mean_diff=mean, lrv=lrv, n=n, h=h, hln=hln, alternative=alternative, kernel=kernel
    )


@dataclass
class WalkForwardReport:
    """``metrics``: one row per (fold, forecaster) with every metric; ``tests``: one row per (fold, comparison)
    with the DM statistic and p-value (network vs baseline; negative stat = network better)."""

    metrics: pd.DataFrame
    tests: pd.DataFrame
    histories: list[list[dict[str, float]]]

    def summary(self) -> pd.DataFrame:
        """Metrics averaged over folds per forecaster."""
        return self.metrics.drop(columns=["fold", "n_test"]).groupby("forecaster", sort=False).mean()


def walk_forward_report(
    samples: Samples,
    splits: list[Split],
    model_factory: Callable[[int], nn.Module],
    config: FitConfig | None = None,
    *,
    garch: bool = True,
    dm_kernel: Literal["bartlett", "uniform"] = "uniform",
) -> WalkForwardReport:
    """For each split: standardise on train, fit a fresh `model_factory(n_features)`, forecast the test block, and
    score the network against naive (and GARCH) forecasts; DM tests on vol QLIKE, return squared error, and
    direction log-loss (h = vol horizon for the vol losses, which overlap; 1 otherwise), with the `dm_kernel`
    long-run variance (uniform by default: see the module docstring on size)."""
    rows: list[dict[str, float | int | str]] = []
    tests: list[dict[str, float | int | str]] = []
    histories = []
    h = samples.vol_horizon
    config = FitConfig() if config is None else config
    for k, sp in enumerate(splits):
        train, test = samples.subset(sp.train), samples.subset(sp.test)
        scaler = Standardizer.fit(samples, sp.train)
        model = model_factory(samples.X.shape[2])
        cfg = FitConfig(**{**config.to_dict(), "purge": max(config.purge, h)})
        res = fit_model(model, scaler.transform(train), cfg)
        histories.append(res.history)
        out = predict(res.model, scaler.transform(test))
        fc = {
            "network": {
                "ret": out["ret"] * scaler.ret_scale,
                "vol": out["vol"] * scaler.vol_scale,
                "p_up": out["p_up"],
            },
            "naive": naive_forecasts(test, float(np.mean(train.y_dir))),
        }
        if garch:
            fc["garch"] = {**fc["naive"], "vol": garch_vol_forecasts(test)}
        losses: dict[str, dict[str, np.ndarray]] = {}
        for name, f in fc.items():
            row: dict[str, float | int | str] = {"fold": k, "forecaster": name, "n_test": len(test)}
            row.update({f"ret_{m}": v for m, v in return_metrics(test.y_ret, f["ret"]).items()})
            row.update({f"vol_{m}": v for m, v in vol_metrics(test.y_vol, f["vol"]).items()})
            row.update({f"dir_{m}": v for m, v in direction_metrics(test.y_dir, f["p_up"]).items()})
            rows.append(row)
            p = np.clip(f["p_up"], 1e-12, 1 - 1e-12)
            losses[name] = {
                "vol_qlike": qlike_loss(test.y_vol, f["vol"]),
                "ret_se": (test.y_ret - f["ret"]) ** 2,
                "dir_logloss": -(test.y_dir * np.log(p) + (1 - test.y_dir) * np.log1p(-p)),
            }
        for base in [b for b in fc if b != "network"]:
            for loss_name, hh in (("vol_qlike", h), ("ret_se", 1), ("dir_logloss", 1)):
                if base == "garch" and loss_name != "vol_qlike":
                    continue  # GARCH only forecasts vol; its ret/dir columns are the naive ones
                dm = diebold_mariano(losses["network"][loss_name], losses[base][loss_name], h=hh, kernel=dm_kernel)
                tests.append(
                    {"fold": k, "loss": loss_name, "vs": base, "dm_stat": dm.stat, "pvalue": dm.pvalue,
                     "mean_diff": dm.mean_diff}
                )  # fmt: skip
    return WalkForwardReport(metrics=pd.DataFrame(rows), tests=pd.DataFrame(tests), histories=histories)


def _main() -> None:  # pragma: no cover - the documented S&P 500 run (docs/models.md)
    import argparse

    import torch

    from tradesys.data.returns import load_returns
    from tradesys.train.data import make_samples, walk_forward_splits
    from tradesys.train.models import build_model

    ap = argparse.ArgumentParser(description="walk-forward: networks vs naive and GARCH on S&P 500 daily returns")
    ap.add_argument("--kind", choices=["lstm", "transformer"], default="lstm")
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--test-size", type=int, default=250)
    ap.add_argument("--train-size", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(1)
    r = load_returns("sp500").iloc[:, 0]
    s = make_samples(r, lookback=20, vol_horizon=5)
    splits = walk_forward_splits(
        s, n_folds=args.folds, test_size=args.test_size, scheme="rolling", train_size=args.train_size
    )
    kw: dict[str, int | float] = {"hidden": 16} if args.kind == "lstm" else {"d_model": 16, "dim_feedforward": 32}
    rep = walk_forward_report(
        s, splits, lambda f: build_model(args.kind, f, **kw), FitConfig(epochs=args.epochs, patience=5, seed=0)
    )
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 20)
    print(rep.metrics.to_string(float_format=lambda x: f"{x:.4g}"))
    print(rep.summary().to_string(float_format=lambda x: f"{x:.4g}"))
    print(rep.tests.to_string(float_format=lambda x: f"{x:.4g}"))


if __name__ == "__main__":  # pragma: no cover
    _main()
