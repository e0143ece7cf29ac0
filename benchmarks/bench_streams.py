"""Benchmark of streamed values (`Engine.set_stream`, `Engine.open_value`; docs/FORMAT.md §14).

Run from the repository root::

    python -m benchmarks.bench_streams            # 16 MiB, 256 MiB and 2 GiB values
    python -m benchmarks.bench_streams --quick    # 16 MiB and 64 MiB, prints only

For each size, in a fresh interpreter each (so that memory figures start clean):

- *streamed write*: ``set_stream`` from a generator of 1 MiB pieces, and *streamed read*: every
  chunk of ``open_value`` (checksums and digest verified); the growth of anonymous memory
  (``RssAnon``, sampled every 2 ms) over each;
- the *floor*: the same bytes written to a plain file with ``write()`` in 1 MiB pieces and read
  back with ``readinto`` (no checksum, no digest), on the same disk, in the same run;
- up to 256 MiB, the same value given whole to ``set_value``'s engine path (``set_many``, which
  keeps it in the log) and read with ``get``, for the memory it takes.

Target: a 2 GiB value written and read back with RssAnon growth at most 64 MiB. Throughputs on
a shared machine are indicative; their ratio to the floor measured in the same run is the
figure to compare.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from logkv import Engine

from .harness import Report, Run, Script, check, mib, results_file, section, table
from .machine import rss_anon

SCRIPT = Script(
    "bench_streams",
    "streamed values: throughput and memory of set_stream/open_value",
    Path(__file__).parent / "results" / "streams.md",
)
PIECE = 1 << 20
FULL_SIZES = (16 << 20, 256 << 20, 2 << 30)
QUICK_SIZES = (16 << 20, 64 << 20)
INLINE_UP_TO = 256 << 20
MEMORY_TARGET = 64 << 20


def _rss_anon() -> int:
    return rss_anon() or 0


class _Peak(threading.Thread):
    """RssAnon's peak while it runs, sampled every 2 ms."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.start_value = _rss_anon()
        self.peak = self.start_value
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.002):
            self.peak = max(self.peak, _rss_anon())

    def stop(self) -> int:
        self.done.set()
        self.join()
        return max(self.peak, _rss_anon()) - self.start_value


def _pieces(size: int, piece: bytes) -> Iterator[bytes]:
    for _ in range(size // len(piece)):
        yield piece


def probe(args: list[str]) -> Mapping[str, Any]:
    """One size in this fresh interpreter: ``kind size folder``."""
    kind, size, folder = args[0], int(args[1]), Path(args[2])
    piece = os.urandom(PIECE)
    if kind == "floor":
        path = folder / "floor.bin"
        started = time.perf_counter()
        with path.open("wb", buffering=0) as file:
            for data in _pieces(size, piece):
                file.write(data)
        write_s = time.perf_counter() - started
        buffer = bytearray(PIECE)
        started = time.perf_counter()
        with path.open("rb", buffering=0) as file:
            while file.readinto(buffer):
                pass
        read_s = time.perf_counter() - started
        path.unlink()
        return {"write_s": write_s, "read_s": read_s}
    whole = piece * (size // PIECE) if kind == "inline" else b""  # the caller's value
    with Engine.open(folder / kind) as engine:
        engine.set("warm", b"up")
        peak = _Peak()
        peak.start()
        started = time.perf_counter()
        if kind == "streamed":
            engine.set_stream("v", _pieces(size, piece))
        else:
            engine.set_many([("v", whole, None)])
            del whole
        write_s = time.perf_counter() - started
        write_growth = peak.stop()
        peak = _Peak()
        peak.start()
        started = time.perf_counter()
        read = 0
        if kind == "streamed":
            with engine.open_value("v") as stream:  # type: ignore[union-attr]
                for chunk in stream:
                    read += len(chunk)
        else:
            value = engine.get("v")
            read = len(value)  # type: ignore[arg-type]
            del value
        read_s = time.perf_counter() - started
        read_growth = peak.stop()
    return {
        "write_s": write_s,
        "read_s": read_s,
        "write_growth": write_growth,
        "read_growth": read_growth,
        "read": read,
    }


def _row(size: int, path: str, measured: Mapping[str, Any], floor: Mapping[str, Any]) -> list[str]:
    """A line of the table: throughputs, their ratio to the floor, memory growth."""
    mb = size / 1e6
    return [
        mib(size),
        path,
        f"{mb / measured['write_s']:.0f} MB/s",
        f"{floor['write_s'] / measured['write_s']:.2f}",
        mib(measured["write_growth"]) if "write_growth" in measured else "",
        f"{mb / measured['read_s']:.0f} MB/s",
        f"{floor['read_s'] / measured['read_s']:.2f}",
        mib(measured["read_growth"]) if "read_growth" in measured else "",
    ]


def measure(args: argparse.Namespace, run: Run) -> str:
    sizes = QUICK_SIZES if run.quick else FULL_SIZES
    report = Report()
    rows: list[list[str]] = []
    with run.scratch() as folder:
        for size in sizes:
            print(f"{mib(size)}:", flush=True)
            floor = SCRIPT.in_child("floor", str(size), str(folder))
            streamed = SCRIPT.in_child("streamed", str(size), str(folder))
            check(streamed["read"] == size, f"read {streamed['read']} of {size} bytes")
            rows.append(_row(size, "streamed", streamed, floor))
            if size <= INLINE_UP_TO:
                inline = SCRIPT.in_child("inline", str(size), str(folder))
                rows.append(_row(size, "in the log (set_many, get)", inline, floor))
            rows.append(_row(size, "floor: plain file, no checks", floor, floor))
            if size == max(sizes):
                growth = max(streamed["write_growth"], streamed["read_growth"])
                report.add(
                    f"RssAnon growth, {mib(size)} streamed value written and read",
                    mib(growth),
                    f"<= {mib(MEMORY_TARGET)}" + ("" if size >= 2 << 30 else " (at 2 GiB)"),
                    growth <= MEMORY_TARGET,
                )
    header = (
        "Size", "Path", "Write", "vs floor", "RssAnon growth (write)", "Read", "vs floor",
        "RssAnon growth (read)",
    )  # fmt: skip

    body = [
        *section("Targets", report.table()),
        *section("Throughput and memory", table(header, rows)),
    ]
    return results_file(
        run,
        "Streamed values",
        "Streamed values are written into a value file a chunk at a time and read back a "
        "checked chunk at a time; memory stays flat whatever the size. Measured on a shared, "
        "loaded machine: throughputs are indicative, ratios to the floor of the same run less "
        "so affected.",
        body,
        method=[
            "Each size and path runs in a fresh interpreter (`--probe`), durability `process`.",
            "Streamed write: `Engine.set_stream` from a generator of 1 MiB pieces (the same "
            "random MiB); read: every chunk of `Engine.open_value` (chunk CRCs and the BLAKE3 "
            "digest verified).",
            "In the log: `Engine.set_many` of the value whole, made before the measure (a "
            "batch keeps any size in the log; `set` would stream a value above 64 MiB), and "
            "`Engine.get`.",
            "Floor: `write()` of 1 MiB pieces to a plain file and `readinto` back, no checks.",
            "RssAnon (anonymous resident memory, /proc/self/status) sampled every 2 ms; growth "
            "is the peak over the operation less the value before it.",
        ],
    )


def main(argv: Sequence[str] | None = None) -> int:
    return SCRIPT.main(argv, SCRIPT.parser(), measure, probe)


if __name__ == "__main__":
    sys.exit(main())
