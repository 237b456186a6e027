"""Portfolio allocation environments (gymnasium API, pure numpy, no Ray) that book trades as `tradesys backtest` does.

Why this accounting: an agent must learn in the market it will trade. Each step is the event-driven loop's step for
a strategy that holds target weights (`strategy.name = "weights"`), written over arrays with the shared cost and
sizing functions of `tradesys.backtest.costs`, so the equity path equals the backtest's (tests/test_rl_env.py).

One step at bar t (an episode's first bar is `start`; the agent sees the features of bars t-window+1..t):

1. action -> target weights w: "softmax" (long-only: A+1 logits, the last one cash, times `softmax_scale`) or
   "clip" (long/short: w = clip(a, -1, 1) * max_weight); then |w| <= max_weight, sum|w| scaled down to
   `max_gross_leverage`, and, with a RiskConfig, `scale_to_leverage` to its gross/net limits (as the strategies).
   These are the realised target weights (`info["target_weights"]`).
2. sizing (`costs.target_shares`, `costs.order_qty`): whole shares of |w| * E_t / close_t toward zero, clipped to
   max_position_notional; no order within `rebalance_band` of the target; the order clipped to max_order_qty and
   max_order_notional. Orders the pre-trade gate would refuse are clipped instead, reported in `info["clipped"]`
   (bool per asset) and `info["clip_reason"]` (bit mask: 1 max_position_notional, 2 max_order_qty,
   4 max_order_notional), with the unclipped order in `info["unclipped_order"]`.
3. a market order fills at once at close_t * (1 +/- slippage), at most participation_cap * volume_t (less what
   resting fills took from bar t); fee max(fee_min, fee_bps * notional). A remainder rests one bar (DAY): it fills
   in bar t+1 at open_{t+1} * (1 +/- slippage) within that bar's liquidity, then expires.
4. the book is marked to close_{t+1}; reward from E_t (before trading) to E_{t+1} (`tradesys.rl.rewards`).

Episodes: `episode_length` steps from a start drawn uniformly (seeded per sub-environment) among the bars with a
full look-back window, or (`episode_length=None`) the whole period from the first full window. An episode ends
truncated at its length or the last bar, terminated if equity falls to 0 or below.

Observation (float32, flat): features (window, A, F) in C order, then the current weights qty * close / E (A),
then the cash weight cash / E (1); `obs_layout` gives the split. The vector environment steps every episode in one
numpy call and resets finished ones on the next call (gymnasium's NEXT_STEP autoreset: that call's action is
ignored, its reward is 0, `info["autoreset"]` is true and the row's other info entries describe no trade).
Sub-environment i of a vector env seeded s draws its starts as a single env seeded s + i.

Not modelled (leave them off or slack for parity with the backtest): the gate's VaR limit, order-rate window,
daily-loss kill switch and price collar; limit orders.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

from tradesys.backtest import costs
from tradesys.config import BrokerConfig, ConfigError, DataConfig, RiskConfig
from tradesys.rl import rewards
from tradesys.rl.market import DEFAULT_FEATURES, FEATURES, MarketData, market_from_source

__all__ = ["PortfolioEnv", "RLEnvConfig", "VectorPortfolioEnv", "load_market", "make_env", "obs_layout"]

CLIP_POSITION, CLIP_ORDER_QTY, CLIP_ORDER_NOTIONAL = 1, 2, 4


@dataclass(frozen=True)
class RLEnvConfig:
    """Environment settings; every bad value raises ConfigError naming the field."""

    window: int = 20  # look-back bars in the observation
    episode_length: int | None = 252  # steps per episode; None: the whole period
    action_mode: Literal["softmax", "clip"] = "softmax"
    softmax_scale: float = 5.0  # softmax logits = scale * action (actions lie in [-1, 1])
    max_weight: float = 1.0  # cap on |weight| per asset
    max_gross_leverage: float = 1.0  # cap on sum |weight|
    reward: Literal["log_return", "dsr", "penalised"] = "log_return"
    dsr_eta: float = 0.01  # decay of the differential Sharpe ratio's moment estimates
    drawdown_penalty: float = 0.1  # penalised: weight of the drawdown (1 - E / peak)
    turnover_penalty: float = 0.001  # penalised: weight of traded notional / equity
    initial_cash: float = 1_000_000.0
    rebalance_band: float = 0.0  # no order when within this fraction of the target (the strategies' band)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    risk: RiskConfig | None = field(default_factory=RiskConfig)  # pre-trade limits; None: no limits
    data: DataConfig | None = None  # where bars come from when no MarketData is given
    features: tuple[str, ...] = DEFAULT_FEATURES  # built-in features used with `data`

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"{name}: {why} (got {getattr(self, name)!r})")

        def integer(name: str, lo: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < lo:
                raise bad(name, f"must be an integer >= {lo}")

        def number(name: str, lo: float, hi: float = math.inf, lo_open: bool = True) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise bad(name, "must be a finite number")
            if (v <= lo if lo_open else v < lo) or v > hi:
                raise bad(name, f"must be in {'(' if lo_open else '['}{lo:g}, {hi:g}]")

        integer("window", 1)
        if self.episode_length is not None:
            integer("episode_length", 1)
        if self.action_mode not in ("softmax", "clip"):
            raise bad("action_mode", "must be 'softmax' or 'clip'")
        if self.reward not in ("log_return", "dsr", "penalised"):
            raise bad("reward", "must be 'log_return', 'dsr' or 'penalised'")
        number("softmax_scale", 0.0)
        number("max_weight", 0.0)
        number("max_gross_leverage", 0.0)
        number("dsr_eta", 0.0, 1.0)
        if self.dsr_eta >= 1.0:
            raise bad("dsr_eta", "must be < 1")
        number("drawdown_penalty", 0.0, lo_open=False)
        number("turnover_penalty", 0.0, lo_open=False)
        number("initial_cash", 0.0)
        number("rebalance_band", 0.0, 1.0, lo_open=False)
        if not isinstance(self.broker, BrokerConfig):
            raise bad("broker", "must be a BrokerConfig")
        if self.risk is not None and not isinstance(self.risk, RiskConfig):
            raise bad("risk", "must be a RiskConfig or None")
        if self.data is not None and not isinstance(self.data, DataConfig):
            raise bad("data", "must be a DataConfig or None")
        feats = tuple(self.features)
        object.__setattr__(self, "features", feats)
        unknown = [f for f in feats if f not in FEATURES]
        if unknown or not feats:
            raise bad("features", f"unknown feature(s) {unknown}; known: {sorted(FEATURES)}" if unknown
                      else "name at least one feature")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> RLEnvConfig:
        """From a plain dict (RLlib's env_config, TOML): nested broker/risk/data dicts are validated as the
        platform's sections; an unknown key is an error naming it."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known - {"market", "num_envs"})
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown environment setting; known: {sorted(known)}")
        kw = {k: v for k, v in values.items() if k not in ("market", "num_envs")}
        sections = {"broker": BrokerConfig, "risk": RiskConfig, "data": DataConfig}
        for name, model in sections.items():
            v = kw.get(name)
            if isinstance(v, Mapping):
                from pydantic import ValidationError

                try:
                    kw[name] = model.model_validate(dict(v))
                except ValidationError as exc:
                    e = exc.errors()[0]
                    loc = ".".join(str(p) for p in e["loc"])
                    raise ConfigError(f"{name}.{loc}: {e['msg']}") from None
        if "features" in kw and isinstance(kw["features"], list):
            kw["features"] = tuple(kw["features"])
        return cls(**kw)


@functools.lru_cache(maxsize=8)
def _cached_market(data_json: str, features: tuple[str, ...]) -> MarketData:
    return market_from_source(DataConfig.model_validate_json(data_json), features)


def load_market(cfg: RLEnvConfig) -> MarketData:
    """The MarketData of `cfg.data` (cached per process: every env runner builds its envs from the same bars)."""
    if cfg.data is None:
        raise ConfigError("data: required when no MarketData is given")
    return _cached_market(cfg.data.model_dump_json(), cfg.features)


def _resolve(config: RLEnvConfig | Mapping[str, Any] | None, market: MarketData | None) -> tuple[RLEnvConfig,
                                                                                                MarketData]:
    if config is None:
        cfg = RLEnvConfig()
    elif isinstance(config, RLEnvConfig):
        cfg = config
    elif isinstance(config, Mapping):
        cfg = RLEnvConfig.from_mapping(config)
        market = market if market is not None else config.get("market")
    else:
        raise ConfigError(f"config: must be an RLEnvConfig or a mapping, got {type(config).__name__}")
    if market is None:
        market = load_market(cfg)
    if not isinstance(market, MarketData):
        raise ConfigError(f"market: must be a MarketData, got {type(market).__name__}")
    need = cfg.window + (cfg.episode_length or 1)
    if market.n_bars < need:
        raise ConfigError(f"episode_length: window {cfg.window} + episode_length {cfg.episode_length or 1} needs "
                          f"{need} bars, the market has {market.n_bars}")
    return cfg, market


class _Core:
    """The vectorised book: n independent episodes over one MarketData (no gymnasium here)."""

    def __init__(self, cfg: RLEnvConfig, market: MarketData, n: int) -> None:
        self.cfg, self.m, self.n = cfg, market, n
        a = market.n_assets
        self.n_assets = a
        self.cost = costs.CostModel.from_config(cfg.broker)
        self.limits = costs.SizingLimits.from_config(cfg.rebalance_band, cfg.risk)
        self.band_only = costs.SizingLimits(cfg.rebalance_band)
        self.order_limits = math.isfinite(self.limits.max_order_qty) or math.isfinite(self.limits.max_order_notional)
        self.feat_rows = np.ascontiguousarray(market.features, dtype=np.float32).reshape(market.n_bars, -1)
        self.liq_all = self.cost.liquidity(market.volume)  # (T, A) per-bar liquidity
        self.offsets = np.arange(-cfg.window + 1, 1)
        self.first_start = cfg.window - 1
        self.end_bar = market.n_bars - 1
        self.last_start = market.n_bars - 1 - (cfg.episode_length or (market.n_bars - 1 - self.first_start))
        self.t = np.full(n, self.first_start, dtype=np.int64)
        self.start = self.t.copy()
        self.cash = np.full(n, cfg.initial_cash)
        self.qty = np.zeros((n, a))
        self.liq_left = np.zeros((n, a))
        self.equity = np.full(n, cfg.initial_cash)
        self.peak = self.equity.copy()
        self.dsr_a = np.zeros(n)
        self.dsr_b = np.zeros(n)
        self.rngs = [np.random.default_rng() for _ in range(n)]

    # ------------------------------------------------------------------ episodes
    def seed(self, i: int, seed: int | None) -> None:
        self.rngs[i] = np.random.default_rng(seed)

    def reset(self, mask: np.ndarray) -> None:
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            return
        cfg = self.cfg
        for i in idx:
            if cfg.episode_length is None:
                s = self.first_start
            else:
                s = int(self.rngs[i].integers(self.first_start, self.last_start + 1))
            self.start[i] = self.t[i] = s
        self.cash[idx] = cfg.initial_cash
        self.qty[idx] = 0.0
        self.liq_left[idx] = self.liq_all[self.t[idx]]
        self.equity[idx] = cfg.initial_cash
        self.peak[idx] = cfg.initial_cash
        self.dsr_a[idx] = 0.0
        self.dsr_b[idx] = 0.0

    def observe(self) -> np.ndarray:
        """A fresh (n, obs_dim) float32 array: feature windows, weights, cash weight."""
        win = self.feat_rows[self.t[:, None] + self.offsets]  # (n, window, A * F)
        eq = self.equity[:, None]
        w = (self.qty * self.m.close[self.t] / eq).astype(np.float32)
        cash = (self.cash / self.equity).astype(np.float32)[:, None]
        return np.concatenate([win.reshape(self.n, -1), w, cash], axis=1)

    # ------------------------------------------------------------------ actions
    def weights(self, action: np.ndarray) -> np.ndarray:
        """Realised target weights (n, A) from actions (module docstring, step 1)."""
        cfg = self.cfg
        a = np.asarray(action, dtype=np.float64)
        if cfg.action_mode == "softmax":
            z = cfg.softmax_scale * np.clip(a, -1.0, 1.0)
            z = np.exp(z - z.max(axis=1, keepdims=True))
            w = (z / z.sum(axis=1, keepdims=True))[:, : self.n_assets]
            w = np.minimum(w, cfg.max_weight)
        else:
            w = np.clip(a, -1.0, 1.0) * cfg.max_weight
        gross = np.abs(w).sum(axis=1, keepdims=True)
        w = np.where(gross > cfg.max_gross_leverage, w * (cfg.max_gross_leverage / np.maximum(gross, 1e-300)), w)
        risk = cfg.risk
        if risk is not None:
            w = costs.scale_to_leverage(w, risk.max_gross_leverage, risk.max_net_leverage)
        return w

    # ------------------------------------------------------------------ the step
    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Trade at each episode's bar t, move to t+1; (reward, terminated, truncated, equity_before, info)."""
        cfg, m, cost, lim = self.cfg, self.m, self.cost, self.limits
        t = self.t
        close = m.close[t]
        e0 = self.cash + (self.qty * close).sum(axis=1)
        w = self.weights(action)
        eq_col = e0[:, None]
        target = costs.target_shares(w, eq_col, close, lim.max_position_notional)
        order = costs.order_qty(target, self.qty, close, lim)
        # what the gate would have been sent without the limits: report every clip
        reason = np.zeros(target.shape, dtype=np.int8)
        free_order = order
        if self.order_limits:
            free_order = costs.order_qty(target, self.qty, close, self.band_only)
            want = np.abs(free_order)
            if math.isfinite(lim.max_order_qty):
                reason |= np.where(want > math.floor(lim.max_order_qty), CLIP_ORDER_QTY, 0).astype(np.int8)
            if math.isfinite(lim.max_order_notional):
                cap = np.floor(lim.max_order_notional / close * (1 - 1e-12))
                reason |= np.where(want > cap, CLIP_ORDER_NOTIONAL, 0).astype(np.int8)
        if math.isfinite(lim.max_position_notional) and (np.abs(w) * eq_col > lim.max_position_notional).any():
            free_target = costs.target_shares(w, eq_col, close)
            free_order = costs.order_qty(free_target, self.qty, close, self.band_only)
            reason |= np.where(free_target != target, CLIP_POSITION, 0).astype(np.int8)
        # fills at bar t's close, within the liquidity resting fills left
        want = np.abs(order)
        side = np.sign(order)
        filled = costs.capped_qty(want, self.liq_left)
        px = cost.fill_price(close, side)
        fee = cost.fees(filled, px)
        signed = side * filled
        self.cash = self.cash - (signed * px + fee).sum(axis=1)
        self.qty = self.qty + signed
        rest = np.where(filled < want - costs.FILL_EPS, order - signed, 0.0)
        equity_post = self.cash + (self.qty * close).sum(axis=1)
        # bar t+1: the DAY remainder fills at the open within the new bar's liquidity, then expires
        t1 = t + 1
        liq = self.liq_all[t1]
        if rest.any():
            rside = np.sign(rest)
            rfilled = costs.capped_qty(np.abs(rest), liq)
            rpx = cost.fill_price(m.open[t1], rside)
            rfee = cost.fees(rfilled, rpx)
            rsigned = rside * rfilled
            self.cash = self.cash - (rsigned * rpx + rfee).sum(axis=1)
            self.qty = self.qty + rsigned
            self.liq_left = liq - rfilled
        else:  # nothing rests (the usual case when the cap does not bind)
            rfilled = rsigned = np.zeros_like(rest)
            rpx, rfee = np.zeros_like(rest), np.zeros_like(rest)
            self.liq_left = liq
        held = self.qty * m.close[t1]  # market value per asset at close t+1
        positions_value = held.sum(axis=1)
        e1 = self.cash + positions_value
        self.t = t1
        self.equity = e1
        self.peak = np.maximum(self.peak, e1)
        traded = (filled * px).sum(axis=1) + (rfilled * rpx).sum(axis=1)
        turnover = traded / e0
        # reward
        if cfg.reward == "log_return":
            reward = rewards.log_return(e0, e1)
        elif cfg.reward == "dsr":
            reward, self.dsr_a, self.dsr_b = rewards.dsr_step(e1 / e0 - 1.0, self.dsr_a, self.dsr_b, cfg.dsr_eta)
        else:
            dd = 1.0 - e1 / self.peak
            reward = rewards.penalised(rewards.log_return(e0, e1), dd, turnover, cfg.drawdown_penalty,
                                       cfg.turnover_penalty)
        terminated = e1 <= 0.0
        end = self.end_bar if cfg.episode_length is None else self.start + cfg.episode_length  # <= the last bar
        truncated = (t1 >= end) & ~terminated
        fees_paid = fee.sum(axis=1) + rfee.sum(axis=1)
        slip = (filled * np.abs(px - close)).sum(axis=1) + (rfilled * np.abs(rpx - m.open[t1])).sum(axis=1)
        info = {
            "bar": t,
            "ts": m.ts[t],
            "target_weights": w,
            "target_shares": target,
            "order": order,
            "unclipped_order": free_order,
            "clipped": reason != 0,
            "clip_reason": reason,
            "fill_qty": signed,
            "fill_price": px,
            "fill_fee": fee,
            "rest_fill_qty": rsigned,
            "rest_fill_price": rpx,
            "rest_fill_fee": rfee,
            "equity_before": e0,
            "equity_after_trade": equity_post,
            "equity": e1,
            "cash": self.cash.copy(),
            "positions_value": positions_value,
            "weights": held / np.where(e1 > 0, e1, np.nan)[:, None],
            "fees": fees_paid,
            "slippage_cost": slip,
            "costs": fees_paid + slip,
            "turnover": turnover,
        }
        return reward, terminated, truncated, e0, info


def _spaces(cfg: RLEnvConfig, market: MarketData) -> tuple[gym.spaces.Box, gym.spaces.Box]:
    a, f = market.n_assets, len(market.feature_names)
    obs = gym.spaces.Box(-np.inf, np.inf, shape=(cfg.window * a * f + a + 1,), dtype=np.float32)
    n_act = a + 1 if cfg.action_mode == "softmax" else a
    act = gym.spaces.Box(-1.0, 1.0, shape=(n_act,), dtype=np.float32)
    return obs, act


class VectorPortfolioEnv(VectorEnv):
    """`num_envs` independent episodes stepped in one numpy call (module docstring); NEXT_STEP autoreset."""

    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int = 1,
        config: RLEnvConfig | Mapping[str, Any] | None = None,
        market: MarketData | None = None,
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int | np.integer) or num_envs < 1:
            raise ConfigError(f"num_envs: must be an integer >= 1 (got {num_envs!r})")
        self.config, self.market = _resolve(config, market)
        self.num_envs = int(num_envs)
        self._core = _Core(self.config, self.market, self.num_envs)
        self.single_observation_space, self.single_action_space = _spaces(self.config, self.market)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self._done = np.zeros(self.num_envs, dtype=bool)
        self._started = False

    @property
    def obs_layout(self) -> dict[str, tuple[int, ...]]:
        return obs_layout(self.config, self.market)

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is not None:
            seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"seed: {len(seeds)} seeds for {self.num_envs} environments")
            for i, s in enumerate(seeds):
                self._core.seed(i, s)
        self._core.reset(np.ones(self.num_envs, dtype=bool))
        self._done[:] = False
        self._started = True
        return self._core.observe(), self._reset_info()

    def _reset_info(self) -> dict[str, Any]:
        c = self._core
        return {"bar": c.t.copy(), "ts": self.market.ts[c.t], "equity": c.equity.copy()}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self._started:
            raise gym.error.ResetNeeded("call reset() before step()")
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape != self.action_space.shape:
            raise ValueError(f"actions: shape {actions.shape}, expected {self.action_space.shape}")
        if not np.isfinite(actions).all():
            raise ValueError("actions: NaN or inf in the actions")
        c = self._core
        again = self._done.copy()
        # finished episodes start again now; their actions are ignored (NEXT_STEP autoreset)
        c.reset(again)
        live = ~again
        names = ("t", "cash", "qty", "liq_left", "equity", "peak", "dsr_a", "dsr_b")
        any_again = bool(again.any())
        saved = [getattr(c, k)[again] for k in names] if any_again else []
        reward, terminated, truncated, _, info = c.step(actions)
        if any_again:  # put the freshly reset episodes back: they did not step
            for k, old in zip(names, saved, strict=True):
                getattr(c, k)[again] = old
            reward = np.where(again, 0.0, reward)
            terminated = terminated & live
            truncated = truncated & live
        self._done = terminated | truncated
        info["autoreset"] = again
        return c.observe(), reward.astype(np.float64), terminated, truncated, info


class PortfolioEnv(gym.Env):
    """One episode at a time: the vector environment's core with n = 1 (module docstring)."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, config: RLEnvConfig | Mapping[str, Any] | None = None, market: MarketData | None = None,
                 render_mode: str | None = None) -> None:
        self.config, self.market = _resolve(config, market)
        self._core = _Core(self.config, self.market, 1)
        self.observation_space, self.action_space = _spaces(self.config, self.market)
        self.render_mode = render_mode
        self._done = True

    @property
    def obs_layout(self) -> dict[str, tuple[int, ...]]:
        return obs_layout(self.config, self.market)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray,
                                                                                                  dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self._core.seed(0, seed)
        self._core.reset(np.ones(1, dtype=bool))
        self._done = False
        c = self._core
        return c.observe()[0], {"bar": int(c.t[0]), "ts": int(self.market.ts[c.t[0]]), "equity": float(c.equity[0])}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._done:
            raise gym.error.ResetNeeded("the episode has ended: call reset()")
        a = np.asarray(action, dtype=np.float64)
        if a.shape != self.action_space.shape:
            raise ValueError(f"action: shape {a.shape}, expected {self.action_space.shape}")
        if not np.isfinite(a).all():
            raise ValueError("action: NaN or inf in the action")
        reward, terminated, truncated, _, info = self._core.step(a[None, :])
        self._done = bool(terminated[0] or truncated[0])
        return (self._core.observe()[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]),
                {k: v[0] for k, v in info.items()})


def obs_layout(cfg: RLEnvConfig, market: MarketData) -> dict[str, tuple[int, ...]]:
    """Shapes of the observation's parts, in order: features (window, A, F), weights (A,), cash (1,)."""
    a = market.n_assets
    return {"features": (cfg.window, a, len(market.feature_names)), "weights": (a,), "cash": (1,)}



def make_env(env_config: Mapping[str, Any] | None = None) -> PortfolioEnv | VectorPortfolioEnv:
    """An env creator for RLlib: `env_config` as `RLEnvConfig.from_mapping` reads it (plus an optional "market");
    with a "num_envs" key (RLlib's `gym_env_vectorize_mode="vector_entry_point"` adds it) a VectorPortfolioEnv of
    that many episodes, else a PortfolioEnv."""
    values = dict(env_config or {})
    n = values.pop("num_envs", None)
    if n is None:
        return PortfolioEnv(values)
    return VectorPortfolioEnv(int(n), values)
