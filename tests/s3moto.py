"""moto's S3-compatible server on loopback, shared by the tests that write to S3 (backups, training storage).

`moto_s3(bucket)` starts ``python -m moto.server`` on a free port, waits for it, creates `bucket`, and yields a
boto3 client and the environment (``AWS_ENDPOINT_URL``, dummy credentials, region) that boto3, MLflow and pyarrow
read to reach it; the server is stopped afterwards. moto is in the dev extra: a missing package fails, it does not
skip.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.conftest import free_port


@contextmanager
def moto_s3(bucket: str) -> Iterator[tuple[Any, dict[str, str]]]:
    """(boto3 S3 client, the environment to set) for a fresh moto server holding an empty `bucket`."""
    import boto3
    import moto.server  # noqa: F401 - in the dev extra: a missing package fails, it does not skip

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, "moto server did not start"
                time.sleep(0.1)
        url = f"http://127.0.0.1:{port}"
        # MLFLOW_S3_ENDPOINT_URL too: MLflow caches its boto3 client keyed on that variable, not on AWS_ENDPOINT_URL,
        # so a second server in the same process would otherwise get the first one's (dead) client
        env = {"AWS_ENDPOINT_URL": url, "MLFLOW_S3_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
        client = boto3.client("s3", endpoint_url=url, aws_access_key_id="testing",
                              aws_secret_access_key="testing", region_name="us-east-1")  # fmt: skip
        client.create_bucket(Bucket=bucket)
        yield client, env
    finally:
        proc.terminate()
        proc.wait(timeout=30)
