"""Run the live trading loop as a Ray job.

    RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python jobs/live.py --set data.start=2020-01-01 --json

Ray 2.60 clusters use token authentication: the `ray job submit` client sends the token (from
`~/.ray/auth_token`, `$RAY_AUTH_TOKEN_PATH` or `$RAY_AUTH_TOKEN`) only when `RAY_AUTH_MODE=token` is set in
its environment. Inside a job, RAY_ADDRESS points at the cluster, so the Supervisor and its children run there.

A job runs in Ray's temporary copy of the working directory, deleted when the job ends, so without
`ledger.url` the ledger goes to `$TRADESYS_RUNS_DIR/<run id>/ledger.db` (default `~/tradesys/runs`), never
there. `--json` prints the summary as strict JSON (NaN -> null) on the last stdout line; `--out PATH` writes it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tradesys.config import ConfigError, TradesysConfig, load_config
from tradesys.live import RunError, durable_runs_dir, run_live


def job_config(cfg: TradesysConfig) -> TradesysConfig:
    """The job's ledger on a durable path: a relative one would land in Ray's temporary working directory."""
    if cfg.ledger.url is not None:
        return cfg
    if "runs_dir" not in cfg.ledger.model_fields_set:
        ledger = cfg.ledger.model_copy(update={"runs_dir": str(durable_runs_dir())})
        return cfg.model_copy(update={"ledger": ledger})
    if not Path(cfg.ledger.runs_dir).expanduser().is_absolute():
        raise ConfigError(
            f"ledger.runs_dir: {cfg.ledger.runs_dir!r} is relative: in a Ray job it would land in the job's temporary"
            " working directory and be deleted with it; give an absolute path, or set ledger.url"
        )
    return cfg


def main(argv: list[str] | None = None) -> int:
    from tradesys.commands.output import dumps, error_line, write_json

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", "-c", type=Path, default=None, help="TOML config file")
    ap.add_argument("--set", "-s", action="append", default=[], dest="overrides", help="section.field=value")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    ap.add_argument("--out", type=Path, default=None, help="also write the summary as JSON to this file")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    out: Path | None = args.out
    try:
        cfg = job_config(load_config(args.config, args.overrides))
        summary = run_live(cfg, show_progress=not args.quiet)
    except (ConfigError, RunError) as exc:
        print(error_line("config" if isinstance(exc, ConfigError) else "run", exc), file=sys.stderr)
        return 2
    if out is not None:
        write_json(out, summary)
    if args.json:
        print(dumps(summary, indent=None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
