"""Read-only opens, through logkv's ``KeyValueStore`` and through Crawlee's over
``LogKvStorageClient(readonly=True)``: beside a live writer in another process, refusing every
write, changing no file, never purging, and never creating a store.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from crawlee import Request, service_locator
from crawlee.configuration import Configuration as CrawleeConfiguration
from crawlee.storages import Dataset, RequestQueue
from crawlee.storages import KeyValueStore as CrawleeKeyValueStore

from logkv import (
    Configuration,
    Engine,
    KeyValueStore,
    MemoryStorageClient,
    NotALogKVStoreError,
    ReadOnlyStoreError,
    StoreLockedError,
    StoreNotFoundError,
)
from logkv.crawlee import LogKvStorageClient
from logkv.layout import CRAWLEE_METADATA_FILE, KVS_DIR, META_FILE

PATIENCE = 60.0

pytestmark = pytest.mark.usefixtures("clean_environment")

#: A writer in another process: it opens ``argv[2]`` (a store name, or "" for the default
#: store) under ``argv[1]`` through logkv's KeyValueStore (``argv[3]`` "logkv") or Crawlee's
#: over LogKvStorageClient ("crawlee"), then for each line on stdin writes the keys it names
#: and answers "wrote"; an empty line closes the store and ends it.
WRITER = textwrap.dedent(
    """
    import asyncio, sys
    storage_dir, name, api = sys.argv[1], sys.argv[2] or None, sys.argv[3]

    async def main():
        if api == "logkv":
            from logkv import Configuration, KeyValueStore
            kvs = await KeyValueStore.open(
                name=name, configuration=Configuration(storage_dir=storage_dir)
            )
            write, close = kvs.set_value, kvs.close
        else:
            from crawlee.configuration import Configuration
            from crawlee.storages import KeyValueStore
            from logkv.crawlee import LogKvStorageClient
            client = LogKvStorageClient()
            kvs = await KeyValueStore.open(
                name=name, storage_client=client,
                configuration=Configuration(storage_dir=storage_dir, purge_on_start=False),
            )
            write, close = kvs.set_value, client.close
        print("ready", flush=True)
        for line in sys.stdin:
            keys = line.split()
            if not keys:
                break
            for key in keys:
                await write(key, {"key": key})
            print("wrote", flush=True)
        await close()

    asyncio.run(main())
    """
)


class Writer:
    """A writer process (see :data:`WRITER`)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self._expect("ready")

    def write(self, *keys: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(" ".join(keys) + "\n")
        self.process.stdin.flush()
        self._expect("wrote")

    def finish(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        assert self.process.wait(PATIENCE) == 0

    def _expect(self, wanted: str) -> None:
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if line != wanted:
            _, err = self.process.communicate(timeout=PATIENCE)
            raise AssertionError(f"writer said {line!r}, expected {wanted!r}; stderr:\n{err}")


@pytest.fixture
def start_writer(storage_dir: Path, children: list[subprocess.Popen[str]]) -> Any:
    def start(name: str | None, api: str) -> Writer:
        process = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(storage_dir), name or "", api],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        children.append(process)
        return Writer(process)

    return start


@pytest.fixture
async def crawlee_cache(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    monkeypatch.setattr(CrawleeKeyValueStore, "_autosaved_values", {})
    service_locator.storage_instance_manager.clear_cache()
    yield
    service_locator.storage_instance_manager.clear_cache()


def files_of(folder: Path) -> dict[str, tuple[int, int, bytes | None]]:
    """Every path under ``folder`` with its mode, modification time and bytes (None for a
    folder): equal before and after means nothing was written, created or removed."""
    found: dict[str, tuple[int, int, bytes | None]] = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        data = path.read_bytes() if path.is_file() else None
        found[str(path.relative_to(folder))] = (info.st_mode, info.st_mtime_ns, data)
    return found


def settings(storage_dir: Path, **options: Any) -> Configuration:
    options.setdefault("purge_on_start", False)
    return Configuration(storage_dir=str(storage_dir), auto_compact=False, **options)


# ---------------------------------------------------------------- logkv's KeyValueStore


@pytest.mark.slow
async def test_a_read_only_store_reads_beside_a_live_writer_process(
    storage_dir: Path, start_writer: Any
) -> None:
    writer = start_writer("shop", "logkv")
    writer.write("a", "b")
    with pytest.raises(StoreLockedError, match=r"readonly=True") as locked:
        await KeyValueStore.open(name="shop", configuration=settings(storage_dir))
    assert "read-only" in str(locked.value)
    # What the lock error suggests works.
    reader = await KeyValueStore.open(
        name="shop", configuration=settings(storage_dir), readonly=True
    )
    try:
        assert [key async for key in reader] == ["a", "b"]
        writer.write("c")  # written after the open: seen at once
        assert await reader.get_value("c") == {"key": "c"}
        assert await reader.record_exists("c")
        assert [info.key for info in await reader.list_keys()] == ["a", "b", "c"]
        assert (await reader.get_metadata()).record_count == 3
        writer.write("d")
        assert [key async for key, _ in reader.iterate_entries()] == ["a", "b", "c", "d"]
    finally:
        await reader.close()
    writer.finish()


async def test_a_read_only_store_refuses_every_write(storage_dir: Path) -> None:
    writer = await KeyValueStore.open(name="shop", configuration=settings(storage_dir))
    await writer.set_value("k", 1)
    reader = await KeyValueStore.open(
        name="shop", configuration=settings(storage_dir), readonly=True
    )
    try:
        assert reader is not writer  # registered apart, in the same process
        refused = [
            reader.set_value("k", 2),
            reader.set_value("k", None),
            reader.delete_value("k"),
            reader.purge(),
            reader.compact(),
            reader.drop(),
            reader.get_auto_saved_value("STATE"),
        ]
        for call in refused:
            with pytest.raises(ReadOnlyStoreError, match="read-only"):
                await call
        with pytest.raises(ReadOnlyStoreError, match="publish"):
            await reader.get_public_url("k")
        assert await reader.get_value("k") == 1  # still open and unchanged
        url = await writer.get_public_url("k")
        assert await reader.get_public_url("k") == url  # the writer's file
        await writer.set_value("k", 3)
        assert await reader.get_value("k") == 3
    finally:
        await reader.close()
        await writer.close()


async def test_a_read_only_open_changes_no_file_and_ignores_purge_on_start(
    storage_dir: Path,
) -> None:
    for selector in ({"alias": "run"}, {}):
        kvs = await KeyValueStore.open(configuration=settings(storage_dir), **selector)
        await kvs.set_value("k", {"a": 1})
        await kvs.get_public_url("k")
        await kvs.close()
    before = files_of(storage_dir)
    for selector in ({"alias": "run"}, {}):
        reader = await KeyValueStore.open(
            configuration=settings(storage_dir, purge_on_start=True), readonly=True, **selector
        )
        assert await reader.get_value("k") == {"a": 1}
        assert [info.key for info in await reader.list_keys()] == ["k"]
        await reader.get_metadata()
        await reader.persist_autosaved_values()
        await reader.close()
    assert files_of(storage_dir) == before
    # A writable open afterwards still purges: the read-only one did not count as the purge.
    kvs = await KeyValueStore.open(
        alias="run", configuration=settings(storage_dir, purge_on_start=True)
    )
    assert await kvs.get_value("k") is None
    await kvs.close()


async def test_a_read_only_open_of_a_missing_store_creates_nothing(storage_dir: Path) -> None:
    for selector in ({"name": "missing"}, {"alias": "missing"}, {}):
        with pytest.raises(StoreNotFoundError, match="never creates"):
            await KeyValueStore.open(
                configuration=settings(storage_dir, purge_on_start=True),
                readonly=True,
                **selector,
            )
    assert not storage_dir.exists()
    with pytest.raises(StoreNotFoundError):
        await KeyValueStore.open(
            id="no-such-id", configuration=settings(storage_dir), readonly=True
        )
    assert not storage_dir.exists()


async def test_a_store_dropped_by_its_writer_is_not_found_by_its_reader(storage_dir: Path) -> None:
    writer = await KeyValueStore.open(name="shop", configuration=settings(storage_dir))
    await writer.set_value("k", 1)
    reader = await KeyValueStore.open(
        name="shop", configuration=settings(storage_dir), readonly=True
    )
    assert await reader.get_value("k") == 1
    await writer.drop()
    with pytest.raises(StoreNotFoundError, match="dropped"):
        await reader.get_value("k")
    with pytest.raises(StoreNotFoundError, match="dropped"):
        await reader.list_keys()
    await reader.close()


async def test_a_read_only_open_refuses_what_a_writable_open_refuses(storage_dir: Path) -> None:
    kvs = await KeyValueStore.open(name="shop", configuration=settings(storage_dir))
    await kvs.close()
    with pytest.raises(ValueError, match="named store"):
        await KeyValueStore.open(alias="shop", configuration=settings(storage_dir), readonly=True)
    crawlee_folder = storage_dir / KVS_DIR / "crawlee"
    crawlee_folder.mkdir()
    (crawlee_folder / CRAWLEE_METADATA_FILE).write_text("{}")
    with pytest.raises(NotALogKVStoreError):
        await KeyValueStore.open(name="crawlee", configuration=settings(storage_dir), readonly=True)


async def test_a_read_only_open_of_a_store_without_metadata_writes_none(storage_dir: Path) -> None:
    """A store whose writer has not written ``META.json`` yet (or made by the engine alone)
    opens read-only with an identity in memory, and stays without the file."""
    folder = storage_dir / KVS_DIR / "bare"
    with Engine.open(folder) as engine:
        engine.set("k", b"v")
    reader = await KeyValueStore.open(
        name="bare", configuration=settings(storage_dir), readonly=True
    )
    assert [key async for key in reader] == ["k"]
    assert reader.name == "bare"
    await reader.close()
    assert not (folder / META_FILE).exists()


async def test_the_memory_client_refuses_read_only_opens() -> None:
    with pytest.raises(ValueError, match="in-memory"):
        await KeyValueStore.open(storage_client=MemoryStorageClient(), readonly=True)


# ---------------------------------------------------------------- Crawlee's KeyValueStore


@pytest.mark.slow
async def test_crawlee_reads_read_only_beside_a_live_crawler_process(
    storage_dir: Path, start_writer: Any, crawlee_cache: None
) -> None:
    writer = start_writer(None, "crawlee")  # the default store, as a crawler's
    writer.write("a")
    configuration = CrawleeConfiguration(storage_dir=str(storage_dir), purge_on_start=True)
    client = LogKvStorageClient(readonly=True)
    folder = storage_dir / KVS_DIR / "default"
    before = sorted(path.name for path in folder.iterdir())
    with pytest.raises(StoreLockedError, match=r"readonly=True .*LogKvStorageClient"):
        await CrawleeKeyValueStore.open(
            storage_client=LogKvStorageClient(), configuration=configuration
        )
    try:
        kvs = await CrawleeKeyValueStore.open(storage_client=client, configuration=configuration)
        assert await kvs.get_value("a") == {"key": "a"}  # not purged: read-only
        writer.write("b")
        assert await kvs.get_value("b") == {"key": "b"}
        assert [info.key async for info in kvs.iterate_keys()] == ["a", "b"]
        assert await kvs.record_exists(key="b")
        for call in (kvs.set_value("c", 1), kvs.delete_value("a"), kvs.purge(), kvs.drop()):
            with pytest.raises(ReadOnlyStoreError):
                await call
        assert await kvs.get_value("a") == {"key": "a"}  # still open after the refused drop
        delegating = LogKvStorageClient(
            readonly=True, native_datasets=False, native_request_queues=False
        )
        for storage in (Dataset, RequestQueue):
            with pytest.raises(ReadOnlyStoreError, match="delegate"):
                await storage.open(storage_client=delegating, configuration=configuration)
        # The cache key keeps read-only and writable clients apart.
        assert client.get_storage_client_cache_key(
            configuration
        ) != LogKvStorageClient().get_storage_client_cache_key(configuration)
    finally:
        await client.close()
    assert sorted(path.name for path in folder.iterdir()) == before
    writer.finish()


async def test_crawlee_read_only_open_of_a_missing_store_creates_nothing(
    storage_dir: Path, crawlee_cache: None
) -> None:
    configuration = CrawleeConfiguration(storage_dir=str(storage_dir), purge_on_start=True)
    client = LogKvStorageClient(readonly=True)
    for selector in ({"name": "missing"}, {"alias": "missing"}, {}):
        with pytest.raises(StoreNotFoundError, match="never creates"):
            await CrawleeKeyValueStore.open(
                storage_client=client, configuration=configuration, **selector
            )
    assert not (storage_dir / KVS_DIR).exists()
    await client.close()


async def test_a_read_only_crawlee_store_does_not_change_its_folder(
    storage_dir: Path, crawlee_cache: None
) -> None:
    configuration = CrawleeConfiguration(storage_dir=str(storage_dir), purge_on_start=False)
    writer = LogKvStorageClient()
    kvs = await CrawleeKeyValueStore.open(
        alias="run", storage_client=writer, configuration=configuration
    )
    await kvs.set_value("k", "text")
    await kvs.get_public_url("k")
    await writer.close()
    service_locator.storage_instance_manager.clear_cache()
    before = files_of(storage_dir)
    reader = LogKvStorageClient(readonly=True)
    reading = await CrawleeKeyValueStore.open(
        alias="run",
        storage_client=reader,
        configuration=CrawleeConfiguration(storage_dir=str(storage_dir), purge_on_start=True),
    )
    assert await reading.get_value("k") == "text"
    assert (await reading.get_public_url("k")).startswith("file://")
    await reader.close()
    assert files_of(storage_dir) == before


# ---------------------------------------------------------------- datasets and request queues


async def test_read_only_datasets_and_queues_follow_their_writer_and_change_nothing(
    storage_dir: Path, crawlee_cache: None
) -> None:
    """A read-only client reads a crawler's dataset and request queue as the crawler writes
    them (items, requests, counts), refuses every change, fetches nothing, and leaves every
    file of the storage folder as it was."""
    configuration = CrawleeConfiguration(storage_dir=str(storage_dir), purge_on_start=False)
    writer = LogKvStorageClient()
    dataset = await writer.create_dataset_client(name="items", configuration=configuration)
    queue = await writer.create_rq_client(name="todo", configuration=configuration)
    await dataset.push_data([{"n": 0}, {"n": 1}])
    await queue.add_batch_of_requests(
        [Request.from_url(f"https://example.com/{i}") for i in range(3)]
    )
    reader = LogKvStorageClient(readonly=True)
    try:
        items = await reader.create_dataset_client(name="items", configuration=configuration)
        requests = await reader.create_rq_client(name="todo", configuration=configuration)
        assert (await items.get_data()).items == [{"n": 0}, {"n": 1}]
        assert (await requests.get_metadata()).pending_request_count == 3
        # The writer goes on: the reader sees it at its next call.
        await dataset.push_data({"n": 2})
        taken = await queue.fetch_next_request()
        assert taken is not None
        await queue.mark_request_as_handled(taken)
        await queue.add_batch_of_requests([Request.from_url("https://example.com/3")])
        assert (await items.get_metadata()).item_count == 3
        assert [item async for item in items.iterate_items(desc=True)] == [
            {"n": 2},
            {"n": 1},
            {"n": 0},
        ]
        metadata = await requests.get_metadata()
        assert (metadata.pending_request_count, metadata.handled_request_count) == (3, 1)
        assert metadata.total_request_count == 4
        assert not await requests.is_empty()
        assert not await requests.is_finished()
        handled = await requests.get_request(taken.unique_key)
        assert handled is not None and handled.handled_at is not None
        assert len([request async for request in requests.iter_requests()]) == 4
        before = files_of(storage_dir)
        changes = (
            items.push_data({"n": 9}),
            items.purge(),
            items.drop(),
            requests.add_batch_of_requests([Request.from_url("https://example.com/9")]),
            requests.fetch_next_request(),
            requests.mark_request_as_handled(taken),
            requests.reclaim_request(taken),
            requests.purge(),
            requests.drop(),
        )
        for change in changes:
            with pytest.raises(ReadOnlyStoreError, match="read-only"):
                await change
        assert (await items.get_metadata()).item_count == 3  # still open after the refusals
        assert files_of(storage_dir) == before
    finally:
        await reader.close()
        await writer.close()


async def test_a_read_only_open_of_a_missing_dataset_or_queue_creates_nothing(
    storage_dir: Path, crawlee_cache: None
) -> None:
    configuration = CrawleeConfiguration(storage_dir=str(storage_dir), purge_on_start=True)
    client = LogKvStorageClient(readonly=True)
    for storage, noun in ((Dataset, "dataset"), (RequestQueue, "request queue")):
        for selector in ({"name": "missing"}, {"alias": "missing"}, {}):
            with pytest.raises(StoreNotFoundError, match=f"no {noun} at .*never creates"):
                await storage.open(storage_client=client, configuration=configuration, **selector)
    assert not storage_dir.exists()
    await client.close()
