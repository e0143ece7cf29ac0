"""Followers: a read-only copy of a store on another machine, tailing its bucket copy
(docs/FORMAT.md, section 13.5).

A :class:`Follower` keeps a local folder made of byte-identical prefixes of the writer's files:
it lists the slots after the last one it folded (``StartAfter``), then brings the folder up to
the committed file set the way the writer's own engine changes its folder: a new complete
snapshot is written whole under a temp name and renamed into place, new committed bytes are
appended to the segments after it, ``META.json`` is replaced in one step, and the segments and
snapshots the newest snapshot covers are removed. A read-only open of the folder (its refresh
included) so sees the writer's records as a reader beside the writer would.

It never writes to the bucket. A gap or a damaged object in the bucket copy
(:class:`~logkv.errors.ReplicaGapError`), or local bytes that differ from the bucket's
(:class:`~logkv.errors.ReplicaDivergedError`), stop it: it never leaves a silently wrong copy.
It holds the folder's writer lock while it runs, so no local writer can open the copy.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from ..errors import ReplicaDivergedError, ReplicaGapError, StoreNotFoundError
from ..fsutil import atomic_write, fsync_dir, make_dirs, open_file, temp_file
from ..layout import META_FILE, list_segments, list_snapshots, segment_number, snapshot_number
from ..lock import StoreLock
from .bucket import Bucket, BucketUnavailable
from .restore import RestorePlan, fetch_piece, plan_restore, value_file_seq, write_pieces
from .slots import Folded, Piece, fold_slots, local_digest

log = logging.getLogger(__name__)


class Follower:
    """Keeps ``folder`` a read-only copy of the store in ``bucket`` (see the module docstring).

    :meth:`catch_up` applies what is new once; :meth:`run` polls until stopped. Use it as a
    context manager, or :meth:`close` it, to release the folder's lock."""

    def __init__(self, bucket: Bucket, folder: Path, folded: Folded | None = None) -> None:
        self.bucket = bucket
        self.folder = Path(folder)
        #: The slots folded so far (``folded``: some already read, to go on from).
        self.folded = folded if folded is not None else Folded(bucket.describe)
        #: Files this follower checked or wrote, and their length now.
        self._lengths: dict[str, int] = {}
        self._meta: str | None = None  # the data object of the META.json written
        self._applied = -1  # the last slot whose state the folder holds
        self._lock: StoreLock | None = None

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the folder's lock (the copy stays as it is)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @property
    def seq(self) -> int:
        """The last sequence number the copy holds."""
        return self.folded.seq

    def catch_up(self) -> int:
        """Read the new slots and bring the folder up to them; return the last seq it holds.

        Raises :class:`~logkv.errors.ReplicaGapError` or
        :class:`~logkv.errors.ReplicaDivergedError` (stop following),
        :class:`~logkv.replica.bucket.BucketUnavailable` (try again later), and
        :class:`~logkv.errors.StoreNotFoundError` when no store was replicated there."""
        try:
            fold_slots(self.bucket, self.folded)
        except FileNotFoundError as exc:  # listed, then gone: slots are never deleted
            raise ReplicaGapError(
                f"{self.bucket.describe}: a slot vanished while it was read ({exc})"
            ) from None
        if self.folded.number == 0:
            raise StoreNotFoundError(f"{self.bucket.describe}: no store was ever replicated here")
        if self.folded.number == self._applied:
            return self.folded.seq  # nothing new
        plan = plan_restore(self.folded)
        if self._lock is None:
            make_dirs(self.folder, durable=True)
            self._lock = StoreLock(self.folder)
            self._refuse_local_extras(plan)
        self._apply(plan)
        self._applied = self.folded.number
        return self.folded.seq

    def run(self, interval: float, stop: threading.Event) -> None:
        """Catch up every ``interval`` seconds until ``stop`` is set. An unreachable bucket is
        logged and tried again; a gap or diverged bytes raise (the copy then holds only bytes
        the bucket committed, up to where it stopped)."""
        while True:
            try:
                self.catch_up()
            except BucketUnavailable as exc:
                log.warning("logkv follower of %s: %s; trying again", self.bucket.describe, exc)
            if stop.wait(interval):
                return

    # ------------------------------------------------------------------ applying

    def _apply(self, plan: RestorePlan) -> None:
        """Snapshot first (a reader then sees the state it holds even before the segments
        after it), then the segments' new bytes, then ``META.json``, then what the snapshot
        covers goes."""
        covers = 0
        for name, pieces in plan.files:  # first: the records that name them may follow
            if value_file_seq(name) is not None:
                self._put_value_file(name, pieces)
        for name, pieces in plan.files:
            snapshot = snapshot_number(name)
            if snapshot is not None:
                covers = snapshot
                if name not in self._lengths:
                    self._put_snapshot(name, pieces)
                    self._lengths[name] = pieces[-1].end
        for name, pieces in plan.files:
            if segment_number(name) is not None:
                self._append(name, pieces)
        if plan.meta is not None and plan.meta.name != self._meta:
            atomic_write(self.folder / META_FILE, fetch_piece(self.bucket, plan.meta))
            self._meta = plan.meta.name
        if covers:
            self._retire(covers)

    def _append(self, name: str, pieces: list[Piece]) -> None:
        """Append the committed bytes of segment ``name`` that the copy lacks."""
        path = self.folder / name
        have = self._lengths.get(name)
        if have is None:
            have = self._check_local(path, pieces)
        new = [piece for piece in pieces if piece.end > have]
        if not new:
            return
        fd = open_file(path, os.O_WRONLY | os.O_CREAT)
        try:
            write_pieces(self.bucket, fd, new)
            os.fsync(fd)
        finally:
            os.close(fd)
        if have == 0:
            fsync_dir(self.folder)
        self._lengths[name] = pieces[-1].end

    def _put_snapshot(self, name: str, pieces: list[Piece]) -> None:
        """Write snapshot ``name`` (complete) unless the copy has it: each piece checked,
        under a temp name, renamed into place. :meth:`_fill_snapshot` writes its bytes."""
        path = self.folder / name
        if self._check_local(path, pieces) == pieces[-1].end:
            return
        with temp_file(path) as (fd, temp):
            self._fill_snapshot(fd, temp, pieces)
            os.fsync(fd)
            os.replace(temp, path)
        fsync_dir(self.folder)

    def _put_value_file(self, name: str, pieces: list[Piece]) -> None:
        """Write value file ``name`` (sealed, immutable) unless the copy has it whole: each
        piece checked, under a temp name, renamed into place."""
        path, size = self.folder / name, pieces[-1].end
        if self._lengths.get(name) == size:
            return
        if self._check_local(path, pieces) != size:
            make_dirs(path.parent)
            with temp_file(path) as (fd, temp):
                write_pieces(self.bucket, fd, pieces)
                os.fsync(fd)
                os.replace(temp, path)
            fsync_dir(path.parent)
        self._lengths[name] = size

    def _fill_snapshot(self, fd: int, temp: Path, pieces: list[Piece]) -> None:
        """Write a snapshot's bytes into ``fd`` (the temp file ``temp``): all of them."""
        write_pieces(self.bucket, fd, pieces)

    def _retire(self, covers: int) -> None:
        """Remove the segments snapshot ``covers`` holds and the older snapshots, as the
        writer's compaction did."""
        gone = [p for n, p in list_segments(self.folder) if n <= covers]
        gone += [p for c, p in list_snapshots(self.folder) if c < covers]
        for path in gone:
            path.unlink(missing_ok=True)
            self._lengths.pop(path.name, None)
        if gone:
            fsync_dir(self.folder)

    # ------------------------------------------------------------------ checking the copy

    def _check_local(self, path: Path, pieces: list[Piece]) -> int:
        """How many bytes of ``path`` (a file the copy had before this follower touched it)
        are the bucket's: its length, cut back to the end of the last whole piece (a write of
        the follower itself cut short); the last whole piece must match by SHA-256.
        :class:`~logkv.errors.ReplicaDivergedError` when the file holds other bytes."""
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return 0
        committed = pieces[-1].end if pieces else 0
        whole = [piece for piece in pieces if piece.end <= size]
        if size > committed or (size and not whole):
            raise self._diverged(path, f"it has {size} bytes, the bucket {committed}")
        end = whole[-1].end if whole else 0
        if end:
            last = whole[-1]
            if local_digest(path, last) != last.sha256:
                raise self._diverged(path, f"bytes {last.offset}..{last.end} differ")
        if size > end:
            os.truncate(path, end)  # an append of this follower's, cut short
        self._lengths[path.name] = end
        return end

    def _refuse_local_extras(self, plan: RestorePlan) -> None:
        """Refuse a folder holding segments after the bucket's last one, or snapshots newer
        than its newest (another history, or one ahead of the bucket)."""
        planned = [n for name, _ in plan.files if (n := segment_number(name)) is not None]
        newest = max(planned, default=0)
        covers = max(self.folded.snapshots, default=0)
        extra = [p for n, p in list_segments(self.folder) if n > newest]
        extra += [p for c, p in list_snapshots(self.folder) if c > covers]
        if extra:
            raise self._diverged(extra[0], "the bucket copy has no such file")

    def _diverged(self, path: Path, why: str) -> ReplicaDivergedError:
        return ReplicaDivergedError(
            f"{path} is not a copy of {self.bucket.describe} ({why}): the folder holds another "
            "history. Follow into an empty folder"
        )
