"""Option analytics routes: /v1/options/price, /v1/options/iv, /v1/options/american (and /v1/vol/surface).

Thin: each route reads a columnar batch (`columnar.read_batch`), validates its options, calls the pure library
through `tradesys.quant.options.batch` (the same layer the CLI uses) in a worker thread, and answers in the client's
encoding. Bad requests are 4xx with the field and the reason; a bad *row* is a 200 with NaN (null) and its code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.concurrency import run_in_threadpool

from tradesys.quant.options.batch import (
    AMERICAN_LIMITS,
    american_columns,
    coerce_columns,
    iv_columns,
    option_columns,
    price_columns,
    reasons,
)
from tradesys.serve.columnar import batch_response, read_batch, request_body_doc
from tradesys.serve.errors import BadRequest

Numbers = float | list[float]
Flags = bool | list[bool]
Kinds = str | list[str]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PriceOptions(_Strict):
    model: Literal["bsm", "black76"] = "bsm"
    greeks: list[str] = Field(default_factory=list, description="Greeks to return, or ['all']")

    @field_validator("greeks", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        return [s for s in v.split(",") if s] if isinstance(v, str) else v


class IvOptions(_Strict):
    model: Literal["bsm", "black76"] = "bsm"


class AmericanOptions(_Strict):
    method: Literal["lr", "crr", "fd", "lsm"] = "lr"
    resolution: int | None = Field(None, description="tree steps, FD space steps or LSM paths (method's default)")
    style: Literal["american", "bermudan", "european"] = "american"
    exercise_per_year: float | None = None
    seed: int = 0


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


COLUMN_NAMES = {"price", "S", "F", "K", "T", "r", "q", "sigma", "is_call", "type"}
CHAIN_COLUMNS = {"strike", "expiry", "bid", "ask", "type", "underlying", "rate", "dividend"}
MAX_QUERY_POINTS = 100_000


class SurfaceOptions(_Strict):
    model: Literal["svi", "sabr"] = "svi"
    valuation_date: str | None = Field(None, description="needed when expiry holds dates (YYYY-MM-DD)")
    beta: float = Field(1.0, ge=0, le=1, description="SABR beta")
    arbitrage_free: bool = True
    weighting: Literal["spread", "equal"] = "spread"
    include_quotes: bool = Field(False, description="return every quote with its status and fitted vol")
    query_K: list[float] | None = Field(None, description="strikes to evaluate the fitted surface at")
    query_T: list[float] | float | None = Field(None, description="expiries (years) for query_K, or one for all")

    @field_validator("query_K", "query_T", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        return [float(x) for x in v.split(",") if x] if isinstance(v, str) else v


class SurfaceRequest(SurfaceOptions):
    strike: list[float]
    expiry: list[float] | list[str] = Field(description="years to expiry, or dates with valuation_date")
    bid: list[float]
    ask: list[float]
    type: list[str] = Field(description="C/P/call/put")
    underlying: list[float] | float
    rate: list[float] | float = 0.0
    dividend: list[float] | float = 0.0


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


def parse_options(model: type[BaseModel], options: dict[str, Any]) -> Any:
    try:
        return model.model_validate(options)
    except ValidationError as exc:
        fields = [(".".join(str(p) for p in e["loc"]) or "options", e["msg"]) for e in exc.errors()]
        raise BadRequest(fields) from None


async def compute(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run the numerics off the event loop; library ValueErrors become 422s naming the field."""
    try:
        return await run_in_threadpool(fn)
    except ValueError as exc:
        raise BadRequest.from_value_error(exc) from None


def columns_for(raw: dict[str, Any], spec: Sequence[Any], limit: int) -> dict[str, Any]:
    try:
        return coerce_columns(raw, spec, max_rows=limit)
    except ValueError as exc:
        status = 413 if str(exc).startswith("rows:") else 422
        raise BadRequest.from_value_error(exc, status) from None


def options_router(dependencies: Sequence[Any], responses: dict[int | str, dict[str, Any]]) -> APIRouter:
    router = APIRouter(dependencies=list(dependencies), responses=responses, tags=["options"])

    @router.post("/v1/options/price", openapi_extra=request_body_doc(PriceRequest))
    async def price(request: Request) -> Response:
        """European price and Greeks (BSM with dividend yield, or Black-76), one row per option.

        Greeks follow the library's conventions (vega per 1.00 of vol, theta per calendar year; see
        `tradesys.quant.options`). Rows with invalid inputs are null with a reason code.
        """
        raw, opts, limit = await read_batch(request, COLUMN_NAMES)
        o: PriceOptions = parse_options(PriceOptions, opts)
        cols = columns_for(raw, option_columns(o.model), limit)
        out = await compute(lambda: price_columns(cols, o.model, o.greeks))
        return batch_response(request, out, {"model": o.model, "reasons": reasons(out["code"])})

    @router.post("/v1/options/iv", openapi_extra=request_body_doc(IvRequest))
    async def iv(request: Request) -> Response:
        """Implied volatility to machine precision (Jäckel's "Let's Be Rational"); a price outside the no-arbitrage
        bounds gives null and its reason code for that row."""
        raw, opts, limit = await read_batch(request, COLUMN_NAMES)
        o: IvOptions = parse_options(IvOptions, opts)
        cols = columns_for(raw, option_columns(o.model, price=True, vol=False), limit)
        out = await compute(lambda: iv_columns(cols, o.model))
        return batch_response(request, out, {"model": o.model, "reasons": reasons(out["code"])})

    american_doc = (
        "American/Bermudan vanilla prices: Leisen-Reimer (default) or CRR trees, Crank-Nicolson FD, or LSM "
        "(with its standard error). `resolution` is the method's size: "
        + ", ".join(f"{m}: {k} <= {c}" for m, (k, _, c) in AMERICAN_LIMITS.items())
    )

    @router.post("/v1/options/american", openapi_extra=request_body_doc(AmericanRequest), description=american_doc)
    async def american(request: Request) -> Response:
        raw, opts, limit = await read_batch(request, COLUMN_NAMES)
        o: AmericanOptions = parse_options(AmericanOptions, opts)
        cols = columns_for(raw, option_columns("bsm"), limit)
        out = await compute(lambda: american_columns(cols, o.method, resolution=o.resolution, style=o.style,
                                                     exercise_per_year=o.exercise_per_year, seed=o.seed))
        return batch_response(request, out, {"method": o.method, "reasons": reasons(out["code"])})

    @router.post("/v1/vol/surface", openapi_extra=request_body_doc(SurfaceRequest), tags=["vol"])
    async def surface(request: Request) -> Response:
        """Fit a volatility surface to an option chain: mid implied vols on parity forwards, raw SVI per expiry
        calibrated free of butterfly arbitrage (or SABR), calendar-free interpolation in total variance, and the
        arbitrage report; optional vol(K, T) queries. JSON columns, or an Arrow IPC chain with options in the query
        string."""
        raw, opts, limit = await read_batch(request, CHAIN_COLUMNS)
        o: SurfaceOptions = parse_options(SurfaceOptions, opts)
        n = max((np.size(v) for v in raw.values()), default=0)
        if n > limit:
            raise BadRequest([("rows", f"{n} rows exceed the limit of {limit} for this encoding")], status=413)
        out = await compute(lambda: fit_surface(raw, o))
        return JSONResponse(out)

    return router

