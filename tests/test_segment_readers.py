"""Reading data files: the files a store holds open, and reads that race a compaction.

* once ``compact()`` returns, the writer holds no descriptor and no memory map of a file it
  retired (the space comes back at once); a read-only handle lets go of them at ``refresh()``;
* a read that looked its entry up just before the switch still returns the right value, whether
  its file was open (the read keeps it alive) or not (the key is looked up again);
* a store keeps a bounded number of files open, however many segments it has: it opens, reads,
  compacts and reports its figures under a low ``RLIMIT_NOFILE``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import run_command
from crawlee.configuration import Configuration as CrawleeConfiguration

from logkv import Configuration, Engine, KeyValueStore, segments
from logkv.crawlee import LogKvStorageClient
from logkv.layout import list_segments
from logkv.segments import MAX_OPEN_DESCRIPTORS, SegmentReaders

OpenEngine = Callable[..., Engine]
SEGMENT_SIZE = 4096  # the smallest allowed: many segments from few records


def value_of(key: str, round_: int) -> bytes:
    return f"{key}:{round_}:".encode() * 520  # one record fills a segment


def fill(engine: Engine, keys: int, rounds: int) -> dict[str, bytes]:
    """Write every key ``rounds`` times; the model of what the store holds."""
    model = {}
    for round_ in range(rounds):
        for i in range(keys):
            key = f"k{i:04d}"
            model[key] = value_of(key, round_)
            engine.set(key, model[key])
    return model


def held_files(folder: Path) -> list[str]:
    """What this process has open or memory-mapped inside ``folder`` (one line per fd/map)."""
    prefix = str(folder.resolve()) + os.sep
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:  # the descriptor listdir itself used
            continue
        if target.startswith(prefix):
            held.append(f"fd {fd} -> {target}")
    for line in Path("/proc/self/maps").read_text().splitlines():
        if prefix in line:
            held.append(f"map {line}")
    return held


def retired_files_held(folder: Path) -> list[str]:
    """Descriptors and maps of files that compaction deleted or moved to the archive."""
    archive = str(folder.resolve() / "archive") + os.sep
    return [h for h in held_files(folder) if h.endswith(" (deleted)") or archive in h]


# ---------------------------------------------------------------------------------- retired files


@pytest.mark.parametrize("retention", ["delete", "archive"])
def test_compaction_lets_go_of_every_file_it_retired(
    open_engine: OpenEngine, store_path: Path, retention: str
) -> None:
    engine = open_engine(segment_size=SEGMENT_SIZE)
    model = fill(engine, 40, 3)
    assert all(engine.get(k) == v for k, v in model.items())  # opens and maps the segments
    assert retired_files_held(store_path) == []
    first = engine.compact(retention=retention)
    assert first.retired_files > 1
    assert retired_files_held(store_path) == []
    assert all(engine.get(k) == v for k, v in model.items())
    model.update(fill(engine, 40, 1))  # a second compaction retires the first snapshot too
    second = engine.compact(retention=retention)
    assert second.retired_files > 1
    assert retired_files_held(store_path) == []
    assert all(engine.get(k) == v for k, v in model.items())


async def test_kvs_compact_gives_the_space_back(tmp_path: Path) -> None:
    configuration = Configuration(
        storage_dir=str(tmp_path),
        purge_on_start=False,
        persist_state_interval=timedelta(hours=1),
        auto_compact=False,
        segment_size=1 << 16,
    )
    kvs = await KeyValueStore.open(name="big", configuration=configuration)
    for round_ in range(20):
        await kvs.set_value("blob", bytes([round_]) * 50_000)
        assert await kvs.get_value("blob") == bytes([round_]) * 50_000
    result = await kvs.compact()
    assert result is not None
    assert result.reclaimed > 15 * 50_000
    folder = kvs.path
    assert folder is not None
    assert retired_files_held(folder) == []
    assert await kvs.get_value("blob") == bytes([19]) * 50_000
    await kvs.close()


def test_refresh_lets_go_of_retired_files(open_engine: OpenEngine, store_path: Path) -> None:
    writer = open_engine(segment_size=SEGMENT_SIZE)
    model = fill(writer, 40, 3)
    reader = open_engine(readonly=True)
    assert all(reader.get(k) == v for k, v in model.items())
    writer.compact()
    assert all(reader.get(k) == v for k, v in model.items())  # still readable before a refresh
    reader.refresh()
    assert retired_files_held(store_path) == []
    assert all(reader.get(k) == v for k, v in model.items())


def test_a_reader_holds_its_view_until_refresh(open_engine: OpenEngine, store_path: Path) -> None:
    """A reader whose files fit within the hold limit keeps them: a writer's compaction and
    new writes do not change what it reads until it refreshes."""
    writer = open_engine(segment_size=SEGMENT_SIZE)
    model = fill(writer, 40, 3)
    reader = open_engine(readonly=True)  # reads nothing yet, but holds its view's files
    writer.compact()
    before = dict(model)
    model.update(fill(writer, 5, 1))
    assert dict(zip(reader.keys(), map(reader.get, reader.keys()), strict=True)) == before
    reader.refresh()
    assert dict(zip(reader.keys(), map(reader.get, reader.keys()), strict=True)) == model
    assert retired_files_held(store_path) == []


def test_a_reader_whose_file_was_retired_reloads(
    open_engine: OpenEngine, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store with more files than a reader may hold: it opens them as reads need them, and
    a read of a file a compaction retired reloads instead of failing."""
    monkeypatch.setattr(segments, "hold_limit", lambda: 0)
    writer = open_engine(segment_size=SEGMENT_SIZE)
    model = fill(writer, 40, 3)
    reader = open_engine(readonly=True)  # reads nothing yet: none of its files is open
    writer.compact()
    model.update(fill(writer, 5, 1))
    assert reader.get("k0030") == model["k0030"]  # its segment is gone: reloaded, read again
    assert reader.get_with_type("k0001") == (model["k0001"], None)  # the reload saw new writes
    assert dict(zip(reader.keys(), map(reader.get, reader.keys()), strict=True)) == model
    assert retired_files_held(store_path) == []


# ---------------------------------------------------------------------------------- racing reads


def pause_before_first_read(
    patch: pytest.MonkeyPatch, engine: Engine, meanwhile: Any, *, after_view: bool = False
) -> list[int]:
    """Run ``meanwhile()`` once, at the first read ``engine`` makes after its index lookup:
    before it finds the file (``after_view``: once it holds the file's bytes, before it reads
    them). Returns the file ids the paused reads were for."""
    paused: list[int] = []
    readers = engine._readers

    def paused_at_first(name: str) -> Any:
        original = getattr(SegmentReaders, name)

        def read(number: int, *args: int) -> Any:
            if paused:
                return original(readers, number, *args)
            paused.append(number)
            if after_view:
                found = original(readers, number, *args)
                meanwhile()
                return found
            meanwhile()
            return original(readers, number, *args)

        return read

    patch.setattr(readers, "view", paused_at_first("view"))  # values read out of a map
    patch.setattr(readers, "read_apart", paused_at_first("read_apart"))  # large values
    return paused


@pytest.mark.parametrize("opened_before", [False, True], ids=["file-not-open", "file-open"])
@pytest.mark.parametrize("after_view", [False, True], ids=["before-view", "after-view"])
def test_a_read_racing_a_compaction_returns_the_right_value(
    open_engine: OpenEngine, opened_before: bool, after_view: bool
) -> None:
    engine = open_engine(segment_size=SEGMENT_SIZE)
    model = fill(engine, 40, 2)
    if opened_before:
        assert engine.get("k0003") == model["k0003"]

    def compact_and_overwrite_others() -> None:
        assert engine.compact().retired_files > 1
        model.update(fill(engine, 2, 5))  # keys k0000 and k0001 change meanwhile

    with pytest.MonkeyPatch.context() as patch:
        paused = pause_before_first_read(
            patch, engine, compact_and_overwrite_others, after_view=after_view
        )
        assert engine.get("k0003") == model["k0003"]
    assert paused and paused[0] > 0  # the read was paused on a segment that compaction retired
    assert engine.get_with_type("k0000") == (model["k0000"], None)


@pytest.mark.parametrize("opened_before", [False, True], ids=["file-not-open", "file-open"])
def test_a_readonly_read_racing_a_writers_compaction_returns_the_right_value(
    open_engine: OpenEngine, opened_before: bool
) -> None:
    writer = open_engine(segment_size=SEGMENT_SIZE)
    model = fill(writer, 40, 2)
    reader = open_engine(readonly=True)
    if opened_before:
        assert reader.get("k0003") == model["k0003"]
    with pytest.MonkeyPatch.context() as patch:
        paused = pause_before_first_read(patch, reader, writer.compact)
        assert reader.get("k0003") == model["k0003"]
    assert paused and paused[0] > 0
    assert dict(zip(reader.keys(), map(reader.get, reader.keys()), strict=True)) == model


def test_a_read_whose_file_is_missing_for_no_compaction_still_fails(
    open_engine: OpenEngine, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(segments, "hold_limit", lambda: 0)  # files opened as reads need them
    engine = open_engine(segment_size=SEGMENT_SIZE)
    fill(engine, 40, 1)
    engine.close()
    reader = open_engine(readonly=True)
    first = list_segments(store_path)[0][1]
    first.unlink()  # damage, not a compaction: no newer snapshot explains it
    with pytest.raises(FileNotFoundError):
        reader.get("k0000")


def test_a_file_let_go_during_a_pread_stays_open_for_it(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The newest bytes of a growing file are read with ``pread``; letting go of the file
    meanwhile (eviction, retirement, close) must not close the descriptor under the read."""
    store_path.mkdir()
    path = store_path / "00000001.seg"
    path.write_bytes(b"a" * 100)
    readers = SegmentReaders(store_path)
    assert readers.pread(1, 10, 0) == b"a" * 10  # mapped: 100 bytes
    with path.open("ab") as file:
        file.write(b"b" * 100)  # the file grew past its map
    original = segments._pread

    def let_go_first(fd: int, size: int, offset: int) -> bytes:
        readers.close()
        other = os.open(os.devnull, os.O_RDONLY)  # would take the number of a closed descriptor
        try:
            return original(fd, size, offset)
        finally:
            os.close(other)

    monkeypatch.setattr(segments, "_pread", let_go_first)
    assert readers.pread(1, 20, 150) == b"b" * 20
    assert held_files(store_path) == []  # let go once the read is done


# ---------------------------------------------------------------------------------- descriptors


def test_open_files_stay_bounded_however_many_segments(
    open_engine: OpenEngine, store_path: Path
) -> None:
    writer = open_engine(segment_size=SEGMENT_SIZE)
    model = fill(writer, 300, 1)
    assert len(list_segments(store_path)) > 3 * MAX_OPEN_DESCRIPTORS
    reader = open_engine(readonly=True)
    for engine in (writer, reader):
        assert all(engine.get(k) == v for k, v in model.items())
    held = held_files(store_path)
    descriptors = [h for h in held if h.startswith("fd ")]
    maps = [h for h in held if h.startswith("map ")]
    # the lock file, the writer's active segment, and each engine's bounded set of files
    assert len(descriptors) <= 2 + 2 * MAX_OPEN_DESCRIPTORS
    assert len(maps) <= 2 * MAX_OPEN_DESCRIPTORS  # a map holds one of those descriptors


LOW_LIMIT_SCRIPT = """
import resource, sys
from logkv import Engine
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[2]), hard))
path = sys.argv[1]
def read_all(engine):
    keys = list(engine.keys())
    assert len(keys) == 300, len(keys)
    for key in keys:
        assert engine.get(key) == (key + ":0:").encode() * 520, key
reader = Engine.open(path, readonly=True)
read_all(reader)
with Engine.open(path, segment_size=4096) as writer:
    read_all(writer)
    writer.set("k0000", b"k0000:0:" * 520)
    assert writer.compact().retired_files > 300
    read_all(writer)
    read_all(reader)
    reader.refresh()
    read_all(reader)
reader.close()
print("ok")
"""


@pytest.mark.slow
def test_a_store_of_many_segments_works_under_a_low_descriptor_limit(
    open_engine: OpenEngine, store_path: Path
) -> None:
    writer = open_engine(segment_size=SEGMENT_SIZE)
    fill(writer, 300, 1)
    assert len(list_segments(store_path)) > 200
    writer.close()
    stats = (
        "import resource, sys; from logkv.cli.main import main; "
        "resource.setrlimit(resource.RLIMIT_NOFILE, "
        "(64, resource.getrlimit(resource.RLIMIT_NOFILE)[1])); "
        "sys.exit(main(['stats', '--json', sys.argv[1]]))"
    )
    for script, *args in (
        [stats, store_path],  # before compaction: 300+ segments
        [LOW_LIMIT_SCRIPT, store_path, "128"],
        [stats, store_path],
    ):
        program = [sys.executable, "-c", script]
        done = run_command(*args, program=program, text=True, timeout=120, code=0)
        assert "Traceback" not in done.stderr


# ---------------------------------------------------------------------------------- clients


def _logkv_configuration(tmp_path: Path) -> Configuration:
    return Configuration(
        storage_dir=str(tmp_path),
        purge_on_start=False,
        persist_state_interval=timedelta(hours=1),
        auto_compact=False,
        segment_size=SEGMENT_SIZE,
    )


async def _store_with_a_page(kvs: Any, pad: int) -> None:
    """A JSON record under ``page``, in a log of many segments."""
    for round_ in range(3):
        await kvs.set_value("page", {"round": round_, "pad": "x" * pad})
    for i in range(20):
        await kvs.set_value(f"other-{i:02d}", "y" * 500)


def _compact_and_store_bytes(engine: Engine) -> Any:
    """While a read is paused: compact, then store bytes under ``page`` (another type)."""

    def meanwhile() -> None:
        assert engine.compact().retired_files > 1
        engine.set("page", b"raw bytes", "application/octet-stream")

    return meanwhile


@pytest.mark.parametrize("pad", [100, 300_000], ids=["inline", "offloaded"])
async def test_kvs_reads_racing_a_compaction_return_one_records_value(
    tmp_path: Path, pad: int
) -> None:
    """The value read and the content type it is decoded with come from the same record."""
    kvs = await KeyValueStore.open(name="race", configuration=_logkv_configuration(tmp_path))
    await _store_with_a_page(kvs, pad)
    engine = kvs._client.engine  # type: ignore[union-attr]
    with pytest.MonkeyPatch.context() as patch:
        paused = pause_before_first_read(patch, engine, _compact_and_store_bytes(engine))
        assert await kvs.get_value("page") == b"raw bytes"
    assert paused and paused[0] > 0
    with pytest.MonkeyPatch.context() as patch:
        engine.set("page", b'{"again": true}', "application/json; charset=utf-8")
        paused = pause_before_first_read(patch, engine, _compact_and_store_bytes(engine))
        url = await kvs.get_public_url("page")
    assert paused and paused[0] > 0
    assert Path(url.removeprefix("file://")).read_bytes() == b"raw bytes"
    await kvs.close()


async def test_crawlee_client_reads_racing_a_compaction(tmp_path: Path) -> None:
    storage = LogKvStorageClient(
        settings=Configuration(auto_compact=False, segment_size=SEGMENT_SIZE)
    )
    client = await storage.create_kvs_client(
        name="race", configuration=CrawleeConfiguration(storage_dir=str(tmp_path))
    )
    for round_ in range(3):
        await client.set_value(key="page", value={"round": round_, "pad": "x" * 500})
    for i in range(20):
        await client.set_value(key=f"other-{i:02d}", value="y" * 500)
    engine = client.engine
    with pytest.MonkeyPatch.context() as patch:
        paused = pause_before_first_read(patch, engine, _compact_and_store_bytes(engine))
        record = await client.get_value(key="page")
    assert paused and paused[0] > 0
    assert record is not None
    assert (record.value, record.content_type) == (b"raw bytes", "application/octet-stream")
    for i in range(20):  # back in segments, which the next compaction retires
        await client.set_value(key=f"other-{i:02d}", value="z" * 500)
    engine.set("page", b'{"again": true}', "application/json; charset=utf-8")
    with pytest.MonkeyPatch.context() as patch:
        paused = pause_before_first_read(patch, engine, _compact_and_store_bytes(engine))
        records = [r async for r in client.iterate_entries()]
    assert paused and paused[0] > 0
    assert (records[0].key, records[0].value) == ("other-00", "z" * 500)
    assert [(r.value, r.content_type) for r in records if r.key == "page"] == [
        (b"raw bytes", "application/octet-stream")
    ]
    await client.close()
