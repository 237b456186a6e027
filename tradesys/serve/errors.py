"""One JSON error shape for every route and every status: `{"error": <code>, "detail": [{"field", "reason"}]}`.

Library code raises `ValueError("field: reason")` for bad input; `BadRequest.from_value_error` turns that into a 422
naming the field, so the message a notebook user sees and the one an HTTP client sees are the same. An
`HTTPException` raised with a plain string (404, 405, 401, 429, 503, ...) is answered in the same list shape, with
the field a client can act on (`path`, `method`, `X-API-Key`, `request`), so clients parse one shape only. An
unexpected exception is logged server-side (one line, no request data) and answered with a bare 500, never a
traceback.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class FieldError(BaseModel):
    field: str
    reason: str


class ErrorBody(BaseModel):
    error: str
    detail: list[FieldError]


class BadRequest(Exception):
    """Invalid input: answered 422 (or `status`) with the offending fields and reasons."""

    def __init__(self, fields: list[tuple[str, str]], status: int = 422, headers: dict[str, str] | None = None) -> None:
        super().__init__("; ".join(f"{f}: {r}" for f, r in fields))
        self.fields = fields
        self.status = status
        self.headers = headers

    def __reduce__(self) -> tuple[Any, ...]:  # rebuilt whole when it crosses a process (`tradesys.compute`)
        return (type(self), (self.fields, self.status, self.headers))

    @classmethod
    def from_value_error(cls, exc: ValueError, status: int = 422) -> BadRequest:
        field, sep, reason = str(exc).partition(": ")
        if not sep or " " in field.strip():
            return cls([("request", str(exc))], status)
        return cls([(field.strip(), reason)], status)


_ERROR_CODES = {401: "unauthorized", 404: "not_found", 422: "validation_error", 500: "internal"}
# The field a plain-string HTTPException is about, by status: what the client should change.
_DEFAULT_FIELD = {400: "body", 401: "X-API-Key", 404: "path", 405: "method", 413: "body", 415: "content-type"}


def error_code(status_code: int) -> str:
    """A short snake_case code per status: 404 -> not_found, 405 -> method_not_allowed."""
    if status_code in _ERROR_CODES:
        return _ERROR_CODES[status_code]
    try:
        return HTTPStatus(status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def field_errors(status_code: int, detail: Any) -> list[dict[str, str]]:
    """Any `detail` (a string, a list of {field, reason}, a dict) as the list shape."""
    if isinstance(detail, list) and all(isinstance(d, dict) and {"field", "reason"} <= set(d) for d in detail):
        return [{"field": str(d["field"]), "reason": str(d["reason"])} for d in detail]
    if isinstance(detail, dict) and {"field", "reason"} <= set(detail):
        return [{"field": str(detail["field"]), "reason": str(detail["reason"])}]
    reason = detail if isinstance(detail, str) else HTTPStatus(status_code).phrase if detail is None else str(detail)
    return [{"field": _DEFAULT_FIELD.get(status_code, "request"), "reason": reason}]


def error_response(status_code: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error_code(status_code), "detail": field_errors(status_code, detail)}, status_code,
                        headers=headers)


_TYPE_TAGS = {"int", "float", "str", "bool", "none", "dict", "list"}


def _is_union_tag(part: Any) -> bool:
    """pydantic names the union member in an error's loc (`list[literal[...]]`, `ShockIn`): not a field."""
    if not isinstance(part, str):
        return False
    camel = len(part) > 1 and part[0].isupper() and part.isidentifier() and "_" not in part and not part.isupper()
    return "[" in part or part in _TYPE_TAGS or camel


def _field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = list(loc)
    if parts and parts[0] in ("query", "path", "header", "body", "cookie"):
        parts = parts[1:]
    return ".".join(str(p) for p in parts if not _is_union_tag(p)) or "request"


def install_error_handlers(app: FastAPI) -> None:
    """Route every error through one JSON shape; see the module docstring."""

    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, exc.detail, getattr(exc, "headers", None))

    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields: dict[str, str] = {}  # one reason per field: a union reports every member's complaint
        for e in exc.errors():
            fields.setdefault(_field_name(e.get("loc", ())), str(e.get("msg", "invalid")))
        return error_response(422, [{"field": f, "reason": r} for f, r in fields.items()])

    async def bad_request(_: Request, exc: BadRequest) -> JSONResponse:
        return error_response(exc.status, [{"field": f, "reason": r} for f, r in exc.fields], exc.headers)

    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal server error")

    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(BadRequest, bad_request)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, internal_error)
