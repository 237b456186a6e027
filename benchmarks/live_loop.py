"""Live-loop benchmark.

1. Orders per second through pre-trade risk + OMS + SimBroker + ledger (SQLite file, write-ahead and fills in
   transactions), in batches as the loop sends them. Peer, measured in the same run: bare sqlite3 inserts of
   the same order and fill rows in one transaction per batch (the floor cost of persisting them).
2. Decision-to-fill latency p50/p99 inside the running loop on Ray actors (Supervisor + children), and steps
   per second against the in-process backtest of the same configuration.

    .venv/bin/python benchmarks/live_loop.py [--orders 20000] [--batch 1000] [--repeats 5]

The machine is noisy: figures are medians over repeats.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from tradesys.broker.sim import SimBroker
from tradesys.config import BrokerConfig, RiskConfig, load_config
from tradesys.core.orders import Order, Side
from tradesys.core.schemas import BAR_SCHEMA
from tradesys.execution.service import ExecutionService
from tradesys.ledger import open_ledger
from tradesys.ledger.book import BookKeeper
from tradesys.risk.pretrade import PreTradeRisk

DAY = 86_400_000_000_000


def bars(ts: int, symbols: list[str]) -> pa.RecordBatch:
    n = len(symbols)
    return pa.RecordBatch.from_pydict(
        {
            "ts": pa.array([ts] * n, pa.timestamp("ns", tz="UTC")),
            "symbol": symbols,
            "open": [100.0] * n,
            "high": [101.0] * n,
            "low": [99.0] * n,
            "close": [100.0] * n,
            "volume": [1e9] * n,
        },
        schema=BAR_SCHEMA,
    )


def pipeline_once(n_orders: int, batch: int, tmp: Path) -> float:
    symbols = [f"S{i:03d}" for i in range(200)]
    risk = PreTradeRisk(
        RiskConfig(max_order_qty=1e9, max_order_notional=1e12, max_position_notional=1e12, max_orders_per_window=10**9)
    )
    book = BookKeeper(open_ledger(f"sqlite:///{tmp}/bench.db"), 1e12)
    svc = ExecutionService(SimBroker(BrokerConfig()), book)
    elapsed = 0.0
    for b in range(n_orders // batch):
        ts = (b + 1) * DAY
        snap = svc.on_bars(bars(ts, symbols))  # market data step, not timed: this measures the order path
        orders = [
            Order(f"o{b}-{i}", symbols[i % len(symbols)], Side.BUY if i % 2 else Side.SELL, 10.0, ts_ns=ts)
            for i in range(batch)
        ]
        t0 = time.perf_counter()
        decision = risk.check(orders, snap.snapshot, ts, snap.working)
        report = svc.submit(decision.accepted, [], ts)
        elapsed += time.perf_counter() - t0
        assert report.fills == batch, report
    book.ledger.close()
    return n_orders / elapsed


def sqlite_floor_once(n_orders: int, batch: int, tmp: Path) -> float:
    con = sqlite3.connect(tmp / "floor.db")
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")  # as the tradesys SQLite ledger
    con.execute("CREATE TABLE o(id TEXT PRIMARY KEY, sym TEXT, side TEXT, qty REAL, status TEXT)")
    con.execute("CREATE TABLE f(id TEXT PRIMARY KEY, oid TEXT REFERENCES o(id), qty REAL, px REAL, fee REAL)")
    elapsed = 0.0
    for b in range(n_orders // batch):
        rows = [(f"o{b}-{i}", f"S{i % 200:03d}", "buy", 10.0, "new") for i in range(batch)]
        frows = [(f"o{b}-{i}:1", f"o{b}-{i}", 10.0, 100.0, 0.05) for i in range(batch)]
        t0 = time.perf_counter()
        with con:  # write-ahead orders
            con.executemany("INSERT INTO o VALUES (?,?,?,?,?)", rows)
        with con:  # fills and status updates
            con.executemany("INSERT INTO f VALUES (?,?,?,?,?)", frows)
            con.executemany("UPDATE o SET status='filled' WHERE id=?", [(r[0],) for r in rows])
        elapsed += time.perf_counter() - t0
    con.close()
    return n_orders / elapsed


def live_loop(window: dict[str, object]) -> dict[str, float]:
    import ray

    from tradesys.backtest.runner import run_backtest
    from tradesys.live import run_live

    with tempfile.TemporaryDirectory() as d:
        cfg = load_config(overrides={**window, "ledger.url": f"sqlite:///{d}/live.db", "ray.num_cpus": 2})
        t0 = time.perf_counter()
        s = run_live(cfg, show_progress=False, run_id="bench-live")
        live_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        bt, _ = run_backtest(cfg)
        bt_s = time.perf_counter() - t0
    ray.shutdown()
    return {
        "steps": s["steps"],
        "fills": s["fills"],
        "p50_ms": s["latency_p50_ms"],
        "p99_ms": s["latency_p99_ms"],
        "live_steps_per_s": s["steps"] / live_s,
        "backtest_steps_per_s": bt.steps / bt_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=1_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-live", action="store_true")
    args = ap.parse_args()
    ours, floor = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as d:
            ours.append(pipeline_once(args.orders, args.batch, Path(d)))
        with tempfile.TemporaryDirectory() as d:
            floor.append(sqlite_floor_once(args.orders, args.batch, Path(d)))
    m_ours, m_floor = statistics.median(ours), statistics.median(floor)
    print(f"order path (risk + OMS + SimBroker + SQLite ledger), batch {args.batch}, {args.orders} orders")
    print(f"  tradesys        median {m_ours:>10,.0f} orders/s   (runs: {', '.join(f'{x:,.0f}' for x in ours)})")
    print(f"  bare sqlite3    median {m_floor:>10,.0f} orders/s   (same rows, no risk/OMS/matching)")
    print(f"  ratio tradesys / bare sqlite3 = {m_ours / m_floor:.2f}")
    if not args.skip_live:
        window = {"data.start": "2019-01-01", "data.end": "2020-12-31", "strategy.slow": 60}
        r = live_loop(window)
        print("live loop on Ray actors, sp500_stocks 2019-2020, 20 symbols, daily bars")
        print(f"  steps {r['steps']:.0f}, fills {r['fills']:.0f}")
        print(f"  decision-to-fill p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms")
        print(f"  steps/s live (actors) {r['live_steps_per_s']:.1f} vs in-process backtest "
              f"{r['backtest_steps_per_s']:.1f} (ratio {r['live_steps_per_s'] / r['backtest_steps_per_s']:.3f})")


if __name__ == "__main__":
    main()
