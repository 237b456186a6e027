"""Rebuilding the step's stateful components from the durable record (pure: ledger rows and bars, no Ray, no I/O).

Why: a restart or a resume must change no order and no fill, so every component that carries state from one step
to the next (strategy windows, the risk gate's windows, the venue) is rebuilt as of the ledger's last booked step
from the bars up to it and the ledger. The live loop's actors call these in their constructors (so a restarted
actor rebuilds before it answers the retried call, and a resumed run's actors start where the stopped run was);
the backtest can call them to resume a ledger in-process. The step itself stays in `tradesys.engine.step`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from tradesys.broker.sim import SimBroker
from tradesys.config import BrokerConfig
from tradesys.core.orders import OrderStatus
from tradesys.risk import replay
from tradesys.risk.pretrade import PreTradeRisk


def warm_gate(
    gate: PreTradeRisk,
    bars: Iterable[pa.RecordBatch],
    orders: Sequence[Mapping[str, Any]],
    audit: Iterable[Mapping[str, Any]],
    equity_curve: Iterable[Mapping[str, Any]],
    initial_cash: float,
    upto_ts: int,
) -> PreTradeRisk:
    """Warm `gate` up to `upto_ts` from the bars up to it and the ledger's orders, audit log and equity curve."""
    rejected = replay.risk_rejected_ids(audit)
    gate.warm_up(
        replay.step_marks(bars),
        replay.accepted_orders(orders, rejected, upto_ts),
        replay.day_checks(equity_curve, initial_cash, upto_ts),
        replay.rejects_by_reason(orders, rejected),
    )
    return gate


def restore_venue(
    cfg: BrokerConfig,
    bars: Iterable[pa.RecordBatch],
    orders: Sequence[Mapping[str, Any]],
    fills: Sequence[Mapping[str, Any]],
    audit: Iterable[Mapping[str, Any]],
) -> SimBroker:
    """The simulated venue as of the last of `bars`: every order it had seen (not refused by the gate, not still
    NEW in the ledger), with the ledger's fills. `orders` oldest first, `fills` in booking order."""
    rejected = replay.risk_rejected_ids(audit)
    sent = {
        o["client_order_id"]
        for o in orders
        if o["client_order_id"] not in rejected and o["status"] != OrderStatus.NEW.value
    }
    return SimBroker.restore(cfg, orders, fills, sent, bars)


def resume_after(booked_ts: int, orders: Iterable[Mapping[str, Any]]) -> int:
    """Where a run resumed on a ledger whose last booked step is `booked_ts` restarts (it takes steps after this).

    A step books its marks first, then records all its orders in one write. If the ledger holds orders stamped
    `booked_ts`, that step was decided: resume after it (orders still NEW are sent on recovery). Otherwise the step
    may have been cut off between the two writes: run it again, which, from the book as marked, decides exactly
    what it decided or would have decided (a step that had nothing to send decides nothing again).
    """
    if booked_ts <= 0:
        return booked_ts
    decided = any(int(o["ts_ns"]) == booked_ts for o in orders)
    return booked_ts if decided else booked_ts - 1
