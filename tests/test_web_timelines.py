"""The console's key timelines: kept fresh as a writer appends, read whole again after a
compaction, and always what a full read of the key's history says (seqs, operations, values)."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from timeline_model import (
    KEYS,
    OPS,
    index_ready,
    indexed_console,
    run_ops,
    same_as_full_read,
    with_last_record_to_tear,
)

from logkv import Engine
from logkv.cli.audit import key_changes
from logkv.web import timelines as module
from logkv.web.opened import OpenedStores
from logkv.web.timelines import Timelines


@pytest.mark.slow
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=OPS)
@pytest.mark.parametrize("indexed", [False, True], ids=["searched", "from-the-index"])
def test_a_timeline_kept_fresh_matches_a_full_read(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[int, int, int]], indexed: bool
) -> None:
    """Timelines kept fresh (searched), or every view a first view read from the store's
    history index once it is ready, are what the per-key search of the whole log says."""
    folder = tmp_path_factory.mktemp("t") / "store"
    opened, timelines = indexed_console() if indexed else (OpenedStores(), Timelines())

    def look() -> None:
        if indexed:
            index_ready(opened, timelines, folder)
        same_as_full_read(opened, timelines, folder)

    with Engine.open(folder, segment_size=4096) as writer:
        try:
            run_ops(writer, ops, look)
        finally:
            opened.close()


def test_a_record_torn_at_the_first_view_is_found_once_whole(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    segment, whole = with_last_record_to_tear(folder)
    segment.write_bytes(whole[:-5])  # the last frame cut after its key
    opened, timelines = OpenedStores(), Timelines()
    try:
        assert len(timelines.get(opened, folder, "k").versions) == 5
        segment.write_bytes(whole)  # the writer finished the frame
        versions = timelines.get(opened, folder, "k").versions
        assert [v.seq for v in versions] == [c.seq for c in key_changes(folder, "k").changes]
        assert len(versions) == 6
    finally:
        opened.close()


def test_only_the_appended_bytes_are_searched_after_the_first_view(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "store"
    opened, timelines = OpenedStores(), Timelines()
    searched: list[tuple[int, int]] = []
    real = module.key_records_from

    def spy(folder: Path, key: str, segment: int, offset: int) -> object:
        searched.append((segment, offset))
        return real(folder, key, segment, offset)

    monkeypatch.setattr(module, "key_records_from", spy)
    rng = random.Random(5)
    try:
        with Engine.open(folder) as writer:
            for i in range(50):
                writer.set(rng.choice(KEYS), f"{i}".encode())
            first = len(timelines.get(opened, folder, "a").versions)
            writer.set("a", b"new")
            assert len(timelines.get(opened, folder, "a").versions) == first + 1
        assert len(searched) == 1 and searched[0][1] > 16  # from where the first view stopped
    finally:
        opened.close()


def test_views_from_many_threads_beside_a_writer_agree_with_a_full_read(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    opened, timelines = OpenedStores(), Timelines()
    problems: list[BaseException] = []
    stop = threading.Event()

    def view() -> None:
        try:
            while not stop.is_set():
                versions = timelines.get(opened, folder, "a").versions
                seqs = [v.seq for v in versions]
                assert seqs == sorted(set(seqs))
        except BaseException as exc:  # reported by the test
            problems.append(exc)

    try:
        with Engine.open(folder, segment_size=4096) as writer:
            writer.set("a", b"0")
            threads = [threading.Thread(target=view) for _ in range(3)]
            for thread in threads:
                thread.start()
            for i in range(300):
                writer.set(KEYS[i % 3], b"v" * (i % 50))
            stop.set()
            for thread in threads:
                thread.join()
            assert not problems, problems
            same_as_full_read(opened, timelines, folder)
    finally:
        opened.close()
