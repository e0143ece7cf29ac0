"""Blocks (logkv.blocks): every cut and every flipped byte of a block is caught, errors name the
file's offset of the bad block, and a snapshot's or checkpoint's ending finds its blocks."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logkv.blocks import (
    BLOCK_HEADER,
    TAIL,
    TAIL_MAGIC,
    encode_block,
    encode_ending,
    read_block,
    read_meta,
)
from logkv.errors import CorruptionError
from logkv.files import open_bytes

PATH = Path("some.file")
values = st.recursive(
    st.none() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)


@settings(max_examples=50)
@given(values, st.binary(max_size=6))
def test_a_block_reads_back_with_where_it_ends(value: object, before: bytes) -> None:
    block = encode_block(msgpack.packb(value))
    data = before + block + b"after"
    found, end = read_block(PATH, data, len(before), "test")
    assert found == value
    assert end == len(before) + len(block)


@settings(max_examples=40)
@given(values)
def test_every_cut_and_every_flipped_byte_of_a_block_is_caught(value: object) -> None:
    block = encode_block(msgpack.packb(value))
    for cut in range(len(block)):
        with pytest.raises(CorruptionError):
            read_block(PATH, block[:cut], 0, "test")
    for i in range(len(block)):
        flipped = bytearray(block)
        flipped[i] ^= 0xFF
        try:
            found, end = read_block(PATH, bytes(flipped) + bytes(300), 0, "test")
        except CorruptionError:
            continue
        # A flip changes the CRC, or the bytes it covers (a flipped length takes other bytes).
        pytest.fail(f"byte {i} flipped read back as {found!r} ending at {end}")


def test_an_error_names_the_files_offset_and_the_block() -> None:
    block = bytearray(encode_block(msgpack.packb({"a": 1})))
    block[-1] ^= 1
    with pytest.raises(CorruptionError) as caught:
        read_block(PATH, bytes(block), 0, "snapshot meta", at=1000)
    assert caught.value.offset == 1000
    assert caught.value.reason == "snapshot meta block fails its checksum"
    with pytest.raises(CorruptionError, match="hint block lies outside the file"):
        read_block(PATH, b"\0" * 7, 0, "hint")


def test_an_ending_is_found_from_its_tail(tmp_path: Path) -> None:
    header = b"H" * 16
    hint, meta = msgpack.packb([1, 2, 3]), msgpack.packb({"hint_offset": len(header)})
    path = tmp_path / "file"
    path.write_bytes(header + b"".join(encode_ending(len(header), hint, meta)))
    with open_bytes(path) as file:
        found, meta_offset = read_meta(path, file, len(header), "test")
    assert found == {"hint_offset": 16}
    assert meta_offset == len(header) + BLOCK_HEADER.size + len(hint)
    # A tail pointing into the header or into itself is refused.
    for bad in (len(header) - 1, path.stat().st_size - TAIL.size):
        data = bytearray(path.read_bytes())
        TAIL.pack_into(data, len(data) - TAIL.size, bad, TAIL_MAGIC)
        path.write_bytes(bytes(data))
        with open_bytes(path) as file, pytest.raises(CorruptionError, match="bad test tail"):
            read_meta(path, file, len(header), "test")
