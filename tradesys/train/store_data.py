"""Training inputs from the offline feature store: a point-in-time feature frame on a returns calendar.

Why: a model may only train on what was knowable at each decision time. `OfflineStore.training_set` enforces
that rule (an as-of join on event time, with lag and staleness limits); this module puts its output into the shape
`tradesys.train.data.make_samples` cuts windows from, so store features go through the same sample timing, purge
and standardisation as the built-in ones. Pure: no Ray, no MLflow; only reads of the store.

Conventions:

* Returns: a store feature that holds one simple return per bar, read for one symbol (spec
  ``name[:version][.column]``; default column: the definition's first value column). Its event times are the
  label calendar (the bar timestamps, UTC) and its values the returns that make the labels (``y_ret = r_{t+1}``,
  ``y_vol`` over ``r_{t+1..t+h}``). Duplicate bar times or non-finite returns are errors.
* Features: each `FeatureRef` is joined with ``training_set`` at every calendar time t (the decision time, the
  bar's close): the value with the greatest event time ``<= t - lag`` and, with a ``ttl``, no older than ``ttl``;
  a row stamped after ``t - lag`` never reaches row t. Columns are named ``<feature>_v<version>__<column>``.
* Missing values: rows before a feature's first value are warm-up (`make_samples` drops them). A missing value
  after that (a gap or an expired ``ttl``) raises, naming the column and the first such time: filling it would
  invent data, dropping the row would make "the next bar" skip a period.
* Values must be numeric (bools become 0/1) and are cast to float64.
* Feature specs on the command line: ``name[:version][.col[+col...]]`` (version: the latest registered when
  omitted), e.g. ``rv:2`` or ``micro:1.spread+imbalance``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tradesys.featurestore.offline import DurationLike, FeatureRef, OfflineStore, to_ns_duration

__all__ = [
    "StoreInputs",
    "feature_frame",
    "load_store_inputs",
    "parse_feature_spec",
    "returns_from_store",
]

STORE_PREFIX = "store:"


@dataclass(frozen=True)
class StoreInputs:
    """What `make_samples` needs: the returns (label calendar as index) and the feature frame on that index."""

    symbol: str
    returns: pd.Series
    features: pd.DataFrame
    refs: tuple[FeatureRef, ...]


def parse_feature_spec(
    spec: str, *, lag: DurationLike | None = None, ttl: DurationLike | None = None, field: str = "features"
) -> FeatureRef:
    """``name[:version][.col[+col...]]`` -> `FeatureRef` (with the given lag/ttl); bad specs name `field`."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"{field}: empty feature spec")
    head, _, cols = spec.strip().partition(".")
    name, _, ver = head.partition(":")
    if not name:
        raise ValueError(f"{field}: {spec!r} has no feature name (expected name[:version][.column])")
    version = None
    if ver:
        if not ver.isdigit() or int(ver) < 1:
            raise ValueError(f"{field}: version {ver!r} in {spec!r} must be an integer >= 1")
        version = int(ver)
    columns = None
    if cols:
        columns = [c for c in cols.split("+") if c]
        if not columns:
            raise ValueError(f"{field}: {spec!r} names no column after '.'")
    for what, d in (("lag", lag), ("ttl", ttl)):
        try:
            to_ns_duration(d)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"feature_{what}: {d!r} is not a non-negative duration ({exc})") from None
    return FeatureRef(name, version, columns, lag=lag, ttl=ttl)


def _ref(f: FeatureRef | str | tuple[str, int]) -> FeatureRef:
    if isinstance(f, FeatureRef):
        return f
    if isinstance(f, str):
        return parse_feature_spec(f)
    if isinstance(f, tuple) and len(f) == 2:
        return FeatureRef(str(f[0]), int(f[1]))
    raise ValueError(f"features: {f!r} is not a FeatureRef, spec string or (name, version)")


def _store(store: OfflineStore | str | os.PathLike[str]) -> OfflineStore:
    if isinstance(store, OfflineStore):
        return store
    root = str(store).removeprefix(STORE_PREFIX)
    if not root or not os.path.isdir(root):
        raise ValueError(f"data: feature store root {root!r} is not a directory")
    return OfflineStore(root)


def returns_from_store(
    store: OfflineStore | str | os.PathLike[str], returns: str | FeatureRef = "returns", symbol: str | None = None
) -> pd.Series:
    """The per-bar returns of one symbol from a store feature (module conventions), indexed by bar time (UTC).

    With `symbol` None the feature must hold exactly one symbol.
    """
    st = _store(store)
    ref = returns if isinstance(returns, FeatureRef) else parse_feature_spec(returns, field="returns_feature")
    defn = st.registry.get(ref.name, ref.version)
    if ref.columns is not None and len(ref.columns) != 1:
        raise ValueError(f"returns_feature: name one column of {defn.name!r}, got {list(ref.columns)}")
    col = ref.columns[0] if ref.columns else defn.value_columns[0]
    if col not in defn.value_columns:
        raise ValueError(f"returns_feature: {col!r} is not a column of {defn.name!r} v{defn.version}")
    table = st.read(defn, None, entities=None if symbol is None else [symbol], columns=[col])
    ents = np.unique(table.column(defn.entity).to_numpy(zero_copy_only=False).astype(str))
    if symbol is None:
        if len(ents) != 1:
            shown = ", ".join(ents[:5]) + (", ..." if len(ents) > 5 else "")
            raise ValueError(f"symbol: {defn.name!r} v{defn.version} holds {len(ents)} symbols ({shown}); name one")
        symbol = str(ents[0])
    if table.num_rows == 0:
        raise ValueError(f"symbol: no {defn.name!r} v{defn.version} rows for {symbol!r}")
    ts = pd.DatetimeIndex(table.column(defn.event_time).to_pandas(), name="ts")
    if ts.has_duplicates:
        raise ValueError(f"returns_feature: duplicate bar time {ts[ts.duplicated()][0]} for {symbol!r}")
    values = table.column(col).to_pandas().to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(f"returns_feature: non-finite return for {symbol!r} at {ts[int(np.argmax(bad))]}")
    return pd.Series(values, index=ts, name=symbol)


def feature_frame(
    store: OfflineStore | str | os.PathLike[str],
    features: Sequence[FeatureRef | str | tuple[str, int]],
    calendar: pd.DatetimeIndex | pd.Series,
    symbol: str,
) -> pd.DataFrame:
    """The point-in-time feature values of `symbol` at each calendar time (module conventions), float64."""
    st = _store(store)
    if not features:
        raise ValueError("features: name at least one store feature")
    times = calendar.index if isinstance(calendar, pd.Series) else pd.DatetimeIndex(calendar)
    refs = [_ref(f) for f in features]
    entity_df = pd.DataFrame({"_entity": np.full(len(times), symbol, dtype=object), "_t": times})
    joined = st.training_set(entity_df, refs, entity="_entity", label_time="_t")
    frame = joined.drop(columns=["_entity", "_t"])
    frame.index = times
    out = {}
    for c in frame.columns:
        col = frame[c]
        try:
            v = col.astype("float64") if col.dtype != object else pd.to_numeric(col, errors="raise").astype("float64")
        except (ValueError, TypeError):
            raise ValueError(f"features: column {c!r} is not numeric (dtype {col.dtype})") from None
        miss = v.isna().to_numpy()
        if miss.all():
            raise ValueError(f"features: {c!r} has no value at or before any bar time of {symbol!r} (lag/ttl?)")
        first = int(np.argmin(miss))
        if miss[first:].any():
            at = times[first + int(np.argmax(miss[first:]))]
            raise ValueError(f"features: {c!r} has no value at {at} after its first one (a gap, or ttl expired)")
        out[c] = v
    return pd.DataFrame(out, index=times)


def load_store_inputs(
    store: OfflineStore | str | os.PathLike[str],
    features: Sequence[FeatureRef | str | tuple[str, int]],
    *,
    returns: str | FeatureRef = "returns",
    symbol: str | None = None,
) -> StoreInputs:
    """Returns and point-in-time features of one symbol, aligned for ``make_samples(returns, features=...)``."""
    st = _store(store)
    r = returns_from_store(st, returns, symbol)
    refs = tuple(_ref(f) for f in features)
    frame = feature_frame(st, refs, r.index, str(r.name))
    return StoreInputs(symbol=str(r.name), returns=r, features=frame, refs=refs)
