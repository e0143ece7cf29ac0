"""Every name logkv gives a file inside a store folder, in one place.

A store folder holds::

    LOCK                     the writer's lock file (holds the writer's pid)
    00000001.seg ...         log segments, numbered from 1, replayed in number order
    *.tmp                    files being written; removed on the next writable open
"""

from __future__ import annotations

import re
from pathlib import Path

LOCK_FILE = "LOCK"
SEGMENT_SUFFIX = ".seg"
TEMP_SUFFIX = ".tmp"
DAMAGED_SUFFIX = ".damaged"

_SEGMENT_RE = re.compile(r"^(\d{8,})\.seg$")


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
    return (folder / LOCK_FILE).exists() or bool(list_segments(folder))
