"""``logkv-compact``: compact one store, or every store under a storage folder.

Compaction writes a store's live records into a snapshot and retires the log segments the
snapshot covers, which gives back the disk space of overwritten and deleted records. A dataset
is append-only: with no dead records (none before a purge) compaction would rewrite every item
only to add the snapshot's hint, a larger store, so such a dataset is skipped unless
``--snapshot-datasets`` asks for the faster reopen a snapshot gives. It runs on
stores that no writer holds; a store locked by a running writer is reported and skipped (that
writer can compact it itself), and the other stores are still compacted.

Exit status (:class:`~logkv.cli.ExitCode`): 0 every store was compacted (or had nothing to
compact); 1 a store is damaged; 2 bad arguments or no store found; 3 a store is locked by a
running writer; 4 another failure (an I/O error). With several problems the most serious one
wins, in the order 1, 4, 3.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from ..compaction import CompactionResult
from ..engine import Engine, EngineStats
from ..errors import LogKVError, StoreLockedError
from ..format import SEGMENT_HEADER_SIZE
from ..layout import list_segments
from ..modes import Retention
from . import ExitCode
from .audit import archive_sizes
from .common import (
    CommandError,
    add_global_options,
    add_store_options,
    describe,
    exit_code_for,
    find_stores,
    locate_store,
    path_argument,
    progress_choice,
    run,
)
from .contents import storage_type
from .progress import progress
from .render import human_bytes, human_seconds, json_document, table

PROG: Final = "logkv-compact"
RETENTION_ENV: Final = "LOGKV_RETENTION"

# A snapshot's fixed cost (header, hint and meta block headers, meta, tail) and its cost per
# key in the hint (offset, head, size and type id, plus msgpack framing of the key), used to
# estimate the size after a compaction; see logkv/snapshot.py for the layout.
_SNAPSHOT_FIXED: Final = 16 + 8 + 8 + 200 + 16
_HINT_PER_KEY: Final = 8 + 4 + 8 + 4 + 3

#: Why a dataset with no dead records is not compacted.
APPEND_ONLY_NOTE: Final = "an append-only dataset with nothing to reclaim"

#: Most serious first: the exit status of a run with several problems.
_SEVERITY: Final = (ExitCode.DAMAGED, ExitCode.FAILED, ExitCode.LOCKED, ExitCode.USAGE)

_DESCRIPTION = """\
Compact logkv stores: write each store's live records into a snapshot and retire the log
segments it covers, giving back the space of overwritten and deleted records. STORE is one
store folder, or a storage folder: every store below it (up to key_value_stores/NAME) is
compacted in turn (key_value_stores/NAME, datasets/NAME, request_queues/NAME). A store that a
running writer holds is skipped with a message (exit 3); the others are still compacted. A
dataset with no dead records (append-only: none before a purge) is skipped, as compaction
would only make it larger (--snapshot-datasets: compact it for a faster reopen). Stores stay
readable by read-only users throughout.
"""

_EPILOG = f"""\
retention: what happens to the log segments a new snapshot covers
  delete   remove them: the smallest disk footprint. The store keeps its data, but the
           history before the snapshot is gone: 'logkv history' starts at the snapshot
           and 'logkv replay' cannot go back before it.
  archive  move them to the store's archive/ folder: the full history stays, so
           'logkv history' and 'logkv replay' still reach back to the first record. The
           archive grows with every compaction; delete it when the history is no longer
           needed.
  The default is ${RETENTION_ENV} when set, else delete.

exit status:
  0  every store was compacted, or had nothing to compact
  1  a store is damaged (run 'logkv verify STORE')
  2  bad arguments, or no store at the path
  3  a store is locked by a running writer (it was skipped; the others were compacted)
  4  another failure, such as an I/O error
"""


@dataclass
class Outcome:
    """What happened to one store. ``bytes_*`` are its disk use: its data files and its
    ``archive/`` folder, so that segments moved to the archive are not counted as reclaimed
    (estimates in a dry run); ``archived`` is how much the archive grew."""

    path: str
    status: str
    bytes_before: int = 0
    bytes_after: int = 0
    archived: int = 0
    records: int = 0
    retired_files: int = 0
    seconds: float = 0.0
    live_bytes: int = 0
    dead_bytes: int = 0
    keys: int = 0
    error: str | None = None
    code: ExitCode = ExitCode.OK

    @classmethod
    def of(cls, path: str, status: str, stats: EngineStats, archive: int) -> Outcome:
        """An outcome that starts from a store's figures (``archive``: the bytes in its
        archive): nothing reclaimed yet."""
        return cls(
            path,
            status,
            bytes_before=stats.disk_bytes + archive,
            bytes_after=stats.disk_bytes + archive,
            live_bytes=stats.live_bytes,
            dead_bytes=stats.dead_bytes,
            keys=stats.keys,
        )

    @property
    def reclaimed(self) -> int:
        """Disk bytes given back, the archive counted (estimated in a dry run; negative when
        the store grew)."""
        return self.bytes_before - self.bytes_after

    def as_json(self) -> dict[str, Any]:
        """The outcome for ``--json``."""
        data = asdict(self)
        data["reclaimed"] = self.reclaimed
        data["code"] = int(self.code)
        return data


def build_parser() -> argparse.ArgumentParser:
    """The ``logkv-compact`` argument parser (the same as ``logkv compact``)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    add_global_options(parser, top=True)
    return parser


def add_command(commands: Any) -> None:
    """Add ``compact`` to the ``logkv`` subparsers ``commands``."""
    sub = commands.add_parser(
        "compact",
        help="Compact one store, or every store under a storage folder (also runs as "
        "logkv-compact).",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(sub)
    sub.set_defaults(handler=cmd_compact, storage_ok=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``logkv compact`` (without the output options)."""
    parser.add_argument(
        "store",
        type=path_argument,
        metavar="STORE",
        help="a store folder, or a storage folder of stores (--store NAME: only that one)",
    )
    add_store_options(parser)
    parser.add_argument(
        "--retention",
        choices=[r.value for r in Retention],
        default=None,
        help="delete: remove the compacted segments (smallest disk, history before the "
        "snapshot is gone); archive: move them to archive/ (history and replay stay "
        f"possible). Default: ${RETENTION_ENV}, else delete.",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="show what compaction would reclaim (log, live and dead bytes, estimated size "
        "after) without changing anything; stores are opened read-only",
    )
    parser.add_argument(
        "--min-dead-ratio",
        type=_ratio,
        default=0.0,
        metavar="R",
        help="only compact stores whose dead bytes make up at least R (0..1) of their "
        "records; others are skipped (default 0: compact every store)",
    )
    parser.add_argument(
        "--snapshot-datasets",
        action="store_true",
        help="compact datasets with no dead records too: their snapshot makes them about 25%% "
        "larger (its hint, about 37 bytes per item), but a reopen reads that hint instead of "
        "replaying every record (1,000,000 items: 1.6 s instead of 6.8 s)",
    )


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def resolve_retention(chosen: str | None) -> Retention:
    """``--retention``, else ``$LOGKV_RETENTION``, else delete."""
    text = chosen if chosen is not None else os.environ.get(RETENTION_ENV, "").strip()
    if not text:
        return Retention.DELETE
    try:
        return Retention(text.lower())
    except ValueError:
        choices = ", ".join(r.value for r in Retention)
        raise CommandError(
            f"${RETENTION_ENV} is {text!r}; it must be one of: {choices}", ExitCode.USAGE
        ) from None


def _dead_ratio(live: int, dead: int) -> float:
    total = live + dead
    return dead / total if total else 0.0


def _append_only_without_dead(path: Path, stats: EngineStats) -> bool:
    """True for a dataset with no dead records: compacting it reclaims nothing (see the module
    docstring)."""
    return stats.dead_bytes == 0 and storage_type(path).storage == "dataset"


def _log_after_snapshot(path: Path, covers: int) -> int:
    """Record bytes in the segments after the snapshot (0: compaction has nothing to do)."""
    total = 0
    for number, segment in list_segments(path):
        if number > covers:
            total += max(segment.stat().st_size - SEGMENT_HEADER_SIZE, 0)
    return total


def estimate(
    path: Path,
    label: str,
    min_dead_ratio: float,
    datasets: bool = False,
    retention: Retention = Retention.DELETE,
) -> Outcome:
    """A dry run for one store: its figures now and the disk use a compaction would leave,
    its archive counted (``datasets``: as :func:`compact_one`)."""
    with Engine.open(path, readonly=True) as engine:
        stats = engine.stats()
        key_bytes = sum(len(key.encode("utf-8", "surrogatepass")) for key in engine.keys(None))
        pending = _log_after_snapshot(path, stats.snapshot_covers)
        segments = sum(p.stat().st_size for _, p in list_segments(path))
    archive = sum(archive_sizes(path))
    outcome = Outcome.of(label, "would compact", stats, archive)
    if pending == 0:
        outcome.status = "nothing to compact"
    elif not datasets and _append_only_without_dead(path, stats):
        outcome.status = f"would skip ({APPEND_ONLY_NOTE})"
    elif _dead_ratio(stats.live_bytes, stats.dead_bytes) < min_dead_ratio:
        outcome.status = "would skip (few dead bytes)"
    else:
        snapshot = _SNAPSHOT_FIXED + stats.live_bytes + key_bytes + _HINT_PER_KEY * stats.keys
        data_after = min(snapshot + SEGMENT_HEADER_SIZE, stats.disk_bytes)
        moved = segments if retention is Retention.ARCHIVE else 0
        outcome.archived = moved
        outcome.bytes_after = data_after + archive + moved
        if stats.dead_bytes == 0:
            outcome.status = (
                "would compact: nothing to reclaim (no dead bytes), only a snapshot for a "
                "faster open"
            )
    return outcome


def compact_one(
    path: Path,
    label: str,
    retention: Retention,
    min_dead_ratio: float,
    bar: bool | None,
    datasets: bool = False,
) -> Outcome:
    """Compact one store; a locked or damaged store becomes an outcome, not an exception.
    ``datasets``: compact a dataset with no dead records too (see ``--snapshot-datasets``)."""
    started = time.perf_counter()
    try:
        archive = sum(archive_sizes(path))
        with progress(f"opening {label}", enabled=bar):
            engine = Engine.open(path, create=False, retention=retention)
        with engine:
            stats = engine.stats()
            base = Outcome.of(label, "compacted", stats, archive)
            if not datasets and _append_only_without_dead(path, stats):
                base.status = f"skipped ({APPEND_ONLY_NOTE})"
                base.seconds = time.perf_counter() - started
                return base
            if _dead_ratio(stats.live_bytes, stats.dead_bytes) < min_dead_ratio:
                base.status = "skipped (few dead bytes)"
                base.seconds = time.perf_counter() - started
                return base
            with progress(f"compacting {label}", stats.keys, enabled=bar, unit="records") as shown:
                result = engine.compact(retention, progress=shown.update)
        archive_after = sum(archive_sizes(path))
    except StoreLockedError as exc:
        who = f"process {exc.holder_pid}" if exc.holder_pid else "another process"
        return Outcome(
            label,
            "locked",
            error=f"{label}: locked by a running writer ({who}); not compacted. Stop the "
            "writer and run again, or let the writer compact it (Engine.compact).",
            code=ExitCode.LOCKED,
            seconds=time.perf_counter() - started,
        )
    except (LogKVError, OSError) as exc:
        code = exit_code_for(exc)
        status = "damaged" if code is ExitCode.DAMAGED else "failed"
        return Outcome(label, status, error=f"{label}: {describe(exc)}", code=code)
    return _from_result(base, result, archive, archive_after, time.perf_counter() - started)


def _from_result(
    base: Outcome, result: CompactionResult, archive: int, archive_after: int, seconds: float
) -> Outcome:
    """The outcome of a compaction: disk use before and after with the archive counted, and
    the time from opening the store to closing it."""
    base.status = "; ".join(result.notes) if result.notes else "compacted"
    base.bytes_before = result.bytes_before + archive
    base.bytes_after = result.bytes_after + archive_after
    base.archived = archive_after - archive
    base.records = result.records
    base.retired_files = result.retired_files
    base.seconds = seconds
    return base


def _label(path: Path, root: Path) -> str:
    if path == root:
        return str(path)
    return str(path.relative_to(root))


def _stores(count: int) -> str:
    return f"{count} store" if count == 1 else f"{count} stores"


def _signed_bytes(size: int) -> str:
    """Bytes reclaimed: negative when the store grew (say, its segments went to archive/)."""
    return human_bytes(size) if size >= 0 else f"-{human_bytes(-size)}"


def render_text(
    outcomes: list[Outcome], retention: Retention, dry_run: bool, seconds: float = 0.0
) -> str:
    """The human-readable summary: one row per store and a total (``seconds``: the whole
    command, opening the stores included)."""
    before = sum(o.bytes_before for o in outcomes)
    after = sum(o.bytes_after for o in outcomes)
    archived = sum(o.archived for o in outcomes)
    if dry_run:
        rows: list[list[str | int | None]] = [
            [
                o.path,
                human_bytes(o.bytes_before),
                human_bytes(o.live_bytes),
                human_bytes(o.dead_bytes),
                f"{100 * _dead_ratio(o.live_bytes, o.dead_bytes):.0f}%",
                human_bytes(o.bytes_after),
                _signed_bytes(o.reclaimed),
                o.status,
            ]
            if o.code is ExitCode.OK
            else [o.path, None, None, None, None, None, None, o.status]
            for o in outcomes
        ]
        rows.append(
            [f"total ({_stores(len(outcomes))})", human_bytes(before), None, None, None,
             human_bytes(after), _signed_bytes(before - after), None]
        )  # fmt: skip
        headers = ["store", "disk", "live", "dead", "dead %", "est. after", "est. reclaim"]
        head = (
            f"Dry run (nothing was changed). With retention {retention.value}, compaction "
            f"would {_retention_effect(retention)}. Disk use counts each store's archive/."
        )
        if all(o.bytes_after >= o.bytes_before for o in outcomes if o.code is ExitCode.OK):
            head += " Nothing to reclaim."
        return head + "\n\n" + table([*headers, "result"], rows, right=range(1, 7))
    rows = [
        [
            o.path,
            human_bytes(o.bytes_before),
            human_bytes(o.bytes_after),
            _signed_bytes(o.reclaimed),
            human_bytes(o.archived),
            o.records,
            o.retired_files,
            human_seconds(o.seconds),
            o.status,
        ]
        if o.code is ExitCode.OK
        else [o.path, None, None, None, None, None, None, None, o.status]
        for o in outcomes
    ]
    done = [o for o in outcomes if o.code is ExitCode.OK]
    total = (
        f"total ({len(done)} of {_stores(len(outcomes))})"
        if len(done) != len(outcomes)
        else (f"total ({_stores(len(outcomes))})")
    )
    rows.append(
        [total, human_bytes(before), human_bytes(after), _signed_bytes(before - after),
         human_bytes(archived), sum(o.records for o in outcomes),
         sum(o.retired_files for o in outcomes), human_seconds(seconds), None]
    )  # fmt: skip
    headers = [
        "store", "disk before", "disk after", "reclaimed", "to archive", "records", "retired",
        "time", "result",
    ]  # fmt: skip
    head = f"Retention {retention.value}. Disk use counts each store's archive/"
    head += "; times include opening the stores." if outcomes else "."
    return head + "\n\n" + table(headers, rows, right=range(1, 8))


def _retention_effect(retention: Retention) -> str:
    if retention is Retention.ARCHIVE:
        return "move the compacted segments to archive/ (history stays)"
    return "delete the compacted segments (history before the snapshot is gone)"


def worst(codes: Sequence[ExitCode]) -> ExitCode:
    """The exit status of a run: its most serious problem, else OK."""
    for code in _SEVERITY:
        if code in codes:
            return code
    return ExitCode.OK


def cmd_compact(args: argparse.Namespace) -> int:
    """Compact the store or the stores of ``args.store`` (``logkv compact``)."""
    started = time.perf_counter()
    retention = resolve_retention(args.retention)
    root: Path = args.store
    stores = find_stores(root)
    bar = progress_choice(args)
    outcomes: list[Outcome] = []
    for path in stores:
        label = _label(path, root)
        if args.dry_run:
            try:
                with progress(f"reading {label}", enabled=bar):
                    outcome = estimate(
                        path, label, args.min_dead_ratio, args.snapshot_datasets, retention
                    )
            except (LogKVError, OSError) as exc:
                code = exit_code_for(exc)
                kind = "damaged" if code is ExitCode.DAMAGED else "failed"
                outcome = Outcome(label, kind, error=f"{label}: {describe(exc)}", code=code)
        else:
            outcome = compact_one(
                path, label, retention, args.min_dead_ratio, bar, args.snapshot_datasets
            )
        if outcome.error:
            print(f"{PROG}: error: {outcome.error}", file=sys.stderr)
        outcomes.append(outcome)
    status = worst([o.code for o in outcomes])
    seconds = time.perf_counter() - started
    if args.json:
        document = {
            "dry_run": args.dry_run,
            "retention": retention.value,
            "stores": [o.as_json() for o in outcomes],
            "total": {
                "stores": len(outcomes),
                "bytes_before": sum(o.bytes_before for o in outcomes),
                "bytes_after": sum(o.bytes_after for o in outcomes),
                "reclaimed": sum(o.reclaimed for o in outcomes),
                "archived": sum(o.archived for o in outcomes),
                "records": sum(o.records for o in outcomes),
                "retired_files": sum(o.retired_files for o in outcomes),
                "seconds": seconds,
            },
            "exit_code": int(status),
        }
        print(json_document(document))
    else:
        print(render_text(outcomes, retention, args.dry_run, seconds))
    return status


def _command(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.quiet and args.progress:
        raise CommandError("-q and --progress contradict each other", ExitCode.USAGE)
    args.store = locate_store(args.store, args.store_name, args.store_kind)
    return cmd_compact(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``logkv-compact``; returns the exit status."""
    return run(PROG, lambda: _command(argv))


if __name__ == "__main__":
    sys.exit(main())
