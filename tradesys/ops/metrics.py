"""Trading metrics on Prometheus: every name, help text and tag key in one place, and the pure arithmetic.

Each metric goes through `ray.util.metrics`, so it appears on Ray's metrics export port (and Ray's dashboard)
with the `ray_` prefix: `tradesys_equity` is scraped as `ray_tradesys_equity`. The actor that owns a number
emits it: the LedgerActor after each commit (equity, P&L, drawdown, leverage, orders, fills, rejects), the
RiskActor after each check (VaR, ES, the kill switch), the ExecutionActor (decision-to-fill latency,
reconciliation), the Supervisor once per step (step lag, heartbeat, restarts), the DriftMonitor after each check
(scores), the Serve app (request latency and errors per route).

Labels are bounded: `run_id` and `strategy` on every trading metric (one value each per run), plus small closed
sets (reject reasons, child actor names, reconciliation counters, drift kinds, HTTP route templates and status
classes). Never an order id or a symbol. Counts that the ledger holds (orders, fills, rejects) are gauges set to
the ledger's totals, so a restarted actor (a fresh process) reports the book of record, not a count from zero.

The run id comes from the actor's name (`<run id>:<role>`), the strategy from the cluster's key-value store, where
the Supervisor publishes it per run (`child_options`); the environment (`TRADESYS_RUN_ID`, `TRADESYS_STRATEGY`)
overrides both.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

RUN_ID_ENV = "TRADESYS_RUN_ID"
STRATEGY_ENV = "TRADESYS_STRATEGY"
PREFIX = "ray_"  # what Ray's Prometheus export puts before every application metric name
RUN_TAGS = ("run_id", "strategy")

# decision-to-fill latency buckets (seconds): a simulated venue fills within the step (ms), a real one later (s)
LATENCY_BUCKETS_S = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
HTTP_BUCKETS_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]

Kind = Literal["gauge", "counter", "histogram"]


@dataclass(frozen=True)
class MetricSpec:
    """One exported metric: its name (without Ray's prefix), kind, help, tag keys and histogram buckets."""

    name: str
    kind: Kind
    help: str
    tags: tuple[str, ...] = RUN_TAGS
    buckets: tuple[float, ...] = ()
    owner: str = ""

    @property
    def exported(self) -> str:
        """The name Prometheus scrapes (histograms add _bucket/_sum/_count, counters _total)."""
        return PREFIX + self.name


SPECS: tuple[MetricSpec, ...] = (
    # the book of record (LedgerActor, after each commit)
    MetricSpec("tradesys_equity", "gauge", "equity of the book (account currency)", owner="ledger"),
    MetricSpec("tradesys_pnl_day", "gauge", "P&L since the start-of-day equity", owner="ledger"),
    MetricSpec("tradesys_pnl_total", "gauge", "P&L since the initial cash (after fees)", owner="ledger"),
    MetricSpec("tradesys_drawdown", "gauge", "drawdown from the peak equity, as a fraction (0.05 = 5%)",
               owner="ledger"),
    MetricSpec("tradesys_gross_leverage", "gauge", "sum of |position value| / equity", owner="ledger"),
    MetricSpec("tradesys_net_leverage", "gauge", "sum of signed position value / equity", owner="ledger"),
    MetricSpec("tradesys_orders", "gauge", "orders in the ledger (every status)", owner="ledger"),
    MetricSpec("tradesys_fills", "gauge", "fills in the ledger", owner="ledger"),
    MetricSpec("tradesys_rejects", "gauge", "rejected orders in the ledger, by reason", (*RUN_TAGS, "reason"),
               owner="ledger"),
    # risk (RiskActor, after each check)
    MetricSpec("tradesys_var", "gauge", "one-bar VaR of the book (positive loss, account currency)", owner="risk"),
    MetricSpec("tradesys_es", "gauge", "one-bar expected shortfall of the book (positive loss)", owner="risk"),
    MetricSpec("tradesys_var_ratio", "gauge", "one-bar VaR / equity", owner="risk"),
    MetricSpec("tradesys_var_limit_ratio", "gauge", "the risk gate's VaR limit (risk.var_limit_pct; 0: off)",
               owner="risk"),
    MetricSpec("tradesys_kill_switch", "gauge", "1 while the daily-loss kill switch is latched, else 0",
               owner="risk"),
    # execution (ExecutionActor)
    MetricSpec("tradesys_decision_to_fill_seconds", "histogram", "wall time from the strategy's decision to the "
               "fill", buckets=tuple(LATENCY_BUCKETS_S), owner="execution"),
    MetricSpec("tradesys_reconcile", "gauge", "reconciliation of the ledger against the broker: runs, what they "
               "booked, breaks, the last break amount, halted (1/0)", (*RUN_TAGS, "what"), owner="execution"),
    # the loop (Supervisor, once per step)
    MetricSpec("tradesys_steps", "gauge", "steps booked by this run", owner="supervisor"),
    MetricSpec("tradesys_step_lag_seconds", "gauge", "wall time from the feed handing out the step's bars to the "
               "step being booked", owner="supervisor"),
    MetricSpec("tradesys_data_timestamp_seconds", "gauge", "the data clock: timestamp of the last booked bar "
               "(unix seconds)", owner="supervisor"),
    MetricSpec("tradesys_last_step_timestamp_seconds", "gauge", "wall clock of the last booked step (unix "
               "seconds): the loop's heartbeat", owner="supervisor"),
    MetricSpec("tradesys_running", "gauge", "1 while the loop runs, 0 once it stopped", owner="supervisor"),
    MetricSpec("tradesys_restarts", "gauge", "child actor restarts in this run (Ray's count), by child",
               (*RUN_TAGS, "child"), owner="supervisor"),
    # drift (DriftMonitor, after each check)
    MetricSpec("tradesys_drift_detected", "gauge", "1 when the last check found drift, by kind",
               (*RUN_TAGS, "kind"), owner="drift"),
    MetricSpec("tradesys_drift_share", "gauge", "share of columns flagged as drifted at the last check, by kind",
               (*RUN_TAGS, "kind"), owner="drift"),
    MetricSpec("tradesys_drift_max_psi", "gauge", "largest population stability index at the last check, by kind",
               (*RUN_TAGS, "kind"), owner="drift"),
    # the HTTP API (Serve replica)
    MetricSpec("tradesys_http_request_seconds", "histogram", "HTTP request latency by route template, method "
               "and status class", ("route", "method", "status"), tuple(HTTP_BUCKETS_S), owner="serve"),
    MetricSpec("tradesys_http_errors", "counter", "HTTP responses with status >= 500 by route template and "
               "status", ("route", "method", "status"), owner="serve"),
)
BY_NAME: dict[str, MetricSpec] = {s.name: s for s in SPECS}
DRIFT_KINDS = ("features", "predictions")
CHILDREN = ("market_data", "ledger", "broker", "strategy", "risk", "execution", "features", "drift")


def exported_series() -> set[str]:
    """Every series name Prometheus can see from these metrics (histogram and counter suffixes included)."""
    out: set[str] = set()
    for s in SPECS:
        if s.kind == "histogram":
            out |= {s.exported + suffix for suffix in ("_bucket", "_sum", "_count")}
        elif s.kind == "counter":
            out |= {s.exported, s.exported + "_total"}
        else:
            out.add(s.exported)
    return out


# --- pure arithmetic ----------------------------------------------------------------------------------------------


def book_values(snap: Any, peak_equity: float) -> dict[str, float]:
    """Equity, P&L, drawdown and leverage of a PortfolioSnapshot; `peak_equity` includes this snapshot."""
    eq = float(snap.equity)
    gross = float(snap.gross_exposure)
    net = float(snap.market_value)
    return {
        "tradesys_equity": eq,
        "tradesys_pnl_day": eq - float(snap.day_start_equity),
        "tradesys_pnl_total": eq - float(snap.initial_cash),
        "tradesys_drawdown": (peak_equity - eq) / peak_equity if peak_equity > 0 else 0.0,
        "tradesys_gross_leverage": gross / eq if eq > 0 else math.inf,
        "tradesys_net_leverage": net / eq if eq > 0 else math.inf,
    }


@dataclass
class LedgerCounts:
    """Running totals of the book of record, seeded from the ledger's rows and advanced by each commit."""

    orders: int = 0
    fills: int = 0
    rejects: dict[str, int] = field(default_factory=dict)
    rejected_ids: set[str] = field(default_factory=set)
    peak_equity: float = 0.0

    @classmethod
    def from_rows(cls, orders: Sequence[Mapping[str, Any]], n_fills: int, equity: Iterable[float]) -> LedgerCounts:
        c = cls(orders=len(orders), fills=n_fills, peak_equity=max(equity, default=0.0))
        for r in orders:
            if str(r.get("status")) == "rejected":
                c.rejected_ids.add(str(r["client_order_id"]))
                reason = str(r.get("reason") or "unknown")
                c.rejects[reason] = c.rejects.get(reason, 0) + 1
        return c

    def apply(self, inserted_orders: int, inserted_fills: int, updates: Iterable[Any], equity: float) -> None:
        """One commit: what the ledger inserted and the order updates it wrote (rejects counted once per id)."""
        self.orders += inserted_orders
        self.fills += inserted_fills
        for u in updates:
            if str(u.status) == "rejected" and u.client_order_id not in self.rejected_ids:
                self.rejected_ids.add(u.client_order_id)
                reason = str(u.reason) if u.reason is not None else "unknown"
                self.rejects[reason] = self.rejects.get(reason, 0) + 1
        self.peak_equity = max(self.peak_equity, equity)


def drift_values(record: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Per kind (features, predictions): detected (1/0), share of drifted columns, max PSI, from a check record."""
    out: dict[str, dict[str, float]] = {}
    for kind in DRIFT_KINDS:
        rep = record.get(kind)
        if not rep:
            continue
        cols = rep.get("columns") or []
        psis = [float(c["psi"]) for c in cols if c.get("psi") is not None and math.isfinite(float(c["psi"]))]
        out[kind] = {
            "tradesys_drift_detected": float(bool(rep.get("drift"))),
            "tradesys_drift_share": (sum(bool(c.get("drifted")) for c in cols) / len(cols)) if cols else 0.0,
            "tradesys_drift_max_psi": max(psis, default=0.0),
        }
    return out


def status_class(status: int) -> str:
    return f"{status // 100}xx"


# --- the Ray shell: metric objects, created once per process -------------------------------------------------------

_made: dict[str, Any] = {}
_labels: dict[str, str] | None = None


def run_labels() -> dict[str, str]:
    """{run_id, strategy} of this process: the environment (`TRADESYS_RUN_ID`, `TRADESYS_STRATEGY`) if set, else
    the run id from the actor's name `<run id>:<role>` and the strategy the Supervisor published for that run."""
    global _labels
    if _labels is None:
        run_id, strategy = os.environ.get(RUN_ID_ENV, ""), os.environ.get(STRATEGY_ENV, "")
        try:
            import ray

            if not run_id:
                name = ray.get_runtime_context().get_actor_name() or ""
                run_id = name.rsplit(":", 1)[0] if ":" in name else name
            if run_id and not strategy:
                from ray.experimental.internal_kv import _internal_kv_get

                raw = _internal_kv_get(_LABEL_KEY + run_id, namespace=_LABEL_NS)
                strategy = raw.decode() if raw else ""
        except Exception:  # labels are reporting: never fail an actor over them
            pass
        _labels = {"run_id": run_id or "unknown", "strategy": strategy or "unknown"}
    return _labels


_LABEL_NS, _LABEL_KEY = "tradesys", "metrics-strategy:"


def child_options(run_id: str, strategy: str) -> dict[str, Any]:
    """Publish the run's strategy for its children's metric labels (in the cluster's key-value store, read once
    per process by `run_labels`, so a restarted child labels as before) and label this process's own metrics.

    Returns no actor options: a `runtime_env` would carry the labels too, but an actor with its own runtime_env
    cannot take a pre-started worker, which slows every restart."""
    global _labels
    _labels = {"run_id": run_id, "strategy": strategy}
    try:
        from ray.experimental.internal_kv import _internal_kv_put

        _internal_kv_put(_LABEL_KEY + run_id, strategy.encode(), overwrite=True, namespace=_LABEL_NS)
    except Exception:  # without the store, children label the strategy "unknown"
        pass
    return {}


def _metric(name: str) -> Any | None:
    """The ray.util.metrics Gauge for `name` (None outside a Ray worker: metrics are then not recorded).

    A gauge spec is one Gauge. A histogram or counter spec is exported as gauges of this process's running
    totals (`_cumulative`): `<name>_bucket` (with `le`), `<name>_sum`, `<name>_count`, or `<name>_total`."""
    m = _made.get(name)
    if m is not None:
        return m
    import ray

    if not ray.is_initialized():
        return None
    from ray.util import metrics

    base, tags = name, None
    for suffix in ("_bucket", "_sum", "_count", "_total"):
        if name.endswith(suffix) and name.removesuffix(suffix) in BY_NAME:
            base = name.removesuffix(suffix)
            tags = (*BY_NAME[base].tags, "le") if suffix == "_bucket" else BY_NAME[base].tags
    s = BY_NAME[base]
    m = metrics.Gauge(name, s.help, tags if tags is not None else s.tags)
    _made[name] = m
    return m


def _finite(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(float(v)) else None


# Ray 2.60 exports a gauge only while its process keeps setting it: the metrics agent drops a series about two
# export intervals (2 s) after its last report. A book that does not trade for a minute (one-minute bars, a
# closed market) must still show its equity, so each process re-sets its gauges' last values every second.
REPUBLISH_S = 1.0
_last: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
_last_lock = threading.Lock()
_republisher: threading.Thread | None = None


def _republish_forever() -> None:
    while True:
        time.sleep(REPUBLISH_S)
        _publish_cumulative()
        with _last_lock:
            items = list(_last.items())
        for (name, tags), v in items:
            m = _made.get(name)
            if m is not None:
                with contextlib.suppress(Exception):  # reporting must never take the process down
                    m.set(v, tags=dict(tags))


def set_gauge(name: str, value: float, **extra: str) -> None:
    """Set a run-labelled gauge (kept alive by the re-publisher); a NaN or infinite value (a VaR before enough
    history) is not recorded."""
    _set(name, value, {**run_labels(), **extra})


def _set(name: str, value: float, tags: dict[str, str]) -> None:
    v, m = _finite(value), _metric(name)
    if v is None or m is None:
        return
    m.set(v, tags=tags)
    with _last_lock:
        _last[(name, tuple(sorted(tags.items())))] = v
    _start_republisher()


def _start_republisher() -> None:
    global _republisher
    with _last_lock:
        if _republisher is None:
            _republisher = threading.Thread(target=_republish_forever, name="tradesys-metrics", daemon=True)
            _republisher.start()


# Histograms and counters: Ray 2.60 exports a ray.util.metrics Histogram or Counter as per-interval deltas (its
# metrics agent adds each export's bucket counts to what it holds, `record_histogram_aggregated_batch`), so an
# export that never reaches the agent is lost for good and the scraped count stays below the true one: a scrape of a
# loaded run once showed 61 decision-to-fill observations for 81 fills. Each process therefore keeps its own running
# totals (bucket counts, sum, count) and exports them as gauges, which the re-publisher sends again every second:
# a missed export is repaired by the next one, and the scraped count is the process's count exactly. Prometheus'
# functions for counters (`rate`, `increase`, `histogram_quantile` over `rate(..._bucket)`) read them as counters:
# a restarted process starts again from zero, which they treat as a counter reset.
_cumulative: dict[tuple[str, tuple[tuple[str, str], ...]], list[float]] = {}  # buckets..., sum, count
_cumulative_dirty = False


def _observe(name: str, value: float, tags: Mapping[str, str]) -> None:
    """One observation of histogram `name` (or one increment of counter `name` by `value`), published within
    REPUBLISH_S by the re-publisher (the request path pays one dict update)."""
    global _cumulative_dirty
    v = _finite(value)
    if v is None:
        return
    spec, key = BY_NAME[name], (name, tuple(sorted(tags.items())))
    with _last_lock:
        st = _cumulative.get(key)
        if st is None:
            st = _cumulative[key] = [0.0] * (len(spec.buckets) + 2)
        if spec.kind == "counter":
            st[-1] += v
        else:
            for i, bound in enumerate(spec.buckets):
                if v <= bound:
                    st[i] += 1
            st[-2] += v
            st[-1] += 1
        _cumulative_dirty = True
    _start_republisher()


def _publish_cumulative() -> None:
    """Set the gauges of every histogram and counter total of this process (`_observe`)."""
    global _cumulative_dirty
    with _last_lock:
        if not _cumulative_dirty:
            return
        items = [(k, list(v)) for k, v in _cumulative.items()]
        _cumulative_dirty = False
    for (name, tag_items), st in items:
        tags = dict(tag_items)
        spec = BY_NAME[name]
        with contextlib.suppress(Exception):  # reporting must never take the process down
            if spec.kind == "counter":
                _set(name + "_total", st[-1], tags)
                continue
            for bound, n in zip(spec.buckets, st, strict=False):
                _set(name + "_bucket", n, {**tags, "le": repr(float(bound))})
            _set(name + "_bucket", st[-1], {**tags, "le": "+Inf"})
            _set(name + "_sum", st[-2], tags)
            _set(name + "_count", st[-1], tags)


def cumulative_totals(name: str) -> dict[tuple[tuple[str, str], ...], list[float]]:
    """This process's running totals of histogram or counter `name` by tag set (for tests and diagnostics)."""
    with _last_lock:
        return {k[1]: list(v) for k, v in _cumulative.items() if k[0] == name}


def ledger_counts(ledger: Any, initial_cash: float) -> LedgerCounts:
    """The totals of an open ledger (a restarted or resumed LedgerActor continues from the book of record)."""
    return LedgerCounts.from_rows(ledger.orders(), len(ledger.fills()),
                                  [float(initial_cash), *(float(r["equity"]) for r in ledger.equity_curve())])


def emit_commit(snap: Any, result: Any, updates: Iterable[Any], counts: LedgerCounts) -> None:
    """LedgerActor, after a commit: advance the totals by what the ledger inserted, then publish the book."""
    counts.apply(len(result.inserted_orders), len(result.inserted_fills), updates, float(snap.equity))
    for name, v in book_values(snap, counts.peak_equity).items():
        set_gauge(name, v)
    set_gauge("tradesys_orders", counts.orders)
    set_gauge("tradesys_fills", counts.fills)
    for reason, n in counts.rejects.items():
        set_gauge("tradesys_rejects", n, reason=reason)


def emit_risk_gate(gate: Any, book: Any, working: Mapping[str, float] | None) -> None:
    """RiskActor, after a check: the gate's VaR and kill switch, and the ES of the same exposures (book plus
    working orders, as the gate's VaR counts them)."""
    held, pending = book.positions, dict(working or {})
    exposures = {s: (held.get(s, 0.0) + pending.get(s, 0.0)) * m for s, m in book.marks.items() if m > 0}
    es = gate.market.es(gate.market.exposure_vector(exposures))
    emit_risk(gate.metrics, es, gate.kill_switch_active, gate.limits.var_limit_pct)


def emit_risk(metrics: Mapping[str, float], es: float, kill_switch: bool, var_limit_pct: float | None) -> None:
    """VaR, ES, VaR/equity against its limit, the kill switch."""
    set_gauge("tradesys_var", metrics.get("var", math.nan))
    set_gauge("tradesys_es", es)
    set_gauge("tradesys_var_ratio", metrics.get("var_pct", math.nan))
    set_gauge("tradesys_var_limit_ratio", var_limit_pct or 0.0)
    set_gauge("tradesys_kill_switch", float(kill_switch))


def emit_fill_latencies(latencies_ns: Iterable[int]) -> None:
    """ExecutionActor: one observation per fill, decision to fill."""
    tags = run_labels()
    for ns in latencies_ns:
        _observe("tradesys_decision_to_fill_seconds", max(ns, 0) / 1e9, tags)


def emit_reconcile(stats: Mapping[str, float], halted: bool) -> None:
    for what, v in stats.items():
        set_gauge("tradesys_reconcile", float(v), what=what)
    set_gauge("tradesys_reconcile", float(halted), what="halted")


def emit_step(steps: int, data_ts_ns: int, lag_s: float, restarts: Sequence[Mapping[str, Any]],
              running: bool = True) -> None:
    """Supervisor, once per booked step, and once at the end with running=False (which leaves the heartbeat and
    the lag at the last step's values)."""
    set_gauge("tradesys_steps", steps)
    if data_ts_ns > 0:
        set_gauge("tradesys_data_timestamp_seconds", data_ts_ns / 1e9)
    if running:
        set_gauge("tradesys_step_lag_seconds", lag_s)
        set_gauge("tradesys_last_step_timestamp_seconds", time.time())
    set_gauge("tradesys_running", float(running))
    by_child = {c: 0 for c in CHILDREN}
    for r in restarts:
        by_child[str(r["child"])] = by_child.get(str(r["child"]), 0) + 1
    for child, n in by_child.items():
        set_gauge("tradesys_restarts", n, child=child)


def emit_drift(record: Mapping[str, Any] | None) -> None:
    """DriftMonitor, after a check (a tick that ran no check returns None)."""
    if not record or record.get("event") != "check":
        return
    for kind, values in drift_values(record).items():
        for name, v in values.items():
            set_gauge(name, v, kind=kind)


def observe_http(route: str, method: str, status: int, seconds: float) -> None:
    """Serve: one request's latency, and a count of each 5xx answer."""
    tags = {"route": route, "method": method, "status": status_class(status)}
    _observe("tradesys_http_request_seconds", max(seconds, 0.0), tags)
    if status >= 500:
        _observe("tradesys_http_errors", 1.0, {**tags, "status": str(status)})
