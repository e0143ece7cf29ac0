"""Verify: check a store's retained log and snapshots end to end, without opening it.

Every frame's checksum, the order of sequence numbers, the hash chain across all retained
segments (from the genesis value, or from the snapshot's chain head when older segments were
deleted), every snapshot record against its hint entry, a snapshot's key table against its keys
(each key is looked up), every value file a retained record
names (each chunk's checksum, the size and the digest its record holds), and the log's end
against the synced mark. Damage is classified by the same torn-tail rule as an open
(:mod:`logkv.scan`), so a store that verify passes opens, and one that it fails does not open in
strict mode. Takes no lock and changes nothing, so it runs beside a live writer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import CorruptionError
from .format import Op, ValueRef, decode_value_ref
from .history import RetainedLog, iter_snapshot_records, retrying, survey
from .layout import list_snapshots
from .scan import ChainCheck, Damage, SegmentReader, out_of_order, synced_shortfall
from .snapshot import SnapshotInfo, check_snapshot
from .values import check_value_file


@dataclass
class VerifyReport:
    """What :func:`verify` checked and the problems it found (empty ``problems``: all good)."""

    records: int = 0
    snapshot_records: int = 0
    chain_checked: int = 0
    #: Value files (streamed values) read whole and checked against their records.
    value_files: int = 0
    problems: list[str] | None = None
    #: A torn tail found at the end of the log (open drops it; not a problem).
    torn_tail: str | None = None

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


def verify(folder: Path) -> VerifyReport:
    """Check every frame's checksum, the hash chain across all retained segments (from the
    genesis value, or from the snapshot's chain head when older segments were deleted), and
    every snapshot record against its hint entry, and that a snapshot's key table finds each of
    its keys. Reports the first broken chain link."""
    return retrying(lambda: _verify(folder))


def _verify(folder: Path) -> VerifyReport:
    problems: list[str] = []
    report = VerifyReport(problems=problems)
    retained = survey(folder, check_end=False)  # the end is checked below, offsets included
    if retained.gap is not None:
        problems.append(str(retained.gap))
    snap = _check_snapshots(folder, problems)
    refs: dict[int, ValueRef] = {}  # the value files the retained records name, by seq
    if snap is not None:
        try:
            for record in iter_snapshot_records(snap.path):
                report.snapshot_records += 1
                if record.streamed is not None:
                    refs[record.seq] = record.streamed
        except CorruptionError as exc:
            problems.append(str(exc))
    last_end = _check_segments(retained, report, problems, refs)
    for ref in refs.values():
        problem = check_value_file(folder, ref)
        report.value_files += 1
        if problem is not None:
            problems.append(problem)
    segments = retained.segments
    last = segments[-1][0] if segments else 0
    covers = 0 if snap is None else snap.covers
    lost = synced_shortfall(retained.synced, folder, last, last_end, covers)
    if lost is not None:
        problems.append(str(lost))
    return report


def _check_snapshots(folder: Path, problems: list[str]) -> SnapshotInfo | None:
    """Load every snapshot, adding those that do not load to ``problems``; return the newest
    that loads (None: none does)."""
    newest = None
    for covers, path in list_snapshots(folder):
        try:
            newest, misplaced = check_snapshot(path, covers)
        except CorruptionError as exc:
            problems.append(str(exc))
            continue
        if misplaced:
            problems.append(
                f"{path}: the snapshot's key table does not find {len(misplaced)} of its keys"
                f" (the first: {misplaced[0]!r})"
            )
    return newest


def _check_segments(
    retained: RetainedLog, report: VerifyReport, problems: list[str], refs: dict[int, ValueRef]
) -> int:
    """Scan the segments of ``retained``, counting records and checking sequence numbers and
    the hash chain, and noting the value files streamed sets name in ``refs``; return where the
    valid data of the last segment ends (0: no segment)."""
    chain = ChainCheck(retained.first_chain)
    broken = False
    last_seq = 0
    last_end = 0

    def note(damage: Damage) -> None:
        where = f"{damage.path} offset {damage.start}: {damage.reason}"
        if damage.torn:  # open drops it: a live writer mid-append, or a crash to recover
            report.torn_tail = where
        else:
            problems.append(where)
        chain.expected = None  # what the bad bytes held is unknown: re-anchor the chain

    segments = retained.segments
    for i, (number, path) in enumerate(segments):
        if i and number != segments[i - 1][0] + 1:
            problems.append(f"{path}: segment {segments[i - 1][0] + 1} is missing before it")
            chain.expected = None
        is_last = i == len(segments) - 1
        with SegmentReader(
            path, number, is_last=is_last, synced=retained.synced, report=note
        ) as reader:
            buf = reader.buf
            for offset, length, fields in reader.frames():
                report.records += 1
                seq = fields[0]
                if seq <= last_seq:
                    problems.append(f"{path} offset {offset}: {out_of_order(seq, last_seq)}")
                last_seq = seq
                if fields[2] == Op.SET_STREAMED:
                    refs[seq] = decode_value_ref(seq, fields[5])
                linked = chain.follows(buf, offset, length)
                if linked is None or broken:
                    continue
                if linked:
                    report.chain_checked += 1
                else:
                    problems.append(
                        f"{path} offset {offset}: hash chain broken at sequence {seq} "
                        "(the first broken link)"
                    )
                    broken = True
            last_end = reader.end
    return last_end
