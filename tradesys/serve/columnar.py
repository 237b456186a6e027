"""Batches in and out of the analytics routes: a JSON object of columns, or an Arrow IPC stream for large batches.

JSON: `{"S": [100, 101], "K": 100, ..., "model": "bsm"}`: columns are lists (or scalars that broadcast), the
route's options sit beside them. Arrow: the body is an IPC stream (`Content-Type:
application/vnd.apache.arrow.stream`) whose record batches hold the columns; the options go in the query string.
The response follows `Accept`: JSON lists (NaN as null, with a per-row `code` and a `reasons` legend), or an Arrow
stream of the output columns with the legend in the schema metadata under `tradesys`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from tradesys.serve.errors import BadRequest

ARROW_STREAM = "application/vnd.apache.arrow.stream"
MAX_JSON_ROWS = 100_000
MAX_ARROW_ROWS = 5_000_000


_BOUNDS = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}


def drop_null(schema: dict[str, Any]) -> None:
    """Optional fields are optional by absence: drop the `null` branch pydantic writes for `X | None = None`, so a
    schema-valid body never sends `"S": null` where the code wants a value or nothing (a `oneOf` of `required`
    rules would otherwise be met by a null)."""
    for prop in schema.get("properties", {}).values():
        branches = prop.get("anyOf")
        if isinstance(branches, list) and {"type": "null"} in branches:
            kept = [b for b in branches if b != {"type": "null"}]
            prop.pop("anyOf")
            if len(kept) == 1:
                prop.update(kept[0])
            else:
                prop["anyOf"] = kept
            if prop.get("default", 0) is None:
                prop.pop("default")
        for raw, key in _BOUNDS.items():  # pydantic leaves a bound on `Annotated[int, validator] | None` unconverted
            if raw in prop:
                prop[key] = prop.pop(raw)


def request_body_doc(json_model: type[Any], refine: Callable[[dict[str, Any]], dict[str, Any]] | None = None
                     ) -> dict[str, Any]:
    """`openapi_extra` for a route that reads its body itself: both encodings listed in /openapi.json; `refine`
    adds the cross-field rules (oneOf, if/then) the model cannot state."""
    schema = json_model.model_json_schema()
    drop_null(schema)
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": refine(schema) if refine else schema},
                ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}},
            },
        }
    }


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "application/json").split(";")[0].strip().lower()


def wants_arrow(request: Request) -> bool:
    return ARROW_STREAM in request.headers.get("accept", "").lower()


def parse_json_body(body: bytes) -> Any:
    """Bytes -> JSON value, or a 4xx naming `body`: invalid JSON, invalid UTF-8 and nesting too deep for the parser
    (a RecursionError: 1 KB of `[` is enough) are the client's error, never a 500 with a logged traceback."""
    try:
        return json.loads(body or b"null")
    except json.JSONDecodeError as exc:
        raise BadRequest([("body", f"invalid JSON ({exc.msg} at position {exc.pos})")]) from None
    except UnicodeDecodeError:
        raise BadRequest([("body", "invalid JSON (not UTF-8 text)")]) from None
    except RecursionError:
        raise BadRequest([("body", "invalid JSON (nested too deeply)")]) from None
    except ValueError as exc:  # e.g. an integer literal longer than Python's digit limit
        raise BadRequest([("body", f"invalid JSON ({str(exc)[:120]})")]) from None


async def read_batch(
    request: Request, columns: set[str]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], int]:
    """(columns, body options, query options, row limit) from the request, whichever encoding it uses.

    Everything in a JSON body that is not a column name is an option; for Arrow the options are the query
    parameters. Query parameters also fill options that a JSON body leaves out. The two kinds of options are kept
    apart because JSON options are typed (a bool is not a number) while query strings are text to be parsed. A
    query key given more than once (`?greeks=delta&greeks=vega`) comes back as a list, never silently the last.
    The body's size is capped while it streams in (`limits.BodyLimit`).
    """
    body = await request.body()
    query: dict[str, Any] = {}
    for key in request.query_params:
        values = request.query_params.getlist(key)
        query[key] = values if len(values) > 1 else values[0]
    media = _media_type(request)
    if media == ARROW_STREAM:
        try:
            table = await run_in_threadpool(lambda: pa.ipc.open_stream(body).read_all())
        except (pa.ArrowInvalid, OSError) as exc:
            raise BadRequest([("body", f"not an Arrow IPC stream ({exc})")]) from None
        cols: dict[str, Any] = {}
        for name in table.column_names:
            col = table.column(name)
            if col.null_count:
                raise BadRequest([(name, f"{col.null_count} null values (send NaN for a missing number)")])
            cols[name] = col.to_numpy()
        return cols, {}, query, MAX_ARROW_ROWS
    if media not in ("application/json", ""):
        raise BadRequest([("content-type", f"{media!r} is not supported (use application/json or {ARROW_STREAM})")],
                         status=415)
    payload = parse_json_body(body) if len(body) < 65_536 else await run_in_threadpool(parse_json_body, body)
    if not isinstance(payload, dict):
        raise BadRequest([("body", "must be a JSON object of columns and options")])
    cols = {k: v for k, v in payload.items() if k in columns}
    options = {k: v for k, v in payload.items() if k not in columns}
    return cols, options, query, MAX_JSON_ROWS


def _json_list(a: np.ndarray) -> list[Any]:
    values = a.tolist()
    if a.dtype.kind == "f":
        return [None if (v != v or v in (math.inf, -math.inf)) else v for v in values]
    return values


def batch_response(request: Request, outputs: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Response:
    """The output columns (and `meta`: the reasons legend, method details) in the encoding the client accepts."""
    if wants_arrow(request):
        arrays = {k: pa.array(np.ascontiguousarray(v)) for k, v in outputs.items()}
        schema = pa.schema([(k, a.type) for k, a in arrays.items()], metadata={"tradesys": json.dumps(meta)})
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, schema) as writer:
            writer.write_batch(pa.record_batch(list(arrays.values()), schema=schema))
        return Response(sink.getvalue().to_pybytes(), media_type=ARROW_STREAM)
    n = len(next(iter(outputs.values()))) if outputs else 0
    return JSONResponse({"n": n, **{k: _json_list(np.asarray(v)) for k, v in outputs.items()}, **meta})


def arrow_stream(columns: Mapping[str, Any]) -> bytes:
    """Client helper: columns -> Arrow IPC stream bytes (what a large-batch request body looks like).

    Scalars are repeated to the length of the longest column (an Arrow batch has one length)."""
    arrays = {k: np.asarray(v) for k, v in columns.items()}
    n = max((a.size for a in arrays.values() if a.ndim), default=1)
    table = pa.table({k: np.broadcast_to(a, (n,)) if a.ndim == 0 else a for k, a in arrays.items()})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def read_arrow_stream(data: bytes) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Client helper: Arrow IPC response bytes -> (columns, the `tradesys` metadata)."""
    table = pa.ipc.open_stream(data).read_all()
    meta_raw = (table.schema.metadata or {}).get(b"tradesys", b"{}")
    return {n: table.column(n).to_numpy() for n in table.column_names}, json.loads(meta_raw)
