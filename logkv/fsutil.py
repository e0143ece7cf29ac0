"""Small file-system helpers: directory fsync, atomic file replacement, removal of a folder
in one step."""

from __future__ import annotations

import os
import secrets
import shutil
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


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` all at once: temp file, fsync, rename, fsync the folder."""
    temp = path.with_name(path.name + TEMP_SUFFIX)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, data, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)
    fsync_dir(path.parent)


def move_to_trash(folder: Path, trash: Path) -> Path:
    """Rename ``folder`` into ``trash`` in one step and make the rename durable; its new path.

    After this, ``folder`` is gone as a whole (a crash cannot leave it half deleted): what is
    left to do is deleting the renamed copy, which :func:`empty_trash` finishes if a crash
    interrupts it. ``trash`` is created when missing; it must be on the same file system.
    """
    if not trash.is_dir():
        trash.mkdir(parents=True, exist_ok=True)
        fsync_dir(trash.parent)
    target = trash / f"{folder.name[:64]}-{secrets.token_hex(8)}"
    os.rename(folder, target)
    fsync_dir(folder.parent)
    fsync_dir(trash)
    return target


def empty_trash(trash: Path) -> None:
    """Delete whatever :func:`move_to_trash` put into ``trash`` (leftovers of interrupted
    drops included); errors are ignored, a later call tries again."""
    try:
        leftovers = list(trash.iterdir())
    except OSError:  # no trash: the usual case
        return
    for entry in leftovers:
        shutil.rmtree(entry, ignore_errors=True)
