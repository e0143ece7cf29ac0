"""The synced mark: how far a store's log was durable when its writer last closed cleanly.

A writer that closes cleanly syncs its segment and then records ``(segment, offset)`` in the
``SYNCED`` file (docs/FORMAT.md, section 6.1). Replay uses the mark to tell a torn tail (bytes
after the mark, which a crash or a power loss may have left half-written) from damage to records
that were already durable (before the mark), which is never dropped silently.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .files import read_whole
from .format import SyncedMark, decode_synced_mark, encode_synced_mark
from .fsutil import fsync_dir, open_file, write_all
from .layout import SYNCED_FILE

log = logging.getLogger(__name__)


def read_synced_mark(folder: Path) -> SyncedMark | None:
    """The store's synced mark, or None when it has none (never closed cleanly, or written by
    an older logkv) or it is unreadable (then a warning is logged)."""
    try:
        data = read_whole(folder / SYNCED_FILE)[:64]  # the folder's, or a file set's
    except (FileNotFoundError, NotADirectoryError):
        return None
    mark = decode_synced_mark(data)
    if mark is None:
        log.warning("%s: the synced mark is damaged; it is ignored", folder / SYNCED_FILE)
    return mark


def write_synced_mark(folder: Path, mark: SyncedMark) -> None:
    """Record ``mark`` durably. The caller has synced the log up to it first.

    The file is overwritten in place (one small ``pwrite`` and an ``fsync``): a crash in the
    middle leaves a mark that fails its checksum and is ignored, which is safe.
    """
    path = folder / SYNCED_FILE
    created = not path.exists()
    fd = open_file(path, os.O_WRONLY | os.O_CREAT)
    try:
        write_all(fd, encode_synced_mark(mark), 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_dir(folder)


def forget_synced_mark(folder: Path) -> None:
    """Remove the mark (salvage rewrote a segment, so its offsets no longer hold)."""
    try:
        os.unlink(folder / SYNCED_FILE)
    except FileNotFoundError:
        return
    fsync_dir(folder)
