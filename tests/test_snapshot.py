"""Snapshots: the file format, damaged snapshots, leftover temp files, read-only followers.

The rules under test (see ``logkv/snapshot.py`` and ``logkv/engine.py``): open uses the newest
snapshot that loads, plus the segments after it. A damaged newest snapshot is set aside and the
store falls back to an older snapshot and the log (archived segments included); when the log it
needs is gone (retention delete) open raises ``CorruptionError`` instead of losing data. A
damaged record frame inside a snapshot is caught when it is read.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from store_model import Model, dump

from logkv import MISSING, CorruptionError, Engine
from logkv.blocks import TAIL, TAIL_MAGIC, read_block
from logkv.layout import ARCHIVE_DIR, list_segments, list_snapshots
from logkv.snapshot import (
    SNAPSHOT_HEADER,
    SNAPSHOT_MAGIC,
    SNAPSHOT_VERSION,
    load_snapshot,
)
from logkv.verify import verify

SEGMENT_SIZE = 4096


def write(engine: Engine, model: Model, start: int, stop: int, tag: str) -> None:
    """Set keys ``start..stop-1`` (every 7th one to a stored None); mirror them in ``model``."""
    for i in range(start, stop):
        key = f"key/{i:05d}"
        value = None if i % 7 == 0 else f"{tag}:{i}:".encode() * (1 + i % 5)
        content_type = "text/plain" if i % 3 else None
        engine.set(key, value, content_type)
        model[key] = (value, content_type)


def delete(engine: Engine, model: Model, keys: range) -> None:
    """Delete the keys numbered in ``keys`` (those that exist); mirror them in ``model``."""
    for i in keys:
        key = f"key/{i:05d}"
        assert engine.delete(key) == (key in model)
        model.pop(key, None)


def build(path: Path, retention: str, *, interrupt_last_retire: bool = False) -> Model:
    """A store that went through two compactions, with writes and deletes around them.

    With ``interrupt_last_retire`` the second compaction fails in its retire step (after the
    new snapshot was installed), which leaves the previous snapshot and its log in place.
    """
    model: Model = {}
    with Engine.open(path, segment_size=SEGMENT_SIZE, retention=retention) as engine:
        write(engine, model, 0, 300, "a")
        delete(engine, model, range(0, 300, 4))
        engine.compact()
        write(engine, model, 150, 450, "b")
        delete(engine, model, range(1, 450, 5))
        if interrupt_last_retire:
            patch = pytest.MonkeyPatch()
            patch.setattr("logkv.compaction.retire_files", _raise_oserror)
            try:
                with pytest.raises(OSError, match="injected"):
                    engine.compact()
            finally:
                patch.undo()
        else:
            engine.compact()
        write(engine, model, 400, 500, "c")
        delete(engine, model, range(2, 500, 11))
    return model


def _raise_oserror(*args: object, **kwargs: object) -> list[int]:
    raise OSError("injected failure")


def meta_of(path: Path) -> tuple[int, dict[str, object]]:
    """The offset of a snapshot's meta block and the block's decoded contents."""
    data = path.read_bytes()
    meta_offset, magic = TAIL.unpack_from(data, len(data) - TAIL.size)
    assert magic == TAIL_MAGIC
    meta, _ = read_block(path, data, meta_offset, "snapshot meta")
    assert isinstance(meta, dict)
    return meta_offset, meta


def flip(path: Path, offset: int) -> None:
    """Invert one byte of ``path``."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def damage_header(path: Path) -> None:
    flip(path, 3)


def damage_hint(path: Path) -> None:
    _, meta = meta_of(path)
    hint_offset = meta["hint_offset"]
    assert isinstance(hint_offset, int)
    flip(path, hint_offset + 8 + 5)


def damage_meta(path: Path) -> None:
    meta_offset, _ = meta_of(path)
    flip(path, meta_offset + 8 + 4)


def damage_tail(path: Path) -> None:
    flip(path, path.stat().st_size - 2)


def damage_tail_offset(path: Path) -> None:
    flip(path, path.stat().st_size - TAIL.size)


def truncate_half(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def truncate_tail(path: Path) -> None:
    os.truncate(path, path.stat().st_size - 1)


def truncate_empty(path: Path) -> None:
    os.truncate(path, 0)


DAMAGES: dict[str, Callable[[Path], None]] = {
    "header": damage_header,
    "hint": damage_hint,
    "meta": damage_meta,
    "tail-magic": damage_tail,
    "tail-offset": damage_tail_offset,
    "truncated-half": truncate_half,
    "truncated-1-byte": truncate_tail,
    "emptied": truncate_empty,
}


def listing(path: Path) -> list[str]:
    """Every file below ``path`` with its size (to prove that nothing changed)."""
    return sorted(
        f"{p.relative_to(path)}:{p.stat().st_size}" for p in path.rglob("*") if p.is_file()
    )


# ---------------------------------------------------------------------------- the file format


def test_snapshot_layout_and_hint_match_the_index(tmp_path: Path) -> None:
    path = tmp_path / "store"
    model: Model = {}
    with Engine.open(path, segment_size=SEGMENT_SIZE) as engine:
        write(engine, model, 0, 200, "a")
        delete(engine, model, range(0, 200, 3))
        last_seq = engine.last_seq
        result = engine.compact()
        assert result.snapshot is not None
        assert result.records == len(model)
        assert engine.stats().snapshot_covers == result.covers
        index = {key: engine.entry(key) for key in engine.keys(None)}
        write(engine, model, 500, 510, "after")  # goes to the log after the snapshot
    snapshot = result.snapshot
    assert snapshot.name == f"{result.covers:08d}.snap"
    data = snapshot.read_bytes()
    magic, version, covers = SNAPSHOT_HEADER.unpack_from(data, 0)
    assert (magic, version, covers) == (SNAPSHOT_MAGIC, SNAPSHOT_VERSION, result.covers)
    assert data.endswith(TAIL_MAGIC)
    info, entries = load_snapshot(snapshot, result.covers)
    assert info.last_seq == last_seq
    assert info.records == len(entries) == result.records
    assert info.file_bytes == len(data)
    # The hint lists the keys in order, each pointing into the snapshot exactly where the
    # index of the running engine pointed after the switch.
    assert list(entries) == sorted(entries)
    assert entries == index
    assert all(entry[0] == -result.covers for entry in entries.values())
    with Engine.open(path, segment_size=SEGMENT_SIZE) as engine:
        assert engine.report.clean
        assert dump(engine) == model
        assert engine.stats().snapshot_covers == result.covers
    assert verify(path).ok


def test_a_snapshot_of_an_empty_store_and_of_only_deletes(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with Engine.open(path, segment_size=SEGMENT_SIZE) as engine:
        assert engine.compact().snapshot is None  # nothing written: nothing to compact
        engine.set("a", b"1")
        engine.delete("a")
        result = engine.compact()
        assert result.snapshot is not None
        assert result.records == 0
        assert len(engine) == 0
    with Engine.open(path) as engine:
        assert len(engine) == 0
        assert engine.last_seq == 2
        assert engine.set("b", b"2") == 3  # the sequence goes on after the snapshot
    with Engine.open(path) as engine:
        assert dump(engine) == {"b": (b"2", None)}


# ---------------------------------------------------------------------------- damaged snapshots


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("previous_snapshot", [False, True], ids=["archive-only", "previous"])
def test_damaged_newest_snapshot_falls_back_with_archive(
    tmp_path: Path, damage: str, previous_snapshot: bool
) -> None:
    path = tmp_path / "store"
    model = build(path, "archive", interrupt_last_retire=previous_snapshot)
    snapshots = list_snapshots(path)
    assert len(snapshots) == (2 if previous_snapshot else 1)
    newest = snapshots[-1][1]
    DAMAGES[damage](newest)

    # A read-only open changes nothing and still sees everything.
    before = listing(path)
    with Engine.open(path, readonly=True) as reader:
        assert reader.report.damaged_snapshots
        assert dump(reader) == model
    assert listing(path) == before

    with Engine.open(path, segment_size=SEGMENT_SIZE, retention="archive") as engine:
        assert [e.path for e in engine.report.damaged_snapshots] == [newest]
        assert not engine.report.clean
        assert dump(engine) == model
        engine.set("after/fallback", b"x")
        model["after/fallback"] = (b"x", None)
    assert not newest.exists()  # set aside, so that the next open does not trip on it again

    # The next open needs no fallback, and compaction works again.
    with Engine.open(path, segment_size=SEGMENT_SIZE, retention="archive") as engine:
        assert engine.report.clean
        assert dump(engine) == model
        engine.compact()
        assert dump(engine) == model
    with Engine.open(path, segment_size=SEGMENT_SIZE) as engine:
        assert engine.report.clean
        assert dump(engine) == model
    assert verify(path).ok


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_newest_snapshot_without_the_log_is_an_error(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "store"
    build(path, "delete")
    [(_, newest)] = list_snapshots(path)
    DAMAGES[damage](newest)
    before = listing(path)
    for readonly in (True, False):
        with pytest.raises(CorruptionError) as caught:
            Engine.open(path, readonly=readonly)
        assert "missing" in caught.value.reason
        assert "damaged" in caught.value.reason  # says why the log alone is not enough
    assert listing(path) == before  # nothing renamed, deleted or truncated
    # The failed writable open released the lock: another one fails the same way, not with
    # StoreLockedError.
    with pytest.raises(CorruptionError):
        Engine.open(path)


def test_damaged_newest_snapshot_with_delete_falls_back_when_the_log_is_still_there(
    tmp_path: Path,
) -> None:
    # The second compaction installed its snapshot but never retired the log: the previous
    # snapshot and every segment after it are still there, so nothing is lost.
    path = tmp_path / "store"
    model = build(path, "delete", interrupt_last_retire=True)
    assert len(list_snapshots(path)) == 2
    damage_hint(list_snapshots(path)[-1][1])
    with Engine.open(path, segment_size=SEGMENT_SIZE) as engine:
        assert len(engine.report.damaged_snapshots) == 1
        assert dump(engine) == model
    with Engine.open(path, segment_size=SEGMENT_SIZE) as engine:
        assert engine.report.clean
        assert dump(engine) == model
        engine.compact()
    with Engine.open(path) as engine:
        assert dump(engine) == model


def test_flipped_value_in_a_snapshot_is_caught_on_read(tmp_path: Path) -> None:
    path = tmp_path / "store"
    model: Model = {}
    with Engine.open(path, segment_size=SEGMENT_SIZE) as engine:
        write(engine, model, 0, 100, "a")
        result = engine.compact()
        assert result.snapshot is not None
        victim = "key/00043"
        entry = engine.entry(victim)
        assert entry is not None and entry[0] == -result.covers and entry[3] > 0
    flip(result.snapshot, entry[1] + entry[2] + entry[3] // 2)  # a byte of the value

    with Engine.open(path, segment_size=SEGMENT_SIZE) as engine:  # hint and meta are fine
        with pytest.raises(CorruptionError) as caught:
            engine.get(victim)
        assert caught.value.path == result.snapshot
        assert caught.value.offset == entry[1]
        assert caught.value.reason == "checksum mismatch"
        for key, (value, content_type) in model.items():
            if key != victim:
                assert engine.get_with_type(key) == (value, content_type)
        # Compaction will not copy a damaged record into a new snapshot.
        engine.set("new", b"record")
        with pytest.raises(CorruptionError):
            engine.compact()
        assert not list(path.glob("*.tmp"))
        assert engine.get("new") == b"record"
        # Overwriting the damaged key heals the store; compaction works again.
        engine.set(victim, b"healed")
        model[victim] = (b"healed", None)
        model["new"] = (b"record", None)
        engine.compact()
        assert dump(engine) == model
    report = verify(path)
    assert report.ok, report.problems


def test_verify_reports_a_damaged_snapshot_record(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with Engine.open(path) as engine:
        engine.set("a", b"alpha" * 10)
        engine.set("b", b"beta" * 10)
        result = engine.compact()
        entry = engine.entry("b")
    assert result.snapshot is not None and entry is not None
    assert verify(path).ok
    flip(result.snapshot, entry[1] + entry[2] + 1)
    report = verify(path)
    assert not report.ok
    assert report.problems is not None
    assert any("checksum" in problem for problem in report.problems)


# ---------------------------------------------------------------------------- temp files


def test_leftover_snapshot_temp_file_is_removed_on_open(tmp_path: Path) -> None:
    path = tmp_path / "store"
    model: Model = {}
    with Engine.open(path, segment_size=SEGMENT_SIZE) as engine:
        write(engine, model, 0, 50, "a")
        engine.compact()
        write(engine, model, 50, 80, "b")
    covers = list_snapshots(path)[-1][0]
    leftover = path / f"{covers + 1:08d}.snap.tmp"
    leftover.write_bytes(SNAPSHOT_HEADER.pack(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, covers + 1))
    with Engine.open(path, readonly=True) as reader:  # read-only: ignored and kept
        assert dump(reader) == model
    assert leftover.exists()
    with Engine.open(path, segment_size=SEGMENT_SIZE) as engine:
        assert not leftover.exists()
        assert engine.report.clean
        assert dump(engine) == model
        engine.compact()  # the same name is free for the next snapshot
        assert dump(engine) == model


# ---------------------------------------------------------------------------- read-only followers


@pytest.mark.parametrize("retention", ["delete", "archive"])
def test_readonly_follower_sees_a_compaction_after_refresh(tmp_path: Path, retention: str) -> None:
    path = tmp_path / "store"
    model: Model = {}
    with Engine.open(path, segment_size=SEGMENT_SIZE, retention=retention) as engine:
        write(engine, model, 0, 200, "a")
        reader = Engine.open(path, readonly=True)
        try:
            old = dict(model)
            assert dump(reader) == old
            write(engine, model, 100, 300, "b")
            delete(engine, model, range(0, 300, 6))
            engine.compact()
            assert not [n for n, _ in list_segments(path) if n <= engine.stats().snapshot_covers]
            # Not refreshed yet: the follower still serves its old view, from files it holds
            # open even though compaction retired them.
            assert dump(reader) == old
            assert reader.refresh() == engine.last_seq - len(old)
            assert dump(reader) == model
            assert reader.stats().snapshot_covers == engine.stats().snapshot_covers
            write(engine, model, 300, 320, "c")
            assert reader.refresh() == 20
            assert dump(reader) == model
            engine.compact()
            delete(engine, model, range(300, 320, 2))
            reader.refresh()
            assert dump(reader) == model
            assert reader.last_seq == engine.last_seq
        finally:
            reader.close()
    if retention == "archive":
        assert list_segments(path / ARCHIVE_DIR)[0][0] == 1


def test_readonly_follower_refreshes_while_the_writer_compacts(tmp_path: Path) -> None:
    """A follower refreshing in a loop beside a writer that writes and compacts in a loop:
    after every refresh it shows exactly the writer's state as of the follower's last_seq."""
    path = tmp_path / "store"
    model: Model = {}
    states: list[Model] = []  # states[seq - 1]: the writer's state after record seq
    stop = threading.Event()
    problems: list[str] = []
    engine = Engine.open(path, segment_size=SEGMENT_SIZE)

    def record(seq: int) -> None:
        assert seq == len(states) + 1
        states.append(dict(model))

    for i in range(100):
        model[f"key/{i:05d}"] = (b"seed", None)
        record(engine.set(f"key/{i:05d}", b"seed"))

    def follow() -> None:
        checked = 0
        try:
            with Engine.open(path, readonly=True) as reader:
                while not stop.is_set():
                    reader.refresh()
                    seq = reader.last_seq
                    if seq <= len(states):  # the writer has recorded that state
                        if dump(reader) != states[seq - 1]:
                            problems.append(f"after refresh at seq {seq}: not the writer's state")
                        checked += 1
                    with Engine.open(path, readonly=True) as fresh:  # and opens race too
                        if (
                            fresh.last_seq <= len(states)
                            and dump(fresh) != states[fresh.last_seq - 1]
                        ):
                            problems.append(f"fresh open at seq {fresh.last_seq}: wrong state")
        except BaseException as exc:
            problems.append(repr(exc))
        if checked == 0:
            problems.append("the follower never checked a state")

    follower = threading.Thread(target=follow)
    follower.start()
    rng = random.Random(3)
    try:
        for round_ in range(12):
            for _ in range(120):
                key = f"key/{rng.randrange(200):05d}"
                if rng.random() < 0.25 and key in model:
                    del model[key]
                    assert engine.delete(key)
                    record(engine.last_seq)
                else:
                    value = rng.randbytes(rng.randrange(0, 120))
                    model[key] = (value, None)
                    record(engine.set(key, value))
            engine.compact(retention="archive" if round_ % 3 == 0 else "delete")
    finally:
        stop.set()
        follower.join()
    assert problems == []
    with Engine.open(path, readonly=True) as reader:
        assert dump(reader) == model
    engine.close()


def test_get_returns_missing_not_a_stale_value_after_refresh(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with Engine.open(path) as engine:
        engine.set("gone", b"soon")
        with Engine.open(path, readonly=True) as reader:
            engine.delete("gone")
            engine.compact()
            assert reader.get("gone") == b"soon"
            reader.refresh()
            assert reader.get("gone") is MISSING
