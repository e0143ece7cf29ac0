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
import shlex
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
from ..layout import CRAWLEE_METADATA_FILE, KVS_DIR, TRASH_DIR, is_store_folder
from ..names import StorageType, validate_alias
from ..storage_layout import DATASETS_DIR, STORAGE_DIRS
from . import ExitCode
from .contents import STORAGE_WORDS
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


def add_global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """``--json``, ``-q``/``--quiet`` and ``--progress``: accepted before or after the
    command's name (``logkv --json stats S`` and ``logkv stats S --json`` alike). ``top``: the
    main parser, which holds the defaults; a command's parser leaves an option it was not
    given unset, so that it does not undo the same option given before the command."""
    default: object = False if top else argparse.SUPPRESS
    group = parser.add_argument_group("output options (before or after the command)")
    group.add_argument(
        "--json", action="store_true", default=default, help="machine-readable JSON output"
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default,
        help="no progress on stderr, and no summary where a command has nothing else to say "
        "(errors are still printed)",
    )
    group.add_argument(
        "--progress",
        action="store_true",
        default=default,
        help="draw progress on stderr even when it is not a terminal",
    )


def progress_choice(args: argparse.Namespace) -> bool | None:
    """Whether to draw progress: False for ``-q``, True for ``--progress``, else None (only
    when stderr is a terminal)."""
    if getattr(args, "quiet", False):
        return False
    return True if getattr(args, "progress", False) else None


#: ``--kind`` values and the storage type each names.
KINDS: Final[dict[str, StorageType]] = {
    "kvs": "key_value_store",
    "dataset": "dataset",
    "queue": "request_queue",
}


def add_store_options(parser: argparse.ArgumentParser) -> None:
    """``--store NAME`` and ``--kind``: one store of a storage folder given as STORE."""
    parser.add_argument(
        "--store",
        dest="store_name",
        metavar="NAME",
        help="STORE is a storage folder: use its store NAME (key_value_stores/NAME, or with "
        "--kind datasets/NAME or request_queues/NAME)",
    )
    parser.add_argument(
        "--kind",
        dest="store_kind",
        choices=list(KINDS),
        default="kvs",
        help="with --store: a key-value store (kvs, the default), a dataset or a request queue",
    )


def locate_store(path: Path, name: str | None, kind: str = "kvs") -> Path:
    """The store folder a command works on: ``path`` itself, or with ``name`` (``--store``)
    the store of that name and ``kind`` in the storage folder ``path``."""
    if name is None:
        return path
    try:
        validate_alias(name, "name")
    except ValueError as exc:
        raise CommandError(f"--store {name!r}: {exc}", ExitCode.USAGE) from None
    storage = KINDS[kind]
    if is_store_folder(path):
        raise CommandError(
            f"{path} is a store, not a storage folder: give it without --store", ExitCode.USAGE
        )
    if not path.is_dir():
        raise CommandError(f"no storage folder at {path}", ExitCode.USAGE)
    folder = path / STORAGE_DIRS[storage]
    target = folder / name
    if is_store_folder(target):
        return target
    hint = _crawlee_hint(target)
    if hint is not None:
        raise CommandError(hint, ExitCode.USAGE)
    names = []
    if folder.is_dir():
        names = sorted(p.name for p in folder.iterdir() if is_store_folder(p))
    have = f"it has: {', '.join(names)}" if names else "it has none"
    raise CommandError(
        f"no {STORAGE_WORDS[storage]} named {name!r} in {path} ({folder} holds the "
        f"{STORAGE_WORDS[storage]}s; {have})",
        ExitCode.USAGE,
    )


def _crawlee_hint(path: Path) -> str | None:
    """What to run when ``path`` is a Crawlee file-system store or storage folder, else None."""
    quoted = shlex.quote(str(path))
    if (path / CRAWLEE_METADATA_FILE).is_file():
        storage = path.parent
        if storage.name == KVS_DIR or storage.name not in STORAGE_DIRS.values():
            return (
                f"{path} is a Crawlee file-system key-value store, not a logkv store: copy it "
                f"into a new logkv store with 'logkv import {quoted} NEW_DIR', or convert its "
                f"whole storage folder with 'logkv migrate {shlex.quote(str(storage.parent))}'"
            )
        return (
            f"{path} is a Crawlee file-system store, not a logkv store: convert its storage "
            f"folder with 'logkv migrate {shlex.quote(str(storage.parent))}'"
        )
    for kind_dir in STORAGE_DIRS.values():
        folder = path / kind_dir
        if folder.is_dir() and any(
            (child / CRAWLEE_METADATA_FILE).is_file() for child in folder.iterdir()
        ):
            return (
                f"{path} is a Crawlee file-system storage folder: convert it to logkv with "
                f"'logkv migrate {quoted}' (or one key-value store with 'logkv import')"
            )
    return None


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
            f"{path} is a storage folder, not one store; name one with --store NAME (and "
            f"--kind dataset or queue for a dataset or a request queue), or give one of its "
            f"stores: {shown}{more}",
            ExitCode.USAGE,
        )
    hint = _crawlee_hint(path) if path.is_dir() else None
    if hint is not None:
        raise CommandError(hint, ExitCode.USAGE)
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
    hint = None if found else _crawlee_hint(root)
    if hint is not None:
        raise CommandError(hint, ExitCode.USAGE)
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
