"""Crawlee's ``StorageClient`` whose key-value stores, datasets and request queues are logkv
stores.

Key-value stores are :class:`~logkv.crawlee._client.LogKvKeyValueStoreClient` objects, one per
store folder per process (registered in a :class:`logkv.registry.OpenStores`, and closed at
process exit when still open). Datasets are
:class:`~logkv.crawlee._dataset.LogKvDatasetClient` objects and request queues
:class:`~logkv.crawlee._request_queue.LogKvRequestQueueClient` objects, registered likewise.
With ``native_datasets=False`` or ``native_request_queues=False`` those are opened by another
Crawlee storage client, the ``delegate`` (Crawlee's file-system client unless another one is
given), under the same Crawlee configuration.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Final, Protocol, TypeVar

from crawlee._service_locator import ServiceLocator
from crawlee.configuration import Configuration as CrawleeConfiguration
from crawlee.storage_clients import FileSystemStorageClient, StorageClient
from crawlee.storages import Dataset as CrawleeDataset
from crawlee.storages import KeyValueStore as CrawleeKeyValueStore
from crawlee.storages import RequestQueue as CrawleeRequestQueue

from ..configuration import Configuration
from ..errors import ReadOnlyStoreError, StoreNotFoundError
from ..layout import CRAWLEE_FILE_SYSTEM_DEFAULT_DIR, is_store_folder
from ..names import kvs_root, select
from ..registry import OpenStores, PurgeRule, open_key, purge_on_start
from ..storage_clients._base import StoreLocation
from ..storage_clients._folders import locate_store, registry_key
from ..storage_clients._store import EngineStore
from ._client import LogKvKeyValueStoreClient
from ._dataset import LogKvDatasetClient, dataset_location, open_dataset_store
from ._locations import CRAWLEE_DEFAULT_ALIAS
from ._request_queue import LogKvRequestQueueClient, open_queue_store, queue_location

#: The default store's folder (and id) when request queues are delegated to Crawlee's
#: file-system client, whose request queues write their state into ``key_value_stores/default``
#: themselves; also the folder of the default store of crawls made that way, which stays in use.
BESIDE_FILE_SYSTEM_DEFAULT: Final = "default-logkv"

#: The store clients open in this process, by the registry key of their folder; each closes
#: at process exit if nothing closed it before (saving its timestamps, releasing its lock).
_OPEN: OpenStores[LogKvKeyValueStoreClient] = OpenStores(
    reusable=lambda client: not client.closed,
    at_exit=LogKvKeyValueStoreClient.close_sync,
)

#: The dataset clients open in this process, by the registry key of their folder.
_OPEN_DATASETS: OpenStores[LogKvDatasetClient] = OpenStores(
    reusable=lambda client: not client.closed,
    at_exit=LogKvDatasetClient.close_sync,
)

#: The request queue clients open in this process, by the registry key of their folder.
_OPEN_QUEUES: OpenStores[LogKvRequestQueueClient] = OpenStores(
    reusable=lambda client: not client.closed,
    at_exit=LogKvRequestQueueClient.close_sync,
)

log = logging.getLogger(__name__)


class LogKvStorageClient(StorageClient):  # type: ignore[misc]
    """Key-value stores, datasets and request queues in logkv logs.

    Datasets live in ``{storage_dir}/datasets/{name|alias|default}/``, one logkv store each
    (:mod:`logkv.crawlee._dataset`); ``native_datasets=False`` hands them to the delegate
    instead, as before logkv had datasets. Request queues live in
    ``{storage_dir}/request_queues/{name|alias|default}/``, one logkv store each
    (:mod:`logkv.crawlee._request_queue`); ``native_request_queues=False`` hands them to the
    delegate (Crawlee's file-system client unless ``delegate=`` names another).

    Usage: ``service_locator.set_storage_client(LogKvStorageClient())``, or
    ``await KeyValueStore.open(storage_client=LogKvStorageClient())``.

    Stores live in ``{storage_dir}/key_value_stores/{name|alias|default}/`` (``storage_dir`` from
    Crawlee's configuration). The default store (Crawlee's alias ``__default__``) is the folder
    of ``settings.default_key_value_store_id`` (it also opens by that id): ``default``, as in
    logkv's own client. Two exceptions: when request queues are delegated to Crawlee's
    file-system client, whose request queues keep their state in ``key_value_stores/default``
    themselves, it is ``default-logkv``; and a storage directory whose ``default-logkv`` holds a
    logkv store while ``default`` holds none (a crawl made that way) keeps using
    ``default-logkv``.

    ``settings`` is a :class:`logkv.Configuration` for the engine: durability, segment size,
    recovery, retention, compaction, the offload threshold, and ``persist_state_interval`` (how
    often changed timestamps are written to ``META.json``); its ``storage_dir`` and
    ``purge_on_start`` are not used (Crawlee's configuration decides those).

    Stores stay open (holding their lock) until :meth:`close` or the end of the process.

    With Crawlee's ``purge_on_start``, every open of an unnamed store (the default store or an
    alias) that reaches this client empties it, as with Crawlee's own clients: the first
    ``KeyValueStore.open`` of it in the process, and every one after Crawlee's instance cache
    was cleared or the store closed (:class:`logkv.registry.PurgeRule`). Named stores are never
    purged.

    ``readonly=True``: key-value stores, datasets and request queues are opened read-only
    (:mod:`logkv.storage_clients._store`), beside a writer in another process (a crawler
    running): no lock, the writer's records seen as they come (items, requests and counts), no
    purge (``purge_on_start`` is ignored), nothing written into the store folders. Writes raise
    :class:`~logkv.ReadOnlyStoreError`, and so does ``fetch_next_request`` (taking a request is a
    change); a store that does not exist raises :class:`~logkv.StoreNotFoundError`. Storages
    served by the delegate (``native_datasets=False``, ``native_request_queues=False``) are
    refused with ``ReadOnlyStoreError``: it has no read-only mode.
    """

    def __init__(
        self,
        *,
        delegate: StorageClient | None = None,
        settings: Configuration | None = None,
        readonly: bool = False,
        native_datasets: bool = True,
        native_request_queues: bool = True,
    ) -> None:
        self._readonly = readonly
        self._native_datasets = native_datasets
        self._native_request_queues = native_request_queues
        self._opened_datasets: list[LogKvDatasetClient] = []
        self._opened_queues: list[LogKvRequestQueueClient] = []
        self._delegate: Any = delegate if delegate is not None else FileSystemStorageClient()
        settings = settings if settings is not None else Configuration()
        # Only Crawlee's file-system request queue writes into key_value_stores/default (its
        # file-system dataset does not).
        delegate_owns_default = not native_request_queues and isinstance(
            self._delegate, FileSystemStorageClient
        )
        if settings.default_key_value_store_id == "default" and delegate_owns_default:
            # Crawlee's file-system request queue keeps its own state in a file-system store in
            # key_value_stores/default: leave that folder to it.
            settings = settings.model_copy(
                update={"default_key_value_store_id": BESIDE_FILE_SYSTEM_DEFAULT}
            )
        self._settings = settings
        self._opened: list[LogKvKeyValueStoreClient] = []
        #: Store folders that belong to the delegate (a logkv store there would share them).
        self._delegates_folders: frozenset[str] = (
            frozenset({CRAWLEE_FILE_SYSTEM_DEFAULT_DIR}) if delegate_owns_default else frozenset()
        )

    @property
    def readonly(self) -> bool:
        """True when this client opens key-value stores read-only."""
        return self._readonly

    @property
    def delegate(self) -> Any:
        """The Crawlee storage client that opens datasets and request queues when they are not
        native (``native_datasets=False``, ``native_request_queues=False``)."""
        return self._delegate

    def get_storage_client_cache_key(self, configuration: CrawleeConfiguration) -> Hashable:
        """Stores are shared per storage directory (and per delegate, which opens what is not
        native); read-only and writable clients, and clients that serve datasets or request
        queues natively and through the delegate, never share Crawlee's cached storage
        objects."""
        return (
            f"{type(self).__module__}.{type(self).__name__}",
            "read-only" if self._readonly else "read-write",
            "native datasets" if self._native_datasets else "delegated datasets",
            "native request queues" if self._native_request_queues else "delegated queues",
            _real_path(configuration.storage_dir),
            self._delegate.get_storage_client_cache_key(configuration),
        )

    async def create_kvs_client(
        self,
        *,
        id: str | None = None,
        name: str | None = None,
        alias: str | None = None,
        configuration: CrawleeConfiguration | None = None,
    ) -> LogKvKeyValueStoreClient:
        """Open the store selected by at most one of ``id``, ``name``, ``alias`` (none: the
        default store), creating it unless selected by id (or read-only), and purge it when
        Crawlee's ``purge_on_start`` says so (see the class docstring).

        Raises ``ValueError`` when more than one is given, when one is invalid (names as in
        Crawlee; ``default`` is reserved for the default store), when no store has the id, or
        when the folder holds a store of another kind.
        """
        configuration = configuration or CrawleeConfiguration.get_global_configuration()
        location = await self._locate(id, name, alias, configuration)

        readonly = self._readonly

        async def open_store() -> LogKvKeyValueStoreClient:
            store = await EngineStore.open(location, self._settings, readonly=readonly)
            return LogKvKeyValueStoreClient(store, self._settings, _forget)

        key = open_key(location.registry_key, readonly=readonly)
        client, fresh = await _OPEN.open(key, open_store)
        if fresh:
            self._opened.append(client)
        await _purge_if_due(client, location, configuration, fresh=fresh, readonly=readonly)
        return client

    async def _locate(
        self,
        id: str | None,
        name: str | None,
        alias: str | None,
        configuration: CrawleeConfiguration,
    ) -> StoreLocation:
        if alias == CRAWLEE_DEFAULT_ALIAS and id is None and name is None:
            alias = None
        default_id = self._settings.default_key_value_store_id
        if default_id == CRAWLEE_FILE_SYSTEM_DEFAULT_DIR and id is None and name is None:
            default_id = await asyncio.to_thread(_default_folder, configuration.storage_dir)
        selector = select(id=id, name=name, alias=alias, default_id=default_id)
        if selector.folder_name is not None:
            self._refuse_delegates_folder(selector.folder_name)
        try:
            location = await locate_store(selector, configuration.storage_dir)
        except StoreNotFoundError:
            raise ValueError(f'Key-value store with ID "{selector.id}" not found.') from None
        if selector.kind == "default" and id is None:
            # A new default store gets a random id, as every Crawlee store does: Crawlee keys
            # some per-process state (autosaved values) by store id alone.
            location = dataclasses.replace(location, id=None)
        return location

    def _refuse_delegates_folder(self, folder_name: str) -> None:
        """Raise ``ValueError`` when ``folder_name`` is a folder the delegate writes into."""
        if folder_name not in self._delegates_folders:
            return
        raise ValueError(
            f"the store folder {folder_name!r} belongs to Crawlee's file-system client, whose "
            "request queues keep their state in its default key-value store there; a logkv "
            "store in the same folder would be mixed with it (and emptied by its purge). Two "
            f"storage clients never share a folder: choose another name or alias than "
            f"{folder_name!r} (the default store of this client is {BESIDE_FILE_SYSTEM_DEFAULT!r})"
        )

    async def create_dataset_client(
        self,
        *,
        id: str | None = None,
        name: str | None = None,
        alias: str | None = None,
        configuration: CrawleeConfiguration | None = None,
    ) -> Any:
        """A logkv dataset (:class:`~logkv.crawlee._dataset.LogKvDatasetClient`), or the
        delegate's when this client was made with ``native_datasets=False``.

        Unnamed datasets are purged under Crawlee's ``purge_on_start`` as key-value stores are.
        """
        if not self._native_datasets:
            self._refuse_if_readonly("datasets")
            return await self._delegate.create_dataset_client(
                id=id, name=name, alias=alias, configuration=configuration
            )
        configuration = configuration or CrawleeConfiguration.get_global_configuration()
        location = await asyncio.to_thread(
            dataset_location, configuration.storage_dir, id, name, alias
        )

        async def open_dataset() -> LogKvDatasetClient:
            store = await open_dataset_store(location, self._settings, readonly=self._readonly)
            return LogKvDatasetClient(store, _forget_dataset)

        return await _open_registered(
            _OPEN_DATASETS,
            self._opened_datasets,
            location,
            configuration,
            open_dataset,
            readonly=self._readonly,
        )

    async def create_rq_client(
        self,
        *,
        id: str | None = None,
        name: str | None = None,
        alias: str | None = None,
        configuration: CrawleeConfiguration | None = None,
    ) -> Any:
        """A logkv request queue (:class:`~logkv.crawlee._request_queue.LogKvRequestQueueClient`),
        or the delegate's when this client was made with ``native_request_queues=False``.

        Unnamed queues are purged under Crawlee's ``purge_on_start`` as key-value stores are.
        """
        if not self._native_request_queues:
            self._refuse_if_readonly("request queues")
            return await self._delegate.create_rq_client(
                id=id, name=name, alias=alias, configuration=configuration
            )
        configuration = configuration or CrawleeConfiguration.get_global_configuration()
        location = await asyncio.to_thread(
            queue_location, configuration.storage_dir, id, name, alias
        )

        async def open_queue() -> LogKvRequestQueueClient:
            store, counts = await open_queue_store(
                location, self._settings, readonly=self._readonly
            )
            return LogKvRequestQueueClient(store, counts, _forget_queue)

        return await _open_registered(
            _OPEN_QUEUES,
            self._opened_queues,
            location,
            configuration,
            open_queue,
            readonly=self._readonly,
        )

    def _refuse_if_readonly(self, what: str) -> None:
        """Raise :class:`~logkv.ReadOnlyStoreError` for a read-only open of ``what`` that the
        delegate would serve: it has no read-only mode."""
        if self._readonly:
            raise ReadOnlyStoreError(
                f"a read-only LogKvStorageClient opens logkv's own stores only: {what} served "
                "by its delegate (native_datasets=False or native_request_queues=False) cannot "
                "be opened read-only"
            )

    def get_rate_limit_errors(self) -> dict[int, int]:
        """The delegate's figures (logkv itself has no rate limits)."""
        errors: dict[int, int] = self._delegate.get_rate_limit_errors()
        return errors

    async def flush_replica(self, timeout: float | None = None) -> int:
        """Wait until every record written so far to the key-value stores, datasets and request
        queues this client opened is committed in their replicas (see
        :meth:`logkv.KeyValueStore.flush_replica`); return how many replicated stores were
        flushed. Raises :class:`~logkv.FencedError` when another writer took one over, and
        ``TimeoutError`` after ``timeout`` seconds for one store."""
        clients = [*self._opened, *self._opened_datasets, *self._opened_queues]
        flushed = 0
        for client in clients:
            if not client.closed and await client.flush_replica(timeout) is not None:
                flushed += 1
        return flushed

    async def close(self) -> None:
        """Close the key-value stores, datasets and request queues this client opened (saving
        their timestamps and releasing their locks). ``KeyValueStore.open`` (or ``Dataset.open``,
        ``RequestQueue.open``) afterwards, through this client or another, opens the store again
        (a new object: the closed ones are evicted from Crawlee's storage cache and stay
        closed)."""
        opened, self._opened = self._opened, []
        for client in opened:
            await client.close()
        datasets, self._opened_datasets = self._opened_datasets, []
        for dataset in datasets:
            await dataset.close()
        queues, self._opened_queues = self._opened_queues, []
        for queue in queues:
            await queue.close()


class _Purgeable(Protocol):
    async def purge(self) -> None: ...

    async def close(self) -> None: ...


_Client = TypeVar("_Client", bound=_Purgeable)


async def _open_registered(
    registry: OpenStores[_Client],
    opened: list[_Client],
    location: StoreLocation,
    configuration: CrawleeConfiguration,
    open_client: Callable[[], Awaitable[_Client]],
    *,
    readonly: bool,
) -> _Client:
    """The client of the store at ``location`` (opened ``readonly`` or not) from ``registry``,
    opened with ``open_client`` (and added to ``opened``) unless open already, purged when
    due (never when read-only)."""
    client, fresh = await registry.open(
        open_key(location.registry_key, readonly=readonly), open_client
    )
    if fresh:
        opened.append(client)
    await _purge_if_due(client, location, configuration, fresh=fresh, readonly=readonly)
    return client


async def _purge_if_due(
    client: _Purgeable,
    location: StoreLocation,
    configuration: CrawleeConfiguration,
    *,
    fresh: bool,
    readonly: bool,
) -> None:
    """Purge the store just opened when Crawlee's ``purge_on_start`` says so (see
    :class:`LogKvStorageClient`); a failed purge closes a store this open opened (a failed
    open leaves nothing open)."""
    if not purge_on_start(
        location.registry_key,
        enabled=configuration.purge_on_start,
        name=location.name,
        rule=PurgeRule.EVERY_OPEN,
        readonly=readonly,
    ):
        return
    try:
        await client.purge()
    except BaseException:
        if fresh:
            await client.close()
        raise


def _forget(client: LogKvKeyValueStoreClient) -> None:
    """A store was closed or dropped: forget its client here and in Crawlee's cache."""
    _OPEN.forget(registry_key(client.path), client)
    _evict_from_crawlee_cache(client, CrawleeKeyValueStore)


def _forget_dataset(client: LogKvDatasetClient) -> None:
    """A dataset was closed or dropped: forget its client here and in Crawlee's cache."""
    _OPEN_DATASETS.forget(registry_key(client.path), client)
    _evict_from_crawlee_cache(client, CrawleeDataset)


def _forget_queue(client: LogKvRequestQueueClient) -> None:
    """A request queue was closed or dropped: forget its client here and in Crawlee's cache."""
    _OPEN_QUEUES.forget(registry_key(client.path), client)
    _evict_from_crawlee_cache(client, CrawleeRequestQueue)


@functools.lru_cache(maxsize=64)
def _real_path(storage_dir: str) -> str:
    """``storage_dir`` with its links resolved, remembered: Crawlee asks for the cache key at
    every ``open`` of a storage (a crawler: at every ``push_data`` and request), and resolving
    costs a ``lstat`` per path component."""
    return os.path.realpath(storage_dir)


def _default_folder(storage_dir: str) -> str:
    """The default store's folder when its configured folder is ``default``: ``default``, or
    ``default-logkv`` when that holds a logkv store and ``default`` holds none (the default
    store of a crawl whose request queues were Crawlee's; blocking, two folder looks)."""
    root = kvs_root(storage_dir)
    if not is_store_folder(root / CRAWLEE_FILE_SYSTEM_DEFAULT_DIR) and is_store_folder(
        root / BESIDE_FILE_SYSTEM_DEFAULT
    ):
        return BESIDE_FILE_SYSTEM_DEFAULT
    return CRAWLEE_FILE_SYSTEM_DEFAULT_DIR


def _evict_from_crawlee_cache(client: object, storage_class: type) -> None:
    """Remove the Crawlee storage objects (of ``storage_class``) over ``client`` from Crawlee's
    storage cache.

    Crawlee 1.x keeps every opened storage in one process-wide cache (its
    ``StorageInstanceManager``) and hands the cached object back on the next ``open`` without
    asking the storage client; Crawlee's own storages are never closed, only dropped (which
    evicts them). Without this, ``KeyValueStore.open`` after :meth:`LogKvStorageClient.close`
    would return the closed store. Evicted, the next ``open`` opens the store again.
    """
    manager = ServiceLocator.global_storage_instance_manager
    if manager is None:
        return
    by_id = getattr(getattr(manager, "_cache", None), "by_id", None)
    if not isinstance(by_id, dict):  # a Crawlee whose cache is laid out otherwise
        log.warning("cannot find Crawlee's storage cache: a closed store may be handed back")
        return
    for by_key in list(by_id.get(storage_class, {}).values()):
        for instance in list(by_key.values()):
            if getattr(instance, "_client", None) is client:
                manager.remove_from_cache(instance)
