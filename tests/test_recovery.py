"""Recovery on open: torn tails, flipped bits, garbage, bad headers and salvage.

The rule under test (see ``logkv/scan.py``): in the last segment, a bad frame with no valid
frame after it is a torn tail, dropped and cut off the file; any other damage raises
``CorruptionError`` naming the file and offset, unless the store is opened with
``recovery="salvage"``, which keeps every valid record and rewrites the damaged segments.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from logkv import MISSING, CorruptionError, Engine
from logkv.format import (
    GENESIS_CHAIN,
    SEGMENT_HEADER_SIZE,
    Op,
    chain_of,
    encode_record,
    encode_segment_header,
)
from logkv.layout import SYNCED_FILE, list_segments, segment_name

Op_ = tuple[str, str, bytes | None]  # ("set" | "delete", key, value)

OPS: list[Op_] = [
    ("set", "alpha", b"first value"),
    ("set", "beta", b""),
    ("set", "gamma", None),
    ("set", "delta", bytes(range(256))),
    ("set", "epsilon", b"e" * 40),
    ("delete", "beta", None),  # the second-to-last record: a delete
    ("set", "alpha", b"overwritten"),  # the last record: an overwrite
]


def apply_ops(ops: list[Op_]) -> dict[str, bytes | None]:
    """The state a list of operations leaves."""
    state: dict[str, bytes | None] = {}
    for op, key, value in ops:
        if op == "set":
            state[key] = value
        else:
            state.pop(key, None)
    return state


def write_ops(path: Path, ops: list[Op_], segment_size: int = 64 << 20) -> list[tuple[int, int]]:
    """Write ``ops`` to a new store; return each record's ``(segment, end offset)``."""
    ends = []
    with Engine.open(path, segment_size=segment_size) as engine:
        for op, key, value in ops:
            if op == "set":
                engine.set(key, value)
            else:
                assert engine.delete(key)
            seg_number, seg_path = list_segments(path)[-1]
            ends.append((seg_number, seg_path.stat().st_size))
    return ends


def state_of(engine: Engine) -> dict[str, bytes | None]:
    """Every key and value of an open store."""
    return {info.key: engine.get(info.key) for info in engine.infos()}  # type: ignore[misc]


def copy_store(src: Path, dst: Path) -> Path:
    """Copy a store's segments (not its lock) to ``dst``."""
    dst.mkdir(parents=True)
    for _, seg in list_segments(src):
        shutil.copyfile(seg, dst / seg.name)
    return dst


def flip(data: bytes, position: int, bit: int) -> bytes:
    """``data`` with one bit flipped."""
    damaged = bytearray(data)
    damaged[position] ^= 1 << bit
    return bytes(damaged)


def files_of(path: Path) -> dict[str, bytes]:
    """The contents of every file in a store folder except the lock."""
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.name != "LOCK"}


# ---------------------------------------------------------------------------------- torn tails


def test_torn_tail_at_every_offset(tmp_path: Path) -> None:
    original = tmp_path / "original"
    ends = [end for _, end in write_ops(original, OPS)]
    data = (original / segment_name(1)).read_bytes()
    boundaries = [SEGMENT_HEADER_SIZE, *ends]
    cut_from = boundaries[-3]  # the start of the second-to-last record
    assert len(data) == boundaries[-1]

    for length in range(cut_from, len(data)):
        store = tmp_path / f"cut-{length}"
        store.mkdir()
        segment = store / segment_name(1)
        segment.write_bytes(data[:length])
        kept = sum(1 for end in ends if end <= length)
        good_end = boundaries[kept]
        expected = apply_ops(OPS[:kept])

        with Engine.open(store) as engine:
            assert state_of(engine) == expected, length
            assert engine.last_seq == kept
            torn = engine.report.torn_tail
            if length == good_end:
                assert engine.report.clean
            else:
                assert torn is not None
                assert (torn.path, torn.start, torn.end) == (segment, good_end, length)
                assert torn.reason
            assert segment.stat().st_size == good_end  # cut back to the last good record
            assert engine.set("after", b"appended") == kept + 1

        with Engine.open(store) as engine:
            assert engine.report.clean
            assert state_of(engine) == {**expected, "after": b"appended"}


def test_torn_value_that_embeds_a_whole_frame(tmp_path: Path) -> None:
    # A value may hold logkv records itself (a copy of a log, a backup): cut anywhere, the
    # frame inside it must neither make the torn tail look like corruption nor come back.
    original = tmp_path / "original"
    inner = encode_record(1000, 0, Op.SET, "phantom", None, b"not a real record")
    ops: list[Op_] = [("set", "a", b"1"), ("set", "blob", b"head" + inner * 2 + b"tail")]
    ends = [end for _, end in write_ops(original, ops)]
    data = (original / segment_name(1)).read_bytes()
    for length in range(ends[0] + 1, ends[1]):
        store = tmp_path / f"cut-{length}"
        store.mkdir()
        (store / segment_name(1)).write_bytes(data[:length])
        with Engine.open(store) as engine:
            torn = engine.report.torn_tail
            assert torn is not None
            assert (torn.start, torn.end) == (ends[0], length)
            assert state_of(engine) == {"a": b"1"}
        with Engine.open(store, recovery="salvage") as engine:
            assert state_of(engine) == {"a": b"1"}
            assert engine.last_seq == 1


def test_readonly_open_reports_but_keeps_a_torn_tail(tmp_path: Path) -> None:
    store = tmp_path / "store"
    ends = [end for _, end in write_ops(store, OPS)]
    segment = store / segment_name(1)
    (store / SYNCED_FILE).unlink()  # the writer was killed: it never closed cleanly
    with open(segment, "r+b") as file:
        file.truncate(ends[-1] - 3)
    with Engine.open(store, readonly=True) as reader:
        assert reader.report.torn_tail is not None
        assert reader.report.torn_tail.start == ends[-2]
        assert state_of(reader) == apply_ops(OPS[:-1])
    assert segment.stat().st_size == ends[-1] - 3  # a reader never changes the log


@pytest.mark.parametrize("rotated", [False, True], ids=["only-segment", "after-rotation"])
def test_last_segment_shorter_than_its_header(tmp_path: Path, rotated: bool) -> None:
    original = tmp_path / "original"
    ops: list[Op_] = [("set", f"key-{i}", b"v" * 300) for i in range(20 if rotated else 3)]
    written = write_ops(original, ops, segment_size=4096)
    segments = list_segments(original)
    assert (len(segments) > 1) == rotated
    last_number, last_path = segments[-1]
    if rotated:
        # Keep only the records of the earlier segments; the last one is cut into its header.
        survivors = apply_ops(
            [op for op, (number, _) in zip(ops, written, strict=True) if number < last_number]
        )
    else:
        survivors = {}
    header = last_path.read_bytes()[:SEGMENT_HEADER_SIZE]

    for length in range(SEGMENT_HEADER_SIZE):
        store = copy_store(original, tmp_path / f"cut-{length}")
        segment = store / last_path.name
        segment.write_bytes(header[:length])
        with Engine.open(store, segment_size=4096) as engine:
            torn = engine.report.torn_tail
            assert torn is not None
            assert (torn.path, torn.start, torn.end) == (segment, 0, length)
            assert state_of(engine) == survivors
            engine.set("after", b"appended")
        assert segment.read_bytes()[:SEGMENT_HEADER_SIZE] == header
        with Engine.open(store, segment_size=4096) as engine:
            assert engine.report.clean
            assert state_of(engine) == {**survivors, "after": b"appended"}


# ---------------------------------------------------------------------------------- flipped bits


def test_flipped_bit_in_a_middle_record_is_corruption(tmp_path: Path) -> None:
    original = tmp_path / "original"
    ends = [end for _, end in write_ops(original, OPS)]
    data = (original / segment_name(1)).read_bytes()
    start, end = ends[2], ends[3]  # the record of "delta": records follow it

    for position in range(start, end):
        store = tmp_path / f"flip-{position}"
        store.mkdir()
        segment = store / segment_name(1)
        damaged = flip(data, position, position % 8)
        segment.write_bytes(damaged)
        with pytest.raises(CorruptionError) as caught:
            Engine.open(store)
        assert caught.value.path == segment
        assert caught.value.offset == start
        assert str(start) in str(caught.value) and str(segment) in str(caught.value)
        assert segment.read_bytes() == damaged  # nothing was changed
        with pytest.raises(CorruptionError):
            Engine.open(store, readonly=True)


@pytest.mark.parametrize("byte", [2, 3], ids=["bit-23", "bit-31"])
def test_length_running_past_the_end_before_good_records(tmp_path: Path, byte: int) -> None:
    # A flipped high bit of a length field makes a middle record look cut short; the records
    # after it chain from it, so this is corruption, not a torn tail to cut off.
    store = tmp_path / "store"
    ends = [end for _, end in write_ops(store, OPS)]
    segment = store / segment_name(1)
    damaged = flip(segment.read_bytes(), ends[2] + 8 + byte, 7)
    segment.write_bytes(damaged)
    with pytest.raises(CorruptionError) as caught:
        Engine.open(store)
    assert (caught.value.path, caught.value.offset) == (segment, ends[2])
    assert "past the end" in caught.value.reason
    assert segment.read_bytes() == damaged
    with Engine.open(store, recovery="salvage") as engine:
        assert state_of(engine) == apply_ops(OPS[:3] + OPS[4:])


def test_flipped_bit_in_the_last_record_of_an_earlier_segment(tmp_path: Path) -> None:
    store = tmp_path / "store"
    write_ops(store, [("set", f"key-{i}", b"v" * 600) for i in range(12)], segment_size=4096)
    segments = list_segments(store)
    assert len(segments) >= 2
    segment = segments[0][1]
    data = segment.read_bytes()
    position = len(data) - 1  # the last byte of the segment's last record
    segment.write_bytes(flip(data, position, 0))
    with pytest.raises(CorruptionError) as caught:
        Engine.open(store)
    assert caught.value.path == segment
    assert SEGMENT_HEADER_SIZE <= caught.value.offset < position


def test_flipped_bit_in_the_last_record_is_a_torn_tail(tmp_path: Path) -> None:
    original = tmp_path / "original"
    ends = [end for _, end in write_ops(original, OPS)]
    data = (original / segment_name(1)).read_bytes()
    start = ends[-2]

    for position in range(start, len(data)):
        store = tmp_path / f"flip-{position}"
        store.mkdir()
        segment = store / segment_name(1)
        segment.write_bytes(flip(data, position, (position * 3) % 8))
        with Engine.open(store) as engine:
            torn = engine.report.torn_tail
            assert torn is not None
            assert (torn.path, torn.start, torn.end) == (segment, start, len(data))
            assert state_of(engine) == apply_ops(OPS[:-1])
        assert segment.stat().st_size == start


def test_salvage_drops_only_the_damaged_record(tmp_path: Path) -> None:
    original = tmp_path / "original"
    ends = [end for _, end in write_ops(original, OPS)]
    data = (original / segment_name(1)).read_bytes()
    start, end = ends[2], ends[3]
    expected = apply_ops(OPS[:3] + OPS[4:])  # everything but the record of "delta"
    assert "delta" not in expected

    for position in range(start, end, 7):
        store = tmp_path / f"flip-{position}"
        store.mkdir()
        segment = store / segment_name(1)
        damaged = flip(data, position, 7 - position % 8)
        segment.write_bytes(damaged)

        with Engine.open(store, recovery="salvage") as engine:
            dropped = engine.report.dropped
            assert [(d.path, d.start, d.end) for d in dropped] == [(segment, start, end)]
            assert dropped[0].reason
            assert engine.report.torn_tail is None
            assert state_of(engine) == expected
            engine.set("after", b"appended")
        backup = store / (segment.name + ".damaged")
        assert backup.read_bytes() == damaged

        with Engine.open(store) as engine:  # repaired: strict opens it now
            assert engine.report.clean
            assert state_of(engine) == {**expected, "after": b"appended"}


def test_salvage_across_segments(tmp_path: Path) -> None:
    store = tmp_path / "store"
    ops: list[Op_] = [("set", f"key-{i:02d}", bytes([i]) * 500) for i in range(30)]
    written = write_ops(store, ops, segment_size=4096)
    segments = list_segments(store)
    assert len(segments) >= 4
    # Damage the first record of segment 1 and the second record of segment 3.
    first = SEGMENT_HEADER_SIZE
    victims = [(segments[0][1], first + 20), (segments[2][1], first + 600)]
    for path, position in victims:
        path.write_bytes(flip(path.read_bytes(), position, 3))
    lost = {
        f"key-{i:02d}"
        for i, (number, _) in enumerate(written)
        if (number == segments[0][0] and i == 0)
        or (number == segments[2][0] and sum(1 for n, _ in written[:i] if n == number) == 1)
    }
    assert len(lost) == 2

    with pytest.raises(CorruptionError) as caught:
        Engine.open(store)
    assert caught.value.path == segments[0][1]
    assert caught.value.offset == first

    with Engine.open(store, recovery="salvage", segment_size=4096) as engine:
        assert [d.path for d in engine.report.dropped] == [victims[0][0], victims[1][0]]
        assert set(engine.keys()) == {key for _, key, _ in ops} - lost
        for _, key, value in ops:
            if key not in lost:
                assert engine.get(key) == value
    assert {p.name for p in store.glob("*.damaged")} == {
        victims[0][0].name + ".damaged",
        victims[1][0].name + ".damaged",
    }
    with Engine.open(store, segment_size=4096) as engine:
        assert engine.report.clean
        assert len(engine) == len(ops) - 2


def test_readonly_salvage_changes_nothing(tmp_path: Path) -> None:
    store = tmp_path / "store"
    ends = [end for _, end in write_ops(store, OPS)]
    segment = store / segment_name(1)
    segment.write_bytes(flip(segment.read_bytes(), ends[1] + 9, 1))
    before = files_of(store)
    with Engine.open(store, readonly=True, recovery="salvage") as reader:
        assert len(reader.report.dropped) == 1
        assert "gamma" not in reader
        assert reader.get("delta") == bytes(range(256))
    assert files_of(store) == before


def test_flipped_bit_in_a_value_is_caught_by_get(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with Engine.open(store) as engine:
        engine.set("before", b"untouched")
        engine.set("victim", b"v" * 100, "text/plain")
        engine.set("none", None)
        engine.set("after", b"also untouched")
        segment = store / segment_name(1)
        for key, inside in (("victim", 50), ("none", 0)):
            entry = engine.entry(key)
            assert entry is not None
            _, offset, head, size, _ = entry
            position = offset + head + inside if size > 0 else offset + head - 1
            with open(segment, "r+b") as file:  # damage the record behind the engine's back
                file.seek(position)
                byte = file.read(1)[0]
                file.seek(position)
                file.write(bytes([byte ^ 0x10]))
            with pytest.raises(CorruptionError) as caught:
                engine.get(key)
            assert caught.value.path == segment
            assert caught.value.offset == offset
            assert key in engine  # the index still knows the key
        assert engine.get("before") == b"untouched"
        assert engine.get("after") == b"also untouched"
        assert [info.key for info in engine.infos()] == ["after", "before", "none", "victim"]


# ---------------------------------------------------------------------------------- garbage


def _garbage_cases() -> list[tuple[str, bytes]]:
    rng = random.Random(1234)
    frame = encode_record(1000, 0, Op.SET, "copy", "text/plain", b"copied value " * 4)
    cases = [(f"random-{n}", rng.randbytes(n)) for n in (1, 7, 8, 11, 12, 13, 100, 5000)]
    cases += [(f"zeros-{n}", bytes(n)) for n in (1, 12, 4096)]
    cases += [(f"frame-prefix-{n}", frame[:n]) for n in range(1, len(frame))]
    return cases


GARBAGE = _garbage_cases()


def test_garbage_after_the_last_record_is_dropped(tmp_path: Path) -> None:
    original = tmp_path / "original"
    write_ops(original, OPS)
    data = (original / segment_name(1)).read_bytes()
    expected = apply_ops(OPS)
    for name, garbage in GARBAGE:
        store = tmp_path / name
        store.mkdir()
        segment = store / segment_name(1)
        segment.write_bytes(data + garbage)
        with Engine.open(store) as engine:
            torn = engine.report.torn_tail
            assert torn is not None, name
            assert (torn.start, torn.end) == (len(data), len(data) + len(garbage))
            assert state_of(engine) == expected
            assert segment.stat().st_size == len(data)
            engine.set("after", b"appended")
        with Engine.open(store) as engine:
            assert engine.report.clean
            assert engine.get("after") == b"appended"


@pytest.mark.parametrize(
    "garbage",
    [GARBAGE[0][1], GARBAGE[6][1], bytes(12), GARBAGE[-1][1]],
    ids=["random-1", "random-100", "zeros-12", "frame-prefix"],
)
def test_garbage_at_the_end_of_an_earlier_segment(tmp_path: Path, garbage: bytes) -> None:
    store = tmp_path / "store"
    ops: list[Op_] = [("set", f"key-{i:02d}", b"x" * 700) for i in range(12)]
    write_ops(store, ops, segment_size=4096)
    segments = list_segments(store)
    assert len(segments) >= 2
    first = segments[0][1]
    size = first.stat().st_size
    first.write_bytes(first.read_bytes() + garbage)

    with pytest.raises(CorruptionError) as caught:
        Engine.open(store)
    assert (caught.value.path, caught.value.offset) == (first, size)

    with Engine.open(store, recovery="salvage", segment_size=4096) as engine:
        dropped = engine.report.dropped
        assert [(d.path, d.start, d.end) for d in dropped] == [(first, size, size + len(garbage))]
        assert state_of(engine) == apply_ops(ops)
    assert first.stat().st_size == size
    with Engine.open(store) as engine:
        assert engine.report.clean


# ------------------------------------------------------------------------------ sequence numbers


def _write_raw_segment(
    path: Path, number: int, seqs: list[int], chain: bytes = GENESIS_CHAIN
) -> tuple[list[int], bytes]:
    """Write a segment of one set record per sequence number (chained after ``chain``).

    Returns the records' offsets and the chain value of the last one.
    """
    data = bytearray(encode_segment_header(number))
    offsets = []
    for seq in seqs:
        offsets.append(len(data))
        frame = encode_record(seq, seq * 1000, Op.SET, f"k{seq}", None, b"v", chain)
        chain = chain_of(frame, 0)
        data += frame
    path.write_bytes(bytes(data))
    return offsets, chain


@pytest.mark.parametrize(
    ("seqs", "bad"),
    [([1, 2, 4, 3, 5], 3), ([1, 2, 2, 3], 2), ([5, 1], 1), ([1, 2, 3, 3], 3)],
    ids=["swapped", "repeated", "backwards", "repeated-at-the-end"],
)
def test_out_of_order_sequence_numbers(tmp_path: Path, seqs: list[int], bad: int) -> None:
    store = tmp_path / "store"
    store.mkdir()
    segment = store / segment_name(1)
    offsets, _ = _write_raw_segment(segment, 1, seqs)
    before = segment.read_bytes()
    with pytest.raises(CorruptionError) as caught:
        Engine.open(store)
    assert caught.value.path == segment
    assert caught.value.offset == offsets[bad]
    assert "sequence" in str(caught.value)
    assert segment.read_bytes() == before


def test_out_of_order_across_segments(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    _, chain = _write_raw_segment(store / segment_name(1), 1, [1, 2, 3])
    _write_raw_segment(store / segment_name(2), 2, [3, 4], chain)
    with pytest.raises(CorruptionError) as caught:
        Engine.open(store)
    assert (caught.value.path, caught.value.offset) == (store / segment_name(2), 16)


def test_a_duplicated_last_record_is_out_of_order(tmp_path: Path) -> None:
    store = tmp_path / "store"
    ends = [end for _, end in write_ops(store, OPS)]
    segment = store / segment_name(1)
    data = segment.read_bytes()
    segment.write_bytes(data + data[ends[-2] :])  # the last record, once more
    with pytest.raises(CorruptionError) as caught:
        Engine.open(store)
    assert caught.value.offset == len(data)


def test_raw_segments_with_gaps_in_sequence_numbers_open(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    _, chain = _write_raw_segment(store / segment_name(1), 1, [1, 2, 7])
    _write_raw_segment(store / segment_name(2), 2, [9, 10], chain)
    with Engine.open(store) as engine:
        assert engine.report.clean
        assert list(engine.keys()) == ["k1", "k10", "k2", "k7", "k9"]
        assert engine.get("k7") == b"v"
        assert engine.set("next", b"") == 11
    with Engine.open(store) as engine:
        assert engine.get("next") == b""


# ---------------------------------------------------------------------------------- segment headers


def _bad_magic(header: bytes) -> bytes:
    return b"\x89LKVSEX\n" + header[8:]


def _bad_version(header: bytes) -> bytes:
    return header[:8] + (99).to_bytes(4, "little") + header[12:]


def _bad_number(header: bytes) -> bytes:
    return header[:12] + (77).to_bytes(4, "little")


@pytest.mark.parametrize("damage", [_bad_magic, _bad_version, _bad_number])
@pytest.mark.parametrize("which", [0, -1], ids=["first-segment", "last-segment"])
def test_bad_segment_header(tmp_path: Path, damage: object, which: int) -> None:
    store = tmp_path / "store"
    write_ops(store, [("set", f"key-{i}", b"z" * 700) for i in range(12)], segment_size=4096)
    segment = list_segments(store)[which][1]
    data = segment.read_bytes()
    assert callable(damage)
    segment.write_bytes(damage(data[:SEGMENT_HEADER_SIZE]) + data[SEGMENT_HEADER_SIZE:])
    before = files_of(store)
    with pytest.raises(CorruptionError) as caught:
        Engine.open(store)
    assert (caught.value.path, caught.value.offset) == (segment, 0)
    assert caught.value.reason
    assert files_of(store) == before


def test_salvage_of_a_segment_with_a_bad_header_keeps_its_records(tmp_path: Path) -> None:
    store = tmp_path / "store"
    ops: list[Op_] = [("set", f"key-{i:02d}", bytes([i]) * 700) for i in range(20)]
    write_ops(store, ops, segment_size=4096)
    segments = list_segments(store)
    assert len(segments) >= 3
    middle = segments[1][1]
    data = middle.read_bytes()
    middle.write_bytes(_bad_magic(data[:SEGMENT_HEADER_SIZE]) + data[SEGMENT_HEADER_SIZE:])
    with Engine.open(store, recovery="salvage", segment_size=4096) as engine:
        assert [(d.path, d.start) for d in engine.report.dropped] == [(middle, 0)]
        assert state_of(engine) == apply_ops(ops)  # its frames were intact, so they are kept
    assert middle.read_bytes()[:SEGMENT_HEADER_SIZE] == data[:SEGMENT_HEADER_SIZE]
    with Engine.open(store, segment_size=4096) as engine:
        assert engine.report.clean
        assert state_of(engine) == apply_ops(ops)


@pytest.mark.parametrize("length", [0, 1, 15])
def test_short_segment_in_the_middle_is_corruption(tmp_path: Path, length: int) -> None:
    store = tmp_path / "store"
    write_ops(store, [("set", f"key-{i}", b"z" * 700) for i in range(20)], segment_size=4096)
    segments = list_segments(store)
    assert len(segments) >= 3
    segment = segments[1][1]
    segment.write_bytes(segment.read_bytes()[:length])
    with pytest.raises(CorruptionError) as caught:
        Engine.open(store)
    assert (caught.value.path, caught.value.offset) == (segment, 0)


def test_not_a_segment_files_are_ignored(tmp_path: Path) -> None:
    store = tmp_path / "store"
    write_ops(store, OPS)
    for name in ("notes.txt", "1.seg", "0000001.seg", "00000002.seg.bak"):
        (store / name).write_bytes(b"not a segment")
    with Engine.open(store) as engine:
        assert engine.report.clean
        assert state_of(engine) == apply_ops(OPS)
        assert engine.get("missing") is MISSING


def test_salvage_repair_keeps_exactly_the_frames_replay_kept(tmp_path: Path) -> None:
    # A record cut short before the synced mark is damage, and its value holds whole logkv
    # frames (a copy of a log). Salvage drops the record whole: the rewrite of the segment
    # must not bring the frames inside it back as records.
    store = tmp_path / "store"
    inner = encode_record(1000, 0, Op.SET, "phantom", None, b"not a real record")
    ops: list[Op_] = [("set", "a", b"1"), ("set", "blob", b"head" + inner * 2 + b"tail")]
    ends = [end for _, end in write_ops(store, ops)]  # closed cleanly: the mark covers both
    segment = store / segment_name(1)
    segment.write_bytes(segment.read_bytes()[: ends[1] - 2])
    with pytest.raises(CorruptionError):
        Engine.open(store)
    with Engine.open(store, recovery="salvage") as engine:
        assert state_of(engine) == {"a": b"1"}
        assert [(d.start, d.end) for d in engine.report.dropped] == [(ends[0], ends[1] - 2)]
    with Engine.open(store) as engine:
        assert engine.report.clean
        assert state_of(engine) == {"a": b"1"}
        assert engine.last_seq == 1
