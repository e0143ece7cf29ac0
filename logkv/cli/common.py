"""What the logkv commands share: finding stores, and turning expected errors into one line.

Expected errors (no store, a damaged store, a locked store, history compacted away, an I/O
error) end a command with one clear line on stderr and an :class:`~logkv.cli.ExitCode`; only a
bug in logkv shows a traceback.
"""

from __future__ import annotations

import argparse
import errno
import io
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Final

from ..compaction import CompactionRunningError
from ..engine import validate_key
from ..errors import (
    CorruptionError,
    InvalidKeyError,
    LogKVError,
    NotALogKVStoreError,
    ReplicaGapError,
    StoreLockedError,
    StoreNotFoundError,
)
from ..history import HistoryGap, StoreChangedError
from ..layout import KVS_DIR, TRASH_DIR, is_store_folder
from ..storage_layout import DATASETS_DIR
from . import ExitCode
from .render import parse_time

#: How deep below a storage folder stores are looked for (``key_value_stores/NAME``,
#: ``datasets/NAME`` and ``request_queues/NAME`` are 2).
SEARCH_DEPTH: Final = 2


class CommandError(Exception):
    """An expected failure of a command: ``message`` for stderr, ``code`` for the exit."""

    def __init__(self, message: str, code: ExitCode) -> None:
        super().__init__(message)
        self.code = code


def exit_code_for(exc: BaseException) -> ExitCode:
    """The exit status an expected error maps to."""
    if isinstance(exc, CommandError):
        return exc.code
    if isinstance(exc, CorruptionError | ReplicaGapError):
        return ExitCode.DAMAGED
    if isinstance(exc, StoreLockedError | CompactionRunningError):
        return ExitCode.LOCKED
    if isinstance(exc, StoreChangedError):
        return ExitCode.CHANGED
    if isinstance(exc, StoreNotFoundError | NotALogKVStoreError | HistoryGap | InvalidKeyError):
        return ExitCode.USAGE
    if isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG:
        return ExitCode.USAGE  # a path argument too long for the file system
    return ExitCode.FAILED


def describe(exc: BaseException) -> str:
    """One line saying what went wrong (OS errors name the file)."""
    if isinstance(exc, OSError) and not isinstance(exc, LogKVError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}"
    return " ".join(str(exc).split())


def run(prog: str, command: Callable[[], int]) -> int:
    """Run ``command``; expected errors become one ``prog: error: ...`` line and a status.

    Output piped into a command that stops reading (``| head``) ends quietly, and text that
    the terminal's encoding cannot show is escaped (:func:`escape_unprintable_output`).
    """
    escape_unprintable_output()
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


def escape_unprintable_output() -> None:
    """Print what stdout and stderr cannot encode as backslash escapes instead of failing.

    A path given as bytes that are not UTF-8 reaches logkv as lone surrogates (``\\udcff``);
    such a path is shown as ``\\udcff``, which ``--json`` readers decode back to the same
    path, where a strict UTF-8 stdout would raise ``UnicodeEncodeError``.
    """
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper) and stream.errors == "strict":
            stream.reconfigure(errors="backslashreplace")


def path_argument(text: str) -> Path:
    """An argparse ``type`` for a path: refuses what no file system accepts (an empty path,
    a NUL character, text the file-system encoding cannot encode) as a usage error instead of
    failing deep inside a command."""
    if not text:
        raise argparse.ArgumentTypeError("the path is empty")
    if "\x00" in text:
        raise argparse.ArgumentTypeError(f"the path {text!r} contains a NUL character")
    try:
        os.fsencode(text)
    except UnicodeEncodeError as exc:
        raise argparse.ArgumentTypeError(
            f"the path {text!r} cannot be encoded as a file name ({exc.reason})"
        ) from None
    return Path(text)


def store_argument(text: str) -> Path | str:
    """An argparse ``type`` for a store: a folder (see :func:`path_argument`), or a store's
    bucket copy given as an ``s3://`` URL, kept as text."""
    if text.lower().startswith("s3://"):
        return text
    return path_argument(text)


def add_output_options(parser: argparse.ArgumentParser, json_help: str) -> None:
    """``--json``, and ``-q``/``--quiet`` or ``--progress`` for the progress bar on stderr."""
    parser.add_argument("--json", action="store_true", help=json_help)
    output = parser.add_mutually_exclusive_group()
    output.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar (errors are still printed)"
    )
    output.add_argument(
        "--progress",
        action="store_true",
        help="show the progress bar even when stderr is not a terminal",
    )


def key_argument(text: str) -> str:
    """An argparse ``type`` for a key: only a key a store can hold (non-empty, not too long,
    UTF-8; bytes that are not UTF-8 arrive as lone surrogates) is accepted."""
    try:
        return validate_key(text)
    except InvalidKeyError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _broken_pipe() -> int:
    # Point stdout at /dev/null so that the interpreter's final flush does not fail again.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return ExitCode.OK


def require_store(path: Path) -> Path:
    """``path`` if it is a logkv store folder, else a :class:`CommandError` (exit 2) that names
    the stores below it when ``path`` is a storage folder."""
    if not path.exists():
        raise CommandError(f"no store at {path}: the folder does not exist", ExitCode.USAGE)
    if is_store_folder(path):
        return path
    below = _stores_below(path, SEARCH_DEPTH) if path.is_dir() else []
    if below:
        shown = ", ".join(str(store) for store in below[:5])
        more = f" and {len(below) - 5} more" if len(below) > 5 else ""
        raise CommandError(
            f"{path} is a storage folder, not one store; give one of its stores: {shown}{more}",
            ExitCode.USAGE,
        )
    raise CommandError(
        f"{path} is not a logkv store (it has no LOCK, segment or snapshot file)",
        ExitCode.USAGE,
    )


def find_stores(root: Path) -> list[Path]:
    """The stores to work on for ``root``: ``root`` itself when it is a store, else every
    store folder below it, at most :data:`SEARCH_DEPTH` levels down (a storage folder holds
    ``key_value_stores/NAME``, ``datasets/NAME`` and ``request_queues/NAME``), in path order.

    Stores are recognised by their files (:func:`~logkv.layout.is_store_folder`), never by
    their names: a store may be named ``archive`` or ``public``, an alias may be hidden
    (``.cache``), and a folder may be a symbolic link to a store. A store's own subfolders
    (its ``archive/`` of segments) are not searched, nor is the storage folder's trash of
    stores being dropped.
    """
    if not root.is_dir():
        raise CommandError(f"no store or storage folder at {root}", ExitCode.USAGE)
    if is_store_folder(root):
        return [root]
    found = _stores_below(root, SEARCH_DEPTH)
    if not found:
        raise CommandError(
            f"no logkv stores under {root} (looked {SEARCH_DEPTH} levels down, as in "
            f"{Path(root.name) / KVS_DIR / 'NAME'} or {Path(root.name) / DATASETS_DIR / 'NAME'})",
            ExitCode.USAGE,
        )
    return found


def _stores_below(folder: Path, depth: int) -> list[Path]:
    """The store folders below ``folder`` (``depth`` levels at most), in path order; a folder
    reached twice through symbolic links is listed once."""
    found: dict[Path, Path] = {}
    _collect_stores(folder, depth, found)
    return sorted(found.values())


def _collect_stores(folder: Path, depth: int, found: dict[Path, Path]) -> None:
    for child in sorted(p for p in folder.iterdir() if p.is_dir()):
        if child.name == TRASH_DIR and folder.name != KVS_DIR:
            # a storage folder's trash of stores being dropped (the next open deletes them);
            # a store of that name inside key_value_stores/ is a store like any other
            continue
        if is_store_folder(child):
            found.setdefault(child.resolve(), child)
        elif depth > 1:
            _collect_stores(child, depth - 1, found)


def parse_until(text: str) -> tuple[int | None, int | None]:
    """``--until``: a sequence number (digits) or an ISO 8601 time, as (seq, microseconds)."""
    digits = text.strip()
    if digits.isascii() and digits.isdigit():  # not '²' or '٣': digits int() cannot read
        return int(digits), None
    try:
        return None, parse_time(text)
    except ValueError:
        raise CommandError(
            f"--until {text!r} is neither a sequence number nor an ISO 8601 time "
            "(for example 2026-01-31T12:00:00Z)",
            ExitCode.USAGE,
        ) from None
