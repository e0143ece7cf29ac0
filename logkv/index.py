"""The in-memory index: key -> :data:`~logkv.replay.Entry`, with the keys in order on demand.

Point operations (get, set, delete) use a plain ``dict``. The keys are also kept in a
``sortedcontainers.SortedList`` for ordered reads (iteration, paging, compaction), but a key
written for the first time is not inserted into it there and then: it is noted in a list of
*fresh* keys, and the fresh keys are merged in, sorted, before keys are next read in order.

A sorted insert costs 1-3 µs in a large index (a bisection over random memory); appending to a
list costs a few nanoseconds. A crawler that writes a million new keys and lists them once pays
for one sort instead of a million inserts; one that lists after every write pays what an insert
costs, as before.

Not thread-safe: the engine calls it with its lock held. A few fresh keys are merged inline by
:meth:`Index.after`. Many are merged in three steps, so that the sort does not hold the lock:
:meth:`Index.take_fresh` (lock held: takes the fresh keys and a copy of the sorted ones),
:meth:`Merge.run` (no lock: sorts and merges them), :meth:`Index.finish` (lock held: installs
the result, minus the keys removed meanwhile). While a merge runs, :attr:`Index.merging` is
true and ordered reads must wait for it (the engine waits on its condition).

Without the lock is not enough: a sort is one call that keeps the GIL from start to finish
(about 0.7 s for a million random keys), and writers in other threads would stall behind it as
surely as behind the lock. :meth:`Merge.run` therefore sorts in parts of at most
:data:`SORT_PART` keys (a sample sort: pivots split the keys into ranges, each range is sorted
on its own and the ranges are concatenated), so no single call holds the GIL for more than
about 20 ms.
"""

from __future__ import annotations

import gc
from bisect import bisect_right
from collections.abc import Callable
from itertools import islice
from typing import Final

from sortedcontainers import SortedList

from .replay import Entry

#: Up to this many fresh keys, a merge is a sorted insert each, inline (a few milliseconds at
#: most); more are merged by a :class:`Merge` outside the lock.
INLINE_MERGE: Final = 2048
#: Keys sorted by one call while merging (the GIL is held for each call: ~20 ms at this size).
SORT_PART: Final = 1 << 15
_SAMPLES_PER_PART: Final = 4


class Merge:
    """Fresh keys being merged into a copy of the sorted keys, away from the store's lock."""

    __slots__ = ("_base", "_entries", "_fresh", "removed", "result")

    def __init__(self, base: list[str], fresh: list[str], entries: dict[str, Entry]) -> None:
        self._base = base
        self._fresh = fresh
        self._entries = entries
        #: Keys removed from the index while the merge ran (:meth:`Index.finish` drops them).
        self.removed: list[str] = []
        self.result: SortedList | None = None

    def run(self) -> None:
        """Sort the fresh keys into the base, in parts (call it without the lock).

        The garbage collector is paused meanwhile: the merge makes few objects, but lists of a
        million keys among the young ones would make each young collection walk them all
        (tens of milliseconds holding the GIL).
        """
        entries = self._entries
        collecting = gc.isenabled()
        gc.disable()
        try:
            # Still present (a key put and removed since is gone; each lookup is atomic), once
            # each (a key put, removed and put again is listed twice).
            present = {key for key in self._fresh if key in entries}
            new = list(present)
            del present
            self.result = from_sorted(merge_sorted(self._base, new))
        finally:
            if collecting:
                gc.enable()


def merge_sorted(base: list[str], new: list[str]) -> list[str]:
    """``base`` (sorted) and ``new`` (in any order, none of them in ``base``) as one sorted list,
    with no single sort of more than about :data:`SORT_PART` keys.

    >>> merge_sorted(["b", "d"], ["e", "a", "c"])
    ['a', 'b', 'c', 'd', 'e']
    """
    parts = -(-(len(base) + len(new)) // SORT_PART)
    if parts <= 1:
        merged = base + new
        merged.sort()
        return merged
    # Pivots from both sides, so that every range gets about the same number of keys however
    # the new keys are spread over the old ones.
    per_side = parts * _SAMPLES_PER_PART
    sample = base[:: max(1, len(base) // per_side)] + new[:: max(1, len(new) // per_side)]
    sample.sort()
    stride = max(1, len(sample) // parts)
    pivots = sample[stride::stride][: parts - 1]
    ranges: list[list[str]] = [[] for _ in range(len(pivots) + 1)]
    for key in new:
        ranges[bisect_right(pivots, key)].append(key)
    merged = []
    start = 0
    for number, part in enumerate(ranges):
        stop = bisect_right(base, pivots[number], start) if number < len(pivots) else len(base)
        part.extend(base[start:stop])
        part.sort()
        merged.extend(part)
        start = stop
    return merged


def _from_sorted_fast(keys: list[str]) -> SortedList:
    result = SortedList()
    load = result._load
    result._lists = [keys[i : i + load] for i in range(0, len(keys), load)]
    result._maxes = [part[-1] for part in result._lists]
    result._len = len(keys)
    return result


def _from_sorted_slow(keys: list[str]) -> SortedList:
    return SortedList(keys)


def _pick_from_sorted() -> Callable[[list[str]], SortedList]:
    """The fast builder if it builds what ``SortedList`` itself builds, else ``SortedList``."""
    try:
        keys = [f"k{i:05d}" for i in range(2500)]
        fast, slow = _from_sorted_fast(keys), SortedList(keys)
        fast._check()
        fast.add("k00000a")
        slow.add("k00000a")
        if list(fast) == list(slow) and fast._lists == slow._lists and fast.index("k01000") == 1001:
            return _from_sorted_fast
    except Exception:  # pragma: no cover - a sortedcontainers whose internals changed
        pass
    return _from_sorted_slow  # pragma: no cover


#: A ``SortedList`` of keys already in order. ``SortedList(keys)`` would sort them again (one
#: call over all of them, holding the GIL); this lays them out in its sublists directly, when
#: a check at import shows the result is exactly what the constructor builds.
from_sorted: Callable[[list[str]], SortedList] = _pick_from_sorted()


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

    __slots__ = ("_fresh", "_merge", "_sorted", "entries")

    def __init__(self, entries: dict[str, Entry] | None = None) -> None:
        self.entries: dict[str, Entry] = {} if entries is None else entries
        self._sorted = SortedList(self.entries)
        # Keys put since the last merge that were not in the index then. A key may appear twice
        # (removed and put again) or may have been removed since: merges filter them.
        self._fresh: list[str] = []
        self._merge: Merge | None = None

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
            if self._merge is not None:
                self._merge.removed.append(key)
        return old

    def pop(self, key: str) -> Entry | None:
        """:meth:`remove` (the name a mapping's users expect)."""
        return self.remove(key)

    @property
    def unsorted(self) -> int:
        """How many keys the next ordered read merges first (an upper bound)."""
        return len(self._fresh)

    @property
    def merging(self) -> bool:
        """True between :meth:`take_fresh` and :meth:`finish`: ordered reads must wait."""
        return self._merge is not None

    def take_fresh(self) -> Merge | None:
        """Start a merge of the fresh keys, to :meth:`~Merge.run` without the lock; None when
        there are too few to bother (the next ordered read merges them inline)."""
        if self._merge is not None or len(self._fresh) <= INLINE_MERGE:
            return None
        self._merge = Merge(list(self._sorted), self._fresh, self.entries)
        self._fresh = []
        return self._merge

    def finish(self, merge: Merge) -> None:
        """Install a merge that ran, without the keys removed while it ran."""
        assert merge is self._merge and merge.result is not None
        self._merge = None
        self._sorted = merge.result
        for key in merge.removed:
            # Removed while the merge ran; one put again since is in _fresh, merged next time.
            self._sorted.discard(key)

    def abandon(self, merge: Merge) -> None:
        """Give up a merge that failed to run: its keys become fresh again."""
        assert merge is self._merge
        self._merge = None
        self._fresh = merge._fresh + self._fresh

    def after(self, start: str | None, limit: int) -> list[str]:
        """Up to ``limit`` keys in order, strictly after ``start`` (None: from the first).

        Merges the fresh keys first; not while a :class:`Merge` runs (:attr:`merging`).
        """
        assert self._merge is None, "an ordered read while a merge runs"
        if self._fresh:
            self._merge_inline()
        if start is None:
            return list(islice(self._sorted, limit))
        return list(islice(self._sorted.irange(start, inclusive=(False, True)), limit))

    def _merge_inline(self) -> None:
        fresh, self._fresh = self._fresh, []
        entries = self.entries
        new = sorted({key for key in fresh if key in entries})
        if not new:
            return
        if len(new) * 16 >= len(self._sorted):  # many against few: one rebuild is cheaper
            merged = list(self._sorted)
            merged.extend(new)
            merged.sort()
            self._sorted = SortedList(merged)
        else:
            add = self._sorted.add
            for key in new:
                add(key)
