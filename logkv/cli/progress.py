"""Progress on stderr for the commands that can run longer than a second, drawn by rich.

A command wraps each long step in :func:`progress`: a bar when the amount of work is known
(compaction's records, an import's files), else a spinner with a count of what was done so far
(a dump's records) or only the elapsed time (opening a store, a verify). Progress goes to stderr
and, unless asked for with ``--progress``, only when stderr is a terminal: it never mixes with
a value ``logkv get`` prints, with ``--json`` documents or with output piped to another program,
and it is gone once the step ends (``transient``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

#: The width of progress written to stderr that is no terminal: long labels are not cut.
_LOG_WIDTH: Final = 1000


def stderr_is_terminal() -> bool:
    """Whether standard error is a terminal."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def wanted(enabled: bool | None) -> bool:
    """Whether to draw progress: ``enabled`` when given (``--progress``: True, ``-q``:
    False), else only when stderr is a terminal."""
    return stderr_is_terminal() if enabled is None else enabled


class Tracker:
    """What a step reports its progress through; does nothing when progress is not drawn."""

    def __init__(self, bar: Progress | None = None, task: TaskID | None = None) -> None:
        self._bar = bar
        self._task = task

    def advance(self, count: int = 1) -> None:
        """``count`` more units done."""
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task, count)

    def update(self, done: int, total: int | None = None) -> None:
        """``done`` units done in all, of ``total`` (None: unchanged)."""
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=done, total=total)

    def describe(self, label: str) -> None:
        """Change the step's label."""
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, description=label)


def _columns(total: int | None, unit: str) -> list[ProgressColumn | str]:
    if total is None:
        return [
            SpinnerColumn(),
            TextColumn("{task.description}", markup=False),
            TextColumn("{task.completed:,} " + unit if unit else "", markup=False),
            TimeElapsedColumn(),
        ]
    return [
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit, markup=False),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]


@contextmanager
def progress(
    label: str, total: int | None = None, *, enabled: bool | None = None, unit: str = ""
) -> Iterator[Tracker]:
    """Draw the progress of one step on stderr while the block runs: a bar of ``total``
    ``unit`` s, or a spinner with a count (``total`` None; ``unit`` empty: only the time).
    ``enabled`` as :func:`wanted`."""
    if not wanted(enabled):
        yield Tracker()
        return
    console = Console(stderr=True, markup=False, highlight=False, emoji=False)
    # Asked for where stderr is no terminal (a log file): no redrawing there, so the final
    # state is printed once, whole, and stays.
    transient = console.is_terminal
    if not transient:
        console.width = _LOG_WIDTH
    with Progress(*_columns(total, unit), console=console, transient=transient) as bar:
        task = bar.add_task(label, total=total)
        yield Tracker(bar, task)
