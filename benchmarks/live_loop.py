"""Live-loop benchmark.

1. Orders per second through pre-trade risk + OMS + SimBroker + ledger (SQLite file, write-ahead and fills in
   transactions), in batches as the loop sends them. Peer, measured in the same run: bare sqlite3 inserts of
   the same order and fill rows in one transaction per batch (the floor cost of persisting them).
2. Decision-to-fill latency p50/p99 inside the running loop on Ray actors (Supervisor + children), and steps
   per second against the in-process backtest of the same configuration.

3. `--graph`: the live step as a Ray Compiled Graph against ordinary actor calls (`ray.compiled_graph`) and the
   in-process backtest, in one run on one local Ray: decision-to-fill p50/p99 and steps/s at 20 symbols (the sp500
   window above) and at 500 synthetic symbols (one session of one-minute bars).

    .venv/bin/python benchmarks/live_loop.py [--orders 20000] [--batch 1000] [--repeats 5]
    .venv/bin/python benchmarks/live_loop.py --graph [--graph-repeats 2] [--graph-symbols 20|500|both]

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


SP500_WINDOW: dict[str, object] = {"data.start": "2019-01-01", "data.end": "2020-12-31", "strategy.slow": 60}
SYNTH_500: dict[str, object] = {
    "data.source": "synthetic", "data.symbols": [f"S{i:03d}" for i in range(500)], "data.synthetic_days": 1,
    "strategy.fast": 5, "strategy.slow": 20, "strategy.vol_lookback": 10,
}


def _stage_ms(summary: dict[str, object]) -> dict[str, float]:
    """Per-step milliseconds by stage and by ordinary call made from inside a stage (tradesys.actors.timing)."""
    steps = max(float(summary["steps"]), 1.0)  # type: ignore[arg-type]
    out: dict[str, float] = {}
    for actor in ("broker", "execution", "strategy", "risk"):  # the broker's: its graph node ("stage:venue")
        for key, v in (summary.get(actor) or {}).get("times", {}).items():  # type: ignore[union-attr]
            out[key] = out.get(key, 0.0) + v["ms"] / steps
            out["n " + key] = out.get("n " + key, 0.0) + v["calls"] / steps
    return out


def _timed_live(cfg: object, run_id: str) -> tuple[dict[str, float], float]:
    """One live run; steps/s counts the loop from the first step, not the actors' start (read from progress)."""
    import ray

    from tradesys.live import run_live

    out: dict[str, object] = {}
    import threading

    t = threading.Thread(target=lambda: out.update(run_live(cfg, show_progress=False, run_id=run_id)))  # type: ignore[arg-type]
    t_call = time.perf_counter()  # start-up: from the run_live call to the first booked step
    t.start()
    # steps/s between the first and the last step seen in progress: neither the actors' start nor the run's end
    # (the graph's teardown, the summary's reads) counts
    sup, t_first, step_first, t_last, step_last = None, None, 0, None, 0
    while t.is_alive():
        try:
            sup = sup or ray.get_actor(f"{run_id}:supervisor")
            p = ray.get(sup.progress.remote(), timeout=30)
            now = time.perf_counter()
            if t_first is None and p["step"] > 0:
                t_first, step_first = now, p["step"]
            if p["step"] > step_last:
                t_last, step_last = now, p["step"]
        except Exception:  # not up yet, or gone at the end
            pass
        time.sleep(0.02)
    t.join()
    steps = float(out["steps"])  # type: ignore[arg-type]
    rate = (step_last - step_first) / (t_last - t_first) if t_first is not None and t_last > t_first else float("nan")
    return {"steps": steps, "fills": float(out["fills"]), "p50_ms": float(out["latency_p50_ms"]),  # type: ignore[arg-type]
            "p99_ms": float(out["latency_p99_ms"]),  # type: ignore[arg-type]
            "start_s": t_first - t_call if t_first is not None else float("nan"), **_stage_ms(out)}, rate


def graph_section(label: str, window: dict[str, object], repeats: int) -> None:
    """Compiled graph, ordinary calls and the backtest on one configuration, alternating, medians over repeats."""
    from tradesys.backtest.runner import run_backtest

    rows: dict[str, list[tuple[dict[str, float], float]]] = {"compiled graph": [], "actor calls": []}
    bt_rates: list[float] = []
    with tempfile.TemporaryDirectory() as d:
        for r in range(repeats):
            for mode, flag in (("compiled graph", True), ("actor calls", False)):
                cfg = load_config(overrides={**window, "ledger.url": f"sqlite:///{d}/{flag}-{r}.db",
                                             "ray.compiled_graph": flag})
                rows[mode].append(_timed_live(cfg, f"bench-{flag}-{r}-{len(window)}"))
            cfg = load_config(overrides={**window, "ledger.url": f"sqlite:///{d}/bt-{r}.db"})
            t0 = time.perf_counter()
            bt, _ = run_backtest(cfg)
            bt_rates.append(bt.steps / (time.perf_counter() - t0))
    bt_rate = statistics.median(bt_rates)
    first = rows["compiled graph"][0][0]
    print(f"{label}: {first['steps']:.0f} steps, {first['fills']:.0f} fills; medians of {repeats} runs each")
    print(f"  {'mode':<16}{'p50 ms':>9}{'p99 ms':>9}{'steps/s':>10}{'/ backtest':>12}{'start-up s':>12}")
    for mode, runs in rows.items():
        p50 = statistics.median(x[0]["p50_ms"] for x in runs)
        p99 = statistics.median(x[0]["p99_ms"] for x in runs)
        rate = statistics.median(x[1] for x in runs)
        start = statistics.median(x[0]["start_s"] for x in runs)
        print(f"  {mode:<16}{p50:>9.2f}{p99:>9.2f}{rate:>10.1f}{rate / bt_rate:>12.3f}{start:>12.1f}")
    print(f"  {'backtest':<16}{'':>9}{'':>9}{bt_rate:>10.1f}{1.0:>12.3f}")
    # where a step's time goes, per mode: stage compute inside the actors (medians of the per-step means), the
    # ordinary calls the ExecutionActor makes from inside its stages, and the rest of the step's wall time
    # (channel hops or actor round trips between the stages, the Supervisor, waiting for a core)
    for mode, runs in rows.items():
        keys = sorted({k for x in runs for k in x[0] if k.startswith(("stage:", "call:"))})
        per = {k: statistics.median(x[0].get(k, 0.0) for x in runs) for k in keys}
        wall = 1e3 / statistics.median(x[1] for x in runs)
        stages = sum(v for k, v in per.items() if k.startswith("stage:"))
        calls = sum(v for k, v in per.items() if k.startswith("call:"))
        print(f"  {mode}: step {wall:.2f} ms = stages {stages:.2f} (of which ordinary calls {calls:.2f}) "
              f"+ between stages {wall - stages:.2f}")
        n = {k: statistics.median(x[0].get("n " + k, 0.0) for x in runs) for k in keys}
        print("    ms/step: " + ", ".join(f"{k} {v:.2f} ({n[k]:.2f}/step)" for k, v in per.items()))
    bt_ms = 1e3 / bt_rate
    print(f"  backtest: step {bt_ms:.2f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--graph", action="store_true", help="only the compiled-graph / actor-calls / backtest section")
    ap.add_argument("--graph-repeats", type=int, default=2)
    ap.add_argument("--graph-symbols", choices=("20", "500", "both"), default="both")
    ap.add_argument("--orders", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=1_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-live", action="store_true")
    args = ap.parse_args()
    if args.graph:
        import ray

        # one local Ray for every run (2 CPUs, as the machine); the live runs join it
        ray.init(address="local", num_cpus=2, resources={"head": 1}, include_dashboard=False, log_to_driver=False)
        print(f"live step: compiled graph vs actor calls vs backtest ({time.strftime('%Y-%m-%d')})")
        if args.graph_symbols in ("20", "both"):
            graph_section("20 symbols, sp500_stocks 2019-2020 daily", SP500_WINDOW, args.graph_repeats)
        if args.graph_symbols in ("500", "both"):
            graph_section("500 symbols, synthetic, 1 session of 1-minute bars", SYNTH_500, args.graph_repeats)
        ray.shutdown()
        return
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
        r = live_loop(SP500_WINDOW)
        print("live loop on Ray actors, sp500_stocks 2019-2020, 20 symbols, daily bars")
        print(f"  steps {r['steps']:.0f}, fills {r['fills']:.0f}")
        print(f"  decision-to-fill p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms")
        print(f"  steps/s live (actors) {r['live_steps_per_s']:.1f} vs in-process backtest "
              f"{r['backtest_steps_per_s']:.1f} (ratio {r['live_steps_per_s'] / r['backtest_steps_per_s']:.3f})")


if __name__ == "__main__":
    main()
