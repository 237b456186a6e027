"""Walk-forward optimisation: parameters chosen in sample, then run on the next, unseen stretch of data.

Pure (no Ray, no I/O). The pieces:

- windows: `rolling_windows` (fixed-length in-sample windows, or `anchored=True`: expanding from the first bar)
  over a bar count, and `date_windows` over timestamps with calendar spans ("2Y", "6M"); out-of-sample windows
  tile the data after the first in-sample window, so their returns stitch into one out-of-sample history. `gap`
  bars between an in-sample end and its out-of-sample start belong to neither (a purge / embargo for positions or
  labels that span several bars).
- `walk_forward(evaluate, grid, windows, objective)`: in each window every parameter set in `grid` is evaluated
  on the in-sample bars only, the best by `objective` is run out of sample, and the result holds the chosen
  parameters per window, the stitched out-of-sample curve, the chained in-sample curve next to it, and the
  summary (OOS and IS Sharpe, degradation).
- look-ahead: `evaluate(params, start, end)` must return the per-bar returns of bars [start, end) using no
  bar at or after `end`. The selection for window k only ever calls it with `end <= oos_start_k - gap`, and every
  call is recorded (`WalkForwardResult.calls`, `check_no_lookahead`). `PanelEvaluator` turns a strategy over a
  data array into an evaluator that enforces the rule: `guard="truncate"` hands the strategy only the rows
  before `end` (it cannot read the future), `guard="perturb"` hands it the whole array and re-runs it with the
  rows from `end` on changed, raising `LookAheadError` if the returns for [start, end) move.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Params = Mapping[str, Any]
Evaluator = Callable[[Params, int, int], np.ndarray]
Strategy = Callable[[Params, np.ndarray, int, int], np.ndarray]
Objective = Callable[[np.ndarray], float]
Guard = Literal["truncate", "perturb", "none"]


class LookAheadError(ValueError):
    """A strategy's returns over [start, end) depend on data at or after `end`."""


# ---------------------------------------------------------------------------------------------------- windows
@dataclass(frozen=True, slots=True)
class Window:
    """One walk-forward step over bar indices: in sample [is_start, is_end), out of sample [oos_start, oos_end)."""

    index: int
    is_start: int
    is_end: int
    oos_start: int
    oos_end: int

    @property
    def gap(self) -> int:
        return self.oos_start - self.is_end

    @property
    def is_len(self) -> int:
        return self.is_end - self.is_start

    @property
    def oos_len(self) -> int:
        return self.oos_end - self.oos_start


def _int(value: object, field: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{field}: must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{field}: must be >= {low}, got {value}")
    return int(value)


MIN_PARTIAL = 2  # a last out-of-sample window shorter than oos_size is kept only with this many bars


def rolling_windows(
    n_obs: int,
    is_size: int,
    oos_size: int,
    *,
    gap: int = 0,
    anchored: bool = False,
    start: int = 0,
    partial: bool = True,
) -> list[Window]:
    """Walk-forward windows over bars [start, n_obs).

    Window k tests bars [o_k, o_k + oos_size) with o_k = start + is_size + gap + k * oos_size; it is fitted on
    the `is_size` bars ending `gap` bars before o_k (rolling) or on every bar from `start` to there (anchored).
    With `partial`, a last out-of-sample window cut short by the end of the data is kept if it has at least 2
    bars.
    """
    n = _int(n_obs, "n_obs", 1)
    i_s = _int(is_size, "is_size", 2)
    o_s = _int(oos_size, "oos_size", 1)
    g = _int(gap, "gap", 0)
    s0 = _int(start, "start", 0)
    if s0 + i_s + g + o_s > n and not (partial and s0 + i_s + g + MIN_PARTIAL <= n):
        raise ValueError(
            f"n_obs: {n} bars leave no window (start {s0} + is_size {i_s} + gap {g} + oos_size {o_s} > {n})"
        )
    out: list[Window] = []
    oos_start = s0 + i_s + g
    while oos_start < n:
        oos_end = min(oos_start + o_s, n)
        if oos_end - oos_start < o_s and (not partial or oos_end - oos_start < MIN_PARTIAL):
            break
        is_end = oos_start - g
        out.append(Window(len(out), s0 if anchored else is_end - i_s, is_end, oos_start, oos_end))
        oos_start = oos_end
    return out


_SPAN = re.compile(r"^\s*(\d+)\s*([DWMY])\s*$", re.IGNORECASE)


def parse_span(span: object, field: str) -> Any:
    """A calendar span: "90D", "13W", "6M", "2Y" (or a pandas DateOffset / Timedelta) as a pandas DateOffset."""
    import pandas as pd

    if isinstance(span, (pd.DateOffset, pd.Timedelta)):
        return span
    m = _SPAN.match(span) if isinstance(span, str) else None
    if m is None or int(m.group(1)) <= 0:
        raise ValueError(f"{field}: expected a positive span such as '90D', '13W', '6M' or '2Y', got {span!r}")
    unit = {"D": "days", "W": "weeks", "M": "months", "Y": "years"}[m.group(2).upper()]
    return pd.DateOffset(**{unit: int(m.group(1))})


def date_windows(
    dates: object,
    is_span: object,
    oos_span: object,
    *,
    gap: int = 0,
    anchored: bool = False,
    partial: bool = True,
) -> list[Window]:
    """Walk-forward windows on calendar boundaries over strictly increasing bar timestamps.

    Out-of-sample window k holds the bars in [t0 + is_span + k * oos_span, t0 + is_span + (k + 1) * oos_span),
    t0 the first timestamp; its in-sample window holds the bars in the `is_span` before that (or every bar from
    t0, anchored), less the last `gap` bars. Periods without bars are skipped; with `partial`, a last period
    cut short by the end of the data is kept if it has at least 2 bars.
    """
    import pandas as pd

    idx = pd.DatetimeIndex(pd.to_datetime(np.asarray(dates)))
    if len(idx) < 3:
        raise ValueError(f"dates: need at least 3 timestamps, got {len(idx)}")
    if not (np.diff(idx.asi8) > 0).all():
        raise ValueError("dates: must be strictly increasing (one bar per timestamp, in time order)")
    is_off = parse_span(is_span, "is_span")
    oos_off = parse_span(oos_span, "oos_span")
    g = _int(gap, "gap", 0)
    t0, last = idx[0], idx[-1]
    anchor = t0 + is_off
    out: list[Window] = []
    k = 0
    while (lo_t := anchor + oos_off * k) <= last:
        hi_t = anchor + oos_off * (k + 1)
        k += 1
        lo, hi = int(idx.searchsorted(lo_t)), int(idx.searchsorted(hi_t))
        if hi == lo:
            continue  # no bars in this period
        if hi_t > last and (not partial or hi - lo < MIN_PARTIAL):
            break  # the data ends inside this period: a partial window
        is_end = lo - g
        is_start = 0 if anchored else int(idx.searchsorted(lo_t - is_off))
        if is_end - is_start < 2:
            continue
        out.append(Window(len(out), is_start, is_end, lo, hi))
    if not out:
        raise ValueError(f"dates: {idx[0].date()}..{last.date()} leave no window for is_span {is_span!r}, "
                         f"oos_span {oos_span!r}, gap {g}")
    return out


def check_windows(windows: Sequence[Window], n_obs: int | None = None) -> None:
    """Each window fits (in sample before out of sample) and the out-of-sample windows do not overlap."""
    if not windows:
        raise ValueError("windows: empty (nothing to walk forward over)")
    prev_end = -1
    for w in windows:
        if not (0 <= w.is_start < w.is_end <= w.oos_start < w.oos_end):
            raise ValueError(f"windows[{w.index}]: need 0 <= is_start < is_end <= oos_start < oos_end, got {w}")
        if w.oos_start < prev_end:
            raise ValueError(f"windows[{w.index}]: out-of-sample start {w.oos_start} overlaps the previous window "
                             f"(ends {prev_end}); out-of-sample windows must be in time order and disjoint")
        if n_obs is not None and w.oos_end > n_obs:
            raise ValueError(f"windows[{w.index}]: out-of-sample end {w.oos_end} is past the data ({n_obs} bars)")
        prev_end = w.oos_end


# ------------------------------------------------------------------------------------------------- objectives
def sharpe(returns: np.ndarray, periods_per_year: float = 252.0) -> float:
    """Annualised Sharpe of per-bar returns (zero risk-free rate). Zero variance: 0 when flat, else +-inf."""
    r = np.asarray(returns, dtype=float)
    if r.size < 2:
        return 0.0 if r.size == 0 or r[0] == 0 else math.copysign(math.inf, float(r[0]))
    mean, sd = float(r.mean()), float(r.std(ddof=1))
    if sd <= 1e-12 * abs(mean):  # zero variance, up to rounding
        return 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
    return mean / sd * math.sqrt(periods_per_year)


def total_return(returns: np.ndarray) -> float:
    """Compounded return of per-bar simple returns."""
    return float(np.prod(1.0 + np.asarray(returns, dtype=float)) - 1.0)


OBJECTIVES: dict[str, Objective] = {
    "sharpe": sharpe,
    "total_return": total_return,
    "mean": lambda r: float(np.mean(r)) if len(r) else 0.0,
}


def _objective(objective: str | Objective) -> Objective:
    if callable(objective):
        return objective
    if objective not in OBJECTIVES:
        raise ValueError(f"objective: unknown {objective!r} (one of {', '.join(OBJECTIVES)}, or a callable)")
    return OBJECTIVES[objective]


# ------------------------------------------------------------------------------------------------ walk-forward
@dataclass(frozen=True, slots=True)
class EvalCall:
    """One call of the evaluator: for which window and phase ("is" selection or "oos" run), which grid entry."""

    window: int
    phase: Literal["is", "oos"]
    param_index: int
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class WalkForwardResult:
    """What a walk-forward produced.

    - `chosen[k]` / `chosen_index[k]`: the parameters picked on window k's in-sample bars;
    - `scores[k, j]`: grid entry j's in-sample objective in window k (the selection's whole view);
    - `oos_returns` over the bars `oos_index` (each window's out-of-sample bars, run with its chosen
      parameters, in time order) and `oos_equity` = their compounded growth of 1;
    - `is_returns` / `is_index` / `is_equity`: the chained in-sample curve next to it, each window's winner over
      its own in-sample bars one window after the other (rolling in-sample windows overlap, so bars repeat);
    - `is_sharpe` / `oos_sharpe`: annualised Sharpe of those two return series; `window_is_sharpe` /
      `window_oos_sharpe` per window; `degradation` = is_sharpe - oos_sharpe; `efficiency` = oos / is
      (walk-forward efficiency; NaN only when is_sharpe is 0).
    """

    windows: tuple[Window, ...]
    grid: tuple[dict[str, Any], ...]
    chosen: tuple[dict[str, Any], ...]
    chosen_index: np.ndarray
    scores: np.ndarray
    oos_returns: np.ndarray
    oos_index: np.ndarray
    oos_equity: np.ndarray
    is_returns: np.ndarray
    is_index: np.ndarray
    is_equity: np.ndarray
    window_is_sharpe: np.ndarray
    window_oos_sharpe: np.ndarray
    is_sharpe: float
    oos_sharpe: float
    oos_total_return: float
    degradation: float
    efficiency: float
    periods_per_year: float
    calls: tuple[EvalCall, ...] = field(repr=False)

    def selection_horizon(self, k: int) -> int:
        """One past the last bar any in-sample evaluation of window k covered (what its selection could see)."""
        return max(c.end for c in self.calls if c.window == k and c.phase == "is")

    def check_no_lookahead(self) -> None:
        """Raise LookAheadError unless every window's selection saw only bars before its out-of-sample start
        (less the gap), and every out-of-sample run used the parameters that selection picked."""
        for w in self.windows:
            seen = self.selection_horizon(w.index)
            if seen > w.is_end or seen > w.oos_start:
                raise LookAheadError(f"window {w.index}: selection evaluated bars up to {seen - 1}, "
                                     f"past its in-sample end {w.is_end - 1} (out of sample from {w.oos_start})")
            oos = [c for c in self.calls if c.window == w.index and c.phase == "oos"]
            if [c.param_index for c in oos] != [int(self.chosen_index[w.index])]:
                raise LookAheadError(f"window {w.index}: out-of-sample run is not the in-sample choice")

    def summary(self, dates: object = None) -> dict[str, Any]:
        """Plain JSON-ready figures (per window and overall) for the CLI and reports. With `dates` (one timestamp
        per bar), each window also gives its first and last in- and out-of-sample dates."""
        stamps = None
        if dates is not None:
            import pandas as pd

            stamps = pd.DatetimeIndex(pd.to_datetime(np.asarray(dates)))

        def row(w: Window) -> dict[str, Any]:
            out: dict[str, Any] = {
                "window": w.index,
                "is": [w.is_start, w.is_end],
                "oos": [w.oos_start, w.oos_end],
                "params": self.chosen[w.index],
                "is_sharpe": float(self.window_is_sharpe[w.index]),
                "oos_sharpe": float(self.window_oos_sharpe[w.index]),
            }
            if stamps is not None:
                out["is_dates"] = [str(stamps[w.is_start].date()), str(stamps[w.is_end - 1].date())]
                out["oos_dates"] = [str(stamps[w.oos_start].date()), str(stamps[w.oos_end - 1].date())]
            return out

        return {
            "windows": [row(w) for w in self.windows],
            "is_sharpe": self.is_sharpe,
            "oos_sharpe": self.oos_sharpe,
            "oos_total_return": self.oos_total_return,
            "degradation": self.degradation,
            "efficiency": self.efficiency,
            "oos_bars": int(self.oos_returns.size),
        }


def _returns(out: object, params: Params, start: int, end: int) -> np.ndarray:
    """The evaluator's output as a float vector of length end - start, all finite, or ValueError saying why."""
    try:
        r = np.asarray(out, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"evaluate: returned non-numeric output for {dict(params)} on [{start}, {end}): {exc}"
        ) from None
    if r.ndim != 1 or r.shape[0] != end - start:
        raise ValueError(f"evaluate: must return one return per bar of [{start}, {end}) ({end - start} values) "
                         f"for {dict(params)}, got shape {r.shape}")
    if not np.isfinite(r).all():
        bad = int(np.flatnonzero(~np.isfinite(r))[0]) + start
        raise ValueError(f"evaluate: non-finite return at bar {bad} for {dict(params)} on "
                         f"[{start}, {end}) (a strategy that reads bars at or after `end` gets none under "
                         "guard='truncate')")
    return r


def walk_forward(
    evaluate: Evaluator,
    grid: Sequence[Params],
    windows: Sequence[Window],
    objective: str | Objective = "sharpe",
    *,
    periods_per_year: float = 252.0,
) -> WalkForwardResult:
    """Walk forward: in each window pick the grid entry with the best in-sample `objective`, run it out of sample.

    `evaluate(params, start, end)` returns the per-bar simple returns of bars [start, end) (it may use bars
    before `start` to warm up, never bars at or after `end`). Ties go to the first grid entry. `objective` is
    "sharpe" (default), "total_return", "mean" or a callable of the returns (higher is better).
    """
    entries = [dict(p) for p in _grid(grid)]
    check_windows(windows, getattr(evaluate, "n_obs", None))
    obj = _objective(objective)
    ppy = float(periods_per_year)
    if not (math.isfinite(ppy) and ppy > 0):
        raise ValueError(f"periods_per_year: must be a positive number, got {periods_per_year!r}")
    calls: list[EvalCall] = []
    scores = np.empty((len(windows), len(entries)))
    chosen_idx = np.empty(len(windows), dtype=int)
    oos_parts: list[np.ndarray] = []
    is_parts: list[np.ndarray] = []
    w_is = np.empty(len(windows))
    w_oos = np.empty(len(windows))
    for k, w in enumerate(windows):
        rets: list[np.ndarray] = []
        for j, params in enumerate(entries):
            calls.append(EvalCall(k, "is", j, w.is_start, w.is_end))
            r = _returns(evaluate(params, w.is_start, w.is_end), params, w.is_start, w.is_end)
            score = float(obj(r))
            if math.isnan(score):
                raise ValueError(f"objective: NaN for {params} in window {k} (scores must be comparable)")
            scores[k, j] = score
            rets.append(r)
        best = int(np.argmax(scores[k]))
        chosen_idx[k] = best
        calls.append(EvalCall(k, "oos", best, w.oos_start, w.oos_end))
        oos = _returns(evaluate(entries[best], w.oos_start, w.oos_end), entries[best], w.oos_start, w.oos_end)
        oos_parts.append(oos)
        is_parts.append(rets[best])
        w_is[k] = sharpe(rets[best], ppy)
        w_oos[k] = sharpe(oos, ppy)
    oos_r = np.concatenate(oos_parts)
    is_r = np.concatenate(is_parts)
    is_s, oos_s = sharpe(is_r, ppy), sharpe(oos_r, ppy)
    return WalkForwardResult(
        windows=tuple(windows),
        grid=tuple(entries),
        chosen=tuple(entries[i] for i in chosen_idx),
        chosen_index=chosen_idx,
        scores=scores,
        oos_returns=oos_r,
        oos_index=np.concatenate([np.arange(w.oos_start, w.oos_end) for w in windows]),
        oos_equity=np.cumprod(1.0 + oos_r),
        is_returns=is_r,
        is_index=np.concatenate([np.arange(w.is_start, w.is_end) for w in windows]),
        is_equity=np.cumprod(1.0 + is_r),
        window_is_sharpe=w_is,
        window_oos_sharpe=w_oos,
        is_sharpe=is_s,
        oos_sharpe=oos_s,
        oos_total_return=total_return(oos_r),
        degradation=is_s - oos_s,
        efficiency=oos_s / is_s if is_s != 0 else float("nan"),
        periods_per_year=ppy,
        calls=tuple(calls),
    )


def _grid(grid: Sequence[Params]) -> Sequence[Params]:
    if isinstance(grid, Mapping) or not isinstance(grid, Sequence) or len(grid) == 0:
        raise ValueError("grid: expected a non-empty sequence of parameter mappings")
    for i, p in enumerate(grid):
        if not isinstance(p, Mapping):
            raise ValueError(f"grid[{i}]: expected a mapping of parameter names to values, got {type(p).__name__}")
    return grid


# ------------------------------------------------------------------------------------------ guarded evaluator
class PanelEvaluator:
    """An evaluator over one data array (rows are bars, in time order) that keeps the strategy out of the future.

    `strategy(params, data, start, end)` returns the per-bar returns of bars [start, end) from `data`.
    - guard="truncate" (default): the strategy gets the read-only rows [0, end) only; it cannot see the future,
      and one that indexes past them fails (IndexError, reported as LookAheadError).
    - guard="perturb": the strategy gets the whole (read-only) array, and is run again on copies whose rows from
      `end` on are changed (scaled by 2 and by 1/2, and negated when the data has negative values, so both
      magnitudes and signs move); any change in its returns for [start, end) is a LookAheadError. Costs 3-4 runs
      per call: an audit for strategies written over whole arrays.
    - guard="none": the whole array, unchecked.
    """

    def __init__(self, strategy: Strategy, data: object, guard: Guard = "truncate") -> None:
        if not callable(strategy):
            raise ValueError("strategy: must be callable (params, data, start, end) -> returns")
        arr = np.array(data, dtype=float)  # a private copy: nobody else can change it under the guard
        if arr.ndim < 1 or arr.shape[0] < 2:
            raise ValueError(f"data: need at least 2 rows (bars), got shape {arr.shape}")
        if guard not in ("truncate", "perturb", "none"):
            raise ValueError(f"guard: one of 'truncate', 'perturb', 'none', got {guard!r}")
        arr.setflags(write=False)
        self.strategy = strategy
        self.data = arr
        self.guard: Guard = guard
        self._variants: dict[int, list[np.ndarray]] = {}

    @property
    def n_obs(self) -> int:
        return int(self.data.shape[0])

    def __call__(self, params: Params, start: int, end: int) -> np.ndarray:
        if not (0 <= start < end <= self.n_obs):
            raise ValueError(f"end: need 0 <= start < end <= {self.n_obs}, got [{start}, {end})")
        if self.guard == "truncate":
            try:
                out = self.strategy(params, self.data[:end], start, end)
            except IndexError as exc:
                raise LookAheadError(f"strategy {dict(params)} read past bar {end - 1} while computing [{start}, "
                                     f"{end}) (it is given bars [0, {end}) only): {exc}") from exc
            return _returns(out, params, start, end)
        out = _returns(self.strategy(params, self.data, start, end), params, start, end)
        if self.guard == "perturb":
            for name, variant in self._perturbed(end):
                again = np.asarray(self.strategy(params, variant, start, end), dtype=float)
                if again.shape != out.shape or not np.array_equal(again, out, equal_nan=True):
                    moved = np.flatnonzero(~((again == out) | (np.isnan(again) & np.isnan(out)))) \
                        if again.shape == out.shape else np.array([0])
                    raise LookAheadError(
                        f"strategy {dict(params)}: its returns for [{start}, {end}) changed (first at bar "
                        f"{int(moved[0]) + start}) when the data from bar {end} on was {name}: it reads data at or "
                        "after the window end"
                    )
        return out

    def _perturbed(self, end: int) -> list[tuple[str, np.ndarray]]:
        if end not in self._variants:
            if len(self._variants) >= 4:
                self._variants.pop(next(iter(self._variants)))
            made = []
            for factor in (2.0, 0.5, -1.0):
                if factor < 0 and not (self.data < 0).any():
                    continue
                v = self.data.copy()
                v[end:] *= factor
                v.setflags(write=False)
                made.append(v)
            self._variants[end] = made
        names = ["scaled by 2", "scaled by 1/2", "negated"]
        return list(zip(names, self._variants[end], strict=False))


def check_lookahead(strategy: Strategy, data: object, params: Params, start: int, end: int) -> np.ndarray:
    """Run `strategy` once under guard="perturb": its returns for [start, end), or LookAheadError."""
    return PanelEvaluator(strategy, data, guard="perturb")(params, start, end)


def grid_returns(evaluate: Evaluator, grid: Sequence[Params], start: int, end: int) -> np.ndarray:
    """(end - start) x len(grid) per-bar returns of every grid entry over one span: the trial matrix that
    `overfit.cscv_pbo` and `overfit.deflated_sharpe_of_trials` take for the same sweep."""
    entries = [dict(p) for p in _grid(grid)]
    return np.column_stack([_returns(evaluate(p, start, end), p, start, end) for p in entries])


# ------------------------------------------------------------------------------- configurations (vectorised)
PANEL_FIELDS = ("open", "high", "low", "close", "volume")


def config_evaluator(
    configs: Sequence[Any],
    bars: Any,
    n_symbols: int,
    bars_per_year: float,
    guard: Guard = "truncate",
) -> PanelEvaluator:
    """An evaluator over `configs` (validated `TradesysConfig`s that differ in strategy, risk or broker settings)
    that runs each through the vectorised engine (`tradesys.backtest.vectorized`) on `bars` (its `BarArrays`).

    Grid entries name a config by position: {"trial": i, ...}. A call for [start, end) computes the configured
    strategy's target weights from the bars it is given (under the guard: those before `end`), then books them
    from a flat book and the config's initial cash at `start`, with the config's costs and sizing limits.
    """
    from tradesys.backtest.costs import CostModel, SizingLimits
    from tradesys.backtest.vectorized import BarArrays, simulate, target_weights

    cfgs = list(configs)
    if not cfgs:
        raise ValueError("configs: empty (nothing to evaluate)")
    for i, c in enumerate(cfgs):
        if c.data != cfgs[0].data:
            raise ValueError(f"configs[{i}]: its data section differs from configs[0] (one data set per walk-forward)")
    ts, symbols = np.asarray(bars.ts_ns), tuple(bars.symbols)
    panel = np.stack([getattr(bars, f) for f in PANEL_FIELDS], axis=1)  # bars x fields x symbols

    def strategy(params: Params, data: np.ndarray, start: int, end: int) -> np.ndarray:
        i = params.get("trial")
        if not isinstance(i, (int, np.integer)) or not 0 <= i < len(cfgs):
            raise ValueError(f"grid: entry {dict(params)} needs 'trial', an index into configs (0..{len(cfgs) - 1})")
        cfg = cfgs[int(i)]
        rows = data.shape[0]
        close = data[:, 3]
        valid = np.isfinite(close) & (close > 0)
        seen = BarArrays(ts[:rows], symbols, *(data[:, k] for k in range(len(PANEL_FIELDS))), valid=valid)
        weights = target_weights(cfg, seen, n_symbols, bars_per_year)
        part = BarArrays(ts[start:end], symbols, *(data[start:end, k] for k in range(len(PANEL_FIELDS))),
                         valid=valid[start:end])
        costs = CostModel.from_config(cfg.broker)
        sizing = SizingLimits.from_config(cfg.strategy.rebalance_band, cfg.risk)
        equity = simulate(part, weights[start:end], costs, sizing, cfg.initial_cash, record=False).equity[0]
        prev = np.concatenate([[cfg.initial_cash], equity[:-1]])
        return equity / prev - 1.0

    return PanelEvaluator(strategy, panel, guard=guard)


def walk_forward_configs(
    configs: Sequence[Any],
    labels: Sequence[Mapping[str, Any]] | None = None,
    *,
    is_span: str | None = None,
    oos_span: str | None = None,
    is_bars: int | None = None,
    oos_bars: int | None = None,
    gap: int = 0,
    anchored: bool = False,
    start: int = 0,
    partial: bool = True,
    objective: str | Objective = "sharpe",
    guard: Guard = "truncate",
    bars: Any = None,
) -> tuple[WalkForwardResult, np.ndarray]:
    """Walk-forward over configurations through the vectorised engine: the entry point for
    `tradesys backtest walkforward`. Returns (the result, the bars' timestamps in ns for its indices).

    `configs`: one validated TradesysConfig per grid point (same data section); `labels`: the swept values of
    each (e.g. {"strategy.fast": 10, "strategy.slow": 50}), shown as the chosen parameters (default: none).
    Windows on the calendar (`is_span` / `oos_span`, e.g. "2Y" / "6M") or in bars (`is_bars` / `oos_bars`, from
    bar `start`); `gap`, `anchored` and `partial` as in `rolling_windows` / `date_windows`.
    `bars`: the data as `BarArrays` (default: read from configs[0]'s data section, the only I/O here).
    """
    from tradesys.backtest.vectorized import bars_from_config

    cfgs = list(configs)
    if not cfgs:
        raise ValueError("configs: empty (nothing to walk forward over)")
    if labels is not None and len(labels) != len(cfgs):
        raise ValueError(f"labels: need one per config ({len(cfgs)}), got {len(labels)}")
    if bars is None:
        bars, n_symbols, bpy = bars_from_config(cfgs[0])
    else:
        from tradesys.data import bars_per_year

        n_symbols, bpy = len(bars.symbols), bars_per_year(cfgs[0].data)
    n = len(bars.ts_ns)
    if (is_span is None) == (is_bars is None) or (oos_span is None) == (oos_bars is None):
        raise ValueError("is_span: give the windows either as spans (is_span and oos_span) or in bars "
                         "(is_bars and oos_bars)")
    if is_span is not None:
        if oos_span is None:
            raise ValueError("oos_span: needed with is_span")
        windows = date_windows(np.asarray(bars.ts_ns), is_span, oos_span, gap=gap, anchored=anchored, partial=partial)
    else:
        if is_bars is None or oos_bars is None:
            raise ValueError("oos_bars: needed with is_bars")
        windows = rolling_windows(n, is_bars, oos_bars, gap=gap, anchored=anchored, start=start, partial=partial)
    grid = [{"trial": i, **(dict(labels[i]) if labels is not None else {})} for i in range(len(cfgs))]
    ev = config_evaluator(cfgs, bars, n_symbols, bpy, guard=guard)
    return walk_forward(ev, grid, windows, objective, periods_per_year=bpy), np.asarray(bars.ts_ns)
