"""Every name logkv gives a file inside a store folder, in one place.

A store folder holds::

    LOCK                     the writer's lock file (holds the writer's pid)
    SYNCED                   how far the log was synced at the writer's last clean close
    00000001.seg ...         log segments, numbered from 1, replayed in number order
    00000004.snap            a snapshot: the live records of segments 1..4, in key order
    00000005.hint ...        hint data of a sealed segment: where its records are (derived)
    archive/00000001.seg ... segments retired by compaction under retention "archive"
    values/00000009.val ...  streamed values, each committed by the record whose seq it bears
    *.tmp                    files being written; removed on the next writable open
    *.damaged                originals of files that salvage rewrote, kept for inspection
    META.json                the store's identity and timestamps (written by the async facade)
    PROVENANCE.json          in a copy made by ``logkv replay``: where it came from
    archive/N.ckpt           a checkpoint: where the live records of the archived log were after
                             record N (20 digits), so history starts there instead of at record 1
    public/KEY.EXT           records materialised by ``get_public_url`` (derived copies)

Any other name (but hidden ``.*`` names) is another program's: opening the store refuses it
(see :func:`is_own_name`), since two storage clients must never share a folder.

Store folders live in ``{storage_dir}/key_value_stores/{name|alias|default}/``; a dropped
store's folder is renamed into ``{storage_dir}/.logkv-trash/`` before its files are deleted.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from pathlib import Path

LOCK_FILE = "LOCK"
SYNCED_FILE = "SYNCED"
SEGMENT_SUFFIX = ".seg"
SNAPSHOT_SUFFIX = ".snap"
HINT_SUFFIX = ".hint"
ARCHIVE_DIR = "archive"
VALUES_DIR = "values"
VALUE_SUFFIX = ".val"
TEMP_SUFFIX = ".tmp"
DAMAGED_SUFFIX = ".damaged"
CHECKPOINT_SUFFIX = ".ckpt"
#: In a copy made by ``logkv replay``: the store it came from and the last record copied.
PROVENANCE_FILE = "PROVENANCE.json"

_SEGMENT_RE = re.compile(r"^(\d{8,})\.seg$")
_CHECKPOINT_RE = re.compile(r"^(\d{20})\.ckpt$")
_SNAPSHOT_RE = re.compile(r"^(\d{8,})\.snap$")
_HINT_RE = re.compile(r"^(\d{8,})\.hint$")
_TORN_TAIL_RE = re.compile(r"^\d{8,}\.seg\.tail-\d+$")
_VALUE_RE = re.compile(r"^(\d{8,})\.val$")


def segment_name(number: int) -> str:
    """The file name of segment ``number`` (``00000007.seg``)."""
    return f"{number:08d}{SEGMENT_SUFFIX}"


def _number_in(pattern: re.Pattern[str], name: str) -> int | None:
    """The number ``pattern``'s group captures in ``name``, or None when it does not match."""
    match = pattern.match(name)
    return int(match.group(1)) if match else None


def segment_number(name: str) -> int | None:
    """The number of a segment file name, or None when ``name`` is not a segment."""
    return _number_in(_SEGMENT_RE, name)


def list_segments(folder: Path) -> list[tuple[int, Path]]:
    """The segments in ``folder`` as ``(number, path)`` pairs, in replay order."""
    return _numbered(folder, segment_number)


def is_store_folder(folder: Path) -> bool:
    """True when ``folder`` is a logkv store by its content (a lock file, a segment or a
    snapshot), whatever its name: the one test of what a store is."""
    if not folder.is_dir():
        return False
    return (
        (folder / LOCK_FILE).exists() or bool(list_segments(folder)) or bool(list_snapshots(folder))
    )


def is_store_entry(name: str) -> bool:
    """True when ``name`` is a name logkv reads or writes in a store folder (or in its
    ``archive/`` folder)."""
    if name in _OWN_NAMES or name.endswith(TEMP_SUFFIX):
        return True
    base = name.removesuffix(DAMAGED_SUFFIX)  # a damaged segment or snapshot, or a kept tail
    return (
        segment_number(base) is not None
        or _SNAPSHOT_RE.match(base) is not None
        or _CHECKPOINT_RE.match(base) is not None
        or _HINT_RE.match(name) is not None
        or (base != name and _TORN_TAIL_RE.match(base) is not None)
        or _VALUE_RE.match(name) is not None
    )


def is_own_name(name: str) -> bool:
    """True when ``name`` is one logkv gives an entry of a store folder (listed above), or a
    hidden name (``.*``: bookkeeping of the operating system, an editor or NFS)."""
    return name.startswith(".") or is_store_entry(name)


def torn_tail_copy_name(segment: str, offset: int) -> str:
    """Where a writable open keeps the bytes of a torn tail of complete but bad frames that it
    cut off segment file ``segment`` at ``offset``: ``NNNNNNNN.seg.tail-OFFSET.damaged``."""
    return f"{segment}.tail-{offset}{DAMAGED_SUFFIX}"


def hint_name(number: int) -> str:
    """The file name of segment ``number``'s hint file (``00000007.hint``)."""
    return f"{number:08d}{HINT_SUFFIX}"


def list_hints(folder: Path) -> list[tuple[int, Path]]:
    """The segment hint files in ``folder`` as ``(segment number, path)`` pairs, in order."""
    return _numbered(folder, partial(_number_in, _HINT_RE))


def snapshot_name(covers: int) -> str:
    """The file name of the snapshot of segments ``1..covers`` (``00000004.snap``)."""
    return f"{covers:08d}{SNAPSHOT_SUFFIX}"


def snapshot_number(name: str) -> int | None:
    """What a snapshot file name says it covers, or None when ``name`` is not a snapshot."""
    return _number_in(_SNAPSHOT_RE, name)


def list_snapshots(folder: Path) -> list[tuple[int, Path]]:
    """The snapshots in ``folder`` as ``(covers, path)`` pairs, oldest first."""
    return _numbered(folder, snapshot_number)


def value_file_name(seq: int) -> str:
    """The file name of the value file that record ``seq`` commits (``00000009.val``)."""
    return f"{seq:08d}{VALUE_SUFFIX}"


def value_file_number(name: str) -> int | None:
    """The seq a value file name bears, or None when ``name`` is not a value file."""
    return _number_in(_VALUE_RE, name)


def list_value_files(folder: Path) -> list[tuple[int, Path]]:
    """The value files of the store in ``folder`` as ``(seq, path)`` pairs, oldest first
    (none when it has no ``values/`` folder)."""
    values = folder / VALUES_DIR
    return _numbered(values, value_file_number) if values.is_dir() else []


def _numbered(folder: Path, number_of: Callable[[str], int | None]) -> list[tuple[int, Path]]:
    """The entries of ``folder`` whose name ``number_of`` gives a number, as ``(number,
    path)`` pairs in number order."""
    found = []
    for entry in folder.iterdir():
        number = number_of(entry.name)
        if number is not None:
            found.append((number, entry))
    found.sort()
    return found


def checkpoint_name(seq: int) -> str:
    """The file name of the checkpoint after record ``seq`` (``00000000000000250000.ckpt``)."""
    return f"{seq:020d}{CHECKPOINT_SUFFIX}"


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """The checkpoints in ``folder`` (a store's ``archive/``) as ``(seq, path)``, oldest first."""
    return _numbered(folder, partial(_number_in, _CHECKPOINT_RE))


def data_file_name(file_id: int) -> str:
    """The file an index entry's file id names: segment ``n`` for ``n > 0``, else the
    snapshot covering ``-n``."""
    return segment_name(file_id) if file_id > 0 else snapshot_name(-file_id)


# ---------------------------------------------------------------- names used by the async facade

#: The folder inside a storage directory that holds one folder per key-value store.
KVS_DIR = "key_value_stores"
#: The store's identity (id, name, kind) and timestamps, replaced atomically when they change.
META_FILE = "META.json"
#: Records materialised as plain files by ``get_public_url``; never read by the engine.
PUBLIC_DIR = "public"
#: The file that marks a Crawlee file-system store (which logkv refuses to open as its own).
CRAWLEE_METADATA_FILE = "__metadata__.json"
#: The folder beside ``key_value_stores/`` into which a dropped store's folder is renamed in one
#: step before its files are deleted; whatever an interrupted drop left there is deleted on the
#: next open of a store of that storage directory. Never listed as a store.
TRASH_DIR = ".logkv-trash"
#: The folder beside a store folder being restored from its bucket copy, in which the restore
#: builds it (``.logkv-restoring/NAME``) before renaming it into place in one step; a restore
#: killed halfway leaves it there, and the next restore of that store deletes it. It holds no
#: store itself, so it is never listed as one.
RESTORE_DIR = ".logkv-restoring"
#: The folder beside a replay's target in which ``logkv replay`` builds the copy
#: (``.logkv-replaying/NAME``) before renaming it into place; the next replay into that target
#: deletes what a killed one left.
REPLAY_DIR = ".logkv-replaying"
#: The folder of the default key-value store of Crawlee's file-system client, where Crawlee's
#: file-system request queues keep their state (whatever store a crawler uses).
CRAWLEE_FILE_SYSTEM_DEFAULT_DIR = "default"

_OWN_NAMES = frozenset(
    {LOCK_FILE, SYNCED_FILE, ARCHIVE_DIR, VALUES_DIR, META_FILE, PUBLIC_DIR, PROVENANCE_FILE}
)
