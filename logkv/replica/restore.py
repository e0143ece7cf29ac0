"""Restore a store from its bucket copy (docs/FORMAT.md, section 13.3).

:func:`plan_restore` picks what to download from the folded slots: the newest complete snapshot
at or before the target, then the consecutive segments after it, refusing a gap.
:func:`restore` downloads them (checking every object's length and SHA-256) into a hidden
staging folder beside the target, cuts the log after the last whole batch at or before the
target, verifies the result (every CRC and the hash chain), makes it durable and renames it
into place in one step: a restore killed halfway leaves only the staging folder
(``.logkv-restoring/NAME`` beside the target), which the next restore of that target removes.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import ReplicaError, ReplicaGapError
from ..fsutil import fsync_dir, install_folder, make_dirs, open_file, write_all
from ..layout import (
    META_FILE,
    RESTORE_DIR,
    VALUES_DIR,
    segment_name,
    segment_number,
    snapshot_name,
    value_file_number,
)
from ..log_cut import Until, find_cut
from ..value_refs import named_value_seqs
from ..verify import verify
from .bucket import Bucket
from .slots import Folded, Piece, digest, fold_slots


@dataclass(frozen=True)
class RestorePlan:
    """What a restore downloads: each file's pieces in order (a snapshot first, if any, then
    segments in number order), ``META.json``'s piece, and the target seq (None: everything)."""

    files: list[tuple[str, list[Piece]]]
    meta: Piece | None
    until: Until
    seq: int
    start_seq: int  # the last seq of the snapshot (0: none)
    #: A gap after the planned segments (only with a target): the restore is refused unless
    #: the target lies before it.
    gap: str | None = None


@dataclass(frozen=True)
class RestoreResult:
    """What a restore wrote: the folder, its files, their bytes and the last seq it holds."""

    folder: Path
    files: int
    bytes: int
    last_seq: int


def plan_restore(folded: Folded, until: Until | None = None) -> RestorePlan:
    """Pick the newest complete snapshot whose last record is not after ``until`` (the newest
    state when None), then the consecutive segments after it;
    :class:`~logkv.errors.ReplicaGapError` when the bucket copy has a gap in that range."""
    where = folded.where
    until = until or Until()
    covers = max(
        (c for c, (seq, us) in folded.snapshots.items() if not until.passed_by(seq, us)),
        default=0,
    )
    first = snapshot_name(covers) if covers else segment_name(1)
    if any(piece.name in folded.retired for piece in folded.files.get(first, [])):
        raise ReplicaError(
            f"{where}: {first}, which a restore "
            + (f"to {until}" if until.given else "of this store")
            + " starts from, is not retained: retention in the bucket retired it (section 13.7 "
            "of the format); restore to a later point"
        )
    files: list[tuple[str, list[Piece]]] = []
    if covers:
        files.append((snapshot_name(covers), folded.files[snapshot_name(covers)]))
    numbers = sorted(n for f in folded.files if (n := segment_number(f)) is not None and n > covers)
    expected = covers + 1
    gap: str | None = None
    for number in numbers:
        name = segment_name(number)
        if number != expected:
            gap = (
                f"{where}: segment {expected} is missing from the bucket copy, which holds "
                f"segment {number} after it; cannot restore "
                + ("to that point" if until.given else "this store")
            )
        elif number != numbers[-1] and name not in folded.sealed:
            files.append((name, folded.files[name]))  # a prefix: the target may lie in it
            gap = (
                f"{where}: segment {number} is incomplete in the bucket copy (its end was never "
                f"shipped before compaction retired it); restore to a later point, whose "
                "snapshot covers it"
            )
        if gap is not None:
            if not until.given:
                raise ReplicaGapError(gap)
            break  # the restore checks that the target lies before the gap
        files.append((name, folded.files[name]))
        expected += 1
    # The value files of streamed sets (sealed: shipped whole), every one the slots hold up to
    # the newest record: they never change, and which of them the records kept name is known
    # only once the log is cut (restore downloads those alone then).
    values = sorted(
        (seq, name)
        for name in folded.files
        if (seq := value_file_seq(name)) is not None
        and name in folded.sealed
        and seq <= folded.seq
        and not any(piece.name in folded.retired for piece in folded.files[name])
    )
    files.extend((name, folded.files[name]) for _, name in values)
    start = folded.snapshots[covers][0] if covers else 0
    return RestorePlan(files, folded.meta, until, folded.seq, start, gap)


def value_file_seq(name: str) -> int | None:
    """The seq of a value file by its name in the slots (``values/NNNNNNNN.val``), or None
    when ``name`` is no value file."""
    folder, _, base = name.partition("/")
    return value_file_number(base) if folder == VALUES_DIR else None


def staging_folder(folder: Path) -> Path:
    """Where a restore into ``folder`` builds the store before renaming it into place."""
    return folder.parent / RESTORE_DIR / folder.name


def restore(
    bucket: Bucket,
    folder: Path,
    *,
    until_seq: int | None = None,
    until_us: int | None = None,
    folded: Folded | None = None,
) -> RestoreResult:
    """Restore the store in ``bucket`` into ``folder``, which must not exist (or be empty):
    its newest state, or as it was after record ``until_seq`` or at time ``until_us``.

    All or nothing (see the module docstring). ``folded``: slots already read (a writer that
    just took the store over restores from exactly what it fenced)."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ReplicaError(f"cannot restore into {folder}: it exists and is not empty")
    folded = folded if folded is not None else fold_slots(bucket)
    if folded.number == 0:
        raise ReplicaError(f"{bucket.describe}: no store was ever replicated here")
    until = Until(until_seq, until_us)
    plan = plan_restore(folded, until)
    make_dirs(folder.parent, durable=True)
    staging = staging_folder(folder)
    if staging.exists():
        shutil.rmtree(staging)  # what a restore killed halfway left
    make_dirs(staging)
    log_files = [(name, pieces) for name, pieces in plan.files if value_file_seq(name) is None]
    total = 0
    for name, pieces in log_files:
        total += _download(bucket, staging / name, pieces)
    if plan.meta is not None:
        total += _download(bucket, staging / META_FILE, [plan.meta])
    last_seq = plan.seq
    if until.given:
        last_seq, cut = _cut_after(staging, [n for n, _ in log_files], until, plan.start_seq)
        if plan.gap is not None and not cut and last_seq != until.seq:
            raise ReplicaGapError(plan.gap)  # the target lies after the gap
    values, value_bytes = _download_named_values(bucket, staging, plan, [n for n, _ in log_files])
    total += value_bytes
    report = verify(staging)
    if not report.ok:
        raise ReplicaError(
            f"{bucket.describe}: the restored store does not verify: "
            + "; ".join(report.problems or [])
        )
    fsync_dir(staging)
    install_folder(staging, folder)
    return RestoreResult(folder, len(log_files) + values, total, last_seq)


def _download_named_values(
    bucket: Bucket, staging: Path, plan: RestorePlan, log_files: list[str]
) -> tuple[int, int]:
    """Download the value files the restored records name (:func:`~logkv.value_refs.
    named_value_seqs`, the rule a replay keeps too), after the log was cut: no file of a record
    after the target, nor one no kept record names. One named but absent from the bucket copy
    is left for verify to report. The files and bytes written."""
    kept = [name for name in log_files if (staging / name).exists()]
    named = named_value_seqs(staging, kept)
    if not named:
        return 0, 0
    make_dirs(staging / VALUES_DIR)
    files = total = 0
    for name, pieces in plan.files:
        if (seq := value_file_seq(name)) is not None and seq in named:
            total += _download(bucket, staging / name, pieces)
            files += 1
    fsync_dir(staging / VALUES_DIR)
    return files, total


def _download(bucket: Bucket, path: Path, pieces: list[Piece]) -> int:
    """Write the pieces of one file, in order, checking each against its slot; fsync it."""
    fd = open_file(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        written = write_pieces(bucket, fd, pieces)
        os.fsync(fd)
    finally:
        os.close(fd)
    return written


def write_pieces(bucket: Bucket, fd: int, pieces: list[Piece]) -> int:
    """Write ``pieces`` (each checked against its slot: :func:`fetch_piece`) into ``fd`` where
    they lie in their file (``META.json``'s piece, replaced whole, at 0); the bytes written."""
    written = 0
    for piece in pieces:
        data = fetch_piece(bucket, piece)
        write_all(fd, data, piece.offset if piece.file != META_FILE else 0)
        written += len(data)
    return written


def fetch_piece(bucket: Bucket, piece: Piece) -> bytes:
    """The bytes of ``piece``, checked against its slot (length and SHA-256);
    :class:`~logkv.errors.ReplicaGapError` when its object is missing or damaged."""
    try:
        data = bucket.get(piece.name)
    except FileNotFoundError:
        raise piece_missing(bucket, piece) from None
    if len(data) != piece.length or digest(data) != piece.sha256:
        raise ReplicaGapError(
            f"{bucket.describe}/{piece.name} (bytes {piece.offset}..{piece.end} of "
            f"{piece.file}) is damaged: its length or SHA-256 differs from its slot's"
        )
    return data


def piece_missing(bucket: Bucket, piece: Piece) -> ReplicaGapError:
    """The error for a piece whose data object is not in the bucket."""
    return ReplicaGapError(
        f"{bucket.describe}/{piece.name} (bytes {piece.offset}..{piece.end} of "
        f"{piece.file}) is missing: the bucket copy has a gap"
    )


def _cut_after(staging: Path, files: list[str], until: Until, kept: int) -> tuple[int, bool]:
    """Cut the restored log before the first record after ``until``, at the start of its
    batch (:func:`~logkv.log_cut.find_cut`): truncate the segment there and delete the
    segments after it. ``kept`` is the last seq before the segments (the snapshot's); returns
    the last seq kept, and whether a record after the target was found (so the restore
    reached it)."""
    segments = [(n, staging / name) for name in files if (n := segment_number(name)) is not None]
    cut = find_cut(segments, until, kept_seq=kept, tail=False)
    if cut.index is None:
        return cut.last_seq, False
    os.truncate(segments[cut.index][1], cut.offset)
    for _, later in segments[cut.index + 1 :]:
        later.unlink()
    return cut.last_seq, True
