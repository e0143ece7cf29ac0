"""Store handles, and the classic form of :class:`~logkv.KeyValueStore`.

A handle is what a ``KeyValueStore`` object is underneath: a store's id and name, and either the
client of the open store or, in the classic form of Crawlee's API, a storage client to open the
store with. Classic handles are made with ``KeyValueStore(id, name, storage_client)`` or
``KeyValueStore.from_storage_object(storage_client, storage_object)``; such a handle opens its
store by id on first use (through :meth:`~logkv.KeyValueStore.open`, so it finds the store
already open in this process) and from then on shares the opened store's state: every handle of
a store in a process is the same store.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import Any, Self

from .configuration import Configuration
from .models import StorageMetadata
from .storage_clients import KeyValueStoreClient, StorageClient
from .storage_clients._base import stamp_times


class StoreHandle(ABC):
    """A store's id and name, with the client of the open store or (classic form) the storage
    client that opens it by id on first use."""

    def __init__(
        self, id: str, name: str | None, storage_client: StorageClient | KeyValueStoreClient
    ) -> None:
        """A handle to the store ``id``.

        With a :class:`StorageClient` (the classic form), the store is opened by ``id`` on first
        use and shared with every other handle of it in this process; with a
        :class:`KeyValueStoreClient` the handle uses that open client directly.
        """
        self._id = id
        self._name = name
        self._client: KeyValueStoreClient | None = None
        self._factory: StorageClient | None = None
        if isinstance(storage_client, KeyValueStoreClient):
            self._client = storage_client
        else:
            self._factory = storage_client
        self._configuration: Configuration | None = None
        self._storage_object: StorageMetadata | None = None

    @classmethod
    def from_storage_object(
        cls, storage_client: StorageClient, storage_object: StorageMetadata
    ) -> Self:
        """A handle to the store described by ``storage_object`` (classic API); it is opened
        by id on first use."""
        handle = cls(storage_object.id, storage_object.name, storage_client)
        handle._storage_object = storage_object
        return handle

    @property
    def storage_object(self) -> StorageMetadata:
        """The classic metadata object: id, name and timestamps."""
        client = self._client
        if client is None:
            if self._storage_object is None:
                raise RuntimeError("this handle has not been opened yet: await one of its methods")
            return self._storage_object
        return StorageMetadata(id=client.id, name=client.name, **stamp_times(client.stamps))

    @storage_object.setter
    def storage_object(self, storage_object: StorageMetadata) -> None:
        self._storage_object = storage_object

    async def _attach(self) -> KeyValueStoreClient:
        """The open client; a classic handle opens its store by id first and shares it."""
        if self._client is not None:
            return self._client
        assert self._factory is not None
        primary = await self._open_by_id(self._factory)
        if self._client is None:
            self._share(primary)
        assert self._client is not None
        return self._client

    async def _attach_and_iterate(
        self, method: str, exclusive_start_key: str | None, limit: int | None, prefix: str = ""
    ) -> AsyncIterator[Any]:
        """Classic handles: open the store, then iterate with the client's ``method``."""
        client = await self._attach()
        async for item in getattr(client, method)(exclusive_start_key, limit, prefix):
            yield item

    @abstractmethod
    async def _open_by_id(self, storage_client: StorageClient) -> StoreHandle:
        """The handle of this handle's store opened by id through ``storage_client``."""

    @abstractmethod
    def _share(self, primary: StoreHandle) -> None:
        """Use the open store of ``primary`` (its client and its state) from now on."""
