"""MLflow tracking for the training jobs: where runs go, and what a training run records.

Why one module: the Tune trials, the final fit and the registry must all talk to the same tracking store with the
same experiment and artifact location, and every run must record the same things (parameters, per-epoch metrics,
the exports, the walk-forward report, the model with its signature), so runs are comparable in the MLflow UI.

Conventions:

* Tracking URI: an explicit argument, else ``$MLFLOW_TRACKING_URI``, else a local SQLite store
  ``sqlite:///<runs_dir>/mlflow.db`` (``runs_dir`` defaults to ``runs``, made absolute). The SQLite store also holds
  the model registry. Artifacts of experiments this module creates go to ``<runs_dir>/mlartifacts/<experiment>``
  (an absolute ``file://`` URI), not to MLflow's cwd-relative default.
* Per-epoch metrics use the history row's ``epoch`` as the MLflow ``step``; non-finite values are skipped (MLflow
  stores NaN, but a NaN-only curve helps nobody) and the ``epoch`` key itself is not logged as a metric.
* The logged model is the eager torch module, pickled (`mlflow.pytorch.log_model`), with a signature inferred from
  a sample input batch (float32, (batch, lookback, n_features)) and its outputs, named ``ret``, ``vol``, ``dir_logit``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "DEFAULT_OUTPUT_NAMES",
    "ensure_experiment",
    "log_artifacts",
    "log_epoch_metrics",
    "log_json",
    "log_params",
    "log_torch_model",
    "resolve_tracking_uri",
    "setup_tracking",
]

DEFAULT_OUTPUT_NAMES: tuple[str, ...] = ("ret", "vol", "dir_logit")


def resolve_tracking_uri(uri: str | None = None, *, runs_dir: str | os.PathLike[str] = "runs") -> str:
    """The tracking URI: `uri`, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<abs runs_dir>/mlflow.db``."""
    if uri is not None and not str(uri).strip():
        raise ValueError("tracking_uri: must be a non-empty URI or None")
    chosen = uri or os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if chosen:
        return str(chosen)
    d = Path(runs_dir).expanduser().resolve()
    d.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{d / 'mlflow.db'}"


def _artifact_root(tracking_uri: str, runs_dir: str | os.PathLike[str]) -> Path:
    """Local artifact root: next to a SQLite file, else under runs_dir."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts"
    return Path(runs_dir).expanduser().resolve() / "mlartifacts"


def ensure_experiment(name: str, tracking_uri: str, *, runs_dir: str | os.PathLike[str] = "runs") -> str:
    """Create experiment `name` (with a local artifact location) if missing; return its id. Sets the tracking URI."""
    import mlflow

    if not name or not name.strip():
        raise ValueError("experiment: must be a non-empty name")
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    root = _artifact_root(tracking_uri, runs_dir) / name
    root.mkdir(parents=True, exist_ok=True)
    return str(mlflow.create_experiment(name, artifact_location=root.as_uri()))


def setup_tracking(
    experiment: str = "tradesys-train",
    tracking_uri: str | None = None,
    *,
    runs_dir: str | os.PathLike[str] = "runs",
) -> tuple[str, str]:
    """Resolve the URI, point MLflow (tracking and registry) at it, make the experiment current: (uri, exp id)."""
    import mlflow

    uri = resolve_tracking_uri(tracking_uri, runs_dir=runs_dir)
    exp_id = ensure_experiment(experiment, uri, runs_dir=runs_dir)
    mlflow.set_experiment(experiment_id=exp_id)
    return uri, exp_id


def _flat(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in params.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flat(v, key + "."))
        else:
            out[key] = str(v)[:6000]  # MLflow's param value limit
    return out


def log_params(params: Mapping[str, Any]) -> None:
    """Log (nested dicts flattened with dots) parameters to the active run."""
    import mlflow

    flat = _flat(params)
    if flat:
        mlflow.log_params(flat)


def log_epoch_metrics(row: Mapping[str, float], step: int | None = None) -> None:
    """Log one `fit_model` history row to the active run at step = its epoch (finite values only)."""
    import mlflow

    step = int(row.get("epoch", 0)) if step is None else int(step)
    metrics = {k: float(v) for k, v in row.items() if k != "epoch" and math.isfinite(float(v))}
    if metrics:
        mlflow.log_metrics(metrics, step=step)


def log_artifacts(paths: Iterable[str | os.PathLike[str]], artifact_path: str | None = None) -> None:
    """Log files (e.g. the ONNX/TorchScript exports) to the active run; a missing file is an error."""
    import mlflow

    for p in paths:
        if not Path(p).is_file():
            raise ValueError(f"artifact: {str(p)!r} is not a file")
        mlflow.log_artifact(str(p), artifact_path=artifact_path)


def log_json(obj: Any, name: str) -> None:
    """Log a JSON-serialisable object (e.g. the walk-forward report) as an artifact file `name`."""
    import mlflow

    mlflow.log_text(json.dumps(obj, indent=2, sort_keys=True, default=str), name)


def log_torch_model(
    model: nn.Module,
    sample: np.ndarray | torch.Tensor,
    *,
    name: str = "model",
    output_names: tuple[str, ...] = DEFAULT_OUTPUT_NAMES,
    registered_model_name: str | None = None,
    serialization_format: Literal["pickle", "pt2"] = "pickle",
) -> Any:
    """Log `model` with a signature inferred from `sample` (float32 (batch, lookback, F)); returns MLflow's ModelInfo.

    The output schema names each head (``output_names``); the model is put in eval mode for the probe.
    ``"pickle"`` (default) keeps a dynamic batch axis and needs `tradesys` importable where it is loaded;
    ``"pt2"`` (MLflow 3's default) stores a ``torch.export`` graph traced on `sample`, which fixes its shapes.
    """
    import mlflow
    import mlflow.pytorch
    import torch  # here, not at import: a sweep or a drift check logs to MLflow without loading torch
    from mlflow.models import infer_signature

    x = torch.as_tensor(np.asarray(sample, dtype=np.float32))
    if x.ndim != 3 or x.shape[0] < 1:
        raise ValueError(f"sample: must be a non-empty (batch, lookback, n_features) array, got {tuple(x.shape)}")
    model.eval()
    with torch.no_grad():
        out = model(x)
    outs = (out,) if isinstance(out, torch.Tensor) else tuple(out)
    if len(outs) != len(output_names):
        raise ValueError(f"output_names: model returns {len(outs)} outputs, got {len(output_names)} names")
    pred = {n: o.numpy() for n, o in zip(output_names, outs, strict=True)}
    signature = infer_signature(x.numpy(), pred)
    return mlflow.pytorch.log_model(
        model,
        name=name,
        signature=signature,
        registered_model_name=registered_model_name,
        serialization_format=serialization_format,
        input_example=x.numpy() if serialization_format == "pt2" else None,
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
    )
