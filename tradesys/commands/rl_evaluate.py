"""`tradesys rl evaluate RUN...`: the trained agent (5+ training seeds) against the baselines on the test period.

Each RUN is a training summary: the JSON file ``tradesys rl train --out FILE`` (or ``jobs/rl_train.py --out``)
wrote, or an MLflow run id of such a run (its ``summary.json`` artifact, from ``--mlflow-uri``, else
``$MLFLOW_TRACKING_URI``). The runs must share the split, symbols and environment. The test period's bars are loaded
here for the first time (`tradesys.rl.evaluate`). The number of configurations tried (for the deflated Sharpe) is
every checkpoint the runs scored on the selection period, or ``--trials N`` (e.g. a Tune search's trials x
checkpoints); the variance of their selection Sharpes comes from each run's MLflow ``sel_sharpe`` history when the
store is reachable.

Output: the table (rich), one line per baseline saying whether the agent beats it, and the conclusion; ``--json``
prints only the report as strict JSON on stdout; ``--out DIR`` writes ``equity.png``, ``evaluation.json`` and
``evaluation.md`` (``--png PATH`` puts the plot elsewhere). A bad argument prints ``error: field: reason`` and
exits with code 2. No Ray is started.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)

__all__ = ["evaluate", "load_run", "report_table", "selection_sharpes"]


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {' '.join(str(message).split())}", err=True)
    raise typer.Exit(2)


def load_run(ref: str, tracking_uri: str | None = None) -> dict[str, Any]:
    """A training summary from a JSON file, or from an MLflow run's ``summary.json`` artifact."""
    p = Path(ref).expanduser()
    if p.is_file():
        try:
            out = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"runs: {ref!r} is not JSON ({exc.msg} at line {exc.lineno})") from None
    elif p.suffix == ".json" or os.sep in ref:
        raise ValueError(f"runs: {ref!r} is not a file")
    else:
        import mlflow
        from mlflow.exceptions import MlflowException

        try:
            out = mlflow.artifacts.load_dict(f"runs:/{ref}/summary.json") if tracking_uri is None else \
                _load_with(tracking_uri, ref)  # fmt: skip
        except (MlflowException, OSError) as exc:
            raise ValueError(f"runs: {ref!r} is neither a file nor an MLflow run with summary.json ({exc})") from None
    if not isinstance(out, dict) or "split" not in out or "env" not in out:
        raise ValueError(f"runs: {ref!r} is not a training summary (no split/env)")
    return out


def _load_with(uri: str, run_id: str) -> dict[str, Any]:
    import mlflow

    mlflow.set_tracking_uri(uri)
    return dict(mlflow.artifacts.load_dict(f"runs:/{run_id}/summary.json"))


def selection_sharpes(runs: list[dict[str, Any]]) -> list[float] | None:
    """Every scored checkpoint's selection Sharpe (MLflow ``sel_sharpe`` history of each run), or None when a run's
    store cannot be read (the evaluation then uses the seeds' test Sharpes for the trials' variance)."""
    try:
        from mlflow import MlflowClient

        out: list[float] = []
        for r in runs:
            hist = MlflowClient(r["tracking_uri"]).get_metric_history(r["run_id"], "sel_sharpe")
            out += [float(h.value) for h in hist if math.isfinite(h.value)]
        return out or None
    except Exception:  # a missing or moved store: the figure is optional (the report names its source)
        return None


def _fmt_pct(conf: float) -> str:
    return f"{round(conf * 100)}% CI"


def report_table(report: dict[str, Any]) -> Table:
    """The evaluation table: each seed, the agent's mean, each baseline."""
    from tradesys.rl.evaluate import TABLE_COLUMNS, table_rows

    t = Table(title=f"RL agent vs baselines, test period {report['first_decision']} .. {report['last_bar']} "
                    f"({report['n_steps']} bars, net of costs)")  # fmt: skip
    for c in TABLE_COLUMNS:
        t.add_column(_fmt_pct(report["bootstrap"]["confidence"]) if c == "CI" else c,
                     justify="left" if c == "strategy" else "right")  # fmt: skip
    for row in table_rows(report):
        style = "bold" if row[0].startswith("agent (mean") else None
        t.add_row(*row, style=style)
    return t


RunsArg = Annotated[list[str], typer.Argument(help="training summaries (JSON files from rl train --out) or MLflow "
                                                   "run ids; at least 5 seeds")]  # fmt: skip


def evaluate(
    runs: RunsArg,
    rebalance_every: Annotated[int, typer.Option(help="bars between rebalances of the periodic baselines")] = 21,
    estimation_window: Annotated[int, typer.Option(help="bars of returns before a rebalance the optimisers use")] = 252,
    bootstrap_reps: Annotated[int, typer.Option(help="stationary bootstrap resamples")] = 1000,
    confidence: Annotated[float, typer.Option(help="two-sided interval level (verdicts one-sided)")] = 0.90,
    seed: Annotated[int, typer.Option(help="bootstrap seed")] = 0,
    trials: Annotated[int | None, typer.Option(help="configurations tried (default: the scored checkpoints)")] = None,
    min_seeds: Annotated[int, typer.Option(help="training seeds required")] = 5,
    mlflow_uri: Annotated[str | None, typer.Option(help="tracking URI for runs given by id")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="write equity.png, evaluation.json, evaluation.md")] = None,
    png: Annotated[Path | None, typer.Option("--png", help="write the equity-curve PNG here (default: DIR/equity.png)")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON on stdout")] = False,
) -> None:
    """The agent of each training seed and the baselines on the held-out test period: Sharpe with a bootstrap
    interval, PSR/DSR, drawdown, turnover, costs; says plainly whether the agent beats each baseline."""
    from tradesys.core.jsonsafe import dumps
    from tradesys.rl.evaluate import EvalSettings, evaluate_runs, markdown_table, plot_equity

    show = err_console if as_json else console
    try:
        if trials is not None and trials < 1:
            raise ValueError(f"trials: must be an integer >= 1, got {trials}")
        settings = EvalSettings(rebalance_every=rebalance_every, estimation_window=estimation_window,
                                bootstrap_reps=bootstrap_reps, confidence=confidence, seed=seed)  # fmt: skip
        loaded = [load_run(r, mlflow_uri) for r in runs]
        if len(loaded) < min_seeds:
            raise ValueError(f"runs: {len(loaded)} training seeds given, at least {min_seeds} are needed")
        sharpes = selection_sharpes(loaded) if all("tracking_uri" in r and "run_id" in r for r in loaded) else None
        with show.status("evaluating") as status:
            report = evaluate_runs(loaded, settings, n_trials=trials, selection_sharpes=sharpes, min_seeds=min_seeds,
                                   progress=lambda m: status.update(m))  # fmt: skip
    except ValueError as exc:
        _fail(str(exc))
    show.print(report_table(report))
    for v in report["verdicts"]:
        show.print(v["text"], highlight=False)
    show.print(f"[bold]{report['conclusion']}[/bold]", highlight=False)
    show.print(f"deflated Sharpe: {report['n_trials']} configurations tried ({report['trials_source']})",
               highlight=False)  # fmt: skip
    if out is not None or png is not None:
        path = plot_equity(report, png if png is not None else out / "equity.png")  # type: ignore[operator]
        show.print(f"equity curves: {path}", highlight=False)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "evaluation.json").write_text(dumps(report, indent=None))
        (out / "evaluation.md").write_text(markdown_table(report))
        show.print(f"report: {out / 'evaluation.json'}, {out / 'evaluation.md'}", highlight=False)
    if as_json:
        typer.echo(dumps(report, indent=None))
