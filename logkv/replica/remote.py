"""Audits straight from the bucket: a store's committed files, read-only, without its machine.

:func:`remote_view` folds the slots of a store's bucket copy and gives the audit readers
(``logkv stats``, ``verify``, ``history``, ``replay``, ``dump``) the committed file set as a
private, read-only folder held in memory (``/dev/shm`` where the system has it, with room;
else the system's temp folder), built by a
:class:`~logkv.replica.follow.Follower` from whole-object reads checked by SHA-256: the
newest complete snapshot, the segments after it and ``META.json``, exactly what the writer's
own folder holds. Nothing goes to the bucket or to the store; the view is removed when the
audit ends.

The history of one key reads of the snapshot only what a local ``history`` reads of it: its
header, tail, meta and hint blocks and the key's record, by range reads (checked by their
CRCs, as locally), into a sparse file; the segments after it are read whole, as the local
search for the key does. A gap or a damaged object is
:class:`~logkv.errors.ReplicaGapError` (damage); an unreachable endpoint is
:class:`~logkv.replica.bucket.BucketUnavailable`.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import CorruptionError, ReplicaGapError
from ..fsutil import write_all
from ..index import IndexEntry
from ..layout import snapshot_number
from ..replay import frame_length
from ..snapshot import SNAPSHOT_HEADER, TAIL, hint_offset_in, load_snapshot
from .bucket import Bucket
from .follow import Follower
from .restore import piece_missing, plan_restore
from .slots import Folded, Piece, fold_slots

#: Where views are built when the system has a memory file system there.
MEMORY_DIR = Path("/dev/shm")


@contextmanager
def remote_view(bucket: Bucket, relative: str, *, key: str | None = None) -> Iterator[Path]:
    """A read-only folder holding the committed files of the store in ``bucket``, at
    ``relative`` (``key_value_stores/NAME``) under a private temporary root; removed after.
    ``key``: only for the history of that key (the snapshot is read in part)."""
    folded = fold_slots(bucket)
    try:
        need = sum(pieces[-1].end for _, pieces in plan_restore(folded).files)
    except ReplicaGapError:
        need = 0  # refused below, by the copy
    root = Path(tempfile.mkdtemp(prefix="logkv-audit-", dir=_memory_with_room(need)))
    try:
        folder = root / relative
        if key is None:
            copy = Follower(bucket, folder, folded)
        else:
            copy = _KeyView(bucket, folder, key, folded)
        with copy:
            copy.catch_up()
        yield folder
    finally:
        shutil.rmtree(root, ignore_errors=True)


class _KeyView(Follower):
    """A one-time copy for the history of ``key``: of the snapshot, only the ranges that
    history reads (see the module docstring)."""

    def __init__(self, bucket: Bucket, folder: Path, key: str, folded: Folded) -> None:
        super().__init__(bucket, folder, folded)
        self.key = key

    def _fill_snapshot(self, fd: int, temp: Path, pieces: list[Piece]) -> None:
        size = pieces[-1].end
        os.ftruncate(fd, size)  # a sparse file: the ranges not read stay holes

        def fetch(start: int, end: int) -> bytes:
            data = read_range(self.bucket, pieces, max(0, start), min(end, size))
            write_all(fd, data, max(0, start))
            return data

        try:
            fetch(0, SNAPSHOT_HEADER.size)
            meta_offset, _ = TAIL.unpack(fetch(size - TAIL.size, size))
            meta = fetch(meta_offset, size - TAIL.size)
            fetch(hint_offset_in(temp, meta), meta_offset)
            covers = snapshot_number(pieces[0].file)
            if covers is None:
                raise ValueError(f"{pieces[0].file} is not a snapshot")
            entry = load_snapshot(temp, covers)[1].get(self.key)
        except (CorruptionError, ValueError, struct.error):
            super()._fill_snapshot(fd, temp, pieces)  # damaged: let the reader report it
            return
        if entry is not None:
            offset = IndexEntry._make(entry).offset
            fetch(offset, offset + frame_length(entry))


def read_range(bucket: Bucket, pieces: list[Piece], start: int, end: int) -> bytes:
    """Bytes ``[start, end)`` of the file made of ``pieces``, by range reads of the objects
    that hold them."""
    parts = []
    for piece in pieces:
        lo, hi = max(start, piece.offset), min(end, piece.end)
        if lo < hi:
            try:
                parts.append(bucket.get_range(piece.name, lo - piece.offset, hi - piece.offset))
            except FileNotFoundError:
                raise piece_missing(bucket, piece) from None
    return b"".join(parts)


def _memory_with_room(need: int) -> Path | None:
    """:data:`MEMORY_DIR` when it is there, writable and has room for ``need`` bytes (and a
    quarter more), else None (the system's temp folder)."""
    try:
        if shutil.disk_usage(MEMORY_DIR).free < need + need // 4:
            return None
        with tempfile.TemporaryFile(dir=MEMORY_DIR):
            return MEMORY_DIR
    except OSError:
        return None
