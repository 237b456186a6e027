"""Arrow IPC stream encoding of record batches for bus messages, with a schema check on decode.

A message value is one Arrow IPC *stream* (schema + one or more batches): self-describing, so a consumer can
check the writer's schema against the one it expects before it touches any column.
"""

from __future__ import annotations

import pyarrow as pa


class DecodeError(ValueError):
    """A message value is not an Arrow IPC stream, or its schema is not the expected one."""


def encode_batch(batch: pa.RecordBatch | pa.Table) -> bytes:
    """Serialise a batch (or table) as an Arrow IPC stream."""
    if not isinstance(batch, pa.RecordBatch | pa.Table):
        raise ValueError(f"batch: expected a pyarrow RecordBatch or Table, got {type(batch).__name__}")
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write(batch)
    return sink.getvalue().to_pybytes()


def schema_mismatch(actual: pa.Schema, expected: pa.Schema) -> str | None:
    """A reason string when ``actual`` lacks a column of ``expected`` or types differ; None when compatible.

    Extra columns and schema metadata are tolerated (producers may add columns); order is not checked.
    """
    for field in expected:
        idx = actual.get_field_index(field.name)
        if idx < 0:
            return f"missing column {field.name!r}"
        if not actual.field(idx).type.equals(field.type):
            return f"column {field.name!r} has type {actual.field(idx).type}, expected {field.type}"
    return None


def decode_batch(data: bytes, schema: pa.Schema | None = None) -> pa.Table:
    """Decode an Arrow IPC stream; with ``schema``, check it and project to exactly its columns.

    Raises :class:`DecodeError` (a ValueError) naming the reason.
    """
    try:
        reader = pa.ipc.open_stream(pa.py_buffer(data))
        table = reader.read_all()
    except (pa.ArrowInvalid, pa.ArrowIOError, pa.ArrowTypeError, OSError, TypeError) as exc:
        raise DecodeError(f"value: not an Arrow IPC stream ({exc})") from exc
    if schema is None:
        return table
    why = schema_mismatch(table.schema, schema)
    if why is not None:
        raise DecodeError(f"value: schema mismatch: {why}")
    return table.select(schema.names).cast(schema)
