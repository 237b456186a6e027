"""Structured logs: one JSON object per line, carrying the run id, the actor and the order id, never a secret.

Why: a live run is a dozen processes (driver, Supervisor, children, Serve replicas) whose lines end up in Ray's
session log folder; an operator finds one order's story with `grep`/`jq` on `order_id`, and a log shipper loads
the lines as they are. Every line goes through `scrub` first, so a database password in a URL, the API key or
another secret from the environment is masked even when a message or a traceback carries it.

The `tradesys` logger gets its own handler (stderr: Ray writes a worker's stderr to `worker-*.err` in the
session's `logs/` folder) and does not propagate, so Ray's own handlers never print it twice. Ray's
`LoggingConfig(encoding="JSON")` was the other way: it formats the root logger of one job's workers (with job,
worker and actor ids and any `extra=` fields), but not Serve replicas, which Serve configures itself, nor the
actors of a run driven from a session that called `ray.init` without it, and it masks nothing.

The live driver starts the Supervisor with `runtime_env(...)`: environment variables naming the format, level and
run id, which every child inherits; `get_logger` configures the process from them on first use (an actor-level
`worker_process_setup_hook` is silently ignored by Ray 2.60: only the job's runs). The actor's role comes from its
Ray name (`<run id>:<role>`). No Ray import here: Ray is asked only when the process has already loaded it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, Literal, TextIO

from tradesys.config import redact_url

LOGGER = "tradesys"
FORMAT_ENV = "TRADESYS_LOG_FORMAT"
LEVEL_ENV = "TRADESYS_LOG_LEVEL"
RUN_ID_ENV = "TRADESYS_RUN_ID"
LogFormat = Literal["json", "text"]

# the context every line carries; `bind` sets it for a block (e.g. the order being handled), `extra=` per line
CONTEXT_FIELDS = ("run_id", "actor", "order_id")
_bound: ContextVar[dict[str, Any] | None] = ContextVar("tradesys_log_context", default=None)
_process: dict[str, Any] = {}  # run id / actor of this process, set by `configure` or read from Ray's actor name

# the attributes every LogRecord has: anything else on a record came in through `extra=` and is printed
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
# environment variables whose values are secrets (masked in every line), and names that only hold paths
_SECRET_NAME = re.compile(r"(KEY|SECRET|PASSWORD|PASSWD|TOKEN|DSN|CREDENTIAL)", re.IGNORECASE)
_PATH_NAME = re.compile(r"(_PATH|_FILE|_DIR)$", re.IGNORECASE)
_extra_secrets: set[str] = set()
_RUN_ACTOR = re.compile(r"(?P<run>[^:]+):(?P<role>\w+)")  # how the Supervisor names itself and its children


def add_secret(value: str | None) -> None:
    """Mask `value` in every later line of this process (a key or password that came from elsewhere than env)."""
    if value and len(value) >= 4:
        _extra_secrets.add(value)


def _env_secrets() -> list[str]:
    found = [v for k, v in os.environ.items()
             if _SECRET_NAME.search(k) and not _PATH_NAME.search(k) and len(v) >= 6]
    # a DSN's password is masked by redact_url already; mask its whole value too (it may appear url-decoded)
    return sorted({*found, *_extra_secrets}, key=len, reverse=True)


def scrub(text: str) -> str:
    """`text` with URL passwords and every known secret value replaced by `***`."""
    text = redact_url(text)
    for secret in _env_secrets():
        if secret in text:
            text = text.replace(secret, "***")
    return text


@contextlib.contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add fields (e.g. `order_id=...`) to every line logged in this block, on this thread or task."""
    token = _bound.set({**(_bound.get() or {}), **fields})
    try:
        yield
    finally:
        _bound.reset(token)


def _from_ray_actor() -> dict[str, str]:
    """Run id and actor role from this process's Ray actor name (`<run id>:<role>`, as the Supervisor names
    every child); empty outside an actor or when Ray is not loaded."""
    if "ray" not in sys.modules:
        return {}
    try:
        import ray

        if not ray.is_initialized():
            return {}
        name = ray.get_runtime_context().get_actor_name() or ""
    except Exception:  # outside a worker, or Ray half torn down: the line is still logged, without the fields
        return {}
    m = _RUN_ACTOR.fullmatch(name)  # not Serve's replicas: "SERVE_REPLICA::<app>#<deployment>#<id>"
    return {"run_id": m["run"], "actor": m["role"]} if m else {}


class ContextFilter(logging.Filter):
    """Puts run_id, actor and order_id on every record: `extra=` wins, then `bind`, then the process's own."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "run_id" not in _process or "actor" not in _process:  # asked once per process
            found = _from_ray_actor()
            for k in ("run_id", "actor"):
                _process.setdefault(k, found.get(k))
        bound = _bound.get() or {}
        for k in CONTEXT_FIELDS:
            if getattr(record, k, None) is None:
                setattr(record, k, bound.get(k, _process.get(k)))
        for k, v in bound.items():
            if not hasattr(record, k):
                setattr(record, k, v)
        return True


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, bool | int | float):
        return v
    if isinstance(v, str):
        return scrub(v)
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return scrub(str(v))


def _stamp(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created * 1000) % 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, run_id, actor, order_id (when there is one), pid, and
    whatever the call passed in `extra=`; the exception, if any, as one string. Secrets scrubbed."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _stamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": scrub(record.getMessage()),
            "run_id": getattr(record, "run_id", None),
            "actor": getattr(record, "actor", None),
        }
        if getattr(record, "order_id", None) is not None:
            out["order_id"] = record.order_id
        out["pid"] = record.process
        for k, v in vars(record).items():
            if k not in _STANDARD and k not in out and not k.startswith("_") and k not in CONTEXT_FIELDS:
                out[k] = _jsonable(v)
        if record.exc_info:
            out["exc"] = scrub(self.formatException(record.exc_info))
        return json.dumps(out, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """`ts LEVEL [run actor order] msg key=value ...`, for a person at a terminal. Secrets scrubbed."""

    def format(self, record: logging.LogRecord) -> str:
        ctx = " ".join(str(getattr(record, k)) for k in CONTEXT_FIELDS if getattr(record, k, None) is not None)
        extra = " ".join(f"{k}={_jsonable(v)}" for k, v in vars(record).items()
                         if k not in _STANDARD and k not in CONTEXT_FIELDS and not k.startswith("_"))
        line = f"{_stamp(record.created)} {record.levelname} [{ctx}] {scrub(record.getMessage())}"
        line = f"{line} {extra}" if extra else line
        if record.exc_info:
            line += "\n" + scrub(self.formatException(record.exc_info))
        return line


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler `configure` installed, so a second call replaces it instead of adding another."""


def configure(fmt: str = "json", level: str | int = "INFO", *, run_id: str | None = None,
              actor: str | None = None, stream: TextIO | None = None) -> logging.Logger:
    """Send the `tradesys` loggers' lines to `stream` (default stderr) in `fmt` ("json" or "text") at `level`;
    idempotent. `run_id`/`actor` label every line of this process (an actor's are found from its Ray name)."""
    if fmt not in ("json", "text"):
        raise ValueError(f"log.format: must be 'json' or 'text', got {fmt!r}")
    if run_id:
        _process["run_id"] = run_id
    if actor:
        _process["actor"] = actor
    logger = logging.getLogger(LOGGER)
    for h in [h for h in logger.handlers if isinstance(h, _Handler)]:
        logger.removeHandler(h)
    handler = _Handler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    logger.addHandler(handler)
    logger.setLevel(level if isinstance(level, int) else level.upper())
    logger.propagate = False
    return logger


def runtime_env(fmt: str, level: str, run_id: str | None = None) -> dict[str, Any]:
    """The runtime environment that makes an actor, and every actor it creates (they inherit it), log like this."""
    env = {FORMAT_ENV: fmt, LEVEL_ENV: level, **({RUN_ID_ENV: run_id} if run_id else {})}
    return {"env_vars": env}


def with_log_env(options: dict[str, Any], fmt: str, level: str, run_id: str) -> dict[str, Any]:
    """Actor `options` whose runtime env also carries the log settings (merged into env vars already there)."""
    env = dict(options.get("runtime_env") or {})
    env["env_vars"] = {**env.get("env_vars", {}), **runtime_env(fmt, level, run_id)["env_vars"]}
    return {**options, "runtime_env": env}


def configure_from_env(actor: str | None = None) -> logging.Logger:
    """`configure` with the format, level and run id of this process's environment (json, INFO by default)."""
    return configure(os.environ.get(FORMAT_ENV, "json"), os.environ.get(LEVEL_ENV, "INFO"),
                     run_id=os.environ.get(RUN_ID_ENV) or None, actor=actor)


class _RunLogger(logging.Logger):
    """A `logging.Logger` that unpickles through `get_logger`, so the process that receives it is configured too.

    Ray sends an actor class's code to its worker with the globals its methods use; a module-level `log =
    get_logger(...)` travels as a logger, which plain `logging.Logger` rebuilds with `logging.getLogger(name)`.
    When the worker then never imports the actor's module (it did not need to: nothing else referred to it), the
    `tradesys` logger there had no handler and every INFO line was dropped: the MarketDataActor's and LedgerActor's
    start lines were missing from some runs' worker files, while the children that receive an actor handle (and so
    import the module) logged. Rebuilt through `get_logger`, the logger configures its process from the run's
    environment wherever it lands."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return get_logger, (self.name,)


def get_logger(name: str) -> logging.Logger:
    """`logging.getLogger(name)`; in a process of a run (its environment names the log format) the first call
    also configures the `tradesys` logger, so an actor module needs only this line to log like the others. The
    logger, pickled (an actor's code shipped to a worker), configures the receiving process the same way."""
    if FORMAT_ENV in os.environ and not any(isinstance(h, _Handler) for h in logging.getLogger(LOGGER).handlers):
        configure_from_env()
    logger = logging.getLogger(name)
    if type(logger) is logging.Logger:
        logger.__class__ = _RunLogger
    return logger


def ray_messages_to_stderr() -> None:
    """Send the cluster messages Ray's driver prints (a node marked dead, a worker killed for memory) to stderr.

    Ray prints them to stdout from a background thread of every driver, whatever `log_to_driver` says
    (`ray._private.worker.listen_error_messages`); a command's stdout is its output, and `tradesys status --json` was
    seen to start with one, so it did not parse. Call before `ray.init`; a Ray without that function is left alone.
    """
    try:
        from ray._private import worker
    except ImportError:  # pragma: no cover
        return
    original = getattr(worker, "print_to_stdstream", None)
    if original is None or getattr(original, "tradesys_stderr", False):
        return

    def to_stderr(data: dict[str, Any], ignore_prefix: bool) -> None:
        original({**data, "is_err": True}, ignore_prefix)

    to_stderr.tradesys_stderr = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = to_stderr
