"""Benchmark of logkv's async ``KeyValueStore`` against Crawlee's own storage clients.

Run from the repository root (Crawlee is a benchmark-only dependency: ``pip install -e .[bench]``)::

    python -m benchmarks.bench_kvs_vs_crawlee                 # 5,000 records, writes the results
    python -m benchmarks.bench_kvs_vs_crawlee --quick         # 1,000 records, prints only
    python -m benchmarks.bench_kvs_vs_crawlee --records 20000 --out /some/file.md

Every peer runs the same workload through its ``KeyValueStore`` facade, in one process run:

1. ``set_value`` of every record (~1 KB JSON documents, keys in shuffled order);
2. ``get_value`` of random keys (point gets);
3. ``iterate_keys`` over the whole store;
4. overwrites of a few hot keys (``set_value`` again and again on the same keys);
5. reopen: open the store afresh and read one record (persistent peers only).

Peers: logkv with its log-based client (the default: process durability, value cache on),
the same with the value cache off, logkv's in-memory client, and Crawlee 1.x with its
``FileSystemStorageClient`` and its ``MemoryStorageClient``. Crawlee's file-system client does
not fsync either, so both persistent peers survive a killed process, not a power loss.

Fast peers run every phase ``--repeat`` times on fresh stores and keep the best round; Crawlee's
file-system client runs once (its figures are three orders of magnitude slower, so noise does
not matter). Targets are reported as PASS/MISS and never fail the run; a wrong value read back
does.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import os
import platform
import random
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

from crawlee import service_locator
from crawlee.configuration import Configuration as CrawleeConfiguration
from crawlee.storage_clients import FileSystemStorageClient
from crawlee.storage_clients import MemoryStorageClient as CrawleeMemoryStorageClient
from crawlee.storages import KeyValueStore as CrawleeKeyValueStore

from logkv import Configuration, Engine, KeyValueStore, LogStorageClient, MemoryStorageClient
from logkv.content import decoder_for, encode

DEFAULT_RECORDS = 5_000
QUICK_RECORDS = 1_000
HOT_KEYS = 10
DEFAULT_OUT = Path("benchmarks/results/kvs_vs_crawlee.md")

PHASES = ("set_value", "get_value", "iterate_keys", "hot overwrites", "reopen")

_WORDS = [
    *("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed"),
    *("do", "eiusmod", "tempor", "incididunt", "ut", "labore", "et", "dolore", "magna"),
    *("aliqua", "enim", "ad", "minim", "veniam", "quis", "nostrud", "exercitation", "ullamco"),
]


class Store(Protocol):
    """What the benchmark uses of a KeyValueStore (logkv's and Crawlee's both fit)."""

    async def set_value(self, key: str, value: Any, content_type: str | None = None) -> None: ...

    async def get_value(self, key: str, default_value: Any = None) -> Any: ...


Opener = Callable[[], Awaitable[Any]]
#: Seconds per record of each piece of logkv's work, by name.
Parts = dict[str, float]


@dataclass
class Peer:
    """One contender: how to open its store, close it, and open it again."""

    name: str
    open: Opener
    close: Callable[[Any], Awaitable[None]]
    reopen: Opener | None
    cleanup: Callable[[], Awaitable[None]]
    repeat: int


@dataclass
class Timings:
    """Seconds per operation of each phase (best round), and operations per phase."""

    per_op: dict[str, float] = field(default_factory=dict)
    ops: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------------------------- workload


def make_records(count: int, seed: int) -> tuple[list[str], list[dict[str, Any]]]:
    """Shuffled keys and one ~1 KB JSON document per key: a crawled product page."""
    rng = random.Random(seed)
    keys = [f"product-{i:07d}" for i in range(count)]
    rng.shuffle(keys)
    records = []
    for i in range(count):
        description = " ".join(rng.choice(_WORDS) for _ in range(105))
        records.append(
            {
                "url": f"https://shop.example.com/catalogue/item-{i}/details?ref=listing",
                "title": f"Product {i}: " + " ".join(rng.choice(_WORDS) for _ in range(6)),
                "price": round(rng.uniform(1, 500), 2),
                "currency": "EUR",
                "in_stock": rng.random() < 0.8,
                "rating": None if rng.random() < 0.3 else round(rng.uniform(1, 5), 1),
                "tags": [rng.choice(_WORDS) for _ in range(4)],
                "status": 200,
                "fetched_at": f"2024-05-{1 + i % 28:02d}T12:{i % 60:02d}:00Z",
                "description": description,
            }
        )
    return keys, records


def check(condition: bool, message: str) -> None:
    """Stop the run when a store returned a wrong answer."""
    if not condition:
        raise RuntimeError(f"wrong answer: {message}")


async def timed(operation: Callable[[], Awaitable[None]]) -> float:
    """Seconds ``operation`` took (after a garbage collection, so phases start alike)."""
    gc.collect()
    started = time.perf_counter()
    await operation()
    return time.perf_counter() - started


async def run_round(
    peer: Peer, keys: list[str], records: list[dict[str, Any]], gets: list[int], hot: int
) -> dict[str, float]:
    """One round of every phase on a fresh store; seconds per phase."""
    kvs = await peer.open()
    seconds: dict[str, float] = {}

    async def write_all() -> None:
        for key, record in zip(keys, records, strict=True):
            await kvs.set_value(key, record)

    async def read_some() -> None:
        for index in gets:
            await kvs.get_value(keys[index])

    async def iterate() -> None:
        count = 0
        async for _ in kvs.iterate_keys():
            count += 1
        check(count == len(keys), f"{peer.name} iterated {count} keys of {len(keys)}")

    async def overwrite() -> None:
        for i in range(hot):
            await kvs.set_value(keys[i % HOT_KEYS], records[i % len(records)])

    seconds["set_value"] = await timed(write_all)
    seconds["get_value"] = await timed(read_some)
    for index in gets[:50]:
        check(await kvs.get_value(keys[index]) == records[index], f"{peer.name} get_value")
    seconds["iterate_keys"] = await timed(iterate)
    seconds["hot overwrites"] = await timed(overwrite)
    await peer.close(kvs)
    if peer.reopen is not None:
        probe = len(keys) // 2
        reopened: list[Any] = []

        async def reopen() -> None:
            store = await peer.reopen()  # type: ignore[misc]
            reopened.append(store)
            check(await store.get_value(keys[probe]) == records[probe], f"{peer.name} reopen")

        seconds["reopen"] = await timed(reopen)
        await peer.close(reopened[0])
    await peer.cleanup()
    return seconds


async def measure(
    peers: list[Peer], keys: list[str], records: list[dict[str, Any]], gets: list[int], hot: int
) -> dict[str, Timings]:
    """The best round of each peer, per phase. Rounds go round-robin over the peers, so that
    a burst of load on the machine hits every peer alike rather than one of them."""
    ops = {
        "set_value": len(keys),
        "get_value": len(gets),
        "iterate_keys": len(keys),
        "hot overwrites": hot,
        "reopen": 1,
    }
    results = {peer.name: Timings(ops=dict(ops)) for peer in peers}
    for round_number in range(max(peer.repeat for peer in peers)):
        for peer in peers:
            if round_number >= peer.repeat:
                continue
            timings = results[peer.name]
            for phase, seconds in (await run_round(peer, keys, records, gets, hot)).items():
                per_op = seconds / ops[phase]
                timings.per_op[phase] = min(per_op, timings.per_op.get(phase, per_op))
    for peer in peers:
        best = results[peer.name].per_op
        print(f"  {peer.name}: " + ", ".join(f"{p} {us(t)}" for p, t in best.items()), flush=True)
    return results


# ---------------------------------------------------------------------------------- peers


def logkv_peer(name: str, root: Path, repeat: int, memory: bool = False, **options: Any) -> Peer:
    """logkv's KeyValueStore over its log-based (or in-memory) client."""
    folder = root / name.replace(" ", "-")
    config = Configuration(storage_dir=str(folder), purge_on_start=False, **options)
    memory_client = MemoryStorageClient(config)

    async def opener() -> KeyValueStore:
        client = memory_client if memory else LogStorageClient(config)
        return await KeyValueStore.open(name="bench", storage_client=client)

    async def close(kvs: KeyValueStore) -> None:
        await kvs.close()

    async def cleanup() -> None:
        kvs = await opener()
        await kvs.drop()
        shutil.rmtree(folder, ignore_errors=True)

    return Peer(name, opener, close, None if memory else opener, cleanup, repeat)


def crawlee_peer(name: str, root: Path, repeat: int, file_system: bool) -> Peer:
    """Crawlee's KeyValueStore over its file-system (or memory) client."""
    folder = root / name.replace(" ", "-")
    config = CrawleeConfiguration(storage_dir=str(folder), purge_on_start=False)

    async def opener() -> CrawleeKeyValueStore:
        client = FileSystemStorageClient() if file_system else CrawleeMemoryStorageClient()
        return await CrawleeKeyValueStore.open(
            name="bench", storage_client=client, configuration=config
        )

    async def close(kvs: CrawleeKeyValueStore) -> None:
        # Crawlee stores have no close; forget the instance so that the next open is real.
        service_locator.storage_instance_manager.remove_from_cache(kvs)

    async def cleanup() -> None:
        service_locator.storage_instance_manager.clear_cache()
        shutil.rmtree(folder, ignore_errors=True)

    return Peer(name, opener, close, opener if file_system else None, cleanup, repeat)


# ---------------------------------------------------------------------------------- breakdown


def breakdown(keys: list[str], records: list[dict[str, Any]], root: Path, repeat: int) -> Parts:
    """Where logkv's time per record goes, measured piece by piece (best of ``repeat``)."""
    encoded = [encode(record) for record in records]
    decoders = [decoder_for(content_type) for _, content_type in encoded]
    parts: Parts = {}

    def best(name: str, work: Callable[[], object]) -> None:
        for _ in range(repeat):
            gc.collect()
            started = time.perf_counter()
            work()
            seconds = (time.perf_counter() - started) / len(keys)
            parts[name] = min(seconds, parts.get(name, seconds))

    def encode_all() -> None:
        for record in records:
            encode(record)  # results dropped at once, as set_value drops them

    def decode_all() -> None:
        for decoder, (data, _) in zip(decoders, encoded, strict=True):
            decoder(data)

    best("encode: check + JSON (content.encode)", encode_all)
    for round_number in range(repeat):
        folder = root / f"engine-{round_number}"
        with Engine.open(folder) as engine:

            def write(engine: Engine = engine) -> None:
                for key, (data, content_type) in zip(keys, encoded, strict=True):
                    engine.set(key, data, content_type)

            def read(engine: Engine = engine) -> None:
                for key in keys:
                    engine.get(key)

            best("Engine.set: frame, hash chain, write(), index", write)
            best("Engine.get: index, pread, checksum", read)
        shutil.rmtree(folder)
    best("decode (orjson.loads)", decode_all)
    return parts


# ---------------------------------------------------------------------------------- report


def us(seconds: float) -> str:
    """Microseconds per operation, readable."""
    micro = seconds * 1e6
    if micro >= 10_000:
        return f"{micro / 1000:,.1f} ms"
    return f"{micro:,.1f} µs" if micro < 100 else f"{micro:,.0f} µs"


TARGETS = [
    # (phase, logkv peer, peer compared with, minimum speed-up)
    ("set_value", "logkv", "crawlee-fs", 100.0),
    ("set_value", "logkv", "crawlee-memory", 1.0),
    ("get_value", "logkv", "crawlee-fs", 100.0),
    ("get_value", "logkv", "crawlee-memory", 0.5),
    ("iterate_keys", "logkv", "crawlee-fs", 50.0),
]
EXTRA_RATIOS = [
    ("hot overwrites", "logkv", "crawlee-fs"),
    ("hot overwrites", "logkv", "crawlee-memory"),
    ("iterate_keys", "logkv", "crawlee-memory"),
    ("reopen", "logkv", "crawlee-fs"),
    ("get_value", "logkv (cache off)", "crawlee-fs"),
    ("get_value", "logkv (cache off)", "crawlee-memory"),
    ("set_value", "logkv-memory", "crawlee-memory"),
    ("get_value", "logkv-memory", "crawlee-memory"),
]


def render(
    command: str, args: argparse.Namespace, results: dict[str, Timings], parts: Parts, wall: float
) -> str:
    """The results as a Markdown document."""
    names = list(results)
    table = [
        "| Phase (per operation) | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for phase in PHASES:
        cells = [
            us(results[n].per_op[phase]) if phase in results[n].per_op else "n/a" for n in names
        ]
        table.append(f"| {phase} | " + " | ".join(cells) + " |")
    ratios = [
        "| Phase | logkv peer | Compared with | Speed-up | Target | Status |",
        "|---|---|---|---|---|---|",
    ]
    for phase, ours, theirs, target in TARGETS:
        ratio = results[theirs].per_op[phase] / results[ours].per_op[phase]
        status = "PASS" if ratio >= target else "MISS"
        ratios.append(f"| {phase} | {ours} | {theirs} | {ratio:,.2f}x | ≥ {target:g}x | {status} |")
    for phase, ours, theirs in EXTRA_RATIOS:
        ratio = results[theirs].per_op[phase] / results[ours].per_op[phase]
        ratios.append(f"| {phase} | {ours} | {theirs} | {ratio:,.2f}x | | |")
    versions = {name: metadata.version(name) for name in ("logkv", "crawlee", "orjson", "pydantic")}
    return (
        "\n".join(
            [
                "# logkv KeyValueStore vs Crawlee's storage clients",
                "",
                "Command (from the repository root):",
                "",
                "```bash",
                command,
                "```",
                "",
                f"{args.records:,} records of ~1 KB JSON, {args.gets:,} point gets, "
                f"{args.hot_writes:,} overwrites of {HOT_KEYS} hot keys; best of {args.repeat} "
                f"rounds for the fast peers, one round for crawlee-fs; whole run {wall:.0f} s.",
                "",
                "## Time per operation",
                "",
                *table,
                "",
                "## Speed-ups (the other peer's time / logkv's time)",
                "",
                *ratios,
                "",
                "Targets are goals, not limits of the benchmark: a MISS is reported, never treated "
                "as a failure.",
                "",
                "## Where logkv's time goes (per record, same records)",
                "",
                "| Piece | Time |",
                "|---|---|",
                *(f"| {name} | {us(seconds)} |" for name, seconds in parts.items()),
                "",
                "`set_value` = encode + `Engine.set` + the facade (key check, timestamps, value "
                "cache). The cache's first use of fresh memory costs extra while it fills "
                "(compare `logkv (cache off)`); once full, its entries are recycled. "
                "crawlee-memory's `set_value` stores a reference to the object: no encoding, no "
                "system call. logkv's must encode the value and hand it to the operating system "
                "before it returns (so a killed process loses nothing), and its `get_value` "
                "decodes a private copy where crawlee-memory returns the stored object itself.",
                "",
                "## Machine",
                "",
                f"- Python {platform.python_version()} on {platform.platform()}, "
                f"{os.cpu_count()} CPUs, load average at the end "
                f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
                "- " + ", ".join(f"{name} {version}" for name, version in versions.items()),
                f"- Stores in a temporary folder under {args.tmp_dir_label}; "
                f"run on {datetime.date.today().isoformat()}",
                "",
                "## Method",
                "",
                "- Every peer goes through its own `KeyValueStore` facade (`open`, `set_value`, "
                "`get_value`, `iterate_keys`), values inferred as JSON by both.",
                "- logkv: the default configuration (process durability: every `set_value` is "
                "handed to the OS before it returns; a 16 MiB cache of recent small values). "
                "`logkv (cache off)` sets `value_cache_size=0`, so every get is a positioned read "
                "of the log. `logkv-memory` is logkv's in-memory client (values stored encoded).",
                "- crawlee-fs writes each record as two files (value and metadata) with atomic "
                "renames and rewrites the store's metadata file on every call; crawlee-memory "
                "keeps the Python objects themselves (no encoding, no copy on read).",
                "- reopen: a new `open` of the persistent store (logkv replays its log) plus one "
                "`get_value`; Crawlee's instance cache is cleared first so that its open is real.",
            ]
        )
        + "\n"
    )


# ---------------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_kvs_vs_crawlee",
        description="Benchmark logkv's KeyValueStore against Crawlee's storage clients.",
    )
    parser.add_argument("--records", type=int, default=None, help="records to write (5,000)")
    parser.add_argument("--gets", type=int, default=None, help="point gets (= records)")
    parser.add_argument(
        "--hot-writes", type=int, default=None, help="overwrites of the hot keys (records / 5)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the fast peers (3)")
    parser.add_argument("--quick", action="store_true", help="1,000 records, print only")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help=f"results file ({DEFAULT_OUT})")
    parser.add_argument(
        "--tmp-dir", type=Path, default=None, help="parent of the temporary store folders"
    )
    args = parser.parse_args(argv)
    args.records = args.records or (QUICK_RECORDS if args.quick else DEFAULT_RECORDS)
    args.gets = args.gets or args.records
    args.hot_writes = args.hot_writes or max(args.records // 5, HOT_KEYS)
    if args.out is None and not args.quick:
        args.out = DEFAULT_OUT
    for name in ("records", "gets", "hot_writes", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


async def run(args: argparse.Namespace, root: Path) -> tuple[dict[str, Timings], Parts]:
    """Measure every peer, then the pieces of logkv's work."""
    keys, records = make_records(args.records, args.seed)
    rng = random.Random(args.seed + 1)
    gets = [rng.randrange(args.records) for _ in range(args.gets)]
    peers = [
        logkv_peer("logkv", root, args.repeat),
        logkv_peer("logkv (cache off)", root, args.repeat, value_cache_size=0),
        logkv_peer("logkv-memory", root, args.repeat, memory=True),
        crawlee_peer("crawlee-memory", root, args.repeat, file_system=False),
        crawlee_peer("crawlee-fs", root, 1, file_system=True),
    ]
    results = await measure(peers, keys, records, gets, args.hot_writes)
    return results, breakdown(keys, records, root, args.repeat)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the results and write them to ``--out``."""
    args = parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "-m", "benchmarks.bench_kvs_vs_crawlee", *given])
    parent = args.tmp_dir or Path(__file__).resolve().parent.parent
    args.tmp_dir_label = "the repository root" if args.tmp_dir is None else str(args.tmp_dir)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-kvs-", dir=parent) as tmp:
        results, parts = asyncio.run(run(args, Path(tmp)))
    text = render(command, args, results, parts, time.perf_counter() - started)
    print()
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
        print(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
