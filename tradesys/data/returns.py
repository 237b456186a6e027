"""Real return series for risk and allocation work, from the data sets shipped inside installed packages.

Names: "sp500" and "nasdaq" (daily index closes in `arch`, 1999-2018), "stocks" (20 S&P 500 stocks' adjusted
daily closes in `skfolio`, 1990-2022), "sp500_index" (skfolio's S&P 500 closes, 1990-2022) and "ff" (Fama-French
monthly factors Mkt-RF, SMB, HML, RF in `arch`, 1926-2018, as decimals on month ends). A CSV path works too:
dates in the first column, one column of prices (or returns, `kind="returns"`) per asset.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import pandas as pd

from tradesys.data.historical import load_sp500_closes, load_us_indices_frames

DATASETS = ("sp500", "nasdaq", "stocks", "sp500_index", "ff")


def fama_french_monthly() -> pd.DataFrame:
    """Fama-French monthly factors as decimals on month-end dates (arch stores percent on a YYYYMM index that pandas
    reads as nanoseconds; this undoes both)."""
    from arch.data import frenchdata

    raw = frenchdata.load()
    months = pd.to_datetime(pd.Index(raw.index.asi8).astype(str), format="%Y%m") + pd.offsets.MonthEnd(0)
    return (raw / 100.0).set_axis(months)


def _prices(name: str) -> pd.DataFrame:
    if name in ("sp500", "nasdaq"):
        frames = load_us_indices_frames()
        key = "SP500" if name == "sp500" else "NASDAQ"
        return frames[key][["Adj Close"]].rename(columns={"Adj Close": key})
    if name == "stocks":
        return load_sp500_closes()
    if name == "sp500_index":
        from skfolio.datasets import load_sp500_index

        return load_sp500_index()
    raise ValueError(f"data: unknown data set {name!r} (one of {', '.join(DATASETS)}, or a CSV path)")


def load_returns(
    source: str,
    symbols: Sequence[str] | None = None,
    *,
    start: str | None = None,
    end: str | None = None,
    kind: Literal["prices", "returns"] = "prices",
) -> pd.DataFrame:
    """Daily simple returns (monthly for "ff") of a named data set or a CSV file, optionally a subset and a window."""
    if source == "ff":
        frame = fama_french_monthly()
    elif source in DATASETS:
        frame = _prices(source).astype(float).pct_change().iloc[1:]
    else:
        path = Path(source)
        if not path.exists():
            raise ValueError(f"data: {source!r} is neither a data set ({', '.join(DATASETS)}) nor a file")
        table = pd.read_csv(path, index_col=0, parse_dates=True)
        frame = table.astype(float) if kind == "returns" else table.astype(float).pct_change().iloc[1:]
    if symbols:
        missing = [s for s in symbols if s not in frame.columns]
        if missing:
            raise ValueError(f"symbols: {missing[0]!r} is not in {source} (has {', '.join(map(str, frame.columns))})")
        frame = frame[list(symbols)]
    frame = frame.loc[start:end] if (start or end) else frame
    frame = frame.dropna(how="any")
    if frame.empty:
        raise ValueError("data: no rows left after the window and the symbol selection")
    return frame
