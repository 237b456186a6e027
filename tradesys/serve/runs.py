"""Runs over HTTP: `GET /v1/runs/{id}/equity` (the equity curve as JSON) and `GET /v1/runs/{id}/report` (the tear
sheet as one self-contained HTML page), for any run folder holding a ledger (`<runs dir>/<id>/ledger.db`).

The runs folders are `$TRADESYS_RUNS_DIR` (else ~/tradesys/runs) and then `./runs` of the server process, as
`tradesys report` looks them up (`tradesys.backtest.report.default_runs_dirs`), resolved when the app is built. An
id is a plain name (`RUN_ID_PATTERN`): one with a '/' or '..' is refused with 422 before any file is touched; an
unknown id is a 404 naming `id`. Ledgers are only read. The report is computed per request (bars loaded, charts
drawn: seconds), in a worker thread; the last few pages are kept, keyed by the ledger files' size and mtime, so
asking again for a run that has not changed costs nothing.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path as FsPath
from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import HTMLResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from tradesys.backtest.report import RUN_ID_PATTERN, RunNotFound, check_run_id, default_runs_dirs, find_run
from tradesys.serve.errors import BadRequest, ErrorBody

REPORT_CACHE_SIZE = 8

RunId = Annotated[str, Path(
    description="run id: the run's folder name under the runs directory (letters, digits, '_', '-', single dots)",
    json_schema_extra={"pattern": RUN_ID_PATTERN, "maxLength": 200},
)]


class EquityPoint(BaseModel):
    ts_ns: int
    equity: float
    cash: float
    market_value: float
    realized_pnl: float
    unrealized_pnl: float
    fees: float


class EquityCurve(BaseModel):
    run_id: str
    initial_cash: float | None
    points: list[EquityPoint]  # one per booked step (its last equity row), oldest first


def _ledger_path(run_id: str, runs_dirs: Sequence[FsPath]) -> FsPath:
    """The run's ledger file: 422 naming `id` for a malformed id, 404 for an unknown one (no paths in the body)."""
    try:
        check_run_id(run_id, "id")
    except ValueError as exc:
        raise BadRequest([("id", str(exc).partition(": ")[2])]) from None
    try:
        return find_run(run_id, runs_dirs, "id")
    except RunNotFound:
        raise StarletteHTTPException(404, [{"field": "id", "reason": f"no run {run_id!r}"}]) from None


def _stamp(path: FsPath) -> tuple[int, ...]:
    """What changes when the ledger does: size and mtime of the database and its write-ahead log."""
    out: list[int] = []
    for p in (path, FsPath(f"{path}-wal")):
        try:
            st = os.stat(p)
            out += [st.st_size, st.st_mtime_ns]
        except FileNotFoundError:
            out += [0, 0]
    return tuple(out)


def runs_router(
    dependencies: list[Any], errors: dict[int | str, dict[str, Any]], runs_dirs: Sequence[FsPath] | None = None
) -> APIRouter:
    """The two routes, under the API's auth and error shapes; `runs_dirs` defaults to `default_runs_dirs()`."""
    dirs = [FsPath(d) for d in runs_dirs] if runs_dirs is not None else default_runs_dirs()
    router = APIRouter(tags=["runs"])
    responses: dict[int | str, dict[str, Any]] = {
        **errors, 404: {"model": ErrorBody, "description": "no run with this id (or nothing booked yet: report)"},
    }
    cache: OrderedDict[tuple[Any, ...], str] = OrderedDict()
    lock = threading.Lock()

    @router.get("/v1/runs/{id:path}/equity", response_model=EquityCurve, dependencies=dependencies,
                responses=responses)
    def equity(id: RunId) -> dict[str, Any]:
        """The run's equity curve: one point per booked step (its last equity row), oldest first."""
        from tradesys.backtest.tearsheet import equity_frame
        from tradesys.ledger import open_ledger

        path = _ledger_path(id, dirs)
        ledger = open_ledger(f"sqlite:///{path}")
        try:
            curve = ledger.equity_curve() if ledger.schema_version() > 0 else []
        finally:
            ledger.close()
        if not curve:
            return {"run_id": id, "initial_cash": None, "points": []}
        frame = equity_frame(curve)
        points = frame.reset_index()[list(EquityPoint.model_fields)].to_dict("records")
        return {"run_id": id, "initial_cash": float(frame["initial_cash"].iloc[0]), "points": points}

    # the page is HTML, its errors JSON: said explicitly, or FastAPI documents the errors as text/html too
    json_errors = {code: {"description": r["description"], **({"headers": r["headers"]} if "headers" in r else {}),
                          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
                   for code, r in responses.items()}

    @router.get("/v1/runs/{id:path}/report", response_class=HTMLResponse, dependencies=dependencies,
                responses={**json_errors, 200: {"content": {"text/html": {}},
                                                "description": "the tear sheet, one self-contained HTML page"}})
    def report(id: RunId) -> HTMLResponse:
        """The run's tear sheet (statistics, equity and drawdown against an equal-weight benchmark, monthly returns,
        rolling Sharpe/volatility, exposure, turnover, per-symbol P&L, trades) as self-contained HTML."""
        from tradesys.backtest.report import RunRef, load_tear_sheet, render_html, render_pngs

        path = _ledger_path(id, dirs)
        key = (str(path), *_stamp(path))
        with lock:
            page = cache.get(key)
            if page is not None:
                cache.move_to_end(key)
        if page is None:
            try:
                sheet = load_tear_sheet(RunRef(f"sqlite:///{path}", id, path.parent))
            except ValueError as exc:  # an empty ledger, an unreadable saved config: about this run
                reason = str(exc).partition(": ")[2] if str(exc).startswith("RUN: ") else str(exc)
                raise StarletteHTTPException(404, [{"field": "id", "reason": reason}]) from None
            page = render_html(sheet, render_pngs(sheet), f"tradesys run {id}")
            with lock:
                cache[key] = page
                while len(cache) > REPORT_CACHE_SIZE:
                    cache.popitem(last=False)
        return HTMLResponse(page)

    return router
