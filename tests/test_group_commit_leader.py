"""Group commit by a leader: the writer that finds no sync in flight syncs its batch itself,
writers that come meanwhile join the next batch, a failed sync reaches every waiter, and close
racing a leader strands no one. Synchronous writers (threads) and async tasks alike."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from logkv import Configuration, KeyValueStore
from logkv.engine import Engine
from logkv.errors import StoreClosedError, StoreFailedError, SyncFailedError
from logkv.group_commit import Commit
from logkv.modes import Durability
from logkv.storage_clients import _store

#: Long enough for any healthy wait here; a stranded writer fails the test instead of hanging.
_PATIENCE = 10.0
_real_fdatasync = os.fdatasync


class PausedSyncs:
    """``os.fdatasync`` that records which thread called it and can hold the first call."""

    def __init__(self, *, hold_first: bool = False, fail: bool = False) -> None:
        self.threads: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()
        self.fail = fail
        self._guard = threading.Lock()

    def __call__(self, fd: int) -> None:
        with self._guard:
            self.threads.append(threading.get_ident())
        self.entered.set()
        assert self.release.wait(_PATIENCE)
        if self.fail:
            raise OSError(errno.EIO, "simulated EIO")
        _real_fdatasync(fd)


def _start(target: object, *args: object) -> threading.Thread:
    thread = threading.Thread(target=target, args=args)  # type: ignore[arg-type]
    thread.start()
    return thread


def test_a_lone_writer_syncs_in_its_own_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs = PausedSyncs()
    monkeypatch.setattr(os, "fdatasync", syncs)
    threads_before = threading.active_count()
    with Engine.open(tmp_path / "s", durability=Durability.FSYNC) as engine:
        for i in range(20):
            engine.set(f"k{i}", b"v")
            assert engine.get(f"k{i}") == b"v"  # durable, hence visible, when set returns
        assert threading.active_count() == threads_before  # no syncer thread
    me = threading.get_ident()
    assert syncs.threads and set(syncs.threads) == {me}
    assert engine.sync_seconds > 0.0


def test_writers_join_the_next_batch_while_a_leader_syncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leader's sync is held; eight writers append meanwhile and wait; once it ends, one of
    them leads their whole batch with a single further fdatasync."""
    folder = tmp_path / "s"
    engine = Engine.open(folder, durability=Durability.FSYNC)
    syncs = PausedSyncs(hold_first=True)
    monkeypatch.setattr(os, "fdatasync", syncs)
    leader = _start(engine.set, "leader", b"first")
    assert syncs.entered.wait(_PATIENCE)
    commits: list[Commit] = []
    for i in range(8):  # appended while the leader syncs: they join the next batch
        commits.append(engine.set_deferred(f"f{i}", b"x")[1])
    assert len({id(c) for c in commits}) == 1
    assert "f0" not in engine  # not visible before it is durable
    followers = [_start(commit.wait) for commit in commits]
    syncs.release.set()
    for thread in [leader, *followers]:
        thread.join(_PATIENCE)
        assert not thread.is_alive()
    assert len(syncs.threads) == 2  # the leader's batch, then the followers' batch
    assert syncs.threads[0] == leader.ident
    assert syncs.threads[1] in {t.ident for t in followers}
    assert all(f"f{i}" in engine for i in range(8))
    engine.close()
    with Engine.open(folder) as reopened:
        assert reopened.get("leader") == b"first" and reopened.get("f7") == b"x"


def test_a_failed_sync_reaches_every_waiter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leader's sync fails while followers wait in the same batch and the next: each of
    them gets an error, none hangs, nothing of the failed batches becomes visible."""
    engine = Engine.open(tmp_path / "s", durability=Durability.FSYNC)
    engine.set("safe", b"synced")
    syncs = PausedSyncs(hold_first=True, fail=True)
    monkeypatch.setattr(os, "fdatasync", syncs)
    errors: list[BaseException] = []
    guard = threading.Lock()

    def write(key: str) -> None:
        try:
            engine.set(key, b"v")
        except BaseException as exc:
            with guard:
                errors.append(exc)

    leader = _start(write, "leader")
    assert syncs.entered.wait(_PATIENCE)
    _, same = engine.set_deferred("joined", b"v")  # the next batch: it waits for the leader
    writers = [_start(write, f"w{i}") for i in range(6)]
    waiter = _start(write, "late")
    syncs.release.set()
    for thread in [leader, *writers, waiter]:
        thread.join(_PATIENCE)
        assert not thread.is_alive()
    with pytest.raises(StoreFailedError):
        same.wait()
    assert len(errors) == 8 and all(isinstance(e, StoreFailedError) for e in errors), errors
    assert any(isinstance(e, SyncFailedError) and e.errno == errno.EIO for e in errors)
    assert list(engine.keys()) == ["safe"]
    monkeypatch.undo()
    with pytest.raises(StoreFailedError):
        engine.set("after", b"v")  # refused until the store is reopened
    engine.close()  # releases the lock; no synced mark is recorded


def test_close_racing_the_leader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """close() starts while a leader is inside its fdatasync and writers wait behind it: close
    waits for that sync, syncs the waiting batch itself, refuses later writes; every write
    acknowledged is there after a reopen."""
    folder = tmp_path / "s"
    engine = Engine.open(folder, durability=Durability.FSYNC)
    syncs = PausedSyncs(hold_first=True)
    monkeypatch.setattr(os, "fdatasync", syncs)
    leader = _start(engine.set, "leader", b"first")
    assert syncs.entered.wait(_PATIENCE)
    queued = [engine.set_deferred(f"q{i}", b"x")[1] for i in range(4)]  # nobody waits on them
    closer = _start(engine.close)
    while not engine.closed:  # close() marked the store closed and waits for the leader
        threading.Event().wait(0.001)
    with pytest.raises(StoreClosedError):
        engine.set("after", b"close")
    syncs.release.set()
    for thread in (leader, closer):
        thread.join(_PATIENCE)
        assert not thread.is_alive()
    for commit in queued:
        assert commit.done.is_set() and commit.error is None  # close synced their batch
    monkeypatch.undo()
    with Engine.open(folder) as reopened:
        assert reopened.get("leader") == b"first"
        assert [reopened.get(f"q{i}") for i in range(4)] == [b"x"] * 4


def test_a_write_while_close_syncs_the_last_batch_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The racy point: close() is syncing the last queued batch itself (its lock released). A
    write arriving exactly then must be refused, not queued behind a close that is ending."""
    engine = Engine.open(tmp_path / "s", durability=Durability.FSYNC)
    engine.set("warm", b"up")
    _, queued = engine.set_deferred("queued", b"x")
    outcome: list[object] = []

    def write_during_sync(fd: int) -> None:
        if engine.closed and not outcome:
            try:
                outcome.append(engine.set_deferred("late", b"x"))
            except StoreClosedError as exc:
                outcome.append(exc)
        _real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", write_during_sync)
    engine.close()
    monkeypatch.undo()
    assert len(outcome) == 1 and isinstance(outcome[0], StoreClosedError)
    assert queued.done.is_set() and queued.error is None


# ---------------------------------------------------------------------------------- async


def _configuration(tmp_path: Path) -> Configuration:
    return Configuration(
        storage_dir=str(tmp_path),
        purge_on_start=False,
        persist_state_interval=timedelta(hours=1),
        durability=Durability.FSYNC,
    )


async def test_a_lone_task_syncs_on_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kvs = await KeyValueStore.open(name="lone", configuration=_configuration(tmp_path))
    monkeypatch.setattr(_store, "INLINE_SYNC_LIMIT", 60.0)  # however slow this disk is now
    syncs = PausedSyncs()
    monkeypatch.setattr(os, "fdatasync", syncs)
    for i in range(10):
        await kvs.set_value(f"k{i}", {"i": i})
    monkeypatch.undo()
    assert syncs.threads == [threading.get_ident()] * 10  # no hand-off to another thread
    await kvs.close()


async def test_tasks_share_a_sync_in_a_worker_thread_when_syncs_are_slow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kvs = await KeyValueStore.open(name="slow", configuration=_configuration(tmp_path))
    monkeypatch.setattr(_store, "INLINE_SYNC_LIMIT", -1.0)  # every sync counts as slow
    syncs = PausedSyncs()
    monkeypatch.setattr(os, "fdatasync", syncs)
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
    kvs = await KeyValueStore.open(name="cancel", configuration=_configuration(tmp_path))
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
    kvs = await KeyValueStore.open(name="cancel", configuration=_configuration(tmp_path))
    assert await kvs.get_value("leader") == 0  # appended and synced before the cancel landed
    assert [await kvs.get_value(f"f{i}") for i in range(5)] == list(range(5))
    await kvs.close()


async def test_a_failed_sync_reaches_every_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kvs = await KeyValueStore.open(name="failing", configuration=_configuration(tmp_path))
    await kvs.set_value("safe", 1)
    monkeypatch.setattr(os, "fdatasync", PausedSyncs(fail=True))
    results = await asyncio.wait_for(
        asyncio.gather(*(kvs.set_value(f"w{i}", i) for i in range(20)), return_exceptions=True),
        _PATIENCE,
    )
    assert all(isinstance(r, StoreFailedError) for r in results), results
    monkeypatch.undo()
    with contextlib.suppress(StoreFailedError):
        await kvs.close()  # it cannot persist into a failed store, but it releases the lock
