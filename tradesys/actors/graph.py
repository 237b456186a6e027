"""The live step as a Ray Compiled Graph: MarketData -> Broker (venue) -> Execution (mark) -> Strategy -> Risk ->
Execution (record).

An ordinary actor call costs a task submission, an object-store round trip and a scheduling hop each way; a compiled
graph allocates its channels once and then moves each step's values (Arrow bar batches, the marked book, orders,
the risk decision) through shared-memory channels between long-running loops on the actors. Each actor's graph
method calls its own stage of `tradesys.engine.step` with itself as the component, so the graph follows the same
code as the backtest and the ordinary-call fallback (`ray.compiled_graph = false`).

A compiled graph is static: when one of its actors dies, Ray closes its channels and the step's result raises.
`StepGraph` then tears the graph down, waits until every actor of the graph answers again (Ray restarts them; each
rebuilds itself from the ledger in its constructor), compiles a new graph and executes the same step again. Each
graph method remembers its last step's output, so an actor that survived answers a step executed again with what
it answered the first time, and only a restarted actor computes its stage again: exactly what the ordinary-call
mode does when it retries the one call that failed. The Broker's node (the venue matching resting orders against
the bars) remembers its answer too: a live venue's answer is drained from its update stream and asking again would
lose it. The Ledger, and the Broker's `submit`, stay behind the ExecutionActor's ordinary calls (a fault
there is retried inside it, as in the fallback): the write-ahead commit must precede the venue call, and a static
graph would pay those hops on every step, with orders or without.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from tradesys.engine.step import StepResult

try:  # present in every Ray with compiled graphs; kept soft so an import never breaks the fallback mode
    from ray.exceptions import RayChannelError, RayChannelTimeoutError
except ImportError:  # pragma: no cover
    RayChannelError = RayChannelTimeoutError = RayActorError  # type: ignore[misc,assignment]


class GraphStalled(RuntimeError):
    """Every actor of the graph is alive and idle, the source handed out the step's batch, and no result came: the
    graph's channels are wedged. Seen with Ray 2.60 about ten steps after a step slowed by a restarting Ledger or
    Broker (the ten rotating channel buffers): the source blocked in its write while every reader waited on another
    buffer. Handled as a fault: the graph is compiled again and the step executed again (its answers are cached)."""


# what a dead actor in a compiled graph looks like to its driver: the channels close, or the actor is unavailable;
# or the graph is wedged with every actor alive (GraphStalled)
GRAPH_FAULTS: tuple[type[BaseException], ...] = (RayChannelError, RayActorError, GraphStalled)

# the graph's actors, in the order they run a step (names as the Supervisor's `children()` gives them)
GRAPH_ACTORS = ("market_data", "broker", "execution", "strategy", "risk")

F = TypeVar("F", bound=Callable[..., Any])


class GraphActivity:
    """What one actor's graph methods are doing: how many run now, the first argument of the last one to finish
    (the source's: the `last_ts` it answered), and the wall time anything last started or finished."""

    def __init__(self) -> None:
        self.busy = 0
        self.last_in: Any = None
        self.since = 0.0  # never: an actor that has not run a stage yet does not count as moving

    def status(self) -> dict[str, Any]:
        return {"busy": self.busy, "last_in": self.last_in, "since": self.since}


def graph_stage(method: F) -> F:
    """Mark an actor method as a stage of the compiled graph: its activity is kept for `graph_activity()`."""

    @functools.wraps(method)
    def run(self: Any, *args: Any) -> Any:
        act = self.__dict__.setdefault("_graph_activity", GraphActivity())
        act.busy += 1
        act.since = time.time()
        try:
            return method(self, *args)
        finally:
            act.busy -= 1
            act.last_in = args[0] if args and isinstance(args[0], int) else act.last_in
            act.since = time.time()

    return run  # type: ignore[return-value]


def activity_of(actor: Any) -> dict[str, Any]:
    """`graph_activity()` of an actor instance (before its first graph method: idle, never moved)."""
    act = actor.__dict__.get("_graph_activity")
    return (act or GraphActivity()).status()


def channels_without_torch() -> None:
    """Keep Ray's compiled-graph loop from importing torch in this actor.

    On its first channel read, Ray's loop imports torch only to choose a CUDA device context for the read
    (`_device_context_manager`); in an actor with no GPU that context is `nullcontext()` either way. The import cost
    each of the five graph actors 1.5 to 2 s of CPU and delayed a live run's first step by about 4 s on two cores
    (measured ad hoc, 3 symbols). An actor without a GPU therefore tells Ray's channel context that torch is absent
    (its private `_torch_available` flag). An actor with a GPU, or a Ray whose context lacks the flag, keeps Ray's
    behaviour."""
    if ray.get_gpu_ids():
        return
    try:
        from ray.experimental.channel.common import ChannelContext
    except ImportError:  # pragma: no cover
        return
    ctx = ChannelContext.get_current()
    if getattr(ctx, "_torch_available", False) is None:  # not probed yet
        ctx._torch_available = False


class GraphStageActor:
    """Base of an actor with `graph_stage` methods: answers the Supervisor's stall check."""

    def __init__(self) -> None:
        # in the constructor, which a restarted actor runs again: an ordinary call made on each actor just before the
        # compile slowed the compiled graph's steps by about a fifth (measured ad hoc, mechanism not established)
        channels_without_torch()

    def graph_activity(self) -> dict[str, Any]:
        """Whether a graph method runs now, and since when (`graph_stalled`)."""
        return activity_of(self)


def graph_stalled(
    activity: Mapping[str, Mapping[str, Any]], last_ts: int, now: float, quiet_s: float, executed_at: float = 0.0
) -> bool:
    """True when the step after `last_ts` can no longer arrive: the source answered `last_ts`, no graph method runs
    on any actor, and nothing started or finished for `quiet_s`. A slow step is not a stall: a paced or live source
    is still inside its method (busy), and so is a stage waiting on the Ledger, the Broker or a model."""
    source = activity.get("market_data")
    # the source answered this execution (a step executed again on a new graph has the same last_ts: a graph whose
    # loops have not taken the input yet must not look stalled)
    if source is None or source["last_in"] != last_ts or source["since"] < executed_at:
        return False
    if any(a["busy"] for a in activity.values()):
        return False
    return now - max(a["since"] for a in activity.values()) > quiet_s


class StepGraph:
    """One compiled step graph over the Supervisor's children; `step(last_ts)` runs the step after `last_ts`.

    `with_bars` also returns the bar batch (the Supervisor feeds it to the FeatureActor). `wait_s` bounds each wait
    for a result: when it passes, the graph's actors are pinged; all alive means a slow step (a paced or live feed),
    and the wait goes on, a dead one is a fault (the result is never coming).
    """

    def __init__(self, children: dict[str, Any], with_bars: bool = False, wait_s: float = 10.0) -> None:
        self.actors = {name: children[name] for name in GRAPH_ACTORS}
        self.with_bars = with_bars
        self.wait_s = wait_s
        self.teardown_s = 30.0
        self._dag: Any = None
        self._executed_at = 0.0  # wall time of the last execute (the stall check counts only what followed it)

    def compile(self) -> StepGraph:
        from ray.dag import InputNode

        md, br, ex, st, rk = (self.actors[n] for n in GRAPH_ACTORS)
        with InputNode() as last_ts:
            batch = md.graph_next.bind(last_ts)  # (ts, bars)
            venue = br.graph_on_bars.bind(batch)  # (ts, (venue events, reconnects))
            marked = ex.graph_mark.bind(batch, venue)  # (ts, StepReport)
            decided = st.graph_decide.bind(batch, marked)  # (ts, orders)
            checked = rk.graph_check.bind(marked, decided)  # (ts, RiskDecision)
            result = ex.graph_record.bind(marked, decided, checked)  # (ts, StepResult)
            # one output channel, never two: `_get` retries a read that timed out, which is safe on one channel
            # (nothing consumed), but a MultiOutputNode's read can time out after consuming the first output, and the
            # retried read then waits for a step that never comes (a with-bars run hung so on a loaded machine)
            dag = ex.graph_with_bars.bind(batch, result) if self.with_bars else result
        self._dag = dag.experimental_compile()
        return self

    def step(self, last_ts: int) -> tuple[int, Any, StepResult | None]:
        """(ts, bars or None, result) of the step after `last_ts`; ts < 0 at the end of the data."""
        self._executed_at = time.time()
        ref = self._dag.execute(last_ts)
        if self.with_bars:
            (ts, bars), (_, result) = self._get(ref, last_ts)
        else:
            (ts, result), bars = self._get(ref, last_ts), None
        return int(ts), bars, result

    def _get(self, ref: Any, last_ts: int) -> Any:
        while True:
            try:
                return ref.get(timeout=self.wait_s)
            except RayChannelTimeoutError:
                with contextlib.suppress(GetTimeoutError):  # a slow answer is not a dead actor
                    self._ping()  # raises RayActorError when an actor of the graph is gone
                    if self._stalled(last_ts):
                        msg = f"no result for the step after {last_ts} with every graph actor idle"
                        raise GraphStalled(msg) from None
                # all alive: a slow step. A timed-out read consumed nothing, but the ref allows one get() only
                ref._ray_get_called = False

    def _stalled(self, last_ts: int) -> bool:
        names = list(self.actors)
        got = ray.get([self.actors[n].graph_activity.remote() for n in names], timeout=max(self.wait_s, 30.0))
        return graph_stalled(dict(zip(names, got, strict=True)), last_ts, time.time(), self.wait_s, self._executed_at)

    def _ping(self) -> None:
        ray.get([h.__ray_ready__.remote() for h in self.actors.values()], timeout=max(self.wait_s, 30.0))

    def teardown(self) -> None:
        """Release the graph's channels and the actors' loops (best effort: after a fault they may be gone)."""
        dag, self._dag = self._dag, None
        if dag is None:
            return

        def _teardown() -> None:
            with contextlib.suppress(Exception):  # a graph whose actor died is torn down by Ray already
                dag.teardown()

        # bounded: Ray's teardown was seen waiting forever on an actor loop still blocked in a channel read (a
        # 500-symbol run); the run's summary uses ordinary calls, which do not need the graph's loops to have ended
        t = threading.Thread(target=_teardown, name="graph-teardown", daemon=True)
        t.start()
        t.join(timeout=self.teardown_s)

    def wait_alive(self, deadline_s: float = 180.0, on_wait: Callable[[], None] | None = None) -> None:
        """Block until every actor of the graph answers (Ray restarts a dead one); RayActorError once it cannot."""
        end = time.monotonic() + deadline_s
        pause = 0.1
        while True:
            try:
                self._ping()
                return
            except (RayActorError, GetTimeoutError):
                if time.monotonic() > end:
                    raise
                if on_wait is not None:
                    on_wait()
                time.sleep(pause)
                pause = min(pause * 2, 1.0)
