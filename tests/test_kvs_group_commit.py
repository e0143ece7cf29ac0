"""Durability "fsync" through the async facade: tasks share fdatasyncs, nothing is lost."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from datetime import timedelta
from pathlib import Path

import pytest

from logkv import Configuration, KeyValueStore
from logkv.errors import StoreFailedError, SyncFailedError
from logkv.modes import Durability


def _configuration(tmp_path: Path) -> Configuration:
    return Configuration(
        storage_dir=str(tmp_path),
        purge_on_start=False,
        persist_state_interval=timedelta(hours=1),
        durability=Durability.FSYNC,
    )


async def test_concurrent_tasks_share_fsyncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configuration = _configuration(tmp_path)
    kvs = await KeyValueStore.open(name="grouped", configuration=configuration)
    real = os.fdatasync
    syncs = 0

    def counting(fd: int) -> None:
        nonlocal syncs
        syncs += 1
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counting)

    async def writer(task: int) -> None:
        for i in range(5):
            await kvs.set_value(f"t{task:03d}-{i}", {"task": task, "i": i})
            # durable before visible, and visible once the await returns
            assert await kvs.get_value(f"t{task:03d}-{i}") == {"task": task, "i": i}

    await asyncio.gather(*(writer(t) for t in range(100)))
    deleted = await asyncio.gather(*(kvs.delete_value(f"t{t:03d}-0") for t in range(50)))
    monkeypatch.setattr(os, "fdatasync", real)
    assert all(d is not False for d in deleted)
    writes = 100 * 5 + 50
    assert 0 < syncs < writes / 4, f"{syncs} fdatasyncs for {writes} writes: no group commit"
    await kvs.close()

    kvs = await KeyValueStore.open(name="grouped", configuration=configuration)
    keys = [info.key async for info in kvs.iterate_keys()]
    assert len(keys) == 500 - 50  # 500 keys set, 50 of them deleted
    assert await kvs.get_value("t001-0") is None
    assert await kvs.get_value("t099-4") == {"task": 99, "i": 4}
    await kvs.close()


async def test_failed_fsync_fails_the_waiting_tasks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kvs = await KeyValueStore.open(name="failing", configuration=_configuration(tmp_path))
    await kvs.set_value("safe", "synced")

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "simulated EIO")

    monkeypatch.setattr(os, "fdatasync", failing)
    results = await asyncio.gather(
        *(kvs.set_value(f"lost-{i}", i) for i in range(10)), return_exceptions=True
    )
    assert results and all(isinstance(r, StoreFailedError) for r in results)
    assert any(isinstance(r, SyncFailedError) and r.errno == errno.EIO for r in results)
    assert await kvs.get_value("lost-0") is None  # never made visible
    assert await kvs.get_value("safe") == "synced"
    monkeypatch.undo()
    with pytest.raises(StoreFailedError):  # the store refuses writes until reopened
        await kvs.set_value("after", 1)
    with contextlib.suppress(StoreFailedError):
        await kvs.close()  # it cannot persist into a failed store, but it releases the lock
    reopened = await KeyValueStore.open(name="failing", configuration=_configuration(tmp_path))
    assert await reopened.get_value("safe") == "synced"
    await reopened.close()
