"""The event manager: listeners, errors, the PERSIST_STATE timer and the final emit."""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import timedelta
from typing import Any

import pytest

from logkv import Event, EventManager, EventPersistStateData

#: Upper bound for waiting on something that normally happens in milliseconds (never a timing
#: assertion: a slow machine only makes the tests slower).
PATIENCE = 10.0


async def test_sync_and_async_listeners_get_the_data() -> None:
    manager = EventManager()
    seen: list[tuple[str, Any]] = []
    threads: list[int] = []

    def sync_listener(data: EventPersistStateData) -> None:
        threads.append(threading.get_ident())
        seen.append(("sync", data))

    async def async_listener(data: EventPersistStateData) -> None:
        seen.append(("async", data))

    def no_argument() -> None:
        seen.append(("bare", None))

    class CallableListener:
        async def __call__(self, data: EventPersistStateData) -> None:
            seen.append(("callable", data))

    for listener in (sync_listener, async_listener, no_argument, CallableListener()):
        manager.on(event=Event.PERSIST_STATE, listener=listener)
    data = EventPersistStateData(is_migrating=True)
    manager.emit(event=Event.PERSIST_STATE, event_data=data)
    assert seen == []  # listeners run in their own tasks, after emit returns
    await manager.wait_for_all_listeners_to_complete()
    assert sorted(seen, key=lambda item: item[0]) == [
        ("async", data),
        ("bare", None),
        ("callable", data),
        ("sync", data),
    ]
    assert threads and threads[0] != threading.get_ident()  # sync listeners run off the loop


async def test_off_removes_one_listener_or_all() -> None:
    manager = EventManager()
    calls: list[str] = []

    async def first() -> None:
        calls.append("first")

    async def second() -> None:
        calls.append("second")

    manager.on(event=Event.PERSIST_STATE, listener=first)
    manager.on(event=Event.PERSIST_STATE, listener=second)
    manager.off(event=Event.PERSIST_STATE, listener=first)
    assert manager.listener_count(Event.PERSIST_STATE) == 1
    await manager.persist_state()
    assert calls == ["second"]
    manager.off(event=Event.PERSIST_STATE)
    assert manager.listener_count(Event.PERSIST_STATE) == 0
    await manager.persist_state()
    assert calls == ["second"]
    manager.off(event=Event.PERSIST_STATE, listener=first)  # removing twice is harmless


async def test_bound_methods_can_be_removed() -> None:
    class Owner:
        def __init__(self) -> None:
            self.calls = 0

        async def listener(self) -> None:
            self.calls += 1

    owner = Owner()
    manager = EventManager()
    manager.on(event=Event.PERSIST_STATE, listener=owner.listener)
    manager.off(event=Event.PERSIST_STATE, listener=owner.listener)
    await manager.persist_state()
    assert owner.calls == 0


async def test_listener_errors_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    manager = EventManager()
    survivors: list[str] = []

    async def broken_async() -> None:
        raise RuntimeError("async boom")

    def broken_sync() -> None:
        raise ValueError("sync boom")

    async def healthy() -> None:
        survivors.append("ok")

    for listener in (broken_async, broken_sync, healthy):
        manager.on(event=Event.PERSIST_STATE, listener=listener)
    with caplog.at_level(logging.ERROR, logger="logkv.events"):
        manager.emit(event=Event.PERSIST_STATE, event_data=EventPersistStateData())
        await manager.wait_for_all_listeners_to_complete()
    assert survivors == ["ok"]
    messages = [record.getMessage() for record in caplog.records]
    assert any("broken_async" in m for m in messages)
    assert any("broken_sync" in m for m in messages)
    assert any("async boom" in (record.exc_text or "") for record in caplog.records)


async def test_emit_without_listeners_does_nothing() -> None:
    manager = EventManager()
    manager.emit(event=Event.PERSIST_STATE)
    await manager.wait_for_all_listeners_to_complete()


async def test_timer_emits_persist_state_while_active_and_once_more_on_exit() -> None:
    manager = EventManager(persist_state_interval=timedelta(milliseconds=10))
    ticks: list[EventPersistStateData] = []
    two_ticks = asyncio.Event()

    async def listener(data: EventPersistStateData) -> None:
        ticks.append(data)
        if len(ticks) >= 2:
            two_ticks.set()

    manager.on(event=Event.PERSIST_STATE, listener=listener)
    assert not manager.active
    async with manager:
        assert manager.active
        await asyncio.wait_for(two_ticks.wait(), PATIENCE)
    assert not manager.active
    after_exit = len(ticks)
    assert after_exit >= 3  # at least two ticks and the final emit
    assert all(not data.is_migrating for data in ticks)
    await asyncio.sleep(0.05)
    assert len(ticks) == after_exit  # the timer stopped with the last exit


async def test_final_emit_on_exit_without_any_tick() -> None:
    manager = EventManager(persist_state_interval=timedelta(hours=1))
    calls: list[int] = []
    manager.on(event=Event.PERSIST_STATE, listener=lambda: calls.append(1))
    async with manager:
        pass
    assert calls == [1]


async def test_nested_entries_share_one_timer() -> None:
    manager = EventManager(persist_state_interval=timedelta(hours=1))
    calls: list[int] = []

    async def listener() -> None:
        calls.append(1)

    manager.on(event=Event.PERSIST_STATE, listener=listener)
    await manager.__aenter__()
    await manager.__aenter__()
    await manager.__aexit__()
    assert manager.active  # one entry left
    assert calls == [1]  # each exit emits once
    await manager.__aexit__()
    assert not manager.active
    assert calls == [1, 1]
    with pytest.raises(RuntimeError, match="not active"):
        await manager.__aexit__()


async def test_close_timeout_cancels_slow_listeners(caplog: pytest.LogCaptureFixture) -> None:
    manager = EventManager(close_timeout=timedelta(milliseconds=20))
    cancelled = asyncio.Event()

    async def stuck() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    manager.on(event=Event.PERSIST_STATE, listener=stuck)
    with caplog.at_level(logging.WARNING, logger="logkv.events"):
        async with manager:
            pass
    assert cancelled.is_set()
    assert any("close timeout" in record.getMessage() for record in caplog.records)


async def test_a_listener_may_wait_for_the_others() -> None:
    manager = EventManager()
    order: list[str] = []

    async def slow() -> None:
        await asyncio.sleep(0.01)
        order.append("slow")

    async def waiter() -> None:
        await manager.wait_for_all_listeners_to_complete()
        order.append("waiter")

    manager.on(event=Event.PERSIST_STATE, listener=slow)
    manager.on(event=Event.PERSIST_STATE, listener=waiter)
    await asyncio.wait_for(manager.persist_state(), PATIENCE)
    assert order == ["slow", "waiter"]


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        EventManager(persist_state_interval=timedelta(0))
