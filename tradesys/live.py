"""Driver side of the live loop: connect to Ray, start the Supervisor, show progress, stop cleanly.

Used by `tradesys demo`, `tradesys live` and `jobs/live.py` (a Ray job). Ctrl-C or SIGTERM (which
`ray job stop` sends) asks the Supervisor to finish the step in flight and stop; the ledger stays consistent.
"""

from __future__ import annotations

import os
import signal
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tradesys.config import TradesysConfig
from tradesys.ledger.sqlite import absolute_sqlite_url


def new_run_id() -> str:
    return datetime.now(UTC).strftime("run-%Y%m%d-%H%M%S-") + os.urandom(2).hex()


def resolve_ledger_url(cfg: TradesysConfig, run_id: str) -> str:
    """An absolute ledger URL: actors may run in another working directory (or on another node)."""
    url = cfg.ledger.url
    if url is None:
        path = Path(cfg.ledger.runs_dir).resolve() / run_id / "ledger.db"
        return f"sqlite:///{path}"
    return absolute_sqlite_url(url)


def connect_ray(cfg: TradesysConfig) -> str | None:
    """Join the cluster named by config or RAY_ADDRESS, else start a local one. Return the dashboard URL."""
    import ray

    if ray.is_initialized():
        return _dashboard_url()
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    kwargs: dict[str, Any] = {"log_to_driver": False}
    if address is None:
        kwargs.update(include_dashboard=cfg.ray.include_dashboard, num_cpus=cfg.ray.num_cpus)
    info = ray.init(address=address, **kwargs)
    url = getattr(info, "dashboard_url", None)
    return f"http://{url}" if url else None


def _dashboard_url() -> str | None:
    try:
        from ray._private.worker import global_worker

        url = global_worker.node.address_info.get("webui_url")
        return f"http://{url}" if url else None
    except Exception:  # the dashboard is optional; never fail a run over its URL
        return None


def run_live(
    cfg: TradesysConfig,
    *,
    run_id: str | None = None,
    console: Console | None = None,
    show_progress: bool = True,
    crash_execution_at_submit: int | None = None,
    crash_marker: str = "",
) -> dict[str, Any]:
    """Run the live loop under a Supervisor actor; return its summary."""
    import ray

    from tradesys.actors.supervisor import Supervisor

    console = console or Console()
    run_id = run_id or new_run_id()
    if cfg.data.bus == "kafka":
        cfg.data.bootstrap()  # fail here, naming the setting, before any actor starts
    if cfg.drift.enabled and cfg.drift.reference != "data" and not Path(cfg.drift.reference).is_file():
        from tradesys.config import ConfigError

        raise ConfigError(f"drift.reference: {cfg.drift.reference!r} is not a file")
    dashboard = connect_ray(cfg)
    ledger_url = resolve_ledger_url(cfg, run_id)
    if dashboard:
        console.print(f"[bold]Ray dashboard:[/bold] {dashboard}")
    console.print(f"[bold]Ledger:[/bold] {redact(ledger_url)}")
    sup = Supervisor.options(name=f"{run_id}:supervisor").remote(
        cfg, ledger_url, run_id, crash_execution_at_submit, crash_marker
    )
    done = sup.run.remote()
    stop_sent = False

    def _stop(signum: int, _frame: Any) -> None:
        nonlocal stop_sent
        if not stop_sent:
            stop_sent = True
            sup.stop.remote(f"signal {signal.Signals(signum).name}")

    # Signal handlers can only be installed from the main thread (a driver embedded in a thread relies on stop()).
    in_main = threading.current_thread() is threading.main_thread()
    old = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)} if in_main else {}
    try:
        with Progress(
            TextColumn("[bold blue]live loop"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("equity {task.fields[equity]:>14,.2f}  restarts {task.fields[restarts]}"),
            TimeElapsedColumn(),
            console=console,
            disable=not show_progress,
        ) as bar:
            task = bar.add_task("loop", total=None, equity=cfg.initial_cash, restarts=0)
            while True:
                ready, _ = ray.wait([done], timeout=0.25)
                p = ray.get(sup.progress.remote())
                bar.update(task, completed=p["step"], total=p["total"] or None, equity=p["equity"],
                           restarts=p["restarts"])
                if ready:
                    break
        summary = ray.get(done)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    summary["dashboard_url"] = dashboard
    if show_progress:
        console.print(summary_table(summary))
        console.print(f"Ledger written to {redact(ledger_url)}")
    ray.kill(sup)
    return summary


def redact(url: str) -> str:
    """Hide a password in a DSN before printing it."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        if ":" in creds:
            return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url


def summary_table(s: dict[str, Any]) -> Table:
    t = Table(title=f"tradesys run {s.get('run_id', '')} ({s.get('reason', '')})", show_header=False)
    t.add_column("metric", style="bold")
    t.add_column("value", justify="right")
    rows = [
        ("equity", f"{s['equity']:,.2f}"),
        ("return", f"{s['total_return']:+.2%}"),
        ("Sharpe (annualised)", f"{s['sharpe']:.2f}"),
        ("max drawdown", f"{s['max_drawdown']:.2%}"),
        ("steps", f"{s['steps']:,}"),
        ("orders", f"{s['orders']:,}"),
        ("fills", f"{s['fills']:,}"),
        ("rejected orders", f"{s['rejected']:,}"),
        ("decision-to-fill p50", f"{s['latency_p50_ms']:.2f} ms"),
        ("decision-to-fill p99", f"{s['latency_p99_ms']:.2f} ms"),
        ("child restarts", f"{s.get('restarts', 0)}"),
    ]
    risk = s.get("risk") or {}
    metrics = risk.get("metrics") or {}
    if metrics.get("var") == metrics.get("var"):  # not NaN: the VaR window had filled
        rows.append(("VaR (last step, % of equity)", f"{metrics['var']:,.2f} ({metrics['var_pct']:.2%})"))
    if metrics:
        rows.append(("gross / net leverage", f"{metrics['gross_leverage']:.2f} / {metrics['net_leverage']:.2f}"))
    if risk.get("rejects_by_reason"):
        rows.append(("rejects by reason", ", ".join(f"{k} {v}" for k, v in sorted(risk["rejects_by_reason"].items()))))
    for k, v in rows:
        t.add_row(k, v)
    return t
