"""The console's history index: a first view read from it is what the per-key search of the
whole log says, as a writer appends, deletes and compacts; a torn tail is left out until it
is whole; a view racing the build falls back to the search; at most a few stores are held."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logkv import Engine
from logkv.errors import CorruptionError
from logkv.cli.audit import key_changes
from logkv.format import SetRecord
from logkv.web import key_index
from logkv.web.key_index import HistoryIndexes, StoreIndex, build_index, read_located
from logkv.web.opened import OpenedStores
from logkv.web.timelines import Timelines, read_version

KEYS = ("a", "b", "c")


def _console(kept_stores: int = 4) -> tuple[OpenedStores, Timelines]:
    """A console's opens and timelines with no timeline kept: every view is a first view."""
    timelines = Timelines(kept=0, indexes=HistoryIndexes(kept_stores))
    return OpenedStores(on_use=timelines.indexes.ensure), timelines


def _ready(opened: OpenedStores, timelines: Timelines, folder: Path) -> StoreIndex:
    with opened.use(folder) as store:
        covers = store.engine.snapshot_covers
    timelines.indexes.join()
    index = timelines.indexes.ready(folder, covers)
    assert index is not None
    return index


def _same_as_search(opened: OpenedStores, timelines: Timelines, folder: Path) -> None:
    for key in KEYS:
        timeline = timelines.get(opened, folder, key)
        full = key_changes(folder, key)
        assert [(v.seq, v.op, v.size, v.content_type) for v in timeline.versions] == [
            (c.seq, c.op, c.size, c.content_type) for c in full.changes
        ], key
        assert timeline.starts_at == full.starts_at
        for version, change in zip(timeline.versions, full.changes, strict=True):
            record = read_version(version)
            if change.op == "set":
                assert isinstance(record, SetRecord) and record.value == change.value


# An op: (0 set, 1 delete, 2 compact archive, 3 compact delete, 4 look), key index, size.
OPS = st.lists(
    st.tuples(st.integers(0, 4), st.integers(0, len(KEYS) - 1), st.integers(0, 900)),
    max_size=40,
)


@pytest.mark.slow
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=OPS)
def test_first_views_from_the_index_match_the_per_key_search(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[int, int, int]]
) -> None:
    folder = tmp_path_factory.mktemp("t") / "store"
    opened, timelines = _console()
    with Engine.open(folder, segment_size=4096) as writer:
        writer.set("a", b"first")
        try:
            for op, k, size in ops:
                key = KEYS[k]
                if op == 0:
                    writer.set(key, bytes([65 + size % 26]) * size, "text/plain")
                elif op == 1:
                    writer.delete(key)
                elif op in (2, 3):
                    writer.compact("archive" if op == 2 else "delete")
                else:  # the index is ready, then read up to the writer's appends
                    _ready(opened, timelines, folder)
                    _same_as_search(opened, timelines, folder)
            _ready(opened, timelines, folder)
            _same_as_search(opened, timelines, folder)
        finally:
            opened.close()


def test_a_torn_tail_is_left_out_of_the_index_until_it_is_whole(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    with Engine.open(folder) as writer:
        for i in range(5):
            writer.set("k", f"value {i}".encode())
        writer.set("other", b"x" * 100)
        writer.set("k", b"the last one, torn at first")
    segment = sorted(folder.glob("*.seg"))[-1]
    whole = segment.read_bytes()
    (folder / "SYNCED").unlink()  # a writer mid-append: nothing synced past the cut
    for cut in (5, 20, 40):
        segment.write_bytes(whole[:-cut])
        index = build_index(folder, 0)
        assert index.records == 6
        assert index.read_to[1] < len(whole) - cut  # stopped where the torn frame starts
        segment.write_bytes(whole)  # the writer finished the frame
        index.catch_up()
        assert index.records == 7
        found = [read_located(path, offset)[1] for path, offset in index.located("k")]
        assert [r.seq for r in found] == [c.seq for c in key_changes(folder, "k").changes]


def test_a_view_racing_the_build_falls_back_to_the_search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "store"
    with Engine.open(folder) as writer:
        for i in range(30):
            writer.set(KEYS[i % 3], f"{i}".encode())
    release, started = threading.Event(), threading.Event()
    real = key_index.build_index

    def slow(folder: Path, covers: int) -> StoreIndex:
        started.set()
        release.wait(10)
        return real(folder, covers)

    monkeypatch.setattr(key_index, "build_index", slow)
    opened, timelines = _console()
    try:
        with opened.use(folder):
            pass
        assert started.wait(10)
        assert timelines.indexes.status(folder) == {"state": "building"}
        _same_as_search(opened, timelines, folder)  # searched: the index is not ready
        with Engine.open(folder) as writer:  # the build raced by a writer's appends
            writer.set("a", b"while building")
            release.set()
            _ready(opened, timelines, folder)
            writer.set("b", b"after it was built")
            _same_as_search(opened, timelines, folder)
        assert timelines.indexes.status(folder)["state"] == "ready"
    finally:
        release.set()
        opened.close()


def test_the_index_is_what_a_first_view_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "store"
    with Engine.open(folder) as writer:
        for i in range(30):
            writer.set(KEYS[i % 3], f"{i}".encode())
    opened, timelines = _console()
    try:
        _ready(opened, timelines, folder)

        def no_search(*_: object) -> None:
            raise AssertionError("searched the log")

        monkeypatch.setattr("logkv.web.timelines.key_log", no_search)
        assert len(timelines.get(opened, folder, "a").versions) == 10
    finally:
        opened.close()


def test_at_most_the_bound_of_stores_is_indexed(tmp_path: Path) -> None:
    folders = []
    for n in range(5):
        folder = tmp_path / f"store{n}"
        with Engine.open(folder) as writer:
            writer.set("a", f"{n}".encode())
        folders.append(folder)
    opened, timelines = _console(kept_stores=2)
    try:
        for folder in folders:
            with opened.use(folder):
                pass
            assert len(timelines.indexes.held()) <= 2
        timelines.indexes.join()
        assert timelines.indexes.held() == folders[-2:]
        with opened.use(folders[3]):  # used again: the most recent
            pass
        assert timelines.indexes.held() == [folders[4], folders[3]]
    finally:
        opened.close()


def test_damage_in_the_log_leaves_no_index_and_the_view_reports_it(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    with Engine.open(folder) as writer:
        for i in range(20):
            writer.set(KEYS[i % 3], f"value number {i}".encode())
    segment = sorted(folder.glob("*.seg"))[-1]
    data = bytearray(segment.read_bytes())
    at = data.index(b"value number 5")
    data[at] ^= 0x01  # a bit flipped inside a record written whole
    opened, timelines = _console()
    try:
        segment.write_bytes(bytes(data))
        with pytest.raises(CorruptionError):
            build_index(folder, 0)
        timelines.indexes.ensure(folder, 0)
        timelines.indexes.join()
        assert timelines.indexes.status(folder) == {"state": "none"}
        assert timelines.indexes.ready(folder, 0) is None
        with pytest.raises(CorruptionError):  # the search reports it, as without an index
            timelines.get(opened, folder, "a")
    finally:
        opened.close()
