"""Streaming feature throughput: symbol-bar-indicator updates per second on one core, against the naive approach.

Universe: --symbols synthetic symbols (seeded GBM OHLCV bars). Ten indicators (SMA 20, EMA 20, MACD, RSI 14,
ATR 14, DMI 14, Bollinger 20, Stochastic, OBV, MFI 14) advance together:

* streaming, Arrow: one BAR_SCHEMA record batch per timestamp through a FeatureBank (symbol lookup, all ten
  indicators, an output record batch);
* streaming, numpy chunks: (k, symbols) arrays per indicator.update, k = --chunk bars per call.

An "update" is one symbol x one bar x one indicator. Peer in the same run: recomputing each indicator with
TA-Lib over the symbol's full history for every new bar (the naive approach), timed on --naive-bars bars of the
history ending at --bars for a subsample of --naive-symbols symbols, per-update cost extrapolated.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/data_features.py [--symbols 500] [--bars 2000] [--repeats 3]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import platform
import statistics
import time

import numpy as np
import pyarrow as pa
import talib

from tradesys.core.schemas import BAR_SCHEMA
from tradesys.features import streaming as S


def make_panel(n_sym: int, n_bars: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    r = rng.normal(0, 0.01, (n_bars, n_sym))
    close = 100 * np.exp(np.cumsum(r, axis=0))
    open_ = np.vstack([close[:1], close[:-1]])
    wick = np.abs(rng.normal(0, 0.004, (2, n_bars, n_sym)))
    high = np.maximum(open_, close) * (1 + wick[0])
    low = np.minimum(open_, close) * (1 - wick[1])
    vol = rng.lognormal(10, 0.5, (n_bars, n_sym))
    return {"open": open_, "high": high, "low": low, "close": close, "volume": vol}


def indicators(symbols: list[str] | int) -> dict[str, S.StreamingIndicator]:
    return {
        "sma": S.SMA(symbols, 20),
        "ema": S.EMA(symbols, 20),
        "macd": S.MACD(symbols),
        "rsi": S.RSI(symbols, 14),
        "atr": S.ATR(symbols, 14),
        "dmi": S.DMI(symbols, 14),
        "bb": S.Bollinger(symbols, 20),
        "stoch": S.Stochastic(symbols),
        "obv": S.OBV(symbols),
        "mfi": S.MFI(symbols, 14),
    }


def naive_calls(p: dict[str, np.ndarray], j: int, t: int) -> None:
    h, lo, c, v = (np.ascontiguousarray(p[k][: t + 1, j]) for k in ("high", "low", "close", "volume"))
    talib.SMA(c, 20)
    talib.EMA(c, 20)
    talib.MACD(c)
    talib.RSI(c, 14)
    talib.ATR(h, lo, c, 14)
    talib.PLUS_DI(h, lo, c, 14)
    talib.MINUS_DI(h, lo, c, 14)
    talib.ADX(h, lo, c, 14)
    talib.BBANDS(c, 20)
    talib.STOCH(h, lo, c)
    talib.OBV(c, v)
    talib.MFI(h, lo, c, v, 14)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--symbols", type=int, default=500)
    ap.add_argument("--bars", type=int, default=2000)
    ap.add_argument("--chunk", type=int, default=250)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--naive-symbols", type=int, default=20)
    ap.add_argument("--naive-bars", type=int, default=50)
    a = ap.parse_args()
    n, t_n = a.symbols, a.bars
    syms = [f"S{i:04d}" for i in range(n)]
    p = make_panel(n, t_n, 1)
    n_ind = len(indicators(1))
    updates = n * t_n * n_ind
    ts0 = 1_700_000_000 * 10**9
    sym_arr = pa.array(syms)
    batches = [
        pa.RecordBatch.from_arrays(
            [pa.array(np.full(n, ts0 + t * 60 * 10**9), BAR_SCHEMA.field("ts").type), sym_arr]
            + [pa.array(p[k][t]) for k in ("open", "high", "low", "close", "volume")],
            schema=BAR_SCHEMA,
        )
        for t in range(t_n)
    ]

    arrow_s, chunk_s = [], []
    for _ in range(a.repeats):
        bank = S.FeatureBank(syms, indicators(syms))
        t0 = time.perf_counter()
        for b in batches:
            bank.update(b)
        arrow_s.append(time.perf_counter() - t0)
        inds = indicators(n)
        t0 = time.perf_counter()
        for start in range(0, t_n, a.chunk):
            for ind in inds.values():
                ind.update({k: p[k][start : start + a.chunk] for k in ind.inputs})
        chunk_s.append(time.perf_counter() - t0)

    # naive: full-history TA-Lib per new bar, on bars [bars - naive_bars, bars) of a symbol subsample
    rng = np.random.default_rng(2)
    js = rng.choice(n, min(a.naive_symbols, n), replace=False)
    t0 = time.perf_counter()
    for j in js:
        for t in range(t_n - a.naive_bars, t_n):
            naive_calls(p, int(j), t)
    naive_per_update = (time.perf_counter() - t0) / (len(js) * a.naive_bars * n_ind)

    arrow_med, chunk_med = statistics.median(arrow_s), statistics.median(chunk_s)
    arrow_ups, chunk_ups = updates / arrow_med, updates / chunk_med
    naive_ups = 1.0 / naive_per_update
    print(f"python {platform.python_version()}, numpy {np.__version__}, TA-Lib {talib.__version__}, 1 thread")
    print(f"universe {n} symbols x {t_n} bars x {n_ind} indicators = {updates:,} updates; repeats {a.repeats}")
    print(
        f"streaming, Arrow batch per bar (FeatureBank): {arrow_ups:,.0f} updates/s  "
        f"({n * t_n / arrow_med:,.0f} symbol-bars/s, {1e3 * arrow_med / t_n:.3f} ms per bar of {n} symbols)"
    )
    print(
        f"streaming, numpy chunks of {a.chunk} bars:     {chunk_ups:,.0f} updates/s  "
        f"({n * t_n / chunk_med:,.0f} symbol-bars/s)"
    )
    print(
        f"naive TA-Lib full history per new bar (history ~{t_n} bars, {len(js)} symbols x {a.naive_bars} bars): "
        f"{naive_ups:,.0f} updates/s"
    )
    print(
        f"ratio streaming Arrow / naive: {arrow_ups / naive_ups:,.1f}x; numpy chunks / naive: "
        f"{chunk_ups / naive_ups:,.1f}x"
    )


if __name__ == "__main__":
    main()
