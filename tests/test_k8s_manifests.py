"""deploy/k8s: the KubeRay manifests against the KubeRay v1 schema and against cluster.yaml.

Two independent references: the KubeRay-specific fields are checked with JSON Schema against
deploy/k8s/kuberay-v1-schema.yaml (pruned from KubeRay's Go API types; its header names the commits), and every
Kubernetes core/v1 object inside them (pod templates, env, resources, services) against the `kubernetes` client's
model classes: each field must be one the model has, of the model's type, and the model's required fields present.
Sizes and the head resource must equal cluster.yaml's node types, so the two deployments cannot drift apart.
"""

from __future__ import annotations

import copy
import importlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes.client as k8s
import pytest
import ray
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
SCHEMA = yaml.safe_load((K8S / "kuberay-v1-schema.yaml").read_text())
MANIFESTS = {p.stem: yaml.safe_load(p.read_text()) for p in sorted(K8S.glob("ray*.yaml"))}
PRIMITIVES = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object}


def _validator(kind: str) -> jsonschema.Draft202012Validator:
    schema = {
        "$defs": SCHEMA["$defs"], "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {"apiVersion": {"const": "ray.io/v1"}, "kind": {"const": kind},
                       "metadata": {"$ref": "#/$defs/metadata"}, "spec": {"$ref": f"#/$defs/{SCHEMA['kinds'][kind]}"}},
    }
    return jsonschema.Draft202012Validator(schema)


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[1]]
    return node


def core_objects(schema: dict[str, Any], inst: Any, path: str) -> Iterator[tuple[str, Any, str]]:
    """(core/v1 model name, value, path) for every core/v1 object the KubeRay schema embeds."""
    schema = _resolve(schema)
    if "x-core-v1" in schema:
        yield schema["x-core-v1"], inst, path
    elif isinstance(inst, dict):
        for key, value in inst.items():
            sub = schema.get("properties", {}).get(key)
            if sub is not None:
                yield from core_objects(sub, value, f"{path}.{key}")
    elif isinstance(inst, list) and "items" in schema:
        for i, value in enumerate(inst):
            yield from core_objects(schema["items"], value, f"{path}[{i}]")


def check_core(model: str, data: Any, path: str) -> None:
    """`data` as the kubernetes client's model `model` would take it: known fields of the right types."""
    if model.lower().startswith("list["):
        assert isinstance(data, list), f"{path}: not a list"
        for i, v in enumerate(data):
            check_core(model[5:-1], v, f"{path}[{i}]")
        return
    if model.lower().startswith(("dict(", "dict[")):
        assert isinstance(data, dict), f"{path}: not a mapping"
        for k, v in data.items():
            check_core(model[5:-1].split(", ", 1)[1], v, f"{path}.{k}")
        return
    if model in PRIMITIVES:
        assert isinstance(data, PRIMITIVES[model]), f"{path}: {data!r} is not {model}"
        return
    cls = getattr(k8s, model)
    assert isinstance(data, dict), f"{path}: {model} must be a mapping"
    by_json = {j: a for a, j in cls.attribute_map.items()}
    for key, value in data.items():
        assert key in by_json, f"{path}.{key}: not a field of {model}"
        check_core(cls.openapi_types[by_json[key]], value, f"{path}.{key}")
    # required fields: the model's constructor refuses None for them (client-side validation)
    k8s.ApiClient()._ApiClient__deserialize(data, model)


def validate(doc: dict[str, Any]) -> None:
    errors = sorted(_validator(doc.get("kind", "?")).iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "; ".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)
    spec_schema = {"$ref": f"#/$defs/{SCHEMA['kinds'][doc['kind']]}"}
    for model, value, path in core_objects(spec_schema, doc["spec"], "spec"):
        check_core(model, value, path)


@pytest.mark.parametrize("name", ["raycluster", "rayjob", "rayservice"])
def test_manifest_matches_kuberay_schema(name: str) -> None:
    validate(MANIFESTS[name])


BROKEN = {
    "unknown KubeRay field": lambda d: d["spec"]["workerGroupSpecs"][0].update(minWorkers=0),
    "enum": lambda d: d["spec"]["autoscalerOptions"].update(upscalingMode="Fast"),
    "KubeRay required field": lambda d: d["spec"]["workerGroupSpecs"][0].pop("groupName"),
    "rayStartParams values are strings": lambda d: d["spec"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": 8}),
    "unknown core/v1 field": lambda d: d["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0].update(img="x"),
    "core/v1 type": lambda d: d["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"][0].update(
        containerPort="6379"),
    "core/v1 required field": lambda d: d["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0].pop("name"),
}


@pytest.mark.parametrize("what", sorted(BROKEN))
def test_schema_check_is_not_vacuous(what: str) -> None:
    doc = copy.deepcopy(MANIFESTS["raycluster"])
    BROKEN[what](doc)
    with pytest.raises((AssertionError, ValueError)):
        validate(doc)


def _groups(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    groups = {"head": spec["headGroupSpec"]}
    groups.update({g["groupName"].replace("-", "_"): g for g in spec["workerGroupSpecs"]})
    return groups


def test_same_node_types_sizes_and_versions_as_cluster_yaml() -> None:
    cluster = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    types = cluster["available_node_types"]
    spec = MANIFESTS["raycluster"]["spec"]
    groups = _groups(spec)
    assert set(groups) == set(types)
    for name, group in groups.items():
        want = types[name]["resources"]
        params = group["rayStartParams"]
        (container,) = group["template"]["spec"]["containers"]
        limits = container["resources"]["limits"]
        assert int(params["num-cpus"]) == want["CPU"] == int(limits["cpu"]), name
        assert int(params.get("num-gpus", 0)) == want.get("GPU", 0) == int(limits.get("nvidia.com/gpu", 0)), name
        custom = json.loads(json.loads(params["resources"])) if "resources" in params else {}
        assert custom == {k: v for k, v in want.items() if k not in {"CPU", "GPU"}}, name
        assert container["resources"]["requests"] == limits, name  # guaranteed QoS: the scheduler's sizes are real
        if name != "head":
            assert (group["minReplicas"], group["maxReplicas"]) == (types[name]["min_workers"],
                                                                    types[name]["max_workers"]), name
    assert spec["rayVersion"] == ray.__version__
    assert f"ray[default,serve,tune,rllib]=={ray.__version__}" in " ".join(cluster["setup_commands"])
    assert "FROM ${BASE}" in (ROOT / "deploy" / "Dockerfile").read_text()
    assert f"ARG BASE=rayproject/ray:{ray.__version__}-py311" in (ROOT / "deploy" / "Dockerfile").read_text()
    # one cluster shape: the RayJob's and the RayService's clusters are the RayCluster's spec
    assert MANIFESTS["rayjob"]["spec"]["rayClusterSpec"] == spec
    assert MANIFESTS["rayservice"]["spec"]["rayClusterConfig"] == spec


def test_rayservice_builders_resolve_and_pin_the_api_to_the_head(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADESYS_API_KEY", "k" * 32)
    apps = yaml.safe_load(MANIFESTS["rayservice"]["spec"]["serveConfigV2"])["applications"]
    builders = {}
    for app in apps:
        module, attr = app["import_path"].split(":")
        builders[app["name"]] = (getattr(importlib.import_module(module), attr), app.get("args", {}))
    build, args = builders["api"]
    deployment = build(args)._bound_deployment
    assert deployment.ray_actor_options["resources"] == {"head": pytest.approx(0.001)}
    assert callable(builders["models"][0])
