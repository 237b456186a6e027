"""Crank-Nicolson finite differences in log-spot for American, Bermudan and European vanillas, batched.

Why this shape: the whole batch shares one grid *layout* (M+1 space nodes, N time steps) while every option has
its own spacing, coefficients and boundary values, so each sweep of the tridiagonal solve is a numpy operation
over the batch ([nodes, batch] arrays, batch contiguous) and 10,000 options cost about as many Python-level
steps as one.

Scheme. x = log S* (S* = spot less escrowed cash dividends, see ``trees``), tau = T - t. The PDE
``V_tau = sigma^2/2 V_xx + (r - q - sigma^2/2) V_x - r V`` is discretised with central differences on a uniform
grid centred on today's spot (so the price, delta and gamma are read off the grid without interpolation), half
width ``n_sd * sigma * sqrt(T)`` (4 by default: on 40 American puts at 200-400 space steps it was more accurate
than 5, the finer spacing outweighing the truncation). The payoff is cell-averaged in the one cell holding the
strike. Time stepping is Crank-Nicolson on steps tau_n = T (n/N)^time_power: power 2 (default) concentrates
steps near expiry, where the exercise boundary moves like sqrt(tau); a uniform grid leaves a first-order time
error there (40 American puts, M = 1600, N = 100: max error 2.3e-3 uniform, 1.3e-4 with power 2). The first
``rannacher`` steps are each replaced by two fully implicit half steps (Rannacher start-up), which damps the
oscillations CN would otherwise produce from the payoff kink; ``rannacher_restart`` steps are repeated after each
Bermudan date (off by default: measured less accurate). Bermudans use a uniform grid so that dates fall on steps.
Cash-dividend ex-dates are grid points (see ``_tau_grid``).

Early exercise. American: each step is a linear-complementarity problem. ``solver="bs"`` (default):
Brennan-Schwartz, solved directly by one Thomas pass whose back substitution starts on the exercise side and
projects ``V = max(V, payoff)`` as it goes; exact for a single exercise boundary, which vanilla calls and puts
have. To use one pass order for calls
and puts in the same batch, put rows are stored on a mirrored grid (node j = log-spot decreasing in j), so the
exercise region is always at the high-j end. ``solver="psor"``: projected SOR to a tolerance, for cross-checks;
rows that do not reach it get ``NOT_CONVERGED``. Bermudan (and a call's cum-dividend exercise at an ex-date): a
plain step, then ``V = max(V, payoff)`` at the date only; imposing the constraint inside the implicit step would
grant the exercise right over the whole step, a first-order high bias.

Boundary conditions (Dirichlet, at +-n_sd standard deviations, where they matter below ~1e-6 relative): on the
out-of-the-money side V = 0; on the in-the-money side the European asymptote ``w (S* e^{-q tau} - K e^{-r tau})``,
and for American exercise the larger of that and the exercise value ``w (S* + D(t) - K)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tradesys.quant.options.american.trees import (
    AmericanResult,
    Prepared,
    Style,
    _subset,
    check_style,
    chunk_rows,
    deterministic_greeks,
    deterministic_price,
    exercise_dates,
    exercise_mask,
    finish,
    numeric_view,
    prepare,
)
from tradesys.quant.options.errors import OptionError


class _System:
    """Thomas factorisation of (I - theta dtau L) for one (theta, dtau); constant in time on a uniform grid."""

    def __init__(self, lo: np.ndarray, di: np.ndarray, up: np.ndarray, theta: float, dtau: np.ndarray, M: int):
        self.theta = theta
        self.dtau = dtau
        self.a = -theta * dtau * lo  # sub-diagonal
        b = 1.0 - theta * dtau * di
        self.c = -theta * dtau * up  # super-diagonal
        n = M - 1
        self.inv = np.empty((n, lo.shape[0]))
        self.cp = np.empty((n, lo.shape[0]))
        self.inv[0] = 1.0 / b
        self.cp[0] = self.c * self.inv[0]
        for j in range(1, n):
            self.inv[j] = 1.0 / (b - self.a * self.cp[j - 1])
            self.cp[j] = self.c * self.inv[j]
        self.am = self.a * self.inv  # [n, B]: a * m_j, so the forward sweep is d_j = rhs_j m_j - am_j d_{j-1}
        self.b = b


def fd_price(
    S: Any,
    K: Any,
    T: Any,
    r: Any,
    q: Any,
    sigma: Any,
    is_call: Any,
    *,
    space_steps: int = 400,
    time_steps: int = 100,
    n_sd: float = 4.0,
    time_power: float = 2.0,
    rannacher: int = 2,
    rannacher_restart: int = 0,
    solver: str = "bs",
    psor_omega: float = 1.2,
    psor_tol: float = 1e-10,
    psor_max_iter: int = 500,
    style: Style = "american",
    exercise_per_year: float | None = None,
    dividends: tuple[Any, Any] | None = None,
    return_boundary: bool = False,
    chunk_cells: int = 4_000_000,
) -> AmericanResult:
    """Price, delta and gamma (from the grid at today's spot), optionally the exercise boundary per time step.

    Error is O(h^2 + dtau^2) for Europeans; the early-exercise constraint makes the time error closer to first
    order in practice, so a finer time grid pays. Bermudan dates are snapped to the nearest time step: pick
    time_steps so that T * exercise_per_year divides it.
    """
    check_style(style, exercise_per_year)
    if solver not in ("bs", "psor"):
        raise ValueError("solver must be 'bs' (Brennan-Schwartz) or 'psor'")
    if space_steps < 4 or time_steps < 1:
        raise ValueError("need space_steps >= 4 and time_steps >= 1")
    M = space_steps + space_steps % 2  # even: today's spot sits on node M/2
    N = int(time_steps)
    prep = prepare(S, K, T, r, q, sigma, is_call, dividends)
    p = numeric_view(prep)
    opts = (M, N, n_sd, time_power, rannacher, rannacher_restart, solver, psor_omega, psor_tol, psor_max_iter, style,
            exercise_per_year, return_boundary)
    parts = [_fd_kernel(_subset(p, np.arange(p.n)[sl]), *opts) for sl in chunk_rows(p.n, M + 1, chunk_cells)]
    price, delta, gamma, not_conv, times = (np.concatenate([o[k] for o in parts]) for k in (0, 1, 2, 3, 5))
    boundary = np.concatenate([o[4] for o in parts]) if return_boundary else None
    has_div = p.div_t.shape[1] > 0
    sp = prep.special
    det = deterministic_price(prep, sp, style, exercise_per_year)
    ddet, gdet = deterministic_greeks(prep, sp, style, exercise_per_year)
    price = np.where(sp, det, price)
    delta = np.where(sp, ddet, delta)
    gamma = np.where(sp, gdet, gamma)
    if return_boundary:
        if has_div:
            boundary = boundary + p.escrow(times, exercise=True) * (np.arange(N + 1) < N)[None, :]
        boundary = np.where(sp[:, None], np.nan, boundary)
        times = np.where(sp[:, None], np.arange(N + 1)[None, :] * (prep.T / N)[:, None], times)
    else:
        times = None
    extra = np.where(not_conv & ~sp, np.int8(OptionError.NOT_CONVERGED), np.int8(0))
    return finish(prep, price, delta=delta, gamma=gamma, boundary=boundary, boundary_times=times, extra_codes=extra)


def _fd_kernel(
    p: Prepared,
    M: int,
    N: int,
    n_sd: float,
    time_power: float,
    rannacher: int,
    rannacher_restart: int,
    solver: str,
    psor_omega: float,
    psor_tol: float,
    psor_max_iter: int,
    style: Style,
    exercise_per_year: float | None,
    return_boundary: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """The grid solve for one chunk of rows: price, delta, gamma, not-converged flags, boundary (S*), times."""
    B = p.n
    has_div = p.div_t.shape[1] > 0
    w = p.w
    sgn = w  # +1: node index increases with log-spot (calls); -1: mirrored grid (puts)
    Sx0 = p.S_star
    L = n_sd * p.sigma * np.sqrt(p.T)
    h = 2.0 * L / M
    jj = np.arange(M + 1, dtype=np.float64)[:, None]
    x = np.log(Sx0)[None, :] + sgn[None, :] * (jj - M / 2) * h[None, :]
    Sg = np.exp(x)  # [M+1, B] S* on the grid
    mu = p.r - p.q - 0.5 * p.sigma**2
    alpha = 0.5 * p.sigma**2 / h**2
    beta = mu / (2.0 * sgn * h)
    lo, di, up = alpha - beta, -2.0 * alpha - p.r, alpha + beta
    # [N+1, B], tau ascending; the calendar time of step i is T - taus[N - i]. Bermudan dates need a uniform grid.
    taus = _tau_grid(p, N, 1.0 if style == "bermudan" else time_power)
    times = (p.T[None, :] - taus[::-1]).T  # [B, N+1] calendar times, ascending
    mask = _mask(p, N, times, style, exercise_per_year)  # [N+1, B] by calendar step i = N - n, or None
    systems: dict[str, _System] = {}

    def strike_at(tau: np.ndarray, after: bool = False) -> Any:
        return p.K - p.escrow(p.T - tau, exercise=True, after=after) if has_div else p.K

    def payoff(tau: np.ndarray, after: bool = False) -> np.ndarray:
        return w * (Sg - strike_at(tau, after))  # exercise value, may be negative

    V = _smoothed_payoff(x, h, w, strike_at(np.zeros(B)))
    boundary = np.full((B, N + 1), np.nan) if return_boundary else None
    if return_boundary:
        boundary[:, N] = p.K  # at expiry the boundary is the strike
    not_conv = np.zeros(B, dtype=bool)
    smooth_left = rannacher
    tau = np.zeros(B)
    for n in range(1, N + 1):
        i = N - n  # calendar step after this time step
        dtau = taus[n] - taus[n - 1]
        if smooth_left > 0:
            plan = [("ie", 0.5), ("ie", 0.5)]
            smooth_left -= 1
        else:
            plan = [("cn", 1.0)]
        allowed = None if mask is None else mask[i]
        for k, (name, frac) in enumerate(plan):
            theta, h_tau = (0.5, dtau) if name == "cn" else (1.0, 0.5 * dtau)
            sysm = systems.get(name)
            if sysm is None or not np.array_equal(sysm.dtau, h_tau):  # factorised once on a uniform grid
                sysm = systems[name] = _System(lo, di, up, theta, h_tau, M)
            tau = taus[n] if k == len(plan) - 1 else tau + frac * dtau
            last = k == len(plan) - 1
            g_date = None
            if mask is None:
                # the step covers (t, t + dtau]: its constraint is the exercise value just after t; a call's
                # cum-dividend exercise at an ex-date t is applied at the node only (as a Bermudan date would be),
                # else the implicit solve would grant it over the whole step (a first-order high bias)
                g = payoff(tau, after=True)
                if has_div:
                    g_date = payoff(tau)
            elif last and allowed.any():
                g = payoff(tau)
                g[:, ~allowed] = -np.inf
            else:
                g = None
            if style == "american":  # continuous exercise: the step is a complementarity problem
                V, flags, nc = _step(V, sysm, lo, di, up, g, p, tau, Sg, w, style, strike_at, solver,
                                     psor_omega, psor_tol, psor_max_iter)
                not_conv |= nc
                if g_date is not None and (g_date > g).any():
                    np.maximum(V, g_date, out=V)
                    g = g_date
                    flags = V[1:-1] <= g[1:-1]
            else:  # exercise only at the date itself: continuation by the plain step, then the pointwise max
                V, _, _ = _step(V, sysm, lo, di, up, None, p, tau, Sg, w, style, strike_at, solver,
                                psor_omega, psor_tol, psor_max_iter)
                flags = None
                if g is not None:
                    np.maximum(V, g, out=V)
                    flags = V[1:-1] <= g[1:-1]
            if return_boundary and last and flags is not None:
                _record(boundary, i, V, g, flags, x, mask)
        if allowed is not None and style == "bermudan" and rannacher_restart and allowed.any() and i > 0:
            smooth_left = max(smooth_left, rannacher_restart)

    c = M // 2
    price = V[c]
    dx = sgn * h
    vx = (V[c + 1] - V[c - 1]) / (2.0 * dx)
    vxx = (V[c + 1] - 2.0 * V[c] + V[c - 1]) / (h * h)
    delta = vx / Sx0
    gamma = (vxx - vx) / (Sx0 * Sx0)
    return price, delta, gamma, not_conv, boundary, times


def _tau_grid(p: Prepared, N: int, power: float) -> np.ndarray:
    """Time-to-expiry grid per row, [N+1, B], tau ascending.

    Steps are spaced as tau = T (n/N)^power: with power 2 they are fine near expiry, where the exercise boundary
    moves like sqrt(tau) and a uniform grid leaves a first-order time error (measured on 40 American puts at
    M=1600, N=100: max error 2.3e-3 uniform, 1.3e-4 with power 2). With cash dividends every ex-date is a grid
    point too (steps shared out in proportion to the gaps, each gap spaced the same way from its start), so the
    jump of the exercise value S* + D(t) - K falls between two steps instead of anywhere inside one.
    """
    frac = (np.arange(N + 1, dtype=np.float64) / N) ** power
    base = frac[:, None] * p.T[None, :]
    if p.div_t.shape[1] == 0:
        return base
    out = base.copy()
    for b in range(p.n):
        T = p.T[b]
        tk = p.div_t[b][(p.div_t[b] > 0) & (p.div_t[b] < T) & (p.div_a[b] != 0)]
        if tk.size == 0:
            continue
        brk = np.unique(np.concatenate([[0.0, T], T - tk]))
        gaps = np.diff(brk)
        if gaps.size > N:
            continue  # too few steps to place every date: keep the plain grid
        share = gaps / T * N
        steps = np.maximum(1, np.floor(share)).astype(np.int64)
        while steps.sum() < N:
            steps[np.argmax(share - steps)] += 1
        while steps.sum() > N:
            steps[np.argmax(np.where(steps > 1, steps - share, -np.inf))] -= 1
        pts = [brk[k] + gaps[k] * (np.arange(steps[k]) / steps[k]) ** power for k in range(gaps.size)]
        out[:, b] = np.concatenate([*pts, [T]])
    return out


def _mask(p: Prepared, N: int, times: np.ndarray, style: Style, per_year: float | None) -> np.ndarray | None:
    """Exercise permission per calendar step; Bermudan dates snap to the nearest grid time of their row."""
    if style == "american" or p.div_t.shape[1] == 0:
        return exercise_mask(p, N, style, per_year)
    mask = np.zeros((N + 1, p.n), dtype=bool)
    mask[N] = True
    if style == "european":
        return mask
    dates = exercise_dates(p, style, per_year)
    for b in range(p.n):
        d = dates[b][np.isfinite(dates[b])]
        j = np.clip(np.searchsorted(times[b], d), 1, N)
        j = np.where(np.abs(times[b][j - 1] - d) < np.abs(times[b][j] - d), j - 1, j)
        mask[j[j >= 1], b] = True
    return mask


def _smoothed_payoff(x: np.ndarray, h: np.ndarray, w: np.ndarray, strike: Any) -> np.ndarray:
    """Terminal payoff, cell-averaged over [x - h/2, x + h/2] in the one cell that holds the kink.

    Averaging only there removes the O(h^2) error term that oscillates with where the strike falls between
    nodes, without biasing the smooth part of the payoff.
    """
    Kx = np.broadcast_to(np.asarray(strike, dtype=np.float64), (x.shape[1],))
    point = np.maximum(w * (np.exp(x) - Kx), 0.0)
    lk = np.log(Kx)
    a = x - 0.5 * h
    b = x + 0.5 * h
    kink = (a < lk) & (lk < b)
    call = w > 0
    # call: integral over [lk, b] of (e^x - K); put: integral over [a, lk] of (K - e^x)
    avg_call = (np.exp(b) - Kx) - Kx * (b - lk)
    avg_put = Kx * (lk - a) - (Kx - np.exp(a))
    avg = np.where(call, avg_call, avg_put) / h
    return np.where(kink, avg, point)


def _edges(p: Prepared, tau: np.ndarray, Sg: np.ndarray, w: np.ndarray, style: str, strike_at: Any) -> np.ndarray:
    """Dirichlet value on the in-the-money edge (node M); the out-of-the-money edge (node 0) is 0."""
    s = Sg[-1]
    euro = w * (s * np.exp(-p.q * tau) - p.K * np.exp(-p.r * tau))
    if style == "american":
        return np.maximum(np.maximum(euro, w * (s - strike_at(tau))), 0.0)
    return np.maximum(euro, 0.0)


def _step(
    V: np.ndarray,
    sysm: _System,
    lo: np.ndarray,
    di: np.ndarray,
    up: np.ndarray,
    g: np.ndarray | None,
    p: Prepared,
    tau: np.ndarray,
    Sg: np.ndarray,
    w: np.ndarray,
    style: str,
    strike_at: Any,
    solver: str,
    omega: float,
    tol: float,
    max_iter: int,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """One theta-step with the exercise constraint g (None: no exercise at this step)."""
    M = V.shape[0] - 1
    expl = (1.0 - sysm.theta) * sysm.dtau
    rhs = V[1:M].copy()
    if expl.any():
        rhs += expl * (lo * V[0 : M - 1] + di * V[1:M] + up * V[2 : M + 1])
    v_top = _edges(p, tau, Sg, w, style, strike_at)
    rhs[-1] -= sysm.c * v_top  # node 0 is 0: nothing to move for the sub-diagonal
    new = np.empty_like(V)
    new[0] = 0.0
    new[M] = v_top
    nc = np.zeros(V.shape[1], dtype=bool)
    flags = None
    if solver == "psor" and g is not None:
        new[1:M], nc = _psor(V[1:M], rhs, sysm, g[1:M], v_top, omega, tol, max_iter)
        flags = new[1:M] <= g[1:M] + 1e-14
    else:
        d = rhs
        d *= sysm.inv
        am = sysm.am
        tmp = np.empty(V.shape[1])
        for j in range(1, M - 1):
            np.multiply(am[j], d[j - 1], out=tmp)
            np.subtract(d[j], tmp, out=d[j])
        cp = sysm.cp
        out = new[1:M]
        out[-1] = d[-1]
        if g is None:
            for j in range(M - 3, -1, -1):
                oj = out[j]
                np.multiply(cp[j], out[j + 1], out=oj)
                np.subtract(d[j], oj, out=oj)
        else:
            gi = g[1:M]
            np.maximum(out[-1], gi[-1], out=out[-1])
            for j in range(M - 3, -1, -1):
                oj = out[j]
                np.multiply(cp[j], out[j + 1], out=oj)
                np.subtract(d[j], oj, out=oj)
                np.maximum(oj, gi[j], out=oj)
            flags = out <= gi  # projected nodes: the exercise region
    return new, flags, nc


def _psor(
    V0: np.ndarray,
    rhs: np.ndarray,
    sysm: _System,
    g: np.ndarray,
    v_top: np.ndarray,
    omega: float,
    tol: float,
    max_iter: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Projected SOR on the interior system, all rows at once; stops when every row moved less than tol."""
    n = V0.shape[0]
    v = np.maximum(V0, g)
    a, b, c = sysm.a, sysm.b, sysm.c
    for _ in range(max_iter):
        worst = np.zeros(v.shape[1])
        for j in range(n):
            s = rhs[j].copy()
            if j > 0:
                s -= a * v[j - 1]
            if j < n - 1:
                s -= c * v[j + 1]
            y = v[j] + omega * (s / b - v[j])
            y = np.maximum(y, g[j])
            worst = np.maximum(worst, np.abs(y - v[j]))
            v[j] = y
        if (worst < tol * np.maximum(1.0, np.abs(v).max(axis=0))).all():
            return v, np.zeros(v.shape[1], dtype=bool)
    return v, worst >= tol * np.maximum(1.0, np.abs(v).max(axis=0))


def _record(
    boundary: np.ndarray,
    i: int,
    V: np.ndarray,
    g: np.ndarray,
    flags: np.ndarray,
    x: np.ndarray,
    mask: np.ndarray | None,
) -> None:
    """Critical S* at calendar step i: where V - payoff, ~ quadratic in x near the boundary (smooth pasting),
    reaches zero. Uses sqrt(V - g) linear in x between the last two continuation nodes; clipped to the cell."""
    M = V.shape[0] - 1
    interior_ex = flags & (g[1:M] > 0)
    count = interior_ex.sum(axis=0)  # exercised nodes form the high-j end: j in [M - count, M - 1]
    B = V.shape[1]
    cols = np.arange(B)
    j_ex = np.clip(M - count, 1, M - 1)
    j1 = np.clip(j_ex - 1, 0, M)
    j2 = np.clip(j_ex - 2, 0, M)
    u1 = np.sqrt(np.maximum(V[j1, cols] - g[j1, cols], 0.0))
    u2 = np.sqrt(np.maximum(V[j2, cols] - g[j2, cols], 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(u2 > u1, u1 / (u2 - u1), 1.0)
    frac = np.clip(np.nan_to_num(frac, nan=1.0), 0.0, 1.0)
    xb = x[j1, cols] + frac * (x[j_ex, cols] - x[j1, cols])
    crit = np.exp(xb)
    ok = (count > 0) & (count < M - 1)
    if mask is not None:
        ok &= mask[i]
    boundary[:, i] = np.where(ok, crit, np.nan)
