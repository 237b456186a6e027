"""The tradesys Grafana dashboard, built from one panel list (deploy/grafana/dashboards/tradesys.json).

`python -m tradesys.ops.dashboard` prints the JSON that is committed; a test requires the two to be equal and every
query to name only metrics `tradesys.ops.metrics` exports. The same panel list drives the PNG rendering in
docs/operations.md (benchmarks/ops_dashboard.py), since Grafana itself is not installable here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from tradesys.ops.metrics import exported_series

DATASOURCE = {"type": "prometheus", "uid": "prometheus"}  # deploy/grafana/provisioning/datasources/tradesys.yml
SEL = 'run_id=~"$run_id", strategy=~"$strategy"'


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[tuple[str, str], ...]  # (PromQL, legend)
    unit: str = "short"
    kind: str = "timeseries"  # or "stat"
    description: str = ""


PANELS: tuple[Panel, ...] = (
    Panel("Equity", ((f"max by (run_id) (ray_tradesys_equity{{{SEL}}})", "{{run_id}}"),), "currencyUSD"),
    Panel("P&L", ((f"max by (run_id) (ray_tradesys_pnl_day{{{SEL}}})", "day {{run_id}}"),
                  (f"max by (run_id) (ray_tradesys_pnl_total{{{SEL}}})", "total {{run_id}}")), "currencyUSD"),
    Panel("Drawdown", ((f"max by (run_id) (ray_tradesys_drawdown{{{SEL}}})", "{{run_id}}"),), "percentunit"),
    Panel("VaR and ES (one bar)", ((f"max by (run_id) (ray_tradesys_var{{{SEL}}})", "VaR {{run_id}}"),
                                   (f"max by (run_id) (ray_tradesys_es{{{SEL}}})", "ES {{run_id}}")), "currencyUSD"),
    Panel("VaR / equity against the limit",
          ((f"max by (run_id) (ray_tradesys_var_ratio{{{SEL}}})", "VaR/equity {{run_id}}"),
           (f"max by (run_id) (ray_tradesys_var_limit_ratio{{{SEL}}})", "limit {{run_id}}")), "percentunit"),
    Panel("Leverage", ((f"max by (run_id) (ray_tradesys_gross_leverage{{{SEL}}})", "gross {{run_id}}"),
                       (f"max by (run_id) (ray_tradesys_net_leverage{{{SEL}}})", "net {{run_id}}"))),
    Panel("Orders and fills", ((f"max by (run_id) (ray_tradesys_orders{{{SEL}}})", "orders {{run_id}}"),
                               (f"max by (run_id) (ray_tradesys_fills{{{SEL}}})", "fills {{run_id}}"))),
    Panel("Rejects by reason", ((f"max by (run_id, reason) (ray_tradesys_rejects{{{SEL}}})",
                                 "{{reason}} {{run_id}}"),)),
    Panel("Decision-to-fill latency",
          ((f"histogram_quantile(0.5, sum by (le) (rate(ray_tradesys_decision_to_fill_seconds_bucket{{{SEL}}}[5m])))",
            "p50"),
           (f"histogram_quantile(0.99, sum by (le) (rate(ray_tradesys_decision_to_fill_seconds_bucket{{{SEL}}}[5m])))",
            "p99")), "s"),
    Panel("Step lag and heartbeat age",
          ((f"max by (run_id) (ray_tradesys_step_lag_seconds{{{SEL}}})", "step lag {{run_id}}"),
           (f"time() - max by (run_id) (ray_tradesys_last_step_timestamp_seconds{{{SEL}}})",
            "since last step {{run_id}}")), "s"),
    Panel("Steps booked", ((f"max by (run_id) (ray_tradesys_steps{{{SEL}}})", "{{run_id}}"),)),
    Panel("Data clock (last booked bar)",
          ((f"max by (run_id) (ray_tradesys_data_timestamp_seconds{{{SEL}}}) * 1000", "{{run_id}}"),),
          "dateTimeAsIso", kind="stat"),
    Panel("Kill switch and loop running",
          ((f"max by (run_id) (ray_tradesys_kill_switch{{{SEL}}})", "kill switch {{run_id}}"),
           (f"max by (run_id) (ray_tradesys_running{{{SEL}}})", "running {{run_id}}")), kind="stat"),
    Panel("Actor restarts", ((f"max by (run_id, child) (ray_tradesys_restarts{{{SEL}}}) > 0",
                              "{{child}} {{run_id}}"),)),
    Panel("Reconciliation", ((f"max by (run_id, what) (ray_tradesys_reconcile{{{SEL}, what=~\"breaks|halted\"}})",
                              "{{what}} {{run_id}}"),)),
    Panel("Drift", ((f"max by (run_id, kind) (ray_tradesys_drift_detected{{{SEL}}})", "detected {{kind}}"),
                    (f"max by (run_id, kind) (ray_tradesys_drift_share{{{SEL}}})", "drifted share {{kind}}"),
                    (f"max by (run_id, kind) (ray_tradesys_drift_max_psi{{{SEL}}})", "max PSI {{kind}}"))),
    Panel("API latency p99 by route",
          (("histogram_quantile(0.99, sum by (le, route) (rate(ray_tradesys_http_request_seconds_bucket[5m])))",
            "{{route}}"),), "s"),
    Panel("API 5xx per second by route",
          (("sum by (route) (rate(ray_tradesys_http_errors_total[5m]))", "{{route}}"),), "reqps"),
)

_METRIC = re.compile(r"\bray_[a-z0-9_]+")


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads (the ray_-prefixed identifiers)."""
    return set(_METRIC.findall(expr))


def unknown_metrics() -> dict[str, set[str]]:
    """Panel title -> series its queries name that the platform does not export (empty when all is well)."""
    known = exported_series()
    out = {}
    for p in PANELS:
        bad = set().union(*(metric_names(q) for q, _ in p.queries)) - known
        if bad:
            out[p.title] = bad
    return out


def _variable(name: str, metric: str) -> dict[str, Any]:
    return {
        "name": name, "label": name, "type": "query", "datasource": DATASOURCE,
        "query": {"query": f"label_values({metric}, {name})", "refId": f"var-{name}"},
        "definition": f"label_values({metric}, {name})",
        "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
    }


def dashboard() -> dict[str, Any]:
    """The dashboard JSON model (Grafana 10+ schema): two columns of panels, run and strategy variables."""
    panels = []
    for i, p in enumerate(PANELS):
        panels.append({
            "id": i + 1, "type": p.kind, "title": p.title, "description": p.description, "datasource": DATASOURCE,
            "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
            "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
            "targets": [{"refId": chr(ord("A") + k), "datasource": DATASOURCE, "expr": q, "legendFormat": legend}
                        for k, (q, legend) in enumerate(p.queries)],
        })
    return {
        "uid": "tradesys-trading", "title": "tradesys: trading", "tags": ["tradesys", "ray"],
        "schemaVersion": 39, "version": 1, "editable": False, "refresh": "10s", "timezone": "utc",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [_variable("run_id", "ray_tradesys_equity"),
                                _variable("strategy", "ray_tradesys_equity")]},
        "panels": panels,
    }


def dashboard_json() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    print(dashboard_json(), end="")
