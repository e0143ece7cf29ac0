"""Replication to object storage against a real S3 protocol server (moto, or the endpoint of
``LOGKV_TEST_S3_URL``): shipping and restoring, ``--until``, compaction while replicating, the
endpoint down, bad URLs and refused endpoints (docs/FORMAT.md, section 13)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from crawlee import service_locator
from crawlee.configuration import Configuration as CrawleeConfiguration
from crawlee.storages import Dataset, RequestQueue

from logkv import (
    Configuration,
    DiskStorageClient,
    Engine,
    FencedError,
    KeyValueStore,
    ReplicaError,
    StoreLockedError,
)
from logkv.cli.main import main
from logkv.crawlee import LogKvStorageClient
from logkv.layout import list_segments, segment_name
from logkv.names import select
from logkv.storage_clients._store import EngineStore
from logkv.verify import verify

pytest.importorskip("obstore")

from logkv.replica import Replica, open_replica_bucket, restore, store_bucket
from logkv.replica.url import parse_replica_url


def config(storage: Path, **extra: object) -> Configuration:
    return Configuration(
        storage_dir=str(storage), purge_on_start=False, replica_interval=0.05, **extra
    )


def store_url(root: str, name: str) -> str:
    return f"{root}/key_value_stores/{name}"


def sha(path: Path, length: int | None = None) -> str:
    data = path.read_bytes()
    return hashlib.sha256(data if length is None else data[:length]).hexdigest()


async def test_ship_and_restore_round_trip(s3, tmp_path: Path) -> None:
    """Everything flushed comes back byte for byte: each restored segment is a prefix of the
    original, the restored store verifies, and its id and keys survive."""
    storage = tmp_path / "a"
    kvs = await KeyValueStore.open(name="pages", configuration=config(storage), replica_url=s3.root)
    for i in range(200):
        await kvs.set_value(f"k{i:03d}", {"i": i, "pad": "x" * 50})
    await kvs.delete_value("k007")
    seq = await kvs.flush_replica(timeout=30)
    info = await kvs.get_info()
    assert seq == info.last_seq
    assert info.replication_lag_records == 0
    folder, store_id = kvs.path, kvs.id
    await kvs.close()
    assert folder is not None

    target = tmp_path / "b" / "key_value_stores" / "pages"
    result = restore(open_replica_bucket(store_url(s3.root, "pages"), allow_http=True), target)
    assert result.last_seq == seq
    assert verify(target).ok
    for number, path in list_segments(target):
        original = folder / segment_name(number)
        assert sha(path) == sha(original, path.stat().st_size)
    assert (target / "META.json").is_file()

    restored = await KeyValueStore.open(
        name="pages", configuration=Configuration(storage_dir=str(tmp_path / "b"))
    )
    try:
        assert restored.id == store_id
        assert await restored.get_value("k123") == {"i": 123, "pad": "x" * 50}
        assert await restored.get_value("k007") is None
        assert len(await restored.list_keys(limit=1000)) == 199
    finally:
        await restored.close()


async def test_open_restores_a_missing_folder(s3, tmp_path: Path) -> None:
    """A crawler resumes on a new machine with one setting: the folder is missing, the open
    restores it from the bucket, and writing goes on there."""
    kvs = await KeyValueStore.open(name="state", configuration=config(tmp_path / "one"),
                                   replica_url=s3.root)  # fmt: skip
    await kvs.set_value("cursor", 41)
    store_id = kvs.id
    await kvs.flush_replica(timeout=30)
    await kvs.close()

    kvs = await KeyValueStore.open(
        name="state", configuration=config(tmp_path / "two", replica_url=s3.root)
    )
    try:
        assert kvs.id == store_id
        assert await kvs.get_value("cursor") == 41
        await kvs.set_value("cursor", 42)
        await kvs.flush_replica(timeout=30)
    finally:
        await kvs.close()
    result = restore(open_replica_bucket(store_url(s3.root, "state"), allow_http=True),
                     tmp_path / "three")  # fmt: skip
    assert result.last_seq == 2


def test_cli_restore_until(s3, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bucket = store_bucket(parse_replica_url(s3.root), "key_value_stores/s", allow_http=True)
    replica = Replica.claim(bucket, tmp_path / "s", 0.05)
    with Engine.open(tmp_path / "s") as engine:
        replica.start(engine)
        for i in range(10):
            engine.set(f"k{i}", b"v")
        replica.flush(30)
    replica.close(10)
    url = store_url(s3.root, "s")
    assert main(["restore", url, str(tmp_path / "r"), "--until", "4", "--json"]) == 0
    assert '"last_seq": 4' in capsys.readouterr().out
    with Engine.open(tmp_path / "r") as restored:
        assert list(restored.keys()) == ["k0", "k1", "k2", "k3"]
    assert main(["restore", url, str(tmp_path / "t"), "--until", "2000-01-01T00:00:00Z"]) == 0
    with Engine.open(tmp_path / "t") as restored:
        assert len(restored) == 0  # nothing was written before that time
    assert main(["restore", url, str(tmp_path / "u"), "--until", "2999-01-01"]) == 0
    with Engine.open(tmp_path / "u") as restored:
        assert len(restored) == 10
    assert main(["restore", url, str(tmp_path / "v"), "--until", "soon"]) == 2
    capsys.readouterr()
    assert main(["restore", url, str(tmp_path / "r")]) == 2  # not empty
    assert "not empty" in capsys.readouterr().err
    assert main(["restore", store_url(s3.root, "nothing"), str(tmp_path / "n")]) == 2
    assert "no store" in capsys.readouterr().err


@pytest.mark.parametrize(
    "url",
    ["http://bucket/x", "s3://", "s3://B/x", "s3://bucket/a//b", "s3://bucket/../x", "gs://b/x"],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ReplicaError):
        parse_replica_url(url)


async def test_http_endpoint_needs_permission(s3, tmp_path: Path, monkeypatch) -> None:
    if not s3.env:
        pytest.skip("the endpoint under test is not the local http:// server")
    monkeypatch.delenv("LOGKV_REPLICA_ALLOW_HTTP")
    with pytest.raises(ReplicaError, match="plain http"):
        await KeyValueStore.open(name="x", configuration=config(tmp_path), replica_url=s3.root)
    assert not (tmp_path / "key_value_stores" / "x").exists()


async def test_unreachable_endpoint_fails_at_open(s3, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("LOGKV_REPLICA_ALLOW_HTTP", "1")
    with pytest.raises(ReplicaError, match="unreachable"):
        await KeyValueStore.open(name="x", configuration=config(tmp_path), replica_url=s3.root)


async def test_unknown_bucket_fails_at_open(s3, tmp_path: Path) -> None:
    root = s3.root.replace("s3://logkv-", "s3://nobucket-")
    with pytest.raises(ReplicaError):
        await KeyValueStore.open(name="x", configuration=config(tmp_path), replica_url=root)


async def test_takeover_fences_the_old_writer(s3, tmp_path: Path, caplog) -> None:
    """Writer B opens the store that writer A still has open (another machine, same root): B
    restores what A replicated, and warns naming A; A's next upload fails, so A's flush and
    then its writes raise FencedError; nothing A's flush acknowledged is lost."""
    a = await KeyValueStore.open(name="s", configuration=config(tmp_path / "a"),
                                 replica_url=s3.root)  # fmt: skip
    await a.set_value("acked", 1)
    await a.flush_replica(timeout=30)
    b = await KeyValueStore.open(name="s", configuration=config(tmp_path / "b"),
                                 replica_url=s3.root)  # fmt: skip
    try:
        assert "did not close it" in caplog.text
        assert await b.get_value("acked") == 1
        await a.set_value("late", 2)
        with pytest.raises(FencedError):
            await a.flush_replica(timeout=30)
        with pytest.raises(FencedError):
            await a.set_value("later", 3)
        await b.set_value("b", 4)
        assert await b.flush_replica(timeout=30)
    finally:
        await a.close()
        await b.close()


async def test_crawlee_datasets_replicate_through_the_same_store_core(s3, tmp_path) -> None:
    """A dataset of the Crawlee storage client replicates under ``datasets/NAME`` with the same
    setting, and restores."""
    service_locator.storage_instance_manager.clear_cache()
    client = LogKvStorageClient(settings=config(tmp_path / "crawl", replica_url=s3.root))
    crawlee_config = CrawleeConfiguration(storage_dir=str(tmp_path / "crawl"),
                                          purge_on_start=False)  # fmt: skip
    dataset = await Dataset.open(name="items", configuration=crawlee_config, storage_client=client)
    await dataset.push_data([{"n": i} for i in range(30)])
    await client.close()
    service_locator.storage_instance_manager.clear_cache()

    target = tmp_path / "restored"
    restore(open_replica_bucket(f"{s3.root}/datasets/items", allow_http=True), target)
    with Engine.open(target, readonly=True) as engine:
        assert len(engine) >= 30


async def test_a_second_local_writer_fails_on_the_lock_without_fencing(s3, tmp_path) -> None:
    """A second open of a store this machine is writing fails on the store's lock before it
    touches the bucket, so the running writer is not fenced."""
    configuration = config(tmp_path, replica_url=s3.root)
    kvs = await KeyValueStore.open(name="s", configuration=configuration)
    try:
        await kvs.set_value("a", 1)
        location = await DiskStorageClient().locate_kvs(
            select(id=None, name="s", alias=None, default_id="default"), configuration
        )
        with pytest.raises(StoreLockedError):
            EngineStore.open_sync(location, configuration)
        await kvs.set_value("b", 2)
        assert await kvs.flush_replica(timeout=30) == 2
    finally:
        await kvs.close()


async def test_crawlee_request_queues_replicate_too(s3, tmp_path) -> None:
    service_locator.storage_instance_manager.clear_cache()
    client = LogKvStorageClient(settings=config(tmp_path / "crawl", replica_url=s3.root))
    crawlee_config = CrawleeConfiguration(storage_dir=str(tmp_path / "crawl"),
                                          purge_on_start=False)  # fmt: skip
    queue = await RequestQueue.open(name="q", configuration=crawlee_config, storage_client=client)
    await queue.add_requests([f"https://a.invalid/{i}" for i in range(12)])
    request = await queue.fetch_next_request()
    assert request is not None
    await queue.mark_request_as_handled(request)
    await client.close()
    service_locator.storage_instance_manager.clear_cache()

    restore(open_replica_bucket(f"{s3.root}/request_queues/q", allow_http=True),
            tmp_path / "again" / "request_queues" / "q")  # fmt: skip
    client = LogKvStorageClient(settings=config(tmp_path / "again"))
    again = CrawleeConfiguration(storage_dir=str(tmp_path / "again"), purge_on_start=False)
    try:
        queue = await RequestQueue.open(name="q", configuration=again, storage_client=client)
        assert await queue.get_handled_count() == 1
        assert await queue.get_total_count() == 12
    finally:
        await client.close()
        service_locator.storage_instance_manager.clear_cache()
