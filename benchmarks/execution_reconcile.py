"""Reconciliation time for 10,000 open orders (issue 13): the ledger against the broker, through the service.

Setup: a `SimBroker` (no fees, no slippage) with one bar per symbol (`--symbols`, close 100, volume 1e9), an
in-memory SQLite ledger, and `--orders` GTC limit buys at 1.0 (far below the market: they rest), sent through the
`ExecutionService`, so ledger and venue agree. Then, timed:

    clean     `ExecutionService.reconcile` with nothing to do: the venue lists every order, the service compares
              each with the OMS (status, filled quantity, fill ids), positions and cash; median of `--repeat` runs;
    views     building the two views alone (`ExecutionService._views`: the venue's open orders, the OMS's open
              states, positions, cash), median of `--repeat` runs;
    pure      `tradesys.execution.reconcile.reconcile` alone on the views of the clean case (no broker calls, no
              ledger), median of `--repeat` runs;
    pandas    the peer: the same order comparison as a naive pandas outer merge of the two views' orders (client
              order id, status, filled quantity) that flags the rows that differ, frames built from the views
              included; it books nothing and checks no fills, positions or cash; median of `--repeat` runs;
    booking   a bar the service never sees crosses the limit of the orders on half the symbols at the venue
              (`--fill-share`): the reconciliation books each of their fills and statuses through the OMS and one
              ledger transaction (one run: the second finds nothing, which the script checks);
    after     the clean case again, after the booking.

The check after each case: ledger == venue (statuses, filled quantities, positions, cash) and nothing found by the
next run; the pandas peer finds nothing in the clean book and flags exactly the orders whose fills the booking run
books. Timings are wall-clock seconds of this process on one core (Python, no Ray).

    .venv/bin/python benchmarks/execution_reconcile.py [--quick] [--orders 10000] [--symbols 50] [--repeat 5]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import pandas as pd
import pyarrow as pa

from tradesys.broker.sim import SimBroker
from tradesys.config import BrokerConfig, ExecutionConfig
from tradesys.core.orders import Order, OrderType, Side, TimeInForce
from tradesys.core.schemas import BAR_SCHEMA
from tradesys.execution.reconcile import reconcile
from tradesys.execution.service import ExecutionService
from tradesys.ledger import open_ledger
from tradesys.ledger.book import BookKeeper

CASH = 1e9
T0 = 1_704_205_800_000_000_000  # 2024-01-02 14:30 UTC
BAR = 60_000_000_000


def _bars(symbols: list[str], ts: int, low: dict[str, float] | None = None) -> pa.RecordBatch:
    low = low or {}
    n = len(symbols)
    return pa.RecordBatch.from_pydict(
        {"ts": [ts] * n, "symbol": symbols, "open": [100.0] * n, "high": [101.0] * n,
         "low": [low.get(s, 99.0) for s in symbols], "close": [100.0] * n, "volume": [1e9] * n},
        schema=BAR_SCHEMA,
    )


def _agree(svc: ExecutionService, venue: SimBroker) -> None:
    """Ledger == venue (statuses, filled quantities, positions, cash), else exit non-zero."""
    ledger: Any = svc.book.ledger  # type: ignore[attr-defined]
    mine = {r["client_order_id"]: (r["status"], r["filled_qty"]) for r in ledger.orders()}
    theirs = {s.order.client_order_id: (s.status.value, s.filled_qty) for s in venue.orders()}
    snap = svc.book.snapshot()
    pos = {s: q for s, q in snap.positions.items() if q}
    vpos = {s: q for s, q in venue.positions().items() if q}
    cash = venue.cash()
    if mine != theirs or pos != vpos or cash is None or abs(snap.cash - cash) > 1e-6:
        sys.exit("ledger and venue disagree")


def _pandas_diff(ledger: Any, broker: Any) -> int:
    """The peer: rows whose status or filled quantity differ, or that one side lacks (a naive outer merge)."""
    def frame(orders: Any) -> pd.DataFrame:
        return pd.DataFrame({"cid": list(orders), "status": [st.status.value for st in orders.values()],
                             "filled": [st.filled_qty for st in orders.values()]})

    m = frame(ledger.orders).merge(frame(broker.orders), on="cid", how="outer", suffixes=("_l", "_b"),
                                   indicator=True)
    bad = (m["_merge"] != "both") | (m["status_l"] != m["status_b"]) | ((m["filled_l"] - m["filled_b"]).abs() > 1e-6)
    return int(bad.sum())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--orders", type=int, default=10_000)
    ap.add_argument("--symbols", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--fill-share", type=float, default=0.5, help="share of the symbols whose orders fill")
    ap.add_argument("--quick", action="store_true", help="1,000 orders, 2 repeats (a smoke run)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    if a.quick:
        a.orders, a.repeat = 1_000, 2
    symbols = [f"S{i:03d}" for i in range(a.symbols)]
    venue = SimBroker(BrokerConfig(fee_bps=0.0, fee_min=0.0, slippage_bps=0.0, participation_cap=1.0))
    venue.opening_cash = CASH
    svc = ExecutionService(venue, BookKeeper(open_ledger("sqlite:///:memory:"), CASH),
                           settings=ExecutionConfig(reconcile_every_bars=0))
    svc.on_bars(_bars(symbols, T0))
    orders = [Order(f"o{i}", symbols[i % len(symbols)], Side.BUY, 10.0, OrderType.LIMIT, TimeInForce.GTC,
                    limit_price=1.0, ts_ns=T0) for i in range(a.orders)]
    svc.submit(orders, ts_ns=T0)
    assert len(venue.open_orders()) == a.orders, "the orders must rest"
    _agree(svc, venue)

    def timed(fn: Any) -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    clean = [timed(lambda: svc.reconcile(T0, "bench")) for _ in range(a.repeat)]
    build = [timed(svc._views) for _ in range(a.repeat)]
    views = svc._views()
    pure = [timed(lambda: reconcile(*views, T0)) for _ in range(a.repeat)]
    if _pandas_diff(*views):
        sys.exit("the pandas peer found a difference in a clean book")
    peer = [timed(lambda: _pandas_diff(*views)) for _ in range(a.repeat)]
    crossed = symbols[: max(1, int(len(symbols) * a.fill_share))]
    venue.on_bars(_bars(symbols, T0 + BAR, dict.fromkeys(crossed, 0.5)))  # the service never sees this bar
    n_diff = _pandas_diff(*svc._views())
    t = time.perf_counter()
    rep, _ = svc.reconcile(T0 + BAR, "bench")
    booking = time.perf_counter() - t
    n_fills = len(rep.fills)
    if n_diff != len({f.client_order_id for f in rep.fills}):
        sys.exit(f"the pandas peer flags {n_diff} orders, the reconciliation booked fills on another number")
    _agree(svc, venue)
    again, _ = svc.reconcile(T0 + BAR, "bench")
    if again.found_anything:
        sys.exit("the second reconciliation found something")
    after = [timed(lambda: svc.reconcile(T0 + BAR, "bench")) for _ in range(a.repeat)]
    out = {
        "orders": a.orders, "symbols": a.symbols, "open_orders": len(venue.open_orders()), "fills_booked": n_fills,
        "clean_s": statistics.median(clean), "views_s": statistics.median(build), "pure_s": statistics.median(pure),
        "pandas_s": statistics.median(peer), "booking_s": booking,
        "after_s": statistics.median(after),
    }
    print(f"{a.orders:,} open orders on {a.symbols} symbols (SimBroker, in-memory SQLite ledger, one core)")
    rows = (
        (f"clean reconcile (nothing to do), median of {a.repeat}", out["clean_s"]),
        (f"building the views alone, median of {a.repeat}", out["views_s"]),
        (f"pure reconcile() on the same views, median of {a.repeat}", out["pure_s"]),
        (f"peer: pandas outer merge of the views' orders, median of {a.repeat}", out["pandas_s"]),
        (f"booking {n_fills:,} fills the ledger lacked (one run)", booking),
        (f"clean reconcile after it ({out['open_orders']:,} still open)", out["after_s"]),
    )
    for label, sec in rows:
        print(f"  {label:<62}{sec * 1e3:9.1f} ms")
    print(f"  pure reconcile() / pandas peer: {out['pure_s'] / out['pandas_s']:.2f}; clean reconcile / pandas peer: "
          f"{out['clean_s'] / out['pandas_s']:.2f}")
    print("ledger == venue after each case; the run after the booking found nothing")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    main()
