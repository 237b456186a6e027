"""A live run in its own Ray runtime with a Prometheus metrics export port, for tests/test_ops_metrics.py.

Run as a subprocess (`python -m tests.prom_live PORT LEDGER_URL RUN_ID OUT_JSON`) so that its Ray runtime, with
`_metrics_export_port` and a short metrics report interval, is not the test session's shared runtime. It drives
the Supervisor as `tradesys live` does, writes the run summary to OUT_JSON, and keeps the actors (and so their
metrics) alive until stdin closes, so Prometheus can scrape the final values.
"""

from __future__ import annotations

import json
import os
import sys

# the metrics agent pushes application metrics to the export port at this interval (default 10 s)
os.environ.setdefault("RAY_metrics_report_interval_ms", "500")
# a loaded CI machine can take longer than the default 60 s to register the node
os.environ.setdefault("RAY_raylet_start_wait_time_s", "300")

# 20 stocks x 61 trading days; a short trend so that it trades from the first weeks
SETTINGS = {
    "data.source": "sp500_stocks", "data.start": "2019-01-01", "data.end": "2019-03-31",
    "strategy.fast": 5, "strategy.slow": 15, "strategy.vol_lookback": 10,
    "risk.var_min_obs": 10, "risk.var_limit_pct": 0.01,  # some orders rejected: rejects by reason are checked
}


def main(port: int, ledger_url: str, run_id: str, out: str) -> None:
    import ray

    from tradesys.actors.supervisor import Supervisor
    from tradesys.config import load_config
    from tradesys.placement import head_options

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, resources={"head": 1},
             _metrics_export_port=port)
    cfg = load_config(overrides={**SETTINGS, "ledger.url": ledger_url})
    # the Supervisor as `tradesys live` drives it, kept alive after the run: its children's gauges are exported
    # only while they live (Ray ages a series out about 2 s after its process stops reporting it)
    sup = Supervisor.options(name=f"{run_id}:supervisor", **head_options(cfg.ray.head_resource)).remote(
        cfg, ledger_url, run_id)
    summary = ray.get(sup.run.remote())
    with open(out + ".tmp", "w") as f:
        json.dump({k: summary[k] for k in ("orders", "fills", "steps", "final_equity", "rejected") if k in summary}
                  | {"risk": summary.get("risk", {}).get("rejects_by_reason", {})}, f, default=str)
    os.replace(out + ".tmp", out)
    sys.stdin.read()  # until the test closes our stdin
    ray.kill(sup)
    ray.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4])
