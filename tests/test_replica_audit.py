"""Audits straight from the bucket: ``logkv stats|verify|history|replay|dump s3://...`` give the
output and exit status they give on the writer's own folder, and a gap or a damaged object in
the bucket copy is damage (docs/FORMAT.md, section 13.6)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from crawlee import service_locator
from crawlee.configuration import Configuration as CrawleeConfiguration
from crawlee.storages import Dataset, RequestQueue

from logkv import Configuration, Engine, KeyValueStore
from logkv.cli.main import main
from logkv.crawlee import LogKvStorageClient

pytest.importorskip("obstore")

import obstore

from logkv.replica import Bucket, open_replica_bucket
from logkv.replica.remote import BucketFiles, remote_store
from logkv.replica.slots import decode_slot, fold_slots, slot_name


def config(storage: Path) -> Configuration:
    return Configuration(storage_dir=str(storage), purge_on_start=False, replica_interval=0.05)


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


async def written_store(s3, tmp_path: Path, *, compact: bool = False) -> tuple[Path, str]:
    """A replicated store with sets, deletes and overwrites (compacted halfway when asked),
    closed cleanly; its folder and its bucket URL."""
    kvs = await KeyValueStore.open(
        name="pages", configuration=config(tmp_path / "writer"), replica_url=s3.root
    )
    for i in range(120):
        await kvs.set_value(f"k{i:03d}", {"i": i, "pad": "x" * 40})
    if compact:
        await kvs.delete_value("k003")
        await kvs.compact()
    for i in range(0, 120, 7):
        await kvs.set_value(f"k{i:03d}", {"i": -i})
    await kvs.delete_value("k005")
    await kvs.flush_replica(timeout=30)
    folder = kvs.path
    await kvs.close()
    assert folder is not None
    return folder, f"{s3.root}/key_value_stores/pages"


@pytest.mark.slow
@pytest.mark.parametrize("compact", [False, True])
async def test_audits_on_the_bucket_equal_those_on_the_folder(
    s3, tmp_path: Path, capsys: pytest.CaptureFixture[str], compact: bool
) -> None:
    folder, url = await written_store(s3, tmp_path, compact=compact)
    commands = [
        ["stats", "--json"],
        ["stats"],
        ["verify", "--json"],
        ["verify"],
        ["history", "k007", "--json", "--values"],
        ["history", "k003"],
        ["dump", "--json", "--values"],
    ]
    for command in commands:
        local = cli([command[0], str(folder), *command[1:]], capsys)
        remote = cli([command[0], url, *command[1:]], capsys)
        shown = tuple(part.replace(str(folder), url) for part in (local[1], local[2]))
        assert (remote[0], remote[1], remote[2]) == (local[0], *shown), command
        assert local[0] == 0
    verified = json.loads(cli(["verify", url, "--json"], capsys)[1])
    assert verified["ok"] and verified["store"] == url and verified["keys_read"] == 119 - compact


@pytest.mark.slow
async def test_replay_from_the_bucket(
    s3, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, url = await written_store(s3, tmp_path)
    code, _, _ = cli(["replay", str(folder), "--until", "100", "--to", str(tmp_path / "l")], capsys)
    assert code == 0
    code, out, _ = cli(["replay", url, "--until", "100", "--to", str(tmp_path / "r")], capsys)
    assert code == 0 and url in out
    local, remote = (contents(tmp_path / side) for side in "lr")
    assert local == remote and len(local) == 100


def contents(folder: Path) -> dict[str, bytes | None]:
    with Engine.open(folder, readonly=True) as engine:
        keys = list(engine.keys())
        return {key: engine.get(key) for key in keys}


async def test_a_missing_data_object_or_slot_is_damage(
    s3, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, url = await written_store(s3, tmp_path)
    bucket = open_replica_bucket(url, allow_http=True)
    folded = fold_slots(bucket)
    piece = next(p for pieces in folded.files.values() for p in pieces)
    data = bucket.get(piece.name)
    obstore.delete(bucket.store, f"{bucket.root}/{piece.name}")
    for command in (["verify"], ["stats"], ["history", "k001"], ["restore", tmp_path / "r"]):
        code, _, err = cli([command[0], url, *map(str, command[1:])], capsys)
        assert code == 1, command
        assert "is missing: the bucket copy has a gap" in err
    assert not (tmp_path / "r").exists()  # a refused restore leaves nothing
    # the object back, but damaged: its SHA-256 no longer matches the slot's
    obstore.put(bucket.store, f"{bucket.root}/{piece.name}", data[:-1] + b"\x00")
    code, _, err = cli(["verify", url], capsys)
    assert code == 1 and "is damaged" in err
    obstore.put(bucket.store, f"{bucket.root}/{piece.name}", data)
    assert cli(["verify", url], capsys)[0] == 0
    # a slot in the middle gone: the sequence has a hole
    middle = slot_name(2)
    assert decode_slot(bucket.get(middle), middle).kind
    obstore.delete(bucket.store, f"{bucket.root}/{middle}")
    code, _, err = cli(["verify", url], capsys)
    assert code == 1 and "slot 2 is missing" in err


@pytest.mark.slow
async def test_dataset_and_request_queue_from_the_bucket(
    s3, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``datasets/NAME`` and ``request_queues/NAME`` copies audit like key-value stores."""
    service_locator.storage_instance_manager.clear_cache()
    storage = tmp_path / "crawl"
    settings = Configuration(
        storage_dir=str(storage), purge_on_start=False, replica_interval=0.05, replica_url=s3.root
    )
    client = LogKvStorageClient(settings=settings)
    crawlee_config = CrawleeConfiguration(storage_dir=str(storage), purge_on_start=False)
    dataset = await Dataset.open(name="items", configuration=crawlee_config, storage_client=client)
    await dataset.push_data([{"n": i} for i in range(30)])
    queue = await RequestQueue.open(name="q", configuration=crawlee_config, storage_client=client)
    await queue.add_requests([f"https://example.com/{i}" for i in range(5)])
    await client.close()
    service_locator.storage_instance_manager.clear_cache()
    for relative in ("datasets/items", "request_queues/q"):
        url, folder = f"{s3.root}/{relative}", storage / relative
        for command in (["stats", "--json"], ["verify"]):
            local = cli([command[0], str(folder), *command[1:]], capsys)
            remote = cli([command[0], url, *command[1:]], capsys)
            assert local[0] == 0 and remote[0] == 0
            assert remote[1] == local[1].replace(str(folder), url), (relative, command)


def test_no_store_and_an_unreachable_endpoint(
    s3, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = cli(["stats", f"{s3.root}/key_value_stores/nothing"], capsys)
    assert code == 2 and "no store was ever replicated here" in err
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    code, _, err = cli(["verify", f"{s3.root}/key_value_stores/pages"], capsys)
    assert code == 4 and "cannot read the bucket copy" in err
