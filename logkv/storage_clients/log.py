"""Deprecated: the module of logkv's on-disk storage client is :mod:`logkv.storage_clients.disk`.

``LogStorageClient`` and ``LogKeyValueStoreClient`` are the old names of
:class:`~logkv.storage_clients.disk.DiskStorageClient` and
:class:`~logkv.storage_clients.disk.DiskKeyValueStoreClient`; the folder helpers now live in
:mod:`logkv.storage_clients._folders` and :mod:`logkv.storage_clients._store`. Importing this
module warns.
"""

from __future__ import annotations

import warnings

from ._commits import wait_for_commit
from ._folders import find_store_by_id, refuse_foreign_folder, registry_key, trash_of
from ._store import drop_store
from .disk import DiskKeyValueStoreClient as LogKeyValueStoreClient
from .disk import DiskStorageClient as LogStorageClient

warnings.warn(
    "logkv.storage_clients.log is deprecated: import DiskStorageClient and "
    "DiskKeyValueStoreClient from logkv.storage_clients",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "LogKeyValueStoreClient",
    "LogStorageClient",
    "drop_store",
    "find_store_by_id",
    "refuse_foreign_folder",
    "registry_key",
    "trash_of",
    "wait_for_commit",
]
