"""Benchmark of the synchronous engine (:class:`logkv.Engine`) against this machine's raw limits.

Run from the repository root::

    python -m benchmarks.bench_engine            # 1M records, best of 3 rounds, writes the results
    python -m benchmarks.bench_engine --quick    # 50k records, best of 3 rounds, prints only
    python -m benchmarks.bench_engine --records 200000 --out other.md

Everything is measured in one process run, so the ratios between figures hold. The stores live
in a temporary folder in the repository root (on the same disk as the repository, never a RAM
disk), removed at the end. Targets are reported as PASS/MISS; a miss never makes the run fail.
A wrong answer from the engine (a missing key, a wrong value, a wrong count) does: figures from
a broken engine are meaningless.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import random
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING
from unittest import mock

import msgpack

import logkv
from logkv import Durability, Engine

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike

#: Every record carries this content type, as records written through the KeyValueStore do.
CONTENT_TYPE = "application/octet-stream"
VALUE_SIZE = 1000
#: Values are drawn round-robin from a pool of this many distinct random values.
VALUE_POOL = 1024
_POOL_MASK = VALUE_POOL - 1

FULL_RECORDS = 1_000_000
QUICK_RECORDS = 50_000
DEFAULT_OUT = Path("benchmarks/results/engine.md")

_RAW_HEADER = struct.Struct("<II")  # length, crc32 of the body


# ---------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """What one run measures and how big it is."""

    records: int
    gets: int
    fsync_seconds: float
    repeat: int
    writers: int
    key_order: str
    seed: int
    quick: bool
    out: Path | None
    tmp_dir: Path


@dataclass
class Row:
    """One line of the results table."""

    measurement: str
    result: str
    target: str = ""
    status: str = ""


@dataclass
class Report:
    """The results table and the notes gathered while measuring."""

    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(
        self, measurement: str, result: str, target: str = "", passed: bool | None = None
    ) -> None:
        """Add a row; ``passed`` None means the row has no target."""
        status = "" if passed is None else ("PASS" if passed else "MISS")
        self.rows.append(Row(measurement, result, target, status))
        shown = f"  [{status} vs {target}]" if status else ""
        print(f"  {measurement}: {result}{shown}", flush=True)


# ---------------------------------------------------------------------------------- workload


def make_keys(count: int, order: str, seed: int) -> list[str]:
    """``page-0000001`` ... ``page-{count}``, shuffled (seeded) unless ``order`` is sequential."""
    width = max(7, len(str(count)))
    keys = [f"page-{i:0{width}d}" for i in range(1, count + 1)]
    if order == "shuffled":
        random.Random(seed).shuffle(keys)
    return keys


def make_values(seed: int) -> list[bytes]:
    """A pool of distinct random (incompressible) values of :data:`VALUE_SIZE` bytes."""
    rng = random.Random(seed)
    return [rng.randbytes(VALUE_SIZE) for _ in range(VALUE_POOL)]


def value_for(ordinal: int, values: list[bytes]) -> bytes:
    """The value the benchmark writes for the ``ordinal``-th record (1-based)."""
    return values[ordinal & _POOL_MASK]


# ---------------------------------------------------------------------------------- helpers


def rate(count: float, seconds: float) -> float:
    """``count`` per second, guarding against a zero duration."""
    return count / seconds if seconds > 0 else float("inf")


def fmt_rate(value: float, unit: str) -> str:
    """A rate with thousands separators: ``123,456 rec/s``."""
    return f"{value:,.0f} {unit}"


def rss_anon() -> int | None:
    """Anonymous resident memory of this process in bytes (Linux), or None if unknown."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def folder_bytes(folder: Path) -> int:
    """Total size of the regular files directly inside ``folder``."""
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


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


def check(condition: bool, message: str) -> None:
    """Stop the run when the engine returned a wrong answer."""
    if not condition:
        raise RuntimeError(f"engine check failed: {message}")


# ---------------------------------------------------------------------------------- raw limits


def raw_append(folder: Path, keys: list[str], values: list[bytes]) -> float:
    """Seconds for a plain loop to pack, frame and ``os.write`` one record per key.

    The body has the engine's shape (seq, timestamp, op, key, content type, value); the frame
    is an 8-byte header (length, CRC-32 of the body) in front of it.
    """
    path = folder / "raw.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    packb, crc32, header, write, now = (
        msgpack.packb,
        zlib.crc32,
        _RAW_HEADER.pack,
        os.write,
        time.time_ns,
    )
    try:
        start = time.perf_counter()
        for seq, key in enumerate(keys, 1):
            body = packb((seq, now() // 1000, 1, key, CONTENT_TYPE, values[seq & _POOL_MASK]))
            write(fd, header(len(body), crc32(body)) + body)
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
        path.unlink()
    return elapsed


def raw_sync_rate(
    folder: Path, sync: Callable[[int], None], seconds: float, body: int = VALUE_SIZE + 40
) -> float:
    """Writes per second of a loop that writes a frame (a ``body``-byte body: ~1 KB unless
    told) and calls ``sync`` after each."""
    path = folder / "raw-sync.log"
    frame = _RAW_HEADER.pack(body, 0) + bytes(body)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        count = 0
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            os.write(fd, frame)
            sync(fd)
            count += 1
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
        path.unlink()
    return rate(count, elapsed)


# ---------------------------------------------------------------------------------- engine phases


def engine_append(engine: Engine, keys: list[str], values: list[bytes]) -> float:
    """Seconds to ``set`` every key once (value ordinal = position, as in :func:`raw_append`)."""
    set_ = engine.set
    start = time.perf_counter()
    for ordinal, key in enumerate(keys, 1):
        set_(key, values[ordinal & _POOL_MASK], CONTENT_TYPE)
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


def rss_in_child(folder: Path) -> dict[str, int] | None:
    """Run :func:`rss_probe` in a fresh interpreter (this process's heap is full of arenas)."""
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_engine", "--rss-probe", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        print(result.stderr, file=sys.stderr)
        return None
    probe: dict[str, int] = json.loads(result.stdout.strip().splitlines()[-1])
    return probe


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
    """``threads`` threads ``set`` distinct ~1 KB records for ``seconds`` on one FSYNC store."""
    engine = Engine.open(folder, durability=Durability.FSYNC)
    barrier = threading.Barrier(threads + 1)
    stop = threading.Event()
    counts = [0] * threads
    errors: list[BaseException] = []

    def writer(number: int) -> None:
        set_ = engine.set
        prefix = f"fsync-{number:03d}-"
        done = 0
        try:
            barrier.wait()
            while not stop.is_set():
                set_(f"{prefix}{done:08d}", values[done & _POOL_MASK], CONTENT_TYPE)
                done += 1
        except threading.BrokenBarrierError:
            return  # the run was abandoned before it started
        except BaseException as exc:
            errors.append(exc)
        counts[number] = done

    workers = [threading.Thread(target=writer, args=(n,), daemon=True) for n in range(threads)]
    try:
        for worker in workers:
            worker.start()
        with counting_syncs() as syncs:
            barrier.wait()
            start = time.perf_counter()
            time.sleep(seconds)
            stop.set()
            for worker in workers:
                worker.join()
            elapsed = time.perf_counter() - start
        if errors:
            raise RuntimeError(f"a writer failed: {errors[0]!r}") from errors[0]
        check(len(engine) == sum(counts), "not every acknowledged fsync write is in the index")
    finally:
        stop.set()
        barrier.abort()  # frees writers still waiting to start if the run failed early
        engine.close()
    return FsyncRun(sum(counts), elapsed, syncs[0])


# ---------------------------------------------------------------------------------- the run


def measure(settings: Settings, report: Report) -> None:
    """Run every measurement in order, adding rows and notes to ``report``."""
    n = settings.records
    print(f"preparing {n:,} keys ({settings.key_order}) and {VALUE_POOL} random values", flush=True)
    keys = make_keys(n, settings.key_order, settings.seed)
    values = make_values(settings.seed)
    work = Path(tempfile.mkdtemp(prefix=".tmp-bench-engine-", dir=settings.tmp_dir))
    try:
        _measure_in(work, settings, report, keys, values)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@dataclass(frozen=True)
class Round:
    """Seconds taken by each bulk phase in one round (one fresh store)."""

    raw: float
    append: float
    get: float
    first_iterate: float  # the first ordered read: merges the keys appended into the index
    iterate: float
    replay: float
    log_bytes: int


def run_round(
    store: Path, work: Path, settings: Settings, keys: list[str], values: list[bytes]
) -> Round:
    """Raw loop, then append/get/iterate on a fresh store at ``store``, then replay it."""
    n = settings.records
    gc.collect()
    raw_seconds = raw_append(work, keys, values)
    engine = Engine.open(store)
    try:
        gc.collect()
        append_seconds = engine_append(engine, keys, values)
        check(len(engine) == n, f"{len(engine)} keys after {n} appends")
        gc.collect()
        get_seconds = engine_gets(engine, keys, values, settings.gets, settings.seed + 1)
        gc.collect()
        first_iterate_seconds = engine_iterate(engine, n)
        gc.collect()
        iterate_seconds = engine_iterate(engine, n)
    finally:
        engine.close()
        del engine
    gc.collect()
    start = time.perf_counter()
    engine = Engine.open(store)
    replay_seconds = time.perf_counter() - start
    try:
        check(len(engine) == n, f"{len(engine)} keys after replay, expected {n}")
        check(engine.get(keys[-1]) == value_for(n, values), "wrong value after replay")
    finally:
        engine.close()
        del engine
    return Round(
        raw_seconds,
        append_seconds,
        get_seconds,
        first_iterate_seconds,
        iterate_seconds,
        replay_seconds,
        folder_bytes(store),
    )


def best_of(rounds: list[Round], seconds: Callable[[Round], float]) -> tuple[float, float]:
    """The fastest and the slowest time of one phase over ``rounds``."""
    times = [seconds(r) for r in rounds]
    return min(times), max(times)


def spread(
    rounds: list[Round], seconds: Callable[[Round], float], show: Callable[[float], str]
) -> str:
    """``; best of 3, slowest ...`` (``show`` formats the slowest time) after several rounds."""
    if len(rounds) < 2:
        return ""
    return f"; best of {len(rounds)}, slowest {show(best_of(rounds, seconds)[1])}"


def _measure_in(
    work: Path, settings: Settings, report: Report, keys: list[str], values: list[bytes]
) -> None:
    # Syncs first: behind a gigabyte of dirty page cache left by the bulk phases, every
    # fdatasync waits for writeback and runs 10-20x slower than on a quiet disk.
    _measure_syncs(work, settings, report, values)
    store = work / "store"
    _measure_bulk(store, work, settings, report, keys, values)
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
    fdatasyncs: list[float] = []
    fsyncs: list[float] = []
    singles: list[FsyncRun] = []
    manies: list[FsyncRun] = []
    for number in range(1, settings.repeat + 1):
        fdatasyncs.append(raw_sync_rate(work, os.fdatasync, settings.fsync_seconds))
        fsyncs.append(raw_sync_rate(work, os.fsync, settings.fsync_seconds))
        singles.append(fsync_writers(work / "fsync", 1, settings.fsync_seconds, values))
        shutil.rmtree(work / "fsync")
        manies.append(
            fsync_writers(work / "fsync", settings.writers, settings.fsync_seconds, values)
        )
        shutil.rmtree(work / "fsync")
        print(
            f"  round {number}: raw fdatasync {fdatasyncs[-1]:,.0f}/s, raw fsync "
            f"{fsyncs[-1]:,.0f}/s, FSYNC 1 writer {singles[-1].per_second:,.0f}/s, "
            f"{settings.writers} writers {manies[-1].per_second:,.0f}/s",
            flush=True,
        )

    def shown(rates: list[float]) -> str:
        text = fmt_rate(max(rates), "writes/s")
        if len(rates) > 1:
            text += f"; best of {len(rates)}, slowest {fmt_rate(min(rates), 'writes/s')}"
        return text

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
    store: Path,
    work: Path,
    settings: Settings,
    report: Report,
    keys: list[str],
    values: list[bytes],
) -> None:
    """Rounds of raw loop and engine append/get/iterate/replay; rows for the best of each."""
    n = settings.records
    rounds: list[Round] = []
    for number in range(1, settings.repeat + 1):
        if store.exists():
            shutil.rmtree(store)
        print(f"round {number}/{settings.repeat}: raw loop and engine, {n:,} records", flush=True)
        done = run_round(store, work, settings, keys, values)
        rounds.append(done)
        print(
            f"  raw {rate(n, done.raw):,.0f} rec/s, append {rate(n, done.append):,.0f} rec/s, "
            f"get {rate(settings.gets, done.get):,.0f}/s, iterate {done.first_iterate:.3f} s"
            f" then {done.iterate:.3f} s, "
            f"replay {done.replay:.2f} s",
            flush=True,
        )

    def per_n(seconds: float) -> str:
        return fmt_rate(rate(n, seconds), "rec/s")

    raw = rate(n, best_of(rounds, lambda r: r.raw)[0])
    report.add(
        "raw pack + frame + os.write loop",
        fmt_rate(raw, "rec/s") + spread(rounds, lambda r: r.raw, per_n),
    )

    append_seconds = best_of(rounds, lambda r: r.append)[0]
    append = rate(n, append_seconds)
    report.add(
        f"append {n:,} x ~1 KB records",
        f"{fmt_rate(append, 'rec/s')} ({append_seconds:.2f} s; {append / raw:.2f}x raw"
        f"{spread(rounds, lambda r: r.append, per_n)})",
        "≥ 150,000 rec/s",
        append >= 150_000,
    )
    gets = rate(settings.gets, best_of(rounds, lambda r: r.get)[0])
    report.add(
        f"point get, {settings.gets:,} random keys",
        fmt_rate(gets, "gets/s")
        + spread(rounds, lambda r: r.get, lambda t: fmt_rate(rate(settings.gets, t), "gets/s")),
        "≥ 200,000 gets/s",
        gets >= 200_000,
    )
    first_seconds = best_of(rounds, lambda r: r.first_iterate)[0]
    report.add(
        f"first ordered iteration after the appends (merges {n:,} new keys into the sorted keys)",
        f"{first_seconds:.3f} s{spread(rounds, lambda r: r.first_iterate, lambda t: f'{t:.3f} s')}",
        "",
        None,
    )
    iterate_seconds = best_of(rounds, lambda r: r.iterate)[0]
    per_million = iterate_seconds * 1_000_000 / n
    report.add(
        f"ordered iteration of {n:,} keys (keys())",
        f"{iterate_seconds:.3f} s ({per_million:.3f} s per 1M keys"
        f"{spread(rounds, lambda r: r.iterate, lambda t: f'{t:.3f} s')})",
        "≤ 1 s per 1M keys",
        per_million <= 1.0,
    )
    replay_seconds = best_of(rounds, lambda r: r.replay)[0]
    replay = rate(n, replay_seconds)
    log_mb = rounds[-1].log_bytes / 1e6
    report.add(
        f"replay on open ({n:,} records, {log_mb:,.0f} MB log)",
        f"{replay_seconds:.2f} s, {fmt_rate(replay, 'rec/s')} ({log_mb / replay_seconds:,.0f} MB/s"
        f"{spread(rounds, lambda r: r.replay, per_n)})",
        "≥ 400,000 rec/s",
        replay >= 400_000,
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
        "≤ 250 B/key",
        per_key <= 250,
    )
    probe = rss_in_child(store)
    if probe is None or not probe["after"]:
        report.notes.append("The RSS cross-check could not run (no /proc/self/status?).")
        return
    rss_per_key = (probe["after"] - probe["before"] - probe["key_bytes"]) / probe["keys"]
    report.add(
        "index memory beyond the key (RssAnon, fresh process)",
        f"{rss_per_key:,.0f} B/key (RssAnon +{(probe['after'] - probe['before']) / 1e6:,.0f} MB)",
    )


# ---------------------------------------------------------------------------------- machine


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (or what ``platform`` knows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def filesystem_of(path: Path) -> str:
    """The file-system type the benchmark's temp folder lives on (from ``/proc/mounts``)."""
    best, fs_type = "", "unknown"
    target = str(path.resolve())
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                parts = line.split()
                if len(parts) < 3:
                    continue
                point = parts[1]
                inside = target == point or target.startswith(point.rstrip("/") + "/")
                if inside and len(point) > len(best):
                    best, fs_type = point, parts[2]
    except OSError:
        pass
    return fs_type


def logkv_revision() -> str:
    """The git commit of the measured ``logkv`` package, and whether ``logkv/`` has local edits."""
    package = Path(logkv.__file__).resolve().parent

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(package), *args], capture_output=True, text=True, check=True
        )
        return done.stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", ".")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"commit {head}, " + ("with uncommitted changes in logkv/" if dirty else "logkv/ clean")


def load_average() -> str:
    """Load averages and CPU/IO pressure: how busy the machine was (other work skews figures)."""
    text = "load " + " / ".join(f"{load:.2f}" for load in os.getloadavg())
    stalls = []
    for resource in ("cpu", "io"):
        try:
            with open(f"/proc/pressure/{resource}", encoding="ascii") as pressure:
                fields = dict(item.split("=") for item in pressure.readline().split()[1:])
            stalls.append(f"{resource} {fields['avg60']}%")
        except (OSError, KeyError, ValueError):
            continue
    if stalls:
        text += "; stalled (PSI some, 60 s): " + ", ".join(stalls)
    return text


def version_of(distribution: str) -> str:
    """The installed version of ``distribution``, or ``?``."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "?"


def machine_rows(settings: Settings) -> list[tuple[str, str]]:
    """Facts about the machine and software the figures were measured on."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 0
    return [
        ("CPU", cpu_model()),
        ("Cores", f"{os.cpu_count()} logical ({usable} usable by this process)"),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("File system of the store", filesystem_of(settings.tmp_dir)),
        (
            "Libraries",
            f"msgpack {version_of('msgpack')}, sortedcontainers {version_of('sortedcontainers')}",
        ),
        ("logkv", logkv_revision()),
        ("Date", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("Machine load at start", load_average()),
    ]


# ---------------------------------------------------------------------------------- output


METHOD = [
    "**Workload.** Distinct keys `page-0000001` ... (`page-` and a zero-padded number), written in"
    " {order} order (seeded). Values are 1000 random bytes (incompressible), drawn round-robin"
    " from a pool of {pool} distinct values made up front; every record carries the content type"
    " `{ctype}`. Keys and values exist before any clock starts; `gc.collect()` runs between"
    " phases.",
    "**Raw limit.** A plain Python loop that msgpack-packs the same 6-field body the engine writes"
    " (seq, timestamp, op, key, content type, value), puts an 8-byte header (length, CRC-32) in"
    " front of it and `os.write`s it to an `O_APPEND` file, for the same keys and values: about"
    " the fastest a Python writer of such a format can go here. It does nothing more, so the"
    " ratio to it shows the engine's own work per record (its frame format, locking, index"
    " update). The `fdatasync`/`fsync` rows"
    " write a ~1 KB frame and sync after every write, for {fsync_seconds:g} s each.",
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
    "**Replay** is `Engine.open()` of the closed store, page cache warm: reading and checking"
    " every frame and building the sorted index.",
    "**Index memory.** The store is opened again with `tracemalloc` tracing. The bytes still"
    " allocated after the open (and a `gc.collect()`) minus those allocated before are what the"
    " engine holds. From that the key strings themselves are subtracted (`sys.getsizeof` of every"
    " key in the index), and the rest is divided by the number of keys: what each key costs"
    " beyond its string (index entry tuple, its integers, dict and sorted-list slots). The peak is"
    " the most memory traced at any moment of the open, per key, key strings included."
    " Cross-check: a fresh interpreter opens the store read-only; the growth of its `RssAnon`"
    " (anonymous resident memory, so the memory-mapped log does not count), minus the key"
    " strings, divided by the keys. RSS also counts allocator slack and memory freed during the"
    " open but not returned to the system.",
    "**fsync durability.** A fresh store with `Durability.FSYNC`; 1 thread, then {writers}"
    " threads, each `set` distinct ~1 KB records in a loop for {fsync_seconds:g} s. Writes/s is"
    " acknowledged writes over the wall time. Syncs are counted by wrapping `os.fdatasync` and"
    " `os.fsync` while the writers run (any sync the engine makes, e.g. on segment rotation,"
    " counts).",
]


def render(
    settings: Settings,
    command: str,
    report: Report,
    machine: list[tuple[str, str]],
    wall_seconds: float,
) -> str:
    """The results as a Markdown document."""
    lines = [
        "# logkv engine benchmark",
        "",
        "Command (from the repository root):",
        "",
        "```bash",
        command,
        "```",
        "",
        f"Mode: {'quick' if settings.quick else 'full'}, {settings.records:,} records, "
        f"{settings.repeat} round(s), whole run {wall_seconds:.0f} s.",
        "",
        "## Machine",
        "",
        "| Item | Value |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in machine),
        "",
        "## Results",
        "",
        "| Measurement | Result | Target | Status |",
        "|---|---|---|---|",
        *(f"| {r.measurement} | {r.result} | {r.target} | {r.status} |" for r in report.rows),
        "",
        "Targets are goals for the engine, not limits of the benchmark: a MISS is reported, never"
        " treated as a failure.",
        "",
        "## Method",
        "",
        *(
            "- "
            + bullet.format(
                order=settings.key_order,
                pool=VALUE_POOL,
                ctype=CONTENT_TYPE,
                fsync_seconds=settings.fsync_seconds,
                writers=settings.writers,
                repeat=settings.repeat,
            )
            for bullet in METHOD
        ),
    ]
    if report.notes:
        lines += ["", "## Notes", "", *(f"- {note}" for note in report.notes)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_engine",
        description="Benchmark logkv's synchronous engine and write a Markdown results file.",
    )
    parser.add_argument(
        "--records",
        type=int,
        default=None,
        help=f"records to write and replay (default {FULL_RECORDS:,}; {QUICK_RECORDS:,} quick)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fast before/after check: 50k records, 0.5 s sync runs, print only unless --out",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"Markdown results file (default {DEFAULT_OUT} for a full run; none with --quick)",
    )
    parser.add_argument(
        "--gets", type=int, default=None, help="point gets (default min(records, 200k))"
    )
    parser.add_argument(
        "--fsync-seconds",
        type=float,
        default=None,
        help="length of each sync run (default 1 s; quick 0.5 s)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="rounds of every timed phase but memory, the best one kept (default 3)",
    )
    parser.add_argument(
        "--writers", type=int, default=64, help="concurrent fsync writers (default 64)"
    )
    parser.add_argument(
        "--key-order",
        choices=["shuffled", "sequential"],
        default="shuffled",
        help="order the keys are written in (default shuffled)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of keys order and values")
    parser.add_argument(
        "--tmp-dir",
        type=Path,
        default=None,
        help="where to make the temporary store folder (default: the repository root)",
    )
    parser.add_argument("--rss-probe", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("records", "gets", "repeat", "writers"):
        given = getattr(args, name)
        if given is not None and given < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def settings_from(args: argparse.Namespace) -> Settings:
    """Fill in the defaults that depend on ``--quick``."""
    records = args.records or (QUICK_RECORDS if args.quick else FULL_RECORDS)
    out = args.out if args.out is not None or args.quick else DEFAULT_OUT
    tmp_dir = args.tmp_dir or Path(__file__).resolve().parent.parent
    return Settings(
        records=records,
        gets=args.gets or min(records, 200_000),
        fsync_seconds=args.fsync_seconds or (0.5 if args.quick else 1.0),
        repeat=args.repeat,
        writers=args.writers,
        key_order=args.key_order,
        seed=args.seed,
        quick=args.quick,
        out=out,
        tmp_dir=tmp_dir,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the results and write them to ``--out``."""
    args = parse_args(argv)
    if args.rss_probe is not None:
        print(json.dumps(rss_probe(args.rss_probe)))
        return 0
    settings = settings_from(args)
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "-m", "benchmarks.bench_engine", *given])
    machine = machine_rows(settings)
    report = Report()
    started = time.perf_counter()
    measure(settings, report)
    machine.append(("Machine load at end", load_average()))
    text = render(settings, command, report, machine, time.perf_counter() - started)
    if settings.out is not None:  # first, so that a closed stdout cannot lose the results
        settings.out.parent.mkdir(parents=True, exist_ok=True)
        settings.out.write_text(text, encoding="utf-8")
    print()
    print(text)
    if settings.out is not None:
        print(f"results written to {settings.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
