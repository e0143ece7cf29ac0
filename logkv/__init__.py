"""logkv: a crash-safe key-value store for crawlers.

An append-only, checksummed msgpack log per store, replayed on open into a sorted index of
record locations. The synchronous core is :class:`Engine`.
"""

from .configuration import Configuration
from .content import ValueDecodeError
from .engine import MISSING, Engine, EngineStats, KeyInfo
from .errors import (
    CorruptionError,
    InvalidKeyError,
    LogKVError,
    NotALogKVStoreError,
    ReadOnlyStoreError,
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
from .options import Durability
from .replay import Recovery, RecoveryReport
from .storage_clients import (
    KeyValueStoreClient,
    LogStorageClient,
    MemoryStorageClient,
    StorageClient,
)

__all__ = [
    "MISSING",
    "Configuration",
    "CorruptionError",
    "DeleteRecord",
    "Durability",
    "Engine",
    "EngineStats",
    "Event",
    "EventManager",
    "EventPersistStateData",
    "InvalidKeyError",
    "KeyInfo",
    "KeyValueStore",
    "KeyValueStoreClient",
    "KeyValueStoreMetadata",
    "KeyValueStoreRecord",
    "KeyValueStoreRecordMetadata",
    "LogKVError",
    "LogStorageClient",
    "MemoryStorageClient",
    "NotALogKVStoreError",
    "ReadOnlyStoreError",
    "Record",
    "Recovery",
    "RecoveryReport",
    "SetRecord",
    "StorageClient",
    "StoreClosedError",
    "StoreFailedError",
    "StoreLockedError",
    "StoreNotFoundError",
    "UnsafeStoreError",
    "ValueDecodeError",
]
