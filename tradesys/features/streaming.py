"""Incremental (streaming) technical indicators, vectorised across symbols.

Why: recomputing an indicator over the whole history on every new bar costs O(T) per bar; these objects keep
O(1) state per symbol (a few scalars, or a ring buffer of the indicator's fixed window) as 1-D/2-D numpy arrays
indexed by symbol, so one `update` advances every symbol with a handful of array operations and no Python loop
over symbols.

Each indicator reproduces the batch function of the same name in tradesys.features.technical (TA-Lib's
conventions: warm-up NaNs, seeds, Wilder smoothing) to ~1e-10, whether fed bar by bar or in chunks.

`update(data, index=None)` takes

* a mapping of input name -> array (or one array for single-input indicators), shaped (m,) for one bar of m
  symbols or (k, m) for k consecutive bars; `index` (m,) gives the symbols' positions in the universe (default:
  all symbols in universe order). Returns a dict output name -> array of the same shape.
* or an Arrow record batch/table in BAR_SCHEMA (columns ts, symbol, open, high, low, close, volume; rows sorted by
  ts, at most one row per symbol per ts; symbols may be a subset of the universe). Returns a record batch with
  ts, symbol and one column per output.

Every symbol keeps its own bar count, so symbols that skip a timestamp simply do not advance. NaN inputs are
not skipped: they propagate into that symbol's state.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

NAN = np.nan
_EPS_ZERO = 1e-8  # TA-Lib's TA_IS_ZERO threshold


def _mask(out: np.ndarray, valid: np.ndarray) -> np.ndarray:
    return out if valid.all() else np.where(valid, out, NAN)


def _is_zero(v: np.ndarray) -> np.ndarray:
    return (v > -_EPS_ZERO) & (v < _EPS_ZERO)


def _ema_core(
    r: np.ndarray, x: np.ndarray, ema: np.ndarray, acc: np.ndarray, n: int, k: float
) -> tuple[np.ndarray, np.ndarray]:
    """One EMA step. r: bars since this EMA's first input (r < 0: not started). Seed = mean of the first n."""
    if r.min() >= n:  # every symbol warm: the plain recursion
        return (x - ema) * k + ema, acc
    acc = np.where((r >= 0) & (r < n), acc + x, acc)
    ema = np.where(r >= n, (x - ema) * k + ema, np.where(r == n - 1, acc / n, ema))
    return ema, acc


def _true_range(h: np.ndarray, lo: np.ndarray, pc_: np.ndarray) -> np.ndarray:
    return np.maximum(np.maximum(h - lo, np.abs(pc_ - h)), np.abs(pc_ - lo))


class StreamingIndicator:
    """Base class: symbol bookkeeping, per-symbol bar counts, and the update entry points."""

    inputs: ClassVar[tuple[str, ...]] = ("close",)
    outputs: ClassVar[tuple[str, ...]] = ("value",)
    lookback: int = 0

    def __init__(self, symbols: Sequence[str] | int) -> None:
        if isinstance(symbols, int | np.integer):
            if symbols < 1:
                raise ValueError(f"symbols: need at least one symbol, got {symbols}")
            self.symbols: list[str] | None = None
            self.n_symbols = int(symbols)
        else:
            names = [str(s) for s in symbols]
            if not names:
                raise ValueError("symbols: empty universe")
            if len(set(names)) != len(names):
                raise ValueError("symbols: duplicate names in the universe")
            self.symbols = names
            self.n_symbols = len(names)
            self._sym_pa = pa.array(names, pa.string())
        self._count = np.zeros(self.n_symbols, np.int64)
        self._all = np.arange(self.n_symbols)

    # -- state helpers ------------------------------------------------------------------------------------
    def _zeros(self) -> np.ndarray:
        return np.zeros(self.n_symbols)

    def _ring(self, size: int) -> np.ndarray:
        return np.zeros((size, self.n_symbols))

    @property
    def count(self) -> np.ndarray:
        """Bars consumed so far, per symbol."""
        return self._count.copy()

    def _step(self, cols: Any, ci: np.ndarray, c: np.ndarray, x: list[np.ndarray]) -> list[np.ndarray]:
        """Advance the symbols `cols` (slice or index array; `ci` the same as an index array) by one bar.
        `c` holds their bar counts before this bar."""
        raise NotImplementedError

    def _run(self, idx: np.ndarray | None, xs: list[np.ndarray]) -> list[np.ndarray]:
        cols: Any = slice(None) if idx is None else idx
        ci = self._all if idx is None else idx
        c = self._count[cols].copy()
        out = self._step(cols, ci, c, xs)
        self._count[cols] += 1
        return out

    # -- entry points -------------------------------------------------------------------------------------
    def _check_index(self, index: Any) -> np.ndarray:
        idx = np.asarray(index, dtype=np.int64)
        if idx.ndim != 1:
            raise ValueError(f"index: expected a 1-D array of symbol positions, got shape {idx.shape}")
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_symbols):
            raise ValueError(f"index: positions must lie in [0, {self.n_symbols})")
        if np.unique(idx).size != idx.size:
            raise ValueError("index: a symbol appears twice in one bar")
        return idx

    def _inputs(self, data: Any) -> list[np.ndarray]:
        if isinstance(data, Mapping):
            xs = []
            for name in self.inputs:
                if name not in data:
                    raise ValueError(f"{name}: missing input for {type(self).__name__}")
                xs.append(np.asarray(data[name], dtype=np.float64))
        else:
            if len(self.inputs) != 1:
                raise ValueError(f"data: {type(self).__name__} needs a mapping with {list(self.inputs)}")
            xs = [np.asarray(data, dtype=np.float64)]
        shapes = {x.shape for x in xs}
        if len(shapes) != 1:
            raise ValueError(f"{','.join(self.inputs)}: inputs have different shapes {sorted(shapes)}")
        if xs[0].ndim not in (1, 2):
            raise ValueError(f"{self.inputs[0]}: expected (m,) or (k, m), got shape {xs[0].shape}")
        return xs

    def update(self, data: Any, index: Any = None) -> Any:
        """Consume new bars and return the indicator's values for them (see the module docstring)."""
        if isinstance(data, pa.RecordBatch | pa.Table):
            return self._update_arrow(data)
        xs = self._inputs(data)
        idx = None if index is None else self._check_index(index)
        m = self.n_symbols if idx is None else idx.size
        if xs[0].shape[-1] != m:
            raise ValueError(f"{self.inputs[0]}: last axis has {xs[0].shape[-1]} symbols, expected {m}")
        if xs[0].ndim == 1:
            return dict(zip(self.outputs, self._run(idx, xs), strict=True))
        k = xs[0].shape[0]
        res = {o: np.empty((k, m)) for o in self.outputs}
        for t in range(k):
            for o, v in zip(self.outputs, self._run(idx, [x[t] for x in xs]), strict=True):
                res[o][t] = v
        return res

    def _arrow_steps(self, batch: pa.RecordBatch | pa.Table) -> tuple[pa.RecordBatch, list[tuple[int, int, Any]]]:
        """(batch, [(start, stop, index or None)]) for each timestamp in an Arrow bar batch."""
        if self.symbols is None:
            raise ValueError("symbols: Arrow input needs an indicator built with symbol names")
        if isinstance(batch, pa.Table):
            batch = batch.combine_chunks().to_batches()[0] if batch.num_rows else pa.RecordBatch.from_pylist([])
        for name in ("ts", "symbol"):
            if batch.schema.get_field_index(name) < 0:
                raise ValueError(f"{name}: missing column in bar batch")
        n = batch.num_rows
        pos = pc.index_in(batch.column("symbol"), value_set=self._sym_pa)
        if pos.null_count:
            bad = batch.column("symbol").filter(pc.is_null(pos))[0].as_py()
            raise ValueError(f"symbol: {bad!r} is not in the indicator's universe")
        idx = np.asarray(pos, dtype=np.int64)
        ts = np.asarray(pc.cast(batch.column("ts"), pa.int64()), dtype=np.int64)
        if n > 1 and (np.diff(ts) < 0).any():
            raise ValueError("ts: bar batch rows are not sorted by time")
        cuts = [0, *(np.flatnonzero(np.diff(ts)) + 1).tolist(), n] if n else [0]
        steps = []
        for a, b in itertools.pairwise(cuts):
            seg = idx[a:b]
            if seg.size == self.n_symbols and (seg == self._all).all():
                steps.append((a, b, None))
            else:
                steps.append((a, b, self._check_index(seg)))
        return batch, steps

    def _update_arrow(self, batch: pa.RecordBatch | pa.Table) -> pa.RecordBatch:
        batch, steps = self._arrow_steps(batch)
        cols = []
        for name in self.inputs:
            if batch.schema.get_field_index(name) < 0:
                raise ValueError(f"{name}: missing column in bar batch")
            cols.append(np.asarray(pc.cast(batch.column(name), pa.float64()), dtype=np.float64))
        out = {o: np.empty(batch.num_rows) for o in self.outputs}
        for a, b, idx in steps:
            for o, v in zip(self.outputs, self._run(idx, [c[a:b] for c in cols]), strict=True):
                out[o][a:b] = v
        arrays = [batch.column("ts"), batch.column("symbol"), *(pa.array(out[o]) for o in self.outputs)]
        return pa.RecordBatch.from_arrays(arrays, names=["ts", "symbol", *self.outputs])


# ---------------------------------------------------------------------------------------------------------
# Moving averages


class SMA(StreamingIndicator):
    """Simple moving average over a ring buffer of the last n closes; lookback n-1."""

    outputs = ("sma",)

    def __init__(self, symbols: Sequence[str] | int, n: int = 20) -> None:
        super().__init__(symbols)
        self.n, self.lookback = n, n - 1
        self._buf = self._ring(n)

    def _step(self, cols: Any, ci: np.ndarray, c: np.ndarray, x: list[np.ndarray]) -> list[np.ndarray]:
        self._buf[c % self.n, ci] = x[0]
        return [_mask(self._buf[:, cols].sum(axis=0) / self.n, c >= self.n - 1)]


class EMA(StreamingIndicator):
    """Exponential moving average, k = 2/(n+1), seeded with the mean of the first n closes; lookback n-1."""

    outputs = ("ema",)

    def __init__(self, symbols: Sequence[str] | int, n: int = 20) -> None:
        super().__init__(symbols)
        self.n, self.lookback, self.k = n, n - 1, 2.0 / (n + 1)
        self._ema, self._acc = self._zeros(), self._zeros()

    def _step(self, cols: Any, ci: np.ndarray, c: np.ndarray, x: list[np.ndarray]) -> list[np.ndarray]:
        e, a = _ema_core(c, x[0], self._ema[cols], self._acc[cols], self.n, self.k)
        self._ema[cols], self._acc[cols] = e, a
        return [_mask(e, c >= self.n - 1)]


class WMA(StreamingIndicator):
    """Linearly weighted moving average (newest weight n, oldest 1); lookback n-1."""

    outputs = ("wma",)

    def __init__(self, symbols: Sequence[str] | int, n: int = 20) -> None:
        super().__init__(symbols)
        self.n, self.lookback = n, n - 1
        self._buf = self._ring(n)
        self._slots = np.arange(n)[:, None]
        self._den = n * (n + 1) / 2.0

    def _step(self, cols: Any, ci: np.ndarray, c: np.ndarray, x: list[np.ndarray]) -> list[np.ndarray]:
        pos = c % self.n
        self._buf[pos, ci] = x[0]
        weights = self.n - (pos[None, :] - self._slots) % self.n
        return [_mask((self._buf[:, cols] * weights).sum(axis=0) / self._den, c >= self.n - 1)]


class MACD(StreamingIndicator):
    """MACD line, signal and histogram with TA-Lib's aligned seeding (see technical.macd)."""

    outputs = ("macd", "signal", "hist")

    def __init__(self, symbols: Sequence[str] | int, fast: int = 12, slow: int = 26, signal: int = 9) -> None:
        super().__init__(symbols)
        if slow < fast:  # TA-Lib swaps them
            fast, slow = slow, fast
        self.fast, self.slow, self.signal = fast, slow, signal
        self.lookback = slow + signal - 2
        self._fe, self._fa, self._se, self._sa, self._ge, self._ga = (self._zeros() for _ in range(6))

    def _step(self, cols: Any, ci: np.ndarray, c: np.ndarray, x: list[np.ndarray]) -> list[np.ndarray]:
        f, s, g = self.fast, self.slow, self.signal
        fe, fa = _ema_core(c - (s - f), x[0], self._fe[cols], self._fa[cols], f, 2.0 / (f + 1))
        se, sa = _ema_core(c, x[0], self._se[cols], self._sa[cols], s, 2.0 / (s + 1))
        m = fe - se
        ge, ga = _ema_core(c - (s - 1), m, self._ge[cols], self._ga[cols], g, 2.0 / (g + 1))
        self._fe[cols], self._fa[cols], self._se[cols], self._sa[cols] = fe, fa, se, sa
        self._ge[cols], self._ga[cols] = ge, ga
        valid = c >= self.lookback
        return [_mask(m, valid), _mask(ge, valid), _mask(m - ge, valid)]


# ---------------------------------------------------------------------------------------------------------
# Wilder-smoothed oscillators and ranges


class RSI(StreamingIndicator):
    """Wilder's RSI; lookback n."""

    outputs = ("rsi",)

    def __init__(self, symbols: Sequence[str] | int, n: int = 14) -> None:
        super().__init__(symbols)
        self.n, self.lookback = n, n
        self._prev, self._gain, self._loss = self._zeros(), self._zeros(), self._zeros()

    def _step(self, cols: Any, ci: np.ndarray, c: np.ndarray, x: list[np.ndarray]) -> list[np.ndarray]:
        n, v = self.n, x[0]
        d = v - self._prev[cols]
        up, dn = np.maximum(d, 0.0), np.maximum(-d, 0.0)
        g, lo = self._gain[cols], self._loss[cols]
        if c.min() > n:
            g, lo = (g * (n - 1) + up) / n, (lo * (n - 1) + dn) / n
        else:
            wg, wl = (g * (n - 1) + up) / n, (lo * (n - 1) + dn) / n
            ag, al = g + up, lo + dn
            g = np.where(c > n, wg, np.where(c == n, ag / n, np.where(c >= 1, ag, g)))
            lo = np.where(c > n, wl, np.where(c == n, al / n, np.where(c >= 1, al, lo)))
        self._gain[cols], self._loss[cols], self._prev[cols] = g, lo, v
        tot = g + lo
        z = _is_zero(tot)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(z, 0.0, 100.0 * (g / np.where(z, 1.0, tot)))
        return [_mask(out, c >= n)]


class ATR(StreamingIndicator):
    """Average true range, Wilder-smoothed; lookback n."""

    inputs = ("high", "low", "close")
    outputs = ("atr",)

    def __init__(self, symbols: Sequence[str] | int, n: int = 14) -> None:
        super().__init__(symbols)
        self.n, self.lookback = n, n
        self._pc, self._acc, self._atr = self._zeros(), self._zeros(), self._zeros()

    def _step(self, cols: Any, ci: np.ndarray, c: np.ndarray, x: list[np.ndarray]) -> list[np.ndarray]:
        h, lo, cl = x
        n = self.n
        tr = _true_range(h, lo, self._pc[cols])
        a = self._atr[cols]
        if c.min() > n:
            a = (a * (n - 1) + tr) / n
        else:
            acc = self._acc[cols]
            acc = np.where((c >= 1) & (c <= n), acc + tr, acc)
            a = np.where(c > n, (a * (n - 1) + tr) / n, np.where(c == n, acc / n, a))
            self._acc[cols] = acc
        self._atr[cols], self._pc[cols] = a, cl
        return [_mask(a, c >= n)]


class DMI(StreamingIndicator):
    """Wilder's directional movement: +DI, -DI (lookback n) and ADX (lookback 2n-1)."""

    inputs = ("high", "low", "close")
    outputs = ("plus_di", "minus_di", "adx")

    def __init__(self, symbols: Sequence[str] | int, n: int = 14) -> None:
        super().__init__(symbols)
        self.n, self.lookback = n, 2 * n - 1
        self._ph, self._pl, self._pc = self._zeros(), self._zeros(), self._zeros()
        self._sp, self._sm, self._st, self._sdx, self._adx = (self._zeros() for _ in range(5))

    def _step(self, cols: Any, ci: np.ndarray, c: np.ndarray, x: list[np.ndarray]) -> list[np.ndarray]:
        h, lo, cl = x
        n = self.n
        dp, dm = h - self._ph[cols], self._pl[cols] - lo
        pdm = np.where((dp > 0) & (dp > dm), dp, 0.0)
        mdm = np.where((dm > 0) & (dp < dm), dm, 0.0)
        tr = _true_range(h, lo, self._pc[cols])
        sp, sm, st = self._sp[cols], self._sm[cols], self._st[cols]
        warm = (c >= 1) & (c <= n - 1)
        smooth = c >= n
        sp = np.where(smooth, sp - sp / n + pdm, np.where(warm, sp + pdm, sp))
        sm = np.where(smooth, sm - sm / n + mdm, np.where(warm, sm + mdm, sm))
        st = np.where(smooth, st - st / n + tr, np.where(warm, st + tr, st))
        tr_ok = ~_is_zero(st)
        safe_st = np.where(tr_ok, st, 1.0)
        pdi = np.where(tr_ok, 100.0 * (sp / safe_st), 0.0)
        mdi = np.where(tr_ok, 100.0 * (sm / safe_st), 0.0)
        tot = pdi + mdi
        dx_ok = tr_ok & ~_is_zero(tot)
        dx = np.where(dx_ok, 100.0 * (np.abs(mdi - pdi) / np.where(dx_ok, tot, 1.0)), 0.0)
        sdx = self._sdx[cols]
        sdx = np.where((c >= n) & (c <= 2 * n - 1), sdx + dx, sdx)
        adx = self._adx[cols]
        adx = np.where(c == 2 * n - 1, sdx / n, np.where((c >= 2 * n) & dx_ok, (adx * (n - 1) + dx) / n, adx))
        self._sp[cols], self._sm[cols], self._st[cols], self._sdx[cols], self._adx[cols] = sp, sm, st, sdx, adx
        self._ph[cols], self._pl[cols], self._pc[cols] = h, lo, cl
        di_ok = c >= n
        return [_mask(pdi, di_ok), _mask(mdi, di_ok), _mask(adx, c >= 2 * n - 1)]


class SAR(StreamingIndicator):
    """Parabolic SAR with TA-Lib's start (direction from bar 1's -DM); lookback 1."""

    inputs = ("high", "low")
    outputs = ("sar",)

    def __init__(self, symbols: Sequence[str] | int, acceleration: float = 0.02, maximum: float = 0.2) -> None:
        super().__init__(symbols)
        if acceleration > maximum:
            acceleration = maximum
        self.acc, self.max, self.lookback = acceleration, maximum, 1
        self._long = np.zeros(self.n_symbols, dtype=bool)
        self._sar, self._ep, self._af, self._ph, self._pl = (self._zeros() for _ in range(5))

    def _step(self, cols: Any, ci: np.ndarray, c: np.ndarray, x: list[np.ndarray]) -> list[np.ndarray]:
        h, lo = x
        acc, mx = self.acc, self.max
        ph0, pl0 = self._ph[cols], self._pl[cols]
        isl, sar, ep, af = self._long[cols], self._sar[cols], self._ep[cols], self._af[cols]
        first = c == 1
        if first.any():  # initialise from bars 0 and 1
            dp, dm = h - ph0, pl0 - lo
            init_long = ~((dm > 0) & (dp < dm))
            isl = np.where(first, init_long, isl)
            ep = np.where(first, np.where(init_long, h, lo), ep)
            sar = np.where(first, np.where(init_long, pl0, ph0), sar)
            af = np.where(first, acc, af)
        p_h = np.where(first, h, ph0)
        p_l = np.where(first, lo, pl0)
        # long, no reversal
        up = h > ep
        ep_ln = np.where(up, h, ep)
        af_ln = np.where(up, np.minimum(af + acc, mx), af)
        sar_ln = np.minimum(np.minimum(sar + af_ln * (ep_ln - sar), p_l), lo)
        # long -> short
        s1 = np.maximum(np.maximum(ep, p_h), h)
        sar_ls = np.maximum(np.maximum(s1 + acc * (lo - s1), p_h), h)
        # short, no reversal
        dn = lo < ep
        ep_sn = np.where(dn, lo, ep)
        af_sn = np.where(dn, np.minimum(af + acc, mx), af)
        sar_sn = np.maximum(np.maximum(sar + af_sn * (ep_sn - sar), p_h), h)
        # short -> long
        s2 = np.minimum(np.minimum(ep, p_l), lo)
        sar_ss = np.minimum(np.minimum(s2 + acc * (h - s2), p_l), lo)
        sw = np.where(isl, lo <= sar, h >= sar)
        out = np.where(sw, np.where(isl, s1, s2), sar)
        new_sar = np.where(isl, np.where(sw, sar_ls, sar_ln), np.where(sw, sar_ss, sar_sn))
        new_ep = np.where(isl, np.where(sw, lo, ep_ln), np.where(sw, h, ep_sn))
        new_af = np.where(sw, acc, np.where(isl, af_ln, af_sn))
        new_long = isl ^ sw
        started = c >= 1
        self._sar[cols] = np.where(started, new_sar, sar)
        self._ep[cols] = np.where(started, new_ep, ep)
        self._af[cols] = np.where(started, new_af, af)
        self._long[cols] = np.where(started, new_long, isl)
        self._ph[cols], self._pl[cols] = h, lo
        return [_mask(out, started)]


# ---------------------------------------------------------------------------------------------------------
# Window oscillators


class Stochastic(StreamingIndicator):
    """Slow stochastic %K and %D (simple-average smoothing); both start at bar fastk+slowk+slowd-3."""

    inputs = ("high", "low", "close")
    outputs = ("slowk", "slowd")

    def __init__(self, symbols: Sequence[str] | int, fastk: int = 5, slowk: int = 3, slowd: int = 3) -> None:
        super().__init__(symbols)
        self.fk, self.sk, self.sd = fastk, slowk, slowd
        self.lookback = fastk + slowk + slowd - 3
        self._hb, self._lb = self._ring(fastk), self._ring(fastk)
        self._kb, self._db = self._ring(slowk), self._ring(slowd)

    def _step(self, cols: Any, ci: np.ndarray, c: np.ndarray, x: list[np.ndarray]) -> list[np.ndarray]:
        h, lo, cl = x
        pos = c % self.fk
        self._hb[pos, ci], self._lb[pos, ci] = h, lo
        hh, ll = self._hb[:, cols].max(axis=0), self._lb[:, cols].min(axis=0)
        diff = (hh - ll) / 100.0
        nz = diff != 0
        fastk = np.where(nz, (cl - ll) / np.where(nz, diff, 1.0), 0.0)
        r1 = c - (self.fk - 1)
        self._kb[r1 % self.sk, ci] = fastk
        slowk = self._kb[:, cols].sum(axis=0) / self.sk
        r2 = r1 - (self.sk - 1)
        self._db[r2 % self.sd, ci] = slowk
        slowd = self._db[:, cols].sum(axis=0) / self.sd
        valid = c >= self.lookback
        return [_mask(slowk, valid), _mask(slowd, valid)]


class WilliamsR(StreamingIndicator):
    """Williams %R in [-100, 0]; lookback n-1."""

    inputs = ("high", "low", "close")
    outputs = ("willr",)

    def __init__(self, symbols: Sequence[str] | int, n: int = 14) -> None:
        super().__init__(symbols)
        self.n, self.lookback = n, n - 1
        self._hb, self._lb = self._ring(n), self._ring(n)

    def _step(self, cols: Any, ci: np.ndarray, c: np.ndarray, x: list[np.ndarray]) -> list[np.ndarray]:
        h, lo, cl = x
        pos = c % self.n
        self._hb[pos, ci], self._lb[pos, ci] = h, lo
        hh, ll = self._hb[:, cols].max(axis=0), self._lb[:, cols].min(axis=0)
        diff = (hh - ll) / -100.0
        nz = diff != 0
        return [_mask(np.where(nz, (hh - cl) / np.where(nz, diff, 1.0), 0.0), c >= self.n - 1)]


class ROC(StreamingIndicator):
    """Rate of change in percent over n bars; lookback n."""

    outputs = ("roc",)

    def __init__(self, symbols: Sequence[str] | int, n: int = 10) -> None:
        super().__init__(symbols)
        self.n, self.lookback = n, n
        self._buf = self._ring(n)

    def _step(self, cols: Any, ci: np.ndarray, c: np.ndarray, x: list[np.ndarray]) -> list[np.ndarray]:
        pos = c % self.n
        old = self._buf[pos, ci]
        self._buf[pos, ci] = x[0]
        nz = old != 0
        return [_mask(np.where(nz, (x[0] / np.where(nz, old, 1.0) - 1.0) * 100.0, 0.0), c >= self.n)]


class Bollinger(StreamingIndicator):
    """Bollinger bands: SMA +- k population std over the last n closes (two-pass over the ring buffer)."""

    outputs = ("upper", "middle", "lower")

    def __init__(self, symbols: Sequence[str] | int, n: int = 20, nbdev_up: float = 2.0, nbdev_dn: float = 2.0) -> None:
        super().__init__(symbols)
        self.n, self.lookback, self.up, self.dn = n, n - 1, nbdev_up, nbdev_dn
        self._buf = self._ring(n)

    def _step(self, cols: Any, ci: np.ndarray, c: np.ndarray, x: list[np.ndarray]) -> list[np.ndarray]:
        self._buf[c % self.n, ci] = x[0]
        win = self._buf[:, cols]
        m = win.sum(axis=0) / self.n
        var = ((win - m) ** 2).sum(axis=0) / self.n
        sd = np.where(var < _EPS_ZERO, 0.0, np.sqrt(var))
        valid = c >= self.n - 1
        return [_mask(m + self.up * sd, valid), _mask(m, valid), _mask(m - self.dn * sd, valid)]


class Keltner(StreamingIndicator):
    """Keltner channels: EMA(close, n) +- mult * ATR(atr_n); lookback max(n-1, atr_n)."""

    inputs = ("high", "low", "close")
    outputs = ("upper", "middle", "lower")

    def __init__(self, symbols: Sequence[str] | int, n: int = 20, atr_n: int = 10, mult: float = 2.0) -> None:
        super().__init__(symbols)
        self.mult, self.lookback = mult, max(n - 1, atr_n)
        self._ema, self._atr = EMA(self.n_symbols, n), ATR(self.n_symbols, atr_n)

    def _step(self, cols: Any, ci: np.ndarray, c: np.ndarray, x: list[np.ndarray]) -> list[np.ndarray]:
        (mid,) = self._ema._step(cols, ci, c, [x[2]])
        (a,) = self._atr._step(cols, ci, c, x)
        return [mid + self.mult * a, mid, mid - self.mult * a]


# ---------------------------------------------------------------------------------------------------------
# Volume


class OBV(StreamingIndicator):
    """On-balance volume, starting at the first bar's volume."""

    inputs = ("close", "volume")
    outputs = ("obv",)

    def __init__(self, symbols: Sequence[str] | int) -> None:
        super().__init__(symbols)
        self._obv, self._prev = self._zeros(), self._zeros()

    def _step(self, cols: Any, ci: np.ndarray, c: np.ndarray, x: list[np.ndarray]) -> list[np.ndarray]:
        cl, v = x
        prev = self._prev[cols]
        delta = np.where(cl > prev, v, np.where(cl < prev, -v, 0.0))
        o = np.where(c == 0, v, self._obv[cols] + delta)
        self._obv[cols], self._prev[cols] = o, cl
        return [o]


class AD(StreamingIndicator):
    """Chaikin accumulation/distribution line."""

    inputs = ("high", "low", "close", "volume")
    outputs = ("ad",)

    def __init__(self, symbols: Sequence[str] | int) -> None:
        super().__init__(symbols)
        self._ad = self._zeros()

    def _step(self, cols: Any, ci: np.ndarray, c: np.ndarray, x: list[np.ndarray]) -> list[np.ndarray]:
        h, lo, cl, v = x
        rng = h - lo
        ok = rng > 0
        add = np.where(ok, ((cl - lo) - (h - cl)) / np.where(ok, rng, 1.0) * v, 0.0)
        a = self._ad[cols] + add
        self._ad[cols] = a
        return [a]


class MFI(StreamingIndicator):
    """Money flow index on typical price; lookback n."""

    inputs = ("high", "low", "close", "volume")
    outputs = ("mfi",)

    def __init__(self, symbols: Sequence[str] | int, n: int = 14) -> None:
        super().__init__(symbols)
        self.n, self.lookback = n, n
        self._prev = self._zeros()
        self._pos, self._neg = self._ring(n), self._ring(n)

    def _step(self, cols: Any, ci: np.ndarray, c: np.ndarray, x: list[np.ndarray]) -> list[np.ndarray]:
        h, lo, cl, v = x
        tp = (h + lo + cl) / 3.0
        d = tp - self._prev[cols]
        mf = tp * v
        slot = (c - 1) % self.n
        self._pos[slot, ci] = np.where(d > 0, mf, 0.0)
        self._neg[slot, ci] = np.where(d < 0, mf, 0.0)
        self._prev[cols] = tp
        ps, ns = self._pos[:, cols].sum(axis=0), self._neg[:, cols].sum(axis=0)
        tot = ps + ns
        small = tot < 1.0
        out = np.where(small, 0.0, 100.0 * (ps / np.where(small, 1.0, tot)))
        return [_mask(out, c >= self.n)]


class RealizedVol(StreamingIndicator):
    """Rolling annualised close-to-close volatility (sample std of n log returns); lookback n."""

    outputs = ("rv",)

    def __init__(self, symbols: Sequence[str] | int, n: int = 20, periods_per_year: float = 252.0) -> None:
        super().__init__(symbols)
        self.n, self.lookback, self.scale = n, n, float(np.sqrt(periods_per_year))
        self._prev, self._buf = self._zeros(), self._ring(n)

    def _step(self, cols: Any, ci: np.ndarray, c: np.ndarray, x: list[np.ndarray]) -> list[np.ndarray]:
        lx = np.log(x[0])
        self._buf[(c - 1) % self.n, ci] = lx - self._prev[cols]
        self._prev[cols] = lx
        return [_mask(self._buf[:, cols].std(axis=0, ddof=1) * self.scale, c >= self.n)]


# ---------------------------------------------------------------------------------------------------------
# Many indicators over one universe


class FeatureBank:
    """Several streaming indicators over one symbol universe, advanced together from one bar batch.

    Output names are `<name>` for single-output indicators and `<name>_<output>` otherwise."""

    def __init__(self, symbols: Sequence[str], indicators: Mapping[str, StreamingIndicator]) -> None:
        self.symbols = list(symbols)
        for name, ind in indicators.items():
            if ind.symbols != self.symbols:
                raise ValueError(f"indicators: {name!r} is built on a different symbol universe")
        self.indicators = dict(indicators)
        self._router = StreamingIndicator(self.symbols)
        self.columns = [n if len(i.outputs) == 1 else f"{n}_{o}" for n, i in self.indicators.items() for o in i.outputs]

    def update(self, batch: pa.RecordBatch | pa.Table) -> pa.RecordBatch:
        """Advance every indicator by the bars in `batch` (BAR_SCHEMA) and return all their outputs."""
        batch, steps = self._router._arrow_steps(batch)
        cols = {}
        for name in ("open", "high", "low", "close", "volume"):
            if batch.schema.get_field_index(name) >= 0:
                cols[name] = np.asarray(pc.cast(batch.column(name), pa.float64()), dtype=np.float64)
        out = {c: np.empty(batch.num_rows) for c in self.columns}
        for a, b, idx in steps:
            col_iter = iter(self.columns)
            for ind in self.indicators.values():
                missing = [i for i in ind.inputs if i not in cols]
                if missing:
                    raise ValueError(f"{missing[0]}: missing column in bar batch")
                for v in ind._run(idx, [cols[i][a:b] for i in ind.inputs]):
                    out[next(col_iter)][a:b] = v
        arrays = [batch.column("ts"), batch.column("symbol"), *(pa.array(out[c]) for c in self.columns)]
        return pa.RecordBatch.from_arrays(arrays, names=["ts", "symbol", *self.columns])

    def warm_up(self, batches: Iterable[pa.RecordBatch], chunk: int = 512) -> int:
        """Advance the state over the bars up to a resume point, discarding the outputs; return the steps taken.

        Why: a restarted or resumed feature process must hold the state an undisturbed one holds, so the next
        `update` gives the same values. The batches go through in tables of `chunk` steps (one call each).
        """
        n = 0
        buf: list[pa.RecordBatch] = []
        for b in batches:
            if not b.num_rows:
                continue
            buf.append(b)
            if len(buf) == chunk:
                self.update(pa.Table.from_batches(buf))
                n, buf = n + len(buf), []
        if buf:
            self.update(pa.Table.from_batches(buf))
            n += len(buf)
        return n


__all__ = [
    "AD",
    "ATR",
    "DMI",
    "EMA",
    "MACD",
    "MFI",
    "OBV",
    "ROC",
    "RSI",
    "SAR",
    "SMA",
    "WMA",
    "Bollinger",
    "FeatureBank",
    "Keltner",
    "RealizedVol",
    "Stochastic",
    "StreamingIndicator",
    "WilliamsR",
]
