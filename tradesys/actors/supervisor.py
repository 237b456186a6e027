"""The Supervisor: wires the children, drives the clock, restarts failed children, shuts down cleanly.

It is a threaded actor: `run` drives the loop on one thread while `progress` and `stop` answer on others.
The next bar batch is fetched while the current step runs, and batches travel between actors as object
references (the Supervisor only reads the timestamp), so the loop costs a handful of actor calls per step.

Restarts and resumes change nothing. Every child rebuilds itself from the ledger (and the data) in its constructor,
so a child Ray restarts, and every child of a run resumed on an existing ledger, carries on exactly where the
undisturbed run would be. A resume restarts from the ledger's last booked step T: after T when T's orders are in the
ledger (T was decided), else at T again (the step was cut off between marking the book and recording its orders;
re-running it from the book as marked is what the undisturbed run did), and is audited as `resume`. Restarts are
counted from Ray's own record of each child (its restart count in the GCS), so each one is counted and audited
once, whichever actor noticed it, and none is counted for a retried call.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import ray
from ray.exceptions import RayActorError

from tradesys import logs
from tradesys.actors.children import (
    BrokerActor,
    ExecutionActor,
    LedgerActor,
    MarketDataActor,
    RiskActor,
    StrategyActor,
)
from tradesys.actors.graph import GRAPH_ACTORS, GRAPH_FAULTS, GraphStalled, StepGraph
from tradesys.actors.proxy import ActorProxy
from tradesys.backtest.metrics import summarize
from tradesys.config import TradesysConfig
from tradesys.data import bars_per_year
from tradesys.engine.recovery import resume_after
from tradesys.engine.step import TradingComponents, run_step
from tradesys.execution.parents import decision_rows
from tradesys.ledger.base import AuditEntry
from tradesys.ops import metrics as ops_metrics
from tradesys.placement import head_options

log = logs.get_logger("tradesys.actors.supervisor")


def child_restart_counts(children: dict[str, Any]) -> dict[str, int]:
    """How many times Ray has restarted each child actor, from the GCS actor table."""
    from ray._private import state  # no public API gives the count without the dashboard

    out: dict[str, int] = {}
    for name, handle in children.items():
        try:
            info = state.actors(actor_id=handle._actor_id.hex())
            out[name] = int(info.get("NumRestarts", 0)) if info else 0
        except Exception:  # the count is reporting: never fail a step over it
            continue
    return out


@ray.remote(num_cpus=0, max_concurrency=8)
class Supervisor:
    def __init__(
        self, cfg: TradesysConfig, ledger_url: str, run_id: str, crash_execution_at_submit: int | None = None,
        crash_marker: str = "", autostart: bool = False,
    ) -> None:
        self.cfg, self.ledger_url, self.run_id = cfg, ledger_url, run_id
        self._stop = threading.Event()
        self._stop_reason = "stopped"
        self._lock = threading.Lock()
        self.restarts: list[dict[str, Any]] = []  # one entry per child restart (Ray's count)
        self._retries: list[dict[str, Any]] = []  # calls retried after a child died (diagnostics)
        self._graph_stalls = 0  # compiled graphs compiled again after a stall with every actor alive
        self._restart_seen: dict[str, int] = {}
        self._polled = 0.0
        self._progress: dict[str, Any] = {"step": 0, "total": 0, "equity": cfg.initial_cash, "state": "starting"}
        opts = {"max_restarts": cfg.ray.max_restarts, "max_task_retries": 0,
                **ops_metrics.child_options(run_id, cfg.strategy.name),  # metrics labelled by run and strategy
                **head_options(cfg.ray.head_resource)}  # on the head (ray.head_resource): book, OMS and venue state
        logs.configure(cfg.log.format, cfg.log.level, run_id=run_id, actor="supervisor")
        opts = logs.with_log_env(opts, cfg.log.format, cfg.log.level, run_id)  # every child logs the same way
        self.md = MarketDataActor.options(name=f"{run_id}:market_data", **opts).remote(cfg.data)
        # the ledger and the venue need nothing from the data: their workers start while MarketData loads it
        self.ledger = LedgerActor.options(name=f"{run_id}:ledger", **opts).remote(ledger_url, cfg.initial_cash)
        self.broker = BrokerActor.options(name=f"{run_id}:broker", **opts).remote(cfg.broker, cfg.data, self.ledger)
        info = ray.get(self.md.info.remote())
        self.symbols: list[str] = info["symbols"]
        self.drift: Any = None
        if cfg.drift.enabled:  # the model strategy feeds it (docs/drift.md, "In the live loop")
            from tradesys.actors.drift import DriftMonitor, monitor_kwargs

            self.drift = DriftMonitor.options(name=f"{run_id}:drift", **opts).remote(**monitor_kwargs(cfg, run_id))
            if cfg.drift.poll_s is not None:
                self.drift.start.remote(cfg.drift.poll_s)
        self.strategy = StrategyActor.options(name=f"{run_id}:strategy", **opts).remote(
            cfg.strategy, len(self.symbols), bars_per_year(cfg.data), self.drift, cfg.drift.send_every_bars,
            cfg.drift.max_in_flight, cfg.risk, cfg.data, self.ledger, execution=cfg.execution,
        )
        self.risk = RiskActor.options(name=f"{run_id}:risk", **opts).remote(cfg.risk, cfg.data, self.ledger)
        self.execution = ExecutionActor.options(name=f"{run_id}:execution", **opts).remote(
            self.broker, self.ledger, crash_execution_at_submit, crash_marker, settings=cfg.execution, data=cfg.data
        )
        ray.get([self.ledger.snapshot.remote(), self.execution.info.remote(), self.risk.stats.remote()])
        self.components = TradingComponents(
            strategy=self._proxy(self.strategy, "strategy"),
            risk=self._proxy(self.risk, "risk"),
            execution=self._proxy(self.execution, "execution"),
        )
        self.ledger_proxy = self._proxy(self.ledger, "ledger")
        self.features: Any = None
        self._feature_refs: list[Any] = []
        if cfg.features.enabled:
            from tradesys.actors.features import FeatureActor

            self.features = FeatureActor.options(name=f"{run_id}:features", **opts).remote(
                cfg.features, self.symbols, cfg.data, self.ledger
            )
            # ready before the loop starts: it rebuilds up to the steps booked *before* this run, not a racing few
            ray.get(self.features.stats.remote())
        if autostart:  # a detached run: Ray restarting this actor (its node died) resumes the loop from the ledger
            self.start()

    def _feed_features(self, bars: Any) -> None:
        """Hand the batch to the FeatureActor without waiting, but with at most max_in_flight outstanding."""
        self._feature_refs.append(self.features.on_bars.remote(bars))
        limit = self.cfg.features.max_in_flight
        if len(self._feature_refs) > limit:
            done, self._feature_refs = ray.wait(self._feature_refs, num_returns=len(self._feature_refs) - limit)
            ray.get(done)  # surface a failure in the feature path

    def _proxy(self, handle: Any, name: str) -> ActorProxy:
        return ActorProxy(handle, name, retries=self.cfg.ray.max_restarts, on_restart=self._record_restart)

    def _record_restart(self, child: str, method: str, exc: BaseException) -> None:
        """A call failed on a dead child and is retried: note it, then count restarts from Ray's record."""
        with self._lock:
            self._retries.append({"child": child, "method": method, "error": type(exc).__name__})
        self._poll_restarts()

    def _poll_restarts(self) -> None:
        """Record each child restart once, from the GCS actor table's restart count (whoever saw the failure)."""
        now = time.monotonic()
        with self._lock:
            if now - self._polled < 0.2:
                return
            self._polled = now
            step, ts = self._progress.get("step", 0), self._progress.get("ts_ns", 0)
        counts = child_restart_counts(self.children())
        with self._lock:
            for child, n in counts.items():
                seen = self._restart_seen.get(child, 0)
                for k in range(seen + 1, n + 1):
                    during = [r["method"] for r in self._retries if r["child"] == child]
                    self.restarts.append(
                        {"child": child, "incarnation": k, "step": step, "ts_ns": ts, "wall_ns": time.time_ns(),
                         "retried_calls": during}
                    )
                self._restart_seen[child] = max(seen, n)

    def children(self) -> dict[str, Any]:
        """Handles of the children (for tests and operators)."""
        return {
            "market_data": self.md,
            "ledger": self.ledger,
            "broker": self.broker,
            "strategy": self.strategy,
            "risk": self.risk,
            "execution": self.execution,
            **({"features": self.features} if self.features is not None else {}),
            **({"drift": self.drift} if self.drift is not None else {}),
        }

    def _finish_drift(self) -> dict[str, Any]:
        """Hand the monitor the last observations, stop its loop, and return its compact status for the summary."""
        from tradesys.actors.drift import compact_status

        feed: dict[str, Any] = {}
        try:
            feed = ray.get(self.strategy.flush_drift.remote())
        except Exception as exc:  # a lost tail of observations must not cost the run its summary
            feed = {"flush_error": f"{type(exc).__name__}: {exc}"[:500]}
        try:
            ray.get(self.drift.stop.remote())
            return compact_status(ray.get(self.drift.status.remote()), feed)
        except Exception as exc:
            return {"error": f"{type(exc).__name__}: {exc}"[:500], "feed": feed}

    def progress(self) -> dict[str, Any]:
        self._poll_restarts()
        with self._lock:
            return {**self._progress, "restarts": len(self.restarts)}

    def stop(self, reason: str = "stop requested") -> None:
        """Finish the step in flight, then stop. Every step is one ledger transaction, so the book stays whole."""
        self._stop_reason = reason
        self._stop.set()

    # A detached run (tradesys.detached): the loop runs on a thread of this actor, not under a caller's `run` call.
    _loop_thread: threading.Thread | None = None
    _outcome: dict[str, Any] | None = None

    def start(self) -> dict[str, Any]:
        """Start the loop on a thread of this actor and return at once (idempotent): the run outlives its driver."""
        with self._lock:
            if self._loop_thread is None:
                self._loop_thread = threading.Thread(target=self._run_detached, name="live-loop", daemon=True)
                self._loop_thread.start()
        return self.progress()

    def _run_detached(self) -> None:
        try:
            outcome: dict[str, Any] = {"summary": self.run()}
        except BaseException as exc:  # kept for `tradesys stop`, which reports it in one line
            outcome = {"error": " ".join(f"{type(exc).__name__}: {exc}".split())[:500]}
            with self._lock:
                self._progress["state"] = "failed"
        with self._lock:
            self._outcome = outcome

    def result(self) -> dict[str, Any] | None:
        """A detached run's end: {"summary": ...} or {"error": ...}; None while the loop still runs."""
        with self._lock:
            return self._outcome

    def status(self) -> dict[str, Any]:
        """What `tradesys status` shows: progress plus the run's identity and ledger."""
        from tradesys.config import redact_url

        return {**self.progress(), "run_id": self.run_id, "ledger_url": redact_url(self.ledger_url)}

    def _next_batch(self) -> tuple[Any, Any]:
        return self.md.next_batch.options(num_returns=2).remote()

    def _get_ts(self, refs: tuple[Any, Any], last_ts: int) -> tuple[int, Any]:
        """The next batch's timestamp; if MarketData died, wait for its restart and re-read after `last_ts`."""
        for attempt in range(self.cfg.ray.max_restarts + 2):
            try:
                if attempt:
                    ray.get(self.md.resume_after.remote(last_ts))
                    refs = self._next_batch()
                return int(ray.get(refs[0])), refs[1]
            except RayActorError as exc:  # includes "unavailable: the actor is restarting"
                if attempt == self.cfg.ray.max_restarts + 1:
                    raise
                self._record_restart("market_data", "next_batch", exc)
                time.sleep(min(0.2 * 2**attempt, 2.0))
        raise AssertionError("unreachable")

    def _graph_step(self, last_ts: int) -> tuple[int, Any, Any]:
        """One step through the compiled graph. After a fault (an actor of the graph died): tear the graph down, wait
        until Ray has restarted the actor (it rebuilds from the ledger), count the restart, compile, run the step
        again; the actors that survived answer it as before (tradesys.actors.graph)."""
        tries = self.cfg.ray.max_restarts + 2
        for attempt in range(tries):
            try:
                if self._graph is None:
                    self._graph = StepGraph(self.children(), with_bars=self.features is not None).compile()
                return self._graph.step(last_ts)
            except GRAPH_FAULTS as exc:
                if attempt == tries - 1:
                    raise
                broken, self._graph = self._graph, None
                if isinstance(exc, GraphStalled):  # no actor died: Ray's channels wedged (tradesys.actors.graph)
                    self._graph_stalls += 1
                    log.warning("compiled graph stalled: compiled again", extra={"last_ts_ns": last_ts})
                if broken is not None:
                    broken.teardown()
                StepGraph(self.children()).wait_alive()
                self._note_graph_fault(exc)
        raise AssertionError("unreachable")

    def _note_graph_fault(self, exc: BaseException) -> None:
        """Note the step retried on each graph actor Ray restarted, then count restarts from Ray's record."""
        counts = child_restart_counts({n: h for n, h in self.children().items() if n in GRAPH_ACTORS})
        with self._lock:
            for child, n in counts.items():
                if n > self._restart_seen.get(child, 0):
                    self._retries.append({"child": child, "method": "graph_step", "error": type(exc).__name__})
            self._polled = 0.0
        self._poll_restarts()

    def _resume_point(self, booked: int) -> tuple[int, list[AuditEntry]]:
        """The timestamp to resume after, and the `resume` audit entry (none for a fresh ledger)."""
        if booked <= 0:
            return booked, []
        # the strategy's decisions: parents count, the children an algorithm sent on later bars do not
        orders = decision_rows(self.ledger_proxy.read("orders"), self.ledger_proxy.read("parent_orders"))
        after = resume_after(booked, orders)
        decided = after == booked
        steps = len({int(r["ts_ns"]) for r in self.ledger_proxy.read("equity_curve")})
        msg = f"run {self.run_id} resumes after step {booked}" + ("" if decided else " (re-running that step)")
        return after, [AuditEntry(booked, "resume", msg, payload={
            "resume_ts": booked, "steps_booked": steps, "orders_booked": len(orders), "rerun_last_step": not decided,
        })]

    def run(self) -> dict[str, Any]:
        """Drive the loop to the end of the data (or until `stop`); return the run summary."""
        start = ray.get(self.ledger.snapshot.remote())
        last_ts, resume = self._resume_point(start.ts_ns)
        total = ray.get(self.md.resume_after.remote(last_ts))
        with self._lock:
            self._progress.update(total=total, state="running", equity=start.equity)
        latencies: list[int] = []
        reason = "completed"
        self.ledger_proxy.audit(
            [*resume, AuditEntry(start.ts_ns, "start", f"run {self.run_id} started", payload={"steps": total})]
        )
        log.info("run started", extra={"steps": total, "resume_after_ts_ns": last_ts, "ledger": self.ledger_url})
        bus_mode = self.cfg.data.bus != "direct"
        if bus_mode and self.cfg.data.publish:
            from tradesys.actors.children import publish_feed

            self._feed = publish_feed.remote(self.cfg.data, last_ts)
        graph = self.cfg.ray.compiled_graph  # else ordinary actor calls through ActorProxy (the fallback)
        self._graph: StepGraph | None = None
        pending = None if graph else self._next_batch()
        step = 0
        while True:
            if self._stop.is_set():
                reason = self._stop_reason
                break
            if graph:  # MarketData is in the graph (no prefetch); it acknowledges the step before (bus mode)
                t_ready = time.monotonic()
                ts, bars, result = self._graph_step(last_ts)
                if ts < 0:
                    break
                if self.features is not None:
                    self._feed_features(bars)
            else:
                ts, bars = self._get_ts(pending, last_ts)
                if ts < 0:
                    break
                t_ready = time.monotonic()
                pending = self._next_batch()  # prefetch while this step runs
                if self.features is not None:
                    self._feed_features(bars)
                result = run_step(bars, ts, self.components)
                if bus_mode:
                    self.md.ack.remote(ts)  # booked: commit the step's offset (fire and forget; a lost ack re-reads)
            latencies += result.latencies_ns
            last_ts = ts
            step += 1
            with self._lock:
                self._progress.update(step=step, equity=result.snapshot.equity, ts_ns=ts)
            ops_metrics.emit_step(step, ts, time.monotonic() - t_ready, self.restarts)
        if self._graph is not None:
            self._graph.teardown()
            self._graph = None
        if graph and bus_mode and step:
            ray.get(self.md.ack.remote(last_ts))  # the last booked step (the graph acknowledges each one before)
        if self._feature_refs:
            ray.get(self._feature_refs)  # the online store is current as of the last booked step
            self._feature_refs = []
        drift = self._finish_drift() if self.drift is not None else None
        self._polled = 0.0
        self._poll_restarts()
        with self._lock:
            restarts = list(self.restarts)
            self._progress["state"] = "finishing"
        audit = [
            AuditEntry(r["ts_ns"] or last_ts, "restart", f"{r['child']} restarted (incarnation {r['incarnation']})",
                       payload=r)
            for r in restarts
        ]
        audit.append(AuditEntry(last_ts, "shutdown", reason, payload={"steps": step}))
        self.ledger_proxy.audit(audit)
        for r in restarts:
            log.warning("child restarted", extra={k: r[k] for k in ("child", "incarnation", "step")})
        log.info("run stopped", extra={"reason": reason, "steps": step})
        summary = summarize(
            self.ledger_proxy.read("equity_curve"),
            self.ledger_proxy.read("orders"),
            self.ledger_proxy.read("fills"),
            self.cfg.initial_cash,
            latencies,
            restarts=len(restarts),
        ).as_dict()
        with self._lock:
            self._progress["state"] = reason
        ops_metrics.emit_step(step, last_ts, 0.0, restarts, running=False)
        return {
            **summary,
            "reason": reason,
            "run_id": self.run_id,
            "loop_mode": "compiled_graph" if graph else "actor_calls",
            "graph_stalls": self._graph_stalls,
            "ledger_url": self.ledger_url,
            "symbols": self.symbols,
            "broker": ray.get(self.broker.stats.remote()),
            "risk": ray.get(self.risk.stats.remote()),
            "strategy": ray.get(self.strategy.stats.remote()),
            "execution": ray.get(self.execution.stats.remote()),  # reconciliation counters and the halt reason
            **({"features": ray.get(self.features.stats.remote())} if self.features is not None else {}),
            **({"drift": drift} if drift is not None else {}),
            **({"market_data_lag": ray.get(self.md.lag.remote())} if self.cfg.data.bus != "direct" else {}),
        }
