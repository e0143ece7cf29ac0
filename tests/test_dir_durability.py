"""Under ``durability="fsync"``, a new store survives a power loss: every folder an open creates
has its entry made durable (its parent ``fsync``ed) before the open returns, and so do the new
files of the store (``LOCK``, the first segment, ``META.json``).

``os.fsync`` is patched to record which folders were synced, in order.
"""

from __future__ import annotations

import os
import stat
from datetime import timedelta
from pathlib import Path

import pytest

from logkv import Configuration, Engine, KeyValueStore
from logkv.fsutil import make_dirs


def record_dir_syncs(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record the folders ``os.fsync`` is called on (files are synced as before)."""
    real_fsync = os.fsync
    synced: list[Path] = []

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            synced.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


def test_make_dirs_durable_syncs_the_parent_of_each_folder_it_creates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a").mkdir()
    synced = record_dir_syncs(monkeypatch)
    created = make_dirs(tmp_path / "a" / "b" / "c", durable=True)
    assert created == [tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"]
    assert synced == [tmp_path / "a", tmp_path / "a" / "b"]
    synced.clear()
    assert make_dirs(tmp_path / "a" / "b" / "c", durable=True) == []
    assert synced == []


def test_a_new_store_under_fsync_syncs_every_new_folder_before_open_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = tmp_path / "storage"
    store = storage / "key_value_stores" / "crawl"
    synced = record_dir_syncs(monkeypatch)
    engine = Engine.open(store, durability="fsync")
    try:
        # The entries of storage/, key_value_stores/ and crawl/ (in their parents), and those
        # of LOCK and the first segment (in crawl/) are durable before the first write.
        assert {tmp_path, storage, storage / "key_value_stores", store} <= set(synced)
        assert synced.index(storage / "key_value_stores") < synced.index(store)
        engine.set("a", b"1")
    finally:
        engine.close()


def test_process_durability_creates_folders_without_syncing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced = record_dir_syncs(monkeypatch)
    with Engine.open(tmp_path / "x" / "store") as engine:
        engine.set("a", b"1")
        assert synced == []  # neither the new folders nor the write
    # a clean close syncs the log and records the synced mark, a new file in the store folder
    assert synced == [tmp_path / "x" / "store"]


async def test_a_new_store_of_the_async_api_under_fsync_is_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configuration = Configuration(
        storage_dir=str(tmp_path / "storage"),
        purge_on_start=False,
        persist_state_interval=timedelta(hours=1),
        durability="fsync",
    )
    synced = record_dir_syncs(monkeypatch)
    kvs = await KeyValueStore.open(name="crawl", configuration=configuration)
    try:
        store = tmp_path / "storage" / "key_value_stores" / "crawl"
        assert {tmp_path, tmp_path / "storage", store.parent, store} <= set(synced)
        assert (store / "META.json").is_file()
        # META.json's entry was synced after it was written (atomic_write syncs its folder).
        assert synced[-1] == store
    finally:
        await kvs.close()
