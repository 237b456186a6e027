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
def market():
    return market_from_source(DATA)


def _run(env: PortfolioEnv, actions: np.ndarray, seed: int) -> tuple[list, list]:
    env.reset(seed=seed)
    infos, rews = [], []
    for a in actions:
        _, r, term, trunc, info = env.step(a)
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


@pytest.mark.slow  # about 3 s each: a full event-driven backtest over 780 minute bars
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


# ----------------------------------------------------------------------------------------------- accounting laws


@pytest.mark.parametrize("reward", ["log_return", "dsr", "penalised"])
def test_cash_plus_positions_is_equity_every_step_and_rebuilt_from_fills(market, reward: str) -> None:
    """equity = cash + positions each step; cash and positions rebuilt from the reported fills alone give the same
    equity (no money appears or vanishes); the log-return rewards sum to log(E_T / E_0)."""
    cfg = RLEnvConfig(window=5, episode_length=40, action_mode="clip", max_weight=0.6, max_gross_leverage=2.0,
                      reward=reward, broker=BrokerConfig(participation_cap=0.01, fee_min=2.0))
    env = PortfolioEnv(cfg, market)
    actions = np.random.default_rng(9).uniform(-1, 1, size=(40, env.action_space.shape[0]))
    infos, rews = _run(env, actions, seed=1)
    cash, qty = cfg.initial_cash, np.zeros(market.n_assets)
    prev = cfg.initial_cash
    for i in infos:
        assert i["equity"] == pytest.approx(i["cash"] + i["positions_value"], rel=1e-12)
        assert i["equity_before"] == pytest.approx(prev, rel=1e-12)  # nothing happens between steps
        cash -= float(np.sum(i["fill_qty"] * i["fill_price"] + i["fill_fee"]))
        cash -= float(np.sum(i["rest_fill_qty"] * i["rest_fill_price"] + i["rest_fill_fee"]))
        qty += i["fill_qty"] + i["rest_fill_qty"]
        close = market.close[i["bar"] + 1]
        assert cash + qty @ close == pytest.approx(i["equity"], rel=1e-12)
        assert i["fees"] == pytest.approx(i["fill_fee"].sum() + i["rest_fill_fee"].sum())
        assert (i["fill_fee"][i["fill_qty"] != 0] >= 2.0).all()  # the minimum fee per fill
        prev = i["equity"]
    if reward == "log_return":
        assert sum(rews) == pytest.approx(math.log(prev / cfg.initial_cash), rel=1e-10)
    if reward == "penalised":
        peak = np.maximum.accumulate([cfg.initial_cash] + [i["equity"] for i in infos])[1:]
        e = np.array([i["equity"] for i in infos])
        e0 = np.array([i["equity_before"] for i in infos])
        turnover = np.array([i["turnover"] for i in infos])
        want = np.log(e / e0) - 0.1 * (1 - e / peak) - 0.001 * turnover
        np.testing.assert_allclose(rews, want, rtol=1e-12, atol=1e-15)


def test_costs_are_the_venue_rules(market) -> None:
    """A buy fills at close * (1 + slip), a fee of fee_bps of notional; weights from softmax are >= 0 and sum to at
    most 1 with the cash slot; whole shares."""
    broker = BrokerConfig(fee_bps=2.0, fee_min=0.0, slippage_bps=5.0, participation_cap=1.0)
    env = PortfolioEnv(RLEnvConfig(window=3, episode_length=5, broker=broker, risk=None), market)
    env.reset(seed=0)
    a = np.full(env.action_space.shape, -1.0)
    a[0] = 1.0  # mostly the first asset
    _, _, _, _, info = env.step(a)
    w = info["target_weights"]
    assert (w >= 0).all() and w.sum() <= 1.0 + 1e-12
    z = np.exp(5.0 * a - 5.0)
    np.testing.assert_allclose(w, (z / z.sum())[:-1], rtol=1e-12)  # the softmax with its cash slot
    close = market.close[info["bar"]]
    q = info["fill_qty"]
    assert (q == np.floor(w * 1_000_000.0 / close)).all()
    np.testing.assert_allclose(info["fill_price"][q > 0], close[q > 0] * 1.0005, rtol=1e-15)
    np.testing.assert_allclose(info["fill_fee"], 2e-4 * q * close * 1.0005, rtol=1e-12)


# ----------------------------------------------------------------------------------------------- rewards


def test_dsr_reward_equals_the_moody_saffell_recursion(market) -> None:
    """The env's DSR rewards equal the recursion written out here on the env's own equity path."""
    eta = 0.05
    cfg = RLEnvConfig(window=5, episode_length=50, reward="dsr", dsr_eta=eta, action_mode="clip")
    env = PortfolioEnv(cfg, market)
    actions = np.random.default_rng(2).uniform(-1, 1, size=(50, env.action_space.shape[0]))
    infos, rews = _run(env, actions, seed=8)
    a = b = 0.0
    want = []
    for i in infos:
        r = i["equity"] / i["equity_before"] - 1.0
        var = b - a * a
        want.append((b * (r - a) - 0.5 * a * (r * r - b)) / var**1.5 if var > 1e-12 else 0.0)
        a, b = a + eta * (r - a), b + eta * (r * r - b)
    assert want[0] == 0.0 and any(w != 0.0 for w in want)
    np.testing.assert_allclose(rews, want, rtol=1e-10, atol=1e-14)


def test_dsr_is_the_sharpe_ratio_sensitivity_to_eta() -> None:
    """Moody and Saffell's defining property: S_t(eta) = S_{t-1} + eta D_t + O(eta^2), with S = A / sqrt(B - A^2)
    the moving Sharpe ratio (checked by a finite difference in eta, independent of the recursion's algebra)."""
    rng = np.random.default_rng(0)
    r = rng.normal(0.001, 0.01, size=200)
    a, b = np.zeros(1), np.zeros(1)
    eta = 0.02
    for x in r[:100]:  # a warm state
        _, a, b = rewards.dsr_step(np.array([x]), a, b, eta)
    sharpe = a / np.sqrt(b - a * a)
    for x in r[100:110]:
        d, _, _ = rewards.dsr_step(np.array([x]), a, b, eta)
        h = 1e-6
        a_h, b_h = a + h * (x - a), b + h * (x * x - b)
        slope = (a_h / np.sqrt(b_h - a_h * a_h) - sharpe) / h
        assert d[0] == pytest.approx(slope[0], rel=1e-4)
        _, a, b = rewards.dsr_step(np.array([x]), a, b, eta)
        sharpe = a / np.sqrt(b - a * a)


# ----------------------------------------------------------------------------------------------- vectorisation


@pytest.mark.parametrize("mode", ["softmax", "clip"])
def test_vector_env_equals_single_envs_stepped_separately(market, mode: str) -> None:
    """n episodes in one vector env equal n single envs seeded seed + i, through episode ends (NEXT_STEP
    autoreset: the call after an episode ends resets it, reward 0, the action ignored)."""
    n, steps = 3, 27
    cfg = RLEnvConfig(window=4, episode_length=10, action_mode=mode, reward="dsr", dsr_eta=0.1,
                      broker=BrokerConfig(participation_cap=0.005))
    vec = VectorPortfolioEnv(n, cfg, market)
    singles = [PortfolioEnv(cfg, market) for _ in range(n)]
    actions = np.random.default_rng(5).uniform(-1, 1, size=(steps, n, vec.single_action_space.shape[0]))
    vobs, _ = vec.reset(seed=100)
    sobs = [s.reset(seed=100 + i)[0] for i, s in enumerate(singles)]
    np.testing.assert_array_equal(vobs, np.stack(sobs))
    done = [False] * n
    resets = 0
    for k in range(steps):
        vobs, vrew, vterm, vtrunc, vinfo = vec.step(actions[k])
        for i, s in enumerate(singles):
            if done[i]:
                obs, _ = s.reset()
                rew, term, trunc = 0.0, False, False
                resets += 1
                assert vinfo["autoreset"][i]
            else:
                obs, rew, term, trunc, info = s.step(actions[k, i])
                np.testing.assert_allclose(vinfo["equity"][i], info["equity"], rtol=1e-13)
            np.testing.assert_allclose(vobs[i], obs, rtol=1e-6)
            assert vrew[i] == pytest.approx(rew, rel=1e-10, abs=1e-15)
            assert (bool(vterm[i]), bool(vtrunc[i])) == (term, trunc)
            done[i] = term or trunc
    assert resets == 2 * n  # every episode ended twice in 27 steps of 10


# ----------------------------------------------------------------------------------------------- limits


@pytest.mark.parametrize(
    ("update", "bit", "reason"),
    [
        ({"max_order_notional": 60_000.0}, CLIP_ORDER_NOTIONAL, "max_order_notional"),
        ({"max_order_qty": 150.0}, CLIP_ORDER_QTY, "max_order_qty"),
        ({"max_position_notional": 80_000.0}, CLIP_POSITION, "max_position"),
    ],
)
def test_an_order_the_gate_would_refuse_is_clipped_and_reported(market, update: dict, bit: int, reason: str) -> None:
    """The unclipped order is refused by the real PreTradeRisk gate for the limit named; the clipped one passes;
    info reports the clip with its reason bit."""
    from tradesys.core.orders import Order, OrderType, Side, TimeInForce
    from tradesys.core.portfolio import Portfolio
    from tradesys.risk.pretrade import PreTradeRisk

    big = {"max_order_notional": 1e12, "max_order_qty": 1e12, "max_position_notional": 1e12}
    risk = SLACK_RISK.model_copy(update={**big, **update})
    env = PortfolioEnv(RLEnvConfig(window=3, episode_length=5, risk=risk,
                                   broker=BrokerConfig(participation_cap=1.0)), market)
    env.reset(seed=3)
    a = np.full(env.action_space.shape, -1.0)
    a[1] = 1.0  # concentrated in asset 1: about 70% of equity
    _, _, _, _, info = env.step(a)
    assert info["clipped"][1] and info["clip_reason"][1] & bit
    assert abs(info["order"][1]) < abs(info["unclipped_order"][1])
    t = info["bar"]
    pf = Portfolio(1_000_000.0)
    pf.mark(dict(zip(market.symbols, market.close[t], strict=True)), int(market.ts[t]))
    book = pf.snapshot()

    def order(q: float, cid: str) -> Order:
        return Order(client_order_id=cid, symbol=market.symbols[1], side=Side.BUY, qty=float(q),
                     type=OrderType.MARKET, tif=TimeInForce.DAY, strategy_id="rl", ts_ns=int(market.ts[t]))

    gate = PreTradeRisk(risk)
    decision = gate.check([order(info["unclipped_order"][1], "free"), order(info["order"][1], "clipped")], book,
                          int(market.ts[t]))
    assert [o.client_order_id for o in decision.accepted] == ["clipped"]
    assert [e.reason.value for e in decision.rejected] == [reason]


def test_weights_respect_max_weight_and_gross_leverage(market) -> None:
    cfg = RLEnvConfig(window=3, episode_length=5, action_mode="clip", max_weight=0.3, max_gross_leverage=1.2,
                      risk=None)
    vec = VectorPortfolioEnv(16, cfg, market)
    vec.reset(seed=0)
    _, _, _, _, info = vec.step(np.random.default_rng(1).uniform(-1, 1, size=vec.action_space.shape))
    w = info["target_weights"]
    assert (np.abs(w) <= 0.3 + 1e-15).all() and (np.abs(w).sum(axis=1) <= 1.2 + 1e-12).all()
    assert (w < 0).any()
    # with the gate's leverage limits the strategies' 2% margin applies, as in tradesys.strategy.sizing
    cfg2 = RLEnvConfig(window=3, episode_length=5, action_mode="clip", max_weight=1.0, max_gross_leverage=3.0,
                       risk=RiskConfig(max_gross_leverage=1.0, max_net_leverage=0.5))
    env = PortfolioEnv(cfg2, market)
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.ones(env.action_space.shape))
    assert np.abs(info["target_weights"]).sum() == pytest.approx(0.98 * 0.5)


# ----------------------------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"window": 0}, "window"),
        ({"episode_length": -3}, "episode_length"),
        ({"action_mode": "tanh"}, "action_mode"),
        ({"reward": "sharpe"}, "reward"),
        ({"dsr_eta": 1.5}, "dsr_eta"),
        ({"max_weight": 0.0}, "max_weight"),
        ({"max_gross_leverage": float("nan")}, "max_gross_leverage"),
        ({"turnover_penalty": -1.0}, "turnover_penalty"),
        ({"initial_cash": 0}, "initial_cash"),
        ({"rebalance_band": 2.0}, "rebalance_band"),
        ({"features": ("log_return", "moon_phase")}, "features"),
    ],
)
def test_bad_config_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{field}: "):
        RLEnvConfig(**kwargs)


def test_mapping_config_and_market_errors_name_the_field(market) -> None:
    with pytest.raises(ConfigError, match=r"^windw: unknown environment setting"):
        RLEnvConfig.from_mapping({"windw": 3})
    with pytest.raises(ConfigError, match=r"^broker\.fee_bps: "):
        RLEnvConfig.from_mapping({"broker": {"fee_bps": -1}})
    with pytest.raises(ConfigError, match=r"^episode_length: .* needs"):
        PortfolioEnv(RLEnvConfig(episode_length=market.n_bars), market)
    with pytest.raises(ConfigError, match=r"^data: required"):
        PortfolioEnv(RLEnvConfig())
    # RLlib's env_config: a plain dict, bars from a DataConfig
    env = PortfolioEnv({"window": 3, "episode_length": 5, "data": DATA.model_dump(), "features": ["log_return"]})
    assert env.observation_space.shape == (3 * 5 * 1 + 5 + 1,)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action: NaN"):
        env.step(np.full(env.action_space.shape, np.nan))


# ----------------------------------------------------------------------------------------------- market arrays


def test_features_use_no_future_bars() -> None:
    """Features at bar t computed from bars <= t only: the tensor on a truncated history equals the full one."""
    src = make_source(DATA)
    ts, _, prices = dense_bars(src.table)
    full = compute_features(prices)
    for cut in (60, 200):
        part = compute_features(tuple(p[:cut] for p in prices))
        np.testing.assert_array_equal(part, full[:cut])
    m = market_from_source(src)
    assert np.isfinite(m.features).all() and m.n_bars == len(ts) - 33  # MACD(12, 26, 9) warms up in 33 bars
    np.testing.assert_allclose(m.features[:, :, 0], np.log(m.close / prices[3][32:-1]), rtol=1e-12)


def test_a_gap_is_an_error_naming_the_symbol() -> None:
    src = make_source(DATA)
    table = src.table
    keep = np.ones(table.num_rows, dtype=bool)
    keep[5 * len(src.symbols) + 2] = False  # one bar of the third symbol, mid-period
    with pytest.raises(ValueError, match=rf"symbol '{src.symbols[2]}' has no usable bar"):
        dense_bars(table.filter(keep))


def test_market_from_the_offline_store_is_point_in_time(tmp_path: Path) -> None:
    """Store features are attached as of each bar: a value stamped at bar t reaches bar t; with a one-bar lag it
    reaches bar t+1 only."""
    from tradesys.featurestore import FeatureDefinition, OfflineStore
    from tradesys.featurestore.offline import FeatureRef

    src = make_source(DataConfig(source="synthetic", synthetic_days=1, seed=3, symbols=["ALPHA", "BRAVO"]))
    ts, syms, prices = dense_bars(src.table)
    store = OfflineStore(tmp_path)
    defn = FeatureDefinition("px", 1, {"level": "float64"}, transform="test")
    store.register(defn)
    rows = pd.DataFrame({
        "symbol": np.repeat(np.array(syms, dtype=object), len(ts)),
        "ts": pd.to_datetime(np.tile(ts, len(syms)), utc=True),
        "level": np.concatenate([prices[3][:, j] for j in range(len(syms))]),
    })
    store.write(defn, 1, rows)
    m = market_from_store(store, ["px:1"], src)
    assert m.feature_names == ("log_return", "px_v1__level")
    np.testing.assert_array_equal(m.features[:, :, 1], m.close)
    lagged = market_from_store(store, [FeatureRef("px", 1, lag=int(ts[1] - ts[0]))], src)
    np.testing.assert_array_equal(lagged.features[1:, :, 1], lagged.close[:-1])


def test_make_env_gives_rllib_a_vector_env_its_info_wrapper_accepts(market) -> None:
    """RLlib's "vector_entry_point" mode calls the creator with num_envs and wraps it in DictInfoToList."""
    from gymnasium.wrappers.vector import DictInfoToList

    from tradesys.rl.env import make_env

    cfg = {"window": 3, "episode_length": 4, "market": market}
    assert isinstance(make_env(cfg), PortfolioEnv)
    vec = DictInfoToList(make_env(cfg | {"num_envs": 2}))
    obs, infos = vec.reset(seed=0)
    assert obs.shape == (2, 3 * market.n_assets * 6 + market.n_assets + 1) and len(infos) == 2
    for _ in range(5):
        obs, _, _, _, infos = vec.step(vec.action_space.sample())
    assert infos[0]["autoreset"] and infos[1]["autoreset"]  # both ended at step 4 and restarted at step 5


def test_whole_period_episode_runs_from_the_first_full_window_to_the_last_bar(market) -> None:
    part = market.slice(100, 160)
    env = PortfolioEnv(RLEnvConfig(window=10, episode_length=None), part)
    for seed in (0, 1):  # no randomness in the start
        _, info = env.reset(seed=seed)
        assert info["bar"] == 9 and info["ts"] == market.ts[109]
    steps, trunc = 0, False
    while not trunc:
        _, _, term, trunc, info = env.step(env.action_space.sample())
        steps += 1
        assert not term
    assert steps == 60 - 10 and info["bar"] == 58  # the last step trades at bar 58 and marks bar 59
    with pytest.raises(Exception, match="reset"):
        env.step(env.action_space.sample())


def test_observation_is_the_feature_window_up_to_the_bar_then_weights_and_cash(market) -> None:
    from tradesys.rl.env import obs_layout

    cfg = RLEnvConfig(window=7, episode_length=5, action_mode="clip", risk=None)
    env = PortfolioEnv(cfg, market)
    obs, info = env.reset(seed=2)
    shapes = obs_layout(cfg, market)
    k = int(np.prod(shapes["features"]))
    t = info["bar"]
    feats = market.features.astype(np.float32)
    np.testing.assert_array_equal(obs[:k].reshape(shapes["features"]), feats[t - 6 : t + 1])
    assert (obs[k:-1] == 0).all() and obs[-1] == 1.0  # all cash at the start
    obs, _, _, _, info = env.step(np.linspace(-1, 1, market.n_assets))
    np.testing.assert_array_equal(obs[:k].reshape(shapes["features"]), feats[t - 5 : t + 2])
    np.testing.assert_allclose(obs[k:-1], info["weights"], rtol=1e-6)
    assert obs[-1] == pytest.approx(info["cash"] / info["equity"], rel=1e-6)
    assert obs[k:].sum() == pytest.approx(1.0, rel=1e-6)  # weights + cash weight = 1
