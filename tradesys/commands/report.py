"""`tradesys report RUN`: the tear sheet of any run's ledger (backtest, sweep trial, live run) as HTML and PNGs.

RUN is a ledger URL (sqlite:///..., postgresql://...), a ledger file (or a run folder holding ledger.db), or a
run id under the runs folders (`--runs-dir`, else `$TRADESYS_RUNS_DIR` or ~/tradesys/runs, then ./runs). The
bars for the benchmark, slippage and exposure come from `--config`/`--set` (the run's configuration), else the
one saved in the run folder, else the packaged source that has every traded symbol (tradesys.backtest.report).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from tradesys.config import TradesysConfig

# the defaults of tradesys.backtest.tearsheet, spelled here so `import tradesys.cli` stays free of the tear sheet's
# imports (tests/test_cli_report.py checks that they agree)
DEFAULT_ROLLING_WINDOW = 63
DEFAULT_PARTICIPATION = 0.10


def _fail(kind: str, message: str) -> NoReturn:
    """One line on stderr, exit code 2 (the CLI's error contract, as `tradesys.cli._fail`)."""
    from tradesys.commands.output import error_line

    typer.echo(error_line(kind, message), err=True)
    raise typer.Exit(2)


def run_config(config: Path | None, set_: list[str] | None) -> TradesysConfig | None:
    """The run's configuration from --config/--set (for its bars), or None to use the saved or inferred one."""
    from tradesys.config import ConfigError, load_config

    if config is None and not set_:
        return None
    try:
        return load_config(config, set_ or [])
    except ConfigError as exc:
        _fail("config", str(exc))


def runs_dirs(runs_dir: Path | None) -> list[Path]:
    """Where a run id is looked up: --runs-dir, else the default runs folders."""
    from tradesys.backtest.report import default_runs_dirs

    return [runs_dir.expanduser().resolve()] if runs_dir is not None else default_runs_dirs()


@contextmanager
def run_errors(out: Path | None) -> Iterator[None]:
    """Whatever reading a run raises reaches the user as one line naming RUN, the config or --out (exit code 2)."""
    from tradesys.backtest.report import RunNotFound
    from tradesys.config import ConfigError, DataError
    from tradesys.ledger import redact_url

    try:
        yield
    except RunNotFound as exc:
        _fail("run", str(exc))
    except (ConfigError, DataError) as exc:
        _fail("config", str(exc))
    except ValueError as exc:
        _fail("run", str(exc))
    except OSError as exc:  # an unwritable --out, an unreadable ledger file
        _fail("run", f"{'--out' if out is not None else 'RUN'}: {exc}")
    except Exception as exc:  # a database that refuses the connection, a file that is not SQLite: one line
        _fail("run", f"RUN: {type(exc).__name__}: {redact_url(str(exc))}")


def report(
    run: Annotated[str, typer.Argument(metavar="RUN", help="ledger URL, ledger file, run folder or run id")],
    out: Annotated[Path | None, typer.Option("--out", help="output folder (default: <run folder>/report, "
                                                          "./report for a PostgreSQL ledger)")] = None,
    json_: Annotated[bool, typer.Option("--json", help="print the statistics as JSON on stdout")] = False,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="the run's TOML config (for its bars)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="override: section.field=value")] = None,
    runs_dir: Annotated[Path | None, typer.Option("--runs-dir", help="folder of run folders, for a run id")] = None,
    window: Annotated[int, typer.Option(min=2, help="rolling Sharpe/volatility window (steps)")] = (
        DEFAULT_ROLLING_WINDOW),
    participation: Annotated[float, typer.Option(help="bar-volume participation (0 < p <= 1) for the capacity "
                                                      "estimate")] = DEFAULT_PARTICIPATION,
) -> None:
    """Write a tear sheet: report.html (self-contained), PNG charts, stats.json and trades.csv."""
    from tradesys.backtest.report import load_tear_sheet, resolve_run, write_report
    from tradesys.ledger import redact_url

    if not 0.0 < participation <= 1.0:
        _fail("config", f"--participation: must be in (0, 1], got {participation}")
    cfg = run_config(config, set_)
    dirs = runs_dirs(runs_dir)
    shown = Console(stderr=True) if json_ else Console()
    with run_errors(out):
        ref = resolve_run(run, dirs, field="RUN")
        with shown.status("computing the tear sheet..."):
            sheet = load_tear_sheet(ref, cfg, rolling_window=window, participation=participation,
                                    cfg_origin=" (--config/--set)" if cfg is not None else "")
            folder = out if out is not None else (ref.folder / "report" if ref.folder else Path("report"))
            paths = write_report(sheet, folder, f"tradesys run {ref.name}")

    if json_:
        from tradesys.commands.output import dumps

        typer.echo(dumps({**sheet.to_dict(), "files": {k: str(v) for k, v in paths.items()},
                          "ledger_url": redact_url(ref.url)}))
        return
    table = Table(title=f"tear sheet: {ref.name}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    s = sheet.stats
    for key, label, kind in (("total_return", "total return", "%"), ("annual_return", "annual return", "%"),
                             ("annual_volatility", "volatility", "%"), ("sharpe", "Sharpe", "x"),
                             ("sortino", "Sortino", "x"), ("calmar", "Calmar", "x"),
                             ("max_drawdown", "max drawdown", "%"), ("hit_rate", "hit rate", "%"),
                             ("profit_factor", "profit factor", "x"), ("trades", "closed trades", "n")):
        v = s.get(key)
        text = ("n/a" if v is None or v != v else f"{v * 100:.2f}%" if kind == "%" else f"{v:,.0f}" if kind == "n"
                else f"{v:,.3f}")
        table.add_row(label, text)
    shown.print(table)
    for note in sheet.notes:
        shown.print(f"[dim]{note}[/dim]", highlight=False)
    shown.print(f"Report written to {paths['html']}", highlight=False, soft_wrap=True)  # a path to copy: unwrapped
