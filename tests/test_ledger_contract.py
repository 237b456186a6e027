"""One contract suite, run against every Ledger adapter: SQLite on a temp file and PostgreSQL in a fresh schema.

Whatever the engine relies on (all-or-nothing batches, idempotent ids, read shapes) must hold on both, so each
test here is written once and parametrised over the adapters.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import tradesys.ledger.sql as ledger_sql
from tradesys.core.orders import Fill, Order, OrderStatus, OrderType, RejectReason, Side, TimeInForce
from tradesys.ledger import (
    LATEST_VERSION,
    MIGRATIONS,
    AccountRow,
    AuditEntry,
    Ledger,
    LedgerBatch,
    OrderUpdate,
    PositionRow,
    SqliteLedger,
    UnknownOrderError,
    WriteResult,
    open_ledger,
)

DB_INTEGRITY_ERRORS = (sqlite3.IntegrityError, psycopg.IntegrityError)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/nested/dir/ledger.db"  # tmp_path is absolute: sqlite:////tmp/...
    return str(request.getfixturevalue("pg_dsn"))


@pytest.fixture()
def fresh(ledger_url: str) -> Iterator[Ledger]:
    """A ledger on an empty database, not yet migrated."""
    led = open_ledger(ledger_url)
    yield led
    led.close()


@pytest.fixture()
def ledger(fresh: Ledger) -> Ledger:
    fresh.migrate()
    return fresh


# --- builders ----------------------------------------------------------------------------------------------------


def order(cid: str, ts: int, symbol: str = "AAPL", side: Side = Side.BUY, qty: float = 10.0, **kw: Any) -> Order:
    return Order(cid, symbol, side, qty, ts_ns=ts, strategy_id="trend", decision_wall_ns=ts + 1, **kw)


def fill(fid: str, cid: str, ts: int, qty: float = 10.0, price: float = 100.0, symbol: str = "AAPL") -> Fill:
    return Fill(fid, cid, symbol, Side.BUY, qty, price, fee=0.25, ts_ns=ts, wall_ns=ts + 7)


def account(ts: int, cash: float = 99_000.0, mv: float = 1_010.0) -> AccountRow:
    return AccountRow(
        ts_ns=ts,
        cash=cash,
        market_value=mv,
        equity=cash + mv,
        realized_pnl=0.0,
        unrealized_pnl=10.0,
        fees=0.25,
        initial_cash=100_000.0,
    )


def first_batch() -> LedgerBatch:
    """o1 filled by f1, o2 resting as a limit order; one position, the account, one audit entry."""
    return LedgerBatch(
        orders=[
            order("o1", 1_000),
            order(
                "o2", 2_000, "MSFT", Side.SELL, 5.0, type=OrderType.LIMIT, limit_price=250.5, tif=TimeInForce.GTC
            ),
        ],
        order_updates=[
            OrderUpdate("o1", OrderStatus.FILLED, 10.0, 100.0, 3_000),
            OrderUpdate("o2", OrderStatus.ACCEPTED, 0.0, 0.0, 3_000),
        ],
        fills=[fill("f1", "o1", 3_000)],
        positions=[PositionRow("AAPL", 10.0, 100.0, 0.0, 101.0)],
        account=account(3_000),
        audit=[AuditEntry(3_000, "note", "first batch", "o1", {"n": 1})],
    )


def snapshot(led: Ledger) -> dict[str, Any]:
    """Everything the ledger shows, to compare before and after a failed write."""
    return {
        "orders": led.orders(),
        "fills": led.fills(),
        "positions": led.positions(),
        "account": led.account(),
        "equity_curve": led.equity_curve(),
        "audit_log": led.audit_log(),
    }


# --- schema ------------------------------------------------------------------------------------------------------


def test_migrate_is_idempotent_and_versioned(fresh: Ledger) -> None:
    assert isinstance(fresh, Ledger)  # the runtime-checkable protocol
    assert fresh.schema_version() == 0
    assert LATEST_VERSION == MIGRATIONS[-1].version >= 2
    assert fresh.migrate() == LATEST_VERSION
    assert fresh.schema_version() == LATEST_VERSION
    assert fresh.migrate() == LATEST_VERSION  # second run: nothing to do, no error
    assert isinstance(fresh, ledger_sql.SqlLedger)
    rows = fresh._query("SELECT version, description FROM schema_migrations ORDER BY version")
    assert [(r["version"], r["description"]) for r in rows] == [(m.version, m.description) for m in MIGRATIONS]
    assert fresh.orders() == [] and fresh.account() is None


def test_migrate_applies_only_missing_versions(fresh: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(fresh, ledger_sql.SqlLedger)
    monkeypatch.setattr(ledger_sql, "MIGRATIONS", MIGRATIONS[:1])  # an older release of the code
    assert fresh.migrate() == 1
    (v1,) = fresh._query("SELECT version, applied_wall_ns FROM schema_migrations")
    monkeypatch.setattr(ledger_sql, "MIGRATIONS", MIGRATIONS)  # the upgrade
    assert fresh.migrate() == LATEST_VERSION
    rows = fresh._query("SELECT version, applied_wall_ns FROM schema_migrations ORDER BY version")
    assert [r["version"] for r in rows] == [m.version for m in MIGRATIONS]
    assert rows[0] == v1  # version 1 was not re-applied


# --- round trip --------------------------------------------------------------------------------------------------


def test_round_trip_of_every_table(ledger: Ledger) -> None:
    result = ledger.write(first_batch())
    assert result == WriteResult(("o1", "o2"), (), ("f1",), ())

    assert ledger.get_order("o1") == {
        "client_order_id": "o1", "symbol": "AAPL", "side": "buy", "qty": 10.0, "type": "market", "tif": "day",
        "limit_price": None, "stop_price": None, "strategy_id": "trend", "ts_ns": 1_000,
        "decision_wall_ns": 1_001, "status": "filled", "filled_qty": 10.0, "avg_fill_price": 100.0,
        "reason": None, "detail": "", "updated_ts_ns": 3_000, "min_qty": 0.0,
    }  # fmt: skip
    o2 = ledger.get_order("o2")
    assert o2 is not None
    assert (o2["side"], o2["type"], o2["tif"], o2["limit_price"], o2["status"]) == (
        "sell", "limit", "gtc", 250.5, "accepted",
    )  # fmt: skip
    assert ledger.get_order("nope") is None

    assert ledger.fills() == [
        {"fill_id": "f1", "client_order_id": "o1", "symbol": "AAPL", "side": "buy", "qty": 10.0,
         "price": 100.0, "fee": 0.25, "ts_ns": 3_000, "wall_ns": 3_007},
    ]  # fmt: skip
    assert ledger.fills("o2") == []
    assert ledger.positions() == [
        {"symbol": "AAPL", "qty": 10.0, "avg_price": 100.0, "realized_pnl": 0.0, "mark": 101.0,
         "updated_ts_ns": 3_000},
    ]  # fmt: skip
    expected_account = {
        "ts_ns": 3_000, "cash": 99_000.0, "market_value": 1_010.0, "equity": 100_010.0, "realized_pnl": 0.0,
        "unrealized_pnl": 10.0, "fees": 0.25, "initial_cash": 100_000.0,
    }  # fmt: skip
    assert ledger.account() == expected_account
    assert ledger.equity_curve() == [expected_account]
    (entry,) = ledger.audit_log()
    assert {k: v for k, v in entry.items() if k != "id"} == {
        "ts_ns": 3_000, "kind": "note", "client_order_id": "o1", "message": "first batch", "payload": {"n": 1},
    }  # fmt: skip
    assert isinstance(entry["id"], int)
    # JSON-ready: plain str/int/float/None, no enums or database types
    for row in [*ledger.orders(), *ledger.fills(), *ledger.positions(), ledger.account() or {}]:
        for v in row.values():
            assert type(v) in (str, int, float, type(None)), (row, v)


def test_reject_reason_and_detail_round_trip(ledger: Ledger) -> None:
    ledger.write(
        LedgerBatch(
            orders=[order("r1", 10)],
            order_updates=[OrderUpdate("r1", OrderStatus.REJECTED, 0.0, 0.0, 11, RejectReason.PRICE_COLLAR, "5%")],
        )
    )
    row = ledger.get_order("r1")
    assert row is not None
    assert (row["status"], row["reason"], row["detail"], row["updated_ts_ns"]) == ("rejected", "price_collar", "5%", 11)


def test_min_qty_round_trip_rebuilds_the_same_order(ledger: Ledger) -> None:
    """A minimum-quantity order comes back with its min_qty, and the OMS restored from the rows holds the very
    order that was written (a restarted ExecutionActor sends the venue the same order)."""
    from tradesys.execution.oms import OrderManager

    sent = order("m1", 100, qty=1_000.0, type=OrderType.LIMIT, limit_price=99.5, min_qty=250.0)
    plain = order("m2", 200)
    ledger.write(LedgerBatch(orders=[sent, plain]))
    row = ledger.get_order("m1")
    assert row is not None and row["min_qty"] == 250.0 and type(row["min_qty"]) is float
    assert (ledger.get_order("m2") or {})["min_qty"] == 0.0
    oms = OrderManager.restore(ledger.orders(), ledger.fills())
    assert [(s.order if (s := oms.get(c)) else None) for c in ("m1", "m2")] == [sent, plain]
    created = next(e for e in ledger.outbox() if e["entity_key"] == "m1")
    assert created["payload"]["min_qty"] == 250.0  # change data capture carries it too
    with pytest.raises(ValueError, match=r"^order\.min_qty: must be finite"):
        ledger.write(LedgerBatch(orders=[order("m3", 300, min_qty=math.inf)]))
    assert ledger.get_order("m3") is None


def test_an_old_ledger_reads_min_qty_zero_after_migrating(fresh: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """Orders written before migration 5 (no min_qty column) read back as min_qty 0: any fill size."""
    assert isinstance(fresh, ledger_sql.SqlLedger)
    v5 = next(m for m in MIGRATIONS if "min_qty" in m.description)
    monkeypatch.setattr(ledger_sql, "MIGRATIONS", tuple(m for m in MIGRATIONS if m.version < v5.version))
    assert fresh.migrate() == v5.version - 1
    old_cols = [c for c in ledger_sql.ORDER_COLUMNS if c != "min_qty"]  # what the older release wrote
    values = ledger_sql.order_params(order("old", 10, qty=500.0))[: len(old_cols)]
    with fresh._transaction() as cur:
        fresh._exec(cur, f"INSERT INTO orders ({', '.join(old_cols)}) VALUES ({', '.join('?' * len(old_cols))})",
                    values)
    monkeypatch.setattr(ledger_sql, "MIGRATIONS", MIGRATIONS)
    # a reader that does not migrate (tradesys report, tradesys tca) reads it as it is
    reader = type(fresh)(fresh.url)
    try:
        for rows in ([reader.get_order("old")], reader.orders(), reader.open_orders()):
            assert [(r["client_order_id"], r["min_qty"]) for r in rows if r] in ([("old", 0.0)], [])
        assert reader.orders()[0]["qty"] == 500.0
    finally:
        reader.close()
    assert fresh.migrate() == LATEST_VERSION
    row = fresh.get_order("old")
    assert row is not None and row["min_qty"] == 0.0 and type(row["min_qty"]) is float and row["qty"] == 500.0
    from tradesys.execution.oms import order_from_row

    assert order_from_row(row) == order("old", 10, qty=500.0)


# --- idempotency -------------------------------------------------------------------------------------------------


def test_duplicate_order_and_fill_ids_are_ignored_and_reported(ledger: Ledger) -> None:
    ledger.write(first_batch())
    again = LedgerBatch(
        orders=[order("o1", 9_999, qty=999.0), order("o3", 4_000)],
        fills=[fill("f1", "o1", 9_999, qty=999.0), fill("f2", "o3", 4_000), fill("f2", "o3", 4_000)],
    )
    result = ledger.write(again)
    assert result == WriteResult(("o3",), ("o1",), ("f2",), ("f1", "f2"))
    o1 = ledger.get_order("o1")
    assert o1 is not None and (o1["qty"], o1["ts_ns"], o1["status"]) == (10.0, 1_000, "filled")  # first write wins
    assert [(f["fill_id"], f["qty"]) for f in ledger.fills()] == [("f1", 10.0), ("f2", 10.0)]
    # the whole first batch a second time: no new orders or fills
    assert ledger.write(first_batch()) == WriteResult((), ("o1", "o2"), (), ("f1",))
    assert len(ledger.orders()) == 3 and len(ledger.fills()) == 2


# --- atomicity ---------------------------------------------------------------------------------------------------


def test_fill_for_unknown_order_fails_the_whole_batch(ledger: Ledger) -> None:
    ledger.write(first_batch())
    before = snapshot(ledger)
    bad = LedgerBatch(
        orders=[order("o9", 5_000)],
        order_updates=[OrderUpdate("o2", OrderStatus.CANCELED, 0.0, 0.0, 5_000)],
        fills=[fill("f9", "o9", 5_000), fill("f-ghost", "no-such-order", 5_000)],
        positions=[PositionRow("AAPL", 0.0, 0.0, 12.0, 102.0)],
        account=account(5_000, cash=1.0, mv=2.0),
        audit=[AuditEntry(5_000, "note", "should vanish")],
    )
    with pytest.raises(DB_INTEGRITY_ERRORS):
        ledger.write(bad)
    assert snapshot(ledger) == before
    assert ledger.get_order("o9") is None
    o2 = ledger.get_order("o2")
    assert o2 is not None and o2["status"] == "accepted"
    # the ledger is still usable after the rollback
    assert ledger.write(LedgerBatch(orders=[order("o9", 5_000)])).inserted_orders == ("o9",)


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("position", TypeError),  # a string where a number belongs: SQLite alone would store it
        ("account", ValueError),  # NaN equity
        ("audit", TypeError),  # payload that is not JSON: the very last statement of the batch
        ("update", UnknownOrderError),  # an update for an order never written
    ],
)
def test_a_failure_late_in_the_batch_rolls_back_everything(
    ledger: Ledger, where: str, expected: type[Exception]
) -> None:
    ledger.write(first_batch())
    before = snapshot(ledger)
    batch = LedgerBatch(
        orders=[order("o5", 6_000)],
        order_updates=[OrderUpdate("o2", OrderStatus.PARTIALLY_FILLED, 1.0, 250.0, 6_000)],
        fills=[fill("f5", "o5", 6_000)],
        positions=[PositionRow("AAPL", 20.0, 100.0, 0.0, 103.0)],
        account=account(6_000),
        audit=[AuditEntry(6_000, "note", "fine")],
    )
    if where == "position":
        batch.positions.append(PositionRow("MSFT", "ten", 1.0, 0.0, 1.0))  # type: ignore[arg-type]
    elif where == "account":
        batch.account = account(6_000, cash=math.nan)
    elif where == "audit":
        batch.audit.append(AuditEntry(6_000, "note", "bad payload", payload={"obj": object()}))
    else:
        batch.order_updates.append(OrderUpdate("never-written", OrderStatus.CANCELED, 0.0, 0.0, 6_000))
    with pytest.raises(expected):
        ledger.write(batch)
    assert snapshot(ledger) == before
    assert ledger.get_order("o5") is None and ledger.fills("o5") == []


# --- read views --------------------------------------------------------------------------------------------------


def test_flat_positions_disappear(ledger: Ledger) -> None:
    ledger.write(first_batch())
    ledger.write(LedgerBatch(positions=[PositionRow("MSFT", -5.0, 250.0, 0.0, 249.0)], account=account(4_000)))
    assert [(p["symbol"], p["qty"]) for p in ledger.positions()] == [("AAPL", 10.0), ("MSFT", -5.0)]
    ledger.write(LedgerBatch(positions=[PositionRow("AAPL", 0.0, 0.0, 15.0, 101.5)], account=account(5_000)))
    (msft,) = ledger.positions()
    assert msft["symbol"] == "MSFT" and msft["qty"] == -5.0 and msft["updated_ts_ns"] == 4_000
    # re-opening the symbol brings it back with the new values
    ledger.write(LedgerBatch(positions=[PositionRow("AAPL", 3.0, 104.0, 15.0, 104.0)], account=account(6_000)))
    aapl = next(p for p in ledger.positions() if p["symbol"] == "AAPL")
    assert (aapl["qty"], aapl["avg_price"], aapl["realized_pnl"], aapl["updated_ts_ns"]) == (3.0, 104.0, 15.0, 6_000)


def test_open_orders_and_order_filters(ledger: Ledger) -> None:
    statuses = list(OrderStatus)
    ledger.write(
        LedgerBatch(
            orders=[order(f"c{i}", 100 + i) for i in range(len(statuses))],
            order_updates=[
                OrderUpdate(f"c{i}", s, 0.0, 0.0, 200) for i, s in enumerate(statuses) if s is not OrderStatus.NEW
            ],
        )
    )
    open_ids = {o["client_order_id"] for o in ledger.open_orders()}
    expected_open = {f"c{i}" for i, s in enumerate(statuses) if s in ("new", "accepted", "partially_filled")}
    assert open_ids == expected_open and len(expected_open) == 3
    assert {o["status"] for o in ledger.open_orders()} == {"new", "accepted", "partially_filled"}

    everything = ledger.orders()
    assert [o["client_order_id"] for o in everything] == [f"c{i}" for i in reversed(range(len(statuses)))]
    assert [o["client_order_id"] for o in ledger.orders(limit=2)] == [f"c{len(statuses) - 1}", f"c{len(statuses) - 2}"]
    (filled,) = ledger.orders(status="filled")
    assert filled["client_order_id"] == f"c{statuses.index(OrderStatus.FILLED)}"
    assert ledger.orders(status=OrderStatus.CANCELED, limit=5)[0]["status"] == "canceled"
    with pytest.raises(ValueError, match="bogus"):
        ledger.orders(status="bogus")


def test_orders_tie_on_ts_breaks_by_id(ledger: Ledger) -> None:
    ledger.write(LedgerBatch(orders=[order("b", 50), order("a", 50), order("c", 40)]))
    assert [o["client_order_id"] for o in ledger.orders()] == ["b", "a", "c"]


def test_fills_in_time_order_and_filtered(ledger: Ledger) -> None:
    ledger.write(LedgerBatch(orders=[order("o1", 1), order("o2", 1)]))
    ledger.write(LedgerBatch(fills=[fill("late", "o1", 30, qty=1.0), fill("early", "o2", 10, qty=2.0)]))
    ledger.write(LedgerBatch(fills=[fill("mid", "o1", 20, qty=3.0)]))
    assert [f["fill_id"] for f in ledger.fills()] == ["early", "mid", "late"]
    assert [(f["fill_id"], f["qty"]) for f in ledger.fills("o1")] == [("mid", 3.0), ("late", 1.0)]


def test_equity_curve_is_ascending_and_account_is_the_latest_write(ledger: Ledger) -> None:
    for ts, cash in [(30, 3.0), (10, 1.0), (20, 2.0)]:
        ledger.write(LedgerBatch(account=account(ts, cash=cash, mv=0.0)))
    curve = ledger.equity_curve()
    assert [(r["ts_ns"], r["cash"], r["equity"]) for r in curve] == [(10, 1.0, 1.0), (20, 2.0, 2.0), (30, 3.0, 3.0)]
    acct = ledger.account()
    assert acct is not None and (acct["ts_ns"], acct["cash"]) == (20, 2.0)  # current row = last written
    ledger.write(LedgerBatch(account=account(20, cash=2.5, mv=0.0)))  # same ts again: appended after the first
    assert [r["cash"] for r in ledger.equity_curve()] == [1.0, 2.0, 2.5, 3.0]


def test_audit_payload_json_round_trip(ledger: Ledger) -> None:
    payload = {
        "reason": RejectReason.MAX_POSITION,  # enums are stored as their value
        "limit": 400_000,
        "ratio": 0.125,
        "ok": False,
        "none": None,
        "symbols": ["AAPL", "MSFT"],
        "nested": {"a": {"b": [1, 2.5, "x"]}},
        "unicode": "näive ✓",
    }
    ledger.write(
        LedgerBatch(
            audit=[
                AuditEntry(20, "risk_reject", "too big", "o1", payload),
                AuditEntry(10, "restart", "resumed"),
                AuditEntry(20, "kill_switch", "loss limit", payload={"loss": -5.5}),
            ]
        )
    )
    log = ledger.audit_log()
    assert [(e["ts_ns"], e["kind"]) for e in log] == [(10, "restart"), (20, "risk_reject"), (20, "kill_switch")]
    assert log[0]["payload"] == {} and log[0]["client_order_id"] is None
    assert log[1]["payload"] == {**payload, "reason": "max_position"}
    (kill,) = ledger.audit_log(kind="kill_switch")
    assert kill["payload"] == {"loss": -5.5} and kill["message"] == "loss limit"
    assert ledger.audit_log(kind="nothing") == []


def test_reopening_sees_the_data(ledger: Ledger, ledger_url: str) -> None:
    ledger.write(first_batch())
    expected = snapshot(ledger)
    ledger.close()
    again = open_ledger(ledger_url)
    try:
        assert again.schema_version() == LATEST_VERSION  # no migrate() needed to read
        assert snapshot(again) == expected
        assert again.migrate() == LATEST_VERSION
        assert again.write(first_batch()).duplicate_orders == ("o1", "o2")
    finally:
        again.close()


def test_reads_see_each_commit_at_once(ledger: Ledger, ledger_url: str) -> None:
    """No stale snapshot: neither on this object's own read connection nor on another object's."""
    other = open_ledger(ledger_url)
    try:
        for i in range(5):
            assert other.schema_version() == LATEST_VERSION  # single-row reads must not pin a read snapshot
            ledger.schema_version()
            ledger.write(LedgerBatch(orders=[order(f"s{i}", i)], account=account(i, cash=float(i))))
            for reader in (ledger, other):
                acct = reader.account()
                assert acct is not None and acct["ts_ns"] == i
                assert len(reader.orders()) == i + 1 and reader.orders(limit=1)[0]["client_order_id"] == f"s{i}"
            other.write(LedgerBatch(audit=[AuditEntry(i, "note", f"from the other object {i}")]))
            assert len(ledger.audit_log()) == i + 1
    finally:
        other.close()


def test_concurrent_reads_during_writes(ledger: Ledger) -> None:
    """The Serve app reads from worker threads while the engine writes."""
    errors: list[BaseException] = []
    done = threading.Event()

    def reader() -> None:
        try:
            while not done.is_set():
                acct = ledger.account()
                n_fills = len(ledger.fills())  # fills first: every fill's order was committed with or before it
                n_orders = len(ledger.orders())
                assert n_fills <= n_orders
                assert acct is None or acct["equity"] == acct["cash"] + acct["market_value"]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(40):
            ledger.write(
                LedgerBatch(
                    orders=[order(f"t{i}", i)],
                    fills=[fill(f"tf{i}", f"t{i}", i)],
                    account=account(i, cash=float(i), mv=1.0),
                )
            )
    finally:
        done.set()
        for t in threads:
            t.join(timeout=30)
    assert errors == []
    assert len(ledger.orders()) == 40 and len(ledger.equity_curve()) == 40


# --- urls ----------------------------------------------------------------------------------------------------------


def test_open_ledger_sqlite_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rel = open_ledger("sqlite:///runs/r1/ledger.db")
    try:
        assert isinstance(rel, SqliteLedger) and rel.url == "sqlite:///runs/r1/ledger.db"
        rel.migrate()
        assert (tmp_path / "runs" / "r1" / "ledger.db").is_file()  # parent directories created
    finally:
        rel.close()

    absolute = tmp_path / "abs" / "x.db"
    led = open_ledger(f"sqlite:///{absolute}")
    try:
        assert f"sqlite:///{absolute}".startswith("sqlite:////")
        assert isinstance(led, SqliteLedger) and Path(led.path) == absolute
        led.migrate()
        journal = led._query("PRAGMA journal_mode")[0]["journal_mode"]
        fks = led._query("PRAGMA foreign_keys")[0]["foreign_keys"]
        assert (journal, fks) == ("wal", 1)
    finally:
        led.close()
    assert absolute.is_file()

    mem = open_ledger("sqlite:///:memory:")
    try:
        assert mem.migrate() == LATEST_VERSION
        mem.write(first_batch())
        assert len(mem.orders()) == 2
        assert not (tmp_path / ":memory:").exists()
    finally:
        mem.close()

    # a plain path works too (the constructor takes either)
    with SqliteLedger(tmp_path / "plain.db") as plain:
        assert plain.url == f"sqlite:///{tmp_path / 'plain.db'}"


@pytest.mark.parametrize(
    "url", ["mysql://u@h/db", "redis://127.0.0.1:6379/0", "ledger.db", "", "sqlite:/x.db", "sqlite:///"]
)
def test_open_ledger_rejects_unknown_urls(url: str) -> None:
    with pytest.raises(ValueError, match="url") as info:
        open_ledger(url)
    assert repr(url) in str(info.value)


def test_bad_url_error_hides_the_password() -> None:
    with pytest.raises(ValueError, match="mysql://admin:\\*\\*\\*@db/x") as info:
        open_ledger("mysql://admin:hunter2@db/x")
    assert "hunter2" not in str(info.value)


@pytest.mark.postgres
def test_open_ledger_postgres_schemes(pg_dsn: str) -> None:
    from tradesys.ledger.postgres import PostgresLedger

    for url in (pg_dsn, pg_dsn.replace("postgresql://", "postgres://", 1)):
        led = open_ledger(url)
        try:
            assert isinstance(led, PostgresLedger) and led.url == url
            assert led.migrate() == LATEST_VERSION
        finally:
            led.close()


@pytest.mark.parametrize(("query", "pragma"), [("", 1), ("?synchronous=full", 2)])
def test_sqlite_durability_option(tmp_path: Path, query: str, pragma: int) -> None:
    """NORMAL (1) by default in WAL mode; `?synchronous=full` (2) fsyncs every commit."""
    from tradesys.ledger.sqlite import SqliteLedger, absolute_sqlite_url

    led = SqliteLedger(f"sqlite:///{tmp_path}/d.db{query}")
    assert led._query("PRAGMA synchronous")[0]["synchronous"] == pragma
    assert absolute_sqlite_url(led.url) == led.url and led.url.endswith(query or ".db")
    led.close()
    with pytest.raises(ValueError, match="unknown option 'bogus'"):
        SqliteLedger(f"sqlite:///{tmp_path}/d.db?bogus=1")


# --- change data capture: the transactional outbox ---------------------------------------------------------------


def test_every_committed_change_has_one_outbox_event_in_write_order(ledger: Ledger) -> None:
    ledger.write(first_batch())
    events = ledger.outbox()
    assert [(e["entity"], e["entity_key"], e["event"]) for e in events] == [
        ("order", "o1", "created"),
        ("order", "o2", "created"),
        ("order", "o1", "updated"),
        ("order", "o2", "updated"),
        ("fill", "f1", "created"),
        ("position", "AAPL", "upserted"),
        ("account", "account", "upserted"),
    ]
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    # the payloads are the rows as written: replaying them rebuilds what the ledger shows
    orders: dict[str, dict[str, Any]] = {}
    for e in events:
        if e["entity"] == "order":
            orders.setdefault(e["entity_key"], {}).update(e["payload"])
    for cid, row in orders.items():
        assert row == ledger.get_order(cid)
    assert next(e for e in events if e["entity"] == "fill")["payload"] == ledger.fills()[0]
    assert next(e for e in events if e["entity"] == "account")["payload"] == ledger.account()
    # a replayed batch adds no order or fill events (duplicates are not changes)
    ledger.write(LedgerBatch(orders=[order("o1", 1_000)], fills=[fill("f1", "o1", 3_000)]))
    assert len(ledger.outbox()) == len(events)


def test_a_failed_write_leaves_no_event(ledger: Ledger) -> None:
    ledger.write(first_batch())
    n = len(ledger.outbox())
    with pytest.raises(DB_INTEGRITY_ERRORS):
        ledger.write(LedgerBatch(orders=[order("o9", 5_000)], fills=[fill("f-ghost", "no-such-order", 5_000)],
                                 account=account(5_000)))
    assert len(ledger.outbox()) == n


def test_outbox_paging_cursor_and_prune(ledger: Ledger) -> None:
    ledger.write(first_batch())
    events = ledger.outbox()
    assert ledger.outbox(events[2]["id"], limit=2) == events[3:5]
    assert ledger.outbox_cursor("r1") == 0
    ledger.advance_outbox_cursor("r1", events[4]["id"])
    ledger.advance_outbox_cursor("r1", events[1]["id"])  # never backwards
    assert ledger.outbox_cursor("r1") == events[4]["id"] and ledger.outbox_cursor("r2") == 0
    assert ledger.prune_outbox(events[4]["id"]) == 5
    assert ledger.outbox() == events[5:]
