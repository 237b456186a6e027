"""`tradesys train ...`: train, evaluate, register and maybe promote a forecaster, with a live progress bar.

`tradesys train run` takes the options of `tradesys.train.pipeline.TrainSettings` (the same as ``jobs/train.py``),
shows one progress bar over trials x epochs (an ASHA-stopped trial counts its skipped epochs as done) fed by the
pipeline's progress events, and prints the summary table and the promotion block (promoted or not, the network's
holdout loss against each baseline and the champion, the test, and why). ``--out FILE`` also writes the summary as
strict JSON; ``--json`` prints only that JSON on stdout (progress and tables go to stderr). Bad settings print
``error: field: reason`` and exit with code 2. It joins a running Ray (or ``RAY_ADDRESS``) and only
starts a local one when there is none.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(no_args_is_help=True, help="Train forecasters: Ray Tune ASHA search or Ray Train, MLflow, registry.")
console = Console()
err_console = Console(stderr=True)


@app.callback()
def _group() -> None:
    """Train forecasters (see docs/training.md)."""


_STAGE_TEXT = {
    "data": "building samples and the leak-free holdout split",
    "holdout": "scoring the best model, the naive and the GARCH forecasts on the holdout",
    "register": "logging the MLflow run and registering the model as challenger",
    "promote": "Diebold-Mariano tests against the naive and GARCH baselines and the champion",
}


class ProgressView:
    """Turns pipeline progress events into one rich progress bar (trials x epochs) and stage lines."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: Any = None
        self.max_epochs = 1
        self.seen: dict[str, int] = {}
        self.best = float("inf")
        self.stages: list[str] = []

    def __call__(self, ev: dict[str, Any]) -> None:
        kind = ev.get("event")
        if kind == "stage":
            stage = str(ev["stage"])
            self.stages.append(stage)
            if stage in ("search", "train"):
                self.max_epochs = int(ev["max_epochs"])
                total = int(ev["trials"]) * self.max_epochs
                label = "search" if stage == "search" else f"ray-train x{ev.get('num_workers', 1)}"
                self.task = self.progress.add_task(label, total=total, best="")
            elif stage != "done":
                self.progress.console.print(f"[bold]{stage}[/bold]: {_STAGE_TEXT.get(stage, '')}".rstrip(": "))
        elif kind == "note":
            self.progress.console.print(str(ev["message"]), highlight=False)
        elif kind == "trial_result" and self.task is not None:
            tid, epoch = str(ev["trial_id"]), int(ev["epoch"])
            step = max(0, epoch - self.seen.get(tid, 0))
            self.seen[tid] = max(epoch, self.seen.get(tid, 0))
            val = ev.get("metrics", {}).get("val_loss")
            if val is not None and val < self.best:
                self.best = float(val)
            self.progress.update(self.task, advance=step, best=f"best val_loss {self.best:.5g}")
        elif kind == "trial_complete" and self.task is not None:
            tid = str(ev["trial_id"])
            rest = max(0, self.max_epochs - self.seen.get(tid, 0))
            self.seen[tid] = self.max_epochs
            self.progress.update(self.task, advance=rest)


def summary_table(summary: dict[str, Any]) -> Table:
    """The run's headline numbers: registry outcome, best config, validation and holdout losses."""
    t = Table(title=f"training run {summary['run_id']}", show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    promo = summary.get("promotion", {})
    hold = summary.get("holdout", {})

    def fmt(v: Any) -> str:
        return f"{v:.6g}" if isinstance(v, float) else str(v)

    rows: list[tuple[str, Any]] = [
        ("trainer", summary.get("trainer", "tune")),
        ("data / symbol", f"{summary.get('data', '')} / {summary.get('symbol', '')}"),
        ("registry", f"{summary['registry_name']} v{summary['version']} (champion: "
                     f"{'none' if summary['champion'] is None else 'v' + str(summary['champion'])})"),
        ("promotion", f"{'promoted' if promo.get('promoted') else 'not promoted'} ({promo.get('reason', '')})"),
        ("best config", ", ".join(f"{k}={fmt(v)}" for k, v in summary["best_config"].items())),
        ("best val_loss", summary["best_val_loss"]),
        ("trials (stopped early)", f"{summary['num_trials']} ({summary['stopped_early']})"),
    ]
    for who in ("network", "naive", "garch"):
        m = hold.get(who)
        if m:
            shown = [f"{k}={fmt(m[k])}" for k in ("vol_qlike", "ret_mse", "dir_accuracy") if k in m]
            rows.append((f"holdout {who}", ", ".join(shown)))
    rows.append(("tracking", summary["tracking_uri"]))
    for k, v in rows:
        t.add_row(k, fmt(v))
    return t


@app.command()
def run(
    data: Annotated[str, typer.Option(help="a data set (sp500, ...), a CSV of prices, or store:<root>")] = "sp500",
    symbol: Annotated[str | None, typer.Option(help="data column / store entity (default: the first)")] = None,
    features: Annotated[str | None, typer.Option(help="store features: name:version[,...]")] = None,
    returns_feature: Annotated[str, typer.Option(help="store feature with the per-bar returns")] = "returns",
    feature_lag: Annotated[str | None, typer.Option(help="delay before a feature value is usable, e.g. 1h")] = None,
    feature_ttl: Annotated[str | None, typer.Option(help="maximum age of a feature value, e.g. 3D")] = None,
    kinds: Annotated[str, typer.Option(help="comma-separated: lstm, transformer")] = "lstm,transformer",
    num_samples: Annotated[int, typer.Option(help="Tune trials")] = 8,
    max_epochs: int = 10,
    grace_period: Annotated[int, typer.Option(help="ASHA: epochs before a trial can be stopped")] = 1,
    lookback: int = 20,
    vol_horizon: int = 5,
    holdout: Annotated[int, typer.Option(help="holdout samples (the most recent)")] = 250,
    max_samples: Annotated[int, typer.Option(help="use only the most recent N samples (0: all)")] = 0,
    mlflow_uri: Annotated[
        str | None, typer.Option(help="tracking URI (default: sqlite:///<runs-dir>/mlflow.db)")
    ] = None,
    experiment: str = "tradesys-train",
    registry_name: str = "tradesys-forecaster",
    runs_dir: str = "runs",
    promote_on: Annotated[str, typer.Option(help="vol_qlike, ret_se or dir_logloss")] = "vol_qlike",
    alpha: Annotated[float, typer.Option(help="DM test level for promotion")] = 0.05,
    seed: int = 0,
    trainer: Annotated[str, typer.Option(help="tune (ASHA search) or ray-train (one config, DDP)")] = "tune",
    num_workers: Annotated[int, typer.Option(help="ray-train workers (one CPU or GPU each)")] = 2,
    use_gpu: Annotated[bool, typer.Option("--use-gpu", help="ray-train on GPUs (refused without one)")] = False,
    kind: Annotated[str | None, typer.Option(help="ray-train: lstm/transformer (default: the champion's)")] = None,
    width: Annotated[int | None, typer.Option(help="ray-train: hidden size / d_model")] = None,
    n_layers: Annotated[int | None, typer.Option(help="ray-train: layers")] = None,
    lr: Annotated[float | None, typer.Option(help="ray-train: learning rate")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="also write the summary as JSON to this file")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON on stdout (NaN: null)")] = False,
) -> None:
    """Train (Tune ASHA search or Ray Train), score the holdout, log to MLflow, register, maybe promote."""
    from tradesys.train.pipeline import TrainSettings, promotion_lines, run_training, summary_json

    show = err_console if as_json else console  # with --json stdout carries the JSON alone

    hp = {"kind": kind, "width": width, "n_layers": n_layers, "lr": lr}
    given = {k: v for k, v in hp.items() if v is not None}
    try:
        if given and len(given) != len(hp):
            missing = [f"--{k.replace('_', '-')}" for k, v in hp.items() if v is None]
            raise ValueError(f"hparams: give --kind, --width, --n-layers and --lr together (missing {missing})")
        settings = TrainSettings(
            data=data, symbol=symbol, features=tuple((features or "").split(",")), returns_feature=returns_feature,
            feature_lag=feature_lag, feature_ttl=feature_ttl, kinds=tuple(k.strip() for k in kinds.split(",")),
            num_samples=num_samples, max_epochs=max_epochs, grace_period=grace_period, lookback=lookback,
            vol_horizon=vol_horizon, holdout=holdout, max_samples=max_samples, mlflow_uri=mlflow_uri,
            experiment=experiment, registry_name=registry_name, runs_dir=runs_dir, promote_on=promote_on,
            alpha=alpha, seed=seed, trainer=trainer, num_workers=num_workers, use_gpu=use_gpu,
            hparams=given or None,
        )  # fmt: skip
        columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("epochs"), TimeElapsedColumn(), TextColumn("{task.fields[best]}"))  # fmt: skip
        # with --json, anything the training prints (Ray Tune's reporter) goes to stderr: stdout is the JSON alone
        quiet = contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()
        with quiet, Progress(*columns, console=show) as bar:
            summary = run_training(settings, ProgressView(bar))
    except ValueError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    show.print(summary_table(summary))
    for line in promotion_lines(summary.get("promotion", {})):
        show.print(line, highlight=False, soft_wrap=True)
    text = summary_json(summary)
    if out is not None:
        out.write_text(text)
        show.print(f"summary: {out}", highlight=False)
    if as_json:
        typer.echo(text)
