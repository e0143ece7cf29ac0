"""Dump a logkv store's log records as JSON lines, for humans.

Usage::

    python -m tools.logdump STORE [--values]

``STORE`` is a store folder (every segment, in replay order) or one segment file (for example a
``00000003.seg.damaged`` copy kept by salvage). One JSON object per line on stdout:

* a record: ``segment``, ``offset``, ``seq``, ``timestamp`` (ISO 8601, UTC), ``op`` (``set`` or
  ``delete``), ``key``, ``content_type``, ``size`` (bytes of the value; 0 for a stored None, null
  for a delete) and, with ``--values``, ``value`` (UTF-8 text when the bytes decode, else base64;
  ``value_encoding`` says which; null for a stored None);
* a problem: ``{"error": KIND, "path", "offset", "end", "reason"}`` for the bytes
  ``[offset, end)``, where KIND is ``corruption``, ``torn_tail`` (the cut-short end of the last
  segment that a crash mid-append leaves), ``chain_break`` (a record whose hash-chain value
  does not follow the record before it: history was changed, removed or reordered, or salvage
  dropped records there) or ``unreadable`` (the file could not be read). After a corrupt spot
  the dump resumes at the next valid record, as salvage would.

The hash chain is checked from the log's first record (segment 1) on; a dump that starts
elsewhere, or resumes after damaged bytes, takes the next record's chain value on trust.

The dump only reads: it takes no lock, so it works beside a live writer. Exit status: 0 when the
log is intact (a torn tail, which the next writable open cuts off, is reported but is not an
error), 1 when a corrupt spot or a chain break was found, 2 when ``STORE`` cannot be read at all.
"""

from __future__ import annotations

import argparse
import base64
import json
import mmap
import os
import re
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from logkv.format import (
    GENESIS_CHAIN,
    SEGMENT_HEADER,
    SEGMENT_HEADER_SIZE,
    BadFrame,
    DeleteRecord,
    SetRecord,
    chain_of,
    check_segment_header,
    decode_fields,
    find_next_frame,
    iter_frames,
    next_chain,
)
from logkv.layout import list_segments

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LEADING_NUMBER = re.compile(r"^(\d+)\.seg")


def iso_timestamp(timestamp_us: int) -> str:
    """``timestamp_us`` (microseconds since the Unix epoch) as ISO 8601 in UTC."""
    try:
        return (_EPOCH + timedelta(microseconds=timestamp_us)).isoformat()
    except OverflowError:
        return f"out of range ({timestamp_us} us)"


def encode_value(value: bytes) -> tuple[str, str]:
    """``(text, encoding)``: the value as UTF-8 text when it decodes, else as base64."""
    try:
        return value.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(value).decode("ascii"), "base64"


def record_line(number: int, offset: int, fields: Any, with_value: bool) -> dict[str, Any]:
    """The JSON object for one valid frame of segment ``number`` at ``offset``."""
    record = decode_fields(fields)
    line: dict[str, Any] = {
        "segment": number,
        "offset": offset,
        "seq": record.seq,
        "timestamp": iso_timestamp(record.timestamp_us),
    }
    if isinstance(record, SetRecord):
        value = record.value
        line.update(
            op="set",
            key=record.key,
            content_type=record.content_type,
            size=0 if value is None else len(value),
        )
        if with_value:
            if value is None:
                line.update(value=None, value_encoding=None)
            else:
                text, encoding = encode_value(value)
                line.update(value=text, value_encoding=encoding)
    else:
        assert isinstance(record, DeleteRecord)
        line.update(op="delete", key=record.key, content_type=None, size=None)
    return line


def problem_line(kind: str, path: Path, offset: int, end: int, reason: str) -> dict[str, Any]:
    """The JSON object reporting damaged bytes ``[offset, end)`` of ``path``."""
    return {"error": kind, "path": str(path), "offset": offset, "end": end, "reason": reason}


class Dumper:
    """Turns segments into JSON-able lines and remembers whether it met corruption."""

    def __init__(self, with_values: bool) -> None:
        self.with_values = with_values
        self.corrupt = False
        self.last_seq = 0
        #: The chain value the next frame must follow; None when unknown (the dump starts
        #: after segment 1, or right after damaged bytes), then the next frame is the anchor.
        self.chain: bytes | None = None

    def segment(self, path: Path, number: int | None, is_last: bool) -> Iterator[dict[str, Any]]:
        """Every line for segment ``path`` (``number`` None: do not check the header's number)."""
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size == 0:
                kind = "torn_tail" if is_last else "corruption"
                yield self._problem(kind, path, 0, 0, "empty segment (no header)")
                return
            with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                header = buf[:SEGMENT_HEADER_SIZE]
                expected = number if number is not None else _stored_number(header)
                problem = check_segment_header(header, expected)
                if problem is not None:
                    torn = is_last and size < SEGMENT_HEADER_SIZE
                    yield self._problem(
                        "torn_tail" if torn else "corruption", path, 0, size, problem
                    )
                    # Read on past a bad header all the same: the frames may be intact.
                yield from self._frames(path, expected, buf, SEGMENT_HEADER_SIZE, size, is_last)

    def _frames(
        self, path: Path, number: int, buf: Any, pos: int, end: int, is_last: bool
    ) -> Iterator[dict[str, Any]]:
        while pos < end:
            try:
                for offset, length, fields in iter_frames(buf, pos, end):
                    stored = chain_of(buf, offset)
                    if self.chain is not None and stored != next_chain(
                        self.chain, buf, offset, length
                    ):
                        yield self._problem(
                            "chain_break",
                            path,
                            offset,
                            offset + length,
                            "hash chain broken: this record does not follow the one before it "
                            "(a record was changed, removed or reordered)",
                        )
                    self.chain = stored
                    seq = fields[0]
                    if seq <= self.last_seq:
                        yield self._problem(
                            "corruption",
                            path,
                            offset,
                            offset + length,
                            f"sequence number {seq} follows {self.last_seq} (out of order)",
                        )
                    self.last_seq = seq
                    yield record_line(number, offset, fields, self.with_values)
                    pos = offset + length
                return
            except BadFrame as bad:
                reason, at = bad.args[0], bad.args[2]
            following = find_next_frame(buf, at, end)
            stop = end if following is None else following
            kind = "torn_tail" if following is None and is_last else "corruption"
            yield self._problem(kind, path, at, stop, reason)
            self.chain = None  # what the dropped bytes held is unknown: re-anchor
            if following is None:
                return
            pos = following

    def _problem(self, kind: str, path: Path, offset: int, end: int, reason: str) -> dict[str, Any]:
        if kind in ("corruption", "chain_break"):
            self.corrupt = True
        return problem_line(kind, path, offset, end, reason)


def _stored_number(header: bytes) -> int:
    """The segment number a header claims (0 when it is cut short)."""
    if len(header) < SEGMENT_HEADER_SIZE:
        return 0
    number: int = SEGMENT_HEADER.unpack_from(header, 0)[2]
    return number


def segments_of(target: Path) -> list[tuple[int | None, Path]]:
    """What to dump: every segment of a store folder, or the one file given."""
    if target.is_dir():
        return [(number, path) for number, path in list_segments(target)]
    match = _LEADING_NUMBER.match(target.name)
    return [(int(match.group(1)) if match else None, target)]


def dump(target: Path, with_values: bool, out: IO[str]) -> int:
    """Write the JSON lines for ``target`` to ``out``; return the exit status."""
    try:
        segments = segments_of(target)
    except OSError as exc:
        print(json.dumps(problem_line("unreadable", target, 0, 0, str(exc))), file=out)
        return 2
    dumper = Dumper(with_values)
    if segments and segments[0][0] == 1:
        dumper.chain = GENESIS_CHAIN  # the log starts here: its first record follows genesis
    unreadable = False
    for i, (number, path) in enumerate(segments):
        try:
            for line in dumper.segment(path, number, is_last=i == len(segments) - 1):
                out.write(json.dumps(line, ensure_ascii=False) + "\n")
        except OSError as exc:  # for example removed by compaction while we read
            unreadable = True
            out.write(json.dumps(problem_line("unreadable", path, 0, 0, str(exc))) + "\n")
    if dumper.corrupt:
        return 1
    return 2 if unreadable else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.logdump",
        description="Dump a logkv store's records as JSON lines (read-only; works beside a "
        "live writer). Exit status 1 when corrupt data was found.",
    )
    parser.add_argument("store", type=Path, help="a store folder or a single segment file")
    parser.add_argument(
        "--values", action="store_true", help="include values (UTF-8 text, else base64)"
    )
    args = parser.parse_args(argv)
    if not args.store.exists():
        print(f"logdump: {args.store} does not exist", file=sys.stderr)
        return 2
    status = dump(args.store, args.values, sys.stdout)
    if status == 1:
        print(f"logdump: corrupt data found in {args.store} (see the error lines)", file=sys.stderr)
    return status


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # piped into head: stop quietly
        sys.stderr.close()
        sys.exit(0)
