"""Ray Tune over PPO hyper-parameters for the portfolio agent: ASHA, several seeds, selected on the selection period.

Why this shape: one PPO run's result depends as much on its seed as on its hyper-parameters, so a configuration is
judged by its mean over seeds, never by its luckiest run. The search draws ``num_samples`` configurations up front
(`sample_configs`) and runs each with every seed (a Tune grid over configuration x seed); ASHA (Li et al. 2020)
stops the trials whose selection score trails at its rungs. The same training loop as `train_ppo`
(`tradesys.rl.train.run_iterations`) runs inside each trial: PPO learns on the train period, and every
``eval_every`` iterations the checkpoint's deterministic policy is scored on the selection period; the test period
is not loaded.

Selection: each trial's score is its best selection score (``sel_score``: the `PPOSettings.select_metric`);
a configuration's score is the mean of its trials' scores (a trial ASHA stopped counts with the best it reached);
the chosen checkpoint is the best one of the best trial of the best configuration.

Search space (`DEFAULT_SPACE`): ``lr`` log-uniform in [1e-4, 3e-3], ``entropy_coeff`` in {0, 0.001, 0.01},
``clip_param`` in {0.1, 0.2, 0.3}, ``gamma`` in {0.9, 0.99}; the rest comes from the base `PPOSettings`.

Resources: a trial holds one CPU plus one per env runner (``num_env_runners``; 0 samples in the trial's own
process, the cheapest on a laptop). MLflow: one run per trial (Ray's ``MLflowLoggerCallback``, logging from the
driver) in ``<experiment>-tune``, and one summary run in ``<experiment>`` with the configuration scores and the
chosen checkpoint's RLModule. Tune's checkpoints are kept under ``<storage>/rl-tune/<name>``: the storage setting
(`tradesys.storage`: a path or an S3 URI, ``$TRADESYS_STORAGE``), else the runs directory.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from tradesys.rl.env import RLEnvConfig
from tradesys.rl.market import MarketData
from tradesys.rl.train import (
    PPOSettings,
    WalkForward,
    _ensure_ray,
    _iso,
    _loggable_env,
    _score,
    build_ppo_config,
    env_config_dict,
    run_iterations,
    split_market,
)

__all__ = ["DEFAULT_SPACE", "HPARAMS", "SCHEDULERS", "sample_configs", "select_best", "tune_ppo"]

HPARAMS = ("lr", "entropy_coeff", "clip_param", "gamma")
SCHEDULERS = ("asha",)
DEFAULT_SPACE: dict[str, Any] = {
    "lr": ("loguniform", 1e-4, 3e-3),
    "entropy_coeff": ("choice", [0.0, 0.001, 0.01]),
    "clip_param": ("choice", [0.1, 0.2, 0.3]),
    "gamma": ("choice", [0.9, 0.99]),
}
METRIC = "sel_score"
Progress = Callable[[dict[str, Any]], None]


def sample_configs(n: int, seed: int = 0, space: Mapping[str, Any] | None = None) -> list[dict[str, float]]:
    """`n` configurations drawn from `space` (`DEFAULT_SPACE` form) with a seeded generator, each tagged ``id``."""
    space = DEFAULT_SPACE if space is None else space
    unknown = sorted(set(space) - set(HPARAMS))
    if unknown:
        raise ValueError(f"space: unknown hyper-parameter {unknown[0]!r}; known: {list(HPARAMS)}")
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        cfg: dict[str, Any] = {"id": i}
        for name, spec in space.items():
            kind = spec[0]
            if kind == "loguniform":
                lo, hi = float(spec[1]), float(spec[2])
                if not 0 < lo < hi:
                    raise ValueError(f"space.{name}: need 0 < low < high, got {lo}, {hi}")
                cfg[name] = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
            elif kind == "choice":
                values = list(spec[1])
                if not values:
                    raise ValueError(f"space.{name}: choice needs at least one value")
                cfg[name] = float(values[int(rng.integers(len(values)))])
            else:
                raise ValueError(f"space.{name}: kind must be 'loguniform' or 'choice', got {kind!r}")
        out.append(cfg)
    return out


def select_best(
    configs: Sequence[Mapping[str, Any]], trials: Sequence[Mapping[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """(per-configuration scores, the best configuration, its best trial) from trials with ``config_id``, ``seed``,
    ``score`` and ``iterations``: a configuration scores the mean of its trials' scores (module docstring)."""
    if not trials:
        raise ValueError("trials: none finished")
    by_config: dict[int, list[Mapping[str, Any]]] = {}
    for t in trials:
        by_config.setdefault(int(t["config_id"]), []).append(t)
    scores = []
    for cid, ts in sorted(by_config.items()):
        vals = [float(t["score"]) for t in ts]
        scores.append({"config_id": cid, **{k: v for k, v in configs[cid].items() if k != "id"},
                       "mean_score": float(np.mean(vals)), "std_score": float(np.std(vals)),
                       "seeds": [t["seed"] for t in ts], "scores": vals,
                       "iterations": [t["iterations"] for t in ts]})  # fmt: skip
    best = max(scores, key=lambda c: c["mean_score"])
    best_trial = dict(max(by_config[best["config_id"]], key=lambda t: float(t["score"])))
    return scores, best, best_trial


def _progress_callback(emit: Progress) -> Any:
    """A Tune callback sending trial events to `emit`. The Tuner pickles its callbacks and a progress bar holds
    locks, so the callback pickles without `emit` (a restored experiment reports nothing rather than failing)."""
    from ray import tune

    class _Progress(tune.Callback):
        def __init__(self, emit: Progress) -> None:
            self._emit = emit

        def __getstate__(self) -> dict[str, Any]:
            return {}

        def __setstate__(self, state: dict[str, Any]) -> None:
            self._emit = lambda _e: None

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            it = int(result.get("training_iteration", 0))
            self._emit({"event": "trial_result", "trial_id": trial.trial_id, "iteration": it,
                        "score": result.get(METRIC)})  # fmt: skip

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._emit({"event": "trial_complete", "trial_id": trial.trial_id})

    return _Progress(emit)


def _trainable(config: dict[str, Any], *, train_market: MarketData, select_market: MarketData, env: RLEnvConfig,
               base: PPOSettings) -> None:  # fmt: skip
    """One Tune trial: PPO with this configuration and seed; reports every iteration, checkpoints when scored."""
    from ray import tune

    hp = {k: v for k, v in config["hp"].items() if k in HPARAMS}
    s = replace(base, seed=int(config["seed"]), **hp)
    algo = build_ppo_config(env_config_dict(env, train_market), s).build_algo()
    last = {"score": -math.inf}

    def on_iteration(it: int, m: dict[str, float], sel: dict[str, Any] | None, path: str | None) -> None:
        if sel is not None:
            last["score"] = _score(sel, s.select_metric)
        report = {k: v for k, v in m.items() if math.isfinite(v)}
        report[METRIC] = last["score"] if math.isfinite(last["score"]) else -1e9
        if sel is not None:
            report.update({f"sel_{k}": float(sel[k]) for k in ("log_return", "sharpe", "max_drawdown")
                           if sel.get(k) is not None})  # fmt: skip
        ckpt = tune.Checkpoint.from_directory(path) if path else None
        tune.report(report, checkpoint=ckpt)

    try:
        with tempfile.TemporaryDirectory() as d:
            run_iterations(algo, s, env, select_market, Path(d), on_iteration)
    finally:
        algo.stop()


def tune_ppo(
    market: MarketData,
    env: RLEnvConfig,
    split: WalkForward,
    base: PPOSettings,
    *,
    num_samples: int = 4,
    seeds: Sequence[int] = (0, 1),
    scheduler: str = "asha",
    grace_period: int = 1,
    space: Mapping[str, Any] | None = None,
    name: str | None = None,
    progress: Progress | None = None,
    storage: str | None = None,
) -> dict[str, Any]:
    """Tune PPO (module docstring) and return the summary: configuration scores, the chosen config and checkpoint.

    `storage`: where Tune's results and checkpoints (``<storage>/rl-tune``) and the MLflow artifacts of new
    experiments go, a path or an ``s3://bucket/prefix`` URI (`tradesys.storage`); None: ``$TRADESYS_STORAGE``, else
    ``base.runs_dir``. The checkpoints in the summary are then ``s3://`` URIs."""
    import mlflow
    from ray import tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.schedulers import ASHAScheduler

    from tradesys.core.jsonsafe import json_ready
    from tradesys.rl.train import RLPolicy
    from tradesys.storage import checkpoint_uri, ray_storage, resolve_storage
    from tradesys.storage import ensure_experiment as ensure_storage_experiment
    from tradesys.train.tracking import log_json, log_params, resolve_tracking_uri, setup_tracking

    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples: must be an integer >= 1, got {num_samples!r}")
    seeds = list(seeds)
    if not seeds or any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in seeds):
        raise ValueError(f"seeds: must be one or more integers >= 0, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: repeated seed in {seeds}")
    if scheduler not in SCHEDULERS:
        raise ValueError(f"scheduler: must be one of {SCHEDULERS}, got {scheduler!r}")
    if isinstance(grace_period, bool) or not isinstance(grace_period, int) or grace_period < 1:
        raise ValueError(f"grace_period: must be an integer >= 1, got {grace_period!r}")
    if not isinstance(base, PPOSettings):
        raise ValueError(f"base: expected PPOSettings, got {type(base).__name__}")
    emit: Progress = progress if progress is not None else (lambda _e: None)
    configs = sample_configs(num_samples, base.seed, space)
    train_m, select_m = split_market(market, split, env.window)
    from tradesys.rl.env import PortfolioEnv

    PortfolioEnv(env_config_dict(env, train_m))
    PortfolioEnv(env_config_dict(env, select_m, episode_length=None))

    runs_dir = Path(base.runs_dir).expanduser().resolve()
    store = resolve_storage(storage, runs_dir)
    uri = resolve_tracking_uri(base.mlflow_uri, runs_dir=runs_dir)
    if store.root != str(runs_dir):  # new experiments keep their artifacts under the storage
        for exp in (base.experiment, base.experiment + "-tune"):
            ensure_storage_experiment(exp, uri, store)
    uri, _ = setup_tracking(base.experiment, uri, runs_dir=runs_dir)
    where, filesystem = ray_storage(store.rl_tune)
    _ensure_ray(emit)
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, train_market=train_m, select_market=select_m, env=env, base=base),
        {"cpu": 1 + base.num_env_runners},
    )
    run_name = name or f"ppo-tune-{np.datetime64('now', 's').astype(str).replace(':', '')}"
    total = len(configs) * len(seeds)
    emit({"event": "stage", "stage": "search", "trials": total, "iterations": base.iterations})

    tuner = tune.Tuner(
        trainable,
        param_space={"hp": tune.grid_search(configs), "seed": tune.grid_search(seeds)},
        tune_config=tune.TuneConfig(
            metric=METRIC, mode="max",
            scheduler=ASHAScheduler(time_attr="training_iteration", max_t=base.iterations,
                                    grace_period=min(grace_period, base.iterations)),
        ),
        run_config=tune.RunConfig(
            name=run_name, storage_path=where, storage_filesystem=filesystem, verbose=0,
            callbacks=[MLflowLoggerCallback(tracking_uri=uri, experiment_name=base.experiment + "-tune",
                                            save_artifact=False), _progress_callback(emit)],
        ),
    )  # fmt: skip
    grid = tuner.fit()
    trials, ckpts = [], {}
    for r in grid:
        if r.error is not None:
            raise RuntimeError(f"tune: trial {r.path} failed: {r.error}")
        df = r.metrics_dataframe
        best_ckpt = r.get_best_checkpoint(METRIC, "max")
        if best_ckpt is not None:
            ckpts[checkpoint_uri(best_ckpt)] = best_ckpt
        trials.append({"config_id": int(r.config["hp"]["id"]), "seed": int(r.config["seed"]),
                       "score": float(df[METRIC].max()), "iterations": int(df["training_iteration"].max()),
                       "checkpoint": checkpoint_uri(best_ckpt) if best_ckpt is not None else None,
                       "path": r.path})  # fmt: skip
    scores, best, best_trial = select_best(configs, trials)
    setup_tracking(base.experiment, uri, runs_dir=runs_dir)  # the callback changed the active experiment
    with mlflow.start_run(run_name=run_name) as run:
        log_params({"ppo": base.to_dict(), "env": _loggable_env(env), "split": split.to_dict(),
                    "num_samples": num_samples, "seeds": ",".join(map(str, seeds)), "scheduler": scheduler,
                    "grace_period": grace_period, "symbols": ",".join(market.symbols),
                    "best": {k: v for k, v in best.items() if k in HPARAMS}})  # fmt: skip
        mlflow.log_metrics({"best_mean_score": best["mean_score"], "best_trial_score": best_trial["score"]})
        if best_trial["checkpoint"]:
            with ckpts[best_trial["checkpoint"]].as_directory() as local:  # downloaded first when on S3
                mlflow.log_artifacts(str(RLPolicy.module_path(local)), "rl_module")
        summary = {
            "run_id": run.info.run_id, "tracking_uri": uri, "experiment": base.experiment, "name": run_name,
            "scheduler": scheduler, "select_metric": base.select_metric, "split": split.to_dict(),
            "used": {"train_first_bar": _iso(train_m.ts[0]), "select_last_bar": _iso(select_m.ts[-1])},
            "num_trials": len(trials), "seeds": seeds,
            "stopped_early": sum(t["iterations"] < base.iterations for t in trials),
            "configs": scores, "best_config": {k: v for k, v in best.items() if k in HPARAMS},
            "best_config_id": best["config_id"], "best_mean_score": best["mean_score"],
            "best_seed": best_trial["seed"], "best_checkpoint": best_trial["checkpoint"],
            "best_trial_score": best_trial["score"], "trials": trials,
        }  # fmt: skip
        log_json(json_ready(summary), "tune_summary.json")
    emit({"event": "stage", "stage": "done", "summary": summary})
    return summary

