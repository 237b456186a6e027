"""Message bus: one interface over an in-process bus (default) and Kafka, values as Arrow IPC record batches.

``publish_batch`` splits a batch by symbol (one message per symbol, keyed by it, so per-symbol order holds
within a partition); ``decode_records`` turns consumed records back into one table and sends the ones that do
not decode to a dead-letter topic instead of stopping the stream.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from tradesys.bus.base import Bus, CommitFailedError, Consumer, Producer, Record
from tradesys.bus.codec import DecodeError, decode_batch, encode_batch, schema_mismatch
from tradesys.bus.dlq import DeadLetterQueue, dlq_topic_for
from tradesys.bus.memory import MemoryBus

__all__ = [
    "Bus",
    "CommitFailedError",
    "Consumer",
    "DeadLetterQueue",
    "DecodeError",
    "MemoryBus",
    "Producer",
    "Record",
    "decode_batch",
    "decode_records",
    "dlq_topic_for",
    "encode_batch",
    "publish_batch",
    "schema_mismatch",
]


def publish_batch(
    producer: Producer,
    topic: str,
    batch: pa.RecordBatch | pa.Table,
    key_column: str = "symbol",
    *,
    headers: Sequence[tuple[str, bytes]] | None = None,
) -> int:
    """Send one message per distinct ``key_column`` value (keys in order of first appearance, rows in batch order).

    Returns the number of messages sent. Call ``producer.flush()`` to wait for delivery.
    """
    idx = batch.schema.get_field_index(key_column)
    if idx < 0:
        raise ValueError(f"{key_column}: key column missing from batch")
    if batch.num_rows == 0:
        return 0
    col = batch.column(idx)
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if col.null_count:
        raise ValueError(f"{key_column}: {col.null_count} null key(s); every row needs a key")
    enc = col.dictionary_encode()
    codes = np.asarray(enc.indices.to_numpy(zero_copy_only=False))
    keys = enc.dictionary.to_pylist()
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    groups = np.split(order, bounds)
    groups.sort(key=lambda g: int(g[0]))  # first appearance
    for rows in groups:
        part = batch.take(pa.array(rows))
        producer.send(topic, encode_batch(part), key=str(keys[codes[rows[0]]]).encode(), headers=headers)
    return len(groups)


def decode_records(
    records: Sequence[Record], schema: pa.Schema, dlq: DeadLetterQueue | None = None
) -> tuple[pa.Table, list[Record]]:
    """Decode record values into one table with ``schema``; return it and the records that did not decode.

    With ``dlq`` each bad record is also routed to the dead-letter topic (flush the DLQ before committing).
    """
    tables: list[pa.Table] = []
    bad: list[Record] = []
    for r in records:
        try:
            tables.append(decode_batch(r.value, schema))
        except DecodeError as exc:
            bad.append(r)
            if dlq is not None:
                dlq.route(r, str(exc))
    if not tables:
        return schema.empty_table(), bad
    return pa.concat_tables(tables), bad
