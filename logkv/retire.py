"""Retiring files a snapshot covers: delete them, or move segments to the archive folder."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .fsutil import fsync_dir, make_dir
from .layout import ARCHIVE_DIR, list_hints, list_segments, list_snapshots
from .modes import Retention

log = logging.getLogger(__name__)


def retire_files(
    folder: Path, covers: int, retention: Retention, *, sync: bool = True
) -> list[int]:
    """Retire the segments ``1..covers`` and the snapshots older than ``covers``.

    Segments are deleted or (``Retention.ARCHIVE``) moved to ``archive/``; older snapshots are
    always deleted (the archived segments hold the whole history), and so are the covered
    segments' hint files (an archived segment is read whole when it is read). Returns the file ids
    retired (segments > 0, snapshots < 0). Safe to repeat after a crash part-way.

    ``sync`` False leaves the folders' ``fsync`` to the caller (:func:`sync_retired`), which
    compaction runs after releasing the store lock: a retirement lost to a crash is finished
    by the next writable open, so only its durability waits, never its correctness.
    """
    retired: list[int] = []
    if covers <= 0:
        return retired
    archive = folder / ARCHIVE_DIR
    for number, path in list_segments(folder):
        if number > covers:
            break
        if retention is Retention.ARCHIVE:
            make_dir(archive)
            os.replace(path, archive / path.name)
        else:
            path.unlink()
        retired.append(number)
    for snap_covers, path in list_snapshots(folder):
        if snap_covers < covers:
            path.unlink()
            retired.append(-snap_covers)
    for number, path in list_hints(folder):  # derived data of the retired segments
        if number <= covers:
            path.unlink(missing_ok=True)
    if retired:
        if sync:
            sync_retired(folder, retention)
        log.info("retired %d files of %s (%s)", len(retired), folder, retention.value)
    return retired


def sync_retired(folder: Path, retention: Retention) -> None:
    """Make a retirement durable: ``fsync`` the store folder (and ``archive/`` under retention
    archive)."""
    archive = folder / ARCHIVE_DIR
    if retention is Retention.ARCHIVE and archive.is_dir():
        fsync_dir(archive)
    fsync_dir(folder)
