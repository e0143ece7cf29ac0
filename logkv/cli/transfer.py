"""``logkv import`` and ``logkv export``: move a Crawlee file-system key-value store into a
logkv store and back, record for record.

A Crawlee file-system key-value store is a folder of plain files::

    __metadata__.json            the store: id, name, created_at, accessed_at, modified_at
    KEY                          a record's bytes; the file name is the key percent-encoded
                                 (every character but letters, digits and ``_.-~``)
    KEY.__metadata__.json        the record's key, content_type and size

Import copies each record's bytes and content type into a new logkv store through
:meth:`logkv.Engine.set`, and writes the store's ``META.json`` (the id, timestamps and kind the
async :class:`logkv.KeyValueStore` expects). Export writes the same three kinds of file from a
logkv store. Bytes, keys, content types, the store id and its timestamps survive a round trip
(import, then export) unchanged.

Crawlee and logkv decode a value from its content type by slightly different rules (Crawlee:
``application/json`` anywhere in the type means JSON, a type starting ``text/`` means text, the
rest is bytes, and it reads both as UTF-8 whatever charset the type names; logkv: ``*/json``
and ``*/*+json`` are JSON, ``text/*`` is text in its charset). Where the two disagree for a
record, or where the stored bytes are not UTF-8 JSON or text as their type says (Crawlee gives
up on such a record), the import adds logkv's hidden ``x-logkv-value`` parameter (``bytes``,
``str``, or ``bigint`` for JSON read by the standard library, as Crawlee reads it: also used for
JSON with integers beyond 64 bits) so that :class:`logkv.KeyValueStore` returns what Crawlee
returns; users never see that parameter and export drops it again. A Crawlee
``application/x-none`` record (a stored None) becomes a stored None.

Charsets: text that Crawlee reads (as UTF-8) under a type naming another charset
(``text/plain; charset=iso-8859-1``) is stored re-encoded in that charset, in which logkv reads
it, so logkv returns the same ``str``; text that charset cannot hold keeps its UTF-8 bytes,
marked ``bytes``. Export does the reverse: text logkv reads in a charset other than UTF-8 is
written in UTF-8, as Crawlee reads it; values marked ``bytes`` are written byte for byte. So a
Crawlee store comes back from import and export byte for byte. JSON needs neither: logkv reads
JSON as UTF-8 first, whatever charset its type names, and writes it under a non-UTF-8 charset as
ASCII, which is UTF-8 too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from ..configuration import Configuration
from ..content import (
    MARKER_PARAM,
    UTF8,
    base_type,
    decode,
    encode_text,
    is_json_type,
    public_content_type,
    readable_charset,
    text_charset,
)
from ..engine import Engine, validate_key
from ..errors import InvalidKeyError, NotALogKVStoreError
from ..fsutil import fsync_dir, make_dirs, open_file
from ..layout import CRAWLEE_METADATA_FILE, is_store_folder
from ..names import StoreKind, validate_alias, validate_name
from ..storage_clients._meta import StoreMeta, new_store_id, read_meta, write_meta
from . import ExitCode
from .common import CommandError, path_argument, progress_choice, require_store
from .progress import progress
from .render import human_bytes, human_seconds, json_document

PROG: Final = "logkv"
#: The suffix of a record's metadata file in a Crawlee store.
RECORD_META_SUFFIX: Final = "." + CRAWLEE_METADATA_FILE
#: Crawlee's content type of a stored None (its value file is empty).
NONE_CONTENT_TYPE: Final = "application/x-none"
#: Problems listed one by one on stderr before the rest are only counted.
SHOWN_PROBLEMS: Final = 10

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_AS_BYTES: Final = f"; {MARKER_PARAM}=bytes"
_AS_STR: Final = f"; {MARKER_PARAM}=str"
_AS_STDLIB_JSON: Final = f"; {MARKER_PARAM}=bigint"
#: 19 digits in a row: possibly an integer beyond orjson's 64 bits.
_LONG_NUMBER: Final = re.compile(rb"\d{19}")
_JSON: Final = "json"
_TEXT: Final = "text"
_BYTES: Final = "bytes"


@dataclass
class TransferResult:
    """What an import or export did."""

    source: str
    target: str
    store_id: str
    name: str | None
    kind: str
    records: int = 0
    value_bytes: int = 0
    seconds: float = 0.0
    #: Records left out, one line each (a Crawlee record whose files are unreadable).
    skipped: list[str] = field(default_factory=list)
    #: Files of the source that belong to no record (Crawlee ignores them too).
    stray_files: int = 0
    #: The Crawlee store's id when a store beside the target already had it: the imported
    #: store got the new id ``store_id`` instead (one id, one store).
    original_id: str | None = None
    #: The store that already had ``original_id``.
    id_taken_by: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The summary for ``--json``."""
        return asdict(self)


# ---------------------------------------------------------------------------------- names


def crawlee_file_name(key: str) -> str:
    """The file name Crawlee's file-system store gives the record of ``key``."""
    return urllib.parse.quote(key, safe="")


def key_from_file_name(name: str) -> str:
    """The key of a Crawlee record file name (the inverse of :func:`crawlee_file_name`)."""
    return urllib.parse.unquote(name)


def _unsafe_key(key: str) -> str | None:
    """Why a Crawlee file-system store cannot hold ``key`` under its own name, or None."""
    name = crawlee_file_name(key)
    if name in {".", ".."}:
        return "its file name would be a directory reference"
    if name == CRAWLEE_METADATA_FILE or name.endswith(RECORD_META_SUFFIX):
        return f"its file name would clash with a {CRAWLEE_METADATA_FILE} file"
    if len(name.encode("utf-8")) > 255:
        return "its percent-encoded file name is longer than 255 bytes"
    return None


# ---------------------------------------------------------------------------------- timestamps


def _to_seconds(value: object) -> float | None:
    """A Crawlee timestamp (ISO 8601 text) as ``time.time()`` seconds, or None."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _to_crawlee_time(seconds: float) -> str:
    """``seconds`` as Crawlee writes a timestamp, exact to the microsecond."""
    return str(_EPOCH + timedelta(microseconds=round(seconds * 1_000_000)))


# ---------------------------------------------------------------------------------- content types


def _crawlee_kind(content_type: str) -> str:
    """How Crawlee's file-system store decodes a value of ``content_type``."""
    if "application/json" in content_type:
        return _JSON
    if content_type.startswith("text/"):
        return _TEXT
    return _BYTES


def _logkv_kind(content_type: str) -> str:
    """How logkv decodes a value of ``content_type`` (without a marker)."""
    if is_json_type(content_type):
        return _JSON
    if base_type(content_type).startswith("text/"):
        return _TEXT
    return _BYTES


def imported_record(content_type: str, data: bytes) -> tuple[bytes, str]:
    """``(bytes, content type)`` to store a Crawlee record of ``content_type`` holding ``data``
    in logkv so that logkv decodes it as Crawlee does (see the module docstring): ``data`` and
    ``content_type`` themselves when both already agree."""
    wanted = _crawlee_kind(content_type)
    if wanted == _BYTES:
        agree = _logkv_kind(content_type) == _BYTES
        return data, content_type if agree else content_type + _AS_BYTES
    if not _crawlee_reads(wanted, data):
        # Not valid UTF-8 JSON or text (Crawlee gives up on such a record): keep the bytes.
        return data, content_type + _AS_BYTES
    if wanted == _JSON:
        stored = _json_content_type(content_type, data)
    else:
        stored = content_type if _logkv_kind(content_type) == _TEXT else content_type + _AS_STR
        try:
            data = _text_in_charset(data, content_type)
        except TypeError:  # the declared charset cannot hold Crawlee's text
            return data, content_type + _AS_BYTES
    try:
        decode(data, stored)
    except (ValueError, LookupError):
        return data, content_type + _AS_BYTES
    return data, stored


def _crawlee_reads(kind: str, data: bytes) -> bool:
    """True if Crawlee decodes ``data`` as ``kind`` (``_JSON`` or ``_TEXT``): as UTF-8."""
    try:
        text = data.decode(UTF8)
        if kind == _JSON:
            json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


def _json_content_type(content_type: str, data: bytes) -> str:
    """The type to store Crawlee's JSON ``data`` under: marked to be read by the standard
    library, as Crawlee reads it, where orjson would read it differently or not as JSON."""
    if _LONG_NUMBER.search(data) is not None:
        # orjson reads integers beyond 64 bits as floats; the standard library (as Crawlee)
        # reads them exactly. A long digit run inside a string only costs the faster reader.
        return content_type + _AS_STDLIB_JSON
    return content_type if _logkv_kind(content_type) == _JSON else content_type + _AS_STDLIB_JSON


def _text_in_charset(data: bytes, content_type: str) -> bytes:
    """Crawlee's text ``data`` (UTF-8) in the charset ``content_type`` names, in which logkv
    reads it; ``data`` itself under UTF-8 or a charset logkv does not read text in.

    Raises :class:`TypeError` when that charset cannot hold the text.
    """
    charset = readable_charset(content_type)
    if charset is None or charset == UTF8:
        return data
    return encode_text(data.decode(UTF8), charset, content_type)


def _crawlee_bytes(data: bytes, stored: str) -> bytes:
    """The bytes to export a logkv value stored under ``stored`` as, so that Crawlee reads what
    logkv reads: text logkv reads in a charset other than UTF-8 is written in UTF-8 (Crawlee
    reads text as UTF-8, whatever its type says); everything else byte for byte."""
    charset = text_charset(stored)
    if charset is None or charset == UTF8:
        return data
    if _crawlee_kind(public_content_type(stored)) != _TEXT:
        return data  # bytes to Crawlee: the stored bytes are what it returns
    try:
        return data.decode(charset).encode(UTF8)
    except UnicodeError:  # not text in its charset: logkv reads no text from it either
        return data


# ---------------------------------------------------------------------------------- targets


def _prepare_target(target: Path) -> bool:
    """Check that ``target`` is absent or an empty folder and create it; True if it existed."""
    if target.exists():
        if not target.is_dir():
            raise CommandError(f"the target {target} is a file, not a folder", ExitCode.USAGE)
        if any(target.iterdir()):
            raise CommandError(
                f"the target {target} is not empty; give a new or empty folder", ExitCode.USAGE
            )
        return True
    make_dirs(target)
    return False


def _undo_target(target: Path, existed: bool) -> None:
    """Remove what a failed transfer wrote into ``target`` (it was new or empty)."""
    if not existed:
        shutil.rmtree(target, ignore_errors=True)
        return
    for child in target.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


@contextmanager
def _progress(label: str, total: int, enabled: bool | None) -> Iterator[Callable[[], None]]:
    """A step callback drawing a bar on stderr (``enabled`` None: only on a terminal)."""
    with progress(label, total, enabled=enabled, unit="records") as shown:

        def step() -> None:
            shown.advance()

        yield step


# ---------------------------------------------------------------------------------- import


def _read_file(path: Path | str) -> bytes:
    """The bytes of the file at ``path`` (plain system calls: big stores have many files)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _read_json(path: Path | str) -> Any:
    return json.loads(_read_file(path))


def _store_identity(source: Path) -> dict[str, Any]:
    """The Crawlee store's ``__metadata__.json``; a :class:`CommandError` if it is not one."""
    if not source.is_dir():
        raise CommandError(f"no Crawlee key-value store at {source}", ExitCode.USAGE)
    path = source / CRAWLEE_METADATA_FILE
    if not path.is_file():
        raise CommandError(
            f"{source} is not a Crawlee file-system key-value store (it has no "
            f"{CRAWLEE_METADATA_FILE})",
            ExitCode.USAGE,
        )
    try:
        body = _read_json(path)
    except ValueError as exc:
        raise CommandError(f"{path} is not valid JSON ({exc})", ExitCode.DAMAGED) from None
    if not isinstance(body, dict):
        raise CommandError(f"{path} is not a Crawlee store's metadata", ExitCode.DAMAGED)
    return body


def _import_kind(target: Path, crawlee_name: object) -> tuple[StoreKind, str | None, str | None]:
    """``(kind, name, alias)`` of the imported store, from the target folder's name: the
    default store's folder (``default``, or ``CRAWLEE_DEFAULT_KEY_VALUE_STORE_ID``: a route
    deprecated in favour of ``logkv migrate``) makes the default store; otherwise a named
    Crawlee store becomes the named store of the folder's name, an unnamed one the alias store
    of that name."""
    folder = target.resolve().name
    if folder == Configuration().default_key_value_store_id:
        return "default", None, None
    try:
        if crawlee_name is not None:
            return "named", validate_name(folder), None
        return "alias", None, validate_alias(folder)
    except ValueError as exc:
        raise CommandError(
            f"the target folder's name cannot name the imported store: {exc}", ExitCode.USAGE
        ) from None


def _record_files(source: Path) -> tuple[list[str], int]:
    """The record metadata file names of a Crawlee store (sorted), and how many other files
    belong to no record."""
    names = [entry.name for entry in os.scandir(source) if entry.is_file()]
    metas = sorted(n for n in names if n.endswith(RECORD_META_SUFFIX))
    values = {n[: -len(RECORD_META_SUFFIX)] for n in metas}
    stray = sum(
        1
        for n in names
        if n != CRAWLEE_METADATA_FILE and not n.endswith(RECORD_META_SUFFIX) and n not in values
    )
    return metas, stray


def _read_record(source: Path, meta_name: str) -> tuple[str, str, bytes] | str:
    """``(key, content type, bytes)`` of one Crawlee record, or why it cannot be read."""
    value_name = meta_name[: -len(RECORD_META_SUFFIX)]
    try:
        body = _read_json(os.path.join(source, meta_name))
    except ValueError as exc:
        return f"{meta_name}: not valid JSON ({exc})"
    if not isinstance(body, dict):
        return f"{meta_name}: not a record's metadata"
    key = body.get("key", key_from_file_name(value_name))
    content_type = body.get("content_type", body.get("contentType"))
    if not isinstance(key, str) or not isinstance(content_type, str):
        return f"{meta_name}: no key or content_type"
    try:
        data = _read_file(os.path.join(source, value_name))
    except FileNotFoundError:
        return f"{meta_name}: the value file {value_name} is missing"
    return key, content_type, data


def import_store(
    source: Path,
    target: Path,
    bar: bool | None = None,
    *,
    as_default: bool = False,
    skip: Callable[[str], bool] | None = None,
    label: str = "import",
) -> TransferResult:
    """Import the Crawlee file-system store in ``source`` into a new logkv store ``target``.

    ``as_default``: the new store is the default store, whatever the target folder's name
    (``logkv migrate`` asks the storage client which folder that is); otherwise the folder's
    name decides (see :func:`_import_kind`). Records whose key ``skip`` accepts are left out
    (``logkv migrate`` leaves out the request queues' state, which it moves with the queues).

    All or nothing: on an error, what was written to ``target`` is removed again.
    """
    started = time.perf_counter()
    identity = _store_identity(source)
    kind: StoreKind
    if as_default:
        kind, name, alias = "default", None, None
    else:
        kind, name, alias = _import_kind(target, identity.get("name"))
    store_id = identity.get("id")
    given_id = store_id if isinstance(store_id, str) and store_id else None
    holder = None if given_id is None else store_with_id(target, given_id)
    now = time.time()
    meta = StoreMeta(
        id=given_id if given_id is not None and holder is None else new_store_id(),
        name=name,
        alias=alias,
        kind=kind,
        created_at=_to_seconds(identity.get("created_at", identity.get("createdAt"))) or now,
        accessed_at=_to_seconds(identity.get("accessed_at", identity.get("accessedAt"))) or now,
        modified_at=_to_seconds(identity.get("modified_at", identity.get("modifiedAt"))) or now,
    )
    metas, stray = _record_files(source)
    result = TransferResult(
        str(source), str(target), meta.id, name, kind, stray_files=stray
    )  # fmt: skip
    if holder is not None:
        result.original_id, result.id_taken_by = given_id, str(holder)
    existed = _prepare_target(target)
    try:
        with Engine.open(target) as engine, _progress(label, len(metas), bar) as step:
            for meta_name in metas:
                record = _read_record(source, meta_name)
                step()
                if isinstance(record, str):
                    result.skipped.append(record)
                    continue
                key, content_type, data = record
                if skip is not None and skip(key):
                    continue
                _import_record(engine, key, content_type, data)
                result.records += 1
                result.value_bytes += len(data)
            engine.sync()
            write_meta(target, meta)
    except BaseException:
        _undo_target(target, existed)
        raise
    result.seconds = time.perf_counter() - started
    return result


def store_with_id(target: Path, store_id: str) -> Path | None:
    """The store beside ``target`` (in the same folder: ``key_value_stores/``) whose
    ``META.json`` has the id ``store_id``, or None."""
    parent = target.absolute().parent
    if not parent.is_dir():
        return None
    for child in sorted(parent.iterdir()):
        if child.name == target.name or not is_store_folder(child):
            continue
        try:
            meta = read_meta(child)
        except NotALogKVStoreError:
            continue  # unreadable: not this command's to judge
        if meta is not None and meta.id == store_id:
            return child
    return None


def _import_record(engine: Engine, key: str, content_type: str, data: bytes) -> None:
    try:
        validate_key(key)
    except InvalidKeyError as exc:
        raise CommandError(f"cannot import key {key!r}: {exc}", ExitCode.USAGE) from None
    if MARKER_PARAM in content_type.lower():
        raise CommandError(
            f"cannot import key {key!r}: its content type {content_type!r} carries logkv's "
            f"reserved {MARKER_PARAM!r} parameter",
            ExitCode.USAGE,
        )
    if content_type == NONE_CONTENT_TYPE and not data:
        engine.set(key, None, content_type)
        return
    engine.set(key, *imported_record(content_type, data))


# ---------------------------------------------------------------------------------- export


def _crawlee_json(body: dict[str, Any]) -> bytes:
    """JSON as Crawlee writes its metadata files (indented, non-ASCII kept)."""
    return json.dumps(body, ensure_ascii=False, indent=2).encode("utf-8")


def _write_file(path: Path | str, data: bytes) -> None:
    """Create ``path`` (it must not exist yet) holding ``data``."""
    fd = open_file(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def export_store(
    source: Path, target: Path, bar: bool | None = None, label: str = "export"
) -> TransferResult:
    """Export the logkv store in ``source`` as a Crawlee file-system store in ``target``
    (``label`` names the progress bar).

    The store is read without its lock (as the other commands do). All or nothing: on an error,
    what was written to ``target`` is removed again.
    """
    started = time.perf_counter()
    require_store(source)
    meta = read_meta(source)
    now = time.time()
    with Engine.open(source, readonly=True) as engine:
        total = engine.stats().keys
        result = TransferResult(
            str(source),
            str(target),
            meta.id if meta else new_store_id(),
            meta.name if meta else None,
            meta.kind if meta else "alias",
        )
        existed = _prepare_target(target)
        try:
            with _progress(label, total, bar) as step:
                for key in engine.keys(None):
                    step()
                    found = engine.get_with_type(key)
                    if found is None:  # deleted by a writer meanwhile
                        continue
                    result.value_bytes += _export_record(target, key, *found)
                    result.records += 1
            identity = {
                "id": result.store_id,
                "name": result.name,
                "accessed_at": _to_crawlee_time(meta.accessed_at if meta else now),
                "created_at": _to_crawlee_time(meta.created_at if meta else now),
                "modified_at": _to_crawlee_time(meta.modified_at if meta else now),
            }
            _write_file(target / CRAWLEE_METADATA_FILE, _crawlee_json(identity))
            fsync_dir(target)
        except BaseException:
            _undo_target(target, existed)
            raise
    result.seconds = time.perf_counter() - started
    return result


def _export_record(target: Path, key: str, data: bytes | None, stored: str | None) -> int:
    """Write one record's value and metadata files; return the value's size."""
    problem = _unsafe_key(key)
    if problem is not None:
        raise CommandError(
            f"cannot export key {key!r}: a Crawlee file-system store cannot hold it ({problem})",
            ExitCode.USAGE,
        )
    if data is None:
        data, content_type = b"", NONE_CONTENT_TYPE
    else:
        content_type = public_content_type(stored)
        if stored is not None:
            data = _crawlee_bytes(data, stored)
    path = os.path.join(target, crawlee_file_name(key))
    _write_file(path, data)
    record = {"key": key, "content_type": content_type, "size": len(data)}
    _write_file(path + RECORD_META_SUFFIX, _crawlee_json(record))
    return len(data)


# ---------------------------------------------------------------------------------- commands


def _report(args: argparse.Namespace, result: TransferResult, verb: str) -> int:
    for problem in result.skipped[:SHOWN_PROBLEMS]:
        print(f"{PROG}: warning: skipped {problem}", file=sys.stderr)
    if len(result.skipped) > SHOWN_PROBLEMS:
        more = len(result.skipped) - SHOWN_PROBLEMS
        print(f"{PROG}: warning: skipped {more} more record(s)", file=sys.stderr)
    if args.json:
        print(json_document(result.as_json()))
        return ExitCode.OK
    label = {"named": f"named {result.name!r}", "alias": "unnamed", "default": "default"}
    print(
        f"{verb} {result.records:,} records ({human_bytes(result.value_bytes)} of values) from "
        f"{result.source} into {result.target} in {human_seconds(result.seconds)}: store id "
        f"{result.store_id}, {label.get(result.kind, result.kind)} store."
    )
    if result.original_id is not None:
        print(
            f"The Crawlee store's id {result.original_id} is already the id of "
            f"{result.id_taken_by}: the imported store has the new id {result.store_id}."
        )
    if result.skipped:
        print(f"Skipped {len(result.skipped):,} unreadable record(s) (see the warnings).")
    if result.stray_files:
        print(f"Ignored {result.stray_files:,} file(s) that belong to no record.")
    return ExitCode.OK


def cmd_import(args: argparse.Namespace) -> int:
    """Import a Crawlee file-system key-value store into a new logkv store."""
    return _report(args, import_store(args.source, args.target, progress_choice(args)), "Imported")


def cmd_export(args: argparse.Namespace) -> int:
    """Export a logkv store as a Crawlee file-system key-value store."""
    return _report(args, export_store(args.source, args.target, progress_choice(args)), "Exported")


def add_commands(commands: Any, epilog: str) -> None:
    """Add ``import`` and ``export`` to the ``logkv`` subparsers ``commands``."""
    specs = (
        (
            "import",
            cmd_import,
            "Import a Crawlee file-system key-value store folder into a new logkv store folder: "
            "every record's bytes, key and content type, and the store's id and timestamps.",
            "CRAWLEE_STORE_DIR",
            "LOGKV_STORE_DIR",
        ),
        (
            "export",
            cmd_export,
            "Export a logkv store folder as a Crawlee file-system key-value store folder that "
            "Crawlee's FileSystemStorageClient opens and reads back identically.",
            "LOGKV_STORE_DIR",
            "CRAWLEE_STORE_DIR",
        ),
    )
    for name, handler, text, source, target in specs:
        sub = commands.add_parser(
            name, help=text, description=text, epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )  # fmt: skip
        sub.add_argument("source", type=path_argument, metavar=source, help="the store to read")
        sub.add_argument(
            "target",
            type=path_argument,
            metavar=target,
            help="the new store folder (absent or empty)",
        )
        sub.set_defaults(handler=handler)
