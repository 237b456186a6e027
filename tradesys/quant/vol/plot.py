"""PNG of a fitted surface: an implied-vol heat map over (k, T) and the smile of each expiry with its quotes.

Uses matplotlib's object API on an Agg canvas (no pyplot, no global figure state), so it is safe from a server
thread and needs no display. The only I/O is the PNG written to the path given.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tradesys.quant.vol.chain import FittedSurface
from tradesys.quant.vol.surface import VolSurface

__all__ = ["plot_surface"]


def plot_surface(
    fitted: FittedSurface | VolSurface,
    path: str | os.PathLike[str],
    *,
    quotes: pd.DataFrame | None = None,
    max_slices: int = 8,
    n_k: int = 161,
    n_t: int = 120,
    title: str | None = None,
    dpi: int = 100,
) -> Path:
    """Write a PNG: left, implied vol (%) as a heat map over log-moneyness k = ln(K/F(T)) and T with the fitted
    expiries marked; right, up to `max_slices` smiles (vol against strike) with the market mid vols and bid/ask
    bars where quotes are known.

    fitted: a `FittedSurface` (its `quotes` are used unless `quotes` is given) or a `VolSurface`. quotes: a frame
    with columns T, strike, iv_mid, iv_bid, iv_ask (and `used`, if present, to keep the fitted rows). Returns the
    path written.
    """
    surface: VolSurface = fitted if isinstance(fitted, VolSurface) else fitted.surface
    if quotes is None and not isinstance(fitted, VolSurface):
        quotes = fitted.quotes
    if quotes is not None and len(quotes):
        if "used" in quotes.columns:
            quotes = quotes[quotes["used"].astype(bool)]
        quotes = quotes[np.isfinite(quotes["iv_mid"].to_numpy(dtype=np.float64))]
    path = Path(path)
    Ts = surface.expiries
    theta_max = float(surface.total_variance(0.0, Ts[-1]))
    if quotes is not None and len(quotes):
        kq = np.log(quotes["strike"].to_numpy(dtype=np.float64) / surface.forward(quotes["T"].to_numpy()))
        k_lo, k_hi = float(np.min(kq)), float(np.max(kq))
        pad = 0.1 * max(k_hi - k_lo, 0.05)
        k_lo, k_hi = k_lo - pad, k_hi + pad
    else:
        k_lo, k_hi = -2.5 * math.sqrt(theta_max), 2.0 * math.sqrt(theta_max)

    n_sl = min(max_slices, Ts.size)
    pick = np.unique(np.round(np.linspace(0, Ts.size - 1, n_sl)).astype(int))
    ncol = 2 if pick.size > 1 else 1
    nrow = math.ceil(pick.size / ncol)
    fig = Figure(figsize=(6.5 + 3.6 * ncol, max(4.5, 2.6 * nrow)), dpi=dpi)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(nrow, 1 + ncol, width_ratios=[1.8] + [1.0] * ncol)

    ax = fig.add_subplot(grid[:, 0])
    kk = np.linspace(k_lo, k_hi, n_k)
    tt = np.linspace(min(Ts[0] * 0.5, Ts[0]), Ts[-1] * 1.05, n_t)
    vol = 100.0 * surface.implied_vol(kk[None, :], tt[:, None])
    mesh = ax.pcolormesh(kk, tt, vol, shading="auto", cmap="viridis")
    finite = vol[np.isfinite(vol)]
    if finite.size and float(np.ptp(finite)) > 0:
        cs = ax.contour(kk, tt, vol, levels=8, colors="white", linewidths=0.6)
        ax.clabel(cs, fontsize=7, fmt="%.0f")
    for T in Ts:
        ax.axhline(T, color="white", lw=0.5, ls="--", alpha=0.7)
    ax.set_xlabel("k = ln(K / F(T))")
    ax.set_ylabel("T (years)")
    ax.set_title("implied vol (%)")
    fig.colorbar(mesh, ax=ax, fraction=0.05, pad=0.02)

    for n, i in enumerate(pick):
        sl = surface.slices[i]
        sax = fig.add_subplot(grid[n // ncol, 1 + n % ncol])
        q = None
        if quotes is not None and len(quotes):
            q = quotes[np.isclose(quotes["T"].to_numpy(dtype=np.float64), sl.T, rtol=0, atol=1e-9)]
        if q is not None and len(q):
            Kq = q["strike"].to_numpy(dtype=np.float64)
            lo, hi = float(Kq.min()), float(Kq.max())
            mid = 100.0 * q["iv_mid"].to_numpy(dtype=np.float64)
            bid = 100.0 * q["iv_bid"].to_numpy(dtype=np.float64)
            ask = 100.0 * q["iv_ask"].to_numpy(dtype=np.float64)
            yerr = np.vstack([np.nan_to_num(mid - bid, nan=0.0), np.nan_to_num(ask - mid, nan=0.0)])
            sax.errorbar(
                Kq,
                mid,
                yerr=np.maximum(yerr, 0.0),
                fmt="o",
                ms=2.5,
                lw=0.8,
                color="tab:red",
                ecolor="tab:gray",
                capsize=1.5,
                label="mid (bid/ask)",
            )
        else:
            lo, hi = sl.forward * math.exp(k_lo), sl.forward * math.exp(k_hi)
        pad = 0.05 * (hi - lo)
        K = np.linspace(max(lo - pad, 1e-12), hi + pad, 200)
        sax.plot(K, 100.0 * sl.vol(K), color="tab:blue", lw=1.2, label=f"{sl.model} fit")
        sax.axvline(sl.forward, color="k", lw=0.5, ls=":")
        sax.set_title(f"T = {sl.T:.4g}  F = {sl.forward:.4g}", fontsize=9)
        sax.tick_params(labelsize=7)
        if n == 0:
            sax.legend(fontsize=7)
        if n // ncol == nrow - 1:
            sax.set_xlabel("strike", fontsize=8)
        if n % ncol == 0:
            sax.set_ylabel("vol (%)", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path
