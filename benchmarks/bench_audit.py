"""Audits straight from the bucket: ``stats``, ``verify`` and ``history`` of one key on a
store's bucket copy, read by ranges, against the same commands on its local folder.

A store of 100,000 keys (~300-byte values) is written with replication on to a local S3
protocol server (moto, in a process of its own on 127.0.0.1), compacted, and then a tenth of its
keys are overwritten (a tail of segments after the snapshot), as a long-running crawler's store
looks. For each command: the time on the folder, the time from the bucket, and the bytes and
GET requests the bucket served, against the bytes of the committed files.

Run from the repository root: ``python -m benchmarks.bench_audit`` (writes results/audit.md)
or ``--quick`` (20,000 keys; prints only).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from logkv import Engine
from logkv.cli.audit import key_changes, store_figures, verify_store
from logkv.replica import Replica
from logkv.replica.remote import BucketFiles, remote_store

from .bench_replica import bucket_for, moto_server, new_root
from .harness import REPO_ROOT, Report, Run, Script, check, mib, positive_int, results_file, section

SCRIPT = Script(
    module="bench_audit",
    description=__doc__.split("\n\n")[0],
    default_out=REPO_ROOT / "benchmarks" / "results" / "audit.md",
)
VALUE_SIZE = 300


def written(folder: Path, root: str, keys: int) -> Any:
    """Write the store (see the module docstring) and replicate it; its bucket path."""
    bucket = bucket_for(root, "audited")
    replica = Replica.claim(bucket, folder, 1.0)
    with Engine.open(folder) as engine:
        replica.start(engine)
        for i in range(keys):
            engine.set(f"k{i:09d}", os.urandom(VALUE_SIZE))
        engine.compact()
        for i in range(0, keys, 10):
            engine.set(f"k{i:09d}", os.urandom(VALUE_SIZE))
        replica.flush(600)
    replica.close(60)
    return bucket


def timed(command: Callable[[Path], Any], path: Path) -> tuple[float, Any]:
    started = time.perf_counter()
    result = command(path)
    return time.perf_counter() - started, result


def measure(args: argparse.Namespace, run: Run) -> str:
    keys = args.keys or (20_000 if run.quick else 100_000)
    report = Report()
    with moto_server() as endpoint, run.scratch() as scratch:
        folder = scratch / "audited"
        print(f"writing and replicating a store of {keys:,} keys", flush=True)
        bucket = written(folder, new_root(endpoint), keys)
        data = [p for p in folder.iterdir() if p.suffix in (".seg", ".snap")]
        total = sum(p.stat().st_size for p in data)
        report.add("store", f"{keys:,} keys, {mib(total)} in {len(data)} data files")
        key = f"k{keys // 2 + 1:09d}"
        commands: list[tuple[str, Callable[[Path], Any]]] = [
            ("stats", store_figures),
            ("verify", verify_store),
            (f"history {key}", lambda path: key_changes(path, key)),
        ]
        for name, command in commands:
            print(name, flush=True)
            local_s, local = timed(command, folder)
            with remote_store(bucket) as source:
                remote_s, remote = timed(command, source)
                files = source.files
                assert isinstance(files, BucketFiles)
                fetched, requests = files.counts.bytes, files.counts.requests
            check(
                repr(remote)
                == repr(local).replace(str(folder), str(source)).replace("PosixPath", "SourcePath"),
                f"{name}: the bucket's answer differs from the folder's",
            )
            report.add(f"{name}: folder", f"{local_s * 1000:,.0f} ms")
            report.add(f"{name}: bucket", f"{remote_s * 1000:,.0f} ms ({remote_s / local_s:.1f}x)")
            report.add(
                f"{name}: fetched",
                f"{mib(fetched)} in {requests:,} GETs ({fetched / total:.2f}x the store)",
            )
    summary = (
        "stats, verify and history of one key on a store's bucket copy (moto, its own process), "
        "read by ranges, against the same commands on the store's folder."
    )
    return results_file(
        run,
        "Audits from the bucket",
        summary,
        section("Results", report.table()),
        method=[
            "The answers from the bucket are checked equal to the folder's (paths aside).",
            "Fetched: the bytes the GETs returned (whole objects and ranges), counted by the "
            "file set; a GET is one data object or one range of one.",
            "The folder's files are in the page cache (just written); the moto server runs on "
            "the same machine and is slower per request than a real endpoint.",
        ],
        notes=report.notes,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = SCRIPT.parser()
    parser.add_argument("--keys", type=positive_int, default=None, help="keys of the store")
    return SCRIPT.main(argv, parser, measure)


if __name__ == "__main__":
    raise SystemExit(main())
