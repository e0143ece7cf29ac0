"""Retention in the bucket: which restore points a store's bucket copy keeps, and deleting the
data objects no kept point needs, after a grace period (docs/FORMAT.md, section 13.7).

A **restore point** is a complete snapshot, or the log from segment 1 (covers 0). A point is
kept while it is one of the ``keep_snapshots`` newest or younger than ``keep_for`` seconds (its
age: that of its last record); the newest is always kept. The objects the kept points need are
their snapshots, every segment after the oldest kept one and the value files (streamed
values) their records name; the others (older snapshots, the segments the oldest kept snapshot
covers, the value files only records before it name, and replaced pieces of ``META.json``)
are retired:
:func:`retire` writes a create-only **marker** naming them (readers fold it and refuse a
restore to a point it touches as "not retained"), and deletes them only once the marker is
older than ``grace`` seconds, so a follower or auditor that folded the slots before the marker
can finish reading. Slots are never deleted: they are the fence. Every
:data:`CHECKPOINT_EVERY` slots a run also writes a checkpoint of the folded state (so that a
reader starting from nothing folds only the slots after it) and deletes all but the newest two.

Retention is monotone: a process whose view of the slots is behind (a stale writer) retires
only what a newer view retires too, because slots only add snapshots and ages only grow.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from ..files import mount
from ..layout import SNAPSHOT_SUFFIX, VALUES_DIR, segment_name, segment_number, snapshot_name
from ..value_refs import named_value_seqs
from .bucket import Bucket, ObjectExists
from .remote import BucketFiles
from .restore import value_file_seq
from .slots import (
    CHECKPOINTS_DIR,
    DELETED_SUFFIX,
    Folded,
    encode_marker,
    fold_retired,
    marker_name,
    write_checkpoint,
)

#: A retention run writes a checkpoint when this many slots came after the newest one.
CHECKPOINT_EVERY = 1000
#: Checkpoints kept (the newest); older ones are deleted when a new one is written.
CHECKPOINTS_KEPT = 2


@dataclass(frozen=True)
class RetentionPolicy:
    """What a bucket copy keeps (see the module docstring); the defaults are the
    configuration's (``LOGKV_REPLICA_KEEP_SNAPSHOTS``, ``LOGKV_REPLICA_KEEP_FOR``,
    ``LOGKV_REPLICA_GRACE``)."""

    keep_snapshots: int
    keep_for: float
    grace: float


@dataclass
class RetentionResult:
    """What one retention run did: the restore points kept (by the snapshot each covers; 0 the
    log from segment 1), the objects it retired now, and those it deleted (retired at least a
    grace period ago)."""

    kept: list[int] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    #: The checkpoint written by this run, if any.
    checkpoint: str | None = None


def kept_points(folded: Folded, policy: RetentionPolicy, now_us: int) -> list[int]:
    """The restore points ``policy`` keeps, oldest first (``covers``; 0: the log from
    segment 1, whose age counts as infinite). Points already retired are never kept again."""
    points = {c: us for c, (_, us) in folded.snapshots.items()}
    if segment_name(1) in folded.files:
        points[0] = 0
    points = {c: us for c, us in points.items() if not _retired(folded, c)}
    newest_first = sorted(points, reverse=True)
    keep_for_us = policy.keep_for * 1e6
    kept = [
        c
        for i, c in enumerate(newest_first)
        if i == 0 or i < policy.keep_snapshots or (points[c] and now_us - points[c] < keep_for_us)
    ]
    return sorted(kept)


#: The prefix of the names of value files in the slots (``values/NNNNNNNN.val``).
VALUE_FILES = VALUES_DIR + "/"


def unneeded(
    folded: Folded,
    policy: RetentionPolicy,
    now_us: int,
    named: Callable[[list[str]], set[int]] | None = None,
) -> list[str]:
    """The data objects no kept restore point needs and no marker retired yet.

    A value file is needed while a kept point's records name it. The records of the segments
    after the oldest kept point name only files after that point's last seq, so a file up to
    it is needed only when a kept snapshot names it; ``named(snapshot names)`` says which
    files those are (:func:`snapshot_values`). Without ``named``, value files all stay."""
    kept = kept_points(folded, policy, now_us)
    if not kept:
        return []
    oldest = kept[0]
    names: list[str] = []
    for file, pieces in folded.files.items():
        covers = _snapshot_covers(file)
        if file.startswith(VALUE_FILES):
            continue  # below: by the records of the kept points
        if covers is not None:
            needed = covers in kept
        else:
            number = segment_number(file)
            needed = number is None or number > oldest
        if not needed:
            names.extend(p.name for p in pieces)
    names.extend(_dead_values(folded, kept, named))
    names.extend(p.name for p in folded.metas[:-1])
    return [name for name in names if name not in folded.retired]


def _dead_values(
    folded: Folded, kept: list[int], named: Callable[[list[str]], set[int]] | None
) -> list[str]:
    """The objects of the value files no kept point's records name (see :func:`unneeded`)."""
    if named is None or kept[0] == 0:
        return []  # the log from segment 1 is kept: its records may name any file
    before = folded.snapshots[kept[0]][0]  # the oldest kept point's last seq
    candidates = {
        seq: name
        for name in folded.files
        if (seq := value_file_seq(name)) is not None and seq <= before
    }
    if not candidates:
        return []
    live = named([snapshot_name(covers) for covers in kept])
    return [
        piece.name
        for seq, name in sorted(candidates.items())
        if seq not in live
        for piece in folded.files[name]
    ]


def snapshot_values(bucket: Bucket, folded: Folded, snapshots: list[str]) -> set[int]:
    """The seqs of the value files the bucket copy's ``snapshots`` name, read by ranges (each
    snapshot's hint block and its streamed entries' frames)."""
    files = {name: folded.files[name] for name in snapshots}
    source = BucketFiles(bucket, files)
    try:
        view = mount(source, f"bucket://{bucket.describe}")
        return named_value_seqs(view, snapshots)
    finally:
        source.close()


def retire(
    bucket: Bucket, folded: Folded, policy: RetentionPolicy, *, dry_run: bool = False
) -> RetentionResult:
    """One retention run over ``folded`` (the slots already folded by the caller): write a
    marker retiring what no kept point needs, then delete the objects of markers older than
    the grace period and mark them deleted. ``dry_run``: only say what would be done."""
    fold_retired(bucket, folded)
    now_us = time.time_ns() // 1000
    result = RetentionResult(kept=kept_points(folded, policy, now_us))
    result.retired = unneeded(
        folded, policy, now_us, lambda names: snapshot_values(bucket, folded, names)
    )
    if result.retired and not dry_run:
        name = marker_name(now_us, uuid.uuid4().hex)
        bucket.put_new(name, encode_marker(now_us, result.retired))
        folded.markers[name] = (now_us, result.retired)
        folded.retired.update(result.retired)
    due = now_us - policy.grace * 1e6
    for name, (at_us, objects) in sorted(folded.markers.items()):
        if name in folded.deleted or at_us > due:
            continue
        result.deleted.extend(objects)
        if dry_run:
            continue
        bucket.delete(objects)
        with contextlib.suppress(ObjectExists):  # another run deleted them too
            bucket.put_new(name + DELETED_SUFFIX, b"")
        folded.deleted.add(name)
    if not dry_run and folded.number - folded.checkpoint >= CHECKPOINT_EVERY:
        result.checkpoint = write_checkpoint(bucket, folded)
        older = [n for n in bucket.list_after(CHECKPOINTS_DIR) if n < result.checkpoint]
        bucket.delete(older[: max(0, len(older) - (CHECKPOINTS_KEPT - 1))])
    return result


def _retired(folded: Folded, covers: int) -> bool:
    """Whether restore point ``covers`` lost an object to a marker."""
    file = snapshot_name(covers) if covers else segment_name(1)
    return any(p.name in folded.retired for p in folded.files.get(file, []))


def _snapshot_covers(file: str) -> int | None:
    """The segment a snapshot file name covers, or None when it is no snapshot."""
    digits = file.removesuffix(SNAPSHOT_SUFFIX)
    return int(digits) if digits != file and digits.isdigit() else None
