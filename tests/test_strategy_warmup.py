"""Warm-up and rebuild hooks, without Ray: a run resumed on its ledger trades exactly as an undisturbed run, and
strategies size within the risk limits they are given.

The in-process resume drives the same step (`tradesys.engine.step.run_step`) with components rebuilt by
`tradesys.engine.recovery` (what the live loop's actors do in their constructors), and compares the whole ledger,
order by order and fill by fill, with an undisturbed run of the same configuration.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from tradesys.broker.sim import SimBroker
from tradesys.config import TradesysConfig, load_config
from tradesys.core.orders import Order, OrderEvent
from tradesys.core.portfolio import Portfolio
from tradesys.core.schemas import batch_ts
from tradesys.data import bars_per_year, make_source
from tradesys.engine.recovery import restore_venue, resume_after, warm_gate
from tradesys.engine.step import TradingComponents, run_step
from tradesys.execution.service import ExecutionService
from tradesys.ledger import open_ledger
from tradesys.ledger.book import BookKeeper
from tradesys.risk.pretrade import PreTradeRisk
from tradesys.strategy import TrendStrategy, make_strategy
from tradesys.strategy.sizing import rebalance_order, scale_to_leverage

from .ledger_checks import assert_ledger_consistent, closes_by_ts, trade_record
from .test_live_recovery import SMALL


def small() -> TradesysConfig:
    return load_config(overrides=SMALL)


class _BrokerDiesOnSubmit:
    """Fault injection: the venue process dies inside the N-th submit, before it sees the orders."""

    def __init__(self, venue: SimBroker, at: int) -> None:
        self.venue, self.at, self.n = venue, at, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.venue, name)

    def submit(self, orders: Sequence[Order]) -> list[OrderEvent]:
        self.n += 1
        if self.n == self.at:
            raise ConnectionError("venue died")
        return self.venue.submit(orders)


def _components(cfg: TradesysConfig, book: BookKeeper, batches: list[pa.RecordBatch], crash_at: int | None = None
                ) -> TradingComponents:
    """The step's components for `book`: fresh, or rebuilt as of its last booked step (a resume)."""
    n = len(make_source(cfg.data).symbols)
    strategy = make_strategy(cfg.strategy, n, bars_per_year(cfg.data), cfg.risk)
    gate = PreTradeRisk(cfg.risk)
    upto = book.snapshot().ts_ns if book.restored else 0
    if upto:
        before = [b for b in batches if batch_ts(b) <= upto]
        ledger = book.ledger
        strategy.warm_up(before)
        warm_gate(gate, before, ledger.orders(), ledger.audit_log(), ledger.equity_curve(), cfg.initial_cash, upto)
        orders, fills = book.ledger_rows()
        venue: Any = restore_venue(cfg.broker, before, orders, fills, ledger.audit_log())
        execution = ExecutionService.recover(venue, book)
    else:
        venue = SimBroker(cfg.broker)
        if crash_at is not None:
            venue = _BrokerDiesOnSubmit(venue, crash_at)
        execution = ExecutionService(venue, book)
    return TradingComponents(strategy, gate, execution)


@pytest.fixture(scope="module")
def run_data() -> tuple[TradesysConfig, list[pa.RecordBatch], Any]:
    cfg = small()
    batches = [b for b in make_source(cfg.data).batches() if b.num_rows]
    ledger = open_ledger("sqlite:///:memory:")
    book = BookKeeper(ledger, cfg.initial_cash)
    c = _components(cfg, book, batches)
    for b in batches:
        run_step(b, batch_ts(b), c)
    return cfg, batches, ledger


def _resume(cfg: TradesysConfig, url: str, batches: list[pa.RecordBatch]) -> Any:
    """Open the ledger again with rebuilt components and run the steps the resume rule says are left."""
    ledger = open_ledger(url)
    book = BookKeeper(ledger, cfg.initial_cash)
    c = _components(cfg, book, batches)
    after = resume_after(book.snapshot().ts_ns, ledger.orders())
    for b in batches:
        if batch_ts(b) > after:
            run_step(b, batch_ts(b), c)
    return ledger


@pytest.mark.parametrize("stop_at", [37, 150, 301])
def test_resume_after_a_stop_trades_as_undisturbed(tmp_path: Path, run_data: Any, stop_at: int) -> None:
    cfg, batches, undisturbed = run_data
    url = f"sqlite:///{tmp_path}/r.db"
    book = BookKeeper(open_ledger(url), cfg.initial_cash)
    c = _components(cfg, book, batches)
    for b in batches[:stop_at]:
        run_step(b, batch_ts(b), c)
    resumed = _resume(cfg, url, batches)
    assert trade_record(resumed) == trade_record(undisturbed)
    assert_ledger_consistent(resumed, cfg.initial_cash, closes_by_ts(make_source(cfg.data)))


def test_resume_of_a_step_cut_off_after_marking_reruns_it(tmp_path: Path, run_data: Any) -> None:
    """Crash between the step's mark and its decision: the resume runs that step again, and only it."""
    cfg, batches, undisturbed = run_data
    url = f"sqlite:///{tmp_path}/m.db"
    book = BookKeeper(open_ledger(url), cfg.initial_cash)
    c = _components(cfg, book, batches)
    k = next(i for i in range(150, len(batches)) if any(o["ts_ns"] == batch_ts(batches[i])
                                                        for o in undisturbed.orders()))
    for b in batches[:k]:
        run_step(b, batch_ts(b), c)
    c.execution.on_bars(batches[k])  # the step's mark is booked, then the process dies
    assert resume_after(batch_ts(batches[k]), book.ledger.orders()) == batch_ts(batches[k]) - 1
    assert trade_record(_resume(cfg, url, batches)) == trade_record(undisturbed)


def test_resume_sends_orders_recorded_but_never_sent(tmp_path: Path, run_data: Any) -> None:
    """Crash after the write-ahead of a step's orders, before the venue saw them: recovery sends them once."""
    cfg, batches, undisturbed = run_data
    url = f"sqlite:///{tmp_path}/n.db"
    book = BookKeeper(open_ledger(url), cfg.initial_cash)
    c = _components(cfg, book, batches, crash_at=40)
    with pytest.raises(ConnectionError):
        for b in batches:
            run_step(b, batch_ts(b), c)
    assert book.ledger.orders(status="new"), "the fault left no unsent order"
    resumed = _resume(cfg, url, batches)
    assert not resumed.orders(status="new")
    assert trade_record(resumed) == trade_record(undisturbed)


def test_venue_restored_from_the_ledger_continues_exactly(run_data: Any, tmp_path: Path) -> None:
    """SimBroker.restore mid-run has the live venue's orders, fills, liquidity and counters, and matches alike."""
    cfg, batches, _ = run_data
    book = BookKeeper(open_ledger(f"sqlite:///{tmp_path}/v.db"), cfg.initial_cash)
    c = _components(cfg, book, batches)
    venue = c.execution.broker
    for k, b in enumerate(batches):
        run_step(b, batch_ts(b), c)
        if k in (120, 250) or (venue.open_orders() and k > 250):
            break
    orders, fills = book.ledger_rows()
    upto = batch_ts(b)
    rebuilt = restore_venue(cfg.broker, batches[: k + 1], orders, fills, book.ledger.audit_log())
    assert (rebuilt.orders_seen, rebuilt.fills_count) == (venue.orders_seen, venue.fills_count)
    assert [s.order.client_order_id for s in rebuilt.open_orders()] == [
        s.order.client_order_id for s in venue.open_orders()]
    for sym in make_source(cfg.data).symbols:
        assert rebuilt.liquidity_left(sym) == venue.liquidity_left(sym), sym
        assert rebuilt.last_price(sym) == venue.last_price(sym)
    assert upto > 0
    for b in batches[k + 1 : k + 30]:
        strip = lambda evs: [(e.kind, e.client_order_id, e.ts_ns, e.fill and (e.fill.qty, e.fill.price)) for e in evs]  # noqa: E731
        assert strip(rebuilt.on_bars(b)) == strip(venue.on_bars(b))


def test_trend_warm_up_rebuilds_the_windows_and_a_retried_bar_counts_once(run_data: Any) -> None:
    cfg, batches, _ = run_data
    book = Portfolio(1_000_000.0).snapshot()

    def orders(strat: TrendStrategy, bars: list[pa.RecordBatch]) -> list[tuple]:
        return [(o.client_order_id, o.side, o.qty) for b in bars for o in strat.on_bars(b, book, {})]

    undisturbed = TrendStrategy(cfg.strategy, 3, bars_per_year(cfg.data))
    orders(undisturbed, batches[:199])
    at_199 = orders(undisturbed, batches[199:200])
    want = orders(undisturbed, batches[200:260])
    warmed = TrendStrategy(cfg.strategy, 3, bars_per_year(cfg.data))
    assert warmed.warm_up(batches[:200]) == 200
    assert orders(warmed, batches[199:200]) == at_199  # the retried bar is not appended twice
    assert orders(warmed, batches[200:260]) == want
    cold = TrendStrategy(cfg.strategy, 3, bars_per_year(cfg.data))
    assert orders(cold, batches[200:260]) != want, "a cold strategy must differ, or this test cannot fail"


def test_risk_gate_warm_up_equals_the_gate_that_saw_every_step(run_data: Any, tmp_path: Path) -> None:
    cfg, batches, _ = run_data
    book = BookKeeper(open_ledger(f"sqlite:///{tmp_path}/g.db"), cfg.initial_cash)
    c = _components(cfg, book, batches)
    for b in batches[:220]:
        run_step(b, batch_ts(b), c)
    live: PreTradeRisk = c.risk  # type: ignore[assignment]
    upto = batch_ts(batches[219])
    led = book.ledger
    warmed = warm_gate(PreTradeRisk(cfg.risk), batches[:220], led.orders(), led.audit_log(), led.equity_curve(),
                       cfg.initial_cash, upto)
    np.testing.assert_array_equal(warmed.market.returns(), live.market.returns())
    window = int(cfg.risk.order_window_seconds * 1e9)
    assert sorted(t for t in warmed._accepted if t[0] > upto - window) == sorted(
        t for t in live._accepted if t[0] > upto - window)
    assert warmed.rejects_by_reason == live.rejects_by_reason
    assert warmed.kill_switch_active == live.kill_switch_active


def test_sizing_stays_within_max_order_qty_on_the_default_config() -> None:
    """`-s risk.max_order_qty=500` on the default sp500 config: no max_order_qty rejects, every qty <= 500."""
    cfg = load_config(overrides={"risk.max_order_qty": 500})
    source = make_source(cfg.data)

    def run(limits: bool, steps: int | None = None) -> list[dict[str, Any]]:
        ledger = open_ledger("sqlite:///:memory:")
        book = BookKeeper(ledger, cfg.initial_cash)
        strat = make_strategy(cfg.strategy, len(source.symbols), bars_per_year(cfg.data), cfg.risk if limits else None)
        c = TradingComponents(strat, PreTradeRisk(cfg.risk), ExecutionService(SimBroker(cfg.broker), book))
        for b in islice(source.batches(), steps):
            run_step(b, batch_ts(b), c)
        return ledger.orders()

    sized = run(True)
    assert sized and max(o["qty"] for o in sized) <= 500
    reasons = Counter(o["reason"] for o in sized if o["status"] == "rejected")
    assert reasons["max_order_qty"] == 0
    assert sum(reasons.values()) < 0.1 * len(sized)
    unsized = run(False, 300)  # without the limits the gate refuses most orders: what the sizing fixes
    assert Counter(o["reason"] for o in unsized)["max_order_qty"] > len(unsized) / 2


def test_rebalance_order_clips_to_notional_at_the_limit_price_and_position_cap() -> None:
    cfg = load_config(overrides={"strategy.order_type": "limit", "risk.max_order_notional": 10_000,
                                 "risk.max_position_notional": 30_000})
    book = Portfolio(1_000_000.0).snapshot()
    o = rebalance_order(cfg.strategy, "t", 1, "X", 99.0, 0.5, book, {}, 0, cfg.risk)
    assert o is not None and o.limit_price is not None
    assert o.qty * max(o.limit_price, 99.0) <= 10_000 < (o.qty + 1) * o.limit_price
    # the target is clipped to the position cap: with 300 shares held nothing more is bought
    held = Portfolio(1_000_000.0)
    held.positions["X"] = type(held.position("Y"))("X", 300.0, 99.0, 0.0, 99.0)
    assert rebalance_order(cfg.strategy, "t", 1, "X", 99.0, 0.5, held.snapshot(), {}, 0, cfg.risk) is None


def test_scale_to_leverage_keeps_gross_and_net_within_limits() -> None:
    cfg = load_config(overrides={"risk.max_gross_leverage": 1.0, "risk.max_net_leverage": 0.5})
    w = scale_to_leverage({"A": 0.4, "B": 0.4, "C": -0.1, "D": float("nan")}, cfg.risk)
    finite = [v for v in w.values() if v == v]
    assert sum(abs(v) for v in finite) <= 0.98 + 1e-12 and abs(sum(finite)) <= 0.49 + 1e-12
    assert w["A"] / w["C"] == pytest.approx(-4.0) and w["D"] != w["D"]
    assert scale_to_leverage({"A": 0.1}, cfg.risk) == {"A": 0.1}


def test_feature_bank_warm_up_gives_the_undisturbed_values(run_data: Any) -> None:
    """Streaming features rebuilt from the bars before a resume point continue with the same values."""
    from tradesys.actors.features import live_feature_bank

    cfg, batches, _ = run_data
    symbols = make_source(cfg.data).symbols
    undisturbed = live_feature_bank(symbols)
    for b in batches[:200]:
        undisturbed.update(b)
    want = [undisturbed.update(b) for b in batches[200:230]]
    warmed = live_feature_bank(symbols)
    assert warmed.warm_up(batches[:200], chunk=64) == 200
    for b, w in zip(batches[200:230], want, strict=True):
        got = warmed.update(b)
        for col in undisturbed.columns:
            np.testing.assert_allclose(got.column(col).to_numpy(), w.column(col).to_numpy(), rtol=1e-12, atol=0)
    cold = live_feature_bank(symbols).update(batches[200])
    assert not np.allclose(np.nan_to_num(cold.column("sma20").to_numpy()), want[0].column("sma20").to_numpy())


def test_kill_switch_latch_is_rebuilt_from_the_equity_curve(tmp_path: Path) -> None:
    """A breach earlier in the day latches the rebuilt gate; a breach on an earlier day does not."""
    cfg = load_config(overrides={**SMALL, "risk.daily_loss_limit_pct": 0.001, "data.synthetic_days": 2})
    batches = [b for b in make_source(cfg.data).batches() if b.num_rows]
    book = BookKeeper(open_ledger(f"sqlite:///{tmp_path}/k.db"), cfg.initial_cash)
    c = _components(cfg, book, batches)
    day = 86_400_000_000_000
    states = []
    for i, b in enumerate(batches):
        run_step(b, batch_ts(b), c)
        states.append(c.risk.kill_switch_active)  # type: ignore[attr-defined]
        if i + 1 < len(batches) and batch_ts(batches[i + 1]) // day != batch_ts(b) // day:
            first_day_end = i
    assert any(states) and not all(states), "the limit must trip on some steps only"
    led = book.ledger
    on = [k for k, v in enumerate(states) if v]
    after = [k for k in range(on[0], len(states)) if not states[k]]
    for k in sorted({on[0], on[-1], *after[:1], first_day_end, first_day_end + 1}):
        upto = batch_ts(batches[k])
        gate = warm_gate(PreTradeRisk(cfg.risk), batches[: k + 1], led.orders(), led.audit_log(),
                         [r for r in led.equity_curve() if r["ts_ns"] <= upto], cfg.initial_cash, upto)
        assert gate.kill_switch_active == states[k], k


def test_restored_book_keeps_the_start_of_day_equity(tmp_path: Path, run_data: Any) -> None:
    cfg, batches, _ = run_data
    url = f"sqlite:///{tmp_path}/d.db"
    book = BookKeeper(open_ledger(url), cfg.initial_cash)
    c = _components(cfg, book, batches)
    for b in batches[:200]:
        run_step(b, batch_ts(b), c)
    again = BookKeeper(open_ledger(url), cfg.initial_cash)
    assert again.snapshot().day_start_equity == book.snapshot().day_start_equity != book.snapshot().equity


def test_execution_restart_after_the_venue_matched_a_step_keeps_every_equity_row(run_data: Any) -> None:
    """The ExecutionActor dies after the venue matched step T's bars (a resting order filled) and before the ledger
    booked them. Recovery books those fills at T, not on step T-1's equity row, and the retried step T marks the
    book: the trades and every equity row equal an undisturbed run's (seen once in CI as an equity mismatch)."""
    cfg, batches, undisturbed = run_data
    placed = {o["client_order_id"]: o["ts_ns"] for o in undisturbed.orders()}
    rested = sorted(f["ts_ns"] for f in undisturbed.fills() if f["ts_ns"] > placed[f["client_order_id"]])
    assert rested, "no resting order filled on a later bar in this data"
    fault_ts = rested[0]
    book = BookKeeper(open_ledger("sqlite:///:memory:"), cfg.initial_cash)
    c = _components(cfg, book, batches)
    for b in batches:
        ts = batch_ts(b)
        if ts == fault_ts:
            before = c.execution.broker.fills_count
            c.execution.broker.on_bars(b)  # the venue matches step T ... and the execution process dies
            assert c.execution.broker.fills_count > before
            c.execution = ExecutionService.recover(c.execution.broker, book)  # what the restarted actor does
        run_step(b, ts, c)  # the step, retried after the restart as the Supervisor's proxy retries it
    assert trade_record(book.ledger) == trade_record(undisturbed)
    assert_ledger_consistent(book.ledger, cfg.initial_cash, closes_by_ts(make_source(cfg.data)))


def test_a_stop_triggered_on_a_bar_without_liquidity_is_rebuilt_as_triggered(tmp_path: Path) -> None:
    """A resting buy stop crosses its price on a bar with no volume: triggered, no fill, so no ledger row says so.
    After a restart the rebuilt venue must still treat it as a market order, or the next bar (back below the stop)
    fills in the undisturbed run and not in the resumed one."""
    from tradesys.config import BrokerConfig
    from tradesys.core.orders import OrderType, Side, TimeInForce
    from tradesys.core.schemas import BAR_SCHEMA

    def bar(ts: int, o: float, h: float, lo: float, c: float, v: float) -> pa.RecordBatch:
        return pa.RecordBatch.from_pylist([{"ts": ts, "symbol": "AAA", "open": o, "high": h, "low": lo, "close": c,
                                            "volume": v}], schema=BAR_SCHEMA)  # fmt: skip

    cfg = BrokerConfig(fee_bps=0.0, slippage_bps=0.0, participation_cap=1.0)
    book = BookKeeper(open_ledger(f"sqlite:///{tmp_path}/stop.db"), 100_000.0)
    svc = ExecutionService(SimBroker(cfg), book)
    b1, b2, b3 = bar(1, 100, 100, 100, 100, 1e6), bar(2, 101, 103, 100.5, 101, 0.0), bar(3, 101, 101, 100, 100.5, 1e6)
    svc.on_bars(b1)
    stop = Order(client_order_id="stop-1", symbol="AAA", side=Side.BUY, qty=10.0, type=OrderType.STOP,
                 stop_price=102.0, tif=TimeInForce.GTC, ts_ns=1)  # fmt: skip
    svc.submit([stop], [], 1)
    svc.on_bars(b2)  # high 103 >= 102: triggered; volume 0: no fill
    orders, fills = book.ledger_rows()
    assert fills == [] and [o["status"] for o in orders] == ["accepted"]
    rebuilt = restore_venue(cfg, [b1, b2], orders, fills, book.ledger.audit_log())
    undisturbed = svc.broker.on_bars(b3)  # high 101 < 102: only a triggered stop fills here, at the open
    resumed = rebuilt.on_bars(b3)
    strip = lambda evs: [(e.kind, e.fill and (e.fill.qty, e.fill.price)) for e in evs]  # noqa: E731
    assert strip(resumed) == strip(undisturbed)
    assert any(e.fill is not None and e.fill.price == 101.0 for e in undisturbed)
