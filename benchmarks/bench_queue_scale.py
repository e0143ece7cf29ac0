"""A request queue of a million requests: add them, reopen the queue from its log and from a
snapshot, fetch the first request, and measure the memory each pending request costs.

Run: ``python -m benchmarks.bench_queue_scale [--requests N] [--dir DIR]``; the figures are
printed (one run, no repeats). Each open is measured in a fresh interpreter, so its resident
memory is the queue's and nothing else's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from crawlee import Request

from logkv import Configuration
from logkv.crawlee import LogKvRequestQueueClient

BATCH = 1000
SETTINGS = Configuration(auto_compact=False)


def rss_bytes() -> int:
    """This process's resident memory now."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


async def open_queue(storage_dir: str) -> LogKvRequestQueueClient:
    return await LogKvRequestQueueClient.open(
        id=None, name=None, alias=None, storage_dir=storage_dir, settings=SETTINGS
    )


async def build(storage_dir: str, count: int) -> dict[str, Any]:
    queue = await open_queue(storage_dir)
    started = time.perf_counter()
    for first in range(0, count, BATCH):
        batch = [
            Request.from_url(f"https://bench.invalid/p/{i}")
            for i in range(first, min(first + BATCH, count))
        ]
        await queue.add_batch_of_requests(batch)
    seconds = time.perf_counter() - started
    folder = queue.path
    await queue.close()
    return {"add_seconds": seconds, "disk_bytes": folder_bytes(folder)}


async def compact(storage_dir: str) -> dict[str, Any]:
    queue = await open_queue(storage_dir)
    started = time.perf_counter()
    await queue._store.compact()
    seconds = time.perf_counter() - started
    folder = queue.path
    await queue.close()
    return {"compact_seconds": seconds, "disk_bytes": folder_bytes(folder)}


async def measure_open(storage_dir: str) -> dict[str, Any]:
    """Open, fetch the first request: times and the resident memory the open added."""
    before = rss_bytes()
    started = time.perf_counter()
    queue = await open_queue(storage_dir)
    opened = time.perf_counter() - started
    meta = await queue.get_metadata()
    started = time.perf_counter()
    first = await queue.fetch_next_request()
    fetched = time.perf_counter() - started
    after = rss_bytes()
    await queue.close()
    assert first is not None
    return {
        "open_seconds": opened,
        "first_fetch_ms": fetched * 1000,
        "pending": meta.pending_request_count,
        "rss_added_bytes": after - before,
        "bytes_per_pending": (after - before) / max(meta.pending_request_count, 1),
    }


def measure_open_in_child(storage_dir: str) -> dict[str, Any]:
    output = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_queue_scale", "--measure-open", storage_dir],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=None, help="where to build (a temp dir)")
    parser.add_argument("--measure-open", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_open is not None:
        print(json.dumps(asyncio.run(measure_open(args.measure_open))))
        return
    root = Path(tempfile.mkdtemp(dir=args.dir, prefix="logkv-queue-scale-"))
    try:
        storage_dir = str(root)
        print(f"{args.requests:,} requests in {root}, batches of {BATCH}", flush=True)
        built = asyncio.run(build(storage_dir, args.requests))
        print(
            f"add: {built['add_seconds']:.1f} s "
            f"({args.requests / built['add_seconds']:,.0f} requests/s), "
            f"{built['disk_bytes'] / 1e6:.0f} MB on disk",
            flush=True,
        )
        for label in ("from the log", "from the log, again"):
            opened = measure_open_in_child(storage_dir)
            print(f"open {label}: {_open_line(opened)}", flush=True)
        compacted = asyncio.run(compact(storage_dir))
        print(
            f"compact: {compacted['compact_seconds']:.1f} s, "
            f"{compacted['disk_bytes'] / 1e6:.0f} MB on disk",
            flush=True,
        )
        opened = measure_open_in_child(storage_dir)
        print(f"open after compaction: {_open_line(opened)}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _open_line(opened: dict[str, Any]) -> str:
    return (
        f"{opened['open_seconds']:.2f} s, first fetch {opened['first_fetch_ms']:.1f} ms, "
        f"{opened['pending']:,} pending, +{opened['rss_added_bytes'] / 1e6:.0f} MB resident "
        f"({opened['bytes_per_pending']:.0f} B per pending request)"
    )


if __name__ == "__main__":
    main()
