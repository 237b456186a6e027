"""Implied-volatility benchmark: vectorised Let's Be Rational on one core against py_vollib.

1. Implied vols per second for a batch of --n options (default 1,000,000) through ``implied_vol`` (the full BSM
   entry: validation, forward, normalisation, solve), numpy on one core (thread pools pinned to 1 before numpy
   is imported). The grid covers the wings: sigma log-uniform in [0.01, 3], T log-uniform in [1 day, 10 years],
   ln(F/K) uniform in [-10, 10] standard deviations, calls and puts, r and q random.
2. The worst relative error of the round trip sigma -> price -> sigma over that batch, on the rows where the price
   determines sigma to 1e-13 (eps * cond <= 1e-13, cond the sensitivity of sigma to the price's, F's and K's
   rounding; see tests/test_options_implied_vol.py), and the worst error in units of eps * cond over all rows.
3. Peer, same run: py_vollib's implied_volatility (pure-Python Let's Be Rational, 2014) looped over a subset of
   --peer-n rows; its rate, our speed ratio and both worst errors on that subset.

    .venv/bin/python benchmarks/options_iv.py [--n 1000000] [--peer-n 20000] [--repeats 5]

The machine is noisy: rates are medians over repeats.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import math
import statistics
import time
import warnings

import numpy as np
from scipy.special import ndtr

from tradesys.quant.options.errors import OptionError
from tradesys.quant.options.implied_vol import implied_vol, normalised_black

EPS = float(np.finfo(np.float64).eps)


def make_batch(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Options over the wings with accurate prices (our normalised Black, checked against mpmath in the tests)."""
    rng = np.random.default_rng(seed)
    sigma = np.exp(rng.uniform(math.log(0.01), math.log(3.0), n))
    T = np.exp(rng.uniform(math.log(1.0 / 365.0), math.log(10.0), n))
    z = rng.uniform(-10.0, 10.0, n)
    call = rng.uniform(size=n) < 0.5
    S = rng.uniform(10.0, 500.0, n)
    r = rng.uniform(-0.01, 0.08, n)
    q = rng.uniform(0.0, 0.05, n)
    F = S * np.exp((r - q) * T)
    s = sigma * np.sqrt(T)
    K = F * np.exp(-z * s)
    theta = np.where(call, 1.0, -1.0)
    df = np.exp(-r * T)
    x = np.log(F / K)
    price = df * np.sqrt(F) * np.sqrt(K) * normalised_black(x, s, theta)
    d1 = x / s + 0.5 * s
    d2 = d1 - s
    vega = df * F * np.exp(-0.5 * d1 * d1) / math.sqrt(2.0 * math.pi) * np.sqrt(T)
    with np.errstate(all="ignore"):
        cond = (price + df * (F * ndtr(theta * d1) + K * ndtr(theta * d2))) / (sigma * vega)
    tv = normalised_black(-np.abs(x), s)
    domain = (EPS * cond <= 1e-13) & (tv > 1e-280)
    return {"price": price, "S": S, "K": K, "T": T, "r": r, "q": q, "call": call, "sigma": sigma, "cond": cond,
            "domain": domain}  # fmt: skip


def errors(got: np.ndarray, b: dict[str, np.ndarray], rows: np.ndarray | slice) -> tuple[float, float, int]:
    """(worst relative error in the domain, worst error / (eps cond) over solved rows, rows in the domain).

    Solved rows exclude those answered 0.0: a price equal in double to its intrinsic value (the time value is
    below the intrinsic's rounding), for which 0.0 is the specified answer; `main` reports them separately.
    """
    sig, cond, dom = b["sigma"][rows], b["cond"][rows], b["domain"][rows]
    with np.errstate(all="ignore"):
        rel = np.abs(got / sig - 1.0)
    solved = np.isfinite(got) & (got > 0.0)
    worst_dom = float(np.max(rel[dom & solved])) if (dom & solved).any() else math.nan
    worst_cond = float(np.max(rel[solved] / (EPS * cond[solved]))) if solved.any() else math.nan
    return worst_dom, worst_cond, int(dom.sum())


def run_ours(b: dict[str, np.ndarray]) -> tuple[float, np.ndarray, np.ndarray]:
    t0 = time.perf_counter()
    sigma, codes = implied_vol(b["price"], b["S"], b["K"], b["T"], b["r"], b["q"], b["call"])
    return time.perf_counter() - t0, sigma, codes


def run_py_vollib(b: dict[str, np.ndarray], rows: np.ndarray) -> tuple[float, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from py_vollib.black_scholes_merton.implied_volatility import implied_volatility as pv_iv
    args = [
        (float(b["price"][i]), float(b["S"][i]), float(b["K"][i]), float(b["T"][i]), float(b["r"][i]),
         float(b["q"][i]), "c" if b["call"][i] else "p")
        for i in rows
    ]  # fmt: skip
    out = np.empty(len(args))
    t0 = time.perf_counter()
    for j, a in enumerate(args):
        try:
            out[j] = pv_iv(*a)
        except Exception:  # py_vollib raises for prices it cannot invert (below intrinsic / above maximum)
            out[j] = math.nan
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--peer-n", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    b = make_batch(args.n)
    run_ours({k: v[:1000] for k, v in b.items()})  # warm-up (imports, first-call costs)
    times, sigma, codes = [], None, None
    for _ in range(args.repeats):
        dt, sigma, codes = run_ours(b)
        times.append(dt)
    t_ours = statistics.median(times)
    rate = args.n / t_ours
    worst_dom, worst_cond, n_dom = errors(sigma, b, slice(None))
    counts = {OptionError(c).name: int(k) for c, k in zip(*np.unique(codes, return_counts=True), strict=True)}
    print(f"implied_vol (numpy, 1 thread): {args.n:,} options, median {t_ours:.3f} s over {args.repeats} "
          f"(min {min(times):.3f}, max {max(times):.3f})")  # fmt: skip
    print(f"  rate               {rate / 1e6:.3f} M implied vols/s")
    print(f"  codes              {counts}")
    print(f"  worst rel error    {worst_dom:.3e} on the {n_dom:,} rows with eps*cond <= 1e-13")
    print(f"  worst error        {worst_cond:.1f} x eps*cond over all solved rows")
    zero = (codes == OptionError.OK) & (sigma == 0.0)
    if zero.any():
        print(f"  at intrinsic       {int(zero.sum()):,} rows priced at their intrinsic value in double -> 0.0 "
              f"(smallest eps*cond among them {float(np.min(EPS * b['cond'][zero])):.1e})")  # fmt: skip

    rows = np.random.default_rng(1).choice(args.n, size=min(args.peer_n, args.n), replace=False)
    peer_times, theirs = [], None
    for _ in range(args.repeats):
        dt, theirs = run_py_vollib(b, rows)
        peer_times.append(dt)
    t_peer = statistics.median(peer_times)
    peer_rate = len(rows) / t_peer
    p_dom, p_cond, p_n = errors(theirs, b, rows)
    o_dom, o_cond, _ = errors(sigma[rows], b, rows)
    dom_rows = b["domain"][rows]
    with np.errstate(all="ignore"):
        agree = np.abs(theirs / sigma[rows] - 1.0)[dom_rows & np.isfinite(theirs)]
    print(f"py_vollib (pure-Python LBR, loop): {len(rows):,}-row subset, median {t_peer:.3f} s")
    print(f"  rate               {peer_rate / 1e3:.1f} k implied vols/s  -> ours is {rate / peer_rate:.0f}x")
    print(f"  worst rel error    py_vollib {p_dom:.3e}, ours {o_dom:.3e} on the subset's {p_n:,} domain rows")
    print(f"  worst error        py_vollib {p_cond:.1f}, ours {o_cond:.1f} x eps*cond (solved rows)")
    fails = np.isnan(theirs)
    ours_ok = codes[rows] == OptionError.OK
    print(f"  failures           py_vollib raised on {int(fails.sum())} rows ({int((fails & dom_rows).sum())} in the "
          f"domain); ours gave a code on {int((~ours_ok).sum())}, raised on none")  # fmt: skip
    print(f"  agreement          max |ours/py_vollib - 1| = {float(agree.max()):.3e} on domain rows")


if __name__ == "__main__":
    main()
