"""Retraining launchers: submit ``jobs/train.py`` with an argv of its CLI flags and report on the job.

Why here and not in the actor file: a launcher is how the drift monitor reaches the training pipeline; it is used
by the DriftMonitor actor, by ``jobs/drift_monitor.py`` and by tests, and has nothing to do with being an actor.

* `RayTaskLauncher` (default): a Ray task in the current cluster calling the script's ``main(argv)``; works on a
  local Ray.
* `JobSubmissionLauncher`: ``ray job submit`` through a dashboard's Jobs API; needs a cluster with a dashboard.

Both implement `RetrainLauncher`: ``launch(argv) -> job id`` and ``poll(job id) -> JobState``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import ray

__all__ = [
    "JobState",
    "JobSubmissionLauncher",
    "RayTaskLauncher",
    "RetrainLauncher",
    "default_train_script",
    "last_json_object",
]


def default_train_script() -> Path:
    """``jobs/train.py`` of this checkout (the package's parent directory)."""
    return Path(__file__).resolve().parents[2] / "jobs" / "train.py"



@dataclass(frozen=True)
class JobState:
    """A retraining job's state: ``running``, ``succeeded`` (with the job's summary dict) or ``failed``."""

    state: Literal["running", "succeeded", "failed"]
    summary: dict[str, Any] | None = None
    error: str | None = None


class RetrainLauncher(Protocol):
    """Submits the training job with an argv of its CLI flags and reports on it; `launch` returns a job id."""

    name: str

    def launch(self, argv: Sequence[str]) -> str: ...

    def poll(self, job_id: str) -> JobState: ...


@ray.remote(max_calls=1)
def _run_script_main(script: str, argv: list[str]) -> dict[str, Any]:
    """Import `script` as a module and return its ``main(argv)``. ``max_calls=1``: the worker exits afterwards, so
    the job's global state (MLflow URIs, torch threads, loaded models) does not leak into later tasks."""
    spec = importlib.util.spec_from_file_location("tradesys_retrain_job", script)
    if spec is None or spec.loader is None:
        raise ValueError(f"script: cannot import {script!r}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    try:
        out = mod.main(list(argv))
    except SystemExit as exc:  # argparse's error on a bad flag: a failed job, not a dead worker
        raise RuntimeError(f"{script} exited with status {exc.code} (argv {list(argv)})") from None
    if isinstance(out, int) and not isinstance(out, bool):  # a CLI-style main (jobs/rl_train.py): an exit status
        if out != 0:
            raise RuntimeError(f"{script} exited with status {out} (argv {list(argv)})")
        return {}
    return dict(out) if out is not None else {}


class RayTaskLauncher:
    """Runs the training script's ``main(argv)`` as a Ray task in the current cluster (the Ray-native default).

    The script (default ``jobs/train.py``) must be readable at the same path on the node that runs the task: true on
    a local Ray and on clusters whose image holds the checkout; otherwise use `JobSubmissionLauncher`. `num_cpus` is
    what the job's driver reserves (its Tune trials reserve their own).
    """

    name = "ray_task"

    def __init__(
        self,
        script: str | Path | None = None,
        *,
        num_cpus: float = 1.0,
        runtime_env: dict[str, Any] | None = None,
    ) -> None:
        path = Path(script) if script is not None else default_train_script()
        if not path.is_file():
            raise ValueError(f"script: {str(path)!r} is not a file")
        if num_cpus < 0:
            raise ValueError(f"num_cpus: must be >= 0, got {num_cpus}")
        self.script = str(path.resolve())
        self.num_cpus = float(num_cpus)
        self.runtime_env = runtime_env
        self._refs: dict[str, Any] = {}

    def launch(self, argv: Sequence[str]) -> str:
        opts: dict[str, Any] = {"num_cpus": self.num_cpus, "name": "tradesys-retrain"}
        if self.runtime_env:
            opts["runtime_env"] = self.runtime_env
        ref = _run_script_main.options(**opts).remote(self.script, [str(a) for a in argv])
        job_id = "raytask-" + uuid.uuid4().hex[:12]
        self._refs[job_id] = ref
        return job_id

    def poll(self, job_id: str) -> JobState:
        ref = self._refs.get(job_id)
        if ref is None:
            raise ValueError(f"job_id: {job_id!r} was not launched by this launcher")
        ready, _ = ray.wait([ref], timeout=0)
        if not ready:
            return JobState("running")
        del self._refs[job_id]
        try:
            return JobState("succeeded", summary=ray.get(ref))
        except Exception as exc:  # the job's own error, wrapped by Ray
            return JobState("failed", error=f"{type(exc).__name__}: {exc}"[:2000])


def last_json_object(text: str) -> dict[str, Any] | None:
    """The last JSON object in `text` that starts at the beginning of a line (the job's printed summary), or None."""
    dec = json.JSONDecoder()
    starts = [m.start() for m in re.finditer(r"(?m)^\{", text)]
    for pos in reversed(starts):
        try:
            obj, _ = dec.raw_decode(text, pos)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj
    return None


class JobSubmissionLauncher:
    """Submits ``python <script> <argv>`` through the Ray Jobs API of a cluster with a dashboard.

    The working directory is uploaded as the job's runtime_env ``working_dir`` (minus `excludes`: the virtual
    environment, git data and local runs would blow the upload limit). On success the job's summary is the last JSON
    object it printed (``jobs/train.py`` prints its summary). Token authentication: with `auth_token_env` set, the
    token is read from that environment variable when the client is made and sent as a bearer header (never
    logged); otherwise the client sends what Ray itself finds when ``RAY_AUTH_MODE=token`` (``RAY_AUTH_TOKEN``,
    ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``).
    """

    name = "job_submission"

    def __init__(
        self,
        address: str,
        *,
        working_dir: str | Path = ".",
        script: str = "jobs/train.py",
        python: str = "python",
        excludes: Sequence[str] = (".venv", ".git", "runs", "mlruns", "__pycache__"),
        runtime_env: dict[str, Any] | None = None,
        auth_token_env: str | None = None,
    ) -> None:
        if not address or not str(address).strip():
            raise ValueError("address: must be the dashboard address, e.g. http://127.0.0.1:8265")
        wd = Path(working_dir).expanduser().resolve()
        if not wd.is_dir():
            raise ValueError(f"working_dir: {str(wd)!r} is not a directory")
        if not (wd / script).is_file():
            raise ValueError(f"script: {script!r} is not a file under working_dir {str(wd)!r}")
        self.address = str(address)
        self.working_dir = str(wd)
        self.script = script
        self.python = python
        self.runtime_env = {**(runtime_env or {}), "working_dir": self.working_dir, "excludes": list(excludes)}
        self.auth_token_env = auth_token_env
        self._client: Any = None

    def _get_client(self) -> Any:
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            headers = None
            if self.auth_token_env:
                token = os.environ.get(self.auth_token_env, "").strip()
                if not token:
                    raise ValueError(f"auth_token_env: environment variable {self.auth_token_env} is not set")
                headers = {"Authorization": f"Bearer {token}"}
            self._client = JobSubmissionClient(self.address, headers=headers)
        return self._client

    def entrypoint(self, argv: Sequence[str]) -> str:
        return shlex.join([self.python, self.script, *[str(a) for a in argv]])

    def launch(self, argv: Sequence[str]) -> str:
        return str(
            self._get_client().submit_job(
                entrypoint=self.entrypoint(argv),
                runtime_env=self.runtime_env,
                submission_id="tradesys-retrain-" + uuid.uuid4().hex[:12],
            )
        )

    def poll(self, job_id: str) -> JobState:
        from ray.job_submission import JobStatus

        client = self._get_client()
        status = client.get_job_status(job_id)
        if status == JobStatus.SUCCEEDED:
            summary = last_json_object(client.get_job_logs(job_id))
            if summary is None:
                return JobState("failed", error="job succeeded but printed no JSON summary")
            return JobState("succeeded", summary=summary)
        if status in (JobStatus.FAILED, JobStatus.STOPPED):
            info = client.get_job_info(job_id)
            return JobState("failed", error=f"{status.value}: {info.message or ''}"[:2000])
        return JobState("running")
