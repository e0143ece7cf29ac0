"""logkv: a crash-safe key-value store for crawlers.

An append-only, checksummed msgpack log per store, replayed on open into a sorted index of
record locations. The synchronous core is :class:`Engine`.

``LogStorageClient`` is a deprecated alias of :class:`DiskStorageClient` (importing it warns).
"""

from typing import Any

from .configuration import Configuration
from .content import ValueDecodeError
from .engine import MISSING, Engine, EngineStats, KeyInfo
from .errors import (
    CorruptionError,
    FencedError,
    InvalidKeyError,
    LogKVError,
    NotALogKVStoreError,
    ReadOnlyStoreError,
    ReplicaDivergedError,
    ReplicaError,
    ReplicaGapError,
    StoreClosedError,
    StoreFailedError,
    StoreLockedError,
    StoreNotFoundError,
    UnsafeStoreError,
)
from .events import Event, EventManager, EventPersistStateData
from .format import DeleteRecord, Record, SetRecord
from .key_value_store import KeyValueStore
from .models import KeyValueStoreMetadata, KeyValueStoreRecord, KeyValueStoreRecordMetadata
from .modes import Durability, Recovery
from .replay import RecoveryReport
from .storage_clients import (
    DiskStorageClient,
    KeyValueStoreClient,
    MemoryStorageClient,
    StorageClient,
)
from .storage_clients import (
    deprecated_name as _deprecated_name,
)

__all__ = [
    "MISSING",
    "Configuration",
    "CorruptionError",
    "DeleteRecord",
    "DiskStorageClient",
    "Durability",
    "Engine",
    "EngineStats",
    "Event",
    "EventManager",
    "EventPersistStateData",
    "FencedError",
    "InvalidKeyError",
    "KeyInfo",
    "KeyValueStore",
    "KeyValueStoreClient",
    "KeyValueStoreMetadata",
    "KeyValueStoreRecord",
    "KeyValueStoreRecordMetadata",
    "LogKVError",
    "MemoryStorageClient",
    "NotALogKVStoreError",
    "ReadOnlyStoreError",
    "Record",
    "Recovery",
    "RecoveryReport",
    "ReplicaDivergedError",
    "ReplicaError",
    "ReplicaGapError",
    "SetRecord",
    "StorageClient",
    "StoreClosedError",
    "StoreFailedError",
    "StoreLockedError",
    "StoreNotFoundError",
    "UnsafeStoreError",
    "ValueDecodeError",
]


def __getattr__(name: str) -> Any:
    return _deprecated_name(__name__, name)
