"""The event manager of an open store: the ``PERSIST_STATE`` events that drive its upkeep.

Every store opened through :meth:`logkv.KeyValueStore.open` listens to an
:class:`~logkv.EventManager` (its own, emitting every ``persist_state_interval``, unless one is
passed to share between stores): on ``PERSIST_STATE`` it saves its autosaved values and runs its
client's upkeep. :class:`StoreEvents` enters the manager when the store opens, restarts its
timer when the store is reused from a later event loop, and leaves it when the store closes (the
manager's final ``PERSIST_STATE`` saves the store once more).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from .configuration import Configuration
from .events import Event, EventManager, EventPersistStateData

#: The store's ``PERSIST_STATE`` listener.
Listener = Callable[[EventPersistStateData | None], Awaitable[None]]


class StoreEvents:
    """The event manager one store listens to, while the store is open."""

    def __init__(self, listener: Listener) -> None:
        self.manager: EventManager | None = None
        #: True between :meth:`start` and :meth:`stop`.
        self.entered = False
        self._listener = listener

    async def start(
        self, manager: EventManager | None, configuration: Configuration | None
    ) -> None:
        """Listen to ``manager`` (by default a new one, emitting every
        ``configuration.persist_state_interval``) and enter it; nothing when started already."""
        if self.entered:
            return
        if manager is None:
            interval = (configuration or Configuration()).persist_state_interval
            manager = EventManager(persist_state_interval=interval)
        self.manager = manager
        manager.on(event=Event.PERSIST_STATE, listener=self._listener)
        await manager.__aenter__()
        self.entered = True

    def resume(self) -> None:
        """Restart the manager's timer in the running event loop if it stopped (the loop that
        ran it ended while the store stayed open)."""
        if self.manager is not None and self.entered:
            self.manager.ensure_timer()

    async def stop(self) -> None:
        """Leave the manager (its final ``PERSIST_STATE`` reaches the listener, which is waited
        for), then stop listening; nothing when not started."""
        manager = self.manager
        if manager is None or not self.entered:
            return
        self.entered = False
        try:
            await manager.__aexit__(None, None, None)
        finally:
            manager.off(event=Event.PERSIST_STATE, listener=self._listener)
