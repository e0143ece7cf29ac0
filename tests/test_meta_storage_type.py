"""``META.json``'s ``storage`` field: stores written before datasets and request queues were
logkv stores have none and are key-value stores; a folder opened as another type is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from crawlee.configuration import Configuration as CrawleeConfiguration
from crawlee.storages import Dataset, KeyValueStore, RequestQueue

from logkv.crawlee import LogKvStorageClient
from logkv.storage_clients._meta import StoreMeta, read_meta

FIXTURES = Path(__file__).parent / "fixtures" / "v1"

#: ``META.json`` exactly as logkv wrote it before the ``storage`` field existed.
EARLIER_META = b"""{
  "accessed_at": 1764590000.0,
  "alias": null,
  "created_at": 1764590000.0,
  "format": "logkv-key-value-store",
  "id": "AbCdEfGhIjKlMnOpQ",
  "kind": "named",
  "modified_at": 1764590000.0,
  "name": "shop",
  "version": 1
}
"""


def _earlier_store(storage_dir: Path, folder: str) -> Path:
    """A store of the earlier release (its log is the version-1 fixture) in ``folder``."""
    path = storage_dir / folder / "shop"
    shutil.copytree(FIXTURES / "log", path)
    (path / "META.json").write_bytes(EARLIER_META)
    return path


def test_earlier_metadata_is_a_key_value_stores() -> None:
    meta = StoreMeta.from_bytes(EARLIER_META, Path("META.json"))
    assert meta.storage == "key_value_store"
    assert b'"storage": "key_value_store"' in meta.to_bytes()


def test_an_unknown_storage_type_is_refused() -> None:
    with pytest.raises(Exception, match="unknown storage type 'table'"):
        StoreMeta.from_bytes(
            EARLIER_META.replace(b'"version": 1', b'"storage": "table", "version": 1'),
            Path("META.json"),
        )


async def test_an_earlier_store_opens_as_a_key_value_store(tmp_path: Path) -> None:
    path = _earlier_store(tmp_path, "key_value_stores")
    configuration = CrawleeConfiguration(storage_dir=str(tmp_path), purge_on_start=False)
    client = LogKvStorageClient()
    try:
        kvs = await KeyValueStore.open(
            name="shop", storage_client=client, configuration=configuration
        )
        assert await kvs.record_exists("k002")
        assert not await kvs.record_exists("k005")  # deleted in the earlier release
        assert (await kvs.get_metadata()).id == "AbCdEfGhIjKlMnOpQ"
    finally:
        await client.close()
    meta = read_meta(path)
    assert meta is not None and meta.storage == "key_value_store"


@pytest.mark.parametrize("opener", [Dataset.open, RequestQueue.open], ids=["dataset", "queue"])
async def test_a_key_value_store_is_not_opened_as_a_dataset_or_queue(
    tmp_path: Path, opener: object
) -> None:
    for folder in ("datasets", "request_queues"):
        _earlier_store(tmp_path, folder)
    configuration = CrawleeConfiguration(storage_dir=str(tmp_path), purge_on_start=False)
    client = LogKvStorageClient()
    try:
        with pytest.raises(ValueError, match="holds a logkv key-value store; it cannot be opened"):
            await opener(name="shop", storage_client=client, configuration=configuration)  # type: ignore[operator]
    finally:
        await client.close()
