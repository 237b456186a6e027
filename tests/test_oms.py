"""The OMS state machine: idempotency, transitions, every fill has an order, restore from ledger rows."""

from __future__ import annotations

import pytest

from tradesys.core.orders import EventKind, Fill, Order, OrderEvent, OrderState, OrderStatus, Side
from tradesys.execution.oms import OmsError, OrderManager


def o(i: int, qty: float = 10) -> Order:
    return Order(f"c{i}", "A", Side.BUY, qty)


def fill(i: int, n: int, qty: float, px: float = 10.0) -> OrderEvent:
    f = Fill(f"c{i}:{n}", f"c{i}", "A", Side.BUY, qty, px, 0.0, 1)
    return OrderEvent(EventKind.FILL, f"c{i}", 1, fill=f)


def test_register_is_idempotent() -> None:
    oms = OrderManager()
    new, dup = oms.register([o(1), o(2)])
    assert len(new) == 2 and not dup
    new, dup = oms.register([o(1)])
    assert not new and [d.client_order_id for d in dup] == ["c1"]
    assert len(oms) == 2


def test_lifecycle_and_average_price() -> None:
    oms = OrderManager()
    oms.register([o(1)])
    oms.apply([OrderEvent(EventKind.ACCEPTED, "c1", 1)])
    a = oms.apply([fill(1, 1, 4, 10.0)])
    assert a.updates[-1].status is OrderStatus.PARTIALLY_FILLED
    a = oms.apply([fill(1, 2, 6, 11.0)])
    st = oms.get("c1")
    assert st is not None and st.status is OrderStatus.FILLED
    assert st.avg_fill_price == pytest.approx((4 * 10 + 6 * 11) / 10)
    assert oms.working_qty() == {}


def test_duplicate_fill_applied_once_and_terminal_is_final() -> None:
    oms = OrderManager()
    oms.register([o(1)])
    oms.apply([OrderEvent(EventKind.ACCEPTED, "c1", 1), fill(1, 1, 10)])
    again = oms.apply([fill(1, 1, 10), OrderEvent(EventKind.CANCELED, "c1", 2)])
    assert again.ignored == 2 and not again.fills
    assert oms.get("c1").status is OrderStatus.FILLED  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "event",
    [
        fill(9, 1, 1),  # unknown order: every fill has an order
        OrderEvent(EventKind.FILL, "c1", 1, fill=Fill("x", "c1", "A", Side.BUY, 11, 10.0, 0, 1)),  # overfill
        OrderEvent(EventKind.FILL, "c1", 1, fill=Fill("y", "c1", "B", Side.BUY, 1, 10.0, 0, 1)),  # wrong symbol
    ],
)
def test_bad_fills_are_refused(event: OrderEvent) -> None:
    oms = OrderManager()
    oms.register([o(1)])
    with pytest.raises(OmsError):
        oms.apply([event])


def test_unsent_and_reconcile_with_venue() -> None:
    oms = OrderManager()
    oms.register([o(1), o(2)])
    assert [x.client_order_id for x in oms.unsent(["c1", "c2"])] == ["c1", "c2"]
    venue = OrderState(o(1), status=OrderStatus.EXPIRED, filled_qty=4, avg_fill_price=10.0, fill_ids=["c1:1"])
    venue_fill = fill(1, 1, 4).fill
    assert venue_fill is not None
    events = oms.reconcile("c1", venue, [venue_fill], 5)
    assert [e.kind for e in events] == [EventKind.ACCEPTED, EventKind.FILL, EventKind.EXPIRED]
    oms.apply(events)
    st = oms.get("c1")
    assert st is not None and st.status is OrderStatus.EXPIRED and st.filled_qty == 4
    assert [x.client_order_id for x in oms.unsent(["c1", "c2"])] == ["c2"]


def test_restore_from_rows() -> None:
    rows = [
        {"client_order_id": "c1", "symbol": "A", "side": "buy", "qty": 10, "type": "market", "tif": "day",
         "status": "partially_filled", "filled_qty": 4, "avg_fill_price": 10.0},
    ]
    fills = [{"fill_id": "c1:1", "client_order_id": "c1"}]
    oms = OrderManager.restore(rows, fills)
    assert oms.working_qty() == {"A": 6}
    assert oms.apply([fill(1, 1, 4)]).ignored == 1  # already booked
    assert oms.apply([fill(1, 2, 6)]).updates[-1].status is OrderStatus.FILLED
