"""European options: Black-Scholes-Merton (continuous dividend yield) and Black-76, price and Greeks in batch.

One kernel serves numpy arrays and torch tensors (CPU or GPU, differentiable), and both models: Black-76 is
BSM with S = F and q = r. Conventions are those of `tradesys.quant.options` (vega per 1.00 of vol, theta, charm,
veta and color per year of calendar time, i.e. -d/dT; rho and dividend rho per 1.00 of rate).

Accuracy of the price. Writing t = +1 for a call and -1 for a put, A = S e^{-qT}, B = K e^{-rT}, x = ln(F/K)
and s = sigma sqrt(T), only the out-of-the-money side (the call when F <= K, the put when F > K) is evaluated
from normal-distribution functions; the in-the-money side comes from put-call parity, V_itm = V_otm + t (A - B)
with A - B = B expm1(x), so a deep OTM price is never the small difference of parity terms and C - P = A - B
holds to rounding. The OTM side:

* when d2 < 0 < d1 (|x| < s^2/2) it is 0.5 (A erf(d1/sqrt2) - B erf(d2/sqrt2)) - 0.5 B |expm1(x)|, a sum of
  two positive terms less a term of order s^2, so near the money nothing cancels (the plain N(d1) - N(d2) loses
  about log10(1/s) digits there);
* otherwise (the tail: both d on the same side) it is 0.5 B exp(-d2^2/2) |erfcx(-t d1/sqrt2) - erfcx(-t d2/sqrt2)|
  (erfcx(z) = exp(z^2) erfc(z)), using the identity A exp(-d1^2/2) = B exp(-d2^2/2): the Gaussian factor is
  taken out once and the erfcx terms are O(1). The relative error is then about eps (d2^2 + (|d2| + 1) / s)
  instead of eps d2^2 (|d2| + 1) / s for the textbook S e^{-qT} N(d1) - K e^{-rT} N(d2), and the price
  underflows only when the true price does. Against 60-digit mpmath over ln(K/S) in +-3, T in [1 day, 5y],
  sigma in [1%, 200%]: worst relative error ~1e-12 here, ~5e-10 for the textbook form. The (|d2| + 1) / s term
  (the erfcx difference, and equally the rounding of ln(S/K)) dominates as s -> 0: ~1e-8 relative at
  s = 1e-7, i.e. for sub-minute expiries, which is also the conditioning of the price in K there.

The Greeks are the textbook closed forms, computed in one pass that shares d1, d2, the density, the CDFs and
the discount factors; N(+-d) comes from `ndtr`, accurate in the far tail.

Limits (legal, never NaN). When T == 0 or sigma == 0 (s == 0) the price is the discounted forward intrinsic
value e^{-rT} max(t (F - K), 0). The Greeks there are those of that function of S, r, q and T off the kink,
with the step taken as 1/2 exactly at F == K: delta = t e^{-qT} H, theta = t (q A - r B) H, rho = t T B H,
rho_q = -t T A H, charm = t q e^{-qT} H, where H is 1 in the money, 1/2 at F == K, 0 out of the money (these
are also the sigma -> 0 limits). Vega is its one-sided limit in sigma: A sqrt(T) phi(0) exactly at F == K when
T > 0, else 0. gamma, vanna, vomma, veta, speed, zomma, color and ultima are 0. Off F == K that is the limit;
exactly at F == K some of them diverge (gamma, speed, color) and some have finite one-sided limits (veta,
ultima), so 0 is a convention there, as is the finite theta at T == 0 and F == K (for sigma > 0 the true
theta diverges like -A sigma phi(0) / (2 sqrt(T)) as T -> 0).

Invalid rows (NaN/inf input, S <= 0, K <= 0, T < 0, sigma < 0, an option type other than True/False/1/0) come
back NaN in every output with an `OptionError` code per row (the first failing check in that order); a batch never
raises for one bad row. A row that passes those checks but whose computed outputs are not all finite (extreme finite
inputs such as T = 1e300 or r = 1e10 overflow float arithmetic) is NaN in every output with code OVERFLOW: a row is
finite everywhere with code OK, or NaN everywhere with a non-OK code.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from scipy import special

from tradesys.quant.backend import Array, asarrays, is_torch, namespace, norm_cdf, torch
from tradesys.quant.options.errors import OptionError

__all__ = [
    "GREEK_NAMES",
    "Greeks",
    "black76_greeks",
    "black76_price",
    "black76_price_checked",
    "bsm_greeks",
    "bsm_price",
    "bsm_price_checked",
    "per_day",
    "per_vol_point",
]

GREEK_NAMES: tuple[str, ...] = (
    "price",
    "delta",
    "gamma",
    "vega",
    "theta",
    "rho",
    "rho_q",
    "vanna",
    "charm",
    "vomma",
    "veta",
    "speed",
    "zomma",
    "color",
    "ultima",
)

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
# |d| beyond this changes no normal density or CDF in any float dtype (phi underflows past ~38.6 in float64);
# clamping keeps d^4 in ultima and d / s in speed finite when s is tiny or huge.
_D_CLAMP = 1.0e6


@dataclass(frozen=True)
class Greeks:
    """Price and Greeks of a batch; a field is None when it was not asked for (`which`).

    `codes` holds an `OptionError` value per row (0 = OK); invalid rows are NaN in every computed field.
    Dict-like access (`g["delta"]`, `keys()`, `items()`) covers the computed fields.
    """

    codes: Array
    price: Array | None = None
    delta: Array | None = None
    gamma: Array | None = None
    vega: Array | None = None
    theta: Array | None = None
    rho: Array | None = None
    rho_q: Array | None = None
    vanna: Array | None = None
    charm: Array | None = None
    vomma: Array | None = None
    veta: Array | None = None
    speed: Array | None = None
    zomma: Array | None = None
    color: Array | None = None
    ultima: Array | None = None

    def as_dict(self) -> dict[str, Array]:
        """The computed Greeks (codes excluded), in the order of GREEK_NAMES."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name != "codes" and getattr(self, f.name) is not None
        }

    def keys(self) -> Iterator[str]:
        return iter(self.as_dict())

    def items(self) -> Iterator[tuple[str, Array]]:
        return iter(self.as_dict().items())

    def __getitem__(self, name: str) -> Array:
        value = getattr(self, name, None) if name in GREEK_NAMES else None
        if value is None:
            raise KeyError(name)
        return value


def per_vol_point(x: Array) -> Array:
    """Vega-like value per 1.00 of vol -> per vol point (1%)."""
    return x / 100.0


def per_day(x: Array, days_per_year: float = 365.0) -> Array:
    """Theta-like value per year -> per day (365 calendar days by default, 252 for trading days)."""
    return x / days_per_year


# --------------------------------------------------------------------------------------------------- helpers


def _erf(x: Array) -> Array:
    return torch.special.erf(x) if is_torch(x) else special.erf(x)


def _erfcx(x: Array) -> Array:
    """exp(x^2) erfc(x): O(1) for x >= 0, so the Gaussian factor of a tail price can be taken out exactly."""
    return torch.special.erfcx(x) if is_torch(x) else special.erfcx(x)


def _where(xp: Any, cond: Array, a: Array | float, b: Array | float) -> Array:
    return xp.where(cond, a, b)


def _clip(xp: Any, x: Array, lo: float | None, hi: float | None) -> Array:
    if xp is np:
        return np.clip(x, lo, hi)
    return xp.clamp(x, min=lo, max=hi)


def _errstate(xp: Any) -> contextlib.AbstractContextManager[Any]:
    """numpy: the kernel handles inf/underflow explicitly, so per-element warnings would only be noise."""
    return np.errstate(all="ignore") if xp is np else contextlib.nullcontext()


@dataclass
class _Inputs:
    xp: Any
    S: Array
    K: Array
    T: Array
    r: Array
    q: Array
    sigma: Array
    sign: Array  # +1 call, -1 put (float)
    bad: Array  # bool
    codes: Array


def _prepare(S: Any, K: Any, T: Any, r: Any, q: Any, sigma: Any, is_call: Any) -> _Inputs:
    """Broadcast, validate per row, and replace bad rows by harmless values (NaN-ed at the end).

    Replacing them keeps the kernel free of inf/NaN, which also keeps torch gradients of the good rows clean.
    """
    S, K, T, r, q, sigma, call = asarrays(S, K, T, r, q, sigma, is_call)
    xp = namespace(S)
    finite = xp.isfinite(S) & xp.isfinite(K) & xp.isfinite(T) & xp.isfinite(r) & xp.isfinite(q)
    finite = finite & xp.isfinite(sigma) & xp.isfinite(call)
    ok = int(OptionError.OK)
    flag_ok = (call == 0) | (call == 1)  # 7 is not a call: anything but True/False/1/0 is a coded bad row
    codes = _where(xp, ~flag_ok, int(OptionError.BAD_OPTION_TYPE), ok)
    codes = _where(xp, sigma < 0, int(OptionError.NEGATIVE_VOL), codes)
    codes = _where(xp, T < 0, int(OptionError.NEGATIVE_EXPIRY), codes)
    codes = _where(xp, K <= 0, int(OptionError.NON_POSITIVE_STRIKE), codes)
    codes = _where(xp, S <= 0, int(OptionError.NON_POSITIVE_SPOT), codes)
    codes = _where(xp, ~finite, int(OptionError.NAN_INPUT), codes)
    codes = codes.astype(np.int8) if xp is np else codes.to(xp.int8)
    bad = codes != ok
    S = _where(xp, bad, 1.0, S)
    K = _where(xp, bad, 1.0, K)
    T = _where(xp, bad, 1.0, T)
    r = _where(xp, bad, 0.0, r)
    q = _where(xp, bad, 0.0, q)
    sigma = _where(xp, bad, 0.2, sigma)
    sign = _where(xp, call > 0.5, 1.0, -1.0)
    if xp is not np:
        sign = sign.to(S.dtype)
    return _Inputs(xp, S, K, T, r, q, sigma, sign, bad, codes)


def _resolve_which(which: Iterable[str] | None) -> frozenset[str]:
    if which is None:
        return frozenset(GREEK_NAMES)
    wanted = frozenset([which] if isinstance(which, str) else which)
    unknown = wanted - frozenset(GREEK_NAMES)
    if unknown:
        raise ValueError(f"unknown Greek(s) {sorted(unknown)}; choose from {GREEK_NAMES}")
    return wanted


def _kernel(inp: _Inputs, wanted: frozenset[str]) -> dict[str, Array]:
    """BSM price and the Greeks in `wanted`, for already validated and sanitised inputs (see module doc)."""
    xp, S, K, T, r, q, sigma, t = inp.xp, inp.S, inp.K, inp.T, inp.r, inp.q, inp.sigma, inp.sign
    out: dict[str, Array] = {}
    with _errstate(xp):
        Dq = xp.exp(-q * T)
        Df = xp.exp(-r * T)
        A = S * Dq  # spot leg, = F e^{-rT}
        B = K * Df  # strike leg
        x = xp.log(S / K) + (r - q) * T  # ln(F/K)
        em1 = xp.expm1(x)
        sqT_raw = xp.sqrt(_where(xp, T > 0, T, 1.0))  # never sqrt(0): its gradient is inf
        s_raw = sigma * sqT_raw
        deg = (T <= 0) | ~(s_raw > 0)  # T == 0, sigma == 0, or s underflows
        Ts = _where(xp, deg, 1.0, T)
        sig = _where(xp, deg, 1.0, sigma)
        sqT = xp.sqrt(Ts)
        s = sig * sqT
        d1 = x / s + 0.5 * s
        d2 = x / s - 0.5 * s
        # step function of the s -> 0 limit: 1 in the money, 1/2 at the money, 0 out of it
        H = _where(xp, t * x > 0, 1.0, _where(xp, x == 0, 0.5, 0.0))

        if "price" in wanted:
            # out-of-the-money side: call if x <= 0, put if x > 0. t_o (not abs) fixes the signs below, so that
            # torch autograd also differentiates correctly exactly at x == 0 and on the branch boundaries.
            t_o = _where(xp, x > 0, -1.0, 1.0)
            straddle = (d2 < 0) & (d1 > 0)
            v_mid = 0.5 * (A * _erf(d1 * _INV_SQRT2) - B * _erf(d2 * _INV_SQRT2)) + 0.5 * t_o * B * em1
            a1 = _clip(xp, -t_o * d1 * _INV_SQRT2, 0.0, None)  # >= 0 in the tail; clipped elsewhere (unused)
            a2 = _clip(xp, -t_o * d2 * _INV_SQRT2, 0.0, None)
            v_tail = 0.5 * B * xp.exp(-0.5 * d2 * d2) * (t_o * (_erfcx(a1) - _erfcx(a2)))
            v_otm = _where(xp, straddle, v_mid, v_tail)
            price = v_otm + _where(xp, t * t_o < 0, t * B * em1, 0.0)  # parity for the other side
            out["price"] = _where(xp, deg, H * t * B * em1, price)

        rest = wanted - {"price"}
        if not rest:
            return out

        # Products are formed before divisions by s, sigma or T so that a zero density times a huge 1/s stays
        # 0 instead of 0 * inf = NaN; wherever the density is nonzero, |d1| < 39 bounds every d1 factor.
        d1c = _clip(xp, d1, -_D_CLAMP, _D_CLAMP)
        d2c = _clip(xp, d2, -_D_CLAMP, _D_CLAMP)
        n1 = _INV_SQRT_2PI * xp.exp(-0.5 * d1c * d1c)
        N1 = norm_cdf(t * d1c) if rest & {"delta", "theta", "rho_q", "charm"} else None
        N2 = norm_cdf(t * d2c) if rest & {"theta", "rho"} else None
        zero = xp.zeros_like(S)
        gamma = (Dq / S) * (n1 / s)
        vega = (A * sqT) * n1
        d1d2 = d1c * d2c

        def times_dd1_dT(f: Array) -> Array:
            """f * partial d1 / partial T, with partial d1 / partial T = (r - q) / s - d2 / (2 T)."""
            return (f * (r - q)) / s - 0.5 * (f * d2c) / Ts

        def put(name: str, value: Array, limit: Array) -> None:
            out[name] = _where(xp, deg, limit, value)

        if "delta" in rest:
            put("delta", t * Dq * N1, t * Dq * H)
        if "gamma" in rest:
            put("gamma", gamma, zero)
        if "vega" in rest:
            put("vega", vega, _where(xp, (x == 0) & (T > 0), A * sqT_raw * _INV_SQRT_2PI, 0.0))
        if "theta" in rest:
            theta = -0.5 * (A * n1 * sig) / sqT + t * (q * A * N1 - r * B * N2)
            put("theta", theta, t * (q * A - r * B) * H)
        if "rho" in rest:
            put("rho", t * T * B * N2, t * T * B * H)
        if "rho_q" in rest:
            put("rho_q", -t * T * A * N1, -t * T * A * H)
        if "vanna" in rest:
            put("vanna", -(Dq * n1 * d2c) / sig, zero)
        if "charm" in rest:
            put("charm", t * q * Dq * N1 - times_dd1_dT(Dq * n1), t * q * Dq * H)
        if "vomma" in rest:
            put("vomma", (vega * d1d2) / sig, zero)
        if "veta" in rest:
            put("veta", q * vega + d1c * times_dd1_dT(vega) - 0.5 * vega / Ts, zero)
        if "speed" in rest:
            put("speed", -((gamma * d1c) / s + gamma) / S, zero)
        if "zomma" in rest:
            put("zomma", (gamma * (d1d2 - 1.0)) / sig, zero)
        if "color" in rest:
            put("color", q * gamma + d1c * times_dd1_dT(gamma) + 0.5 * gamma / Ts, zero)
        if "ultima" in rest:
            poly = d1d2 * (1.0 - d1d2) + d1c * d1c + d2c * d2c
            put("ultima", -((vega * poly) / sig) / sig, zero)
    return out


def _nan_bad(inp: _Inputs, values: dict[str, Array]) -> dict[str, Array]:
    """NaN every output of a bad row; a valid row with a non-finite output becomes OVERFLOW first (module doc)."""
    xp = inp.xp
    overflow = None
    for v in values.values():
        nonfinite = ~xp.isfinite(v)
        overflow = nonfinite if overflow is None else overflow | nonfinite
    if overflow is not None:
        overflow = overflow & ~inp.bad
        inp.codes = _where(xp, overflow, int(OptionError.OVERFLOW), inp.codes)
        inp.codes = inp.codes.astype(np.int8) if xp is np else inp.codes.to(xp.int8)
        inp.bad = inp.bad | overflow
    return {k: _where(xp, inp.bad, math.nan, v) for k, v in values.items()}


# ------------------------------------------------------------------------------------------------ public API


def bsm_price_checked(S: Any, K: Any, T: Any, r: Any, q: Any, sigma: Any, is_call: Any) -> tuple[Array, Array]:
    """BSM price with a continuous dividend yield, and an `OptionError` code per row (NaN price where != 0).

    Inputs broadcast; numpy in -> numpy out (float64), torch in -> torch out (same device and dtype).
    """
    inp = _prepare(S, K, T, r, q, sigma, is_call)
    price = _nan_bad(inp, _kernel(inp, frozenset({"price"})))["price"]
    return price, inp.codes


def bsm_price(S: Any, K: Any, T: Any, r: Any, q: Any, sigma: Any, is_call: Any) -> Array:
    """BSM price with a continuous dividend yield; invalid rows are NaN (see `bsm_price_checked` for why)."""
    return bsm_price_checked(S, K, T, r, q, sigma, is_call)[0]


def bsm_greeks(
    S: Any,
    K: Any,
    T: Any,
    r: Any,
    q: Any,
    sigma: Any,
    is_call: Any,
    *,
    which: Iterable[str] | None = None,
) -> Greeks:
    """Price and Greeks (GREEK_NAMES, or the subset `which`) in one pass over shared intermediates."""
    wanted = _resolve_which(which)
    inp = _prepare(S, K, T, r, q, sigma, is_call)
    values = _nan_bad(inp, _kernel(inp, wanted))
    return Greeks(codes=inp.codes, **values)


def black76_price_checked(F: Any, K: Any, T: Any, r: Any, sigma: Any, is_call: Any) -> tuple[Array, Array]:
    """Black-76 price of an option on a forward/future F (discounted at r), with reason codes."""
    return bsm_price_checked(F, K, T, r, r, sigma, is_call)


def black76_price(F: Any, K: Any, T: Any, r: Any, sigma: Any, is_call: Any) -> Array:
    """Black-76 price: the BSM kernel with S = F and q = r (one kernel for both models)."""
    return bsm_price_checked(F, K, T, r, r, sigma, is_call)[0]


def black76_greeks(
    F: Any,
    K: Any,
    T: Any,
    r: Any,
    sigma: Any,
    is_call: Any,
    *,
    which: Iterable[str] | None = None,
) -> Greeks:
    """Black-76 price and Greeks, derivatives with respect to F (delta, gamma, ...) holding F fixed in T and r.

    With q = r, BSM's spot-fixed theta/charm/veta/color are already forward-fixed. rho = dV/dr with F fixed
    is BSM rho + dividend rho (= -T V); `rho_q` is not defined for Black-76 and is left None.
    """
    wanted = _resolve_which(which)
    need = set(wanted - {"rho_q"})
    if "rho" in need:
        need |= {"rho_q"}
    inp = _prepare(F, K, T, r, r, sigma, is_call)
    values = _kernel(inp, frozenset(need))
    if "rho" in values:
        with _errstate(inp.xp):  # inf + -inf on an overflowing row: coded OVERFLOW by _nan_bad
            values["rho"] = values["rho"] + values["rho_q"]
    values.pop("rho_q", None)
    values = _nan_bad(inp, values)
    return Greeks(codes=inp.codes, **values)
