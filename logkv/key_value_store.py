"""``KeyValueStore``: the async facade, with Crawlee's KeyValueStore API (classic and 1.x).

::

    async with await KeyValueStore.open(name="products") as kvs:
        await kvs.set_value("p-1", {"name": "Phone", "price": 799.0})
        product = await kvs.get_value("p-1")
        state = await kvs.get_auto_saved_value("STATE", {"page": 0})
        state["page"] += 1  # saved on the next PERSIST_STATE event, and on close

The facade adds to a storage client what every backend shares: the rules of ``open`` (selectors,
purge on start, one object per store and process), ``None`` meaning delete, autosaved values and
the event manager that saves them. Each of those has its own module: stores opened in a process
are registered in :mod:`logkv.registry` (by store: its resolved folder for the disk client)
until they are closed or dropped; autosaved values are :mod:`logkv.autosave`; the event manager's
lifecycle is :mod:`logkv.store_events`; classic handles are :mod:`logkv.classic`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, TypeVar, overload

from .autosave import AutosavedValues
from .classic import StoreHandle
from .compaction import CompactionResult
from .configuration import Configuration
from .content import check_content_type
from .errors import ReadOnlyStoreError, StoreClosedError
from .events import EventManager, EventPersistStateData
from .models import KeyValueStoreMetadata, KeyValueStoreRecordMetadata
from .names import select
from .registry import OpenStores, open_key, purge_on_start
from .storage_clients import (
    DiskStorageClient,
    KeyValueStoreClient,
    StorageClient,
    check_key,
)
from .storage_clients._base import Deferred, Pacer
from .storage_clients._streams import StreamSource, async_pieces
from .store_events import StoreEvents

T = TypeVar("T")

_DEFAULT_LIST_LIMIT: Final = 1000


class KeyValueStore(StoreHandle):
    """A key-value store: records (a value and its content type) under string keys.

    Open one with :meth:`open`. Keys are ordered by Python string order everywhere, values come
    back as they went in (see :mod:`logkv.content`), and every method is safe to call from many
    tasks at once.
    """

    def __init__(
        self, id: str, name: str | None, storage_client: StorageClient | KeyValueStoreClient
    ) -> None:
        """A handle to the store ``id``; prefer :meth:`open` (the classic form, with a
        :class:`StorageClient`, is described in :mod:`logkv.classic`)."""
        super().__init__(id, name, storage_client)
        self._primary: KeyValueStore = self
        self._registry_key: Hashable | None = None
        self._events = StoreEvents(self._on_persist_state)
        self._autosave = AutosavedValues()
        self._closing: asyncio.Future[None] | None = None
        #: Small operations run inline and never suspend: now and then they yield instead.
        self._pacer = Pacer()

    # ------------------------------------------------------------------ opening

    @classmethod
    async def open(
        cls,
        *,
        id: str | None = None,
        name: str | None = None,
        alias: str | None = None,
        configuration: Configuration | None = None,
        storage_client: StorageClient | None = None,
        event_manager: EventManager | None = None,
        readonly: bool = False,
        replica_url: str | None = None,
    ) -> KeyValueStore:
        """Open a store, creating it when a ``name`` or ``alias`` is new.

        No selector opens the default store (id ``default`` or
        ``CRAWLEE_DEFAULT_KEY_VALUE_STORE_ID``). An ``id`` must name an existing store
        (:class:`~logkv.StoreNotFoundError` otherwise). More than one of ``id``, ``name`` and
        ``alias``, or an invalid name or alias, raise ``ValueError``. Opening a store that is
        already open in this process returns the same object (``configuration`` and
        ``event_manager`` are then ignored). With ``purge_on_start``, unnamed stores (the
        default store and aliases) are emptied the first time this process opens them.

        ``readonly=True`` opens an existing store for reading beside its writer (another
        process, or a writable open in this one): it takes no lock, sees the writer's records as
        they are written, writes nothing into the store folder (no purge, whatever
        ``purge_on_start`` says; no ``META.json``, no public files), and every write, purge,
        compaction, drop and autosaved value raises :class:`~logkv.ReadOnlyStoreError`. A
        missing store raises :class:`~logkv.StoreNotFoundError`. Read-only and writable opens
        of one store are separate objects.

        ``configuration`` defaults to the storage client's, else to the environment's.
        ``event_manager``: the manager whose ``PERSIST_STATE`` events save autosaved values;
        by default the store makes its own, emitting every ``persist_state_interval``.

        ``replica_url`` (``s3://BUCKET/PREFIX``, else ``configuration.replica_url``): replicate
        the store to object storage under ``PREFIX/key_value_stores/{name}/``, taking it over
        there (a previous writer is fenced off), and restore its folder from there when the
        folder is missing. See :meth:`flush_replica` and docs/FORMAT.md, section 13.
        """
        storage_client = DiskStorageClient() if storage_client is None else storage_client
        configuration = configuration or storage_client.configuration or Configuration()
        if replica_url is not None:
            configuration = configuration.model_copy(update={"replica_url": replica_url})
        selector = select(
            id=id, name=name, alias=alias, default_id=configuration.default_key_value_store_id
        )
        location = await storage_client.locate_kvs(selector, configuration)
        key = open_key(location.registry_key, readonly=readonly)

        async def open_store() -> KeyValueStore:
            client = await storage_client.open_kvs_client(
                location, configuration, readonly=readonly
            )
            try:
                store = cls(client.id, client.name, client)
                store._configuration = configuration
                store._registry_key = key
                if purge_on_start(
                    location.registry_key,
                    enabled=configuration.purge_on_start,
                    name=client.name,
                    readonly=readonly,
                ):
                    await client.purge()
                await store._events.start(event_manager, configuration)
            except BaseException:
                await client.close()
                raise
            return store

        store, fresh = await _STORES.open(key, open_store)
        if not fresh:
            store._events.resume()
        return store

    async def _open_by_id(self, storage_client: StorageClient) -> KeyValueStore:
        return await KeyValueStore.open(
            id=self._id, storage_client=storage_client, configuration=self._configuration
        )

    def _share(self, primary: StoreHandle) -> None:
        assert isinstance(primary, KeyValueStore)
        self._primary = primary
        self._client = primary._client
        self._autosave = primary._autosave
        self._events = primary._events

    async def _on_persist_state(self, event_data: EventPersistStateData | None = None) -> None:
        """The ``PERSIST_STATE`` listener: save autosaved values, then the client's upkeep."""
        client = self._client
        if client is None or client.closed:
            return
        await self.persist_autosaved_values()
        if self._closing is None:
            await client.maintain()

    # ------------------------------------------------------------------ identity

    @property
    def id(self) -> str:
        """The store's id (``default`` or the configured default id for the default store)."""
        return self._id

    @property
    def name(self) -> str | None:
        """The store's name; None for unnamed stores (the default store and aliases)."""
        return self._name

    @property
    def path(self) -> Path | None:
        """The store's folder (None for in-memory stores or before a classic handle is used)."""
        return None if self._client is None else self._client.path

    @property
    def event_manager(self) -> EventManager | None:
        """The event manager whose ``PERSIST_STATE`` events save this store's autosaved values."""
        return self._events.manager

    async def get_metadata(self) -> KeyValueStoreMetadata:
        """Id, name, timestamps and figures (records, live bytes, log bytes, last sequence)."""
        client = self._client or await self._attach()
        return await client.get_metadata()

    async def get_info(self) -> KeyValueStoreMetadata:
        """The classic name of :meth:`get_metadata`."""
        return await self.get_metadata()

    async def flush_replica(self, timeout: float | None = None) -> int | None:
        """Wait until every write acknowledged so far is committed in the store's replica in
        object storage; return the last committed sequence number (None: not replicated).

        Raises :class:`~logkv.FencedError` when another writer took the store over, and
        ``TimeoutError`` after ``timeout`` seconds (the endpoint unavailable meanwhile; writes
        go on locally and replication catches up later).
        """
        client = self._client or await self._attach()
        return await client.flush_replica(timeout)

    # ------------------------------------------------------------------ records

    @overload
    async def get_value(self, key: str) -> Any: ...

    @overload
    async def get_value(self, key: str, default_value: T) -> Any | T: ...

    async def get_value(self, key: str, default_value: Any = None) -> Any:
        """The value stored under ``key``, or ``default_value`` when there is none."""
        client = self._client
        if client is None:
            client = await self._attach()
        value = client.get_value_nowait(key, default_value)
        if type(value) is Deferred:
            return await value.awaitable
        if self._pacer.due():
            await asyncio.sleep(0)
        return value

    async def set_value(self, key: str, value: Any, content_type: str | None = None) -> None:
        """Store ``value`` under ``key``; ``None`` deletes the record (classic API).

        ``content_type`` is inferred when not given (see :func:`logkv.content.infer_content_type`).
        A value that cannot be stored under its content type raises ``TypeError`` and changes
        nothing. When this returns, the record is durable to the configured level.
        """
        client = self._client
        if client is None:
            client = await self._attach()
        if value is None:
            if content_type is not None:
                check_content_type(content_type)  # refused whatever the value, as documented
            await client.delete_value(key)
        else:
            pending = client.set_value_nowait(key, value, content_type)
            if pending is not None:
                await pending.awaitable
        if self._autosave.entries:
            self._autosave.forget_saved(key)
        if self._pacer.due():
            await asyncio.sleep(0)

    async def set_value_stream(
        self, key: str, source: StreamSource, content_type: str | None = None
    ) -> None:
        """Store a value too big to hold in memory under ``key``, read from ``source`` a piece
        at a time: an async iterable of bytes, an async binary file (``aiofiles``), a binary
        file object or an iterable of bytes (synchronous reads run in a worker thread).

        The bytes are stored as they come (never encoded), with ``content_type`` or else
        ``application/octet-stream``. On disk they go into a value file of their own and one
        record commits them once they are whole: if ``source`` raises, the task is cancelled or
        the process dies first, the key keeps its old value. When this returns, the value is
        durable to the configured level. Read it back with :meth:`iterate_value_chunks`
        (:meth:`get_value` returns it whole).
        """
        client = self._client or await self._attach()
        await client.set_value_stream(key, async_pieces(source), content_type)
        if self._autosave.entries:
            self._autosave.forget_saved(key)

    def iterate_value_chunks(self, key: str) -> AsyncIterator[bytes]:
        """The stored bytes of ``key`` a chunk at a time (at most 1 MiB each), without holding
        the value whole: each chunk is checked before it is yielded, and a streamed value's
        digest once its last chunk is read (:class:`~logkv.CorruptionError` otherwise).
        Yields nothing for an absent key or a stored None. The bytes are those stored: a
        value that :meth:`set_value` encoded (JSON, text) comes back encoded."""
        client = self._client
        if client is not None:
            return client.iterate_value_chunks(key)
        return self._attach_and_stream(key)

    async def _attach_and_stream(self, key: str) -> AsyncIterator[bytes]:
        client = await self._attach()
        async for chunk in client.iterate_value_chunks(key):
            yield chunk

    async def delete_value(self, key: str) -> None:
        """Delete the record under ``key`` (nothing happens when there is none)."""
        client = self._client or await self._attach()
        await client.delete_value(key)
        if self._autosave.entries:
            self._autosave.forget_saved(key)
        if self._pacer.due():
            await asyncio.sleep(0)

    async def compact(self, retention: str | None = None) -> CompactionResult | None:
        """Compact the store now: write its live records as a snapshot and retire the log they
        cover (``retention`` "delete" or "archive"; default: the configuration's). Runs in a
        worker thread; other tasks keep reading and writing. Returns what it did (None for the
        in-memory client, which has no log)."""
        client = self._client or await self._attach()
        return await client.compact(retention)

    async def record_exists(self, key: str) -> bool:
        """True when ``key`` holds a record."""
        client = self._client or await self._attach()
        found = await client.record_exists(key)
        if self._pacer.due():
            await asyncio.sleep(0)
        return found

    def iterate_keys(
        self, exclusive_start_key: str | None = None, limit: int | None = None, *, prefix: str = ""
    ) -> AsyncIterator[KeyValueStoreRecordMetadata]:
        """Key, content type and size of records in key order, after ``exclusive_start_key``;
        with a ``prefix``, only those whose key starts with it (read as a range of the sorted
        keys, O(log n + matches); ``exclusive_start_key`` may lie anywhere).

        Paging is exact: continuing from the last key returned never skips or repeats a key.
        """
        client = self._client
        if client is not None:
            return client.iterate_keys(exclusive_start_key, limit, prefix)
        return self._attach_and_iterate("iterate_keys", exclusive_start_key, limit, prefix)

    async def list_keys(
        self,
        exclusive_start_key: str | None = None,
        limit: int = _DEFAULT_LIST_LIMIT,
        *,
        prefix: str = "",
    ) -> list[KeyValueStoreRecordMetadata]:
        """Up to ``limit`` (1000) record infos after ``exclusive_start_key`` whose key starts
        with ``prefix``, as a list."""
        return [info async for info in self.iterate_keys(exclusive_start_key, limit, prefix=prefix)]

    async def iterate_values(
        self, exclusive_start_key: str | None = None, limit: int | None = None, *, prefix: str = ""
    ) -> AsyncIterator[Any]:
        """Values in key order (of the keys that start with ``prefix``); each is read when the
        iteration reaches it."""
        async for _, value in self.iterate_entries(exclusive_start_key, limit, prefix=prefix):
            yield value

    def iterate_entries(
        self, exclusive_start_key: str | None = None, limit: int | None = None, *, prefix: str = ""
    ) -> AsyncIterator[tuple[str, Any]]:
        """``(key, value)`` pairs in key order; each value is read when its turn comes.

        A record deleted during the iteration is skipped if its turn had not come yet.
        """
        client = self._client
        if client is not None:
            return client.iterate_entries(exclusive_start_key, limit, prefix)
        return self._attach_and_iterate("iterate_entries", exclusive_start_key, limit, prefix)

    def __aiter__(self) -> AsyncIterator[str]:
        """``async for key in kvs``: every key, in order."""
        client = self._client
        if client is not None:
            return client.iterate_key_names()
        return self._attach_and_iterate("iterate_key_names", None, None)

    async def get_public_url(self, key: str) -> str:
        """A URL of the record: a ``file://`` URL of ``{KEY}.{EXT}`` in the store folder.

        The file is written now and rewritten whenever the value changes (removed on delete).
        The in-memory client returns a ``data:`` URL instead. ``KeyError`` if there is no
        record.
        """
        client = self._client or await self._attach()
        return await client.get_public_url(key)

    # ------------------------------------------------------------------ autosave

    async def get_auto_saved_value(
        self, key: str, default_value: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """A dict saved automatically under ``key``: the same object on every call.

        It is loaded from the store (or copied from ``default_value``, or ``{}``) on the first
        call and written on every ``PERSIST_STATE`` event, by :meth:`persist_autosaved_values`
        and on close, only when it changed since it was last written. A stored value that is
        not a dict raises ``TypeError``. Writing ``key`` with ``set_value`` meanwhile does not
        detach the dict: its content is written again on the next save.
        """
        check_key(key)
        found = self._autosave.cached(key, default_value)
        if found is not None:
            return found
        client = self._client or await self._attach()
        if client.readonly:
            raise ReadOnlyStoreError(
                f"the store {self._id!r} was opened read-only: an autosaved value would be "
                "written back; read it with get_value instead"
            )
        if not self._events.entered and self._primary is self:
            await self._events.start(None, self._configuration)
        return await self._autosave.load(client, key, default_value)

    async def persist_autosaved_values(self) -> None:
        """Write every autosaved value that changed since it was last written.

        A value that cannot be stored (it holds something that is not JSON) is reported with
        ``TypeError`` after the others were saved.
        """
        if not self._autosave.entries:
            return
        client = self._client
        if client is None or client.closed:
            return
        await self._autosave.persist(client)

    # ------------------------------------------------------------------ store lifecycle

    async def purge(self) -> None:
        """Remove every record; the store (id, name, creation time) stays.

        Autosaved dicts stay attached and are written again on the next save.
        """
        client = self._client or await self._attach()
        await client.purge()
        self._autosave.forget_all_saved()

    async def drop(self) -> None:
        """Save autosaved values, then delete the store with all its records and files.

        The object is closed afterwards; opening the same name again creates a new store.
        """
        primary = self._primary
        if primary is not self:
            await primary.drop()
            return
        client = self._client or await self._attach()
        if client.closed:
            raise StoreClosedError(f"the store {self._id!r} is closed; reopen it to drop it")
        if client.readonly:
            raise ReadOnlyStoreError(
                f"the store {self._id!r} was opened read-only: it cannot be dropped"
            )
        try:
            await self._shut_down(client)
        finally:
            await client.drop()
            self._unregister()

    async def close(self) -> None:
        """Save autosaved values (a final ``PERSIST_STATE``), flush, release the store.

        Idempotent; calls made after it raise :class:`~logkv.StoreClosedError`. Reopen the
        store with :meth:`open`.
        """
        primary = self._primary
        if primary is not self:
            await primary.close()
            return
        client = self._client
        if client is None or client.closed:
            self._unregister()
            return
        if self._closing is not None:
            await asyncio.shield(self._closing)
            return
        self._closing = asyncio.get_running_loop().create_future()
        try:
            await self._shut_down(client)
        finally:
            try:
                await client.close()
            finally:
                self._unregister()
                self._closing.set_result(None)

    async def _shut_down(self, client: KeyValueStoreClient) -> None:
        """Leave the event manager (its final emit saves autosaved values), then save again in
        case a listener failed; forget the autosaved values."""
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_future()
        try:
            await self._events.stop()
            await self.persist_autosaved_values()
        finally:
            self._autosave.clear()

    def _unregister(self) -> None:
        if self._registry_key is not None:
            _STORES.forget(self._registry_key, self)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self._client is not None and self._client.closed else "open"
        return f"<KeyValueStore id={self._id!r} name={self._name!r} {state}>"


#: The stores open in this process, by their storage client's registry key.
_STORES: OpenStores[KeyValueStore] = OpenStores()


def open_stores() -> list[KeyValueStore]:
    """The stores open in this process (through :meth:`KeyValueStore.open`)."""
    return _STORES.items()


async def close_all() -> None:
    """Close every store this process opened (for a shutdown hook)."""
    for store in open_stores():
        await store.close()
