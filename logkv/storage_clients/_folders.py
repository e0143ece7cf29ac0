"""Where logkv stores are: store folders, found by name, alias or id, and refused when they
hold something that is not a logkv store.

A store lives in ``{storage_dir}/key_value_stores/{name|alias|default}/``: the engine's log (and
snapshots), its lock file, ``META.json`` (identity and timestamps, see
:mod:`logkv.storage_clients._meta`) and ``public/`` (files made by ``get_public_url``). A
dropped store is moved into the storage directory's trash first (see
:func:`logkv.storage_clients._store.drop_store`).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Final

from ..errors import NotALogKVStoreError, StoreNotFoundError
from ..layout import CRAWLEE_METADATA_FILE, META_FILE, TRASH_DIR, is_own_name, is_store_folder
from ..names import Selector, StorageType, kvs_root, store_folder
from ._base import StoreLocation
from ._meta import StoreMeta, read_meta

#: How error messages name the storage type of each storage sub-folder.
_STORAGE_OF_FOLDER: Final = {
    "key_value_stores": "key-value store",
    "datasets": "dataset",
    "request_queues": "request queue",
}


def migrate_hint(folder: Path) -> str:
    """What to do about the Crawlee file-system store in ``folder`` (a store folder inside a
    storage folder): move the whole storage folder to logkv in one step."""
    storage_dir = folder.parent.parent
    return (
        "logkv never mixes formats: move the whole storage folder to logkv with "
        f"`logkv migrate {storage_dir}` (every key-value store, dataset and request queue at "
        "once; the originals are kept), or point storage_dir somewhere else"
    )


def registry_key(folder: Path) -> tuple[str, str]:
    """The key of the store in folder ``folder`` in registries of open and purged stores."""
    return ("logkv", os.path.realpath(folder))


def find_store_by_id(root: Path, store_id: str) -> tuple[Path, StoreMeta]:
    """The folder and metadata of the logkv store with id ``store_id`` under ``root``.

    Raises :class:`StoreNotFoundError` when there is none, and :class:`NotALogKVStoreError` when
    the id belongs to a Crawlee file-system store.
    """
    if root.is_dir():
        for folder in sorted(root.iterdir()):
            if not folder.is_dir():
                continue
            try:
                meta = read_meta(folder)
            except NotALogKVStoreError:
                continue
            if meta is not None and meta.id == store_id:
                return folder, meta
            if meta is None and _crawlee_store_id(folder) == store_id:
                raise NotALogKVStoreError(
                    f"the store with id {store_id!r} ({folder}) is a Crawlee file-system store, "
                    f"not a logkv store; {migrate_hint(folder)}"
                )
    raise StoreNotFoundError(f"no key-value store with id {store_id!r} in {root}")


def _crawlee_store_id(folder: Path) -> str | None:
    try:
        body = json.loads((folder / CRAWLEE_METADATA_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    found = body.get("id") if isinstance(body, dict) else None
    return found if isinstance(found, str) else None


def refuse_foreign_folder(folder: Path) -> None:
    """Raise :class:`NotALogKVStoreError` unless ``folder`` is absent, empty or a logkv store
    holding only logkv's files.

    A logkv store folder holding files of another program (another storage client was given
    the same folder) is refused too, naming those files: they are not logkv's to delete, and
    the other client may delete logkv's (Crawlee's file-system purge deletes every file in the
    folder but its metadata).
    """
    if not folder.exists():
        return
    if not folder.is_dir():
        raise NotALogKVStoreError(f"{folder} is a file, not a key-value store folder")
    strays = sorted(name for name in os.listdir(folder) if not is_own_name(name))
    if not strays:
        return
    shown = ", ".join(strays[:5]) + (f" and {len(strays) - 5} more" if len(strays) > 5 else "")
    ours = (folder / META_FILE).exists() or is_store_folder(folder)
    if not ours and CRAWLEE_METADATA_FILE in strays:
        what = _STORAGE_OF_FOLDER.get(folder.parent.name, "store")
        raise NotALogKVStoreError(
            f"{folder} holds a Crawlee file-system {what}, not a logkv {what}; "
            f"{migrate_hint(folder)}"
        )
    if not ours:
        raise NotALogKVStoreError(
            f"{folder} holds files that are not part of a logkv store ({shown}); move them away "
            "or choose another store name"
        )
    crawlee = (
        f" ({CRAWLEE_METADATA_FILE} is the mark of a Crawlee file-system key-value store: "
        "Crawlee's file-system client was given this folder, for a store of the same name or "
        "for the state of its request queues, which it keeps in its default store)"
        if CRAWLEE_METADATA_FILE in strays
        else ""
    )
    raise NotALogKVStoreError(
        f"another program wrote into the logkv store folder {folder}: {shown} "
        f"{'is' if len(strays) == 1 else 'are'} not logkv's{crawlee}. Two storage clients must "
        "never share a store folder: the other one may delete logkv's files (Crawlee's "
        "file-system purge deletes every file it does not own). Move those files out of the "
        "folder (they belong to the other client) and open the store again; give the other "
        "client's store another name or storage directory"
    )


#: How error messages name each storage type.
STORAGE_WORDS: Final[dict[StorageType, str]] = {
    "key_value_store": "key-value store",
    "dataset": "dataset",
    "request_queue": "request queue",
}


def check_kind(meta: StoreMeta, location: StoreLocation, folder: Path) -> None:
    if meta.storage != location.storage:
        raise ValueError(
            f"{folder} holds a logkv {STORAGE_WORDS[meta.storage]}; it cannot be opened as a "
            f"{STORAGE_WORDS[location.storage]}"
        )
    if meta.kind == location.kind:
        return
    described = {
        "named": f"the named store {meta.name!r}",
        "alias": f"the unnamed store of alias {meta.alias!r}",
        "default": "the default store",
    }[meta.kind]
    wanted = {
        "named": f"a store named {location.name!r}",
        "alias": f"an alias store {location.alias!r}",
        "default": "the default store",
    }[location.kind]
    raise ValueError(
        f"{folder} holds {described}; it cannot be opened as {wanted}. Names, aliases and the "
        "default store share one folder namespace: pick another name or alias, or drop the "
        "existing store first"
    )


async def locate_store(selector: Selector, storage_dir: str) -> StoreLocation:
    """The folder of the selected store under ``storage_dir``; a store selected by id is looked
    up on disk (in a worker thread), which raises :class:`~logkv.StoreNotFoundError` when no
    store has that id."""
    if selector.folder_name is None:
        assert selector.id is not None
        root = kvs_root(storage_dir)
        folder, meta = await asyncio.to_thread(find_store_by_id, root, selector.id)
        return StoreLocation(
            registry_key(folder), meta.kind, meta.id, meta.name, meta.alias, folder
        )
    assert selector.kind != "id"
    folder = store_folder(storage_dir, selector.folder_name)
    return StoreLocation(
        registry_key(folder), selector.kind, selector.id, selector.name, selector.alias, folder
    )


def trash_of(folder: Path) -> Path:
    """The trash of the storage directory whose ``key_value_stores/`` holds store ``folder``."""
    return folder.parent.parent / TRASH_DIR
