"""The history a restarted or resumed risk gate is rebuilt from, derived from the bars and the ledger (pure).

Why from the ledger and the data: they are the durable record of what every step saw and decided, so a gate rebuilt
from them is the gate an undisturbed run would hold (`PreTradeRisk.warm_up`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import pyarrow as pa

from tradesys.core.schemas import batch_ts

_DAY_NS = 86_400_000_000_000


def step_marks(batches: Iterable[pa.RecordBatch]) -> Iterator[tuple[int, dict[str, float]]]:
    """(ts, the book's marks at that step): every symbol's last positive close, in first-seen order."""
    marks: dict[str, float] = {}
    for bars in batches:
        if not bars.num_rows:
            continue
        for sym, px in zip(bars.column("symbol").to_pylist(), bars.column("close").to_pylist(), strict=True):
            if px is not None and px == px and px > 0:
                marks[sym] = float(px)
        yield batch_ts(bars), dict(marks)


def risk_rejected_ids(audit_rows: Iterable[Mapping[str, Any]]) -> set[str]:
    """Client order ids the gate refused, per the audit log."""
    return {a["client_order_id"] for a in audit_rows if a["kind"] == "risk_reject" and a.get("client_order_id")}


def accepted_orders(
    order_rows: Iterable[Mapping[str, Any]], rejected_ids: set[str], upto_ts: int
) -> list[tuple[int, str]]:
    """(ts, client order id) of the orders the gate accepted at or before `upto_ts`."""
    return [
        (int(o["ts_ns"]), o["client_order_id"])
        for o in order_rows
        if o["client_order_id"] not in rejected_ids and int(o["ts_ns"]) <= upto_ts
    ]


def rejects_by_reason(order_rows: Iterable[Mapping[str, Any]], rejected_ids: set[str]) -> dict[str, int]:
    """The gate's reject counters, per the ledger."""
    out: dict[str, int] = {}
    for o in order_rows:
        if o["client_order_id"] in rejected_ids and o.get("reason"):
            out[o["reason"]] = out.get(o["reason"], 0) + 1
    return out


def day_checks(
    equity_rows: Iterable[Mapping[str, Any]], initial_cash: float, upto_ts: int
) -> list[tuple[int, float, float]]:
    """(ts, equity, start-of-day equity) the gate saw at each step of the day of `upto_ts`.

    The gate checks the book as marked at the start of a step: the first equity row at each timestamp. The
    start-of-day equity is the equity before the day's first mark: the last row of an earlier day.
    """
    day = upto_ts // _DAY_NS
    before = float(initial_cash)
    out: list[tuple[int, float, float]] = []
    last_ts = None
    for r in equity_rows:
        ts = int(r["ts_ns"])
        if ts > upto_ts:
            break
        if ts // _DAY_NS < day:
            before = float(r["equity"])
        elif ts != last_ts:
            out.append((ts, float(r["equity"]), before))
        last_ts = ts
    return out
