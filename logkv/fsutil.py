"""Small file-system helpers: directory fsync, atomic file replacement and temp files."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from .layout import TEMP_SUFFIX


def fsync_dir(folder: Path) -> None:
    """Make a folder's entries (created, renamed or removed files) durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write every byte of ``data`` at ``offset`` (``pwrite`` may write less than asked)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written == 0:  # pragma: no cover - a regular file never returns 0 for a non-empty write
            raise OSError("pwrite wrote nothing")
        view = view[written:]
        offset += written


def temp_path(path: Path) -> Path:
    """The temp file a new version of ``path`` is written to before it replaces ``path``."""
    return path.with_name(path.name + TEMP_SUFFIX)


def remove_quietly(path: Path) -> None:
    """Remove ``path`` if it is there, on a clean-up path: a failure to remove it is ignored,
    so that it never hides the error being cleaned up after."""
    with suppress(OSError):
        os.unlink(path)


@contextmanager
def temp_file(path: Path) -> Iterator[tuple[int, Path]]:
    """Create the temp file of ``path``; yield its descriptor and its path.

    The descriptor is closed on leaving. When the block fails, the temp file is removed
    (whatever step failed: a write, an ``fsync``, the rename), so that a full disk gets its
    space back at once instead of at the next open.
    """
    temp = temp_path(path)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        yield fd, temp
    except BaseException:
        os.close(fd)
        remove_quietly(temp)
        raise
    os.close(fd)


def atomic_write(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` all at once: temp file, fsync, rename, fsync the folder.

    Without ``durable`` (files derived from the store, rebuilt on open) the two ``fsync``s
    are skipped; the replacement is still all at once. On any failure ``path`` is unchanged
    and the temp file is gone.
    """
    with temp_file(path) as (fd, temp):
        write_all(fd, data, 0)
        if durable:
            os.fsync(fd)
        os.replace(temp, path)
    if durable:
        fsync_dir(path.parent)
