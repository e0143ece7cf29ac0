"""Replay: fold a store's segments into an index of record locations.

The segments are read through :class:`~logkv.scan.SegmentReader`, which applies the torn-tail
rule; this module decides what open does with damage (:class:`Recovery`) and what it reports.

An index entry is the tuple ``(segment, offset, head, value_size, content_type)``: the frame
starts at ``offset`` in ``segment``; its value is the last ``value_size`` bytes of the frame and
starts ``head`` bytes in. ``value_size == -1`` marks a stored ``None`` (then ``head`` is the
whole frame). A streamed set, whose value is in a value file (:mod:`logkv.values`), has
``value_size == -2 - the value's size`` (and ``head`` the whole frame): :func:`value_size`.
Keeping ``head`` rather than the frame length lets most entries share Python's cached small
ints, which keeps the index small.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from .errors import CorruptionError
from .format import GENESIS_CHAIN, VALUE_REF, Op, SyncedMark, chain_of
from .modes import Recovery
from .scan import Damage, SegmentReader, out_of_order, synced_shortfall

__all__ = [
    "DroppedRange",
    "Entry",
    "EntryMap",
    "Recovery",
    "RecoveryReport",
    "Replayer",
    "SegmentScan",
    "frame_length",
    "synced_shortfall",  # of logkv.scan; the engine checks the synced mark with it
]

log = logging.getLogger(__name__)

Entry = tuple[int, int, int, int, str | None]

_SET = int(Op.SET)
_SET_STREAMED = int(Op.SET_STREAMED)
_REF_SIZE = struct.Struct("<Q")  # the first field of a streamed set's VALUE_REF
assert _REF_SIZE.size < VALUE_REF.size


class EntryMap(Protocol):
    """What replay folds records into: a ``dict`` on open, the live
    :class:`~logkv.index.Index` when a read-only store refreshes."""

    def get(self, key: str, /) -> Entry | None: ...
    def __setitem__(self, key: str, entry: Entry, /) -> Any: ...
    def pop(self, key: str, /) -> Entry | None: ...


_Map = TypeVar("_Map", bound=EntryMap)


def streamed_entry_size(ref: bytes) -> int:
    """The ``value_size`` field of the index entry of a streamed set whose body value (its
    :data:`~logkv.format.VALUE_REF`) is ``ref``."""
    size: int = _REF_SIZE.unpack_from(ref)[0]
    return -2 - size


def value_size(entry: Entry) -> int:
    """The size of the value an index entry points to: in the log, or in its value file (0
    for a stored None)."""
    size = entry[3]
    return size if size >= 0 else (-2 - size if size < -1 else 0)


def frame_length(entry: Entry) -> int:
    """The length in bytes of the frame an index entry points to."""
    return entry[2] + entry[3] if entry[3] > 0 else entry[2]


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
        self._segment = SegmentScan(0)  # what the scan under way found

    def scan(self, path: Path, number: int, start: int, is_last: bool) -> SegmentScan:
        """Fold the records of segment ``path`` from offset ``start`` (0 = read its header).

        The scan follows the torn-tail rule (:mod:`logkv.scan`): a torn tail ends it and is
        reported in ``torn_tail``. Any other damage raises ``CorruptionError``, or in salvage
        mode is skipped (a segment with a bad header, whole) and reported in ``damaged`` and
        :attr:`dropped`.
        """
        self._segment = outcome = SegmentScan(0)
        with SegmentReader(
            path, number, is_last=is_last, synced=self.synced, report=self._damaged
        ) as reader:
            self._fold(reader, start)
            outcome.valid_end = reader.end
        return outcome

    def _damaged(self, damage: Damage) -> None:
        """The reporter of :meth:`scan`: note a torn tail; raise, or in salvage mode drop."""
        if damage.torn:
            self._segment.torn_tail = DroppedRange(
                damage.path, damage.start, damage.end, damage.reason, damage.cut_short
            )
            return
        if self.recovery is not Recovery.SALVAGE:
            raise damage.error()
        self._segment.damaged = True
        self.dropped.append(DroppedRange(damage.path, damage.start, damage.end, damage.reason))
        log.warning(
            "salvage: dropping %s bytes %d..%d: %s",
            damage.path,
            damage.start,
            damage.end,
            damage.reason,
        )

    def _fold(self, reader: SegmentReader, start: int) -> None:
        number = reader.number
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
            for offset, length, fields in reader.frames(start):
                seq = fields[0]
                if seq <= last_seq:
                    raise CorruptionError(reader.path, offset, out_of_order(seq, last_seq))
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
                elif fields[2] == _SET_STREAMED:
                    content_type = fields[4]
                    content_type = content_types.setdefault(content_type, content_type)
                    entries[key] = (
                        number,
                        offset,
                        length,
                        streamed_entry_size(fields[5]),
                        content_type,
                    )
                    live_bytes += length
                elif old is not None:
                    pop(key)
                last_offset = offset
        finally:
            if last_offset >= 0:
                self.chain = chain_of(reader.buf, last_offset)
            self.last_seq = last_seq
            self.record_bytes = record_bytes
            self.live_bytes = live_bytes
            self.last_timestamp_us = timestamp
