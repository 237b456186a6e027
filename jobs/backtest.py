"""Run a backtest (or a parameter sweep) as a Ray job: the backtest itself is a Ray task, so it lands on a worker.

    RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 -- \
        python jobs/backtest.py --set data.start=2020-01-01 --json
    RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 -- \
        python jobs/backtest.py --param strategy.fast=10,20 --param "strategy.slow=range(50,150,50)" --json

A job runs in Ray's temporary copy of the working directory, deleted when the job ends, so the run's folder is
`$TRADESYS_RUNS_DIR/<run id>/` (default `~/tradesys/runs`; an explicit `ledger.runs_dir` must be absolute): the
ledger (`ledger.db`, unless `--ledger` or `ledger.url` names a PostgreSQL or SQLite URL) and `summary.json`. With
`--param`/`--spec` the job runs a sweep instead (`<runs dir>/<sweep id>/results.parquet`, MLflow runs; see
docs/backtesting.md). The summary is strict JSON (NaN -> null): on stdout with `--json` (one line), in `--out PATH`.
Exit code 2 with one `config error:`/`data error:`/`run error:` line on stderr when it fails.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from tradesys.config import ConfigError, DataError, TradesysConfig, load_config


def job_runs_dir(cfg: TradesysConfig) -> Path:
    """The run folders' parent: `ledger.runs_dir` if set (absolute only), else `$TRADESYS_RUNS_DIR`/~/tradesys/runs.

    A relative folder would land in the job's temporary working directory and be deleted with it.
    """
    from tradesys.live import durable_runs_dir

    if "runs_dir" not in cfg.ledger.model_fields_set:
        return durable_runs_dir()
    if not Path(cfg.ledger.runs_dir).expanduser().is_absolute():
        raise ConfigError(
            f"ledger.runs_dir: {cfg.ledger.runs_dir!r} is relative: in a Ray job it would land in the job's temporary"
            " working directory and be deleted with it; give an absolute path, or leave it unset"
        )
    return Path(cfg.ledger.runs_dir).expanduser()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", "-c", type=Path, default=None, help="TOML config file")
    ap.add_argument("--set", "-s", action="append", default=[], dest="overrides", help="section.field=value")
    ap.add_argument("--ledger", default=None, help="ledger URL (default: ledger.url, else <run dir>/ledger.db)")
    ap.add_argument("--retries", type=int, default=2, help="Ray task retries after a failure or a lost worker")
    ap.add_argument("--param", "-p", action="append", default=[], help="sweep: section.field=values (repeat)")
    ap.add_argument("--spec", type=Path, default=None, help="sweep: TOML/JSON spec file")
    ap.add_argument("--search", choices=["grid", "random"], default=None, help="sweep: grid or random")
    ap.add_argument("--trials", type=int, default=None, help="sweep: random search trials")
    ap.add_argument("--seed", type=int, default=None, help="sweep: random search seed")
    ap.add_argument("--engine", choices=["event", "vectorized", "auto"], default="event",
                    help="sweep: event-driven, vectorised, or vectorised where it applies")
    ap.add_argument("--no-mlflow", action="store_true", help="sweep: do not log to MLflow")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    ap.add_argument("--out", type=Path, default=None, help="also write the summary as JSON to this file")
    ap.add_argument("--quiet", action="store_true", help="no progress output")
    args = ap.parse_args(argv)
    if args.retries < 0:
        ap.error("--retries: must be >= 0")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The job's body: check everything, join the cluster, run; the summary (raises ConfigError/DataError/RunError)."""
    from tradesys.backtest.sweep import check_engine, check_space, generate_trials, load_spec, make_spec, parse_param
    from tradesys.commands.backtest import LEDGER_SCHEMES, run_on_ray, run_sweep_on_ray
    from tradesys.config import parse_override, redact_url
    from tradesys.data import check_data
    from tradesys.live import connect_ray

    cfg = load_config(args.config, args.overrides)
    check_data(cfg.data)
    runs_dir = job_runs_dir(cfg)
    if args.ledger is not None and not args.ledger.startswith(LEDGER_SCHEMES):
        raise ConfigError(f"--ledger: must start with sqlite:// or postgresql://, got {redact_url(args.ledger)!r}")
    shown = Console(stderr=True, quiet=args.quiet)
    sweeping = bool(args.param or args.spec)
    if sweeping:
        if args.ledger is not None:
            raise ConfigError("--ledger: a sweep writes one SQLite ledger per trial in its folder; drop --ledger")
        spec = make_spec([parse_param(p) for p in args.param], search=args.search, trials=args.trials,
                         seed=args.seed, file=load_spec(args.spec) if args.spec else None)
        check_space(spec, cfg, fixed=[parse_override(o)[0] for o in args.overrides])
        check_engine(args.engine, spec.params)
        n = len(generate_trials(spec))
    _, cluster = connect_ray(cfg, shown)  # inside a job: RAY_ADDRESS names the cluster
    try:
        if sweeping:
            return run_sweep_on_ray(cfg, spec, args.config, args.overrides, runs_dir, shown, n_trials=n,
                                    connect=False, retries=args.retries, mlflow=not args.no_mlflow, engine=args.engine,
                                    show_progress=not args.quiet)
        return run_on_ray(cfg, args.ledger, runs_dir, args.retries, shown)
    finally:
        if cluster is not None:
            import ray

            ray.shutdown()
            cluster.stop(5.0)


def main(argv: list[str] | None = None) -> int:
    from tradesys.commands.backtest import stdout_to_stderr
    from tradesys.commands.output import dumps, error_line, write_json
    from tradesys.live import RunError

    args = parse_args(argv)
    try:
        with stdout_to_stderr(args.json):
            summary = run(args)
    except (DataError, ConfigError, RunError) as exc:
        kind = "data" if isinstance(exc, DataError) else "config" if isinstance(exc, ConfigError) else "run"
        print(error_line(kind, exc), file=sys.stderr)
        return 2
    if args.out is not None:
        write_json(args.out, summary)
    if args.json:
        print(dumps(summary, indent=None), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
