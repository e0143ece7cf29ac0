"""The commands on a store's bucket copy in object storage (needs the ``s3`` extra):
``logkv restore URL DIR [--until SEQ|TIME]`` rebuilds a store from it
(:mod:`logkv.replica.restore`), ``logkv follow URL DIR`` keeps a read-only copy that tails it
(:mod:`logkv.replica.follow`), ``logkv replica-gc URL`` runs retention in it
(:mod:`logkv.replica.retention`), :func:`audit_bucket` runs ``get``, ``keys``, ``stats``,
``verify``, ``history``, ``replay`` and ``dump`` on it (:mod:`logkv.replica.remote`), and
:func:`replication_lag` says how far it is behind a local store."""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..configuration import Configuration
from ..errors import ReplicaDivergedError, ReplicaError, ReplicaGapError
from . import ExitCode
from .common import CommandError, parse_until, path_argument, run
from .render import json_document

if TYPE_CHECKING:
    from ..replica import Bucket

_NEEDS_S3 = "needs the s3 extra: pip install 'logkv[s3]'"


def _bucket(url: str, allow_http: bool, command: str) -> Bucket:
    """The bucket path of the store copy at ``url`` (a usage error when it is no good URL,
    or the s3 extra is missing)."""
    try:
        from ..replica import open_replica_bucket  # noqa: PLC0415 (the s3 extra)
    except ImportError:
        raise CommandError(f"logkv {command} {_NEEDS_S3}", ExitCode.USAGE) from None
    allow_http = allow_http or Configuration().replica_allow_http
    try:
        return open_replica_bucket(url, allow_http=allow_http)
    except ReplicaError as exc:
        raise CommandError(str(exc), ExitCode.USAGE) from None


def _bucket_failure(exc: Exception) -> CommandError:
    """The error of a command on a bucket copy that failed: damage (exit 1) for a gap or a
    damaged object, a usage error (exit 2) for a folder that is no copy of it, else another
    failure (exit 4: unreachable, refused)."""
    if isinstance(exc, ReplicaGapError):
        return CommandError(f"the bucket copy is damaged: {exc}", ExitCode.DAMAGED)
    if isinstance(exc, ReplicaDivergedError):
        return CommandError(str(exc), ExitCode.USAGE)
    return CommandError(f"cannot read the bucket copy: {exc}", ExitCode.FAILED)


def audit_bucket(args: argparse.Namespace, handler: Callable[[argparse.Namespace], int],
                 prog: str) -> int:  # fmt: skip
    """Run the audit command ``handler`` on the store copy at the URL ``args.store``: the
    same readers read its committed files from the bucket by ranges (:func:`remote_store`),
    with the same output and exit status as on a folder (the folder shown as the URL)."""
    url: str = args.store
    bucket = _bucket(url, False, args.command)
    from ..replica.bucket import BucketUnavailable  # noqa: PLC0415 (the s3 extra)
    from ..replica.remote import remote_store  # noqa: PLC0415

    def audit() -> int:
        try:
            return handler(args)
        except (ReplicaError, BucketUnavailable) as exc:  # met while reading the files
            raise _bucket_failure(exc) from None

    try:
        with remote_store(bucket) as folder:
            args.store = folder
            return run(prog, audit)
    except (ReplicaError, BucketUnavailable) as exc:
        raise _bucket_failure(exc) from None


def cmd_restore(args: argparse.Namespace) -> int:
    """Restore the store at ``args.url`` into the new folder ``args.target``."""
    bucket = _bucket(args.url, args.allow_http, "restore")
    from ..replica import restore  # noqa: PLC0415 (the s3 extra: imported when used)

    try:
        until_seq, until_us = (None, None) if args.until is None else parse_until(args.until)
        result = restore(bucket, args.target, until_seq=until_seq, until_us=until_us)
    except ReplicaGapError as exc:  # damage, as for the audits
        raise _bucket_failure(exc) from None
    except ReplicaError as exc:  # not retained, not a copy, a folder in the way
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


def cmd_follow(args: argparse.Namespace) -> int:
    """Keep ``args.target`` a read-only copy of the store at ``args.url``: catch up once
    (``--once``), or every interval until interrupted."""
    bucket = _bucket(args.url, args.allow_http, "follow")
    from ..replica.bucket import BucketUnavailable  # noqa: PLC0415 (the s3 extra)
    from ..replica.follow import Follower  # noqa: PLC0415

    interval = args.interval if args.interval is not None else Configuration().replica_interval
    try:
        with Follower(bucket, args.target) as follower:
            if not args.once:
                follower.run(interval, threading.Event())
            seq = follower.catch_up()
    except (ReplicaError, BucketUnavailable) as exc:
        raise _bucket_failure(exc) from None
    if args.json:
        print(json_document({"folder": str(args.target), "last_seq": seq}))
    elif not args.quiet:
        print(f"{args.target} holds the records of {args.url} up to seq {seq}.")
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
    bucket = _bucket(args.url, args.allow_http, "replica-gc")
    from ..replica import RetentionPolicy, retire  # noqa: PLC0415 (the s3 extra)
    from ..replica.bucket import BucketUnavailable  # noqa: PLC0415
    from ..replica.slots import fold_slots  # noqa: PLC0415

    configuration = Configuration()
    policy = RetentionPolicy(
        configuration.replica_keep_snapshots
        if args.keep_snapshots is None
        else args.keep_snapshots,
        configuration.replica_keep_for if args.keep_for is None else args.keep_for,
        configuration.replica_grace if args.grace is None else args.grace,
    )
    try:
        folded = fold_slots(bucket)
        if folded.number == 0:
            raise CommandError(
                f"{bucket.describe}: no store was ever replicated here", ExitCode.USAGE
            )
        result = retire(bucket, folded, policy, dry_run=args.dry_run)
    except (ReplicaError, BucketUnavailable) as exc:
        raise _bucket_failure(exc) from None
    summary = {
        "kept": [folded.snapshots.get(c, (0, 0))[0] for c in result.kept],
        "retired": len(result.retired),
        "deleted": len(result.deleted),
        "checkpoint": result.checkpoint,
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


def add_commands(commands: Any, epilog: str) -> None:
    """Add ``restore``, ``follow`` and ``replica-gc`` to the ``logkv`` subparsers
    ``commands``."""
    sub = _add_command(
        commands,
        "restore",
        "Restore a store from its bucket copy (s3://BUCKET/PREFIX/key_value_stores/NAME, the "
        "endpoint and credentials from the AWS_* variables) into a new folder: the newest "
        "snapshot at or before the target, then the segments after it (a gap is refused), "
        "verified, then renamed into place in one step.",
        epilog,
        "the new store folder (absent or empty)",
    )
    sub.add_argument(
        "--until",
        metavar="SEQ|TIME",
        help="restore the store as it was after this sequence number, or at this ISO 8601 time "
        "(2026-01-31T12:00:00Z; no offset means UTC)",
    )
    sub.set_defaults(handler=cmd_restore)
    sub = _add_command(
        commands,
        "follow",
        "Keep a read-only copy of a store on this machine that tails its bucket copy "
        "(s3://BUCKET/PREFIX/key_value_stores/NAME): new committed records are appended to its "
        "files every interval, new snapshots applied; open it read-only beside this command. "
        "Never writes to the bucket; a gap in the bucket copy (exit 1) or a folder holding "
        "other bytes (exit 2) stops it.",
        epilog,
        "the copy (created when missing)",
    )
    sub.add_argument("--once", action="store_true", help="catch up once and exit")
    sub.add_argument(
        "--interval",
        type=float,
        metavar="SECONDS",
        help="seconds between polls (default: LOGKV_REPLICA_INTERVAL, 1)",
    )
    sub.set_defaults(handler=cmd_follow)
    sub = _add_command(
        commands,
        "replica-gc",
        "Run retention in a store's bucket copy (s3://BUCKET/PREFIX/key_value_stores/NAME): "
        "keep the restore points (snapshots) that are among the --keep-snapshots newest or "
        "younger than --keep-for seconds, retire the objects no kept point needs (a marker "
        "readers honour), and delete those retired at least --grace seconds ago; every 1000 "
        "slots, write a checkpoint that cold readers start folding from. Slots are never "
        "deleted (they fence stale writers). Safe beside a running writer, which runs the same "
        "retention after each compaction. Defaults: LOGKV_REPLICA_KEEP_SNAPSHOTS, "
        "LOGKV_REPLICA_KEEP_FOR, LOGKV_REPLICA_GRACE.",
        epilog,
        None,
    )
    sub.add_argument("--keep-snapshots", type=int, metavar="N", help="restore points kept by count")
    sub.add_argument("--keep-for", type=float, metavar="SECONDS", help="restore points kept by age")
    sub.add_argument("--grace", type=float, metavar="SECONDS", help="delay before deleting")
    sub.add_argument("--dry-run", action="store_true", help="say what would be done, do nothing")
    sub.set_defaults(handler=cmd_replica_gc)


def _add_command(commands: Any, name: str, text: str, epilog: str, target: str | None) -> Any:
    """A subcommand taking a bucket copy's URL and a local folder (described by ``target``;
    None: none), with the options every such command has."""
    sub = commands.add_parser(
        name, help=text, description=text, epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    sub.add_argument("url", metavar="URL", help="the store's bucket copy (s3://...)")
    if target is not None:
        sub.add_argument("target", type=path_argument, metavar="DIR", help=target)
    sub.add_argument(
        "--allow-http",
        action="store_true",
        help="allow a plain http:// endpoint (also LOGKV_REPLICA_ALLOW_HTTP=1)",
    )
    return sub
