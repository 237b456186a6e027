"""Serve application builders for a Serve config file (KubeRay's RayService `serveConfigV2`, `serve deploy`).

A Serve config names an application as `module:builder` and hands the builder its `args` as one dict of strings.
`tradesys serve` builds the same applications from the tradesys config instead; these builders are for clusters
that are given a Serve config (deploy/k8s/rayservice.yaml). Secrets never travel in `args` (the config is stored
in the cluster's custom resource): the API key is read from `serve.api_key_env`'s variable and the ledger URL, which
may carry a password, from `$TRADESYS_LEDGER_URL` when `ledger_url` is not given.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ray import serve

from tradesys.config import ConfigError

LEDGER_URL_ENV = "TRADESYS_LEDGER_URL"


def _int(args: Mapping[str, object], key: str, default: int) -> int:
    try:
        return int(str(args.get(key, default)))
    except ValueError:
        raise ConfigError(f"{key}: must be an integer, got {args.get(key)!r}") from None


def api_app(args: Mapping[str, object]) -> serve.Application:
    """The HTTP API (`TradesysAPI`); args: ledger_url, replicas, head_resource (default "head": on the head)."""
    from tradesys.serve.app import build_app

    url = str(args.get("ledger_url") or os.environ.get(LEDGER_URL_ENV) or "") or None
    return build_app(url, replicas=_int(args, "replicas", 1), head_resource=str(args.get("head_resource", "head")))


def predict_app(args: Mapping[str, object]) -> serve.Application:
    """Model serving (`PredictRouter` over the live and research model servers); args: model_dir, champion,
    challenger, canary_percent, live_replicas, research_replicas."""
    from tradesys.serve.predict import build_predict_app

    for key in ("model_dir", "champion"):
        if not args.get(key):
            raise ConfigError(f"{key}: required in the predict application's args")
    challenger = args.get("challenger")
    try:
        canary = float(str(args.get("canary_percent", 0.0)))
    except ValueError:
        raise ConfigError(f"canary_percent: must be a number, got {args.get('canary_percent')!r}") from None
    return build_predict_app(
        str(args["model_dir"]), champion=str(args["champion"]), challenger=None if not challenger else str(challenger),
        canary_percent=canary, live_replicas=_int(args, "live_replicas", 1),
        research_replicas=_int(args, "research_replicas", 1),
    )
