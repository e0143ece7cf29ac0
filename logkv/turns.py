"""Taking turns with other threads in a long job that runs Python code.

A thread that runs Python for seconds with no I/O keeps the interpreter lock: every other thread
that wants it waits for the interpreter to force a switch, which it does after 5 ms
(``sys.getswitchinterval()``), and a writer needs it twice per write (before its ``pwrite`` and
after). Compaction's copy and switch, the merge of fresh keys, and the writing of a snapshot's
key table are such jobs; they call :meth:`Turns.take` between short steps.
"""

from __future__ import annotations

import time

#: A long job works at most about this long (seconds) before it lets other threads run.
WORK_SLICE = 0.002
#: How long it lets them: a real sleep, during which a writer waiting for the interpreter
#: takes it. ``sleep(0)`` drops the interpreter lock and takes it straight back, before a
#: waiting thread has woken up; the waiting thread then gets it only when the interpreter
#: forces a switch, after 5 ms (``sys.getswitchinterval()``), twice per write (before it
#: and after its ``pwrite``).
PAUSE = 50e-6


class Turns:
    """Lets other threads run every :data:`WORK_SLICE` seconds of a long job: :meth:`take`
    between two steps of it (each step short) sleeps :data:`PAUSE` once a slice is used up."""

    __slots__ = ("_until",)

    def __init__(self) -> None:
        self._until = time.perf_counter() + WORK_SLICE

    def take(self) -> None:
        """Sleep :data:`PAUSE` if the current slice of work is used up."""
        if time.perf_counter() >= self._until:
            time.sleep(PAUSE)
            self._until = time.perf_counter() + WORK_SLICE
