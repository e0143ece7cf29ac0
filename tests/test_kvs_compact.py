"""``await kvs.compact()``: compaction on demand through the async API."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from logkv import Configuration, KeyValueStore
from logkv.history import key_history
from logkv.storage_clients import MemoryStorageClient


def _configuration(tmp_path: Path) -> Configuration:
    return Configuration(
        storage_dir=str(tmp_path),
        purge_on_start=False,
        persist_state_interval=timedelta(hours=1),
        auto_compact=False,
    )


async def test_compact_shrinks_the_log_and_keeps_every_value(tmp_path: Path) -> None:
    configuration = _configuration(tmp_path)
    kvs = await KeyValueStore.open(name="crawl", configuration=configuration)
    for round_ in range(5):
        for i in range(200):
            await kvs.set_value(f"page-{i:03d}", {"round": round_, "i": i})
    await kvs.delete_value("page-000")

    async def keep_writing() -> None:
        for i in range(100):
            await kvs.set_value(f"late-{i:03d}", i)
            await asyncio.sleep(0)

    result, _ = await asyncio.gather(kvs.compact(retention="archive"), keep_writing())
    assert result is not None
    assert result.records >= 199  # the 199 live pages, plus late writes that beat the rotation
    assert result.bytes_after < result.bytes_before
    assert await kvs.get_value("page-007") == {"round": 4, "i": 7}
    assert await kvs.get_value("page-000") is None
    folder = kvs.path
    assert folder is not None
    await kvs.close()

    kvs = await KeyValueStore.open(name="crawl", configuration=configuration)
    assert await kvs.get_value("page-199") == {"round": 4, "i": 199}
    assert await kvs.get_value("late-099") == 99
    assert await kvs.get_value("page-000") is None
    assert len(await kvs.list_keys(limit=1000)) == 199 + 100
    await kvs.close()
    # retention archive: the whole history of a key is still there
    assert len(key_history(folder, "page-007")) == 5


async def test_memory_client_has_nothing_to_compact(tmp_path: Path) -> None:
    configuration = _configuration(tmp_path)
    kvs = await KeyValueStore.open(
        name="mem", configuration=configuration, storage_client=MemoryStorageClient()
    )
    await kvs.set_value("k", "v")
    assert await kvs.compact() is None
    assert await kvs.get_value("k") == "v"
    await kvs.close()
