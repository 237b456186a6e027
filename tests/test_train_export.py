"""Export (TorchScript, ONNX) and inference backends: exported graphs reproduce the eager model.

Reference: the eager torch forward of the same module, called directly (not through our predictors). Small
models of our own (an LSTM with linear heads returning a dict, a causal Transformer encoder returning a tuple),
so the tests do not depend on `tradesys.train.models`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tradesys.train.export import (
    DEFAULT_OPSET,
    check_equivalence,
    export_onnx,
    export_torchscript,
    read_meta,
)
from tradesys.train.inference import (
    REASON_NON_FINITE,
    REASON_OK,
    BackendUnavailableError,
    OnnxRuntimePredictor,
    TensorRTPredictor,
    TorchPredictor,
    TorchScriptPredictor,
    backend_status,
    load_predictor,
)

LOOKBACK, N_FEATURES = 12, 5
BATCHES = (1, 2, 7, 33)


class TinyLSTM(nn.Module):
    """Two-layer LSTM, last hidden state -> return and volatility heads (dict output)."""

    def __init__(self, n_features: int = N_FEATURES, hidden: int = 16, dropout: float = 0.2) -> None:
        super().__init__()
        self.lstm = nn.LSTM(n_features, hidden, num_layers=2, batch_first=True, dropout=dropout)
        self.ret = nn.Linear(hidden, 1)
        self.vol = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out, _ = self.lstm(x)
        h = out[:, -1]
        return {"ret": self.ret(h).squeeze(-1), "vol": nn.functional.softplus(self.vol(h)).squeeze(-1)}


class TinyTransformer(nn.Module):
    """Causal Transformer encoder; outputs the per-position return forecast and the last position's logit."""

    def __init__(self, n_features: int = N_FEATURES, lookback: int = LOOKBACK, d: int = 16) -> None:
        super().__init__()
        self.proj = nn.Linear(n_features, d)
        self.pos = nn.Parameter(0.1 * torch.randn(lookback, d))
        layer = nn.TransformerEncoderLayer(d, nhead=2, dim_feedforward=32, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.seq_head = nn.Linear(d, 1)
        self.dir_head = nn.Linear(d, 1)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(lookback), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # mask only (no is_causal flag), as tradesys.train.models does: under no_grad this takes the fused
        # encoder fast path that the ONNX exporter cannot translate, so export_onnx must keep grad enabled
        h = self.enc(self.proj(x) + self.pos, mask=self.mask)
        return self.seq_head(h).squeeze(-1), self.dir_head(h[:, -1]).squeeze(-1)


def eager(model: nn.Module, x: np.ndarray) -> list[np.ndarray]:
    """Reference outputs: the module's own forward in eval mode, as a list in output order."""
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(x))
    out = list(out.values()) if isinstance(out, dict) else list(out)
    return [o.numpy() for o in out]


@pytest.fixture(scope="module")
def lstm_exports(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path, Path]:
    torch.manual_seed(0)
    model = TinyLSTM()
    d = tmp_path_factory.mktemp("lstm")
    export_torchscript(model, d / "m.pt", lookback=LOOKBACK, n_features=N_FEATURES)
    export_onnx(model, d / "m.onnx", lookback=LOOKBACK, n_features=N_FEATURES)
    return model, d / "m.pt", d / "m.onnx"


@pytest.fixture(scope="module")
def transformer_exports(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path, Path]:
    torch.manual_seed(1)
    model = TinyTransformer()
    d = tmp_path_factory.mktemp("tf")
    names = ("ret_seq", "dir_logit")
    export_torchscript(model, d / "m.pt", lookback=LOOKBACK, n_features=N_FEATURES, output_names=names)
    export_onnx(model, d / "m.onnx", lookback=LOOKBACK, n_features=N_FEATURES, output_names=names)
    return model, d / "m.pt", d / "m.onnx"


@pytest.mark.parametrize("which", ["lstm", "transformer"])
def test_backends_match_eager_forward(which: str, request: pytest.FixtureRequest) -> None:
    model, ts_path, onnx_path = request.getfixturevalue(f"{which}_exports")
    predictors = [TorchPredictor(model, lookback=LOOKBACK, n_features=N_FEATURES),
                  TorchScriptPredictor(ts_path), OnnxRuntimePredictor(onnx_path)]
    rng = np.random.default_rng(42)
    for b in BATCHES:
        x = rng.standard_normal((b, LOOKBACK, N_FEATURES)).astype(np.float32)
        ref = eager(model, x)
        for pred in predictors:
            got = pred.predict(x)
            assert len(got) == len(ref)
            for g, r in zip(got.values(), ref, strict=True):
                assert g.shape == r.shape and g.dtype == np.float32
                np.testing.assert_allclose(g, r, atol=1e-5, rtol=1e-5, err_msg=f"{pred.backend} batch {b}")


def test_both_onnx_exporters_match_eager(lstm_exports, tmp_path: Path) -> None:
    model, _, onnx_path = lstm_exports
    assert read_meta(onnx_path).extra == {"exporter": "dynamo"}  # an LSTM goes through torch.export
    meta = export_onnx(model, tmp_path / "legacy.onnx", lookback=LOOKBACK, n_features=N_FEATURES,
                       exporter="torchscript")
    assert meta.extra == {"exporter": "torchscript"}
    pred = OnnxRuntimePredictor(tmp_path / "legacy.onnx")
    rng = np.random.default_rng(5)
    for b in BATCHES:
        x = rng.standard_normal((b, LOOKBACK, N_FEATURES)).astype(np.float32)
        for g, r in zip(pred.predict(x).values(), eager(model, x), strict=True):
            np.testing.assert_allclose(g, r, atol=1e-5, rtol=1e-5)
    assert not list(tmp_path.glob(".*tmp*"))  # the temp file was renamed into place


def test_check_equivalence_passes_and_reports_small_errors(lstm_exports, transformer_exports) -> None:
    for (model, ts_path, onnx_path), names in ((lstm_exports, None), (transformer_exports, ("ret_seq", "dir_logit"))):
        rep = check_equivalence(model, lookback=LOOKBACK, n_features=N_FEATURES, torchscript_path=ts_path,
                                onnx_path=onnx_path, output_names=names, batch_sizes=BATCHES)
        assert rep.ok, rep.failures
        rep.raise_if_failed()
        assert set(rep.max_abs_err) == {"torchscript", "onnxruntime"}
        assert all(0.0 <= e < 1e-5 for errs in rep.max_abs_err.values() for e in errs.values())


def test_check_equivalence_detects_a_changed_model(lstm_exports) -> None:
    """The check can fail: the exported files no longer match after the eager weights move."""
    model, ts_path, onnx_path = lstm_exports
    changed = TinyLSTM()
    changed.load_state_dict(model.state_dict())
    with torch.no_grad():
        changed.ret.bias += 1e-3
    rep = check_equivalence(changed, lookback=LOOKBACK, n_features=N_FEATURES, torchscript_path=ts_path,
                            onnx_path=onnx_path, batch_sizes=(3,))
    assert not rep.ok
    assert any(f.startswith("onnxruntime/ret") for f in rep.failures)
    assert any(f.startswith("torchscript/ret") for f in rep.failures)
    assert math.isclose(rep.max_abs_err["onnxruntime"]["ret"], 1e-3, rel_tol=1e-2)
    assert rep.max_abs_err["onnxruntime"]["vol"] < 1e-5  # the vol head did not change
    with pytest.raises(AssertionError, match="not equivalent"):
        rep.raise_if_failed()


def test_causal_mask_survives_export(transformer_exports) -> None:
    """Changing inputs after position t leaves the per-position outputs up to t unchanged in every backend."""
    _, ts_path, onnx_path = transformer_exports
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, LOOKBACK, N_FEATURES)).astype(np.float32)
    t = 5
    x2 = x.copy()
    x2[:, t + 1:] = rng.standard_normal((4, LOOKBACK - t - 1, N_FEATURES))
    for pred in (TorchScriptPredictor(ts_path), OnnxRuntimePredictor(onnx_path)):
        a, b = pred.predict(x)["ret_seq"], pred.predict(x2)["ret_seq"]
        np.testing.assert_allclose(a[:, : t + 1], b[:, : t + 1], atol=1e-6)
        assert np.abs(a[:, t + 1:] - b[:, t + 1:]).max() > 1e-3  # the future does reach the later positions


def test_metadata_round_trip(transformer_exports) -> None:
    _, ts_path, onnx_path = transformer_exports
    ts, ox = read_meta(ts_path), read_meta(onnx_path)
    assert ts.format == "torchscript" and ox.format == "onnx"
    for m in (ts, ox):
        assert (m.lookback, m.n_features, m.output_names) == (LOOKBACK, N_FEATURES, ("ret_seq", "dir_logit"))
        assert m.torch_version == torch.__version__
    assert ox.opset == DEFAULT_OPSET
    assert ox.extra["exporter"] in ("dynamo", "torchscript")  # mask-only causal encoder: dynamo may hand over
    assert ts.extra["method"] == "trace"
    import onnx

    proto = onnx.load(str(onnx_path))
    assert {o.domain: o.version for o in proto.opset_import}[""] == DEFAULT_OPSET
    dim0 = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.dim_value  # a symbolic (dynamic) batch axis


def test_export_uses_eval_mode_and_restores_training(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = TinyLSTM(dropout=0.5).train()
    export_onnx(model, tmp_path / "m.onnx", lookback=LOOKBACK, n_features=N_FEATURES)
    assert model.training
    x = np.random.default_rng(0).standard_normal((5, LOOKBACK, N_FEATURES)).astype(np.float32)
    got = OnnxRuntimePredictor(tmp_path / "m.onnx").predict(x)
    ref = eager(model, x)  # eval-mode forward: dropout off
    np.testing.assert_allclose(got["ret"], ref[0], atol=1e-5)


def test_predictor_batches_bad_rows_and_chunks(lstm_exports) -> None:
    model, _, onnx_path = lstm_exports
    x = np.random.default_rng(1).standard_normal((9, LOOKBACK, N_FEATURES))  # float64 in: cast to float32
    ref = eager(model, x.astype(np.float32))
    for pred in (OnnxRuntimePredictor(onnx_path, max_batch=4), load_predictor(onnx_path)):
        np.testing.assert_allclose(pred.predict(x)["ret"], ref[0], atol=1e-5)
        bad = x.copy()
        bad[2, 3, 1] = np.nan
        bad[6, 0, 0] = np.inf
        out, reasons = pred.predict_with_reasons(bad)
        assert list(reasons) == [REASON_OK] * 2 + [REASON_NON_FINITE] + [REASON_OK] * 3 + [REASON_NON_FINITE] + [
            REASON_OK] * 2
        ok = reasons == REASON_OK
        assert np.isnan(out["ret"][~ok]).all() and np.isnan(out["vol"][~ok]).all()
        np.testing.assert_allclose(out["ret"][ok], ref[0][ok], atol=1e-5)
        empty = pred.predict(np.zeros((0, LOOKBACK, N_FEATURES), dtype=np.float32))
        assert {k: v.shape for k, v in empty.items()} == {"ret": (0,), "vol": (0,)}
        with pytest.raises(ValueError, match=r"^x: expected shape \(batch, lookback, n_features\)"):
            pred.predict(x[0])
        with pytest.raises(ValueError, match=r"^x: expected shape"):
            pred.predict(x[:, :, :3])


def test_onnxruntime_thread_count_is_configurable(lstm_exports) -> None:
    _, _, onnx_path = lstm_exports
    pred = OnnxRuntimePredictor(onnx_path, intra_op_num_threads=2, inter_op_num_threads=1)
    opts = pred.session.get_session_options()
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (2, 1)
    assert pred.session.get_providers() == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match=r"^intra_op_num_threads:"):
        OnnxRuntimePredictor(onnx_path, intra_op_num_threads=-1)


def test_load_predictor_dispatch(lstm_exports) -> None:
    model, ts_path, onnx_path = lstm_exports
    assert isinstance(load_predictor(onnx_path), OnnxRuntimePredictor)
    assert isinstance(load_predictor(ts_path), TorchScriptPredictor)
    assert isinstance(load_predictor(model, lookback=LOOKBACK, n_features=N_FEATURES), TorchPredictor)
    with pytest.raises(ValueError, match=r"^backend: 'onnxruntime' needs an exported file"):
        load_predictor(model, backend="onnxruntime")
    with pytest.raises(ValueError, match=r"^backend: 'torchscript' cannot load a .onnx file"):
        load_predictor(onnx_path, backend="torchscript")
    with pytest.raises(ValueError, match=r"^backend: must be"):
        load_predictor(onnx_path, backend="tflite")  # type: ignore[arg-type]


@pytest.mark.skipif(backend_status()["tensorrt"] is None, reason="TensorRT can run here")
def test_tensorrt_names_what_is_missing(lstm_exports) -> None:
    _, _, onnx_path = lstm_exports
    for make in (lambda: TensorRTPredictor(onnx_path), lambda: load_predictor(onnx_path, backend="tensorrt")):
        with pytest.raises(BackendUnavailableError) as info:
            make()
        msg = str(info.value)
        assert msg.startswith("tensorrt backend unavailable:")
        if not torch.cuda.is_available():
            assert "no NVIDIA GPU" in msg and "torch.cuda.is_available() is False" in msg
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            assert "'tensorrt' package is not installed" in msg and "[gpu]" in msg


class Rank2Model(nn.Module):
    """An MLP written for (batch, n_features) inputs: the wrong rank for a look-back model."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(N_FEATURES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _batch, _n_features = x.shape  # raises on a (batch, lookback, n_features) input
        return self.lin(x).squeeze(-1)


class NoBatchAxis(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean()


def test_export_errors_are_clear(tmp_path: Path) -> None:
    model = TinyLSTM()
    kw = {"lookback": LOOKBACK, "n_features": N_FEATURES}
    with pytest.raises(ValueError, match=r"^path: parent directory .* does not exist"):
        export_onnx(model, tmp_path / "missing" / "m.onnx", **kw)
    with pytest.raises(ValueError, match=r"^path: parent directory .* does not exist"):
        export_torchscript(model, tmp_path / "missing" / "m.pt", **kw)
    with pytest.raises(ValueError, match=r"^path: .* must end with one of \('.onnx',\)"):
        export_onnx(model, tmp_path / "m.pt", **kw)
    (tmp_path / "dir.pt").mkdir()
    with pytest.raises(ValueError, match=r"^path: .* is a directory"):
        export_torchscript(model, tmp_path / "dir.pt", **kw)
    with pytest.raises(ValueError, match=r"^model: forward failed on an input of shape \(2, 12, 5\)"):
        export_onnx(Rank2Model(), tmp_path / "r.onnx", **kw)
    with pytest.raises(ValueError, match=r"^model: forward failed on an input of shape \(2, 12, 5\)"):
        export_torchscript(Rank2Model(), tmp_path / "r.pt", **kw)
    with pytest.raises(ValueError, match=r"^model: output 'output' has shape .* batch"):
        export_onnx(NoBatchAxis(), tmp_path / "n.onnx", **kw)
    with pytest.raises(ValueError, match=r"^lookback: must be a positive integer"):
        export_onnx(model, tmp_path / "m.onnx", lookback=0, n_features=N_FEATURES)
    with pytest.raises(ValueError, match=r"^model: must be a torch.nn.Module"):
        export_onnx(lambda x: x, tmp_path / "m.onnx", **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^output_names: the model returns 2 tensors, got 3 names"):
        export_torchscript(TinyTransformer(), tmp_path / "t.pt", output_names=("a", "b", "c"), **kw)
    assert not any(tmp_path.glob("*.onnx")) and not (tmp_path / "r.pt").exists()


def test_loading_a_bad_file_is_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"^path: .* is not a loadable ONNX model"):
        load_predictor(junk)
    junk_ts = tmp_path / "junk.pt"
    junk_ts.write_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"^path: .* is not a TorchScript file"):
        load_predictor(junk_ts)
    with pytest.raises(ValueError, match=r"^path_or_model: .* is not a file"):
        load_predictor(tmp_path / "absent.onnx")
