"""Checkpoints: where the live records of an archived log were after a sequence number.

Under retention archive every record ever written stays in the store's segments (``archive/``
and the current ones), so the state at any point can be rebuilt by replaying the log from
record 1; for a long history that takes a while (10M records: ~20 s). A checkpoint makes it
fast: ``archive/NNNNNNNNNNNNNNNNNNNN.ckpt`` holds, for the state after record ``N``, each live
key's location in the archived segments (segment, offset, sizes, content type; no values), the
chain value and timestamp of record ``N`` and where the record after it starts. History
(:func:`logkv.history.state_at`) loads the newest checkpoint at or before its target and
replays only the records after it.

A compaction with retention archive writes them (:func:`update_checkpoints`) after it has moved
the covered segments to ``archive/``: it folds the archived records since the newest checkpoint
and writes one every ``every`` records (at a batch's end), then applies the retention policy.
Reading takes no lock and the archived segments never change, so a writer goes on meanwhile.
A checkpoint is written to a temp file, fsynced and renamed into place; a compaction killed
halfway leaves fewer checkpoints, and the next one folds on from the newest that exists.

The file (docs/FORMAT.md, section 7.5)::

    header  16 bytes   b"\\x89LKVCKP\\n", u32 version (1), u32 0
    hint    block      msgpack [keys, segments, offsets, heads, sizes, type_ids, types]
    meta    block      msgpack map: seq, chain, last_us, max_us, segment, offset,
                       first_segment, keys, hint_offset, created_us
    tail    16 bytes   u64 offset of the meta block, b"\\x89LKVEND\\n"

Blocks and the tail are a snapshot's (:mod:`logkv.blocks`); the columns are little-endian.
"""

from __future__ import annotations

import logging
import os
import struct
import sys
import time
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgpack

from .blocks import TAIL, encode_ending, read_hint, read_meta
from .errors import CorruptionError
from .files import open_bytes
from .format import GENESIS_CHAIN, SEGMENT_HEADER_SIZE, chain_of
from .fsutil import create_temp, fsync_dir, remove_quietly
from .hints import pack_keys
from .layout import ARCHIVE_DIR, TEMP_SUFFIX, checkpoint_name, list_checkpoints, list_segments
from .le_columns import le_bytes, le_column
from .log_cut import continues_batch
from .replay import Entry, set_entry
from .scan import SegmentReader, fail_on_damage

log = logging.getLogger(__name__)

CHECKPOINT_MAGIC: Final = b"\x89LKVCKP\n"
CHECKPOINT_VERSION: Final = 1
CHECKPOINT_HEADER: Final = struct.Struct("<8sII")  # magic, version, 0

#: Records between two checkpoints, by default (``LOGKV_CHECKPOINT_EVERY``).
DEFAULT_EVERY: Final = 250_000


@dataclass(frozen=True)
class CheckpointPolicy:
    """How compaction under retention archive keeps checkpoints.

    ``every``: records between two checkpoints (0: write none). A checkpoint is kept while it
    is one of the ``keep`` newest or its point in history is younger than ``keep_for_s``
    seconds, and the newest is always kept; with neither set (the default) every checkpoint
    is kept. From the environment:
    ``LOGKV_CHECKPOINT_EVERY``, ``LOGKV_CHECKPOINT_KEEP`` and ``LOGKV_CHECKPOINT_KEEP_FOR``."""

    every: int = DEFAULT_EVERY
    keep: int | None = None
    keep_for_s: float | None = None

    def __post_init__(self) -> None:
        if self.every < 0 or (self.keep is not None and self.keep < 0):
            raise ValueError("checkpoint counts cannot be negative")
        if self.keep_for_s is not None and self.keep_for_s < 0:
            raise ValueError("a checkpoint age cannot be negative")

    @classmethod
    def from_env(cls) -> CheckpointPolicy:
        """The policy the environment sets (the defaults for what it does not)."""
        env = os.environ
        try:
            every = int(env.get("LOGKV_CHECKPOINT_EVERY", DEFAULT_EVERY))
            keep = env.get("LOGKV_CHECKPOINT_KEEP")
            keep_for = env.get("LOGKV_CHECKPOINT_KEEP_FOR")
            return cls(
                every,
                None if keep in (None, "") else int(keep),
                None if keep_for in (None, "") else float(keep_for),
            )
        except ValueError as exc:
            raise ValueError(f"bad LOGKV_CHECKPOINT_* setting: {exc}") from None


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint's meta block says: the state after record ``seq`` (its chain value,
    its time, and the newest time of any record up to it), where the record after it starts
    (``segment``, ``offset``), and the oldest segment its entries point into."""

    path: Path
    seq: int
    chain: bytes
    last_us: int
    max_us: int
    segment: int
    offset: int
    first_segment: int
    keys: int


def write_checkpoint(folder: Path, info: CheckpointInfo, entries: dict[str, Entry]) -> None:
    """Write the checkpoint ``info`` of ``entries`` (key -> its entry in a segment) into
    ``folder`` (a store's ``archive/``): temp file, fsync, rename, fsync the folder."""
    keys = sorted(entries)
    types: dict[str | None, int] = {}
    columns = [array("I"), array("Q"), array("I"), array("q"), array("I")]
    segments, offsets, heads, sizes, type_ids = columns
    for key in keys:
        number, offset, head, size, content_type = entries[key]
        segments.append(number)
        offsets.append(offset)
        heads.append(head)
        sizes.append(size)
        type_id = types.get(content_type)
        if type_id is None:
            type_id = types[content_type] = len(types)
        type_ids.append(type_id)
    hint = b"".join(
        [
            msgpack.Packer().pack_array_header(7),
            pack_keys(keys),
            *(msgpack.packb(le_bytes(column)) for column in columns),
            msgpack.packb(list(types)),
        ]
    )
    header = CHECKPOINT_HEADER.pack(CHECKPOINT_MAGIC, CHECKPOINT_VERSION, 0)
    meta = msgpack.packb(
        {
            "seq": info.seq,
            "chain": info.chain,
            "last_us": info.last_us,
            "max_us": info.max_us,
            "segment": info.segment,
            "offset": info.offset,
            "first_segment": info.first_segment,
            "keys": len(keys),
            "hint_offset": len(header),
            "created_us": time.time_ns() // 1000,
        }
    )
    path = folder / checkpoint_name(info.seq)
    fd, temp = create_temp(path)
    try:
        with open(fd, "wb", closefd=True) as file:
            file.write(header)
            for piece in encode_ending(len(header), hint, meta):
                file.write(piece)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        remove_quietly(temp)
        raise
    fsync_dir(folder)


def load_checkpoint(path: Path, *, entries: bool = True) -> tuple[CheckpointInfo, dict[str, Entry]]:
    """Read checkpoint ``path``: its info and (with ``entries``) key -> entry in a segment.
    A damaged file raises :class:`~logkv.errors.CorruptionError`."""
    with open_bytes(path) as file:
        if file.size < CHECKPOINT_HEADER.size + TAIL.size:
            raise CorruptionError(path, 0, "checkpoint is cut short")
        magic, version, _ = CHECKPOINT_HEADER.unpack(file.read(0, CHECKPOINT_HEADER.size))
        if magic != CHECKPOINT_MAGIC or version != CHECKPOINT_VERSION:
            raise CorruptionError(path, 0, "bad checkpoint header")
        meta, meta_offset = read_meta(path, file, CHECKPOINT_HEADER.size, "checkpoint")
        try:
            info = CheckpointInfo(
                path,
                int(meta["seq"]),
                bytes(meta["chain"]),
                int(meta["last_us"]),
                int(meta["max_us"]),
                int(meta["segment"]),
                int(meta["offset"]),
                int(meta["first_segment"]),
                int(meta["keys"]),
            )
            hint_offset = int(meta["hint_offset"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptionError(
                path, meta_offset, f"checkpoint meta is incomplete: {exc}"
            ) from None
        if not entries:
            return info, {}
        hint = read_hint(path, file, hint_offset, meta_offset, "checkpoint")
    try:
        keys, *raw, types = hint
        segments = le_column("I", raw[0])
        offsets, heads = le_column("Q", raw[1]), le_column("I", raw[2])
        sizes, type_ids = le_column("q", raw[3]), le_column("I", raw[4])
        if not len(keys) == len(segments) == len(offsets) == len(heads) == len(sizes):
            raise ValueError("columns differ in length")
        content_types = [t if t is None else sys.intern(t) for t in types]
        found = dict(
            zip(
                keys,
                zip(
                    segments.tolist(),
                    offsets.tolist(),
                    heads.tolist(),
                    sizes.tolist(),
                    map(content_types.__getitem__, type_ids),
                    strict=True,
                ),
                strict=True,
            )
        )
    except (TypeError, ValueError, IndexError) as exc:
        raise CorruptionError(path, hint_offset, f"checkpoint hint is malformed: {exc}") from None
    return info, found


def checkpoints_of(folder: Path) -> list[CheckpointInfo]:
    """The intact checkpoints of the store ``folder``, oldest first (their meta blocks only;
    a damaged one is left out, and logged)."""
    archive = folder / ARCHIVE_DIR
    if not archive.is_dir():
        return []
    found = []
    for _, path in list_checkpoints(archive):
        try:
            found.append(load_checkpoint(path, entries=False)[0])
        except FileNotFoundError:
            continue  # removed by retention meanwhile
        except CorruptionError as exc:
            log.warning("checkpoint %s is damaged and not used: %s", path, exc.reason)
    return found


@dataclass
class _Fold:
    """The state of the archived log as it is folded: key -> entry, and the last record."""

    entries: dict[str, Entry]
    seq: int = 0
    chain: bytes = GENESIS_CHAIN
    last_us: int = 0
    max_us: int = 0
    since: int = 0  # records folded since the last checkpoint


def update_checkpoints(folder: Path, policy: CheckpointPolicy) -> list[Path]:
    """Write the checkpoints the archive of store ``folder`` lacks (one every
    ``policy.every`` records after the newest one, up to the end of the archived segments),
    then apply the policy's retention. Returns the checkpoints written.

    Folds from the newest intact checkpoint whose segments are all archived, else from
    segment 1; an archive that starts later (its beginning was deleted) gets none.
    """
    archive = folder / ARCHIVE_DIR
    if not archive.is_dir():
        return []
    for leftover in archive.glob("*.ckpt" + TEMP_SUFFIX):
        leftover.unlink()  # a compaction killed while writing one (only compaction writes)
    written: list[Path] = []
    if policy.every > 0:
        written = _fold_archive(folder, archive, policy.every)
    prune_checkpoints(folder, policy)
    return written


def _fold_archive(folder: Path, archive: Path, every: int) -> list[Path]:
    segments = _archived_run(archive)
    if not segments:
        return []
    first = segments[0][0]
    start = next(
        (c for c in reversed(checkpoints_of(folder)) if c.first_segment >= first),
        None,
    )
    if start is None and first != 1:
        return []  # the archive does not reach back to record 1: nothing to fold from
    fold = _Fold({})
    position = (first, 0)
    if start is not None:
        _, fold.entries = load_checkpoint(start.path)
        fold.seq, fold.chain, fold.last_us, fold.max_us = (
            start.seq, start.chain, start.last_us, start.max_us,
        )  # fmt: skip
        position = (start.segment, start.offset)
    written: list[Path] = []
    for number, path in segments:
        if number < position[0]:
            continue
        offset = position[1] if number == position[0] else 0
        written += _fold_segment(archive, fold, number, path, offset, every)
    return written


def _archived_run(archive: Path) -> list[tuple[int, Path]]:
    """The archived segments of the unbroken run that ends at the newest one."""
    segments = list_segments(archive)
    start = len(segments) - 1
    while start > 0 and segments[start - 1][0] == segments[start][0] - 1:
        start -= 1
    return segments[max(start, 0) :]


def _fold_segment(
    archive: Path, fold: _Fold, number: int, path: Path, offset: int, every: int
) -> list[Path]:
    """Fold the records of archived segment ``path`` from ``offset`` (0: from its header),
    writing a checkpoint once ``every`` records were folded since the last, at the end of a
    batch: before the next record that does not continue one, or at the segment's end (a
    batch never spans segments)."""
    written: list[Path] = []
    entries = fold.entries
    last = -1  # offset of the last record folded in this segment
    end = offset
    with SegmentReader(path, number, is_last=False, synced=None, report=fail_on_damage) as reader:
        buf = reader.buf
        for pos, length, fields in reader.frames(offset if offset > SEGMENT_HEADER_SIZE else 0):
            if fold.since >= every and not continues_batch(buf, pos, length):
                fold.chain = chain_of(buf, last)
                written.append(_write(archive, fold, number, pos))
            key = fields[3]
            entry = set_entry(number, pos, length, fields)  # a streamed set is a set too
            if entry is not None:
                entries[key] = entry
            else:
                entries.pop(key, None)
            fold.seq, fold.last_us = fields[0], fields[1]
            fold.max_us = max(fold.max_us, fields[1])
            fold.since += 1
            last, end = pos, pos + length
        if last >= 0:
            fold.chain = chain_of(buf, last)
            if fold.since >= every:
                written.append(_write(archive, fold, number, end))
    return written


def _write(archive: Path, fold: _Fold, number: int, resume: int) -> Path:
    """Write the checkpoint of ``fold`` as it is now; the next record is at ``resume`` in
    segment ``number``."""
    entries = fold.entries
    info = CheckpointInfo(
        archive / checkpoint_name(fold.seq),
        fold.seq,
        fold.chain,
        fold.last_us,
        fold.max_us,
        number,
        resume,
        min(e[0] for e in entries.values()) if entries else number,
        len(entries),
    )
    write_checkpoint(archive, info, entries)
    fold.since = 0
    return info.path


def prune_checkpoints(folder: Path, policy: CheckpointPolicy, now_us: int | None = None) -> int:
    """Delete the checkpoints of store ``folder`` that ``policy`` does not keep; how many."""
    if policy.keep is None and policy.keep_for_s is None:
        return 0
    now_us = time.time_ns() // 1000 if now_us is None else now_us
    found = checkpoints_of(folder)
    # The newest is always kept: the next compaction folds on from it (else it would fold the
    # whole archive again, and write the checkpoints retention just removed).
    newest = {c.path for c in found[len(found) - max(policy.keep or 0, 1) :]}
    removed = 0
    for checkpoint in found:
        young = (
            policy.keep_for_s is not None
            and now_us - checkpoint.last_us < policy.keep_for_s * 1_000_000
        )
        if checkpoint.path not in newest and not young:
            checkpoint.path.unlink(missing_ok=True)
            removed += 1
    if removed:
        fsync_dir(folder / ARCHIVE_DIR)
    return removed
