"""Run the live trading loop as a Ray job.

    ray job submit --working-dir . -- python jobs/live.py --set data.start=2020-01-01 --json summary.json

Inside a job, RAY_ADDRESS points at the cluster, so the Supervisor and its children are scheduled there.
The summary is printed as JSON on the last line (and written to --json if given).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tradesys.config import ConfigError, load_config
from tradesys.live import run_live


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", "-c", type=Path, default=None, help="TOML config file")
    ap.add_argument("--set", "-s", action="append", default=[], dest="overrides", help="section.field=value")
    ap.add_argument("--json", type=Path, default=None, help="write the summary here")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    summary = run_live(cfg, show_progress=not args.quiet)
    text = json.dumps(summary, default=str)
    if args.json:
        args.json.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
