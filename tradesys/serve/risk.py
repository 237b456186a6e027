"""Risk and allocation routes: /v1/risk/var, /v1/risk/stress, /v1/portfolio/optimize, /v1/risk/attribution.

Thin, like the options routes: pydantic validates the shape of the request, the pure libraries
(`tradesys.quant.risk`, `tradesys.quant.portfolio`) validate the numbers and raise `ValueError("field: reason")`,
which becomes a 422 naming the field (non-PSD covariance, mismatched lengths, NaNs, infeasible constraints).
Time series travel as `{name: [values...]}` columns of equal length, with optional `dates`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from fastapi import APIRouter, Request
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from tradesys.quant.risk.stress import HISTORICAL_SCENARIOS, HYPOTHETICAL_SHOCKS
from tradesys.serve.columnar import drop_null
from tradesys.serve.errors import BadRequest
from tradesys.serve.limits import run_killable

MAX_ROWS = 100_000  # observations per series (a P&L vector, a returns column)
MAX_ASSETS = 500  # columns of a returns frame, assets of an optimisation
MAX_CELLS = 2_000_000  # rows x columns of a returns frame
MAX_POSITIONS = 5_000  # linear and option positions of a book, each
MAX_REVALUATIONS = 5_000_000  # option positions x scenarios of a full revaluation
MAX_TREE_WORK = 200_000_000  # American book options x scenarios x american_steps^2
MAX_MC_CELLS = 20_000_000  # Monte Carlo scenarios x assets (mc_normal, mc_t), 8 bytes each
MAX_SCENARIOS = 1_000_000  # n_scenarios (mc_*)
MAX_FHS_SIMS = 200_000  # n_sims (fhs)
MAX_FHS_CELLS = 5_000_000  # n_sims x horizon_days (fhs)
LIMITS_DOC = (
    f"Caps: at most {MAX_ROWS} values per series, {MAX_ASSETS} assets, {MAX_CELLS} cells in a returns frame, "
    f"{MAX_POSITIONS} positions of each kind in a book, {MAX_REVALUATIONS} option revaluations (options x "
    f"scenarios), {MAX_SCENARIOS} Monte Carlo scenarios and {MAX_MC_CELLS} scenario cells; 413 beyond. "
)

Column = Annotated[list[float], Field(min_length=1, max_length=MAX_ROWS)]
# Numbers only: every library behind these routes refuses missing values, so the schema does too.
Series = Annotated[dict[str, Column], Field(min_length=1, max_length=MAX_ASSETS)]
DateText = Annotated[str, Field(json_schema_extra={"format": "date"}, pattern=r"^(1[89]|2[01])\d\d-",
                                description="YYYY-MM-DD, years 1800-2199 (pandas' timestamp range)")]
Dates = Annotated[list[DateText], Field(min_length=1, max_length=MAX_ROWS)]
NumberColumn = Annotated[list[float], Field(min_length=1, max_length=MAX_ROWS)]
SimpleReturn = Annotated[float, Field(ge=-1, le=100, description="simple return, -1 = -100%")]
Returns = Annotated[dict[str, Annotated[list[SimpleReturn], Field(min_length=1, max_length=MAX_ROWS)]],
                    Field(min_length=1, max_length=MAX_ASSETS)]


def _schema_extra(extra: dict[str, Any] | None = None) -> Callable[[dict[str, Any]], None]:
    """json_schema_extra: no `null` for optional fields (`columnar.drop_null`), plus the model's oneOf/anyOf."""

    def apply(schema: dict[str, Any]) -> None:
        drop_null(schema)
        schema.update(extra or {})

    return apply


def _whole(v: Any) -> Any:
    """JSON Schema's integer includes 5.0: accept a whole float for an int field (a bool still fails, strictly)."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


Int = Annotated[int, BeforeValidator(_whole)]


class _Strict(BaseModel):
    """Unknown fields refused; strict types, so `"horizon_days": false` is a 422 instead of 0."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=_schema_extra())


def _too_large(field: str, reason: str) -> BadRequest:
    return BadRequest([(field, reason)], status=413)


def _frame(columns: Series, dates: list[str] | None, field: str) -> pd.DataFrame:
    if not columns:
        raise BadRequest([(field, "at least one column is required")])
    lengths = {k: len(v) for k, v in columns.items()}
    n = next(iter(lengths.values()))
    if n * len(columns) > MAX_CELLS:
        raise _too_large(field, f"{n} rows x {len(columns)} columns exceed the limit of {MAX_CELLS} cells")
    bad = next((k for k, v in lengths.items() if v != n), None)
    if bad is not None:
        raise BadRequest([(f"{field}.{bad}", f"has {lengths[bad]} values but the first column has {n}")])
    frame = pd.DataFrame({k: np.array([np.nan if x is None else x for x in v], dtype=float)
                          for k, v in columns.items()})
    if dates is not None:
        if len(dates) != n:
            raise BadRequest([("dates", f"has {len(dates)} values but {field} has {n} rows")])
        try:
            frame.index = pd.DatetimeIndex(pd.to_datetime(dates))
        except (ValueError, TypeError) as exc:
            raise BadRequest([("dates", f"not dates ({exc})")]) from None
    return frame


def _jsonable(x: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python, recursively: JSON has no NaN."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


async def _compute(request: Request, fn: Callable[[], Any]) -> Any:
    """The numerics in a child process within the request's time budget (`limits.run_killable`: 504 past it, and
    the child is killed then or when the client hangs up); library ValueErrors become 422s naming the field."""
    try:
        return _jsonable(await run_killable(request, fn))
    except ValueError as exc:
        raise BadRequest.from_value_error(exc) from None


# --- /v1/portfolio/optimize ------------------------------------------------------------------------------------------


class ConstraintsIn(_Strict):
    long_only: bool = True
    budget: float | None = 1.0
    lower: float | list[float] | dict[str, float] | None = None
    upper: float | list[float] | dict[str, float] | None = None
    groups: dict[str, list[str]] | dict[str, str] | None = None
    group_bounds: dict[str, Annotated[list[float | None], Field(min_length=2, max_length=2)]] | None = Field(
        None, description="{group: [lower, upper]}, null for no bound")
    current_weights: list[float] | dict[str, float] | None = None
    max_turnover: float | None = Field(None, ge=0)
    transaction_costs: float | list[float] | dict[str, float] | None = None


class ViewsIn(_Strict):
    P: list[dict[str, float]] | list[list[float]] = Field(description="one row per view: {asset: weight}")
    Q: list[float]
    market_weights: dict[str, float] | list[float] | None = None
    market_caps: dict[str, float] | list[float] | None = None
    risk_aversion: float = Field(2.5, gt=0)
    tau: float = Field(0.05, gt=0)
    omega: Literal["he_litterman", "idzorek"] = "he_litterman"
    confidences: list[float] | None = None


Moment = Annotated[float, Field(ge=-1e6, le=1e6, description="annualised; beyond +-1e6 the solver overflows")]
AssetList = Annotated[list[Moment], Field(min_length=1, max_length=MAX_ASSETS)]


class OptimizeRequest(_Strict):
    """Either `returns`, or `cov` (with `mu` optional and `assets` or `mu` as {asset: value}): `oneOf` in the
    schema."""

    model_config = ConfigDict(json_schema_extra=_schema_extra({"oneOf": [
        {"required": ["returns"], "not": {"anyOf": [{"required": ["mu"]}, {"required": ["cov"]}]}},
        {"required": ["cov"], "not": {"required": ["returns"]},
         "anyOf": [{"required": ["assets"]}, {"required": ["mu"], "properties": {"mu": {"type": "object"}}}]},
    ], "allOf": [  # the objective's own input
        {"if": {"required": ["objective"], "properties": {"objective": {"const": name}}},
         "then": {"required": [name]}} for name in ("target_return", "target_risk", "black_litterman")
    ] + [  # risk parity and HRP honour only long-only weights scaled to a positive budget (optimize.py)
        {"if": {"required": ["objective"], "properties": {"objective": {"enum": ["risk_parity", "hrp"]}}},
         "then": {"properties": {"constraints": {
             "properties": {"long_only": {"const": True}, "group_bounds": {"maxProperties": 0},
                            "budget": {"exclusiveMinimum": 0}},
             "not": {"anyOf": [{"required": [k]} for k in ("lower", "upper", "max_turnover", "transaction_costs")]},
         }}}}
    ]}))

    returns: Returns | None = Field(None, description="periodic returns per asset (annualised by periods_per_year)")
    dates: Dates | None = None
    mu: Annotated[dict[str, Moment], Field(min_length=1, max_length=MAX_ASSETS)] | AssetList | None = Field(
        None, description="annual expected returns, with cov")
    cov: Annotated[list[AssetList], Field(min_length=1, max_length=MAX_ASSETS)] | None = Field(
        None, description="annual covariance matrix, with assets")
    assets: Annotated[list[str], Field(min_length=1, max_length=MAX_ASSETS)] | None = None
    objective: Literal["min_variance", "max_sharpe", "target_return", "target_risk", "max_utility", "risk_parity",
                       "hrp", "black_litterman"] = "min_variance"
    constraints: ConstraintsIn = Field(default_factory=ConstraintsIn)
    risk_free_rate: float = 0.0
    target_return: float | None = None
    target_risk: float | None = None
    risk_aversion: float = Field(1.0, gt=0, description="must be positive whatever the objective")
    periods_per_year: float = Field(252.0, gt=0)
    covariance: Literal["sample", "ledoit_wolf"] = "sample"
    risk_budget: dict[str, float] | list[float] | None = None
    hrp_linkage: Literal["single", "complete", "average", "ward"] = "single"
    black_litterman: ViewsIn | None = None
    frontier_points: Int = Field(0, ge=0, le=200, json_schema_extra={"not": {"const": 1}},
                                 description="also return an efficient frontier of this many points (0: none; >= 2)")


def _solved(req: OptimizeRequest) -> dict[str, Any]:
    """`_optimize`, with a solver that gives up on the client's numbers (degenerate covariance, extreme values) a
    422 naming the constraints, not a 500: the library raises RuntimeError("solver: <field>: <reason>")."""
    try:
        return _optimize(req)
    except RuntimeError as exc:
        if str(exc).startswith("solver: "):
            raise ValueError(str(exc).removeprefix("solver: ")) from None
        raise


def _optimize(req: OptimizeRequest) -> dict[str, Any]:
    from tradesys.quant.portfolio import (
        BlackLittermanViews,
        PortfolioConstraints,
        efficient_frontier,
        optimize_portfolio,
    )

    if req.returns is not None and (req.mu is not None or req.cov is not None):
        raise ValueError("returns: give either returns, or mu and cov, not both")
    if req.returns is not None:
        data: Any = _frame(req.returns, req.dates, "returns")
        names = None
    else:
        if req.cov is None:
            raise ValueError("cov: required when returns are not given")
        names = req.assets or (list(req.mu) if isinstance(req.mu, dict) else None)
        if names is None:
            raise ValueError("assets: required with cov (or give mu as {asset: value})")
        mu = None
        if req.mu is not None:
            mu = pd.Series(req.mu).reindex(names) if isinstance(req.mu, dict) else req.mu
        if len({len(row) for row in req.cov}) > 1:
            raise ValueError("cov: rows of unequal length (a square matrix, one row per asset)")
        data = (mu, np.asarray(req.cov, dtype=float))
    c = req.constraints
    constraints = PortfolioConstraints(**c.model_dump())
    views = None
    if req.black_litterman is not None:
        v = req.black_litterman
        views = BlackLittermanViews(P=v.P, Q=v.Q, market_weights=v.market_weights, market_caps=v.market_caps,
                                    risk_aversion=v.risk_aversion, tau=v.tau, omega=v.omega,
                                    confidences=v.confidences)
    kw = dict(constraints=constraints, asset_names=names, risk_free_rate=req.risk_free_rate,
              periods_per_year=req.periods_per_year, covariance=req.covariance)
    result = optimize_portfolio(data, req.objective, target_return=req.target_return, target_risk=req.target_risk,
                                risk_aversion=req.risk_aversion, risk_budget=req.risk_budget,
                                hrp_linkage=req.hrp_linkage, black_litterman=views, **kw)  # type: ignore[arg-type]
    out = result.to_dict()
    if req.frontier_points:
        frontier = efficient_frontier(data, n_points=req.frontier_points, **kw)  # type: ignore[arg-type]
        out["frontier"] = frontier.to_dict(orient="records")
    return out


# --- /v1/risk/attribution --------------------------------------------------------------------------------------------


class FactorAttributionRequest(_Strict):
    kind: Literal["factor"] = "factor"
    portfolio_returns: NumberColumn
    factor_returns: Annotated[dict[str, NumberColumn], Field(min_length=1, max_length=MAX_ASSETS)]
    dates: Dates | None = None
    rf: float | NumberColumn | str | None = Field(None, description="number, series, or a factor column name")
    hac_lags: Int | None = Field(None, ge=0, le=1000)


BySector = Annotated[dict[str, float], Field(min_length=1, max_length=MAX_ASSETS)]
NumberSeries = Annotated[dict[str, NumberColumn], Field(min_length=1, max_length=MAX_ASSETS)]


class BrinsonRequest(_Strict):
    kind: Literal["brinson"]
    portfolio_weights: BySector | NumberSeries
    benchmark_weights: BySector | NumberSeries
    portfolio_returns: BySector | NumberSeries
    benchmark_returns: BySector | NumberSeries
    dates: Dates | None = Field(None, description="one per period when the inputs are per-period lists")
    method: Literal["brinson_fachler", "bhb"] = "brinson_fachler"
    linking: Literal["carino", "menchero"] = "carino"


def _by_sector(x: dict[str, Any], dates: list[str] | None, field: str) -> pd.Series | pd.DataFrame:
    values = list(x.values())
    if values and all(isinstance(v, list) for v in values):
        return _frame(x, dates, field)
    if any(isinstance(v, list) for v in values):
        raise BadRequest([(field, "mix of numbers and lists: give one number per sector, or a list per sector")])
    return pd.Series({k: np.nan if v is None else float(v) for k, v in x.items()}, dtype=float)


def _attribution(req: FactorAttributionRequest | BrinsonRequest) -> dict[str, Any]:
    from tradesys.quant.risk.attribution import brinson_attribution, factor_attribution

    if isinstance(req, BrinsonRequest):
        parts = [_by_sector(getattr(req, f), req.dates, f)
                 for f in ("portfolio_weights", "benchmark_weights", "portfolio_returns", "benchmark_returns")]
        return brinson_attribution(*parts, method=req.method, linking=req.linking).to_dict()
    factors = _frame(req.factor_returns, req.dates, "factor_returns")
    if len(req.portfolio_returns) != len(factors):
        raise ValueError(
            f"portfolio_returns: has {len(req.portfolio_returns)} values but factor_returns has {len(factors)} rows"
        )
    port = pd.Series([np.nan if v is None else v for v in req.portfolio_returns], index=factors.index, dtype=float)
    rf: Any = req.rf
    if isinstance(rf, list):
        if len(rf) != len(factors):
            raise ValueError(f"rf: has {len(rf)} values but factor_returns has {len(factors)} rows")
        rf = pd.Series([np.nan if v is None else v for v in rf], index=factors.index, dtype=float)
    return factor_attribution(port, factors, rf=rf, hac_lags=req.hac_lags).to_dict()


# --- /v1/risk/var ---------------------------------------------------------------------------------------------------


Symbol = Annotated[str, Field(min_length=1, max_length=64)]


class LinearIn(_Strict):
    """A stock (or other linear) position: `tradesys.quant.risk.book.LinearPosition`."""

    symbol: Symbol
    quantity: float = Field(ge=-1e12, le=1e12)
    price: float = Field(ge=1e-6, le=1e12)
    rate_duration: float = Field(0.0, ge=-100, le=100, description="years")
    spread_duration: float = Field(0.0, ge=-100, le=100, description="years")


class OptionIn(_Strict):
    """An option position: `tradesys.quant.risk.book.OptionPosition`; its underlying's spot is in `spots` or a
    linear position on the same symbol."""

    symbol: Symbol
    strike: float = Field(ge=1e-6, le=1e12)
    T: float = Field(ge=0, le=100, description="years to expiry")
    is_call: bool
    quantity: float = Field(ge=-1e12, le=1e12)
    implied_vol: float = Field(ge=0, le=10, description="decimal, 0.2 = 20%")
    style: Literal["european", "american"] = "european"
    multiplier: float = Field(1.0, gt=0)


class BookIn(_Strict):
    """Positions for full revaluation (`tradesys.quant.risk.book.RiskBook.from_records`); at least one."""

    model_config = ConfigDict(json_schema_extra=_schema_extra({"anyOf": [
        {"required": ["linear"], "properties": {"linear": {"minItems": 1}}},
        {"required": ["options"], "properties": {"options": {"minItems": 1}}}]}))

    linear: list[LinearIn] = Field(default_factory=list, max_length=MAX_POSITIONS)
    options: list[OptionIn] = Field(default_factory=list, max_length=MAX_POSITIONS)
    spots: dict[str, float] | None = None
    dividend_yields: dict[str, float] | float = 0.0
    rate: float = 0.0
    american_steps: Int = Field(101, ge=3, le=2001)

    @model_validator(mode="after")
    def _not_empty(self) -> BookIn:
        if not self.linear and not self.options:
            raise ValueError("give at least one linear or option position")
        return self


VAR_METHODS = Literal["historical", "age_weighted", "evt", "fhs", "normal", "student_t", "cornish_fisher", "ewma",
                      "mc_normal", "mc_t"]
PNL_METHODS = ("historical", "age_weighted", "evt", "fhs", "normal", "student_t", "cornish_fisher")
_ONE_OF_VAR = [
    {"required": ["pnl"], "not": {"anyOf": [{"required": ["book"]}, {"required": ["weights"]}]},
     "properties": {"method": {"enum": list(PNL_METHODS)}}},
    {"required": ["book", "returns"], "not": {"anyOf": [{"required": ["pnl"]}, {"required": ["weights"]}]},
     "properties": {"method": {"enum": list(PNL_METHODS)}}},
    {"required": ["weights", "returns"], "not": {"anyOf": [{"required": ["pnl"]}, {"required": ["book"]}]}},
]


class VarRequest(_Strict):
    """Exactly one of `pnl`, `book` (with `returns`) or `weights` (with `returns`): `oneOf` in the schema."""

    model_config = ConfigDict(json_schema_extra=_schema_extra({"oneOf": _ONE_OF_VAR}))

    returns: Returns | None = Field(None, description="daily simple returns per asset (or per book symbol)")
    dates: Dates | None = None
    weights: dict[str, float] | Annotated[list[float], Field(min_length=1, max_length=MAX_ASSETS)] | None = Field(
        None, description="with returns: exposures per asset")
    value: float = Field(1.0, gt=0, description="portfolio value the weights are fractions of")
    pnl: Annotated[list[float], Field(min_length=1, max_length=MAX_ROWS)] | None = Field(
        None, description="a P&L scenario vector instead of returns (methods: " + ", ".join(PNL_METHODS) + ")")
    book: BookIn | None = Field(None, description="positions revalued in full under each row of returns")
    alpha: float = Field(0.99, gt=0, lt=1, description="confidence level (0.99 = 1% tail)")
    horizon_days: Int = Field(1, ge=1, le=250)
    method: VAR_METHODS = "historical"
    options: dict[str, Any] = Field(
        default_factory=dict,
        description=f"method options (see estimate_var); n_scenarios <= {MAX_SCENARIOS} and n_scenarios x assets "
        f"<= {MAX_MC_CELLS} (mc_*), n_sims <= {MAX_FHS_SIMS} and n_sims x horizon_days <= {MAX_FHS_CELLS} (fhs)",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> VarRequest:
        given = [name for name in ("pnl", "book", "weights") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of pnl, book (with returns) or weights (with returns)")
        if given[0] != "pnl" and self.returns is None:
            raise ValueError(f"returns: required with {given[0]}")
        return self


def _check_var_work(req: VarRequest, n_assets: int) -> None:
    """Monte Carlo and FHS sizes are request options: bound them before any memory is allocated."""
    o = req.options
    for name, cap in (("n_scenarios", MAX_SCENARIOS), ("n_sims", MAX_FHS_SIMS)):
        v = o.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise BadRequest([(f"options.{name}", "must be a positive integer")])
        if v is not None and v > cap:
            raise _too_large(f"options.{name}", f"{v} exceeds the limit of {cap}")
    if req.method.startswith("mc_"):
        n = int(o.get("n_scenarios", 100_000))
        if n * max(1, n_assets) > MAX_MC_CELLS:
            raise _too_large("options.n_scenarios", f"{n} scenarios x {n_assets} assets exceed the limit of "
                                                    f"{MAX_MC_CELLS} cells")
    if req.method == "fhs" and req.horizon_days > 1 and int(o.get("n_sims", 20_000)) * req.horizon_days > MAX_FHS_CELLS:
        raise _too_large("options.n_sims", f"n_sims x horizon_days exceeds the limit of {MAX_FHS_CELLS}")


def _book(b: BookIn) -> Any:
    from tradesys.quant.risk.book import RiskBook

    return RiskBook.from_records([p.model_dump() for p in b.linear], [o.model_dump() for o in b.options],
                                 spots=b.spots, dividend_yields=b.dividend_yields, rate=b.rate,
                                 american_steps=b.american_steps)


def _check_book(book: BookIn, scenarios: int) -> None:
    """Full revaluation costs options x scenarios (x steps^2 for American ones): bounded per request."""
    n_opt = len(book.options)
    if n_opt * scenarios > MAX_REVALUATIONS:
        raise _too_large("book.options", f"{n_opt} options x {scenarios} scenarios exceed the limit of "
                                         f"{MAX_REVALUATIONS} revaluations")
    n_am = sum(1 for o in book.options if o.style == "american")
    work = n_am * max(1, scenarios) * book.american_steps**2
    if work > MAX_TREE_WORK:
        raise _too_large("book.american_steps", f"{n_am} American options x {scenarios} scenarios x "
                                                f"{book.american_steps}^2 steps exceed {MAX_TREE_WORK:.0e}")


def _var(req: VarRequest) -> dict[str, Any]:
    from tradesys.quant.risk.book import scenario_pnl
    from tradesys.quant.risk.var import estimate_var, var_from_pnl

    if req.pnl is not None:
        _check_var_work(req, 1)
        pnl = np.array(req.pnl, dtype=float)
        return var_from_pnl(pnl, req.alpha, req.method, horizon_days=req.horizon_days, **req.options).to_dict()
    if req.returns is None:
        raise ValueError("returns: required with book or weights")
    frame = _frame(req.returns, req.dates, "returns")
    _check_var_work(req, frame.shape[1])
    if req.book is not None:
        b = req.book
        _check_book(b, len(frame))
        book = _book(b)
        missing = [s for s in book.symbols if s not in frame.columns]
        if missing:
            raise ValueError(f"returns: no column for book symbol {missing[0]!r}")
        if frame[list(book.symbols)].isna().any().any():
            raise ValueError("returns: missing values (null) in a column the book needs")
        h = req.horizon_days
        r = frame[list(book.symbols)].to_numpy()
        if h > 1:  # overlapping h-day compounded returns: the horizon's scenarios, revalued in full
            growth = np.cumprod(1.0 + r, axis=0)
            growth = np.vstack([np.ones((1, r.shape[1])), growth])
            r = growth[h:] / growth[:-h] - 1.0
        pnl = scenario_pnl(book, r, horizon_days=float(h))
        out = var_from_pnl(pnl, req.alpha, req.method, horizon_days=h, **req.options).to_dict()
        out["details"] = {**out.get("details", {}), "revaluation": "full", "scenarios": len(pnl)}
        return out
    weights = req.weights
    if isinstance(weights, dict):
        unknown = sorted(set(weights) - set(frame.columns))
        if unknown:
            raise ValueError(f"weights: {unknown[0]!r} has no returns column")
        weights = [float(weights.get(c, 0.0)) for c in frame.columns]
    return estimate_var(frame, weights, alpha=req.alpha, horizon_days=req.horizon_days, method=req.method,
                        value=req.value, **req.options).to_dict()


# --- /v1/risk/stress ------------------------------------------------------------------------------------------------


HistoricalName = Literal[tuple(sorted(HISTORICAL_SCENARIOS))]  # type: ignore[valid-type]
ShockName = Literal[tuple(HYPOTHETICAL_SHOCKS)]  # type: ignore[valid-type]


EquityMove = Annotated[float, Field(ge=-1, le=10, description="-0.3 = -30%")]
VolMove = Annotated[float, Field(ge=-10, le=10, description="vol points as a decimal, 0.1 = +10 points")]
Beta = Annotated[float, Field(ge=-100, le=100)]


class ShockIn(_Strict):
    name: str = "custom"
    equity_pct: EquityMove | dict[str, EquityMove] = 0.0
    betas: dict[str, Beta] | None = None
    vol_points: VolMove | dict[str, VolMove] = 0.0
    rates_bp: float = Field(0.0, ge=-10_000, le=10_000)
    credit_spread_bp: float = Field(0.0, ge=-10_000, le=10_000)
    horizon_days: float = Field(0.0, ge=0, le=3650)


class ReverseIn(_Strict):
    loss: float = Field(gt=0, le=1e15, description="loss threshold, currency (positive)")
    method: Literal["uniform", "mahalanobis"] = "uniform"
    betas: dict[str, Beta] | None = None


class StressRequest(_Strict):
    """At least one of `historical`, `hypothetical` or `reverse` (`anyOf` in the schema)."""

    model_config = ConfigDict(json_schema_extra=_schema_extra(
        {"anyOf": [{"required": ["historical"]}, {"required": ["hypothetical"]}, {"required": ["reverse"]}],
         "if": {"required": ["reverse"], "properties": {"reverse": {
             "required": ["method"], "properties": {"method": {"const": "mahalanobis"}}}}},
         "then": {"required": ["returns"]}}))

    book: BookIn
    historical: Annotated[list[HistoricalName], Field(min_length=1, max_length=100)] | Literal["all"] = Field(
        default_factory=list, description="scenario names, or all")
    hypothetical: Annotated[list[ShockName | ShockIn], Field(min_length=1, max_length=100)] | Literal["all"] = Field(
        default_factory=list)
    reverse: ReverseIn | None = None
    returns: Returns | None = Field(None, description="history for the mahalanobis reverse stress covariance")


_HISTORY: list[Any] = []


def _market_history() -> Any:
    """The packaged data sets behind the historical scenarios, loaded once per replica."""
    if not _HISTORY:
        from tradesys.quant.risk.stress import load_market_history

        _HISTORY.append(load_market_history())
    return _HISTORY[0]


def _stress(req: StressRequest) -> dict[str, Any]:
    from tradesys.quant.risk.stress import (
        HISTORICAL_SCENARIOS,
        HYPOTHETICAL_SHOCKS,
        FactorShock,
        apply_factor_shock,
        reverse_stress_mahalanobis,
        reverse_stress_uniform,
        run_historical,
    )

    b = req.book
    _check_book(b, 1)
    book = _book(b)
    results = []
    names = sorted(HISTORICAL_SCENARIOS) if req.historical == "all" else req.historical
    for name in names:
        if name not in HISTORICAL_SCENARIOS:
            known = ", ".join(sorted(HISTORICAL_SCENARIOS))
            raise ValueError(f"historical: unknown scenario {name!r} (one of {known})")
        results.append(run_historical(book, name, _market_history()).to_dict())
    shocks = list(HYPOTHETICAL_SHOCKS) if req.hypothetical == "all" else req.hypothetical
    for shock in shocks:
        if isinstance(shock, str):
            if shock not in HYPOTHETICAL_SHOCKS:
                raise ValueError(
                    f"hypothetical: unknown shock {shock!r} (one of {', '.join(HYPOTHETICAL_SHOCKS)}, or an object)"
                )
            results.append(apply_factor_shock(book, shock).to_dict())
        else:
            results.append(apply_factor_shock(book, FactorShock(**shock.model_dump())).to_dict())
    if req.reverse is not None:
        if req.reverse.method == "uniform":
            results.append(reverse_stress_uniform(book, req.reverse.loss, betas=req.reverse.betas).to_dict())
        else:
            if req.returns is None:
                raise ValueError("returns: required for the mahalanobis reverse stress (its covariance)")
            frame = _frame(req.returns, None, "returns")
            missing = [s for s in book.symbols if s not in frame.columns]
            if missing:
                raise ValueError(f"returns: no column for book symbol {missing[0]!r}")
            cov = frame[list(book.symbols)].cov().to_numpy()
            results.append(reverse_stress_mahalanobis(book, cov, req.reverse.loss).to_dict())
    if not results:
        raise ValueError("request: ask for at least one of historical, hypothetical or reverse")
    return {"results": results}


# Rules across values that JSON Schema cannot state: a schema-valid request that breaks one is a 422 naming the
# field. Each route's description lists its rules; tests/test_serve_schema.py allows exactly these reasons.
SERIES_RULES = ("series (and `dates`) of equal length; enough observations for the method (a VaR tail at alpha "
                "needs at least 1/(1 - alpha) observations; EVT, FHS, Cornish-Fisher and covariances need more)")
DATA_RULES = {
    "/v1/portfolio/optimize": (
        f"{SERIES_RULES}; `cov` square and positive semi-definite with one name per row (`assets` or `mu` keys); "
        "`mu` where the objective needs expected returns; feasible constraints (budget within the bounds, "
        "`current_weights` with `max_turnover`, known assets and groups, one value per asset); non-zero variances "
        "for risk parity and HRP; numbers the solver can solve (a solver_error names the constraints)"),
    "/v1/risk/var": (
        f"{SERIES_RULES}; `weights` one per returns column; a returns column and a spot for every book symbol; "
        "more rows than `horizon_days`; method options that the method takes"),
    "/v1/risk/stress": (
        "a spot (in `spots` or a linear position) for every option symbol; `betas` and shocks naming book symbols; "
        "`returns` with a column per book symbol for the mahalanobis reverse stress"),
    "/v1/risk/attribution": (
        f"{SERIES_RULES}; at least as many observations as factors plus one; `rf` given as a column name leaves at "
        "least one factor; sector weights and returns over the same sectors and periods, weights summing to 1"),
}


def _doc(path: str, text: str) -> str:
    return f"{text}\n\n{LIMITS_DOC}Also 422: {DATA_RULES[path]}."


def risk_router(dependencies: Sequence[Any], responses: dict[int | str, dict[str, Any]]) -> APIRouter:
    from tradesys.compute import warm_up_in_background

    warm_up_in_background()  # these routes compute in killable child processes (`limits.run_killable`)
    router = APIRouter(dependencies=list(dependencies), responses=responses)

    @router.post("/v1/portfolio/optimize", tags=["portfolio"], description=_doc("/v1/portfolio/optimize", (
        "Allocation: min variance, max Sharpe, target return/risk, max utility, risk parity, HRP, Black-Litterman, "
        "under long-only, box, group, turnover and transaction-cost constraints (cvxpy).")))
    async def optimize(req: OptimizeRequest, request: Request) -> dict[str, Any]:
        return await _compute(request, partial(_solved, req))

    @router.post("/v1/risk/var", tags=["risk"], description=_doc("/v1/risk/var", (
        "VaR and expected shortfall (positive losses) of a linear portfolio (returns + weights), of a P&L vector, "
        "or of a book of stocks and options revalued in full under each historical row of returns. Exactly one of "
        "`pnl`, `book` or `weights`. Methods: historical, age_weighted, evt, fhs, normal, student_t, cornish_fisher, "
        "ewma, mc_normal, mc_t (with `pnl` or `book`, whose P&L is a scenario vector: the first seven).")))
    async def var(req: VarRequest, request: Request) -> dict[str, Any]:
        return await _compute(request, partial(_var, req))

    @router.post("/v1/risk/stress", tags=["risk"], description=_doc("/v1/risk/stress", (
        "Stress a book: historical windows replayed from real data (2008, 2010, 2020, 1987), hypothetical factor "
        "shocks (named or custom), and a reverse stress test (smallest shock losing `reverse.loss`).")))
    async def stress(req: StressRequest, request: Request) -> dict[str, Any]:
        return await _compute(request, partial(_stress, req))

    @router.post("/v1/risk/attribution", tags=["risk"], description=_doc("/v1/risk/attribution", (
        "Factor attribution (OLS with Newey-West errors; per-period contributions sum to the excess return) or "
        "Brinson sector attribution (`kind: \"brinson\"`, Brinson-Fachler or BHB, multi-period linking).")))
    async def attribution(req: FactorAttributionRequest | BrinsonRequest, request: Request) -> dict[str, Any]:
        return await _compute(request, partial(_attribution, req))

    return router
