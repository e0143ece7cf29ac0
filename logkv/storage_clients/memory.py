"""An in-memory backend, for tests and short jobs: nothing reaches the disk.

Records are kept encoded, exactly as the log-based client stores them (bytes and content type,
in a sorted dictionary), so both clients accept and return the same values, raise the same
errors and order keys the same way. Stores live as long as their :class:`MemoryStorageClient`:
closing and reopening a store through the same client finds its records again; ``drop``
forgets them.
"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from sortedcontainers import SortedDict

from ..configuration import Configuration
from ..content import decode, encode, public_content_type
from ..errors import StoreClosedError, StoreNotFoundError
from ..key_range import keys_after
from ..models import KeyValueStoreMetadata, KeyValueStoreRecordMetadata, record_metadata
from ..modes import MAX_KEY_LENGTH
from ..names import Selector, StoreKind
from ..values import iter_inline
from ._base import (
    KeyValueStoreClient,
    StorageClient,
    StoreLocation,
    check_key,
    check_paging,
    paced_key_batches,
    stamp_times,
)

_now = time.time


@dataclass
class _MemoryStore:
    """The records and identity of one in-memory store (outlives its clients)."""

    id: str
    name: str | None
    alias: str | None
    kind: StoreKind
    folder_name: str
    created_at: float = field(default_factory=_now)
    accessed_at: float = field(default_factory=_now)
    modified_at: float = field(default_factory=_now)
    records: SortedDict[str, tuple[bytes, str]] = field(default_factory=SortedDict)
    live_bytes: int = 0
    last_seq: int = 0


class MemoryStorageClient(StorageClient):
    """Stores in this process's memory; each instance is a separate set of stores."""

    def __init__(self, configuration: Configuration | None = None) -> None:
        super().__init__(configuration)
        self._stores: dict[str, _MemoryStore] = {}  # folder name -> store
        #: Tells this client's stores from another's in registry keys (never reused, unlike
        #: ``id(self)``, while a registry holds a key made with it).
        self._token = object()

    async def locate_kvs(self, selector: Selector, configuration: Configuration) -> StoreLocation:
        """The selected store; an ``id`` must name a store of this client."""
        found: Selector | _MemoryStore = selector
        if selector.folder_name is None:
            stores = (store for store in self._stores.values() if store.id == selector.id)
            store = next(stores, None)
            if store is None:
                raise StoreNotFoundError(f"no in-memory key-value store with id {selector.id!r}")
            found = store
        folder_name, kind = found.folder_name, found.kind
        assert folder_name is not None and kind != "id"
        return StoreLocation(
            (self._token, folder_name),
            kind,
            found.id,
            found.name,
            found.alias,
            folder_name=folder_name,
        )

    async def open_kvs_client(
        self, location: StoreLocation, configuration: Configuration, *, readonly: bool = False
    ) -> MemoryKeyValueStoreClient:
        """A client of the store at ``location``, created if it does not exist yet.

        ``readonly`` raises ``ValueError``: a read-only open is for reading a store beside its
        writer, and an in-memory store has no other reader than its writer.
        """
        if readonly:
            raise ValueError(
                "the in-memory client has no read-only opens (they read a store on disk beside "
                "its writer); open the store without readonly=True"
            )
        folder_name = location.folder_name
        assert folder_name is not None
        store = self._stores.get(folder_name)
        if store is None:
            identity = location.new_identity()
            store = _MemoryStore(
                id=identity["id"],
                name=identity["name"],
                alias=identity["alias"],
                kind=identity["kind"],
                folder_name=folder_name,
            )
            self._stores[folder_name] = store
        elif store.kind != location.kind:
            raise ValueError(
                f"the in-memory store {folder_name!r} is a {store.kind} store; it cannot be "
                f"opened as a {location.kind} store"
            )
        return MemoryKeyValueStoreClient(store, self)

    def _forget(self, store: _MemoryStore) -> None:
        if self._stores.get(store.folder_name) is store:
            del self._stores[store.folder_name]


class MemoryKeyValueStoreClient(KeyValueStoreClient):
    """One open in-memory store."""

    def __init__(self, store: _MemoryStore, owner: MemoryStorageClient) -> None:
        super().__init__(
            id=store.id, name=store.name, alias=store.alias, kind=store.kind, stamps=store
        )
        store.accessed_at = _now()  # opening is an access
        self._store = store
        self._records = store.records
        self._owner = owner
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once the store was closed or dropped."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"the in-memory store {self._store.folder_name!r} is closed")

    def get_value_nowait(self, key: str, default: Any = None) -> Any:
        """The value of ``key`` (decoded afresh: callers never share objects), or ``default``."""
        if type(key) is not str or not 0 < len(key) <= MAX_KEY_LENGTH or not key.isascii():
            check_key(key)
        if self._closed:
            self._check_open()
        self._store.accessed_at = _now()
        found = self._records.get(key)
        if found is None:
            return default
        return decode(found[0], found[1])

    async def get_value(self, key: str, default: Any = None) -> Any:
        """The value of ``key`` (decoded afresh), or ``default``."""
        return self.get_value_nowait(key, default)

    async def get_info(self, key: str) -> KeyValueStoreRecordMetadata | None:
        """The content type and size of ``key``, or None."""
        check_key(key)
        self._check_open()
        found = self._records.get(key)
        if found is None:
            return None
        return record_metadata(key, public_content_type(found[1]), len(found[0]))

    async def record_exists(self, key: str) -> bool:
        """True when ``key`` holds a record."""
        check_key(key)
        self._check_open()
        self.touch()
        return key in self._records

    def set_value_nowait(self, key: str, value: Any, content_type: str | None = None) -> None:
        """Encode and keep ``value``."""
        if type(key) is not str or not 0 < len(key) <= MAX_KEY_LENGTH or not key.isascii():
            check_key(key)
        if self._closed:
            self._check_open()
        data, stored_type = encode(value, content_type)
        store = self._store
        old = self._records.get(key)
        if old is not None:
            store.live_bytes -= len(old[0])
        self._records[key] = (data, stored_type)
        store.live_bytes += len(data)
        store.last_seq += 1
        self.touch(modified=True)

    async def set_value(self, key: str, value: Any, content_type: str | None = None) -> None:
        """Encode and keep ``value``."""
        self.set_value_nowait(key, value, content_type)

    async def iterate_value_chunks(self, key: str) -> AsyncIterator[bytes]:
        """The stored bytes of ``key`` a chunk at a time (nothing when it is absent)."""
        check_key(key)
        self._check_open()
        found = self._records.get(key)
        if found is not None:
            for chunk in iter_inline(found[0]):
                yield chunk

    async def delete_value(self, key: str) -> bool:
        """Forget ``key``; True if it existed."""
        check_key(key)
        self._check_open()
        old = self._records.pop(key, None)
        if old is None:
            self.touch()
            return False
        self._store.live_bytes -= len(old[0])
        self._store.last_seq += 1
        self.touch(modified=True)
        return True

    def _batch(self, after: str | None, count: int, prefix: str = "") -> list[str]:
        self._check_open()
        return keys_after(self._records, after, count, prefix)

    async def iterate_key_names(
        self, exclusive_start_key: str | None = None, limit: int | None = None, prefix: str = ""
    ) -> AsyncIterator[str]:
        """Keys in order, in batches that each start after the previous one's last key."""
        check_paging(exclusive_start_key, limit, prefix)
        self.touch()
        batches = paced_key_batches(
            exclusive_start_key, limit, lambda after, count: self._batch(after, count, prefix)
        )
        async for batch in batches:
            for key in batch:
                yield key

    async def iterate_keys(
        self, exclusive_start_key: str | None = None, limit: int | None = None, prefix: str = ""
    ) -> AsyncIterator[KeyValueStoreRecordMetadata]:
        """Record metadata in key order (records deleted meanwhile are skipped)."""
        async for key in self.iterate_key_names(exclusive_start_key, limit, prefix):
            found = self._records.get(key)
            if found is not None:
                yield record_metadata(key, public_content_type(found[1]), len(found[0]))

    async def get_public_url(self, key: str) -> str:
        """A ``data:`` URL holding the record (an in-memory store has no files to point to).

        Raises ``KeyError`` when ``key`` holds no record.
        """
        check_key(key)
        self._check_open()
        found = self._records.get(key)
        if found is None:
            raise KeyError(f"no record under key {key!r}: there is nothing to publish")
        media_type = public_content_type(found[1]).replace(" ", "")
        return f"data:{media_type};base64,{base64.b64encode(found[0]).decode('ascii')}"

    async def get_metadata(self) -> KeyValueStoreMetadata:
        """Identity, timestamps and figures (``log_bytes`` is 0: there is no log)."""
        self._check_open()
        store = self._store
        return KeyValueStoreMetadata(
            id=self.id,
            name=self.name,
            **stamp_times(self.stamps),
            record_count=len(self._records),
            live_bytes=store.live_bytes,
            log_bytes=0,
            last_seq=store.last_seq,
        )

    async def purge(self) -> None:
        """Forget every record."""
        self._check_open()
        if self._records:
            self._store.last_seq += len(self._records)
        self._records.clear()
        self._store.live_bytes = 0
        self.touch(modified=True)

    async def close(self) -> None:
        """Mark the client closed; the records stay with the storage client."""
        self._closed = True

    async def drop(self) -> None:
        """Forget the store and its records."""
        self._closed = True
        self._records.clear()
        self._owner._forget(self._store)
