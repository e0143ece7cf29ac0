"""The console's history index: for every key of a store, where each of its records is in the
log, so that the first view of a key's history is a lookup, not a search of the whole log.

Built in a background thread when the console first uses a store (one pass over the retained
log through :class:`~logkv.scan.SegmentReader`, the reader every scan uses, with big values
left undecoded), kept fresh by
reading only what the writer appended since (:meth:`StoreIndex.catch_up`), and built again
when a compaction installs a newer snapshot (the files it names may be retired). Nothing but
locations is held: per key, one int (a key with one record) or a packed ``array('q')`` of
them. A record's seq, time, operation and size are read from its frame only when a page shows
it (:func:`read_located`).

Until a store's index is ready (or when it cannot be built: damage, a store changing too fast)
a view falls back to the per-key search (:func:`logkv.history.key_log`), which is never wrong.
At most :data:`INDEXED_STORES` stores are indexed; the one used longest ago is dropped first.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from array import array
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from ..errors import CorruptionError, LogKVError
from ..format import (
    FRAME_HEADER,
    FRAME_HEADER_SIZE,
    BadFrame,
    DeleteRecord,
    SetRecord,
    decode_fields,
    read_frame,
)
from ..fsutil import open_for_reading
from ..history import RetainedLog, segments_from, survey
from ..scan import SegmentReader, fail_on_damage
from ..synced import read_synced_mark

#: Stores whose index is held at once (each ~150 bytes per key, 8 per further record).
INDEXED_STORES: Final = 4
#: A location packs the segment number above this many bits of offset.
OFFSET_BITS: Final = 40
_OFFSET_MASK: Final = (1 << OFFSET_BITS) - 1


def location(segment: int, offset: int) -> int:
    """A record's location: its segment number and offset in one int."""
    return segment << OFFSET_BITS | offset


def split(at: int) -> tuple[int, int]:
    """``(segment, offset)`` of location ``at``."""
    return at >> OFFSET_BITS, at & _OFFSET_MASK


@dataclass
class StoreIndex:
    """Where every record of a store's retained log is, by key, as far as :attr:`read_to`.
    ``covers`` is the snapshot the store had when the index was built; ``log`` the view of
    the retained log it was built from (its base snapshot keeps what retired segments held)."""

    folder: Path
    covers: int
    log: RetainedLog
    paths: dict[int, Path] = field(default_factory=dict)
    keys: dict[str, int | array[int]] = field(default_factory=dict)
    read_to: tuple[int, int] = (0, 0)
    records: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _add(self, key: str, at: int) -> None:
        held = self.keys.get(key)
        if held is None:
            self.keys[key] = at
        elif isinstance(held, int):
            self.keys[key] = array("q", (held, at))
        else:
            held.append(at)
        self.records += 1

    def _scan(self, segments: list[tuple[int, Path]], start: int) -> None:
        """Index the records of ``segments`` (from offset ``start`` of the first when not 0)."""
        synced = read_synced_mark(self.folder)
        for i, (number, path) in enumerate(segments):
            self.paths[number] = path
            is_last = i == len(segments) - 1
            with SegmentReader(
                path, number, is_last=is_last, synced=synced, report=fail_on_damage
            ) as reader:
                for offset, _, fields in reader.frames(start if i == 0 else 0, values=False):
                    self._add(fields[3], location(number, offset))
                self.read_to = (number, reader.end)

    def catch_up(self) -> None:
        """Index what the writer appended since :attr:`read_to`. Raises
        :class:`FileNotFoundError` when a compaction retired the segment it stopped in."""
        segment, offset = self.read_to
        self._scan(segments_from(self.folder, segment), offset)

    def locations(self, key: str) -> list[int]:
        """The locations of ``key``'s records, oldest first."""
        held = self.keys.get(key)
        if held is None:
            return []
        return [held] if isinstance(held, int) else list(held)

    def located(self, key: str) -> list[tuple[Path, int]]:
        """``(segment path, offset)`` of each of ``key``'s records, oldest first."""
        paths = self.paths
        return [(paths[at >> OFFSET_BITS], at & _OFFSET_MASK) for at in self.locations(key)]

    def memory(self) -> int:
        """Bytes the index holds: its dict, and the keys, ints and arrays in it."""
        total = sys.getsizeof(self.keys)
        for key, held in self.keys.items():
            total += sys.getsizeof(key) + sys.getsizeof(held)
        return total


def build_index(folder: Path, covers: int) -> StoreIndex:
    """The index of the store at ``folder`` (whose snapshot covers ``covers``): one pass over
    its retained log. Raises :class:`~logkv.errors.CorruptionError` for damage,
    :class:`FileNotFoundError` when a compaction retired a file meanwhile."""
    log = survey(folder).checked()
    index = StoreIndex(folder, covers, log)
    if log.segments:
        index._scan(log.segments, 0)
    return index


def read_located(path: Path, offset: int) -> tuple[int, SetRecord | DeleteRecord]:
    """The length and record of the frame at ``offset`` of segment ``path`` (checksum
    checked). Raises :class:`FileNotFoundError` when a compaction retired the file, and
    :class:`~logkv.errors.CorruptionError` when the frame is not intact."""
    with open_for_reading(path) as file:
        head = os.pread(file.fileno(), FRAME_HEADER_SIZE, offset)
        if len(head) < FRAME_HEADER_SIZE:
            raise CorruptionError(path, offset, "the record is cut short")
        length = FRAME_HEADER.unpack(head)[2]
        data = os.pread(file.fileno(), FRAME_HEADER_SIZE + length, offset)
    try:
        size, fields = read_frame(data, 0, len(data))
    except BadFrame as exc:
        raise CorruptionError(path, offset, exc.reason) from None
    return size, decode_fields(fields)


@dataclass
class _Slot:
    covers: int
    index: StoreIndex | None = None
    error: str | None = None
    built_s: float | None = None


class HistoryIndexes:
    """The history indexes of the stores the console used last (thread-safe). One background
    thread builds them, one at a time, the store used first first; a store dropped from the
    last used before its turn is not built (an overview of many stores starts no pile of
    builds)."""

    def __init__(self, kept: int = INDEXED_STORES) -> None:
        self._kept = kept
        self._held: OrderedDict[Path, _Slot] = OrderedDict()
        self._guard = threading.Lock()  # held for the dict and the queue only, never for I/O
        self._queue: deque[tuple[Path, _Slot]] = deque()
        self._worker: threading.Thread | None = None

    def ensure(self, folder: Path, covers: int) -> None:
        """Have the index of the store at ``folder`` built unless one is held for its
        snapshot ``covers`` (built, or to be built)."""
        with self._guard:
            slot = self._held.get(folder)
            if slot is not None and slot.covers >= covers:
                self._held.move_to_end(folder)
                return
            slot = _Slot(covers)
            self._held[folder] = slot
            self._held.move_to_end(folder)
            while len(self._held) > self._kept:
                self._held.popitem(last=False)
            self._queue.append((folder, slot))
            if self._worker is not None:
                return
            self._worker = worker = threading.Thread(
                target=self._work, name="logkv-history-index", daemon=True
            )
        worker.start()

    def _work(self) -> None:
        while True:
            with self._guard:
                if not self._queue:
                    self._worker = None
                    return
                folder, slot = self._queue.popleft()
                if self._held.get(folder) is not slot:
                    continue  # dropped, or renewed, before its turn
            self._build(folder, slot)

    def _build(self, folder: Path, slot: _Slot) -> None:
        started = time.perf_counter()
        try:
            index = build_index(folder, slot.covers)
        except (LogKVError, OSError, BadFrame) as exc:
            slot.error = str(exc)
            with self._guard:  # built again on the next use
                if self._held.get(folder) is slot:
                    del self._held[folder]
            return
        slot.built_s = time.perf_counter() - started
        slot.index = index

    def ready(self, folder: Path, covers: int) -> StoreIndex | None:
        """The index of the store at ``folder`` when it is built for snapshot ``covers``."""
        with self._guard:
            slot = self._held.get(folder)
        if slot is None or slot.covers != covers:
            return None
        return slot.index

    def drop(self, folder: Path) -> None:
        """Forget the index of ``folder`` (it is built again on the next use)."""
        with self._guard:
            self._held.pop(folder, None)

    def status(self, folder: Path) -> dict[str, object]:
        """What the store's JSON API says of its index: ``state`` (``building``, ``ready`` or
        ``none``), records indexed and the build's seconds."""
        with self._guard:
            slot = self._held.get(folder)
        if slot is None:
            return {"state": "none"}
        index = slot.index
        if index is None:
            return {"state": "building"}
        return {"state": "ready", "records": index.records, "build_s": slot.built_s}

    def held(self) -> list[Path]:
        """The folders whose index is held or being built, least recently used first."""
        with self._guard:
            return list(self._held)

    def join(self) -> None:
        """Wait until every build asked for has ended (tests and benchmarks)."""
        while True:
            with self._guard:
                worker = self._worker
            if worker is None:
                return
            worker.join()
