"""Audit-grade replay: a copy of a store as it was after a sequence number or at a time.

The copy is built from the original's own bytes. Its files are the original's retained history
(the archived segments, the current ones, and the snapshot the history starts from when older
segments were deleted), copied byte for byte and cut after the last record at or before the
target. The value files the kept records name (streamed values, docs/FORMAT.md section 14)
come along, hard-linked where the file system allows (they never change) or copied. So every
record keeps its sequence number, timestamp and chain value, and the copy's
chain value at sequence ``N`` is the original's: ``logkv verify`` on the copy checks the same
links the original holds. A target inside a batch cuts before the batch (a batch is applied
whole or not at all, so no state inside it ever existed); the same rule as a restore from the
bucket (:func:`find_cut` is shared).

The copy records where it came from in ``PROVENANCE.json`` (docs/FORMAT.md, section 16). It is
built in a hidden staging folder beside the target (``.logkv-replaying/NAME``), checked (every
checksum and the chain, then an open), made durable and renamed into place in one step: a
replay killed at any moment leaves no store at the target, only the staging folder, which the
next replay into that target removes. The copy is a normal store: it opens, and new writes
continue its chain.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from .engine import Engine
from .errors import LogKVError
from .files import SourcePath, open_bytes, read_whole
from .format import GENESIS_CHAIN
from .fsutil import (
    atomic_write,
    fsync_dir,
    install_folder,
    make_dirs,
    open_file,
    open_for_reading,
    write_all,
)
from .history import HistoryGap, RetainedLog, retained_log, retrying
from .layout import (
    META_FILE,
    PROVENANCE_FILE,
    REPLAY_DIR,
    VALUES_DIR,
    list_value_files,
    value_file_name,
)
from .log_cut import LogCut, Until, find_cut
from .value_refs import named_value_seqs
from .values import value_path
from .verify import verify

PROVENANCE_FORMAT: Final = "logkv-provenance"
PROVENANCE_VERSION: Final = 1
_COPY_CHUNK: Final = 1 << 20


class ReplayTargetError(LogKVError):
    """A replay's target cannot be reached: it lies after the end of the store's log, or the
    folder to write the copy into is not empty."""


@dataclass(frozen=True)
class ReplayResult:
    """What a replay wrote: the new store folder, the last record it holds (its sequence
    number, chain value and time), the records it holds in segments, and its files."""

    target: Path
    last_seq: int
    chain: bytes
    last_us: int
    records: int
    files: list[str]
    bytes: int
    #: The snapshot the copy starts from (history before it was not retained), or None.
    snapshot: str | None
    #: The keys the copy holds.
    keys: int


def staging_folder(target: Path) -> Path:
    """Where a replay into ``target`` builds the copy before renaming it into place."""
    return target.parent / REPLAY_DIR / target.name


def check_target(source: Path, target: Path) -> None:
    """Refuse a target that is not an empty folder, or that lies inside the source store."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ReplayTargetError(
            f"{target} is not an empty folder; replay writes a new store and never into an "
            "existing one. Choose a new folder."
        )
    resolved, store = target.resolve(), source.resolve()
    if resolved == store or store in resolved.parents:
        raise ReplayTargetError(f"{target} lies inside the store {source}")


def replay_store(
    source: Path,
    target: Path,
    *,
    until_seq: int | None = None,
    until_us: int | None = None,
    extra: Mapping[str, bytes] | None = None,
) -> ReplayResult:
    """Write a copy of the store ``source`` as it was after record ``until_seq`` or at time
    ``until_us`` into the new folder ``target`` (see the module docstring).

    Raises :class:`ReplayTargetError` for a sequence number after the store's last one or a
    target folder that is not empty, :class:`~logkv.history.HistoryGap` for a point before the
    retained history, and :class:`~logkv.errors.CorruptionError` for damage or a hole in it.
    Reads take no lock: a live writer may go on writing to ``source`` meanwhile. ``extra``:
    more files for the copy, by name (the caller's ``META.json`` for it, say), written in the
    staging folder with the rest.
    """
    source = source if isinstance(source, Path) else Path(source)  # a file set's path stays one
    target = Path(target)
    check_target(source, target)
    until = Until(until_seq, until_us)
    make_dirs(target.parent, durable=True)
    staging = staging_folder(target)
    try:
        log, cut, files, written = retrying(lambda: _build(source, until, staging))
        snapshot = log.base[0].path.name if log.base is not None and _uses_base(log) else None
        for name, data in (extra or {}).items():
            atomic_write(staging / name, data)
        _write_provenance(source, staging, log, cut, until, snapshot)
        keys = _check_copy(staging, cut)
        fsync_dir(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        with contextlib.suppress(OSError):
            staging.parent.rmdir()
        raise
    install_folder(staging, target)
    return ReplayResult(
        target, cut.last_seq, cut.chain, cut.last_us, cut.records, files, written, snapshot, keys
    )


def _build(source: Path, until: Until, staging: Path) -> tuple[RetainedLog, LogCut, list[str], int]:
    """Plan the copy on one view of the history and copy its files into a fresh ``staging``
    (a file that vanishes meanwhile, retired by a live writer's compaction, raises
    ``FileNotFoundError``: the caller starts over on the newer view)."""
    if staging.exists():
        shutil.rmtree(staging)  # what a replay killed halfway, or an attempt, left
    log, cut = _plan(source, until)
    make_dirs(staging)
    files, written = _copy_files(log, cut, staging)
    return log, cut, files, written


def _uses_base(log: RetainedLog) -> bool:
    """Whether the copy needs the base snapshot: the retained segments start after 1."""
    return not log.segments or log.segments[0][0] != 1


def _segments(log: RetainedLog) -> list[tuple[int, Path]]:
    """The segments the copy is made of: after the base snapshot's, when it has one."""
    if log.base is None or not _uses_base(log):
        return list(log.segments)
    covers = log.base[0].covers
    return [(n, p) for n, p in log.segments if n > covers]


def _plan(source: Path, until: Until) -> tuple[RetainedLog, LogCut]:
    """One view of the retained history, and where the copy cuts it."""
    log = retained_log(source)
    kept_seq, kept_chain, kept_us = 0, GENESIS_CHAIN, 0
    if log.base is not None and _uses_base(log):
        info = log.base[0]
        kept_seq, kept_chain, kept_us = info.last_seq, info.chain, info.last_us
        if (until.seq is not None and until.seq < info.last_seq) or (
            until.us is not None and until.us < info.last_us
        ):
            raise HistoryGap(
                f"the history of {source} before sequence {info.last_seq + 1} is not retained: "
                "it was compacted away (retention delete), or archived segments were removed; "
                "compact with retention archive to keep it"
            )
    cut = find_cut(
        _segments(log), until, kept_seq=kept_seq, kept_chain=kept_chain, kept_us=kept_us,
        synced=log.synced,
    )  # fmt: skip
    if until.seq is not None and cut.index is None and until.seq > cut.last_seq:
        raise ReplayTargetError(
            f"--until {until.seq} lies after the end of {source}: its last sequence number is "
            f"{cut.last_seq}"
        )
    return log, cut


def _copy_files(log: RetainedLog, cut: LogCut, staging: Path) -> tuple[list[str], int]:
    """Copy the base snapshot (when the copy needs it) and the segments up to the cut into
    ``staging``, each fsynced; the names copied and their bytes."""
    copies: list[tuple[Path, int | None]] = []
    if log.base is not None and _uses_base(log):
        copies.append((log.base[0].path, None))
    segments = _segments(log)
    last = len(segments) if cut.index is None else cut.index + 1
    for i, (_, path) in enumerate(segments[:last]):
        copies.append((path, cut.offset if i == cut.index else None))
    written = 0
    for path, end in copies:
        written += _copy_file(path, staging / path.name, end)
    names = [path.name for path, _ in copies]
    values, value_bytes = _carry_values(log.folder, staging, names, cut)
    return names + values, written + value_bytes


def _carry_values(
    source: Path, staging: Path, names: list[str], cut: LogCut
) -> tuple[list[str], int]:
    """Give the copy the value files its records name (streamed sets of its snapshot and of
    its segments as cut), each hard-linked from ``source`` (value files never change once
    installed) or, where a link cannot be made (another file system, a bucket copy), copied;
    ``values/`` is fsynced. The copy's verify reads each one whole against its record. The
    names (``values/NNNNNNNN.val``) and bytes carried."""
    if not any(seq <= cut.last_seq for seq, _ in list_value_files(source)):
        return [], 0  # no streamed value in reach: the records need not be read again
    seqs = named_value_seqs(staging, names)
    if not seqs:
        return [], 0
    folder = staging / VALUES_DIR
    make_dirs(folder)
    carried, written = [], 0
    for seq in sorted(seqs):
        name = value_file_name(seq)
        written += _link_or_copy(value_path(source, seq), folder / name)
        carried.append(f"{VALUES_DIR}/{name}")
    fsync_dir(folder)
    return carried, written


def _link_or_copy(source: Path, target: Path) -> int:
    """Hard-link the value file ``source`` as ``target`` (never through a symbolic link), or
    copy it where that fails for any reason but its absence; its size."""
    if not isinstance(source, SourcePath):
        try:
            os.link(source, target, follow_symlinks=False)
            return os.lstat(target).st_size
        except FileNotFoundError:
            raise  # retired by a live writer's compaction: the caller starts over
        except OSError:
            pass  # another file system, no hard links there: copied below
    return _copy_file(source, target, None)


def _copy_file(source: Path, target: Path, end: int | None) -> int:
    """Copy the first ``end`` bytes of ``source`` (all: None) into the new file ``target`` and
    fsync it; the bytes copied. A live writer only appends to the source, so the bytes before
    its end as listed never change."""
    fd = open_file(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    written = 0
    try:
        with open_bytes(source) as src:  # a local file, or one a file set serves by ranges
            end = src.size if end is None else min(end, src.size)
            while written < end:
                chunk = src.read(written, min(_COPY_CHUNK, end - written))
                if not chunk:
                    break
                write_all(fd, chunk, written)
                written += len(chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    return written


def _source_meta(source: Path) -> dict[str, Any] | None:
    """The source's ``META.json`` as JSON, or None when it has none (or it is not JSON)."""
    try:
        meta = json.loads(read_whole(source / META_FILE))
    except (FileNotFoundError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _write_provenance(
    source: Path,
    staging: Path,
    log: RetainedLog,
    cut: LogCut,
    until: Until,
    snapshot: str | None,
) -> None:
    """``PROVENANCE.json`` in the copy: the source (its folder, its store id and what it
    stores, from its ``META.json``), the target and the last record copied."""
    meta = _source_meta(source)
    body = {
        "format": PROVENANCE_FORMAT,
        "version": PROVENANCE_VERSION,
        "source": {
            "path": str(source.resolve()),
            "store_id": None if meta is None else meta.get("id"),
            "storage": (meta or {}).get("storage", "key_value_store"),
            "history_start": log.start,
        },
        "until": {"seq": until.seq, "us": until.us},
        "last_seq": cut.last_seq,
        "last_chain": cut.chain.hex(),
        "last_us": cut.last_us,
        "records": cut.records,
        "snapshot": snapshot,
        "replayed_us": time.time_ns() // 1000,
    }
    atomic_write(staging / PROVENANCE_FILE, (json.dumps(body, indent=2) + "\n").encode("utf-8"))


def read_provenance(folder: Path) -> dict[str, Any] | None:
    """What ``PROVENANCE.json`` in ``folder`` says (None: the store is no replayed copy)."""
    try:
        with open_for_reading(folder / PROVENANCE_FILE) as file:
            body = json.loads(file.read())
    except FileNotFoundError:
        return None
    if not isinstance(body, dict) or body.get("format") != PROVENANCE_FORMAT:
        raise ValueError(f"{folder / PROVENANCE_FILE} is not a logkv provenance file")
    return body


def _check_copy(staging: Path, cut: LogCut) -> int:
    """Check the copy before it is put in place: every checksum and the chain, then an open
    that finds the last record where the cut says (it writes the copy's synced mark); the
    keys the copy holds."""
    report = verify(staging)
    if not report.ok:
        raise LogKVError("the replayed copy does not verify: " + "; ".join(report.problems or []))
    with Engine.open(staging) as engine:
        if engine.last_seq != cut.last_seq:
            raise LogKVError(
                f"the replayed copy ends at seq {engine.last_seq}, expected {cut.last_seq}"
            )
        return len(engine)
