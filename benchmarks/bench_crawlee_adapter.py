"""Benchmark of ``logkv.crawlee.LogKvStorageClient`` against Crawlee's ``FileSystemStorageClient``.

Run from the repository root (needs the extra ``logkv[crawlee]``)::

    python -m benchmarks.bench_crawlee_adapter          # 5,000 requests, 100k records; writes out
    python -m benchmarks.bench_crawlee_adapter --quick  # 500 requests, 10k records; prints only

Both clients are driven through Crawlee's own ``KeyValueStore`` (``KeyValueStore.open(...,
storage_client=...)``), so the figures are what a Crawlee crawler sees:

1. **Crawl**: for each of N requests, ``set_value`` of the crawler's state (a small dict, always
   the same key) and ``set_value`` of the page (~20 KB of HTML, one key per page), as a crawler
   that persists its state and stores every page does. Wall time, and the disk the storage
   directory uses afterwards (allocated blocks, as ``du``; and the bytes of the files).
2. **Open a big store**: a store of 100k small JSON records, opened through Crawlee in a fresh
   process: time of ``KeyValueStore.open`` and of the first ``get_value``. The logkv store is
   written through Crawlee with the logkv client; the Crawlee file-system store is made from it by
   ``logkv export`` (record for record the same store, in Crawlee's own format).

Neither client fsyncs by default (logkv's default durability is ``process``), so both survive a
killed process and neither a power loss. Every value read back is checked.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crawlee.configuration import Configuration as CrawleeConfiguration
from crawlee.storage_clients import FileSystemStorageClient
from crawlee.storages import KeyValueStore

from logkv import Configuration
from logkv.cli.transfer import export_store
from logkv.crawlee import LogKvStorageClient

from .bench_engine import cpu_model, filesystem_of, load_average, logkv_revision, version_of

DEFAULT_REQUESTS = 5_000
DEFAULT_RECORDS = 100_000
QUICK_REQUESTS = 500
QUICK_RECORDS = 10_000
PAGE_BYTES = 20 * 1024
DEFAULT_OUT = Path("benchmarks/results/crawlee_adapter.md")
CLIENTS = ("logkv", "crawlee-fs")
CRAWL_STORE = "crawl"
BIG_STORE = "big"
STATE_KEY = "CRAWLER_STATE"

_WORDS = [
    *("crawler", "page", "product", "price", "review", "category", "search", "result", "link"),
    *("title", "header", "footer", "navigation", "cart", "checkout", "shipping", "return"),
    *("policy", "contact", "about", "blog", "article", "comment", "share"),
]


@dataclass
class CrawlResult:
    """One client's crawl-shaped run."""

    seconds: float
    disk_bytes: int
    file_bytes: int


@dataclass
class OpenResult:
    """One client's open of the big store in a fresh process."""

    open_seconds: float
    get_seconds: float


def check(condition: bool, message: str) -> None:
    """Stop the benchmark when a client gave a wrong answer."""
    if not condition:
        raise SystemExit(f"benchmark check failed: {message}")


def storage_client(name: str) -> Any:
    """A fresh Crawlee storage client of the peer ``name``."""
    if name == "logkv":
        return LogKvStorageClient(settings=Configuration(auto_compact=False))
    return FileSystemStorageClient()


def crawlee_configuration(storage_dir: Path) -> Any:
    """Crawlee's configuration for a storage directory (never purged)."""
    return CrawleeConfiguration(storage_dir=str(storage_dir), purge_on_start=False)


def page_templates(count: int, seed: int) -> list[str]:
    """``count`` different ~20 KB HTML bodies of words (a request's page uses one of them)."""
    rng = random.Random(seed)
    pages = []
    for _ in range(count):
        paragraphs: list[str] = []
        size = 0
        while size < PAGE_BYTES:
            text = " ".join(rng.choice(_WORDS) for _ in range(40))
            paragraphs.append(f"<p>{text}</p>\n")
            size += len(paragraphs[-1])
        pages.append("".join(paragraphs))
    return pages


def disk_usage(folder: Path) -> tuple[int, int]:
    """``(allocated bytes, file bytes)`` of every file under ``folder`` (as ``du``, ``du -b``)."""
    allocated = apparent = 0
    for path in folder.rglob("*"):
        info = path.lstat()
        allocated += info.st_blocks * 512
        apparent += info.st_size if path.is_file() else 0
    return allocated, apparent


async def crawl(name: str, storage_dir: Path, requests: int, pages: list[str]) -> CrawlResult:
    """Store ``requests`` pages and a state update per page through Crawlee's KeyValueStore."""
    client = storage_client(name)
    kvs = await KeyValueStore.open(
        name=CRAWL_STORE, storage_client=client, configuration=crawlee_configuration(storage_dir)
    )
    state: dict[str, Any] = {"handled": 0, "last_url": None, "failed": 0}
    start = time.perf_counter()
    for number in range(requests):
        url = f"https://shop.example/item/{number}"
        html = f"<html><head><title>{url}</title></head><body>\n{pages[number % len(pages)]}"
        await kvs.set_value(f"page-{number:06d}", html, "text/html")
        state["handled"] = number + 1
        state["last_url"] = url
        await kvs.set_value(STATE_KEY, state)
    seconds = time.perf_counter() - start
    check(await kvs.get_value(STATE_KEY) == state, f"{name}: the state reads back")
    sample = random.Random(7).sample(range(requests), min(requests, 50))
    for number in sample:
        html = await kvs.get_value(f"page-{number:06d}")
        check(
            isinstance(html, str) and f"/item/{number}</title>" in html,
            f"{name}: page {number} reads back",
        )
    if name == "logkv":
        await client.close()
    disk, files = disk_usage(storage_dir)
    return CrawlResult(seconds, disk, files)


def record(number: int) -> dict[str, Any]:
    """The big store's record ``number``: a small JSON document."""
    return {"url": f"https://shop.example/item/{number}", "status": 200, "depth": number % 7}


async def build_big_store(root: Path, records: int) -> tuple[Path, Path]:
    """The big store with the logkv client, and its export as a Crawlee file-system store.

    Returns the two Crawlee storage directories (logkv's, Crawlee's).
    """
    logkv_dir, crawlee_dir = root / "big-logkv", root / "big-crawlee-fs"
    client = storage_client("logkv")
    kvs = await KeyValueStore.open(
        name=BIG_STORE, storage_client=client, configuration=crawlee_configuration(logkv_dir)
    )
    for number in range(records):
        await kvs.set_value(f"record-{number:07d}", record(number))
    await client.close()
    folder = Path("key_value_stores") / BIG_STORE
    await asyncio.to_thread(export_store, logkv_dir / folder, crawlee_dir / folder, False)
    return logkv_dir, crawlee_dir


async def probe_open(name: str, storage_dir: Path, key: str) -> OpenResult:
    """Open the big store through Crawlee and read ``key`` (run in a fresh process)."""
    client = storage_client(name)
    start = time.perf_counter()
    kvs = await KeyValueStore.open(
        name=BIG_STORE, storage_client=client, configuration=crawlee_configuration(storage_dir)
    )
    opened = time.perf_counter()
    value = await kvs.get_value(key)
    done = time.perf_counter()
    number = int(key.rsplit("-", 1)[1])
    check(value == record(number), f"{name}: {key} reads back after open")
    if name == "logkv":
        await client.close()
    return OpenResult(opened - start, done - opened)


def open_in_child(name: str, storage_dir: Path, key: str) -> OpenResult:
    """Run :func:`probe_open` in a new interpreter (no store open, nothing cached)."""
    command = [sys.executable, "-m", "benchmarks.bench_crawlee_adapter", "--probe", name]
    command += ["--probe-dir", str(storage_dir), "--probe-key", key]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return OpenResult(figures["open_seconds"], figures["get_seconds"])


def mib(size: int) -> str:
    """Bytes as MiB with one decimal."""
    return f"{size / 1024 / 1024:,.1f} MiB"


def ms(seconds: float) -> str:
    """Seconds as milliseconds."""
    return f"{seconds * 1000:,.1f} ms"


def machine_rows(tmp_dir: Path) -> list[tuple[str, str]]:
    """Facts about the machine and software the figures were measured on."""
    return [
        ("CPU", f"{cpu_model()}, {os.cpu_count()} logical cores"),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("Python", platform.python_version()),
        ("Crawlee", version_of("crawlee")),
        ("logkv", logkv_revision()),
        ("Storage", f"{filesystem_of(tmp_dir)} (the repository's disk)"),
        ("Load at the end", load_average()),
        ("Date", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")),
    ]


def render(
    args: argparse.Namespace,
    crawls: dict[str, CrawlResult],
    opens: dict[str, OpenResult],
    big_disk: dict[str, int],
    machine: list[tuple[str, str]],
    total_seconds: float,
) -> str:
    """The Markdown results."""
    requests, records = args.requests, args.records
    lines = [
        "# logkv.crawlee vs Crawlee's file-system client",
        "",
        "Command (from the repository root):",
        "",
        "```bash",
        shlex.join(
            ["python", "-m", "benchmarks.bench_crawlee_adapter"]
            + (sys.argv[1:] if args.argv is None else args.argv)
        ),
        "```",
        "",
        f"One run; whole run {total_seconds:.0f} s. Both clients through Crawlee's own "
        "`KeyValueStore`; neither fsyncs (logkv at its default durability `process`).",
        "",
        f"## Crawl: {requests:,} requests, each a ~20 KB page and a state update",
        "",
        "| Client | Wall time | Per request | Disk used (du) | File bytes |",
        "|---|---|---|---|---|",
    ]
    for name in CLIENTS:
        result = crawls[name]
        lines.append(
            f"| {name} | {result.seconds:.2f} s | {result.seconds / requests * 1e6:,.0f} µs "
            f"| {mib(result.disk_bytes)} | {mib(result.file_bytes)} |"
        )
    lines += [
        "",
        "logkv keeps every state update in its log (the history `logkv history` shows) until "
        "compaction; automatic compaction is off in this run, so its disk figure includes "
        f"{requests:,} superseded state records. Crawlee's file-system client writes two files "
        "per key (the value and its `__metadata__.json`) and overwrites the state file in place.",
        "",
        f"## Open a store of {records:,} records through Crawlee (fresh process)",
        "",
        "| Client | `KeyValueStore.open` | First `get_value` | Open + get | Store on disk (du) |",
        "|---|---|---|---|---|",
    ]
    for name in CLIENTS:
        opened = opens[name]
        lines.append(
            f"| {name} | {ms(opened.open_seconds)} | {ms(opened.get_seconds)} "
            f"| {ms(opened.open_seconds + opened.get_seconds)} | {mib(big_disk[name])} |"
        )
    lines += [
        "",
        "logkv replays its log into the in-memory index when the store opens, so opening grows "
        "with the number of records; Crawlee's file-system client reads only the store's "
        "`__metadata__.json` on open and one value's two files on a get. The records are "
        "~80-byte JSON documents; the Crawlee store is `logkv export` of the logkv store.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {label} | {value} |" for label, value in machine),
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=None, help="crawl requests (5,000)")
    parser.add_argument("--records", type=int, default=None, help="big-store records (100,000)")
    parser.add_argument("--quick", action="store_true", help="500 requests, 10k records; print")
    parser.add_argument("--out", type=Path, default=None, help=f"results file ({DEFAULT_OUT})")
    parser.add_argument("--tmp-dir", type=Path, default=Path.cwd(), help="where stores go")
    parser.add_argument("--probe", choices=CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--probe-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--probe-key", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = argv
    if args.requests is None:
        args.requests = QUICK_REQUESTS if args.quick else DEFAULT_REQUESTS
    if args.records is None:
        args.records = QUICK_RECORDS if args.quick else DEFAULT_RECORDS
    if args.out is None and not args.quick:
        args.out = DEFAULT_OUT
    return args


async def measure(
    args: argparse.Namespace, root: Path
) -> tuple[dict[str, CrawlResult], dict[str, OpenResult], dict[str, int]]:
    """Both parts of the benchmark, under ``root``."""
    pages = page_templates(16, seed=1)
    crawls = {}
    for name in CLIENTS:
        crawls[name] = await crawl(name, root / f"crawl-{name}", args.requests, pages)
        print(f"crawl {name}: {crawls[name]}", flush=True)
    logkv_dir, crawlee_dir = await build_big_store(root, args.records)
    dirs = {"logkv": logkv_dir, "crawlee-fs": crawlee_dir}
    key = f"record-{args.records // 2:07d}"
    opens = {name: open_in_child(name, dirs[name], key) for name in CLIENTS}
    for name in CLIENTS:
        print(f"open {name}: {opens[name]}", flush=True)
    big_disk = {name: disk_usage(dirs[name])[0] for name in CLIENTS}
    return crawls, opens, big_disk


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with ``--probe``, one open in this process)."""
    args = parse_args(argv)
    if args.probe is not None:
        result = asyncio.run(probe_open(args.probe, args.probe_dir, args.probe_key))
        print(json.dumps(result.__dict__))
        return 0
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix=".bench-crawlee-adapter-", dir=args.tmp_dir))
    try:
        crawls, opens, big_disk = asyncio.run(measure(args, root))
        machine = machine_rows(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    text = render(args, crawls, opens, big_disk, machine, time.perf_counter() - started)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
        print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
