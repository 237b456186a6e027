"""`GET /v1/tca?run=<id>`: the transaction cost analysis of a run folder, the numbers `tradesys tca RUN --json` prints.

Runs are found as `/v1/runs/{id}/...` finds them (`tradesys.serve.runs`): the runs folders resolved when the app is
built, a plain id only (422 naming `run` for one with a '/' or '..', before any file is touched), 404 naming `run`
for an unknown id or a ledger with nothing to analyse. Ledgers are only read; the analysis (bars loaded) runs in a
worker thread and the last few are kept, keyed by the ledger files' size and mtime.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path as FsPath
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from tradesys.backtest.report import RUN_ID_PATTERN, RunNotFound, check_run_id, default_runs_dirs, find_run
from tradesys.serve.errors import BadRequest, ErrorBody
from tradesys.serve.runs import _stamp

TCA_CACHE_SIZE = 8


class CostsBps(BaseModel):
    delay: float | None
    impact: float | None
    timing: float | None
    fees: float | None
    opportunity: float | None
    shortfall_decision: float | None
    shortfall_arrival: float | None
    vwap_slippage: float | None


class _Costs(BaseModel):
    """What a parent and the total share: quantities and the cost parts (currency; `bps` per unit of paper)."""

    qty: float
    filled_qty: float
    paper_notional: float
    delay: float
    impact: float
    timing: float
    fees: float
    opportunity: float
    shortfall_decision: float
    shortfall_arrival: float
    vwap_slippage: float | None
    bps: CostsBps


class ParentCosts(_Costs):
    parent_id: str
    symbol: str
    side: str
    algo: str
    avg_price: float | None  # null: nothing filled
    decision_price: float
    arrival_price: float
    end_price: float
    market_vwap: float | None  # null: no volume in the window
    start_ns: int
    end_ns: int
    children: int
    fills: int


class TotalCosts(_Costs):
    parents: int


class TcaOut(BaseModel):
    run: str
    parents: list[ParentCosts]  # oldest decision first
    total: TotalCosts
    notes: list[str]


def tca_router(
    dependencies: list[Any], errors: dict[int | str, dict[str, Any]], runs_dirs: Sequence[FsPath] | None = None
) -> APIRouter:
    """The route, under the API's auth and error shapes; `runs_dirs` defaults to `default_runs_dirs()`."""
    dirs = [FsPath(d) for d in runs_dirs] if runs_dirs is not None else default_runs_dirs()
    router = APIRouter(tags=["runs"])
    cache: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()
    lock = threading.Lock()

    @router.get("/v1/tca", response_model=TcaOut, dependencies=dependencies, responses={
        **errors, 404: {"model": ErrorBody, "description": "no run with this id, or no orders or bars to analyse"}})
    def tca(
        run: Annotated[str, Query(description="run id: the run's folder name under the runs directory",
                                  json_schema_extra={"pattern": RUN_ID_PATTERN, "maxLength": 200})],
    ) -> dict[str, Any]:
        """Transaction cost analysis per parent order and in total: implementation shortfall against the decision
        and the arrival price, VWAP slippage, and the Perold split into delay, impact, timing, fees and
        opportunity (currency, and bps of the paper notional), as `tradesys tca RUN --json`."""
        from tradesys.backtest.report import RunRef
        from tradesys.commands.tca import load_tca
        from tradesys.core.jsonsafe import json_ready

        try:
            check_run_id(run, "run")
        except ValueError as exc:
            raise BadRequest([("run", str(exc).partition(": ")[2])]) from None
        try:
            path = find_run(run, dirs, "run")
        except RunNotFound:
            raise StarletteHTTPException(404, [{"field": "run", "reason": f"no run {run!r}"}]) from None
        key = (str(path), *_stamp(path))
        with lock:
            body = cache.get(key)
            if body is not None:
                cache.move_to_end(key)
        if body is None:
            try:
                report = load_tca(RunRef(f"sqlite:///{path}", run, path.parent))
            except ValueError as exc:  # no orders, no bars, not a tradesys ledger: about this run
                reason = str(exc).partition(": ")[2] if str(exc).startswith("RUN: ") else str(exc)
                raise StarletteHTTPException(404, [{"field": "run", "reason": reason}]) from None
            body = json_ready({"run": run, **report.to_dict()})
            with lock:
                cache[key] = body
                while len(cache) > TCA_CACHE_SIZE:
                    cache.popitem(last=False)
        return body

    return router
