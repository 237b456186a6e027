"""PPO training of the portfolio agent: the walk-forward split, selection, MLflow, Tune, the job and the CLI.

References: a synthetic market with a planted edge (one asset drifts up, the others do not), on which the trained
policy, run deterministically on the selection period, must hold that asset and earn well above 20 random policies
scored by the same evaluation; re-evaluating the selected checkpoint from disk must reproduce the score it was
selected on; MLflow (an independent record) must hold what the summary says; an all-cash policy in a frictionless
market has a zero return (closed form).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tradesys.config import BrokerConfig
from tradesys.rl.env import RLEnvConfig
from tradesys.rl.market import MarketData
from tradesys.rl.train import (
    PPOSettings,
    RLPolicy,
    WalkForward,
    evaluate_policy,
    flag_message,
    settings_from_options,
    split_market,
)

from .test_ray_job import RAY, ROOT

SPLIT = WalkForward("2020-01-01", "2021-08-31", "2021-09-01", "2022-03-31", "2022-04-01", "2022-12-31")


def drift_market(n: int = 820, drift: float = 0.002, seed: int = 3) -> MarketData:
    """Daily bars from 2020-01-01 (ending before SPLIT's test period): asset UP drifts +0.2 %/bar, B and C do not;
    1 % noise each; feature = the bar's log return; volume large enough that no participation cap binds."""
    rng = np.random.default_rng(seed)
    r = rng.normal(0.0, 0.01, (n, 3))
    r[:, 0] += drift
    close = 100.0 * np.exp(np.cumsum(r, axis=0))
    ts = (np.datetime64("2020-01-01", "ns") + np.arange(n) * np.timedelta64(1, "D")).astype(np.int64)
    lr = np.log(close[1:] / close[:-1])[:, :, None]
    c = close[1:]
    return MarketData(ts[1:], ("UP", "B", "C"), c, c, c, c, np.full(c.shape, 1e9), lr, ("log_return",))


ENV = RLEnvConfig(window=5, episode_length=64, risk=None, initial_cash=1e5)


# --------------------------------------------------------------------------------------------- pure parts


def test_split_slices_by_date_and_refuses_test_bars() -> None:
    m = drift_market()
    train, sel = split_market(m, SPLIT, window=5)
    days = m.ts.astype("datetime64[ns]").astype("datetime64[D]")
    in_train = (days >= np.datetime64("2020-01-01")) & (days <= np.datetime64("2021-08-31"))
    first_sel = int(np.argmax(days >= np.datetime64("2021-09-01")))
    assert np.array_equal(train.ts, m.ts[in_train])
    # the selection slice starts window-1 bars early: the first decision is on the selection period's first bar
    assert sel.ts[4] == m.ts[first_sel] and sel.ts[0] == m.ts[first_sel - 4]
    assert sel.ts[-1] == m.ts[-1] and days[-1] <= np.datetime64("2022-03-31")
    longer = drift_market(n=900)  # reaches into the test period
    with pytest.raises(ValueError, match=r"^market: holds bars from 2022-06-18, inside the test period"):
        split_market(longer, SPLIT, window=5)


@pytest.mark.parametrize(
    ("periods", "message"),
    [
        (("2020-01-01:2020-12-31", "2020-06-01:2021-06-30", "2022-01-01:2022-12-31"),
         "split.select: starts (2020-06-01) on or before the train period ends"),
        (("2020-01-01:2020-12-31", "2021-01-01:2021-12-31", "2021-06-01:2022-12-31"),
         "split.test: starts (2021-06-01) on or before the selection period ends"),
        (("2020-12-31:2020-01-01", "2021-01-01:2021-12-31", "2022-01-01:2022-12-31"),
         "split.train: starts (2020-12-31) after it ends"),
        (("2020", "2021-01-01:2021-12-31", "2022-01-01:2022-12-31"), "split.train: '2020' is not START:END"),
        (("2020-01-01:2020-13-01", "2021-01-01:2021-12-31", "2022-01-01:2022-12-31"),
         "split.train_end: '2020-13-01' is not a date"),
    ],
)  # fmt: skip
def test_split_order_is_enforced(periods: tuple[str, str, str], message: str) -> None:
    with pytest.raises(ValueError) as err:
        WalkForward.parse(*periods)
    assert str(err.value).startswith(message)


def test_all_cash_policy_earns_nothing_in_a_frictionless_market() -> None:
    """Closed form: cash only (softmax weight on each asset e^-5 / (e^5 + 3 e^-5) buys no whole share) -> E_T = E_0."""
    env = RLEnvConfig(window=5, episode_length=64, risk=None, initial_cash=1e5,
                      broker=BrokerConfig(fee_bps=0.0, slippage_bps=0.0))  # fmt: skip
    _, sel = split_market(drift_market(), SPLIT, window=5)
    out = evaluate_policy(lambda obs: np.array([[-1.0, -1.0, -1.0, 1.0]]), env, sel)
    assert out["log_return"] == 0.0 and out["total_return"] == 0.0 and out["sharpe"] is None
    assert out["mean_weights"] == [0.0, 0.0, 0.0] and out["mean_cash_weight"] == 1.0 and out["costs"] == 0.0
    assert out["n_steps"] == sel.n_bars - 5 and out["start"] == "2021-09-01" and out["end"] == "2022-03-30"


def test_settings_errors_name_the_flag() -> None:
    cases = {
        "iterations": (0, "--iterations: must be an integer >= 1, got 0"),
        "lambda_": (2.0, "--lambda: must be in [0, 1], got 2.0"),
        "minibatch_size": (10**6, "--minibatch-size: 1000000 is larger than train_batch_size 4000"),
        "window": (0, "--window: must be an integer >= 1"),
        "source": ("nyse", "--source: Input should be"),
        "select_metric": ("pnl", "--select-metric: must be one of"),
        "hidden": ("64,x", "--hidden: '64,x' is not comma-separated layer sizes"),
        "test": ("2018-06-01:2019-01-01", "--test: starts (2018-06-01) on or before the selection period ends"),
    }
    for key, (value, message) in cases.items():
        with pytest.raises(ValueError) as err:
            settings_from_options(**{key: value})
        assert flag_message(str(err.value)).startswith(message), (key, str(err.value))
    data, env, split, ppo = settings_from_options(symbols="AAPL,XOM", hidden="32,16", episode_length=0)
    assert data.symbols == ["AAPL", "XOM"] and data.end == split.select_end < split.test_start  # test never loaded
    assert env.episode_length is None and ppo.hidden == (32, 16)


def test_cli_bad_flag_is_one_line_exit_2(tmp_path: Path) -> None:
    from tradesys.cli import app

    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["rl", "train", "--iterations", "0", "--runs-dir", str(runs)])
    assert result.exit_code == 2
    assert result.output.strip() == "error: --iterations: must be an integer >= 1, got 0"
    result = CliRunner().invoke(app, ["rl", "tune", "--seeds", "0,x", "--runs-dir", str(runs)])
    assert result.exit_code == 2
    assert result.output.strip() == "error: --seeds: '0,x' is not comma-separated integers (e.g. 0,1,2)"
    job = subprocess.run([sys.executable, str(ROOT / "jobs" / "rl_train.py"), "--runs-dir", "relative"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert job.returncode == 2 and job.stderr.strip().startswith("error: --runs-dir: 'relative' is relative")
    assert not runs.exists()  # refused before MLflow or Ray started


# --------------------------------------------------------------------------------------------- PPO on Ray


@pytest.mark.ray
@pytest.mark.slow
def test_ppo_learns_the_planted_edge(ray_session, tmp_path: Path, monkeypatch) -> None:
    from mlflow import MlflowClient

    from tradesys.rl.train import train_ppo

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    m = drift_market()
    s = PPOSettings(iterations=8, num_env_runners=1, num_envs_per_env_runner=8, train_batch_size=1024,
                    minibatch_size=256, num_epochs=6, lr=3e-3, hidden=(16, 16), eval_every=4, seed=0,
                    select_metric="log_return", runs_dir=str(tmp_path / "runs"))  # fmt: skip
    events: list[dict] = []
    summary = train_ppo(m, ENV, SPLIT, s, progress=events.append)
    _, sel = split_market(m, SPLIT, ENV.window)

    # the selected checkpoint, loaded from disk, reproduces the score it was selected on
    policy = RLPolicy.from_checkpoint(summary["best_checkpoint"])
    trained = evaluate_policy(policy, ENV, sel)
    assert trained == summary["selection"]
    randoms = []
    for k in range(20):
        rng = np.random.default_rng(100 + k)
        randoms.append(evaluate_policy(lambda obs, rng=rng: rng.uniform(-1, 1, (1, 4)), ENV, sel))
    w_rand = np.array([r["mean_weights"][0] for r in randoms])
    ret_rand = np.array([r["log_return"] for r in randoms])
    assert trained["mean_weights"][0] > 0.5 > w_rand.max()  # random policies hold about 1/4 in UP
    assert trained["log_return"] > np.quantile(ret_rand, 0.9)
    assert trained["log_return"] > ret_rand.mean() + 0.1

    # progress: one event per iteration, scored at 4 and 8
    its = [e for e in events if e["event"] == "iteration"]
    assert [e["iteration"] for e in its] == list(range(1, 9))
    assert [e["iteration"] for e in its if e["selection"] is not None] == [4, 8]
    assert all(e["metrics"]["env_steps"] >= 1024 and e["metrics"]["env_steps_per_s"] > 0 for e in its)

    # MLflow holds the run, the split, every iteration's metrics and the selection scores the choice rests on
    client = MlflowClient(summary["tracking_uri"])
    run = client.get_run(summary["run_id"])
    assert run.data.params["split.test_start"] == "2022-04-01" and run.data.params["ppo.seed"] == "0"
    assert [h.step for h in client.get_metric_history(run.info.run_id, "policy_loss")] == list(range(1, 9))
    sel_hist = {h.step: h.value for h in client.get_metric_history(run.info.run_id, "sel_log_return")}
    assert set(sel_hist) == {4, 8}
    assert summary["best_iteration"] == max(sel_hist, key=sel_hist.get)
    assert sel_hist[summary["best_iteration"]] == pytest.approx(trained["log_return"], rel=1e-12)
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"rl_module", "split.json", "summary.json"}
    ckpts = sorted(Path(summary["best_checkpoint"]).parent.iterdir())
    assert [p.name for p in ckpts] == ["iter_000004", "iter_000008"]
    assert summary["used"]["select_last_bar"] < summary["split"]["test_start"]

    # `tradesys rl export RUN_DIR OUT`: the exported policy acts as the chosen checkpoint does
    from typer.testing import CliRunner

    from tradesys.cli import app
    from tradesys.rl.policy import load_policy

    run_dir = Path(summary["best_checkpoint"]).parents[1]
    r = CliRunner().invoke(app, ["rl", "export", str(run_dir), str(tmp_path / "policy")])
    assert r.exit_code == 0, r.output
    exported = load_policy(tmp_path / "policy")
    obs = np.random.default_rng(3).standard_normal((6, exported.meta.obs_dim)).astype(np.float32)
    np.testing.assert_allclose(exported.action(obs), policy(obs), atol=1e-5)


def test_tune_judges_a_configuration_by_its_mean_over_seeds() -> None:
    """Config 1 has the single best trial (0.9) but the worse mean ((0.9 - 0.5) / 2 = 0.2 < 0.3): config 0 wins."""
    from tradesys.rl.tune import sample_configs, select_best

    configs = sample_configs(2, seed=5)
    assert sample_configs(2, seed=5) == configs and configs[0] != configs[1]
    assert 1e-4 <= configs[0]["lr"] <= 3e-3 and configs[0]["gamma"] in (0.9, 0.99)
    trials = [{"config_id": 0, "seed": 0, "score": 0.4, "iterations": 3},
              {"config_id": 0, "seed": 1, "score": 0.2, "iterations": 3},
              {"config_id": 1, "seed": 0, "score": 0.9, "iterations": 3},
              {"config_id": 1, "seed": 1, "score": -0.5, "iterations": 1}]  # fmt: skip
    scores, best, best_trial = select_best(configs, trials)
    assert [c["mean_score"] for c in scores] == pytest.approx([0.3, 0.2])
    assert best["config_id"] == 0 and best["lr"] == configs[0]["lr"]
    assert best_trial["seed"] == 0 and best_trial["score"] == 0.4
    with pytest.raises(ValueError, match=r"^space\.lr: need 0 < low < high"):
        sample_configs(1, space={"lr": ("loguniform", 1e-3, 1e-4)})


@pytest.mark.ray
@pytest.mark.slow
def test_tune_runs_every_seed_and_keeps_the_chosen_checkpoint(ray_session, tmp_path: Path, monkeypatch) -> None:
    from tradesys.rl.tune import tune_ppo

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    m = drift_market()
    base = PPOSettings(iterations=1, num_env_runners=0, train_batch_size=128, minibatch_size=64, num_epochs=1,
                       hidden=(8,), select_metric="log_return", runs_dir=str(tmp_path / "runs"))  # fmt: skip
    lock, events = threading.Lock(), []

    def progress(ev: dict) -> None:  # holds a lock, as the CLI's progress bar does: the Tuner must not pickle it
        with lock:
            events.append(ev)

    out = tune_ppo(m, ENV, SPLIT, base, num_samples=1, seeds=(0, 1), name="t", progress=progress)
    assert sum(e["event"] == "trial_complete" for e in events) == 2 and events[-1]["stage"] == "done"
    assert out["num_trials"] == 2 and sorted(t["seed"] for t in out["trials"]) == [0, 1]
    assert out["best_mean_score"] == pytest.approx(np.mean([t["score"] for t in out["trials"]]), rel=1e-12)
    # the chosen checkpoint, re-scored from disk on the selection period, gives the score it was chosen for
    _, sel = split_market(m, SPLIT, ENV.window)
    again = evaluate_policy(RLPolicy.from_checkpoint(out["best_checkpoint"]), ENV, sel)
    assert again["log_return"] == pytest.approx(out["best_trial_score"], rel=1e-12)
    assert out["best_trial_score"] == max(t["score"] for t in out["trials"])


@pytest.mark.ray
@pytest.mark.slow
def test_rl_train_job_on_a_ray_head(ray_head, tmp_path: Path) -> None:
    """jobs/rl_train.py submitted to a real head: one tiny iteration on two S&P 500 stocks; the summary is strict
    JSON on stdout and in --out, the checkpoint and the MLflow run exist under --runs-dir. (--mlflow-uri is given:
    the head inherits this process's environment, where MLflow's set_tracking_uri may have left
    MLFLOW_TRACKING_URI, which a job otherwise follows, as documented.)"""
    from mlflow import MlflowClient

    address, env, _ = ray_head
    runs, out = tmp_path / "runs", tmp_path / "summary.json"
    submit = [
        RAY, "job", "submit", f"--address={address}", "--submission-id", f"rl-{time.time_ns()}", "--",
        sys.executable, str(ROOT / "jobs" / "rl_train.py"), "--quiet", "--json", "--out", str(out),
        "--symbols", "AAPL,XOM", "--train", "2016-01-01:2016-12-31", "--select", "2017-01-01:2017-06-30",
        "--test", "2017-07-01:2017-12-31", "--window", "10", "--episode-length", "64", "--iterations", "1",
        "--train-batch-size", "256", "--minibatch-size", "64", "--num-epochs", "1", "--hidden", "8",
        "--num-env-runners", "0", "--runs-dir", str(runs), "--mlflow-uri", f"sqlite:///{runs / 'mlflow.db'}",
    ]  # fmt: skip
    for _ in range(12):  # the dashboard answers before the head's job agent registers: retry only that
        proc = subprocess.run(submit, env={**env, "RAY_AUTH_MODE": "token"}, capture_output=True, text=True,
                              timeout=400, cwd=ROOT)  # fmt: skip
        if proc.returncode == 0 or "No available agent" not in proc.stdout + proc.stderr:
            break
        time.sleep(5)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    def no_nan(name: str) -> float:
        raise AssertionError(f"invalid JSON constant {name}")

    summary = json.loads(out.read_text(), parse_constant=no_nan)
    printed = [ln for ln in proc.stdout.splitlines() if ln.startswith('{"')]
    assert printed and json.loads(printed[-1], parse_constant=no_nan) == summary
    assert summary["symbols"] == ["AAPL", "XOM"] and summary["best_iteration"] == 1
    assert summary["env"]["data"]["end"] == "2017-06-30"  # the test period's bars were never loaded
    assert (Path(summary["best_checkpoint"]) / "rllib_checkpoint.json").is_file()
    assert summary["tracking_uri"] == f"sqlite:///{runs / 'mlflow.db'}"
    run = MlflowClient(summary["tracking_uri"]).get_run(summary["run_id"])
    assert run.data.params["symbols"] == "AAPL,XOM" and "policy_loss" in run.data.metrics
