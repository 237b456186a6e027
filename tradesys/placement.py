"""Where the stateful actors run: on the head node, pinned by a custom resource only the head declares.

Why a custom resource and not a node id: on an autoscaled cluster the head is the one node that is neither spot nor
scaled down, but its id is known only at run time. `cluster.yaml` and `cluster-local.yaml` give the head
`resources: {"head": 1}` (config `ray.head_resource`); the Supervisor, its children and the API's Serve replicas
request a sliver of it (`HEAD_SHARE`, so a thousand of them fit in one unit and none waits for another), and so do the
replicas of `tradesys models serve` and of the Serve config builders (`tradesys.serve.deploy.pin_to_head`). The local
clusters the CLI and the tests start declare it too. A cluster where no node has it is refused up front, naming the
setting: an actor asking for it would otherwise wait forever.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tradesys.config import ConfigError

HEAD_SHARE = 0.001  # Ray resources are exact to 1e-4: 1,000 pinned actors per unit of the head's resource


def head_resources(resource: str) -> dict[str, float]:
    """The `resources` option that keeps an actor or replica on the head; empty when pinning is off ("")."""
    return {resource: HEAD_SHARE} if resource else {}


def head_options(resource: str) -> dict[str, Any]:
    """Actor `.options(...)` keyword arguments for `head_resources` (nothing when pinning is off)."""
    res = head_resources(resource)
    return {"resources": res} if res else {}


def local_head_resources(resource: str) -> dict[str, float]:
    """What a one-node local cluster declares so pinned actors can run on it: one unit of the head resource."""
    return {resource: 1.0} if resource else {}


def check_head_resource(resource: str, cluster_resources: Mapping[str, float]) -> None:
    """Refuse a cluster that lacks the head resource (ConfigError naming `ray.head_resource`)."""
    if resource and float(cluster_resources.get(resource, 0.0)) < HEAD_SHARE:
        raise ConfigError(
            f"ray.head_resource: no node of this Ray cluster has the custom resource {resource!r}; give the head "
            f"node `resources: {{\"{resource}\": 1}}` (cluster.yaml does) or set ray.head_resource=\"\" to not pin "
            "the live loop, the API and the model replicas to the head"
        )
