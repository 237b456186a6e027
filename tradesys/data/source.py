"""Market data sources: anything that yields bar batches, one Arrow record batch per time step.

Every source yields batches in the canonical `BAR_SCHEMA` (tradesys.core.schemas), strictly increasing in
time, each batch holding all symbols that traded at that timestamp. The live loop and the backtester both
pull from the same interface; `Replay` paces a source in wall-clock time for a live-like feed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import pyarrow as pa


@runtime_checkable
class DataSource(Protocol):
    name: str

    @property
    def symbols(self) -> list[str]: ...

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Yield one bar batch per timestamp, in time order; a fresh iterator on each call."""
        ...

    def __len__(self) -> int:
        """Number of time steps."""
        ...
