"""The `tradesys` command line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from tradesys.config import ConfigError, TradesysConfig, load_config

app = typer.Typer(add_completion=False, no_args_is_help=True, help="tradesys: Ray-native quantitative trading.")
console = Console()


def _register_subcommands() -> None:
    from tradesys.commands.data import app as data_app
    from tradesys.commands.models import app as models_app
    from tradesys.commands.price import app as price_app
    from tradesys.commands.risk import app as risk_app
    from tradesys.commands.train import app as train_app

    app.add_typer(price_app, name="price")
    app.add_typer(risk_app, name="risk")
    app.add_typer(data_app, name="data")
    app.add_typer(models_app, name="models")
    app.add_typer(train_app, name="train")


_register_subcommands()

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="override: section.field=value")]


def _config(config: Path | None, overrides: list[str] | None) -> TradesysConfig:
    try:
        return load_config(config, overrides or [])
    except ConfigError as exc:
        console.print(f"[red]config error:[/red] {exc}")
        raise typer.Exit(2) from None


@app.command()
def demo(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Run the live loop on embedded defaults: local Ray, real S&P 500 stocks replayed, SQLite ledger."""
    from tradesys.live import run_live

    cfg = _config(config, set_)
    console.print(
        f"[bold]tradesys demo[/bold]: {cfg.data.source} {cfg.data.start} .. {cfg.data.end}, "
        f"strategy {cfg.strategy.name}, simulated broker, initial cash {cfg.initial_cash:,.0f}"
    )
    run_live(cfg, console=console)


@app.command()
def live(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the summary as JSON")] = None,
) -> None:
    """Run the live loop under a Supervisor actor (joins RAY_ADDRESS or ray.address if set)."""
    from tradesys.live import run_live

    summary = run_live(_config(config, set_), console=console)
    if json_out:
        json_out.write_text(json.dumps(summary, indent=2, default=str))


@app.command()
def backtest(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    ledger: Annotated[str, typer.Option(help="ledger URL")] = "sqlite:///:memory:",
) -> None:
    """Run the same strategy, risk and execution in-process over the replayed data (no actors)."""
    from rich.progress import Progress

    from tradesys.backtest.runner import run_backtest
    from tradesys.live import summary_table

    cfg = _config(config, set_)
    with Progress(console=console) as bar:
        task = bar.add_task("backtest", total=None)
        summary, _ = run_backtest(cfg, ledger, on_step=lambda i, n, _r: bar.update(task, completed=i, total=n))
    console.print(summary_table({**summary.as_dict(), "run_id": "backtest", "reason": "completed"}))


@app.command()
def serve(
    ledger: Annotated[str | None, typer.Option(help="ledger URL to expose read-only (omit: analytics only)")] = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    replicas: Annotated[int, typer.Option(min=1, help="Serve replicas of the API")] = 1,
) -> None:
    """Serve the HTTP API (analytics routes, plus ledger views with --ledger). Needs TRADESYS_API_KEY set."""
    import time

    from tradesys.serve import run_serve

    if not os.environ.get("TRADESYS_API_KEY"):
        console.print("[red]TRADESYS_API_KEY is not set[/red]: the API refuses to start without a key")
        raise typer.Exit(2)
    run_serve(ledger, host=host, port=port, replicas=replicas)
    console.print(f"Serving on http://{host}:{port} (OpenAPI at /openapi.json); Ctrl-C to stop")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


@app.command("config")
def show_config(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Print the effective configuration as JSON (after file and overrides, validated)."""
    console.print_json(_config(config, set_).model_dump_json())


if __name__ == "__main__":
    app()
