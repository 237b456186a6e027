"""Backtest engines side by side (issue 17): tradesys event-driven and vectorised against vectorbt, backtrader and
nautilus_trader, same strategy, same data, same costs, in one run.

Strategy: per symbol, direction = sign(SMA_fast - SMA_slow) of the closes (20/100), long or short a fixed weight
of 0.8 / N of the book, filled at the signal bar's close with 0.5 bps fees and 2 bps slippage. tradesys runs its
trend strategy (`strategy.name = trend`) configured so that its weight is that constant (target_vol at its maximum,
so `max_weight` = 0.8 / N binds; rebalance band 1.0, so it trades on crossovers and barely in between; risk limits
and the participation cap out of the way). The peers trade floor(weight * initial cash / close) shares on each
change of direction (`benchmarks/backtest_peers.py`). Every engine's fills go through one rule that counts the
positions it opened (`backtest_peers.positions_opened`); they must agree, or the run exits 1 (backtrader's orders
sent on the last bar never fill, so its check counts them; nautilus' order-rate limit is raised as tradesys's is).

Data: `sp500_stocks` (20 stocks, 2016-2022, about 1,760 days, from `tradesys.data.make_source`) and synthetic
(500 symbols x 2,520 one-bar sessions, `tradesys.data` synthetic GBM, seed 7). The bars go to the peers as one
Parquet file; each peer runs in a subprocess of its own virtual environment (`--peers-python`, default
/work/peers-venv/bin/python; without it the peer rows are skipped, and the run says so).

What is timed (median of `--repeats`; symbol-bars = symbols x bars):
- tradesys event-driven: `run_backtest(cfg)` whole (data load and summary included), and its loop alone (from the
  end of the first step to the end of the last, by `on_step`, scaled to every step);
- tradesys vectorised: `run_vectorized(cfg)` whole (load, signals, simulation, order and fill tables), and its
  signals + simulation alone on bars already in memory (after one untimed call that compiles the numba kernels);
- vectorbt: moving averages + `Portfolio.from_signals` on the close matrix, after one untimed warm call;
- backtrader: building Cerebro's feeds + `run()`;
- nautilus_trader: building the BacktestEngine (bars wrangled, venue, instruments, data, strategy) + `run()`, and
  `run()` alone.

    .venv/bin/python benchmarks/backtest_engines.py [--quick] [--repeats 3] [--datasets sp500,synthetic]
        [--engines event,vectorized,vectorbt,backtrader,nautilus] [--synthetic 500x2520] [--peers-python PATH]
        [--json out.json]

Peers venv: python3 -m venv /work/peers-venv && /work/peers-venv/bin/pip install vectorbt==1.0.0 'plotly<6'
backtrader nautilus_trader==1.221.0 numpy 'pandas<3' pyarrow
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from tradesys.backtest.runner import run_backtest
from tradesys.config import TradesysConfig, load_config
from tradesys.data import make_source

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from backtest_peers import positions_opened  # one position-count rule for every engine

PEERS_SCRIPT = HERE / "backtest_peers.py"
DEFAULT_PEERS_PYTHON = "/work/peers-venv/bin/python"
ENGINES = ("event", "vectorized", "vectorbt", "backtrader", "nautilus")
PEERS = ("vectorbt", "backtrader", "nautilus")
CASH = 10_000_000.0
FAST, SLOW = 20, 100
FEE_BPS, SLIPPAGE_BPS = 0.5, 2.0
GROSS = 0.8  # the book's gross weight: N positions of 0.8 / N each


@dataclass(frozen=True)
class Dataset:
    name: str
    label: str
    data: dict[str, Any]  # `data.*` overrides
    n_symbols: int


def datasets(quick: bool, synthetic: tuple[int, int] | None = None) -> dict[str, Dataset]:
    """The two data sets of the issue's table; `--quick`: small slices of the same sources. `synthetic`:
    (symbols, days) instead of 500 x 2,520 (20 x 300 with --quick)."""
    if quick:
        sp = Dataset("sp500", "5 S&P 500 stocks x 2021-2022", {
            "data.source": "sp500_stocks", "data.symbols": ["AAPL", "JPM", "KO", "XOM", "MSFT"],
            "data.start": "2021-01-01", "data.end": "2022-12-31"}, 5)
        n, days = synthetic or (20, 300)
    else:
        sp = Dataset("sp500", "20 S&P 500 stocks x 2016-2022", {"data.source": "sp500_stocks"}, 20)
        n, days = synthetic or (500, 2520)
    syn = Dataset("synthetic", f"{n} synthetic symbols x {days:,} days", {
        "data.source": "synthetic", "data.symbols": [f"S{i:03d}" for i in range(n)], "data.synthetic_days": days,
        "data.synthetic_bar_seconds": 23_400, "data.start": "2010-01-04", "data.end": "2099-12-31", "data.seed": 7}, n)
    return {"sp500": sp, "synthetic": syn}


def weight(ds: Dataset) -> float:
    return GROSS / ds.n_symbols


def bench_config(ds: Dataset) -> TradesysConfig:
    """The trend strategy with a constant weight of 0.8 / N and nothing in the way of its crossovers."""
    return load_config(overrides={
        **ds.data,
        "initial_cash": CASH,
        "strategy.name": "trend", "strategy.fast": FAST, "strategy.slow": SLOW,
        "strategy.target_vol": 2.0, "strategy.max_weight": weight(ds), "strategy.rebalance_band": 1.0,
        "strategy.allow_short": True, "strategy.order_type": "market",
        "broker.fee_bps": FEE_BPS, "broker.slippage_bps": SLIPPAGE_BPS, "broker.participation_cap": 1.0,
        "risk.max_order_qty": 1e12, "risk.max_order_notional": 1e15, "risk.max_position_notional": 1e15,
        "risk.max_orders_per_window": 10**9, "risk.daily_loss_limit_pct": 0.99,
        "risk.max_gross_leverage": "off", "risk.max_net_leverage": "off", "risk.var_limit_pct": "off",
    })


@dataclass
class Row:
    engine: str
    times_s: list[float] = field(default_factory=list)
    positions: int | None = None
    fills: int | None = None
    note: str = ""
    error: str | None = None
    parity: int | None = None  # the count the position check uses, when it differs from `positions`

    @property
    def median(self) -> float | None:
        return statistics.median(self.times_s) if self.times_s else None


def signed(fills: Any) -> list[tuple[str, float]]:
    """(symbol, signed qty) from ledger-shaped fills (dict rows, or a DataFrame with symbol/side/qty)."""
    if hasattr(fills, "to_dict"):
        fills = fills.to_dict("records")
    return [(f["symbol"], float(f["qty"]) if f["side"] == "buy" else -float(f["qty"])) for f in fills]


def run_event(cfg: TradesysConfig, repeats: int) -> tuple[Row, Row]:
    """`run_backtest` whole, and its loop alone: from the end of step 1 to the end of the last step (on_step),
    scaled by n / (n - 1), so the data load before the loop and the summary after it are out."""
    row = Row("tradesys event-driven (run_backtest)", note="data load and run summary included")
    loop = Row("tradesys event-driven, loop alone", note="steps 2..n timed by on_step, scaled to n steps")
    for _ in range(repeats):
        marks: list[tuple[int, float]] = []

        def on_step(i: int, total: int, _result: Any, marks: list[tuple[int, float]] = marks) -> None:
            if i == 1 or i == total:
                marks.append((total, time.perf_counter()))

        t0 = time.perf_counter()
        _, ledger = run_backtest(cfg, on_step=on_step)
        row.times_s.append(time.perf_counter() - t0)
        fills = ledger.fills()
        ledger.close()
        if len(marks) == 2 and marks[0][0] > 1:
            steps = marks[0][0]
            loop.times_s.append((marks[1][1] - marks[0][1]) * steps / (steps - 1))
    row.positions, row.fills = positions_opened(signed(fills)), len(fills)
    loop.positions, loop.fills = row.positions, row.fills
    return row, loop


def vectorized_available() -> str | None:
    """Why the vectorised row is left out, or None when `tradesys.backtest.vectorized` is committed."""
    if importlib.util.find_spec("tradesys.backtest.vectorized") is None:
        return "tradesys.backtest.vectorized is not there"
    log = subprocess.run(["git", "log", "--oneline", "-1", "--", "tradesys/backtest/vectorized.py"],
                         cwd=HERE.parent, capture_output=True, text=True)
    if log.returncode == 0 and not log.stdout.strip():
        return "tradesys/backtest/vectorized.py is not committed yet"
    return None


def run_vectorized_rows(cfg: TradesysConfig, repeats: int) -> list[Row]:
    from tradesys.backtest import vectorized as vz
    from tradesys.backtest.costs import CostModel, SizingLimits

    whole = Row("tradesys vectorised (run_vectorized)", note="data load included")
    core = Row("tradesys vectorised, signals + simulate", note="bars in memory, after a warm call")
    bars, n, bpy = vz.bars_from_config(cfg)
    costs = CostModel.from_config(cfg.broker)
    sizing = SizingLimits.from_config(cfg.strategy.rebalance_band, cfg.risk)

    def core_once() -> Any:
        return vz.simulate(bars, vz.target_weights(cfg, bars, n, bpy), costs, sizing, cfg.initial_cash)

    core_once()  # numba compilation
    for _ in range(repeats):
        t0 = time.perf_counter()
        core_once()
        core.times_s.append(time.perf_counter() - t0)
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = vz.run_vectorized(cfg)
        whole.times_s.append(time.perf_counter() - t0)
    whole.positions = core.positions = positions_opened(signed(res.fills))
    whole.fills = core.fills = len(res.fills)
    return [whole, core]


def run_peer(engine: str, parquet: Path, ds: Dataset, repeats: int, python: str, tmp: Path) -> list[Row]:
    out = tmp / f"{ds.name}-{engine}.json"
    cmd = [python, str(PEERS_SCRIPT), "--data", str(parquet), "--engine", engine, "--fast", str(FAST),
           "--slow", str(SLOW), "--weight", repr(weight(ds)), "--cash", repr(CASH), "--fee-bps", repr(FEE_BPS),
           "--slippage-bps", repr(SLIPPAGE_BPS), "--repeats", str(repeats), "--out", str(out)]
    label = {"vectorbt": "vectorbt Portfolio.from_signals (warm call)", "backtrader": "backtrader (feeds + run)",
             "nautilus": "nautilus_trader BacktestEngine (build + run)"}[engine]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        return [Row(label, error=f"exit {proc.returncode}: {tail}")]
    res = json.loads(out.read_text())
    row = Row(label, res["times_s"], res["positions_opened"], res["fills"], note=f"{engine} {res['version']}")
    rows = [row]
    if engine == "backtrader":
        row.note += f", fees {FEE_BPS} bps, slippage {SLIPPAGE_BPS} bps (set_slippage_perc), cheat-on-close"
        if res["unfilled_at_end"]:
            row.parity = res["positions_opened_with_unfilled"]
            row.note += (f"; {res['unfilled_at_end']} order(s) sent on the last bar never filled (backtrader fills a "
                         f"cheat-on-close order in its next cycle): {row.parity} positions counting them")
    if engine == "nautilus":
        row.note += f", fees {FEE_BPS} bps, no slippage (its fill model slips by ticks, not bps)"
        rows.append(Row("nautilus_trader BacktestEngine run() alone", res["run_times_s"], res["positions_opened"],
                        res["fills"]))
    return rows


def fmt_rate(x: float) -> str:
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}k" if x >= 1e3 else f"{x:.0f}"


def report(ds: Dataset, symbol_bars: int, rows: list[Row]) -> list[str]:
    """The table for one data set, with ratios against tradesys event-driven and vectorbt."""
    event = next((r.median for r in rows if r.engine.startswith("tradesys event")), None)
    vbt = next((r.median for r in rows if r.engine.startswith("vectorbt")), None)
    head = "| engine | median s | symbol-bars/s | vs tradesys event-driven | vs vectorbt | positions opened | fills |"
    lines = [f"\n## {ds.label}: {symbol_bars:,} symbol-bars", "", head,
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if r.error:
            lines.append(f"| {r.engine} | failed: {r.error} | | | | | |")
            continue
        m = r.median
        assert m is not None
        rate = symbol_bars / m
        vs_e = f"{event / m:.2f}x" if event else ""
        vs_v = f"{vbt / m:.3g}x" if vbt else ""
        lines.append(f"| {r.engine} | {m:.3f} | {fmt_rate(rate)} | {vs_e} | {vs_v} | {r.positions} | {r.fills} |")
    notes = [f"- {r.engine}: {r.note}" for r in rows if r.note]
    return [*lines, "", "Ratios are speed ratios (the other engine's time / this engine's time).", *notes,
            *aims(rows, symbol_bars)]


def aims(rows: list[Row], symbol_bars: int) -> list[str]:
    """The issue's two aims, checked on this run's medians."""
    def med(prefix: str) -> float | None:
        return next((r.median for r in rows if r.engine.startswith(prefix) and not r.error), None)

    out = []
    vbt = med("vectorbt")
    for label in ("tradesys vectorised (run_vectorized)", "tradesys vectorised, signals + simulate"):
        m = med(label)
        if vbt and m:
            out.append(f"- aim, vectorised within 2x of vectorbt: {label} takes {m / vbt:.2f}x vectorbt's time: "
                       f"{'met' if m <= 2 * vbt else 'not met'}")
    ev = med("tradesys event-driven, loop alone") or med("tradesys event")
    nt = med("nautilus_trader BacktestEngine run() alone")
    if ev and nt:
        out.append(f"- aim, event-driven loop above nautilus_trader's run(): {symbol_bars / ev:,.0f} against "
                   f"{symbol_bars / nt:,.0f} symbol-bars/s: {'met' if ev < nt else 'not met'}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="tradesys backtest engines against vectorbt, backtrader, nautilus")
    ap.add_argument("--quick", action="store_true", help="small data, one repeat: a smoke run")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per engine (default 3; --quick: 1)")
    ap.add_argument("--datasets", default="sp500,synthetic", help="comma list of sp500, synthetic")
    ap.add_argument("--engines", default=",".join(ENGINES), help=f"comma list of {', '.join(ENGINES)}")
    ap.add_argument("--synthetic", default=None, metavar="SYMBOLSxDAYS",
                    help="synthetic data size, e.g. 100x2520 (default 500x2520; --quick: 20x300)")
    ap.add_argument("--peers-python", default=DEFAULT_PEERS_PYTHON, help="the peers' venv interpreter")
    ap.add_argument("--json", default=None, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    if repeats < 1:
        ap.error("--repeats: must be >= 1")
    size = None
    if args.synthetic is not None:
        try:
            size = tuple(int(x) for x in args.synthetic.lower().split("x"))
        except ValueError:
            size = ()
        if len(size) != 2 or min(size) < 1:
            ap.error(f"--synthetic: SYMBOLSxDAYS with both >= 1, e.g. 100x2520, got {args.synthetic!r}")
    all_ds = datasets(args.quick, size)  # type: ignore[arg-type]
    chosen = [s.strip() for s in args.datasets.split(",") if s.strip()]
    bad = [s for s in chosen if s not in all_ds]
    if bad or not chosen:
        ap.error(f"--datasets: unknown {bad}; have {list(all_ds)}")
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    bad = [e for e in engines if e not in ENGINES]
    if bad or not engines:
        ap.error(f"--engines: unknown {bad}; have {list(ENGINES)}")
    peers = [e for e in engines if e in PEERS]
    if peers and not Path(args.peers_python).is_file():
        print(f"PEERS SKIPPED: --peers-python {args.peers_python} does not exist. Create the peers' venv: "
              "python3 -m venv /work/peers-venv && /work/peers-venv/bin/pip install vectorbt==1.0.0 'plotly<6' "
              "backtrader nautilus_trader==1.221.0 numpy 'pandas<3' pyarrow", file=sys.stderr)
        peers = []
    skip_vz = vectorized_available() if "vectorized" in engines else "not asked for"
    print(f"# Backtest engines, medians of {repeats}; {os.cpu_count()} CPUs; load average at start "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"strategy: SMA {FAST}/{SLOW} crossover, long/short {GROSS:g}/N of the book per symbol, fees {FEE_BPS} bps, "
          f"slippage {SLIPPAGE_BPS} bps, fills at the signal bar's close, initial cash {CASH:,.0f}")
    if "vectorized" in engines and skip_vz:
        print(f"tradesys vectorised row left out: {skip_vz}")
    out: dict[str, Any] = {"repeats": repeats, "quick": args.quick, "datasets": {}}
    counts_ok = True
    with tempfile.TemporaryDirectory(prefix="bench-engines-") as tmpd:
        tmp = Path(tmpd)
        for name in chosen:
            ds = all_ds[name]
            cfg = bench_config(ds)
            source = make_source(cfg.data)
            symbol_bars = len(source) * len(source.symbols)
            parquet = tmp / f"{name}.parquet"
            pq.write_table(source.table, parquet)
            del source
            rows: list[Row] = []
            if "event" in engines:
                rows += run_event(cfg, repeats)
            if "vectorized" in engines and not skip_vz:
                rows += run_vectorized_rows(cfg, repeats)
            for e in peers:
                rows += run_peer(e, parquet, ds, repeats, args.peers_python, tmp)
            print("\n".join(report(ds, symbol_bars, rows)))
            counts = {r.engine: r.parity if r.parity is not None else r.positions
                      for r in rows if r.positions is not None}
            same = len(set(counts.values())) <= 1
            counts_ok &= same
            if same:
                print(f"positions opened: all {len(counts)} rows equal ({next(iter(counts.values()), None)})")
            else:
                print(f"positions opened: MISMATCH ({', '.join(f'{k}: {v}' for k, v in counts.items())})")
            out["datasets"][name] = {"label": ds.label, "symbol_bars": symbol_bars, "rows": [r.__dict__ for r in rows]}
    print(f"\nload average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0 if counts_ok else 1


if __name__ == "__main__":
    sys.exit(main())
