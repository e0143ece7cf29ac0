"""The stores the peer benchmark (:mod:`benchmarks.bench_peers`) runs, behind one small interface.

Each peer is opened in a folder of its own, at its own default settings unless the benchmark
asks for durable writes (``fsync=True``), and wrapped as an :class:`OpenStore`: a handful of
callables that are either plain functions (the synchronous libraries) or coroutine functions
(the async ``KeyValueStore`` facades), so that each one is driven the way its users drive it.

Values are Python objects. Stores that serialize values themselves get them as they are
(diskcache, sqlitedict and shelve pickle them, logkv and Crawlee write JSON); stores that only
take bytes (lmdb, logkv's bare ``Engine``) get ``orjson.dumps`` of them, the fastest JSON encoder
there is. Only the settings a store cannot run without are changed (lmdb's map size).
"""

from __future__ import annotations

import shelve
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diskcache
import lmdb
import orjson
import sqlitedict
from crawlee import service_locator
from crawlee.configuration import Configuration as CrawleeConfiguration
from crawlee.storage_clients import FileSystemStorageClient
from crawlee.storage_clients import MemoryStorageClient as CrawleeMemoryStorageClient
from crawlee.storages import KeyValueStore as CrawleeKeyValueStore

from logkv import MISSING, Configuration, Durability, Engine, KeyValueStore
from logkv.key_range import prefix_end

from .workload import BINARY_TYPE

JSON_TYPE = "application/json; charset=utf-8"
_dumps = orjson.dumps
_loads = orjson.loads
#: lmdb reserves its map up front (sparse: only what is written takes disk space).
_LMDB_MAP_SIZE = 1 << 36


@dataclass
class OpenStore:
    """An open store, as the workloads use it.

    With ``is_async`` every callable but :attr:`close` is a coroutine function; otherwise all
    are plain functions. ``ordered_keys`` returns every key in key order (the store's own order
    where it keeps one, ``sorted`` of its keys where it does not).
    """

    set_json: Callable[[str, Any], Any]
    get_json: Callable[[str], Any]
    set_blob: Callable[[str, bytes], Any]
    get_blob: Callable[[str], Any]
    ordered_keys: Callable[[], Any]
    close: Callable[[], Awaitable[None]]
    is_async: bool
    #: ``list_prefix(prefix)``: every key that starts with ``prefix``, in key order (None: the
    #: store has no way to list them but reading every key).
    list_prefix: Callable[[str], Any] | None = None

    async def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """``function(*args)`` of this store, awaited when the store is async (for checks and
        set-up; the timed loops call the functions directly)."""
        return await function(*args) if self.is_async else function(*args)


@dataclass(frozen=True)
class Peer:
    """A store to measure: how to open it, and what its writes survive by default."""

    name: str
    distribution: str  # for its version
    durability: str  # one of DURABILITY
    #: What a write has survived when the call returns, at the store's defaults.
    durability_note: str
    serializer: str
    order: str  # how ordered_keys gets its order
    open: Callable[[Path, bool], Awaitable[OpenStore]]  # (folder, fsync) -> open store
    persistent: bool = True
    #: How it is made to sync every write (None: it has no such setting).
    fsync_setting: str | None = None
    #: Its own way of loading many records at once, ``(folder, items)`` (None: one set each).
    bulk_load: Callable[[Path, list[tuple[str, Any]]], None] | None = None
    #: How it lists the keys under a prefix (``OpenStore.list_prefix``).
    prefix_listing: str = "n/a"


#: Durability classes, weakest first.
DURABILITY = ("none", "on commit/close", "process", "fsync")


# ---------------------------------------------------------------------------------- logkv


async def open_logkv(folder: Path, fsync: bool) -> OpenStore:
    """logkv's ``KeyValueStore`` (its default log-based client)."""
    config = Configuration(
        storage_dir=str(folder),
        purge_on_start=False,
        durability=Durability.FSYNC if fsync else Durability.PROCESS,
    )
    kvs = await KeyValueStore.open(name="bench", configuration=config)

    async def ordered_keys() -> list[str]:
        return [info.key async for info in kvs.iterate_keys()]

    async def list_prefix(prefix: str) -> list[str]:
        return [info.key async for info in kvs.iterate_keys(prefix=prefix)]

    return OpenStore(
        kvs.set_value,
        kvs.get_value,
        kvs.set_value,
        kvs.get_value,
        ordered_keys,
        kvs.close,
        True,
        list_prefix,
    )


async def open_logkv_engine(folder: Path, fsync: bool) -> OpenStore:
    """logkv's synchronous core, ``Engine``, with values encoded by ``orjson``."""
    engine = Engine.open(folder, durability=Durability.FSYNC if fsync else Durability.PROCESS)
    set_, get = engine.set, engine.get

    def set_json(key: str, value: Any) -> None:
        set_(key, _dumps(value), JSON_TYPE)

    def get_json(key: str) -> Any:
        data = get(key)
        return None if data is MISSING else _loads(data)  # type: ignore[arg-type]

    def set_blob(key: str, value: bytes) -> None:
        set_(key, value, BINARY_TYPE)

    def get_blob(key: str) -> Any:
        return get(key)

    async def close() -> None:
        engine.close()

    return OpenStore(
        set_json,
        get_json,
        set_blob,
        get_blob,
        lambda: list(engine.keys()),
        close,
        False,
        lambda prefix: list(engine.keys(prefix=prefix)),
    )


# ---------------------------------------------------------------------------------- Crawlee


def _crawlee_opener(file_system: bool) -> Callable[[Path, bool], Awaitable[OpenStore]]:
    async def open_crawlee(folder: Path, fsync: bool) -> OpenStore:
        if fsync:
            raise ValueError("Crawlee's storage clients have no fsync setting")
        client = FileSystemStorageClient() if file_system else CrawleeMemoryStorageClient()
        kvs = await CrawleeKeyValueStore.open(
            name="bench",
            storage_client=client,
            configuration=CrawleeConfiguration(storage_dir=str(folder), purge_on_start=False),
        )

        async def ordered_keys() -> list[str]:
            return [info.key async for info in kvs.iterate_keys()]

        async def list_prefix(prefix: str) -> list[str]:
            found = [info.key async for info in kvs.iterate_keys() if info.key.startswith(prefix)]
            return sorted(found)

        async def close() -> None:
            # Crawlee's stores have no close: forget the instance, so the next open is real.
            service_locator.storage_instance_manager.remove_from_cache(kvs)

        return OpenStore(
            kvs.set_value,
            kvs.get_value,
            kvs.set_value,
            kvs.get_value,
            ordered_keys,
            close,
            True,
            list_prefix,
        )

    return open_crawlee


# ---------------------------------------------------------------------------------- diskcache


async def open_diskcache(folder: Path, fsync: bool) -> OpenStore:
    """diskcache's ``Cache`` (SQLite in WAL mode); ``fsync`` sets ``synchronous=FULL``."""
    cache = (
        diskcache.Cache(str(folder), sqlite_synchronous=2)
        if fsync
        else diskcache.Cache(str(folder))
    )

    async def close() -> None:
        cache.close()

    def list_prefix(prefix: str) -> list[str]:
        return sorted(key for key in cache.iterkeys() if key.startswith(prefix))

    return OpenStore(
        cache.set,
        cache.get,
        cache.set,
        cache.get,
        lambda: list(cache.iterkeys()),
        close,
        False,
        list_prefix,
    )


def diskcache_bulk_load(folder: Path, items: list[tuple[str, Any]]) -> None:
    """Write ``items`` into the diskcache store in one transaction (``Cache.transact``)."""
    with diskcache.Cache(str(folder)) as cache, cache.transact():
        for key, value in items:
            cache.set(key, value)


# ---------------------------------------------------------------------------------- sqlitedict


async def open_sqlitedict(folder: Path, fsync: bool) -> OpenStore:
    """sqlitedict's ``SqliteDict``; ``fsync`` turns ``autocommit`` on (one commit per write)."""
    folder.mkdir(parents=True, exist_ok=True)
    store = sqlitedict.SqliteDict(str(folder / "store.sqlite"), autocommit=fsync)

    def get(key: str) -> Any:
        return store.get(key)

    query = f'SELECT key FROM "{store.tablename}" WHERE key >= ? AND key < ? ORDER BY key'

    def list_prefix(prefix: str) -> list[str]:  # a range of its primary key (a B-tree)
        store.commit()
        return [key for (key,) in store.conn.select(query, (prefix, prefix_end(prefix)))]

    async def close() -> None:
        store.commit()
        store.close()

    return OpenStore(
        store.__setitem__,
        get,
        store.__setitem__,
        get,
        lambda: sorted(store.keys()),
        close,
        False,
        list_prefix,
    )


# ---------------------------------------------------------------------------------- lmdb


async def open_lmdb(folder: Path, fsync: bool) -> OpenStore:
    """lmdb at its defaults (``sync=True``: every write transaction is synced to disk)."""
    env = lmdb.open(str(folder), map_size=_LMDB_MAP_SIZE)
    begin = env.begin

    def put(key: str, data: bytes) -> None:
        with begin(write=True) as txn:
            txn.put(key.encode(), data)

    def fetch(key: str) -> bytes | None:
        with begin() as txn:
            found: bytes | None = txn.get(key.encode())
            return found

    def set_json(key: str, value: Any) -> None:
        put(key, _dumps(value))

    def get_json(key: str) -> Any:
        data = fetch(key)
        return None if data is None else _loads(data)

    def ordered_keys() -> list[str]:
        with begin() as txn:
            return [key.decode() for key in txn.cursor().iternext(values=False)]

    def list_prefix(prefix: str) -> list[str]:
        start = prefix.encode()
        found = []
        with begin() as txn:
            cursor = txn.cursor()
            if cursor.set_range(start):  # the first key >= prefix, then on while they match
                for key in cursor.iternext(values=False):
                    if not key.startswith(start):
                        break
                    found.append(key.decode())
        return found

    async def close() -> None:
        env.close()

    return OpenStore(set_json, get_json, put, fetch, ordered_keys, close, False, list_prefix)


def lmdb_bulk_load(folder: Path, items: list[tuple[str, Any]]) -> None:
    """Write ``items`` into the lmdb store in one transaction (its own fast path for loading)."""
    env = lmdb.open(str(folder), map_size=_LMDB_MAP_SIZE)
    with env.begin(write=True) as txn:
        for key, value in items:
            txn.put(key.encode(), _dumps(value))
    env.close()


# ---------------------------------------------------------------------------------- shelve


async def open_shelve(folder: Path, fsync: bool) -> OpenStore:
    """The standard library's ``shelve`` over ``dbm`` (``dbm.dumb`` where no other is built)."""
    if fsync:
        raise ValueError("shelve has no fsync setting")
    folder.mkdir(parents=True, exist_ok=True)
    shelf = shelve.open(str(folder / "shelf"))  # noqa: SIM115 - closed by close()

    def get(key: str) -> Any:
        return shelf.get(key)

    async def close() -> None:
        shelf.close()

    def list_prefix(prefix: str) -> list[str]:
        return sorted(key for key in shelf if key.startswith(prefix))

    return OpenStore(
        shelf.__setitem__,
        get,
        shelf.__setitem__,
        get,
        lambda: sorted(shelf.keys()),
        close,
        False,
        list_prefix,
    )


def dbm_module() -> str:
    """The dbm implementation ``shelve`` uses in this Python build."""
    for name in ("dbm.gnu", "dbm.ndbm"):
        try:
            __import__(name)
        except ImportError:
            continue
        return name
    return "dbm.dumb"


# ---------------------------------------------------------------------------------- the peers


def peers() -> list[Peer]:
    """Every store the benchmark runs, logkv first."""
    return [
        Peer(
            "logkv",
            "logkv",
            "process",
            "handed to the OS (one write() per record): survives kill -9",
            "JSON (orjson)",
            "sorted index",
            open_logkv,
            prefix_listing="iterate_keys(prefix=...): a range of the sorted index",
            fsync_setting="durability=fsync (group commit)",
        ),
        Peer(
            "logkv Engine",
            "logkv",
            "process",
            "as logkv: the synchronous core under its KeyValueStore",
            "bytes (orjson by the caller)",
            "sorted index",
            open_logkv_engine,
            prefix_listing="Engine.keys(prefix=...): a range of the sorted index",
            fsync_setting="durability=fsync (group commit)",
        ),
        Peer(
            "crawlee memory",
            "crawlee",
            "none",
            "kept in the process only",
            "none (keeps the object)",
            "sorts on iteration",
            _crawlee_opener(file_system=False),
            prefix_listing="iterate_keys() over every key, filtered",
            persistent=False,
        ),
        Peer(
            "crawlee file system",
            "crawlee",
            "process",
            "a file per record, written and renamed, no fsync: survives kill -9",
            "JSON (json)",
            "sorts on iteration",
            _crawlee_opener(file_system=True),
            prefix_listing="iterate_keys() over every key, filtered",
        ),
        Peer(
            "diskcache",
            "diskcache",
            "process",
            "committed to SQLite's WAL, synchronous=NORMAL: survives kill -9",
            "pickle (small values in SQLite, large in files)",
            "SQLite index",
            open_diskcache,
            prefix_listing="iterkeys() over every key, filtered",
            fsync_setting="sqlite_synchronous=2 (FULL)",
            bulk_load=diskcache_bulk_load,
        ),
        Peer(
            "sqlitedict",
            "sqlitedict",
            "on commit/close",
            "autocommit=False: nothing is committed until commit() or close()",
            "pickle",
            "sorted() of its keys",
            open_sqlitedict,
            prefix_listing="SQL range on its primary key",
            fsync_setting="autocommit=True (a synced commit per write)",
        ),
        Peer(
            "lmdb",
            "lmdb",
            "fsync",
            "sync=True: every write transaction is on disk when it returns",
            "bytes (orjson by the caller)",
            "B+tree",
            open_lmdb,
            prefix_listing="cursor set_range, then on while keys match",
            fsync_setting="its default (sync=True)",
            bulk_load=lmdb_bulk_load,
        ),
        Peer(
            "shelve",
            "python",
            "on commit/close",
            f"{dbm_module()}: a new key reaches the OS at once, an overwrite that moves its"
            " value only at sync() or close()",
            "pickle",
            "sorted() of its keys",
            open_shelve,
            prefix_listing="keys() over every key, filtered",
        ),
    ]
