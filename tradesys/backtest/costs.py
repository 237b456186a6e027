"""The SimBroker cost model and the strategies' sizing rules as array functions (pure numpy, no Ray, no I/O).

The vectorised backtest engine and the RL environment book trades with these, so research, training and the
event-driven loop (`tradesys.broker.sim.SimBroker`, `tradesys.strategy.sizing`) charge the same costs and size
the same way. Every function broadcasts: arrays may be one bar's cross-section (symbols), a whole run (bars x
symbols), or carry a leading batch axis of independent episodes (episodes x bars x symbols); the "symbols" axis
is always the last one. Each formula is written in the same floating-point order as its scalar original, so
values agree bit for bit, not just to a tolerance.

Conventions
    * side / signed quantity: > 0 buys, < 0 sells, 0 no trade;
    * NaN weight: no opinion for that symbol at that bar (no order);
    * NaN volume: unknown volume, no participation cap (liquidity +inf); negative volume counts as zero.

SimBroker rules reproduced here (see its module docstring):
    * a MARKET order submitted after bar t fills at once at close_t * (1 + slip) for a buy, close_t * (1 - slip)
      for a sell, slip = slippage_bps / 1e4; a resting DAY remainder fills in bar t+1 at open * (1 +/- slip);
    * the fill quantity is min(leaves, liquidity left), liquidity = participation_cap * volume per symbol per
      bar, shared by every fill in that bar; liquidity <= 1e-9 counts as none;
    * fee per fill = max(fee_min, fee_bps / 1e4 * qty * price, 0).

Sizing rules reproduced here (`tradesys.strategy.sizing`):
    * target = whole shares toward zero of |w| * equity / price, clipped to max_position_notional / price;
    * trade only if the book (position + working) is off target by at least rebalance_band * |target|, or the
      target is 0 and the book is not; the order is clipped (not split) to max_order_qty and to
      max_order_notional at the price (whole shares);
    * `scale_to_leverage`: one factor per bar so sum|w| <= 0.98 * max_gross and |sum w| <= 0.98 * max_net.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tradesys.config import BrokerConfig, ConfigError, RiskConfig

__all__ = [
    "FILL_EPS",
    "CostModel",
    "SizingLimits",
    "bar_liquidity",
    "capped_qty",
    "fees",
    "fill_price",
    "order_qty",
    "scale_to_leverage",
    "target_shares",
]

FILL_EPS = 1e-9  # the venue's tolerance: liquidity below this is none; an order within this of its qty is filled


@dataclass(frozen=True, slots=True)
class CostModel:
    """The venue's cost parameters (BrokerConfig's), with the derived rates the formulas use."""

    fee_bps: float = 0.5
    fee_min: float = 0.0
    slippage_bps: float = 2.0
    participation_cap: float = 0.10

    def __post_init__(self) -> None:
        for name in ("fee_bps", "fee_min", "slippage_bps"):
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):
                raise ConfigError(f"broker.{name}: must be a finite number >= 0, got {v!r}")
        if not (0 < self.participation_cap <= 1):
            raise ConfigError(f"broker.participation_cap: must be in (0, 1], got {self.participation_cap!r}")

    @classmethod
    def from_config(cls, cfg: BrokerConfig) -> CostModel:
        """The flat model only: every user of these formulas (vectorised engine, walk-forward, RL environment)
        refuses the square-root impact it does not model."""
        if cfg.impact != "flat":
            raise ConfigError(f"broker.impact: the vectorised cost model (vectorised backtests, walk-forward, the RL "
                              f"environment) is flat only, got {cfg.impact!r}; sqrt impact runs on the event engine")
        if cfg.kind == "routed":
            raise ConfigError("broker.kind: the vectorised engine models one simulated venue, not 'routed' venues; "
                              "use the event engine (--engine event or auto)")
        return cls(cfg.fee_bps, cfg.fee_min, cfg.slippage_bps, cfg.participation_cap)

    @property
    def slip(self) -> float:
        """Slippage as a fraction of the price (the venue's `_slip`)."""
        return self.slippage_bps / 1e4

    @property
    def fee_rate(self) -> float:
        """Fee as a fraction of notional (the venue's `_fee_rate`)."""
        return self.fee_bps / 1e4

    def fill_price(self, ref: np.ndarray | float, side: np.ndarray | float) -> np.ndarray:
        return fill_price(ref, side, self.slip)

    def fees(self, qty: np.ndarray | float, price: np.ndarray | float) -> np.ndarray:
        return fees(qty, price, self.fee_rate, self.fee_min)

    def liquidity(self, volume: np.ndarray | float) -> np.ndarray:
        return bar_liquidity(volume, self.participation_cap)


@dataclass(frozen=True, slots=True)
class SizingLimits:
    """The RiskConfig limits the strategies size within (inf: no limit), plus the strategy's rebalance band."""

    rebalance_band: float = 0.25
    max_position_notional: float = math.inf
    max_order_qty: float = math.inf
    max_order_notional: float = math.inf
    max_gross_leverage: float | None = None
    max_net_leverage: float | None = None

    @classmethod
    def from_config(cls, rebalance_band: float, limits: RiskConfig | None) -> SizingLimits:
        """What `rebalance_order` / `scale_to_leverage` use for `limits` (None: the strategy's own rules only)."""
        if limits is None:
            return cls(rebalance_band)
        return cls(
            rebalance_band,
            limits.max_position_notional,
            limits.max_order_qty,
            limits.max_order_notional,
            limits.max_gross_leverage,
            limits.max_net_leverage,
        )


def fill_price(ref: np.ndarray | float, side: np.ndarray | float, slip: float) -> np.ndarray:
    """The fill price of a market order against reference price `ref` (close on submit, open when resting):
    ref * (1 + slip) for a buy (side > 0), ref * (1 - slip) otherwise."""
    ref = np.asarray(ref, dtype=float)
    return np.where(np.asarray(side) > 0, ref * (1.0 + slip), ref * (1.0 - slip))


def fees(qty: np.ndarray | float, price: np.ndarray | float, fee_rate: float, fee_min: float) -> np.ndarray:
    """Fee per fill: max(fee_min, fee_rate * |qty| * price, 0); 0 where nothing fills (qty == 0)."""
    q = np.abs(np.asarray(qty, dtype=float))
    fee = np.maximum(np.maximum(fee_min, fee_rate * q * np.asarray(price, dtype=float)), 0.0)
    return np.where(q > 0, fee, 0.0)


def bar_liquidity(volume: np.ndarray | float, participation_cap: float) -> np.ndarray:
    """Quantity a bar can fill per symbol: participation_cap * max(volume, 0); +inf where volume is NaN."""
    v = np.asarray(volume, dtype=float)
    return np.where(np.isnan(v), np.inf, participation_cap * np.maximum(v, 0.0))


def capped_qty(want: np.ndarray | float, liquidity: np.ndarray | float) -> np.ndarray:
    """The quantity that fills of `want` (>= 0) given the liquidity left: min(want, liquidity), or 0 where the
    liquidity is at most FILL_EPS."""
    w = np.asarray(want, dtype=float)
    liq = np.asarray(liquidity, dtype=float)
    return np.where(liq > FILL_EPS, np.minimum(w, liq), 0.0)


def target_shares(
    weights: np.ndarray | float,
    equity: np.ndarray | float,
    price: np.ndarray | float,
    max_position_notional: float = math.inf,
) -> np.ndarray:
    """Signed whole-share targets: floor(min(|w| * equity / price, max_position_notional / price)) * sign(w),
    with sign(0) = +1 (as `rebalance_order`). `equity` broadcasts against the symbols axis (give it a trailing
    axis of length 1 for per-bar equity). NaN weights give NaN targets."""
    w = np.asarray(weights, dtype=float)
    px = np.asarray(price, dtype=float)
    size = np.abs(w) * np.asarray(equity, dtype=float) / px
    if math.isfinite(max_position_notional):
        size = np.minimum(size, max_position_notional / px)
    return np.floor(size) * np.where(w >= 0, 1.0, -1.0) + np.where(np.isnan(w), np.nan, 0.0)


def order_qty(
    target: np.ndarray | float,
    have: np.ndarray | float,
    price: np.ndarray | float,
    limits: SizingLimits,
) -> np.ndarray:
    """Signed order quantity that moves `have` (position + working) toward `target`, 0 for no order.

    No order when already on target, or when the target is not 0 and |target - have| < band * |target|; else
    |target - have| clipped to floor(max_order_qty) and floor(max_order_notional / price * (1 - 1e-12)).
    NaN targets give 0."""
    t = np.asarray(target, dtype=float)
    diff = t - np.asarray(have, dtype=float)
    px = np.asarray(price, dtype=float)
    within = (diff == 0) | ((t != 0) & (np.abs(diff) < limits.rebalance_band * np.abs(t))) | np.isnan(diff)
    qty = np.abs(diff)
    if math.isfinite(limits.max_order_qty):
        qty = np.minimum(qty, math.floor(limits.max_order_qty))
    if math.isfinite(limits.max_order_notional):
        qty = np.minimum(qty, np.floor(limits.max_order_notional / px * (1 - 1e-12)))
    qty = np.where(within | ~(qty > 0), 0.0, qty)
    return np.where(diff > 0, qty, -qty) + 0.0  # + 0.0: no -0.0


def scale_to_leverage(
    weights: np.ndarray, max_gross: float | None = None, max_net: float | None = None
) -> np.ndarray:
    """Weights scaled per bar (over the last axis) by one factor so sum|w| <= 0.98 * max_gross and
    |sum w| <= 0.98 * max_net; NaN weights are left out of the sums and stay NaN (`sizing.scale_to_leverage`).

    The sums run left to right (a cumulative sum), like Python's `sum`, so the factor is bit-identical."""
    w = np.asarray(weights, dtype=float)
    if w.size == 0 or (max_gross is None and max_net is None):
        return w.copy()
    finite = np.where(np.isnan(w), 0.0, w)
    gross = np.cumsum(np.abs(finite), axis=-1)[..., -1:]
    net = np.abs(np.cumsum(finite, axis=-1)[..., -1:])
    factor = np.ones_like(gross)
    with np.errstate(divide="ignore", invalid="ignore"):
        if max_gross is not None:
            g = 0.98 * max_gross
            factor = np.where(gross > g, np.minimum(factor, g / gross), factor)
        if max_net is not None:
            n = 0.98 * max_net
            factor = np.where(net > n, np.minimum(factor, n / net), factor)
    return np.where(factor < 1.0, w * factor, w)
