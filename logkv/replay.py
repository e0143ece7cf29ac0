"""Replay: fold a store's segments into an index of record locations.

The segments are read through :class:`~logkv.scan.SegmentReader`, which applies the torn-tail
rule; this module decides what open does with damage (:class:`Recovery`) and what it reports.

An index entry is the tuple ``(segment, offset, head, value_size, content_type)``: the frame
starts at ``offset`` in ``segment``; its value is the last ``value_size`` bytes of the frame and
starts ``head`` bytes in. ``value_size == -1`` marks a stored ``None`` (then ``head`` is the
whole frame). A streamed set, whose value is in a value file (:mod:`logkv.values`), has
``value_size == -2 - the value's size`` (and ``head`` the whole frame):
:func:`~logkv.index.value_size`.
Keeping ``head`` rather than the frame length lets most entries share Python's cached small
ints, which keeps the index small.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CorruptionError
from .format import (
    GENESIS_CHAIN,
    SEGMENT_HEADER_SIZE,
    Op,
    SyncedMark,
    chain_of,
    streamed_entry_size,
)
from .hints import SegmentHint, index_rows
from .index import (
    HEAD_MASK,
    HEAD_SHIFT,
    ROW_LIMIT,
    SIZE_MASK,
    SIZE_SHIFT,
    TYPE_SHIFT,
    Entry,
    Index,
    file_base,
    pack,
    packed_frame_length,
)
from .modes import Recovery
from .scan import Damage, SegmentReader, out_of_order, synced_shortfall

__all__ = [
    "DroppedRange",
    "Entry",
    "Recovery",
    "RecoveryReport",
    "Replayer",
    "SegmentScan",
    "frame_length",
    "synced_shortfall",  # of logkv.scan; the engine checks the synced mark with it
]

log = logging.getLogger(__name__)

_SET = int(Op.SET)
_SET_STREAMED = int(Op.SET_STREAMED)


def frame_length(entry: Entry) -> int:
    """The length in bytes of the frame an index entry points to."""
    return entry[2] + entry[3] if entry[3] > 0 else entry[2]


def set_entry(number: int, offset: int, length: int, fields: Any) -> Entry | None:
    """The unpacked index entry of the valid ``length``-byte frame at ``offset`` of file
    ``number`` whose body is ``fields``: a set's, a streamed set's (its size ``-2 - value
    size``), or None for a delete (point-in-time folds and checkpoints; an open packs the
    same fields straight into ints in :meth:`Replayer.replay`)."""
    op = fields[2]
    if op == _SET:
        value = fields[5]
        if value is None:
            return (number, offset, length, -1, fields[4])
        return (number, offset, length - len(value), len(value), fields[4])
    if op == _SET_STREAMED:
        return (number, offset, length, streamed_entry_size(fields[5]), fields[4])
    return None


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


class Replayer:
    """Folds the records of segments, in order, into ``index`` (key -> packed entry).

    ``index`` is a fresh :class:`~logkv.index.Index` on open (``bulk``: keys go into its dict
    only, and the engine sorts them all once at the end), or the live index when a read-only
    store refreshes (new keys join its fresh keys). Tracks the last sequence number, the bytes
    of all records and of live records; content types are numbered in the index.
    """

    def __init__(self, index: Index, recovery: Recovery, *, bulk: bool = True) -> None:
        self.index = index
        self.bulk = bulk
        self.recovery = recovery
        self.last_seq = 0
        self.chain = GENESIS_CHAIN  # chain value of the last record folded
        self.last_timestamp_us = 0
        self.record_bytes = 0
        self.live_bytes = 0
        self.dropped: list[DroppedRange] = []  # salvage mode: what was skipped
        #: How far the log was synced at the last clean close (None: nothing known).
        self.synced: SyncedMark | None = None
        self._segment = SegmentScan(0)  # what the scan under way found
        self._recount = False  # live_bytes is to be counted again from the index

    def count_live(self) -> None:
        """Make :attr:`live_bytes` exact after hints that replaced entries (see
        :meth:`apply_hint`): the frame lengths of every entry of the index, summed."""
        if self._recount:
            self.live_bytes = sum(packed_frame_length(p) for _, p in self.index.items())
            self._recount = False

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

    def apply_hint(self, hint: SegmentHint, path: Path) -> None:
        """Fold sealed segment ``path`` from its hint (checked against it by
        :func:`~logkv.hints.load_segment_hint`) instead of scanning it: the keys it sets, in
        bulk, then the keys it deletes. Only on open (``bulk``)."""
        assert self.bulk, "hints are applied on open only"
        if hint.first_seq <= self.last_seq:
            raise CorruptionError(
                path, SEGMENT_HEADER_SIZE, out_of_order(hint.first_seq, self.last_seq)
            )
        index = self.index
        rows = hint.rows
        live = self.live_bytes + rows.frame_bytes()
        entries = zip(rows.keys, index_rows(rows, hint.number, index), strict=True)
        if index.has_stored:  # each key looked up in the stored keys: one at a time
            put = index.put_packed
            for key, entry in entries:
                old = put(key, entry)
                if old is not None:
                    live -= packed_frame_length(old)
        else:
            packed = index.packed
            before = len(packed)
            packed.update(entries)
            if before + len(rows.keys) != len(packed):
                # The segment replaced entries, whose lengths are gone with them: count the
                # live bytes again once the replay ends (looking every key up first would
                # cost as much as the update, for the common case of keys new to the index).
                self._recount = True
        remove = index.remove_packed
        for key in hint.deleted:
            old = remove(key)
            if old is not None:
                live -= packed_frame_length(old)
        self.live_bytes = live
        self.record_bytes += hint.size - SEGMENT_HEADER_SIZE
        self.last_seq, self.chain, self.last_timestamp_us = hint.last_seq, hint.chain, hint.last_us

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
        index = self.index
        # With stored keys, every key is looked up and written through the index, which
        # keeps them exact (and the fresh keys too); else straight in its dict.
        stored = index.has_stored
        get = index.find if stored else index.packed.get
        put = index.put_packed if stored else index.packed.__setitem__
        remove = index.remove_packed
        fresh = None if self.bulk or stored else index.new_keys()
        type_id = index.types.id
        base = file_base(reader.number)
        last_seq = self.last_seq
        record_bytes = self.record_bytes
        live_bytes = self.live_bytes
        timestamp = self.last_timestamp_us
        last_offset = -1
        try:
            for offset, length, fields in reader.frames(start, values=False):
                seq = fields[0]
                if seq <= last_seq:
                    raise CorruptionError(reader.path, offset, out_of_order(seq, last_seq))
                last_seq = seq
                timestamp = fields[1]
                record_bytes += length
                key = fields[3]
                old = get(key)
                if old is not None:
                    if old < ROW_LIMIT:  # a streamed set, or a row of a hint
                        live_bytes -= packed_frame_length(old)
                    else:
                        size = (old >> SIZE_SHIFT & SIZE_MASK) - 1
                        head = old >> HEAD_SHIFT & HEAD_MASK
                        live_bytes -= head + size if size > 0 else head
                if fields[2] == _SET:
                    value = fields[5]
                    size = -1 if value is None else len(value)
                    put(
                        key,
                        base
                        | offset
                        | (size + 1) << SIZE_SHIFT
                        | (length - size if size > 0 else length) << HEAD_SHIFT
                        | type_id(fields[4]) << TYPE_SHIFT,
                    )
                    if old is None and fresh is not None:
                        fresh.add(key)
                    live_bytes += length
                elif fields[2] == _SET_STREAMED:
                    put(
                        key,
                        pack(
                            reader.number,
                            offset,
                            length,
                            streamed_entry_size(fields[5]),
                            type_id(fields[4]),
                        ),
                    )
                    if old is None and fresh is not None:
                        fresh.add(key)
                    live_bytes += length
                elif old is not None:
                    remove(key)
                last_offset = offset
        finally:
            if last_offset >= 0:
                self.chain = chain_of(reader.buf, last_offset)
            self.last_seq = last_seq
            self.record_bytes = record_bytes
            self.live_bytes = live_bytes
            self.last_timestamp_us = timestamp
