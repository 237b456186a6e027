"""Reward functions of the portfolio environment, vectorised over episodes (pure numpy).

* `log_return`: log(E_{t+1} / E_t), equity net of every cost, so costs are paid in the reward itself.
* `dsr_step`: the differential Sharpe ratio of Moody and Saffell (2001, "Learning to trade via direct
  reinforcement", IEEE TNN 12(4), eq. 14-15). With R_t the step's simple return and exponential moving estimates
  A_t = A_{t-1} + eta (R_t - A_{t-1}) and B_t = B_{t-1} + eta (R_t^2 - B_{t-1}) of the first and second moments,

      D_t = (B_{t-1} dA_t - 0.5 A_{t-1} dB_t) / (B_{t-1} - A_{t-1}^2)^(3/2)
      dA_t = R_t - A_{t-1},  dB_t = R_t^2 - B_{t-1}

  D_t is the first-order sensitivity of the moving Sharpe ratio to R_t. It is 0 while the variance estimate
  B_{t-1} - A_{t-1}^2 is not positive (the first step of an episode, A_0 = B_0 = 0).
* `penalised`: log return - drawdown_penalty * (1 - E_{t+1} / peak E) - turnover_penalty * traded notional / E_t.
"""

from __future__ import annotations

import numpy as np

__all__ = ["dsr_step", "log_return", "penalised"]

_VAR_EPS = 1e-12


def log_return(equity_before: np.ndarray, equity_after: np.ndarray, floor: float = 1e-12) -> np.ndarray:
    """log(E_after / E_before); a non-positive equity is floored at `floor` * E_before (a wiped-out account)."""
    return np.log(np.maximum(equity_after, floor * equity_before) / equity_before)


def dsr_step(
    ret: np.ndarray, a_prev: np.ndarray, b_prev: np.ndarray, eta: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(D_t, A_t, B_t) for simple returns `ret` and the previous moment estimates (module docstring)."""
    da = ret - a_prev
    db = ret * ret - b_prev
    var = b_prev - a_prev * a_prev
    ok = var > _VAR_EPS
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(ok, (b_prev * da - 0.5 * a_prev * db) / np.where(ok, var, 1.0) ** 1.5, 0.0)
    return d, a_prev + eta * da, b_prev + eta * db


def penalised(
    log_ret: np.ndarray,
    drawdown: np.ndarray,
    turnover: np.ndarray,
    drawdown_penalty: float,
    turnover_penalty: float,
) -> np.ndarray:
    """log return - drawdown_penalty * drawdown - turnover_penalty * turnover (drawdown in [0, 1])."""
    return log_ret - drawdown_penalty * drawdown - turnover_penalty * turnover
