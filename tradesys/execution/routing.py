"""Smart order routing: split one order across venues to minimise its expected all-in cost (pure: no Ray, no I/O).

Why a solver: the cheapest split is a small mixed-integer program, not a sort. Each venue can fill only its
liquidity now, a dark venue takes either nothing or at least its minimum quantity, and a minimum fee per fill makes
a venue's cost jump from 0 to `fee_min` the moment it is used. `scipy.optimize.milp` (HiGHS) solves it exactly
and deterministically; with a handful of venues that is a program of about 3n+1 variables.

The cost model, per unit and relative to the mid `P` (all terms in bps of `P`):

    lit venue   half_spread_bps + fee_bps + 1e4 * fee_per_share / P + latency_bps       (+ fee_min per fill)
    dark venue                    fee_bps + 1e4 * fee_per_share / P + latency_bps       (fills at the mid)
    rest        the rest venue's lit cost + delay_bps                                   (what no venue can fill now)

`latency_bps` and `delay_bps` are the expected adverse move while the order is in flight (`latency_ms`) or waits a
bar for liquidity: with per-bar volatility sigma of log returns, a random walk moves |dlogP| = sigma *
sqrt(2 / pi) * sqrt(wait / bar) on average, and half the time against the order, so

    adverse_move_bps(wait) = 1e4 * 0.5 * sqrt(2 / pi) * sigma * sqrt(wait_ms / bar_ms).

Before a symbol's volatility is known (its first bar), resting is priced at `UNKNOWN_DELAY_BPS`, so that what
can fill now does. A bar replay has no prices inside a bar, so latency cannot move a simulated fill: it is a cost
the router weighs, small for daily bars and decisive only between otherwise equal venues. Market impact is not in the
estimate (the lit venues' own impact model, `broker.impact`, still prices their fills).

Ties go to the venue listed first (a cost nudge of 1e-4 bps per position in the list), so a decision is a function
of its inputs alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

_TIE_BPS = 1e-4  # per position in the venue list: the first-listed venue wins a tie (above solver tolerance)
# the delay cost of resting when the symbol's volatility is not known yet (fewer than two bars): high, so that
# what can fill now does rather than betting on a later bar
UNKNOWN_DELAY_BPS = 1000.0
_SNAP = 1e-7  # relative tolerance for snapping the solver's quantities onto 0, a bound or a minimum


@dataclass(frozen=True, slots=True)
class Venue:
    """One venue's terms. `participation`: share of a bar's volume it can fill; `min_qty`: dark venues only."""

    name: str
    dark: bool = False
    fee_bps: float = 0.0
    fee_per_share: float = 0.0
    fee_min: float = 0.0
    latency_ms: float = 0.0
    participation: float = 0.1
    min_qty: float = 0.0

    def fee(self, qty: float, price: float) -> float:
        """The fee of one fill: max(fee_min, bps of notional + per share), never negative."""
        return max(self.fee_min, self.fee_bps / 1e4 * qty * price + self.fee_per_share * qty, 0.0)


@dataclass(frozen=True, slots=True)
class RouteMarket:
    """What the router knows of the symbol now: the mid, the half spread a lit fill pays, the per-bar volatility,
    the bar length, and what each venue can fill now (`capacity`; inf: unknown volume, no cap)."""

    mid: float
    half_spread_bps: float = 0.0
    sigma: float = 0.0  # per-bar volatility of log returns (0: unknown, no latency or delay cost)
    bar_ms: float = 0.0  # bar length (0: unknown, no latency or delay cost)
    capacity: Mapping[str, float] = field(default_factory=dict)


def adverse_move_bps(sigma: float, wait_ms: float, bar_ms: float) -> float:
    """Expected adverse move (bps) over `wait_ms`: half the mean absolute move of a random walk (module docstring)."""
    if sigma <= 0.0 or bar_ms <= 0.0 or wait_ms <= 0.0:
        return 0.0
    return 1e4 * 0.5 * math.sqrt(2.0 / math.pi) * sigma * math.sqrt(wait_ms / bar_ms)


@dataclass(frozen=True, slots=True)
class VenueEstimate:
    """A venue's expected cost per unit, by term (bps of the mid), and what it can fill now."""

    venue: str
    spread_bps: float
    fee_bps: float  # bps of notional plus the per-share fee in bps
    fee_min: float
    latency_bps: float
    capacity: float

    @property
    def unit_bps(self) -> float:
        return self.spread_bps + self.fee_bps + self.latency_bps

    def payload(self) -> dict[str, Any]:
        return {
            "spread_bps": self.spread_bps,
            "fee_bps": self.fee_bps,
            "fee_min": self.fee_min,
            "latency_bps": self.latency_bps,
            "unit_bps": self.unit_bps,
            "capacity": None if math.isinf(self.capacity) else self.capacity,
        }


def estimate(venues: Sequence[Venue], market: RouteMarket) -> dict[str, VenueEstimate]:
    """Each venue's per-unit cost terms for `market` (see the module docstring)."""
    if not (market.mid > 0.0 and math.isfinite(market.mid)):
        raise ValueError(f"mid: must be a positive finite price, got {market.mid!r}")
    return {
        v.name: VenueEstimate(
            v.name,
            0.0 if v.dark else market.half_spread_bps,
            v.fee_bps + 1e4 * v.fee_per_share / market.mid,
            v.fee_min,
            adverse_move_bps(market.sigma, v.latency_ms, market.bar_ms),
            max(float(market.capacity.get(v.name, 0.0)), 0.0),
        )
        for v in venues
    }


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    """Where one order goes: `now[venue]` is expected to fill at once, `rest_qty` rests at `rest_venue` for later
    bars. `fillable` is False when the order had to fill now in full (FOK) and the venues cannot."""

    qty: float
    now: dict[str, float]
    rest_venue: str | None
    rest_qty: float
    estimates: dict[str, VenueEstimate]
    expected_cost: float  # in currency, against the mid: spread + fees + latency (+ delay on the rest)
    delay_bps: float
    reason: str
    fillable: bool = True
    min_qty: float = 0.0  # the order's minimum quantity: every venue's child is 0 or at least this

    def children(self) -> dict[str, float]:
        """Quantity per venue to send (what fills now, plus the rest at the rest venue), venues with none left out."""
        out = {k: q for k, q in self.now.items() if q > 0.0}
        if self.rest_venue is not None and self.rest_qty > 0.0:
            out[self.rest_venue] = out.get(self.rest_venue, 0.0) + self.rest_qty
        return out

    def payload(self) -> dict[str, Any]:
        """JSON-safe (the audit log refuses inf and NaN)."""
        return {
            "qty": self.qty,
            "children": self.children(),
            "now": {k: q for k, q in self.now.items() if q > 0.0},
            "rest_venue": self.rest_venue,
            "rest_qty": self.rest_qty,
            "expected_cost": self.expected_cost,
            "delay_bps": self.delay_bps,
            "estimates": {k: e.payload() for k, e in self.estimates.items()},
            "fillable": self.fillable,
            "min_qty": self.min_qty,
        }


def route(
    qty: float,
    venues: Sequence[Venue],
    market: RouteMarket,
    *,
    marketable: bool = True,
    dark_ok: bool = True,
    fill_now: bool = False,
    min_qty: float = 0.0,
) -> RoutingDecision:
    """Split `qty` across `venues` at minimum expected cost (module docstring).

    `marketable=False` (a limit away from the market, a stop): nothing can fill now, so the whole order rests at
    the cheapest lit venue. `dark_ok=False` keeps it out of dark venues (a limit the mid does not satisfy).
    `fill_now=True` (FOK): nothing may rest; when the venues cannot fill it all now, `fillable` is False and nothing
    is routed. `min_qty` (a minimum-quantity order): no venue gets a child under it (each venue honours it on its
    own child), so a venue that cannot fill at least that much now gets nothing now, and the resting part is at
    least that much too.
    """
    if not (qty > 0.0 and math.isfinite(qty)):
        raise ValueError(f"qty: must be a positive finite quantity, got {qty!r}")
    if not (0.0 <= min_qty <= qty):
        raise ValueError(f"min_qty: must be in [0, qty = {qty:g}], got {min_qty!r}")
    lit = [v for v in venues if not v.dark]
    if not lit:
        raise ValueError("venues: at least one lit venue is needed (stops, limits and remainders rest there)")
    est = estimate(venues, market)
    known = market.sigma > 0.0 and market.bar_ms > 0.0
    delay = adverse_move_bps(market.sigma, market.bar_ms, market.bar_ms) if known else UNKNOWN_DELAY_BPS
    nudge = {v.name: _TIE_BPS * i for i, v in enumerate(venues)}
    # the rest venue: the cheapest lit venue per unit (fee_min aside: the rest fills over later bars)
    rest = min(lit, key=lambda v: (est[v.name].unit_bps + nudge[v.name]))
    if not marketable:
        if fill_now:  # FOK: nothing can fill now and nothing may rest
            why = f"not marketable now: none of {qty:g} fillable now"
            return RoutingDecision(qty, {}, None, 0.0, est, 0.0, delay, why, fillable=False, min_qty=min_qty)
        cost = _cost({}, rest, qty, est, venues, market.mid, delay)
        why = f"not marketable now: all {qty:g} rests at {rest.name} (cheapest lit venue)"
        return RoutingDecision(qty, {}, rest.name, qty, est, cost, delay, why, min_qty=min_qty)
    usable = [v for v in venues if dark_ok or not v.dark]
    now, rest_qty, ok = _solve(qty, usable, est, nudge, rest, market.mid, delay, fill_now, min_qty)
    if not ok:
        cap = sum(min(est[v.name].capacity, qty) for v in usable if est[v.name].capacity >= max(v.min_qty, min_qty))
        why = f"only {min(cap, qty):g} of {qty:g} fillable now across {len(usable)} venues"
        if min_qty > 0.0:
            why += f" in parts of at least min_qty {min_qty:g}"
        return RoutingDecision(qty, {}, None, 0.0, est, 0.0, delay, why, fillable=False, min_qty=min_qty)
    full = {v.name: now.get(v.name, 0.0) for v in venues}
    cost = _cost(full, rest if rest_qty > 0 else None, rest_qty, est, venues, market.mid, delay)
    parts = [f"{q:g} {k} ({est[k].unit_bps:.3g} bps)" for k, q in full.items() if q > 0.0]
    if rest_qty > 0.0:
        parts.append(f"{rest_qty:g} rests at {rest.name} (+{delay:.3g} bps delay)")
    return RoutingDecision(qty, full, rest.name if rest_qty > 0 else None, rest_qty, est, cost, delay,
                           "cheapest split: " + ", ".join(parts), min_qty=min_qty)


def _cost(
    now: Mapping[str, float],
    rest: Venue | None,
    rest_qty: float,
    est: Mapping[str, VenueEstimate],
    venues: Sequence[Venue],
    mid: float,
    delay: float,
) -> float:
    """Expected cost in currency of a split: per-unit terms, plus one fee_min-floored fee per venue used."""
    total = 0.0
    for v in venues:
        q_now = now.get(v.name, 0.0)
        q_rest = rest_qty if rest is not None and v.name == rest.name else 0.0
        q = q_now + q_rest
        if q <= 0.0:
            continue
        e = est[v.name]
        total += (e.spread_bps + e.latency_bps) / 1e4 * mid * q + max(e.fee_min, e.fee_bps / 1e4 * mid * q)
        total += delay / 1e4 * mid * q_rest
    return total


def _solve(
    qty: float,
    venues: Sequence[Venue],
    est: Mapping[str, VenueEstimate],
    nudge: Mapping[str, float],
    rest: Venue,
    mid: float,
    delay: float,
    fill_now: bool,
    min_qty: float = 0.0,
) -> tuple[dict[str, float], float, bool]:
    """The MILP: variables q_v (fill now), y_v (venue used), f_v (fee) per venue, then r (rest).

    min  sum_v (spread+latency)_v q_v + f_v + (rest unit + delay) r
    s.t. sum_v q_v + r = qty;  min_qty_v y_v <= q_v <= cap_v y_v;  f_v >= fee_min_v y_v;  f_v >= fee rate_v q_v;
         r <= qty y_rest and the rest venue's fee covers r as well (f_rest >= rate (q_rest + r)); FOK: r = 0.
    With an order minimum m, min_qty_v above is max(min_qty_v, m), and for the rest venue the bound is on its whole
    child: q_rest + r >= m y_rest.
    The objective is in bps of the mid times quantity (currency * 1e4 / mid), so coefficients are bps-sized and
    well above the solver's tolerances."""
    n = len(venues)
    iq, iy, jf, ir, iz = 0, n, 2 * n, 3 * n, 3 * n + 1
    nv = 3 * n + 2
    c = np.zeros(nv)
    lo, hi = np.zeros(nv), np.zeros(nv)
    rows: list[np.ndarray] = []
    rlo: list[float] = []
    rhi: list[float] = []

    def row(entries: Mapping[int, float], lb: float, ub: float) -> None:
        a = np.zeros(nv)
        for k, x in entries.items():
            a[k] += x
        rows.append(a)
        rlo.append(lb)
        rhi.append(ub)

    rest_k = next(k for k, v in enumerate(venues) if v.name == rest.name) if rest in venues else -1
    for k, v in enumerate(venues):
        e = est[v.name]
        cap = min(e.capacity, qty)
        least = max(v.min_qty, min_qty)  # the smallest child this venue may get
        if cap < least:
            cap = 0.0  # it cannot fill its minimum now (the rest venue may still take the resting part)
        c[iq + k] = e.spread_bps + e.latency_bps + nudge[v.name]
        c[jf + k] = 1e4 / mid  # the fee is in currency: in bps of the mid per unit like the rest
        hi[iq + k], hi[iy + k], hi[jf + k] = cap, 1.0, math.inf
        row({iq + k: 1.0, iy + k: -cap}, -math.inf, 0.0)
        if least > 0.0:
            at_least = {iq + k: 1.0, iy + k: -least}
            if k == rest_k and min_qty > 0.0:
                at_least[ir] = 1.0  # the rest venue's child is what fills now plus what rests
            row(at_least, 0.0, math.inf)
        rate = e.fee_bps / 1e4 * mid
        fee_row = {jf + k: 1.0, iq + k: -rate}
        if k == rest_k:
            fee_row[ir] = -rate
        row(fee_row, 0.0, math.inf)
        row({jf + k: 1.0, iy + k: -e.fee_min}, 0.0, math.inf)
    er = est[rest.name]
    c[ir] = er.spread_bps + er.latency_bps + delay + nudge[rest.name]
    hi[ir] = 0.0 if fill_now or rest_k < 0 else qty
    hi[iz] = 1.0
    if rest_k >= 0:
        row({ir: 1.0, iy + rest_k: -qty}, -math.inf, 0.0)
        # resting (z = 1) only once the rest venue is filled to its capacity now: it will be, at the venue
        row({ir: 1.0, iz: -qty}, -math.inf, 0.0)
        row({iq + rest_k: 1.0, iz: -hi[iq + rest_k]}, 0.0, math.inf)
    row({**{iq + k: 1.0 for k in range(n)}, ir: 1.0}, qty, qty)
    integrality = np.zeros(nv)
    integrality[iy : iy + n] = 1
    integrality[iz] = 1
    res = milp(
        c,
        constraints=LinearConstraint(np.vstack(rows), rlo, rhi),
        integrality=integrality,
        bounds=Bounds(lo, hi),
        options={"mip_rel_gap": 1e-9},
    )
    if res.x is None:
        return {}, 0.0, False
    return _snap(res.x, venues, est, qty, iq, iy, ir, min_qty)


def _snap(
    x: np.ndarray, venues: Sequence[Venue], est: Mapping[str, VenueEstimate], qty: float, iq: int, iy: int, ir: int,
    min_qty: float = 0.0,
) -> tuple[dict[str, float], float, bool]:
    """The solver's quantities snapped onto 0, a venue's minimum or its capacity, the rest absorbing the residue,
    so that a dark child is never a hair under its minimum and the parts sum to `qty` exactly."""
    tol = _SNAP * max(qty, 1.0)
    now: dict[str, float] = {}
    for k, v in enumerate(venues):
        q = float(x[iq + k]) if x[iy + k] > 0.5 else 0.0
        cap = min(est[v.name].capacity, qty)
        for target in (0.0, max(v.min_qty, min_qty), cap):
            if abs(q - target) <= tol:
                q = target
        now[v.name] = max(q, 0.0)
    rest = qty - sum(now.values())
    if abs(rest) <= tol or rest < 0.0:
        # a residue below tolerance goes to the largest lit part (never a dark part: its minimum must hold)
        lit = [v.name for v in venues if not v.dark and now[v.name] > 0.0]
        if lit:
            big = max(lit, key=lambda k: now[k])
            now[big] += rest
        rest = 0.0
    elif x[ir] <= tol:
        rest = max(rest, 0.0)
    return now, rest, True
