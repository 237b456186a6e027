"""Event-driven backtest loop speed: symbol-bars per second of `run_backtest`, in-process (issue 17, part 5).

Two configurations, the default strategy, risk and broker settings:

1. sp500_stocks: the default config, 20 S&P 500 stocks, 2016-2022 (1,760 daily bars);
2. synthetic: 500 GBM symbols x 2,520 daily bars (one bar per 6.5-hour session).

The bars are generated (or loaded) once and replayed from memory, so the figure is the loop alone: strategy,
pre-trade risk, OMS, venue and the SQLite ledger (in memory, as `run_backtest` defaults to), plus the run's
summary. Each figure is the median of `--repeats` runs; the orders and fills of every run are printed too, so a
faster loop that trades differently shows.

    .venv/bin/python benchmarks/backtest_loop.py [--repeats 3] [--symbols 500] [--days 2520] [--only sp500|synthetic]

To time another checkout of tradesys (a before/after pair), put it first on PYTHONPATH and run from its root.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

import tradesys.data
from tradesys.backtest.runner import run_backtest
from tradesys.config import TradesysConfig, load_config


class _Replayed:
    """A data source whose batches were read once and are replayed from memory."""

    def __init__(self, source: Any) -> None:
        self.name = source.name
        self._symbols = list(source.symbols)
        self._batches = list(source.batches())

    @property
    def symbols(self) -> list[str]:
        return self._symbols

    def batches(self) -> Iterator[pa.RecordBatch]:
        return iter(self._batches)

    def __len__(self) -> int:
        return len(self._batches)

    @property
    def symbol_bars(self) -> int:
        return sum(b.num_rows for b in self._batches)


def measure(label: str, cfg: TradesysConfig, repeats: int) -> None:
    t0 = time.perf_counter()
    source = _Replayed(tradesys.data.make_source(cfg.data))
    print(f"{label}: {len(source._symbols)} symbols x {len(source)} bars = {source.symbol_bars:,} symbol-bars "
          f"(data prepared in {time.perf_counter() - t0:.1f} s, not timed)", flush=True)
    real = tradesys.data.make_source
    tradesys.data.make_source = lambda _cfg: source  # run_backtest imports it from tradesys.data at call time
    try:
        rates = []
        for i in range(repeats):
            t = time.perf_counter()
            summary, ledger = run_backtest(cfg)
            dt = time.perf_counter() - t
            rates.append(source.symbol_bars / dt)
            print(f"  run {i + 1}: {dt:7.2f} s  {rates[-1]:>10,.0f} symbol-bars/s  orders {summary.orders}  "
                  f"fills {summary.fills}  rejected {summary.rejected}  equity {summary.equity:,.2f}", flush=True)
            ledger.close()
    finally:
        tradesys.data.make_source = real
    print(f"{label}: median {statistics.median(rates):,.0f} symbol-bars/s over {repeats} runs", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--symbols", type=int, default=500)
    ap.add_argument("--days", type=int, default=2520)
    ap.add_argument("--only", choices=["sp500", "synthetic"], default=None)
    args = ap.parse_args()
    if args.only in (None, "sp500"):
        measure("sp500_stocks (default config)", load_config(), args.repeats)
    if args.only in (None, "synthetic"):
        cfg = load_config(overrides={
            "data.source": "synthetic",
            "data.symbols": [f"S{i:03d}" for i in range(args.symbols)],
            "data.synthetic_days": args.days,
            "data.synthetic_bar_seconds": 23_400,
            "data.end": None,
        })  # fmt: skip
        measure("synthetic", cfg, args.repeats)


if __name__ == "__main__":
    main()
