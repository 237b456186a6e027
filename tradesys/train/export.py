"""Export a forecasting network to TorchScript and ONNX, and check the exports against the eager model.

Why: the served model must not depend on the Python class that trained it, and ONNX Runtime (CPU) or TensorRT
(NVIDIA) run the same graph faster than eager torch at batch 1. Each export is one self-contained file that carries
its own metadata, so `tradesys.train.inference.load_predictor` needs only the path.

Conventions:

* The model is a ``torch.nn.Module`` whose ``forward(x)`` takes one float32 tensor ``x`` of shape
  (batch, lookback, n_features) and returns a dict of tensors, a tuple/list of tensors or one tensor; every output
  has the batch as its first axis (e.g. (batch,) per head), and rows are independent (row i of an output depends
  only on row i of ``x``). ``lookback`` and ``n_features`` are fixed by the export; the batch axis is dynamic.
* Output names: the dict keys in their order, else ``output_names`` when given, else ``output_0``, ``output_1``, ...
  (one tensor: ``output``). For `tradesys.train.models` networks pass ``output_names=("ret", "vol", "dir_logit")``.
* Metadata (`ExportMeta`) is stored as JSON inside the file: TorchScript ``_extra_files["tradesys_meta.json"]``,
  ONNX ``metadata_props["tradesys_meta"]``; `read_meta` reads either.
* ONNX: torch's dynamo-based exporter (``torch.onnx.export(..., dynamo=True)``, which needs ``onnxscript``), with
  a fallback to the older tracing exporter for models ``torch.export`` rejects (`export_onnx`); opset
  `DEFAULT_OPSET` (18: run by ONNX Runtime >= 1.14 and TensorRT 10), input ``x`` with a symbolic ``batch`` axis,
  weights inside the file (no external data; these models are far below the 2 GB protobuf limit).
* TorchScript: ``torch.jit.trace`` by default (lookback is fixed, so control flow on it is baked in correctly;
  shapes derived from the batch size stay symbolic), ``method="script"`` for models that script.
* Equivalence: `check_equivalence` runs eager torch, the TorchScript file and the ONNX file through the same
  `tradesys.train.inference` predictors on seeded random inputs of several batch sizes and reports the largest
  absolute error per backend and output (float32: expect ~1e-7..1e-6; the default tolerance is 1e-5).

Errors: bad arguments raise ``ValueError("field: reason")``; a model that does not run on a
(batch, lookback, n_features) input raises ``ValueError("model: ...")`` naming the shape it was given.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "DEFAULT_OPSET",
    "INPUT_NAME",
    "META_KEY",
    "EquivalenceReport",
    "ExportMeta",
    "TupleOutput",
    "check_equivalence",
    "export_onnx",
    "export_torchscript",
    "infer_output_names",
    "read_meta",
]

DEFAULT_OPSET = 18
INPUT_NAME = "x"
META_KEY = "tradesys_meta"
_TS_META_FILE = "tradesys_meta.json"
_EXAMPLE_BATCH = 2  # not 1: torch.export specialises a dimension whose example size is 1


@dataclass(frozen=True)
class ExportMeta:
    """What a loader needs besides the graph: the input shape it was exported for and the output names."""

    format: Literal["torchscript", "onnx"]
    lookback: int
    n_features: int
    output_names: tuple[str, ...]
    torch_version: str
    opset: int | None = None
    input_name: str = INPUT_NAME
    extra: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ExportMeta:
        d = json.loads(text)
        d["output_names"] = tuple(d["output_names"])
        return cls(**d)


class TupleOutput(nn.Module):
    """Wraps a model so forward returns a tuple in `output_names` order (what trace and ONNX want).

    Why: dict outputs are awkward for ``torch.jit.trace`` and lose their keys in ONNX; a fixed tuple order plus the
    names in `ExportMeta` round-trips them exactly.
    """

    def __init__(self, model: nn.Module, output_names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.output_names = tuple(output_names)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        out = self.model(x)
        if isinstance(out, Mapping):
            return tuple(out[k] for k in self.output_names)
        if isinstance(out, Tensor):
            return (out,)
        return tuple(out)


def _as_output_dict(out: Any, output_names: Sequence[str] | None) -> dict[str, Tensor]:
    """Model output -> {name: tensor} under the naming convention of the module docstring."""
    if isinstance(out, Mapping):
        items = list(out.items())
        if output_names is not None and tuple(output_names) != tuple(k for k, _ in items):
            raise ValueError(f"output_names: {tuple(output_names)} differ from the model's dict keys "
                             f"{tuple(k for k, _ in items)}")
        named = dict(items)
    elif isinstance(out, Tensor):
        names = tuple(output_names) if output_names is not None else ("output",)
        if len(names) != 1:
            raise ValueError(f"output_names: the model returns 1 tensor, got {len(names)} names")
        named = {names[0]: out}
    elif isinstance(out, (tuple, list)):
        names = tuple(output_names) if output_names is not None else tuple(f"output_{i}" for i in range(len(out)))
        if len(names) != len(out):
            raise ValueError(f"output_names: the model returns {len(out)} tensors, got {len(names)} names")
        named = dict(zip(names, out, strict=True))
    else:
        raise ValueError(f"model: forward must return a tensor, a tuple/list or a dict of tensors, got "
                         f"{type(out).__name__}")
    if len(set(named)) != len(named) or not named:
        raise ValueError(f"output_names: need unique, non-empty names, got {tuple(named)}")
    for k, v in named.items():
        if not isinstance(k, str) or not k:
            raise ValueError(f"output_names: {k!r} is not a non-empty string")
        if not isinstance(v, Tensor):
            raise ValueError(f"model: output {k!r} is a {type(v).__name__}, not a tensor")
    return named


def _check_dims(lookback: int, n_features: int) -> None:
    for name, v in (("lookback", lookback), ("n_features", n_features)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name}: must be a positive integer, got {v!r}")


def _check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: must be a torch.nn.Module, got {type(model).__name__}")
    return model


def _check_out_path(path: str | os.PathLike[str], suffixes: tuple[str, ...]) -> Path:
    """Fail before the (slow) export if the file could not be written."""
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise ValueError(f"path: {str(p)!r} must end with one of {suffixes}")
    if p.is_dir():
        raise ValueError(f"path: {str(p)!r} is a directory")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"path: parent directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"path: parent directory {str(parent)!r} is not writable")
    return p


def _tmp_path(p: Path) -> Path:
    """Sibling temp file: the export lands under its final name only when complete (os.replace is atomic), so a
    server reloading the path never reads a half-written model and a failed export leaves the old file."""
    return p.with_name(f".{p.name}.{os.getpid()}.tmp{p.suffix}")


@contextlib.contextmanager
def _quiet_torch_logs(level: int = logging.ERROR) -> Iterator[None]:
    """Hide the exporter's informational warnings (missing torchvision ops, symbolic-shape notes) during export;
    a failed export still raises with the exporter's own message."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch.fx.experimental.symbolic_shapes",
                                                "torch._dynamo", "torch._export")]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(level)
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, old, strict=True):
            lg.setLevel(lvl)


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Export in eval mode (dropout off, norms frozen) and restore the caller's mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _example_input(lookback: int, n_features: int, batch: int = _EXAMPLE_BATCH, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, lookback, n_features, generator=g, dtype=torch.float32)


def _probe(model: nn.Module, lookback: int, n_features: int, output_names: Sequence[str] | None) -> dict[str, Tensor]:
    """Run the model once on a (2, lookback, n_features) input; clear error if it does not fit the convention."""
    x = _example_input(lookback, n_features)
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:  # the model's own error says why; ours says what we fed it
        raise ValueError(
            f"model: forward failed on an input of shape {tuple(x.shape)} (batch, lookback, n_features): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    named = _as_output_dict(out, output_names)
    for k, v in named.items():
        if v.dim() < 1 or v.shape[0] != x.shape[0]:
            raise ValueError(
                f"model: output {k!r} has shape {tuple(v.shape)}; every output needs the batch "
                f"({x.shape[0]}) as its first axis"
            )
        if v.dtype != torch.float32:
            raise ValueError(f"model: output {k!r} is {v.dtype}; export expects float32 outputs")
    return named


def infer_output_names(model: nn.Module, lookback: int, n_features: int,
                       output_names: Sequence[str] | None = None) -> tuple[str, ...]:
    """Names of the model's outputs under the module's convention (runs the model once on a random input)."""
    _check_dims(lookback, n_features)
    with _eval_mode(_check_model(model)):
        return tuple(_probe(model, lookback, n_features, output_names))


def export_torchscript(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    lookback: int,
    n_features: int,
    output_names: Sequence[str] | None = None,
    method: Literal["trace", "script"] = "trace",
) -> ExportMeta:
    """Save ``model`` as a TorchScript file (``.pt``/``.ts``) whose forward returns a tuple in output-name order.

    ``method="script"`` scripts the `TupleOutput` wrapper (the model must be scriptable); ``"trace"`` records
    the ops on a (2, lookback, n_features) example. Returns the `ExportMeta` stored in the file.
    """
    _check_model(model)
    _check_dims(lookback, n_features)
    if method not in ("trace", "script"):
        raise ValueError(f"method: must be 'trace' or 'script', got {method!r}")
    p = _check_out_path(path, (".pt", ".ts", ".torchscript"))
    with _eval_mode(model):
        names = tuple(_probe(model, lookback, n_features, output_names))
        wrapper = TupleOutput(model, names).eval()
        try:
            if method == "script":
                compiled = torch.jit.script(wrapper)
            else:
                with torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore", torch.jit.TracerWarning)
                    compiled = torch.jit.trace(wrapper, _example_input(lookback, n_features), check_trace=False)
        except Exception as exc:
            raise ValueError(f"model: torch.jit.{method} failed: {type(exc).__name__}: {exc}") from exc
    meta = ExportMeta("torchscript", int(lookback), int(n_features), names, torch.__version__,
                      extra={"method": method})
    tmp = _tmp_path(p)
    try:
        torch.jit.save(compiled, str(tmp), _extra_files={_TS_META_FILE: meta.to_json()})
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    return meta


def _onnx_export_once(wrapper: nn.Module, x: Tensor, path: Path, names: tuple[str, ...], opset: int,
                      exporter: Literal["dynamo", "torchscript"]) -> None:
    quiet = io.StringIO()
    # grad stays enabled: under no_grad, eval-mode nn.TransformerEncoderLayer takes its fused fast path
    # (aten._transformer_encoder_layer_fwd), which neither ONNX exporter can translate
    with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), _quiet_torch_logs():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1)
            torch.onnx.export(
                wrapper, (x,), str(path), input_names=[INPUT_NAME], output_names=list(names), opset_version=opset,
                dynamo=True, dynamic_shapes=({0: batch},), external_data=False, verbose=False,
            )
        else:
            axes = {n: {0: "batch"} for n in (INPUT_NAME, *names)}
            torch.onnx.export(
                wrapper, (x,), str(path), input_names=[INPUT_NAME], output_names=list(names), opset_version=opset,
                dynamo=False, dynamic_axes=axes,
            )


def _short(exc: BaseException, limit: int = 300) -> str:
    """One line for an exporter failure: its root cause (torch wraps it in generic 'step i/3' errors)."""
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    text = re.sub(r"\x1b\[[0-9;]*m", "", f"{type(root).__name__}: {root}")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    lookback: int,
    n_features: int,
    output_names: Sequence[str] | None = None,
    opset: int = DEFAULT_OPSET,
    exporter: Literal["auto", "dynamo", "torchscript"] = "auto",
) -> ExportMeta:
    """Save ``model`` as one ONNX file with input ``x`` of shape (batch, lookback, n_features), batch dynamic.

    ``exporter="dynamo"``: torch's recommended exporter (``torch.export`` based; needs ``onnxscript``).
    ``"torchscript"``: torch's older tracing exporter (deprecated upstream but still shipped). ``"auto"`` (default)
    tries dynamo and falls back to the tracing exporter when ``torch.export`` rejects the model; e.g. an
    ``nn.TransformerEncoder`` given a causal mask buffer without ``is_causal=True`` makes torch compare the mask
    with a causal one (a data-dependent branch torch.export cannot trace). The exporter used, and why dynamo was
    skipped, are stored in ``ExportMeta.extra``. Returns the `ExportMeta` stored in the file's metadata_props.
    """
    _check_model(model)
    _check_dims(lookback, n_features)
    if isinstance(opset, bool) or not isinstance(opset, int) or not 13 <= opset <= 23:
        raise ValueError(f"opset: must be an integer in [13, 23], got {opset!r}")
    if exporter not in ("auto", "dynamo", "torchscript"):
        raise ValueError(f"exporter: must be 'auto', 'dynamo' or 'torchscript', got {exporter!r}")
    p = _check_out_path(path, (".onnx",))
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("export_onnx needs the 'onnx' package (pip install onnx onnxscript)") from exc
    extra: dict[str, str] = {}
    with _eval_mode(model):
        names = tuple(_probe(model, lookback, n_features, output_names))
        wrapper = TupleOutput(model, names).eval()
        x = _example_input(lookback, n_features)
        order: list[Literal["dynamo", "torchscript"]] = ["dynamo", "torchscript"] if exporter == "auto" else [exporter]
        errors: list[str] = []
        tmp = _tmp_path(p)
        for kind in order:
            try:
                _onnx_export_once(wrapper, x, tmp, names, opset, kind)
            except Exception as exc:
                errors.append(f"{kind} exporter: {_short(exc, 2000 if len(order) == 1 else 300)}")
                continue
            extra["exporter"] = kind
            if errors:
                extra["fallback_reason"] = errors[0]
            break
        else:
            tmp.unlink(missing_ok=True)
            raise ValueError("model: ONNX export failed: " + " | ".join(errors))
    meta = ExportMeta("onnx", int(lookback), int(n_features), names, torch.__version__, opset=opset, extra=extra)
    try:
        proto = onnx.load(str(tmp))
        del proto.metadata_props[:]
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_KEY, meta.to_json()
        onnx.save(proto, str(tmp))
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    return meta


def read_meta(path: str | os.PathLike[str]) -> ExportMeta:
    """The `ExportMeta` stored in a TorchScript or ONNX file written by this module."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"path: {str(p)!r} is not a file")
    if p.suffix.lower() == ".onnx":
        import onnx

        proto = onnx.load(str(p), load_external_data=False)
        props = {e.key: e.value for e in proto.metadata_props}
        if META_KEY not in props:
            raise ValueError(f"path: {str(p)!r} has no {META_KEY!r} metadata (not exported by tradesys)")
        return ExportMeta.from_json(props[META_KEY])
    files = {_TS_META_FILE: ""}
    try:
        torch.jit.load(str(p), map_location="cpu", _extra_files=files)
    except Exception as exc:
        raise ValueError(f"path: {str(p)!r} is not a TorchScript file: {type(exc).__name__}: {exc}") from exc
    if not files[_TS_META_FILE]:
        raise ValueError(f"path: {str(p)!r} has no {_TS_META_FILE!r} (not exported by tradesys)")
    return ExportMeta.from_json(files[_TS_META_FILE])


@dataclass(frozen=True)
class EquivalenceReport:
    """Largest |backend - eager| per backend and output over all batch sizes tried, and the verdict."""

    max_abs_err: dict[str, dict[str, float]]
    batch_sizes: tuple[int, ...]
    atol: float
    rtol: float
    failures: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.failures

    def raise_if_failed(self) -> None:
        if self.failures:
            raise AssertionError("export not equivalent to eager: " + "; ".join(self.failures))


def check_equivalence(
    model: nn.Module,
    *,
    lookback: int,
    n_features: int,
    torchscript_path: str | os.PathLike[str] | None = None,
    onnx_path: str | os.PathLike[str] | None = None,
    output_names: Sequence[str] | None = None,
    batch_sizes: Sequence[int] = (1, 2, 7, 64),
    atol: float = 1e-5,
    rtol: float = 1e-5,
    seed: int = 0,
) -> EquivalenceReport:
    """Compare the exported files with the eager model on seeded N(0, 1) inputs of each batch size.

    An element passes when |exported - eager| <= atol + rtol |eager| (numpy.isclose); NaN where eager is finite
    fails. Each failure is named "backend/output at batch B: max abs err E". Runs through the same predictors
    that serve the model, so it also checks the loaders and output naming.
    """
    from tradesys.train import inference

    _check_dims(lookback, n_features)
    if torchscript_path is None and onnx_path is None:
        raise ValueError("torchscript_path: give torchscript_path and/or onnx_path to compare against")
    if not batch_sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in batch_sizes):
        raise ValueError(f"batch_sizes: need positive integers, got {tuple(batch_sizes)!r}")
    if not (math.isfinite(atol) and math.isfinite(rtol)) or atol < 0 or rtol < 0:
        raise ValueError(f"atol: atol and rtol must be finite and >= 0, got {atol!r}, {rtol!r}")
    eager = inference.TorchPredictor(model, lookback=lookback, n_features=n_features, output_names=output_names)
    others: dict[str, inference.Predictor] = {}
    if torchscript_path is not None:
        others["torchscript"] = inference.TorchScriptPredictor(torchscript_path)
    if onnx_path is not None:
        others["onnxruntime"] = inference.OnnxRuntimePredictor(onnx_path)
    for name, pred in others.items():
        if pred.output_names != eager.output_names:
            raise ValueError(f"{name}: output names {pred.output_names} differ from the model's {eager.output_names}")
        if (pred.lookback, pred.n_features) != (lookback, n_features):
            raise ValueError(f"{name}: exported for (lookback, n_features) = {(pred.lookback, pred.n_features)}, "
                             f"not {(lookback, n_features)}")
    rng = np.random.default_rng(seed)
    errs: dict[str, dict[str, float]] = {n: dict.fromkeys(eager.output_names, 0.0) for n in others}
    failures: list[str] = []
    for b in batch_sizes:
        x = rng.standard_normal((b, lookback, n_features)).astype(np.float32)
        ref = eager.predict(x)
        for name, pred in others.items():
            got = pred.predict(x)
            for k, r in ref.items():
                g = got[k]
                if g.shape != r.shape:
                    failures.append(f"{name}/{k} at batch {b}: shape {g.shape} != eager {r.shape}")
                    continue
                diff = np.abs(g.astype(np.float64) - r.astype(np.float64))
                e = float(np.nanmax(diff)) if diff.size and not np.all(np.isnan(diff)) else 0.0
                if np.any(np.isnan(g) != np.isnan(r)):
                    e = math.inf
                errs[name][k] = max(errs[name][k], e)
                close = np.isclose(g, r, atol=atol, rtol=rtol, equal_nan=True)
                if not np.all(close):
                    failures.append(f"{name}/{k} at batch {b}: max abs err {e:.3g}")
    return EquivalenceReport(errs, tuple(int(b) for b in batch_sizes), float(atol), float(rtol), tuple(failures))
