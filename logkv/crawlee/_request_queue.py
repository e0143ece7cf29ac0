"""Crawlee's ``RequestQueueClient`` on a logkv store: a request queue is a logkv log.

A request queue is one logkv store folder, ``{storage_dir}/request_queues/{name|alias|default}/``,
owned by an :class:`~logkv.storage_clients._store.EngineStore`. Its records (a record per
request, a key per pending request, in fetch order) are described in
:mod:`logkv.crawlee._request_records`.

Every change is one :meth:`~logkv.Engine.set_many` batch, atomic after a crash, durable (to the
configured level) before the call returns: an add writes the records and pending keys of all
its new requests; marking a request handled rewrites its record in compact form and deletes its
pending key; a reclaim rewrites the record (its retry count and user data persist) and moves its
pending key to the back of the queue, or to the front with ``forefront``, as Crawlee's
file-system client does. A change holds the queue's lock until its batch is durable and
visible in the engine's index, so the next change or fetch is decided from the state it left
(under ``Durability.FSYNC``, a queue's changes wait for one another's group commit rather than
share it; the other stores' writes still share it).

Semantics follow Crawlee's file-system client: deduplication by ``unique_key``; forefront
requests come first, the newest first; a request added again with ``forefront`` while pending
moves to the front; a fetched request is in progress until it is marked handled or reclaimed
(there is no lock timeout, as in Crawlee's file-system client); marking handled or reclaiming a
request that is not in progress does nothing and returns None. In-progress locks are kept in
memory only: after a crash (or a close) and a reopen, every request that was in progress is
pending again at once, at its place in the queue.

One addition: a request added with ``handled_at`` set is stored as handled (counted as handled,
never fetched), so a queue can be imported with its history. Crawlee's file-system client
treats such a request as handled too, but only after a restart.

The counts (pending, handled, total) are kept in memory, counted on open without reading a
value; ``pending`` includes the requests in progress, as in Crawlee.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Final

from crawlee import Request
from crawlee.storage_clients._base import RequestQueueClient
from crawlee.storage_clients.models import (
    AddRequestsResponse,
    ProcessedRequest,
    RequestQueueMetadata,
)

from ..configuration import Configuration
from ..storage_clients._base import Pacer, StoreLocation, stamp_times
from ..storage_clients._store import EngineStore
from ..storage_layout import (
    REQUEST_PREFIX,
    REQUEST_QUEUES_DIR,
    pending_key,
    queue_counts,
    request_key,
)
from ._adapter import CrawleeAdapter
from ._locations import StorageKind
from ._pending_head import PendingHead
from ._request_records import (
    MIDDLE,
    REQUEST_CONTENT_TYPE,
    check_queue_keys,
    check_same_request,
    handled_record,
    hash_of_pending,
    order_bounds,
    pending_record,
    record_order,
    request_hash,
    request_of_record,
    with_order,
)

#: The folder (and id) of the default request queue.
DEFAULT_REQUEST_QUEUE: Final = "default"

Batch = list[tuple[str, bytes | None, str | None]]

log = logging.getLogger(__name__)


#: Where request queues are and how they are named.
REQUEST_QUEUES: Final = StorageKind(
    REQUEST_QUEUES_DIR, DEFAULT_REQUEST_QUEUE, "request_queue", "Request queue"
)
#: The folder of the selected request queue (see :meth:`StorageKind.locate`).
queue_location = REQUEST_QUEUES.locate


class _Counts:
    """What a queue knows of its records without reading them: the counts and the next
    forefront and normal order (see :mod:`logkv.crawlee._request_records`)."""

    __slots__ = ("back", "front", "pending", "total")

    def __init__(self, pending: int, total: int, front: int, back: int) -> None:
        self.pending = pending
        self.total = total
        self.front = front
        self.back = back

    def next_order(self, forefront: bool) -> int:
        """Take the order of a new pending key at the front or at the back."""
        if forefront:
            self.front += 1
            return MIDDLE - (self.front - 1)
        self.back += 1
        return MIDDLE + self.back - 1


def _inspect(store: EngineStore) -> _Counts:
    engine = store.engine
    counted = queue_counts(engine)
    pending, total = counted.pending, counted.total
    check_queue_keys(engine, pending, total)
    return _Counts(pending, total, *order_bounds(engine))


async def open_queue_store(
    location: StoreLocation, settings: Configuration, *, readonly: bool = False
) -> tuple[EngineStore, _Counts]:
    """Open the request queue store at ``location`` (see :meth:`EngineStore.open`; ``readonly``:
    beside its writer, never creating it), check that its keys are a queue's and count them;
    closed again when they are not a queue's."""
    store = await EngineStore.open(location, settings, readonly=readonly)
    try:
        counts = await asyncio.to_thread(_inspect, store)
    except BaseException:
        await store.close()
        raise
    return store, counts


class LogKvRequestQueueClient(CrawleeAdapter, RequestQueueClient):  # type: ignore[misc]
    """A Crawlee request queue whose requests are records of a logkv store (see the module
    docstring). Open one with :meth:`open`."""

    def __init__(
        self,
        store: EngineStore,
        counts: _Counts,
        on_close: Callable[[LogKvRequestQueueClient], None] | None = None,
    ) -> None:
        self._store = store
        self._counts = counts
        self._on_close = on_close
        #: Serialises the changes: each decides its batch from the state the last one left.
        self._lock = asyncio.Lock()
        #: The requests in progress: hash -> (pending key, unique key; None until the record
        #: was read) (memory only, never logged).
        self._in_progress: dict[str, tuple[str, str | None]] = {}
        #: The first pending keys, for fetches (memory only).
        self._head = PendingHead()
        self._pacer = Pacer()

    @classmethod
    async def open(
        cls,
        *,
        id: str | None,
        name: str | None,
        alias: str | None,
        storage_dir: str,
        settings: Configuration,
    ) -> LogKvRequestQueueClient:
        """Open (creating unless selected by id) the selected request queue under
        ``storage_dir``."""
        location = await asyncio.to_thread(queue_location, storage_dir, id, name, alias)
        return cls(*await open_queue_store(location, settings))

    # ------------------------------------------------------------------ metadata

    def _counts_now(self) -> _Counts:
        """The counts: a read-only queue first takes in what its writer wrote since (a count is
        two index lookups); a writable one knows them."""
        store, counts = self._store, self._counts
        if store.readonly:
            store.refresh()
            counted = queue_counts(store.engine)
            counts.pending, counts.total = counted.pending, counted.total
        return counts

    async def get_metadata(self) -> RequestQueueMetadata:
        """The queue's id, name, timestamps and counts (pending includes in progress)."""
        meta, counts = self._store.meta, self._counts_now()
        return RequestQueueMetadata(
            id=meta.id,
            name=meta.name,
            had_multiple_clients=False,
            handled_request_count=counts.total - counts.pending,
            pending_request_count=counts.pending,
            total_request_count=counts.total,
            **stamp_times(meta),
        )

    async def is_empty(self) -> bool:
        """True when no request is waiting to be fetched (some may be in progress)."""
        self._store.check_open()
        self._store.touch()
        return self._counts_now().pending <= len(self._in_progress)

    async def is_finished(self) -> bool:
        """True when every request is handled: none waits, none is in progress."""
        self._store.check_open()
        return self._counts_now().pending == 0

    # ------------------------------------------------------------------ writes

    async def _write(self, items: Batch, deletes: Sequence[str]) -> None:
        """Append one atomic batch, with the lock held until it is durable (to the configured
        level) and visible in the engine's index, so that the next change (or fetch) is decided
        from the state it left: inline, or in a worker thread when it is large; under fsync,
        awaiting its group commit (which other stores' writes share). Its pending keys are
        then noted in the head; a failure leaves the head to be loaded again."""
        try:
            await self._store.write_batch(items, deletes)
        except BaseException:
            self._head.reset()
            raise
        self._head.written(items, deletes)

    async def _record(self, hashed: str) -> bytes | None:
        """The record of the request with hash ``hashed``, None when there is none."""
        found = await self._store.read(request_key(hashed))
        return None if found is None else found[0] or b""

    async def add_batch_of_requests(
        self, requests: Sequence[Request], *, forefront: bool = False
    ) -> AddRequestsResponse:
        """Add the requests that are new (one atomic batch for all of them); requests already
        present stay where they are, unless ``forefront`` moves a pending one to the front."""
        self._store.check_writable()
        results: dict[str, ProcessedRequest] = {}
        async with self._lock:
            counts = self._counts
            pending, total, front, back = counts.pending, counts.total, counts.front, counts.back
            items: Batch = []
            deletes: list[str] = []
            hashes: dict[str, str] = {}
            try:
                for request in requests:
                    unique_key = request.unique_key
                    if unique_key in results:
                        continue
                    hashed = request_hash(unique_key)
                    check_same_request(
                        hashes.setdefault(hashed, unique_key), unique_key, request_key(hashed)
                    )
                    results[unique_key] = await self._plan_add(
                        request, hashed, forefront, items, deletes
                    )
                if items:
                    await self._write(items, deletes)
            except BaseException:
                counts.pending, counts.total, counts.front, counts.back = (
                    pending,
                    total,
                    front,
                    back,
                )
                raise
        await self._tick()
        return AddRequestsResponse(
            processed_requests=list(results.values()), unprocessed_requests=[]
        )

    async def _plan_add(
        self, request: Request, hashed: str, forefront: bool, items: Batch, deletes: list[str]
    ) -> ProcessedRequest:
        """Add the records that adding ``request`` (whose hash is ``hashed``) writes to
        ``items`` and ``deletes``, and count them; what Crawlee reports of it
        (``was_already_handled`` of a new request: it came handled).

        A pending record whose pending key is gone (what a crash in the middle of a purge
        leaves: the purge deletes the pending keys first) is added again as a new request."""
        unique_key = request.unique_key
        progress = self._in_progress.get(hashed)
        if progress is not None and progress[1] == unique_key:
            # In progress, so pending with its pending key present (and never moved by a
            # forefront add): nothing to read or write (a handler adding its own URL).
            return _processed(unique_key, present=True, handled=False)
        counts = self._counts
        value = await self._record(hashed)
        key = request_key(hashed)
        old_order = None if value is None else record_order(value, unique_key, key)
        orphan = old_order is not None and pending_key(old_order, hashed) not in self.engine
        if value is None or orphan:
            if not orphan:
                counts.total += 1
            if request.handled_at is not None:
                items.append((request_key(hashed), handled_record(request), REQUEST_CONTENT_TYPE))
                return _processed(unique_key, present=False, handled=True)
            order = counts.next_order(forefront)
            record = pending_record(request, order)
            items.append((request_key(hashed), record, REQUEST_CONTENT_TYPE))
            items.append((pending_key(order, hashed), b"", None))
            counts.pending += 1
            return _processed(unique_key, present=False, handled=False)
        if old_order is None:
            return _processed(unique_key, present=True, handled=True)
        if forefront and hashed not in self._in_progress:
            order = counts.next_order(True)
            items.append((key, with_order(value, order), REQUEST_CONTENT_TYPE))
            items.append((pending_key(order, hashed), b"", None))
            deletes.append(pending_key(old_order, hashed))
        return _processed(unique_key, present=True, handled=False)

    async def mark_request_as_handled(self, request: Request) -> ProcessedRequest | None:
        """Mark a request in progress handled: its record is rewritten in compact form and its
        pending key deleted, in one batch. None (and nothing changes) when it is not in
        progress, as in Crawlee's clients."""
        self._store.check_writable()
        hashed = request_hash(request.unique_key)
        async with self._lock:
            progress = self._in_progress.get(hashed)
            if progress is None:
                log.warning(
                    "Marking request %s as handled that is not in progress.", request.unique_key
                )
                return None
            if request.handled_at is None:
                request.handled_at = datetime.datetime.now(datetime.UTC)
            items: Batch = [(request_key(hashed), handled_record(request), REQUEST_CONTENT_TYPE)]
            await self._write(items, [progress[0]])
            del self._in_progress[hashed]
            self._counts.pending -= 1
        await self._tick()
        return _processed(request.unique_key, present=True, handled=True)

    async def reclaim_request(
        self, request: Request, *, forefront: bool = False
    ) -> ProcessedRequest | None:
        """Put a request in progress back: its record is rewritten (retry count, user data)
        and its pending key moved to the back of the queue (the front with ``forefront``), in
        one batch. None (and nothing changes) when it is not in progress."""
        self._store.check_writable()
        hashed = request_hash(request.unique_key)
        async with self._lock:
            progress = self._in_progress.get(hashed)
            if progress is None:
                log.info("Reclaiming request %s that is not in progress.", request.unique_key)
                return None
            order = self._counts.next_order(forefront)
            items: Batch = [
                (request_key(hashed), pending_record(request, order), REQUEST_CONTENT_TYPE),
                (pending_key(order, hashed), b"", None),
            ]
            await self._write(items, [progress[0]])
            del self._in_progress[hashed]
        await self._tick()
        return _processed(request.unique_key, present=True, handled=False)

    async def purge(self) -> None:
        """Delete every request; the queue, its id and its metadata remain."""
        async with self._lock:
            await self._store.purge()
            self._counts = _Counts(0, 0, 1, 0)
            self._in_progress.clear()
            self._head.reset()

    # ------------------------------------------------------------------ reads

    async def fetch_next_request(self) -> Request | None:
        """The first pending request not in progress, now in progress; None when there is
        none. The first pending keys are kept in memory (:mod:`logkv.crawlee._pending_head`):
        the engine's sorted keys are listed only when none of them is free."""
        store = self._store
        store.check_writable()  # a fetch takes the request: a change
        while True:
            async with self._lock:
                if self._counts.pending <= len(self._in_progress):
                    return None
                in_progress = self._in_progress
                key = self._head.first_free(store.engine, in_progress, len(in_progress))
                if key is None:
                    return None
                hashed = hash_of_pending(key)
                in_progress[hashed] = (key, None)
            try:
                value = await self._record(hashed)
                if value is None:
                    raise ValueError(f"the pending key {key!r} has no request record")
                request = request_of_record(value, request_key(hashed))
                if in_progress.get(hashed) == (key, None):
                    in_progress[hashed] = (key, request.unique_key)
                await self._tick()
                return request
            except ValueError:
                # Left in progress, so that the next fetch goes past it.
                log.exception("Unreadable request in %s, skipping it", store.folder)

    async def get_request(self, unique_key: str) -> Request | None:
        """The request with ``unique_key`` (a handled one in its compact form), or None."""
        self._store.check_open()
        hashed = request_hash(unique_key)
        value = await self._record(hashed)
        await self._tick()
        if value is None:
            return None
        request = request_of_record(value, request_key(hashed))
        return request if request.unique_key == unique_key else None  # a hash collision

    async def iter_requests(self) -> AsyncIterator[Request]:
        """Every request of the queue, pending and handled (handled ones with ``handled_at``
        set, in their compact form), in the order of their hashes, each read when its turn
        comes."""
        store = self._store
        store.check_open()
        async for batch in store.key_batches(None, None, REQUEST_PREFIX):
            for key in batch:
                found = await store.read(key)
                if found is not None:
                    yield request_of_record(found[0], key)


def _processed(unique_key: str, *, present: bool, handled: bool) -> ProcessedRequest:
    return ProcessedRequest(
        unique_key=unique_key, was_already_present=present, was_already_handled=handled
    )
