"""One array API over numpy and torch, so a pricing kernel runs unchanged on a CPU array or a GPU tensor.

Kernels call `xp = namespace(*inputs)` and use `xp.exp`, `xp.log`, `xp.sqrt`, `xp.where`, ... plus the
`norm_cdf`/`norm_pdf` helpers here, which pick the right implementation for the input type. Inputs that mix
numpy arrays and Python scalars stay numpy; any torch tensor among the inputs makes the computation torch
(on that tensor's device and dtype).
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import numpy as np
from scipy import special

try:  # torch is a dependency, but keep the numpy path importable without it
    import torch
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]

Array = Any  # np.ndarray | torch.Tensor

INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def is_torch(x: Any) -> bool:
    return torch is not None and isinstance(x, torch.Tensor)


def namespace(*xs: Any) -> ModuleType:
    """numpy, or torch if any input is a torch tensor."""
    if torch is not None and any(isinstance(x, torch.Tensor) for x in xs):
        return torch
    return np


def asarrays(*xs: Any, dtype: Any = None) -> tuple[Array, ...]:
    """Convert inputs to one array type and broadcast them to a common shape (float64 unless told)."""
    xp = namespace(*xs)
    if xp is np:
        arrs = [np.asarray(x, dtype=dtype or np.float64) for x in xs]
        return tuple(np.broadcast_arrays(*arrs))
    ref = next(x for x in xs if isinstance(x, torch.Tensor))
    dt = dtype or (ref.dtype if ref.is_floating_point() else torch.float64)
    arrs = [x.to(dt) if isinstance(x, torch.Tensor) else torch.as_tensor(x, dtype=dt, device=ref.device) for x in xs]
    return tuple(torch.broadcast_tensors(*arrs))


def norm_cdf(x: Array) -> Array:
    """Standard normal CDF, accurate in the far left tail (scipy's ndtr / torch.special.ndtr)."""
    if is_torch(x):
        return torch.special.ndtr(x)
    return special.ndtr(x)


def norm_pdf(x: Array) -> Array:
    xp = namespace(x)
    return INV_SQRT_2PI * xp.exp(-0.5 * x * x)


def norm_ppf(p: Array) -> Array:
    if is_torch(p):
        return torch.special.ndtri(p)
    return special.ndtri(p)


def to_numpy(x: Array) -> np.ndarray:
    if is_torch(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)
