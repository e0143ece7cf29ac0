"""Salvage repair: rewrite a damaged segment with only its valid frames.

The damaged original is kept beside the store as ``NNNNNNNN.seg.damaged`` for inspection; the
rewritten segment replaces it atomically.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

from .format import (
    SEGMENT_HEADER_SIZE,
    BadFrame,
    encode_segment_header,
    find_next_frame,
    read_frame,
)
from .fsutil import fsync_dir, open_for_reading, temp_file, write_all
from .layout import DAMAGED_SUFFIX


def rewrite_valid_frames(path: Path, number: int) -> int:
    """Replace segment ``path`` by a copy holding only its valid frames; return frames kept.

    On any failure (a full disk) the segment is unchanged and the temp copy is removed."""
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
    """Write a segment header and every valid frame of segment ``path`` to ``fd``; return
    how many frames were copied."""
    kept = 0
    out = encode_segment_header(number)
    write_all(fd, out, 0)
    end = len(out)
    with open_for_reading(path) as file:
        size = os.fstat(file.fileno()).st_size
        if size <= SEGMENT_HEADER_SIZE:
            return kept
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            pos: int | None = SEGMENT_HEADER_SIZE
            while pos is not None and pos < size:
                try:
                    length, _ = read_frame(buf, pos, size)
                except BadFrame:
                    pos = find_next_frame(buf, pos, size)
                    continue
                write_all(fd, buf[pos : pos + length], end)
                end += length
                kept += 1
                pos += length
    return kept
