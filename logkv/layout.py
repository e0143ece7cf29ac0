"""Every name logkv gives a file inside a store folder, in one place.

A store folder holds::

    LOCK                     the writer's lock file (holds the writer's pid)
    00000001.seg ...         log segments, numbered from 1, replayed in number order
    00000004.snap            a snapshot: the live records of segments 1..4, in key order
    archive/00000001.seg ... segments retired by compaction under retention "archive"
    *.tmp                    files being written; removed on the next writable open
    *.damaged                originals of files that salvage rewrote, kept for inspection
    META.json                the store's identity and timestamps (written by the async facade)
    public/KEY.EXT           records materialised by ``get_public_url`` (derived copies)

Store folders live in ``{storage_dir}/key_value_stores/{name|alias|default}/``.
"""

from __future__ import annotations

import re
from pathlib import Path

LOCK_FILE = "LOCK"
SEGMENT_SUFFIX = ".seg"
SNAPSHOT_SUFFIX = ".snap"
ARCHIVE_DIR = "archive"
TEMP_SUFFIX = ".tmp"
DAMAGED_SUFFIX = ".damaged"

_SEGMENT_RE = re.compile(r"^(\d{8,})\.seg$")
_SNAPSHOT_RE = re.compile(r"^(\d{8,})\.snap$")


def segment_name(number: int) -> str:
    """The file name of segment ``number`` (``00000007.seg``)."""
    return f"{number:08d}{SEGMENT_SUFFIX}"


def segment_number(name: str) -> int | None:
    """The number of a segment file name, or None when ``name`` is not a segment."""
    match = _SEGMENT_RE.match(name)
    return int(match.group(1)) if match else None


def list_segments(folder: Path) -> list[tuple[int, Path]]:
    """The segments in ``folder`` as ``(number, path)`` pairs, in replay order."""
    found = []
    for entry in folder.iterdir():
        number = segment_number(entry.name)
        if number is not None:
            found.append((number, entry))
    found.sort()
    return found


def is_store_folder(folder: Path) -> bool:
    """True when ``folder`` looks like a logkv store (it has a lock file or a segment)."""
    if not folder.is_dir():
        return False
    return (
        (folder / LOCK_FILE).exists() or bool(list_segments(folder)) or bool(list_snapshots(folder))
    )


def is_store_entry(name: str) -> bool:
    """True when ``name`` is a name logkv reads or writes in a store folder (or in its
    ``archive/`` folder)."""
    return (
        name in (LOCK_FILE, META_FILE, ARCHIVE_DIR, PUBLIC_DIR)
        or segment_number(name) is not None
        or _SNAPSHOT_RE.match(name) is not None
        or name.endswith((TEMP_SUFFIX, DAMAGED_SUFFIX))
    )


def snapshot_name(covers: int) -> str:
    """The file name of the snapshot of segments ``1..covers`` (``00000004.snap``)."""
    return f"{covers:08d}{SNAPSHOT_SUFFIX}"


def list_snapshots(folder: Path) -> list[tuple[int, Path]]:
    """The snapshots in ``folder`` as ``(covers, path)`` pairs, oldest first."""
    found = []
    for entry in folder.iterdir():
        match = _SNAPSHOT_RE.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry))
    found.sort()
    return found


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
