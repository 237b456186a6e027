"""The Ray shell: thin actors that own state and call the pure core.

MarketDataActor -> (bars) -> ExecutionActor (OMS; talks to BrokerActor and LedgerActor), StrategyActor,
RiskActor; the Supervisor wires them, drives the clock and restarts failed children.
"""
