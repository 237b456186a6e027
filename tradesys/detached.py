"""A live loop that outlives its driver: `tradesys live --detach`, `tradesys status [RUN]`, `tradesys stop RUN`.

The Supervisor is a detached, named actor (`<run id>:supervisor` in the Ray namespace `tradesys`) that runs the loop
on a thread of its own (`Supervisor.start`), so no driver's pending call holds it: the command that started it
returns at once, and any shell that can reach the cluster watches or stops it by run id. Its children are named
`<run id>:<role>` and owned by the Supervisor, so they live and die with it (Ray keeps a detached actor's whole
tree when the job that created it ends).

A detached run needs a cluster that outlives the command, so there is no throw-away local head here: the cluster is
`ray.address`, else `$RAY_ADDRESS`, else the one the last `ray start --head` on this machine recorded (in Ray's temp
dir, `$RAY_TMPDIR`). With none, the command refuses in one line and says to run `ray start --head`. A token in
`~/.ray/auth_token` is sent (RAY_AUTH_MODE=token), as the head that `ray start` turned token auth on expects.

A detached Supervisor is created with `max_restarts` and `autostart`: if its node dies, Ray starts it elsewhere and
it resumes the loop from the ledger by itself.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from tradesys import logs
from tradesys.config import ConfigError, TradesysConfig, redact_url, save_run_config

NAMESPACE = "tradesys"
SUPERVISOR = "supervisor"
NO_CLUSTER = (
    "no running Ray cluster to hold a detached run: start one with `ray start --head` (then this command finds it, "
    "or set RAY_ADDRESS to the address it prints), or set ray.address"
)


class UnknownRunError(LookupError):
    """The run id names no detached run on the cluster (one line for the user)."""


def supervisor_name(run_id: str) -> str:
    return f"{run_id}:{SUPERVISOR}"


def cluster_address(cfg: TradesysConfig | None = None) -> str:
    """The cluster a detached run lives on: ray.address, $RAY_ADDRESS, else "auto" (a local `ray start --head`)."""
    return (cfg.ray.address if cfg is not None else None) or os.environ.get("RAY_ADDRESS") or "auto"


def connect(address: str, field: str = "RAY_ADDRESS") -> None:
    """Join the cluster in the `tradesys` namespace; ConfigError (one line) when there is none to join."""
    import ray

    if ray.is_initialized():
        return
    if address == "auto":
        from ray._private.services import get_ray_address_from_environment

        try:  # the address the last `ray start` recorded (Ray's temp dir, $RAY_TMPDIR), never any Ray found running
            address = get_ray_address_from_environment(None, None) or ""
        except Exception:
            address = ""
        if not address or address == "auto":
            raise ConfigError(NO_CLUSTER)
    _match_cluster(address)
    try:
        logs.ray_messages_to_stderr()  # stdout is the command's output (--json)
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level="ERROR")
    except ConnectionError as exc:
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        raise ConfigError(f"{field}: cannot join the Ray cluster at {redact_url(address)}: {lines[-1]}") from None
    except Exception as exc:  # a malformed address, an auth mismatch
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        raise ConfigError(f"{field}: cannot join the Ray cluster at {redact_url(address)}: {lines[-1]}") from None


def _match_cluster(address: str) -> None:
    """Join as a `ray start` user would: a loopback head is on this machine (join it as 127.0.0.1, not the machine's
    address), and a token in `~/.ray/auth_token` means the head turned token auth on (send it)."""
    from tradesys import localray

    host = address.split("://")[-1].rsplit(":", 1)[0]
    if host in ("127.0.0.1", "localhost"):
        localray.join_as_single_machine()
    if "RAY_AUTH_MODE" not in os.environ and (os.environ.get("RAY_AUTH_TOKEN") or localray.token_path().is_file()):
        from ray._raylet import Config

        os.environ["RAY_AUTH_MODE"] = "token"
        Config.initialize("")  # Ray read the mode when it was imported: refresh it


def start_detached(cfg: TradesysConfig, run_id: str | None = None) -> dict[str, Any]:
    """Start a detached Supervisor that runs the loop by itself; return {run_id, ledger_url, address} at once.

    The ledger URL is resolved here (absolute, so the actors find it from any working directory); a run on a
    multi-node cluster needs it on storage the head sees, which is where the ledger and Supervisor run.
    """
    import ray

    from tradesys.actors.supervisor import Supervisor
    from tradesys.live import check_settings, new_run_id, resolve_ledger_url
    from tradesys.placement import check_head_resource, head_options

    run_id = run_id or new_run_id()
    check_settings(cfg)
    address = cluster_address(cfg)
    connect(address, "ray.address" if cfg.ray.address else "RAY_ADDRESS")
    try:
        name = supervisor_name(run_id)
        try:
            ray.get_actor(name, namespace=NAMESPACE)
            raise ConfigError(f"run: {run_id} is already running on this cluster (tradesys status {run_id})")
        except ValueError:
            pass
        ledger_url = resolve_ledger_url(cfg, run_id)
        if cfg.ledger.url is None:
            save_run_config(cfg, Path(ledger_url.removeprefix("sqlite:///")).parent)
        check_head_resource(cfg.ray.head_resource, ray.cluster_resources())  # else it would wait forever
        # restartable: if its node dies, Ray starts it elsewhere and it resumes from the ledger (autostart)
        sup = Supervisor.options(
            name=name, namespace=NAMESPACE, lifetime="detached", max_restarts=cfg.ray.max_restarts,
            **head_options(cfg.ray.head_resource),
        ).remote(cfg, ledger_url, run_id, None, "", True)
        try:
            ray.get(sup.start.remote())  # returns once the children are up and the loop's thread has started
        except Exception as exc:
            from tradesys.live import resume_command, user_error

            ray.kill(sup)
            raise user_error(exc, cfg, ledger_url, resume_command(ledger_url)) from None
        gcs = ray.get_runtime_context().gcs_address
        return {"run_id": run_id, "ledger_url": redact_url(ledger_url), "address": gcs}
    finally:
        ray.shutdown()


def _supervisor(run_id: str) -> Any:
    import ray

    try:
        return ray.get_actor(supervisor_name(run_id), namespace=NAMESPACE)
    except ValueError:
        raise UnknownRunError(
            f"run: no detached run {run_id!r} on the cluster at {ray.get_runtime_context().gcs_address} "
            "(`tradesys status` lists them)"
        ) from None


def run_ids() -> list[str]:
    """The run ids of the detached Supervisors on the cluster `ray` is connected to."""
    import ray

    names = ray.util.list_named_actors(all_namespaces=True)
    suffix = f":{SUPERVISOR}"
    return sorted(n["name"].removesuffix(suffix) for n in names
                  if n.get("namespace") == NAMESPACE and n["name"].endswith(suffix))


def status(run_id: str | None = None, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """Progress of one run (or every detached run): run id, state, step/total, equity, restarts, ledger."""
    import ray

    ids = [run_id] if run_id is not None else run_ids()
    out = []
    for rid in ids:
        sup = _supervisor(rid)
        try:
            p = ray.get(sup.status.remote(), timeout=timeout_s)
        except Exception as exc:  # a dead or unreachable Supervisor is reported, not raised
            p = {"state": f"unreachable ({type(exc).__name__})"}
        out.append({"run_id": rid, **p})
    return out


def stop(run_id: str, reason: str = "stopped by tradesys stop", timeout_s: float = 300.0) -> dict[str, Any]:
    """Finish the step in flight, write the shutdown audit, release the actors; return the run's summary.

    A run that already ended (data exhausted, or failed) is released the same way, with its summary or error.
    """
    import ray

    from tradesys.live import RunError

    sup = _supervisor(run_id)
    ray.get(sup.stop.remote(reason), timeout=60)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            res = ray.get(sup.result.remote(), timeout=60)
            if res is not None:
                break
            if time.monotonic() > deadline:
                raise RunError(f"run {run_id} did not stop within {timeout_s:.0f} s; it is still running")
            time.sleep(0.25)
    except ray.exceptions.RayError as exc:
        ray.kill(sup)
        raise RunError(f"the Supervisor of run {run_id} died ({type(exc).__name__}); its ledger holds every booked "
                       "step: resume with `tradesys live` on the same ledger.url") from None
    ray.kill(sup)  # its children are owned by it and go with it
    if "error" in res:
        raise RunError(f"run {run_id} failed: {res['error']}")
    summary = dict(res["summary"])
    summary["ledger_url"] = redact_url(str(summary.get("ledger_url", "")))
    return summary
