"""Reason codes for batch numerics: a bad row gives NaN and a code, never an exception for the whole batch."""

from __future__ import annotations

from enum import IntEnum


class OptionError(IntEnum):
    OK = 0
    NAN_INPUT = 1
    NON_POSITIVE_SPOT = 2
    NON_POSITIVE_STRIKE = 3
    NEGATIVE_EXPIRY = 4
    NEGATIVE_VOL = 5
    PRICE_BELOW_INTRINSIC = 6
    PRICE_ABOVE_MAX = 7
    NOT_CONVERGED = 8
    ZERO_EXPIRY = 9
    BAD_CORRELATION = 10

    @property
    def message(self) -> str:
        return _MESSAGES[self]


_MESSAGES = {
    OptionError.OK: "ok",
    OptionError.NAN_INPUT: "an input is NaN or infinite",
    OptionError.NON_POSITIVE_SPOT: "spot (or forward) must be > 0",
    OptionError.NON_POSITIVE_STRIKE: "strike must be > 0",
    OptionError.NEGATIVE_EXPIRY: "time to expiry must be >= 0",
    OptionError.NEGATIVE_VOL: "volatility must be >= 0",
    OptionError.PRICE_BELOW_INTRINSIC: "price is below the discounted intrinsic value (no implied vol exists)",
    OptionError.PRICE_ABOVE_MAX: "price is at or above the no-arbitrage upper bound (no implied vol exists)",
    OptionError.NOT_CONVERGED: "the solver did not converge",
    OptionError.ZERO_EXPIRY: "time to expiry is zero: implied volatility is undefined",
    OptionError.BAD_CORRELATION: "correlation must be within [-1, 1]",
}
