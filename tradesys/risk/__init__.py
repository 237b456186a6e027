"""The live risk gate: pre-trade checks every order passes before it reaches the broker.

(Portfolio risk measures, VaR and stress tests, live in tradesys.quant.risk.)
"""

from tradesys.risk.pretrade import PreTradeRisk, RiskDecision

__all__ = ["PreTradeRisk", "RiskDecision"]
