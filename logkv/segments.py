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
import resource
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from .errors import SyncFailedError
from .files import file_set, source_of
from .format import encode_segment_header
from .fsutil import fsync_dir, open_file, write_all
from .layout import data_file_name, segment_name

#: A file is mapped again for reading once reads reach this far past its map (the active
#: segment grows as it is appended to; until then its newest records are read with ``pread``).
REMAP_STEP = 1 << 20

#: Descriptors a store's readers keep open at most, whatever the number of its data files. A
#: memory map holds a descriptor of its own and counts as one; the least recently read files are
#: let go first. (A read of a file that was let go opens it again.)
MAX_OPEN_DESCRIPTORS = 32
#: The most files a read-only store holds open to keep its view readable (see ``hold_limit``).
MAX_HELD_FILES = 128


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
        size = len(frame)
        try:
            if os.pwrite(self._fd, frame, offset) != size:
                write_all(self._fd, frame, offset)  # finish a short write (rare)
        except BaseException:
            self._cut_back(offset)
            raise
        self.end = offset + size
        return self.number, offset

    def append_pieces(self, pieces: Sequence[bytes]) -> tuple[int, int]:
        """Write the frame made of ``pieces`` (in order) at the end of the log, with one
        ``pwritev``: a large value is written from where it is, never copied into a frame
        first. Returns ``(segment number, offset)``; an I/O error leaves the log as
        :meth:`append` does."""
        offset = self.end
        if self._sync_error is not None or self._dirty_tail or offset >= self.segment_size:
            offset = self._prepare()
        size = sum(map(len, pieces))
        try:
            written = _pwritev(self._fd, pieces, offset)
            if written != size:  # finish a short write (rare)
                write_all(self._fd, memoryview(b"".join(pieces))[written:], offset + written)
        except BaseException:
            self._cut_back(offset)
            raise
        self.end = offset + size
        return self.number, offset

    def _cut_back(self, offset: int) -> None:
        """After a failed append: cut off what it wrote past ``offset`` (else before the next)."""
        try:
            os.ftruncate(self._fd, offset)
        except OSError:
            self._dirty_tail = True

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
        could succeed without them, so every later append and sync raises
        :class:`SyncFailedError` (a :class:`StoreFailedError` and an ``OSError``).
        """
        self._check_synced()
        try:
            os.fdatasync(self._fd)
        except OSError as exc:
            self._sync_error = exc
            raise

    def _check_synced(self) -> None:
        if self._sync_error is not None:
            raise SyncFailedError(
                self._sync_error.errno,
                f"an earlier fdatasync of segment {self.number} failed "
                f"({self._sync_error.strerror}); reopen the store",
            )

    def close(self) -> None:
        """Close the segment file (without syncing)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _Descriptor:
    """A read-only file descriptor, closed when the last reference to it goes: a thread that
    reads through it keeps it open whatever the readers' cache does meanwhile (a bare number
    could be closed, even reused for another file, under its ``pread``)."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __del__(self, close: Callable[[int], None] = os.close) -> None:
        close(self.fd)  # ``close`` bound early: this may run at interpreter exit


class _File(NamedTuple):
    """An open data file: a read-only map of it (None: empty, or not mappable) and its
    descriptor (None once mapped, until a read goes past the map: a map holds a descriptor of
    its own, so a sealed file costs one descriptor, and only a growing one two)."""

    mapped: mmap.mmap | None
    descriptor: _Descriptor | None

    @property
    def descriptors(self) -> int:
        """The descriptors this file holds (its map's included)."""
        return (self.mapped is not None) + (self.descriptor is not None)


def _replaced(file_id: int, covers: int) -> bool:
    """Whether a snapshot covering segments ``1..covers`` replaced data file ``file_id`` (a
    segment it covers, or an older snapshot)."""
    return -covers < file_id <= covers


class SegmentReaders:
    """Read-only access to a store's data files, for reads of single records.

    Files are named by file id (see :func:`~logkv.layout.data_file_name`: segments > 0,
    snapshots < 0). A file is read through a read-only memory map of what it held when it was
    mapped, so that a read costs a copy rather than a system call; the part of the active
    segment appended since it was mapped is read with ``pread`` and mapped again every
    :data:`REMAP_STEP` bytes. Files never shrink below a mapped size (only bytes past the last
    record are ever cut off), so a map never reaches past the end of its file.

    At most :data:`MAX_OPEN_DESCRIPTORS` descriptors (maps included) stay open, whatever the
    number of files: the least recently read files are let go first. A file is opened when a
    read needs it; one that has vanished raises ``FileNotFoundError`` (the engine then looks the
    key up again). Maps and descriptors are never closed under a read: a file that is let go
    is only dropped, and a read still using it keeps it alive until it is done.

    A read-only store also holds one descriptor of each file of its current view, while they
    number at most :func:`hold_limit` (:meth:`hold`), so that its view survives a writer's
    compaction until the next refresh.

    After a compaction, :meth:`retire` lets go of the files its snapshot replaced, so none of
    them is held once compaction returns; a read that looked its entry up before the switch
    and opens one of them afterwards uses it for that read only.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        #: The file set of a folder that is not local (:mod:`logkv.files`): read by ranges.
        self._source = file_set(folder) if source_of(folder) is not None else None
        self._files: OrderedDict[int, _File] = OrderedDict()  # least recently read first
        self._descriptors = 0  # held by the files in _files
        self._paths: dict[int, Path] = {}  # files read where they are, not in the folder
        self._covers = 0  # files replaced by a snapshot covering 1.._covers are never kept
        #: Read-only stores: a descriptor of each file of the current view (see :meth:`hold`).
        self._held: dict[int, _Descriptor] = {}
        self._hold_limit = hold_limit()
        self._closed = False
        # Guards every change to the fields above. A read of a file in _files takes no lock.
        self._lock = threading.Lock()

    def locate(self, paths: dict[int, Path]) -> None:
        """Read the files ``paths`` names where they are (archived segments), not in the store
        folder; this replaces what an earlier call said."""
        with self._lock:
            self._paths = dict(paths)

    def retire(self, covers: int) -> list[_File]:
        """Let go of the files a snapshot covering segments ``1..covers`` replaced, and keep
        none of them open from now on.

        Returns the files let go, for the caller to drop once it released its own lock: closing
        the last descriptor of a deleted file frees its blocks, milliseconds per segment.
        """
        with self._lock:
            self._covers = covers
            for held in [i for i in self._held if _replaced(i, covers)]:
                del self._held[held]
            replaced = [i for i in self._files if _replaced(i, covers)]
            return [self._forget(i) for i in replaced]

    def hold(self, file_ids: list[int]) -> bool:
        """Hold a descriptor of each of the files ``file_ids`` from now on, if all of them fit
        within :func:`hold_limit`; return whether they did (else nothing more is held).

        A read-only store holds the files of its view this way, so that they stay readable
        when a writer's compaction deletes them and its view stays the same until the next
        refresh. A store with more files opens them as reads need them, and reloads when one of
        them was retired. ``FileNotFoundError`` when one is gone already.
        """
        if len(file_ids) > self._hold_limit:
            return False
        if self._source is not None:
            return True  # a file set's files stay as they are
        with self._lock:
            for file_id in file_ids:
                if file_id not in self._held and not self._closed:
                    self._held[file_id] = self._open_descriptor(file_id)
        return True

    def pread(self, number: int, size: int, offset: int) -> bytes:
        """``size`` bytes at ``offset`` of data file ``number`` (fewer only at end of file)."""
        buf, pos = self.view(number, size, offset)
        if type(buf) is bytes and pos == 0:
            return buf  # what pread returned: exactly these bytes
        return buf[pos : pos + size]

    def view(self, number: int, size: int, offset: int) -> tuple[mmap.mmap | bytes, int]:
        """Where the ``size`` bytes at ``offset`` of data file ``number`` can be read without a
        copy: ``(buffer, position)``, the file's map and ``offset``, or the bytes a ``pread``
        returned and 0 (fewer than ``size`` only at end of file).

        ``FileNotFoundError`` when the file is not there (a compaction retired it).
        """
        if self._source is not None:
            return self._source.read(data_file_name(number), offset, size), 0
        files = self._files
        try:
            found = files[number]
            files.move_to_end(number)  # the most recently read
        except KeyError:
            found = self._open(number)
        view = found.mapped
        if view is not None and offset + size <= len(view):
            return view, offset
        return self._read_past_map(number, found, size, offset)

    def read_apart(self, number: int, offset: int, head: int, size: int) -> tuple[bytes, bytes]:
        """The ``head`` bytes at ``offset`` of data file ``number`` and the ``size`` bytes that
        follow them, each in a ``bytes`` object of its own (shorter only at end of file).

        The read of a large value: ``pread`` copies it once, in the kernel, straight into the
        object returned, and touches no memory map (whose pages fault in one by one on a first
        touch). ``FileNotFoundError`` when the file is not there (a compaction retired it)."""
        if self._source is not None:
            data = self._source.read(data_file_name(number), offset, head + size)
            return data[:head], data[head:]
        fd = self._descriptor(number).fd
        return _pread(fd, head, offset), _pread(fd, size, offset + head)

    def _descriptor(self, number: int) -> _Descriptor:
        """A descriptor of data file ``number``, kept with its map (if any) from now on."""
        found = self._files.get(number)
        if found is not None and found.descriptor is not None:
            self._files.move_to_end(number)
            return found.descriptor
        with self._lock:
            found = self._files.get(number)
            if found is not None and found.descriptor is not None:
                return found.descriptor
            descriptor = self._open_descriptor(number)
            self._keep(number, _File(None if found is None else found.mapped, descriptor))
            return descriptor

    def _open(self, number: int) -> _File:
        with self._lock:  # two threads must not both open (and keep) the same file
            found = self._files.get(number)
            if found is None:
                descriptor = self._open_descriptor(number)
                view = _map(descriptor.fd)
                found = _File(view, None) if view is not None else _File(None, descriptor)
                self._keep(number, found)
            return found

    def _read_past_map(
        self, number: int, found: _File, size: int, offset: int
    ) -> tuple[mmap.mmap | bytes, int]:
        """A read the file's map does not cover: the file grew since it was mapped. Read it
        with ``pread``, and map it again once reads reach :data:`REMAP_STEP` past the map."""
        view, descriptor = found
        if descriptor is None or view is None or offset + size > len(view) + REMAP_STEP:
            with self._lock:
                if descriptor is None:
                    descriptor = self._open_descriptor(number)
                if view is None or offset + size > len(view) + REMAP_STEP:
                    remapped = _map(descriptor.fd)  # the old map goes once no read holds it
                    view = remapped if remapped is not None else view
                self._keep(number, _File(view, descriptor))
            if view is not None and offset + size <= len(view):
                return view, offset
        return _pread(descriptor.fd, size, offset), 0

    def _open_descriptor(self, number: int) -> _Descriptor:
        held = self._held.get(number)
        if held is not None:
            return held  # still readable if a compaction deleted the file
        path = self._paths.get(number) or self.folder / data_file_name(number)
        return _Descriptor(open_file(path, os.O_RDONLY))  # never through a link

    def _keep(self, number: int, found: _File) -> None:
        """With the lock held: keep ``found`` open as the most recently read file, and let go
        of the least recently read ones past the bound. A file a snapshot replaced (opened by a
        read that raced the compaction), or any file once closed, is not kept."""
        if self._closed or _replaced(number, self._covers):
            return
        if number in self._files:
            self._forget(number)
        self._files[number] = found
        self._descriptors += found.descriptors
        while self._descriptors > MAX_OPEN_DESCRIPTORS and len(self._files) > 1:
            self._forget(next(iter(self._files)))

    def _forget(self, number: int) -> _File:
        """With the lock held: stop keeping file ``number``; return it."""
        found = self._files.pop(number)
        self._descriptors -= found.descriptors
        return found

    def close(self) -> None:
        """Let go of every file (reads still running finish first) and keep none from now on."""
        with self._lock:
            self._closed = True
            self._files.clear()
            self._held.clear()
            self._descriptors = 0


def hold_limit() -> int:
    """How many files a read-only store may hold open for its view: an eighth of the process's
    descriptor limit, at least :data:`MAX_OPEN_DESCRIPTORS` and at most :data:`MAX_HELD_FILES`
    (128 at the usual limit of 1024: 8 GiB of log in segments of the default size)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_HELD_FILES
    return min(MAX_HELD_FILES, max(MAX_OPEN_DESCRIPTORS, soft // 8))


def _map(fd: int) -> mmap.mmap | None:
    """A read-only map of the file ``fd`` as it is now (None: it is empty or cannot be mapped)."""
    try:
        size = os.fstat(fd).st_size
        return mmap.mmap(fd, size, access=mmap.ACCESS_READ) if size else None
    except (OSError, ValueError):  # a file system without mmap: keep using pread
        return None


def _pwritev(fd: int, pieces: Sequence[bytes], offset: int) -> int:
    """Write ``pieces`` at ``offset`` of ``fd`` with one system call where the platform has
    ``pwritev``; return the bytes written (fewer than asked only on a short write)."""
    if _HAS_PWRITEV:
        return os.pwritev(fd, pieces, offset)
    data = b"".join(pieces)  # pragma: no cover - platforms without pwritev
    return os.pwrite(fd, data, offset)  # pragma: no cover


_HAS_PWRITEV = hasattr(os, "pwritev")


def _pread(fd: int, size: int, offset: int) -> bytes:
    """``size`` bytes at ``offset`` of ``fd`` (fewer only at end of file)."""
    data = os.pread(fd, size, offset)
    while len(data) < size:  # pread may return less for huge sizes; finish the read
        more = os.pread(fd, size - len(data), offset + len(data))
        if not more:
            break
        data += more
    return data
