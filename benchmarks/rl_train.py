"""PPO training throughput (env steps per second) with 1 and 2 env runners on this machine (issue 12 benchmark).

The same `tradesys rl train` loop (RLlib new API stack, `tradesys.rl.train.train_ppo`) on 20 S&P 500 stocks,
2010-2018 (train 2010-2016, selection 2017-2018), `train_batch_size` env steps per iteration. Throughput is env
steps over each iteration's whole wall time (sampling and learning), the median over the iterations after the
first (which warms up the runners). Each layout runs in its own local Ray and its own MLflow store.

    .venv/bin/python benchmarks/rl_train.py [--iterations 4] [--batch 4000] [--runners 1,2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4000)
    ap.add_argument("--runners", default="1,2", help="comma-separated env-runner counts")
    ap.add_argument("--envs-per-runner", type=int, default=8)
    args = ap.parse_args()

    import ray

    from tradesys.rl.train import load_split_market, settings_from_options, train_ppo

    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    rows = []
    for runners in [int(x) for x in args.runners.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            data, env, split, ppo = settings_from_options(
                iterations=args.iterations, num_env_runners=runners, num_envs_per_env_runner=args.envs_per_runner,
                train_batch_size=args.batch, minibatch_size=256, num_epochs=2, eval_every=args.iterations,
                runs_dir=tmp, mlflow_uri=f"sqlite:///{tmp}/mlflow.db")
            market = load_split_market(data, env, split)
            ray.init(num_cpus=max(2, runners + 1), include_dashboard=False, log_to_driver=False)
            steps: list[float] = []

            def on_event(ev: dict, steps: list[float] = steps) -> None:
                if ev.get("event") == "iteration":
                    steps.append(float(ev["metrics"]["env_steps_per_s"]))

            t0 = time.perf_counter()
            train_ppo(market, env, split, ppo, progress=on_event)
            wall = time.perf_counter() - t0
            ray.shutdown()
        after_first = steps[1:] or steps
        rows.append((runners, statistics.median(after_first), wall))
        print(f"env runners {runners}: median {statistics.median(after_first):,.0f} env steps/s "
              f"(iterations: {', '.join(f'{s:,.0f}' for s in steps)}); whole run {wall:.1f} s", flush=True)
    if len(rows) > 1:
        base = rows[0][1]
        for runners, med, _ in rows[1:]:
            print(f"ratio {runners} runners / {rows[0][0]}: {med / base:.2f}x")


if __name__ == "__main__":
    main()
