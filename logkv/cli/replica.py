"""``logkv restore URL DIR [--until SEQ|TIME]``: rebuild a store from its bucket copy in object
storage (see :mod:`logkv.replica.restore`). Needs the ``s3`` extra."""

from __future__ import annotations

import argparse
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


def add_commands(commands: Any, epilog: str) -> None:
    """Add ``restore`` to the ``logkv`` subparsers ``commands``."""
    text = (
        "Restore a store from its bucket copy (s3://BUCKET/PREFIX/key_value_stores/NAME, the "
        "endpoint and credentials from the AWS_* variables) into a new folder: the newest "
        "snapshot at or before the target, then the segments after it (a gap is refused), "
        "verified, then renamed into place in one step."
    )
    sub = commands.add_parser(
        "restore", help=text, description=text, epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    sub.add_argument("url", metavar="URL", help="the store's bucket copy (s3://...)")
    sub.add_argument(
        "target", type=path_argument, metavar="DIR", help="the new store folder (absent or empty)"
    )
    sub.add_argument(
        "--until",
        metavar="SEQ|TIME",
        help="restore the store as it was after this sequence number, or at this ISO 8601 time "
        "(2026-01-31T12:00:00Z; no offset means UTC)",
    )
    sub.add_argument(
        "--allow-http",
        action="store_true",
        help="allow a plain http:// endpoint (also LOGKV_REPLICA_ALLOW_HTTP=1)",
    )
    sub.add_argument("--json", action="store_true", help="print a JSON summary")
    sub.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    sub.set_defaults(handler=cmd_restore)
