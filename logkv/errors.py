"""The exceptions logkv raises.

Every error logkv raises on purpose derives from :class:`LogKVError`, and every message says what
happened and what the user can do about it.
"""

from __future__ import annotations

from pathlib import Path


class LogKVError(Exception):
    """Base class of all logkv errors."""


class CorruptionError(LogKVError):
    """A log or snapshot file holds bytes that are not a valid record.

    ``path`` and ``offset`` locate the first bad byte. The store was not modified; open it with
    ``recovery="salvage"`` to keep every good record and drop the damaged ones.
    """

    def __init__(self, path: Path | str, offset: int, reason: str) -> None:
        self.path = path if isinstance(path, Path) else Path(path)  # a file set's path stays
        self.offset = offset
        self.reason = reason
        super().__init__(
            f"{self.path}: corrupt data at offset {offset}: {reason}. Nothing was changed; "
            'open the store with recovery="salvage" to keep every good record and drop the '
            "damaged ones, or restore the file from a backup."
        )


class MissingValueFileError(CorruptionError, FileNotFoundError):
    """The value file of a streamed value is not there (docs/FORMAT.md, section 14): damage
    when its record is live. Also a ``FileNotFoundError``: a read that raced a compaction that
    removed it looks the key up again."""

    def __init__(self, path: Path | str, seq: int) -> None:
        CorruptionError.__init__(self, path, 0, f"the value file of record {seq} is missing")


class ConfigurationError(LogKVError, ValueError):
    """An environment variable holds a value its setting refuses: the message names the
    variable, its value and what was wrong. (Bad arguments to ``Configuration`` raise pydantic's
    ``ValidationError``, which names the argument.)"""


class StoreLockedError(LogKVError):
    """Another writer (in this or another process) holds the store's lock."""

    def __init__(self, path: Path | str, holder_pid: int | None) -> None:
        self.path = Path(path)
        self.holder_pid = holder_pid
        who = f"process {holder_pid}" if holder_pid else "another process"
        super().__init__(
            f"{self.path} is locked for writing by {who}; a store has one writer at a time. "
            "Close the other writer, or open this one read-only, beside it: readonly=True in "
            "Engine.open, KeyValueStore.open or LogKvStorageClient (for Crawlee)."
        )


class StoreClosedError(LogKVError):
    """The store was used after :meth:`close`."""


class ReadOnlyStoreError(LogKVError):
    """A write was attempted on a store opened read-only."""


class StoreNotFoundError(LogKVError):
    """The store folder does not exist (and the open did not ask to create it)."""


class StoreFailedError(LogKVError):
    """An earlier I/O failure left the store's state unknown; it must be closed and reopened.

    This follows an ``fsync`` failure: after one, the operating system may have dropped the
    dirty pages, so logkv refuses further writes instead of pretending they are durable.
    """


class InvalidKeyError(LogKVError, ValueError):
    """A key that logkv cannot store: not a string, empty, too long or not encodable."""


class NotALogKVStoreError(LogKVError):
    """The folder exists but holds something else (for example a Crawlee file-system store)."""


class UnsafeStoreError(LogKVError):
    """A name logkv uses inside a store folder is a symbolic link, which logkv never follows.

    Following it could make logkv truncate, overwrite or move a file outside the store, or read
    one in as data. ``path`` is the link; nothing was read or written through it.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        super().__init__(
            f"{self.path} is a symbolic link; logkv never follows links inside a store folder "
            "(one could make it write or read a file outside the store). Nothing was changed; "
            "replace the link by the file or folder it points to, or remove it."
        )


class SyncFailedError(StoreFailedError, OSError):
    """The ``fdatasync`` that was to make this write durable failed (``errno`` is its errno).

    The write may or may not be on disk; it was not made visible. The store refuses further
    writes (:class:`StoreFailedError`) until it is closed and reopened.
    """


class ReplicaError(LogKVError):
    """The store's replica in object storage cannot be used: a bad replica URL, an endpoint that
    is unreachable at open, refuses the credentials or lacks create-only writes, or a bucket
    copy with a gap. The message names the store and the bucket path."""


class ReplicaDivergedError(ReplicaError):
    """The local store folder and its bucket copy hold different histories (the bucket holds
    records the folder lacks, or other bytes): nothing was written to either. Restore the folder
    from the bucket (``logkv restore``), or move it aside."""


class ReplicaGapError(ReplicaError):
    """The bucket copy is damaged: a slot or a data object is missing, a slot does not parse or
    does not continue the bytes before it, or an object's length or SHA-256 differs from what
    its slot says. Nothing built from it is used."""


class FencedError(StoreFailedError):
    """Another writer took this store over through its replica (it wrote the next slot in the
    bucket): this writer's uploads are refused, and so is every further write. What the bucket
    acknowledged (``flush_replica``) is safe; writes after that live only in this folder."""
