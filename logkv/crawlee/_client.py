"""Crawlee's ``KeyValueStoreClient`` over one logkv :class:`~logkv.Engine`.

A store lives in ``{storage_dir}/key_value_stores/{name|alias|default}/`` exactly like a store of
logkv's own client: the engine's log, its lock file, ``META.json`` (identity and timestamps, see
:mod:`logkv.storage_clients._meta`) and ``public/`` (files made by ``get_public_url``). logkv's
command line tools (``logkv stats``, ``logkv history``) therefore work on stores a crawler made,
and logkv's own client opens them too.

Values are serialised by Crawlee's rules (:mod:`logkv.crawlee._values`). Small reads and writes
run inline on the event loop (an append or a positioned read costs microseconds); values larger
than the offload threshold, writes under ``Durability.FSYNC`` (awaited through the engine's group
commit), opening, purge, compaction and drop run in worker threads.

``accessed_at`` and ``modified_at`` are kept in memory and written to ``META.json`` at most once
per ``persist_state_interval``, when the store is closed, and when the process exits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Final

from crawlee.storage_clients._base import KeyValueStoreClient
from crawlee.storage_clients.models import (
    KeyValueStoreMetadata,
    KeyValueStoreRecord,
    KeyValueStoreRecordMetadata,
)

from ..configuration import Configuration
from ..engine import Engine
from ..errors import StoreClosedError
from ..fsutil import empty_trash
from ..index import IndexEntry
from ..options import Durability
from ..storage_clients._base import (
    Pacer,
    StoreLocation,
    check_key,
    check_paging,
    timestamp,
)
from ..storage_clients._meta import StoreMeta, new_store_id, read_meta, write_meta
from ..storage_clients._public import PublicFiles
from ..storage_clients.log import (
    _check_kind,
    _delete_all,
    drop_store,
    engine_key_batches,
    refuse_foreign_folder,
    settle_compaction,
    trash_of,
    wait_for_commit,
)
from ._values import deserialize, serialize, shown_content_type

log = logging.getLogger("logkv")

_now = time.time
_to_thread = asyncio.to_thread

#: Most value bytes ``iterate_entries`` reads in one batch (at least one record per batch).
ENTRY_BATCH_BYTES: Final = 4 * 1024 * 1024


class LogKvKeyValueStoreClient(KeyValueStoreClient):  # type: ignore[misc]
    """One open logkv store, as Crawlee's ``KeyValueStore`` sees it (see the module docstring).

    Open stores through :class:`~logkv.crawlee.LogKvStorageClient`; one client serves each
    store folder per process.
    """

    def __init__(
        self,
        engine: Engine,
        meta: StoreMeta,
        settings: Configuration,
        on_close: Callable[[LogKvKeyValueStoreClient], None],
    ) -> None:
        self._engine = engine
        self._folder = engine.path
        self._meta = meta
        self._accessed_at = meta.accessed_at
        self._modified_at = meta.modified_at
        self._saved_stamps = (meta.accessed_at, meta.modified_at)
        self._last_save = _now()
        self._save_interval = settings.persist_state_interval.total_seconds()
        self._offload = settings.offload_threshold
        self._fsync = settings.durability is Durability.FSYNC
        self._auto_compact = settings.auto_compact
        self._compaction_bytes = settings.compaction_min_dead_bytes
        self._compaction_ratio = settings.compaction_min_dead_ratio
        self._compaction: asyncio.Task[None] | None = None
        self._public = PublicFiles(engine.path)
        self._pacer = Pacer()
        self._on_close = on_close
        self._closed = False

    # ------------------------------------------------------------------ opening

    @classmethod
    def open_sync(
        cls,
        location: StoreLocation,
        settings: Configuration,
        on_close: Callable[[LogKvKeyValueStoreClient], None],
    ) -> LogKvKeyValueStoreClient:
        """Open (creating if needed) the store at ``location``; blocking: run it in a thread.

        Raises ``ValueError`` when the folder holds a store of another kind (a named store
        opened as an alias, for example) and :class:`~logkv.errors.NotALogKVStoreError` when it
        holds something other than a logkv store.
        """
        folder = location.path
        assert folder is not None
        empty_trash(trash_of(folder))
        refuse_foreign_folder(folder)
        meta = read_meta(folder)
        if meta is not None:
            _check_kind(meta, location, folder)
        engine = Engine.open(
            folder,
            durability=settings.durability,
            segment_size=settings.segment_size,
            recovery=settings.recovery,
            retention=settings.retention,
        )
        try:
            meta = read_meta(folder)  # again, now that the lock is ours
            now = _now()
            if meta is None:
                meta = StoreMeta(
                    id=location.id or new_store_id(),
                    name=location.name,
                    alias=location.alias,
                    kind=location.kind,
                    created_at=now,
                    accessed_at=now,
                    modified_at=now,
                )
            else:
                _check_kind(meta, location, folder)
                meta.accessed_at = now  # opening is an access, as in Crawlee
            write_meta(folder, meta)
            client = cls(engine, meta, settings, on_close)
            client._public.reload(client._keys_from, engine.get_with_type)
        except BaseException:
            engine.close()
            raise
        return client

    def _keys_from(self, prefix: str) -> list[str]:
        first = [prefix] if prefix in self._engine else []
        return first + list(self._engine.keys(prefix))

    # ------------------------------------------------------------------ properties

    @property
    def path(self) -> Path:
        """The store's folder."""
        return self._folder

    @property
    def engine(self) -> Engine:
        """The engine underneath (for tools)."""
        return self._engine

    @property
    def closed(self) -> bool:
        """True once the store was closed or dropped."""
        return self._closed

    # ------------------------------------------------------------------ metadata

    async def get_metadata(self) -> KeyValueStoreMetadata:
        """The store's id, name and timestamps."""
        return KeyValueStoreMetadata(
            id=self._meta.id,
            name=self._meta.name,
            created_at=timestamp(self._meta.created_at),
            accessed_at=timestamp(self._accessed_at),
            modified_at=timestamp(self._modified_at),
        )

    def _touch(self, *, modified: bool = False) -> None:
        now = _now()
        self._accessed_at = now
        if modified:
            self._modified_at = now

    async def _tick(self) -> None:
        """After every call: now and then, yield to the event loop (inline calls never
        suspend: see :class:`~logkv.storage_clients._base.Pacer`); once per save interval, save
        changed timestamps and maybe start a compaction."""
        if self._pacer.due():
            await asyncio.sleep(0)
        if _now() - self._last_save < self._save_interval:
            return
        self._last_save = _now()
        await self._save_meta()
        self._maybe_compact()

    async def _save_meta(self) -> None:
        stamps = (self._accessed_at, self._modified_at)
        if stamps == self._saved_stamps:
            return
        self._meta.accessed_at, self._meta.modified_at = stamps
        self._saved_stamps = stamps
        await _to_thread(write_meta, self._folder, self._meta)

    def _maybe_compact(self) -> None:
        if not self._auto_compact or self._compaction is not None:
            return
        if self._engine.should_compact(self._compaction_bytes, self._compaction_ratio):
            self._compaction = asyncio.create_task(self._compact())

    async def _compact(self) -> None:
        try:
            result = await _to_thread(self._engine.compact)
            log.info("compacted %s: %s", self._folder, result)
        except StoreClosedError:
            pass
        except Exception:
            log.exception("compaction of %s failed", self._folder)
        finally:
            self._compaction = None

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"the key-value store at {self._folder} is closed or dropped")

    # ------------------------------------------------------------------ reads

    async def get_value(self, *, key: str) -> KeyValueStoreRecord | None:
        """The record of ``key`` (a stored ``None`` is a record), or None when there is none."""
        self._check_open()
        check_key(key)
        self._touch()
        entry = self._engine.entry(key)
        if entry is None:
            return None
        if entry.size > self._offload:
            found = await _to_thread(self._engine.get_record, key, entry)
        else:
            found = self._engine.get_record(key, entry)
        await self._tick()
        if found is None:
            return None
        entry, data = found  # the entry again if a compaction moved the record meanwhile
        return _record(key, data, entry.content_type)

    async def record_exists(self, *, key: str) -> bool:
        """True when ``key`` holds a record, a stored ``None`` included (an index lookup)."""
        self._check_open()
        check_key(key)
        self._touch()
        found = key in self._engine
        await self._tick()
        return found

    async def iterate_keys(
        self, *, exclusive_start_key: str | None = None, limit: int | None = None
    ) -> AsyncIterator[KeyValueStoreRecordMetadata]:
        """Record metadata in key order (Python string order) after ``exclusive_start_key``,
        at most ``limit`` of them, fetched from the index in batches."""
        self._check_open()
        check_paging(exclusive_start_key, limit)
        self._touch()
        engine = self._engine
        async for batch in engine_key_batches(self._engine, exclusive_start_key, limit):
            for key in batch:
                entry = engine.entry(key)  # now, not when the batch was listed
                if entry is not None:
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
        self._check_open()
        check_paging(exclusive_start_key, limit)
        self._touch()
        engine = self._engine
        async for batch in engine_key_batches(self._engine, exclusive_start_key, limit):
            for group, size in _groups(engine, batch):
                if size > self._offload:
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
        self._check_open()
        check_key(key)
        self._touch()
        entry = self._engine.entry(key)
        if entry is None:
            raise KeyError(f"no record under key {key!r}: there is nothing to publish")
        found = await _to_thread(self._engine.get_record, key, entry)
        if found is None:
            raise KeyError(f"no record under key {key!r}: there is nothing to publish")
        entry, data = found
        path = await _to_thread(self._public.publish, key, data or b"", entry.content_type)
        return path.absolute().as_uri()

    # ------------------------------------------------------------------ writes

    async def set_value(self, *, key: str, value: Any, content_type: str | None = None) -> None:
        """Serialise ``value`` by Crawlee's rules and append it (``None`` is stored as a record)."""
        self._check_open()
        check_key(key)
        data, stored_type = serialize(value, content_type)
        engine = self._engine
        if self._fsync:
            _, commit = engine.set_deferred(key, data, stored_type)
            await wait_for_commit(commit)
        elif data is not None and len(data) > self._offload:
            await _to_thread(engine.set, key, data, stored_type)
        else:
            engine.set(key, data, stored_type)
        self._touch(modified=True)
        if key in self._public.published:
            await _to_thread(self._public.publish, key, data or b"", stored_type)
        await self._tick()

    async def delete_value(self, *, key: str) -> None:
        """Append a delete record for ``key`` if it holds a record (else nothing happens)."""
        self._check_open()
        check_key(key)
        if self._fsync:
            existed, commit = self._engine.delete_deferred(key)
            await wait_for_commit(commit)
        else:
            existed = self._engine.delete(key)
        self._touch(modified=existed)
        if key in self._public.published:
            self._public.remove(key)
        await self._tick()

    async def purge(self) -> None:
        """Delete every record (one delete record each, so ``logkv history`` shows the purge);
        the store, its id and its metadata remain."""
        self._check_open()
        try:
            await _to_thread(_delete_all, self._engine)
        finally:
            await _to_thread(self._public.clear)
        self._touch(modified=True)
        await self._save_meta()

    # ------------------------------------------------------------------ closing

    async def close(self) -> None:
        """Save the timestamps, finish a running compaction and release the store (idempotent).

        Crawlee has no such call: :class:`~logkv.crawlee.LogKvStorageClient` closes its stores
        in ``close()`` and, failing that, when the process exits.
        """
        if self._closed:
            return
        await self._stop()
        try:
            await self._save_meta()
        finally:
            await _to_thread(self._engine.close)
            self._on_close(self)

    async def _stop(self) -> None:
        """Refuse further calls and let a running compaction finish."""
        self._closed = True
        await settle_compaction(self._compaction)

    def close_sync(self) -> None:
        """:meth:`close` without an event loop (at process exit; a running compaction is left
        to the engine's close)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._meta.accessed_at, self._meta.modified_at = self._accessed_at, self._modified_at
            write_meta(self._folder, self._meta)
        finally:
            self._engine.close()
            self._on_close(self)

    async def drop(self) -> None:
        """Delete the store and its folder, all or nothing (see
        :func:`logkv.storage_clients.log.drop_store`); the client cannot be used afterwards."""
        self._check_open()
        await self._stop()
        try:
            await _to_thread(drop_store, self._engine)
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
