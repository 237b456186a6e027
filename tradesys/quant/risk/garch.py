"""GARCH-family volatility models: a thin, typed wrapper over `arch` for fitting and multi-step forecasting.

Why a wrapper: the risk engine (filtered historical simulation, the Ray refit job, Serve) needs one small,
picklable result type with the numbers it uses (parameters, standard errors, likelihood, the conditional
volatility path, standardised residuals, forecasts) rather than arch's full result object everywhere, and one
place that fixes the conventions. The estimation itself is arch's (maximum likelihood, SLSQP, robust
"sandwich" standard errors by default), never re-implemented here.

Conventions:

* ``returns`` are simple per-period returns in any unit; percent (100 x pct_change) is what arch is tuned for.
  With ``rescale=True`` arch may multiply the data by a power of 10 so the variance lands in a well-conditioned
  range; ``VolFit.scale`` records the factor and ``params``/``std_err`` are in THOSE (scaled) units, exactly as
  arch reports them. Everything else a `VolFit` returns (``conditional_vol``, ``forecast``) is converted back to
  the units of the input returns; ``std_resid`` is unitless.
* Models: "garch" = GARCH(1,1) sigma2_t = omega + alpha eps2_{t-1} + beta sigma2_{t-1}; "gjr" = GJR-GARCH(1,1,1)
  adds gamma eps2_{t-1} 1[eps_{t-1} < 0]; "egarch" = EGARCH(1,1,1) in arch's parameterisation
  ln sigma2_t = omega + alpha (|e_{t-1}| - sqrt(2/pi)) + gamma e_{t-1} + beta ln sigma2_{t-1}.
* Forecasts are per step h = 1..H from the end of the sample; ``horizon_vol`` = sqrt(sum of the H per-step
  variances) is the H-period vol of the summed returns (no sqrt-time scaling: the variance path is aggregated);
  ``annualised_vol`` = sqrt(periods_per_year / H x that sum), i.e. the average forecast variance over the
  horizon scaled to a year (252 trading days unless told). GARCH and GJR forecasts are analytic; EGARCH has no
  closed form beyond one step, so H > 1 uses arch's simulation method with a seeded generator.
* Bad input raises ``ValueError("field: reason")``; in `refit_many` one symbol that fails does not sink the batch:
  its `VolFit` has ``ok == False``, NaN parameters and the reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from tradesys.quant.validate import float_series

__all__ = [
    "DISTS",
    "MEANS",
    "MODELS",
    "VolFit",
    "VolForecast",
    "fit_one_symbol",
    "fit_vol_model",
    "refit_many",
]

Model = Literal["garch", "gjr", "egarch"]
Dist = Literal["normal", "t"]
Mean = Literal["constant", "zero"]

MODELS: tuple[str, ...] = ("garch", "gjr", "egarch")
DISTS: tuple[str, ...] = ("normal", "t")
MEANS: tuple[str, ...] = ("constant", "zero")
MIN_OBS = 50  # below this a GARCH likelihood is too flat to say anything

# arch's (vol, p, o, q) for each model name
_SPEC: dict[str, tuple[str, int, int, int]] = {
    "garch": ("GARCH", 1, 0, 1),
    "gjr": ("GARCH", 1, 1, 1),
    "egarch": ("EGARCH", 1, 1, 1),
}


@dataclass(frozen=True)
class VolForecast:
    """Per-step and cumulative variance forecasts, in the units of the fitted returns (squared for variances).

    ``variance[h-1]`` is the conditional variance of the return h steps ahead, ``mean[h-1]`` its conditional mean,
    ``cumulative_variance[h-1]`` the variance of the sum of the next h returns. ``horizon_vol`` is
    sqrt(cumulative_variance[-1]); ``annualised_vol`` is sqrt(periods_per_year / H x cumulative_variance[-1]).
    """

    origin: Any  # the last date (index label) of the sample the forecast starts from
    variance: np.ndarray
    mean: np.ndarray
    cumulative_variance: np.ndarray
    horizon_vol: float
    annualised_vol: float
    periods_per_year: float
    method: str

    @property
    def horizon(self) -> int:
        return int(self.variance.shape[0])

    def to_dict(self) -> dict[str, Any]:
        return {
            "origin": str(self.origin),
            "horizon": self.horizon,
            "variance": self.variance.tolist(),
            "mean": self.mean.tolist(),
            "cumulative_variance": self.cumulative_variance.tolist(),
            "horizon_vol": self.horizon_vol,
            "annualised_vol": self.annualised_vol,
            "periods_per_year": self.periods_per_year,
            "method": self.method,
        }


@dataclass(frozen=True)
class VolFit:
    """One fitted volatility model; ``ok`` is False (and the numbers NaN) when the fit could not be made.

    ``params``/``std_err`` are arch's, in the scaled units (``scale``: the factor arch applied, 1.0 if none);
    ``conditional_vol`` is in the input's units; ``std_resid`` = residual / conditional vol (unitless).
    ``converged`` is arch's optimiser flag (0 = success).
    """

    model: str
    dist: str
    mean: str
    params: pd.Series
    std_err: pd.Series
    loglik: float
    aic: float
    bic: float
    nobs: int
    scale: float
    conditional_vol: pd.Series
    std_resid: pd.Series
    converged: bool
    reason: str | None = None
    _result: Any = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.reason is None

    @property
    def persistence(self) -> float:
        """alpha + beta (+ gamma/2 for GJR, the symmetric-shock average); beta for EGARCH (its log-variance AR)."""
        p = self.params
        if not self.ok:
            return math.nan
        if self.model == "garch":
            return float(p["alpha[1]"] + p["beta[1]"])
        if self.model == "gjr":
            return float(p["alpha[1]"] + 0.5 * p["gamma[1]"] + p["beta[1]"])
        return float(p["beta[1]"])

    def forecast(
        self,
        horizon: int,
        *,
        periods_per_year: float = 252.0,
        method: Literal["analytic", "simulation", "bootstrap"] | None = None,
        simulations: int = 2000,
        seed: int = 0,
    ) -> VolForecast:
        """Forecast the next `horizon` per-step variances from the end of the sample (module docstring).

        method=None picks "analytic" where arch has it (GARCH, GJR, and EGARCH at horizon 1) and "simulation"
        otherwise. "simulation" draws `simulations` paths of shocks from the fitted distribution (numpy
        default_rng(seed)); "bootstrap" resamples the standardised residuals (RandomState(seed)).
        """
        if not self.ok or self._result is None:
            raise ValueError(f"forecast: the fit failed ({self.reason})")
        if not isinstance(horizon, (int, np.integer)) or isinstance(horizon, bool) or horizon < 1:
            raise ValueError(f"horizon: must be an integer >= 1, got {horizon!r}")
        if not periods_per_year > 0:
            raise ValueError(f"periods_per_year: must be > 0, got {periods_per_year!r}")
        if method is None:
            method = "simulation" if (self.model == "egarch" and horizon > 1) else "analytic"
        if method not in ("analytic", "simulation", "bootstrap"):
            raise ValueError(f"method: must be analytic, simulation or bootstrap, got {method!r}")
        if method == "analytic" and self.model == "egarch" and horizon > 1:
            raise ValueError("method: EGARCH has no analytic forecast beyond one step; use simulation or bootstrap")
        kwargs: dict[str, Any] = {"horizon": int(horizon), "method": method, "reindex": False}
        if method == "simulation":
            # arch's simulation ignores random_state; a seeded shock generator keeps it reproducible
            kwargs["simulations"] = int(simulations)
            kwargs["rng"] = self._shock_generator(seed)
        elif method == "bootstrap":
            kwargs["simulations"] = int(simulations)
            kwargs["random_state"] = np.random.RandomState(seed)
        fc = self._result.forecast(**kwargs)
        s2 = self.scale * self.scale
        var = np.asarray(fc.variance.iloc[-1], dtype=np.float64) / s2
        mean = np.asarray(fc.mean.iloc[-1], dtype=np.float64) / self.scale
        cum = np.cumsum(var)
        return VolForecast(
            origin=fc.variance.index[-1],
            variance=var,
            mean=mean,
            cumulative_variance=cum,
            horizon_vol=float(math.sqrt(cum[-1])),
            annualised_vol=float(math.sqrt(periods_per_year / horizon * cum[-1])),
            periods_per_year=float(periods_per_year),
            method=method,
        )

    def _shock_generator(self, seed: int) -> Any:
        """Standardised (unit-variance) shocks of the fitted error distribution from numpy's PCG64(seed)."""
        gen = np.random.default_rng(seed)
        if self.dist == "t":
            nu = float(self.params["nu"])
            scale = math.sqrt((nu - 2.0) / nu)
            return lambda size: gen.standard_t(nu, size) * scale
        return lambda size: gen.standard_normal(size)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no series): parameters, standard errors, fit statistics."""
        return {
            "model": self.model,
            "dist": self.dist,
            "mean": self.mean,
            "ok": self.ok,
            "reason": self.reason,
            "params": {k: float(v) for k, v in self.params.items()},
            "std_err": {k: float(v) for k, v in self.std_err.items()},
            "loglik": self.loglik,
            "aic": self.aic,
            "bic": self.bic,
            "nobs": self.nobs,
            "scale": self.scale,
            "converged": self.converged,
            "persistence": self.persistence,
        }

    @classmethod
    def failed(cls, model: str, dist: str, mean: str, reason: str) -> VolFit:
        """A placeholder for a fit that could not be made: NaN numbers and the reason."""
        empty = pd.Series(dtype=np.float64)
        nan = math.nan
        return cls(model, dist, mean, empty, empty, nan, nan, nan, 0, 1.0, empty, empty, False, reason)


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    v = str(value).lower()
    if v not in allowed:
        raise ValueError(f"{name}: must be one of {allowed}, got {value!r}")
    return v


def _as_returns(returns: Any) -> pd.Series:
    y = float_series(returns, "returns")
    bad = int((~np.isfinite(y.to_numpy())).sum())
    if bad:
        raise ValueError(f"returns: {bad} NaN/inf value(s); drop or fill them first (e.g. pct_change().dropna())")
    if len(y) < MIN_OBS:
        raise ValueError(f"returns: need at least {MIN_OBS} observations, got {len(y)}")
    if float(y.std()) == 0.0:
        raise ValueError("returns: constant series, no volatility to model")
    return y


def fit_vol_model(
    returns: pd.Series | np.ndarray,
    model: Model = "garch",
    dist: Dist = "normal",
    mean: Mean = "constant",
    rescale: bool = True,
    *,
    first_obs: Any = None,
    last_obs: Any = None,
) -> VolFit:
    """Fit GARCH(1,1), GJR-GARCH(1,1,1) or EGARCH(1,1,1) with normal or standardised Student-t errors by MLE.

    `first_obs`/`last_obs` pass through to arch (a date label or position; last_obs is exclusive, as in arch) to
    fit on a sub-sample while keeping the whole series for forecasting origins. Raises ValueError on bad input.
    """
    from arch import arch_model

    model_ = _check_choice("model", model, MODELS)
    dist_ = _check_choice("dist", dist, DISTS)
    mean_ = _check_choice("mean", mean, MEANS)
    y = _as_returns(returns)
    vol, p, o, q = _SPEC[model_]
    am = arch_model(
        y,
        mean="Constant" if mean_ == "constant" else "Zero",
        vol=vol,
        p=p,
        o=o,
        q=q,  # type: ignore[arg-type]
        dist=dist_,
        rescale=bool(rescale),
    )
    res = am.fit(disp="off", show_warning=False, first_obs=first_obs, last_obs=last_obs)
    scale = float(res.scale)
    cond_vol = res.conditional_volatility / scale
    std_resid = res.resid / res.conditional_volatility
    return VolFit(
        model=model_,
        dist=dist_,
        mean=mean_,
        params=res.params.copy(),
        std_err=res.std_err.copy(),
        loglik=float(res.loglikelihood),
        aic=float(res.aic),
        bic=float(res.bic),
        nobs=int(res.nobs),
        scale=scale,
        conditional_vol=cond_vol.dropna().rename("conditional_vol"),
        std_resid=std_resid.dropna().rename("std_resid"),
        converged=int(res.convergence_flag) == 0,
        _result=res,
    )


def refit_many(returns_by_symbol: Mapping[str, pd.Series], **kw: Any) -> dict[str, VolFit]:
    """Fit the same model to each symbol, serially (the Ray job `jobs/garch_refit.py` does it in parallel).

    Keyword arguments go to `fit_vol_model`. A bad model/dist/mean choice raises (it would fail every symbol);
    a symbol whose data are bad or whose fit errors gets a failed `VolFit` (``ok == False``) with the reason.
    """
    if not isinstance(returns_by_symbol, Mapping):
        raise ValueError("returns_by_symbol: must be a mapping symbol -> returns series")
    _check_choice("model", kw.get("model", "garch"), MODELS)
    _check_choice("dist", kw.get("dist", "normal"), DISTS)
    _check_choice("mean", kw.get("mean", "constant"), MEANS)
    return {sym: fit_one_symbol(sym, series, **kw) for sym, series in returns_by_symbol.items()}


def fit_one_symbol(symbol: str, returns: Any, **kw: Any) -> VolFit:
    """`fit_vol_model` for one symbol of a batch: a failure comes back as a failed VolFit naming the symbol."""
    try:
        return fit_vol_model(returns, **kw)
    except (ValueError, np.linalg.LinAlgError, RuntimeError) as exc:
        return VolFit.failed(
            str(kw.get("model", "garch")).lower(),
            str(kw.get("dist", "normal")).lower(),
            str(kw.get("mean", "constant")).lower(),
            f"{symbol}: {exc}",
        )
