"""Pre-trade risk checks: max order quantity and notional, max position, price collar, portfolio exposure
(gross and net leverage), portfolio VaR, order rate, and a daily-loss kill switch. Every reject carries a reason
code and a human-readable detail (the ledger's audit log records both).

The checks run in the order listed in `PreTradeRisk.check`; the first breach decides the reason. Orders that
reduce an existing position, exposure or VaR are never refused for it, so risk can always be cut. The
portfolio checks look at the book as it would be after the order, counting working orders and the orders
accepted earlier in the same batch; the VaR comes from `MarketRiskModel`, fed the marks of every step.

Restarts change nothing: `warm_up` rebuilds the state (the market-risk return window, the order-rate window and
the kill-switch latch) from the history before a resume point (`tradesys.risk.replay` derives that history from
the bars and the ledger), and `check` is idempotent for a retried step: an order id already counted in the rate
window is not counted again, and a repeated timestamp adds no market-risk observation.

Speed: within one `check`, the book's VaR, gross and net exposure change only when an order is accepted, so
each is computed once per state of the book (at the start, then after each acceptance) instead of once per
order checked; the VaR after each candidate is still computed per order, and once the candidate is accepted it
is the book's VaR. The values are the same floats as before (the sums run over the same exposures in the same
order, the VaR over the same exposure vector).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from tradesys.config import RiskConfig
from tradesys.core.orders import EventKind, Order, OrderEvent, OrderType, RejectReason
from tradesys.core.portfolio import PortfolioSnapshot
from tradesys.risk.market import MarketRiskModel


@dataclass(slots=True)
class RiskDecision:
    accepted: list[Order] = field(default_factory=list)
    rejected: list[OrderEvent] = field(default_factory=list)
    kill_switch_tripped: bool = False  # tripped by this call (not merely already active)


@dataclass(slots=True)
class _BookState:
    """The book's gross and net exposure and VaR (None: not computed yet) as of the orders accepted so far."""

    gross: float
    net: float
    var: float | None
    var_after: float | None = None  # the last candidate's VaR after it (None: not computed)


class PreTradeRisk:
    """Stateful gate: remembers accepted order times (rate limit) and whether the kill switch is latched.

    The kill switch latches for the rest of the UTC day on which the loss limit was breached.
    """

    def __init__(self, limits: RiskConfig) -> None:
        self.limits = limits
        self._accepted: deque[tuple[int, str]] = deque()  # (ts, client order id) in the rate window, oldest first
        self._accepted_ids: set[str] = set()
        self._killed_day: int | None = None
        self.rejects_by_reason: dict[str, int] = {}
        self.market = MarketRiskModel(
            limits.var_window,
            limits.var_confidence,
            limits.var_method,
            min_obs=min(limits.var_min_obs, limits.var_window),
        )
        self.metrics: dict[str, float] = {}

    @property
    def kill_switch_active(self) -> bool:
        return self._killed_day is not None

    def _loss_breached(self, book: PortfolioSnapshot) -> bool:
        if book.day_start_equity <= 0:
            return False
        loss = (book.day_start_equity - book.equity) / book.day_start_equity
        return loss >= self.limits.daily_loss_limit_pct

    def check(
        self,
        orders: Sequence[Order],
        book: PortfolioSnapshot,
        now_ns: int,
        working: Mapping[str, float] | None = None,
    ) -> RiskDecision:
        """Split `orders` into accepted and rejected. `working` is the signed open quantity per symbol."""
        decision = RiskDecision()
        day = now_ns // 86_400_000_000_000
        if self._killed_day is not None and self._killed_day != day:
            self._killed_day = None  # re-arm on a new day
        if self._killed_day is None and self._loss_breached(book):
            self._killed_day = day
            decision.kill_switch_tripped = True
        self._prune(now_ns)
        pending = dict(working or {})
        self.market.observe(book.ts_ns or now_ns, book.marks)
        held, working_of = book.positions, pending.get  # book.qty(s) is book.positions.get(s, 0.0)
        exposures = {s: (held.get(s, 0.0) + working_of(s, 0.0)) * m for s, m in book.marks.items() if m > 0}
        x = self.market.exposure_vector(exposures)
        self._update_metrics(book, exposures, x)
        state = _BookState(self.metrics["gross_exposure"], self.metrics["net_exposure"], self.metrics["var"])
        for order in orders:
            reason, detail = self._check_one(order, book, pending)
            if reason is None:
                reason, detail = self._check_portfolio(order, book, exposures, x, state)
            again = order.client_order_id in self._accepted_ids  # a retried step: already counted
            if reason is None and not again and len(self._accepted) >= self.limits.max_orders_per_window:
                reason = RejectReason.ORDER_RATE
                detail = (
                    f"{self.limits.max_orders_per_window} orders already accepted in the last "
                    f"{self.limits.order_window_seconds:g} s"
                )
            if reason is None:
                decision.accepted.append(order)
                if not again:
                    self._accepted.append((now_ns, order.client_order_id))
                    self._accepted_ids.add(order.client_order_id)
                pending[order.symbol] = pending.get(order.symbol, 0.0) + order.signed_qty
                change = order.signed_qty * book.marks[order.symbol]
                exposures[order.symbol] = exposures.get(order.symbol, 0.0) + change
                # x as exposure_vector(exposures) would rebuild it: only this symbol's entry moved
                at = self.market.exposure_vector({order.symbol: 1.0}) != 0
                x = np.where(at, exposures[order.symbol], x)
                # the VaR of the book with this order is the var_after just computed for it (the same vector)
                state = _BookState(sum(map(abs, exposures.values())), sum(exposures.values()), state.var_after)
            else:
                self.rejects_by_reason[reason.value] = self.rejects_by_reason.get(reason.value, 0) + 1
                decision.rejected.append(
                    OrderEvent(EventKind.REJECTED, order.client_order_id, now_ns, reason=reason, detail=detail)
                )
        return decision

    def _prune(self, now_ns: int) -> None:
        """Drop accepted orders that left the rate window."""
        window_ns = int(self.limits.order_window_seconds * 1e9)
        while self._accepted and self._accepted[0][0] <= now_ns - window_ns:
            self._accepted_ids.discard(self._accepted.popleft()[1])

    def warm_up(
        self,
        marks: Iterable[tuple[int, Mapping[str, float]]] = (),
        accepted: Iterable[tuple[int, str]] = (),
        day_checks: Iterable[tuple[int, float, float]] = (),
        rejects_by_reason: Mapping[str, int] | None = None,
    ) -> None:
        """Rebuild the gate's state from the history up to a resume point, as if every step had been checked.

        `marks`: (ts, the book's marks) of every step, oldest first (the market-risk window); `accepted`: (ts,
        client order id) of every order the gate accepted (the rate window); `day_checks`: (ts, equity,
        start-of-day equity) of the book each step's check saw, for the kill-switch latch; `rejects_by_reason`:
        the counters so far (reporting only).
        """
        last = None
        for ts, m in marks:
            self.market.observe(ts, m)
            last = ts
        for ts, cid in sorted(accepted):
            if cid not in self._accepted_ids:
                self._accepted.append((ts, cid))
                self._accepted_ids.add(cid)
        if last is not None:
            self._prune(last)
        for ts, equity, day_start in day_checks:
            day = ts // 86_400_000_000_000
            if self._killed_day is not None and self._killed_day != day:
                self._killed_day = None
            if self._killed_day is None and day_start > 0 and (day_start - equity) / day_start >= (
                self.limits.daily_loss_limit_pct
            ):
                self._killed_day = day
        for reason, n in (rejects_by_reason or {}).items():
            self.rejects_by_reason[reason] = self.rejects_by_reason.get(reason, 0) + int(n)

    def _check_one(
        self, order: Order, book: PortfolioSnapshot, pending: Mapping[str, float]
    ) -> tuple[RejectReason | None, str]:
        lim = self.limits
        bad = order.validate()
        if bad:
            return RejectReason.INVALID_ORDER, bad
        if self._killed_day is not None:
            return RejectReason.KILL_SWITCH, (
                f"daily loss limit {lim.daily_loss_limit_pct:.2%} breached: "
                f"equity {book.equity:,.2f} vs start of day {book.day_start_equity:,.2f}"
            )
        mark = book.marks.get(order.symbol)
        if mark is None or not (mark > 0):
            return RejectReason.NO_MARKET_PRICE, f"no mark price for {order.symbol}"
        if order.qty > lim.max_order_qty:
            return RejectReason.MAX_ORDER_QTY, f"qty {order.qty:g} > max_order_qty {lim.max_order_qty:g}"
        ref = order.limit_price if order.type is OrderType.LIMIT else order.stop_price or mark
        assert ref is not None
        notional = order.qty * max(ref, mark)
        if notional > lim.max_order_notional:
            return RejectReason.MAX_ORDER_NOTIONAL, (
                f"notional {notional:,.2f} > max_order_notional {lim.max_order_notional:,.2f}"
            )
        if order.type is not OrderType.MARKET and abs(ref / mark - 1.0) > lim.price_collar_pct:
            return RejectReason.PRICE_COLLAR, (
                f"{order.type.value} price {ref:g} is {abs(ref / mark - 1.0):.2%} from last {mark:g} "
                f"(collar {lim.price_collar_pct:.2%})"
            )
        current = book.qty(order.symbol) + pending.get(order.symbol, 0.0)
        after = current + order.signed_qty
        if abs(after) > abs(current) and abs(after) * mark > lim.max_position_notional:
            return RejectReason.MAX_POSITION, (
                f"position after order {after:g} x {mark:g} = {abs(after) * mark:,.2f} "
                f"> max_position_notional {lim.max_position_notional:,.2f}"
            )
        return None, ""

    def _update_metrics(self, book: PortfolioSnapshot, exposures: Mapping[str, float], x: object) -> None:
        """The book's risk as of this step (after its fills), counting working orders: what `stats` reports."""
        gross = sum(abs(v) for v in exposures.values())
        net = sum(exposures.values())
        var = self.market.var(x)  # type: ignore[arg-type]
        eq = book.equity
        self.metrics = {
            "ts_ns": float(book.ts_ns),
            "equity": eq,
            "gross_exposure": gross,
            "net_exposure": net,
            "gross_leverage": gross / eq if eq > 0 else float("inf"),
            "net_leverage": net / eq if eq > 0 else float("inf"),
            "var": var,
            "var_pct": var / eq if eq > 0 else float("nan"),
            "var_obs": float(self.market.n_obs),
        }

    def _check_portfolio(
        self, order: Order, book: PortfolioSnapshot, exposures: Mapping[str, float], x: object, state: _BookState
    ) -> tuple[RejectReason | None, str]:
        lim = self.limits
        state.var_after = None  # set below only when this order's VaR after is computed
        eq = book.equity
        mark = book.marks[order.symbol]
        before = exposures.get(order.symbol, 0.0)
        after = before + order.signed_qty * mark
        gross = state.gross
        gross_after = gross - abs(before) + abs(after)
        net = state.net
        net_after = net - before + after
        if lim.max_gross_leverage is not None and gross_after > gross and gross_after > lim.max_gross_leverage * eq:
            return RejectReason.EXPOSURE_LIMIT, (
                f"gross exposure after order {gross_after:,.2f} > {lim.max_gross_leverage:g} x equity {eq:,.2f}"
            )
        net_cap = None if lim.max_net_leverage is None else lim.max_net_leverage * eq
        if net_cap is not None and abs(net_after) > abs(net) and abs(net_after) > net_cap:
            return RejectReason.EXPOSURE_LIMIT, (
                f"net exposure after order {net_after:,.2f} exceeds {lim.max_net_leverage:g} x equity {eq:,.2f}"
            )
        if lim.var_limit_pct is not None and self.market.ready:
            if state.var is None:
                state.var = self.market.var(x)  # type: ignore[arg-type]
            var_before = state.var
            var_after = self.market.var_after(x, order.symbol, order.signed_qty * mark)  # type: ignore[arg-type]
            state.var_after = var_after
            limit = lim.var_limit_pct * max(eq, 0.0)
            if var_after > limit and var_after > var_before * (1 + 1e-12):
                return RejectReason.VAR_LIMIT, (
                    f"{lim.var_confidence:.0%} one-bar VaR ({lim.var_method}, {self.market.n_obs} obs) after order "
                    f"{var_after:,.2f} > limit {limit:,.2f} ({lim.var_limit_pct:.2%} of equity {eq:,.2f}); "
                    f"before {var_before:,.2f}"
                )
        return None, ""
