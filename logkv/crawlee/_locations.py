"""Where a Crawlee dataset or request queue served by logkv is: one logkv store folder per
storage, ``{storage_dir}/{kind folder}/{name|alias|default}/``, selected as Crawlee selects."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import StoreNotFoundError
from ..names import StorageType, select
from ..storage_clients._base import StoreLocation
from ..storage_clients._folders import find_store_by_id, registry_key

#: Crawlee's alias of the default storage; logkv keeps it in the folder of the default id.
CRAWLEE_DEFAULT_ALIAS = "__default__"


@dataclass(frozen=True)
class StorageKind:
    """A kind of Crawlee storage kept as logkv stores: its folder under the storage directory,
    its default folder (and id), its ``META.json`` storage type and its name in errors."""

    folder: str
    default_id: str
    storage: StorageType
    label: str

    def locate(
        self, storage_dir: str, id: str | None, name: str | None, alias: str | None
    ) -> StoreLocation:
        """The folder of the selected storage under ``{storage_dir}/{folder}`` (blocking when
        selected by id: it is looked up).

        Raises ``ValueError`` as Crawlee does: more than one of ``id``/``name``/``alias``, an
        invalid name, or no storage with the id (``f'{label} with ID "..." not found'``).
        """
        if alias == CRAWLEE_DEFAULT_ALIAS and id is None and name is None:
            alias = None
        selector = select(id=id, name=name, alias=alias, default_id=self.default_id)
        root = Path(os.path.abspath(storage_dir)) / self.folder
        storage = self.storage
        if selector.folder_name is None:
            assert selector.id is not None
            try:
                found, meta = find_store_by_id(root, selector.id)
            except StoreNotFoundError:
                raise ValueError(f'{self.label} with ID "{selector.id}" not found') from None
            return StoreLocation(
                registry_key(found),
                meta.kind,
                meta.id,
                meta.name,
                meta.alias,
                found,
                storage=storage,
            )
        assert selector.kind != "id"
        path = root / selector.folder_name
        # A new default storage gets a random id, as every Crawlee storage does.
        store_id = None if selector.kind == "default" else selector.id
        return StoreLocation(
            registry_key(path),
            selector.kind,
            store_id,
            selector.name,
            selector.alias,
            path,
            storage=storage,
        )
