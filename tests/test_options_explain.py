"""Greeks P&L explain: the residual's order of convergence, exact bookkeeping, and QuantLib full revaluation.

References: Taylor's theorem (with the second-order terms the residual falls like h^3 as spot and vol moves
scale with h, like h^2 without them, like dt^2 for a pure time step and like dr^2 for a pure rate move: the
observed orders are checked from log2 of successive residual ratios); QuantLib's AnalyticEuropeanEngine for the
full-revaluation P&L; the identity explained + residual = actual.
"""

from __future__ import annotations

import numpy as np
import pytest

from tradesys.quant.options.errors import OptionError
from tradesys.quant.options.explain import TERMS, OptionLeg, explain_position, pnl_explain

ql = pytest.importorskip("QuantLib")

# a mixed book: long and short calls and puts across strikes and expiries
K = np.array([90.0, 100.0, 110.0, 105.0, 95.0])
T = np.array([0.1, 0.5, 1.0, 0.25, 2.0])
CALL = np.array([True, False, True, False, True])
QTY = np.array([10.0, -5.0, 3.0, -8.0, 2.0])
SIG = np.array([0.25, 0.2, 0.18, 0.22, 0.3])
DSIG = np.array([0.01, -0.02, 0.015, 0.005, -0.01])
S0, R, Q = 100.0, 0.03, 0.01


def orders(residual: np.ndarray) -> np.ndarray:
    """Observed convergence orders from residuals at steps h, h/2, h/4, ..."""
    return np.log2(np.abs(residual[:-1] / residual[1:]))


def test_sum_of_terms_plus_residual_is_the_actual_pnl() -> None:
    rng = np.random.default_rng(3)
    S1 = S0 * np.exp(rng.normal(0, 0.03, (50, 1)))
    v1 = SIG + rng.normal(0, 0.02, (50, 5))
    e = pnl_explain(S0, S1, 1 / 365, K, T, CALL, QTY, SIG, v1, R, R + rng.normal(0, 1e-3, (50, 1)), Q, shares=-7.0)
    assert e.actual.shape == (50,) and e.by_leg["delta"].shape == (50, 5)
    total = sum(e.terms().values())
    np.testing.assert_allclose(e.explained, total, rtol=1e-15, atol=1e-13)
    scale = np.abs(e.actual) + np.abs(e.explained)
    assert np.all(np.abs(e.explained + e.residual - e.actual) <= 4 * np.finfo(float).eps * scale)
    # per-leg actual P&L plus the shares' dS is the book's
    np.testing.assert_allclose(e.by_leg["actual"].sum(-1) - 7.0 * (S1[:, 0] - S0), e.actual, rtol=1e-13, atol=1e-12)


def test_residual_is_third_order_in_spot_and_vol_moves() -> None:
    h = np.array([1.0, 0.5, 0.25, 0.125, 0.0625])[:, None]
    S1 = S0 + 3.0 * h
    full = pnl_explain(S0, S1, 0.0, K, T, CALL, QTY, SIG, SIG + DSIG * h, R, None, Q, shares=2.0)
    assert np.all(np.abs(orders(full.residual) - 3.0) < 0.15), orders(full.residual)
    # the residual is small against the P&L it leaves unexplained
    assert np.all(np.abs(full.residual) < 0.01 * np.abs(full.actual))
    # first-order vol terms only: vanna and vomma are left in the residual, which is then second order
    first = pnl_explain(S0, S1, 0.0, K, T, CALL, QTY, SIG, SIG + DSIG * h, R, None, Q, second_order=False)
    assert np.all(np.abs(orders(first.residual) - 2.0) < 0.5), orders(first.residual)
    assert (first.vanna == 0).all() and (first.vomma == 0).all()
    # spot only: delta + gamma already explain to third order
    spot = pnl_explain(S0, S1, 0.0, K, T, CALL, QTY, SIG, None, R, None, Q, second_order=False)
    assert np.all(np.abs(orders(spot.residual) - 3.0) < 0.15), orders(spot.residual)


def test_pure_time_step_is_theta_to_second_order_in_dt() -> None:
    dt = np.array([8.0, 4.0, 2.0, 1.0, 0.5])[:, None] / 365.0
    e = pnl_explain(S0, S0, dt, K, T, CALL, QTY, SIG, None, R, None, Q)
    assert np.all(np.abs(orders(e.residual) - 2.0) < 0.15), orders(e.residual)
    np.testing.assert_array_equal(e.delta, 0.0)
    np.testing.assert_array_equal(e.vega, 0.0)
    # over a day or less (the last two rows) theta explains all but a few percent, even with a 36-day option
    assert np.all(np.abs(e.residual[-2:]) < 0.05 * np.abs(e.actual[-2:]))


def test_rate_move_is_rho_to_second_order() -> None:
    dr = np.array([0.01, 0.005, 0.0025, 0.00125])[:, None]
    e = pnl_explain(S0, S0, 0.0, K, T, CALL, QTY, SIG, None, R, R + dr, Q)
    assert np.all(np.abs(orders(e.residual) - 2.0) < 0.15), orders(e.residual)


def test_actual_pnl_is_quantlib_full_revaluation() -> None:
    """A day: spot 100 -> 101.7, every vol moves, the rate moves 5bp; actual = sum q (NPV_end - NPV_start)."""
    dt, S1, r1 = 1 / 365, 101.7, R + 5e-4
    v1 = SIG + DSIG
    days = np.round(T * 365).astype(int)
    Tq = days / 365.0

    def npv(spot: float, rate: float, vol: float, strike: float, expiry_days: float, call: bool) -> float:
        today = ql.Date(15, 1, 2025)
        ql.Settings.instance().evaluationDate = today
        dc = ql.Actual365Fixed()
        proc = ql.BlackScholesMertonProcess(
            ql.QuoteHandle(ql.SimpleQuote(spot)),
            ql.YieldTermStructureHandle(ql.FlatForward(today, Q, dc)),
            ql.YieldTermStructureHandle(ql.FlatForward(today, rate, dc)),
            ql.BlackVolTermStructureHandle(ql.BlackConstantVol(today, ql.NullCalendar(), vol, dc)),
        )
        kind = ql.Option.Call if call else ql.Option.Put
        opt = ql.VanillaOption(ql.PlainVanillaPayoff(kind, strike), ql.EuropeanExercise(today + int(expiry_days)))
        opt.setPricingEngine(ql.AnalyticEuropeanEngine(proc))
        return opt.NPV()

    ref = sum(
        QTY[i] * (npv(S1, r1, v1[i], K[i], days[i] - 1, CALL[i]) - npv(S0, R, SIG[i], K[i], days[i], CALL[i]))
        for i in range(len(K))
    )
    e = pnl_explain(S0, S1, dt, K, Tq, CALL, QTY, SIG, v1, R, r1, Q, shares=3.0)
    assert abs(e.actual - (ref + 3.0 * (S1 - S0))) < 1e-9
    # a one-day move of this size: the Greeks explain all but a small fraction
    assert abs(e.residual) < 0.02 * abs(e.actual)


def test_delta_hedged_book_has_no_delta_term_and_legs_interface_agrees() -> None:
    legs = [OptionLeg(float(K[i]), float(T[i]), bool(CALL[i]), float(QTY[i]), float(SIG[i])) for i in range(5)]
    base = explain_position(legs, S0, S0 + 1.0, 1 / 365, R, None, Q)
    book_delta = base.delta / 1.0  # dS = 1
    hedged = explain_position(legs, S0, S0 + 1.0, 1 / 365, R, None, Q, shares=-float(book_delta))
    assert abs(hedged.delta) < 1e-12
    np.testing.assert_allclose(hedged.actual, base.actual - book_delta, rtol=1e-13)
    arrays = pnl_explain(S0, S0 + 1.0, 1 / 365, K, T, CALL, QTY, SIG, None, R, None, Q)
    for name in (*TERMS, "actual", "residual"):
        np.testing.assert_allclose(getattr(arrays, name), getattr(base, name), rtol=1e-15, atol=1e-15)


def test_expiring_leg_bad_leg_and_bad_input() -> None:
    # a leg expiring within the period is worth its payoff at the end
    e = pnl_explain(100.0, 104.0, 2 / 365, 100.0, 1 / 365, True, 1.0, 0.2)
    from tradesys.quant.options.european import bsm_price

    assert abs(e.actual - (4.0 - bsm_price(100.0, 100.0, 1 / 365, 0.0, 0.0, 0.2, True))) < 1e-12
    # a bad leg makes its scenario NaN with a per-leg code; other scenarios are unaffected
    bad = pnl_explain(100.0, np.array([[101.0], [99.0]]), 0.0, [100.0, -5.0], 0.5, True, 1.0, 0.2)
    assert np.isnan(bad.actual).all() and bad.codes.tolist() == [[0, OptionError.NON_POSITIVE_STRIKE]] * 2
    with pytest.raises(ValueError, match="dt:"):
        pnl_explain(100.0, 101.0, -1.0, 100.0, 0.5, True, 1.0, 0.2)
    with pytest.raises(ValueError, match="legs:"):
        explain_position([], 100.0, 101.0, 0.0)


def test_torch_inputs_give_the_numpy_answer() -> None:
    torch = pytest.importorskip("torch")
    S1 = np.array([[99.0], [101.5]])
    ref = pnl_explain(S0, S1, 1 / 365, K, T, CALL, QTY, SIG, SIG + DSIG, R, None, Q, shares=1.0)
    tt = pnl_explain(
        S0, torch.tensor(S1), 1 / 365, K, T, CALL, QTY, SIG, torch.tensor(SIG + DSIG), R, None, Q, shares=1.0
    )
    for name in (*TERMS, "actual", "explained", "residual"):
        value = getattr(tt, name)
        assert isinstance(value, torch.Tensor)
        np.testing.assert_allclose(value.numpy(), getattr(ref, name), rtol=1e-13, atol=1e-13, err_msg=name)
