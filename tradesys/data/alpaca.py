"""Alpaca market data (alpaca-py) into our Arrow schemas: historical bars, trades and quotes, and live bars.

Why an adapter: strategies and feature code only see `BAR_SCHEMA`, `TRADE_SCHEMA` and `QUOTE_SCHEMA`; this module
is the one place that knows Alpaca's wire format.

* Historical data goes through alpaca-py's `StockHistoricalDataClient` (REST `/v2/stocks/bars|trades|quotes`,
  which it pages through with `next_page_token`). We ask for raw responses (`raw_data=True`) and convert whole
  columns with pandas/Arrow; building one pydantic model per tick would cost far more than the conversion.
* Live bars come from alpaca-py's `StockDataStream` websocket (msgpack frames); `bar_messages_to_batch` turns its
  raw bar messages into one `BAR_SCHEMA` batch. `url_override` points either client elsewhere (a proxy, or the
  local fake exchange the tests run).
* **Credentials come only from the environment** (`APCA_API_KEY_ID`, `APCA_API_SECRET_KEY`), are never passed
  in, never logged and never shown by `repr`.

Conventions: Alpaca stamps a bar at its *start*; tradesys stamps bars at their *end* (see
`tradesys.data.synthetic`), so intraday bars are shifted by one bar length. Daily bars are stamped 21:00 UTC of
their New York trading date, as the packaged daily data (`tradesys.data.historical`). Alpaca trades carry no
aggressor side, so `aggressor` is 0 (unknown). Sizes are as the feed reports them.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from tradesys.core.schemas import BAR_SCHEMA, QUOTE_SCHEMA, TRADE_SCHEMA, TS_TYPE

KEY_ENV = "APCA_API_KEY_ID"
SECRET_ENV = "APCA_API_SECRET_KEY"
_UNIT_NS = {"Min": 60 * 10**9, "Hour": 3600 * 10**9}


def _credentials() -> tuple[str, str]:
    key, secret = os.environ.get(KEY_ENV, ""), os.environ.get(SECRET_ENV, "")
    if not key:
        raise ValueError(f"{KEY_ENV}: not set in the environment")
    if not secret:
        raise ValueError(f"{SECRET_ENV}: not set in the environment")
    return key, secret


def parse_timeframe(tf: str) -> tuple[int, str]:
    """'1Min', '5Min', '1Hour', '1Day' -> (amount, unit)."""
    for unit in ("Min", "Hour", "Day", "Week", "Month"):
        if isinstance(tf, str) and tf.endswith(unit) and tf[: -len(unit)].isdigit() and int(tf[: -len(unit)]) > 0:
            return int(tf[: -len(unit)]), unit
    raise ValueError(f"timeframe: must look like '1Min', '15Min', '1Hour' or '1Day' (got {tf!r})")


def _ts_ns(values: Sequence[Any]) -> np.ndarray:
    """Alpaca timestamps (RFC 3339 strings, msgpack Timestamps, datetimes) -> int64 ns UTC."""
    if not any(hasattr(v, "to_unix_nano") for v in values):
        return np.asarray(pd.to_datetime(pd.Series(values), utc=True, format="ISO8601").astype("int64"), np.int64)
    return np.asarray(
        [v.to_unix_nano() if hasattr(v, "to_unix_nano") else pd.Timestamp(v).value for v in values], np.int64
    )


def _stamp_bars(start_ns: np.ndarray, timeframe: str) -> np.ndarray:
    """Alpaca bar-start stamps -> tradesys stamps (bar end intraday, 21:00 UTC of the NY date for daily+)."""
    amount, unit = parse_timeframe(timeframe)
    if unit in _UNIT_NS:
        return start_ns + amount * _UNIT_NS[unit]
    ny = pd.DatetimeIndex(pd.to_datetime(start_ns, utc=True)).tz_convert("America/New_York")
    days = ny.normalize().tz_localize(None)
    return np.asarray((days + pd.Timedelta(hours=21)).asi8, np.int64)


def _table(schema: pa.Schema, ts: np.ndarray, symbols: list[str], cols: dict[str, Any]) -> pa.Table:
    order = np.lexsort((np.asarray(symbols, dtype=object).astype(str), ts)) if len(ts) else np.empty(0, np.int64)
    arrays: list[pa.Array] = [
        pa.array(ts[order], pa.int64()).cast(TS_TYPE),
        pa.array(np.asarray(symbols, object)[order].tolist(), pa.string()),
    ]
    for f in schema:
        if f.name in ("ts", "symbol"):
            continue
        arrays.append(pa.array(np.asarray(cols[f.name])[order], f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _flatten(raw: Mapping[str, Sequence[Mapping[str, Any]]]) -> tuple[list[str], list[Mapping[str, Any]]]:
    syms, rows = [], []
    for sym, items in raw.items():
        for r in items:
            syms.append(sym)
            rows.append(r)
    return syms, rows


def _col(rows: list[Mapping[str, Any]], key: str, default: float = np.nan) -> np.ndarray:
    return np.asarray([r.get(key, default) for r in rows], np.float64)


def bars_to_table(raw: Mapping[str, Sequence[Mapping[str, Any]]], timeframe: str = "1Min") -> pa.Table:
    """Raw Alpaca bars {symbol: [{t, o, h, l, c, v, ...}]} -> BAR_SCHEMA, ordered by (ts, symbol)."""
    syms, rows = _flatten(raw)
    ts = _stamp_bars(_ts_ns([r["t"] for r in rows]), timeframe) if rows else np.empty(0, np.int64)
    cols = {
        "open": _col(rows, "o"),
        "high": _col(rows, "h"),
        "low": _col(rows, "l"),
        "close": _col(rows, "c"),
        "volume": _col(rows, "v"),
    }
    return _table(BAR_SCHEMA, ts, syms, cols)


def trades_to_table(raw: Mapping[str, Sequence[Mapping[str, Any]]]) -> pa.Table:
    """Raw Alpaca trades {symbol: [{t, p, s, x, i, c, z}]} -> TRADE_SCHEMA (aggressor 0: Alpaca has no side)."""
    syms, rows = _flatten(raw)
    ts = _ts_ns([r["t"] for r in rows]) if rows else np.empty(0, np.int64)
    cols = {"price": _col(rows, "p"), "size": _col(rows, "s"), "aggressor": np.zeros(len(rows), np.int8)}
    return _table(TRADE_SCHEMA, ts, syms, cols)


def quotes_to_table(raw: Mapping[str, Sequence[Mapping[str, Any]]]) -> pa.Table:
    """Raw Alpaca quotes {symbol: [{t, bp, bs, ap, as, ...}]} -> QUOTE_SCHEMA."""
    syms, rows = _flatten(raw)
    ts = _ts_ns([r["t"] for r in rows]) if rows else np.empty(0, np.int64)
    cols = {
        "bid": _col(rows, "bp"),
        "ask": _col(rows, "ap"),
        "bid_size": _col(rows, "bs"),
        "ask_size": _col(rows, "as"),
    }
    return _table(QUOTE_SCHEMA, ts, syms, cols)


def bar_messages_to_batch(msgs: Iterable[Mapping[str, Any]], timeframe: str = "1Min") -> pa.RecordBatch:
    """Raw websocket bar messages ({'T': 'b', 'S', 'o', 'h', 'l', 'c', 'v', 't'}) -> one BAR_SCHEMA batch.

    Messages of other types ('t', 'q', control frames) are ignored. Live bars are one-minute bars.
    """
    bars = [m for m in msgs if m.get("T") == "b"]
    by_sym: dict[str, list[Mapping[str, Any]]] = {}
    for m in bars:
        by_sym.setdefault(m["S"], []).append(m)
    table = bars_to_table(by_sym, timeframe)
    return table.combine_chunks().to_batches()[0] if table.num_rows else pa.RecordBatch.from_pylist([], BAR_SCHEMA)


class AlpacaMarketData:
    """Historical and live Alpaca stock data in tradesys schemas; credentials from the environment only.

    `feed` is 'iex' (free) or 'sip'; `url_override` / `stream_url` point the REST / websocket clients elsewhere.
    """

    def __init__(self, feed: str = "iex", url_override: str | None = None, stream_url: str | None = None) -> None:
        from alpaca.data.enums import DataFeed
        from alpaca.data.historical import StockHistoricalDataClient

        if feed not in ("iex", "sip"):
            raise ValueError(f"feed: must be 'iex' or 'sip' (got {feed!r})")
        self.feed = DataFeed(feed)
        self.url_override = url_override
        self.stream_url = stream_url
        key, secret = _credentials()
        self._client = StockHistoricalDataClient(key, secret, raw_data=True, url_override=url_override)

    def __repr__(self) -> str:
        return f"AlpacaMarketData(feed={self.feed.value!r}, url_override={self.url_override!r}, credentials=<env>)"

    @staticmethod
    def _window(start: datetime | str, end: datetime | str | None) -> dict[str, Any]:
        out = {"start": pd.Timestamp(start).to_pydatetime()}
        if end is not None:
            out["end"] = pd.Timestamp(end).to_pydatetime()
        return out

    def bars(
        self, symbols: Sequence[str], start: datetime | str, end: datetime | str | None = None, timeframe: str = "1Min"
    ) -> pa.Table:
        from alpaca.data.requests import StockBarsRequest
        from alpaca.data.timeframe import TimeFrame, TimeFrameUnit

        amount, unit = parse_timeframe(timeframe)
        tf = TimeFrame(amount, TimeFrameUnit(unit))
        req = StockBarsRequest(
            symbol_or_symbols=list(symbols), timeframe=tf, feed=self.feed, **self._window(start, end)
        )
        return bars_to_table(self._client.get_stock_bars(req), timeframe)

    def trades(
        self, symbols: Sequence[str], start: datetime | str, end: datetime | str | None = None, limit: int | None = None
    ) -> pa.Table:
        from alpaca.data.requests import StockTradesRequest

        req = StockTradesRequest(
            symbol_or_symbols=list(symbols), feed=self.feed, limit=limit, **self._window(start, end)
        )
        return trades_to_table(self._client.get_stock_trades(req))

    def quotes(
        self, symbols: Sequence[str], start: datetime | str, end: datetime | str | None = None, limit: int | None = None
    ) -> pa.Table:
        from alpaca.data.requests import StockQuotesRequest

        req = StockQuotesRequest(
            symbol_or_symbols=list(symbols), feed=self.feed, limit=limit, **self._window(start, end)
        )
        return quotes_to_table(self._client.get_stock_quotes(req))

    def live_bars(self, symbols: Sequence[str]) -> LiveBars:
        """A started live bar feed; pull batches with `get()`, end it with `stop()`."""
        return LiveBars(self, symbols)


class LiveBars:
    """Live one-minute bars from `StockDataStream` on a background thread, handed out as BAR_SCHEMA batches.

    Each websocket bar message becomes one batch (Alpaca sends a minute's bars for many symbols as separate
    messages); the queue is bounded (`maxsize`) so a slow consumer exerts backpressure on the handler.
    """

    def __init__(self, md: AlpacaMarketData, symbols: Sequence[str], maxsize: int = 10_000) -> None:
        from alpaca.data.live import StockDataStream

        key, secret = _credentials()
        self._queue: queue.Queue[pa.RecordBatch] = queue.Queue(maxsize)
        self._stream = StockDataStream(key, secret, raw_data=True, feed=md.feed, url_override=md.stream_url)
        self._stream.subscribe_bars(self._on_bar, *symbols)
        self._thread = threading.Thread(target=self._stream.run, name="alpaca-live-bars", daemon=True)
        self._thread.start()

    async def _on_bar(self, msg: Mapping[str, Any]) -> None:
        self._queue.put(bar_messages_to_batch([msg]))

    def get(self, timeout: float | None = None) -> pa.RecordBatch:
        """The next bar batch; raises queue.Empty after `timeout` seconds."""
        return self._queue.get(timeout=timeout)

    def stop(self, join_timeout: float = 10.0) -> None:
        """End the feed now: alpaca-py's own stop() is seen only between 5 s receive timeouts, so the socket is
        closed too (the stream then finds it should not run and returns)."""
        stream = self._stream
        loop = getattr(stream, "_loop", None)  # the stream's loop exists once it has started
        try:
            if loop is not None and loop.is_running():

                async def shutdown() -> None:
                    await stream.stop_ws()
                    await stream.close()

                asyncio.run_coroutine_threadsafe(shutdown(), loop).result(join_timeout)
        finally:
            self._thread.join(join_timeout)

    def __repr__(self) -> str:
        return "LiveBars(credentials=<env>)"
