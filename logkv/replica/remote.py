"""Audits straight from the bucket: a store's committed files, read-only, without its machine.

:func:`remote_view` folds the slots of a store's bucket copy and gives the audit readers
(``logkv stats``, ``verify``, ``history``, ``replay``, ``dump``) the committed file set as a
private, read-only folder held in memory (``/dev/shm`` where the system has it), built by a
:class:`~logkv.replica.follow.Follower` from whole-object reads checked by SHA-256: the
newest complete snapshot, the segments after it and ``META.json``, exactly what the writer's
own folder holds. Nothing goes to the bucket and nothing to the local disk; the view is
removed when the audit ends. A gap or a damaged object is
:class:`~logkv.errors.ReplicaGapError` (damage); an unreachable endpoint is
:class:`~logkv.replica.bucket.BucketUnavailable`.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .bucket import Bucket
from .follow import Follower

#: Where views are built when the system has a memory file system there.
MEMORY_DIR = Path("/dev/shm")


@contextmanager
def remote_view(bucket: Bucket, relative: str) -> Iterator[Path]:
    """A read-only folder holding the committed files of the store in ``bucket``, at
    ``relative`` (``key_value_stores/NAME``) under a private temporary root; removed after."""
    base = MEMORY_DIR if MEMORY_DIR.is_dir() and _writable(MEMORY_DIR) else None
    root = Path(tempfile.mkdtemp(prefix="logkv-audit-", dir=base))
    try:
        folder = root / relative
        with Follower(bucket, folder) as follower:
            follower.catch_up()
        yield folder
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _writable(folder: Path) -> bool:
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False
