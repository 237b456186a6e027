"""`tradesys backup DEST` and `tradesys restore SRC`: the CLI around `tradesys.backup`.

The run is named as for `tradesys report` (`--run`: a run id, run folder, ledger file or ledger URL), else by the
configuration's `ledger.url`. Every refusal is one line naming the argument or setting (exit code 2).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

PARTS_HELP = "ledger, mlflow, feature_store or config"


def _fail(kind: str, message: str) -> NoReturn:
    from tradesys.commands.output import error_line

    typer.echo(error_line(kind, message), err=True)
    raise typer.Exit(2)


@contextmanager
def _errors(kind: str, where: str) -> Iterator[None]:
    """BackupError/ConfigError keep their field-naming message; anything else is one line naming `where`."""
    from tradesys.backup import BackupError
    from tradesys.config import ConfigError, redact_url

    try:
        yield
    except BackupError as exc:
        _fail(kind, str(exc))
    except ConfigError as exc:
        _fail("config", str(exc))
    except (typer.Exit, KeyboardInterrupt):
        raise
    except Exception as exc:
        _fail(kind, f"{where}: {type(exc).__name__}: {redact_url(' '.join(str(exc).split()))}")


def _mlflow_uri(explicit: str | None, cfg_uri: str | None, runs_dir: Path) -> str:
    """--mlflow-uri, else $MLFLOW_TRACKING_URI, else drift.mlflow_uri, else the local store the trainers use."""
    chosen = explicit or os.environ.get("MLFLOW_TRACKING_URI", "").strip() or cfg_uri
    return chosen or f"sqlite:///{runs_dir.expanduser().resolve() / 'mlflow.db'}"


def backup(
    dest: Annotated[str, typer.Argument(metavar="DEST", help="a new or empty folder, or s3://bucket/prefix")],
    run: Annotated[str | None, typer.Option("--run", help="run id, run folder, ledger file or ledger URL "
                                            "(default: the configuration's ledger.url)")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="override: section.field=value")] = None,
    runs_dir: Annotated[Path | None, typer.Option("--runs-dir", help="where run ids are looked up (default: "
                        "ledger.runs_dir, then those of `tradesys report`), and the default MLflow store's folder "
                        "(default: ledger.runs_dir)")] = None,
    mlflow_uri: Annotated[str | None, typer.Option("--mlflow-uri", help="MLflow tracking URI (default: "
                          "$MLFLOW_TRACKING_URI, else <runs dir>/mlflow.db)")] = None,
    no_mlflow: Annotated[bool, typer.Option("--no-mlflow", help="leave MLflow out")] = False,
    feature_store: Annotated[Path | None, typer.Option("--feature-store", help="feature store root: its "
                             "registry of definitions is backed up")] = None,
    feature_data: Annotated[bool, typer.Option("--feature-data", help="with --feature-store: the offline Parquet "
                            "partitions too")] = False,
    pg_method: Annotated[str, typer.Option("--pg-method", help="PostgreSQL ledger: auto (pg_dump if installed, "
                         "else a COPY dump), pg_dump or copy")] = "auto",
    json_: Annotated[bool, typer.Option("--json", help="print the manifest as JSON on stdout")] = False,
) -> None:
    """Back up a run: its ledger (consistent while a live loop writes), the MLflow store, feature-store metadata
    and the run's configuration, with a manifest of sizes and sha256 checksums."""
    from tradesys.backup import BackupPlan, make_backup
    from tradesys.config import ConfigError, load_config

    if pg_method not in ("auto", "pg_dump", "copy"):
        _fail("backup", f"--pg-method: must be auto, pg_dump or copy, got {pg_method!r}")
    if feature_data and feature_store is None:
        _fail("backup", "--feature-data: needs --feature-store")
    try:
        cfg = load_config(config, set_ or [])
    except ConfigError as exc:
        _fail("config", str(exc))
    rdir = runs_dir if runs_dir is not None else Path(cfg.ledger.runs_dir)
    config_file: Path | None = None
    with _errors("backup", "--run"):
        if run is not None:
            from tradesys.backtest.report import CONFIG_FILES, default_runs_dirs, resolve_run

            dirs = [rdir.expanduser().resolve()] if runs_dir is not None else list(
                dict.fromkeys([rdir.expanduser().resolve(), *default_runs_dirs()]))
            try:
                ref = resolve_run(run, dirs, field="--run")
            except (LookupError, ValueError) as exc:  # RunNotFound and a malformed RUN name --run themselves
                _fail("backup", str(exc))
            url, name = ref.url, ref.name
            if ref.folder is not None:
                config_file = next((ref.folder / n for n in CONFIG_FILES if (ref.folder / n).is_file()), None)
        elif cfg.ledger.url is not None:
            from tradesys.ledger.sqlite import absolute_sqlite_url

            url, name = absolute_sqlite_url(cfg.ledger.url), ""
        else:
            _fail("backup", "--run: name the run to back up (ledger.url is unset, so each run has its own ledger "
                            "under ledger.runs_dir)")
    plan = BackupPlan(
        dest=dest, ledger_url=url, run=name, config_file=config_file, config=cfg.model_dump(mode="json"),
        mlflow_uri=None if no_mlflow else _mlflow_uri(mlflow_uri, cfg.drift.mlflow_uri, rdir),
        feature_store=feature_store, feature_data=feature_data, pg_method=pg_method,  # type: ignore[arg-type]
    )
    with _errors("backup", "DEST"):
        manifest = make_backup(plan)
    if json_:
        from tradesys.commands.output import dumps

        typer.echo(dumps(manifest))
        return
    _print_backup(manifest, dest, Console())


def _print_backup(m: dict[str, Any], dest: str, console: Console) -> None:
    t = Table(title=f"backup {dest}", show_header=True)
    for col in ("part", "files", "bytes", "detail"):
        t.add_column(col, justify="right" if col in ("files", "bytes") else "left")
    for part, info in m["parts"].items():
        t.add_row(part, str(info.get("files", 0)), f"{info.get('bytes', 0):,}", _detail(part, info))
    console.print(t)
    typer.echo(f"Backup complete: {len(m['files'])} files, manifest {dest.rstrip('/')}/manifest.json")


def _detail(part: str, info: dict[str, Any]) -> str:
    if part == "ledger":
        rows = info.get("rows", {})
        return (f"{info['kind']} via {info['method']}, schema v{info['schema_version']}, {rows.get('orders', 0)} "
                f"orders, {rows.get('fills', 0)} fills, {rows.get('equity_curve', 0)} equity rows")
    if part == "mlflow":
        return f"{info.get('runs', 0)} runs" if info.get("present") else f"no store at {info['db']}"
    if part == "feature_store":
        return f"{len(info['definitions'])} definitions, {info['offline_files']} offline files"
    return "restorable" if info.get("restore") else "for reference (effective configuration)"


def restore(
    src: Annotated[str, typer.Argument(metavar="SRC", help="a backup folder or s3://bucket/prefix")],
    ledger: Annotated[str | None, typer.Option("--ledger", help="restore the ledger to this URL (default: where "
                                               "it was backed up from)")] = None,
    feature_store: Annotated[Path | None, typer.Option("--feature-store", help="restore the feature-store "
                             "metadata to this root (default: where it came from)")] = None,
    skip: Annotated[list[str] | None, typer.Option("--skip", help=f"leave a part out: {PARTS_HELP}")] = None,
    force: Annotated[bool, typer.Option("--force", help="overwrite existing state (stop the run first)")] = False,
    json_: Annotated[bool, typer.Option("--json", help="print what was restored as JSON on stdout")] = False,
) -> None:
    """Restore a backup: verify every checksum first, refuse to overwrite existing state without --force, put each
    part back, and check the ledger's schema version and row counts against the manifest."""
    from tradesys.backup import RestorePlan, restore_backup
    from tradesys.backup.manifest import PARTS

    bad = sorted(set(skip or []) - set(PARTS))
    if bad:
        _fail("restore", f"--skip: unknown part {bad[0]!r} (known: {PARTS_HELP})")
    plan = RestorePlan(src=src, ledger_url=ledger, feature_store=feature_store, force=force, skip=set(skip or []))
    with _errors("restore", "SRC"):
        done = restore_backup(plan)
    if json_:
        from tradesys.commands.output import dumps

        typer.echo(dumps(done))
        return
    if "ledger" in done:
        led = done["ledger"]
        rows = led["rows"]
        typer.echo(f"ledger restored to {led['url']} ({led['method']}): schema v{led['schema_version']}, "
                   f"{rows.get('orders', 0)} orders, {rows.get('fills', 0)} fills, "
                   f"{rows.get('equity_curve', 0)} equity rows")
    for part in ("mlflow", "feature_store", "config"):
        if part in done:
            where = done[part].get("db") or done[part].get("root") or done[part].get("path")
            typer.echo(f"{part} restored to {where}")
    typer.echo(f"Restore complete: {done['verified_files']} files verified; resume the run with `tradesys live` "
               "on the same ledger")
