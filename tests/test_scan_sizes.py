"""Scans that need where records are, not what they hold (``values=False``): a big value is
never copied out of the file, and the scan sees exactly the frames, fields and sizes that a
scan decoding every value sees. The hint writer and open's replay scan this way."""

from __future__ import annotations

import random
import struct
import tracemalloc
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logkv import Engine
from logkv.format import HEAD_ONLY_BODY, ValueSize, decode_head, iter_frames
from logkv.hints import load_segment_hint, write_segment_hint
from logkv.layout import segment_name
from logkv.scan import SegmentReader, fail_on_damage

BIG = HEAD_ONLY_BODY + 1000


def body(*fields: object) -> bytes:
    return bytes(msgpack.packb(list(fields), use_bin_type=True))


@pytest.mark.parametrize("size", [0, 200, 70_000, 1 << 17])
def test_decode_head_gives_the_value_size(size: int) -> None:
    data = body(7, 123, 1, "key", "text/plain", b"v" * size)
    assert decode_head(data) == (7, 123, 1, "key", "text/plain", size)
    fields = decode_head(memoryview(data))
    assert fields is not None and type(fields[5]) is ValueSize and len(fields[5]) == size


def test_decode_head_of_a_stored_none_and_a_long_head() -> None:
    assert decode_head(body(1, 2, 1, "k", None, None)) == (1, 2, 1, "k", None, None)
    long_key = "k" * 100_000  # longer than the first prefix fed to the decoder
    assert decode_head(body(1, 2, 1, long_key, None, b"x" * 10)) == (1, 2, 1, long_key, None, 10)


@pytest.mark.parametrize(
    "data",
    [
        body(1, 2, 1, "k", None, b"x") + b"\x00",  # a byte after the value
        body(1, 2, 1, "k", None, b"xy")[:-1],  # the value cut short
        body(1, 2, 1, "k", None, "a str value"),  # not bin
        body(1, 2, 1, "k", None, b"x", 7),  # seven elements
        body(1, 2, 1, "k", None),  # five
        body(1, 2, 1, "k", None, None) + b"\xc0",  # nil, then more
        b"\x96\x01",  # cut inside the head
        b"",
        b"\xc1\xc1\xc1",  # not msgpack
    ],
)
def test_decode_head_refuses_what_is_not_a_record_ending_in_a_value(data: bytes) -> None:
    assert decode_head(data) is None


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_decode_head_agrees_with_a_full_decode(data: bytes) -> None:
    head = decode_head(data)
    if head is None:
        return
    full = msgpack.unpackb(data, use_list=False)
    assert full[:5] == head[:5]
    assert (full[5] is None and head[5] is None) or len(full[5]) == head[5]


def _frames(path: Path, values: bool) -> list[tuple[int, int, tuple[object, ...]]]:
    with SegmentReader(path, 1, is_last=True, synced=None, report=fail_on_damage) as reader:
        return [
            (offset, length, tuple(len(f) if isinstance(f, bytes) else f for f in fields))
            for offset, length, fields in reader.frames(0, values=values)
        ]


def test_a_scan_for_sizes_sees_what_a_full_scan_sees(tmp_path: Path) -> None:
    rng = random.Random(3)
    with Engine.open(tmp_path / "s") as engine:
        for i in range(40):
            size = rng.choice([0, 10, HEAD_ONLY_BODY - 40, BIG, 3 * BIG])
            engine.set(f"k{i % 9}", None if i % 7 == 0 else rng.randbytes(size), "a/b")
            if i % 11 == 0:
                engine.set_many([(f"b{i}", b"z" * BIG, None), (f"c{i}", b"z", None)])
                engine.delete(f"k{i % 9}")
    segment = tmp_path / "s" / segment_name(1)
    full, sizes = _frames(segment, True), _frames(segment, False)
    # a full scan's value bytes, measured, equal the sizes the other scan gives
    assert [(o, n, f[:5], f[5]) for o, n, f in full] == [
        (o, n, f[:5], None if f[5] is None else int(f[5]))  # type: ignore[call-overload]
        for o, n, f in sizes
    ]


def test_a_damaged_big_value_fails_the_scan_for_sizes(tmp_path: Path) -> None:
    with Engine.open(tmp_path / "s") as engine:
        engine.set("big", b"v" * BIG)
        engine.set("after", b"a")
        entry = engine.entry("big")
    assert entry is not None
    segment = tmp_path / "s" / segment_name(1)
    data = bytearray(segment.read_bytes())
    data[entry.offset + entry.head + BIG // 2] ^= 1
    segment.write_bytes(data)
    found = list(iter_frames(bytes(data), 16, len(data), lambda bad: None, values=False))
    assert found == []  # the CRC covers the value even when it is not decoded


def test_a_big_value_whose_bin_length_lies_is_decoded_whole_to_find_it_out() -> None:
    data = bytearray(body(1, 2, 1, "k", None, b"x" * BIG))
    struct.pack_into(">I", data, len(data) - BIG - 4, BIG - 1)  # bin 32 length one short
    assert decode_head(bytes(data)) is None


@pytest.mark.slow
def test_the_hint_writer_holds_no_big_value(tmp_path: Path) -> None:
    store = tmp_path / "store"
    value = b"\x5a" * (200 << 20)
    with Engine.open(store) as engine:
        engine.set_many([("big", value, None)])  # a batch keeps a value of any size in the log
        engine.set("small", b"s")
        assert not engine.entry("big").streamed  # type: ignore[union-attr]
        engine.wait_for_hints()  # then written again by the test, measured
    del value
    tracemalloc.start()
    try:
        assert write_segment_hint(store, 1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak
    hint = load_segment_hint(store, 1, store / segment_name(1))
    assert hint is not None and hint.rows.keys == ["big"]  # "small" went to segment 2
    assert list(hint.rows.sizes) == [200 << 20]
