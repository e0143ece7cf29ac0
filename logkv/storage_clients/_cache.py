"""A small least-recently-used cache of stored value bytes, bounded in bytes.

Reading a small record from the log costs a lock, a ``pread`` system call and a checksum; a hit
here costs a dictionary lookup. Only values up to ``max_item`` bytes are kept (large values
never sit in memory), and the total stays under ``capacity`` bytes. Entries are the checked,
immutable bytes the store wrote or read, so sharing them is safe; the client that owns the cache
is its store's only writer and updates it on every write.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

_OVERHEAD: Final = 100  # rough bytes of bookkeeping per entry (key object, tuple, links)


class ValueCache:
    """``key -> (stored bytes, stored content type)``, least recently used out first."""

    __slots__ = ("_entries", "capacity", "max_item", "used")

    def __init__(self, capacity: int, max_item: int = 64 * 1024) -> None:
        self.capacity = capacity
        self.max_item = min(max_item, capacity)
        self.used = 0
        self._entries: OrderedDict[str, tuple[bytes, str | None]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> tuple[bytes, str | None] | None:
        """The cached record of ``key`` (now the most recently used), or None."""
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def put(self, key: str, data: bytes, content_type: str | None) -> None:
        """Cache ``data`` for ``key`` when it is small enough; drop the oldest to make room."""
        entries = self._entries
        old = entries.pop(key, None)
        if old is not None:
            self.used -= len(old[0]) + len(key) + _OVERHEAD
        size = len(data) + len(key) + _OVERHEAD
        if len(data) > self.max_item:
            return
        entries[key] = (data, content_type)
        self.used += size
        while self.used > self.capacity:
            oldest, (value, _) = entries.popitem(last=False)
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
