"""Arrow schema for L2 (market-by-price) order book updates, and a small book that replays them.

Why market-by-price: an L2 feed publishes the *aggregate* size resting at each price level, not single orders.
Each row says "after this event, the `side` level at `price` holds `size`", so a consumer needs no order ids
and replaying the rows in `seq` order onto an empty book rebuilds the publisher's book exactly.

Conventions:

* `side`: +1 bid, -1 ask (`BID`, `ASK`).
* `size`: the level's new total size in shares after the event; 0 means the level is gone.
* `action`: why the level changed, one of `ACTION_ADD` (a limit order joined), `ACTION_CANCEL` (resting
  shares were cancelled or expired) or `ACTION_TRADE` (a marketable order executed against the level).
* `seq`: a per-symbol counter strictly increasing in publication order; rows that share a `ts` (one event
  touching several levels) keep their order through `seq`.
* `price` is in currency units (float64), always a whole multiple of the instrument's tick size.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from tradesys.core.schemas import QUOTE_SCHEMA, TS_TYPE

BID = 1
ASK = -1
ACTION_ADD = 0
ACTION_CANCEL = 1
ACTION_TRADE = 2
ACTION_NAMES = {ACTION_ADD: "add", ACTION_CANCEL: "cancel", ACTION_TRADE: "trade"}

BOOK_SCHEMA = pa.schema(
    [
        pa.field("ts", TS_TYPE, nullable=False),
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("side", pa.int8(), nullable=False),
        pa.field("price", pa.float64(), nullable=False),
        pa.field("size", pa.float64(), nullable=False),
        pa.field("action", pa.int8(), nullable=False),
    ],
    metadata={"kind": "book"},
)


def validate_schema(batch: pa.RecordBatch | pa.Table, schema: pa.Schema, what: str) -> None:
    """Raise ValueError naming the column when `batch` does not carry `schema`'s columns and types."""
    for f in schema:
        idx = batch.schema.get_field_index(f.name)
        if idx < 0:
            raise ValueError(f"{what} batch: missing column {f.name!r}")
        got = batch.schema.field(idx).type
        if not got.equals(f.type):
            raise ValueError(f"{what} batch: column {f.name!r} has type {got}, expected {f.type}")


def validate_book(batch: pa.RecordBatch | pa.Table) -> None:
    """Check the schema and the value domains of an L2 update batch (side, action, size >= 0, seq order)."""
    validate_schema(batch, BOOK_SCHEMA, "book")
    side = np.asarray(batch.column("side"))
    if not np.isin(side, (BID, ASK)).all():
        raise ValueError("book batch: side must be +1 (bid) or -1 (ask)")
    action = np.asarray(batch.column("action"))
    if not np.isin(action, tuple(ACTION_NAMES)).all():
        raise ValueError(f"book batch: action must be one of {sorted(ACTION_NAMES)}")
    size = np.asarray(batch.column("size"))
    if not (np.isfinite(size) & (size >= 0)).all():
        raise ValueError("book batch: size must be finite and >= 0")
    price = np.asarray(batch.column("price"))
    if not (np.isfinite(price) & (price > 0)).all():
        raise ValueError("book batch: price must be finite and > 0")


def book_batch(
    ts: np.ndarray,
    symbol: str | np.ndarray,
    seq: np.ndarray,
    side: np.ndarray,
    price: np.ndarray,
    size: np.ndarray,
    action: np.ndarray,
) -> pa.RecordBatch:
    """Build a BOOK_SCHEMA batch from whole columns (ts in int64 ns UTC)."""
    n = len(ts)
    sym = pa.array([symbol] * n, pa.string()) if isinstance(symbol, str) else pa.array(symbol, pa.string())
    return pa.RecordBatch.from_arrays(
        [
            pa.array(np.asarray(ts, np.int64), pa.int64()).cast(TS_TYPE),
            sym,
            pa.array(np.asarray(seq, np.int64)),
            pa.array(np.asarray(side, np.int8)),
            pa.array(np.asarray(price, np.float64)),
            pa.array(np.asarray(size, np.float64)),
            pa.array(np.asarray(action, np.int8)),
        ],
        schema=BOOK_SCHEMA,
    )


@dataclass
class L2Book:
    """One symbol's aggregate book rebuilt from market-by-price updates (price -> size per side).

    Prices are keyed as given (the publisher rounds them to ticks), so the same float always hits the same key.
    """

    symbol: str
    bids: dict[float, float] = field(default_factory=dict)
    asks: dict[float, float] = field(default_factory=dict)
    last_seq: int = -1

    def apply(self, side: int, price: float, size: float, seq: int | None = None) -> None:
        if seq is not None:
            if seq <= self.last_seq:
                raise ValueError(f"seq: {seq} is not after the last applied {self.last_seq}")
            self.last_seq = seq
        levels = self.bids if side == BID else self.asks
        if size > 0:
            levels[price] = size
        else:
            levels.pop(price, None)

    def apply_batch(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Apply this symbol's rows of an update batch in row order."""
        cols = {n: batch.column(n).to_pylist() for n in ("symbol", "seq", "side", "price", "size")}
        for sym, seq, side, price, size in zip(
            cols["symbol"], cols["seq"], cols["side"], cols["price"], cols["size"], strict=True
        ):
            if sym == self.symbol:
                self.apply(side, price, size, seq)

    def best_bid(self) -> tuple[float, float]:
        """(price, size) of the best bid; (nan, 0) on an empty side."""
        if not self.bids:
            return float("nan"), 0.0
        p = max(self.bids)
        return p, self.bids[p]

    def best_ask(self) -> tuple[float, float]:
        if not self.asks:
            return float("nan"), 0.0
        p = min(self.asks)
        return p, self.asks[p]

    def levels(self, side: int, depth: int | None = None) -> list[tuple[float, float]]:
        """Levels best first: bids by descending price, asks ascending."""
        book = self.bids if side == BID else self.asks
        out = sorted(book.items(), reverse=side == BID)
        return out if depth is None else out[:depth]

    def total(self, side: int) -> float:
        return float(sum((self.bids if side == BID else self.asks).values()))


def replay_books(batches: Iterable[pa.RecordBatch | pa.Table]) -> dict[str, L2Book]:
    """Rebuild every symbol's book by applying update batches, in order, onto empty books."""
    books: dict[str, L2Book] = {}
    for b in batches:
        validate_schema(b, BOOK_SCHEMA, "book")
        cols = [b.column(n).to_pylist() for n in ("symbol", "seq", "side", "price", "size")]
        for sym, seq, side, price, size in zip(*cols, strict=True):
            book = books.get(sym)
            if book is None:
                book = books[sym] = L2Book(sym)
            book.apply(side, price, size, seq)
    return books


def quote_from_book(book: L2Book, ts_ns: int) -> pa.RecordBatch:
    """A one-row QUOTE_SCHEMA batch with the book's top of book (NaN price, 0 size on an empty side)."""
    bp, bs = book.best_bid()
    ap, asz = book.best_ask()
    return pa.RecordBatch.from_arrays(
        [
            pa.array([ts_ns], pa.int64()).cast(TS_TYPE),
            pa.array([book.symbol], pa.string()),
            pa.array([bp]),
            pa.array([ap]),
            pa.array([bs]),
            pa.array([asz]),
        ],
        schema=QUOTE_SCHEMA,
    )
