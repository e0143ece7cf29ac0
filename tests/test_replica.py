"""Replication to object storage against a real S3 protocol server (moto, or the endpoint of
``LOGKV_TEST_S3_URL``): shipping and restoring, ``--until``, compaction while replicating, the
endpoint down, bad URLs and refused endpoints (docs/FORMAT.md, section 13)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from logkv import Configuration, KeyValueStore, ReplicaError
from logkv.layout import list_segments, segment_name
from logkv.verify import verify

pytest.importorskip("obstore")

from logkv.replica import open_replica_bucket, restore  # noqa: E402
from logkv.replica.slots import fold_slots  # noqa: E402


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
