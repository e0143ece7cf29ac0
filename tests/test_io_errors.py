"""I/O failures while writing, simulated by patching ``os``: disk full, EIO, failed fsyncs.

Each test checks the promise of ``logkv/segments.py``: a failed append leaves the log exactly as
it was (no visible record, no bytes after the last good record), and the store keeps working
once the failure is gone. Under ``durability="fsync"``, a failed fsync poisons the store
(``StoreFailedError``) because the OS may have dropped the unsynced data. Group commit is
checked by counting ``fdatasync`` calls.
"""

from __future__ import annotations

import errno
import mmap
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from logkv import MISSING, Engine, StoreFailedError
from logkv.engine import LARGE_VALUE
from logkv.layout import list_segments
from logkv.replay import frame_length

OpenEngine = Callable[..., Engine]

_real_pwrite = os.pwrite
_real_pwritev = os.pwritev
_real_pread = os.pread
_real_ftruncate = os.ftruncate
_real_fdatasync = os.fdatasync


def log_bytes(path: Path) -> bytes:
    """Every segment of a store, concatenated."""
    return b"".join(seg.read_bytes() for _, seg in list_segments(path))


def state_of(engine: Engine) -> dict[str, Any]:
    return {info.key: engine.get(info.key) for info in engine.infos()}


def reopen_copy(path: Path, dst: Path, **options: Any) -> Engine:
    """Open a copy of the store as it is on disk now (what a crash at this moment leaves)."""
    dst.mkdir()
    for _, seg in list_segments(path):
        shutil.copyfile(seg, dst / seg.name)
    return Engine.open(dst, **options)


def fill_two_segments(engine: Engine, path: Path) -> dict[str, Any]:
    """Write until the second segment is full (of 4096 bytes): the next append rotates."""
    model: dict[str, Any] = {}
    while True:
        segments = list_segments(path)
        if len(segments) == 2 and segments[-1][1].stat().st_size >= 4096:
            return model
        key = f"key-{len(model):03d}"
        model[key] = bytes([len(model)]) * 700
        engine.set(key, model[key])


class FailingWrites:
    """A stand-in for ``os.pwrite`` (and ``os.pwritev``, whose buffers it takes as one) that
    writes ``fraction`` of the data, then raises."""

    def __init__(self, error: int, fraction: float, only_at_offset: int | None = None) -> None:
        self.error = error
        self.fraction = fraction
        self.only_at_offset = only_at_offset
        self.failures = 0

    def __call__(self, fd: int, data: Any, offset: int) -> int:
        if self.only_at_offset is not None and offset != self.only_at_offset:
            return _real_pwrite(fd, data, offset)
        view = memoryview(b"".join(data) if isinstance(data, list | tuple) else data)
        part = int(len(view) * self.fraction)
        if part:
            _real_pwrite(fd, view[:part], offset)
        self.failures += 1
        raise OSError(self.error, os.strerror(self.error))


@pytest.fixture
def populated(open_engine: OpenEngine) -> Iterator[tuple[Engine, dict[str, Any]]]:
    engine = open_engine()
    model: dict[str, Any] = {}
    for i in range(10):
        key, value = f"key-{i}", os.urandom(i * 37)
        engine.set(key, value)
        model[key] = value
    engine.set("none", None)
    model["none"] = None
    yield engine, model


# ---------------------------------------------------------------------------------- failed appends


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EIO, errno.EDQUOT])
@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.999])
@pytest.mark.parametrize("operation", ["new-key", "overwrite", "delete", "large"])
def test_failed_append_leaves_the_log_as_it_was(
    populated: tuple[Engine, dict[str, Any]],
    store_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    error: int,
    fraction: float,
    operation: str,
) -> None:
    engine, model = populated
    before_bytes = log_bytes(store_path)
    before_stats = engine.stats()
    failing = FailingWrites(error, fraction)
    monkeypatch.setattr(os, "pwrite", failing)
    monkeypatch.setattr(os, "pwritev", failing)  # a large value's frame is written in pieces

    with pytest.raises(OSError) as caught:
        if operation == "new-key":
            engine.set("failed", b"x" * 5000)
        elif operation == "large":
            engine.set("key-3", os.urandom(LARGE_VALUE + 1000))
        elif operation == "overwrite":
            engine.set("key-3", b"x" * 5000)
        else:
            engine.delete("key-3")
    assert caught.value.errno == error
    assert failing.failures == 1

    # Nothing of the failed record is visible, everything before it still is.
    assert state_of(engine) == model
    assert engine.stats() == before_stats
    assert log_bytes(store_path) == before_bytes  # no garbage after the last good record

    monkeypatch.setattr(os, "pwrite", _real_pwrite)  # space is back
    monkeypatch.setattr(os, "pwritev", _real_pwritev)
    assert engine.set("later", b"works") == before_stats.last_seq + 1
    model["later"] = b"works"
    assert state_of(engine) == model
    engine.close()

    with Engine.open(store_path) as reopened:
        assert reopened.report.clean
        assert state_of(reopened) == model
        assert reopened.last_seq == before_stats.last_seq + 1


def test_failed_cleanup_is_finished_before_the_next_append(
    populated: tuple[Engine, dict[str, Any]],
    store_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine, model = populated
    before_bytes = log_bytes(store_path)

    def failing_ftruncate(fd: int, length: int) -> None:
        raise OSError(errno.EIO, "simulated EIO")

    monkeypatch.setattr(os, "pwrite", FailingWrites(errno.ENOSPC, 0.5))
    monkeypatch.setattr(os, "ftruncate", failing_ftruncate)
    with pytest.raises(OSError):
        engine.set("failed", b"y" * 3000)
    monkeypatch.setattr(os, "pwrite", _real_pwrite)
    monkeypatch.setattr(os, "ftruncate", _real_ftruncate)

    # Half a record is left behind; a crash now would leave it as a torn tail.
    assert len(log_bytes(store_path)) > len(before_bytes)
    assert state_of(engine) == model
    with reopen_copy(store_path, tmp_path / "crash-now") as crashed:
        assert crashed.report.torn_tail is not None
        assert crashed.report.torn_tail.start == len(before_bytes)
        assert state_of(crashed) == model

    # The next append cuts the leftover off first.
    engine.set("next", b"fine")
    model["next"] = b"fine"
    entry = engine.entry("next")
    assert entry is not None
    assert entry[1] == len(before_bytes)
    assert len(log_bytes(store_path)) == len(before_bytes) + frame_length(entry)
    engine.close()
    with Engine.open(store_path) as reopened:
        assert reopened.report.clean
        assert state_of(reopened) == model


@pytest.mark.parametrize("durability", ["process", "fsync"])
def test_disk_full_while_rotating(
    open_engine: OpenEngine, store_path: Path, monkeypatch: pytest.MonkeyPatch, durability: str
) -> None:
    engine = open_engine(segment_size=4096, durability=durability)
    model = fill_two_segments(engine, store_path)

    failing = FailingWrites(errno.ENOSPC, 0.5, only_at_offset=0)  # the new segment's header
    monkeypatch.setattr(os, "pwrite", failing)
    for _ in range(3):  # retrying while the disk is still full fails the same way
        with pytest.raises(OSError):
            engine.set("failed", b"z" * 700)
    assert failing.failures == 3
    assert state_of(engine) == model

    monkeypatch.setattr(os, "pwrite", _real_pwrite)
    engine.set("later", b"works")
    model["later"] = b"works"
    assert state_of(engine) == model
    assert engine.stats().segments == len(list_segments(store_path))
    engine.close()
    with Engine.open(store_path, segment_size=4096) as reopened:
        assert state_of(reopened) == model
        assert reopened.stats().segments == len(list_segments(store_path))


def test_a_short_write_of_a_large_frame_is_finished(
    populated: tuple[Engine, dict[str, Any]], store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, model = populated
    calls = []

    def short_pwritev(fd: int, buffers: list[bytes], offset: int) -> int:
        calls.append(offset)
        data = b"".join(buffers)
        return _real_pwrite(fd, data[: len(data) // 3], offset)  # writes a third, no error

    monkeypatch.setattr(os, "pwritev", short_pwritev)
    value = os.urandom(LARGE_VALUE * 2)
    engine.set("large", value)
    model["large"] = value
    monkeypatch.undo()
    assert calls and state_of(engine) == model
    engine.close()
    with Engine.open(store_path) as reopened:
        assert reopened.report.clean and state_of(reopened) == model


def test_read_error_propagates(
    populated: tuple[Engine, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, model = populated

    def failing_pread(fd: int, size: int, offset: int) -> bytes:
        raise OSError(errno.EIO, "simulated EIO")

    def unmappable(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENODEV, "no mmap on this file system")

    # Reads copy out of a memory map; where a file cannot be mapped they fall back to pread,
    # and an error there reaches the caller.
    monkeypatch.setattr(mmap, "mmap", unmappable)
    monkeypatch.setattr(os, "pread", failing_pread)
    with pytest.raises(OSError) as caught:
        engine.get("key-5")
    assert caught.value.errno == errno.EIO
    monkeypatch.setattr(os, "pread", _real_pread)
    assert state_of(engine) == model  # read with pread, the map still refused
    monkeypatch.undo()
    assert state_of(engine) == model
    engine.set("large", b"L" * LARGE_VALUE)  # read with pread whether mapped or not
    monkeypatch.setattr(os, "pread", failing_pread)
    with pytest.raises(OSError) as caught:
        engine.get("large")
    assert caught.value.errno == errno.EIO
    monkeypatch.undo()
    assert engine.get("large") == b"L" * LARGE_VALUE


def test_reads_of_records_appended_after_the_map_are_current(open_engine: OpenEngine) -> None:
    engine = open_engine()
    engine.set("first", b"1")
    assert engine.get("first") == b"1"  # maps the segment as it is now
    for i in range(3000):  # well past the remap step: the newest are read with pread first
        engine.set(f"k{i:04d}", bytes([i % 251]) * 500)
    for i in range(0, 3000, 7):
        assert engine.get(f"k{i:04d}") == bytes([i % 251]) * 500
    engine.set("first", b"changed")
    assert engine.get("first") == b"changed"


# ---------------------------------------------------------------------------------- fsync failures


def test_fsync_failure_poisons_the_store(
    open_engine: OpenEngine, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = open_engine(durability="fsync")
    engine.set("durable", b"synced")
    calls = 0

    def failing_fdatasync(fd: int) -> None:
        nonlocal calls
        calls += 1
        raise OSError(errno.EIO, "simulated EIO")

    monkeypatch.setattr(os, "fdatasync", failing_fdatasync)
    with pytest.raises(OSError) as caught:
        engine.set("unsynced", b"maybe lost")
    assert caught.value.errno == errno.EIO
    assert calls == 1
    assert "unsynced" not in engine  # never made visible: it was not durable
    monkeypatch.setattr(os, "fdatasync", _real_fdatasync)  # even once fsync works again ...

    for write in (lambda: engine.set("later", b"x"), lambda: engine.delete("durable"), engine.sync):
        with pytest.raises(StoreFailedError):  # ... the store refuses writes
            write()
    assert engine.get("durable") == b"synced"  # reads still work
    engine.close()

    with Engine.open(store_path, durability="fsync") as reopened:
        assert reopened.report.clean
        assert reopened.get("durable") == b"synced"
        assert reopened.get("later") is MISSING
        # The record whose sync failed reached the page cache, so it may well be there.
        assert reopened.get("unsynced") in (MISSING, b"maybe lost")
        reopened.set("after-reopen", b"ok")


def test_fsync_failure_while_rotating_poisons_the_store(
    open_engine: OpenEngine, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = open_engine(durability="fsync", segment_size=4096)
    model = fill_two_segments(engine, store_path)

    def failing_fdatasync(fd: int) -> None:
        raise OSError(errno.EIO, "simulated EIO")

    monkeypatch.setattr(os, "fdatasync", failing_fdatasync)
    with pytest.raises(OSError):
        engine.set("rotating", b"r" * 700)  # the sync of the full segment fails
    monkeypatch.setattr(os, "fdatasync", _real_fdatasync)
    # A second fdatasync would report success although the failed one may have lost pages:
    # no later write may be acknowledged as durable.
    for _ in range(2):
        with pytest.raises((OSError, StoreFailedError)):
            engine.set("later", b"x")
    with pytest.raises((OSError, StoreFailedError)):
        engine.sync()
    assert state_of(engine) == model
    with pytest.raises(OSError):
        engine.close()  # closing cannot make the log durable either, and says so
    assert engine.closed
    with Engine.open(store_path, segment_size=4096) as reopened:
        assert state_of(reopened) == model


def test_fsync_failure_with_many_waiting_writers(
    open_engine: OpenEngine, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = open_engine(durability="fsync")
    engine.set("durable", b"synced")
    started = threading.Event()
    release = threading.Event()

    def slow_failing_fdatasync(fd: int) -> None:
        started.set()
        release.wait(timeout=30)
        raise OSError(errno.EIO, "simulated EIO")

    monkeypatch.setattr(os, "fdatasync", slow_failing_fdatasync)
    errors: list[BaseException] = []
    lock = threading.Lock()

    def writer(i: int) -> None:
        try:
            engine.set(f"w{i}", b"v")
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    assert started.wait(timeout=30)
    release.set()
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive()
    assert len(errors) == 16  # every writer heard of the failure; none hung
    # A write that reached the segment after its sync failed, but before the engine marked
    # itself failed, hears the same kind of error as the rest: the store has failed.
    assert all(isinstance(e, StoreFailedError) for e in errors), errors
    assert list(engine.keys()) == ["durable"]


# ---------------------------------------------------------------------------------- group commit


def test_group_commit_shares_fsyncs(
    open_engine: OpenEngine, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads_n, per_thread = 64, 8
    writes = threads_n * per_thread
    engine = open_engine(durability="fsync")
    appended = 0
    synced_upto = 0  # the log size the last finished fdatasync covers
    counter_lock = threading.Lock()
    all_appended = threading.Event()
    syncs = 0

    def counting_pwrite(fd: int, data: Any, offset: int) -> int:
        nonlocal appended
        written = _real_pwrite(fd, data, offset)
        with counter_lock:
            appended += 1
            if appended >= threads_n:
                all_appended.set()
        return written

    def counting_fdatasync(fd: int) -> None:
        nonlocal syncs, synced_upto
        with counter_lock:
            syncs += 1
            first = syncs == 1
        if first:  # a slow disk: the first sync lasts until every thread has appended once
            all_appended.wait(timeout=30)
        size = os.fstat(fd).st_size
        _real_fdatasync(fd)
        with counter_lock:
            synced_upto = max(synced_upto, size)

    monkeypatch.setattr(os, "pwrite", counting_pwrite)
    monkeypatch.setattr(os, "fdatasync", counting_fdatasync)
    failures: list[str] = []

    def writer(t: int) -> None:
        for i in range(per_thread):
            key = f"t{t:02d}-{i}"
            engine.set(key, f"{t}/{i}".encode() * 10)
            entry = engine.entry(key)
            # Durable before visible: the record is in the index, and a finished sync covers it.
            if entry is None or entry[1] + frame_length(entry) > synced_upto:
                failures.append(key)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
        assert not thread.is_alive()
    monkeypatch.undo()

    assert failures == []
    assert appended == writes
    assert 1 <= syncs < writes / 2, syncs
    assert len(engine) == writes
    engine.close()
    with Engine.open(store_path) as reopened:
        assert reopened.report.clean
        assert reopened.last_seq == writes
        for t in range(threads_n):
            for i in range(per_thread):
                assert reopened.get(f"t{t:02d}-{i}") == f"{t}/{i}".encode() * 10


def test_process_durability_never_syncs(
    open_engine: OpenEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = open_engine()
    calls: list[int] = []
    monkeypatch.setattr(os, "fdatasync", calls.append)
    monkeypatch.setattr(os, "fsync", calls.append)
    for i in range(100):
        engine.set(f"k{i}", b"v")
    assert calls == []
    engine.sync()  # an explicit sync does
    assert len(calls) == 1
