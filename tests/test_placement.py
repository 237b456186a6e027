"""ray.head_resource: the live loop and the API ask for the head's custom resource, and a cluster without it is
refused up front (naming the setting) instead of leaving the Supervisor pending forever. The same for the replicas of
`tradesys models serve` and of the Serve config builders (tradesys/serve/deploy.py)."""

from __future__ import annotations

import json

import pytest

from tests import test_cli_models as cli_models
from tradesys.config import ConfigError, load_config
from tradesys.placement import HEAD_SHARE, check_head_resource, head_options, local_head_resources

built, runs = cli_models.built, cli_models.runs  # fixtures: a real MLflow registry with exported versions


def test_options_request_a_sliver_and_empty_turns_pinning_off() -> None:
    assert head_options("head") == {"resources": {"head": HEAD_SHARE}}
    assert head_options("") == {} and local_head_resources("") == {}
    assert local_head_resources("head") == {"head": 1.0}
    # a thousand pinned actors fit in the one unit a head declares
    assert local_head_resources("head")["head"] >= 1000 * HEAD_SHARE


def test_a_cluster_without_the_resource_is_refused_naming_the_setting() -> None:
    check_head_resource("head", {"CPU": 4.0, "head": 1.0})
    check_head_resource("", {"CPU": 4.0})
    with pytest.raises(ConfigError, match=r"^ray\.head_resource: no node .* 'head'"):
        check_head_resource("head", {"CPU": 4.0})


def test_the_setting_is_validated() -> None:
    assert load_config().ray.head_resource == "head"
    assert load_config(overrides=["ray.head_resource="]).ray.head_resource == ""
    with pytest.raises(ConfigError, match=r"ray\.head_resource"):
        load_config(overrides=["ray.head_resource=a b"])


@pytest.mark.ray
def test_live_run_on_a_ray_without_the_resource_is_refused(ray_session, tmp_path) -> None:
    from tradesys.live import run_live

    cfg = load_config(overrides=["ray.head_resource=no_such_node_resource", f"ledger.runs_dir={tmp_path}",
                                 "data.start=2020-01-01", "data.end=2020-02-01"])
    with pytest.raises(ConfigError, match=r"^ray\.head_resource: no node .*'no_such_node_resource'"):
        run_live(cfg, show_progress=False)


def _deployments(app) -> dict[str, dict]:
    """Every deployment bound into a Serve application (at any depth): name -> its ray_actor_options."""
    from ray import serve

    out: dict[str, dict] = {}

    def walk(a) -> None:
        dep = a._bound_deployment
        out[dep.name] = dict(dep.ray_actor_options or {})
        for x in (*dep.init_args, *dep.init_kwargs.values()):
            if isinstance(x, serve.Application):
                walk(x)

    walk(app)
    return out


def test_models_serve_pins_every_replica_to_the_head(runs, tmp_path, monkeypatch) -> None:
    """`tradesys models serve`: the router and both model servers ask for the head resource (on top of their CPUs),
    as the API's replicas do; --head-resource "" leaves them unpinned; a bad name is refused in one line."""
    KEY, cli = cli_models.KEY, cli_models.cli
    from tradesys.commands.models import _build_app


    monkeypatch.setenv("TRADESYS_API_KEY", KEY)
    r = cli(runs, "serve", "--dry-run", "--dest", str(tmp_path / "m"))
    assert r.exit_code == 0, r.output
    plan = json.loads(r.stdout)
    assert plan["head_resource"] == "head"
    pinned = _deployments(_build_app(plan))
    assert set(pinned) == {"PredictRouter", "ModelServerLive", "ModelServerResearch"}
    for name, opts in pinned.items():
        assert opts["resources"] == {"head": HEAD_SHARE}, name
    assert pinned["ModelServerLive"]["num_cpus"] == 1.0 and pinned["PredictRouter"]["num_cpus"] == 0
    free = _deployments(_build_app({**plan, "head_resource": ""}))
    assert all("resources" not in o for o in free.values()) and free["ModelServerLive"]["num_cpus"] == 1.0
    bad = cli(runs, "serve", "--dry-run", "--head-resource", "a b", "--dest", str(tmp_path / "b"))
    assert bad.exit_code == 2 and bad.output.strip().splitlines() == [
        "error: --head-resource: 'a b' is not a resource name (letters, digits, _ . -)"]


def test_the_serve_config_builders_pin_to_the_head(tmp_path, monkeypatch) -> None:
    """deploy.py's builders (KubeRay's serveConfigV2): the API and the predict application on the head by default."""
    from tradesys.serve.deploy import api_app, pin_to_head, predict_app

    monkeypatch.setenv("TRADESYS_API_KEY", "k" * 32)
    assert _deployments(api_app({}))["TradesysAPI"]["resources"] == {"head": HEAD_SHARE}
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "model.onnx").write_bytes(b"not read while building")
    deps = _deployments(predict_app({"model_dir": str(tmp_path), "champion": "1"}))
    assert all(o["resources"] == {"head": HEAD_SHARE} for o in deps.values()) and len(deps) == 3
    off = _deployments(predict_app({"model_dir": str(tmp_path), "champion": "1", "head_resource": ""}))
    assert all("resources" not in o for o in off.values())
    # a deployment's own custom resources are kept beside the head's
    from ray import serve

    @serve.deployment(ray_actor_options={"num_cpus": 2, "resources": {"sim_gpu": 1}})
    class Leaf:
        pass

    @serve.deployment
    class Root:
        def __init__(self, a, b) -> None:
            pass

    leaf = Leaf.bind()
    got = _deployments(pin_to_head(Root.bind(leaf, b=leaf), "head"))
    assert got["Leaf"] == {"num_cpus": 2, "resources": {"sim_gpu": 1, "head": HEAD_SHARE}}
    assert got["Root"]["resources"] == {"head": HEAD_SHARE}


@pytest.mark.ray
def test_models_serve_on_a_ray_without_the_resource_is_refused(ray_session, runs, tmp_path, monkeypatch) -> None:
    KEY, cli = cli_models.KEY, cli_models.cli
    monkeypatch.setenv("TRADESYS_API_KEY", KEY)
    r = cli(runs, "serve", "--head-resource", "no_such_node_resource", "--dest", str(tmp_path / "m"))
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: --head-resource: no node of this Ray cluster has the custom resource 'no_such_node_resource'")
