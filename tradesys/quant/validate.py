"""Input checks shared by the analytics libraries: one place that turns user input into clean arrays or says,
naming the field, why it cannot."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd


def float_series(x: Any, field: str, *, allow_mapping: bool = False) -> pd.Series:
    """One numeric column as a float64 Series (index kept), from a Series, a one-column DataFrame, a 1-D array-like
    or (with `allow_mapping`) a mapping; NaN/inf are left for the caller's own policy. ValueError 'field: reason'."""
    if isinstance(x, pd.DataFrame):
        if x.shape[1] != 1:
            raise ValueError(f"{field}: expected one column, got {x.shape[1]}")
        x = x.iloc[:, 0]
    if isinstance(x, pd.Series):
        s = x
    elif allow_mapping and isinstance(x, Mapping):
        s = pd.Series(dict(x))
    else:
        arr = np.asarray(x)
        if arr.ndim != 1:
            raise ValueError(f"{field}: expected a 1-D sequence, got shape {arr.shape}")
        s = pd.Series(arr)
    try:
        return s.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{field}: values must be numeric ({exc})") from None
