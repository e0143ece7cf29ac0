"""Snapshots: the live records of a store as of a segment boundary, with a hint section.

A snapshot ``NNNNNNNN.snap`` holds the state after segments ``1..N`` (``covers = N``)::

    header  16 bytes   b"\\x89LKVSNP\\n", u32 format version, u32 covers
    frames             the live records, in key order, copied verbatim from the log
                       (same framing, checksum and chain value as where they were written)
    hint    block      msgpack [keys, offsets, heads, sizes, type_ids, types]: where each
                       record sits, so that open builds the index without reading values
    meta    block      msgpack map: covers, last_seq, chain, last_us (the timestamp of record
                       last_seq), records, record_bytes, live_bytes, hint_offset, created_us
    tail    16 bytes   u64 offset of the meta block, b"\\x89LKVEND\\n"

Blocks and the tail are written and read by :mod:`logkv.blocks`. A snapshot is written to a
temp file, fsynced, renamed into place and its folder fsynced: it exists whole or not at all.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import msgpack

from .blocks import TAIL, encode_ending, read_hint, read_meta
from .errors import CorruptionError
from .files import open_bytes
from .format import FORMAT_VERSION, READABLE_VERSIONS
from .fsutil import create_temp, fsync_dir, remove_quietly
from .hints import Columns, Rows, decode_rows, index_rows, row_table
from .index import Entry, Index
from .key_table import KeyTable
from .key_table import build as build_key_table
from .key_table import encode as encode_key_table
from .layout import snapshot_name

SNAPSHOT_MAGIC = b"\x89LKVSNP\n"
#: The snapshot version written: the segment format's (frames are copied from the log).
SNAPSHOT_VERSION = FORMAT_VERSION
SNAPSHOT_HEADER = struct.Struct("<8sII")  # magic, version, covers
_SYNC_EVERY = 64 * 1024 * 1024  # bytes of snapshot written between fdatasyncs


@dataclass(frozen=True)
class SnapshotInfo:
    """What a snapshot's meta block says about it."""

    path: Path
    covers: int
    last_seq: int
    chain: bytes
    records: int
    record_bytes: int
    live_bytes: int
    file_bytes: int
    last_us: int = 0  # timestamp of record ``last_seq`` (0: unknown)
    #: The retention the compaction that wrote it used; an open that finishes an interrupted
    #: compaction retires the covered segments the same way.
    retention: str = "delete"


class SnapshotWriter:
    """Writes one snapshot: :meth:`add` each live record in key order, then :meth:`finish`."""

    def __init__(self, folder: Path, covers: int) -> None:
        self.folder = folder
        self.covers = covers
        self.path = folder / snapshot_name(covers)
        fd, self._temp = create_temp(self.path)
        self._file: BinaryIO = open(fd, "wb", buffering=1 << 20)  # noqa: SIM115
        header = SNAPSHOT_HEADER.pack(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, covers)
        self._file.write(header)
        self._end = len(header)
        #: Where each record went, in key order: the snapshot's hint block.
        self.columns = Columns()
        #: Its keys with the key table :meth:`finish` stored (None: none stored, or not yet).
        self.stored: KeyTable | None = None
        self.record_bytes = 0
        self.live_bytes = 0
        self._next_sync = _SYNC_EVERY

    def add(self, frame: bytes | Iterable[bytes], key: str, entry: Entry) -> int:
        """Append a verbatim copy of ``key``'s frame (``entry`` locates it in the log): the
        frame, or its pieces in order (a frame too big to hold whole)."""
        offset = self._end
        for piece in [frame] if isinstance(frame, bytes) else frame:
            self._write_piece(piece)
        length = self._end - offset
        self.record_bytes += length
        self.live_bytes += length
        _, _, head, size, content_type = entry
        self.columns.add(key, offset, head, size, content_type)
        return offset

    def _write_piece(self, piece: bytes) -> None:
        self._file.write(piece)
        self._end += len(piece)
        if self._end >= self._next_sync:
            # Sync as we go, so that the final fsync has little left and the disk never holds
            # a gigabyte of dirty snapshot in front of the writers' appends.
            self._file.flush()
            os.fdatasync(self._file.fileno())
            self._next_sync = self._end + _SYNC_EVERY

    def entry(self, i: int) -> Entry:
        """The index entry of the ``i``-th added record, pointing into this snapshot."""
        return self.columns.entry(i, -self.covers)

    def finish(
        self, last_seq: int, chain: bytes, last_us: int = 0, retention: str = "delete"
    ) -> SnapshotInfo:
        """Write hint, meta and tail; make the snapshot durable and put it in place.

        ``last_seq``, ``chain`` and ``last_us`` describe the newest record the snapshot covers
        (its sequence number, chain value and timestamp)."""
        table = build_key_table(self.columns.keys)
        hint = self.columns.encode(key_table=None if table is None else encode_key_table(table))
        hint_offset = self._end
        if table is not None:
            self.stored = KeyTable(self.columns.keys, table, self.path, hint_offset)
        meta = msgpack.packb(
            {
                "covers": self.covers,
                "last_seq": last_seq,
                "chain": chain,
                "last_us": last_us,
                "records": len(self.columns),
                "record_bytes": self.record_bytes,
                "live_bytes": self.live_bytes,
                "hint_offset": hint_offset,
                "created_us": time.time_ns() // 1000,
                "retention": retention,
            }
        )
        for piece in encode_ending(hint_offset, hint, meta):
            self._file.write(piece)
            self._end += len(piece)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._temp, self.path)
        fsync_dir(self.folder)
        return SnapshotInfo(
            self.path,
            self.covers,
            last_seq,
            chain,
            len(self.columns),
            self.record_bytes,
            self.live_bytes,
            self._end,
            last_us,
            retention,
        )

    def abort(self) -> None:
        """Drop the unfinished snapshot (its temp file).

        The temp file is removed even when closing it fails: on a full disk, closing flushes
        the buffered bytes and fails again, and the temp file must not keep the space."""
        try:
            self._file.close()
        except OSError:
            pass  # the error that made us abort is the one to report
        finally:
            remove_quietly(self._temp)


def load_snapshot(path: Path, covers: int) -> tuple[SnapshotInfo, dict[str, Entry]]:
    """Read a snapshot's meta and hint blocks: its info and its index entries (values unread).

    Raises :class:`~logkv.errors.CorruptionError` when the header, tail, meta or hint block is
    damaged. Record frames are checked when read (``get``) and by ``verify``.
    """
    info, rows, _ = _load(path, covers)
    return info, rows.entries(-covers)


def check_snapshot(path: Path, covers: int) -> tuple[SnapshotInfo, list[str]]:
    """Load a snapshot as ``verify`` does: its info, and the keys its stored key table does
    not find at their own row (none; the table, when it has one, is checked key by key)."""
    info, _, keys = _load(path, covers)
    return info, [] if keys is None else keys.misplaced()


def load_snapshot_into(path: Path, covers: int, index: Index) -> SnapshotInfo:
    """:func:`load_snapshot` for an open: the entries go into ``index`` (fresh, empty): as its
    stored keys when the snapshot has a key table, else packed in bulk; the index is left
    unchanged when the snapshot fails to load."""
    info, rows, keys = _load(path, covers)
    if keys is None or not index.set_stored(keys, row_table(rows, -covers)):
        index.packed = dict(zip(rows.keys, index_rows(rows, -covers, index), strict=True))
    return info


def _load(path: Path, covers: int) -> tuple[SnapshotInfo, Rows, KeyTable | None]:
    with open_bytes(path) as file:  # a local file, or one a file set serves by ranges
        size = file.size
        if size < SNAPSHOT_HEADER.size + TAIL.size:
            raise CorruptionError(path, 0, "snapshot is cut short")
        magic, version, stored_covers = SNAPSHOT_HEADER.unpack(file.read(0, SNAPSHOT_HEADER.size))
        if magic != SNAPSHOT_MAGIC or version not in READABLE_VERSIONS or stored_covers != covers:
            raise CorruptionError(path, 0, "bad snapshot header")
        meta, meta_offset = read_meta(path, file, SNAPSHOT_HEADER.size, "snapshot")
        try:
            hint_offset = int(meta["hint_offset"])
            info = SnapshotInfo(
                path,
                covers,
                int(meta["last_seq"]),
                bytes(meta["chain"]),
                int(meta["records"]),
                int(meta["record_bytes"]),
                int(meta["live_bytes"]),
                size,
                int(meta.get("last_us", 0)),
                str(meta.get("retention", "delete")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptionError(
                path, meta_offset, f"snapshot meta is incomplete: {exc}"
            ) from None
        hint = read_hint(path, file, hint_offset, meta_offset, "snapshot")
    try:
        rows = decode_rows(hint)
        stored = hint[7] if len(hint) > 7 else None
        keys = None if stored is None else KeyTable.decode(stored, rows.keys, path, hint_offset)
    except (TypeError, ValueError, IndexError) as exc:
        raise CorruptionError(path, hint_offset, f"snapshot hint is malformed: {exc}") from None
    return info, rows, keys
