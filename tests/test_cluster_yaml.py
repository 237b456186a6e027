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
    assert "pip install -q -e ~/tradesys" in setup
    assert "||" not in setup and "pip install -q tradesys" not in setup
