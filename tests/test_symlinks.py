"""Symbolic links inside a store folder are never followed, for writes or reads.

A link planted at a name logkv uses (``LOCK``, a segment, a snapshot, ``META.json``, a temp
file, ``archive/``, ``public/``) could make logkv truncate, overwrite or move files outside the
store, or read them in as data. Every such open fails with :class:`UnsafeStoreError` naming the
link, and the file it points to is unchanged. The storage folder and the parents of a store
folder may be links: they are the user's choice of where the store lives.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from logkv import Configuration, Engine, KeyValueStore, UnsafeStoreError
from logkv.cli.main import main
from logkv.fsutil import atomic_write
from logkv.layout import list_segments, list_snapshots
from logkv.storage_clients._meta import read_meta
from logkv.storage_clients._public import PublicFiles

SEGMENT_SIZE = 4096
PRECIOUS = b"precious data outside the store\n"


def outside_file(tmp_path: Path) -> Path:
    target = tmp_path / "outside" / "victim"
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(PRECIOUS)
    return target


def make_store(path: Path, *, compact: bool = False, **options: object) -> None:
    with Engine.open(path, segment_size=SEGMENT_SIZE, **options) as engine:  # type: ignore[arg-type]
        for i in range(30):
            engine.set(f"key-{i:03d}", b"x" * 200)
        if compact:
            engine.compact()
            engine.set("after", b"compaction")


def plant_link(link: Path, target: Path) -> None:
    """Replace ``link`` (if there) by a symbolic link to ``target``."""
    if link.exists() or link.is_symlink():
        link.unlink()
    link.symlink_to(target)


def assert_refused(error: UnsafeStoreError, link: Path) -> None:
    assert error.path == link
    assert str(link) in str(error)
    assert "symbolic link" in str(error)


# ------------------------------------------------------------------ files the engine opens


def _lock(store: Path) -> Path:
    return store / "LOCK"


def _first_segment(store: Path) -> Path:
    return list_segments(store)[0][1]


def _last_segment(store: Path) -> Path:
    return list_segments(store)[-1][1]


def _next_segment(store: Path) -> Path:
    number = list_segments(store)[-1][0] + 1
    return store / f"{number:08d}.seg"


def _snapshot(store: Path) -> Path:
    return list_snapshots(store)[-1][1]


def _temp(store: Path) -> Path:
    return store / "00000099.snap.tmp"


@pytest.mark.parametrize(
    "where", [_lock, _first_segment, _last_segment, _next_segment, _snapshot, _temp]
)
@pytest.mark.parametrize("readonly", [False, True])
def test_open_refuses_a_linked_store_file(
    tmp_path: Path, where: Callable[[Path], Path], readonly: bool
) -> None:
    store = tmp_path / "store"
    make_store(store, compact=True)
    victim = outside_file(tmp_path)
    link = where(store)
    plant_link(link, victim)
    with pytest.raises(UnsafeStoreError) as caught:
        Engine.open(store, segment_size=SEGMENT_SIZE, readonly=readonly)
    assert_refused(caught.value, link)
    assert victim.read_bytes() == PRECIOUS


def test_a_new_store_with_a_linked_lock_file_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    victim = outside_file(tmp_path)
    plant_link(store / "LOCK", victim)
    with pytest.raises(UnsafeStoreError) as caught:
        Engine.open(store)
    assert_refused(caught.value, store / "LOCK")
    assert victim.read_bytes() == PRECIOUS


def test_a_snapshot_temp_link_planted_while_open_is_not_followed(tmp_path: Path) -> None:
    store = tmp_path / "store"
    victim = outside_file(tmp_path)
    with Engine.open(store, segment_size=SEGMENT_SIZE) as engine:
        for i in range(30):
            engine.set(f"key-{i:03d}", b"x" * 200)
        covers = list_segments(store)[-1][0]
        link = store / f"{covers:08d}.snap.tmp"
        plant_link(link, victim)
        with pytest.raises(UnsafeStoreError) as caught:
            engine.compact()
        assert_refused(caught.value, link)
        assert engine.get("key-001") == b"x" * 200
        link.unlink()
        assert engine.compact().snapshot is not None  # the failed one left nothing running
    assert victim.read_bytes() == PRECIOUS


def test_a_segment_link_planted_while_open_is_not_followed(tmp_path: Path) -> None:
    store = tmp_path / "store"
    victim = outside_file(tmp_path)
    with Engine.open(store, segment_size=SEGMENT_SIZE) as engine:
        engine.set("a", b"1")
        link = _next_segment(store)
        plant_link(link, victim)
        with pytest.raises(UnsafeStoreError) as caught:
            for i in range(40):  # until the writer rotates into the link's name
                engine.set(f"key-{i:03d}", b"x" * 200)
        assert_refused(caught.value, link)
    assert victim.read_bytes() == PRECIOUS


@pytest.mark.parametrize("folder_name", ["archive", "public"])
def test_open_refuses_a_linked_subfolder(tmp_path: Path, folder_name: str) -> None:
    store = tmp_path / "store"
    make_store(store, retention="archive")
    outside = tmp_path / "outside-folder"
    outside.mkdir()
    (outside / "00000001.seg").write_bytes(PRECIOUS)
    plant_link(store / folder_name, outside)
    with pytest.raises(UnsafeStoreError) as caught:
        Engine.open(store, segment_size=SEGMENT_SIZE, retention="archive")
    assert_refused(caught.value, store / folder_name)
    assert [p.name for p in outside.iterdir()] == ["00000001.seg"]
    assert (outside / "00000001.seg").read_bytes() == PRECIOUS


def test_open_refuses_a_linked_archived_segment(tmp_path: Path) -> None:
    store = tmp_path / "store"
    make_store(store, compact=True, retention="archive")
    victim = outside_file(tmp_path)
    link = list_segments(store / "archive")[0][1]
    plant_link(link, victim)
    with pytest.raises(UnsafeStoreError) as caught:
        Engine.open(store, readonly=True)
    assert_refused(caught.value, link)


def test_an_archive_link_planted_while_open_is_not_followed(tmp_path: Path) -> None:
    store = tmp_path / "store"
    outside = tmp_path / "outside-folder"
    outside.mkdir()
    with Engine.open(store, segment_size=SEGMENT_SIZE, retention="archive") as engine:
        for i in range(30):
            engine.set(f"key-{i:03d}", b"x" * 200)
        plant_link(store / "archive", outside)
        with pytest.raises(UnsafeStoreError) as caught:
            engine.compact()
        assert_refused(caught.value, store / "archive")
    assert list(outside.iterdir()) == []


# ------------------------------------------------------------------ META.json, public files


def test_a_linked_meta_file_is_not_read(tmp_path: Path) -> None:
    store = tmp_path / "store"
    make_store(store)
    victim = outside_file(tmp_path)
    plant_link(store / "META.json", victim)
    with pytest.raises(UnsafeStoreError) as caught:
        read_meta(store)
    assert_refused(caught.value, store / "META.json")


def test_a_linked_temp_file_is_not_written_through(tmp_path: Path) -> None:
    victim = outside_file(tmp_path)
    plant_link(tmp_path / "META.json.tmp", victim)
    with pytest.raises(UnsafeStoreError) as caught:
        atomic_write(tmp_path / "META.json", b"{}")
    assert_refused(caught.value, tmp_path / "META.json.tmp")
    assert victim.read_bytes() == PRECIOUS
    assert not (tmp_path / "META.json").exists()


def test_public_files_never_go_through_a_link(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    outside = tmp_path / "outside-folder"
    outside.mkdir()
    (outside / "page.html").write_bytes(PRECIOUS)
    plant_link(store / "public", outside)
    public = PublicFiles(store)
    with pytest.raises(UnsafeStoreError):
        public.publish("page", b"<p>new</p>", "text/html")
    with pytest.raises(UnsafeStoreError):
        public.reload(lambda prefix: [], lambda key: None)  # would delete unknown files
    assert [p.name for p in outside.iterdir()] == ["page.html"]
    assert (outside / "page.html").read_bytes() == PRECIOUS


def test_a_linked_public_temp_file_is_not_written_through(tmp_path: Path) -> None:
    victim = outside_file(tmp_path)
    (tmp_path / "store").mkdir()
    public = PublicFiles(tmp_path / "store")
    public.publish("page", b"<p>old</p>", "text/html")
    link = public.path_of("page", "text/html").with_suffix(".html.tmp")
    plant_link(link, victim)
    with pytest.raises(UnsafeStoreError):
        public.publish("page", b"<p>new</p>", "text/html")
    assert victim.read_bytes() == PRECIOUS


async def test_the_async_open_refuses_a_linked_meta_file(tmp_path: Path) -> None:
    configuration = Configuration(
        storage_dir=str(tmp_path / "storage"),
        purge_on_start=False,
        persist_state_interval=timedelta(hours=1),
    )
    kvs = await KeyValueStore.open(name="crawl", configuration=configuration)
    await kvs.set_value("a", 1)
    await kvs.close()
    store = tmp_path / "storage" / "key_value_stores" / "crawl"
    victim = outside_file(tmp_path)
    plant_link(store / "META.json", victim)
    with pytest.raises(UnsafeStoreError):
        await KeyValueStore.open(name="crawl", configuration=configuration)
    assert victim.read_bytes() == PRECIOUS


# ---------------------------------------------------------------------------- allowed links


async def test_the_storage_folder_and_its_parents_may_be_links(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (real / "storage" / "key_value_stores").mkdir(parents=True)
    (tmp_path / "storage-link").symlink_to(real / "storage")
    configuration = Configuration(
        storage_dir=str(tmp_path / "storage-link"),
        purge_on_start=False,
        persist_state_interval=timedelta(hours=1),
    )
    for _ in range(2):
        kvs = await KeyValueStore.open(name="crawl", configuration=configuration)
        await kvs.set_value("a", 1)
        assert await kvs.get_value("a") == 1
        await kvs.close()
    assert (real / "storage" / "key_value_stores" / "crawl" / "META.json").is_file()
    # A link to the store folder itself works too: it is where the user keeps the store.
    os.symlink(real / "storage" / "key_value_stores" / "crawl", tmp_path / "store-link")
    with Engine.open(tmp_path / "store-link") as engine:
        assert engine.get("a") is not None


# ------------------------------------------------------------------ logkv dump


def test_dump_reads_no_link_inside_a_store_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A segment replaced by a link to a copy of itself (valid records, outside the store)
    is reported, not read; a file named on the command line is read even through a link."""
    store = tmp_path / "s"
    make_store(store)
    segment = list_segments(store)[0][1]
    copy = tmp_path / "outside" / segment.name
    copy.parent.mkdir()
    copy.write_bytes(segment.read_bytes())
    plant_link(segment, copy)
    code = main(["dump", "--json", str(store)])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    problems = [line for line in lines if "error" in line]
    assert code != 0
    assert [(line["error"], line["path"]) for line in problems] == [("unreadable", str(segment))]
    assert "symbolic link" in problems[0]["reason"]
    assert not [line for line in lines if line.get("file") == segment.name]  # nothing read
    given = tmp_path / "given.seg"
    given.symlink_to(copy)
    assert main(["dump", "--json", str(given)]) == 0
    assert any("key" in json.loads(line) for line in capsys.readouterr().out.splitlines())
