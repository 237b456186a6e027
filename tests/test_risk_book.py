"""Full revaluation of a risk book against QuantLib, closed forms and conservation laws; delta-gamma against it.

References: QuantLib's AnalyticEuropeanEngine (European) and FdBlackScholesVanillaEngine (American) repriced at
the shocked inputs; the linear P&L identity sum(q price r); put-call parity (long call, short put, short forward
is riskless in spot and vol); the Taylor remainder of delta-gamma, O(h^3) for spot moves; finite differences of
the revaluation for the aggregated Greeks.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tradesys.quant.options.errors import OptionError
from tradesys.quant.risk.book import (
    LinearPosition,
    OptionPosition,
    RiskBook,
    delta_gamma_pnl,
    greeks,
    scenario_pnl,
    scenario_pnl_detail,
)

ql = pytest.importorskip("QuantLib")

TODAY = ql.Date(15, 1, 2025)


def ql_price(
    S: float, K: float, days: int, r: float, q: float, sigma: float, is_call: bool, american: bool = False
) -> float:
    """QuantLib NPV of a vanilla expiring `days` calendar days from TODAY (Actual/365 Fixed, flat curves)."""
    ql.Settings.instance().evaluationDate = TODAY
    dc = ql.Actual365Fixed()
    rts = ql.YieldTermStructureHandle(ql.FlatForward(TODAY, r, dc))
    dts = ql.YieldTermStructureHandle(ql.FlatForward(TODAY, q, dc))
    vts = ql.BlackVolTermStructureHandle(ql.BlackConstantVol(TODAY, ql.NullCalendar(), sigma, dc))
    proc = ql.BlackScholesMertonProcess(ql.QuoteHandle(ql.SimpleQuote(S)), dts, rts, vts)
    payoff = ql.PlainVanillaPayoff(ql.Option.Call if is_call else ql.Option.Put, K)
    if american:
        opt = ql.VanillaOption(payoff, ql.AmericanExercise(TODAY, TODAY + days))
        opt.setPricingEngine(ql.FdBlackScholesVanillaEngine(proc, 800, 800))
    else:
        opt = ql.VanillaOption(payoff, ql.EuropeanExercise(TODAY + days))
        opt.setPricingEngine(ql.AnalyticEuropeanEngine(proc))
    return float(opt.NPV())


@pytest.fixture(scope="module")
def option_book() -> RiskBook:
    """Three symbols, European calls and puts long and short, dividend yields, a rate."""
    opts = [
        OptionPosition("AAA", 100.0, 0.50, True, 10, 0.25, multiplier=100),
        OptionPosition("AAA", 90.0, 0.25, False, -7, 0.30, multiplier=100),
        OptionPosition("BBB", 50.0, 1.00, False, 20, 0.35, multiplier=100),
        OptionPosition("BBB", 55.0, 0.10, True, -15, 0.40, multiplier=100),
        OptionPosition("CCC", 210.0, 0.75, True, 5, 0.20, multiplier=100),
    ]
    lin = [LinearPosition("AAA", -500, 100.0), LinearPosition("CCC", 300, 200.0)]
    return RiskBook.build(
        lin,
        opts,
        spots={"AAA": 100.0, "BBB": 52.0, "CCC": 200.0},
        dividend_yields={"AAA": 0.01, "CCC": 0.02},
        rate=0.04,
    )


def test_linear_book_pnl_is_sum_of_q_price_return() -> None:
    rng = np.random.default_rng(1)
    lin = [LinearPosition("X", 120, 31.5), LinearPosition("Y", -40, 250.0), LinearPosition("Z", 7, 1234.5)]
    book = RiskBook.build(lin)
    R = rng.normal(0, 0.03, (1000, 3))
    pnl = scenario_pnl(book, R)
    q = np.array([120, -40, 7.0])
    p = np.array([31.5, 250.0, 1234.5])
    np.testing.assert_allclose(pnl, (R * (q * p)).sum(axis=1), rtol=1e-14, atol=1e-10)
    # two positions in one symbol add; a zero scenario is exactly zero
    book2 = RiskBook.build([LinearPosition("X", 100, 10.0), LinearPosition("X", -30, 10.5)])
    np.testing.assert_allclose(scenario_pnl(book2, R[:, :1]), R[:, 0] * (1000.0 - 315.0), rtol=1e-13)
    assert scenario_pnl(book, np.zeros(3))[0] == 0.0


def test_single_european_matches_quantlib_at_shocked_inputs() -> None:
    S0, K, r, q, iv, days = 100.0, 105.0, 0.03, 0.015, 0.22, 146  # T = 0.4 years exactly
    qty, mult = 3.0, 100.0
    for is_call in (True, False):
        book = RiskBook.build(
            [],
            [OptionPosition("X", K, days / 365, is_call, qty, iv, multiplier=mult)],
            spots={"X": S0},
            dividend_yields=q,
            rate=r,
        )
        base = ql_price(S0, K, days, r, q, iv, is_call)
        assert book.option_values()[0] == pytest.approx(base, rel=1e-12)
        rets = np.array([-0.3, -0.1, -0.01, 0.0, 0.02, 0.15, 0.4])
        dvol = np.array([10.0, 5.0, 0.0, 0.0, -2.0, -5.0, 3.0])  # vol points
        dr = np.array([0.0, 0.01, -0.005, 0.0, 0.002, 0.0, -0.01])
        # horizon 50.4 trading days = 0.2 years = 73 calendar days
        pnl = scenario_pnl(book, rets[:, None], dvol[:, None], dr, horizon_days=50.4)
        ref = [
            qty * mult * (ql_price(S0 * (1 + x), K, days - 73, r + d, q, iv + v / 100, is_call) - base)
            for x, v, d in zip(rets, dvol, dr, strict=True)
        ]
        np.testing.assert_allclose(pnl, ref, rtol=1e-9, atol=1e-9)


def test_american_matches_quantlib_fd_at_shocked_spot() -> None:
    S0, K, r, q, iv, days = 100.0, 100.0, 0.05, 0.0, 0.3, 365
    book = RiskBook.build(
        [],
        [OptionPosition("X", K, days / 365, False, 1.0, iv, style="american")],
        spots={"X": S0},
        rate=r,
        american_steps=201,
    )
    base = ql_price(S0, K, days, r, q, iv, False, american=True)
    rets = np.array([-0.25, -0.05, 0.1])
    pnl = scenario_pnl(book, rets[:, None], vol_shifts=5.0)
    ref = np.array([ql_price(S0 * (1 + x), K, days, r, q, iv + 0.05, False, american=True) - base for x in rets])
    np.testing.assert_allclose(pnl, ref, atol=5e-3)  # LR(201, Richardson) and QuantLib's FD grid, ~1e-3 each
    # the early-exercise premium is there: the American put is worth more than the European one
    assert book.option_values()[0] > ql_price(S0, K, days, r, q, iv, False) + 0.5


def test_put_call_parity_book_is_riskless() -> None:
    S0, K, T, r, q, iv = 80.0, 85.0, 0.6, 0.035, 0.02, 0.3
    n = 50.0
    fwd_shares = math.exp(-q * T)  # a short forward = short e^{-qT} shares and a zero-coupon bond (no rate shock)
    legs = [OptionPosition("X", K, T, True, n, iv), OptionPosition("X", K, T, False, -n, iv)]
    book = RiskBook.build([LinearPosition("X", -n * fwd_shares, S0)], legs, spots={"X": S0}, dividend_yields=q, rate=r)
    rng = np.random.default_rng(3)
    R = rng.uniform(-0.6, 0.8, (2000, 1))
    dvol = rng.uniform(-20, 40, (2000, 1))
    full = scenario_pnl(book, R, vol_shifts=dvol)
    assert np.max(np.abs(full)) < 1e-9 * n * S0  # call - put = S e^{-qT} - K e^{-rT}, whatever the spot and vol
    # without the forward the same options are anything but riskless
    naked = RiskBook.build([], legs, spots={"X": S0}, dividend_yields=q, rate=r)
    assert np.max(np.abs(scenario_pnl(naked, R, vol_shifts=dvol))) > 100.0


def test_long_put_book_worst_scenario_is_largest_down_move() -> None:
    book = RiskBook.build(
        [],
        [
            OptionPosition("X", 100.0, 0.5, False, 10, 0.25, multiplier=100),
            OptionPosition("X", 90.0, 1.0, False, 5, 0.25, multiplier=100),
        ],
        spots={"X": 100.0},
        rate=0.02,
    )
    rng = np.random.default_rng(5)
    R = rng.normal(0, 0.03, (500, 1))
    pnl = scenario_pnl(book, R)
    assert np.argmax(pnl) == np.argmin(R[:, 0])  # largest down move: best for the put holder
    assert np.argmin(pnl) == np.argmax(R[:, 0])  # largest up move: worst
    assert np.all(np.diff(pnl[np.argsort(R[:, 0])]) < 0)  # P&L strictly decreasing in the spot move


def test_short_put_book_worst_scenario_is_largest_down_move() -> None:
    book = RiskBook.build(
        [], [OptionPosition("X", 100.0, 0.5, False, -10, 0.25, multiplier=100)], spots={"X": 100.0}, rate=0.02
    )
    R = np.random.default_rng(6).normal(0, 0.03, (500, 1))
    assert np.argmin(scenario_pnl(book, R)) == np.argmin(R[:, 0])


def test_delta_gamma_error_is_third_order_in_spot(option_book: RiskBook) -> None:
    u = np.array([1.0, -0.7, 0.5])  # a fixed direction of spot returns
    hs = np.array([0.04, 0.02, 0.01, 0.005])
    R = hs[:, None] * u[None, :]
    full = scenario_pnl(option_book, R)
    dg = delta_gamma_pnl(option_book, R)
    resid = np.abs(full - dg)
    ratios = resid[:-1] / resid[1:]
    assert np.all((ratios > 6.5) & (ratios < 9.5)), ratios  # halving h divides the residual by ~8
    assert resid[-1] < 1e-3 * np.abs(full[-1])
    # delta only would leave a second-order residual: much larger
    d_only = delta_gamma_pnl(option_book, R) - 0.5 * (greeks(option_book)["dollar_gamma"].to_numpy() @ (u * u)) * hs**2
    assert np.all(np.abs(full - d_only) > 10 * resid)


def test_delta_gamma_vega_tracks_small_vol_and_rate_moves(option_book: RiskBook) -> None:
    R = np.array([[0.002, -0.001, 0.0015]])
    full = scenario_pnl(option_book, R, vol_shifts=0.2, rate_shift=1e-4, horizon_days=1)
    approx = delta_gamma_pnl(option_book, R, vol_shifts=0.2, rate_shift=1e-4, horizon_days=1)
    no_vega = delta_gamma_pnl(option_book, R, vol_shifts=0.2, rate_shift=1e-4, horizon_days=1, include_vega=False)
    assert abs(full[0] - approx[0]) < 0.02 * abs(full[0] - no_vega[0])


def test_greeks_match_finite_differences_of_revaluation() -> None:
    book = RiskBook.build(
        [LinearPosition("X", 200, 100.0, rate_duration=2.0)],
        [
            OptionPosition("X", 95.0, 0.5, False, 4, 0.3, multiplier=100),
            OptionPosition("X", 110.0, 1.0, True, -3, 0.25, multiplier=100),
            OptionPosition("Y", 40.0, 0.75, False, 10, 0.4, style="american", multiplier=100),
        ],
        spots={"X": 100.0, "Y": 42.0},
        dividend_yields={"X": 0.01},
        rate=0.04,
        american_steps=301,
    )
    g = greeks(book)
    h = 1e-3
    eye = np.eye(2)
    up = scenario_pnl(book, h * eye)
    dn = scenario_pnl(book, -h * eye)
    np.testing.assert_allclose(g["dollar_delta"], (up - dn) / (2 * h), rtol=2e-3)
    gamma_fd = (up + dn) / h**2  # base P&L is 0
    assert g.loc["X", "dollar_gamma"] == pytest.approx(gamma_fd[0], rel=1e-3)
    assert g.loc["Y", "dollar_gamma"] == pytest.approx(gamma_fd[1], rel=0.05)  # tree node gamma
    z = np.zeros(2)
    for j, sym in enumerate(("X", "Y")):
        bump = 0.01 * eye[j]  # vol points
        fd = (scenario_pnl(book, z, vol_shifts=bump)[0] - scenario_pnl(book, z, vol_shifts=-bump)[0]) / 0.02
        assert g.loc[sym, "vega_per_point"] == pytest.approx(fd, rel=1e-6 if sym == "X" else 1e-2)
    rho_fd = (
        scenario_pnl(book, np.zeros(2), rate_shift=1e-4)[0] - scenario_pnl(book, np.zeros(2), rate_shift=-1e-4)[0]
    ) / 2
    assert g["rho_per_bp"].sum() == pytest.approx(rho_fd, rel=1e-2)
    assert g.loc["X", "delta"] == pytest.approx(g.loc["X", "dollar_delta"] / 100.0)
    # one calendar day of time = 252 / 365 trading days
    theta_fd = scenario_pnl(book, np.zeros(2), horizon_days=252 / 365 * 0.01)[0] / 0.01
    assert g["theta_per_day"].sum() == pytest.approx(theta_fd, rel=2e-2)


def test_expiry_within_horizon_pays_intrinsic() -> None:
    book = RiskBook.build(
        [],
        [
            OptionPosition("X", 100.0, 2 / 252, True, 1.0, 0.3),
            OptionPosition("X", 100.0, 2 / 252, False, 1.0, 0.3, style="american"),
        ],
        spots={"X": 100.0},
        rate=0.01,
    )
    R = np.array([[-0.1], [0.05]])
    pnl = scenario_pnl_detail(book, R, horizon_days=5)
    v0 = book.option_values().sum()
    expected = np.maximum(100 * (1 + R[:, 0]) - 100, 0) + np.maximum(100 - 100 * (1 + R[:, 0]), 0) - v0
    np.testing.assert_allclose(pnl.total, expected, rtol=1e-12)


def test_rates_spreads_and_fx_on_linear_positions() -> None:
    book = RiskBook.build(
        [LinearPosition("BOND", 1000, 98.0, rate_duration=6.5, spread_duration=6.0), LinearPosition("SAP", 50, 120.0)],
        currencies={"SAP": "EUR"},
        fx_to_base={"EUR": 1.1},
    )
    assert book.fx_currencies == ("EUR",)
    pnl = scenario_pnl(book, np.array([[0.0, 0.02]]), rate_shift=0.01, spread_shift=0.005, fx_returns=[[0.03]])
    bond = -1000 * 98.0 * (6.5 * 0.01 + 6.0 * 0.005)
    sap = 50 * 120.0 * 1.1 * ((1.02) * (1.03) - 1.0)  # the exact change of f V
    assert pnl[0] == pytest.approx(bond + sap, rel=1e-13)
    assert book.market_value() == pytest.approx(98_000 + 6_600)


def test_invalid_scenarios_are_nan_with_a_code(option_book: RiskBook) -> None:
    R = np.zeros((4, 3))
    R[1, 0] = -1.2  # spot below zero
    R[2, 2] = np.nan
    R[3] = [0.01, 0.02, -0.01]
    d = scenario_pnl_detail(option_book, R)
    assert np.isnan(d.total[1]) and np.isnan(d.total[2])
    assert d.codes.tolist() == [0, int(OptionError.NON_POSITIVE_SPOT), int(OptionError.NAN_INPUT), 0]
    assert d.total[0] == 0.0 and np.isfinite(d.total[3])
    np.testing.assert_allclose(d.by_symbol[3].sum(), d.total[3])
    np.testing.assert_allclose(d.linear[3] + d.options[3], d.total[3])
    # a vol shift below zero floors the vol at 0 rather than failing
    assert np.isfinite(scenario_pnl(option_book, np.zeros(3), vol_shifts=-80.0)).all()


def test_bad_input_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"^options\[0\]\.strike: must be > 0"):
        RiskBook.build([], [OptionPosition("X", 0.0, 1.0, True, 1, 0.2)], spots={"X": 1.0})
    with pytest.raises(ValueError, match=r"^options\[0\]\.style"):
        RiskBook.build([], [OptionPosition("X", 1.0, 1.0, True, 1, 0.2, style="asian")], spots={"X": 1.0})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^spots: missing for option symbol 'Y'"):
        RiskBook.build([], [OptionPosition("Y", 1.0, 1.0, True, 1, 0.2)])
    with pytest.raises(ValueError, match=r"^linear\[1\]\.price"):
        RiskBook.build([LinearPosition("X", 1, 1.0), LinearPosition("X", 1, -1.0)])
    with pytest.raises(ValueError, match=r"^options\[0\]: unknown field\(s\) \['vol'\]"):
        RiskBook.from_records(
            [], [{"symbol": "X", "strike": 1, "T": 1, "is_call": True, "quantity": 1, "vol": 0.2}], spots={"X": 1.0}
        )
    with pytest.raises(ValueError, match=r"^fx_to_base: missing rate for currency 'EUR'"):
        RiskBook.build([LinearPosition("X", 1, 1.0)], currencies={"X": "EUR"})
    book = RiskBook.build([LinearPosition("X", 1, 1.0), LinearPosition("Y", 1, 1.0)])
    with pytest.raises(ValueError, match=r"^spot_returns: expected shape"):
        scenario_pnl(book, np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"^rate_shift:"):
        scenario_pnl(book, np.zeros((5, 2)), rate_shift=np.zeros(4))
    with pytest.raises(ValueError, match=r"^horizon_days:"):
        scenario_pnl(book, np.zeros((5, 2)), horizon_days=-1)
    ok = RiskBook.from_records(
        [{"symbol": "X", "quantity": 2, "price": 3.0}],
        [
            {
                "symbol": "X",
                "strike": 3,
                "T": 0.5,
                "is_call": False,
                "quantity": 1,
                "implied_vol": 0.2,
                "style": "american",
                "multiplier": 100,
            }
        ],
    )
    assert ok.symbols == ("X",) and ok.spots[0] == 3.0 and ok.opt_american[0]


def test_dataframe_scenarios_are_aligned_by_symbol(option_book: RiskBook) -> None:
    import pandas as pd

    R = np.random.default_rng(9).normal(0, 0.02, (20, 3))
    df = pd.DataFrame(R[:, ::-1], columns=list(option_book.symbols)[::-1])
    np.testing.assert_array_equal(scenario_pnl(option_book, df), scenario_pnl(option_book, R))
    with pytest.raises(ValueError, match="missing column"):
        scenario_pnl(option_book, df.drop(columns=["BBB"]))


def test_fast_total_equals_detail_and_chunking_is_invisible() -> None:
    opts = [
        OptionPosition("A", 95.0, 0.3, False, 3, 0.3, style="american", multiplier=100),
        OptionPosition("A", 105.0, 0.8, True, -2, 0.25, multiplier=100),
        OptionPosition("B", 40.0, 0.5, False, 6, 0.45, multiplier=100),
    ]
    book = RiskBook.build(
        [LinearPosition("A", 10, 100.0), LinearPosition("B", -30, 41.0)],
        opts,
        spots={"A": 100.0, "B": 41.0},
        rate=0.02,
        american_steps=51,
    )
    rng = np.random.default_rng(11)
    R = rng.normal(0, 0.05, (37, 2))
    R[4, 1] = np.nan
    dvol = rng.normal(0, 3, (37, 2))
    fast = scenario_pnl(book, R, dvol, 0.001, 2.0)
    detail = scenario_pnl_detail(book, R, dvol, 0.001, 2.0)
    np.testing.assert_allclose(fast, detail.total, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(scenario_pnl(book, R, dvol, 0.001, 2.0, chunk_elems=7), fast, rtol=1e-13, atol=1e-9)
    assert np.isnan(fast[4]) and np.isfinite(np.delete(fast, 4)).all()
