"""logkv: a crash-safe key-value store for crawlers.

An append-only, checksummed msgpack log per store, replayed on open into a sorted index of
record locations. The synchronous core is :class:`Engine`.
"""

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
)
from .format import DeleteRecord, Record, SetRecord
from .options import Durability
from .replay import Recovery, RecoveryReport

__all__ = [
    "MISSING",
    "CorruptionError",
    "DeleteRecord",
    "Durability",
    "Engine",
    "EngineStats",
    "InvalidKeyError",
    "KeyInfo",
    "LogKVError",
    "NotALogKVStoreError",
    "ReadOnlyStoreError",
    "Record",
    "Recovery",
    "RecoveryReport",
    "SetRecord",
    "StoreClosedError",
    "StoreFailedError",
    "StoreLockedError",
    "StoreNotFoundError",
]
