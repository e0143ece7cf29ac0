"""Crawlee's ``KeyValueStoreClient`` over one logkv store.

A store lives in ``{storage_dir}/key_value_stores/{name|alias|default}/`` exactly like a store of
logkv's own client: both are adapters over the same store core,
:class:`~logkv.storage_clients._store.EngineStore` (the engine, ``META.json``, public files,
timestamps, compaction, purge, close and drop). logkv's command line tools (``logkv stats``,
``logkv history``) therefore work on stores a crawler made, and logkv's own client opens them too.

What this adapter adds is Crawlee's API and Crawlee's value codec (:mod:`logkv.crawlee._values`).
Small reads and writes run inline on the event loop (an append or a positioned read costs
microseconds); values larger than the offload threshold, opening, purge, compaction and drop run
in worker threads, and writes under ``Durability.FSYNC`` await the engine's group commit.

``accessed_at`` and ``modified_at`` are kept in memory and written to ``META.json`` at most once
per ``persist_state_interval`` (Crawlee has no event that reaches a storage client, so the
calls themselves keep time), after a purge, when the store is closed, and when the process exits.
The same check starts an automatic compaction when the thresholds are passed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

from crawlee.storage_clients._base import KeyValueStoreClient
from crawlee.storage_clients.models import (
    KeyValueStoreMetadata,
    KeyValueStoreRecord,
    KeyValueStoreRecordMetadata,
)

from ..configuration import Configuration
from ..engine import Engine
from ..index import IndexEntry
from ..storage_clients._base import Pacer, check_key, check_paging, stamp_times
from ..storage_clients._store import EngineStore, StoreAdapter
from ..storage_clients._streams import async_pieces, is_stream_source
from ._values import deserialize, serialize, shown_content_type

_OCTET_STREAM: Final = "application/octet-stream"

log = logging.getLogger(__name__)

_to_thread = asyncio.to_thread

#: Most value bytes ``iterate_entries`` reads in one batch (at least one record per batch).
ENTRY_BATCH_BYTES: Final = 4 * 1024 * 1024


class LogKvKeyValueStoreClient(StoreAdapter, KeyValueStoreClient):  # type: ignore[misc]
    """One open logkv store, as Crawlee's ``KeyValueStore`` sees it (see the module docstring).

    Open stores through :class:`~logkv.crawlee.LogKvStorageClient`; one client serves each
    store folder per process. ``settings`` is accepted for the storage client's sake: what the
    client needs of it (the upkeep interval, the thresholds) the store already holds.
    """

    def __init__(
        self,
        store: EngineStore,
        settings: Configuration,
        on_close: Callable[[LogKvKeyValueStoreClient], None],
    ) -> None:
        self._store = store
        self._engine = store.engine
        self._pacer = Pacer()
        self._on_close = on_close

    # ------------------------------------------------------------------ metadata

    async def get_metadata(self) -> KeyValueStoreMetadata:
        """The store's id, name and timestamps."""
        meta = self._store.meta
        return KeyValueStoreMetadata(id=meta.id, name=meta.name, **stamp_times(meta))

    async def _tick(self) -> None:
        """After every call: now and then, yield to the event loop (inline calls never
        suspend: see :class:`~logkv.storage_clients._base.Pacer`); the store's upkeep when due
        (:meth:`~logkv.storage_clients._store.EngineStore.upkeep_when_due`)."""
        if self._pacer.due():
            await asyncio.sleep(0)
        await self._store.upkeep_when_due()

    # ------------------------------------------------------------------ reads

    async def get_value(self, *, key: str) -> KeyValueStoreRecord | None:
        """The record of ``key`` (a stored ``None`` is a record), or None when there is none."""
        self._store.check_open()
        check_key(key)
        found = await self._store.read(key)
        await self._tick()
        if found is None:
            return None
        data, content_type = found
        return _record(key, data, content_type)

    async def record_exists(self, *, key: str) -> bool:
        """True when ``key`` holds a record, a stored ``None`` included (an index lookup)."""
        self._store.check_open()
        check_key(key)
        found = self._store.contains(key)
        await self._tick()
        return found

    async def iterate_keys(
        self, *, exclusive_start_key: str | None = None, limit: int | None = None
    ) -> AsyncIterator[KeyValueStoreRecordMetadata]:
        """Record metadata in key order (Python string order) after ``exclusive_start_key``,
        at most ``limit`` of them, fetched from the index in batches."""
        self._store.check_open()
        check_paging(exclusive_start_key, limit)
        async for key, entry in self._store.entries(exclusive_start_key, limit):
            yield KeyValueStoreRecordMetadata(
                key=key,
                content_type=shown_content_type(entry.content_type),
                size=entry.value_size,
            )

    async def iterate_entries(
        self, *, exclusive_start_key: str | None = None, limit: int | None = None
    ) -> AsyncIterator[KeyValueStoreRecord]:
        """Records with their values in key order, read in batches of bounded size.

        Keys come from the index in batches; their values are read in groups of at most
        :data:`ENTRY_BATCH_BYTES` (a larger value is read alone), in a worker thread when a
        group is larger than the offload threshold. A record deleted before its group is read
        is not yielded.
        """
        store = self._store
        store.check_open()
        check_paging(exclusive_start_key, limit)
        engine = self._engine
        async for batch in store.key_batches(exclusive_start_key, limit):
            for group, size in _groups(engine, batch):
                if size > store.offload:
                    records = await _to_thread(_read_group, engine, group)
                else:
                    records = _read_group(engine, group)
                for record in records:
                    yield record

    async def get_public_url(self, *, key: str) -> str:
        """Materialise ``key`` as ``public/{KEY}.{EXT}`` in the store folder; its ``file://`` URL.

        The file follows the record from then on (rewritten on change, removed on delete).
        Raises ``KeyError`` when ``key`` holds no record.
        """
        self._store.check_open()
        check_key(key)
        return await self._store.public_url(key)

    # ------------------------------------------------------------------ writes

    async def set_value(self, *, key: str, value: Any, content_type: str | None = None) -> None:
        """Serialise ``value`` by Crawlee's rules and append it (``None`` is stored as a record).

        A ``value`` that is a stream (an async iterable of bytes, an ``aiofiles`` file or a
        binary file object: :func:`~logkv.storage_clients._streams.is_stream_source`) is stored
        as a streamed value instead, a chunk at a time and never whole in memory, as its bytes
        (content type ``application/octet-stream`` unless given); ``get_value`` returns it
        whole, :meth:`iterate_value_chunks` a chunk at a time."""
        self._store.check_open()
        check_key(key)
        if is_stream_source(value):
            pieces = async_pieces(value)
            await self._store.write_stream(key, pieces, content_type or _OCTET_STREAM)
            await self._tick()
            return
        pending = self._store.write_nowait(key, *serialize(value, content_type))
        if pending is not None:
            await pending
        await self._tick()

    def iterate_value_chunks(self, *, key: str) -> AsyncIterator[bytes]:
        """The stored bytes of ``key`` a chunk at a time (nothing when there is no record),
        each checked before it is yielded. Not part of Crawlee's client API, which has no
        streams: reach it through the store client (``LogKvStorageClient``)."""
        self._store.check_open()
        check_key(key)
        return self._store.read_stream(key)

    async def delete_value(self, *, key: str) -> None:
        """Append a delete record for ``key`` if it holds a record (else nothing happens)."""
        self._store.check_open()
        check_key(key)
        await self._store.delete(key)
        await self._tick()

    async def purge(self) -> None:
        """Delete every record (one delete record each, so ``logkv history`` shows the purge);
        the store, its id and its metadata remain."""
        await self._store.purge()

    # ------------------------------------------------------------------ closing

    async def close(self) -> None:
        """Save the timestamps, finish a running compaction and release the store (idempotent).

        Crawlee has no such call: :class:`~logkv.crawlee.LogKvStorageClient` closes its stores
        in ``close()`` and, failing that, when the process exits.
        """
        if self._store.closed:
            return
        try:
            await self._store.close()
        finally:
            self._on_close(self)

    def close_sync(self) -> None:
        """:meth:`close` without an event loop (at process exit)."""
        if self._store.closed:
            return
        try:
            self._store.close_sync()
        finally:
            self._on_close(self)

    async def drop(self) -> None:
        """Delete the store and its folder, all or nothing (see
        :func:`logkv.storage_clients._store.drop_store`); the client cannot be used afterwards.
        A read-only store raises :class:`~logkv.ReadOnlyStoreError` and stays open."""
        self._store.check_writable()
        try:
            await self._store.drop()
        finally:
            self._on_close(self)


def _record(key: str, data: bytes | None, stored_type: str | None) -> KeyValueStoreRecord | None:
    try:
        value = deserialize(data, stored_type)
    except ValueError as exc:  # bytes written by something else: as Crawlee, skip the record
        log.warning("the value of key %r does not parse as %s: %s", key, stored_type, exc)
        return None
    return KeyValueStoreRecord(
        key=key,
        value=value,
        content_type=shown_content_type(stored_type),
        size=0 if data is None else len(data),
    )


def _groups(engine: Engine, keys: list[str]) -> list[tuple[list[tuple[str, IndexEntry]], int]]:
    """``keys`` with their current entries, cut into groups of at most ENTRY_BATCH_BYTES."""
    groups: list[tuple[list[tuple[str, IndexEntry]], int]] = []
    group: list[tuple[str, IndexEntry]] = []
    size = 0
    for key in keys:
        entry = engine.entry(key)
        if entry is None:
            continue
        length = entry.value_size
        if group and size + length > ENTRY_BATCH_BYTES:
            groups.append((group, size))
            group, size = [], 0
        group.append((key, entry))
        size += length
    if group:
        groups.append((group, size))
    return groups


def _read_group(engine: Engine, group: list[tuple[str, IndexEntry]]) -> list[KeyValueStoreRecord]:
    records = []
    for key, _ in group:
        found = engine.get_record(key)  # now: the record may have changed since the group was cut
        if found is None:
            continue
        entry, data = found
        record = _record(key, data, entry.content_type)
        if record is not None:
            records.append(record)
    return records
