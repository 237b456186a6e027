"""Execution algorithms under square-root market impact (issue 13): implementation shortfall of TWAP, VWAP, POV and
Almgren-Chriss against a single market order, for parent sizes of 1%, 5% and 20% of average daily volume.

Data: the synthetic intraday tick data (`tradesys.data.ticks.SyntheticTicks`, one symbol, seeded), aggregated to
5-minute bars (OHLC of the trade prices, volume = traded shares, stamped at the bar's end) and, per bar, the last
quote of the bar's interval. For each seed: `--history` sessions warm the venue up (its square-root impact
calibration, ADV and daily volatility, comes from the bars it has seen), then each of `--days` trading sessions
gets one parent per algorithm and size, alternately a buy and a sell, decided at the session's first bar.

Venue: `SimBroker` with `broker.impact = "sqrt"` (default coefficients eta = 0.142, gamma = 0.314), no fee,
participation cap 1.0 (a fill may take a whole bar's volume), quotes from the tick data. Children go as IOC market
orders, so each fills at once against the bar's quote, at the ask or bid plus the temporary impact of its size
(what the bar's volume cannot fill is cancelled and the algorithm sends it again at a later slice); every fill
shifts the symbol's later prices by its permanent impact. Each parent runs on its own copy of the warmed venue:
the algorithms never see each other's impact.

Parents (the algorithms from `tradesys.execution.algos.registry.make_algo`; their window is the session, from the
first bar to the last; every algorithm gets a slice point at every bar):
    market  one child for everything at the first bar (no window: a lost remainder is sent again each bar);
    twap    one slice per bar, no jitter;
    vwap    the volume curve fitted (`VolumeCurve.fit`, median) on the warm-up sessions;
    pov     rate = 1.25 x the size's fraction of ADV (completes by the end of the window);
    is      Almgren-Chriss with one slice per bar, risk aversion 1e-6 per $ (the paper's example), sigma =
            arrival x daily volatility, gamma = arrival x gamma x sigma / ADV, and eta the square-root model's
            temporary cost linearised at the TWAP child size (eta_AC = arrival x eta x sigma x sqrt(n0/ADV) x tau
            / n0, n0 = X / N, tau = 1 / N day).

Implementation shortfall, bps of the arrival price (the quote's mid at the decision bar), positive = cost:
side x (average fill price - arrival) / arrival on the filled part, plus side x (last mid - arrival) / arrival on
any unfilled part (opportunity cost); the first table shows its median over every (seed, day) and, in brackets,
the median absolute deviation. Over a session the price's own moves (timing) dominate it, so the second table
shows the part the venue charged: each fill against the data's mid at its bar (unshifted by impact), i.e. spread,
temporary and permanent impact; mean and standard error.

    .venv/bin/python benchmarks/execution_algos.py [--quick] [--seeds 8] [--days 3] [--history 10]
        [--sizes 0.01,0.05,0.2] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from tradesys.broker.sim import SimBroker
from tradesys.config import BrokerConfig
from tradesys.core.orders import EventKind, Order, OrderEvent, Side, TimeInForce
from tradesys.core.schemas import BAR_SCHEMA, QUOTE_SCHEMA
from tradesys.data.synthetic import SESSION_SECONDS
from tradesys.data.ticks import SyntheticTicks
from tradesys.execution.algos.base import ExecutionAlgo, MarketSlice, ParentOrder, ParentProgress
from tradesys.execution.algos.registry import make_algo
from tradesys.execution.algos.vwap import VolumeCurve

SYMBOL = "ALPHA"
BAR_SECONDS = 300
NS = 10**9
ALGOS = ("market", "twap", "vwap", "pov", "is")
RISK_AVERSION = 1e-6


@dataclass
class Session:
    """One session's bars (one-row batches) and, per bar, the last quote of its interval (or None)."""

    bars: list[pa.RecordBatch]
    quotes: list[pa.RecordBatch | None]


def sessions_from_ticks(seed: int, days: int) -> list[Session]:
    """The tick data of `days` sessions aggregated to BAR_SECONDS bars and each bar's last quote."""
    ticks = SyntheticTicks((SYMBOL,), days=days, seed=seed)
    tr, qu = ticks.trades(), ticks.quotes()
    t_ts = tr["ts"].cast(pa.int64()).to_numpy()
    price, size = tr["price"].to_numpy(), tr["size"].to_numpy()
    q_ts = qu["ts"].cast(pa.int64()).to_numpy()
    bid, ask = qu["bid"].to_numpy(), qu["ask"].to_numpy()
    step = BAR_SECONDS * NS
    out = []
    for day in ticks.params.sessions():
        from datetime import UTC, datetime

        from tradesys.data.synthetic import SESSION_OPEN_UTC

        open_ns = int(datetime.combine(day, SESSION_OPEN_UTC, tzinfo=UTC).timestamp()) * NS
        edges = open_ns + np.arange(0, SESSION_SECONDS * NS + 1, step, dtype=np.int64)
        ti = np.searchsorted(t_ts, edges)
        qi = np.searchsorted(q_ts, edges)
        s = Session([], [])
        for k in range(len(edges) - 1):
            a, b = ti[k], ti[k + 1]
            if b <= a:
                continue  # no trade in the interval: no bar
            p = price[a:b]
            s.bars.append(pa.RecordBatch.from_pydict(
                {"ts": pa.array([int(edges[k + 1])], pa.timestamp("ns", tz="UTC")), "symbol": [SYMBOL],
                 "open": [float(p[0])], "high": [float(p.max())], "low": [float(p.min())], "close": [float(p[-1])],
                 "volume": [float(size[a:b].sum())]}, schema=BAR_SCHEMA))
            j = qi[k + 1] - 1
            s.quotes.append(pa.RecordBatch.from_pydict(
                {"ts": pa.array([int(q_ts[j])], pa.timestamp("ns", tz="UTC")), "symbol": [SYMBOL],
                 "bid": [float(bid[j])], "ask": [float(ask[j])], "bid_size": [100.0], "ask_size": [100.0]},
                schema=QUOTE_SCHEMA) if j >= 0 and q_ts[j] >= edges[k] else None)
        out.append(s)
    return out


def feed(venue: SimBroker, session: Session, k: int) -> list[OrderEvent]:
    """Bar k of the session into the venue: its quote first (it lies in the bar's interval), then the bar."""
    q = session.quotes[k]
    if q is not None:
        venue.on_quotes(q)
    return venue.on_bars(session.bars[k])


def bar_ts(b: pa.RecordBatch) -> int:
    return int(b.column("ts").cast(pa.int64())[0].as_py())


def make_parent_algo(name: str, qty: float, fraction: float, arrival: float, adv: float, sigma_d: float,
                     slices: int, curve: VolumeCurve, broker: BrokerConfig) -> ExecutionAlgo:
    if name == "twap":
        return make_algo("twap", {"slices": slices})
    if name == "vwap":
        return make_algo("vwap", {"curve": curve.to_json()})
    if name == "pov":
        return make_algo("pov", {"rate": min(1.0, 1.25 * fraction)})
    if name == "is":
        tau = 1.0 / slices
        n0 = qty / slices
        eta = arrival * broker.impact_eta * sigma_d * math.sqrt(n0 / adv) * tau / n0
        return make_algo("is", {"risk_aversion": RISK_AVERSION, "sigma": arrival * sigma_d, "slices": slices,
                                "eta": eta, "gamma": arrival * broker.impact_gamma * sigma_d / adv})
    return make_algo(name, {})


def warm_venue(history: list[Session], day: Session, broker: BrokerConfig) -> SimBroker:
    """A venue that has seen the warm-up sessions and the trading session's first bar (the decision bar)."""
    venue = SimBroker(broker, wall_clock=lambda: 0)
    for s in history:
        for k in range(len(s.bars)):
            feed(venue, s, k)
    feed(venue, day, 0)
    return venue


def mid_of(session: Session, k: int) -> float:
    q = session.quotes[k]
    if q is None:
        return float(session.bars[k].column("close")[0].as_py())
    return 0.5 * (float(q.column("bid")[0].as_py()) + float(q.column("ask")[0].as_py()))


def run_parent(warm: SimBroker, day: Session, algo_name: str, fraction: float, side: Side,
               broker: BrokerConfig, curve: VolumeCurve) -> dict[str, float]:
    """Work one parent through `day` on a copy of the warmed venue: shortfall in bps, its execution-cost part
    (fills against the data's mid at their bar: spread and impact) and the fill ratio."""
    venue = copy.deepcopy(warm)
    p = venue.impact_params(SYMBOL)
    quote = venue.quote(SYMBOL)
    assert p is not None and quote is not None, "the warm-up must calibrate the venue and quote the first bar"
    arrival = 0.5 * (quote[0] + quote[1])
    half_spread = 0.5 * (quote[1] - quote[0]) / arrival
    qty = float(round(fraction * p.adv))
    start, end = bar_ts(day.bars[0]), bar_ts(day.bars[-1])
    windowed = algo_name != "market"
    parent = ParentOrder(f"p-{algo_name}", SYMBOL, side, qty, algo_name, start, end if windowed else start)
    algo = make_parent_algo(algo_name, qty, fraction, arrival, p.adv, p.sigma_daily, len(day.bars) - 1, curve,
                            broker)
    prog = ParentProgress()
    working: set[str] = set()
    sign = 1.0 if side is Side.BUY else -1.0

    against_mid = 0.0  # sum of qty * (fill price - the data's mid at the fill's bar)

    def book(events: list[OrderEvent], mid: float) -> None:
        nonlocal against_mid
        for e in events:
            if e.fill is not None and e.client_order_id.startswith(parent.parent_id + "."):
                prog.filled_qty += e.fill.qty
                prog.notional += e.fill.qty * e.fill.price
                against_mid += e.fill.qty * (e.fill.price - mid)

    for k in range(len(day.bars)):
        if k > 0:  # resting children fill at the bar's open: against the mid before it
            book(feed(venue, day, k), mid_of(day, k - 1))
        mid = mid_of(day, k)
        b = day.bars[k]
        vol = float(b.column("volume")[0].as_py())
        prog.market_volume += vol
        prog.slices += 1
        for cid in list(working):
            st = venue.order_state(cid)
            if st is None or st.status.is_terminal:
                working.discard(cid)
        prog.working_qty = sum(venue.order_state(c).order.qty - venue.order_state(c).filled_qty  # type: ignore[union-attr]
                               for c in working)
        q = venue.quote(SYMBOL)
        ms = MarketSlice(bar_ts(b), float(b.column("close")[0].as_py()), vol, q[0] if q else None,
                         q[1] if q else None)
        if algo.done(parent, prog, ms) and (windowed or prog.filled_qty >= qty - 1e-9):
            break
        for spec in algo.children(parent, prog, ms):
            prog.children += 1
            cid = parent.child_id(prog.children)
            o = Order(cid, SYMBOL, side, spec.qty, spec.type, TimeInForce.IOC, limit_price=spec.limit_price,
                      ts_ns=ms.ts_ns)
            ev = venue.submit([o])
            assert not any(e.kind is EventKind.REJECTED for e in ev), ev
            book(ev, mid)
            working.add(cid)
    last_q = venue.quote(SYMBOL)
    last_mid = 0.5 * (last_q[0] + last_q[1]) if last_q else float(day.bars[-1].column("close")[0].as_py())
    filled = prog.filled_qty
    is_filled = sign * (prog.notional / filled - arrival) / arrival * filled / qty if filled > 0 else 0.0
    is_open = sign * (last_mid - arrival) / arrival * (qty - filled) / qty
    cost = sign * against_mid / arrival / qty
    return {"is_bps": 1e4 * (is_filled + is_open), "cost_bps": 1e4 * cost, "filled": filled / qty, "qty": qty,
            "adv": p.adv, "sigma_daily": p.sigma_daily, "children": float(prog.children), "half_spread": half_spread}


def mad(xs: list[float]) -> float:
    m = statistics.median(xs)
    return statistics.median([abs(x - m) for x in xs])


def table(runs: list[dict[str, Any]], sizes: list[float], key: str, title: str, *, median: bool) -> None:
    print(title)
    print(f"{'algo':8}" + "".join(f"{f'{s:.0%} ADV':>24}" for s in sizes))
    for name in ALGOS:
        cells = []
        for s in sizes:
            rs = [r for r in runs if r["algo"] == name and r["size"] == s]
            xs = [r[key] for r in rs]
            if median:
                mid, spread = statistics.median(xs), mad(xs)
            else:
                mid = statistics.mean(xs)
                spread = statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else 0.0
            fill = statistics.mean(r["filled"] for r in rs)
            note = "" if fill > 1 - 1e-9 else f" {fill:.2%}f"
            cells.append(f"{mid:9.2f} [{spread:6.2f}]{note}")
        print(f"{name:8}" + "".join(f"{c:>24}" for c in cells))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="execution algorithms' implementation shortfall under sqrt impact")
    ap.add_argument("--quick", action="store_true", help="one seed, one day, 3 warm-up sessions: a smoke run")
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--days", type=int, default=3, help="trading sessions per seed")
    ap.add_argument("--history", type=int, default=10, help="warm-up sessions before the first trading one")
    ap.add_argument("--sizes", default="0.01,0.05,0.2", help="parent sizes as fractions of ADV")
    ap.add_argument("--json", default=None, help="also write the per-run results as JSON here")
    a = ap.parse_args(argv)
    seeds, days, hist = (1, 1, 3) if a.quick else (a.seeds, a.days, a.history)
    sizes = [float(x) for x in a.sizes.split(",")]
    broker = BrokerConfig(impact="sqrt", fee_bps=0.0, fee_min=0.0, slippage_bps=0.0, participation_cap=1.0)
    t0 = time.perf_counter()
    runs: list[dict[str, Any]] = []
    for seed in range(1, seeds + 1):
        sessions = sessions_from_ticks(seed, hist + days)
        for d in range(days):
            history, day = sessions[d: d + hist], sessions[d + hist]
            curve = VolumeCurve.fit([b for s in history for b in s.bars], symbol=SYMBOL, sessions=hist)
            side = Side.BUY if (seed + d) % 2 else Side.SELL
            warm = warm_venue(history, day, broker)
            for frac in sizes:
                for name in ALGOS:
                    r = run_parent(warm, day, name, frac, side, broker, curve)
                    runs.append({"seed": seed, "day": d, "algo": name, "size": frac, "side": side.value, **r})
    took = time.perf_counter() - t0
    print(f"{len(runs)} parents: {seeds} seeds x {days} days x {len(sizes)} sizes x {len(ALGOS)} algorithms; sqrt "
          f"impact eta={broker.impact_eta} gamma={broker.impact_gamma}, 5-minute bars and quotes from SyntheticTicks, "
          "no fees; bps of the arrival mid, + = cost")
    table(runs, sizes, "is_bps", "Implementation shortfall: median [median absolute deviation]", median=True)
    table(runs, sizes, "cost_bps", "Its execution cost (fills against the data's mid at their bar: spread + "
          "temporary + permanent impact): mean [standard error]", median=False)
    adv = statistics.median(r["adv"] for r in runs)
    sig = statistics.median(r["sigma_daily"] for r in runs)
    print(f"calibration (median over runs): ADV {adv:,.0f} shares, daily volatility {sig:.4%}; "
          f"{len(runs)} parents in {took:.1f} s")
    print("(a cell's 'NN%f' marks a mean fill ratio under 100%: the rest is charged at the last mid)")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(runs, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
