"""Where training writes what must outlive a node: one setting, a path or an S3 URI (`TRADESYS_STORAGE`).

Why one setting: on a cluster, Tune trials, Ray Train workers and RLlib run on whichever worker has the CPUs or GPUs,
so their results and checkpoints must land where every node (and the driver, which reads the best checkpoint back)
can reach them, and the MLflow artifacts logged by the driver must be readable by whoever loads the model later.
That is either a shared file system (NFS/EFS) or an object store.

The setting: the trainers' ``storage`` argument (``jobs/train.py --storage``, ``jobs/rl_train.py --storage``), else
``$TRADESYS_STORAGE``, else the runs directory (``--runs-dir``, ``$TRADESYS_RUNS_DIR``): unset, everything is where it
always was. Its value is

* a path (absolute, or relative to the working directory; ``~`` expanded): Tune results ``<path>/tune``, Ray Train
  ``<path>/train``, RLlib Tune ``<path>/rl-tune``, MLflow artifacts of newly created experiments
  ``<path>/mlartifacts/<experiment>``: exactly the runs-directory layout;
* ``s3://bucket[/prefix]``: the same under the bucket (``s3://bucket/prefix/tune``, ``.../train``, ``.../rl-tune``)
  and the MLflow artifacts under ``s3://bucket/prefix/mlflow/<experiment>``. Ray writes through pyarrow's S3 file
  system and MLflow through boto3, both with the environment's credentials (instance profile, ``AWS_*``); a
  non-AWS endpoint is ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``; ``MLFLOW_S3_ENDPOINT_URL`` for MLflow
  alone).

What stays on the head, whatever the setting: the MLflow tracking and registry database (SQLite under the runs
directory, or ``$MLFLOW_TRACKING_URI``: a database or tracking server; the artifacts are only referenced from it)
and the ledgers (SQLite under the runs directory, or PostgreSQL): a database is not an object.

Refused in one line naming the setting: an empty value, another scheme (``gs://``, ``hdfs://``, ``file://``...),
a malformed S3 URI (``s3:/x``, ``s3://``, ``s3://Bad_Bucket``).

`parse_storage` and the path helpers are pure; `ray_storage` (pyarrow) and `ensure_experiment` (MLflow) touch the
outside world only when called.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "STORAGE_ENV",
    "Storage",
    "checkpoint_uri",
    "ensure_experiment",
    "parse_storage",
    "ray_storage",
    "resolve_storage",
]

STORAGE_ENV = "TRADESYS_STORAGE"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")  # S3's bucket naming rules (the common subset)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


@dataclass(frozen=True)
class Storage:
    """A parsed storage setting: ``root`` is ``s3://bucket/prefix`` (no trailing slash) or an absolute path."""

    root: str
    is_s3: bool

    def join(self, *parts: str) -> str:
        """``root/part/...`` as a URI (S3) or an absolute path."""
        if self.is_s3:
            return "/".join([self.root, *(p.strip("/") for p in parts)])
        return str(Path(self.root, *parts))

    @property
    def tune(self) -> str:
        """Ray Tune results and checkpoints of the forecaster search."""
        return self.join("tune")

    @property
    def train(self) -> str:
        """Ray Train results and checkpoints."""
        return self.join("train")

    @property
    def rl_tune(self) -> str:
        """RLlib Tune results and checkpoints."""
        return self.join("rl-tune")

    def mlflow_artifacts(self, experiment: str) -> str:
        """Artifact location of an MLflow experiment created by the trainers (a URI)."""
        if self.is_s3:
            return self.join("mlflow", experiment)
        return Path(self.root, "mlartifacts", experiment).as_uri()


def parse_storage(value: str | os.PathLike[str], *, setting: str = "storage") -> Storage:
    """Validate a storage value (module docstring); ValueError ``"<setting>: reason"`` in one line."""
    text = str(value).strip()
    if not text:
        raise ValueError(f"{setting}: must be a path or an s3://bucket/prefix URI, got an empty value")
    m = _SCHEME.match(text)
    if m is None or (len(m.group(1)) == 1 and os.name == "nt"):  # a plain path
        return Storage(str(Path(text).expanduser().resolve()), False)
    scheme = m.group(1).lower()
    if scheme != "s3":
        raise ValueError(f"{setting}: {text!r}: the scheme {scheme}:// is not supported; give a path (local or NFS) "
                         "or an s3://bucket/prefix URI")  # fmt: skip
    if not text.startswith("s3://"):
        raise ValueError(f"{setting}: {text!r} is not an S3 URI: write s3://bucket/prefix")
    bucket, _, prefix = text[len("s3://") :].partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ValueError(f"{setting}: {text!r}: {bucket!r} is not a valid S3 bucket name (3-63 characters: lower-case "
                         "letters, digits, '.', '-')")  # fmt: skip
    parts = [p for p in prefix.split("/") if p]
    if any(p in (".", "..") for p in parts) or any(c in prefix for c in "?#*"):
        raise ValueError(f"{setting}: {text!r}: the prefix must be a plain key prefix (no '.', '..', '?', '#', '*')")
    return Storage("/".join(["s3:/", bucket, *parts]), True)


def resolve_storage(given: str | None, runs_dir: str | os.PathLike[str]) -> Storage:
    """`given` (named ``storage``), else ``$TRADESYS_STORAGE`` (named so), else the runs directory."""
    if given is not None:
        return parse_storage(given, setting="storage")
    env = os.environ.get(STORAGE_ENV)
    if env is not None:
        return parse_storage(env, setting=STORAGE_ENV)
    return parse_storage(runs_dir, setting="runs_dir")


def _s3_endpoint() -> str | None:
    for var in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        v = os.environ.get(var, "").strip()
        if v:
            return v
    return None


def ray_storage(location: str) -> tuple[str, Any]:
    """``(storage_path, storage_filesystem)`` for a Ray Tune/Train ``RunConfig``.

    A path: itself, no file system (Ray's local default). An S3 URI: the bucket path without the scheme and a
    ``pyarrow.fs.S3FileSystem`` given ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` as its ``endpoint_override``
    when one is set (on AWS it is unset and pyarrow finds the bucket's region). Seen here with pyarrow 25 and moto:
    a bare ``S3FileSystem()`` reads the variable but addresses the bucket as a host name (``bucket.<endpoint>``),
    which a loopback endpoint does not resolve; with ``endpoint_override`` it reaches the server. Credentials are
    never put in the file system object (it is pickled to every trial): each process reads its own environment or
    instance profile.
    """
    if not location.startswith("s3://"):
        return location, None
    from pyarrow import fs

    endpoint = _s3_endpoint()
    kw: dict[str, Any] = {}
    if endpoint:
        kw["endpoint_override"] = endpoint
        kw["scheme"] = "http" if endpoint.startswith("http://") else "https"
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            kw["region"] = region
    return location[len("s3://") :], fs.S3FileSystem(**kw)


def checkpoint_uri(checkpoint: Any) -> str:
    """Where a ``ray.train.Checkpoint`` lives, as the user would name it: ``s3://...`` or a local path."""
    fs = getattr(checkpoint, "filesystem", None)
    if fs is not None and getattr(fs, "type_name", "") == "s3":
        return "s3://" + str(checkpoint.path)
    return str(checkpoint.path)


def ensure_experiment(name: str, tracking_uri: str, storage: Storage) -> str:
    """Create MLflow experiment `name` with its artifacts under `storage` when missing; return its id.

    An existing experiment keeps its artifact location (MLflow fixes it at creation): with S3 storage, one whose
    artifacts are elsewhere is refused naming the setting, so a run never silently keeps its artifacts on one node.
    """
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    exp = mlflow.get_experiment_by_name(name)
    want = storage.mlflow_artifacts(name)
    if exp is None:
        if not storage.is_s3:
            Path(storage.root, "mlartifacts", name).mkdir(parents=True, exist_ok=True)
        return str(mlflow.create_experiment(name, artifact_location=want))
    if storage.is_s3 and not str(exp.artifact_location).startswith(storage.root + "/"):
        raise ValueError(f"storage: the MLflow experiment {name!r} already keeps its artifacts at "
                         f"{exp.artifact_location}, not under {storage.root}; use another experiment name "
                         "(--experiment) for runs on this storage")  # fmt: skip
    return str(exp.experiment_id)
