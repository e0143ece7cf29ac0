"""File sets (``logkv/files.py``): the same readers read a store's files through a file set as
from its folder, with the same results on intact and damaged files, a window at a time."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logkv import CorruptionError, Engine
from logkv.cli.audit import key_changes, store_figures, verify_store
from logkv.cli.dump import StoreDump
from logkv.engine import LARGE_VALUE
from logkv.files import LocalFiles, SourcePath, WindowBuffer, mount
from logkv.history import state_at
from logkv.layout import SYNCED_FILE, list_segments, list_snapshots
from logkv.scan import Damage, SegmentReader

URL = "test://host/key_value_stores/pages"


class Counted(LocalFiles):
    """A local folder as a file set that is not local, counting the bytes read."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.read_bytes = 0

    def read(self, name: str, offset: int, n: int) -> bytes:
        data = super().read(name, offset, n)
        self.read_bytes += len(data)
        return data


@pytest.fixture(autouse=True)
def small_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows far smaller than the files, so that frames and batches straddle them."""
    monkeypatch.setattr("logkv.scan.SCAN_WINDOW", 97)


def written(folder: Path, *, compact: bool = True) -> Path:
    """A store with single records, batches, a stored None, deletes and values bigger
    than a window, over several segments and a snapshot; closed cleanly."""
    with Engine.open(folder, segment_size=4096) as engine:
        for i in range(40):
            engine.set(f"k{i:02d}", os.urandom(i * 7))
        engine.set_many([(f"b{i}", b"x" * 30, None) for i in range(5)])
        engine.set("none", None)
        if compact:
            engine.compact()
        engine.set("big", b"B" * 700)
        engine.delete("k03")
        engine.set_many([(f"c{i}", b"y" * 50, "text/plain") for i in range(4)])
        engine.set("k07", b"again")
    return folder


def scan(path: Path, is_last: bool) -> tuple[list[Any], list[Any], int]:
    """Every frame and every damage report of one file, and where its valid data ends."""
    damages: list[tuple[int, int, str, bool, bool]] = []

    def note(damage: Damage) -> None:
        damages.append((damage.start, damage.end, damage.reason, damage.torn, damage.cut_short))

    with SegmentReader(path, None, is_last=is_last, synced=None, report=note) as reader:
        frames = [(o, n, f) for o, n, f in reader.frames()]
        return frames, damages, reader.end


def served(folder: Path) -> SourcePath:
    return mount(LocalFiles(folder), URL)


def test_a_source_path_lists_and_sizes_its_files_and_is_never_a_local_path(
    tmp_path: Path,
) -> None:
    folder = written(tmp_path / "s")
    remote = served(folder)
    assert str(remote) == URL and remote.is_dir() and not remote.is_file()
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    assert [p.name for p in remote.iterdir()] == names
    segment = remote / list_segments(folder)[0][1].name
    assert segment.is_file() and segment.stat().st_size == (folder / segment.name).stat().st_size
    assert str(segment) == f"{URL}/{segment.name}" and segment.parent == remote
    assert not (remote / "nothing").exists()
    with pytest.raises(FileNotFoundError):
        (remote / "nothing").stat()
    with pytest.raises(TypeError, match="not a local file"):
        os.fspath(segment)


@pytest.mark.parametrize("compact", [False, True])
def test_every_reader_gives_what_it_gives_on_the_folder(tmp_path: Path, compact: bool) -> None:
    folder = written(tmp_path / "s", compact=compact)
    (folder / SYNCED_FILE).unlink()  # a bucket copy has no synced mark
    remote = served(folder)

    def shown(value: Any) -> str:
        return repr(value).replace(repr(str(folder)), repr(URL)).replace(str(folder), URL)

    local_stats, remote_stats = store_figures(folder), store_figures(remote)
    assert shown(local_stats).replace("PosixPath", "SourcePath") == repr(remote_stats)
    assert shown(verify_store(folder)) == repr(verify_store(remote))
    for key in ("k07", "k03", "big", "none", "b2", "missing"):
        assert shown(key_changes(folder, key)) == repr(key_changes(remote, key))
    assert state_at(folder) == state_at(remote)
    for history in (False, True):
        local = [shown(line) for line in StoreDump(folder, True, history=history)]
        assert local == [repr(line) for line in StoreDump(remote, True, history=history)]
    with Engine.open(remote, readonly=True) as engine, Engine.open(folder, readonly=True) as mine:
        assert dict(zip(engine.keys(), map(engine.get, engine.keys()), strict=True)) == dict(
            zip(mine.keys(), map(mine.get, mine.keys()), strict=True)
        )


def test_a_scan_reads_each_byte_about_once_and_holds_a_window(tmp_path: Path) -> None:
    folder = written(tmp_path / "s", compact=False)
    files = Counted(folder)
    remote = mount(files, URL)
    segments = list_segments(folder)
    for number, path in segments:
        local = scan(path, number == segments[-1][0])
        assert scan(remote / path.name, number == segments[-1][0]) == local
    total = sum(path.stat().st_size for _, path in segments)
    assert total <= files.read_bytes <= total * 1.2


@pytest.mark.slow
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_damaged_files_scan_the_same_through_a_file_set(tmp_path: Path, data: Any) -> None:
    """Bit flips and byte cuts anywhere in a segment or snapshot: the same frames, the same
    damage reports, the same end, in windows of any size."""
    base = tmp_path / "base"
    if not base.exists():
        written(base)
    files = [p for _, p in list_segments(base)] + [p for _, p in list_snapshots(base)]
    original = data.draw(st.sampled_from(files))
    content = bytearray(original.read_bytes())
    cut = data.draw(st.booleans())
    if cut:
        content = content[: data.draw(st.integers(0, len(content)))]
    else:
        at = data.draw(st.integers(0, len(content) - 1))
        content[at] ^= 1 << data.draw(st.integers(0, 7))
    folder = tmp_path / f"case{data.draw(st.integers(0, 10**9))}"
    folder.mkdir()
    (folder / original.name).write_bytes(bytes(content))
    window = data.draw(st.sampled_from([1, 16, 97, 500, 5000]))
    import logkv.scan  # noqa: PLC0415

    logkv.scan.SCAN_WINDOW = window
    try:
        for is_last in (False, True):
            local = scan(folder / original.name, is_last)
            assert scan(served(folder) / original.name, is_last) == local
    finally:
        logkv.scan.SCAN_WINDOW = 97
        shutil.rmtree(folder)


def test_damage_found_through_a_file_set_is_the_same_damage(tmp_path: Path) -> None:
    folder = written(tmp_path / "s", compact=True)
    snapshot = list_snapshots(folder)[-1][1]
    content = bytearray(snapshot.read_bytes())
    content[200] ^= 0x10  # inside a record of the snapshot
    snapshot.write_bytes(bytes(content))
    remote = served(folder)
    local_report, remote_report = verify_store(folder), verify_store(remote)
    assert not local_report.ok
    assert [p.replace(str(folder), URL) for p in local_report.problems] == remote_report.problems
    with pytest.raises(CorruptionError):
        state_at(remote)


def test_a_window_buffer_gives_back_what_it_read(tmp_path: Path) -> None:
    folder = written(tmp_path / "s", compact=False)
    name = list_segments(folder)[0][1].name
    content = (folder / name).read_bytes()
    window = WindowBuffer(LocalFiles(folder), name, len(content))
    try:
        window.fill(0, 3000)
        assert window.buf[:3000] == content[:3000]
        window.release(3000)
        assert window.buf[: window.released] == bytes(window.released)  # pages given back
        window.fill(2500, 4000)
        assert window.buf[2500:4000] == content[2500:4000]
    finally:
        window.close()


def test_a_large_value_reads_through_a_file_set_checked(tmp_path: Path) -> None:
    # Values of LARGE_VALUE bytes or more are read apart from their frame's first bytes.
    folder = tmp_path / "s"
    value = os.urandom(LARGE_VALUE + 5)
    with Engine.open(folder) as engine:
        engine.set("small", b"s")
        engine.set("large", value)
        entry = engine.entry("large")
    assert entry is not None
    (folder / SYNCED_FILE).unlink()
    with Engine.open(served(folder), readonly=True) as remote:
        assert remote.get("large") == value and remote.get("small") == b"s"
    segment = folder / list_segments(folder)[0][1].name
    data = bytearray(segment.read_bytes())
    data[entry.offset + entry.head + LARGE_VALUE // 2] ^= 0x10
    with Engine.open(served(folder), readonly=True) as remote:
        segment.write_bytes(bytes(data))  # damaged after the open
        with pytest.raises(CorruptionError):
            remote.get("large")
