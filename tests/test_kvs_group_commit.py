"""Durability "fsync" through the async facade: tasks share fdatasyncs, nothing is lost; the
first task waiting for a batch leads it (on the event loop while syncs are quick), a cancelled
leader still syncs, a failed sync reaches every task."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import HeldSyncs, fsync_configuration

from logkv import KeyValueStore
from logkv.errors import StoreFailedError, SyncFailedError
from logkv.group_commit import Commit
from logkv.storage_clients import _commits

#: Long enough for any healthy wait here; a stranded writer fails the test instead of hanging.
_PATIENCE = 10.0


async def test_concurrent_tasks_share_fsyncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configuration = fsync_configuration(tmp_path)
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
    kvs = await KeyValueStore.open(name="failing", configuration=fsync_configuration(tmp_path))
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
    reopened = await KeyValueStore.open(name="failing", configuration=fsync_configuration(tmp_path))
    assert await reopened.get_value("safe") == "synced"
    await reopened.close()


async def test_a_lone_task_syncs_on_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, held_syncs: Callable[..., HeldSyncs]
) -> None:
    kvs = await KeyValueStore.open(name="lone", configuration=fsync_configuration(tmp_path))
    monkeypatch.setattr(_commits, "INLINE_SYNC_LIMIT", 60.0)  # however slow this disk is now
    syncs = held_syncs()
    for i in range(10):
        await kvs.set_value(f"k{i}", {"i": i})
    monkeypatch.undo()
    assert syncs.threads == [threading.get_ident()] * 10  # no hand-off to another thread
    await kvs.close()


async def test_tasks_share_a_sync_in_a_worker_thread_when_syncs_are_slow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, held_syncs: Callable[..., HeldSyncs]
) -> None:
    kvs = await KeyValueStore.open(name="slow", configuration=fsync_configuration(tmp_path))
    monkeypatch.setattr(_commits, "INLINE_SYNC_LIMIT", -1.0)  # every sync counts as slow
    syncs = held_syncs()
    await asyncio.gather(*(kvs.set_value(f"k{i}", i) for i in range(32)))
    monkeypatch.undo()
    assert 1 <= len(syncs.threads) < 8
    assert threading.get_ident() not in syncs.threads  # the loop was never blocked by a sync
    assert [await kvs.get_value(f"k{i}") for i in range(32)] == list(range(32))
    await kvs.close()


async def test_a_cancelled_leader_still_syncs_its_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first task of a batch is cancelled while it yields to the others: the batch is
    synced all the same, and the tasks that joined it are acknowledged."""
    kvs = await KeyValueStore.open(name="cancel", configuration=fsync_configuration(tmp_path))
    leader = asyncio.create_task(kvs.set_value("leader", 0))
    await asyncio.sleep(0)  # the leader appended and now yields
    followers = [asyncio.create_task(kvs.set_value(f"f{i}", i)) for i in range(5)]
    leader.cancel()
    _, pending = await asyncio.wait([leader, *followers], timeout=_PATIENCE)
    assert not pending
    assert leader.cancelled()
    for task in followers:
        task.result()
    await kvs.close()
    kvs = await KeyValueStore.open(name="cancel", configuration=fsync_configuration(tmp_path))
    assert await kvs.get_value("leader") == 0  # appended and synced before the cancel landed
    assert [await kvs.get_value(f"f{i}") for i in range(5)] == list(range(5))
    await kvs.close()


async def test_a_failed_sync_reaches_every_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, held_syncs: Callable[..., HeldSyncs]
) -> None:
    kvs = await KeyValueStore.open(name="failing", configuration=fsync_configuration(tmp_path))
    await kvs.set_value("safe", 1)
    held_syncs(fail=True)
    results = await asyncio.wait_for(
        asyncio.gather(*(kvs.set_value(f"w{i}", i) for i in range(20)), return_exceptions=True),
        _PATIENCE,
    )
    assert all(isinstance(r, StoreFailedError) for r in results), results
    monkeypatch.undo()
    with contextlib.suppress(StoreFailedError):
        await kvs.close()  # it cannot persist into a failed store, but it releases the lock


async def _lonely(kvs: KeyValueStore, count: int) -> None:
    """``count`` writes of a lone task: the first leader yields and gathers no one."""
    for i in range(count):
        await kvs.set_value(f"lone-{i}", i)


async def test_a_lone_task_syncs_without_a_pass_of_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, held_syncs: Callable[..., HeldSyncs]
) -> None:
    """Once a yield gathered no other writer, a lone task's write is appended and synced within
    the call: the coroutine finishes on its first step, and the sync ran on the loop's thread."""
    kvs = await KeyValueStore.open(name="lone", configuration=fsync_configuration(tmp_path))
    monkeypatch.setattr(_commits, "INLINE_SYNC_LIMIT", 60.0)  # however slow this disk is now
    monkeypatch.setattr(_commits, "YIELD_INTERVAL", 60.0)  # no yield to look for new writers
    await _lonely(kvs, 1)
    syncs = held_syncs()
    for i in range(5):
        step = kvs.set_value(f"k{i}", {"i": i})
        with pytest.raises(StopIteration):  # done without ever suspending
            step.send(None)
        assert await kvs.get_value(f"k{i}") == {"i": i}
    assert syncs.threads == [threading.get_ident()] * 5
    await kvs.close()
    kvs = await KeyValueStore.open(name="lone", configuration=fsync_configuration(tmp_path))
    assert [await kvs.get_value(f"k{i}") for i in range(5)] == [{"i": i} for i in range(5)]
    await kvs.close()


async def test_writers_that_join_a_lone_writer_share_syncs_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, held_syncs: Callable[..., HeldSyncs]
) -> None:
    """A lone writer's leaders stop yielding; when many tasks start writing, the next yield
    (at most YIELD_INTERVAL later) gathers them, and their writes share fdatasyncs."""
    kvs = await KeyValueStore.open(name="racing", configuration=fsync_configuration(tmp_path))
    monkeypatch.setattr(_commits, "INLINE_SYNC_LIMIT", 60.0)  # the inline path, however slow
    await _lonely(kvs, 20)
    syncs = held_syncs()

    async def writer(task: int) -> None:
        for i in range(5):
            await kvs.set_value(f"t{task:02d}-{i}", i)

    await asyncio.gather(_lonely(kvs, 50), *(writer(t) for t in range(64)))
    writes, synced = 50 + 64 * 5, len(syncs.threads)
    assert 0 < synced < writes / 4, f"{synced} fdatasyncs for {writes} writes: no group commit"
    assert [await kvs.get_value(f"t{t:02d}-4") for t in range(64)] == [4] * 64
    await kvs.close()


async def test_a_failed_sync_of_a_lone_task_poisons_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, held_syncs: Callable[..., HeldSyncs]
) -> None:
    """The sync a lone task runs within its call fails: the call raises, the write is never
    visible, and the store refuses every later write until it is reopened."""
    kvs = await KeyValueStore.open(name="failing", configuration=fsync_configuration(tmp_path))
    monkeypatch.setattr(_commits, "INLINE_SYNC_LIMIT", 60.0)
    monkeypatch.setattr(_commits, "YIELD_INTERVAL", 60.0)
    await _lonely(kvs, 3)
    held_syncs(fail=True)
    step = kvs.set_value("lost", 1)
    with pytest.raises(SyncFailedError) as raised:  # raised within the call's first step
        step.send(None)
    assert raised.value.errno == errno.EIO
    assert await kvs.get_value("lost") is None  # never made visible
    assert await kvs.get_value("lone-2") == 2
    with pytest.raises(StoreFailedError):
        await kvs.set_value("after", 1)
    monkeypatch.undo()
    with contextlib.suppress(StoreFailedError):
        await kvs.close()
    kvs = await KeyValueStore.open(name="failing", configuration=fsync_configuration(tmp_path))
    assert await kvs.get_value("lone-2") == 2  # acknowledged, so kept ("lost" may be too)
    await kvs.close()


def test_lead_pace_yields_while_yields_gather_writers(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(_commits, "_clock", lambda: now[0])
    pace = _commits.LeadPace()
    assert pace.should_yield()  # a new store looks for other writers first
    lonely, followed = Commit(), Commit()
    followed.add_done_callback(lambda _: None)
    pace.yielded(lonely)
    assert not pace.should_yield()  # the yield gathered no one
    now[0] += _commits.YIELD_INTERVAL / 2
    assert not pace.should_yield()
    now[0] += _commits.YIELD_INTERVAL
    assert pace.should_yield()  # long enough: look again
    pace.yielded(followed)
    assert pace.should_yield()  # writers came: yield for every batch
    pace.yielded(lonely)
    assert not pace.should_yield()
