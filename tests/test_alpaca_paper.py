"""The local Alpaca-compatible paper server, driven only by the real alpaca-py clients (no mocks).

`TradingClient(url_override=...)` submits, replaces, cancels and lists orders and reads positions, account and
clock; `TradingStream` receives the trade updates; `AlpacaMarketData` (StockHistoricalDataClient and
StockDataStream) reads the bars. Expected prices come from SimBroker's documented rules (market: close * (1 +/-
slippage) on submit, open * (1 +/- slippage) when resting; fee = fee_bps * notional), and every test checks the
conservation laws: cash = initial - sum(signed qty * price) - fees, positions = sum of signed fill quantities,
equity = cash + sum(position * last close), every fill has an order. Each fault of the FaultPlan is shown as
the client sees it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, OrderStatus, QueryOrderStatus, TimeInForce
from alpaca.trading.models import TradeUpdate
from alpaca.trading.requests import (
    GetOrdersRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    ReplaceOrderRequest,
    StopLimitOrderRequest,
)
from alpaca.trading.stream import TradingStream

from tradesys.broker.alpaca_paper import FaultPlan, PaperServer
from tradesys.config import BrokerConfig
from tradesys.data.historical import bars_table

KEY, SECRET = "PKPAPERTEST", "paper-secret-0123456789"
FEE_BPS, SLIP_BPS, CAP = 1.0, 2.0, 0.1
CASH = 100_000.0
N_BARS = 12


def _bars() -> pd.DataFrame:
    """Two symbols, one-minute bars stamped at their end; volume 100 -> 10 shares of liquidity per bar."""
    ts = pd.date_range("2024-01-02 14:31", periods=N_BARS, freq="1min", tz="UTC")
    rows = []
    for i, t in enumerate(ts):
        for sym, base in (("AAPL", 100.0), ("MSFT", 300.0)):
            c = base + i
            rows.append({"ts": t, "symbol": sym, "open": c - 0.5, "high": c + 1.0, "low": c - 1.0, "close": c,
                         "volume": 100.0})
    return pd.DataFrame(rows)


BARS = _bars()


def close(sym: str, step: int) -> float:
    """The close of `sym` at replay step `step` (1-based)."""
    return float(BARS[BARS.symbol == sym]["close"].iloc[step - 1])


def open_(sym: str, step: int) -> float:
    return float(BARS[BARS.symbol == sym]["open"].iloc[step - 1])


class Recorder:
    """A real TradingStream on its own thread, keeping every parsed TradeUpdate."""

    def __init__(self, url: str) -> None:
        self.updates: list[TradeUpdate] = []
        self.stream = TradingStream(KEY, SECRET, url_override=url)
        self.stream.subscribe_trade_updates(self._on)
        self.thread = threading.Thread(target=self.stream.run, daemon=True)
        self.thread.start()

    async def _on(self, u: TradeUpdate) -> None:
        self.updates.append(u)

    def wait(self, pred: Callable[[list[TradeUpdate]], bool], timeout: float = 10.0) -> list[TradeUpdate]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred(self.updates):
                return list(self.updates)
            time.sleep(0.02)
        seen = [(u.event, u.order.client_order_id) for u in self.updates]
        raise AssertionError(f"stream condition not met; got {seen}")

    def events(self, cid: str) -> list[str]:
        return [str(u.event.value if hasattr(u.event, "value") else u.event) for u in self.updates
                if u.order.client_order_id == cid]

    def stop(self) -> None:
        if self.stream._loop is not None:
            self.stream.stop()


def _wait(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


class Env:
    def __init__(self, server: PaperServer, client: TradingClient, rec: Recorder) -> None:
        self.server, self.client, self.rec = server, client, rec


@pytest.fixture()
def env() -> Iterator[Env]:
    broker = BrokerConfig(fee_bps=FEE_BPS, slippage_bps=SLIP_BPS, participation_cap=CAP)
    server = PaperServer(bars_table(BARS), key=KEY, secret=SECRET, broker=broker, initial_cash=CASH)
    url = server.start()
    client = TradingClient(KEY, SECRET, paper=True, url_override=url)
    client._retry_wait = 0.05  # alpaca-py's 429 back-off (3 s by default; its constructor does not expose it)
    rec = Recorder(server.stream_url)
    _wait(lambda: server.stream_clients("trade") == 1)
    yield Env(server, client, rec)
    rec.stop()
    server.stop()
    rec.thread.join(10)


def market(sym: str, qty: float, side: OrderSide, cid: str, tif: TimeInForce = TimeInForce.GTC) -> MarketOrderRequest:
    return MarketOrderRequest(symbol=sym, qty=qty, side=side, time_in_force=tif, client_order_id=cid)


def limit(sym: str, qty: float, side: OrderSide, px: float, cid: str,
          tif: TimeInForce = TimeInForce.GTC) -> LimitOrderRequest:
    return LimitOrderRequest(symbol=sym, qty=qty, side=side, limit_price=px, time_in_force=tif, client_order_id=cid)


def assert_books_conserve(server: PaperServer, client: TradingClient) -> None:
    """cash, positions and equity from the fills alone, against the server's account and positions."""
    fills = server.fills()
    orders = {o["client_order_id"] for o in server.orders()}
    assert all(f.client_order_id in orders for f in fills)  # every fill has an order
    assert len({f.fill_id for f in fills}) == len(fills)  # no fill booked twice
    cash = CASH - sum(f.signed_qty * f.price + f.fee for f in fills)
    pos: dict[str, float] = {}
    for f in fills:
        pos[f.symbol] = pos.get(f.symbol, 0.0) + f.signed_qty
    pos = {s: q for s, q in pos.items() if abs(q) > 1e-9}
    acct = client.get_account()
    assert float(acct.cash) == pytest.approx(cash, abs=1e-6)
    got = {p.symbol: float(p.qty) for p in client.get_all_positions()}
    assert got == pytest.approx(pos)
    last = server.last_prices()
    assert float(acct.equity) == pytest.approx(cash + sum(q * last[s] for s, q in pos.items()), abs=1e-6)
    assert float(acct.accrued_fees) == pytest.approx(sum(f.fee for f in fills), abs=1e-9)


# ------------------------------------------------------------------------------------------------ REST


def test_orders_rest_lifecycle(env: Env) -> None:
    s, c = env.server, env.client
    assert c.get_clock().is_open
    pre = c.submit_order(market("AAPL", 1, OrderSide.BUY, "pre-bar"))  # no bar yet: SimBroker's NO_MARKET_PRICE
    assert pre.status == OrderStatus.REJECTED
    assert s.step() == 1
    clock = c.get_clock()
    assert clock.timestamp == pd.Timestamp("2024-01-02 14:31", tz="UTC")
    o = c.submit_order(market("AAPL", 5, OrderSide.BUY, "m1"))
    px = close("AAPL", 1) * (1 + SLIP_BPS / 1e4)
    assert o.status == OrderStatus.FILLED and float(o.filled_qty) == 5
    assert float(o.filled_avg_price) == pytest.approx(px, rel=1e-12)
    assert o.client_order_id == "m1" and o.symbol == "AAPL" and o.side == OrderSide.BUY

    with pytest.raises(APIError) as dup:
        c.submit_order(market("AAPL", 5, OrderSide.BUY, "m1"))
    assert dup.value.status_code == 422 and dup.value.message == "client_order_id must be unique"

    lo = c.submit_order(limit("MSFT", 3, OrderSide.BUY, 250.0, "l1"))  # far below the market: rests
    assert lo.status == OrderStatus.NEW
    assert c.get_order_by_id(lo.id).client_order_id == "l1"
    assert c.get_order_by_client_id("l1").id == lo.id
    open_ids = [x.client_order_id for x in c.get_orders(GetOrdersRequest(status=QueryOrderStatus.OPEN))]
    assert open_ids == ["l1"]
    closed = {x.client_order_id for x in c.get_orders(GetOrdersRequest(status=QueryOrderStatus.CLOSED))}
    assert closed == {"pre-bar", "m1"}

    new = c.replace_order_by_id(lo.id, ReplaceOrderRequest(qty=4, limit_price=251.0, client_order_id="l1-r"))
    assert str(new.replaces) == str(lo.id) and float(new.qty) == 4 and float(new.limit_price) == 251.0
    old = c.get_order_by_id(lo.id)
    assert old.status == OrderStatus.REPLACED and str(old.replaced_by) == str(new.id)

    resp = c.cancel_orders()
    assert [str(r.id) for r in resp] == [str(new.id)] and resp[0].status == 200
    assert c.get_order_by_id(new.id).status == OrderStatus.CANCELED
    with pytest.raises(APIError) as gone:
        c.cancel_order_by_id(new.id)
    assert gone.value.status_code == 422

    with pytest.raises(APIError) as unknown:
        c.get_order_by_id("00000000-0000-4000-8000-000000000000")
    assert unknown.value.status_code == 404
    with pytest.raises(APIError) as stop_limit:
        c.submit_order(StopLimitOrderRequest(symbol="AAPL", qty=1, side=OrderSide.BUY, stop_price=1, limit_price=1,
                                             time_in_force=TimeInForce.DAY, client_order_id="sl"))
    assert stop_limit.value.status_code == 422 and "market, limit or stop" in stop_limit.value.message

    pos = c.get_open_position("AAPL")
    assert float(pos.qty) == 5 and float(pos.avg_entry_price) == pytest.approx(px)
    assert float(pos.market_value) == pytest.approx(5 * close("AAPL", 1))
    with pytest.raises(APIError) as nopos:
        c.get_open_position("MSFT")
    assert nopos.value.status_code == 404
    bad = TradingClient(KEY, "wrong", paper=True, url_override=s.base_url)
    with pytest.raises(APIError) as denied:
        bad.get_account()
    assert denied.value.status_code == 401
    assert SECRET not in repr(s)
    assert_books_conserve(s, c)
    closing = c.close_position("AAPL")  # a market day order for the whole position, against bar 1's last 5 shares
    assert closing.side == OrderSide.SELL and closing.status == OrderStatus.FILLED and float(closing.filled_qty) == 5
    assert float(closing.filled_avg_price) == pytest.approx(close("AAPL", 1) * (1 - SLIP_BPS / 1e4))
    assert c.get_all_positions() == []
    assert_books_conserve(s, c)


def test_orders_page_by_time_within_one_bar(env: Env) -> None:
    """Creation times are market time but strictly increasing, so `until` pages through one bar's orders."""
    s, c = env.server, env.client
    s.step()
    for i in range(7):
        c.submit_order(limit("AAPL", 1, OrderSide.BUY, 1.0, f"o{i}"))
    seen: list[str] = []
    until = None
    while page := c.get_orders(GetOrdersRequest(status=QueryOrderStatus.OPEN, limit=3, until=until)):
        seen += [o.client_order_id for o in page]
        until = page[-1].submitted_at
    assert seen == [f"o{i}" for i in reversed(range(7))]
    first = c.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, direction="asc", limit=1))
    assert [o.client_order_id for o in first] == ["o0"]


def test_stream_updates_partial_fills_and_conservation(env: Env) -> None:
    s, c, rec = env.server, env.client, env.rec
    s.step()
    # 25 shares against 10 of liquidity per bar: 10 now (at the close), then 10 and 5 at the next opens
    big = c.submit_order(market("AAPL", 25, OrderSide.BUY, "big"))
    assert big.status == OrderStatus.PARTIALLY_FILLED and float(big.filled_qty) == 10
    c.submit_order(limit("MSFT", 2, OrderSide.BUY, 200.0, "day", tif=TimeInForce.DAY))
    s.step(2)
    rec.wait(lambda us: len(rec.events("big")) == 4 and "expired" in rec.events("day"))
    assert rec.events("big") == ["new", "partial_fill", "partial_fill", "fill"]
    assert rec.events("day") == ["new", "expired"]
    fills = [u for u in rec.updates if u.order.client_order_id == "big" and u.price is not None]
    expected = [(10, close("AAPL", 1)), (10, open_("AAPL", 2)), (5, open_("AAPL", 3))]
    for u, (q, ref) in zip(fills, expected, strict=True):
        assert u.qty == q and u.price == pytest.approx(ref * (1 + SLIP_BPS / 1e4))
    assert [u.position_qty for u in fills] == [10, 20, 25]
    assert len({u.execution_id for u in fills}) == 3
    assert fills[-1].order.status == OrderStatus.FILLED and float(fills[-1].order.filled_qty) == 25
    # stream timestamps are market time: the bar at which each fill happened
    assert [u.timestamp for u in fills] == list(pd.date_range("2024-01-02 14:31", periods=3, freq="1min", tz="UTC"))

    sell = c.submit_order(market("AAPL", 4, OrderSide.SELL, "sell"))  # 5 of bar 3's 10 shares are left
    assert float(sell.filled_avg_price) == pytest.approx(close("AAPL", 3) * (1 - SLIP_BPS / 1e4))
    rec.wait(lambda us: "fill" in rec.events("sell"))
    fees = sum(f.fee for f in s.fills())
    notional = sum(f.qty * f.price for f in s.fills())
    assert fees == pytest.approx(FEE_BPS / 1e4 * notional)
    # the stream alone rebuilds the books
    cash = CASH - sum(((1 if u.order.side == OrderSide.BUY else -1) + FEE_BPS / 1e4) * u.qty * u.price
                      for u in rec.updates if u.price is not None)  # a fee on buys and sells alike
    assert float(c.get_account().cash) == pytest.approx(cash, abs=1e-6)
    assert_books_conserve(s, c)


def test_market_data_rest_and_stream(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    from tradesys.data.alpaca import AlpacaMarketData

    monkeypatch.setenv("APCA_API_KEY_ID", KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
    s = env.server
    s.step(3)
    md = AlpacaMarketData(url_override=s.base_url, stream_url=s.data_stream_url)
    got = md.bars(["MSFT", "AAPL"], start="2024-01-02T14:00:00Z", timeframe="1Min").to_pandas()
    want = BARS.iloc[: 3 * 2].reset_index(drop=True)  # only the bars replayed so far: no look-ahead
    assert got["ts"].tolist() == want["ts"].tolist() and got["symbol"].tolist() == want["symbol"].tolist()
    np.testing.assert_array_equal(got[["open", "high", "low", "close", "volume"]].to_numpy(),
                                  want[["open", "high", "low", "close", "volume"]].to_numpy())
    with pytest.raises(APIError) as tf:
        md.bars(["AAPL"], start="2024-01-02", timeframe="1Day")
    assert "1Min" in str(tf.value)

    live = md.live_bars(["MSFT"])
    try:
        _wait(lambda: s.stream_clients("data") == 1)
        s.step()
        batch = live.get(timeout=10)
    finally:
        live.stop()
    assert batch.column("symbol").to_pylist() == ["MSFT"]  # only the subscribed symbol
    assert batch.column("close").to_pylist() == [close("MSFT", 4)]
    assert batch.column("ts").to_pylist() == [pd.Timestamp("2024-01-02 14:34", tz="UTC")]


# ------------------------------------------------------------------------------------------------ faults


def test_fault_dropped_ack_then_retry_is_refused_and_order_found(env: Env) -> None:
    s, c = env.server, env.client
    s.step()
    s.set_faults(drop_ack=1)
    with pytest.raises(requests.exceptions.ConnectionError):
        c.submit_order(market("AAPL", 4, OrderSide.BUY, "ack"))
    # the order exists and traded although the client never heard of it; its retry is refused, not doubled
    with pytest.raises(APIError) as retry:
        c.submit_order(market("AAPL", 4, OrderSide.BUY, "ack"))
    assert retry.value.status_code == 422 and retry.value.message == "client_order_id must be unique"
    found = c.get_order_by_client_id("ack")
    assert found.status == OrderStatus.FILLED and float(found.filled_qty) == 4
    env.rec.wait(lambda us: "fill" in env.rec.events("ack"))
    assert [o["client_order_id"] for o in s.orders()] == ["ack"] and len(s.fills()) == 1
    assert s.stats["dropped_acks"] == 1 and s.faults.drop_ack == 0
    assert c.submit_order(market("AAPL", 1, OrderSide.BUY, "after")).status == OrderStatus.FILLED  # one-shot
    assert_books_conserve(s, c)


def test_fault_rate_limit_burst(env: Env) -> None:
    s, c = env.server, env.client
    s.step()
    s.set_faults(rate_limit=2, retry_after_s=3)
    r = requests.get(s.base_url + "/v2/account", headers={"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET},
                     timeout=5)
    assert r.status_code == 429 and r.headers["Retry-After"] == "3"
    # alpaca-py retries a 429 up to 3 times: one 429 left, then the POST goes through, once
    o = c.submit_order(market("AAPL", 2, OrderSide.BUY, "rl"))
    assert o.status == OrderStatus.FILLED and s.stats["rate_limited"] == 2
    s.set_faults(rate_limit=4)  # more than the client's retries: the 429 reaches the caller
    with pytest.raises(APIError) as exhausted:
        c.submit_order(market("AAPL", 2, OrderSide.BUY, "rl2"))
    assert exhausted.value.status_code == 429
    assert [x["client_order_id"] for x in s.orders()] == ["rl"]  # a 429 creates nothing
    assert s.stats["rate_limited"] == 6
    assert_books_conserve(s, c)


def test_fault_duplicate_fill_message(env: Env) -> None:
    s, c, rec = env.server, env.client, env.rec
    s.step()
    s.set_faults(duplicate_fill=1)
    c.submit_order(market("MSFT", 3, OrderSide.BUY, "dupe"))
    c.submit_order(market("MSFT", 1, OrderSide.BUY, "once"))
    rec.wait(lambda us: "fill" in rec.events("once"))
    assert rec.events("dupe") == ["new", "fill", "fill"] and rec.events("once") == ["new", "fill"]
    a, b = [u for u in rec.updates if u.order.client_order_id == "dupe" and u.price is not None]
    assert a.execution_id == b.execution_id and a.qty == b.qty == 3  # same execution twice
    assert len(s.fills()) == 2 and s.positions() == {"MSFT": 4.0}  # the venue booked it once
    booked: dict[Any, float] = {u.execution_id: u.qty for u in rec.updates if u.price is not None}
    assert sum(booked.values()) == 4  # deduplicated by execution id, the stream agrees with the venue
    assert_books_conserve(s, c)


def test_fault_partial_fill_after_cancel(env: Env) -> None:
    s, c, rec = env.server, env.client, env.rec
    s.step()
    o = c.submit_order(limit("AAPL", 7, OrderSide.BUY, close("AAPL", 1) - 0.5, "race"))  # rests below the market
    rec.wait(lambda us: "new" in rec.events("race"))
    s.set_faults(partial_fill_on_cancel=1)
    assert c.cancel_order_by_id(o.id) is None  # 204, sent before the fill and the cancel go out on the stream
    rec.wait(lambda us: "canceled" in rec.events("race"))
    assert rec.events("race") == ["new", "partial_fill", "canceled"]
    fill = next(u for u in rec.updates if u.order.client_order_id == "race" and u.price is not None)
    assert fill.qty == 3 and fill.price == close("AAPL", 1) - 0.5  # floor(7 * 0.5) at the limit
    final = c.get_order_by_id(o.id)
    assert final.status == OrderStatus.CANCELED and float(final.filled_qty) == 3
    assert s.positions() == {"AAPL": 3.0}
    assert_books_conserve(s, c)


def test_fault_stream_restart_loses_updates(env: Env) -> None:
    s, c, rec = env.server, env.client, env.rec
    s.step()
    o = c.submit_order(limit("AAPL", 2, OrderSide.BUY, close("AAPL", 1) + 1.5, "gap", tif=TimeInForce.GTC))
    assert o.status == OrderStatus.FILLED
    lo = c.submit_order(limit("MSFT", 2, OrderSide.SELL, close("MSFT", 1) + 1.5, "during"))  # fills at next bar
    rec.wait(lambda us: "new" in rec.events("during"))
    s.set_faults(stream_outage_steps=1)
    assert s.stream_clients("trade") == 0 and s.stats["streams_dropped"] == 1
    s.step()  # the resting sell fills while no stream is up; the outage ends with this step
    assert c.get_order_by_id(lo.id).status == OrderStatus.FILLED  # REST knows
    _wait(lambda: s.stream_clients("trade") == 1, timeout=15)  # alpaca-py reconnects by itself
    c.submit_order(market("AAPL", 1, OrderSide.SELL, "later"))
    rec.wait(lambda us: "fill" in rec.events("later"))
    assert rec.events("during") == ["new"]  # its fill was never replayed on the stream
    assert s.stats["updates_lost"] >= 1
    assert_books_conserve(s, c)


# ------------------------------------------------------------------------------------------------ the pure venue


def test_venue_average_cost_positions_and_account_without_a_server() -> None:
    """PaperVenue alone (no HTTP): average-cost positions by hand, flips, and equity = cash + qty x last close."""
    from tradesys.broker.alpaca_paper import PaperVenue

    v = PaperVenue(bars_table(BARS), BrokerConfig(fee_bps=0.0, slippage_bps=0.0, participation_cap=1.0), CASH)

    def order(side: str, qty: float, cid: str) -> None:
        po, _ = v.submit({"symbol": "AAPL", "side": side, "qty": qty, "type": "market", "time_in_force": "day",
                          "client_order_id": cid})
        assert po.status == "filled"

    v.step()
    order("buy", 10, "a")
    v.step()
    order("buy", 10, "b")
    c1, c2 = close("AAPL", 1), close("AAPL", 2)
    pos = v.position_json("AAPL")
    assert float(pos["qty"]) == 20 and float(pos["avg_entry_price"]) == pytest.approx((c1 + c2) / 2)
    order("sell", 5, "c")  # reducing keeps the average cost
    assert float(v.position_json("AAPL")["avg_entry_price"]) == pytest.approx((c1 + c2) / 2)
    order("sell", 20, "d")  # through zero: a short of 5 at the fill price
    pos = v.position_json("AAPL")
    assert pos["side"] == "short" and float(pos["qty"]) == -5 and float(pos["avg_entry_price"]) == c2
    v.step()
    c3 = close("AAPL", 3)
    pos = v.position_json("AAPL")
    assert float(pos["unrealized_pl"]) == pytest.approx(-5 * (c3 - c2))
    assert float(pos["unrealized_intraday_pl"]) == pytest.approx(-5 * (c3 - c2))
    cash = CASH - 10 * c1 - 10 * c2 + 5 * c2 + 20 * c2
    acct = v.account_json()
    assert float(acct["cash"]) == pytest.approx(cash)
    assert float(acct["equity"]) == pytest.approx(cash - 5 * c3) and float(acct["short_market_value"]) == -5 * c3
    order("buy", 5, "e")
    assert v.positions_json() == []


# ------------------------------------------------------------------------------------------------ admin and CLI


def test_admin_routes_pacing_and_fault_validation() -> None:
    server = PaperServer(bars_table(BARS), key=KEY, secret=SECRET, bars_per_second=50.0,
                         faults=FaultPlan(rate_limit=0))
    url = server.start()
    hdr = {"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}
    try:
        _wait(lambda: server.venue.steps >= 3, timeout=5)  # paced: the clock moves by itself
        r = requests.post(url + "/admin/step", json={"n": 100}, headers=hdr, timeout=5)
        assert r.status_code == 200 and r.json()["exhausted"] is True
        assert server.venue.steps == N_BARS and r.json()["clock"].startswith("2024-01-02T14:42:00")
        assert requests.post(url + "/admin/step", json={"n": 1}, timeout=5).status_code == 401
        bad = requests.post(url + "/admin/faults", json={"rate_limt": 3}, headers=hdr, timeout=5)
        assert bad.status_code == 422 and "faults.rate_limt" in bad.json()["message"]
        ok = requests.post(url + "/admin/faults", json={"drop_ack": 2}, headers=hdr, timeout=5)
        assert ok.json()["drop_ack"] == 2 and server.faults.drop_ack == 2
        with pytest.raises(ValueError, match=r"faults\.duplicate_fill"):
            server.set_faults(duplicate_fill=-1)
        assert not TradingClient(KEY, SECRET, url_override=url).get_clock().is_open  # replay over
    finally:
        server.stop()
    with pytest.raises(ValueError, match=r"bars_per_second"):
        PaperServer(bars_table(BARS), key=KEY, secret=SECRET, bars_per_second=-1)


def test_cli_paper_server_needs_keys_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from tradesys.cli import app

    monkeypatch.setenv("APCA_API_KEY_ID", KEY)
    monkeypatch.delenv("APCA_API_SECRET_KEY", raising=False)
    r = CliRunner().invoke(app, ["paper-server", "--port", "0"])
    assert r.exit_code == 2
    assert r.stderr.strip() == (
        "config error: APCA_API_SECRET_KEY: not set in the environment (the paper server accepts that key pair)")
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
    live = ["-s", 'data.source="alpaca"', "-s", 'data.symbols=["AAPL"]']
    r = CliRunner().invoke(app, ["paper-server", "--port", "0", *live])
    assert r.exit_code == 2 and r.stderr.startswith("config error: data.source")  # it replays stored data only


def test_cli_paper_server_on_configured_source() -> None:
    env = dict(os.environ, APCA_API_KEY_ID=KEY, APCA_API_SECRET_KEY=SECRET)
    cmd = [str(Path(sys.executable).with_name("tradesys")), "paper-server", "--port", "0", "--bars-per-second", "0",
           "-s", 'data.symbols=["AAPL","JPM"]', "-s", "data.start=2020-01-01", "-s", "data.end=2020-03-01",
           "-s", "initial_cash=5000"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.split(" on ")[1].split(" ")[0]
        client = TradingClient(KEY, SECRET, url_override=url)
        assert float(client.get_account().cash) == 5000
        requests.post(url + "/admin/step", json={"n": 1},
                      headers={"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}, timeout=5)
        assert client.get_clock().timestamp.date().isoformat() == "2020-01-02"  # the first sp500 session of 2020
        o = client.submit_order(market("JPM", 1, OrderSide.BUY, "cli"))
        assert o.status == OrderStatus.FILLED
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(15)
    assert proc.returncode == 0
