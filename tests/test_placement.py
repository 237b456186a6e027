"""ray.head_resource: the live loop and the API ask for the head's custom resource, and a cluster without it is
refused up front (naming the setting) instead of leaving the Supervisor pending forever."""

from __future__ import annotations

import pytest

from tradesys.config import ConfigError, load_config
from tradesys.placement import HEAD_SHARE, check_head_resource, head_options, local_head_resources


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
