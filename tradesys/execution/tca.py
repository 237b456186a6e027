"""Transaction cost analysis per parent order (pure: no Ray, no I/O).

What a trade cost, measured against what the strategy saw when it decided, split so a desk can tell whether the
money went on waiting, on pushing the price, on the market drifting, on fees, or on not trading at all.

Notation for one parent order (s = +1 for a buy, -1 for a sell; costs are positive when they hurt):

    X        the parent's quantity (what the strategy wanted)
    q_j, p_j quantity and price of fill j; x = sum q_j is the filled quantity, F = sum of the fills' fees
    m_j      the market price at fill j without our trade (the bar price the venue filled against)
    P_d      decision price: the market price when the strategy decided
    P_a      arrival price: the market price when the first child could reach the venue
    P_e      end price: the market price at the end of the parent's execution window
    VWAP     the market's volume-weighted average price over the execution window (sum c_b v_b / sum v_b)

Implementation shortfall against the decision price (Perold 1988): the paper portfolio that trades X at P_d,
minus the real one that trades x at p_j and pays F, both marked at P_e:

    IS_d = s X (P_e - P_d) - [s sum q_j (P_e - p_j) - F]
         = s sum q_j (p_j - P_d) + s (X - x)(P_e - P_d) + F

and its split, which adds up to IS_d exactly (algebraically; in floating point to rounding):

    delay        = s X (P_a - P_d)                  the market moved between decision and arrival
    impact       = s sum q_j (p_j - m_j)            our prices against the market's at each fill
    timing       = s sum q_j (m_j - P_a)            the market drifted while we worked the order
    fees         = F
    opportunity  = s (X - x)(P_e - P_a)             the unfilled rest, marked from arrival to the end

Implementation shortfall against the arrival price is the same without the delay term:

    IS_a = s sum q_j (p_j - P_a) + s (X - x)(P_e - P_a) + F = IS_d - delay

VWAP slippage compares the average fill with the market over the same window: s x (avg - VWAP) in currency,
s (avg - VWAP) / VWAP in bps; undefined (NaN) with no fill or no volume in the window.

Basis points: each cost and IS_d are in bps of the paper notional X P_d (so the parts' bps add up to IS_d's);
IS_a is in bps of X P_a. A report's total is the sum of the parents' currency costs over the sum of their paper
notionals.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tradesys.core.orders import Side

COST_PARTS: tuple[str, ...] = ("delay", "impact", "timing", "fees", "opportunity")
_OPEN = frozenset({"new", "accepted", "partially_filled", "active", "working"})  # a parent still being worked


@dataclass(frozen=True, slots=True)
class TcaFill:
    """One child fill as TCA needs it: `market_price` is m_j, the market's price at the fill without our trade."""

    qty: float
    price: float
    fee: float
    market_price: float
    ts_ns: int = 0


@dataclass(frozen=True, slots=True)
class TcaParent:
    """The benchmarks of one parent order (prices as in the module docstring)."""

    parent_id: str
    symbol: str
    side: Side
    qty: float
    decision_price: float
    arrival_price: float
    end_price: float
    market_vwap: float = math.nan
    algo: str = "market"
    start_ns: int = 0
    end_ns: int = 0
    children: int = 1


@dataclass(frozen=True, slots=True)
class ParentTca:
    """The costs of one parent, in currency and in bps (module docstring); positive = a cost."""

    parent_id: str
    symbol: str
    side: str
    algo: str
    qty: float
    filled_qty: float
    avg_price: float
    decision_price: float
    arrival_price: float
    end_price: float
    market_vwap: float
    start_ns: int
    end_ns: int
    children: int
    fills: int
    paper_notional: float  # X P_d
    delay: float
    impact: float
    timing: float
    fees: float
    opportunity: float
    shortfall_decision: float  # IS_d = the five parts' sum
    shortfall_arrival: float  # IS_a = IS_d - delay
    vwap_slippage: float
    bps: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check(field_name: str, value: float, *, positive: bool = False) -> float:
    v = float(value)
    if not math.isfinite(v) or (positive and v <= 0):
        raise ValueError(f"{field_name}: must be a finite{' positive' if positive else ''} number, got {value!r}")
    return v


def parent_tca(parent: TcaParent, fills: Sequence[TcaFill]) -> ParentTca:
    """The cost split of one parent from its benchmarks and its children's fills (formulas: module docstring)."""
    pid = parent.parent_id
    s = Side(parent.side).sign
    big_x = _check(f"{pid}.qty", parent.qty, positive=True)
    p_d = _check(f"{pid}.decision_price", parent.decision_price, positive=True)
    p_a = _check(f"{pid}.arrival_price", parent.arrival_price, positive=True)
    p_e = _check(f"{pid}.end_price", parent.end_price, positive=True)
    q = np.array([_check(f"{pid}.fill.qty", f.qty, positive=True) for f in fills], dtype=float)
    p = np.array([_check(f"{pid}.fill.price", f.price, positive=True) for f in fills], dtype=float)
    m = np.array([_check(f"{pid}.fill.market_price", f.market_price, positive=True) for f in fills], dtype=float)
    fee = np.array([_check(f"{pid}.fill.fee", f.fee) for f in fills], dtype=float)
    x = float(q.sum())
    unfilled = big_x - x  # negative when over-filled: the excess is marked like a shortfall of the other sign

    delay = s * big_x * (p_a - p_d)
    impact = s * float(np.dot(q, p - m))
    timing = s * float(np.dot(q, m - p_a))
    fees = float(fee.sum())
    opportunity = s * unfilled * (p_e - p_a)
    shortfall_d = delay + impact + timing + fees + opportunity
    shortfall_a = impact + timing + fees + opportunity
    avg = float(np.dot(q, p) / x) if x > 0 else math.nan
    vwap = float(parent.market_vwap)
    vwap_cost = s * x * (avg - vwap) if x > 0 and math.isfinite(vwap) and vwap > 0 else math.nan

    paper = big_x * p_d
    bps = {k: v / paper * 1e4 for k, v in (("delay", delay), ("impact", impact), ("timing", timing),
                                            ("fees", fees), ("opportunity", opportunity),
                                            ("shortfall_decision", shortfall_d))}
    bps["shortfall_arrival"] = shortfall_a / (big_x * p_a) * 1e4
    bps["vwap_slippage"] = s * (avg - vwap) / vwap * 1e4 if math.isfinite(vwap_cost) else math.nan
    return ParentTca(
        parent_id=pid, symbol=parent.symbol, side=Side(parent.side).value, algo=parent.algo, qty=big_x,
        filled_qty=x, avg_price=avg, decision_price=p_d, arrival_price=p_a, end_price=p_e, market_vwap=vwap,
        start_ns=int(parent.start_ns), end_ns=int(parent.end_ns), children=int(parent.children), fills=len(fills),
        paper_notional=paper, delay=delay, impact=impact, timing=timing, fees=fees, opportunity=opportunity,
        shortfall_decision=shortfall_d, shortfall_arrival=shortfall_a, vwap_slippage=vwap_cost, bps=bps,
    )


def perold_shortfall(parent: TcaParent, fills: Sequence[TcaFill]) -> float:
    """IS_d by Perold's definition, paper minus real portfolio marked at P_e: the independent check on the split."""
    s = Side(parent.side).sign
    paper = s * parent.qty * (parent.end_price - parent.decision_price)
    real = sum(s * f.qty * (parent.end_price - f.price) - f.fee for f in fills)
    return paper - real


def tca_totals(rows: Sequence[ParentTca]) -> dict[str, Any]:
    """The report's total: currency costs summed over parents; bps of the summed paper (and arrival) notional."""
    out: dict[str, Any] = {"parents": len(rows), "qty": sum(r.qty for r in rows),
                           "filled_qty": sum(r.filled_qty for r in rows),
                           "paper_notional": sum(r.paper_notional for r in rows)}
    for k in (*COST_PARTS, "shortfall_decision", "shortfall_arrival"):
        out[k] = sum(getattr(r, k) for r in rows)
    with_vwap = [r for r in rows if math.isfinite(r.vwap_slippage)]
    out["vwap_slippage"] = sum(r.vwap_slippage for r in with_vwap) if with_vwap else math.nan
    paper = out["paper_notional"]
    arrival = sum(r.qty * r.arrival_price for r in rows)
    vwap_notional = sum(r.filled_qty * r.market_vwap for r in with_vwap)
    bps = {k: (out[k] / paper * 1e4 if paper > 0 else math.nan) for k in (*COST_PARTS, "shortfall_decision")}
    bps["shortfall_arrival"] = out["shortfall_arrival"] / arrival * 1e4 if arrival > 0 else math.nan
    bps["vwap_slippage"] = out["vwap_slippage"] / vwap_notional * 1e4 if vwap_notional > 0 else math.nan
    out["bps"] = bps
    return out


# --- from a ledger's rows and the run's bars ------------------------------------------------------------------


@dataclass(slots=True)
class TcaReport:
    """Every parent's costs, the total, and notes on how the benchmarks were found."""

    parents: list[ParentTca]
    total: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"parents": [p.to_dict() for p in self.parents], "total": self.total, "notes": list(self.notes)}


def _price_at(closes: pd.Series, ts_ns: int) -> float:
    """The last close at or before `ts_ns` (NaN before the first bar)."""
    i = int(closes.index.searchsorted(ts_ns, side="right")) - 1
    return float(closes.iloc[i]) if i >= 0 else math.nan


def _price_before(closes: pd.Series, ts_ns: int) -> float:
    """The last close strictly before `ts_ns` (the price showing while the bar at `ts_ns` traded)."""
    i = int(closes.index.searchsorted(ts_ns, side="left")) - 1
    return float(closes.iloc[i]) if i >= 0 else math.nan


def window_vwap(closes: pd.Series, volumes: pd.Series | None, start_ns: int, end_ns: int) -> float:
    """The market VWAP over the bars with start_ns <= ts <= end_ns: sum(close * volume) / sum(volume); the bar
    close stands for the bar's prices. NaN when the window holds no bar with a known positive volume."""
    if volumes is None:
        return math.nan
    lo = int(closes.index.searchsorted(start_ns, side="left"))
    hi = int(closes.index.searchsorted(end_ns, side="right"))
    c = closes.iloc[lo:hi].to_numpy(float)
    v = volumes.reindex(closes.index[lo:hi]).to_numpy(float)
    ok = np.isfinite(c) & np.isfinite(v) & (v > 0)
    if not ok.any():
        return math.nan
    return float(np.dot(c[ok], v[ok]) / v[ok].sum())


def _finite(v: Any) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return math.nan
    return x if math.isfinite(x) and x > 0 else math.nan


def _parent_of(client_order_id: str, parent_ids: set[str]) -> str:
    """The parent id of a child `f"{parent_id}.{n}"`; an order with no parent row is its own parent."""
    head, dot, n = client_order_id.rpartition(".")
    return head if dot and n.isdigit() and head in parent_ids else client_order_id


def tca_from_ledger(
    orders: Iterable[Mapping[str, Any]],
    fills: Iterable[Mapping[str, Any]],
    closes: pd.DataFrame,
    volumes: pd.DataFrame | None = None,
    parents: Iterable[Mapping[str, Any]] | None = None,
) -> TcaReport:
    """TCA of a run from its ledger rows (`Ledger.orders()`, `.fills()`, `.parent_orders()`) and its bars
    (`closes`/`volumes`: int64 ns index, one column per symbol).

    Parent rows (parent_id, symbol, side, qty, algo, start_ns, end_ns, ts_ns, decision_price, arrival_price,
    status) group their children `f"{parent_id}.{n}"`; a missing or non-positive decision price is the close at
    ts_ns, a missing arrival price the close at start_ns. An order with no parent row is its own parent: decided
    and sent at its bar (ts_ns), so decision = arrival = that bar's close (the price the simulated venue fills a
    submitted order against) and delay is 0. The window runs from the parent's start (or the order's ts) to its
    end_ns (or its last fill / last update); P_e is the close at the window's end, or the last bar for a parent
    still working. m_j is the close of the fill's bar when the fill came in the bar the child was sent in, else the
    close before the fill's bar (a resting child's fill at the next bar's open: the gap to that open counts as
    impact). Rejected orders with no fill count at their full quantity (opportunity cost: usually 0, marked within
    the bar). Parents with no price for their symbol are left out and named in the notes.
    """
    order_rows = list(orders)
    by_id = {str(o["client_order_id"]): o for o in order_rows}
    parent_rows = {str(r["parent_id"]): r for r in (parents or [])}
    notes: list[str] = []
    known = set(parent_rows)

    children: dict[str, list[Mapping[str, Any]]] = {}
    for o in order_rows:
        coid = str(o["client_order_id"])
        if coid in known:  # the strategy's order that became the parent: its row has it; it never reached a venue
            continue
        children.setdefault(_parent_of(coid, known), []).append(o)
    fills_of: dict[str, list[Mapping[str, Any]]] = {}
    orphans = 0
    for f in fills:
        coid = str(f["client_order_id"])
        if coid not in by_id:
            orphans += 1
            continue
        fills_of.setdefault(_parent_of(coid, known), []).append(f)
    if orphans:
        notes.append(f"{orphans} fill(s) name no order in the ledger: left out")

    last_ts = int(closes.index.max()) if len(closes.index) else 0
    ids = list(dict.fromkeys([*parent_rows, *children]))
    rows: list[ParentTca] = []
    missing: list[str] = []
    series: dict[str, pd.Series] = {}
    for pid in ids:
        kids = children.get(pid, [])
        row = parent_rows.get(pid)
        head = row if row is not None else (kids[0] if kids else None)
        if head is None:
            continue
        symbol = str(head["symbol"])
        if symbol not in closes.columns:
            missing.append(pid)
            continue
        c = series.get(symbol)
        if c is None:
            c = series[symbol] = closes[symbol].dropna()
        v = volumes[symbol] if volumes is not None and symbol in volumes.columns else None
        pf = sorted(fills_of.get(pid, []), key=lambda f: (int(f["ts_ns"]), str(f.get("fill_id", ""))))
        fill_end = max((int(f["ts_ns"]) for f in pf), default=0)
        sent_ts = {str(k["client_order_id"]): int(k["ts_ns"]) for k in kids}
        if row is not None:
            decided = int(row.get("ts_ns") or row.get("start_ns") or 0)
            start = int(row.get("start_ns") or decided)
            status = str(row.get("status") or "")
            end = last_ts if status in _OPEN else max(int(row.get("end_ns") or 0), fill_end, start)
            p_d = _finite(row.get("decision_price"))
            p_d = p_d if math.isfinite(p_d) else _price_at(c, decided)
            p_a = _finite(row.get("arrival_price"))
            p_a = p_a if math.isfinite(p_a) else _price_at(c, start)
            qty, side, algo = float(row["qty"]), Side(str(row["side"])), str(row.get("algo") or "market")
        else:
            o = kids[0]
            start = decided = int(o["ts_ns"])
            status = str(o.get("status") or "")
            end = last_ts if status in _OPEN else max(int(o.get("updated_ts_ns") or 0), fill_end, start)
            p_d = p_a = _price_at(c, decided)
            qty, side, algo = float(o["qty"]), Side(str(o["side"])), "market"
        p_e = _price_at(c, end)
        if not (math.isfinite(p_d) and math.isfinite(p_a) and math.isfinite(p_e)) or qty <= 0:
            missing.append(pid)
            continue
        tf = []
        for f in pf:
            ts = int(f["ts_ns"])
            at_send = sent_ts.get(str(f["client_order_id"])) == ts
            mkt = _price_at(c, ts) if at_send else _price_before(c, ts)
            tf.append(TcaFill(float(f["qty"]), float(f["price"]), float(f["fee"]),
                              mkt if math.isfinite(mkt) else float(f["price"]), ts))
        parent = TcaParent(pid, symbol, side, qty, p_d, p_a, p_e, window_vwap(c, v, start, max(end, start)), algo,
                           start, end, max(len(kids), 1))
        rows.append(parent_tca(parent, tf))
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        notes.append(f"{len(missing)} parent(s) without bar prices for their symbol or window: left out ({shown})")
    no_vwap = sum(r.filled_qty > 0 and not math.isfinite(r.market_vwap) for r in rows)
    if no_vwap:
        notes.append(f"{no_vwap} parent(s) with fills but no bar volume in their window: no VWAP slippage")
    if not parent_rows and rows:
        notes.append("no parent orders in the ledger: each order is its own parent, decided and sent at its bar "
                     "(decision = arrival = that bar's close, so delay is 0)")
    rows.sort(key=lambda r: (r.start_ns, r.parent_id))  # oldest decision first
    return TcaReport(rows, tca_totals(rows), notes)
