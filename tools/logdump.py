"""Dump a logkv store's records as JSON lines, for humans.

Usage::

    python -m tools.logdump STORE [--values] [--history]

A thin command over :mod:`logkv.cli.dump`, which documents what is dumped and the fields of
each line; ``logkv dump --json`` prints the same lines. ``STORE`` is a store folder or one data
file (a segment, a snapshot, or a ``.damaged`` copy kept by salvage).

The dump only reads: it takes no lock, so it works beside a live writer. Exit status: 0 when the
store is intact (a torn tail, which the next writable open cuts off, is reported but is not an
error), 1 when a corrupt spot or a chain break was found, 2 when something could not be read,
3 when a live writer's compaction retired a file before the dump read it (run it again).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from logkv.cli.dump import DumpStatus, dump


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.logdump",
        description="Dump a logkv store's records as JSON lines (read-only; works beside a "
        "live writer). Exit status 1 when corrupt data was found.",
    )
    parser.add_argument("store", type=Path, help="a store folder, or one segment or snapshot file")
    parser.add_argument(
        "--values", action="store_true", help="include values (UTF-8 text, else base64)"
    )
    parser.add_argument(
        "--history",
        action="store_true",
        help="dump the archived and current segments (every record kept) instead of the "
        "newest snapshot and the segments after it",
    )
    args = parser.parse_args(argv)
    if not args.store.exists():
        print(f"logdump: {args.store} does not exist", file=sys.stderr)
        return 2
    status = dump(args.store, args.values, sys.stdout, history=args.history)
    if status is DumpStatus.DAMAGED:
        print(f"logdump: corrupt data found in {args.store} (see the error lines)", file=sys.stderr)
    return int(status)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # piped into head: stop quietly
        sys.stderr.close()
        sys.exit(0)
