"""Salvage repair: rewrite a damaged segment with only its valid frames.

The damaged original is kept beside the store as ``NNNNNNNN.seg.damaged`` for inspection; the
rewritten segment replaces it atomically.
"""

from __future__ import annotations

import os
from pathlib import Path

from .format import (
    FORMAT_VERSION,
    READABLE_VERSIONS,
    SEGMENT_HEADER_SIZE,
    encode_segment_header,
    stored_segment_version,
)
from .fsutil import fsync_dir, temp_file, write_all
from .layout import DAMAGED_SUFFIX, list_segments
from .scan import Damage, SegmentReader


def rewrite_valid_frames(path: Path, number: int) -> int:
    """Replace segment ``path`` by a copy holding only its valid frames; return frames kept.

    The frames kept are exactly those a salvage open reads (the same scan), including those
    after an invalid segment header. On any failure (a full disk) the segment is unchanged and
    the temp copy is removed."""
    with temp_file(path) as (fd, temp):
        kept = _copy_valid_frames(path, number, fd)
        os.fsync(fd)
        damaged = path.with_name(path.name + DAMAGED_SUFFIX)
        damaged.unlink(missing_ok=True)
        os.link(path, damaged)  # keep the original; the segment itself is never missing
        os.replace(temp, path)
    fsync_dir(path.parent)
    return kept


def _copy_valid_frames(path: Path, number: int, fd: int) -> int:
    """Write a segment header (of the segment's own version) and every valid frame of segment
    ``path`` to ``fd``; return how many frames were copied."""
    kept = 0
    is_last = number >= max((n for n, _ in list_segments(path.parent)), default=number)
    with SegmentReader(
        path, number, is_last=is_last, synced=None, report=_skip, read_past_bad_header=True
    ) as reader:
        buf = reader.buf
        # The segment keeps its version (its frames are of that version's kind); one whose
        # header is unreadable gets the current version.
        version = stored_segment_version(buf[:SEGMENT_HEADER_SIZE])
        out = encode_segment_header(
            number, version if version in READABLE_VERSIONS else FORMAT_VERSION
        )
        write_all(fd, out, 0)
        end = len(out)
        for offset, length, _ in reader.frames():
            write_all(fd, buf[offset : offset + length], end)
            end += length
            kept += 1
    return kept


def _skip(damage: Damage) -> None:
    """Bad bytes are left out of the copy (the salvage open has reported them)."""
