"""Stress tests on a `RiskBook`: historical replays, hypothetical factor shocks, correlation breakdown, reverse stress.

Why: VaR says how bad a normal bad day is; a stress test asks what a named disaster, or a chosen combination of
factor moves, would do to today's book, and the reverse stress test asks how small a move is enough to lose a
given amount. Every P&L here is a FULL revaluation through `book.scenario_pnl` (options repriced), in the book's
base currency; losses are negative P&L.

Historical scenarios (`HISTORICAL_SCENARIOS`) and the data behind each (`load_market_history` reads only data sets
shipped inside installed packages: no network, no writes):

* ``gfc_2008``: 2008-09-01 .. 2008-11-30 (Lehman to the November low), DAILY: S&P 500 index closes from
  skfolio's ``load_sp500_index`` (1990-2022), skfolio's 20 S&P 500 stocks (``load_sp500_dataset``, 1990-2022),
  the NASDAQ composite from ``arch.data.nasdaq`` (1999-2018), WTI crude from ``arch.data.wti`` (1986-2019).
* ``flash_crash_2010``: 2010-05-06, DAILY closes only. The intraday fall of ~9% and the recovery within minutes is
  NOT in any installed data; what is replayed is the close-to-close move (S&P 500 -3.2%).
* ``covid_2020``: 2020-02-20 .. 2020-03-23 (from the 19 Feb close, the pre-crash high, to the 23 Mar low), DAILY,
  skfolio index and stocks (arch's indices end in 2018, so NASDAQ maps by beta).
* ``black_monday_1987``: October 1987, MONTHLY. No installed equity series is daily in 1987 (arch's S&P 500 starts
  in 1999, skfolio's in 1990); the longest is the Fama-French US market factor in ``arch.data.frenchdata``
  (monthly from 1926): the market return Mkt-RF + RF for October 1987 is -22.6%, replayed as one move. The
  19 Oct one-day fall (S&P 500 -20.5%) cannot be replayed at daily frequency. WTI crude is daily from 1986
  and enters with its own October 1987 move.

Mapping of book symbols to scenario returns, per symbol, recorded in the result: (1) the symbol's own series when
it covers the window; else (2) a named proxy's series (``proxies={"XYZ": "NASDAQ"}``); else (3) beta x the
scenario's index (S&P 500 daily, or the monthly market factor in 1987) with beta from ``betas=`` or, when the
symbol has its own history, estimated by OLS on its daily returns against the S&P 500 over the whole overlap; a
symbol with neither gets beta 1.0 (flagged "default" in the mapping). The headline P&L applies the compounded
window move at once (instantaneous, options not aged unless ``age_options``) with a vol shift (default: the change
of annualised realized vol, window vs the 63 trading days before, in points: a realized-vol proxy for implied vol,
since no implied-vol history is installed for these dates; windows under 5 days and monthly data get no vol
shift unless given). The daily path (each day's moves on the unchanged book) gives the worst day.

Units of hypothetical shocks (`FactorShock`): equity in percent, vol in vol points, rates and credit spreads in
basis points, FX in percent (a rise of the foreign currency against the base). Correlation breakdown blends the
correlation matrix toward 1 (all of it, or a block) and reports parametric normal VaR on the book's dollar deltas
before and after, repairing a non-PSD result with Higham's (2002) nearest correlation matrix (statsmodels
``corr_nearest``). Reverse stress: the smallest spot shock, in Mahalanobis distance under a covariance or as a
uniform (beta-weighted) equity move, whose full-revaluation P&L reaches -loss (scipy SLSQP / brentq).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import optimize, stats

from tradesys.quant.risk.book import RiskBook, greeks, scenario_pnl, scenario_pnl_detail

__all__ = [
    "HISTORICAL_SCENARIOS",
    "HYPOTHETICAL_SHOCKS",
    "FactorShock",
    "HistoricalScenario",
    "MarketHistory",
    "StressResult",
    "apply_factor_shock",
    "correlation_stress",
    "estimate_betas",
    "load_market_history",
    "nearest_correlation",
    "reverse_stress_mahalanobis",
    "reverse_stress_uniform",
    "run_historical",
    "scenario_returns",
    "shock_correlation",
]

TRADING_DAYS = 252.0
MIN_VOL_WINDOW = 5  # days: fewer give no realized-vol proxy
PRE_WINDOW = 63  # trading days before a window for the "before" realized vol


# ------------------------------------------------------------------------------------------------- results


def _plain(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return [_plain(v) for v in x.tolist()]
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if math.isfinite(v) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.bool_,)):
        return bool(x)
    if isinstance(x, pd.Timestamp):
        return x.strftime("%Y-%m-%d")
    return x


@dataclass(frozen=True)
class StressResult:
    """One stress outcome. ``pnl`` is the headline P&L (base currency, negative = loss); ``shocks`` what was applied
    (per-symbol spot returns as decimals, vol points, bp, ...); ``details`` data sources, mapping, diagnostics."""

    name: str
    kind: Literal["historical", "hypothetical", "correlation", "reverse"]
    pnl: float
    pnl_by_symbol: dict[str, float]
    shocks: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN/inf become null, dates ISO strings)."""
        return _plain(
            {
                "name": self.name,
                "kind": self.kind,
                "pnl": self.pnl,
                "pnl_by_symbol": self.pnl_by_symbol,
                "shocks": self.shocks,
                "details": self.details,
            }
        )


# ------------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class MarketHistory:
    """Simple decimal returns the historical scenarios draw on (see the module docstring for the sources).

    ``daily``: one column per series (skfolio's 20 stocks, SP500, NASDAQ, WTI), NaN where a series has no data.
    ``monthly_market``: the US market's monthly return (Fama-French Mkt-RF + RF), month-end dates.
    """

    daily: pd.DataFrame
    monthly_market: pd.Series
    sources: dict[str, str]
    index: str = "SP500"


def load_market_history() -> MarketHistory:
    """Load the packaged data sets (skfolio, arch.data) once; returns simple decimal returns."""
    import arch.data.frenchdata
    import arch.data.nasdaq
    import arch.data.wti
    from skfolio.datasets import load_sp500_dataset, load_sp500_index

    def rets(prices: pd.Series) -> pd.Series:
        p = prices.astype(np.float64).dropna()
        return p.pct_change().iloc[1:]

    stocks = load_sp500_dataset()
    cols: dict[str, pd.Series] = {str(c): rets(stocks[c]) for c in stocks.columns}
    sources = {str(c): "skfolio load_sp500_dataset (adjusted close, daily 1990-2022)" for c in stocks.columns}
    cols["SP500"] = rets(load_sp500_index()["SP500"])
    sources["SP500"] = "skfolio load_sp500_index (S&P 500 close, daily 1990-2022)"
    cols["NASDAQ"] = rets(arch.data.nasdaq.load()["Adj Close"])
    sources["NASDAQ"] = "arch.data.nasdaq (NASDAQ composite adjusted close, daily 1999-2018)"
    cols["WTI"] = rets(arch.data.wti.load()["DCOILWTICO"])
    sources["WTI"] = "arch.data.wti (WTI crude spot, FRED DCOILWTICO, daily 1986-2019)"
    daily = pd.DataFrame(cols).sort_index()
    ff = arch.data.frenchdata.load()
    # arch parses the YYYYMM labels as nanoseconds; recover them
    months = pd.to_datetime(pd.Index(ff.index.asi8).astype(str), format="%Y%m") + pd.offsets.MonthEnd(0)
    market = pd.Series(((ff["Mkt-RF"] + ff["RF"]) / 100.0).to_numpy(), index=months, name="MARKET")
    sources["MARKET"] = "arch.data.frenchdata (Fama-French US market Mkt-RF + RF, monthly 1926-2018)"
    return MarketHistory(daily=daily, monthly_market=market, sources=sources)


@dataclass(frozen=True)
class HistoricalScenario:
    """A window of history replayed on today's book; ``frequency`` is that of the data that back it."""

    name: str
    start: str
    end: str
    frequency: Literal["daily", "monthly"]
    description: str
    data_note: str


HISTORICAL_SCENARIOS: dict[str, HistoricalScenario] = {
    s.name: s
    for s in (
        HistoricalScenario(
            "gfc_2008",
            "2008-09-01",
            "2008-11-30",
            "daily",
            "2008 global financial crisis: Lehman's failure (15 Sep) to the November low",
            "daily closes: skfolio S&P 500 index and 20 stocks, arch NASDAQ, arch WTI",
        ),
        HistoricalScenario(
            "flash_crash_2010",
            "2010-05-06",
            "2010-05-06",
            "daily",
            "2010 flash crash (6 May 2010)",
            "daily closes only: the intraday ~9% fall and rebound is not in the data; the close-to-close move "
            "(S&P 500 -3.2%) is what is replayed",
        ),
        HistoricalScenario(
            "covid_2020",
            "2020-02-20",
            "2020-03-23",
            "daily",
            "2020 COVID crash: from the 19 Feb 2020 high to the 23 Mar low",
            "daily closes: skfolio S&P 500 index and 20 stocks (arch's indices end in 2018: NASDAQ maps by beta)",
        ),
        HistoricalScenario(
            "black_monday_1987",
            "1987-10-01",
            "1987-10-31",
            "monthly",
            "October 1987 (Black Monday, 19 Oct)",
            "monthly: Fama-French US market factor (Mkt-RF + RF) for October 1987, the longest installed equity "
            "series; the one-day fall of 19 Oct cannot be replayed daily. WTI daily (arch.data.wti) compounded "
            "over the month",
        ),
    )
}


def estimate_betas(history: MarketHistory, symbols: Sequence[str], index: str | None = None) -> dict[str, float]:
    """OLS beta of each symbol's daily returns on the index's over their whole overlap (symbols with >= 250 days)."""
    idx = index or history.index
    x = history.daily[idx]
    out: dict[str, float] = {}
    for s in symbols:
        if s not in history.daily.columns:
            continue
        if s == idx:
            out[s] = 1.0
            continue
        both = pd.concat([history.daily[s], x], axis=1).dropna()
        if len(both) < 250:
            continue
        xs = both.iloc[:, 1].to_numpy()
        ys = both.iloc[:, 0].to_numpy()
        xc = xs - xs.mean()
        out[s] = float(np.dot(xc, ys - ys.mean()) / np.dot(xc, xc))
    return out


def _resolve_scenario(scenario: str | HistoricalScenario) -> HistoricalScenario:
    if isinstance(scenario, HistoricalScenario):
        return scenario
    if scenario not in HISTORICAL_SCENARIOS:
        raise ValueError(f"scenario: unknown {scenario!r}; choose from {sorted(HISTORICAL_SCENARIOS)}")
    return HISTORICAL_SCENARIOS[scenario]


def _map_symbols(
    sc: HistoricalScenario,
    symbols: Sequence[str],
    history: MarketHistory,
    betas: Mapping[str, float] | None,
    proxies: Mapping[str, str] | None,
) -> tuple[pd.DataFrame, dict[str, str], dict[str, tuple[str, Any]]]:
    """Scenario returns per symbol, the mapping in words, and per symbol ("series", name) or ("beta", value)."""
    betas = dict(betas or {})
    proxies = dict(proxies or {})
    for s, p in proxies.items():
        if p not in history.daily.columns:
            raise ValueError(f"proxies[{s!r}]: unknown series {p!r}; choose from {sorted(history.daily.columns)}")
    for s, b in betas.items():
        if not math.isfinite(float(b)):
            raise ValueError(f"betas[{s!r}]: must be finite, got {b!r}")
    window = history.daily.loc[sc.start : sc.end]
    if sc.frequency == "daily":
        index_r = window[history.index].dropna()
        index_name = history.index
    else:
        index_r = history.monthly_market.loc[sc.start : sc.end]
        index_name = "MARKET"
    if index_r.empty:
        raise ValueError(f"scenario: no {index_name} data in {sc.start}..{sc.end}")
    dates = index_r.index

    def own(name: str) -> pd.Series | None:
        """The series over the window at the scenario's frequency, or None if it does not cover it."""
        if name not in window.columns:
            return None
        col = window[name]
        if sc.frequency == "daily":
            col = col.reindex(dates)
            return col if col.notna().all() else None
        daily = col.dropna()  # monthly scenario: compound the series' own daily moves within each month
        months = daily.index.to_period("M")
        if daily.empty or set(months) != set(dates.to_period("M")):
            return None
        first_gap = (daily.index[0] - pd.Timestamp(sc.start)).days
        if first_gap > 7:  # the series starts inside the window: it does not cover the month
            return None
        monthly = (1.0 + daily).groupby(months).prod() - 1.0
        return pd.Series(monthly.reindex(dates.to_period("M")).to_numpy(), index=dates)

    need_beta = [s for s in symbols if own(s) is None and s not in proxies and s not in betas]
    est = estimate_betas(history, need_beta)
    out: dict[str, pd.Series] = {}
    words: dict[str, str] = {}
    how_mapped: dict[str, tuple[str, Any]] = {}
    for s in symbols:
        d = own(s)
        if d is not None:
            out[s], how_mapped[s] = d, ("series", s)
            words[s] = f"own series: {history.sources.get(s, s)}"
            continue
        if s in proxies:
            d = own(proxies[s])
            if d is None:
                raise ValueError(f"proxies[{s!r}]: {proxies[s]!r} has no data over {sc.start}..{sc.end}")
            out[s], how_mapped[s] = d, ("series", proxies[s])
            words[s] = f"proxy {proxies[s]}: {history.sources.get(proxies[s], proxies[s])}"
            continue
        if s in betas:
            b, how = float(betas[s]), "given"
        elif s in est:
            b, how = est[s], f"estimated on daily returns vs {history.index}"
        else:
            b, how = 1.0, "default: no data for the symbol"
        out[s], how_mapped[s] = b * index_r, ("beta", b)
        words[s] = f"beta {b:.3f} x {index_name} ({how})"
    frame = pd.DataFrame(out, index=dates).loc[:, list(symbols)]
    return frame, words, how_mapped


def scenario_returns(
    scenario: str | HistoricalScenario,
    symbols: Sequence[str],
    history: MarketHistory,
    *,
    betas: Mapping[str, float] | None = None,
    proxies: Mapping[str, str] | None = None,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Per-symbol decimal returns over the scenario window (rows: days, or months) and how each symbol was mapped."""
    frame, words, _ = _map_symbols(_resolve_scenario(scenario), symbols, history, betas, proxies)
    return frame, words


def _realized_vol_shift(
    sc: HistoricalScenario,
    history: MarketHistory,
    rets: pd.DataFrame,
    how_mapped: Mapping[str, tuple[str, Any]],
) -> tuple[np.ndarray, str]:
    """Vol points per symbol: annualised realized vol in the window minus that of the 63 trading days before."""
    if sc.frequency != "daily" or len(rets) < MIN_VOL_WINDOW:
        return np.zeros(rets.shape[1]), "none (window too short or not daily data: pass vol_shift to set one)"
    before = history.daily.loc[: pd.Timestamp(sc.start) - pd.Timedelta(days=1)]
    shifts = []
    for s in rets.columns:
        kind, v = how_mapped[s]
        prev = before[v] if kind == "series" else v * before[history.index]
        prev = prev.dropna().iloc[-PRE_WINDOW:]
        v_win = float(rets[s].std(ddof=1)) * math.sqrt(TRADING_DAYS)
        v_pre = float(prev.std(ddof=1)) * math.sqrt(TRADING_DAYS) if len(prev) > 1 else v_win
        shifts.append(100.0 * (v_win - v_pre))
    return np.asarray(shifts), "realized-vol proxy: annualised realized vol in the window minus the 63 days before"


def run_historical(
    book: RiskBook,
    scenario: str | HistoricalScenario,
    history: MarketHistory,
    *,
    betas: Mapping[str, float] | None = None,
    proxies: Mapping[str, str] | None = None,
    vol_shift: Literal["realized"] | float | Mapping[str, float] | None = "realized",
    age_options: bool = False,
) -> StressResult:
    """Replay a historical window on `book` (module docstring): headline = the compounded move at once."""
    sc = _resolve_scenario(scenario)
    rets, mapping, how_mapped = _map_symbols(sc, book.symbols, history, betas, proxies)
    if vol_shift == "realized":
        dvol, vol_note = _realized_vol_shift(sc, history, rets, how_mapped)
    elif vol_shift is None:
        dvol, vol_note = np.zeros(book.n_symbols), "none"
    elif isinstance(vol_shift, Mapping):
        unknown = sorted(set(vol_shift) - set(book.symbols))
        if unknown:
            raise ValueError(f"vol_shift: unknown symbol(s) {unknown}")
        dvol, vol_note = np.array([float(vol_shift.get(s, 0.0)) for s in book.symbols]), "given per symbol"
    else:
        dvol, vol_note = np.full(book.n_symbols, float(vol_shift)), "given"
    cum = (1.0 + rets).prod(axis=0) - 1.0
    n_days = len(rets) if sc.frequency == "daily" else 21 * len(rets)
    head = scenario_pnl_detail(
        book, cum.to_numpy()[None, :], dvol[None, :], horizon_days=float(n_days) if age_options else 0.0
    )
    path = scenario_pnl(book, rets.to_numpy())
    worst = int(np.nanargmin(path)) if np.isfinite(path).any() else 0
    details = {
        "description": sc.description,
        "window": [sc.start, sc.end],
        "frequency": sc.frequency,
        "data": sc.data_note,
        "n_periods": len(rets),
        "mapping": mapping,
        "vol_shift": vol_note,
        "options_aged_days": float(n_days) if age_options else 0.0,
        "path_pnl": {d.strftime("%Y-%m-%d"): float(v) for d, v in zip(rets.index, path, strict=True)},
        "worst_period": rets.index[worst].strftime("%Y-%m-%d"),
        "worst_period_pnl": float(path[worst]),
        "sum_of_path_pnl": float(np.nansum(path)),
        "codes": int(head.codes[0]),
    }
    return StressResult(
        name=sc.name,
        kind="historical",
        pnl=float(head.total[0]),
        pnl_by_symbol=dict(zip(book.symbols, map(float, head.by_symbol[0]), strict=True)),
        shocks={
            "spot_return": dict(zip(book.symbols, map(float, cum), strict=True)),
            "vol_points": dict(zip(book.symbols, map(float, dvol), strict=True)),
        },
        details=details,
    )


# ------------------------------------------------------------------------------------------- hypothetical


@dataclass(frozen=True)
class FactorShock:
    """A hypothetical move of the risk factors (units in the module docstring).

    equity_pct: a market move in percent applied to every symbol times its beta (``betas``, default 1), or a
    mapping symbol -> percent (unlisted symbols 0). vol_points: all symbols, or per symbol. vol_term_points:
    {tenor in years: points} added per option by linear interpolation in expiry (flat outside the tenors).
    fx_pct: per foreign currency, or one number for all. credit_spread_bp hits linear positions with a spread
    duration. horizon_days ages the options (trading days).
    """

    name: str = "custom"
    equity_pct: float | Mapping[str, float] = 0.0
    betas: Mapping[str, float] | None = None
    vol_points: float | Mapping[str, float] = 0.0
    vol_term_points: Mapping[float, float] | None = None
    rates_bp: float = 0.0
    fx_pct: float | Mapping[str, float] = 0.0
    credit_spread_bp: float = 0.0
    horizon_days: float = 0.0
    description: str = ""


HYPOTHETICAL_SHOCKS: dict[str, FactorShock] = {
    s.name: s
    for s in (
        FactorShock(
            "equity_crash",
            equity_pct=-20.0,
            vol_points=15.0,
            description="equities -20% (x beta), implied vols +15 points",
        ),
        FactorShock(
            "equity_rally",
            equity_pct=10.0,
            vol_points=-5.0,
            description="equities +10% (x beta), implied vols -5 points",
        ),
        FactorShock(
            "vol_spike_term",
            vol_term_points={0.083: 20.0, 0.25: 12.0, 1.0: 6.0, 2.0: 4.0},
            description="implied vols up, inverted term structure: 1m +20, 3m +12, 1y +6, 2y +4 points",
        ),
        FactorShock("rates_up_200bp", rates_bp=200.0, description="parallel +200 bp on the discount rate"),
        FactorShock("rates_down_100bp", rates_bp=-100.0, description="parallel -100 bp on the discount rate"),
        FactorShock("usd_rally", fx_pct=-10.0, description="every foreign currency -10% against the base"),
        FactorShock(
            "credit_widening",
            credit_spread_bp=150.0,
            equity_pct=-10.0,
            vol_points=8.0,
            description="credit spreads +150 bp with equities -10% and vols +8 points",
        ),
        FactorShock(
            "stagflation",
            equity_pct=-15.0,
            vol_points=10.0,
            rates_bp=150.0,
            credit_spread_bp=100.0,
            description="equities -15%, vols +10, rates +150 bp, spreads +100 bp",
        ),
    )
}


def _term_points(term: Mapping[float, float], T: np.ndarray) -> np.ndarray:
    tenors = np.array(sorted(float(t) for t in term))
    if tenors.size == 0 or np.any(tenors < 0):
        raise ValueError("vol_term_points: tenors must be >= 0 years and at least one given")
    pts = np.array([float(term[t]) for t in sorted(term, key=float)])
    if not np.isfinite(pts).all():
        raise ValueError("vol_term_points: points must be finite")
    return np.interp(T, tenors, pts)


def apply_factor_shock(book: RiskBook, shock: FactorShock | str) -> StressResult:
    """Full revaluation of `book` under one hypothetical factor shock (a preset name or a FactorShock)."""
    if isinstance(shock, str):
        if shock not in HYPOTHETICAL_SHOCKS:
            raise ValueError(f"shock: unknown {shock!r}; choose from {sorted(HYPOTHETICAL_SHOCKS)}")
        shock = HYPOTHETICAL_SHOCKS[shock]
    syms = book.symbols

    def per_symbol(v: float | Mapping[str, float], name: str, default: float = 0.0) -> np.ndarray:
        if isinstance(v, Mapping):
            unknown = sorted(set(v) - set(syms))
            if unknown:
                raise ValueError(f"{name}: unknown symbol(s) {unknown}")
            out = np.array([float(v.get(s, default)) for s in syms])
        else:
            out = np.full(len(syms), float(v))
        if not np.isfinite(out).all():
            raise ValueError(f"{name}: must be finite")
        return out

    if isinstance(shock.equity_pct, Mapping):
        ret = per_symbol(shock.equity_pct, "equity_pct") / 100.0
    else:
        b = per_symbol(shock.betas or {}, "betas", default=1.0)
        ret = b * float(shock.equity_pct) / 100.0
    dvol = per_symbol(shock.vol_points, "vol_points")
    opt_dvol = _term_points(shock.vol_term_points, book.opt_T) if shock.vol_term_points else None
    if isinstance(shock.fx_pct, Mapping):
        unknown = sorted(set(shock.fx_pct) - set(book.fx_currencies))
        if unknown:
            raise ValueError(f"fx_pct: unknown currency(ies) {unknown}; the book's are {book.fx_currencies}")
        fx = np.array([float(shock.fx_pct.get(c, 0.0)) for c in book.fx_currencies]) / 100.0
    else:
        fx = np.full(len(book.fx_currencies), float(shock.fx_pct) / 100.0)
    for name in ("rates_bp", "credit_spread_bp", "horizon_days"):
        v = getattr(shock, name)
        if not math.isfinite(float(v)):
            raise ValueError(f"{name}: must be finite, got {v!r}")
    res = scenario_pnl_detail(
        book,
        ret[None, :],
        dvol[None, :],
        shock.rates_bp / 1e4,
        shock.horizon_days,
        option_vol_shifts=None if opt_dvol is None else opt_dvol[None, :],
        fx_returns=fx[None, :],
        spread_shift=shock.credit_spread_bp / 1e4,
    )
    shocks: dict[str, Any] = {
        "spot_return": dict(zip(syms, map(float, ret), strict=True)),
        "vol_points": dict(zip(syms, map(float, dvol), strict=True)),
        "rates_bp": float(shock.rates_bp),
        "credit_spread_bp": float(shock.credit_spread_bp),
        "fx_return": dict(zip(book.fx_currencies, map(float, fx), strict=True)),
        "horizon_days": float(shock.horizon_days),
    }
    if shock.vol_term_points:
        shocks["vol_term_points"] = {str(k): float(v) for k, v in shock.vol_term_points.items()}
    return StressResult(
        name=shock.name,
        kind="hypothetical",
        pnl=float(res.total[0]),
        pnl_by_symbol=dict(zip(syms, map(float, res.by_symbol[0]), strict=True)),
        shocks=shocks,
        details={
            "description": shock.description,
            "linear_pnl": float(res.linear[0]),
            "options_pnl": float(res.options[0]),
            "codes": int(res.codes[0]),
        },
    )


# ------------------------------------------------------------------------------------------- correlation


def _check_square(name: str, a: Any) -> np.ndarray:
    m = np.asarray(a.to_numpy() if isinstance(a, pd.DataFrame) else a, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"{name}: must be a square matrix, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    if np.max(np.abs(m - m.T)) > 1e-10 * max(1.0, float(np.max(np.abs(m)))):
        raise ValueError(f"{name}: is not symmetric")
    return 0.5 * (m + m.T)


def nearest_correlation(a: Any, *, eig_floor: float = 0.0) -> np.ndarray:
    """Nearest correlation matrix (Frobenius norm) by Higham's (2002) alternating projections with Dykstra's
    correction, statsmodels ``corr_nearest``; a PSD input is returned unchanged (unit diagonal enforced)."""
    from statsmodels.stats.correlation_tools import corr_nearest
    from statsmodels.tools.sm_exceptions import IterationLimitWarning

    c = _check_square("corr", a)
    if not np.allclose(np.diag(c), 1.0, atol=1e-12):
        raise ValueError("corr: diagonal must be 1")
    if np.linalg.eigvalsh(c)[0] >= eig_floor - 1e-12:
        return c
    with warnings.catch_warnings():
        # the loop stops on an eigenvalue threshold it approaches but may never clear exactly
        warnings.simplefilter("ignore", IterationLimitWarning)
        x = corr_nearest(c, threshold=max(eig_floor, 1e-15), n_fact=1000)
    x = 0.5 * (x + x.T)
    np.fill_diagonal(x, 1.0)
    if np.linalg.eigvalsh(x)[0] < -1e-8:
        raise ValueError("corr: nearest-correlation repair did not converge")
    return x


def shock_correlation(
    corr: Any,
    lam: float,
    *,
    target: float = 1.0,
    assets: Sequence[int] | None = None,
) -> tuple[np.ndarray, bool]:
    """Move correlations a fraction `lam` of the way to `target`: C + lam (target - C) off the diagonal, for all
    pairs or only pairs within `assets` (indices). Returns the (repaired if needed) matrix and whether Higham's
    nearest-correlation repair was needed. Blending the whole matrix toward 1 stays PSD; a block blend may not."""
    c = _check_square("corr", corr)
    if not 0.0 <= float(lam) <= 1.0:
        raise ValueError(f"lam: must be in [0, 1], got {lam!r}")
    if not -1.0 <= float(target) <= 1.0:
        raise ValueError(f"target: must be in [-1, 1], got {target!r}")
    n = c.shape[0]
    mask = ~np.eye(n, dtype=bool)
    if assets is not None:
        idx = np.asarray(list(assets), dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"assets: indices must be in [0, {n})")
        sel = np.zeros(n, dtype=bool)
        sel[idx] = True
        mask &= sel[:, None] & sel[None, :]
    out = np.where(mask, c + float(lam) * (float(target) - c), c)
    np.fill_diagonal(out, 1.0)
    if np.linalg.eigvalsh(out)[0] >= -1e-12:
        return out, False
    return nearest_correlation(out), True


def correlation_stress(
    exposures: Any,
    cov: Any,
    *,
    lam: float = 0.5,
    target: float = 1.0,
    assets: Sequence[int] | None = None,
    alpha: float = 0.99,
    symbols: Sequence[str] | None = None,
) -> StressResult:
    """Correlation breakdown: parametric (normal, zero-mean) VaR = z_alpha sqrt(e' Sigma e) before and after
    shocking the correlations toward `target` (vols kept). `exposures` are currency amounts per asset (e.g.
    ``greeks(book)["dollar_delta"]``), `cov` the covariance of their returns over the VaR horizon.
    ``pnl`` is minus the stressed VaR; details hold both VaRs, the matrices and whether a repair was needed."""
    e = np.asarray(exposures, dtype=np.float64).ravel()
    sig = _check_square("cov", cov)
    if sig.shape[0] != e.size:
        raise ValueError(f"cov: shape {sig.shape} does not match {e.size} exposures")
    if not np.isfinite(e).all():
        raise ValueError("exposures: must be finite")
    if not 0.5 < float(alpha) < 1.0:
        raise ValueError(f"alpha: must be in (0.5, 1), got {alpha!r}")
    vols = np.sqrt(np.diag(sig))
    if np.any(vols <= 0):
        raise ValueError("cov: every variance must be > 0")
    if np.linalg.eigvalsh(sig)[0] < -1e-10 * float(np.max(vols) ** 2):
        raise ValueError("cov: is not positive semi-definite")
    corr = sig / np.outer(vols, vols)
    np.fill_diagonal(corr, 1.0)
    stressed, repaired = shock_correlation(corr, lam, target=target, assets=assets)
    z = float(stats.norm.ppf(alpha))
    sd0 = math.sqrt(max(float(e @ sig @ e), 0.0))
    sig1 = stressed * np.outer(vols, vols)
    sd1 = math.sqrt(max(float(e @ sig1 @ e), 0.0))
    names = list(symbols) if symbols is not None else [str(i) for i in range(e.size)]
    if len(names) != e.size:
        raise ValueError(f"symbols: {len(names)} names for {e.size} exposures")
    # component VaR under the stressed matrix (Euler allocation), as per-symbol "P&L" of the stress
    comp = -z * e * (sig1 @ e) / sd1 if sd1 > 0 else np.zeros_like(e)
    return StressResult(
        name="correlation_breakdown",
        kind="correlation",
        pnl=-z * sd1,
        pnl_by_symbol=dict(zip(names, map(float, comp), strict=True)),
        shocks={"lam": float(lam), "target": float(target), "assets": None if assets is None else list(assets)},
        details={
            "alpha": float(alpha),
            "var_before": z * sd0,
            "var_after": z * sd1,
            "ratio": (sd1 / sd0) if sd0 > 0 else math.nan,
            "repaired": repaired,
            "min_eigenvalue_after": float(np.linalg.eigvalsh(stressed)[0]),
            "corr_after": stressed,
        },
    )


# ------------------------------------------------------------------------------------------------ reverse


def _check_loss(loss: float) -> float:
    v = float(loss)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"loss: must be a positive amount (the loss threshold), got {loss!r}")
    return v


def reverse_stress_mahalanobis(
    book: RiskBook,
    cov: Any,
    loss: float,
    *,
    x0: Any = None,
    max_return: float = 0.95,
    tol: float = 1e-10,
) -> StressResult:
    """The most likely spot shock that loses `loss`: minimise x' Sigma^-1 x subject to P&L(x) <= -loss.

    x are per-symbol spot returns (decimals, book.symbols order), Sigma their covariance, P&L the full
    revaluation. Solved in whitened coordinates x = L z (Sigma = L L') by SLSQP with the constraint's gradient
    from central differences batched through `scenario_pnl`; started from the linear (dollar-delta) closed form
    x = -loss Sigma e / (e' Sigma e), which is exact for a linear book. Each |x_i| is capped at `max_return`.
    ``pnl`` is the P&L at the solution; details hold the Mahalanobis distance, its chi-square tail probability
    with N degrees of freedom, the linear closed form for comparison, and the optimiser's status.
    """
    L_ = _check_loss(loss)
    sig = _check_square("cov", cov)
    n = book.n_symbols
    if sig.shape[0] != n:
        raise ValueError(f"cov: shape {sig.shape} does not match the book's {n} symbols {book.symbols}")
    try:
        chol = np.linalg.cholesky(sig)
    except np.linalg.LinAlgError:
        raise ValueError("cov: must be positive definite for a Mahalanobis distance") from None
    e = greeks(book)["dollar_delta"].to_numpy()
    ese = float(e @ sig @ e)
    lin_x = -L_ * (sig @ e) / ese if ese > 0 else np.zeros(n)
    lin_d = L_ / math.sqrt(ese) if ese > 0 else math.inf

    def pnl_of_z(zs: np.ndarray) -> np.ndarray:
        x = np.clip(zs @ chol.T, -max_return, max_return)
        return scenario_pnl(book, x)

    h = 1e-6
    eye = np.eye(n)

    def cons(z: np.ndarray) -> float:
        return float(-pnl_of_z(z[None, :])[0] - L_)

    def cons_jac(z: np.ndarray) -> np.ndarray:
        zz = np.concatenate([z[None, :] + h * eye, z[None, :] - h * eye])
        p = pnl_of_z(zz)
        return -(p[:n] - p[n:]) / (2 * h)

    start = np.asarray(x0, dtype=np.float64) if x0 is not None else lin_x
    if start.shape != (n,) or not np.isfinite(start).all():
        raise ValueError(f"x0: must be {n} finite returns")
    z0 = np.linalg.solve(chol, start)
    res = optimize.minimize(
        lambda z: float(z @ z),
        z0,
        jac=lambda z: 2.0 * z,
        method="SLSQP",
        constraints=[{"type": "ineq", "fun": cons, "jac": cons_jac}],
        options={"maxiter": 200, "ftol": tol},
    )
    x = np.clip(res.x @ chol.T, -max_return, max_return)
    det = scenario_pnl_detail(book, x[None, :])
    pnl = float(det.total[0])
    d = float(np.sqrt(res.x @ res.x))
    # SLSQP can stop with "positive directional derivative" at the optimum when the finite-difference constraint
    # gradient is noisy at its tolerance; accept the point when it breaches and satisfies the KKT condition
    # (z parallel to the constraint gradient), which is what optimality means here.
    g = cons_jac(res.x)
    kkt_cos = float(res.x @ g / (np.linalg.norm(res.x) * np.linalg.norm(g))) if d > 0 and np.any(g) else math.nan
    ok = pnl <= -L_ * (1.0 - 1e-6) and (bool(res.success) or kkt_cos > 1.0 - 1e-6)
    return StressResult(
        name="reverse_mahalanobis",
        kind="reverse",
        pnl=pnl,
        pnl_by_symbol=dict(zip(book.symbols, map(float, det.by_symbol[0]), strict=True)),
        shocks={"spot_return": dict(zip(book.symbols, map(float, x), strict=True))},
        details={
            "loss": L_,
            "found": ok,
            "mahalanobis": d,
            "chi2_tail_prob": float(stats.chi2.sf(d * d, df=n)),
            "linear_mahalanobis": lin_d,
            "linear_shock": dict(zip(book.symbols, map(float, lin_x), strict=True)),
            "optimizer": {"success": bool(res.success), "message": str(res.message), "nit": int(res.nit)},
            "kkt_cos": kkt_cos,
        },
    )


def reverse_stress_uniform(
    book: RiskBook,
    loss: float,
    *,
    betas: Mapping[str, float] | None = None,
    max_move: float = 0.95,
    grid: int = 381,
) -> StressResult:
    """The smallest uniform equity move m (every symbol moves m x beta, decimals) whose P&L reaches -loss.

    Scans m over [-max_move, max_move] (one batched full revaluation of `grid` moves), takes the breach nearest
    to zero on each side, refines it with brentq, and reports the smaller in absolute value (both in details).
    ``found`` is False (pnl the worst seen) when no move within the range loses that much.
    """
    L_ = _check_loss(loss)
    if not 0.0 < max_move < 1.0:
        raise ValueError(f"max_move: must be in (0, 1), got {max_move!r}")
    b = np.array([float((betas or {}).get(s, 1.0)) for s in book.symbols])
    unknown = sorted(set(betas or {}) - set(book.symbols))
    if unknown:
        raise ValueError(f"betas: unknown symbol(s) {unknown}")

    def f_at(m: float) -> float:
        return float(scenario_pnl(book, (m * b)[None, :])[0]) + L_

    half = max(2, grid // 2)
    candidates: dict[str, float | None] = {}
    for side, sign in (("down", -1.0), ("up", 1.0)):
        ms = sign * np.linspace(0.0, max_move, half + 1)
        vals = scenario_pnl(book, ms[:, None] * b[None, :]) + L_
        hit = np.flatnonzero(vals <= 0)
        if hit.size == 0 or hit[0] == 0:
            candidates[side] = None if hit.size == 0 else 0.0
            continue
        k = int(hit[0])
        candidates[side] = float(optimize.brentq(f_at, ms[k - 1], ms[k], xtol=1e-12))
    found = [m for m in candidates.values() if m is not None]
    if found:
        m = min(found, key=abs)
    else:
        ms = np.linspace(-max_move, max_move, grid)
        m = float(ms[int(np.nanargmin(scenario_pnl(book, ms[:, None] * b[None, :])))])
    det = scenario_pnl_detail(book, (m * b)[None, :])
    return StressResult(
        name="reverse_uniform",
        kind="reverse",
        pnl=float(det.total[0]),
        pnl_by_symbol=dict(zip(book.symbols, map(float, det.by_symbol[0]), strict=True)),
        shocks={"uniform_move": m, "spot_return": dict(zip(book.symbols, map(float, m * b), strict=True))},
        details={
            "loss": L_,
            "found": bool(found),
            "down_move": candidates["down"],
            "up_move": candidates["up"],
            "max_move": max_move,
        },
    )
