"""The stores open in this process, and which of them were purged on start.

A store folder can be open only once per process (its engine holds an exclusive lock on it), so
the objects that stand for open stores are registered here, one per store: opening a store that
is already open hands back the registered object, and concurrent opens of one store share the
first one's work. Two APIs register stores: logkv's :class:`~logkv.KeyValueStore` (its handles,
by the storage client's registry key) and the Crawlee adapter (its store clients, by folder;
Crawlee caches its own ``KeyValueStore`` objects above them). Each keeps one
:class:`OpenStores` table.

``purge_on_start`` empties an unnamed store once per process, at its start: a store closed and
opened again in the same process keeps its records. Which stores were purged is kept here too,
process-wide and by registry key, so that every storage client and both APIs agree.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")

#: Registry keys of the stores purged on start by this process.
_START_PURGED: set[Hashable] = set()


def purge_on_start(key: Hashable, *, enabled: bool, name: str | None) -> bool:
    """True when the store with registry key ``key`` is to be emptied now: ``purge_on_start``
    is ``enabled``, the store is unnamed (``name`` is None: the default store or an alias) and
    this process has not purged it before. A True answer is remembered."""
    if not enabled or name is not None or key in _START_PURGED:
        return False
    _START_PURGED.add(key)
    return True


class OpenStores(Generic[T]):
    """The objects of the stores open in this process, one per registry key.

    ``reusable(item)`` says whether a registered item may still be handed out (by default
    every registered item is); ``at_exit(item)``, when given, is called for every item still
    registered when the process exits (errors are ignored: nothing could report them).
    """

    def __init__(
        self,
        *,
        reusable: Callable[[T], bool] | None = None,
        at_exit: Callable[[T], None] | None = None,
    ) -> None:
        self._open: dict[Hashable, T] = {}
        self._opening: dict[Hashable, asyncio.Future[None]] = {}
        self._reusable = reusable
        self._at_exit = at_exit
        self._exit_hook = False

    async def open(self, key: Hashable, opener: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """The item registered under ``key``, or the one ``opener()`` makes (then registered):
        ``(item, newly opened)``. While one open of ``key`` runs, other opens of it wait for it
        and then hand out its item; a failed open registers nothing."""
        while True:
            found = self._open.get(key)
            if found is not None and (self._reusable is None or self._reusable(found)):
                return found, False
            pending = self._opening.get(key)
            if pending is None:
                break
            await asyncio.shield(pending)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._opening[key] = done
        try:
            item = await opener()
            self._open[key] = item
        finally:
            del self._opening[key]
            done.set_result(None)
        if self._at_exit is not None and not self._exit_hook:
            self._exit_hook = True
            atexit.register(self._close_at_exit)
        return item, True

    def forget(self, key: Hashable, item: T) -> None:
        """``item`` was closed or dropped: unregister it (if it still is under ``key``)."""
        if self._open.get(key) is item:
            del self._open[key]

    def items(self) -> list[T]:
        """The registered items, oldest first."""
        return list(self._open.values())

    def _close_at_exit(self) -> None:
        assert self._at_exit is not None
        for item in self.items():
            with contextlib.suppress(Exception):
                self._at_exit(item)
