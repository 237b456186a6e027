"""Render the tradesys dashboard's queries to a PNG (docs/ops_dashboard.png) without Grafana.

Grafana is not packaged for this machine, so this runs what Grafana would: the same live run as
tests/test_ops_metrics.py (`python -m tests.prom_live`, 20 stocks x 61 days, in its own Ray runtime with a metrics
export port), a real Prometheus scraping it every second, then every panel's queries of
deploy/grafana/dashboards/tradesys.json (from `tradesys.ops.dashboard.PANELS`) as range queries over the run,
drawn with matplotlib in the dashboard's grid order.

    .venv/bin/python deploy/grafana/render_dashboard.py [docs/ops_dashboard.png]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from tests.conftest import free_port  # noqa: E402
from tradesys.ops.dashboard import PANELS  # noqa: E402


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def main(out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tmp = Path(tempfile.mkdtemp(prefix="tradesys-dash-"))
    mport, pport, run_id = free_port(), free_port(), "dashboard-demo"
    cfg = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
           "scrape_configs": [{"job_name": "ray", "static_configs": [{"targets": [f"127.0.0.1:{mport}"]}]}]}
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    prom = subprocess.Popen([shutil.which("prometheus") or "prometheus", f"--config.file={tmp}/prometheus.yml",
                             f"--storage.tsdb.path={tmp}/tsdb", f"--web.listen-address=127.0.0.1:{pport}",
                             "--log.level=warn"], start_new_session=True)
    summary = tmp / "summary.json"
    t0 = time.time()
    live = subprocess.Popen([sys.executable, "-m", "tests.prom_live", str(mport), f"sqlite:///{tmp}/ledger.db", run_id,
                             str(summary)], cwd=ROOT, stdin=subprocess.PIPE, start_new_session=True,
                            env={**os.environ, "RAY_metrics_report_interval_ms": "500"})
    try:
        while not summary.exists():
            if live.poll() is not None:
                raise SystemExit("the live run failed")
            time.sleep(1)
        time.sleep(8)  # a few scrapes of the final values
        t1 = time.time()
        base = f"http://127.0.0.1:{pport}"
        cols = 3
        rows = -(-len(PANELS) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 2.6 * rows), squeeze=False)
        for ax, panel in zip(axes.flat, PANELS, strict=False):
            for expr, legend in panel.queries:
                q = expr.replace("$run_id", run_id).replace("$strategy", ".*")
                res = _get(f"{base}/api/v1/query_range?" + urllib.parse.urlencode(
                    {"query": q, "start": t0, "end": t1, "step": 1}))["data"]["result"]
                for series in res:
                    xs = [float(t) - t0 for t, _ in series["values"]]
                    ys = [float(v) for _, v in series["values"]]
                    label = legend
                    for k, v in series["metric"].items():
                        label = label.replace("{{" + k + "}}", v)
                    ax.plot(xs, ys, label=label.replace("{{run_id}}", "").strip(), lw=1.2)
            ax.set_title(f"{panel.title} [{panel.unit}]", fontsize=9)
            ax.tick_params(labelsize=7)
            if ax.lines:
                ax.legend(fontsize=6, loc="best")
            else:
                ax.text(0.5, 0.5, "no data in this run", ha="center", va="center", transform=ax.transAxes,
                        fontsize=8, color="grey")
        for ax in list(axes.flat)[len(PANELS):]:
            ax.axis("off")
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        fig.suptitle(f"tradesys dashboard queries on Prometheus, run {run_id} (x: seconds since start; {stamp})",
                     fontsize=11)
        fig.tight_layout()
        fig.savefig(out, dpi=80)
        print(f"wrote {out}")
    finally:
        if live.stdin is not None:
            live.stdin.close()
        live.wait(timeout=120)
        prom.terminate()
        prom.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "ops_dashboard.png")
