"""Awaiting a group commit from the event loop (``Durability.FSYNC``), holding no thread.

The first task to wait for a batch leads it (:meth:`~logkv.group_commit.Commit.claim`); the
others await it through a callback. The leader may first yield once to the event loop, so
that the tasks ready to run append to the same batch, and then syncs it: on the event loop's
thread while the store's syncs are quick (see :data:`INLINE_SYNC_LIMIT`: a hand-off to a
thread and back costs about as much as such a sync), in a worker thread once they are not.

The yield is one pass of the event loop, which costs about as much CPU time as the rest of a
small write. Many writers gain a shared ``fdatasync`` from it; a lone writer gains nothing.
A :class:`LeadPace` per store therefore skips it while the store's writes come one at a
time: a lone writer pays one ``fdatasync`` per write, with no hand-off to another thread and
no pass of the event loop, and many writers still share one ``fdatasync`` per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Final

from ..engine import Engine
from ..errors import SyncFailedError
from ..group_commit import Commit

_to_thread = asyncio.to_thread
_clock = time.perf_counter

#: The longest a store's syncs may take lately (their recent average, seconds) for the task
#: that leads a group commit to run the ``fdatasync`` on the event loop's thread; past it the
#: sync runs in a worker thread.
INLINE_SYNC_LIMIT: Final = 0.002

#: The longest leaders go without yielding to the event loop before a sync (seconds), however
#: lonely the writes: that yield is how writers that have come since are noticed (until then
#: each syncs alone). About 20 syncs of a quick disk, so that a lone writer yields for one
#: write in 20 or so. (The event loop is not blocked that long meanwhile: the facade yields
#: every few dozen calls anyway, after the call's write.)
YIELD_INTERVAL: Final = 0.005


class LeadPace:
    """Whether the leader of a store's next batch yields to the event loop before its sync.

    A leader yields while the last yield gathered other writers into its batch (they were
    ready to run, and followed it), and at least every :data:`YIELD_INTERVAL` seconds all the
    same; otherwise it syncs its batch at once. One per store, used on its event loop only.
    """

    __slots__ = ("_gathering", "_last_yield")

    def __init__(self) -> None:
        self._gathering = True  # until a yield gathers no one
        self._last_yield = 0.0

    def should_yield(self) -> bool:
        """True when the leader should yield before its sync (then :meth:`yielded`)."""
        return self._gathering or _clock() - self._last_yield >= YIELD_INTERVAL

    def yielded(self, commit: Commit) -> None:
        """The leader of ``commit`` yielded: note whether other writers joined it meanwhile."""
        self._gathering = commit.followed()
        self._last_yield = _clock()


def lead_at_once(engine: Engine, commit: Commit, pace: LeadPace) -> bool:
    """Lead ``commit`` now, in this call, when a leader would neither yield first nor hand its
    sync to a thread (the lone writer's path: no coroutine to await); True once it is done
    (raises :class:`~logkv.errors.SyncFailedError` when its fdatasync failed), False when the
    caller must :func:`wait_for_commit` instead."""
    if engine.sync_seconds > INLINE_SYNC_LIMIT or pace.should_yield() or not commit.claim():
        return False
    commit.wait()
    return True


async def wait_for_commit(engine: Engine, commit: Commit, pace: LeadPace | None = None) -> None:
    """Await a group-commit batch of ``engine``, leading it when no other task does (see the
    module docstring); raise :class:`~logkv.errors.SyncFailedError` when its fdatasync
    failed. Without ``pace`` a leader always yields before its sync."""
    if not commit.done.is_set():
        if commit.claim():
            await _lead(engine, commit, pace)
        else:
            await _follow(commit)
    commit.wait()  # done by now: raises SyncFailedError if the fdatasync failed


async def _lead(engine: Engine, commit: Commit, pace: LeadPace | None) -> None:
    inline = engine.sync_seconds <= INLINE_SYNC_LIMIT
    if not inline or pace is None or pace.should_yield():
        try:
            await asyncio.sleep(0)  # the tasks ready now append first, and join this batch
        except BaseException:  # cancelled: still sync the batch, whose other writers count on it
            with contextlib.suppress(SyncFailedError):  # they hear of a failure; this task is gone
                commit.wait()
            raise
        if pace is not None:
            pace.yielded(commit)
    if inline:
        commit.wait()
    else:
        await _to_thread(commit.wait)


async def _follow(commit: Commit) -> None:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()
    loop_thread = threading.get_ident()

    def settle() -> None:
        if not future.done():
            future.set_result(None)

    def told(_: BaseException | None) -> None:
        if threading.get_ident() == loop_thread:  # the leader synced on this loop's thread
            settle()
        else:
            loop.call_soon_threadsafe(settle)

    commit.add_done_callback(told)
    await future
