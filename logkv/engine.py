"""The synchronous storage engine: one store folder, one append-only log, one sorted index.

The engine is thread-safe and free of asyncio; :mod:`logkv.key_value_store` wraps it for async
code. Writes follow *durable before visible*: a record is appended (and, under
:attr:`Durability.FSYNC`, synced) before the index shows it.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NamedTuple

from .compaction import (
    CompactionResult,
    CompactionRunningError,
    CompactionState,
    Cut,
    HoldTimer,
    Progress,
    compact,
    switch_entries,
)
from .errors import (
    CorruptionError,
    FencedError,
    InvalidKeyError,
    ReadOnlyStoreError,
    StoreClosedError,
    StoreFailedError,
    StoreNotFoundError,
    SyncFailedError,
)
from .files import file_set, source_of
from .format import (
    CHAIN_SIZE,
    FORMAT_VERSION,
    FRAME_HEADER_SIZE,
    GENESIS_CHAIN,
    SEGMENT_HEADER_SIZE,
    BadFrame,
    BatchItem,
    Op,
    SyncedMark,
    check_frame,
    check_value_read,
    checked_frame_pieces,
    checked_value,
    encode_batch,
    encode_record,
    encode_record_start,
    encode_value_ref,
    stored_segment_version,
    streamed_entry_size,
    value_ref_of_frame,
)
from .fsutil import (
    atomic_write,
    check_store_entries,
    fsync_dir,
    make_dirs,
    open_file,
    open_for_reading,
)
from .group_commit import DONE, Commit, GroupCommit, Update
from .hints import (
    CollectedHint,
    HintWriter,
    SegmentHint,
    hints_wanted,
    load_segment_hint,
    remove_hint,
    remove_stale_hints,
    segment_changed,
)
from .index import (
    CONTENT_TYPE,
    FILE_ID,
    HEAD_OVER_SIZE,
    HEAD_SHIFT,
    OFFSET,
    SIZE_SHIFT,
    Index,
    IndexEntry,
    RowTable,
    pack,
    packed_file,
    packed_frame_length,
    unpack,
    value_size,
)
from .key_range import check_prefix
from .key_table import KeyTable
from .layout import (
    ARCHIVE_DIR,
    DAMAGED_SUFFIX,
    SEGMENT_SUFFIX,
    SNAPSHOT_SUFFIX,
    TEMP_SUFFIX,
    data_file_name,
    list_segments,
    list_snapshots,
    list_value_files,
    segment_name,
    segment_number,
    torn_tail_copy_name,
)
from .lock import StoreLock
from .modes import DEFAULT_SEGMENT_SIZE, MAX_KEY_LENGTH, Durability, Recovery, Retention
from .repair import rewrite_valid_frames
from .replay import (
    DroppedRange,
    Entry,
    RecoveryReport,
    Replayer,
    frame_length,
    synced_shortfall,
)
from .retire import retire_files
from .segments import SegmentReaders, SegmentWriter
from .snapshot import load_snapshot_into
from .synced import forget_synced_mark, read_synced_mark, write_synced_mark
from .turns import Turns
from .values import (
    INLINE_LIMIT,
    ValueFileReader,
    ValueFileWriter,
    ValueSource,
    ValueStream,
    iter_inline,
    remove_leftovers,
    value_path,
)

log = logging.getLogger(__name__)

_CHUNK: Final = 512  # keys copied per lock hold while iterating
_COPY_PIECE: Final = 1 << 20  # bytes of a big frame compaction reads at a time
_REPLAY_ATTEMPTS: Final = 10  # replays and reads racing a writer's compactions
#: Values of at least this many bytes are read with ``pread`` into the object returned, not
#: copied out of a memory map, and written with ``pwritev`` from where they are, never copied
#: into a frame first (docs/ARCHITECTURE.md, "Large values").
LARGE_VALUE = 64 << 10
_SET: Final = int(Op.SET)
_CHAIN_START: Final = FRAME_HEADER_SIZE - CHAIN_SIZE
_CHAIN_STOP: Final = FRAME_HEADER_SIZE
_DELETE: Final = int(Op.DELETE)
_SET_STREAMED: Final = int(Op.SET_STREAMED)
_now_ns = time.time_ns


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


#: Returned by :meth:`Engine.get` for an absent key when no default is given.
MISSING: Final = _Missing()


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A key, its content type and the size of its value in bytes (0 for a stored None)."""

    key: str
    content_type: str | None
    size: int


@dataclass(frozen=True)
class EngineStats:
    """Figures about a store. ``disk_bytes`` are the data files on disk (segments and
    snapshot); ``dead_bytes`` are bytes of superseded or deleted records compaction would
    reclaim; ``snapshot_covers`` is the last segment folded into the snapshot (0: none)."""

    path: Path
    keys: int
    live_bytes: int
    disk_bytes: int
    dead_bytes: int
    segments: int
    last_seq: int
    durability: Durability
    readonly: bool
    snapshot_covers: int = 0

    @property
    def log_bytes(self) -> int:
        """Deprecated: the old name of :attr:`disk_bytes` (it counts the snapshot too)."""
        warnings.warn(
            "EngineStats.log_bytes is deprecated: use disk_bytes (segments and snapshot)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.disk_bytes


def validate_key(key: object) -> str:
    """Return ``key`` if logkv can store it, else raise :class:`InvalidKeyError`."""
    if type(key) is not str:
        raise InvalidKeyError(f"keys are strings, got {type(key).__name__}: {key!r}")
    if not key:
        raise InvalidKeyError("a key must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKeyError(f"a key may have at most {MAX_KEY_LENGTH} characters, got {len(key)}")
    if not key.isascii():
        try:
            key.encode("utf-8")
        except UnicodeEncodeError as exc:
            reason = f"key {key!r} cannot be encoded as UTF-8 ({exc.reason})"
            raise InvalidKeyError(reason) from None
    return key


def _checked_set(key: str, value: object, content_type: object) -> bytes | None:
    """The value of a set, as bytes or None, once key, value and content type are valid."""
    if type(key) is not str or not key or len(key) > MAX_KEY_LENGTH or not key.isascii():
        validate_key(key)
    if content_type is not None and type(content_type) is not str:
        raise TypeError(f"content_type must be a str, got {type(content_type).__name__}")
    if value is None or type(value) is bytes:
        return value
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"values are bytes or None, got {type(value).__name__}")
    return bytes(value)


def _named(entry: Entry) -> IndexEntry:
    """An engine entry as the named :class:`IndexEntry` (``tuple.__new__``: half the cost of
    ``IndexEntry._make``, which checks the length the engine already guarantees)."""
    return tuple.__new__(IndexEntry, entry)


class LogEnd(NamedTuple):
    """Where a writer's log ends: the active segment and the end of its last record, that
    record's seq and timestamp (µs), and what the installed snapshot covers."""

    segment: int
    end: int
    seq: int
    last_us: int
    covers: int


@dataclass(slots=True)
class _LogPosition:
    """Where the log ends and what it holds. Guarded by ``Engine._mutex``."""

    seq: int = 0  # the sequence number of the newest record
    chain: bytes = GENESIS_CHAIN  # its chain value
    last_us: int = 0  # its timestamp
    record_bytes: int = 0  # bytes of every record, the snapshot's included
    live_bytes: int = 0  # bytes of the records the index points to
    segments: int = 0  # segment files after the snapshot

    def take_from(self, r: Replayer) -> None:
        """Adopt where a replay ended (``segments`` is counted by the caller)."""
        self.seq, self.chain, self.last_us = r.last_seq, r.chain, r.last_timestamp_us
        self.record_bytes, self.live_bytes = r.record_bytes, r.live_bytes

    def hand_to(self, r: Replayer) -> None:
        """Let a replay go on from here (after a snapshot; a read-only store refreshing)."""
        r.last_seq, r.chain, r.last_timestamp_us = self.seq, self.chain, self.last_us
        r.record_bytes, r.live_bytes = self.record_bytes, self.live_bytes


@dataclass(slots=True)
class _ReplayCursor:
    """Where the last replay or refresh stopped reading. Guarded by ``Engine._mutex``."""

    segment: int = 0  # the segment scanned last (0: none) ...
    offset: int = 0  # ... and where its valid data ended
    synced: SyncedMark | None = None  # the synced mark read by the last replay


class Engine:
    """A store: an append-only log of set/delete records and a sorted index of their locations.

    Open with :meth:`open`. ``get``/``set``/``delete`` are point operations; :meth:`keys` and
    :meth:`infos` iterate in key order from an exclusive start key. Values are ``bytes`` or
    ``None`` (a stored None, distinct from a missing key) with an optional content type.
    """

    def __init__(
        self,
        path: Path,
        *,
        readonly: bool,
        durability: Durability,
        segment_size: int,
        recovery: Recovery,
        retention: Retention,
    ) -> None:
        # Settings: fixed once open.
        self.path = path
        self.retention = retention
        self.readonly = readonly
        self.durability = durability
        self._group_commit = durability is Durability.FSYNC
        self.segment_size = segment_size
        self.recovery_mode = recovery
        self.report = RecoveryReport()  # set by open and by a read-only store's reload
        # The store's one lock. Hot paths take it directly (a C-level lock); group commit's
        # conditions are over it. It guards every field below but the readers (thread-safe on
        # their own) and the folder lock (taken by open, released by close). Values are read
        # outside it.
        self._mutex = threading.Lock()
        self._closed = False  # guarded by _mutex
        self._failed: BaseException | None = None  # a failed fdatasync; guarded by _mutex
        self._index = Index()  # guarded by _mutex
        self._position = _LogPosition()  # guarded by _mutex
        self._compaction = CompactionState(retention)  # guarded by _mutex
        self._commits = GroupCommit(self._mutex, self._begin_sync, self._end_sync)  # by _mutex
        self._scanned = _ReplayCursor()  # guarded by _mutex
        self._writer: SegmentWriter | None = None  # guarded by _mutex
        self._closed_end = LogEnd(0, 0, 0, 0, 0)  # log_end() after close; guarded by _mutex
        self._readers = SegmentReaders(path)  # thread-safe on its own
        #: Writes the hint files of sealed segments (a writer's, unless its segments are so
        #: small that a scan costs less); thread-safe on its own.
        self._hints: HintWriter | None = (
            HintWriter(path) if not readonly and hints_wanted(segment_size) else None
        )
        #: Sealed segments the last replay scanned (no usable hint): a writer hints them once
        #: its open succeeded (an open that fails changes nothing).
        self._unhinted: list[int] = []
        #: A writer's hint data of its active segment, collected as it appends (set by open;
        #: guarded by _mutex); handed to the hint writer when the segment is sealed.
        self._collected = CollectedHint(0, 0, [], whole=False)
        self._folder_lock: StoreLock | None = None  # set by open, released by close

    # ------------------------------------------------------------------ opening and closing

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        readonly: bool = False,
        create: bool = True,
        durability: Durability | str = Durability.PROCESS,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        recovery: Recovery | str = Recovery.STRICT,
        retention: Retention | str = Retention.DELETE,
    ) -> Engine:
        """Open (and by default create) the store in folder ``path`` and replay its log.

        A writable open takes the store's lock (:class:`~logkv.errors.StoreLockedError` when
        another writer holds it), cuts a torn tail off the last segment and removes leftover
        temp files. A read-only open takes no lock, changes nothing, and can :meth:`refresh`.
        """
        folder = path if isinstance(path, Path) else Path(path)  # keeps a file set's path
        durability = Durability(durability)
        if segment_size < 4096:
            raise ValueError(f"segment_size must be at least 4096 bytes, got {segment_size}")
        if not folder.is_dir():
            if readonly or not create:
                raise StoreNotFoundError(f"no store at {folder} (the folder does not exist)")
            # Under FSYNC a new store must survive a power loss: the entry of every folder
            # created is made durable in its parent (the new files' entries in the store
            # folder are synced with the first segment's header).
            make_dirs(folder, durable=durability is Durability.FSYNC)
        if source_of(folder) is None:  # a file set has no links
            check_store_entries(folder)  # nothing in a store folder is followed if it is a link
        engine = cls(
            folder,
            readonly=readonly,
            durability=durability,
            segment_size=segment_size,
            recovery=Recovery(recovery),
            retention=Retention(retention),
        )
        try:
            if not readonly:
                engine._folder_lock = StoreLock(folder)
            engine._load()
        except BaseException:
            engine._release()
            raise
        return engine

    def _load(self) -> None:
        if not self.readonly:
            for leftover in self.path.glob("*" + TEMP_SUFFIX):
                leftover.unlink()
        replayer, scan_end = self._replay_settled()
        if self.report.lost is not None and not replayer.dropped and not self.readonly:
            forget_synced_mark(self.path)  # salvage accepted the loss: the next open may too
        if replayer.dropped and not self.readonly:
            # Salvage: make the repair stick, so the next open needs no salvage.
            for number in sorted({_segment_of(d.path) for d in replayer.dropped}):
                remove_hint(self.path, number)
                kept = rewrite_valid_frames(self.path / segment_name(number), number)
                log.warning("salvage: rewrote segment %d with its %d valid records", number, kept)
            forget_synced_mark(self.path)  # the rewritten segments' offsets changed
            first = self.report
            replayer, scan_end = self._replay()
            self.report = first
        self._index = replayer.index
        self._index.sort_all()
        self._position.take_from(replayer)
        if not self.readonly:
            for leftover in remove_leftovers(self.path, self._position.seq):
                log.warning(
                    "%s: removed a value file no record commits (a cut-off stream)", leftover
                )
            self._retire_stale()
            self._writer = SegmentWriter(
                self.path,
                self._scanned.segment or self._compaction.covers + 1,
                scan_end,
                self.segment_size,
                sync_on_rotate=self.durability is Durability.FSYNC,
            )
            self._position.segments = max(self._position.segments, 1)
            for number in self._unhinted:
                self._sealed(number)
            # Records the segment holds already were not collected: its hint is a scan's.
            self._collected = CollectedHint(
                self._writer.number,
                self._position.seq + 1,
                self._index.types.names,
                whole=self._writer.end <= SEGMENT_HEADER_SIZE,
            )
            if self._writer.end and self._writes_older_version(self._writer.number):
                # Records of this version go to a segment of this version, never after an
                # older header: an older logkv then refuses the segment instead of misreading
                # its records.
                self._writer.rotate()
                self._follow_rotation(self._writer.number)

    def _writes_older_version(self, number: int) -> bool:
        """Whether segment ``number`` has the header of an older format version."""
        with open_for_reading(self.path / segment_name(number)) as file:
            return stored_segment_version(file.read(SEGMENT_HEADER_SIZE)) < FORMAT_VERSION

    def _replay(self) -> tuple[Replayer, int]:
        """Load the newest good snapshot, then scan the segments after it; return the
        :class:`Replayer` and where the log's valid data ends."""
        replayer = Replayer(Index(), self.recovery_mode)
        scanned = self._scanned
        replayer.synced = scanned.synced = read_synced_mark(self.path)
        self.report = RecoveryReport(dropped=replayer.dropped)
        covers = self._load_snapshot(replayer)
        segments = self._segments_after(covers)
        end = 0
        scanned.segment = 0
        self._unhinted = []
        # Sealed segments with a hint: their bytes are checksummed in a thread while this one
        # applies the hints before them (the checksum releases the GIL).
        checker = ThreadPoolExecutor(1, "logkv-open")
        try:
            hinted: list[tuple[SegmentHint, Future[str | None]] | None] = []
            for i, (number, seg_path) in enumerate(segments):
                hint = None if i == len(segments) - 1 else self._segment_hint(number, seg_path)
                hinted.append(
                    None
                    if hint is None
                    else (hint, checker.submit(segment_changed, seg_path, hint))
                )
            for i, (number, seg_path) in enumerate(segments):
                is_last = i == len(segments) - 1
                end = self._replay_segment(replayer, number, seg_path, is_last, hinted[i])
                scanned.segment = number
        finally:
            checker.shutdown(cancel_futures=True)
        replayer.count_live()
        self._check_synced_mark(replayer, end, covers)
        self._position.segments = sum(1 for _, p in segments if p.parent == self.path)
        scanned.offset = end
        return replayer, end

    def _replay_segment(
        self,
        replayer: Replayer,
        number: int,
        seg_path: Path,
        is_last: bool,
        hinted: tuple[SegmentHint, Future[str | None]] | None,
    ) -> int:
        """Fold segment ``number`` into ``replayer``: from its hint when it has one and its
        bytes are those the hint was written from, else by a scan (a writer queues a new hint
        for a sealed segment scanned whole). Returns where its valid data ends."""
        if hinted is not None:
            hint, changed = hinted
            problem = changed.result()
            if problem is None:
                replayer.apply_hint(hint, seg_path)
                return hint.size
            log.info("%s: %s; scanning it instead of using its hint", seg_path, problem)
        scan = replayer.scan(seg_path, number, 0, is_last=is_last)
        if scan.torn_tail is not None:
            self._drop_torn_tail(scan.torn_tail)
        if not is_last and seg_path.parent == self.path:
            self._unhinted.append(number)  # a writer (re)writes its hint once open
        return scan.valid_end

    def _segment_hint(self, number: int, seg_path: Path) -> SegmentHint | None:
        """Sealed segment ``number``'s hint, checked against the segment; None when there is
        none, or it is damaged or stale (then the segment is scanned, and a writer rewrites
        the hint), or the open salvages (which scans every frame)."""
        if (
            self.recovery_mode is Recovery.SALVAGE
            or seg_path.parent != self.path
            or source_of(self.path) is not None  # a file set (a bucket copy) has no hints
        ):
            return None
        try:
            return load_segment_hint(self.path, number, seg_path)
        except CorruptionError as exc:
            log.info("%s; scanning the segment instead", exc)
            return None

    def _replay_settled(self) -> tuple[Replayer, int]:
        """:meth:`_replay`; a read-only store replays again when a writer's compaction retired
        files while it read them (a file vanished, or the log seemed to have a gap, and the
        newest snapshot changed meanwhile)."""
        attempt = 0
        while True:
            newest = _newest_covers(self.path)
            try:
                return self._replay()
            except (FileNotFoundError, CorruptionError):
                attempt += 1
                if (
                    not self.readonly
                    or attempt >= _REPLAY_ATTEMPTS
                    or _newest_covers(self.path) == newest
                ):
                    raise

    def _load_snapshot(self, replayer: Replayer) -> int:
        """Seed ``replayer`` from the newest snapshot that loads; return what it covers (0 if
        none). Damaged newer snapshots are noted in the report; the log must still hold what
        they covered (checked by :meth:`_segments_after`), else open fails."""
        compaction = self._compaction
        compaction.covers = 0
        self.report.damaged_snapshots = []
        for covers, path in reversed(list_snapshots(self.path)):
            try:
                info = load_snapshot_into(path, covers, replayer.index)
            except CorruptionError as exc:
                log.warning("%s; falling back to an older snapshot and the log", exc)
                self.report.damaged_snapshots.append(exc)
                continue
            at_snapshot = _LogPosition(
                info.last_seq, info.chain, info.last_us, info.record_bytes, info.live_bytes
            )
            at_snapshot.hand_to(replayer)
            compaction.retention = Retention(info.retention)
            compaction.covers = covers
            return covers
        return 0

    def _segments_after(self, covers: int) -> list[tuple[int, Path]]:
        """The segments to replay after snapshot ``covers``: the store's own, and archived
        ones where a damaged newer snapshot forces a fallback. They must be consecutive."""
        own = {n: p for n, p in list_segments(self.path) if n > covers}
        archive = self.path / ARCHIVE_DIR
        if self.report.damaged_snapshots and archive.is_dir():
            for n, p in list_segments(archive):
                if n > covers:
                    own.setdefault(n, p)
        numbers = sorted(own)
        expected = covers + 1
        for n in numbers:
            if n != expected:
                damaged = self.report.damaged_snapshots
                raise CorruptionError(
                    self.path / segment_name(expected),
                    0,
                    f"segment {expected} is missing from the log"
                    + (
                        f" and the newest snapshot is damaged ({damaged[0].reason}); restore "
                        "it, or the archived segments, from a backup"
                        if damaged
                        else ""
                    ),
                )
            expected += 1
        if self.readonly:  # archived segments are read where they are
            self._readers.locate({n: own[n] for n in numbers if own[n].parent != self.path})
            self._hold_view(numbers)
        return [(n, own[n]) for n in numbers]

    def _hold_view(self, numbers: list[int]) -> None:
        """Read-only stores: keep the files of this view (the snapshot and ``numbers``) open
        when they fit within the readers' bound, so that a writer's compaction cannot take
        them away before the next refresh (see :meth:`SegmentReaders.hold`)."""
        covers = self._compaction.covers
        self._readers.hold(([-covers] if covers else []) + numbers)

    def _retire_stale(self) -> None:
        """After a crash between a snapshot's install and its cleanup: retire what the newest
        snapshot covers, set damaged snapshots aside, remove older snapshots and the hints
        of segments that are gone."""
        retire_files(self.path, self._compaction.covers, self._compaction.retention)
        remove_stale_hints(self.path, self._compaction.covers)
        if self.report.damaged_snapshots:
            self._restore_archived()
        for exc in self.report.damaged_snapshots:
            if exc.path.exists():
                os.replace(exc.path, exc.path.with_name(exc.path.name + DAMAGED_SUFFIX))

    def _restore_archived(self) -> None:
        """After a fallback past a damaged snapshot: move the archived segments that replay
        used back into the store folder, where the index (and the next open) expects them."""
        archive = self.path / ARCHIVE_DIR
        moved = False
        for number, seg_path in list_segments(archive) if archive.is_dir() else []:
            target = self.path / seg_path.name
            if number > self._compaction.covers and not target.exists():
                os.replace(seg_path, target)
                moved = True
        if moved:
            fsync_dir(self.path)
            fsync_dir(archive)

    def _check_synced_mark(self, replayer: Replayer, end: int, covers: int) -> None:
        """Fail (strict) or report (salvage) a log that ends before the synced mark: records
        that were durable when the writer last closed cleanly are missing."""
        lost = synced_shortfall(replayer.synced, self.path, self._scanned.segment, end, covers)
        if lost is None:
            return
        if self.recovery_mode is not Recovery.SALVAGE:
            raise lost
        log.warning("salvage: %s: %s", lost.path, lost.reason)
        self.report.lost = DroppedRange(lost.path, lost.offset, lost.offset, lost.reason)

    def _drop_torn_tail(self, torn: DroppedRange) -> None:
        self.report.torn_tail = torn
        if self.readonly:
            return  # a live writer may be appending right now; a refresh will see the rest
        log.warning(
            "%s: dropping a torn tail of %d bytes at offset %d (%s); the records before it "
            "are intact",
            torn.path,
            torn.end - torn.start,
            torn.start,
            torn.reason,
        )
        if not torn.cut_short:
            kept = _keep_tail(torn)
            log.warning(
                "%s: the tail held complete records that fail their checks, past what was "
                "synced when the writer last closed cleanly (a power loss leaves unsynced pages "
                "like this); its bytes are kept in %s",
                torn.path,
                kept,
            )
        fd = open_file(torn.path, os.O_RDWR)
        try:
            os.ftruncate(fd, torn.start)
            os.fsync(fd)
        finally:
            os.close(fd)

    def refresh(self) -> int:
        """Read-only stores: fold in records appended since the last open or refresh.

        Returns how many records were read (after a compaction by the writer, the store is
        reloaded from the new snapshot and this counts the records since the last refresh).
        Writers see their own writes and need no refresh.
        """
        with self._mutex:
            self._check_open()
            if not self.readonly:
                return 0
            before = self._position.seq
            if _newest_covers(self.path) > self._compaction.covers:
                self._reload()
            else:
                try:
                    self._refresh_segments()
                except FileNotFoundError:  # the writer compacted while we listed the files
                    self._reload()
                else:
                    # A compaction that finished meanwhile may have retired segments before
                    # we listed them (we would have skipped their records): start over.
                    if _newest_covers(self.path) > self._compaction.covers:
                        self._reload()
            return self._position.seq - before

    def _refresh_segments(self) -> None:
        scanned, position, covers = self._scanned, self._position, self._compaction.covers
        replayer = Replayer(self._index, self.recovery_mode, bulk=False)
        replayer.synced = scanned.synced
        position.hand_to(replayer)
        every = list_segments(self.path)
        # Only the segments after the loaded snapshot: the ones it covers may still be there
        # (a compaction retires them after installing it) and hold records already folded.
        # After a load that found no segment after the snapshot (a follower installs the
        # snapshot before the segment after it), the cursor is at segment 0.
        segments = [s for s in every if s[0] > covers and s[0] >= scanned.segment]
        for i, (number, seg_path) in enumerate(segments):
            start = scanned.offset if number == scanned.segment else 0
            scan = replayer.scan(seg_path, number, start, i == len(segments) - 1)
            scanned.segment, scanned.offset = number, scan.valid_end
        position.take_from(replayer)
        position.segments = sum(1 for n, _ in every if n > covers)  # as _replay counts them
        self._hold_view([n for n, _ in every if n > covers])

    def _reload(self) -> None:
        """Read-only stores: rebuild the index from the newest snapshot and the log."""
        replayer, _ = self._replay_settled()
        self._index = replayer.index
        self._index.sort_all()
        self._position.take_from(replayer)
        self._readers.retire(self._compaction.covers)  # let go of the files it replaced

    def close(self, *, keep: bool = True) -> None:
        """Make pending writes durable, record the synced mark, release the lock, close files.

        The store is marked closed first, so that every write that starts from then on raises
        :class:`~logkv.errors.StoreClosedError`; then close itself syncs every batch already
        appended that no writer is syncing (each write is acknowledged or fails), and only then
        are the files closed. No writer is left waiting on a batch that nobody will sync. A
        second call returns at once.

        ``keep=False`` is for a store being deleted (its folder already moved away): the log is
        not synced and no synced mark is recorded.
        """
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            self._commits.drain()  # every write appended so far is acknowledged or fails
            if self._writer is not None:
                self._closed_end = self._log_end()
            try:
                if keep and self._writer is not None and self._failed is None:
                    self._sync_and_mark(self._writer)
            finally:
                self._release()

    def _sync_and_mark(self, writer: SegmentWriter) -> None:
        """At a clean close: sync the log and record how far it is durable (the synced mark),
        so that the next open can tell damage to these records from a torn tail. Under
        ``PROCESS`` a failed sync only skips the mark; under ``FSYNC`` it is raised."""
        try:
            writer.sync()
            write_synced_mark(self.path, SyncedMark(writer.number, writer.end))
        except OSError as exc:
            if self._group_commit:
                raise
            log.warning("%s: no synced mark recorded at close (%s)", self.path, exc)

    def _release(self) -> None:
        if self._hints is not None:
            self._hints.close()  # waits for a hint being written, drops the rest
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._readers.close()
        if self._folder_lock is not None:
            self._folder_lock.release()
            self._folder_lock = None

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reads

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"the store at {self.path} is closed")

    def entry(self, key: str) -> IndexEntry | None:
        """Where the current record of ``key`` is and what it holds, or None when absent."""
        with self._mutex:  # as _entry, inlined: this is every client read's first step
            if self._closed:
                self._check_open()
            found = self._index.get(key)
        return None if found is None else tuple.__new__(IndexEntry, found)

    def _entry(self, key: str) -> Entry | None:
        with self._mutex:
            if self._closed:
                self._check_open()
            return self._index.get(key)

    def get(self, key: str, default: object = MISSING) -> bytes | object | None:
        """The value of ``key`` (``bytes``, or ``None`` when None was stored), else ``default``.

        The record is found in a memory map of its file (a large value, or the newest records,
        are read with ``pread``); its checksum is verified over the bytes returned
        (:class:`~logkv.errors.CorruptionError` if the bytes changed on disk).
        """
        with self._mutex:
            if self._closed:
                raise StoreClosedError(f"the store at {self.path} is closed")
            entry = self._index.get(key)
        if entry is None:
            return default
        found = self._record(key, entry)
        return default if found is None else found[1]

    def get_with_type(self, key: str) -> tuple[bytes | None, str | None] | None:
        """``(value, content_type)`` of ``key``, or None when the key is absent."""
        found = self._record(key, None)
        if found is None:
            return None
        entry, value = found
        return value, entry[4]

    def get_small(self, key: str, max_size: int) -> tuple[bytes | None, str | None] | int | None:
        """``(value, content_type)`` of ``key`` when its value is at most ``max_size`` bytes;
        else the value's size (an ``int``: read it with :meth:`get_record` where a long read
        blocks no one); None when the key is absent. One lookup and one read, with no entry
        built for the caller: the hot path of the store clients' reads."""
        with self._mutex:
            if self._closed:
                self._check_open()
            index = self._index
            packed = index.find(key)
        if packed is None:
            return None
        entry = unpack(packed, index.types.names)
        number, offset, head, size, content_type = entry
        if size > max_size:
            return size
        if size < -1:  # a streamed value: its size, whatever it is (reading it means file I/O)
            return value_size(entry)
        try:
            if size >= LARGE_VALUE:  # a pread into the value returned, as read() does
                return self.read(entry), content_type
            # the common case, read as read() does, with no further call
            buf, pos = self._readers.view(number, head + size if size > 0 else head, offset)
            return checked_value(buf, pos, head, size), content_type
        except BadFrame as bad:
            raise CorruptionError(self.path / data_file_name(number), offset, bad.reason) from None
        except FileNotFoundError:
            if not self._was_retired(number):
                raise
        found = self._record(key, None)  # a compaction moved it: look it up again
        if found is None:
            return None
        entry, value = found
        return value, entry[4]

    def get_record(
        self, key: str, entry: IndexEntry | None = None
    ) -> tuple[IndexEntry, bytes | None] | None:
        """``(entry, value)`` of ``key``, looked up and read together; None when it is absent.

        ``entry`` is the one the caller just looked up with :meth:`entry`, if any. When a
        compaction retired the file it points to since (the read finds the file gone), ``key``
        is looked up again (a read-only store first reloads from the newest snapshot) and read
        where its record is now; the entry returned is then the new one, so take the content
        type and size from it. A file missing for any other reason raises
        ``FileNotFoundError``.
        """
        if entry is not None:
            try:
                return entry, self.read(entry)  # the common case, with no further call
            except FileNotFoundError:
                if not self._was_retired(entry[0]):
                    raise
        found = self._record(key, None)
        if found is None:
            return None
        raw, value = found
        return _named(raw), value

    def _record(self, key: str, entry: Entry | None) -> tuple[Entry, bytes | None] | None:
        """:meth:`get_record` on the engine's own entries (plain tuples, no naming cost)."""
        attempt = 1
        while True:
            if entry is None:
                entry = self._entry(key)
                if entry is None:
                    return None
            try:
                return entry, self.read(entry)
            except FileNotFoundError:
                if attempt >= _REPLAY_ATTEMPTS or not self._was_retired(entry[FILE_ID]):
                    raise
            attempt += 1
            entry = None

    def _was_retired(self, file_id: int) -> bool:
        """After a read found data file ``file_id`` gone: whether a compaction retired it. A
        read-only store reloads first when the writer installed a newer snapshot."""
        with self._mutex:
            self._check_open()
            if self.readonly and _newest_covers(self.path) > self._compaction.covers:
                self._reload()
            covers = self._compaction.covers
            return -covers < file_id <= covers

    def read(self, entry: Entry) -> bytes | None:
        """The value an index entry points to, read back and checked.

        ``FileNotFoundError`` when a compaction retired its file since the entry was looked up:
        :meth:`get_record` looks the key up again then, and is the read to use for a key.
        """
        number, offset, head, size, _ = entry
        if size >= LARGE_VALUE:
            start, value = self._readers.read_apart(number, offset, head, size)
            try:
                check_value_read(start, value, size)
            except BadFrame as bad:
                path = self.path / data_file_name(number)
                raise CorruptionError(path, offset, bad.reason) from None
            return value
        total = head + size if size > 0 else head
        buf, pos = self._readers.view(number, total, offset)
        if size < -1:  # a streamed set: its value is in its value file
            problem = check_frame(buf, pos, total)
            if problem is not None:
                raise CorruptionError(self.path / data_file_name(number), offset, problem)
            with self._value_file(buf, pos, total) as reader:
                return reader.read_all()
        try:
            return checked_value(buf, pos, head, size)
        except BadFrame as bad:
            raise CorruptionError(self.path / data_file_name(number), offset, bad.reason) from None

    def _value_file(self, buf: Any, pos: int, total: int) -> ValueFileReader:
        """The value file of the checked streamed set at ``pos`` of ``buf``, opened."""
        ref = value_ref_of_frame(buf, pos, total)
        return ValueFileReader(value_path(self.path, ref.seq), ref)

    def open_value(self, key: str) -> ValueStream | None:
        """The value of ``key`` as a stream of chunks (at most 1 MiB each; see
        :class:`~logkv.values.ValueStream`), or None when ``key`` is absent.

        A streamed value (:meth:`set_stream`) is read from its value file a chunk at a time:
        each chunk's checksum is verified before it is yielded, and the value's size and
        digest after the last one (a mismatch raises :class:`~logkv.errors.CorruptionError`).
        A value held in the log is read and checked whole, then handed out in chunks. The
        stream holds its file open: a compaction meanwhile does not take it away. Close the
        stream (or use it as a context manager) when stopping early.
        """
        validate_key(key)
        attempt = 1
        while True:
            entry = self._entry(key)
            if entry is None:
                return None
            try:
                return self.open_entry(entry)
            except FileNotFoundError:
                if attempt >= _REPLAY_ATTEMPTS or not self._was_retired(entry[FILE_ID]):
                    raise
            attempt += 1

    def open_entry(self, entry: Entry) -> ValueStream:
        """The value an index entry points to, as :meth:`open_value` streams it.

        ``FileNotFoundError`` when a compaction retired its file since the entry was looked up
        (:meth:`open_value` looks the key up again then)."""
        number, offset, head, size, content_type = entry
        if size >= -1:
            value = self.read(entry)
            if value is None:
                return ValueStream(content_type, None, iter(()))
            return ValueStream(content_type, len(value), iter_inline(value))
        buf, pos = self._readers.view(number, head, offset)
        problem = check_frame(buf, pos, head)
        if problem is not None:
            raise CorruptionError(self.path / data_file_name(number), offset, problem)
        reader = self._value_file(buf, pos, head)
        return ValueStream(content_type, reader.size, iter(reader), reader.close, reader.ref.digest)

    def __contains__(self, key: object) -> bool:
        with self._mutex:
            self._check_open()
            return key in self._index

    def __len__(self) -> int:
        with self._mutex:
            self._check_open()
            return len(self._index)

    def keys(
        self, exclusive_start_key: str | None = None, limit: int | None = None, prefix: str = ""
    ) -> Iterator[str]:
        """Keys in Python string order, after ``exclusive_start_key``, at most ``limit`` of them;
        with a ``prefix``, only the keys that start with it (read as a range of the sorted
        keys: O(log n + matches)).

        Safe to use while other threads write: keys are copied out in small batches under the
        lock, and each batch starts strictly after the last key returned, so paging is exact.
        """
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        check_prefix(prefix)
        remaining = limit
        after = exclusive_start_key
        while remaining is None or remaining > 0:
            want = _CHUNK if remaining is None else min(_CHUNK, remaining)
            self.settle_order()
            with self._mutex:
                self._check_open()
                batch = self._index.after(after, want, prefix)
            yield from batch
            if len(batch) < want:
                return
            after = batch[-1]
            if remaining is not None:
                remaining -= len(batch)

    def count_keys(self, low: str, high: str) -> int:
        """How many keys ``k`` satisfy ``low <= k < high``, counted in the sorted keys (O(log n)
        once the keys written since the last ordered read are merged)."""
        self.settle_order()
        with self._mutex:
            self._check_open()
            return self._index.count_range(low, high)

    def wait_for_hints(self) -> None:
        """Block until the hint file of every segment sealed so far is written (or given up
        on: a damaged segment gets none). Hints are written in the background after each
        rotation; an open reads them instead of scanning those segments (docs/FORMAT.md,
        section 15). For benchmarks and tests, and before copying a store folder."""
        if self._hints is not None:
            self._hints.wait()

    def settle_order(self) -> None:
        """Merge the keys written since the last ordered read into the sorted keys, a batch
        per hold of the lock, so that writers in other threads go on meanwhile.

        Ordered reads call it first; what is still fresh when they take the lock (keys written
        since) they merge themselves. After each batch of some size, the garbage collector's
        young generations are collected (:func:`_collect_young`).
        """
        more = True
        turn = Turns().take
        while more:
            with self._mutex:
                index = self._index
                unsorted = index.unsorted
                more = index.merge_some()
                merged = unsorted - index.unsorted
            if merged >= _COLLECT_AFTER_MERGED:
                _collect_young()
            if more:
                turn()  # let a waiting writer run now and then

    def infos(
        self, exclusive_start_key: str | None = None, limit: int | None = None, prefix: str = ""
    ) -> Iterator[KeyInfo]:
        """Like :meth:`keys`, yielding :class:`KeyInfo` (key, content type, value size)."""
        for key in self.keys(exclusive_start_key, limit, prefix):
            entry = self._entry(key)
            if entry is not None:
                yield KeyInfo(key, entry[CONTENT_TYPE], value_size(entry))

    def stats(self) -> EngineStats:
        """Figures about the store (cheap: counters kept as records are written, plus a
        ``stat`` of each data file)."""
        with self._mutex:
            self._check_open()
            position = self._position
            keys, live, records = len(self._index), position.live_bytes, position.record_bytes
            segments, seq, covers = position.segments, position.seq, self._compaction.covers
        return EngineStats(
            path=self.path,
            keys=keys,
            live_bytes=live,
            disk_bytes=self.disk_bytes(),
            dead_bytes=records - live,
            segments=segments,
            last_seq=seq,
            durability=self.durability,
            readonly=self.readonly,
            snapshot_covers=covers,
        )

    def disk_bytes(self) -> int:
        """Bytes of the store's data files (segments, snapshots and value files; not the
        archive)."""
        files = file_set(self.path)
        names = [n for n in files.names() if n.endswith((SEGMENT_SUFFIX, SNAPSHOT_SUFFIX))]
        values = [path.stat().st_size for _, path in list_value_files(self.path)]
        return sum(files.size(name) for name in names) + sum(values)

    def should_compact(self, min_bytes: int, min_dead_ratio: float) -> bool:
        """The compaction policy: the log passed ``min_bytes`` and dead bytes make up at least
        ``min_dead_ratio`` of the records."""
        with self._mutex:
            if self._closed or self.readonly or self._compaction.running:
                return False
            records = self._position.record_bytes
            dead = records - self._position.live_bytes
        return records >= min_bytes and records > 0 and dead / records >= min_dead_ratio

    def compact(
        self, retention: Retention | str | None = None, progress: Progress | None = None
    ) -> CompactionResult:
        """Write the live state as a snapshot and retire the log it covers (see
        :mod:`logkv.compaction`). Writers may keep writing from other threads meanwhile."""
        return compact(self, None if retention is None else Retention(retention), progress)

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest record (0 for an empty log)."""
        return self._position.seq

    @property
    def last_timestamp(self) -> float:
        """The time (``time.time()`` seconds) the newest record was written; 0.0 for an empty
        log, and when a snapshot from before logkv kept that time ends it."""
        return self._position.last_us / 1_000_000

    @property
    def sync_seconds(self) -> float:
        """How long a group commit's ``fdatasync`` takes lately (a recent average, seconds;
        0.0 before the first): the async facade syncs on its event loop only while it is
        short."""
        return self._commits.sync_seconds

    @property
    def read_to(self) -> tuple[int, int]:
        """Read-only stores: ``(segment, offset)``, where the last open or :meth:`refresh`
        stopped reading the log (the end of the valid data of that segment; ``(0, 0)``: no
        segment read). Every record before it is whole, its batch included."""
        with self._mutex:
            return self._scanned.segment, self._scanned.offset

    @property
    def snapshot_covers(self) -> int:
        """What the installed snapshot covers: segments ``1..snapshot_covers`` (0: none)."""
        return self._compaction.covers

    # ------------------------------------------------------------------ compaction's steps
    # The engine's side of :class:`~logkv.compaction.CompactionHost`: what :meth:`compact`
    # does under the lock. Only compaction calls these.

    def rotate_for_compaction(self, timer: HoldTimer) -> Cut | None:
        """Compaction's step 1 (see :meth:`CompactionHost.rotate_for_compaction
        <logkv.compaction.CompactionHost.rotate_for_compaction>`)."""
        with self._mutex:
            self._check_writable()
            compaction = self._compaction
            if compaction.running:
                raise CompactionRunningError(f"a compaction of {self.path} is already running")
            with timer:
                self._commits.drain()
                writer = self._writer
                assert writer is not None
                position = self._position
                if writer.end > SEGMENT_HEADER_SIZE:
                    writer.rotate()
                covers = writer.number - 1
                cut = None
                if covers > compaction.covers:
                    compaction.start(covers)
                    if self._hints is not None:
                        self._hints.skip_through(covers)
                    cut = Cut(
                        covers,
                        position.seq,
                        position.chain,
                        position.last_us,
                        position.record_bytes,
                        len(self._index),
                    )
                sealed = self._collected
                if sealed.number != writer.number:
                    # after skip_through: the hint writer drops the sealed segment's hint
                    # when the compaction covers it
                    self._follow_rotation(writer.number)
        # Outside the lock: the dropped hint data of the sealed segment (a dict of its keys)
        # is freed here, a millisecond or more for a segment of many keys.
        del sealed
        return cut

    def entries_at_rotation(
        self, after: str | None, timer: HoldTimer
    ) -> tuple[str | None, list[tuple[str, Entry]]]:
        """Compaction's step 2: the next batch of keys after ``after`` with their entries as
        of the rotation (see :meth:`CompactionState.entries_at_rotation
        <logkv.compaction.CompactionState.entries_at_rotation>`)."""
        with self._mutex, timer:
            self._check_open()  # a compaction stops when the store is closed
            index = self._index  # held: the row tables its entries may refer to stay
            last, batch = self._compaction.entries_at_rotation(index, after)
        names = index.types.names  # only ever grows
        return last, [(key, unpack(packed, names)) for key, packed in batch]

    def read_frame(self, entry: Entry) -> bytes:
        """The whole frame an index entry points to, its checksum verified (compaction copies
        it verbatim)."""
        number, offset, length = entry[FILE_ID], entry[OFFSET], frame_length(entry)
        frame = self._readers.pread(number, length, offset)
        problem = check_frame(frame, 0, length)
        if problem is not None:
            raise CorruptionError(self.path / data_file_name(number), offset, problem)
        return frame

    def frame_pieces(self, entry: Entry) -> Iterator[bytes]:
        """The frame an index entry points to, read a piece at a time (compaction copies a big
        one this way, never holding it whole); its checksum is verified as the pieces pass
        and :class:`~logkv.errors.CorruptionError` raised after the last if it fails."""
        number, offset, length = entry[FILE_ID], entry[OFFSET], frame_length(entry)

        def read() -> Iterator[bytes]:
            done = 0
            while done < length:
                piece = self._readers.pread(number, min(_COPY_PIECE, length - done), offset + done)
                if not piece:
                    return
                done += len(piece)
                yield piece

        try:
            yield from checked_frame_pieces(read(), length)
        except BadFrame as bad:
            raise CorruptionError(self.path / data_file_name(number), offset, bad.reason) from None

    def install_stored_keys(
        self, stored: KeyTable | None, table: RowTable | None, timer: HoldTimer
    ) -> list[object] | None:
        """Compaction's step 4 in one hold, when it can be (see
        :meth:`CompactionHost.install_stored_keys
        <logkv.compaction.CompactionHost.install_stored_keys>`)."""
        with self._mutex, timer:
            self._check_open()
            compaction = self._compaction
            changed = compaction.frozen
            compaction.stop_freezing()  # writes need no longer keep entries as of the rotation
            if stored is None or table is None or changed is None:
                return None
            return self._index.take_stored(stored, table, changed.keys())

    def forget_older(self, keys: Sequence[str], covers: int, last: bool, timer: HoldTimer) -> None:
        """Compaction's step 4 after :meth:`install_stored_keys`, a batch: see
        :meth:`CompactionHost.forget_older <logkv.compaction.CompactionHost.forget_older>`."""
        with self._mutex, timer:
            self._check_open()
            index = self._index
            index.forget_older(keys, covers)
            if last:
                index.compact_written()

    def switch_to_snapshot(
        self, batch: Sequence[tuple[str, Entry]], covers: int, timer: HoldTimer
    ) -> None:
        """Compaction's step 4, a batch: point the keys of ``batch`` not changed since the
        rotation at their entry in the snapshot (see :func:`~logkv.compaction.switch_entries`)."""
        with self._mutex, timer:
            self._check_open()
            switch_entries(self._index, batch, covers)

    def retire_covered(self, cut: Cut, snapshot_bytes: int, timer: HoldTimer) -> list[object]:
        """Compaction's step 5 (see :meth:`CompactionHost.retire_covered
        <logkv.compaction.CompactionHost.retire_covered>`)."""
        with self._mutex, timer:
            self._check_open()  # closed meanwhile: the next open retires the log
            position, compaction = self._position, self._compaction
            position.record_bytes = snapshot_bytes + (position.record_bytes - cut.record_bytes)
            # The segments after the old snapshot are consecutive (see _check): those up to
            # the new one's cut are no longer the store's, whenever their files go.
            position.segments -= cut.covers - compaction.covers
            compaction.covers = cut.covers
            # every entry in them points at the snapshot now
            dropped = self._index.drop_rows(cut.covers)
            return [*self._readers.retire(cut.covers), *dropped]

    def end_compaction(self) -> None:
        """Whatever happened, the compaction is over."""
        with self._mutex:
            self._compaction.end()
            if self._closed:  # close() ran meanwhile: drop what compaction reopened
                self._readers.close()

    # ------------------------------------------------------------------ writes

    def set(self, key: str, value: bytes | None, content_type: str | None = None) -> int:
        """Store ``value`` (bytes, or None as a stored None) under ``key``; return its seq.

        A value larger than :data:`~logkv.values.INLINE_LIMIT` (64 MiB) goes into a value file
        of its own, as :meth:`set_stream` writes it."""
        if type(value) is not bytes or type(content_type) is not str:  # else checked inline
            value = _checked_set(key, value, content_type)
        elif type(key) is not str or not key or len(key) > MAX_KEY_LENGTH or not key.isascii():
            validate_key(key)
        if value is not None and len(value) > INLINE_LIMIT:
            seq, commit = self._write_value_file(key, (value,), content_type)
        else:
            seq, commit = self._append(_SET, key, content_type, value)
        if commit is not DONE:
            self._wait(commit)
        return seq

    def delete(self, key: str) -> bool:
        """Remove ``key``; True if it existed. Deleting a missing key writes nothing."""
        existed, commit = self.delete_deferred(key)
        if commit is not DONE:
            self._wait(commit)
        return existed

    def set_deferred(
        self, key: str, value: bytes | None, content_type: str | None = None
    ) -> tuple[int, Commit]:
        """Like :meth:`set`, but return right after the append: ``(seq, commit)``.

        Under ``FSYNC`` the write becomes durable and visible when ``commit`` is done (wait on
        it, or add a callback); under ``PROCESS`` it already is and ``commit`` is done.
        """
        value = _checked_set(key, value, content_type)
        if value is not None and len(value) > INLINE_LIMIT:
            return self._write_value_file(key, (value,), content_type)
        return self._append(_SET, key, content_type, value)

    def delete_deferred(self, key: str) -> tuple[bool, Commit]:
        """Like :meth:`delete`, but return right after the append: ``(existed, commit)``."""
        validate_key(key)
        with self._mutex:
            self._check_writable()
            if key not in self._index:
                return False, DONE
        return True, self._append(_DELETE, key, None, None)[1]

    def set_stream(self, key: str, source: ValueSource, content_type: str | None = None) -> int:
        """Store the value read from ``source`` under ``key`` without holding it in memory;
        return its seq.

        ``source`` is a binary file object (read a chunk at a time until it returns nothing)
        or an iterable of bytes. The value goes into a value file of its own, a chunk at a
        time (docs/FORMAT.md, section 14); once it is whole, one record commits it. If the
        source raises, or the process dies, before that record, nothing is visible and the
        partial file is removed (at once, or by the next writable open).
        """
        _checked_set(key, None, content_type)
        seq, commit = self._write_value_file(key, source, content_type)
        if commit is not DONE:
            self._wait(commit)
        return seq

    def _write_value_file(
        self, key: str, source: ValueSource, content_type: str | None
    ) -> tuple[int, Commit]:
        """Write ``source`` into a new value file and commit it as ``key``'s value; on any
        failure the file is removed."""
        writer = self.value_writer()
        try:
            writer.write_from(source)
            return self.commit_value(key, writer, content_type)
        except BaseException:
            writer.abort()
            raise

    def value_writer(self) -> ValueFileWriter:
        """A new value file to :meth:`~logkv.values.ValueFileWriter.write` a streamed value
        into, then commit with :meth:`commit_value` (or drop with its ``abort``): the pieces of
        :meth:`set_stream`, for a caller that gets the value's bytes a piece at a time."""
        with self._mutex:
            self._check_writable()
        return ValueFileWriter(self.path, durable=self._group_commit)

    def commit_value(
        self, key: str, writer: ValueFileWriter, content_type: str | None = None
    ) -> tuple[int, Commit]:
        """Finish ``writer``'s value file and append the one record that makes it ``key``'s
        value: ``(seq, commit)`` as :meth:`set_deferred` returns. On failure the value file is
        removed and nothing is visible."""
        _checked_set(key, None, content_type)
        size, digest = writer.finish()
        ref = encode_value_ref(size, digest)
        with self._mutex:
            if self._closed or self.readonly or self._failed is not None:
                self._check_writable()
            final = writer.install(self._position.seq + 1)  # named after its record's seq
            try:
                return self._append_batch([(_SET_STREAMED, key, content_type, ref)])
            except BaseException:
                os.unlink(final)
                raise

    def set_many(
        self,
        items: Iterable[tuple[str, bytes | None, str | None]],
        deletes: Iterable[str] = (),
    ) -> int:
        """Set every ``(key, value, content_type)`` of ``items``, then delete every key of
        ``deletes`` that exists, as one atomic unit: after a crash, all of them or none.

        The records are appended with one write, in one segment. Returns the sequence number
        of the last record (the store's last one when nothing was written).
        """
        seq, commit = self.set_many_deferred(items, deletes)
        if commit is not DONE:
            self._wait(commit)
        return seq

    def set_many_deferred(
        self,
        items: Iterable[tuple[str, bytes | None, str | None]],
        deletes: Iterable[str] = (),
    ) -> tuple[int, Commit]:
        """Like :meth:`set_many`, but return right after the append: ``(seq, commit)``, as
        :meth:`set_deferred` does."""
        batch: list[BatchItem] = [
            (_SET, key, content_type, _checked_set(key, value, content_type))
            for key, value, content_type in items
        ]
        gone = [validate_key(key) for key in deletes]
        with self._mutex:
            if self._closed or self.readonly or self._failed is not None:
                self._check_writable()
            if gone:
                present = {key for _, key, _, _ in batch}
                present.update(key for key in gone if key in self._index)
                for key in gone:
                    if key in present:  # deleting a missing key writes nothing
                        present.discard(key)
                        batch.append((_DELETE, key, None, None))
            return self._append_batch(batch)

    def _append_batch(self, batch: list[BatchItem]) -> tuple[int, Commit]:
        """With the lock held: append ``batch`` with one write; under ``PROCESS`` make it
        visible now, under ``FSYNC`` queue it for group commit and return the batch it joined."""
        position = self._position
        if not batch:
            return position.seq, DONE
        writer = self._writer
        assert writer is not None
        first = position.seq + 1
        now_us = _now_ns() // 1000
        try:
            frames = encode_batch(first, now_us, batch, position.chain)
        except UnicodeEncodeError as exc:
            raise InvalidKeyError(
                f"a key or content type of the batch cannot be encoded as UTF-8 ({exc.reason})"
            ) from None
        number, offset = writer.append(b"".join(frames))
        collected = self._collected
        if number != collected.number:
            collected = self._follow_rotation(number)
        position.seq = first + len(batch) - 1
        position.last_us = now_us
        position.chain = frames[-1][_CHAIN_START:_CHAIN_STOP]
        updates: list[Update] = []
        type_id = self._index.types.id
        last = collected.last
        length = 0
        for (op, key, content_type, value), frame in zip(batch, frames, strict=True):
            length = len(frame)
            entry: int | None = None
            if op == _SET:
                size = -1 if value is None else len(value)
                entry = pack(number, offset, length - max(size, 0), size, type_id(content_type))
            elif op == _SET_STREAMED:
                assert value is not None
                entry = pack(
                    number, offset, length, streamed_entry_size(value), type_id(content_type)
                )
            last[key] = entry
            offset += length
            if self._group_commit:
                updates.append((key, entry, length))
            else:
                self._apply(key, entry, length)  # Durability.PROCESS: visible now
        collected.last_offset = offset - length
        if not self._group_commit:
            return position.seq, DONE
        return position.seq, self._commits.join(updates)

    def sync(self) -> None:
        """Make everything written so far durable now (``fdatasync``), whatever the level."""
        with self._mutex:
            self._check_writable()
            assert self._writer is not None
            self._writer.sync()

    def _check_writable(self) -> None:
        if self._closed:
            raise StoreClosedError(f"the store at {self.path} is closed")
        if self.readonly:
            raise ReadOnlyStoreError(f"the store at {self.path} was opened read-only")
        if isinstance(self._failed, FencedError):
            raise FencedError(str(self._failed))
        if self._failed is not None:
            raise StoreFailedError(
                f"an earlier fsync of {self.path} failed ({self._failed}); writes since the last "
                "successful sync may not be on disk. Close the store and reopen it."
            )

    def _wait(self, commit: Commit) -> None:
        """Block until ``commit`` is durable; a failed sync raises, naming this store."""
        try:
            commit.wait()
        except SyncFailedError as exc:
            message = f"fsync of {self.path} failed: {commit.error}"
            raise SyncFailedError(exc.errno, message) from commit.error

    def _append(
        self, op: int, key: str, content_type: str | None, value: bytes | None
    ) -> tuple[int, Commit]:
        """Append one record; under ``PROCESS`` make it visible now, under ``FSYNC`` queue it
        for group commit and return the batch it joined."""
        with self._mutex:
            if self._closed or self.readonly or self._failed is not None:
                self._check_writable()
            writer = self._writer
            assert writer is not None
            position = self._position
            seq = position.seq + 1
            now_us = _now_ns() // 1000
            # A large value is written from where it is, after the bytes that frame it.
            large = value if value is not None and len(value) >= LARGE_VALUE else None
            try:
                if large is not None:
                    frame = encode_record_start(
                        seq, now_us, op, key, content_type, large, position.chain
                    )
                else:
                    frame = encode_record(seq, now_us, op, key, content_type, value, position.chain)
            except UnicodeEncodeError as exc:
                raise InvalidKeyError(
                    f"key {key!r} or content type {content_type!r} cannot be encoded as UTF-8 "
                    f"({exc.reason})"
                ) from None
            if large is not None:
                number, offset = writer.append_pieces((frame, large))
                length = len(frame) + len(large)
            else:
                number, offset = writer.append(frame)
                length = len(frame)
            collected = self._collected
            if number != collected.number:
                collected = self._follow_rotation(number)
            position.seq = seq
            position.last_us = now_us
            position.chain = frame[_CHAIN_START:_CHAIN_STOP]
            entry: int | None = None
            if op == _SET:  # packed as index.pack() packs it, with the file and type's base
                base = self._index.base(number, content_type)
                if value is None:  # a stored None: head is the whole frame, size + 1 is 0
                    entry = base | offset | length << HEAD_SHIFT
                else:
                    size = len(value)
                    head = length - size
                    entry = base | offset | (head << HEAD_OVER_SIZE | size + 1) << SIZE_SHIFT
            collected.last[key] = entry
            collected.last_offset = offset
            if not self._group_commit:
                # Durability.PROCESS: the record is with the OS; make it visible now.
                self._apply(key, entry, length)
                return seq, DONE
            # Durability.FSYNC: queued; visible once a waiter of its batch synced it.
            return seq, self._commits.join_one((key, entry, length))

    def _follow_rotation(self, number: int) -> CollectedHint:
        """With the lock held, before the position moves past the records of segment
        ``number``: the writer rotated to that segment, so the one before is sealed. Count the
        new segment, hand the sealed one's collected hint data to the hint writer, and collect
        segment ``number``'s from now on (returned)."""
        position = self._position
        position.segments += 1
        sealed = self._collected
        sealed.seal(position.seq, position.last_us, position.chain)
        self._collected = collected = CollectedHint(
            number, position.seq + 1, self._index.types.names, whole=True
        )
        self._sealed(sealed if sealed.whole else sealed.number)
        return collected

    def _sealed(self, segment: int | CollectedHint) -> None:
        """A segment was sealed: have its hint file written off the writer's path, by the hint
        thread, from the hint data collected while it was written, or (given its number) from
        a scan of it."""
        if self._hints is None:
            return
        try:
            self._hints.submit(segment)
        except Exception as exc:  # never fail the append that sealed it: a hint is optional
            log.warning("%s: no hint for a sealed segment (%s); an open scans it", self.path, exc)

    def _apply(self, key: str, entry: int | None, length: int) -> None:
        """Make an appended record visible: point the index at its packed entry (None: drop
        the key)."""
        position = self._position
        position.record_bytes += length
        if entry is not None:
            old = self._index.put_packed(key, entry)
            position.live_bytes += length
        else:
            old = self._index.remove_packed(key)
        if old is not None:
            position.live_bytes -= packed_frame_length(old)
            compaction = self._compaction
            if compaction.frozen is not None and packed_file(old) <= compaction.frozen_covers:
                compaction.frozen[key] = old  # compaction copies the entry as of its rotation

    def _begin_sync(self) -> Callable[[], None]:
        """Group commit's first step, with the lock held: what makes the log durable, to be
        called with the lock released (the active segment's sync as of now: records appended
        meanwhile may be synced too, never fewer)."""
        writer = self._writer
        if writer is None:  # closed from a commit callback before this batch
            return self._refuse_sync
        return writer.sync

    def _refuse_sync(self) -> None:
        raise StoreClosedError(f"the store at {self.path} was closed")

    def _end_sync(self, updates: list[Update], error: BaseException | None) -> None:
        """Group commit's last step, with the lock held: make a durable batch visible in log
        order, or poison the store when its sync failed (none of its updates is applied)."""
        if error is not None:
            if self._failed is None:
                self._failed = error
            return
        apply = self._apply
        for key, entry, length in updates:
            apply(key, entry, length)

    # ------------------------------------------------------------------ replication

    def log_end(self) -> LogEnd:
        """Where the log ends now (after close: where it ended), for a replica's shipper: taken
        under the lock, so that it is a record boundary; the bytes are read without it."""
        with self._mutex:
            return self._log_end() if self._writer is not None else self._closed_end

    def _log_end(self) -> LogEnd:
        writer, position = self._writer, self._position
        assert writer is not None
        return LogEnd(
            writer.number, writer.end, position.seq, position.last_us, self._compaction.covers
        )

    def refuse_writes(self, error: FencedError) -> None:
        """Refuse every further write with ``error`` (another writer took the store over
        through its replica). Reads go on; a close releases the store as usual."""
        with self._mutex:
            if self._failed is None:
                self._failed = error

    # ------------------------------------------------------------------ invariants

    def _check(self) -> None:
        """Assert the engine's invariants (for tests: the model-based tests call it after
        every step). An open store only; takes the lock.

        The index is consistent (:meth:`Index._check <logkv.index.Index._check>`), and so is
        the compaction state; the live bytes are those of the frames the index points to, and
        at most the bytes of all records; every entry points into the installed snapshot (or
        the one a running compaction is switching to) or a segment after it, and, for a
        writer, into a data file on disk, within its size; a writer's segments after the
        snapshot are the consecutive ones up to its active segment, as many as counted.
        """
        with self._mutex:
            self._check_open()
            index, position, compaction = self._index, self._position, self._compaction
            index._check()
            compaction._check()
            covers = compaction.covers
            assert len(position.chain) == CHAIN_SIZE, position.chain
            assert len(index) <= position.seq, "more keys than records"
            assert covers == 0 or position.seq > 0, "a snapshot of an empty log"
            assert 0 <= position.live_bytes <= position.record_bytes
            commits = self._commits
            assert self._group_commit or not commits.pending, "group commit"
            snapshots = {-covers} if covers else set()
            if compaction.running:
                snapshots.add(-compaction.frozen_covers)
            writer = self._writer
            sizes: dict[int, int] | None = None
            if writer is None:
                assert self.readonly, "a writable store without its writer"
                last = max(self._scanned.segment, covers)
            else:
                last = writer.number
                segments = [(n, p) for n, p in list_segments(self.path) if n > covers]
                if segments[-1][0] == last + 1 and writer.end >= writer.segment_size:
                    segments.pop()  # left by a rotation that failed; the next append redoes it
                assert [n for n, _ in segments] == list(range(covers + 1, last + 1)), segments
                assert position.segments == len(segments), (position.segments, segments)
                sizes = {n: p.stat().st_size for n, p in segments}
                sizes.update((-n, p.stat().st_size) for n, p in list_snapshots(self.path))
                assert sizes[last] >= writer.end, (sizes[last], writer.end)
                self._check_collected(writer.number)
            live = 0
            for key, entry in index.entries().items():
                file_id, offset, head, size, _ = entry
                assert covers < file_id <= last or file_id in snapshots, (key, file_id, covers)
                assert head > 0, (key, head, size)
                length = frame_length(entry)
                live += length
                if sizes is not None:
                    assert offset + length <= sizes.get(file_id, -1), (key, file_id, offset)
            assert live == position.live_bytes, (live, position.live_bytes)

    def _check_collected(self, active: int) -> None:
        """With the lock held, for :meth:`_check`: the hint data collected is the active
        segment's (or, after an append that rotated and then failed, the one before), and, when
        no write waits for group commit, says of every key what the index says of the keys it
        points into that segment: the same packed entry, or no entry for a deleted key."""
        collected = self._collected
        assert active - 1 <= collected.number <= active, (collected.number, active)
        assert collected.names is self._index.types.names
        index = self._index
        if self._commits.pending:
            return
        for key, entry in collected.last.items():
            assert entry is None or packed_file(entry) == collected.number, (key, entry)
            assert index.find(key) == entry, (key, entry, index.find(key))
        if collected.whole:
            in_segment = [k for k, e in index.items() if packed_file(e) == collected.number]
            assert all(key in collected.last for key in in_segment), "an entry not collected"


#: A merge of at least this many fresh keys into the sorted keys is followed by a collection
#: of the garbage collector's young generations (see :func:`_collect_young`).
_COLLECT_AFTER_MERGED = 256


def _collect_young() -> None:
    """Collect the garbage collector's two young generations now, while they hold little.

    Merging fresh keys into the sorted keys makes new lists of keys (``sortedcontainers``
    splits a list that grew past its load in two). The collector walks every key of a young
    list, a cache miss each (about 0.1 µs), and left to itself it walks the lists made since
    its last pass all at once, with the interpreter held: 14 ms after merging 100,000 keys,
    100-280 ms after a million, a stall for every thread. Collected after each batch merged,
    the young lists are walked a batch at a time (well under a millisecond) and then leave the
    young generations. Nothing is done when the application turned the collector off."""
    if gc.isenabled():
        gc.collect(1)


def _newest_covers(folder: Path) -> int:
    """What the newest snapshot in ``folder`` covers (0: there is none)."""
    snapshots = list_snapshots(folder)
    return snapshots[-1][0] if snapshots else 0


def _keep_tail(torn: DroppedRange) -> Path:
    """Copy the bytes of a dropped tail to ``NNNNNNNN.seg.tail-OFFSET.damaged`` beside it."""
    kept = torn.path.with_name(torn_tail_copy_name(torn.path.name, torn.start))
    with open_for_reading(torn.path) as source:
        source.seek(torn.start)
        data = source.read(torn.end - torn.start)
    atomic_write(kept, data)
    return kept


def _segment_of(path: Path) -> int:
    number = segment_number(path.name)
    assert number is not None
    return number
