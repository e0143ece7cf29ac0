"""Streamed values through the async facade and the Crawlee adapter.

``KeyValueStore.set_value_stream`` from async iterators, ``aiofiles`` files, file objects and
iterables of bytes; ``iterate_value_chunks`` back; a failing source and a cancelled task leave
the old value; the event loop stays free meanwhile; the in-memory client gathers a stream; and
Crawlee's ``KeyValueStore.set_value`` given a file or an async iterator stores a streamed value.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiofiles
import pytest
from crawlee import service_locator
from crawlee.configuration import Configuration as CrawleeConfiguration
from crawlee.storages import KeyValueStore as CrawleeKeyValueStore

from logkv import Configuration, KeyValueStore
from logkv.crawlee import LogKvStorageClient
from logkv.key_value_store import close_all
from logkv.layout import KVS_DIR, VALUES_DIR
from logkv.storage_clients import DiskStorageClient, MemoryStorageClient, StorageClient
from logkv.values import CHUNK_SIZE

pytestmark = pytest.mark.usefixtures("clean_environment")

DATA = bytes(range(256)) * (CHUNK_SIZE // 256 + 3)  # a chunk and a bit


async def agen(data: bytes, piece: int = 100_000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), piece):
        await asyncio.sleep(0)
        yield data[start : start + piece]


@pytest.fixture(params=["log", "memory"])
async def kvs(request: pytest.FixtureRequest, storage_dir: Path) -> AsyncIterator[KeyValueStore]:
    configuration = Configuration(
        storage_dir=str(storage_dir),
        purge_on_start=False,
        persist_state_interval=timedelta(hours=1),
    )
    client: StorageClient = (
        DiskStorageClient(configuration)
        if request.param == "log"
        else MemoryStorageClient(configuration)
    )
    store = await KeyValueStore.open(
        name="streams", configuration=configuration, storage_client=client
    )
    yield store
    await close_all()


async def chunks_of(kvs: KeyValueStore, key: str) -> list[bytes]:
    return [chunk async for chunk in kvs.iterate_value_chunks(key)]


async def test_from_an_async_iterator_and_back(kvs: KeyValueStore) -> None:
    await kvs.set_value_stream("video", agen(DATA), "video/mp4")
    chunks = await chunks_of(kvs, "video")
    assert b"".join(chunks) == DATA and all(len(c) <= CHUNK_SIZE for c in chunks)
    assert await kvs.get_value("video") == DATA
    assert [i.size async for i in kvs.iterate_keys()] == [len(DATA)]
    assert [i.content_type async for i in kvs.iterate_keys()] == ["video/mp4"]


async def test_from_an_aiofiles_file(kvs: KeyValueStore, tmp_path: Path) -> None:
    source = tmp_path / "archive.zip"
    source.write_bytes(DATA)
    async with aiofiles.open(source, "rb") as file:
        await kvs.set_value_stream("archive", file)
    assert b"".join(await chunks_of(kvs, "archive")) == DATA
    assert [i.content_type async for i in kvs.iterate_keys()] == ["application/octet-stream"]


async def test_from_a_file_object_and_an_iterable(kvs: KeyValueStore) -> None:
    await kvs.set_value_stream("a", io.BytesIO(DATA))
    await kvs.set_value_stream("b", [DATA[:10], bytearray(DATA[10:20]), memoryview(DATA[20:])])
    assert await kvs.get_value("a") == DATA
    assert await kvs.get_value("b") == DATA


async def test_absent_keys_stream_nothing(kvs: KeyValueStore) -> None:
    assert await chunks_of(kvs, "absent") == []
    await kvs.set_value("json", {"a": 1})
    assert b"".join(await chunks_of(kvs, "json")).replace(b" ", b"") == b'{"a":1}'


class Boom(Exception):
    pass


async def test_a_failing_source_keeps_the_old_value(kvs: KeyValueStore) -> None:
    await kvs.set_value("k", b"old")

    async def failing() -> AsyncIterator[bytes]:
        yield DATA[: CHUNK_SIZE + 1]
        raise Boom

    with pytest.raises(Boom):
        await kvs.set_value_stream("k", failing())
    assert await kvs.get_value("k") == b"old"
    if kvs.path is not None:
        assert list((kvs.path / VALUES_DIR).iterdir()) == []


async def test_a_bad_source_is_refused(kvs: KeyValueStore) -> None:
    with pytest.raises(TypeError):
        await kvs.set_value_stream("k", "text is not a stream")
    with pytest.raises(TypeError):
        await kvs.set_value_stream("k", agen_of_text())
    assert await kvs.get_value("k") is None


async def agen_of_text() -> AsyncIterator[str]:
    yield "not bytes"


async def test_cancelling_a_stream_keeps_the_old_value(storage_dir: Path) -> None:
    configuration = Configuration(storage_dir=str(storage_dir), purge_on_start=False)
    kvs = await KeyValueStore.open(
        name="c", configuration=configuration, storage_client=DiskStorageClient(configuration)
    )
    try:
        await kvs.set_value("k", b"old")
        started = asyncio.Event()

        async def endless() -> AsyncIterator[bytes]:
            while True:
                started.set()
                yield DATA
                await asyncio.sleep(0)

        task = asyncio.create_task(kvs.set_value_stream("k", endless()))
        await started.wait()
        ticks = 0
        for _ in range(20):  # the loop stays free while the stream is written
            await asyncio.sleep(0.001)
            ticks += 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert ticks == 20
        assert await kvs.get_value("k") == b"old"
        assert kvs.path is not None
        assert not list((kvs.path / VALUES_DIR).iterdir())
    finally:
        await close_all()


async def test_stopping_a_read_early_lets_go_of_the_file(kvs: KeyValueStore) -> None:
    await kvs.set_value_stream("k", agen(DATA))
    chunks = kvs.iterate_value_chunks("k")
    first = await anext(chunks)
    assert first == DATA[: len(first)]
    await chunks.aclose()  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------- Crawlee


@pytest.fixture
async def crawlee_kvs(tmp_path: Path) -> AsyncIterator[tuple[CrawleeKeyValueStore, Path]]:
    service_locator.storage_instance_manager.clear_cache()
    client = LogKvStorageClient(settings=Configuration(auto_compact=False))
    configuration = CrawleeConfiguration(storage_dir=str(tmp_path), purge_on_start=False)
    store = await CrawleeKeyValueStore.open(
        name="media", configuration=configuration, storage_client=client
    )
    yield store, tmp_path / KVS_DIR / "media"
    await client.close()
    service_locator.storage_instance_manager.clear_cache()


async def test_crawlee_set_value_of_a_file_stores_a_streamed_value(
    crawlee_kvs: tuple[CrawleeKeyValueStore, Path], tmp_path: Path
) -> None:
    kvs, folder = crawlee_kvs
    source = tmp_path / "video.mp4"
    source.write_bytes(DATA)
    with source.open("rb") as file:
        await kvs.set_value("video", file, "video/mp4")
    async with aiofiles.open(source, "rb") as afile:
        await kvs.set_value("copy", afile)
    await kvs.set_value("gen", agen(DATA[:1000]))
    assert len(list((folder / VALUES_DIR).iterdir())) == 3
    assert await kvs.get_value("video") == DATA
    assert await kvs.get_value("copy") == DATA
    assert await kvs.get_value("gen") == DATA[:1000]
    infos = {i.key: i async for i in kvs.iterate_keys()}
    assert infos["video"].size == len(DATA) and infos["video"].content_type == "video/mp4"
    client = kvs._client
    streamed = [c async for c in client.iterate_value_chunks(key="video")]  # type: ignore[attr-defined]
    assert b"".join(streamed) == DATA
    await kvs.set_value("plain", {"a": [1, 2]})  # any other value: serialised as before
    assert await kvs.get_value("plain") == {"a": [1, 2]}


async def test_public_url_of_a_streamed_value(kvs: KeyValueStore) -> None:
    if kvs.path is None:
        pytest.skip("the in-memory client keeps public files of its own")
    await kvs.set_value_stream("video", agen(DATA), "video/mp4")
    url = await kvs.get_public_url("video")
    path = Path(url.removeprefix("file://"))
    assert path.suffix == ".mp4" and path.read_bytes() == DATA
    await kvs.set_value_stream("video", agen(DATA[:5000]), "video/mp4")  # the file follows
    assert path.read_bytes() == DATA[:5000]
