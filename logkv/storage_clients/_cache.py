"""A small least-recently-used cache of stored value bytes, bounded in bytes.

Reading a small record from the log costs a lock, a ``pread`` system call and a checksum; a hit
here costs a dictionary lookup. Only values up to ``max_item`` bytes are kept (large values
never sit in memory), and the total stays under ``capacity`` bytes. Entries are the checked,
immutable bytes the store wrote or read, so sharing them is safe; the client that owns the cache
is its store's only writer and updates it on every write.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

from ..content import decoder_for

_OVERHEAD: Final = 100  # rough bytes of bookkeeping per entry (key object, tuple, links)


#: A cached record: its stored bytes, the function that decodes them, its stored content type.
Cached = tuple[bytes, Callable[[bytes], Any], str | None]


class ValueCache:
    """``key -> (stored bytes, decoder, stored content type)``, least recently used out first.

    The hot path of a read uses :attr:`lookup` and :attr:`touch` (the dictionary's own bound
    methods) rather than a method of this class: a cache hit should cost a dictionary lookup.
    """

    __slots__ = ("_entries", "capacity", "lookup", "max_item", "touch", "used")

    def __init__(self, capacity: int, max_item: int = 64 * 1024) -> None:
        self.capacity = capacity
        self.max_item = min(max_item, capacity)
        self.used = 0
        self._entries: OrderedDict[str, Cached] = OrderedDict()
        #: ``lookup(key)``: the cached record or None (does not mark it as recently used).
        self.lookup: Callable[[str], Cached | None] = self._entries.get
        #: ``touch(key)``: mark a cached key as the most recently used.
        self.touch: Callable[[str], None] = self._entries.move_to_end

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, key: str, data: bytes, content_type: str | None) -> None:
        """Cache ``data`` for ``key`` when it is small enough; drop the oldest to make room."""
        entries = self._entries
        old = entries.pop(key, None)
        if old is not None:
            self.used -= len(old[0]) + len(key) + _OVERHEAD
        size = len(data) + len(key) + _OVERHEAD
        if len(data) > self.max_item:
            return
        entries[key] = (data, decoder_for(content_type), content_type)
        self.used += size
        while self.used > self.capacity:
            oldest, (value, _, _) = entries.popitem(last=False)
            self.used -= len(value) + len(oldest) + _OVERHEAD

    def discard(self, key: str) -> None:
        """Forget ``key``."""
        old = self._entries.pop(key, None)
        if old is not None:
            self.used -= len(old[0]) + len(key) + _OVERHEAD

    def clear(self) -> None:
        """Forget everything."""
        self._entries.clear()
        self.used = 0
