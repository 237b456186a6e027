"""Implied volatility to full double precision, vectorised: Peter Jäckel's "Let's Be Rational" (2015/2016).

Why this algorithm: a Newton solver on the Black price stalls in the wings (vega underflows, the price is a
difference of nearly equal terms) and needs a bracket and many iterations. Let's Be Rational instead

1. works in normalised units, beta = undiscounted price / sqrt(F K) and x = ln(F/K), and maps every option onto an
   out-of-the-money call (x <= 0) by subtracting the normalised intrinsic 2 sinh(|x|/2) (computed through expm1,
   so it does not cancel) and using call/put symmetry b(x, s) = b_put(-x, s);
2. evaluates the normalised Black function b(x, s), s = sigma sqrt(T), accurately in all regions: an asymptotic
   expansion for large negative h = x/s (where the erfcx difference below would cancel), a small-t expansion for
   t = s/2 < 0.21 (idem), and elsewhere Cody's scaled complementary error function erfcx so that only one
   exponential (of a well conditioned argument) is taken and the two Black terms are not formed separately;
3. starts from a four-branch initial guess: rational cubic interpolation (Delbourgo-Gregory, shape preserving) of
   s(beta) between the anchor points s_l < s_c = sqrt(2|x|) < s_h in the middle, and of the transformed
   functions f_lower / f_upper (whose inverses are explicit) in the two outer branches;
4. finishes with two Householder(3) steps on the objective of the branch: 1/ln b(s) - 1/ln beta in the lowest
   branch, ln((b_max - beta)/(b_max - b(s))) in the highest, b(s) - beta in between. The guess is close enough
   that two steps reach machine precision; a third step is taken only for rows whose second step was still
   larger than 1e-6 relative (measured: needed only for |ln(F/K)| > ~860, far beyond any market).

Two details beyond the 2014 reference code keep the far wings exact: the highest branch works with the complement
b_max - b(s) computed as a sum of positive terms (not b_max minus a number close to it), and the lowest branch
takes ln b and b'/b in log space where b is below 1e-250 (a subnormal b has lost its digits; ln b has not).
Limits: a subnormal beta (below 2.2e-308) cannot give full precision; a nonzero |x| below 1e-16 (no ratio of two
doubles F/K gives one) together with s below ~1e-150 is outside the guess's design range.

Vectorisation: every stage is array arithmetic; the three regions of b(x, s) and the rows that need a third step
are gathered by index (boolean compaction), so no row pays for a branch it does not take. numpy inputs are solved
in chunks of ``CHUNK`` rows so the temporaries stay in cache. torch float64 tensors run the same code natively
(``torch.special.erfcx/ndtr/ndtri``; the cube root, which torch lacks, is ``pow(., 1/3)`` on positive values; it
only feeds the initial guess), on the tensor's device.

Conventions as in ``tradesys.quant.options``: invalid rows come back NaN with an ``OptionError`` code (int8).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import special

from tradesys.quant.backend import Array, asarrays, is_torch, namespace
from tradesys.quant.options.errors import OptionError

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]

__all__ = [
    "INTRINSIC_RTOL",
    "implied_normalised_vol",
    "implied_vol",
    "implied_vol_black76",
    "normalised_black",
    "normalised_intrinsic",
    "normalised_vega",
]

# --------------------------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------------------------

EPS = float(np.finfo(np.float64).eps)
DBL_MIN = float(np.finfo(np.float64).tiny)
DBL_MAX = float(np.finfo(np.float64).max)
SQRT_DBL_MAX = math.sqrt(DBL_MAX)
ONE_OVER_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
ONE_OVER_SQRT2 = 1.0 / math.sqrt(2.0)
SQRT_PI_OVER_2 = math.sqrt(math.pi / 2.0)
SQRT3 = math.sqrt(3.0)
TWO_PI = 2.0 * math.pi
TWO_PI_OVER_SQRT27 = 2.0 * math.pi / math.sqrt(27.0)
PI_OVER_6 = math.pi / 6.0

#: h = x/s below this (and t small enough) uses the asymptotic expansion of b.
ASYMPTOTIC_H = -10.0
#: t = s/2 below this uses the small-t expansion of b: 2 eps^(1/16) (Jäckel), about 0.21.
SMALL_T = 2.0 * EPS ** (1.0 / 16.0)
#: Cody's switch between erfc and erfcx.
CODY_THRESHOLD = 0.46875
#: Bounds of the rational cubic control parameter (r > -1; r at the maximum means linear interpolation).
R_MIN = -(1.0 - math.sqrt(EPS))
R_MAX = 2.0 / (EPS * EPS)
#: A price below the discounted intrinsic by more than INTRINSIC_RTOL * max(discounted F, discounted K) is an
#: error; within it the price counts as at intrinsic (vol 0). 32 ulps of the larger of the two terms the
#: intrinsic is the difference of: rounding of the caller's F, K, discounting and of our own normalisation.
INTRINSIC_RTOL = 32.0 * EPS
#: numpy rows per chunk, so the temporaries of the whole pipeline stay in cache (16k-32k measured best).
CHUNK = 32768
#: A third Householder step for rows whose second step was larger than this (relative): after two steps from
#: Jäckel's guess this is essentially never the case in the normal domain.
THIRD_STEP_RTOL = 1e-6
#: The lowest branch's objective 1/ln b is evaluated in log space where b is below this (subnormal b has lost
#: digits; ln b has not).
LOG_SPACE_BELOW = 1e-250


def _asymptotic_coefficients(n: int = 17) -> list[list[float]]:
    """Coefficients of A(h, t) = sum_k (2k-1)!! q^k P_k(e) in Jäckel's nested form.

    The 17th-order nested expansion of LBR is S = P0 + q (P1 + 3 q (P2 + 5 q (P3 + ...))) with
    P_k(e) = (-1)^k 2 sum_j C(2k+1, 2j+1) e^j: generating them avoids a 17-level literal.
    """
    return [[(-1.0) ** k * 2.0 * math.comb(2 * k + 1, 2 * j + 1) for j in range(k + 1)] for k in range(n + 1)]


_ASYM = _asymptotic_coefficients()

# Small-t expansion: expansion = 2t (a + w (c1 + w (c2 + ...))) with each c_k a polynomial in h2 and a, written
# (as in LBR) as nested pairs; (const, coefficient of a) for each power of h2, innermost last, and the divisor.
_SMALL_T = [
    ([(-1.0, 3.0), (0.0, 1.0)], 6.0),
    ([(-7.0, 15.0), (-1.0, 10.0), (0.0, 1.0)], 120.0),
    ([(-57.0, 105.0), (-18.0, 105.0), (-1.0, 21.0), (0.0, 1.0)], 5040.0),
    ([(-561.0, 945.0), (-285.0, 1260.0), (-33.0, 378.0), (-1.0, 36.0), (0.0, 1.0)], 362880.0),
    ([(-6555.0, 10395.0), (-4680.0, 17325.0), (-840.0, 6930.0), (-52.0, 990.0), (-1.0, 55.0), (0.0, 1.0)], 39916800.0),
    (
        [
            (-89055.0, 135135.0),
            (-82845.0, 270270.0),
            (-20370.0, 135135.0),
            (-1926.0, 25740.0),
            (-75.0, 2145.0),
            (-1.0, 78.0),
            (0.0, 1.0),
        ],
        6227020800.0,
    ),
]


# --------------------------------------------------------------------------------------------------------------
# numpy / torch primitives that differ between the two
# --------------------------------------------------------------------------------------------------------------


class _Ops:
    """The few operations whose numpy and torch spellings differ; everything else is ``xp.<name>``."""

    def __init__(self, like: Any) -> None:
        self.torch = is_torch(like)
        self.xp = namespace(like)

    def erfcx(self, a: Array) -> Array:
        return torch.special.erfcx(a) if self.torch else special.erfcx(a)

    def ndtr(self, a: Array) -> Array:
        return torch.special.ndtr(a) if self.torch else special.ndtr(a)

    def ndtri(self, a: Array) -> Array:
        return torch.special.ndtri(a) if self.torch else special.ndtri(a)

    def cbrt(self, a: Array) -> Array:
        """Cube root of a non-negative array (torch has no cbrt; pow is fine, it only feeds the initial guess)."""
        return torch.pow(a, 1.0 / 3.0) if self.torch else np.cbrt(a)

    def maximum(self, a: Array, b: Array | float) -> Array:
        if self.torch:
            return torch.clamp(a, min=b) if isinstance(b, float) else torch.maximum(a, b)
        return np.maximum(a, b)

    def nonzero(self, mask: Array) -> Array:
        return torch.nonzero(mask, as_tuple=True)[0] if self.torch else np.flatnonzero(mask)

    def count(self, mask: Array) -> int:
        return int(torch.count_nonzero(mask)) if self.torch else int(np.count_nonzero(mask))


def _on_subset(ops: _Ops, mask: Array, n_true: int, fn: Any, outs: tuple[Array, ...], *args: Array) -> None:
    """outs[i][mask] = fn(*args[mask])[i], skipping the gather when the mask is all true."""
    if n_true == 0:
        return
    if n_true == outs[0].shape[0]:
        for o, v in zip(outs, fn(*args), strict=True):
            o[...] = v
        return
    idx = ops.nonzero(mask)
    for o, v in zip(outs, fn(*(a[idx] for a in args)), strict=True):
        o[idx] = v


# --------------------------------------------------------------------------------------------------------------
# The normalised Black function, x <= 0 (out-of-the-money call)
# --------------------------------------------------------------------------------------------------------------


def _asymptotic(ops: _Ops, h: Array, t: Array, e_half: Array) -> tuple[Array]:
    """b for h < -10 and t small relative to |h| (Jäckel's 17th-order expansion, A&S 26.2.12).

    b = exp(-(h^2+t^2)/2)/sqrt(2 pi) * (t/r) * A with r = (h+t)(h-t): one exponential and no cancellation, where
    the erfcx difference would lose |h|/t of the digits.
    """
    e = (t / h) ** 2
    r = (h + t) * (h - t)
    q = (h / r) ** 2
    acc = None
    for k in range(len(_ASYM) - 1, 0, -1):
        coeffs = _ASYM[k]
        pk = coeffs[-1] * e + coeffs[-2]
        for c in reversed(coeffs[:-2]):
            pk = pk * e + c
        acc = pk if acc is None else pk + (2 * k + 1) * q * acc
    s = _ASYM[0][0] + q * acc
    return (ops.maximum(ONE_OVER_SQRT_2PI * e_half * (t / r) * s, 0.0),)


def _small_t(ops: _Ops, h: Array, t: Array, e_half: Array) -> tuple[Array]:
    """b for t < 0.21: the Taylor expansion of Y(h+t) - Y(h-t) in t to 12th order, Y = Phi/phi.

    The erfcx difference would cancel to O(t) here; this keeps b to a few ulps with a = 1 + h Y(h) the only
    (mild, |h| <= 10) cancellation.
    """
    a = 1.0 + h * (SQRT_PI_OVER_2 * ops.erfcx(-ONE_OVER_SQRT2 * h))
    w = t * t
    h2 = h * h
    acc = None
    for pairs, div in reversed(_SMALL_T):
        c0, ca = pairs[-1]
        poly = c0 + ca * a  # innermost (0 + a)
        for c0, ca in reversed(pairs[:-1]):
            poly = (c0 + ca * a) + h2 * poly
        term = poly / div
        acc = term * w if acc is None else (term + acc) * w
    expansion = 2.0 * t * (a + acc)
    return (ops.maximum(ONE_OVER_SQRT_2PI * e_half * expansion, 0.0),)


def _cody(ops: _Ops, h: Array, t: Array, e_half: Array, bmax: Array) -> tuple[Array, Array]:
    """b elsewhere, 2b = exp(x/2) erfc(q1) - exp(-x/2) erfc(q2) with q1 = -(h+t)/sqrt2, q2 = (t-h)/sqrt2.

    erfc(q) = exp(-q^2) erfcx(q) turns each term into exp(-(h^2+t^2)/2) erfcx(q): one exponential and rational
    functions instead of products of tiny and huge factors (Jäckel, after Cody). For q1 below Cody's threshold the
    first term keeps the exact exp(x/2) = b_max (b is then close to b_max and its complement matters), with
    erfc(q1) = 2 - erfc(|q1|) for q1 < 0. The second term needs no switch: q2 < 0.47 only when h and t are small.

    Also returns the complement b_max - b = (b_max erfc(-q1) + exp(-x/2) erfc(q2))/2, a sum of positive terms:
    where b is close to b_max (q1 < 0) the upper branch needs it to more digits than b_max - b has.
    """
    xp = ops.xp
    q1 = -ONE_OVER_SQRT2 * (h + t)
    q2 = ONE_OVER_SQRT2 * (t - h)
    c1 = ops.erfcx(xp.abs(q1))
    e1c1 = xp.exp(-(q1 * q1)) * c1  # erfc(|q1|)
    first = xp.where(q1 >= CODY_THRESHOLD, e_half * c1, bmax * xp.where(q1 < 0.0, 2.0 - e1c1, e1c1))
    second = e_half * ops.erfcx(q2)
    b = ops.maximum(0.5 * (first - second), 0.0)
    return b, xp.where(q1 < 0.0, 0.5 * (bmax * e1c1 + second), bmax - b)


def _black_otm(ops: _Ops, x: Array, s: Array, bmax: Array, scaled: bool = False) -> tuple[Array, Array, Array]:
    """(b(x, s), exp(-(h^2+t^2)/2), b_max - b) for x <= 0, s > 0, bmax = exp(x/2); the second gives the vega.

    Region by region (Jäckel): asymptotic expansion where h < -10 and t < 0.21 + |h| - 10, small-t expansion where
    t < 0.21, Cody's erfcx form elsewhere. scaled=True returns G = b / exp(-(h^2+t^2)/2) in place of b (valid where
    h + t < -0.66, i.e. wherever b is far below b_max): ln b = ln G - (h^2+t^2)/2 without underflow.
    """
    xp = ops.xp
    h = x / s
    t = 0.5 * s
    e_half = xp.ones_like(h) if scaled else xp.exp(-0.5 * (h * h + t * t))
    asym = (h < ASYMPTOTIC_H) & (t + h < SMALL_T + ASYMPTOTIC_H)
    small = (t < SMALL_T) & ~asym
    n_asym = ops.count(asym)
    n_small = ops.count(small)
    n = h.shape[0]
    if n_asym + n_small == 0:
        b, comp = _cody(ops, h, t, e_half, bmax)
        return b, e_half, comp
    b = xp.empty_like(h)
    comp = xp.empty_like(h)
    _on_subset(ops, ~(asym | small), n - n_asym - n_small, lambda *a: _cody(ops, *a), (b, comp), h, t, e_half, bmax)
    _on_subset(ops, small, n_small, lambda *a: _small_t(ops, *a), (b,), h, t, e_half)
    _on_subset(ops, asym, n_asym, lambda *a: _asymptotic(ops, *a), (b,), h, t, e_half)
    # Outside the Cody region b <= b_max/2 or so: the plain difference is accurate there.
    comp = xp.where(asym | small, bmax - b, comp)
    return b, e_half, comp


# --------------------------------------------------------------------------------------------------------------
# Rational cubic interpolation (Delbourgo & Gregory 1985, as used in LBR)
# --------------------------------------------------------------------------------------------------------------


def _minimum_control(ops: _Ops, d_l: Array, d_r: Array, slope: Array, prefer: Array) -> Array:
    """Smallest control parameter that keeps the interpolant monotone/convex as the data are (DG 3.8, 3.18)."""
    xp = ops.xp
    monotonic = (d_l * slope >= 0.0) & (d_r * slope >= 0.0)
    convex = (d_l <= slope) & (slope <= d_r)
    concave = (d_l >= slope) & (slope >= d_r)
    shaped = convex | concave
    fallback = xp.where(prefer, xp.full_like(slope, R_MAX), -DBL_MAX)  # (no scalar/scalar where: torch -> float32)
    r1 = xp.where(monotonic, xp.where(xp.abs(slope) >= DBL_MIN, (d_r + d_l) / slope, fallback), -DBL_MAX)
    d_rl = d_r - d_l
    d_rs = d_r - slope
    d_sl = slope - d_l
    ok = (xp.abs(d_sl) >= DBL_MIN) & (xp.abs(d_rs) >= DBL_MIN)
    r2_shaped = xp.where(ok, ops.maximum(xp.abs(d_rl / d_rs), xp.abs(d_rl / d_sl)), fallback)
    r2 = xp.where(shaped, r2_shaped, xp.where(monotonic & prefer, xp.full_like(slope, R_MAX), -DBL_MAX))
    r = ops.maximum(ops.maximum(r1, r2), R_MIN)
    return xp.where(monotonic | shaped, r, R_MIN)


def _rational_cubic(
    ops: _Ops,
    at: Array,
    x_l: Array,
    x_r: Array,
    y_l: Array,
    y_r: Array,
    d_l: Array,
    d_r: Array,
    second: Array,
    left: Array,
    prefer: Array,
) -> Array:
    """Interpolate at `at`, with the control parameter fitted to `second` (the 2nd derivative) at the left or right
    end and floored for shape preservation (LBR's convex_rational_cubic_control_parameter_*)."""
    xp = ops.xp
    h = x_r - x_l
    slope = (y_r - y_l) / h
    num = 0.5 * h * second + d_r - d_l
    den = xp.where(left, slope - d_l, d_r - slope)
    r = xp.where(
        xp.abs(num) < DBL_MIN,
        0.0,
        xp.where(xp.abs(den) < DBL_MIN, xp.where(num > 0.0, xp.full_like(num, R_MAX), R_MIN), num / den),
    )
    r = ops.maximum(r, _minimum_control(ops, d_l, d_r, slope, prefer))
    t = (at - x_l) / h
    omt = 1.0 - t
    t2 = t * t
    omt2 = omt * omt
    cubic = (y_r * t2 * t + (r * y_r - h * d_r) * t2 * omt + (r * y_l + h * d_l) * t * omt2 + y_l * omt2 * omt) / (
        1.0 + (r - 3.0) * t * omt
    )
    out = xp.where(r >= R_MAX, y_r * t + y_l * omt, cubic)
    return xp.where(xp.abs(h) > 0.0, out, 0.5 * (y_l + y_r))


# --------------------------------------------------------------------------------------------------------------
# The solver on normalised out-of-the-money calls
# --------------------------------------------------------------------------------------------------------------


def _householder_step(
    ops: _Ops,
    beta: Array,
    ln_beta: Array,
    dmb: Array,
    x: Array,
    s: Array,
    bmax: Array,
    lower: Array | None,
    upper: Array | None,
) -> tuple[Array, Array, Array]:
    """One Householder(3) step per row on the row's objective. Returns (ds, b(s) > beta, bisect?).

    dmb = b_max - beta; `lower`/`upper` mark the rows of the outer objectives (None: no such rows in the batch).
    """
    xp = ops.xp
    b, e_half, comp = _black_otm(ops, x, s, bmax)
    bp = ONE_OVER_SQRT_2PI * e_half
    hs = x / s
    b_halley = hs * hs / s - 0.25 * s
    b_hh3 = b_halley * b_halley - 3.0 * (hs / s) ** 2 - 0.25
    # Middle branches: g = b - beta; newton = -g/g', halley = g''/g' = b''/b', hh3 = g'''/g' = b'''/b'.
    newton = (beta - b) / bp
    halley = b_halley
    hh3 = b_hh3
    bisect = None
    if lower is not None:
        # g = 1/ln b - 1/ln beta (lowest branch) and g = ln((bmax - beta)/(bmax - b)) (highest); one log for both.
        lg = xp.log(xp.where(lower, b, dmb / comp))
        # lowest
        bpob = bp / b
        tiny = lower & (b < LOG_SPACE_BELOW)
        if ops.count(tiny):
            # Far wing: b and b' are (nearly) subnormal and have lost digits; ln b and b'/b have not.
            idx = ops.nonzero(tiny)
            xs, ss = x[idx], s[idx]
            g, _, _ = _black_otm(ops, xs, ss, bmax[idx], scaled=True)
            hs_t = xs / ss
            lg[idx] = xp.log(g) - 0.5 * (hs_t * hs_t + 0.25 * ss * ss)
            bpob[idx] = ONE_OVER_SQRT_2PI / g
        inv_lb = 1.0 / lg
        c2 = 1.0 + 2.0 * inv_lb
        newton_l = (ln_beta - lg) * lg / ln_beta / bpob
        halley_l = b_halley - bpob * c2
        hh3_l = b_hh3 + 2.0 * bpob * bpob * (1.0 + 3.0 * inv_lb * (1.0 + inv_lb)) - 3.0 * b_halley * bpob * c2
        # highest
        gp = bp / comp
        newton_u = -lg / gp
        halley_u = b_halley + gp
        hh3_u = b_hh3 + gp * (2.0 * gp + 3.0 * b_halley)
        newton = xp.where(lower, newton_l, xp.where(upper, newton_u, newton))
        halley = xp.where(lower, halley_l, xp.where(upper, halley_u, halley))
        hh3 = xp.where(lower, hh3_l, xp.where(upper, hh3_u, hh3))
        # Underflow of b or of its complement: no usable step, bisect.
        bisect = (lower & ~((lg > -math.inf) & (bpob > 0.0))) | (upper & ((comp <= 0.0) | (bp <= DBL_MIN)))
    ds = newton * (1.0 + 0.5 * halley * newton) / (1.0 + newton * (halley + hh3 * newton / 6.0))
    bad = ~(xp.abs(ds) < math.inf)
    bisect = bad if bisect is None else bisect | bad
    # Near b_max compare complements (b > beta <=> b_max - b < b_max - beta): they have the digits there.
    too_high = xp.where(dmb < beta, comp < dmb, b > beta)
    return ds, too_high, bisect


def _solve_otm(ops: _Ops, beta: Array, x: Array, iterations: int = 2) -> Array:
    """s = sigma sqrt(T) with b(x, s) = beta, for x <= 0 and 0 < beta < exp(x/2) (1-D arrays)."""
    xp = ops.xp
    ax = -x
    bmax = xp.exp(0.5 * x)
    dmb = bmax - beta  # exact when beta > bmax/2 (Sterbenz), where it matters
    s_c = xp.sqrt(2.0 * ax)
    b_c, _, _ = _black_otm(ops, x, s_c, bmax)
    b_c = xp.where(ax > 0.0, b_c, 0.0)  # x = 0: s_c = 0, b_c = 0 (0/0 above)
    v_c = ONE_OVER_SQRT_2PI * bmax  # vega at s_c: exp(-(h^2+t^2)/2) = exp(x/2) there
    below_c = beta < b_c
    s_lh = xp.where(below_c, s_c - b_c / v_c, s_c + (bmax - b_c) / v_c)
    b_lh, e_lh, comp_lh = _black_otm(ops, x, s_lh, bmax)
    v_lh = ONE_OVER_SQRT_2PI * e_lh
    br1 = below_c & (beta < b_lh)  # lowest: interpolate f_lower
    br4 = ~below_c & (dmb < comp_lh)  # highest (beta > b_h): interpolate f_upper
    br2 = below_c & ~br1
    br3 = ~below_c & ~br4

    # f_lower (at s_l) and f_upper (at s_h) with their first two derivatives in beta; one ndtr for both.
    s = s_lh
    z = ax / (SQRT3 * s)
    y = z * z
    s2 = s * s
    cdf = ops.ndtr(xp.where(br1, -z, -0.5 * s))
    # lowest
    pdf_z = ONE_OVER_SQRT_2PI * xp.exp(-0.5 * y)
    fpp_l = (
        PI_OVER_6
        * y
        / (s2 * s)
        * cdf
        * (8.0 * SQRT3 * s * ax + (3.0 * s2 * (s2 - 8.0) - 8.0 * ax * ax) * cdf / pdf_z)
        * xp.exp(2.0 * y + 0.25 * s2)
    )
    fp_l = TWO_PI * y * cdf * cdf * xp.exp(y + 0.125 * s2)
    f_l = TWO_PI_OVER_SQRT27 * ax * (cdf * cdf * cdf)
    # highest
    w = (ax / s) ** 2
    fp_h = -0.5 * xp.exp(0.5 * w)
    fpp_h = SQRT_PI_OVER_2 * xp.exp(w + 0.125 * s2) * w / s

    # One rational cubic for the four branches. The highest is interpolated in the shifted abscissa beta - b_max
    # (= -dmb, from b_h - b_max = -comp_h to 0): the same interpolant, with the digits of the complements where
    # beta is close to b_max. (Not the upper middle one: beta there can be tiny, near the money.)
    zero = xp.zeros_like(s)
    left = br3 | br4
    prefer = br1 | br4
    at = xp.where(br4, -dmb, beta)
    x_l = xp.where(br1, zero, xp.where(br3, b_c, xp.where(br2, b_lh, -comp_lh)))
    x_r = xp.where(br1 | br3, b_lh, xp.where(br2, b_c, zero))
    y_l = xp.where(br1, zero, xp.where(br2, s_lh, xp.where(br3, s_c, cdf)))
    y_r = xp.where(br1, f_l, xp.where(br2, s_c, xp.where(br3, s_lh, zero)))
    inv_vc = 1.0 / v_c
    inv_vlh = 1.0 / v_lh
    d_l = xp.where(br1, 1.0, xp.where(br2, inv_vlh, xp.where(br3, inv_vc, fp_h)))
    d_r = xp.where(br1, fp_l, xp.where(br2, inv_vc, xp.where(br3, inv_vlh, -0.5)))
    second = xp.where(br1, fpp_l, xp.where(br4, fpp_h, zero))
    val = _rational_cubic(ops, at, x_l, x_r, y_l, y_r, d_l, d_r, second, left, prefer)
    # Outer branches interpolate f; when the interpolant fails (roundoff at extreme |x|), fall back to the quadratic
    # with the same end values and the end slope at 0 (lowest) or b_max (highest).
    val = xp.where(br4 & ~((fpp_h > -SQRT_DBL_MAX) & (fpp_h < SQRT_DBL_MAX)), -math.inf, val)
    tl = beta / b_lh
    f_low_q = (f_l * tl + b_lh * (1.0 - tl)) * tl
    omth = dmb / comp_lh  # 1 - (beta - b_h)/(b_max - b_h)
    f_up_q = (cdf * omth + 0.5 * (comp_lh - dmb)) * omth
    f = xp.where(val > 0.0, val, xp.where(br1, f_low_q, f_up_q))
    inv = ops.ndtri(xp.where(br1, ops.cbrt(f / (TWO_PI_OVER_SQRT27 * ax)), f))
    s = xp.where(br1, xp.abs(ax / (SQRT3 * inv)), xp.where(br4, -2.0 * inv, val))

    # Objectives and brackets for the Householder steps.
    lower = br1
    upper = br4 & (beta > 0.5 * bmax)
    s_left = xp.where(br1, DBL_MIN, xp.where(br3, s_c, s_lh))
    s_right = xp.where(br1 | br3, s_lh, xp.where(br2, s_c, DBL_MAX))
    ln_beta = xp.log(beta)
    any_outer = ops.count(lower | upper) > 0
    lo, up = (lower, upper) if any_outer else (None, None)
    ds = zero
    for it in range(iterations):
        if it > 0:
            # Not converged and outside the bracket (only for extreme |x|): bisect.
            out = ~((s > s_left) & (s < s_right)) & (xp.abs(ds) > EPS * s)
            s = xp.where(out, 0.5 * (s_left + s_right), s)
        ds, too_high, bisect = _householder_step(ops, beta, ln_beta, dmb, x, s, bmax, lo, up)
        s_right = xp.where(too_high & (s < s_right), s, s_right)
        s_left = xp.where(~too_high & (s > s_left), s, s_left)
        ds = xp.where(bisect, 0.5 * (s_left + s_right) - s, ds)
        ds = ops.maximum(ds, -0.5 * s)
        s = s + ds

    # A third step only where the second was still large (extreme inputs).
    again = ~(xp.abs(ds) <= THIRD_STEP_RTOL * s)
    if ops.count(again):
        idx = ops.nonzero(again)
        sa = s[idx]
        lo3, up3 = (lower[idx], upper[idx]) if any_outer else (None, None)
        ds3, _, bis3 = _householder_step(ops, beta[idx], ln_beta[idx], dmb[idx], x[idx], sa, bmax[idx], lo3, up3)
        ds3 = xp.where(bis3, 0.0, ds3)
        s[idx] = sa + ops.maximum(ds3, -0.5 * sa)
    return s


# --------------------------------------------------------------------------------------------------------------
# Public normalised functions
# --------------------------------------------------------------------------------------------------------------


def normalised_intrinsic(x: Array) -> Array:
    """2 sinh(x/2) for x >= 0 (the normalised intrinsic of a call, (F - K)/sqrt(F K)), without cancellation.

    e^{x/2} - e^{-x/2} = m (1 + e^{-x/2}) with m = expm1(x/2): no subtraction of nearly equal terms at small x.
    """
    xp = namespace(x)
    m = xp.expm1(0.5 * x)
    return m + m / (1.0 + m)


def normalised_black(x: Array, s: Array, theta: Array = 1.0) -> Array:
    """Normalised Black price b = price / (df sqrt(F K)) of a call (theta=+1) or put (theta=-1), x = ln(F/K),
    s = sigma sqrt(T) >= 0. In-the-money: the intrinsic plus the out-of-the-money b(-|x|, s) (put-call symmetry)."""
    x, s, theta = _float64(x, s, theta)
    ops = _Ops(x)
    xp = ops.xp
    shape = x.shape
    x, s, theta = x.reshape(-1), s.reshape(-1), theta.reshape(-1)
    ax = xp.abs(x)
    xo = -ax
    pos = s > 0.0
    with np.errstate(all="ignore"):
        sp = xp.where(pos, s, 1.0)
        tv_all, _, _ = _black_otm(ops, xo, sp, xp.exp(0.5 * xo))
        tv = xp.where(pos, tv_all, 0.0)
        itm = theta * x > 0.0
        out = tv + xp.where(itm, normalised_intrinsic(ax), 0.0)
        out = xp.where(xp.isnan(x) | xp.isnan(s) | (s < 0.0), math.nan, out)
    return out.reshape(shape)


def normalised_vega(x: Array, s: Array) -> Array:
    """db/ds = exp(-(h^2 + t^2)/2)/sqrt(2 pi), h = x/s, t = s/2 (the same for calls and puts)."""
    x, s = _float64(x, s)
    xp = namespace(x)
    with np.errstate(all="ignore"):
        h = xp.where(x == 0.0, 0.0, x / s)  # at the money the limit s -> 0 is 1/sqrt(2 pi), not 0/0
        return xp.where((s > 0.0) | (x == 0.0), ONE_OVER_SQRT_2PI * xp.exp(-0.5 * (h * h + 0.25 * s * s)), 0.0)


# --------------------------------------------------------------------------------------------------------------
# Batch driver: validation codes, mapping to OTM calls, compaction, chunking
# --------------------------------------------------------------------------------------------------------------


def _core(
    ops: _Ops,
    beta: Array,
    x: Array,
    theta: Array,
    codes: Array,
    below: Array,
    at_intrinsic: Array,
    above: Array,
) -> tuple[Array, Array]:
    """Normalised implied s for 1-D rows; `codes` holds input errors already, the flags the price checks."""
    xp = ops.xp
    codes = _set(ops, codes, below, OptionError.PRICE_BELOW_INTRINSIC)
    codes = _set(ops, codes, above, OptionError.PRICE_ABOVE_MAX)
    ax = xp.abs(x)
    itm = theta * x > 0.0
    beta_otm = beta - xp.where(itm, normalised_intrinsic(ax), 0.0)
    bmax = xp.exp(-0.5 * ax)
    # Rounding can put a price the price-space checks let through at or beyond a normalised bound.
    codes = _set(ops, codes, ~at_intrinsic & (beta_otm >= bmax), OptionError.PRICE_ABOVE_MAX)
    ok = codes == OptionError.OK
    zero = ok & (at_intrinsic | (beta_otm <= 0.0))
    solve = ok & ~zero
    s = xp.where(zero, xp.zeros_like(beta), math.nan)
    n_solve = ops.count(solve)
    if n_solve == s.shape[0]:
        s = _solve_otm(ops, beta_otm, -ax)
    elif n_solve:
        idx = ops.nonzero(solve)
        s[idx] = _solve_otm(ops, beta_otm[idx], -ax[idx])
    codes = _set(ops, codes, solve & ~(xp.abs(s) < math.inf), OptionError.NOT_CONVERGED)
    s = xp.where(codes == OptionError.OK, s, math.nan)
    return s, codes


def _codes_like(ops: _Ops, ref: Array) -> Array:
    if ops.torch:
        return torch.zeros(ref.shape, dtype=torch.int8, device=ref.device)
    return np.zeros(ref.shape, dtype=np.int8)


def _set(ops: _Ops, codes: Array, cond: Array, code: OptionError) -> Array:
    """First error wins: only rows still OK take the new code."""
    return ops.xp.where((codes == OptionError.OK) & cond, int(code), codes)


def _finite(xp: Any, *arrays: Array) -> Array:
    ok = xp.isfinite(arrays[0])
    for a in arrays[1:]:
        ok = ok & xp.isfinite(a)
    return ok


def _input_codes(ops: _Ops, arrays: tuple[Array, ...], spot: Array, K: Array, T: Array) -> Array:
    codes = _codes_like(ops, spot)
    codes = _set(ops, codes, ~_finite(ops.xp, *arrays), OptionError.NAN_INPUT)
    codes = _set(ops, codes, spot <= 0.0, OptionError.NON_POSITIVE_SPOT)
    codes = _set(ops, codes, K <= 0.0, OptionError.NON_POSITIVE_STRIKE)
    codes = _set(ops, codes, T < 0.0, OptionError.NEGATIVE_EXPIRY)
    return _set(ops, codes, T == 0.0, OptionError.ZERO_EXPIRY)


def _forward_block(
    ops: _Ops, price: Array, fwd: Array, fd: Array, K: Array, T: Array, df: Array, is_call: Array, codes: Array
) -> tuple[Array, Array]:
    """Shared by the BSM and Black-76 entries once the forward is known: checks in price space, then solve.

    fd is the call's upper bound as the caller states it (S e^{-qT}, F e^{-rT}), df = e^{-rT}.
    """
    xp = ops.xp
    call = is_call != 0.0
    kd = df * K  # the put's upper bound
    codes = _set(ops, codes, ~_finite(xp, fwd, df, fd, kd), OptionError.NAN_INPUT)
    valid = codes == OptionError.OK
    # Harmless values in invalid rows so nothing below propagates NaN into the checks.
    one = xp.ones_like(price)
    fwd = xp.where(valid, fwd, one)
    K = xp.where(valid, K, one)
    T = xp.where(valid, T, one)
    fd = xp.where(valid, fd, one)
    kd = xp.where(valid, kd, one)
    df = xp.where(valid, df, one)
    p = xp.where(valid, price, 0.5 * one)
    intrinsic = ops.maximum(xp.where(call, fd - kd, kd - fd), 0.0)
    below = p < intrinsic - INTRINSIC_RTOL * ops.maximum(fd, kd)
    at_intrinsic = p <= intrinsic
    above = p >= xp.where(call, fd, kd)
    sqrt_f = xp.sqrt(fwd)
    sqrt_k = xp.sqrt(K)
    x = xp.log(fwd / K)
    beta = (p / df) / (sqrt_f * sqrt_k)
    theta = xp.where(call, one, -1.0)
    s, codes = _core(ops, beta, x, theta, codes, below, at_intrinsic, above)
    return s / xp.sqrt(T), codes


def _bsm_block(
    ops: _Ops, price: Array, S: Array, K: Array, T: Array, r: Array, q: Array, is_call: Array
) -> tuple[Array, Array]:
    xp = ops.xp
    codes = _input_codes(ops, (price, S, K, T, r, q, is_call), S, K, T)
    fwd = S * xp.exp((r - q) * T)
    return _forward_block(ops, price, fwd, S * xp.exp(-q * T), K, T, xp.exp(-r * T), is_call, codes)


def _black76_block(
    ops: _Ops, price: Array, F: Array, K: Array, T: Array, r: Array, is_call: Array
) -> tuple[Array, Array]:
    codes = _input_codes(ops, (price, F, K, T, r, is_call), F, K, T)
    df = ops.xp.exp(-r * T)
    return _forward_block(ops, price, F, F * df, K, T, df, is_call, codes)


def _normalised_block(ops: _Ops, beta: Array, x: Array, theta: Array) -> tuple[Array, Array]:
    xp = ops.xp
    codes = _set(ops, _codes_like(ops, beta), ~_finite(xp, beta, x, theta), OptionError.NAN_INPUT)
    valid = codes == OptionError.OK
    beta = xp.where(valid, beta, 0.5)
    x = xp.where(valid, x, 0.0)
    theta = xp.where(theta < 0.0, -xp.ones_like(theta), 1.0)
    ax = xp.abs(x)
    intrinsic = xp.where(theta * x > 0.0, normalised_intrinsic(ax), 0.0)
    below = beta < intrinsic - INTRINSIC_RTOL * xp.exp(0.5 * ax)
    at_intrinsic = beta <= intrinsic
    above = beta >= xp.exp(0.5 * theta * x)
    return _core(ops, beta, x, theta, codes, below, at_intrinsic, above)


def _float64(*inputs: Any) -> tuple[Array, ...]:
    """Broadcast to float64 arrays or tensors: the thresholds and the precision target are double's (a float32
    tensor is promoted)."""
    return asarrays(*inputs, dtype=torch.float64 if namespace(*inputs) is not np else np.float64)


def _run(block: Any, *inputs: Array) -> tuple[Array, Array]:
    """Broadcast, flatten, and run `block` (numpy: in chunks of CHUNK rows so every temporary of the whole
    pipeline stays in cache; torch: in one pass, device-friendly). Returns (result, codes) in the input shape."""
    arrs = _float64(*inputs)
    ops = _Ops(arrs[0])
    shape = arrs[0].shape
    flat = [a.reshape(-1) for a in arrs]
    n = flat[0].shape[0]
    with np.errstate(all="ignore"):
        if ops.torch or n <= CHUNK:
            out, codes = block(ops, *flat)
        else:
            out = np.empty(n)
            codes = np.empty(n, dtype=np.int8)
            for i in range(0, n, CHUNK):
                out[i : i + CHUNK], codes[i : i + CHUNK] = block(ops, *(a[i : i + CHUNK] for a in flat))
    return out.reshape(shape), codes.reshape(shape)


def implied_vol(price: Array, S: Array, K: Array, T: Array, r: Array, q: Array, is_call: Array) -> tuple[Array, Array]:
    """Black-Scholes-Merton implied volatility with a continuous dividend yield, to full double precision.

    The discounted price is turned into the Black price on the forward F = S e^{(r-q)T}. Returns (sigma, codes)
    in the broadcast shape, numpy or torch like the inputs (codes int8); bad rows are NaN with an ``OptionError``
    code: NaN/inf input, S <= 0, K <= 0, T < 0, T == 0 (ZERO_EXPIRY), price below the discounted intrinsic by more
    than ``INTRINSIC_RTOL * max(S e^{-qT}, K e^{-rT})`` (PRICE_BELOW_INTRINSIC), price >= S e^{-qT} for a call or
    K e^{-rT} for a put (PRICE_ABOVE_MAX). A price at (or within the tolerance below) the intrinsic gives 0.0.
    """
    return _run(_bsm_block, price, S, K, T, r, q, is_call)


def implied_vol_black76(price: Array, F: Array, K: Array, T: Array, r: Array, is_call: Array) -> tuple[Array, Array]:
    """Black-76 implied volatility of an option on a forward/future F, discounted at r. Codes as `implied_vol`
    (a non-positive forward is NON_POSITIVE_SPOT; the call's upper bound is F e^{-rT})."""
    return _run(_black76_block, price, F, K, T, r, is_call)


def implied_normalised_vol(beta: Array, x: Array, theta: Array = 1.0) -> tuple[Array, Array]:
    """Normalised implied volatility s = sigma sqrt(T) from beta = undiscounted price / sqrt(F K), x = ln(F/K),
    theta = +1 call / -1 put: Jäckel's entry point. Codes: NaN/inf input; beta below the normalised intrinsic
    2 sinh(theta x / 2) by more than ``INTRINSIC_RTOL * exp(|x|/2)``; beta >= exp(theta x / 2)."""
    return _run(_normalised_block, beta, x, theta)
