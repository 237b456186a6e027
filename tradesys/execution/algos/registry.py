"""Algorithms by name: `make_algo(name, params)` builds one with its parameters checked up front.

A bad parameter raises ValueError whose message starts with `<algo>.<param>` (e.g. "pov.rate: must be in (0, 1],
got 1.5"), so a strategy's or a config's mistake is refused before any child is sent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from tradesys.execution.algos.base import ExecutionAlgo
from tradesys.execution.algos.market import MarketAlgo
from tradesys.execution.algos.twap import TwapAlgo

_BUILDERS: dict[str, Callable[[Mapping[str, object]], ExecutionAlgo]] = {
    "market": MarketAlgo.from_params,
    "twap": TwapAlgo.from_params,
}

ALGOS: tuple[str, ...] = tuple(_BUILDERS)


def make_algo(name: str, params: Mapping[str, object] | None = None) -> ExecutionAlgo:
    """The algorithm `name` (one of ALGOS) configured by `params`; ValueError names the bad name or parameter."""
    builder = _BUILDERS.get(name)
    if builder is None:
        raise ValueError(f"algo: must be one of {', '.join(ALGOS)}, got {name!r}")
    if params is not None and not isinstance(params, Mapping):
        raise ValueError(f"{name}.params: must be a mapping, got {params!r}")
    return builder(params or {})
