"""Audits straight from the bucket: ``logkv stats|verify|history|replay|dump s3://...`` give the
output and exit status they give on the writer's own folder, and a gap or a damaged object in
the bucket copy is damage (docs/FORMAT.md, section 13.6)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from crawlee import service_locator
from crawlee.configuration import Configuration as CrawleeConfiguration
from crawlee.storages import Dataset, RequestQueue

from logkv import Configuration, CorruptionError, Engine, KeyValueStore, ReplicaGapError
from logkv.cli.audit import key_changes, store_figures, verify_store
from logkv.cli.main import main
from logkv.crawlee import LogKvStorageClient

pytest.importorskip("obstore")

import obstore

from logkv.replica import Bucket, open_replica_bucket
from logkv.replica.remote import BucketFiles, remote_store
from logkv.replica.slots import decode_slot, fold_slots, slot_name
from logkv.verify import verify


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


# ------------------------------------------------------------------ range reads (MemoryStore)

MEMORY_ROOT = "crawl/key_value_stores/pages"


def replicated(folder: Path, *, keys: int, value: int, compact: bool) -> Bucket:
    """A store of ``keys`` random values of ``value`` bytes over many 256 KiB segments,
    compacted (then a few more writes) when asked, shipped to an in-memory bucket and closed."""
    from obstore.store import MemoryStore  # noqa: PLC0415

    from logkv.replica import Replica  # noqa: PLC0415

    bucket = Bucket(MemoryStore(), MEMORY_ROOT, f"memory://{MEMORY_ROOT}")
    replica = Replica.claim(bucket, folder, 0.02)
    engine = Engine.open(folder, segment_size=256 * 1024)
    replica.start(engine)
    try:
        for i in range(keys):
            engine.set(f"k{i:05d}", os.urandom(value))
        if compact:
            engine.compact()
            for i in range(0, keys, 97):
                engine.set(f"k{i:05d}", os.urandom(value))
            engine.delete("k00001")
    finally:
        engine.close()
        replica.close(10)
    return bucket


def committed_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.suffix in (".seg", ".snap"))


def fetched(source: Path) -> int:
    assert isinstance(source.files, BucketFiles)  # type: ignore[attr-defined]
    return int(source.files.counts.bytes)  # type: ignore[attr-defined]


def shown(value: object, folder: Path, url: str) -> str:
    return repr(value).replace(str(folder), url).replace("PosixPath", "SourcePath")


@pytest.mark.slow
def test_history_of_one_key_fetches_a_small_fraction(tmp_path: Path) -> None:
    """Of a store of many segments folded into a snapshot, the history of one key fetches the
    snapshot's blocks, the key's record and the few segments after it: a small fraction."""
    folder = tmp_path / "s"
    bucket = replicated(folder, keys=3000, value=1000, compact=True)
    total = committed_bytes(folder)
    assert total > 3_000_000
    for key in ("k00194", "k00001", "k00500", "nothing"):
        with remote_store(bucket) as source:
            remote = key_changes(source, key)
            assert fetched(source) < total / 8, key
        assert repr(remote) == shown(key_changes(folder, key), folder, str(source))


@pytest.mark.slow
def test_audits_read_each_byte_about_once_in_bounded_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checksum and chain pass of verify fetches each committed byte about once, stats
    fetch the log after the snapshot and the snapshot's blocks only, and the whole of
    ``logkv verify`` (checksums, replay, every value read back) holds far less than the store
    in memory at any time: windows and a read-ahead cache much smaller than the store."""
    import tracemalloc  # noqa: PLC0415

    from logkv.replica import remote  # noqa: PLC0415

    monkeypatch.setattr("logkv.scan.SCAN_WINDOW", 128 * 1024)
    monkeypatch.setattr(remote, "MAX_READ_AHEAD", 128 * 1024)
    monkeypatch.setattr(remote, "CACHE_BYTES", 512 * 1024)
    for compact in (False, True):
        folder = tmp_path / f"s{compact}"
        bucket = replicated(folder, keys=1500, value=8000, compact=compact)
        total = committed_bytes(folder)
        with remote_store(bucket) as source:
            assert verify(source).ok
            assert total <= fetched(source) <= total * 1.1
        with remote_store(bucket) as source:
            figures = store_figures(source)
            assert shown(store_figures(folder), folder, str(source)) == repr(figures)
            if compact:
                assert fetched(source) < total / 4
        with remote_store(bucket) as source:
            tracemalloc.start()
            try:
                outcome = verify_store(source)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert outcome.ok and outcome.keys_read == len(contents(folder))
            assert peak < total / 4, (peak, total)  # the index and the replayed digests


def test_a_damaged_or_short_piece_is_damage(tmp_path: Path) -> None:
    """A bit flipped in a data object, or an object cut short: a read that covers the whole
    object fails its SHA-256 or length (ReplicaGapError), a range read of part of it fails
    the CRC of the record read (CorruptionError), never a wrong answer."""
    folder = tmp_path / "s"
    bucket = replicated(folder, keys=400, value=300, compact=True)
    folded = fold_slots(bucket)
    snapshot = next(f for f in folded.files if f.endswith(".snap"))
    piece = folded.files[snapshot][-1]
    data = bucket.get(piece.name)
    flipped = bytearray(data)
    flipped[200] ^= 0x04  # inside the first records of the snapshot
    path = f"{bucket.root}/{piece.name}"
    obstore.put(bucket.store, path, bytes(flipped))
    with remote_store(bucket) as source:
        assert "checksum" in " ".join(verify(source).problems or [])
    with remote_store(bucket) as source:
        (damaged,) = [k for k in keys_near_the_start(folder, 200)]
        with pytest.raises(CorruptionError):
            key_changes(source, damaged)
    obstore.put(bucket.store, path, data[:-10])
    with remote_store(bucket) as source, pytest.raises(ReplicaGapError, match="is damaged"):
        verify_store(source)
    obstore.put(bucket.store, path, data[:100])  # a range read starts past its end
    with remote_store(bucket) as source, pytest.raises(ReplicaGapError, match="is damaged"):
        key_changes(source, "k00399")
    obstore.put(bucket.store, path, data)
    with remote_store(bucket) as source:
        assert verify_store(source).ok


def keys_near_the_start(folder: Path, offset: int) -> list[str]:
    """The keys whose snapshot record holds byte ``offset`` of the snapshot."""
    from logkv.layout import list_snapshots  # noqa: PLC0415
    from logkv.replay import frame_length  # noqa: PLC0415
    from logkv.snapshot import load_snapshot  # noqa: PLC0415

    covers, path = list_snapshots(folder)[-1]
    _, entries = load_snapshot(path, covers)
    return [k for k, e in entries.items() if e[1] <= offset < e[1] + frame_length(e)]
