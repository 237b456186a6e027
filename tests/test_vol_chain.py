"""Chain fitter: synthetic chains priced by `bsm_price` from a known arbitrage-free surface (SVI slices with rising
total variance, or SABR), with bid/ask around the true price. Checks the forward recovered from put-call parity,
vol(K, T) against the true surface within the spread, the report, cleaning counts, bad columns, planted calendar
and quote arbitrage, the JSON round trip and the PNG."""

from __future__ import annotations

import json
import math

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from tradesys.quant.options.european import bsm_greeks, bsm_price
from tradesys.quant.vol import (
    FittedSurface,
    SabrParams,
    SabrSlice,
    SviParams,
    SviSlice,
    VolSurface,
    fit_chain,
    plot_surface,
)

S, R, Q = 100.0, 0.03, 0.015
TS = (0.1, 0.25, 0.5, 1.0, 2.0)


def _true_surface() -> VolSurface:
    slices = [
        SviSlice(
            T,
            S * math.exp((R - Q) * T),
            SviParams(
                0.002 + 0.018 * T,
                0.04 + 0.06 * math.sqrt(T),
                -0.6 + 0.1 * T,
                0.01 + 0.02 * T,
                0.08 + 0.12 * math.sqrt(T),
            ),
        )
        for T in TS
    ]
    return VolSurface(slices, spot=S)


def _chain(
    surf: VolSurface,
    *,
    noise: float = 0.0,
    seed: int = 0,
    dividend_column: float = 0.0,
    types: tuple[bool, ...] = (True, False),
    n_strikes: int = 21,
) -> pd.DataFrame:
    """Calls and puts on each expiry's strikes, priced at the true vols with S, R, Q; half-spread 0.2 vol points of
    vega plus half a cent; the mid moves by up to +-noise half-spreads. The dividend column deliberately holds
    `dividend_column`, not Q: only put-call parity gives the right forward."""
    rng = np.random.default_rng(seed)
    rows = []
    for sl in surf.slices:
        th = sl.atm_total_variance
        K = np.round(sl.forward * np.exp(np.linspace(-3.5, 2.5, n_strikes) * math.sqrt(th)), 2)
        vol = sl.vol(K)
        for cp in types:
            price = bsm_price(S, K, sl.T, R, Q, vol, cp)
            vega = bsm_greeks(S, K, sl.T, R, Q, vol, cp, which=["vega"]).vega
            half = 0.002 * vega + 0.005
            shift = rng.uniform(-noise, noise, K.size) * half
            for i in range(K.size):
                rows.append(
                    {
                        "strike": K[i],
                        "expiry": sl.T,
                        "bid": price[i] - half[i] + shift[i],
                        "ask": price[i] + half[i] + shift[i],
                        "type": "C" if cp else "P",
                        "underlying": S,
                        "rate": R,
                        "dividend": dividend_column,
                    }
                )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def truth() -> VolSurface:
    return _true_surface()


@pytest.fixture(scope="module")
def clean_fit(truth: VolSurface) -> FittedSurface:
    return fit_chain(_chain(truth))


@pytest.fixture(scope="module")
def noisy_fit(truth: VolSurface) -> FittedSurface:
    return fit_chain(_chain(truth, noise=0.5, seed=1))


def test_truth_is_arbitrage_free(truth: VolSurface) -> None:
    assert truth.arbitrage_report().ok


def test_forward_from_put_call_parity(clean_fit: FittedSurface) -> None:
    """The dividend column says 0; parity on exact mids gives F = S e^{(r - q)T} with the true q to rounding."""
    for T, F in clean_fit.forwards.items():
        assert pytest.approx(S * math.exp((R - Q) * T), rel=1e-10) == F
        assert clean_fit.forward_source[T] == "parity"
    assert clean_fit.spot == S


def test_clean_chain_recovers_the_surface_and_the_report_is_clean(clean_fit: FittedSurface, truth: VolSurface) -> None:
    assert clean_fit.report.ok and clean_fit.report.to_dict()["ok"] is True
    assert clean_fit.dropped == {}
    assert max(clean_fit.fit_errors.values()) < 1e-3  # vol points
    K = np.linspace(60.0, 140.0, 33)[:, None]
    T = np.array([0.05, 0.1, 0.17, 0.25, 0.4, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5])[None, :]
    got, want = clean_fit.vol(K, T), truth.vol(K, T)
    assert got.shape == (33, 11)
    assert np.max(np.abs(got - want)) < 2e-5
    q = clean_fit.quotes
    used = q[q["used"]]
    # out-of-the-money selection: puts below the forward, calls at or above
    assert np.all((used["type"] == "P") == (used["strike"] < used["forward"]))
    assert (q["status"] == "itm_not_used").sum() == len(used)


def test_noisy_chain_fits_within_the_bid_ask_spread(noisy_fit: FittedSurface, truth: VolSurface) -> None:
    q = noisy_fit.quotes[noisy_fit.quotes["used"]]
    true_vol = truth.vol(q["strike"].to_numpy(), q["T"].to_numpy())
    half_spread = 0.5 * (q["iv_ask"] - q["iv_bid"]).to_numpy()
    err = np.abs(q["iv_fit"].to_numpy() - true_vol)
    assert np.all(err < half_spread)
    assert noisy_fit.report.surface_ok
    # the surface between the expiries stays as close as at them
    K = np.linspace(80.0, 120.0, 9)[:, None]
    T = np.array([0.15, 0.4, 0.7, 1.4])[None, :]
    assert np.max(np.abs(noisy_fit.vol(K, T) - truth.vol(K, T))) < float(np.median(half_spread))
    for T_, F in noisy_fit.forwards.items():  # forward within the noise of the mids
        assert abs(F / (S * math.exp((R - Q) * T_)) - 1.0) < 1e-4


def test_carry_forward_without_puts(truth: VolSurface) -> None:
    df = _chain(truth, types=(True,), dividend_column=Q)
    df = df[df["expiry"].isin([0.25, 1.0])]
    fit = fit_chain(df)
    for T, F in fit.forwards.items():
        assert fit.forward_source[T] == "carry"
        assert S * math.exp((R - Q) * T) == F
    # with only calls, the in-the-money ones below the forward are used
    assert fit.quotes["used"].all() and fit.report.surface_ok
    assert max(fit.fit_errors.values()) < 1e-3


def test_cleaning_counts_what_was_dropped_and_why(truth: VolSurface) -> None:
    df = _chain(truth)
    df = df[df["expiry"] == 0.5].reset_index(drop=True)
    n = len(df)
    bad = df.iloc[[0, 1, 2, 3, 4, 5, 6, 7]].copy()
    bad.loc[bad.index[0], ["bid", "ask"]] = [2.0, 1.0]  # crossed
    bad.loc[bad.index[1], "bid"] = 0.0  # zero bid
    bad.loc[bad.index[2], "strike"] = np.nan
    bad.loc[bad.index[3], "type"] = "X"
    bad.loc[bad.index[4], "strike"] = -5.0
    bad.loc[bad.index[5], "expiry"] = 0.0
    bad.loc[bad.index[6], "underlying"] = 0.0
    bad.loc[bad.index[7], "bid"] -= 1.0  # a wider duplicate of row 7
    bad.loc[bad.index[7], "ask"] += 1.0
    fit = fit_chain(pd.concat([df, bad], ignore_index=True))
    assert fit.dropped == {
        "crossed": 1,
        "zero_bid": 1,
        "nan_input": 1,
        "bad_type": 1,
        "non_positive_strike": 1,
        "expired": 1,
        "non_positive_underlying": 1,
        "duplicate": 1,
    }
    status = fit.quotes["status"].to_numpy()
    assert list(status[n : n + 7]) == [
        "crossed",
        "zero_bid",
        "nan_input",
        "bad_type",
        "non_positive_strike",
        "expired",
        "non_positive_underlying",
    ]
    assert status[n + 7] == "duplicate" and status[7] in ("ok", "itm_not_used")
    assert fit.quotes["used"].sum() == n // 2


def test_bad_columns_raise_naming_the_column(truth: VolSurface) -> None:
    df = _chain(truth).head(40)
    for col in ("strike", "expiry", "bid", "ask", "type", "underlying", "rate", "dividend"):
        with pytest.raises(ValueError, match=rf"^{col}: missing column"):
            fit_chain(df.drop(columns=[col]))
    with pytest.raises(ValueError, match=r"^bid: not numeric"):
        fit_chain(df.assign(bid="abc"))
    with pytest.raises(ValueError, match=r"^type: no recognised values"):
        fit_chain(df.assign(type="Z"))
    with pytest.raises(ValueError, match=r"^valuation_date:"):
        fit_chain(df.assign(expiry=pd.Timestamp("2027-01-01")))
    with pytest.raises(ValueError, match=r"^model:"):
        fit_chain(df, model="heston")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^chain: no rows"):
        fit_chain(df.iloc[:0])
    with pytest.raises(ValueError, match=r"^chain: no expiry"):
        fit_chain(df.head(3))


def test_dates_and_valuation_date(truth: VolSurface) -> None:
    df = _chain(truth)
    df = df[df["expiry"].isin([0.25, 0.5])].copy()
    val = pd.Timestamp("2026-03-02")
    df["expiry"] = [val + pd.Timedelta(days=round(T * 365)) for T in df["expiry"]]
    fit = fit_chain(df, valuation_date="2026-03-02")
    days = [round(0.25 * 365), round(0.5 * 365)]
    np.testing.assert_allclose(fit.expiries, [d / 365 for d in days], rtol=1e-14)
    assert sorted(fit.expiry_labels.values()) == [(val + pd.Timedelta(days=d)).date().isoformat() for d in days]
    assert fit.valuation_date == "2026-03-02"


def test_planted_calendar_arbitrage_is_flagged_and_the_surface_stays_monotone() -> None:
    p1 = SviParams(0.02, 0.1, -0.5, 0.0, 0.2)
    # the later expiry has 0.8x the vols: total variance 0.8^2 * 0.6/0.5 = 0.77x the earlier one, at every k
    p2 = SviParams(0.02 * 0.768, 0.1 * 0.768, -0.5, 0.0, 0.2)
    planted = VolSurface(
        [SviSlice(0.5, S * math.exp((R - Q) * 0.5), p1), SviSlice(0.6, S * math.exp((R - Q) * 0.6), p2)], spot=S
    )
    fit = fit_chain(_chain(planted))
    rep = fit.report
    assert not rep.ok and not rep.surface_ok and all(b.ok for b in rep.butterfly)
    assert {(c.T1, c.T2) for c in rep.calendar} == {(0.5, 0.6)}
    (cv,) = rep.calendar
    grid = max((s.check_grid() for s in fit.surface.slices), key=lambda g: g[-1])  # the wider of the two
    assert cv.k_lo == pytest.approx(grid[0]) and cv.k_hi == pytest.approx(grid[-1])  # crossed everywhere
    k = np.linspace(-1.0, 1.0, 41)[None, :]
    T = np.linspace(0.3, 0.9, 61)[:, None]
    assert np.all(np.diff(fit.total_variance(k, T), axis=0) >= -1e-14)


def test_planted_quote_arbitrage_is_flagged(truth: VolSurface) -> None:
    df = _chain(truth)
    df = df[df["expiry"] == 1.0].reset_index(drop=True)
    calls = df.index[df["type"] == "C"]
    j = calls[14]
    K = df.loc[calls[13:16], "strike"].to_numpy()
    df.loc[j, ["bid", "ask"]] += 3.0  # the middle call of K13 < K14 < K15 now costs more than the butterfly allows
    fit = fit_chain(df)
    assert not fit.report.quotes_ok and not fit.report.ok
    conv = [v for v in fit.report.quotes if v.kind == "convexity" and v.option_type == "C"]
    assert any(v.strikes == tuple(K) and v.tradable for v in conv)
    mono = [v for v in fit.report.quotes if v.kind == "monotonicity" and v.option_type == "C"]
    assert any(v.strikes == tuple(K[:2]) for v in mono)
    assert all(v.T == 1.0 for v in fit.report.quotes)


def test_sabr_model_recovers_the_generating_parameters() -> None:
    true = {0.25: SabrParams(0.22, 1.0, -0.5, 0.9), 1.0: SabrParams(0.2, 1.0, -0.4, 0.6)}
    surf = VolSurface([SabrSlice(T, S * math.exp((R - Q) * T), p) for T, p in true.items()], spot=S)
    fit = fit_chain(_chain(surf), model="sabr", beta=1.0)
    assert fit.model == "sabr" and fit.beta == 1.0
    for T, p in true.items():
        got = fit.params[T]
        assert got["alpha"] == pytest.approx(p.alpha, rel=1e-6)
        assert got["rho"] == pytest.approx(p.rho, abs=1e-6)
        assert got["nu"] == pytest.approx(p.nu, rel=1e-6)
    assert max(fit.fit_errors.values()) < 1e-4


def test_json_round_trip(noisy_fit: FittedSurface) -> None:
    text = json.dumps(noisy_fit.to_dict(), allow_nan=False)
    back = FittedSurface.from_dict(json.loads(text))
    K = np.linspace(50.0, 150.0, 21)[:, None]
    T = np.array([0.05, 0.1, 0.3, 1.0, 3.0])[None, :]
    np.testing.assert_array_equal(back.vol(K, T), noisy_fit.vol(K, T))
    assert back.params == noisy_fit.params and back.forwards == noisy_fit.forwards
    assert back.fit_errors == noisy_fit.fit_errors and back.report.to_dict() == noisy_fit.report.to_dict()
    pd.testing.assert_frame_equal(back.quotes, noisy_fit.quotes, check_dtype=False)
    assert "quotes" not in noisy_fit.to_dict(include_quotes=False)


def test_plot_writes_a_png(noisy_fit: FittedSurface, tmp_path: pytest.TempPathFactory) -> None:
    path = plot_surface(noisy_fit, tmp_path / "surface.png", title="synthetic")  # type: ignore[operator]
    assert path.exists() and path.stat().st_size > 10_000
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100 and img.shape[2] in (3, 4)
    assert float(np.std(img[..., :3])) > 0.05  # not a blank canvas
    bare = plot_surface(noisy_fit.surface, tmp_path / "bare.png")  # type: ignore[operator]
    assert matplotlib.image.imread(bare).shape[0] > 100
