"""``logkv migrate`` and ``logkv export-crawlee`` as a function: check the storage folder,
build the converted folder, swap it in (see :mod:`logkv.migrate`)."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .migrate import (
    CRAWLEE_BACKUP_SUFFIX,
    LOGKV_BACKUP_SUFFIX,
    Format,
    MigrationError,
    Survey,
    backup_path,
    fsync_tree,
    locked,
    recover,
    staging_path,
    survey,
    swap_in,
)
from .migrate_sources import entry_files, record_files, user_records
from .migrate_stores import build_crawlee, build_logkv


@dataclass
class MigrationReport:
    """What a migration did (or, dry, would do)."""

    storage_dir: str
    backup: str | None
    direction: str
    dry_run: bool
    recovered: str | None
    lines: list[str]
    stores: int = 0
    records: int = 0


def _nothing(step: str) -> None:
    del step


def _plan(survey: Survey, source_format: Format) -> list[str]:
    """One line per store that would be converted or copied."""
    lines = []
    for store in survey.stores:
        verb = "convert" if store.format == source_format else "copy as it is"
        count = ""
        if store.format == "crawlee" and store.storage == "key_value_store":
            records = len(user_records(store.path))
            state = len(record_files(store.path)) - records
            count = f" ({records:,} records" + (f", {state} of queue state)" if state else ")")
        elif store.format == "crawlee":
            count = f" ({len(entry_files(store.path)):,} files)"
        lines.append(f"{verb}: {store.storage} {store.name} ({store.format}){count}")
    return lines


def migrate_storage(
    storage_dir: Path,
    *,
    to: Format,
    dry_run: bool = False,
    bar: bool | None = None,
    checkpoint: Callable[[str], None] = _nothing,
) -> MigrationReport:
    """Convert every store of the storage folder ``storage_dir`` to ``to`` (``"logkv"`` or
    ``"crawlee"``), all or nothing (see :mod:`logkv.migrate`); ``checkpoint`` is called with
    the name of each step reached (tests stop the process there)."""
    if to not in ("logkv", "crawlee"):
        raise ValueError(f"to must be 'logkv' or 'crawlee', not {to!r}")
    storage_dir = Path(os.path.abspath(storage_dir))
    source_format: Format = "crawlee" if to == "logkv" else "logkv"
    target_words = {"logkv": "logkv", "crawlee": "Crawlee file-system"}[to]
    recovered = None if dry_run else recover(storage_dir)
    found = survey(storage_dir)
    if not found.stores:
        raise MigrationError(f"{storage_dir} holds no stores: there is nothing to migrate")
    if not found.of(source_format):
        raise MigrationError(f"{storage_dir} holds {target_words} stores only: nothing to do")
    suffix = CRAWLEE_BACKUP_SUFFIX if to == "logkv" else LOGKV_BACKUP_SUFFIX
    backup = backup_path(storage_dir, suffix)
    if backup.exists():
        raise MigrationError(
            f"{backup} exists (the originals of an earlier migration?); remove or rename it first"
        )
    report = MigrationReport(
        str(storage_dir), str(backup), f"to {to}", dry_run, recovered, _plan(found, source_format)
    )
    if dry_run:
        return report
    staging = staging_path(storage_dir)
    build = build_logkv if to == "logkv" else build_crawlee
    # logkv stores are copied or read by their records, never opened: they are locked here.
    to_lock = found.of("logkv")
    with locked(to_lock):
        staging.mkdir()
        try:
            result = asyncio.run(build(found, staging, bar, checkpoint))
            checkpoint("built")
            fsync_tree(staging)
            checkpoint("synced")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        swap_in(storage_dir, staging, backup, checkpoint)
    report.lines = result.lines
    report.stores, report.records = result.stores, result.records
    return report
