"""File sets: the read-only files of a store folder, wherever they are kept.

Every reader of a store names its files by :class:`~pathlib.Path`. A store folder on disk is
read as it always was (memory maps, ``pread``). A store whose files are somewhere else, its
copy in a bucket say, is given to the same readers as a :class:`SourcePath`: a path under
which a :class:`FileSet` (names, sizes, ``read(name, offset, n)``) serves the folder's files.
A ``SourcePath`` lists, tests and sizes its files through the file set and never reaches the
local file system (``os.fspath`` of it raises ``TypeError``, so a reader that would open it
as a local file fails loudly instead of reading something else); the readers' few byte hooks
(:func:`open_bytes`, :func:`source_of`, :class:`WindowBuffer`) read it by ranges.

One reader, two sources: a file set changes where bytes come from, never how they are read
or checked.
"""

from __future__ import annotations

import mmap
import os
import stat
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path, PosixPath
from typing import Any, ClassVar, Protocol

from .fsutil import open_for_reading, read_file


class FileSet(Protocol):
    """The read-only files of one store folder. A name is a file of the folder, or of one of
    its subfolders as ``SUBFOLDER/NAME`` (the value files, ``values/NNNNNNNN.val``)."""

    def names(self) -> list[str]:
        """The file names, in no particular order."""
        ...

    def size(self, name: str) -> int:
        """The size of file ``name`` (``FileNotFoundError`` when there is none)."""
        ...

    def read(self, name: str, offset: int, n: int) -> bytes:
        """``n`` bytes at ``offset`` of file ``name`` (fewer only at its end)."""
        ...


class LocalFiles:
    """The files of a folder on disk, never read through a symbolic link."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def names(self) -> list[str]:
        """The regular files of the folder."""
        with os.scandir(self.folder) as entries:
            return [e.name for e in entries if e.is_file(follow_symlinks=False)]

    def size(self, name: str) -> int:
        """The size of file ``name``."""
        return os.lstat(self.folder / name).st_size

    def read(self, name: str, offset: int, n: int) -> bytes:
        """``n`` bytes at ``offset`` of file ``name`` (fewer only at its end)."""
        with open_bytes(self.folder / name) as source:
            return source.read(offset, n)


class SourcePath(PosixPath):
    """A path in a store folder whose files a :class:`FileSet` serves (see the module
    docstring). Made by :func:`mount`; paths derived from it (``/``, ``parent``) are of the
    same class and reach the same file set. It is shown as ``SCHEME://...`` (the place the
    file set reads, such as ``s3://bucket/prefix/key_value_stores/NAME``)."""

    files: ClassVar[FileSet]
    folder_parts: ClassVar[tuple[str, ...]]
    scheme: ClassVar[str]

    def _file_name(self) -> str | None:
        """The file's name in the file set ("" for the folder; None: not in it)."""
        parts, folder = tuple(self.parts), self.folder_parts
        if parts[: len(folder)] != folder or len(parts) > len(folder) + 2:
            return None
        return "/".join(parts[len(folder) :])

    def _name_or_missing(self) -> str:
        name = self._file_name()
        if not name or name not in self.files.names():
            raise FileNotFoundError(2, "no such file", str(self))
        return name

    def __fspath__(self) -> str:
        raise TypeError(f"{self} is not a local file; it is read through its file set")

    def __str__(self) -> str:
        text = PosixPath.__str__(self)
        return f"{self.scheme}:/{text}" if self.is_absolute() else text

    def __repr__(self) -> str:
        return f"SourcePath({str(self)!r})"

    def iterdir(self) -> Iterator[Path]:  # type: ignore[override]
        """The files (and subfolders) of the folder, or of a subfolder."""
        if not self.is_dir():
            raise NotADirectoryError(2, "not a folder", str(self))
        prefix = self._file_name()
        prefix = prefix + "/" if prefix else ""
        inside = {
            n[len(prefix) :].split("/")[0] for n in self.files.names() if n.startswith(prefix)
        }
        for name in sorted(inside):
            yield self / name

    def is_dir(self) -> bool:
        """True for the folder, and for a subfolder that holds files."""
        name = self._file_name()
        if name is None or "/" in name:
            return False
        return name == "" or any(n.startswith(name + "/") for n in self.files.names())

    def is_file(self) -> bool:
        """True for a file of the file set."""
        name = self._file_name()
        return bool(name) and name in self.files.names()

    def exists(self) -> bool:
        """The folder, or one of its files."""
        return self.is_dir() or self.is_file()

    def is_symlink(self) -> bool:
        """Never: a file set has no links."""
        return False

    def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
        """The file's size (and that it is a regular file, or the folder)."""
        if self.is_dir():
            return os.stat_result((stat.S_IFDIR | 0o555, 0, 0, 0, 0, 0, 0, 0, 0, 0))
        size = self.files.size(self._name_or_missing())
        return os.stat_result((stat.S_IFREG | 0o444, 0, 0, 1, 0, 0, size, 0, 0, 0))

    def resolve(self, strict: bool = False) -> SourcePath:
        """Itself: a file set has no links or relative parts."""
        return self


def mount(files: FileSet, url: str) -> SourcePath:
    """The folder path under which ``files`` serves its files, shown as ``url``
    (``SCHEME://PLACE``)."""
    scheme, sep, place = url.partition("://")
    if not sep or not place.strip("/"):
        raise ValueError(f"{url!r} is not a SCHEME://PLACE address")
    parts = tuple(PosixPath("/" + place.strip("/")).parts)
    mounted = type(
        "SourcePath", (SourcePath,), {"files": files, "folder_parts": parts, "scheme": scheme}
    )
    folder: SourcePath = mounted("/" + place.strip("/"))
    return folder


def source_of(path: Path) -> tuple[FileSet, str] | None:
    """The file set that serves ``path`` and the file's name in it; None for a local path."""
    if not isinstance(path, SourcePath):
        return None
    name = path._file_name()
    if name is None:
        raise FileNotFoundError(2, "not in the store folder", str(path))
    return path.files, name


class ByteSource:
    """One file's bytes, read by ranges: a local file through a read-only memory map (its
    size fixed at open), a file of a :class:`FileSet` through the set."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._map: mmap.mmap | None = None
        found = source_of(path)
        self._files: FileSet | None = None
        self._name = ""
        if found is not None:
            self._files, self._name = found
            self.size = self._files.size(self._name)
            return
        with open_for_reading(path) as file:
            self.size = os.fstat(file.fileno()).st_size
            if self.size:
                self._map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)

    def read(self, offset: int, n: int) -> bytes:
        """``n`` bytes at ``offset`` (fewer only at the end)."""
        if self._files is not None:
            return self._files.read(self._name, offset, max(0, min(n, self.size - offset)))
        if self._map is None or offset >= self.size:
            return b""
        return self._map[offset : offset + n]

    def close(self) -> None:
        """Let go of the map."""
        if self._map is not None:
            self._map.close()
            self._map = None


def open_bytes(path: Path) -> closing[ByteSource]:
    """The bytes of the file ``path`` (local or in a file set), to read by ranges; closed at
    the end of the ``with`` block."""
    return closing(ByteSource(path))


def read_whole(path: Path) -> bytes:
    """The bytes of the small file ``path`` (``META.json``, ``SYNCED``), local or in a file
    set; ``FileNotFoundError`` when there is none."""
    found = source_of(path)
    if found is None:
        return read_file(path)
    files, name = found
    if name not in files.names():
        raise FileNotFoundError(2, "no such file", str(path))
    return files.read(name, 0, files.size(name))


def file_set(folder: Path) -> FileSet:
    """The files of the store folder ``folder``: its file set, or the local folder's."""
    if isinstance(folder, SourcePath):
        return folder.files
    return LocalFiles(folder)


class WindowBuffer:
    """A file of a :class:`FileSet`, as a buffer the size of the file whose bytes are
    present only in the ranges :meth:`fill` read (an anonymous private memory map: unread
    pages cost no memory) and that :meth:`release` gives back. Scanners read through it
    with absolute offsets as through a local file's map, and hold only a window of it."""

    PAGE: ClassVar[int] = mmap.PAGESIZE

    def __init__(self, files: FileSet, name: str, size: int) -> None:
        self.files, self.name, self.size = files, name, size
        flags = mmap.MAP_PRIVATE | getattr(mmap, "MAP_ANONYMOUS", 0x20)
        self.buf: Any = mmap.mmap(-1, size, flags=flags) if size else b""
        self.filled = (0, 0)  # the range read and not released
        self.released = 0  # everything before it was given back

    def fill(self, start: int, end: int) -> None:
        """Make bytes ``[start, end)`` present (the part not present yet is read)."""
        end = min(end, self.size)
        low, high = self.filled
        if start >= low and end <= high:
            return
        if start < low or start > high:  # not contiguous with what is there: read it all
            low = high = start
        if end > high:
            data = self.files.read(self.name, high, end - high)
            self.buf[high : high + len(data)] = data
            high += len(data)
        self.filled = (low, high)

    def release(self, before: int) -> None:
        """Give back the pages wholly before offset ``before``."""
        cut = before - before % self.PAGE
        if cut <= self.released or not isinstance(self.buf, mmap.mmap):
            return
        self.buf.madvise(mmap.MADV_DONTNEED, self.released, cut - self.released)
        self.released = cut
        low, high = self.filled
        self.filled = (max(low, cut), max(high, cut))

    def close(self) -> None:
        """Let go of the buffer."""
        if isinstance(self.buf, mmap.mmap):
            self.buf.close()
