"""Model-only inference benchmark: latency p50/p99 at batch 1 and best throughput, per backend, on one thread.

Models: the project's forecasters (`tradesys.train.models.build_model("lstm" | "transformer", n_features)` at their
default sizes, random weights: latency does not depend on the weights) or, with ``--models local``, two small
stand-ins defined here. Each model is exported to TorchScript and ONNX (`tradesys.train.export`), the exports are
checked against eager torch (`check_equivalence`, max |err| printed), then every backend that can run here is timed
through the same `Predictor.predict` that serving calls (input validation and the non-finite-row check included).
"raw p50" times the backend call alone (`Predictor._run`), so predict's own overhead is visible.

One thread everywhere: OMP/MKL pinned before torch is imported, ``torch.set_num_threads(1)``, ONNX Runtime
``intra_op_num_threads=1``. Latency: per-call wall times of ``--calls`` batch-1 calls after a warm-up; p50/p99 per
repeat, the median over ``--repeats`` repeats reported. Throughput: rows/s at each of ``--batches`` (calls sized
to ~0.1 s per repeat), median over repeats; the best batch size is reported. TensorRT runs only with an NVIDIA GPU
and the ``[gpu]`` extra; otherwise the reason it was skipped is printed.

    .venv/bin/python benchmarks/ml_inference.py [--models project|local] [--lookback 20] [--n-features 8]
        [--calls 1000] [--repeats 5] [--batches 1,8,32,128,512]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tradesys.train.export import check_equivalence, export_onnx, export_torchscript
from tradesys.train.inference import (
    OnnxRuntimePredictor,
    Predictor,
    TensorRTPredictor,
    TorchPredictor,
    TorchScriptPredictor,
    backend_status,
)

NAMES = ("ret", "vol", "dir_logit")


class LocalLSTM(nn.Module):
    """Stand-in: 2-layer LSTM (hidden 32), last state -> return, vol, direction heads."""

    def __init__(self, n_features: int, hidden: int = 32) -> None:
        super().__init__()
        self.lstm = nn.LSTM(n_features, hidden, num_layers=2, batch_first=True)
        self.heads = nn.Linear(hidden, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out, _ = self.lstm(x)
        o = self.heads(out[:, -1])
        return o[:, 0], nn.functional.softplus(o[:, 1]), o[:, 2]


class LocalTransformer(nn.Module):
    """Stand-in: causal Transformer encoder (d 32, 4 heads, 2 layers), last position -> three heads."""

    def __init__(self, n_features: int, lookback: int, d: int = 32) -> None:
        super().__init__()
        self.proj = nn.Linear(n_features, d)
        self.pos = nn.Parameter(0.02 * torch.randn(lookback, d))
        layer = nn.TransformerEncoderLayer(d, 4, 64, dropout=0.0, batch_first=True, norm_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.heads = nn.Linear(d, 3)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(lookback), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        o = self.heads(self.enc(self.proj(x) + self.pos, mask=self.mask, is_causal=True)[:, -1])
        return o[:, 0], nn.functional.softplus(o[:, 1]), o[:, 2]


def build_models(which: str, lookback: int, n_features: int) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    if which == "project":
        from tradesys.train.models import build_model

        return {"lstm": build_model("lstm", n_features), "transformer": build_model("transformer", n_features)}
    return {"lstm": LocalLSTM(n_features), "transformer": LocalTransformer(n_features, lookback)}


def latency_us(fn: Callable[[], object], calls: int, repeats: int) -> tuple[float, float]:
    """Median over repeats of the per-call p50 and p99, in microseconds."""
    for _ in range(max(50, calls // 10)):
        fn()
    p50s, p99s = [], []
    for _ in range(repeats):
        t = np.empty(calls)
        for i in range(calls):
            t0 = time.perf_counter_ns()
            fn()
            t[i] = time.perf_counter_ns() - t0
        p50s.append(float(np.percentile(t, 50)) / 1e3)
        p99s.append(float(np.percentile(t, 99)) / 1e3)
    return statistics.median(p50s), statistics.median(p99s)


def throughput(fn: Callable[[], object], batch: int, repeats: int, target_s: float = 0.1) -> float:
    """Median over repeats of rows per second; each repeat runs enough calls to take about target_s."""
    fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-6)
    n = max(3, int(target_s / one))
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        rates.append(batch * n / (time.perf_counter() - t0))
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", choices=["project", "local"], default="project")
    ap.add_argument("--lookback", type=int, default=20)
    ap.add_argument("--n-features", type=int, default=8)
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batches", default="1,8,32,128,512")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    torch.set_num_threads(1)
    import onnxruntime as ort

    t_start = time.perf_counter()
    print(f"# ml_inference: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}, torch {torch.__version__}, onnxruntime {ort.__version__}")
    print(f"# models={args.models} lookback={args.lookback} n_features={args.n_features} threads=1 "
          f"calls={args.calls} repeats={args.repeats} batches={batches}")
    status = backend_status()
    for name, why in status.items():
        if why:
            print(f"# {name}: skipped ({why})")
    rows = []
    shape = (args.lookback, args.n_features)
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in build_models(args.models, *shape).items():
            model.eval()
            n_params = sum(p.numel() for p in model.parameters())
            ts_path, onnx_path = Path(tmp) / f"{name}.pt", Path(tmp) / f"{name}.onnx"
            t0 = time.perf_counter()
            export_torchscript(model, ts_path, lookback=shape[0], n_features=shape[1], output_names=NAMES)
            t_ts = time.perf_counter() - t0
            t0 = time.perf_counter()
            meta = export_onnx(model, onnx_path, lookback=shape[0], n_features=shape[1], output_names=NAMES)
            t_onnx = time.perf_counter() - t0
            rep = check_equivalence(model, lookback=shape[0], n_features=shape[1], torchscript_path=ts_path,
                                    onnx_path=onnx_path, output_names=NAMES, batch_sizes=(1, 7, 64))
            errs = ", ".join(f"{b} {max(e.values()):.1e}" for b, e in rep.max_abs_err.items())
            print(f"# {name}: {n_params} parameters; export torchscript {t_ts:.1f} s, "
                  f"onnx {t_onnx:.1f} s ({meta.extra['exporter']} exporter); "
                  f"max |err| vs eager: {errs}; equivalent at 1e-5: {rep.ok}")
            preds: dict[str, Predictor] = {
                "torch": TorchPredictor(model, lookback=shape[0], n_features=shape[1], output_names=NAMES),
                "torchscript": TorchScriptPredictor(ts_path),
                "onnxruntime": OnnxRuntimePredictor(onnx_path, intra_op_num_threads=1, inter_op_num_threads=1),
            }
            if status["tensorrt"] is None:
                preds["tensorrt"] = TensorRTPredictor(onnx_path, max_batch=max(batches))
            rng = np.random.default_rng(0)
            for backend, pred in preds.items():
                x1 = rng.standard_normal((1, *shape)).astype(np.float32)
                p50, p99 = latency_us(lambda p=pred, x=x1: p.predict(x), args.calls, args.repeats)
                raw50, _ = latency_us(lambda p=pred, x=x1: p._run(x), args.calls, args.repeats)
                tput = {}
                for b in batches:
                    xb = rng.standard_normal((b, *shape)).astype(np.float32)
                    tput[b] = throughput(lambda p=pred, x=xb: p.predict(x), b, args.repeats)
                best = max(tput, key=lambda b: tput[b])
                rows.append((name, backend, p50, p99, raw50, tput[1], best, tput[best]))
    print()
    print("| model | backend | p50 µs (b=1) | p99 µs (b=1) | raw p50 µs | rows/s b=1 | best batch | rows/s best |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, backend, p50, p99, raw50, t1, best, tb in rows:
        print(f"| {name} | {backend} | {p50:.0f} | {p99:.0f} | {raw50:.0f} | {t1:,.0f} | {best} | {tb:,.0f} |")
    print(f"\n# total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
