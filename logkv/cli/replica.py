"""``logkv restore URL DIR [--until SEQ|TIME]``: rebuild a store from its bucket copy in object
storage (see :mod:`logkv.replica.restore`); ``logkv replica-gc URL``: run retention in a bucket
copy (see :mod:`logkv.replica.retention`). Both need the ``s3`` extra."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ..configuration import Configuration
from ..errors import ReplicaError
from . import ExitCode
from .common import CommandError, parse_until, path_argument
from .render import json_document


def cmd_restore(args: argparse.Namespace) -> int:
    """Restore the store at ``args.url`` into the new folder ``args.target``."""
    try:
        from ..replica import (  # noqa: PLC0415 (the s3 extra: imported when used)
            open_replica_bucket,
            restore,
        )
    except ImportError:
        raise CommandError(
            "logkv restore needs the s3 extra: pip install 'logkv[s3]'", ExitCode.USAGE
        ) from None
    allow_http = args.allow_http or Configuration().replica_allow_http
    try:
        bucket = open_replica_bucket(args.url, allow_http=allow_http)
        until_seq, until_us = (None, None) if args.until is None else parse_until(args.until)
        result = restore(bucket, args.target, until_seq=until_seq, until_us=until_us)
    except ReplicaError as exc:
        raise CommandError(str(exc), ExitCode.USAGE) from None
    summary = {
        "folder": str(result.folder),
        "files": result.files,
        "bytes": result.bytes,
        "last_seq": result.last_seq,
    }
    if args.json:
        print(json_document(summary))
    elif not args.quiet:
        print(
            f"Restored {args.url} into {result.folder}: {result.files} file(s), "
            f"{result.bytes:,} bytes, records up to seq {result.last_seq}; it verifies."
        )
    return ExitCode.OK


def replication_lag(store: Path, local_seq: int) -> dict[str, Any] | None:
    """How far the bucket copy of ``store`` (under ``LOGKV_REPLICA_URL``) is behind its local
    log ending at ``local_seq``: ``records`` behind, and ``seconds``, an upper bound on the age
    of the oldest record not in the bucket (the age of the bucket's newest record; 0 when none
    is behind). None without a replica configured; ``error`` when the bucket cannot be read."""
    configuration = Configuration()
    if configuration.replica_url is None:
        return None
    try:
        from ..replica import parse_replica_url, store_bucket  # noqa: PLC0415 (the s3 extra)
        from ..replica.bucket import BucketUnavailable  # noqa: PLC0415
        from ..replica.slots import fold_slots  # noqa: PLC0415
        from ..storage_clients._replica import store_path  # noqa: PLC0415
    except ImportError:
        return {"error": "the s3 extra is not installed"}
    url = parse_replica_url(configuration.replica_url)
    bucket = store_bucket(
        url, store_path(store, configuration), allow_http=configuration.replica_allow_http
    )
    try:
        folded = fold_slots(bucket)
    except (ReplicaError, BucketUnavailable) as exc:
        return {"url": bucket.describe, "error": str(exc)}
    behind = max(0, local_seq - folded.seq)
    age = time.time() - folded.last_us / 1e6 if folded.last_us else 0.0
    return {
        "url": bucket.describe,
        "records": behind,
        "seconds": round(max(0.0, age), 3) if behind else 0.0,
        "bucket_seq": folded.seq,
    }


def cmd_replica_gc(args: argparse.Namespace) -> int:
    """Run retention over the bucket copy at ``args.url``."""
    try:
        from ..replica import (  # noqa: PLC0415 (the s3 extra: imported when used)
            RetentionPolicy,
            open_replica_bucket,
            retire,
        )
        from ..replica.slots import fold_slots  # noqa: PLC0415
    except ImportError:
        raise CommandError(
            "logkv replica-gc needs the s3 extra: pip install 'logkv[s3]'", ExitCode.USAGE
        ) from None
    configuration = Configuration()
    policy = RetentionPolicy(
        configuration.replica_keep_snapshots
        if args.keep_snapshots is None
        else args.keep_snapshots,
        configuration.replica_keep_for if args.keep_for is None else args.keep_for,
        configuration.replica_grace if args.grace is None else args.grace,
    )
    allow_http = args.allow_http or configuration.replica_allow_http
    try:
        bucket = open_replica_bucket(args.url, allow_http=allow_http)
        folded = fold_slots(bucket)
        if folded.number == 0:
            raise CommandError(
                f"{bucket.describe}: no store was ever replicated here", ExitCode.USAGE
            )
        result = retire(bucket, folded, policy, dry_run=args.dry_run)
    except ReplicaError as exc:
        raise CommandError(str(exc), ExitCode.USAGE) from None
    summary = {
        "kept": [folded.snapshots.get(c, (0, 0))[0] for c in result.kept],
        "retired": len(result.retired),
        "deleted": len(result.deleted),
        "dry_run": args.dry_run,
    }
    if args.json:
        print(json_document(summary))
    elif not args.quiet:
        verb = "would retire" if args.dry_run else "retired"
        print(
            f"{args.url}: {len(result.kept)} restore point(s) kept (from seq "
            f"{', '.join(str(s) for s in summary['kept'])}); {verb} {len(result.retired)} "
            f"object(s), {'would delete' if args.dry_run else 'deleted'} "
            f"{len(result.deleted)} retired at least {policy.grace:g} s ago."
        )
    return ExitCode.OK


def _bucket_command(commands: Any, name: str, text: str, epilog: str) -> argparse.ArgumentParser:
    """A subcommand ``name URL ...`` of one store's bucket copy."""
    sub: argparse.ArgumentParser = commands.add_parser(
        name, help=text, description=text, epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    sub.add_argument("url", metavar="URL", help="the store's bucket copy (s3://...)")
    return sub


def _output_and_endpoint_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--allow-http",
        action="store_true",
        help="allow a plain http:// endpoint (also LOGKV_REPLICA_ALLOW_HTTP=1)",
    )
    sub.add_argument("--json", action="store_true", help="print a JSON summary")
    sub.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")


def add_commands(commands: Any, epilog: str) -> None:
    """Add ``restore`` and ``replica-gc`` to the ``logkv`` subparsers ``commands``."""
    text = (
        "Restore a store from its bucket copy (s3://BUCKET/PREFIX/key_value_stores/NAME, the "
        "endpoint and credentials from the AWS_* variables) into a new folder: the newest "
        "snapshot at or before the target, then the segments after it (a gap is refused), "
        "verified, then renamed into place in one step."
    )
    sub = _bucket_command(commands, "restore", text, epilog)
    sub.add_argument(
        "target", type=path_argument, metavar="DIR", help="the new store folder (absent or empty)"
    )
    sub.add_argument(
        "--until",
        metavar="SEQ|TIME",
        help="restore the store as it was after this sequence number, or at this ISO 8601 time "
        "(2026-01-31T12:00:00Z; no offset means UTC)",
    )
    _output_and_endpoint_options(sub)
    sub.set_defaults(handler=cmd_restore)

    text = (
        "Run retention in a store's bucket copy (s3://BUCKET/PREFIX/key_value_stores/NAME): "
        "keep the restore points (snapshots) that are among the --keep-snapshots newest or "
        "younger than --keep-for seconds, retire the objects no kept point needs (a marker "
        "readers honour), and delete those retired at least --grace seconds ago; every 1000 "
        "slots, write a checkpoint that cold readers start folding from. Slots are never "
        "deleted (they fence stale writers). Safe beside a running writer, which runs the same "
        "retention after each compaction. Defaults: LOGKV_REPLICA_KEEP_SNAPSHOTS, "
        "LOGKV_REPLICA_KEEP_FOR, LOGKV_REPLICA_GRACE."
    )
    sub = _bucket_command(commands, "replica-gc", text, epilog)
    sub.add_argument("--keep-snapshots", type=int, metavar="N", help="restore points kept by count")
    sub.add_argument("--keep-for", type=float, metavar="SECONDS", help="restore points kept by age")
    sub.add_argument("--grace", type=float, metavar="SECONDS", help="delay before deleting")
    sub.add_argument("--dry-run", action="store_true", help="say what would be done, do nothing")
    _output_and_endpoint_options(sub)
    sub.set_defaults(handler=cmd_replica_gc)
