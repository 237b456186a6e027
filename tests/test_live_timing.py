"""`VenueLink`, the ExecutionActor's side of the BrokerActor: the calls it folds together and the compiled graph's
venue answer it hands to the service in place of a call. The venue here is a real `SimBroker` behind a recording
stand-in for the actor proxy (the proxy's retries are tested in test_actor_proxy.py; the link on real actors in
test_live_loop.py and test_live_recovery.py)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from tradesys.actors.timing import StageTimes, VenueLink
from tradesys.broker.sim import SimBroker
from tradesys.config import BrokerConfig
from tradesys.core.orders import Order, OrderType, Side


class _Recorded:
    """The BrokerActor's combined methods, on a local SimBroker, with every call recorded."""

    def __init__(self) -> None:
        self.venue = SimBroker(BrokerConfig())
        self.calls: list[str] = []

    def on_bars_status(self, bars: pa.RecordBatch) -> tuple[list[Any], int]:
        self.calls.append("on_bars_status")
        return self.venue.on_bars(bars), 3

    def submit_audit(self, orders: list[Order]) -> tuple[list[Any], list[str]]:
        self.calls.append("submit_audit")
        return self.venue.submit(orders), ["route row"]

    def reconnects(self) -> int:
        self.calls.append("reconnects")
        return 2


def _bars(ts: int, close: float) -> pa.RecordBatch:
    return pa.record_batch({
        "ts": pa.array([ts], pa.timestamp("ns", tz="UTC")), "symbol": ["AAA"], "open": [close], "high": [close],
        "low": [close], "close": [close], "volume": [1e6],
    })


def test_on_bars_asks_once_for_events_and_reconnects_and_submit_carries_the_audit() -> None:
    rec = _Recorded()
    times = StageTimes()
    link = VenueLink(rec, times)
    assert link.reconnects() == 2 and rec.calls == ["reconnects"]  # before the first bar: asked
    link.on_bars(_bars(1, 10.0))
    assert link.reconnects() == 3 and rec.calls == ["reconnects", "on_bars_status"]  # rode on on_bars
    events = link.submit([Order("o1", "AAA", Side.BUY, 5.0, OrderType.MARKET, ts_ns=1)])
    assert [e.client_order_id for e in events] and rec.calls[-1] == "submit_audit"
    assert link.drain_audit() == ["route row"] and link.drain_audit() == []
    assert times.as_dict()["call:broker.on_bars_status"]["calls"] == 1


def test_a_preset_venue_answer_replaces_one_call_and_only_one() -> None:
    """The compiled graph's venue node computed the bar's answer: the service's `on_bars` takes it without a call,
    with its reconnect count; the next bar without a preset is asked for again."""
    rec = _Recorded()
    link = VenueLink(rec, StageTimes())
    bars = _bars(1, 10.0)
    answer = rec.on_bars_status(bars)  # what the BrokerActor's graph node computes
    rec.calls.clear()
    link.preset_on_bars((answer[0], 7))
    assert link.on_bars(bars) == answer[0]
    assert link.reconnects() == 7 and rec.calls == []
    link.on_bars(_bars(2, 11.0))
    assert rec.calls == ["on_bars_status"] and link.reconnects() == 3
