"""close() racing writers: every write already appended is acknowledged or fails, every write
that starts after close raises StoreClosedError, and no writer ever waits forever (close racing
a group commit's leader: tests/test_group_commit_leader.py)."""

from __future__ import annotations

import asyncio
import os
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from logkv import Configuration, KeyValueStore
from logkv.engine import Engine
from logkv.errors import StoreClosedError
from logkv.modes import Durability

#: Long enough for any healthy wait here; a stranded writer fails the test instead of hanging.
_PATIENCE = 10.0


def test_writers_blocked_in_fdatasync_while_close_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sync is in progress (paused), writers queue the next batch, close() begins: the queued
    writes are synced and acknowledged, later ones refused, and all of it is there on reopen."""
    folder = tmp_path / "s"
    engine = Engine.open(folder, durability=Durability.FSYNC)
    engine.set("warm", b"up")
    in_sync = threading.Event()
    release = threading.Event()
    real_fdatasync = os.fdatasync

    def paused_fdatasync(fd: int) -> None:
        in_sync.set()
        assert release.wait(_PATIENCE)
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", paused_fdatasync)
    acknowledged: list[str] = []
    refused: list[str] = []
    failures: list[BaseException] = []
    guard = threading.Lock()

    def writer(n: int) -> None:
        for i in range(20):
            key = f"w{n}-{i}"
            try:
                engine.set(key, key.encode())
            except StoreClosedError:
                with guard:
                    refused.append(key)
                return
            except BaseException as exc:  # any other error is a failure of the test
                failures.append(exc)
                return
            with guard:
                acknowledged.append(key)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    assert in_sync.wait(_PATIENCE)
    closer = threading.Thread(target=engine.close)
    closer.start()
    release.set()
    closer.join(_PATIENCE)
    for thread in threads:
        thread.join(_PATIENCE)
    assert not closer.is_alive(), "close() never returned"
    assert not any(t.is_alive() for t in threads), "a writer waits forever"
    monkeypatch.undo()
    assert not failures
    with pytest.raises(StoreClosedError):
        engine.set("after", b"close")
    with Engine.open(folder) as reopened:
        for key in acknowledged:
            assert reopened.get(key) == key.encode()


@pytest.mark.parametrize("trial", range(5))
async def test_async_writers_and_close_never_hang(tmp_path: Path, trial: int) -> None:
    """The reported reproduction: 20 tasks loop ``await set_value`` under fsync and the store
    is closed under them."""
    configuration = Configuration(
        storage_dir=str(tmp_path),
        purge_on_start=False,
        persist_state_interval=timedelta(hours=1),
        durability=Durability.FSYNC,
    )
    kvs = await KeyValueStore.open(name=f"race{trial}", configuration=configuration)
    acknowledged: list[str] = []

    async def writer(n: int) -> None:
        for i in range(10_000):
            key = f"t{n}-{i}"
            try:
                await kvs.set_value(key, i)
            except StoreClosedError:
                return
            acknowledged.append(key)

    tasks = [asyncio.create_task(writer(n)) for n in range(20)]
    await asyncio.sleep(0.02 * (trial + 1))
    await kvs.close()
    done, pending = await asyncio.wait(tasks, timeout=_PATIENCE)
    assert not pending, f"{len(pending)} writers wait forever after close()"
    for task in done:
        task.result()
    kvs = await KeyValueStore.open(name=f"race{trial}", configuration=configuration)
    for key in acknowledged[-50:]:
        assert await kvs.get_value(key) is not None
    await kvs.close()
