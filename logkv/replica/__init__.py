"""Replication of stores to S3-compatible object storage (docs/FORMAT.md, section 13).

Needs the ``s3`` extra (obstore). A writable store opened with a replica URL
(``Configuration.replica_url``, ``LOGKV_REPLICA_URL``) takes its bucket copy over
(:meth:`Replica.claim`, the fence), restores its folder from it when the folder is missing, and
ships new records in the background (:class:`Replica`). :func:`restore` rebuilds a store from
its bucket copy anywhere; a :class:`Follower` keeps a read-only copy that tails it;
:func:`store_bucket` is the bucket path of one store.
"""

from __future__ import annotations

from pathlib import Path

from ..extras import require_extra

require_extra("obstore", "s3", "logkv.replica (replication to object storage)")

from .bucket import Bucket  # noqa: E402 (after the check of the extra)
from .follow import Follower  # noqa: E402
from .restore import RestoreResult, restore  # noqa: E402
from .retention import RetentionPolicy, RetentionResult, retire  # noqa: E402
from .shipper import Lag, Replica  # noqa: E402
from .url import ReplicaUrl, open_object_store, parse_replica_url  # noqa: E402

__all__ = [
    "Bucket",
    "Follower",
    "Lag",
    "Replica",
    "ReplicaUrl",
    "RestoreResult",
    "RetentionPolicy",
    "RetentionResult",
    "open_replica_bucket",
    "parse_replica_url",
    "restore",
    "retire",
    "store_bucket",
]


def store_bucket(url: ReplicaUrl, relative: str, *, allow_http: bool) -> Bucket:
    """The bucket path of the store at ``relative`` (``key_value_stores/NAME``) under the
    replica root ``url``."""
    relative = Path(relative).as_posix().strip("/")
    root = url.path(relative)
    return Bucket(open_object_store(url, allow_http=allow_http), root, f"s3://{url.bucket}/{root}")


def open_replica_bucket(url: str, *, allow_http: bool) -> Bucket:
    """The bucket path a whole ``s3://BUCKET/PREFIX/key_value_stores/NAME`` URL names (one
    store's copy, as ``logkv restore`` takes it)."""
    parsed = parse_replica_url(url)
    return Bucket(open_object_store(parsed, allow_http=allow_http), parsed.prefix, str(parsed))
