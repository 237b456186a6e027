"""`StepGraph` on a real local Ray: a slow step is waited for, a dead actor is a fault (never a hang), and the
graph compiles again once Ray has restarted the actor.

The graph's five actors here are small stand-ins with the live children's graph-method signatures, so a step can
be made slow or an actor killed at a chosen moment; the trading actors themselves run in the graph in
tests/test_live_loop.py and tests/test_live_recovery.py (parity with the backtest, crashes, a kill of each one).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import pytest
import ray

from tradesys.actors.graph import (
    GRAPH_FAULTS,
    GraphStageActor,
    GraphStalled,
    StepGraph,
    activity_of,
    graph_stage,
    graph_stalled,
)


class _Activity(GraphStageActor):
    pass


@ray.remote(num_cpus=0, max_restarts=2, max_task_retries=0)
class _Source(_Activity):
    def __init__(self, pause_s: float) -> None:
        super().__init__()
        self.pause_s = pause_s

    @graph_stage
    def graph_next(self, last_ts: int) -> tuple[int, Any]:
        time.sleep(self.pause_s)
        return (last_ts + 1, [last_ts + 1]) if last_ts < 3 else (-1, None)


@ray.remote(num_cpus=0)
class _Broker(_Activity):
    @graph_stage
    def graph_on_bars(self, batch: tuple[int, Any]) -> tuple[int, Any]:
        return batch[0], ([], 0)


@ray.remote(num_cpus=0)
class _Exec(_Activity):
    @graph_stage
    def graph_mark(self, batch: tuple[int, Any], venue: tuple[int, Any]) -> tuple[int, Any]:
        assert venue[0] == batch[0]
        return batch[0], batch[1]

    @graph_stage
    def graph_record(self, marked: tuple[int, Any], decided: tuple[int, Any], checked: tuple[int, Any]) -> Any:
        return marked[0], (marked[1], decided[1], checked[1])


@ray.remote(num_cpus=0)
class _Strategy(_Activity):
    def __init__(self, hidden_pause_s: float = 0.0) -> None:
        super().__init__()
        self.hidden_pause_s = hidden_pause_s
        self.woken = threading.Event()

    def graph_decide(self, batch: tuple[int, Any], marked: tuple[int, Any]) -> tuple[int, Any]:
        # not a graph_stage, so its time is invisible: to the stall check, a long pause here is a wedged graph
        self.woken.wait(self.hidden_pause_s)  # until `wake` (an ordinary call, served beside the graph's loop)
        self.hidden_pause_s = 0.0  # once
        return batch[0], "orders"

    def wake(self) -> None:
        self.woken.set()


@ray.remote(num_cpus=0)
class _Risk(_Activity):
    @graph_stage
    def graph_check(self, marked: tuple[int, Any], decided: tuple[int, Any]) -> tuple[int, Any]:
        return marked[0], "checked"


@pytest.fixture
def made() -> Any:
    """The stand-in actors a test made, killed when it ends (the session's Ray outlives the test)."""
    handles: list[dict[str, Any]] = []
    yield handles.append
    for children in handles:
        for h in children.values():
            ray.kill(h, no_restart=True)


def _children(pause_s: float, hidden_pause_s: float = 0.0) -> dict[str, Any]:
    return {"market_data": _Source.remote(pause_s), "broker": _Broker.remote(), "execution": _Exec.remote(),
            "strategy": _Strategy.remote(hidden_pause_s), "risk": _Risk.remote()}


def test_stall_means_source_answered_every_actor_idle_and_quiet() -> None:
    """The stall rule: the source answered this step's `last_ts`, nothing runs, nothing moved for the quiet time."""
    idle = {"busy": 0, "last_in": None, "since": 100.0}
    acts = {"market_data": {"busy": 0, "last_in": 7, "since": 100.0}, "execution": idle, "strategy": idle}
    assert graph_stalled(acts, 7, now=111.0, quiet_s=10.0)
    assert not graph_stalled(acts, 7, now=109.0, quiet_s=10.0)  # not quiet long enough
    # the source has not answered this step: a graph just compiled whose loops have not taken the input yet
    assert not graph_stalled(acts, 8, now=111.0, quiet_s=10.0)
    # the same step executed again on a new graph: the source's answer of the old graph does not count
    assert not graph_stalled(acts, 7, now=111.0, quiet_s=10.0, executed_at=100.5)
    assert not graph_stalled({**acts, "market_data": {**acts["market_data"], "busy": 1}}, 7, 111.0, 10.0)  # paced
    assert not graph_stalled({**acts, "strategy": {**idle, "busy": 1}}, 7, 111.0, 10.0)  # a slow stage
    assert not graph_stalled({**acts, "strategy": {**idle, "since": 105.0}}, 7, 111.0, 10.0)  # moved lately


def test_graph_stage_keeps_busy_and_the_sources_last_input() -> None:
    class _A:
        @graph_stage
        def step(self, last_ts: int) -> int:
            assert activity_of(self)["busy"] == 1  # counted while it runs
            return last_ts + 1

        @graph_stage
        def fail(self, last_ts: int) -> int:
            raise ValueError(last_ts)

    a = _A()
    assert activity_of(a)["busy"] == 0 and activity_of(a)["last_in"] is None
    assert a.step(5) == 6
    assert activity_of(a)["busy"] == 0 and activity_of(a)["last_in"] == 5
    with pytest.raises(ValueError):
        a.fail(9)
    assert activity_of(a)["busy"] == 0 and activity_of(a)["last_in"] == 9


@pytest.mark.ray
@pytest.mark.slow
def _torch_imported(children: dict[str, Any]) -> dict[str, bool]:
    """Whether each actor's process has imported torch (Ray's channel loop imports it on the first read unless the
    actor's constructor said there is no GPU: 1.5 to 2 s of CPU per actor)."""
    return {n: ray.get(h.__ray_call__.remote(lambda _self: "torch" in sys.modules), timeout=60)
            for n, h in children.items()}


def test_a_slow_step_is_waited_for_and_a_dead_actor_is_a_fault(ray_session: None, made: Any) -> None:
    children = _children(pause_s=1.0)
    made(children)
    graph = StepGraph(children, wait_s=0.2).compile()  # every step outlasts several waits
    try:
        assert graph.step(0) == (1, None, ([1], "orders", "checked"))
        assert graph.step(1)[0] == 2
        assert _torch_imported(children) == dict.fromkeys(children, False)  # channels_without_torch
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
        assert _torch_imported(children) == dict.fromkeys(children, False)  # the restarted source too
    finally:
        again.teardown()


@pytest.mark.ray
def test_a_stalled_graph_is_a_fault_and_a_new_graph_runs_the_step_again(ray_session: None, made: Any) -> None:
    """A step whose result does not come while every graph method is idle is a fault (GraphStalled), not a wait
    forever; a graph compiled again over the same actors runs the step (the Supervisor does exactly this)."""
    children = _children(pause_s=0.0, hidden_pause_s=120.0)  # ended by `wake` once the stall is seen
    made(children)
    graph = StepGraph(children, wait_s=0.5).compile()
    t0 = time.monotonic()
    try:
        with pytest.raises(GraphStalled):
            graph.step(0)
        assert time.monotonic() - t0 < 60  # noticed within a few waits, long before the hidden pause ends
    finally:
        ray.get(children["strategy"].wake.remote(), timeout=60)
        graph.teardown()
    again = StepGraph(children, wait_s=10.0)  # the Supervisor's wait: a loaded machine is slow to start the loops
    again.wait_alive(deadline_s=60)
    again.compile()
    try:
        assert again.step(0) == (1, None, ([1], "orders", "checked"))
    finally:
        again.teardown()
