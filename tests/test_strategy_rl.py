"""The `rl` strategy: a PPO policy export trading through the backtest and the live loop.

* closed loop: `tradesys backtest` with strategy "rl" books, bar for bar, what the RL environment books when the
  same policy acts on the env's own observations (equity to 1e-8 relative, every fill), so the observation builder,
  the policy and the sizing are the env's;
* the live loop on Ray actors makes the same orders and fills as the backtest;
* a run stopped and resumed on its ledger (`warm_up`) trades as an undisturbed one;
* configuration errors name the field.

The policy is an untrained RLlib PPO RLModule (tests/test_rl_policy.py builds it): equality needs no good policy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from tradesys.backtest.runner import run_backtest
from tradesys.config import BrokerConfig, ConfigError, DataConfig, StrategyConfig, TradesysConfig
from tradesys.core.schemas import batch_ts
from tradesys.data import make_source
from tradesys.engine.step import run_step
from tradesys.ledger import open_ledger
from tradesys.ledger.book import BookKeeper
from tradesys.rl.env import PortfolioEnv, RLEnvConfig
from tradesys.rl.market import market_from_source
from tradesys.rl.policy import export_policy, load_policy
from tradesys.strategy import make_strategy
from tradesys.strategy.rl import RLStrategy

from .ledger_checks import assert_ledger_consistent, closes_by_ts, trade_record
from .test_rl_env import SLACK_RISK
from .test_rl_policy import build_module
from .test_strategy_warmup import _components, _resume

DATA = DataConfig(source="synthetic", synthetic_days=2, seed=11)
BROKER = BrokerConfig(fee_bps=1.0, fee_min=1.0, slippage_bps=3.0, participation_cap=0.02)  # the cap binds
RISK = SLACK_RISK.model_copy(update={"max_gross_leverage": 0.9})  # the leverage scaling binds too
BAND = 0.05


@pytest.fixture(scope="module")
def market():
    return market_from_source(DATA)


@pytest.fixture(scope="module")
def policy_dir(market, tmp_path_factory) -> Path:
    cfg = RLEnvConfig(window=5, episode_length=None, action_mode="softmax", broker=BROKER, risk=RISK,
                      rebalance_band=BAND)
    d = tmp_path_factory.mktemp("rl-strategy")
    ckpt = build_module(PortfolioEnv(cfg, market), d / "module", seed=3)
    export_policy(ckpt, d / "export", env=cfg, symbols=market.symbols)
    return d / "export"


@pytest.fixture(scope="module")
def backtest(policy_dir: Path) -> tuple[Any, Any]:
    """(summary, ledger) of `run_backtest` on `run_cfg`: the reference the other runs are compared with."""
    return run_backtest(run_cfg(policy_dir))


def run_cfg(policy_dir: Path, **extra: Any) -> TradesysConfig:
    return TradesysConfig(initial_cash=1_000_000.0, data=DATA, broker=BROKER, risk=RISK,
                          strategy=StrategyConfig(name="rl", rl_policy_path=str(policy_dir), rebalance_band=BAND),
                          **extra)


def test_backtest_books_what_the_env_books_with_the_same_policy(market, policy_dir: Path, backtest) -> None:
    """Closed loop: the env steps with the policy's action on its own observation; the backtest's strategy builds
    its observation from the bars and its book. Same equity after every step's trades and after the next bar's
    resting fills and marks, same fills, to 1e-8 relative."""
    pol = load_policy(policy_dir)
    env = PortfolioEnv(pol.meta.env_config(), market)
    obs, _ = env.reset(seed=0)
    infos = []
    done = False
    while not done:
        obs, _, term, trunc, info = env.step(pol.action(obs)[0])
        infos.append(info)
        done = term or trunc
    assert len(infos) == market.n_bars - pol.meta.window
    assert any(i["rest_fill_qty"].any() for i in infos), "the participation cap never bound: weak test"
    assert any(abs(np.abs(i["target_weights"]).sum() - 0.98 * 0.9) < 1e-12 for i in infos), "no leverage scaling"

    summary, ledger = backtest
    assert not [o for o in ledger.orders() if o["status"] == "rejected"]
    curve = pd.DataFrame(ledger.equity_curve())
    by_ts = curve.groupby("ts_ns")["equity"]
    first, last = by_ts.first(), by_ts.last()
    ts = np.array([int(i["ts"]) for i in infos])
    next_ts = np.append(ts[1:], int(market.ts[-1]))
    np.testing.assert_allclose(last.loc[ts].to_numpy(), [i["equity_after_trade"] for i in infos], rtol=1e-8, atol=0)
    np.testing.assert_allclose(first.loc[next_ts].to_numpy(), [i["equity"] for i in infos], rtol=1e-8, atol=0)
    assert (curve.loc[curve["ts_ns"] < ts[0], "equity"] == 1_000_000.0).all()  # nothing before the first window
    sym = market.symbols
    env_fills = []
    for i, t1 in zip(infos, next_ts, strict=True):
        env_fills += [(int(i["ts"]), sym[j], i["fill_qty"][j], i["fill_price"][j])
                      for j in np.flatnonzero(i["fill_qty"])]
        env_fills += [(int(t1), sym[j], i["rest_fill_qty"][j], i["rest_fill_price"][j])
                      for j in np.flatnonzero(i["rest_fill_qty"])]
    final = f"rl-{int(market.ts[-1])}-"  # the backtest also decides at the last bar, which the env never steps
    bt_fills = [(int(f["ts_ns"]), f["symbol"], f["qty"] * (1 if f["side"] == "buy" else -1), f["price"])
                for f in ledger.fills() if not f["client_order_id"].startswith(final)]
    env_fills.sort(key=lambda r: (r[0], r[1], r[3]))
    bt_fills.sort(key=lambda r: (r[0], r[1], r[3]))
    assert len(env_fills) == len(bt_fills) > 100
    for e, b in zip(env_fills, bt_fills, strict=True):
        assert e[:2] == b[:2]
        np.testing.assert_allclose(e[2:], b[2:], rtol=1e-9)
    assert summary.orders == len(ledger.orders())


@pytest.mark.ray
@pytest.mark.slow
def test_live_loop_makes_the_backtests_orders_and_fills(ray_session: None, policy_dir: Path, tmp_path: Path) -> None:
    """One session of bars (390 steps, about 350 decisions): actors driven by the Supervisor, then the backtest."""
    from tradesys.live import run_live

    one_day = DATA.model_copy(update={"synthetic_days": 1})
    cfg = run_cfg(policy_dir).model_copy(update={"data": one_day})
    url = f"sqlite:///{tmp_path}/live.db"
    summary = run_live(TradesysConfig.model_validate({**cfg.model_dump(), "ledger": {"url": url}}),
                       show_progress=False, run_id="t-rl-live")  # fmt: skip
    live = open_ledger(url)
    _, bt = run_backtest(cfg)
    assert summary["reason"] == "completed"
    assert trade_record(live) == trade_record(bt)
    assert len(live.orders()) > 50
    assert_ledger_consistent(live, cfg.initial_cash, closes_by_ts(make_source(cfg.data)))


@pytest.mark.slow  # about 6 s each: two event-driven runs
@pytest.mark.parametrize("stop_at", [3, 120])
def test_a_run_resumed_on_its_ledger_trades_as_undisturbed(policy_dir: Path, backtest, tmp_path: Path,
                                                           stop_at: int) -> None:
    """Stopped before the first decision and mid-run: `warm_up` rebuilds the bar history, the ledger the book."""
    cfg = run_cfg(policy_dir)
    batches = [b for b in make_source(cfg.data).batches() if b.num_rows]
    _, undisturbed = backtest
    url = f"sqlite:///{tmp_path}/r.db"
    book = BookKeeper(open_ledger(url), cfg.initial_cash)
    c = _components(cfg, book, batches)
    for b in batches[:stop_at]:
        run_step(b, batch_ts(b), c)
    resumed = _resume(cfg, url, batches)
    assert trade_record(resumed) == trade_record(undisturbed)
    assert len(undisturbed.orders()) > 100


@pytest.mark.slow  # about 9 s: one CLI run
def test_tradesys_backtest_command_trades_the_policy(policy_dir: Path, backtest, tmp_path: Path) -> None:
    """The CLI (`tradesys backtest --set strategy.name=rl ...`) books what `run_backtest` books; a path that is not
    an export is one config-error line naming the field."""
    import json

    from typer.testing import CliRunner

    from tradesys.cli import app

    sets = ["data.source=synthetic", "data.synthetic_days=2", "data.seed=11", "strategy.name=rl",
            f"strategy.rl_policy_path={policy_dir}", f"strategy.rebalance_band={BAND}", "broker.fee_bps=1.0",
            "broker.fee_min=1.0", "broker.slippage_bps=3.0", "broker.participation_cap=0.02",
            "risk.max_net_leverage=null", "risk.var_limit_pct=null", "risk.max_orders_per_window=1000000000",
            "risk.daily_loss_limit_pct=0.99", "risk.max_gross_leverage=0.9"]  # run_cfg, as --set flags
    db = tmp_path / "cli.db"
    r = CliRunner().invoke(app, ["backtest", *[x for s in sets for x in ("-s", s)], "--json", "--ledger",
                                 f"sqlite:///{db}"])  # fmt: skip
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout[r.stdout.index("{"):])
    _, bt = backtest
    assert trade_record(open_ledger(f"sqlite:///{db}")) == trade_record(bt)
    assert out["orders"] == len(bt.orders()) > 100
    bad = CliRunner().invoke(app, ["backtest", "-s", "strategy.name=rl", "-s", f"strategy.rl_policy_path={tmp_path}"])
    assert bad.exit_code != 0
    assert bad.output.strip().splitlines()[-1].startswith("config error: strategy.rl_policy_path: ")


def test_make_strategy_builds_it_and_errors_name_the_field(policy_dir: Path, tmp_path: Path) -> None:
    s = make_strategy(run_cfg(policy_dir).strategy, 5)
    assert isinstance(s, RLStrategy) and s.policy.meta.window == 5
    with pytest.raises(ValidationError, match="rl_policy_path"):
        StrategyConfig(name="rl")
    with pytest.raises(ConfigError, match=r"^strategy\.rl_policy_path: .*not a policy export"):
        make_strategy(StrategyConfig(name="rl", rl_policy_path=str(tmp_path)), 5)
