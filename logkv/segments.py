"""Segment files: the appending writer and the positioned readers.

Only the writer ever changes a segment, and only at its end. Every append is one ``pwrite`` at
the known end offset, so a write that fails half-way leaves bytes *after* the end, which the
writer cuts off (``ftruncate``) before it reports the error; if even that fails it cuts them off
before the next append. Rotation switches to the new segment only once its header is written, so
a rotation that fails (disk full) is simply retried by the next append.
"""

from __future__ import annotations

import mmap
import os
import threading
from pathlib import Path

from .format import encode_segment_header
from .fsutil import fsync_dir, open_file, write_all
from .layout import data_file_name, segment_name

#: A file is mapped again for reading once reads reach this far past its map (the active
#: segment grows as it is appended to; until then its newest records are read with ``pread``).
REMAP_STEP = 1 << 20


class SegmentWriter:
    """Appends frames to the active segment, rotating to a new segment past ``segment_size``."""

    def __init__(
        self, folder: Path, number: int, end: int, segment_size: int, sync_on_rotate: bool
    ) -> None:
        self.folder = folder
        self.number = number
        self.segment_size = segment_size
        self.sync_on_rotate = sync_on_rotate
        self._fd = open_file(folder / segment_name(number), os.O_RDWR | os.O_CREAT)
        self.end = end
        self._dirty_tail = False
        self._sync_error: OSError | None = None
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
        offset = self.end
        if self._sync_error is not None or self._dirty_tail or offset >= self.segment_size:
            offset = self._prepare()
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

    def _prepare(self) -> int:
        """Before an append: refuse after a failed sync, cut off what a failed append left,
        rotate a full segment; return where the append goes."""
        self._check_synced()
        if self._dirty_tail:
            os.ftruncate(self._fd, self.end)
            self._dirty_tail = False
        if self.end >= self.segment_size:
            self.rotate()
        return self.end

    def rotate(self) -> None:
        """Close the active segment (made durable first when syncing) and start the next one.

        The active segment stays in place until the new one has its header; if writing the
        header fails, the error is raised and the next call starts the new segment over.
        """
        if self.sync_on_rotate:
            self.sync()
        number = self.number + 1
        header = encode_segment_header(number)
        fd = open_file(self.folder / segment_name(number), os.O_RDWR | os.O_CREAT | os.O_TRUNC)
        try:
            write_all(fd, header, 0)
            if self.sync_on_rotate:
                os.fsync(fd)
                fsync_dir(self.folder)
        except BaseException:
            os.close(fd)
            raise
        os.close(self._fd)
        self._fd, self.number, self.end = fd, number, len(header)

    def sync(self) -> None:
        """Make every appended byte durable (``fdatasync``).

        A failed sync is final: the OS may have dropped the unsynced pages, and a later sync
        could succeed without them, so every later append and sync raises the error again.
        """
        self._check_synced()
        try:
            os.fdatasync(self._fd)
        except OSError as exc:
            self._sync_error = exc
            raise

    def _check_synced(self) -> None:
        if self._sync_error is not None:
            raise OSError(
                self._sync_error.errno,
                f"an earlier fdatasync of segment {self.number} failed "
                f"({self._sync_error.strerror}); reopen the store",
            )

    def close(self) -> None:
        """Close the segment file (without syncing)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class SegmentReaders:
    """Read-only access to a store's data files, for reads of single records.

    Files are named by file id (see :func:`~logkv.layout.data_file_name`: segments > 0,
    snapshots < 0). A file is read through a read-only memory map of what it held when it was
    mapped, so that a read costs a copy rather than a system call; the part of the active
    segment appended since it was mapped is read with ``pread`` and mapped again every
    :data:`REMAP_STEP` bytes. Files never shrink below a mapped size (only bytes past the last
    record are ever cut off), so a map never reaches past the end of its file.

    Descriptors and maps of files that compaction retired are kept until the next compaction
    (:meth:`retire`), so a read that looked its entry up just before the switch still finds
    the bytes. A map that is replaced or retired is dropped, not closed: a thread still copying
    from it keeps it alive until it is done.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._fds: dict[int, int] = {}
        self._maps: dict[int, mmap.mmap] = {}
        self._retired: list[int] = []
        self._retired_maps: list[mmap.mmap] = []
        self._opening = threading.Lock()

    def open(self, file_id: int, path: Path | None = None) -> None:
        """Open the descriptor of ``file_id`` now (a reader keeps files alive this way);
        ``path`` is where the file is when not in the store folder (an archived segment)."""
        if file_id not in self._fds:
            where = path if path is not None else self.folder / data_file_name(file_id)
            self._fds[file_id] = os.open(where, os.O_RDONLY)

    def file_ids(self) -> list[int]:
        """The ids of the files with an open descriptor."""
        return list(self._fds)

    def retire(self, file_ids: list[int], closing: list[int] | None = None) -> None:
        """Close the descriptors retired last time; set these aside to close next time.

        With ``closing``, the descriptors retired last time are appended to it instead, for the
        caller to close once it released the store's lock: closing the last descriptor of a
        deleted file frees its blocks, milliseconds per segment.
        """
        if closing is None:
            for fd in self._retired:
                os.close(fd)
        else:
            closing.extend(self._retired)
        self._retired = [self._fds.pop(i) for i in file_ids if i in self._fds]
        self._retired_maps = [self._maps.pop(i) for i in file_ids if i in self._maps]

    def pread(self, number: int, size: int, offset: int) -> bytes:
        """``size`` bytes at ``offset`` of data file ``number`` (fewer only at end of file)."""
        buf, pos = self.view(number, size, offset)
        if type(buf) is bytes and pos == 0:
            return buf  # what pread returned: exactly these bytes
        return buf[pos : pos + size]

    def view(self, number: int, size: int, offset: int) -> tuple[mmap.mmap | bytes, int]:
        """Where the ``size`` bytes at ``offset`` of data file ``number`` can be read without a
        copy: ``(buffer, position)``, the file's map and ``offset``, or the bytes a ``pread``
        returned and 0 (fewer than ``size`` only at end of file)."""
        view = self._maps.get(number)
        if view is not None and offset + size <= len(view):
            return view, offset
        return self._read_unmapped(number, size, offset)

    def _read_unmapped(self, number: int, size: int, offset: int) -> tuple[mmap.mmap | bytes, int]:
        fd = self._fds.get(number)
        if fd is None:
            with self._opening:  # two threads must not both open (and leak) the same file
                fd = self._fds.get(number)
                if fd is None:
                    path = self.folder / data_file_name(number)
                    fd = self._fds[number] = os.open(path, os.O_RDONLY)
        view = self._maps.get(number)
        if view is None or offset + size > len(view) + REMAP_STEP:
            view = self._map(number, fd)
            if view is not None and offset + size <= len(view):
                return view, offset
        data = os.pread(fd, size, offset)
        while len(data) < size:  # pread may return less for huge sizes; finish the read
            more = os.pread(fd, size - len(data), offset + len(data))
            if not more:
                break
            data += more
        return data, 0

    def _map(self, number: int, fd: int) -> mmap.mmap | None:
        """Map file ``number`` as it is now (None: it is empty or cannot be mapped)."""
        try:
            size = os.fstat(fd).st_size
            view = mmap.mmap(fd, size, access=mmap.ACCESS_READ) if size else None
        except (OSError, ValueError):  # a file system without mmap: keep using pread
            return None
        if view is not None:
            self._maps[number] = view  # the map it replaces is freed once no reader holds it
        return view

    def close(self) -> None:
        """Close every descriptor and drop every map."""
        for fd in [*self._fds.values(), *self._retired]:
            os.close(fd)
        self._fds.clear()
        self._retired.clear()
        self._maps.clear()
        self._retired_maps.clear()
