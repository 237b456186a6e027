"""Option analytics routes: /v1/options/price, /v1/options/iv, /v1/options/american (and /v1/vol/surface).

Thin: each route reads a columnar batch (`columnar.read_batch`), validates its options, calls the pure library
through `tradesys.quant.options.batch` (the same layer the CLI uses) in a worker thread, and answers in the client's
encoding. Bad requests are 4xx with the field and the reason; a bad *row* is a 200 with NaN (null) and its code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, ValidationError, field_validator

from tradesys.quant.options.batch import (
    AMERICAN_LIMITS,
    american_columns,
    coerce_columns,
    iv_columns,
    option_columns,
    price_columns,
    reasons,
)
from tradesys.quant.options.errors import OptionError
from tradesys.quant.options.european import GREEK_NAMES
from tradesys.serve.columnar import (
    MAX_ARROW_ROWS,
    MAX_JSON_ROWS,
    batch_response,
    read_batch,
    request_body_doc,
)
from tradesys.serve.errors import BadRequest
from tradesys.serve.limits import chunk_rows_for, run_chunked, run_in_budget, run_killable

Numbers = float | Annotated[list[float], Field(min_length=1)]
Flags = bool | Annotated[list[bool], Field(min_length=1)]
Kinds = Literal["C", "P", "c", "p", "call", "put", "CALL", "PUT"] | Annotated[
    list[Literal["C", "P", "c", "p", "call", "put", "CALL", "PUT"]], Field(min_length=1)]
Greek = Literal[(*GREEK_NAMES[1:], "all")]  # type: ignore[valid-type]
def _whole(v: Any) -> Any:
    """JSON Schema's integer includes 5.0: accept a whole float for an int option (a bool still fails)."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


SInt = Annotated[int, Strict(), BeforeValidator(_whole)]
SFloat = Annotated[float, Strict()]

# Work caps per request, in the cost units of each method (measured here: about 5e-8 s per LR tree unit and 1e-6 s
# per FD unit on one idle core; LSM 1e-7 s per unit idle, 2e-6 s at load average 9-15 on 2 cores), so a capped
# request costs seconds to tens of seconds; chunks are 1/20 of the cap, and the time budget (504) bounds the rest.
TREE_WORK = 200_000_000  # rows x steps^2
FD_WORK = 10_000_000  # rows x space_steps^2 x max(1, exercise dates / 100)
LSM_WORK = 10_000_000  # rows x paths x exercise dates (T x exercise_per_year); 8 bytes each in memory per row
LSM_MAX_PATHS = 200_000
EUROPEAN_CHUNK_ROWS = 250_000
WORK_CAPS = {"lr": TREE_WORK, "crr": TREE_WORK, "fd": FD_WORK, "lsm": LSM_WORK}
COLUMN_RULES = (
    "Also 422: columns given as lists of different lengths (scalars broadcast). `S` goes with model bsm and `F` with "
    "black76; give `is_call` or `type`, not both."
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PriceOptions(_Strict):
    model: Literal["bsm", "black76"] = "bsm"
    greeks: list[Greek] = Field(default_factory=list, description="Greeks to return, or ['all']; in the query "
                                "string a comma list or the key repeated (`?greeks=delta&greeks=vega`)")

    @field_validator("greeks", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        items = v if isinstance(v, list) else [v] if isinstance(v, str) else v
        if isinstance(items, list) and all(isinstance(s, str) for s in items):
            return [g.strip() for s in items for g in s.split(",") if g.strip()]
        return v


class IvOptions(_Strict):
    model: Literal["bsm", "black76"] = "bsm"


class AmericanOptions(_Strict):
    method: Literal["lr", "crr", "fd", "lsm"] = "lr"
    resolution: SInt | None = Field(
        None, ge=4, le=max(c for _, _, c in AMERICAN_LIMITS.values()),
        description="tree steps, FD space steps or LSM paths (method's default); per method: "
        + ", ".join(f"{m}: {k} <= {min(c, LSM_MAX_PATHS) if m == 'lsm' else c}"
                    for m, (k, _, c) in AMERICAN_LIMITS.items())
        + f". Work per request is capped: rows x steps^2 <= {TREE_WORK:.0e} (lr, crr), rows x space_steps^2 <= "
        f"{FD_WORK:.0e} (fd), rows x paths x exercise dates <= {LSM_WORK:.0e} (lsm); 413 beyond.",
    )
    style: Literal["american", "bermudan", "european"] = "american"
    exercise_per_year: SFloat | None = Field(None, gt=0, le=10_000,
                                             description="exercise dates per year; required for bermudan")
    seed: SInt = Field(0, ge=0, le=2**32 - 1)


class _Columns(BaseModel):
    """Columns: a list per field, or one number for the whole batch; `type` (C/P) may replace `is_call`."""

    S: Numbers | None = Field(None, description="spot (model bsm)")
    F: Numbers | None = Field(None, description="forward (model black76)")
    K: Numbers
    T: Numbers = Field(description="years to expiry, ACT/365")
    r: Numbers = 0.0
    q: Numbers = Field(0.0, description="continuous dividend yield (bsm)")
    is_call: Flags | None = None
    type: Kinds | None = Field(None, description="C/P/call/put, instead of is_call")


class PriceRequest(_Columns, PriceOptions):
    sigma: Numbers


class IvRequest(_Columns, IvOptions):
    price: Numbers


class AmericanRequest(_Columns, AmericanOptions):
    sigma: Numbers
    S: Numbers  # type: ignore[assignment]


def _exactly_one(schema: dict[str, Any], underlying: bool = True) -> dict[str, Any]:
    """The cross-field rules JSON Schema can state: exactly one of is_call/type, and S with bsm or F with black76."""
    rules: list[dict[str, Any]] = [{"oneOf": [{"required": ["is_call"], "not": {"required": ["type"]}},
                                              {"required": ["type"], "not": {"required": ["is_call"]}}]}]
    if underlying:
        rules.append({"oneOf": [
            {"required": ["S"], "not": {"required": ["F"]}, "properties": {"model": {"const": "bsm"}}},
            {"required": ["F", "model"], "not": {"anyOf": [{"required": ["S"]}, {"required": ["q"]}]},
             "properties": {"model": {"const": "black76"}}},
        ]})
    return {**schema, "allOf": rules}


COLUMN_NAMES = {"price", "S", "F", "K", "T", "r", "q", "sigma", "is_call", "type"}
NUMERIC_COLUMNS = COLUMN_NAMES - {"is_call", "type"}
CHAIN_COLUMNS = {"strike", "expiry", "bid", "ask", "type", "underlying", "rate", "dividend"}
MAX_QUERY_POINTS = 100_000
MAX_CHAIN_ROWS = 50_000


class SurfaceOptions(_Strict):
    model: Literal["svi", "sabr"] = "svi"
    valuation_date: str | None = Field(None, description="needed when expiry holds dates (YYYY-MM-DD)")
    beta: SFloat = Field(1.0, ge=0, le=1, description="SABR beta")
    arbitrage_free: bool = True
    weighting: Literal["spread", "equal"] = "spread"
    include_quotes: bool = Field(False, description="return every quote with its status and fitted vol")
    query_K: Annotated[list[SFloat], Field(min_length=1, max_length=MAX_QUERY_POINTS)] | None = Field(
        None, description=f"strikes to evaluate the fitted surface at (at most {MAX_QUERY_POINTS}); needs query_T")
    query_T: Annotated[list[SFloat], Field(min_length=1, max_length=MAX_QUERY_POINTS)] | SFloat | None = Field(
        None, description="expiries (years) for query_K, one per strike or one for all")

    @field_validator("query_K", "query_T", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        if isinstance(v, str):
            try:
                return [float(x) for x in v.split(",") if x]
            except ValueError:
                raise ValueError("must be numbers, comma-separated") from None
        return v


Chain = Annotated[list[SFloat], Field(min_length=1, max_length=MAX_CHAIN_ROWS)]


class SurfaceRequest(SurfaceOptions):
    strike: Chain
    expiry: Chain | Annotated[list[str], Field(min_length=1, max_length=MAX_CHAIN_ROWS)] = Field(
        description="years to expiry, or dates with valuation_date")
    bid: Chain
    ask: Chain
    type: Annotated[list[Literal["C", "P", "c", "p", "call", "put"]], Field(min_length=1, max_length=MAX_CHAIN_ROWS)]
    underlying: Chain | SFloat
    rate: Chain | SFloat = 0.0
    dividend: Chain | SFloat = 0.0


def fit_surface(chain: dict[str, Any], o: SurfaceOptions) -> dict[str, Any]:
    """Chain columns -> fitted surface (params, arbitrage report, fit errors) and vols at the query points."""
    import pandas as pd

    from tradesys.quant.vol import fit_chain

    lengths = {k: np.size(v) for k, v in chain.items() if np.ndim(v) > 0}
    if not lengths:
        raise ValueError("strike: the chain is empty")
    n = max(lengths.values())
    ragged = next((k for k, m in lengths.items() if m != n), None)
    if ragged is not None:
        raise ValueError(f"{ragged}: has {lengths[ragged]} values but the chain has {n} rows")
    frame = pd.DataFrame({k: (v if np.ndim(v) > 0 else [v] * n) for k, v in chain.items()})
    fitted = fit_chain(frame, model=o.model, valuation_date=o.valuation_date, beta=o.beta,
                       arbitrage_free=o.arbitrage_free, weighting=o.weighting)
    out = fitted.to_dict(include_quotes=o.include_quotes)
    if o.query_K is not None:
        if o.query_T is None:
            raise ValueError("query_T: required with query_K")
        K = np.asarray(o.query_K, dtype=float)
        T = np.broadcast_to(np.asarray(o.query_T, dtype=float), K.shape) if np.ndim(o.query_T) == 0 or \
            np.size(o.query_T) == 1 else np.asarray(o.query_T, dtype=float)
        if T.shape != K.shape:
            raise ValueError(f"query_T: has {T.size} values but query_K has {K.size}")
        if K.size > MAX_QUERY_POINTS:
            raise ValueError(f"query_K: at most {MAX_QUERY_POINTS} points")
        vol = np.asarray(fitted.vol(K, T), dtype=float)
        out["query"] = {"K": K.tolist(), "T": T.tolist(),
                        "vol": [None if not np.isfinite(v) else float(v) for v in vol]}
    return out


def parse_options(model: type[BaseModel], body: dict[str, Any], query: dict[str, Any]) -> Any:
    """Options from the JSON body (typed: strict, so `false` is not 0) over those of the query string (text)."""
    try:
        model.model_validate(body, strict=True)
        return model.model_validate({**query, **body})
    except ValidationError as exc:
        fields = [(".".join(str(p) for p in e["loc"]) or "options", e["msg"]) for e in exc.errors()]
        raise BadRequest(fields) from None


def refuse_bools(raw: dict[str, Any], numeric: set[str]) -> None:
    """A JSON `true` in a numeric column is a client bug, not the number 1."""
    for name in sorted(numeric & set(raw)):
        v = raw[name]
        if isinstance(v, bool) or (isinstance(v, list) and any(isinstance(x, bool) for x in v)):
            raise BadRequest([(name, "must be numbers, not true/false")])


async def compute(request: Request, fn: Callable[[], dict[str, Any]], killable: bool = False) -> dict[str, Any]:
    """Run the numerics within the request's time budget, in a worker thread, or with `killable` (one indivisible
    call: `fn` must pickle) in a child process killed on a disconnect or past the deadline; library ValueErrors
    become 422s."""
    try:
        return await (run_killable(request, fn) if killable else run_in_budget(request, fn))
    except ValueError as exc:
        raise BadRequest.from_value_error(exc) from None


async def compute_rows(request: Request, fn: Callable[[dict[str, np.ndarray]], dict[str, Any]],
                       cols: dict[str, Any], chunk_rows: int) -> dict[str, Any]:
    """Row-wise numerics in chunks (`limits.run_chunked`): a disconnect or the deadline stops the work."""
    try:
        return await run_chunked(request, fn, cols, chunk_rows)
    except ValueError as exc:
        raise BadRequest.from_value_error(exc) from None


def columns_for(raw: dict[str, Any], spec: Sequence[Any], limit: int) -> dict[str, Any]:
    try:
        return coerce_columns(raw, spec, max_rows=limit)
    except ValueError as exc:
        status = 413 if str(exc).startswith("rows:") else 422
        raise BadRequest.from_value_error(exc, status) from None


def american_work(cols: dict[str, np.ndarray], o: AmericanOptions) -> tuple[float, float]:
    """(work per row at worst, total work) of an American request, in the method's cost units (WORK_CAPS)."""
    default = AMERICAN_LIMITS[o.method][1]
    size = float(default if o.resolution is None else o.resolution)
    T = np.asarray(cols["T"], dtype=float)
    finite = T[np.isfinite(T) & (T > 0)]
    t_max = float(finite.max()) if finite.size else 0.0
    if o.method in ("lr", "crr"):
        per_row = size**2
    elif o.method == "fd":
        dates = t_max * o.exercise_per_year if o.exercise_per_year is not None else 0.0
        per_row = size**2 * max(1.0, dates / 100.0)
    else:
        per_row = size * max(1.0, math.ceil(t_max * (o.exercise_per_year or 50.0)))
    return per_row, per_row * len(T)


INPUT_CODES = (OptionError.NAN_INPUT, OptionError.NON_POSITIVE_SPOT, OptionError.NON_POSITIVE_STRIKE,
               OptionError.NEGATIVE_EXPIRY, OptionError.NEGATIVE_VOL)
AMERICAN_OUTPUTS = {"lr": ("delta", "gamma"), "crr": ("delta", "gamma"), "fd": ("delta", "gamma"), "lsm": ("stderr",)}


def screen_rows(cols: dict[str, np.ndarray]) -> np.ndarray:
    """Per-row input codes (NaN, spot, strike, expiry, vol), from the European validator: the same codes the American
    pricers give, found in microseconds, so rows that can only come back null never reach a tree or a simulation
    (the library's LSM spends seconds on such a row)."""
    codes = np.asarray(price_columns(cols, "bsm")["code"])
    return np.where(np.isin(codes, np.asarray(INPUT_CODES, dtype=codes.dtype)), codes, 0).astype(np.int8)


def scatter_rows(method: str, n: int, keep: np.ndarray, screened: np.ndarray,
                 part: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """Full-length outputs: computed rows where `keep`, NaN and the screened code elsewhere."""
    names = ("price", *AMERICAN_OUTPUTS[method])
    out = {k: np.full(n, np.nan) for k in names}
    out["code"] = screened.copy()
    if part is not None:
        for k, v in part.items():
            if k != "code":
                out.setdefault(k, np.full(n, np.nan))[keep] = v
        out["code"][keep] = part["code"]
    return out


def check_american(cols: dict[str, np.ndarray], o: AmericanOptions) -> int:
    """Refuse a request over its work cap (422 when one row alone is over, 413 for the batch); rows per chunk."""
    if o.method == "lsm" and o.resolution is not None and o.resolution > LSM_MAX_PATHS:
        raise BadRequest([("resolution", f"paths must be at most {LSM_MAX_PATHS} for method lsm")])
    cap = WORK_CAPS[o.method]
    per_row, total = american_work(cols, o)
    if per_row > cap:
        raise BadRequest([("resolution", f"one option costs {per_row:.3g} work units for method {o.method}, "
                                         f"over the limit of {cap:.3g} (lower resolution, T or exercise_per_year)")])
    if total > cap:
        rows = int(cap // per_row)
        raise BadRequest([("rows", f"{len(cols['T'])} rows at this resolution cost {total:.3g} work units, over the "
                                   f"limit of {cap:.3g} for method {o.method}: send at most {rows} rows per request")],
                         status=413)
    return chunk_rows_for(per_row, cap / 20)


def options_router(dependencies: Sequence[Any], responses: dict[int | str, dict[str, Any]]) -> APIRouter:
    router = APIRouter(dependencies=list(dependencies), responses=responses, tags=["options"])

    @router.post("/v1/options/price", openapi_extra=request_body_doc(PriceRequest, _exactly_one),
                 description=f"""European price and Greeks (BSM with dividend yield, or Black-76), one row per option.

Greeks follow the library's conventions (vega per 1.00 of vol, theta per calendar year; see
`tradesys.quant.options`). Rows with invalid inputs are null with a reason code. {COLUMN_RULES}
At most {MAX_JSON_ROWS} rows as JSON, {MAX_ARROW_ROWS} as Arrow.""")
    async def price(request: Request) -> Response:
        raw, body_opts, query_opts, limit = await read_batch(request, COLUMN_NAMES)
        refuse_bools(raw, NUMERIC_COLUMNS)
        o: PriceOptions = parse_options(PriceOptions, body_opts, query_opts)
        greeks = ["all"] if "all" in o.greeks else list(dict.fromkeys(o.greeks))
        if o.model == "black76":
            greeks = [g for g in greeks if g != "rho_q"]  # no dividend yield in Black-76: nothing to report
        cols = columns_for(raw, option_columns(o.model), limit)
        out = await compute_rows(request, lambda c: price_columns(c, o.model, greeks), cols, EUROPEAN_CHUNK_ROWS)
        return batch_response(request, out, {"model": o.model, "reasons": reasons(out["code"])})

    @router.post("/v1/options/iv", openapi_extra=request_body_doc(IvRequest, _exactly_one),
                 description=f"""Implied volatility to machine precision (Jäckel's "Let's Be Rational"); a price
outside the no-arbitrage bounds gives null and its reason code for that row. {COLUMN_RULES}""")
    async def iv(request: Request) -> Response:
        raw, body_opts, query_opts, limit = await read_batch(request, COLUMN_NAMES)
        refuse_bools(raw, NUMERIC_COLUMNS)
        o: IvOptions = parse_options(IvOptions, body_opts, query_opts)
        cols = columns_for(raw, option_columns(o.model, price=True, vol=False), limit)
        out = await compute_rows(request, lambda c: iv_columns(c, o.model), cols, EUROPEAN_CHUNK_ROWS)
        return batch_response(request, out, {"model": o.model, "reasons": reasons(out["code"])})

    american_doc = (
        "American/Bermudan vanilla prices: Leisen-Reimer (default) or CRR trees, Crank-Nicolson FD, or LSM "
        "(with its standard error). `resolution` is the method's size: "
        + ", ".join(f"{m}: {k} <= {min(c, LSM_MAX_PATHS) if m == 'lsm' else c}"
                    for m, (k, _, c) in AMERICAN_LIMITS.items())
        + f". The work per request is capped (rows x steps^2 <= {TREE_WORK:.0e} for trees, rows x space_steps^2 <= "
        f"{FD_WORK:.0e} for FD, rows x paths x exercise dates <= {LSM_WORK:.0e} for LSM): 413 naming `rows` beyond; "
        "Also 422 naming `resolution` when one option alone costs more (its T x exercise_per_year counts for LSM). "
        f"{COLUMN_RULES} `exercise_per_year` is required with style bermudan."
    )

    @router.post("/v1/options/american", openapi_extra=request_body_doc(AmericanRequest, _american_schema),
                 description=american_doc)
    async def american(request: Request) -> Response:
        raw, body_opts, query_opts, limit = await read_batch(request, COLUMN_NAMES)
        refuse_bools(raw, NUMERIC_COLUMNS)
        o: AmericanOptions = parse_options(AmericanOptions, body_opts, query_opts)
        cols = columns_for(raw, option_columns("bsm"), limit)
        n = len(cols["S"])
        screened = screen_rows(cols)
        keep = screened == 0
        good = {k: np.asarray(v)[keep] for k, v in cols.items()}
        chunk = check_american(good, o)
        part = None
        if keep.any():
            part = await compute_rows(
                request, lambda c: american_columns(c, o.method, resolution=o.resolution, style=o.style,
                                                    exercise_per_year=o.exercise_per_year, seed=o.seed), good, chunk)
        out = scatter_rows(o.method, n, keep, screened, part)
        return batch_response(request, out, {"method": o.method, "reasons": reasons(out["code"])})

    @router.post("/v1/vol/surface", openapi_extra=request_body_doc(SurfaceRequest), tags=["vol"],
                 description=f"""Fit a volatility surface to an option chain: mid implied vols on parity forwards,
raw SVI per expiry calibrated free of butterfly arbitrage (or SABR), calendar-free interpolation in total variance,
and the arbitrage report; optional vol(K, T) queries. JSON columns, or an Arrow IPC chain with options in the query
string. At most {MAX_CHAIN_ROWS} quotes and {MAX_QUERY_POINTS} query points. Also 422: chain columns of unequal
length; `valuation_date` missing with dated expiries; `query_T` missing with `query_K`, or of another length; a
chain where no expiry has enough usable quotes to fit (positive strikes, bid <= ask, prices inside the no-arbitrage
bounds).""")
    async def surface(request: Request) -> Response:
        raw, body_opts, query_opts, _ = await read_batch(request, CHAIN_COLUMNS)
        refuse_bools(raw, CHAIN_COLUMNS - {"type", "expiry"})
        raw = {"rate": 0.0, "dividend": 0.0, **raw}  # the documented defaults
        o: SurfaceOptions = parse_options(SurfaceOptions, body_opts, query_opts)
        n = max((_rows(v) for v in raw.values()), default=0)
        if n > MAX_CHAIN_ROWS:
            raise BadRequest([("rows", f"{n} quotes exceed the limit of {MAX_CHAIN_ROWS} per chain")], status=413)
        out = await compute(request, partial(fit_surface, raw, o), killable=True)
        return JSONResponse(out)

    return router


def _rows(column: Any) -> int:
    """Rows in one chain column as sent (a list, an Arrow or NumPy array, or a scalar): counted without converting,
    so a ragged or nested JSON list reaches the chain's own validation (a 422) instead of failing in NumPy."""
    if isinstance(column, (str, bytes, dict)) or not hasattr(column, "__len__"):
        return 1
    return len(column)


def _american_schema(schema: dict[str, Any]) -> dict[str, Any]:
    schema["properties"].pop("F", None)  # American exercise is priced on spot only
    out = _exactly_one(schema, underlying=False)
    for method, (_, _, ceiling) in AMERICAN_LIMITS.items():  # each method's own resolution ceiling
        top = min(ceiling, LSM_MAX_PATHS) if method == "lsm" else ceiling
        chosen: dict[str, Any] = {"properties": {"method": {"const": method}}, "required": ["method"]}
        if method == "lr":  # the default method
            chosen = {"anyOf": [chosen, {"not": {"required": ["method"]}}]}
        out["allOf"].append({"if": chosen, "then": {"properties": {"resolution": {"maximum": top}}}})
    out["allOf"].append({"if": {"properties": {"style": {"const": "bermudan"}}, "required": ["style"]},
                         "then": {"required": ["exercise_per_year"]}})
    return out
