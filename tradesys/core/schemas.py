"""Arrow schemas for market data.

Market data crosses actor boundaries as Arrow record batches (one batch per time step, many symbols),
never one tick per call: an actor call costs about a millisecond.
"""

from __future__ import annotations

import pyarrow as pa

TS_TYPE = pa.timestamp("ns", tz="UTC")

BAR_SCHEMA = pa.schema(
    [
        pa.field("ts", TS_TYPE, nullable=False),
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("open", pa.float64()),
        pa.field("high", pa.float64()),
        pa.field("low", pa.float64()),
        pa.field("close", pa.float64()),
        pa.field("volume", pa.float64()),
    ],
    metadata={"kind": "bar"},
)

QUOTE_SCHEMA = pa.schema(
    [
        pa.field("ts", TS_TYPE, nullable=False),
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("bid", pa.float64()),
        pa.field("ask", pa.float64()),
        pa.field("bid_size", pa.float64()),
        pa.field("ask_size", pa.float64()),
    ],
    metadata={"kind": "quote"},
)

TRADE_SCHEMA = pa.schema(
    [
        pa.field("ts", TS_TYPE, nullable=False),
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("price", pa.float64()),
        pa.field("size", pa.float64()),
        # +1 buyer-initiated, -1 seller-initiated, 0 unknown
        pa.field("aggressor", pa.int8()),
    ],
    metadata={"kind": "trade"},
)


def batch_ts(batch: pa.RecordBatch) -> int:
    """The timestamp (int ns UTC) of a bar batch; every row of a batch shares it."""
    return int(batch.column("ts")[0].value)


def empty_bars() -> pa.RecordBatch:
    """A zero-row bar batch with the canonical schema."""
    return pa.RecordBatch.from_pylist([], schema=BAR_SCHEMA)


def validate_bars(batch: pa.RecordBatch) -> None:
    """Raise ValueError naming the column when a batch does not carry the bar schema."""
    for field in BAR_SCHEMA:
        idx = batch.schema.get_field_index(field.name)
        if idx < 0:
            raise ValueError(f"bar batch: missing column {field.name!r}")
        if not batch.schema.field(idx).type.equals(field.type):
            raise ValueError(
                f"bar batch: column {field.name!r} has type {batch.schema.field(idx).type}, expected {field.type}"
            )
