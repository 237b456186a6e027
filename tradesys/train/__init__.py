"""Forecasting models and their life cycle, as pure modules the Ray shell (Tune jobs, Serve, DriftMonitor) calls.

* `models`: multi-task Transformer (causal) and LSTM with attention; `MultiTaskLoss` (Kendall-Gal-Cipolla).
* `data`: supervised samples from returns/features; walk-forward and purged k-fold splits with an embargo.
* `fit`: a plain, seeded training loop with early stopping (the body of a Tune trainable).
* `evaluate`: metrics, naive and GARCH baselines, Diebold-Mariano (HLN), the walk-forward report.
* `export` / `inference`: TorchScript and ONNX export with equivalence checks; torch, TorchScript, ONNX Runtime and
  TensorRT predictors behind one interface.
* `drift`: KS, PSI, Wasserstein, MMD, performance degradation, and the retraining policy.
"""
