"""Group commit under ``Durability.FSYNC``: one ``fdatasync`` for every write waiting for one.

A write appends its frame under the engine's lock, queues its index update in :class:`GroupCommit`
and joins the current batch, a :class:`Commit`. The batch is made durable by a *leader*: the
first waiter that finds no sync in flight takes every queued update as one batch (new writes
start the next one), releases the lock, calls ``fdatasync`` once, takes the lock again, applies
the batch to the index (or records the failure) and wakes its writers. Writers that find a sync
in flight are *followers*: they wait, and when that sync ends, one of them leads the next batch.

A lone writer therefore syncs its own write in its own thread, with no hand-off to another
thread; concurrent writers still share one ``fdatasync`` per batch. Nothing syncs a batch that
nobody waits for until a later batch's leader or the engine's close takes it: every write
through the engine's API waits (:meth:`Commit.wait`), and the async facade's first task to wait
for a batch leads it (``storage_clients._store.wait_for_commit``).

Free of asyncio: the async side waits through :meth:`Commit.add_done_callback`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Final

from .errors import SyncFailedError

log = logging.getLogger(__name__)

#: An appended record's index update, applied once its batch is durable:
#: ``(key, packed entry (logkv.index.pack) or None for a delete, frame length)``.
Update = tuple[str, int | None, int]

#: Weight of the newest sync in :attr:`GroupCommit.sync_seconds` (an exponential average).
_NEWEST_WEIGHT: Final = 0.25


class Flag:
    """Whether a batch is done: set once, with the engine's lock held, and never waited on (a
    thread waits for a batch on :attr:`GroupCommit.applied`, or leads it), so a flag does what
    a ``threading.Event`` would at a fraction of its cost (an Event builds a Condition, and each
    batch needs a new one)."""

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        """True once the batch is durable and visible, or failed."""
        return self._set

    def set(self) -> None:
        """Mark the batch done."""
        self._set = True


class Commit:
    """Appends that one ``fdatasync`` makes durable (a group-commit batch).

    Returned by :meth:`Engine.set_deferred <logkv.engine.Engine.set_deferred>` and its
    siblings: :meth:`wait` blocks until the batch is durable and visible, leading the sync itself
    when no other sync is in flight; :meth:`add_done_callback` lets an event loop be told
    instead of parking a thread per write (someone must lead the batch: see :meth:`claim`).
    """

    __slots__ = ("_callbacks", "_claimed", "_guard", "_settle", "done", "error")

    def __init__(self, settle: Callable[[Commit], None] | None = None) -> None:
        self.done = Flag()
        self.error: BaseException | None = None
        self._callbacks: list[Callable[[BaseException | None], None]] = []
        self._guard = threading.Lock()
        self._settle = settle  # leads or follows until this batch is done (None: done at birth)
        self._claimed = False

    def wait(self) -> None:
        """Block until durable, syncing the batch in this thread when no sync is in flight;
        raise :class:`SyncFailedError` if the ``fdatasync`` failed."""
        if not self.done.is_set():
            assert self._settle is not None, "a commit without a group is done at birth"
            self._settle(self)
        if self.error is not None:
            error = self.error
            errno = error.errno if isinstance(error, OSError) else None
            raise SyncFailedError(errno, f"fsync failed: {error}") from error

    def claim(self) -> bool:
        """True for the first caller only: that caller promises to lead the batch (to call
        :meth:`wait`, or the engine's ``settle``, soon), so the others may merely
        :meth:`add_done_callback`. For waiters that cannot block, such as tasks of an event
        loop."""
        with self._guard:
            if self._claimed or self.done.is_set():
                return False
            self._claimed = True
            return True

    def followed(self) -> bool:
        """True while waiters that do not lead (:meth:`add_done_callback`) wait for the batch:
        a hint for a leader, read without the guard."""
        return bool(self._callbacks)

    def add_done_callback(self, callback: Callable[[BaseException | None], None]) -> None:
        """Call ``callback(error)`` once the batch is durable (``error`` None) or failed; in the
        thread that synced it, or right away if that already happened."""
        with self._guard:
            if not self.done.is_set():
                self._callbacks.append(callback)
                return
        callback(self.error)

    def _resolve(self, error: BaseException | None) -> list[Callable[[BaseException | None], None]]:
        """Mark the batch done (with the engine's lock held); the callbacks to run once the lock
        is released."""
        with self._guard:
            self.error = error
            self.done.set()
            callbacks, self._callbacks = self._callbacks, []
        return callbacks


def run_callbacks(
    callbacks: list[Callable[[BaseException | None], None]], error: BaseException | None
) -> None:
    """Tell a batch's waiters: a callback's bug is logged, never raised into the leader."""
    for callback in callbacks:
        try:
            callback(error)
        except Exception:
            log.exception("commit callback failed")


#: The commit of a write that needed no sync (``Durability.PROCESS``): already done.
DONE: Final = Commit()
DONE.done.set()


class GroupCommit:
    """Appended-but-unsynced index updates in log order, and the batch new appends join.

    Every field is guarded by the engine's lock, which :meth:`settle` and :meth:`drain` use;
    ``applied`` is a condition over it, signalled whenever a batch ends (synced or failed).
    The engine supplies two steps, called with the lock held: ``begin_sync()`` returns the
    function that makes the log durable (called with the lock released), and
    ``end_sync(updates, error)`` applies a durable batch to the index or records the failure.
    """

    __slots__ = (
        "_begin_sync",
        "_end_sync",
        "_mutex",
        "_waiting",
        "applied",
        "batch",
        "pending",
        "sync_seconds",
        "syncing",
    )

    def __init__(
        self,
        mutex: threading.Lock,
        begin_sync: Callable[[], Callable[[], None]],
        end_sync: Callable[[list[Update], BaseException | None], None],
    ) -> None:
        self._mutex = mutex
        self._begin_sync = begin_sync
        self._end_sync = end_sync
        self.pending: list[Update] = []
        self.batch = Commit(self.settle)  # the batch new appends join
        self.syncing = False  # a leader is syncing a batch (with the lock released)
        #: How long a sync takes lately (an exponential average, seconds; 0.0: none yet).
        self.sync_seconds = 0.0
        self.applied = threading.Condition(mutex)
        self._waiting = 0  # threads waiting on ``applied`` (none: a batch's end wakes no one)

    def join(self, updates: list[Update]) -> Commit:
        """With the lock held: queue ``updates`` (appended just now); the batch they joined."""
        self.pending.extend(updates)
        return self.batch

    def join_one(self, update: Update) -> Commit:
        """:meth:`join` of a single update (the hot path of a write)."""
        self.pending.append(update)
        return self.batch

    def settle(self, commit: Commit) -> None:
        """Block until ``commit`` is durable and visible, or failed: lead a sync whenever none
        is in flight and updates are queued (the batch taken then holds ``commit``'s, or the
        ones before them), else wait for the sync in flight to end."""
        with self._mutex:
            while not commit.done.is_set():
                if self.syncing or not self.pending:
                    self._wait_applied()
                else:
                    self._lead()

    def drain(self) -> None:
        """With the lock held: lead or wait until every queued update is durable and applied,
        or failed (compaction's rotation and close need the log and the index in step)."""
        while self.syncing or self.pending:
            if self.syncing:
                self._wait_applied()
            else:
                self._lead()

    def _wait_applied(self) -> None:
        """With the lock held: wait until a batch ends."""
        self._waiting += 1
        try:
            self.applied.wait()
        finally:
            self._waiting -= 1

    def _lead(self) -> None:
        """With the lock held and no sync in flight: sync every queued update as one batch,
        apply it, wake its waiters. Returns with the lock held."""
        updates, self.pending = self.pending, []
        batch, self.batch = self.batch, Commit(self.settle)
        sync = self._begin_sync()
        self.syncing = True
        mutex = self._mutex
        mutex.release()
        error: BaseException | None = None
        start = time.perf_counter()
        try:
            sync()
        except BaseException as exc:  # the batch fails: its writers are told, none hangs
            error = exc
        finally:
            took = time.perf_counter() - start
            mutex.acquire()
        self.sync_seconds += (took - self.sync_seconds) * _NEWEST_WEIGHT
        self.syncing = False
        self._end_sync(updates, error)
        callbacks = batch._resolve(error)
        if self._waiting:  # a lone writer's batch wakes no one: skip the Condition's work
            self.applied.notify_all()
        if callbacks:
            mutex.release()
            try:
                run_callbacks(callbacks, error)
            finally:
                mutex.acquire()
