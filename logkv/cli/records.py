"""``logkv get``, ``keys``, ``set``, ``rm`` and ``edit``: read and fix single records.

The reads (``get``, ``keys``) open the store read-only and take no lock, so they work beside
a live crawler, and on a store's bucket copy (``s3://...``). The writes (``set``, ``rm``,
``edit``) take the store's writer lock for as long as they write and no longer: a store held by
a running writer is refused with that writer's pid (exit 3), never written behind its back.

``edit`` copies the value into a temporary file, runs ``$VISUAL`` or ``$EDITOR`` (else ``vi``)
on it without holding any lock, and writes it back only when it changed, is still valid for its
content type (JSON parses, text decodes in its charset), and the record is still the one that
was copied (same sequence number): otherwise it refuses and says where the edited copy is kept.
"""

from __future__ import annotations

import argparse
import mimetypes
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any, Final

from ..content import (
    BINARY_CONTENT_TYPE,
    ValueDecodeError,
    check_content_type,
    decode,
    extension_for,
    public_content_type,
)
from ..engine import Engine, KeyInfo
from ..errors import StoreLockedError
from ..format import SetRecord, decode_fields, read_frame
from ..lock import writer_pid
from . import ExitCode
from .common import CommandError, add_store_options, key_argument, path_argument, store_argument
from .contents import storage_type
from .render import Listing, human_bytes, iso_timestamp, json_document, json_line, printable

#: The content type of a value given on the command line as text, when none is given.
TEXT_CONTENT_TYPE: Final = "text/plain; charset=utf-8"
#: The storage types whose records form an event log that single-record writes would break.
EVENT_LOGS: Final = frozenset({"dataset", "request_queue"})
#: Rows of ``keys --long`` aligned and printed at a time.
PAGE: Final = 1000
#: Times a read looks a key up again when a live writer's compaction moved its record.
READ_ATTEMPTS: Final = 5


def current_record(engine: Engine, key: str) -> SetRecord | None:
    """The current record of ``key`` (sequence number, time, content type and value, checked),
    or None when the key is absent."""
    for _ in range(READ_ATTEMPTS):
        entry = engine.entry(key)
        if entry is None:
            return None
        try:
            frame = engine.read_frame(entry)
        except FileNotFoundError:
            engine.refresh()  # a live writer's compaction retired the file: look again
            continue
        _, fields = read_frame(frame, 0, len(frame))
        record = decode_fields(fields)
        assert isinstance(record, SetRecord)
        return record
    raise CommandError(
        f"the record of {key!r} kept moving while it was read (a writer compacting the store); "
        "run the command again",
        ExitCode.CHANGED,
    )


def _record_json(store: Path, record: SetRecord) -> dict[str, Any]:
    return {
        "store": str(store),
        "key": record.key,
        "seq": record.seq,
        "timestamp": iso_timestamp(record.timestamp_us),
        "content_type": public_content_type(record.content_type),
        "size": record.value_size,
        "none": record.value is None and record.streamed is None,
    }


def _missing(store: Path, key: str) -> CommandError:
    return CommandError(f"no key {key!r} in {store}", ExitCode.USAGE)


# ---------------------------------------------------------------------------------- reads


def cmd_get(args: argparse.Namespace) -> int:
    """Print a key's value as stored (or write it to ``-o FILE``); ``--json``: its metadata."""
    store: Path = args.store
    with Engine.open(store, readonly=True) as engine:
        record = current_record(engine, args.key)
        if record is None:
            raise _missing(store, args.key)
        if args.json:
            print(json_document(_record_json(store, record)))
            return ExitCode.OK
        if record.value is None and record.streamed is None and not args.quiet:
            print(f"logkv: note: {args.key!r} holds None (no bytes)", file=sys.stderr)
        # A streamed value is copied a checked chunk at a time, never held whole.
        stream = engine.open_value(args.key) if record.streamed is not None else None
        chunks: Iterable[bytes] = stream if stream is not None else [record.value or b""]
        try:
            if args.output is not None and str(args.output) != "-":
                _write_output(args.output, chunks)
                return ExitCode.OK
            sys.stdout.flush()
            for chunk in chunks:
                sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
        finally:
            if stream is not None:
                stream.close()
    return ExitCode.OK


def _write_output(path: Path, chunks: Iterable[bytes]) -> None:
    """Write ``chunks`` to ``path`` whole or not at all (a temporary file renamed into
    place)."""
    folder = path.parent if str(path.parent) else Path(".")
    fd, temp = tempfile.mkstemp(prefix=".logkv-get-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def cmd_keys(args: argparse.Namespace) -> int:
    """List live keys in order, one a line (``--json``: JSON lines with size and type);
    ``--long``: with each key's content type, size, and the sequence number and time of its
    last change (a table, or those fields in ``--json``)."""
    if args.limit is not None and args.limit < 0:
        raise CommandError(f"--limit must be 0 or more, got {args.limit}", ExitCode.USAGE)
    with Engine.open(args.store, readonly=True) as engine:
        infos = engine.infos(args.start_after, args.limit, args.prefix)
        if args.long:
            _print_long(engine, infos, args.json)
            return ExitCode.OK
        for info in infos:
            if args.json:
                line = {
                    "key": info.key,
                    "size": info.size,
                    "content_type": public_content_type(info.content_type),
                }
                print(json_line(line))
            else:
                print(printable(info.key))
    return ExitCode.OK


def _long_rows(engine: Engine, infos: Iterable[KeyInfo]) -> Iterator[dict[str, Any]]:
    """Each listed key's fields for ``keys --long``: its current record's header, read (and
    checked) from the log; a key deleted since it was listed is left out."""
    for info in infos:
        record = current_record(engine, info.key)
        if record is None:
            continue
        yield {
            "key": record.key,
            "content_type": public_content_type(record.content_type),
            "size": record.value_size,
            "seq": record.seq,
            "timestamp": iso_timestamp(record.timestamp_us),
        }


def _print_long(engine: Engine, infos: Iterable[KeyInfo], as_json: bool) -> None:
    """Print ``keys --long``: JSON lines, or a table printed a page at a time."""
    rows = _long_rows(engine, infos)
    if as_json:
        for row in rows:
            print(json_line(row))
        return
    listing = Listing(["key", "content type", "size", "seq", "changed"], right=(2, 3))
    printed = False
    while page := list(islice(rows, PAGE)):
        printed = True
        cells = [
            (printable(r["key"]), r["content_type"] or "", human_bytes(r["size"]), r["seq"],
             r["timestamp"])
            for r in page
        ]  # fmt: skip
        print(listing.page(cells))
    if not printed:
        print(listing.page([]))  # the header alone


# ---------------------------------------------------------------------------------- writes


def refuse_event_logs(store: Path, command: str) -> None:
    """Refuse to write single records into a dataset or a request queue (exit 2).

    Their keys are not names a user chose but the positions of an event log: a dataset's item
    numbers (dense, counted by the item count in ``META.json``'s readers) and a request queue's
    ``p/``, ``r/`` and head records, which must change together. A record set or removed by
    hand would leave a gap, a count that lies, or a request both pending and handled, so no
    write through ``set``, ``rm`` or ``edit`` has a safe meaning there."""
    kind = storage_type(store)
    if kind.storage not in EVENT_LOGS:
        return
    raise CommandError(
        f"{store} is a {kind.describe()}, an event log written by its own client, not a "
        f"key-value store: 'logkv {command}' would break its item or request counts; read it "
        "with 'logkv keys', 'get' or 'dump', and change it through Crawlee",
        ExitCode.USAGE,
    )


@contextmanager
def writing(store: Path, command: str) -> Iterator[Engine]:
    """The store open for writing (its lock taken) while the block runs; a store held by a
    running writer is refused with the holder's pid (exit 3), a dataset or a request queue
    always (:func:`refuse_event_logs`, exit 2). The writes are synced before the lock is given
    back."""
    refuse_event_logs(store, command)
    try:
        engine = Engine.open(store, create=False)
    except StoreLockedError as exc:
        raise _held(store, command, exc.holder_pid) from None
    with engine:
        yield engine
        engine.sync()


def _held(store: Path, command: str, pid: int | None) -> CommandError:
    who = f"process {pid}" if pid else "another process"
    return CommandError(
        f"{store} is held by a running writer ({who}); 'logkv {command}' never writes behind "
        "its back: stop that writer (a crawler) first, then run the command again",
        ExitCode.LOCKED,
    )


def check_fits_type(value: bytes | None, content_type: str | None, what: str) -> None:
    """Refuse ``value`` when it does not read back under ``content_type`` (JSON that does not
    parse, text not valid in its charset)."""
    try:
        decode(value, content_type)
    except (ValueDecodeError, LookupError, ValueError) as exc:
        shown = public_content_type(content_type)
        raise CommandError(f"{what} is not valid for its content type {shown!r}: {exc}",
                           ExitCode.USAGE) from None  # fmt: skip


def _given_value(text: str) -> tuple[bytes, str]:
    """The bytes of ``set``'s VALUE argument and the content type they suggest: ``-`` reads
    stdin, ``@FILE`` a file (``@@text``: the text ``@text``), anything else is the text."""
    if text == "-":
        return sys.stdin.buffer.read(), BINARY_CONTENT_TYPE
    if text.startswith("@@"):
        return os.fsencode(text[1:]), TEXT_CONTENT_TYPE
    if text.startswith("@"):
        path = path_argument(text[1:]) if text[1:] else None
        if path is None:
            raise CommandError("@FILE needs a file name after the @", ExitCode.USAGE)
        guessed, _ = mimetypes.guess_type(path.name, strict=False)
        return path.read_bytes(), guessed or BINARY_CONTENT_TYPE
    return os.fsencode(text), TEXT_CONTENT_TYPE


def cmd_set(args: argparse.Namespace) -> int:
    """Write one record: VALUE, ``@FILE`` or ``-`` (stdin), under ``--content-type`` (else the
    key's current type, else one suited to where the value came from)."""
    store: Path = args.store
    value, suggested = _given_value(args.value)
    given: str | None = None
    if args.content_type is not None:
        try:
            given = check_content_type(args.content_type)
        except ValueError as exc:
            raise CommandError(f"--content-type: {exc}", ExitCode.USAGE) from None
    with writing(store, "set") as engine:
        if given is not None:
            content_type = given
        else:
            entry = engine.entry(args.key)
            content_type = entry.content_type if entry and entry.content_type else suggested
        try:
            check_fits_type(value, content_type, "the value")
        except CommandError as exc:
            hint = "give --content-type application/octet-stream to store it as bytes"
            raise CommandError(f"{exc} ({hint})", exc.code) from None
        seq = engine.set(args.key, value, content_type)
    if args.json:
        print(json_document({"store": str(store), "key": args.key, "seq": seq,
                             "content_type": public_content_type(content_type),
                             "size": len(value)}))  # fmt: skip
    elif not args.quiet:
        print(f"Set {printable(args.key)} in {store}: {len(value):,} bytes, "
              f"{public_content_type(content_type)}, seq {seq:,}.")  # fmt: skip
    return ExitCode.OK


def cmd_rm(args: argparse.Namespace) -> int:
    """Delete one key (exit 2 when it is absent)."""
    store: Path = args.store
    with writing(store, "rm") as engine:
        if not engine.delete(args.key):
            raise _missing(store, args.key)
        seq = engine.last_seq
    if args.json:
        print(json_document({"store": str(store), "key": args.key, "seq": seq}))
    elif not args.quiet:
        print(f"Removed {printable(args.key)} from {store} (seq {seq:,}).")
    return ExitCode.OK


def _editor() -> list[str]:
    text = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise CommandError(
            f"cannot read the editor command {text!r}: {exc}", ExitCode.USAGE
        ) from None
    if not words:
        raise CommandError("$EDITOR is empty", ExitCode.USAGE)
    return words


def cmd_edit(args: argparse.Namespace) -> int:
    """Edit one value in ``$EDITOR``; write it back only if changed, valid and not changed
    meanwhile (see the module docstring)."""
    store: Path = args.store
    refuse_event_logs(store, "edit")
    with Engine.open(store, readonly=True) as engine:
        before = current_record(engine, args.key)
    if before is None:
        raise CommandError(f"no key {args.key!r} in {store} (create it with 'logkv set')",
                           ExitCode.USAGE)  # fmt: skip
    if before.streamed is not None:
        raise CommandError(f"{args.key!r} holds a streamed value ({before.value_size:,} bytes), "
                           "which edit does not load; use 'logkv get -o FILE' and "
                           "'logkv set KEY @FILE'", ExitCode.USAGE)  # fmt: skip
    if before.value is None:
        raise CommandError(f"{args.key!r} holds None, which has no bytes to edit; replace it "
                           "with 'logkv set'", ExitCode.USAGE)  # fmt: skip
    holder = writer_pid(store)
    if holder is not None:
        raise _held(store, "edit", holder)
    folder = Path(tempfile.mkdtemp(prefix="logkv-edit-"))
    copy = folder / f"value.{extension_for(before.content_type)}"
    copy.write_bytes(before.value)
    keep = True
    try:
        keep = _edit_and_write(args, store, before, copy)
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
    return ExitCode.OK


def _edit_and_write(args: argparse.Namespace, store: Path, before: SetRecord, copy: Path) -> bool:
    """Run the editor on ``copy`` and write it back; returns whether to keep ``copy`` (only
    when a refusal names it; a refusal raises)."""
    command = [*_editor(), str(copy)]
    try:
        done = subprocess.run(command, check=False)
    except OSError as exc:
        raise CommandError(f"cannot run the editor {command[0]!r}: {exc.strerror or exc}",
                           ExitCode.FAILED) from None  # fmt: skip
    if done.returncode != 0:
        raise CommandError(
            f"the editor exited with status {done.returncode}; nothing was written (the "
            f"edited copy is kept in {copy})",
            ExitCode.FAILED,
        )
    after = copy.read_bytes()
    if after == before.value:
        if not args.quiet and not args.json:
            print(f"{printable(args.key)} unchanged; nothing written.")
        if args.json:
            print(json_document({"store": str(store), "key": args.key, "changed": False,
                                 "seq": before.seq}))  # fmt: skip
        return False
    kept = f"(the edited copy is kept in {copy})"
    try:
        check_fits_type(after, before.content_type, "the edited value")
    except CommandError as exc:
        raise CommandError(f"{exc} {kept}; nothing written", exc.code) from None
    try:
        with writing(store, "edit") as engine:
            now = current_record(engine, args.key)
            if now is None or now.seq != before.seq:
                what = "was deleted" if now is None else f"was rewritten (seq {now.seq:,})"
                raise CommandError(
                    f"{args.key!r} {what} while it was edited (it was seq {before.seq:,}); "
                    f"nothing written {kept}",
                    ExitCode.CHANGED,
                )
            seq = engine.set(args.key, after, before.content_type)
    except CommandError as exc:
        if exc.code is ExitCode.LOCKED:
            raise CommandError(f"{exc} {kept}", exc.code) from None
        raise
    if args.json:
        print(json_document({"store": str(store), "key": args.key, "changed": True, "seq": seq,
                             "size": len(after)}))  # fmt: skip
    elif not args.quiet:
        print(f"Wrote {printable(args.key)}: {len(before.value or b''):,} -> {len(after):,} "
              f"bytes, seq {seq:,}.")  # fmt: skip
    return False


# ---------------------------------------------------------------------------------- parsers


def add_commands(commands: Any, epilog: str) -> None:
    """Add ``get``, ``keys``, ``set``, ``rm`` and ``edit`` to the ``logkv`` subparsers."""

    def add(name: str, handler: Any, text: str, remote: bool) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = commands.add_parser(
            name, help=text, description=text, epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )  # fmt: skip
        sub.add_argument(
            "store",
            type=store_argument if remote else path_argument,
            metavar="STORE",
            help="the store folder"
            + (", or its bucket copy (s3://BUCKET/PREFIX/key_value_stores/NAME)" if remote else "")
            + "; a storage folder with --store NAME",
        )
        add_store_options(sub)
        sub.set_defaults(handler=handler)
        return sub

    sub = add("get", cmd_get, "Print a key's value exactly as stored (--json: its sequence "
              "number, time, content type and size instead). Exit 2 when the key is absent.",
              True)  # fmt: skip
    sub.add_argument("key", type=key_argument, metavar="KEY")
    sub.add_argument("-o", "--output", type=path_argument, metavar="FILE",
                     help="write the value to FILE instead (whole or not at all)")  # fmt: skip
    sub = add(
        "keys",
        cmd_keys,
        "List the live keys in order, one a line (control characters escaped); --json: JSON "
        "lines with each key's size and content type; --long: a table with each key's last "
        "change too.",
        True,
    )
    sub.add_argument("--prefix", default="", metavar="P", help="only keys that start with P")
    sub.add_argument("--start-after", metavar="K", help="only keys after K (for paging)")
    sub.add_argument("--limit", type=int, metavar="N", help="at most N keys")
    sub.add_argument(
        "-l",
        "--long",
        action="store_true",
        help="a table of each key's content type, size, and the sequence number and time of "
        "its last change (--json: JSON lines with those fields); reads each key's record",
    )
    sub = add("set", cmd_set, "Write one record, taking the store's writer lock (a store held "
              "by a running writer is refused: exit 3).", False)  # fmt: skip
    sub.add_argument("key", type=key_argument, metavar="KEY")
    sub.add_argument(
        "value",
        metavar="VALUE|@FILE|-",
        help="the value: text (stored as UTF-8), @FILE for a file's bytes, - for stdin "
        "(@@text: text that starts with @)",
    )
    sub.add_argument(
        "--content-type",
        metavar="TYPE",
        help="the content type (default: the key's current one; else text/plain; "
        "charset=utf-8 for text, the file name's type for @FILE, application/octet-stream "
        "for stdin). A JSON type needs a value that parses.",
    )
    sub = add("rm", cmd_rm, "Delete one key, taking the store's writer lock. Exit 2 when the "
              "key is absent.", False)  # fmt: skip
    sub.add_argument("key", type=key_argument, metavar="KEY")
    sub = add(
        "edit",
        cmd_edit,
        "Edit one value in $VISUAL or $EDITOR (else vi), then write it back: only if it "
        "changed, is still valid for its content type, and the record was not changed "
        "meanwhile (exit 5). The writer lock is taken only to write.",
        False,
    )
    sub.add_argument("key", type=key_argument, metavar="KEY")
