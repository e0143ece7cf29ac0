"""``logkv``: one command to read, fix, audit, compact and move stores.

Subcommands taking a store (the store folder, or a storage folder with ``--store NAME`` and
``--kind``; a Crawlee folder is refused with a hint to ``import`` or ``migrate``): ``get``,
``keys``, ``set``, ``rm`` and ``edit`` (:mod:`logkv.cli.records`), ``stats``, ``verify``,
``history KEY``, ``replay --until SEQ|TIME --to DIR``, ``dump`` (with filters) and ``compact``
(:mod:`logkv.cli.compact`). ``import`` and ``export`` move a Crawlee file-system key-value
store into a new logkv store and back (:mod:`logkv.cli.transfer`), ``migrate`` a whole
storage folder; ``restore`` rebuilds a store from its bucket copy in object storage
(:mod:`logkv.cli.replica`). The audits only read the store and take no lock, so they work
beside a live writer; ``replay`` writes into a new folder; ``set``, ``rm`` and ``edit`` take
the writer lock while they write. Output is an aligned table by default; ``--json`` (before or
after the command's name, as ``-q`` and ``--progress``) prints one JSON document (JSON lines
for ``history``, ``dump`` and ``keys``). Also runs as ``python -m logkv``.

Exit status (:class:`~logkv.cli.ExitCode`): 0 success; 1 the store is damaged (``verify``
found a problem, ``dump`` or ``get`` met corrupt data, or the store does not open); 2 bad
arguments, no store at the path, an absent key, a value not valid for its content type,
history compacted away, or a replay target that is not empty; 3 the store is locked by a
running writer; 4 another failure, such as an I/O error; 5 the store changed while it was
checked (a live writer compacted it meanwhile: run the command again), or the record changed
while ``edit`` had it open.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from itertools import islice
from pathlib import Path
from typing import Any, Final

from ..content import public_content_type
from ..web.cli import add_command as add_serve_command
from . import ExitCode
from .audit import (
    Change,
    key_changes,
    replay_into,
    store_figures,
    verify_store,
)
from .common import (
    CommandError,
    add_global_options,
    add_store_options,
    key_argument,
    locate_store,
    parse_until,
    path_argument,
    progress_choice,
    require_store,
    run,
    store_argument,
)
from .compact import add_command as add_compact_command
from .contents import storage_type
from .dump import DumpFilter, DumpStatus, StoreDump, parse_seq_range
from .migrate import add_commands as add_migrate_commands
from .progress import progress
from .records import add_commands as add_record_commands
from .render import (
    Cell,
    Listing,
    human_bytes,
    iso_timestamp,
    json_document,
    json_line,
    pairs,
    parse_time,
    printable,
    table,
    value_cell,
    value_fields,
)
from .replica import add_commands as add_replica_commands
from .replica import audit_bucket, replication_lag
from .transfer import add_commands as add_transfer_commands

PROG: Final = "logkv"
#: Characters of a value shown in a table cell (``--json`` prints whole values).
VALUE_WIDTH: Final = 60
#: Dump rows rendered per table page (a dump streams; it is never held whole in memory).
PAGE: Final = 1000

_EPILOG = """\
exit status:
  0  success
  1  the store is damaged (verify found a problem, dump or get met corrupt
     data, or the store does not open)
  2  bad arguments, no store at the path (a Crawlee folder: with the command
     that converts it), an absent key, a value not valid for its content
     type, history compacted away, or a replay target that is not empty
  3  the store is locked by a running writer
  4  another failure, such as an I/O error
  5  the store changed while it was checked (a live writer compacted it
     meanwhile; nothing was found wrong: run the command again), or the
     record changed while edit had it open (nothing written)

The reads take no lock, so they work beside a live writer; set, rm and edit take
the writer lock only while they write. --json, -q and --progress may come
before or after the command's name.
"""


def _bytes_cell(size: int) -> str:
    return f"{human_bytes(size)} ({size:,} bytes)" if size >= 1024 else human_bytes(size)


# ---------------------------------------------------------------------------------- stats


def cmd_stats(args: argparse.Namespace) -> int:
    """Print a store's figures."""
    store = require_store(args.store)
    with progress(f"reading {store}", enabled=progress_choice(args)):
        figures = store_figures(store)
    s = figures.stats
    lag = replication_lag(store, s.last_seq)  # None: no LOGKV_REPLICA_URL
    if args.json:
        print(
            json_document(
                {
                    "store": str(s.path),
                    **figures.contents.as_json(),
                    **({} if lag is None else {"replication_lag": lag}),
                    "keys": s.keys,
                    "live_bytes": s.live_bytes,
                    "dead_bytes": s.dead_bytes,
                    "dead_ratio": round(figures.dead_ratio, 4),
                    "disk_bytes": s.disk_bytes,
                    "segments": s.segments,
                    "snapshot_covers": s.snapshot_covers,
                    "archive_segments": figures.archive_segments,
                    "archive_bytes": figures.archive_bytes,
                    "last_seq": s.last_seq,
                    "history_start": figures.history_start,
                }
            )
        )
        return ExitCode.OK
    covers = f"segments 1..{s.snapshot_covers}" if s.snapshot_covers else "no snapshot"
    archive = (
        f"{figures.archive_segments} files, {_bytes_cell(figures.archive_bytes)}"
        if figures.archive_segments
        else "none"
    )
    start = figures.history_start
    reach = "seq 1 (complete)" if start == 1 else f"seq {start:,} (earlier records compacted away)"
    rows: list[tuple[str, Cell]] = [
        ("store", str(s.path)),
        ("holds", figures.contents.describe()),
        ("keys (live records)", s.keys),
        ("live bytes", _bytes_cell(s.live_bytes)),
        ("dead bytes", f"{_bytes_cell(s.dead_bytes)}, {100 * figures.dead_ratio:.0f}% of records"),
        ("disk bytes", _bytes_cell(s.disk_bytes)),
        ("segments", s.segments),
        ("snapshot covers", covers),
        ("archive", archive),
        ("last seq", s.last_seq),
        ("history from", reach),
    ]
    if lag is not None:
        rows.append(("replication lag", _lag_cell(lag)))
    print(pairs(rows))
    return ExitCode.OK


def _lag_cell(lag: dict[str, Any]) -> str:
    if "error" in lag:
        return f"unknown ({lag['error']})"
    return f"{lag['records']:,} records, {lag['seconds']:.1f} s behind {lag['url']}"


# ---------------------------------------------------------------------------------- verify


def cmd_verify(args: argparse.Namespace) -> int:
    """Check a store; list every problem and exit 1 when there is one."""
    store = require_store(args.store)
    with progress(f"verifying {store}", enabled=progress_choice(args)):
        outcome = verify_store(store)
    kind = storage_type(store)
    if args.json:
        print(
            json_document(
                {
                    "store": str(store),
                    "storage": kind.storage,
                    "ok": outcome.ok,
                    "records": outcome.records,
                    "chain_checked": outcome.chain_checked,
                    "snapshot_records": outcome.snapshot_records,
                    "keys_read": outcome.keys_read,
                    "problems": outcome.problems,
                    "torn_tail": outcome.torn_tail,
                }
            )
        )
    else:
        rows: list[tuple[str, Cell]] = [
            ("store", str(store)),
            ("holds", kind.describe()),
            ("log records", outcome.records),
            ("hash chain checked", f"{outcome.chain_checked:,} records"),
            ("snapshot records", outcome.snapshot_records),
            ("keys read back", outcome.keys_read),
            ("result", "OK" if outcome.ok else f"DAMAGED: {len(outcome.problems)} problem(s)"),
        ]
        print(pairs(rows))
        for problem in outcome.problems:
            print(f"  problem: {problem}")
        if outcome.torn_tail is not None:
            print(
                f"  note: a torn tail, which the next writable open cuts off: {outcome.torn_tail}"
            )
    if outcome.ok:
        return ExitCode.OK
    print(
        f"{PROG}: error: {store} is damaged: {len(outcome.problems)} problem(s); the first: "
        f"{outcome.problems[0]}",
        file=sys.stderr,
    )
    return ExitCode.DAMAGED


# ---------------------------------------------------------------------------------- history


def _shown_type(change: Change) -> str | None:
    """A change's content type as the user gave it (None for a delete)."""
    return None if change.op == "delete" else public_content_type(change.content_type)


def _change_json(change: Change, with_values: bool) -> dict[str, Any]:
    line: dict[str, Any] = {
        "seq": change.seq,
        "timestamp": iso_timestamp(change.timestamp_us),
        "op": change.op,
        "key": change.key,
        "content_type": _shown_type(change),
        "size": change.size,
        "source": change.source,
    }
    if with_values and change.op == "set":
        line.update(value_fields(change.value))
    return line


def cmd_history(args: argparse.Namespace) -> int:
    """Print every retained change of one key, oldest first."""
    store = require_store(args.store)
    with progress(f"reading the history of {args.key!r}", enabled=progress_choice(args)):
        history = key_changes(store, args.key)
    if history.starts_at > 1:
        print(
            f"{PROG}: note: the history of {store} starts at seq {history.starts_at:,}; earlier "
            "records were compacted away (retention delete). A 'snapshot' row is the value the "
            "key had then.",
            file=sys.stderr,
        )
    if not history.changes:
        print(
            f"{PROG}: note: no record of key {args.key!r} in the retained history", file=sys.stderr
        )
    if args.json:
        for change in history.changes:
            print(json_line(_change_json(change, args.values)))
        return ExitCode.OK
    headers = ["seq", "time (UTC)", "op", "size", "content type", "source"]
    rows: list[list[Cell]] = [
        [
            c.seq,
            iso_timestamp(c.timestamp_us),
            c.op,
            c.size,
            _shown_type(c),
            c.source,
        ]
        for c in history.changes
    ]
    if args.values:
        headers.append("value")
        for row, change in zip(rows, history.changes, strict=True):
            row.append(value_cell(change.value, VALUE_WIDTH) if change.op == "set" else None)
    print(f"History of {args.key!r} in {store}: {len(rows)} change(s)")
    if rows:
        print(table(headers, rows))
    return ExitCode.OK


# ---------------------------------------------------------------------------------- replay


def cmd_replay(args: argparse.Namespace) -> int:
    """Rebuild the store as it was at a sequence number or time into a new store folder."""
    store = require_store(args.store)
    until_seq, until_us = parse_until(args.until)
    with progress(f"replaying {store}", enabled=progress_choice(args)):
        outcome = replay_into(store, args.to, until_seq, until_us)
    point = f"seq {until_seq:,}" if until_seq is not None else iso_timestamp(until_us or 0)
    if args.json:
        print(
            json_document(
                {
                    "store": str(store),
                    "until_seq": until_seq,
                    "until": None if until_us is None else iso_timestamp(until_us),
                    "to": str(outcome.target),
                    "keys": outcome.keys,
                    "last_seq": outcome.last_seq,
                    "last_chain": outcome.chain.hex(),
                    "last_time": iso_timestamp(outcome.last_us) if outcome.last_us else None,
                    "records": outcome.records,
                    "snapshot": outcome.snapshot,
                    "bytes": outcome.bytes,
                }
            )
        )
    else:
        start = f" from snapshot {outcome.snapshot}" if outcome.snapshot else ""
        print(
            f"Rebuilt {store} as of {point} into {outcome.target}{start}: {outcome.keys:,} keys, "
            f"{outcome.records:,} records, last seq {outcome.last_seq:,} "
            f"(chain {outcome.chain.hex()}), {human_bytes(outcome.bytes)}; its origin is in "
            "PROVENANCE.json."
        )
    return ExitCode.OK


# ---------------------------------------------------------------------------------- dump

_DUMP_HEADERS: Final = ["seq", "time (UTC)", "op", "key", "size", "content type", "file", "offset"]
#: The dump table's columns of numbers (right-aligned on every page).
_DUMP_RIGHT: Final = (0, 4, 7)


def _dump_rows(lines: Iterator[dict[str, Any]], with_values: bool) -> Iterator[list[Cell] | str]:
    """Table rows for record lines; problem lines become one ``!! ...`` text line each."""
    for line in lines:
        if "error" in line:
            end = "" if line["end"] < 0 else f"..{line['end']}"
            yield (
                f"!! {line['error']}: {line['path']} offset {line['offset']}{end}: {line['reason']}"
            )
            continue
        row: list[Cell] = [
            line["seq"],
            line["timestamp"],
            line["op"],
            printable(line["key"]),
            line["size"],
            line["content_type"],
            line["file"],
            line["offset"],
        ]
        if with_values:
            value = line.get("value")
            if line["op"] == "delete":
                row.append(None)
            elif value is None:
                row.append("(None)")
            else:
                prefix = "base64:" if line["value_encoding"] == "base64" else ""
                row.append(value_cell((prefix + value).encode(), VALUE_WIDTH))
        yield row


def _print_dump_table(rows: Iterator[list[Cell] | str], headers: list[str]) -> None:
    """Print rows a page at a time (:class:`~logkv.cli.render.Listing`), each problem line
    between the records it came between."""
    listing = Listing(headers, _DUMP_RIGHT)
    records: list[list[Cell]] = []
    while page := list(islice(rows, PAGE)):
        for item in page:
            if isinstance(item, str):
                if records:
                    print(listing.page(records))
                    records.clear()
                print(item)
            else:
                records.append(item)
        if records:
            print(listing.page(records))
            records.clear()


def cmd_dump(args: argparse.Namespace) -> int:
    """Print a store's records (as an open reads them, or its whole history)."""
    target: Path = args.store
    if not target.is_file():
        require_store(target)
    chosen = _dump_filter(args)
    if chosen.live and (args.history or target.is_file()):
        raise CommandError("--live shows the current record of each key of a store: not with "
                           "--history, nor for a single file", ExitCode.USAGE)  # fmt: skip
    lines = StoreDump(target, args.values, history=args.history, only=chosen)
    with progress(f"dumping {target}", enabled=progress_choice(args), unit="lines") as shown:
        counted = _counting(iter(lines), shown.advance)
        if args.json:
            for line in counted:
                print(json_line(line))
        else:
            if not target.is_file():
                print(f"{target}: a logkv {storage_type(target).describe()}")
            headers = [*_DUMP_HEADERS, "value"] if args.values else list(_DUMP_HEADERS)
            _print_dump_table(_dump_rows(counted, args.values), headers)
    status = lines.status
    if status is DumpStatus.DAMAGED:
        print(f"{PROG}: error: corrupt data found in {target} (see the '!!'/error lines)",
              file=sys.stderr)  # fmt: skip
        return ExitCode.DAMAGED
    if status is DumpStatus.UNREADABLE:
        print(f"{PROG}: error: some files of {target} could not be read", file=sys.stderr)
        return ExitCode.FAILED
    if status is DumpStatus.CHANGED:
        print(f"{PROG}: error: {target} changed while it was dumped (a writer's compaction "
              "retired files it had listed; see the 'retired' lines); run dump again",
              file=sys.stderr)  # fmt: skip
        return ExitCode.CHANGED
    return ExitCode.OK


def _counting(lines: Iterator[dict[str, Any]], step: Callable[[int], None]) -> Iterator[
        dict[str, Any]]:  # fmt: skip
    for line in lines:
        step(1)
        yield line


def _dump_filter(args: argparse.Namespace) -> DumpFilter:
    """The lines ``dump`` keeps, from its options (a usage error for a bad range or time)."""
    try:
        since = None if args.since is None else parse_time(args.since)
        until = None if args.until is None else parse_time(args.until)
    except ValueError:
        raise CommandError(
            f"--since/--until {args.since or args.until!r} is not an ISO 8601 time "
            "(for example 2026-01-31T12:00:00Z)",
            ExitCode.USAGE,
        ) from None
    seq = (None, None) if args.seq is None else parse_seq_range(args.seq)
    return DumpFilter(
        key=args.key, prefix=args.prefix, seq_from=seq[0], seq_to=seq[1], since_us=since,
        until_us=until, live=args.live,
    )  # fmt: skip


# ---------------------------------------------------------------------------------- parser


def _version() -> str:
    try:
        return version("logkv")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The ``logkv`` argument parser, one subparser per command."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Read, fix, audit, compact and move logkv stores. Every command on one "
        "store takes the store folder, or a storage folder with --store NAME.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    add_global_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Callable[[argparse.Namespace], int], text: str) -> Any:
        sub = commands.add_parser(
            name, help=text, description=text, epilog=_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )  # fmt: skip
        sub.add_argument(
            "store",
            type=store_argument,
            metavar="STORE",
            help="the store folder, or its bucket copy (s3://BUCKET/PREFIX/key_value_stores/"
            "NAME); a storage folder with --store NAME",
        )
        add_store_options(sub)
        sub.set_defaults(handler=handler)
        return sub

    add_record_commands(commands, _EPILOG)
    add(
        "stats",
        cmd_stats,
        "What the store holds (key-value store, dataset with its item count, request queue "
        "with its pending, handled and total requests), keys, live and dead bytes, disk "
        "bytes, segments, what the snapshot covers, the archive, the last sequence number and "
        "where the history starts.",
    )
    add(
        "verify",
        cmd_verify,
        "Check every checksum and the hash chain (reporting the first broken link), then read "
        "back every key and compare the index with the log. Exit 1 on any problem.",
    )
    history = add(
        "history",
        cmd_history,
        "Every change of one key, oldest first: sequence number, time, operation, size and "
        "content type. Says where the history starts when compaction deleted older records.",
    )
    history.add_argument("key", type=key_argument, help="the key")
    history.add_argument(
        "--values", action="store_true", help="show values (UTF-8 text, else base64)"
    )
    replay = add(
        "replay",
        cmd_replay,
        "Copy the store as it was at a sequence number or a time into a new store folder: the "
        "original's own records (sequence numbers, times and hash chain kept), its origin in "
        "PROVENANCE.json, all or nothing. Exit 2 for a sequence number after the end, or when "
        "compaction (retention delete) removed that part of the history.",
    )
    replay.add_argument(
        "--until",
        required=True,
        metavar="SEQ|TIME",
        help="a sequence number, or an ISO 8601 time (2026-01-31T12:00:00Z; no offset means "
        "UTC); records at or before it count",
    )
    replay.add_argument(
        "--to",
        required=True,
        type=path_argument,
        metavar="DIR",
        help="the new store folder (must not exist, or be empty)",
    )
    dump = add(
        "dump",
        cmd_dump,
        "Every record as an open reads it (the snapshot, then the later segments), with "
        "damaged spots marked. --json prints JSON lines. Damage is always shown, whatever the "
        "filters.",
    )
    dump.add_argument("--values", action="store_true", help="include values")
    dump.add_argument(
        "--history",
        action="store_true",
        help="dump the archived and current segments (every record kept) instead",
    )
    dump.add_argument("--key", type=key_argument, metavar="KEY", help="only the records of KEY")
    dump.add_argument("--prefix", metavar="P", help="only records whose key starts with P")
    dump.add_argument(
        "--seq", metavar="FROM..TO", help="only sequence numbers FROM to TO, both included "
        "(FROM.. or ..TO leave one end open; N alone: just N)",
    )  # fmt: skip
    dump.add_argument("--since", metavar="TIME", help="only records written at or after TIME")
    dump.add_argument("--until", metavar="TIME", help="only records written at or before TIME")
    dump.add_argument(
        "--live", action="store_true", help="only the current record of each live key"
    )
    dump.set_defaults(storage_ok=True)  # STORE may be one data file
    add_compact_command(commands)
    add_transfer_commands(commands, _EPILOG)
    add_migrate_commands(commands, _EPILOG)
    add_replica_commands(commands, _EPILOG)
    add_serve_command(commands, _EPILOG)
    for sub in commands.choices.values():
        add_global_options(sub, top=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``logkv``; returns the exit status."""
    return run(PROG, lambda: _command(argv))


def _command(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.quiet and args.progress:
        raise CommandError("-q and --progress contradict each other", ExitCode.USAGE)
    handler: Callable[[argparse.Namespace], int] = args.handler
    store = getattr(args, "store", None)
    if isinstance(store, str):  # an s3:// URL: the store's bucket copy
        if args.store_name is not None:
            raise CommandError("--store names a store of a local storage folder; give the "
                               "store's own s3:// URL instead", ExitCode.USAGE)  # fmt: skip
        return audit_bucket(args, handler, PROG)
    if isinstance(store, Path) and hasattr(args, "store_name"):
        args.store = locate_store(store, args.store_name, args.store_kind)
        if args.store_name is None and not getattr(args, "storage_ok", False):
            require_store(args.store)
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
