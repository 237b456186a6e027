"""Greeks P&L explain: attribute a position's one-period P&L to delta, gamma, vega, theta, rho and cross terms.

Why: a risk report has to say where the day's P&L came from (spot move, vol move, time decay) and how much the
Greeks leave unexplained; a large residual flags a stale vol, a jump or a bad Greek.

Public API:

    pnl_explain(S_start, S_end, dt, K, T, is_call, quantity, sigma_start, sigma_end=None,
                r_start=0.0, r_end=None, q=0.0, shares=0.0, *, second_order=True) -> PnLExplain
    explain_position(legs: Sequence[OptionLeg], S_start, S_end, dt, r_start=0.0, r_end=None, q=0.0,
                     shares=0.0, *, second_order=True) -> PnLExplain
    OptionLeg(K, T, is_call, quantity, sigma, sigma_end=None)

Conventions (those of `tradesys.quant.options`): the position is `quantity` BSM European options per leg (short
< 0) on one underlying, plus `shares` units of the underlying; T is each leg's time to expiry at the start, dt
the period in years (ACT/365, e.g. 1/365 for a calendar day), sigma per leg, r continuously compounded, q the
dividend yield (held fixed). The leg axis is the LAST axis of the broadcast inputs and is summed over; any
leading axes are scenarios (give S_end shape (m, 1) for m scenarios of a book of n legs). Outputs have the
broadcast shape without the leg axis (a scalar for one scenario).

Terms, with every Greek taken at the start (S_start, T, sigma_start, r_start) and dS = S_end - S_start,
dsigma = sigma_end - sigma_start per leg, dr = r_end - r_start:

    actual  = sum_legs quantity (V(S_end, T - dt, sigma_end, r_end) - V(S_start, T, sigma_start, r_start))
              + shares dS                          (full revaluation; a leg expiring within dt is worth its payoff)
    delta   = (sum_legs quantity Delta + shares) dS
    gamma   = 0.5 Gamma dS^2           vega  = Vega dsigma         theta = Theta dt (Theta per year = -dV/dT)
    rho     = Rho dr                    vanna = Vanna dS dsigma     vomma = 0.5 Vomma dsigma^2  (second_order)
    explained = the sum of the terms;   residual = actual - explained.

The Taylor remainder makes the residual third order in (dS, dsigma) when dt = dr = 0 (O(h^3) as both scale
with h), second order with second_order=False, and O(dt^2) for a pure time step (dS = dsigma = dr = 0); the
tests check these rates. The underlying leg's P&L is its price change only (dividends and financing are not in
this explain). Invalid legs (see `european.bsm_greeks`) make their scenario NaN; `codes` holds the per-leg
`OptionError` codes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tradesys.quant.backend import Array, asarrays, namespace
from tradesys.quant.options.european import bsm_greeks, bsm_price

__all__ = ["TERMS", "OptionLeg", "PnLExplain", "explain_position", "pnl_explain"]

TERMS: tuple[str, ...] = ("delta", "gamma", "vega", "theta", "rho", "vanna", "vomma")


@dataclass(frozen=True)
class OptionLeg:
    """One line of a position: `quantity` European options (short < 0) and the vol at start (and end)."""

    K: float
    T: float
    is_call: bool
    quantity: float
    sigma: float
    sigma_end: float | None = None


@dataclass(frozen=True)
class PnLExplain:
    """Actual P&L, its attribution by Greek (TERMS), the explained sum and the residual (module docstring).

    `by_leg` holds the option legs' unsummed terms (leg axis last) plus "actual" per leg; the underlying's
    shares dS is in `delta` and `actual` only.
    """

    actual: Array
    delta: Array
    gamma: Array
    vega: Array
    theta: Array
    rho: Array
    vanna: Array
    vomma: Array
    explained: Array
    residual: Array
    codes: Array
    by_leg: dict[str, Array] = field(default_factory=dict)

    def terms(self) -> dict[str, Array]:
        """The attribution terms in TERMS order."""
        return {name: getattr(self, name) for name in TERMS}


def pnl_explain(
    S_start: Any,
    S_end: Any,
    dt: Any,
    K: Any,
    T: Any,
    is_call: Any,
    quantity: Any,
    sigma_start: Any,
    sigma_end: Any = None,
    r_start: Any = 0.0,
    r_end: Any = None,
    q: Any = 0.0,
    shares: Any = 0.0,
    *,
    second_order: bool = True,
) -> PnLExplain:
    """Full-revaluation P&L of options + shares over dt and its Greeks attribution (module docstring)."""
    sigma_end = sigma_start if sigma_end is None else sigma_end
    r_end = r_start if r_end is None else r_end
    S0, S1, dt, K, T, call, qty, v0, v1, r0, r1, q = asarrays(
        S_start, S_end, dt, K, T, is_call, quantity, sigma_start, sigma_end, r_start, r_end, q
    )
    xp = namespace(S0)
    if S0.ndim == 0:
        S0, S1, dt, K, T, call, qty, v0, v1, r0, r1, q = (
            x.reshape(1) for x in (S0, S1, dt, K, T, call, qty, v0, v1, r0, r1, q)
        )
    if bool((dt < 0).any()):
        raise ValueError("dt: must be >= 0 (the period is forward in time)")
    shares_arr = asarrays(shares, S0[..., 0])[0]
    is_call_b = call > 0.5
    g = bsm_greeks(
        S0, K, T, r0, q, v0, is_call_b, which=("price", "delta", "gamma", "vega", "theta", "rho", "vanna", "vomma")
    )
    T_end = xp.where(T - dt > 0, T - dt, 0.0 * T)
    v_end = bsm_price(S1, K, T_end, r1, q, v1, is_call_b)
    dS = S1 - S0
    dv = v1 - v0
    dr = r1 - r0
    zero = xp.zeros_like(dS)
    leg = {
        "actual": qty * (v_end - g.price),
        "delta": qty * g.delta * dS,
        "gamma": qty * 0.5 * g.gamma * dS * dS,
        "vega": qty * g.vega * dv,
        "theta": qty * g.theta * dt,
        "rho": qty * g.rho * dr,
        "vanna": qty * g.vanna * dS * dv if second_order else zero,
        "vomma": qty * 0.5 * g.vomma * dv * dv if second_order else zero,
    }
    dS_book = dS[..., 0]
    tot = {name: value.sum(-1) for name, value in leg.items()}
    tot["actual"] = tot["actual"] + shares_arr * dS_book
    tot["delta"] = tot["delta"] + shares_arr * dS_book
    explained = tot["delta"]
    for name in TERMS[1:]:
        explained = explained + tot[name]
    return PnLExplain(
        **tot,
        explained=explained,
        residual=tot["actual"] - explained,
        codes=g.codes,
        by_leg=leg,
    )


def explain_position(
    legs: Sequence[OptionLeg],
    S_start: float,
    S_end: float,
    dt: float,
    r_start: float = 0.0,
    r_end: float | None = None,
    q: float = 0.0,
    shares: float = 0.0,
    *,
    second_order: bool = True,
) -> PnLExplain:
    """`pnl_explain` for a list of `OptionLeg` (one scenario): stacks the legs along the leg axis."""
    if not legs:
        raise ValueError("legs: at least one option leg is required (use shares * dS for a stock-only book)")
    return pnl_explain(
        S_start,
        S_end,
        dt,
        np.array([leg.K for leg in legs], dtype=float),
        np.array([leg.T for leg in legs], dtype=float),
        np.array([leg.is_call for leg in legs], dtype=bool),
        np.array([leg.quantity for leg in legs], dtype=float),
        np.array([leg.sigma for leg in legs], dtype=float),
        np.array([leg.sigma if leg.sigma_end is None else leg.sigma_end for leg in legs], dtype=float),
        r_start,
        r_end,
        q,
        shares,
        second_order=second_order,
    )
