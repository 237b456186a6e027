"""Portfolio allocation (pure library): mean-variance, Black-Litterman, risk parity, HRP, rebalancing triggers.

Not to be confused with `tradesys.core.portfolio`, the trading book (cash, positions, P&L). This package decides
what the weights *should* be; the book records what is held. Weights are fractions of portfolio value.

Entry point for services: `optimize_portfolio(returns or (mu, cov), objective, constraints=...)` returns an
`OptimizationResult` (weights by asset, expected return, volatility, Sharpe, risk contributions, solver status,
`to_dict()`). Bad input raises ValueError("field: reason"); constraints no portfolio can meet raise
`InfeasiblePortfolioError` (a ValueError).
"""

from tradesys.quant.portfolio.black_litterman import (
    BlackLittermanResult,
    BlackLittermanViews,
    black_litterman_posterior,
    equilibrium_returns,
    he_litterman_omega,
    idzorek_omega,
    implied_risk_aversion,
    market_weights_from_caps,
    view_matrix,
)
from tradesys.quant.portfolio.optimize import (
    OBJECTIVES,
    InfeasiblePortfolioError,
    OptimizationResult,
    PortfolioConstraints,
    efficient_frontier,
    moments_from_returns,
    optimize_portfolio,
    risk_contributions,
    validate_cov,
)
from tradesys.quant.portfolio.rebalance import (
    RebalanceDecision,
    RebalancePolicy,
    Trade,
    calendar_due,
    check_rebalance,
    drift_breaches,
    risk_share_drift,
    weights_from_positions,
)
from tradesys.quant.portfolio.risk_parity import (
    equal_risk_contribution,
    hierarchical_risk_parity,
    risk_budgeting,
    risk_contribution_shares,
)

__all__ = [
    "OBJECTIVES",
    "BlackLittermanResult",
    "BlackLittermanViews",
    "InfeasiblePortfolioError",
    "OptimizationResult",
    "PortfolioConstraints",
    "RebalanceDecision",
    "RebalancePolicy",
    "Trade",
    "black_litterman_posterior",
    "calendar_due",
    "check_rebalance",
    "drift_breaches",
    "efficient_frontier",
    "equal_risk_contribution",
    "equilibrium_returns",
    "he_litterman_omega",
    "hierarchical_risk_parity",
    "idzorek_omega",
    "implied_risk_aversion",
    "market_weights_from_caps",
    "moments_from_returns",
    "optimize_portfolio",
    "risk_budgeting",
    "risk_contribution_shares",
    "risk_contributions",
    "risk_share_drift",
    "validate_cov",
    "view_matrix",
    "weights_from_positions",
]
