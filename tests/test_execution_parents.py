"""Parent orders: the ledger's parent_orders table, the execution service's parent book, and their recovery.

The references are independent of the code under test: TWAP's closed-form schedule (cumulative whole shares
floor(qty * k / n), the last slice sending the rest), the accounting invariants recomputed from the fills
(tests/ledger_checks.py), and an undisturbed run of the same configuration for every restart.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from tradesys.backtest.runner import run_backtest
from tradesys.broker.sim import SimBroker
from tradesys.config import ConfigError, TradesysConfig, load_config
from tradesys.core.orders import Order, OrderType, Side
from tradesys.core.schemas import batch_ts
from tradesys.data import bars_per_year, make_source
from tradesys.engine.recovery import restore_venue, resume_after, warm_gate
from tradesys.engine.step import TradingComponents, run_step
from tradesys.execution.algos.vwap import DAY_NS, VolumeCurve
from tradesys.execution.parents import decision_rows, is_child_of
from tradesys.execution.service import ExecutionService
from tradesys.ledger import Ledger, LedgerBatch, open_ledger
from tradesys.ledger.base import ParentRow
from tradesys.ledger.book import BookKeeper
from tradesys.risk.pretrade import PreTradeRisk
from tradesys.strategy import make_strategy

from .ledger_checks import assert_ledger_consistent, closes_by_ts, trade_record

# --- (a) the ledger contract for parent rows, on SQLite and PostgreSQL ------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    url = f"sqlite:///{tmp_path}/ledger.db" if request.param == "sqlite" else str(request.getfixturevalue("pg_dsn"))
    led = open_ledger(url)
    led.migrate()
    yield led
    led.close()


def parent(status: str = "active", **kw: Any) -> ParentRow:
    base: dict[str, Any] = dict(
        parent_id="trend-100-AAPL", symbol="AAPL", side=Side.BUY, qty=1000.0, algo="twap",
        params={"slices": 5, "jitter": 0.25, "tag": "x", "catch_up": True}, horizon_bars=5, start_ns=0, end_ns=0,
        ts_ns=100, decision_price=187.25, status=status, strategy_id="trend", updated_ts_ns=100,
    )
    return ParentRow(**{**base, **kw})


def test_parent_row_round_trip_upsert_and_filter(ledger: Ledger) -> None:
    first = parent()
    ledger.write(LedgerBatch(parents=[first]))
    (row,) = ledger.parent_orders()
    assert row == {
        "parent_id": "trend-100-AAPL", "symbol": "AAPL", "side": "buy", "qty": 1000.0, "algo": "twap",
        "params": {"slices": 5, "jitter": 0.25, "tag": "x", "catch_up": True}, "horizon_bars": 5, "start_ns": 0,
        "end_ns": 0, "ts_ns": 100, "decision_price": 187.25, "status": "active", "filled_qty": 0.0,
        "avg_fill_price": 0.0, "children": 0, "slices": 0, "market_volume": 0.0, "last_ts_ns": 0,
        "limit_price": None, "strategy_id": "trend", "updated_ts_ns": 100,
    }
    # progress is an upsert by parent id; what the strategy asked for (qty, algo, params, side) is written once
    progressed = parent(
        "filled", qty=1.0, algo="pov", side=Side.SELL, params={}, start_ns=160, end_ns=400, filled_qty=1000.0,
        avg_fill_price=187.5, children=5, slices=5, market_volume=5e5, last_ts_ns=400, updated_ts_ns=400,
    )
    for _ in range(2):  # writing the same row twice changes nothing more
        ledger.write(LedgerBatch(parents=[progressed]))
    (row,) = ledger.parent_orders()
    assert (row["qty"], row["algo"], row["side"], row["params"]["slices"]) == (1000.0, "twap", "buy", 5)
    assert (row["start_ns"], row["end_ns"], row["status"], row["filled_qty"], row["avg_fill_price"]) == (
        160, 400, "filled", 1000.0, 187.5
    )
    assert (row["children"], row["slices"], row["market_volume"], row["last_ts_ns"]) == (5, 5, 5e5, 400)
    ledger.write(LedgerBatch(parents=[parent(parent_id="p2", ts_ns=50, decision_price=math.nan)]))
    assert [r["parent_id"] for r in ledger.parent_orders()] == ["p2", "trend-100-AAPL"]  # oldest decision first
    assert [r["parent_id"] for r in ledger.parent_orders(status="active")] == ["p2"]
    assert ledger.parent_orders(status="active")[0]["decision_price"] is None  # NaN is not a number SQL keeps
    events = [e for e in ledger.outbox() if e["entity"] == "parent_order"]
    assert [(e["entity_key"], e["payload"]["status"]) for e in events] == [
        ("trend-100-AAPL", "active"), ("trend-100-AAPL", "filled"), ("trend-100-AAPL", "filled"), ("p2", "active")
    ]


def test_bad_parent_row_fails_the_whole_batch(ledger: Ledger) -> None:
    order = Order("o1", "AAPL", Side.BUY, 10.0, ts_ns=1)
    for bad, field in ((parent(status="done"), "parent.status"), (parent(qty=math.inf), "parent.qty"),
                       (parent(params={"x": math.nan}), "parent.params")):
        with pytest.raises((ValueError, TypeError), match=field):
            ledger.write(LedgerBatch(orders=[order], parents=[bad]))
    assert ledger.orders() == [] and ledger.parent_orders() == []  # all or nothing


# --- the execution service with a parent, by hand -----------------------------------------------------------------

T0, BAR = 1_700_000_000_000_000_000, 60_000_000_000


def bar(i: int, close: float = 100.0, volume: float = 1e6, symbol: str = "AAPL") -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(
        [{"ts": T0 + i * BAR, "symbol": symbol, "open": close, "high": close, "low": close, "close": close,
          "volume": volume}],
        schema=pa.schema([("ts", pa.timestamp("ns", tz="UTC")), ("symbol", pa.string()), ("open", pa.float64()),
                          ("high", pa.float64()), ("low", pa.float64()), ("close", pa.float64()),
                          ("volume", pa.float64())]),
    )


def test_service_works_a_twap_parent_and_counts_its_rest_as_working() -> None:
    cfg = load_config(overrides={"broker.slippage_bps": 0.0, "broker.fee_bps": 0.0})
    book = BookKeeper(open_ledger("sqlite:///:memory:"), 1e6)
    svc = ExecutionService(SimBroker(cfg.broker), book)
    svc.on_bars(bar(0))
    order = Order("p", "AAPL", Side.BUY, 1003.0, ts_ns=T0, algo="twap",
                  algo_params=(("horizon_bars", 4), ("slices", 4)))
    rep = svc.submit([order], ts_ns=T0)
    assert rep.working == {"AAPL": 1003.0}  # nothing sent yet: the whole parent is still to come
    assert book.ledger.orders() == [] and book.ledger.parent_orders()[0]["decision_price"] == 100.0
    sent = []
    for i in range(1, 6):
        rep = svc.on_bars(bar(i, close=100.0 + i))
        sent.append([(o["client_order_id"], o["qty"]) for o in book.ledger.orders() if o["ts_ns"] == T0 + i * BAR])
        expected_rest = 1003.0 - sum(q for step in sent for _, q in step)
        assert rep.working.get("AAPL", 0.0) == pytest.approx(expected_rest)
    # TWAP over 4 bars, whole shares: cumulative floor(1003 k / 4), the last slice the exact rest
    assert sent == [[("p.1", 250.0)], [("p.2", 251.0)], [("p.3", 251.0)], [("p.4", 251.0)], []]
    (row,) = book.ledger.parent_orders()
    assert (row["status"], row["filled_qty"], row["children"], row["slices"]) == ("filled", 1003.0, 4, 4)
    assert (row["start_ns"], row["end_ns"]) == (T0 + BAR, T0 + 4 * BAR)
    assert row["avg_fill_price"] == pytest.approx((250 * 101 + 251 * (102 + 103 + 104)) / 1003)
    assert row["market_volume"] == 4e6


def test_a_halt_sends_no_children_and_the_algorithm_catches_up_after_it() -> None:
    """While reconciliation halts new orders (`ExecutionService.halted`), slices count but send nothing."""
    cfg = load_config(overrides={"broker.slippage_bps": 0.0})
    book = BookKeeper(open_ledger("sqlite:///:memory:"), 1e6)
    svc = ExecutionService(SimBroker(cfg.broker), book)
    svc.on_bars(bar(0))
    svc.submit([Order("p", "AAPL", Side.BUY, 1003.0, ts_ns=T0, algo="twap",
                      algo_params=(("horizon_bars", 4), ("slices", 4)))], ts_ns=T0)
    for i in range(1, 5):
        svc.halted = "test halt" if i <= 2 else None
        svc.on_bars(bar(i))
    kids = sorted((o["ts_ns"], o["qty"]) for o in book.ledger.orders())
    assert kids == [(T0 + 3 * BAR, 752.0), (T0 + 4 * BAR, 251.0)]  # floor(1003 * 3 / 4), then the rest
    (row,) = book.ledger.parent_orders()
    assert (row["status"], row["slices"], row["start_ns"]) == ("filled", 4, T0 + BAR)


def test_parent_expires_at_the_end_of_its_window_and_bad_algo_is_refused() -> None:
    cfg = load_config(overrides={"broker.participation_cap": 0.001})  # 1,000 shares a bar at most
    book = BookKeeper(open_ledger("sqlite:///:memory:"), 1e7)
    svc = ExecutionService(SimBroker(cfg.broker), book)
    svc.on_bars(bar(0))
    rep = svc.submit(
        [Order("p", "AAPL", Side.SELL, 5000.0, ts_ns=T0, algo="twap", algo_params=(("horizon_bars", 2),)),
         Order("q", "AAPL", Side.BUY, 10.0, ts_ns=T0, algo="nope"),
         Order("r", "AAPL", Side.BUY, 10.0, ts_ns=T0, algo="twap", algo_params=(("horizon_bars", 1),)),
         Order("s", "AAPL", Side.BUY, 10.0, ts_ns=T0, algo="iceberg")],
        ts_ns=T0,
    )
    # an unknown algorithm, a schedule with no window, an iceberg with no limit: recorded as rejected, never worked
    assert rep.rejected == 3
    assert {cid: book.ledger.get_order(cid)["reason"] for cid in "qrs"} == dict.fromkeys("qrs", "invalid_order")
    assert [r["parent_id"] for r in book.ledger.parent_orders()] == ["p"]
    for i in range(1, 5):
        svc.on_bars(bar(i))
    (row,) = book.ledger.parent_orders()
    # TWAP's default 10 slices over a 2-bar window: bar 1 sends 500 (fills), bar 2 (the window's end) the other
    # 4,500, which fills 1,000 a bar on bars 2 and 3, then expires with its day; the parent expires with it
    kids = [o for o in book.ledger.orders() if is_child_of(o["client_order_id"], {"p"})]
    assert [(o["qty"], o["filled_qty"], o["status"]) for o in reversed(kids)] == [
        (500.0, 500.0, "filled"), (4500.0, 2000.0, "expired")
    ]
    assert (row["status"], row["filled_qty"], row["updated_ts_ns"]) == ("expired", 2500.0, T0 + 3 * BAR)
    assert svc.working_qty() == {}


# --- (b) a backtest with execution.algo = twap ---------------------------------------------------------------------

BASE: dict[str, Any] = {
    "data.source": "synthetic", "data.symbols": ["ALPHA", "BRAVO", "CHARLIE"], "data.synthetic_days": 1,
    "strategy.fast": 5, "strategy.slow": 20, "strategy.vol_lookback": 10, "strategy.rebalance_band": 0.1,
    "execution.algo": "twap", "execution.horizon_bars": 5, "execution.algo_params": {"slices": 5},
}


def test_config_refuses_unknown_algo_and_bad_params_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"^execution\.algo: unknown execution algorithm 'tw'"):
        load_config(overrides={"execution.algo": "tw"})
    with pytest.raises(ConfigError, match=r"^execution\.algo_params: twap\.slices"):
        load_config(overrides={"execution.algo": "twap", "execution.algo_params": {"slices": 0}})
    with pytest.raises(ConfigError, match=r"^execution\.algo_params: needs execution\.algo"):
        load_config(overrides={"execution.algo_params": {"slices": 3}})
    with pytest.raises(ConfigError, match=r"^execution\.horizon_bars: twap needs a window of at least 2 bars"):
        load_config(overrides={"execution.algo": "twap", "execution.horizon_bars": 1})
    assert load_config(overrides={"execution.algo": "market", "execution.horizon_bars": 1}).execution.horizon_bars == 1
    with pytest.raises(ConfigError, match=r"execution\.algo: parent\.limit_price: an iceberg needs a limit price"):
        load_config(overrides={"execution.algo": "iceberg"})  # the strategy's orders are market orders
    assert load_config(overrides={"execution.algo": "iceberg", "strategy.order_type": "limit"}).execution.algo


def test_the_vectorised_engine_is_not_picked_for_an_algorithm() -> None:
    """It sends every order as is, so an accepted execution.algo would do nothing there."""
    from tradesys.backtest.sweep import check_engine, trial_engine

    cfg = load_config(overrides=BASE)
    assert trial_engine("auto", cfg, []) == ("event", None)
    assert (trial_engine("vectorized", cfg, [])[1] or "").startswith("execution.algo: ")
    with pytest.raises(ConfigError, match=r"^execution\.algo: "):
        check_engine("vectorized", [], cfg)
    plain = {k: v for k, v in BASE.items() if not k.startswith("execution.")}
    assert trial_engine("auto", load_config(overrides=plain), [])[0] == "vectorized"


def test_child_fills_count_in_decision_to_fill_latency() -> None:
    """With every order worked by an algorithm, every fill is a child's: a child is decided when it is sliced, so
    the run still reports decision-to-fill latency (it was NaN when only the strategy's own orders counted)."""
    summary, led = run_backtest(load_config(overrides={**BASE, "execution.algo_min_qty": 0}))
    assert led.parent_orders() and all("." in f["client_order_id"] for f in led.fills())
    assert math.isfinite(summary.latency_p50_ms) and 0 <= summary.latency_p50_ms <= summary.latency_p99_ms


def test_backtest_with_twap_every_fill_is_a_child_and_the_book_balances() -> None:
    cfg = load_config(overrides={**BASE, "execution.algo_min_qty": 300})
    _, led = run_backtest(cfg)
    parents = led.parent_orders()
    orders, fills = led.orders(), led.fills()
    ids = {p["parent_id"] for p in parents}
    children: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for o in orders:
        if is_child_of(o["client_order_id"], ids):
            children[o["client_order_id"].rsplit(".", 1)[0]].append(o)
        else:  # below algo_min_qty: sent as is
            assert o["qty"] < 300
    assert len(parents) >= 10 and any(o["qty"] < 300 for o in orders if o["client_order_id"] not in children)
    by_id = {o["client_order_id"]: o for o in orders}
    assert all(f["client_order_id"] in by_id for f in fills)
    closes = closes_by_ts(make_source(cfg.data))
    for p in parents:
        kids = sorted(children[p["parent_id"]], key=lambda o: int(o["client_order_id"].rsplit(".", 1)[1]))
        assert [int(k["client_order_id"].rsplit(".", 1)[1]) for k in kids] == list(range(1, p["children"] + 1))
        assert sum(k["filled_qty"] for k in kids) == pytest.approx(p["filled_qty"], abs=1e-9)
        assert sum(k["qty"] for k in kids) <= p["qty"] + 1e-9  # never over-sent
        assert all((k["symbol"], k["side"]) == (p["symbol"], p["side"]) for k in kids)
        assert p["qty"] >= 300 and p["decision_price"] == closes[p["ts_ns"]][p["symbol"]]
        if p["status"] == "filled":
            # liquidity is ample: each slice's market child filled at once, so the children are TWAP's schedule
            n, q = p["horizon_bars"], p["qty"]
            cum = [math.floor(q * k / n + 1e-9) for k in range(1, n)] + [q]
            assert [k["qty"] for k in kids] == [b - a for a, b in zip([0, *cum], cum, strict=False)]
            assert [k["ts_ns"] for k in kids] == [p["ts_ns"] + i * 60_000_000_000 for i in range(1, n + 1)]
            assert p["filled_qty"] == q and p["end_ns"] == p["start_ns"] + (n - 1) * 60_000_000_000
    assert {p["status"] for p in parents} <= {"filled", "active", "expired"}
    assert sum(p["status"] == "filled" for p in parents) >= 10
    assert_ledger_consistent(led, cfg.initial_cash, closes)


# --- (c) recovery: stop mid-parent, rebuild every component from the ledger, continue -----------------------------

# limit orders at a tight participation cap leave children resting, partly filled and expired; the order-rate
# limit binds, so a gate rebuilt from the wrong orders (the children instead of their parents) would differ
RESUME: dict[str, Any] = {
    **BASE, "strategy.order_type": "limit", "broker.participation_cap": 0.003, "execution.horizon_bars": 8,
    "execution.algo_params": {"slices": 4, "jitter": 0.3},
    "risk.max_orders_per_window": 12, "risk.order_window_seconds": 1200,
}


def _parent_record(led: Ledger) -> list[tuple]:
    return [tuple(sorted((k, str(v)) for k, v in r.items())) for r in led.parent_orders()]


class _FailChildrenOnce:
    """The venue, except that sending children at bar `at_ts` raises (a crash after their write-ahead)."""

    def __init__(self, venue: SimBroker, at_ts: int) -> None:
        self.venue, self.at_ts, self.fired = venue, at_ts, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.venue, name)

    def submit(self, orders: list[Order]) -> Any:
        children = orders and all("." in o.client_order_id for o in orders)
        if not self.fired and children and orders[0].ts_ns == self.at_ts:
            self.fired = True
            raise RuntimeError("crash after the children were recorded")
        return self.venue.submit(orders)


@pytest.fixture(scope="module")
def undisturbed() -> tuple[Any, list[tuple]]:
    cfg = load_config(overrides=RESUME)
    _, led = run_backtest(cfg)
    assert {o["type"] for o in led.orders()} == {OrderType.LIMIT.value}
    assert any(p["status"] == "expired" for p in led.parent_orders()), "partial parents must occur"
    assert any(o["reason"] == "order_rate" for o in led.orders()), "the rate limit must bind"
    return trade_record(led), _parent_record(led)


def _resumed(cfg: TradesysConfig, url: str, batches: list[pa.RecordBatch]) -> tuple[TradingComponents, int, Any]:
    """Every stateful component rebuilt from the ledger as the live loop's actors do (tradesys.engine.recovery):
    strategy and gate warmed on the bars up to the last booked step, the venue restored, the service recovered,
    and the index of the first step to run (`resume_after` on the strategy's decisions)."""
    book = BookKeeper(open_ledger(url), cfg.initial_cash)
    led = book.ledger
    booked = book.snapshot().ts_ns
    history = [b for b in batches if batch_ts(b) <= booked]
    orders, fills = book.ledger_rows()
    decided = decision_rows(orders, led.parent_orders())
    strategy = make_strategy(cfg.strategy, len(cfg.data.symbols or []), bars_per_year(cfg.data), cfg.risk,
                             cfg.execution)
    strategy.warm_up(history)
    gate = warm_gate(PreTradeRisk(cfg.risk), history, decided, led.audit_log(), led.equity_curve(),
                     cfg.initial_cash, booked)
    venue = restore_venue(cfg.broker, history, orders, fills, led.audit_log())
    execution = ExecutionService.recover(venue, book)
    execution.volumes.warm_up(history)  # as the ExecutionActor does: a VWAP parent's curve after the restart
    comps = TradingComponents(strategy=strategy, risk=gate, execution=execution)
    after = resume_after(booked, decided)
    return comps, next(i for i, b in enumerate(batches) if batch_ts(b) > after), led


@pytest.mark.parametrize("crash", [False, True], ids=["stop_between_steps", "crash_after_children_recorded"])
def test_restart_mid_parent_sends_the_same_children(
    tmp_path: Path, undisturbed: tuple[Any, list[tuple]], crash: bool
) -> None:
    cfg = load_config(overrides=RESUME)
    url = f"sqlite:///{tmp_path}/ledger.db"
    batches = list(make_source(cfg.data).batches())
    k = 140
    book = BookKeeper(open_ledger(url), cfg.initial_cash)
    venue: Any = SimBroker(cfg.broker)
    if crash:
        venue = _FailChildrenOnce(venue, batch_ts(batches[k]))
    comps = TradingComponents(
        strategy=make_strategy(cfg.strategy, 3, bars_per_year(cfg.data), cfg.risk, cfg.execution),
        risk=PreTradeRisk(cfg.risk),
        execution=ExecutionService(venue, book),
    )
    i = 0
    try:
        while i <= k:
            run_step(batches[i], batch_ts(batches[i]), comps)
            i += 1
    except RuntimeError:
        assert crash and i == k
    else:
        assert not crash
    led = book.ledger
    assert led.parent_orders(status="active"), "the restart must fall inside a parent's window"
    if crash:
        assert any(o["status"] == "new" for o in led.orders()), "children recorded but never sent"
    led.close()
    comps, start, led = _resumed(cfg, url, batches)
    ts_k = batch_ts(batches[k])
    decided_k = any(int(o["ts_ns"]) == ts_k for o in decision_rows(led.orders(), led.parent_orders()))
    # the crashed step decided nothing yet (only children were recorded at its bar): it runs again
    assert start == (k + 1 if decided_k else k) and (not crash or start == k)
    for bars in batches[start:]:
        run_step(bars, batch_ts(bars), comps)
    assert trade_record(led) == undisturbed[0]
    assert _parent_record(led) == undisturbed[1]
    assert_ledger_consistent(led, cfg.initial_cash, closes_by_ts(make_source(cfg.data)))


VWAP: dict[str, Any] = {
    **BASE, "data.synthetic_days": 3, "execution.algo": "vwap", "execution.algo_params": {},
    "execution.horizon_bars": 30,
}


def test_vwap_parent_carries_the_curve_predicted_from_past_sessions(tmp_path: Path) -> None:
    """A VWAP parent whose strategy names no curve gets the one fitted on the completed sessions (UTC days) before
    its decision, computed here independently from the source; on the first day there is none (linear schedule).
    A run stopped on day 3 and resumed (the service warmed on the booked bars, as the ExecutionActor is) records
    the same parents and trades as an undisturbed run."""
    cfg = load_config(overrides=VWAP)
    _, led = run_backtest(cfg)
    table = pa.Table.from_batches(list(make_source(cfg.data).batches()))
    parents = led.parent_orders()
    days = sorted({int(p["ts_ns"]) // DAY_NS for p in parents})
    assert len(days) == 3
    for p in parents:
        day = int(p["ts_ns"]) // DAY_NS
        if day == days[0]:
            assert "curve" not in p["params"], p["parent_id"]
            continue
        ts = table["ts"].cast(pa.int64()).to_numpy()
        past = table.filter(pa.array((ts // DAY_NS < day) & (table["symbol"].to_numpy(zero_copy_only=False)
                                                                == p["symbol"])))
        assert p["params"]["curve"] == VolumeCurve.fit(past, sessions=20).to_json(), p["parent_id"]
    assert any(p["status"] == "filled" and "curve" in p["params"] for p in parents)
    undisturbed = trade_record(led), _parent_record(led)
    # stop on day 3 and resume
    batches = list(make_source(cfg.data).batches())
    k = next(i for i, b in enumerate(batches) if batch_ts(b) // DAY_NS == days[2]) + 40
    url = f"sqlite:///{tmp_path}/vwap.db"
    book = BookKeeper(open_ledger(url), cfg.initial_cash)
    comps = TradingComponents(
        strategy=make_strategy(cfg.strategy, 3, bars_per_year(cfg.data), cfg.risk, cfg.execution),
        risk=PreTradeRisk(cfg.risk), execution=ExecutionService(SimBroker(cfg.broker), book),
    )
    for bars in batches[: k + 1]:
        run_step(bars, batch_ts(bars), comps)
    book.ledger.close()
    comps, start, led2 = _resumed(cfg, url, batches)
    for bars in batches[start:]:
        run_step(bars, batch_ts(bars), comps)
    assert (trade_record(led2), _parent_record(led2)) == undisturbed


# --- (d) the live loop: the ExecutionActor killed mid-parent changes nothing ----------------------------------------


@pytest.mark.ray
@pytest.mark.slow
def test_live_execution_actor_killed_mid_parent_trades_as_undisturbed(
    ray_session: None, tmp_path: Path, undisturbed: tuple[Any, list[tuple]]
) -> None:
    import ray

    from .test_live_recovery import _start, _wait_step

    url = f"sqlite:///{tmp_path}/live.db"
    overrides = {**RESUME, "ledger.url": url, "data.speed": 150.0, "ray.max_restarts": 3,
                 "ray.include_dashboard": False}
    cfg = load_config(overrides=overrides)
    t, out, sup = _start(cfg, "parents-kill-execution")
    _wait_step(sup, 140)
    ray.kill(ray.get(sup.children.remote())["execution"], no_restart=False)
    t.join(timeout=180)
    assert not t.is_alive() and out["reason"] == "completed" and out["restarts"] == 1
    led = open_ledger(url)
    assert trade_record(led) == undisturbed[0]
    assert _parent_record(led) == undisturbed[1]
    assert_ledger_consistent(led, cfg.initial_cash, closes_by_ts(make_source(cfg.data)))
