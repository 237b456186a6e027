"""Brokers: where orders go and where fills come from (the `Broker` protocol and the simulated venue)."""

from tradesys.broker.base import Broker
from tradesys.broker.sim import SimBroker

__all__ = ["Broker", "SimBroker"]
