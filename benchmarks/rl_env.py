"""RL environment speed: env steps per second on one core, for 20 and 500 assets (issue 12, benchmark).

Three environments over the same market arrays (synthetic GBM bars through `tradesys.data`, the built-in features,
window 20), the same cost and sizing rules (SimBroker's slippage, fees, participation cap and DAY remainders;
whole shares; the order and position limits of the default RiskConfig) and the same random actions:

1. `VectorPortfolioEnv` with --num-envs episodes per numpy call (env steps/s = episodes x calls / s);
2. `PortfolioEnv`, one episode, one step per call;
3. `LoopPortfolioEnv` (below): a gymnasium env written the common way (FinRL style), one Python iteration per
   asset per step for sizing, fills and the observation. Its equity path is checked against `PortfolioEnv` before
   timing (the max relative difference is printed), so the comparison is between two envs that trade alike.

The process is pinned to one CPU (`os.sched_setaffinity`) and BLAS threads are set to 1. Each figure is the median
of --repeats timed runs; random actions are drawn before timing.

    .venv/bin/python benchmarks/rl_env.py [--repeats 3] [--assets 20 500] [--num-envs 16 256] [--days 5]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import math
import statistics
import time
from typing import Any

import gymnasium as gym
import numpy as np

from tradesys.config import DataConfig, RiskConfig
from tradesys.rl.env import PortfolioEnv, RLEnvConfig, VectorPortfolioEnv
from tradesys.rl.market import MarketData, market_from_source


class LoopPortfolioEnv(gym.Env):
    """The common way: Python loops over assets inside each step (softmax actions, no rebalance band)."""

    def __init__(self, cfg: RLEnvConfig, market: MarketData) -> None:
        self.cfg, self.m = cfg, market
        a, f = market.n_assets, len(market.feature_names)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (cfg.window * a * f + a + 1,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (a + 1,), np.float32)
        self.close = market.close.tolist()
        self.open = market.open.tolist()
        self.volume = market.volume.tolist()
        self.feats = market.features.astype(np.float32)
        b, r = cfg.broker, cfg.risk
        self.slip, self.rate, self.fee_min, self.cap = b.slippage_bps / 1e4, b.fee_bps / 1e4, b.fee_min, \
            b.participation_cap
        self.max_pos = r.max_position_notional if r else math.inf
        self.max_qty = math.floor(r.max_order_qty) if r else math.inf
        self.max_notional = r.max_order_notional if r else math.inf

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = int(self.np_random.integers(self.cfg.window - 1, self.m.n_bars - 1 - self.cfg.episode_length + 1))
        self.start = self.t
        n = self.m.n_assets
        self.cash = self.cfg.initial_cash
        self.qty = [0.0] * n
        self.liq = [self._liq(v) for v in self.volume[self.t]]
        return self._obs(), {}

    def _liq(self, v: float) -> float:
        return math.inf if v != v else self.cap * max(v, 0.0)

    def _obs(self) -> np.ndarray:
        t, w = self.t, self.cfg.window
        close = self.close[t]
        eq = self.cash + sum(q * p for q, p in zip(self.qty, close, strict=True))
        parts = [self.feats[t - w + 1 : t + 1, j, :] for j in range(self.m.n_assets)]  # per asset
        window = np.stack(parts, axis=1).ravel()
        weights = [q * p / eq for q, p in zip(self.qty, close, strict=True)] + [self.cash / eq]
        return np.concatenate([window, np.asarray(weights, np.float32)]).astype(np.float32)

    def _fill(self, j: int, signed: float, ref: float) -> float:
        """Book a fill of `signed` shares of asset j at `ref` +/- slippage; return the quantity filled."""
        px = ref * (1 + self.slip) if signed > 0 else ref * (1 - self.slip)
        q = min(abs(signed), self.liq[j]) if self.liq[j] > 1e-9 else 0.0
        if q > 0:
            s = q if signed > 0 else -q
            self.cash -= s * px + max(self.fee_min, self.rate * q * px, 0.0)
            self.qty[j] += s
            self.liq[j] -= q
        return q

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        t, n = self.t, self.m.n_assets
        close = self.close[t]
        e0 = self.cash + sum(q * p for q, p in zip(self.qty, close, strict=True))
        z = [self.cfg.softmax_scale * min(max(float(x), -1.0), 1.0) for x in action]
        top = max(z)
        ez = [math.exp(v - top) for v in z]
        total = sum(ez)
        rest = [0.0] * n
        for j in range(n):
            w = min(ez[j] / total, self.cfg.max_weight)
            px = close[j]
            size = min(abs(w) * e0 / px, self.max_pos / px)
            target = math.floor(size)
            diff = target - self.qty[j]
            if diff == 0:
                continue
            q = min(abs(diff), self.max_qty, math.floor(self.max_notional / px * (1 - 1e-12)))
            if q <= 0:
                continue
            signed = q if diff > 0 else -q
            done = self._fill(j, signed, px)
            if done < q - 1e-9:
                rest[j] = signed - (done if signed > 0 else -done)
        self.t = t = t + 1
        self.liq = [self._liq(v) for v in self.volume[t]]
        for j in range(n):
            if rest[j]:
                self._fill(j, rest[j], self.open[t][j])
        e1 = self.cash + sum(q * p for q, p in zip(self.qty, self.close[t], strict=True))
        trunc = t >= self.start + self.cfg.episode_length
        return self._obs(), math.log(e1 / e0), False, trunc, {"equity": e1}


def _market(n_assets: int, days: int) -> MarketData:
    symbols = [f"S{i:03d}" for i in range(n_assets)]
    return market_from_source(DataConfig(source="synthetic", symbols=symbols, synthetic_days=days, seed=1))


def _check_same(cfg: RLEnvConfig, market: MarketData, steps: int = 50) -> float:
    """Max relative equity difference between PortfolioEnv and LoopPortfolioEnv on the same actions."""
    a, b = PortfolioEnv(cfg, market), LoopPortfolioEnv(cfg, market)
    a.reset(seed=0)
    b.reset(seed=0)
    b.t = b.start = int(a._core.t[0])  # the same start bar
    b.liq = [b._liq(v) for v in b.volume[b.t]]
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(steps):
        act = rng.uniform(-1, 1, a.action_space.shape)
        _, _, _, _, ia = a.step(act)
        _, _, _, _, ib = b.step(act)
        worst = max(worst, abs(ia["equity"] / ib["equity"] - 1.0))
    return worst


def _time_single(env: gym.Env, actions: np.ndarray) -> float:
    env.reset(seed=0)
    t0 = time.perf_counter()
    for act in actions:
        _, _, term, trunc, _ = env.step(act)
        if term or trunc:
            env.reset()
    return len(actions) / (time.perf_counter() - t0)


def _time_vector(env: VectorPortfolioEnv, actions: np.ndarray) -> float:
    env.reset(seed=0)
    t0 = time.perf_counter()
    for act in actions:
        env.step(act)
    return actions.shape[0] * actions.shape[1] / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--assets", type=int, nargs="+", default=[20, 500])
    ap.add_argument("--num-envs", type=int, nargs="+", default=[16, 256])
    ap.add_argument("--days", type=int, default=5, help="synthetic sessions of 390 one-minute bars")
    ap.add_argument("--seconds", type=float, default=1.0, help="rough length of one timed run")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"one core: cpu {sorted(os.sched_getaffinity(0))} of {os.cpu_count()}, load average {load}; "
          f"numpy {np.__version__}, gymnasium {gym.__version__}")
    risk = RiskConfig(max_gross_leverage=None, max_net_leverage=None)
    for n_assets in args.assets:
        market = _market(n_assets, args.days)
        cfg = RLEnvConfig(window=20, episode_length=200, risk=risk)
        obs_dim = PortfolioEnv(cfg, market).observation_space.shape[0]
        print(f"\n{n_assets} assets x {market.n_bars} bars, {len(market.feature_names)} features, window 20: "
              f"observation {obs_dim:,} floats; equity max rel diff single vs loop env over 50 steps: "
              f"{_check_same(cfg, market):.1e}")
        rng = np.random.default_rng(1)
        results: dict[str, list[float]] = {}
        envs: list[tuple[str, Any, int]] = [
            *((f"vector env (num_envs={n})", VectorPortfolioEnv(n, cfg, market), n) for n in args.num_envs),
            ("single env (PortfolioEnv)", PortfolioEnv(cfg, market), 0),
            ("loop env (FinRL style)", LoopPortfolioEnv(cfg, market), 0),
        ]
        for label, env, n_vec in envs:
            run = _time_vector if n_vec else _time_single
            lead = (n_vec,) if n_vec else ()
            # size a run to about --seconds from a short probe
            probe = run(env, rng.uniform(-1, 1, (5 if n_vec else 50, *lead, n_assets + 1)))
            calls = max(10, int(probe * args.seconds / max(n_vec, 1)))
            actions = rng.uniform(-1, 1, (calls, *lead, n_assets + 1))
            results[label] = [run(env, actions) for _ in range(args.repeats)]
        loop = statistics.median(results["loop env (FinRL style)"])
        for label, runs in results.items():
            med = statistics.median(runs)
            print(f"  {label:32s} {med:>12,.0f} env steps/s  (median of {args.repeats}: "
                  f"{', '.join(f'{r:,.0f}' for r in runs)}; {med / loop:.1f}x the loop env)")


if __name__ == "__main__":
    main()
