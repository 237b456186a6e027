"""Train the PPO portfolio agent as a Ray job (walk-forward: train, select, and a test period never loaded).

    RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/rl_train.py --symbols AAPL,MSFT,JPM --train 2010-01-01:2016-12-31 \\
        --select 2017-01-01:2018-12-31 --test 2019-01-01:2022-12-31 --iterations 50 --num-env-runners 2 --json
    python jobs/rl_train.py --tune --num-samples 4 --seeds 0,1,2 --iterations 20    # Ray Tune (ASHA) instead

A thin argparse shell around `tradesys.rl.train.train_ppo` / `tradesys.rl.tune.tune_ppo`; the flags are those of
``tradesys rl train`` / ``tradesys rl tune`` (`tradesys.rl.train.OPTION_DEFAULTS`). Inside a Ray job RAY_ADDRESS
points at the cluster and the env runners (or Tune trials) run there. A job runs in Ray's temporary copy of the
working directory, so checkpoints and the MLflow store go to ``--runs-dir`` (default ``$TRADESYS_RUNS_DIR``, else
``~/tradesys/runs``; a relative path is refused). With ``--tune``, Tune's results and checkpoints and the MLflow
artifacts go to ``--storage`` (a path or ``s3://bucket/prefix``; default ``$TRADESYS_STORAGE``, else the runs
directory; `tradesys.storage`); a single PPO run (no ``--tune``) checkpoints under the runs directory.
Prints one line per iteration on stderr (not with ``--quiet``),
and with ``--json`` the summary as strict JSON (NaN as null) on the last stdout line; ``--out FILE`` writes it.
Bad flags: one line ``error: --flag: reason`` and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tradesys.rl.train import OPTION_DEFAULTS, flag_message, load_split_market, settings_from_options

_HELP = {
    "source": "sp500_stocks, us_indices or synthetic", "symbols": "comma-separated (default: all the source has)",
    "features": "comma-separated built-in features (default: all)", "train": "START:END of the train period",
    "select": "START:END of the selection (validation) period", "test": "START:END of the held-out test period",
    "episode_length": "steps per training episode (0: the whole train period)",
    "hidden": "comma-separated layer sizes of the policy and value networks",
    "eval_every": "checkpoint and score on the selection period every N iterations",
    "select_metric": "sharpe or log_return on the selection period", "mlflow_uri": "default sqlite:///<runs-dir>/mlflow.db",
}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for key, default in OPTION_DEFAULTS.items():
        flag = "--lambda" if key == "lambda_" else "--" + key.replace("_", "-")
        if key == "risk_limits":
            ap.add_argument("--no-risk-limits", dest="risk_limits", action="store_false",
                            help="no pre-trade limits in the environment (default: RiskConfig's)")  # fmt: skip
        elif key == "runs_dir":
            ap.add_argument("--runs-dir", default=None, help="checkpoints and MLflow store (absolute; default "
                            "$TRADESYS_RUNS_DIR, else ~/tradesys/runs)")  # fmt: skip
        else:
            kind = str if default is None else type(default)
            ap.add_argument(flag, dest=key, type=kind, default=default, help=_HELP.get(key))
    ap.add_argument("--storage", default=None, help="tune: results, checkpoints and MLflow artifacts, a path or "
                    "s3://bucket/prefix (default $TRADESYS_STORAGE, else --runs-dir)")  # fmt: skip
    ap.add_argument("--tune", action="store_true", help="Ray Tune (ASHA) over PPO hyper-parameters x seeds")
    ap.add_argument("--num-samples", type=int, default=4, help="tune: configurations drawn")
    ap.add_argument("--seeds", default="0,1", help="tune: comma-separated seeds, each run with every configuration")
    ap.add_argument("--grace-period", type=int, default=1, help="tune: ASHA iterations before a trial can stop")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    ap.add_argument("--out", type=Path, default=None, help="also write the summary as JSON to this file")
    ap.add_argument("--quiet", action="store_true", help="no per-iteration lines")
    return ap.parse_args(argv)


def _runs_dir(given: str | None) -> str:
    from tradesys.live import durable_runs_dir

    if given is None:
        return str(durable_runs_dir())
    if not Path(given).expanduser().is_absolute():
        raise ValueError(f"runs_dir: {given!r} is relative: in a Ray job it would land in the job's temporary "
                         "working directory and be deleted with it; give an absolute path")  # fmt: skip
    return given


def _seeds(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"seeds: {text!r} is not comma-separated integers (e.g. 0,1,2)") from None


def _printer(quiet: bool) -> Any:
    def show(ev: dict[str, Any]) -> None:
        if quiet:
            return
        if ev.get("event") == "iteration":
            m, sel = ev["metrics"], ev.get("selection")
            line = (f"iter {ev['iteration']}/{ev['iterations']}: return {m['episode_return_mean']:.4g}, "
                    f"{m['env_steps_per_s']:.0f} env steps/s, policy loss {m['policy_loss']:.4g}, "
                    f"vf loss {m['vf_loss']:.4g}, entropy {m['entropy']:.4g}")  # fmt: skip
            if sel is not None:
                line += f"; selection sharpe {sel['sharpe']}, log return {sel['log_return']:.4g}"
            print(line, file=sys.stderr, flush=True)
        elif ev.get("event") in ("stage", "note", "trial_complete"):
            print({k: v for k, v in ev.items() if k != "summary"}, file=sys.stderr, flush=True)

    return show


def main(argv: list[str] | None = None) -> int:
    from tradesys.core.jsonsafe import dumps

    args = parse_args(argv)
    opts = {k: getattr(args, k) for k in OPTION_DEFAULTS}
    try:
        opts["runs_dir"] = _runs_dir(args.runs_dir)
        data, env, split, ppo = settings_from_options(**opts)
        seeds = _seeds(args.seeds) if args.tune else []
        if args.tune:
            from tradesys.storage import resolve_storage

            resolve_storage(args.storage, opts["runs_dir"])  # a bad --storage / $TRADESYS_STORAGE: one line, now
        market = load_split_market(data, env, split)
        if args.tune:
            from tradesys.rl.tune import tune_ppo

            summary = tune_ppo(market, env, split, ppo, num_samples=args.num_samples, seeds=seeds,
                               grace_period=args.grace_period, progress=_printer(args.quiet),
                               storage=args.storage)  # fmt: skip
        else:
            from tradesys.rl.train import train_ppo

            summary = train_ppo(market, env, split, ppo, progress=_printer(args.quiet))
    except ValueError as exc:  # ConfigError and DataError included: the setting and the reason, one line
        print(f"error: {' '.join(flag_message(str(exc)).split())}", file=sys.stderr)
        return 2
    text = dumps(summary, indent=None)
    if args.out is not None:
        args.out.write_text(text)
    if args.json:
        print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
