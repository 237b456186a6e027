"""The Supervisor: wires the children, drives the clock, restarts failed children, shuts down cleanly.

It is a threaded actor: `run` drives the loop on one thread while `progress` and `stop` answer on others.
The next bar batch is fetched while the current step runs, and batches travel between actors as object
references (the Supervisor only reads the timestamp), so the loop costs a handful of actor calls per step.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import ray
from ray.exceptions import RayActorError

from tradesys.actors.children import (
    BrokerActor,
    ExecutionActor,
    LedgerActor,
    MarketDataActor,
    RiskActor,
    StrategyActor,
)
from tradesys.actors.proxy import ActorProxy
from tradesys.backtest.metrics import summarize
from tradesys.config import TradesysConfig
from tradesys.data import bars_per_year
from tradesys.engine.step import TradingComponents, run_step
from tradesys.ledger.base import AuditEntry


@ray.remote(num_cpus=0, max_concurrency=8)
class Supervisor:
    def __init__(
        self, cfg: TradesysConfig, ledger_url: str, run_id: str, crash_execution_at_submit: int | None = None,
        crash_marker: str = "",
    ) -> None:
        self.cfg, self.ledger_url, self.run_id = cfg, ledger_url, run_id
        self._stop = threading.Event()
        self._stop_reason = "stopped"
        self._lock = threading.Lock()
        self.restarts: list[dict[str, Any]] = []
        self._progress: dict[str, Any] = {"step": 0, "total": 0, "equity": cfg.initial_cash, "state": "starting"}
        opts = {"max_restarts": cfg.ray.max_restarts, "max_task_retries": 0}
        self.md = MarketDataActor.options(name=f"{run_id}:market_data", **opts).remote(cfg.data)
        info = ray.get(self.md.info.remote())
        self.symbols: list[str] = info["symbols"]
        self.ledger = LedgerActor.options(name=f"{run_id}:ledger", **opts).remote(ledger_url, cfg.initial_cash)
        self.broker = BrokerActor.options(name=f"{run_id}:broker", **opts).remote(cfg.broker)
        self.drift: Any = None
        if cfg.drift.enabled:  # the model strategy feeds it (docs/drift.md, "In the live loop")
            from tradesys.actors.drift import DriftMonitor, monitor_kwargs

            self.drift = DriftMonitor.options(name=f"{run_id}:drift", **opts).remote(**monitor_kwargs(cfg, run_id))
            if cfg.drift.poll_s is not None:
                self.drift.start.remote(cfg.drift.poll_s)
        self.strategy = StrategyActor.options(name=f"{run_id}:strategy", **opts).remote(
            cfg.strategy, len(self.symbols), bars_per_year(cfg.data), self.drift, cfg.drift.send_every_bars,
            cfg.drift.max_in_flight,
        )
        self.risk = RiskActor.options(name=f"{run_id}:risk", **opts).remote(cfg.risk)
        self.execution = ExecutionActor.options(name=f"{run_id}:execution", **opts).remote(
            self.broker, self.ledger, crash_execution_at_submit, crash_marker
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

            self.features = FeatureActor.options(name=f"{run_id}:features", **opts).remote(cfg.features, self.symbols)

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
        entry = {"child": child, "method": method, "error": type(exc).__name__, "wall_ns": time.time_ns()}
        with self._lock:
            self.restarts.append(entry)

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
        with self._lock:
            return {**self._progress, "restarts": len(self.restarts)}

    def stop(self, reason: str = "stop requested") -> None:
        """Finish the step in flight, then stop. Every step is one ledger transaction, so the book stays whole."""
        self._stop_reason = reason
        self._stop.set()

    def _next_batch(self) -> tuple[Any, Any]:
        return self.md.next_batch.options(num_returns=2).remote()

    def _get_ts(self, refs: tuple[Any, Any], last_ts: int) -> tuple[int, Any]:
        for attempt in range(self.cfg.ray.max_restarts + 1):
            try:
                return int(ray.get(refs[0])), refs[1]
            except RayActorError as exc:
                if attempt == self.cfg.ray.max_restarts:
                    raise
                self._record_restart("market_data", "next_batch", exc)
                time.sleep(0.2 * 2**attempt)
                ray.get(self.md.resume_after.remote(last_ts))
                refs = self._next_batch()
        raise AssertionError("unreachable")

    def run(self) -> dict[str, Any]:
        """Drive the loop to the end of the data (or until `stop`); return the run summary."""
        start = ray.get(self.ledger.snapshot.remote())
        last_ts = start.ts_ns
        total = ray.get(self.md.resume_after.remote(last_ts))
        with self._lock:
            self._progress.update(total=total, state="running", equity=start.equity)
        latencies: list[int] = []
        reason = "completed"
        self.ledger_proxy.audit([AuditEntry(last_ts, "start", f"run {self.run_id} started", payload={"steps": total})])
        bus_mode = self.cfg.data.bus != "direct"
        if bus_mode and self.cfg.data.publish:
            from tradesys.actors.children import publish_feed

            self._feed = publish_feed.remote(self.cfg.data, last_ts)
        pending = self._next_batch()
        step = 0
        while True:
            if self._stop.is_set():
                reason = self._stop_reason
                break
            ts, bars = self._get_ts(pending, last_ts)
            if ts < 0:
                break
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
        if self._feature_refs:
            ray.get(self._feature_refs)  # the online store is current as of the last booked step
            self._feature_refs = []
        drift = self._finish_drift() if self.drift is not None else None
        with self._lock:
            restarts = list(self.restarts)
            self._progress["state"] = "finishing"
        audit = [
            AuditEntry(last_ts, "restart", f"{r['child']} restarted during {r['method']}", payload=r) for r in restarts
        ]
        audit.append(AuditEntry(last_ts, "shutdown", reason, payload={"steps": step}))
        self.ledger_proxy.audit(audit)
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
        return {
            **summary,
            "reason": reason,
            "run_id": self.run_id,
            "ledger_url": self.ledger_url,
            "symbols": self.symbols,
            "broker": ray.get(self.broker.stats.remote()),
            "risk": ray.get(self.risk.stats.remote()),
            "strategy": ray.get(self.strategy.stats.remote()),
            **({"features": ray.get(self.features.stats.remote())} if self.features is not None else {}),
            **({"drift": drift} if drift is not None else {}),
            **({"market_data_lag": ray.get(self.md.lag.remote())} if self.cfg.data.bus != "direct" else {}),
        }
