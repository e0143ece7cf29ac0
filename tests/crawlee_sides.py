"""Crawlee storages over two storage clients side by side (Crawlee's file-system client and
logkv's, each in its own storage directory, whose results must agree), and logkv's clients
alone over one storage directory. The dataset and request-queue tests get them from
conftest's ``sides`` and ``lone`` fixtures, which open the storage class (``Dataset`` or
``RequestQueue``) the test module's ``crawlee_storage`` fixture names."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

import pytest
from crawlee import service_locator
from crawlee.configuration import Configuration as CrawleeConfiguration
from crawlee.storage_clients import FileSystemStorageClient, StorageClient
from crawlee.storages import Dataset, RequestQueue

from logkv import Configuration, Engine
from logkv.crawlee import LogKvStorageClient

S = TypeVar("S", Dataset, RequestQueue)


async def close_client(client: StorageClient) -> None:
    """Close ``client`` if it is logkv's (Crawlee's file-system client holds nothing open)."""
    if isinstance(client, LogKvStorageClient):
        await client.close()


def _logkv() -> StorageClient:
    return LogKvStorageClient(settings=Configuration(auto_compact=False))


#: The storage clients compared, by name.
MAKERS: dict[str, Callable[[], StorageClient]] = {
    "file-system": FileSystemStorageClient,
    "logkv": _logkv,
}


class Side(Generic[S]):
    """One storage client under test, in its own storage directory, opening ``storage``s."""

    def __init__(self, root: Path, make: Callable[[], StorageClient], storage: type[S]) -> None:
        self.root = root
        self.make = make
        self.storage = storage
        self.configuration = CrawleeConfiguration(storage_dir=str(root), purge_on_start=False)
        self.client = make()

    async def open(self, **selector: Any) -> S:
        """The storage ``selector`` (id, name or alias; none: the default) on this side."""
        return await self.storage.open(
            configuration=self.configuration, storage_client=self.client, **selector
        )

    async def restart(self) -> None:
        """Close the client and make a new one, from a clear cache (a process restart)."""
        await close_client(self.client)
        service_locator.storage_instance_manager.clear_cache()
        self.client = self.make()


async def serve_sides(root: Path, storage: type[S]) -> AsyncIterator[dict[str, Side[S]]]:
    """A side per storage client of :data:`MAKERS` below ``root``, from a clear cache, for a
    fixture to yield; the clients are closed after, and the cache cleared again."""
    service_locator.storage_instance_manager.clear_cache()
    made = {name: Side(root / name, make, storage) for name, make in MAKERS.items()}
    yield made
    for side in made.values():
        await close_client(side.client)
    service_locator.storage_instance_manager.clear_cache()


class Lone(Generic[S]):
    """logkv storage clients over one storage directory, opening ``storage``s; closed (and
    Crawlee's cache cleared) at teardown."""

    def __init__(self, root: Path, storage: type[S]) -> None:
        self.root = root
        self.storage = storage
        self.configuration = CrawleeConfiguration(storage_dir=str(root), purge_on_start=False)
        self.clients: list[LogKvStorageClient] = []

    def client(self, **options: Any) -> LogKvStorageClient:
        """A new logkv storage client (``options`` as its constructor takes them; settings
        without automatic compaction unless given)."""
        settings = options.pop("settings", Configuration(auto_compact=False))
        made = LogKvStorageClient(settings=settings, **options)
        self.clients.append(made)
        return made

    async def open(self, client: LogKvStorageClient, **selector: Any) -> S:
        """The storage ``selector`` through Crawlee's ``open``, over ``client``."""
        return await self.storage.open(
            configuration=self.configuration, storage_client=client, **selector
        )

    async def raw(self, client: LogKvStorageClient, **selector: Any) -> Any:
        """The storage client's own client for the storage ``selector`` (no Crawlee storage
        around it)."""
        create = (
            client.create_dataset_client if self.storage is Dataset else client.create_rq_client
        )
        return await create(configuration=self.configuration, **selector)

    async def restart(self) -> LogKvStorageClient:
        """Close every client (a process restart) and make a new one."""
        await self.close_clients()
        return self.client()

    @classmethod
    async def serving(cls, root: Path, storage: type[S]) -> AsyncIterator[Lone[S]]:
        """One over ``root`` from a clear cache, for a fixture to yield; its clients are
        closed after, and the cache cleared again."""
        service_locator.storage_instance_manager.clear_cache()
        made = cls(root, storage)
        yield made
        await made.close_clients()

    async def close_clients(self) -> None:
        """Close every client made so far and clear Crawlee's cache of opened storages."""
        for client in self.clients:
            await client.close()
        service_locator.storage_instance_manager.clear_cache()

    async def check_native_switch(self, option: str, delegated: type, native: type) -> None:
        """With ``option`` false the storage goes to the delegate (as ``delegated``), by
        default it is logkv's own (``native``), and the two clients are cached apart."""
        delegating = self.client(**{option: False})
        assert isinstance(await self.raw(delegating), delegated)
        default = self.client()
        assert isinstance(await self.raw(default, name="n"), native)
        keys = {c.get_storage_client_cache_key(self.configuration) for c in (delegating, default)}
        assert len(keys) == 2

    async def check_hostile_keys_refused(
        self,
        client: Callable[[], LogKvStorageClient],
        name: str,
        folder: Path,
        hostile_keys: tuple[str, ...],
        content_type: str,
        match: str,
    ) -> None:
        """A store ``name`` (at ``folder``) holding any one of ``hostile_keys`` is refused with
        ``match`` by a client ``client()`` returns; the key is taken away again after each."""
        for hostile in hostile_keys:
            with Engine.open(folder) as engine:
                engine.set(hostile, b"{}", content_type)
            with pytest.raises(ValueError, match=match):
                await self.raw(client(), name=name)
            with Engine.open(folder) as engine:
                engine.delete(hostile)
