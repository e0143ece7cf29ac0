"""Autosaved values: dicts that a store writes back by itself when they changed.

``KeyValueStore.get_auto_saved_value(key)`` hands out one dict per key, the same object on every
call; the store writes it on every ``PERSIST_STATE`` event, on demand and on close, and only when
its JSON changed since it was last written, so that the log does not grow while nothing changes.
:class:`AutosavedValues` keeps those dicts for one store (every handle of the store shares it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from .content import JSON_CONTENT_TYPE, decode, encode, encode_json
from .engine import MISSING
from .storage_clients import KeyValueStoreClient


class _Autosaved:
    """An autosaved dict and the JSON it was last saved as (None: not saved yet)."""

    __slots__ = ("saved", "value")

    def __init__(self, value: dict[str, Any], saved: bytes | None) -> None:
        self.value = value
        self.saved = saved


class AutosavedValues:
    """The autosaved dicts of one store, by key.

    ``entries`` is empty until the first dict is handed out: writers test it before calling
    :meth:`forget_saved`, so that a store without autosaved values pays nothing for them.
    """

    def __init__(self) -> None:
        self.entries: dict[str, _Autosaved] = {}
        self._lock = asyncio.Lock()

    def cached(self, key: str, default_value: object) -> dict[str, Any] | None:
        """The dict of ``key`` when it was handed out already, else None.

        Raises ``TypeError`` when ``default_value`` is neither None nor a mapping.
        """
        if default_value is not None and not isinstance(default_value, Mapping):
            raise TypeError(
                f"default_value must be a dict (or None), got {type(default_value).__name__}"
            )
        found = self.entries.get(key)
        return None if found is None else found.value

    async def load(
        self, client: KeyValueStoreClient, key: str, default_value: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """The dict of ``key``: loaded from the store, or a private copy of ``default_value``
        (or ``{}``) when the store has no record of ``key``.

        Raises ``TypeError`` when the record is not a dict.
        """
        async with self._lock:
            found = self.entries.get(key)
            if found is not None:
                return found.value
            stored = await client.get_value(key, MISSING)
            if stored is MISSING:
                # A validated, private copy: later changes to the caller's default do not leak in.
                value = decode(*encode(dict(default_value or {}), JSON_CONTENT_TYPE))
                entry = _Autosaved(value, None)
            elif isinstance(stored, dict):
                entry = _Autosaved(stored, encode_json(stored))
            else:
                raise TypeError(
                    f"the record {key!r} holds a {type(stored).__name__}, not a dict: an "
                    "autosaved value is a dict. Use another key, or delete the record first"
                )
            self.entries[key] = entry
            return entry.value

    async def persist(self, client: KeyValueStoreClient) -> None:
        """Write every dict whose JSON changed since it was last written.

        A dict that cannot be stored (it holds something that is not JSON) is reported with
        ``TypeError`` after the others were saved.
        """
        failure: TypeError | None = None
        async with self._lock:
            for key, entry in list(self.entries.items()):
                try:
                    data = encode_json(entry.value)
                except TypeError as exc:
                    failure = failure or TypeError(f"autosaved value {key!r}: {exc}")
                    continue
                if data == entry.saved:
                    continue
                await client.set_value(key, entry.value, JSON_CONTENT_TYPE)
                entry.saved = data
        if failure is not None:
            raise failure

    def forget_saved(self, key: str) -> None:
        """The record of ``key`` was written directly: its dict is written again on the next
        save."""
        found = self.entries.get(key)
        if found is not None:
            found.saved = None

    def forget_all_saved(self) -> None:
        """Every record was removed (a purge): every dict is written again on the next save."""
        for entry in self.entries.values():
            entry.saved = None

    def clear(self) -> None:
        """Let go of every dict (the store closed)."""
        self.entries.clear()
