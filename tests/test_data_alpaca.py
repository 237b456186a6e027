"""The Alpaca adapter against a local fake exchange speaking Alpaca's documented wire formats.

No mocks: the real alpaca-py clients talk HTTP to a local server (`/v2/stocks/bars|trades|quotes`, JSON bodies
`{"bars"|"trades"|"quotes": {symbol: [...]}, "next_page_token": ...}` as in Alpaca's market data API reference,
paged two records at a time) and msgpack over a real websocket for live bars (connected -> auth ->
subscription -> bar messages with msgpack timestamps, as in Alpaca's real-time stock data docs). The server
checks the auth headers, so the credentials must reach it, and the test checks they appear in no log or repr.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlparse

import msgpack
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tests.conftest import free_port
from tradesys.core.schemas import BAR_SCHEMA, QUOTE_SCHEMA, TRADE_SCHEMA
from tradesys.data.alpaca import AlpacaMarketData, bar_messages_to_batch, parse_timeframe

KEY, SECRET = "PKTESTKEY123", "s3cr3t-do-not-log-0123456789"

BARS = {
    "AAPL": [
        {
            "t": "2024-01-02T14:30:00Z",
            "o": 187.15,
            "h": 188.44,
            "l": 186.9,
            "c": 188.1,
            "v": 1000,
            "n": 50,
            "vw": 187.6,
        },
        {"t": "2024-01-02T14:31:00Z", "o": 188.1, "h": 188.2, "l": 187.5, "c": 187.7, "v": 800, "n": 40, "vw": 187.9},
        {"t": "2024-01-02T14:32:00Z", "o": 187.7, "h": 187.9, "l": 187.0, "c": 187.2, "v": 600, "n": 30, "vw": 187.4},
    ],
    "MSFT": [
        {"t": "2024-01-02T14:30:00Z", "o": 373.86, "h": 375.9, "l": 373.5, "c": 375.0, "v": 900, "n": 45, "vw": 374.7},
        {"t": "2024-01-02T14:31:00Z", "o": 375.0, "h": 375.2, "l": 374.1, "c": 374.3, "v": 700, "n": 35, "vw": 374.6},
    ],
}
TRADES = {
    "AAPL": [
        {"t": "2024-01-02T14:30:00.123456789Z", "x": "V", "p": 187.15, "s": 100, "c": ["@"], "i": 1, "z": "C"},
        {"t": "2024-01-02T14:30:01.5Z", "x": "V", "p": 187.2, "s": 50, "c": ["@", "I"], "i": 2, "z": "C"},
        {"t": "2024-01-02T14:30:02Z", "x": "V", "p": 187.1, "s": 300, "c": ["@"], "i": 3, "z": "C"},
    ],
    "MSFT": [{"t": "2024-01-02T14:30:00.5Z", "x": "V", "p": 373.9, "s": 10, "c": ["@"], "i": 9, "z": "C"}],
}
QUOTES = {
    "AAPL": [
        {
            "t": "2024-01-02T14:30:00.1Z",
            "ax": "V",
            "ap": 187.2,
            "as": 3,
            "bx": "V",
            "bp": 187.1,
            "bs": 2,
            "c": ["R"],
            "z": "C",
        },
        {
            "t": "2024-01-02T14:30:00.2Z",
            "ax": "V",
            "ap": 187.25,
            "as": 1,
            "bx": "V",
            "bp": 187.1,
            "bs": 5,
            "c": ["R"],
            "z": "C",
        },
    ],
    "MSFT": [
        {
            "t": "2024-01-02T14:30:00.3Z",
            "ax": "V",
            "ap": 374.0,
            "as": 2,
            "bx": "V",
            "bp": 373.8,
            "bs": 4,
            "c": ["R"],
            "z": "C",
        },
    ],
}
DATA = {"bars": BARS, "trades": TRADES, "quotes": QUOTES}
PAGE = 2


class FakeAlpaca(BaseHTTPRequestHandler):
    requests: ClassVar[list[dict[str, Any]]] = []

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def _send(self, code: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        FakeAlpaca.requests.append({"path": url.path, **q})
        if self.headers.get("APCA-API-KEY-ID") != KEY or self.headers.get("APCA-API-SECRET-KEY") != SECRET:
            self._send(403, {"message": "forbidden"})
            return
        kind = url.path.removeprefix("/v2/stocks/")
        if kind not in DATA:
            self._send(404, {"message": "not found"})
            return
        # Alpaca pages across symbols in symbol order, then time
        rows = [(s, r) for s in sorted(q["symbols"].split(",")) for r in DATA[kind].get(s, [])]
        start = int(q.get("page_token") or 0)
        limit = min(PAGE, int(q.get("limit", PAGE)))
        page = rows[start : start + limit]
        out: dict[str, list[Any]] = {}
        for s, r in page:
            out.setdefault(s, []).append(r)
        nxt = start + limit
        self._send(200, {kind: out, "next_page_token": str(nxt) if nxt < len(rows) else None})


@pytest.fixture(scope="module")
def rest_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), FakeAlpaca)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture()
def creds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APCA_API_KEY_ID", KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)


def _ns(s: str) -> int:
    return pd.Timestamp(s).value


def test_bars_paginated_and_converted(rest_url: str, creds: None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    FakeAlpaca.requests.clear()
    md = AlpacaMarketData(url_override=rest_url)
    t = md.bars(["MSFT", "AAPL"], start="2024-01-02T14:30:00Z", end="2024-01-02T15:00:00Z", timeframe="1Min")
    assert t.schema.equals(BAR_SCHEMA)
    reqs = [r for r in FakeAlpaca.requests if r["path"] == "/v2/stocks/bars"]
    assert len(reqs) == 3  # 5 bars, 2 per page
    assert reqs[0]["timeframe"] == "1Min" and reqs[0]["feed"] == "iex" and reqs[1]["page_token"] == "2"
    # Alpaca stamps bar starts; tradesys stamps bar ends -> +1 minute; rows ordered (ts, symbol)
    df = t.to_pandas()
    assert df["symbol"].tolist() == ["AAPL", "MSFT", "AAPL", "MSFT", "AAPL"]
    assert df["ts"].iloc[0] == pd.Timestamp("2024-01-02T14:31:00Z")
    assert df["ts"].iloc[-1] == pd.Timestamp("2024-01-02T14:33:00Z")
    aapl = df[df.symbol == "AAPL"]
    np.testing.assert_array_equal(aapl["close"], [b["c"] for b in BARS["AAPL"]])
    np.testing.assert_array_equal(aapl["volume"], [b["v"] for b in BARS["AAPL"]])
    np.testing.assert_array_equal(
        aapl[["open", "high", "low"]].to_numpy(), [[b["o"], b["h"], b["l"]] for b in BARS["AAPL"]]
    )
    assert SECRET not in caplog.text and SECRET not in repr(md) and SECRET not in str(md.__dict__.get("url_override"))


def test_daily_bars_stamped_at_us_close(rest_url: str, creds: None) -> None:
    md = AlpacaMarketData(url_override=rest_url)
    old = BARS["AAPL"]
    BARS["AAPL"] = [dict(old[0], t="2024-01-02T05:00:00Z"), dict(old[1], t="2024-07-02T04:00:00Z")]
    try:
        t = md.bars(["AAPL"], start="2024-01-01", timeframe="1Day")
    finally:
        BARS["AAPL"] = old
    assert t.column("ts").to_pylist() == [pd.Timestamp("2024-01-02T21:00Z"), pd.Timestamp("2024-07-02T21:00Z")]


def test_trades_and_quotes(rest_url: str, creds: None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    md = AlpacaMarketData(url_override=rest_url, feed="sip")
    trades = md.trades(["AAPL", "MSFT"], start="2024-01-02T14:30:00Z")
    assert trades.schema.equals(TRADE_SCHEMA) and trades.num_rows == 4
    assert np.asarray(trades["ts"].cast(pa.int64()))[0] == _ns("2024-01-02T14:30:00.123456789Z")  # ns kept
    assert trades["symbol"].to_pylist() == ["AAPL", "MSFT", "AAPL", "AAPL"]
    assert trades["price"].to_pylist() == [187.15, 373.9, 187.2, 187.1]
    assert trades["size"].to_pylist() == [100, 10, 50, 300]
    assert set(trades["aggressor"].to_pylist()) == {0}
    quotes = md.quotes(["AAPL", "MSFT"], start="2024-01-02T14:30:00Z", limit=3)
    assert quotes.schema.equals(QUOTE_SCHEMA)
    got = quotes.to_pandas()
    assert got["bid"].tolist() == [187.1, 187.1, 373.8]
    assert got["ask"].tolist() == [187.2, 187.25, 374.0]
    assert got["bid_size"].tolist() == [2, 5, 4] and got["ask_size"].tolist() == [3, 1, 2]
    assert SECRET not in caplog.text


def test_wrong_or_missing_credentials(rest_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from alpaca.common.exceptions import APIError

    monkeypatch.delenv("APCA_API_KEY_ID", raising=False)
    monkeypatch.delenv("APCA_API_SECRET_KEY", raising=False)
    with pytest.raises(ValueError, match="APCA_API_KEY_ID: not set"):
        AlpacaMarketData(url_override=rest_url)
    monkeypatch.setenv("APCA_API_KEY_ID", KEY)
    with pytest.raises(ValueError, match="APCA_API_SECRET_KEY: not set"):
        AlpacaMarketData(url_override=rest_url)
    monkeypatch.setenv("APCA_API_SECRET_KEY", "wrong")
    with pytest.raises(APIError) as err:
        AlpacaMarketData(url_override=rest_url).trades(["AAPL"], start="2024-01-02")
    assert "wrong" not in str(err.value)
    with pytest.raises(ValueError, match="timeframe"):
        parse_timeframe("1Fortnight")
    with pytest.raises(ValueError, match="feed"):
        AlpacaMarketData(feed="otc")


# ------------------------------------------------------------------------------------------- live websocket


def _live_bar(sym: str, minute: int, close: float) -> dict[str, Any]:
    ts = msgpack.Timestamp.from_unix_nano(_ns(f"2024-01-02T14:{30 + minute:02d}:00Z"))
    return {
        "T": "b",
        "S": sym,
        "o": close - 0.1,
        "h": close + 0.2,
        "l": close - 0.3,
        "c": close,
        "v": 500.0,
        "t": ts,
        "n": 10,
        "vw": close,
    }


class FakeStream:
    """A websocket server on its own thread and loop, speaking Alpaca's msgpack stream protocol."""

    def __init__(self, bars: list[dict[str, Any]]) -> None:
        self.bars = bars
        self.port = free_port()
        self.auth: dict[str, Any] = {}
        self.subscribe: dict[str, Any] = {}
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        from websockets.asyncio.server import serve

        self._stop = asyncio.Event()
        async with serve(self._handler, "127.0.0.1", self.port):
            self._ready.set()
            await self._stop.wait()

    async def _handler(self, ws: Any) -> None:
        await ws.send(msgpack.packb([{"T": "success", "msg": "connected"}]))
        self.auth = msgpack.unpackb(await ws.recv())
        if self.auth.get("key") != KEY or self.auth.get("secret") != SECRET:
            await ws.send(msgpack.packb([{"T": "error", "code": 402, "msg": "auth failed"}]))
            return
        await ws.send(msgpack.packb([{"T": "success", "msg": "authenticated"}]))
        self.subscribe = msgpack.unpackb(await ws.recv())
        await ws.send(
            msgpack.packb([{"T": "subscription", "trades": [], "quotes": [], "bars": self.subscribe["bars"]}])
        )
        # one frame with a bar for each symbol plus an unrelated status message
        await ws.send(msgpack.packb([*self.bars, {"T": "s", "S": "AAPL", "sc": "T", "sm": "Trading"}]))
        await ws.wait_closed()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def test_live_bars_over_local_websocket(creds: None, rest_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    bars = [_live_bar("AAPL", 0, 187.5), _live_bar("MSFT", 0, 374.5)]
    server = FakeStream(bars)
    try:
        md = AlpacaMarketData(url_override=rest_url, stream_url=f"ws://127.0.0.1:{server.port}")
        live = md.live_bars(["AAPL", "MSFT"])
        try:
            got = pa.Table.from_batches([live.get(timeout=15), live.get(timeout=15)]).sort_by("symbol")
        finally:
            live.stop()
    finally:
        server.close()
    assert sorted(server.subscribe["bars"]) == ["AAPL", "MSFT"] and server.auth["action"] == "auth"
    assert got.schema.equals(BAR_SCHEMA)
    assert got["symbol"].to_pylist() == ["AAPL", "MSFT"]
    assert got["close"].to_pylist() == [187.5, 374.5]
    assert got["ts"].to_pylist() == [pd.Timestamp("2024-01-02T14:31Z")] * 2  # bar start + 1 min
    assert SECRET not in caplog.text and SECRET not in repr(live)


def test_bar_message_conversion() -> None:
    msgs = [_live_bar("B", 1, 10.0), {"T": "q", "S": "B"}, _live_bar("A", 1, 20.0), _live_bar("A", 0, 19.0)]
    msgs[2] = dict(msgs[2], t="2024-01-02T14:31:00Z")  # RFC 3339 strings are accepted too
    batch = bar_messages_to_batch(msgs)
    assert batch.schema.equals(BAR_SCHEMA)
    assert batch.column("symbol").to_pylist() == ["A", "A", "B"]
    assert batch.column("close").to_pylist() == [19.0, 20.0, 10.0]
    assert bar_messages_to_batch([{"T": "success"}]).num_rows == 0
