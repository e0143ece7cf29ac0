"""``KeyValueStore``: the async facade, with Crawlee's KeyValueStore API (classic and 1.x).

::

    async with await KeyValueStore.open(name="products") as kvs:
        await kvs.set_value("p-1", {"name": "Phone", "price": 799.0})
        product = await kvs.get_value("p-1")
        state = await kvs.get_auto_saved_value("STATE", {"page": 0})
        state["page"] += 1  # saved on the next PERSIST_STATE event, and on close

The facade adds to a storage client what every backend shares: the rules of ``open`` (selectors,
purge on start, one object per store and process), ``None`` meaning delete, autosaved values and
the event manager that saves them. Stores opened in a process are registered in
:mod:`logkv.registry` (by store: its resolved folder for the log client) until they are closed
or dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Hashable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, TypeVar, overload

from .compaction import CompactionResult
from .configuration import Configuration
from .content import JSON_CONTENT_TYPE, check_content_type, decode, encode, encode_json
from .engine import MISSING
from .errors import StoreClosedError
from .events import Event, EventManager, EventPersistStateData
from .models import KeyValueStoreMetadata, KeyValueStoreRecordMetadata, StorageMetadata
from .names import select
from .registry import OpenStores, purge_on_start
from .storage_clients import (
    DiskStorageClient,
    KeyValueStoreClient,
    StorageClient,
    check_key,
)
from .storage_clients._base import Deferred, Pacer, timestamp

log = logging.getLogger("logkv")

T = TypeVar("T")

_DEFAULT_LIST_LIMIT: Final = 1000


class _Autosaved:
    """An autosaved dict and the JSON it was last saved as (None: not saved yet)."""

    __slots__ = ("saved", "value")

    def __init__(self, value: dict[str, Any], saved: bytes | None) -> None:
        self.value = value
        self.saved = saved


class KeyValueStore:
    """A key-value store: records (a value and its content type) under string keys.

    Open one with :meth:`open`. Keys are ordered by Python string order everywhere, values come
    back as they went in (see :mod:`logkv.content`), and every method is safe to call from many
    tasks at once.
    """

    def __init__(
        self, id: str, name: str | None, storage_client: StorageClient | KeyValueStoreClient
    ) -> None:
        """A handle to the store ``id``; prefer :meth:`open`.

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
        self._primary: KeyValueStore = self
        self._configuration: Configuration | None = None
        self._registry_key: Hashable | None = None
        self._events: EventManager | None = None
        self._events_entered = False
        self._autosaved: dict[str, _Autosaved] = {}
        self._autosave_lock = asyncio.Lock()
        self._storage_object: StorageMetadata | None = None
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
    ) -> KeyValueStore:
        """Open a store, creating it when a ``name`` or ``alias`` is new.

        No selector opens the default store (id ``default`` or
        ``CRAWLEE_DEFAULT_KEY_VALUE_STORE_ID``). An ``id`` must name an existing store
        (:class:`~logkv.StoreNotFoundError` otherwise). More than one of ``id``, ``name`` and
        ``alias``, or an invalid name or alias, raise ``ValueError``. Opening a store that is
        already open in this process returns the same object (``configuration`` and
        ``event_manager`` are then ignored). With ``purge_on_start``, unnamed stores (the
        default store and aliases) are emptied the first time this process opens them.

        ``configuration`` defaults to the storage client's, else to the environment's.
        ``event_manager``: the manager whose ``PERSIST_STATE`` events save autosaved values;
        by default the store makes its own, emitting every ``persist_state_interval``.
        """
        storage_client = DiskStorageClient() if storage_client is None else storage_client
        configuration = configuration or storage_client.configuration or Configuration()
        selector = select(
            id=id, name=name, alias=alias, default_id=configuration.default_key_value_store_id
        )
        location = await storage_client.locate_kvs(selector, configuration)
        key = location.registry_key

        async def open_store() -> KeyValueStore:
            client = await storage_client.open_kvs_client(location, configuration)
            try:
                store = cls(client.id, client.name, client)
                store._configuration = configuration
                store._registry_key = key
                if purge_on_start(key, enabled=configuration.purge_on_start, name=client.name):
                    await client.purge()
                await store._start_events(event_manager)
            except BaseException:
                await client.close()
                raise
            return store

        store, fresh = await _STORES.open(key, open_store)
        if not fresh:
            store._resume_events()
        return store

    @classmethod
    def from_storage_object(
        cls, storage_client: StorageClient, storage_object: StorageMetadata
    ) -> KeyValueStore:
        """A handle to the store described by ``storage_object`` (classic API); it is opened
        by id on first use."""
        store = cls(storage_object.id, storage_object.name, storage_client)
        store._storage_object = storage_object
        return store

    async def _attach(self) -> KeyValueStoreClient:
        """Classic handles: open the store by id and share the opened store's state."""
        if self._client is not None:
            return self._client
        assert self._factory is not None
        primary = await KeyValueStore.open(
            id=self._id, storage_client=self._factory, configuration=self._configuration
        )
        if self._client is None:
            self._primary = primary
            self._client = primary._client
            self._autosaved = primary._autosaved
            self._autosave_lock = primary._autosave_lock
            self._events = primary._events
        assert self._client is not None
        return self._client

    async def _start_events(self, event_manager: EventManager | None) -> None:
        if self._events_entered:
            return
        if event_manager is None:
            configuration = self._configuration or Configuration()
            event_manager = EventManager(
                persist_state_interval=configuration.persist_state_interval
            )
        self._events = event_manager
        event_manager.on(event=Event.PERSIST_STATE, listener=self._on_persist_state)
        await event_manager.__aenter__()
        self._events_entered = True

    def _resume_events(self) -> None:
        if self._events is not None and self._events_entered:
            self._events.ensure_timer()

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
        return self._events

    @property
    def storage_object(self) -> StorageMetadata:
        """The classic metadata object: id, name and timestamps."""
        client = self._client
        if client is None:
            if self._storage_object is None:
                raise RuntimeError("this handle has not been opened yet: await one of its methods")
            return self._storage_object
        return StorageMetadata(
            id=client.id,
            name=client.name,
            created_at=timestamp(client.created_at),
            accessed_at=timestamp(client.accessed_at),
            modified_at=timestamp(client.modified_at),
        )

    @storage_object.setter
    def storage_object(self, storage_object: StorageMetadata) -> None:
        self._storage_object = storage_object

    async def get_metadata(self) -> KeyValueStoreMetadata:
        """Id, name, timestamps and figures (records, live bytes, log bytes, last sequence)."""
        client = self._client or await self._attach()
        return await client.get_metadata()

    async def get_info(self) -> KeyValueStoreMetadata:
        """The classic name of :meth:`get_metadata`."""
        return await self.get_metadata()

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
        if self._autosaved:
            self._forget_saved(key)
        if self._pacer.due():
            await asyncio.sleep(0)

    async def delete_value(self, key: str) -> None:
        """Delete the record under ``key`` (nothing happens when there is none)."""
        client = self._client or await self._attach()
        await client.delete_value(key)
        if self._autosaved:
            self._forget_saved(key)
        if self._pacer.due():
            await asyncio.sleep(0)

    def _forget_saved(self, key: str) -> None:
        """A key with an autosaved value was written directly: the next persist rewrites it."""
        found = self._autosaved.get(key)
        if found is not None:
            found.saved = None

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
        self, exclusive_start_key: str | None = None, limit: int | None = None
    ) -> AsyncIterator[KeyValueStoreRecordMetadata]:
        """Key, content type and size of records in key order, after ``exclusive_start_key``.

        Paging is exact: continuing from the last key returned never skips or repeats a key.
        """
        client = self._client
        if client is not None:
            return client.iterate_keys(exclusive_start_key, limit)
        return self._attach_and_iterate("iterate_keys", exclusive_start_key, limit)

    async def list_keys(
        self, exclusive_start_key: str | None = None, limit: int = _DEFAULT_LIST_LIMIT
    ) -> list[KeyValueStoreRecordMetadata]:
        """Up to ``limit`` (1000) record infos after ``exclusive_start_key``, as a list."""
        return [info async for info in self.iterate_keys(exclusive_start_key, limit)]

    async def iterate_values(
        self, exclusive_start_key: str | None = None, limit: int | None = None
    ) -> AsyncIterator[Any]:
        """Values in key order; each is read when the iteration reaches it."""
        async for _, value in self.iterate_entries(exclusive_start_key, limit):
            yield value

    def iterate_entries(
        self, exclusive_start_key: str | None = None, limit: int | None = None
    ) -> AsyncIterator[tuple[str, Any]]:
        """``(key, value)`` pairs in key order; each value is read when its turn comes.

        A record deleted during the iteration is skipped if its turn had not come yet.
        """
        client = self._client
        if client is not None:
            return client.iterate_entries(exclusive_start_key, limit)
        return self._attach_and_iterate("iterate_entries", exclusive_start_key, limit)

    def __aiter__(self) -> AsyncIterator[str]:
        """``async for key in kvs``: every key, in order."""
        client = self._client
        if client is not None:
            return client.iterate_key_names()
        return self._attach_and_iterate("iterate_key_names", None, None)

    async def _attach_and_iterate(
        self, method: str, exclusive_start_key: str | None, limit: int | None
    ) -> AsyncIterator[Any]:
        """Classic handles: open the store, then iterate with the client's ``method``."""
        client = await self._attach()
        async for item in getattr(client, method)(exclusive_start_key, limit):
            yield item

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
        if default_value is not None and not isinstance(default_value, Mapping):
            raise TypeError(
                f"default_value must be a dict (or None), got {type(default_value).__name__}"
            )
        found = self._autosaved.get(key)
        if found is not None:
            return found.value
        client = self._client or await self._attach()
        if not self._events_entered and self._primary is self:
            await self._start_events(None)
        async with self._autosave_lock:
            found = self._autosaved.get(key)
            if found is not None:
                return found.value
            stored = await client.get_value(key, MISSING)
            if stored is MISSING:
                # A validated, private copy: later changes to the caller's default do not leak in.
                value = decode(*encode(dict(default_value or {}), JSON_CONTENT_TYPE))
                entry = _Autosaved(value, None)
            elif isinstance(stored, dict):
                entry = _Autosaved(stored, encode_json(stored))
            else:
                raise TypeError(
                    f"the record {key!r} holds a {type(stored).__name__}, not a dict: an "
                    "autosaved value is a dict. Use another key, or delete the record first"
                )
            self._autosaved[key] = entry
            return entry.value

    async def persist_autosaved_values(self) -> None:
        """Write every autosaved value that changed since it was last written.

        A value that cannot be stored (it holds something that is not JSON) is reported with
        ``TypeError`` after the others were saved.
        """
        if not self._autosaved:
            return
        client = self._client
        if client is None or client.closed:
            return
        failure: TypeError | None = None
        async with self._autosave_lock:
            for key, entry in list(self._autosaved.items()):
                try:
                    data = encode_json(entry.value)
                except TypeError as exc:
                    failure = failure or TypeError(f"autosaved value {key!r}: {exc}")
                    continue
                if data == entry.saved:
                    continue
                await client.set_value(key, entry.value, JSON_CONTENT_TYPE)
                entry.saved = data
        if failure is not None:
            raise failure

    # ------------------------------------------------------------------ store lifecycle

    async def purge(self) -> None:
        """Remove every record; the store (id, name, creation time) stays.

        Autosaved dicts stay attached and are written again on the next save.
        """
        client = self._client or await self._attach()
        await client.purge()
        for entry in self._autosaved.values():
            entry.saved = None

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
        events = self._events
        try:
            if events is not None and self._events_entered:
                self._events_entered = False
                try:
                    await events.__aexit__(None, None, None)
                finally:
                    events.off(event=Event.PERSIST_STATE, listener=self._on_persist_state)
            await self.persist_autosaved_values()
        finally:
            self._autosaved.clear()

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
