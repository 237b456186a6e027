"""Backtests on Ray: one backtest as a Ray task, and a sweep's trials as Ray tasks (the shell around `runner`/`sweep`).

Each backtest runs as a task with `num_cpus=1` (the loop is one Python thread), so it lands on any worker of the
cluster and a sweep fills every CPU. A task that raises or whose worker dies is retried (`max_retries`,
`retry_exceptions=True`); every attempt first appends a line to `<run dir>/attempts` and starts from an empty ledger
(a retried attempt deletes the SQLite file the failed one left; a PostgreSQL ledger is never wiped, so a run on one
is not retried). A trial that still fails is a row with status `failed` and its error, never dropped.

Run dirs are plain folders (`<runs dir>/<run id>/`): on a multi-node cluster they must be on storage every node
sees (the ledgers are written by the workers, the results table by the driver).
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tradesys.backtest.sweep import METRICS, SweepSpec, Trial, TrialResult, results_table, swept_value
from tradesys.config import ConfigError, DataError, TradesysConfig, redact_url
from tradesys.core.jsonsafe import dumps
from tradesys.ledger.sqlite import MEMORY, sqlite_path
from tradesys.live import RunError, root_cause

DEFAULT_RETRIES = 2
_FIELD = re.compile(r"^[a-z_]+\.[a-z_]+: ")
ATTEMPTS_FILE = "attempts"


def ledger_file(url: str) -> Path | None:
    """The SQLite file behind a ledger URL (None for memory and PostgreSQL)."""
    if not url.startswith("sqlite:"):
        return None
    path = sqlite_path(url)
    return None if path == MEMORY else Path(path)


def _attempt(run_dir: str | None) -> int:
    """Record this attempt in the run dir; return its number (1 for the first)."""
    if run_dir is None:
        return 1
    d = Path(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / ATTEMPTS_FILE, "a") as f:
        f.write(f"{time.time():.3f} pid={os.getpid()}\n")
    return len((d / ATTEMPTS_FILE).read_text().splitlines())


def attempts(run_dir: str | Path) -> int | None:
    """How many attempts a run dir records (None when the folder is not visible here)."""
    p = Path(run_dir) / ATTEMPTS_FILE
    return len(p.read_text().splitlines()) if p.is_file() else None


def _fresh_ledger(url: str, attempt: int) -> None:
    """A retried attempt starts from an empty ledger: the failed attempt's SQLite file goes; PostgreSQL is refused."""
    if attempt == 1:
        return
    path = ledger_file(url)
    if path is not None:
        for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            p.unlink(missing_ok=True)
        return
    if url.startswith(("postgresql://", "postgres://")):
        from tradesys.ledger import open_ledger

        ledger = open_ledger(url)
        try:
            ledger.migrate()
            if ledger.account() is not None:
                raise RunError(f"ledger: attempt {attempt} found the earlier attempt's rows in {redact_url(url)}; "
                               "a PostgreSQL ledger is not wiped: run again on a new one")
        finally:
            ledger.close()


def execute_backtest(cfg: TradesysConfig, ledger_url: str, run_dir: str | None) -> dict[str, Any]:
    """The body of the Ray task (a plain function: the in-process path of `--ray` is this same call).

    Returns the summary, the attempt number and the wall time.
    """
    from tradesys.backtest.runner import run_backtest

    attempt = _attempt(run_dir)
    _fresh_ledger(ledger_url, attempt)
    path = ledger_file(ledger_url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    summary, ledger = run_backtest(cfg, ledger_url)
    ledger.close()
    return {"summary": summary.as_dict(), "attempt": attempt, "seconds": time.perf_counter() - t0}


def execute_vectorized(cfg: TradesysConfig, run_dir: str | None) -> dict[str, Any]:
    """A trial on the vectorised engine (`run_vectorized`: no ledger; what it does not model is in its docstring)."""
    from tradesys.backtest.vectorized import run_vectorized

    attempt = _attempt(run_dir)
    t0 = time.perf_counter()
    result = run_vectorized(cfg)
    return {"summary": result.summary.as_dict(), "attempt": attempt, "seconds": time.perf_counter() - t0}


_backtest_task = ray.remote(num_cpus=1)(execute_backtest)
_vectorized_task = ray.remote(num_cpus=1)(execute_vectorized)


def ensure_empty(ledger_url: str, field: str = "--ledger") -> None:
    """Refuse a ledger that already holds a run: a backtest replays from the first bar (ConfigError naming the
    setting that gave the ledger, `field`)."""
    from tradesys.ledger import open_ledger

    path = ledger_file(ledger_url)
    if ledger_url.startswith("sqlite:") and (path is None or not path.exists()):
        return
    ledger = open_ledger(ledger_url)
    try:
        ledger.migrate()
        if ledger.account() is not None:
            raise ConfigError(f"{field}: {redact_url(ledger_url)} already holds a run ({len(ledger.orders())} "
                              "orders); a backtest starts from an empty ledger: give a new one")
    finally:
        ledger.close()


def task_error(exc: BaseException) -> tuple[str, str]:
    """(exception class, one-line message) of what failed inside a task."""
    name, msg, _ = root_cause(exc)
    return name, msg


def backtest_on_ray(
    cfg: TradesysConfig, ledger_url: str, run_dir: Path, *, retries: int = DEFAULT_RETRIES, name: str = "backtest",
    on_wait: Callable[[], None] | None = None, ledger_field: str = "--ledger",
) -> dict[str, Any]:
    """Run one backtest as a Ray task on the cluster `ray` is connected to; return its result dict.

    Raises DataError/ConfigError (a setting, named) or RunError (one line) when the task fails after its retries.
    """
    ensure_empty(ledger_url, ledger_field)
    run_dir.mkdir(parents=True, exist_ok=True)
    pg = ledger_url.startswith(("postgresql://", "postgres://"))
    ref = _backtest_task.options(  # type: ignore[attr-defined]
        name=name, max_retries=0 if pg else retries, retry_exceptions=True
    ).remote(cfg, ledger_url, str(run_dir))
    try:
        while True:
            ready, _ = ray.wait([ref], timeout=0.25)
            if ready:
                return ray.get(ref)  # type: ignore[no-any-return]
            if on_wait is not None:
                on_wait()
    except ray.exceptions.RayError as exc:
        kind, msg = task_error(exc)
        if kind == "DataError":
            raise DataError(msg) from None
        if kind == "ConfigError" or _FIELD.match(msg):  # a setting's failure keeps its field-naming message
            raise ConfigError(msg) from None
        tries = attempts(run_dir)
        raise RunError(f"the backtest failed on Ray after {tries or '?'} attempt(s): {kind}: {redact_url(msg)}"
                       ) from None


# -- sweeps --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrialJob:
    """A trial ready to run: its config (or why it has none) and where its files go."""

    trial: Trial
    config: TradesysConfig | None
    invalid: str | None
    trial_dir: Path
    ledger_url: str | None
    engine: str = "event"


def plan_trials(
    trials: Sequence[Trial], configs: Sequence[TradesysConfig | ConfigError], sweep_dir: Path, keep_ledgers: bool,
    engine: str = "event",
) -> list[TrialJob]:
    """Each trial's engine (`sweep.trial_engine`), folder `<sweep dir>/trials/<index>/` and ledger (event-driven:
    a SQLite file there, or in memory; vectorised: none)."""
    from tradesys.backtest.sweep import trial_engine

    jobs = []
    for t, c in zip(trials, configs, strict=True):
        d = sweep_dir / "trials" / f"{t.index:05d}"
        url: str | None = f"sqlite:///{d / 'ledger.db'}" if keep_ledgers else f"sqlite:///{MEMORY}"
        if isinstance(c, ConfigError):
            jobs.append(TrialJob(t, None, " ".join(str(c).split()), d, url, "event" if engine == "auto" else engine))
            continue
        params = {k: swept_value(c, k) for k in t.params}  # validated values (e.g. "off" -> None)
        eng, why = trial_engine(engine, c, t.params)
        if eng == "vectorized":
            url = None
        jobs.append(TrialJob(Trial(t.index, params), None if why else c, why, d, url, eng))
    return jobs


class SweepTracker:
    """MLflow for a sweep: one parent run, one nested run per trial (params, finite metrics, status, ledger path).

    Tracking URI as the training code resolves it (`tradesys.train.tracking.resolve_tracking_uri`): the argument,
    else `$MLFLOW_TRACKING_URI`, else `sqlite:///<runs dir>/mlflow.db`.
    """

    def __init__(self, experiment: str, tracking_uri: str | None, runs_dir: Path) -> None:
        from mlflow import MlflowClient

        from tradesys.train.tracking import ensure_experiment, resolve_tracking_uri

        self.tracking_uri = resolve_tracking_uri(tracking_uri, runs_dir=runs_dir)
        self.experiment_id = ensure_experiment(experiment, self.tracking_uri, runs_dir=runs_dir)
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        self.parent_id: str | None = None

    def start(self, sweep_id: str, spec: SweepSpec, base: dict[str, Any], n_trials: int, engine: str = "event") -> str:
        from mlflow.entities import Param

        run = self.client.create_run(self.experiment_id, run_name=sweep_id, tags={"tradesys.kind": "sweep"})
        self.parent_id = run.info.run_id
        params = {"search": spec.search, "seed": spec.seed, "trials": n_trials, "engine": engine,
                  **{f"space.{k}": d.text() for k, d in spec.params.items()}, "base_config": dumps(base, indent=None)}
        self.client.log_batch(self.parent_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
        return self.parent_id

    def log_trial(self, r: TrialResult) -> None:
        from mlflow.entities import Metric, Param, RunTag

        assert self.parent_id is not None
        tags = {"mlflow.parentRunId": self.parent_id, "tradesys.status": r.status, "tradesys.trial": str(r.trial.index)}
        if r.error:
            tags["tradesys.error"] = r.error[:5000]
        if r.ledger_path:
            tags["tradesys.ledger_path"] = r.ledger_path
        run = self.client.create_run(self.experiment_id, run_name=f"trial-{r.trial.index:05d}", tags=tags)
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, 0) for k, v in r.metrics.items()
                   if k in METRICS and isinstance(v, int | float) and math.isfinite(float(v))]
        if r.seconds is not None:
            metrics.append(Metric("seconds", float(r.seconds), now, 0))
        self.client.log_batch(run.info.run_id, metrics=metrics,
                              params=[Param(k, str(v)) for k, v in r.trial.params.items()],
                              tags=[RunTag("tradesys.engine", r.engine or "")])
        self.client.set_terminated(run.info.run_id, "FINISHED" if r.status == "ok" else "FAILED")

    def finish(self, table: Path, counts: dict[str, int]) -> None:
        from mlflow.entities import Metric

        assert self.parent_id is not None
        now = int(time.time() * 1000)
        self.client.log_batch(self.parent_id, metrics=[Metric(f"trials_{k}", float(v), now, 0)
                                                       for k, v in counts.items()])
        self.client.log_artifact(self.parent_id, str(table))
        self.client.set_terminated(self.parent_id, "FINISHED")


class _SafeTracker:
    """MLflow failures (a store that is down, locked or refuses a write) cost the MLflow record, never the sweep:
    one warning, logging stops, the results table is still written and the summary says what failed."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.tracker: SweepTracker | None = None
        self.error: str | None = None

    def open(self, experiment: str, uri: str | None, runs_dir: Path, sweep_id: str, spec: SweepSpec,
             base: dict[str, Any], n: int, engine: str) -> None:
        tracker = SweepTracker(experiment, uri, runs_dir)
        tracker.start(sweep_id, spec, base, n, engine)
        self.tracker = tracker

    def call(self, fn: Callable[[], Any]) -> None:
        if self.error is not None:
            return
        try:
            fn()
        except Exception as exc:
            self.error = redact_url(f"{type(exc).__name__}: {' '.join(str(exc).split())}")[:2000]
            self.tracker = None
            self.console.print(f"[yellow]MLflow logging stopped:[/yellow] {self.error}", highlight=False)


def run_trials(
    jobs: Sequence[TrialJob],
    *,
    retries: int = DEFAULT_RETRIES,
    console: Console | None = None,
    show_progress: bool = True,
    on_submitted: Callable[[], None] | None = None,
    on_result: Callable[[TrialResult], None] | None = None,
) -> tuple[list[TrialResult], bool]:
    """Run the valid trials as Ray tasks (invalid ones become rows at once); a progress bar across trials.

    `on_submitted` runs once every task is submitted, while they run (e.g. opening the MLflow store), before the
    first `on_result`. Returns (one result per trial in trial order, interrupted). Ctrl-C cancels the trials still
    running: they become rows with status `cancelled`, and `interrupted` is True (the caller writes the table).
    """
    interrupted = False
    results: list[TrialResult] = []
    counts = {"failed": 0, "invalid": 0}

    def done(r: TrialResult) -> None:
        results.append(r)
        if r.status in counts:
            counts[r.status] += 1
        if on_result is not None:
            on_result(r)

    pending: dict[Any, TrialJob] = {}
    for j in jobs:
        if j.config is None:
            continue
        opts = {"name": f"trial-{j.trial.index:05d}", "max_retries": retries, "retry_exceptions": True}
        if j.engine == "vectorized":
            ref = _vectorized_task.options(**opts).remote(j.config, str(j.trial_dir))  # type: ignore[attr-defined]
        else:
            ref = _backtest_task.options(**opts).remote(  # type: ignore[attr-defined]
                j.config, j.ledger_url, str(j.trial_dir))
        pending[ref] = j
    if on_submitted is not None:
        on_submitted()
    for j in jobs:
        if j.config is None:
            done(TrialResult(j.trial, "invalid", error=j.invalid, engine=j.engine))
    with Progress(
        TextColumn("[bold blue]sweep"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed, {task.fields[invalid]} invalid"), TimeElapsedColumn(),
        console=console or Console(stderr=True), disable=not show_progress,
    ) as bar:
        task = bar.add_task("sweep", total=len(jobs), completed=len(results), **counts)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0.5)
                for ref in ready:
                    done(_collect(ref, pending.pop(ref)))
                bar.update(task, completed=len(results), **counts)
        except KeyboardInterrupt:
            for ref, j in pending.items():
                ray.cancel(ref, force=True)
                done(TrialResult(j.trial, "cancelled", error="cancelled (Ctrl-C)", engine=j.engine,
                                 ledger_path=_path(j.ledger_url), attempts=attempts(j.trial_dir)))
            interrupted = True
    return sorted(results, key=lambda r: r.trial.index), interrupted


def _path(url: str | None) -> str | None:
    p = None if url is None else ledger_file(url)
    return None if p is None else str(p)


def _collect(ref: Any, j: TrialJob) -> TrialResult:
    try:
        out = ray.get(ref)
    except ray.exceptions.RayError as exc:
        kind, msg = task_error(exc)
        return TrialResult(j.trial, "failed", error=f"{kind}: {msg}"[:2000], ledger_path=_path(j.ledger_url),
                           attempts=attempts(j.trial_dir), engine=j.engine)
    s = out["summary"]
    return TrialResult(j.trial, "ok", metrics={m: s[m] for m in METRICS}, ledger_path=_path(j.ledger_url),
                       attempts=out["attempt"], seconds=out["seconds"], engine=j.engine)


def write_results(results: Sequence[TrialResult], fields: Sequence[str], sweep_dir: Path) -> Path:
    """The results table as `<sweep dir>/results.parquet`."""
    import pyarrow.parquet as pq

    path = sweep_dir / "results.parquet"
    pq.write_table(results_table(results, fields), path)
    return path


def run_sweep(
    spec: SweepSpec,
    config_path: str | Path | None,
    overrides: Sequence[str],
    runs_dir: Path,
    *,
    sweep_id: str,
    retries: int = DEFAULT_RETRIES,
    keep_ledgers: bool = True,
    mlflow: bool = True,
    tracking_uri: str | None = None,
    experiment: str = "tradesys-sweep",
    rank_by: str = "sharpe",
    engine: str = "event",
    console: Console | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Check the space, run every trial on the connected Ray, write `<runs dir>/<sweep id>/` (results.parquet,
    spec.json, summary.json) and the MLflow runs; return the summary (counts, best trials, where things are).

    ConfigError (one line naming the field) for a bad space, before any task starts.
    """
    from tradesys.backtest.sweep import best, check_engine, check_space, generate_trials, trial_config
    from tradesys.config import load_config, parse_override

    base = load_config(config_path, list(overrides))
    check_space(spec, base, fixed=[parse_override(o)[0] for o in overrides])
    check_engine(engine, spec.params)
    trials = generate_trials(spec)
    configs: list[TradesysConfig | ConfigError] = []
    for t in trials:
        try:
            configs.append(trial_config(config_path, overrides, t.params))
        except ConfigError as exc:
            configs.append(exc)
    sweep_dir = runs_dir.expanduser().resolve() / sweep_id
    sweep_dir.mkdir(parents=True, exist_ok=True)
    base_tree = base.model_dump(mode="json")
    (sweep_dir / "spec.json").write_text(dumps({"sweep_id": sweep_id, **spec.describe(), "base_config": base_tree}))
    jobs = plan_trials(trials, configs, sweep_dir, keep_ledgers, engine)
    ml = _SafeTracker(console or Console(stderr=True))

    def open_tracker() -> None:  # while the first trials run: creating an MLflow SQLite store takes seconds
        if mlflow:
            ml.call(lambda: ml.open(experiment, tracking_uri, runs_dir.expanduser().resolve(), sweep_id, spec,
                                    base_tree, len(trials), engine))

    def log_trial(r: TrialResult) -> None:
        if ml.tracker is not None:
            ml.call(lambda: ml.tracker.log_trial(r))  # type: ignore[union-attr]

    fields = list(spec.params)
    t0 = time.perf_counter()
    results, interrupted = run_trials(jobs, retries=retries, console=console, show_progress=show_progress,
                                      on_submitted=open_tracker, on_result=log_trial)
    wall = time.perf_counter() - t0
    table = write_results(results, fields, sweep_dir)
    counts = {k: sum(r.status == k for r in results) for k in ("ok", "failed", "invalid", "cancelled")}
    if ml.tracker is not None:
        ml.call(lambda: ml.tracker.finish(table, counts))  # type: ignore[union-attr]
    tracker = ml.tracker
    summary = {
        "sweep_id": sweep_id, "sweep_dir": str(sweep_dir), "results": str(table), "search": spec.search,
        "engine": engine, "engines": {e: sum(r.engine == e for r in results) for e in ("event", "vectorized")},
        "trials": len(trials), **counts, "wall_s": wall, "rank_by": rank_by,
        "best": [{"trial": r.trial.index, "params": r.trial.params, **r.metrics} for r in best(results, rank_by)],
        "mlflow": None if not mlflow else {
            "tracking_uri": None if tracker is None else redact_url(tracker.tracking_uri),
            "experiment_id": None if tracker is None else tracker.experiment_id,
            "parent_run_id": None if tracker is None else tracker.parent_id,
            "error": ml.error,
        },
    }
    (sweep_dir / "summary.json").write_text(dumps(summary) + "\n")
    if interrupted:
        raise KeyboardInterrupt
    return summary

