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
    # every node exports the shared storage setting the jobs write under
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert any("export TRADESYS_RUNS_DIR=/mnt/shared/runs;" in c for c in cfg[key]), key
