"""Crawlee's ``DatasetClient`` on a logkv store: a dataset is an append-only logkv log.

A dataset is one logkv store folder, ``{storage_dir}/datasets/{name|alias|default}/``, owned by
an :class:`~logkv.storage_clients._store.EngineStore` (engine, ``META.json``, timestamps, drop).
Item ``i`` (0-based) is the record under the fixed-width key ``f"{i:012d}"``
(:func:`logkv.storage_layout.item_key`), so key order is push order and the keys of any offset
and limit are computed, never searched for. Its value is
the item serialized as Crawlee's file-system dataset client serializes it (``json.dumps`` with
``ensure_ascii=False, indent=2, default=str``), content type JSON; a crawler reads the same
items back from either client. (logkv's own content rules do not apply: the item is JSON text
whatever it holds, and values that JSON cannot hold are turned into strings, as Crawlee does.)

``push_data`` appends all its items with one :meth:`~logkv.Engine.set_many`: after a crash,
all of them or none. Items are never deleted one by one, so ``item_count`` is the number of
records; ``purge`` deletes them all.

Timestamps follow the key-value store's rule (saved at most once per
``persist_state_interval``, by the calls themselves, and on close), and after a crash
``modified_at`` is moved up to the time of the newest record in the log, so a ``kill -9``
loses no modification time (``accessed_at`` is the reopen's time anyway).

After :meth:`~LogKvDatasetClient.drop`, reads behave as Crawlee's file-system client's: an
empty page (``get_data``), no items (``iterate_items``), each with a logged warning, and
``get_metadata`` returns the last metadata with ``item_count`` 0. ``push_data`` raises
:class:`~logkv.StoreClosedError` where the file-system client silently re-creates the dropped
folder: a dropped dataset must not come back under another open of its name.

``get_data`` and ``iterate_items`` take every argument of Crawlee's ``DatasetClient``.
``offset``, ``limit``, ``desc`` and ``skip_empty`` are applied as Crawlee's file-system client
applies them. ``fields``, ``omit``, ``skip_hidden`` and ``clean``, which Crawlee's local clients
(file system, memory, SQL) ignore with a warning, are applied as the Apify platform's dataset API
applies them (see :func:`shape_item`); ``unwind``, ``flatten`` and ``view`` are not supported,
which is logged as a warning as Crawlee's clients do (nothing is raised).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Final, NamedTuple

import orjson
from crawlee.storage_clients._base import DatasetClient
from crawlee.storage_clients.models import DatasetItemsListPage, DatasetMetadata

from ..configuration import Configuration
from ..engine import Engine
from ..storage_clients._base import Pacer, StoreLocation, stamp_times
from ..storage_clients._store import EngineStore
from ..storage_layout import DATASETS_DIR, item_key
from ._adapter import CrawleeAdapter
from ._locations import StorageKind

#: The folder (and id) of the default dataset.
DEFAULT_DATASET: Final = "default"
#: The content type of every item record.
ITEM_CONTENT_TYPE: Final = "application/json; charset=utf-8"
#: The first character of a hidden field's name (left out by ``skip_hidden`` and ``clean``).
HIDDEN_PREFIX: Final = "#"
#: Crawlee's default ``limit`` of ``get_data``.
_CRAWLEE_NO_LIMIT: Final = 999_999_999_999

log = logging.getLogger(__name__)


#: How deep :func:`_plain` follows containers before giving the item to ``json``.
_PLAIN_DEPTH: Final = 64


def serialize_item(item: Mapping[str, Any]) -> bytes:
    """An item's stored bytes: JSON exactly as Crawlee's file-system dataset client writes it
    (``json.dumps(item, ensure_ascii=False, indent=2, default=str)``, UTF-8).

    Items made only of what :func:`_plain` accepts are written by orjson, whose indented
    output is byte for byte ``json``'s for those (a property test holds the two to it) and
    some thirty times faster; anything else, or anything orjson refuses (integers beyond 64
    bits, strings with lone surrogates), goes through ``json`` itself."""
    if _plain(item, _PLAIN_DEPTH):
        try:
            return orjson.dumps(item, option=orjson.OPT_INDENT_2)
        except orjson.JSONEncodeError:
            pass
    return json.dumps(item, ensure_ascii=False, indent=2, default=str).encode("utf-8")


def _plain(value: Any, depth: int) -> bool:
    """True when ``value`` is made only of ``str``, ``int``, ``bool``, None, floats that
    orjson writes as ``json`` does (``repr``: not ``1e-05``, ``nan`` or ``inf``), and
    ``dict`` (with ``str`` keys), ``list`` and ``tuple`` nested at most ``depth`` deep (exact
    types: subclasses, other mappings and whatever ``default=str`` would turn into a string
    are not plain)."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return True
    if kind is float:
        return orjson.dumps(value) == float.__repr__(value).encode()
    if depth <= 0:
        return False
    if kind is dict:
        return all(type(key) is str and _plain(member, depth - 1) for key, member in value.items())
    if kind is list or kind is tuple:
        return all(_plain(member, depth - 1) for member in value)
    return False


def select_indexes(total: int, offset: int, limit: int | None, desc: bool) -> range:
    """The item indexes a page covers: ``offset`` and ``limit`` applied after ordering (newest
    first when ``desc``), as Crawlee's file-system client slices its sorted file list."""
    order = range(total - 1, -1, -1) if desc else range(total)
    chosen = order[offset:]
    return chosen if limit is None else chosen[:limit]


def shape_item(
    item: Any, fields: Sequence[str] | None, omit: Sequence[str] | None, skip_hidden: bool
) -> Any:
    """``item`` as a page shows it: only its top-level ``fields`` (in that order; the ones it
    lacks are left out), without those in ``omit``, and without hidden fields (names starting
    with ``#``) when ``skip_hidden``. An item that is not a JSON object is returned as it is."""
    if not isinstance(item, dict) or (fields is None and not omit and not skip_hidden):
        return item
    if fields is not None:
        item = {name: item[name] for name in fields if name in item}
    dropped = set(omit or ())
    return {
        name: value
        for name, value in item.items()
        if name not in dropped and not (skip_hidden and name.startswith(HIDDEN_PREFIX))
    }


def _warn_unsupported(method: str, **arguments: Any) -> None:
    unsupported = [name for name, value in arguments.items() if value not in (False, None)]
    if unsupported:
        log.warning(
            "The arguments %s of %s are not supported by the LogKvDatasetClient client.",
            unsupported,
            method,
        )


class _Page(NamedTuple):
    """What ``get_data`` and ``iterate_items`` select (``clean`` already folded into
    ``skip_empty`` and ``skip_hidden``)."""

    offset: int
    limit: int | None
    desc: bool
    skip_empty: bool
    skip_hidden: bool
    fields: list[str] | None
    omit: list[str] | None


#: Where datasets are and how they are named.
DATASETS: Final = StorageKind(DATASETS_DIR, DEFAULT_DATASET, "dataset", "Dataset")
#: The folder of the selected dataset (see :meth:`StorageKind.locate`).
dataset_location = DATASETS.locate


def check_item_keys(engine: Engine) -> None:
    """Raise ``ValueError`` unless the store's keys look like a dataset's: the first is item 0,
    the last is item ``len - 1``, and nothing sorts after it (three index lookups, whatever the
    size). A store written otherwise (a key-value store moved here, say) would have its items
    overwritten or misnumbered."""
    count = len(engine)
    if count == 0:
        return
    last = item_key(count - 1)
    if item_key(0) in engine and last in engine and not list(engine.keys(last, 1)):
        return
    first = next(iter(engine.keys(None, 1)), None)
    raise ValueError(
        f"{engine.path} is a logkv store but not a dataset: its {count} keys are not the item "
        f"keys {item_key(0)}..{last} (its first key is {first!r})"
    )


async def open_dataset_store(
    location: StoreLocation, settings: Configuration, *, readonly: bool = False
) -> EngineStore:
    """Open the dataset store at ``location`` (see :meth:`EngineStore.open`; ``readonly``: beside
    its writer, never creating it) and check that its keys are item keys
    (:func:`check_item_keys`); closed again when they are not."""
    store = await EngineStore.open(location, settings, readonly=readonly)
    try:
        check_item_keys(store.engine)
    except BaseException:
        await store.close()
        raise
    store.modified_from_log()
    return store


class LogKvDatasetClient(CrawleeAdapter, DatasetClient):  # type: ignore[misc]
    """A Crawlee dataset whose items are records of a logkv store (see the module docstring).
    Open one with :meth:`open`."""

    def __init__(
        self,
        store: EngineStore,
        on_close: Callable[[LogKvDatasetClient], None] | None = None,
    ) -> None:
        self._store = store
        self._on_close = on_close
        #: Serialises appends: an item's index is the count of items before it.
        self._lock = asyncio.Lock()
        self._pacer = Pacer()
        #: True once :meth:`drop` deleted the dataset (reads then find it empty).
        self._dropped = False

    @classmethod
    async def open(
        cls,
        *,
        id: str | None,
        name: str | None,
        alias: str | None,
        storage_dir: str,
        settings: Configuration,
    ) -> LogKvDatasetClient:
        """Open (creating unless selected by id) the selected dataset under ``storage_dir``."""
        location = await asyncio.to_thread(dataset_location, storage_dir, id, name, alias)
        return cls(await open_dataset_store(location, settings))

    # ------------------------------------------------------------------ metadata

    async def get_metadata(self) -> DatasetMetadata:
        """The dataset's id, name, timestamps and item count."""
        meta = self._store.meta
        count = 0 if self._dropped else self._item_count()
        return DatasetMetadata(id=meta.id, name=meta.name, item_count=count, **stamp_times(meta))

    def _item_count(self) -> int:
        """How many items the dataset holds now (a read-only dataset first takes in what its
        writer appended since)."""
        store = self._store
        store.refresh()
        return len(store.engine)

    def _readable(self, method: str) -> bool:
        """False (with a warning, as Crawlee's file-system client logs) once the dataset was
        dropped; raises :class:`~logkv.StoreClosedError` once it was closed."""
        if self._dropped:
            log.warning("%s of a dropped dataset: %s is gone", method, self._store.folder)
            return False
        self._store.check_open()
        return True

    # ------------------------------------------------------------------ writes

    async def push_data(self, data: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> None:
        """Append ``data`` (one item or a list of them) as one atomic batch, durable (to the
        configured level) when this returns; a batch larger than the offload threshold is
        written in a worker thread."""
        store = self._store
        store.check_writable()
        items = [data] if isinstance(data, Mapping) else list(data)
        if not items:
            return
        encoded = [serialize_item(item) for item in items]
        async with self._lock:
            first = len(store.engine)
            batch: list[tuple[str, bytes | None, str | None]] = [
                (item_key(first + n), value, ITEM_CONTENT_TYPE) for n, value in enumerate(encoded)
            ]
            await store.write_batch(batch)
        await self._tick()

    async def purge(self) -> None:
        """Delete every item; the dataset, its id and its metadata remain."""
        async with self._lock:
            await self._store.purge()

    async def drop(self) -> None:
        """Delete the dataset and its folder, all or nothing; the client is closed afterwards."""
        async with self._lock:
            try:
                await self._store.drop()
                self._dropped = True
            finally:
                self._closed_now()

    # ------------------------------------------------------------------ reads

    async def _read_item(self, index: int) -> Any:
        """Item ``index``, or None when it is missing or is not JSON (logged and skipped, as
        Crawlee's file-system client skips a corrupt item file)."""
        key = item_key(index)
        found = await self._store.read(key)
        value = None if found is None else found[0]
        if value is None:
            return None
        try:
            return json.loads(value)
        except ValueError:
            log.exception("Corrupt JSON in item %s of %s, skipping", key, self._store.folder)
            return None

    async def get_data(
        self,
        *,
        offset: int = 0,
        limit: int | None = _CRAWLEE_NO_LIMIT,
        clean: bool = False,
        desc: bool = False,
        fields: list[str] | None = None,
        omit: list[str] | None = None,
        unwind: list[str] | None = None,
        skip_empty: bool = False,
        skip_hidden: bool = False,
        flatten: list[str] | None = None,
        view: str | None = None,
    ) -> DatasetItemsListPage:
        """A page of items: only the records of the page are read (their keys are computed
        from ``offset`` and ``limit``); ``clean`` is ``skip_empty`` and ``skip_hidden``
        together, and the fields are chosen by :func:`shape_item`."""
        _warn_unsupported("get_data", unwind=unwind, flatten=flatten, view=view)
        if not self._readable("get_data"):
            return DatasetItemsListPage(
                count=0, offset=offset, limit=limit or 0, total=0, desc=desc, items=[]
            )
        total = self._item_count()
        page = _Page(offset, limit, desc, skip_empty or clean, skip_hidden or clean, fields, omit)
        items = [item async for item in self._items(total, page)]
        await self._tick()
        return DatasetItemsListPage(
            count=len(items),
            offset=offset,
            limit=limit or total - offset,
            total=total,
            desc=desc,
            items=items,
        )

    async def iterate_items(
        self,
        *,
        offset: int = 0,
        limit: int | None = None,
        clean: bool = False,
        desc: bool = False,
        fields: list[str] | None = None,
        omit: list[str] | None = None,
        unwind: list[str] | None = None,
        skip_empty: bool = False,
        skip_hidden: bool = False,
    ) -> AsyncIterator[Mapping[str, Any]]:
        """The items one by one, each read when its turn comes (the arguments as in
        :meth:`get_data`)."""
        _warn_unsupported("iterate", unwind=unwind)
        if not self._readable("iterate_items"):
            return
        page = _Page(offset, limit, desc, skip_empty or clean, skip_hidden or clean, fields, omit)
        async for item in self._items(self._item_count(), page):
            yield item
        await self._tick()

    async def _items(self, total: int, page: _Page) -> AsyncIterator[Any]:
        """The items of ``page`` out of ``total`` items (:func:`select_indexes`), each read when
        its turn comes and shaped by :func:`shape_item`; missing and unreadable items are left
        out, and empty ones when ``page.skip_empty``."""
        for index in select_indexes(total, page.offset, page.limit, page.desc):
            item = await self._read_item(index)
            if item is None or (page.skip_empty and not item):
                continue
            yield shape_item(item, page.fields, page.omit, page.skip_hidden)
