"""The checksums and hashes a frame could carry, timed on this machine: the figures behind the
choice of CRC-32C and BLAKE3 for format version 3 (docs/FORMAT.md, section 10).

Run from the repository root::

    python -m benchmarks.bench_checksums            # writes results/checksums.md
    python -m benchmarks.bench_checksums --quick    # fewer repeats, prints only

For each input size (a small record, a 1 KiB record, 1, 16 and 256 MiB values) it times, best of
several repeats: the frame checksums (zlib's CRC-32, which versions 1 and 2 use, and CRC-32C from
the ``crc32c`` and ``google-crc32c`` packages), the chain value of a frame holding the input as
its body (logkv's own functions for versions 1-2 and 3, and the alternative of chaining a
digest of the value), BLAKE3 with ``blake3.AUTO`` threads, and a copy of the input (what a read
that returns bytes costs anyway). Every function is checked against a known answer first.
"""

from __future__ import annotations

import argparse
import os
import sys
import timeit
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import blake3
import crc32c
import google_crc32c

from logkv.format import FRAME_KINDS, RECORD_MAGIC, RECORD_MAGIC_V2

from .harness import Run, Script, check, results_file, section, table

SCRIPT = Script(
    "bench_checksums",
    "Time the frame checksums and chain hashes format version 3 chose between.",
    Path("benchmarks/results/checksums.md"),
)

#: Input sizes: a small JSON record, a 1 KiB record, and 1, 16 and 256 MiB values.
SIZES = (130, 1024, 1 << 20, 16 << 20, 256 << 20)
QUICK_SIZES = (130, 1024, 1 << 20, 16 << 20)

_AUTO = blake3.blake3.AUTO
_PREV = bytes(range(16))  # a previous chain value
_V3_CHAIN = FRAME_KINDS[RECORD_MAGIC].chain
_V2_CHAIN = FRAME_KINDS[RECORD_MAGIC_V2].chain


def _chain_over_value_digest(body: bytes) -> bytes:
    """The alternative not chosen: BLAKE3(chain || the body before the value || BLAKE3(value)),
    taking the whole body as the value but for its first 20 bytes (two BLAKE3 calls)."""
    hasher = blake3.blake3(_PREV)
    hasher.update(memoryview(body)[:20])
    hasher.update(blake3.blake3(memoryview(body)[20:]).digest())
    return hasher.digest(16)


FUNCTIONS: dict[str, Callable[[Any], object]] = {
    "CRC-32 (zlib; versions 1-2)": zlib.crc32,
    "CRC-32C (crc32c; version 3)": crc32c.crc32c,
    "CRC-32C (google-crc32c)": google_crc32c.value,
    "chain: SHA-256(chain ‖ body) (versions 1-2)": lambda data: _V2_CHAIN(_PREV, data),
    "chain: BLAKE3(chain ‖ body) (version 3)": lambda data: _V3_CHAIN(_PREV, data),
    "chain: BLAKE3 over a BLAKE3 digest of the value": _chain_over_value_digest,
    "BLAKE3 alone, AUTO threads": lambda data: blake3.blake3(data, max_threads=_AUTO).digest(),
    "copy (bytes of a memoryview)": lambda data: bytes(memoryview(data)),
}


def check_answers() -> None:
    """Each checksum gives its standard check value (``123456789``), each hash its known
    digest of ``abc``: the timed functions compute what the format says."""
    check(zlib.crc32(b"123456789") == 0xCBF43926, "CRC-32 check value")
    check(crc32c.crc32c(b"123456789") == 0xE3069283, "CRC-32C check value (crc32c)")
    check(google_crc32c.value(b"123456789") == 0xE3069283, "CRC-32C check value (google)")
    check(
        blake3.blake3(b"abc").hexdigest()
        == "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85",
        "BLAKE3 of abc",
    )


def seconds_per_call(function: Callable[[Any], object], data: bytes, budget: float) -> float:
    """The best time of one call of ``function(data)`` over repeats of about ``budget`` s."""
    number = max(1, int(budget / 5 / max(len(data) * 2e-10, 2e-7)))
    return min(timeit.repeat(lambda: function(data), number=number, repeat=5)) / number


def human(size: int) -> str:
    """``size`` bytes as the tables name it."""
    return f"{size >> 20} MiB" if size >= 1 << 20 else f"{size:,} B"


def duration(seconds: float) -> str:
    """A time per call in the unit that suits it."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:,.2f} µs" if seconds < 1e-5 else f"{seconds * 1e6:,.0f} µs"
    return f"{seconds * 1e3:,.1f} ms"


def benchmark(args: argparse.Namespace, run: Run) -> str:
    """Time every function at every size; the results as Markdown."""
    check_answers()
    sizes = QUICK_SIZES if run.quick else SIZES
    budget = 0.2 if run.quick else 1.0
    rows = []
    for name, function in FUNCTIONS.items():
        row: list[object] = [name]
        for size in sizes:
            data = os.urandom(size)
            seconds = seconds_per_call(function, data, budget)
            speed = f" ({size / seconds / 1e9:.1f} GB/s)" if size >= 1 << 20 else ""
            row.append(duration(seconds) + speed)
        rows.append(row)
        print(" | ".join(map(str, row)), flush=True)
    body = section(
        "Time per call (best of 5 repeats)",
        table(["function", *(human(size) for size in sizes)], rows),
    )
    return results_file(
        run,
        "Frame checksums and chain hashes",
        "What format version 3 chose between: the checksum every read runs over the bytes it"
        " returns, and the hash that chains every record to the one before it.",
        body,
        method=[
            "Each function runs on random bytes of each size, in this process, one call at a"
            " time from Python (the call's own overhead included, as in logkv's hot paths).",
            "The chain rows hash a previous chain value and the input as the frame's body, with"
            " logkv's own functions (`format.FRAME_KINDS`).",
            "BLAKE3 with AUTO threads may use every core; logkv hashes with one thread, so that"
            " a write never takes cores from the other work of the process.",
        ],
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the results and write them to ``--out``."""
    return SCRIPT.main(argv, SCRIPT.parser(), benchmark)


if __name__ == "__main__":
    sys.exit(main())
