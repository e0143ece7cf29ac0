"""Hint data: where each key's record sits in a data file, so that an open builds the index
without reading (or decoding) a single value.

Two kinds of file carry it (docs/FORMAT.md, sections 7.2 and 15):

- a snapshot's *hint block*: six columns (keys, offsets, heads, sizes, type ids, types), one
  row per frame, written by :class:`~logkv.snapshot.SnapshotWriter` through :class:`Columns`;
- a sealed segment's *hint file* ``NNNNNNNN.hint``: a header, a meta block saying which bytes
  of the segment it describes (size, last frame, chain value there, seq range), and the same
  columns for the last record of each key the segment sets, plus the keys it deletes. It is
  written after the segment is sealed, by :class:`HintWriter`'s thread: from the hint data the
  writer collected as it appended (:class:`CollectedHint`, :func:`write_collected_hint`,
  which reads no record), or from a scan that checks every frame (:func:`write_segment_hint`,
  for a segment the writer did not see whole); both give the same bytes. An open reads it
  (:func:`load_segment_hint`), checks it against the segment and falls back to scanning the
  segment when it is missing, damaged or stale.

A hint is derived data: it is never the only copy of anything, it is not synced, and every
use checks it. Its columns become index entries through :func:`index_rows`.
"""

from __future__ import annotations

import logging
import os
import struct
import sys
import threading
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from functools import partial
from itertools import repeat
from pathlib import Path
from typing import Any, Final, cast

import crc32c
import msgpack

from .blocks import encode_block, read_block
from .errors import CorruptionError
from .format import (
    FRAME_HEADER,
    FRAME_HEADER_SIZE,
    FRAME_MAGIC_PREFIX,
    SEGMENT_HEADER_SIZE,
    Op,
    chain_of,
    check_segment_header,
    streamed_entry_size,
)
from .fsutil import create_temp, open_for_reading, remove_quietly
from .index import (
    HEAD_MASK,
    HEAD_OVER_SIZE,
    HEAD_SHIFT,
    MAX_OFFSET,
    MAX_SIZE,
    MAX_STREAMED_SIZE,
    OFFSET_MASK,
    SIZE_MASK,
    SIZE_SHIFT,
    TYPE_SHIFT,
    ContentTypes,
    Entry,
    Index,
    RowTable,
    file_base,
    pack,
    unpack,
)
from .layout import hint_name, list_hints, segment_name
from .le_columns import all_zero, le_bytes, le_column
from .scan import Damage, SegmentReader
from .turns import Turns

log = logging.getLogger(__name__)

HINT_MAGIC: Final = b"\x89LKVHNT\n"
HINT_VERSION: Final = 1
HINT_HEADER: Final = struct.Struct("<8sII")  # magic, hint version, segment number
#: Keys packed per msgpack call when writing (msgpack holds the GIL while it packs).
_KEYS_PER_PACK: Final = 8192
#: A store whose ``segment_size`` is smaller gets no hint files: scanning a segment that small
#: costs less than reading and checking its hint (the default size is 64 MiB).
MIN_HINTED_SEGMENT = 1 << 20


def hints_wanted(segment_size: int) -> bool:
    """Whether a writer with segments of ``segment_size`` bytes writes hint files."""
    return segment_size >= MIN_HINTED_SEGMENT


#: Bytes of a segment read per call while checking its checksum: a chunk that stays in the
#: processor's cache between its read and its checksum (8 MiB chunks made the check 3x slower).
_CHECK_CHUNK: Final = 1 << 20
#: Keys sorted per ``sorted()`` call when writing a segment's hint (a few milliseconds).
_KEYS_PER_SORT: Final = 4096
#: The hint writer asks whether to give up when it has seen a multiple of this many keys + 1.
_ASK_EVERY: Final = 4095
_SET: Final = int(Op.SET)
_SET_STREAMED: Final = int(Op.SET_STREAMED)


# ---------------------------------------------------------------------------------- columns


class Columns:
    """The columns of hint data being written: :meth:`add` a row per record, then
    :meth:`encode` (the msgpack array ``[keys, offsets, heads, sizes, type_ids, types]``)."""

    __slots__ = ("_type_list", "heads", "keys", "offsets", "sizes", "type_ids", "types")

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.offsets = array("Q")
        self.heads = array("I")
        self.sizes = array("q")
        self.type_ids = array("I")
        self.types: dict[str | None, int] = {}
        self._type_list: list[str | None] = []

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, key: str, offset: int, head: int, size: int, content_type: str | None) -> None:
        """One row: ``key``'s frame at ``offset``, its value ``head`` bytes in, ``size`` bytes
        long (-1: a stored None; below -1: a streamed set, ``-2 - size`` bytes in its value
        file, and ``head`` the whole frame)."""
        self.keys.append(key)
        self.offsets.append(offset)
        self.heads.append(head)
        self.sizes.append(size)
        type_id = self.types.get(content_type)
        if type_id is None:
            type_id = self.types[content_type] = len(self.types)
        self.type_ids.append(type_id)

    def add_packed(self, keys: list[str], entries: list[int], names: list[str | None]) -> None:
        """A row per key of ``keys`` (into empty columns), from its packed index entry in
        ``entries`` (type ids indexing ``names``): the rows :meth:`add` would give, a column
        at a time (a loop of :meth:`add` costs the hint thread, and the writers waiting for
        the GIL meanwhile, several times more)."""
        assert not self.keys, "add_packed fills empty columns"
        if entries and min(entries) < 0:  # a streamed set is packed otherwise: row by row
            for key, packed in zip(keys, entries, strict=True):
                self.add(key, *unpack(packed, names)[1:])
            return
        self.keys = keys
        self.offsets = array("Q", [packed & OFFSET_MASK for packed in entries])
        self.heads = array("I", [packed >> HEAD_SHIFT & HEAD_MASK for packed in entries])
        self.sizes = array("q", [(packed >> SIZE_SHIFT & SIZE_MASK) - 1 for packed in entries])
        ids: dict[int, int] = {}  # the index's type id -> this file's, in order of first use
        number = ids.setdefault
        self.type_ids = array("I", [number(packed >> TYPE_SHIFT, len(ids)) for packed in entries])
        self.types = {names[type_id]: i for type_id, i in ids.items()}

    def entry(self, i: int, file_id: int) -> Entry:
        """Row ``i`` as an index entry in file ``file_id``."""
        if len(self._type_list) != len(self.types):
            self._type_list = list(self.types)
        return (
            file_id,
            self.offsets[i],
            self.heads[i],
            self.sizes[i],
            self._type_list[self.type_ids[i]],
        )

    def encode(self, deleted: list[str] | None = None, key_table: bytes | None = None) -> bytes:
        """The msgpack array of the six columns (a segment hint: and the ``deleted`` keys as a
        seventh; a snapshot's: an empty seventh and its ``key_table`` as an eighth, see
        :mod:`logkv.key_table`), keys packed a chunk at a time, with exactly the bytes of one
        ``packb``."""
        if key_table is not None:
            deleted = deleted or []
        columns: list[Any] = [
            le_bytes(self.offsets),
            le_bytes(self.heads),
            le_bytes(self.sizes),
            le_bytes(self.type_ids),
            list(self.types),
        ]
        extra = [] if deleted is None else [pack_keys(deleted)]
        if key_table is not None:
            extra.append(msgpack.packb(key_table))
        parts = [
            msgpack.Packer().pack_array_header(1 + len(columns) + len(extra)),
            pack_keys(self.keys),
            *(msgpack.packb(column) for column in columns),
            *extra,
        ]
        return b"".join(parts)


@dataclass(frozen=True, slots=True)
class Rows:
    """Hint columns read back and checked: row ``i`` is ``keys[i]``'s record."""

    keys: list[str]
    offsets: array[int]
    heads: array[int]
    sizes: array[int]
    type_ids: array[int]
    types: list[str | None]
    #: Whether any size is negative (a stored None or a streamed set); False only when
    #: known that none is.
    negative_sizes: bool = True

    def entries(self, file_id: int) -> dict[str, Entry]:
        """Every row as an index entry in file ``file_id`` (for readers other than open)."""
        types = self.types
        return dict(
            zip(
                self.keys,
                zip(  # not strict: repeat() is endless; the columns' lengths were checked
                    repeat(file_id),
                    self.offsets.tolist(),
                    self.heads.tolist(),
                    self.sizes.tolist(),
                    map(types.__getitem__, self.type_ids),
                ),
                strict=True,
            )
        )

    def frame_bytes(self) -> int:
        """The bytes of the frames the rows point to (head + value size in the log each)."""
        sizes = self.sizes
        total = sum(self.heads) + sum(sizes)  # sums in C; then take the negative sizes out
        if self.negative_sizes and sizes and min(sizes) < 0:
            total -= sum(size for size in sizes if size < 0)
        return total


def decode_rows(hint: Any) -> Rows:
    """The six columns of a decoded hint value, checked (lengths, bounds, types); ``ValueError``
    or ``TypeError`` when they are malformed. Extra elements after the six are ignored."""
    keys, offsets_raw, heads_raw, sizes_raw, type_ids_raw, types = hint[:6]
    offsets, heads = le_column("Q", offsets_raw), le_column("I", heads_raw)
    sizes, type_ids = le_column("q", sizes_raw), le_column("I", type_ids_raw)
    if type(keys) is not list or type(types) is not list:
        raise TypeError("keys and types must be arrays")
    if not len(keys) == len(offsets) == len(heads) == len(sizes) == len(type_ids):
        raise ValueError("columns differ in length")
    "".join(keys)  # TypeError unless every key is a str: one pass in C
    if not all(t is None or type(t) is str for t in types):
        raise TypeError("a content type is not a str or nil")
    # Bounds, checked on the little-endian bytes where a pass in C does it (a Python-level
    # max() of a million-row column costs tens of milliseconds): an offset's top two bytes
    # are zero (MAX_OFFSET is 48 bits); every type id is one of the ids in ``types``. Any
    # i64 size is at least -2 - MAX_STREAMED_SIZE: sizes have an upper bound only.
    # A size below 2**32 and not negative has four zero top bytes (the common case, checked
    # in C); else the sizes are looked at one by one.
    size_tops = sizes_raw[4::8] + sizes_raw[5::8] + sizes_raw[6::8] + sizes_raw[7::8]
    small_sizes = all_zero(size_tops)
    if keys and (
        not all_zero(offsets_raw[6::8] + offsets_raw[7::8])
        or not _only_small_ids(type_ids_raw, len(types))
        or (not small_sizes and max(sizes) > MAX_SIZE)
    ):
        raise ValueError("a value lies out of range")
    content_types = [t if t is None else sys.intern(t) for t in types]
    return Rows(keys, offsets, heads, sizes, type_ids, content_types, not small_sizes)


assert MAX_OFFSET == (1 << 48) - 1 and MAX_STREAMED_SIZE == (1 << 64) - 1  # see decode_rows


def _only_small_ids(raw: bytes, count: int) -> bool:
    """Whether every u32 LE of ``raw`` is below ``count`` (checked in C when ``count`` fits a
    byte: the other three bytes of each are zero and the low one is a known id)."""
    if count > 256:
        return max(le_column("I", raw), default=0) < count
    rest = raw[1::4] + raw[2::4] + raw[3::4]
    return all_zero(rest) and not raw[0::4].translate(None, bytes(range(count)))


def pack_rows(rows: Rows, file_id: int, types: ContentTypes) -> list[int]:
    """Row ``i`` as a packed index entry (:func:`~logkv.index.pack`) in file ``file_id``, its
    content type numbered in ``types``.

    An open packs a million rows here, so the loop does as little as it can: the file and
    content type bits are one precomputed ``int`` per type, and size and head are combined
    while they are small ints and shifted into place once (three operations on big ints a
    row, instead of five). The columns are read as arrays (``tolist()`` first was slower here,
    and holds three more lists of a million ints at the open's peak)."""
    base = file_base(file_id)
    ids = types.ids_of(rows.types)
    tops = [base | i << TYPE_SHIFT for i in ids]
    offsets, heads, sizes = rows.offsets, rows.heads, rows.sizes
    if len(tops) == 1:
        top = tops[0]
        return [
            offset | top | (size + 1 | head << HEAD_OVER_SIZE) << SIZE_SHIFT
            if size >= -1
            else pack(file_id, offset, head, size, ids[0])  # a streamed set
            for offset, head, size in zip(offsets, heads, sizes, strict=True)
        ]
    return [
        offset | tops[type_id] | (size + 1 | head << HEAD_OVER_SIZE) << SIZE_SHIFT
        if size >= -1
        else pack(file_id, offset, head, size, ids[type_id])  # a streamed set
        for offset, head, size, type_id in zip(offsets, heads, sizes, rows.type_ids, strict=True)
    ]


def index_rows(rows: Rows, file_id: int, index: Index) -> Iterable[int]:
    """Row ``i``'s entry for ``index`` in file ``file_id``: a row reference into the columns
    (:meth:`Index.add_rows <logkv.index.Index.add_rows>`, no work per row), else packed
    (:func:`pack_rows`)."""
    refs = index.add_rows(row_table(rows, file_id))
    return pack_rows(rows, file_id, index.types) if refs is None else refs


def row_table(rows: Rows | Columns, file_id: int) -> RowTable:
    """``rows`` of file ``file_id`` (read back, or as a snapshot's writer holds them) as the
    index keeps them (columns as narrow as they fit)."""
    return RowTable(
        file_id,
        _narrowed(rows.offsets, "I"),
        _narrowed(rows.heads, "H"),
        rows.sizes,
        _narrowed(rows.type_ids, "B"),
        list(rows.types),  # a Columns' types are a dict in id order
    )


def _narrowed(column: array[int], typecode: str) -> array[int]:
    """Unsigned ``column`` with the narrower items of ``typecode`` when every value fits (its
    top bytes are all zero, seen in C), else ``column`` itself: a row table keeps its columns
    for as long as the index refers to them (offsets below 4 GiB, heads below 64 KiB and
    fewer than 256 content types save 9 of the 24 bytes a row)."""
    width, narrow = column.itemsize, array(typecode).itemsize
    if sys.byteorder != "little":
        return column
    raw = column.tobytes()
    if not all(all_zero(raw[i::width]) for i in range(narrow, width)):
        return column
    out = bytearray(len(column) * narrow)
    for i in range(narrow):
        out[i::narrow] = raw[i::width]
    return array(typecode, out)


def pack_keys(keys: list[str]) -> bytes:
    """``msgpack.packb(keys)``, packed a chunk at a time: one call for a million keys holds the
    GIL for 200 ms, stalling every writer; between chunks it takes turns with other threads
    (:class:`~logkv.turns.Turns`)."""
    packer = msgpack.Packer()
    parts = [packer.pack_array_header(len(keys))]
    turn = Turns().take
    for start in range(0, len(keys), _KEYS_PER_PACK):
        turn()
        chunk = keys[start : start + _KEYS_PER_PACK]
        header = len(packer.pack_array_header(len(chunk)))
        parts.append(packer.pack(chunk)[header:])
    return b"".join(parts)


# ---------------------------------------------------------------------------------- segment hints


@dataclass(frozen=True, slots=True)
class SegmentHint:
    """A sealed segment's hint, read back and checked against the segment.

    ``rows`` are the keys the segment leaves set (the last record of each, in key order),
    ``deleted`` the keys whose last record in it is a delete (in key order).
    """

    number: int
    #: The segment's size, and what a scan of it would end with.
    size: int
    first_seq: int
    last_seq: int
    last_us: int
    chain: bytes
    #: CRC-32C of the segment's bytes ``[0, size)``.
    checksum: int
    rows: Rows
    deleted: list[str]


def write_segment_hint(
    folder: Path, number: int, given_up: Callable[[], bool] | None = None
) -> bool:
    """Scan sealed segment ``number`` of the store in ``folder`` (every frame checked) and write
    its hint file; False when the segment is damaged or empty, or is gone (a compaction
    retired it), or ``given_up()`` turned true during the scan (asked every few thousand
    frames): then it has no hint file (one left from before is removed). The file appears
    whole or not at all (a temp file renamed into place); it is not synced: a hint lost or
    damaged by a crash is rebuilt."""
    if _write_segment_hint(folder, number, given_up):
        return True
    remove_hint(folder, number)
    return False


def _write_segment_hint(folder: Path, number: int, given_up: Callable[[], bool] | None) -> bool:
    """:func:`write_segment_hint` but for removing an old hint when none can be written."""
    path = folder / segment_name(number)
    # Each key's last record as a packed entry (None: a delete): ints, which the garbage
    # collector does not track (tuples kept here would pile up as young objects while the
    # decoded records are freed, until one young pass walked them all, stalling writers).
    last: dict[str, int | None] = {}
    types = ContentTypes()
    type_id = types.id
    damaged: list[Damage] = []
    first_seq = last_seq = last_us = 0
    try:
        with SegmentReader(
            path, number, is_last=False, synced=None, report=damaged.append
        ) as reader:
            last_offset = -1
            # values=False: a big value's size stands for it (the frame's CRC is still
            # checked), so the scan never copies a value out of the segment
            for offset, length, fields in reader.frames(0, values=False):
                if damaged:
                    return False
                if given_up is not None and not len(last) & _ASK_EVERY and given_up():
                    return False
                seq = fields[0]
                if seq <= last_seq:
                    return False
                first_seq = first_seq or seq
                last_seq, last_us = seq, fields[1]
                if fields[2] == _SET:
                    value = fields[5]
                    size = -1 if value is None else len(value)
                    head = length - size if size > 0 else length
                    last[fields[3]] = pack(number, offset, head, size, type_id(fields[4]))
                elif fields[2] == _SET_STREAMED:
                    size = streamed_entry_size(fields[5])
                    last[fields[3]] = pack(number, offset, length, size, type_id(fields[4]))
                else:
                    last[fields[3]] = None
                last_offset = offset
            if damaged or last_offset < 0 or reader.end != reader.size:
                return False
            size = reader.size
            chain = chain_of(reader.buf, last_offset)
            checksum = crc32c.crc32c(reader.buf)  # releases the GIL while it runs
    except FileNotFoundError:
        return False
    meta = _Meta(number, size, last_offset, chain, first_seq, last_seq, last_us, checksum)
    return _write_hint_file(folder, meta, last, types.names)


class CollectedHint:
    """The hint data of the active segment, collected by the writer as it appends: each key's
    last record there as its packed index entry (None: a delete) in :attr:`last`, and where
    the last record starts. Once the segment is sealed (:meth:`seal`), :class:`HintWriter`
    writes its hint file from this without reading a record of the segment
    (:func:`write_collected_hint`).

    The writer's part costs one dict store and one attribute store per record. Entries are
    ints, which the garbage collector does not track; the dict holds one segment's keys at most.
    A segment that held records when the writer opened it is not collected ``whole``: its
    hint comes from a scan.
    """

    __slots__ = (
        "chain",
        "first_seq",
        "last",
        "last_offset",
        "last_seq",
        "last_us",
        "names",
        "number",
        "whole",
    )

    def __init__(
        self, number: int, first_seq: int, names: list[str | None], *, whole: bool
    ) -> None:
        #: The segment whose records these are.
        self.number = number
        #: Whether every record of the segment is collected here (False: it held records
        #: before this writer appended to it).
        self.whole = whole
        #: The sequence number of its first record.
        self.first_seq = first_seq
        #: The content type names the packed entries' type ids index (the store's index's,
        #: which only ever grows).
        self.names = names
        self.last: dict[str, int | None] = {}
        #: Where the segment's last record starts (-1: no record yet).
        self.last_offset = -1
        # Set by seal(): the last record's sequence number, timestamp and chain value.
        self.last_seq = self.last_us = 0
        self.chain = b""

    def seal(self, last_seq: int, last_us: int, chain: bytes) -> None:
        """The segment is sealed; its last record has sequence number ``last_seq``, timestamp
        ``last_us`` and chain value ``chain``."""
        self.last_seq, self.last_us, self.chain = last_seq, last_us, chain


def write_collected_hint(
    folder: Path, hint: CollectedHint, given_up: Callable[[], bool] | None = None
) -> bool:
    """Write the hint file of sealed segment ``hint.number`` from what the writer collected,
    without decoding the segment: the meta is checked against the segment (its header, and a
    frame at the last record's offset that ends the file and carries the last chain value),
    and the CRC-32C of the segment's bytes is computed from the file (without the GIL). When
    they disagree, the segment is scanned as :func:`write_segment_hint` does. The bytes
    written are those a scan writes for the same segment. Returns, and leaves the files, as
    :func:`write_segment_hint` does (``given_up`` is asked once, before the hint is built)."""
    if _write_collected_hint(folder, hint, given_up):
        return True
    remove_hint(folder, hint.number)
    return False


def _write_collected_hint(
    folder: Path, hint: CollectedHint, given_up: Callable[[], bool] | None
) -> bool:
    """:func:`write_collected_hint` but for removing an old hint when none can be written."""
    number = hint.number
    if hint.last_offset < 0:
        return False  # nothing appended: no hint, as a scan of an empty segment writes none
    path = folder / segment_name(number)
    try:
        size = os.stat(path).st_size
        problem = _disagreement(path, number, size, hint.last_offset, hint.chain)
        if problem is None:
            total, checksum = _crc32c_of(path)
            if total != size:
                problem = f"the segment was {size} bytes, then {total}"
    except FileNotFoundError:
        return False
    if problem is not None:
        log.info("segment %d in %s: %s; scanning it for its hint", number, folder, problem)
        return _write_segment_hint(folder, number, given_up)
    if given_up is not None and given_up():
        return False
    meta = _Meta(
        number,
        size,
        hint.last_offset,
        hint.chain,
        hint.first_seq,
        hint.last_seq,
        hint.last_us,
        checksum,
    )
    return _write_hint_file(folder, meta, hint.last, hint.names)


@dataclass(frozen=True, slots=True)
class _Meta:
    """A segment hint's meta block (docs/FORMAT.md, section 15.1): its keys are these fields'
    names, in this order."""

    segment: int
    size: int
    last_offset: int
    chain: bytes
    first_seq: int
    last_seq: int
    last_us: int
    crc32c: int


def _write_hint_file(
    folder: Path, meta: _Meta, last: dict[str, int | None], names: list[str | None]
) -> bool:
    """Write segment ``meta.segment``'s hint file: ``meta``, and a row for each key of
    ``last`` (its packed entry, type ids indexing ``names``) or a deleted key (None), in key
    order. False (and no file) when the segment is gone once it is written."""
    number = meta.segment
    keys = _sorted_in_pieces(list(last))
    entries = list(map(last.__getitem__, keys))
    deleted: list[str] = []
    if None in entries:
        deleted = [key for key, packed in zip(keys, entries, strict=True) if packed is None]
        keys = [key for key, packed in zip(keys, entries, strict=True) if packed is not None]
        entries = [packed for packed in entries if packed is not None]
    columns = Columns()
    columns.add_packed(keys, cast(list[int], entries), names)
    meta_body = msgpack.packb(asdict(meta))  # the fields in order, named as the block's keys
    body = columns.encode(deleted)
    target = folder / hint_name(number)
    fd, temp = create_temp(target)
    try:
        with open(fd, "wb") as file:
            file.write(HINT_HEADER.pack(HINT_MAGIC, HINT_VERSION, number))
            file.write(encode_block(meta_body))
            file.write(encode_block(body))
        os.replace(temp, target)
    except BaseException:
        remove_quietly(temp)
        raise
    if not (folder / segment_name(number)).exists():  # retired while we wrote: no hint for it
        remove_quietly(target)
        return False
    return True


def _sorted_in_pieces(keys: list[str], step: int = _KEYS_PER_SORT) -> list[str]:
    """``keys`` in order, with no single call holding the GIL for long.

    One ``sorted()`` of a segment's 60,000 keys in random order holds the GIL for tens of
    milliseconds, and every writer of the store waits for it; so does one ``sorted()`` that
    merges many sorted pieces, or even two long ones. So the keys are sorted ``step`` at a
    time, and the sorted runs are merged two at a time by :func:`_merged`, whose calls each
    take at most ``2 * step`` keys. (A merge in Python code, ``heapq.merge``, costs several
    times more in all, which the writers wait for as well.)"""
    runs = [sorted(keys[i : i + step]) for i in range(0, len(keys), step)]
    while len(runs) > 1:
        merged = [_merged(runs[i], runs[i + 1], step) for i in range(0, len(runs) - 1, 2)]
        runs = merged + runs[-1:] if len(runs) % 2 else merged
    return runs[0] if runs else []


def _merged(a: list[str], b: list[str], step: int) -> list[str]:
    """Sorted lists ``a`` and ``b`` merged, in pieces: the next ``step`` keys of the list whose
    piece ends lower, with the keys of the other list up to that end (fewer than ``step``),
    merged by one ``sorted()`` that finds the two runs."""
    out: list[str] = []
    i = j = 0
    while i < len(a) and j < len(b):
        a_end, b_end = min(i + step, len(a)), min(j + step, len(b))
        if a[a_end - 1] <= b[b_end - 1]:
            upto = bisect_right(b, a[a_end - 1], j, b_end)
            out += sorted(a[i:a_end] + b[j:upto])
            i, j = a_end, upto
        else:
            upto = bisect_right(a, b[b_end - 1], i, a_end)
            out += sorted(a[i:upto] + b[j:b_end])
            i, j = upto, b_end
    out += a[i:]
    out += b[j:]
    return out


def load_segment_hint(folder: Path, number: int, segment: Path) -> SegmentHint | None:
    """The hint of segment ``number`` (the file ``segment``), checked against it; None when
    there is none. :class:`CorruptionError` (naming the hint file) when the hint is damaged
    or does not describe the segment as it is: another size, another last frame or chain
    value, a bad segment header. The checksum of the segment's bytes is the caller's to check
    (:func:`segment_changed`: it reads the whole segment, so the open runs it in a thread)."""
    path = folder / hint_name(number)
    try:
        with open_for_reading(path) as file:
            data = file.read()
    except FileNotFoundError:
        return None
    if len(data) < HINT_HEADER.size:
        raise CorruptionError(path, 0, "hint is cut short")
    magic, version, stored = HINT_HEADER.unpack_from(data)
    if magic != HINT_MAGIC or version != HINT_VERSION or stored != number:
        raise CorruptionError(path, 0, "bad hint header")
    meta, body_at = read_block(path, data, HINT_HEADER.size, "hint meta")
    body, end = read_block(path, data, body_at, "hint columns")
    if end != len(data):
        raise CorruptionError(path, body_at, "hint has bytes after its columns")
    try:
        hint = SegmentHint(
            number,
            int(meta["size"]),
            int(meta["first_seq"]),
            int(meta["last_seq"]),
            int(meta["last_us"]),
            bytes(meta["chain"]),
            int(meta["crc32c"]),
            decode_rows(body),
            list(body[6]) if len(body) == 7 else [],
        )
        if int(meta["segment"]) != number or len(body) != 7:
            raise ValueError("the hint names another segment, or lacks its deleted keys")
        if not set(map(type, hint.deleted)) <= {str}:
            raise TypeError("a deleted key is not a str")
        last_offset = int(meta["last_offset"])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise CorruptionError(path, 0, f"hint is malformed: {exc}") from None
    problem = _disagreement(segment, number, hint.size, last_offset, hint.chain)
    if problem is not None:
        raise CorruptionError(path, 0, f"hint does not describe segment {number}: {problem}")
    return hint


def _disagreement(
    segment: Path, number: int, size: int, last_offset: int, chain: bytes
) -> str | None:
    """Why a hint of a segment of ``size`` bytes whose last frame is at ``last_offset`` with
    chain value ``chain`` does not describe ``segment`` as it is on disk (None: it does): its
    size, header, and the frame header at ``last_offset`` (the frame must end the file and
    carry ``chain``)."""
    with open_for_reading(segment) as file:
        actual = os.fstat(file.fileno()).st_size
        if actual != size:
            return f"the segment is {actual} bytes, the hint describes {size}"
        header = os.pread(file.fileno(), SEGMENT_HEADER_SIZE, 0)
        problem = check_segment_header(header, number)
        if problem is not None:
            return problem
        if not SEGMENT_HEADER_SIZE <= last_offset <= size - FRAME_HEADER_SIZE:
            return "its last frame lies outside the segment"
        frame = os.pread(file.fileno(), FRAME_HEADER_SIZE, last_offset)
    magic, _, length, stored_chain = FRAME_HEADER.unpack(frame)
    if not magic.startswith(FRAME_MAGIC_PREFIX) or last_offset + FRAME_HEADER_SIZE + length != size:
        return "no frame ends the segment where the hint says"
    if stored_chain != chain:
        return "the chain value of the last frame differs"
    return None


def segment_changed(segment: Path, hint: SegmentHint) -> str | None:
    """Why ``segment``'s bytes are not those ``hint`` was written from (None: they are): its
    CRC-32C over the whole file (:func:`_crc32c_of`: without the GIL, so this runs beside the
    open's other work). Any damage since, anywhere in the segment, shows here; the open then
    scans the segment and finds it."""
    total, value = _crc32c_of(segment)
    if total != hint.size:
        return f"the segment is {total} bytes, the hint describes {hint.size}"
    if value != hint.checksum:
        return "the segment's bytes changed since its hint was written (CRC-32C)"
    return None


def _crc32c_of(path: Path) -> tuple[int, int]:
    """``(size, CRC-32C)`` of file ``path``'s bytes, read a chunk at a time: the GIL is let go
    while each chunk is read and checksummed, so other threads run meanwhile."""
    buffer = bytearray(_CHECK_CHUNK)
    view = memoryview(buffer)
    value = 0
    total = 0
    with open_for_reading(path) as file:
        while True:
            read = os.readv(file.fileno(), [buffer])
            if not read:
                break
            value = crc32c.crc32c(view[:read], value)
            total += read
    view.release()
    return total, value


def remove_hint(folder: Path, number: int) -> None:
    """Remove segment ``number``'s hint file, if any."""
    remove_quietly(folder / hint_name(number))


def remove_stale_hints(folder: Path, covers: int) -> None:
    """Remove the hint files of segments a snapshot covers (``<= covers``) and of segments that
    are gone (a hint written while compaction retired its segment)."""
    for number, path in list_hints(folder):
        if number <= covers or not (folder / segment_name(number)).exists():
            remove_quietly(path)


#: Collected hints queued at most: past this, the oldest queued one is let go and its segment
#: scanned instead, so that a hint thread that falls behind holds a few segments' keys, not more.
MAX_QUEUED_COLLECTED = 4


class HintWriter:
    """Writes the hint files of sealed segments, one at a time, in a background thread (started
    by the first :meth:`submit`), so that no writer waits for one: from the hint data the
    writer collected (:class:`CollectedHint`), or by a scan of the segment (a segment replayed
    by an open, or one the writer did not see whole)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._queue: list[int | CollectedHint] = []
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._busy = False
        self._closed = False
        #: Segments ``1..covered`` are being compacted away: their hints are not worth writing.
        self._covered = 0

    def skip_through(self, covers: int) -> None:
        """A compaction covers segments ``1..covers``: drop their queued hints, and give up the
        one being written if it is one of them. Compaction retires those segments, so their
        hints would be deleted unread, and writing them would only compete with compaction
        and the writers for the interpreter. (A compaction that fails leaves them without
        hints: the next open scans them and queues their hints again.)"""
        with self._wake:
            self._covered = max(self._covered, covers)
            self._queue = [job for job in self._queue if _number_of(job) > covers]
            self._wake.notify_all()

    def submit(self, job: int | CollectedHint) -> None:
        """Write a sealed segment's hint soon (nothing is appended to it any more): from the
        hint data collected while it was written, or, given its number, from a scan of it."""
        with self._wake:
            if self._closed or _number_of(job) <= self._covered:
                return  # closed, or a compaction retires the segment
            if isinstance(job, CollectedHint):
                collected = [
                    i for i, queued in enumerate(self._queue) if isinstance(queued, CollectedHint)
                ]
                if len(collected) >= MAX_QUEUED_COLLECTED:
                    oldest = collected[0]
                    self._queue[oldest] = _number_of(self._queue[oldest])
            self._queue.append(job)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"logkv-hints {self.folder.name}", daemon=True
                )
                self._thread.start()
            self._wake.notify()

    def wait(self) -> None:
        """Block until every submitted hint is written (or given up on)."""
        with self._wake:
            while self._queue or self._busy:
                self._wake.wait()

    def close(self) -> None:
        """Drop the hints not started yet; wait for the one being written. Idempotent."""
        with self._wake:
            self._closed = True
            self._queue.clear()
            self._wake.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _covers(self, number: int) -> bool:
        """Whether a compaction under way covers segment ``number``."""
        return self._covered >= number

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                job = self._queue.pop(0)
                number = _number_of(job)
                if number <= self._covered:
                    continue
                self._busy = True
            try:
                given_up = partial(self._covers, number)
                if isinstance(job, CollectedHint):
                    write_collected_hint(self.folder, job, given_up)
                else:
                    write_segment_hint(self.folder, job, given_up)
            except Exception as exc:  # a hint is an optimisation: open scans without it
                log.warning(
                    "could not write the hint of segment %d in %s: %s", number, self.folder, exc
                )
            finally:
                del job  # a collected hint's keys go now, not when the next one is taken
                with self._wake:
                    self._busy = False
                    self._wake.notify_all()


def _number_of(job: int | CollectedHint) -> int:
    """The segment a queued hint job is for."""
    return job.number if isinstance(job, CollectedHint) else job
