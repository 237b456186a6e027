"""One `Predictor` interface over eager torch, TorchScript, ONNX Runtime (CPU) and TensorRT (NVIDIA GPU).

Why: serving (Ray Serve), the live loop and the benchmarks should switch backend by configuration, not code; each
backend hides its session/engine behind ``predict(x) -> {output name: array}`` on numpy arrays.

Conventions (shared with `tradesys.train.export`):

* ``x``: numpy array of shape (batch, lookback, n_features), any batch >= 0; converted to C-contiguous float32.
  The result maps each output name to a float32 array whose first axis is the batch, in the model's output order.
* Rows are independent. A row with a non-finite input is run as zeros and its outputs are set to NaN, so one bad
  row never fails or contaminates a batch; `Predictor.predict_with_reasons` also returns a per-row reason code
  (`REASON_OK` or `REASON_NON_FINITE`).
* ``max_batch``: larger batches are run in chunks of at most this size (bounds memory; TensorRT's optimisation
  profile is built for batches 1..max_batch).
* Threads: ``TorchPredictor``/``TorchScriptPredictor`` ``num_threads`` calls ``torch.set_num_threads`` (process
  wide); ``OnnxRuntimePredictor`` threads are per session (``intra_op_num_threads``, default 1: lowest latency at
  batch 1 and no oversubscription when Serve runs several replicas per node).
* A backend that cannot run here raises `BackendUnavailableError` naming the missing piece (GPU, CUDA build of
  torch, ``tensorrt`` from the ``[gpu]`` extra, ``onnxruntime``).

Entry point: ``load_predictor(model_or_path, backend="auto", **options)``.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from tradesys.train.export import (
    _TS_META_FILE,
    META_KEY,
    ExportMeta,
    TupleOutput,
    infer_output_names,
)

__all__ = [
    "BACKENDS",
    "REASON_NON_FINITE",
    "REASON_OK",
    "Backend",
    "BackendUnavailableError",
    "OnnxRuntimePredictor",
    "Predictor",
    "TensorRTPredictor",
    "TorchPredictor",
    "TorchScriptPredictor",
    "backend_status",
    "load_predictor",
]

Backend = Literal["torch", "torchscript", "onnxruntime", "tensorrt"]
BACKENDS: tuple[Backend, ...] = ("torch", "torchscript", "onnxruntime", "tensorrt")
REASON_OK = ""
REASON_NON_FINITE = "non_finite_input"


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run in this environment; the message names what is missing and the fix."""


class Predictor(ABC):
    """Runs a (batch, lookback, n_features) -> {name: (batch, ...)} model; subclasses implement `_run`."""

    backend: ClassVar[Backend]

    def __init__(self, *, lookback: int, n_features: int, output_names: Sequence[str],
                 max_batch: int | None = None) -> None:
        if max_batch is not None and (isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1):
            raise ValueError(f"max_batch: must be a positive integer or None, got {max_batch!r}")
        self.lookback = int(lookback)
        self.n_features = int(n_features)
        self.output_names: tuple[str, ...] = tuple(output_names)
        self.max_batch = max_batch
        self._tail_shapes: dict[str, tuple[int, ...]] | None = None

    @abstractmethod
    def _run(self, x: np.ndarray) -> Sequence[np.ndarray]:
        """Outputs in `output_names` order for a finite, C-contiguous float32 batch (1 <= batch <= max_batch)."""

    def _validate(self, x: Any) -> np.ndarray:
        try:
            arr = np.asarray(x)
        except Exception as exc:
            raise ValueError(f"x: not convertible to a numpy array: {exc}") from exc
        if arr.dtype.kind not in "fiub":
            raise ValueError(f"x: expected a numeric array, got dtype {arr.dtype}")
        want = (self.lookback, self.n_features)
        if arr.ndim != 3 or arr.shape[1:] != want:
            raise ValueError(f"x: expected shape (batch, lookback, n_features) = (batch, {want[0]}, {want[1]}), "
                             f"got {arr.shape}")
        return np.ascontiguousarray(arr, dtype=np.float32)

    def _empty(self) -> dict[str, np.ndarray]:
        if self._tail_shapes is None:
            outs = self._run(np.zeros((1, self.lookback, self.n_features), dtype=np.float32))
            self._tail_shapes = {k: tuple(o.shape[1:]) for k, o in zip(self.output_names, outs, strict=True)}
        return {k: np.empty((0, *s), dtype=np.float32) for k, s in self._tail_shapes.items()}

    def _predict(self, x: Any) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """Outputs and the non-finite row mask (None when every row is finite: the fast, common path)."""
        arr = self._validate(x)
        n = arr.shape[0]
        if n == 0:
            return self._empty(), None
        bad = None
        if not np.isfinite(arr).all():
            bad = ~np.isfinite(arr).reshape(n, -1).all(axis=1)
            arr = arr.copy()
            arr[bad] = 0.0
        if self.max_batch is None or n <= self.max_batch:
            outs = self._run(arr)
            out = {k: np.asarray(o, dtype=np.float32) for k, o in zip(self.output_names, outs, strict=True)}
        else:
            chunks = [self._run(arr[i:i + self.max_batch]) for i in range(0, n, self.max_batch)]
            out = {k: np.concatenate([np.asarray(c[j], dtype=np.float32) for c in chunks], axis=0)
                   for j, k in enumerate(self.output_names)}
        if bad is not None:
            for k, v in out.items():
                v = np.array(v, dtype=np.float32, copy=True)
                v[bad] = np.nan
                out[k] = v
        return out, bad

    def predict(self, x: Any) -> dict[str, np.ndarray]:
        """{output name: float32 array (batch, ...)} for x of shape (batch, lookback, n_features)."""
        return self._predict(x)[0]

    def predict_with_reasons(self, x: Any) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """`predict` plus a per-row reason code array (str): `REASON_OK`, or `REASON_NON_FINITE` (outputs NaN)."""
        out, bad = self._predict(x)
        n = next(iter(out.values())).shape[0]
        reasons = np.full(n, REASON_OK, dtype=f"<U{len(REASON_NON_FINITE)}")
        if bad is not None:
            reasons[bad] = REASON_NON_FINITE
        return out, reasons

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(lookback={self.lookback}, n_features={self.n_features}, "
                f"outputs={self.output_names})")


def _set_torch_threads(num_threads: int | None) -> None:
    if num_threads is None:
        return
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"num_threads: must be a positive integer or None, got {num_threads!r}")
    torch.set_num_threads(num_threads)


class TorchPredictor(Predictor):
    """Eager torch on CPU (or ``device``); the model is switched to eval mode and run under inference_mode."""

    backend: ClassVar[Backend] = "torch"

    def __init__(self, model: nn.Module, *, lookback: int, n_features: int,
                 output_names: Sequence[str] | None = None, device: str | torch.device = "cpu",
                 num_threads: int | None = None, max_batch: int | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model: must be a torch.nn.Module, got {type(model).__name__}")
        _set_torch_threads(num_threads)
        self.device = torch.device(device)
        model.to(self.device)
        names = infer_output_names(model, lookback, n_features, output_names)
        super().__init__(lookback=lookback, n_features=n_features, output_names=names, max_batch=max_batch)
        self.module = TupleOutput(model, names).eval()

    def _run(self, x: np.ndarray) -> Sequence[np.ndarray]:
        with torch.inference_mode():
            outs = self.module(torch.from_numpy(x).to(self.device))
        return [o.detach().to("cpu", torch.float32).numpy() for o in outs]


class TorchScriptPredictor(Predictor):
    """A TorchScript file from `tradesys.train.export.export_torchscript`, run under inference_mode."""

    backend: ClassVar[Backend] = "torchscript"

    def __init__(self, path: str | os.PathLike[str], *, device: str | torch.device = "cpu",
                 num_threads: int | None = None, max_batch: int | None = None) -> None:
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"path: {str(p)!r} is not a file")
        _set_torch_threads(num_threads)
        self.device = torch.device(device)
        files = {_TS_META_FILE: ""}
        try:
            self.module = torch.jit.load(str(p), map_location=self.device, _extra_files=files).eval()
        except Exception as exc:
            raise ValueError(f"path: {str(p)!r} is not a TorchScript file: {type(exc).__name__}: {exc}") from exc
        if not files[_TS_META_FILE]:
            raise ValueError(f"path: {str(p)!r} has no {_TS_META_FILE!r} (not exported by tradesys.train.export)")
        self.meta = ExportMeta.from_json(files[_TS_META_FILE])
        super().__init__(lookback=self.meta.lookback, n_features=self.meta.n_features,
                         output_names=self.meta.output_names, max_batch=max_batch)

    def _run(self, x: np.ndarray) -> Sequence[np.ndarray]:
        with torch.inference_mode():
            outs = self.module(torch.from_numpy(x).to(self.device))
        return [o.to("cpu", torch.float32).numpy() for o in outs]


class OnnxRuntimePredictor(Predictor):
    """An ONNX file from `tradesys.train.export.export_onnx` on ONNX Runtime's CPUExecutionProvider."""

    backend: ClassVar[Backend] = "onnxruntime"

    def __init__(self, path: str | os.PathLike[str], *, intra_op_num_threads: int = 1,
                 inter_op_num_threads: int = 1, max_batch: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailableError(
                "onnxruntime backend: the 'onnxruntime' package is not installed (pip install onnxruntime)"
            ) from exc
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"path: {str(p)!r} is not a file")
        for name, v in (("intra_op_num_threads", intra_op_num_threads), ("inter_op_num_threads", inter_op_num_threads)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name}: must be an integer >= 0 (0 = ONNX Runtime's default), got {v!r}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_num_threads
        opts.inter_op_num_threads = inter_op_num_threads
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(p), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ValueError(f"path: {str(p)!r} is not a loadable ONNX model: {type(exc).__name__}: {exc}") from exc
        custom = self.session.get_modelmeta().custom_metadata_map
        if META_KEY not in custom:
            raise ValueError(f"path: {str(p)!r} has no {META_KEY!r} metadata (not exported by tradesys.train.export)")
        self.meta = ExportMeta.from_json(custom[META_KEY])
        super().__init__(lookback=self.meta.lookback, n_features=self.meta.n_features,
                         output_names=self.meta.output_names, max_batch=max_batch)
        self._input_name = self.session.get_inputs()[0].name

    def _run(self, x: np.ndarray) -> Sequence[np.ndarray]:
        return self.session.run(list(self.output_names), {self._input_name: x})


def _tensorrt_missing() -> list[str]:
    """What stops TensorRT here, in words (empty when it can run)."""
    missing = []
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        missing.append("the 'tensorrt' package is not installed (install the [gpu] extra: pip install 'tradesys[gpu]')")
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        missing.append(f"no NVIDIA GPU is visible to torch (torch.cuda.is_available() is False; torch "
                       f"{torch.__version__} is {build})")
    return missing


class TensorRTPredictor(Predictor):
    """An ONNX file compiled to a TensorRT engine (TensorRT >= 10 Python API) with a 1..max_batch profile.

    Inputs and outputs live in torch CUDA tensors; the engine runs on torch's current stream. ``fp16=True`` lets
    TensorRT pick half-precision kernels (check accuracy with `tradesys.train.export.check_equivalence`-style
    comparisons before serving it). Raises `BackendUnavailableError` without a GPU or the ``tensorrt`` package.
    """

    backend: ClassVar[Backend] = "tensorrt"

    def __init__(self, path: str | os.PathLike[str], *, max_batch: int = 1024, opt_batch: int = 1,
                 fp16: bool = False, device: int = 0, workspace_bytes: int = 1 << 30) -> None:
        missing = _tensorrt_missing()
        if missing:
            raise BackendUnavailableError(
                "tensorrt backend unavailable: " + "; ".join(missing)
                + ". Use backend='onnxruntime' (CPU) or 'torchscript' instead."
            )
        import onnxruntime as ort
        import tensorrt as trt

        p = Path(path)
        if not p.is_file() or p.suffix.lower() != ".onnx":
            raise ValueError(f"path: {str(p)!r} is not an .onnx file (TensorRT builds its engine from ONNX)")
        if not 1 <= opt_batch <= max_batch:
            raise ValueError(f"opt_batch: need 1 <= opt_batch <= max_batch, got {opt_batch}, {max_batch}")
        custom = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
        if META_KEY not in custom:
            raise ValueError(f"path: {str(p)!r} has no {META_KEY!r} metadata (not exported by tradesys.train.export)")
        self.meta = ExportMeta.from_json(custom[META_KEY])
        super().__init__(lookback=self.meta.lookback, n_features=self.meta.n_features,
                         output_names=self.meta.output_names, max_batch=max_batch)
        self.device = torch.device("cuda", device)
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(p.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ValueError(f"path: TensorRT could not parse {str(p)!r}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
        if fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        tail = (self.lookback, self.n_features)
        profile.set_shape(self.meta.input_name, (1, *tail), (opt_batch, *tail), (max_batch, *tail))
        config.add_optimization_profile(profile)
        with torch.cuda.device(self.device):
            serialized = builder.build_serialized_network(network, config)
            if serialized is None:
                raise RuntimeError(f"tensorrt: engine build failed for {str(p)!r} (see the TensorRT log above)")
            self.engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
            self.context = self.engine.create_execution_context()

    def _run(self, x: np.ndarray) -> Sequence[np.ndarray]:
        with torch.cuda.device(self.device):
            xt = torch.from_numpy(x).to(self.device, non_blocking=False)
            self.context.set_input_shape(self.meta.input_name, tuple(xt.shape))
            self.context.set_tensor_address(self.meta.input_name, xt.data_ptr())
            outs = []
            for name in self.output_names:
                shape = tuple(self.context.get_tensor_shape(name))
                out = torch.empty(shape, dtype=torch.float32, device=self.device)
                self.context.set_tensor_address(name, out.data_ptr())
                outs.append(out)
            stream = torch.cuda.current_stream(self.device)
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError("tensorrt: execute_async_v3 failed")
            stream.synchronize()
        return [o.cpu().numpy() for o in outs]


def backend_status() -> dict[Backend, str | None]:
    """For each backend, None when it can run here, else why not (what the benchmarks print for skipped ones)."""
    status: dict[Backend, str | None] = {"torch": None, "torchscript": None, "onnxruntime": None, "tensorrt": None}
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        status["onnxruntime"] = "the 'onnxruntime' package is not installed"
    missing = _tensorrt_missing()
    status["tensorrt"] = "; ".join(missing) if missing else None
    return status


_SUFFIX_BACKEND: dict[str, Backend] = {".onnx": "onnxruntime", ".pt": "torchscript", ".ts": "torchscript",
                                       ".torchscript": "torchscript"}


def load_predictor(path_or_model: str | os.PathLike[str] | nn.Module, backend: Backend | Literal["auto"] = "auto",
                   **options: Any) -> Predictor:
    """A `Predictor` for a model or an exported file.

    * ``nn.Module``: backend "auto"/"torch" -> `TorchPredictor` (options need ``lookback`` and ``n_features``).
    * ``.onnx`` file: "auto"/"onnxruntime" -> `OnnxRuntimePredictor`; "tensorrt" -> `TensorRTPredictor`.
    * ``.pt``/``.ts``/``.torchscript`` file: "auto"/"torchscript" -> `TorchScriptPredictor`.

    ``options`` go to the backend's constructor (e.g. ``intra_op_num_threads``, ``num_threads``, ``max_batch``).
    """
    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"backend: must be 'auto' or one of {BACKENDS}, got {backend!r}")
    if isinstance(path_or_model, nn.Module):
        if backend not in ("auto", "torch"):
            raise ValueError(f"backend: {backend!r} needs an exported file; export the model with "
                             "tradesys.train.export.export_onnx/export_torchscript and pass its path")
        return TorchPredictor(path_or_model, **options)
    if not isinstance(path_or_model, (str, os.PathLike)):
        raise ValueError(f"path_or_model: expected a path or a torch.nn.Module, got {type(path_or_model).__name__}")
    p = Path(path_or_model)
    if not p.is_file():
        raise ValueError(f"path_or_model: {str(p)!r} is not a file")
    kind = _SUFFIX_BACKEND.get(p.suffix.lower())
    if kind is None:
        raise ValueError(f"path_or_model: cannot tell the format of {str(p)!r}; use one of {tuple(_SUFFIX_BACKEND)}")
    chosen: Backend = kind if backend == "auto" else backend
    if kind == "onnxruntime" and chosen == "onnxruntime":
        return OnnxRuntimePredictor(p, **options)
    if kind == "onnxruntime" and chosen == "tensorrt":
        return TensorRTPredictor(p, **options)
    if kind == "torchscript" and chosen == "torchscript":
        return TorchScriptPredictor(p, **options)
    raise ValueError(f"backend: {chosen!r} cannot load a {p.suffix} file (it loads as {kind!r}; "
                     "TensorRT builds from .onnx, eager 'torch' needs the nn.Module)")

