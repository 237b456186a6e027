"""Shared fixtures: one real local Ray per session, the real PostgreSQL and Redis on this machine.

When CI=true a missing server is a failure, not a skip.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"
PG_DSN = os.environ.get("TRADESYS_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TRADESYS_REDIS_URL", "redis://127.0.0.1:6379/0")


def _unavailable(what: str, why: object) -> None:
    msg = f"{what} is not reachable: {why}"
    if IN_CI:
        pytest.fail(msg + " (CI=true: a missing server is a failure)")
    pytest.skip(msg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """A real local Ray runtime shared by the whole test session."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",  # always a fresh local runtime, even when another cluster runs on this machine
            num_cpus=4,
            include_dashboard=False,
            log_to_driver=False,
            ignore_reinit_error=True,
            runtime_env={"env_vars": {"PYTHONPATH": os.getcwd()}},
        )
    yield
    ray.shutdown()


@pytest.fixture()
def pg_dsn() -> Iterator[str]:
    """A DSN on the real PostgreSQL whose search_path is a fresh schema, dropped afterwards."""
    try:
        import psycopg

        admin = psycopg.connect(PG_DSN, autocommit=True, connect_timeout=3)
    except Exception as exc:  # connection refused, auth, missing driver
        _unavailable("PostgreSQL at " + PG_DSN, exc)
    schema = "t_" + uuid.uuid4().hex[:12]
    admin.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_DSN else "?"
    yield f"{PG_DSN}{sep}options=-csearch_path%3D{schema}"
    admin.execute(f"DROP SCHEMA {schema} CASCADE")
    admin.close()


@pytest.fixture()
def redis_url() -> str:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:
        _unavailable("Redis at " + REDIS_URL, exc)
    return REDIS_URL


# The session-wide Kafka-protocol broker fixture; imported last because tests.tansu imports IN_CI and free_port.
from tests.tansu import tansu_broker  # noqa: E402, F401
