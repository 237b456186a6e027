"""A CPU-hungry Ray job for tests/test_cluster_local.py: tasks that each hold one CPU (and one that needs the
simulated GPU) for a while, so the autoscaler must add workers. Prints one JSON line: where each task ran."""

from __future__ import annotations

import json
import sys
import time

import ray


@ray.remote(num_cpus=1)
def burn(seconds: float) -> str:
    """Hold a CPU (busy, as real work would) and report the node it ran on."""
    end = time.monotonic() + seconds
    x = 0
    while time.monotonic() < end:
        x += sum(range(1000))
    return ray.get_runtime_context().get_node_id()


def main() -> int:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 20.0
    ray.init()
    cpu = [burn.remote(seconds) for _ in range(2)]
    gpu = burn.options(resources={"sim_gpu": 1}).remote(seconds)
    print(json.dumps({"cpu_nodes": ray.get(cpu), "gpu_node": ray.get(gpu)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
