"""Instruments: what is traded, independent of how it is priced or where it is traded."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class AssetClass(StrEnum):
    EQUITY = "equity"
    INDEX = "index"
    FUTURE = "future"
    OPTION = "option"
    FX = "fx"
    CRYPTO = "crypto"


@dataclass(frozen=True, slots=True)
class Instrument:
    """A tradable instrument. `lot_size` is the smallest tradable quantity; `tick_size` the price increment."""

    symbol: str
    asset_class: AssetClass = AssetClass.EQUITY
    currency: str = "USD"
    tick_size: float = 0.01
    lot_size: float = 1.0
    multiplier: float = 1.0

    def __post_init__(self) -> None:
        if not self.symbol:
            raise ValueError("instrument.symbol: must be a non-empty string")
        if self.tick_size <= 0:
            raise ValueError(f"instrument.tick_size: must be > 0, got {self.tick_size}")
        if self.lot_size <= 0:
            raise ValueError(f"instrument.lot_size: must be > 0, got {self.lot_size}")
        if self.multiplier <= 0:
            raise ValueError(f"instrument.multiplier: must be > 0, got {self.multiplier}")

    def round_qty(self, qty: float) -> float:
        """Round a quantity towards zero to a whole number of lots."""
        lots = int(abs(qty) / self.lot_size + 1e-9)
        return float(lots * self.lot_size) * (1.0 if qty >= 0 else -1.0)
