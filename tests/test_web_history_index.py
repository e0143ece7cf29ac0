"""The console's history index (its model test, against the per-key search, is in
test_web_timelines.py): a torn tail is left out until it
is whole; a view racing the build falls back to the search; at most a few stores are held."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from timeline_model import (
    index_ready,
    indexed_console,
    same_as_full_read,
    with_last_record_to_tear,
    written,
)

from logkv import Engine
from logkv.cli.audit import key_changes
from logkv.errors import CorruptionError
from logkv.web import key_index
from logkv.web.key_index import StoreIndex, build_index, read_located


def test_a_torn_tail_is_left_out_of_the_index_until_it_is_whole(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    segment, whole = with_last_record_to_tear(folder)
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
    written(folder, 30)
    release, started = threading.Event(), threading.Event()
    real = key_index.build_index

    def slow(folder: Path, covers: int) -> StoreIndex:
        started.set()
        release.wait(10)
        return real(folder, covers)

    monkeypatch.setattr(key_index, "build_index", slow)
    opened, timelines = indexed_console()
    try:
        with opened.use(folder):
            pass
        assert started.wait(10)
        assert timelines.indexes.status(folder) == {"state": "building"}
        same_as_full_read(opened, timelines, folder)  # searched: the index is not ready
        with Engine.open(folder) as writer:  # the build raced by a writer's appends
            writer.set("a", b"while building")
            release.set()
            index_ready(opened, timelines, folder)
            writer.set("b", b"after it was built")
            same_as_full_read(opened, timelines, folder)
        assert timelines.indexes.status(folder)["state"] == "ready"
    finally:
        release.set()
        opened.close()


def test_the_index_is_what_a_first_view_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "store"
    written(folder, 30)
    opened, timelines = indexed_console()
    try:
        index_ready(opened, timelines, folder)

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
    opened, timelines = indexed_console(kept_stores=2)
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
    written(folder, 20, "value number {}")
    segment = sorted(folder.glob("*.seg"))[-1]
    data = bytearray(segment.read_bytes())
    at = data.index(b"value number 5")
    data[at] ^= 0x01  # a bit flipped inside a record written whole
    opened, timelines = indexed_console()
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
