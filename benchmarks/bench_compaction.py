"""Benchmark of compaction, snapshots and history (`Engine.compact`, `logkv.history`).

Run from the repository root::

    python -m benchmarks.bench_compaction            # 1M keys x 10 writes, 10M-record archive
    python -m benchmarks.bench_compaction --quick    # small sizes, a minute or less, prints only
    python -m benchmarks.bench_compaction --keys 200000 --out other.md

Three parts, measured in one process run:

1. *Compaction.* A store holding 1M keys, each written ``--overwrites`` times, is compacted
   while a writer thread keeps calling ``set()``: compaction throughput, disk after compaction
   against the live bytes, the longest single ``set()`` during compaction (and its p99), the
   longest lock hold compaction reports, and open of the compacted store.
2. *Hash chain.* What the per-record BLAKE3 of the hash chain costs an append:
   :func:`logkv.format.encode_record` against the same framing without the hash, next to the
   full ``Engine.set``.
3. *History.* :func:`logkv.history.key_history` of one key in a 10M-record log compacted with
   retention archive, and :func:`logkv.history.state_at` once.

The stores live in a temporary folder in the repository root (the repository's disk, never a
RAM disk), removed at the end. Targets are reported as PASS/MISS; a miss never makes the run
fail. A wrong answer from the engine does: figures from a broken engine are meaningless.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import shutil
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from logkv import Engine
from logkv.compaction import CompactionResult
from logkv.format import (
    CHAIN_SIZE,
    FRAME_HEADER,
    FRAME_HEADER_SIZE,
    GENESIS_CHAIN,
    MAX_BODY_SIZE,
    RECORD_MAGIC,
    SetRecord,
    checksum,
    encode_record,
)
from logkv.history import key_history, state_at
from logkv.layout import ARCHIVE_DIR, list_segments
from logkv.modes import Retention

from .harness import (
    GB,
    MB,
    TARGETS_NOTE,
    Report,
    Run,
    Script,
    check,
    ms,
    non_negative_float,
    percentile,
    positive_int,
    rate,
    repeat_timed,
    results_file,
    section,
)
from .machine import dirty_bytes, disk_usage
from .workload import BINARY_TYPE, POOL_MASK, VALUE_POOL, make_keys, make_values

SCRIPT = Script(
    "bench_compaction",
    "Benchmark logkv's compaction, hash chain and history; write Markdown.",
    Path("benchmarks/results/compaction.md"),
)
#: The value of the history part's records: the round number, 8 bytes little-endian.
HISTORY_VALUE_SIZE = 8

#: Targets (seconds, ratios, percent).
TARGET_DISK_RATIO = 1.2
TARGET_OPEN_S = 0.5  # per 1M keys
TARGET_STALL_S = 0.020
TARGET_CHAIN_PCT = 10.0

_CHAIN_START = FRAME_HEADER_SIZE - CHAIN_SIZE

Encoder = Callable[[int, int, int, str, str | None, bytes | None, bytes], bytes]


# ---------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """What one run measures and how big it is."""

    run: Run
    keys: int
    overwrites: int
    value_size: int
    chain_records: int
    history_records: int
    history_keys: int
    writer_pause_ms: float
    repeat: int
    runs: int = 1


@dataclass
class Sections:
    """One results table per part of the benchmark, and notes gathered while measuring."""

    compaction: Report = field(default_factory=Report)
    chain: Report = field(default_factory=Report)
    history: Report = field(default_factory=Report)
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------- helpers


class GcWatch:
    """A ``gc.callbacks`` hook that records how long the collector ran while installed.

    A collection walks the tracked objects of its generations, and every object they refer to,
    with the GIL held, so it stalls every thread; packed index entries are not tracked, but the
    lists of sorted keys are, and walking them costs a cache miss per key. Recording the
    passes tells such a stall from a lock hold; the generation of the longest tells a young
    pass (the objects made since the last one) from a full collection.
    """

    def __init__(self) -> None:
        self.longest = 0.0
        self.longest_generation = -1
        self.passes = 0
        self.full_collections = 0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        """Called by the collector at the start and the stop of each collection."""
        if phase == "start":
            self._started = time.perf_counter()
            return
        elapsed = time.perf_counter() - self._started
        generation = int(info.get("generation", -1))
        self.passes += 1
        if elapsed > self.longest:
            self.longest, self.longest_generation = elapsed, generation
        if generation == 2:
            self.full_collections += 1

    def __enter__(self) -> GcWatch:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


# ---------------------------------------------------------------------------------- part 1


@dataclass
class WriterLog:
    """What the writer thread did: ``(due, start, end)`` of every write (``perf_counter``
    times: when it was due, when ``set()`` was called, when it returned), the value index it
    last wrote for each key index, and the error that stopped it, if any."""

    calls: list[tuple[float, float, float]] = field(default_factory=list)
    written: dict[int, int] = field(default_factory=dict)
    error: BaseException | None = None


def paced_writer(
    engine: Engine,
    keys: list[str],
    values: list[bytes],
    pause: float,
    stop: threading.Event,
    log: WriterLog,
    seed: int,
) -> None:
    """Overwrite random keys of the workload until ``stop``, ``pause`` seconds apart; time
    every write from when it was due (the previous one's end plus the pause) and its
    ``set()`` call alone."""
    rng = random.Random(seed)
    clock = time.perf_counter
    set_ = engine.set
    sleep = time.sleep
    append = log.calls.append
    try:
        due = clock()
        while not stop.is_set():
            index, value = rng.randrange(len(keys)), rng.randrange(VALUE_POOL)
            start = clock()
            set_(keys[index], values[value], BINARY_TYPE)
            end = clock()
            append((due, start, end))
            log.written[index] = value
            due = end + pause
            if pause > 0:
                sleep(pause)
    except BaseException as exc:
        log.error = exc


def value_index(key_index: int, round_: int) -> int:
    """Which pool value key ``key_index`` gets in write round ``round_`` (differs per round)."""
    return (key_index * 31 + round_ * 7) & POOL_MASK


def write_rounds(engine: Engine, keys: list[str], values: list[bytes], rounds: range) -> float:
    """Write every key once per round in ``rounds``; return the seconds."""
    set_ = engine.set
    started = time.perf_counter()
    for round_ in rounds:
        for i, key in enumerate(keys):
            set_(key, values[value_index(i, round_)], BINARY_TYPE)
        print(f"    round {round_ + 1}/{rounds.stop} written", flush=True)
    elapsed = time.perf_counter() - started
    check(len(engine) == len(keys), f"{len(engine)} keys after writing {len(keys)}")
    return elapsed


@dataclass(frozen=True)
class CompactionRun:
    """A compaction measured under a writer: its result, the writer's log; for the writes due
    during compaction, their delays (due to done) and ``set()`` durations, each ascending, with
    when the longest of each was due or called; when the copy of the live records ended (times
    in seconds into the compaction), the dirty page cache when it started, and the garbage
    collector's passes meanwhile."""

    result: CompactionResult
    log: WriterLog
    delays: list[float]
    longest_delay_at: float
    latencies: list[float]
    longest_at: float
    copy_ended_at: float
    dirty: int | None
    gc: GcWatch
    #: Objects the garbage collector tracked when the compaction started (what a full
    #: collection walks; the index adds none of its own).
    tracked: int


def compact_under_writer(
    engine: Engine, keys: list[str], values: list[bytes], settings: Settings
) -> CompactionRun:
    """Compact while a writer thread keeps calling ``set()``."""
    log = WriterLog()
    stop = threading.Event()
    pause = settings.writer_pause_ms / 1000
    writer = threading.Thread(
        target=paced_writer,
        args=(engine, keys, values, pause, stop, log, settings.run.seed + 7),
        daemon=True,
    )
    copied = [0.0]

    def progress(done: int, total: int) -> None:
        copied[0] = time.perf_counter()

    gc.collect()
    tracked = len(gc.get_objects())
    os.sync()  # see METHOD: the build's gigabytes of dirty pages are not compaction's doing
    writer.start()
    time.sleep(0.2)  # the writer is in its loop before compaction starts
    dirty = dirty_bytes()
    try:
        with GcWatch() as watch:
            started = time.perf_counter()
            result = engine.compact(retention=Retention.DELETE, progress=progress)
            ended = time.perf_counter()
    finally:
        stop.set()
        writer.join()
    if log.error is not None:
        raise RuntimeError(f"the writer failed: {log.error!r}") from log.error
    calls = [(due, start, end) for due, start, end in log.calls if started <= due < ended]
    check(bool(calls), "the writer made no set() call during compaction")
    check(result.snapshot is not None, "compaction wrote no snapshot")
    delays = sorted((end - due, due - started) for due, _, end in calls)
    durations = sorted((end - start, start - started) for _, start, end in calls)
    return CompactionRun(
        result,
        log,
        [seconds for seconds, _ in delays],
        delays[-1][1],
        [seconds for seconds, _ in durations],
        durations[-1][1],
        copied[0] - started,
        dirty,
        watch,
        tracked,
    )


def add_stall_rows(report: Report, label: str, run: CompactionRun) -> None:
    """The writer's longest wait and longest ``set()``, and compaction's longest lock hold,
    against the target."""
    seconds = run.result.seconds
    for what, during, at in (
        ("writer stall: longest write, due to done", run.delays, run.longest_delay_at),
        ("longest set() call", run.latencies, run.longest_at),
    ):
        longest = during[-1]
        report.add(
            f"{label}: {what}",
            f"{ms(longest)}, {at:,.2f} s into the {seconds:,.2f} s compaction, whose copy "
            f"ended at {run.copy_ended_at:,.2f} s (p99 {ms(percentile(during, 0.99))}, "
            f"p99.9 {ms(percentile(during, 0.999))}, median {ms(percentile(during, 0.5))}; "
            f"{len(during):,} writes)",
            f"<= {ms(TARGET_STALL_S)}",
            longest <= TARGET_STALL_S,
        )
    hold = run.result.longest_lock_hold_s
    report.add(
        f"{label}: longest lock hold (longest_lock_hold_s)",
        f"{ms(hold)} on the clock, {ms(run.result.longest_lock_hold_cpu_s)} of the compacting "
        "thread's CPU time at most in one hold; longest garbage-collector pass "
        f"{ms(run.gc.longest)} (generation {run.gc.longest_generation}; {run.gc.passes:,} "
        f"passes, {run.gc.full_collections} full collection(s); {run.tracked:,} objects tracked "
        "by the collector when the compaction started)",
        f"<= {ms(TARGET_STALL_S)}",
        hold <= TARGET_STALL_S,
    )


def measure_compaction(
    work: Path, settings: Settings, report: Report, notes: list[str]
) -> list[float]:
    """Part 1: build the overwritten store and compact it under a writer; write every key once
    more and compact again (the steady state of a long-running store); open it again. Returns
    the longest writer stall (due to done) of each of the two compactions."""
    n, k = settings.keys, settings.overwrites
    store = work / "compaction"
    print(f"part 1: {n:,} keys x {k} writes of {settings.value_size} B values", flush=True)
    keys = make_keys("page-", n, settings.run.seed)
    values = make_values(settings.value_size, settings.run.seed)
    engine = Engine.open(store)
    try:
        gc.collect()
        build_s = write_rounds(engine, keys, values, range(k))
        before = engine.stats()
        report.add(
            "build: set() of every key, round after round (info)",
            f"{n * k:,} records in {build_s:,.1f} s = {rate(n * k, build_s):,.0f} rec/s; "
            f"log {before.disk_bytes / GB:,.2f} GB in {before.segments} segments, "
            f"live {before.live_bytes / GB:,.3f} GB",
        )
        print("    compacting while a writer thread calls set()", flush=True)
        first = compact_under_writer(engine, keys, values, settings)
        after = engine.stats()
        result = first.result
        assert result.snapshot is not None
        snap_bytes = result.snapshot.stat().st_size
        seconds = result.seconds
        report.add(
            "compaction time",
            f"{seconds:,.1f} s for {result.records:,} live records "
            f"({rate(result.records, seconds):,.0f} rec/s); {result.retired_files} files retired",
        )
        report.add(
            "compaction throughput: log processed",
            f"{rate(result.bytes_before / MB, seconds):,.0f} MB/s "
            f"({result.bytes_before / GB:,.2f} GB of data files before)",
        )
        report.add(
            "compaction throughput: snapshot written",
            f"{rate(snap_bytes / MB, seconds):,.0f} MB/s ({snap_bytes / GB:,.3f} GB snapshot)",
        )
        ratio = after.disk_bytes / after.live_bytes
        report.add(
            "disk after compaction / live bytes",
            f"{ratio:.3f}x ({after.disk_bytes / GB:,.3f} GB on disk, "
            f"{after.live_bytes / GB:,.3f} GB live)",
            f"<= {TARGET_DISK_RATIO}x",
            ratio <= TARGET_DISK_RATIO,
        )
        add_stall_rows(report, "compaction", first)
        verify_store(engine, keys, values, k - 1, first.log.written, settings.run.seed)
        print("    one more round, then compacting again under the writer", flush=True)
        write_rounds(engine, keys, values, range(k, k + 1))
        second = compact_under_writer(engine, keys, values, settings)
        add_stall_rows(report, "second compaction (one more round written)", second)
        verify_store(engine, keys, values, k, second.log.written, settings.run.seed)
        for label, run in (("first", first), ("second", second)):
            calls = len(run.delays)
            dirty = "unknown" if run.dirty is None else f"{run.dirty / MB:,.0f} MB"
            notes.append(
                f"During the {label} compaction ({run.result.seconds:,.1f} s) the writer thread "
                f"made {calls:,} set() calls, one every "
                f"~{run.result.seconds / calls * 1000:,.2f} ms. Dirty page cache when it "
                f"started: {dirty}."
            )
    finally:
        engine.close()
        del engine
    gc.collect()

    def open_once() -> float:
        started = time.perf_counter()
        reopened = Engine.open(store)
        elapsed = time.perf_counter() - started
        try:
            check(len(reopened) == n, f"{len(reopened)} keys after open, expected {n}")
        finally:
            reopened.close()
        return elapsed

    best, worst = repeat_timed(settings.repeat, open_once)
    per_million = best * 1_000_000 / n
    report.add(
        f"open after compaction (best of {settings.repeat})",
        f"{best:,.2f} s (slowest {worst:,.2f} s) for {n:,} keys ({per_million:,.2f} s per 1M)",
        f"<= {TARGET_OPEN_S} s per 1M keys",
        per_million <= TARGET_OPEN_S,
    )
    shutil.rmtree(store)
    return [first.delays[-1], second.delays[-1]]


def verify_store(
    engine: Engine,
    keys: list[str],
    values: list[bytes],
    last_round: int,
    written: dict[int, int],
    seed: int,
) -> None:
    """Check 1000 random keys, and every key the writer wrote since ``last_round`` was
    written, hold their newest value."""
    rng = random.Random(seed + 3)
    sample = {rng.randrange(len(keys)) for _ in range(1000)} | set(written)
    for i in sorted(sample):
        value = written.get(i, value_index(i, last_round))
        check(engine.get(keys[i]) == values[value], f"wrong value for {keys[i]}")


# ---------------------------------------------------------------------------------- part 2

_baseline_pack = msgpack.Packer(use_bin_type=True).pack
_BASELINE_LENGTH = struct.Struct("<I")


def encode_record_unchained(
    seq: int,
    timestamp_us: int,
    op: int,
    key: str,
    content_type: str | None,
    value: bytes | None,
    prev_chain: bytes = GENESIS_CHAIN,
) -> bytes:
    """MEASUREMENT BASELINE, not a logkv format: :func:`logkv.format.encode_record` step for
    step without the chain hash.

    Same body, length check, CRC-32C and frame header; the chain field carries ``prev_chain``
    unchanged instead of ``BLAKE3(prev_chain || body)``. Timing both shows what the hash chain
    costs per record. Frames it makes fail logkv's chain check and are never written anywhere.
    """
    body = _baseline_pack((seq, timestamp_us, op, key, content_type, value))
    length = len(body)
    if length > MAX_BODY_SIZE:
        raise ValueError(f"record of {length} bytes exceeds the {MAX_BODY_SIZE}-byte limit")
    chain = prev_chain
    crc = checksum(body, checksum(_BASELINE_LENGTH.pack(length) + chain))
    frame: bytes = FRAME_HEADER.pack(RECORD_MAGIC, crc, length, chain) + body
    return frame


def time_encoder(encode: Encoder, keys: list[str], values: list[bytes]) -> float:
    """Seconds to encode one record per key, each chained after the one before (as the engine
    does: the timestamp is taken per record, the chain value sliced out of the frame)."""
    now = time.time_ns
    chain = GENESIS_CHAIN
    start = time.perf_counter()
    for seq, key in enumerate(keys, 1):
        frame = encode(seq, now() // 1000, 1, key, BINARY_TYPE, values[seq & POOL_MASK], chain)
        chain = frame[_CHAIN_START:FRAME_HEADER_SIZE]
    return time.perf_counter() - start


def time_engine_set(store: Path, keys: list[str], values: list[bytes]) -> float:
    """Seconds for ``Engine.set`` of every key on a fresh store (removed afterwards)."""
    engine = Engine.open(store)
    try:
        set_ = engine.set
        start = time.perf_counter()
        for seq, key in enumerate(keys, 1):
            set_(key, values[seq & POOL_MASK], BINARY_TYPE)
        elapsed = time.perf_counter() - start
        check(len(engine) == len(keys), "not every set() reached the index")
    finally:
        engine.close()
        shutil.rmtree(store)
    return elapsed


def measure_chain(work: Path, settings: Settings, report: Report) -> None:
    """Part 2: the hash chain's cost per append, at the workload's and at a tiny value size."""
    n = settings.chain_records
    print(f"part 2: hash chain cost, {n:,} records per run", flush=True)
    keys = make_keys("page-", n, settings.run.seed)
    sample = encode_record(1, 2, 1, keys[0], BINARY_TYPE, b"v", GENESIS_CHAIN)
    baseline = encode_record_unchained(1, 2, 1, keys[0], BINARY_TYPE, b"v", GENESIS_CHAIN)
    check(
        len(sample) == len(baseline) and sample[FRAME_HEADER_SIZE:] == baseline[FRAME_HEADER_SIZE:],
        "the baseline does not frame records as encode_record does",
    )
    for size in dict.fromkeys((settings.value_size, HISTORY_VALUE_SIZE)):
        values = make_values(size, settings.run.seed)
        chained: list[float] = []
        unchained: list[float] = []
        sets: list[float] = []
        for _ in range(settings.repeat):  # interleaved, so each sees the same conditions
            gc.collect()
            unchained.append(time_encoder(encode_record_unchained, keys, values))
            chained.append(time_encoder(encode_record, keys, values))
            gc.collect()
            sets.append(time_engine_set(work / "chain", keys, values))
        per = 1e6 / n
        with_hash, without, set_us = min(chained) * per, min(unchained) * per, min(sets) * per
        cost = with_hash - without
        share = 100 * cost / set_us
        report.add(
            f"{size} B values: encode_record / same framing without the chain hash",
            f"{with_hash:.2f} / {without:.2f} us per record (hash chain {cost:.2f} us)",
        )
        report.add(
            f"{size} B values: Engine.set",
            f"{set_us:.2f} us per record ({rate(1e6, set_us):,.0f} rec/s)",
        )
        report.add(
            f"{size} B values: hash chain share of an append",
            f"{share:.1f} % of Engine.set ({100 * cost / with_hash:.0f} % of encode_record)",
            f"<= {TARGET_CHAIN_PCT:g} %",
            share <= TARGET_CHAIN_PCT,
        )


# ---------------------------------------------------------------------------------- part 3


def history_value(round_: int) -> bytes:
    """The value every key gets in round ``round_`` of the history part."""
    return round_.to_bytes(HISTORY_VALUE_SIZE, "little")


def measure_history(work: Path, settings: Settings, report: Report, notes: list[str]) -> None:
    """Part 3: a store of ``history_records`` small records compacted with retention archive;
    the history of one key and the state at a sequence number."""
    k = settings.history_keys
    rounds = settings.history_records // k
    total = rounds * k
    store = work / "history"
    print(f"part 3: history of one key among {total:,} records ({k:,} keys)", flush=True)
    keys = make_keys("item-", k, None)
    engine = Engine.open(store, retention=Retention.ARCHIVE)
    try:
        set_ = engine.set
        gc.collect()
        started = time.perf_counter()
        for round_ in range(rounds):
            value = history_value(round_)
            for key in keys:
                set_(key, value)
        build_s = time.perf_counter() - started
        check(engine.last_seq == total, f"last_seq {engine.last_seq}, expected {total}")
        result = engine.compact()
    finally:
        engine.close()
        del engine
    archived = list_segments(store / ARCHIVE_DIR)
    report.add(
        "build: set() through the engine, then compact with retention archive (info)",
        f"{total:,} records in {build_s:,.1f} s ({rate(total, build_s):,.0f} rec/s); "
        f"compaction {result.seconds:,.1f} s; {len(archived)} archived segments, "
        f"{disk_usage(store / ARCHIVE_DIR)[1] / MB:,.0f} MB",
    )
    key = keys[k // 2]
    found: list[int] = []

    def one_history() -> float:
        started = time.perf_counter()
        history = key_history(store, key)
        elapsed = time.perf_counter() - started
        seqs = [logged.record.seq for logged in history]
        check(len(history) == rounds, f"{len(history)} records of {key}, expected {rounds}")
        check(seqs == sorted(set(seqs)), "the history is not in sequence order")
        for round_, logged in enumerate(history):
            record = logged.record
            check(
                isinstance(record, SetRecord) and record.value == history_value(round_),
                f"version {round_ + 1} of {key} in the history has a wrong value",
            )
        found.append(len(history))
        return elapsed

    best, worst = repeat_timed(settings.repeat, one_history)
    report.add(
        f"key_history(folder, key) of one key (best of {settings.repeat})",
        f"{best:,.2f} s (slowest {worst:,.2f} s): {found[0]} records found among {total:,}",
    )
    half = max(1, rounds // 2)
    until = half * k
    gc.collect()
    started = time.perf_counter()
    state = state_at(store, until_seq=until)
    elapsed = time.perf_counter() - started
    check(len(state) == k, f"state_at has {len(state)} keys, expected {k}")
    check(state[key].value == history_value(half - 1), "state_at gave a wrong value")
    report.add(
        "state_at(folder, until_seq=...) once (info)",
        f"{elapsed:,.2f} s for until_seq={until:,} ({rate(until, elapsed):,.0f} records/s "
        f"replayed), {len(state):,} keys",
    )
    notes.append(
        f"History: {k:,} keys `item-0000001` ..., each written {rounds} times in rounds, with an "
        f"{HISTORY_VALUE_SIZE}-byte value (the round number) and no content type; the key "
        f"looked up is `{key}`."
    )
    shutil.rmtree(store)


# ---------------------------------------------------------------------------------- output


METHOD = [
    "**Compaction workload.** {keys:,} distinct keys `page-0000001` ... written in a seeded"
    " shuffled order, in {overwrites} rounds: every round writes every key once, so each key is"
    " written {overwrites} times ({records:,} records) and its newest version is in the last"
    " round. Values are {value_size} random (incompressible) bytes drawn from a pool of {pool}"
    " distinct values made up front, content type `{ctype}`, default durability and segment"
    " size, written with `Engine.set`.",
    '**Compaction** is `Engine.compact(retention="delete")` in the main thread. Before it,'
    " `os.sync()` writes out the page cache the build left dirty (gigabytes written seconds"
    " earlier; a store filled over hours would have had them written back long before), so the"
    " kernel's writeback of the build does not throttle the writer; what compaction writes"
    " itself is all in the figures. The log stays in the page cache. *Log processed* is the"
    " store's data files before compaction (`CompactionResult.bytes_before`: every segment, live"
    " and dead records) divided by the compaction's own `seconds`; *snapshot written* is the"
    " size of the snapshot file over the same time. Compaction reads only the live records (one"
    " positioned read each, in key order) and deletes the rest with the segments, so the first"
    " figure is the rate at which the log is retired.",
    "**Disk after compaction** is `stats().disk_bytes` (segments and snapshot) over"
    " `stats().live_bytes` (the frames of the live records) right after the first compaction,"
    " the writer's records included.",
    "**Writer stall.** A second thread overwrites random keys of the workload with {value_size} B"
    " values, pausing {pause:g} ms between calls (about a busy crawler's pace; any stall longer"
    " than the pause is met by at least one write). It starts 0.2 s before compaction and stops"
    " after it. Each write is timed with `perf_counter` from when it was due (the end of the"
    " previous write plus the pause) to when `set()` returned: the *writer stall*. Timing the"
    " `set()` call alone (the second row) misses a wait that falls in the pause, which is most"
    " of the writer's time: a thread whose pause ended waits for the GIL before it can call"
    " `set()`. The writes due during compaction give the longest, p99, p99.9 and median. The"
    " stall includes waiting for the GIL (the compacting thread runs Python, and C code such as"
    " msgpack, between its I/O calls), waits inside the kernel"
    " (a `pwrite` can wait for the file system's journal, which compaction's `fsync` and file"
    " deletions keep busy) and any garbage-collector pass (recorded with `gc.callbacks`). When"
    " the longest write was due is given against the end of the copy of the live records"
    " (reported by compaction's `progress` callback); after it come the snapshot's `fsync` and"
    " install, the index switch and the retiring of the old files. `longest_lock_hold_s` is"
    " compaction's own figure: the longest time it held the store's lock, on the clock; next to"
    " it, `longest_lock_hold_cpu_s`, the most CPU time the compacting thread spent in one hold"
    " (`time.thread_time`): the work a hold does. The difference is time the holder waited for"
    " the GIL or for a processor while holding the lock, which on a loaded machine dominates.",
    "**Second compaction.** Then every key is written once more ({keys:,} records) and the"
    " store compacted again under the same writer: the steady state of a long-running store,"
    " which replaces the previous snapshot and closes the files the previous compaction kept"
    " open for readers. After each compaction, 1000 random keys and every key the writer wrote"
    " are read back and checked.",
    "**Open after compaction** is `Engine.open()` of the closed store after the second"
    " compaction (snapshot plus the short segment written during it), page cache warm; best of"
    " {repeat}, the count of keys checked each time.",
    "**Hash chain.** The engine always chains: each record carries the first 16 bytes of"
    " BLAKE3(previous chain value || body). `encode_record` (the engine's frame encoder) is"
    " timed against `encode_record_unchained`, a measurement baseline in the benchmark that does"
    " the same steps (msgpack body, length check, CRC-32C, header) but puts the previous chain"
    " value in the frame instead of hashing; both encode {chain_records:,} records with the"
    " workload's keys, values and content type, each chained after the previous one. The"
    " difference is the hash chain's cost per record; it is given as a share of a full"
    " `Engine.set` of the same records on a fresh store (page cache, default durability). The"
    " three runs alternate, {repeat} rounds, best of each; repeated at an {tiny} B value size.",
    "**History.** A store opened with retention archive receives {history_records:,} records"
    " through `Engine.set` (see the note for keys and values; default segment size), then one"
    " `compact()` moves every segment to `archive/` and writes a snapshot."
    " `key_history(folder, key)` (which searches each segment for the key's encoded bytes and"
    " decodes only the frames around the hits) runs {repeat} times on the closed store, page"
    " cache warm; every run is checked (record count, order, values). `state_at(until_seq=...)`"
    " runs once with the sequence number half-way through the log, from the checkpoint the"
    " compaction wrote there (benchmarks/bench_point_in_time.py measures it in full), and the"
    " state is checked (key count and a value).",
]


def render(settings: Settings, sections: Sections) -> str:
    """The results as a Markdown document."""
    run = settings.run
    records = settings.keys * settings.overwrites
    history_records = settings.history_records // settings.history_keys * settings.history_keys
    method = (
        bullet.format(
            keys=settings.keys,
            overwrites=settings.overwrites,
            records=records,
            value_size=settings.value_size,
            pool=VALUE_POOL,
            ctype=BINARY_TYPE,
            pause=settings.writer_pause_ms,
            repeat=settings.repeat,
            chain_records=settings.chain_records,
            tiny=HISTORY_VALUE_SIZE,
            history_records=history_records,
        )
        for bullet in METHOD
    )
    return results_file(
        run,
        "logkv compaction, hash chain and history benchmark",
        f"Mode: {run.mode}: {settings.keys:,} keys x {settings.overwrites} writes of "
        f"{settings.value_size} B values ({records:,} records); hash chain on "
        f"{settings.chain_records:,} records; history of {history_records:,} records; "
        f"whole run {run.elapsed():.0f} s.",
        [
            *section(
                f"Compaction: {settings.keys:,} keys, each written {settings.overwrites} times",
                sections.compaction.table(),
            ),
            *section("Hash chain: cost per append", sections.chain.table()),
            *section(
                f"History: one key in a {history_records:,}-record archive",
                [*sections.history.table(), "", TARGETS_NOTE],
            ),
        ],
        method=method,
        notes=sections.notes,
    )


# ---------------------------------------------------------------------------------- CLI


def parser() -> argparse.ArgumentParser:
    """The command line: the common options and the compaction benchmark's own."""
    parser = SCRIPT.parser()
    parser.add_argument(
        "--keys",
        type=positive_int,
        default=None,
        help="keys of the compaction store (1M; quick 20k)",
    )
    parser.add_argument(
        "--overwrites", type=positive_int, default=10, help="writes of every key (default 10)"
    )
    parser.add_argument(
        "--value-size", type=positive_int, default=1000, help="bytes per value (default 1000)"
    )
    parser.add_argument(
        "--chain-records",
        type=positive_int,
        default=None,
        help="records per hash-chain timing run (default 200k; quick 20k)",
    )
    parser.add_argument(
        "--history-records",
        type=positive_int,
        default=None,
        help="records of the history store (default 10M; quick 200k)",
    )
    parser.add_argument(
        "--history-keys",
        type=positive_int,
        default=None,
        help="distinct keys of the history store (default 100k; quick 2k)",
    )
    parser.add_argument(
        "--writer-pause-ms",
        type=non_negative_float,
        default=0.5,
        help="pause of the writer thread between set() calls during compaction (default 0.5)",
    )
    parser.add_argument(
        "--repeat", type=positive_int, default=3, help="runs of each repeated timing, best kept (3)"
    )
    parser.add_argument(
        "--runs",
        type=positive_int,
        default=1,
        help="runs of the compaction part, each on a fresh store (the stalls of each reported)",
    )
    return parser


def measure(settings: Settings, sections: Sections) -> None:
    """Run the three parts in order in a temporary folder, removed afterwards."""
    with settings.run.scratch() as work:
        stalls = [measure_compaction(work, settings, sections.compaction, sections.notes)]
        for number in range(2, settings.runs + 1):
            print(f"part 1 again: run {number} of {settings.runs}", flush=True)
            gc.collect()
            stalls.append(measure_compaction(work, settings, Report(), []))
        if settings.runs > 1:
            longest = max(max(run) for run in stalls)
            sections.compaction.add(
                f"longest writer stall of each of {settings.runs} runs (first, second compaction)",
                "; ".join(f"{ms(a)}, {ms(b)}" for a, b in stalls) + " (the rows above are run 1's)",
                f"<= {ms(TARGET_STALL_S)} in each",
                longest <= TARGET_STALL_S,
            )
        gc.collect()
        measure_chain(work, settings, sections.chain)
        gc.collect()
        measure_history(work, settings, sections.history, sections.notes)


def benchmark(args: argparse.Namespace, run: Run) -> str:
    """Measure what ``args`` ask for; the results as Markdown."""
    quick = run.quick
    history_records = args.history_records or (200_000 if quick else 10_000_000)
    settings = Settings(
        run=run,
        keys=args.keys or (20_000 if quick else 1_000_000),
        overwrites=args.overwrites,
        value_size=args.value_size,
        chain_records=args.chain_records or (20_000 if quick else 200_000),
        history_records=history_records,
        history_keys=min(args.history_keys or (2_000 if quick else 100_000), history_records),
        writer_pause_ms=args.writer_pause_ms,
        repeat=args.repeat,
        runs=args.runs,
    )
    sections = Sections()
    measure(settings, sections)
    return render(settings, sections)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the results and write them to ``--out``."""
    return SCRIPT.main(argv, parser(), benchmark)


if __name__ == "__main__":
    sys.exit(main())
