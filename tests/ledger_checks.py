"""Independent checks of a ledger left by a run: recompute the book from the fills and the raw data."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import pyarrow as pa
import pytest


def closes_by_ts(source: Any) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    for b in source.batches():
        ts = int(b.column("ts").cast(pa.int64())[0].as_py())
        out[ts] = dict(zip(b.column("symbol").to_pylist(), b.column("close").to_pylist(), strict=True))
    return out


def assert_ledger_consistent(
    ledger: Any, initial_cash: float, closes: dict[int, dict[str, float]] | None = None
) -> None:
    """The accounting invariants, each checked against an independent recomputation."""
    orders = ledger.orders()
    fills = ledger.fills()
    ids = [o["client_order_id"] for o in orders]
    assert len(ids) == len(set(ids)), "duplicate client order ids"
    by_id = {o["client_order_id"]: o for o in orders}
    # every fill has an order, on the same symbol and side, and never overfills it
    filled: Counter[str] = Counter()
    for f in fills:
        o = by_id.get(f["client_order_id"])
        assert o is not None, f"fill {f['fill_id']} has no order"
        assert (o["symbol"], o["side"]) == (f["symbol"], f["side"])
        filled[f["client_order_id"]] += f["qty"]
    for cid, o in by_id.items():
        assert filled[cid] == pytest.approx(o["filled_qty"], abs=1e-9), cid
        assert o["filled_qty"] <= o["qty"] + 1e-9
        if o["status"] == "rejected":
            assert filled[cid] == 0
    # positions equal the sum of fills
    pos: defaultdict[str, float] = defaultdict(float)
    for f in fills:
        pos[f["symbol"]] += f["qty"] if f["side"] == "buy" else -f["qty"]
    book = {p["symbol"]: p["qty"] for p in ledger.positions()}
    for sym in set(pos) | set(book):
        assert book.get(sym, 0.0) == pytest.approx(pos[sym], abs=1e-9), sym
    # cash equals initial cash minus the flows of every fill
    acct = ledger.account()
    cash = initial_cash - sum((1 if f["side"] == "buy" else -1) * f["qty"] * f["price"] + f["fee"] for f in fills)
    assert acct["cash"] == pytest.approx(cash, rel=1e-9)
    assert acct["equity"] == pytest.approx(acct["cash"] + acct["market_value"], rel=1e-12)
    assert acct["equity"] - initial_cash == pytest.approx(
        acct["realized_pnl"] + acct["unrealized_pnl"] - acct["fees"], rel=1e-9, abs=1e-6
    )
    curve = ledger.equity_curve()
    for row in curve:  # cash + market value = equity at every step
        assert row["equity"] == pytest.approx(row["cash"] + row["market_value"], rel=1e-12)
    if closes is None:
        return
    # equity at every step recomputed from the fills booked by then and the data's closes
    fills_by_ts = sorted(fills, key=lambda f: f["ts_ns"])
    last_row: dict[int, dict[str, Any]] = {}
    for row in curve:
        last_row[row["ts_ns"]] = row
    qty: defaultdict[str, float] = defaultdict(float)
    mark: dict[str, float] = {}
    cash = initial_cash
    i = 0
    for ts in sorted(last_row):
        while i < len(fills_by_ts) and fills_by_ts[i]["ts_ns"] <= ts:
            f = fills_by_ts[i]
            s = 1 if f["side"] == "buy" else -1
            qty[f["symbol"]] += s * f["qty"]
            cash -= s * f["qty"] * f["price"] + f["fee"]
            i += 1
        mark.update({k: v for k, v in closes.get(ts, {}).items() if v == v})
        equity = cash + sum(q * mark[s] for s, q in qty.items() if q)
        assert last_row[ts]["equity"] == pytest.approx(equity, rel=1e-9), ts


def trade_record(ledger: Any) -> tuple[list[tuple], list[tuple]]:
    """What must be identical between two runs of the same config: orders and fills, minus wall-clock times."""
    orders = sorted(
        (o["client_order_id"], o["symbol"], o["side"], o["qty"], o["status"], round(o["filled_qty"], 9))
        for o in ledger.orders()
    )
    fills = sorted(
        (f["fill_id"], f["client_order_id"], f["qty"], round(f["price"], 9), round(f["fee"], 9), f["ts_ns"])
        for f in ledger.fills()
    )
    return orders, fills
