"""Benchmark of point-in-time history in a long archived log (`logkv.history`, checkpoints).

Run from the repository root::

    python -m benchmarks.bench_point_in_time            # 10M records, 100k keys
    python -m benchmarks.bench_point_in_time --quick    # 400k records, 4k keys; prints only

A store opened with retention archive receives ``--records`` small records (every key written
once per round), then one ``compact()`` moves every segment to ``archive/``, writes a snapshot
and the checkpoints of the archived log (one every ``--checkpoint-every`` records). Measured on
the closed store, page cache warm: :func:`logkv.history.state_at` by sequence number at a
checkpoint and just before the next one (the most records to fold), by time, and
:func:`logkv.history.key_history` of one key. Every answer is checked against the rounds that
wrote it. Targets are reported as PASS/MISS; a wrong answer makes the run fail.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from logkv import Engine
from logkv.checkpoints import DEFAULT_EVERY, checkpoints_of
from logkv.format import SetRecord
from logkv.history import key_history, state_at
from logkv.layout import ARCHIVE_DIR, list_segments
from logkv.modes import Retention

from .harness import (
    MB,
    TARGETS_NOTE,
    Report,
    Run,
    Script,
    check,
    positive_int,
    results_file,
    section,
)
from .machine import disk_usage
from .workload import make_keys

SCRIPT = Script(
    "bench_point_in_time",
    "Benchmark logkv's point-in-time history in a long archived log; write Markdown.",
    Path("benchmarks/results/point_in_time.md"),
)
VALUE_SIZE = 8  # the round number, little-endian
TARGET_S = 1.0


@dataclass(frozen=True)
class Settings:
    """What one run measures and how big it is."""

    run: Run
    records: int
    keys: int
    every: int
    repeat: int


def value(round_: int) -> bytes:
    """The value every key gets in round ``round_``."""
    return round_.to_bytes(VALUE_SIZE, "little")


def expected_round(seq: int, index: int, keys: int) -> int:
    """The round whose value key number ``index`` holds after record ``seq``."""
    return (seq - index - 1) // keys


def measure(settings: Settings, report: Report, notes: list[str]) -> None:
    """Build the store, then time the reads (see the module docstring)."""
    k = settings.keys
    rounds = settings.records // k
    total = rounds * k
    keys = make_keys("item-", k, None)
    time_round = rounds // 2 + 2  # a time target: just before this round started
    os.environ["LOGKV_CHECKPOINT_EVERY"] = str(settings.every)
    with settings.run.scratch() as work:
        store = work / "history"
        engine = Engine.open(store, retention=Retention.ARCHIVE)
        moment = 0
        try:
            set_ = engine.set
            started, cpu_started = time.perf_counter(), time.process_time()
            for round_ in range(rounds):
                if round_ == time_round:
                    time.sleep(0.002)
                    moment = time.time_ns() // 1000
                    time.sleep(0.002)
                data = value(round_)
                for key in keys:
                    set_(key, data)
            build_s = time.perf_counter() - started
            build_cpu = time.process_time() - cpu_started
            check(engine.last_seq == total, f"last_seq {engine.last_seq}, expected {total}")
            cpu_started = time.process_time()
            result = engine.compact()
            compact_cpu = time.process_time() - cpu_started
        finally:
            engine.close()
            del engine
        archived = list_segments(store / ARCHIVE_DIR)
        found = checkpoints_of(store)
        checkpoint_bytes = sum(c.path.stat().st_size for c in found)
        archive_bytes = disk_usage(store / ARCHIVE_DIR)[1] - checkpoint_bytes
        report.add(
            "build: set() through the engine, then compact with retention archive (info)",
            f"{total:,} records in {build_s:,.1f} s ({build_cpu:,.1f} s CPU); "
            f"{len(archived)} archived segments, {archive_bytes / MB:,.0f} MB",
        )
        report.add(
            "compaction, checkpoints included (info)",
            f"{result.seconds:,.1f} s ({compact_cpu:,.1f} s CPU); {len(found)} checkpoints, "
            f"one every {settings.every:,} records, {checkpoint_bytes / MB:,.1f} MB "
            f"({checkpoint_bytes / archive_bytes:.0%} of the archived segments)",
        )
        key_index = k // 2
        key = keys[key_index]

        def read_state(until_seq: int | None = None, until_us: int | None = None) -> None:
            state = state_at(store, until_seq=until_seq, until_us=until_us)
            check(len(state) == k, f"state_at has {len(state)} keys, expected {k}")
            if until_seq is not None:
                want = expected_round(until_seq, key_index, k)
            else:
                want = time_round - 1
            check(state[key].value == value(want), "state_at gave a wrong value")

        def read_history() -> None:
            history = key_history(store, key)
            check(len(history) == rounds, f"{len(history)} records of {key}, expected {rounds}")
            for round_, logged in enumerate(history):
                record = logged.record
                check(
                    isinstance(record, SetRecord) and record.value == value(round_),
                    f"version {round_ + 1} of {key} in the history has a wrong value",
                )

        at_checkpoint = (total // 2) // settings.every * settings.every
        before_next = min(at_checkpoint + settings.every - 1, total)
        reads: list[tuple[str, Callable[[], None]]] = [
            (f"state_at(folder, until_seq={at_checkpoint:,}): at a checkpoint",
             partial(read_state, at_checkpoint)),
            (f"state_at(folder, until_seq={before_next:,}): just before the next checkpoint "
             "(the most records to fold)", partial(read_state, before_next)),
            (f"state_at(folder, until_us=...): the start of round {time_round}",
             partial(read_state, None, moment)),
            ("key_history(folder, key) of one key", read_history),
        ]  # fmt: skip
        worst_cpu = 0.0
        for label, read in reads:
            wall, slowest, cpu = best_of(settings.repeat, read)
            worst_cpu = max(worst_cpu, cpu) if "state_at" in label else worst_cpu
            report.add(
                f"{label} (best of {settings.repeat})",
                f"{wall:,.2f} s wall (slowest {slowest:,.2f} s), {cpu:,.2f} s CPU",
                f"<= {TARGET_S} s (CPU)",
                cpu <= TARGET_S,
            )
        aside = work / "checkpoints-aside"
        aside.mkdir()
        for checkpoint in found:
            checkpoint.path.rename(aside / checkpoint.path.name)
        wall, _, cpu = best_of(1, partial(read_state, before_next))
        report.add(
            f"without checkpoints (moved aside): state_at(folder, until_seq={before_next:,}), "
            "a replay from record 1 (info)",
            f"{wall:,.2f} s wall, {cpu:,.2f} s CPU: {cpu / worst_cpu:,.0f}x the slowest "
            "state_at above",
        )
        shutil.rmtree(store)
    notes.append(
        f"{k:,} keys `item-0000001` ..., each written {rounds} times in rounds, with an "
        f"{VALUE_SIZE}-byte value (the round number) and no content type; the key checked is "
        f"`{key}`. Without checkpoints, `state_at` replays the whole log up to its target: "
        "19.15 s for 5,000,000 records of this workload (benchmarks/results/compaction.md)."
    )


def best_of(repeat: int, read: Callable[[], None]) -> tuple[float, float, float]:
    """Run ``read`` ``repeat`` times, each after a garbage collection: the best and the worst
    wall-clock time, and the best CPU time of this process (what the read costs, whatever
    else the machine runs)."""
    walls, cpus = [], []
    for _ in range(repeat):
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        read()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), max(walls), min(cpus)


def benchmark(args: argparse.Namespace, run: Run) -> str:
    """Measure what ``args`` ask for; the results as Markdown."""
    quick = run.quick
    records = args.records or (400_000 if quick else 10_000_000)
    settings = Settings(
        run=run,
        records=records,
        keys=min(args.keys or (4_000 if quick else 100_000), records),
        every=args.checkpoint_every or (10_000 if quick else DEFAULT_EVERY),
        repeat=args.repeat,
    )
    report = Report()
    notes: list[str] = []
    measure(settings, report, notes)
    return results_file(
        run,
        "logkv point-in-time history benchmark",
        f"Mode: {run.mode}: {settings.records:,} records of {settings.keys:,} keys, a "
        f"checkpoint every {settings.every:,} records; whole run {run.elapsed():.0f} s.",
        section(
            f"Point in time in a {settings.records:,}-record archive",
            [*report.table(), "", TARGETS_NOTE],
        ),
        method=[
            "The store is built with `Engine.set` at default durability and segment size, then"
            " compacted once with retention archive; the checkpoints are written by that"
            " compaction (`LOGKV_CHECKPOINT_EVERY`). Each read runs on the closed store, page"
            " cache warm, after a garbage collection; wall-clock and CPU time of the process are"
            " both given, and the best CPU time of the repeats is compared with the target: on"
            " a shared machine the wall-clock time counts the time spent waiting for a core."
            " `state_at` returns every key's record (values included): it loads"
            " the newest checkpoint at or before the target, folds the records after it and"
            " reads each live key's record; `key_history` searches each segment for the key's"
            " encoded bytes.",
        ],
        notes=notes,
    )


def parser() -> argparse.ArgumentParser:
    """The command line: the common options and this benchmark's own."""
    parser = SCRIPT.parser()
    parser.add_argument("--records", type=positive_int, default=None, help="10M; quick 400k")
    parser.add_argument("--keys", type=positive_int, default=None, help="100k; quick 4k")
    parser.add_argument(
        "--checkpoint-every",
        type=positive_int,
        default=None,
        help=f"records between checkpoints ({DEFAULT_EVERY:,}; quick 10,000)",
    )
    parser.add_argument(
        "--repeat", type=positive_int, default=3, help="runs of each timing, best kept (3)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the results and write them to ``--out``."""
    return SCRIPT.main(argv, parser(), benchmark)


if __name__ == "__main__":
    sys.exit(main())
