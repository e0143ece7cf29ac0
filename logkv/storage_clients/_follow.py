"""A read-only store following its writer: refresh the engine only when the folder changed.

A read-only store folds in the writer's new records before every read, but
:meth:`~logkv.Engine.refresh` lists the folder and reads the log's tail (about 200 µs), forty
times the read itself. :class:`Follower` asks two ``stat`` calls first (a few µs): the store
folder's (its modification time changes when the writer creates, renames or removes a file: a
new segment, a snapshot, retired segments, ``META.json``) and the newest segment's (its size and
times change with every append). While both are as they were at the last refresh, nothing new
can be read, and the refresh is skipped.

Filesystem timestamps are coarse (a clock tick, often several milliseconds), so a folder change
in the same tick as the last refresh could leave its time unchanged: while the folder's time is
less than :data:`SETTLE_NS` old, every read refreshes.
"""

from __future__ import annotations

import os
import time
from typing import Final

from ..engine import Engine
from ..errors import StoreNotFoundError
from ..layout import list_segments

#: A folder changed less than this long ago (ns) is refreshed on every read (see the docstring).
SETTLE_NS: Final = 1_000_000_000

#: What the two ``stat`` calls saw: the folder's time, the newest segment's identity, size and
#: times (None when there is no segment).
Fingerprint = tuple[int, tuple[int, int, int, int] | None]


class Follower:
    """Refreshes a read-only ``engine`` when, and only when, its folder may hold news."""

    __slots__ = ("_engine", "_folder", "_seen", "_segment")

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._folder = str(engine.path)
        self._segment: str | None = None
        self._seen: Fingerprint | None = None

    def refresh(self) -> None:
        """Fold in the writer's new records if the folder changed since the last refresh.

        Raises :class:`~logkv.StoreNotFoundError` once the store folder is gone (its writer
        dropped the store).
        """
        if self._seen is not None and self._unchanged():
            return
        try:
            self._refresh()
        except FileNotFoundError:
            if os.path.isdir(self._folder):
                raise
            raise StoreNotFoundError(
                f"the key-value store at {self._folder} is gone (its writer dropped it); close "
                "this read-only store"
            ) from None

    def _refresh(self) -> None:
        segments = list_segments(self._engine.path)
        segment = str(segments[-1][1]) if segments else None
        try:
            seen: Fingerprint | None = self._fingerprint(segment)  # before the refresh: what
        except OSError:  # comes after it differs; a segment retired meanwhile: check next time
            seen = None
        self._engine.refresh()
        self._segment, self._seen = segment, seen

    def _unchanged(self) -> bool:
        try:
            now = self._fingerprint(self._segment)
        except OSError:  # the newest segment was retired: the folder changed
            return False
        return now == self._seen and time.time_ns() - now[0] >= SETTLE_NS

    def _fingerprint(self, segment: str | None) -> Fingerprint:
        folder_time = os.stat(self._folder).st_mtime_ns
        if segment is None:
            return folder_time, None
        info = os.stat(segment)
        return folder_time, (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
