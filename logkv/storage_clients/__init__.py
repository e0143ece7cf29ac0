"""Storage clients: the backends behind :class:`logkv.KeyValueStore`.

:class:`LogStorageClient` (the default) keeps every store as an append-only log on disk;
:class:`MemoryStorageClient` keeps stores in memory, for tests and short jobs. Both store values
the same way, so code and tests run unchanged on either.
"""

from ._base import KeyValueStoreClient, StorageClient, StoreLocation, check_key
from .log import LogKeyValueStoreClient, LogStorageClient
from .memory import MemoryKeyValueStoreClient, MemoryStorageClient

__all__ = [
    "KeyValueStoreClient",
    "LogKeyValueStoreClient",
    "LogStorageClient",
    "MemoryKeyValueStoreClient",
    "MemoryStorageClient",
    "StorageClient",
    "StoreLocation",
    "check_key",
]
