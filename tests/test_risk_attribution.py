"""Attribution: Fama-French factor regression, Brinson sector attribution, timing versus selection.

References (independent of the code under test):
* the real Fama-French monthly factors shipped with ``arch`` (``arch.data.frenchdata``, in percent) for the
  synthetic portfolios, numpy ``lstsq`` and a hand-written Newey-West sandwich for the regression;
* Carl Bacon, *Practical Portfolio Performance Measurement and Attribution* (Wiley, 2nd ed. 2008): the
  three-sector example of Tables 5.2 (Brinson-Hood-Beebower) and 5.3 (Brinson-Fachler) and the four-quarter
  example of Tables 8.1-8.3 (Carino and Menchero linking). The figures are those the R package
  PortfolioAttribution checks against the book in tests/testthat/test_BHB_BF.R and
  test_arithmetic_multi_period.R (github.com/anandkkumar/PortfolioAttribution); the book prints the linked
  figures to two decimals of a percent, so those are checked to 1e-4.
* closed forms: a perfect-foresight timer's Henriksson-Merton coefficients are known exactly.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from tradesys.quant.risk.attribution import (
    brinson_attribution,
    carino_coefficients,
    factor_attribution,
    henriksson_merton,
    menchero_coefficients,
    newey_west_lags,
    rolling_factor_betas,
    treynor_mazuy,
)

FACTORS = ["Mkt-RF", "SMB", "HML"]


@pytest.fixture(scope="module")
def ff() -> pd.DataFrame:
    """Fama-French monthly factors 1926-07..2018-11 as DECIMALS on a month-end DatetimeIndex.

    ``arch.data.frenchdata.load()`` reads the YYYYMM integers as nanoseconds since 1970, so the index looks like
    1970-01-01 00:00:00.000192607; the integer behind it is the YYYYMM code.
    """
    from arch.data import frenchdata

    raw = frenchdata.load()
    codes = raw.index.asi8
    idx = pd.to_datetime(codes.astype(str), format="%Y%m") + pd.offsets.MonthEnd(0)
    return (raw / 100.0).set_axis(idx)


@pytest.fixture(scope="module")
def ff_modern(ff: pd.DataFrame) -> pd.DataFrame:
    return ff.loc["1963-07":]


def test_frenchdata_is_percent_and_monthly(ff: pd.DataFrame) -> None:
    from arch.data import frenchdata

    raw = frenchdata.load()
    assert list(raw.columns) == ["Mkt-RF", "SMB", "HML", "RF"]
    # percent: the October 1929 crash month is about -20, not -0.2
    assert raw["Mkt-RF"].abs().max() > 25.0
    assert ff.index[0] == pd.Timestamp("1926-07-31") and ff.index[-1] == pd.Timestamp("2018-11-30")
    assert ff.index.is_monotonic_increasing and len(ff) == len(raw)
    assert ff.loc["1929-10", "Mkt-RF"].iloc[0] == pytest.approx(-0.2024, abs=5e-3)


# ----------------------------------------------------------------------------------------------------------------
# factor attribution
# ----------------------------------------------------------------------------------------------------------------


def _planted(ff_modern: pd.DataFrame, seed: int = 7) -> tuple[pd.Series, float, np.ndarray]:
    """A fund's TOTAL monthly return: rf + alpha + beta . factors + AR(1) noise (so HAC matters)."""
    rng = np.random.default_rng(seed)
    alpha, betas = 0.002, np.array([1.10, -0.30, 0.45])
    n = len(ff_modern)
    e = rng.normal(0.0, 0.015, n)
    for t in range(1, n):
        e[t] += 0.3 * e[t - 1]
    total = ff_modern["RF"] + alpha + ff_modern[FACTORS].to_numpy() @ betas + e
    return total.rename("fund"), alpha, betas


def test_factor_attribution_recovers_planted_alpha_and_betas(ff_modern: pd.DataFrame) -> None:
    total, alpha, betas = _planted(ff_modern, seed=1)
    res = factor_attribution(total, ff_modern, rf="RF")
    assert list(res.betas.index) == FACTORS  # RF was removed from the regressors
    assert res.n_obs == len(ff_modern)
    assert res.hac_lags == newey_west_lags(len(ff_modern)) == 6  # floor(4 * 6.65^(2/9))
    for name, b in zip(FACTORS, betas, strict=True):
        assert abs(res.betas[name] - b) < 3.0 * res.beta_se[name], name
        assert res.beta_pvalues[name] < 1e-6
    assert abs(res.alpha - alpha) < 3.0 * res.alpha_se
    assert 0.8 < res.r_squared < 1.0
    # the residual volatility of AR(1) noise sd 0.015 with phi 0.3: 0.015 / sqrt(1 - 0.09)
    assert res.residual_vol == pytest.approx(0.015 / np.sqrt(1 - 0.09), rel=0.08)


def test_hac_standard_errors_have_close_to_nominal_coverage(ff_modern: pd.DataFrame) -> None:
    """Over 150 synthetic funds the true coefficients fall outside +-1.96 HAC standard errors about 5% of the time.

    (Newey-West with a few lags slightly under-covers under AR(1) noise; plain OLS errors would miss far more.)
    """
    z = []
    for seed in range(150):
        total, alpha, betas = _planted(ff_modern, seed=seed)
        res = factor_attribution(total, ff_modern, rf="RF")
        z.append(np.r_[(res.alpha - alpha) / res.alpha_se, (res.betas.to_numpy() - betas) / res.beta_se.to_numpy()])
    miss = (np.abs(np.asarray(z)) > 1.96).mean(axis=0)
    assert np.all(miss < 0.12), miss
    assert miss.mean() > 0.02, miss


def test_contributions_sum_exactly_to_the_excess_return(ff_modern: pd.DataFrame) -> None:
    total, _, _ = _planted(ff_modern, seed=11)
    res = factor_attribution(total, ff_modern, rf="RF")
    c = res.contributions
    assert list(c.columns) == ["alpha", *FACTORS, "residual"]
    excess = total - ff_modern["RF"]
    np.testing.assert_allclose(c.sum(axis=1).to_numpy(), excess.to_numpy(), rtol=0, atol=1e-15)
    np.testing.assert_allclose(res.excess_returns.to_numpy(), excess.to_numpy(), rtol=0, atol=0)
    for f in FACTORS:
        np.testing.assert_allclose(c[f].to_numpy(), res.betas[f] * ff_modern[f].to_numpy(), rtol=1e-15)
    # OLS with a constant: residuals average to zero, so mean excess = alpha + sum_k beta_k mean(f_k)
    assert abs(res.mean_contributions["residual"]) < 1e-15
    assert res.total_contributions.sum() == pytest.approx(excess.sum(), abs=1e-12)


def test_ols_matches_lstsq_statsmodels_and_a_hand_newey_west(ff_modern: pd.DataFrame) -> None:
    total, _, _ = _planted(ff_modern, seed=3)
    lags = 4
    res = factor_attribution(total, ff_modern, rf="RF", hac_lags=lags)
    y = (total - ff_modern["RF"]).to_numpy()
    x = np.column_stack([np.ones(len(y)), ff_modern[FACTORS].to_numpy()])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    np.testing.assert_allclose([res.alpha, *res.betas.to_numpy()], coef, rtol=1e-10, atol=1e-13)
    resid = y - x @ coef
    r2 = 1.0 - resid @ resid / ((y - y.mean()) @ (y - y.mean()))
    assert res.r_squared == pytest.approx(r2, rel=1e-12)

    # Newey-West by hand: (X'X)^-1 S (X'X)^-1 * n/(n-k), S = sum_l w_l (Gamma_l + Gamma_l'), Bartlett w_l
    n, k = x.shape
    u = x * resid[:, None]
    s = u.T @ u
    for lag in range(1, lags + 1):
        g = u[lag:].T @ u[:-lag]
        s += (1.0 - lag / (lags + 1.0)) * (g + g.T)
    xtx_inv = np.linalg.inv(x.T @ x)
    cov = xtx_inv @ s @ xtx_inv * n / (n - k)
    np.testing.assert_allclose([res.alpha_se, *res.beta_se.to_numpy()], np.sqrt(np.diag(cov)), rtol=1e-10)

    direct = sm.OLS(y, x).fit(cov_type="HAC", cov_kwds={"maxlags": lags, "use_correction": True})
    np.testing.assert_allclose([res.alpha_t, *res.beta_t.to_numpy()], direct.tvalues, rtol=1e-10)
    np.testing.assert_allclose([res.alpha_pvalue, *res.beta_pvalues.to_numpy()], direct.pvalues, rtol=1e-8)


def test_rf_as_column_series_scalar_or_none_agree(ff_modern: pd.DataFrame) -> None:
    total, _, _ = _planted(ff_modern, seed=5)
    by_name = factor_attribution(total, ff_modern, rf="RF")
    by_series = factor_attribution(total, ff_modern[FACTORS], rf=ff_modern["RF"])
    pre = factor_attribution(total - ff_modern["RF"], ff_modern[FACTORS])
    as_array = factor_attribution((total - ff_modern["RF"]).to_numpy(), ff_modern[FACTORS])
    for other in (by_series, pre, as_array):
        np.testing.assert_allclose(other.betas.to_numpy(), by_name.betas.to_numpy(), rtol=1e-12)
        assert other.alpha == pytest.approx(by_name.alpha, rel=1e-10)
    const = factor_attribution(total, ff_modern[FACTORS], rf=0.001)
    # a constant rf only moves alpha
    np.testing.assert_allclose(const.betas.to_numpy(), factor_attribution(total, ff_modern[FACTORS]).betas, rtol=1e-12)
    assert const.alpha == pytest.approx(factor_attribution(total, ff_modern[FACTORS]).alpha - 0.001, abs=1e-14)


def test_factor_attribution_to_dict_is_json(ff_modern: pd.DataFrame) -> None:
    total, _, _ = _planted(ff_modern)
    d = factor_attribution(total.iloc[-60:], ff_modern.iloc[-60:], rf="RF").to_dict()
    text = json.dumps(d)
    back = json.loads(text)
    assert set(back["betas"]) == set(FACTORS)
    assert back["index"][0].startswith("2013-12-31")
    assert len(back["contributions"]["residual"]) == 60


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda y, f: (y.iloc[:-1], f), "portfolio_returns: length"),
        (lambda y, f: (y.set_axis(y.index + pd.Timedelta(days=1)), f), "portfolio_returns: index does not match"),
        (lambda y, f: (y.where(y.index != y.index[10]), f), "portfolio_returns: NaN"),
        (lambda y, f: (y, f.assign(SMB=f["SMB"].where(f.index != f.index[3]))), "factor_returns: NaN"),
        (lambda y, f: (y.iloc[:5], f.iloc[:5]), "portfolio_returns: 5 observations, need at least 6"),
        (lambda y, f: (y, f.assign(dup=f["SMB"] * 2.0)), "factor_returns: factors are collinear"),
    ],
)
def test_factor_attribution_rejects_bad_input(ff_modern: pd.DataFrame, mutate, match: str) -> None:
    total, _, _ = _planted(ff_modern)
    y, f = mutate(total, ff_modern[FACTORS])
    with pytest.raises(ValueError, match=match):
        factor_attribution(y, f)


def test_factor_attribution_rejects_bad_rf_and_lags(ff_modern: pd.DataFrame) -> None:
    total, _, _ = _planted(ff_modern)
    with pytest.raises(ValueError, match="rf: column 'RFX' not in factor_returns"):
        factor_attribution(total, ff_modern, rf="RFX")
    with pytest.raises(ValueError, match="hac_lags"):
        factor_attribution(total, ff_modern, rf="RF", hac_lags=-1)


def test_rolling_factor_betas_match_a_direct_fit_per_window(ff_modern: pd.DataFrame) -> None:
    total, _, _ = _planted(ff_modern, seed=9)
    window = 60
    roll = rolling_factor_betas(total, ff_modern, window=window, rf="RF")
    assert list(roll.columns) == ["alpha", *FACTORS]
    assert roll.iloc[: window - 1].isna().all().all()
    for end in (window - 1, 200, len(ff_modern) - 1):
        sl = slice(end - window + 1, end + 1)
        y = (total - ff_modern["RF"]).to_numpy()[sl]
        x = np.column_stack([np.ones(window), ff_modern[FACTORS].to_numpy()[sl]])
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        np.testing.assert_allclose(roll.iloc[end].to_numpy(), coef, rtol=1e-8, atol=1e-12)
    with pytest.raises(ValueError, match="window"):
        rolling_factor_betas(total, ff_modern, window=3, rf="RF")


# ----------------------------------------------------------------------------------------------------------------
# Brinson: Bacon (2008), chapter 5 and 8
# ----------------------------------------------------------------------------------------------------------------

SECTORS = ["UK equities", "Japanese equities", "US equities"]
BACON_WP = pd.Series([0.40, 0.30, 0.30], index=SECTORS)
BACON_WB = pd.Series([0.40, 0.20, 0.40], index=SECTORS)
BACON_RP = pd.Series([0.20, -0.05, 0.06], index=SECTORS)
BACON_RB = pd.Series([0.10, -0.04, 0.08], index=SECTORS)


def test_bacon_table_5_2_brinson_hood_beebower() -> None:
    res = brinson_attribution(BACON_WP, BACON_WB, BACON_RP, BACON_RB, method="bhb")
    assert res.portfolio_return == pytest.approx(0.083, abs=1e-15)
    assert res.benchmark_return == pytest.approx(0.064, abs=1e-15)
    np.testing.assert_allclose(res.allocation.to_numpy(), [0.0, -0.004, -0.008], atol=1e-15)
    np.testing.assert_allclose(res.selection.to_numpy(), [0.04, -0.002, -0.008], atol=1e-15)
    np.testing.assert_allclose(res.interaction.to_numpy(), [0.0, -0.001, 0.002], atol=1e-15)
    assert (res.total_allocation, res.total_selection, res.total_interaction) == pytest.approx(
        (-0.012, 0.03, 0.001), abs=1e-15
    )
    assert res.linking is None and res.n_periods == 1


def test_bacon_table_5_3_brinson_fachler() -> None:
    res = brinson_attribution(BACON_WP, BACON_WB, BACON_RP, BACON_RB)
    assert res.method == "brinson_fachler"
    np.testing.assert_allclose(res.allocation.to_numpy(), [0.0, -0.0104, -0.0016], atol=1e-15)
    np.testing.assert_allclose(res.selection.to_numpy(), [0.04, -0.002, -0.008], atol=1e-15)
    np.testing.assert_allclose(res.interaction.to_numpy(), [0.0, -0.001, 0.002], atol=1e-15)
    effects = res.total_allocation + res.total_selection + res.total_interaction
    assert effects == pytest.approx(0.083 - 0.064, abs=1e-15)
    assert res.active_return == pytest.approx(0.019, abs=1e-15)


def test_effects_add_up_exactly_on_random_portfolios() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(2, 15))
        names = [f"s{i}" for i in range(n)]
        wp = pd.Series(rng.dirichlet(np.ones(n)), index=names)
        wb = pd.Series(rng.dirichlet(np.ones(n)), index=names)
        rp = pd.Series(rng.normal(0.01, 0.08, n), index=names)
        rb = pd.Series(rng.normal(0.01, 0.08, n), index=names)
        bf = brinson_attribution(wp, wb, rp, rb)
        bhb = brinson_attribution(wp, wb, rp, rb, method="bhb")
        direct = float(wp @ rp - wb @ rb)
        for r in (bf, bhb):
            tot = r.total_allocation + r.total_selection + r.total_interaction
            assert tot == pytest.approx(direct, abs=1e-15)
            assert r.active_return == pytest.approx(direct, abs=1e-15)
        # the two methods differ per sector by (w_i - W_i) B, which sums to zero
        np.testing.assert_allclose(
            (bhb.allocation - bf.allocation).to_numpy(), ((wp - wb) * float(wb @ rb)).to_numpy(), atol=1e-15
        )
        assert bhb.total_allocation == pytest.approx(bf.total_allocation, abs=1e-15)


def _bacon_quarters() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    idx = pd.to_datetime(["2016-03-31", "2016-06-30", "2016-09-30", "2016-12-31"])

    def tab(v: list[float]) -> pd.DataFrame:
        return pd.DataFrame(np.array(v).reshape(4, 3), index=idx, columns=SECTORS)

    wp = tab([0.4, 0.3, 0.3, 0.7, 0.2, 0.1, 0.3, 0.5, 0.2, 0.3, 0.5, 0.2])
    wb = tab([0.4, 0.2, 0.4, 0.4, 0.3, 0.3, 0.5, 0.4, 0.1, 0.4, 0.4, 0.2])
    rp = tab([0.2, -0.05, 0.06, -0.05, 0.03, -0.05, -0.2, 0.08, -0.15, 0.1, -0.07, 0.25])
    rb = tab([0.1, -0.04, 0.08, -0.07, 0.04, -0.1, -0.25, 0.05, -0.2, 0.05, -0.05, 0.1])
    return wp, wb, rp, rb


def test_bacon_table_8_1_per_quarter_effects() -> None:
    res = brinson_attribution(*_bacon_quarters())
    alloc = [[0, -0.0104, -0.0016], [-0.0072, -0.0086, 0.0108], [0.025, 0.0175, -0.0075], [-0.003, -0.007, 0]]
    # Bacon's chapter 8 tables fold interaction into selection ("top-down"): w_i (r_i - b_i)
    sel_top_down = [[0.04, -0.003, -0.006], [0.014, -0.002, 0.005], [0.015, 0.015, 0.01], [0.015, -0.01, 0.03]]
    np.testing.assert_allclose(res.per_period_allocation.to_numpy(), alloc, atol=1e-15)
    np.testing.assert_allclose(
        (res.per_period_selection + res.per_period_interaction).to_numpy(), sel_top_down, atol=1e-15
    )
    np.testing.assert_allclose(res.per_period_portfolio_return.to_numpy(), [0.083, -0.034, -0.05, 0.045], atol=1e-15)
    np.testing.assert_allclose(res.per_period_benchmark_return.to_numpy(), [0.064, -0.046, -0.125, 0.02], atol=1e-15)
    # the compounded returns: 3.86% and -9.41%
    assert res.portfolio_return == pytest.approx(1.083 * 0.966 * 0.95 * 1.045 - 1.0, abs=1e-15)
    assert res.benchmark_return == pytest.approx(1.064 * 0.954 * 0.875 * 1.02 - 1.0, abs=1e-15)


def test_bacon_table_8_2_carino_linking() -> None:
    res = brinson_attribution(*_bacon_quarters(), linking="carino")
    assert res.linking == "carino"
    np.testing.assert_allclose(res.allocation.to_numpy(), [0.0165, -0.006, 0.0015], atol=1e-4)
    np.testing.assert_allclose((res.selection + res.interaction).to_numpy(), [0.0804, 0.0018, 0.0385], atol=1e-4)
    assert res.total_allocation == pytest.approx(0.012, abs=1e-4)
    assert res.total_selection + res.total_interaction == pytest.approx(0.1207, abs=1e-4)
    # Table 8.2's "adjusted" quarterly effects are the raw ones times k_t / k
    adj_alloc = res.per_period_allocation.mul(res.link_coefficients, axis=0)
    np.testing.assert_allclose(adj_alloc.iloc[0].to_numpy(), [0.0, -0.0094, -0.0014], atol=1e-4)
    np.testing.assert_allclose(adj_alloc.iloc[2].to_numpy(), [0.0266, 0.0186, -0.008], atol=1e-4)
    # exact: the linked effects sum to the compounded excess return, 13.27%
    linked = res.total_allocation + res.total_selection + res.total_interaction
    assert linked == pytest.approx(res.portfolio_return - res.benchmark_return, abs=1e-15)
    assert res.active_return == pytest.approx(0.1327, abs=1e-4)


def test_bacon_table_8_3_menchero_linking() -> None:
    res = brinson_attribution(*_bacon_quarters(), linking="menchero")
    np.testing.assert_allclose(res.allocation.to_numpy(), [0.0156, -0.0078, 0.0014], atol=1e-4)
    np.testing.assert_allclose((res.selection + res.interaction).to_numpy(), [0.0838, 0.0005, 0.0391], atol=1e-4)
    assert res.total_allocation == pytest.approx(0.0092, abs=1e-4)
    linked = res.total_allocation + res.total_selection + res.total_interaction
    assert linked == pytest.approx(res.portfolio_return - res.benchmark_return, abs=1e-15)


@pytest.mark.parametrize("linking", ["carino", "menchero"])
@pytest.mark.parametrize("method", ["brinson_fachler", "bhb"])
def test_linking_sums_to_the_arithmetic_excess_over_the_span(linking: str, method: str) -> None:
    rng = np.random.default_rng(42)
    t, n = 36, 6
    idx = pd.date_range("2020-01-31", periods=t, freq="ME")
    names = [f"sector{i}" for i in range(n)]
    wp = pd.DataFrame(rng.dirichlet(np.ones(n), t), index=idx, columns=names)
    wb = pd.DataFrame(rng.dirichlet(np.ones(n), t), index=idx, columns=names)
    rb = pd.DataFrame(rng.normal(0.008, 0.05, (t, n)), index=idx, columns=names)
    rp = rb + rng.normal(0.002, 0.02, (t, n))
    res = brinson_attribution(wp, wb, rp, rb, method=method, linking=linking)
    cum_p = float(np.prod(1.0 + (wp * rp).sum(axis=1)) - 1.0)
    cum_b = float(np.prod(1.0 + (wb * rb).sum(axis=1)) - 1.0)
    total = res.total_allocation + res.total_selection + res.total_interaction
    assert total == pytest.approx(cum_p - cum_b, abs=1e-14)
    # unlinked effects would not: compounding leaves a residual
    raw = (res.per_period_allocation + res.per_period_selection + res.per_period_interaction).to_numpy().sum()
    assert abs(raw - (cum_p - cum_b)) > 1e-3
    # the linking coefficients alone reproduce the identity period by period
    coef = (carino_coefficients if linking == "carino" else menchero_coefficients)(
        res.per_period_portfolio_return, res.per_period_benchmark_return
    )
    np.testing.assert_allclose(coef, res.link_coefficients.to_numpy(), rtol=1e-14)


def test_brinson_to_dict_is_json() -> None:
    single = json.loads(json.dumps(brinson_attribution(BACON_WP, BACON_WB, BACON_RP, BACON_RB).to_dict()))
    assert single["allocation"]["Japanese equities"] == pytest.approx(-0.0104)
    assert "periods" not in single
    multi = json.loads(json.dumps(brinson_attribution(*_bacon_quarters()).to_dict()))
    assert multi["n_periods"] == 4 and multi["linking"] == "carino"
    assert multi["periods"]["index"][0].startswith("2016-03-31")
    assert len(multi["periods"]["allocation"]["UK equities"]) == 4


def test_brinson_accepts_mappings_and_one_row_frames() -> None:
    as_dicts = brinson_attribution(BACON_WP.to_dict(), BACON_WB.to_dict(), BACON_RP.to_dict(), BACON_RB.to_dict())
    as_rows = brinson_attribution(*(s.to_frame("2020-01-31").T for s in (BACON_WP, BACON_WB, BACON_RP, BACON_RB)))
    for r in (as_dicts, as_rows):
        np.testing.assert_allclose(r.allocation.to_numpy(), [0.0, -0.0104, -0.0016], atol=1e-15)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((BACON_WP * 1.1, BACON_WB, BACON_RP, BACON_RB), {}, "portfolio_weights: weights sum to 1.1"),
        ((BACON_WP, BACON_WB * 0.9, BACON_RP, BACON_RB), {}, "benchmark_weights: weights sum to 0.9"),
        ((BACON_WP, BACON_WB, BACON_RP.where(BACON_RP > 0), BACON_RB), {}, "portfolio_returns: NaN"),
        ((BACON_WP, BACON_WB, BACON_RP.iloc[:2], BACON_RB), {}, "portfolio_returns: sectors differ"),
        ((BACON_WP, BACON_WB, BACON_RP, BACON_RB.rename({"US equities": "US"})), {}, "benchmark_returns: sectors"),
        ((BACON_WP, BACON_WB, BACON_RP, BACON_RB), {"method": "carino"}, "method: must be one of"),
        ((BACON_WP, BACON_WB, BACON_RP, BACON_RB), {"linking": "grap"}, "linking: must be one of"),
        (([0.4, 0.3, 0.3], BACON_WB, BACON_RP, BACON_RB), {}, "portfolio_weights: expected a Series"),
    ],
)
def test_brinson_rejects_bad_input(args: tuple, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        brinson_attribution(*args, **kwargs)


def test_brinson_rejects_mismatched_periods() -> None:
    wp, wb, rp, rb = _bacon_quarters()
    with pytest.raises(ValueError, match="benchmark_returns: 3 periods"):
        brinson_attribution(wp, wb, rp, rb.iloc[:3])
    with pytest.raises(ValueError, match="portfolio_returns: period index does not match"):
        brinson_attribution(wp, wb, rp.set_axis(rp.index + pd.Timedelta(days=1)), rb)
    # a sector can lose everything in one period, but a whole portfolio at -100% cannot be log-linked
    wiped, halves = rp.copy(), wp.copy()
    wiped.iloc[1] = -1.0
    halves.iloc[1] = [0.5, 0.25, 0.25]  # sums to 1 exactly in binary floating point
    single = brinson_attribution(halves.iloc[[1]], wb.iloc[[1]], wiped.iloc[[1]], rb.iloc[[1]])
    assert single.portfolio_return == -1.0
    with pytest.raises(ValueError, match=r"portfolio_returns: total return -1 in period .* cannot link"):
        brinson_attribution(halves, wb, wiped, rb)
    # weight tolerance is honoured
    brinson_attribution(wp + 1e-9, wb, rp, rb)
    with pytest.raises(ValueError, match="portfolio_weights: weights sum to"):
        brinson_attribution(wp + 1e-9, wb, rp, rb, weight_tol=1e-10)


# ----------------------------------------------------------------------------------------------------------------
# timing versus selection
# ----------------------------------------------------------------------------------------------------------------


def test_perfect_foresight_timer_has_known_henriksson_merton_coefficients(ff_modern: pd.DataFrame) -> None:
    m = ff_modern["Mkt-RF"]
    # beta 1.5 in up months, 0.5 in down months: y = 1.5 m + 1.0 max(0, -m) exactly
    y = np.where(m > 0, 1.5, 0.5) * m
    hm = henriksson_merton(y, m)
    assert (hm.alpha, hm.beta, hm.gamma) == pytest.approx((0.0, 1.5, 1.0), abs=1e-12)
    tm = treynor_mazuy(y + np.random.default_rng(1).normal(0, 0.01, len(y)), m)
    assert tm.gamma > 0 and tm.timing_significant(0.001)
    assert tm.method == "treynor_mazuy" and json.loads(json.dumps(tm.to_dict()))["n_obs"] == len(m)


def test_treynor_mazuy_detects_planted_timing_and_not_when_absent(ff_modern: pd.DataFrame) -> None:
    """Size and power over 200 synthetic funds on the real market factor (1963-2018, 665 months)."""
    m = ff_modern["Mkt-RF"].to_numpy()
    rng = np.random.default_rng(2024)
    hits_null = hits_alt = 0
    reps = 200
    for _ in range(reps):
        e = rng.normal(0.0, 0.02, len(m))
        hits_null += treynor_mazuy(0.001 + 0.9 * m + e, m, hac_lags=3).timing_significant(0.05)
        hits_alt += treynor_mazuy(0.001 + 0.9 * m + 3.0 * m**2 + e, m, hac_lags=3).timing_significant(0.05)
    assert hits_null / reps < 0.10  # nominal 5% one-sided
    assert hits_alt / reps > 0.95


def test_selection_without_timing_shows_in_alpha_not_gamma(ff_modern: pd.DataFrame) -> None:
    m = ff_modern["Mkt-RF"]
    rf = ff_modern["RF"]
    y = rf + 0.004 + 1.0 * m + np.random.default_rng(8).normal(0, 0.01, len(m))
    for fit in (treynor_mazuy(y, m + rf, rf=rf), henriksson_merton(y, m + rf, rf=rf)):
        assert fit.alpha_pvalue < 1e-6 and fit.alpha == pytest.approx(0.004, abs=0.0015)
        assert not fit.timing_significant(0.01)


def test_timing_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="portfolio_returns: length 3 does not match"):
        treynor_mazuy([0.1, 0.2, 0.3], [0.1, 0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match="market_returns: NaN"):
        henriksson_merton(np.zeros(20), np.r_[np.nan, np.ones(19)])
    with pytest.raises(ValueError, match="market_returns: not enough variation"):
        henriksson_merton(np.arange(20.0), np.abs(np.arange(20.0)) + 1.0)
