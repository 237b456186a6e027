"""`tradesys rl ...`: train the PPO portfolio agent (`rl train`) or tune it (`rl tune`), walk-forward, in MLflow.

Both take the options of ``jobs/rl_train.py`` (`tradesys.rl.train.OPTION_DEFAULTS`): the data (source, symbols,
features), the split (``--train/--select/--test START:END``; the test period's bars are never loaded), the
environment and the PPO settings. `rl train` shows a progress bar over iterations with the latest episode return,
env steps/s and selection score, then the summary table; `rl tune` a bar over trials. ``--json`` prints only the
strict-JSON summary on stdout (progress on stderr); ``--out FILE`` also writes it. A bad option prints one line,
``error: --flag: reason``, and exits with code 2, before Ray starts. It joins a running Ray (or ``RAY_ADDRESS``)
and otherwise starts a loopback-only local head.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(no_args_is_help=True, help="Reinforcement learning: PPO portfolio agent (RLlib), walk-forward.")
console = Console()
err_console = Console(stderr=True)


@app.callback()
def _group() -> None:
    """Train and tune the PPO portfolio agent (see docs/rl.md)."""


Source = Annotated[str, typer.Option(help="sp500_stocks, us_indices or synthetic")]
Symbols = Annotated[str | None, typer.Option(help="comma-separated symbols (default: all the source has)")]
Features = Annotated[str | None, typer.Option(help="comma-separated built-in features (default: all)")]
TrainP = Annotated[str, typer.Option("--train", help="START:END of the train period")]
SelectP = Annotated[str, typer.Option("--select", help="START:END of the selection (validation) period")]
TestP = Annotated[str, typer.Option("--test", help="START:END of the test period (never loaded here)")]
Window = Annotated[int, typer.Option(help="look-back bars in the observation")]
EpLen = Annotated[int, typer.Option(help="steps per training episode (0: the whole train period)")]
ActionMode = Annotated[str, typer.Option(help="softmax (long-only with cash) or clip (long/short)")]
Reward = Annotated[str, typer.Option(help="log_return, dsr or penalised")]
RiskLimits = Annotated[bool, typer.Option("--risk-limits/--no-risk-limits", help="pre-trade limits in the env")]
Iterations = Annotated[int, typer.Option(help="PPO iterations")]
Runners = Annotated[int, typer.Option(help="env runners (Ray actors, one CPU each; 0: sample in the driver)")]
EnvsPer = Annotated[int, typer.Option(help="episodes each env runner steps in one numpy call")]
Batch = Annotated[int, typer.Option(help="env steps sampled per iteration")]
Hidden = Annotated[str, typer.Option(help="comma-separated layer sizes")]
EvalEvery = Annotated[int, typer.Option(help="checkpoint and score on the selection period every N iterations")]
SelMetric = Annotated[str, typer.Option(help="sharpe or log_return on the selection period")]
MlflowUri = Annotated[str | None, typer.Option(help="tracking URI (default: sqlite:///<runs-dir>/mlflow.db)")]
Out = Annotated[Path | None, typer.Option("--out", help="also write the summary as JSON to this file")]
AsJson = Annotated[bool, typer.Option("--json", help="print the summary as JSON on stdout (NaN: null)")]


def _fail(message: str) -> NoReturn:
    from tradesys.rl.train import flag_message

    typer.echo(f"error: {' '.join(flag_message(message).split())}", err=True)
    raise typer.Exit(2)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def train_table(summary: dict[str, Any]) -> Table:
    """The run's headline: split, the selected checkpoint and its selection-period figures, throughput."""
    t = Table(title=f"PPO run {summary['run_id']}", show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    sp, used, sel = summary["split"], summary["used"], summary.get("selection") or {}
    rows = [
        ("symbols", ", ".join(summary["symbols"])),
        ("train", f"{used['train_first_bar']} .. {used['train_last_bar']} ({used['train_bars']} bars)"),
        ("selection", f"{used['select_first_decision']} .. {used['select_last_bar']} ({used['select_bars']} bars)"),
        ("test (not loaded)", f"{sp['test_start']} .. {sp['test_end']}"),
        ("selected", f"iteration {summary['best_iteration']} by {summary['select_metric']}"),
        ("selection sharpe / log return", f"{_fmt(sel.get('sharpe'))} / {_fmt(sel.get('log_return'))}"),
        ("selection max drawdown / turnover", f"{_fmt(sel.get('max_drawdown'))} / {_fmt(sel.get('turnover'))}"),
        ("mean weights", ", ".join(f"{s} {w:.3f}" for s, w in zip(summary["symbols"], sel.get("mean_weights", []),
                                                                     strict=False))),
        ("env steps/s (median)", _fmt(summary.get("env_steps_per_s_median"))),
        ("checkpoint", summary["best_checkpoint"]),
        ("tracking", summary["tracking_uri"]),
    ]  # fmt: skip
    for k, v in rows:
        t.add_row(k, v)
    return t


def tune_table(summary: dict[str, Any]) -> Table:
    """One row per configuration: hyper-parameters, the mean and spread of its seeds' selection scores."""
    t = Table(title=f"PPO tune {summary['name']} ({summary['select_metric']} on the selection period)")
    for c in ("config", "lr", "entropy", "clip", "gamma", "mean", "std", "per seed", "iterations"):
        t.add_column(c)
    for c in summary["configs"]:
        mark = " *" if c["config_id"] == summary["best_config_id"] else ""
        t.add_row(f"{c['config_id']}{mark}", f"{c['lr']:.2e}", _fmt(c["entropy_coeff"]), _fmt(c["clip_param"]),
                  _fmt(c["gamma"]), _fmt(c["mean_score"]), _fmt(c["std_score"]),
                  ", ".join(f"{s}: {_fmt(v)}" for s, v in zip(c["seeds"], c["scores"], strict=True)),
                  ", ".join(map(str, c["iterations"])))  # fmt: skip
    return t


def _options(loc: dict[str, Any]) -> dict[str, Any]:
    from tradesys.rl.train import OPTION_DEFAULTS

    return {k: loc[k] for k in OPTION_DEFAULTS if k in loc}


def _emit(summary: dict[str, Any], table: Table, show: Console, out: Path | None, as_json: bool) -> None:
    from tradesys.core.jsonsafe import dumps

    show.print(table)
    text = dumps(summary, indent=None)
    if out is not None:
        out.write_text(text)
        show.print(f"summary: {out}", highlight=False)
    if as_json:
        typer.echo(text)


@app.command()
def train(
    source: Source = "sp500_stocks", symbols: Symbols = None, features: Features = None,
    train: TrainP = "2010-01-01:2016-12-31", select: SelectP = "2017-01-01:2018-12-31",
    test: TestP = "2019-01-01:2022-12-31", window: Window = 20, episode_length: EpLen = 252,
    action_mode: ActionMode = "softmax", reward: Reward = "log_return", max_weight: float = 1.0,
    max_gross_leverage: float = 1.0, initial_cash: float = 1_000_000.0, risk_limits: RiskLimits = True,
    iterations: Iterations = 20, num_env_runners: Runners = 1, num_envs_per_env_runner: EnvsPer = 1,
    train_batch_size: Batch = 4000, minibatch_size: int = 256, num_epochs: int = 10, lr: float = 3e-4,
    gamma: float = 0.99, lambda_: Annotated[float, typer.Option("--lambda", help="GAE lambda")] = 0.95,
    clip_param: float = 0.2, entropy_coeff: float = 0.0, vf_clip_param: float = 10.0, hidden: Hidden = "64,64",
    seed: int = 0, eval_every: EvalEvery = 1, select_metric: SelMetric = "sharpe", periods_per_year: float = 252.0,
    runs_dir: str = "runs", mlflow_uri: MlflowUri = None, experiment: str = "tradesys-rl",
    out: Out = None, as_json: AsJson = False,
) -> None:  # fmt: skip
    """Train PPO on the train period, pick the checkpoint on the selection period; MLflow run and checkpoints."""
    from tradesys.rl.train import load_split_market, settings_from_options, train_ppo

    show = err_console if as_json else console
    try:
        data, env, split, ppo = settings_from_options(**_options(locals()))
        market = load_split_market(data, env, split)
    except ValueError as exc:
        _fail(str(exc))
    columns = (SpinnerColumn(), TextColumn("PPO"), BarColumn(), MofNCompleteColumn(), TextColumn("iterations"),
               TimeElapsedColumn(), TextColumn("{task.fields[info]}"))  # fmt: skip
    quiet = contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()
    try:
        with quiet, Progress(*columns, console=show) as bar:
            task = bar.add_task("ppo", total=ppo.iterations, info="building")
            best = [float("-inf")]

            def on_event(ev: dict[str, Any]) -> None:
                if ev.get("event") == "iteration":
                    m, sel = ev["metrics"], ev.get("selection")
                    if sel is not None and sel.get(ppo.select_metric) is not None:
                        best[0] = max(best[0], float(sel[ppo.select_metric]))
                    info = (f"return {m['episode_return_mean']:.4g}, {m['env_steps_per_s']:.0f} steps/s, "
                            f"policy loss {m['policy_loss']:.3g}, best selection {ppo.select_metric} {best[0]:.4g}")
                    bar.update(task, advance=1, info=info)
                elif ev.get("event") == "note":
                    bar.console.print(str(ev["message"]), highlight=False)
                elif ev.get("event") == "stage" and ev["stage"] in ("build", "train"):
                    bar.update(task, info=ev["stage"])

            summary = train_ppo(market, env, split, ppo, progress=on_event)
    except ValueError as exc:
        _fail(str(exc))
    _emit(summary, train_table(summary), show, out, as_json)


@app.command()
def tune(
    source: Source = "sp500_stocks", symbols: Symbols = None, features: Features = None,
    train: TrainP = "2010-01-01:2016-12-31", select: SelectP = "2017-01-01:2018-12-31",
    test: TestP = "2019-01-01:2022-12-31", window: Window = 20, episode_length: EpLen = 252,
    action_mode: ActionMode = "softmax", reward: Reward = "log_return", max_weight: float = 1.0,
    max_gross_leverage: float = 1.0, initial_cash: float = 1_000_000.0, risk_limits: RiskLimits = True,
    iterations: Iterations = 20, num_env_runners: Runners = 0, num_envs_per_env_runner: EnvsPer = 1,
    train_batch_size: Batch = 4000, minibatch_size: int = 256, num_epochs: int = 10, hidden: Hidden = "64,64",
    seed: Annotated[int, typer.Option(help="seed of the configuration draw")] = 0,
    eval_every: EvalEvery = 1, select_metric: SelMetric = "sharpe", periods_per_year: float = 252.0,
    num_samples: Annotated[int, typer.Option(help="configurations drawn")] = 4,
    seeds: Annotated[str, typer.Option(help="comma-separated seeds, each run with every configuration")] = "0,1",
    grace_period: Annotated[int, typer.Option(help="ASHA: iterations before a trial can be stopped")] = 1,
    runs_dir: str = "runs", mlflow_uri: MlflowUri = None, experiment: str = "tradesys-rl",
    out: Out = None, as_json: AsJson = False,
) -> None:  # fmt: skip
    """Ray Tune (ASHA) over lr, entropy, clip and gamma, every configuration with every seed; mean score wins."""
    from tradesys.rl.train import load_split_market, settings_from_options
    from tradesys.rl.tune import tune_ppo

    show = err_console if as_json else console
    try:
        data, env, split, ppo = settings_from_options(**_options(locals()))
        try:
            seed_list = [int(x) for x in seeds.split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"seeds: {seeds!r} is not comma-separated integers (e.g. 0,1,2)") from None
        if not seed_list:
            raise ValueError("seeds: name at least one seed")
        if num_samples < 1:
            raise ValueError(f"num_samples: must be an integer >= 1, got {num_samples}")
        if grace_period < 1:
            raise ValueError(f"grace_period: must be an integer >= 1, got {grace_period}")
        market = load_split_market(data, env, split)
    except ValueError as exc:
        _fail(str(exc))
    columns = (SpinnerColumn(), TextColumn("trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[info]}"))  # fmt: skip
    quiet = contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()
    try:
        with quiet, Progress(*columns, console=show) as bar:
            task = bar.add_task("tune", total=num_samples * len(seed_list), info="")
            best = [float("-inf")]

            def on_event(ev: dict[str, Any]) -> None:
                if ev.get("event") == "trial_result" and ev.get("score") is not None:
                    best[0] = max(best[0], float(ev["score"]))
                    bar.update(task, info=f"best trial {select_metric} {best[0]:.4g}")
                elif ev.get("event") == "trial_complete":
                    bar.update(task, advance=1)

            summary = tune_ppo(market, env, split, ppo, num_samples=num_samples, seeds=seed_list,
                               grace_period=grace_period, progress=on_event)  # fmt: skip
    except ValueError as exc:
        _fail(str(exc))
    _emit(summary, tune_table(summary), show, out, as_json)


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="a training run folder (<runs_dir>/rl/<run id>) or its summary.json")],
    out: Annotated[Path, typer.Argument(help="folder for policy.onnx, policy.pt and policy.json")],
    checkpoint: Annotated[Path | None, typer.Option(help="a checkpoint of the run (default: the one chosen on the "
                          "selection period)")] = None,
) -> None:
    """Export a trained policy for inference: ONNX and TorchScript, plus its observation layout; serve it with
    `tradesys serve --rl-policy OUT`, trade it with `-s strategy.name=rl -s strategy.rl_policy_path=OUT`."""
    import json

    from tradesys.rl.env import RLEnvConfig
    from tradesys.rl.policy import export_policy

    path = run / "summary.json" if run.is_dir() else run
    if not path.is_file():
        _fail(f"RUN: no training summary at {str(path)!r} (a folder written by `tradesys rl train`, or its "
              "summary.json)")
    try:
        summary = json.loads(path.read_text())
        env_values = {k: v for k, v in summary["env"].items() if k != "market"}
        env = RLEnvConfig.from_mapping(env_values)
        ckpt = checkpoint or Path(summary["best_checkpoint"])
        meta = export_policy(ckpt, out, env=env, symbols=summary["symbols"], feature_names=summary.get("features"))
    except (KeyError, json.JSONDecodeError) as exc:
        _fail(f"RUN: {str(path)!r} is not a training summary ({type(exc).__name__}: {exc})")
    except ValueError as exc:
        _fail(str(exc))
    console.print(f"Exported policy for {len(summary['symbols'])} symbols to {out} "
                  f"({', '.join(sorted(getattr(meta, 'files', {}) or {}))})", highlight=False)


def _register_evaluate() -> None:
    from tradesys.commands.rl_evaluate import evaluate

    app.command("evaluate")(evaluate)


_register_evaluate()
