"""Rebalancing triggers and the trade list back to target weights.

Why: a target allocation drifts as prices move; trading it back every day costs more than the drift does.
Three standard triggers, any of which fires a rebalance:

* calendar: a new period (day/week/month/quarter/year) has started since the last rebalance, or a fixed number
  of calendar days has elapsed;
* drift: an asset's weight is outside its band around target, absolute |w - t| > abs_band (e.g. 0.05) or
  relative |w - t| > rel_band * |t| (e.g. 0.25: the "5/25" rule uses both, either breaching);
* risk: an asset's share of portfolio variance, w_i (Sigma w)_i / (w' Sigma w), is more than risk_band away
  from its budget (the target's own risk shares unless budgets are given), which catches correlation shifts
  that leave weights in band.

Weights are fractions of portfolio value (cash is what the weights do not cover). When a rebalance fires, every
asset trades to target except trades smaller than `min_trade` (weight) or `min_trade_value` (currency, needs
portfolio_value); those residuals are left, so after the trades the portfolio is within min_trade of target.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd

from tradesys.quant.portfolio.optimize import validate_cov

_PERIODS = {
    "D": "D", "daily": "D", "day": "D",
    "W": "W", "weekly": "W", "week": "W",
    "M": "M", "monthly": "M", "month": "M",
    "Q": "Q", "quarterly": "Q", "quarter": "Q",
    "Y": "Y", "A": "Y", "annual": "Y", "yearly": "Y", "year": "Y",
}  # fmt: skip


def _weights(spec: Any, field_name: str) -> pd.Series:
    if isinstance(spec, pd.Series | Mapping):
        s = pd.Series(spec, dtype=float)
        s.index = [str(i) for i in s.index]
    else:
        raise ValueError(f"{field_name}: must be a mapping or Series of weights by asset name")
    if s.index.has_duplicates:
        raise ValueError(f"{field_name}: duplicate asset names")
    if not np.isfinite(s.to_numpy()).all():
        bad = s.index[~np.isfinite(s.to_numpy())][0]
        raise ValueError(f"{field_name}: NaN or infinite weight for {bad}")
    return s


def weights_from_positions(
    quantities: Mapping[str, float], prices: Mapping[str, float], cash: float = 0.0
) -> pd.Series:
    """Weights of net asset value (positions at price plus cash) from share quantities and prices."""
    q = _weights(quantities, "quantities")
    p = _weights(prices, "prices")
    missing = [a for a in q.index if a not in p.index]
    if missing:
        raise ValueError(f"prices: missing for {missing[:5]}")
    value = q * p.reindex(q.index)
    nav = float(value.sum()) + float(cash)
    if not nav > 0:
        raise ValueError("quantities: net asset value must be > 0")
    return value / nav


def calendar_due(last_rebalance: Any, today: Any, frequency: str | int) -> bool:
    """True when `today` is in a later period than `last_rebalance` (or >= `frequency` calendar days later)."""
    last = pd.Timestamp(last_rebalance)
    now = pd.Timestamp(today)
    if pd.isna(last) or pd.isna(now):
        raise ValueError("last_rebalance: both dates must be valid")
    if now < last:
        raise ValueError("today: is before last_rebalance")
    if isinstance(frequency, int | np.integer) and not isinstance(frequency, bool):
        if frequency <= 0:
            raise ValueError("frequency: number of days must be > 0")
        return (now.normalize() - last.normalize()).days >= int(frequency)
    freq = _PERIODS.get(str(frequency))
    if freq is None:
        raise ValueError(f"frequency: unknown {frequency!r} (daily, weekly, monthly, quarterly, annual or days)")
    return pd.Period(now, freq=freq) != pd.Period(last, freq=freq)


def drift_breaches(
    current: Any, target: Any, *, abs_band: float | None = None, rel_band: float | None = None
) -> pd.DataFrame:
    """Per asset: current, target, drift (current - target) and whether an absolute or relative band is breached."""
    if abs_band is None and rel_band is None:
        raise ValueError("abs_band: give abs_band and/or rel_band")
    for name, band in (("abs_band", abs_band), ("rel_band", rel_band)):
        if band is not None and not (band >= 0 and math.isfinite(band)):
            raise ValueError(f"{name}: must be a finite number >= 0")
    cur = _weights(current, "current_weights")
    tgt = _weights(target, "target_weights")
    assets = list(dict.fromkeys([*tgt.index, *cur.index]))
    c = cur.reindex(assets, fill_value=0.0)
    t = tgt.reindex(assets, fill_value=0.0)
    drift = c - t
    breach = pd.Series(False, index=assets)
    if abs_band is not None:
        breach |= drift.abs() > abs_band
    if rel_band is not None:
        breach |= drift.abs() > rel_band * t.abs()
    return pd.DataFrame({"current": c, "target": t, "drift": drift, "breach": breach})


def risk_share_drift(current: Any, cov: Any, budgets: Any) -> pd.Series:
    """Current share of portfolio variance per asset minus its budget (budgets normalised to sum 1)."""
    sigma, names = validate_cov(cov)
    w = _weights(current, "current_weights").reindex(names, fill_value=0.0).to_numpy()
    b = _weights(budgets, "risk_budgets").reindex(names, fill_value=0.0).to_numpy()
    if b.sum() <= 0:
        raise ValueError("risk_budgets: must sum to > 0")
    m = sigma @ w
    total = float(w @ m)
    if total <= 0:
        raise ValueError("current_weights: portfolio variance is zero")
    return pd.Series(w * m / total - b / b.sum(), index=names)


@dataclass(frozen=True)
class RebalancePolicy:
    """Which triggers are on and the minimum trade size. Leave a trigger None to switch it off."""

    frequency: str | int | None = None
    abs_band: float | None = None
    rel_band: float | None = None
    risk_band: float | None = None
    risk_budgets: Mapping[str, float] | pd.Series | None = None
    min_trade: float = 0.0
    min_trade_value: float = 0.0


@dataclass(frozen=True)
class Trade:
    asset: str
    side: str  # "buy" or "sell"
    current_weight: float
    target_weight: float
    weight_change: float
    value: float = float("nan")  # currency, when portfolio_value is known


@dataclass(frozen=True)
class RebalanceDecision:
    """Whether to trade, why, the trades to target, and the trades skipped as smaller than the minimum.

    `rebalance` is True when a trigger fired and at least one trade is above the minimum size; `reasons` lists
    every trigger that fired either way.
    """

    rebalance: bool
    reasons: tuple[str, ...]
    trades: tuple[Trade, ...]
    skipped: tuple[str, ...] = ()
    drift: pd.Series = field(default_factory=lambda: pd.Series(dtype=float))

    def trades_frame(self) -> pd.DataFrame:
        cols = ["asset", "side", "current_weight", "target_weight", "weight_change", "value"]
        return pd.DataFrame([t.__dict__ for t in self.trades], columns=cols)

    def to_dict(self) -> dict[str, Any]:
        def num(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None

        return {
            "rebalance": self.rebalance,
            "reasons": list(self.reasons),
            "trades": [
                {k: (num(v) if isinstance(v, float) else v) for k, v in t.__dict__.items()} for t in self.trades
            ],
            "skipped": list(self.skipped),
            "drift": {k: num(v) for k, v in self.drift.items()},
        }


def check_rebalance(
    current_weights: Any,
    target_weights: Any,
    policy: RebalancePolicy,
    *,
    cov: Any = None,
    last_rebalance: date | datetime | str | None = None,
    today: date | datetime | str | None = None,
    portfolio_value: float | None = None,
) -> RebalanceDecision:
    """Evaluate every trigger in `policy`; if any fires, return the trades that bring weights to target."""
    if policy.min_trade < 0 or policy.min_trade_value < 0:
        raise ValueError("min_trade: must be >= 0")
    if portfolio_value is not None and not (portfolio_value > 0 and math.isfinite(portfolio_value)):
        raise ValueError("portfolio_value: must be a positive finite number")
    if policy.min_trade_value > 0 and portfolio_value is None:
        raise ValueError("portfolio_value: needed for min_trade_value")
    cur = _weights(current_weights, "current_weights")
    tgt = _weights(target_weights, "target_weights")
    assets = list(dict.fromkeys([*tgt.index, *cur.index]))
    c = cur.reindex(assets, fill_value=0.0)
    t = tgt.reindex(assets, fill_value=0.0)
    reasons: list[str] = []

    if policy.frequency is not None:
        if last_rebalance is None or today is None:
            raise ValueError("last_rebalance: calendar trigger needs last_rebalance and today")
        if calendar_due(last_rebalance, today, policy.frequency):
            reasons.append(f"calendar: new {policy.frequency} period since {pd.Timestamp(last_rebalance).date()}")

    if policy.abs_band is not None or policy.rel_band is not None:
        table = drift_breaches(c, t, abs_band=policy.abs_band, rel_band=policy.rel_band)
        for asset in table.index[table["breach"]]:
            cur_w, tgt_w = table.at[asset, "current"], table.at[asset, "target"]
            reasons.append(f"drift: {asset} at {cur_w:.4f} vs target {tgt_w:.4f}")

    if policy.risk_band is not None:
        if cov is None:
            raise ValueError("cov: risk-contribution trigger needs the covariance matrix")
        sigma, names = validate_cov(cov)
        extra = [a for a in assets if a not in names]
        if extra:
            raise ValueError(f"cov: missing assets {extra[:5]}")
        if policy.risk_budgets is not None:
            budgets = _weights(policy.risk_budgets, "risk_budgets")
        else:
            tw = t.reindex(names, fill_value=0.0).to_numpy()
            m = sigma @ tw
            budgets = pd.Series(tw * m / float(tw @ m), index=names)
        cov_df = pd.DataFrame(sigma, index=names, columns=names)
        rdrift = risk_share_drift(c.reindex(names, fill_value=0.0), cov_df, budgets)
        for asset in rdrift.index[rdrift.abs() > policy.risk_band]:
            reasons.append(f"risk: {asset} risk share off budget by {rdrift[asset]:+.4f}")

    drift = c - t
    if not reasons:
        return RebalanceDecision(False, (), (), (), drift)
    trades: list[Trade] = []
    skipped: list[str] = []
    for asset in assets:
        dw = float(t[asset] - c[asset])
        if dw == 0.0:
            continue
        value = dw * portfolio_value if portfolio_value is not None else float("nan")
        if abs(dw) < policy.min_trade or (policy.min_trade_value > 0 and abs(value) < policy.min_trade_value):
            skipped.append(asset)
            continue
        trades.append(Trade(asset, "buy" if dw > 0 else "sell", float(c[asset]), float(t[asset]), dw, value))
    # triggers can fire while every trade is below the minimum size: then there is nothing to do
    return RebalanceDecision(bool(trades), tuple(reasons), tuple(trades), tuple(skipped), drift)
