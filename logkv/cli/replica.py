"""``logkv restore URL DIR [--until SEQ]``: rebuild a store from its bucket copy in object
storage (see :mod:`logkv.replica.restore`). Needs the ``s3`` extra."""

from __future__ import annotations

import argparse
from typing import Any

from ..configuration import Configuration
from ..errors import ReplicaError
from . import ExitCode
from .common import CommandError, path_argument
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
        result = restore(bucket, args.target, until_seq=args.until)
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


def _seq(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a sequence number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("a sequence number is 0 or more")
    return value


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
        "--until", type=_seq, metavar="SEQ", help="restore the store as it was at this seq"
    )
    sub.add_argument(
        "--allow-http",
        action="store_true",
        help="allow a plain http:// endpoint (also LOGKV_REPLICA_ALLOW_HTTP=1)",
    )
    sub.add_argument("--json", action="store_true", help="print a JSON summary")
    sub.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    sub.set_defaults(handler=cmd_restore)
