"""A live run in its own Ray runtime with a Prometheus metrics export port, for tests/test_ops_metrics.py.

Run as a subprocess (`python -m tests.prom_live PORT LEDGER_URL RUN_ID OUT_JSON`) so that its Ray runtime, with
`_metrics_export_port` and a short metrics report interval, is not the test session's shared runtime. It drives
the Supervisor as `tradesys live` does, then serves the HTTP API on Ray Serve in the same runtime and sends it a
known set of requests (`HTTP_REQUESTS`: 2xx, 4xx, 5xx on several routes), writes the run summary and the answers'
status codes to OUT_JSON, and keeps the actors and the replica (and so their metrics) alive until stdin closes, so
Prometheus can scrape the final values.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

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


KEY = "prom-live-key-7c1d"
# (method, path, with the key): each sent once, in order; /v1/boom is this test's route that always raises (a 500)
HTTP_REQUESTS = [
    *[("GET", "/v1/portfolio", True)] * 3,
    *[("GET", "/v1/orders/no-such-order", True)] * 2,  # 404
    *[("GET", "/v1/portfolio", False)] * 2,  # 401, refused before routing: route "unmatched"
    *[("GET", "/v1/boom", True)] * 2,  # 500
    ("GET", "/health", False),
]


def serve_and_call(ledger_url: str) -> list[dict[str, Any]]:
    """The API (`create_api`, as `tradesys serve` builds it, plus a route that raises) on a real Serve instance;
    each of HTTP_REQUESTS sent once; their statuses."""
    from fastapi import Depends
    from ray import serve

    from tests.conftest import free_port
    from tradesys.serve import create_api
    from tradesys.serve.access import AccessSettings, require

    @serve.deployment(name="MetricsAPI", num_replicas=1, ray_actor_options={"num_cpus": 0})
    @serve.ingress()
    class MetricsAPI:
        def __init__(self, url: str) -> None:
            self.url = url

        def __serve_build_asgi_app__(self) -> Any:
            app = create_api(self.url, api_key=KEY, access=AccessSettings())

            @app.get("/v1/boom", dependencies=[Depends(require("read", app.state.access))])
            def boom() -> None:
                raise RuntimeError("boom")

            return app

    http_port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": http_port})
    serve.run(MetricsAPI.bind(ledger_url), name="metrics_api", route_prefix="/")
    sent = []
    for method, path, keyed in HTTP_REQUESTS:
        req = urllib.request.Request(f"http://127.0.0.1:{http_port}{path}", method=method,
                                     headers={"X-API-Key": KEY} if keyed else {})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                status = r.status
        except urllib.error.HTTPError as e:
            status = e.code
        sent.append({"method": method, "path": path, "status": status})
    return sent


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
    sent = serve_and_call(ledger_url)
    with open(out + ".tmp", "w") as f:
        json.dump({k: summary[k] for k in ("orders", "fills", "steps", "final_equity", "rejected") if k in summary}
                  | {"risk": summary.get("risk", {}).get("rejects_by_reason", {}), "http": sent}, f, default=str)
    os.replace(out + ".tmp", out)
    sys.stdin.read()  # until the test closes our stdin
    ray.kill(sup)
    ray.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4])
