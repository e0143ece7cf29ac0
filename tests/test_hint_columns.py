"""The hint columns an open turns into index entries (docs/FORMAT.md, section 7.2): every value
out of range is refused, and the packed entries built in bulk equal those :func:`pack` makes
one at a time."""

from __future__ import annotations

import struct
from array import array
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logkv import index as index_module
from logkv.hints import Columns, decode_rows, index_rows, pack_rows
from logkv.index import (
    MAX_OFFSET,
    MAX_SIZE,
    ContentTypes,
    Index,
    pack,
    packed_frame_length,
    unpack,
)


def _hint(
    keys: list[Any],
    offsets: list[int],
    heads: list[int],
    sizes: list[int],
    type_ids: list[int],
    types: list[Any],
) -> list[Any]:
    return [
        keys,
        array("Q", offsets).tobytes(),
        array("I", heads).tobytes(),
        array("q", sizes).tobytes(),
        array("I", type_ids).tobytes(),
        types,
    ]


def test_rows_in_range_are_read_back() -> None:
    rows = decode_rows(_hint(["a", "b"], [16, MAX_OFFSET], [40, 1], [MAX_SIZE, -5], [0, 1],
                             [None, "t"]))  # fmt: skip
    assert rows.keys == ["a", "b"] and list(rows.offsets) == [16, MAX_OFFSET]


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"offsets": [MAX_OFFSET + 1, 16]}, ValueError),
        ({"offsets": [16, 1 << 63]}, ValueError),
        ({"sizes": [MAX_SIZE + 1, 1]}, ValueError),
        ({"type_ids": [0, 2]}, ValueError),
        ({"type_ids": [256, 0]}, ValueError),
        ({"type_ids": [0, 1 << 24]}, ValueError),
        ({"keys": ["a", b"b"]}, TypeError),
        ({"keys": ["a", 7]}, TypeError),
        ({"types": [None, 3]}, TypeError),
        ({"heads": [40]}, ValueError),
    ],
)
def test_a_value_out_of_range_is_refused(change: dict[str, Any], error: type[Exception]) -> None:
    fields: dict[str, Any] = {
        "keys": ["a", "b"],
        "offsets": [16, 99],
        "heads": [40, 41],
        "sizes": [3, -1],
        "type_ids": [0, 1],
        "types": [None, "t"],
    }
    fields.update(change)
    with pytest.raises(error):
        decode_rows(_hint(**fields))


def test_many_content_types_are_checked_too() -> None:
    types = [f"t/{i}" for i in range(300)]
    assert decode_rows(_hint(["a", "b"], [16, 20], [4, 4], [0, 0], [299, 3], types)).types[299]
    with pytest.raises(ValueError):
        decode_rows(_hint(["a", "b"], [16, 20], [4, 4], [0, 0], [300, 3], types))


def test_the_byte_checks_read_little_endian_columns() -> None:
    offsets = struct.pack("<QQ", 16, 1 << 48)  # a top byte that only a byte check sees
    hint = _hint(["a", "b"], [0, 0], [4, 4], [0, 0], [0, 0], [None])
    hint[1] = offsets
    with pytest.raises(ValueError):
        decode_rows(hint)


rows_strategy = st.lists(
    st.tuples(
        st.integers(0, MAX_OFFSET),
        st.integers(0, (1 << 32) - 1),
        st.one_of(st.integers(-1, 3000), st.integers(-1, MAX_SIZE), st.integers(-(1 << 50), -2)),
        st.sampled_from([None, "text/html", "application/json"]),
    ),
    max_size=30,
)


@given(rows_strategy, st.integers(-(1 << 20), 1 << 20).filter(bool))
@settings(max_examples=200, deadline=None)
def test_bulk_packing_equals_packing_one_at_a_time(
    rows: list[tuple[int, int, int, str | None]], file_id: int
) -> None:
    columns = Columns()
    for i, (offset, head, size, content_type) in enumerate(rows):
        columns.add(f"k{i:03d}", offset, head, size, content_type)
    decoded = decode_rows(msgpack.unpackb(columns.encode()))
    bulk_types, one_types = ContentTypes(), ContentTypes()
    expected = [pack(file_id, o, h, s, one_types.id(t)) for o, h, s, t in rows]
    assert pack_rows(decoded, file_id, bulk_types) == expected
    assert bulk_types.names == one_types.names
    index = Index()  # an open's way: row references into the columns, read as the same entries
    refs = list(index_rows(decoded, file_id, index))
    unpacked = [unpack(p, one_types.names) for p in expected]
    assert [unpack(r, index.types.names) for r in refs] == unpacked
    assert [packed_frame_length(r) for r in refs] == list(map(packed_frame_length, expected))
    assert decoded.frame_bytes() == sum(map(packed_frame_length, expected))


def test_frame_bytes_count_a_value_only_when_it_is_in_the_frame() -> None:
    rows = decode_rows(_hint(["a", "b", "c", "d"], [16, 20, 30, 40], [40, 41, 90, 30],
                             [5, -1, -2 - (1 << 40), 0], [0, 0, 0, 0], [None]))  # fmt: skip
    assert rows.frame_bytes() == 45 + 41 + 90 + 30
    assert decode_rows(_hint([], [], [], [], [], [])).frame_bytes() == 0


def test_row_tables_keep_narrow_columns_when_the_values_fit() -> None:
    """Offsets below 4 GiB, heads below 64 KiB and few content types are kept in narrower
    arrays (the index keeps them as long as it refers to them); wider ones as they came."""
    small = decode_rows(_hint(["a", "b"], [16, (1 << 32) - 1], [40, 65535], [1, 2], [0, 0], [None]))
    wide = decode_rows(_hint(["a", "b"], [16, 1 << 32], [40, 65536], [1, 2], [0, 0], [None]))
    for rows, itemsizes in ((small, (4, 2, 1)), (wide, (8, 4, 1))):
        index = Index()
        refs = list(index_rows(rows, 3, index))
        table = index_module._row_tables[refs[0] >> index_module.ROW_SHIFT]
        assert (table.offsets.itemsize, table.heads.itemsize, table.type_ids.itemsize) == itemsizes
        index.packed = dict(zip(rows.keys, refs, strict=True))
        assert [index.get(k) for k in rows.keys] == list(rows.entries(3).values())
