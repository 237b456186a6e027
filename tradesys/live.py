"""Driver side of the live loop: connect to Ray, start the Supervisor, show progress, stop cleanly.

Used by `tradesys demo`, `tradesys live` and `jobs/live.py` (a Ray job). Ctrl-C or SIGTERM (which
`ray job stop` sends) asks the Supervisor to finish the step in flight and stop; the ledger stays consistent.

Settings are checked before Ray starts. With no cluster named, the driver starts a loopback-only local one
(`tradesys.localray`) that goes away with it. Whatever fails inside the actors reaches the user as one line:
a ConfigError/DataError naming the setting, or a RunError that says how to resume on the same ledger.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tradesys import localray, logs
from tradesys.config import ConfigError, DataError, TradesysConfig, redact_url, save_run_config
from tradesys.ledger.sqlite import absolute_sqlite_url
from tradesys.localray import LocalCluster
from tradesys.placement import check_head_resource, head_options, local_head_resources


class RunError(RuntimeError):
    """The live loop could not finish. The message is one line for the user (the CLI prints it, exit code 2)."""


def new_run_id() -> str:
    return datetime.now(UTC).strftime("run-%Y%m%d-%H%M%S-") + os.urandom(2).hex()


def durable_runs_dir() -> Path:
    """Where a Ray job's default ledger goes: `$TRADESYS_RUNS_DIR`, else `~/tradesys/runs`.

    A job runs in Ray's temporary copy of its working directory, which is deleted when the job ends; a ledger
    there would take the book of record with it.
    """
    return Path(os.environ.get("TRADESYS_RUNS_DIR") or Path.home() / "tradesys" / "runs").expanduser()


def resolve_ledger_url(cfg: TradesysConfig, run_id: str) -> str:
    """An absolute ledger URL: actors may run in another working directory (or on another node)."""
    url = cfg.ledger.url
    if url is None:
        path = Path(cfg.ledger.runs_dir).expanduser().resolve() / run_id / "ledger.db"
        return f"sqlite:///{path}"
    return absolute_sqlite_url(url)


def check_settings(cfg: TradesysConfig) -> None:
    """Every setting that can be checked without Ray, checked before anything starts (ConfigError naming it)."""
    from tradesys.data import check_data

    check_data(cfg.data)
    if cfg.data.bus == "kafka":
        cfg.data.bootstrap()
    if cfg.drift.enabled and cfg.drift.reference != "data" and not Path(cfg.drift.reference).is_file():
        raise ConfigError(f"drift.reference: {cfg.drift.reference!r} is not a file")


def connect_ray(cfg: TradesysConfig, console: Console | None = None) -> tuple[str | None, LocalCluster | None]:
    """Join the cluster named by config or RAY_ADDRESS, else start a loopback-only local one.

    Return the dashboard URL and the local cluster this call started (None when joining), which the caller
    stops when the run ends.
    """
    import ray

    if ray.is_initialized():
        return _dashboard_url(), None
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    cluster: LocalCluster | None = None
    console = console or Console(stderr=True)
    if address is None:
        say = console.print
        try:
            cluster = localray.start_for_driver(cfg.ray.num_cpus, cfg.ray.include_dashboard, say,
                                                local_head_resources(cfg.ray.head_resource))
        except RuntimeError as exc:
            raise RunError(f"the local Ray cluster did not start: {' '.join(str(exc).split())}") from None
        address = cluster.address
    try:
        logs.ray_messages_to_stderr()  # stdout is the command's output (--json)
        info = ray.init(address=address, log_to_driver=False)
    except BaseException as exc:
        if cluster is not None:
            cluster.stop(5.0)
        if isinstance(exc, Exception) and cluster is None:
            lines = str(exc).strip().splitlines() or [type(exc).__name__]
            field = "ray.address" if cfg.ray.address else "RAY_ADDRESS"
            raise ConfigError(f"{field}: cannot join the Ray cluster at {redact_url(address)}: {lines[-1]}") from None
        raise
    url = getattr(info, "dashboard_url", None)
    return (f"http://{url}" if url else None), cluster


def _dashboard_url() -> str | None:
    try:
        from ray._private.worker import global_worker

        url = global_worker.node.address_info.get("webui_url")
        return f"http://{url}" if url else None
    except Exception:  # the dashboard is optional; never fail a run over its URL
        return None


def resume_command(ledger_url: str, argv: list[str] | None = None) -> str:
    """The command that resumes this run: the same one, pinned to the same ledger (password masked)."""
    argv = list(sys.argv if argv is None else argv)
    prog = Path(argv[0]).name if argv else "tradesys"
    head = ["python", argv[0]] if prog.endswith(".py") else [prog]
    rest: list[str] = []
    args = argv[1:]
    i = 0
    while i < len(args):  # drop an earlier ledger.url override: the one appended below wins
        a = args[i]
        if a in ("-s", "--set") and i + 1 < len(args) and args[i + 1].startswith("ledger.url="):
            i += 2
            continue
        if a.startswith(("--set=ledger.url=", "-sledger.url=")):
            i += 1
            continue
        rest.append(a)
        i += 1
    return shlex.join([*head, *rest, "-s", f'ledger.url="{redact_url(ledger_url)}"'])


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_EXC_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception)): (.+)$")
_ACTOR = re.compile(r"ray::(?:[^\s:]+:)*(\w+)\.(\w+)\(\)")


def root_cause(exc: BaseException) -> tuple[str, str, str | None]:
    """(exception class, one-line message, actor class) of the error at the bottom of a Ray error chain.

    A RayTaskError carries its cause; an ActorDiedError from a failed constructor carries only text, nested
    once per actor level (the Supervisor's child failed inside the Supervisor's constructor), so the last
    `Type: message` line of that text is the root.
    """
    from ray.exceptions import RayTaskError

    actor: str | None = None
    seen: set[int] = set()
    while isinstance(exc, RayTaskError) and id(exc) not in seen:
        seen.add(id(exc))
        found = _ACTOR.findall(_ANSI.sub("", str(exc)))
        actor = found[-1][0] if found else actor
        cause = getattr(exc, "cause", None)
        if not isinstance(cause, BaseException):
            break
        exc = cause
    text = _ANSI.sub("", str(exc))
    found = _ACTOR.findall(text)
    actor = found[-1][0] if found else actor
    matches = [m for line in text.splitlines() if (m := _EXC_LINE.match(line.strip()))]
    if matches and "creation task" in text:
        name, msg = matches[-1].group(1), matches[-1].group(2)
        return name.rsplit(".", 1)[-1], " ".join(msg.split()), actor
    first = text.strip().splitlines()[0] if text.strip() else ""
    return type(exc).__name__, " ".join(first.split()), actor


_FIELD = re.compile(r"^[a-z_]+\.[a-z_]+: ")


def user_error(exc: BaseException, cfg: TradesysConfig, ledger_url: str, resume: str) -> ConfigError | RunError:
    """One line for the user from an error raised inside the actors: the field and reason, or how to resume."""
    from ray.exceptions import ActorDiedError, RayActorError

    name, msg, actor = root_cause(exc)
    if _FIELD.match(msg):  # a ConfigError/DataError raised inside an actor keeps its field-naming message
        return DataError(msg)
    if actor == "MarketDataActor" or name in ("DataError",):
        field = "data.symbols" if "symbol" in msg else "data.source"
        return DataError(f"{field}: source {cfg.data.source} failed: {msg}")
    if isinstance(exc, RayActorError) and not (isinstance(exc, ActorDiedError) and exc.actor_init_failed):
        what = "the Supervisor actor died" if actor in (None, "Supervisor") else f"the {actor} actor died"
        return RunError(
            f"{what} ({name}); the ledger {redact_url(ledger_url)} holds every booked step: resume with: {resume}"
        )
    where = f" in {actor}" if actor else ""
    return RunError(f"the live loop failed{where}: {name}: {redact_url(msg)}; resume with: {resume}")


def run_live(
    cfg: TradesysConfig,
    *,
    run_id: str | None = None,
    console: Console | None = None,
    show_progress: bool = True,
    crash_execution_at_submit: int | None = None,
    crash_marker: str = "",
) -> dict[str, Any]:
    """Run the live loop under a Supervisor actor; return its summary (its `ledger_url` password-masked).

    Raises ConfigError (a setting, named first) or RunError (how to resume), each one line, never a Ray traceback.
    """
    console = console or Console()
    run_id = run_id or new_run_id()
    check_settings(cfg)  # before Ray starts or any file is created
    dashboard, cluster = connect_ray(cfg, console)
    try:
        return _run(cfg, run_id, console, show_progress, dashboard, crash_execution_at_submit, crash_marker)
    finally:
        if cluster is not None:
            import ray

            ray.shutdown()
            cluster.stop(5.0)


def _run(
    cfg: TradesysConfig, run_id: str, console: Console, show_progress: bool, dashboard: str | None,
    crash_execution_at_submit: int | None, crash_marker: str,
) -> dict[str, Any]:
    import ray
    from ray.exceptions import RayError

    from tradesys.actors.supervisor import Supervisor

    ledger_url = resolve_ledger_url(cfg, run_id)
    resume = resume_command(ledger_url)
    if cfg.ledger.url is None:  # the run's own folder: its configuration beside the ledger, for `tradesys report`
        save_run_config(cfg, Path(ledger_url.removeprefix("sqlite:///")).parent)
    if dashboard:
        console.print(f"[bold]Ray dashboard:[/bold] {dashboard}")
    console.print(f"[bold]Ledger:[/bold] {redact_url(ledger_url)}")
    console.print(f"loop: {loop_mode_label(cfg)}")
    check_head_resource(cfg.ray.head_resource, ray.cluster_resources())  # else the Supervisor would wait forever
    sup = Supervisor.options(name=f"{run_id}:supervisor", **head_options(cfg.ray.head_resource)).remote(
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
                if ready:
                    break
                p = ray.get(sup.progress.remote())
                bar.update(task, completed=p["step"], total=p["total"] or None, equity=p["equity"],
                           restarts=p["restarts"])
            summary = ray.get(done)
            bar.update(task, completed=summary.get("steps", 0))
    except RayError as exc:
        ray.kill(sup)
        raise user_error(exc, cfg, ledger_url, resume) from None
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    summary["ledger_url"] = redact_url(str(summary.get("ledger_url", ledger_url)))
    summary["dashboard_url"] = dashboard
    if show_progress:
        console.print(summary_table(summary))
        console.print(f"Ledger written to {redact_url(ledger_url)}")
    ray.kill(sup)
    return summary


def loop_mode_label(cfg: TradesysConfig) -> str:
    """How the Supervisor drives the step (`ray.compiled_graph`), as `tradesys demo`/`live` print it."""
    return "compiled graph" if cfg.ray.compiled_graph else "actor calls"


def redact(url: str) -> str:
    """Alias of `tradesys.config.redact_url`, kept for callers of the old name."""
    return redact_url(url)


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
        ("loop", str(s.get("loop_mode", "")).replace("_", " ")),
    ]
    risk = s.get("risk") or {}
    metrics = risk.get("metrics") or {}
    var, var_pct = metrics.get("var"), metrics.get("var_pct")
    if _number(var) and _number(var_pct):  # NaN or absent until the VaR window has filled
        rows.append(("VaR (last step, % of equity)", f"{var:,.2f} ({var_pct:.2%})"))
    if _number(metrics.get("gross_leverage")) and _number(metrics.get("net_leverage")):
        rows.append(("gross / net leverage", f"{metrics['gross_leverage']:.2f} / {metrics['net_leverage']:.2f}"))
    if risk.get("rejects_by_reason"):
        rows.append(("rejects by reason", ", ".join(f"{k} {v}" for k, v in sorted(risk["rejects_by_reason"].items()))))
    for k, v in rows:
        t.add_row(k, v)
    return t


def _number(x: Any) -> bool:
    """A finite number (not None, not NaN, not a bool) that the summary table can format."""
    return isinstance(x, int | float) and not isinstance(x, bool) and x == x and abs(x) != float("inf")
