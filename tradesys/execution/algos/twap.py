"""TWAP: the parent in equal slices of the window, optionally with seeded random slice sizes.

The window [start_ns, end_ns] is cut into `slices` equal intervals; at a slice point in interval k (0-based) the
cumulative target is the parent quantity times the schedule's cumulative fraction through interval k, and the
child is the gap between that target and what is already filled or working. So a child that was lost or only
partly filled is caught up at the next slice point, and the last interval's first slice point sends the exact
remainder (the last slice completes the parent). Jitter scales interval k's weight by 1 + jitter * u_k with u_k
uniform in [-1, 1) from `numpy.random.default_rng` seeded by (parent id, k): a restarted actor draws the same
schedule.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from tradesys.execution.algos._common import (
    COMMON,
    check_parent,
    check_unknown,
    child_qty,
    common_params,
    expired,
    is_filled,
    one,
    param_float,
    param_int,
)
from tradesys.execution.algos.base import ChildSpec, MarketSlice, ParentOrder, ParentProgress


def parent_seed(parent_id: str) -> int:
    """A stable 64-bit seed from the parent id (Python's `hash` is salted per process, so it would not do)."""
    return int.from_bytes(hashlib.blake2b(parent_id.encode(), digest_size=8).digest(), "little")


def slice_index(parent: ParentOrder, ts_ns: int, slices: int) -> int:
    """The 0-based interval of the window that `ts_ns` falls in, clipped to [0, slices - 1] (-1 before start)."""
    if ts_ns < parent.start_ns:
        return -1
    k = (int(ts_ns) - int(parent.start_ns)) * slices // (int(parent.end_ns) - int(parent.start_ns))  # exact ints
    return int(min(k, slices - 1))


@functools.lru_cache(maxsize=4096)
def twap_schedule(parent_id: str, slices: int, jitter: float) -> np.ndarray:
    """Cumulative fraction of the parent to have sent by the end of each interval (length `slices`, last = 1).

    Cached (a parent asks for it at every slice point) and read-only, since the cache hands out the same array."""
    weights = np.ones(slices)
    if jitter > 0.0:
        seed = parent_seed(parent_id)
        u = np.array([np.random.default_rng([seed, k]).uniform(-1.0, 1.0) for k in range(slices)])
        weights = 1.0 + jitter * u
    cum = np.cumsum(weights) / weights.sum()
    cum[-1] = 1.0
    cum.flags.writeable = False
    return cum


@dataclass(frozen=True, slots=True)
class TwapAlgo:
    """Equal slices over the window (see the module docstring); `jitter` in [0, 1) randomises their sizes."""

    slices: int = 10
    jitter: float = 0.0
    lot: float = 1.0
    min_qty: float = 0.0
    name: str = "twap"

    @classmethod
    def from_params(cls, params: Mapping[str, object]) -> TwapAlgo:
        check_unknown("twap", params, ("slices", "jitter", *COMMON))
        lot, min_qty = common_params("twap", params)
        return cls(
            slices=param_int("twap", params, "slices", 10, 1, 1_000_000),
            jitter=param_float("twap", params, "jitter", 0.0, 0.0, 1.0, hi_open=True),
            lot=lot,
            min_qty=min_qty,
        )

    def target(self, parent: ParentOrder, ts_ns: int) -> float:
        """Cumulative quantity the schedule wants sent by a slice point at `ts_ns`."""
        k = slice_index(parent, ts_ns, self.slices)
        if k < 0:
            return 0.0
        return float(parent.qty * twap_schedule(parent.parent_id, self.slices, self.jitter)[k])

    def children(self, parent: ParentOrder, progress: ParentProgress, market: MarketSlice) -> list[ChildSpec]:
        check_parent(self.name, parent, needs_window=True)
        if self.done(parent, progress, market) or market.ts_ns < parent.start_ns:
            return []
        return one(parent, child_qty(parent, progress, self.target(parent, market.ts_ns), self.lot), self.min_qty)

    def done(self, parent: ParentOrder, progress: ParentProgress, market: MarketSlice) -> bool:
        return is_filled(parent, progress) or expired(parent, market)
