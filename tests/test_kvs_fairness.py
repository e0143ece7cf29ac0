"""Small operations run inline on the event loop, but a task calling them in a tight loop still
lets the other tasks run: no store method starves the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from crawlee import service_locator
from crawlee.configuration import Configuration as CrawleeConfiguration
from crawlee.storages import KeyValueStore as CrawleeKeyValueStore

from logkv import Configuration, KeyValueStore
from logkv.crawlee import LogKvStorageClient
from logkv.storage_clients import DiskStorageClient, MemoryStorageClient

#: Operations in each tight loop: many times the number between two yields.
LOOP = 2_000


pytestmark = pytest.mark.usefixtures("clean_environment")


async def progress_during(loop: Callable[[], Awaitable[None]]) -> int:
    """How many steps a concurrent task made while ``loop`` ran."""
    steps = 0

    async def other() -> None:
        nonlocal steps
        while True:
            steps += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(other())
    await asyncio.sleep(0)  # let it start
    before = steps
    try:
        await loop()
    finally:
        task.cancel()
    return steps - before


@pytest.fixture(params=["log", "memory"])
async def kvs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[KeyValueStore]:
    configuration = Configuration(storage_dir=str(tmp_path), auto_compact=False)
    client = DiskStorageClient() if request.param == "log" else MemoryStorageClient()
    store = await KeyValueStore.open(
        name="fair", configuration=configuration, storage_client=client
    )
    yield store
    await store.close()


async def test_a_tight_set_value_loop_lets_other_tasks_run(kvs: KeyValueStore) -> None:
    async def loop() -> None:
        for number in range(LOOP):
            await kvs.set_value(f"k{number}", {"n": number})

    assert await progress_during(loop) > 0


async def test_tight_read_and_delete_loops_let_other_tasks_run(kvs: KeyValueStore) -> None:
    for number in range(LOOP):
        await kvs.set_value(f"k{number}", {"n": number})

    async def reads() -> None:
        for number in range(LOOP):
            assert await kvs.get_value(f"k{number}") == {"n": number}
            assert await kvs.record_exists(f"k{number}")

    async def iteration() -> None:
        assert len([key async for key in kvs]) == LOOP
        assert len([info async for info in kvs.iterate_keys()]) == LOOP

    async def deletes() -> None:
        for number in range(LOOP):
            await kvs.delete_value(f"k{number}")

    assert await progress_during(reads) > 0
    assert await progress_during(iteration) > 0
    assert await progress_during(deletes) > 0


async def test_the_crawlee_adapter_lets_other_tasks_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(CrawleeKeyValueStore, "_autosaved_values", {})
    service_locator.storage_instance_manager.clear_cache()
    client = LogKvStorageClient(settings=Configuration(auto_compact=False))
    store = await CrawleeKeyValueStore.open(
        name="fair",
        configuration=CrawleeConfiguration(storage_dir=str(tmp_path)),
        storage_client=client,
    )
    values: list[Any] = []

    async def writes() -> None:
        for number in range(LOOP):
            await store.set_value(f"k{number}", {"n": number})

    async def reads() -> None:
        for number in range(LOOP):
            values.append(await store.get_value(f"k{number}"))

    async def iteration() -> None:
        assert len([key async for key in store.iterate_keys()]) == LOOP

    try:
        assert await progress_during(writes) > 0
        assert await progress_during(reads) > 0
        assert values == [{"n": number} for number in range(LOOP)]
        assert await progress_during(iteration) > 0
    finally:
        await client.close()
        service_locator.storage_instance_manager.clear_cache()
