"""A synchronous proxy over an actor handle, so core code can call an actor like a local object.

A call that fails because the actor died is retried once Ray has restarted it (the actors are created with
`max_restarts`); this is safe because every call the loop makes is idempotent (client order ids, fill ids and
bar timestamps dedupe) and a restarted actor rebuilds its state in its constructor before it answers. `on_restart`
is told about each *retry* (one restart can fail several calls, or none); the Supervisor counts restarts from Ray's
own record, not from these.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import ray
from ray.exceptions import RayActorError


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
            for attempt in range(self._retries + 1):
                try:
                    return ray.get(remote.remote(*args, **kwargs), timeout=self._timeout)
                except RayActorError as exc:
                    if attempt == self._retries:
                        raise
                    if self._on_restart is not None:
                        self._on_restart(self._name, method, exc)
                    time.sleep(min(0.2 * 2**attempt, 2.0))
            raise AssertionError("unreachable")

        return call
