"""Export a trained PPO policy (RLlib RLModule) for inference, and load it back: observations -> target weights.

Why: serving (`POST /v1/rl/act`) and the `rl` strategy must not need RLlib or the training code, and must trade
exactly the weights the environment would have applied. An export is a directory:

* ``policy.onnx`` (ONNX, run by ONNX Runtime) and ``policy.pt`` (TorchScript): the deterministic action head,
  observation (batch, obs_dim) float32 -> action (batch, act_dim) float32. It is what `train.RLPolicy` computes
  with the RLModule: ``forward_inference``, the Gaussian's mean (no exploration), then RLlib's module-to-env
  mapping (``unsquash_action``: the action space's bounds, then a clip to them).
* ``policy.json``: the metadata (`PolicyMeta`): symbols, features, window and observation size, the action space,
  and the environment settings (`RLEnvConfig` minus its data) that turn an action into target weights.

`load_policy(path).act(obs)` runs the graph, then the environment's own action -> weights function
(`tradesys.rl.env`, step 1 of its module docstring: softmax or clip, max weight, gross leverage, the pre-trade
leverage limits), in float64, so the weights are bit for bit those the env books for that action. Bad input
raises ``ValueError("field: reason")``.
"""

from __future__ import annotations

import json
import os
import types
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tradesys.rl.env import RLEnvConfig

__all__ = ["META_FILE", "ONNX_FILE", "TS_FILE", "ExportedPolicy", "PolicyMeta", "export_policy", "load_policy"]

META_FILE, ONNX_FILE, TS_FILE = "policy.json", "policy.onnx", "policy.pt"
FORMAT = "tradesys-rl-policy/1"
INPUT, OUTPUT = "obs", "action"
Backend = Literal["auto", "onnxruntime", "torch"]


def _env_dict(env: RLEnvConfig) -> dict[str, Any]:
    """The environment settings as JSON values; ``data`` is dropped (the policy is served on any bars)."""
    out: dict[str, Any] = {}
    for f in fields(env):
        v = getattr(env, f.name)
        if f.name == "data":
            continue
        out[f.name] = v.model_dump(mode="json") if hasattr(v, "model_dump") else list(v) if isinstance(v, tuple) else v
    return out


@dataclass(frozen=True)
class PolicyMeta:
    """What a served policy needs besides its weights (written to ``policy.json``)."""

    symbols: tuple[str, ...]
    feature_names: tuple[str, ...]
    window: int
    obs_dim: int
    act_dim: int
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    action_mode: str
    env: dict[str, Any]
    files: dict[str, str]
    checkpoint: str
    torch_version: str
    format: str = FORMAT

    @property
    def n_assets(self) -> int:
        return len(self.symbols)

    def env_config(self) -> RLEnvConfig:
        """The `RLEnvConfig` the policy was trained with (without data)."""
        return RLEnvConfig.from_mapping({**self.env, "data": None})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("symbols", "feature_names", "action_low", "action_high"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = META_FILE) -> PolicyMeta:
        if d.get("format") != FORMAT:
            raise ValueError(f"path: {where} is not a tradesys RL policy export (format {d.get('format')!r}, "
                             f"expected {FORMAT!r})")  # fmt: skip
        try:
            return cls(**{f.name: (tuple(d[f.name]) if f.name in ("symbols", "feature_names", "action_low",
                                                                   "action_high") else d[f.name])
                          for f in fields(cls)})  # fmt: skip
        except KeyError as exc:
            raise ValueError(f"path: {where} lacks the key {exc.args[0]!r}") from None


def _env_weights(cfg: RLEnvConfig, n_assets: int, action: np.ndarray) -> np.ndarray:
    """Target weights (n, A) for actions (n, act_dim): the environment's own mapping (`_Core.weights`).

    It reads only ``cfg`` and ``n_assets`` of the core, so it is called on a stand-in holding those two."""
    from tradesys.rl.env import _Core

    return _Core.weights(types.SimpleNamespace(cfg=cfg, n_assets=n_assets), action)  # type: ignore[arg-type]


def _action_head(module: Any) -> Any:
    """An nn.Module: obs (batch, obs_dim) float32 -> the deterministic env action (batch, act_dim) float32."""
    import torch
    from torch import nn

    space = module.action_space
    low = torch.as_tensor(np.asarray(space.low, dtype=np.float32))
    high = torch.as_tensor(np.asarray(space.high, dtype=np.float32))
    act_dim = int(np.prod(space.shape))

    class ActionHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.module = module
            self.register_buffer("low", low)
            self.register_buffer("high", high)

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            out = self.module.forward_inference({"obs": obs})["action_dist_inputs"]
            mean = out[:, :act_dim]  # TorchDiagGaussian: (mean, log_std); deterministic = the mean
            a = self.low + (mean + 1.0) * (self.high - self.low) / 2.0  # unsquash_action
            return torch.minimum(torch.maximum(a, self.low), self.high)

    return ActionHead().eval()


def export_policy(
    checkpoint: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    env: RLEnvConfig,
    symbols: Sequence[str],
    feature_names: Sequence[str] | None = None,
    onnx: bool = True,
) -> PolicyMeta:
    """Export the RLModule of `checkpoint` (an `Algorithm.save_to_path` directory or an RLModule directory) to
    `out_dir` (module docstring). `env` and `symbols` are the training environment's settings and asset order
    (`feature_names`: default ``env.features``). ONNX is skipped, and the reason stored in ``files``, if the
    exporter fails; TorchScript always exports."""
    import torch

    from tradesys.rl.train import RLPolicy

    if not isinstance(env, RLEnvConfig):
        raise ValueError(f"env: expected an RLEnvConfig, got {type(env).__name__}")
    syms = tuple(str(s) for s in symbols)
    if not syms or len(set(syms)) != len(syms):
        raise ValueError(f"symbols: need distinct symbol names, got {list(syms)}")
    feats = tuple(feature_names) if feature_names is not None else tuple(env.features)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir: {str(out)!r} is a file")
    module = RLPolicy.from_checkpoint(checkpoint).module
    a = len(syms)
    obs_dim = int(np.prod(module.observation_space.shape))
    want = env.window * a * len(feats) + a + 1
    if obs_dim != want:
        raise ValueError(f"checkpoint: the module's observations have {obs_dim} values; window {env.window} x "
                         f"{a} symbols x {len(feats)} features + {a} weights + cash = {want}")  # fmt: skip
    space = module.action_space
    act_dim = int(np.prod(space.shape))
    want_act = a + 1 if env.action_mode == "softmax" else a
    if act_dim != want_act:
        raise ValueError(f"env.action_mode: {env.action_mode!r} with {a} symbols needs {want_act} actions, the "
                         f"module has {act_dim}")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    head = _action_head(module)
    example = torch.zeros(2, obs_dim, dtype=torch.float32)
    files: dict[str, str] = {}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(head, example, check_trace=False)
    tmp = out / f".{TS_FILE}.{os.getpid()}.tmp"
    torch.jit.save(traced, str(tmp))
    os.replace(tmp, out / TS_FILE)
    files["torch"] = TS_FILE
    if onnx:
        tmp = out / f".{ONNX_FILE}.{os.getpid()}.tmp"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(head, (example,), str(tmp), input_names=[INPUT], output_names=[OUTPUT],
                                  dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}}, opset_version=18,
                                  dynamo=False)  # fmt: skip
            os.replace(tmp, out / ONNX_FILE)
            files["onnxruntime"] = ONNX_FILE
        except Exception as exc:  # the exporter's reason is kept; TorchScript still serves
            files["onnx_error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        finally:
            tmp.unlink(missing_ok=True)
    meta = PolicyMeta(
        symbols=syms, feature_names=feats, window=env.window, obs_dim=obs_dim, act_dim=act_dim,
        action_low=tuple(float(x) for x in np.ravel(space.low)),
        action_high=tuple(float(x) for x in np.ravel(space.high)),
        action_mode=env.action_mode, env=_env_dict(env), files=files, checkpoint=str(Path(checkpoint).resolve()),
        torch_version=torch.__version__,
    )  # fmt: skip
    tmp = out / f".{META_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(meta.to_dict(), indent=2, allow_nan=False))
    os.replace(tmp, out / META_FILE)
    return meta


class ExportedPolicy:
    """A loaded export: `action(obs)` runs the graph, `act(obs)` adds the env's action -> weights mapping."""

    def __init__(self, meta: PolicyMeta, backend: Literal["onnxruntime", "torch"], run: Any) -> None:
        self.meta = meta
        self.backend = backend
        self._run = run
        self._env = meta.env_config()

    def _obs(self, obs: Any, field: str = "observations") -> np.ndarray:
        x = np.asarray(obs, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        d = self.meta.obs_dim
        if x.ndim != 2 or x.shape[1] != d:
            raise ValueError(f"{field}: shape {tuple(np.shape(obs))}, expected (n, {d}) or ({d},)")
        if not np.isfinite(x).all():
            i = int(np.argmin(np.isfinite(x).all(axis=1)))
            raise ValueError(f"{field}: row {i} has a NaN or infinite value (or one beyond float32)")
        return np.ascontiguousarray(x)

    def action(self, obs: Any) -> np.ndarray:
        """(n, obs_dim) observations -> (n, act_dim) float64 actions in the env's action bounds."""
        x = self._obs(obs)
        if x.shape[0] == 0:
            return np.zeros((0, self.meta.act_dim))
        return np.asarray(self._run(x), dtype=np.float64)

    def weights(self, action: np.ndarray) -> np.ndarray:
        """The env's target weights (n, A) for actions (n, act_dim)."""
        return _env_weights(self._env, self.meta.n_assets, np.asarray(action, dtype=np.float64))

    def act(self, obs: Any) -> np.ndarray:
        """(n, obs_dim) observations (or one (obs_dim,)) -> (n, A) target weights; cash is 1 - their sum."""
        a = self.action(obs)
        return self.weights(a) if len(a) else np.zeros((0, self.meta.n_assets))

    def __repr__(self) -> str:
        return f"ExportedPolicy({self.meta.n_assets} assets, obs_dim={self.meta.obs_dim}, backend={self.backend!r})"


def read_meta(path: str | os.PathLike[str]) -> tuple[PolicyMeta, Path]:
    """(metadata, export directory) of an export directory or its ``policy.json``."""
    p = Path(path)
    d = p.parent if p.name == META_FILE else p
    f = d / META_FILE
    if not f.is_file():
        raise ValueError(f"path: {str(p)!r} is not a policy export (no {META_FILE}; make one with export_policy)")
    try:
        raw = json.loads(f.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"path: cannot read {f}: {exc}") from None
    return PolicyMeta.from_dict(raw, str(f)), d


def load_policy(path: str | os.PathLike[str], backend: Backend = "auto", *, num_threads: int = 1) -> ExportedPolicy:
    """Load an export (directory or its ``policy.json``). ``auto``: ONNX Runtime when the export has an ONNX file
    and onnxruntime imports, else TorchScript. ``num_threads``: intra-op threads (1: lowest latency at batch 1)."""
    if backend not in ("auto", "onnxruntime", "torch"):
        raise ValueError(f"backend: must be 'auto', 'onnxruntime' or 'torch', got {backend!r}")
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"num_threads: must be an integer >= 1, got {num_threads!r}")
    meta, d = read_meta(path)
    if backend == "auto":
        try:
            import onnxruntime  # noqa: F401

            has_ort = True
        except ImportError:
            has_ort = False
        backend = "onnxruntime" if has_ort and "onnxruntime" in meta.files else "torch"
    if backend == "onnxruntime":
        if "onnxruntime" not in meta.files:
            why = meta.files.get("onnx_error", "not exported")
            raise ValueError(f"backend: the export at {str(d)!r} has no ONNX file ({why}); use backend='torch'")
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = num_threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(d / meta.files["onnxruntime"]), so, providers=["CPUExecutionProvider"])

        def run_ort(x: np.ndarray) -> np.ndarray:
            return sess.run([OUTPUT], {INPUT: x})[0]

        return ExportedPolicy(meta, "onnxruntime", run_ort)
    import torch

    if torch.get_num_threads() != num_threads:
        torch.set_num_threads(num_threads)
    ts = torch.jit.load(str(d / meta.files["torch"]), map_location="cpu").eval()

    def run_torch(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return ts(torch.from_numpy(x)).numpy()

    return ExportedPolicy(meta, "torch", run_torch)
