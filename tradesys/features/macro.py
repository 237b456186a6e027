"""Macro feature series: the real monthly/daily series that `arch.data` ships, stamped with when they were known.

Why release timing: a macro value is indexed by its reference period but published later; joining on the
reference date leaks the future into a backtest. Each row carries `available_at`, the earliest UTC time we treat
the value as public, and `asof_macro` joins on that only.

Series (source: FRED via arch.data; release lags are conservative fixed rules, not the exact historical
calendar):

* core_cpi: CPILFESL, US CPI less food and energy, index 1982-84 = 100, monthly, reference month stamped on its
  first day. BLS publishes it around mid of the following month: available_at = reference month + 1 month + 14
  days, 13:30 UTC (08:30 New York).
* aaa, baa: Moody's seasoned Aaa/Baa corporate bond yields, percent, monthly averages stamped on the month's
  first day; known once the month is over: available_at = first day of the next month, 21:00 UTC.
  default_spread = baa - aaa (percentage points), available with both.
* wti: DCOILWTICO, WTI Cushing spot, USD per barrel, daily; available_at = the next calendar day, 21:00 UTC
  (EIA posts spot prices with a lag; the next day is the earliest we assume).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MACRO_SERIES = ("core_cpi", "aaa", "baa", "default_spread", "wti")


def _long(name: str, s: pd.Series, available: pd.DatetimeIndex) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "series": name,
            "period": pd.DatetimeIndex(s.index).tz_localize("UTC"),
            "available_at": available,
            "value": s.to_numpy(dtype=np.float64),
        }
    )


def load_macro() -> pd.DataFrame:
    """All macro series as one long frame: series, period (reference date, UTC), available_at (UTC), value.

    The only I/O in this package: it reads the data files installed with `arch`. Sorted by (available_at,
    series)."""
    from arch.data import core_cpi, default, wti

    cpi = core_cpi.load()["CPILFESL"].dropna()
    rates = default.load()[["AAA", "BAA"]].dropna()
    oil = wti.load()["DCOILWTICO"].dropna()

    def stamp(idx: pd.Index, offset: pd.DateOffset, hour: int, minute: int = 0) -> pd.DatetimeIndex:
        d = pd.DatetimeIndex(idx) + offset
        return (d + pd.Timedelta(hours=hour, minutes=minute)).tz_localize("UTC")

    cpi_at = stamp(cpi.index, pd.DateOffset(months=1, days=14), 13, 30)
    rates_at = stamp(rates.index, pd.DateOffset(months=1), 21)
    oil_at = stamp(oil.index, pd.DateOffset(days=1), 21)
    frames = [
        _long("core_cpi", cpi, cpi_at),
        _long("aaa", rates["AAA"], rates_at),
        _long("baa", rates["BAA"], rates_at),
        _long("default_spread", rates["BAA"] - rates["AAA"], rates_at),
        _long("wti", oil, oil_at),
    ]
    out = pd.concat(frames, ignore_index=True)
    return out.sort_values(["available_at", "series"], kind="stable").reset_index(drop=True)


def asof_macro(
    macro: pd.DataFrame, ts: pd.DatetimeIndex | np.ndarray, series: tuple[str, ...] = MACRO_SERIES
) -> pd.DataFrame:
    """Wide frame indexed by `ts` (UTC): for each series, the latest value with available_at <= ts (NaN
    before the first release). Point-in-time: a value is never used before it was published."""
    idx = pd.DatetimeIndex(ts)
    idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
    if not idx.is_monotonic_increasing:
        raise ValueError("ts: must be sorted in increasing order")
    left = pd.DataFrame({"ts": idx})
    out = pd.DataFrame(index=idx)
    for name in series:
        part = macro.loc[macro["series"] == name, ["available_at", "value"]].sort_values("available_at")
        if part.empty:
            raise ValueError(f"series: {name!r} not in the macro frame")
        j = pd.merge_asof(left, part, left_on="ts", right_on="available_at", direction="backward")
        out[name] = j["value"].to_numpy()
    return out


__all__ = ["MACRO_SERIES", "asof_macro", "load_macro"]
