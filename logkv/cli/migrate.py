"""``logkv migrate`` and ``logkv export-crawlee``: a whole storage folder from Crawlee's
file-system layout to logkv, and back, all or nothing (see :mod:`logkv.migrate`)."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from ..migrate import DamagedStoreError, Format, MigrationError, StoreInUseError
from . import ExitCode
from .common import CommandError, path_argument, progress_choice
from .render import json_document

if TYPE_CHECKING:
    from ..migrate_run import MigrationReport


def _run(args: argparse.Namespace, to: Format) -> int:
    from ..migrate_run import migrate_storage  # noqa: PLC0415 (needs Crawlee: when used)

    # Crawlee warns that its event manager (which a file-system queue needs) was made
    # implicitly: true, and of no concern to the user of this command.
    logging.getLogger("crawlee").setLevel(logging.ERROR)
    bar = progress_choice(args)
    try:
        report = migrate_storage(args.storage_dir, to=to, dry_run=args.dry_run, bar=bar)
    except StoreInUseError as exc:
        raise CommandError(str(exc), ExitCode.LOCKED) from None
    except DamagedStoreError as exc:
        raise CommandError(str(exc), ExitCode.DAMAGED) from None
    except MigrationError as exc:
        raise CommandError(str(exc), ExitCode.USAGE) from None
    if args.json:
        print(json_document(asdict(report)))
        return ExitCode.OK
    _print(report)
    return ExitCode.OK


def _print(report: MigrationReport) -> None:
    if report.recovered:
        print(f"An earlier migration was interrupted: {report.recovered}.", file=sys.stderr)
    if report.dry_run:
        print(f"Would migrate {report.storage_dir} {report.direction} "
              f"(originals kept in {report.backup}):")  # fmt: skip
    else:
        print(f"Migrated {report.storage_dir} {report.direction}: {report.stores} store(s), "
              f"{report.records:,} records, items and requests:")  # fmt: skip
    for line in report.lines:
        print(f"  {line}")
    if not report.dry_run:
        print(f"The originals are in {report.backup}; remove that folder when you no longer "
              "need them.")  # fmt: skip


def cmd_migrate(args: argparse.Namespace) -> int:
    """Convert a Crawlee file-system storage folder to logkv."""
    return _run(args, "logkv")


def cmd_export_crawlee(args: argparse.Namespace) -> int:
    """Convert a logkv storage folder to Crawlee's file-system layout."""
    return _run(args, "crawlee")


def add_commands(commands: Any, epilog: str) -> None:
    """Add ``migrate`` and ``export-crawlee`` to the ``logkv`` subparsers ``commands``."""
    specs = (
        ("migrate", cmd_migrate,
         "Convert every Crawlee file-system key-value store, dataset and request queue of a "
         "storage folder to logkv, all or nothing; the originals are kept in "
         "STORAGE_DIR.crawlee-backup."),
        ("export-crawlee", cmd_export_crawlee,
         "Convert every logkv store of a storage folder to Crawlee's file-system layout, all "
         "or nothing; the originals are kept in STORAGE_DIR.logkv-backup."),
    )  # fmt: skip
    for name, handler, text in specs:
        sub = commands.add_parser(
            name, help=text, description=text, epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )  # fmt: skip
        sub.add_argument(
            "storage_dir", type=path_argument, metavar="STORAGE_DIR",
            help="the storage folder (Crawlee's storage_dir); stop the crawler first",
        )  # fmt: skip
        sub.add_argument(
            "--dry-run", action="store_true", help="list what would move; change nothing"
        )
        sub.set_defaults(handler=handler)
