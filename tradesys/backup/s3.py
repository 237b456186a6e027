"""Backups on S3-compatible storage: ``s3://bucket/prefix``, through boto3.

The backup is first written to a local staging folder, then uploaded file by file with `manifest.json` last, so
an interrupted upload leaves no manifest and is never restored. A restore downloads the manifest, then only the
files it lists (checksums are verified locally before anything is written). Credentials and the endpoint come
from the environment as boto3 reads them (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL` or
`AWS_ENDPOINT_URL_S3` for a non-AWS server, `AWS_DEFAULT_REGION`); none of them is ever printed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tradesys.backup.manifest import BackupError, check_relative


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split(uri: str, field: str) -> tuple[str, str]:
    """`s3://bucket/a/b` -> (`bucket`, `a/b`); BackupError naming `field` when there is no bucket."""
    rest = uri.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise BackupError(f"{field}: {uri!r} names no bucket (expected s3://bucket/prefix)")
    return bucket, prefix.strip("/")


def open_target(uri: str, field: str) -> tuple[Any, str, str]:
    """A boto3 S3 client and the (bucket, prefix) of `uri`; the bucket must exist and be reachable."""
    bucket, prefix = split(uri, field)
    try:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        raise BackupError(f"{field}: s3:// needs boto3 (pip install boto3)") from None
    client = boto3.client("s3")
    try:
        client.head_bucket(Bucket=bucket)
    except (BotoCoreError, ClientError) as exc:
        raise BackupError(f"{field}: bucket {bucket!r} is not reachable: {' '.join(str(exc).split())}") from None
    return client, bucket, prefix


def _key(prefix: str, rel: str) -> str:
    return f"{prefix}/{rel}" if prefix else rel


def check_empty(client: Any, bucket: str, prefix: str, field: str) -> None:
    listed = client.list_objects_v2(Bucket=bucket, Prefix=_key(prefix, ""), MaxKeys=1)
    if listed.get("KeyCount", 0):
        raise BackupError(f"{field}: s3://{bucket}/{prefix} already holds objects (a backup goes to a new prefix)")


def upload_tree(client: Any, bucket: str, prefix: str, root: Path, last: str) -> None:
    """Every file under `root`, `last` (the manifest) after all the others."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != last)
    for p in [*files, root / last]:
        client.upload_file(str(p), bucket, _key(prefix, p.relative_to(root).as_posix()))


def download_tree(client: Any, bucket: str, prefix: str, root: Path, manifest: str) -> None:
    """The manifest, then each file it lists; a missing manifest is the caller's error to report."""
    from botocore.exceptions import ClientError

    try:
        client.download_file(bucket, _key(prefix, manifest), str(root / manifest))
    except ClientError:
        return  # no manifest: restore_backup says so, naming SRC
    try:
        listed = json.loads((root / manifest).read_text()).get("files", [])
    except (json.JSONDecodeError, AttributeError):
        return
    for f in listed:
        rel = check_relative(str(f.get("path", "")))
        out = root / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            client.download_file(bucket, _key(prefix, rel), str(out))
        except ClientError:
            continue  # verify_files reports it as missing
