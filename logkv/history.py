"""History for audits: every change of a key, and the store as it was at a sequence or time.

History is read from the log itself: the store's segments plus, when compaction ran with
``Retention.ARCHIVE``, the archived segments. Under ``Retention.DELETE`` the log before the
newest snapshot is gone; the snapshot still holds the state at its sequence number (and each
live record's original sequence number, time and chain value), so the state can be rebuilt
for any point at or after it, and :class:`HistoryGap` says so for points before it.
Every read first takes one view of the retained history (:func:`retained_log`): segments
numbered without a gap, from segment 1 or from an intact snapshot that holds what is before
them; a hole that no snapshot explains (a lost segment, a damaged snapshot) raises
:class:`~logkv.errors.CorruptionError`, never a shorter answer.
The state at a point (:func:`state_at`) starts from the newest checkpoint of the archived log
at or before it (:mod:`logkv.checkpoints`), or the base snapshot, or record 1, and folds only
the records after that start: index entries, not decoded values, until the end, when each live
key's record is read once. A point inside a batch gives the state before the batch.
Reads take no lock and change nothing, so they run beside a live writer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import msgpack

from .checkpoints import checkpoints_of, load_checkpoint
from .engine import validate_key
from .errors import CorruptionError, LogKVError
from .files import ByteSource, open_bytes
from .format import (
    FRAME_MAGIC_PREFIX,
    GENESIS_CHAIN,
    SEGMENT_HEADER_SIZE,
    BadFrame,
    Op,
    Record,
    SetRecord,
    SyncedMark,
    chain_of,
    decode_fields,
    in_batch,
    iter_frames,
    read_frame,
)
from .layout import ARCHIVE_DIR, list_segments, list_snapshots, segment_name, snapshot_number
from .log_cut import Until, batch_first_seq, continues_batch
from .replay import Entry, frame_length
from .scan import SegmentReader, fail_on_damage, synced_shortfall
from .snapshot import SnapshotInfo, load_snapshot
from .synced import read_synced_mark

_T = TypeVar("_T")
logger = logging.getLogger(__name__)
_ATTEMPTS = 10  # reads that race a live writer's compactions
_DELETE = int(Op.DELETE)
_SET = int(Op.SET)
#: A fold holds the decoded record of a key set during it when its value is at most this many
#: bytes; a bigger value is held as its location and read again at the end (if still live).
_HELD_VALUE_LIMIT = 256
#: The length of a record's decoded fields (an index entry has 5).
_FIELDS = 6
#: The most bytes of records lying end to end that a point-in-time read reads at once.
_RUN_BYTES = 1 << 22


class HistoryGap(LogKVError):  # noqa: N818 - reads as what it is: a gap in the history
    """The log that would answer the question was retired by compaction (retention delete)."""


class StoreChangedError(LogKVError):
    """A read kept racing a live writer: files it listed were retired before it read them,
    every time it tried. Nothing is wrong with the store; run the read again."""


@dataclass(frozen=True)
class LoggedRecord:
    """A record as found in the log: where it is, what it says, and its chain value."""

    path: Path
    offset: int
    length: int
    record: Record
    chain: bytes

    @property
    def value_size(self) -> int:
        """Bytes of the value (0 for a delete or a stored None)."""
        return self.record.value_size if isinstance(self.record, SetRecord) else 0


def log_segments(folder: Path) -> list[tuple[int, Path]]:
    """The segments of the store's retained history, archived ones first, in number order.

    Only the unbroken run that ends at the store's newest segment counts: an archived segment
    before a gap (say, compaction later ran with retention delete) cannot be chained to the rest.
    The store's folder is listed before the archive, so that a segment a running compaction
    moves to the archive meanwhile is found in one of them (it is never missed).
    """
    found = dict(list_segments(folder))
    archive = folder / ARCHIVE_DIR
    if archive.is_dir():
        found.update(list_segments(archive))  # listed in both: it was just moved there
    ordered = sorted(found.items())
    start = len(ordered) - 1
    while start > 0 and ordered[start - 1][0] == ordered[start][0] - 1:
        start -= 1
    return ordered[max(start, 0) :]


def retrying(read: Callable[[], _T]) -> _T:
    """Run ``read`` again when a file it listed vanished before it read it: a compaction by
    the live writer retired it, and the next listing shows the newer state. Raises
    :class:`StoreChangedError` when that kept happening."""
    for _ in range(_ATTEMPTS - 1):
        try:
            return read()
        except FileNotFoundError:
            continue
    try:
        return read()
    except FileNotFoundError as exc:
        raise StoreChangedError(
            f"the store changed while it was read: {exc.filename} was retired by a writer's "
            f"compaction before it could be read ({_ATTEMPTS} times); run again"
        ) from exc


def newest_snapshot(folder: Path) -> tuple[SnapshotInfo, dict[str, Any]] | None:
    """The newest snapshot that loads, or None."""
    return retrying(lambda: _newest_snapshot(folder))


def _newest_snapshot(
    folder: Path, damaged: list[CorruptionError] | None = None
) -> tuple[SnapshotInfo, dict[str, Any]] | None:
    """The newest snapshot that loads, or None; the newer ones that do not load are added to
    ``damaged``."""
    for covers, path in reversed(list_snapshots(folder)):
        try:
            return load_snapshot(path, covers)
        except CorruptionError as exc:
            if damaged is not None:
                damaged.append(exc)
    return None


@dataclass(frozen=True)
class RetainedLog:
    """One view of a store's retained history: an unbroken run of segments (archived ones
    first) and, when the run does not start at segment 1, the snapshot ``base`` that holds
    the state before it. ``gap`` says why the history is not contiguous (None: it is);
    ``synced`` is the store's synced mark, read after the segments were listed."""

    folder: Path
    segments: list[tuple[int, Path]]
    base: tuple[SnapshotInfo, dict[str, Any]] | None = None
    gap: CorruptionError | None = None
    synced: SyncedMark | None = None

    @property
    def start(self) -> int:
        """The first sequence number whose record is in :attr:`segments` (1: complete)."""
        return 1 if self.base is None else self.base[0].last_seq + 1

    @property
    def first_chain(self) -> bytes | None:
        """The chain value the first record of :attr:`segments` follows: the genesis value,
        the base snapshot's chain head, or None (unknown: the first record is taken on trust)
        when the run starts inside what the snapshot covers (a compaction was retiring it) or
        after a gap."""
        if not self.segments or self.segments[0][0] == 1:
            return GENESIS_CHAIN
        base = self.base
        if base is not None and base[0].covers + 1 == self.segments[0][0]:
            return base[0].chain
        return None

    def checked(self) -> RetainedLog:
        """This view, or :attr:`gap` raised when the history is not contiguous."""
        if self.gap is not None:
            raise self.gap
        return self

    def records(self) -> Iterator[LoggedRecord]:
        """Every record of :attr:`segments`, in order. A torn tail of the last segment (a
        writer mid-append, or a crash not yet recovered) ends them; any other damage raises
        :class:`~logkv.errors.CorruptionError`."""
        segments = self.segments
        for i, (number, path) in enumerate(segments):
            with SegmentReader(
                path,
                number,
                is_last=i == len(segments) - 1,
                synced=self.synced,
                report=fail_on_damage,
            ) as reader:
                buf = reader.buf
                for offset, length, fields in reader.frames():
                    yield _logged(path, buf, offset, length, fields)


def retained_log(folder: Path) -> RetainedLog:
    """The store's retained history, checked to be contiguous: raises
    :class:`~logkv.errors.CorruptionError` when segments are missing and no intact snapshot
    holds what they held (a lost segment, or a damaged snapshot under retention delete)."""
    return retrying(lambda: survey(folder).checked())


def survey(folder: Path, *, check_end: bool = True) -> RetainedLog:
    """List the segments, then find the snapshot the run needs. The snapshot is looked up
    after the listing, so it covers every segment a running compaction retired before then:
    a gap it does not cover is damage, never a race with the writer. A run that ends before
    the segment the synced mark names (the newest segment was lost) is damage too, unless
    ``check_end`` is False (the caller checks the log's end itself)."""
    found = _survey_start(folder)
    if found.gap is not None or not check_end:
        return found
    end_gap = missing_end(folder, found.segments, found.synced)
    return found if end_gap is None else replace(found, gap=end_gap)


def missing_end(
    folder: Path, segments: list[tuple[int, Path]], synced: SyncedMark | None
) -> CorruptionError | None:
    """Damage when the synced mark ``synced`` names a segment after the last of ``segments``
    (the store's, as listed) that no snapshot covers: the newest segment of the log is
    missing."""
    newest = max((covers for covers, _ in list_snapshots(folder)), default=0)
    last = segments[-1][0] if segments else 0
    return synced_shortfall(synced, folder, last, None, newest)


def _survey_start(folder: Path) -> RetainedLog:
    """:func:`survey` without the check of the log's end."""
    segments = log_segments(folder)
    synced = read_synced_mark(folder)
    if segments and segments[0][0] == 1:
        return RetainedLog(folder, segments, synced=synced)
    damaged: list[CorruptionError] = []
    snap = _newest_snapshot(folder, damaged)
    if segments:
        need = segments[0][0] - 1
    else:  # no segment at all: the snapshots alone hold the store
        need = max((covers for covers, _ in list_snapshots(folder)), default=0)
    if need == 0:
        return RetainedLog(folder, segments, synced=synced)
    covered = 0 if snap is None else snap[0].covers
    if covered >= need:
        return RetainedLog(folder, segments, snap, synced=synced)
    gap = _gap_error(folder, covered, need, damaged)
    return RetainedLog(folder, segments, snap, gap, synced)


def _gap_error(
    folder: Path, covered: int, need: int, damaged: list[CorruptionError]
) -> CorruptionError:
    """The damage report for segments ``covered + 1 .. need`` that the history lacks."""
    first = max([covered, *(n for n, _ in _all_segments(folder) if n <= need)]) + 1
    missing = f"segment {need} is" if first >= need else f"segments {first}..{need} are"
    why = (
        f"; the snapshot that held them is damaged ({damaged[0].reason})"
        if damaged
        else " and no snapshot holds what they held"
    )
    return CorruptionError(folder / segment_name(first), 0, f"{missing} missing from the log{why}")


def _all_segments(folder: Path) -> list[tuple[int, Path]]:
    """Every segment of the store and of its archive (a gap or not)."""
    archive = folder / ARCHIVE_DIR
    return list_segments(folder) + (list_segments(archive) if archive.is_dir() else [])


def history_start(folder: Path) -> int:
    """The first sequence number whose record is still in the log (1 when complete)."""
    return retained_log(folder).start


def iter_log(folder: Path) -> Iterator[LoggedRecord]:
    """Every record of the store's retained history, in sequence order.

    A torn tail of the last segment (a writer mid-append, or a crash not yet recovered) ends
    the iteration; any other damage, or a gap in the history, raises :class:`CorruptionError`
    (the rule of an open: :mod:`logkv.scan`).
    """
    yield from retained_log(folder).records()


def key_history(folder: Path, key: str) -> list[LoggedRecord]:
    """Every record of ``key`` in the store's retained history, oldest first.

    Fast on big logs: it searches each segment for the key's encoded bytes (a C-speed scan)
    and decodes only the frames around the hits, instead of decoding every record. A hit in
    no valid frame (a damaged record of the key, or a torn tail) makes it read that segment
    whole, by the rule open follows: damage raises :class:`~logkv.errors.CorruptionError`. A
    record whose key bytes themselves are damaged is not found by the search; ``logkv verify``
    reads every frame and reports it. A key no store can hold (say, one with lone surrogates)
    raises :class:`~logkv.errors.InvalidKeyError`.
    """
    return key_log(folder, key).records


@dataclass(frozen=True)
class KeyLog:
    """A key's retained history from one view of the log: its records in the run of
    segments and, when the run starts after segment 1, the record the base snapshot kept
    for it if the run does not hold that record (the value it had then; else None)."""

    log: RetainedLog
    records: list[LoggedRecord]
    kept: SetRecord | None


def key_log(folder: Path, key: str) -> KeyLog:
    """``key``'s history (see :func:`key_history`) with what the snapshot it starts at kept."""
    validate_key(key)
    return retrying(lambda: _key_log(folder, key))


def _key_log(folder: Path, key: str) -> KeyLog:
    log = survey(folder).checked()
    needle = msgpack.packb(key)
    found: list[LoggedRecord] = []
    for i, (number, path) in enumerate(log.segments):
        is_last = i == len(log.segments) - 1
        found.extend(_key_in_segment(path, number, is_last, log.synced, key, needle))
    found.sort(key=lambda r: r.record.seq)
    return KeyLog(log, found, base_record(log, key, {r.record.seq for r in found}))


def base_record(log: RetainedLog, key: str, seqs: Collection[int]) -> SetRecord | None:
    """The record the base snapshot of ``log`` kept for ``key`` when the run of segments
    does not hold it (``seqs``: the seqs of ``key``'s records in the run); else None."""
    if log.base is None or (entry := log.base[1].get(key)) is None:
        return None
    kept = _snapshot_record(log.base[0].path, key, entry)
    return None if kept.seq in seqs else kept  # else the run reaches back to that record


def key_records_from(folder: Path, key: str, segment: int, offset: int) -> list[LoggedRecord]:
    """The records of ``key`` in the store's segments from offset ``offset`` of segment
    ``segment`` on (that segment and every later one), oldest first: what a history read up
    to there lacks. ``offset`` must be where a frame starts (or the end of the valid data, as
    :attr:`logkv.Engine.read_to` gives it). Raises :class:`FileNotFoundError` when a
    compaction retired ``segment`` (read the whole history again)."""
    validate_key(key)
    segments = segments_from(folder, segment)
    synced = read_synced_mark(folder)
    needle = msgpack.packb(key)
    found: list[LoggedRecord] = []
    for i, (number, path) in enumerate(segments):
        start = offset if number == segment else 0
        is_last = i == len(segments) - 1
        found.extend(_key_in_segment(path, number, is_last, synced, key, needle, start))
    found.sort(key=lambda r: r.record.seq)
    return found


def segments_from(folder: Path, segment: int) -> list[tuple[int, Path]]:
    """The store's segments from number ``segment`` on (all of them for 0). Raises
    :class:`FileNotFoundError` when a compaction retired ``segment``."""
    segments = [s for s in log_segments(folder) if s[0] >= segment]
    if segment and (not segments or segments[0][0] != segment):
        raise FileNotFoundError(f"segment {segment} of {folder} was retired")
    return segments


def _key_in_segment(
    path: Path,
    number: int,
    is_last: bool,
    synced: SyncedMark | None,
    key: str,
    needle: bytes,
    start: int = 0,
) -> list[LoggedRecord]:
    """The records of ``key`` in segment ``path`` (from offset ``start``, a frame's start,
    when not 0).

    The fast way: search for ``needle`` (the key's encoded bytes) and decode only the valid
    frames around the hits. Every byte of an intact segment lies in a valid frame, so a hit
    that lies in none means damage or a torn tail; the segment is then read whole through the
    scanner, which tells the two apart (damage raises :class:`CorruptionError`, never a
    shorter answer). So is a segment where the key has a record of a batch: the scanner keeps
    it only when its whole batch is there.
    """
    with SegmentReader(
        path, number, is_last=is_last, synced=synced, report=fail_on_damage
    ) as reader:
        if reader.windowed:  # not a local file: read once, front to back, a window at a time
            return [r for r in _records_of(reader, key) if r.offset >= start]
        if not reader.check_header():
            return []  # a torn tail: nothing was written yet
        buf, size = reader.buf, reader.size
        found: list[LoggedRecord] = []
        hit = buf.find(needle, max(start, SEGMENT_HEADER_SIZE))
        while hit >= 0:
            frame = _frame_around(buf, hit, size)
            if frame is None or frame[0] < start:
                return [r for r in _records_of(reader, key) if r.offset >= start]
            at, length, fields = frame
            if fields[3] == key:
                if in_batch(buf, at, length):  # kept only if its whole batch is there
                    return [r for r in _records_of(reader, key) if r.offset >= start]
                found.append(_logged(path, buf, at, length, fields))
            hit = buf.find(needle, at + length)
        return found


def _logged(path: Path, buf: Any, start: int, length: int, fields: Any) -> LoggedRecord:
    """The record of the valid frame at ``start`` of segment ``path``."""
    return LoggedRecord(path, start, length, decode_fields(fields), chain_of(buf, start))


def _records_of(reader: SegmentReader, key: str) -> Iterator[LoggedRecord]:
    """The records of ``key`` in the whole segment of ``reader``, frame by frame."""
    buf = reader.buf
    for start, length, fields in reader.frames():
        if fields[3] == key:
            yield _logged(reader.path, buf, start, length, fields)


def _frame_around(buf: Any, pos: int, size: int) -> tuple[int, int, tuple[Any, ...]] | None:
    """The valid frame that contains byte ``pos``, or None when it lies in none."""
    start = buf.rfind(FRAME_MAGIC_PREFIX, SEGMENT_HEADER_SIZE, pos)
    while start >= 0:
        try:
            length, fields = read_frame(buf, start, size)
        except BadFrame:
            start = buf.rfind(FRAME_MAGIC_PREFIX, SEGMENT_HEADER_SIZE, start)
            continue
        return (start, length, fields) if pos < start + length else None
    return None


def state_at(
    folder: Path, *, until_seq: int | None = None, until_us: int | None = None
) -> dict[str, SetRecord]:
    """The store's contents as of sequence ``until_seq`` or time ``until_us`` (microseconds
    since the epoch; the records up to the first one written after it count), as key -> its
    :class:`SetRecord`. A point inside a batch gives the state before the batch (a batch is
    applied whole or not at all). Starts from the newest checkpoint at or before the point.

    Raises :class:`HistoryGap` when that point lies before the retained history, and
    :class:`~logkv.errors.CorruptionError` when the history has a hole.
    """
    return fold_state(folder, _same, until_seq=until_seq, until_us=until_us)


def _same(record: SetRecord) -> SetRecord:
    return record


def fold_state(
    folder: Path,
    keep: Callable[[SetRecord], _T],
    *,
    until_seq: int | None = None,
    until_us: int | None = None,
) -> dict[str, _T]:
    """:func:`state_at` with each live record turned into ``keep(record)`` as it is folded
    in (say, a digest of its value, to hold a big store's state in little memory)."""
    return retrying(lambda: _fold_state(folder, keep, until_seq, until_us))


def _fold_state(
    folder: Path, keep: Callable[[SetRecord], _T], until_seq: int | None, until_us: int | None
) -> dict[str, _T]:
    # One view for both where the history starts and what is replayed: a compaction between
    # two listings could otherwise pair a log that starts late with no snapshot.
    log = survey(folder).checked()
    until = Until(until_seq, until_us)
    while True:
        start = _starting_point(folder, log, until)
        folded, inside_batch = _fold_entries(log, start, until)
        if inside_batch is None:
            return _materialize(log, start, folded, keep)
        until = Until(inside_batch)  # the target lies inside a batch: the state before it


@dataclass
class _Start:
    """Where a fold of the log starts: the state after record ``seq`` as index entries (into
    the base snapshot, or into segments for a checkpoint), and where the next record is."""

    entries: dict[str, Entry]
    seq: int
    segment: int
    offset: int
    snapshot: Path | None = None


def _starting_point(folder: Path, log: RetainedLog, until: Until) -> _Start:
    """The newest point at or before ``until`` that a fold can start from: a checkpoint of
    the archived log (:mod:`logkv.checkpoints`), the base snapshot the retained history
    starts from, or record 1. :class:`HistoryGap` when ``until`` lies before the history."""
    start = _Start({}, 0, log.segments[0][0] if log.segments else 1, 0)
    if log.base is not None:
        info, entries = log.base
        if (until.seq is not None and until.seq < info.last_seq) or (
            until.us is not None and until.us < (info.last_us or _snapshot_time(info))
        ):
            raise HistoryGap(
                f"the history of {folder} before sequence {info.last_seq + 1} is not retained: "
                "it was compacted away (retention delete), or archived segments were removed; "
                "compact with retention archive to keep it"
            )
        start = _Start(dict(entries), info.last_seq, info.covers + 1, 0, info.path)
    if not log.segments:
        return start
    first, last = log.segments[0][0], log.segments[-1][0]
    for checkpoint in reversed(checkpoints_of(folder)):
        if checkpoint.seq <= start.seq:
            break
        usable = first <= checkpoint.first_segment and checkpoint.segment <= last
        if usable and not until.passed_by(checkpoint.seq, checkpoint.max_us):
            try:
                _, entries = load_checkpoint(checkpoint.path)
            except CorruptionError as exc:  # derived data: an older point will do
                logger.warning("checkpoint %s is damaged and not used: %s", exc.path, exc.reason)
                continue
            return _Start(entries, checkpoint.seq, checkpoint.segment, checkpoint.offset)
    return start


def _fold_entries(log: RetainedLog, start: _Start, until: Until) -> tuple[_Folded, int | None]:
    """Fold the records after ``start`` up to ``until``. Returns what the fold holds, and
    None; or, when the first record after ``until`` continues a batch, the sequence number
    before that batch (the caller folds again up to it).

    This is the inner loop of every point-in-time read (up to a checkpoint interval of
    records): one dict holds each live key's entry or decoded fields, and the target is
    compared inline."""
    held: dict[str, tuple[Any, ...]] = start.entries
    drop = held.pop
    inf = float("inf")
    last_seq = until.seq if until.seq is not None else inf
    last_us = until.us if until.seq is None and until.us is not None else inf
    segments = log.segments
    for i, (number, path) in enumerate(segments):
        if number < start.segment:
            continue  # before the start (or covered by the base snapshot)
        offset = start.offset if number == start.segment else 0
        with SegmentReader(
            path, number, is_last=i == len(segments) - 1, synced=log.synced,
            report=fail_on_damage,
        ) as reader:  # fmt: skip
            for pos, length, fields in reader.frames(offset if offset > SEGMENT_HEADER_SIZE else 0):
                if fields[0] > last_seq or fields[1] > last_us:
                    if continues_batch(reader.buf, pos, length):
                        return _Folded(held), batch_first_seq(reader, pos) - 1
                    return _Folded(held), None
                op = fields[2]
                if op == _DELETE:
                    drop(fields[3], None)
                    continue
                value = fields[5]
                if op == _SET and value is not None and len(value) > _HELD_VALUE_LIMIT:
                    # a big value is not held: its location is, and it is read (and checked)
                    # again if it is still live at the end, so a fold holds little memory
                    size = len(value)
                    held[fields[3]] = (number, pos, length - size, size, fields[4])
                else:  # a small set, or a streamed set (its 40-byte reference)
                    held[fields[3]] = fields
    return _Folded(held), None


@dataclass(frozen=True)
class _Folded:
    """The state a fold reached: each live key's index entry (5 fields: values unread, the
    start's entries and keys set since with a value bigger than ``_HELD_VALUE_LIMIT``) or its
    record's fields as decoded (6 fields: the other keys set since)."""

    held: dict[str, tuple[Any, ...]]


def _materialize(
    log: RetainedLog, start: _Start, folded: _Folded, keep: Callable[[SetRecord], _T]
) -> dict[str, _T]:
    """Each live key's record, turned into ``keep(record)``: the records set during the fold
    as decoded, the others read where their entry points (each checked: :func:`_read_into`),
    file by file in offset order."""
    paths = dict(log.segments)
    state: dict[str, _T] = {}
    unread: dict[int, list[tuple[str, Entry]]] = {}
    for key, held in folded.held.items():
        if len(held) == _FIELDS:
            record = decode_fields(held)
            assert isinstance(record, SetRecord), "the fold keeps sets only"
            state[key] = keep(record)
        else:
            unread.setdefault(held[0], []).append((key, held))
    with ExitStack() as stack:
        for file_id, wanted in unread.items():
            path, source = _opened(stack, paths, start, file_id)
            wanted.sort(key=_offset_of)
            _read_into(state, keep, source, path, wanted)
    return state


def _offset_of(item: tuple[str, Entry]) -> int:
    return item[1][1]


def _read_into(
    state: dict[str, _T],
    keep: Callable[[SetRecord], _T],
    source: ByteSource,
    path: Path,
    wanted: list[tuple[str, Entry]],
) -> None:
    """Put ``keep(record)`` into ``state`` for the set record of each key ``wanted`` (in
    offset order) at its entry in ``source``, each checked (:class:`CorruptionError` for a bad
    frame, or a record of another key). Records that lie end to end (most of a checkpoint's
    or a snapshot's) are read a run of up to ``_RUN_BYTES`` at a time by the log scanner's
    inner loop, a record apart on its own."""
    for run in _runs(wanted):
        if len(run) == 1:
            key, entry = run[0]
            state[key] = keep(_record_in(source, path, key, entry))
            continue
        first = run[0][1][1]
        last = run[-1][1]
        buf = source.read(first, last[1] + frame_length(last) - first)
        frames = iter_frames(buf, 0, len(buf), batches=False)
        read = 0
        try:
            for (key, entry), (pos, _, fields) in zip(run, frames, strict=False):
                if pos + first != entry[1]:
                    raise CorruptionError(path, entry[1], "a record is not where its entry says")
                if fields[3] != key or fields[2] == _DELETE:
                    _checked_set(path, entry[1], key, fields)  # raises
                state[key] = keep(decode_fields(fields))  # type: ignore[arg-type]
                read += 1
        except BadFrame as bad:
            raise CorruptionError(path, first + bad.offset, bad.reason) from None
        if read != len(run):
            raise CorruptionError(path, first + len(buf), "records are cut short")


def _runs(wanted: list[tuple[str, Entry]]) -> Iterator[list[tuple[str, Entry]]]:
    """``wanted`` (in offset order) cut into runs of records that lie end to end, each at
    most about ``_RUN_BYTES`` long."""
    run: list[tuple[str, Entry]] = []
    begin = end = 0
    for item in wanted:
        offset = item[1][1]
        if run and (offset != end or end - begin > _RUN_BYTES):
            yield run
            run = []
        if not run:
            begin = offset
        run.append(item)
        end = offset + frame_length(item[1])
    if run:
        yield run


def _opened(
    stack: ExitStack, paths: dict[int, Path], start: _Start, file_id: int
) -> tuple[Path, ByteSource]:
    """The file an entry's ``file_id`` names (a segment, or the base snapshot), opened."""
    path = paths.get(file_id) if file_id > 0 else start.snapshot
    if path is None:
        raise FileNotFoundError(f"file {file_id} of the history is no longer listed")
    return path, stack.enter_context(open_bytes(path))


def _snapshot_time(info: SnapshotInfo) -> int:
    newest = 0
    for record in iter_snapshot_records(info.path):
        newest = max(newest, record.timestamp_us)
    return newest


def iter_snapshot_records(path: Path) -> Iterator[SetRecord]:
    """The records a snapshot holds, in key order (values included)."""
    covers = snapshot_number(path.name)
    if covers is None:
        raise ValueError(f"{path} is not a snapshot file")
    _, entries = load_snapshot(path, covers)
    with open_bytes(path) as source:  # frames in key order: the file read front to back
        for key, entry in entries.items():
            yield _record_in(source, path, key, entry)


def _snapshot_record(path: Path, key: str, entry: Entry) -> SetRecord:
    """The record of ``key`` that snapshot ``path`` holds where its hint ``entry`` says."""
    with open_bytes(path) as source:
        return _record_in(source, path, key, entry)


def _record_in(source: ByteSource, path: Path, key: str, entry: Entry) -> SetRecord:
    """The set record of ``key`` at hint ``entry`` in ``source`` (snapshot ``path``), checked:
    a bad frame, or a record of another key, is :class:`CorruptionError`."""
    offset = entry[1]
    length = frame_length(entry)
    try:
        _, fields = read_frame(source.read(offset, length), 0, length)
    except BadFrame as bad:
        raise CorruptionError(path, offset, bad.reason) from None
    return _checked_set(path, offset, key, fields)


def _checked_set(path: Path, offset: int, key: str, fields: tuple[Any, ...]) -> SetRecord:
    """The set record of a valid frame's ``fields`` that an entry of ``key`` points to;
    :class:`CorruptionError` when it is a delete or a record of another key."""
    if fields[3] != key or fields[2] == _DELETE:
        found = "a delete" if fields[2] == _DELETE else f"key {fields[3]!r}"
        raise CorruptionError(
            path, offset, f"snapshot record holds {found}, its hint says key {key!r}"
        )
    record = decode_fields(fields)
    assert isinstance(record, SetRecord)
    return record
