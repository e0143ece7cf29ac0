"""One writer per store: an exclusive ``flock`` on the store's lock file.

The kernel drops a ``flock`` when its holder exits, however it exits, so a killed writer never
leaves a stale lock. The holder writes its pid into the file so that the next writer can say who
holds it. ``flock`` locks belong to an open file description, so a second writer inside the same
process is refused too.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .errors import StoreLockedError
from .fsutil import open_file
from .layout import LOCK_FILE


class StoreLock:
    """The exclusive writer lock of one store folder; released by :meth:`release`."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_FILE
        fd = open_file(self.path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_holder_pid(fd)
            os.close(fd)
            raise StoreLockedError(folder, holder) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        """Give the lock up (idempotent)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def read_holder_pid(fd: int) -> int | None:
    """The pid written in a lock file, or None when it is empty or unreadable."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def writer_pid(folder: Path) -> int | None:
    """The pid of the writer that holds the store's lock, as far as its lock file says: the
    pid written there, when a process of that pid runs (None: no writer). The lock itself is
    not tried, so a crawler opening the store meanwhile is never refused."""
    try:
        fd = open_file(folder / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        pid = read_holder_pid(fd)
    finally:
        os.close(fd)
    if pid is None or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid  # it runs, as another user
    return pid
