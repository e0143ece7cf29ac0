"""The head of a request queue's pending keys, kept in memory so that a fetch need not list
them from the engine's sorted index every time.

:class:`PendingHead` holds the first pending keys (``p/<order>/<hash>``, in fetch order) of a
queue: up to :data:`HEAD_SIZE` more than the requests in progress when it was (re)loaded, always
exactly the first keys of the store's pending keys (all of them when it is complete). The queue
tells it every pending key its batches write and delete, after the batch was appended
(:meth:`PendingHead.written`); a key written before the last one it holds takes its place in
order (the last one giving way when the head is full), one written after it is kept only when
the head holds every pending key and has room. When no key of the head is free for a fetch and
it is not complete, it is loaded again from the engine. Its memory is bounded: as many keys as
its last load asked for, the requests in progress then plus :data:`HEAD_SIZE`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Container, Iterable, Sequence
from typing import Final

from ..engine import Engine
from ..storage_layout import PENDING_PREFIX
from ._request_records import first_pending, hash_of_pending

#: How many pending keys beyond the requests in progress a load of the head takes.
HEAD_SIZE: Final = 64


class PendingHead:
    """The first pending keys of a queue (see the module docstring); starts unloaded."""

    __slots__ = ("_complete", "_keys", "_limit", "_loaded")

    def __init__(self) -> None:
        self._keys: list[str] = []
        #: True when the keys are every pending key of the queue.
        self._complete = False
        #: How many keys the head holds at most (what its last load asked for).
        self._limit = HEAD_SIZE
        self._loaded = False

    def reset(self) -> None:
        """Forget the keys: the next :meth:`first_free` loads them from the engine (after a
        purge, or when a batch failed and what it left is not known)."""
        self._keys = []
        self._complete = False
        self._loaded = False

    def first_free(self, engine: Engine, in_progress: Container[str], busy: int) -> str | None:
        """The first pending key whose request hash is not in ``in_progress`` (``busy`` of
        them), None when there is none; loads the head from ``engine`` when needed."""
        if self._loaded:
            key = _first_free(self._keys, in_progress)
            if key is not None or self._complete:
                return key
        want = busy + HEAD_SIZE
        self._limit = want
        self._keys = first_pending(engine, want)
        self._complete = len(self._keys) < want
        self._loaded = True
        return _first_free(self._keys, in_progress)

    def written(self, items: Iterable[tuple[str, object, object]], deletes: Sequence[str]) -> None:
        """Note the pending keys a batch appended (``items``: ``(key, value, content type)``)
        and then deleted (as :meth:`~logkv.Engine.set_many` applies them), once it was
        appended."""
        if not self._loaded:
            return
        keys = self._keys
        for key, _, _ in items:
            if key.startswith(PENDING_PREFIX) and (self._complete or (keys and key < keys[-1])):
                at = bisect_left(keys, key)
                if at < len(keys) and keys[at] == key:
                    continue  # a load from the engine found it already
                keys.insert(at, key)
                if len(keys) > self._limit:
                    keys.pop()
                    self._complete = False
        for key in deletes:
            if key.startswith(PENDING_PREFIX):
                at = bisect_left(keys, key)
                if at < len(keys) and keys[at] == key:
                    del keys[at]
        if not keys and not self._complete:
            self._loaded = False  # what comes next is not known: load again


def _first_free(keys: list[str], in_progress: Container[str]) -> str | None:
    for key in keys:
        if hash_of_pending(key) not in in_progress:
            return key
    return None
