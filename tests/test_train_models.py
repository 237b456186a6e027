"""The forecasters and the uncertainty-weighted loss: shapes, causality of the Transformer (its output at t must not
move when inputs after t move), the sinusoidal encoding's closed form, the Kendall-Gal-Cipolla loss's closed-form
minimiser and its learned weights on tasks with known noise, overfitting a tiny set, and learning a planted AR
signal that beats the naive forecast out of sample by about the theoretical margin."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from tradesys.train.data import Standardizer, make_samples, walk_forward_splits
from tradesys.train.fit import FitConfig, fit_model, predict
from tradesys.train.models import (
    LSTMAttentionForecaster,
    MultiTaskLoss,
    SinusoidalPositionalEncoding,
    TransformerForecaster,
    build_model,
)

torch.set_num_threads(1)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # torch's own LSTM shape checks under tracing
@pytest.mark.parametrize("kind", ["transformer", "lstm"])
def test_output_shapes_and_positive_vol(kind: str) -> None:
    torch.manual_seed(0)
    model = build_model(kind, 3, **({"d_model": 16} if kind == "transformer" else {"hidden": 16})).eval()  # type: ignore[arg-type]
    x = torch.randn(5, 12, 3)
    ret, vol, logit = model(x)
    assert ret.shape == vol.shape == logit.shape == (5,)
    assert torch.all(vol > 0)
    # a traced model gives the same numbers on a fresh input (the serving path exports it; the trace check also
    # guards against fused inference-only ops such as nn.TransformerEncoderLayer's fast path, which ONNX cannot take)
    scripted = torch.jit.trace(model, x)
    x2 = torch.randn(5, 12, 3)
    with torch.no_grad():
        for a, b in zip(scripted(x2), model(x2), strict=True):
            torch.testing.assert_close(a, b)


def test_transformer_is_causal() -> None:
    torch.manual_seed(0)
    model = TransformerForecaster(3, d_model=16, n_heads=4, n_layers=2, dropout=0.0).eval()
    x = torch.randn(4, 16, 3)
    t = 9
    y = x.clone()
    y[:, t + 1 :] = torch.randn(4, 16 - t - 1, 3) * 5.0
    with torch.no_grad():
        a, b = model.forward_sequence(x), model.forward_sequence(y)
    for oa, ob in zip(a, b, strict=True):
        torch.testing.assert_close(oa[:, : t + 1], ob[:, : t + 1], rtol=1e-5, atol=1e-6)
        assert (oa[:, t + 1 :] - ob[:, t + 1 :]).abs().max() > 1e-3  # later positions do see the change
    # and the decision-time output depends on the earlier inputs (the mask does not cut the past off)
    z = x.clone()
    z[:, 0] += 3.0
    with torch.no_grad():
        assert (model(z)[0] - model(x)[0]).abs().max() > 1e-4


def test_sinusoidal_encoding_closed_form() -> None:
    pe = SinusoidalPositionalEncoding(8, max_len=50).pe
    for p, i in [(0, 0), (3, 1), (17, 2), (49, 3)]:
        angle = p / 10000 ** (2 * i / 8)
        assert float(pe[p, 2 * i]) == pytest.approx(math.sin(angle), abs=1e-6)
        assert float(pe[p, 2 * i + 1]) == pytest.approx(math.cos(angle), abs=1e-6)


def test_lstm_attention_weights_are_a_distribution() -> None:
    torch.manual_seed(0)
    model = LSTMAttentionForecaster(2, hidden=8).eval()
    h = torch.randn(3, 7, 8)
    ctx, w = model.attn(h, h[:, -1])
    torch.testing.assert_close(w.sum(dim=1), torch.ones(3))
    torch.testing.assert_close(ctx, torch.einsum("bl,bld->bd", w, h))


def test_multitask_loss_closed_form_and_minimiser() -> None:
    loss = MultiTaskLoss(("regression", "classification"))
    with torch.no_grad():
        loss.log_vars.copy_(torch.tensor([0.3, -0.4]))
    L = torch.tensor([2.0, 0.5])
    expected = 0.5 * math.exp(-0.3) * 2.0 + 0.15 + math.exp(0.4) * 0.5 - 0.2
    assert float(loss(L).detach()) == pytest.approx(expected, rel=1e-6)
    # with fixed task losses, the optimum is s = log L (regression) and s = log 2L (classification)
    opt = torch.optim.Adam(loss.parameters(), lr=0.05)
    for _ in range(800):
        opt.zero_grad()
        loss(L).backward()
        opt.step()
    np.testing.assert_allclose(loss.log_vars.detach().numpy(), [math.log(2.0), math.log(1.0)], atol=1e-3)


def test_uncertainty_weighting_learns_the_noise_levels() -> None:
    """Two linear regression tasks on the same inputs, noise sd 0.1 and 1.0: s_i -> log sigma_i^2."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 4, generator=g)
    w = torch.tensor([1.0, -2.0, 0.5, 1.5])
    sig = (0.1, 1.0)
    y1 = x @ w + sig[0] * torch.randn(2000, generator=g)
    y2 = x @ w.flip(0) + sig[1] * torch.randn(2000, generator=g)
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 2)
    loss = MultiTaskLoss(("regression", "regression"))
    opt = torch.optim.Adam([*net.parameters(), *loss.parameters()], lr=0.03)
    for _ in range(600):
        out = net(x)
        losses = torch.stack([((out[:, 0] - y1) ** 2).mean(), ((out[:, 1] - y2) ** 2).mean()])
        opt.zero_grad()
        loss(losses).backward()
        opt.step()
    s = loss.log_vars.detach().numpy()
    assert s[1] > s[0] + 3.0  # the noisier task gets the larger s (smaller weight)
    np.testing.assert_allclose(s, [2 * math.log(0.1), 2 * math.log(1.0)], atol=0.25)


def _tiny_samples(n_rows: int, seed: int) -> pd.Series:
    rng = np.random.default_rng(seed)
    return pd.Series(0.01 * rng.standard_normal(n_rows), index=pd.bdate_range("2021-01-01", periods=n_rows))


@pytest.mark.parametrize("kind", ["transformer", "lstm"])
def test_tiny_model_overfits_a_tiny_set(kind: str) -> None:
    s = make_samples(_tiny_samples(60, 1), lookback=8, vol_horizon=3).subset(np.arange(16))
    z = Standardizer.fit(s).transform(s)
    kw = {"d_model": 32, "dropout": 0.0} if kind == "transformer" else {"hidden": 32, "dropout": 0.0}
    torch.manual_seed(0)
    model = build_model(kind, 4, **kw)  # type: ignore[arg-type]
    cfg = FitConfig(epochs=250, batch_size=16, lr=3e-3, weight_decay=0.0, val_fraction=0.0, seed=0)
    res = fit_model(model, z, cfg)
    out = predict(res.model, z)
    # memorised: errors under 1% of each target's variance, directions right with confidence
    assert np.mean((out["ret"] - z.y_ret) ** 2) < 0.01 * np.var(z.y_ret)
    assert np.mean((out["vol"] - z.y_vol) ** 2) < 0.01 * np.var(z.y_vol)
    assert np.all(np.abs(out["p_up"] - z.y_dir) < 0.1)


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_network_learns_a_planted_ar_signal_out_of_sample(kind: str) -> None:
    """r_t = 0.6 r_{t-1} + e_t: the best forecast has MSE sigma^2, the zero forecast sigma^2 / (1 - 0.36)."""
    rng = np.random.default_rng(3)
    n, phi, sd = 2200, 0.6, 0.01
    e = sd * rng.standard_normal(n)
    r = np.zeros(n)
    for i in range(1, n):
        r[i] = phi * r[i - 1] + e[i]
    s = make_samples(pd.Series(r), lookback=5, vol_horizon=1)
    sp = walk_forward_splits(s, n_folds=1, test_size=500)[0]
    sc = Standardizer.fit(s, sp.train)
    torch.manual_seed(0)
    model = build_model(kind, 4, **({"hidden": 16} if kind == "lstm" else {"d_model": 16}), dropout=0.0)  # type: ignore[arg-type]
    res = fit_model(model, sc.transform(s.subset(sp.train)), FitConfig(epochs=25, lr=3e-3, patience=5, purge=1))
    pred = predict(res.model, sc.transform(s.subset(sp.test)))["ret"] * sc.ret_scale
    y = s.y_ret[sp.test]
    mse_net, mse_naive = np.mean((y - pred) ** 2), np.mean(y**2)
    mse_oracle = np.mean((y - phi * s.returns.to_numpy()[s.t[sp.test]]) ** 2)
    assert mse_net < 0.8 * mse_naive  # theory: 0.64
    assert mse_net < 1.1 * mse_oracle
    # and the direction head picks the sign up better than a coin
    p_up = predict(res.model, sc.transform(s.subset(sp.test)))["p_up"]
    assert np.mean((p_up > 0.5) == (s.y_dir[sp.test] > 0.5)) > 0.62


def test_training_is_deterministic_and_restores_the_best_epoch() -> None:
    s = make_samples(_tiny_samples(400, 5), lookback=10, vol_horizon=3)
    z = Standardizer.fit(s).transform(s)
    cfg = FitConfig(epochs=6, patience=2, seed=11, purge=3)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)  # model initialisation; fit_model seeds the training itself from cfg.seed
        runs.append(fit_model(TransformerForecaster(4, d_model=16, n_layers=1), z, cfg))
    assert runs[0].history == runs[1].history
    val = [row["val_loss"] for row in runs[0].history]
    assert runs[0].best_epoch == int(np.argmin(val))
    assert runs[0].best_val_loss == pytest.approx(min(val))
    seen: list[float] = []
    fit_model(
        LSTMAttentionForecaster(4, hidden=8), z, FitConfig(epochs=2), on_epoch=lambda row: seen.append(row["epoch"])
    )
    assert seen == [0.0, 1.0]
