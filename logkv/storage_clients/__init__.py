"""Storage clients: the backends behind :class:`logkv.KeyValueStore`.

:class:`DiskStorageClient` (the default) keeps every store as an append-only log on disk;
:class:`MemoryStorageClient` keeps stores in memory, for tests and short jobs. Both store values
the same way, so code and tests run unchanged on either.

``LogStorageClient`` and ``LogKeyValueStoreClient`` are deprecated aliases of
:class:`DiskStorageClient` and :class:`DiskKeyValueStoreClient` (importing them warns).
"""

from __future__ import annotations

import warnings
from typing import Any

from ._base import KeyValueStoreClient, StorageClient, StoreLocation, check_key
from .disk import DiskKeyValueStoreClient, DiskStorageClient
from .memory import MemoryKeyValueStoreClient, MemoryStorageClient

#: Old names of public classes, kept importable: old name -> (new name, the class).
DEPRECATED_NAMES: dict[str, tuple[str, type[Any]]] = {
    "LogStorageClient": ("DiskStorageClient", DiskStorageClient),
    "LogKeyValueStoreClient": ("DiskKeyValueStoreClient", DiskKeyValueStoreClient),
}


def __getattr__(name: str) -> Any:
    return deprecated_name(__name__, name)


def deprecated_name(module: str, name: str) -> Any:
    """The class an old name in :data:`DEPRECATED_NAMES` stands for, with a
    ``DeprecationWarning``; ``AttributeError`` for any other name (a module's ``__getattr__``)."""
    found = DEPRECATED_NAMES.get(name)
    if found is None:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    new_name, value = found
    warnings.warn(
        f"{module}.{name} is deprecated: use {new_name}", DeprecationWarning, stacklevel=3
    )
    return value


__all__ = [
    "DiskKeyValueStoreClient",
    "DiskStorageClient",
    "KeyValueStoreClient",
    "MemoryKeyValueStoreClient",
    "MemoryStorageClient",
    "StorageClient",
    "StoreLocation",
    "check_key",
]
