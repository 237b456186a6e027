"""Portfolio accounting: cash, positions, realised and unrealised P&L, fees.

Average-cost basis. Two conservation laws hold after every fill and every mark, and tests check both:

* equity == cash + sum(qty * mark * multiplier)
* equity - initial_cash == realised + unrealised - fees
"""

from __future__ import annotations

import copy
import dataclasses
import math
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from tradesys.core.orders import Fill


@dataclass(slots=True)
class Position:
    symbol: str
    qty: float = 0.0
    avg_price: float = 0.0
    realized_pnl: float = 0.0  # gross of fees
    mark: float = float("nan")
    multiplier: float = 1.0

    @property
    def market_value(self) -> float:
        if self.qty == 0.0:
            return 0.0
        return self.qty * self.mark * self.multiplier

    @property
    def unrealized_pnl(self) -> float:
        if self.qty == 0.0:
            return 0.0
        return self.qty * (self.mark - self.avg_price) * self.multiplier

    def apply(self, signed_qty: float, price: float) -> float:
        """Apply a fill; return the P&L it realised (gross of fees)."""
        realized = 0.0
        if self.qty == 0.0 or math.copysign(1.0, self.qty) == math.copysign(1.0, signed_qty):
            new_qty = self.qty + signed_qty
            self.avg_price = (self.avg_price * self.qty + price * signed_qty) / new_qty
            self.qty = new_qty
        else:
            closing = min(abs(signed_qty), abs(self.qty))
            direction = math.copysign(1.0, self.qty)
            realized = closing * (price - self.avg_price) * direction * self.multiplier
            self.realized_pnl += realized
            new_qty = self.qty + signed_qty
            if abs(new_qty) < 1e-12:
                self.qty, self.avg_price = 0.0, 0.0
            elif math.copysign(1.0, new_qty) == direction:
                self.qty = new_qty  # reduced, average cost unchanged
            else:
                self.qty, self.avg_price = new_qty, price  # flipped through zero
        if math.isnan(self.mark):
            self.mark = price
        return realized


_POSITION_FIELDS = operator.attrgetter(*(f.name for f in dataclasses.fields(Position)))


@dataclass(frozen=True, slots=True)
class PortfolioSnapshot:
    """An immutable view of the book at one instant; what strategies and risk checks see."""

    ts_ns: int
    cash: float
    equity: float
    market_value: float
    gross_exposure: float
    realized_pnl: float
    unrealized_pnl: float
    fees: float
    initial_cash: float
    day_start_equity: float
    positions: Mapping[str, float]
    avg_prices: Mapping[str, float]
    marks: Mapping[str, float]

    def qty(self, symbol: str) -> float:
        return self.positions.get(symbol, 0.0)


@dataclass
class Portfolio:
    """The book of record for one account."""

    initial_cash: float
    cash: float = field(init=False)
    fees: float = 0.0
    positions: dict[str, Position] = field(default_factory=dict)
    multipliers: dict[str, float] = field(default_factory=dict)
    ts_ns: int = 0
    realized_carry: float = 0.0  # realised P&L of positions no longer held (after a restore)
    day_start_equity: float = field(init=False)
    _day: int = -1

    def __post_init__(self) -> None:
        if not (self.initial_cash > 0):
            raise ValueError(f"portfolio.initial_cash: must be > 0, got {self.initial_cash}")
        self.cash = float(self.initial_cash)
        self.day_start_equity = self.cash

    def copy(self) -> Portfolio:
        """An independent copy (positions copied, nothing shared), for copy-on-write commits."""
        pf = copy.copy(self)
        pf.positions = {s: Position(*_POSITION_FIELDS(p)) for s, p in self.positions.items()}  # replace(), faster
        pf.multipliers = dict(self.multipliers)
        return pf

    def position(self, symbol: str) -> Position:
        pos = self.positions.get(symbol)
        if pos is None:
            pos = Position(symbol, multiplier=self.multipliers.get(symbol, 1.0))
            self.positions[symbol] = pos
        return pos

    def apply_fill(self, fill: Fill) -> None:
        pos = self.position(fill.symbol)
        signed = fill.signed_qty
        pos.apply(signed, fill.price)
        self.cash -= signed * fill.price * pos.multiplier + fill.fee
        self.fees += fill.fee

    def apply_fills(self, fills: Iterable[Fill]) -> None:
        for f in fills:
            self.apply_fill(f)

    def mark(self, prices: Mapping[str, float], ts_ns: int | None = None) -> None:
        """Mark positions to the given prices; NaN prices are ignored (the last good mark stays).

        On the first mark of a new UTC day, `day_start_equity` takes the equity *before* that mark (the previous
        close), so the daily-loss kill switch sees the whole day's move even on daily bars.
        """
        if ts_ns is not None:
            day = ts_ns // 86_400_000_000_000
            if day != self._day:
                self._day = day
                self.day_start_equity = self.equity
            self.ts_ns = ts_ns
        for sym, px in prices.items():
            if px == px and px > 0:  # skip NaN and non-positive
                self.position(sym).mark = float(px)

    @property
    def market_value(self) -> float:
        return sum(p.market_value for p in self.positions.values())

    @property
    def gross_exposure(self) -> float:
        return sum(abs(p.market_value) for p in self.positions.values())

    @property
    def equity(self) -> float:
        return self.cash + self.market_value

    @property
    def realized_pnl(self) -> float:
        return self.realized_carry + sum(p.realized_pnl for p in self.positions.values())

    @property
    def unrealized_pnl(self) -> float:
        return sum(p.unrealized_pnl for p in self.positions.values())

    def snapshot(self) -> PortfolioSnapshot:
        live = {s: p for s, p in self.positions.items() if p.qty != 0.0}
        return PortfolioSnapshot(
            ts_ns=self.ts_ns,
            cash=self.cash,
            equity=self.equity,
            market_value=self.market_value,
            gross_exposure=self.gross_exposure,
            realized_pnl=self.realized_pnl,
            unrealized_pnl=self.unrealized_pnl,
            fees=self.fees,
            initial_cash=self.initial_cash,
            day_start_equity=self.day_start_equity,
            positions={s: p.qty for s, p in live.items()},
            avg_prices={s: p.avg_price for s, p in live.items()},
            marks={s: p.mark for s, p in self.positions.items() if p.mark == p.mark},
        )

    @classmethod
    def restore(
        cls,
        initial_cash: float,
        cash: float,
        fees: float,
        positions: Iterable[tuple[str, float, float, float, float]],
        realized_pnl: float | None = None,
        ts_ns: int = 0,
    ) -> Portfolio:
        """Rebuild from persisted rows: (symbol, qty, avg_price, realized_pnl, mark) and account totals."""
        pf = cls(initial_cash)
        pf.cash, pf.fees, pf.ts_ns = cash, fees, ts_ns
        pf._day = ts_ns // 86_400_000_000_000 if ts_ns else -1
        for sym, qty, avg, realized, mark in positions:
            pf.positions[sym] = Position(sym, qty, avg, realized, mark, pf.multipliers.get(sym, 1.0))
        if realized_pnl is not None:
            pf.realized_carry = realized_pnl - sum(p.realized_pnl for p in pf.positions.values())
        pf.day_start_equity = pf.equity
        return pf
