"""What a Crawlee client of one logkv store shares with the others: fair inline calls with
upkeep as they go, drop, close, the close at process exit, and telling the storage client it
was closed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..storage_clients._base import Pacer
from ..storage_clients._store import StoreAdapter


class CrawleeAdapter(StoreAdapter):
    """A :class:`StoreAdapter` whose subclass sets ``_lock`` (serialising its changes),
    ``_pacer`` (a :class:`~logkv.storage_clients._base.Pacer`) and ``_on_close`` (called with
    the client once it is closed or dropped)."""

    _lock: asyncio.Lock
    _pacer: Pacer
    _on_close: Callable[[Any], None] | None

    async def _tick(self) -> None:
        """After a call: now and then, yield to the event loop (inline calls never suspend),
        and the store's upkeep when due (timestamps saved, compaction started:
        :meth:`~logkv.storage_clients._store.EngineStore.upkeep_when_due`)."""
        if self._pacer.due():
            await asyncio.sleep(0)
        await self._store.upkeep_when_due()

    async def drop(self) -> None:
        """Delete the store and its folder, all or nothing; the client is closed afterwards."""
        async with self._lock:
            try:
                await self._store.drop()
            finally:
                self._closed_now()

    async def close(self) -> None:
        """Save the timestamps and release the store's lock (idempotent)."""
        try:
            await self._store.close()
        finally:
            self._closed_now()

    def close_sync(self) -> None:
        """:meth:`close` without an event loop (at process exit)."""
        self._store.close_sync()

    def _closed_now(self) -> None:
        if self._on_close is not None:
            self._on_close(self)
