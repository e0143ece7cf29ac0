"""The engine-backed store core: one open logkv store folder, whatever API serves it.

:class:`EngineStore` owns what an open store is besides its values' codec: the
:class:`~logkv.Engine`, ``META.json`` and the timestamps it keeps, the public files, compaction
(automatic and on demand), waiting for group commits, purge, close and drop. It takes and
returns stored bytes and content types; the two APIs over it are thin adapters that bring
their own value codec: logkv's :mod:`~logkv.storage_clients.disk` client (values by
:mod:`logkv.content`) and the Crawlee adapter :mod:`logkv.crawlee` (values by Crawlee's rules).

The engine is fast enough to call inline: a small append or point read costs microseconds,
less than a hop to a worker thread would. Only what could block the event loop for long goes to
a thread: values larger than ``Configuration.offload_threshold``, opening (log replay),
compaction, purge, close and drop. Under ``Durability.FSYNC`` a write is appended inline and its
task awaits the engine's group commit (one fsync shared by the tasks that wait), holding no
thread; a lone writer's quick sync runs inline too (:mod:`._commits`).

Timestamps live in the store's :class:`~logkv.storage_clients._meta.StoreMeta`, updated in
memory on every call (opening counts as an access) and written to ``META.json`` by
:meth:`EngineStore.save_meta`: on upkeep (driven by ``PERSIST_STATE`` events, or by the calls
themselves through :meth:`EngineStore.upkeep_when_due` where no event reaches the store), after
a purge and on close.

A store opened read-only (``readonly=True``) reads a store that another process (or another
open in this one) may be writing: it takes no lock, folds in the writer's new records before
every read (:meth:`EngineStore.refresh`), refuses every write, purge, compaction and drop with
:class:`~logkv.ReadOnlyStoreError`, and writes nothing into the folder: no ``META.json``, no
public files, no emptied trash (its timestamps live in memory only).

Threads: an :class:`EngineStore` has no lock. Its own fields (timestamps, the running
compaction, ``closed``) are read and written on the event loop only; worker threads get the
engine, which is thread-safe, a copy of the metadata to write, or the public files of one
large value (whose single-key updates are atomic under the GIL).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..compaction import CompactionResult
from ..configuration import Configuration
from ..engine import Engine
from ..errors import ReadOnlyStoreError, StoreClosedError, StoreNotFoundError
from ..fsutil import empty_trash, move_to_trash
from ..group_commit import Commit
from ..index import IndexEntry
from ..modes import Durability
from ..values import Piece
from ._base import ITERATION_BATCH, StoreLocation, paced_key_batches, touch
from ._commits import LeadPace, lead_at_once, wait_for_commit
from ._folders import STORAGE_WORDS, check_kind, refuse_foreign_folder, trash_of
from ._follow import Follower
from ._meta import StoreMeta, read_meta, write_meta
from ._public import PublicFiles
from ._replica import claim_replica, wait_replicated
from ._streams import read_stream, write_stream

if TYPE_CHECKING:
    from ..replica import Replica

log = logging.getLogger(__name__)

_now = time.time
_to_thread = asyncio.to_thread

#: A stored record as the engine returns it: its bytes (None: a stored None) and content type.
Found = tuple[bytes | None, str | None]


class EngineStore:
    """One open store folder: its engine, metadata, public files and upkeep (see the module
    docstring). Open one with :meth:`open`."""

    def __init__(self, engine: Engine, meta: StoreMeta, configuration: Configuration) -> None:
        #: The engine underneath; adapters read through it directly on their hot paths.
        self.engine = engine
        #: True when the store was opened read-only (see the module docstring).
        self.readonly = engine.readonly
        self._follower = Follower(engine) if engine.readonly else None
        self.folder = engine.path
        #: The store's identity and its live timestamps (``META.json`` as it is in memory).
        self.meta = meta
        self.public = PublicFiles(engine.path)
        #: Values larger than this many bytes are read and written in a worker thread.
        self.offload = configuration.offload_threshold
        self.fsync = configuration.durability is Durability.FSYNC
        self._pace = LeadPace()  # whether a leader of this store's group commits yields first
        self._auto_compact = configuration.auto_compact
        self._compaction_bytes = configuration.compaction_min_dead_bytes
        self._compaction_ratio = configuration.compaction_min_dead_ratio
        self._compaction: asyncio.Future[Any] | None = None
        self._saved_stamps = (meta.accessed_at, meta.modified_at)
        self._upkeep_interval = configuration.persist_state_interval.total_seconds()
        self._last_upkeep = _now()
        #: True once the store was closed or dropped.
        self.closed = False
        #: The store's replication to object storage (None: not replicated).
        self.replica: Replica | None = None
        #: Writes are acknowledged only once committed in the replica (``replica_sync``).
        self.replica_sync = configuration.replica_sync

    # ------------------------------------------------------------------ opening

    @classmethod
    async def open(
        cls, location: StoreLocation, configuration: Configuration, *, readonly: bool = False
    ) -> EngineStore:
        """Open (creating if needed, unless ``readonly``) the store at ``location``, replaying
        its log in a worker thread (see :meth:`open_sync`)."""
        return await _to_thread(cls.open_sync, location, configuration, readonly=readonly)

    @classmethod
    def open_sync(
        cls, location: StoreLocation, configuration: Configuration, *, readonly: bool = False
    ) -> EngineStore:
        """Open (creating if needed) the store at ``location``; blocking.

        Empties the storage directory's trash (what an interrupted drop left), refuses a folder
        that holds something other than a logkv store (:class:`~logkv.NotALogKVStoreError`) or
        a store of another kind (``ValueError``: a named store opened as an alias, say), writes
        ``META.json`` for a new store and checks the public files against the log. Opening
        counts as an access.

        ``readonly``: open without the lock and change nothing (see the module docstring); a
        store that does not exist raises :class:`~logkv.StoreNotFoundError`.
        """
        folder = location.path
        assert folder is not None
        if readonly:
            return cls._open_readonly(location, configuration)
        empty_trash(trash_of(folder))
        refuse_foreign_folder(folder)
        meta = read_meta(folder)
        if meta is not None:
            check_kind(meta, location, folder)
        # A missing folder is restored from its replica before the engine creates it; an
        # existing one is claimed in the bucket only once its lock is ours (a second local
        # writer must fail on the lock, not fence the first).
        replica = claim_replica(folder, configuration) if not folder.exists() else None
        engine = Engine.open(
            folder,
            durability=configuration.durability,
            segment_size=configuration.segment_size,
            recovery=configuration.recovery,
            retention=configuration.retention,
        )
        try:
            if replica is None:
                replica = claim_replica(folder, configuration)
            meta = read_meta(folder)  # again, now that the lock is ours
            if meta is None:
                now = _now()
                meta = StoreMeta(
                    **location.new_identity(), created_at=now, accessed_at=now, modified_at=now
                )
                write_meta(folder, meta)
            else:
                check_kind(meta, location, folder)
            store = cls(engine, meta, configuration)
            meta.accessed_at = _now()  # saved with the next save
            store.public.reload(store._keys_from, engine.get_with_type)
            if replica is not None:
                replica.start(engine)
                store.replica = replica
        except BaseException:
            engine.close()
            raise
        return store

    @classmethod
    def _open_readonly(cls, location: StoreLocation, configuration: Configuration) -> EngineStore:
        folder = location.path
        assert folder is not None
        if not folder.is_dir():
            raise StoreNotFoundError(
                f"no {STORAGE_WORDS[location.storage]} at {folder}; a read-only open never "
                "creates one"
            )
        refuse_foreign_folder(folder)
        meta = read_meta(folder)
        if meta is not None:
            check_kind(meta, location, folder)
        engine = Engine.open(folder, readonly=True, recovery=configuration.recovery)
        if meta is None:  # its writer has not written META.json yet: an identity in memory
            now = _now()
            meta = StoreMeta(
                **location.new_identity(), created_at=now, accessed_at=now, modified_at=now
            )
        store = cls(engine, meta, configuration)
        meta.accessed_at = _now()
        return store

    def _keys_from(self, prefix: str) -> Iterator[str]:
        first = [prefix] if prefix in self.engine else []
        return chain(first, self.engine.keys(prefix))

    # ------------------------------------------------------------------ state

    def check_open(self) -> None:
        """Raise :class:`~logkv.StoreClosedError` once the store was closed or dropped."""
        if self.closed:
            raise StoreClosedError(f"the {self.noun} at {self.folder} is closed or dropped")

    @property
    def noun(self) -> str:
        """What the store is, in messages: "key-value store", "dataset" or "request queue"."""
        return STORAGE_WORDS[self.meta.storage]

    def touch(self, modified: bool = False) -> None:
        """Note an access (and a modification) now."""
        touch(self.meta, modified)

    def check_writable(self) -> None:
        """Raise :class:`~logkv.StoreClosedError` once the store was closed or dropped, and
        :class:`~logkv.ReadOnlyStoreError` when it was opened read-only."""
        self.check_open()
        if self.readonly:
            raise ReadOnlyStoreError(
                f"the {self.noun} at {self.folder} was opened read-only: it cannot be "
                "written, purged, compacted or dropped; open it without readonly=True to write"
            )

    def refresh(self) -> None:
        """Read-only stores: fold in the records the writer appended since the last refresh
        (nothing for a writable store, which sees its own writes; see
        :class:`~logkv.storage_clients._follow.Follower`)."""
        if self._follower is not None:
            self._follower.refresh()

    # ------------------------------------------------------------------ reads

    async def read(self, key: str) -> Found | None:
        """``(value, content_type)`` of ``key`` now (an access), read in a worker thread when
        it is large (the engine's :meth:`~logkv.Engine.get_small` decides); None when there is
        none."""
        self.meta.accessed_at = _now()
        self.refresh()
        found = self.engine.get_small(key, self.offload)
        if isinstance(found, int):
            return await _to_thread(self.engine.get_with_type, key)
        return found

    def contains(self, key: str) -> bool:
        """True when ``key`` holds a record (an access; an index lookup, no read)."""
        self.meta.accessed_at = _now()
        self.refresh()
        return key in self.engine

    def key_batches(
        self, start: str | None, limit: int | None, prefix: str = ""
    ) -> AsyncIterator[list[str]]:
        """The keys after ``start`` that start with ``prefix`` (at most ``limit``), in batches,
        yielding to the event loop after each (see
        :func:`~logkv.storage_clients._base.paced_key_batches`). An access."""
        self.meta.accessed_at = _now()
        engine = self.engine
        self.refresh()
        return paced_key_batches(
            start, limit, lambda after, count: list(engine.keys(after, count, prefix))
        )

    async def entries(
        self, start: str | None, limit: int | None, prefix: str = ""
    ) -> AsyncIterator[tuple[str, IndexEntry]]:
        """``(key, index entry)`` in key order after ``start``, of the keys that start with
        ``prefix`` (at most ``limit`` keys); each entry is looked up when its turn comes, so a
        record deleted before then is skipped."""
        entry_of = self.engine.entry
        async for batch in self.key_batches(start, limit, prefix):
            for key in batch:
                entry = entry_of(key)
                if entry is not None:
                    yield key, entry

    async def public_url(self, key: str) -> str:
        """Materialise ``key`` as ``public/{KEY}.{EXT}`` in the store folder; its ``file://``
        URL. The file follows the record from then on (rewritten on change, removed on delete).

        Raises ``KeyError`` when ``key`` holds no record. A read-only store writes no file: it
        returns the URL of the file the writer made, and raises
        :class:`~logkv.ReadOnlyStoreError` when there is none.
        """
        entry = self.engine.entry(key)
        if entry is not None and entry.streamed and not self.readonly:
            return (await self._publish_streamed(key)).absolute().as_uri()
        found = await self.read(key)
        if found is None:
            raise KeyError(f"no record under key {key!r}: there is nothing to publish")
        data, content_type = found
        if self.readonly:
            path = self.public.path_of(key, content_type)
            if not path.is_file():
                raise ReadOnlyStoreError(
                    f"the {self.noun} at {self.folder} was opened read-only and its writer "
                    f"has not published {key!r}: a read-only open writes no public file"
                )
        else:
            path = await self._publish(key, data, content_type)
        return path.absolute().as_uri()

    # ------------------------------------------------------------------ writes

    def write_nowait(
        self, key: str, data: bytes | None, content_type: str | None
    ) -> Coroutine[Any, Any, None] | None:
        """Append a record of ``key``: None once written inline, or a coroutine to await that
        finishes a large write (in a worker thread) or waits for the write's fsync (and, with
        ``replica_sync``, its commit in the replica); the write is durable (to the chosen
        level) when it returns."""
        pending = self._write_locally(key, data, content_type)
        if self.replica_sync and self.replica is not None:
            return self._replicated_after(pending)
        return pending

    async def _replicated_after(self, pending: Coroutine[Any, Any, None] | None) -> None:
        if pending is not None:
            await pending
        await self.replicated()

    async def replicated(self) -> None:
        """With ``replica_sync``: wait until every record written so far is committed in the
        replica (the shipper ships at once; one slot releases every write waiting for it)."""
        if self.replica_sync and self.replica is not None:
            await wait_replicated(self.replica, self.engine.last_seq)

    def _write_locally(
        self, key: str, data: bytes | None, content_type: str | None
    ) -> Coroutine[Any, Any, None] | None:
        if self.readonly:
            self.check_writable()
        now = _now()
        meta = self.meta
        meta.accessed_at = now
        meta.modified_at = now
        if data is not None and len(data) > self.offload:
            return self._write_in_thread(key, data, content_type)
        if self.fsync:
            # Durability.FSYNC: append inline; a lone writer syncs at once, in this call, else
            # the batch's fsync is awaited without parking a thread per write (concurrent
            # tasks share one fdatasync: group commit).
            _, commit = self.engine.set_deferred(key, data, content_type)
            if not lead_at_once(self.engine, commit, self._pace):
                return self._publish_after(commit, key, data, content_type)
        else:
            self.engine.set(key, data, content_type)
        if key in self.public.published:
            self.public.publish(key, data or b"", content_type)
        return None

    async def _write_in_thread(self, key: str, data: bytes, content_type: str | None) -> None:
        await _to_thread(self.engine.set, key, data, content_type)
        if key in self.public.published:
            await self._publish(key, data, content_type)

    async def _publish_after(
        self, commit: Commit, key: str, data: bytes | None, content_type: str | None
    ) -> None:
        await wait_for_commit(self.engine, commit, self._pace)
        if key in self.public.published:
            await self._publish(key, data, content_type)

    async def _publish(self, key: str, data: bytes | None, content_type: str | None) -> Path:
        if data is not None and len(data) > self.offload:
            return await _to_thread(self.public.publish, key, data, content_type)
        return self.public.publish(key, data or b"", content_type)

    async def write_batch(
        self, items: list[tuple[str, bytes | None, str | None]], deletes: Sequence[str] = ()
    ) -> None:
        """Write ``items`` and the deletes of ``deletes`` as one atomic batch
        (:meth:`~logkv.Engine.set_many`), durable (to the configured level) and visible in the
        index when this returns, and note a modification: inline when small (under
        ``Durability.FSYNC`` then awaiting the group commit, holding no thread), in a worker
        thread when the values add up to more than the offload threshold."""
        self.check_writable()
        self.touch(modified=True)
        if sum(len(value or b"") for _, value, _ in items) > self.offload:
            await _to_thread(self.engine.set_many, items, deletes)
        elif self.fsync:
            _, commit = self.engine.set_many_deferred(items, deletes)
            await wait_for_commit(self.engine, commit, self._pace)
        else:
            self.engine.set_many(items, deletes)
        await self.replicated()

    async def write_stream(
        self, key: str, pieces: AsyncIterator[Piece], content_type: str | None
    ) -> None:
        """Stream ``pieces`` into a value file and commit it as ``key``'s value
        (:func:`~logkv.storage_clients._streams.write_stream`); durable (to the configured
        level) when this returns, and noted as a modification."""
        self.check_writable()
        commit = await write_stream(self.engine, key, pieces, content_type)
        await wait_for_commit(self.engine, commit, self._pace)
        self.touch(modified=True)
        if key in self.public.published:
            await self._publish_streamed(key)
        await self.replicated()

    async def _publish_streamed(self, key: str) -> Path:
        """Write the public file of ``key``'s streamed value a chunk at a time."""
        stream = await _to_thread(self.engine.open_value, key)
        if stream is None:
            raise KeyError(f"no record under key {key!r}: there is nothing to publish")
        with stream:
            return await _to_thread(self.public.publish_chunks, key, stream, stream.content_type)

    def read_stream(self, key: str) -> AsyncIterator[bytes]:
        """The value of ``key`` a chunk at a time (an access; nothing when it is absent)."""
        self.meta.accessed_at = _now()
        self.refresh()
        return read_stream(self.engine, key)

    async def delete(self, key: str) -> bool:
        """Append a delete record for ``key`` if it holds a record; True if it did."""
        if self.readonly:
            self.check_writable()
        now = _now()
        self.meta.accessed_at = now
        if self.fsync:
            existed, commit = self.engine.delete_deferred(key)
            await wait_for_commit(self.engine, commit, self._pace)
        else:
            existed = self.engine.delete(key)
        if existed:
            self.meta.modified_at = now
        if key in self.public.published:
            self.public.remove(key)
        if existed:
            await self.replicated()
        return existed

    async def purge(self) -> None:
        """Delete every record (one delete record each, so ``logkv history`` shows the purge)
        and every public file, then save the timestamps; the store, its id and its metadata
        remain."""
        self.check_writable()
        try:
            await _to_thread(_delete_all, self.engine)
        finally:
            await _to_thread(self.public.clear)
        self.touch(modified=True)
        await self.save_meta()
        await self.replicated()

    # ------------------------------------------------------------------ upkeep

    async def save_meta(self) -> None:
        """Write ``META.json`` (in a worker thread) if the timestamps changed since it was
        (never for a read-only store)."""
        meta = self._meta_to_save()
        if meta is not None:
            await _to_thread(write_meta, self.folder, meta)

    def modified_from_log(self) -> None:
        """Move ``modified_at`` up to the time of the log's newest record when ``META.json``
        is older (its last save was lost to a crash: the records never are)."""
        self.meta.modified_at = max(self.meta.modified_at, self.engine.last_timestamp)

    async def upkeep_when_due(self) -> None:
        """Upkeep kept by the calls, for adapters that no ``PERSIST_STATE`` event reaches (a
        Crawlee storage client gets none): at most once per ``persist_state_interval``, save
        changed timestamps and maybe start a compaction (not waited for)."""
        now = _now()
        if now - self._last_upkeep < self._upkeep_interval:
            return
        self._last_upkeep = now
        await self.save_meta()
        self.start_compaction()

    def _meta_to_save(self) -> StoreMeta | None:
        """A copy of the metadata to write when the timestamps changed since the last save
        (noted as saved), else None (always for a read-only store)."""
        if self.readonly:
            return None
        meta = self.meta
        stamps = (meta.accessed_at, meta.modified_at)
        if stamps == self._saved_stamps:
            return None
        self._saved_stamps = stamps
        return dataclasses.replace(meta)

    async def maintain(self) -> None:
        """Upkeep: save changed timestamps, then compact when automatic compaction is on and
        the thresholds are passed, waiting for the compaction (see :meth:`start_compaction`)."""
        if self.closed:
            return
        await self.save_meta()
        compaction = self.start_compaction()
        if compaction is not None:
            await asyncio.shield(compaction)

    def start_compaction(self) -> asyncio.Future[Any] | None:
        """Start an automatic compaction in a worker thread when it is on, none runs and the
        thresholds are passed; its task, or None. Its failure is logged, never raised (the
        store stays as it was; the next upkeep tries again)."""
        if self.closed or self.readonly or not self._auto_compact or self._compaction is not None:
            return None
        if not self.engine.should_compact(self._compaction_bytes, self._compaction_ratio):
            return None
        self._compaction = asyncio.ensure_future(self._compact_automatically())
        return self._compaction

    async def _compact_automatically(self) -> None:
        try:
            result = await _to_thread(self.engine.compact)
            log.info("compacted %s: %s", self.folder, result)
        except StoreClosedError:
            pass
        except Exception:
            log.exception("compaction of %s failed", self.folder)
        finally:
            self._compaction = None

    async def compact(self, retention: str | None = None) -> CompactionResult:
        """Compact now, in a worker thread (after any automatic compaction still running);
        its failure is raised."""
        self.check_writable()
        while self._compaction is not None:
            with contextlib.suppress(Exception):
                await self._compaction
        self._compaction = asyncio.ensure_future(_to_thread(self.engine.compact, retention))
        try:
            result: CompactionResult = await self._compaction
        finally:
            self._compaction = None
        return result

    # ------------------------------------------------------------------ closing

    async def close(self) -> None:
        """Let a running compaction finish, save the timestamps, make pending writes durable and
        release the store's lock (idempotent)."""
        if self.closed:
            return
        await self._stop()
        try:
            await self.save_meta()
        finally:
            try:
                await _to_thread(self.engine.close)
            finally:
                if self.replica is not None:  # ship what is left, after the log's last write
                    await _to_thread(self.replica.close)

    def close_sync(self) -> None:
        """:meth:`close` without an event loop (at process exit; a running compaction is left
        to the engine's close)."""
        if self.closed:
            return
        self.closed = True
        try:
            meta = self._meta_to_save()
            if meta is not None:
                write_meta(self.folder, meta)
        finally:
            try:
                self.engine.close()
            finally:
                if self.replica is not None:
                    self.replica.close()

    async def drop(self) -> None:
        """Delete the store and its folder, all or nothing (see :func:`drop_store`); the store
        is closed afterwards."""
        self.check_writable()
        await self._stop()
        if self.replica is not None:  # the bucket copy stays; a later open takes it over
            await _to_thread(self.replica.close, 5.0)
        await _to_thread(drop_store, self.engine)

    async def _stop(self) -> None:
        """Refuse further calls and let a running compaction finish (shielded, so that a
        cancelled close does not cancel the compaction; its failure was already reported to
        whoever awaited it)."""
        self.closed = True
        compaction = self._compaction
        if compaction is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(compaction)


class StoreAdapter:
    """What every API's client of an open :class:`EngineStore` shows of it (a base class of
    the adapters): the store's folder, its engine and whether it is closed."""

    _store: EngineStore

    @property
    def path(self) -> Path:
        """The store's folder."""
        return self._store.folder

    @property
    def engine(self) -> Engine:
        """The engine underneath (for tools)."""
        return self._store.engine

    @property
    def closed(self) -> bool:
        """True once the store was closed or dropped."""
        return self._store.closed

    @property
    def readonly(self) -> bool:
        """True when the store was opened read-only."""
        return self._store.readonly

    async def flush_replica(self, timeout: float | None = None) -> int | None:
        """Wait (in a worker thread) until every record written so far is committed in the
        store's replica; the last committed seq, or None when the store is not replicated
        (see :meth:`logkv.replica.Replica.flush`)."""
        replica = self._store.replica
        if replica is None:
            return None
        return await _to_thread(replica.flush, timeout)


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


def _delete_all(engine: Engine) -> None:
    while True:
        keys = list(engine.keys(None, ITERATION_BATCH))
        if not keys:
            return
        for key in keys:
            engine.delete(key)
