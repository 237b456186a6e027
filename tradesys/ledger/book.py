"""The book-keeper: the in-memory Portfolio kept in lock-step with the durable ledger.

Each `commit` applies fills and marks to a copy of the portfolio, writes orders, order updates, fills, the
touched positions, the account row and audit entries in one ledger transaction, and only then swaps the copy
in. A failed write leaves both the database and the in-memory book as they were.

A restored book also restores the start-of-day equity (the equity before the day's first mark: the last equity
row of an earlier day), so the daily-loss kill switch sees the same day after a restart as without one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from tradesys.core.orders import Fill, Order
from tradesys.core.portfolio import Portfolio, PortfolioSnapshot
from tradesys.ledger.base import (
    AccountRow,
    AuditEntry,
    Ledger,
    LedgerBatch,
    OrderUpdate,
    ParentRow,
    PositionRow,
    WriteResult,
)


class BookKeeper:
    def __init__(self, ledger: Ledger, initial_cash: float) -> None:
        self.ledger = ledger
        ledger.migrate()
        acct = ledger.account()
        if acct is None:
            self.portfolio = Portfolio(initial_cash)
        else:
            self.portfolio = Portfolio.restore(
                float(acct["initial_cash"]),
                float(acct["cash"]),
                float(acct["fees"]),
                [(p["symbol"], p["qty"], p["avg_price"], p["realized_pnl"], p["mark"]) for p in ledger.positions()],
                realized_pnl=float(acct["realized_pnl"]),
                ts_ns=int(acct["ts_ns"]),
            )
            self.portfolio.day_start_equity = self._day_start_equity(int(acct["ts_ns"]), float(acct["initial_cash"]))
        self.restored = acct is not None
        # fills already in the book: a retried commit (after a crash between the write and the reply) must not
        # apply a fill to the in-memory portfolio twice
        self._fill_ids = {f["fill_id"] for f in ledger.fills()} if self.restored else set()

    def _day_start_equity(self, ts_ns: int, initial_cash: float) -> float:
        """The equity before the first mark of the day of `ts_ns` (the last row of an earlier day)."""
        day = ts_ns // 86_400_000_000_000
        before = initial_cash
        for r in self.ledger.equity_curve():
            if int(r["ts_ns"]) // 86_400_000_000_000 >= day:
                break
            before = float(r["equity"])
        return before

    def snapshot(self) -> PortfolioSnapshot:
        return self.portfolio.snapshot()

    def commit(
        self,
        *,
        ts_ns: int,
        orders: Sequence[Order] = (),
        updates: Sequence[OrderUpdate] = (),
        fills: Sequence[Fill] = (),
        marks: Mapping[str, float] | None = None,
        audit: Sequence[AuditEntry] = (),
        parents: Sequence[ParentRow] = (),
    ) -> tuple[PortfolioSnapshot, WriteResult]:
        """Apply and persist one step's changes atomically; return the new snapshot."""
        fills = [f for f in fills if f.fill_id not in self._fill_ids]
        pf = self.portfolio.copy()
        pf.apply_fills(fills)
        touched = {f.symbol for f in fills}
        if marks:
            pf.mark(marks, ts_ns)
            touched.update(s for s in marks if s in pf.positions)
        elif ts_ns > pf.ts_ns:
            pf.ts_ns = ts_ns
        batch = LedgerBatch(orders=list(orders), order_updates=list(updates), fills=list(fills), audit=list(audit),
                           parents=list(parents))
        snap = pf.snapshot()  # the account row takes its totals from it: each is a sum over every position
        if fills or marks:
            positions = pf.positions
            batch.positions = [
                PositionRow(s, p.qty, p.avg_price, p.realized_pnl, p.mark)
                for s in sorted(touched)
                if (p := positions[s]) is not None
            ]
            batch.account = AccountRow(
                ts_ns=ts_ns,
                cash=pf.cash,
                market_value=snap.market_value,
                equity=snap.equity,
                realized_pnl=snap.realized_pnl,
                unrealized_pnl=snap.unrealized_pnl,
                fees=pf.fees,
                initial_cash=pf.initial_cash,
            )
        result = self.ledger.write(batch) if batch else WriteResult((), (), (), ())
        self.portfolio = pf
        self._fill_ids.update(f.fill_id for f in fills)
        return snap, result

    def audit(self, entries: Sequence[AuditEntry]) -> None:
        self.ledger.write(LedgerBatch(audit=list(entries)))

    def ledger_rows(self) -> tuple[list[dict], list[dict]]:
        """(orders, fills) rows, oldest first, for rebuilding the OMS after a restart."""
        return list(reversed(self.ledger.orders())), self.ledger.fills()

    def parent_rows(self) -> list[dict]:
        """The parent orders, oldest decision first, for rebuilding the execution service's parent book."""
        return self.ledger.parent_orders()
