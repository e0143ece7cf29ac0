"""The work behind ``logkv stats``, ``verify``, ``history`` and ``replay``, without the output.

Everything here reads a store without taking its lock (the store may have a live writer),
except :func:`replay_into`, which writes the rebuilt state into a new store folder.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

from ..engine import Engine, EngineStats
from ..errors import CorruptionError
from ..format import DeleteRecord, SetRecord
from ..history import (
    HistoryGap,
    StoreChangedError,
    fold_state,
    history_start,
    key_log,
)
from ..index import IndexEntry
from ..layout import ARCHIVE_DIR, META_FILE, list_segments
from ..rebuild import ReplayResult, ReplayTargetError, check_target, replay_store
from ..storage_clients._meta import new_store_id, read_meta
from ..verify import verify
from . import ExitCode
from .common import CommandError
from .contents import Contents, store_contents

#: Times ``verify`` starts over when a writer's compaction retired the log it was reading.
VERIFY_ATTEMPTS: Final = 5

# ---------------------------------------------------------------------------------- stats


@dataclass(frozen=True)
class StoreFigures:
    """``logkv stats``: the engine's figures plus the archive, the reach of the history and
    what the store holds."""

    stats: EngineStats
    archive_segments: int
    archive_bytes: int
    history_start: int
    contents: Contents

    @property
    def dead_ratio(self) -> float:
        """Dead bytes as a share of all record bytes (0 for an empty store)."""
        total = self.stats.live_bytes + self.stats.dead_bytes
        return self.stats.dead_bytes / total if total else 0.0


def store_figures(path: Path) -> StoreFigures:
    """Open ``path`` read-only (beside a live writer, if any) and gather its figures."""
    with Engine.open(path, readonly=True) as engine:
        stats = engine.stats()
        contents = store_contents(path, engine)
    sizes = archive_sizes(path)  # its segments and checkpoints
    archive = path / ARCHIVE_DIR
    segments = len(list_segments(archive)) if archive.is_dir() else 0  # not its checkpoints
    return StoreFigures(stats, segments, sum(sizes), history_start(path), contents)


def archive_sizes(path: Path) -> list[int]:
    """The sizes of the files in the store's ``archive/`` folder (none: no archive)."""
    archive = path / ARCHIVE_DIR
    if not archive.is_dir():
        return []
    return [p.stat().st_size for p in archive.iterdir() if p.is_file()]


# ---------------------------------------------------------------------------------- verify


@dataclass
class VerifyOutcome:
    """``logkv verify``: what was checked, and every problem found (none: the store is sound)."""

    records: int = 0
    chain_checked: int = 0
    snapshot_records: int = 0
    keys_read: int = 0
    problems: list[str] = field(default_factory=list)
    #: A torn tail at the end of the log: not damage (open cuts it off), shown as a note.
    torn_tail: str | None = None

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


def verify_store(path: Path) -> VerifyOutcome:
    """Check every checksum and the hash chain (:func:`logkv.verify.verify`), then open the
    store read-only and read back every key: each value must pass its checksum and match what
    replaying the retained log (from the snapshot, where older segments were deleted) gives.

    A live writer may compact the store meanwhile: the index is compared with the log at the
    index's own sequence number, and when the log that held it was retired in between, the
    check starts over on the newer state; after :data:`VERIFY_ATTEMPTS` such races it raises
    :class:`~logkv.history.StoreChangedError` (never a damage report for a healthy store).
    """
    for _ in range(VERIFY_ATTEMPTS):
        try:
            return _verify_once(path)
        except (HistoryGap, StoreChangedError, FileNotFoundError):
            continue  # a compaction retired what this attempt was reading
    raise StoreChangedError(
        f"{path} changed while it was verified (a writer compacted it during each of "
        f"{VERIFY_ATTEMPTS} attempts); run verify again"
    )


def _verify_once(path: Path) -> VerifyOutcome:
    """One pass of :func:`verify_store`; raises what a race with a compaction raises."""
    report = verify(path)
    outcome = VerifyOutcome(
        records=report.records,
        chain_checked=report.chain_checked,
        snapshot_records=report.snapshot_records,
        problems=list(report.problems or []),
        torn_tail=report.torn_tail,
    )
    try:
        engine = Engine.open(path, readonly=True)
    except CorruptionError as exc:
        outcome.problems.append(f"the store does not open: {exc.path} offset {exc.offset}: "
                                f"{exc.reason}")  # fmt: skip
        return outcome
    with engine:
        try:
            expected = _replayed_state(path, engine.last_seq)
        except CorruptionError:
            expected = None  # verify() has reported the damage; nothing sound to compare with
        # Values are read in the order they lie in the files (each file front to back, as a
        # bucket copy is best read); problems are reported in key order.
        found: list[tuple[str, str]] = []
        located = ((key, engine.entry(key)) for key in engine.keys(None))
        for key, entry in sorted(
            ((k, e) for k, e in located if e is not None), key=lambda ke: (ke[1][0], ke[1][1])
        ):
            outcome.keys_read += 1
            try:
                # not get_record: a reload would move past last_seq; a retired file raises
                # FileNotFoundError, and verify_store starts over
                got = (entry.content_type, _read_digest(engine, entry))
            except CorruptionError as exc:
                found.append((key, f"key {key!r}: its record at {exc.path} offset {exc.offset} "
                                   f"is damaged ({exc.reason})"))  # fmt: skip
                continue
            if expected is None:
                continue
            want = expected.pop(key, None)
            if want is None:
                found.append((key, f"key {key!r} is in the index but not in the log"))
            elif want != got:
                found.append(
                    (key, f"key {key!r}: the index points at a value other than the log's last one")
                )
        outcome.problems.extend(problem for _, problem in sorted(found))
        for key in sorted(expected or ()):
            outcome.problems.append(f"key {key!r} is in the log but missing from the index")
    return outcome


def _read_digest(engine: Engine, entry: IndexEntry) -> bytes | None:
    """The digest of the value ``entry`` points to, read and checked: a streamed value's own
    (its value file is read a chunk at a time and checked against it), else :func:`_digest`."""
    if entry.streamed:
        stream = engine.open_entry(entry)
        for _ in stream:
            pass
        return stream.digest
    return _digest(engine.read(entry))


def _digest(value: bytes | None) -> bytes | None:
    return None if value is None else hashlib.blake2b(value, digest_size=16).digest()


def _replayed_state(path: Path, last_seq: int) -> dict[str, tuple[str | None, bytes | None]]:
    """key -> (content type, value digest) from replaying the retained log up to ``last_seq``
    (digests, not values, to keep memory small on big stores)."""
    return fold_state(path, _digest_of, until_seq=last_seq)


def _digest_of(record: SetRecord) -> tuple[str | None, bytes | None]:
    if record.streamed is not None:  # its value file is checked against this digest on read
        return record.content_type, record.streamed.digest
    return record.content_type, _digest(record.value)


# ---------------------------------------------------------------------------------- history


@dataclass(frozen=True)
class Change:
    """One change of a key: a set (``value`` None: a stored None) or a delete."""

    seq: int
    timestamp_us: int
    op: str
    key: str
    content_type: str | None
    size: int | None  # bytes of the value; 0 for a stored None, None for a delete
    value: bytes | None
    source: str  # "log", "archive", or "snapshot" (a live value older than the retained log)


@dataclass(frozen=True)
class KeyHistory:
    """Every retained change of a key, oldest first, and where the retained history starts."""

    key: str
    changes: list[Change]
    starts_at: int


def key_changes(path: Path, key: str) -> KeyHistory:
    """The history of ``key``: its records in the archived and current segments and, when
    compaction deleted older segments, the value the snapshot kept from before them. A hole
    in the history is :class:`~logkv.errors.CorruptionError` (see :func:`key_log`)."""
    found = key_log(path, key)
    changes = [] if found.kept is None else [_change(found.kept, "snapshot")]
    for logged in found.records:
        source = "archive" if logged.path.parent.name == ARCHIVE_DIR else "log"
        changes.append(_change(logged.record, source))
    return KeyHistory(key, changes, found.log.start)


def _change(record: SetRecord | DeleteRecord, source: str) -> Change:
    if isinstance(record, SetRecord):
        size = record.value_size  # a streamed value's too (its bytes stay in its value file)
        return Change(
            record.seq, record.timestamp_us, "set", record.key, record.content_type, size,
            record.value, source,
        )  # fmt: skip
    return Change(record.seq, record.timestamp_us, "delete", record.key, None, None, None, source)


# ---------------------------------------------------------------------------------- replay


def check_replay_target(source: Path, target: Path) -> None:
    """Refuse a target that is not empty, or that lies inside the source store (exit 2)."""
    try:
        check_target(source, target)
    except ReplayTargetError as exc:
        raise CommandError(str(exc), ExitCode.USAGE) from None


def replay_into(
    source: Path, target: Path, until_seq: int | None, until_us: int | None
) -> ReplayResult:
    """Write a copy of ``source`` as of sequence ``until_seq`` or time ``until_us`` into the
    new store folder ``target`` (:func:`logkv.rebuild.replay_store`: byte-identical records,
    their sequence numbers, times and chain kept, all or nothing). The copy gets the source's
    ``META.json`` with a new id. Raises :class:`~logkv.history.HistoryGap` when compaction
    deleted that part of the history; a sequence number after the end is exit 2."""
    check_replay_target(source, target)
    meta = read_meta(source)
    extra = {}
    if meta is not None:
        copy = replace(meta, id=new_store_id(), created_at=time.time())
        copy.accessed_at = copy.modified_at = copy.created_at
        if copy.name is not None:
            copy.name = target.name
        if copy.alias is not None:
            copy.alias = target.name
        extra[META_FILE] = copy.to_bytes()
    try:
        return replay_store(source, target, until_seq=until_seq, until_us=until_us, extra=extra)
    except ReplayTargetError as exc:
        raise CommandError(str(exc), ExitCode.USAGE) from None
