"""Full-portfolio risk update: 500 positions (300 stocks + 200 options on them), 2,000 historical scenarios,
full revaluation -> P&L vector -> historical VaR and ES at 99%, on one core. Target: under 100 ms per update.

Scenarios: the last 2,000 daily returns (2015-01 .. 2022-12) of skfolio's 20 S&P 500 stocks (real) plus 280
synthetic names from a one-factor model on the same dates, r_j = beta_j r_SP500 + e_j with the real skfolio S&P 500
index return as the factor, beta_j ~ U(0.5, 1.5) and i.i.d. normal idiosyncratic returns of 15%..45% annual vol
(seeded). Options: 200 European calls and puts on random names of the 300, strikes 0.8..1.2 x spot, expiries
whole days from 1 week to 2 years (ACT/365), implied vols 15%..60%, long and short, multiplier 100.

One update = build the `RiskBook` from the 500 position records (positions change as fills arrive), price the
options at today's inputs, revalue every option in every scenario (`scenario_pnl`: `bsm_price`, all options x
scenarios batched), then VaR/ES of the P&L vector (`var_from_pnl`, historical, alpha 0.99). The figure is the
median wall time over --repeats after one warm-up.

Peer, measured in the same run: QuantLib's AnalyticEuropeanEngine in a Python loop (spot quote set per scenario,
NPV read) over a SUBSAMPLE of --ql-pairs option x scenario pairs, EXTRAPOLATED linearly to all 200 x 2,000 pairs
(400,000 prices; linear P&L and VaR are not charged to QuantLib). The agreement on that subsample is printed.
--american N additionally times one update with N of the 200 options American (LR tree, `american_price`).

    .venv/bin/python benchmarks/risk_update.py [--repeats 15] [--ql-pairs 4000] [--american 0]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import platform
import statistics
import time
from typing import Any

import numpy as np
import pandas as pd
import torch

torch.set_num_threads(1)

from tradesys.quant.risk.book import RiskBook, scenario_pnl

try:  # the VaR engine of the risk package; numpy's quantile if it is not there
    from tradesys.quant.risk.var import var_from_pnl
except ImportError:  # pragma: no cover
    var_from_pnl = None

N_STOCKS, N_OPTIONS, N_SCEN, N_REAL = 300, 200, 2000, 20
TARGET_MS = 100.0


def make_data(seed: int) -> tuple[pd.DataFrame, pd.Series]:
    """Scenario returns (2,000 x 300) and today's prices (300)."""
    from skfolio.datasets import load_sp500_dataset, load_sp500_index

    prices = load_sp500_dataset()
    real = prices.pct_change().iloc[-N_SCEN:]
    index = load_sp500_index()["SP500"].pct_change().loc[real.index]
    rng = np.random.default_rng(seed)
    k = N_STOCKS - N_REAL
    beta = rng.uniform(0.5, 1.5, k)
    idio = rng.uniform(0.15, 0.45, k) / np.sqrt(252.0)
    synth = index.to_numpy()[:, None] * beta[None, :] + rng.standard_normal((N_SCEN, k)) * idio[None, :]
    names = [f"SYN{i:03d}" for i in range(k)]
    rets = pd.concat([real, pd.DataFrame(synth, index=real.index, columns=names)], axis=1)
    last = pd.concat([prices.iloc[-1], pd.Series(rng.uniform(20.0, 500.0, k), index=names)])
    return rets, last


def make_positions(
    last: pd.Series, seed: int, n_american: int = 0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, float]]:
    rng = np.random.default_rng(seed + 1)
    syms = list(last.index)
    spots = {s: float(last[s]) for s in syms}
    linear = [{"symbol": s, "quantity": float(rng.integers(-500, 2000)), "price": spots[s]} for s in syms]
    options = []
    for i in range(N_OPTIONS):
        s = syms[int(rng.integers(0, len(syms)))]
        options.append(
            {
                "symbol": s,
                "strike": round(spots[s] * float(rng.uniform(0.8, 1.2)), 2),
                "T": int(rng.integers(7, 731)) / 365.0,
                "is_call": bool(rng.random() < 0.5),
                "quantity": float(rng.choice([-1, 1]) * rng.integers(1, 50)),
                "implied_vol": float(rng.uniform(0.15, 0.6)),
                "style": "american" if i < n_american else "european",
                "multiplier": 100.0,
            }
        )
    return linear, options, spots


def var_es(pnl: np.ndarray, alpha: float = 0.99) -> tuple[float, float]:
    if var_from_pnl is not None:
        est = var_from_pnl(pnl, alpha)
        return float(est.var), float(est.es)
    loss = -pnl
    v = float(np.quantile(loss, alpha, method="inverted_cdf"))
    return v, v + float(np.mean(np.maximum(loss - v, 0.0))) / (1.0 - alpha)


def risk_update(
    linear: list[dict[str, Any]], options: list[dict[str, Any]], spots: dict[str, float], R: np.ndarray
) -> tuple[np.ndarray, float, float]:
    book = RiskBook.from_records(linear, options, spots=spots, rate=0.04, dividend_yields=0.01)
    pnl = scenario_pnl(book, R)
    v, es = var_es(pnl)
    return pnl, v, es


def quantlib_pairs(
    options: list[dict[str, Any]], spots: dict[str, float], R: pd.DataFrame, n_pairs: int, seed: int
) -> tuple[float, float, int]:
    """Seconds per option x scenario pair of QuantLib's analytic engine, and max |P&L diff| vs tradesys."""
    import QuantLib as ql

    today = ql.Date(15, 1, 2025)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    spot = ql.SimpleQuote(100.0)
    vol = ql.SimpleQuote(0.2)
    rts = ql.YieldTermStructureHandle(ql.FlatForward(today, 0.04, dc))
    dts = ql.YieldTermStructureHandle(ql.FlatForward(today, 0.01, dc))
    vts = ql.BlackVolTermStructureHandle(ql.BlackConstantVol(today, ql.NullCalendar(), ql.QuoteHandle(vol), dc))
    engine = ql.AnalyticEuropeanEngine(ql.BlackScholesMertonProcess(ql.QuoteHandle(spot), dts, rts, vts))
    rng = np.random.default_rng(seed + 2)
    n_opt = max(1, n_pairs // 200)
    opt_idx = rng.choice(len(options), n_opt, replace=False)
    scen_idx = rng.choice(len(R), n_pairs // n_opt, replace=False)
    qlib = np.empty((n_opt, scen_idx.size))
    t0 = time.perf_counter()
    for a, i in enumerate(opt_idx):
        o = options[i]
        kind = ql.Option.Call if o["is_call"] else ql.Option.Put
        opt = ql.VanillaOption(
            ql.PlainVanillaPayoff(kind, o["strike"]), ql.EuropeanExercise(today + round(o["T"] * 365))
        )
        opt.setPricingEngine(engine)
        vol.setValue(o["implied_vol"])
        s0 = spots[o["symbol"]]
        col = R[o["symbol"]].to_numpy()
        for b, j in enumerate(scen_idx):
            spot.setValue(s0 * (1.0 + col[j]))
            qlib[a, b] = opt.NPV()
    per_pair = (time.perf_counter() - t0) / qlib.size
    # the same pairs through tradesys: one-option books, P&L = 100 x quantity x (V(shocked) - V(base))
    worst = 0.0
    for a, i in enumerate(opt_idx):
        o = dict(options[i])
        spot.setValue(spots[o["symbol"]])
        vol.setValue(o["implied_vol"])
        kind = ql.Option.Call if o["is_call"] else ql.Option.Put
        ref = ql.VanillaOption(
            ql.PlainVanillaPayoff(kind, o["strike"]), ql.EuropeanExercise(today + round(o["T"] * 365))
        )
        ref.setPricingEngine(engine)
        base = ref.NPV()
        book = RiskBook.from_records([], [o], spots={o["symbol"]: spots[o["symbol"]]}, rate=0.04, dividend_yields=0.01)
        ours = scenario_pnl(book, R[[o["symbol"]]].to_numpy()[scen_idx])
        theirs = o["quantity"] * o["multiplier"] * (qlib[a] - base)
        worst = max(worst, float(np.max(np.abs(ours - theirs))))
    return per_pair, worst, int(qlib.size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--ql-pairs", type=int, default=4000)
    ap.add_argument("--american", type=int, default=0, help="also time an update with this many American options")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    rets, last = make_data(args.seed)
    linear, options, spots = make_positions(last, args.seed)
    R = rets.loc[:, list(spots)].to_numpy()
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, torch threads {torch.get_num_threads()}, "
        f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
    )
    print(
        f"book: {len(linear)} stock positions ({N_REAL} real skfolio names + {N_STOCKS - N_REAL} factor-model "
        f"names) + {len(options)} European options; scenarios: {R.shape[0]} days "
        f"{rets.index[0]:%Y-%m-%d}..{rets.index[-1]:%Y-%m-%d}"
    )
    print(f"VaR engine: {'tradesys.quant.risk.var.var_from_pnl' if var_from_pnl else 'numpy quantile (inline)'}")

    pnl, v, es = risk_update(linear, options, spots, R)  # warm-up
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        pnl, v, es = risk_update(linear, options, spots, R)
        times.append(time.perf_counter() - t0)
    ms = 1e3 * statistics.median(times)
    book = RiskBook.from_records(linear, options, spots=spots, rate=0.04, dividend_yields=0.01)
    reval = []
    for _ in range(5):
        t0 = time.perf_counter()
        scenario_pnl(book, R)
        reval.append(time.perf_counter() - t0)
    reval_ms = 1e3 * statistics.median(reval)
    print(
        f"1-day historical VaR 99% = {v:,.0f}  ES 99% = {es:,.0f}  (book value {book.market_value():,.0f}; "
        f"P&L min {pnl.min():,.0f}, max {pnl.max():,.0f})"
    )
    verdict = "meets" if ms < TARGET_MS else "MISSES"
    print(
        f"tradesys full risk update (build book + 400,000 option revaluations + VaR/ES): median {ms:.1f} ms "
        f"over {args.repeats} repeats (min {1e3 * min(times):.1f}) -> {verdict} the {TARGET_MS:.0f} ms target"
    )
    print(f"  of which scenario_pnl on a built book: {reval_ms:.1f} ms (median of 5)")

    per_pair, worst, n_pairs = quantlib_pairs(options, spots, rets, args.ql_pairs, args.seed)
    ql_ms = per_pair * N_OPTIONS * N_SCEN * 1e3
    print(
        f"QuantLib AnalyticEuropeanEngine loop: {per_pair * 1e6:.2f} us per option x scenario, measured on "
        f"{n_pairs} pairs and EXTRAPOLATED to {N_OPTIONS * N_SCEN:,} pairs: {ql_ms:,.0f} ms per update"
    )
    print(
        f"ratio QuantLib (extrapolated, options only) / tradesys (whole update): {ql_ms / ms:.0f}x; "
        f"max |P&L difference| on the QuantLib subsample: {worst:.2e}"
    )

    if args.american:
        lin_a, opt_a, _ = make_positions(last, args.seed, n_american=args.american)
        t0 = time.perf_counter()
        risk_update(lin_a, opt_a, spots, R)
        am_ms = 1e3 * (time.perf_counter() - t0)
        print(
            f"with {args.american} of the {N_OPTIONS} options American (LR tree, 101 steps, Richardson; "
            f"{args.american * N_SCEN:,} tree prices): {am_ms:,.0f} ms for one update"
        )


if __name__ == "__main__":
    main()
