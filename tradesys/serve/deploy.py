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
from typing import Any

from ray import serve

from tradesys.config import ConfigError
from tradesys.placement import head_resources

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


def pin_to_head(app: serve.Application, resource: str) -> serve.Application:
    """`app` with every deployment in it (the ingress and each deployment bound into it, at any depth) asking for a
    sliver of the head's custom resource (`tradesys.placement.head_resources`), on top of its own actor options;
    `app` itself when `resource` is "" (pinning off).

    Walks the bound application as Serve's own builder does (``Application._bound_deployment``, its init args): a
    builder need not know about placement, and one function pins the API, the predict router and its model servers
    alike. tests/test_placement.py checks the result on Ray's Serve, so a Serve that changes this shape fails there.
    """
    if not resource:
        return app
    done: dict[int, serve.Application] = {}

    def pin(a: serve.Application) -> serve.Application:
        if id(a) in done:  # one deployment bound into several places stays one deployment
            return done[id(a)]
        dep = a._bound_deployment

        def conv(x: Any) -> Any:
            return pin(x) if isinstance(x, serve.Application) else x

        args = tuple(conv(x) for x in dep.init_args)
        kwargs = {k: conv(v) for k, v in dep.init_kwargs.items()}
        opts = dict(dep.ray_actor_options or {})
        opts["resources"] = {**(opts.get("resources") or {}), **head_resources(resource)}
        done[id(a)] = out = dep.options(ray_actor_options=opts).bind(*args, **kwargs)
        return out

    return pin(app)


def predict_app(args: Mapping[str, object]) -> serve.Application:
    """Model serving (`PredictRouter` over the live and research model servers); args: model_dir, champion,
    challenger, canary_percent, live_replicas, research_replicas, head_resource (default "head": every replica on
    the head, like the API's; "" places them anywhere)."""
    from tradesys.serve.predict import build_predict_app

    for key in ("model_dir", "champion"):
        if not args.get(key):
            raise ConfigError(f"{key}: required in the predict application's args")
    challenger = args.get("challenger")
    try:
        canary = float(str(args.get("canary_percent", 0.0)))
    except ValueError:
        raise ConfigError(f"canary_percent: must be a number, got {args.get('canary_percent')!r}") from None
    app = build_predict_app(
        str(args["model_dir"]), champion=str(args["champion"]), challenger=None if not challenger else str(challenger),
        canary_percent=canary, live_replicas=_int(args, "live_replicas", 1),
        research_replicas=_int(args, "research_replicas", 1),
    )
    return pin_to_head(app, str(args.get("head_resource", "head")))
