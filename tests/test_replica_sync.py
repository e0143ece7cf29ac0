"""Against a real S3 protocol server (moto, or ``LOGKV_TEST_S3_URL``): the ``replica_sync``
durability level acknowledges only writes committed in the bucket (also across ``kill -9``),
``flush_replica`` for Crawlee datasets and request queues and through ``LogKvStorageClient``,
replication lag in ``logkv stats``, and ``logkv replica-gc``."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest
from crawlee import service_locator
from crawlee.configuration import Configuration as CrawleeConfiguration
from crawlee.storages import Dataset, RequestQueue

from logkv import Configuration, Engine, KeyValueStore
from logkv.cli.main import main
from logkv.crawlee import LogKvStorageClient

pytest.importorskip("obstore")

from test_replica_kill9 import lose_machine

from logkv.replica import Replica, open_replica_bucket, restore, store_bucket
from logkv.replica.slots import fold_slots
from logkv.replica.url import parse_replica_url

REPO = Path(__file__).resolve().parent.parent


def config(storage: Path, **extra: object) -> Configuration:
    return Configuration(storage_dir=str(storage), purge_on_start=False, **extra)


def bucket_seq(root: str, relative: str) -> int:
    return fold_slots(open_replica_bucket(f"{root}/{relative}", allow_http=True)).seq


async def test_replica_sync_acknowledges_only_committed_writes(s3, tmp_path: Path) -> None:
    """With a 30 s interval, each write still returns within a few seconds (a waiting writer
    makes the shipper ship at once), and when it returns the bucket holds it."""
    configuration = config(tmp_path, replica_url=s3.root, replica_sync=True, replica_interval=30.0)
    kvs = await KeyValueStore.open(name="sync", configuration=configuration)
    try:
        for i in range(5):
            started = time.monotonic()
            await kvs.set_value(f"k{i}", i)
            assert time.monotonic() - started < 10
            assert bucket_seq(s3.root, "key_value_stores/sync") >= i + 1
        await kvs.delete_value("k0")
        assert bucket_seq(s3.root, "key_value_stores/sync") >= 6
        await kvs.purge()
        info = await kvs.get_info()
        assert info.replication_lag_records == 0
        assert bucket_seq(s3.root, "key_value_stores/sync") == info.last_seq
    finally:
        await kvs.close()


WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from logkv import Configuration, KeyValueStore

    async def main():
        configuration = Configuration(storage_dir=sys.argv[1], purge_on_start=False,
                                      replica_sync=True, replica_interval=5.0)
        kvs = await KeyValueStore.open(name="crawl", configuration=configuration,
                                       replica_url=sys.argv[2])
        i = 0
        while True:
            await kvs.set_value(f"k{i:06d}", i)
            print(f"acked {i}", flush=True)
            i += 1

    asyncio.run(main())
    """
)


@pytest.mark.slow
def test_replica_sync_acks_survive_kill9(s3, tmp_path: Path, children) -> None:
    """kill -9 right after an acknowledgement, the folder deleted: a restore holds every
    acknowledged write."""
    acked = lose_machine(WRITER, tmp_path / "machine", s3, children, 30)
    restore(
        open_replica_bucket(f"{s3.root}/key_value_stores/crawl", allow_http=True), tmp_path / "r"
    )
    with Engine.open(tmp_path / "r", readonly=True) as engine:
        keys = list(engine.keys())
    assert len(keys) >= acked + 1
    assert keys == [f"k{i:06d}" for i in range(len(keys))]


async def test_flush_replica_for_datasets_queues_and_the_storage_client(s3, tmp_path) -> None:
    service_locator.storage_instance_manager.clear_cache()
    client = LogKvStorageClient(
        settings=config(tmp_path / "crawl", replica_url=s3.root, replica_interval=30.0)
    )
    crawlee_config = CrawleeConfiguration(storage_dir=str(tmp_path / "crawl"),
                                          purge_on_start=False)  # fmt: skip
    try:
        dataset = await Dataset.open(name="items", configuration=crawlee_config,
                                     storage_client=client)  # fmt: skip
        queue = await RequestQueue.open(name="q", configuration=crawlee_config,
                                        storage_client=client)  # fmt: skip
        await dataset.push_data([{"n": i} for i in range(10)])
        dataset_seq = await client._opened_datasets[0].flush_replica(timeout=30)
        assert dataset_seq is not None
        assert bucket_seq(s3.root, "datasets/items") == dataset_seq
        await queue.add_requests([f"https://a.invalid/{i}" for i in range(5)])
        assert await client._opened_queues[0].flush_replica(timeout=30) is not None
        await dataset.push_data({"n": 10})
        assert await client.flush_replica(timeout=30) == 2
        assert bucket_seq(s3.root, "datasets/items") > dataset_seq
        engine = client._opened_queues[0].engine
        assert bucket_seq(s3.root, "request_queues/q") == engine.last_seq
    finally:
        await client.close()
        service_locator.storage_instance_manager.clear_cache()


def test_stats_reports_replication_lag(s3, tmp_path: Path, capsys, monkeypatch) -> None:
    folder = tmp_path / "key_value_stores" / "s"
    bucket = store_bucket(parse_replica_url(s3.root), "key_value_stores/s", allow_http=True)
    replica = Replica.claim(bucket, folder, 0.05)
    with Engine.open(folder) as engine:
        replica.start(engine)
        for i in range(10):
            engine.set(f"k{i}", b"v")
        replica.flush(30)
    replica.close(10)
    with Engine.open(folder) as engine:  # written locally, not replicated
        for i in range(3):
            engine.set(f"late{i}", b"v")
    monkeypatch.setenv("LOGKV_REPLICA_URL", s3.root)
    monkeypatch.setenv("CRAWLEE_STORAGE_DIR", str(tmp_path))
    assert main(["stats", str(folder), "--json"]) == 0
    lag = json.loads(capsys.readouterr().out)["replication_lag"]
    assert lag["records"] == 3 and lag["bucket_seq"] == 10 and lag["seconds"] >= 0
    assert main(["stats", str(folder)]) == 0
    assert "3 records" in capsys.readouterr().out
    monkeypatch.delenv("LOGKV_REPLICA_URL")
    assert main(["stats", str(folder), "--json"]) == 0
    assert "replication_lag" not in capsys.readouterr().out


def test_cli_replica_gc(s3, tmp_path: Path, capsys) -> None:
    bucket = store_bucket(parse_replica_url(s3.root), "key_value_stores/g", allow_http=True)
    replica = Replica.claim(bucket, tmp_path / "g", 0.05)
    with Engine.open(tmp_path / "g", segment_size=4096) as engine:
        replica.start(engine)
        for round_ in range(3):
            for i in range(100):
                engine.set(f"k{i % 30}", f"{round_}-{i}".encode() * 6)
            engine.compact()
            replica.flush(30)
    replica.close(10)
    url = f"{s3.root}/key_value_stores/g"
    args = ["replica-gc", url, "--keep-snapshots", "1", "--keep-for", "0", "--json"]
    assert main([*args, "--dry-run"]) == 0
    planned = json.loads(capsys.readouterr().out)
    assert planned["retired"] > 0 and planned["dry_run"]
    assert main([*args, "--grace", "3600"]) == 0
    assert json.loads(capsys.readouterr().out)["deleted"] == 0
    assert main([*args, "--grace", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["deleted"] == planned["retired"]
    restore(open_replica_bucket(url, allow_http=True), tmp_path / "r")
    with Engine.open(tmp_path / "r") as restored:
        assert len(restored) == 30
    assert main(["replica-gc", f"{s3.root}/key_value_stores/none"]) == 2
