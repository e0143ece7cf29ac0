"""Replica URLs: ``s3://BUCKET/PREFIX``, the root of a whole storage folder in object storage.

Parsing refuses anything but ``s3://`` with a bucket, and a prefix with empty, ``.`` or ``..``
parts. The endpoint, region and credentials come from the usual ``AWS_*`` variables, read by
obstore itself (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_REGION``, ...). A plain ``http://`` endpoint is refused unless it was allowed explicitly
(``LOGKV_REPLICA_ALLOW_HTTP``, ``Configuration.replica_allow_http``): credentials and data
would cross the network in the clear.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta

from obstore.store import ObjectStore, S3Store

from ..errors import ReplicaError

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
#: The variables obstore reads the S3 endpoint from, in its order of precedence.
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT")


@dataclass(frozen=True)
class ReplicaUrl:
    """A parsed ``s3://BUCKET/PREFIX``: the bucket and the prefix (no leading or trailing
    slash; empty for the bucket's root)."""

    bucket: str
    prefix: str

    def path(self, relative: str) -> str:
        """The object path of ``relative`` under the prefix."""
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def parse_replica_url(url: str) -> ReplicaUrl:
    """Parse and check ``url`` (see the module docstring); :class:`ReplicaError` says what is
    wrong with a bad one."""
    scheme, sep, rest = url.strip().partition("://")
    if not sep or scheme.lower() != "s3":
        raise ReplicaError(
            f"replica URL {url!r} is not an s3:// URL: give s3://BUCKET/PREFIX (the endpoint of "
            "another S3-compatible service goes in AWS_ENDPOINT_URL)"
        )
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET_RE.match(bucket):
        raise ReplicaError(f"replica URL {url!r} names no valid bucket ({bucket!r})")
    prefix = prefix.strip("/")
    parts = prefix.split("/") if prefix else []
    if any(part in ("", ".", "..") for part in parts):
        raise ReplicaError(
            f"replica URL {url!r} has an empty, '.' or '..' part in its prefix {prefix!r}"
        )
    return ReplicaUrl(bucket, prefix)


def endpoint_from_environment() -> str | None:
    """The S3 endpoint the ``AWS_*`` variables set, or None (AWS's own)."""
    for name in ENDPOINT_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def open_object_store(url: ReplicaUrl, *, allow_http: bool) -> ObjectStore:
    """An obstore S3 client of ``url``'s bucket, configured from the environment. Requests time
    out and are retried only briefly: the shipper keeps its own backoff and lag."""
    endpoint = endpoint_from_environment()
    if endpoint is not None and endpoint.lower().startswith("http://") and not allow_http:
        raise ReplicaError(
            f"the S3 endpoint {endpoint} is plain http://: credentials and data would cross the "
            "network unencrypted. Use https://, or allow it explicitly with "
            "LOGKV_REPLICA_ALLOW_HTTP=1 (Configuration.replica_allow_http)"
        )
    try:
        return S3Store(
            url.bucket,
            client_options={
                "allow_http": allow_http,
                "connect_timeout": timedelta(seconds=5),
                "timeout": timedelta(seconds=60),
            },
            retry_config={
                "max_retries": 2,
                "retry_timeout": timedelta(seconds=10),
                "backoff": {
                    "init_backoff": timedelta(milliseconds=100),
                    "max_backoff": timedelta(seconds=2),
                    "base": 2,
                },
            },
        )
    except Exception as exc:  # obstore's configuration errors (a bad variable, say)
        raise ReplicaError(f"cannot configure the S3 client for {url}: {exc}") from exc
