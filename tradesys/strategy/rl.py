"""The `rl` strategy: a trained PPO policy (an export of `tradesys.rl.policy`) chooses target weights every bar.

Why this shape: the policy learned in `tradesys.rl.env`, whose step is the `weights` strategy's step over arrays.
So at each bar this strategy builds the observation the env would have built (`tradesys.rl.observation`: the
feature window up to the bar, the book's weights and cash weight), asks the policy for target weights (the graph,
then the env's own action -> weights mapping), and trades them through `TargetWeightsStrategy`'s sizing (it *is* a
`TargetWeightsStrategy` whose weights come from the policy instead of a schedule): leverage scaling, whole shares,
rebalance band, order and position limits, deterministic client order ids.

Before the feature window is complete (the indicators' warm-up plus `window` bars) it sends nothing, as the env
never starts an episode there. Symbols the policy was not trained on get no orders. The rebalance band is the run's
``strategy.rebalance_band``: set it to the env's ``rebalance_band`` (``policy.json``) for the trades the agent
learned on.

Restarts: the state is the bar history (the observation needs every bar since the first, because the EMA-based
features depend on all of them) plus the book, which the ledger restores; `warm_up` replays the bars up to the
resume point into the history, so a restarted strategy makes the same orders as an undisturbed one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import pyarrow as pa

from tradesys.config import ConfigError, RiskConfig, StrategyConfig
from tradesys.core.orders import Order
from tradesys.core.portfolio import PortfolioSnapshot
from tradesys.core.schemas import batch_ts
from tradesys.rl.observation import ObservationBuilder
from tradesys.rl.policy import ExportedPolicy, load_policy
from tradesys.strategy.weights import TargetWeightsStrategy, WeightSchedule

FIELD = "strategy.rl_policy_path"

__all__ = ["RLStrategy"]


class RLStrategy(TargetWeightsStrategy):
    """Trades a policy's target weights (module docstring)."""

    def __init__(
        self,
        cfg: StrategyConfig,
        policy: ExportedPolicy,
        strategy_id: str = "rl",
        wall_clock: Callable[[], int] = time.time_ns,
        limits: RiskConfig | None = None,
    ) -> None:
        meta = policy.meta
        # the schedule only names the symbols (no rows in force: weights_at below supplies each bar's weights)
        placeholder = WeightSchedule.from_array([0], meta.symbols, np.full((1, meta.n_assets), np.nan))
        super().__init__(cfg, placeholder, strategy_id, wall_clock, limits)
        self.policy = policy
        self.builder = ObservationBuilder(meta.symbols, meta.feature_names, meta.window)
        self._now: tuple[int, dict[str, float]] | None = None  # (bar ts, the policy's weights at it)
        self.decisions = 0

    @classmethod
    def from_config(cls, cfg: StrategyConfig, limits: RiskConfig | None = None) -> RLStrategy:
        """Load the export `strategy.rl_policy_path` names; a bad path is a ConfigError naming that field."""
        path = cfg.rl_policy_path
        if path is None:
            raise ConfigError(f"{FIELD}: required for strategy.name = 'rl' (a directory made by export_policy)")
        try:
            policy = load_policy(path)
        except ValueError as exc:
            raise ConfigError(f"{FIELD}: {str(exc).partition(': ')[2] or exc}") from None
        return cls(cfg, policy, limits=limits)

    def warm_up(self, batches: Iterable[pa.RecordBatch]) -> int:
        """Replay the bars up to a resume point into the observation history (no orders); the bars taken."""
        return self.builder.warm_up(batches)

    def target_weights(self, book: PortfolioSnapshot) -> dict[str, float]:
        """The policy's weights for the latest bar seen and `book`; {} during the warm-up."""
        obs = self.builder.observation({s: book.qty(s) for s in self.builder.symbols}, book.cash, book.equity)
        if obs is None:
            return {}
        w = self.policy.act(obs)[0]
        self.decisions += 1
        return dict(zip(self.builder.symbols, (float(x) for x in w), strict=True))

    def weights_at(self, ts_ns: int, symbols: Iterable[str]) -> dict[str, float]:
        """The policy's weights at `ts_ns` (computed in `on_bars`) for `symbols`, in their order."""
        if self._now is None or self._now[0] != ts_ns:
            return {}
        w = self._now[1]
        return {s: w[s] for s in symbols if s in w}

    def on_bars(
        self, bars: pa.RecordBatch, book: PortfolioSnapshot, working: Mapping[str, float]
    ) -> list[Order]:
        if bars.num_rows == 0:
            return []
        self.builder.update(bars)
        ts = batch_ts(bars)
        # a retried step (the latest bar again) decides again on the same history and book: the same orders
        self._now = (ts, self.target_weights(book)) if ts == self.builder.last_ts else None
        return super().on_bars(bars, book, working)
