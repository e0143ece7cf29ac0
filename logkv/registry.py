"""The stores open in this process, and which of them were purged on start.

A store folder can be open only once per process (its engine holds an exclusive lock on it), so
the objects that stand for open stores are registered here, one per store: opening a store that
is already open hands back the registered object, and concurrent opens of one store share the
first one's work. Two APIs register stores: logkv's :class:`~logkv.KeyValueStore` (its handles,
by the storage client's registry key) and the Crawlee adapter (its store clients, by folder;
Crawlee caches its own ``KeyValueStore`` objects above them). Each keeps one
:class:`OpenStores` table.

``purge_on_start`` empties unnamed stores (the default store and aliases) when they are opened;
named stores are never purged, nor is a store opened read-only. When exactly is the one rule on
which the two APIs differ, and both decide it here, by :func:`purge_on_start` and a
:class:`PurgeRule`:

- logkv's :class:`~logkv.KeyValueStore` (:attr:`PurgeRule.ONCE_PER_PROCESS`): the first open of
  the store in this process purges it; a store closed and opened again keeps its records.
- the Crawlee adapter (:attr:`PurgeRule.EVERY_OPEN`): every open that reaches the storage client
  purges it, as Crawlee's own clients do. Crawlee caches its storage objects, so that is the
  first open in the process and every open after Crawlee's instance cache was cleared (or the
  store closed).

Which stores were purged is kept here, process-wide and by registry key, so that a store the
Crawlee adapter purged is not purged again by the first ``KeyValueStore.open`` of it.

Read-only opens are registered apart from writable ones (:func:`open_key`): the same folder may
be open once for writing and once read-only in one process.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
from collections.abc import Awaitable, Callable, Hashable
from enum import Enum
from typing import Generic, TypeVar

T = TypeVar("T")

#: Registry keys of the stores purged on start by this process.
_START_PURGED: set[Hashable] = set()


class PurgeRule(Enum):
    """When ``purge_on_start`` empties an unnamed store (see the module docstring)."""

    #: The first open in this process (logkv's ``KeyValueStore``).
    ONCE_PER_PROCESS = "once per process"
    #: Every open that reaches the storage client (Crawlee's rule, for the Crawlee adapter).
    EVERY_OPEN = "every open"


def purge_on_start(
    key: Hashable,
    *,
    enabled: bool,
    name: str | None,
    rule: PurgeRule = PurgeRule.ONCE_PER_PROCESS,
    readonly: bool = False,
) -> bool:
    """True when the store with registry key ``key``, being opened now, is to be emptied.

    Only when ``purge_on_start`` is ``enabled``, the store is unnamed (``name`` is None: the
    default store or an alias) and not opened ``readonly`` (a read-only open never changes a
    store: it ignores ``purge_on_start``); then under ``rule``: always for
    :attr:`PurgeRule.EVERY_OPEN`, and for :attr:`PurgeRule.ONCE_PER_PROCESS` when no open in
    this process purged the store before. A True answer is remembered.
    """
    if not enabled or name is not None or readonly:
        return False
    if rule is PurgeRule.ONCE_PER_PROCESS and key in _START_PURGED:
        return False
    _START_PURGED.add(key)
    return True


def open_key(key: Hashable, *, readonly: bool) -> Hashable:
    """The key under which an open store is registered: ``key`` for a writable open, another
    one for a read-only open of the same store (which must not be handed the writer's object,
    nor hand its own to a writer)."""
    return ("read-only", key) if readonly else key


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
