"""The Supervisor's children. Each is a thin shell: it owns one core object and forwards calls to it.

Actors reserve no CPU (`num_cpus=0`): they are I/O-light and a laptop has few cores. The Supervisor creates
them with `max_restarts`; a restarted actor rebuilds its state in its constructor, before it answers the retried
call: the book from the ledger, the OMS from the ledger reconciled with the venue, the venue from the ledger and the
data (`SimBroker.restore`), the strategy's and the risk gate's windows from the bars up to the ledger's last booked
step (`warm_up`, fed in batches read from the source here, not through the loop). The same constructors rebuild a
resumed run, so a restart or a resume changes no order and no fill.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray

from tradesys.actors.graph import GraphStageActor, graph_stage
from tradesys.actors.proxy import ActorProxy
from tradesys.actors.timing import StageTimes, TimedProxy, VenueLink
from tradesys.config import BrokerConfig, DataConfig, ExecutionConfig, RiskConfig, StrategyConfig
from tradesys.core.orders import Fill, Order, OrderEvent, OrderState
from tradesys.core.portfolio import PortfolioSnapshot
from tradesys.core.schemas import batch_ts
from tradesys.engine import step as stages
from tradesys.execution.service import ExecutionService, StepReport
from tradesys.ledger.base import AuditEntry
from tradesys.ledger.book import BookKeeper
from tradesys.logs import get_logger
from tradesys.ops import metrics as ops_metrics
from tradesys.risk.pretrade import PreTradeRisk, RiskDecision

# JSON lines with run_id / actor / order_id in the worker's log file (tradesys.logs; the run's env sets the format)
log = get_logger("tradesys.actors")


def booked_ts(ledger: Any) -> int:
    """The ledger's last booked step (0 for a fresh ledger): what a (re)started child rebuilds up to."""
    return int(ActorProxy(ledger, "ledger").snapshot().ts_ns) if ledger is not None else 0


def bars_upto(cfg: DataConfig, ts_ns: int) -> Iterator[pa.RecordBatch]:
    """The source's non-empty bar batches with ts <= `ts_ns`, oldest first: the history a warm-up replays."""
    from tradesys.data import make_source

    for bars in make_source(cfg).batches():
        if not bars.num_rows:
            continue
        if batch_ts(bars) > ts_ns:
            return
        yield bars


def compact(batch: pa.RecordBatch | None) -> pa.RecordBatch | None:
    """The batch with buffers of its own. A source's batch is often a slice of a larger table, and serializing a
    slice ships the parent's whole buffers: measured at 557 KB for a 20-symbol daily bar (1.9 KB compacted) and 10.9 MB
    for a 500-symbol minute bar (29 KB), copied through every channel or call the batch crosses. Same values."""
    if batch is None or batch.get_total_buffer_size() <= 2 * batch.nbytes + 4096:
        return batch
    return pa.RecordBatch.from_arrays([pa.concat_arrays([c]) for c in batch.columns], schema=batch.schema)


@ray.remote(num_cpus=0)
class MarketDataActor(GraphStageActor):
    """Owns the data feed: the source and replay cursor, or (data.bus = "kafka") a consumer of the bars topic.

    Either way it hands out one bar batch per time step. On the bus, a step's offset is committed only when the
    Supervisor acknowledges the booked step (`ack`), so a restart re-reads it and the ledger-based resume skips it.
    """

    def __init__(self, cfg: DataConfig) -> None:
        super().__init__()
        from tradesys.data import make_source
        from tradesys.data.replay import Replay

        self.cfg = cfg
        self.source = make_source(cfg)
        self.replay = Replay(self.source, cfg.speed)
        self._iter = iter(self.replay)
        self._after_ns = -1
        self._graph_pos: int | None = None  # the compiled graph's cursor: ts of the last batch it handed out
        self._graph_last: tuple[int, tuple[int, pa.RecordBatch | None]] | None = None
        log.info("market data started", extra={"source": self.source.name, "bus": cfg.bus})
        self.reader: Any = None
        if cfg.bus == "kafka":
            from tradesys.bus.kafka import KafkaBus
            from tradesys.data.busfeed import BusBarReader

            bus = KafkaBus(cfg.bootstrap())
            bus.create_topic(cfg.topic)
            self.reader = BusBarReader(bus.consumer([cfg.topic], cfg.consumer_group),
                                       idle_timeout_s=cfg.idle_timeout_s)
            from ray.util.metrics import Gauge

            # on the Ray dashboard / Prometheus: how far the loop is behind the feed
            self._lag_gauge = Gauge("tradesys_market_data_lag", "bars-topic messages not yet booked", ("topic",))
            self._acks = 0

    def info(self) -> dict[str, Any]:
        return {"name": self.source.name, "symbols": list(self.source.symbols), "steps": len(self.source),
                "bus": self.cfg.bus}

    def resume_after(self, ts_ns: int) -> int:
        """Skip batches at or before `ts_ns` (after a restart); return how many steps remain."""
        self._after_ns = ts_ns
        self._graph_pos = ts_ns
        if self.reader is not None:
            self.reader.resume_after(ts_ns)
        else:
            self._iter = iter(self.replay.resume_after(ts_ns))
        return self.replay.remaining_after(ts_ns)

    def next_batch(self) -> tuple[int, pa.RecordBatch | None]:
        """(timestamp ns, bar batch), or (-1, None) at the end of the data. The batch is compacted (`compact`): it
        travels to the Execution, Strategy, Broker (and Feature) actors."""
        if self.reader is not None:
            ts, bars = self.reader.next_batch()
            return ts, compact(bars)
        batch = next(self._iter, None)
        if batch is None:
            return -1, None
        return batch_ts(batch), compact(batch)

    @graph_stage
    def graph_next(self, last_ts: int) -> tuple[int, pa.RecordBatch | None]:
        """The compiled graph's source: the batch after `last_ts`, the Supervisor's last booked step (acknowledged
        here in bus mode: the graph's loop owns the consumer). The same `last_ts` again (a step executed again after a
        fault) gets the same batch; a restarted actor, or one asked out of turn, first resumes after `last_ts`."""
        if self._graph_last is not None and self._graph_last[0] == last_ts:
            return self._graph_last[1]
        if self._graph_pos != last_ts:
            self.resume_after(last_ts)
        if self.reader is not None and last_ts > 0:
            self.ack(last_ts)
        out = self.next_batch()
        self._graph_pos, self._graph_last = out[0], (last_ts, out)
        return out

    def ack(self, ts_ns: int) -> int:
        """Every step up to `ts_ns` is booked: commit its offset (bus mode; a no-op when reading directly)."""
        if self.reader is None:
            return 0
        n = self.reader.ack(ts_ns)
        self._acks += 1
        if self._acks % 50 == 1:  # a lag query costs a broker round trip: sample it
            self._lag_gauge.set(float(sum(self.reader.lag().values())), tags={"topic": self.cfg.topic})
        return n

    def lag(self) -> dict[str, int]:
        """Consumer lag per partition (bus mode), for the dashboard and the run summary."""
        if self.reader is None:
            return {}
        return {f"{t}[{p}]": n for (t, p), n in self.reader.lag().items()}


@ray.remote(num_cpus=0)
def publish_feed(cfg: DataConfig, after_ns: int) -> int:
    """Publish the configured source (paced at data.speed) to the bars topic, steps after `after_ns`, then the end
    marker: the feed side of data.bus = "kafka" when the run publishes its own data."""
    from tradesys.bus.kafka import KafkaBus
    from tradesys.data import make_source
    from tradesys.data.busfeed import publish_batches
    from tradesys.data.replay import Replay

    bus = KafkaBus(cfg.bootstrap())
    bus.create_topic(cfg.topic)
    producer = bus.producer()
    try:
        return publish_batches(producer, cfg.topic, Replay(make_source(cfg), cfg.speed).resume_after(after_ns))
    finally:
        producer.close()
        bus.close()


def recorded_champion(ledger: Any) -> int | None:
    """The model champion version the ledger's audit log records last (None: none recorded, a fresh run)."""
    from tradesys.strategy.champion import CHAMPION_EVENT

    if ledger is None:
        return None
    rows = [r for r in ActorProxy(ledger, "ledger").read("audit_log") if r["kind"] == CHAMPION_EVENT]
    if not rows:
        return None
    payload = rows[-1]["payload"]
    payload = json.loads(payload) if isinstance(payload, str) else payload
    return int(payload["new"])


@ray.remote(num_cpus=0)
class StrategyActor(GraphStageActor):
    """Owns the strategy. With a DriftMonitor handle (drift.enabled), the model strategy's per-bar observations go
    to it through a `MonitorFeed`: buffered, `send_every_bars` bars per fire-and-forget call."""

    def __init__(
        self, cfg: StrategyConfig, n_symbols: int, bars_per_year: float, monitor: Any = None,
        send_every_bars: int = 5, max_in_flight: int = 8, limits: RiskConfig | None = None,
        data: DataConfig | None = None, ledger: Any = None, execution: ExecutionConfig | None = None,
    ) -> None:
        super().__init__()
        from tradesys.strategy import make_strategy

        self.ledger = ledger
        champion = recorded_champion(ledger) if cfg.name == "model" and cfg.registry_name else None
        self.strategy = make_strategy(cfg, n_symbols, bars_per_year, limits, execution, champion_version=champion)
        forecaster = getattr(self.strategy, "forecaster", None)
        if ledger is not None and hasattr(forecaster, "on_change"):  # a champion-following model strategy
            forecaster.on_change = self._audit_champion
        upto = booked_ts(ledger) if data is not None else 0
        self.warmed_bars = self.strategy.warm_up(bars_upto(data, upto)) if data is not None and upto > 0 else 0
        self.feed: Any = None
        self.times = StageTimes()  # stage compute (tradesys.actors.timing)
        if monitor is not None:
            from tradesys.actors.drift import MonitorFeed

            if not hasattr(self.strategy, "observer"):
                raise ValueError(f"drift.enabled: strategy {cfg.name!r} has no features to observe (needs 'model')")
            self.feed = MonitorFeed(monitor, send_every_bars, max_in_flight)
            self.strategy.observer = self.feed
        log.info("strategy started", extra={"strategy": cfg.name, "warmed_bars": self.warmed_bars})

    def _audit_champion(self, kind: str, ts_ns: int, payload: dict[str, Any]) -> None:
        """A champion switch (or refusal) goes to the ledger before the bar's orders leave: a restart reads it back."""
        msg = (f"model champion v{payload['old']} -> v{payload['new']}" if "new" in payload
               else f"model champion v{payload['refused']} refused: {payload['reason']}")
        ray.get(self.ledger.audit.remote([AuditEntry(ts_ns, kind, msg, payload=payload)]), timeout=60)

    def on_bars(self, bars: pa.RecordBatch, book: PortfolioSnapshot, working: Mapping[str, float]) -> list[Order]:
        return self.times.timed("stage:decide", self.strategy.on_bars, bars, book, working)

    _decided: tuple[int, list[Order]] | None = None  # the compiled graph's last step (answered again on a retry)

    @graph_stage
    def graph_decide(
        self, batch: tuple[int, pa.RecordBatch | None], marked: tuple[int, StepReport | None]
    ) -> tuple[int, list[Order]]:
        """Stage `decide` in the compiled graph (tradesys.actors.graph): the same step again gets the same orders."""
        ts, bars = batch
        if ts < 0 or marked[1] is None:
            return ts, []
        if self._decided is None or self._decided[0] != ts:
            self._decided = (ts, stages.decide(self, bars, marked[1]))
        return self._decided

    def stats(self) -> dict[str, Any]:
        """The strategy's counters (model strategy: forecast calls, bars held for a missing forecast)."""
        fn = getattr(self.strategy, "stats", None)
        return {**(fn() if callable(fn) else {}), "warmed_bars": self.warmed_bars, "times": self.times.as_dict()}

    def flush_drift(self, timeout_s: float = 120.0) -> dict[str, int]:
        """End of run: hand over the last bar's forecasts, send the buffer, wait for the monitor to take it all."""
        if self.feed is None:
            return {}
        self.strategy.flush()
        return self.feed.flush(timeout_s)


@ray.remote(num_cpus=0)
class RiskActor(GraphStageActor):
    """Owns the pre-trade gate; on (re)start it rebuilds the gate's windows from the data and the ledger."""

    def __init__(self, cfg: RiskConfig, data: DataConfig | None = None, ledger: Any = None) -> None:
        super().__init__()
        from tradesys.engine.recovery import warm_gate
        from tradesys.execution.parents import decision_rows

        self.gate = PreTradeRisk(cfg)
        self.times = StageTimes()  # stage compute (tradesys.actors.timing)
        upto = booked_ts(ledger) if data is not None else 0
        if data is not None and upto > 0:
            book = ActorProxy(ledger, "ledger")
            # the gate checked the parents, not the children their algorithms sent on later bars
            orders = decision_rows(book.read("orders"), book.read("parent_orders"))
            warm_gate(self.gate, bars_upto(data, upto), orders, book.read("audit_log"),
                      book.read("equity_curve"), book.snapshot().initial_cash, upto)
        log.info("risk gate started", extra={"warmed_to_ts_ns": upto})

    def check(
        self, orders: Sequence[Order], book: PortfolioSnapshot, now_ns: int, working: Mapping[str, float] | None
    ) -> RiskDecision:
        t0 = time.perf_counter()
        decision = self.gate.check(orders, book, now_ns, working)
        ops_metrics.emit_risk_gate(self.gate, book, working)
        for ev in decision.rejected:
            log.info("order rejected by risk", extra={"order_id": ev.client_order_id, "reason": ev.reason,
                                                      "detail": ev.detail, "ts_ns": now_ns})
        if decision.kill_switch_tripped:
            log.warning("kill switch tripped", extra={"ts_ns": now_ns})
        self.times.add("stage:check", time.perf_counter() - t0)
        return decision

    _checked: tuple[int, RiskDecision] | None = None  # the compiled graph's last step (answered again on a retry)

    @graph_stage
    def graph_check(
        self, marked: tuple[int, StepReport | None], decided: tuple[int, list[Order]]
    ) -> tuple[int, RiskDecision | None]:
        """Stage `check` in the compiled graph: the same step again gets the same decision, counted once."""
        ts, report = marked
        if ts < 0 or report is None:
            return ts, None
        if self._checked is None or self._checked[0] != ts:
            self._checked = (ts, stages.check(self, decided[1], report, ts))
        return self._checked

    def stats(self) -> dict[str, Any]:
        """Rejects by reason, the kill switch, and the book's risk as of the last step (VaR, exposures)."""
        return {
            "rejects_by_reason": dict(self.gate.rejects_by_reason),
            "kill_switch": self.gate.kill_switch_active,
            "metrics": dict(self.gate.metrics),
            "times": self.times.as_dict(),
        }


def log_events(events: list[OrderEvent]) -> list[OrderEvent]:
    """One log line per venue event (ack, fill, reject, cancel), keyed by the order id; returns the events."""
    for ev in events:
        fill = {"fill_id": ev.fill.fill_id, "qty": ev.fill.qty, "price": ev.fill.price} if ev.fill is not None else {}
        log.info("venue event", extra={"order_id": ev.client_order_id, "event": getattr(ev.kind, "value", ev.kind),
                                       "ts_ns": ev.ts_ns, **fill,
                                       **({"reason": getattr(ev.reason, "value", ev.reason)} if ev.reason else {})})
    return events


@ray.remote(num_cpus=0)
class BrokerActor(GraphStageActor):
    """The simulated venue. Separate from execution, as a real venue is: it survives an OMS crash. On its own
    restart it is rebuilt from the ledger and the data (`restore_venue`): its orders, fills, resting orders,
    liquidity left and counters continue, and the OMS reconciles with it on the next call as usual.

    In the compiled graph it is the node between MarketData and the ExecutionActor's `mark` (`graph_on_bars`): the
    venue matches its resting orders against the bar batch there, and its answer travels to `mark` by channel
    instead of an ordinary call from inside it."""

    def __init__(self, cfg: BrokerConfig, data: DataConfig | None = None, ledger: Any = None) -> None:
        super().__init__()
        from tradesys.broker.sim import SimBroker
        from tradesys.engine.recovery import restore_venue

        self.times = StageTimes()  # the graph node's compute ("stage:venue"), for the benchmark's split of a step
        log.info("broker started", extra={"kind": cfg.kind})
        # a restart is a new process: asked once here, not per bar (the answer is a query to the GCS, which a
        # per-bar `reconnects` would then need up: the loop stalled while the head's GCS restarted)
        self._restarted = bool(ray.get_runtime_context().was_current_actor_reconstructed)
        if cfg.kind == "alpaca":  # Alpaca's trading API (tradesys.broker.alpaca); the broker keeps its own state
            from tradesys.broker.alpaca import AlpacaBroker

            self.venue = AlpacaBroker(cfg)
            if ledger is not None and booked_ts(ledger) > 0:  # a restart: what the ledger booked is not booked again
                self.venue.restore(*ActorProxy(ledger, "ledger").ledger_rows())
            return
        upto = booked_ts(ledger) if data is not None else 0
        if cfg.kind == "routed":  # smart order routing across simulated venues (tradesys.broker.venues)
            from tradesys.broker.venues import MultiVenueBroker, restore_routed

            self.venue = MultiVenueBroker(cfg)
            if data is not None and upto > 0:
                book = ActorProxy(ledger, "ledger")
                orders, fills = book.ledger_rows()
                self.venue = restore_routed(cfg, bars_upto(data, upto), orders, fills, book.read("audit_log"))
            return
        self.venue = SimBroker(cfg)
        if data is not None and upto > 0:
            book = ActorProxy(ledger, "ledger")
            orders, fills = book.ledger_rows()
            self.venue = restore_venue(cfg, bars_upto(data, upto), orders, fills, book.read("audit_log"))
        if ledger is not None:  # the venue's account starts with the book's cash: reconciled too
            self.venue.opening_cash = ActorProxy(ledger, "ledger").snapshot().initial_cash

    def submit(self, orders: Sequence[Order]) -> list[OrderEvent]:
        return log_events(self.venue.submit(orders))

    def submit_audit(self, orders: Sequence[Order]) -> tuple[list[OrderEvent], list[AuditEntry]]:
        """`submit` and `drain_audit` in one call (tradesys.actors.timing.VenueLink: one round trip, not two)."""
        return self.submit(orders), self.drain_audit()

    def on_bars_status(self, bars: pa.RecordBatch) -> tuple[list[OrderEvent], int]:
        """`on_bars` and `reconnects` in one call (the ExecutionActor's per-bar call: one round trip, not two)."""
        return self.on_bars(bars), self.reconnects()

    @graph_stage
    def graph_on_bars(
        self, batch: tuple[int, pa.RecordBatch | None]
    ) -> tuple[int, tuple[list[OrderEvent], int] | None]:
        """`on_bars_status` as a node of the compiled graph; (-1, None) at the end of the data. A step executed again
        after a fault gets the same answer, as every graph method does: a live venue's `on_bars` drains its update
        stream, and asking again would drop what the first answer carried. A restarted ExecutionActor may so get
        events its start-up reconciliation booked already; its OMS ignores them (fill ids, terminal states)."""
        ts, bars = batch
        if ts < 0 or bars is None:
            return ts, None
        if self._venue_answer is None or self._venue_answer[0] != ts:
            self._venue_answer = (ts, self.times.timed("stage:venue", self.on_bars_status, bars))
        return self._venue_answer

    _venue_answer: tuple[int, tuple[list[OrderEvent], int]] | None = None  # the graph's last step (see above)

    def cancel(self, ids: Sequence[str], ts_ns: int) -> list[OrderEvent]:
        return log_events(self.venue.cancel(ids, ts_ns))

    def on_bars(self, bars: pa.RecordBatch) -> list[OrderEvent]:
        return log_events(self.venue.on_bars(bars))

    def order_state(self, client_order_id: str) -> OrderState | None:
        return self.venue.order_state(client_order_id)

    def open_orders(self) -> list[OrderState]:
        return self.venue.open_orders()

    def fills_for(self, client_order_id: str) -> list[Fill]:
        return self.venue.fills_for(client_order_id)

    def drain_audit(self) -> list[AuditEntry]:
        """The venue's own audit rows since the last call (a routed broker's "route" decisions; none from sim)."""
        drain = getattr(self.venue, "drain_audit", None)
        return drain() if drain is not None else []

    def orders(self) -> list[OrderState] | None:
        """Every order the venue holds, for reconciliation (None: it lists open ones only, e.g. Alpaca's adapter)."""
        fn = getattr(self.venue, "orders", None)
        return fn() if fn is not None else None

    def positions(self) -> dict[str, float] | None:
        """The venue's positions, for reconciliation (None: the venue keeps none)."""
        fn = getattr(self.venue, "positions", None)
        return fn() if fn is not None else None

    def cash(self) -> float | None:
        fn = getattr(self.venue, "cash", None)
        return fn() if fn is not None else None

    def reconnects(self) -> int:
        """How often the venue's update stream reconnected, plus one when this actor is a restart (its venue was
        rebuilt: the execution service reconciles on its next step, as after any reconnect)."""
        return int(getattr(self.venue, "reconnects", 0)) + int(self._restarted)

    def stats(self) -> dict[str, Any]:
        extra = getattr(self.venue, "stats", None)
        return {
            "orders_seen": self.venue.orders_seen,
            "fills": self.venue.fills_count,
            "duplicates": self.venue.duplicates,
            **(extra() if callable(extra) else {}),
            "times": self.times.as_dict(),
        }


@ray.remote(num_cpus=0)
class LedgerActor:
    """Owns the ledger connection and the book of record (the Portfolio)."""

    def __init__(self, url: str, initial_cash: float) -> None:
        from tradesys.ledger import open_ledger

        self.book = BookKeeper(open_ledger(url), initial_cash)
        self._counts = ops_metrics.ledger_counts(self.book.ledger, initial_cash)  # Prometheus: the ledger's totals
        log.info("ledger opened", extra={"ledger": url})  # the line masks the URL's password (tradesys.logs.scrub)

    def commit(self, **kwargs: Any) -> Any:
        snap, result = self.book.commit(**kwargs)
        ops_metrics.emit_commit(snap, result, kwargs.get("updates", ()), self._counts)
        return snap, result

    def snapshot(self) -> PortfolioSnapshot:
        return self.book.snapshot()

    def ledger_rows(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return self.book.ledger_rows()

    def parent_rows(self) -> list[dict[str, Any]]:
        return self.book.parent_rows()

    def audit(self, entries: Sequence[AuditEntry]) -> None:
        self.book.audit(entries)

    def read(self, what: str) -> Any:
        """Read views for the summary: orders, fills, positions, account, equity_curve, audit_log."""
        if what not in {"orders", "fills", "positions", "account", "equity_curve", "audit_log", "parent_orders"}:
            raise ValueError(f"read: unknown view {what!r}")
        return getattr(self.book.ledger, what)()

    def close(self) -> None:
        self.book.ledger.close()


class _CrashOnce:
    """Fault injection for tests: exit the process right after the venue accepted the N-th submit.

    That is the worst moment to die: the venue holds the order and its fills, the ledger does not. The marker
    file makes it crash once, not again after the restart.
    """

    def __init__(self, broker: Any, at_submit: int, marker: str) -> None:
        self._broker, self._at, self._marker = broker, at_submit, Path(marker)
        self._n = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._broker, name)

    def submit(self, orders: Sequence[Order]) -> list[OrderEvent]:
        events = self._broker.submit(orders)
        self._n += 1
        if self._n == self._at and not self._marker.exists():
            self._marker.write_text(str(os.getpid()))
            os._exit(1)
        return events


@ray.remote(num_cpus=0)
class ExecutionActor(GraphStageActor):
    """Owns the OMS. Recovers on (re)start: OMS from the ledger, reconciled with the venue."""

    def __init__(
        self, broker: Any, ledger: Any, crash_at_submit: int | None = None, crash_marker: str = "",
        settings: ExecutionConfig | None = None, data: DataConfig | None = None,
    ) -> None:
        super().__init__()
        self.times = StageTimes()  # stage compute and each ordinary call to the Ledger and the Broker
        # reconnects() and drain_audit() ride on the on_bars and submit calls (VenueLink): 2 round trips fewer a step
        self._venue = VenueLink(ActorProxy(broker, "broker"), self.times)
        venue: Any = self._venue
        if crash_at_submit is not None:
            venue = _CrashOnce(venue, crash_at_submit, crash_marker)
        self._runs_seen = -1.0
        book = TimedProxy(ActorProxy(ledger, "ledger"), "ledger", self.times)
        self.service = ExecutionService.recover(venue, book, settings=settings)
        # the volumes of the bars already booked: a VWAP parent decided after a restart gets the curve an
        # undisturbed run gives it (a live source has no history to replay: it starts cold)
        upto = booked_ts(ledger) if data is not None and data.source != "alpaca" else 0
        if data is not None and upto > 0:
            self.service.volumes.warm_up(bars_upto(data, upto))
        self._publish()
        log.info("execution started", extra={"recovered_events": self.service.recovered_events,
                                             "orders": len(self.service.oms)})

    def _publish(self) -> None:
        """Set the reconciliation gauges when a reconciliation ran since the last time."""
        st = self.service.reconcile_stats
        if st["runs"] == self._runs_seen:
            return
        self._runs_seen = st["runs"]
        # on the Ray dashboard / Prometheus: reconciliation runs, what they booked, and the standing break
        ops_metrics.emit_reconcile(st, self.service.halted is not None)

    def on_bars(self, bars: pa.RecordBatch) -> StepReport:
        report = self.times.timed("stage:mark", self.service.on_bars, bars)
        self._publish()
        ops_metrics.emit_fill_latencies(report.latencies_ns)
        return report

    def reconcile(self, ts_ns: int) -> dict[str, Any]:
        """Reconcile now (e.g. from an operator); returns the counts of what it found."""
        rep, _ = self.service.reconcile(ts_ns, "request")
        self._publish()
        return {**rep.counts(), "break_amount": rep.break_amount}

    def stats(self) -> dict[str, Any]:
        """Reconciliation counters (runs, what they booked, breaks, the last break amount) and the halt reason."""
        return {"reconcile": dict(self.service.reconcile_stats), "halted": self.service.halted,
                "times": self.times.as_dict()}

    def submit(
        self,
        accepted: Sequence[Order],
        rejected: Sequence[tuple[Order, OrderEvent]] = (),
        ts_ns: int = 0,
        audit: Sequence[AuditEntry] = (),
    ) -> StepReport:
        for o in accepted:  # written ahead to the ledger, then sent to the venue (its answers: the broker's lines)
            log.info("order sent", extra={"order_id": o.client_order_id, "symbol": o.symbol,
                                          "side": getattr(o.side, "value", o.side), "qty": o.qty, "ts_ns": ts_ns})
        report = self.times.timed("stage:record", self.service.submit, accepted, rejected, ts_ns, audit)
        ops_metrics.emit_fill_latencies(report.latencies_ns)
        return report

    # the compiled graph's last step per stage: a step executed again after a fault gets the same answers here
    _marked: tuple[int, StepReport | None] | None = None
    _recorded: tuple[int, stages.StepResult | None] | None = None

    @graph_stage
    def graph_mark(
        self, batch: tuple[int, pa.RecordBatch | None], venue: tuple[int, tuple[list[OrderEvent], int] | None]
    ) -> tuple[int, StepReport | None]:
        """Stage `mark` in the compiled graph (tradesys.actors.graph), on the venue node's answer to the same bars;
        (-1, None) at the end of the data."""
        ts, bars = batch
        if ts < 0 or bars is None:
            return ts, None
        if venue[0] != ts:  # the graph hands both the same step's values: anything else is a wiring fault
            raise RuntimeError(f"graph_mark: the venue answered bar {venue[0]}, the step is bar {ts}")
        if self._marked is None or self._marked[0] != ts:
            self._venue.preset_on_bars(venue[1])
            try:
                self._marked = (ts, stages.mark(self, bars))
            finally:
                self._venue.preset_on_bars(None)
        return self._marked

    @graph_stage
    def graph_record(
        self, marked: tuple[int, StepReport | None], decided: tuple[int, list[Order]],
        checked: tuple[int, RiskDecision | None],
    ) -> tuple[int, stages.StepResult | None]:
        """Stage `record` in the compiled graph: write ahead, send, book; the step's result for the Supervisor."""
        ts, report = marked
        if ts < 0 or report is None or checked[1] is None:
            return ts, None
        if self._recorded is None or self._recorded[0] != ts:
            self._recorded = (ts, stages.record(self, decided[1], checked[1], report, ts))
        return self._recorded

    @graph_stage
    def graph_with_bars(self, batch: tuple[int, Any], recorded: tuple[int, Any]) -> tuple[tuple[int, Any], Any]:
        """The step's bars and its result as the graph's one output (tradesys.actors.graph: a graph with two outputs
        can lose the first to a timed-out read of the second)."""
        return batch, recorded

    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "recovered_events": self.service.recovered_events, "orders": len(self.service.oms)}
