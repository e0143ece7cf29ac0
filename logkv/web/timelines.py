"""A key's timeline as the console pages it: where each of its changes is in the log, kept
fresh as the writer appends, with values read only for the versions a page shows.

The first view of a key reads where its changes are from the store's history index
(:mod:`.key_index`) when that is ready; each change's seq, time, operation and size are then
read from its record only when a page shows it (:class:`Versions`). Before the index is ready
the first view searches the whole retained log for the key (:func:`logkv.history.key_log`: a
byte search, decoding only the frames around its hits). The console keeps what it found as
:class:`Timeline` with the point the log had been read to. A later view searches only what the
writer appended since (:func:`logkv.history.key_records_from`), so it costs the new bytes, not
the whole log. A compaction (the snapshot covers more segments: the files the locations name
may be retired) makes the next view read the key again (from the index once it is rebuilt).
A value is read from its frame (checksum checked) when a record or a diff asks for that version.

The timelines stay beside the index: they hold what a page has already read of a key (the
index holds locations alone), so paging and repeated views read no record twice, and they are
what a view uses while the index is not ready.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, overload

from ..errors import CorruptionError
from ..format import DeleteRecord, Record, SetRecord
from ..history import base_record, key_log, key_records_from
from ..layout import ARCHIVE_DIR
from .key_index import HistoryIndexes, read_located
from .opened import OpenedStores

#: Timelines kept (by store folder and key); each holds no values, ~150 bytes per change.
TIMELINES_KEPT: Final = 16


@dataclass(frozen=True, slots=True)
class Version:
    """One change of a key: a set or a delete, where its frame is (``path`` None: the value
    the base snapshot kept, held in ``kept``), and where it came from (``source``: ``log``,
    ``archive`` or ``snapshot``)."""

    seq: int
    timestamp_us: int
    op: str
    content_type: str | None
    size: int | None  # bytes of the value; 0 for a stored None, None for a delete
    source: str
    path: Path | None
    offset: int = 0
    length: int = 0
    kept: SetRecord | None = None


class Versions(Sequence[Version]):
    """A timeline's changes, oldest first. A change known only by its location in the log
    (a ``(path, offset)`` pair, as the store's history index gives it) is read from its frame
    when first asked for, so a page of 200 changes reads 200 records, whatever the total."""

    def __init__(self, items: Iterable[Version | tuple[Path, int]] = ()) -> None:
        self._items: list[Version | tuple[Path, int]] = list(items)

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, i: int) -> Version: ...
    @overload
    def __getitem__(self, i: slice) -> list[Version]: ...
    def __getitem__(self, i: int | slice) -> Version | list[Version]:
        if isinstance(i, slice):
            return [self._at(j) for j in range(*i.indices(len(self._items)))]
        return self._at(i)

    def _at(self, i: int) -> Version:
        item = self._items[i]
        if isinstance(item, Version):
            return item
        path, offset = item
        length, record = read_located(path, offset)
        version = _version(path, offset, length, record)
        self._items[i] = version
        return version

    def append(self, version: Version) -> None:
        """Add ``version`` as the newest change."""
        self._items.append(version)


@dataclass
class Timeline:
    """Every retained change of a key, oldest first; ``starts_at``: the first seq the log
    still holds; ``covers``, ``read_to``: the store's snapshot and how far the log had been
    read when the timeline was last brought up to date."""

    key: str
    starts_at: int
    versions: Versions
    covers: int
    read_to: tuple[int, int]

    def find(self, seq: int) -> Version | None:
        """The change at ``seq`` (None: the key did not change then); reads a few records
        (a binary search: seqs grow along the timeline)."""
        versions = self.versions
        i = bisect_left(versions, seq, key=lambda v: v.seq)
        return versions[i] if i < len(versions) and versions[i].seq == seq else None

    def extend(self, versions: list[Version], read_to: tuple[int, int]) -> None:
        """Add the changes found after :attr:`read_to` (those already held are skipped: the
        search that built this may have read past the open's point)."""
        last = self.versions[-1].seq if self.versions else 0
        for version in versions:
            if version.seq > last:
                self.versions.append(version)
                last = version.seq
        self.read_to = read_to


class Timelines:
    """The timelines the console read last, by store folder and key (thread-safe)."""

    def __init__(self, kept: int = TIMELINES_KEPT, indexes: HistoryIndexes | None = None) -> None:
        self._kept = kept
        #: The stores' history indexes: a first view is read from them once they are ready.
        self.indexes = HistoryIndexes() if indexes is None else indexes
        self._held: OrderedDict[tuple[Path, str], Timeline] = OrderedDict()
        self._guard = threading.Lock()  # held for the dict only, never for I/O
        #: Held while a timeline is read or brought up to date (one at a time: two views of a
        #: key never extend it twice); the store's own lock is not held meanwhile.
        self._reading = threading.Lock()

    def get(self, opened: OpenedStores, folder: Path, key: str) -> Timeline:
        """``key``'s timeline in the store at ``folder`` (refreshed through ``opened`` first):
        the one kept brought up to date, or read whole (first view, or the store was
        compacted since)."""
        with opened.use(folder) as store:
            covers, read_to = store.engine.snapshot_covers, store.engine.read_to
        with self._reading:
            return self._get(folder, key, covers, read_to)

    def _get(self, folder: Path, key: str, covers: int, read_to: tuple[int, int]) -> Timeline:
        slot = (folder, key)
        with self._guard:
            held = self._held.get(slot)
            if held is not None:
                self._held.move_to_end(slot)
        if held is not None and held.covers > covers:
            return held  # brought up to a newer state by a view that came after this one
        if held is not None and held.covers == covers:
            if read_to > held.read_to:
                try:
                    found = key_records_from(folder, key, *held.read_to)
                except FileNotFoundError:  # a compaction retired a file meanwhile
                    held = None
                else:
                    held.extend(
                        [_version(r.path, r.offset, r.length, r.record) for r in found], read_to
                    )
            if held is not None:
                return held
        timeline = self._from_index(folder, key, covers)
        if timeline is None:
            timeline = _read_whole(folder, key, covers, read_to)
        with self._guard:
            self._held[slot] = timeline
            self._held.move_to_end(slot)
            while len(self._held) > self._kept:
                self._held.popitem(last=False)
        return timeline

    def _from_index(self, folder: Path, key: str, covers: int) -> Timeline | None:
        """``key``'s timeline from the store's history index (brought up to date first);
        None when it is not ready, or the log changed under it (the caller searches)."""
        index = self.indexes.ready(folder, covers)
        if index is None:
            return None
        try:
            with index.lock:
                index.catch_up()
                located, read_to = index.located(key), index.read_to
            timeline = Timeline(key, index.log.start, Versions(located), covers, read_to)
            if index.log.base is not None:  # the snapshot may keep a change the log lost
                first = timeline.versions[0].seq if located else None
                kept = base_record(index.log, key, () if first is None else (first,))
                if kept is not None and (first is None or kept.seq < first):
                    timeline.versions = Versions([_kept_version(kept), *located])
        except (FileNotFoundError, CorruptionError):
            self.indexes.drop(folder)  # retired or damaged under it: built again next use
            return None
        return timeline

    def forget(self, folder: Path, key: str) -> None:
        """Drop ``key``'s timeline (its files were retired: read it whole next time)."""
        with self._guard:
            self._held.pop((folder, key), None)


def _read_whole(folder: Path, key: str, covers: int, read_to: tuple[int, int]) -> Timeline:
    found = key_log(folder, key)
    versions = [] if found.kept is None else [_kept_version(found.kept)]
    versions.extend(_version(r.path, r.offset, r.length, r.record) for r in found.records)
    return Timeline(key, found.log.start, Versions(versions), covers, read_to)


def _kept_version(record: SetRecord) -> Version:
    return Version(record.seq, record.timestamp_us, "set", record.content_type,
                   record.value_size, "snapshot", None, kept=record)  # fmt: skip


def _version(path: Path, offset: int, length: int, record: Record) -> Version:
    source = "archive" if path.parent.name == ARCHIVE_DIR else "log"
    if isinstance(record, DeleteRecord):
        return Version(record.seq, record.timestamp_us, "delete", None, None, source,
                       path, offset, length)  # fmt: skip
    return Version(record.seq, record.timestamp_us, "set", record.content_type,
                   record.value_size, source, path, offset, length)  # fmt: skip


def read_version(version: Version) -> SetRecord | DeleteRecord:
    """The record of ``version``, read again from its frame (checksum checked). Raises
    :class:`FileNotFoundError` when a compaction retired its file (read the timeline again),
    :class:`~logkv.errors.CorruptionError` when the frame is no longer intact."""
    if version.path is None:
        assert version.kept is not None
        return version.kept
    _, record = read_located(version.path, version.offset)
    if record.seq != version.seq:
        raise CorruptionError(version.path, version.offset, "the record moved")
    return record


def records_at(
    timelines: Timelines, opened: OpenedStores, folder: Path, key: str, seqs: list[int]
) -> list[tuple[Version, SetRecord | DeleteRecord] | None]:
    """For each of ``seqs``: that change of ``key`` and its record (None: ``key`` has no
    change at that seq). A version whose file a compaction retired meanwhile has its timeline
    read whole again (the caller retries on :class:`FileNotFoundError`)."""
    timeline = timelines.get(opened, folder, key)
    out: list[tuple[Version, SetRecord | DeleteRecord] | None] = []
    for seq in seqs:
        try:
            version = timeline.find(seq)
            if version is None:
                out.append(None)
                continue
            out.append((version, read_version(version)))
        except FileNotFoundError:
            timelines.forget(folder, key)
            raise
    return out
