"""The in-memory index: key -> :data:`~logkv.replay.Entry`, with the keys in order on demand.

Point operations (get, set, delete) use a plain ``dict``. The keys are also kept in a
``sortedcontainers.SortedList`` for ordered reads (iteration, paging, compaction), but a key
written for the first time is not inserted into it there and then: it is noted in a list of
*fresh* keys, and the fresh keys are merged in, sorted, the next time keys are read in order.

A sorted insert costs 1-3 µs in a large index (a bisection over random memory); appending to a
list costs a few nanoseconds. A crawler that writes a million new keys and lists them once pays
for one merge instead of a million inserts; one that lists after every write pays what an insert
costs, as before. The merge is a sorted-list ``add`` per fresh key when there are few of them,
and a rebuild from one Timsort pass (the sorted keys and the sorted fresh keys are two runs)
when there are many.

Not thread-safe: the engine calls it with its lock held.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Final

from sortedcontainers import SortedList

from .replay import Entry

#: Merge by rebuilding once the fresh keys are at least this fraction (1/n) of the sorted ones;
#: below it, one sorted insert per fresh key is cheaper than touching every key.
_REBUILD_FRACTION: Final = 16


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
        # Keys put since the last merge that were not in the index then. A key may appear twice
        # (deleted and put again) or may have been deleted since: the merge filters them.
        self._fresh: list[str] = []

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, key: object) -> bool:
        return key in self.entries

    def get(self, key: str) -> Entry | None:
        """The entry of ``key``, or None."""
        return self.entries.get(key)

    def put(self, key: str, entry: Entry) -> Entry | None:
        """Point ``key`` at ``entry``; return the entry it replaced (None: a new key)."""
        entries = self.entries
        old = entries.get(key)
        if old is None:
            self._fresh.append(key)
        entries[key] = entry
        return old

    __setitem__ = put

    def remove(self, key: str) -> Entry | None:
        """Forget ``key``; return its entry (None: it was not there)."""
        old = self.entries.pop(key, None)
        if old is not None:
            self._sorted.discard(key)  # a fresh key is not there yet: a no-op
        return old

    def pop(self, key: str) -> Entry | None:
        """:meth:`remove` (the name a mapping's users expect)."""
        return self.remove(key)

    @property
    def unsorted(self) -> int:
        """How many keys the next ordered read merges first (an upper bound)."""
        return len(self._fresh)

    def sort(self) -> None:
        """Merge the fresh keys into the sorted keys now (ordered reads do it themselves)."""
        fresh = self._fresh
        if not fresh:
            return
        self._fresh = []
        entries = self.entries
        sorted_keys = self._sorted
        # A fresh key was in neither ``entries`` nor the sorted keys when it was put (removing a
        # key discards it from both). Keep those still present, once each: a key put, removed
        # and put again is listed twice; one put and removed since is gone from ``entries``.
        new = sorted({key for key in fresh if key in entries})
        if not new:
            return
        if len(new) * _REBUILD_FRACTION >= len(sorted_keys):
            merged = list(sorted_keys)
            merged.extend(new)
            merged.sort()  # two sorted runs: one linear merge pass
            self._sorted = SortedList(merged)
        else:
            add = sorted_keys.add
            for key in new:
                add(key)

    def after(self, start: str | None, limit: int) -> list[str]:
        """Up to ``limit`` keys in order, strictly after ``start`` (None: from the first)."""
        if self._fresh:
            self.sort()
        if start is None:
            return list(islice(self._sorted, limit))
        return list(islice(self._sorted.irange(start, inclusive=(False, True)), limit))

    def keys(self) -> Iterator[str]:
        """Every key in order (a live view: do not change the index while iterating)."""
        if self._fresh:
            self.sort()
        return iter(self._sorted)

    def items(self) -> Iterable[tuple[str, Entry]]:
        """``(key, entry)`` pairs, in no particular order."""
        return self.entries.items()
