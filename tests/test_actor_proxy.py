"""ActorProxy against a real Ray actor: a restart slower than the retries' back-off is waited for, not counted as
another death (a loaded machine restarts actors slowly; the run must go on), and a dead-for-good actor still fails."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import ray

from tradesys.actors.proxy import ActorProxy


@ray.remote(max_restarts=1, max_task_retries=0)
class SlowToRestart:
    """Counts its lives in a file; every life after the first takes `delay_s` to start."""

    def __init__(self, lives: str, delay_s: float) -> None:
        path = Path(lives)
        n = int(path.read_text()) + 1 if path.exists() else 1
        path.write_text(str(n))
        if n > 1:
            time.sleep(delay_s)
        self.n = n

    def life(self) -> int:
        return self.n

    def die(self) -> None:
        os._exit(1)


@pytest.mark.ray
def test_a_slow_restart_is_waited_for_and_counted_once(ray_session: None, tmp_path: Path) -> None:
    actor = SlowToRestart.remote(str(tmp_path / "lives"), 4.0)
    seen: list[str] = []
    proxy = ActorProxy(actor, "slow", retries=1, timeout_s=60, on_restart=lambda n, m, e: seen.append(m))
    assert proxy.life() == 1
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(actor.die.remote())
    t0 = time.monotonic()
    assert proxy.life() == 2  # one retry, however many "restarting" answers came before the actor was back
    assert time.monotonic() - t0 >= 3.0
    assert len(seen) <= 1
    ray.kill(actor, no_restart=True)
    # ray.kill is asynchronous: a call sent at once can still be served before the kill lands (it did on CI), so wait
    # until Ray itself reports the actor dead, then the proxy must fail rather than retry forever
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            ray.get(actor.life.remote(), timeout=10)
        except ray.exceptions.RayActorError:
            break
        time.sleep(0.1)
    with pytest.raises(ray.exceptions.RayActorError):
        proxy.life()
