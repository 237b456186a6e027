"""Microstructure, cross-asset and macro features against closed forms, planted parameters and hand counts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tradesys.core.schemas import QUOTE_SCHEMA, TRADE_SCHEMA
from tradesys.features import cross_asset as X
from tradesys.features import microstructure as M
from tradesys.features.macro import asof_macro, load_macro


def test_spread_relative_spread_depth_and_crossed_quotes() -> None:
    bid, ask = np.array([99.0, 100.0, 101.0, 0.0]), np.array([101.0, 100.5, 100.0, 1.0])
    s = M.quoted_spread(bid, ask)
    np.testing.assert_allclose(s.value[:2], [2.0, 0.5])
    assert np.isnan(s.value[2:]).all() and list(s.reason) == [M.OK, M.OK, M.CROSSED, M.CROSSED]
    np.testing.assert_allclose(M.relative_spread(bid, ask).value[:2], [2.0 / 100.0, 0.5 / 100.25])
    np.testing.assert_allclose(M.depth([100, 200], [300, 50]), [400, 250])


def test_ofi_hand_computed_sequence() -> None:
    # events: (bid, ask, bid_size, ask_size)
    ev = np.array(
        [
            [10.00, 10.02, 100, 200],
            [10.00, 10.02, 150, 200],  # bid size up 50 -> +50
            [10.01, 10.02, 80, 200],  # bid price up -> +80 (new bid queue)
            [10.01, 10.02, 80, 120],  # ask size down 80 -> +80
            [10.00, 10.02, 300, 120],  # bid price down -> -80 (old queue gone)
            [10.00, 10.01, 300, 40],  # ask price down -> -40 (new ask queue)
            [10.00, 10.02, 300, 500],  # ask price up -> +40 (old ask queue gone)
        ]
    )
    ofi = M.order_flow_imbalance(ev[:, 0], ev[:, 1], ev[:, 2], ev[:, 3])
    assert np.isnan(ofi[0])
    np.testing.assert_allclose(ofi[1:], [50, 80, 80, -80, -40, 40])
    # two symbols interleaved: each group's sequence is its own
    both = np.repeat(ev, 2, axis=0)
    grp = np.tile(["A", "B"], len(ev))
    ofi2 = M.order_flow_imbalance(both[:, 0], both[:, 1], both[:, 2], both[:, 3], group=grp)
    np.testing.assert_allclose(ofi2[2:][::2], ofi[1:])
    np.testing.assert_allclose(ofi2[3:][::2], ofi[1:])


def test_kyle_lambda_recovers_planted_impact() -> None:
    rng = np.random.default_rng(1)
    lam = 2.5e-5
    q = rng.normal(0, 1000, 20_000) * rng.choice([-1, 1], 20_000)
    dp = lam * q + rng.normal(0, 0.005, q.size)
    est = M.kyle_lambda(dp, q, window=2000)
    assert np.isnan(est[:1999]).all()
    # standard error of the OLS slope ~ 0.005 / (1000 sqrt(2000)) ~ 1.1e-7
    assert abs(np.nanmedian(est) - lam) < 5e-7
    np.testing.assert_allclose(est[-1], np.polyfit(q[-2000:], dp[-2000:], 1)[0], rtol=1e-9)


def test_roll_measure_recovers_half_spread_of_simulated_roll_model() -> None:
    rng = np.random.default_rng(2)
    n, c = 50_000, 0.05  # half-spread
    m = 100 + np.cumsum(rng.normal(0, 0.01, n))
    p = m + c * rng.choice([-1.0, 1.0], n)
    r = M.roll_spread(p, window=n - 1)
    assert r.reason[-1] == M.OK and (r.reason[: n - 1] == M.WARMUP).all()
    # Roll: cov(dp_t, dp_t-1) = -c^2, spread = 2c
    assert r.value[-1] / 2 == pytest.approx(c, rel=0.03)
    # pure random walk with momentum: positive autocovariance -> NaN with reason
    trend = np.cumsum(np.cumsum(rng.normal(0, 0.01, 500)))
    rt = M.roll_spread(trend, window=100)
    assert (rt.reason[100:] == M.POSITIVE_COV).mean() > 0.9 and np.isnan(rt.value[rt.reason != M.OK]).all()


def test_amihud_matches_definition() -> None:
    rng = np.random.default_rng(3)
    r = rng.normal(0, 0.01, 300)
    dv = rng.uniform(1e6, 1e7, 300)
    got = M.amihud(r, dv, window=20)
    ref = pd.Series(np.abs(r) / dv).rolling(20).mean().to_numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-12, equal_nan=True)


def _ts(seconds: list[float]) -> pa.Array:
    return pa.array((np.array(seconds) * 1e9).astype(np.int64) + 1_700_000_000 * 10**9, QUOTE_SCHEMA.field("ts").type)


def test_effective_spread_uses_prevailing_quote_only() -> None:
    quotes = pa.table(
        {
            "ts": _ts([0, 0, 5, 10]),
            "symbol": ["A", "B", "A", "A"],
            "bid": [10.00, 20.00, 10.10, 10.20],
            "ask": [10.02, 20.10, 10.14, 10.22],
            "bid_size": [1.0, 1, 1, 1],
            "ask_size": [1.0, 1, 1, 1],
        },
        schema=QUOTE_SCHEMA,
    )
    trades = pa.table(
        {
            "ts": _ts([1, 2, 5, 9.999, 3, -1, 6]),
            "symbol": ["A", "B", "A", "A", "A", "A", "A"],
            "price": [10.02, 20.00, 10.14, 10.11, 10.01, 10.0, (10.10 + 10.14) / 2],
            "size": [100.0] * 7,
            "aggressor": pa.array([1, -1, 1, 0, 0, 1, 0], pa.int8()),
        },
        schema=TRADE_SCHEMA,
    )
    es = M.effective_spread(trades, quotes)
    # 2 q (p - m): mids A=10.01 until t=5, 10.12 from t=5 (at-or-before), 10.21 from t=10 (future: unused)
    expected = [2 * (10.02 - 10.01), 2 * (20.05 - 20.00), 2 * (10.14 - 10.12), 2 * (10.11 - 10.12) * -1]
    np.testing.assert_allclose(es["effective_spread"].to_numpy()[:4], expected, rtol=1e-9)
    assert list(es["reason"]) == [M.OK, M.OK, M.OK, M.OK, M.NO_SIGN, M.NO_QUOTE, M.NO_SIGN]
    assert np.isnan(es["effective_spread"].to_numpy()[4:]).all()


def test_quote_features_table() -> None:
    quotes = pa.table(
        {
            "ts": _ts([0, 0, 1, 1]),
            "symbol": ["A", "B", "A", "B"],
            "bid": [10.0, 5.0, 10.01, 5.0],
            "ask": [10.02, 5.01, 10.02, 5.01],
            "bid_size": [100.0, 10, 70, 10],
            "ask_size": [200.0, 10, 200, 30],
        },
        schema=QUOTE_SCHEMA,
    )
    f = M.quote_features(quotes).to_pandas()
    np.testing.assert_allclose(f["ofi"].to_numpy()[2:], [70.0, -20.0])
    np.testing.assert_allclose(f["depth"], [300, 20, 270, 40])


def test_trade_intensity_and_large_trades() -> None:
    ts = (np.array([0, 0.5, 1.0, 1.2, 3.0, 3.1]) * 1e9).astype(np.int64)
    # trailing 1 s window (t-1s, t]: counts 1, 2, 2, 3, 1, 2
    np.testing.assert_allclose(M.trade_intensity(ts, 10**9), [1, 2, 2, 3, 1, 2])
    rng = np.random.default_rng(4)
    size = rng.lognormal(4, 0.3, 2000)
    planted = rng.choice(np.arange(200, 2000), 15, replace=False)
    size[planted] *= 20
    flags = M.large_trades(size, window=100, multiple=5.0)
    assert set(np.flatnonzero(flags)) == set(planted)
    # no look-ahead: changing later trades does not change earlier flags
    size2 = size.copy()
    size2[1000:] = 1.0
    np.testing.assert_array_equal(M.large_trades(size2, 100, 5.0)[:1000], flags[:1000])


def test_bad_input_names_field() -> None:
    with pytest.raises(ValueError, match="window: must be"):
        M.kyle_lambda([1, 2, 3], [1, 2, 3], window=1)
    with pytest.raises(ValueError, match="bid,ask: arrays have different lengths"):
        M.quoted_spread([1.0], [1.0, 2.0])


# ----------------------------------------------------------------------------------------- cross-asset


def _returns() -> pd.DataFrame:
    from skfolio.datasets import load_sp500_dataset

    return load_sp500_dataset().iloc[-800:].pct_change().dropna()


def test_rolling_corr_and_beta_match_pandas() -> None:
    r = _returns()
    x, y = r.iloc[:, 0], r.iloc[:, 1:6]
    corr = X.rolling_corr(x.to_numpy(), y.to_numpy(), window=60)
    ref = y.rolling(60).corr(x).to_numpy()
    np.testing.assert_allclose(corr, ref, rtol=1e-9, atol=1e-12, equal_nan=True)
    beta = X.rolling_beta(y.to_numpy(), x.to_numpy(), window=60)
    ref_b = (y.rolling(60).cov(x).T / x.rolling(60).var()).T.to_numpy()
    np.testing.assert_allclose(beta, ref_b, rtol=1e-9, atol=1e-12, equal_nan=True)


def test_lead_lag_finds_planted_lag() -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(size=3000)
    y = np.r_[np.zeros(3), 0.7 * x[:-3]] + 0.5 * rng.normal(size=3000)  # y_t = 0.7 x_{t-3} + e
    lags, c = X.lead_lag(x, y, max_lag=6)
    assert lags[np.argmax(c)] == 3
    assert c[np.argmax(c)] == pytest.approx(0.7 / np.sqrt(0.49 + 0.25), abs=0.03)


# ----------------------------------------------------------------------------------------- macro


def test_macro_series_and_release_timing() -> None:
    m = load_macro()
    assert set(m["series"]) == {"core_cpi", "aaa", "baa", "default_spread", "wti"}
    assert (m["available_at"] > m["period"]).all()
    spread = m[m.series == "default_spread"].set_index("period")["value"]
    aaa = m[m.series == "aaa"].set_index("period")["value"]
    baa = m[m.series == "baa"].set_index("period")["value"]
    np.testing.assert_allclose(spread, baa - aaa)
    # Dec-2007 core CPI (213.168 per arch/FRED) is public from 2008-01-15 13:30 UTC, not before
    ts = pd.DatetimeIndex(["2008-01-15 13:29", "2008-01-15 13:30", "2008-01-20"], tz="UTC")
    w = asof_macro(m, ts, ("core_cpi",))
    assert w["core_cpi"].iloc[0] != pytest.approx(213.168)
    assert w["core_cpi"].iloc[1] == pytest.approx(213.168) and w["core_cpi"].iloc[2] == pytest.approx(213.168)


def test_macro_asof_has_no_look_ahead() -> None:
    m = load_macro()
    ts = pd.date_range("2000-01-01", "2018-06-01", freq="7D", tz="UTC")
    base = asof_macro(m, ts)
    planted = m.copy()
    future = planted["available_at"] > pd.Timestamp("2010-01-01", tz="UTC")
    planted.loc[future, "value"] = 1e9
    after = asof_macro(planted, ts)
    before_2010 = ts <= pd.Timestamp("2010-01-01", tz="UTC")
    pd.testing.assert_frame_equal(after[before_2010], base[before_2010])
    # once a post-2010 release exists for every series (the Dec-2009 CPI comes out 2010-01-15), all are planted
    assert (after[ts >= pd.Timestamp("2010-01-16", tz="UTC")] == 1e9).all().all()
