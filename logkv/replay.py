"""Replay: fold a store's segments into an index of record locations.

An index entry is the tuple ``(segment, offset, head, value_size, content_type)``: the frame
starts at ``offset`` in ``segment``; its value is the last ``value_size`` bytes of the frame and
starts ``head`` bytes in. ``value_size == -1`` marks a stored ``None`` (then ``head`` is the
whole frame). Keeping ``head`` rather than the frame length lets most entries share Python's
cached small ints, which keeps the index small.
"""

from __future__ import annotations

import logging
import mmap
import os
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from .errors import CorruptionError
from .format import (
    FRAME_HEADER_SIZE,
    GENESIS_CHAIN,
    SEGMENT_HEADER_SIZE,
    BadFrame,
    Op,
    SyncedMark,
    chain_of,
    check_segment_header,
    find_next_frame,
    iter_frames,
    next_chain,
    read_frame,
)
from .fsutil import open_for_reading
from .layout import segment_name

log = logging.getLogger("logkv")

Entry = tuple[int, int, int, int, str | None]

_SET = int(Op.SET)
_SYNCED_DAMAGE = (
    " (before the synced mark: the record was durable and acknowledged, so this is damage, "
    "not a torn write)"
)
_SYNCED_EMPTY = "the last segment is empty, but it was synced when the writer last closed cleanly"


class EntryMap(Protocol):
    """What replay folds records into: a ``dict`` on open, the live
    :class:`~logkv.index.Index` when a read-only store refreshes."""

    def get(self, key: str, /) -> Entry | None: ...
    def __setitem__(self, key: str, entry: Entry, /) -> Any: ...
    def pop(self, key: str, /) -> Entry | None: ...


_Map = TypeVar("_Map", bound=EntryMap)


def _successor(buf: Any, at: int, candidate: int | None, end: int) -> int | None:
    """For a frame at ``at`` whose length runs past the end of the file, the first valid frame
    after it that chains from it (``candidate`` is the first valid frame after it), or None.

    Everything after such a frame lies inside its claimed length: a valid frame there is either
    its real successor (the length field is damaged) or part of its value (a value holding a
    logkv record, cut short by a crash). Only the successor's chain is computed from it.
    """
    if end - at < FRAME_HEADER_SIZE:
        return None
    chain = chain_of(buf, at)
    while candidate is not None:
        length, _ = read_frame(buf, candidate, end)
        if chain_of(buf, candidate) == next_chain(chain, buf, candidate, length):
            return candidate
        candidate = find_next_frame(buf, candidate, end)
    return None


def next_valid_frame(buf: Any, at: int, end: int, cut_short: bool, is_last: bool) -> int | None:
    """Where the first valid frame after the bad frame at ``at`` starts, or None.

    In the last segment, a bad frame whose length runs past the end of the file (``cut_short``)
    is followed only by a frame that chains from it (see :func:`_successor`).
    """
    following = find_next_frame(buf, at, end)
    if following is not None and cut_short and is_last:
        following = _successor(buf, at, following, end)
    return following


def frame_length(entry: Entry) -> int:
    """The length in bytes of the frame an index entry points to."""
    return entry[2] + entry[3] if entry[3] > 0 else entry[2]


def tail_is_torn(mark: SyncedMark | None, number: int, at: int) -> bool:
    """The torn-tail rule's second half: bad bytes at ``at`` of the last segment ``number``,
    with no valid frame after them, are a torn tail only if they lie past what the synced mark
    says was durable. Before it they are damage to acknowledged records."""
    return mark is None or at >= mark.durable_bytes(number)


def synced_shortfall(
    mark: SyncedMark | None, folder: Path, last: int, valid_end: int | None, covers: int
) -> CorruptionError | None:
    """The damage when the log of the store in ``folder`` ends before the synced mark, else
    None: ``last`` is its last segment (0 for none), whose valid data ends at ``valid_end``
    (None: not scanned, so only a missing segment counts); a snapshot covers ``1..covers``."""
    if mark is None or mark.segment <= covers:
        return None
    if mark.segment > last:
        return CorruptionError(
            folder / segment_name(mark.segment),
            0,
            f"segment {mark.segment} is missing from the end of the log; it was synced when the "
            "writer last closed cleanly",
        )
    if mark.segment == last and valid_end is not None and valid_end < mark.offset:
        return CorruptionError(
            folder / segment_name(last),
            valid_end,
            f"the log ends at offset {valid_end}, but {mark.offset} bytes of this segment were "
            "synced when the writer last closed cleanly (acknowledged records are missing)",
        )
    return None


class Recovery(StrEnum):
    """What open does with damaged bytes.

    ``STRICT`` (the default) drops only a torn tail, the cut-short end of the last segment that a
    crash mid-append leaves, and raises :class:`~logkv.errors.CorruptionError` for anything
    else. ``SALVAGE`` keeps every record that passes its checksum, drops the rest and reports
    what it dropped in :class:`RecoveryReport`.
    """

    STRICT = "strict"
    SALVAGE = "salvage"


@dataclass(frozen=True)
class DroppedRange:
    """Bytes that open dropped: ``[start, end)`` of ``path``, and why."""

    path: Path
    start: int
    end: int
    reason: str
    #: False when complete frames failed their check (not only a record cut short by the end
    #: of the file): what a power loss leaves of unsynced pages, or damage. Open keeps a copy.
    cut_short: bool = True


@dataclass
class RecoveryReport:
    """What the last open (or refresh) dropped; empty after a clean shutdown."""

    torn_tail: DroppedRange | None = None
    dropped: list[DroppedRange] = field(default_factory=list)
    #: Snapshots that failed to load (newest first); open fell back to an older one + the log.
    damaged_snapshots: list[CorruptionError] = field(default_factory=list)
    #: Salvage: the log ended before the synced mark, so records that were durable at the last
    #: clean close are missing (where they were); the open went on without them.
    lost: DroppedRange | None = None

    @property
    def clean(self) -> bool:
        """True when nothing was dropped or lost and every snapshot loaded."""
        return (
            self.torn_tail is None
            and not self.dropped
            and not self.damaged_snapshots
            and self.lost is None
        )


@dataclass
class SegmentScan:
    """Where the valid data of one scanned segment ends."""

    valid_end: int
    torn_tail: DroppedRange | None = None
    damaged: bool = False


class Replayer(Generic[_Map]):
    """Folds the records of segments, in order, into ``entries`` (key -> :data:`Entry`).

    ``entries`` may be a plain dict (open: the index is built from it once at the end) or the
    live :class:`~logkv.index.Index` (a read-only store refreshing). Tracks the last sequence
    number, the bytes of all records and of live records, and interns content types.
    """

    def __init__(self, entries: _Map, recovery: Recovery) -> None:
        self.entries = entries
        self.recovery = recovery
        self.last_seq = 0
        self.chain = GENESIS_CHAIN  # chain value of the last record folded
        self.last_timestamp_us = 0
        self.record_bytes = 0
        self.live_bytes = 0
        self.content_types: dict[str | None, str | None] = {None: None}
        self.dropped: list[DroppedRange] = []  # salvage mode: what was skipped
        #: How far the log was synced at the last clean close (None: nothing known).
        self.synced: SyncedMark | None = None

    def scan(self, path: Path, number: int, start: int, is_last: bool) -> SegmentScan:
        """Fold the records of segment ``path`` from offset ``start`` (0 = read its header).

        A bad frame in the last segment with no valid frame after it is a torn tail: the scan
        stops before it and reports it. Any other bad frame raises ``CorruptionError``, or in
        salvage mode is skipped and reported in ``damaged``/the caller's report.
        """
        with open_for_reading(path) as file:
            size = os.fstat(file.fileno()).st_size
            if size == 0:
                return self._empty(path, number, is_last)
            with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                if start == 0:
                    problem = check_segment_header(buf[:SEGMENT_HEADER_SIZE], number)
                    if problem is not None:
                        if (
                            is_last
                            and size < SEGMENT_HEADER_SIZE
                            and tail_is_torn(self.synced, number, 0)
                        ):
                            return SegmentScan(0, DroppedRange(path, 0, size, problem))
                        if self.recovery is Recovery.SALVAGE:
                            self.dropped.append(DroppedRange(path, 0, size, problem))
                            return SegmentScan(0, None, damaged=True)
                        raise CorruptionError(path, 0, problem)
                    start = SEGMENT_HEADER_SIZE
                return self._scan_frames(path, number, buf, start, size, is_last)

    def _empty(self, path: Path, number: int, is_last: bool) -> SegmentScan:
        if is_last and tail_is_torn(self.synced, number, 0):
            return SegmentScan(0, DroppedRange(path, 0, 0, "empty segment (no header)"))
        reason = "empty segment in the middle of the log" if not is_last else _SYNCED_EMPTY
        if self.recovery is Recovery.SALVAGE:
            self.dropped.append(DroppedRange(path, 0, 0, reason))
            return SegmentScan(0, None, damaged=True)
        raise CorruptionError(path, 0, reason)

    def _scan_frames(
        self, path: Path, number: int, buf: Any, pos: int, end: int, is_last: bool
    ) -> SegmentScan:
        damaged = False
        while True:
            try:
                pos = self._fold(path, number, buf, pos, end)
                return SegmentScan(pos, None, damaged)
            except BadFrame as bad:
                reason, cut_short, at = bad.args
            following = next_valid_frame(buf, at, end, cut_short, is_last)
            if following is None and is_last:
                if tail_is_torn(self.synced, number, at):
                    torn = DroppedRange(path, at, end, reason, cut_short=cut_short)
                    return SegmentScan(at, torn, damaged)
                reason += _SYNCED_DAMAGE
            if self.recovery is not Recovery.SALVAGE:
                raise CorruptionError(path, at, reason)
            damaged = True
            stop = end if following is None else following
            self.dropped.append(DroppedRange(path, at, stop, reason))
            log.warning("salvage: dropping %s bytes %d..%d: %s", path, at, stop, reason)
            if following is None:
                return SegmentScan(at, None, damaged)
            pos = following

    def _fold(self, path: Path, number: int, buf: Any, pos: int, end: int) -> int:
        entries = self.entries
        get = entries.get
        pop = entries.pop
        content_types = self.content_types
        last_seq = self.last_seq
        record_bytes = self.record_bytes
        live_bytes = self.live_bytes
        timestamp = self.last_timestamp_us
        last_offset = -1
        try:
            for offset, length, fields in iter_frames(buf, pos, end):
                seq = fields[0]
                if seq <= last_seq:
                    raise CorruptionError(
                        path, offset, f"sequence number {seq} follows {last_seq} (out of order)"
                    )
                last_seq = seq
                timestamp = fields[1]
                record_bytes += length
                key = fields[3]
                old = get(key)
                if old is not None:
                    live_bytes -= old[2] + old[3] if old[3] > 0 else old[2]
                if fields[2] == _SET:
                    value = fields[5]
                    content_type = fields[4]
                    content_type = content_types.setdefault(content_type, content_type)
                    if value is None:
                        entries[key] = (number, offset, length, -1, content_type)
                    else:
                        size = len(value)
                        entries[key] = (number, offset, length - size, size, content_type)
                    live_bytes += length
                elif old is not None:
                    pop(key)
                pos = offset + length
                last_offset = offset
        finally:
            if last_offset >= 0:
                self.chain = chain_of(buf, last_offset)
            self.last_seq = last_seq
            self.record_bytes = record_bytes
            self.live_bytes = live_bytes
            self.last_timestamp_us = timestamp
        return pos
