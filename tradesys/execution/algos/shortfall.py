"""Implementation shortfall with the Almgren-Chriss optimal trajectory (Almgren & Chriss 2000, "Optimal execution
of portfolio transactions", J. Risk 3(2)).

The model: sell X shares over [0, T] in N intervals of length tau = T / N, holdings x_0 = X, ..., x_N = 0, trades
n_k = x_{k-1} - x_k. The price is an arithmetic random walk (volatility sigma, $/share/sqrt(time)) with permanent
impact gamma * n_k / tau and temporary impact epsilon * sign(n_k) + eta * n_k / tau. Then

    E[cost]   = 1/2 gamma X^2 + epsilon sum |n_k| + (eta_tilde / tau) sum n_k^2,   eta_tilde = eta - gamma tau / 2
    Var[cost] = sigma^2 tau sum_{k=1..N} x_k^2

and the minimiser of E + lambda Var is x_j = X sinh(kappa (T - t_j)) / sinh(kappa T), with
2 (cosh(kappa tau) - 1) / tau^2 = kappa_tilde^2 = lambda sigma^2 / eta_tilde. lambda -> 0 gives the straight line
(TWAP); a larger lambda trades earlier. A buy is the mirror image (same schedule).

Time is measured in trading days of `day_seconds` (default 23,400 s, one 6.5 h session), as in the paper's example
(sigma in $/share/day^0.5, eta in $/share per share/day).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from tradesys.execution.algos._common import (
    COMMON,
    check_parent,
    check_unknown,
    child_qty,
    common_params,
    expired,
    fail,
    is_filled,
    one,
    param_float,
    param_int,
)
from tradesys.execution.algos.base import ChildSpec, MarketSlice, ParentOrder, ParentProgress
from tradesys.execution.algos.twap import slice_index


def ac_eta_tilde(eta: float, gamma: float, tau: float) -> float:
    """Temporary impact net of the permanent impact's discretisation term: eta - gamma tau / 2."""
    return eta - 0.5 * gamma * tau


def ac_kappa(risk_aversion: float, sigma: float, eta: float, gamma: float, tau: float) -> float:
    """The discrete-time urgency kappa: 2 (cosh(kappa tau) - 1) / tau^2 = lambda sigma^2 / eta_tilde."""
    et = ac_eta_tilde(eta, gamma, tau)
    if et <= 0:
        raise ValueError(f"eta: eta - gamma * tau / 2 must be > 0, got {et!r}")
    kt2 = risk_aversion * sigma**2 / et
    return math.acosh(1.0 + 0.5 * kt2 * tau**2) / tau


def ac_trajectory(total: float, slices: int, horizon: float, kappa: float) -> np.ndarray:
    """Holdings x_0 .. x_N = X sinh(kappa (T - t_j)) / sinh(kappa T) at t_j = j T / N (x_0 = X, x_N = 0).

    Written as exp(-kappa t) (1 - exp(-2 kappa (T - t))) / (1 - exp(-2 kappa T)) so a large kappa T does not
    overflow; kappa T below 1e-12 is the straight line (the limit)."""
    t = np.arange(slices + 1) * (horizon / slices)
    if kappa * horizon < 1e-12:
        x = total * (horizon - t) / horizon
    else:
        x = total * np.exp(-kappa * t) * (-np.expm1(-2.0 * kappa * (horizon - t))) / (-np.expm1(-2.0 * kappa * horizon))
    x[0], x[-1] = total, 0.0
    return x


def ac_expected_cost(holdings: np.ndarray, tau: float, gamma: float, eta: float, epsilon: float = 0.0) -> float:
    """E[cost] of a trajectory (holdings x_0 .. x_N, x_N = 0) under the AC model, in $."""
    x = np.asarray(holdings, dtype=np.float64)
    n = -np.diff(x)
    return float(0.5 * gamma * x[0] ** 2 + epsilon * np.abs(n).sum() + ac_eta_tilde(eta, gamma, tau) / tau * (n @ n))


def ac_variance(holdings: np.ndarray, tau: float, sigma: float) -> float:
    """Var[cost] of a trajectory under the AC model: sigma^2 tau sum_{k>=1} x_k^2, in $^2."""
    x = np.asarray(holdings, dtype=np.float64)[1:]
    return float(sigma**2 * tau * (x @ x))


def ac_optimal_cost(
    total: float,
    slices: int,
    horizon: float,
    risk_aversion: float,
    sigma: float,
    eta: float,
    gamma: float,
    epsilon: float = 0.0,
) -> tuple[float, float]:
    """(E, V) of the optimal trajectory in the paper's closed form (its equation after (20)); kappa > 0 needed."""
    tau = horizon / slices
    k = ac_kappa(risk_aversion, sigma, eta, gamma, tau)
    et = ac_eta_tilde(eta, gamma, tau)
    T, X = horizon, total
    e = (
        0.5 * gamma * X**2
        + epsilon * X
        + et
        * X**2
        * math.tanh(0.5 * k * tau)
        * (tau * math.sinh(2 * k * T) + 2 * T * math.sinh(k * tau))
        / (2 * tau**2 * math.sinh(k * T) ** 2)
    )
    v = (
        0.5
        * sigma**2
        * X**2
        * (tau * math.sinh(k * T) * math.cosh(k * (T - tau)) - T * math.sinh(k * tau))
        / (math.sinh(k * T) ** 2 * math.sinh(k * tau))
    )
    return e, v


@dataclass(frozen=True, slots=True)
class ShortfallAlgo:
    """The Almgren-Chriss schedule over the parent's window in `slices` intervals (see the module docstring).

    At a slice point in interval k (0-based, as TWAP counts them) the cumulative target is X - x_{k+1}; a child
    lost or partly filled is caught up at the next slice point and the last interval sends the exact remainder.
    """

    risk_aversion: float = 1e-6
    sigma: float = 0.95
    eta: float = 2.5e-6
    gamma: float = 2.5e-7
    slices: int = 10
    day_seconds: float = 23_400.0
    lot: float = 1.0
    min_qty: float = 0.0
    name: str = "is"

    @classmethod
    def from_params(cls, params: Mapping[str, object]) -> ShortfallAlgo:
        keys = ("risk_aversion", "sigma", "eta", "gamma", "slices", "day_seconds", *COMMON)
        check_unknown("is", params, keys)
        lot, min_qty = common_params("is", params)
        return cls(
            risk_aversion=param_float("is", params, "risk_aversion", 1e-6, 0.0, 1e12),
            sigma=param_float("is", params, "sigma", 0.95, 0.0, 1e12),
            eta=param_float("is", params, "eta", 2.5e-6, 0.0, 1e12, lo_open=True),
            gamma=param_float("is", params, "gamma", 2.5e-7, 0.0, 1e12),
            slices=param_int("is", params, "slices", 10, 1, 1_000_000),
            day_seconds=param_float("is", params, "day_seconds", 23_400.0, 0.0, 1e9, lo_open=True),
            lot=lot,
            min_qty=min_qty,
        )

    def horizon(self, parent: ParentOrder) -> tuple[float, float]:
        """(T, tau) of the parent's window in trading days."""
        T = (parent.end_ns - parent.start_ns) / (self.day_seconds * 1e9)
        return T, T / self.slices

    def trajectory(self, parent: ParentOrder) -> np.ndarray:
        """Holdings x_0 .. x_N still to trade at the slice boundaries, for the parent's quantity."""
        T, tau = self.horizon(parent)
        if ac_eta_tilde(self.eta, self.gamma, tau) <= 0:
            fail("is.gamma", f"must keep eta - gamma * tau / 2 > 0 (tau = {tau:g} days)", self.gamma)
        kappa = ac_kappa(self.risk_aversion, self.sigma, self.eta, self.gamma, tau)
        return ac_trajectory(parent.qty, self.slices, T, kappa)

    def children(self, parent: ParentOrder, progress: ParentProgress, market: MarketSlice) -> list[ChildSpec]:
        check_parent(self.name, parent, needs_window=True)
        if self.done(parent, progress, market) or market.ts_ns < parent.start_ns:
            return []
        k = slice_index(parent, market.ts_ns, self.slices)
        target = float(parent.qty - self.trajectory(parent)[k + 1])
        return one(parent, child_qty(parent, progress, target, self.lot), self.min_qty)

    def done(self, parent: ParentOrder, progress: ParentProgress, market: MarketSlice) -> bool:
        return is_filled(parent, progress) or expired(parent, market)
