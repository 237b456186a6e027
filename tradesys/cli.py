"""The `tradesys` command line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from tradesys.config import ConfigError, TradesysConfig, load_config


def _flags_take_no_value() -> None:
    """typer 0.29's help shows every flag as `--json <bool>`, as if it took a value; a flag takes none.

    Every command's help (price, risk, data, models, train too) goes through `TyperOption.display_type_rich`, so
    one patch here fixes them all; drop it when typer stops doing this.
    """
    from typer.core import TyperOption

    original = TyperOption.display_type_rich
    if getattr(original, "_tradesys_patched", False):
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else original(self, ctx)

    display_type_rich._tradesys_patched = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_take_no_value()
app = typer.Typer(add_completion=False, no_args_is_help=True, help="tradesys: Ray-native quantitative trading.")
console = Console()


def _register_subcommands() -> None:
    from tradesys.commands.backtest import app as backtest_app
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
    app.add_typer(backtest_app, name="backtest")
    from tradesys.commands.report import report

    app.command("report")(report)
    from tradesys.commands.paper import paper_server

    app.command("paper-server")(paper_server)
    from tradesys.commands.tca import tca

    app.command("tca")(tca)
    app.add_typer(__import__("tradesys.commands.rl", fromlist=["app"]).app, name="rl")  # tradesys rl train/tune
    app.add_typer(__import__("tradesys.commands.keys", fromlist=["app"]).app, name="keys")  # API keys
    from tradesys.commands.runs import status, stop

    app.command("status")(status)  # detached live runs (tradesys live --detach)
    app.command("stop")(stop)
    from tradesys.commands.backup import backup, restore

    app.command("backup")(backup)  # backups of a run's ledger, MLflow, feature metadata, config
    app.command("restore")(restore)


_register_subcommands()

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="override: section.field=value")]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="print the summary as JSON on stdout (NaN -> null); progress goes to stderr")
]
OutOpt = Annotated[Path | None, typer.Option("--out", help="also write the summary as JSON to this file")]


def _fail(kind: str, message: str) -> NoReturn:
    """One line on stderr (no wrapping, no traceback), exit code 2: the user-facing error contract."""
    from tradesys.commands.output import error_line

    typer.echo(error_line(kind, message), err=True)
    raise typer.Exit(2)


def _config(config: Path | None, overrides: list[str] | None, *, check_data: bool = True) -> TradesysConfig:
    """Load and validate the configuration, data-dependent settings included, before anything starts."""
    from tradesys.data import check_data as _check_data

    try:
        cfg = load_config(config, overrides or [])
        if check_data:
            _check_data(cfg.data)
    except ConfigError as exc:
        _fail("config", str(exc))
    return cfg


def _console(json_stdout: bool) -> Console:
    """Progress and tables go to stderr when stdout carries JSON, so `... --json | jq` works."""
    return Console(stderr=True) if json_stdout else console


def _emit(summary: dict[str, object], json_stdout: bool, out: Path | None) -> None:
    from tradesys.commands.output import dumps, write_json

    if out is not None:
        write_json(out, summary)
    if json_stdout:
        typer.echo(dumps(summary))


@app.command()
def demo(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Run the live loop on embedded defaults: local Ray, real S&P 500 stocks replayed, SQLite ledger."""
    from tradesys.live import RunError, run_live

    cfg = _config(config, set_)
    console.print(
        f"[bold]tradesys demo[/bold]: {cfg.data.source} {cfg.data.start} .. {cfg.data.end}, "
        f"strategy {cfg.strategy.name}, simulated broker, initial cash {cfg.initial_cash:,.0f}"
    )
    try:
        run_live(cfg, console=console)
    except ConfigError as exc:
        _fail("config", str(exc))
    except RunError as exc:
        _fail("run", str(exc))


@app.command()
def live(
    config: ConfigOpt = None, set_: SetOpt = None, json_: JsonOpt = False, out: OutOpt = None,
    detach: Annotated[bool, typer.Option("--detach", help="start a detached Supervisor on a running cluster and "
                                         "return; watch with `tradesys status`, stop with `tradesys stop`")] = False,
) -> None:
    """Run the live loop under a Supervisor actor (joins RAY_ADDRESS or ray.address if set)."""
    from tradesys.live import RunError, run_live

    cfg = _config(config, set_)
    if detach:
        _live_detached(cfg, json_, out)
        return
    try:
        summary = run_live(cfg, console=_console(json_))
    except ConfigError as exc:
        _fail("config", str(exc))
    except RunError as exc:
        _fail("run", str(exc))
    _emit(summary, json_, out)


def _live_detached(cfg: TradesysConfig, json_: bool, out: Path | None) -> None:
    from tradesys.detached import start_detached
    from tradesys.live import RunError

    try:
        info = start_detached(cfg)
    except ConfigError as exc:
        _fail("config", str(exc))
    except RunError as exc:
        _fail("run", str(exc))
    _emit(info, json_, out)
    if not json_:
        rid = info["run_id"]
        console.print(f"Started detached run {rid} on the Ray cluster at {info['address']}", highlight=False)
        console.print(f"Ledger: {info['ledger_url']}", highlight=False)
        console.print(f"Watch it: tradesys status {rid}    Stop it: tradesys stop {rid}", highlight=False)


@app.command()
def serve(
    ledger: Annotated[str | None, typer.Option(help="ledger URL to expose read-only (omit: analytics only)")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    host: Annotated[str | None, typer.Option(help="bind address (default: serve.host)")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="port (default: serve.port)")] = None,
    replicas: Annotated[int | None, typer.Option(min=1, help="Serve replicas (default: serve.replicas)")] = None,
    rl_policy: Annotated[Path | None, typer.Option("--rl-policy", help="a policy exported by `tradesys rl export`: "
                         "served at POST /v1/rl/act")] = None,
) -> None:
    """Serve the HTTP API (analytics routes, plus ledger views with --ledger). Needs the API key in the environment
    variable serve.api_key_env (TRADESYS_API_KEY), the bootstrap admin key; more keys: `tradesys keys`. The `serve`
    section sets the body caps, queue, time budget, rate limits, access log and TLS."""
    import time

    from tradesys.serve import ServeLimits, run_serve
    from tradesys.serve.access import AccessSettings
    from tradesys.serve.tls import check_tls

    full = _config(config, set_, check_data=False)
    s = full.serve
    if not os.environ.get(s.api_key_env):
        _fail("config", f"serve.api_key_env: ${s.api_key_env} is not set: the API refuses to start without a key")
    limits = ServeLimits(**{k: getattr(s, k) for k in ServeLimits.model_fields})
    access = AccessSettings(**{k: getattr(s, k) for k in AccessSettings.model_fields})
    try:
        tls = check_tls(s.tls_certfile, s.tls_keyfile)
    except ConfigError as exc:
        _fail("config", str(exc))
    host, port = host or s.host, port or s.port
    if rl_policy is not None and not (rl_policy / "policy.json").is_file():
        _fail("config", f"--rl-policy: {str(rl_policy)!r} is not a policy export (no policy.json; see `tradesys rl "
                        "export`)")
    import ray

    if not ray.is_initialized() and not os.environ.get("RAY_ADDRESS"):
        from tradesys.localray import init_local
        from tradesys.placement import local_head_resources

        init_local(None, True, lambda m: console.print(m, highlight=False),
                   local_head_resources(full.ray.head_resource))
    run_serve(ledger, host=host, port=port, replicas=replicas or s.replicas, api_key_env=s.api_key_env, limits=limits,
              rl_policy_path=str(rl_policy.resolve()) if rl_policy else None, access=access,
              tls_certfile=tls[0] if tls else None, tls_keyfile=tls[1] if tls else None,
              head_resource=full.ray.head_resource, log_format=full.log.format, log_level=full.log.level)
    console.print(f"Serving on {'https' if tls else 'http'}://{host}:{port} (OpenAPI at /openapi.json); Ctrl-C to stop")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


@app.command("config")
def show_config(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    toml: Annotated[bool, typer.Option("--toml", help="print a commented TOML template of every setting")] = False,
) -> None:
    """Print the effective configuration as JSON (after file and overrides, validated; passwords masked)."""
    from tradesys.config import config_template, redact_tree

    if toml:
        typer.echo(config_template(), nl=False)
        return
    cfg = _config(config, set_)
    typer.echo(json.dumps(redact_tree(cfg.model_dump(mode="json")), indent=2))


if __name__ == "__main__":
    app()
