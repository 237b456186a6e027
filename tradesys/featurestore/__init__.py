"""Feature store: versioned definitions, an offline Parquet store with point-in-time joins, an online store.

See docs/feature-store.md for the layout, the point-in-time rule and the online-store contract.
"""

from __future__ import annotations

from tradesys.featurestore.definitions import FeatureDefinition, FeatureRegistry, transform_fingerprint
from tradesys.featurestore.offline import FeatureRef, OfflineStore, asof_indices
from tradesys.featurestore.online import (
    EVENT_TS,
    InMemoryOnlineStore,
    OnlineStore,
    RedisOnlineStore,
    materialize,
)

__all__ = [
    "EVENT_TS",
    "FeatureDefinition",
    "FeatureRef",
    "FeatureRegistry",
    "InMemoryOnlineStore",
    "OfflineStore",
    "OnlineStore",
    "RedisOnlineStore",
    "asof_indices",
    "materialize",
    "transform_fingerprint",
]
