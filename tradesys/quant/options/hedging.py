"""Discrete delta hedging with transaction costs, gamma scalping, vega hedging, and the price paths to test them.

Why: Black-Scholes prices assume continuous, free hedging at the right vol. This module measures what is left
when hedging is discrete, costly and done at a vol that is not the realised one: the distribution of the
hedged P&L over many paths (simulated or cut from real price histories), its cost, and hedge effectiveness.

Public API (numpy only, vectorised over paths and looping over steps; paths are arrays of shape
(n_paths, n_steps + 1), column 0 the start):

    HedgeRule(every=1, delta_band=None, move_band=None); HedgeRule.in_delta_units(band, quantity, ...)
    simulate_delta_hedge(paths, K, T, is_call, *, sigma_hedge, dt=None, times=None, position=-1.0,
                         sigma_trade=None, sigma_mark=None, r=0.0, q=0.0, rule=HedgeRule(), cost_bps=0.0,
                         fixed_cost=0.0, close_cost=True, record_path=False) -> HedgeResult
    gamma_scalp(paths, K, T, is_call, *, sigma_implied, dt=None, times=None, quantity=1.0, r=0.0, q=0.0,
                rule=HedgeRule(), cost_bps=0.0, fixed_cost=0.0) -> ScalpResult
    vega_hedge(S, K, T, is_call, quantity, sigma, hedge_K, hedge_T, hedge_is_call, hedge_sigma, r=0.0, q=0.0)
        -> VegaHedge
    neutralize(book, instruments) -> weights
    leland_vol(sigma, cost_bps, rebalance_dt, short=True) -> float
    kamal_derman_std(vega, sigma, n_rebalances) -> float
    gbm_paths(S0, mu, sigma, T, n_steps, n_paths, *, seed=None, antithetic=False) -> ndarray
    merton_jump_paths(S0, mu, sigma, lam, jump_mean, jump_std, T, n_steps, n_paths, *, seed=None) -> ndarray
    heston_paths(S0, mu, v0, kappa, theta, xi, rho, T, n_steps, n_paths, *, seed=None) -> ndarray
    price_windows(prices, window, stride=None) -> ndarray
    realized_vol(paths, dt) -> ndarray

Conventions. T is the option's time to expiry at column 0 in years; the path's times are k * dt or `times`
(years from column 0; ACT/365 for calendar data, or 1/252 per trading day with vols annualised the same way).
position is the number of options held (short < 0); the hedge holds -position * delta(sigma_hedge) shares.
The option is traded at column 0 at its BSM price at sigma_trade (default sigma_hedge) and marked at sigma_mark
(default sigma_trade) when the path ends before expiry; at expiry it settles at its payoff. Cash accrues at r
(e^{r dt} per step) and the shares held over a step earn dividends shares * S_end * (e^{q dt} - 1): with this
convention the discounted value of stock plus dividends is a martingale when the stock drifts at r - q, so
without costs the expected P&L of ANY hedge rule under the risk-neutral drift is the option's mispricing,
position (BS(true vol) - BS(sigma_trade)) carried to the horizon (exactly, not only in the continuous limit).
Costs per trade of n shares at S: cost_bps 1e-4 |n| S + fixed_cost if n != 0.
The hedge is unwound at the last column (paying costs if close_cost). P&L is in money of the last column
(`pnl_pv` discounts it to column 0 at r); unhedged P&L is that of the option position alone, premium financed
at r. Hedge effectiveness = 1 - var(hedged P&L) / var(unhedged P&L).

Rebalancing rule (`HedgeRule`): the hedge is checked at every `every`-th step; with no band it is always reset
to the target there; with `delta_band` (shares) it is reset only when |target - held| > delta_band; with
`move_band` (relative) only when |S / S_at_last_trade - 1| > move_band; with both, either triggers. A zero band
therefore reproduces the every-step hedge exactly. The opening trade always happens.

Independent references (the tests): mean P&L ~ 0 and std ~ sqrt(pi/4) sigma vega / sqrt(N) (Kamal & Derman
1999) for hedging at the true vol on GBM, std ~ 1/sqrt(N); the mispricing BS(sigma_r) - BS(sigma_i) as the
mean P&L (and, hedging at sigma_r, the nearly riskless P&L) of a long option bought at sigma_i; the pathwise
gamma-weighted variance gap 0.5 sum Gamma S^2 (sigma_h^2 dt - (dS/S)^2) on real S&P 500 windows; Leland's
(1985) adjusted-vol price minus the BS price against the present value of rebalancing costs; and the
self-financing bookkeeping (cash + shares S + option = equity, changed only by carry, price moves and costs).

Leland's adjustment (`leland_vol`): with a one-way proportional cost k = cost_bps 1e-4 and rebalancing every
dt years, sigma_L^2 = sigma^2 (1 + Le) for a short option (1 - Le for a long one), Le = 2 k sqrt(2/pi) /
(sigma sqrt(dt)) (k is half of Leland's round-trip cost). It prices the expected cost of the REBALANCING trades,
not the opening purchase of the hedge nor its final unwind; compare it with `HedgeResult.cost_rebalance_pv`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from tradesys.quant.options.errors import OptionError
from tradesys.quant.options.european import bsm_greeks, bsm_price, bsm_price_checked

__all__ = [
    "HedgePath",
    "HedgeResult",
    "HedgeRule",
    "ScalpResult",
    "VegaHedge",
    "gamma_scalp",
    "gbm_paths",
    "heston_paths",
    "kamal_derman_std",
    "leland_vol",
    "merton_jump_paths",
    "neutralize",
    "price_windows",
    "realized_vol",
    "simulate_delta_hedge",
    "vega_hedge",
]


# ----------------------------------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class HedgeRule:
    """When to rebalance: every n steps, and (optionally) only if a delta band or a spot-move band is crossed.

    delta_band is in shares (for a position of q options, a band of b in delta units is b * |q| shares);
    move_band is a relative spot move since the last trade (0.01 = 1%).
    """

    every: int = 1
    delta_band: float | None = None
    move_band: float | None = None

    @classmethod
    def in_delta_units(
        cls, band: float, quantity: float, *, every: int = 1, move_band: float | None = None
    ) -> HedgeRule:
        """A delta band given in delta units of one option, for a position of `quantity` options."""
        return cls(every=every, delta_band=band * abs(quantity), move_band=move_band)

    def __post_init__(self) -> None:
        if not isinstance(self.every, int | np.integer) or self.every < 1:
            raise ValueError(f"every: must be an integer >= 1, got {self.every!r}")
        for name in ("delta_band", "move_band"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name}: must be a finite number >= 0 or None, got {v!r}")


# --------------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class HedgePath:
    """Per-path, per-column book (n_paths, n_steps + 1), after each column's trade.

    option_value is position * V at sigma_mark (at the last column: the payoff, or the mark before expiry);
    equity = cash + shares * spot + option_value. At the last column the hedge is already unwound (shares 0).
    """

    spot: np.ndarray
    shares: np.ndarray
    cash: np.ndarray
    option_value: np.ndarray
    equity: np.ndarray
    trade: np.ndarray
    cost: np.ndarray
    times: np.ndarray


@dataclass(frozen=True)
class HedgeResult:
    """Per-path outcome of `simulate_delta_hedge` (conventions in the module docstring).

    pnl, unhedged_pnl: in money of the last column. n_trades: opening trade plus rebalances (not the unwind).
    cost: nominal sum of all costs paid; cost_pv: their value at column 0 (discounted at r); cost_rebalance_pv:
    the same without the opening trade and the final unwind (what Leland's adjustment prices). codes: an
    `OptionError` per path (0 = OK); bad paths are NaN and left out of the statistics.
    """

    pnl: np.ndarray
    unhedged_pnl: np.ndarray
    n_trades: np.ndarray
    cost: np.ndarray
    cost_pv: np.ndarray
    cost_rebalance_pv: np.ndarray
    premium: np.ndarray
    horizon: float
    r: float
    codes: np.ndarray
    path: HedgePath | None = None

    @property
    def pnl_pv(self) -> np.ndarray:
        """P&L discounted to column 0 at r."""
        return self.pnl * math.exp(-self.r * self.horizon)

    @property
    def mean(self) -> float:
        return float(np.nanmean(self.pnl))

    @property
    def std(self) -> float:
        return float(np.nanstd(self.pnl, ddof=1))

    @property
    def stderr(self) -> float:
        """Monte Carlo standard error of `mean`."""
        return self.std / math.sqrt(max(int(np.isfinite(self.pnl).sum()), 1))

    def quantile(self, q: float | list[float] | np.ndarray) -> np.ndarray:
        """Quantiles of the hedged P&L (e.g. 0.05 for a 95% P&L-at-risk), NaN paths ignored."""
        return np.nanquantile(self.pnl, q)

    @property
    def effectiveness(self) -> float:
        """1 - var(hedged P&L) / var(unhedged P&L): 1 is a perfect hedge, 0 no better than none."""
        ok = np.isfinite(self.pnl) & np.isfinite(self.unhedged_pnl)
        return float(1.0 - np.var(self.pnl[ok]) / np.var(self.unhedged_pnl[ok]))

    def summary(self) -> dict[str, float]:
        """Headline statistics as plain floats (for reports and JSON)."""
        q05, q50, q95 = self.quantile([0.05, 0.5, 0.95])
        return {
            "mean": self.mean,
            "std": self.std,
            "stderr": self.stderr,
            "q05": float(q05),
            "median": float(q50),
            "q95": float(q95),
            "unhedged_std": float(np.nanstd(self.unhedged_pnl, ddof=1)),
            "effectiveness": self.effectiveness,
            "mean_trades": float(np.nanmean(np.where(self.codes == 0, self.n_trades, np.nan))),
            "mean_cost": float(np.nanmean(self.cost)),
            "n_paths": float(np.isfinite(self.pnl).sum()),
        }


@dataclass(frozen=True)
class ScalpResult:
    """Gamma-scalping P&L per path and its decomposition (sums over the steps, conventions of the module).

    gamma = sum 0.5 q Gamma dS^2 (the scalping gains), theta = sum q Theta dt (the decay paid), delta = sum
    (q Delta + shares) dS (the unhedged delta left inside the band), carry = interest on cash plus dividends on
    the shares, cost = all trading costs; residual = pnl - (delta + gamma + theta + carry - cost), the
    higher-order Taylor terms of the option's value (small when steps are small). Greeks at sigma_implied.
    """

    hedge: HedgeResult
    gamma: np.ndarray
    theta: np.ndarray
    delta: np.ndarray
    carry: np.ndarray
    cost: np.ndarray
    residual: np.ndarray

    @property
    def pnl(self) -> np.ndarray:
        return self.hedge.pnl


@dataclass(frozen=True)
class VegaHedge:
    """A vega- then delta-neutral hedge of an option book with a second option and the underlying.

    n_hedge: hedge options to hold (per scenario); n_shares: shares to hold after that. book_* are the book's
    Greeks before hedging, hedged_* after (delta and vega ~0 up to rounding; gamma is what remains).
    codes: OptionError codes (NOT_CONVERGED where the hedge option has no vega to hedge with).
    """

    n_hedge: np.ndarray
    n_shares: np.ndarray
    book_delta: np.ndarray
    book_gamma: np.ndarray
    book_vega: np.ndarray
    hedged_delta: np.ndarray
    hedged_gamma: np.ndarray
    hedged_vega: np.ndarray
    codes: np.ndarray


# ---------------------------------------------------------------------------------------------- simulation


def _grid(n_cols: int, dt: float | None, times: Any) -> np.ndarray:
    if (dt is None) == (times is None):
        raise ValueError("dt: give exactly one of dt (a constant step) and times (years from column 0)")
    if times is None:
        if not (dt is not None and math.isfinite(dt) and dt > 0):
            raise ValueError(f"dt: must be a finite number > 0, got {dt!r}")
        return np.arange(n_cols, dtype=float) * float(dt)
    t = np.asarray(times, dtype=float)
    if t.shape != (n_cols,):
        raise ValueError(f"times: must have shape ({n_cols},) to match the paths' columns, got {t.shape}")
    if t[0] != 0.0 or not np.all(np.diff(t) > 0) or not np.all(np.isfinite(t)):
        raise ValueError("times: must start at 0 and increase strictly")
    return t


def _paths(paths: Any) -> tuple[np.ndarray, np.ndarray]:
    """2-D float paths with at least two columns; bad rows (non-finite, <= 0) coded and replaced by 1.0."""
    P = np.asarray(paths, dtype=float)
    if P.ndim == 1:
        P = P[None, :]
    if P.ndim != 2 or P.shape[1] < 2:
        raise ValueError(f"paths: must have shape (n_paths, n_steps + 1) with n_steps >= 1, got {P.shape}")
    codes = np.zeros(P.shape[0], dtype=np.int8)
    codes[~np.all(P > 0, axis=1)] = int(OptionError.NON_POSITIVE_SPOT)
    codes[~np.all(np.isfinite(P), axis=1)] = int(OptionError.NAN_INPUT)
    if codes.any():
        P = P.copy()
        P[codes != 0] = 1.0
    return P, codes


def _per_path(name: str, x: Any, n: int) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    try:
        return np.broadcast_to(a, (n,)).copy()
    except ValueError:
        raise ValueError(f"{name}: must be a scalar or have one value per path ({n}), got shape {a.shape}") from None


def simulate_delta_hedge(
    paths: Any,
    K: Any,
    T: Any,
    is_call: Any,
    *,
    sigma_hedge: Any,
    dt: float | None = None,
    times: Any = None,
    position: float = -1.0,
    sigma_trade: Any = None,
    sigma_mark: Any = None,
    r: float = 0.0,
    q: float = 0.0,
    rule: HedgeRule | None = None,
    cost_bps: float = 0.0,
    fixed_cost: float = 0.0,
    close_cost: bool = True,
    record_path: bool = False,
) -> HedgeResult:
    """Delta-hedge `position` options along every path at once (module docstring for all conventions).

    K, T, is_call, sigma_hedge, sigma_trade and sigma_mark may be scalars or one value per path (e.g. a strike
    set from each window's first close, or a trailing realised vol per window).
    """
    rule = rule or HedgeRule()
    P, codes = _paths(paths)
    n, m = P.shape
    t = _grid(m, dt, times)
    for name, v in (("position", position), ("r", r), ("q", q)):
        if not math.isfinite(v):
            raise ValueError(f"{name}: must be finite, got {v!r}")
    for name, v in (("cost_bps", cost_bps), ("fixed_cost", fixed_cost)):
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(f"{name}: must be a finite number >= 0, got {v!r}")
    K_ = _per_path("K", K, n)
    T_ = _per_path("T", T, n)
    call = _per_path("is_call", is_call, n) > 0.5
    s_h = _per_path("sigma_hedge", sigma_hedge, n)
    s_t = s_h if sigma_trade is None else _per_path("sigma_trade", sigma_trade, n)
    s_m = s_t if sigma_mark is None else _per_path("sigma_mark", sigma_mark, n)
    horizon = float(t[-1])
    if np.any(horizon - T_ > 1e-12):
        raise ValueError(f"T: every option must expire at or after the end of the paths ({horizon:.6g} years)")
    at_expiry = np.abs(T_ - horizon) <= 1e-12

    k_cost = cost_bps * 1e-4

    def trade_cost(trade: np.ndarray, S: np.ndarray) -> np.ndarray:
        return k_cost * np.abs(trade) * S + fixed_cost * (trade != 0)

    def hedge_target(S: np.ndarray, tau: np.ndarray) -> np.ndarray:
        return -position * bsm_greeks(S, K_, tau, r, q, s_h, call, which=("delta",)).delta

    def mark(S: np.ndarray, tau: np.ndarray) -> np.ndarray:
        return position * bsm_price(S, K_, tau, r, q, s_m, call)

    S = P[:, 0]
    premium, pcodes = bsm_price_checked(S, K_, T_, r, q, s_t, call)
    codes = np.where(codes == 0, pcodes, codes).astype(np.int8)
    shares = hedge_target(S, T_)
    cost = trade_cost(shares, S)
    cash = -position * premium - shares * S - cost
    total_cost = cost.copy()
    cost_pv = cost.copy()
    cost_reb_pv = np.zeros(n)
    n_trades = (shares != 0).astype(np.int64)
    last_S = S.copy()
    rec: dict[str, np.ndarray] = {}
    if record_path:
        rec = {k: np.empty((n, m)) for k in ("shares", "cash", "option_value", "trade", "cost")}
        rec["shares"][:, 0], rec["cash"][:, 0], rec["trade"][:, 0], rec["cost"][:, 0] = shares, cash, shares, cost
        rec["option_value"][:, 0] = mark(S, T_)

    for k in range(1, m):
        h = t[k] - t[k - 1]
        S = P[:, k]
        cash = cash * math.exp(r * h) + shares * S * math.expm1(q * h)
        tau = T_ - t[k]
        if k == m - 1:
            trade = -shares
            cost = trade_cost(trade, S) if close_cost else np.zeros(n)
            cash = cash - trade * S - cost
            total_cost += cost
            cost_pv += cost * math.exp(-r * t[k])
            shares = shares + trade
            payoff = np.where(call, np.maximum(S - K_, 0.0), np.maximum(K_ - S, 0.0))
            end_value = np.where(at_expiry, position * payoff, mark(S, np.maximum(tau, 0.0)))
        else:
            if k % rule.every != 0:
                trade = np.zeros(n)
            else:
                target = hedge_target(S, tau)
                want = np.ones(n, dtype=bool)
                if rule.delta_band is not None or rule.move_band is not None:
                    want = np.zeros(n, dtype=bool)
                    if rule.delta_band is not None:
                        want |= np.abs(target - shares) > rule.delta_band
                    if rule.move_band is not None:
                        want |= np.abs(S / last_S - 1.0) > rule.move_band
                trade = np.where(want, target - shares, 0.0)
            cost = trade_cost(trade, S)
            cash = cash - trade * S - cost
            shares = shares + trade
            traded = trade != 0
            n_trades += traded
            last_S = np.where(traded, S, last_S)
            total_cost += cost
            disc_cost = cost * math.exp(-r * t[k])
            cost_pv += disc_cost
            cost_reb_pv += disc_cost
        if record_path:
            rec["shares"][:, k], rec["cash"][:, k], rec["trade"][:, k], rec["cost"][:, k] = shares, cash, trade, cost
            rec["option_value"][:, k] = end_value if k == m - 1 else mark(S, tau)

    pnl = cash + end_value
    unhedged = end_value - position * premium * math.exp(r * horizon)
    bad = codes != 0
    nan_if_bad = [np.where(bad, np.nan, x) for x in (pnl, unhedged, total_cost, cost_pv, cost_reb_pv, premium)]
    path = None
    if record_path:
        spot = np.where(bad[:, None], np.nan, P)
        equity = rec["cash"] + rec["shares"] * P + rec["option_value"]
        path = HedgePath(
            spot=spot,
            equity=np.where(bad[:, None], np.nan, equity),
            times=t,
            **{k: np.where(bad[:, None], np.nan, v) for k, v in rec.items()},
        )
    return HedgeResult(
        pnl=nan_if_bad[0],
        unhedged_pnl=nan_if_bad[1],
        n_trades=np.where(bad, 0, n_trades),
        cost=nan_if_bad[2],
        cost_pv=nan_if_bad[3],
        cost_rebalance_pv=nan_if_bad[4],
        premium=nan_if_bad[5],
        horizon=horizon,
        r=float(r),
        codes=codes,
        path=path,
    )


def gamma_scalp(
    paths: Any,
    K: Any,
    T: Any,
    is_call: Any,
    *,
    sigma_implied: Any,
    dt: float | None = None,
    times: Any = None,
    quantity: float = 1.0,
    r: float = 0.0,
    q: float = 0.0,
    rule: HedgeRule | None = None,
    cost_bps: float = 0.0,
    fixed_cost: float = 0.0,
) -> ScalpResult:
    """Long `quantity` options bought at sigma_implied, delta-hedged at sigma_implied by `rule` (typically a
    delta band or a move band), with the P&L split into scalping gains, theta paid, residual delta, carry and
    costs (`ScalpResult`). Positive on average when realised vol exceeds implied, negative when below.
    """
    if not (math.isfinite(quantity) and quantity > 0):
        raise ValueError(f"quantity: gamma scalping holds a long option position (> 0), got {quantity!r}")
    res = simulate_delta_hedge(
        paths,
        K,
        T,
        is_call,
        sigma_hedge=sigma_implied,
        dt=dt,
        times=times,
        position=quantity,
        r=r,
        q=q,
        rule=rule,
        cost_bps=cost_bps,
        fixed_cost=fixed_cost,
        record_path=True,
    )
    p = res.path
    assert p is not None
    n = p.spot.shape[0]
    K_ = _per_path("K", K, n)[:, None]
    T_ = _per_path("T", T, n)[:, None]
    call = (_per_path("is_call", is_call, n) > 0.5)[:, None]
    s_i = _per_path("sigma_implied", sigma_implied, n)[:, None]
    S0 = p.spot[:, :-1]
    dS = np.diff(p.spot, axis=1)
    h = np.diff(p.times)[None, :]
    tau = T_ - p.times[None, :-1]
    g = bsm_greeks(S0, K_, tau, r, q, s_i, call, which=("delta", "gamma", "theta"))
    held = p.shares[:, :-1]
    delta = ((quantity * g.delta + held) * dS).sum(1)
    gamma = (quantity * 0.5 * g.gamma * dS * dS).sum(1)
    theta = (quantity * g.theta * h).sum(1)
    carry = (p.cash[:, :-1] * np.expm1(r * h) + held * p.spot[:, 1:] * np.expm1(q * h)).sum(1)
    cost = p.cost.sum(1)
    # equity at column 0 is -opening cost (traded at the mark); the steps' increments sum to the rest of the P&L
    residual = res.pnl - (delta + gamma + theta + carry - cost)
    return ScalpResult(hedge=res, gamma=gamma, theta=theta, delta=delta, carry=carry, cost=cost, residual=residual)


# ------------------------------------------------------------------------------------------- vega hedging


def neutralize(book: Any, instruments: Any) -> np.ndarray:
    """Weights w of k hedge instruments making k Greeks of the book zero: solves instruments @ w = -book.

    book: (..., k) the book's Greeks (e.g. [gamma, vega]); instruments: (..., k, k) with column j holding
    instrument j's Greeks in the same order. Singular systems give NaN weights (no exception for the batch).
    """
    b = np.asarray(book, dtype=float)
    A = np.asarray(instruments, dtype=float)
    if A.shape[-2:] != (b.shape[-1], b.shape[-1]):
        raise ValueError(f"instruments: must have shape (..., {b.shape[-1]}, {b.shape[-1]}), got {A.shape}")
    A, b = np.broadcast_arrays(A, b[..., :, None])
    det = np.linalg.det(A)
    scale = np.prod(np.abs(A).max(axis=-1), axis=-1)
    ok = np.abs(det) > 1e-12 * np.where(scale > 0, scale, 1.0)
    A_safe = np.where(ok[..., None, None], A, np.eye(A.shape[-1]))
    w = np.linalg.solve(A_safe, -b)[..., 0]
    return np.where(ok[..., None], w, np.nan)


def vega_hedge(
    S: Any,
    K: Any,
    T: Any,
    is_call: Any,
    quantity: Any,
    sigma: Any,
    hedge_K: Any,
    hedge_T: Any,
    hedge_is_call: Any,
    hedge_sigma: Any,
    r: Any = 0.0,
    q: Any = 0.0,
) -> VegaHedge:
    """Hedge an option book's vega with a second option, then its delta with shares.

    The book is `quantity` options per leg (leg axis last, summed; leading axes are scenarios, so S may have
    shape (m, 1)); the hedge option (hedge_K, hedge_T, hedge_is_call, hedge_sigma) broadcasts against the
    scenarios. n_hedge = -book_vega / hedge_vega, n_shares = -(book_delta + n_hedge hedge_delta).
    """
    S, K, T, call, qty, sig, r, q = np.broadcast_arrays(
        *(np.asarray(x, dtype=float) for x in (S, K, T, is_call, quantity, sigma, r, q))
    )
    if S.ndim == 0:
        S, K, T, call, qty, sig, r, q = (x.reshape(1) for x in (S, K, T, call, qty, sig, r, q))
    g = bsm_greeks(S, K, T, r, q, sig, call > 0.5, which=("delta", "gamma", "vega"))
    b_delta, b_gamma, b_vega = ((qty * x).sum(-1) for x in (g.delta, g.gamma, g.vega))
    S0, r0, q0 = S[..., 0], r[..., 0], q[..., 0]
    hg = bsm_greeks(
        S0, hedge_K, hedge_T, r0, q0, hedge_sigma, np.asarray(hedge_is_call) > 0.5, which=("delta", "gamma", "vega")
    )
    codes = np.maximum(g.codes.max(-1), hg.codes)
    vega_ok = np.abs(hg.vega) > 1e-12 * np.maximum(np.abs(b_vega), 1.0)
    codes = np.where((codes == 0) & ~vega_ok, int(OptionError.NOT_CONVERGED), codes).astype(np.int8)
    n_hedge = np.where(codes == 0, -b_vega / np.where(vega_ok, hg.vega, 1.0), np.nan)
    n_shares = -(b_delta + n_hedge * hg.delta)
    return VegaHedge(
        n_hedge=n_hedge,
        n_shares=n_shares,
        book_delta=b_delta,
        book_gamma=b_gamma,
        book_vega=b_vega,
        hedged_delta=b_delta + n_hedge * hg.delta + n_shares,
        hedged_gamma=b_gamma + n_hedge * hg.gamma,
        hedged_vega=b_vega + n_hedge * hg.vega,
        codes=codes,
    )


# ------------------------------------------------------------------------------------------ reference formulas


def leland_vol(sigma: float, cost_bps: float, rebalance_dt: float, short: bool = True) -> float:
    """Leland (1985) adjusted vol for one-way proportional cost cost_bps, rebalancing every rebalance_dt years.

    sigma_L^2 = sigma^2 (1 +- Le), Le = 2 k sqrt(2/pi) / (sigma sqrt(dt)), k = cost_bps 1e-4; + for a short
    option (the writer charges for the costs), - for a long one (NaN if that makes the variance negative).
    """
    if not (sigma > 0 and rebalance_dt > 0 and cost_bps >= 0):
        raise ValueError("sigma, rebalance_dt: must be > 0; cost_bps: must be >= 0")
    le = 2.0 * cost_bps * 1e-4 * math.sqrt(2.0 / math.pi) / (sigma * math.sqrt(rebalance_dt))
    var = sigma * sigma * (1.0 + le if short else 1.0 - le)
    return math.sqrt(var) if var >= 0 else math.nan


def kamal_derman_std(vega: Any, sigma: Any, n_rebalances: Any) -> Any:
    """Kamal & Derman (1999): std of the hedging error of N equally spaced rebalances ~ sqrt(pi/4) sigma vega / sqrt(N).

    An approximation for an at-the-money option hedged at the true vol (vega per 1.00 of vol).
    """
    return np.sqrt(np.pi / 4.0) * np.asarray(sigma) * np.asarray(vega) / np.sqrt(np.asarray(n_rebalances, dtype=float))


# --------------------------------------------------------------------------------------------------- paths


def _check_sim(T: float, n_steps: int, n_paths: int) -> None:
    if not (math.isfinite(T) and T > 0):
        raise ValueError(f"T: must be a finite number > 0, got {T!r}")
    if n_steps < 1:
        raise ValueError(f"n_steps: must be >= 1, got {n_steps!r}")
    if n_paths < 1:
        raise ValueError(f"n_paths: must be >= 1, got {n_paths!r}")


def _cumulate(S0: float, log_inc: np.ndarray) -> np.ndarray:
    out = np.empty((log_inc.shape[0], log_inc.shape[1] + 1))
    out[:, 0] = 0.0
    np.cumsum(log_inc, axis=1, out=out[:, 1:])
    return S0 * np.exp(out)


def gbm_paths(
    S0: float,
    mu: float,
    sigma: float,
    T: float,
    n_steps: int,
    n_paths: int,
    *,
    seed: int | np.random.Generator | None = None,
    antithetic: bool = False,
) -> np.ndarray:
    """Exact GBM dS/S = mu dt + sigma dW on a uniform grid of n_steps over T years; (n_paths, n_steps + 1).

    mu is the total drift (r - q for risk-neutral paths). antithetic pairs path i with -Z (n_paths even).
    """
    _check_sim(T, n_steps, n_paths)
    if antithetic and n_paths % 2:
        raise ValueError("n_paths: must be even with antithetic=True")
    rng = np.random.default_rng(seed)
    dt = T / n_steps
    Z = rng.standard_normal((n_paths // 2 if antithetic else n_paths, n_steps))
    if antithetic:
        Z = np.concatenate([Z, -Z])
    return _cumulate(S0, (mu - 0.5 * sigma * sigma) * dt + sigma * math.sqrt(dt) * Z)


def merton_jump_paths(
    S0: float,
    mu: float,
    sigma: float,
    lam: float,
    jump_mean: float,
    jump_std: float,
    T: float,
    n_steps: int,
    n_paths: int,
    *,
    seed: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Merton (1976) jump-diffusion, exact on the grid: GBM plus Poisson(lam) jumps with ln(1 + J) ~
    N(jump_mean, jump_std^2), compensated so that E[S_t] = S0 e^{mu t} (mu = r - q for risk-neutral paths).
    """
    _check_sim(T, n_steps, n_paths)
    rng = np.random.default_rng(seed)
    dt = T / n_steps
    kbar = math.exp(jump_mean + 0.5 * jump_std * jump_std) - 1.0
    Z = rng.standard_normal((n_paths, n_steps))
    N = rng.poisson(lam * dt, (n_paths, n_steps))
    J = N * jump_mean + np.sqrt(N) * jump_std * rng.standard_normal((n_paths, n_steps))
    drift = (mu - lam * kbar - 0.5 * sigma * sigma) * dt
    return _cumulate(S0, drift + sigma * math.sqrt(dt) * Z + J)


def heston_paths(
    S0: float,
    mu: float,
    v0: float,
    kappa: float,
    theta: float,
    xi: float,
    rho: float,
    T: float,
    n_steps: int,
    n_paths: int,
    *,
    seed: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Heston stochastic vol, full-truncation Euler (Lord et al. 2010) with a log-Euler spot step:
    dv = kappa (theta - v) dt + xi sqrt(v) dW2, dS/S = mu dt + sqrt(v) dW1, corr(dW1, dW2) = rho.

    Discretisation bias is O(dt); E[S_t] = S0 e^{mu t} holds exactly on the grid (the log step is compensated).
    """
    _check_sim(T, n_steps, n_paths)
    if not (-1.0 <= rho <= 1.0):
        raise ValueError(f"rho: must be in [-1, 1], got {rho!r}")
    rng = np.random.default_rng(seed)
    dt = T / n_steps
    sq = math.sqrt(dt)
    v = np.full(n_paths, float(v0))
    inc = np.empty((n_paths, n_steps))
    rho_c = math.sqrt(1.0 - rho * rho)
    for k in range(n_steps):
        z1 = rng.standard_normal(n_paths)
        z2 = rho * z1 + rho_c * rng.standard_normal(n_paths)
        vp = np.maximum(v, 0.0)
        inc[:, k] = (mu - 0.5 * vp) * dt + np.sqrt(vp) * sq * z1
        v = v + kappa * (theta - vp) * dt + xi * np.sqrt(vp) * sq * z2
    return _cumulate(S0, inc)


def price_windows(prices: Any, window: int, stride: int | None = None) -> np.ndarray:
    """Cut a 1-D series of closes into windows of `window` steps ((n, window + 1) closes each, the end of one
    window the start of the next when stride == window, the default). Windows with a non-finite close are
    dropped; use e.g. `arch.data.sp500.load()["Adj Close"]` or a column of `skfolio`'s S&P 500 prices.
    """
    x = np.asarray(prices, dtype=float).ravel()
    if window < 1:
        raise ValueError(f"window: must be >= 1, got {window!r}")
    stride = window if stride is None else stride
    if stride < 1:
        raise ValueError(f"stride: must be >= 1, got {stride!r}")
    if x.size < window + 1:
        raise ValueError(f"prices: need at least window + 1 = {window + 1} values, got {x.size}")
    starts = np.arange(0, x.size - window, stride)
    W = x[starts[:, None] + np.arange(window + 1)[None, :]]
    return W[np.all(np.isfinite(W) & (W > 0), axis=1)]


def realized_vol(paths: Any, dt: float) -> np.ndarray:
    """Annualised realised vol per path: sqrt(mean of squared log returns / dt) (zero-mean estimator)."""
    P = np.asarray(paths, dtype=float)
    if not (dt > 0):
        raise ValueError(f"dt: must be > 0, got {dt!r}")
    lr = np.diff(np.log(P), axis=-1)
    return np.sqrt(np.mean(lr * lr, axis=-1) / dt)
