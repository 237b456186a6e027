"""American put benchmark: accuracy against time for a batch of mixed options, tradesys against QuantLib.

Batch: `--n` American puts (default 10,000), S 70..130, K 100, 30 days..2 years (whole days, Actual365Fixed, so
QuantLib sees the same T), r 0..8%, q 0..5%, vol 10..60%.

Reference: QuantLib 1.44 FdBlackScholesVanillaEngine, Richardson-combined 2 P(2000 x 2000) - P(1000 x 1000)
(first-order convergence in that engine: this is good to ~5e-5 absolute, checked in tests), on the first
`--ref-n` options; every error below is measured on that subset.

tradesys (numpy, one core): CRR and Leisen-Reimer trees (LR with and without Richardson), Crank-Nicolson FD, each
timed on the whole batch in one call; LSM (torch, one thread) on `--lsm-n` options, as it prices a Bermudan
(50 or 250 dates a year) its error against the American reference includes that gap. QuantLib (one core, its
engines on a Python loop over the first `--ql-n` options, quotes updated in place, one VanillaOption per row):
FD, CRR and LR binomial engines. Looped and subset timings are scaled to the batch size ("options/s" is what
was measured; "batch s" for them is projected and marked *).

    .venv/bin/python benchmarks/options_american.py [--n 10000] [--ref-n 200] [--ql-n 200] [--lsm-n 20]

"ours vs QuantLib at equal accuracy": for each QuantLib configuration, the fastest tradesys tree/FD configuration
whose max and RMS errors are both no larger, and the throughput ratio. The machine is shared and noisy; single
timings.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import platform
import time
from dataclasses import dataclass

import numpy as np

from tradesys.quant.options.american import binomial_price, fd_price, lsm_price


@dataclass
class Row:
    engine: str
    resolution: str
    n_timed: int
    seconds: float
    max_err: float
    rms_err: float
    ours: bool
    projected: bool = False

    @property
    def per_second(self) -> float:
        return self.n_timed / self.seconds


def make_puts(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    days = rng.integers(30, 731, n)
    return {
        "S": rng.uniform(70.0, 130.0, n),
        "K": np.full(n, 100.0),
        "days": days,
        "T": days / 365.0,
        "r": rng.uniform(0.0, 0.08, n),
        "q": rng.uniform(0.0, 0.05, n),
        "sigma": rng.uniform(0.10, 0.60, n),
        "call": np.zeros(n, dtype=bool),
    }


class QuantLibLoop:
    """One process, quotes and flat curves reused; a VanillaOption per row, as a pricing loop would do it."""

    def __init__(self) -> None:
        import QuantLib as ql

        self.ql = ql
        self.today = ql.Date(15, 1, 2025)
        ql.Settings.instance().evaluationDate = self.today
        dc = ql.Actual365Fixed()
        self.spot, self.rate, self.div, self.vol = (ql.SimpleQuote(x) for x in (100.0, 0.0, 0.0, 0.2))
        rts = ql.YieldTermStructureHandle(ql.FlatForward(self.today, ql.QuoteHandle(self.rate), dc))
        dts = ql.YieldTermStructureHandle(ql.FlatForward(self.today, ql.QuoteHandle(self.div), dc))
        vts = ql.BlackVolTermStructureHandle(
            ql.BlackConstantVol(self.today, ql.NullCalendar(), ql.QuoteHandle(self.vol), dc)
        )
        self.process = ql.BlackScholesMertonProcess(ql.QuoteHandle(self.spot), dts, rts, vts)

    def engine(self, kind: str, a: int, b: int = 0) -> object:
        ql = self.ql
        if kind == "fd":
            return ql.FdBlackScholesVanillaEngine(self.process, a, b, 0)
        return ql.BinomialVanillaEngine(self.process, kind, a)

    def price(self, p: dict[str, np.ndarray], n: int, kind: str, a: int, b: int = 0) -> np.ndarray:
        ql = self.ql
        eng = self.engine(kind, a, b)
        out = np.empty(n)
        for i in range(n):
            self.spot.setValue(float(p["S"][i]))
            self.rate.setValue(float(p["r"][i]))
            self.div.setValue(float(p["q"][i]))
            self.vol.setValue(float(p["sigma"][i]))
            ex = ql.AmericanExercise(self.today, self.today + int(p["days"][i]))
            opt = ql.VanillaOption(ql.PlainVanillaPayoff(ql.Option.Put, float(p["K"][i])), ex)
            opt.setPricingEngine(eng)
            out[i] = opt.NPV()
        return out


def errors(price: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    e = price[: ref.size] - ref
    return float(np.abs(e).max()), float(np.sqrt(np.mean(e * e)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="options in the batch")
    ap.add_argument("--ref-n", type=int, default=200, help="options with a high-precision QuantLib reference")
    ap.add_argument("--ql-n", type=int, default=200, help="options priced by each QuantLib loop")
    ap.add_argument("--lsm-n", type=int, default=20, help="options priced by LSM")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    n = args.n
    p = make_puts(n, args.seed)
    inputs = tuple(p[k] for k in ("S", "K", "T", "r", "q", "sigma", "call"))
    qll = QuantLibLoop()
    ql = qll.ql

    print(f"American put benchmark  (Python {platform.python_version()}, numpy {np.__version__}, "
          f"torch {torch.__version__}, QuantLib {ql.__version__}; one core)")
    print(f"{n:,d} puts: S 70..130, K 100, 30d..2y, r 0..8%, q 0..5%, vol 10..60%")
    t0 = time.perf_counter()
    ref_n = min(args.ref_n, n)
    ref = 2.0 * qll.price(p, ref_n, "fd", 2000, 2000) - qll.price(p, ref_n, "fd", 1000, 1000)
    print(f"reference: QuantLib FD 2*P(2000x2000) - P(1000x1000) on {ref_n} options "
          f"({time.perf_counter() - t0:.0f} s)\n")

    rows: list[Row] = []

    def ours(label: str, res_label: str, fn: object) -> None:
        t = time.perf_counter()
        price = np.asarray(fn())  # type: ignore[operator]
        dt = time.perf_counter() - t
        rows.append(Row(label, res_label, n, dt, *errors(price, ref), ours=True))
        print(f"  {label:28s} {res_label:14s} {dt:8.2f} s", flush=True)

    print("tradesys, whole batch per call:")
    for steps in (100, 200, 400, 800):
        ours("tradesys CRR", f"N={steps}", lambda s=steps: binomial_price(*inputs, steps=s, tree="crr").price)
    for steps in (101, 201, 401):
        ours("tradesys LR", f"N={steps}", lambda s=steps: binomial_price(*inputs, steps=s).price)
    for steps in (25, 51, 101, 201):
        ours("tradesys LR+Richardson", f"N={steps},{2 * steps + 1}",
             lambda s=steps: binomial_price(*inputs, steps=s, richardson=True).price)
    for m, k in ((100, 25), (200, 25), (200, 50), (400, 50), (400, 100), (800, 100)):
        ours("tradesys FD (CN+BS)", f"x={m},t={k}",
             lambda m=m, k=k: fd_price(*inputs, space_steps=m, time_steps=k).price)

    lsm_n = min(args.lsm_n, ref_n)
    sub = tuple(np.asarray(x)[:lsm_n] for x in inputs)
    print(f"tradesys LSM on {lsm_n} options (scaled to the batch):")
    for paths, per_year in ((10_000, 50), (10_000, 250)):
        # its own target: the Bermudan with the same dates (+ exercise today), CRR with 4000 steps
        target = binomial_price(*sub, steps=4000, tree="crr", style="bermudan", exercise_per_year=per_year).price
        target = np.maximum(target, np.maximum(sub[1] - sub[0], 0.0))
        t = time.perf_counter()
        res = lsm_price(*sub, paths=paths, exercise_per_year=per_year, style="american", seed=1)
        dt = time.perf_counter() - t
        price = np.asarray(res.price)
        mx, rms = errors(price, ref[:lsm_n])
        rows.append(Row("tradesys LSM (Bermudan)", f"{paths // 1000}k p,{per_year}/y", lsm_n, dt, mx, rms,
                        ours=True, projected=True))
        own = price - target
        print(f"  LSM {paths} paths {per_year}/yr: {dt:.1f} s, mean stderr {float(np.mean(res.stderr)):.4f}; "
              f"vs its Bermudan target: max {np.abs(own).max():.1e}, mean {own.mean():+.1e} "
              f"(regressed exercise rule: low bias); Bermudan target vs American reference: max "
              f"{np.abs(target - ref[:lsm_n]).max():.1e}", flush=True)

    ql_n = min(args.ql_n, ref_n)
    print(f"QuantLib loops on {ql_n} options (scaled to the batch):")
    # QuantLib FD (tGrid, xGrid): square grids, and the space-heavy grids that suit it as they suit ours
    for kind, a, b in (("fd", 50, 50), ("fd", 100, 100), ("fd", 200, 200), ("fd", 400, 400), ("fd", 25, 200),
                       ("fd", 50, 400), ("fd", 100, 800), ("crr", 200, 0), ("crr", 800, 0), ("lr", 200, 0),
                       ("lr", 800, 0)):
        t = time.perf_counter()
        price = qll.price(p, ql_n, kind, a, b)
        dt = time.perf_counter() - t
        label = {"fd": "QuantLib FD (Douglas)", "crr": "QuantLib binomial CRR", "lr": "QuantLib binomial LR"}[kind]
        res_label = f"x={b},t={a}" if kind == "fd" else f"N={a}"
        rows.append(Row(label, res_label, ql_n, dt, *errors(price, ref[:ql_n]), ours=False, projected=True))
        print(f"  {label:28s} {res_label:14s} {dt:8.2f} s", flush=True)

    print()
    print(f"{'method':28s} {'resolution':14s} {'batch s':>10s} {'options/s':>12s} {'max err':>10s} {'RMS err':>10s}")
    for r in rows:
        batch = n / r.per_second
        mark = "*" if r.projected else " "
        print(f"{r.engine:28s} {r.resolution:14s} {batch:>9.2f}{mark} {r.per_second:>12,.0f} "
              f"{r.max_err:>10.1e} {r.rms_err:>10.1e}")
    print(f"(* projected from {ql_n} looped / {lsm_n} LSM options; errors on the first {ref_n} options, "
          f"QuantLib on its {ql_n}, LSM on its {lsm_n})")

    print("\nours vs QuantLib at equal accuracy (fastest tradesys tree/FD row with max and RMS error <= QuantLib's):")
    mine = [r for r in rows if r.ours and not r.projected]
    for r in rows:
        if r.ours:
            continue
        ok = [m for m in mine if m.max_err <= r.max_err and m.rms_err <= r.rms_err]
        if not ok:
            print(f"  {r.engine} {r.resolution}: no tradesys configuration here is as accurate")
            continue
        best = max(ok, key=lambda m: m.per_second)
        print(f"  {r.engine:24s} {r.resolution:10s} (max {r.max_err:.1e}): {best.engine} {best.resolution} "
              f"(max {best.max_err:.1e}) is {best.per_second / r.per_second:,.0f}x faster")


if __name__ == "__main__":
    main()
