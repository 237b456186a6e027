"""A risk book of linear and option positions, revalued under scenarios: full revaluation and delta-gamma-vega.

Why: VaR, expected shortfall and stress tests all need the same thing from a portfolio, a P&L vector over a set
of scenarios. For option books a sensitivity approximation misses exactly the large moves those measures are
about, so `scenario_pnl` reprices every option in every scenario through the options library (European:
`bsm_price`; American: `american_price(method="lr")`), all options x scenarios in one batch. `delta_gamma_pnl`
is the classical Taylor approximation on `bsm_greeks`, for comparison and for speed when moves are small.

Conventions (the whole module):

* ``book.symbols`` fixes the column order of every per-symbol scenario array. Spot returns are simple decimal
  returns (0.01 = +1%): the shocked spot is S (1 + r). A return <= -1 (spot <= 0) or a NaN makes that
  scenario's P&L NaN with an `OptionError` code in `ScenarioPnL.codes`; the batch never raises for one row.
* ``vol_shifts`` are absolute shifts in vol POINTS (5.0 = +5 points: sigma 0.20 -> 0.25), per symbol; the
  shocked vol is floored at 0. ``option_vol_shifts`` (points, per option) adds term structure on top.
* ``rate_shift`` is an absolute shift of the continuously compounded rate in DECIMAL (0.0025 = +25 bp);
  ``spread_shift`` likewise for credit spreads (decimal, 0.01 = +100 bp).
* ``horizon_days`` are trading days; the options age by horizon_days / 252 years (T is in years, ACT/365, and
  252 trading days span one calendar year). An option that expires within the horizon is worth its payoff.
  Linear positions carry no time value (no carry or accrual over the horizon).
* Linear positions: P&L = q price r - q price D_rate dr - q price D_spread ds (durations in years; first order).
* Options: P&L = quantity x multiplier x (V_shocked - V_base), with V_base computed by the same engine at the
  unshocked inputs, so a zero scenario gives exactly zero P&L and the engine's discretisation error cancels.
* FX: each symbol is quoted in a currency; ``fx_to_base`` converts one unit of it to the base currency.
  ``fx_returns`` (S x len(book.fx_currencies)) are returns of those rates; base P&L = f0 (1 + x) dV_local +
  f0 x V0_local, the exact change of f V.
* Greeks (`greeks`): dollar delta = sum q Delta S (P&L per unit return), dollar gamma = sum q Gamma S^2
  (P&L ~ dollar_delta r + dollar_gamma r^2 / 2), vega per vol point, theta per calendar day, rho per bp; all in the
  base currency, per symbol.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from tradesys.quant.options.american import american_price
from tradesys.quant.options.errors import OptionError
from tradesys.quant.options.european import bsm_greeks, bsm_price_checked

__all__ = [
    "TRADING_DAYS_PER_YEAR",
    "LinearPosition",
    "OptionPosition",
    "RiskBook",
    "ScenarioPnL",
    "delta_gamma_pnl",
    "greeks",
    "scenario_pnl",
    "scenario_pnl_detail",
]

TRADING_DAYS_PER_YEAR = 252.0
STYLES = ("european", "american")
# elements per bsm_price call: keeps the kernel's ~30 temporaries cache-sized (measured ~2x faster than one
# 400,000-element call on a 2,000 x 200 scenario grid)
CHUNK_ELEMS = 65_536


@dataclass(frozen=True)
class LinearPosition:
    """A linear holding: quantity units at price (local currency). Durations in years, for rate/spread shocks."""

    symbol: str
    quantity: float
    price: float
    rate_duration: float = 0.0
    spread_duration: float = 0.0


@dataclass(frozen=True)
class OptionPosition:
    """An option on `symbol`: strike, T years to expiry (ACT/365), implied vol (decimal), contracts x multiplier."""

    symbol: str
    strike: float
    T: float
    is_call: bool
    quantity: float
    implied_vol: float
    style: Literal["european", "american"] = "european"
    multiplier: float = 1.0


@dataclass(frozen=True, eq=False)
class RiskBook:
    """Positions as arrays, ready for batched revaluation; build it with `RiskBook.build` or `from_records`."""

    symbols: tuple[str, ...]
    spots: np.ndarray  # (N,)
    dividend_yields: np.ndarray  # (N,)
    rate: float
    currencies: tuple[str, ...]  # (N,) quote currency per symbol
    base_currency: str
    fx_currencies: tuple[str, ...]  # non-base currencies, the columns of fx_returns
    fx_spot: np.ndarray  # (N,) base units per local unit, per symbol
    fx_col: np.ndarray  # (N,) column in fx_returns per symbol, -1 for the base currency
    lin_sym: np.ndarray  # (L,) int
    lin_qty: np.ndarray
    lin_price: np.ndarray
    lin_rate_dur: np.ndarray
    lin_spread_dur: np.ndarray
    opt_sym: np.ndarray  # (M,) int
    opt_K: np.ndarray
    opt_T: np.ndarray
    opt_call: np.ndarray  # bool
    opt_qty: np.ndarray
    opt_iv: np.ndarray
    opt_american: np.ndarray  # bool
    opt_mult: np.ndarray
    american_steps: int = 101
    _base_cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------------------------------------- building

    @classmethod
    def build(
        cls,
        linear: Sequence[LinearPosition] = (),
        options: Sequence[OptionPosition] = (),
        *,
        spots: Mapping[str, float] | None = None,
        dividend_yields: Mapping[str, float] | float = 0.0,
        rate: float = 0.0,
        currencies: Mapping[str, str] | None = None,
        fx_to_base: Mapping[str, float] | None = None,
        base_currency: str = "USD",
        american_steps: int = 101,
    ) -> RiskBook:
        """Validate positions and lay them out as arrays.

        Symbols are ordered as in `spots`, then by first appearance in the positions. A symbol without a spot takes
        the price of its first linear position; an option symbol with neither raises. Raises ValueError naming the
        field and the reason.
        """
        spots = dict(spots or {})
        order: list[str] = list(spots)
        for p in [*linear, *options]:
            if p.symbol not in order:
                order.append(p.symbol)
        for i, p in enumerate(linear):
            _check_str(f"linear[{i}].symbol", p.symbol)
            _check_finite(f"linear[{i}].quantity", p.quantity)
            _check_finite(f"linear[{i}].price", p.price)
            _check_finite(f"linear[{i}].rate_duration", p.rate_duration)
            _check_finite(f"linear[{i}].spread_duration", p.spread_duration)
            if p.price <= 0:
                raise ValueError(f"linear[{i}].price: must be > 0, got {p.price!r}")
            spots.setdefault(p.symbol, float(p.price))
        for i, o in enumerate(options):
            _check_str(f"options[{i}].symbol", o.symbol)
            for name in ("strike", "T", "quantity", "implied_vol", "multiplier"):
                _check_finite(f"options[{i}].{name}", getattr(o, name))
            if o.strike <= 0:
                raise ValueError(f"options[{i}].strike: must be > 0, got {o.strike!r}")
            if o.T < 0:
                raise ValueError(f"options[{i}].T: must be >= 0 (years), got {o.T!r}")
            if o.implied_vol < 0:
                raise ValueError(f"options[{i}].implied_vol: must be >= 0 (decimal), got {o.implied_vol!r}")
            if o.multiplier <= 0:
                raise ValueError(f"options[{i}].multiplier: must be > 0, got {o.multiplier!r}")
            if str(o.style).lower() not in STYLES:
                raise ValueError(f"options[{i}].style: must be one of {STYLES}, got {o.style!r}")
            if o.symbol not in spots:
                raise ValueError(f"spots: missing for option symbol {o.symbol!r} (options[{i}])")
        for sym in order:
            if sym not in spots:
                raise ValueError(f"spots: missing for symbol {sym!r}")
            _check_finite(f"spots[{sym!r}]", spots[sym])
            if spots[sym] <= 0:
                raise ValueError(f"spots[{sym!r}]: must be > 0, got {spots[sym]!r}")
        _check_finite("rate", rate)
        if american_steps < 3:
            raise ValueError(f"american_steps: must be >= 3, got {american_steps!r}")
        idx = {s: i for i, s in enumerate(order)}
        n = len(order)
        if isinstance(dividend_yields, Mapping):
            unknown = sorted(set(dividend_yields) - set(order))
            if unknown:
                raise ValueError(f"dividend_yields: unknown symbol(s) {unknown}")
            q = np.array([float(dividend_yields.get(s, 0.0)) for s in order])
        else:
            q = np.full(n, float(dividend_yields))
        if not np.isfinite(q).all():
            raise ValueError("dividend_yields: must be finite")
        ccy_map = dict(currencies or {})
        unknown = sorted(set(ccy_map) - set(order))
        if unknown:
            raise ValueError(f"currencies: unknown symbol(s) {unknown}")
        ccys = tuple(str(ccy_map.get(s, base_currency)) for s in order)
        fx = {base_currency: 1.0, **dict(fx_to_base or {})}
        if fx[base_currency] != 1.0:
            raise ValueError(f"fx_to_base[{base_currency!r}]: the base currency must convert at 1.0")
        fx_ccys = tuple(sorted({c for c in ccys if c != base_currency}))
        for c in fx_ccys:
            if c not in fx:
                raise ValueError(f"fx_to_base: missing rate for currency {c!r}")
            _check_finite(f"fx_to_base[{c!r}]", fx[c])
            if fx[c] <= 0:
                raise ValueError(f"fx_to_base[{c!r}]: must be > 0, got {fx[c]!r}")

        def arr(values: list[float]) -> np.ndarray:
            return np.asarray(values, dtype=np.float64)

        return cls(
            symbols=tuple(order),
            spots=arr([float(spots[s]) for s in order]),
            dividend_yields=q,
            rate=float(rate),
            currencies=ccys,
            base_currency=base_currency,
            fx_currencies=fx_ccys,
            fx_spot=arr([float(fx[c]) for c in ccys]),
            fx_col=np.array([fx_ccys.index(c) if c != base_currency else -1 for c in ccys], dtype=np.int64),
            lin_sym=np.array([idx[p.symbol] for p in linear], dtype=np.int64),
            lin_qty=arr([float(p.quantity) for p in linear]),
            lin_price=arr([float(p.price) for p in linear]),
            lin_rate_dur=arr([float(p.rate_duration) for p in linear]),
            lin_spread_dur=arr([float(p.spread_duration) for p in linear]),
            opt_sym=np.array([idx[o.symbol] for o in options], dtype=np.int64),
            opt_K=arr([float(o.strike) for o in options]),
            opt_T=arr([float(o.T) for o in options]),
            opt_call=np.array([bool(o.is_call) for o in options], dtype=bool),
            opt_qty=arr([float(o.quantity) for o in options]),
            opt_iv=arr([float(o.implied_vol) for o in options]),
            opt_american=np.array([str(o.style).lower() == "american" for o in options], dtype=bool),
            opt_mult=arr([float(o.multiplier) for o in options]),
            american_steps=int(american_steps),
        )

    @classmethod
    def from_records(
        cls,
        linear: Sequence[Mapping[str, Any]] = (),
        options: Sequence[Mapping[str, Any]] = (),
        **kw: Any,
    ) -> RiskBook:
        """`build` from plain dicts (JSON rows); unknown or missing keys raise ValueError naming the row and key."""
        lin = [_record(LinearPosition, f"linear[{i}]", r) for i, r in enumerate(linear)]
        opts = [_record(OptionPosition, f"options[{i}]", r) for i, r in enumerate(options)]
        return cls.build(lin, opts, **kw)

    # ------------------------------------------------------------------------------------------- views

    @property
    def _eu_idx(self) -> np.ndarray:
        return np.flatnonzero(~self.opt_american)

    @property
    def _am_idx(self) -> np.ndarray:
        return np.flatnonzero(self.opt_american)

    @property
    def n_symbols(self) -> int:
        return len(self.symbols)

    @property
    def n_options(self) -> int:
        return int(self.opt_K.shape[0])

    def option_values(self) -> np.ndarray:
        """Per-option model value (one unit, local currency) at the book's inputs, by the revaluation engine."""
        if "v0" not in self._base_cache:
            self._base_cache["v0"] = _price_options(
                self, self.spots[self.opt_sym][None, :], self.opt_iv[None, :], np.asarray(self.rate), self.opt_T
            )[0][0]
        return self._base_cache["v0"]

    def market_value(self) -> float:
        """Base-currency value of the book: linear q price plus options' quantity x multiplier x model value."""
        return float(self._local_values() @ self.fx_spot)

    def _local_values(self, linear: bool = True, options: bool = True) -> np.ndarray:
        """Per-symbol local-currency value of the linear positions and/or the options."""
        v = np.zeros(self.n_symbols)
        if linear:
            np.add.at(v, self.lin_sym, self.lin_qty * self.lin_price)
        if options and self.n_options:
            np.add.at(v, self.opt_sym, self.opt_qty * self.opt_mult * self.option_values())
        return v


@dataclass(frozen=True)
class ScenarioPnL:
    """P&L per scenario in the base currency, split by symbol and by linear/options; codes per scenario (0 = OK)."""

    total: np.ndarray  # (S,)
    by_symbol: np.ndarray  # (S, N)
    linear: np.ndarray  # (S,)
    options: np.ndarray  # (S,)
    codes: np.ndarray  # (S,) int8 OptionError, the first failing code among the scenario's inputs


# ------------------------------------------------------------------------------------------------ helpers


def _check_str(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name}: must be a non-empty string, got {value!r}")


def _check_finite(name: str, value: Any) -> None:
    try:
        ok = math.isfinite(float(value))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name}: must be a finite number, got {value!r}")


def _record(kind: type, where: str, row: Mapping[str, Any]) -> Any:
    if not isinstance(row, Mapping):
        raise ValueError(f"{where}: must be an object, got {type(row).__name__}")
    names = list(kind.__dataclass_fields__)
    unknown = sorted(set(row) - set(names))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; expected {names}")
    try:
        return kind(**row)
    except TypeError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _per_symbol(book: RiskBook, x: Any, name: str, S: int | None) -> np.ndarray:
    """Scenario array (S, N): a DataFrame with the book's symbols as columns, an array (S, N) or (N,), a scalar."""
    if isinstance(x, pd.DataFrame):
        missing = [s for s in book.symbols if s not in x.columns]
        if missing:
            raise ValueError(f"{name}: missing column(s) for symbol(s) {missing}")
        x = x.loc[:, list(book.symbols)].to_numpy(dtype=np.float64)
    a = np.asarray(x, dtype=np.float64)
    n = book.n_symbols
    rows = S or 1
    if a.ndim == 0:
        return np.broadcast_to(a, (rows, n))
    if a.ndim == 1 and a.shape[0] == n:  # one value per symbol (also when n happens to equal S)
        return np.broadcast_to(a[None, :], (rows, n))
    if a.ndim == 2 and a.shape[1] in (n, 1) and (S is None or a.shape[0] in (S, 1)):  # (S, 1): same for all symbols
        return np.broadcast_to(a, (a.shape[0] if S is None else S, n))
    raise ValueError(
        f"{name}: expected shape (scenarios, {n}) in the order of book.symbols {book.symbols}, "
        f"({n},) or a scalar, got {a.shape}"
    )


def _per_scenario(x: Any, name: str, S: int) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 0:
        return np.full(S, float(a))
    if a.ndim == 1 and a.shape[0] == S:
        return a
    raise ValueError(f"{name}: expected a scalar or {S} values (one per scenario), got shape {a.shape}")


def _per_option(book: RiskBook, x: Any, name: str, S: int) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    m = book.n_options
    if a.ndim == 0 or (a.ndim == 1 and a.shape[0] == m):
        return np.broadcast_to(a, (S, m))
    if a.ndim == 2 and a.shape[1] == m and a.shape[0] in (S, 1):
        return np.broadcast_to(a, (S, m))
    raise ValueError(f"{name}: expected shape ({S}, {m}) or ({m},) (one per option), got {a.shape}")


def _price_options(
    book: RiskBook,
    S_new: np.ndarray,
    sigma: np.ndarray,
    r: np.ndarray,
    T: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Price every option in every scenario row given: (S, M) prices and int8 codes; r is scalar or (S,).

    One `bsm_price_checked` call for the European columns, one `american_price` call for the American ones; the
    caller keeps S x M cache-sized (see `_option_rows`).
    """
    n_s, m = S_new.shape
    price = np.empty((n_s, m))
    codes = np.zeros((n_s, m), dtype=np.int8)
    r2 = np.broadcast_to(np.asarray(r, dtype=np.float64).reshape(-1, 1), (n_s, 1))
    q = book.dividend_yields[book.opt_sym]
    eu = book._eu_idx
    am = book._am_idx
    if eu.size == m:  # all European: no column gathers
        return bsm_price_checked(S_new, book.opt_K, T, r2, q, sigma, book.opt_call)
    if eu.size:
        p, c = bsm_price_checked(S_new[:, eu], book.opt_K[eu], T[eu], r2, q[eu], sigma[:, eu], book.opt_call[eu])
        price[:, eu] = p
        codes[:, eu] = c
    if am.size:
        res = american_price(
            S_new[:, am],
            book.opt_K[am],
            T[am],
            r2,
            q[am],
            sigma[:, am],
            book.opt_call[am],
            method="lr",
            steps=book.american_steps,
        )
        price[:, am] = res.price
        codes[:, am] = res.codes
    return price, codes


def _option_rows(book: RiskBook, sh: _Shocks, chunk_elems: int) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
    """Shocked option prices, a block of scenario rows at a time: (rows, prices (rows, M), codes (rows, M)).

    Blocks of about `chunk_elems` prices keep the pricing kernel's temporaries in cache (measured ~2x faster than
    one call over a 2,000 x 200 grid); nothing of size S x M outlives a block.
    """
    n_s = sh.ret.shape[0]
    m = book.n_options
    rows = max(1, chunk_elems // max(m, 1))
    spot = book.spots[book.opt_sym]
    T_new = np.maximum(book.opt_T - sh.dt, 0.0)
    for a in range(0, n_s, rows):
        sl = slice(a, min(a + rows, n_s))
        s_new = spot * (1.0 + sh.ret[sl][:, book.opt_sym])
        sigma = book.opt_iv if sh.dsig is None else np.maximum(book.opt_iv + sh.dsig[sl], 0.0)
        sigma = np.broadcast_to(sigma, s_new.shape)
        price, codes = _price_options(book, s_new, sigma, book.rate + sh.dr[sl], T_new)
        yield sl, price, codes


def _first_code(codes: np.ndarray) -> np.ndarray:
    """Per row, the first nonzero code (0 if none)."""
    if codes.shape[1] == 0:
        return np.zeros(codes.shape[0], dtype=np.int8)
    nz = codes != 0
    first = np.argmax(nz, axis=1)
    return np.where(nz.any(axis=1), codes[np.arange(codes.shape[0]), first], 0).astype(np.int8)


@dataclass
class _Shocks:
    ret: np.ndarray  # (S, N)
    dsig: np.ndarray | None  # (S, M) decimal vol change per option, None if none
    dr: np.ndarray  # (S,)
    ds: np.ndarray  # (S,)
    fx: np.ndarray  # (S, C)
    dt: float  # years


def _shocks(
    book: RiskBook,
    spot_returns: Any,
    vol_shifts: Any,
    rate_shift: Any,
    horizon_days: float,
    option_vol_shifts: Any,
    fx_returns: Any,
    spread_shift: Any,
) -> _Shocks:
    ret = _per_symbol(book, spot_returns, "spot_returns", None)
    S = ret.shape[0]
    _check_finite("horizon_days", horizon_days)
    if horizon_days < 0:
        raise ValueError(f"horizon_days: must be >= 0, got {horizon_days!r}")
    dsig: np.ndarray | None = None  # (S, M) decimal vol change per option; None: no vol shift
    if vol_shifts is not None:
        dsig = _per_symbol(book, vol_shifts, "vol_shifts", S)[:, book.opt_sym] / 100.0
    if option_vol_shifts is not None:
        extra = _per_option(book, option_vol_shifts, "option_vol_shifts", S) / 100.0
        dsig = extra if dsig is None else dsig + extra
    dr = np.zeros(S) if rate_shift is None else _per_scenario(rate_shift, "rate_shift", S)
    ds = np.zeros(S) if spread_shift is None else _per_scenario(spread_shift, "spread_shift", S)
    c = len(book.fx_currencies)
    if fx_returns is None:
        fx = np.zeros((S, c))
    else:
        if isinstance(fx_returns, pd.DataFrame):
            missing = [k for k in book.fx_currencies if k not in fx_returns.columns]
            if missing:
                raise ValueError(f"fx_returns: missing column(s) for currency(ies) {missing}")
            fx_returns = fx_returns.loc[:, list(book.fx_currencies)].to_numpy(dtype=np.float64)
        fx = np.asarray(fx_returns, dtype=np.float64)
        if fx.ndim == 1 and fx.shape[0] == c:
            fx = fx[None, :]
        if fx.ndim != 2 or fx.shape[1] != c or fx.shape[0] not in (1, S):
            raise ValueError(
                f"fx_returns: expected shape ({S}, {c}) in the order of book.fx_currencies "
                f"{book.fx_currencies}, got {fx.shape}"
            )
        fx = np.broadcast_to(fx, (S, c))
    return _Shocks(ret, dsig, dr, ds, fx, float(horizon_days) / TRADING_DAYS_PER_YEAR)


def _to_base(book: RiskBook, local_by_symbol: np.ndarray, fx: np.ndarray, v0: np.ndarray) -> np.ndarray:
    """Local P&L per symbol (S, N) of positions worth v0 (N,) -> base currency: f0 (1 + x) dV + f0 x V0."""
    f0 = book.fx_spot[None, :]
    if not book.fx_currencies:
        return local_by_symbol * f0
    x = np.where(book.fx_col[None, :] >= 0, fx[:, np.maximum(book.fx_col, 0)], 0.0)
    return f0 * (1.0 + x) * local_by_symbol + f0 * x * v0[None, :]


def _linear_pnl(book: RiskBook, sh: _Shocks) -> np.ndarray:
    """(S, L) local-currency P&L of each linear position."""
    notional = book.lin_qty * book.lin_price
    pnl = sh.ret[:, book.lin_sym] * notional
    if np.any(book.lin_rate_dur):
        pnl = pnl - sh.dr[:, None] * (notional * book.lin_rate_dur)
    if np.any(book.lin_spread_dur):
        pnl = pnl - sh.ds[:, None] * (notional * book.lin_spread_dur)
    return pnl


def _linear_local(book: RiskBook, sh: _Shocks) -> np.ndarray:
    """(S, N) local-currency P&L of the linear positions, per symbol."""
    S, n = sh.ret.shape
    out = np.zeros((n, S))
    if book.lin_qty.size:
        np.add.at(out, book.lin_sym, _linear_pnl(book, sh).T)
    return out.T


def _weights(book: RiskBook) -> np.ndarray:
    """(M, N) option -> symbol aggregation weights quantity x multiplier."""
    w = np.zeros((book.n_options, book.n_symbols))
    w[np.arange(book.n_options), book.opt_sym] = book.opt_qty * book.opt_mult
    return w


# ------------------------------------------------------------------------------------------------ public API


def scenario_pnl_detail(
    book: RiskBook,
    spot_returns: Any,
    vol_shifts: Any = None,
    rate_shift: Any = None,
    horizon_days: float = 0.0,
    *,
    option_vol_shifts: Any = None,
    fx_returns: Any = None,
    spread_shift: Any = None,
    chunk_elems: int = CHUNK_ELEMS,
) -> ScenarioPnL:
    """Full revaluation of `book` in each scenario (module docstring for units); P&L split and reason codes."""
    sh = _shocks(book, spot_returns, vol_shifts, rate_shift, horizon_days, option_vol_shifts, fx_returns, spread_shift)
    lin_local = _linear_local(book, sh)
    opt_local = np.zeros_like(lin_local)
    codes = _row_codes(sh)
    if book.n_options:
        v0 = book.option_values()
        w = _weights(book)
        for sl, price, pcodes in _option_rows(book, sh, chunk_elems):
            opt_local[sl] = (price - v0) @ w
            codes[sl] = np.where(codes[sl] != 0, codes[sl], _first_code(pcodes))
    bad = codes != 0
    lin_base = _to_base(book, lin_local, sh.fx, book._local_values(options=False))
    by_sym = _to_base(book, lin_local + opt_local, sh.fx, book._local_values())
    by_sym = np.where(bad[:, None], np.nan, by_sym)
    total = by_sym.sum(axis=1)
    lin_total = np.where(bad, np.nan, lin_base.sum(axis=1))
    return ScenarioPnL(total=total, by_symbol=by_sym, linear=lin_total, options=total - lin_total, codes=codes)


def _row_codes(sh: _Shocks) -> np.ndarray:
    """NAN_INPUT for scenarios with a non-finite return (the linear part never reaches the pricer)."""
    return np.where(np.isfinite(sh.ret).all(axis=1), 0, int(OptionError.NAN_INPUT)).astype(np.int8)


def scenario_pnl(
    book: RiskBook,
    spot_returns: Any,
    vol_shifts: Any = None,
    rate_shift: Any = None,
    horizon_days: float = 0.0,
    *,
    option_vol_shifts: Any = None,
    fx_returns: Any = None,
    spread_shift: Any = None,
    chunk_elems: int = CHUNK_ELEMS,
) -> np.ndarray:
    """Full-revaluation P&L per scenario, shape (S,), base currency; NaN where a scenario is invalid.

    spot_returns (S x N decimal returns in the order of book.symbols, or a DataFrame with those columns),
    vol_shifts (vol points, scalar / per symbol / S x N), rate_shift (decimal, scalar or per scenario),
    horizon_days (trading days). Keywords: option_vol_shifts, fx_returns, spread_shift (see module docstring).
    Same numbers as ``scenario_pnl_detail(...).total``; without FX it skips the per-symbol split.
    """
    if book.fx_currencies:
        return scenario_pnl_detail(
            book,
            spot_returns,
            vol_shifts,
            rate_shift,
            horizon_days,
            option_vol_shifts=option_vol_shifts,
            fx_returns=fx_returns,
            spread_shift=spread_shift,
            chunk_elems=chunk_elems,
        ).total
    sh = _shocks(book, spot_returns, vol_shifts, rate_shift, horizon_days, option_vol_shifts, fx_returns, spread_shift)
    total = _linear_pnl(book, sh) @ book.fx_spot[book.lin_sym] if book.lin_qty.size else np.zeros(sh.ret.shape[0])
    codes = _row_codes(sh)
    if book.n_options:
        v0 = book.option_values()
        w = book.opt_qty * book.opt_mult * book.fx_spot[book.opt_sym]
        for sl, price, pcodes in _option_rows(book, sh, chunk_elems):
            total[sl] += (price - v0) @ w
            codes[sl] = np.where(codes[sl] != 0, codes[sl], _first_code(pcodes))
    return np.where(codes != 0, np.nan, total)


@dataclass(frozen=True)
class _OptionGreeks:
    delta: np.ndarray
    gamma: np.ndarray
    vega: np.ndarray
    theta: np.ndarray
    rho: np.ndarray


def _option_greeks(book: RiskBook) -> _OptionGreeks:
    """Per-option Greeks (one unit): `bsm_greeks` for Europeans, the LR tree for Americans.

    American delta and gamma come from the tree's first nodes; vega, theta and rho from central bumps of the same
    tree (vol +-1 point, T +-1 day, r +-10 bp), whose discretisation error largely cancels in the difference.
    """
    if "greeks" in book._base_cache:
        return book._base_cache["greeks"]
    m = book.n_options
    S = book.spots[book.opt_sym]
    q = book.dividend_yields[book.opt_sym]
    out = {k: np.zeros(m) for k in ("delta", "gamma", "vega", "theta", "rho")}
    eu = np.flatnonzero(~book.opt_american)
    am = np.flatnonzero(book.opt_american)
    if eu.size:
        g = bsm_greeks(
            S[eu],
            book.opt_K[eu],
            book.opt_T[eu],
            book.rate,
            q[eu],
            book.opt_iv[eu],
            book.opt_call[eu],
            which=("delta", "gamma", "vega", "theta", "rho"),
        )
        for k in out:
            out[k][eu] = g[k]
    if am.size:
        K, T, iv, call = book.opt_K[am], book.opt_T[am], book.opt_iv[am], book.opt_call[am]
        Sa, qa, r = S[am], q[am], book.rate
        base = american_price(Sa, K, T, r, qa, iv, call, method="lr", steps=book.american_steps)
        out["delta"][am] = base.delta
        out["gamma"][am] = base.gamma
        hv, hr = 0.01, 0.001
        ht = np.minimum(1.0 / 365.0, 0.5 * T)
        # one batch: [vol up, vol down, T up, T down, r up, r down]
        S6 = np.tile(Sa, 6)
        sig6 = np.concatenate([iv + hv, np.maximum(iv - hv, 0.0), iv, iv, iv, iv])
        T6 = np.concatenate([T, T, T + ht, T - ht, T, T])
        r6 = np.concatenate([np.full(am.size, r)] * 4 + [np.full(am.size, r + hr), np.full(am.size, r - hr)])
        p = american_price(
            S6, np.tile(K, 6), T6, r6, np.tile(qa, 6), sig6, np.tile(call, 6), method="lr", steps=book.american_steps
        ).price.reshape(6, am.size)
        out["vega"][am] = (p[0] - p[1]) / (sig6[: am.size] - sig6[am.size : 2 * am.size])
        with np.errstate(invalid="ignore", divide="ignore"):
            out["theta"][am] = np.where(ht > 0, -(p[2] - p[3]) / (2 * ht), 0.0)
        out["rho"][am] = (p[4] - p[5]) / (2 * hr)
    res = _OptionGreeks(**out)
    book._base_cache["greeks"] = res
    return res


def delta_gamma_pnl(
    book: RiskBook,
    spot_returns: Any,
    vol_shifts: Any = None,
    rate_shift: Any = None,
    horizon_days: float = 0.0,
    *,
    option_vol_shifts: Any = None,
    fx_returns: Any = None,
    spread_shift: Any = None,
    include_vega: bool = True,
) -> np.ndarray:
    """Taylor approximation of `scenario_pnl`, shape (S,): per option Delta dS + Gamma dS^2 / 2 + vega dsigma
    (if include_vega) + theta dt + rho dr; linear positions as in full revaluation (they are linear already).

    Same arguments and units as `scenario_pnl`. It omits vanna, vomma, speed and the higher terms, so its error
    is O(dS^3) for spot-only moves and second order in mixed spot/vol moves. dsigma is the unfloored vol shift.
    """
    sh = _shocks(book, spot_returns, vol_shifts, rate_shift, horizon_days, option_vol_shifts, fx_returns, spread_shift)
    lin_local = _linear_local(book, sh)
    opt_local = np.zeros_like(lin_local)
    if book.n_options:
        g = _option_greeks(book)
        dS = book.spots[book.opt_sym][None, :] * sh.ret[:, book.opt_sym]
        dv = g.delta * dS + 0.5 * g.gamma * dS * dS + g.theta * sh.dt + g.rho * sh.dr[:, None]
        if include_vega and sh.dsig is not None:
            dv = dv + g.vega * sh.dsig
        opt_local = dv @ _weights(book)
    return _to_base(book, lin_local + opt_local, sh.fx, book._local_values()).sum(axis=1)


def greeks(book: RiskBook) -> pd.DataFrame:
    """Per-symbol sensitivities in the base currency (module docstring for the definitions).

    Columns: delta (share-equivalent units: linear quantity plus sum q Delta), dollar_delta, dollar_gamma,
    vega_per_point, theta_per_day (calendar), rho_per_bp.
    """
    n = book.n_symbols
    lin_units = np.zeros(n)
    np.add.at(lin_units, book.lin_sym, book.lin_qty)
    lin_dollar = np.zeros(n)
    np.add.at(lin_dollar, book.lin_sym, book.lin_qty * book.lin_price)
    cols = {
        k: np.zeros(n)
        for k in ("delta", "dollar_delta", "dollar_gamma", "vega_per_point", "theta_per_day", "rho_per_bp")
    }
    cols["delta"] += lin_units
    cols["dollar_delta"] += lin_dollar
    rate_dv01 = np.zeros(n)
    np.add.at(rate_dv01, book.lin_sym, -book.lin_qty * book.lin_price * book.lin_rate_dur * 1e-4)
    cols["rho_per_bp"] += rate_dv01
    if book.n_options:
        g = _option_greeks(book)
        w = book.opt_qty * book.opt_mult
        S = book.spots[book.opt_sym]
        for name, per in (
            ("delta", w * g.delta),
            ("dollar_delta", w * g.delta * S),
            ("dollar_gamma", w * g.gamma * S * S),
            ("vega_per_point", w * g.vega / 100.0),
            ("theta_per_day", w * g.theta / 365.0),
            ("rho_per_bp", w * g.rho * 1e-4),
        ):
            np.add.at(cols[name], book.opt_sym, per)
    df = pd.DataFrame(cols, index=pd.Index(book.symbols, name="symbol"))
    money = [c for c in df.columns if c != "delta"]
    df[money] = df[money].to_numpy() * book.fx_spot[:, None]
    return df
