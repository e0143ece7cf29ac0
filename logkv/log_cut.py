"""Where a store's log ends for a target in its history: a sequence number or a time.

A target cuts the log before the first record that comes after it, or before that record's
batch when it continues one: a batch is applied whole or not at all, so no state inside it ever
existed. Replay (:mod:`logkv.rebuild`), history (:mod:`logkv.history`) and a restore from the
bucket (:mod:`logkv.replica.restore`) all cut by this rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from .format import FRAME_HEADER_SIZE, GENESIS_CHAIN, OP_CONTINUES, SyncedMark, chain_of
from .scan import SegmentReader, fail_on_damage


@dataclass(frozen=True)
class Until:
    """A target in a store's history: the state after record ``seq``, or after the records
    written at or before time ``us`` (µs since 1970, up to the first record written after it);
    neither: the newest state."""

    seq: int | None = None
    us: int | None = None

    def passed_by(self, seq: int, us: int) -> bool:
        """Whether a record ``seq`` written at ``us`` comes after the target."""
        if self.seq is not None:
            return seq > self.seq
        return self.us is not None and us > self.us

    @property
    def given(self) -> bool:
        """Whether there is a target (else: the newest state)."""
        return self.seq is not None or self.us is not None

    def __str__(self) -> str:
        return f"seq {self.seq}" if self.seq is not None else f"time {self.us} µs"


@dataclass(frozen=True)
class LogCut:
    """Where a log ends for a target: segment ``segments[index]`` is cut at byte ``offset``
    and the segments after it are left out (``index`` None: no record comes after the target,
    the whole log is kept). ``last_seq``, ``chain`` and ``last_us`` describe the last record
    kept (the values given for what precedes the segments when none of theirs is kept)."""

    index: int | None
    offset: int
    last_seq: int
    chain: bytes
    last_us: int
    #: Records of the segments that are kept.
    records: int


def find_cut(
    segments: Sequence[tuple[int, Path]],
    until: Until,
    *,
    kept_seq: int = 0,
    kept_chain: bytes = GENESIS_CHAIN,
    kept_us: int = 0,
    synced: SyncedMark | None = None,
    tail: bool = True,
) -> LogCut:
    """Find where ``segments`` (consecutive, in order) end for ``until``: before the first
    record that comes after it, or before that record's batch when it continues one.
    ``kept_*`` describe the record before the segments (a snapshot's last one; none: the
    genesis). With ``tail``, the last segment may end in a torn tail (a live writer's
    append), which ends it; any other damage raises :class:`~logkv.errors.CorruptionError`."""
    records = 0
    for index, (number, path) in enumerate(segments):
        before = (kept_seq, kept_chain, kept_us, records)  # what precedes this segment
        with SegmentReader(
            path,
            number,
            is_last=tail and index == len(segments) - 1,
            synced=synced,
            report=fail_on_damage,
        ) as reader:
            buf = reader.buf
            last_offset = -1
            for offset, length, fields in reader.frames():
                if until.passed_by(fields[0], fields[1]):
                    if _continues(buf, offset, length):
                        return _before_batch(reader, offset, index, *before)
                    if last_offset >= 0:
                        kept_chain = chain_of(buf, last_offset)
                    return LogCut(index, offset, kept_seq, kept_chain, kept_us, records)
                kept_seq, kept_us, last_offset = fields[0], fields[1], offset
                records += 1
            if last_offset >= 0:
                kept_chain = chain_of(buf, last_offset)
    return LogCut(None, 0, kept_seq, kept_chain, kept_us, records)


def _continues(buf: Any, offset: int, length: int) -> bool:
    """Whether the valid frame at ``offset`` continues a batch (the scanner reduces ``op`` to
    its kind; its batch bits are in the frame's body)."""
    body = msgpack.unpackb(buf[offset + FRAME_HEADER_SIZE : offset + length], use_list=False)
    return bool(body[2] & OP_CONTINUES)


def _before_batch(
    reader: SegmentReader,
    stop: int,
    index: int,
    seq: int,
    chain: bytes,
    us: int,
    records: int,
) -> LogCut:
    """The cut before the batch that holds the frame at ``stop``: the segment read again, this
    time with every record's batch bits (rare: only a target inside a batch comes here).
    ``seq``, ``chain``, ``us`` and ``records`` are what precedes the segment (a batch never
    spans segments, so it starts in this segment)."""
    buf = reader.buf
    batch_start = -1
    previous: tuple[int, int, int] | None = None  # seq, us, offset of the latest record
    before: tuple[int, int, int] | None = None  # ... of the record before the batch
    counted = 0
    for in_segment, (offset, length, fields) in enumerate(reader.frames()):
        if offset == stop:
            break
        if not _continues(buf, offset, length):
            batch_start, before, counted = offset, previous, in_segment
        previous = (fields[0], fields[1], offset)
    assert batch_start >= 0, "a batch's later record with no start before it"
    if before is None:  # the batch opens the segment: what precedes the segment is kept
        return LogCut(index, batch_start, seq, chain, us, records)
    last_seq, last_us, offset = before
    return LogCut(index, batch_start, last_seq, chain_of(buf, offset), last_us, records + counted)


def continues_batch(buf: Any, offset: int, length: int) -> bool:
    """Whether the valid ``length``-byte frame at ``offset`` of ``buf`` continues a batch."""
    return _continues(buf, offset, length)


def batch_first_seq(reader: SegmentReader, stop: int) -> int:
    """The sequence number of the first record of the batch that the frame at ``stop``
    continues (its segment read again with every record's batch bits)."""
    buf = reader.buf
    first = -1
    for offset, length, fields in reader.frames():
        if offset == stop:
            break
        if not _continues(buf, offset, length):
            first = fields[0]
    assert first >= 0, "a batch's later record with no start before it"
    return int(first)
