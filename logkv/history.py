"""History for audits: every change of a key, and the store as it was at a sequence or time.

History is read from the log itself: the store's segments plus, when compaction ran with
``Retention.ARCHIVE``, the archived segments. Under ``Retention.DELETE`` the log before the
newest snapshot is gone; the snapshot still holds the state at its sequence number (and each
live record's original sequence number, time and chain value), so the state can be rebuilt
for any point at or after it, and :class:`HistoryGap` says so for points before it.
Reads take no lock and change nothing, so they run beside a live writer.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgpack

from .errors import CorruptionError, LogKVError
from .format import (
    GENESIS_CHAIN,
    RECORD_MAGIC,
    SEGMENT_HEADER_SIZE,
    BadFrame,
    Record,
    SetRecord,
    chain_of,
    check_segment_header,
    decode_fields,
    iter_frames,
    next_chain,
    read_frame,
)
from .fsutil import open_for_reading
from .layout import ARCHIVE_DIR, list_segments, list_snapshots
from .snapshot import SnapshotInfo, load_snapshot

_T = TypeVar("_T")
_ATTEMPTS = 10  # reads that race a live writer's compactions


class HistoryGap(LogKVError):  # noqa: N818 - reads as what it is: a gap in the history
    """The log that would answer the question was retired by compaction (retention delete)."""


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
        if isinstance(self.record, SetRecord) and self.record.value is not None:
            return len(self.record.value)
        return 0


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


def _retrying(read: Callable[[], _T]) -> _T:
    """Run ``read`` again when a file it listed vanished before it read it: a compaction by
    the live writer retired it, and the next listing shows the newer state."""
    for _ in range(_ATTEMPTS - 1):
        try:
            return read()
        except FileNotFoundError:
            continue
    return read()


def newest_snapshot(folder: Path) -> tuple[SnapshotInfo, dict[str, Any]] | None:
    """The newest snapshot that loads, or None."""
    return _retrying(lambda: _newest_snapshot(folder))


def _newest_snapshot(folder: Path) -> tuple[SnapshotInfo, dict[str, Any]] | None:
    for covers, path in reversed(list_snapshots(folder)):
        try:
            return load_snapshot(path, covers)
        except CorruptionError:
            continue
    return None


def history_start(folder: Path) -> int:
    """The first sequence number whose record is still in the log (1 when complete)."""
    return _retrying(lambda: _start_of(folder, log_segments(folder))[0])


def _start_of(
    folder: Path, segments: list[tuple[int, Path]]
) -> tuple[int, tuple[SnapshotInfo, dict[str, Any]] | None]:
    """Where the history in ``segments`` starts, and the snapshot that holds the state
    before it (None when the log starts at the store's first record). The snapshot is looked
    up after the segments were listed, so it covers every segment retired before then."""
    if not segments or segments[0][0] == 1:
        return 1, None
    snap = _newest_snapshot(folder)
    if snap is None:
        return 1, None
    if snap[0].covers + 1 < segments[0][0]:
        raise HistoryGap(
            f"segments {snap[0].covers + 1}..{segments[0][0] - 1} of {folder} were retired and "
            "no intact snapshot covers them (the newest snapshot is damaged)"
        )
    return snap[0].last_seq + 1, snap


def iter_log(folder: Path) -> Iterator[LoggedRecord]:
    """Every record of the store's history, in sequence order.

    A cut-short tail of the last segment (a writer mid-append, or a crash not yet recovered)
    ends the iteration; any other damage raises :class:`CorruptionError`.
    """
    yield from _iter_segments(log_segments(folder))


def _iter_segments(segments: list[tuple[int, Path]]) -> Iterator[LoggedRecord]:
    for i, (number, path) in enumerate(segments):
        yield from _iter_segment(path, number, is_last=i == len(segments) - 1)


def _iter_segment(path: Path, number: int, is_last: bool) -> Iterator[LoggedRecord]:
    with open_for_reading(path) as file:
        size = os.fstat(file.fileno()).st_size
        if size < SEGMENT_HEADER_SIZE:
            if is_last:
                return
            raise CorruptionError(path, 0, "segment is cut short")
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            problem = check_segment_header(buf[:SEGMENT_HEADER_SIZE], number)
            if problem is not None:
                raise CorruptionError(path, 0, problem)
            try:
                for offset, length, fields in iter_frames(buf, SEGMENT_HEADER_SIZE, size):
                    yield LoggedRecord(
                        path, offset, length, decode_fields(fields), chain_of(buf, offset)
                    )
            except BadFrame as bad:
                if not is_last:
                    raise CorruptionError(path, bad.args[2], bad.args[0]) from None


def key_history(folder: Path, key: str) -> list[LoggedRecord]:
    """Every record of ``key`` in the store's history, oldest first.

    Fast on big logs: it searches each segment for the key's encoded bytes (a C-speed scan)
    and decodes only the frames around the hits, instead of decoding every record.
    """
    return _retrying(lambda: _key_history(folder, key))


def _key_history(folder: Path, key: str) -> list[LoggedRecord]:
    needle = msgpack.packb(key)
    found: list[LoggedRecord] = []
    for number, path in log_segments(folder):
        found.extend(_key_in_segment(path, number, key, needle))
    found.sort(key=lambda r: r.record.seq)
    return found


def _key_in_segment(path: Path, number: int, key: str, needle: bytes) -> Iterator[LoggedRecord]:
    with open_for_reading(path) as file:
        size = os.fstat(file.fileno()).st_size
        if size <= SEGMENT_HEADER_SIZE:
            return
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            if check_segment_header(buf[:SEGMENT_HEADER_SIZE], number) is not None:
                raise CorruptionError(path, 0, "bad segment header")
            hit = buf.find(needle, SEGMENT_HEADER_SIZE)
            while hit >= 0:
                frame = _frame_around(buf, hit, size)
                if frame is None:
                    hit = buf.find(needle, hit + 1)
                    continue
                start, length, fields = frame
                if fields[3] == key:
                    yield LoggedRecord(
                        path, start, length, decode_fields(fields), chain_of(buf, start)
                    )
                hit = buf.find(needle, start + length)


def _frame_around(buf: Any, pos: int, size: int) -> tuple[int, int, tuple[Any, ...]] | None:
    """The valid frame that contains byte ``pos``, or None."""
    start = buf.rfind(RECORD_MAGIC, SEGMENT_HEADER_SIZE, pos)
    while start >= 0:
        try:
            length, fields = read_frame(buf, start, size)
        except BadFrame:
            start = buf.rfind(RECORD_MAGIC, SEGMENT_HEADER_SIZE, start)
            continue
        return (start, length, fields) if pos < start + length else None
    return None


def state_at(
    folder: Path, *, until_seq: int | None = None, until_us: int | None = None
) -> dict[str, SetRecord]:
    """The store's contents as of sequence ``until_seq`` or time ``until_us`` (microseconds
    since the epoch; records written at or before it count), as key -> its :class:`SetRecord`.

    Raises :class:`HistoryGap` when that point lies before the retained history.
    """
    return _retrying(lambda: _state_at(folder, until_seq, until_us))


def _state_at(folder: Path, until_seq: int | None, until_us: int | None) -> dict[str, SetRecord]:
    # One listing for both where the history starts and what is replayed: a compaction
    # between two listings could otherwise pair a log that starts late with no snapshot.
    segments = log_segments(folder)
    _, snap = _start_of(folder, segments)
    state: dict[str, SetRecord] = {}
    if snap is not None:
        info = snap[0]
        if (until_seq is not None and until_seq < info.last_seq) or (
            until_us is not None and until_us < (info.last_us or _snapshot_time(info))
        ):
            raise HistoryGap(
                f"the history of {folder} before sequence {info.last_seq + 1} was compacted "
                "away (retention delete); compact with retention archive to keep it"
            )
        for kept in iter_snapshot_records(info.path):
            state[kept.key] = kept
    # Segments the snapshot covers may still be listed (a compaction was retiring them):
    # replaying their records again over the snapshot's state leaves that state unchanged.
    for logged in _iter_segments(segments):
        record = logged.record
        if until_seq is not None and record.seq > until_seq:
            break
        if until_us is not None and record.timestamp_us > until_us:
            break
        if isinstance(record, SetRecord):
            state[record.key] = record
        else:
            state.pop(record.key, None)
    return state


def _snapshot_time(info: SnapshotInfo) -> int:
    newest = 0
    for record in iter_snapshot_records(info.path):
        newest = max(newest, record.timestamp_us)
    return newest


def iter_snapshot_records(path: Path) -> Iterator[SetRecord]:
    """The records a snapshot holds, in key order (values included)."""
    covers = int(path.name.split(".")[0])
    _, entries = load_snapshot(path, covers)
    with (
        open_for_reading(path) as file,
        mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as buf,
    ):
        for key, entry in entries.items():
            offset = entry[1]
            length = entry[2] + entry[3] if entry[3] > 0 else entry[2]
            try:
                _, fields = read_frame(buf, offset, offset + length)
            except BadFrame as bad:
                raise CorruptionError(path, offset, bad.args[0]) from None
            record = decode_fields(fields)
            if not isinstance(record, SetRecord) or record.key != key:
                found = f"key {record.key!r}" if isinstance(record, SetRecord) else "a delete"
                raise CorruptionError(
                    path, offset, f"snapshot record holds {found}, its hint says key {key!r}"
                )
            yield record


@dataclass
class VerifyReport:
    """What :func:`verify` checked and the problems it found (empty ``problems``: all good)."""

    records: int = 0
    snapshot_records: int = 0
    chain_checked: int = 0
    problems: list[str] | None = None

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


def verify(folder: Path) -> VerifyReport:
    """Check every frame's checksum, the hash chain across all retained segments (from the
    genesis value, or from the snapshot's chain head when older segments were deleted), and
    every snapshot record against its hint entry. Reports the first broken chain link."""
    return _retrying(lambda: _verify(folder))


def _verify(folder: Path) -> VerifyReport:
    report = VerifyReport(problems=[])
    problems = report.problems
    assert problems is not None
    snap = newest_snapshot(folder)
    for covers, path in list_snapshots(folder):
        try:
            load_snapshot(path, covers)
        except CorruptionError as exc:
            problems.append(str(exc))
    if snap is not None:
        try:
            report.snapshot_records = sum(1 for _ in iter_snapshot_records(snap[0].path))
        except CorruptionError as exc:
            problems.append(str(exc))
    segments = log_segments(folder)
    chain: bytes | None = GENESIS_CHAIN
    if segments and segments[0][0] != 1:
        chain = snap[0].chain if snap is not None and snap[0].covers + 1 == segments[0][0] else None
    broken = False
    last_seq = 0
    for i, (number, path) in enumerate(segments):
        if i and number != segments[i - 1][0] + 1:
            problems.append(f"{path}: segment {segments[i - 1][0] + 1} is missing before it")
            chain = None
        try:
            with open_for_reading(path) as file:
                size = os.fstat(file.fileno()).st_size
                if size < SEGMENT_HEADER_SIZE:
                    if i != len(segments) - 1:
                        problems.append(f"{path}: segment is cut short")
                    continue
                with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                    problem = check_segment_header(buf[:SEGMENT_HEADER_SIZE], number)
                    if problem is not None:
                        problems.append(f"{path}: {problem}")
                        chain = None
                        continue
                    for offset, length, fields in iter_frames(buf, SEGMENT_HEADER_SIZE, size):
                        report.records += 1
                        if fields[0] <= last_seq:
                            problems.append(f"{path} offset {offset}: sequence goes backwards")
                        last_seq = fields[0]
                        stored = chain_of(buf, offset)
                        if chain is not None and not broken:
                            if next_chain(chain, buf, offset, length) != stored:
                                problems.append(
                                    f"{path} offset {offset}: hash chain broken at sequence "
                                    f"{fields[0]} (the first broken link)"
                                )
                                broken = True
                            else:
                                report.chain_checked += 1
                        chain = stored
        except BadFrame as bad:
            if i == len(segments) - 1 and bad.args[1]:
                continue  # a cut-short tail: a live writer mid-append, or a crash to recover
            problems.append(f"{path} offset {bad.args[2]}: {bad.args[0]}")
    return report
