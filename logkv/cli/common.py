"""What the logkv commands share: finding stores, and turning expected errors into one line.

Expected errors (no store, a damaged store, a locked store, history compacted away, an I/O
error) end a command with one clear line on stderr and an :class:`~logkv.cli.ExitCode`; only a
bug in logkv shows a traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

from ..compaction import CompactionRunningError
from ..errors import (
    CorruptionError,
    LogKVError,
    NotALogKVStoreError,
    StoreLockedError,
    StoreNotFoundError,
)
from ..history import HistoryGap
from ..layout import ARCHIVE_DIR, KVS_DIR, PUBLIC_DIR, is_store_folder
from . import ExitCode

#: How deep below a storage folder stores are looked for (``key_value_stores/NAME`` is 2).
SEARCH_DEPTH: Final = 2
_NOT_STORES: Final = frozenset({ARCHIVE_DIR, PUBLIC_DIR})


class CommandError(Exception):
    """An expected failure of a command: ``message`` for stderr, ``code`` for the exit."""

    def __init__(self, message: str, code: ExitCode) -> None:
        super().__init__(message)
        self.code = code


def exit_code_for(exc: BaseException) -> ExitCode:
    """The exit status an expected error maps to."""
    if isinstance(exc, CommandError):
        return exc.code
    if isinstance(exc, CorruptionError):
        return ExitCode.DAMAGED
    if isinstance(exc, StoreLockedError | CompactionRunningError):
        return ExitCode.LOCKED
    if isinstance(exc, StoreNotFoundError | NotALogKVStoreError | HistoryGap):
        return ExitCode.USAGE
    return ExitCode.FAILED


def describe(exc: BaseException) -> str:
    """One line saying what went wrong (OS errors name the file)."""
    if isinstance(exc, OSError) and not isinstance(exc, LogKVError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}"
    return " ".join(str(exc).split())


def run(prog: str, command: Callable[[], int]) -> int:
    """Run ``command``; expected errors become one ``prog: error: ...`` line and a status.

    Output piped into a command that stops reading (``| head``) ends quietly.
    """
    try:
        return command()
    except (LogKVError, CommandError, OSError) as exc:
        if isinstance(exc, BrokenPipeError):
            return _broken_pipe()
        print(f"{prog}: error: {describe(exc)}", file=sys.stderr)
        return exit_code_for(exc)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def _broken_pipe() -> int:
    # Point stdout at /dev/null so that the interpreter's final flush does not fail again.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return ExitCode.OK


def require_store(path: Path) -> Path:
    """``path`` if it is a logkv store folder, else a :class:`CommandError` (exit 2)."""
    if not path.exists():
        raise CommandError(f"no store at {path}: the folder does not exist", ExitCode.USAGE)
    if not is_store_folder(path):
        raise CommandError(
            f"{path} is not a logkv store (it has no LOCK, segment or snapshot file)",
            ExitCode.USAGE,
        )
    return path


def find_stores(root: Path) -> list[Path]:
    """The stores to work on for ``root``: ``root`` itself when it is a store, else every
    store folder below it, at most :data:`SEARCH_DEPTH` levels down (a storage folder holds
    ``key_value_stores/NAME``), in path order. A store's own subfolders are not searched."""
    if not root.is_dir():
        raise CommandError(f"no store or storage folder at {root}", ExitCode.USAGE)
    if is_store_folder(root):
        return [root]
    found = sorted(_stores_below(root, SEARCH_DEPTH))
    if not found:
        raise CommandError(
            f"no logkv stores under {root} (looked {SEARCH_DEPTH} levels down, "
            f"as in {Path(root.name) / KVS_DIR / 'NAME'})",
            ExitCode.USAGE,
        )
    return found


def _stores_below(folder: Path, depth: int) -> Iterator[Path]:
    try:
        children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError:
        return
    for child in children:
        if child.name.startswith(".") or child.name in _NOT_STORES:
            continue
        if is_store_folder(child):
            yield child
        elif depth > 1:
            yield from _stores_below(child, depth - 1)
