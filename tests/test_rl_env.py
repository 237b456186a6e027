"""The RL portfolio environment: gymnasium's checker, accounting parity with `tradesys backtest`, conservation,
the differential Sharpe ratio, vector = n single envs, clipping by the pre-trade limits, config errors, and the
market arrays (causal features, gaps, the offline store)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tradesys.config import BrokerConfig, ConfigError, DataConfig, RiskConfig, StrategyConfig, TradesysConfig
from tradesys.data import make_source
from tradesys.rl import rewards
from tradesys.rl.env import (
    CLIP_ORDER_NOTIONAL,
    CLIP_ORDER_QTY,
    CLIP_POSITION,
    PortfolioEnv,
    RLEnvConfig,
    VectorPortfolioEnv,
)
from tradesys.rl.market import compute_features, dense_bars, market_from_source, market_from_store

DATA = DataConfig(source="synthetic", synthetic_days=2, seed=11)
# limits the env does not model are off or slack, so the gate refuses nothing the env would book
SLACK_RISK = RiskConfig(
    max_gross_leverage=None, max_net_leverage=None, var_limit_pct=None, max_orders_per_window=10**9,
    daily_loss_limit_pct=0.99,
)


@pytest.fixture(scope="module")
def market():  # noqa: ANN201
    return market_from_source(DATA)


def _run(env: PortfolioEnv, actions: np.ndarray, seed: int) -> tuple[list, list]:
    obs, info0 = env.reset(seed=seed)
    infos, rews = [], []
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        infos.append(info)
        rews.append(r)
        if term or trunc:
            break
    return infos, rews


# ----------------------------------------------------------------------------------------------- gymnasium


@pytest.mark.parametrize("mode", ["softmax", "clip"])
def test_gymnasium_env_checker_passes(market, mode: str) -> None:
    from gymnasium.utils.env_checker import check_env

    env = PortfolioEnv(RLEnvConfig(window=5, episode_length=20, action_mode=mode), market)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(infinity|render modes).*")  # unbounded features; no render
        check_env(env, skip_render_check=True)


# ----------------------------------------------------------------------------------------------- accounting parity


@pytest.mark.parametrize("mode", ["softmax", "clip"])
def test_equity_path_and_fills_equal_the_event_driven_backtest(market, mode: str, tmp_path: Path) -> None:
    """A recorded action sequence, replayed as a target-weight file through `run_backtest` (strategy "weights"):
    same fills and the same equity at every bar, to 1e-8 relative. The participation cap binds (resting DAY
    remainders fill at the next open), a minimum fee applies, and in "clip" mode shorts and the order limits bind."""
    from tradesys.backtest.runner import run_backtest

    broker = BrokerConfig(fee_bps=1.0, fee_min=1.0, slippage_bps=3.0, participation_cap=0.02)
    risk = SLACK_RISK.model_copy(update={"max_order_notional": 150_000.0, "max_position_notional": 300_000.0}) \
        if mode == "clip" else SLACK_RISK
    band = 0.05
    cfg = RLEnvConfig(window=8, episode_length=60, action_mode=mode, max_weight=0.5, max_gross_leverage=1.5,
                      broker=broker, risk=risk, rebalance_band=band)
    env = PortfolioEnv(cfg, market)
    rng = np.random.default_rng(3)
    actions = rng.uniform(-1, 1, size=(60, env.action_space.shape[0]))
    infos, _ = _run(env, actions, seed=4)
    assert len(infos) == 60
    ts = np.array([i["ts"] for i in infos])
    weights = np.array([i["target_weights"] for i in infos])
    assert any(i["rest_fill_qty"].any() for i in infos), "the participation cap never bound: weak test"
    if mode == "clip":
        assert (weights < 0).any() and any(i["clipped"].any() for i in infos)
    # the weights file: one row per env step, then an empty row so nothing trades after the episode
    last_ts = int(market.ts[np.searchsorted(market.ts, ts[-1]) + 1])
    frame = pd.DataFrame(np.vstack([weights, np.full(len(market.symbols), np.nan)]), columns=list(market.symbols))
    frame.insert(0, "ts", pd.to_datetime(np.append(ts, last_ts), utc=True))
    path = tmp_path / "weights.parquet"
    frame.to_parquet(path)
    tcfg = TradesysConfig(
        initial_cash=cfg.initial_cash, data=DATA, broker=broker, risk=risk,
        strategy=StrategyConfig(name="weights", weights_path=str(path), rebalance_band=band),
    )
    _, ledger = run_backtest(tcfg)
    curve = pd.DataFrame(ledger.equity_curve())
    by_ts = curve.groupby("ts_ns")["equity"]
    first, last = by_ts.first(), by_ts.last()
    # after the step's trades (last row at bar t) and after the next bar's resting fills and marks (first row)
    env_after_trade = np.array([i["equity_after_trade"] for i in infos])
    env_next = np.array([i["equity"] for i in infos])
    next_ts = np.append(ts[1:], last_ts)
    np.testing.assert_allclose(last.loc[ts].to_numpy(), env_after_trade, rtol=1e-8, atol=0)
    np.testing.assert_allclose(first.loc[next_ts].to_numpy(), env_next, rtol=1e-8, atol=0)
    # before the episode nothing traded; the equity is the initial cash
    assert (curve.loc[curve["ts_ns"] < ts[0], "equity"] == cfg.initial_cash).all()
    # fills: (ts, symbol, signed qty, price, fee), sorted
    sym = market.symbols
    env_fills = []
    for i, t1 in zip(infos, next_ts, strict=True):
        for j in np.flatnonzero(i["fill_qty"]):
            env_fills.append((int(i["ts"]), sym[j], i["fill_qty"][j], i["fill_price"][j], i["fill_fee"][j]))
        for j in np.flatnonzero(i["rest_fill_qty"]):
            env_fills.append((int(t1), sym[j], i["rest_fill_qty"][j], i["rest_fill_price"][j], i["rest_fill_fee"][j]))
    bt_fills = [
        (int(f["ts_ns"]), f["symbol"], f["qty"] * (1 if f["side"] == "buy" else -1), f["price"], f["fee"])
        for f in ledger.fills() if f["ts_ns"] <= last_ts
    ]
    env_fills.sort(key=lambda r: (r[0], r[1], r[3]))
    bt_fills.sort(key=lambda r: (r[0], r[1], r[3]))
    assert len(env_fills) == len(bt_fills) > 60
    for e, b in zip(env_fills, bt_fills, strict=True):
        assert e[:2] == b[:2]
        np.testing.assert_allclose(e[2:], b[2:], rtol=1e-9)
    assert not [o for o in ledger.orders() if o["status"] == "rejected"]
