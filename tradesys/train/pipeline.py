"""The training pipeline behind ``jobs/train.py`` and ``tradesys train run``: settings in, registered model out.

Why a module: the Ray job, the CLI and the drift monitor's retraining all run the same steps; keeping them here
(rather than in a script's ``main``) gives one validated settings object and one progress protocol for all of
them.

Steps (`run_training`): data (a `load_returns` data set or price CSV, or the offline feature store with
point-in-time features, `tradesys.train.store_data`) -> samples (lookback window; next return, next-h realised
vol, direction) -> the last ``holdout`` samples are the holdout, the training pool before them is purged of samples
whose labels reach into it -> a `Standardizer` fitted on the pool only -> training: a Ray Tune ASHA search
(`tradesys.train.tune.run_search`, one MLflow run per trial) or, with ``trainer="ray-train"``, one configuration
trained data-parallel by Ray Train (`tradesys.train.distributed`) -> the best checkpoint is scored on the holdout
against the naive and GARCH(1,1) forecasts -> one MLflow run logs the parameters, the per-epoch metrics, the
holdout metrics, the ONNX and TorchScript exports, the holdout report and the standardiser, and the model with its
signature -> a new registry version with the ``challenger`` alias -> the current champion is scored on the same
holdout and `promote_if_better` moves ``champion`` only if the challenger beats each baseline it is reported
against (naive and GARCH for ``vol_qlike``, naive for the others; the first model included) and a one-sided DM
test against the champion rejects at ``alpha``. A champion cut
with another lookback, vol horizon or feature set cannot be scored on these samples: the challenger is then not
promoted (reason ``incompatible_champion``).

Ray: `run_training` joins the Ray it finds (``ray.is_initialized()``, or ``RAY_ADDRESS`` inside a Ray job) and only
starts a local one when there is none.

Ray Train hyper-parameters (no search): `TrainSettings.hparams` when given; else the current champion's
configuration (its run's ``model.*`` parameters) when it has one; else `DEFAULT_HPARAMS`.

Progress events, passed to ``progress`` as plain dicts in the calling thread:

* ``{"event": "stage", "stage": s, ...}`` with s in ``data``, ``search`` (Tune; adds ``trials`` and
  ``max_epochs``), ``train`` (Ray Train; adds ``trials`` = 1, ``max_epochs``, ``num_workers``, ``hparams``),
  ``holdout``, ``register``, ``promote``, ``done`` (adds ``summary``).
* ``{"event": "trial_result", "trial_id", "epoch", "metrics": {"train_loss", "val_loss"}}`` per trial and epoch
  (``epoch`` 1-based; Ray Train reports as trial ``"ray-train"``).
* ``{"event": "trial_complete", "trial_id", "epochs", "status"}`` when a trial ends (ASHA stops included).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tradesys.storage import Storage, resolve_storage
from tradesys.storage import ensure_experiment as ensure_storage_experiment

__all__ = [
    "DEFAULT_HPARAMS",
    "LOSSES",
    "TRAINERS",
    "TrainSettings",
    "baseline_forecasts",
    "baseline_losses",
    "forecast_losses",
    "holdout_losses",
    "holdout_report",
    "promotion_lines",
    "promotion_why",
    "run_training",
    "summary_json",
]

LOSSES = ("vol_qlike", "ret_se", "dir_logloss")
TRAINERS = ("tune", "ray-train")
KINDS = ("lstm", "transformer")
DEFAULT_HPARAMS: dict[str, Any] = {"kind": "lstm", "width": 16, "n_layers": 1, "lr": 1e-3}
STORE_PREFIX = "store:"
Progress = Callable[[dict[str, Any]], None]


def _pos_int(name: str, v: Any, low: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
        raise ValueError(f"{name}: must be an integer >= {low}, got {v!r}")
    return int(v)


@dataclass(frozen=True)
class TrainSettings:
    """Everything a training run takes (the job's and the CLI's flags); validated on construction.

    ``data``: a `load_returns` data set, a price CSV, or ``store:<root>`` (an offline feature store; then
    ``features`` lists ``name[:version][.col[+col]]`` specs joined point-in-time with ``feature_lag``/``feature_ttl``
    on the calendar of the ``returns_feature``). ``trainer``: ``"tune"`` (ASHA search over ``kinds``) or
    ``"ray-train"`` (one configuration, ``hparams`` or the best known, on ``num_workers`` workers, GPUs with
    ``use_gpu``). ``storage``: where Tune/Ray Train results, checkpoints and the MLflow artifacts go, a path or an
    ``s3://bucket/prefix`` URI (`tradesys.storage`); None: ``$TRADESYS_STORAGE``, else ``runs_dir``. The MLflow
    database stays ``mlflow_uri`` / ``$MLFLOW_TRACKING_URI`` / ``<runs_dir>/mlflow.db`` either way.
    """

    data: str = "sp500"
    symbol: str | None = None
    features: tuple[str, ...] = ()
    returns_feature: str = "returns"
    feature_lag: str | None = None
    feature_ttl: str | None = None
    kinds: tuple[str, ...] = KINDS
    num_samples: int = 8
    max_epochs: int = 10
    grace_period: int = 1
    lookback: int = 20
    vol_horizon: int = 5
    holdout: int = 250
    max_samples: int = 0
    mlflow_uri: str | None = None
    experiment: str = "tradesys-train"
    registry_name: str = "tradesys-forecaster"
    runs_dir: str = "runs"
    storage: str | None = None
    promote_on: str = "vol_qlike"
    alpha: float = 0.05
    seed: int = 0
    trainer: str = "tune"
    num_workers: int = 2
    use_gpu: bool = False
    hparams: Mapping[str, Any] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        from tradesys.train.store_data import parse_feature_spec

        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        if not isinstance(self.data, str) or not self.data.strip():
            raise ValueError("data: must be a data set name, a CSV path or store:<root>")
        if self.data.startswith(STORE_PREFIX) and not self.data[len(STORE_PREFIX) :].strip():
            raise ValueError("data: store: needs the feature store root, e.g. store:/data/features")
        feats = (self.features,) if isinstance(self.features, str) else tuple(self.features)
        put("features", tuple(str(f).strip() for f in feats if str(f).strip()))
        if self.store_root is None and self.features:
            raise ValueError("features: only used with data=store:<root>")
        if self.store_root is not None and not self.features:
            raise ValueError("features: data=store:<root> needs at least one feature (name[:version])")
        for f in self.features:
            parse_feature_spec(f, lag=self.feature_lag, ttl=self.feature_ttl)
        parse_feature_spec(self.returns_feature, field="returns_feature")
        kinds = (self.kinds,) if isinstance(self.kinds, str) else tuple(self.kinds)
        if not kinds or any(k not in KINDS for k in kinds):
            raise ValueError(f"kinds: each must be one of {KINDS}, got {list(kinds)}")
        put("kinds", kinds)
        for name in ("num_samples", "max_epochs", "grace_period", "lookback", "vol_horizon", "holdout", "num_workers"):
            put(name, _pos_int(name, getattr(self, name)))
        put("max_samples", _pos_int("max_samples", self.max_samples, 0))
        put("seed", _pos_int("seed", self.seed, 0))
        if self.promote_on not in LOSSES:
            raise ValueError(f"promote_on: must be one of {LOSSES}, got {self.promote_on!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0 < self.alpha < 1:
            raise ValueError(f"alpha: must be in (0, 1), got {self.alpha!r}")
        for name in ("experiment", "registry_name", "runs_dir"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v.strip():
                raise ValueError(f"{name}: must be a non-empty string")
        if self.storage is not None:
            from tradesys.storage import parse_storage

            parse_storage(self.storage, setting="storage")
        if self.mlflow_uri is not None and not str(self.mlflow_uri).strip():
            raise ValueError("mlflow_uri: must be a non-empty URI or None")
        if self.trainer not in TRAINERS:
            raise ValueError(f"trainer: must be one of {TRAINERS}, got {self.trainer!r}")
        if not isinstance(self.use_gpu, bool):
            raise ValueError(f"use_gpu: must be true or false, got {self.use_gpu!r}")
        if self.use_gpu and self.trainer != "ray-train":
            raise ValueError("use_gpu: only used with trainer='ray-train'")
        if self.hparams is not None:
            if self.trainer != "ray-train":
                raise ValueError("hparams: only used with trainer='ray-train' (Tune searches its own)")
            from tradesys.train.distributed import validate_hparams

            put("hparams", validate_hparams(self.hparams))

    @property
    def store_root(self) -> str | None:
        """The feature store root for ``data=store:<root>``, else None."""
        return self.data[len(STORE_PREFIX) :].strip() if self.data.startswith(STORE_PREFIX) else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["features"], d["kinds"] = list(self.features), list(self.kinds)
        d["hparams"] = dict(self.hparams) if self.hparams is not None else None
        return d


# --------------------------------------------------------------------------------------------- holdout scoring


def standardizer_json(sc: Any) -> dict[str, Any]:
    return {"mean": sc.mean.tolist(), "std": sc.std.tolist(), "ret_scale": sc.ret_scale, "vol_scale": sc.vol_scale}


def holdout_losses(model: Any, scaler: dict[str, Any], test: Any) -> dict[str, np.ndarray]:
    """Per-sample holdout losses (original units) of a model with its own standardiser (JSON form); the forecasts
    themselves under ``"_fc"``."""
    from dataclasses import replace

    from tradesys.train.fit import predict

    mean = np.asarray(scaler["mean"], dtype=np.float32)
    std = np.asarray(scaler["std"], dtype=np.float32)
    out = predict(model, replace(test, X=((test.X - mean) / std).astype(np.float32)))
    vol = np.maximum(out["vol"] * float(scaler["vol_scale"]), 1e-12)
    ret = out["ret"] * float(scaler["ret_scale"])
    return {**forecast_losses(test, {"ret": ret, "vol": vol, "p_up": out["p_up"]}),
            "_fc": {"ret": ret, "vol": vol, "p_up": out["p_up"]}}  # type: ignore[dict-item]  # fmt: skip


def forecast_losses(test: Any, fc: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-sample losses (`LOSSES`) of one set of forecasts (``ret``, ``vol``, ``p_up``) on the holdout: the same
    formulas for the network and for the baselines, so the promotion gate compares like with like."""
    from tradesys.train.evaluate import qlike_loss

    vol = np.maximum(np.asarray(fc["vol"], dtype=np.float64), 1e-12)
    p = np.clip(np.asarray(fc["p_up"], dtype=np.float64), 1e-12, 1 - 1e-12)
    return {
        "vol_qlike": qlike_loss(test.y_vol, vol),
        "ret_se": (test.y_ret - np.asarray(fc["ret"], dtype=np.float64)) ** 2,
        "dir_logloss": -(test.y_dir * np.log(p) + (1 - test.y_dir) * np.log1p(-p)),
    }


def baseline_forecasts(pool: Any, test: Any) -> dict[str, dict[str, np.ndarray]]:
    """The baselines every holdout is reported against: naive (zero return, trailing vol, training up-rate) and
    GARCH(1,1) (its vol; the naive return and direction, as GARCH forecasts neither)."""
    from tradesys.train.evaluate import garch_vol_forecasts, naive_forecasts

    naive = naive_forecasts(test, float(np.mean(pool.y_dir)))
    return {"naive": naive, "garch": {**naive, "vol": garch_vol_forecasts(test)}}


def baseline_losses(baselines: Mapping[str, Mapping[str, np.ndarray]], test: Any, loss: str) -> dict[str, np.ndarray]:
    """Per-sample `loss` of each baseline that forecasts what the loss scores: both for ``vol_qlike``, only the
    naive one for ``ret_se``/``dir_logloss`` (GARCH's return and direction forecasts are the naive ones)."""
    names = list(baselines) if loss == "vol_qlike" else [n for n in baselines if n == "naive"]
    return {n: forecast_losses(test, baselines[n])[loss] for n in names}


def holdout_report(
    fc: dict[str, np.ndarray], pool: Any, test: Any, baselines: Mapping[str, Mapping[str, np.ndarray]] | None = None
) -> dict[str, Any]:
    """Metrics of the network, naive and GARCH forecasts on the holdout, plus DM tests of the network vs each
    (`baselines`: `baseline_forecasts`, computed here when not given)."""
    from tradesys.train.evaluate import (
        diebold_mariano,
        direction_metrics,
        qlike_loss,
        return_metrics,
        vol_metrics,
    )

    base = baselines if baselines is not None else baseline_forecasts(pool, test)
    fcs = {"network": fc, **base}
    metrics: dict[str, dict[str, float]] = {}
    for name, f in fcs.items():
        m = {f"ret_{k}": v for k, v in return_metrics(test.y_ret, f["ret"]).items()}
        m.update({f"vol_{k}": v for k, v in vol_metrics(test.y_vol, f["vol"]).items()})
        m.update({f"dir_{k}": v for k, v in direction_metrics(test.y_dir, f["p_up"]).items()})
        metrics[name] = m
    tests = []
    for base in ("naive", "garch"):
        dm = diebold_mariano(
            qlike_loss(test.y_vol, fc["vol"]), qlike_loss(test.y_vol, fcs[base]["vol"]),
            h=test.vol_horizon, kernel="uniform",
        )  # fmt: skip
        tests.append({"loss": "vol_qlike", "vs": base, "dm_stat": dm.stat, "pvalue": dm.pvalue,
                      "mean_diff": dm.mean_diff})  # fmt: skip
    return {"n_test": len(test), "start": str(test.index[0]), "end": str(test.index[-1]), "metrics": metrics,
            "tests": tests}  # fmt: skip


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, (float, int)) and not isinstance(v, bool) else str(v)


def promotion_why(p: Mapping[str, Any]) -> str:
    """One sentence saying why the challenger was or was not promoted (the summary's ``promotion.why``)."""
    loss = p.get("loss", "the loss")
    lost = [b["baseline"] for b in p.get("baselines", []) if not b.get("beaten")]
    champ = p.get("champion_version")
    reason = p.get("reason")
    if reason == "not_better_than_baselines":
        return f"it does not significantly beat {' and '.join(lost)} on {loss}, so it is not served"
    if reason == "incompatible_champion":
        return (f"champion v{champ} was cut with another lookback, vol horizon or feature set and cannot be scored "
                f"on this holdout; promote by hand if wanted")  # fmt: skip
    if reason == "no_champion":
        return f"it beats every baseline on {loss} and there was no champion yet"
    if reason == "significantly_better":
        return f"it beats every baseline and champion v{champ} on {loss} (p={_fmt(p.get('pvalue'))})"
    if reason == "not_significant":
        return f"it beats every baseline but not champion v{champ} significantly on {loss} (p={_fmt(p.get('pvalue'))})"
    return str(reason)


def promotion_lines(p: Mapping[str, Any]) -> list[str]:
    """The promotion decision as printed by ``tradesys train run``: decision, test, each baseline, champion, why."""
    head = "PROMOTED to champion" if p.get("promoted") else "NOT PROMOTED"
    lines = [f"promotion: {head} ({p.get('reason', '')})",
             f"  test: {p.get('test', '')} on {p.get('loss', '')}, H1 'the network's loss is smaller', "
             f"alpha {_fmt(p.get('alpha'))}, h {p.get('h', '')}"]  # fmt: skip
    for b in p.get("baselines", []):
        verdict = "beaten" if b["beaten"] else "NOT beaten"
        lines.append(f"  vs {b['baseline']}: network {_fmt(b['model_loss'])} vs {_fmt(b['baseline_loss'])} "
                     f"(DM {_fmt(b['dm_stat'])}, p={_fmt(b['pvalue'])}): {verdict}")  # fmt: skip
    champ = p.get("champion_version")
    if champ is not None and p.get("reason") in ("significantly_better", "not_significant"):
        lines.append(f"  vs champion v{champ}: mean loss difference {_fmt(p.get('mean_diff'))} "
                     f"(DM {_fmt(p.get('dm_stat'))}, p={_fmt(p.get('pvalue'))})")  # fmt: skip
    lines.append(f"  why: {p.get('why') or promotion_why(p)}")
    return lines


def _default_feature_names() -> str:
    import pandas as pd

    from tradesys.train.data import default_features

    return ",".join(map(str, default_features(pd.Series([0.0])).columns))


def _champion(name: str) -> tuple[int, dict[str, str]] | None:
    """(version, its run's parameters) of the current champion, or None."""
    import mlflow

    from tradesys.train.registry import CHAMPION, alias_version

    v = alias_version(name, CHAMPION)
    if v is None:
        return None
    mv = mlflow.MlflowClient().get_model_version(name, str(v))
    return v, dict(mlflow.get_run(mv.run_id).data.params) | {"_run_id": mv.run_id}


def _champion_losses(name: str, test: Any, loss: str, s: TrainSettings) -> np.ndarray | None:
    """The current champion's holdout losses (empty: no champion), or None when it was cut differently."""
    import mlflow
    import mlflow.pytorch

    champ = _champion(name)
    if champ is None:
        return np.array([])
    v, params = champ
    cut = (int(params.get("lookback", -1)), int(params.get("vol_horizon", -1)), int(params.get("n_features", -1)),
           params.get("features", _default_feature_names()))  # fmt: skip
    if cut != (s.lookback, s.vol_horizon, int(test.X.shape[2]), ",".join(map(str, test.features.columns))):
        return None
    scaler = json.loads(mlflow.artifacts.load_text(f"runs:/{params['_run_id']}/standardizer.json"))
    model = mlflow.pytorch.load_model(f"models:/{name}/{v}")
    return holdout_losses(model, scaler, test)[loss]


def _best_known_hparams(s: TrainSettings) -> tuple[dict[str, Any], str]:
    """Ray Train's configuration and where it came from: given, the champion's, or the defaults."""
    from tradesys.train.distributed import validate_hparams

    if s.hparams is not None:
        return dict(s.hparams), "given"
    champ = _champion(s.registry_name)
    if champ is not None:
        p = champ[1]
        try:
            hp = validate_hparams({"kind": p["model.kind"], "width": int(p["model.width"]),
                                   "n_layers": int(p["model.n_layers"]), "lr": float(p["model.lr"])})  # fmt: skip
            return hp, f"champion v{champ[0]}"
        except (KeyError, ValueError):
            pass  # a champion logged without a usable model config: fall back to the defaults
    return dict(DEFAULT_HPARAMS), "default"


# --------------------------------------------------------------------------------------------- the run


def summary_json(summary: Mapping[str, Any]) -> str:
    """The summary as strict JSON: NaN/inf become null, anything else unknown its str()."""
    from tradesys.core.jsonsafe import dumps

    return dumps(summary)


def _load_samples(s: TrainSettings) -> tuple[Any, str]:
    """(samples, symbol) for the settings' data source."""
    from tradesys.train.data import make_samples

    if s.store_root is not None:
        from tradesys.train.store_data import load_store_inputs, parse_feature_spec

        refs = [parse_feature_spec(f, lag=s.feature_lag, ttl=s.feature_ttl) for f in s.features]
        inp = load_store_inputs(s.store_root, refs, returns=s.returns_feature, symbol=s.symbol)
        samples = make_samples(inp.returns, features=inp.features, lookback=s.lookback, vol_horizon=s.vol_horizon)
        return samples, inp.symbol
    from tradesys.data.returns import load_returns

    frame = load_returns(s.data)
    if s.symbol is not None and s.symbol not in frame.columns:
        raise ValueError(f"symbol: {s.symbol!r} is not a column of {s.data} ({', '.join(map(str, frame.columns))})")
    r = frame[s.symbol] if s.symbol else frame.iloc[:, 0]
    return make_samples(r, lookback=s.lookback, vol_horizon=s.vol_horizon), str(r.name)


@dataclass
class _Trained:
    """What both trainers hand to the holdout/registry steps."""

    model: Any
    best_config: dict[str, Any]
    model_kwargs: dict[str, Any]
    best_metrics: dict[str, Any]
    trial_id: str
    history: list[dict[str, float]]
    num_trials: int
    num_stopped_early: int
    extra: dict[str, Any]


def _train_tune(s: TrainSettings, pool_std: Any, store: Storage, custom: bool, uri: str, emit: Progress) -> _Trained:
    from tradesys.train.tune import model_kwargs, progress_callback, run_search

    emit({"event": "stage", "stage": "search", "trainer": "tune", "trials": s.num_samples,
          "max_epochs": s.max_epochs})  # fmt: skip
    search = run_search(
        pool_std, kinds=s.kinds, num_samples=s.num_samples, max_epochs=s.max_epochs,
        grace_period=min(s.grace_period, s.max_epochs), storage_path=store.tune, tracking_uri=uri,
        experiment=s.experiment + "-tune", seed=s.seed, callbacks=[progress_callback(emit)],
        artifact_storage=store if custom else None,
    )  # fmt: skip
    hist = search.grid[[str(x.metrics.get("trial_id")) for x in search.grid].index(search.trial_id)]
    rows = []
    for _, row in hist.metrics_dataframe.iterrows():
        cols = [c for c in row.index if c.startswith(("train_", "val_", "s_"))]
        rows.append({"epoch": float(int(row["training_iteration"]) - 1), **{k: float(row[k]) for k in cols}})
    return _Trained(
        model=search.model, best_config=search.best_config, model_kwargs=model_kwargs(search.best_config),
        best_metrics=search.best_metrics,
        trial_id=search.trial_id, history=rows, num_trials=search.num_trials,
        num_stopped_early=search.num_stopped_early, extra={"checkpoint": search.checkpoint_path},
    )  # fmt: skip


def _train_ray(s: TrainSettings, pool_std: Any, store: Storage, emit: Progress) -> _Trained:
    from tradesys.train.distributed import train_distributed
    from tradesys.train.tune import model_kwargs

    hp, source = _best_known_hparams(s)
    emit({"event": "stage", "stage": "train", "trainer": "ray-train", "trials": 1, "max_epochs": s.max_epochs,
          "num_workers": s.num_workers, "hparams": hp, "hparams_source": source})  # fmt: skip

    def on_epoch(ev: dict[str, Any]) -> None:
        emit({"event": "trial_result", "trial_id": "ray-train", **ev})

    out = train_distributed(
        pool_std, hp, num_workers=s.num_workers, use_gpu=s.use_gpu, max_epochs=s.max_epochs, seed=s.seed,
        storage_path=store.train, on_epoch=on_epoch,
    )  # fmt: skip
    emit({"event": "trial_complete", "trial_id": "ray-train", "epochs": len(out.history), "status": "terminated"})
    return _Trained(
        model=out.model, best_config=hp, model_kwargs=model_kwargs(hp), best_metrics=out.best_metrics,
        trial_id="ray-train-" + str(out.result.path).rstrip("/").rsplit("/", 1)[-1], history=out.history, num_trials=1,
        num_stopped_early=int(len(out.history) < s.max_epochs),
        extra={"trainer": "ray-train", "num_workers": s.num_workers, "use_gpu": s.use_gpu, "hparams_source": source,
               "checkpoint": out.checkpoint_path},
    )  # fmt: skip


def run_training(settings: TrainSettings, progress: Progress | None = None) -> dict[str, Any]:
    """Run the pipeline (module docstring) and return the JSON summary; `progress` gets the events listed there."""
    import mlflow
    import ray
    import torch

    from tradesys.train.data import Standardizer, purge_and_embargo
    from tradesys.train.export import export_onnx, export_torchscript
    from tradesys.train.registry import (
        CHAMPION,
        DM_TEST,
        alias_version,
        compare_to_baselines,
        promote_if_better,
        register,
    )
    from tradesys.train.tracking import (
        log_artifacts,
        log_epoch_metrics,
        log_json,
        log_params,
        log_torch_model,
        resolve_tracking_uri,
        setup_tracking,
    )

    if not isinstance(settings, TrainSettings):
        raise ValueError(f"settings: expected TrainSettings, got {type(settings).__name__}")
    s = settings
    emit: Progress = progress if progress is not None else (lambda _e: None)
    torch.set_num_threads(1)

    emit({"event": "stage", "stage": "data", "data": s.data})
    samples, symbol = _load_samples(s)
    if s.max_samples:
        samples = samples.subset(np.arange(max(0, len(samples) - s.max_samples), len(samples)))
    n = len(samples)
    if s.holdout >= n - 10:
        raise ValueError(f"holdout: {s.holdout} leaves too few of {n} samples for training")
    test_idx = np.arange(n - s.holdout, n)
    split = purge_and_embargo(np.arange(n - s.holdout), test_idx, samples.t, samples.label_end)
    pool, test = samples.subset(split.train), samples.subset(test_idx)
    scaler = Standardizer.fit(samples, split.train)
    scaler_json = standardizer_json(scaler)

    runs_dir = Path(s.runs_dir).expanduser().resolve()
    store = resolve_storage(s.storage, runs_dir)
    custom = store.root != str(runs_dir)  # else the runs-dir layout tracking.py has always used
    uri = resolve_tracking_uri(s.mlflow_uri, runs_dir=runs_dir)
    if custom:  # the experiments' artifacts under the storage (before setup_tracking would create them locally)
        ensure_storage_experiment(s.experiment, uri, store)
    uri, _ = setup_tracking(s.experiment, uri, runs_dir=runs_dir)
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):  # inside a Ray job, or a cluster the user named: join it
            ray.init(include_dashboard=False)
        else:  # a loopback-only local head that goes away with this process (tradesys.localray)
            from tradesys.localray import init_local

            init_local(None, False, lambda m: emit({"event": "note", "message": m}))
    if s.trainer == "ray-train":
        from tradesys.train.distributed import check_resources

        check_resources(s.num_workers, s.use_gpu)  # before anything starts
        trained = _train_ray(s, scaler.transform(pool), store, emit)
    else:
        trained = _train_tune(s, scaler.transform(pool), store, custom, uri, emit)
    setup_tracking(s.experiment, uri, runs_dir=runs_dir)  # the search's callback changed the active experiment

    emit({"event": "stage", "stage": "holdout", "n_test": len(test)})
    model = trained.model
    losses = holdout_losses(model, scaler_json, test)
    fc = losses.pop("_fc")  # type: ignore[arg-type]
    baselines = baseline_forecasts(pool, test)
    report = holdout_report(fc, pool, test, baselines)  # type: ignore[arg-type]
    name = s.registry_name

    emit({"event": "stage", "stage": "register", "registry_name": name})
    feature_names = ",".join(map(str, samples.features.columns))
    with mlflow.start_run(run_name="train-" + trained.trial_id) as run:
        log_params({
            "data": s.data, "symbol": symbol, "lookback": s.lookback, "vol_horizon": s.vol_horizon,
            "n_features": int(samples.X.shape[2]), "features": feature_names, "holdout": s.holdout,
            "n_train": len(pool), "purged": split.purged, "seed": s.seed, "num_trials": trained.num_trials,
            "trial_id": trained.trial_id, "trainer": s.trainer,
            "model": {**trained.best_config, **trained.model_kwargs},
            **({"num_workers": s.num_workers, "use_gpu": s.use_gpu, "hparams_source": trained.extra["hparams_source"]}
               if s.trainer == "ray-train" else {}),
            **({"feature_lag": s.feature_lag, "feature_ttl": s.feature_ttl, "returns_feature": s.returns_feature}
               if s.store_root is not None else {}),
        })  # fmt: skip
        for row in trained.history:
            log_epoch_metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))
        mlflow.log_metrics({f"holdout_{k}": float(np.mean(v)) for k, v in losses.items()})
        log_json(report, "holdout_report.json")
        log_json(scaler_json, "standardizer.json")
        with tempfile.TemporaryDirectory() as d:
            kw = {"lookback": s.lookback, "n_features": int(samples.X.shape[2]),
                  "output_names": ("ret", "vol", "dir_logit")}  # fmt: skip
            export_onnx(model, Path(d) / "model.onnx", **kw)
            export_torchscript(model, Path(d) / "model.pt", **kw)
            log_artifacts([Path(d) / "model.onnx", Path(d) / "model.pt"], artifact_path="exports")
        sample = scaler.transform(test.subset(np.arange(min(4, len(test))))).X
        info = log_torch_model(model, sample)
        run_id = run.info.run_id
    version = register(info.model_uri, name, tags={"trial_id": trained.trial_id})

    emit({"event": "stage", "stage": "promote", "loss": s.promote_on})
    champ_losses = _champion_losses(name, test, s.promote_on, s)
    h = s.vol_horizon if s.promote_on == "vol_qlike" else 1
    base_losses = baseline_losses(baselines, test, s.promote_on)
    if champ_losses is None:
        gate = compare_to_baselines(losses[s.promote_on], base_losses, s.alpha, h=h, loss=s.promote_on)
        promotion: dict[str, Any] = {"promoted": False, "reason": "incompatible_champion", "alpha": s.alpha, "h": h,
                                     "champion_version": alias_version(name, CHAMPION), "test": DM_TEST,
                                     "baselines": [g.to_dict() for g in gate]}  # fmt: skip
        mlflow.MlflowClient().set_tag(run_id, "promotion.decision", "refused")
        mlflow.MlflowClient().set_tag(run_id, "promotion.reason", "incompatible_champion")
    else:
        promotion = promote_if_better(name, losses[s.promote_on], champ_losses, s.alpha, h=h, baselines=base_losses,
                                      loss=s.promote_on).to_dict()  # fmt: skip
    promotion["loss"] = s.promote_on
    promotion["why"] = promotion_why(promotion)
    summary = {
        "run_id": run_id, "tracking_uri": uri, "registry_name": name, "version": version,
        "champion": alias_version(name, CHAMPION), "trainer": s.trainer, "data": s.data, "symbol": symbol,
        "best_config": trained.best_config, "best_val_loss": float(trained.best_metrics["val_loss"]),
        "num_trials": trained.num_trials, "stopped_early": trained.num_stopped_early, "holdout": report["metrics"],
        "promotion": promotion, "storage": store.root, **trained.extra,
    }  # fmt: skip
    emit({"event": "stage", "stage": "done", "summary": summary})
    return summary
