"""Champion and challenger for trained policies: the forecasters' registry rules applied to RL agents, and the
launcher that lets the DriftMonitor retrain one with ``jobs/rl_train.py``.

Why the same rules: a retrained policy that looks better on a few hundred holdout bars usually differs by noise;
swapping the traded policy on noise churns positions for nothing. So a challenger replaces the champion only when
its holdout returns are significantly higher, by the test the forecasters already use
(`tradesys.train.registry.promote_if_better`: one-sided Diebold-Mariano, HLN correction, uniform kernel). The loss
per bar is the negative log return of equity net of costs, so the loss differential is minus the difference of
the two policies' daily returns on the same holdout bars, both stepped through the same environment
(`tradesys.rl.evaluate.run_agent`). Baselines (e.g. buy-and-hold on the same bars) can be required as a gate, as
for the forecasters. The decision and its statistics are recorded on the challenger's MLflow run (tags
``promotion.*``, metrics ``promotion_*``) and the champion history on the registered model.

* `register_policy(run_id, name)`: a new version whose source is the run's ``rl_module`` artifact (what
  ``tradesys rl train`` logs), pointed at by the ``challenger`` alias. (MLflow's ``register_model`` accepts only
  logged MLflow models, so the version is created directly.)
* `holdout_returns(policy, env, market)`: per-bar log returns of a policy over a holdout.
* `promote_policy_if_better(name, challenger_returns, champion_returns)`: the rule above; returns the
  `PromotionDecision`. `promote_from_holdout` does it from checkpoints: loads both policies, runs the holdout.
* `policy_checkpoint(name, alias)`: the local RLModule directory of a registered version (downloaded).
* Retraining: `RLTrainLauncher` (a `tradesys.train.launch.RetrainLauncher`) runs ``jobs/rl_train.py`` as a Ray task
  (default) or through the Jobs API; `rl_train_argv` builds its flags. Give both to
  `tradesys.train.drift_monitor.DriftMonitorCore` (``launcher=``, ``train_argv=``) and its triggers retrain the agent.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tradesys.rl.env import RLEnvConfig
from tradesys.rl.market import MarketData
from tradesys.train.launch import JobState, JobSubmissionLauncher, RayTaskLauncher
from tradesys.train.registry import CHALLENGER, PromotionDecision, alias_version, promote_if_better

__all__ = [
    "POLICY_LOSS",
    "RLTrainLauncher",
    "holdout_returns",
    "policy_checkpoint",
    "promote_from_holdout",
    "promote_policy_if_better",
    "register_policy",
    "rl_train_argv",
    "rl_train_script",
]

POLICY_LOSS = "neg_log_return"


def _returns(name: str, x: Any) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if a.size < 3:
        raise ValueError(f"{name}: need at least 3 holdout returns, got {a.size}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: non-finite return at bar {int(np.flatnonzero(~np.isfinite(a))[0])}")
    return a


def holdout_returns(policy: Callable[[np.ndarray], np.ndarray], env: RLEnvConfig, market: MarketData) -> np.ndarray:
    """Per-bar log returns of equity, net of costs, of `policy` run deterministically over the whole holdout."""
    from tradesys.rl.evaluate import run_agent

    return run_agent(policy, env, market).returns


def register_policy(run_id: str, name: str, *, artifact_path: str = "rl_module", tracking_uri: str | None = None,
                    tags: Mapping[str, str] | None = None) -> int:  # fmt: skip
    """Register the run's policy artifact as a new version of `name` (created if needed); point ``challenger`` at
    it; return the version."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if not name or not name.strip():
        raise ValueError("name: must be a non-empty registered model name")
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ValueError(f"run_id: no MLflow run {run_id!r}") from None
    if not any(f.path == artifact_path for f in client.list_artifacts(run_id)):
        raise ValueError(f"run_id: run {run_id!r} has no {artifact_path!r} artifact (a tradesys rl train run logs it)")
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
            raise
    mv = client.create_model_version(name, source=f"{run.info.artifact_uri}/{artifact_path}", run_id=run_id,
                                     tags=dict(tags or {}))  # fmt: skip
    client.set_registered_model_alias(name, CHALLENGER, str(mv.version))
    return int(mv.version)


def promote_policy_if_better(
    name: str,
    challenger_returns: Any,
    champion_returns: Any,
    alpha: float = 0.05,
    *,
    baselines: Mapping[str, Any] | None = None,
    tracking_uri: str | None = None,
) -> PromotionDecision:
    """Promote the ``challenger`` policy iff its holdout returns are significantly higher than the champion's (and,
    with `baselines`, than each baseline's): the forecasters' one-sided DM test on the loss -log return. With no
    champion yet only the baseline gate applies. Returns are per bar, on the same holdout bars, in order."""
    a = _returns("challenger_returns", challenger_returns)
    has_champion = alias_version(name, "champion", tracking_uri=tracking_uri) is not None
    b = _returns("champion_returns", champion_returns) if has_champion else np.asarray(champion_returns, float)
    if has_champion and b.shape != a.shape:
        raise ValueError(f"champion_returns: {b.size} bars, the challenger has {a.size} (the same holdout is needed)")
    gate = None
    if baselines:
        gate = {}
        for k, v in baselines.items():
            r = _returns(f"baselines.{k}", v)
            if r.shape != a.shape:
                raise ValueError(f"baselines.{k}: {r.size} bars, the challenger has {a.size}")
            gate[str(k)] = -r
    return promote_if_better(name, -a, -b, alpha, h=1, tracking_uri=tracking_uri, baselines=gate, loss=POLICY_LOSS)


def policy_checkpoint(name: str, alias: str = "champion", *, dest: str | Path, tracking_uri: str | None = None) -> Path:
    """The RLModule directory of `name`'s version at `alias`, downloaded under `dest`."""
    import mlflow.artifacts
    from mlflow import MlflowClient

    v = alias_version(name, alias, tracking_uri=tracking_uri)
    if v is None:
        raise ValueError(f"name: registered model {name!r} has no {alias!r} alias")
    mv = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri).get_model_version(name, str(v))
    out = Path(dest) / f"{name}-v{v}"
    out.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=mv.source, dst_path=str(out),
                                                    tracking_uri=tracking_uri))  # fmt: skip


def promote_from_holdout(
    name: str,
    env: RLEnvConfig,
    holdout: MarketData,
    *,
    alpha: float = 0.05,
    baselines: Mapping[str, Any] | None = None,
    tracking_uri: str | None = None,
    scratch: str | Path,
) -> PromotionDecision:
    """`promote_policy_if_better` for the registered ``challenger`` and ``champion``: both policies are downloaded,
    loaded (`RLPolicy`) and run over `holdout` through the same environment."""
    from tradesys.rl.train import RLPolicy

    chall = RLPolicy.from_checkpoint(policy_checkpoint(name, CHALLENGER, dest=scratch, tracking_uri=tracking_uri))
    ra = holdout_returns(chall, env, holdout)
    rb: np.ndarray = np.zeros(0)
    if alias_version(name, "champion", tracking_uri=tracking_uri) is not None:
        champ = RLPolicy.from_checkpoint(policy_checkpoint(name, "champion", dest=scratch, tracking_uri=tracking_uri))
        rb = holdout_returns(champ, env, holdout)
    return promote_policy_if_better(name, ra, rb, alpha, baselines=baselines, tracking_uri=tracking_uri)


# --------------------------------------------------------------------------------------------- retraining


def rl_train_script() -> Path:
    """``jobs/rl_train.py`` of this checkout."""
    return Path(__file__).resolve().parents[2] / "jobs" / "rl_train.py"


def rl_train_argv(runs_dir: str | Path, options: Mapping[str, Any] | None = None, *, tune: bool = False) -> list[str]:
    """The flags of ``jobs/rl_train.py`` for a retraining: `options` by `tradesys.rl.train.OPTION_DEFAULTS` name
    (checked here, so a typo fails when the monitor is set up, not at the first drift), an absolute ``--runs-dir``
    (a Ray job's working directory is temporary), ``--json`` and ``--quiet``."""
    from tradesys.rl.train import OPTION_DEFAULTS

    rd = Path(runs_dir).expanduser()
    if not rd.is_absolute():
        raise ValueError(f"runs_dir: {str(runs_dir)!r} is relative; a retraining job needs an absolute path")
    argv = ["--runs-dir", str(rd), "--json", "--quiet"]
    for k, v in (options or {}).items():
        if k not in OPTION_DEFAULTS or k == "runs_dir":
            raise ValueError(f"options.{k}: not a jobs/rl_train.py option")
        if k == "risk_limits":
            if not v:
                argv.append("--no-risk-limits")
            continue
        argv += ["--lambda" if k == "lambda_" else "--" + k.replace("_", "-"), str(v)]
    if tune:
        argv.append("--tune")
    return argv


class RLTrainLauncher:
    """Launches ``jobs/rl_train.py`` for the DriftMonitor (`tradesys.train.launch.RetrainLauncher`).

    ``kind="ray_task"`` (default): a Ray task in the current cluster (`RayTaskLauncher`); each launch adds
    ``--out <summaries_dir>/<id>.json`` and a finished job's summary is read from that file (the script returns an
    exit status, not the summary). ``kind="job_submission"``: ``ray job submit`` through the dashboard at
    ``address`` (`JobSubmissionLauncher`); the summary is the JSON line the job prints (``--json``)."""

    def __init__(self, kind: str = "ray_task", *, summaries_dir: str | Path | None = None,
                 address: str | None = None, num_cpus: float = 1.0, runtime_env: dict[str, Any] | None = None,
                 **job_kwargs: Any) -> None:  # fmt: skip
        self.kind = kind
        self._out: dict[str, Path] = {}
        if kind == "ray_task":
            base = Path(summaries_dir).expanduser() if summaries_dir is not None else None
            if base is None or not base.is_absolute():
                raise ValueError(f"summaries_dir: an absolute directory is required for ray_task, got "
                                 f"{summaries_dir!r}")  # fmt: skip
            base.mkdir(parents=True, exist_ok=True)
            self.summaries_dir = base
            self.inner: Any = RayTaskLauncher(rl_train_script(), num_cpus=num_cpus, runtime_env=runtime_env)
        elif kind == "job_submission":
            if not address:
                raise ValueError("address: the dashboard address is required for job_submission")
            root = rl_train_script().parents[1]
            self.inner = JobSubmissionLauncher(address, working_dir=job_kwargs.pop("working_dir", root),
                                               script="jobs/rl_train.py", runtime_env=runtime_env,
                                               **job_kwargs)  # fmt: skip
        else:
            raise ValueError(f"kind: must be 'ray_task' or 'job_submission', got {kind!r}")
        self.name = f"rl_train_{kind}"

    def launch(self, argv: Sequence[str]) -> str:
        args = [str(a) for a in argv]
        if "--out" in args:
            raise ValueError("argv: --out is set by the launcher")
        if self.kind == "ray_task":
            out = self.summaries_dir / f"rl-train-{uuid.uuid4().hex[:12]}.json"
            job_id = self.inner.launch([*args, "--out", str(out)])
            self._out[job_id] = out
            return str(job_id)
        return str(self.inner.launch(args))

    def poll(self, job_id: str) -> JobState:
        st = self.inner.poll(job_id)
        if self.kind != "ray_task" or st.state != "succeeded":
            return st
        out = self._out.pop(job_id, None)
        try:
            summary = json.loads(out.read_text()) if out is not None else None
        except (OSError, json.JSONDecodeError) as exc:
            return JobState("failed", error=f"summary: {out}: {exc}")
        if not isinstance(summary, dict):
            return JobState("failed", error=f"summary: {out} holds no summary")
        return JobState("succeeded", summary=summary)
