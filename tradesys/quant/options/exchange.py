"""Two-asset options: Margrabe's exchange option with its cross-Greeks, and Kirk's spread-option approximation.

Why: a book of two-asset claims is hedged in both legs and is exposed to their correlation; cross-gamma
d2V/dS1dS2 and the correlation sensitivity dV/drho are the Greeks a one-asset library does not have.

Public API (inputs broadcast; numpy in -> numpy out, torch in -> torch out; invalid rows NaN with a code):

    exchange_vol(sigma1, sigma2, rho) -> Array
    margrabe_price(S1, S2, T, q1, q2, sigma1, sigma2, rho) -> Array
    margrabe_price_checked(S1, S2, T, q1, q2, sigma1, sigma2, rho) -> (price, codes)
    margrabe_greeks(S1, S2, T, q1, q2, sigma1, sigma2, rho) -> ExchangeGreeks
    kirk_price(S1, S2, K, T, r, q1, q2, sigma1, sigma2, rho, is_call=True) -> Array
    kirk_price_checked(...) -> (price, codes)

Model and conventions. S1, S2 follow correlated GBMs with continuous dividend yields q1, q2, vols sigma1,
sigma2 and correlation rho; T in years (ACT/365). The exchange option pays max(S1_T - S2_T, 0) at T (the right
to give one unit of asset 2 for one unit of asset 1). With asset 2 as numeraire its price is the BSM call

    V = S1 e^{-q1 T} N(d1) - S2 e^{-q2 T} N(d2),   d1,2 = (ln(S1 e^{-q1 T} / (S2 e^{-q2 T})) +- s^2/2) / s,
    s = sigma sqrt(T),  sigma^2 = sigma1^2 + sigma2^2 - 2 rho sigma1 sigma2,

i.e. BSM with S = S1, K = S2, q = q1, r = q2 and vol sigma; the risk-free rate drops out (Margrabe 1978). The
price is computed by that BSM kernel (`european.bsm_price`, accurate deep out of the money). The Greeks:

* delta1 = dV/dS1 = e^{-q1 T} N(d1), delta2 = dV/dS2 = -e^{-q2 T} N(d2);
* gamma11 = e^{-q1 T} n(d1) / (S1 s), gamma22 = e^{-q2 T} n(d2) / (S2 s), cross-gamma
  gamma12 = d2V/dS1dS2 = -e^{-q1 T} n(d1) / (S2 s) (always <= 0: the option is long the spread);
* vega1 = dV/dsigma1 = vega_s (sigma1 - rho sigma2) / sigma, vega2 = vega_s (sigma2 - rho sigma1) / sigma and
  corr = dV/drho = -vega_s sigma1 sigma2 / sigma, where vega_s = S1 e^{-q1 T} n(d1) sqrt(T) is the vega in the
  exchange vol sigma (per 1.00 of vol / of correlation);
* theta = dV/dt per calendar year (= -dV/dT) = -S1 e^{-q1 T} n(d1) sigma / (2 sqrt T) + q1 S1 e^{-q1 T} N(d1)
  - q2 S2 e^{-q2 T} N(d2);  rho_q1 = dV/dq1 = -T S1 e^{-q1 T} N(d1), rho_q2 = dV/dq2 = T S2 e^{-q2 T} N(d2).

V is homogeneous of degree one in (S1, S2), so V = S1 delta1 + S2 delta2 (Euler), S1 gamma11 + S2 gamma12 = 0
and S1 gamma12 + S2 gamma22 = 0; the tests check these, QuantLib's AnalyticEuropeanMargrabeEngine, finite
differences and a Monte Carlo of the two GBMs.

Limits. When s == 0 (T == 0, or sigma1 == sigma2 with rho == 1) the price is max(S1 e^{-q1 T} - S2 e^{-q2 T}, 0)
and the Greeks are those of that function off the kink (step H = 1 in the money, 1/2 at the money, 0 out):
delta1 = e^{-q1 T} H, delta2 = -e^{-q2 T} H, theta = (q1 A1 - q2 A2) H, gammas 0. The vegas and dV/drho are 0
there by convention (the exchange vol sigma = |sigma1 - sigma2| has a kink at rho = 1, sigma1 == sigma2).

Kirk's spread option pays max(S1_T - S2_T - K, 0) (call) or max(K - S1_T + S2_T, 0) (put). Kirk (1995) treats
F2 + K as lognormal: the price is Black-76 on F1 = S1 e^{(r - q1) T} with strike F2 + K and vol
sigma_K^2 = sigma1^2 - 2 rho sigma1 sigma2 b + sigma2^2 b^2, b = F2 / (F2 + K); exact (Margrabe) for K = 0, an
approximation otherwise (rows with F2 + K <= 0 are NaN with NON_POSITIVE_STRIKE). It matches QuantLib's
KirkEngine.

Reason codes are `OptionError` values; BAD_CORRELATION for |rho| > 1.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from tradesys.quant.backend import Array, asarrays, namespace, norm_cdf
from tradesys.quant.options.errors import OptionError
from tradesys.quant.options.european import black76_price_checked, bsm_price_checked

__all__ = [
    "BAD_CORRELATION",
    "ExchangeGreeks",
    "exchange_vol",
    "kirk_price",
    "kirk_price_checked",
    "margrabe_greeks",
    "margrabe_price",
    "margrabe_price_checked",
]

BAD_CORRELATION: int = int(OptionError.BAD_CORRELATION)  # |rho| > 1

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_D_CLAMP = 1.0e6


@dataclass(frozen=True)
class ExchangeGreeks:
    """Price and Greeks of a batch of exchange options (units in the module docstring); codes 0 = OK."""

    codes: Array
    price: Array
    delta1: Array
    delta2: Array
    gamma11: Array
    gamma22: Array
    gamma12: Array
    vega1: Array
    vega2: Array
    corr: Array
    theta: Array
    rho_q1: Array
    rho_q2: Array
    sigma: Array  # the exchange vol sqrt(sigma1^2 + sigma2^2 - 2 rho sigma1 sigma2)

    def as_dict(self) -> dict[str, Array]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "codes"}

    def __getitem__(self, name: str) -> Array:
        return self.as_dict()[name]


def _errstate(xp: Any) -> contextlib.AbstractContextManager[Any]:
    return np.errstate(all="ignore") if xp is np else contextlib.nullcontext()


def _to_codes(xp: Any, codes: Array) -> Array:
    return codes.astype(np.int8) if xp is np else codes.to(xp.int8)


def _clamp(xp: Any, d: Array) -> Array:
    """|d| beyond 1e6 changes no density or CDF; clamping keeps d^2 finite when s is tiny."""
    return np.clip(d, -_D_CLAMP, _D_CLAMP) if xp is np else d.clamp(-_D_CLAMP, _D_CLAMP)


def exchange_vol(sigma1: Any, sigma2: Any, rho: Any) -> Array:
    """Vol of ln(S1/S2): sqrt(sigma1^2 + sigma2^2 - 2 rho sigma1 sigma2), floored at 0 against rounding."""
    s1, s2, rho = asarrays(sigma1, sigma2, rho)
    xp = namespace(s1)
    var = s1 * s1 + s2 * s2 - 2.0 * rho * s1 * s2
    return xp.sqrt(xp.where(var > 0, var, 0.0 * var))


@dataclass
class _Two:
    xp: Any
    S1: Array
    S2: Array
    T: Array
    q1: Array
    q2: Array
    s1: Array
    s2: Array
    rho: Array
    bad: Array
    codes: Array


def _prepare(S1: Any, S2: Any, T: Any, q1: Any, q2: Any, sigma1: Any, sigma2: Any, rho: Any) -> _Two:
    """Broadcast, code bad rows (first failing check wins) and replace them by harmless values."""
    S1, S2, T, q1, q2, s1, s2, rho = asarrays(S1, S2, T, q1, q2, sigma1, sigma2, rho)
    xp = namespace(S1)
    finite = xp.isfinite(S1) & xp.isfinite(S2) & xp.isfinite(T) & xp.isfinite(q1) & xp.isfinite(q2)
    finite = finite & xp.isfinite(s1) & xp.isfinite(s2) & xp.isfinite(rho)
    ok = int(OptionError.OK)
    codes = xp.where((rho < -1.0) | (rho > 1.0), BAD_CORRELATION, ok)
    codes = xp.where((s1 < 0) | (s2 < 0), int(OptionError.NEGATIVE_VOL), codes)
    codes = xp.where(T < 0, int(OptionError.NEGATIVE_EXPIRY), codes)
    codes = xp.where((S1 <= 0) | (S2 <= 0), int(OptionError.NON_POSITIVE_SPOT), codes)
    codes = _to_codes(xp, xp.where(~finite, int(OptionError.NAN_INPUT), codes))
    bad = codes != ok
    return _Two(
        xp,
        xp.where(bad, 1.0, S1),
        xp.where(bad, 1.0, S2),
        xp.where(bad, 1.0, T),
        xp.where(bad, 0.0, q1),
        xp.where(bad, 0.0, q2),
        xp.where(bad, 0.2, s1),
        xp.where(bad, 0.2, s2),
        xp.where(bad, 0.0, rho),
        bad,
        codes,
    )


def margrabe_price_checked(
    S1: Any, S2: Any, T: Any, q1: Any, q2: Any, sigma1: Any, sigma2: Any, rho: Any
) -> tuple[Array, Array]:
    """Exchange option price max(S1 - S2, 0) and a reason code per row (NaN price where the code != 0)."""
    a = _prepare(S1, S2, T, q1, q2, sigma1, sigma2, rho)
    sig = exchange_vol(a.s1, a.s2, a.rho)
    price, _ = bsm_price_checked(a.S1, a.S2, a.T, a.q2, a.q1, sig, True)
    return a.xp.where(a.bad, math.nan, price), a.codes


def margrabe_price(S1: Any, S2: Any, T: Any, q1: Any, q2: Any, sigma1: Any, sigma2: Any, rho: Any) -> Array:
    """Margrabe exchange option price (module docstring); invalid rows NaN (see `margrabe_price_checked`)."""
    return margrabe_price_checked(S1, S2, T, q1, q2, sigma1, sigma2, rho)[0]


def margrabe_greeks(S1: Any, S2: Any, T: Any, q1: Any, q2: Any, sigma1: Any, sigma2: Any, rho: Any) -> ExchangeGreeks:
    """Price, deltas, gammas incl. cross-gamma, vegas, dV/drho, theta and dividend rhos in one pass."""
    a = _prepare(S1, S2, T, q1, q2, sigma1, sigma2, rho)
    xp, S1, S2, T, q1, q2, s1, s2, rho = a.xp, a.S1, a.S2, a.T, a.q1, a.q2, a.s1, a.s2, a.rho
    sig_raw = exchange_vol(s1, s2, rho)
    price, _ = bsm_price_checked(S1, S2, T, q2, q1, sig_raw, True)
    with _errstate(xp):
        D1 = xp.exp(-q1 * T)
        D2 = xp.exp(-q2 * T)
        A1 = S1 * D1
        A2 = S2 * D2
        x = xp.log(S1 / S2) + (q2 - q1) * T  # ln(A1 / A2)
        deg = (T <= 0) | ~(sig_raw * xp.sqrt(xp.where(T > 0, T, 1.0)) > 0)
        sig = xp.where(deg, 1.0, sig_raw)
        sqT = xp.sqrt(xp.where(deg, 1.0, T))
        s = sig * sqT
        d1 = _clamp(xp, x / s + 0.5 * s)
        d2 = d1 - s
        n1 = _INV_SQRT_2PI * xp.exp(-0.5 * d1 * d1)
        N1 = norm_cdf(d1)
        N2 = norm_cdf(d2)
        H = xp.where(x > 0, 1.0, xp.where(x == 0, 0.5, 0.0))
        zero = xp.zeros_like(S1)
        vega_s = (A1 * sqT) * n1
        # chain rule through sigma; 0 by convention where sigma == 0 (module docstring)
        dsig_ds1 = (s1 - rho * s2) / sig
        dsig_ds2 = (s2 - rho * s1) / sig
        dsig_drho = -(s1 * s2) / sig
        g11 = (D1 / S1) * (n1 / s)
        g12 = -(D1 / S2) * (n1 / s)
        out = {
            "price": price,
            "delta1": xp.where(deg, D1 * H, D1 * N1),
            "delta2": xp.where(deg, -D2 * H, -D2 * N2),
            "gamma11": xp.where(deg, zero, g11),
            "gamma22": xp.where(deg, zero, (D2 / S2) * (_INV_SQRT_2PI * xp.exp(-0.5 * d2 * d2) / s)),
            "gamma12": xp.where(deg, zero, g12),
            "vega1": xp.where(deg, zero, vega_s * dsig_ds1),
            "vega2": xp.where(deg, zero, vega_s * dsig_ds2),
            "corr": xp.where(deg, zero, vega_s * dsig_drho),
            "theta": xp.where(deg, (q1 * A1 - q2 * A2) * H, -0.5 * (A1 * n1 * sig) / sqT + q1 * A1 * N1 - q2 * A2 * N2),
            "rho_q1": xp.where(deg, -T * A1 * H, -T * A1 * N1),
            "rho_q2": xp.where(deg, T * A2 * H, T * A2 * N2),
            "sigma": sig_raw,
        }
    out = {k: xp.where(a.bad, math.nan, v) for k, v in out.items()}
    return ExchangeGreeks(codes=a.codes, **out)


def kirk_price_checked(
    S1: Any,
    S2: Any,
    K: Any,
    T: Any,
    r: Any,
    q1: Any,
    q2: Any,
    sigma1: Any,
    sigma2: Any,
    rho: Any,
    is_call: Any = True,
) -> tuple[Array, Array]:
    """Kirk's spread option price (module docstring) and a reason code per row."""
    S1, S2, K, T, r, q1, q2, sigma1, sigma2, rho, call = asarrays(S1, S2, K, T, r, q1, q2, sigma1, sigma2, rho, is_call)
    a = _prepare(S1, S2, T, q1, q2, sigma1, sigma2, rho)
    xp = a.xp
    codes = xp.where(~(xp.isfinite(K) & xp.isfinite(r) & xp.isfinite(call)), int(OptionError.NAN_INPUT), a.codes)
    with _errstate(xp):
        F1 = a.S1 * xp.exp((r - a.q1) * a.T)
        F2 = a.S2 * xp.exp((r - a.q2) * a.T)
        Kf = F2 + K
        codes = xp.where((codes == 0) & ~(Kf > 0), int(OptionError.NON_POSITIVE_STRIKE), codes)
        codes = _to_codes(xp, codes)
        bad = codes != 0
        Kf = xp.where(bad, 1.0, Kf)
        b = xp.where(bad, 1.0, F2) / Kf
        var = a.s1 * a.s1 - 2.0 * a.rho * a.s1 * a.s2 * b + a.s2 * a.s2 * b * b
        sigK = xp.sqrt(xp.where(var > 0, var, 0.0 * var))
        price, _ = black76_price_checked(xp.where(bad, 1.0, F1), Kf, a.T, xp.where(bad, 0.0, r), sigK, call > 0.5)
    return xp.where(bad, math.nan, price), codes


def kirk_price(
    S1: Any,
    S2: Any,
    K: Any,
    T: Any,
    r: Any,
    q1: Any,
    q2: Any,
    sigma1: Any,
    sigma2: Any,
    rho: Any,
    is_call: Any = True,
) -> Array:
    """Kirk's approximation for a spread option on S1 - S2 with strike K; invalid rows NaN."""
    return kirk_price_checked(S1, S2, K, T, r, q1, q2, sigma1, sigma2, rho, is_call)[0]
