"""A store's records as JSON-able lines: what ``logkv dump`` prints (``--json``: as they are).

``target`` is a store folder or one data file (a segment ``NNNNNNNN.seg``, a snapshot
``NNNNNNNN.snap``, or a ``.damaged`` copy kept by salvage). A folder is dumped the way an open
reads it: the newest snapshot that loads, then the segments after it. With ``history`` the
archived segments (``archive/``, kept by compaction under retention "archive") and the current
ones are dumped instead: every record ever written, as far as the archive reaches.

Each line is a dict:

* a record: ``file`` (relative to the store), ``segment`` (None inside a snapshot), ``offset``,
  ``seq``, ``timestamp`` (ISO 8601, UTC), ``op`` (``set`` or ``delete``), ``key``,
  ``content_type``, ``size`` (bytes of the value; 0 for a stored None, None for a delete) and,
  with values, ``value`` (UTF-8 text when the bytes decode, else base64; ``value_encoding``
  says which; None for a stored None);
* a problem: ``{"error": KIND, "path", "offset", "end", "reason"}`` for the bytes
  ``[offset, end)`` (``end`` is -1 when unknown), where KIND is ``corruption``, ``torn_tail``
  (the cut-short end of the last segment that a crash mid-append leaves), ``chain_break`` (a
  record whose hash-chain value does not follow the record before it: history was changed,
  removed or reordered, or salvage dropped records there), ``unreadable`` (the file could not
  be read), ``retired`` (the file vanished: a live writer's compaction retired it after the
  dump listed it; run the dump again) or, with ``history``, ``history_gap`` (segments that
  compaction deleted rather than archived, which the newest intact snapshot covers; not an
  error: missing segments that no snapshot covers are ``corruption``). After a corrupt spot
  the dump resumes at the next valid record, as salvage would.

The hash chain is checked from the log's first record (segment 1) on, or from the chain value a
snapshot's meta block records for the segments after it; a dump that starts elsewhere, or
resumes after damaged bytes, takes the next record's chain value on trust. Records inside a
snapshot are verbatim copies in key order, so only their checksums are checked.

A dump only reads: it takes no lock, so it works beside a live writer.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, BinaryIO, Final

from ..content import public_content_type
from ..engine import Engine
from ..errors import CorruptionError, UnsafeStoreError
from ..format import GENESIS_CHAIN, SEGMENT_HEADER_SIZE, DeleteRecord, SetRecord, decode_fields
from ..fsutil import open_for_reading
from ..history import missing_end
from ..layout import (
    ARCHIVE_DIR,
    SEGMENT_SUFFIX,
    SNAPSHOT_SUFFIX,
    VALUES_DIR,
    data_file_name,
    list_segments,
    list_snapshots,
    value_file_name,
)
from ..scan import ChainCheck, Damage, SegmentReader, out_of_order
from ..snapshot import load_snapshot
from ..synced import read_synced_mark
from . import ExitCode
from .common import CommandError
from .render import iso_timestamp, value_fields

_LEADING_NUMBER: Final = re.compile(r"^(\d+)(\.seg|\.snap)")

#: Problem kinds that make a dump fail (a torn tail is reported but is not damage).
DAMAGE: Final = frozenset({"corruption", "chain_break"})


class DumpStatus(IntEnum):
    """How a dump ended: intact, damage found, some file could not be read, or a live
    writer's compaction retired a file before the dump read it (run it again)."""

    OK = 0
    DAMAGED = 1
    UNREADABLE = 2
    CHANGED = 3


@dataclass(frozen=True)
class DumpFilter:
    """Which record lines a dump keeps (problem lines are always kept): each field set narrows
    it. ``live``: only the current record of each key, as the index of an open at the start
    of the dump points to it."""

    key: str | None = None
    prefix: str | None = None
    seq_from: int | None = None
    seq_to: int | None = None
    since_us: int | None = None
    until_us: int | None = None
    live: bool = False

    @property
    def timed(self) -> bool:
        """Whether the filter looks at the records' times."""
        return self.since_us is not None or self.until_us is not None

    def keeps(self, record: SetRecord | DeleteRecord) -> bool:
        """Whether a record passes the key, sequence and time conditions."""
        key = record.key
        if self.key is not None and key != self.key:
            return False
        if self.prefix is not None and not key.startswith(self.prefix):
            return False
        seq = record.seq
        if (self.seq_from is not None and seq < self.seq_from) or (
            self.seq_to is not None and seq > self.seq_to
        ):
            return False
        moment = record.timestamp_us
        if self.since_us is not None and moment < self.since_us:
            return False
        return self.until_us is None or moment <= self.until_us


def parse_seq_range(text: str) -> tuple[int | None, int | None]:
    """``--seq``: ``FROM..TO``, ``FROM..``, ``..TO`` or ``N`` as (from, to), both included."""
    low, sep, high = text.strip().partition("..")
    if not sep:
        high = low

    def number(part: str) -> int | None:
        part = part.strip()
        if not part:
            return None
        if not (part.isascii() and part.isdigit()):
            raise CommandError(
                f"--seq {text!r} is not FROM..TO (sequence numbers, for example 100..200, "
                "100.. or ..200)",
                ExitCode.USAGE,
            )
        return int(part)

    first, last = number(low), number(high)
    if first is None and last is None and not sep:
        raise CommandError("--seq needs a sequence number or a range FROM..TO", ExitCode.USAGE)
    if first is not None and last is not None and first > last:
        raise CommandError(f"--seq {text!r}: FROM is after TO", ExitCode.USAGE)
    return first, last


def live_places(folder: Path) -> dict[str, tuple[str, int]]:
    """key -> (data file name, offset) of the current record of every key of the store in
    ``folder`` (opened read-only: beside a live writer)."""
    places: dict[str, tuple[str, int]] = {}
    with Engine.open(folder, readonly=True) as engine:
        for key in engine.keys(None):
            entry = engine.entry(key)
            if entry is not None:
                places[key] = (data_file_name(entry.file_id), entry.offset)
    return places


def record_line(
    file: str, segment: int | None, offset: int, fields: Any, with_value: bool
) -> dict[str, Any]:
    """The line for one valid frame at ``offset`` of ``file``."""
    record = decode_fields(fields)
    line: dict[str, Any] = {
        "file": file,
        "segment": segment,
        "offset": offset,
        "seq": record.seq,
        "timestamp": iso_timestamp(record.timestamp_us),
    }
    if isinstance(record, SetRecord):
        value = record.value
        line.update(
            op="set",
            key=record.key,
            content_type=public_content_type(record.content_type),
            size=record.value_size,
        )
        if record.streamed is not None:
            # The value is in its value file (checked by logkv verify); a dump never holds
            # a streamed value in memory, so it names the file and the digest instead.
            line.update(
                value_file=f"{VALUES_DIR}/{value_file_name(record.seq)}",
                value_digest=record.streamed.digest.hex(),
            )
        elif with_value:
            line.update(value_fields(value))
    else:
        assert isinstance(record, DeleteRecord)
        line.update(op="delete", key=record.key, content_type=None, size=None)
    return line


def problem_line(kind: str, path: Path, offset: int, end: int, reason: str) -> dict[str, Any]:
    """The line reporting damaged bytes ``[offset, end)`` of ``path``."""
    return {"error": kind, "path": str(path), "offset": offset, "end": end, "reason": reason}


class _Reader:
    """Turns data files into lines; follows the hash chain and the sequence numbers."""

    def __init__(
        self,
        with_values: bool,
        folder: Path,
        given: Path | None = None,
        only: DumpFilter | None = None,
    ) -> None:
        self.with_values = with_values
        #: Which record lines to keep (None: all), and where the live records are (--live).
        self.only = only
        self.live = live_places(folder) if only is not None and only.live else None
        self.folder = folder
        #: The file named on the command line, if one was: the only file read through a link.
        self.given = given
        self.last_seq = 0
        #: The hash chain the next log frame must follow; unknown when the dump starts mid-log
        #: or right after damaged bytes, then the next frame is the anchor.
        self.chain = ChainCheck()
        #: How far the log was synced at the last clean close: no torn tail before it.
        self.synced = read_synced_mark(folder)
        self._problems: list[dict[str, Any]] = []  # found by the scan, not yet dumped

    def _line(
        self, label: str, number: int | None, offset: int, fields: Any
    ) -> dict[str, Any] | None:
        """The line of a valid frame, or None when the filter leaves it out."""
        only = self.only
        if only is None:
            return record_line(label, number, offset, fields, self.with_values)
        record = decode_fields(fields)
        if not only.keeps(record):
            return None
        if self.live is not None and self.live.get(record.key) != (label, offset):
            return None
        return record_line(label, number, offset, fields, self.with_values)

    def _label(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.folder))
        except ValueError:
            return str(path)

    def _damaged(self, damage: Damage) -> None:
        """The reporter of the scans: a problem line, and the chain is anchored anew."""
        kind = "torn_tail" if damage.torn else "corruption"
        line = problem_line(kind, damage.path, damage.start, damage.end, damage.reason)
        self._problems.append(line)
        self.chain.expected = None  # what the dropped bytes held is unknown: re-anchor

    def _reported(self) -> list[dict[str, Any]]:
        """The problem lines the scan found since the last call."""
        found, self._problems = self._problems, []
        return found

    def _scan(self, path: Path, number: int | None, is_last: bool) -> SegmentReader:
        # A dump reads on past a bad header: the frames may be intact. It reads a file named
        # on its command line even through a link (the user chose it), and never follows a
        # link inside a store folder, as every other reader.
        return SegmentReader(
            path,
            number,
            is_last=is_last,
            synced=self.synced,
            report=self._damaged,
            read_past_bad_header=True,
            opener=_open if path == self.given else open_for_reading,
        )

    def snapshot(self, path: Path, covers: int) -> Iterator[dict[str, Any]]:
        """Every line for snapshot ``path``; afterwards the chain continues from its meta."""
        try:
            info, _ = load_snapshot(path, covers)
        except CorruptionError as exc:
            yield problem_line("corruption", path, exc.offset, -1, exc.reason)
            return
        label = self._label(path)
        end = SEGMENT_HEADER_SIZE + info.record_bytes  # the frames, back to back, then the hint
        with self._scan(path, covers, is_last=False) as reader:
            for offset, _, fields in reader.frames(SEGMENT_HEADER_SIZE, end, batches=False):
                if self._problems:
                    yield from self._reported()
                line = self._line(label, None, offset, fields)
                if line is not None:
                    yield line
        yield from self._reported()
        self.chain.expected, self.last_seq = info.chain, info.last_seq

    def segment(self, path: Path, number: int | None, is_last: bool) -> Iterator[dict[str, Any]]:
        """Every line for segment ``path`` (``number`` None: do not check the header's number)."""
        label = self._label(path)
        with self._scan(path, number, is_last) as reader:
            for offset, length, fields in reader.frames():
                if self._problems:
                    yield from self._reported()
                if self.chain.follows(reader.buf, offset, length) is False:
                    yield problem_line(
                        "chain_break",
                        path,
                        offset,
                        offset + length,
                        "hash chain broken: this record does not follow the one before it "
                        "(a record was changed, removed or reordered)",
                    )
                seq = fields[0]
                if seq <= self.last_seq:
                    reason = out_of_order(seq, self.last_seq)
                    yield problem_line("corruption", path, offset, offset + length, reason)
                self.last_seq = seq
                line = self._line(label, reader.number, offset, fields)
                if line is not None:
                    yield line
        yield from self._reported()


def _open(path: Path) -> BinaryIO:
    return open(path, "rb")


@dataclass(frozen=True)
class Plan:
    """What to dump, in order: an optional snapshot, then segments (number, path)."""

    snapshot: tuple[int, Path] | None
    segments: list[tuple[int | None, Path]]
    #: Damaged snapshots skipped on the way (newer than ``snapshot``), as problem lines.
    problems: list[dict[str, Any]]
    #: What the newest intact snapshot covers (a history dump: segments up to it may be gone).
    covered: int = 0


def plan(target: Path, history: bool) -> Plan:
    """Choose the files to dump for ``target``: a store folder or one data file.

    A folder is dumped as an open reads it: the newest snapshot that loads, then the segments
    after it (archived ones fill in behind a damaged newer snapshot). With ``history``, the
    archived and current segments are dumped instead, from the first record ever written
    (as far as the archive reaches) and no snapshot.
    """
    if not target.is_dir():
        match = _LEADING_NUMBER.match(target.name)
        number = int(match.group(1)) if match else None
        if match and match.group(2) == SNAPSHOT_SUFFIX and number is not None:
            return Plan((number, target), [], [])
        return Plan(None, [(number, target)], [])
    archive = target / ARCHIVE_DIR
    archived = dict(list_segments(archive)) if archive.is_dir() else {}
    own = dict(list_segments(target))
    problems: list[dict[str, Any]] = []
    for covers, path in reversed(list_snapshots(target)):
        try:
            load_snapshot(path, covers)
        except CorruptionError as exc:
            problems.append(problem_line("corruption", path, exc.offset, -1, exc.reason))
            continue
        if history:
            return Plan(None, sorted({**archived, **own}.items()), problems, covers)
        after = {n: p for n, p in own.items() if n > covers}
        if problems:  # an open falls back to the archive for what the damaged one covered
            for n, p in archived.items():
                if n > covers:
                    after.setdefault(n, p)
        return Plan((covers, path), sorted(after.items()), problems)
    merged = dict(own)
    if problems or history:
        merged = {**archived, **own}
    return Plan(None, sorted(merged.items()), problems)


class StoreDump:
    """Iterate to get the lines of ``target``; :attr:`status` says how the dump ended.

    A file that cannot be read is reported as an ``unreadable`` line (``retired`` when a live
    writer's compaction removed it while the dump ran) and the dump goes on with the next file.
    """

    def __init__(
        self,
        target: Path,
        with_values: bool = False,
        history: bool = False,
        only: DumpFilter | None = None,
    ) -> None:
        self.target = target
        self.with_values = with_values
        self.history = history
        self.only = only
        self.damaged = False
        self.unreadable = False
        self.changed = False

    @property
    def status(self) -> DumpStatus:
        """DAMAGED when corruption or a chain break was met, else UNREADABLE when some file
        could not be read, else CHANGED when a file was retired meanwhile, else OK."""
        if self.damaged:
            return DumpStatus.DAMAGED
        if self.unreadable:
            return DumpStatus.UNREADABLE
        return DumpStatus.CHANGED if self.changed else DumpStatus.OK

    def _note(self, line: dict[str, Any]) -> dict[str, Any]:
        kind = line.get("error")
        if kind in DAMAGE:
            self.damaged = True
        elif kind == "unreadable":
            self.unreadable = True
        elif kind == "retired":
            self.changed = True
        return line

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for line in self._lines():
            yield self._note(line)

    def _lines(self) -> Iterator[dict[str, Any]]:
        target = self.target
        try:
            chosen = plan(target, self.history)
        except OSError as exc:
            yield _unreadable(target, exc)
            return
        given = None if target.is_dir() else target
        reader = _Reader(
            self.with_values, target if given is None else target.parent, given, self.only
        )
        yield from chosen.problems
        expected: int | None = None
        if chosen.snapshot is not None:
            covers, path = chosen.snapshot
            try:
                yield from reader.snapshot(path, covers)
            except (OSError, UnsafeStoreError) as exc:  # e.g. retired by a compaction since
                yield _unreadable(path, exc)
            expected = covers + 1
        elif chosen.segments:
            first = chosen.segments[0][0]
            # The log of a store starts at segment 1 (before a history dump's first segment,
            # compaction may have deleted some: see the gap below); a file is alone.
            expected = 1 if target.is_dir() else first
            if first == 1:
                reader.chain.expected = GENESIS_CHAIN  # the first record follows the genesis value
        for i, (number, path) in enumerate(chosen.segments):
            if expected is not None and number is not None and number != expected:
                missing = path.with_name(f"{expected:08d}{SEGMENT_SUFFIX}")
                if self.history and number - 1 <= chosen.covered:
                    # A compaction (retention delete) removed them; its snapshot holds their
                    # state: a gap in the history, not damage.
                    reason = f"segments {expected}..{number - 1} are not in the archive"
                    yield problem_line("history_gap", missing, 0, 0, reason)
                else:
                    reason = f"segment {expected} is missing"
                    yield problem_line("corruption", missing, 0, 0, reason)
                reader.chain.expected = None
            expected = None if number is None else number + 1
            try:
                yield from reader.segment(path, number, is_last=i == len(chosen.segments) - 1)
            except (OSError, UnsafeStoreError) as exc:  # e.g. retired by a compaction since
                yield _unreadable(path, exc)
                reader.chain.expected = None  # what the file held is unknown: re-anchor
        if target.is_dir():
            listed = [(n, p) for n, p in chosen.segments if n is not None]
            gap = missing_end(target, listed, reader.synced)
            if gap is not None:
                yield problem_line("corruption", gap.path, gap.offset, 0, gap.reason)


def _unreadable(path: Path, exc: OSError | UnsafeStoreError) -> dict[str, Any]:
    """The line for a file that could not be read: ``retired`` when it vanished (a live
    writer's compaction retired it after the dump listed it), else ``unreadable`` (a symbolic
    link inside a store folder among them: never followed)."""
    kind = "retired" if isinstance(exc, FileNotFoundError) else "unreadable"
    return problem_line(kind, path, 0, 0, str(exc))
