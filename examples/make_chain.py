"""Regenerate examples/chain.csv: an equity-like option chain quoted bid/ask, as a screen shows it.

Mid prices are Black-Scholes-Merton prices from a raw-SVI skew per expiry (total variance increasing in expiry,
so no calendar arbitrage; SVI parameters inside the butterfly-free region). Quotes: out-of-the-money options, plus
both types within 10% of spot (the put-call parity forward needs pairs); ticks of 0.01 below 3.00 and 0.05 above;
the spread is 4% of mid, at least one tick; quotes with no bid are left out.
Run: python examples/make_chain.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tradesys.quant.options.european import bsm_price

SPOT, RATE, DIV = 100.0, 0.04, 0.015
# expiry (years) -> raw SVI (a, b, rho, m, sigma) in total variance
SVI = {
    30 / 365: (0.0020, 0.030, -0.55, 0.010, 0.060),
    91 / 365: (0.0080, 0.055, -0.55, 0.015, 0.090),
    182 / 365: (0.0170, 0.075, -0.50, 0.020, 0.120),
    365 / 365: (0.0360, 0.100, -0.45, 0.030, 0.160),
}


def svi_vol(k: np.ndarray, T: float) -> np.ndarray:
    a, b, rho, m, s = SVI[T]
    return np.sqrt((a + b * (rho * (k - m) + np.sqrt((k - m) ** 2 + s**2))) / T)


def chain() -> pd.DataFrame:
    rows = []
    for T in SVI:
        F = SPOT * np.exp((RATE - DIV) * T)
        strikes = np.arange(70.0, 135.0, 2.5 if T < 0.2 else 5.0)
        vols = svi_vol(np.log(strikes / F), T)
        for K, vol in zip(strikes, vols, strict=True):
            near = abs(K / SPOT - 1.0) <= 0.10
            for kind in ("C", "P"):
                if not near and (kind == "C") != (K > F):
                    continue  # in the money and away from spot: not quoted here
                mid = float(bsm_price(SPOT, K, T, RATE, DIV, vol, kind == "C"))
                tick = 0.01 if mid < 3.0 else 0.05
                half = max(0.02 * mid, tick / 2)
                bid = np.floor((mid - half) / tick) * tick
                ask = np.ceil((mid + half) / tick) * tick
                if bid <= 0:
                    continue  # no bid: a screen shows nothing to fit
                rows.append({"strike": K, "expiry": round(T, 6), "bid": round(bid, 2), "ask": round(ask, 2),
                             "type": kind, "underlying": SPOT, "rate": RATE, "dividend": DIV})
    return pd.DataFrame(rows)


if __name__ == "__main__":
    out = Path(__file__).with_name("chain.csv")
    chain().to_csv(out, index=False)
    print(f"wrote {out}")
