"""Risk library (pure: no Ray, no I/O except PNGs written to a given path).

Conventions for the whole package: VaR and ES are POSITIVE loss amounts (currency when the P&L is in currency,
else return units); ``alpha`` is the confidence level (0.99 = the 1% tail); horizons are in trading days.
This ``__init__`` exports the VaR/ES engines, Monte Carlo, decomposition and backtesting (modules ``var``,
``montecarlo``, ``decomposition``, ``backtest``, ``plot``); other risk modules are imported from their own
submodules.
"""

from tradesys.quant.risk.backtest import (
    BASEL_PLUS_FACTORS,
    LRTest,
    TrafficLight,
    VarBacktestReport,
    basel_traffic_light,
    christoffersen_independence,
    conditional_coverage,
    kupiec_pof,
    rolling_var_backtest,
    transition_counts,
)
from tradesys.quant.risk.decomposition import (
    VarDecomposition,
    incremental_var,
    parametric_decomposition,
    simulated_decomposition,
)
from tradesys.quant.risk.montecarlo import (
    TailEstimate,
    factor_matrix,
    mc_var,
    resolve_device,
    simulate_scenarios,
    tail_estimates,
    tail_shift,
)
from tradesys.quant.risk.plot import plot_var_backtest
from tradesys.quant.risk.var import (
    METHODS,
    PNL_METHODS,
    GPDTail,
    RiskEstimate,
    age_weights,
    check_covariance,
    cornish_fisher_var_es,
    empirical_var_es,
    estimate_var,
    ewma_covariance,
    fhs_var_es,
    gpd_tail_fit,
    normal_var_es,
    sample_covariance,
    student_t_var_es,
    var_from_pnl,
)

__all__ = [
    "BASEL_PLUS_FACTORS",
    "METHODS",
    "PNL_METHODS",
    "GPDTail",
    "LRTest",
    "RiskEstimate",
    "TailEstimate",
    "TrafficLight",
    "VarBacktestReport",
    "VarDecomposition",
    "age_weights",
    "basel_traffic_light",
    "check_covariance",
    "christoffersen_independence",
    "conditional_coverage",
    "cornish_fisher_var_es",
    "empirical_var_es",
    "estimate_var",
    "ewma_covariance",
    "factor_matrix",
    "fhs_var_es",
    "gpd_tail_fit",
    "incremental_var",
    "kupiec_pof",
    "mc_var",
    "normal_var_es",
    "parametric_decomposition",
    "plot_var_backtest",
    "resolve_device",
    "rolling_var_backtest",
    "sample_covariance",
    "simulate_scenarios",
    "simulated_decomposition",
    "student_t_var_es",
    "tail_estimates",
    "tail_shift",
    "transition_counts",
    "var_from_pnl",
]
