"""American (and Bermudan) vanilla options: binomial trees, Crank-Nicolson finite differences, LSM Monte Carlo.

One entry point, batched over options like the rest of `tradesys.quant.options` (inputs broadcast; invalid rows
come back NaN with an `OptionError` code, never an exception for the batch):

    american_price(S, K, T, r, q, sigma, is_call, method="lr") -> AmericanResult

Methods (see each module for the numerics and their error behaviour):

* "lr"  Leisen-Reimer tree, Richardson-extrapolated by default (``trees.binomial_price``). The fast, accurate
  default for batches: ~1e-4 .. 1e-3 absolute at 201 steps.
* "crr" Cox-Ross-Rubinstein tree (``trees.binomial_price``), the textbook lattice; oscillating O(1/N) error.
* "fd"  Crank-Nicolson in log-spot, Rannacher start-up, Brennan-Schwartz or PSOR exercise (``fd.fd_price``);
  also returns delta and gamma from the grid.
* "lsm" Longstaff-Schwartz least-squares Monte Carlo in torch (``lsm.lsm_price``): prices the Bermudan with
  ``exercise_per_year`` dates (50 if not given), returns a standard error.

Exercise styles: "american" (continuous), "bermudan" (every 1/exercise_per_year back from expiry), "european".
Discrete cash dividends: ``dividends=(times, amounts)`` in the escrowed-dividend model (``trees`` docstring),
the model of QuantLib's ``FdBlackScholesVanillaEngine(..., cashDividendModel=Escrowed)``.
"""

from __future__ import annotations

from typing import Any, Literal

from tradesys.quant.options.american.fd import fd_price
from tradesys.quant.options.american.lsm import lsm_price
from tradesys.quant.options.american.trees import AmericanResult, Style, binomial_price, peizer_pratt

__all__ = [
    "METHODS",
    "AmericanResult",
    "american_price",
    "binomial_price",
    "fd_price",
    "lsm_price",
    "peizer_pratt",
]

METHODS = ("lr", "crr", "fd", "lsm")


def american_price(
    S: Any,
    K: Any,
    T: Any,
    r: Any,
    q: Any,
    sigma: Any,
    is_call: Any,
    method: Literal["lr", "crr", "fd", "lsm"] = "lr",
    *,
    style: Style = "american",
    exercise_per_year: float | None = None,
    dividends: tuple[Any, Any] | None = None,
    return_boundary: bool = False,
    **kwargs: Any,
) -> AmericanResult:
    """Price a batch of American/Bermudan/European vanillas with the chosen method.

    Extra keyword arguments go to the method (steps, richardson, tree sizes, grid sizes, paths, seed, device...).
    For "lr" Richardson extrapolation is on unless richardson=False is passed or there are cash dividends.
    "lsm" always prices exercise on a date grid: with style="american" it uses exercise_per_year (default 50)
    dates and also allows exercise today, which approximates the American price from below as the date count
    grows.
    """
    common = dict(style=style, dividends=dividends, return_boundary=return_boundary)
    if method == "lr":
        # cash dividends falling between tree nodes make the error erratic in N: extrapolation then hurts
        kwargs.setdefault("richardson", dividends is None)
        return binomial_price(S, K, T, r, q, sigma, is_call, tree="lr", exercise_per_year=exercise_per_year,
                              **common, **kwargs)
    if method == "crr":
        return binomial_price(S, K, T, r, q, sigma, is_call, tree="crr", exercise_per_year=exercise_per_year,
                              **common, **kwargs)
    if method == "fd":
        return fd_price(S, K, T, r, q, sigma, is_call, exercise_per_year=exercise_per_year, **common, **kwargs)
    if method == "lsm":
        per_year = 50.0 if exercise_per_year is None else exercise_per_year
        return lsm_price(S, K, T, r, q, sigma, is_call, exercise_per_year=per_year, **common, **kwargs)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")
