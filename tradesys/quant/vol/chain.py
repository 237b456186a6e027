"""Option chain -> implied vols -> fitted surface: `fit_chain(df) -> FittedSurface`.

Input: a pandas DataFrame with one row per quote and the columns

    strike      strike price (> 0)
    expiry      year fraction T (ACT/365) or a date/datetime (then `valuation_date` is required; T = days/365)
    bid, ask    quotes in price units (bid > 0, ask >= bid)
    type        "C"/"P" or "call"/"put" (case-insensitive)
    underlying  spot of the underlying (the median of the chain is the surface's spot)
    rate        continuously compounded risk-free rate to the expiry (discount factor e^{-rT})
    dividend    continuous dividend yield (used only when put-call parity cannot give the forward)

A missing column, or one whose values are not of its type, raises ValueError("column: reason"). Bad rows are
dropped, never raised on: `FittedSurface.dropped` counts them by reason and `quotes.status` says why per row.

Steps, per expiry:

1. clean: drop rows with a non-finite input, strike/underlying <= 0, T <= 0, an unknown type, bid <= 0
   (zero bid: no market), ask < bid (crossed); of duplicate (expiry, strike, type) rows keep the tightest;
2. mids (bid + ask)/2;
3. forward from put-call parity, C - P = e^{-rT} (F - K), on every strike with both a call and a put: the median of
   F_K = K + (C - P) e^{rT}, weighted by 1/(spread_C + spread_P)^2 (the error of F_K scales with the spreads);
   without a pair, the carry forward S e^{(r-q)T} (`forward_source` says which);
4. implied vols of out-of-the-money quotes (puts below the forward, calls at or above it; the in-the-money quote
   only where the OTM one is missing): Black-76 on that forward (`implied_vol_black76`: the same Let's Be
   Rational solver as `implied_vol`, with the dividend yield that parity implies), for mid, bid and ask;
5. fit SVI (default; butterfly-arbitrage-free, `calibrate_svi`) or SABR (`model="sabr"`, `calibrate_sabr` at
   `beta`) to the mid vols, weighted by 1 / (vol_ask - vol_bid) (the bid/ask spread in vol, floored at 0.01 vol
   points; from the price spread / vega where a bid vol does not exist), or equally (`weighting="equal"`);
6. build the `VolSurface` (calendar-arbitrage-free interpolation in T) and the `ArbitrageReport`, plus the
   static-arbitrage checks of the input quotes (calls and puts separately, model-free: monotonicity, slope
   bound e^{-rT}, convexity in strike).
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from tradesys.quant.options.european import black76_greeks
from tradesys.quant.options.implied_vol import implied_vol_black76
from tradesys.quant.vol.sabr import calibrate_sabr
from tradesys.quant.vol.surface import (
    ArbitrageReport,
    QuoteViolation,
    SabrSlice,
    SmileSlice,
    SviSlice,
    VolSurface,
    _jsonable,
)
from tradesys.quant.vol.svi import calibrate_svi

__all__ = ["REQUIRED_COLUMNS", "FittedSurface", "check_quotes", "fit_chain"]

REQUIRED_COLUMNS = ("strike", "expiry", "bid", "ask", "type", "underlying", "rate", "dividend")
_NUMERIC = ("strike", "bid", "ask", "underlying", "rate", "dividend")
_TYPES = {"c": True, "call": True, "p": False, "put": False}
#: Smallest bid/ask spread in vol used for weights (0.01 vol points): a zero spread must not get infinite weight.
MIN_VOL_SPREAD = 1e-4
#: Quote checks ignore violations below this fraction of the spot (rounding of the quotes themselves).
QUOTE_TOL = 1e-9

# Row status values (quotes.status); the first group are drops counted in `FittedSurface.dropped`.
DROP_REASONS = (
    "nan_input",
    "non_positive_strike",
    "non_positive_underlying",
    "expired",
    "bad_type",
    "zero_bid",
    "crossed",
    "duplicate",
    "no_implied_vol",
    "too_few_quotes",
)


@dataclass
class FittedSurface:
    """A surface fitted to an option chain (see `fit_chain`).

    vol(K, T): implied vol at strike K (price units) and T (years), arrays broadcast, k = ln(K/F(T)) on the forward
    curve interpolated in T. total_variance(k, T): w at log-moneyness k. params: per expiry T, the model parameters.
    forwards: per expiry T, the forward used. report: the arbitrage report (surface and input quotes).
    fit_errors: per expiry T, RMSE of fitted minus mid implied vol in vol points (1 = 0.01). quotes: every input
    row with its status, forward, k, mid/bid/ask/fitted implied vols. dropped: counts of dropped rows by reason.
    """

    surface: VolSurface
    model: str
    report: ArbitrageReport
    fit_errors: dict[float, float]
    quotes: pd.DataFrame
    dropped: dict[str, int] = field(default_factory=dict)
    expiry_labels: dict[float, str] = field(default_factory=dict)
    forward_source: dict[float, str] = field(default_factory=dict)
    skipped_expiries: dict[str, str] = field(default_factory=dict)
    beta: float | None = None
    valuation_date: str | None = None

    # ---- queries ---------------------------------------------------------------------------------------------

    def vol(self, K: Any, T: Any) -> np.ndarray:
        return self.surface.vol(K, T)

    def total_variance(self, k: Any, T: Any) -> np.ndarray:
        return self.surface.total_variance(k, T)

    def implied_vol(self, k: Any, T: Any) -> np.ndarray:
        return self.surface.implied_vol(k, T)

    def forward(self, T: Any) -> np.ndarray:
        return self.surface.forward(T)

    @property
    def expiries(self) -> np.ndarray:
        return self.surface.expiries

    @property
    def spot(self) -> float | None:
        return self.surface.spot

    @property
    def params(self) -> dict[float, dict[str, float]]:
        return {s.T: s.params_dict() for s in self.surface.slices}

    @property
    def forwards(self) -> dict[float, float]:
        return {s.T: s.forward for s in self.surface.slices}

    # ---- serialisation ---------------------------------------------------------------------------------------

    def to_dict(self, include_quotes: bool = True) -> dict[str, Any]:
        """JSON-serialisable dict (NaN becomes None); `from_dict` rebuilds an equivalent object."""
        expiries = [
            {
                **s.to_dict(),
                "label": self.expiry_labels.get(s.T, repr(s.T)),
                "forward_source": self.forward_source.get(s.T, ""),
                "fit_error": self.fit_errors.get(s.T, math.nan),
            }
            for s in self.surface.slices
        ]
        d: dict[str, Any] = {
            "model": self.model,
            "beta": self.beta,
            "spot": self.surface.spot,
            "valuation_date": self.valuation_date,
            "expiries": expiries,
            "report": self.report.to_dict(),
            "dropped": dict(self.dropped),
            "skipped_expiries": dict(self.skipped_expiries),
        }
        if include_quotes:
            q = self.quotes
            d["quotes"] = {c: [_cell(v) for v in q[c].tolist()] for c in q.columns}
        return _jsonable(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FittedSurface:
        surface = VolSurface.from_dict({"spot": d.get("spot"), "slices": d["expiries"]})
        quotes = pd.DataFrame(d["quotes"]) if d.get("quotes") is not None else pd.DataFrame()
        for c in quotes.columns:
            if c not in ("type", "status", "expiry_label"):
                quotes[c] = pd.to_numeric(quotes[c], errors="coerce") if c != "used" else quotes[c].astype(bool)
        return cls(
            surface=surface,
            model=str(d["model"]),
            report=ArbitrageReport.from_dict(d["report"]),
            fit_errors={float(e["T"]): _nan(e.get("fit_error")) for e in d["expiries"]},
            quotes=quotes,
            dropped={str(k): int(v) for k, v in d.get("dropped", {}).items()},
            expiry_labels={float(e["T"]): str(e.get("label", "")) for e in d["expiries"]},
            forward_source={float(e["T"]): str(e.get("forward_source", "")) for e in d["expiries"]},
            skipped_expiries={str(k): str(v) for k, v in d.get("skipped_expiries", {}).items()},
            beta=None if d.get("beta") is None else float(d["beta"]),
            valuation_date=d.get("valuation_date"),
        )


def _cell(v: Any) -> Any:
    if isinstance(v, float | np.floating):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def _nan(x: Any) -> float:
    return math.nan if x is None else float(x)


# --------------------------------------------------------------------------------------------------------------
# Validation and cleaning
# --------------------------------------------------------------------------------------------------------------


def _year_fractions(col: pd.Series, valuation_date: Any) -> tuple[np.ndarray, list[str]]:
    """T per row and a label per row (the date, or the year fraction as given)."""
    if pd.api.types.is_bool_dtype(col):
        raise ValueError("expiry: expected year fractions or dates, got booleans")
    if col.dtype == object:
        num = pd.to_numeric(col, errors="coerce")
        if not (num.isna() & col.notna()).any():
            col = num
    if pd.api.types.is_numeric_dtype(col):
        T = col.to_numpy(dtype=np.float64)
        return T, [repr(float(t)) for t in T]
    if valuation_date is None:
        raise ValueError("valuation_date: required when expiry holds dates (T = (expiry - valuation_date) / 365)")
    try:
        dates = pd.to_datetime(col, errors="raise")
        val = pd.Timestamp(valuation_date)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"expiry: not year fractions or parseable dates ({exc})") from exc
    if getattr(dates.dt, "tz", None) is not None:
        dates = dates.dt.tz_localize(None)
    T = ((dates - val).dt.total_seconds() / (365.0 * 86400.0)).to_numpy(dtype=np.float64)
    labels = [d.date().isoformat() if pd.notna(d) else "NaT" for d in dates]
    return T, labels


def _clean(chain: pd.DataFrame, valuation_date: Any) -> pd.DataFrame:
    if not isinstance(chain, pd.DataFrame):
        raise ValueError(f"chain: expected a pandas DataFrame, got {type(chain).__name__}")
    for c in REQUIRED_COLUMNS:
        if c not in chain.columns:
            raise ValueError(f"{c}: missing column (required: {', '.join(REQUIRED_COLUMNS)})")
    if len(chain) == 0:
        raise ValueError("chain: no rows")
    out = pd.DataFrame(index=pd.RangeIndex(len(chain)))
    for c in _NUMERIC:
        col = chain[c].reset_index(drop=True)
        if pd.api.types.is_bool_dtype(col):
            raise ValueError(f"{c}: expected numbers, got booleans")
        num = pd.to_numeric(col, errors="coerce")
        bad = num.isna() & col.notna()
        if bad.any():
            raise ValueError(f"{c}: not numeric (e.g. {col[bad].iloc[0]!r})")
        out[c] = num.astype(np.float64)
    T, labels = _year_fractions(chain["expiry"].reset_index(drop=True), valuation_date)
    out["T"] = T
    out["expiry_label"] = labels
    typ = chain["type"].reset_index(drop=True)
    is_call = typ.map(lambda v: _TYPES.get(str(v).strip().lower()) if isinstance(v, str) else None)
    if is_call.isna().all():
        raise ValueError("type: no recognised values (expected 'C'/'P' or 'call'/'put')")
    out["type"] = is_call.map({True: "C", False: "P"})
    out["is_call"] = is_call.map(lambda v: v is True).astype(bool)

    status = np.full(len(out), "ok", dtype=object)

    def mark(cond: np.ndarray, reason: str) -> None:
        status[(status == "ok") & cond] = reason

    finite = np.isfinite(out[["strike", "bid", "ask", "underlying", "rate", "dividend", "T"]].to_numpy()).all(axis=1)
    mark(~finite, "nan_input")
    mark(out["strike"].to_numpy() <= 0, "non_positive_strike")
    mark(out["underlying"].to_numpy() <= 0, "non_positive_underlying")
    mark(out["T"].to_numpy() <= 0, "expired")
    mark(is_call.isna().to_numpy(), "bad_type")
    mark(out["bid"].to_numpy() <= 0, "zero_bid")
    mark(out["ask"].to_numpy() < out["bid"].to_numpy(), "crossed")
    out["status"] = status
    out["mid"] = 0.5 * (out["bid"] + out["ask"])
    out["spread"] = out["ask"] - out["bid"]
    # Duplicates of (expiry, strike, type): keep the tightest quote.
    ok = out["status"] == "ok"
    key = (
        pd.Series(np.round(out["T"].to_numpy(), 10)).astype(str)
        + "|"
        + out["strike"].astype(str)
        + "|"
        + out["type"].astype(str)
    )
    order = out.loc[ok].assign(_key=key[ok]).sort_values(["_key", "spread"])
    dup = order.index[order.duplicated("_key", keep="first")]
    out.loc[dup, "status"] = "duplicate"
    return out


# --------------------------------------------------------------------------------------------------------------
# Forward, quote checks
# --------------------------------------------------------------------------------------------------------------


def _weighted_median(x: np.ndarray, w: np.ndarray) -> float:
    order = np.argsort(x)
    x, w = x[order], w[order]
    c = np.cumsum(w)
    return float(x[np.searchsorted(c, 0.5 * c[-1])])


def _parity_forward(g: pd.DataFrame, df: float) -> float | None:
    """Weighted median of K + (C - P)/df over strikes quoted both ways, or None without a pair."""
    calls = g[g["is_call"]].set_index("strike")
    puts = g[~g["is_call"]].set_index("strike")
    both = calls.index.intersection(puts.index)
    if both.empty:
        return None
    K = both.to_numpy(dtype=np.float64)
    c, p = calls.loc[both], puts.loc[both]
    fk = K + (c["mid"].to_numpy() - p["mid"].to_numpy()) / df
    spread = c["spread"].to_numpy() + p["spread"].to_numpy()
    w = 1.0 / np.maximum(spread, 1e-12 * float(np.median(K))) ** 2
    ok = np.isfinite(fk) & (fk > 0)
    if not ok.any():
        return None
    return _weighted_median(fk[ok], w[ok])


def check_quotes(
    T: float,
    strike: Any,
    bid: Any,
    ask: Any,
    is_call: bool,
    discount: float,
    tol: float = 0.0,
) -> list[QuoteViolation]:
    """Model-free static-arbitrage checks of one expiry's calls (or puts) in strike, on mid prices.

    Calls must fall with K, by no more than discount * dK, and be convex in K; puts rise with K (same bounds) and
    are convex. A violation larger than `tol` (price units) is recorded; `tradable` when it survives crossing the
    spread (e.g. for calls, monotonicity: bid(K2) > ask(K1)).
    """
    K = np.asarray(strike, dtype=np.float64)
    order = np.argsort(K)
    K, b, a = K[order], np.asarray(bid, dtype=np.float64)[order], np.asarray(ask, dtype=np.float64)[order]
    if not is_call:  # a put curve mirrored: P(K) rising in K is a "call-like" falling curve in -K
        K, b, a = -K[::-1], b[::-1], a[::-1]
    m = 0.5 * (b + a)
    out: list[QuoteViolation] = []
    typ = "C" if is_call else "P"

    def strikes(*ks: float) -> tuple[float, ...]:
        return tuple(sorted(abs(float(x)) for x in ks))

    for j in range(K.size - 1):
        dK = K[j + 1] - K[j]
        if dK <= 0:
            continue
        rise = m[j + 1] - m[j]
        if rise > tol:
            out.append(
                QuoteViolation(T, "monotonicity", typ, strikes(K[j], K[j + 1]), float(rise), bool(b[j + 1] > a[j]))
            )
        drop = m[j] - m[j + 1] - discount * dK
        if drop > tol:
            out.append(
                QuoteViolation(
                    T, "slope", typ, strikes(K[j], K[j + 1]), float(drop), bool(b[j] - a[j + 1] > discount * dK)
                )
            )
    for j in range(1, K.size - 1):
        k1, k2, k3 = K[j - 1], K[j], K[j + 1]
        if not (k1 < k2 < k3):
            continue
        lam = (k3 - k2) / (k3 - k1)
        fly = lam * m[j - 1] + (1.0 - lam) * m[j + 1] - m[j]
        if fly < -tol:
            out.append(
                QuoteViolation(
                    T,
                    "convexity",
                    typ,
                    strikes(k1, k2, k3),
                    float(-fly),
                    bool(lam * a[j - 1] + (1.0 - lam) * a[j + 1] - b[j] < 0.0),
                )
            )
    return out


# --------------------------------------------------------------------------------------------------------------
# The fitter
# --------------------------------------------------------------------------------------------------------------


def fit_chain(
    chain: pd.DataFrame,
    *,
    model: Literal["svi", "sabr"] = "svi",
    valuation_date: _dt.date | str | pd.Timestamp | None = None,
    beta: float = 1.0,
    obloj: bool = False,
    arbitrage_free: bool = True,
    weighting: Literal["spread", "equal"] = "spread",
    min_quotes: int | None = None,
) -> FittedSurface:
    """Fit a volatility surface to an option chain (see the module docstring for the columns and steps).

    model: "svi" (per-expiry raw SVI, free of butterfly arbitrage unless arbitrage_free=False) or "sabr" (Hagan
    at `beta`, `obloj` for Obloj's correction). valuation_date: needed when `expiry` holds dates. min_quotes:
    expiries with fewer usable quotes are skipped (default 5 for SVI, 3 for SABR; at least that many).
    Raises ValueError("field: reason") on a bad argument or column, or when no expiry can be fitted.
    """
    if model not in ("svi", "sabr"):
        raise ValueError(f"model: expected 'svi' or 'sabr', got {model!r}")
    if weighting not in ("spread", "equal"):
        raise ValueError(f"weighting: expected 'spread' or 'equal', got {weighting!r}")
    if not (isinstance(beta, int | float) and 0.0 <= beta <= 1.0):
        raise ValueError(f"beta: must be in [0, 1], got {beta!r}")
    need = 5 if model == "svi" else 3
    min_q = need if min_quotes is None else int(min_quotes)
    if min_q < need:
        raise ValueError(f"min_quotes: must be >= {need} for model {model!r}, got {min_quotes!r}")

    q = _clean(chain, valuation_date)
    for c in ("forward", "k", "iv_mid", "iv_bid", "iv_ask", "iv_fit", "weight"):
        q[c] = np.nan
    q["iv_code"] = -1
    q["used"] = False
    valid = q["status"] == "ok"
    spot = float(np.median(q.loc[valid, "underlying"])) if valid.any() else math.nan

    slices: list[SmileSlice] = []
    fit_errors: dict[float, float] = {}
    labels: dict[float, str] = {}
    sources: dict[float, str] = {}
    skipped: dict[str, str] = {}
    violations: list[QuoteViolation] = []
    tkey = np.round(q["T"].to_numpy(), 10)

    for T in np.unique(tkey[valid.to_numpy()]):
        idx = q.index[valid.to_numpy() & (tkey == T)]
        g = q.loc[idx]
        T = float(g["T"].iloc[0])
        label = str(g["expiry_label"].iloc[0])
        S = float(np.median(g["underlying"]))
        r = float(np.median(g["rate"]))
        div = float(np.median(g["dividend"]))
        df = math.exp(-r * T)

        for is_call in (True, False):
            side = g[g["is_call"] == is_call]
            if len(side) >= 2:
                violations += check_quotes(T, side["strike"], side["bid"], side["ask"], is_call, df, tol=QUOTE_TOL * S)

        F = _parity_forward(g, df)
        source = "parity"
        if F is None:
            F, source = S * math.exp((r - div) * T), "carry"
        q.loc[idx, "forward"] = F

        # Out-of-the-money selection: puts below F, calls at or above; the other side only where it is missing.
        otm = np.where(g["strike"] < F, ~g["is_call"], g["is_call"])
        has_otm = g.assign(_otm=otm).groupby("strike")["_otm"].transform("any").to_numpy()
        chosen = otm | ~has_otm
        q.loc[idx[~chosen], "status"] = "itm_not_used"
        sel = idx[chosen]
        K = q.loc[sel, "strike"].to_numpy()
        cp = q.loc[sel, "is_call"].to_numpy()
        iv_mid, codes = implied_vol_black76(q.loc[sel, "mid"].to_numpy(), F, K, T, r, cp)
        iv_bid, _ = implied_vol_black76(q.loc[sel, "bid"].to_numpy(), F, K, T, r, cp)
        iv_ask, _ = implied_vol_black76(q.loc[sel, "ask"].to_numpy(), F, K, T, r, cp)
        q.loc[sel, ["iv_mid", "iv_bid", "iv_ask"]] = np.column_stack([iv_mid, iv_bid, iv_ask])
        q.loc[sel, "iv_code"] = codes.astype(int)
        q.loc[sel, "k"] = np.log(K / F)
        good = np.isfinite(iv_mid) & (iv_mid > 0)
        q.loc[sel[~good], "status"] = "no_implied_vol"
        sel, K, iv_mid, iv_bid, iv_ask = sel[good], K[good], iv_mid[good], iv_bid[good], iv_ask[good]

        if sel.size < min_q:
            q.loc[sel, "status"] = "too_few_quotes"
            skipped[label] = f"too_few_quotes: {sel.size} usable, need {min_q}"
            continue

        spread_iv = iv_ask - iv_bid
        no_bid = ~np.isfinite(spread_iv)
        if no_bid.any():
            vega = black76_greeks(F, K[no_bid], T, r, iv_mid[no_bid], True, which=["vega"]).vega
            spread_iv[no_bid] = q.loc[sel[no_bid], "spread"].to_numpy() / np.maximum(vega, 1e-300)
        weight = 1.0 / np.maximum(spread_iv, MIN_VOL_SPREAD) if weighting == "spread" else np.ones_like(K)
        k = np.log(K / F)
        k_range = (float(k.min()), float(k.max()))
        if model == "svi":
            svi_fit = calibrate_svi(k, iv_mid, T, weights=weight, arbitrage_free=arbitrage_free)
            sl: SmileSlice = SviSlice(T, F, svi_fit.params, k_range=k_range)
        else:
            sabr_fit = calibrate_sabr(K, iv_mid, F, T, beta=beta, weights=weight, obloj=obloj)
            sl = SabrSlice(T, F, sabr_fit.params, obloj=obloj, k_range=k_range)
        iv_fit = sl.implied_vol(k)
        q.loc[sel, "iv_fit"] = iv_fit
        q.loc[sel, "weight"] = weight
        q.loc[sel, "used"] = True
        slices.append(sl)
        fit_errors[T] = float(100.0 * np.sqrt(np.mean((iv_fit - iv_mid) ** 2)))
        labels[T] = label
        sources[T] = source

    if not slices:
        raise ValueError(
            f"chain: no expiry has enough usable quotes to fit (need {min_q}); dropped: {_counts(q['status'])}"
        )
    surface = VolSurface(slices, spot=spot if math.isfinite(spot) else None)
    report = surface.arbitrage_report()
    report.quotes = violations
    dropped = {r: n for r, n in _counts(q["status"]).items() if r in DROP_REASONS}
    cols = [
        "expiry_label",
        "T",
        "strike",
        "type",
        "bid",
        "ask",
        "mid",
        "underlying",
        "rate",
        "dividend",
        "forward",
        "k",
        "iv_mid",
        "iv_bid",
        "iv_ask",
        "iv_fit",
        "weight",
        "iv_code",
        "used",
        "status",
    ]
    return FittedSurface(
        surface=surface,
        model=model,
        report=report,
        fit_errors=fit_errors,
        quotes=q[cols].copy(),
        dropped=dropped,
        expiry_labels=labels,
        forward_source=sources,
        skipped_expiries=skipped,
        beta=beta if model == "sabr" else None,
        valuation_date=None if valuation_date is None else pd.Timestamp(valuation_date).date().isoformat(),
    )


def _counts(status: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in status.value_counts().items() if k != "ok"}
