"""The event manager: listeners for named events and a recurring ``PERSIST_STATE`` timer.

Key-value stores use it to save their autosaved values: every open store listens to
``Event.PERSIST_STATE`` on its event manager, which emits that event every
``persist_state_interval`` while it is active and once more when it is left. A store opened
without an event manager makes (and starts) its own, so autosave needs no setup.

Event-manager events (``Event.PERSIST_STATE``) are a different thing from log records
(:class:`~logkv.format.SetRecord`, :class:`~logkv.format.DeleteRecord`).

Listeners may be plain functions or coroutine functions, taking the event data or nothing. Each
call runs in its own task (a plain function in a worker thread, so that it cannot block the event
loop). An exception in a listener is logged, never raised into the emitter or the other
listeners.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from types import TracebackType
from typing import Any, Self

log = logging.getLogger(__name__)


class Event(StrEnum):
    """The events an :class:`EventManager` carries."""

    #: Save state now (emitted every ``persist_state_interval`` and when the manager stops).
    PERSIST_STATE = "persistState"


@dataclass(frozen=True, slots=True)
class EventPersistStateData:
    """The data of ``Event.PERSIST_STATE``: ``is_migrating`` is True when the process is about
    to move to another host (kept for Crawlee compatibility; logkv never migrates)."""

    is_migrating: bool = False


Listener = Callable[..., Any]


class _Registration:
    """One registered listener, with what was learnt about it once (not on every emit)."""

    __slots__ = ("is_async", "listener", "name", "takes_data")

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.is_async = inspect.iscoroutinefunction(listener) or inspect.iscoroutinefunction(
            getattr(listener, "__call__", None)  # noqa: B004 - an object with async __call__
        )
        try:
            inspect.signature(listener).bind(None)
            self.takes_data = True
        except TypeError:
            self.takes_data = False
        except ValueError:  # no signature (some builtins): assume it takes the data
            self.takes_data = True
        self.name = getattr(listener, "__qualname__", None) or type(listener).__name__

    async def run(self, event: Event, data: Any) -> None:
        args = (data,) if self.takes_data else ()
        try:
            if self.is_async:
                result: Awaitable[Any] = self.listener(*args)
                await result
            else:
                await asyncio.to_thread(self.listener, *args)
        except Exception:
            log.exception("listener %s of event %s failed", self.name, event.value)


class EventManager:
    """Registers listeners, emits events to them, and emits ``PERSIST_STATE`` on a timer.

    Use it as an async context manager (``async with manager:``), possibly nested or shared:
    the first entry starts the timer; the last exit stops it, emits a final ``PERSIST_STATE``
    and waits for the listeners to finish. :meth:`emit` works whenever an event loop runs.

    >>> manager = EventManager(persist_state_interval=timedelta(seconds=30))
    >>> manager.active
    False
    """

    def __init__(
        self,
        *,
        persist_state_interval: timedelta = timedelta(minutes=1),
        close_timeout: timedelta | None = None,
    ) -> None:
        if persist_state_interval <= timedelta(0):
            raise ValueError("persist_state_interval must be positive")
        self.persist_state_interval = persist_state_interval
        self.close_timeout = close_timeout
        self._listeners: dict[Event, list[_Registration]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.Task[None] | None = None
        self._depth = 0

    # ------------------------------------------------------------------ lifecycle

    @property
    def active(self) -> bool:
        """True between the first ``__aenter__`` and the last ``__aexit__``."""
        return self._depth > 0

    async def __aenter__(self) -> Self:
        self._depth += 1
        if self._depth == 1:
            self._start_timer()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        if self._depth == 0:
            raise RuntimeError("the event manager is not active (more exits than entries)")
        try:
            if self._depth == 1:
                await self._stop_timer()
            self.emit(event=Event.PERSIST_STATE, event_data=EventPersistStateData())
            await self.wait_for_all_listeners_to_complete(timeout=self.close_timeout)
        finally:
            self._depth -= 1

    def ensure_timer(self) -> None:
        """Restart the timer in the running loop if it stopped while the manager is active
        (for example when the event loop that ran it ended)."""
        if self._depth == 0:
            return
        timer = self._timer
        if timer is None or timer.done() or timer.get_loop() is not asyncio.get_running_loop():
            self._start_timer()

    def _start_timer(self) -> None:
        self._timer = asyncio.get_running_loop().create_task(
            self._tick(), name="logkv-persist-state-timer"
        )

    async def _stop_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is None or timer.done():
            return
        if timer.get_loop() is not asyncio.get_running_loop():
            return  # its loop is gone or elsewhere; it can no longer fire here
        timer.cancel()
        try:
            await timer
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise

    async def _tick(self) -> None:
        interval = self.persist_state_interval.total_seconds()
        while True:
            await asyncio.sleep(interval)
            self.emit(event=Event.PERSIST_STATE, event_data=EventPersistStateData())

    # ------------------------------------------------------------------ listeners

    def on(self, *, event: Event, listener: Listener) -> None:
        """Call ``listener`` (sync or async, with the event data or no argument) on ``event``."""
        self._listeners.setdefault(event, []).append(_Registration(listener))

    def off(self, *, event: Event, listener: Listener | None = None) -> None:
        """Stop calling ``listener`` on ``event`` (every registration of it); None: all."""
        if listener is None:
            self._listeners.pop(event, None)
            return
        kept = [r for r in self._listeners.get(event, ()) if r.listener != listener]
        if kept:
            self._listeners[event] = kept
        else:
            self._listeners.pop(event, None)

    def listener_count(self, event: Event) -> int:
        """How many listeners ``event`` has."""
        return len(self._listeners.get(event, ()))

    def emit(self, *, event: Event, event_data: Any = None) -> None:
        """Start every listener of ``event`` in its own task; returns at once.

        Use :meth:`wait_for_all_listeners_to_complete` to wait for them.
        """
        registrations = self._listeners.get(event)
        if not registrations:
            return
        loop = asyncio.get_running_loop()
        for registration in list(registrations):
            task = loop.create_task(
                registration.run(event, event_data),
                name=f"logkv-{event.value}-{registration.name}",
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def wait_for_all_listeners_to_complete(self, *, timeout: timedelta | None = None) -> None:
        """Wait until every running listener finished; past ``timeout``, cancel the rest.

        A listener that calls this waits for the others, not for itself.
        """
        current = asyncio.current_task()
        loop = asyncio.get_running_loop()
        tasks = [
            t for t in self._tasks if t is not current and not t.done() and t.get_loop() is loop
        ]
        if not tasks:
            return
        seconds = None if timeout is None else timeout.total_seconds()
        _, pending = await asyncio.wait(tasks, timeout=seconds)
        for task in pending:
            log.warning(
                "cancelling listener task %s: it ran past the close timeout", task.get_name()
            )
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    async def persist_state(self) -> None:
        """Emit ``PERSIST_STATE`` now and wait for its listeners (and any others running)."""
        self.emit(event=Event.PERSIST_STATE, event_data=EventPersistStateData())
        await self.wait_for_all_listeners_to_complete()
