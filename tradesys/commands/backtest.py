"""`tradesys backtest`: one backtest in-process (as always) or on Ray (`--ray`), and `tradesys backtest sweep`.

`tradesys backtest -c x.toml` runs in this process with an in-memory ledger unless `--ledger` names one. With
`--ray` the same backtest runs as a Ray task on the cluster (RAY_ADDRESS / `ray.address`, else a loopback-only
local head that goes away with the command), its ledger a SQLite file under `<ledger.runs_dir>/<run id>/` unless
`--ledger` or `ledger.url` names one, and the summary also in that folder. `tradesys backtest sweep` runs a grid or
random search of strategy, risk and broker parameters, one Ray task per trial (docs/backtesting.md, "Sweeps").
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    invoke_without_command=True,
    help="Backtest the configured strategy (in-process, or on Ray with --ray); `sweep` searches parameters.",
)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="override: section.field=value")]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="print the summary as JSON on stdout (NaN -> null); progress goes to stderr")
]
OutOpt = Annotated[Path | None, typer.Option("--out", help="also write the summary as JSON to this file")]
RetriesOpt = Annotated[int, typer.Option(min=0, max=10, help="Ray task retries after a failure or a lost worker")]
LEDGER_SCHEMES = ("sqlite://", "postgresql://", "postgres://")


@contextlib.contextmanager
def stdout_to_stderr(active: bool) -> Iterator[None]:
    """While Ray runs: Ray's driver prints task-failure notices ("Task ... failed. There are N retries remaining")
    on stdout, which must carry only the JSON summary under --json."""
    if not active:
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield


@app.callback()
def backtest(
    ctx: typer.Context,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    ledger: Annotated[str | None, typer.Option(
        help="ledger URL (default: in memory; with --ray: ledger.url, else <ledger.runs_dir>/<run id>/ledger.db)"
    )] = None,
    json_: JsonOpt = False,
    out: OutOpt = None,
    on_ray: Annotated[bool, typer.Option("--ray", help="run as a Ray task on the cluster (RAY_ADDRESS / "
                                         "ray.address, else a local head), ledger in durable storage")] = False,
    retries: RetriesOpt = 2,
) -> None:
    """Run the same strategy, risk and execution in-process over the replayed data (no actors); --ray: as a Ray
    task on the cluster."""
    if ctx.invoked_subcommand is not None:
        return
    from tradesys.cli import _config, _console, _emit, _fail
    from tradesys.config import ConfigError, DataError, redact_url
    from tradesys.live import summary_table

    cfg = _config(config, set_)
    if ledger is not None and not ledger.startswith(LEDGER_SCHEMES):
        _fail("config", f"--ledger: must start with sqlite:// or postgresql://, got {redact_url(ledger)!r}")
    shown = _console(json_)
    try:
        if on_ray:
            with stdout_to_stderr(json_):
                result = _on_ray(cfg, ledger, retries, shown)
        else:
            result = _in_process(cfg, ledger or "sqlite:///:memory:", shown)
    except DataError as exc:
        _fail("data", str(exc))
    except ConfigError as exc:
        _fail("config", str(exc))
    except RuntimeError as exc:  # RunError: the task failed after its retries, or the local cluster did not start
        _fail("run", str(exc))
    shown.print(summary_table(result))
    _emit(result, json_, out)


def _in_process(cfg: Any, ledger: str, shown: Any) -> dict[str, Any]:
    from rich.progress import Progress

    from tradesys.backtest.runner import run_backtest
    from tradesys.config import redact_url

    with Progress(console=shown, transient=True) as bar:
        task = bar.add_task("backtest", total=None)
        summary, _ = run_backtest(cfg, ledger, on_step=lambda i, n, _r: bar.update(task, completed=i, total=n))
    return {**summary.as_dict(), "run_id": "backtest", "reason": "completed", "ledger_url": redact_url(ledger)}


def ray_ledger_url(cfg: Any, ledger: str | None, run_dir: Path) -> str:
    """`--ledger`, else `ledger.url`, else a SQLite file in the run dir; SQLite paths made absolute (the task may
    run in another working directory)."""
    from tradesys.ledger.sqlite import absolute_sqlite_url

    url = ledger or cfg.ledger.url or f"sqlite:///{run_dir / 'ledger.db'}"
    return absolute_sqlite_url(url)


def run_on_ray(cfg: Any, ledger: str | None, runs_dir: Path, retries: int, shown: Any,
               run_id: str | None = None) -> dict[str, Any]:
    """One backtest as a Ray task on the connected cluster; the summary (strict JSON) also in the run dir."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from tradesys.backtest.distributed import backtest_on_ray
    from tradesys.commands.output import write_json
    from tradesys.config import redact_url, save_run_config
    from tradesys.live import new_run_id

    run_id = run_id or new_run_id()
    run_dir = runs_dir.expanduser().resolve() / run_id
    url = ray_ledger_url(cfg, ledger, run_dir)
    shown.print(f"[bold]Ledger:[/bold] {redact_url(url)}", highlight=False)
    with Progress(SpinnerColumn(), TextColumn(f"[bold blue]backtest {run_id} on Ray"), TimeElapsedColumn(),
                  console=shown, transient=True) as bar:
        bar.add_task("backtest", total=None)
        out = backtest_on_ray(cfg, url, run_dir, retries=retries, name=f"backtest-{run_id}",
                              ledger_field="--ledger" if ledger else "ledger.url")
    result = {**out["summary"], "run_id": run_id, "reason": "completed", "ledger_url": redact_url(url),
              "run_dir": str(run_dir), "attempts": out["attempt"], "seconds": out["seconds"]}
    write_json(run_dir / "summary.json", result)
    save_run_config(cfg, run_dir)
    return result


def _on_ray(cfg: Any, ledger: str | None, retries: int, shown: Any) -> dict[str, Any]:
    from tradesys.live import connect_ray

    _, cluster = connect_ray(cfg, shown)
    try:
        return run_on_ray(cfg, ledger, Path(cfg.ledger.runs_dir), retries, shown)
    finally:
        if cluster is not None:
            import ray

            ray.shutdown()
            cluster.stop(5.0)


@app.command()
def sweep(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="section.field=values: a,b,c | "
                     "range(start,stop[,step]) | uniform(lo,hi) | loguniform(lo,hi) | randint(lo,hi); repeat per "
                     "field")] = None,
    spec: Annotated[Path | None, typer.Option(help="TOML/JSON spec file: a params table "
                    "(field = a list or a string as for --param), optional search, trials, seed")] = None,
    search: Annotated[str | None, typer.Option(help="grid (every point) or random (default: the spec's, else grid)"
                      )] = None,
    trials: Annotated[int | None, typer.Option(min=1, help="random search: number of trials")] = None,
    seed: Annotated[int | None, typer.Option(help="random search: seed (default 0)")] = None,
    retries: RetriesOpt = 2,
    ledgers: Annotated[bool, typer.Option("--ledgers/--no-ledgers", help="keep each trial's ledger as a SQLite "
                       "file in the sweep's folder (--no-ledgers: in memory, faster)")] = True,
    mlflow: Annotated[bool, typer.Option("--mlflow/--no-mlflow", help="log a parent run and one nested run per "
                      "trial to MLflow")] = True,
    mlflow_uri: Annotated[str | None, typer.Option(help="tracking URI (default: $MLFLOW_TRACKING_URI, else "
                          "sqlite:///<runs dir>/mlflow.db)")] = None,
    experiment: Annotated[str, typer.Option(help="MLflow experiment")] = "tradesys-sweep",
    runs_dir: Annotated[Path | None, typer.Option(help="where the sweep's folder goes (default: ledger.runs_dir)"
                        )] = None,
    rank_by: Annotated[str, typer.Option(help="metric the best trials are ranked by")] = "sharpe",
    engine: Annotated[str, typer.Option(help="event: the event-driven loop (what live runs); vectorized: the "
                      "vectorised engine (trend/weights, market orders, no pre-trade gate); auto: vectorized where "
                      "it applies, else event")] = "auto",
    json_: JsonOpt = False,
    out: OutOpt = None,
) -> None:
    """Grid or random search over strategy, risk and broker parameters: one Ray task per trial, results in
    <runs dir>/<sweep id>/results.parquet and in MLflow."""
    from tradesys.backtest.sweep import (
        METRICS,
        check_engine,
        check_space,
        generate_trials,
        load_spec,
        make_spec,
        parse_param,
    )
    from tradesys.cli import _config, _console, _emit, _fail
    from tradesys.config import ConfigError, parse_override

    cfg = _config(config, set_)
    try:
        if rank_by not in METRICS:
            raise ConfigError(f"--rank-by: must be one of {', '.join(METRICS)}, got {rank_by!r}")
        file = load_spec(spec) if spec is not None else None
        the_spec = make_spec([parse_param(p) for p in param or []], search=search, trials=trials, seed=seed,
                             file=file)
        check_space(the_spec, cfg, fixed=[parse_override(o)[0] for o in set_ or []])
        check_engine(engine, the_spec.params, cfg)
        n = len(generate_trials(the_spec))
    except ConfigError as exc:
        _fail("config", str(exc))
    shown = _console(json_)
    try:
        with stdout_to_stderr(json_):
            summary = run_sweep_on_ray(cfg, the_spec, config, set_ or [], runs_dir or Path(cfg.ledger.runs_dir),
                                       shown,
                                       retries=retries, keep_ledgers=ledgers, mlflow=mlflow,
                                       tracking_uri=mlflow_uri, experiment=experiment, rank_by=rank_by, n_trials=n,
                                       engine=engine)
    except ConfigError as exc:
        _fail("config", str(exc))
    except RuntimeError as exc:
        _fail("run", str(exc))
    shown.print(sweep_table(summary))
    _emit(summary, json_, out)


def new_sweep_id() -> str:
    from tradesys.live import new_run_id

    return "sweep-" + new_run_id().removeprefix("run-")


def run_sweep_on_ray(cfg: Any, spec: Any, config: Path | None, overrides: list[str], runs_dir: Path, shown: Any,
                     *, n_trials: int, connect: bool = True, **kw: Any) -> dict[str, Any]:
    """Connect to Ray (or start a local head), run the sweep, stop what this call started."""
    from tradesys.backtest.distributed import run_sweep
    from tradesys.live import connect_ray

    sweep_id = new_sweep_id()
    shown.print(f"[bold]Sweep {sweep_id}[/bold]: {n_trials} trials ({spec.search}), folder "
                f"{runs_dir.expanduser().resolve() / sweep_id}", highlight=False)
    cluster = connect_ray(cfg, shown)[1] if connect else None
    try:
        return run_sweep(spec, config, overrides, runs_dir, sweep_id=sweep_id, console=shown, **kw)
    finally:
        if cluster is not None:
            import ray

            ray.shutdown()
            cluster.stop(5.0)


def sweep_table(s: dict[str, Any]) -> Any:
    """The best trials and the counts, for the terminal."""
    from rich.table import Table

    counts = ", ".join(f"{s[k]} {k}" for k in ("ok", "failed", "invalid", "cancelled") if s.get(k))
    t = Table(title=f"sweep {s['sweep_id']}: {s['trials']} trials ({counts}); best by {s['rank_by']}")
    params = list(s["best"][0]["params"]) if s["best"] else []
    for c in ["trial", *params, "sharpe", "return", "max dd", "orders"]:
        t.add_column(c, justify="right")
    for b in s["best"]:
        sharpe = "-" if b["sharpe"] is None else f"{b['sharpe']:.2f}"
        t.add_row(str(b["trial"]), *(str(b["params"][p]) for p in params), sharpe, f"{b['total_return']:+.2%}",
                  f"{b['max_drawdown']:.2%}", str(b["orders"]))
    t.caption = f"results: {s['results']}" + (f"; MLflow: {s['mlflow']['tracking_uri']}" if s.get("mlflow") else "")
    return t


@app.command()
def walkforward(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="section.field=values, as for sweep "
                     "(the grid the in-sample windows choose from)")] = None,
    spec: Annotated[Path | None, typer.Option(help="TOML/JSON spec file, as for sweep")] = None,
    is_span: Annotated[str, typer.Option("--is", help="in-sample window: a span such as 2Y, 18M, 26W, 90D")] = "2Y",
    oos_span: Annotated[str, typer.Option("--oos", help="out-of-sample window (and the step between windows)"
                        )] = "6M",
    gap: Annotated[int, typer.Option(min=0, help="bars left out between in- and out-of-sample (purge)")] = 0,
    anchored: Annotated[bool, typer.Option("--anchored", help="in-sample windows all start at the first bar "
                        "(expanding) instead of rolling")] = False,
    objective: Annotated[str, typer.Option(help="in-sample choice: sharpe, total_return or mean")] = "sharpe",
    pbo_splits: Annotated[int, typer.Option(min=2, help="CSCV blocks for the probability of backtest "
                          "overfitting over the out-of-sample span (even)")] = 16,
    plot: Annotated[Path | None, typer.Option(help="write the in- and out-of-sample equity curves to this PNG"
                    )] = None,
    json_: JsonOpt = False,
    out: OutOpt = None,
) -> None:
    """Walk-forward optimisation on the vectorised engine: in each window the grid point with the best in-sample
    objective is chosen, then run out of sample; prints the chosen parameters per window, the stitched
    out-of-sample result next to the in-sample one, the PBO (CSCV) and the deflated Sharpe of the grid."""
    from tradesys.cli import _config, _console, _emit, _fail
    from tradesys.config import ConfigError

    _config(config, set_)
    try:
        summary = run_walkforward(config, set_ or [], param or [], spec, is_span=is_span, oos_span=oos_span,
                                  gap=gap, anchored=anchored, objective=objective, pbo_splits=pbo_splits, plot=plot)
    except (ConfigError, ValueError) as exc:
        _fail("config", str(exc))
    shown = _console(json_)
    shown.print(walkforward_table(summary))
    _emit(summary, json_, out)


def run_walkforward(config: Path | None, overrides: list[str], params: list[str], spec_file: Path | None, *,
                    is_span: str, oos_span: str, gap: int, anchored: bool, objective: str, pbo_splits: int,
                    plot: Path | None) -> dict[str, Any]:
    """The walk-forward behind the command (tradesys.backtest.walkforward), plus PBO and DSR of the grid."""
    from tradesys.backtest.overfit import cscv_pbo, deflated_sharpe_of_trials
    from tradesys.backtest.sweep import generate_trials, load_spec, make_spec, parse_param, trial_config
    from tradesys.backtest.vectorized import bars_from_config
    from tradesys.backtest.walkforward import config_evaluator, grid_returns, walk_forward_configs
    from tradesys.config import ConfigError

    if objective not in ("sharpe", "total_return", "mean"):
        raise ConfigError(f"--objective: must be sharpe, total_return or mean, got {objective!r}")
    the_spec = make_spec([parse_param(p) for p in params], file=load_spec(spec_file) if spec_file else None)
    configs, labels = [], []
    for t in generate_trials(the_spec):
        try:
            configs.append(trial_config(config, overrides, t.params))
        except ConfigError:
            continue  # a combination that is invalid as a whole (fast >= slow) is not a candidate
        labels.append(t.params)
    if not configs:
        raise ConfigError("--param: every combination is invalid (e.g. strategy.fast >= strategy.slow)")
    if configs[0].strategy.name not in ("trend", "weights") or configs[0].strategy.order_type != "market":
        raise ConfigError("strategy.name: walk-forward runs on the vectorised engine: trend or weights strategies "
                          "with market orders")
    if configs[0].execution.algo:
        raise ConfigError("execution.algo: walk-forward runs on the vectorised engine, which sends every order as "
                          "is (execution algorithms run on the event engine)")
    bars, n_symbols, bpy = bars_from_config(configs[0])
    try:
        result, ts_ns = walk_forward_configs(configs, labels, is_span=is_span, oos_span=oos_span, gap=gap,
                                             anchored=anchored, objective=objective, bars=bars)
    except ValueError as exc:
        text = str(exc).replace("is_span", "--is").replace("oos_span", "--oos")
        raise ConfigError(text) from None
    result.check_no_lookahead()
    summary = result.summary(ts_ns)
    summary["grid"] = len(configs)
    start, end = result.windows[0].oos_start, result.windows[-1].oos_end
    if len(configs) >= 2:
        m = grid_returns(config_evaluator(configs, bars, n_symbols, bpy), result.grid, start, end)
        splits = pbo_splits - pbo_splits % 2
        summary["pbo"] = float(cscv_pbo(m, min(splits, 2 * (m.shape[0] // 4) or 2)).pbo)
        summary["deflated_sharpe"] = deflated_sharpe_of_trials(m).as_dict()
    if plot is not None:
        _plot_walkforward(result, ts_ns, plot)
        summary["plot"] = str(plot)
    return summary


def _plot_walkforward(result: Any, ts_ns: Any, path: Path) -> None:
    """Two panels: the stitched out-of-sample equity on the calendar (window starts marked), and the chained
    in-sample equity by in-sample bar (rolling in-sample windows overlap, so it has no calendar of its own)."""
    import numpy as np
    import pandas as pd
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 7))
    top, bottom = fig.subplots(2, 1)
    dates = pd.to_datetime(np.asarray(ts_ns))
    top.plot(dates[result.oos_index], result.oos_equity, color="C0")
    for w in result.windows:
        top.axvline(dates[w.oos_start], color="grey", lw=0.5, alpha=0.6)
    top.set_title(f"stitched out of sample: Sharpe {result.oos_sharpe:.2f}, {len(result.windows)} windows")
    top.set_ylabel("growth of 1")
    bottom.plot(np.arange(result.is_equity.size), result.is_equity, color="C1")
    bottom.set_title(f"in sample, each window's winner chained: Sharpe {result.is_sharpe:.2f}")
    bottom.set_xlabel("in-sample bar")
    bottom.set_ylabel("growth of 1")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def walkforward_table(s: dict[str, Any]) -> Any:
    from rich.table import Table

    params = [p for p in (s["windows"][0]["params"] if s["windows"] else {}) if p != "trial"]
    t = Table(title=f"walk-forward over {s['grid']} configurations: {len(s['windows'])} windows")
    t.add_column("#", justify="right")
    t.add_column("in sample", no_wrap=True)
    t.add_column("out of sample", no_wrap=True)
    for c in [*(p.rsplit(".", 1)[-1] for p in params), "IS SR", "OOS SR"]:
        t.add_column(c, justify="right")
    for w in s["windows"]:
        t.add_row(str(w["window"]), "..".join(w.get("is_dates", map(str, w["is"]))),
                  "..".join(w.get("oos_dates", map(str, w["oos"]))), *(str(w["params"][p]) for p in params),
                  f"{w['is_sharpe']:.2f}", f"{w['oos_sharpe']:.2f}")
    extra = ""
    if "pbo" in s:
        extra = f"; PBO {s['pbo']:.2f}; deflated Sharpe {s['deflated_sharpe'].get('dsr', float('nan')):.2f}"
    t.caption = (f"stitched out of sample: Sharpe {s['oos_sharpe']:.2f}, return {s['oos_total_return']:+.2%} over "
                 f"{s['oos_bars']} bars; in sample (chained) Sharpe {s['is_sharpe']:.2f}{extra}")
    return t
