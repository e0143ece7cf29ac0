"""The in-memory index: key -> where its record is, packed into one ``int``; keys in order on
demand.

**Packed entries.** An entry (the tuple :data:`Entry`: file, offset, head, size,
content type) is kept as one Python ``int`` with the five fields at fixed bit positions (see
:func:`pack`); the content type as a small id into the index's :class:`ContentTypes`. A
streamed set, whose value is in a value file and may be bigger than any value the log holds,
is packed as a negative ``int`` with room for its size (rare, so its extra bytes are too).
An ``int`` is not an object the garbage collector tracks, and a ``dict`` holding only ``str``
keys and ``int`` values is not tracked either: the collector never walks the index, and an
overwrite allocates nothing it tracks. An entry costs one 48-byte ``int`` (five 30-bit
digits) and its dict slot, instead of a 5-tuple and the ``int`` objects of its fields.

**Row references.** An open loads a snapshot's and each sealed segment's hint in bulk; packing
each of a million rows into an entry, one at a time in Python, cost more than half a second.
Instead the hint's columns are kept as a :class:`RowTable` and each of its keys gets a *row
reference*, a small ``int`` (``slot << 32 | row``, below :data:`ROW_LIMIT`) made in C by
``range``; :func:`unpack` and the ``packed_*`` readers resolve it through the table. A row
reference costs a 32-byte ``int`` plus its row (24 bytes of columns) where a packed entry costs
48 bytes. Writes after the open make packed entries, as before; a compaction lets go of the
tables of the files it retires (:meth:`Index.drop_rows`), and a dropped index of all of its own.

**Stored keys.** A dict of a million keys took 0.8 s to build here, most of an open after
compaction: each insert lands at a random place in megabytes of table. A snapshot written by
this version also stores a hash table over its sorted keys (:mod:`logkv.key_table`), and an
open makes those keys the index's *stored keys* (:meth:`Index.set_stored`) with no per-key
work: a key's entry is then the row reference of its row. :attr:`Index.packed` holds only the
keys written since (shadowing a stored key of the same name), and a set holds the stored keys
deleted since. Reads go through :meth:`Index.find` (the dict, then the table: 0.5-1.5 µs
more for a stored key than a dict hit); writes through :meth:`Index.put_packed` and
:meth:`Index.remove_packed`, which keep the count exact. The compaction that retires the
snapshot makes its own snapshot's keys the stored keys in one step (:meth:`Index.take_stored`)
and then drops the dict's entries from before its rotation (:meth:`Index.forget_older`), so
the dict keeps only what was written since; a snapshot with no key table makes it point every
live key at the snapshot instead, so all stored keys are written or gone by then, and they
are let go with their row table (:meth:`Index.drop_rows`). Taking the new keys whole also
spares the dict from growing to every key: a dict that grows past some hundreds of thousands
of keys resizes in one call of tens of milliseconds, a pause for every thread. With stored
keys the index counts its keys itself (the dict is not all of them).

**Order.** Point operations (get, set, delete) use the plain ``dict``. The keys are also kept in
a ``sortedcontainers.SortedList`` for ordered reads (iteration, paging, compaction), but a key
written for the first time is not inserted into it there and then: it joins a set of *fresh*
keys, and fresh keys are merged into the sorted list, a sorted batch at a time, before keys are
next read in order.

A sorted insert costs 1-3 µs in a large index (a bisection over random memory); adding to a set
costs a few tens of nanoseconds. A crawler that writes a million new keys and never lists them
in order never pays for sorting them; one that lists them once pays for the merge then (about
1.6 µs a key, batches sorted first, so that the inserts go through the list in order); one that
lists after every write pays what an insert costs, as before.

Merging works in batches of at most :data:`MERGE_BATCH` keys and mutates the sorted list in
place, so the engine can release its lock between batches (writers go on meanwhile) and no big
new container appears at once.

An open fills the dict first (:meth:`Index.load`) and sorts all its keys once at the end
(:meth:`Index.sort_all`): the keys of a snapshot and of each segment's hint come in key order,
so the sort merges a few sorted runs instead of sorting a million keys.

The sets stay exact: every key of the index is either in the sorted list or fresh, never both.
Not thread-safe: the engine calls it with its lock held.
"""

from __future__ import annotations

import threading
import weakref
from array import array
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Final, NamedTuple

from sortedcontainers import SortedList

from .key_range import keys_after

if TYPE_CHECKING:
    from collections.abc import Collection, Iterator, Sequence

    from .key_table import KeyTable

#: An entry unpacked: ``(file_id, offset, head, size, content_type)`` (see :class:`IndexEntry`).
#: ``size`` is the value's length in the log, -1 for a stored None, and ``-2 - the value's
#: size`` for a streamed set, whose value is in a value file (then ``head`` is the whole frame).
Entry = tuple[int, int, int, int, str | None]


def value_size(entry: Entry) -> int:
    """The size of the value an index entry points to: in the log, or in its value file (0
    for a stored None)."""
    size = entry[3]
    return size if size >= 0 else (-2 - size if size < -1 else 0)


class IndexEntry(NamedTuple):
    """Where the current record of a key is, and what it holds: what :meth:`Engine.entry
    <logkv.engine.Engine.entry>` returns.

    Inside the engine an entry is packed into an ``int`` (:func:`pack`), unpacked to the plain
    tuple :data:`Entry` where it is read; this is the same five fields, named,
    for everyone else.
    """

    #: The data file: a segment number (> 0) or a snapshot, as ``-covers`` (< 0).
    file_id: int
    #: Where the record's frame starts in that file.
    offset: int
    #: The frame's length up to the value (header, checksum, key, content type).
    head: int
    #: The value's length in bytes; -1 when the stored value is None; ``-2 - length`` for a
    #: streamed value, which is in a value file (the frame holds only its reference).
    size: int
    #: The record's content type, as stored.
    content_type: str | None

    @property
    def value_size(self) -> int:
        """The value's length in bytes (0 for None)."""
        return value_size(self)

    @property
    def streamed(self) -> bool:
        """Whether the value is in a value file (written by ``Engine.set_stream``)."""
        return self.size < -1


# Where the fields read one at a time sit in an :data:`Entry` tuple (code that
# needs more of them unpacks the tuple, as the hot paths do).
FILE_ID: Final = 0
OFFSET: Final = 1
CONTENT_TYPE: Final = 4


#: Fresh keys merged per call of :meth:`Index.merge_some` (about 2 ms at 1.6 µs a key): the
#: engine holds its lock for one call, and a writer waits that long.
MERGE_BATCH: Final = 1024

# The packed layout, from the lowest bit: offset (48 bits), size + 1 (33 bits), head (32 bits),
# file id + FILE_BIAS (34 bits), then the content type id (the top bits, as many as it needs).
# A streamed set (size < -1) is packed as a negative int, ``~p``, where ``p`` has the same
# fields as a stored None (size + 1 = 0) up to the file id, then the value's size (64 bits),
# then the content type id: its frame length, file and offset read from ``p`` as for any
# entry, and the value size, which may exceed MAX_SIZE, fits.
OFFSET_BITS: Final = 48
SIZE_SHIFT: Final = 48
HEAD_SHIFT: Final = 81
FILE_SHIFT: Final = 113
TYPE_SHIFT: Final = 147
STREAMED_SIZE_SHIFT: Final = TYPE_SHIFT
STREAMED_TYPE_SHIFT: Final = TYPE_SHIFT + 64
OFFSET_MASK: Final = (1 << 48) - 1
SIZE_MASK: Final = (1 << 33) - 1
HEAD_MASK: Final = (1 << 32) - 1
FILE_MASK: Final = (1 << 34) - 1
STREAMED_SIZE_MASK: Final = (1 << 64) - 1
#: How far above the size field the head field sits (see :func:`entry_base`).
HEAD_OVER_SIZE: Final = HEAD_SHIFT - SIZE_SHIFT
# The shifts of the file and type fields, from the bits above the offset (see :func:`unpack`;
# the head's is HEAD_OVER_SIZE).
_FILE_FROM_SIZE: Final = FILE_SHIFT - SIZE_SHIFT
_TYPE_FROM_SIZE: Final = TYPE_SHIFT - SIZE_SHIFT
FILE_BIAS: Final = 1 << 33
#: Adds to a packed entry what its value size (``size + 1``) takes there.
SIZE_ONE: Final = 1 << SIZE_SHIFT
#: The largest offset, head, value size and file number (either sign) a packed entry holds.
MAX_OFFSET: Final = OFFSET_MASK
MAX_HEAD: Final = HEAD_MASK
MAX_SIZE: Final = SIZE_MASK - 1
MAX_FILE: Final = FILE_BIAS - 1
#: The largest size of a streamed value (its entry's size field is ``-2 - size``).
MAX_STREAMED_SIZE: Final = STREAMED_SIZE_MASK


def pack(file_id: int, offset: int, head: int, size: int, type_id: int) -> int:
    """One entry as an ``int`` (``size`` -1: a stored None; below -1: a streamed set of
    ``-2 - size`` bytes; ``type_id`` from :class:`ContentTypes`). The fields must lie within
    the ``MAX_*`` bounds.

    >>> p = pack(-3, 16, 40, -1, 2)
    >>> unpack(p, [None, "a", "b"])
    (-3, 16, 40, -1, 'b')
    >>> unpack(pack(5, 16, 90, -2 - (1 << 40), 1), [None, "a"])
    (5, 16, 90, -1099511627778, 'a')
    """
    if size < -1:
        return ~(
            offset
            | head << HEAD_SHIFT
            | (file_id + FILE_BIAS) << FILE_SHIFT
            | (-2 - size) << STREAMED_SIZE_SHIFT
            | type_id << STREAMED_TYPE_SHIFT
        )
    return (
        offset
        | (size + 1) << SIZE_SHIFT
        | head << HEAD_SHIFT
        | (file_id + FILE_BIAS) << FILE_SHIFT
        | type_id << TYPE_SHIFT
    )


def file_base(file_id: int) -> int:
    """What :func:`pack` adds for ``file_id`` (for loaders that pack many entries of one file:
    ``base | offset | (size + 1) << SIZE_SHIFT | head << HEAD_SHIFT | type_id << TYPE_SHIFT``,
    for sizes of -1 and up)."""
    return (file_id + FILE_BIAS) << FILE_SHIFT


def entry_base(file_id: int, type_id: int) -> int:
    """What :func:`pack` adds for ``file_id`` and ``type_id``: a writer that appends many
    entries to one file with few content types keeps it, and packs an entry of a size of -1 and
    up as ``base | offset | (head << HEAD_OVER_SIZE | size + 1) << SIZE_SHIFT`` (five integer
    operations instead of :func:`pack`'s eleven and a call).

    >>> base = entry_base(5, 2)
    >>> base | 16 | (40 << HEAD_OVER_SIZE | 3 + 1) << SIZE_SHIFT == pack(5, 16, 40, 3, 2)
    True
    """
    return (file_id + FILE_BIAS) << FILE_SHIFT | type_id << TYPE_SHIFT


def unpack(packed: int, names: list[str | None]) -> Entry:
    """The entry tuple of a packed entry (``names``: :attr:`ContentTypes.names`)."""
    if packed < ROW_LIMIT:
        if packed >= 0:  # row ``packed & ROW_MASK`` of a hint loaded in bulk (a RowTable)
            table = _row_tables[packed >> ROW_SHIFT]
            row = packed & ROW_MASK
            return (
                table.file_id,
                table.offsets[row],
                table.heads[row],
                table.sizes[row],
                table.types[table.type_ids[row]],
            )
        packed = ~packed
        return (
            (packed >> FILE_SHIFT & FILE_MASK) - FILE_BIAS,
            packed & OFFSET_MASK,
            packed >> HEAD_SHIFT & HEAD_MASK,
            -2 - (packed >> STREAMED_SIZE_SHIFT & STREAMED_SIZE_MASK),
            names[packed >> STREAMED_TYPE_SHIFT],
        )
    rest = packed >> SIZE_SHIFT  # the fields above the offset: shifts of a shorter int
    return (
        (rest >> _FILE_FROM_SIZE & FILE_MASK) - FILE_BIAS,
        packed & OFFSET_MASK,
        rest >> HEAD_OVER_SIZE & HEAD_MASK,
        (rest & SIZE_MASK) - 1,
        names[rest >> _TYPE_FROM_SIZE],
    )


def packed_file(packed: int) -> int:
    """The file id of a packed entry."""
    if packed < ROW_LIMIT:
        if packed >= 0:
            return _row_tables[packed >> ROW_SHIFT].file_id
        packed = ~packed
    return (packed >> FILE_SHIFT & FILE_MASK) - FILE_BIAS


def packed_size(packed: int) -> int:
    """The size field of a packed entry (-1: a stored None; below: a streamed set)."""
    if packed < ROW_LIMIT:
        if packed >= 0:
            return _row_tables[packed >> ROW_SHIFT].sizes[packed & ROW_MASK]
        return -2 - (~packed >> STREAMED_SIZE_SHIFT & STREAMED_SIZE_MASK)
    return (packed >> SIZE_SHIFT & SIZE_MASK) - 1


def packed_type_id(packed: int) -> int:
    """The content type id of a packed entry (not a row reference: its type is its table's)."""
    return ~packed >> STREAMED_TYPE_SHIFT if packed < 0 else packed >> TYPE_SHIFT


def packed_frame_length(packed: int) -> int:
    """The length of the frame a packed entry points to (head + value size in the log)."""
    if packed < ROW_LIMIT:
        if packed >= 0:
            return _row_tables[packed >> ROW_SHIFT].frame_length(packed & ROW_MASK)
        packed = ~packed  # its size field is that of a None: the frame is its head
    size = (packed >> SIZE_SHIFT & SIZE_MASK) - 1
    head = packed >> HEAD_SHIFT & HEAD_MASK
    return head + size if size > 0 else head


# ---------------------------------------------------------------------------------- row tables

#: A packed entry ``0 <= p < ROW_LIMIT`` is a *row reference*: row ``p & ROW_MASK`` of the
#: row table in slot ``p >> ROW_SHIFT`` (an entry packed by :func:`pack` is at least
#: ``1 << FILE_SHIFT``, or negative).
ROW_SHIFT: Final = 32
ROW_MASK: Final = (1 << ROW_SHIFT) - 1
ROW_LIMIT: Final = 1 << 60
_MAX_SLOT: Final = (ROW_LIMIT >> ROW_SHIFT) - 1


@dataclass(frozen=True, slots=True)
class RowTable:
    """The columns of a hint loaded in bulk (a snapshot's or a sealed segment's): row ``i``
    is the entry ``(file_id, offsets[i], heads[i], sizes[i], types[type_ids[i]])``.

    An open points each key of the hint at its row with a small ``int`` (a *row reference*,
    made in C by ``range``) instead of packing every row into an entry one at a time in
    Python: packing a million rows cost more than half a second."""

    file_id: int
    offsets: array[int]
    heads: array[int]
    sizes: array[int]
    type_ids: array[int]
    types: list[str | None]

    def frame_length(self, row: int) -> int:
        """The length of row ``row``'s frame (head + value size in the log)."""
        size = self.sizes[row]
        return self.heads[row] + size if size > 0 else self.heads[row]


#: What a released slot holds: a table without rows (reading one raises IndexError).
RELEASED: Final = RowTable(0, array("Q"), array("I"), array("q"), array("I"), [])
# Every row table of the process, by slot. A slot is never given out again, so a row
# reference to a released table fails loudly instead of reading another table's rows.
_row_tables: list[RowTable] = []
_row_tables_lock = threading.Lock()


def _register_rows(table: RowTable) -> int | None:
    """A new slot holding ``table`` (None: the slots are used up)."""
    with _row_tables_lock:
        slot = len(_row_tables)
        if slot > _MAX_SLOT:
            return None
        _row_tables.append(table)
        return slot


def _release_rows(slots: list[int]) -> None:
    """Let the tables in ``slots`` go (their index is gone, or holds no reference to them)."""
    for slot in slots:
        _row_tables[slot] = RELEASED
    slots.clear()


class ContentTypes:
    """The content types an index has seen, each once, numbered from 0 (None) in order of
    first use: a packed entry holds the number. Never shrinks (a store has few types)."""

    __slots__ = ("ids", "names")

    def __init__(self) -> None:
        self.names: list[str | None] = [None]
        self.ids: dict[str | None, int] = {None: 0}

    def id(self, content_type: str | None) -> int:
        """The number of ``content_type`` (given one on first use)."""
        found = self.ids.get(content_type)
        if found is None:
            found = self.ids[content_type] = len(self.names)
            self.names.append(content_type)
        return found

    def ids_of(self, types: list[str | None]) -> list[int]:
        """The numbers of ``types`` (a file's own type table), in order."""
        return [self.id(t) for t in types]


class Index:
    """``key -> entry`` for point operations, plus the keys in Python string order.

    ``packed`` is the dict of packed entries, for reads on hot paths (:func:`unpack` with
    ``types.names``). Writes go through :meth:`put` / :meth:`put_packed` and :meth:`remove`,
    which keep the sorted keys (lazily) in step.

    >>> index = Index({"b": (1, 16, 40, 3, None)})
    >>> _ = index.put("a", (1, 59, 40, 5, "text/plain"))
    >>> index.after(None, 10)
    ['a', 'b']
    >>> index.get("a")
    (1, 59, 40, 5, 'text/plain')
    """

    __slots__ = (
        "__weakref__",
        "_base_file",
        "_bases",
        "_count",
        "_fresh",
        "_gone",
        "_rows",
        "_sorted",
        "_stored",
        "_stored_first",
        "packed",
        "types",
    )

    def __init__(self, entries: dict[str, Entry] | None = None) -> None:
        self.packed: dict[str, int] = {}
        self.types = ContentTypes()
        self._bases: dict[str | None, int] = {}  # content type -> entry_base(_base_file, id)
        self._base_file = 0  # no data file has number 0
        self._sorted: SortedList = SortedList()
        self._fresh: set[str] = set()  # in packed, not yet in _sorted
        self._rows: list[int] = []  # the slots of the row tables this index refers to
        # The stored keys (see set_stored): None, or a snapshot's keys, each key's entry
        # the row reference _stored_first + its row, unless packed has the key or it is gone
        self._stored: KeyTable | None = None
        self._stored_first = 0
        self._count = 0  # with stored keys: how many keys there are (else len(packed))
        self._gone: set[str] = set()  # stored keys deleted (never in packed)
        weakref.finalize(self, _release_rows, self._rows)
        if entries:
            type_id = self.types.id
            self.packed = {
                key: pack(f, o, h, s, type_id(t)) for key, (f, o, h, s, t) in entries.items()
            }
            self.sort_all()

    def __len__(self) -> int:
        return len(self.packed) if self._stored is None else self._count

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.find(key) is not None

    def find(self, key: str) -> int | None:
        """The packed entry of ``key`` (or its row reference), or None: the hot path of
        reads, with :func:`unpack` and ``types.names``."""
        found = self.packed.get(key)
        if found is None and self._stored is not None and key not in self._gone:
            row = self._stored.find(key)
            if row >= 0:
                return self._stored_first + row
        return found

    def items(self) -> Iterator[tuple[str, int]]:
        """Every key with its packed entry, in no particular order (the written keys, then
        the stored keys that are neither written nor gone)."""
        packed = self.packed
        yield from packed.items()
        stored = self._stored
        if stored is not None:
            gone, first = self._gone, self._stored_first
            for row, key in enumerate(stored.keys):
                if key not in packed and key not in gone:
                    yield key, first + row

    def set_stored(self, keys: KeyTable, table: RowTable) -> bool:
        """Make ``keys`` (a snapshot's, with their stored hash table) and their rows in
        ``table`` the entries of this fresh, empty index, with no per-key work (False: no
        row references can be given; the caller loads the rows into :attr:`packed`).

        They stay there until a compaction puts its own snapshot's keys in their place
        (:meth:`take_stored`) or retires the snapshot (:meth:`drop_rows`): a key written
        since goes into :attr:`packed`, which shadows it, and a key deleted into a set of
        gone keys."""
        assert not self.packed and self._stored is None, "set_stored fills a fresh index"
        refs = self.add_rows(table)
        if refs is None:
            return False
        self._stored, self._stored_first, self._count = keys, refs.start, len(refs)
        return True

    def take_stored(
        self, keys: KeyTable, table: RowTable, changed: Collection[str]
    ) -> list[object] | None:
        """After a compaction, with the lock held: make its snapshot's ``keys`` and their rows
        in ``table`` the stored keys, in one step. ``changed``: the snapshot's keys changed
        since its rotation (the only ones that can be deleted or written since).

        Every key keeps its value: a key written since the rotation keeps its entry in
        :attr:`packed`, a snapshot key deleted since becomes gone, and every other key reads
        from the snapshot, unless :attr:`packed` still holds its entry from before the
        rotation: that entry is as good until the files it points into are retired, and the
        compaction drops it before (:meth:`forget_older`). The work is a lookup per changed
        key. Returns what was let go (the old stored keys), to be dropped after the lock is
        released; None: no row references can be given (the caller points each key at the
        snapshot instead, :meth:`repoint`)."""
        find = self.find
        gone = {key for key in changed if find(key) is None}  # before anything moves
        refs = self.add_rows(table)
        if refs is None:
            return None
        let_go: list[object] = [self._stored, self._gone]
        self._count = len(self)  # the keys are the same ones
        self._stored, self._stored_first, self._gone = keys, refs.start, gone
        return let_go

    def forget_older(self, keys: Sequence[str], covers: int) -> None:
        """Drop the entries of ``keys`` that point into files ``<= covers`` (from before the
        rotation of the compaction whose snapshot's keys are the stored keys: each reads the
        same from the snapshot), so that no entry points into the files it retires."""
        packed = self.packed
        for key in keys:
            found = packed.get(key)
            if found is not None and packed_file(found) <= covers:
                del packed[key]

    def compact_written(self) -> None:
        """Copy :attr:`packed` into a new dict of its size: after :meth:`forget_older` has
        emptied most of a big one, which keeps its size until it grows again (and then
        resizes in one call that holds the interpreter for tens of milliseconds)."""
        self.packed = dict(self.packed)

    @property
    def has_stored(self) -> bool:
        """Whether some entries are stored keys (:meth:`set_stored`): then :attr:`packed` is
        not every entry, and writers go through :meth:`put_packed` and :meth:`remove_packed`."""
        return self._stored is not None

    def _check(self) -> None:
        """Assert the invariants (for tests): every key is either sorted or fresh, never
        both, and the sorted keys are in order; every entry is an int whose type is known."""
        sorted_keys, fresh = self._sorted, self._fresh
        sorted_keys._check()
        assert len(sorted_keys) + len(fresh) == len(self), "keys lost or doubled"
        assert fresh.isdisjoint(sorted_keys), "a key is both sorted and fresh"
        assert all(key in self for key in fresh), "a fresh key has no entry"
        assert all(key in self for key in sorted_keys), "a sorted key has no entry"
        stored, gone = self._stored, self._gone
        if stored is None:
            assert not gone, "gone keys with no stored keys"
        else:
            assert all(stored.find(key) >= 0 for key in gone), "a gone key was never stored"
            assert gone.isdisjoint(self.packed), "a gone key is written"
            live = sum(1 for key in stored.keys if key not in self.packed and key not in gone)
            assert live + len(self.packed) == self._count, (live, len(self.packed), self._count)
        count = len(self.types.names)
        for _, p in self.items():
            assert type(p) is int
            if 0 <= p < ROW_LIMIT:
                assert p >> ROW_SHIFT in self._rows, "a row reference to another index's table"
                table = _row_tables[p >> ROW_SHIFT]
                assert (p & ROW_MASK) < len(table.offsets)
            else:
                assert packed_type_id(p) < count

    def add_rows(self, table: RowTable) -> range | None:
        """The row references of ``table``'s rows, in order, for entries of this index (None:
        none can be given: the table is too long, or the process ran out of slots; then the
        caller packs its rows)."""
        if len(table.offsets) > ROW_MASK + 1:
            return None
        slot = _register_rows(table)
        if slot is None:
            return None
        self._rows.append(slot)
        base = slot << ROW_SHIFT
        return range(base, base + len(table.offsets))

    def drop_rows(self, covers: int) -> list[object]:
        """Let go of the row tables of files ``<= covers`` (segments ``1..covers`` and older
        snapshots), but the new snapshot's own when its keys are the stored keys
        (:meth:`take_stored`): a compaction has pointed every entry in them at its new
        snapshot, so older stored keys, if in one of them, are all written or gone, and go
        too. Returns what is let go that is big to free (the stored keys' list: a million
        references dropped one by one), for the caller to drop once it has released its
        lock."""
        keep = self._stored_first >> ROW_SHIFT if self._stored is not None else -1
        if keep >= 0 and _row_tables[keep].file_id != -covers:
            keep = -1  # an older snapshot's stored keys: they go
        gone = [s for s in self._rows if _row_tables[s].file_id <= covers and s != keep]
        let_go: list[object] = []
        if self._stored is not None and self._stored_first >> ROW_SHIFT in gone:
            if len(self.packed) != self._count:
                left = self._count - len(self.packed)
                raise RuntimeError(f"{left} stored keys were never pointed elsewhere")
            let_go += [self._stored, self._gone]
            self._stored, self._gone = None, set()
        if gone:
            self._rows[:] = [s for s in self._rows if s not in gone]
            _release_rows(gone)
        return let_go

    def sort_all(self) -> None:
        """Sort every key into the sorted keys at once (after a bulk load into ``packed``):
        one sort of the dict's keys, which come in a few sorted runs after an open. With
        stored keys: those not gone (in order already) are the sorted keys, and the keys
        written since that are not stored keys stay fresh."""
        stored = self._stored
        if stored is None:
            self._sorted = SortedList(self.packed)
            self._fresh = set()
            return
        gone, find = self._gone, stored.find
        keys = [k for k in stored.keys if k not in gone] if gone else stored.keys
        self._sorted = SortedList(keys)
        if self._fresh:  # a stored key deleted and written again since is sorted already
            self._fresh = {key for key in self._fresh if find(key) < 0}

    def entries(self) -> dict[str, Entry]:
        """Every entry, unpacked (for tests and checks; an index of millions is big)."""
        names = self.types.names
        return {key: unpack(p, names) for key, p in self.items()}

    def get(self, key: str) -> Entry | None:
        """The entry of ``key``, or None."""
        found = self.find(key)
        return None if found is None else unpack(found, self.types.names)

    def pack(self, entry: Entry) -> int:
        """``entry`` packed, its content type numbered in this index."""
        file_id, offset, head, size, content_type = entry
        return pack(file_id, offset, head, size, self.types.id(content_type))

    def base(self, file_id: int, content_type: str | None) -> int:
        """:func:`entry_base` of ``file_id`` and ``content_type`` in this index: a writer packs
        the entries it appends with it. Kept for the last file asked about (the active
        segment), so that an append costs a dict lookup here.

        >>> index = Index()
        >>> index.base(3, "a") | 16 | (40 << HEAD_OVER_SIZE | 5 + 1) << SIZE_SHIFT == index.pack(
        ...     (3, 16, 40, 5, "a"))
        True
        """
        if file_id != self._base_file:
            self._bases = {}
            self._base_file = file_id
        found = self._bases.get(content_type)
        if found is None:
            found = self._bases[content_type] = entry_base(file_id, self.types.id(content_type))
        return found

    def put(self, key: str, entry: Entry) -> Entry | None:
        """Point ``key`` at ``entry``; return the entry it replaced (None: a new key)."""
        old = self.put_packed(key, self.pack(entry))
        return None if old is None else unpack(old, self.types.names)

    def put_packed(self, key: str, packed: int) -> int | None:
        """Point ``key`` at a packed entry; return the packed entry it replaced (None: new)."""
        entries = self.packed
        old = entries.get(key)
        if old is None:
            stored = self._stored
            if stored is None:
                self._fresh.add(key)
            elif key in self._gone:
                self._gone.discard(key)
                self._fresh.add(key)
                self._count += 1
            else:
                row = stored.find(key)
                if row < 0:
                    self._fresh.add(key)
                    self._count += 1
                else:  # a stored key, written for the first time: packed shadows it now
                    old = self._stored_first + row
        entries[key] = packed
        return old

    def repoint(self, key: str, packed: int) -> None:
        """Point ``key``, which has an entry, at another packed entry: :meth:`put_packed`
        without looking the key up in the stored keys again (compaction's switch has just
        found its entry)."""
        self.packed[key] = packed

    def remove(self, key: str) -> Entry | None:
        """Forget ``key``; return its entry (None: it was not there)."""
        old = self.remove_packed(key)
        return None if old is None else unpack(old, self.types.names)

    def remove_packed(self, key: str) -> int | None:
        """Forget ``key``; return its packed entry (None: it was not there)."""
        old = self.packed.pop(key, None)
        stored = self._stored
        if stored is not None and key not in self._gone:
            row = stored.find(key)
            if row >= 0:
                self._gone.add(key)
                if old is None:
                    old = self._stored_first + row
        if old is not None:
            if stored is not None:
                self._count -= 1
            fresh = self._fresh
            if key in fresh:
                fresh.discard(key)
            else:
                self._sorted.discard(key)
        return old

    def new_keys(self) -> set[str]:
        """The set of fresh keys, for a replay that adds keys straight into :attr:`packed`
        (only with no stored keys: see :attr:`has_stored`): it adds each key new to the index
        here (and removes keys with :meth:`remove_packed`), so the keys stay exact."""
        return self._fresh

    @property
    def unsorted(self) -> int:
        """How many keys are waiting to be merged into the sorted keys."""
        return len(self._fresh)

    def merge_some(self) -> bool:
        """Merge up to :data:`MERGE_BATCH` fresh keys into the sorted keys; True if some are
        left (the engine releases its lock between calls)."""
        fresh = self._fresh
        if not fresh:
            return False
        take = fresh.pop
        batch = [take() for _ in range(min(MERGE_BATCH, len(fresh)))]
        batch.sort()  # inserted in order, they walk the sorted list from front to back
        sorted_keys = self._sorted
        if len(batch) * 4 >= len(sorted_keys):
            sorted_keys.update(batch)  # a small index: rebuilding it is cheaper
        else:
            add = sorted_keys.add
            for key in batch:
                add(key)
        if not fresh:
            self._fresh = set()  # a set keeps its table when emptied: let a big one go
        return bool(fresh)

    def after(self, start: str | None, limit: int, prefix: str = "") -> list[str]:
        """Up to ``limit`` keys in order, strictly after ``start`` (None: from the first),
        that start with ``prefix`` (see :func:`~logkv.key_range.keys_after`).

        Merges whatever keys are still fresh first (the engine merges most of them in batches
        beforehand, see :meth:`merge_some`).
        """
        while self._fresh:
            self.merge_some()
        if start is None and not prefix:
            return list(islice(self._sorted, limit))
        return keys_after(self._sorted, start, limit, prefix)

    def count_range(self, low: str, high: str) -> int:
        """How many keys ``k`` satisfy ``low <= k < high`` (two bisections of the sorted keys,
        after merging whatever keys are still fresh)."""
        while self._fresh:
            self.merge_some()
        if high <= low:
            return 0
        sorted_keys = self._sorted
        return int(sorted_keys.bisect_left(high) - sorted_keys.bisect_left(low))
