"""What a store folder holds, as the commands say it: its storage type and its content counts.

The type comes from ``META.json``'s ``storage`` field (a folder without ``META.json`` is a
key-value store, as the storage clients read it). The counts come from keys alone, by the
layout of :mod:`logkv.storage_layout`: a dataset's items, a request queue's pending, handled
and total requests. No value is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ..engine import Engine
from ..errors import NotALogKVStoreError
from ..storage_clients._meta import read_meta
from ..storage_layout import QueueCounts, queue_counts

#: How the commands name each storage type.
STORAGE_WORDS: Final = {
    "key_value_store": "key-value store",
    "dataset": "dataset",
    "request_queue": "request queue",
    "unknown": "unknown",
}


@dataclass(frozen=True, slots=True)
class Storage:
    """A store folder's storage type, and why it is uncertain when it is."""

    #: ``key_value_store``, ``dataset``, ``request_queue``, or ``unknown`` (``META.json``
    #: unreadable).
    storage: str
    #: None, or why the type is a guess (no ``META.json``) or unknown.
    note: str | None = None

    def describe(self) -> str:
        """``dataset``, or ``key-value store (no META.json)``."""
        word = STORAGE_WORDS[self.storage]
        return f"{word} ({self.note})" if self.note else word


def storage_type(folder: Path) -> Storage:
    """What ``META.json`` in ``folder`` says the store holds."""
    try:
        meta = read_meta(folder)
    except NotALogKVStoreError as exc:
        return Storage("unknown", f"META.json unreadable: {exc}")
    if meta is None:
        return Storage("key_value_store", "no META.json")
    return Storage(meta.storage)


@dataclass(frozen=True, slots=True)
class Contents:
    """A store's storage type and, for datasets and request queues, its counts."""

    kind: Storage
    #: A dataset's items (None for other stores).
    items: int | None = None
    #: A request queue's counts (None for other stores).
    requests: QueueCounts | None = None

    def describe(self) -> str:
        """One line: ``dataset, 100,000 items``."""
        text = self.kind.describe()
        if self.items is not None:
            text += f", {self.items:,} items"
        if self.requests is not None:
            r = self.requests
            text += f", {r.pending:,} pending, {r.handled:,} handled, {r.total:,} total"
        return text

    def as_json(self) -> dict[str, Any]:
        """The fields ``--json`` adds: ``storage``, and ``items`` or ``requests``."""
        data: dict[str, Any] = {"storage": self.kind.storage}
        if self.kind.note:
            data["storage_note"] = self.kind.note
        if self.items is not None:
            data["items"] = self.items
        if self.requests is not None:
            r = self.requests
            data["requests"] = {"pending": r.pending, "handled": r.handled, "total": r.total}
        return data


def store_contents(folder: Path, engine: Engine) -> Contents:
    """The contents of the store in ``folder``, open as ``engine``: a dataset's item count is
    its number of keys (one record per item); a request queue's counts are its ``p/`` and
    ``r/`` keys (:func:`~logkv.storage_layout.queue_counts`)."""
    kind = storage_type(folder)
    if kind.storage == "dataset":
        return Contents(kind, items=len(engine))
    if kind.storage == "request_queue":
        return Contents(kind, requests=queue_counts(engine))
    return Contents(kind)
