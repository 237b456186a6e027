"""Bounds on what one request may cost the server: body size, concurrency, queueing, and time.

Three ASGI-level guards, all answering in the one error shape (`errors.error_response`):

* `BodyLimit` refuses a body over the cap before it is read whole: a `Content-Length` over the cap is a 413 at
  once; a streamed (chunked) body is counted as it arrives and cut off at the cap, so a 50 MB upload never sits in
  memory. JSON bodies and Arrow IPC streams have separate caps (Arrow carries large batches by design).
* `Admission` lets `max_ongoing_requests` requests compute at once per replica and `max_queued_requests` wait;
  beyond that the request is refused at once with 503 and `Retry-After`, instead of queueing without bound.
  It also stamps each request with its deadline (`request_timeout_s` from arrival, queueing included).
* `run_in_budget` / `run_chunked` run the numerics in a worker thread, raced against that deadline (504) and
  against the client going away: a thread cannot be killed, so batch work is cut into row chunks and no new chunk
  starts once the client has disconnected or the deadline has passed; the CPU is released within one chunk.
* `run_killable` runs one indivisible call (a solve, a VaR, a surface fit) in a child process instead
  (`tradesys.compute.WorkerPool`), killed when the client goes away or the deadline passes: the CPU is free at once.

The Serve deployment's own `max_ongoing_requests`/`max_queued_requests` are set from the same numbers
(`serve_options`), as a backstop in the proxy; Serve answers its own rejections in plain text, which is why the
gate that clients normally meet lives here.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np
from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tradesys.serve.errors import BadRequest, error_response

T = TypeVar("T")
ARROW_STREAM = "application/vnd.apache.arrow.stream"
DEADLINE_KEY = "tradesys_deadline"
MiB = 1024 * 1024


class ServeLimits(BaseModel):
    """Per-replica limits of the HTTP API; every field is a deliberate choice, documented in /openapi.json."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_json_body_bytes: int = Field(16 * MiB, ge=1024, description="largest JSON request body (413 beyond)")
    max_arrow_body_bytes: int = Field(256 * MiB, ge=1024, description="largest Arrow IPC request body (413 beyond)")
    max_ongoing_requests: int = Field(8, ge=1, le=1024, description="requests computing at once per replica")
    max_queued_requests: int = Field(32, ge=0, le=100_000, description="requests waiting per replica (503 beyond)")
    retry_after_s: int = Field(1, ge=0, le=3600, description="Retry-After on a 503")
    request_timeout_s: float = Field(30.0, gt=0, le=3600, description="time budget per request (504 beyond)")

    def body_cap(self, content_type: str) -> int:
        media = content_type.split(";")[0].strip().lower()
        return self.max_arrow_body_bytes if media == ARROW_STREAM else self.max_json_body_bytes

    def serve_options(self) -> dict[str, Any]:
        """Deployment options: the proxy may hand the replica every request the in-app gate can hold (so the
        gate, with its JSON 503, is what clients meet), and keeps a bounded queue of its own behind it."""
        from ray.serve.config import BackpressureConfig

        return {
            "max_ongoing_requests": self.max_ongoing_requests + self.max_queued_requests + 1,
            "max_queued_requests": max(1, self.max_queued_requests),
            "backpressure_config": BackpressureConfig(status_code=503, retry_after_s=self.retry_after_s),
        }


class BodyTooLarge(HTTPException):
    """Raised from inside `receive`: an HTTPException, so FastAPI's own body reader lets it through as a 413."""

    def __init__(self, cap: int) -> None:
        self.fields = [("body", f"larger than the limit of {cap} bytes for this content type")]
        super().__init__(413, [{"field": f, "reason": r} for f, r in self.fields])


async def _send_error(send: Send, status: int, fields: list[tuple[str, str]],
                      headers: dict[str, str] | None = None) -> None:
    response = error_response(status, [{"field": f, "reason": r} for f, r in fields], headers)
    await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class BodyLimit:
    """ASGI middleware: the body cap, enforced while the body streams in (see the module docstring)."""

    def __init__(self, app: ASGIApp, limits: ServeLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.limits.body_cap(_header(scope, b"content-type") or "application/json")
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await _send_error(send, 400, [("Content-Length", f"not a byte count ({declared[:40]!r})")])
                return
            if int(declared) > cap:
                await _send_error(send, 413, BodyTooLarge(cap).fields)
                return
        received = 0
        started = False

        async def capped_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    raise BodyTooLarge(cap)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, capped_receive, tracking_send)
        except BodyTooLarge as exc:  # read outside a route (the route's own handler answers it otherwise)
            if not started:
                await _send_error(send, 413, exc.fields)


class Admission:
    """ASGI middleware: the concurrency gate and queue bound for `/v1` routes (see the module docstring)."""

    def __init__(self, app: ASGIApp, limits: ServeLimits) -> None:
        self.app = app
        self.limits = limits
        self.active = 0
        self.waiting = 0
        self._sem: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._sem is None or self._sem[0] is not loop:  # a test client may run each request on a new loop
            self._sem = (loop, asyncio.Semaphore(self.limits.max_ongoing_requests))
        return self._sem[1]

    def _busy(self, reason: str) -> tuple[list[tuple[str, str]], dict[str, str]]:
        return [("request", reason)], {"Retry-After": str(self.limits.retry_after_s)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        lim = self.limits
        loop = asyncio.get_running_loop()
        scope.setdefault("state", {})[DEADLINE_KEY] = loop.time() + lim.request_timeout_s
        if self.active + self.waiting >= lim.max_ongoing_requests + lim.max_queued_requests:
            fields, headers = self._busy(f"server busy ({self.active} running, {self.waiting} queued); retry later")
            await _send_error(send, 503, fields, headers)
            return
        sem = self._semaphore()
        self.waiting += 1
        try:
            await asyncio.wait_for(sem.acquire(), timeout=lim.request_timeout_s)
        except TimeoutError:
            fields, headers = self._busy(f"waited {lim.request_timeout_s:g} s in the queue; retry later")
            await _send_error(send, 503, fields, headers)
            return
        finally:
            self.waiting -= 1
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1
            sem.release()


class ClientGone(BadRequest):
    """The client disconnected: nobody reads the answer, so the work stops (499, as nginx logs it)."""

    def __init__(self) -> None:
        super().__init__([("request", "client disconnected")], status=499)


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def deadline_of(request: Request, default_s: float = 30.0) -> float:
    """The request's deadline on the event loop's clock (set by `Admission`, or `default_s` from now)."""
    state = request.scope.get("state", {})
    return float(state.get(DEADLINE_KEY, asyncio.get_running_loop().time() + default_s))


async def run_in_budget(request: Request, fn: Callable[[], T], *, poll_s: float = 0.1) -> T:
    """`fn()` in a worker thread; 504 once the deadline passes, `ClientGone` once the client disconnects.

    The thread is abandoned, not killed: callers keep each `fn` small (`run_chunked`) so it ends soon after."""
    loop = asyncio.get_running_loop()
    deadline = deadline_of(request)
    # a client already gone starts no work: the poll below sees a disconnect only while `fn` outlasts it, and chunks
    # that end sooner (a fast machine did a twentieth of the work cap in 45 ms) would otherwise run on to the end
    if await request.is_disconnected():
        raise ClientGone()
    task: asyncio.Future[T] = asyncio.ensure_future(run_in_threadpool(fn))
    task.add_done_callback(_consume)  # an abandoned task's late exception is nobody's: never logged as unretrieved
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            task.cancel()
            raise _budget_exceeded(request)
        done, _ = await asyncio.wait({task}, timeout=min(remaining, poll_s))
        if done:
            return task.result()
        if await request.is_disconnected():
            task.cancel()
            raise ClientGone()


async def run_killable(request: Request, fn: Callable[[], T], *, poll_s: float = 0.1) -> T:
    """`fn()` (picklable) in a child process; 504 past the deadline and `ClientGone` on a disconnect, and in both
    cases the child is killed, so the work stops at once (`tradesys.compute`)."""
    from tradesys.compute import shared_pool

    loop = asyncio.get_running_loop()
    deadline = deadline_of(request)
    call = shared_pool().submit(fn)
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise _budget_exceeded(request)
            if await call.wait(min(remaining, poll_s)):
                return call.result()  # type: ignore[no-any-return]
            if await request.is_disconnected():
                raise ClientGone()
    finally:
        call.abandon()  # a no-op once the answer was taken


def _budget_exceeded(request: Request) -> BadRequest:
    budget = request.app.state.limits.request_timeout_s if hasattr(request.app.state, "limits") else None
    what = f"the {budget:g} s time budget" if budget else "the time budget"
    return BadRequest([("request", f"did not finish within {what}; send a smaller request")], status=504)


async def run_chunked(
    request: Request,
    fn: Callable[[dict[str, np.ndarray]], Mapping[str, Any]],
    cols: Mapping[str, np.ndarray],
    chunk_rows: int,
) -> dict[str, np.ndarray]:
    """`fn` over row chunks of `cols` (equal-length arrays), concatenated; each chunk in `run_in_budget`, so a
    disconnect or the deadline stops the work at the next chunk boundary."""
    n = len(next(iter(cols.values()))) if cols else 0
    step = max(1, int(chunk_rows))
    if n <= step:
        return dict(await run_in_budget(request, lambda: fn(dict(cols))))
    parts: list[Mapping[str, Any]] = []
    for start in range(0, n, step):
        part = {k: v[start:start + step] for k, v in cols.items()}
        parts.append(await run_in_budget(request, lambda part=part: fn(part)))  # type: ignore[misc]
    return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}


def chunk_rows_for(work_per_row: float, chunk_work: float) -> int:
    """Rows per chunk so that one chunk costs about `chunk_work` units (at least one row)."""
    return max(1, math.floor(chunk_work / max(work_per_row, 1.0)))
