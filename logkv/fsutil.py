"""Small file-system helpers: file creation, directory fsync, atomic replacement, temp files,
removal of a folder in one step.

Every file and folder logkv creates is created here, so that all get the same permissions:
:data:`FILE_MODE` and :data:`DIR_MODE`, less the process's umask, and never group- or
world-writable, whatever the umask.

Nothing inside a store folder is followed if it is a symbolic link: files are opened with
``O_NOFOLLOW`` and subfolders checked with ``lstat``, and a link raises
:class:`~logkv.errors.UnsafeStoreError` naming it. (A link could make logkv truncate or overwrite
a file outside the store, or read one in as data.) The store folder itself and its parents may be
links.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO, Final

from .errors import UnsafeStoreError
from .layout import ARCHIVE_DIR, PUBLIC_DIR, TEMP_SUFFIX, VALUES_DIR, is_store_entry

#: The mode of every file logkv creates (less the umask): segments, snapshots, temp files,
#: ``LOCK``, ``META.json``, public files, exported files.
FILE_MODE: Final = 0o644
#: The mode of every folder logkv creates (less the umask).
DIR_MODE: Final = 0o755


def open_file(path: Path | str, flags: int) -> int:
    """``os.open(path, flags)`` that never follows a symbolic link at ``path``
    (:class:`~logkv.errors.UnsafeStoreError`); a file it creates gets :data:`FILE_MODE` (less
    the umask)."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW, FILE_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP and os.path.islink(path):
            raise UnsafeStoreError(path) from None
        raise


def open_for_reading(path: Path) -> BinaryIO:
    """The file at ``path`` opened for reading (``"rb"``), never through a symbolic link."""
    return open(open_file(path, os.O_RDONLY), "rb")


def read_file(path: Path) -> bytes:
    """The bytes of the file at ``path``, never read through a symbolic link."""
    with open_for_reading(path) as file:
        return file.read()


def refuse_link(path: Path) -> None:
    """Raise :class:`~logkv.errors.UnsafeStoreError` when ``path`` is a symbolic link."""
    if path.is_symlink():
        raise UnsafeStoreError(path)


def check_store_entries(folder: Path) -> None:
    """Raise :class:`~logkv.errors.UnsafeStoreError` when a name logkv uses in the store
    folder ``folder`` (or in its ``archive/``, ``values/`` or ``public/`` folder) is a symbolic
    link."""
    _check_entries(folder, is_store_entry)
    for sub in (ARCHIVE_DIR, VALUES_DIR, PUBLIC_DIR):
        if (folder / sub).is_dir():  # not a link: checked above
            _check_entries(folder / sub, None if sub == PUBLIC_DIR else is_store_entry)


def _check_entries(folder: Path, ours: Callable[[str], bool] | None) -> None:
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_symlink() and (ours is None or ours(entry.name)):
                raise UnsafeStoreError(entry.path)


def make_dir(path: Path) -> None:
    """Create the folder ``path`` (:data:`DIR_MODE` less the umask) unless it exists; a
    symbolic link there raises :class:`~logkv.errors.UnsafeStoreError`."""
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        refuse_link(path)
        if not path.is_dir():
            raise


def make_dirs(path: Path, *, durable: bool = False) -> list[Path]:
    """Create the folder ``path`` and its missing parents (each :data:`DIR_MODE` less the
    umask); return the folders created, outermost first.

    With ``durable``, the parent of each folder created is ``fsync``ed, so that the new
    entries survive a power loss (a new folder is only as durable as its entry in its parent).
    """
    missing: list[Path] = []
    folder = path
    while not folder.is_dir():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    created = list(reversed(missing))
    for folder in created:
        make_dir(folder)
        if durable:
            fsync_dir(folder.parent)
    return created


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


def create_temp(path: Path) -> tuple[int, Path]:
    """Create (or empty) the temp file of ``path``; return its descriptor (open for writing)
    and its path."""
    temp = temp_path(path)
    return open_file(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), temp


@contextmanager
def temp_file(path: Path) -> Iterator[tuple[int, Path]]:
    """Create the temp file of ``path``; yield its descriptor and its path.

    The descriptor is closed on leaving. When the block fails, the temp file is removed
    (whatever step failed: a write, an ``fsync``, the rename), so that a full disk gets its
    space back at once instead of at the next open.
    """
    fd, temp = create_temp(path)
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


def move_to_trash(folder: Path, trash: Path) -> Path:
    """Rename ``folder`` into ``trash`` in one step and make the rename durable; its new path.

    After this, ``folder`` is gone as a whole (a crash cannot leave it half deleted): what is
    left to do is deleting the renamed copy, which :func:`empty_trash` finishes if a crash
    interrupts it. ``trash`` is created when missing; it must be on the same file system.
    """
    make_dirs(trash, durable=True)
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


def install_folder(staging: Path, target: Path) -> None:
    """Put the finished folder ``staging`` (``fsync``ed, in a hidden folder of its own beside
    ``target``'s parent) in place as ``target``, which is missing or an empty folder, with one
    rename; ``fsync`` the parent, and remove the staging folder's parent when it is empty (a
    restore or replay builds there). A crash before the rename leaves ``target`` as it was."""
    if target.exists():
        target.rmdir()  # empty: checked by the caller before it began
    os.rename(staging, target)
    fsync_dir(target.parent)
    with suppress(OSError):  # another build may be staging beside it
        staging.parent.rmdir()
