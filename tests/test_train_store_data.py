"""Training inputs from the offline feature store: point-in-time features on the returns' bar calendar.

References: `pandas.merge_asof` (direction="backward", per symbol, tolerance = ttl, on label time - lag) over the
same rows that were written to the store; the S&P 500 returns themselves for the labels. Planted "future" rows
(stamped just after a bar's close, or inside the lag) check that no window ever contains a value from after its
decision time, while the next bar does see them (so the check is not vacuous).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tradesys.data.returns import load_returns
from tradesys.featurestore import FeatureDefinition, FeatureRef, OfflineStore
from tradesys.train.data import make_samples
from tradesys.train.store_data import feature_frame, load_store_inputs, parse_feature_spec, returns_from_store

SYM = "SPX"
PLANT = 1e6  # a value no real feature takes


@pytest.fixture(scope="module")
def returns() -> pd.Series:
    r = load_returns("sp500").iloc[-160:, 0]
    r.index = r.index.tz_localize("UTC") + pd.Timedelta("20h")  # bar close, 20:00 UTC
    return r.rename(SYM)


def intraday_rows(r: pd.Series, rng: np.random.Generator) -> pd.DataFrame:
    """An irregular feature: 0-3 updates a day at random times (before or after the close), value = a counter."""
    rows = []
    k = 0
    for day in r.index.normalize():
        for _ in range(int(rng.integers(0, 4))):
            k += 1
            rows.append({"symbol": SYM, "ts": day + pd.Timedelta(int(rng.integers(0, 86_400)), "s"), "x": float(k)})
    return pd.DataFrame(rows)


@pytest.fixture()
def store(tmp_path: Path, returns: pd.Series) -> tuple[OfflineStore, pd.DataFrame]:
    st = OfflineStore(tmp_path)
    st.register(FeatureDefinition("returns", 1, {"r": "float64"}, transform="pct_change"))
    st.register(FeatureDefinition("rv", 1, {"rv5": "float64", "rv22": "float64"}, transform="rolling-rms"))
    st.register(FeatureDefinition("tick", 1, {"x": "float64"}, transform="counter"))
    st.write("returns", 1, pd.DataFrame({"symbol": SYM, "ts": returns.index, "r": returns.to_numpy()}))
    other = returns.iloc[:50] * 2
    st.write("returns", 1, pd.DataFrame({"symbol": "OTHER", "ts": other.index, "r": other.to_numpy()}))
    r2 = returns * returns
    rv = pd.DataFrame({"symbol": SYM, "ts": returns.index, "rv5": np.sqrt(r2.rolling(5).mean()).to_numpy(),
                       "rv22": np.sqrt(r2.rolling(22).mean()).to_numpy()}).dropna()  # fmt: skip
    st.write("rv", 1, rv)
    ticks = intraday_rows(returns, np.random.default_rng(7))
    st.write("tick", 1, ticks)
    return st, ticks


def asof_reference(
    rows: pd.DataFrame, times: pd.DatetimeIndex, col: str, lag: str | None, ttl: str | None
) -> np.ndarray:
    left = pd.DataFrame({"symbol": SYM, "cut": times - pd.Timedelta(lag or 0), "_i": np.arange(len(times))})
    right = rows[["symbol", "ts", col]].sort_values("ts")
    m = pd.merge_asof(left.sort_values("cut"), right, left_on="cut", right_on="ts", by="symbol",
                      direction="backward", tolerance=None if ttl is None else pd.Timedelta(ttl))  # fmt: skip
    return m.sort_values("_i")[col].to_numpy(dtype=float)


def test_returns_and_calendar_come_from_the_store(store, returns: pd.Series) -> None:
    st, _ = store
    r = returns_from_store(st, "returns:1", SYM)
    assert r.name == SYM and r.index.equals(returns.index)
    np.testing.assert_array_equal(r.to_numpy(), returns.to_numpy())
    with pytest.raises(ValueError, match=r"^symbol: .*holds 2 symbols"):
        returns_from_store(st, "returns", None)
    with pytest.raises(ValueError, match=r"^symbol: no 'returns' v1 rows for 'NOPE'"):
        returns_from_store(st, "returns", "NOPE")
    with pytest.raises(ValueError, match=r"^returns_feature: 'zz' is not a column"):
        returns_from_store(st, "returns.zz", SYM)


@pytest.mark.parametrize(("lag", "ttl"), [(None, None), ("2h", None), (None, "30h"), ("1h", "20h")])
def test_feature_frame_equals_merge_asof(store, returns: pd.Series, lag: str | None, ttl: str | None) -> None:
    st, ticks = store
    ref = asof_reference(ticks, returns.index, "x", lag, ttl)
    first = int(np.argmax(~np.isnan(ref)))
    gaps = np.flatnonzero(np.isnan(ref[first:]))
    if gaps.size:  # a ttl gap after the first value is refused, naming the column and the reference's first gap
        at = returns.index[first + gaps[0]]
        with pytest.raises(
            ValueError, match=rf"^features: .tick_v1__x. has no value at {re.escape(str(at))} after its first one"
        ):
            feature_frame(st, [FeatureRef("tick", 1, lag=lag, ttl=ttl)], returns.index, SYM)
        return
    got = feature_frame(st, [FeatureRef("tick", 1, lag=lag, ttl=ttl)], returns.index, SYM)
    assert list(got.columns) == ["tick_v1__x"] and got.index.equals(returns.index)
    np.testing.assert_array_equal(got["tick_v1__x"].to_numpy(), ref)  # NaN (warm-up) in the same places


def test_ttl_gap_is_refused_and_the_reference_agrees(store, returns: pd.Series) -> None:
    """With a 2h ttl most bars have no fresh tick: merge_asof has NaNs after the first value, the store refuses."""
    st, ticks = store
    ref = asof_reference(ticks, returns.index, "x", None, "2h")
    first = int(np.argmax(~np.isnan(ref)))
    assert np.isnan(ref[first:]).any()
    with pytest.raises(ValueError, match=r"^features: 'tick_v1__x' has no value at"):
        feature_frame(st, [FeatureRef("tick", 1, ttl="2h")], returns.index, SYM)


def test_planted_future_rows_never_reach_an_earlier_window(store, returns: pd.Series) -> None:
    st, ticks = store
    bar = returns.index
    k = 100
    planted = pd.DataFrame({"symbol": SYM, "ts": [bar[k] + pd.Timedelta(1, "ns"),  # 1 ns after bar k's close
                                                  bar[k + 10] - pd.Timedelta("30min")],  # inside a 1h lag of bar k+10
                            "x": [PLANT, 2 * PLANT]})  # fmt: skip
    st.write("tick", 1, planted)
    rows = pd.concat([ticks, planted], ignore_index=True)
    got = feature_frame(st, [FeatureRef("tick", 1, lag="1h")], bar, SYM)["tick_v1__x"].to_numpy()
    np.testing.assert_array_equal(got, asof_reference(rows, bar, "x", "1h", None))
    assert got[k] != PLANT and PLANT not in got[:k]
    # the next bar does see it (no newer tick before its lagged cut): the plant is real, not filtered out
    assert not ticks["ts"].between(bar[k], bar[k + 1] - pd.Timedelta("1h")).any()
    assert got[k + 1] == PLANT
    assert 2 * PLANT not in got[: k + 11]  # 30 min before bar k+10 is inside its 1h lag

    inp = load_store_inputs(st, [FeatureRef("tick", 1, lag="1h"), "rv:1"], returns="returns:1", symbol=SYM)
    s = make_samples(inp.returns, features=inp.features, lookback=5, vol_horizon=3)
    plant_col = list(inp.features.columns).index("tick_v1__x")
    for i in range(len(s)):
        decided = s.index[i]
        has = (s.X[i, :, plant_col] == np.float32(PLANT)).any()
        assert not has or decided >= bar[k + 1]  # the value is only usable from the next bar on
    # labels: the store's returns one bar after each decision row, the bars being the store's calendar
    pos = returns.index.get_indexer(s.index)
    np.testing.assert_array_equal(s.y_ret, returns.to_numpy()[pos + 1])
    assert inp.features.index.equals(returns.index) and inp.symbol == SYM


def test_inputs_match_a_pandas_rebuild_of_the_windows(store, returns: pd.Series) -> None:
    st, ticks = store
    inp = load_store_inputs(st, ["rv:1", "tick:1.x"], symbol=SYM)
    expect = pd.DataFrame({
        "rv_v1__rv5": asof_reference(st.read("rv", 1).to_pandas(), returns.index, "rv5", None, None),
        "rv_v1__rv22": asof_reference(st.read("rv", 1).to_pandas(), returns.index, "rv22", None, None),
        "tick_v1__x": asof_reference(ticks, returns.index, "x", None, None),
    }, index=returns.index)  # fmt: skip
    pd.testing.assert_frame_equal(inp.features, expect, check_names=False, check_freq=False)
    s = make_samples(inp.returns, features=inp.features, lookback=4, vol_horizon=2)
    clean = expect.dropna()
    first = returns.index.get_loc(clean.index[0])
    # sample 0 decides at the 4th complete row; its window is rows 0..3 of the complete frame
    np.testing.assert_allclose(s.X[0], clean.iloc[:4].to_numpy(np.float32))
    r = returns.to_numpy()
    assert s.y_vol[0] == pytest.approx(np.sqrt(np.mean(r[first + 4 : first + 6] ** 2)))


def test_bad_specs_and_columns_are_named() -> None:
    assert parse_feature_spec("rv:2") == FeatureRef("rv", 2)
    assert parse_feature_spec("micro.spread+imb", lag="1h") == FeatureRef("micro", None, ["spread", "imb"], lag="1h")
    with pytest.raises(ValueError, match=r"^features: version 'x'"):
        parse_feature_spec("rv:x")
    with pytest.raises(ValueError, match=r"^features: .* has no feature name"):
        parse_feature_spec(":1")
    with pytest.raises(ValueError, match=r"^feature_ttl: "):
        parse_feature_spec("rv", ttl="-1h")


def test_non_numeric_feature_and_missing_store_are_refused(tmp_path: Path, returns: pd.Series) -> None:
    st = OfflineStore(tmp_path)
    st.register(FeatureDefinition("venue", 1, {"v": "string"}, transform="t"))
    st.write("venue", 1, pd.DataFrame({"symbol": SYM, "ts": returns.index, "v": "XNYS"}))
    with pytest.raises(ValueError, match=r"^features: column 'venue_v1__v' is not numeric"):
        feature_frame(st, ["venue:1"], returns.index, SYM)
    with pytest.raises(ValueError, match=r"^data: feature store root .* is not a directory"):
        feature_frame(f"store:{tmp_path / 'nope'}", ["venue:1"], returns.index, SYM)
