"""A key's timeline as the console pages it: where each of its changes is in the log, kept
fresh as the writer appends, with values read only for the versions a page shows.

The first view of a key searches the whole retained log for it (:func:`logkv.history.key_log`:
a byte search, decoding only the frames around its hits). The console keeps what it found as
:class:`Timeline` (each change's seq, time, operation, size and location; no values) with the
point the read-only open had read the log to then (:attr:`logkv.Engine.read_to`). A later view
searches only what the writer appended since (:func:`logkv.history.key_records_from`), so it
costs the new bytes, not the whole log. A compaction (the snapshot covers more segments: the
files the locations name may be retired) makes the next view search the whole log again.
A value is read from its frame (checksum checked) when a record or a diff asks for that version.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from ..errors import CorruptionError
from ..format import BadFrame, DeleteRecord, Record, SetRecord, decode_fields, read_frame
from ..fsutil import open_for_reading
from ..history import base_record, key_log, key_records_from
from ..layout import ARCHIVE_DIR
from .key_index import HistoryIndexes, versions_at
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


@dataclass
class Timeline:
    """Every retained change of a key, oldest first; ``starts_at``: the first seq the log
    still holds; ``covers``, ``read_to``: the store's snapshot and how far the log had been
    read when the timeline was last brought up to date."""

    key: str
    starts_at: int
    versions: list[Version]
    covers: int
    read_to: tuple[int, int]
    by_seq: dict[int, Version] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_seq = {v.seq: v for v in self.versions}

    def extend(self, versions: list[Version], read_to: tuple[int, int]) -> None:
        """Add the changes found after :attr:`read_to` (those already held are skipped: the
        search that built this may have read past the open's point)."""
        last = self.versions[-1].seq if self.versions else 0
        for version in versions:
            if version.seq > last:
                self.versions.append(version)
                self.by_seq[version.seq] = version
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
                locations, read_to = index.locations(key), index.read_to
            found = list(versions_at(index, key, locations))
        except (FileNotFoundError, BadFrame, CorruptionError):
            self.indexes.drop(folder)  # retired or damaged under it: built again next use
            return None
        kept = base_record(index.log, key, {f.record.seq for f in found})
        versions = [] if kept is None else [_kept_version(kept)]
        versions.extend(_version(f.path, f.offset, f.length, f.record) for f in found)
        return Timeline(key, index.log.start, versions, covers, read_to)

    def forget(self, folder: Path, key: str) -> None:
        """Drop ``key``'s timeline (its files were retired: read it whole next time)."""
        with self._guard:
            self._held.pop((folder, key), None)


def _read_whole(folder: Path, key: str, covers: int, read_to: tuple[int, int]) -> Timeline:
    found = key_log(folder, key)
    versions = [] if found.kept is None else [_kept_version(found.kept)]
    versions.extend(_version(r.path, r.offset, r.length, r.record) for r in found.records)
    return Timeline(key, found.log.start, versions, covers, read_to)


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
    with open_for_reading(version.path) as file:
        data = os.pread(file.fileno(), version.length, version.offset)
    try:
        _, fields = read_frame(data, 0, len(data))
    except BadFrame as exc:
        raise CorruptionError(version.path, version.offset, exc.reason) from None
    record = decode_fields(fields)
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
        version = timeline.by_seq.get(seq)
        if version is None:
            out.append(None)
            continue
        try:
            out.append((version, read_version(version)))
        except FileNotFoundError:
            timelines.forget(folder, key)
            raise
    return out
