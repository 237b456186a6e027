"""Monte Carlo VaR/ES in torch: multivariate normal and t scenarios, antithetic variates, tail importance sampling.

Scenarios are FULL N-asset return vectors (what a full-revaluation engine needs), drawn in float64 on a chosen
device from a seeded ``torch.Generator`` in chunks (memory stays ``chunk_size x N`` whatever ``n_scenarios``):

* normal: X = mu + A Z, Z ~ N(0, I), A A' = Sigma (Cholesky; eigen-factor when Sigma is only semi-definite);
* t: X = mu + sqrt((nu - 2) / W) A Z with W ~ chi2(nu) (gamma draws), so ``cov`` is the COVARIANCE of X;
* antithetic: each draw Y is used as +Y and -Y (t: with the same W); ``n_scenarios`` is rounded up to even;
* importance sampling: Z ~ N(theta, I) instead (a mean shift, i.e. exponential tilting of the Gaussian factor)
  with likelihood ratio exp(-theta'Z + |theta|^2 / 2). The default theta points along the direction that raises
  the portfolio loss fastest, b = -A'e / |A'e|, with length Phi^-1(alpha): the tail of interest becomes the
  middle of the sampling distribution. For t only Z is tilted (W is not), which is still unbiased.

Estimators (weights w_i = LR_i / n, all 1/n without IS): VaR = inf{l : sum_i w_i 1{L_i > l} <= 1 - alpha}, and
ES = VaR + sum_i w_i (L_i - VaR)^+ / (1 - alpha) (Rockafellar-Uryasev; the Acerbi-Tasche tail mean). Standard
errors treat each antithetic pair as one unit (n/2 i.i.d. units): SE(ES)^2 = Var(w-unit of LR (L - VaR)^+) / (m
(1 - alpha)^2) (first-order, the VaR error does not enter at the optimum), SE(VaR) = sd(LR 1{L > VaR}) / (sqrt(m)
f(VaR)) with the loss density f from the Siddiqui difference quotient of the weighted quantile, Hall-Sheather
bandwidth. Horizon: mean and covariance are scaled by ``horizon_days`` (i.i.d. days).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import special

from tradesys.quant.risk.var import RiskEstimate, _as_vector, _check_alpha, _check_horizon, check_covariance

__all__ = [
    "TailEstimate",
    "factor_matrix",
    "mc_var",
    "resolve_device",
    "simulate_scenarios",
    "tail_estimates",
    "tail_shift",
]


def resolve_device(device: str | torch.device) -> torch.device:
    """torch device; "cuda" is checked for availability so a CPU-only host gets a clear error."""
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device: not a torch device: {device!r}") from None
    if d.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: CUDA is not available on this host (use 'cpu')")
    return d


def factor_matrix(cov: Any) -> np.ndarray:
    """A with A A' = cov: Cholesky when positive definite, else the eigen-factor V sqrt(max(lambda, 0))."""
    c = check_covariance(cov)
    try:
        return np.linalg.cholesky(c)
    except np.linalg.LinAlgError:
        lam, v = np.linalg.eigh(c)
        return v * np.sqrt(np.clip(lam, 0.0, None))


def tail_shift(cov: Any, exposures: Any, alpha: float) -> np.ndarray:
    """Importance-sampling shift of the standard-normal factors: Phi^-1(alpha) along b = -A'e / |A'e|."""
    a = _check_alpha(alpha)
    A = factor_matrix(cov)
    e = _as_vector(exposures, "exposures")
    d = -(A.T @ e)
    norm = float(np.linalg.norm(d))
    if norm == 0.0:
        return np.zeros_like(d)
    return float(special.ndtri(a)) * d / norm


def _generator(seed: int | None, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    if seed is None:
        g.seed()
    else:
        g.manual_seed(int(seed))
    return g


def _draw_chunk(
    k: int,
    A: torch.Tensor,
    mu: torch.Tensor,
    theta: torch.Tensor | None,
    dist: str,
    nu: float | None,
    antithetic: bool,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """k units of scenarios: X (k, g, N), likelihood ratios (k, g), with g = 2 (antithetic pair) or 1."""
    n_assets = A.shape[0]
    y = torch.randn(k, n_assets, generator=gen, dtype=A.dtype, device=A.device)
    z = torch.stack((y, -y), dim=1) if antithetic else y[:, None, :]
    if theta is not None:
        z = z + theta
        lr = torch.exp(-(z @ theta) + 0.5 * float(theta @ theta))
    else:
        lr = torch.ones(z.shape[:2], dtype=A.dtype, device=A.device)
    x = z @ A.T
    if dist == "t":
        assert nu is not None
        w = 2.0 * torch._standard_gamma(torch.full((k,), 0.5 * nu, dtype=A.dtype, device=A.device), generator=gen)
        x = x * torch.sqrt((nu - 2.0) / w)[:, None, None]
    return x + mu, lr, z


def _prepare(
    mean: Any, cov: Any, dist: str, nu: float | None, device: str | torch.device, horizon_days: int
) -> tuple[torch.device, np.ndarray, np.ndarray, float | None]:
    if dist not in ("normal", "t"):
        raise ValueError(f"dist: must be 'normal' or 't', got {dist!r}")
    dev = resolve_device(device)
    h = _check_horizon(horizon_days)
    c = check_covariance(cov)
    mu = _as_vector(mean, "mean") if mean is not None else np.zeros(c.shape[0])
    if mu.size != c.shape[0]:
        raise ValueError(f"mean: length {mu.size} does not match cov {c.shape}")
    if dist == "t":
        if nu is None or not float(nu) > 2.0:
            raise ValueError(f"nu: degrees of freedom must be given and > 2 for the t distribution, got {nu!r}")
        nu = float(nu)
    return dev, mu * h, c * h, nu


def simulate_scenarios(
    mean: Any,
    cov: Any,
    n_scenarios: int,
    *,
    dist: str = "normal",
    nu: float | None = None,
    antithetic: bool = False,
    shift: Any = None,
    seed: int | None = 0,
    device: str | torch.device = "cpu",
    horizon_days: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Asset-return scenarios (n x N, float64, on ``device``) and their likelihood ratios (n; ones without shift).

    With ``antithetic`` rows i and i + n/2 are the pair (+Y, -Y). ``shift`` is theta in factor space (see
    ``tail_shift``). Weight scenario i by ``lr[i] / n`` in any estimator.
    """
    if int(n_scenarios) < 1:
        raise ValueError(f"n_scenarios: must be >= 1, got {n_scenarios!r}")
    dev, mu, c, nu = _prepare(mean, cov, dist, nu, device, horizon_days)
    n = int(n_scenarios)
    k = (n + 1) // 2 if antithetic else n
    A = torch.as_tensor(factor_matrix(c), dtype=torch.float64, device=dev)
    mu_t = torch.as_tensor(mu, dtype=torch.float64, device=dev)
    theta = None if shift is None else torch.as_tensor(_as_vector(shift, "shift"), dtype=torch.float64, device=dev)
    if theta is not None and theta.numel() != A.shape[0]:
        raise ValueError(f"shift: length {theta.numel()} does not match the {A.shape[0]} assets")
    x, lr, _ = _draw_chunk(k, A, mu_t, theta, dist, nu, antithetic, _generator(seed, dev))
    # (k, g, N) -> rows: all +Y first, then all -Y
    return x.transpose(0, 1).reshape(-1, A.shape[0]), lr.transpose(0, 1).reshape(-1)


@dataclass(frozen=True)
class TailEstimate:
    var: float
    es: float
    var_se: float
    es_se: float
    tail_ess: float  # effective number of scenarios beyond VaR, (sum LR)^2 / sum LR^2 over the tail
    n: int


def _weighted_quantile_sorted(s: torch.Tensor, above: torch.Tensor, t: float) -> float:
    """Loss l = inf{l : P(L > l) <= t} from losses sorted descending and P(L > s_k) = above_k."""
    idx = torch.nonzero(above <= t * (1.0 + 1e-9)).max()
    return float(s[idx])


def tail_estimates(losses: torch.Tensor, lr: torch.Tensor | None, alpha: float) -> TailEstimate:
    """VaR, ES and their standard errors from losses (m, g): m i.i.d. units of g scenarios (g = 2: antithetic)."""
    a = _check_alpha(alpha)
    p = 1.0 - a
    if losses.ndim == 1:
        losses = losses[:, None]
    if lr is None:
        lr = torch.ones_like(losses)
    lr = lr.reshape(losses.shape)
    m, g = losses.shape
    n = m * g
    if n * p < 1.0 - 1e-9:
        raise ValueError(f"n_scenarios: {n} scenarios leave none beyond the {a} quantile")
    flat, wflat = losses.reshape(-1), lr.reshape(-1) / n
    order = torch.argsort(flat, descending=True)
    s, ws = flat[order], wflat[order]
    above = torch.cumsum(ws, 0) - ws
    var = _weighted_quantile_sorted(s, above, p)
    excess = torch.clamp(losses - var, min=0.0) * lr
    es = var + float(excess.sum()) / (n * p)
    # per-unit means -> i.i.d. across units
    es_unit = excess.mean(dim=1)
    es_se = float(es_unit.std(unbiased=True)) / math.sqrt(m) / p if m > 1 else math.nan
    ind_unit = ((losses > var).to(lr.dtype) * lr).mean(dim=1)
    sd_ind = float(ind_unit.std(unbiased=True)) if m > 1 else math.nan
    # Siddiqui density at VaR, Hall-Sheather bandwidth (in probability units), capped at half the tail
    zq = float(special.ndtri(a))
    phi = math.exp(-0.5 * zq * zq) / math.sqrt(2.0 * math.pi)
    bw = n ** (-1.0 / 3.0) * 1.959963984540054 ** (2.0 / 3.0) * (1.5 * phi * phi / (2.0 * zq * zq + 1.0)) ** (1.0 / 3.0)
    bw = min(bw, 0.5 * p)
    q_hi = _weighted_quantile_sorted(s, above, p - bw)
    q_lo = _weighted_quantile_sorted(s, above, p + bw)
    dens = 2.0 * bw / (q_hi - q_lo) if q_hi > q_lo else math.inf
    var_se = sd_ind / math.sqrt(m) / dens if dens > 0 else math.nan
    tail_lr = lr[losses > var]
    tsum = float(tail_lr.sum())
    ess = tsum * tsum / float((tail_lr * tail_lr).sum()) if tsum > 0 else 0.0
    return TailEstimate(var=var, es=es, var_se=var_se, es_se=es_se, tail_ess=ess, n=n)


def mc_var(
    mean: Any,
    cov: Any,
    exposures: Any,
    alpha: float = 0.99,
    *,
    dist: str = "normal",
    nu: float | None = None,
    n_scenarios: int = 100_000,
    antithetic: bool = False,
    importance: bool = False,
    shift: Any = None,
    seed: int | None = 0,
    device: str | torch.device = "cpu",
    chunk_size: int = 1 << 16,
    horizon_days: int = 1,
) -> RiskEstimate:
    """Monte Carlo VaR/ES of a linear portfolio with currency ``exposures`` e (P&L = e . X), with standard errors.

    ``mean``/``cov`` are one-day asset-return moments (scaled by ``horizon_days``). ``importance=True`` uses the
    default ``tail_shift``; ``shift`` overrides it. ``details``: ``var_se``, ``es_se``, ``n_scenarios``, ``tail_ess``
    (effective number of scenarios beyond VaR given the IS weights), ``shift_norm``, ``device``.
    """
    a = _check_alpha(alpha)
    dev, mu, c, nu = _prepare(mean, cov, dist, nu, device, horizon_days)
    e = _as_vector(exposures, "exposures")
    if e.size != c.shape[0]:
        raise ValueError(f"weights: length {e.size} does not match the {c.shape[0]} assets of cov")
    n = int(n_scenarios)
    if n < 2:
        raise ValueError(f"n_scenarios: must be >= 2, got {n_scenarios!r}")
    if int(chunk_size) < 2:
        raise ValueError(f"chunk_size: must be >= 2, got {chunk_size!r}")
    g = 2 if antithetic else 1
    units = -(-n // g)
    if units * g * (1.0 - a) < 1.0 - 1e-9:
        raise ValueError(f"n_scenarios: {n} scenarios leave none beyond the {a} quantile")
    A_np = factor_matrix(c)
    A = torch.as_tensor(A_np, dtype=torch.float64, device=dev)
    mu_t = torch.as_tensor(mu, dtype=torch.float64, device=dev)
    e_t = torch.as_tensor(e, dtype=torch.float64, device=dev)
    theta_np = None
    if shift is not None:
        theta_np = _as_vector(shift, "shift")
        if theta_np.size != e.size:
            raise ValueError(f"shift: length {theta_np.size} does not match the {e.size} assets")
    elif importance:
        d = -(A_np.T @ e)
        nd = float(np.linalg.norm(d))
        theta_np = float(special.ndtri(a)) * d / nd if nd > 0 else np.zeros_like(d)
    theta = None if theta_np is None else torch.as_tensor(theta_np, dtype=torch.float64, device=dev)
    gen = _generator(seed, dev)
    per_chunk = max(1, int(chunk_size) // g)
    loss_parts, lr_parts = [], []
    done = 0
    while done < units:
        k = min(per_chunk, units - done)
        x, lr, _ = _draw_chunk(k, A, mu_t, theta, dist, nu, antithetic, gen)
        loss_parts.append(-(x @ e_t))
        lr_parts.append(lr)
        done += k
    losses = torch.cat(loss_parts)
    lrs = torch.cat(lr_parts)
    t = tail_estimates(losses, lrs, a)
    details = {
        "var_se": t.var_se,
        "es_se": t.es_se,
        "n_scenarios": t.n,
        "tail_ess": t.tail_ess,
        "antithetic": bool(antithetic),
        "importance": theta is not None,
        "shift_norm": 0.0 if theta_np is None else float(np.linalg.norm(theta_np)),
        "dist": dist,
        "device": str(dev),
        "seed": seed,
        "scaling": "sqrt_time",
    }
    if dist == "t":
        details["nu"] = nu
    return RiskEstimate(t.var, t.es, a, _check_horizon(horizon_days), f"mc_{dist}", t.n, details)
