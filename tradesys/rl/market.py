"""Dense market arrays for the RL environment: bars x assets prices and a bars x assets x features tensor.

Why dense arrays: the environment steps many episodes in one numpy call, so every price and feature it reads must
be a plain array indexed by (bar, asset), built once from a `tradesys.data` source (the same bars the backtest and
the live loop replay) or from the offline feature store.

Rules:

* Every symbol must have a bar at every timestamp after the first one at which all symbols trade: leading bars
  where a symbol has not started yet are cut; a gap later is an error naming the symbol and time (filling it would
  invent a price the venue never quoted).
* Features are causal: the value at bar t is computed from bars <= t only (TA-Lib indicators, trailing windows,
  or a point-in-time as-of join for store features). Leading warm-up rows where any feature is NaN are cut; a NaN
  after the warm-up is an error.
* Built-in features are scale-free so one policy sees every asset alike: `log_return` log(c_t / c_{t-1});
  `volatility_20` the per-bar std of the last 20 log returns; `rsi_14` RSI / 100 - 0.5; `macd_hist` the MACD
  histogram (12, 26, 9) / close; `sma_gap_20` close / SMA20 - 1; `atr_14` ATR14 / close.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tradesys.config import DataConfig
from tradesys.features import technical as ta

__all__ = [
    "DEFAULT_FEATURES",
    "FEATURES",
    "MarketData",
    "compute_features",
    "dense_bars",
    "market_from_source",
    "market_from_store",
]

_Prices = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # open, high, low, close, volume


def _log_return(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray) -> np.ndarray:
    out = np.full_like(c, np.nan)
    out[1:] = np.log(c[1:] / c[:-1])
    return out


def _volatility(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray) -> np.ndarray:
    return ta.realized_vol(c, 20, periods_per_year=1.0)


def _rsi(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray) -> np.ndarray:
    return ta.rsi(c, 14) / 100.0 - 0.5


def _macd_hist(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray) -> np.ndarray:
    return ta.macd(c, 12, 26, 9)[2] / c


def _sma_gap(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray) -> np.ndarray:
    return c / ta.sma(c, 20) - 1.0


def _atr(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray) -> np.ndarray:
    return ta.atr(h, lo, c, 14) / c


FEATURES: dict[str, Callable[..., np.ndarray]] = {
    "log_return": _log_return,
    "volatility_20": _volatility,
    "rsi_14": _rsi,
    "macd_hist": _macd_hist,
    "sma_gap_20": _sma_gap,
    "atr_14": _atr,
}
DEFAULT_FEATURES: tuple[str, ...] = tuple(FEATURES)


@dataclass(frozen=True)
class MarketData:
    """Aligned dense arrays: `ts` (T,) int64 ns UTC; prices (T, A) float64; `features` (T, A, F) float64."""

    ts: np.ndarray
    symbols: tuple[str, ...]
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    features: np.ndarray
    feature_names: tuple[str, ...]

    def __post_init__(self) -> None:
        t, a = self.close.shape
        for name in ("open", "high", "low", "volume"):
            if getattr(self, name).shape != (t, a):
                raise ValueError(f"{name}: shape {getattr(self, name).shape} differs from close {(t, a)}")
        if self.ts.shape != (t,):
            raise ValueError(f"ts: shape {self.ts.shape}, expected {(t,)}")
        if len(self.symbols) != a:
            raise ValueError(f"symbols: {len(self.symbols)} names for {a} columns")
        if self.features.shape[:2] != (t, a) or self.features.shape[2] != len(self.feature_names):
            raise ValueError(f"features: shape {self.features.shape} does not match (T, A, F) = "
                             f"{(t, a, len(self.feature_names))}")
        if t and not (np.isfinite(self.close).all() and (self.close > 0).all()):
            raise ValueError("close: every price must be finite and > 0")
        if not np.isfinite(self.features).all():
            raise ValueError("features: NaN or inf after the warm-up")

    @property
    def n_bars(self) -> int:
        return int(self.close.shape[0])

    @property
    def n_assets(self) -> int:
        return int(self.close.shape[1])

    def slice(self, start: int, stop: int) -> MarketData:
        """Bars [start, stop) (e.g. one walk-forward period), arrays shared, not copied."""
        if not (0 <= start < stop <= self.n_bars):
            raise ValueError(f"slice: need 0 <= start < stop <= {self.n_bars}, got {start}, {stop}")
        s = np.s_[start:stop]
        return MarketData(self.ts[s], self.symbols, self.open[s], self.high[s], self.low[s], self.close[s],
                          self.volume[s], self.features[s], self.feature_names)


def dense_bars(table: pa.Table, symbols: Sequence[str] | None = None) -> tuple[np.ndarray, tuple[str, ...], _Prices]:
    """A long bar table (BAR_SCHEMA) -> (ts, symbols, (open, high, low, close, volume) each (T, A)).

    Leading bars before every symbol trades are cut; a later gap raises ValueError naming the symbol and time.
    NaN volume stays NaN ("unknown": the venue applies no participation cap)."""
    syms = tuple(symbols) if symbols is not None else tuple(sorted(set(table.column("symbol").to_pylist())))
    if not syms:
        raise ValueError("symbols: no symbols in the data")
    ts_all = np.asarray(pc.cast(table.column("ts"), pa.int64()), dtype=np.int64)
    sym_all = np.asarray(table.column("symbol").to_pylist(), dtype=object)
    times, row = np.unique(ts_all, return_inverse=True)
    index = {s: i for i, s in enumerate(syms)}
    col = np.fromiter((index.get(s, -1) for s in sym_all), dtype=np.int64, count=len(sym_all))
    keep = col >= 0
    arrays = []
    for name in ("open", "high", "low", "close", "volume"):
        a = np.full((len(times), len(syms)), np.nan)
        a[row[keep], col[keep]] = np.asarray(table.column(name).to_numpy(zero_copy_only=False), np.float64)[keep]
        arrays.append(a)
    close = arrays[3]
    present = np.isfinite(close) & (close > 0)
    full = present.all(axis=1)
    if not full.any():
        raise ValueError("symbols: no timestamp at which every symbol has a bar")
    first = int(np.argmax(full))
    gaps = ~present[first:]
    if gaps.any():
        i, j = np.argwhere(gaps)[0]
        when = np.datetime64(int(times[first + i]), "ns")
        raise ValueError(f"data: symbol {syms[j]!r} has no usable bar at {when} (gaps are not filled)")
    cut = tuple(a[first:] for a in arrays)
    o, h, lo, c, v = cut
    # a missing open/high/low is taken from the close, as the venue does
    o = np.where(np.isfinite(o), o, c)
    h = np.where(np.isfinite(h), h, np.maximum(o, c))
    lo = np.where(np.isfinite(lo), lo, np.minimum(o, c))
    return times[first:], syms, (o, h, lo, c, v)


def compute_features(prices: _Prices, names: Sequence[str] = DEFAULT_FEATURES) -> np.ndarray:
    """The (T, A, F) tensor of the named built-in features (module docstring), NaN in warm-up rows."""
    unknown = [n for n in names if n not in FEATURES]
    if unknown:
        raise ValueError(f"features: unknown feature(s) {unknown}; known: {sorted(FEATURES)}")
    if not names:
        raise ValueError("features: name at least one feature")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.stack([FEATURES[n](*prices) for n in names], axis=-1)


def _cut_warmup(ts: np.ndarray, syms: tuple[str, ...], prices: _Prices, feats: np.ndarray,
                names: tuple[str, ...]) -> MarketData:
    ok = np.isfinite(feats).all(axis=(1, 2))
    if not ok.any():
        raise ValueError(f"data: {len(ts)} bars are not enough to warm the features {list(names)} up")
    first = int(np.argmax(ok))
    bad = ~np.isfinite(feats[first:])
    if bad.any():
        i, j, k = np.argwhere(bad)[0]
        when = np.datetime64(int(ts[first + i]), "ns")
        raise ValueError(f"features: {names[k]!r} of {syms[j]!r} is NaN at {when} after the warm-up")
    o, h, lo, c, v = (a[first:] for a in prices)
    return MarketData(ts[first:], syms, o, h, lo, c, v, feats[first:], names)


def _source_table(source: object) -> tuple[pa.Table, list[str]]:
    from tradesys.data import make_source

    src = make_source(source) if isinstance(source, DataConfig) else source
    table = getattr(src, "table", None)
    if not isinstance(table, pa.Table):
        batches = list(src.batches())  # type: ignore[attr-defined]
        table = pa.Table.from_batches(batches) if batches else None
    if table is None or table.num_rows == 0:
        raise ValueError("data: the source has no bars")
    return table, list(src.symbols)  # type: ignore[attr-defined]


def market_from_source(source: object, features: Sequence[str] = DEFAULT_FEATURES) -> MarketData:
    """Dense arrays and built-in features from a `DataConfig` (via `make_source`) or any `DataSource`."""
    table, syms = _source_table(source)
    ts, symbols, prices = dense_bars(table, syms)
    names = tuple(features)
    return _cut_warmup(ts, symbols, prices, compute_features(prices, names), names)


def market_from_store(
    store: object | str | os.PathLike[str],
    refs: Sequence[object],
    source: object,
    builtin: Sequence[str] = ("log_return",),
) -> MarketData:
    """Dense arrays from `source` with features read from the offline store, point in time.

    Each store feature (`FeatureRef`, "name[:version][.col]" spec or (name, version)) is joined per symbol at each
    bar time with `OfflineStore.training_set` (the value with the greatest event time <= the bar time, see
    `tradesys.train.store_data.feature_frame`); `builtin` features are computed from the bars and put first."""
    import pandas as pd

    from tradesys.train.store_data import feature_frame, parse_feature_spec

    if not refs:
        raise ValueError("refs: name at least one store feature")
    parsed = [parse_feature_spec(r, field="refs") if isinstance(r, str) else r for r in refs]
    table, syms = _source_table(source)
    ts, symbols, prices = dense_bars(table, syms)
    calendar = pd.DatetimeIndex(pd.to_datetime(ts, utc=True))
    per_symbol = []
    cols: list[str] | None = None
    for s in symbols:
        frame = feature_frame(store, parsed, calendar, s)  # NaN before a feature's first value (warm-up)
        if cols is None:
            cols = list(frame.columns)
        per_symbol.append(frame[cols].to_numpy(np.float64))
    assert cols is not None
    stored = np.stack(per_symbol, axis=1)  # (T, A, F_store)
    names = tuple(builtin) + tuple(cols)
    feats = compute_features(prices, builtin) if builtin else np.zeros((len(ts), len(symbols), 0))
    return _cut_warmup(ts, symbols, prices, np.concatenate([feats, stored], axis=-1), names)

