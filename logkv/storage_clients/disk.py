"""The default backend: every store is a logkv :class:`~logkv.Engine` in its own folder on disk.

:class:`DiskStorageClient` finds store folders (:mod:`logkv.storage_clients._folders`) and opens
them as :class:`DiskKeyValueStoreClient` objects: thin adapters over the store core
(:class:`~logkv.storage_clients._store.EngineStore`) that bring logkv's value codec
(:mod:`logkv.content`). Small reads and writes run inline on the event loop; what could block it
goes to a worker thread (see :mod:`logkv.storage_clients._store`).

The names ``LogStorageClient`` and ``LogKeyValueStoreClient`` (and the module
``logkv.storage_clients.log``) are deprecated aliases of these.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from ..compaction import CompactionResult
from ..configuration import Configuration
from ..content import check_content_type, decode, decoder_for, encode, public_content_type
from ..engine import Engine
from ..index import IndexEntry
from ..models import KeyValueStoreMetadata, KeyValueStoreRecordMetadata, record_metadata
from ..modes import MAX_KEY_LENGTH
from ..names import Selector
from ..values import Piece
from ._base import (
    Deferred,
    KeyValueStoreClient,
    StorageClient,
    StoreLocation,
    check_key,
    check_paging,
    stamp_times,
)
from ._folders import locate_store
from ._store import EngineStore, StoreAdapter

_now = time.time
_to_thread = asyncio.to_thread


class DiskStorageClient(StorageClient):
    """Stores as append-only logs on disk (the default storage client).

    Stateless: every instance sees the same stores for the same ``storage_dir``.
    """

    async def locate_kvs(self, selector: Selector, configuration: Configuration) -> StoreLocation:
        """The folder of the selected store; a store selected by id is looked up on disk."""
        return await locate_store(selector, configuration.storage_dir)

    async def open_kvs_client(
        self, location: StoreLocation, configuration: Configuration, *, readonly: bool = False
    ) -> DiskKeyValueStoreClient:
        """Open the store's engine (replaying its log in a worker thread); ``readonly``: without
        its lock, beside a writer (see :mod:`logkv.storage_clients._store`)."""
        store = await EngineStore.open(location, configuration, readonly=readonly)
        return DiskKeyValueStoreClient(store)


class DiskKeyValueStoreClient(StoreAdapter, KeyValueStoreClient):
    """One open store on disk, with logkv's value codec (see the module docstring)."""

    def __init__(self, store: EngineStore) -> None:
        meta = store.meta
        super().__init__(id=meta.id, name=meta.name, alias=meta.alias, kind=meta.kind, stamps=meta)
        self._store = store
        self._engine = store.engine
        self._offload = store.offload
        self._readonly = store.readonly
        #: The content type of the last value read, and its decoder.
        self._last_type: str | None = None
        self._last_decoder: Callable[[bytes], Any] = decoder_for(None)

    @classmethod
    def open_sync(
        cls, location: StoreLocation, configuration: Configuration
    ) -> DiskKeyValueStoreClient:
        """Open (creating if needed) the store at ``location`` (blocking: run it in a thread)."""
        return cls(EngineStore.open_sync(location, configuration))

    # ------------------------------------------------------------------ reads

    def get_value_nowait(self, key: str, default: Any = None) -> Any:
        """The value of ``key`` from one checked read of the log, or ``default``; a
        :class:`Deferred` read in a worker thread for values over the offload threshold."""
        if type(key) is not str or not 0 < len(key) <= MAX_KEY_LENGTH or not key.isascii():
            check_key(key)
        self.stamps.accessed_at = _now()
        engine = self._engine
        if self._readonly:
            self._store.refresh()
        found = engine.get_small(key, self._offload)
        if found is None:
            return default
        if isinstance(found, int):  # a large value: read and decode it in a worker thread
            return Deferred(_to_thread(_read_decoded, engine, key, default))
        data, content_type = found
        if data is None:
            return None
        if content_type is not self._last_type:  # content types repeat: keep the last decoder
            self._last_decoder = decoder_for(content_type)
            self._last_type = content_type
        try:
            return self._last_decoder(data)
        except ValueError:  # foreign bytes the fast decoder refuses: decode() explains or copes
            return decode(data, content_type)

    async def get_value(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default``."""
        value = self.get_value_nowait(key, default)
        if type(value) is Deferred:
            return await value.awaitable
        return value

    async def get_info(self, key: str) -> KeyValueStoreRecordMetadata | None:
        """The content type and size of ``key``, or None."""
        check_key(key)
        self.touch()
        self._store.refresh()
        entry = self._engine.entry(key)
        if entry is None:
            return None
        return _info(key, entry)

    async def record_exists(self, key: str) -> bool:
        """True when ``key`` holds a record (an index lookup: no read)."""
        check_key(key)
        return self._store.contains(key)

    async def iterate_keys(
        self, exclusive_start_key: str | None = None, limit: int | None = None, prefix: str = ""
    ) -> AsyncIterator[KeyValueStoreRecordMetadata]:
        """Record metadata in key order, fetched from the index in batches."""
        check_paging(exclusive_start_key, limit, prefix)
        async for key, entry in self._store.entries(exclusive_start_key, limit, prefix):
            yield _info(key, entry)

    async def iterate_key_names(
        self, exclusive_start_key: str | None = None, limit: int | None = None, prefix: str = ""
    ) -> AsyncIterator[str]:
        """Keys in order, fetched from the index in batches."""
        check_paging(exclusive_start_key, limit, prefix)
        async for batch in self._store.key_batches(exclusive_start_key, limit, prefix):
            for key in batch:
                yield key

    async def get_metadata(self) -> KeyValueStoreMetadata:
        """Identity, timestamps and the engine's figures."""
        self._store.refresh()
        stats = self._engine.stats()
        replica = self._store.replica
        lag = None if replica is None else replica.lag()
        return KeyValueStoreMetadata(
            id=self.id,
            name=self.name,
            **stamp_times(self.stamps),
            record_count=stats.keys,
            live_bytes=stats.live_bytes,
            log_bytes=stats.disk_bytes,
            last_seq=stats.last_seq,
            replication_lag_records=None if lag is None else lag.records,
            replication_lag_s=None if lag is None else lag.seconds,
        )

    async def get_public_url(self, key: str) -> str:
        """Materialise ``key`` as ``public/{KEY}.{EXT}`` in the store folder; its ``file://`` URL.

        Raises ``KeyError`` when ``key`` holds no record.
        """
        check_key(key)
        return await self._store.public_url(key)

    # ------------------------------------------------------------------ writes

    def set_value_nowait(
        self, key: str, value: Any, content_type: str | None = None
    ) -> Deferred | None:
        """Encode ``value`` and append it inline (None), or return the :class:`Deferred`
        write of a large value or of a write that waits for its fsync."""
        if type(key) is not str or not 0 < len(key) <= MAX_KEY_LENGTH or not key.isascii():
            check_key(key)
        data, stored_type = encode(value, content_type)
        pending = self._store.write_nowait(key, data, stored_type)
        return None if pending is None else Deferred(pending)

    async def set_value(self, key: str, value: Any, content_type: str | None = None) -> None:
        """Encode ``value`` and append it; durable (to the chosen level) when this returns."""
        pending = self.set_value_nowait(key, value, content_type)
        if pending is not None:
            await pending.awaitable

    async def set_value_stream(
        self, key: str, pieces: AsyncIterator[Piece], content_type: str | None
    ) -> None:
        """Stream ``pieces`` into a value file and commit it (docs/FORMAT.md, section 14);
        ``content_type`` defaults to ``application/octet-stream``."""
        check_key(key)
        await self._store.write_stream(key, pieces, _stream_type(content_type))

    def iterate_value_chunks(self, key: str) -> AsyncIterator[bytes]:
        """The stored bytes of ``key`` a chunk at a time, each checked before it is yielded."""
        check_key(key)
        return self._store.read_stream(key)

    async def delete_value(self, key: str) -> bool:
        """Append a delete record for ``key`` if it exists; True if it did."""
        check_key(key)
        return await self._store.delete(key)

    async def purge(self) -> None:
        """Delete every record (one delete record each, so history shows the purge)."""
        await self._store.purge()

    # ------------------------------------------------------------------ upkeep and closing

    async def maintain(self) -> None:
        """Save changed timestamps and, past the thresholds, compact (in a worker thread)."""
        await self._store.maintain()

    async def compact(self, retention: str | None = None) -> CompactionResult | None:
        """Compact now, in a worker thread (after any automatic compaction still running)."""
        return await self._store.compact(retention)

    async def close(self) -> None:
        """Save the timestamps, make pending writes durable, release the lock (idempotent)."""
        await self._store.close()

    async def drop(self) -> None:
        """Delete the store and its folder, all or nothing; the client is closed afterwards."""
        await self._store.drop()


def _stream_type(content_type: str | None) -> str:
    """The content type a streamed value is stored with: the one given (checked), else
    ``application/octet-stream`` (its bytes are stored as they come, never encoded)."""
    if content_type is None:
        return "application/octet-stream"
    check_content_type(content_type)
    return content_type


def _info(key: str, entry: IndexEntry) -> KeyValueStoreRecordMetadata:
    return record_metadata(key, public_content_type(entry.content_type), entry.value_size)


def _read_decoded(engine: Engine, key: str, default: Any) -> Any:
    found = engine.get_with_type(key)
    if found is None:
        return default
    return decode(*found)
