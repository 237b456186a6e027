"""Trading metrics on Prometheus (issue 15 part 1) and the dashboard that reads them (part 2).

The end-to-end test runs a real live loop (20 stocks x 61 days, the Supervisor and its actors) in its own Ray
runtime with a metrics export port, scrapes it with a real Prometheus server (Debian package `prometheus`), and
requires the scraped equity, order, fill and reject counts to equal the ledger's. The dashboard's every query is
run against that server, and the alert rules are loaded into it and must evaluate cleanly.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import yaml
from scipy import integrate, stats

from tests.conftest import _unavailable, free_port
from tradesys.ledger import open_ledger
from tradesys.ops import metrics as m
from tradesys.ops.dashboard import PANELS, dashboard_json, metric_names, unknown_metrics
from tradesys.risk.market import MarketRiskModel

ROOT = Path(__file__).resolve().parents[1]

# --- the pure parts --------------------------------------------------------------------------------------------


def test_ledger_counts_follow_commits_and_agree_with_a_rebuild() -> None:
    """Totals advanced commit by commit equal the totals read back from the rows (what a restarted actor does)."""
    rows = [{"client_order_id": "a", "status": "filled"}, {"client_order_id": "b", "status": "rejected",
                                                              "reason": "var_limit"}]
    c = m.LedgerCounts.from_rows(rows, n_fills=1, equity=[100.0, 110.0, 105.0])
    assert (c.orders, c.fills, c.rejects, c.peak_equity) == (2, 1, {"var_limit": 1}, 110.0)
    upd = SimpleNamespace
    c.apply(2, 3, [upd(client_order_id="c", status="rejected", reason="max_position"),
                   upd(client_order_id="b", status="rejected", reason="var_limit"),  # already counted
                   upd(client_order_id="d", status="filled", reason=None)], equity=120.0)
    assert (c.orders, c.fills, c.rejects, c.peak_equity) == (4, 4, {"var_limit": 1, "max_position": 1}, 120.0)
    rebuilt = m.LedgerCounts.from_rows(
        [*rows, {"client_order_id": "c", "status": "rejected", "reason": "max_position"},
         {"client_order_id": "d", "status": "filled"}], n_fills=4, equity=[100.0, 110.0, 105.0, 120.0])
    assert (rebuilt.orders, rebuilt.fills, rebuilt.rejects) == (c.orders, c.fills, c.rejects)


def test_book_values_from_a_snapshot() -> None:
    snap = SimpleNamespace(equity=95.0, day_start_equity=97.0, initial_cash=100.0, gross_exposure=190.0,
                           market_value=-38.0)
    v = m.book_values(snap, peak_equity=110.0)
    assert v["tradesys_pnl_day"] == -2.0 and v["tradesys_pnl_total"] == -5.0
    assert v["tradesys_drawdown"] == pytest.approx(15.0 / 110.0)
    assert v["tradesys_gross_leverage"] == 2.0 and v["tradesys_net_leverage"] == -0.4


def test_expected_shortfall_against_independent_references() -> None:
    """Historical ES = the mean of the losses beyond the VaR quantile (sorted by hand); EWMA ES = the normal
    tail expectation, integrated numerically."""
    rng = np.random.default_rng(3)
    model = MarketRiskModel(window=300, confidence=0.95, min_obs=20)
    prices = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, size=(301, 3)), axis=0))
    for t, row in enumerate(prices):
        model.observe(t + 1, {s: float(p) for s, p in zip("ABC", row, strict=True)})
    x = np.array([1e5, -5e4, 2e4])
    losses = -(model.returns() @ x)
    var = np.quantile(losses, 0.95)
    assert model.es(x) == pytest.approx(float(np.mean([v for v in losses if v >= var])), rel=1e-12)
    assert model.es(x) >= model.var(x)
    ewma = MarketRiskModel(window=300, confidence=0.95, method="ewma", min_obs=20)
    for t, row in enumerate(prices):
        ewma.observe(t + 1, {s: float(p) for s, p in zip("ABC", row, strict=True)})
    sigma = ewma.var(x) / stats.norm.ppf(0.95)
    tail, _ = integrate.quad(lambda z: z * stats.norm.pdf(z), stats.norm.ppf(0.95), np.inf)
    assert ewma.es(x) == pytest.approx(sigma * tail / 0.05, rel=1e-8)
    assert math.isnan(MarketRiskModel(min_obs=20).es(np.zeros(0)))


def test_drift_values_from_a_check_record() -> None:
    rec = {"event": "check", "features": {"drift": True, "columns": [
        {"psi": 0.05, "drifted": False}, {"psi": 0.4, "drifted": True}, {"psi": None, "drifted": False}]},
        "predictions": None}
    assert m.drift_values(rec) == {"features": {"tradesys_drift_detected": 1.0, "tradesys_drift_share": 1 / 3,
                                                "tradesys_drift_max_psi": 0.4}}


def test_every_metric_has_bounded_labels() -> None:
    """No order id, symbol or other unbounded key among the tag keys; run-labelled metrics carry both run tags."""
    allowed = {"run_id", "strategy", "reason", "what", "child", "kind", "route", "method", "status"}
    for spec in m.SPECS:
        assert set(spec.tags) <= allowed, spec.name
        assert spec.owner == "serve" or set(m.RUN_TAGS) <= set(spec.tags), spec.name
        assert spec.help and spec.name.startswith("tradesys_")
    assert len({s.name for s in m.SPECS}) == len(m.SPECS)


def test_dashboard_json_is_the_generated_one_and_names_only_exported_metrics() -> None:
    committed = (ROOT / "deploy/grafana/dashboards/tradesys.json").read_text()
    assert committed == dashboard_json(), "regenerate: python -m tradesys.ops.dashboard > deploy/grafana/..."
    assert unknown_metrics() == {}
    board = json.loads(committed)
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    assert len(board["panels"]) == len(PANELS) and all(metric_names(e) for e in exprs)
    # every trading metric is on the dashboard
    shown = set().union(*(metric_names(e) for e in exprs))
    for spec in m.SPECS:
        assert any(name.startswith(spec.exported) for name in shown), spec.name
    ds = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/tradesys.yml").read_text())
    uids = {d["uid"] for d in ds["datasources"]}
    assert {p["datasource"]["uid"] for p in board["panels"]} <= uids
    prov = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/tradesys.yml").read_text())
    assert (ROOT / prov["providers"][0]["options"]["path"] / "tradesys.json").is_file()


# --- end to end: a live run scraped by a real Prometheus ---------------------------------------------------------


def _get(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def _query(base: str, expr: str) -> dict[str, Any]:
    return _get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))


def _values(base: str, expr: str) -> dict[str, float]:
    """Instant query: one value per result, keyed by the labels that distinguish them (joined)."""
    out = {}
    for r in _query(base, expr)["data"]["result"]:
        lbl = r["metric"]
        out[",".join(f"{k}={lbl[k]}" for k in ("reason", "child", "what") if k in lbl)] = float(r["value"][1])
    return out


def _stop(proc: subprocess.Popen[Any], timeout: float = 60.0) -> None:
    if proc.poll() is None:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.fixture
def prometheus_bin() -> str:
    exe = shutil.which("prometheus")
    if exe is None:
        _unavailable("prometheus", "the `prometheus` binary is not installed (Debian package `prometheus`)")
    return str(exe)


@pytest.fixture
def scraped_run(prometheus_bin: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A finished live run whose actors are still up, its metrics port, and a Prometheus scraping it."""
    metrics_port, prom_port = free_port(), free_port()
    run_id, ledger_url, out = "prom-e2e", f"sqlite:///{tmp_path}/ledger.db", tmp_path / "summary.json"
    env = {**os.environ, "RAY_metrics_report_interval_ms": "500"}
    live = subprocess.Popen([sys.executable, "-m", "tests.prom_live", str(metrics_port), ledger_url, run_id, str(out)],
                            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=(tmp_path / "live.log").open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    cfg = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ROOT / "deploy/prometheus/alerts.yml")],
        "scrape_configs": [{"job_name": "ray", "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    prom = subprocess.Popen([prometheus_bin, f"--config.file={tmp_path}/prometheus.yml",
                             f"--storage.tsdb.path={tmp_path}/tsdb", f"--web.listen-address=127.0.0.1:{prom_port}",
                             "--log.level=warn"], stdout=(tmp_path / "prom.log").open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not out.exists():
            assert live.poll() is None, (tmp_path / "live.log").read_text()[-3000:]
            assert prom.poll() is None, (tmp_path / "prom.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the live run did not finish in 600 s"
            time.sleep(1.0)
        yield {"base": f"http://127.0.0.1:{prom_port}", "run_id": run_id, "ledger_url": ledger_url,
               "summary": json.loads(out.read_text())}
    finally:
        if live.stdin is not None:
            live.stdin.close()  # the driver kills the Supervisor and shuts its Ray down
        _stop(live)
        prom.terminate()
        _stop(prom, 30)


@pytest.mark.slow
def test_prometheus_scrapes_the_ledgers_numbers(scraped_run: dict[str, Any]) -> None:
    base, run = scraped_run["base"], scraped_run["run_id"]
    ledger = open_ledger(scraped_run["ledger_url"])
    orders, fills, account = ledger.orders(), ledger.fills(), ledger.account()
    rejects = Counter(o["reason"] for o in orders if o["status"] == "rejected")
    steps = len({int(r["ts_ns"]) for r in ledger.equity_curve()})
    assert len(orders) > 20 and len(fills) > 20 and rejects, "the run should trade and see risk rejects"
    sel = f'{{run_id="{run}", strategy="trend"}}'
    want = {
        f"ray_tradesys_orders{sel}": {"": float(len(orders))},
        f"ray_tradesys_fills{sel}": {"": float(len(fills))},
        f"ray_tradesys_rejects{sel}": {f"reason={k}": float(v) for k, v in rejects.items()},
        f"ray_tradesys_steps{sel}": {"": float(steps)},
        f"ray_tradesys_running{sel}": {"": 0.0},
        f"ray_tradesys_kill_switch{sel}": {"": 0.0},
    }
    got: dict[str, dict[str, float]] = {}
    deadline = time.monotonic() + 90  # a few scrapes after the last commit
    while True:
        got = {q: _values(base, q) for q in want}
        equity = _values(base, f"ray_tradesys_equity{sel}")
        if (got == want and equity.get("") == pytest.approx(float(account["equity"]), rel=1e-12)) \
                or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert got == want
    assert equity[""] == pytest.approx(float(account["equity"]), rel=1e-12)
    assert _values(base, f"ray_tradesys_pnl_total{sel}")[""] == pytest.approx(
        float(account["equity"]) - float(account["initial_cash"]), rel=1e-9)
    assert set(_values(base, f"ray_tradesys_restarts{sel}")) == {f"child={c}" for c in m.CHILDREN}
    var, es = _values(base, f"ray_tradesys_var{sel}")[""], _values(base, f"ray_tradesys_es{sel}")[""]
    assert 0 < var <= es
    # the decision-to-fill histogram: every fill here is immediate (a market order filled on its decision bar), so
    # exactly one observation per fill; its buckets are cumulative and end in +Inf = the count
    assert all(int(f["ts_ns"]) == int(next(o for o in orders if o["client_order_id"] == f["client_order_id"])["ts_ns"])
               for f in fills)
    count = _values(base, f"ray_tradesys_decision_to_fill_seconds_count{sel}")[""]
    assert count == len(fills)
    buckets = {r["metric"]["le"]: float(r["value"][1]) for r in _query(
        base, f"ray_tradesys_decision_to_fill_seconds_bucket{sel}")["data"]["result"]}
    assert buckets["+Inf"] == count and len(buckets) == len(m.LATENCY_BUCKETS_S) + 1
    ordered = [buckets[repr(float(b))] for b in m.LATENCY_BUCKETS_S] + [count]
    assert ordered == sorted(ordered)
    p50 = _query(base, f"histogram_quantile(0.5, ray_tradesys_decision_to_fill_seconds_bucket{sel})")
    assert 0 < float(p50["data"]["result"][0]["value"][1]) <= m.LATENCY_BUCKETS_S[-1]

    # the HTTP API's requests (tests/prom_live.py sent them to a real Serve replica): counts by route template and
    # status class equal what the client got, and the 5xx are counted by route and status
    sent = scraped_run["summary"]["http"]
    assert [r["status"] for r in sent] == [200] * 3 + [404] * 2 + [401] * 2 + [500] * 2 + [200]
    route = {"/v1/portfolio": "/v1/portfolio", "/v1/orders/no-such-order": "/v1/orders/{client_order_id}",
             "/v1/boom": "/v1/boom", "/health": "/health"}
    want_http = Counter((route[r["path"]] if r["status"] != 401 else "unmatched", f"{r['status'] // 100}xx")
                        for r in sent)
    want_err = Counter((route[r["path"]], str(r["status"])) for r in sent if r["status"] >= 500)

    def by_route(expr: str) -> dict[tuple[str, str], float]:
        res = _query(base, f"sum by (route, status) ({expr})")["data"]["result"]
        return {(r["metric"]["route"], r["metric"]["status"]): float(r["value"][1]) for r in res}

    deadline = time.monotonic() + 30
    while by_route("ray_tradesys_http_request_seconds_count") != want_http and time.monotonic() < deadline:
        time.sleep(1.0)
    assert by_route("ray_tradesys_http_request_seconds_count") == {k: float(v) for k, v in want_http.items()}
    assert by_route("ray_tradesys_http_errors_total") == {k: float(v) for k, v in want_err.items()}
    assert by_route('ray_tradesys_http_request_seconds_bucket{le="+Inf"}') == {
        k: float(v) for k, v in want_http.items()}

    # every dashboard query is valid PromQL against this server, and the equity panel shows this run
    for panel in PANELS:
        for expr, _ in panel.queries:
            res = _query(base, expr.replace("$run_id", ".*").replace("$strategy", ".*"))
            assert res["status"] == "success", (panel.title, expr, res)
    eq_panel = _query(base, PANELS[0].queries[0][0].replace("$run_id", run).replace("$strategy", "trend"))
    assert float(eq_panel["data"]["result"][0]["value"][1]) == pytest.approx(float(account["equity"]), rel=1e-12)

    # the alert rules load and evaluate on real series without error
    deadline = time.monotonic() + 30
    while True:
        groups = _get(f"{base}/api/v1/rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        if (rules and all(r["health"] == "ok" for r in rules)) or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert len(rules) == 7 and all(r["health"] == "ok" for r in rules), rules
    firing = {a["labels"]["alertname"] for a in _get(f"{base}/api/v1/alerts")["data"]["alerts"]}
    assert not firing & {"TradesysKillSwitchTripped", "TradesysLoopStalled", "TradesysReconciliationBreak",
                         "TradesysActorRestarts"}


def test_histograms_and_counters_are_running_totals_of_the_process() -> None:
    """Each observation lands in every bucket at or above it (cumulative, as Prometheus reads `le`), in the sum and
    in the count; a counter adds up. What the gauges re-publish every second (`tradesys.ops.metrics._observe`)."""
    tags = {"route": "/t/totals", "method": "GET", "status": "2xx"}
    for v in (0.0004, 0.003, 0.003, 0.2, 99.0):
        m._observe("tradesys_http_request_seconds", v, tags)
    (_key, st), = ((k, v) for k, v in m.cumulative_totals("tradesys_http_request_seconds").items()
                  if dict(k)["route"] == "/t/totals")
    want = [sum(v <= b for v in (0.0004, 0.003, 0.003, 0.2, 99.0)) for b in m.HTTP_BUCKETS_S]
    assert st[:-2] == want and st[-2] == pytest.approx(0.0004 + 0.006 + 0.2 + 99.0) and st[-1] == 5
    assert want[0] == 1 and want[-1] == 4  # 99 s is beyond the last bound: only in +Inf (= the count)
    m._observe("tradesys_http_errors", 1.0, {**tags, "route": "/t/totals", "status": "503"})
    m._observe("tradesys_http_errors", 1.0, {**tags, "route": "/t/totals", "status": "503"})
    assert [v[-1] for k, v in m.cumulative_totals("tradesys_http_errors").items()
            if dict(k)["route"] == "/t/totals"] == [2.0]


def test_request_metrics_label_by_route_template_and_count_what_the_client_saw() -> None:
    """Labels stay bounded (the route template, not the path; unknown paths and methods folded), and the status
    recorded is the one sent, an unhandled exception's 500 included."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from tradesys.serve.metrics_mw import RequestMetrics

    seen: list[tuple[str, str, int, float]] = []
    app = FastAPI()

    @app.get("/v1/orders/{client_order_id}")
    def order(client_order_id: str) -> dict[str, str]:
        return {"id": client_order_id}

    @app.get("/v1/boom")
    def boom() -> None:
        raise RuntimeError("boom")

    app.add_middleware(RequestMetrics, record=lambda *a: seen.append(a))
    client = TestClient(app, raise_server_exceptions=False)
    for oid in ("a-1", "b-2", "c-3"):
        assert client.get(f"/v1/orders/{oid}").status_code == 200
    assert client.get("/v1/boom").status_code == 500
    assert client.get("/nowhere/x").status_code == 404
    assert client.request("BREW", "/v1/orders/a").status_code == 405
    assert [s[:3] for s in seen] == [("/v1/orders/{client_order_id}", "GET", 200)] * 3 + [
        ("/v1/boom", "GET", 500), ("unmatched", "GET", 404), ("/v1/orders/{client_order_id}", "OTHER", 405)]
    assert all(0 <= s[3] < 30 for s in seen)
    assert m.status_class(503) == "5xx"
