"""Online compaction: write the live state as a snapshot, switch to it, retire the old log.

The steps, and why a crash at any of them loses nothing:

1. *Rotate* (under the store lock, microseconds): new writes go to a fresh segment ``N+1``;
   the snapshot will cover segments ``1..N``.
2. *Copy* (lock held only to read a batch of index entries): every record that was live at
   the rotation is copied verbatim into ``NNNNNNNN.snap.tmp``, in key order. Writers keep
   appending to ``N+1`` meanwhile; when they change a key, the engine keeps the entry it had
   at the rotation (``Engine._frozen``) for the copy, so the snapshot is exactly the state as
   of its ``last_seq`` (history relies on that). A crash here leaves a temp file that the next
   open removes.
3. *Install*: hint and meta blocks, fsync, rename, fsync the folder. From this moment an open
   uses the snapshot and ignores segments ``<= N`` even if they are still there.
4. *Switch* (batches under the lock): index entries that still point at or below ``N`` now
   point into the snapshot.
5. *Retire*: delete segments ``<= N`` (or move them to ``archive/``) and older snapshots.
   A crash before or during this step is finished by the next writable open. Compaction holds
   these files open meanwhile (the largest, up to a bound), so that deleting one under the lock
   only removes its name; its blocks are freed (milliseconds per segment, seconds for
   gigabytes) when compaction closes it, after releasing the lock. The engine's readers let go
   of the retired files they had open at the same time, so once compaction returns the store
   holds none of them and the space is back (a read still running finishes first; a read that
   looked its entry up before the switch finds the file gone and looks the key up again).
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

from sortedcontainers import SortedDict

from .errors import CorruptionError, LogKVError
from .format import SEGMENT_HEADER_SIZE, check_frame
from .layout import data_file_name, list_segments, list_snapshots
from .options import Retention
from .replay import Entry, frame_length
from .retire import retire_files
from .segments import MAX_OPEN_DESCRIPTORS
from .snapshot import SnapshotWriter

if TYPE_CHECKING:
    from .engine import Engine

_BATCH = 512  # index entries handled per lock hold

#: Called as ``progress(records_done, records_total)`` while compaction copies records.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class CompactionResult:
    """What a compaction did. ``bytes_*`` are the store's data files on disk."""

    path: Path
    covers: int
    snapshot: Path | None
    records: int
    bytes_before: int
    bytes_after: int
    retention: Retention
    retired_files: int
    seconds: float
    longest_lock_hold_s: float
    notes: list[str] = field(default_factory=list)

    @property
    def reclaimed(self) -> int:
        """Bytes freed in the store folder (archived segments count as freed here)."""
        return self.bytes_before - self.bytes_after


class CompactionRunningError(LogKVError):
    """A compaction of this store is already running."""


class _Stopwatch:
    """Tracks the longest time the store lock was held by compaction."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._start = 0.0

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.longest = max(self.longest, time.perf_counter() - self._start)


def compact(
    engine: Engine, retention: Retention | None = None, progress: Progress | None = None
) -> CompactionResult:
    """Compact ``engine``'s store into a new snapshot (see the module docstring)."""
    retention = engine.retention if retention is None else Retention(retention)
    started = time.perf_counter()
    bytes_before = engine.disk_bytes()
    watch = _Stopwatch()
    with engine._mutex:
        engine._check_writable()
        if engine._compacting:
            raise CompactionRunningError(f"a compaction of {engine.path} is already running")
        with watch:
            engine._drain_pending()
            writer = engine._writer
            assert writer is not None
            if writer.end > SEGMENT_HEADER_SIZE:
                writer.rotate()
                engine._segments += 1
            covers = writer.number - 1
            if covers <= engine._covers:
                return CompactionResult(
                    engine.path, covers, None, 0, bytes_before, bytes_before, retention, 0,
                    time.perf_counter() - started, watch.longest, ["nothing to compact"],
                )  # fmt: skip
            engine._compacting = True
            engine._frozen, engine._frozen_covers = SortedDict(), covers
            last_seq, chain, last_us = engine._seq, engine._chain, engine._last_us
            record_bytes_at_rotation = engine._record_bytes
            total = len(engine._index)
    snapshot: SnapshotWriter | None = None
    try:
        # Inside the try: a snapshot that cannot even be created (a full disk) must still
        # end the compaction, or every later one would find it "already running".
        snapshot = SnapshotWriter(engine.path, covers)
        _copy_live_records(engine, snapshot, covers, watch, progress, total)
        with engine._mutex:
            engine._frozen = None
        info = snapshot.finish(last_seq, chain, last_us, retention.value)
        _switch_index(engine, snapshot, covers, watch)
        held = _hold_open(engine.path, covers)
        let_go: list[object] = []  # what the readers held of the retired files
        try:
            with engine._mutex, watch:
                engine._check_open()  # closed meanwhile: the next open retires the log
                engine._record_bytes = info.record_bytes + (
                    engine._record_bytes - record_bytes_at_rotation
                )
                engine._covers = covers
                retired = retire_files(engine.path, covers, retention)
                engine._segments -= sum(1 for i in retired if i > 0)
                let_go.extend(engine._readers.retire(covers))
        finally:
            let_go.clear()  # frees the deleted files' blocks, outside the lock
            for fd in held:
                os.close(fd)
    except BaseException:
        if snapshot is not None:
            snapshot.abort()
        raise
    finally:
        with engine._mutex:
            engine._compacting = False
            engine._frozen = None
            if engine._closed:  # close() ran meanwhile: drop what compaction reopened
                engine._readers.close()
    return CompactionResult(
        engine.path,
        covers,
        info.path,
        info.records,
        bytes_before,
        engine.disk_bytes(),
        retention,
        len(retired),
        time.perf_counter() - started,
        watch.longest,
    )


def _hold_open(folder: Path, covers: int) -> list[int]:
    """Read-only descriptors of the files retiring removes (segments ``<= covers``, older
    snapshots), so that removing them under the lock frees no blocks (see step 5).

    At most :data:`~logkv.segments.MAX_OPEN_DESCRIPTORS` of them, the largest (a store of many
    segments must not run out of descriptors); the others are freed under the lock.
    """
    paths = [p for n, p in list_segments(folder) if n <= covers]
    paths += [p for n, p in list_snapshots(folder) if n < covers]
    held: list[int] = []
    for path in sorted(paths, key=_size, reverse=True)[:MAX_OPEN_DESCRIPTORS]:
        try:
            held.append(os.open(path, os.O_RDONLY))
        except FileNotFoundError:
            continue
        except OSError:  # out of descriptors: the rest is freed under the lock, as before
            break
    return held


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _copy_live_records(
    engine: Engine,
    snapshot: SnapshotWriter,
    covers: int,
    watch: _Stopwatch,
    progress: Progress | None,
    total: int,
) -> None:
    after: str | None = None
    done = 0
    while True:
        engine.settle_order()  # keys written since: merged a batch per lock hold
        with engine._mutex, watch:
            last, batch = _next_batch(engine, after)
        if last is None:
            return
        for key, entry in batch:
            if entry[0] > covers:
                continue  # written after the rotation: the log after the snapshot has it
            file_id, offset = entry[0], entry[1]
            length = frame_length(entry)
            frame = engine._readers.pread(file_id, length, offset)
            problem = check_frame(frame, 0, length)
            if problem is not None:
                raise CorruptionError(engine.path / data_file_name(file_id), offset, problem)
            snapshot.add(frame, key, entry)
        after = last
        done += len(batch)
        if progress is not None:
            progress(min(done, total), total)


def _next_batch(engine: Engine, after: str | None) -> tuple[str | None, list[tuple[str, Entry]]]:
    """With the lock held: the next keys after ``after``, each with the entry it had at the
    rotation (a key changed since has that entry in ``engine._frozen``), and the last key
    looked at (None: no keys left). So the snapshot is the state as of its ``last_seq``."""
    engine._check_open()  # a compaction stops when the store is closed
    index, frozen = engine._index, engine._frozen
    assert frozen is not None
    keys = index.after(after, _BATCH)
    if keys:
        changed = list(frozen.irange(after, keys[-1], inclusive=(False, True)))
    else:  # the index has no more keys; keys changed (deleted) since the rotation may remain
        changed = list(islice(frozen.irange(after, None, inclusive=(False, True)), _BATCH))
    if changed:
        keys = sorted(set(keys).union(changed))
    if not keys:
        return None, []
    batch = []
    for key in keys:
        entry = frozen.get(key)
        if entry is None:
            entry = index.get(key)
        if entry is not None:
            batch.append((key, entry))
    return keys[-1], batch


def _switch_index(engine: Engine, snapshot: SnapshotWriter, covers: int, watch: _Stopwatch) -> None:
    keys = snapshot.keys
    for start in range(0, len(keys), _BATCH):
        with engine._mutex, watch:
            engine._check_open()
            index = engine._index
            for i in range(start, min(start + _BATCH, len(keys))):
                key = keys[i]
                entry = index.get(key)
                # Entries at or below `covers` can only be the ones copied: newer writes point
                # past `covers`, and only compaction (one at a time) rewrites old entries.
                if entry is not None and entry[0] <= covers:
                    index[key] = snapshot.entry(i)
        # Each new entry is a tuple the garbage collector tracks while the old one is freed, so
        # its allocation count stays flat as young objects pile up, until one young pass walks
        # them all, lock held (over half a second for 1M keys): collect them a batch at a time.
        if gc.isenabled():
            gc.collect(0)
        # This loop does no I/O, so it would keep the GIL for whole switch intervals and take
        # the lock again before a waiting writer runs; sleep(0) hands the GIL over.
        time.sleep(0)
