"""VWAP: trade along a *predicted* intraday volume curve, so the child sizes follow the market's usual rhythm.

`VolumeCurve.fit(bars)` estimates, from past sessions, the fraction of a session's volume that each bar-of-day
carries (the median, or mean, over the last `sessions` sessions of each session's volume share), and
`VwapAlgo` sends, at a slice point stamped t, enough to bring the parent's sent quantity up to

    qty * (curve volume of the bars-of-day in [start_ns, t]) / (curve volume of those in [start_ns, end_ns]).

Bars are stamped at their end, and a child sent at a slice point trades against that bar or the next, so the
bar at t counts as done at t. The window's last bar-of-day sends the exact remainder (the parent completes). Times
of day are UTC; a session must not straddle midnight UTC (true of the US equity session, 14:30-21:00 UTC).
The `curve` parameter is a `VolumeCurve` or its `to_json()` string (a plain value, so it can travel in an order's
`algo_params` and be stored with the parent). Without a curve the schedule is linear in time
over the window (a continuous TWAP).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tradesys.execution.algos._common import (
    COMMON,
    check_parent,
    check_unknown,
    child_qty,
    common_params,
    expired,
    fail,
    is_filled,
    one,
)
from tradesys.execution.algos.base import ChildSpec, MarketSlice, ParentOrder, ParentProgress

DAY_NS = 86_400 * 10**9

BarsLike = pa.Table | pa.RecordBatch | Iterable[pa.RecordBatch]


def _columns(bars: BarsLike, symbol: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ts ns, symbol codes, volume) of the bars, filtered to `symbol` when given."""
    if isinstance(bars, pa.RecordBatch):
        table = pa.Table.from_batches([bars])
    elif isinstance(bars, pa.Table):
        table = bars
    else:
        batches = list(bars)
        if not batches:
            fail("bars", "must hold at least one bar", bars)
        table = pa.Table.from_batches(batches)
    for col in ("ts", "symbol", "volume"):
        if col not in table.column_names:
            fail("bars", f"missing column {col!r}", table.column_names)
    if symbol is not None:
        table = table.filter(pc.equal(table["symbol"], symbol))
    ts = pc.cast(table["ts"], pa.int64()).to_numpy()
    sym = pc.dictionary_encode(table["symbol"]).combine_chunks().indices.to_numpy(zero_copy_only=False)
    vol = table["volume"].to_numpy()
    return np.asarray(ts, np.int64), np.asarray(sym, np.int64), np.asarray(vol, np.float64)


@dataclass(frozen=True)
class VolumeCurve:
    """Fraction of a session's volume per bar-of-day: `tod_ns` (bar stamps as ns since midnight UTC, ascending)
    and `fraction` (same length, summing to 1)."""

    tod_ns: tuple[int, ...]
    fraction: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.tod_ns) != len(self.fraction) or not self.tod_ns:
            sizes = (len(self.tod_ns), len(self.fraction))
            fail("curve", "needs as many fractions as bars-of-day, at least one", sizes)
        tod = np.asarray(self.tod_ns, np.int64)
        frac = np.asarray(self.fraction, np.float64)
        if np.any(np.diff(tod) <= 0) or tod[0] < 0 or tod[-1] >= DAY_NS:
            fail("curve.tod_ns", "must be strictly increasing times within a day", self.tod_ns[:3])
        if not np.all(np.isfinite(frac)) or np.any(frac < 0) or abs(frac.sum() - 1.0) > 1e-9:
            fail("curve.fraction", "must be non-negative and sum to 1", float(frac.sum()))
        object.__setattr__(self, "_tod", tod)  # frozen: cached arrays for the per-slice look-ups
        object.__setattr__(self, "_cum", np.concatenate([[0.0], np.cumsum(frac)]))

    @classmethod
    def fit(cls, bars: BarsLike, *, symbol: str | None = None, sessions: int = 20, stat: str = "median") -> VolumeCurve:
        """The curve from past bars (BAR_SCHEMA): each session's (symbol, UTC date) volume share per bar-of-day,
        then the `stat` (median or mean) over the last `sessions` sessions, renormalised to sum to 1.

        With `symbol` None every symbol's sessions are pooled. A bar-of-day missing from a session counts as zero
        volume in it; NaN volume (unknown) is treated the same; sessions with no volume are skipped.
        """
        if isinstance(sessions, bool) or not isinstance(sessions, int) or sessions < 1:
            fail("sessions", "must be an integer >= 1", sessions)
        if stat not in ("median", "mean"):
            fail("stat", "must be median or mean", stat)
        ts, sym, vol = _columns(bars, symbol)
        vol = np.where(np.isfinite(vol) & (vol > 0), vol, 0.0)
        day, tod = ts // DAY_NS, ts % DAY_NS
        tods, tod_idx = np.unique(tod, return_inverse=True)
        keys = np.stack([day, sym], axis=1)
        sess, sess_idx = np.unique(keys, axis=0, return_inverse=True)
        sess_idx = sess_idx.ravel()
        grid = np.zeros((len(sess), len(tods)))
        np.add.at(grid, (sess_idx, tod_idx), vol)
        totals = grid.sum(axis=1)
        keep = totals > 0
        grid, days = grid[keep], sess[keep, 0]
        if len(grid) == 0:
            fail("bars", "carry no volume to fit a curve", len(ts))
        last_days = np.unique(days)[-sessions:]
        shares = grid[np.isin(days, last_days)]
        shares = shares / shares.sum(axis=1, keepdims=True)
        est = np.median(shares, axis=0) if stat == "median" else shares.mean(axis=0)
        if est.sum() <= 0:
            est = shares.mean(axis=0)
        est = est / est.sum()
        return cls(tod_ns=tuple(int(t) for t in tods), fraction=tuple(float(f) for f in est))

    def to_json(self) -> str:
        """The curve as a JSON string: a plain parameter value, so it can ride in `Order.algo_params` and in the
        ledger's parent row (a restarted actor then rebuilds the very same schedule)."""
        return json.dumps({"tod_ns": list(self.tod_ns), "fraction": list(self.fraction)}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> VolumeCurve:
        """The curve `to_json` wrote; ValueError (naming `curve`) for anything else."""
        try:
            raw = json.loads(text)
            return cls(tod_ns=tuple(int(t) for t in raw["tod_ns"]), fraction=tuple(float(f) for f in raw["fraction"]))
        except (TypeError, KeyError, json.JSONDecodeError) as exc:
            raise ValueError(f"curve: not a VolumeCurve JSON ({exc})") from None

    def cumulative(self, ts_ns: int) -> float:
        """Curve volume of every bar stamped at or before `ts_ns` since the epoch, in sessions (a day counts 1)."""
        day, tod = divmod(int(ts_ns), DAY_NS)
        k = int(np.searchsorted(self._tod, tod, side="right"))  # type: ignore[attr-defined]
        return day + float(self._cum[k])  # type: ignore[attr-defined]

    def window_fraction(self, start_ns: int, end_ns: int, ts_ns: int) -> float:
        """Share of the window [start_ns, end_ns]'s curve volume in bars stamped in [start_ns, ts_ns] (NaN if the
        window holds no curve volume)."""
        base = self.cumulative(start_ns - 1)
        total = self.cumulative(end_ns) - base
        if total <= 1e-15:
            return float("nan")
        return min(max((self.cumulative(min(ts_ns, end_ns)) - base) / total, 0.0), 1.0)


@dataclass(frozen=True, slots=True)
class VwapAlgo:
    """Cumulative target = qty * the curve's cumulative share of the window (see the module docstring)."""

    curve: VolumeCurve | None = None
    lot: float = 1.0
    min_qty: float = 0.0
    name: str = "vwap"

    @classmethod
    def from_params(cls, params: Mapping[str, object]) -> VwapAlgo:
        check_unknown("vwap", params, ("curve", *COMMON))
        curve = params.get("curve")
        if isinstance(curve, str):
            try:
                curve = VolumeCurve.from_json(curve)
            except ValueError as exc:
                raise ValueError(f"vwap.{exc}") from None
        if curve is not None and not isinstance(curve, VolumeCurve):
            fail("vwap.curve", "must be a VolumeCurve or its to_json() string", type(curve).__name__)
        lot, min_qty = common_params("vwap", params)
        return cls(curve=curve, lot=lot, min_qty=min_qty)

    def target_fraction(self, parent: ParentOrder, ts_ns: int) -> float:
        """Share of the parent the schedule wants sent by a slice point at `ts_ns`."""
        if ts_ns < parent.start_ns:
            return 0.0
        if self.curve is not None:
            f = self.curve.window_fraction(parent.start_ns, parent.end_ns, ts_ns)
            if f == f:  # not NaN: the window holds curve volume
                return f
        return min((ts_ns - parent.start_ns) / (parent.end_ns - parent.start_ns), 1.0)

    def children(self, parent: ParentOrder, progress: ParentProgress, market: MarketSlice) -> list[ChildSpec]:
        check_parent(self.name, parent, needs_window=True)
        if self.done(parent, progress, market) or market.ts_ns < parent.start_ns:
            return []
        target = parent.qty * self.target_fraction(parent, market.ts_ns)
        return one(parent, child_qty(parent, progress, target, self.lot), self.min_qty)

    def done(self, parent: ParentOrder, progress: ParentProgress, market: MarketSlice) -> bool:
        return is_filled(parent, progress) or expired(parent, market)


class VolumeHistory:
    """The bars' volumes of the last `sessions` completed sessions, per symbol, for the curve a VWAP parent is
    given when its strategy names none.

    Why here: the execution service sees every bar, so it can predict the curve from what it saw, with no look-ahead
    (only UTC days before the parent's decision day count). A restarted Execution actor warms it from the same bars
    (`warm_up`), so a parent created after a restart gets the curve an undisturbed run would have given it; a
    parent created before keeps the curve stored in its ledger row.
    """

    def __init__(self, sessions: int = 20) -> None:
        self.sessions = sessions
        self._ts: dict[str, list[int]] = {}
        self._vol: dict[str, list[float]] = {}
        self._cache: dict[tuple[str, int], str | None] = {}

    def observe(self, bars: pa.RecordBatch) -> None:
        if bars.num_rows == 0 or "volume" not in bars.schema.names:
            return
        ts = pc.cast(bars.column("ts"), pa.int64()).to_pylist()
        for t, s, v in zip(ts, bars.column("symbol").to_pylist(), bars.column("volume").to_pylist(), strict=True):
            if t is None or s is None:
                continue
            tl, vl = self._ts.setdefault(s, []), self._vol.setdefault(s, [])
            tl.append(int(t))
            vl.append(float("nan") if v is None else float(v))
            if len(tl) > 4096 and (tl[-1] - tl[0]) // DAY_NS > self.sessions + 1:
                self._trim(s)

    def _trim(self, symbol: str) -> None:
        tl, vl = self._ts[symbol], self._vol[symbol]
        first_day = tl[-1] // DAY_NS - (self.sessions + 1)
        k = int(np.searchsorted(np.asarray(tl, np.int64) // DAY_NS, first_day, side="left"))
        del tl[:k], vl[:k]

    def warm_up(self, batches: Iterable[pa.RecordBatch]) -> int:
        n = 0
        for b in batches:
            self.observe(b)
            n += 1
        return n

    def curve_json(self, symbol: str, ts_ns: int) -> str | None:
        """The fitted curve (`VolumeCurve.to_json()`) from the completed UTC days before `ts_ns`'s day, or None
        when those days carry no volume (daily data without volume, or no full day seen yet)."""
        day = int(ts_ns) // DAY_NS
        key = (symbol, day)
        if key in self._cache:
            return self._cache[key]
        tl = np.asarray(self._ts.get(symbol, []), np.int64)
        vl = np.asarray(self._vol.get(symbol, []), np.float64)
        past = tl // DAY_NS < day
        out: str | None = None
        if past.any() and np.nansum(np.where(vl[past] > 0, vl[past], 0.0)) > 0:
            table = pa.table({"ts": tl[past], "symbol": [symbol] * int(past.sum()), "volume": vl[past]})
            out = VolumeCurve.fit(table, sessions=self.sessions).to_json()
        self._cache = {k: v for k, v in self._cache.items() if k[1] == day}  # only today's fits are reused
        self._cache[key] = out
        return out
