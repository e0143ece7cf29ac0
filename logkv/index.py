"""The in-memory index: key -> :data:`~logkv.replay.Entry`, with the keys in order on demand.

Point operations (get, set, delete) use a plain ``dict``. The keys are also kept in a
``sortedcontainers.SortedList`` for ordered reads (iteration, paging, compaction), but a key
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
new container appears at once (a rebuilt list of a million keys would make the garbage
collector's next young pass walk all of it, holding the GIL for tens of milliseconds).

The sets stay exact: every key of the index is either in the sorted list or fresh, never both.
Not thread-safe: the engine calls it with its lock held.
"""

from __future__ import annotations

from itertools import islice
from typing import Final, NamedTuple

from sortedcontainers import SortedList

from .key_range import keys_after
from .replay import Entry, value_size


class IndexEntry(NamedTuple):
    """Where the current record of a key is, and what it holds: what :meth:`Engine.entry
    <logkv.engine.Engine.entry>` returns.

    Inside the engine an entry is the plain tuple :data:`~logkv.replay.Entry` (replay builds
    millions of them); this is the same five fields, named, for everyone else.
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


# Where the fields read one at a time sit in an :data:`~logkv.replay.Entry` tuple (code that
# needs more of them unpacks the tuple, as the hot paths do).
FILE_ID: Final = 0
OFFSET: Final = 1
CONTENT_TYPE: Final = 4


#: Fresh keys merged per call of :meth:`Index.merge_some` (about 7 ms at 1.6 µs a key).
MERGE_BATCH: Final = 4096


class Index:
    """``key -> Entry`` for point operations, plus the keys in Python string order.

    ``entries`` is the dict itself, for reads on hot paths. Writes go through :meth:`put` and
    :meth:`remove`, which keep the sorted keys (lazily) in step.

    >>> index = Index({"b": (1, 16, 40, 3, None)})
    >>> _ = index.put("a", (1, 59, 40, 5, None))
    >>> index.after(None, 10)
    ['a', 'b']
    >>> index.after("a", 10)
    ['b']
    """

    __slots__ = ("_fresh", "_sorted", "entries")

    def __init__(self, entries: dict[str, Entry] | None = None) -> None:
        self.entries: dict[str, Entry] = {} if entries is None else entries
        self._sorted = SortedList(self.entries)
        self._fresh: set[str] = set()  # in entries, not yet in _sorted

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, key: object) -> bool:
        return key in self.entries

    def _check(self) -> None:
        """Assert the invariants (for tests): every key is either sorted or fresh, never
        both, and the sorted keys are in order."""
        sorted_keys, fresh = self._sorted, self._fresh
        sorted_keys._check()
        assert len(sorted_keys) + len(fresh) == len(self.entries), "keys lost or doubled"
        assert fresh.isdisjoint(sorted_keys), "a key is both sorted and fresh"
        assert all(key in self.entries for key in fresh), "a fresh key has no entry"
        assert all(key in self.entries for key in sorted_keys), "a sorted key has no entry"

    def get(self, key: str) -> Entry | None:
        """The entry of ``key``, or None."""
        return self.entries.get(key)

    def put(self, key: str, entry: Entry) -> Entry | None:
        """Point ``key`` at ``entry``; return the entry it replaced (None: a new key)."""
        entries = self.entries
        old = entries.get(key)
        if old is None:
            self._fresh.add(key)
        entries[key] = entry
        return old

    __setitem__ = put

    def remove(self, key: str) -> Entry | None:
        """Forget ``key``; return its entry (None: it was not there)."""
        old = self.entries.pop(key, None)
        if old is not None:
            fresh = self._fresh
            if key in fresh:
                fresh.discard(key)
            else:
                self._sorted.discard(key)
        return old

    def pop(self, key: str) -> Entry | None:
        """:meth:`remove` (the name a mapping's users expect)."""
        return self.remove(key)

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
