"""A synchronous proxy over an actor handle, so core code can call an actor like a local object.

A call that fails because the actor died is retried once Ray has restarted it (the actors are created with
`max_restarts`); this is safe because every call the loop makes is idempotent (client order ids, fill ids and
bar timestamps dedupe) and a restarted actor rebuilds its state in its constructor before it answers. `on_restart`
is told about each *retry* (one restart can fail several calls, or none); the Supervisor counts restarts from Ray's
own record, not from these.

An actor that is *restarting* answers `ActorUnavailableError` until it is back: that is not a new death, so it does
not use up a retry; the proxy waits for it (bounded by `timeout_s`, or `UNAVAILABLE_WAIT_S` without one). A restart
slower than the retries' back-off, which is normal on a loaded machine, must not abort the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, RayActorError

UNAVAILABLE_WAIT_S = 300.0  # how long a call waits for a restarting actor when the proxy has no timeout


class ActorProxy:
    def __init__(
        self,
        handle: Any,
        name: str = "",
        retries: int = 3,
        timeout_s: float | None = 120.0,
        on_restart: Callable[[str, str, BaseException], None] | None = None,
    ) -> None:
        self._handle = handle
        self._name = name
        self._retries = retries
        self._timeout = timeout_s
        self._on_restart = on_restart

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("_"):
            raise AttributeError(method)
        remote = getattr(self._handle, method)

        def call(*args: Any, **kwargs: Any) -> Any:
            attempt = 0
            waiting_since: float | None = None
            while True:
                try:
                    return ray.get(remote.remote(*args, **kwargs), timeout=self._timeout)
                except ActorUnavailableError:  # restarting: wait for it, without using up a retry
                    now = time.monotonic()
                    waiting_since = now if waiting_since is None else waiting_since
                    if now - waiting_since > (self._timeout or UNAVAILABLE_WAIT_S):
                        raise
                    time.sleep(0.1)
                except RayActorError as exc:
                    if attempt == self._retries:
                        raise
                    if self._on_restart is not None:
                        self._on_restart(self._name, method, exc)
                    time.sleep(min(0.2 * 2**attempt, 2.0))
                    attempt += 1
                    waiting_since = None

        return call
