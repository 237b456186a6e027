"""What a Ray Compiled Graph's actors cost while they wait for input (the live loop's graph mode, issue 16).

1. CPU per actor of an idle graph: a chain of `--actors` actors, compiled and executed once, then left waiting on
   its input channel for `--idle-s` seconds; each actor's CPU time from `/proc/<pid>/stat`, and again after the
   graph's teardown (the same actors, no graph).
2. Whether that waiting slows other work: the latency of an ordinary actor-to-actor call to an actor that does
   `--work-ms` of CPU work, with the idle graph of `--actors` actors present and without it (the peer), medians
   and p99 over `--calls` calls, the two alternated `--repeats` times in one run.

    .venv/bin/python benchmarks/graph_idle.py [--actors 5] [--idle-s 5] [--calls 500] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import ray


@ray.remote(num_cpus=0)
class Stage:
    def f(self, x: int) -> int:
        return x

    def pid(self) -> int:
        return os.getpid()

    def work(self, seconds: float) -> float:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            pass
        return seconds


@ray.remote(num_cpus=0)
class Caller:
    def bench(self, target: Any, n: int, seconds: float) -> list[float]:
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            ray.get(target.work.remote(seconds))
            out.append((time.perf_counter() - t0) * 1e3)
        return out


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _cores_used(pids: list[int], seconds: float) -> list[float]:
    before, t0 = [_cpu_s(p) for p in pids], time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    return [round((_cpu_s(p) - b) / wall, 2) for p, b in zip(pids, before, strict=True)]


def _compile(actors: list[Any]) -> Any:
    from ray.dag import InputNode

    with InputNode() as node:
        out = node
        for a in actors:
            out = a.f.bind(out)
    graph = out.experimental_compile()
    graph.execute(0).get(timeout=60)  # the loops run: every actor now waits on its input channel
    return graph


def _p(xs: list[float], q: float) -> float:
    return sorted(xs)[min(int(q * len(xs)), len(xs) - 1)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--actors", type=int, default=5)
    ap.add_argument("--idle-s", type=float, default=5.0)
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--work-ms", type=float, default=0.4)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    print(f"graph_idle: ray {ray.__version__}, {os.cpu_count()} cores")

    actors = [Stage.remote() for _ in range(args.actors)]
    pids = ray.get([a.pid.remote() for a in actors])
    graph = _compile(actors)
    print(f"1. idle graph of {args.actors} actors, cores used per actor over {args.idle_s:.0f} s: "
          f"{_cores_used(pids, args.idle_s)}")
    graph.teardown()
    print(f"   the same actors after teardown: {_cores_used(pids, args.idle_s)}")

    target, caller = Stage.remote(), Caller.remote()
    ray.get(caller.bench.remote(target, 50, args.work_ms / 1e3))  # warm-up
    runs: dict[str, list[float]] = {"without a graph": [], f"{args.actors} idle graph actors": []}
    for _ in range(args.repeats):
        runs["without a graph"] += ray.get(caller.bench.remote(target, args.calls, args.work_ms / 1e3))
        graph = _compile(actors)
        runs[f"{args.actors} idle graph actors"] += ray.get(caller.bench.remote(target, args.calls, args.work_ms / 1e3))
        graph.teardown()
    print(f"2. actor-to-actor call to an actor doing {args.work_ms} ms of work, {args.calls} calls x {args.repeats}:")
    for name, xs in runs.items():
        print(f"   {name:<24} p50 {statistics.median(xs):.2f} ms  p99 {_p(xs, 0.99):.2f} ms")
    base = statistics.median(runs["without a graph"])
    print(f"   ratio p50 with / without: {statistics.median(runs[f'{args.actors} idle graph actors']) / base:.2f}")
    ray.shutdown()


if __name__ == "__main__":
    main()
