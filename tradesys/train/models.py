"""Multi-task forecasting networks over a look-back window, and the uncertainty-weighted multi-task loss.

Why multi-task: next-period return, realised volatility and direction share one representation of the recent
past; the heads are cheap, and one served model answers all three. The networks are plain torch modules whose
``forward`` takes one tensor and returns a tuple of tensors, so TorchScript/ONNX export and Ray Serve batching
need nothing model-specific.

Conventions:

* Input ``x`` is (batch, lookback, n_features) float32, time ascending (row -1 is the decision time t, standardised
  as in `tradesys.train.data`). ``forward(x)`` returns ``(ret, vol, dir_logit)``, each (batch,), for the decision
  time: ``ret`` the next return (in the target's scaled units), ``vol`` the next-h realised vol (scaled units;
  positive through softplus plus 1e-6), ``dir_logit`` the logit of P(r_{t+1} > 0).
* `TransformerForecaster`: input projection, sinusoidal positional encoding (Vaswani et al. 2017), pre-norm
  Transformer encoder layers (multi-head scaled dot-product attention + GELU feed-forward, residuals) with a causal
  (upper-triangular -inf) attention mask, so position s attends only to positions <= s; ``forward_sequence`` gives
  the heads at every position (used by the causality test). The look-back must not exceed ``max_len``.
* `LSTMAttentionForecaster`: input projection, stacked LSTM layers with residual connections and layer norm,
  additive (Bahdanau) attention of the last hidden state over all hidden states of the window, then a residual MLP
  block over [context, last state] feeding the heads.
* `MultiTaskLoss` (Kendall, Gal & Cipolla 2018, eqs. 7 and 10) with a learned s_i = log sigma_i^2 per task:
  regression tasks contribute 0.5 exp(-s_i) L_i + 0.5 s_i, classification tasks exp(-s_i) L_i + 0.5 s_i, where L_i
  is the task's mean loss (MSE; binary cross-entropy). For a regression task the minimiser over s_i is
  s_i = log L_i, so a noisier task ends with a larger s_i and a smaller weight.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = [
    "LSTMAttentionForecaster",
    "MultiTaskHeads",
    "MultiTaskLoss",
    "TransformerForecaster",
    "build_model",
    "task_losses",
]

Output = tuple[Tensor, Tensor, Tensor]
TaskKind = Literal["regression", "classification"]
TASKS: tuple[str, ...] = ("ret", "vol", "dir")
DEFAULT_KINDS: tuple[TaskKind, ...] = ("regression", "regression", "classification")  # the order of TASKS


class MultiTaskHeads(nn.Module):
    """Three linear heads on a shared representation: return, softplus volatility, direction logit."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.ret = nn.Linear(d_model, 1)
        self.vol = nn.Linear(d_model, 1)
        self.dir = nn.Linear(d_model, 1)

    def forward(self, h: Tensor) -> Output:
        return (
            self.ret(h).squeeze(-1),
            F.softplus(self.vol(h)).squeeze(-1) + 1e-6,
            self.dir(h).squeeze(-1),
        )


class SinusoidalPositionalEncoding(nn.Module):
    """PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(...), added to the input (Vaswani et al. 2017)."""

    def __init__(self, d_model: int, max_len: int = 1024) -> None:
        super().__init__()
        pos = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
        div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div[: d_model // 2])
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.pe[: x.shape[1]].unsqueeze(0)


class CausalEncoderLayer(nn.Module):
    """Pre-norm Transformer encoder layer: x + MHA(LN(x)) under a causal mask, then x + FFN(LN(x)).

    Written out with `F.scaled_dot_product_attention` rather than `nn.TransformerEncoderLayer` because the latter's
    inference fast path (a fused native op) is not exportable to ONNX and changes the traced graph."""

    def __init__(self, d_model: int, n_heads: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, dim_feedforward), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim_feedforward, d_model)
        )
        self.drop = nn.Dropout(dropout)
        self.attn_dropout = dropout

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        B, L, D = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(B, L, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        p = self.attn_dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, heads, L, dh)
        x = x + self.drop(self.out(a.transpose(1, 2).reshape(B, L, D)))
        return x + self.drop(self.ff(self.norm2(x)))


class TransformerForecaster(nn.Module):
    """Causal Transformer encoder over the window; the heads read the representation at each position."""

    def __init__(
        self,
        n_features: int,
        *,
        d_model: int = 32,
        n_heads: int = 4,
        n_layers: int = 2,
        dim_feedforward: int = 64,
        dropout: float = 0.1,
        max_len: int = 1024,
    ) -> None:
        super().__init__()
        if n_features < 1 or n_layers < 1:
            raise ValueError(f"n_features/n_layers: must be >= 1, got {n_features}/{n_layers}")
        if d_model % n_heads or d_model % 2:
            raise ValueError(f"d_model: must be even and divisible by n_heads ({d_model}, {n_heads})")
        self.n_features = n_features
        self.max_len = max_len
        self.proj = nn.Linear(n_features, d_model)
        self.pos = SinusoidalPositionalEncoding(d_model, max_len)
        self.layers = nn.ModuleList(
            CausalEncoderLayer(d_model, n_heads, dim_feedforward, dropout) for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.heads = MultiTaskHeads(d_model)

    def forward_sequence(self, x: Tensor) -> Output:
        """Heads at every position: each output is (batch, lookback); position s sees inputs 0..s only."""
        L = x.shape[1]
        mask = torch.triu(torch.full((L, L), float("-inf"), device=x.device, dtype=x.dtype), diagonal=1)
        h = self.pos(self.proj(x))
        for layer in self.layers:
            h = layer(h, mask)
        return self.heads(self.norm(h))

    def forward(self, x: Tensor) -> Output:
        ret, vol, logit = self.forward_sequence(x)
        return ret[:, -1], vol[:, -1], logit[:, -1]


class AdditiveAttention(nn.Module):
    """Bahdanau attention: score_s = v^T tanh(W h_s + U q); weights softmax over s; context sum_s a_s h_s."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.W = nn.Linear(d, d, bias=False)
        self.U = nn.Linear(d, d)
        self.v = nn.Linear(d, 1, bias=False)

    def forward(self, states: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
        scores = self.v(torch.tanh(self.W(states) + self.U(query).unsqueeze(1))).squeeze(-1)  # (B, L)
        weights = torch.softmax(scores, dim=1)
        return torch.bmm(weights.unsqueeze(1), states).squeeze(1), weights


class LSTMAttentionForecaster(nn.Module):
    """Residual stacked LSTM with additive attention over its hidden states (module docstring)."""

    def __init__(self, n_features: int, *, hidden: int = 32, n_layers: int = 2, dropout: float = 0.1) -> None:
        super().__init__()
        if n_features < 1 or hidden < 1 or n_layers < 1:
            raise ValueError(f"n_features/hidden/n_layers: must be >= 1, got {n_features}/{hidden}/{n_layers}")
        self.n_features = n_features
        self.proj = nn.Linear(n_features, hidden)
        self.lstms = nn.ModuleList(nn.LSTM(hidden, hidden, batch_first=True) for _ in range(n_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(n_layers))
        self.drop = nn.Dropout(dropout)
        self.attn = AdditiveAttention(hidden)
        self.mix = nn.Linear(2 * hidden, hidden)
        self.block = nn.Sequential(
            nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden)
        )
        self.heads = MultiTaskHeads(hidden)

    def forward(self, x: Tensor) -> Output:
        h = self.proj(x)
        for lstm, norm in zip(self.lstms, self.norms, strict=True):
            out, _ = lstm(h)
            h = norm(h + self.drop(out))  # residual around each LSTM layer
        last = h[:, -1]
        context, _ = self.attn(h, last)
        z = self.mix(torch.cat([context, last], dim=-1))
        z = z + self.drop(self.block(z))  # residual MLP block
        return self.heads(z)


def build_model(kind: Literal["transformer", "lstm"], n_features: int, **kwargs: int | float) -> nn.Module:
    """Construct a forecaster by name (for configs and Ray Tune search spaces); kwargs go to the class."""
    if kind == "transformer":
        return TransformerForecaster(n_features, **kwargs)  # type: ignore[arg-type]
    if kind == "lstm":
        return LSTMAttentionForecaster(n_features, **kwargs)  # type: ignore[arg-type]
    raise ValueError(f"kind: must be 'transformer' or 'lstm', got {kind!r}")


def task_losses(pred: Output, y_ret: Tensor, y_vol: Tensor, y_dir: Tensor) -> Tensor:
    """Per-task mean losses (3,): MSE of the return, MSE of the vol, binary cross-entropy of the direction."""
    ret, vol, logit = pred
    return torch.stack(
        [
            F.mse_loss(ret, y_ret),
            F.mse_loss(vol, y_vol),
            F.binary_cross_entropy_with_logits(logit, y_dir),
        ]
    )


class MultiTaskLoss(nn.Module):
    """Kendall-Gal-Cipolla uncertainty weighting; ``log_vars`` holds the learned s_i (module docstring)."""

    def __init__(self, kinds: Sequence[TaskKind] = DEFAULT_KINDS) -> None:
        super().__init__()
        if not kinds or any(k not in ("regression", "classification") for k in kinds):
            raise ValueError(f"kinds: each must be 'regression' or 'classification', got {list(kinds)}")
        self.kinds = tuple(kinds)
        self.log_vars = nn.Parameter(torch.zeros(len(kinds)))
        self.register_buffer("factor", torch.tensor([0.5 if k == "regression" else 1.0 for k in kinds]))

    def forward(self, losses: Tensor) -> Tensor:
        """Total loss from per-task mean losses (n_tasks,): sum_i c_i exp(-s_i) L_i + 0.5 s_i."""
        if losses.shape != self.log_vars.shape:
            raise ValueError(f"losses: expected shape {tuple(self.log_vars.shape)}, got {tuple(losses.shape)}")
        return torch.sum(self.factor * torch.exp(-self.log_vars) * losses + 0.5 * self.log_vars)

    def weights(self) -> Tensor:
        """The current effective weights c_i exp(-s_i)."""
        return (self.factor * torch.exp(-self.log_vars)).detach()
