"""Helpers every algorithm shares: parameter checks, whole-lot rounding, and the child spec under a parent's limit.

Kept in one place so the rules the brief fixes for all algorithms (never over-send, whole lots, LIMIT at the
parent's limit, nothing once done) are written once.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import NoReturn

from tradesys.core.orders import OrderType, TimeInForce
from tradesys.execution.algos.base import ChildSpec, MarketSlice, ParentOrder, ParentProgress

EPS = 1e-9  # the OMS's fill tolerance: quantities closer than this are equal


def fail(name: str, why: str, value: object) -> NoReturn:
    """Raise the one-line parameter error: the message starts with the parameter's name."""
    raise ValueError(f"{name}: {why}, got {value!r}")


def param_float(
    algo: str,
    params: Mapping[str, object],
    key: str,
    default: float,
    lo: float,
    hi: float,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> float:
    """A float parameter in [lo, hi] (open ends where asked); bools and non-numbers are refused."""
    value = params.get(key, default)
    name = f"{algo}.{key}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):  # numpy numbers too
        fail(name, "must be a number", value)
    v = float(value)  # type: ignore[arg-type]
    lo_bad = v <= lo if lo_open else v < lo
    hi_bad = v >= hi if hi_open else v > hi
    if not math.isfinite(v) or lo_bad or hi_bad:
        fail(name, f"must be in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}", value)
    return v


def param_int(algo: str, params: Mapping[str, object], key: str, default: int, lo: int, hi: int) -> int:
    """An integer parameter in [lo, hi] (a float with an integer value is accepted)."""
    value = params.get(key, default)
    name = f"{algo}.{key}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not float(value).is_integer():
        fail(name, "must be an integer", value)
    v = int(value)  # type: ignore[arg-type]
    if v < lo or v > hi:
        fail(name, f"must be in [{lo}, {hi}]", value)
    return v


def param_bool(algo: str, params: Mapping[str, object], key: str, default: bool) -> bool:
    value = params.get(key, default)
    if not isinstance(value, bool):
        fail(f"{algo}.{key}", "must be true or false", value)
    return bool(value)


def param_choice(algo: str, params: Mapping[str, object], key: str, default: str, choices: tuple[str, ...]) -> str:
    value = params.get(key, default)
    if not isinstance(value, str) or value not in choices:
        fail(f"{algo}.{key}", f"must be one of {', '.join(choices)}", value)
    return str(value)


def check_unknown(algo: str, params: Mapping[str, object], known: tuple[str, ...]) -> None:
    """An unknown key is refused: an accepted setting must do what it says."""
    for key in params:
        if key not in known:
            fail(f"{algo}.{key}", f"unknown parameter (known: {', '.join(known)})", params[key])


def check_parent(algo: str, parent: ParentOrder, *, needs_window: bool) -> None:
    """The parent fields an algorithm relies on: a positive finite quantity and, for scheduled algos, a window."""
    if not math.isfinite(parent.qty) or parent.qty <= 0:
        fail("parent.qty", "must be a positive number", parent.qty)
    if needs_window and parent.end_ns <= parent.start_ns:
        fail("parent.end_ns", f"must be after start_ns ({parent.start_ns}) for {algo}", parent.end_ns)


def sent(progress: ParentProgress) -> float:
    """Quantity already sent and not lost: filled plus still working."""
    return progress.filled_qty + progress.working_qty


def is_filled(parent: ParentOrder, progress: ParentProgress) -> bool:
    return progress.filled_qty >= parent.qty - EPS


def expired(parent: ParentOrder, market: MarketSlice) -> bool:
    """Past the window: a scheduled algorithm sends nothing after end_ns (its last slice completed the parent)."""
    return market.ts_ns > parent.end_ns


def child_qty(parent: ParentOrder, progress: ParentProgress, target: float, lot: float) -> float:
    """The child that brings sent quantity up to `target`, in whole lots, never past the parent's quantity.

    A target at (or above) the parent's quantity sends the exact remainder, odd lot included, so the parent
    completes; below it the child is rounded down to whole lots.
    """
    remaining = progress.remaining(parent)
    if remaining <= EPS:
        return 0.0
    if target >= parent.qty - EPS:
        return remaining
    want = target - sent(progress)
    if want <= EPS:
        return 0.0
    lots = math.floor(want / lot + EPS)
    return min(lots * lot, remaining)


def spec(parent: ParentOrder, qty: float, *, min_qty: float = 0.0, display_qty: float | None = None) -> ChildSpec:
    """A child of `qty`: MARKET, or LIMIT at the parent's limit when it has one (never trade through it).

    `min_qty` (a minimum-quantity order) is capped at the child's own quantity, so a small last child stays valid.
    """
    mq = min(min_qty, qty)
    if parent.limit_price is not None:
        return ChildSpec(
            qty=qty,
            type=OrderType.LIMIT,
            limit_price=parent.limit_price,
            tif=TimeInForce.DAY,
            min_qty=mq,
            display_qty=display_qty,
        )
    return ChildSpec(qty=qty, min_qty=mq, display_qty=display_qty)


def one(parent: ParentOrder, qty: float, min_qty: float = 0.0) -> list[ChildSpec]:
    """Zero or one child."""
    return [spec(parent, qty, min_qty=min_qty)] if qty > EPS else []


def common_params(algo: str, params: Mapping[str, object]) -> tuple[float, float]:
    """(lot, min_qty): the two parameters every algorithm takes."""
    lot = param_float(algo, params, "lot", 1.0, 0.0, 1e12, lo_open=True)
    min_qty = param_float(algo, params, "min_qty", 0.0, 0.0, 1e15)
    return lot, min_qty


COMMON = ("lot", "min_qty")
