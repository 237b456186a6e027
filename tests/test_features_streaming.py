"""Streaming indicators == batch indicators (TA-Lib), for every indicator, across many symbols at once.

Panel: the real S&P 500 and NASDAQ daily OHLCV bars from `arch` (1999-2018) next to 30 seeded synthetic
intraday symbols. The batch side is tradesys.features.technical (TA-Lib calls, or numpy where TA-Lib has no
such indicator); the streaming side is fed bar by bar, in random chunks, and as Arrow bar batches with symbols
missing at some timestamps. Tolerance: 1e-10 relative (absolute below magnitude 1).
"""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pytest

from tradesys.core.schemas import BAR_SCHEMA
from tradesys.features import streaming as S
from tradesys.features import technical as T

N_BARS = 1200


def _panel() -> dict[str, np.ndarray]:
    import arch.data.nasdaq as nasdaq
    import arch.data.sp500 as sp500

    from tradesys.data.historical import bars_table
    from tradesys.data.synthetic import SyntheticParams, simulate_bars

    real = [sp500.load().iloc[-N_BARS:], nasdaq.load().iloc[-N_BARS:]]
    syms = tuple(f"S{i:02d}" for i in range(30))
    p = SyntheticParams(symbols=syms, days=4, bar_seconds=60, seed=11, sigma=0.3)
    tab = bars_table(simulate_bars(p))
    n_syn = len(syms)
    t_syn = tab.num_rows // n_syn
    assert t_syn >= N_BARS
    out = {}
    for col, rcol in (("open", "Open"), ("high", "High"), ("low", "Low"), ("close", "Close"), ("volume", "Volume")):
        syn = tab.column(col).to_numpy().reshape(t_syn, n_syn)[:N_BARS]
        rl = np.column_stack([f[rcol].to_numpy(dtype=float) for f in real])
        out[col] = np.column_stack([rl, syn])
    return out


PANEL = _panel()
SYMBOLS = ["SP500", "NASDAQ", *(f"S{i:02d}" for i in range(30))]
H, L, C, V = PANEL["high"], PANEL["low"], PANEL["close"], PANEL["volume"]

# (factory, batch reference producing the outputs in the streaming class's output order)
CASES = {
    "sma": (lambda s: S.SMA(s, 20), lambda: [T.sma(C, 20)]),
    "ema": (lambda s: S.EMA(s, 20), lambda: [T.ema(C, 20)]),
    "wma": (lambda s: S.WMA(s, 15), lambda: [T.wma(C, 15)]),
    "macd": (lambda s: S.MACD(s, 12, 26, 9), lambda: list(T.macd(C, 12, 26, 9))),
    "macd_swapped": (lambda s: S.MACD(s, 26, 12, 5), lambda: list(T.macd(C, 26, 12, 5))),
    "rsi": (lambda s: S.RSI(s, 14), lambda: [T.rsi(C, 14)]),
    "atr": (lambda s: S.ATR(s, 14), lambda: [T.atr(H, L, C, 14)]),
    "dmi": (lambda s: S.DMI(s, 14), lambda: list(T.dmi(H, L, C, 14))),
    "sar": (lambda s: S.SAR(s), lambda: [T.sar(H, L)]),
    "stoch": (lambda s: S.Stochastic(s, 5, 3, 3), lambda: list(T.stoch(H, L, C, 5, 3, 3))),
    "willr": (lambda s: S.WilliamsR(s, 14), lambda: [T.willr(H, L, C, 14)]),
    "roc": (lambda s: S.ROC(s, 10), lambda: [T.roc(C, 10)]),
    "bollinger": (lambda s: S.Bollinger(s, 20, 2.0, 1.5), lambda: list(T.bollinger(C, 20, 2.0, 1.5))),
    "keltner": (lambda s: S.Keltner(s, 20, 10, 2.0), lambda: list(T.keltner(H, L, C, 20, 10, 2.0))),
    "obv": (lambda s: S.OBV(s), lambda: [T.obv(C, V)]),
    "ad": (lambda s: S.AD(s), lambda: [T.ad(H, L, C, V)]),
    "mfi": (lambda s: S.MFI(s, 14), lambda: [T.mfi(H, L, C, V, 14)]),
    "realized_vol": (lambda s: S.RealizedVol(s, 20), lambda: [T.realized_vol(C, 20)]),
}
REFS = {k: v[1]() for k, v in CASES.items()}


def _close(got: np.ndarray, ref: np.ndarray, what: str) -> None:
    assert got.shape == ref.shape, what
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=f"{what}: warm-up NaNs differ")
    m = ~np.isnan(ref)
    err = np.abs(got[m] - ref[m]) / np.maximum(1.0, np.abs(ref[m]))
    assert err.max(initial=0.0) < 1e-10, f"{what}: max rel err {err.max():.3e}"


def _inputs(ind: S.StreamingIndicator, rows: slice | np.ndarray = slice(None), cols: slice | np.ndarray = slice(None)):
    return {k: PANEL[k][rows][:, cols] for k in ind.inputs}


@pytest.mark.parametrize("name", list(CASES))
def test_bar_by_bar_matches_batch(name: str) -> None:
    ind = CASES[name][0](SYMBOLS)
    outs = {o: [] for o in ind.outputs}
    for t in range(N_BARS):
        res = ind.update({k: PANEL[k][t] for k in ind.inputs})
        for o in ind.outputs:
            outs[o].append(res[o])
    for o, ref in zip(ind.outputs, REFS[name], strict=True):
        _close(np.vstack(outs[o]), ref, f"{name}.{o}")
    assert (ind.count == N_BARS).all()


@pytest.mark.parametrize("name", list(CASES))
def test_random_chunks_match_batch(name: str) -> None:
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    ind = CASES[name][0](len(SYMBOLS))
    cuts = np.unique(np.concatenate([[0, N_BARS], rng.integers(1, N_BARS, 40)]))
    parts = {o: [] for o in ind.outputs}
    for a, b in itertools.pairwise(cuts):
        res = ind.update(_inputs(ind, slice(a, b)))
        for o in ind.outputs:
            parts[o].append(res[o])
    for o, ref in zip(ind.outputs, REFS[name], strict=True):
        _close(np.vstack(parts[o]), ref, f"{name}.{o}")


def test_symbol_subsets_advance_independently() -> None:
    """Symbols that skip timestamps must see exactly their own bar sequence (per-symbol state and counts)."""
    rng = np.random.default_rng(3)
    n = len(SYMBOLS)
    present = rng.random((300, n)) < 0.6
    for name, (factory, _) in CASES.items():
        ind = factory(n)
        seqs = [[] for _ in range(n)]
        for t in range(300):
            idx = np.flatnonzero(present[t])
            res = ind.update({k: PANEL[k][t, idx] for k in ind.inputs}, index=idx)
            for j, s in enumerate(idx):
                seqs[s].append((t, {o: res[o][j] for o in ind.outputs}))
        for s in range(n):
            rows = present[:, s].nonzero()[0]
            ref_ind = factory(1)
            ref = ref_ind.update({k: PANEL[k][rows, s][:, None] for k in ind.inputs})
            for o in ind.outputs:
                got_o = np.array([v[o] for _, v in seqs[s]])[:, None]
                _close(got_o, ref[o], f"{name}.{o} symbol {s}")


def _arrow_batch(t: int, idx: np.ndarray) -> pa.RecordBatch:
    ts = np.full(idx.size, 1_700_000_000_000_000_000 + t * 60_000_000_000, dtype=np.int64)
    cols = {
        "ts": pa.array(ts, type=BAR_SCHEMA.field("ts").type),
        "symbol": pa.array([SYMBOLS[i] for i in idx]),
    }
    for k in ("open", "high", "low", "close", "volume"):
        cols[k] = pa.array(PANEL[k][t, idx])
    return pa.RecordBatch.from_pydict(cols, schema=BAR_SCHEMA)


def test_arrow_batches_and_feature_bank() -> None:
    """Arrow bar batches (one per timestamp, symbols shuffled) through a FeatureBank equal the batch values."""
    rng = np.random.default_rng(5)
    names = ["rsi", "dmi", "macd", "mfi"]
    bank = S.FeatureBank(SYMBOLS, {k: CASES[k][0](SYMBOLS) for k in names})
    n_t = 400
    got = {c: np.full((n_t, len(SYMBOLS)), np.nan) for c in bank.columns}
    for t in range(n_t):
        idx = rng.permutation(len(SYMBOLS))
        out = bank.update(_arrow_batch(t, idx))
        pos = np.array([SYMBOLS.index(s) for s in out.column("symbol").to_pylist()])
        for c in bank.columns:
            got[c][t, pos] = out.column(c).to_numpy(zero_copy_only=False)
    for k in names:
        outs = CASES[k][0](1).outputs
        for o, ref in zip(outs, REFS[k], strict=True):
            col = k if len(outs) == 1 else f"{k}_{o}"
            _close(got[col], ref[:n_t], f"bank {col}")
    # a single indicator takes an Arrow batch too, with several timestamps in one batch
    ind = S.SMA(SYMBOLS, 5)
    multi = pa.Table.from_batches([_arrow_batch(t, np.arange(len(SYMBOLS))) for t in range(10)])
    res = ind.update(multi)
    np.testing.assert_allclose(
        res.column("sma").to_numpy(zero_copy_only=False).reshape(10, -1), T.sma(C[:10], 5), rtol=1e-12
    )


def test_no_look_ahead_in_batch_functions() -> None:
    """Changing bars after t never changes any batch indicator value at or before t (the panel is bumped in
    place; the batch lambdas read the same arrays)."""
    t0 = 700
    rng = np.random.default_rng(9)
    bump = 1.0 + 0.2 * rng.random((N_BARS - t0 - 1, len(SYMBOLS)))
    saved = {k: v.copy() for k, v in PANEL.items()}
    try:
        for k in PANEL:
            PANEL[k][t0 + 1 :] *= bump
        PANEL["high"][t0 + 1 :] = np.maximum(PANEL["high"][t0 + 1 :], PANEL["close"][t0 + 1 :])
        for name, (_, batch) in CASES.items():
            for new, old in zip(batch(), REFS[name], strict=True):
                np.testing.assert_array_equal(new[: t0 + 1], old[: t0 + 1], err_msg=name)
                assert not np.allclose(new[t0 + 40 :], old[t0 + 40 :], equal_nan=True), f"{name}: bump had no effect"
    finally:
        for k in PANEL:
            PANEL[k][:] = saved[k]


def test_bad_input_names_the_field() -> None:
    ind = S.ATR(SYMBOLS, 14)
    with pytest.raises(ValueError, match="close: missing"):
        ind.update({"high": H[0], "low": L[0]})
    with pytest.raises(ValueError, match="high: last axis"):
        ind.update({"high": H[0, :3], "low": L[0, :3], "close": C[0, :3]})
    with pytest.raises(ValueError, match="index: a symbol appears twice"):
        ind.update({"high": H[0, :2], "low": L[0, :2], "close": C[0, :2]}, index=[1, 1])
    bad = _arrow_batch(0, np.arange(3)).to_pydict()
    bad["symbol"][1] = "NOPE"
    with pytest.raises(ValueError, match="symbol: 'NOPE'"):
        ind.update(pa.RecordBatch.from_pydict(bad, schema=BAR_SCHEMA))
    with pytest.raises(ValueError, match="symbols: duplicate"):
        S.SMA(["A", "A"], 3)
