"""Benchmark of the synchronous engine (:class:`logkv.Engine`) against this machine's raw limits.

Run from the repository root::

    python -m benchmarks.bench_engine            # 1M records, best of 3 rounds, writes the results
    python -m benchmarks.bench_engine --quick    # 50k records, best of 3 rounds, prints only
    python -m benchmarks.bench_engine --records 200000 --out other.md
    python -m benchmarks.bench_engine --light    # 10M records of 100 B, 1 round, no compaction

The light mode measures the index at ten times the usual size in a run of 8-10 minutes on
two quiet cores (an estimate; about 5 GB of memory): small values keep the log and the page
cache small, one round and no compaction keep the time down; everything else is measured as
in the full mode.

Everything is measured in one process run, so the ratios between figures hold. The stores live
in a temporary folder in the repository root (on the same disk as the repository, never a RAM
disk), removed at the end. Targets are reported as PASS/MISS; a miss never makes the run fail.
A wrong answer from the engine (a missing key, a wrong value, a wrong count) does: figures from
a broken engine are meaningless.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import shutil
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING
from unittest import mock

from logkv import Durability, Engine

from .harness import (
    TARGETS_NOTE,
    Report,
    Run,
    Script,
    check,
    per_second,
    positive_float,
    positive_int,
    rate,
    results_file,
    run_writers,
    section,
    slowest_note,
)
from .machine import disk_usage, rss_anon
from .workload import (
    BINARY_TYPE,
    POOL_MASK,
    VALUE_POOL,
    make_keys,
    make_values,
    raw_sync_rate,
    raw_write_loop,
)

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike

SCRIPT = Script(
    "bench_engine",
    "Benchmark logkv's synchronous engine and write a Markdown results file.",
    Path("benchmarks/results/engine.md"),
)
VALUE_SIZE = 1000
FULL_RECORDS = 1_000_000
QUICK_RECORDS = 50_000
#: The light mode (``--light``): many records of small values, one round, no compaction.
LIGHT_RECORDS = 10_000_000
LIGHT_VALUE_SIZE = 100
LIGHT_OUT = Path("benchmarks/results/engine-light.md")


@dataclass(frozen=True)
class Settings:
    """What one run measures and how big it is."""

    run: Run
    records: int
    #: Bytes of each value.
    value_size: int
    gets: int
    fsync_seconds: float
    repeat: int
    writers: int
    key_order: str
    #: Whether each round compacts its store and times the open after compaction.
    compaction: bool
    light: bool


def value_for(ordinal: int, values: list[bytes]) -> bytes:
    """The value the benchmark writes for the ``ordinal``-th record (1-based)."""
    return values[ordinal & POOL_MASK]


def key_string_bytes(keys: Iterator[str]) -> int:
    """``sys.getsizeof`` summed over ``keys``: what the key strings themselves occupy."""
    return sum(sys.getsizeof(key) for key in keys)


@contextmanager
def counting_syncs() -> Iterator[list[int]]:
    """Count ``os.fdatasync``/``os.fsync`` calls made by anyone while the block runs.

    Yields a one-element list holding the count. The wrappers add a few hundred nanoseconds to
    a call that costs a fraction of a millisecond or more.
    """
    counter = [0]
    lock = threading.Lock()
    real_fdatasync, real_fsync = os.fdatasync, os.fsync

    def wrap(
        real: Callable[[FileDescriptorLike], None],
    ) -> Callable[[FileDescriptorLike], None]:
        def counted(fd: FileDescriptorLike) -> None:
            with lock:
                counter[0] += 1
            real(fd)

        return counted

    with (
        mock.patch.object(os, "fdatasync", wrap(real_fdatasync)),
        mock.patch.object(os, "fsync", wrap(real_fsync)),
    ):
        yield counter


# ---------------------------------------------------------------------------------- engine phases


def engine_append(engine: Engine, keys: list[str], values: list[bytes]) -> float:
    """Seconds to ``set`` every key once (the value of the ``n``-th key: :func:`value_for`)."""
    set_ = engine.set
    start = time.perf_counter()
    for ordinal, key in enumerate(keys, 1):
        set_(key, values[ordinal & POOL_MASK], BINARY_TYPE)
    return time.perf_counter() - start


def engine_gets(
    engine: Engine, keys: list[str], values: list[bytes], count: int, seed: int
) -> float:
    """Seconds for ``count`` point gets of keys drawn at random (seeded) from ``keys``."""
    rng = random.Random(seed)
    picks = [rng.randrange(len(keys)) for _ in range(count)]
    sample = [keys[i] for i in picks]
    get = engine.get
    start = time.perf_counter()
    for key in sample:
        get(key)
    elapsed = time.perf_counter() - start
    for i in picks[:100]:  # spot-check answers outside the timed loop
        check(engine.get(keys[i]) == value_for(i + 1, values), f"wrong value for {keys[i]}")
    check(engine.get("page-absent", None) is None, "an absent key returned a value")
    return elapsed


def engine_iterate(engine: Engine, expected: int) -> float:
    """Seconds to walk every key in order with :meth:`Engine.keys` (counting them)."""
    count = 0
    start = time.perf_counter()
    for _ in engine.keys():  # noqa: SIM118 - Engine is not iterable; keys() is measured
        count += 1
    elapsed = time.perf_counter() - start
    check(count == expected, f"keys() yielded {count} keys, expected {expected}")
    return elapsed


def traced_open(folder: Path) -> tuple[Engine, int, int]:
    """Open the store under ``tracemalloc``: the engine, bytes it holds, peak while opening."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        engine = Engine.open(folder)
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return engine, current - base, peak - base


def rss_probe(folder: Path) -> dict[str, int]:
    """In this (fresh) process: anonymous RSS before and after opening the store at ``folder``."""
    gc.collect()
    before = rss_anon() or 0
    engine = Engine.open(folder, readonly=True)
    after = rss_anon() or 0
    try:
        keys = len(engine)
        key_bytes = key_string_bytes(engine.keys())
    finally:
        engine.close()
    return {"before": before, "after": after, "keys": keys, "key_bytes": key_bytes}


@dataclass(frozen=True)
class FsyncRun:
    """Outcome of a timed run of concurrent writers under ``Durability.FSYNC``."""

    writes: int
    seconds: float
    syncs: int

    @property
    def per_second(self) -> float:
        """Writes per second."""
        return rate(self.writes, self.seconds)


def fsync_writers(folder: Path, threads: int, seconds: float, values: list[bytes]) -> FsyncRun:
    """``threads`` threads ``set`` distinct records (values from ``values``) for ``seconds``
    on one FSYNC store."""
    engine = Engine.open(folder, durability=Durability.FSYNC)
    try:
        set_ = engine.set

        def write(number: int, done: int) -> None:
            set_(f"fsync-{number:03d}-{done:08d}", values[done & POOL_MASK], BINARY_TYPE)

        with counting_syncs() as syncs:
            counts, elapsed = run_writers(threads, seconds, write)
        check(len(engine) == sum(counts), "not every acknowledged fsync write is in the index")
    finally:
        engine.close()
    return FsyncRun(sum(counts), elapsed, syncs[0])


# ---------------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class Workload:
    """The keys in the order they are written, the pool of values, and the value of each key
    in that order (:func:`value_for` its ordinal), made before any clock starts."""

    keys: list[str]
    pool: list[bytes]
    values: list[bytes]


def measure(settings: Settings, report: Report) -> None:
    """Run every measurement in order, adding rows and notes to ``report``."""
    n = settings.records
    print(f"preparing {n:,} keys ({settings.key_order}) and {VALUE_POOL} random values", flush=True)
    seed = settings.run.seed
    keys = make_keys("page-", n, seed if settings.key_order == "shuffled" else None)
    pool = make_values(settings.value_size, seed)
    workload = Workload(keys, pool, [value_for(i, pool) for i in range(1, n + 1)])
    with settings.run.scratch() as work:
        _measure_in(work, settings, report, workload)


@dataclass(frozen=True)
class Round:
    """Seconds taken by each bulk phase in one round (one fresh store)."""

    raw: float
    append: float
    get: float
    first_iterate: float  # the first ordered read: merges the keys appended into the index
    iterate: float
    replay: float
    #: Open after compaction (the snapshot's hint, no segment to scan); None without compaction.
    compacted_open: float | None
    log_bytes: int


def timed_open(store: Path, workload: Workload, source: str, *, compact: bool = False) -> float:
    """Seconds to open the store at ``store`` (checked: every key there, the first and last
    values right); then, with ``compact``, compact it (untimed)."""
    keys, pool, n = workload.keys, workload.pool, len(workload.keys)
    gc.collect()
    start = time.perf_counter()
    engine = Engine.open(store)
    seconds = time.perf_counter() - start
    try:
        check(len(engine) == n, f"{len(engine)} keys after an open from {source}, expected {n}")
        check(engine.get(keys[0]) == value_for(1, pool), f"wrong value from {source}")
        check(engine.get(keys[-1]) == value_for(n, pool), f"wrong value from {source}")
        if compact:
            engine.compact()
    finally:
        engine.close()
    return seconds


def run_round(store: Path, work: Path, settings: Settings, workload: Workload) -> Round:
    """Raw loop, then append/get/iterate on a fresh store at ``store``, then replay it (and,
    with ``settings.compaction``, compact it and open it again)."""
    n = settings.records
    keys, pool = workload.keys, workload.pool
    gc.collect()
    raw_seconds = raw_write_loop(work / "raw.log", keys, workload.values, BINARY_TYPE)
    engine = Engine.open(store)
    try:
        gc.collect()
        append_seconds = engine_append(engine, keys, pool)
        check(len(engine) == n, f"{len(engine)} keys after {n} appends")
        gc.collect()
        get_seconds = engine_gets(engine, keys, pool, settings.gets, settings.run.seed + 1)
        gc.collect()
        first_iterate_seconds = engine_iterate(engine, n)
        gc.collect()
        iterate_seconds = engine_iterate(engine, n)
        engine.wait_for_hints()  # as after any pause: the sealed segments' hints are written
    finally:
        engine.close()
        del engine
    log_bytes = disk_usage(store)[1]
    replay_seconds = timed_open(store, workload, "the log", compact=settings.compaction)
    compacted_seconds = timed_open(store, workload, "the snapshot") if settings.compaction else None
    return Round(
        raw_seconds,
        append_seconds,
        get_seconds,
        first_iterate_seconds,
        iterate_seconds,
        replay_seconds,
        compacted_seconds,
        log_bytes,
    )


def _measure_in(work: Path, settings: Settings, report: Report, workload: Workload) -> None:
    # Syncs first: behind a gigabyte of dirty page cache left by the bulk phases, every
    # fdatasync waits for writeback and runs 10-20x slower than on a quiet disk.
    _measure_syncs(work, settings, report, workload.pool)
    store = work / "store"
    _measure_bulk(store, work, settings, report, workload)
    print("index memory", flush=True)
    _measure_memory(store, settings.records, report)
    shutil.rmtree(store)


def _measure_syncs(work: Path, settings: Settings, report: Report, values: list[bytes]) -> None:
    """Raw sync loops and the engine under ``Durability.FSYNC`` with 1 and many writers.

    The four runs alternate, ``settings.repeat`` times, so each sees the disk in about the same
    state as its neighbours; the best of each is reported.
    """
    print(f"sync rounds, {settings.fsync_seconds:g} s per run", flush=True)
    os.sync()  # start without anyone's pending writeback in the way
    seconds, frame_body = settings.fsync_seconds, settings.value_size + 40
    fdatasyncs: list[float] = []
    fsyncs: list[float] = []
    singles: list[FsyncRun] = []
    manies: list[FsyncRun] = []
    for number in range(1, settings.repeat + 1):
        fdatasyncs.append(raw_sync_rate(work, os.fdatasync, seconds, frame_body))
        fsyncs.append(raw_sync_rate(work, os.fsync, seconds, frame_body))
        singles.append(fsync_writers(work / "fsync", 1, seconds, values))
        shutil.rmtree(work / "fsync")
        manies.append(fsync_writers(work / "fsync", settings.writers, seconds, values))
        shutil.rmtree(work / "fsync")
        print(
            f"  round {number}: raw fdatasync {fdatasyncs[-1]:,.0f}/s, raw fsync "
            f"{fsyncs[-1]:,.0f}/s, FSYNC 1 writer {singles[-1].per_second:,.0f}/s, "
            f"{settings.writers} writers {manies[-1].per_second:,.0f}/s",
            flush=True,
        )

    def shown(rates: list[float]) -> str:
        slowest = per_second(min(rates), "writes/s")
        return per_second(max(rates), "writes/s") + slowest_note(len(rates), slowest)

    raw_fdatasync = max(fdatasyncs)
    report.add("raw write + fdatasync per write", shown(fdatasyncs))
    report.add("raw write + fsync per write", shown(fsyncs))
    single = max(singles, key=lambda run: run.per_second)
    report.add(
        "FSYNC, 1 writer thread",
        f"{shown([run.per_second for run in singles])} ({single.syncs:,} syncs for "
        f"{single.writes:,} writes; {single.per_second / raw_fdatasync:.2f}x raw fdatasync)",
    )
    many = max(manies, key=lambda run: run.per_second)
    ratio = many.per_second / single.per_second if single.per_second else float("inf")
    batch = many.writes / many.syncs if many.syncs else float("nan")
    report.add(
        f"FSYNC, {settings.writers} writer threads (group commit)",
        f"{shown([run.per_second for run in manies])}; {ratio:.1f}x 1 writer "
        f"({many.syncs:,} syncs for {many.writes:,} writes, {batch:.1f} writes/sync)",
        "≥ 10x 1 writer",
        ratio >= 10,
    )


def _measure_bulk(
    store: Path, work: Path, settings: Settings, report: Report, workload: Workload
) -> None:
    """Rounds of raw loop and engine append/get/iterate/replay; rows for the best of each."""
    n, gets = settings.records, settings.gets
    rounds: list[Round] = []
    for number in range(1, settings.repeat + 1):
        if store.exists():
            shutil.rmtree(store)
        print(f"round {number}/{settings.repeat}: raw loop and engine, {n:,} records", flush=True)
        done = run_round(store, work, settings, workload)
        rounds.append(done)
        compacted = (
            f", after compaction {done.compacted_open:.2f} s"
            if done.compacted_open is not None
            else ""
        )
        print(
            f"  raw {rate(n, done.raw):,.0f} rec/s, append {rate(n, done.append):,.0f} rec/s, "
            f"get {rate(gets, done.get):,.0f}/s, iterate {done.first_iterate:.3f} s"
            f" then {done.iterate:.3f} s, open {done.replay:.2f} s{compacted}"
            f" ({settings.run.elapsed():.0f} s into the run)",
            flush=True,
        )

    def best(phase: Callable[[Round], float], show: Callable[[float], str]) -> tuple[float, str]:
        """The best time of ``phase`` over the rounds, and the note on the slowest."""
        times = [phase(r) for r in rounds]
        return min(times), slowest_note(len(times), show(max(times)))

    def per_n(seconds: float) -> str:
        return per_second(rate(n, seconds), "rec/s")

    def plain(seconds: float) -> str:
        return f"{seconds:.3f} s"

    raw_seconds, raw_note = best(lambda r: r.raw, per_n)
    raw = rate(n, raw_seconds)
    report.add("raw pack + frame + os.write loop", per_second(raw, "rec/s") + raw_note)
    append_seconds, append_note = best(lambda r: r.append, per_n)
    append = rate(n, append_seconds)
    report.add(
        f"append {n:,} records of {settings.value_size:,} B values",
        f"{per_second(append, 'rec/s')} ({append_seconds:.2f} s; {append / raw:.2f}x raw"
        f"{append_note})",
        "≥ 150,000 rec/s",
        append >= 150_000,
    )
    get_seconds, get_note = best(lambda r: r.get, lambda t: per_second(rate(gets, t), "gets/s"))
    get_rate = rate(gets, get_seconds)
    report.add(
        f"point get, {gets:,} random keys",
        per_second(get_rate, "gets/s") + get_note,
        "≥ 200,000 gets/s",
        get_rate >= 200_000,
    )
    first_seconds, first_note = best(lambda r: r.first_iterate, plain)
    report.add(
        f"first ordered iteration after the appends (merges {n:,} new keys into the sorted keys)",
        f"{first_seconds:.3f} s{first_note}",
    )
    iterate_seconds, iterate_note = best(lambda r: r.iterate, plain)
    per_million = iterate_seconds * 1_000_000 / n
    report.add(
        f"ordered iteration of {n:,} keys (keys())",
        f"{iterate_seconds:.3f} s ({per_million:.3f} s per 1M keys{iterate_note})",
        "≤ 1 s per 1M keys",
        per_million <= 1.0,
    )
    replay_seconds, replay_note = best(lambda r: r.replay, per_n)
    replay = rate(n, replay_seconds)
    log_mb = rounds[-1].log_bytes / 1e6
    per_million = replay_seconds * 1_000_000 / n
    report.add(
        f"open from the log ({n:,} records, {log_mb:,.0f} MB log, sealed segments' hints)",
        f"{replay_seconds:.2f} s, {per_second(replay, 'rec/s')} ({per_million:.2f} s per 1M"
        f" keys{replay_note})",
        "≤ 1.0 s per 1M keys",
        per_million <= 1.0,
    )
    if not settings.compaction:
        return
    # with compaction, every round measured the open after it
    compacted_seconds, compacted_note = best(lambda r: r.compacted_open or 0.0, plain)
    per_million = compacted_seconds * 1_000_000 / n
    report.add(
        f"open after compaction ({n:,} keys in the snapshot)",
        f"{compacted_seconds:.3f} s ({per_million:.2f} s per 1M keys{compacted_note})",
        "≤ 0.5 s per 1M keys",
        per_million <= 0.5,
    )


def _measure_memory(store: Path, n: int, report: Report) -> None:
    engine, held, peak = traced_open(store)
    try:
        key_bytes = key_string_bytes(engine.keys())
        check(len(engine) == n, "wrong key count in the traced open")
    finally:
        engine.close()
        del engine
    per_key = (held - key_bytes) / n
    report.add(
        "index memory beyond the key (tracemalloc)",
        f"{per_key:,.0f} B/key (engine holds {held / 1e6:,.0f} MB, key strings "
        f"{key_bytes / 1e6:,.0f} MB; peak while opening {peak / n:,.0f} B/key)",
        "≤ 100 B/key",
        per_key <= 100,
    )
    probe = SCRIPT.in_child(str(store))
    if not probe["after"]:
        report.notes.append("The RSS cross-check could not run (no /proc/self/status?).")
        return
    rss_per_key = (probe["after"] - probe["before"] - probe["key_bytes"]) / probe["keys"]
    report.add(
        "index memory beyond the key (RssAnon, fresh process)",
        f"{rss_per_key:,.0f} B/key (RssAnon +{(probe['after'] - probe['before']) / 1e6:,.0f} MB)",
    )


# ---------------------------------------------------------------------------------- output


METHOD = [
    "**Workload.** Distinct keys `page-0000001` ... (`page-` and a zero-padded number), written in"
    " {order} order (seeded). Values are {value_size:,} random bytes (incompressible), drawn"
    " round-robin from a pool of {pool} distinct values made up front; every record carries the"
    " content type `{ctype}`. Keys and values exist before any clock starts; `gc.collect()`"
    " runs between phases.",
    "**Raw limit.** A plain Python loop that msgpack-packs (with one reused packer, as the"
    " engine does) the same 6-field body the engine writes"
    " (seq, timestamp, op, key, content type, value), puts an 8-byte header (length, CRC-32) in"
    " front of it and `os.write`s it to an `O_APPEND` file, for the same keys and values: about"
    " the fastest a Python writer of such a format can go here. It does nothing more, so the"
    " ratio to it shows the engine's own work per record (its frame format, locking, index"
    " update). The `fdatasync`/`fsync` rows"
    " write a frame of the same size and sync after every write, for {fsync_seconds:g} s each.",
    "**Rounds.** The raw loop and the append, get, iteration and replay phases run in rounds of"
    " their own (a fresh store each, raw loop first so both see the same conditions); with more"
    " than one round (`--repeat`, default 3) the best of each phase is reported, with the slowest"
    " alongside: on a shared machine the best is the most repeatable figure. This run: {repeat}"
    " round(s).",
    "**Order.** The sync measurements (raw `fdatasync`/`fsync` loops and `Durability.FSYNC`) run"
    " first, after an `os.sync()`, on a quiet disk: behind the gigabyte of dirty page cache the"
    " bulk phases leave, each `fdatasync` waits for writeback and ran 10-20x slower in trials."
    " The four sync runs alternate, once per round, and the best of each is reported; the"
    " 1-writer/{writers}-writer ratio compares the two bests.",
    "**Append** is `Engine.set(key, value, content_type)` for every key on a fresh store at the"
    " default durability (`Durability.PROCESS`).",
    "**Point get** is `Engine.get(key)` for keys drawn at random from the stored ones; the log was"
    " just written, so it is in the page cache (warm reads). 100 answers are checked afterwards.",
    "**Ordered iteration** is a counting `for` loop over `Engine.keys()` (the count is checked),"
    " twice. Appends do not insert new keys into the sorted keys one by one: the first ordered"
    " read merges them (one sort), so the first walk after the appends includes that merge and"
    " the second is the walk alone.",
    "**Open from the log** is `Engine.open()` of the closed store, page cache warm: the sealed"
    " segments' hint files (written in the background after each rotation; the round waits for"
    " them with `Engine.wait_for_hints()` before closing) give their records' locations, the"
    " last segment is scanned (every frame read and checked), and the sorted index is built."
    " {compaction}",
    "**Index memory.** The store is opened again with `tracemalloc` tracing. The bytes still"
    " allocated after the open (and a `gc.collect()`) minus those allocated before are what the"
    " engine holds. From that the key strings themselves are subtracted (`sys.getsizeof` of every"
    " key in the index), and the rest is divided by the number of keys: what each key costs"
    " beyond its string (the packed entry `int`, its dict slot, its sorted-list slot). The peak is"
    " the most memory traced at any moment of the open, per key, key strings included."
    " Cross-check: a fresh interpreter opens the store read-only; the growth of its `RssAnon`"
    " (anonymous resident memory, so the memory-mapped log does not count), minus the key"
    " strings, divided by the keys. RSS also counts allocator slack and memory freed during the"
    " open but not returned to the system.",
    "**fsync durability.** A fresh store with `Durability.FSYNC`; 1 thread, then {writers}"
    " threads, each `set` distinct records of {value_size:,} B values in a loop for"
    " {fsync_seconds:g} s. Writes/s is"
    " acknowledged writes over the wall time. Syncs are counted by wrapping `os.fdatasync` and"
    " `os.fsync` while the writers run (any sync the engine makes, e.g. on segment rotation,"
    " counts).",
]
#: What the method says of compaction, with it and without it.
COMPACTION = {
    True: "**Open after compaction** compacts that store, then times `Engine.open()` again: the"
    " snapshot's hint block gives the whole index.",
    False: "No compaction in this run (`--no-compaction`, the light mode's default): the open"
    " after compaction is not measured.",
}


def render(settings: Settings, report: Report) -> str:
    """The results as a Markdown document."""
    run = settings.run
    mode = ("quick light" if run.quick else "light") if settings.light else run.mode
    method = (
        bullet.format(
            order=settings.key_order,
            pool=VALUE_POOL,
            ctype=BINARY_TYPE,
            value_size=settings.value_size,
            compaction=COMPACTION[settings.compaction],
            fsync_seconds=settings.fsync_seconds,
            writers=settings.writers,
            repeat=settings.repeat,
        )
        for bullet in METHOD
    )
    return results_file(
        run,
        "logkv engine benchmark",
        f"Mode: {mode}, {settings.records:,} records of {settings.value_size:,} B values,"
        f" {settings.repeat} round(s), {'with' if settings.compaction else 'no'} compaction,"
        f" whole run {run.elapsed():.0f} s.",
        section("Results", [*report.table(), "", TARGETS_NOTE]),
        method=method,
        notes=report.notes,
    )


# ---------------------------------------------------------------------------------- CLI


def parser() -> argparse.ArgumentParser:
    """The command line: the common options and the engine benchmark's own."""
    parser = SCRIPT.parser()
    parser.add_argument(
        "--light",
        action="store_true",
        help=f"{LIGHT_RECORDS:,} records of {LIGHT_VALUE_SIZE} B values, 1 round, no"
        f" compaction (each can be changed by its own option); writes {LIGHT_OUT} unless --out",
    )
    parser.add_argument(
        "--records",
        type=positive_int,
        default=None,
        help=f"records to write and replay (default {FULL_RECORDS:,}; {QUICK_RECORDS:,} quick;"
        f" {LIGHT_RECORDS:,} light)",
    )
    parser.add_argument(
        "--value-size",
        type=positive_int,
        default=None,
        help=f"bytes of each value (default {VALUE_SIZE:,}; {LIGHT_VALUE_SIZE} light)",
    )
    parser.add_argument(
        "--gets", type=positive_int, default=None, help="point gets (default min(records, 200k))"
    )
    parser.add_argument(
        "--fsync-seconds",
        type=positive_float,
        default=None,
        help="length of each sync run (default 1 s; quick 0.5 s)",
    )
    parser.add_argument(
        "--repeat",
        type=positive_int,
        default=None,
        help="rounds of every timed phase but memory, the best one kept (default 3; 1 light)",
    )
    parser.add_argument(
        "--compaction",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compact each round's store and time the open after compaction (default: yes;"
        " no when light)",
    )
    parser.add_argument(
        "--writers", type=positive_int, default=64, help="concurrent fsync writers (default 64)"
    )
    parser.add_argument(
        "--key-order",
        choices=["shuffled", "sequential"],
        default="shuffled",
        help="order the keys are written in (default shuffled)",
    )
    return parser


def settings_for(args: argparse.Namespace, run: Run) -> Settings:
    """The settings ``args`` ask for: each option given, else its default for the mode (quick,
    light, full; quick sizes win over light ones)."""
    light: bool = args.light
    default_records = QUICK_RECORDS if run.quick else LIGHT_RECORDS if light else FULL_RECORDS
    records: int = args.records or default_records
    return Settings(
        run=run,
        records=records,
        value_size=args.value_size or (LIGHT_VALUE_SIZE if light else VALUE_SIZE),
        gets=args.gets or min(records, 200_000),
        fsync_seconds=args.fsync_seconds or (0.5 if run.quick else 1.0),
        repeat=args.repeat or (1 if light else 3),
        writers=args.writers,
        key_order=args.key_order,
        compaction=not light if args.compaction is None else args.compaction,
        light=light,
    )


def benchmark(args: argparse.Namespace, run: Run) -> str:
    """Measure what ``args`` ask for; the results as Markdown."""
    settings = settings_for(args, run)
    report = Report()
    measure(settings, report)
    return render(settings, report)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the results and write them to ``--out`` (by default the light
    mode's own results file for ``--light``, so a light run leaves the full run's alone)."""
    command_line = parser()
    light = command_line.parse_args(argv).light
    script = replace(SCRIPT, default_out=LIGHT_OUT) if light else SCRIPT
    return script.main(argv, command_line, benchmark, lambda args: rss_probe(Path(args[0])))


if __name__ == "__main__":
    sys.exit(main())
