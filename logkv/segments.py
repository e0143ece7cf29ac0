"""Segment files: the appending writer and the positioned readers.

Only the writer ever changes a segment, and only at its end. Every append is one ``pwrite`` at
the known end offset, so a write that fails half-way leaves bytes *after* the end, which the
writer cuts off (``ftruncate``) before it reports the error; if even that fails it cuts them off
before the next append.
"""

from __future__ import annotations

import os
from pathlib import Path

from .format import encode_segment_header
from .fsutil import fsync_dir, write_all
from .layout import segment_name


class SegmentWriter:
    """Appends frames to the active segment, rotating to a new segment past ``segment_size``."""

    def __init__(
        self, folder: Path, number: int, end: int, segment_size: int, sync_on_rotate: bool
    ) -> None:
        self.folder = folder
        self.number = number
        self.segment_size = segment_size
        self.sync_on_rotate = sync_on_rotate
        self._fd = os.open(folder / segment_name(number), os.O_RDWR | os.O_CREAT, 0o644)
        self.end = end
        self._dirty_tail = False
        if end == 0:
            self._write_header()

    def _write_header(self) -> None:
        os.ftruncate(self._fd, 0)
        write_all(self._fd, encode_segment_header(self.number), 0)
        self.end = len(encode_segment_header(self.number))
        if self.sync_on_rotate:
            os.fsync(self._fd)
            fsync_dir(self.folder)

    def append(self, frame: bytes) -> tuple[int, int]:
        """Write ``frame`` at the end of the log; return ``(segment number, offset)``.

        On an I/O error the log is left exactly as before the call and the error is raised.
        """
        if self._dirty_tail:
            os.ftruncate(self._fd, self.end)
            self._dirty_tail = False
        if self.end >= self.segment_size:
            self.rotate()
        offset = self.end
        try:
            if os.pwrite(self._fd, frame, offset) != len(frame):
                write_all(self._fd, frame, offset)  # finish a short write (rare)
        except BaseException:
            try:
                os.ftruncate(self._fd, offset)
            except OSError:
                self._dirty_tail = True
            raise
        self.end = offset + len(frame)
        return self.number, offset

    def rotate(self) -> None:
        """Close the active segment (made durable first when syncing) and start the next one."""
        if self.sync_on_rotate:
            os.fdatasync(self._fd)
        os.close(self._fd)
        self.number += 1
        self._fd = os.open(
            self.folder / segment_name(self.number), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644
        )
        self._write_header()

    def sync(self) -> None:
        """Make every appended byte durable (``fdatasync``)."""
        os.fdatasync(self._fd)

    def close(self) -> None:
        """Close the segment file (without syncing)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class SegmentReaders:
    """Read-only descriptors of a store's segments, for positioned reads of records."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._fds: dict[int, int] = {}

    def pread(self, number: int, size: int, offset: int) -> bytes:
        """``size`` bytes at ``offset`` of segment ``number`` (fewer only at end of file)."""
        fd = self._fds.get(number)
        if fd is None:
            fd = self._fds[number] = os.open(self.folder / segment_name(number), os.O_RDONLY)
        data = os.pread(fd, size, offset)
        while len(data) < size:  # pread may return less for huge sizes; finish the read
            more = os.pread(fd, size - len(data), offset + len(data))
            if not more:
                break
            data += more
        return data

    def close(self) -> None:
        """Close every descriptor."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
