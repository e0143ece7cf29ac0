"""Atomic batches (``Engine.set_many``): all of a batch or none of it, whatever cuts the log.

The log is cut at every byte of a batch's tail, frames of a batch are damaged before and past
the synced mark, and batches are broken by hand (a missing first record, a record outside the
batch in its middle); every reader must agree that a partial batch is never applied.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import msgpack
import pytest
from conftest import run_command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logkv import Engine
from logkv.errors import CorruptionError
from logkv.format import (
    GENESIS_CHAIN,
    OP_CONTINUES,
    SEGMENT_HEADER_SIZE,
    BadFrame,
    Op,
    batch_op,
    encode_batch,
    encode_record,
    encode_segment_header,
    find_next_frame,
    iter_frames,
)
from logkv.history import key_history
from logkv.layout import segment_name
from logkv.scan import Damage, SegmentReader
from logkv.verify import verify

BATCH = [("b1", b"one" * 10, "text/plain"), ("b2", None, None), ("b3", b"three", None)]


def _state(engine: Engine, keys: list[str]) -> dict[str, object]:
    return {key: engine.get(key, "missing") for key in keys}


def test_batch_op_marks_first_middle_and_last() -> None:
    assert [batch_op(Op.SET, i, 3) for i in range(3)] == [0x21, 0x19, 0x09]
    assert batch_op(Op.DELETE, 0, 1) == Op.DELETE  # a batch of one is a plain record


def test_set_many_sets_and_deletes_in_one_unit(tmp_path: Path) -> None:
    with Engine.open(tmp_path / "s") as engine:
        engine.set("old", b"x")
        seq = engine.set_many(BATCH, deletes=["old", "missing", "b2"])
        assert seq == 1 + 3 + 2  # deleting a missing key writes nothing
        assert _state(engine, ["b1", "b2", "b3", "old"]) == {
            "b1": b"one" * 10,
            "b2": "missing",
            "b3": b"three",
            "old": "missing",
        }
        assert engine.set_many([]) == seq
    with Engine.open(tmp_path / "s") as engine:
        assert engine.last_seq == seq
        assert engine.get_with_type("b1") == (b"one" * 10, "text/plain")
        assert "b2" not in engine
    assert verify(tmp_path / "s").ok


def _batch_store(tmp_path: Path) -> tuple[Path, int, int]:
    """A store: one plain record, then a batch of three; returns its last segment's path, the
    offset where the batch starts, and the segment's size."""
    folder = tmp_path / "store"
    with Engine.open(folder) as engine:
        engine.set("before", b"kept")
        engine.set_many(BATCH)
    os.remove(folder / "SYNCED")  # as after a crash: nothing known to be synced
    path = folder / segment_name(1)
    return path, _offsets(path)[1], path.stat().st_size


def _offsets(path: Path) -> list[int]:
    """Where the valid frames of segment 1 at ``path`` start."""
    with SegmentReader(path, 1, is_last=True, synced=None, report=lambda d: None) as reader:
        return [offset for offset, _, _ in reader.frames()]


#: What is left of the store of :func:`_damaged_batch_store` without its batch.
WITHOUT_BATCH: dict[str, object] = {
    "before": b"kept",
    "b1": "missing",
    "b2": "missing",
    "b3": "missing",
    "after": b"kept too",
}


def _damaged_batch_store(tmp_path: Path, record: int) -> tuple[Path, list[int]]:
    """A store: a record, a batch of three, a record, closed cleanly; then a byte of the body
    of its frame number ``record`` (from 0) flipped. Returns the folder and the frame offsets."""
    folder = tmp_path / "store"
    with Engine.open(folder) as engine:
        engine.set("before", b"kept")
        engine.set_many(BATCH)
        engine.set("after", b"kept too")
    path = folder / segment_name(1)
    offsets = _offsets(path)
    data = bytearray(path.read_bytes())
    data[offsets[record] + 30] ^= 0xFF
    path.write_bytes(bytes(data))
    return folder, offsets


@pytest.mark.slow
def test_a_cut_at_every_byte_of_a_batch_leaves_all_or_nothing(tmp_path: Path) -> None:
    path, start, size = _batch_store(tmp_path)
    _check_cuts(path, start, size, range(start, size + 1))


def test_a_cut_inside_a_batch_leaves_nothing_of_it(tmp_path: Path) -> None:
    path, start, size = _batch_store(tmp_path)
    _check_cuts(
        path, start, size, [start, start + 1, start + 40, (start + size) // 2, size - 1, size]
    )


def _check_cuts(path: Path, start: int, size: int, cuts: range | list[int]) -> None:
    """Cut copies of the store of ``path`` at each of ``cuts``: all of the batch or none."""
    tmp_path = path.parent.parent
    original = path.read_bytes()
    for cut in cuts:
        case = tmp_path / f"cut{cut}"
        shutil.copytree(path.parent, case)
        os.truncate(case / path.name, cut)
        with Engine.open(case, readonly=True) as reader:
            complete = cut == size
            expected = {"before": b"kept", "b1": b"one" * 10 if complete else "missing"}
            assert _state(reader, ["before", "b1"]) == expected
            assert ("b3" in reader) is complete and ("b2" in reader) is complete
        with Engine.open(case) as engine:  # the writer cuts the torn batch off whole
            if cut not in (start, size):
                assert engine.report.torn_tail is not None
                assert engine.report.torn_tail.start == start
            assert (case / path.name).stat().st_size == (size if cut == size else start)
            engine.set("after", b"a")
        with Engine.open(case) as engine:
            assert engine.get("after") == b"a" and engine.report.clean
        assert verify(case).ok
        shutil.rmtree(case)
    assert path.read_bytes() == original


def test_damage_inside_a_batch_before_the_synced_mark_is_corruption(tmp_path: Path) -> None:
    folder, offsets = _damaged_batch_store(tmp_path, 2)  # the batch's second record
    with pytest.raises(CorruptionError) as raised:
        Engine.open(folder)
    assert raised.value.offset == offsets[1]  # reported from where the batch starts
    with Engine.open(folder, recovery="salvage", readonly=True) as engine:
        # The batch goes whole: its first record was intact, its last one is an orphan now.
        assert _state(engine, list(WITHOUT_BATCH)) == WITHOUT_BATCH
    report = verify(folder)
    assert not report.ok


def _write_segment(path: Path, frames: list[bytes]) -> list[int]:
    offsets = []
    with open(path, "wb") as file:
        file.write(encode_segment_header(1))
        for frame in frames:
            offsets.append(file.tell())
            file.write(frame)
    return offsets


def _chained(records: list[tuple[int, int, str]]) -> list[bytes]:
    """Frames of ``(seq, op, key)`` sets, chained in order."""
    frames, chain = [], GENESIS_CHAIN
    for seq, op, key in records:
        frame = encode_record(seq, 0, op, key, None, b"v", chain)
        chain = frame[12:28]
        frames.append(frame)
    return frames


def test_a_batch_broken_by_a_record_outside_it_is_dropped_and_reading_resumes(
    tmp_path: Path,
) -> None:
    path = tmp_path / segment_name(1)
    first = batch_op(Op.SET, 0, 3)
    middle = batch_op(Op.SET, 1, 3)
    frames = _chained([(1, first, "a"), (2, middle, "b"), (3, Op.SET, "plain"), (4, Op.SET, "z")])
    offsets = _write_segment(path, frames)
    found: list[Damage] = []
    with SegmentReader(path, 1, is_last=True, synced=None, report=found.append) as reader:
        keys = [fields[3] for _, _, fields in reader.frames()]
    assert keys == ["plain", "z"]
    assert [(d.start, d.end, d.torn) for d in found] == [(offsets[0], offsets[2], False)]


def test_an_orphan_record_of_a_batch_is_damage(tmp_path: Path) -> None:
    path = tmp_path / segment_name(1)
    last = batch_op(Op.SET, 2, 3)
    frames = _chained([(1, Op.SET, "a"), (2, last, "orphan"), (3, Op.SET, "z")])
    offsets = _write_segment(path, frames)
    found: list[Damage] = []
    with SegmentReader(path, 1, is_last=True, synced=None, report=found.append) as reader:
        keys = [fields[3] for _, _, fields in reader.frames()]
    assert keys == ["a", "z"]
    assert [(d.start, d.end, d.torn) for d in found] == [(offsets[1], offsets[2], False)]


def test_encode_batch_chains_and_numbers_every_record() -> None:
    frames = encode_batch(
        5, 7, [(Op.SET, "k", None, b"v"), (Op.DELETE, "j", None, None)], GENESIS_CHAIN
    )
    buf = encode_segment_header(1) + b"".join(frames)
    numbered: list[tuple[int, object]] = []
    for _, _, fields in iter_frames(buf, SEGMENT_HEADER_SIZE, len(buf)):
        numbered.append((fields[0], fields[2]))
    assert numbered == [(5, Op.SET), (6, Op.DELETE)]
    assert (
        frames[1][12:28]
        == encode_record(6, 7, batch_op(Op.DELETE, 1, 2), "j", None, None, frames[0][12:28])[12:28]
    )


_ITEMS = st.lists(
    st.tuples(
        st.sampled_from([Op.SET, Op.DELETE]),
        st.text(min_size=1, max_size=8),
        st.none() | st.sampled_from(["text/plain", "application/json"]),
        st.none() | st.binary(max_size=64) | st.just(b"x" * 5000),
    ),
    min_size=1,
    max_size=6,
)


@given(items=_ITEMS, chain=st.binary(min_size=16, max_size=16))
def test_encode_batch_writes_the_frames_of_its_records_one_by_one(
    items: list[tuple[int, str, str | None, bytes | None]], chain: bytes
) -> None:
    """The batch encoder's own framing of small bodies is byte for byte the frame
    ``encode_record`` writes for each record with its batch op, chained on the one before."""
    frames = encode_batch(9, 1234, items, chain)
    expected = []
    for index, (kind, key, content_type, value) in enumerate(items):
        op = batch_op(kind, index, len(items))
        frame = encode_record(9 + index, 1234, op, key, content_type, value, chain)
        chain = frame[12:28]
        expected.append(frame)
    assert frames == expected


def test_set_many_under_fsync_is_durable_and_visible_when_it_returns(tmp_path: Path) -> None:
    with Engine.open(tmp_path / "s", durability="fsync") as engine:
        engine.set("gone", b"x")
        seq, commit = engine.set_many_deferred(BATCH, deletes=["gone"])
        commit.wait()
        assert seq == 5 and "gone" not in engine and engine.get("b3") == b"three"
    with Engine.open(tmp_path / "s") as engine:
        assert engine.last_seq == 5 and engine.get("b1") == b"one" * 10


def test_a_follower_sees_a_batch_only_once_it_is_whole(tmp_path: Path) -> None:
    path, start, size = _batch_store(tmp_path)
    whole = path.read_bytes()
    os.truncate(path, start)
    with Engine.open(path.parent, readonly=True) as follower:
        for cut in (start + 1, start + 60, size - 1, size):
            with open(path, "r+b") as file:  # a writer's pwrite, seen part-way
                file.seek(start)
                file.write(whole[start:cut])
            follower.refresh()
            assert ("b1" in follower) is (cut == size)
            assert ("b3" in follower) is (cut == size)


def test_salvage_rewrites_a_segment_without_its_broken_batch(tmp_path: Path) -> None:
    folder, offsets = _damaged_batch_store(tmp_path, 1)  # the batch's first record
    with Engine.open(folder, recovery="salvage") as engine:
        assert [d.start for d in engine.report.dropped] == offsets[1:4]  # first, then orphans
    with Engine.open(folder) as engine:  # strict: the rewrite left no damage
        assert _state(engine, list(WITHOUT_BATCH)) == WITHOUT_BATCH
        assert engine.report.clean


_op = st.one_of(
    st.tuples(st.just("set"), st.sampled_from("abcde"), st.binary(max_size=30)),
    st.tuples(st.just("delete"), st.sampled_from("abcde"), st.just(b"")),
    st.tuples(
        st.just("batch"),
        st.sampled_from(["a", "b", "ab", "abc", "cde", "abcde", "edcba"]),
        st.binary(max_size=30),
    ),
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=st.lists(_op, min_size=1, max_size=8), where=st.floats(min_value=0, max_value=1))
def test_a_crash_in_the_last_write_leaves_the_state_before_or_after_it(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, str, bytes]], where: float
) -> None:
    folder = tmp_path_factory.mktemp("crash") / "store"
    model: dict[str, bytes] = {}
    states = [dict(model)]  # the state after each write that wrote something
    with Engine.open(folder) as engine:
        for kind, keys, value in ops:
            before = engine.last_seq
            if kind == "set":
                engine.set(keys, value)
                model[keys] = value
            elif kind == "delete":
                engine.delete(keys)
                model.pop(keys, None)
            else:  # set every key but the last, then delete the last: one batch
                engine.set_many([(key, value, None) for key in keys[:-1]], deletes=[keys[-1]])
                model.update(dict.fromkeys(keys[:-1], value))
                model.pop(keys[-1], None)
            if engine.last_seq != before:
                states.append(dict(model))
    os.remove(folder / "SYNCED")  # as after a crash
    segment = folder / segment_name(1)
    size = segment.stat().st_size
    start = _last_write_start(segment)
    cut = start + round(where * (size - start))  # anywhere inside the last write, or past it
    os.truncate(segment, cut)
    expected = states[-1] if cut == size else states[max(len(states) - 2, 0)]
    with Engine.open(folder) as engine:
        assert {key: engine.get(key) for key in list(engine.keys())} == expected


def _last_write_start(segment: Path) -> int:
    """Where the last record, or the first record of the last batch, of ``segment`` starts."""
    data = segment.read_bytes()
    start = SEGMENT_HEADER_SIZE
    for offset in _offsets(segment):
        (length,) = struct.unpack_from("<I", data, offset + 8)
        body = msgpack.unpackb(data[offset + 28 : offset + 28 + length])
        if not body[2] & OP_CONTINUES:
            start = offset
    return start


def test_key_history_leaves_out_the_records_of_a_torn_batch(tmp_path: Path) -> None:
    path, _, size = _batch_store(tmp_path)
    assert [r.record.seq for r in key_history(path.parent, "b1")] == [2]
    os.truncate(path, size - 1)
    assert key_history(path.parent, "b1") == []
    assert [r.record.seq for r in key_history(path.parent, "before")] == [1]


_ops = st.one_of(
    st.sampled_from([1, 2]),
    st.builds(batch_op, st.sampled_from([1, 2]), st.integers(0, 3), st.integers(2, 4)),
    st.integers(min_value=0, max_value=(1 << 64) - 1),  # hostile: any op, kinds 0 and 3-7 invalid
)


def _expected_records(ops: list[int]) -> list[int]:
    """The indexes of the records a reader applies, by the batch rule of docs/FORMAT.md 4.1
    (frames with an invalid kind are bad bytes, which break an open batch)."""
    applied: list[int] = []
    batch: list[int] = []
    left = 0
    for index, op in enumerate(ops):
        kind, continues, follows = op & 7, op & 8, op >> 4
        if kind not in (1, 2):
            batch = []
            continue
        if batch:
            if continues and follows == left - 1:
                batch.append(index)
                left = follows
                if not left:
                    applied += batch
                    batch = []
                continue
            batch = []
        if continues:
            continue  # an orphan
        if follows:
            batch, left = [index], follows
        else:
            applied.append(index)
    return applied


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(_ops, max_size=14))
def test_any_sequence_of_ops_yields_exactly_the_whole_batches(ops: list[int]) -> None:
    frames, chain = [], GENESIS_CHAIN
    for seq, op in enumerate(ops, 1):
        frame = encode_record(seq, 0, op, f"k{seq}", None, b"v", chain)
        chain = frame[12:28]
        frames.append(frame)
    buf = encode_segment_header(1) + b"".join(frames)
    stream = iter_frames(buf, SEGMENT_HEADER_SIZE, len(buf), lambda bad: _resume(bad, buf))
    seqs = [fields[0] for _, _, fields in stream]
    assert [seq - 1 for seq in seqs] == _expected_records(ops)


def _resume(bad: BadFrame, buf: bytes) -> int | None:
    """A reader that reads on after every bad frame, as salvage does."""
    if bad.resume is not None:
        return bad.resume if bad.resume < len(buf) else None
    return find_next_frame(buf, bad.offset, len(buf))


def test_dump_and_verify_read_a_snapshot_holding_records_of_batches(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    with Engine.open(folder) as engine:
        engine.set_many([(f"k{i}", b"v", None) for i in range(5)])
        engine.set("k2", b"new")
        engine.compact()
    assert verify(folder).ok
    done = run_command("dump", "--json", folder, text=True, code=0)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(line["key"] for line in lines) == [f"k{i}" for i in range(5)]
