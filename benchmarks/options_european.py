"""European options benchmark: price + all Greeks in one batch (tradesys) against QuantLib looping in Python.

tradesys: `bsm_greeks` on N options at once (price and 14 Greeks), numpy on one core (BLAS/OpenMP threads are
pinned to 1 before numpy is imported). Peer, measured in the same run: QuantLib's AnalyticEuropeanEngine on a
Python loop over the first `--ql-n` of the same options; each row is a distinct contract, so the loop builds
its VanillaOption (payoff, exercise date), updates the spot/rate/dividend/vol quotes, and reads NPV, delta,
gamma, vega, theta, rho, dividendRho and the rest the engine offers (deltaForward, elasticity, thetaPerDay,
strikeSensitivity, itmCashProbability). Accuracy: max |tradesys - QuantLib| of price, delta, gamma, vega on
that common subset (expiries are whole days, Actual365Fixed, so both see the same T).

    .venv/bin/python benchmarks/options_european.py [--n 1000000] [--ql-n 20000] [--repeats 5] [--torch]

--torch adds torch float64 on CPU (one thread) and, if CUDA is available, on the GPU (float64 and float32;
inputs already on the device, times synchronised). The machine is noisy: figures are medians over repeats.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np

from tradesys.quant.options.european import GREEK_NAMES, bsm_greeks


def make_options(n: int, seed: int) -> dict[str, np.ndarray]:
    """Random listed-style options: S in [50, 150], |ln(K/S)| <= 0.5, 1 day to 2 years, vol 5%..80%."""
    rng = np.random.default_rng(seed)
    S = rng.uniform(50.0, 150.0, n)
    days = rng.integers(1, 731, n)
    return {
        "S": S,
        "K": np.round(S * np.exp(rng.uniform(-0.5, 0.5, n)), 2),
        "days": days,
        "T": days / 365.0,
        "r": rng.uniform(0.0, 0.06, n),
        "q": rng.uniform(0.0, 0.04, n),
        "sigma": rng.uniform(0.05, 0.8, n),
        "call": rng.random(n) < 0.5,
    }


def timed(fn: Callable[[], object], repeats: int, sync: Callable[[], None] | None = None) -> tuple[float, object]:
    """Median wall time of fn() over repeats (after one untimed warm-up call), and the last result."""
    out = fn()
    times = []
    for _ in range(repeats):
        if sync:
            sync()
        t0 = time.perf_counter()
        out = fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def quantlib_loop(p: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    import QuantLib as ql

    today = ql.Date(15, 1, 2025)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    spot, rate, div, vol = ql.SimpleQuote(100.0), ql.SimpleQuote(0.0), ql.SimpleQuote(0.0), ql.SimpleQuote(0.2)
    rts = ql.YieldTermStructureHandle(ql.FlatForward(today, ql.QuoteHandle(rate), dc))
    dts = ql.YieldTermStructureHandle(ql.FlatForward(today, ql.QuoteHandle(div), dc))
    vts = ql.BlackVolTermStructureHandle(ql.BlackConstantVol(today, ql.NullCalendar(), ql.QuoteHandle(vol), dc))
    engine = ql.AnalyticEuropeanEngine(ql.BlackScholesMertonProcess(ql.QuoteHandle(spot), dts, rts, vts))
    names = ("price", "delta", "gamma", "vega", "theta", "rho", "rho_q")
    out = {k: np.empty(n) for k in names}
    S, K, days, r, q, sig, call = (p[k] for k in ("S", "K", "days", "r", "q", "sigma", "call"))
    for i in range(n):
        spot.setValue(float(S[i]))
        rate.setValue(float(r[i]))
        div.setValue(float(q[i]))
        vol.setValue(float(sig[i]))
        kind = ql.Option.Call if call[i] else ql.Option.Put
        opt = ql.VanillaOption(ql.PlainVanillaPayoff(kind, float(K[i])), ql.EuropeanExercise(today + int(days[i])))
        opt.setPricingEngine(engine)
        out["price"][i] = opt.NPV()
        out["delta"][i] = opt.delta()
        out["gamma"][i] = opt.gamma()
        out["vega"][i] = opt.vega()
        out["theta"][i] = opt.theta()
        out["rho"][i] = opt.rho()
        out["rho_q"][i] = opt.dividendRho()
        opt.deltaForward()
        opt.elasticity()
        opt.thetaPerDay()
        opt.strikeSensitivity()
        opt.itmCashProbability()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="options per tradesys batch")
    ap.add_argument("--ql-n", type=int, default=20_000, help="options priced by the QuantLib loop")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--torch", action="store_true", help="also torch on CPU (1 thread) and CUDA if available")
    args = ap.parse_args()
    ql_n = min(args.ql_n, args.n)
    p = make_options(args.n, args.seed)
    inputs = tuple(p[k] for k in ("S", "K", "T", "r", "q", "sigma", "call"))

    print(f"European price + Greeks benchmark  ({platform.python_version()}, numpy {np.__version__})")
    print(f"options: S 50..150, |ln K/S| <= 0.5, 1d..2y, vol 5..80%; medians of {args.repeats} repeats")
    rows: list[tuple[str, int, float]] = []

    t_np, g = timed(lambda: bsm_greeks(*inputs), args.repeats)
    rows.append(("tradesys numpy, 1 core (price + 14 Greeks)", args.n, t_np))

    try:
        import QuantLib as ql

        t_ql, ref = timed(lambda: quantlib_loop(p, ql_n), args.repeats)
        rows.append((f"QuantLib {ql.__version__} AnalyticEuropeanEngine loop", ql_n, t_ql))
    except ImportError:
        ref = None
        print("QuantLib not installed: peer skipped")

    if args.torch:
        import torch

        torch.set_num_threads(1)
        tin = tuple(torch.as_tensor(a) for a in inputs)
        t_t, gt = timed(lambda: bsm_greeks(*tin), args.repeats)
        rows.append((f"tradesys torch {torch.__version__} CPU float64, 1 thread", args.n, t_t))
        diff = max(float(np.nanmax(np.abs(gt[k].numpy() - g[k]) / (1 + np.abs(g[k])))) for k in GREEK_NAMES)
        print(f"torch CPU vs numpy: max |diff| / (1 + |value|) over all Greeks = {diff:.1e}")
        if torch.cuda.is_available():
            name = torch.cuda.get_device_name(0)
            for dt in (torch.float64, torch.float32):
                tc = tuple(torch.as_tensor(a, device="cuda", dtype=None if a.dtype == bool else dt) for a in inputs)
                t_c, _ = timed(lambda tc=tc: bsm_greeks(*tc), args.repeats, sync=torch.cuda.synchronize)
                rows.append((f"tradesys torch CUDA {str(dt).split('.')[-1]} ({name})", args.n, t_c))
        else:
            print("CUDA not available: GPU rows skipped")

    print()
    print(f"{'engine':58s} {'options':>10s} {'seconds':>10s} {'options/s':>14s}")
    for label, n, t in rows:
        print(f"{label:58s} {n:>10,d} {t:>10.4f} {n / t:>14,.0f}")
    if ref is not None:
        ratio = (args.n / t_np) / (ql_n / t_ql)
        print(f"\ntradesys numpy / QuantLib loop throughput: {ratio:,.0f}x")
        print(f"max |tradesys - QuantLib| on the common {ql_n:,d} options:")
        for k in ("price", "delta", "gamma", "vega", "theta", "rho", "rho_q"):
            d = np.abs(g[k][:ql_n] - ref[k])
            rel = d / np.maximum(np.abs(ref[k]), 1e-300)
            big = np.abs(ref[k]) > 1e-6
            print(f"  {k:6s} abs {d.max():.2e}   rel (where |value| > 1e-6) {rel[big].max():.2e}")
        price_vs_mpmath(p, g["price"][:ql_n], ref["price"])


def price_vs_mpmath(p: dict[str, np.ndarray], ours: np.ndarray, ql_price: np.ndarray) -> None:
    """Which side is off on the row of largest relative price gap: both against a 50-digit evaluation."""
    try:
        import mpmath as mp
    except ImportError:
        return
    mp.mp.dps = 50
    rel = np.where(np.abs(ql_price) > 1e-6, np.abs(ours - ql_price) / np.maximum(np.abs(ql_price), 1e-300), 0.0)
    i = int(np.argmax(rel))
    S, K, T, r, q, sig = (mp.mpf(float(p[k][i])) for k in ("S", "K", "T", "r", "q", "sigma"))
    s = sig * mp.sqrt(T)
    d1 = (mp.log(S / K) + (r - q) * T) / s + s / 2
    d2 = d1 - s
    A, B = S * mp.exp(-q * T), K * mp.exp(-r * T)
    exact = A * mp.ncdf(d1) - B * mp.ncdf(d2) if p["call"][i] else B * mp.ncdf(-d2) - A * mp.ncdf(-d1)
    print(
        f"largest relative price gap (row {i}, price {float(exact):.3e}) vs 50-digit mpmath: "
        f"tradesys {float(abs(ours[i] / exact - 1)):.1e}, QuantLib {float(abs(ql_price[i] / exact - 1)):.1e}"
    )


if __name__ == "__main__":
    main()
