"""cluster.yaml validates against Ray's autoscaler schema (offline), and the schema check is not vacuous."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parents[1] / "cluster.yaml"


def _load() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def test_cluster_yaml_is_valid() -> None:
    cfg = _load()
    validate_config(prepare_config(copy.deepcopy(cfg)))
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] == "head"
    assert types["gpu_worker"]["resources"]["GPU"] == 1
    assert types["cpu_worker"]["resources"]["CPU"] > 0
    assert "GPU" not in types["head"]["resources"]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c["available_node_types"]["head"].update(bogus=1),
        lambda c: c.update(head_node_type="missing"),
        lambda c: c.update(max_workers="many"),
    ],
)
def test_schema_rejects_broken_variants(mutate) -> None:
    cfg = _load()
    mutate(cfg)
    with pytest.raises((ValueError, Exception)) as info:
        validate_config(prepare_config(cfg))
    assert info.type is not AssertionError


def test_setup_installs_the_shipped_tree_not_a_package_index_name() -> None:
    """`pip install -e ~/tradesys` needs the tree mounted there; a fallback to `pip install tradesys` would install
    whatever a package index holds under that name."""
    cfg = _load()
    assert cfg["file_mounts"].get("~/tradesys") == "."
    setup = " ".join(cfg["setup_commands"])
    assert "pip install -q -c ~/tradesys/deploy/constraints.txt -e ~/tradesys" in setup
    assert "||" not in setup and "pip install -q tradesys" not in setup


def test_versions_are_pinned_to_the_tested_environment() -> None:
    """Every dependency pinned to an exact version (deploy/constraints.txt), and that file is this environment."""
    from importlib.metadata import version

    import ray

    setup = " ".join(_load()["setup_commands"])
    assert f"ray[default,serve,tune,rllib]=={ray.__version__}'" in setup and "'torch==2.13.0'" in setup
    pins = [line for line in (CLUSTER.parent / "deploy" / "constraints.txt").read_text().splitlines()
            if line and not line.startswith("#")]
    assert pins and all("==" in line for line in pins)
    pinned = dict(line.split("==", 1) for line in pins)
    for name in ("ray", "pyarrow", "pydantic", "mlflow", "numpy", "pandas"):
        assert pinned[name] == version(name), name


def test_the_head_alone_has_the_head_resource_the_live_loop_requests() -> None:
    from tradesys.config import RayConfig

    cfg = _load()
    name = RayConfig().head_resource
    types = cfg["available_node_types"]
    assert types[cfg["head_node_type"]]["resources"][name] == 1
    assert all(name not in t["resources"] for k, t in types.items() if k != cfg["head_node_type"])
    # every node exports the shared storage settings the jobs write under (tradesys.storage), each valid
    from tradesys.storage import STORAGE_ENV, parse_storage

    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert any("export TRADESYS_RUNS_DIR=/mnt/shared/runs;" in c for c in cfg[key]), key
        values = [c.split(f"export {STORAGE_ENV}=", 1)[1].split(";", 1)[0] for c in cfg[key]
                  if f"export {STORAGE_ENV}=" in c]  # fmt: skip
        assert values == ["/mnt/shared/runs"], key
        parse_storage(values[0], setting=STORAGE_ENV)


def _wheel_variant() -> dict:
    """cluster.yaml with its documented wheel variant applied (the two `#   WHEEL ...` comment lines)."""
    lines = {k.strip(): v.strip() for line in CLUSTER.read_text().splitlines() if line.startswith("#   WHEEL ")
             for k, v in [line.removeprefix("#   WHEEL ").split(":", 1)]}  # fmt: skip
    assert set(lines) == {"file_mounts", "setup"}
    cfg = _load()
    cfg["file_mounts"] = yaml.safe_load(lines["file_mounts"])
    tree = "pip install -q -c ~/tradesys/deploy/constraints.txt -e ~/tradesys"
    assert cfg["setup_commands"].count(tree) == 1
    cfg["setup_commands"] = [lines["setup"] if c == tree else c for c in cfg["setup_commands"]]
    return cfg


def test_the_wheel_variant_ships_make_dist_and_installs_it_with_the_pins() -> None:
    """`make dist` writes dist/tradesys-*.whl (tests/test_dist.py); the variant mounts that folder and installs the
    wheel with the constraints, no editable tree and no index fallback; it still validates against Ray's schema."""
    cfg = _wheel_variant()
    validate_config(prepare_config(copy.deepcopy(cfg)))
    assert cfg["file_mounts"] == {"~/tradesys": ".", "~/tradesys-dist": "./dist"}
    makefile = (CLUSTER.parent / "Makefile").read_text()
    assert "DIST ?= dist\n" in makefile and "-w $(DIST) ." in makefile  # the folder mounted is the one make fills
    setup = " ".join(cfg["setup_commands"])
    assert "pip install -q -c ~/tradesys/deploy/constraints.txt ~/tradesys-dist/tradesys-*.whl" in setup
    assert "-e ~/tradesys" not in setup and "||" not in setup and "pip install -q tradesys" not in setup
    # rsync's .gitignore filter (which lists dist/) applies inside each mounted folder: dist/ has none of its own
    assert not (CLUSTER.parent / "dist" / ".gitignore").exists()
