"""A stored hash table over a snapshot's sorted keys: point lookups without a ``dict``.

An open after compaction used to put every key of the snapshot into a Python ``dict``. For a
million keys that took about 0.8 s here, well over half of the open: each insert lands at a
random place in a table of megabytes and, when the dict grows, every key object is visited
again for its hash. The keys come sorted in the snapshot's hint, and the compaction that wrote
it has time to spare, so it also writes this table: open-addressing slots (linear probing, load
at most one half) holding ``row + 1`` of each key (0: empty). An open reads the table as one
``array`` and looks keys up in it (:meth:`KeyTable.find`): no per-key work at all.

The hash must be the same in every process, so it is not Python's ``hash`` (salted per
process): it is the CRC-32 of the key's UTF-8 bytes, spread over the table by a Fibonacci
multiply (the top bits of ``crc * 0x9E3779B1`` modulo 2**32). The table's size follows from
the key count alone (:func:`table_bits`), so a reader checks a table against its keys.

A wrong table (a bug: a block that passed its checksum) can only make a lookup miss; it can
never answer with another key's row, since a lookup compares the key at the row it finds.
``verify`` checks that every key is found at its own row.
"""

from __future__ import annotations

from array import array
from itertools import repeat
from pathlib import Path
from typing import Final
from zlib import crc32

from .errors import CorruptionError
from .le_columns import all_zero, le_bytes, le_column
from .turns import Turns

#: The Fibonacci hashing multiplier for 32-bit hashes (2**32 / the golden ratio, odd).
_GOLDEN: Final = 0x9E3779B1
_U32: Final = 0xFFFFFFFF
#: How many slots a lookup probes at most: no key sits further from its first slot.
MAX_PROBES: Final = 128
#: The most keys a table indexes (rows are stored as ``row + 1`` in 32 bits).
MAX_KEYS: Final = 1 << 31
#: Slots turned from the probing list into the table's ``array`` per call (about a ms).
SLOTS_PER_PIECE: Final = 1 << 14


def table_bits(count: int) -> int:
    """log2 of the slots of a table over ``count`` keys: the least power of two at least
    twice the count (load at most one half), 2 slots at least.

    >>> [table_bits(n) for n in (0, 1, 2, 3, 1_000_000)]
    [1, 1, 2, 3, 21]
    """
    return max(1, (2 * count - 1).bit_length())


def build(keys: list[str]) -> array[int] | None:
    """The table over ``keys`` (distinct): ``u32`` slots holding ``row + 1``, 0 when empty;
    None when some key would sit more than :data:`MAX_PROBES` - 1 slots past its first.

    That bound is what makes the table safe to build from keys an adversary chose (crawled
    URLs): CRC-32 collisions are easy to make, and a cluster of them would make lookups and
    this build walk long runs. Keys that are not crafted stay far below it (31 slots at most
    over a million keys); crafted ones only cost the snapshot its table (the open then builds
    a dict, as for a snapshot written without one).

    About a microsecond a key: the hashes are computed in C (``map`` over builtins), the
    probing loop in Python, which takes turns with other threads (:class:`~logkv.turns.Turns`:
    the compaction that calls this runs beside the store's writers)."""
    if len(keys) > MAX_KEYS:
        raise ValueError(f"a key table holds at most {MAX_KEYS:,} keys")
    bits = table_bits(len(keys))
    mask = (1 << bits) - 1
    table = [0] * (1 << bits)  # a list while probing: reading and writing it boxes nothing
    spread = map(int.__mul__, map(crc32, map(str.encode, keys)), repeat(_GOLDEN))
    firsts = map(int.__rshift__, map(int.__and__, spread, repeat(_U32)), repeat(32 - bits))
    turn = Turns().take
    for row, first in enumerate(firsts, 1):
        if not row & 4095:
            turn()  # writers go on: a compaction writes this table while they run
        if table[first]:
            slot, last = first, first + MAX_PROBES - 1
            while table[slot & mask]:
                slot += 1
                if slot > last:
                    return None
            table[slot & mask] = row
        else:
            table[first] = row
    # A piece at a time: one array("I", table) converts each slot in a single call that
    # holds the GIL, 18 ms for the 262,144 slots of 100,000 keys (150 ms for a million),
    # and every writer of the store waits for it.
    slots = array("I")
    for start in range(0, len(table), SLOTS_PER_PIECE):
        slots.fromlist(table[start : start + SLOTS_PER_PIECE])
    return slots


def encode(table: array[int]) -> bytes:
    """The table's bytes as stored (little-endian ``u32`` slots)."""
    return le_bytes(table)


def _used_slots(raw: bytes) -> int:
    """How many of the ``u32`` slots in ``raw`` are not zero, counted in C: the four bytes of
    each slot OR-ed together (as big ints), then the zero bytes counted."""
    slots = len(raw) // 4
    either = 0
    for i in range(4):
        either |= int.from_bytes(raw[i::4], "little")
    return slots - either.to_bytes(slots, "little").count(0)


class KeyTable:
    """Sorted ``keys`` with their stored hash table: :meth:`find` gives a key's row.

    Built from a stored table by :meth:`decode`, which checks what can be checked without a
    pass over every slot in Python (its size; that it uses as many slots as there are keys;
    for fewer than 2**24 keys, that no slot holds a row of 2**24 or more); a slot pointing past
    the keys raises :class:`~logkv.errors.CorruptionError` (at ``offset`` of ``path``, where
    the table is stored) when a lookup meets it. :meth:`misplaced` checks every key
    (``verify`` calls it)."""

    __slots__ = ("_mask", "_shift", "keys", "offset", "path", "table")

    def __init__(self, keys: list[str], table: array[int], path: Path, offset: int) -> None:
        self.keys = keys
        self.table = table
        self.path = path
        self.offset = offset
        self._mask = len(table) - 1
        self._shift = 33 - len(table).bit_length()

    @classmethod
    def decode(cls, raw: object, keys: list[str], path: Path, offset: int) -> KeyTable:
        """The stored table ``raw`` over ``keys``, checked as the class says; ``TypeError``
        or ``ValueError`` when it is malformed."""
        if not isinstance(raw, bytes):
            raise TypeError("a key table is not bin")
        count = len(keys)
        if len(raw) != 4 << table_bits(count):
            raise ValueError(f"a key table of {len(raw)} bytes does not fit {count} keys")
        if count < 1 << 24 and not all_zero(raw[3::4]):
            raise ValueError("a key table's slot points past its keys")
        if _used_slots(raw) != count:
            raise ValueError(f"a key table uses {_used_slots(raw)} slots for {count} keys")
        return cls(keys, le_column("I", raw), path, offset)

    def find(self, key: str) -> int:
        """The row of ``key``, or -1 when it is not one of the keys."""
        table, keys = self.table, self.keys
        try:  # the first slot, as build() computes it
            slot = (crc32(key.encode()) * _GOLDEN & _U32) >> self._shift
        except UnicodeEncodeError:
            return -1  # a lone surrogate: no store holds such a key
        row = table[slot]
        left = MAX_PROBES
        try:
            while row:
                if keys[row - 1] == key:
                    return row - 1
                left -= 1
                if not left:
                    break  # build() placed every key within MAX_PROBES slots of its first
                slot = slot + 1 & self._mask
                row = table[slot]
        except IndexError:
            raise CorruptionError(
                self.path, self.offset, f"the key table points at row {row - 1} of {len(keys)}"
            ) from None
        return -1

    def misplaced(self) -> list[str]:
        """The keys :meth:`find` does not find at their own row (for ``verify``: none)."""
        find = self.find
        return [key for row, key in enumerate(self.keys) if find(key) != row]
