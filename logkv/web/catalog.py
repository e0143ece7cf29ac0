"""Which stores a storage folder holds, and the one way a request names one of them.

A storage folder holds one folder per storage kind (``key_value_stores/``, ``datasets/``,
``request_queues/``) and one store folder below each. A request names a store by kind and
name; :func:`resolve` answers only with a folder found by listing the kind's folder, so no
name (``..``, a slash, a link) can reach outside the storage folder. Links are never followed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ..layout import RESTORE_DIR, TRASH_DIR, is_store_folder
from ..storage_layout import STORAGE_DIRS

#: The storage kinds' folder names, in the order the overview shows them.
KINDS: Final = tuple(STORAGE_DIRS.values())
#: How the console names each kind's folder.
KIND_WORDS: Final = {
    STORAGE_DIRS["key_value_store"]: "key-value stores",
    STORAGE_DIRS["dataset"]: "datasets",
    STORAGE_DIRS["request_queue"]: "request queues",
}


class UnknownStoreError(LookupError):
    """No store of that kind and name in the storage folder."""


@dataclass(frozen=True, slots=True)
class StoreRef:
    """A store of the storage folder: its kind's folder name, its own name and its path."""

    kind: str
    name: str
    path: Path


def list_stores(storage_dir: Path) -> list[StoreRef]:
    """Every store folder of ``storage_dir``, by kind then name. Hidden folders (the trash, a
    restore under way), links, and folders that are no logkv store are left out."""
    found: list[StoreRef] = []
    for kind in KINDS:
        folder = storage_dir / kind
        if folder.is_symlink() or not folder.is_dir():
            continue
        with os.scandir(folder) as entries:
            names = sorted(e.name for e in entries if e.is_dir(follow_symlinks=False))
        for name in names:
            if not _plain_name(name):
                continue
            path = folder / name
            if is_store_folder(path):
                found.append(StoreRef(kind, name, path))
    return found


def resolve(storage_dir: Path, kind: str, name: str) -> StoreRef:
    """The store ``name`` of kind folder ``kind``; raises :class:`UnknownStoreError` for
    anything :func:`list_stores` would not list (no such store, a hidden name, a link, a name
    with a path in it), so a request cannot name a folder outside ``storage_dir``."""
    missing = UnknownStoreError(f"no store {name!r} among the {KIND_WORDS.get(kind, 'stores')}")
    if kind not in KINDS or not _plain_name(name):
        raise missing
    folder = storage_dir / kind
    path = folder / name
    if folder.is_symlink() or path.is_symlink() or not is_store_folder(path):
        raise missing
    return StoreRef(kind, name, path)


def _plain_name(name: str) -> bool:
    """A name a store folder can have: one path component, not hidden, not special."""
    return (
        bool(name)
        and not name.startswith(".")
        and "/" not in name
        and "\x00" not in name
        and name not in (TRASH_DIR, RESTORE_DIR)
        and len(name.encode("utf-8", "surrogateescape")) <= 255
    )
