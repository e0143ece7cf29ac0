"""Where a get and a set of a large value spend their time, step by step, on this machine.

Run from the repository root::

    python -m benchmarks.bench_large_values            # writes results/large-values.md
    python -m benchmarks.bench_large_values --quick    # fewer rounds, prints only

A store of ``--count`` values of ``--size`` bytes (1 MiB) is written through ``Engine.set``
and read back through ``Engine.get``, then through ``KeyValueStore``; and each step of the
engine's paths is timed alone with logkv's own functions, over the same values in the same
order: the index lookup, the two ``pread`` calls of a read (the bytes before the value, then
the value into the object returned) and the CRC-32C check over both; the frame's first bytes
(msgpack head, BLAKE3 chain, CRC-32C) and the one ``pwritev`` of a write. The paths not taken
are timed beside them: a copy out of a memory map (the read of smaller values), a join of the
frame before one ``pwrite``, BLAKE3 with its own threads. Minor page faults per operation
(``ru_minflt``) are counted, with the caller dropping each value read and keeping the last 16
(glibc's malloc then maps and unmaps memory for them).
"""

from __future__ import annotations

import argparse
import asyncio
import mmap
import os
import resource
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import blake3

from logkv import Engine, KeyValueStore
from logkv.configuration import Configuration
from logkv.format import FRAME_KINDS, RECORD_MAGIC, check_value_read, checked_value, checksum
from logkv.format import encode_record_start as start_of
from logkv.layout import segment_name
from logkv.segments import SegmentWriter

from .harness import Run, Script, check, positive_int, results_file, section, table

SCRIPT = Script(
    "bench_large_values",
    "Time each step of a get and a set of a large value.",
    Path("benchmarks/results/large-values.md"),
)
_TYPE = "application/octet-stream"


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def timed(items: Iterable[Any], step: Callable[[Any], object], rounds: int) -> tuple[float, float]:
    """The best time of ``step(item)`` per item over ``rounds`` passes, and the page faults per
    item of the last pass; the result of each call is dropped at once."""
    items = list(items)
    best = float("inf")
    faults = 0.0
    for _ in range(rounds):
        before, start = _faults(), time.perf_counter()
        for item in items:
            step(item)
        best = min(best, (time.perf_counter() - start) / len(items))
        faults = (_faults() - before) / len(items)
    return best, faults


def kept(step: Callable[[Any], object], keep: int) -> Callable[[Any], object]:
    """``step``, its results held by the caller until ``keep`` newer ones came."""
    held: list[object] = []

    def call(item: Any) -> None:
        held.append(step(item))
        if len(held) > keep:
            del held[0]

    return call


async def store_figures(folder: Path, values: list[bytes], rounds: int) -> list[list[object]]:
    """``KeyValueStore.set_value`` and ``get_value`` of every value, best of ``rounds``."""
    kvs = await KeyValueStore.open(
        name="large", configuration=Configuration(storage_dir=str(folder), purge_on_start=False)
    )
    keys = [f"v{i:04d}" for i in range(len(values))]
    best_set = best_get = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for key, value in zip(keys, values, strict=True):
            await kvs.set_value(key, value, _TYPE)
        best_set = min(best_set, (time.perf_counter() - start) / len(keys))
        start = time.perf_counter()
        for key in keys:
            await kvs.get_value(key)
        best_get = min(best_get, (time.perf_counter() - start) / len(keys))
    check(await kvs.get_value(keys[-1]) == values[-1], "KeyValueStore reads back")
    await kvs.close()
    return [["KeyValueStore.set_value", best_set, ""], ["KeyValueStore.get_value", best_get, ""]]


def benchmark(args: argparse.Namespace, run: Run) -> str:
    """Time each step; the results as Markdown."""
    size: int = args.size
    count: int = args.count or (16 if run.quick else 48)
    rounds = 3 if run.quick else 7
    values = [os.urandom(size) for _ in range(count)]
    keys = [f"v{i:04d}" for i in range(count)]
    rows: list[list[object]] = []

    def row(name: str, figures: tuple[float, float]) -> None:
        rows.append([name, figures[0], f"{figures[1]:.0f}"])
        print(f"{name}: {figures[0] * 1e6:,.0f} µs, {figures[1]:.0f} faults", flush=True)

    with run.scratch() as work:
        engine = Engine.open(work / "engine")
        pairs = list(zip(keys, values, strict=True))
        row("Engine.set (total)", timed(pairs, lambda kv: engine.set(kv[0], kv[1], _TYPE), rounds))
        row("Engine.get (total), value dropped", timed(keys, engine.get, rounds))
        row("Engine.get (total), last 16 values kept", timed(keys, kept(engine.get, 16), rounds))
        for key, value in pairs:
            check(engine.get(key) == value, "Engine reads back")
        entries = [engine.entry(key) for key in keys]
        readers = engine._readers
        row("get: index lookup", timed(keys, engine.entry, rounds))
        places = [(e.file_id, e.offset, e.head, e.size) for e in entries if e]
        check(len(places) == count, "every key has an entry")
        fd = os.open(work / "engine" / segment_name(places[0][0]), os.O_RDONLY)
        row(
            "get: pread of the bytes before the value",
            timed(places, lambda p: os.pread(fd, p[2], p[1]), rounds),
        )
        row(
            "get: pread of the value (into the bytes returned)",
            timed(places, lambda p: os.pread(fd, p[3], p[1] + p[2]), rounds),
        )
        parts = [readers.read_apart(*place) for place in places]
        row(
            "get: CRC-32C check of both (check_value_read)",
            timed(parts, lambda p: check_value_read(p[0], p[1], size), rounds),
        )
        del parts
        mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        row(
            "not taken: copy out of a new map + CRC (checked_value)",
            timed(places, lambda p: checked_value(mapped, p[1], p[2], p[3]), 1),
        )
        row(
            "not taken: the same, map pages already touched",
            timed(places, lambda p: checked_value(mapped, p[1], p[2], p[3]), rounds),
        )
        mapped.close()
        os.close(fd)
        engine.close()

        chain = bytes(16)
        row(
            "set: frame start (head, BLAKE3, CRC-32C)",
            timed(pairs, lambda kv: start_of(1, 0, 1, kv[0], _TYPE, kv[1], chain), rounds),
        )
        row(
            "set: BLAKE3 chain of the body alone",
            timed(values, lambda v: FRAME_KINDS[RECORD_MAGIC].chain(chain, v), rounds),
        )
        row("set: CRC-32C of the value alone", timed(values, checksum, rounds))
        starts = [start_of(1, 0, 1, key, _TYPE, value, chain) for key, value in pairs]
        frames = list(zip(starts, values, strict=True))

        def appended(join: bool) -> Callable[[Any], object]:
            state: dict[str, SegmentWriter] = {}

            def append(frame: tuple[bytes, bytes]) -> object:
                if frame[0] is starts[0]:  # a fresh segment for each pass: appends, as a set
                    if "writer" in state:
                        state["writer"].close()
                    folder = work / "writes"
                    folder.mkdir(exist_ok=True)
                    (folder / segment_name(1)).unlink(missing_ok=True)
                    state["writer"] = SegmentWriter(folder, 1, 0, 1 << 40, False)
                if join:
                    return state["writer"].append(frame[0] + frame[1])
                return state["writer"].append_pieces(frame)

            return append

        row(
            "set: one pwritev of the frame start and the value",
            timed(frames, appended(False), rounds),
        )
        row("not taken: join the frame, then one pwrite", timed(frames, appended(True), rounds))
        row(
            "not taken: BLAKE3 with AUTO threads",
            timed(
                values,
                lambda v: blake3.blake3(v, max_threads=blake3.blake3.AUTO).digest(16),
                rounds,
            ),
        )
        rows.extend(asyncio.run(store_figures(work / "kvs", values, rounds)))

    def cell(seconds: object) -> str:
        return f"{seconds * 1e6:,.0f} µs" if isinstance(seconds, float) else str(seconds)

    body = section(
        f"{size:,}-byte values: time per operation (best of {rounds} passes over {count} values)",
        table(["step", "time", "page faults"], [[n, cell(s), f] for n, s, f in rows]),
    )
    return results_file(
        run,
        "Large values, step by step",
        "Where a get and a set of a large value spend their time, each step timed alone with"
        " logkv's own functions, beside the paths not taken.",
        body,
        method=[
            "Values of random bytes, each read or written once per pass, in the same order; the"
            " best pass is kept. Page faults are ru_minflt per operation in the last pass.",
            "The store's durability is the default (process): a set returns once its frame is"
            " written to the file (page cache), a get reads from the page cache.",
            "The steps timed alone add up to less than the totals: the totals include the call"
            " layers, the index update and the cache misses that the steps share.",
        ],
        notes=[
            "On a shared machine (see the load above) every figure is inflated and the ratios"
            " are indicative only; a step that runs on two threads (BLAKE3 with AUTO threads)"
            " then gains a larger share of the contended cores, which it does not on an idle"
            " machine.",
        ],
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the results and write them to ``--out``."""
    parser = SCRIPT.parser()
    parser.add_argument("--size", type=positive_int, default=1 << 20, help="value size (1 MiB)")
    parser.add_argument("--count", type=positive_int, help="values (48; quick 16)")
    return SCRIPT.main(argv, parser, benchmark)


if __name__ == "__main__":
    sys.exit(main())
