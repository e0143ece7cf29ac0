"""Group commit by a leader: the writer that finds no sync in flight syncs its batch itself,
writers that come meanwhile join the next batch, a failed sync reaches every waiter, and close
racing a leader strands no one (async tasks leading: tests/test_kvs_group_commit.py)."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import HeldSyncs

from logkv.engine import Engine
from logkv.errors import StoreClosedError, StoreFailedError, SyncFailedError
from logkv.group_commit import Commit
from logkv.modes import Durability

#: Long enough for any healthy wait here; a stranded writer fails the test instead of hanging.
_PATIENCE = 10.0
_real_fdatasync = os.fdatasync

HeldSyncsFactory = Callable[..., HeldSyncs]


def _start(target: Callable[..., object], *args: object) -> threading.Thread:
    thread = threading.Thread(target=target, args=args)
    thread.start()
    return thread


def _leader_inside_its_sync(
    folder: Path, held_syncs: HeldSyncsFactory
) -> tuple[Engine, HeldSyncs, threading.Thread]:
    """A store under fsync whose first writer, in a thread of its own, leads a sync that is
    held (until ``syncs.release`` is set)."""
    engine = Engine.open(folder, durability=Durability.FSYNC)
    syncs = held_syncs(hold_first=True)
    leader = _start(engine.set, "leader", b"first")
    assert syncs.entered.wait(_PATIENCE)
    return engine, syncs, leader


def _join_all(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(_PATIENCE)
        assert not thread.is_alive(), "a writer waits forever"


def test_a_lone_writer_syncs_in_its_own_thread(
    tmp_path: Path, held_syncs: HeldSyncsFactory
) -> None:
    syncs = held_syncs()
    threads_before = threading.active_count()
    with Engine.open(tmp_path / "s", durability=Durability.FSYNC) as engine:
        for i in range(20):
            engine.set(f"k{i}", b"v")
            assert engine.get(f"k{i}") == b"v"  # durable, hence visible, when set returns
        assert threading.active_count() == threads_before  # no syncer thread
        assert engine.sync_seconds > 0.0
    assert syncs.threads and set(syncs.threads) == {threading.get_ident()}


def test_writers_join_the_next_batch_while_a_leader_syncs(
    tmp_path: Path, held_syncs: HeldSyncsFactory
) -> None:
    """The leader's sync is held; eight writers append meanwhile and wait; once it ends, one of
    them leads their whole batch with a single further fdatasync."""
    folder = tmp_path / "s"
    engine, syncs, leader = _leader_inside_its_sync(folder, held_syncs)
    commits: list[Commit] = []
    for i in range(8):  # appended while the leader syncs: they join the next batch
        commits.append(engine.set_deferred(f"f{i}", b"x")[1])
    assert len({id(c) for c in commits}) == 1
    assert "f0" not in engine  # not visible before it is durable
    followers = [_start(commit.wait) for commit in commits]
    syncs.release.set()
    _join_all([leader, *followers])
    assert len(syncs.threads) == 2  # the leader's batch, then the followers' batch
    assert syncs.threads[0] == leader.ident
    assert syncs.threads[1] in {t.ident for t in followers}
    assert all(f"f{i}" in engine for i in range(8))
    engine.close()
    with Engine.open(folder) as reopened:
        assert reopened.get("leader") == b"first" and reopened.get("f7") == b"x"


def test_a_failed_sync_reaches_every_waiter(tmp_path: Path, held_syncs: HeldSyncsFactory) -> None:
    """The leader's sync fails while writers wait in the next batch: each of them gets an
    error, none hangs, nothing of the failed batches becomes visible."""
    engine = Engine.open(tmp_path / "s", durability=Durability.FSYNC)
    engine.set("safe", b"synced")
    syncs = held_syncs(hold_first=True, fail=True)
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
    writers = [_start(write, f"w{i}") for i in range(7)]
    syncs.release.set()
    _join_all([leader, *writers])
    with pytest.raises(StoreFailedError):
        same.wait()
    assert len(errors) == 8 and all(isinstance(e, StoreFailedError) for e in errors), errors
    assert any(isinstance(e, SyncFailedError) and e.errno == errno.EIO for e in errors)
    assert list(engine.keys()) == ["safe"]
    with pytest.raises(StoreFailedError):
        engine.set("after", b"v")  # refused until the store is reopened
    engine.close()  # releases the lock; no synced mark is recorded


def test_close_racing_the_leader(tmp_path: Path, held_syncs: HeldSyncsFactory) -> None:
    """close() starts while a leader is inside its fdatasync and writes wait behind it: close
    waits for that sync, syncs the waiting batch itself, refuses later writes; every write
    acknowledged is there after a reopen."""
    folder = tmp_path / "s"
    engine, syncs, leader = _leader_inside_its_sync(folder, held_syncs)
    queued = [engine.set_deferred(f"q{i}", b"x")[1] for i in range(4)]  # nobody waits on them
    closer = _start(engine.close)
    while not engine.closed:  # close() marked the store closed and waits for the leader
        threading.Event().wait(0.001)
    with pytest.raises(StoreClosedError):
        engine.set("after", b"close")
    syncs.release.set()
    _join_all([leader, closer])
    for commit in queued:
        assert commit.done.is_set() and commit.error is None  # close synced their batch
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
