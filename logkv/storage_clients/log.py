"""The default backend: every store is a logkv :class:`~logkv.Engine` in its own folder.

A store lives in ``{storage_dir}/key_value_stores/{name|alias|default}/``: the engine's log (and
snapshots), its lock file, ``META.json`` (identity and timestamps, see
:mod:`logkv.storage_clients._meta`) and ``public/`` (files made by ``get_public_url``).

The engine is fast enough to call inline: a small append or point read costs microseconds,
less than a hop to a worker thread would. Only what could block the event loop for long goes to
a thread: values larger than ``Configuration.offload_threshold``, opening (log replay),
compaction, purge and drop. Under ``Durability.FSYNC`` a write is appended inline and its task
awaits the engine's group commit (one fsync shared by the tasks that wait), holding no thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Hashable, Iterator
from itertools import chain
from pathlib import Path
from typing import Any, Final

from ..compaction import CompactionResult
from ..configuration import Configuration
from ..content import decode, decoder_for, encode, public_content_type
from ..engine import Commit, Engine
from ..errors import NotALogKVStoreError, StoreClosedError, StoreNotFoundError
from ..fsutil import empty_trash, move_to_trash
from ..index import IndexEntry
from ..layout import (
    CRAWLEE_METADATA_FILE,
    META_FILE,
    TRASH_DIR,
    is_own_name,
    is_store_folder,
)
from ..models import KeyValueStoreMetadata, KeyValueStoreRecordMetadata, record_metadata
from ..names import Selector, kvs_root, store_folder
from ..options import MAX_KEY_LENGTH, Durability
from ._base import (
    ITERATION_BATCH,
    Deferred,
    KeyValueStoreClient,
    StorageClient,
    StoreLocation,
    check_key,
    check_paging,
    paced_key_batches,
    timestamp,
)
from ._meta import StoreMeta, new_store_id, read_meta, write_meta
from ._public import PublicFiles

log = logging.getLogger("logkv")

_now = time.time
_to_thread = asyncio.to_thread
#: Folders purged on start by this process (``purge_on_start`` acts once per process).
_START_PURGED: set[Hashable] = set()


def claim_start_purge_of(key: Hashable) -> bool:
    """True the first time this process asks for the store folder ``key`` (a registry key):
    ``purge_on_start`` empties an unnamed store once per process, at its start, and never
    again when the store is closed and opened again in the same process."""
    if key in _START_PURGED:
        return False
    _START_PURGED.add(key)
    return True
_IMPORT_HINT: Final = (
    "logkv never mixes formats: import the Crawlee store into a new logkv store with logkv's "
    "Crawlee importer, or point storage_dir somewhere else"
)


class LogStorageClient(StorageClient):
    """Stores as append-only logs on disk (the default storage client).

    Stateless: every instance sees the same stores for the same ``storage_dir``.
    """

    async def locate_kvs(self, selector: Selector, configuration: Configuration) -> StoreLocation:
        """The folder of the selected store; a store selected by id is looked up on disk."""
        if selector.folder_name is None:
            assert selector.id is not None
            root = kvs_root(configuration.storage_dir)
            folder, meta = await _to_thread(find_store_by_id, root, selector.id)
            return StoreLocation(
                registry_key(folder), meta.kind, meta.id, meta.name, meta.alias, folder
            )
        assert selector.kind != "id"
        folder = store_folder(configuration.storage_dir, selector.folder_name)
        return StoreLocation(
            registry_key(folder), selector.kind, selector.id, selector.name, selector.alias, folder
        )

    def claim_start_purge(self, location: StoreLocation) -> bool:
        """True the first time this process opens the folder at ``location`` (every instance
        of this client shares what was purged: they all see the same folders)."""
        return claim_start_purge_of(location.registry_key)

    async def open_kvs_client(
        self, location: StoreLocation, configuration: Configuration
    ) -> LogKeyValueStoreClient:
        """Open the store's engine (replaying its log in a worker thread)."""
        return await _to_thread(LogKeyValueStoreClient.open_sync, location, configuration)


def registry_key(folder: Path) -> tuple[str, str]:
    """The key of the store in folder ``folder`` in registries of open and purged stores."""
    return ("logkv", os.path.realpath(folder))


def find_store_by_id(root: Path, store_id: str) -> tuple[Path, StoreMeta]:
    """The folder and metadata of the logkv store with id ``store_id`` under ``root``.

    Raises :class:`StoreNotFoundError` when there is none, and :class:`NotALogKVStoreError` when
    the id belongs to a Crawlee file-system store.
    """
    if root.is_dir():
        for folder in sorted(root.iterdir()):
            if not folder.is_dir():
                continue
            try:
                meta = read_meta(folder)
            except NotALogKVStoreError:
                continue
            if meta is not None and meta.id == store_id:
                return folder, meta
            if meta is None and _crawlee_store_id(folder) == store_id:
                raise NotALogKVStoreError(
                    f"the store with id {store_id!r} ({folder}) is a Crawlee file-system store, "
                    f"not a logkv store; {_IMPORT_HINT}"
                )
    raise StoreNotFoundError(f"no key-value store with id {store_id!r} in {root}")


def _crawlee_store_id(folder: Path) -> str | None:
    try:
        body = json.loads((folder / CRAWLEE_METADATA_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    found = body.get("id") if isinstance(body, dict) else None
    return found if isinstance(found, str) else None


def refuse_foreign_folder(folder: Path) -> None:
    """Raise :class:`NotALogKVStoreError` unless ``folder`` is absent, empty or a logkv store
    holding only logkv's files.

    A logkv store folder holding files of another program (another storage client was given
    the same folder) is refused too, naming those files: they are not logkv's to delete, and
    the other client may delete logkv's (Crawlee's file-system purge deletes every file in the
    folder but its metadata).
    """
    if not folder.exists():
        return
    if not folder.is_dir():
        raise NotALogKVStoreError(f"{folder} is a file, not a key-value store folder")
    strays = sorted(name for name in os.listdir(folder) if not is_own_name(name))
    if not strays:
        return
    shown = ", ".join(strays[:5]) + (f" and {len(strays) - 5} more" if len(strays) > 5 else "")
    ours = (folder / META_FILE).exists() or is_store_folder(folder)
    if not ours and CRAWLEE_METADATA_FILE in strays:
        raise NotALogKVStoreError(
            f"{folder} holds a Crawlee file-system key-value store, not a logkv store; "
            f"{_IMPORT_HINT}"
        )
    if not ours:
        raise NotALogKVStoreError(
            f"{folder} holds files that are not part of a logkv store ({shown}); move them away "
            "or choose another store name"
        )
    crawlee = (
        f" ({CRAWLEE_METADATA_FILE} is the mark of a Crawlee file-system key-value store: "
        "Crawlee's file-system client was given this folder, for a store of the same name or "
        "for the state of its request queues, which it keeps in its default store)"
        if CRAWLEE_METADATA_FILE in strays
        else ""
    )
    raise NotALogKVStoreError(
        f"another program wrote into the logkv store folder {folder}: {shown} "
        f"{'is' if len(strays) == 1 else 'are'} not logkv's{crawlee}. Two storage clients must "
        "never share a store folder: the other one may delete logkv's files (Crawlee's "
        "file-system purge deletes every file it does not own). Move those files out of the "
        "folder (they belong to the other client) and open the store again; give the other "
        "client's store another name or storage directory"
    )


def _check_kind(meta: StoreMeta, location: StoreLocation, folder: Path) -> None:
    if meta.kind == location.kind:
        return
    described = {
        "named": f"the named store {meta.name!r}",
        "alias": f"the unnamed store of alias {meta.alias!r}",
        "default": "the default store",
    }[meta.kind]
    wanted = {
        "named": f"a store named {location.name!r}",
        "alias": f"an alias store {location.alias!r}",
        "default": "the default store",
    }[location.kind]
    raise ValueError(
        f"{folder} holds {described}; it cannot be opened as {wanted}. Names, aliases and the "
        "default store share one folder namespace: pick another name or alias, or drop the "
        "existing store first"
    )


class LogKeyValueStoreClient(KeyValueStoreClient):
    """One open store over its :class:`~logkv.Engine` (see the module docstring)."""

    def __init__(self, engine: Engine, meta: StoreMeta, configuration: Configuration) -> None:
        super().__init__(id=meta.id, name=meta.name, alias=meta.alias, kind=meta.kind)
        self.created_at = meta.created_at
        self.modified_at = meta.modified_at
        self._engine = engine
        self._folder = engine.path
        self._meta = meta
        self._saved_stamps = (meta.accessed_at, meta.modified_at)
        self._offload = configuration.offload_threshold
        self._threaded_writes = configuration.durability is Durability.FSYNC
        self._public = PublicFiles(engine.path)
        self._auto_compact = configuration.auto_compact
        self._compaction_bytes = configuration.compaction_min_dead_bytes
        self._compaction_ratio = configuration.compaction_min_dead_ratio
        self._compaction: asyncio.Future[Any] | None = None
        self._closed = False

    # ------------------------------------------------------------------ opening

    @classmethod
    def open_sync(
        cls, location: StoreLocation, configuration: Configuration
    ) -> LogKeyValueStoreClient:
        """Open (creating if needed) the store at ``location`` (blocking: run it in a thread)."""
        folder = location.path
        assert folder is not None
        empty_trash(trash_of(folder))
        refuse_foreign_folder(folder)
        meta = read_meta(folder)
        if meta is not None:
            _check_kind(meta, location, folder)
        engine = Engine.open(
            folder,
            durability=configuration.durability,
            segment_size=configuration.segment_size,
            recovery=configuration.recovery,
            retention=configuration.retention,
        )
        try:
            meta = read_meta(folder)  # again, now that the lock is ours
            if meta is None:
                now = _now()
                meta = StoreMeta(
                    id=location.id or new_store_id(),
                    name=location.name,
                    alias=location.alias,
                    kind=location.kind,
                    created_at=now,
                    accessed_at=now,
                    modified_at=now,
                )
                write_meta(folder, meta)
            else:
                _check_kind(meta, location, folder)
            client = cls(engine, meta, configuration)
            client._public.reload(client._keys_from, engine.get_with_type)
        except BaseException:
            engine.close()
            raise
        return client

    def _keys_from(self, prefix: str) -> Iterator[str]:
        first = [prefix] if prefix in self._engine else []
        return chain(first, self._engine.keys(prefix))

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

    # ------------------------------------------------------------------ reads

    def get_value_nowait(self, key: str, default: Any = None) -> Any:
        """The value of ``key`` from one read of the log (memory-mapped), or ``default``; a
        :class:`Deferred` read in a worker thread for values over the offload threshold."""
        if type(key) is not str or not 0 < len(key) <= MAX_KEY_LENGTH or not key.isascii():
            check_key(key)
        self.accessed_at = _now()
        engine = self._engine
        entry = engine.entry(key)
        if entry is None:
            return default
        if entry.size > self._offload:
            return Deferred(_to_thread(_read_decoded, engine, key, entry, default))
        found = engine.get_record(key, entry)  # the entry again if a compaction moved the record
        if found is None:
            return default
        entry, data = found
        if data is None:
            return None
        try:
            return decoder_for(entry.content_type)(data)
        except ValueError:  # foreign bytes the fast decoder refuses: decode() explains or copes
            return decode(data, entry.content_type)

    async def get_value(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default``."""
        value = self.get_value_nowait(key, default)
        if type(value) is Deferred:
            return await value.awaitable
        return value

    async def get_info(self, key: str) -> KeyValueStoreRecordMetadata | None:
        """The content type and size of ``key``, or None."""
        check_key(key)
        self.accessed_at = _now()
        entry = self._engine.entry(key)
        if entry is None:
            return None
        return record_metadata(key, public_content_type(entry.content_type), entry.value_size)

    async def record_exists(self, key: str) -> bool:
        """True when ``key`` holds a record (an index lookup: no read)."""
        check_key(key)
        self.accessed_at = _now()
        return key in self._engine

    async def iterate_keys(
        self, exclusive_start_key: str | None = None, limit: int | None = None
    ) -> AsyncIterator[KeyValueStoreRecordMetadata]:
        """Record metadata in key order, fetched from the index in batches."""
        check_paging(exclusive_start_key, limit)
        self.accessed_at = _now()
        engine = self._engine
        entry_of = engine.entry
        async for batch in engine_key_batches(self._engine, exclusive_start_key, limit):
            for key in batch:
                entry = entry_of(key)  # now, not when the batch was listed: never stale
                if entry is not None:
                    yield record_metadata(
                        key, public_content_type(entry.content_type), entry.value_size
                    )

    async def iterate_key_names(
        self, exclusive_start_key: str | None = None, limit: int | None = None
    ) -> AsyncIterator[str]:
        """Keys in order, fetched from the index in batches."""
        check_paging(exclusive_start_key, limit)
        self.accessed_at = _now()
        async for batch in engine_key_batches(self._engine, exclusive_start_key, limit):
            for key in batch:
                yield key

    async def get_metadata(self) -> KeyValueStoreMetadata:
        """Identity, timestamps and the engine's figures."""
        stats = self._engine.stats()
        return KeyValueStoreMetadata(
            id=self.id,
            name=self.name,
            created_at=timestamp(self.created_at),
            accessed_at=timestamp(self.accessed_at),
            modified_at=timestamp(self.modified_at),
            record_count=stats.keys,
            live_bytes=stats.live_bytes,
            log_bytes=stats.disk_bytes,
            last_seq=stats.last_seq,
        )

    # ------------------------------------------------------------------ writes

    def set_value_nowait(
        self, key: str, value: Any, content_type: str | None = None
    ) -> Deferred | None:
        """Encode ``value`` and append it inline (None), or return the :class:`Deferred`
        write of a large value or of a write that waits for its fsync."""
        if type(key) is not str or not 0 < len(key) <= MAX_KEY_LENGTH or not key.isascii():
            check_key(key)
        data, stored_type = encode(value, content_type)
        now = _now()
        self.accessed_at = now
        self.modified_at = now
        if len(data) > self._offload:
            return Deferred(self._write_off_loop(key, data, stored_type))
        if self._threaded_writes:
            # Durability.FSYNC: append inline, then await the batch's fsync without parking a
            # thread per write; concurrent tasks share one fdatasync (group commit).
            _, commit = self._engine.set_deferred(key, data, stored_type)
            return Deferred(self._after_commit(key, data, stored_type, commit))
        self._engine.set(key, data, stored_type)
        if key in self._public.published:
            self._public.publish(key, data, stored_type)
        return None

    async def _write_off_loop(self, key: str, data: bytes, stored_type: str) -> None:
        await _to_thread(self._engine.set, key, data, stored_type)
        if key in self._public.published:
            await self._publish(key, data, stored_type)

    async def _after_commit(
        self, key: str, data: bytes, stored_type: str, commit: Commit
    ) -> None:
        await wait_for_commit(commit)
        if key in self._public.published:
            await self._publish(key, data, stored_type)

    async def set_value(self, key: str, value: Any, content_type: str | None = None) -> None:
        """Encode ``value`` and append it; durable (to the chosen level) when this returns."""
        pending = self.set_value_nowait(key, value, content_type)
        if pending is not None:
            await pending.awaitable

    async def delete_value(self, key: str) -> bool:
        """Append a delete record for ``key`` if it exists; True if it did."""
        check_key(key)
        now = _now()
        self.accessed_at = now
        if self._threaded_writes:
            existed, commit = self._engine.delete_deferred(key)
            await wait_for_commit(commit)
        else:
            existed = self._engine.delete(key)
        if existed:
            self.modified_at = now
        if key in self._public.published:
            self._public.remove(key)
        return existed

    async def get_public_url(self, key: str) -> str:
        """Materialise ``key`` as ``public/{KEY}.{EXT}`` in the store folder; its ``file://`` URL.

        Raises ``KeyError`` when ``key`` holds no record.
        """
        check_key(key)
        self.accessed_at = _now()
        entry = self._engine.entry(key)
        if entry is None:
            raise KeyError(f"no record under key {key!r}: there is nothing to publish")
        if entry.size > self._offload:
            found = await _to_thread(self._engine.get_record, key, entry)
        else:
            found = self._engine.get_record(key, entry)
        if found is None:
            raise KeyError(f"no record under key {key!r}: there is nothing to publish")
        entry, data = found
        path = await self._publish(key, data or b"", entry.content_type)
        return path.absolute().as_uri()

    async def _publish(self, key: str, data: bytes, stored_type: str | None) -> Path:
        if len(data) > self._offload:
            return await _to_thread(self._public.publish, key, data, stored_type)
        return self._public.publish(key, data, stored_type)

    async def purge(self) -> None:
        """Delete every record (one delete record each, so history shows the purge)."""
        self._check_open()
        try:
            await _to_thread(_delete_all, self._engine)
        finally:
            await _to_thread(self._public.clear)
        self.touch(modified=True)

    # ------------------------------------------------------------------ upkeep and closing

    async def maintain(self) -> None:
        """Save changed timestamps and, past the thresholds, compact (in a worker thread)."""
        if self._closed:
            return
        await self._save_meta()
        if not self._auto_compact or self._compaction is not None:
            return
        if not self._engine.should_compact(self._compaction_bytes, self._compaction_ratio):
            return
        self._compaction = asyncio.ensure_future(_to_thread(self._engine.compact))
        try:
            result = await self._compaction
            log.info("compacted %s: %s", self._folder, result)
        except StoreClosedError:
            pass
        finally:
            self._compaction = None

    async def compact(self, retention: str | None = None) -> CompactionResult | None:
        """Compact now, in a worker thread (after any automatic compaction still running)."""
        self._check_open()
        while self._compaction is not None:
            with contextlib.suppress(Exception):
                await self._compaction
        self._compaction = asyncio.ensure_future(_to_thread(self._engine.compact, retention))
        try:
            result: CompactionResult = await self._compaction
        finally:
            self._compaction = None
        return result

    async def _save_meta(self) -> None:
        stamps = (self.accessed_at, self.modified_at)
        if stamps == self._saved_stamps:
            return
        self._meta.accessed_at, self._meta.modified_at = stamps
        self._saved_stamps = stamps
        await _to_thread(write_meta, self._folder, self._meta)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"the store at {self._folder} is closed")

    async def close(self) -> None:
        """Save the timestamps, make pending writes durable, release the lock (idempotent)."""
        if self._closed:
            return
        await self._stop()
        try:
            await self._save_meta()
        finally:
            if self._threaded_writes:
                await _to_thread(self._engine.close)
            else:
                self._engine.close()

    async def drop(self) -> None:
        """Delete the store and its folder, all or nothing (see :func:`drop_store`); the client
        is closed afterwards."""
        self._check_open()
        await self._stop()
        await _to_thread(drop_store, self._engine)

    async def _stop(self) -> None:
        """Refuse further calls and let a running compaction finish."""
        self._closed = True
        await settle_compaction(self._compaction)


def engine_key_batches(
    engine: Engine, start: str | None, limit: int | None
) -> AsyncIterator[list[str]]:
    """The keys of ``engine`` after ``start`` (at most ``limit``), in batches, yielding to the
    event loop after each (see :func:`~logkv.storage_clients._base.paced_key_batches`)."""
    return paced_key_batches(start, limit, lambda after, count: list(engine.keys(after, count)))


async def settle_compaction(compaction: asyncio.Future[Any] | None) -> None:
    """Let a store's running compaction finish (its failure was already logged by whoever
    awaited it); shielded, so that a cancelled close does not cancel the compaction."""
    if compaction is not None:
        with contextlib.suppress(Exception):
            await asyncio.shield(compaction)


def trash_of(folder: Path) -> Path:
    """The trash of the storage directory whose ``key_value_stores/`` holds store ``folder``."""
    return folder.parent.parent / TRASH_DIR


def drop_store(engine: Engine) -> None:
    """Delete the store of ``engine``, all or nothing (blocking: run it in a thread).

    The folder is renamed into the storage directory's trash in one step while the engine still
    holds the store's lock (so no other process has it open for writing), the rename is made
    durable, the engine is closed, and only then are the files deleted. A crash before the
    rename leaves the store whole; after it, the store is gone and its name free, and the next
    open of a store of this storage directory deletes what is left in the trash.
    """
    try:
        moved = move_to_trash(engine.path, trash_of(engine.path))
    except BaseException:
        engine.close()
        raise
    engine.close(keep=False)
    empty_trash(moved.parent)


def _read_decoded(engine: Engine, key: str, entry: IndexEntry, default: Any) -> Any:
    found = engine.get_record(key, entry)
    if found is None:
        return default
    return decode(found[1], found[0].content_type)


def _delete_all(engine: Engine) -> None:
    while True:
        keys = list(engine.keys(None, ITERATION_BATCH))
        if not keys:
            return
        for key in keys:
            engine.delete(key)


async def wait_for_commit(commit: Commit) -> None:
    """Await a group-commit batch: the syncer thread resolves a future on this event loop."""
    if commit.done.is_set():
        commit.wait()
        return
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()

    def settle(_: BaseException | None) -> None:
        if not future.done():
            future.set_result(None)

    def from_syncer(error: BaseException | None) -> None:
        loop.call_soon_threadsafe(settle, error)

    commit.add_done_callback(from_syncer)
    await future
    commit.wait()  # raises SyncFailedError if the fdatasync failed
