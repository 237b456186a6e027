"""VaR backtesting: Kupiec POF, Christoffersen independence and conditional coverage, Basel traffic light, report.

An exception (violation) on day t is a realised loss strictly greater than that day's VaR forecast, made with data
up to t - 1. With p = 1 - alpha the expected exception rate:

* Kupiec (1995) proportion of failures: LR_pof = -2 ln[(1-p)^(T-x) p^x] + 2 ln[(1-x/T)^(T-x) (x/T)^x] ~ chi2(1).
* Christoffersen (1998) independence: from the transition counts n_ij (state i on day t-1, j on day t) of the
  exception indicator, LR_ind = -2 ln[(1-pi)^(n00+n10) pi^(n01+n11)]
  + 2 ln[(1-pi01)^n00 pi01^n01 (1-pi11)^n10 pi11^n11] ~ chi2(1), with pi01 = n01/(n00+n01),
  pi11 = n11/(n10+n11), pi = (n01+n11)/(n00+n01+n10+n11).
* Conditional coverage: LR_cc = LR_pof + LR_ind ~ chi2(2) (the MathWorks ``varbacktest`` convention: LR_pof on
  all T days, LR_ind on the T-1 transitions).
* Basel traffic light (BCBS 1996, "Supervisory framework for the use of backtesting"): with X ~ Binomial(T, p),
  green while P(X <= x) < 95%, yellow while < 99.99%, red beyond; for 250 days at 99% that is 0-4 green, 5-9
  yellow, 10+ red, and the plus factor added to the multiplier 3 is 0, .40, .50, .65, .75, .85, 1.00 for 0-4, 5,
  6, 7, 8, 9, 10+ exceptions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import special, stats

from tradesys.quant.risk.var import (
    METHODS,
    _as_matrix,
    _check_alpha,
    _exposures,
    _garch_model,
    _plain,
    empirical_var_es,
    estimate_var,
    ewma_min_obs,
    fhs_var_es,
)

__all__ = [
    "BASEL_PLUS_FACTORS",
    "LRTest",
    "TrafficLight",
    "VarBacktestReport",
    "basel_traffic_light",
    "christoffersen_independence",
    "conditional_coverage",
    "kupiec_pof",
    "rolling_var_backtest",
    "transition_counts",
]

# Basel plus factor by exception count, 250 days at 99% (10 or more: 1.00)
BASEL_PLUS_FACTORS: dict[int, float] = {
    0: 0.0,
    1: 0.0,
    2: 0.0,
    3: 0.0,
    4: 0.0,
    5: 0.40,
    6: 0.50,
    7: 0.65,
    8: 0.75,
    9: 0.85,
}


@dataclass(frozen=True)
class LRTest:
    """A likelihood-ratio test: statistic ~ chi2(df) under the null (correct coverage / independence)."""

    name: str
    statistic: float
    p_value: float
    df: int
    details: dict[str, Any] = field(default_factory=dict, compare=False)

    def reject(self, level: float = 0.05) -> bool:
        return self.p_value < level

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "df": self.df,
            "details": _plain(self.details),
        }


def _loglik(k0: float, k1: float, prob: float) -> float:
    """k0 ln(1 - prob) + k1 ln(prob), with 0 ln 0 = 0."""
    return float(special.xlogy(k0, 1.0 - prob) + special.xlogy(k1, prob))


def kupiec_pof(n_obs: int, n_exceptions: int, alpha: float) -> LRTest:
    """Kupiec's proportion-of-failures test of the exception count against the rate 1 - alpha."""
    a = _check_alpha(alpha)
    T, x = int(n_obs), int(n_exceptions)
    if T < 1:
        raise ValueError(f"n_obs: must be >= 1, got {n_obs!r}")
    if not 0 <= x <= T:
        raise ValueError(f"n_exceptions: must be in [0, n_obs={T}], got {n_exceptions!r}")
    p = 1.0 - a
    lr = max(-2.0 * (_loglik(T - x, x, p) - _loglik(T - x, x, x / T)), 0.0)
    return LRTest(
        "kupiec_pof",
        lr,
        float(stats.chi2.sf(lr, 1)),
        1,
        {"n_obs": T, "n_exceptions": x, "expected": T * p, "rate": x / T},
    )


def _indicator(exceptions: Any) -> np.ndarray:
    arr = np.asarray(exceptions.to_numpy() if isinstance(exceptions, pd.Series) else exceptions)
    if arr.ndim != 1:
        raise ValueError(f"exceptions: must be 1-D, got shape {arr.shape}")
    if arr.dtype != bool:
        if not np.all(np.isin(arr, (0, 1))):
            raise ValueError("exceptions: must be booleans or 0/1")
        arr = arr.astype(bool)
    return arr


def transition_counts(exceptions: Any) -> dict[str, int]:
    """n00, n01, n10, n11: day-to-day transitions of the exception indicator (i yesterday, j today)."""
    x = _indicator(exceptions).astype(np.int8)
    if x.size < 2:
        raise ValueError("exceptions: need at least 2 days for transition counts")
    prev, cur = x[:-1], x[1:]
    return {
        "n00": int(np.sum((prev == 0) & (cur == 0))),
        "n01": int(np.sum((prev == 0) & (cur == 1))),
        "n10": int(np.sum((prev == 1) & (cur == 0))),
        "n11": int(np.sum((prev == 1) & (cur == 1))),
    }


def christoffersen_independence(exceptions: Any) -> LRTest:
    """Christoffersen's Markov test that an exception today does not change tomorrow's exception probability."""
    c = transition_counts(exceptions)
    n00, n01, n10, n11 = c["n00"], c["n01"], c["n10"], c["n11"]
    pi01 = n01 / (n00 + n01) if n00 + n01 else 0.0
    pi11 = n11 / (n10 + n11) if n10 + n11 else 0.0
    pi = (n01 + n11) / (n00 + n01 + n10 + n11)
    ll0 = _loglik(n00 + n10, n01 + n11, pi)
    ll1 = _loglik(n00, n01, pi01) + _loglik(n10, n11, pi11)
    lr = max(-2.0 * (ll0 - ll1), 0.0)
    return LRTest(
        "christoffersen_independence",
        lr,
        float(stats.chi2.sf(lr, 1)),
        1,
        {**c, "pi01": pi01, "pi11": pi11, "pi": pi},
    )


def conditional_coverage(exceptions: Any, alpha: float) -> LRTest:
    """Christoffersen's conditional coverage: LR_pof (all days) + LR_ind, chi2 with 2 degrees of freedom."""
    x = _indicator(exceptions)
    pof = kupiec_pof(x.size, int(x.sum()), alpha)
    ind = christoffersen_independence(x)
    lr = pof.statistic + ind.statistic
    return LRTest(
        "conditional_coverage",
        lr,
        float(stats.chi2.sf(lr, 2)),
        2,
        {"lr_pof": pof.statistic, "lr_ind": ind.statistic},
    )


@dataclass(frozen=True)
class TrafficLight:
    zone: str  # "green" | "yellow" | "red"
    n_exceptions: int
    n_obs: int
    alpha: float
    cumulative_probability: float  # P(X <= n_exceptions) for X ~ Binomial(n_obs, 1 - alpha)
    plus_factor: float | None  # Basel table (250 days at 99% only); None otherwise
    multiplier: float | None  # 3 + plus factor

    def to_dict(self) -> dict[str, Any]:
        return _plain(self.__dict__)


def basel_traffic_light(n_exceptions: int, n_obs: int = 250, alpha: float = 0.99) -> TrafficLight:
    """Basel zone from the binomial cumulative probability; plus factor from the Basel table at 250 days / 99%."""
    a = _check_alpha(alpha)
    T, x = int(n_obs), int(n_exceptions)
    if T < 1:
        raise ValueError(f"n_obs: must be >= 1, got {n_obs!r}")
    if not 0 <= x <= T:
        raise ValueError(f"n_exceptions: must be in [0, n_obs={T}], got {n_exceptions!r}")
    cum = float(stats.binom.cdf(x, T, 1.0 - a))
    zone = "green" if cum < 0.95 else ("yellow" if cum < 0.9999 else "red")
    plus = None
    if T == 250 and math.isclose(a, 0.99):
        plus = BASEL_PLUS_FACTORS.get(x, 1.0)
    return TrafficLight(zone, x, T, a, cum, plus, None if plus is None else 3.0 + plus)


@dataclass(frozen=True)
class VarBacktestReport:
    """Rolling out-of-sample VaR forecasts against realised P&L, with the coverage tests.

    ``frame`` (one row per forecast day): pnl (realised, currency or return units), loss (= -pnl), var, es
    (forecasts made with the previous ``window`` days), exception (loss > var). ``traffic_light`` covers the last
    250 days (Basel convention) or all days when there are fewer.
    """

    frame: pd.DataFrame
    method: str
    alpha: float
    window: int
    kupiec: LRTest
    independence: LRTest
    conditional_coverage: LRTest
    traffic_light: TrafficLight

    @property
    def n_obs(self) -> int:
        return len(self.frame)

    @property
    def n_exceptions(self) -> int:
        return int(self.frame["exception"].sum())

    def summary(self) -> dict[str, Any]:
        f = self.frame
        exc = f[f["exception"]]
        return _plain(
            {
                "method": self.method,
                "alpha": self.alpha,
                "window": self.window,
                "n_obs": self.n_obs,
                "n_exceptions": self.n_exceptions,
                "expected_exceptions": self.n_obs * (1.0 - self.alpha),
                "exception_rate": self.n_exceptions / self.n_obs,
                "kupiec": self.kupiec.to_dict(),
                "independence": self.independence.to_dict(),
                "conditional_coverage": self.conditional_coverage.to_dict(),
                "traffic_light": self.traffic_light.to_dict(),
                "mean_loss_on_exceptions": float(exc["loss"].mean()) if len(exc) else None,
                "mean_es_on_exceptions": float(exc["es"].mean()) if len(exc) else None,
                "start": str(f.index[0]),
                "end": str(f.index[-1]),
            }
        )


def _rolling_fhs(
    pnl: np.ndarray, first: int, window: int, alpha: float, refit_every: int, *, dist: str = "normal", o: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """One-day FHS forecasts for days first..T-1, refitting every ``refit_every`` days.

    Each block refits the GARCH on the window before its first day, then runs the filter with those parameters
    once over window + block (``arch``'s ``fix``; the recursion is causal, so sigma_t uses data before t only) and
    forecasts day t from sigma_t and the standardised residuals of days t-window..t-1. A refit day's forecast is
    ``fhs_var_es`` on its window; in between it differs from ``fhs_var_es(window, params=...)`` only by where the
    variance recursion starts (its weight decays like beta^window).
    """
    T = pnl.size
    var = np.empty(T - first)
    es = np.empty(T - first)
    for b0 in range(first, T, refit_every):
        b1 = min(b0 + refit_every, T)
        fit = pnl[b0 - window : b0]
        v0, e0, det = fhs_var_es(fit, alpha, dist=dist, o=o)
        scale = float(fit.std(ddof=1))  # the scale fhs_var_es fitted on
        scaled = np.asarray(det["params"], dtype=np.float64)
        scaled[0] /= scale
        scaled[1] /= scale * scale
        full = _garch_model(pnl[b0 - window : b1] / scale, dist, o).fix(scaled)
        cv = np.asarray(full.conditional_volatility, dtype=np.float64)
        z = np.asarray(full.std_resid, dtype=np.float64)
        mu = scaled[0]
        var[b0 - first], es[b0 - first] = v0, e0
        for t in range(b0 + 1, b1):
            j = t - (b0 - window)
            var[t - first], es[t - first] = empirical_var_es(-(mu + cv[j] * z[j - window : j]) * scale, alpha)
    return var, es


def rolling_var_backtest(
    returns: Any,
    weights: Any = None,
    *,
    method: str = "historical",
    alpha: float = 0.99,
    window: int = 500,
    refit_every: int = 20,
    value: float = 1.0,
    start: Any = None,
    **method_kwargs: Any,
) -> VarBacktestReport:
    """One-day VaR forecasts over a rolling window of ``window`` days, evaluated on the next day's P&L.

    ``returns``: T x N daily simple returns (DataFrame/Series keeps its dates) and ``weights`` (default: one
    asset, weight 1) as in ``estimate_var``; the exposures are held constant. ``start``: first forecast date (or
    row position) - earlier rows only feed the first window. FHS refits the GARCH every ``refit_every`` days and in
    between filters the new data with the last parameters (other methods re-estimate every day).
    """
    if method not in METHODS:
        raise ValueError(f"method: must be one of {', '.join(METHODS)}, got {method!r}")
    a = _check_alpha(alpha)
    r, index, cols = _as_matrix(returns)
    T, n_assets = r.shape
    if weights is None and n_assets != 1:
        raise ValueError(f"weights: required for {n_assets} assets")
    e = _exposures(np.ones(1) if weights is None else weights, n_assets, value, cols)
    if int(window) < 2 or int(window) >= T:
        raise ValueError(f"window: must be in [2, {T - 1}] for {T} rows, got {window!r}")
    if int(refit_every) < 1:
        raise ValueError(f"refit_every: must be >= 1, got {refit_every!r}")
    # checked up front, naming the window, not mid-backtest on a slice
    if method == "ewma" or method_kwargs.get("covariance") == "ewma":
        need = ewma_min_obs(float(method_kwargs.get("lam", 0.94)))
        if int(window) < need:
            raise ValueError(f"window: an EWMA estimate needs at least {need} rows (one EWMA window), got {window!r}")
    window = int(window)
    idx = index if index is not None else pd.RangeIndex(T)
    first = window
    if start is not None:
        pos = int(start) if isinstance(start, int | np.integer) else int(idx.searchsorted(pd.Timestamp(start)))
        if pos < window:
            raise ValueError(f"start: leaves fewer than window={window} rows before the first forecast")
        first = pos
    if first >= T:
        raise ValueError("start: is after the last row")
    pnl = r @ e
    n = T - first
    if method == "fhs":
        unknown = set(method_kwargs) - {"dist", "o"}
        if unknown:
            raise ValueError(f"method_kwargs: unknown option(s) {sorted(unknown)} for the rolling FHS backtest")
        var, es = _rolling_fhs(pnl, first, window, a, int(refit_every), **method_kwargs)
    else:
        var = np.empty(n)
        es = np.empty(n)
        for k, t in enumerate(range(first, T)):
            est = estimate_var(r[t - window : t], e, alpha=a, method=method, **method_kwargs)
            var[k], es[k] = est.var, est.es
    realised = pnl[first:]
    loss = -realised
    exc = loss > var
    frame = pd.DataFrame({"pnl": realised, "loss": loss, "var": var, "es": es, "exception": exc}, index=idx[first:])
    last = exc[-250:] if n >= 250 else exc
    return VarBacktestReport(
        frame=frame,
        method=method,
        alpha=a,
        window=window,
        kupiec=kupiec_pof(n, int(exc.sum()), a),
        independence=christoffersen_independence(exc),
        conditional_coverage=conditional_coverage(exc, a),
        traffic_light=basel_traffic_light(int(last.sum()), last.size, a),
    )
