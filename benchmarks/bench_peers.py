"""logkv against the stores a Python crawler could pick instead, on the same workloads, in one run.

Run from the repository root (the peers are benchmark-only dependencies)::

    python -m pip install -e ".[bench]"
    python -m benchmarks.bench_peers            # full run (~10 min): writes results/peers.md, .png
    python -m benchmarks.bench_peers --quick    # small sizes (~1 min), prints only

Peers (see :mod:`benchmarks.peer_stores`): logkv's ``KeyValueStore`` and its synchronous
``Engine``, Crawlee's memory and file-system storage clients, diskcache, sqlitedict, lmdb and
shelve, each at its own default durability (the results say which that is). In one process,
so that the ratios hold on a noisy machine, the benchmark measures:

- the raw limit of this machine: a plain loop that frames the same records (msgpack body,
  length and CRC-32C) and ``os.write``\\ s each, and a loop of ``write`` + ``fdatasync``;
- small JSON sets (distinct keys), point gets of random keys, ordered iteration of every key,
  overwrites of a few hot keys, sets and gets of ~1 KB JSON documents, and values of 1, 16
  and 256 MiB, in rounds on fresh stores (best round kept); for the documents, the floor of
  a set: a loop that JSON-encodes each document, frames and chains it as logkv does and
  ``write``\\ s it;
- disk bytes after the writes;
- reopen of stores of 100k and 1M keys in a fresh interpreter (open + one get), with the memory
  that took; logkv both from its log and after compaction;
- durable writes (every write synced) with 1 and with 64 concurrent writers, for the stores that
  can sync every write, each peer's runs after a run of the raw write + fdatasync loop, in
  rounds (``--durable-only`` runs these alone);
- where logkv's own time goes (encode, engine, facade), for the profile.

Every answer is checked; a wrong one stops the run. Targets are marked PASS or MISS and never
fail it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import orjson

from logkv import Configuration, Engine, KeyValueStore
from logkv.content import encode
from logkv.format import (
    FRAME_KINDS,
    GENESIS_CHAIN,
    RECORD_MAGIC,
    checksum,
    encode_record,
)

from .harness import Run, Script, check, positive_float, positive_int, run_writers, start_clock
from .machine import disk_usage, rss_anon
from .peer_report import RAW, Results, render, value_workload, write_chart
from .peer_stores import JSON_TYPE, OpenStore, Peer, peers
from .workload import floor_write_loop, raw_sync_rate, raw_write_loop

_pack_body = msgpack.Packer(use_bin_type=True).pack

SCRIPT = Script(
    "bench_peers",
    "Benchmark logkv against Crawlee's storage clients, diskcache, sqlitedict, lmdb and shelve;"
    " write a Markdown results file and a PNG chart.",
    Path("benchmarks/results/peers.md"),
)


@dataclass(frozen=True)
class Settings:
    """What to run, at which sizes."""

    run: Run
    records: int
    hot_keys: int
    overwrites: int
    #: Large values: ``(size in bytes, how many)`` per row, smallest first.
    values: tuple[tuple[int, int], ...]
    reopen_sizes: tuple[int, ...]
    #: Store sizes of the prefix listings, smaller first.
    prefix_sizes: tuple[int, ...]
    sync_seconds: float
    writers: int
    rounds: int
    only: tuple[str, ...]
    durable_only: bool


# ---------------------------------------------------------------------------------- workload

#: The large values of a full run, ``(size, count)``: 16 of 1 MiB, 4 of 16 MiB, 1 of 256 MiB
#: (about 1 GB written and read per store and round, so the run stays within minutes).
VALUES = ((1 << 20, 16), (16 << 20, 4), (256 << 20, 1))
VALUES_QUICK = ((1 << 20, 4), (16 << 20, 2))


def make_docs(
    count: int, seed: int, prefix: str = "page"
) -> tuple[list[str], list[dict[str, Any]]]:
    """Keys in shuffled order and a small JSON document (~130 bytes) per key: crawl records.

    The document of key ``{prefix}-N`` is :func:`doc_for` ``(N)``.
    """
    numbers = list(range(count))
    random.Random(seed).shuffle(numbers)
    return [f"{prefix}-{n:07d}" for n in numbers], [doc_for(n) for n in numbers]


def doc_for(number: int) -> dict[str, Any]:
    """The document stored under key number ``number`` (the same in every process)."""
    rng = random.Random(number)
    return {
        "url": f"https://shop.example/item/{number}",
        "status": 200,
        "title": f"Item {number}",
        "price": round(rng.uniform(1, 500), 2),
        "tags": [rng.choice("abcdefgh") for _ in range(3)],
        "seen": rng.random() < 0.5,
    }


def make_page_docs(count: int, seed: int) -> tuple[list[str], list[dict[str, Any]]]:
    """Keys in shuffled order and a ~1 KB JSON document per key (:func:`page_doc_for`)."""
    numbers = list(range(count))
    random.Random(seed).shuffle(numbers)
    return [f"doc-{n:07d}" for n in numbers], [page_doc_for(n) for n in numbers]


def page_doc_for(number: int) -> dict[str, Any]:
    """A ~1 KB JSON document (a crawled page): a URL, a 200-character title, a price, three
    tags and a 600-character body."""
    return {
        "url": f"https://shop.example/item/{number}",
        "title": "t" * 200,
        "price": round(random.Random(number).uniform(1, 500), 2),
        "tags": ["a", "b", "c"],
        "body": "x" * 600,
    }


# ---------------------------------------------------------------------------------- timed loops


async def timed_sets(store: OpenStore, keys: list[str], values: list[Any], blob: bool) -> float:
    """Seconds to set ``values[i]`` under ``keys[i]`` for every ``i``, one call at a time."""
    set_ = store.set_blob if blob else store.set_json
    start = start_clock()
    if store.is_async:
        for key, value in zip(keys, values, strict=True):
            await set_(key, value)
    else:
        for key, value in zip(keys, values, strict=True):
            set_(key, value)
    return time.perf_counter() - start


async def timed_gets(store: OpenStore, keys: list[str], blob: bool) -> tuple[float, list[Any]]:
    """Seconds to get every key of ``keys``; and the values of the first 100 (to check)."""
    get = store.get_blob if blob else store.get_json
    start = start_clock()
    if store.is_async:
        for key in keys:
            await get(key)
    else:
        for key in keys:
            get(key)
    seconds = time.perf_counter() - start
    sample = []
    for key in keys[:100]:
        sample.append(await store.call(get, key))
    return seconds, sample


async def ordered(store: OpenStore) -> list[str]:
    """Every key, in key order."""
    if store.is_async:
        keys: list[str] = await store.ordered_keys()
        return keys
    listed: list[str] = store.ordered_keys()
    return listed


@dataclass
class Data:
    """The records every peer writes, made before any clock starts."""

    keys: list[str]
    docs: list[dict[str, Any]]
    #: ``orjson.dumps`` of each document
    encoded: list[bytes]
    gets: list[str]
    #: The large values of each size (random bytes), by size.
    blobs: dict[int, list[bytes]]
    #: keys and ~1 KB documents of the page-document workload, and the order of its gets
    page_keys: list[str]
    page_docs: list[dict[str, Any]]
    page_gets: list[str]
    doc_of: dict[str, dict[str, Any]] = field(init=False)
    sorted_keys: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.doc_of = dict(zip(self.keys, self.docs, strict=True))
        self.doc_of.update(zip(self.page_keys, self.page_docs, strict=True))
        self.sorted_keys = sorted(self.keys)


def random_bytes(rng: random.Random, size: int) -> bytes:
    """``size`` random bytes from ``rng``, made 16 MiB at a time (``randbytes`` of 256 MiB
    overflows)."""
    step = 16 << 20
    return b"".join(rng.randbytes(min(step, size - at)) for at in range(0, size, step))


def make_data(settings: Settings) -> Data:
    """Keys, documents, the order of the gets and the large values (random bytes)."""
    seed = settings.run.seed
    keys, docs = make_docs(settings.records, seed)
    gets = keys[:]
    random.Random(seed + 1).shuffle(gets)
    rng = random.Random(seed + 2)
    blobs = {
        size: [random_bytes(rng, size) for _ in range(count)] for size, count in settings.values
    }
    page_keys, page_docs = make_page_docs(settings.records, seed + 3)
    page_gets = page_keys[:]
    random.Random(seed + 4).shuffle(page_gets)
    encoded = [orjson.dumps(doc) for doc in docs]
    return Data(keys, docs, encoded, gets, blobs, page_keys, page_docs, page_gets)


# ---------------------------------------------------------------------------------- one round


@dataclass
class RoundFigures:
    """Seconds per operation of each workload in one round, and disk bytes after it."""

    per_op: dict[str, float] = field(default_factory=dict)
    disk: tuple[int, int] = (0, 0)


async def run_round(
    peer: Peer, folder: Path, settings: Settings, data: Data, first: bool
) -> RoundFigures:
    """Every in-process workload, once, on a fresh store of ``peer``."""
    figures = RoundFigures()
    store = await peer.open(folder, False)
    n = len(data.keys)
    figures.per_op["set"] = await timed_sets(store, data.keys, data.docs, blob=False) / n
    seconds, sample = await timed_gets(store, data.gets, blob=False)
    figures.per_op["get"] = seconds / len(data.gets)
    check(sample == [data.doc_of[k] for k in data.gets[:100]], f"{peer.name}: gets read back")
    start = start_clock()
    listed = await ordered(store)
    figures.per_op["iterate"] = (time.perf_counter() - start) / n
    check(listed == data.sorted_keys, f"{peer.name}: ordered iteration lists every key in order")
    hot_keys = [data.keys[i % settings.hot_keys] for i in range(settings.overwrites)]
    hot_docs = [data.docs[-1 - i % len(data.docs)] for i in range(settings.overwrites)]
    figures.per_op["overwrite"] = (
        await timed_sets(store, hot_keys, hot_docs, blob=False) / settings.overwrites
    )
    last = {key: doc for key, doc in zip(hot_keys, hot_docs, strict=True)}
    for key, doc in last.items():
        got = await store.call(store.get_json, key)
        check(got == doc, f"{peer.name}: the last overwrite of {key} reads back")
    pages = len(data.page_keys)
    figures.per_op["doc set"] = (
        await timed_sets(store, data.page_keys, data.page_docs, blob=False) / pages
    )
    seconds, sample = await timed_gets(store, data.page_gets, blob=False)
    figures.per_op["doc get"] = seconds / pages
    expected = [data.doc_of[k] for k in data.page_gets[:100]]
    check(sample == expected, f"{peer.name}: 1 KB documents read back")
    for size, blobs in data.blobs.items():
        name = value_workload(size)
        big_keys = [f"blob-{size >> 20}m-{i:03d}" for i in range(len(blobs))]
        seconds = await timed_sets(store, big_keys, blobs, blob=True)
        figures.per_op[f"{name} set"] = seconds / len(blobs)
        seconds, sample = await timed_gets(store, big_keys, blob=True)
        figures.per_op[f"{name} get"] = seconds / len(blobs)
        check(sample == blobs[: len(sample)], f"{peer.name}: {size >> 20} MiB values read back")
        del sample
    await store.close()
    if first and peer.persistent:
        figures.disk = disk_usage(folder)
    return figures


async def measure_rounds(
    chosen: list[Peer], settings: Settings, data: Data, work: Path, results: Results
) -> None:
    """Rounds of every in-process workload, round-robin over the peers (a burst of load on the
    machine then hits every peer alike); the best round of each figure is kept. Crawlee's
    file-system client runs one round: it is three orders of magnitude slower, noise is moot."""
    for number in range(settings.rounds):
        raw = work / "raw.log"
        n = len(data.keys)
        gc.collect()
        results.keep(RAW, "set", raw_write_loop(raw, data.keys, data.encoded, JSON_TYPE) / n)
        gc.collect()
        seconds = raw_write_loop(raw, data.keys, data.docs, JSON_TYPE, orjson.dumps)
        results.keep(RAW, "set json", seconds / n)
        gc.collect()
        seconds = floor_write_loop(raw, data.page_keys, data.page_docs, JSON_TYPE, orjson.dumps)
        results.keep(RAW, "doc set", seconds / len(data.page_keys))
        done = []
        for peer in chosen:
            if number > 0 and peer.name == "crawlee file system":
                continue
            folder = work / f"{peer.name.replace(' ', '-')}-{number}"
            figures = await run_round(peer, folder, settings, data, number == 0)
            for workload, seconds in figures.per_op.items():
                results.keep(peer.name, workload, seconds)
            if number == 0 and peer.persistent:
                results.disk[peer.name] = figures.disk
            shutil.rmtree(folder, ignore_errors=True)
            took = figures.per_op
            done.append(f"{peer.name} {took['set'] * 1e6:.1f}/{took['get'] * 1e6:.1f}")
        print(f"round {number + 1}/{settings.rounds}, set/get µs: {', '.join(done)}", flush=True)


# ---------------------------------------------------------------------------------- reopen


async def fill_for_reopen(peer: Peer, folder: Path, keys: list[str], docs: list[Any]) -> None:
    """Write the store to reopen: by the store's own bulk load where it has one (lmdb and
    diskcache: one transaction), else one set at a time as in the set workload."""
    if peer.bulk_load is not None:
        await asyncio.to_thread(peer.bulk_load, folder, list(zip(keys, docs, strict=True)))
        return
    store = await peer.open(folder, False)
    await timed_sets(store, keys, docs, blob=False)
    await store.close()


async def probe_open(name: str, folder: Path, key: str) -> dict[str, float]:
    """In a fresh interpreter: open the store ``name`` and get ``key``; seconds and memory."""
    peer = next(p for p in peers() if p.name == name)
    gc.collect()
    before = rss_anon() or 0
    start = time.perf_counter()
    store = await peer.open(folder, False)
    opened = time.perf_counter()
    value = await store.call(store.get_json, key)
    done = time.perf_counter()
    gc.collect()
    after = rss_anon() or 0
    check(value == doc_for(int(key.rsplit("-", 1)[1])), f"{name}: {key} reads back after reopen")
    await store.close()
    return {"open": opened - start, "get": done - opened, "rss": float(after - before)}


def open_in_child(name: str, folder: Path, key: str) -> dict[str, float]:
    """:func:`probe_open` in a new interpreter (no store open, nothing cached in Python)."""
    return SCRIPT.in_child(name, str(folder), key)


async def measure_reopen(
    chosen: list[Peer], settings: Settings, work: Path, results: Results
) -> None:
    """Fill a store of each size per persistent peer, close it, reopen it in a fresh process."""
    for size in settings.reopen_sizes:
        keys, docs = make_docs(size, settings.run.seed + size, prefix="rec")
        probe = keys[len(keys) // 2]
        for peer in chosen:
            if not peer.persistent or peer.name == "logkv Engine":
                continue
            if peer.name == "crawlee file system" and size > 100_000:
                results.notes.append(
                    f"crawlee file system: no reopen of {size:,} keys (writing them through its"
                    f" KeyValueStore takes about {size * 1.5e-3 / 60:,.0f} min and"
                    f" {2 * size:,} files; its open is lazy, see the 100,000-key row)"
                )
                continue
            folder = work / f"reopen-{peer.name.replace(' ', '-')}-{size}"
            started = time.perf_counter()
            await fill_for_reopen(peer, folder, keys, docs)
            filled = time.perf_counter() - started
            figures = open_in_child(peer.name, folder, probe)
            results.reopen[(peer.name, size)] = figures
            results.reopen_disk[(peer.name, size)] = disk_usage(folder)
            print(
                f"reopen {size:,} {peer.name}: {figures['open'] + figures['get']:.3f} s"
                f" (filled in {filled:.0f} s)",
                flush=True,
            )
            if peer.name == "logkv":
                await compact_logkv(folder)
                figures = open_in_child(peer.name, folder, probe)
                results.reopen[("logkv (compacted)", size)] = figures
                results.reopen_disk[("logkv (compacted)", size)] = disk_usage(folder)
                print(f"reopen {size:,} logkv compacted: {figures['open'] + figures['get']:.3f} s")
            shutil.rmtree(folder, ignore_errors=True)


async def compact_logkv(folder: Path) -> None:
    """Compact the logkv store in ``folder`` (as ``logkv-compact`` or ``kvs.compact()`` does)."""
    kvs = await KeyValueStore.open(
        name="bench", configuration=Configuration(storage_dir=str(folder), purge_on_start=False)
    )
    await kvs.compact()
    await kvs.close()


# ---------------------------------------------------------------------------------- prefix listing

#: Keys of the prefix listings fall into this many sites (``site-NN/``): one prefix, 1 %.
SITES = 100


def site_keys(count: int, seed: int) -> list[str]:
    """``count`` keys ``site-NN/page-NNNNNNN`` (page ``n`` on site ``n % 100``), shuffled."""
    numbers = list(range(count))
    random.Random(seed).shuffle(numbers)
    return [f"site-{n % SITES:02d}/page-{n:07d}" for n in numbers]


#: The prefixes listed: ``(label, prefix)``; the second matches 10 keys at any size of at least
#: 2,000 (pages 1000..1999 of one site), so its time shows what the store size adds.
PREFIXES = (("1 % of the keys", "site-42/"), ("10 keys", "site-07/page-00001"))


async def prefix_listing(
    peer: Peer, folder: Path, keys: list[str], rounds: int
) -> list[float] | None:
    """Seconds to list the keys under each of :data:`PREFIXES` in a store of ``keys`` (best of
    ``rounds``), the lists checked; None when the store cannot list them."""
    docs = [{"n": n} for n in range(len(keys))]
    if peer.bulk_load is not None:
        await asyncio.to_thread(peer.bulk_load, folder, list(zip(keys, docs, strict=True)))
        store = await peer.open(folder, False)
    else:
        store = await peer.open(folder, False)
        await timed_sets(store, keys, docs, blob=False)
    if store.list_prefix is None:
        await store.close()
        return None
    best = []
    for _, prefix in PREFIXES:
        expected = sorted(key for key in keys if key.startswith(prefix))
        seconds = float("inf")
        for _ in range(rounds):
            gc.collect()
            start = start_clock()
            found = await store.call(store.list_prefix, prefix)
            seconds = min(seconds, time.perf_counter() - start)
            check(found == expected, f"{peer.name}: the keys under {prefix!r} are listed in order")
        best.append(seconds)
    await store.close()
    return best


async def measure_prefix(
    chosen: list[Peer], settings: Settings, work: Path, results: Results
) -> None:
    """List the keys under a prefix in stores of each of ``settings.prefix_sizes`` keys, for
    each peer that can list them (the others are marked n/a)."""
    for size in settings.prefix_sizes:
        keys = site_keys(size, settings.run.seed + 7)
        for peer in chosen:
            if peer.name == "crawlee file system" and size > 20_000:
                results.notes.append(
                    f"crawlee file system: no prefix listing of {size:,} keys (writing them takes"
                    f" about {size * 1.5e-3 / 60:,.0f} min; see the smaller store)"
                )
                continue
            folder = work / f"prefix-{peer.name.replace(' ', '-')}-{size}"
            seconds = await prefix_listing(peer, folder, keys, settings.rounds)
            shutil.rmtree(folder, ignore_errors=True)
            if seconds is None:
                continue
            for (label, _), took in zip(PREFIXES, seconds, strict=True):
                results.prefix[(peer.name, size, label)] = took
            shown = ", ".join(f"{took * 1e3:.2f} ms" for took in seconds)
            print(f"prefix listing, {peer.name}, {size:,} keys: {shown}", flush=True)


# ---------------------------------------------------------------------------------- durable writes


async def durable_writes(peer: Peer, folder: Path, writers: int, seconds: float) -> float:
    """Acknowledged writes per second with every write synced, from ``writers`` concurrent
    writers (tasks for an async store, threads for a sync one); the writes are checked."""
    store = await peer.open(folder, True)
    doc = {"url": "https://shop.example/item/1", "status": 200, "seen": True}
    if store.is_async:
        counts = [0] * writers
        deadline = time.perf_counter() + seconds
        start = time.perf_counter()

        async def task(number: int) -> None:
            while time.perf_counter() < deadline:
                await store.set_json(f"w{number:02d}-{counts[number]:07d}", doc)
                counts[number] += 1

        await asyncio.gather(*(task(n) for n in range(writers)))
        elapsed = time.perf_counter() - start
    else:

        def write(number: int, done: int) -> None:
            store.set_json(f"w{number:02d}-{done:07d}", doc)

        counts, elapsed = run_writers(writers, seconds, write)
    for number in range(writers):
        if counts[number]:
            key = f"w{number:02d}-{counts[number] - 1:07d}"
            got = await store.call(store.get_json, key)
            check(got == doc, f"{peer.name}: durable write {key} reads back")
    await store.close()
    return sum(counts) / elapsed


async def measure_durable(
    chosen: list[Peer], settings: Settings, work: Path, results: Results
) -> None:
    """Synced writes with 1 and with ``writers`` writers, for each peer that can sync every
    write; first, on a quiet disk (dirty page cache makes every fdatasync wait).

    The raw write + fdatasync loop runs again just before each peer's runs, in each of
    ``settings.rounds`` rounds, so that both see the disk in about the same state; the best of
    each is kept, and logkv's single writer is also compared with the raw run just before it.
    """
    raw_key = ("raw write + fdatasync", 1)
    pairs: dict[str, list[float]] = {}
    for number in range(1, settings.rounds + 1):
        for peer in chosen:
            if peer.fsync_setting is None:
                continue
            os.sync()
            # A frame the size of the records.
            raw = raw_sync_rate(work, os.fdatasync, settings.sync_seconds, body=140)
            results.durable[raw_key] = max(raw, results.durable.get(raw_key, 0.0))
            print(f"durable writes, round {number}, raw loop: {raw:,.0f}/s", flush=True)
            for writers in (1, settings.writers):
                folder = work / f"sync-{peer.name.replace(' ', '-')}-{writers}"
                rate = await durable_writes(peer, folder, writers, settings.sync_seconds)
                key = (peer.name, writers)
                results.durable[key] = max(rate, results.durable.get(key, 0.0))
                shutil.rmtree(folder, ignore_errors=True)
                if writers == 1:
                    pairs.setdefault(peer.name, []).append(rate / raw)
                print(
                    f"durable writes, round {number}, {peer.name}, {writers} writer(s):"
                    f" {rate:,.0f}/s",
                    flush=True,
                )
    for name in ("logkv", "logkv Engine"):
        if name in pairs:
            ratios = ", ".join(f"{ratio:.2f}x" for ratio in pairs[name])
            results.notes.append(
                f"durable writes, {name}, 1 writer against the raw write + fdatasync loop run"
                f" just before it, round by round: {ratios} (median"
                f" {statistics.median(pairs[name]):.2f}x)"
            )


# ---------------------------------------------------------------------------------- profile


async def measure_breakdown(settings: Settings, data: Data, work: Path, results: Results) -> None:
    """Where logkv's time per record goes, layer by layer (best of the rounds), for the small
    JSON records and for the ~1 KB documents."""
    kinds = (
        ("small JSON", data.keys, data.docs, data.gets),
        ("1 KB doc", data.page_keys, data.page_docs, data.page_gets),
    )
    for number in range(settings.rounds):
        for kind, keys, docs, gets in kinds:
            await breakdown_round(kind, keys, docs, gets, work / f"parts-{number}", results)
        append_steps(data.page_keys, data.page_docs, work / f"steps-{number}", results)
    counts = {kind: len(keys) for kind, keys, _, _ in kinds}
    for name in list(results.parts):
        results.parts[name] /= counts[name.split(": ", 1)[0]]


async def breakdown_round(
    kind: str,
    keys: list[str],
    docs: list[dict[str, Any]],
    gets: list[str],
    folder: Path,
    results: Results,
) -> None:
    """One round of the breakdown of ``kind`` records (each part's total seconds kept under
    ``"{kind}: {part}"``)."""
    encoded = [encode(doc) for doc in docs]
    start = start_clock()
    for doc in docs:
        encode(doc)
    results.keep_part(
        f"{kind}: encode (content.encode: check + orjson)", time.perf_counter() - start
    )
    with Engine.open(folder / "engine") as engine:
        set_, get = engine.set, engine.get
        start = start_clock()
        for key, (value, content_type) in zip(keys, encoded, strict=True):
            set_(key, value, content_type)
        results.keep_part(
            f"{kind}: Engine.set (frame, chain, write(), index)", time.perf_counter() - start
        )
        start = start_clock()
        for key in gets:
            get(key)
        results.keep_part(
            f"{kind}: Engine.get (index, copy from the map, CRC)", time.perf_counter() - start
        )
    kvs = await KeyValueStore.open(
        name="parts", configuration=Configuration(storage_dir=str(folder), purge_on_start=False)
    )
    start = start_clock()
    for key, doc in zip(keys, docs, strict=True):
        await kvs.set_value(key, doc)
    results.keep_part(
        f"{kind}: KeyValueStore.set_value (all of the above + facade)",
        time.perf_counter() - start,
    )
    start = start_clock()
    for key in gets:
        await kvs.get_value(key)
    results.keep_part(
        f"{kind}: KeyValueStore.get_value (get + decode + facade)", time.perf_counter() - start
    )
    await kvs.close()
    shutil.rmtree(folder, ignore_errors=True)


def append_steps(keys: list[str], docs: list[dict[str, Any]], path: Path, results: Results) -> None:
    """The steps of one append of a ~1 KB document, each timed over every document on its own
    (kept under ``"1 KB doc: step: ..."``): the same steps ``Engine.set`` takes, without the
    engine's lock, checks and index."""
    encoded = [encode(doc) for doc in docs]
    bodies = [
        _pack_body((seq, 1_700_000_000_000_000, 1, key, content_type, value))
        for seq, (key, (value, content_type)) in enumerate(zip(keys, encoded, strict=True), 1)
    ]
    chain_of = FRAME_KINDS[RECORD_MAGIC].chain
    chain = GENESIS_CHAIN
    parts: list[tuple[str, Callable[[], object]]] = [
        (
            "msgpack body",
            lambda: [
                _pack_body((1, 1_700_000_000_000_000, 1, key, content_type, value))
                for key, (value, content_type) in zip(keys, encoded, strict=True)
            ],
        ),
        ("BLAKE3 chain value", lambda: [chain_of(chain, body) for body in bodies]),
        ("CRC-32C of the frame", lambda: [checksum(body) for body in bodies]),
        (
            "whole frame (format.encode_record: the three above + header)",
            lambda: [
                encode_record(1, 1_700_000_000_000_000, 1, key, content_type, value, chain)
                for key, (value, content_type) in zip(keys, encoded, strict=True)
            ],
        ),
    ]
    for name, run in parts:
        start = start_clock()
        run()
        results.keep_part(f"1 KB doc: step: {name}", time.perf_counter() - start)
    frames = [
        encode_record(1, 1_700_000_000_000_000, 1, key, content_type, value, chain)
        for key, (value, content_type) in zip(keys, encoded, strict=True)
    ]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write, offset = os.pwrite, 0
        start = start_clock()
        for frame in frames:
            write(fd, frame, offset)
            offset += len(frame)
        results.keep_part("1 KB doc: step: os.pwrite of the frame", time.perf_counter() - start)
    finally:
        os.close(fd)
        path.unlink()


# ---------------------------------------------------------------------------------- main


async def measure(settings: Settings, results: Results) -> None:
    """Every measurement, in an order that keeps them from disturbing each other."""
    chosen = [p for p in peers() if not settings.only or p.name in settings.only]
    results.peers = chosen
    data = make_data(settings)
    with settings.run.scratch() as work:
        await measure_durable(chosen, settings, work, results)
        if settings.durable_only:
            return
        await measure_rounds(chosen, settings, data, work, results)
        await measure_breakdown(settings, data, work, results)
        await measure_prefix(chosen, settings, work, results)
        await measure_reopen(chosen, settings, work, results)


def parser() -> argparse.ArgumentParser:
    """The command line: the common options and the peer benchmark's own."""
    parser = SCRIPT.parser()
    parser.add_argument(
        "--records", type=positive_int, help="small JSON records (20,000; quick 2,000)"
    )
    parser.add_argument(
        "--reopen",
        type=str,
        help="store sizes to reopen, comma-separated (100000,1000000; quick 20000)",
    )
    parser.add_argument(
        "--rounds", type=positive_int, help="rounds of the in-process workloads (3; quick 2)"
    )
    parser.add_argument(
        "--sync-seconds",
        type=positive_float,
        help="length of each durable-write run (2 s; quick 0.5 s)",
    )
    parser.add_argument(
        "--writers", type=positive_int, default=64, help="concurrent durable writers (64)"
    )
    parser.add_argument("--only", type=str, default="", help="comma-separated peer names to run")
    parser.add_argument(
        "--durable-only", action="store_true", help="run the durable writes only, nothing else"
    )
    return parser


def settings_from(args: argparse.Namespace, run: Run) -> Settings:
    """Fill in the defaults that depend on ``--quick``."""
    quick = run.quick
    records = args.records or (2_000 if quick else 20_000)
    reopen = args.reopen or ("20000" if quick else "100000,1000000")
    return Settings(
        run=run,
        records=records,
        hot_keys=16,
        overwrites=max(records // 4, 16),
        values=VALUES_QUICK if quick else VALUES,
        reopen_sizes=tuple(int(size) for size in reopen.split(",") if size),
        prefix_sizes=(records, 10 * records),
        sync_seconds=args.sync_seconds or (0.5 if quick else 2.0),
        writers=args.writers,
        rounds=args.rounds or (2 if quick else 3),
        only=tuple(name.strip() for name in args.only.split(",") if name.strip()),
        durable_only=args.durable_only,
    )


def describe(settings: Settings) -> str:
    """The sizes of this run, in words."""
    sizes = ", ".join(f"{size:,}" for size in settings.reopen_sizes)
    values = ", ".join(f"{count} of {size >> 20} MiB" for size, count in settings.values)
    listed = " and ".join(f"{size:,}" for size in settings.prefix_sizes)
    if settings.durable_only:
        return (
            f"durable writes only, for {settings.sync_seconds:g} s with 1 and"
            f" {settings.writers} writers, each after a raw write + fdatasync run;"
            f" best of {settings.rounds} rounds"
        )
    return (
        f"{settings.records:,} small JSON records; {settings.overwrites:,} overwrites of"
        f" {settings.hot_keys} hot keys; {values} values; reopen of {sizes}"
        f" keys; prefix listings in stores of {listed} keys; durable writes for"
        f" {settings.sync_seconds:g} s with 1 and {settings.writers}"
        f" writers; best of {settings.rounds} rounds"
    )


def benchmark(args: argparse.Namespace, run: Run) -> str:
    """Measure what ``args`` ask for; write the chart next to the results file; the results as
    Markdown."""
    settings = settings_from(args, run)
    results = Results(describe(settings), date=run.date)
    asyncio.run(measure(settings, results))
    chart = run.out.with_suffix(".png") if run.out is not None else None
    if chart is not None:
        chart.parent.mkdir(parents=True, exist_ok=True)
        write_chart(results, chart)
        print(f"chart written to {chart}")
    return render(results, run, chart)


def probe(args: list[str]) -> dict[str, float]:
    """``--probe NAME DIR KEY``: :func:`probe_open` in this process."""
    name, folder, key = args
    return asyncio.run(probe_open(name, Path(folder), key))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the results and write them (and the chart) to ``--out``."""
    return SCRIPT.main(argv, parser(), benchmark, probe)


if __name__ == "__main__":
    sys.exit(main())
