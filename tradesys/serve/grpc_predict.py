"""gRPC ingress for ``/v1/predict``: the same routing, lanes, deadlines and answers as the HTTP route, without JSON.

Why: a client that scores many small requests (another service, not a browser) pays for JSON encoding of nested
float lists, FastAPI's body validation and HTTP/1.1 framing on every request. Ray Serve's gRPC proxy
(``serve.start(grpc_options=...)``) takes protobuf over HTTP/2 and calls the ingress deployment's ``Predict``
method (`tradesys.serve.predict.PredictRouter`), which answers through the same `_Service` as the HTTP route.

Protocol (package ``tradesys.predict.v1``, service ``PredictService``, method ``Predict``; see `PROTO`):

* ``PredictRequest``: ``windows`` (flat float32, the windows row-major: window, time step, feature), ``n_windows``,
  ``version`` (empty: champion or canary split), ``priority`` (``live`` or ``research``; empty: research, as over
  HTTP), ``request_id`` (empty: a random one; the canary split hashes it as over HTTP).
* ``PredictReply``: ``request_id``, ``model``, ``version``, ``role``, ``outputs`` (one ``Output`` per model
  output: ``name``, ``values`` flat float32, ``shape``) and ``latency_ms`` (router-measured).
* The API key goes in the ``x-api-key`` metadata entry (gRPC lower-cases metadata keys), or as ``authorization:
  Bearer <key>``; the same keys, role (``read``) and per-key rate limits as the HTTP routes.

Errors are gRPC status codes with a one-line JSON ``details`` (``{"error", "detail"}`` as over HTTP): missing or
wrong key -> UNAUTHENTICATED, a role below ``read`` -> PERMISSION_DENIED, the key's rate limit ->
RESOURCE_EXHAUSTED, bad windows -> INVALID_ARGUMENT (field ``windows.<i>`` or ``n_windows``), unknown
version -> NOT_FOUND, research lane saturated -> RESOURCE_EXHAUSTED, deadline -> DEADLINE_EXCEEDED.

The message classes are built at import time from a ``FileDescriptorProto`` written in Python (no ``protoc``,
no generated ``_pb2`` files: grpcio-tools is not a dependency); `PROTO` is the equivalent ``.proto`` text for
clients in other languages. `PredictServiceStub` is a client stub; `add_PredictServiceServicer_to_server` is the
import path given to Serve (`GRPC_SERVICER_FUNCTION`).
"""

from __future__ import annotations

import hmac
import json
from typing import Any

import grpc
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

__all__ = [
    "API_KEY_METADATA",
    "GRPC_SERVICER_FUNCTION",
    "PROTO",
    "Output",
    "PredictReply",
    "PredictRequest",
    "PredictServiceStub",
    "add_PredictServiceServicer_to_server",
    "check_api_key",
    "metadata_value",
    "reply_from_result",
    "reply_to_dict",
    "request_from_arrays",
    "serve_predict",
    "status_of",
    "windows_array",
]

PACKAGE = "tradesys.predict.v1"
SERVICE = f"{PACKAGE}.PredictService"
METHOD = f"/{SERVICE}/Predict"
API_KEY_METADATA = "x-api-key"
GRPC_SERVICER_FUNCTION = "tradesys.serve.grpc_predict.add_PredictServiceServicer_to_server"

PROTO = """\
syntax = "proto3";
package tradesys.predict.v1;

message PredictRequest {
  repeated float windows = 1;   // n_windows x lookback x n_features, row-major
  uint32 n_windows = 2;
  string version = 3;           // empty: champion (or the canary split)
  string priority = 4;          // "live" or "research"; empty: research
  string request_id = 5;
}

message Output {
  string name = 1;
  repeated float values = 2;    // row-major
  repeated uint32 shape = 3;
}

message PredictReply {
  string request_id = 1;
  string model = 2;
  string version = 3;
  string role = 4;
  repeated Output outputs = 5;
  double latency_ms = 6;
}

service PredictService {
  rpc Predict(PredictRequest) returns (PredictReply);
}
"""

_F = descriptor_pb2.FieldDescriptorProto


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    fd = descriptor_pb2.FileDescriptorProto(name="tradesys/predict/v1/predict.proto", package=PACKAGE,
                                            syntax="proto3")

    def message(name: str, fields: list[tuple[str, int, int, int, str | None]]) -> None:
        m = fd.message_type.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)  # type: ignore[arg-type]
            if type_name:
                f.type_name = type_name

    one, rep = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
    message("PredictRequest", [("windows", 1, _F.TYPE_FLOAT, rep, None), ("n_windows", 2, _F.TYPE_UINT32, one, None),
                               ("version", 3, _F.TYPE_STRING, one, None), ("priority", 4, _F.TYPE_STRING, one, None),
                               ("request_id", 5, _F.TYPE_STRING, one, None)])
    message("Output", [("name", 1, _F.TYPE_STRING, one, None), ("values", 2, _F.TYPE_FLOAT, rep, None),
                       ("shape", 3, _F.TYPE_UINT32, rep, None)])
    message("PredictReply", [("request_id", 1, _F.TYPE_STRING, one, None), ("model", 2, _F.TYPE_STRING, one, None),
                             ("version", 3, _F.TYPE_STRING, one, None), ("role", 4, _F.TYPE_STRING, one, None),
                             ("outputs", 5, _F.TYPE_MESSAGE, rep, f".{PACKAGE}.Output"),
                             ("latency_ms", 6, _F.TYPE_DOUBLE, one, None)])
    svc = fd.service.add(name="PredictService")
    svc.method.add(name="Predict", input_type=f".{PACKAGE}.PredictRequest", output_type=f".{PACKAGE}.PredictReply")
    return fd


_POOL = descriptor_pool.DescriptorPool()
_FILE = _POOL.Add(_file_descriptor())


def _message_class(name: str) -> Any:
    cls = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{PACKAGE}.{name}"))
    # Ray's proxy pickles the request to the replica: pickle finds the class by module and name.
    cls.__module__, cls.__qualname__ = __name__, name
    return cls


PredictRequest = _message_class("PredictRequest")
Output = _message_class("Output")
PredictReply = _message_class("PredictReply")


def add_PredictServiceServicer_to_server(servicer: Any, server: grpc.Server) -> None:
    """Register ``servicer.Predict`` on ``server`` (what protoc's ``_pb2_grpc`` would generate)."""
    handler = grpc.unary_unary_rpc_method_handler(servicer.Predict, request_deserializer=PredictRequest.FromString,
                                                  response_serializer=PredictReply.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Predict": handler}),))


class PredictServiceStub:
    """Client stub: ``PredictServiceStub(channel).Predict(request, metadata=[("x-api-key", key)])``."""

    def __init__(self, channel: grpc.Channel | grpc.aio.Channel) -> None:
        self.Predict = channel.unary_unary(METHOD, request_serializer=PredictRequest.SerializeToString,
                                           response_deserializer=PredictReply.FromString)


def request_from_arrays(windows: Any, *, version: str | None = None, priority: str = "research",
                        request_id: str | None = None) -> Any:
    """A `PredictRequest` for windows of shape (n, lookback, n_features)."""
    arr = np.asarray(windows, dtype=np.float32)
    if arr.ndim != 3:
        raise ValueError(f"windows: expected a 3-d array (n, lookback, n_features), got shape {arr.shape}")
    req = PredictRequest(n_windows=arr.shape[0], version=version or "", priority=priority,
                         request_id=request_id or "")
    req.windows.extend(arr.ravel().tolist())
    return req


def reply_to_dict(reply: Any) -> dict[str, Any]:
    """The reply as the HTTP route's JSON answer (outputs as nested lists of float32 values; NaN as None)."""
    outputs = {o.name: _jsonable(np.asarray(o.values, dtype=np.float32).reshape(tuple(o.shape)))
               for o in reply.outputs}
    return {"request_id": reply.request_id, "model": reply.model, "version": reply.version, "role": reply.role,
            "outputs": outputs, "latency_ms": reply.latency_ms}


def _jsonable(x: np.ndarray) -> list[Any]:
    return [None if v != v or v in (float("inf"), float("-inf")) else v for v in x.tolist()] if x.ndim == 1 \
        else [_jsonable(r) for r in x]


def reply_from_result(result: dict[str, Any]) -> Any:
    """A `PredictReply` from the router's answer (`_Service.predict` with ``raw_outputs``: arrays, not lists)."""
    reply = PredictReply(request_id=result["request_id"], model=result["model"], version=result["version"],
                         role=result["role"], latency_ms=result["latency_ms"])
    for name, value in result["outputs"].items():
        a = np.asarray(value, dtype=np.float32)
        o = reply.outputs.add(name=name)
        o.values.extend(a.ravel().tolist())
        o.shape.extend(a.shape)
    return reply


def metadata_value(metadata: Any, key: str) -> str | None:
    """The first value of ``key`` in gRPC invocation metadata ((key, value) pairs), else None."""
    for k, v in metadata or ():
        if k.lower() == key:
            return v if isinstance(v, str) else v.decode("utf-8", "replace")
    return None


def check_api_key(given: str | None, expected: str) -> str | None:
    """None when ``given`` is the key (constant-time); else the reason to refuse (for UNAUTHENTICATED)."""
    if not given:
        return f"missing {API_KEY_METADATA} metadata"
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return "invalid API key"
    return None


GRPC_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
              403: grpc.StatusCode.PERMISSION_DENIED,
              404: grpc.StatusCode.NOT_FOUND, 413: grpc.StatusCode.INVALID_ARGUMENT,
              422: grpc.StatusCode.INVALID_ARGUMENT, 429: grpc.StatusCode.RESOURCE_EXHAUSTED,
              504: grpc.StatusCode.DEADLINE_EXCEEDED}


def status_of(status: int, detail: Any) -> tuple[grpc.StatusCode, str]:
    """(gRPC code, one-line JSON details in the HTTP error body's shape) for an HTTP status and detail."""
    from tradesys.serve.errors import error_code, field_errors

    body = {"error": error_code(status), "detail": field_errors(status, detail)}
    return GRPC_CODES.get(status, grpc.StatusCode.INTERNAL), json.dumps(body, separators=(",", ":"))


def windows_array(req: Any) -> np.ndarray:
    """The request's windows as float32 (n_windows, values per window); `ValueError` naming the field if they do
    not split into ``n_windows`` equal windows (the router checks lookback x n_features and finiteness)."""
    n, flat = int(req.n_windows), np.asarray(req.windows, dtype=np.float32)
    if n < 1:
        raise ValueError("n_windows: must be >= 1")
    if n > _MAX_WINDOWS:
        raise ValueError(f"n_windows: at most {_MAX_WINDOWS} windows per request, got {n}")
    if flat.size == 0 or flat.size % n:
        raise ValueError(f"windows: {flat.size} values do not split into n_windows={n} equal windows")
    return flat.reshape(n, -1)


_MAX_WINDOWS = 4096  # tradesys.serve.predict.MAX_WINDOWS


class GrpcPredictRequest:
    """What `_Service.predict` reads of a request (the pydantic `PredictRequest` over HTTP): windows as a float32
    array (n_windows, lookback x n_features), version, priority."""

    __slots__ = ("priority", "request_id", "version", "windows")

    def __init__(self, req: Any) -> None:
        self.windows = windows_array(req)
        self.version: str | None = req.version or None
        self.priority = req.priority or "research"
        if self.priority not in ("live", "research"):
            raise ValueError(f"priority: must be 'live' or 'research', got {self.priority!r}")
        if len(req.request_id) > 200:
            raise ValueError("request_id: at most 200 characters")
        self.request_id: str | None = req.request_id or None


async def serve_predict(service: Any, api_key: str, request: Any, context: Any, control: Any = None) -> Any:
    """The ingress's ``Predict``: the key from metadata, then `_Service.predict` as for ``POST /v1/predict``; any
    refusal is a status code on ``context`` and an empty reply (module docstring).

    ``control``: the HTTP routes' `tradesys.serve.access.AccessControl` (bootstrap and key-store keys, the ``read``
    role, per-key rate limits), so a key means the same over both protocols; None: only ``api_key`` is admitted."""
    import uuid

    from starlette.exceptions import HTTPException

    from tradesys.serve.errors import BadRequest

    def refuse(status: int, detail: Any) -> Any:
        code, details = status_of(status, detail)
        context.set_code(code)
        context.set_details(details)
        return PredictReply()

    md = context.invocation_metadata()
    token = metadata_value(md, API_KEY_METADATA) or _bearer(metadata_value(md, "authorization"))
    if control is None or not token:
        why = check_api_key(token, api_key)
        if why is not None:
            return refuse(401, [{"field": API_KEY_METADATA, "reason": why}])
    else:
        from tradesys.serve.keys import allows

        try:
            principal = control.authenticate(token)
        except HTTPException as exc:
            return refuse(exc.status_code, [{"field": API_KEY_METADATA, "reason": str(exc.detail)}])
        wait = control.admit(principal)
        if wait > 0:
            return refuse(429, [{"field": API_KEY_METADATA, "reason": f"rate limit for key {principal.key_id} "
                                 f"exceeded; retry after {wait:.3f} s"}])
        if not allows(principal.role, "read"):
            return refuse(403, [{"field": API_KEY_METADATA, "reason": f"key {principal.key_id} has role "
                                 f"{principal.role!r}; Predict needs 'read'"}])
    try:
        req = GrpcPredictRequest(request)
    except ValueError as exc:
        bad = BadRequest.from_value_error(exc)
        return refuse(bad.status, [{"field": f, "reason": r} for f, r in bad.fields])
    try:
        result = await service.predict(req, req.request_id or uuid.uuid4().hex, raw_outputs=True)
    except BadRequest as exc:
        return refuse(exc.status, [{"field": f, "reason": r} for f, r in exc.fields])
    except HTTPException as exc:
        return refuse(exc.status_code, exc.detail)
    return reply_from_result(result)


def _bearer(authorization: str | None) -> str | None:
    """The token of ``authorization: Bearer <token>`` metadata, else None."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None
