"""Audits straight from the bucket: a store's committed files, read-only, by range reads.

:func:`remote_store` folds the slots of a store's bucket copy and gives the audit readers
(``logkv stats``, ``verify``, ``history``, ``replay``, ``dump``) its committed files, the
newest complete snapshot, the segments after it and ``META.json`` (what the writer's own folder
holds), as a :class:`~logkv.files.SourcePath` served by a :class:`BucketFiles`: the same
readers as on a folder read them, and each read of a file is mapped onto the data objects that
hold that range and fetched by range reads. Nothing is downloaded whole and nothing is written
anywhere: a scan reads a window at a time (:class:`~logkv.files.WindowBuffer`), reads of
records go through a small read-ahead cache (:data:`CACHE_BYTES`), so an audit holds a bounded
amount of the store in memory, whatever its size.

A data object a read covers whole is checked by its length and SHA-256 (the slot's); a part of
one by its length, and then, as locally, by the CRCs of the frames and blocks read from it. A
missing or damaged object is :class:`~logkv.errors.ReplicaGapError` (damage), as is a gap in
the slots; an unreachable endpoint is :class:`~logkv.replica.bucket.BucketUnavailable`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from ..errors import ReplicaGapError, StoreNotFoundError
from ..files import SourcePath, mount
from ..layout import META_FILE
from .bucket import Bucket, BucketUnavailable
from .restore import fetch_piece, piece_missing, plan_restore
from .slots import Piece, fold_slots

#: The first read of a file after a jump fetches at least this much ...
MIN_READ_AHEAD = 64 * 1024
#: ... and each read that goes on where the last one ended twice as much, up to this.
MAX_READ_AHEAD = 8 * 1024 * 1024
#: Bytes of read-ahead blocks kept (the least recently used go first).
CACHE_BYTES = 32 * 1024 * 1024
#: Data objects fetched at once for one read.
PARALLEL_FETCHES = 8


@dataclass
class FetchCounts:
    """What a :class:`BucketFiles` fetched: GET requests, and the bytes they returned."""

    requests: int = 0
    bytes: int = 0


class BucketFiles:
    """The committed files of a store's bucket copy as a :class:`~logkv.files.FileSet`:
    ``files`` maps each file name to its pieces, in order and contiguous from 0."""

    def __init__(self, bucket: Bucket, files: dict[str, list[Piece]]) -> None:
        self.bucket = bucket
        self._files = files
        self.counts = FetchCounts()
        self._blocks: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._held = 0
        #: Per file: the range of the last block fetched, and the read-ahead size now.
        self._last: dict[str, tuple[int, int, int]] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def names(self) -> list[str]:
        """The committed files."""
        return list(self._files)

    def size(self, name: str) -> int:
        """The committed length of file ``name``."""
        pieces = self._files.get(name)
        if not pieces:
            raise FileNotFoundError(2, "not in the bucket copy", f"{self.bucket.describe}/{name}")
        return pieces[-1].end

    def read(self, name: str, offset: int, n: int) -> bytes:
        """``n`` bytes at ``offset`` of file ``name`` (fewer only at its end). A read that
        goes on where the last one of the file ended fetches ahead of it, more each time."""
        size = self.size(name)
        end = min(size, offset + max(n, 0))
        if offset >= end:
            return b""
        held = []
        with self._lock:
            while offset < end and (cached := self._cached(name, offset, end)):
                held.append(cached)
                offset += len(cached)
        if offset < end:
            held.append(self._fetch_ahead(name, offset, end, size))
        return held[0] if len(held) == 1 else b"".join(held)

    def _fetch_ahead(self, name: str, offset: int, end: int, size: int) -> bytes:
        """Bytes ``[offset, end)`` of file ``name``, fetched with what the read-ahead adds:
        a scan's window (:data:`MAX_READ_AHEAD` or more) as asked, a smaller read that goes on
        where the last one ended twice as much as the last, else :data:`MIN_READ_AHEAD`; what
        a smaller read fetched is kept. A fetch that goes on reading sequentially ends where an
        object ends, when that is within the read-ahead: each object is then fetched whole and
        checked by its SHA-256 (the bytes of a window's fetch past ``end`` are kept for the
        next read)."""
        start, stop, ahead = self._last.get(name, (-1, -1, 0))
        window = end - offset >= MAX_READ_AHEAD  # a scan's: the window holds it, not the cache
        if window:
            ahead, block_end = MAX_READ_AHEAD, end
        else:
            ahead = min(MAX_READ_AHEAD, ahead * 2) if start <= offset <= stop else MIN_READ_AHEAD
            block_end = min(size, max(end, offset + ahead))
        if start <= offset <= stop or offset == 0:
            block_end = self._object_end(name, block_end, ahead)
        data = self._fetch(name, offset, block_end)
        with self._lock:
            self._last[name] = (offset, block_end, ahead)
            if not window:
                self._keep(name, offset, data)
            elif block_end > end:
                self._keep(name, end, data[end - offset :])
        return data[: end - offset]

    def _object_end(self, name: str, end: int, within: int) -> int:
        """``end``, moved on to where the object holding byte ``end - 1`` ends when that is
        at most ``within`` bytes further."""
        for piece in self._files[name]:
            if piece.offset < end <= piece.end:
                return piece.end if piece.end - end <= within else end
        return end

    def _cached(self, name: str, offset: int, end: int) -> bytes | None:
        """The bytes from ``offset`` (up to ``end``) a kept block holds, or None."""
        for (file, start), data in reversed(self._blocks.items()):
            if file == name and start <= offset < start + len(data):
                self._blocks.move_to_end((file, start))
                return data[offset - start : end - start]
        return None

    def _keep(self, name: str, start: int, data: bytes) -> None:
        old = self._blocks.pop((name, start), None)
        self._held -= 0 if old is None else len(old)
        self._blocks[(name, start)] = data
        self._held += len(data)
        while self._held > CACHE_BYTES and len(self._blocks) > 1:
            _, dropped = self._blocks.popitem(last=False)
            self._held -= len(dropped)

    def _fetch(self, name: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of file ``name``, from the objects that hold them."""
        parts = [p for p in self._files[name] if p.offset < end and p.end > start]
        if len(parts) == 1:
            return self._fetch_piece(parts[0], start, end)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(PARALLEL_FETCHES, thread_name_prefix="logkv-audit")
        return b"".join(self._pool.map(lambda p: self._fetch_piece(p, start, end), parts))

    def _fetch_piece(self, piece: Piece, start: int, end: int) -> bytes:
        """The part of ``piece`` within ``[start, end)`` of its file: the whole object checked
        by its length and SHA-256 when the range covers it, else a range of it."""
        lo, hi = max(start, piece.offset), min(end, piece.end)
        if lo == piece.offset and hi == piece.end:
            data = fetch_piece(self.bucket, piece)
        else:
            try:
                data = self.bucket.get_range(piece.name, lo - piece.offset, hi - piece.offset)
            except FileNotFoundError:
                raise piece_missing(self.bucket, piece) from None
            except BucketUnavailable:  # also what a range past the end of the object gets
                if self._object_size(piece) == piece.length:
                    raise
                data = b""
            if len(data) != hi - lo:
                raise ReplicaGapError(
                    f"{self.bucket.describe}/{piece.name} (bytes {piece.offset}..{piece.end} of "
                    f"{piece.file}) is damaged: it is shorter than its slot says"
                )
        with self._lock:
            self.counts.requests += 1
            self.counts.bytes += len(data)
        return data

    def _object_size(self, piece: Piece) -> int:
        try:
            return self.bucket.size(piece.name)
        except FileNotFoundError:
            raise piece_missing(self.bucket, piece) from None

    def close(self) -> None:
        """Stop the fetching threads and let go of the cache."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        self._blocks.clear()
        self._held = 0


@contextmanager
def remote_store(bucket: Bucket) -> Iterator[SourcePath]:
    """The committed files of the store in ``bucket`` as a read-only store folder path,
    shown as the bucket's URL (see the module docstring). A gap in the slots, or a snapshot or
    segment missing from the committed file set, is :class:`~logkv.errors.ReplicaGapError`;
    no slot at all is :class:`~logkv.errors.StoreNotFoundError`."""
    try:
        folded = fold_slots(bucket)
    except FileNotFoundError as exc:  # listed, then gone: slots are never deleted
        raise ReplicaGapError(
            f"{bucket.describe}: a slot vanished while it was read ({exc})"
        ) from None
    if folded.number == 0:
        raise StoreNotFoundError(f"{bucket.describe}: no store was ever replicated here")
    plan = plan_restore(folded)
    files = dict(plan.files)
    if plan.meta is not None:
        files[META_FILE] = [plan.meta]
    source = BucketFiles(bucket, files)
    try:
        where = bucket.describe
        yield mount(source, where if "://" in where else f"bucket://{where}")
    finally:
        source.close()
