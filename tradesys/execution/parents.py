"""The parent-order book inside the execution service (pure: no Ray, no I/O).

An accepted order that names an execution algorithm (`Order.algo`) is not sent: it becomes a parent order
(parent id = the order's client order id) and its algorithm sends child orders (`f"{parent_id}.{n}"`) at each
bar of the parent's symbol, for `horizon_bars` bars. Everything the algorithm needs is derivable from the ledger
(why: a restarted ExecutionActor must send exactly the children an undisturbed one sends):

* the parent row (what was asked, the window, and the slice counters `slices`, `market_volume`, `last_ts_ns`,
  `children`), upserted in the same transaction as the children a slice sent;
* the children's states and fills, from the OMS (itself rebuilt from the ledger's orders and fills).

The window: the bar the strategy decided on is the decision bar; the parent's first slice is the next bar of its
symbol, and its window covers `horizon_bars` bars from there: start_ns = that bar's time and end_ns = start_ns +
(horizon_bars - 1) * (start_ns - decision time), both fixed at the first slice (the bar spacing is only known
then). A parent finishes as `filled`, or as `expired` once its window has passed and no child is still working.

`algo_params` may carry the reserved key `horizon_bars` (the strategy's sizing puts it there from the
`execution` config section); it is taken out before the rest is handed to the algorithm.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from tradesys.core.orders import Order, OrderType, Side
from tradesys.execution.algos.base import ExecutionAlgo, MarketSlice, ParentOrder, ParentProgress
from tradesys.execution.algos.registry import make_algo
from tradesys.ledger.base import ParentRow

HORIZON_KEY = "horizon_bars"
DEFAULT_HORIZON_BARS = 10
ACTIVE, FILLED, EXPIRED, CANCELLED = "active", "filled", "expired", "cancelled"
_EPS = 1e-9


def split_params(order: Order) -> tuple[int, dict[str, Any]]:
    """(horizon in bars, the algorithm's own params) from an order's `algo_params`."""
    params = dict(order.algo_params)
    horizon = params.pop(HORIZON_KEY, DEFAULT_HORIZON_BARS)
    if isinstance(horizon, bool) or not isinstance(horizon, int | float) or not float(horizon).is_integer():
        raise ValueError(f"{HORIZON_KEY}: must be a whole number of bars, got {horizon!r}")
    if int(horizon) < 1:
        raise ValueError(f"{HORIZON_KEY}: must be >= 1, got {horizon!r}")
    return int(horizon), params


@dataclass(slots=True)
class _Parent:
    """One parent's row as the book keeps it in memory (the ledger row is written from it)."""

    row: ParentRow
    algo: ExecutionAlgo

    @property
    def order(self) -> ParentOrder:
        r = self.row
        return ParentOrder(
            parent_id=r.parent_id,
            symbol=r.symbol,
            side=r.side,
            qty=r.qty,
            algo=r.algo,
            start_ns=r.start_ns,
            end_ns=r.end_ns,
            params=r.params,
            limit_price=r.limit_price,
            strategy_id=r.strategy_id,
            ts_ns=r.ts_ns,
            decision_price=math.nan if r.decision_price is None else r.decision_price,
        )


class ParentBook:
    """The active parents of one execution service, sliced at each bar in parent-id order."""

    def __init__(self) -> None:
        self._parents: dict[str, _Parent] = {}  # every parent this service knows, finished ones too (idempotency)
        self._active: set[str] = set()  # the ids of the active ones: per-bar work costs the active parents only

    def __len__(self) -> int:
        return len(self._parents)

    def __contains__(self, parent_id: str) -> bool:
        return parent_id in self._parents

    def row(self, parent_id: str) -> ParentRow | None:
        p = self._parents.get(parent_id)
        return None if p is None else p.row

    def active(self) -> list[ParentRow]:
        return [self._parents[pid].row for pid in sorted(self._active)]

    @staticmethod
    def check(order: Order) -> str | None:
        """Why an algo order cannot become a parent (unknown algo, bad params, a window or a limit its algorithm
        needs), or None: refused when it is recorded, never half worked."""
        try:
            horizon, params = split_params(order)
        except ValueError as exc:
            return str(exc)
        return trial(order.algo, params, horizon, order.limit_price if order.type is OrderType.LIMIT else None)

    def add(
        self, order: Order, decision_price: float | None, defaults: Mapping[str, Any] | None = None
    ) -> ParentRow | None:
        """Take an accepted algo order as a parent; None when this parent id is already known (a retried step).
        `defaults` fill parameters the order does not set (a VWAP's predicted curve); they are stored in the row."""
        if order.client_order_id in self._parents:
            return None
        horizon, params = split_params(order)
        params = {**(defaults or {}), **params}
        algo = make_algo(order.algo, params)
        row = ParentRow(
            parent_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            qty=float(order.qty),
            algo=order.algo,
            params=params,
            horizon_bars=horizon,
            start_ns=0,
            end_ns=0,
            ts_ns=order.ts_ns,
            decision_price=decision_price if decision_price is not None and decision_price > 0 else None,
            status=ACTIVE,
            limit_price=order.limit_price if order.type is OrderType.LIMIT else None,
            strategy_id=order.strategy_id,
            updated_ts_ns=order.ts_ns,
        )
        self._parents[row.parent_id] = _Parent(row, algo)
        self._active.add(row.parent_id)
        return row

    def slice(
        self,
        ts_ns: int,
        bars: Mapping[str, tuple[float, float]],
        oms: Any,
        wall_ns: Callable[[], int],
        send: bool = True,
    ) -> tuple[list[Order], list[ParentRow]]:
        """Children to send now for each active parent with a bar in `bars` ({symbol: (close, volume)}), and the
        parents' rows as of this slice. A bar at or before a parent's last slice is not sliced again (a retry).
        With `send` off (new orders halted) the slice still counts, and fixes the window, but sends nothing: the
        algorithm catches up after the halt, or the parent expires with its window."""
        children: list[Order] = []
        rows: list[ParentRow] = []
        for pid in sorted(self._active):
            p = self._parents[pid]
            r = p.row
            bar = bars.get(r.symbol)
            if r.status != ACTIVE or bar is None or ts_ns <= max(r.last_ts_ns, r.ts_ns):
                continue
            close, volume = bar
            start, end = r.start_ns, r.end_ns
            if r.slices == 0:  # the first slice fixes the window (module docstring)
                start, end = ts_ns, ts_ns + (r.horizon_bars - 1) * (ts_ns - r.ts_ns)
            vol = volume if volume == volume and volume >= 0 else 0.0
            r = replace(r, start_ns=start, end_ns=end, slices=r.slices + 1, market_volume=r.market_volume + vol,
                        last_ts_ns=ts_ns, updated_ts_ns=ts_ns)
            p.row = r
            parent = p.order
            progress = progress_of(parent, r.children, oms)
            progress.slices, progress.market_volume = r.slices, r.market_volume
            market = MarketSlice(ts_ns=ts_ns, price=close, volume=volume)
            now = wall_ns()
            n = r.children
            try:
                specs = p.algo.children(parent, progress, market) if send else []
            except ValueError:  # the algorithm cannot work this parent (`check` refuses such orders up front)
                p.row = replace(r, status=CANCELLED)
                self._active.discard(pid)
                rows.append(p.row)
                continue
            for spec in specs:
                if not (spec.qty > _EPS):
                    continue
                n += 1
                children.append(
                    Order(
                        client_order_id=parent.child_id(n),
                        symbol=r.symbol,
                        side=r.side,
                        qty=float(spec.qty),
                        type=spec.type,
                        tif=spec.tif,
                        limit_price=spec.limit_price,
                        strategy_id=r.strategy_id,
                        ts_ns=ts_ns,
                        decision_wall_ns=now,
                        min_qty=float(spec.min_qty),
                    )
                )
            p.row = replace(r, children=n)
            rows.append(p.row)
        return children, rows

    def settle(self, ts_ns: int, oms: Any, ids: Iterable[str] | None = None) -> list[ParentRow]:
        """Bring the rows of the active parents (or of `ids`) up to their children's fills; finish a parent that
        is filled, or whose window has passed with no child working. Return the rows that changed."""
        out: list[ParentRow] = []
        wanted = sorted(self._active) if ids is None else sorted(set(ids))
        for pid in wanted:
            p = self._parents.get(pid)
            if p is None or p.row.status != ACTIVE:
                continue
            r = p.row
            progress = progress_of(p.order, r.children, oms)
            avg = progress.notional / progress.filled_qty if progress.filled_qty > 0 else 0.0
            status = r.status
            if progress.filled_qty >= r.qty - _EPS:
                status = FILLED
            elif r.slices > 0 and ts_ns >= r.end_ns and progress.working_qty <= _EPS and ts_ns >= r.last_ts_ns:
                status = EXPIRED
            if (status, progress.filled_qty, avg) == (r.status, r.filled_qty, r.avg_fill_price):
                continue
            p.row = replace(r, status=status, filled_qty=progress.filled_qty, avg_fill_price=avg,
                            updated_ts_ns=max(ts_ns, r.updated_ts_ns))
            if status != ACTIVE:
                self._active.discard(pid)
            out.append(p.row)
        return out

    def unsent(self, oms: Any) -> dict[str, float]:
        """Signed quantity of the active parents not yet sent as children, per symbol: the strategy counts it
        as working, or it would order again what a parent is still to send."""
        out: dict[str, float] = {}
        for pid in sorted(self._active):
            p = self._parents[pid]
            r = p.row
            rest = progress_of(p.order, r.children, oms).remaining(p.order)
            if rest > _EPS:
                out[r.symbol] = out.get(r.symbol, 0.0) + r.side.sign * rest
        return out

    @classmethod
    def restore(cls, rows: Iterable[Mapping[str, Any]]) -> ParentBook:
        """Rebuild from the ledger's parent rows (as `Ledger.parent_orders()` returns them)."""
        book = cls()
        for r in rows:
            row = row_from_dict(r)
            book._parents[row.parent_id] = _Parent(row, make_algo(row.algo, row.params))
            if row.status == ACTIVE:
                book._active.add(row.parent_id)
        return book


def trial(algo: str, params: Mapping[str, Any], horizon_bars: int, limit_price: float | None) -> str | None:
    """Why `algo` cannot work a parent of this shape (its ValueError's one line), or None. It is built and asked for
    its first children on a stand-in parent whose window spans `horizon_bars` slice points."""
    try:
        a = make_algo(algo, params)
        parent = ParentOrder("trial", "TRIAL", Side.BUY, 100.0, algo, start_ns=1, end_ns=horizon_bars,
                             params=params, limit_price=limit_price)
        a.children(parent, ParentProgress(), MarketSlice(ts_ns=1, price=limit_price or 1.0))
    except ValueError as exc:
        return str(exc)
    return None


def progress_of(parent: ParentOrder, children: int, oms: Any) -> ParentProgress:
    """The parent's progress from its children's states in the OMS."""
    prog = ParentProgress(children=children)
    for n in range(1, children + 1):
        st = oms.get(parent.child_id(n))
        if st is None:
            continue
        prog.filled_qty += st.filled_qty
        prog.notional += st.filled_qty * st.avg_fill_price
        prog.working_qty += st.leaves_qty
    return prog


def row_from_dict(r: Mapping[str, Any]) -> ParentRow:
    params = r["params"]
    return ParentRow(
        parent_id=r["parent_id"],
        symbol=r["symbol"],
        side=Side(r["side"]),
        qty=float(r["qty"]),
        algo=r["algo"],
        params=dict(params) if isinstance(params, Mapping) else {},
        horizon_bars=int(r["horizon_bars"]),
        start_ns=int(r["start_ns"]),
        end_ns=int(r["end_ns"]),
        ts_ns=int(r["ts_ns"]),
        decision_price=None if r.get("decision_price") is None else float(r["decision_price"]),
        status=r["status"],
        filled_qty=float(r["filled_qty"]),
        avg_fill_price=float(r["avg_fill_price"]),
        children=int(r["children"]),
        slices=int(r["slices"]),
        market_volume=float(r["market_volume"]),
        last_ts_ns=int(r["last_ts_ns"]),
        limit_price=None if r.get("limit_price") is None else float(r["limit_price"]),
        strategy_id=r.get("strategy_id") or "",
        updated_ts_ns=int(r["updated_ts_ns"]),
    )


def is_child_of(client_order_id: str, parent_ids: Sequence[str] | set[str]) -> bool:
    """True when `client_order_id` is `f"{parent}.{n}"` for one of `parent_ids`."""
    head, dot, n = client_order_id.rpartition(".")
    return bool(dot) and n.isdigit() and head in parent_ids


def decision_rows(
    order_rows: Iterable[Mapping[str, Any]], parent_rows: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The orders the strategy decided, as order rows: the ledger's orders less the algorithms' children, plus one
    row per parent (its id, decision time, symbol, side, quantity; status "accepted").

    Why: what replays the strategy's decisions (the risk gate's order-rate window, the resume point) must see
    the orders the gate checked, not the children an algorithm sent later on its own clock."""
    parents = list(parent_rows)
    ids = {p["parent_id"] for p in parents}
    out = [dict(o) for o in order_rows if not is_child_of(o["client_order_id"], ids)]
    out += [
        {"client_order_id": p["parent_id"], "symbol": p["symbol"], "side": p["side"], "qty": p["qty"],
         "ts_ns": p["ts_ns"], "status": "accepted", "reason": None, "strategy_id": p.get("strategy_id") or ""}
        for p in parents
    ]
    return out
