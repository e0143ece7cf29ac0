"""The store core under both APIs: one registry of open stores, one rule for purge on start,
the same timestamps, upkeep and failures whichever client serves a store, and the old client
names still importable."""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from crawlee import service_locator
from crawlee.configuration import Configuration as CrawleeConfiguration
from crawlee.storages import KeyValueStore as CrawleeKeyValueStore

import logkv.storage_clients as storage_clients
from logkv import Configuration, DiskStorageClient, KeyValueStore
from logkv.crawlee import LogKvStorageClient
from logkv.layout import KVS_DIR
from logkv.registry import OpenStores, PurgeRule, open_key, purge_on_start
from logkv.storage_clients import DiskKeyValueStoreClient
from logkv.storage_clients._base import timestamp
from logkv.storage_clients._meta import read_meta

pytestmark = pytest.mark.usefixtures("clean_environment")


def configuration(storage_dir: Path, **options: Any) -> Configuration:
    options.setdefault("purge_on_start", False)
    options.setdefault("persist_state_interval", timedelta(hours=1))
    return Configuration(storage_dir=str(storage_dir), **options)


# ---------------------------------------------------------------- names


def test_old_client_names_import_with_a_warning() -> None:
    with pytest.warns(DeprecationWarning, match="use DiskStorageClient"):
        from logkv import LogStorageClient  # noqa: PLC0415 (the import is what warns)
    assert LogStorageClient is DiskStorageClient
    with pytest.warns(DeprecationWarning, match="use DiskKeyValueStoreClient"):
        old = storage_clients.LogKeyValueStoreClient
    assert old is DiskKeyValueStoreClient
    sys.modules.pop("logkv.storage_clients.log", None)
    with pytest.warns(DeprecationWarning, match="logkv.storage_clients.log is deprecated"):
        module = importlib.import_module("logkv.storage_clients.log")
    assert module.LogStorageClient is DiskStorageClient
    with pytest.raises(AttributeError):
        _ = storage_clients.NoSuchClient


# ---------------------------------------------------------------- the registry


async def test_concurrent_opens_run_one_opener_and_share_its_item() -> None:
    registry: OpenStores[object] = OpenStores()
    calls: list[int] = []

    async def opener() -> object:
        calls.append(1)
        await asyncio.sleep(0.01)
        return object()

    opened = await asyncio.gather(*(registry.open("k", opener) for _ in range(5)))
    assert len(calls) == 1
    assert len({id(item) for item, _ in opened}) == 1
    assert sorted(fresh for _, fresh in opened) == [False] * 4 + [True]
    item = opened[0][0]
    assert registry.items() == [item]
    registry.forget("k", object())  # not the registered item: nothing happens
    assert registry.items() == [item]
    registry.forget("k", item)
    assert registry.items() == []


async def test_a_failed_open_registers_nothing_and_the_next_open_tries_again() -> None:
    registry: OpenStores[str] = OpenStores(reusable=lambda item: item != "closed")

    async def failing() -> str:
        raise OSError("no")

    async def opening(item: str) -> str:
        return item

    with pytest.raises(OSError):
        await registry.open("k", failing)
    assert await registry.open("k", lambda: opening("closed")) == ("closed", True)
    # A registered item that may not be reused any more is replaced by a new open.
    assert await registry.open("k", lambda: opening("open")) == ("open", True)
    assert await registry.open("k", lambda: opening("other")) == ("open", False)


def test_items_still_open_at_exit_are_closed_despite_failures() -> None:
    closed: list[str] = []

    def close(item: str) -> None:
        closed.append(item)
        if item == "a":
            raise OSError("nothing could report this")

    registry: OpenStores[str] = OpenStores(at_exit=close)

    async def fill() -> None:
        for item in ("a", "b"):

            async def opener(item: str = item) -> str:
                return item

            await registry.open(item, opener)

    asyncio.run(fill())
    registry._close_at_exit()
    assert closed == ["a", "b"]


def test_purge_on_start_is_claimed_once_per_key_for_unnamed_stores_only() -> None:
    key = ("test", object())
    assert not purge_on_start(key, enabled=False, name=None)
    assert not purge_on_start(key, enabled=True, name="named")
    assert not purge_on_start(key, enabled=True, name=None, readonly=True)
    assert purge_on_start(key, enabled=True, name=None)
    assert not purge_on_start(key, enabled=True, name=None)


def test_purge_on_start_under_crawlees_rule_purges_every_open_and_is_remembered() -> None:
    key = ("test", object())
    every = PurgeRule.EVERY_OPEN
    assert not purge_on_start(key, enabled=False, name=None, rule=every)
    assert not purge_on_start(key, enabled=True, name="named", rule=every)
    assert not purge_on_start(key, enabled=True, name=None, rule=every, readonly=True)
    assert purge_on_start(key, enabled=True, name=None, rule=every)
    assert purge_on_start(key, enabled=True, name=None, rule=every)
    # logkv's rule then finds the store purged by this process already.
    assert not purge_on_start(key, enabled=True, name=None)


def test_read_only_opens_are_registered_apart_from_writable_ones() -> None:
    key = ("test", "folder")
    assert open_key(key, readonly=False) == key
    assert open_key(key, readonly=True) != key
    assert open_key(key, readonly=True) == open_key(key, readonly=True)


async def test_each_api_purges_an_unnamed_store_by_its_own_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """logkv's ``KeyValueStore`` purges once per process, and not a store the Crawlee adapter
    purged; the Crawlee adapter purges at every open that reaches it, as Crawlee does."""
    storage_dir = tmp_path / "storage"
    crawlee_configuration = CrawleeConfiguration(storage_dir=str(storage_dir), purge_on_start=True)
    monkeypatch.setattr(CrawleeKeyValueStore, "_autosaved_values", {})
    service_locator.storage_instance_manager.clear_cache()
    client = LogKvStorageClient(settings=Configuration(auto_compact=False))
    try:
        crawlee_store = await client.create_kvs_client(
            alias="run", configuration=crawlee_configuration
        )
        await crawlee_store.set_value(key="k", value={"from": "crawlee"})
        await client.close()
        kvs = await KeyValueStore.open(
            alias="run", configuration=configuration(storage_dir, purge_on_start=True)
        )
        assert await kvs.get_value("k") == {"from": "crawlee"}  # purged once already: kept
        await kvs.set_value("k", {"from": "logkv"})
        await kvs.close()
        crawlee_store = await client.create_kvs_client(
            alias="run", configuration=crawlee_configuration
        )
        assert await crawlee_store.get_value(key="k") is None  # Crawlee's rule: purged again
    finally:
        await client.close()
        service_locator.storage_instance_manager.clear_cache()


# ---------------------------------------------------------------- one behaviour for both APIs


async def test_opening_counts_as_an_access_saved_with_the_next_save(tmp_path: Path) -> None:
    settings = configuration(tmp_path / "storage")
    kvs = await KeyValueStore.open(name="stamps", configuration=settings)
    await kvs.close()
    folder = tmp_path / "storage" / KVS_DIR / "stamps"
    meta = read_meta(folder)
    assert meta is not None
    kvs = await KeyValueStore.open(name="stamps", configuration=settings)
    opened = await kvs.get_metadata()
    assert opened.accessed_at > timestamp(meta.accessed_at)
    assert opened.modified_at == timestamp(meta.modified_at)
    assert read_meta(folder) == meta  # not written by the open itself
    await kvs.close()
    saved = read_meta(folder)
    assert saved is not None
    assert timestamp(saved.accessed_at) == opened.accessed_at


async def test_a_purge_saves_the_timestamps_at_once(tmp_path: Path) -> None:
    kvs = await KeyValueStore.open(name="purged", configuration=configuration(tmp_path))
    try:
        await kvs.set_value("k", 1)
        await kvs.purge()
        assert kvs.path is not None
        saved = read_meta(kvs.path)
        assert saved is not None
        assert timestamp(saved.modified_at) == (await kvs.get_metadata()).modified_at
    finally:
        await kvs.close()


async def test_a_failed_automatic_compaction_is_logged_and_the_store_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = configuration(tmp_path, compaction_min_dead_bytes=1, compaction_min_dead_ratio=0.01)
    kvs = await KeyValueStore.open(name="failing", configuration=settings)
    try:
        for round_ in range(3):
            await kvs.set_value("k", {"round": round_})
        client = kvs._client
        assert isinstance(client, DiskKeyValueStoreClient)

        def failing_compact(*args: Any) -> None:
            raise OSError("injected compaction failure")

        client.engine.compact = failing_compact  # type: ignore[method-assign,assignment]
        assert kvs.event_manager is not None
        with caplog.at_level(logging.ERROR, logger="logkv"):
            await kvs.event_manager.persist_state()
        assert "injected compaction failure" in caplog.text
        assert "compaction of" in caplog.text
        assert await kvs.get_value("k") == {"round": 2}
    finally:
        await kvs.close()
