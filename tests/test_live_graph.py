"""`StepGraph` on a real local Ray: a slow step is waited for, a dead actor is a fault (never a hang), and the
graph compiles again once Ray has restarted the actor.

The graph's four actors here are small stand-ins with the live children's graph-method signatures, so a step can
be made slow or an actor killed at a chosen moment; the trading actors themselves run in the graph in
tests/test_live_loop.py and tests/test_live_recovery.py (parity with the backtest, crashes, a kill of each one).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import ray

from tradesys.actors.graph import GRAPH_FAULTS, StepGraph


@ray.remote(num_cpus=0, max_restarts=2, max_task_retries=0)
class _Source:
    def __init__(self, pause_s: float) -> None:
        self.pause_s = pause_s

    def graph_next(self, last_ts: int) -> tuple[int, Any]:
        time.sleep(self.pause_s)
        return (last_ts + 1, [last_ts + 1]) if last_ts < 3 else (-1, None)


@ray.remote(num_cpus=0)
class _Exec:
    def graph_mark(self, batch: tuple[int, Any]) -> tuple[int, Any]:
        return batch[0], batch[1]

    def graph_record(self, marked: tuple[int, Any], decided: tuple[int, Any], checked: tuple[int, Any]) -> Any:
        return marked[0], (marked[1], decided[1], checked[1])


@ray.remote(num_cpus=0)
class _Strategy:
    def graph_decide(self, batch: tuple[int, Any], marked: tuple[int, Any]) -> tuple[int, Any]:
        return batch[0], "orders"


@ray.remote(num_cpus=0)
class _Risk:
    def graph_check(self, marked: tuple[int, Any], decided: tuple[int, Any]) -> tuple[int, Any]:
        return marked[0], "checked"


def _children(pause_s: float) -> dict[str, Any]:
    return {"market_data": _Source.remote(pause_s), "execution": _Exec.remote(), "strategy": _Strategy.remote(),
            "risk": _Risk.remote()}


@pytest.mark.ray
@pytest.mark.slow
def test_a_slow_step_is_waited_for_and_a_dead_actor_is_a_fault(ray_session: None) -> None:
    children = _children(pause_s=1.0)
    graph = StepGraph(children, wait_s=0.2).compile()  # every step outlasts several waits
    try:
        assert graph.step(0) == (1, None, ([1], "orders", "checked"))
        assert graph.step(1)[0] == 2
        # kill the source while a step waits on it: the step raises a graph fault instead of hanging
        threading.Timer(0.3, lambda: ray.kill(children["market_data"], no_restart=False)).start()
        t0 = time.monotonic()
        with pytest.raises(GRAPH_FAULTS):
            graph.step(2)
        assert time.monotonic() - t0 < 60
    finally:
        graph.teardown()
    # Ray restarts the source; a new graph over the same handles runs the step again
    again = StepGraph(children, wait_s=0.2)
    again.wait_alive(deadline_s=120)
    again.compile()
    try:
        assert again.step(2)[0] == 3
        assert again.step(3)[0] == -1  # the end of the data
    finally:
        again.teardown()
