"""The build step of a migration (see :mod:`logkv.migrate`): the stores of a storage folder
written anew in the other format, into the staging folder.

Both directions write through storage clients' own APIs: logkv stores are made by
:class:`~logkv.crawlee.LogKvStorageClient` (so each lands in the folder that client opens, the
default key-value store included), Crawlee's datasets and request queues by Crawlee's
``FileSystemStorageClient`` (so the layout is Crawlee's own). Key-value records go through
:mod:`logkv.cli.transfer` both ways, which keeps their bytes and content types exactly (the
storage clients' ``set_value`` would re-encode them). Stores already in the target format are
copied as they are. What is read comes from :mod:`logkv.migrate_sources`.

A queue is written by replaying what it holds through the target's ``RequestQueueClient``: the
handled requests first (added with ``handled_at`` to a logkv queue, which stores them as
handled; added, fetched and marked handled in Crawlee's, which counts a request as handled only
so), then the pending regular requests in their order, then the pending forefront requests one
by one, oldest first, so that the newest is fetched first as in Crawlee. Requests that were in
progress when the crawler stopped are pending, as Crawlee's own reopen makes them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Final

from crawlee import Request, service_locator
from crawlee.configuration import Configuration as CrawleeConfiguration
from crawlee.storage_clients import FileSystemStorageClient, StorageClient
from crawlee.storage_clients._file_system import FileSystemRequestQueueClient

from .cli.progress import progress as cli_progress
from .cli.transfer import export_store, import_store
from .crawlee import LogKvStorageClient
from .engine import Engine
from .layout import CRAWLEE_FILE_SYSTEM_DEFAULT_DIR, CRAWLEE_METADATA_FILE
from .migrate import (
    DamagedStoreError,
    MigrationError,
    StoreFolder,
    Survey,
    copy_store,
)
from .migrate_sources import (
    RQ_STATE_PREFIX,
    QueueContent,
    crawlee_identity,
    crawlee_item,
    crawlee_items,
    logkv_item,
    read_crawlee_queue,
    read_logkv_queue,
    user_records,
)
from .storage_clients._meta import read_meta
from .storage_layout import STORAGE_DIRS

#: Items or requests written per call.
BATCH: Final = 1000

Step = Callable[[int], None]


@dataclass
class BuildResult:
    """What a build wrote: one line per store, for the report."""

    lines: list[str] = field(default_factory=list)
    stores: int = 0
    records: int = 0


@contextmanager
def progress(label: str, total: int, enabled: bool | None) -> Iterator[Step]:
    """A bar on stderr for one store (``enabled`` None: only on a terminal)."""
    with cli_progress(label, total, enabled=enabled, unit="items") as shown:
        yield shown.advance


def _crawlee_configuration(storage_dir: Path) -> CrawleeConfiguration:
    return CrawleeConfiguration(storage_dir=str(storage_dir), purge_on_start=False)


def _selector(folder: str, name: object) -> dict[str, str]:
    """Crawlee's ``open`` arguments for the store in ``folder`` named ``name`` (None: unnamed)."""
    if isinstance(name, str) and name:
        return {"name": name}
    if folder == CRAWLEE_FILE_SYSTEM_DEFAULT_DIR:
        return {}
    return {"alias": folder}


# ---------------------------------------------------------------------------------- writing queues


async def write_queue(client: Any, content: QueueContent, step: Step) -> None:
    """Replay ``content`` into the empty request queue ``client`` (see the module docstring)."""
    direct = not isinstance(client, FileSystemRequestQueueClient)
    for start in range(0, len(content.handled), BATCH):
        batch = [read() for read in content.handled[start : start + BATCH]]
        if direct:  # logkv's queue stores a request added with handled_at as handled
            await client.add_batch_of_requests(batch)
        else:  # Crawlee's counts a request as handled only once it was fetched and marked
            await _add_handled(client, batch)
        step(len(batch))
    for start in range(0, len(content.regular), BATCH):
        batch = [read() for read in content.regular[start : start + BATCH]]
        await client.add_batch_of_requests(batch)
        step(len(batch))
    for read in reversed(content.forefront):
        await client.add_batch_of_requests([read()], forefront=True)
        step(1)


async def _add_handled(client: Any, batch: list[Request]) -> None:
    """Add ``batch`` (handled requests) to an empty queue, fetch each and mark it handled
    (its own ``handled_at`` kept)."""
    handled = {r.unique_key: r for r in batch}
    await client.add_batch_of_requests([r.model_copy(update={"handled_at": None}) for r in batch])
    while (fetched := await client.fetch_next_request()) is not None:
        original = handled.get(fetched.unique_key)
        if original is None:
            raise MigrationError(f"the new queue handed out an unknown request {fetched.url}")
        await client.mark_request_as_handled(original)


# ---------------------------------------------------------------------------------- to logkv


@asynccontextmanager
async def _events() -> AsyncIterator[None]:
    """Crawlee's event manager, active: a file-system queue persists its state when it ends."""
    async with service_locator.get_event_manager():
        yield


async def logkv_default_folder() -> str:
    """The folder :class:`LogKvStorageClient` opens for the default key-value store (asked by
    opening it in a scratch storage folder)."""
    with tempfile.TemporaryDirectory(prefix="logkv-default-") as scratch:
        client = LogKvStorageClient()
        kvs = await client.create_kvs_client(configuration=_crawlee_configuration(Path(scratch)))
        name = kvs.path.name
        await client.close()
    return name


class _Build:
    """Shared state of one build: the target storage folder, the clients, the report."""

    def __init__(
        self, source: Path, staging: Path, bar: bool | None, steps: Callable[[str], None]
    ) -> None:
        self.source = source
        self.steps = steps
        self.staging = staging
        self.bar = bar
        self.configuration = _crawlee_configuration(staging)
        self.result = BuildResult()

    def checkpoint(self, step: str) -> None:
        """Report that ``step`` (a store) is written."""
        self.steps(step)

    def note(self, line: str, records: int) -> None:
        self.result.lines.append(line)
        self.result.stores += 1
        self.result.records += records


async def build_logkv(
    survey: Survey, staging: Path, bar: bool | None, steps: Callable[[str], None]
) -> BuildResult:
    """Write the logkv form of every store of ``survey`` into the new storage folder
    ``staging``: Crawlee stores converted, logkv stores copied as they are; ``steps`` is
    called after each store."""
    build = _Build(survey.root, staging, bar, steps)
    default = await logkv_default_folder()
    kvs_dir = staging / STORAGE_DIRS["key_value_store"]
    _carry_logkv_stores(survey, build, default)
    for store in survey.of("crawlee", "key_value_store"):
        _import_kvs(store, build, kvs_dir, default)
    client = LogKvStorageClient()
    try:
        async with _events():
            for store in survey.of("crawlee", "dataset"):
                await _import_dataset(store, build, client)
            for store in survey.of("crawlee", "request_queue"):
                await _import_queue(store, build, client)
    finally:
        await client.close()
    return build.result


def _carry_logkv_stores(survey: Survey, build: _Build, default: str) -> None:
    """Copy the stores that are logkv already; the old default store (kept beside Crawlee's
    file-system default) moves to the folder the client now opens for it."""
    for store in survey.of("logkv"):
        target = store.name
        meta = read_meta(store.path)
        if store.storage == "key_value_store" and meta is not None and meta.kind == "default":
            target = default
        path = build.staging / STORAGE_DIRS[store.storage] / target
        if path.exists():
            raise MigrationError(
                f"two logkv stores would be {path.relative_to(build.staging)}: {store.path} "
                "and another default store; keep one (logkv export/import) and run migrate again"
            )
        copy_store(store.path, path)
        build.note(f"copied the logkv {store.storage} {store.name} as {target}", 0)
        build.checkpoint(f"{store.storage} {store.name}")


def _import_kvs(store: StoreFolder, build: _Build, kvs_dir: Path, default: str) -> None:
    is_default = store.name == CRAWLEE_FILE_SYSTEM_DEFAULT_DIR
    target = kvs_dir / (default if is_default else store.name)
    if is_default and target.exists():  # the logkv default store was carried over
        if user_records(store.path):
            raise MigrationError(
                f"two default key-value stores: the Crawlee store {store.path}, which holds "
                f"records of its own beside the queues' state, and the logkv store "
                f"{target.name}; move one store's records into the other (logkv "
                "import/export) and run migrate again"
            )
        return  # it holds only the queues' state, which moves with the queues
    result = import_store(
        store.path,
        target,
        build.bar,
        as_default=is_default,
        skip=lambda key: key.startswith(RQ_STATE_PREFIX),
        label=f"key-value store {store.name}",
    )
    if result.skipped:
        raise DamagedStoreError(f"unreadable records in {store.path}: {result.skipped[0]}")
    build.note(f"key-value store {store.name} -> {target.name}: {result.records:,} records",
               result.records)  # fmt: skip
    build.checkpoint(f"{store.storage} {store.name}")


async def _import_dataset(store: StoreFolder, build: _Build, client: LogKvStorageClient) -> None:
    identity = crawlee_identity(store.path)
    files = crawlee_items(store.path)
    dataset = await client.create_dataset_client(
        **_selector(store.name, identity.get("name")), configuration=build.configuration
    )
    with progress(f"dataset {store.name}", len(files), build.bar) as step:
        for start in range(0, len(files), BATCH):
            chunk = files[start : start + BATCH]
            await dataset.push_data([crawlee_item(path) for path in chunk])
            step(len(chunk))
    build.note(f"dataset {store.name}: {len(files):,} items", len(files))
    build.checkpoint(f"{store.storage} {store.name}")


async def _import_queue(store: StoreFolder, build: _Build, client: LogKvStorageClient) -> None:
    content = read_crawlee_queue(build.source, store.path)
    queue = await client.create_rq_client(
        **_selector(store.name, content.name), configuration=build.configuration
    )
    with progress(f"request queue {store.name}", content.total, build.bar) as step:
        await write_queue(queue, content, step)
    build.note(
        f"request queue {store.name}: {len(content.handled):,} handled, "
        f"{len(content.forefront) + len(content.regular):,} pending", content.total
    )  # fmt: skip
    build.checkpoint(f"{store.storage} {store.name}")


# ---------------------------------------------------------------------------------- to Crawlee


async def build_crawlee(
    survey: Survey, staging: Path, bar: bool | None, steps: Callable[[str], None]
) -> BuildResult:
    """Write the Crawlee file-system form of every store of ``survey`` into ``staging``:
    logkv stores converted, Crawlee stores copied as they are; ``steps`` is called after each
    store."""
    build = _Build(survey.root, staging, bar, steps)
    kvs_dir = staging / STORAGE_DIRS["key_value_store"]
    for store in survey.of("logkv", "key_value_store"):
        meta = read_meta(store.path)
        is_default = meta is not None and meta.kind == "default"
        target = kvs_dir / (CRAWLEE_FILE_SYSTEM_DEFAULT_DIR if is_default else store.name)
        result = export_store(store.path, target, bar, f"key-value store {store.name}")
        build.note(f"key-value store {store.name} -> {target.name}: {result.records:,} records",
                   result.records)  # fmt: skip
        build.checkpoint(f"{store.storage} {store.name}")
    for store in survey.of("crawlee"):
        target = staging / STORAGE_DIRS[store.storage] / store.name
        if target.exists():  # Crawlee's default store beside logkv's: merge the record files
            _merge_records(store.path, target)
        else:
            copy_store(store.path, target)
        build.note(f"copied the Crawlee {store.storage} {store.name}", 0)
    target = FileSystemStorageClient()
    async with _events():
        for store in survey.of("logkv", "dataset"):
            await _export_dataset(store, build, target)
        for store in survey.of("logkv", "request_queue"):
            await _export_queue(store, build, target)
    return build.result


async def _export_dataset(store: StoreFolder, build: _Build, target: StorageClient) -> None:
    """Push the items of the logkv dataset ``store`` (read from its records: each is the item
    as Crawlee's file-system client writes it) into a new Crawlee dataset, in order."""
    with Engine.open(store.path, readonly=True) as engine:
        total = len(engine)
        written = await target.create_dataset_client(
            **_logkv_selector(store, read_meta(store.path)), configuration=build.configuration
        )
        with progress(f"dataset {store.name}", total, build.bar) as step:
            keys = iter(engine.keys())
            while chunk := list(islice(keys, BATCH)):
                await written.push_data([logkv_item(engine, store, key) for key in chunk])
                step(len(chunk))
    build.note(f"dataset {store.name}: {total:,} items", total)
    build.checkpoint(f"{store.storage} {store.name}")


async def _export_queue(store: StoreFolder, build: _Build, target: StorageClient) -> None:
    with Engine.open(store.path, readonly=True) as engine:
        content = read_logkv_queue(engine)
        queue = await target.create_rq_client(
            **_logkv_selector(store, read_meta(store.path)), configuration=build.configuration
        )
        with progress(f"request queue {store.name}", content.total, build.bar) as step:
            await write_queue(queue, content, step)
    build.note(
        f"request queue {store.name}: {len(content.handled):,} handled, "
        f"{len(content.forefront) + len(content.regular):,} pending",
        content.total,
    )
    build.checkpoint(f"{store.storage} {store.name}")


def _logkv_selector(store: StoreFolder, meta: Any) -> dict[str, str]:
    if meta is None or meta.kind == "default":
        return {}
    if meta.kind == "named":
        return {"name": meta.name}
    return {"alias": meta.alias}


def _merge_records(source: Path, target: Path) -> None:
    """Copy the record files of Crawlee store ``source`` that ``target`` lacks."""
    for name in os.listdir(source):
        if name != CRAWLEE_METADATA_FILE and not (target / name).exists():
            shutil.copy2(source / name, target / name)
