"""Volatility surfaces: raw SVI and SABR smiles, an arbitrage-free surface across expiries, a chain fitter.

Conventions: k = ln(K/F) log-moneyness against the forward F of the expiry; w = sigma^2 T total implied variance;
T in years (ACT/365); vols are decimals (0.2 = 20%); "vol points" are 0.01 of vol.

Main entry points::

    fit_chain(chain_df, *, model="svi" | "sabr", valuation_date=None, beta=1.0, obloj=False,
              arbitrage_free=True, weighting="spread", min_quotes=None) -> FittedSurface
    FittedSurface.vol(K, T) -> ndarray          # implied vol, strikes in price units, arrays broadcast
    FittedSurface.total_variance(k, T) -> ndarray
    FittedSurface.params / .forwards / .fit_errors  # per expiry T
    FittedSurface.report -> ArbitrageReport       # .ok, .surface_ok, .quotes_ok, .to_dict()
    FittedSurface.quotes -> DataFrame             # every input row: status, forward, k, mid/bid/ask/fitted vols
    FittedSurface.to_dict() / FittedSurface.from_dict(d)   # JSON round trip
    plot_surface(fitted, path) -> Path            # PNG: heat map + smile slices with bid/ask bars

Building blocks::

    SviParams(a, b, rho, m, sigma)  .total_variance(k) .implied_vol(k, T) .g(k) .density(k) .wing_slopes
    calibrate_svi(k, vol, T, *, weights=None, arbitrage_free=True) -> SviFit
    sabr_vol(K, F, T, alpha, beta, rho, nu, *, obloj=False) -> ndarray     # Hagan 2002 lognormal
    calibrate_sabr(K, vol, F, T, *, beta=1.0, weights=None) -> SabrFit
    VolSurface([SviSlice(T, F, params) | SabrSlice(T, F, params), ...], spot=None)
        .vol(K, T) .total_variance(k, T) .forward(T) .arbitrage_report() .to_dict() / from_dict

Pure library: no Ray, no I/O except the PNG that `plot_surface` writes to the path it is given.
"""

from tradesys.quant.vol.chain import REQUIRED_COLUMNS, FittedSurface, check_quotes, fit_chain
from tradesys.quant.vol.plot import plot_surface
from tradesys.quant.vol.sabr import SabrFit, SabrParams, calibrate_sabr, sabr_vol
from tradesys.quant.vol.surface import (
    ArbitrageReport,
    ButterflyCheck,
    CalendarViolation,
    QuoteViolation,
    SabrSlice,
    SmileSlice,
    SviSlice,
    VolSurface,
    WingCheck,
    slice_from_dict,
)
from tradesys.quant.vol.svi import (
    LEE_BOUND,
    SviFit,
    SviParams,
    calibrate_svi,
    default_k_grid,
    density_from_w,
    g_from_w,
    svi_derivatives,
    svi_total_variance,
)

__all__ = [
    "LEE_BOUND",
    "REQUIRED_COLUMNS",
    "ArbitrageReport",
    "ButterflyCheck",
    "CalendarViolation",
    "FittedSurface",
    "QuoteViolation",
    "SabrFit",
    "SabrParams",
    "SabrSlice",
    "SmileSlice",
    "SviFit",
    "SviParams",
    "SviSlice",
    "VolSurface",
    "WingCheck",
    "calibrate_sabr",
    "calibrate_svi",
    "check_quotes",
    "default_k_grid",
    "density_from_w",
    "fit_chain",
    "g_from_w",
    "plot_surface",
    "sabr_vol",
    "slice_from_dict",
    "svi_derivatives",
    "svi_total_variance",
]
