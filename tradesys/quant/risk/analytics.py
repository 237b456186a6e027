"""Rolling cross-asset analytics: correlation matrices, betas against a benchmark, EWMA correlation, regimes.

Why: diversification is a promise made by a correlation matrix estimated in calm times; in a sell-off
correlations rise together and the diversification disappears when it is needed. These functions show how the
matrix moves through time and summarise where it stands now against its own history.

Conventions:

* Inputs are simple per-period returns, one column per asset, rows in time order; all windows are trailing (the
  value at t uses observations up to and including t, never after), so every output is usable without look-ahead.
* Rolling estimates are sample statistics (ddof = 1; beta = cov / var is unaffected by the choice).
* EWMA uses RiskMetrics' decay ``lam`` (0.94 daily): observation s gets weight proportional to lam^(t - s); means
  are EWMA means too (pandas ``ewm(alpha = 1 - lam)``), so the correlation equals the weighted Pearson correlation.
* Multi-asset outputs are long DataFrames indexed by (date, asset) with one column per asset, as pandas'
  ``rolling().corr()`` returns them; ``correlation_at`` picks one date's matrix.
* Bad input raises ``ValueError("field: reason")``; NaN inside the window gives NaN for that window (rows before
  the first full window are NaN too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "CorrelationRegimeSummary",
    "average_pairwise_correlation",
    "correlation_at",
    "correlation_regime_summary",
    "ewma_correlation",
    "rolling_beta",
    "rolling_correlation",
]

REGIME_LABELS: tuple[str, str, str] = ("low", "normal", "high")


def _returns_frame(x: Any, field_name: str, min_cols: int = 1) -> pd.DataFrame:
    if isinstance(x, pd.Series):
        x = x.to_frame(x.name if x.name is not None else "asset")
    if not isinstance(x, pd.DataFrame):
        raise ValueError(f"{field_name}: expected a pandas DataFrame (dates x assets)")
    try:
        df = x.astype(float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{field_name}: values must be numeric ({exc})") from None
    if df.shape[0] == 0:
        raise ValueError(f"{field_name}: empty")
    if df.shape[1] < min_cols:
        raise ValueError(f"{field_name}: need at least {min_cols} columns, got {df.shape[1]}")
    if df.columns.has_duplicates:
        raise ValueError(f"{field_name}: duplicate column names")
    if np.isinf(df.to_numpy()).any():
        raise ValueError(f"{field_name}: infinite values")
    if df.index.has_duplicates:
        raise ValueError(f"{field_name}: duplicate index labels")
    if not (df.index.is_monotonic_increasing):
        raise ValueError(f"{field_name}: index must be sorted in time order")
    return df


def _window(window: Any, n: int, minimum: int = 2) -> int:
    if not isinstance(window, int | np.integer) or isinstance(window, bool) or window < minimum:
        raise ValueError(f"window: must be an integer >= {minimum}, got {window!r}")
    if window > n:
        raise ValueError(f"window: {window} is longer than the {n} observations")
    return int(window)


def rolling_correlation(returns: pd.DataFrame, window: int, min_periods: int | None = None) -> pd.DataFrame:
    """Trailing ``window``-period Pearson correlation matrix at every date, long format (date, asset) x asset."""
    df = _returns_frame(returns, "returns", min_cols=2)
    w = _window(window, len(df), 3)
    return df.rolling(w, min_periods=min_periods).corr()


def correlation_at(long_corr: pd.DataFrame, date: Any) -> pd.DataFrame:
    """The asset x asset matrix for one date from a long (date, asset) correlation frame."""
    if not isinstance(long_corr.index, pd.MultiIndex):
        raise ValueError("long_corr: expected a (date, asset) MultiIndex as rolling_correlation returns")
    try:
        return long_corr.xs(date, level=0)
    except KeyError:
        raise ValueError(f"date: {date!r} not in the correlation index") from None


def average_pairwise_correlation(long_corr: pd.DataFrame) -> pd.Series:
    """Mean of the off-diagonal correlations per date (NaN where the window is not full)."""
    if not isinstance(long_corr.index, pd.MultiIndex):
        raise ValueError("long_corr: expected a (date, asset) MultiIndex")
    n = long_corr.shape[1]
    dates = long_corr.index.get_level_values(0).unique()
    cube = long_corr.to_numpy().reshape(len(dates), n, n)
    off = ~np.eye(n, dtype=bool)
    vals = cube[:, off].mean(axis=1)
    return pd.Series(vals, index=dates, name="avg_corr")


def _absorption_ratio(long_corr: pd.DataFrame) -> pd.Series:
    """Share of total variance (of standardised returns) explained by the first eigenvector, per date."""
    n = long_corr.shape[1]
    dates = long_corr.index.get_level_values(0).unique()
    cube = long_corr.to_numpy().reshape(len(dates), n, n)
    ok = np.isfinite(cube).all(axis=(1, 2))
    out = np.full(len(dates), np.nan)
    if ok.any():
        eig = np.linalg.eigvalsh(cube[ok])
        out[ok] = eig[:, -1] / n
    return pd.Series(out, index=dates, name="first_eigen_share")


def rolling_beta(
    asset_returns: pd.Series | pd.DataFrame,
    benchmark_returns: pd.Series,
    window: int,
    min_periods: int | None = None,
) -> pd.Series | pd.DataFrame:
    """Trailing beta of each asset on the benchmark: rolling cov(asset, bench) / var(bench).

    Equal to the slope of a rolling OLS of the asset on a constant and the benchmark over the same window.
    ``asset_returns`` and ``benchmark_returns`` must share the index (align them first).
    """
    is_series = isinstance(asset_returns, pd.Series)
    assets = _returns_frame(asset_returns, "asset_returns")
    if not isinstance(benchmark_returns, pd.Series):
        raise ValueError("benchmark_returns: expected a pandas Series")
    bench = _returns_frame(benchmark_returns, "benchmark_returns").iloc[:, 0]
    if not assets.index.equals(bench.index):
        raise ValueError("benchmark_returns: index does not match asset_returns (align them first)")
    w = _window(window, len(assets), 3)
    roll_b = bench.rolling(w, min_periods=min_periods)
    var_b = roll_b.var()
    cov = assets.rolling(w, min_periods=min_periods).cov(bench)
    beta = cov.div(var_b.where(var_b > 0.0), axis=0)
    if is_series:
        return beta.iloc[:, 0].rename(asset_returns.name)
    return beta


def ewma_correlation(returns: pd.DataFrame, lam: float = 0.94, min_periods: int = 0) -> pd.DataFrame:
    """EWMA (RiskMetrics decay ``lam``) correlation matrix at every date, long format (date, asset) x asset.

    Weights lam^(t-s) normalised over the observations so far (pandas ``adjust=True``); the correlation is the
    weighted Pearson correlation with EWMA means. ``min_periods`` blanks the first dates where few points exist.
    """
    df = _returns_frame(returns, "returns", min_cols=2)
    if not (0.0 < lam < 1.0):
        raise ValueError(f"lam: must be in (0, 1), got {lam}")
    if df.isna().to_numpy().any():
        raise ValueError("returns: NaN values (EWMA needs complete rows; drop or fill them first)")
    return df.ewm(alpha=1.0 - lam, adjust=True, min_periods=min_periods).corr()


@dataclass(frozen=True)
class CorrelationRegimeSummary:
    """Where the average pairwise correlation stands against its own rolling history.

    ``regimes`` labels each date "low" / "normal" / "high" by the terciles of the history of ``avg_corr``
    (thresholds in ``thresholds``). The tercile thresholds are computed over the whole history given, so the
    labels are descriptive (for research); ``current_percentile`` is the rank of the latest value in that history.
    """

    window: int
    avg_corr: pd.Series
    first_eigen_share: pd.Series
    regimes: pd.Series
    thresholds: tuple[float, float]
    current_date: Any
    current_avg_corr: float
    current_first_eigen_share: float
    current_percentile: float
    current_regime: str
    regime_stats: pd.DataFrame = field(repr=False)

    def to_dict(self, include_series: bool = False) -> dict[str, Any]:
        cur = self.current_date
        out: dict[str, Any] = {
            "window": self.window,
            "current_date": cur.isoformat() if isinstance(cur, pd.Timestamp) else str(cur),
            "current_avg_corr": self.current_avg_corr,
            "current_first_eigen_share": self.current_first_eigen_share,
            "current_percentile": self.current_percentile,
            "current_regime": self.current_regime,
            "thresholds": list(self.thresholds),
            "regime_stats": {
                str(r): {str(c): float(v) for c, v in row.items()} for r, row in self.regime_stats.iterrows()
            },
        }
        if include_series:
            idx = self.avg_corr.index
            out["index"] = [i.isoformat() if isinstance(i, pd.Timestamp) else str(i) for i in idx]
            out["avg_corr"] = [float(v) for v in self.avg_corr]
            out["first_eigen_share"] = [float(v) for v in self.first_eigen_share]
            out["regimes"] = [str(v) for v in self.regimes]
        return out


def correlation_regime_summary(returns: pd.DataFrame, window: int = 63) -> CorrelationRegimeSummary:
    """Rolling average pairwise correlation and first-eigenvector share, labelled low/normal/high by terciles.

    Why two measures: the average pairwise correlation is easy to read; the first eigenvalue share (the
    "absorption ratio" with one factor) captures the same crowding into one common factor even when a few pairs
    move against the rest.
    """
    df = _returns_frame(returns, "returns", min_cols=2)
    if df.isna().to_numpy().any():
        raise ValueError("returns: NaN values (drop or fill them first)")
    w = _window(window, len(df), 3)
    long_corr = df.rolling(w).corr()
    avg = average_pairwise_correlation(long_corr).dropna()
    if avg.empty:
        raise ValueError("window: no complete window in the data")
    eig = _absorption_ratio(long_corr).reindex(avg.index)
    lo, hi = (float(q) for q in np.quantile(avg.to_numpy(), [1.0 / 3.0, 2.0 / 3.0]))
    codes = np.where(avg.to_numpy() <= lo, 0, np.where(avg.to_numpy() <= hi, 1, 2))
    regimes = pd.Series(np.asarray(REGIME_LABELS)[codes], index=avg.index, name="corr_regime")
    rows = {}
    for code, label in enumerate(REGIME_LABELS):
        sel = codes == code
        rows[label] = {
            "share_of_time": float(sel.mean()),
            "mean_avg_corr": float(avg.to_numpy()[sel].mean()) if sel.any() else float("nan"),
            "mean_first_eigen_share": float(eig.to_numpy()[sel].mean()) if sel.any() else float("nan"),
        }
    last = avg.iloc[-1]
    return CorrelationRegimeSummary(
        window=w,
        avg_corr=avg,
        first_eigen_share=eig,
        regimes=regimes,
        thresholds=(lo, hi),
        current_date=avg.index[-1],
        current_avg_corr=float(last),
        current_first_eigen_share=float(eig.iloc[-1]),
        current_percentile=float((avg.to_numpy() <= last).mean()),
        current_regime=str(regimes.iloc[-1]),
        regime_stats=pd.DataFrame.from_dict(rows, orient="index"),
    )
