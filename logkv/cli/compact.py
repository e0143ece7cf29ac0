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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from tqdm import tqdm

from ..compaction import CompactionResult, Progress
from ..engine import Engine, EngineStats
from ..errors import LogKVError, StoreLockedError
from ..format import SEGMENT_HEADER_SIZE
from ..layout import list_segments
from ..modes import Retention
from . import ExitCode
from .common import (
    CommandError,
    add_output_options,
    describe,
    exit_code_for,
    find_stores,
    path_argument,
    run,
)
from .contents import storage_type
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
    """What happened to one store (``bytes_*`` are its data files; estimates in a dry run)."""

    path: str
    status: str
    bytes_before: int = 0
    bytes_after: int = 0
    records: int = 0
    retired_files: int = 0
    seconds: float = 0.0
    live_bytes: int = 0
    dead_bytes: int = 0
    keys: int = 0
    error: str | None = None
    code: ExitCode = ExitCode.OK

    @classmethod
    def of(cls, path: str, status: str, stats: EngineStats) -> Outcome:
        """An outcome that starts from a store's figures: nothing reclaimed yet."""
        return cls(
            path,
            status,
            bytes_before=stats.disk_bytes,
            bytes_after=stats.disk_bytes,
            live_bytes=stats.live_bytes,
            dead_bytes=stats.dead_bytes,
            keys=stats.keys,
        )

    @property
    def reclaimed(self) -> int:
        """Bytes given back (estimated in a dry run)."""
        return self.bytes_before - self.bytes_after

    def as_json(self) -> dict[str, Any]:
        """The outcome for ``--json``."""
        data = asdict(self)
        data["reclaimed"] = self.reclaimed
        data["code"] = int(self.code)
        return data


def build_parser() -> argparse.ArgumentParser:
    """The ``logkv-compact`` argument parser."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "store",
        type=path_argument,
        metavar="STORE",
        help="a store folder, or a storage folder of stores",
    )
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
    add_output_options(parser, "print one JSON document")
    return parser


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


def estimate(path: Path, label: str, min_dead_ratio: float, datasets: bool = False) -> Outcome:
    """A dry run for one store: its figures now and the size a compaction would leave
    (``datasets``: as :func:`compact_one`)."""
    with Engine.open(path, readonly=True) as engine:
        stats = engine.stats()
        key_bytes = sum(len(key.encode("utf-8", "surrogatepass")) for key in engine.keys(None))
        pending = _log_after_snapshot(path, stats.snapshot_covers)
    outcome = Outcome.of(label, "would compact", stats)
    if pending == 0:
        outcome.status = "nothing to compact"
    elif not datasets and _append_only_without_dead(path, stats):
        outcome.status = f"would skip ({APPEND_ONLY_NOTE})"
    elif _dead_ratio(stats.live_bytes, stats.dead_bytes) < min_dead_ratio:
        outcome.status = "would skip (few dead bytes)"
    else:
        snapshot = _SNAPSHOT_FIXED + stats.live_bytes + key_bytes + _HINT_PER_KEY * stats.keys
        outcome.bytes_after = min(snapshot + SEGMENT_HEADER_SIZE, stats.disk_bytes)
    return outcome


@contextmanager
def progress_bar(label: str, total: int, enabled: bool | None) -> Iterator[Progress]:
    """A compaction progress callback that drives a tqdm bar on stderr (``enabled`` None: only
    when stderr is a terminal)."""
    disable = None if enabled is None else not enabled  # tqdm: None = off unless a terminal
    with tqdm(
        desc=label, total=total, unit="rec", file=sys.stderr, disable=disable, leave=False
    ) as bar:

        def report(done: int, total: int) -> None:
            if bar.total != total:
                bar.total = total
            bar.update(done - bar.n)

        yield report


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
        with Engine.open(path, create=False, retention=retention) as engine:
            stats = engine.stats()
            base = Outcome.of(label, "compacted", stats)
            if not datasets and _append_only_without_dead(path, stats):
                base.status = f"skipped ({APPEND_ONLY_NOTE})"
                return base
            if _dead_ratio(stats.live_bytes, stats.dead_bytes) < min_dead_ratio:
                base.status = "skipped (few dead bytes)"
                return base
            with progress_bar(label, stats.keys, bar) as report:
                result = engine.compact(retention, progress=report)
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
    return _from_result(base, result)


def _from_result(base: Outcome, result: CompactionResult) -> Outcome:
    base.status = "; ".join(result.notes) if result.notes else "compacted"
    base.bytes_before = result.bytes_before
    base.bytes_after = result.bytes_after
    base.records = result.records
    base.retired_files = result.retired_files
    base.seconds = result.seconds
    return base


def _label(path: Path, root: Path) -> str:
    if path == root:
        return str(path)
    return str(path.relative_to(root))


def render_text(outcomes: list[Outcome], retention: Retention, dry_run: bool) -> str:
    """The human-readable summary: one row per store and a total."""
    before = sum(o.bytes_before for o in outcomes)
    after = sum(o.bytes_after for o in outcomes)
    if dry_run:
        rows: list[list[str | int | None]] = [
            [
                o.path,
                human_bytes(o.bytes_before),
                human_bytes(o.live_bytes),
                human_bytes(o.dead_bytes),
                f"{100 * _dead_ratio(o.live_bytes, o.dead_bytes):.0f}%",
                human_bytes(o.bytes_after),
                human_bytes(o.reclaimed),
                o.status,
            ]
            if o.code is ExitCode.OK
            else [o.path, None, None, None, None, None, None, o.status]
            for o in outcomes
        ]
        rows.append(
            [f"total ({len(outcomes)} stores)", human_bytes(before), None, None, None,
             human_bytes(after), human_bytes(before - after), None]
        )  # fmt: skip
        headers = ["store", "log bytes", "live", "dead", "dead %", "est. after", "est. reclaim"]
        head = (
            f"Dry run (nothing was changed). With retention {retention.value}, compaction "
            f"would {_retention_effect(retention)}."
        )
        return head + "\n\n" + table([*headers, "result"], rows, right=range(1, 7))
    rows = [
        [
            o.path,
            human_bytes(o.bytes_before),
            human_bytes(o.bytes_after),
            human_bytes(o.reclaimed),
            o.records,
            o.retired_files,
            human_seconds(o.seconds),
            o.status,
        ]
        if o.code is ExitCode.OK
        else [o.path, None, None, None, None, None, None, o.status]
        for o in outcomes
    ]
    done = [o for o in outcomes if o.code is ExitCode.OK]
    rows.append(
        [f"total ({len(done)} of {len(outcomes)} stores)", human_bytes(before), human_bytes(after),
         human_bytes(before - after), sum(o.records for o in outcomes),
         sum(o.retired_files for o in outcomes),
         human_seconds(sum(o.seconds for o in outcomes)), None]
    )  # fmt: skip
    headers = ["store", "before", "after", "reclaimed", "records", "retired", "time", "result"]
    return f"Retention {retention.value}.\n\n" + table(headers, rows, right=range(1, 7))


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


def _command(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    retention = resolve_retention(args.retention)
    root: Path = args.store
    stores = find_stores(root)
    bar: bool | None = False if args.quiet else (True if args.progress else None)
    outcomes: list[Outcome] = []
    for path in stores:
        label = _label(path, root)
        if args.dry_run:
            try:
                outcome = estimate(path, label, args.min_dead_ratio, args.snapshot_datasets)
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
                "records": sum(o.records for o in outcomes),
                "retired_files": sum(o.retired_files for o in outcomes),
                "seconds": sum(o.seconds for o in outcomes),
            },
            "exit_code": int(status),
        }
        print(json_document(document))
    else:
        print(render_text(outcomes, retention, args.dry_run))
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``logkv-compact``; returns the exit status."""
    return run(PROG, lambda: _command(argv))


if __name__ == "__main__":
    sys.exit(main())
