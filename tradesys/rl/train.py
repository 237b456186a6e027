"""PPO training of the portfolio agent with RLlib (new API stack), walk-forward, tracked in MLflow.

Why this shape: the agent must be chosen honestly. A run is given three consecutive date periods (`WalkForward`):
PPO learns on the *train* period only; every ``eval_every`` iterations the current policy is checkpointed and run
deterministically over the whole *selection* period, and the checkpoint with the best selection metric is the
run's result; the *test* period is recorded with the run but its bars are never loaded here (`data_for_split` ends
the data at the selection period's last day), so `tradesys rl evaluate` can score the chosen agent on bars that no
training or selection step has seen.

Pieces:

* `WalkForward` and `split_market` (pure): the split, and the train / selection slices of a `MarketData`. The
  selection slice starts ``window - 1`` bars early, so its first decision is on the selection period's first bar
  (those look-back bars are observations of the past, not rewards).
* `PPOSettings` (pure): every PPO, Ray and tracking knob, validated with errors naming the field.
* `evaluate_policy` (pure): one deterministic pass over a period with any ``act(obs_batch) -> actions`` callable;
  the same function scores the trained policy and the baselines, so they are compared alike.
* `RLPolicy`: the trained `RLModule` loaded from a checkpoint, used outside RLlib: ``forward_inference``, the mean
  of the Gaussian (no exploration), then the action mapping RLlib's default module-to-env connector applies
  (`unsquash_action` to the env's bounds).
* `build_ppo_config` / `train_ppo` (Ray shell): the environment is registered by name (`ENV_NAME`) and built by
  every env runner from ``env_config`` (the `RLEnvConfig` fields plus the period's ``market``) by
  `tradesys.rl.env.make_env`; with
  ``num_envs_per_env_runner > 1`` each runner steps a `VectorPortfolioEnv` (one numpy call for all its episodes).
  Per iteration: episode return mean, env steps/s, the PPO losses; logged to MLflow at step = iteration and passed
  to ``progress``. Checkpoints (`Algorithm.save_to_path`) go to ``<runs_dir>/rl/<mlflow run id>/checkpoints``.

MLflow: the tracking URI follows `tradesys.train.tracking` (explicit, else ``$MLFLOW_TRACKING_URI``, else
``sqlite:///<runs_dir>/mlflow.db``). One run per `train_ppo` call: parameters (PPO settings, environment, the split
with the bars actually used), per-iteration metrics, ``sel_*`` selection metrics at the evaluated iterations, the
``split.json`` and ``summary.json`` artifacts, and the selected checkpoint's RLModule under ``rl_module/``.

Progress events (plain dicts, in the calling thread): ``{"event": "stage", "stage": s}`` for ``data``, ``build``,
``train`` (adds ``iterations``), ``done`` (adds ``summary``); ``{"event": "iteration", "iteration", "iterations",
"metrics", "selection"}`` after each iteration (``selection`` is None when it was not evaluated); and
``{"event": "note", "message"}``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from tradesys.config import DataConfig
from tradesys.rl.env import PortfolioEnv, RLEnvConfig, make_env
from tradesys.rl.market import MarketData

__all__ = [
    "ENV_NAME",
    "LEARNER_METRICS",
    "OPTION_DEFAULTS",
    "SELECT_METRICS",
    "PPOSettings",
    "RLPolicy",
    "WalkForward",
    "build_ppo_config",
    "data_for_split",
    "env_config_dict",
    "evaluate_policy",
    "flag_message",
    "iteration_metrics",
    "load_split_market",
    "settings_from_options",
    "split_market",
    "train_ppo",
]

ENV_NAME = "tradesys-portfolio"
SELECT_METRICS = ("sharpe", "log_return")
LEARNER_METRICS = ("policy_loss", "vf_loss", "total_loss", "entropy", "mean_kl_loss", "vf_explained_var")
Progress = Callable[[dict[str, Any]], None]
_DAY_NS = 86_400 * 10**9


# --------------------------------------------------------------------------------------------- the split (pure)


def _as_date(field: str, v: Any) -> date:
    if isinstance(v, date):
        return v
    try:
        return date.fromisoformat(str(v).strip())
    except ValueError:
        raise ValueError(f"{field}: {v!r} is not a date (YYYY-MM-DD)") from None


@dataclass(frozen=True)
class WalkForward:
    """Three consecutive periods, ends inclusive: train < selection < test (no overlap, in this order)."""

    train_start: date
    train_end: date
    select_start: date
    select_end: date
    test_start: date
    test_end: date

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, _as_date(f"split.{f.name}", getattr(self, f.name)))
        for name in ("train", "select", "test"):
            a, b = getattr(self, f"{name}_start"), getattr(self, f"{name}_end")
            if a > b:
                raise ValueError(f"split.{name}: starts ({a}) after it ends ({b})")
        if self.select_start <= self.train_end:
            raise ValueError(f"split.select: starts ({self.select_start}) on or before the train period ends "
                             f"({self.train_end})")  # fmt: skip
        if self.test_start <= self.select_end:
            raise ValueError(f"split.test: starts ({self.test_start}) on or before the selection period ends "
                             f"({self.select_end})")  # fmt: skip

    @classmethod
    def parse(cls, train: str, select: str, test: str) -> WalkForward:
        """From ``START:END`` strings (the CLI's ``--train/--select/--test``)."""
        parts: list[str] = []
        for name, text in (("train", train), ("select", select), ("test", test)):
            bits = str(text).split(":")
            if len(bits) != 2 or not all(b.strip() for b in bits):
                raise ValueError(f"split.{name}: {text!r} is not START:END (e.g. 2015-01-01:2018-12-31)")
            parts += [b.strip() for b in bits]
        return cls(*parts)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name).isoformat() for f in fields(self)}


def _ns(d: date) -> int:
    return int(np.datetime64(d.isoformat(), "ns").astype(np.int64))


def _iso(ts_ns: int) -> str:
    return str(np.datetime64(int(ts_ns), "ns").astype("datetime64[D]"))


def data_for_split(data: DataConfig, split: WalkForward) -> DataConfig:
    """The data to load for training: from the train period's start to the selection period's end, never the test
    period's bars. The first bars of the train period warm the features up (`tradesys.rl.market`)."""
    return data.model_copy(update={"start": split.train_start, "end": split.select_end})


def split_market(market: MarketData, split: WalkForward, window: int) -> tuple[MarketData, MarketData]:
    """(train, selection) slices of `market`; refuses a market holding bars of the test period.

    The selection slice begins ``window - 1`` bars before the selection period so the agent's first decision is on
    its first bar; its rewards all lie inside the selection period. Bars between the periods are dropped."""
    ts = market.ts
    if ts.size and ts[-1] >= _ns(split.test_start):
        raise ValueError(f"market: holds bars from {_iso(ts[-1])}, inside the test period (from {split.test_start}); "
                         "load the data with data_for_split")  # fmt: skip
    tr = np.flatnonzero((ts >= _ns(split.train_start)) & (ts < _ns(split.train_end) + _DAY_NS))
    se = np.flatnonzero((ts >= _ns(split.select_start)) & (ts < _ns(split.select_end) + _DAY_NS))
    if tr.size < 2:
        raise ValueError(f"split.train: {tr.size} bars between {split.train_start} and {split.train_end} "
                         "(after the feature warm-up)")  # fmt: skip
    if se.size < 2:
        raise ValueError(f"split.select: {se.size} bars between {split.select_start} and {split.select_end}")
    lo = int(se[0]) - (window - 1)
    if lo < 0:
        raise ValueError(f"split.select: its look-back window of {window} bars starts before the data")
    return market.slice(int(tr[0]), int(tr[-1]) + 1), market.slice(lo, int(se[-1]) + 1)


# --------------------------------------------------------------------------------------------- settings (pure)


def _int(name: str, v: Any, low: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < low:
        raise ValueError(f"{name}: must be an integer >= {low}, got {v!r}")
    return int(v)


def _num(name: str, v: Any, low: float, high: float, *, low_open: bool = True, high_open: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float | np.floating) or not math.isfinite(float(v)):
        raise ValueError(f"{name}: must be a finite number, got {v!r}")
    x = float(v)
    if (x <= low if low_open else x < low) or (x >= high if high_open else x > high):
        lb, rb = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"{name}: must be in {lb}{low:g}, {high:g}{rb}, got {v!r}")
    return x


@dataclass(frozen=True)
class PPOSettings:
    """PPO hyper-parameters, Ray layout, selection and tracking; validated on construction (errors name the field).

    ``train_batch_size`` env steps are sampled per iteration (split over the env runners), then ``num_epochs``
    passes of ``minibatch_size`` SGD steps. ``eval_every``: selection-period evaluation and checkpoint every that
    many iterations (and always at the last one).
    """

    iterations: int = 20
    num_env_runners: int = 1
    num_envs_per_env_runner: int = 1
    train_batch_size: int = 4000
    minibatch_size: int = 256
    num_epochs: int = 10
    lr: float = 3e-4
    gamma: float = 0.99
    lambda_: float = 0.95
    clip_param: float = 0.2
    entropy_coeff: float = 0.0
    vf_clip_param: float = 10.0
    hidden: tuple[int, ...] = (64, 64)
    seed: int = 0
    eval_every: int = 1
    select_metric: str = "sharpe"
    periods_per_year: float = 252.0
    runs_dir: str = "runs"
    mlflow_uri: str | None = None
    experiment: str = "tradesys-rl"

    def __post_init__(self) -> None:
        put = object.__setattr__
        for name, low in (("iterations", 1), ("num_env_runners", 0), ("num_envs_per_env_runner", 1),
                          ("train_batch_size", 2), ("minibatch_size", 1), ("num_epochs", 1), ("seed", 0),
                          ("eval_every", 1)):  # fmt: skip
            put(self, name, _int(name, getattr(self, name), low))
        if self.minibatch_size > self.train_batch_size:
            raise ValueError(f"minibatch_size: {self.minibatch_size} is larger than train_batch_size "
                             f"{self.train_batch_size}")  # fmt: skip
        put(self, "lr", _num("lr", self.lr, 0.0, 1.0))
        put(self, "gamma", _num("gamma", self.gamma, 0.0, 1.0))
        put(self, "lambda_", _num("lambda_", self.lambda_, 0.0, 1.0, low_open=False))
        put(self, "clip_param", _num("clip_param", self.clip_param, 0.0, 10.0))
        put(self, "entropy_coeff", _num("entropy_coeff", self.entropy_coeff, 0.0, 10.0, low_open=False))
        put(self, "vf_clip_param", _num("vf_clip_param", self.vf_clip_param, 0.0, math.inf, high_open=True))
        put(self, "periods_per_year", _num("periods_per_year", self.periods_per_year, 0.0, 1e7))
        hidden = (self.hidden,) if isinstance(self.hidden, int) else tuple(self.hidden)
        if not hidden:
            raise ValueError("hidden: name at least one layer size")
        put(self, "hidden", tuple(_int("hidden", h, 1) for h in hidden))
        if self.select_metric not in SELECT_METRICS:
            raise ValueError(f"select_metric: must be one of {SELECT_METRICS}, got {self.select_metric!r}")
        for name in ("runs_dir", "experiment"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v.strip():
                raise ValueError(f"{name}: must be a non-empty string")
        if self.mlflow_uri is not None and not str(self.mlflow_uri).strip():
            raise ValueError("mlflow_uri: must be a non-empty URI or None")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d


def env_config_dict(env: RLEnvConfig, market: MarketData | None = None, **overrides: Any) -> dict[str, Any]:
    """RLlib's ``env_config``: the `RLEnvConfig` fields (``data`` dropped when a market is given) plus ``market``."""
    d: dict[str, Any] = {f.name: getattr(env, f.name) for f in fields(env)}
    d.update(overrides)
    if market is not None:
        d["data"] = None
        d["market"] = market
    return d


def _loggable_env(env: RLEnvConfig) -> dict[str, Any]:
    """The environment settings as plain values (for MLflow and the summary)."""
    out: dict[str, Any] = {}
    for f in fields(env):
        v = getattr(env, f.name)
        out[f.name] = v.model_dump(mode="json") if hasattr(v, "model_dump") else (list(v) if isinstance(v, tuple)
                                                                                  else v)  # fmt: skip
    return out


# --------------------------------------------------------------------------------------------- evaluation (pure)


def evaluate_policy(
    act: Callable[[np.ndarray], np.ndarray],
    env: RLEnvConfig,
    market: MarketData,
    *,
    periods_per_year: float = 252.0,
) -> dict[str, Any]:
    """One deterministic pass of ``act`` over the whole of `market` (``episode_length=None``), net of costs.

    Returns ``log_return`` (log E_T / E_0), ``total_return``, ``sharpe`` (annualised mean / std of the per-bar
    log returns; None for a flat path), ``max_drawdown``, ``mean_weights`` (per asset, held after each step),
    ``mean_cash_weight``, ``turnover`` (mean traded notional / equity per step), ``costs`` (fees + slippage over
    initial cash), ``n_steps``, ``start``/``end`` dates. ``act`` gets a (1, obs_dim) batch and returns (1, act_dim).
    """
    e = PortfolioEnv(replace(env, episode_length=None, data=None), market=market)
    obs, info = e.reset(seed=0)
    equity = [float(info["equity"])]
    weights, turnover, costs = [], [], 0.0
    done = False
    while not done:
        a = np.asarray(act(obs[None, :]), dtype=np.float64).reshape(e.action_space.shape)
        obs, _, term, trunc, info = e.step(a)
        equity.append(float(info["equity"]))
        weights.append(np.asarray(info["weights"], dtype=np.float64))
        turnover.append(float(info["turnover"]))
        costs += float(info["costs"])
        done = term or trunc
    eq = np.asarray(equity)
    r = np.diff(np.log(np.maximum(eq, 1e-300)))
    sd = float(np.std(r, ddof=1)) if r.size > 1 else 0.0
    sharpe = float(np.mean(r) / sd * math.sqrt(periods_per_year)) if sd > 0 else None
    w = np.asarray(weights)
    peak = np.maximum.accumulate(eq)
    return {
        "log_return": float(np.log(eq[-1] / eq[0])) if eq[-1] > 0 else float("-inf"),
        "total_return": float(eq[-1] / eq[0] - 1.0),
        "sharpe": sharpe,
        "max_drawdown": float(np.max(1.0 - eq / peak)),
        "mean_weights": w.mean(axis=0).tolist(),
        "mean_cash_weight": float(1.0 - w.sum(axis=1).mean()),
        "turnover": float(np.mean(turnover)),
        "costs": costs / env.initial_cash,
        "n_steps": int(r.size),
        "start": _iso(int(market.ts[env.window - 1])),
        "end": _iso(int(market.ts[-1])),
    }


def _score(sel: Mapping[str, Any], metric: str) -> float:
    v = sel.get(metric)
    return float(v) if v is not None and math.isfinite(float(v)) else -math.inf


# --------------------------------------------------------------------------------------------- Ray / RLlib shell


def register() -> None:
    """Register `tradesys.rl.env.make_env` under `ENV_NAME` (Ray ships the creator to every env runner)."""
    from ray.tune.registry import register_env

    register_env(ENV_NAME, make_env)


def build_ppo_config(env_config: Mapping[str, Any], s: PPOSettings) -> Any:
    """The `PPOConfig` (new API stack: RLModule, Learner, EnvRunners) for these settings."""
    import gymnasium as gym
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    register()
    vec = gym.VectorizeMode.VECTOR_ENTRY_POINT if s.num_envs_per_env_runner > 1 else gym.VectorizeMode.SYNC
    return (
        PPOConfig()
        .environment(env=ENV_NAME, env_config=dict(env_config))
        .env_runners(num_env_runners=s.num_env_runners, num_envs_per_env_runner=s.num_envs_per_env_runner,
                     gym_env_vectorize_mode=vec, rollout_fragment_length="auto", num_cpus_per_env_runner=1)
        .learners(num_learners=0)
        .training(train_batch_size_per_learner=s.train_batch_size, minibatch_size=s.minibatch_size,
                  num_epochs=s.num_epochs, lr=s.lr, gamma=s.gamma, lambda_=s.lambda_, clip_param=s.clip_param,
                  entropy_coeff=s.entropy_coeff, vf_clip_param=s.vf_clip_param)
        .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=list(s.hidden), fcnet_activation="tanh"))
        .debugging(seed=s.seed, log_level="ERROR")
    )  # fmt: skip


def _f(v: Any) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return float("nan")
    return x


def iteration_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The per-iteration numbers of an ``algo.train()`` result: episode return, env steps and steps/s, losses."""
    er = result.get("env_runners", {}) or {}
    le = (result.get("learners", {}) or {}).get("default_policy", {}) or {}
    secs = _f(result.get("time_this_iter_s"))
    steps = _f(er.get("num_env_steps_sampled"))
    out = {
        "episode_return_mean": _f(er.get("episode_return_mean")),
        "episode_len_mean": _f(er.get("episode_len_mean")),
        "num_episodes": _f(er.get("num_episodes")),
        "env_steps": steps,
        "env_steps_lifetime": _f(er.get("num_env_steps_sampled_lifetime")),
        "time_this_iter_s": secs,
        "env_steps_per_s": steps / secs if secs > 0 else float("nan"),
    }
    out.update({k: _f(le.get(k)) for k in LEARNER_METRICS})
    return out


class RLPolicy:
    """A trained RLModule used outside RLlib: deterministic target-weight actions for observation batches."""

    def __init__(self, module: Any) -> None:
        self.module = module
        self.module.eval()
        self._dist = module.get_inference_action_dist_cls()

    @staticmethod
    def module_path(checkpoint: str | os.PathLike[str]) -> Path:
        """Where an `Algorithm.save_to_path` checkpoint keeps the policy's RLModule."""
        from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_LEARNER_GROUP, COMPONENT_RL_MODULE, DEFAULT_MODULE_ID

        p = Path(checkpoint) / COMPONENT_LEARNER_GROUP / COMPONENT_LEARNER / COMPONENT_RL_MODULE / DEFAULT_MODULE_ID
        return p if p.is_dir() else Path(checkpoint)  # an RLModule directory itself

    @classmethod
    def from_checkpoint(cls, checkpoint: str | os.PathLike[str]) -> RLPolicy:
        """From an algorithm checkpoint directory or an RLModule directory."""
        from ray.rllib.core.rl_module.rl_module import RLModule

        p = cls.module_path(checkpoint)
        if not (p / "module_state.pkl").exists() and not any(p.glob("module_state*")):
            raise ValueError(f"checkpoint: {str(checkpoint)!r} holds no RLModule")
        return cls(RLModule.from_checkpoint(p))

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """(batch, obs_dim) observations -> (batch, act_dim) actions in the env's bounds (no exploration)."""
        import torch
        from ray.rllib.utils.spaces.space_utils import unsquash_action

        x = torch.as_tensor(np.asarray(obs, dtype=np.float32))
        with torch.no_grad():
            out = self.module.forward_inference({"obs": x})
        a = self._dist.from_logits(out["action_dist_inputs"]).to_deterministic().sample().numpy()
        return np.asarray(unsquash_action(a, self.module.action_space), dtype=np.float64)


def _ensure_ray(emit: Progress) -> None:
    """Join the Ray this process has, or RAY_ADDRESS (inside a Ray job), else a loopback-only local head."""
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(include_dashboard=False, log_to_driver=False)
    else:
        from tradesys.localray import init_local

        init_local(None, False, lambda m: emit({"event": "note", "message": m}))


def run_iterations(
    algo: Any,
    s: PPOSettings,
    env: RLEnvConfig,
    select_market: MarketData,
    ckpt_dir: Path,
    on_iteration: Callable[[int, dict[str, float], dict[str, Any] | None, str | None], None],
    *,
    start: int = 0,
) -> dict[str, Any]:
    """The training loop shared by `train_ppo` and the Tune trainable: train, and every ``eval_every`` iterations
    (and at the last) checkpoint and score the checkpoint's policy on the selection period. Returns the best."""
    best: dict[str, Any] = {"iteration": None, "score": -math.inf, "selection": None, "checkpoint": None}
    for it in range(start + 1, s.iterations + 1):
        metrics = iteration_metrics(algo.train())
        sel, path = None, None
        if it % s.eval_every == 0 or it == s.iterations:
            path = str(Path(algo.save_to_path(str(ckpt_dir / f"iter_{it:06d}"))))
            sel = evaluate_policy(RLPolicy.from_checkpoint(path), env, select_market,
                                  periods_per_year=s.periods_per_year)  # fmt: skip
            score = _score(sel, s.select_metric)
            if best["iteration"] is None or score > best["score"]:
                best = {"iteration": it, "score": score, "selection": sel, "checkpoint": path}
        on_iteration(it, metrics, sel, path)
    return best


def _sel_metrics(sel: Mapping[str, Any]) -> dict[str, float]:
    keys = ("log_return", "total_return", "sharpe", "max_drawdown", "turnover", "costs", "mean_cash_weight")
    out = {f"sel_{k}": float(sel[k]) for k in keys if sel.get(k) is not None and math.isfinite(float(sel[k]))}
    for i, w in enumerate(sel.get("mean_weights", [])):
        out[f"sel_mean_weight_{i}"] = float(w)
    return out


def train_ppo(
    market: MarketData,
    env: RLEnvConfig,
    split: WalkForward,
    settings: PPOSettings,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train PPO on the split's train period, select on its selection period (module docstring); the summary.

    `market` must end before the test period (`data_for_split`). Joins the Ray it finds, RAY_ADDRESS, or starts a
    loopback-only local head."""
    import mlflow

    from tradesys.core.jsonsafe import json_ready
    from tradesys.train.tracking import log_json, log_params, setup_tracking

    for name, v, kind in (("market", market, MarketData), ("env", env, RLEnvConfig), ("split", split, WalkForward),
                          ("settings", settings, PPOSettings)):  # fmt: skip
        if not isinstance(v, kind):
            raise ValueError(f"{name}: expected {kind.__name__}, got {type(v).__name__}")
    s = settings
    emit: Progress = progress if progress is not None else (lambda _e: None)
    emit({"event": "stage", "stage": "data"})
    train_m, select_m = split_market(market, split, env.window)
    # refuse a period too short for the environment before anything starts (the env's own check, named)
    PortfolioEnv(env_config_dict(env, train_m))
    PortfolioEnv(env_config_dict(env, select_m, episode_length=None))
    used = {"train_first_bar": _iso(train_m.ts[0]), "train_last_bar": _iso(train_m.ts[-1]),
            "train_bars": train_m.n_bars, "select_first_decision": _iso(select_m.ts[env.window - 1]),
            "select_last_bar": _iso(select_m.ts[-1]), "select_bars": select_m.n_bars - env.window + 1}  # fmt: skip

    runs_dir = Path(s.runs_dir).expanduser().resolve()
    uri, _ = setup_tracking(s.experiment, s.mlflow_uri, runs_dir=runs_dir)
    _ensure_ray(emit)
    emit({"event": "stage", "stage": "build"})
    t0 = time.perf_counter()
    algo = build_ppo_config(env_config_dict(env, train_m), s).build_algo()
    build_s = time.perf_counter() - t0
    history: list[dict[str, Any]] = []
    try:
        with mlflow.start_run(run_name=f"ppo-seed{s.seed}") as run:
            run_id = run.info.run_id
            ckpt_dir = runs_dir / "rl" / run_id / "checkpoints"
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            log_params({"ppo": s.to_dict(), "env": _loggable_env(env), "split": split.to_dict(), "used": used,
                        "symbols": ",".join(market.symbols), "features": ",".join(market.feature_names),
                        "algorithm": "PPO (RLlib new API stack)"})  # fmt: skip
            log_json({"split": split.to_dict(), "used": used, "select_metric": s.select_metric}, "split.json")
            mlflow.log_metric("build_s", build_s)
            emit({"event": "stage", "stage": "train", "iterations": s.iterations})

            def on_iteration(it: int, m: dict[str, float], sel: dict[str, Any] | None, path: str | None) -> None:
                finite = {k: v for k, v in m.items() if math.isfinite(v)}
                if sel is not None:
                    finite.update(_sel_metrics(sel))
                mlflow.log_metrics(finite, step=it)
                history.append({"iteration": it, **m, "selection": sel, "checkpoint": path})
                emit({"event": "iteration", "iteration": it, "iterations": s.iterations, "metrics": m,
                      "selection": sel})  # fmt: skip

            best = run_iterations(algo, s, env, select_m, ckpt_dir, on_iteration)
            mlflow.log_artifacts(str(RLPolicy.module_path(best["checkpoint"])), "rl_module")
            mlflow.set_tags({"best_checkpoint": best["checkpoint"], "best_iteration": str(best["iteration"])})
            steps = [h["env_steps_per_s"] for h in history if math.isfinite(h["env_steps_per_s"])]
            summary = {
                "run_id": run_id, "tracking_uri": uri, "experiment": s.experiment, "algorithm": "PPO",
                "symbols": list(market.symbols), "features": list(market.feature_names), "split": split.to_dict(),
                "used": used, "select_metric": s.select_metric, "best_iteration": best["iteration"],
                "best_checkpoint": best["checkpoint"], "selection": best["selection"],
                "last": {k: v for k, v in history[-1].items() if k not in ("selection", "checkpoint")},
                "iterations": s.iterations, "num_env_runners": s.num_env_runners,
                "num_envs_per_env_runner": s.num_envs_per_env_runner, "seed": s.seed, "build_s": build_s,
                "env_steps_per_s_median": float(np.median(steps)) if steps else None,
                "checkpoints": [h["checkpoint"] for h in history if h["checkpoint"]],
                "settings": s.to_dict(), "env": _loggable_env(env),
            }  # fmt: skip
            log_json(json_ready(summary), "summary.json")
            from tradesys.core.jsonsafe import dumps

            (ckpt_dir.parent / "summary.json").write_text(dumps(summary) + "\n")  # `tradesys rl export RUN_DIR`
    finally:
        algo.stop()
    emit({"event": "stage", "stage": "done", "summary": summary})
    return summary


# --------------------------------------------------------------------------------------------- CLI / job options

OPTION_DEFAULTS: dict[str, Any] = {
    "source": "sp500_stocks", "symbols": None, "features": None,
    "train": "2010-01-01:2016-12-31", "select": "2017-01-01:2018-12-31", "test": "2019-01-01:2022-12-31",
    "window": 20, "episode_length": 252, "action_mode": "softmax", "reward": "log_return", "max_weight": 1.0,
    "max_gross_leverage": 1.0, "initial_cash": 1_000_000.0, "risk_limits": True,
    **{f.name: f.default for f in fields(PPOSettings)},
}  # fmt: skip
OPTION_DEFAULTS["hidden"] = "64,64"
_FLAG_OF = {"split.train": "--train", "split.select": "--select", "split.test": "--test", "lambda_": "--lambda",
            "risk": "--risk-limits", "data.source": "--source", "data.symbols": "--symbols", "seeds": "--seeds",
            "num_samples": "--num-samples", "grace_period": "--grace-period", "runs_dir": "--runs-dir"}  # fmt: skip


def flag_message(message: str) -> str:
    """A settings error ("field: reason") with the field written as the CLI/job flag ("--field: reason"); a message
    that does not start with a known setting (e.g. a data source's own error) is returned as it is, prefixed with
    the flag of the data source's symbols when it names the source."""
    head, sep, rest = message.partition(":")
    key = head.strip()
    if not sep:
        return message
    known = set(OPTION_DEFAULTS) | {f.name for f in fields(RLEnvConfig)}
    if key in _FLAG_OF:
        return f"{_FLAG_OF[key]}:{rest}"
    if key.startswith("split."):
        return f"--{key.split('.')[1].split('_')[0]}:{rest}"
    if key.startswith("data."):
        return f"--{key.split('.')[1].replace('_', '-')}:{rest}"
    if key in known:
        return f"--{key.replace('_', '-')}:{rest}"
    if "unknown symbol" in rest:
        return f"--symbols: {message}"
    return message


def _csv(text: str | None) -> tuple[str, ...]:
    return tuple(x.strip() for x in (text or "").split(",") if x.strip())


def settings_from_options(**opts: Any) -> tuple[DataConfig, RLEnvConfig, WalkForward, PPOSettings]:
    """(data, env, split, PPO settings) from the CLI's / job's options (`OPTION_DEFAULTS` names); a ValueError
    names the field (`flag_message` turns it into the flag)."""
    from pydantic import ValidationError

    from tradesys.config import RiskConfig
    from tradesys.rl.market import DEFAULT_FEATURES

    unknown = sorted(set(opts) - set(OPTION_DEFAULTS))
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown option")
    o = {**OPTION_DEFAULTS, **{k: v for k, v in opts.items() if v is not None or k == "mlflow_uri"}}
    split = WalkForward.parse(o["train"], o["select"], o["test"])
    symbols = list(_csv(o["symbols"])) or None
    try:
        data = DataConfig(source=o["source"], symbols=symbols, start=split.train_start, end=split.select_end)
    except ValidationError as exc:
        e = exc.errors()[0]
        raise ValueError(f"data.{'.'.join(str(p) for p in e['loc']) or 'source'}: {e['msg']}") from None
    feats = _csv(o["features"]) or DEFAULT_FEATURES
    env = RLEnvConfig(window=o["window"], episode_length=o["episode_length"] or None, action_mode=o["action_mode"],
                      reward=o["reward"], max_weight=o["max_weight"], max_gross_leverage=o["max_gross_leverage"],
                      initial_cash=o["initial_cash"], risk=RiskConfig() if o["risk_limits"] else None, data=data,
                      features=feats)  # fmt: skip
    hidden = o["hidden"]
    if isinstance(hidden, str):
        try:
            hidden = tuple(int(h) for h in _csv(hidden))
        except ValueError:
            raise ValueError(f"hidden: {o['hidden']!r} is not comma-separated layer sizes (e.g. 64,64)") from None
    ppo = PPOSettings(**{f.name: (hidden if f.name == "hidden" else o[f.name]) for f in fields(PPOSettings)})
    return data, env, split, ppo


def load_split_market(data: DataConfig, env: RLEnvConfig, split: WalkForward) -> MarketData:
    """The bars training may see: the train period's start to the selection period's end (`data_for_split`)."""
    from tradesys.rl.market import market_from_source

    return market_from_source(data_for_split(data, split), env.features)
