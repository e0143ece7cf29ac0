"""The storage-client interfaces: a factory of stores, and the client of one open store.

The async facade (:class:`logkv.KeyValueStore`) holds one :class:`KeyValueStoreClient` and adds
what every backend shares (opening rules, the per-process registry, autosave). A backend is a
:class:`StorageClient` that finds stores (:meth:`StorageClient.locate_kvs`) and opens them
(:meth:`StorageClient.open_kvs_client`).
"""

from __future__ import annotations

import asyncio
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol, TypedDict

from ..compaction import CompactionResult
from ..configuration import Configuration
from ..engine import MISSING, validate_key
from ..errors import InvalidKeyError
from ..key_range import check_prefix
from ..models import KeyValueStoreMetadata, KeyValueStoreRecord, KeyValueStoreRecordMetadata
from ..modes import MAX_KEY_LENGTH
from ..names import Selector, StorageType, StoreKind, select
from ..registry import purge_on_start
from ..values import Piece
from ._meta import new_store_id

#: Keys (and their infos) fetched per batch while iterating.
ITERATION_BATCH: Final = 256
#: Operations a store runs inline on the event loop between two yields to it (see :class:`Pacer`).
YIELD_EVERY: Final = 32

_now = time.time


class Stamps(Protocol):
    """A store's timestamps, ``time.time()`` seconds (a store's ``META.json`` content, or the
    record of an in-memory store)."""

    created_at: float
    accessed_at: float
    modified_at: float


@dataclass(slots=True)
class Timestamps:
    """:class:`Stamps` of a client whose store keeps none of its own."""

    created_at: float
    accessed_at: float
    modified_at: float

    @classmethod
    def now(cls) -> Timestamps:
        """Created, accessed and modified now."""
        now = _now()
        return cls(now, now, now)


class StampTimes(TypedDict):
    """A store's timestamps as the metadata models take them."""

    created_at: datetime
    accessed_at: datetime
    modified_at: datetime


def stamp_times(stamps: Stamps) -> StampTimes:
    """``stamps`` as UTC datetimes, to pass to a metadata model as ``**stamp_times(stamps)``."""
    return {
        "created_at": timestamp(stamps.created_at),
        "accessed_at": timestamp(stamps.accessed_at),
        "modified_at": timestamp(stamps.modified_at),
    }


def touch(stamps: Stamps, modified: bool = False) -> None:
    """Note an access (and a modification) now in ``stamps``."""
    now = _now()
    stamps.accessed_at = now
    if modified:
        stamps.modified_at = now


@dataclass(frozen=True, slots=True)
class StoreLocation:
    """Where a selected store is (or will be): enough to open it and to recognise it again.

    ``registry_key`` identifies the store within this process: two opens with equal keys get
    the same :class:`~logkv.KeyValueStore` object.
    """

    registry_key: Hashable
    kind: StoreKind
    id: str | None = None
    name: str | None = None
    alias: str | None = None
    path: Path | None = None
    folder_name: str | None = None
    storage: StorageType = "key_value_store"

    def new_identity(self) -> Identity:
        """The identity of a store created here: its id (a new random one unless the location
        has one), name, alias and kind."""
        return {
            "id": self.id or new_store_id(),
            "name": self.name,
            "alias": self.alias,
            "kind": self.kind,
            "storage": self.storage,
        }


class Identity(TypedDict):
    """Who a store is, as its metadata records it."""

    id: str
    name: str | None
    alias: str | None
    kind: StoreKind
    storage: StorageType


class Deferred:
    """Work that a ``*_nowait`` method could not finish on the event loop: await
    ``awaitable`` to finish it (a large value or a synced write, done in a worker thread)."""

    __slots__ = ("awaitable",)

    def __init__(self, awaitable: Awaitable[Any]) -> None:
        self.awaitable = awaitable


def check_key(key: object) -> str:
    """Return ``key`` if it is a valid key, else raise :class:`~logkv.InvalidKeyError`.

    Keys are non-empty ``str`` of at most :data:`~logkv.modes.MAX_KEY_LENGTH` characters that
    UTF-8 can encode (no lone surrogates).
    """
    validate_key(key)
    assert isinstance(key, str)
    if not key.isascii():
        try:
            key.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidKeyError(
                f"key {key!r} cannot be encoded as UTF-8 ({exc.reason})"
            ) from None
    return key


def key_is_simple(key: object) -> bool:
    """The fast test of the hot paths: a short ASCII str needs no further checking."""
    return type(key) is str and 0 < len(key) <= MAX_KEY_LENGTH and key.isascii()


def check_paging(exclusive_start_key: object, limit: object, prefix: object = "") -> None:
    """Check the arguments shared by every iteration method."""
    check_prefix(prefix)
    if exclusive_start_key is not None and type(exclusive_start_key) is not str:
        raise TypeError(
            f"exclusive_start_key must be a str or None, got {type(exclusive_start_key).__name__}"
        )
    if limit is not None and (type(limit) is not int or limit < 0):
        raise ValueError(f"limit must be None or an int >= 0, got {limit!r}")


def key_batches(
    start: str | None, limit: int | None, fetch: Callable[[str | None, int], list[str]]
) -> Iterator[list[str]]:
    """Batches of keys from ``fetch(after, count)`` until ``limit`` keys or the end.

    Each batch starts strictly after the last key of the previous one, so keys written or
    deleted between batches never cause a key to be skipped or repeated.
    """
    remaining = limit
    after = start
    while remaining is None or remaining > 0:
        want = ITERATION_BATCH if remaining is None else min(ITERATION_BATCH, remaining)
        batch = fetch(after, want)
        if batch:
            yield batch
        if len(batch) < want:
            return
        after = batch[-1]
        if remaining is not None:
            remaining -= len(batch)


async def paced_key_batches(
    start: str | None, limit: int | None, fetch: Callable[[str | None, int], list[str]]
) -> AsyncIterator[list[str]]:
    """:func:`key_batches`, yielding to the event loop after each batch: an ``async for`` over a
    large store lets the other tasks run (an async generator's ``yield`` does not)."""
    for batch in key_batches(start, limit, fetch):
        yield batch
        await asyncio.sleep(0)


class Pacer:
    """Keeps the inline fast paths fair: every :data:`YIELD_EVERY`-th call is due to yield.

    A small read or write costs microseconds and runs inline, so the ``await`` of it never
    suspends the calling task: a task calling one in a tight loop would starve every other
    task of the event loop. Yielding on every call would cost about as much as the call itself;
    once every :data:`YIELD_EVERY` calls costs a few per cent. Usage::

        if self._pacer.due():
            await asyncio.sleep(0)
    """

    __slots__ = ("_left",)

    def __init__(self) -> None:
        self._left = YIELD_EVERY

    def due(self) -> bool:
        """Count one call; True when this one should yield to the event loop."""
        self._left -= 1
        if self._left:
            return False
        self._left = YIELD_EVERY
        return True


def timestamp(seconds: float) -> datetime:
    """A UTC datetime from a ``time.time()`` value."""
    return datetime.fromtimestamp(seconds, UTC)


class KeyValueStoreClient(ABC):
    """The client of one open store. Every method may raise
    :class:`~logkv.StoreClosedError` after :meth:`close` or :meth:`drop`.

    Timestamps are kept as ``time.time()`` floats (cheap to update on every call) in ``stamps``,
    which belongs to the store (it outlives the client), and turned into datetimes by
    :meth:`get_metadata` (see :func:`stamp_times`).
    """

    def __init__(
        self,
        *,
        id: str,
        name: str | None,
        alias: str | None,
        kind: StoreKind,
        stamps: Stamps | None = None,
    ) -> None:
        self.id = id
        self.name = name
        self.alias = alias
        self.kind: StoreKind = kind
        #: The store's timestamps (they belong to the store and outlive this client; all now
        #: when the store keeps none).
        self.stamps: Stamps = Timestamps.now() if stamps is None else stamps

    @property
    def created_at(self) -> float:
        """When the store was created (``time.time()`` seconds)."""
        return self.stamps.created_at

    @created_at.setter
    def created_at(self, value: float) -> None:
        self.stamps.created_at = value

    @property
    def accessed_at(self) -> float:
        """When the store was last read or written, or opened."""
        return self.stamps.accessed_at

    @accessed_at.setter
    def accessed_at(self, value: float) -> None:
        self.stamps.accessed_at = value

    @property
    def modified_at(self) -> float:
        """When a record of the store was last written or deleted."""
        return self.stamps.modified_at

    @modified_at.setter
    def modified_at(self, value: float) -> None:
        self.stamps.modified_at = value

    @property
    def path(self) -> Path | None:
        """The store's folder, for clients that keep one (None in memory)."""
        return None

    @property
    @abstractmethod
    def closed(self) -> bool:
        """True once the store was closed or dropped."""

    @property
    def readonly(self) -> bool:
        """True when the store was opened read-only (its writes raise
        :class:`~logkv.ReadOnlyStoreError`)."""
        return False

    @abstractmethod
    async def get_metadata(self) -> KeyValueStoreMetadata:
        """The store's metadata and figures."""

    @abstractmethod
    async def get_value(self, key: str, default: Any = None) -> Any:
        """The value of ``key`` decoded as it was stored, or ``default``."""

    def get_value_nowait(self, key: str, default: Any = None) -> Any:
        """:meth:`get_value` without a coroutine when the value can be read inline (the hot
        path of the facade); otherwise a :class:`Deferred` to await."""
        return Deferred(self.get_value(key, default))

    def set_value_nowait(self, key: str, value: Any, content_type: str | None = None) -> Any:
        """:meth:`set_value` without a coroutine when the write can be done inline: returns
        None once written, or a :class:`Deferred` to await."""
        return Deferred(self.set_value(key, value, content_type))

    async def get_record(self, key: str) -> KeyValueStoreRecord[Any] | None:
        """The record of ``key`` (value, content type, size), or None."""
        info = await self.get_info(key)
        if info is None:
            return None
        missing = object()
        value = await self.get_value(key, missing)
        if value is missing:
            return None
        return KeyValueStoreRecord[Any](
            key=key, content_type=info.content_type, size=info.size, value=value
        )

    @abstractmethod
    async def get_info(self, key: str) -> KeyValueStoreRecordMetadata | None:
        """The content type and size of ``key``, or None when it does not exist."""

    @abstractmethod
    async def set_value(self, key: str, value: Any, content_type: str | None = None) -> None:
        """Store ``value`` (not None) under ``key``; ``TypeError`` if it cannot be stored."""

    @abstractmethod
    async def delete_value(self, key: str) -> bool:
        """Remove ``key``; True if it existed."""

    async def set_value_stream(
        self, key: str, pieces: AsyncIterator[Piece], content_type: str | None
    ) -> None:
        """Store the bytes of ``pieces`` under ``key`` without holding them whole in memory.

        This default gathers them and stores them as one value: for clients without value
        files (the in-memory client holds every value in memory anyway)."""
        data = bytearray()
        async for piece in pieces:
            data += piece
        await self.set_value(key, bytes(data), content_type)

    async def iterate_value_chunks(self, key: str) -> AsyncIterator[bytes]:
        """The stored bytes of ``key`` a chunk at a time (nothing when it is absent or holds
        None). This default reads the value whole: for clients without value files."""
        raise NotImplementedError(f"{type(self).__name__} cannot stream values")
        yield b""  # pragma: no cover - makes this an async generator

    @abstractmethod
    async def record_exists(self, key: str) -> bool:
        """True when ``key`` holds a record."""

    @abstractmethod
    def iterate_keys(
        self, exclusive_start_key: str | None = None, limit: int | None = None, prefix: str = ""
    ) -> AsyncIterator[KeyValueStoreRecordMetadata]:
        """Record metadata in key order, strictly after ``exclusive_start_key``, of the keys
        that start with ``prefix``."""

    @abstractmethod
    def iterate_key_names(
        self, exclusive_start_key: str | None = None, limit: int | None = None, prefix: str = ""
    ) -> AsyncIterator[str]:
        """Keys only, in key order (cheaper than :meth:`iterate_keys`)."""

    async def iterate_entries(
        self, exclusive_start_key: str | None = None, limit: int | None = None, prefix: str = ""
    ) -> AsyncIterator[tuple[str, Any]]:
        """``(key, value)`` pairs in key order; each value is read when its turn comes (a
        record deleted before then is skipped)."""
        async for key in self.iterate_key_names(exclusive_start_key, limit, prefix):
            value = await self.get_value(key, MISSING)
            if value is not MISSING:
                yield key, value

    @abstractmethod
    async def get_public_url(self, key: str) -> str:
        """A URL at which the record of ``key`` can be read."""

    @abstractmethod
    async def purge(self) -> None:
        """Remove every record; the store itself (id, name, creation time) stays."""

    @abstractmethod
    async def drop(self) -> None:
        """Remove the store entirely; the client is closed afterwards."""

    @abstractmethod
    async def close(self) -> None:
        """Make everything durable, release the store; idempotent."""

    async def maintain(self) -> None:
        """Periodic upkeep, run on every ``PERSIST_STATE`` event (metadata, compaction)."""
        return None

    async def compact(self, retention: str | None = None) -> CompactionResult | None:
        """Compact the store now; None where there is no log to compact (in memory)."""
        return None

    async def flush_replica(self, timeout: float | None = None) -> int | None:
        """Wait until every record written so far is committed in the store's replica; the
        last committed seq, or None when the store is not replicated."""
        return None

    def touch(self, modified: bool = False) -> None:
        """Note an access (and a modification) now."""
        touch(self.stamps, modified)


class StorageClient(ABC):
    """A backend: finds stores by id, name or alias and opens a client for each.

    ``configuration``: used by stores opened through this client without a configuration of
    their own (the environment's :class:`Configuration` when None).
    """

    def __init__(self, configuration: Configuration | None = None) -> None:
        self.configuration = configuration

    @abstractmethod
    async def locate_kvs(self, selector: Selector, configuration: Configuration) -> StoreLocation:
        """Where the store ``selector`` names is; raises when an ``id`` names no store.

        Raises :class:`~logkv.StoreNotFoundError` for an unknown id and ``ValueError`` when a
        name is used by an alias store (or the other way round).
        """

    @abstractmethod
    async def open_kvs_client(
        self, location: StoreLocation, configuration: Configuration, *, readonly: bool = False
    ) -> KeyValueStoreClient:
        """Open (creating if needed) the store at ``location``; ``readonly``: open an existing
        store for reading only (:class:`~logkv.StoreNotFoundError` when there is none)."""

    def claim_start_purge(self, location: StoreLocation) -> bool:
        """Deprecated: :func:`logkv.registry.purge_on_start` decides, for every client.

        True the first time this process asks for the store at ``location``, False after.
        """
        warnings.warn(
            "StorageClient.claim_start_purge is deprecated: logkv.registry.purge_on_start "
            "decides which stores are purged on start",
            DeprecationWarning,
            stacklevel=2,
        )
        return purge_on_start(location.registry_key, enabled=True, name=None)

    async def create_kvs_client(
        self,
        *,
        id: str | None = None,
        name: str | None = None,
        alias: str | None = None,
        configuration: Configuration | None = None,
    ) -> KeyValueStoreClient:
        """Locate and open a store in one call (the store is not registered for reuse)."""
        configuration = configuration or self.configuration or Configuration()
        selector = select(
            id=id, name=name, alias=alias, default_id=configuration.default_key_value_store_id
        )
        location = await self.locate_kvs(selector, configuration)
        return await self.open_kvs_client(location, configuration)
