"""Rolling correlation, rolling beta, EWMA correlation and the correlation-regime summary on real data.

Data: ``skfolio.datasets.load_sp500_dataset()`` (20 S&P 500 stocks, daily 1990-2022) and ``arch.data.sp500``
(the S&P 500 index, daily 1999-2018). References: numpy ``corrcoef``/``cov`` on the window, statsmodels
``RollingOLS``, and the EWMA correlation written out as a weighted Pearson correlation.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from statsmodels.regression.rolling import RollingOLS

from tradesys.quant.risk.analytics import (
    average_pairwise_correlation,
    correlation_at,
    correlation_regime_summary,
    ewma_correlation,
    rolling_beta,
    rolling_correlation,
)


@pytest.fixture(scope="module")
def stocks() -> pd.DataFrame:
    from skfolio.datasets import load_sp500_dataset

    return load_sp500_dataset().pct_change().iloc[1:]


@pytest.fixture(scope="module")
def stocks_vs_index(stocks: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    from arch.data import sp500

    index = sp500.load()["Adj Close"].pct_change().iloc[1:].rename("SPX")
    joined = stocks[["AAPL", "JPM", "BAC", "XOM", "WMT"]].join(index, how="inner")
    return joined.drop(columns="SPX"), joined["SPX"]


def test_rolling_correlation_equals_corrcoef_of_the_window(stocks: pd.DataFrame) -> None:
    window = 63
    sub = stocks.loc["2000":"2005"]
    long = rolling_correlation(sub, window)
    assert long.shape == (len(sub) * sub.shape[1], sub.shape[1])
    for pos in (window - 1, 700, len(sub) - 1):
        date = sub.index[pos]
        direct = np.corrcoef(sub.iloc[pos - window + 1 : pos + 1].to_numpy(), rowvar=False)
        np.testing.assert_allclose(correlation_at(long, date).to_numpy(), direct, rtol=1e-9, atol=1e-12)
    assert correlation_at(long, sub.index[window - 2]).isna().all().all()  # no full window yet
    avg = average_pairwise_correlation(long)
    pos = 900
    direct = np.corrcoef(sub.iloc[pos - window + 1 : pos + 1].to_numpy(), rowvar=False)
    n = direct.shape[0]
    assert avg.iloc[pos] == pytest.approx((direct.sum() - n) / (n * n - n), rel=1e-10)


def test_rolling_beta_is_cov_over_var_and_a_rolling_ols_slope(stocks_vs_index) -> None:
    assets, spx = stocks_vs_index
    window = 126
    beta = rolling_beta(assets, spx, window)
    assert list(beta.columns) == list(assets.columns)
    assert beta.iloc[: window - 1].isna().all().all()
    for pos in (window - 1, 2000, len(spx) - 1):
        a = assets.iloc[pos - window + 1 : pos + 1].to_numpy()
        m = spx.iloc[pos - window + 1 : pos + 1].to_numpy()
        direct = [np.cov(a[:, j], m)[0, 1] / np.var(m, ddof=1) for j in range(a.shape[1])]
        np.testing.assert_allclose(beta.iloc[pos].to_numpy(), direct, rtol=1e-9)
    ols = RollingOLS(assets["JPM"], sm.add_constant(spx), window=window).fit(params_only=True).params["SPX"]
    np.testing.assert_allclose(beta["JPM"].to_numpy(), ols.to_numpy(), rtol=1e-7, equal_nan=True)
    # a Series in gives a Series out; real-data sanity: a bank's beta jumps in the 2008-09 crisis
    bac = rolling_beta(assets["BAC"], spx, window)
    assert isinstance(bac, pd.Series) and bac.name == "BAC"
    assert bac.loc["2009-06-30"] > 2.0 * bac.loc["2006-12-29"]


def test_ewma_correlation_is_the_exponentially_weighted_pearson_correlation(stocks: pd.DataFrame) -> None:
    sub = stocks[["AAPL", "JPM", "XOM"]].iloc[-400:]
    lam = 0.94
    long = ewma_correlation(sub, lam=lam)
    for pos in (50, len(sub) - 1):
        x = sub.iloc[: pos + 1].to_numpy()
        w = lam ** np.arange(pos, -1, -1.0)
        w /= w.sum()
        mu = w @ x
        c = (x - mu).T @ ((x - mu) * w[:, None])
        d = np.sqrt(np.diag(c))
        np.testing.assert_allclose(correlation_at(long, sub.index[pos]).to_numpy(), c / np.outer(d, d), rtol=1e-9)
    # EWMA reacts faster than a long window: the last EWMA matrix differs from the 250-day one
    slow = correlation_at(rolling_correlation(sub, 250), sub.index[-1])
    assert np.abs(correlation_at(long, sub.index[-1]).to_numpy() - slow.to_numpy()).max() > 0.02


def test_correlation_regime_summary_flags_the_2008_crisis(stocks: pd.DataFrame) -> None:
    summary = correlation_regime_summary(stocks.loc["2003":"2012"], window=63)
    avg = summary.avg_corr
    # direct check of one point of the series
    pos = 500
    block = stocks.loc["2003":"2012"].iloc[pos - 62 : pos + 1].to_numpy()
    direct = np.corrcoef(block, rowvar=False)
    assert avg.iloc[pos - 62] == pytest.approx((direct.sum() - 20) / 380, rel=1e-10)
    # correlations rise in the crisis: Oct-Dec 2008 is in the high tercile, calm 2005-2006 is not
    assert (summary.regimes.loc["2008-10":"2008-12"] == "high").all()
    assert avg.loc["2008-10":"2008-12"].mean() > avg.loc["2005":"2006"].mean() + 0.15
    assert (summary.regimes.loc["2005":"2006"] == "high").mean() < 0.2
    lo, hi = summary.thresholds
    assert lo < hi
    shares = summary.regime_stats["share_of_time"]
    assert shares.sum() == pytest.approx(1.0) and np.all(np.abs(shares - 1 / 3) < 0.01)
    assert summary.regime_stats.loc["high", "mean_avg_corr"] > summary.regime_stats.loc["low", "mean_avg_corr"]
    # the first eigenvalue share moves with the average correlation
    assert np.corrcoef(avg, summary.first_eigen_share)[0, 1] > 0.9
    assert 0.0 < summary.current_percentile <= 1.0
    assert summary.current_regime in ("low", "normal", "high")
    d = json.loads(json.dumps(summary.to_dict(include_series=True)))
    assert len(d["avg_corr"]) == len(avg) and d["current_date"].startswith("2012-12")


def test_analytics_reject_bad_input(stocks: pd.DataFrame, stocks_vs_index) -> None:
    assets, spx = stocks_vs_index
    with pytest.raises(ValueError, match="window: 5000 is longer"):
        rolling_correlation(stocks.iloc[:100], 5000)
    with pytest.raises(ValueError, match="window: must be an integer"):
        rolling_correlation(stocks.iloc[:100], 2)
    with pytest.raises(ValueError, match="returns: need at least 2 columns"):
        rolling_correlation(stocks[["AAPL"]], 20)
    with pytest.raises(ValueError, match="returns: index must be sorted"):
        rolling_correlation(stocks.iloc[::-1], 20)
    with pytest.raises(ValueError, match="benchmark_returns: index does not match"):
        rolling_beta(assets, spx.iloc[1:], 20)
    holed = stocks.iloc[:50].copy()
    holed.iloc[3, 2] = np.nan
    with pytest.raises(ValueError, match="returns: NaN"):
        ewma_correlation(holed)
    with pytest.raises(ValueError, match="lam: must be in"):
        ewma_correlation(stocks.iloc[:50], lam=1.0)
    # NaN inside a rolling window blanks the pairs it touches in the windows that contain it, and only those
    gap = stocks[["AAPL", "JPM"]].iloc[:200].copy()
    gap.iloc[100, 0] = np.nan
    long = rolling_correlation(gap, 20)
    assert np.isnan(correlation_at(long, gap.index[110]).loc["AAPL", "JPM"])
    assert correlation_at(long, gap.index[130]).notna().all().all()
