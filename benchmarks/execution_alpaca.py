"""Orders per second through the Alpaca adapter against the local paper server, and reconciliation of 10,000 open
orders through the adapter's REST reads (issue 13).

The server: `tradesys paper-server` in its own process (default), so that client and server do not share a GIL;
`--server thread` runs `PaperServer` on a thread of this process instead (what the tests do). It replays one
session of synthetic one-minute bars (5 symbols), advanced only by POST /admin/step; no fees, no slippage, and a
participation cap of 1, so every 1-share market order fills on submit against the last bar. Everything is on
127.0.0.1 (HTTP keep-alive, no TLS, no network latency): the figures are the client's and server's own costs.

Throughput (`--orders` per case per repeat; median of `--repeat` repeats, cases interleaved in each repeat; the
server steps one bar before each repeat). The same orders in each case: 1-share market orders, a buy then a sell
on the same symbol, cycling over the symbols, so the account stays flat:

    requests   a raw `requests.Session` POST /v2/orders loop: the floor (HTTP and the server, no SDK);
    sdk        alpaca-py `TradingClient.submit_order` loop: the peer, what the adapter wraps;
    adapter    `AlpacaBroker.submit` in batches of `--batch`, as the ExecutionService sends them, with the
               trade-updates stream on: every order's ACCEPTED and FILL (from the POST answer), and the stream's
               `new` and `fill` messages drained and deduplicated; the timed region ends once the stream has
               delivered the last order's fill and it has been drained;
    no-stream  the same adapter with the stream off (what the stream costs the client).

Each adapter repeat checks its books: orders accepted once, fills == orders, no fill id twice, no unknown update.
Per-order latency, p50 and p99 over every repeat: each `submit_order` call of the sdk loop, and
`AlpacaBroker.submit([order])` one order at a time (stream on; `--latency` orders per repeat).

Reconciliation (`--open`, 10,000), on a fresh server: GTC limit buys at 1.0 rest there, sent through an
`ExecutionService` over the adapter (in-memory SQLite ledger). Timed, median of `--repeat`:

    reads      the adapter's REST reads a reconciliation makes: every open order (paged, 500 per request),
               positions, account;
    reconcile  `ExecutionService.reconcile` with nothing to do (the reads, the comparison, nothing booked);
    per-order  (once) the reads without paging: one GET /v2/orders:by_client_order_id per open order, what the
               service falls back to for open orders the listing does not show (the adapter listed 500 at most
               before it paged).

Each reconcile must find nothing (ledger == broker); the script exits non-zero otherwise.

    .venv/bin/python benchmarks/execution_alpaca.py [--quick] [--orders 2000] [--batch 100] [--latency 500]
        [--open 10000] [--repeat 5] [--server process|thread] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pyarrow as pa
import requests

from tradesys.config import BrokerConfig, ExecutionConfig, load_config
from tradesys.core.orders import EventKind, Order, OrderType, Side, TimeInForce
from tradesys.core.schemas import BAR_SCHEMA
from tradesys.data.synthetic import DEFAULT_SYMBOLS

KEY, SECRET = "PKBENCHH9", "bench-secret-h9-0123456789"
CASH = 1e9
SERVER_SETTINGS = ["data.source='synthetic'", "data.synthetic_days=1", "broker.fee_bps=0", "broker.fee_min=0",
                   "broker.slippage_bps=0", "broker.participation_cap=1.0", f"initial_cash={CASH:.0f}"]
SYMBOLS = list(DEFAULT_SYMBOLS)


@contextmanager
def paper_server(mode: str) -> Iterator[str]:
    """A fresh paper server; yields its base URL. process: `tradesys paper-server` in a child process."""
    if mode == "thread":
        from tradesys.broker.alpaca_paper import PaperServer
        from tradesys.data import make_source

        cfg = load_config(None, SERVER_SETTINGS)
        srv = PaperServer(make_source(cfg.data), key=KEY, secret=SECRET, broker=cfg.broker,
                          initial_cash=cfg.initial_cash)
        try:
            yield srv.start()
        finally:
            srv.stop()
        return
    cmd = [sys.executable, "-c", "from tradesys.cli import app; app()", "paper-server", "--port", "0",
           "--bars-per-second", "0"]
    for s in SERVER_SETTINGS:
        cmd += ["-s", s]
    env = os.environ | {"APCA_API_KEY_ID": KEY, "APCA_API_SECRET_KEY": SECRET}
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert p.stdout is not None
        line = p.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:\d+", line)
        if m is None:
            sys.exit(f"paper server did not start: {line}{p.stdout.read() if p.poll() is not None else ''}")
        yield m.group(0)
    finally:
        p.send_signal(signal.SIGTERM)  # the server stops cleanly on it (SIGINT is ignored when started with &)
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _headers() -> dict[str, str]:
    return {"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}


def _step(url: str) -> None:
    r = requests.post(f"{url}/admin/step", json={"n": 1}, headers=_headers(), timeout=30)
    r.raise_for_status()


def _orders(prefix: str, n: int) -> list[Order]:
    """n 1-share market orders: a buy then a sell on the same symbol, cycling over the symbols."""
    return [Order(f"{prefix}-{i}", SYMBOLS[(i // 2) % len(SYMBOLS)], Side.BUY if i % 2 == 0 else Side.SELL, 1.0)
            for i in range(n)]


def _body(o: Order) -> dict[str, Any]:
    return {"symbol": o.symbol, "qty": "1", "side": o.side.value, "type": "market", "time_in_force": "day",
            "client_order_id": o.client_order_id}


def _empty() -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=BAR_SCHEMA)


def _broker(url: str, stream: bool) -> Any:
    from tradesys.broker.alpaca import AlpacaBroker

    b = AlpacaBroker(BrokerConfig(kind="alpaca", fee_bps=0.0, fee_min=0.0), base_url=url, stream=stream)
    if stream and not b.wait_connected(10):
        sys.exit("the trade-updates stream did not connect")
    return b


def run_requests(url: str, orders: list[Order]) -> float:
    s = requests.Session()
    s.headers.update(_headers())
    t = time.perf_counter()
    for o in orders:
        r = s.post(f"{url}/v2/orders", json=_body(o), timeout=10)
        if r.status_code != 200:
            sys.exit(f"POST /v2/orders: {r.status_code} {r.text[:200]}")
    dt = time.perf_counter() - t
    s.close()
    return dt


def run_sdk(url: str, orders: list[Order], lat: list[float]) -> float:
    from alpaca.trading.client import TradingClient
    from alpaca.trading.enums import OrderSide
    from alpaca.trading.enums import TimeInForce as Tif
    from alpaca.trading.requests import MarketOrderRequest

    c = TradingClient(KEY, SECRET, paper=True, raw_data=True, url_override=url)
    reqs = [MarketOrderRequest(symbol=o.symbol, qty=1, side=OrderSide(o.side.value), time_in_force=Tif.DAY,
                               client_order_id=o.client_order_id) for o in orders]
    t = time.perf_counter()
    for r in reqs:
        t0 = time.perf_counter()
        c.submit_order(r)
        lat.append(time.perf_counter() - t0)
    return time.perf_counter() - t


def _until_filled(b: Any, n: int, seen: Callable[[], int], timeout_s: float = 30.0) -> None:
    """Drain the adapter until the stream has delivered `n` fill messages (or exit non-zero)."""
    deadline = time.monotonic() + timeout_s
    while seen() < n:
        b.on_bars(_empty())
        if time.monotonic() > deadline:
            sys.exit(f"the stream delivered {seen()} of {n} fills")
        time.sleep(0.0005)


def _check(b: Any, events: list[Any], n: int) -> None:
    """Every order accepted once and filled once; nothing unknown or twice."""
    acc = sum(e.kind is EventKind.ACCEPTED for e in events)
    fills = [e.fill.fill_id for e in events if e.kind is EventKind.FILL and e.fill is not None]
    if acc != n or len(fills) != n or len(set(fills)) != n or b.fills_count != n or b.unknown_updates:
        sys.exit(f"adapter books: {acc} accepted, {len(fills)} fills ({len(set(fills))} ids) of {n} orders, "
                 f"{b.unknown_updates} unknown updates")


def _counting(b: Any) -> Callable[[], int]:
    """Count the stream's fill messages as they reach the adapter's queue (wraps its stream callback)."""
    got = [0]
    put = b._updates.put

    def counted(msg: Any) -> None:
        if msg.get("data", msg).get("event") in ("fill", "partial_fill"):
            got[0] += 1
        put(msg)

    b._updates.put = counted
    return lambda: got[0]


def run_adapter(url: str, orders: list[Order], batch: int, stream: bool) -> float:
    b = _broker(url, stream)
    seen = _counting(b) if stream else None
    events: list[Any] = []
    try:
        t = time.perf_counter()
        for k in range(0, len(orders), batch):
            events += b.submit(orders[k : k + batch])
        if seen is not None:
            _until_filled(b, len(orders), seen)
            events += b.on_bars(_empty())
        dt = time.perf_counter() - t
        _check(b, events, len(orders))
    finally:
        b.close()
    return dt


def run_latency(url: str, orders: list[Order], lat: list[float]) -> None:
    b = _broker(url, True)
    events: list[Any] = []
    try:
        for o in orders:
            t0 = time.perf_counter()
            events += b.submit([o])
            lat.append(time.perf_counter() - t0)
        events += b.on_bars(_empty())
        _check(b, events, len(orders))
    finally:
        b.close()


def run_reconcile(url: str, n_open: int, repeat: int) -> dict[str, Any]:
    from tradesys.execution.service import ExecutionService
    from tradesys.ledger import open_ledger
    from tradesys.ledger.book import BookKeeper

    _step(url)
    b = _broker(url, True)
    try:
        svc = ExecutionService(b, BookKeeper(open_ledger("sqlite:///:memory:"), b.cash()),
                               settings=ExecutionConfig(reconcile_every_bars=0))
        orders = [Order(f"rest-{i}", SYMBOLS[i % len(SYMBOLS)], Side.BUY, 1.0, OrderType.LIMIT, TimeInForce.GTC,
                        limit_price=1.0) for i in range(n_open)]
        t = time.perf_counter()
        for k in range(0, n_open, 500):
            svc.submit(orders[k : k + 500], ts_ns=0)
        submit_s = time.perf_counter() - t
        if len(svc.oms.open_ids()) != n_open:
            sys.exit(f"{len(svc.oms.open_ids())} of {n_open} orders rest in the OMS")

        def reads() -> None:
            if len(b.open_orders()) != n_open:
                sys.exit("the adapter did not list every open order")
            b.positions()
            b.account()

        def clean() -> None:
            rep, _ = svc.reconcile(0, "bench")
            if rep.found_anything:
                sys.exit(f"a clean reconciliation found something: {rep.counts()}")

        reads_s: list[float] = []
        clean_s: list[float] = []
        for _ in range(repeat):  # interleaved: the machine's drift falls on both
            reads_s.append(_timed(reads))
            clean_s.append(_timed(clean))
        ids = list(svc.oms.open_ids())
        per_order = _timed(lambda: [b.order_state(cid) for cid in ids])
    finally:
        b.close()
    return {"open_orders": n_open, "submit_s": submit_s, "reads_s": statistics.median(reads_s),
            "reconcile_s": statistics.median(clean_s), "per_order_reads_s": per_order}


def _timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) * 1e3


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--orders", type=int, default=2_000, help="orders per case per repeat (even)")
    ap.add_argument("--batch", type=int, default=100, help="orders per AlpacaBroker.submit call")
    ap.add_argument("--latency", type=int, default=500, help="single-order submits per repeat")
    ap.add_argument("--open", type=int, default=10_000, help="open orders to reconcile (0: skip)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--server", choices=("process", "thread"), default="process")
    ap.add_argument("--quick", action="store_true", help="200 orders, 50 latency, 1,200 open, 2 repeats")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    if a.quick:
        a.orders, a.latency, a.open, a.repeat = 200, 50, 1_200, 2
    a.orders += a.orders % 2
    os.environ["APCA_API_KEY_ID"], os.environ["APCA_API_SECRET_KEY"] = KEY, SECRET  # the adapter reads these
    os.environ.pop("APCA_API_BASE_URL", None)
    # closing an adapter's stream makes alpaca-py log a "websocket error, restarting" warning: not a fault here
    logging.getLogger("alpaca").setLevel(logging.ERROR)
    cases = ("requests", "sdk", "adapter", "no-stream")
    secs: dict[str, list[float]] = {c: [] for c in cases}
    lat_sdk: list[float] = []
    lat_adapter: list[float] = []
    with paper_server(a.server) as url:
        for r in range(a.repeat):
            _step(url)  # fresh liquidity for this repeat
            secs["requests"].append(run_requests(url, _orders(f"q{r}", a.orders)))
            secs["sdk"].append(run_sdk(url, _orders(f"s{r}", a.orders), lat_sdk))
            secs["adapter"].append(run_adapter(url, _orders(f"a{r}", a.orders), a.batch, stream=True))
            secs["no-stream"].append(run_adapter(url, _orders(f"n{r}", a.orders), a.batch, stream=False))
            run_latency(url, _orders(f"l{r}", a.latency), lat_adapter)
    rate = {c: a.orders / statistics.median(v) for c, v in secs.items()}
    out: dict[str, Any] = {
        "server": a.server, "orders": a.orders, "batch": a.batch, "repeat": a.repeat, "orders_per_s": rate,
        "ratio_adapter_sdk": rate["adapter"] / rate["sdk"],
        "latency_ms": {"sdk": {"p50": _pct(lat_sdk, 50), "p99": _pct(lat_sdk, 99)},
                       "adapter": {"p50": _pct(lat_adapter, 50), "p99": _pct(lat_adapter, 99)}},
    }
    where = ("`tradesys paper-server` in a child process" if a.server == "process"
             else "PaperServer on a thread of this process, one GIL")
    print(f"Orders through the Alpaca adapter: local paper server ({where}), 1-share market orders, "
          f"{a.orders:,} per case, median of {a.repeat}")
    print(f"  {'case':<52}{'orders/s':>10}{'vs sdk':>8}")
    names = {"requests": "raw requests POST loop (floor)", "sdk": "alpaca-py TradingClient.submit_order (peer)",
             "adapter": f"AlpacaBroker.submit, batches of {a.batch}, stream on",
             "no-stream": f"AlpacaBroker.submit, batches of {a.batch}, stream off"}
    for c in cases:
        print(f"  {names[c]:<52}{rate[c]:>10,.0f}{rate[c] / rate['sdk']:>8.2f}")
    print(f"  per-order latency, ms: submit_order p50 {out['latency_ms']['sdk']['p50']:.2f} p99 "
          f"{out['latency_ms']['sdk']['p99']:.2f} ({len(lat_sdk):,}); AlpacaBroker.submit([order]) p50 "
          f"{out['latency_ms']['adapter']['p50']:.2f} p99 {out['latency_ms']['adapter']['p99']:.2f} "
          f"({len(lat_adapter):,})")
    print("adapter books checked: every order accepted and filled once, no unknown update")
    if a.open:
        with paper_server(a.server) as url:
            rec = run_reconcile(url, a.open, a.repeat)
        out["reconcile"] = rec
        print(f"Reconciliation through the adapter: {a.open:,} open GTC orders at the local paper server "
              f"(sent through ExecutionService in {rec['submit_s']:.1f} s)")
        rows = (
            (f"REST reads (open orders paged by 500, positions, account), median of {a.repeat}", rec["reads_s"]),
            (f"ExecutionService.reconcile, nothing to do, median of {a.repeat}", rec["reconcile_s"]),
            ("one GET by client order id per open order (no paging; once)", rec["per_order_reads_s"]),
        )
        for label, sec in rows:
            print(f"  {label:<72}{sec * 1e3:9.1f} ms")
        print("every reconciliation found nothing (ledger == broker)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    main()
