"""`tradesys status [RUN]` and `tradesys stop RUN`: watch and stop detached live runs from any shell.

Both join the cluster the run lives on (ray.address, `$RAY_ADDRESS`, else a local `ray start --head`) in the
`tradesys` namespace; the work is in `tradesys.detached`. Errors are one line: no cluster, unknown run.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

AddressOpt = Annotated[str | None, typer.Option("--address", help="Ray cluster (default: $RAY_ADDRESS, else a "
                                                "local `ray start --head`)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON on stdout")]


def _fail(kind: str, message: str) -> None:
    from tradesys.commands.output import error_line

    typer.echo(error_line(kind, message), err=True)
    raise typer.Exit(2)


def _connect(address: str | None) -> None:
    from tradesys.config import ConfigError
    from tradesys.detached import cluster_address, connect

    try:
        connect(address or cluster_address(), "--address" if address else "RAY_ADDRESS")
    except ConfigError as exc:
        _fail("config", str(exc))


def status_table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="detached tradesys runs")
    for col in ("run", "state", "step", "equity", "restarts", "ledger"):
        t.add_column(col, justify="right" if col in ("step", "equity", "restarts") else "left")
    for r in rows:
        total = r.get("total") or 0
        step = f"{r.get('step', 0):,}" + (f" / {total:,}" if total else "")
        equity = r.get("equity")
        t.add_row(r["run_id"], str(r.get("state", "?")), step,
                  f"{equity:,.2f}" if isinstance(equity, int | float) else "-", str(r.get("restarts", "-")),
                  str(r.get("ledger_url", "-")))
    return t


def status(
    run: Annotated[str | None, typer.Argument(help="run id (omit: every detached run on the cluster)")] = None,
    address: AddressOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Progress of a detached live run (or all of them): state, step, equity, child restarts, ledger."""
    from tradesys.commands.output import dumps
    from tradesys.detached import UnknownRunError
    from tradesys.detached import status as run_status

    _connect(address)
    try:
        rows = run_status(run)
    except UnknownRunError as exc:
        _fail("run", str(exc))
    if json_:
        typer.echo(dumps(rows))
    elif not rows:
        typer.echo("no detached tradesys runs on this cluster")
    else:
        Console().print(status_table(rows))


def stop(
    run: Annotated[str, typer.Argument(help="run id (as `tradesys live --detach` printed it)")],
    address: AddressOpt = None,
    json_: JsonOpt = False,
    timeout_s: Annotated[float, typer.Option("--timeout", min=1.0, help="seconds to wait for the loop")] = 300.0,
) -> None:
    """Stop a detached live run: finish the step in flight, write the shutdown audit, release its actors, print the
    summary (a run that already ended is released the same way)."""
    from tradesys.commands.output import dumps
    from tradesys.detached import UnknownRunError
    from tradesys.detached import stop as run_stop
    from tradesys.live import RunError, summary_table

    _connect(address)
    try:
        summary = run_stop(run, timeout_s=timeout_s)
    except UnknownRunError as exc:
        _fail("run", str(exc))
    except RunError as exc:
        _fail("run", str(exc))
    if json_:
        typer.echo(dumps(summary))
    else:
        console = Console()
        console.print(summary_table(summary))
        console.print(f"Ledger written to {summary['ledger_url']}")
