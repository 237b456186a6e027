"""Market risk of the live book, kept current step by step: a rolling window of returns and the book's VaR.

The pre-trade gate feeds it the marks it sees at every step (after that step's fills are booked), so the VaR of
the book is always the VaR of the positions just held, and the incremental VaR of a candidate order is one
vector update away: P&L scenarios are linear in dollar exposure, pnl_after = pnl_before + dq * mark * r[:, sym].

Methods: "historical" (the loss quantile of the book's P&L over the last `window` observed returns, linear
interpolation between order statistics, as `numpy.quantile`) and "ewma" (RiskMetrics: z_alpha * sqrt(x' S x)
with the exponentially weighted covariance S, lambda = 0.94). VaR is a positive loss in currency over one step
of the market clock (one bar). A symbol with no mark at an observation contributes a zero return to that row.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np

VarMethod = Literal["historical", "ewma"]


class MarketRiskModel:
    """Rolling returns per symbol (from consecutive marks) and the VaR of dollar exposures against them."""

    def __init__(
        self,
        window: int = 250,
        confidence: float = 0.99,
        method: VarMethod = "historical",
        ewma_lambda: float = 0.94,
        min_obs: int = 20,
    ) -> None:
        if not 0.5 < confidence < 1:
            raise ValueError("confidence: must be in (0.5, 1)")
        if window < 2 or min_obs < 2 or min_obs > window:
            raise ValueError("window: need 2 <= min_obs <= window")
        self.window, self.confidence, self.method = window, confidence, method
        self.lam, self.min_obs = ewma_lambda, min_obs
        self._symbols: dict[str, int] = {}
        self._rows: list[np.ndarray] = []  # one row of returns per observation, oldest first (ring via slicing)
        self._last_marks: dict[str, float] = {}
        self._last_ts: int | None = None
        self._returns: np.ndarray | None = None  # cached (n_obs, n_symbols) matrix
        self._cov: np.ndarray | None = None

    @property
    def n_obs(self) -> int:
        return len(self._rows)

    @property
    def ready(self) -> bool:
        """Enough history for a VaR: before `min_obs` returns the VaR limit is not enforced (exposure limits are)."""
        return self.n_obs >= self.min_obs

    def observe(self, ts_ns: int, marks: Mapping[str, float]) -> None:
        """Record one observation of marks; a repeated timestamp is ignored (one return per market step)."""
        if self._last_ts is not None and ts_ns <= self._last_ts:
            return
        for sym in marks:
            if sym not in self._symbols:
                self._symbols[sym] = len(self._symbols)
                self._rows = [np.append(r, 0.0) for r in self._rows]
        row = np.zeros(len(self._symbols))
        seen = False
        for sym, mark in marks.items():
            prev = self._last_marks.get(sym)
            if prev is not None and prev > 0 and mark > 0:
                row[self._symbols[sym]] = mark / prev - 1.0
                seen = True
        if self._last_ts is not None and seen:
            self._rows.append(row)
            del self._rows[: max(0, len(self._rows) - self.window)]
            self._returns = None
            self._cov = None
        self._last_marks.update({s: m for s, m in marks.items() if m > 0})
        self._last_ts = ts_ns

    def returns(self) -> np.ndarray:
        if self._returns is None:
            self._returns = np.vstack(self._rows) if self._rows else np.zeros((0, len(self._symbols)))
        return self._returns

    def exposure_vector(self, exposures: Mapping[str, float]) -> np.ndarray:
        x = np.zeros(len(self._symbols))
        for sym, value in exposures.items():
            j = self._symbols.get(sym)
            if j is not None:
                x[j] = value
        return x

    def column(self, symbol: str) -> np.ndarray | None:
        """The return history of one symbol (None if never seen)."""
        j = self._symbols.get(symbol)
        return None if j is None else self.returns()[:, j]

    def pnl(self, x: np.ndarray) -> np.ndarray:
        """Scenario P&L of the dollar exposure vector x, one per stored observation."""
        return self.returns() @ x

    def _ewma_cov(self) -> np.ndarray:
        if self._cov is None:
            r = self.returns()
            w = self.lam ** np.arange(len(r) - 1, -1, -1, dtype=np.float64)
            w /= w.sum()
            self._cov = (r * w[:, None]).T @ r  # zero-mean RiskMetrics
        return self._cov

    def var_of_pnl(self, pnl: np.ndarray) -> float:
        return float(max(np.quantile(-pnl, self.confidence), 0.0))

    def var(self, x: np.ndarray) -> float:
        """One-step VaR (positive loss, currency) of the exposure vector x; NaN before `min_obs` returns."""
        if not self.ready:
            return float("nan")
        if self.method == "ewma":
            from scipy.stats import norm  # here, not at the top: scipy.stats costs every actor's start ~0.9 s

            return float(norm.ppf(self.confidence) * np.sqrt(max(x @ self._ewma_cov() @ x, 0.0)))
        return self.var_of_pnl(self.pnl(x))

    def es(self, x: np.ndarray) -> float:
        """One-step expected shortfall (positive loss) of x: the mean loss at or beyond the VaR (historical), or
        the normal ES z-density / (1 - confidence) * sigma (ewma); NaN before `min_obs` returns."""
        if not self.ready:
            return float("nan")
        if self.method == "ewma":
            from scipy.stats import norm

            sigma = float(np.sqrt(max(x @ self._ewma_cov() @ x, 0.0)))
            return float(norm.pdf(norm.ppf(self.confidence)) / (1 - self.confidence) * sigma)
        losses = -self.pnl(x)
        tail = losses[losses >= np.quantile(losses, self.confidence)]
        return float(max(tail.mean(), 0.0))

    def var_after(self, x: np.ndarray, symbol: str, dollar_change: float) -> float:
        """VaR of x after adding `dollar_change` of exposure to `symbol` (a candidate order)."""
        y = x.copy()
        j = self._symbols.get(symbol)
        if j is None:
            return self.var(y)  # no history for the symbol: it adds no measured risk yet
        y[j] += dollar_change
        return self.var(y)
