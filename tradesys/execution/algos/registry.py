"""Algorithms by name: `make_algo(name, params)` builds one with its parameters checked up front.

A bad parameter raises ValueError whose message starts with `<algo>.<param>` (e.g. "pov.rate: must be in (0, 1],
got 1.5"), so a strategy's or a config's mistake is refused before any child is sent. An unknown parameter is
refused the same way (an accepted setting must do what it says).

Parameters, besides `lot` (child sizes in whole lots, default 1) and `min_qty` (minimum fill quantity set on every
child, default 0) which every algorithm takes:
    market       -
    twap         slices (10), jitter (0, in [0, 1))
    vwap         curve (a VolumeCurve or its to_json() string; absent: linear in time)
    pov          rate (0.1, in (0, 1]), min_child (0), max_child (0: none), complete (true), complete_before_ns (0)
    is           risk_aversion (1e-6), sigma (0.95), eta (2.5e-6), gamma (2.5e-7), slices (10), day_seconds (23400)
    iceberg      display_qty (100)
    conditional  trigger_price (required), trigger ("above" | "below"), inner ("market"); every other key goes to
                 the inner algorithm
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from tradesys.execution.algos.base import ExecutionAlgo
from tradesys.execution.algos.iceberg import ConditionalAlgo, IcebergAlgo
from tradesys.execution.algos.market import MarketAlgo
from tradesys.execution.algos.pov import PovAlgo
from tradesys.execution.algos.shortfall import ShortfallAlgo
from tradesys.execution.algos.twap import TwapAlgo
from tradesys.execution.algos.vwap import VwapAlgo

_CONDITIONAL_KEYS = ("trigger_price", "trigger")


def _conditional(params: Mapping[str, object]) -> ExecutionAlgo:
    inner = params.get("inner", "market")
    if inner not in _BUILDERS:
        raise ValueError(f"conditional.inner: must be one of {', '.join(_BUILDERS)}, got {inner!r}")
    own = {k: v for k, v in params.items() if k in _CONDITIONAL_KEYS}
    rest = {k: v for k, v in params.items() if k not in _CONDITIONAL_KEYS and k != "inner"}
    return ConditionalAlgo.from_params(own, _BUILDERS[str(inner)](rest))


_BUILDERS: dict[str, Callable[[Mapping[str, object]], ExecutionAlgo]] = {
    "market": MarketAlgo.from_params,
    "twap": TwapAlgo.from_params,
    "vwap": VwapAlgo.from_params,
    "pov": PovAlgo.from_params,
    "is": ShortfallAlgo.from_params,
    "iceberg": IcebergAlgo.from_params,
}

ALGOS: tuple[str, ...] = (*_BUILDERS, "conditional")


def make_algo(name: str, params: Mapping[str, object] | None = None) -> ExecutionAlgo:
    """The algorithm `name` (one of ALGOS) configured by `params`; ValueError names the bad name or parameter."""
    if params is not None and not isinstance(params, Mapping):
        raise ValueError(f"{name}.params: must be a mapping, got {params!r}")
    if name == "conditional":
        return _conditional(params or {})
    builder = _BUILDERS.get(name)
    if builder is None:
        raise ValueError(f"algo: must be one of {', '.join(ALGOS)}, got {name!r}")
    return builder(params or {})
