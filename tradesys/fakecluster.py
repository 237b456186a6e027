"""`ray up cluster-local.yaml`: Ray's fake multi-node provider, made usable by `ray up` on one machine.

Ray ships `FakeMultiNodeProvider` (worker "nodes" are extra raylets the autoscaler starts on this machine) but no
way to `ray up` it: its default command runner is SSH to a node id, its example config is missing from the wheel,
and it names the head type `ray.head.default`. This provider (loaded by `provider: {type: external, module:
tradesys.fakecluster.LocalFakeProvider}`) keeps Ray's node logic and changes only that: commands run in a local
shell, file mounts are local copies, the head carries the config's head type, and `ray up` may re-tag the head
(it "relaunches" a head whose launch hash changed; here the head is this machine). Nothing here is used on a real
cluster; `cluster.yaml` uses the AWS provider with the same node types.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider
from ray.autoscaler.command_runner import CommandRunnerInterface
from ray.autoscaler.tags import NODE_KIND_HEAD, TAG_RAY_NODE_KIND, TAG_RAY_USER_NODE_TYPE


class LocalShellRunner(CommandRunnerInterface):
    """Runs a node's commands in a local `bash -c` (the node is this machine); rsync is a local copy."""

    def __init__(self, log_prefix: str, **_ignored: Any) -> None:
        self.log_prefix = log_prefix

    def run(
        self,
        cmd: str | None = None,
        timeout: int = 120,
        exit_on_fail: bool = False,
        port_forward: Any = None,
        with_output: bool = False,
        environment_variables: dict[str, object] | None = None,
        run_env: str = "auto",
        ssh_options_override_ssh_key: str = "",
        shutdown_after_run: bool = False,
    ) -> str:
        if not cmd:
            return ""
        env = dict(os.environ)
        for key, value in (environment_variables or {}).items():
            env[key] = value if isinstance(value, str) else json.dumps(value)
        # no timeout: `ray start` and the setup commands take what they take (the updater has its own deadline)
        proc = subprocess.run(["bash", "-c", cmd], env=env, stdin=subprocess.DEVNULL, text=True,
                              capture_output=with_output)
        if proc.returncode != 0:
            if exit_on_fail:
                sys.exit(proc.returncode)
            raise subprocess.CalledProcessError(proc.returncode, cmd, proc.stdout, proc.stderr)
        return proc.stdout if with_output else ""

    def run_rsync_up(self, source: str, target: str, options: Any = None) -> None:
        _copy(Path(source).expanduser(), Path(target).expanduser())

    def run_rsync_down(self, source: str, target: str, options: Any = None) -> None:
        _copy(Path(source).expanduser(), Path(target).expanduser())

    def remote_shell_command_str(self) -> str:
        return "bash"

    def run_init(self, *, as_head: bool, file_mounts: dict[str, str], sync_run_yet: bool) -> None:
        return None


def _copy(src: Path, dst: Path) -> None:
    if src.resolve() == dst.resolve():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst, dirs_exist_ok=True, symlinks=True)
    else:
        shutil.copy2(src, dst)


class LocalFakeProvider(FakeMultiNodeProvider):
    """Ray's fake multi-node provider with a local shell runner and the head type taken from the config."""

    def __init__(self, provider_config: dict[str, Any], cluster_name: str) -> None:
        super().__init__(provider_config, cluster_name)
        self._head_type = str(provider_config.get("head_node_type", "head"))
        self._nodes[self._head_node_id]["tags"][TAG_RAY_USER_NODE_TYPE] = self._head_type

    def get_command_runner(self, log_prefix: str, node_id: str, auth_config: dict[str, Any], cluster_name: str,
                           process_runner: Any, use_internal_ip: bool,
                           docker_config: dict[str, Any] | None = None) -> CommandRunnerInterface:
        return LocalShellRunner(log_prefix)

    def set_node_tags(self, node_id: str, tags: dict[str, str]) -> None:
        with self.lock:
            self._nodes[node_id]["tags"].update(tags)

    def create_node(self, node_config: dict[str, Any], tags: dict[str, str], count: int) -> None:
        """Only `ray up` creates a head this way: the head is this machine, so it is re-registered, not started."""
        if tags.get(TAG_RAY_NODE_KIND) != NODE_KIND_HEAD:
            raise NotImplementedError("workers are created with resources (create_node_with_resources_and_labels)")
        with self.lock:
            self._nodes[self._head_node_id] = {"tags": {**tags, TAG_RAY_USER_NODE_TYPE: self._head_type}}

    def terminate_node(self, node_id: str) -> None:
        if node_id == self._head_node_id:  # `ray up` relaunching the head: forget the entry, stop nothing
            with self.lock:
                self._nodes.pop(node_id, None)
            return
        super().terminate_node(node_id)
