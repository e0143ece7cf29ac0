"""The console's read-only opens: one :class:`~logkv.Engine` per store, shared by requests.

A store is opened read-only on first use (no lock, nothing written: it runs beside the
crawler writing it) and refreshed before each later use, so pages follow the writer as it
appends and compacts. A store that fails to refresh is closed and opened again on the next use.
Also here: the time of a record without reading its value (whether a writer runs is
:func:`logkv.lock.writer_pid`, which the record commands use too).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgpack

from ..engine import Engine
from ..format import FRAME_HEADER_SIZE, FRAME_KINDS
from ..index import IndexEntry
from ..segments import SegmentReaders

#: Stores with at least this many keys have their index moved out of the collector's sight
#: when they are opened (:func:`gc.freeze`).
FREEZE_KEYS: Final = 100_000


@dataclass
class Opened:
    """A store open read-only: its engine, and readers for record heads."""

    engine: Engine
    readers: SegmentReaders
    covers: int

    def close(self) -> None:
        """Close the engine and the readers."""
        self.readers.close()
        self.engine.close()


class OpenedStores:
    """Read-only opens of stores by folder, opened once and refreshed on each use."""

    def __init__(self, on_use: Callable[[Path, int], None] | None = None) -> None:
        #: Told of each use of a store: its folder and what its snapshot covers (the console
        #: starts the store's history index from it).
        self.on_use = on_use
        self._opened: dict[Path, Opened] = {}
        self._locks: dict[Path, threading.Lock] = {}
        self._guard = threading.Lock()  # guards the two dicts, never held for I/O

    def _lock_of(self, path: Path) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(path, threading.Lock())

    @contextmanager
    def use(self, path: Path) -> Iterator[Opened]:
        """The store at ``path``, open and refreshed. Errors of the open or the refresh
        (damage, a vanished folder) propagate, and the store is opened anew next time."""
        with self._lock_of(path):
            opened = self._opened.get(path)
            if opened is not None:
                try:
                    opened.engine.refresh()
                except BaseException:
                    self._forget(path)
                    raise
            else:
                engine = Engine.open(path, readonly=True)
                opened = Opened(engine, SegmentReaders(path), engine.snapshot_covers)
                self._opened[path] = opened
                if len(engine) >= FREEZE_KEYS:
                    # A big index lives as long as the console: keep the collector's passes
                    # off it (a full pass over a million entries stalls a page).
                    gc.collect()
                    gc.freeze()
            if opened.covers != opened.engine.snapshot_covers:  # the writer compacted
                opened.covers = opened.engine.snapshot_covers
                opened.readers.retire(opened.covers)
            covers = opened.covers
        if self.on_use is not None:
            self.on_use(path, covers)
        yield opened

    def _forget(self, path: Path) -> None:
        opened = self._opened.pop(path, None)
        if opened is not None:
            opened.close()

    def close(self) -> None:
        """Close every store."""
        with self._guard:
            paths = list(self._opened)
        for path in paths:
            with self._lock_of(path):
                self._forget(path)


def record_stamp(readers: SegmentReaders, entry: IndexEntry) -> tuple[int, int] | None:
    """``(seq, timestamp_us)`` of the record ``entry`` points to, read from its head alone
    (the value is not read, so its checksum is not checked here; a record page checks it).
    None when the head cannot be read (a compaction retired its file meanwhile)."""
    try:
        head = readers.pread(entry.file_id, entry.head, entry.offset)
    except OSError:
        return None
    if head[:4] not in FRAME_KINDS:  # a frame of any version (docs/FORMAT.md, section 3)
        return None
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(head[FRAME_HEADER_SIZE:])
    try:
        unpacker.read_array_header()
        seq, timestamp_us = unpacker.unpack(), unpacker.unpack()
    except (msgpack.OutOfData, ValueError):
        return None
    if type(seq) is not int or type(timestamp_us) is not int:
        return None
    return seq, timestamp_us
