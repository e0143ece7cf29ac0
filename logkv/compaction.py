"""Online compaction: write the live state as a snapshot, switch to it, retire the old log.

The steps, and why a crash at any of them loses nothing:

1. *Rotate* (under the store lock, microseconds): new writes go to a fresh segment ``N+1``;
   the snapshot will cover segments ``1..N``.
2. *Copy* (lock held only to read a batch of index entries): every record that was live at
   the rotation is copied verbatim into ``NNNNNNNN.snap.tmp``, in key order. Writers keep
   appending to ``N+1`` meanwhile; when they change a key, the engine keeps the entry it had
   at the rotation (in :attr:`CompactionState.frozen`) for the copy, so the snapshot is
   exactly the state as of its ``last_seq`` (history relies on that). A crash here leaves a
   temp file that the next open removes.
3. *Install*: hint and meta blocks, fsync, rename, fsync the folder. From this moment an open
   uses the snapshot and ignores segments ``<= N`` even if they are still there.
4. *Switch* (batches under the lock): index entries that still point at or below ``N`` now
   point into the snapshot.
5. *Retire* (lock held only to record the snapshot as installed and let the readers go of
   the files it replaced): delete segments ``<= N`` (or move them to ``archive/``, and then
   write the archived log's checkpoints, :mod:`logkv.checkpoints`) and older snapshots, with
   the lock released: a deletion waits for the file system's journal (milliseconds each, more
   right after the snapshot's ``fsync``), and writers must not wait for it. Once the host
   records the snapshot, no index entry points into those files and its readers keep none of
   them open, so nothing needs them; a read that looked its entry up before the switch reads
   the file while it is still there, or finds it gone and looks the key up again.
   A crash before or during this step is finished by the next writable open. Compaction holds
   these files open meanwhile (the largest, up to a bound), so that deleting one only removes
   its name; its blocks are freed (milliseconds per segment, seconds for gigabytes) when
   compaction closes it, after the deletions. The engine's readers let go of the retired files
   they had open at the same time, so once compaction returns the store holds none of them and
   the space is back (a read still running finishes first).

This module holds the algorithm and knows nothing else of the engine: the store it runs on is
a :class:`CompactionHost`, which takes its lock for each step that needs it and keeps a
:class:`CompactionState` (the installed snapshot, the compaction under way) guarded by it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Protocol

from sortedcontainers import SortedDict

from .checkpoints import CheckpointPolicy, update_checkpoints
from .errors import LogKVError
from .format import value_ref_of_frame
from .hints import row_table
from .index import FILE_ID, Entry, Index, RowTable, packed_file
from .key_table import KeyTable
from .layout import list_segments, list_snapshots
from .modes import Retention
from .replay import frame_length
from .retire import retire_files, sync_retired
from .segments import MAX_OPEN_DESCRIPTORS
from .snapshot import SnapshotWriter
from .turns import Turns
from .values import remove_dead_values

_BATCH = 512  # index entries handled per lock hold
#: Frames up to this size are read whole to be copied; larger ones a piece at a time.
COPY_WHOLE = 4 << 20

log = logging.getLogger(__name__)

#: Called as ``progress(records_done, records_total)`` while compaction copies records.
Progress = Callable[[int, int], None]

#: What a host enters once it holds its lock for a step and exits before releasing it:
#: compaction times its lock holds this way (:attr:`CompactionResult.longest_lock_hold_s`).
HoldTimer = AbstractContextManager[None]


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
    #: The most CPU time the compacting thread spent in one hold of the store lock: the work
    #: a hold does; ``longest_lock_hold_s`` also counts the time the holder waited for the
    #: interpreter or a processor meanwhile (on a loaded machine, most of it).
    longest_lock_hold_cpu_s: float = 0.0

    @property
    def reclaimed(self) -> int:
        """Bytes freed in the store folder (archived segments count as freed here)."""
        return self.bytes_before - self.bytes_after


class CompactionRunningError(LogKVError):
    """A compaction of this store is already running."""


@dataclass(frozen=True, slots=True)
class Cut:
    """The log at a compaction's rotation, taken under the host's lock: the snapshot covers
    segments ``1..covers`` and holds the state as of record ``last_seq``."""

    covers: int
    last_seq: int
    #: The chain value and timestamp of record ``last_seq``.
    chain: bytes
    last_us: int
    #: The bytes of every record then (the snapshot's records replace those it covers).
    record_bytes: int
    #: The keys then (what the progress callback counts towards).
    keys: int


class CompactionState:
    """A store's compaction state: the installed snapshot and the compaction under way.

    The engine keeps one, guarded by its lock. While a compaction copies, every write that
    replaces or deletes an entry at or below :attr:`frozen_covers` hands the old entry to
    :attr:`frozen`, so that :meth:`entries_at_rotation` still sees the state at the rotation.
    """

    __slots__ = ("covers", "frozen", "frozen_covers", "retention", "running")

    def __init__(self, retention: Retention) -> None:
        #: Segments ``1..covers`` are in the installed snapshot (0: there is none).
        self.covers = 0
        #: How the compaction that wrote the installed snapshot retires files (an open that
        #: finishes an interrupted compaction retires them the same way).
        self.retention = retention
        #: A compaction is under way (from its rotation until it ends, failed or not).
        self.running = False
        #: While a compaction copies: the entry each key had at its rotation, for the keys
        #: changed since (their entry at or below ``frozen_covers`` was replaced or deleted).
        self.frozen: SortedDict[str, int] | None = None  # key -> packed entry
        self.frozen_covers = 0

    def start(self, covers: int) -> None:
        """A compaction of segments ``1..covers`` begins: keep entries as of now."""
        self.running = True
        self.frozen, self.frozen_covers = SortedDict(), covers

    def stop_freezing(self) -> None:
        """The copy is done: writes need no longer keep old entries."""
        self.frozen = None

    def end(self) -> None:
        """The compaction ended (done, failed or stopped by a close)."""
        self.running = False
        self.frozen = None

    def entries_at_rotation(
        self, index: Index, after: str | None
    ) -> tuple[str | None, list[tuple[str, int]]]:
        """The next keys after ``after``, each with the packed entry it had at the rotation (a
        key changed since has that entry in :attr:`frozen`), and the last key looked at (None:
        no keys left). So the snapshot is the state as of its ``last_seq``.

        The entries are left packed: unpacking them is most of the work of a batch, and needs
        no lock (a packed entry never changes, and the row tables it may refer to stay until
        the compaction retires their files), so the host unpacks them after releasing it."""
        frozen = self.frozen
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
        current = index.find
        for key in keys:
            packed = frozen.get(key)
            if packed is None:
                packed = current(key)
            if packed is not None:
                batch.append((key, packed))
        return keys[-1], batch

    def _check(self) -> None:
        """Assert the invariants (for tests)."""
        assert self.covers >= 0, self.covers
        assert self.frozen is None or self.running, "entries frozen with no compaction running"
        if self.frozen is not None:
            covers = self.frozen_covers
            assert covers > self.covers, (covers, self.covers)
            assert all(packed_file(p) <= covers for p in self.frozen.values()), "newer, frozen"


def switch_entries(index: Index, batch: Sequence[tuple[str, Entry]], covers: int) -> None:
    """Point the keys of ``batch`` that still have their entry at or below ``covers`` at
    their entry in the snapshot covering ``1..covers`` (with the host's lock held).

    Entries at or below ``covers`` can only be the ones copied: newer writes point past
    ``covers``, and only compaction (one at a time) rewrites old entries.
    """
    current, repoint = index.find, index.repoint
    for key, entry in batch:
        old = current(key)
        if old is not None and packed_file(old) <= covers:
            repoint(key, index.pack(entry))


class CompactionHost(Protocol):
    """The store a compaction runs on: what :func:`compact` needs of the engine, and no more.

    Each step that needs the store's lock takes it itself, enters ``timer`` once it holds it
    and leaves it before releasing it. A step raises
    :class:`~logkv.errors.StoreClosedError` once the store is closed: the compaction stops
    there and changes nothing more on disk.
    """

    @property
    def path(self) -> Path:
        """The store folder."""
        ...

    @property
    def retention(self) -> Retention:
        """How the store retires files by default."""
        ...

    @property
    def snapshot_covers(self) -> int:
        """What the installed snapshot covers (0: none)."""
        ...

    def disk_bytes(self) -> int:
        """Bytes of the store's data files."""
        ...

    def settle_order(self) -> None:
        """Merge keys written since into the ordered keys, a batch per lock hold."""
        ...

    def rotate_for_compaction(self, timer: HoldTimer) -> Cut | None:
        """Step 1: refuse a read-only, closed or failed store, and a second compaction
        (:class:`CompactionRunningError`); make pending group commits visible, rotate to a
        fresh segment and start keeping entries as of now (:meth:`CompactionState.start`).
        None: nothing was written since the installed snapshot, and nothing was started."""
        ...

    def entries_at_rotation(
        self, after: str | None, timer: HoldTimer
    ) -> tuple[str | None, list[tuple[str, Entry]]]:
        """Step 2, per batch: :meth:`CompactionState.entries_at_rotation` under the lock, the
        entries unpacked after it."""
        ...

    def read_frame(self, entry: Entry) -> bytes:
        """The whole frame ``entry`` points to, its checksum verified."""
        ...

    def frame_pieces(self, entry: Entry) -> Iterator[bytes]:
        """The frame ``entry`` points to, a piece at a time, its checksum verified as they
        pass (``CorruptionError`` after the last when it fails)."""
        ...

    def install_stored_keys(
        self, stored: KeyTable | None, table: RowTable | None, timer: HoldTimer
    ) -> list[object] | None:
        """Step 4 in one hold of the lock, when it can be: stop freezing entries
        (:meth:`CompactionState.stop_freezing`), and make the snapshot's ``stored`` keys (None:
        it stored no key table) with their rows in ``table`` the index's stored keys, given
        the keys changed since the rotation (:meth:`Index.take_stored
        <logkv.index.Index.take_stored>`). Returns what the index let go, to be dropped after
        the lock (the caller then drops older entries, :meth:`forget_older`); None: not done,
        and the caller switches the entries a batch at a time (:meth:`switch_to_snapshot`)."""
        ...

    def forget_older(self, keys: Sequence[str], covers: int, last: bool, timer: HoldTimer) -> None:
        """Step 4 after :meth:`install_stored_keys`, per batch of the snapshot's ``keys``,
        under the lock: drop their entries that point into files ``<= covers``
        (:meth:`Index.forget_older <logkv.index.Index.forget_older>`); after the ``last``
        batch, copy the index's dict of written entries into one of its new size."""
        ...

    def switch_to_snapshot(
        self, batch: Sequence[tuple[str, Entry]], covers: int, timer: HoldTimer
    ) -> None:
        """Step 4, per batch: :func:`switch_entries` on the index under the lock."""
        ...

    def retire_covered(self, cut: Cut, snapshot_bytes: int, timer: HoldTimer) -> list[object]:
        """Step 5, under the lock: count the snapshot's ``snapshot_bytes`` of records in place
        of the log it covers, record it as installed (segments ``<= cut.covers`` no longer
        count as the store's) and let the readers and the index go of the files it replaced,
        and keep none of them from now on. Returns what the readers and the index held of
        those files, for the caller to drop once it deleted them (that frees the files' blocks,
        and a million references to the stored keys). The caller deletes the files after the
        lock is released."""
        ...

    def end_compaction(self) -> None:
        """Whatever happened: the compaction is over (:meth:`CompactionState.end`)."""
        ...


class _Stopwatch:
    """Tracks the longest time the store lock was held by compaction, on the clock and in the
    compacting thread's CPU time."""

    def __init__(self) -> None:
        self.longest = 0.0
        self.longest_cpu = 0.0
        self._start = 0.0
        self._start_cpu = 0.0

    def __enter__(self) -> None:
        self._start = time.perf_counter()
        self._start_cpu = time.thread_time()

    def __exit__(self, *exc: object) -> None:
        self.longest = max(self.longest, time.perf_counter() - self._start)
        self.longest_cpu = max(self.longest_cpu, time.thread_time() - self._start_cpu)


def compact(
    host: CompactionHost, retention: Retention | None = None, progress: Progress | None = None
) -> CompactionResult:
    """Compact ``host``'s store into a new snapshot (see the module docstring)."""
    retention = host.retention if retention is None else Retention(retention)
    started = time.perf_counter()
    bytes_before = host.disk_bytes()
    watch = _Stopwatch()
    cut = host.rotate_for_compaction(watch)
    if cut is None:
        return CompactionResult(
            host.path, host.snapshot_covers, None, 0, bytes_before, bytes_before, retention, 0,
            time.perf_counter() - started, watch.longest, ["nothing to compact"],
        )  # fmt: skip
    covers = cut.covers
    snapshot: SnapshotWriter | None = None
    try:
        # Inside the try: a snapshot that cannot even be created (a full disk) must still
        # end the compaction, or every later one would find it "already running".
        snapshot = SnapshotWriter(host.path, covers)
        streamed = _copy_live_records(host, snapshot, cut, watch, progress)
        info = snapshot.finish(cut.last_seq, cut.chain, cut.last_us, retention.value)
        # Entries stay frozen until here: the keys changed since the rotation are what the
        # index needs to take the snapshot's stored keys in one hold.
        stored = snapshot.stored
        table = None if stored is None else row_table(snapshot.columns, -covers)
        if host.install_stored_keys(stored, table, watch) is None:
            _switch_index(host, snapshot, covers, watch)
        else:
            _forget_older(host, snapshot.columns.keys, covers, watch)
        held = _hold_open(host.path, covers)
        let_go: list[object] = []  # what the readers and the index held of the retired files
        try:
            let_go = host.retire_covered(cut, info.record_bytes, watch)
            # Outside the lock: writers go on while the file system deletes (or moves) them.
            retired = retire_files(host.path, covers, retention, sync=False)
        finally:
            let_go.clear()  # frees the deleted files' blocks (and the stored keys)
            for fd in held:
                os.close(fd)
        if retired:
            sync_retired(host.path, retention)
        if retention is Retention.DELETE:
            remove_dead_values(host.path, cut.last_seq, streamed)
    except BaseException:
        if snapshot is not None:
            snapshot.abort()
        raise
    finally:
        host.end_compaction()
    notes = archive_checkpoints(host.path) if retention is Retention.ARCHIVE else []
    return CompactionResult(
        host.path,
        covers,
        info.path,
        info.records,
        bytes_before,
        host.disk_bytes(),
        retention,
        len(retired),
        time.perf_counter() - started,
        watch.longest,
        notes,
        watch.longest_cpu,
    )


def archive_checkpoints(folder: Path) -> list[str]:
    """After a compaction with retention archive: the checkpoints of the archived log that
    make point-in-time history fast (:mod:`logkv.checkpoints`). Outside the lock; a failure
    is a note, never a failed compaction (the next one folds on from the newest checkpoint)."""
    try:
        written = update_checkpoints(folder, CheckpointPolicy.from_env())
    except (OSError, ValueError, LogKVError) as exc:
        log.warning("checkpoints of %s not written: %s", folder, exc)
        return [f"checkpoints not written: {exc}"]
    return [f"{len(written)} checkpoint(s) written"] if written else []


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
    host: CompactionHost,
    snapshot: SnapshotWriter,
    cut: Cut,
    watch: _Stopwatch,
    progress: Progress | None,
) -> set[int]:
    """Copy every record live at the rotation into ``snapshot``; return the seqs of the
    streamed sets among them (their value files are carried by reference, never copied)."""
    covers, total = cut.covers, cut.keys
    after: str | None = None
    done = 0
    streamed: set[int] = set()
    turn = Turns().take
    while True:
        host.settle_order()  # keys written since: merged a batch per lock hold
        last, batch = host.entries_at_rotation(after, watch)
        if last is None:
            return streamed
        for key, entry in batch:
            turn()
            if entry[FILE_ID] > covers:
                continue  # written after the rotation: the log after the snapshot has it
            if frame_length(entry) > COPY_WHOLE:
                # a big value held in the log: copied a piece at a time, never whole
                snapshot.add(host.frame_pieces(entry), key, entry)
                continue
            frame = host.read_frame(entry)
            if entry[3] < -1:  # a streamed set: the snapshot holds its value file's reference
                streamed.add(value_ref_of_frame(frame, 0, len(frame)).seq)
            snapshot.add(frame, key, entry)
        after = last
        done += len(batch)
        if progress is not None:
            progress(min(done, total), total)


def _forget_older(
    host: CompactionHost, keys: list[str], covers: int, watch: _Stopwatch
) -> None:
    """Step 4 after the snapshot's keys became the stored keys: the entries written before
    the rotation go, a batch of keys per hold of the lock (an index loaded from the log has
    one for every key)."""
    turn = Turns().take
    step = _BATCH * 8  # a dict lookup a key: a batch is about a millisecond
    for start in range(0, max(len(keys), 1), step):
        host.forget_older(keys[start : start + step], covers, start + step >= len(keys), watch)
        turn()


def _switch_index(
    host: CompactionHost, snapshot: SnapshotWriter, covers: int, watch: _Stopwatch
) -> None:
    keys, entry = snapshot.columns.keys, snapshot.entry
    turn = Turns().take
    for start in range(0, len(keys), _BATCH):
        # The new entries are made before the lock is taken: it is held only to swap them in.
        stop = min(start + _BATCH, len(keys))
        host.switch_to_snapshot([(keys[i], entry(i)) for i in range(start, stop)], covers, watch)
        turn()  # this loop does no I/O: it lets writers run now and then
