"""The engine's modes and limits: how durable a write is, what open does with damage, what
compaction does with old segments, and the sizes the engine holds to.

These are plain values with no dependencies, for the engine and everything above it.
:mod:`logkv.configuration` is the facade's settings object, which reads them (and the storage
folder) from arguments or the environment.
"""

from __future__ import annotations

from enum import StrEnum

#: Segments rotate once they pass this many bytes (a single larger record still fits whole).
DEFAULT_SEGMENT_SIZE = 64 * 1024 * 1024

#: Longest key, in characters. Keys are any non-empty Python ``str`` that UTF-8 can encode.
MAX_KEY_LENGTH = 1024


class Durability(StrEnum):
    """How far a write has gone when the call that made it returns, named by what it survives.

    ``PROCESS`` (the default): the record was handed to the operating system with ``write()``; it
    survives the process being killed (``kill -9``, OOM, Ctrl-C) but not a power loss or kernel
    crash. ``FSYNC``: the record is on disk (``fdatasync``) and survives power loss; concurrent
    writers share one ``fdatasync`` (group commit), so many writers pay for few syncs.
    """

    PROCESS = "process"
    FSYNC = "fsync"


class Retention(StrEnum):
    """What compaction does with the log segments a new snapshot covers.

    ``DELETE`` (the default) removes them: the store keeps only its live data and the log since
    the snapshot. ``ARCHIVE`` moves them to the store's ``archive/`` folder, so that the full
    history stays replayable for audits (``logkv history``, ``logkv replay``) at the cost of disk.
    """

    DELETE = "delete"
    ARCHIVE = "archive"


class Recovery(StrEnum):
    """What open does with damaged bytes.

    ``STRICT`` (the default) drops only a torn tail, the cut-short end of the last segment that a
    crash mid-append leaves, and raises :class:`~logkv.errors.CorruptionError` for anything
    else. ``SALVAGE`` keeps every record that passes its checksum, drops the rest and reports
    what it dropped in :class:`~logkv.replay.RecoveryReport`.
    """

    STRICT = "strict"
    SALVAGE = "salvage"
