"""An open store's replica: claimed (and its folder restored) before the engine opens, started
after it (see :mod:`logkv.replica`). Imports obstore only when a replica URL is configured."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..configuration import Configuration

if TYPE_CHECKING:
    from ..replica import Replica


def claim_replica(folder: Path, configuration: Configuration) -> Replica | None:
    """Take the store at ``folder`` over in its bucket copy under
    ``configuration.replica_url`` (None without one), restoring the folder from it first when
    the folder is missing and the bucket holds the store."""
    if configuration.replica_url is None:
        return None
    from ..replica import (  # noqa: PLC0415 (the s3 extra: imported only when configured)
        Replica,
        RetentionPolicy,
        parse_replica_url,
        restore,
        store_bucket,
    )

    url = parse_replica_url(configuration.replica_url)
    bucket = store_bucket(
        url, store_path(folder, configuration), allow_http=configuration.replica_allow_http
    )
    retention = RetentionPolicy(
        configuration.replica_keep_snapshots,
        configuration.replica_keep_for,
        configuration.replica_grace,
    )
    replica = Replica.claim(bucket, folder, configuration.replica_interval, retention)
    folded = replica.folded
    if not folder.exists() and (folded.files or folded.meta is not None):
        restore(bucket, folder, folded=folded)
    return replica


def store_path(folder: Path, configuration: Configuration) -> str:
    """The store folder's path within the storage folder (``key_value_stores/NAME``): its
    path in the bucket under the replica root."""
    relative = os.path.relpath(folder.absolute(), Path(configuration.storage_dir).absolute())
    if relative.startswith(".."):  # a folder outside the storage folder: its last two parts
        return f"{folder.parent.name}/{folder.name}"
    return Path(relative).as_posix()


async def wait_replicated(replica: Replica, seq: int) -> None:
    """Wait, holding no thread, until record ``seq`` is committed in ``replica``; raises what
    keeps it from being committed (:class:`~logkv.errors.FencedError`, replication stopped)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if future.done():
            return
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)

    def from_shipper(error: BaseException | None) -> None:
        loop.call_soon_threadsafe(settle, error)

    replica.when_committed(seq, from_shipper)
    await future
