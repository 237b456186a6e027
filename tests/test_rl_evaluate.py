"""Evaluation of the RL agent against baselines on the held-out test period (tradesys.rl.evaluate).

References: buy-and-hold equity in closed form (whole shares bought once at close x (1 + slippage) plus the fee,
then marked); equal weight rebalanced by a direct numpy loop over the same fill rules; the optimisers' estimation
window checked with planted shifts at and after the rebalance bar; the bootstrap interval's coverage of a known
Sharpe ratio over many simulated series; the DSR recomputed from the raw returns with
`tradesys.backtest.overfit`; the agent's figures against `tradesys.rl.train.evaluate_policy` (a separate
implementation over the same env).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tradesys.backtest.overfit import deflated_sharpe_ratio, return_moments
from tradesys.config import BrokerConfig
from tradesys.rl.env import RLEnvConfig
from tradesys.rl.evaluate import (
    EvalSettings,
    StrategyPath,
    baseline_rules,
    estimation_returns,
    evaluate_strategies,
    markdown_table,
    max_sharpe_rule,
    min_variance_rule,
    period_slice,
    run_agent,
    run_weights,
)
from tradesys.rl.market import MarketData

FEE, SLIP = 0.5e-4, 2e-4


def gbm_market(n: int = 400, a: int = 3, mu: float = 0.0004, sd: float = 0.012, seed: int = 1,
               level: float = 1000.0) -> MarketData:  # fmt: skip
    """Daily bars from 2018-01-01; prices near `level` so whole-share rounding leaves cash well above the costs;
    volume large enough that the participation cap never binds; feature = the bar's log return."""
    rng = np.random.default_rng(seed)
    r = rng.normal(mu, sd, (n + 1, a))
    close = level * np.exp(np.cumsum(r, axis=0))
    ts = (np.datetime64("2018-01-01", "ns") + np.arange(n + 1) * np.timedelta64(1, "D")).astype(np.int64)
    lr = np.log(close[1:] / close[:-1])[:, :, None]
    c = close[1:]
    syms = tuple(f"S{i}" for i in range(a))
    return MarketData(ts[1:], syms, c, c, c, c, np.full(c.shape, 1e12), lr, ("log_return",))


ENV = RLEnvConfig(window=5, risk=None, initial_cash=1e5, episode_length=None,
                  broker=BrokerConfig(fee_bps=FEE * 1e4, slippage_bps=SLIP * 1e4))  # fmt: skip


# --------------------------------------------------------------------------------------------- baselines


def test_buy_and_hold_is_the_closed_form() -> None:
    m = gbm_market()
    rule = baseline_rules(ENV, m, ENV.window - 1, EvalSettings(baselines=("buy_and_hold",)))["buy_and_hold"]
    p = run_weights(rule, ENV, m, "buy_and_hold")
    t0 = ENV.window - 1
    c0, e0 = m.close[t0], ENV.initial_cash
    q = np.floor(e0 / 3 / c0)
    px = c0 * (1 + SLIP)
    entry_costs = (q * px * FEE).sum() + (q * (px - c0)).sum()
    cash = e0 - (q * px).sum() - (q * px * FEE).sum()
    assert cash > 0  # whole shares leave cash: the leverage limit never trims the holding
    expected = np.concatenate([[e0], cash + m.close[t0 + 1:] @ q])
    np.testing.assert_allclose(p.equity, expected, rtol=1e-12)
    assert p.costs == pytest.approx(entry_costs, rel=1e-12)
    assert np.all(p.turnover[1:] == 0) and p.turnover[0] == pytest.approx((q * px).sum() / e0, rel=1e-12)
    # the textbook form: initial weights x price relatives, minus the entry costs (up to whole-share rounding)
    textbook = e0 * np.mean(m.close[-1] / c0) - entry_costs
    assert abs(p.equity[-1] - textbook) < (c0 * m.close[-1] / c0).sum()


def test_equal_weight_rebalanced_matches_a_direct_loop() -> None:
    m = gbm_market(n=300, a=4, seed=5)
    every = 7
    rule = baseline_rules(ENV, m, ENV.window - 1, EvalSettings(baselines=("equal_weight",), rebalance_every=every))
    p = run_weights(rule["equal_weight"], ENV, m, "equal_weight")
    # the direct loop: rebalance to floor(E / A / close) shares every `every` bars, hold in between
    q, cash, costs = np.zeros(4), ENV.initial_cash, 0.0
    eq = [cash]
    for k, t in enumerate(range(ENV.window - 1, m.n_bars - 1)):
        c = m.close[t]
        if k % every == 0:
            e = cash + q @ c
            d = np.floor(e / 4 / c) - q
            px = c * (1 + SLIP * np.sign(d))
            fee = FEE * np.abs(d) * px
            cash -= (d * px).sum() + fee.sum()
            costs += fee.sum() + (np.abs(d) * np.abs(px - c)).sum()
            q = q + d
            assert cash > 0
        eq.append(cash + q @ m.close[t + 1])
    np.testing.assert_allclose(p.equity, eq, rtol=1e-12)
    assert p.costs == pytest.approx(costs, rel=1e-10)
    traded = np.flatnonzero(p.turnover > 0)
    assert set(traded) <= set(range(0, len(p.turnover), every)) and 0 in traded


@pytest.mark.parametrize("make", [min_variance_rule, max_sharpe_rule])
def test_optimiser_windows_never_see_the_rebalance_bar_or_later(make) -> None:
    m = gbm_market(n=420, a=4, mu=0.001, seed=9)
    t, window = 300, 120
    rule = make(first=t, every=21, window=window, upper=1.0)
    base = rule(t, m.close[: t + 1])
    assert base is not None and base.sum() == pytest.approx(1.0, abs=1e-6) and (base >= 0).all()
    # planted shifts at and after the rebalance bar change nothing ...
    shifted = m.close.copy()
    shifted[t:, 0] *= 3.0
    shifted[t:, 1] *= 0.2
    np.testing.assert_array_equal(make(first=t, every=21, window=window)(t, shifted[: t + 1]), base)
    # ... while a shift on the bar before does (the window reaches t - 1: this test can fail)
    before = m.close.copy()
    before[t - 1 :, 0] *= 0.7
    assert np.abs(make(first=t, every=21, window=window)(t, before[: t + 1]) - base).max() > 1e-3
    # the window itself: exactly `window` returns ending with the bar before t
    r = estimation_returns(m.close[: t + 1], window)
    np.testing.assert_allclose(r, m.close[t - window : t] / m.close[t - window - 1 : t - 1] - 1.0)
    # between rebalances the rule holds
    assert rule(t + 1, m.close[: t + 2]) is None and rule(t + 21, m.close[: t + 22]) is not None


def test_weights_rules_get_only_the_past() -> None:
    m = gbm_market(n=120)
    seen: list[tuple[int, int, float]] = []

    def spy(t: int, closes: np.ndarray) -> np.ndarray:
        seen.append((t, closes.shape[0], float(closes[-1, 0])))
        return np.full(3, 0.3)

    test_m, lo = period_slice(m, "2018-03-01", "2018-04-30", ENV.window)
    run_weights(spy, ENV, test_m, "spy", history=m, offset=lo)
    first = int(np.flatnonzero(m.ts >= np.datetime64("2018-03-01", "ns").astype(np.int64))[0])
    assert seen[0][0] == first  # the first decision is the test period's first bar
    assert all(n == t + 1 and c == m.close[t, 0] for t, n, c in seen)


# --------------------------------------------------------------------------------------------- statistics


def _path(name: str, r: np.ndarray, kind: str = "baseline", seed: int | None = None) -> StrategyPath:
    eq = 1e6 * np.exp(np.concatenate([[0.0], np.cumsum(r)]))
    ts = (np.datetime64("2019-01-01", "ns") + np.arange(r.size + 1) * np.timedelta64(1, "D")).astype(np.int64)
    return StrategyPath(name, kind, ts, eq, np.zeros(r.size), 0.0, seed)


@pytest.mark.slow
def test_bootstrap_interval_covers_the_true_sharpe_at_the_nominal_rate() -> None:
    mu, sd, n = 0.0006, 0.01, 500
    true = mu / sd * math.sqrt(252)
    s = EvalSettings(bootstrap_reps=300, confidence=0.9)
    hits = []
    for i in range(200):
        r = np.random.default_rng(1000 + i).normal(mu, sd, n)
        rep = evaluate_strategies([_path("a", r, "agent", 0)], [], replace_seed(s, i))
        lo, hi = rep["strategies"][0]["sharpe_ci"]
        hits.append(lo <= true <= hi)
    cover = float(np.mean(hits))
    assert 0.84 <= cover <= 0.96, cover


def replace_seed(s: EvalSettings, seed: int) -> EvalSettings:
    from dataclasses import replace

    return replace(s, seed=seed)


def test_verdict_needs_a_significant_edge_and_says_does_not_beat_otherwise() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(0.0003, 0.01, 750)
    noise = [rng.normal(0, 0.002, 750) for _ in range(5)]
    better = [_path(f"agent seed {i}", base + 0.0015 + e, "agent", i) for i, e in enumerate(noise)]
    same = [_path(f"agent seed {i}", base + e, "agent", i) for i, e in enumerate(noise)]
    s = EvalSettings(bootstrap_reps=500)
    good = evaluate_strategies(better, [_path("buy_and_hold", base)], s)
    assert good["verdicts"][0]["beats"] and good["verdicts"][0]["text"].startswith("The agent beats buy_and_hold")
    assert good["conclusion"] == "The agent beats all 1 baselines on the test period."
    tie = evaluate_strategies(same, [_path("buy_and_hold", base)], s)
    v = tie["verdicts"][0]
    assert not v["beats"] and v["text"].startswith("The agent does not beat buy_and_hold")
    assert v["ci"][0] < 0 < v["ci"][1]
    assert "does not beat" in markdown_table(tie)
    # the DSR, recomputed from the raw returns: n trials given, the variance of the seeds' per-bar Sharpes
    rep = evaluate_strategies(better, [], s, n_trials=40)
    srs = [return_moments(p.returns)[0] for p in better]
    sr, sk, ku, nobs = return_moments(better[0].returns)
    ref = deflated_sharpe_ratio(sr, nobs, 40, float(np.var(srs, ddof=1)), sk, ku)
    row = rep["strategies"][0]
    assert row["dsr"] == pytest.approx(ref.dsr, rel=1e-12) and row["psr"] == pytest.approx(ref.psr, rel=1e-12)
    assert row["dsr"] < row["psr"]  # selection among 40 deflates
    assert rep["n_trials"] == 40


def test_random_policies_do_not_beat_the_baselines() -> None:
    m = gbm_market(n=520, a=3, mu=0.0008, sd=0.01, seed=11)
    cfg = RLEnvConfig(window=5, risk=None, initial_cash=1e5, episode_length=None)
    test_m, lo = period_slice(m, "2018-09-01", "2019-06-05", cfg.window)
    agents = []
    for seed in range(5):
        rng = np.random.default_rng(seed)
        agents.append(run_agent(lambda obs, rng=rng: rng.uniform(-1, 1, (1, 4)), cfg, test_m, f"random {seed}", seed))
    s = EvalSettings(estimation_window=120, bootstrap_reps=400)
    rules = baseline_rules(cfg, m, lo + cfg.window - 1, s)
    base = [run_weights(rule, cfg, test_m, name, history=m, offset=lo) for name, rule in rules.items()]
    rep = evaluate_strategies(agents, base, s)
    assert [v["baseline"] for v in rep["verdicts"]] == list(s.baselines)
    assert not any(v["beats"] for v in rep["verdicts"])
    assert rep["conclusion"] == "The agent does not beat any of the 5 baselines on the test period."
    assert all(v["text"].startswith("The agent does not beat") for v in rep["verdicts"])
    assert rep["first_decision"] == "2018-09-01"
    assert all(p.costs > 0 for p in [*agents, *base])  # every strategy traded and paid for it


def test_settings_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"^rebalance_every: "):
        EvalSettings(rebalance_every=0)
    with pytest.raises(ValueError, match=r"^confidence: "):
        EvalSettings(confidence=1.0)
    with pytest.raises(ValueError, match=r"^baselines: "):
        EvalSettings(baselines=("buy_and_hold", "magic"))
    m = gbm_market(n=200)
    with pytest.raises(ValueError, match=r"^estimation_window: "):
        baseline_rules(ENV, m, 100, EvalSettings(estimation_window=252))
    with pytest.raises(ValueError, match=r"^split.test: "):
        period_slice(m, "2030-01-01", "2030-12-31", 5)


# --------------------------------------------------------------------------------------------- saved policies


def save_untrained_modules(root: Path, obs_dim: int, act_dim: int, n: int) -> list[Path]:
    """`n` untrained PPO RLModules (different torch seeds) saved as RLModule checkpoints."""
    import gymnasium as gym
    import torch
    from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    obs = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
    act = gym.spaces.Box(-1.0, 1.0, (act_dim,), np.float32)
    out = []
    for i in range(n):
        torch.manual_seed(i)
        spec = RLModuleSpec(module_class=DefaultPPOTorchRLModule, observation_space=obs, action_space=act,
                            model_config={"fcnet_hiddens": [8], "fcnet_activation": "tanh"})  # fmt: skip
        path = root / f"module_{i}"
        spec.build().save_to_path(str(path))
        out.append(path)
    return out


SPLIT = {"train_start": "2014-01-01", "train_end": "2015-12-31", "select_start": "2016-01-01",
         "select_end": "2016-12-31", "test_start": "2017-01-01", "test_end": "2017-06-30"}  # fmt: skip
SYMBOLS = ["AAPL", "JPM", "XOM"]


@pytest.fixture(scope="module")
def saved_runs(tmp_path_factory) -> list[Path]:
    """Five 'training run' summaries on real sp500 data whose selected checkpoints are untrained RLModules."""
    from tradesys.config import DataConfig
    from tradesys.rl.train import _loggable_env

    root = tmp_path_factory.mktemp("rl_eval")
    env = RLEnvConfig(window=5, features=("log_return",), initial_cash=1e6,
                      data=DataConfig(source="sp500_stocks", symbols=SYMBOLS, start="2014-01-01",
                                      end="2016-12-31"))  # fmt: skip
    mods = save_untrained_modules(root, 5 * 3 * 1 + 3 + 1, 4, 5)
    paths = []
    for seed, mod in enumerate(mods):
        summary = {"run_id": f"run{seed}", "seed": seed, "split": SPLIT, "symbols": SYMBOLS,
                   "used": {"select_last_bar": "2016-12-30"}, "env": _loggable_env(env),
                   "best_checkpoint": str(mod), "checkpoints": [str(mod)] * 4}  # fmt: skip
        p = root / f"summary_{seed}.json"
        p.write_text(json.dumps(summary))
        paths.append(p)
    return paths


@pytest.mark.slow
def test_evaluate_saved_policies_without_ray(saved_runs: list[Path], tmp_path: Path) -> None:
    import ray

    from tradesys.rl.evaluate import env_from_summary, evaluate_runs
    from tradesys.rl.market import market_from_source
    from tradesys.rl.train import RLPolicy, evaluate_policy

    runs = [json.loads(p.read_text()) for p in saved_runs]
    s = EvalSettings(bootstrap_reps=200, estimation_window=200)
    had_ray = ray.is_initialized()  # the suite's session Ray may be up already
    rep = evaluate_runs(runs, s)
    assert ray.is_initialized() == had_ray  # evaluation starts no Ray of its own
    assert rep["n_seeds"] == 5 and rep["n_trials"] == 20 and rep["first_decision"] == "2017-01-03"
    assert [x["name"] for x in rep["strategies"]] == [f"agent seed {i}" for i in range(5)] + list(s.baselines)
    # each seed's figures agree with train.evaluate_policy over the same test slice
    cfg = env_from_summary(runs[0])
    data = cfg.data.model_copy(update={"start": "2014-01-01", "end": "2017-06-30"})
    test_m, _ = period_slice(market_from_source(data, cfg.features), "2017-01-01", "2017-06-30", cfg.window)
    for row, r in zip(rep["strategies"][:5], runs, strict=True):
        ref = evaluate_policy(RLPolicy.from_checkpoint(r["best_checkpoint"]), cfg, test_m)
        assert row["total_return"] == pytest.approx(ref["total_return"], rel=1e-12)
        assert row["sharpe"] == pytest.approx(ref["sharpe"], rel=1e-12)
        assert row["max_drawdown"] == pytest.approx(ref["max_drawdown"], rel=1e-12)
        assert row["turnover"] == pytest.approx(ref["turnover"] * 252, rel=1e-12)
        assert row["costs"] == pytest.approx(ref["costs"], rel=1e-12)
        assert row["n_steps"] == ref["n_steps"]
    # fewer than five seeds, or a run that saw the test period, is refused
    with pytest.raises(ValueError, match=r"^runs: 4 training seeds"):
        evaluate_runs(runs[:4], s)
    bad = [dict(r) for r in runs]
    bad[2]["used"] = {"select_last_bar": "2017-02-01"}
    with pytest.raises(ValueError, match="inside the test period"):
        evaluate_runs(bad, s)


@pytest.mark.slow
def test_cli_table_json_and_out_dir(saved_runs: list[Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tradesys.cli import app

    runner = CliRunner()
    args = ["rl", "evaluate", *map(str, saved_runs), "--estimation-window", "200", "--bootstrap-reps", "200"]
    res = runner.invoke(app, [*args, "--json", "--png", str(tmp_path / "curves.png")])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout.strip().splitlines()[-1])
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert rep["n_seeds"] == 5 and len(rep["verdicts"]) == 5
    out = tmp_path / "eval"
    res = runner.invoke(app, [*args, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "does not beat" in res.stdout or "beats" in res.stdout
    assert (out / "equity.png").stat().st_size > 10_000 and (out / "equity.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "evaluation.json").read_text())["conclusion"] == rep["conclusion"]
    assert rep["conclusion"] in (out / "evaluation.md").read_text()
    res = runner.invoke(app, ["rl", "evaluate", str(saved_runs[0]), "--bootstrap-reps", "200"])
    assert res.exit_code == 2 and "error: runs: 1 training seeds given" in res.output
