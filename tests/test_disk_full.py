"""A full disk (``ENOSPC``) while logkv writes a temp file: the temp file never stays behind.

Every file logkv rewrites goes through a temp file (snapshots, ``META.json``, salvage's
segment rewrite, public files). When a write, ``fsync`` or rename of that temp file fails, the
error is raised and the temp file is removed at once, so the space it took is free again and the
store keeps working. Failures are injected by patching ``os`` (and, for the snapshot's buffered
file, the file object's ``write``) to raise ``OSError(ENOSPC)`` for temp files only.
"""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from logkv import Engine
from logkv import snapshot as snapshot_module
from logkv.cli.transfer import export_store, import_store
from logkv.fsutil import atomic_write
from logkv.layout import CRAWLEE_METADATA_FILE, list_segments, list_snapshots
from logkv.storage_clients._public import PublicFiles

SEGMENT_SIZE = 4096


def _disk_full() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _is_temp_fd(fd: int) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp")
    except OSError:
        return False


def fail_on_temp_files(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make ``os.<name>`` raise ENOSPC when it is called on a temp file (by fd or path)."""
    real: Callable[..., Any] = getattr(os, name)

    def failing(target: Any, *args: Any, **kwargs: Any) -> Any:
        is_temp = _is_temp_fd(target) if isinstance(target, int) else str(target).endswith(".tmp")
        if is_temp:
            raise _disk_full()
        return real(target, *args, **kwargs)

    monkeypatch.setattr(os, name, failing)


class _FullFileIO(io.FileIO):
    """A raw file whose every write fails as on a full disk."""

    def write(self, data: Any) -> int:
        raise _disk_full()


def fail_snapshot_file_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The snapshot writer's buffered file fails to write (on the flush of its buffer)."""

    def full_open(file: Any, mode: str = "r", buffering: int = -1, **kwargs: Any) -> Any:
        raw = _FullFileIO(file, mode.replace("b", ""), closefd=kwargs.get("closefd", True))
        return io.BufferedWriter(raw, buffering if buffering > 0 else io.DEFAULT_BUFFER_SIZE)

    monkeypatch.setattr(snapshot_module, "open", full_open, raising=False)


def temp_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.name.endswith(".tmp"))


def fill(engine: Engine, count: int, tag: str) -> dict[str, bytes]:
    model = {f"key-{i:03d}": f"{tag}-{i}".encode() * 40 for i in range(count)}
    for key, value in model.items():
        engine.set(key, value)
    return model


def state_of(engine: Engine) -> dict[str, Any]:
    return {info.key: engine.get(info.key) for info in engine.infos()}


# ---------------------------------------------------------------------------- snapshots


@pytest.mark.parametrize("step", ["open", "write", "fdatasync", "fsync", "replace"])
def test_disk_full_during_compaction_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    path = tmp_path / "store"
    with Engine.open(path, segment_size=SEGMENT_SIZE) as engine:
        model = fill(engine, 60, "a")
        with monkeypatch.context() as patch:
            if step == "write":
                fail_snapshot_file_writes(patch)
            else:
                if step == "fdatasync":
                    patch.setattr(snapshot_module, "_SYNC_EVERY", 1)
                fail_on_temp_files(patch, step)
            with pytest.raises(OSError) as caught:
                engine.compact()
            assert caught.value.errno == errno.ENOSPC
            assert temp_files(path) == []
            # The store keeps working, still under the failure.
            model.update(fill(engine, 10, "b"))
            assert state_of(engine) == model
        assert list_snapshots(path) == []
        result = engine.compact()  # once there is space again, compaction succeeds
        assert result.snapshot is not None
        assert state_of(engine) == model
    with Engine.open(path) as engine:
        assert state_of(engine) == model


# ---------------------------------------------------------------------------- atomic_write


@pytest.mark.parametrize("step", ["pwrite", "fsync", "replace"])
def test_disk_full_in_atomic_write_keeps_the_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    target = tmp_path / "META.json"
    target.write_bytes(b"old")
    with monkeypatch.context() as patch:
        fail_on_temp_files(patch, step)
        with pytest.raises(OSError) as caught:
            atomic_write(target, b"new" * 1000)
    assert caught.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"old"
    assert temp_files(tmp_path) == []
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"


# ---------------------------------------------------------------------------- salvage


def _damage_first_segment(path: Path) -> None:
    first = list_segments(path)[0][1]
    data = bytearray(first.read_bytes())
    data[200] ^= 0xFF  # a checksum mismatch in the middle of a sealed segment
    first.write_bytes(bytes(data))


@pytest.mark.parametrize("step", ["pwrite", "fsync", "replace"])
def test_disk_full_during_salvage_rewrite_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    path = tmp_path / "store"
    with Engine.open(path, segment_size=SEGMENT_SIZE) as engine:
        fill(engine, 40, "a")
    _damage_first_segment(path)
    before = {p.name: p.read_bytes() for _, p in list_segments(path)}
    with monkeypatch.context() as patch:
        fail_on_temp_files(patch, step)
        with pytest.raises(OSError) as caught:
            Engine.open(path, segment_size=SEGMENT_SIZE, recovery="salvage")
    assert caught.value.errno == errno.ENOSPC
    assert temp_files(path) == []
    assert {p.name: p.read_bytes() for _, p in list_segments(path)} == before
    with Engine.open(path, segment_size=SEGMENT_SIZE, recovery="salvage") as engine:
        assert len(engine.report.dropped) > 0
        engine.set("after", b"works")
        assert engine.get("after") == b"works"


# ---------------------------------------------------------------------------- public files


@pytest.mark.parametrize("step", ["write", "replace"])
def test_disk_full_while_publishing_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    public = PublicFiles(tmp_path)
    public.publish("page", b"<p>old</p>", "text/html")
    with monkeypatch.context() as patch:
        if step == "write":
            fail_on_temp_files(patch, "pwrite")
            fail_on_temp_files(patch, "write")
        else:
            fail_on_temp_files(patch, "replace")
        with pytest.raises(OSError) as caught:
            public.publish("page", b"<p>new</p>" * 1000, "text/html")
    assert caught.value.errno == errno.ENOSPC
    assert temp_files(tmp_path) == []
    assert public.path_of("page", "text/html").read_bytes() == b"<p>old</p>"


# ---------------------------------------------------------------------------- import/export


def test_disk_full_during_export_removes_what_it_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, target = tmp_path / "store", tmp_path / "exported"
    with Engine.open(source) as engine:
        fill(engine, 20, "a")
    real_write = os.write
    calls = 0

    def write_until_full(fd: int, data: Any) -> int:
        nonlocal calls
        calls += 1
        if calls > 10:
            raise _disk_full()
        return real_write(fd, data)

    with monkeypatch.context() as patch:
        patch.setattr(os, "write", write_until_full)
        with pytest.raises(OSError) as caught:
            export_store(source, target, bar=False)
    assert caught.value.errno == errno.ENOSPC
    assert not target.exists()


def test_disk_full_during_import_removes_the_new_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, exported, target = tmp_path / "store", tmp_path / "crawlee", tmp_path / "imported"
    with Engine.open(source) as engine:
        fill(engine, 20, "a")
    export_store(source, exported, bar=False)
    assert (exported / CRAWLEE_METADATA_FILE).is_file()
    with monkeypatch.context() as patch:
        fail_on_temp_files(patch, "pwrite")  # META.json's temp file
        with pytest.raises(OSError) as caught:
            import_store(exported, target, bar=False)
    assert caught.value.errno == errno.ENOSPC
    assert not target.exists()
