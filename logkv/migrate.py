"""Moving a whole storage folder between Crawlee's file-system layout and logkv, all or nothing.

A storage folder (Crawlee's ``storage_dir``) holds ``key_value_stores/``, ``datasets/`` and
``request_queues/``, one folder per store. ``logkv migrate`` (and its reverse, ``logkv
export-crawlee``) never changes a store in place:

1. :func:`survey` sorts every store folder into Crawlee file-system (``__metadata__.json``),
   logkv (``META.json`` or a log) or unknown (refused), before anything is written.
2. The converted stores are built in a staging folder beside the storage folder (same file
   system), ``.NAME.logkv-staging``, and every file and folder in it is fsynced
   (:func:`fsync_tree`).
3. :func:`swap_in` puts the staging folder in place of the storage folder and the original
   under the backup name. Where the kernel can (Linux ``renameat2(RENAME_EXCHANGE)``), the two
   folders change places in one atomic step, so the storage folder's path shows either the old
   folder or the finished new one at every moment; the original then moves to the backup
   name. Elsewhere two renames are used, and a crash between them leaves the storage folder's
   path absent until the next ``logkv migrate`` or ``export-crawlee`` finishes the swap.
   A journal file beside the folder (``.NAME.logkv-swap``, written durably before the swap)
   records the staging folder's inode, so :func:`recover` tells after a crash which of the two
   folders is which.

:func:`recover` runs first in both commands: a staging folder without a journal is an
interrupted build and is deleted (the storage folder was never touched).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from .errors import StoreLockedError
from .fsutil import atomic_write, fsync_dir
from .layout import CRAWLEE_METADATA_FILE, META_FILE, TRASH_DIR, is_store_folder
from .lock import StoreLock
from .names import StorageType
from .storage_layout import STORAGE_DIRS

#: The suffix of the folder that keeps the original Crawlee folder after ``logkv migrate``.
CRAWLEE_BACKUP_SUFFIX: Final = ".crawlee-backup"
#: The suffix of the folder that keeps the original logkv folder after ``export-crawlee``.
LOGKV_BACKUP_SUFFIX: Final = ".logkv-backup"

Format = Literal["crawlee", "logkv"]
#: A test hook: called with the name of each step of a migration as it is reached.
Checkpoint = Callable[[str], None]


class MigrationError(Exception):
    """A storage folder cannot be migrated as asked; the message says why and what to do."""


class StoreInUseError(MigrationError):
    """A logkv store of the folder is locked by a running process."""


class DamagedStoreError(MigrationError):
    """A file or record of the folder cannot be read as what it should be (the message names
    it)."""


@dataclass(frozen=True)
class StoreFolder:
    """One store folder of a storage folder, and the format it holds."""

    storage: StorageType
    name: str
    path: Path
    format: Format


@dataclass
class Survey:
    """Every store folder of a storage folder, by format."""

    root: Path
    stores: list[StoreFolder] = field(default_factory=list)

    def of(self, fmt: Format, storage: StorageType | None = None) -> list[StoreFolder]:
        """The stores of format ``fmt`` (of one storage type, or all)."""
        return [
            s for s in self.stores if s.format == fmt and (storage is None or s.storage == storage)
        ]

    def find(self, storage: StorageType, name: str) -> StoreFolder | None:
        """The store folder ``name`` of ``storage``, or None."""
        for store in self.stores:
            if store.storage == storage and store.name == name:
                return store
        return None


def staging_path(storage_dir: Path) -> Path:
    """Where the new folder is built: beside ``storage_dir``, hidden."""
    return storage_dir.parent / f".{storage_dir.name}.logkv-staging"


def journal_path(storage_dir: Path) -> Path:
    """The swap journal of ``storage_dir`` (present only while the folders change places)."""
    return storage_dir.parent / f".{storage_dir.name}.logkv-swap"


def backup_path(storage_dir: Path, suffix: str) -> Path:
    """Where the original folder is kept after the swap."""
    return storage_dir.parent / f"{storage_dir.name}{suffix}"


# ---------------------------------------------------------------------------------- survey


def _format_of(folder: Path) -> Format | None:
    """The format of the store in ``folder``; None for an empty folder."""
    if (folder / META_FILE).exists() or is_store_folder(folder):
        return "logkv"
    if (folder / CRAWLEE_METADATA_FILE).exists():
        return "crawlee"
    if not any(folder.iterdir()):
        return None
    raise MigrationError(
        f"{folder} is neither a Crawlee file-system store (no {CRAWLEE_METADATA_FILE}) nor a "
        "logkv store; move it out of the storage folder first"
    )


def survey(storage_dir: Path) -> Survey:
    """Every store folder under ``storage_dir``, sorted by storage type and name.

    Raises :class:`MigrationError` when ``storage_dir`` is not a storage folder or holds a
    folder of unknown content.
    """
    if storage_dir.is_symlink():
        raise MigrationError(
            f"{storage_dir} is a symbolic link; give the folder it points to (the folders are "
            "swapped by renaming them)"
        )
    if not storage_dir.is_dir():
        raise MigrationError(f"{storage_dir} is not a folder")
    if not any((storage_dir / sub).is_dir() for sub in STORAGE_DIRS.values()):
        raise MigrationError(
            f"{storage_dir} is not a Crawlee storage folder: it has none of "
            f"{', '.join(STORAGE_DIRS.values())}"
        )
    found = Survey(storage_dir)
    for storage, sub in STORAGE_DIRS.items():
        root = storage_dir / sub
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            if not folder.is_dir() or folder.name == TRASH_DIR or folder.name.startswith("."):
                continue
            fmt = _format_of(folder)
            if fmt is not None:
                found.stores.append(StoreFolder(storage, folder.name, folder, fmt))
    return found


@contextmanager
def locked(stores: list[StoreFolder]) -> Iterator[None]:
    """Hold the writer lock of every logkv store in ``stores`` (none may be in use while the
    folder is migrated); a store locked by a running process is a :class:`MigrationError`."""
    held: list[StoreLock] = []
    try:
        for store in stores:
            try:
                held.append(StoreLock(store.path))
            except StoreLockedError as exc:
                raise StoreInUseError(
                    f"{store.path} is in use ({exc}); stop the crawler that uses this storage "
                    "folder and run the command again"
                ) from None
        yield
    finally:
        for lock in held:
            lock.release()


# ---------------------------------------------------------------------------------- files


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root`` (and ``root``), deepest first."""
    for folder, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY | os.O_NOFOLLOW)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(folder))


def copy_store(source: Path, target: Path) -> None:
    """Copy a store folder as it is (its lock file aside: it is per process)."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("LOCK"), symlinks=True)


# ---------------------------------------------------------------------------------- swap

_AT_FDCWD: Final = -100
_RENAME_EXCHANGE: Final = 2


def exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one atomic step; False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    result = renameat2(
        _AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE
    )
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(first))


def swap_in(storage_dir: Path, staging: Path, backup: Path, checkpoint: Checkpoint) -> None:
    """Put the finished ``staging`` folder at ``storage_dir`` and the original at ``backup``
    (see the module docstring); each step is durable before the next."""
    parent = storage_dir.parent
    journal = {"staging_inode": staging.stat().st_ino, "backup": backup.name}
    atomic_write(journal_path(storage_dir), json.dumps(journal).encode())
    checkpoint("journal")
    if exchange(staging, storage_dir):
        fsync_dir(parent)
        checkpoint("exchanged")
        os.rename(staging, backup)
    else:
        os.rename(storage_dir, backup)
        fsync_dir(parent)
        checkpoint("moved-away")
        os.rename(staging, storage_dir)
    fsync_dir(parent)
    checkpoint("swapped")
    os.unlink(journal_path(storage_dir))
    fsync_dir(parent)


def recover(storage_dir: Path) -> str | None:
    """Finish or undo what an interrupted migration left beside ``storage_dir``; what was done,
    or None when nothing was left."""
    staging = staging_path(storage_dir)
    journal_file = journal_path(storage_dir)
    parent = storage_dir.parent
    if not journal_file.exists():
        if not staging.exists():
            return None
        shutil.rmtree(staging)
        fsync_dir(parent)
        return f"removed {staging}, the unfinished build of an interrupted migration"
    journal = json.loads(journal_file.read_bytes())
    backup = parent / str(journal["backup"])
    inode = int(journal["staging_inode"])
    if storage_dir.exists() and storage_dir.stat().st_ino == inode:
        done = f"{storage_dir} was already swapped in"
        if staging.exists():
            os.rename(staging, backup)
            done += f"; moved the original to {backup}"
    elif not storage_dir.exists():
        os.rename(staging, storage_dir)
        done = f"finished swapping in {storage_dir} (the original is in {backup})"
    else:
        if staging.exists():
            shutil.rmtree(staging)
        done = f"{storage_dir} was never swapped; removed the finished build beside it"
    fsync_dir(parent)
    os.unlink(journal_file)
    fsync_dir(parent)
    return done
