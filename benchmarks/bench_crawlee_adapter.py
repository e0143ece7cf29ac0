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
import dataclasses
import random
import sys
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

from .harness import Run, Script, check, mib, ms, positive_int, results_file, section, table
from .machine import disk_usage, version_of

SCRIPT = Script(
    "bench_crawlee_adapter",
    "Benchmark logkv.crawlee's storage client against Crawlee's file-system client, both"
    " through Crawlee's own KeyValueStore; write Markdown.",
    Path("benchmarks/results/crawlee_adapter.md"),
)
DEFAULT_REQUESTS = 5_000
DEFAULT_RECORDS = 100_000
QUICK_REQUESTS = 500
QUICK_RECORDS = 10_000
PAGE_BYTES = 20 * 1024
CLIENTS = ("logkv", "crawlee-fs")
CRAWL_STORE = "crawl"
BIG_STORE = "big"
STATE_KEY = "CRAWLER_STATE"

_WORDS = [
    *("crawler", "page", "product", "price", "review", "category", "search", "result", "link"),
    *("title", "header", "footer", "navigation", "cart", "checkout", "shipping", "return"),
    *("policy", "contact", "about", "blog", "article", "comment", "share"),
]


@dataclass(frozen=True)
class Sizes:
    """How big the run is."""

    requests: int
    records: int
    seed: int


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


async def crawl(name: str, storage_dir: Path, sizes: Sizes, pages: list[str]) -> CrawlResult:
    """Store ``sizes.requests`` pages and a state update per page through Crawlee's
    KeyValueStore."""
    requests = sizes.requests
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
    sample = random.Random(sizes.seed + 6).sample(range(requests), min(requests, 50))
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
    return OpenResult(**SCRIPT.in_child(name, str(storage_dir), key))


def render(
    run: Run,
    sizes: Sizes,
    crawls: dict[str, CrawlResult],
    opens: dict[str, OpenResult],
    big_disk: dict[str, int],
) -> str:
    """The Markdown results."""
    requests, records = sizes.requests, sizes.records
    crawl_rows = (
        (
            name,
            f"{crawls[name].seconds:.2f} s",
            f"{crawls[name].seconds / requests * 1e6:,.0f} µs",
            mib(crawls[name].disk_bytes),
            mib(crawls[name].file_bytes),
        )
        for name in CLIENTS
    )
    open_rows = (
        (
            name,
            ms(opens[name].open_seconds),
            ms(opens[name].get_seconds),
            ms(opens[name].open_seconds + opens[name].get_seconds),
            mib(big_disk[name]),
        )
        for name in CLIENTS
    )
    return results_file(
        run,
        "logkv.crawlee vs Crawlee's file-system client",
        f"One run; whole run {run.elapsed():.0f} s. Both clients through Crawlee's own "
        "`KeyValueStore`; neither fsyncs (logkv at its default durability `process`).",
        [
            *section(
                f"Crawl: {requests:,} requests, each a ~20 KB page and a state update",
                [
                    *table(
                        ("Client", "Wall time", "Per request", "Disk used (du)", "File bytes"),
                        crawl_rows,
                    ),
                    "",
                    "logkv keeps every state update in its log (the history `logkv history` "
                    "shows) until compaction; automatic compaction is off in this run, so its "
                    f"disk figure includes {requests:,} superseded state records. Crawlee's "
                    "file-system client writes two files per key (the value and its "
                    "`__metadata__.json`) and overwrites the state file in place.",
                ],
            ),
            *section(
                f"Open a store of {records:,} records through Crawlee (fresh process)",
                [
                    *table(
                        (
                            "Client",
                            "`KeyValueStore.open`",
                            "First `get_value`",
                            "Open + get",
                            "Store on disk (du)",
                        ),
                        open_rows,
                    ),
                    "",
                    "logkv replays its log into the in-memory index when the store opens, so "
                    "opening grows with the number of records; Crawlee's file-system client "
                    "reads only the store's `__metadata__.json` on open and one value's two "
                    "files on a get. The records are ~80-byte JSON documents; the Crawlee store "
                    "is `logkv export` of the logkv store.",
                ],
            ),
        ],
        machine=[("Crawlee", version_of("crawlee"))],
    )


def parser() -> argparse.ArgumentParser:
    """The command line: the common options and the adapter benchmark's own."""
    parser = SCRIPT.parser()
    parser.add_argument(
        "--requests",
        type=positive_int,
        default=None,
        help=f"crawl requests ({DEFAULT_REQUESTS:,}; quick {QUICK_REQUESTS:,})",
    )
    parser.add_argument(
        "--records",
        type=positive_int,
        default=None,
        help=f"big-store records ({DEFAULT_RECORDS:,}; quick {QUICK_RECORDS:,})",
    )
    return parser


async def measure(
    sizes: Sizes, root: Path
) -> tuple[dict[str, CrawlResult], dict[str, OpenResult], dict[str, int]]:
    """Both parts of the benchmark, under ``root``."""
    pages = page_templates(16, seed=sizes.seed)
    crawls = {}
    for name in CLIENTS:
        crawls[name] = await crawl(name, root / f"crawl-{name}", sizes, pages)
        print(f"crawl {name}: {crawls[name]}", flush=True)
    logkv_dir, crawlee_dir = await build_big_store(root, sizes.records)
    dirs = {"logkv": logkv_dir, "crawlee-fs": crawlee_dir}
    key = f"record-{sizes.records // 2:07d}"
    opens = {name: open_in_child(name, dirs[name], key) for name in CLIENTS}
    for name in CLIENTS:
        print(f"open {name}: {opens[name]}", flush=True)
    big_disk = {name: disk_usage(dirs[name])[0] for name in CLIENTS}
    return crawls, opens, big_disk


def benchmark(args: argparse.Namespace, run: Run) -> str:
    """Measure what ``args`` ask for; the results as Markdown."""
    sizes = Sizes(
        requests=args.requests or (QUICK_REQUESTS if run.quick else DEFAULT_REQUESTS),
        records=args.records or (QUICK_RECORDS if run.quick else DEFAULT_RECORDS),
        seed=run.seed,
    )
    with run.scratch() as root:
        crawls, opens, big_disk = asyncio.run(measure(sizes, root))
    return render(run, sizes, crawls, opens, big_disk)


def probe(args: list[str]) -> dict[str, Any]:
    """``--probe NAME DIR KEY``: :func:`probe_open` in this process."""
    name, storage_dir, key = args
    return dataclasses.asdict(asyncio.run(probe_open(name, Path(storage_dir), key)))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with ``--probe``, one open in this process)."""
    return SCRIPT.main(argv, parser(), benchmark, probe)


if __name__ == "__main__":
    sys.exit(main())
