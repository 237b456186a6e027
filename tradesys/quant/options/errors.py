"""Reason codes for batch numerics: a bad row gives NaN and a code, never an exception for the whole batch.

The contract every batch entry point keeps: a row is either finite in every output with code OK, or NaN in every
output with a non-OK code. OVERFLOW is the code of a row whose inputs pass every check but whose arithmetic leaves
float range (T = 1e300, r = 1e10, ...), so a NaN never hides behind OK.
"""

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
    BAD_OPTION_TYPE = 11
    OVERFLOW = 12

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
    OptionError.BAD_OPTION_TYPE: "option type must be a call or a put (true/false, 1/0, or C/P)",
    OptionError.OVERFLOW: "the inputs are finite but outside float range or the pricer's domain (expiry, rate or vol)",
}
