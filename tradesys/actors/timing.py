"""Where a live step's time goes, measured inside the actors (issue 16): per stage and per outgoing actor call.

Each trading actor keeps a `StageTimes`: the wall time of its stage methods (the compute of mark, decide, check,
record, in both loop modes) and, for the ExecutionActor, of every ordinary call it makes to the Ledger and the
Broker. The totals ride on the actors' `stats()` into the run summary, so `benchmarks/live_loop.py` can split a
step into stage compute, ordinary calls made from inside the stages, and what is left (channel hops in the
compiled graph, actor round trips in the call mode, the Supervisor). Two `perf_counter` reads per call: cheap.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class StageTimes:
    """Call counts and total seconds by key ("stage:mark", "call:ledger.commit", ...)."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.seconds: dict[str, float] = {}

    def add(self, key: str, seconds: float) -> None:
        self.calls[key] = self.calls.get(key, 0) + 1
        self.seconds[key] = self.seconds.get(key, 0.0) + seconds

    def timed(self, key: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.add(key, time.perf_counter() - t0)

    def wrap(self, key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            return self.timed(key, fn, *args, **kwargs)

        return call

    def as_dict(self) -> dict[str, dict[str, float]]:
        """{key: {"calls": n, "ms": total milliseconds}}, for the run summary."""
        return {k: {"calls": n, "ms": round(self.seconds[k] * 1e3, 3)} for k, n in sorted(self.calls.items())}


class TimedProxy:
    """An `ActorProxy` whose every call is timed under "call:<name>.<method>"."""

    def __init__(self, proxy: Any, name: str, times: StageTimes) -> None:
        self._proxy, self._name, self._times = proxy, name, times

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("_"):
            raise AttributeError(method)
        return self._times.wrap(f"call:{self._name}.{method}", getattr(self._proxy, method))


class VenueLink(TimedProxy):
    """The ExecutionActor's side of the BrokerActor, with two per-bar calls folded into the calls they follow.

    The execution service asks the venue for its reconnect count after every bar's `on_bars`, and for its audit rows
    (`drain_audit`) after every `submit`: two more actor round trips per step. Here `on_bars` asks the BrokerActor
    for both the events and the reconnect count in one call (`on_bars_status`), and `submit` for the events and the
    audit rows (`submit_audit`); `reconnects()` and `drain_audit()` then answer from what came back. The service
    sees the same values at the same points (nothing else calls the broker between the two), so reconciliation after
    a reconnect, the venue's audit rows and a retried call after a broker restart behave exactly as before.

    In the compiled graph the BrokerActor is a node of its own: it runs `on_bars_status` on the bar batch as the stage
    before the ExecutionActor's `mark`, and the ExecutionActor hands that answer in with `preset_on_bars`; the
    service's next `on_bars` then takes it instead of making the call (the same answer, with no round trip).
    """

    def __init__(self, proxy: Any, times: StageTimes) -> None:
        super().__init__(proxy, "broker", times)
        self._reconnects: int | None = None
        self._audit: list[Any] = []
        self._preset: tuple[Any, int] | None = None

    def preset_on_bars(self, answer: tuple[Any, int] | None) -> None:
        """The venue's `on_bars_status` answer for the next bar, computed by its graph node (None: ask as usual)."""
        self._preset = answer

    def on_bars(self, bars: Any) -> Any:
        if self._preset is not None:
            (events, self._reconnects), self._preset = self._preset, None
            return events
        events, self._reconnects = self.__getattr__("on_bars_status")(bars)
        return events

    def reconnects(self) -> int:
        if self._reconnects is None:  # before the first bar (the service's baseline): ask
            self._reconnects = int(self.__getattr__("reconnects")())
        return self._reconnects

    def submit(self, orders: Any) -> Any:
        events, audit = self.__getattr__("submit_audit")(orders)
        self._audit.extend(audit)
        return events

    def drain_audit(self) -> list[Any]:
        out, self._audit = self._audit, []
        return out
